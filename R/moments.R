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
  fr <- is_fr(method)
  equation_names <- if (fr) {
    if (k == 1L) c("Var(Y)", "Var(S)") else c("Var(Y)", paste0("Var(S_", names(flist), ")"))
  } else if (method %in% c("efficient", "reml", "ml")) {
    c("Residual", names(flist))
  } else {
    c("(all)", names(flist))
  }
  names(out$raw) <- names(out$estimate) <- component_names
  names(out$at_boundary) <- names(flist)
  mixed <- out$mixed
  names(out$coef) <- names(mixed$gls_coef) <- x_names
  kept_names <- x_names[out$kept]
  fit <- list(
    method = if (fr) "fr" else method,
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
  if (method %in% c("efficient", "reml", "ml")) {
    eff <- out$efficient
    moment_names <- c("(all)", names(flist))
    fit$efficient <- list(
      moment_equations = list(
        lhs = matrix(eff$moment_lhs, k + 1L, dimnames = list(moment_names, component_names)),
        q = stats::setNames(eff$moment_q, moment_names)
      ),
      moment_theta_raw = stats::setNames(eff$moment_raw, component_names),
      moment_theta = stats::setNames(eff$moment_estimate, component_names),
      probes = stats::setNames(eff$probes, names(flist)),
      probe_sd = stats::setNames(eff$probe_sd, component_names),
      model_sd = stats::setNames(eff$model_sd, component_names),
      steps = eff$steps
    )
  }
  if (!is.null(out$likelihood)) {
    lik <- out$likelihood
    fit$REML <- lik$restricted
    fit$likelihood <- list(
      steps = lik$steps, converged = lik$converged,
      last_step = stats::setNames(lik$last_step, component_names),
      reason = if (nzchar(lik$reason)) lik$reason
    )
    if (!lik$converged) {
      warning(sprintf(paste(
        "the %s iteration did not converge in %d Fisher scoring steps; the estimates are",
        "those of the last step"
      ), if (lik$restricted) "REML" else "ML", lik$steps), call. = FALSE)
    }
    # The logLik object, as lme4 reports it: p fixed effects, K variances and sigma
    # (finish_fit() adds the number of observations).
    fit$loglik <- if (!is.nan(lik$log_likelihood)) {
      structure(lik$log_likelihood, df = length(out$kept) + k + 1L, class = "logLik")
    }
  }
  if (fr) {
    fr <- out$fr
    fit$fr <- list(
      group_sizes = c(groups = fr$n_groups, mean = fr$size_mean, variance = fr$size_variance),
      coef_in_equations = stats::setNames(fr$coef_in_equations, x_names)[out$kept],
      size_columns = x_names[size_columns],
      iterations = fr$iterations,
      centred = isTRUE(fr$centred)
    )
    if (!is.null(fr$crossed)) fit$fr <- c(fit$fr, fr_crossed_counts(fr, names(flist)))
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

# The Rust core's entry point; size() columns 1-based. The response is scaled to unit
# size first (see response_scale()) and the estimates scaled back.
call_core <- function(y, fixed, flist, threads, method, size_columns = integer()) {
  scale <- response_scale(y)
  out <- fr_moment_fit(model_of(scale_response(y, scale), fixed, flist), method,
                       as.integer(size_columns) - 1L, FALSE, threads)
  unscale_core_output(out, scale, length(y))
}

#' The power of two that brings the response to unit size
#'
#' The core forms sums of squares of the response, which overflow for values near 1e155
#' and lose all precision (underflow) near 1e-155. A model is equivariant in the scale
#' of y: fitting `y / 2^e` gives variance components `2^-2e` and fixed effects, BLUPs,
#' fitted values and residuals `2^-e` times those of `y`. Dividing by a power of two is
#' exact in floating point, so the fit of the scaled response, scaled back, is the fit
#' of the response (bit for bit where nothing over- or underflows). The columns of X are
#' not scaled: their squares are the user's design.
#'
#' Refuses a constant response (no variance to estimate) and one whose variance
#' components cannot be represented (values beyond about 1e154 or below 1e-154 in size
#' give variances beyond the range of doubles).
#' @return the exponent `e`.
#' @noRd
response_scale <- function(y) {
  if (length(y) == 0L) return(0)
  size <- max(abs(y))
  if (all(y == y[[1L]])) {
    stop(sprintf(paste(
      "the response is constant (every value is %s), so it has no variance to divide",
      "among the random terms and the residual"
    ), format(y[[1L]])), call. = FALSE)
  }
  if (size > 2^510 || size < 2^-510) {
    stop(sprintf(paste(
      "the response is too %s for its variances to be represented in double precision",
      "(largest absolute value %s); rescale it, e.g. y * 1e%d"
    ), if (size > 1) "large" else "small", format(size, digits = 3),
    -round(log10(size))), call. = FALSE)
  }
  floor(log2(size))
}

# y / 2^e in two exact steps (2^-e alone may not be a double for subnormal responses).
scale_response <- function(y, e) {
  half <- e %/% 2
  y * 2^-half * 2^-(e - half)
}

# The core's estimates for the response y from those for y / 2^e.
unscale_core_output <- function(out, e, n) {
  if (e == 0) return(out)
  by <- function(x, power) if (is.null(x)) NULL else x * 2^(power * e)
  out$raw <- by(out$raw, 2)
  out$estimate <- by(out$estimate, 2)
  out$q <- by(out$q, 2)
  out$coef <- by(out$coef, 1)
  out$fitted <- by(out$fitted, 1)
  out$residuals <- by(out$residuals, 1)
  if (!is.null(out$mixed)) {
    out$mixed$gls_coef <- by(out$mixed$gls_coef, 1)
    out$mixed$vcov <- by(out$mixed$vcov, 2)
    out$mixed$ranef <- lapply(out$mixed$ranef, by, power = 1)
  }
  if (!is.null(out$fr)) out$fr$coef_in_equations <- by(out$fr$coef_in_equations, 1)
  if (!is.null(out$efficient)) {
    for (name in c("moment_q", "moment_raw", "moment_estimate", "probe_sd", "model_sd")) {
      out$efficient[[name]] <- by(out$efficient[[name]], 2)
    }
  }
  if (!is.null(out$likelihood)) {
    # The density of y = 2^e y~ is 2^(-e) per dimension of that of y~: N of them for ML,
    # N - p for REML (the restricted likelihood is that of N - p error contrasts).
    dimensions <- if (out$likelihood$restricted) n - length(out$kept) else n
    out$likelihood$log_likelihood <- out$likelihood$log_likelihood - dimensions * e * log(2)
    out$likelihood$last_step <- by(out$likelihood$last_step, 2)
  }
  out
}

# Fitted values and residuals of the model data `md` at the coefficients `coef` (all
# columns, NA where aliased) and the BLUPs, computed by the core in parallel.
fr_fitted_values <- function(md, coef, ranef_values, threads) {
  fr_fitted(model_of(md$y, md$fixed, md$flist), unname(as.double(coef)),
            lapply(unname(ranef_values), function(u) unname(as.double(u))), threads)
}
