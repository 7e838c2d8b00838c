#' Solve the moment equations in the Rust core and name the results
#'
#' @param y numeric response.
#' @param X fixed-effect model matrix.
#' @param flist named list of grouping factors (one per random term).
#' @param threads number of threads.
#' @return a list with `theta`, `theta_raw`, `boundary`, `coefficients` (GLS, the
#'   non-aliased columns), `coef_ols` (OLS, the same columns), `coef_all` (GLS, NA where
#'   aliased), `kept`, `vcov` (GLS covariance), `ranef_values` (per term, the BLUPs named
#'   by level), `moment_equations` (`lhs`, `q`) and `mme` (the relative
#'   residual and iterations of the mixed-model solve).
#' @noRd
fr_moments <- function(y, X, flist, threads) {
  x_names <- if (ncol(X) > 0L) colnames(X) else character()
  intercept <- match("(Intercept)", x_names, nomatch = 0L) - 1L
  storage.mode(X) <- "double"
  # Factors are integer vectors of 1-based codes; the core reads them without a copy.
  out <- fr_moment_fit(
    y, X, x_names, intercept, unname(flist),
    vapply(flist, nlevels, 1L), names(flist), threads
  )
  k <- length(flist)
  component_names <- c(names(flist), "Residual")
  equation_names <- c("(all)", names(flist))
  names(out$raw) <- names(out$estimate) <- component_names
  names(out$at_boundary) <- names(flist)
  names(out$coef) <- names(out$gls_coef) <- x_names
  kept_names <- x_names[out$kept]
  ranef_values <- Map(function(u, f) stats::setNames(u, levels(f)), out$ranef, flist)
  names(ranef_values) <- names(flist)
  list(
    theta = out$estimate,
    theta_raw = out$raw,
    boundary = out$at_boundary,
    coefficients = out$gls_coef[out$kept],
    coef_ols = out$coef[out$kept],
    coef_all = out$gls_coef,
    kept = out$kept,
    vcov = matrix(out$vcov, length(out$kept), dimnames = list(kept_names, kept_names)),
    ranef_values = ranef_values,
    mme = list(relative_residual = out$mme_residual, iterations = out$mme_iterations),
    moment_equations = list(
      lhs = matrix(out$lhs, k + 1L, dimnames = list(equation_names, component_names)),
      q = stats::setNames(out$q, equation_names)
    )
  )
}
