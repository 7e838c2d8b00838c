# Shared by the scripts under bench/: each writes its own section of bench/results.md,
# and the same lines into README.md, between the markers <!-- bench:NAME --> and
# <!-- /bench:NAME -->. Sections of other scripts are left as they are, so one script
# can be re-run alone.
write_results_section <- function(name, lines, results = "bench/results.md",
                                  readme = "README.md") {
  begin <- sprintf("<!-- bench:%s -->", name)
  end <- sprintf("<!-- /bench:%s -->", name)
  block <- c(begin, lines, end)
  replace_block <- function(text) {
    at <- match(c(begin, end), text)
    if (anyNA(at)) return(NULL)
    c(text[seq_len(at[[1]] - 1L)], block, text[-seq_len(at[[2]])])
  }
  text <- if (file.exists(results)) {
    readLines(results)
  } else {
    c("# fullrandom: benchmark results", "",
      "Written by `make bench`: every section by one script under `bench/`, measured in one run",
      "of that script, so that the ratios compare timings taken side by side.")
  }
  writeLines(replace_block(text) %||% c(text, "", block), results)
  if (file.exists(readme)) {
    text <- replace_block(readLines(readme))
    if (is.null(text)) {
      warning(sprintf("%s has no %s marker; only %s was updated", readme, begin, results))
    } else {
      writeLines(text, readme)
    }
  }
  invisible(lines)
}

`%||%` <- function(x, y) if (is.null(x)) y else x
