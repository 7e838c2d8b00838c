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

# An estimator against glmer over simulated data sets: `est` and `ref` are data sets x
# (fixed effects, sds) estimates, `se` and `se_ref` their fixed effects' standard errors
# (data sets x p), `truth` the true values. The sds' relative bias (%), each column's
# sampling sd over glmer's (with its bootstrap se over the data sets), MSE over glmer's,
# and the Wald coverage of the fixed effects.
against_glmer <- function(est, ref, se, se_ref, truth) {
  p <- ncol(se)
  sds <- seq(p + 1L, ncol(est))
  set.seed(1)
  boot <- replicate(2000, {
    i <- sample.int(nrow(est), replace = TRUE)
    apply(est[i, ], 2, stats::sd) / apply(ref[i, ], 2, stats::sd)
  })
  bias <- function(x) 100 * (colMeans(x[, sds, drop = FALSE]) - truth[sds]) / truth[sds]
  covers <- function(x, s) colMeans(abs(x[, seq_len(p), drop = FALSE] - rep(truth[seq_len(p)], each = nrow(x))) < 1.96 * s)
  list(spread = apply(est, 2, stats::sd) / apply(ref, 2, stats::sd), spread_se = apply(boot, 1, stats::sd),
       mse = colMeans(sweep(est, 2, truth)^2) / colMeans(sweep(ref, 2, truth)^2),
       bias = bias(est), bias_ref = bias(ref), coverage = covers(est, se), coverage_ref = covers(ref, se_ref))
}
