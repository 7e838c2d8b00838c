#' Solve the moment equations in the Rust core and name the results
#'
#' @param y numeric response.
#' @param X fixed-effect model matrix.
#' @param flist named list of grouping factors (one per random term).
#' @param threads number of threads.
#' @return a list with `theta`, `theta_raw`, `boundary`, `coefficients` (OLS, the
#'   non-aliased columns), `coef_all` (NA where aliased), `kept`, `xtx_inv` and
#'   `moment_equations` (`lhs`, `q`).
#' @noRd
fr_moments <- function(y, X, flist, threads) {
  x_names <- colnames(X)
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
  names(out$coef) <- x_names
  list(
    theta = out$estimate,
    theta_raw = out$raw,
    boundary = out$at_boundary,
    coefficients = out$coef[out$kept],
    coef_all = out$coef,
    kept = out$kept,
    xtx_inv = matrix(out$xtx_inv, length(out$kept), dimnames = rep(list(x_names[out$kept]), 2)),
    moment_equations = list(
      lhs = matrix(out$lhs, k + 1L, dimnames = list(equation_names, component_names)),
      q = stats::setNames(out$q, equation_names)
    )
  )
}
