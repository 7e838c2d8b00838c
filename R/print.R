#' Print a moment fit
#'
#' Prints the fit in lmer's layout: the method, formula and data, the random-effects
#' table (variances and standard deviations), the number of observations and of
#' levels per term, and the fixed effects.
#'
#' @param x an `fr_fit` object.
#' @param digits number of significant digits.
#' @param ... unused.
#' @return `x`, invisibly.
#' @export
print.fr_fit <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  cat("Linear mixed model fit by the method of moments ['fr_fit']\n")
  cat("Formula:", deparse1(x$formula), "\n")
  if (!is.null(x$data_name)) cat("   Data:", x$data_name, "\n")
  cat("Random effects:\n")
  table <- varcorr_table(as.data.frame(VarCorr(x)), digits, c("Variance", "Std.Dev."))
  print(table, quote = FALSE, right = FALSE, row.names = FALSE)
  cat(sprintf("Number of obs: %d, groups:  %s\n", x$nobs,
              paste(names(x$ngrps), x$ngrps, sep = ", ", collapse = "; ")))
  if (x$n_dropped > 0L) {
    cat(sprintf("  (%d %s deleted due to missingness)\n", x$n_dropped,
                ngettext(x$n_dropped, "observation", "observations")))
  }
  cat("Fixed effects (OLS):\n")
  print(format(x$coefficients, digits = digits), quote = FALSE)
  if (any(x$boundary)) {
    cat(boundary_message(names(x$boundary)[x$boundary]), "\n", sep = "")
  }
  invisible(x)
}
