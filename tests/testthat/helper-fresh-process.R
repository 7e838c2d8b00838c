# Runs R code in a fresh Rscript process with fullrandom loaded, so that a crash
# (abort, segfault, stack overflow) or a hang is caught as a failure of the test
# instead of taking the test run down with it. callr is not in Debian's R.
#
# Returns list(status, output): the exit status of the process (124 on a timeout)
# and its combined stdout and stderr.
run_in_fresh_process <- function(code, timeout = 60) {
  script <- tempfile(fileext = ".R")
  on.exit(unlink(script), add = TRUE)
  writeLines(c("suppressPackageStartupMessages(library(fullrandom))", code), script)
  output <- suppressWarnings(system2(
    file.path(R.home("bin"), "Rscript"), c("--vanilla", shQuote(script)),
    stdout = TRUE, stderr = TRUE, timeout = timeout,
    env = paste0("R_LIBS=", paste(.libPaths(), collapse = .Platform$path.sep))
  ))
  status <- attr(output, "status")
  list(status = if (is.null(status)) 0L else status, output = paste(output, collapse = "\n"))
}

# Asserts that `code`, run in a fresh process, signals an R error whose message
# matches `pattern`, and that the process then exits normally (status 0): the
# error is caught inside the child, so a crash or hang shows as a non-zero status.
expect_error_in_fresh_process <- function(code, pattern, timeout = 60) {
  wrapped <- c(
    "result <- tryCatch({", code, "; 'no error'},",
    "  error = function(e) paste('ERROR:', conditionMessage(e)))",
    "cat(result, '\\n')"
  )
  run <- run_in_fresh_process(wrapped, timeout = timeout)
  testthat::expect_identical(run$status, 0L, info = run$output)
  testthat::expect_match(run$output, "ERROR:", fixed = TRUE, info = run$output)
  testthat::expect_match(run$output, pattern, info = run$output)
  invisible(run)
}
