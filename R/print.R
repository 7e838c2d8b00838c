#' Print a moment fit
#'
#' Prints the fit in lmer's layout: the method, formula and data, the random-effects
#' table (variances and standard deviations), the number of observations and of
#' levels per term, and the fixed effects. [summary()][summary.fr_fit] adds standard
#' errors.
#'
#' @param x an `fr_fit` object.
#' @param digits number of significant digits.
#' @param ... not used; any argument here is an error rather than silently ignored.
#' @return `x`, invisibly.
#' @export
print.fr_fit <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  refuse_unknown_arguments("print()", ..., help = "print.fr_fit")
  print_header(x)
  x$varcor <- VarCorr(x)
  print_random_effects(x, digits)
  if (length(x$coefficients) == 0L) {
    cat("No fixed effects\n")
  } else {
    cat("Fixed Effects:\n")
    print(format(x$coefficients, digits = digits), quote = FALSE)
  }
  print_boundary(x)
  invisible(x)
}
