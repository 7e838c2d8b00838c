#' Solve the moment equations in the Rust core and name the results
#'
#' @param y numeric response.
#' @param fixed the fixed-effect columns, from `fixed_effect_columns()`.
#' @param flist named list of grouping factors (one per random term).
#' @param threads number of threads.
#' @param method `"moments"` (the unbiased equations of every term) or `"fr"`
#'   (Matloff's Full Randomness equations, one term).
#' @param size_columns for `"fr"`: the columns of `X` that are functions of the group
#'   size (from `size()` terms), 1-based.
#' @return a list with `method`, `theta`, `theta_raw`, `boundary`, `coefficients` (GLS,
#'   the non-aliased columns), `coef_ols` (OLS, the same columns), `coef_all` (GLS, NA
#'   where aliased), `kept`, `vcov` (GLS covariance), `ranef_values` (per term, the
#'   BLUPs named by level), `moment_equations` (`lhs`, `q`), `mme` (the relative
#'   residual and iterations of the mixed-model solve) and, for `"fr"`, `fr` (the
#'   group sizes, the coefficients the equations were evaluated at, the iterations).
#' @noRd
fr_moments <- function(y, fixed, flist, threads, method = "moments", size_columns = integer()) {
  out <- call_core(y, fixed, flist, threads, method, size_columns)
  fit <- name_core_output(out, fixed$names, flist, method, size_columns)
  # Computed by the core in parallel, from X b and the BLUPs.
  fit$fitted.values <- out$fitted
  fit$residuals <- out$residuals
  fit
}

# The core's estimates named by column, term and level (see fr_moments()).
name_core_output <- function(out, x_names, flist, method, size_columns = integer()) {
  k <- length(flist)
  component_names <- c(names(flist), "Residual")
  equation_names <- if (method == "fr") c("Var(Y)", "Var(S)") else c("(all)", names(flist))
  names(out$raw) <- names(out$estimate) <- component_names
  names(out$at_boundary) <- names(flist)
  mixed <- out$mixed
  names(out$coef) <- names(mixed$gls_coef) <- x_names
  kept_names <- x_names[out$kept]
  fit <- list(
    method = method,
    theta = out$estimate,
    theta_raw = out$raw,
    boundary = out$at_boundary,
    coefficients = mixed$gls_coef[out$kept],
    coef_ols = out$coef[out$kept],
    coef_all = mixed$gls_coef,
    kept = out$kept,
    vcov = matrix(mixed$vcov, length(out$kept), dimnames = list(kept_names, kept_names)),
    ranef_values = name_ranef(mixed$ranef, flist),
    mme = list(relative_residual = mixed$mme_residual, iterations = mixed$mme_iterations),
    moment_equations = list(
      lhs = matrix(out$lhs, k + 1L, dimnames = list(equation_names, component_names)),
      q = stats::setNames(out$q, equation_names)
    )
  )
  if (method == "fr") {
    fr <- out$fr
    fit$fr <- list(
      group_sizes = c(groups = fr$n_groups, mean = fr$size_mean, variance = fr$size_variance),
      coef_in_equations = stats::setNames(fr$coef_in_equations, x_names)[out$kept],
      size_columns = x_names[size_columns],
      iterations = fr$iterations
    )
  }
  fit
}

name_ranef <- function(ranef, flist) {
  out <- Map(function(u, f) stats::setNames(u, levels(f)), ranef, flist)
  names(out) <- names(flist)
  out
}

#' The variance components of `method = "moments"` alone, without the mixed-model
#' equations (no GLS fixed effects, BLUPs or fitted values): the first half of
#' [fr_fit()], timed separately by the benchmarks.
#' @return the components after the boundary rule, named by term then "Residual".
#' @noRd
fr_variance_components <- function(formula, data, threads = fr_available_threads()) {
  parsed <- parse_fr_formula(formula)
  frame_call <- quote(stats::model.frame(data = data))
  md <- fr_model_data(parsed, frame_call, data, environment(), as.integer(threads))
  out <- call_core(md$y, md$fixed, md$flist, as.integer(threads), "components")
  stats::setNames(out$estimate, c(names(md$flist), "Residual"))
}

# The model in the form the Rust core reads: the fixed-effect columns (a double matrix,
# or a list of double vectors with NULL for the intercept) with the intercept's 0-based
# position, factors as integer vectors of 1-based codes (read without a copy).
core_model <- function(y, columns, x_names, intercept, codes, n_levels, labels) {
  list(y = y, x = columns, x_names = as.character(x_names), intercept = as.integer(intercept) - 1L,
       codes = unname(codes), n_levels = as.integer(n_levels), labels = as.character(labels))
}

model_of <- function(y, fixed, flist) {
  core_model(y, fixed$columns, fixed$names, fixed$intercept, flist, vapply(flist, nlevels, 1L),
             names(flist))
}

# The Rust core's entry point; size() columns 1-based.
call_core <- function(y, fixed, flist, threads, method, size_columns = integer()) {
  fr_moment_fit(model_of(y, fixed, flist), method, as.integer(size_columns) - 1L, FALSE, threads)
}

# Fitted values and residuals of the model data `md` at the coefficients `coef` (all
# columns, NA where aliased) and the BLUPs, computed by the core in parallel.
fr_fitted_values <- function(md, coef, ranef_values, threads) {
  fr_fitted(model_of(md$y, md$fixed, md$flist), unname(as.double(coef)),
            lapply(unname(ranef_values), function(u) unname(as.double(u))), threads)
}
