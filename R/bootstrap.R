#' The pigeonhole bootstrap of a moment fit
#'
#' Resamples the levels of every random term independently and refits the model to each
#' replicate: the pigeonhole bootstrap of A. B. Owen (2007) for crossed data, which with
#' one random term is the cluster bootstrap. In a replicate every term draws as many of
#' its levels as it has, with replacement; an observation appears as many times as the
#' product of the numbers of times its levels were drawn, and a level drawn twice becomes
#' two distinct levels. The variance components (by the fit's `method`) and the GLS fixed
#' effects are re-estimated from each replicate's sufficient statistics, which the Rust
#' core forms from the original rows without building the resampled data; replicates run
#' in parallel and the results do not depend on `threads`.
#'
#' Naive resampling of rows, or the spread of estimates from chunks of rows, ignores the
#' sharing of levels in crossed data and understates the uncertainty; resampling every
#' term's levels does not. The pigeonhole bootstrap is conservative for means (its
#' variance is biased upwards, Owen and Eckles 2012); for variance components of crossed
#' designs the replicates are also shifted, because a resampled observation and its copies
#' share one residual: the replicates' residual variance sits below the estimate and the
#' terms' variances above it. [confint.fr_fit()] therefore centres the replicates' variance
#' components on the estimate (see `vignette("intervals", package = "fullrandom")`); the
#' replicates returned here are as the estimator gives them.
#'
#' A fit with random slopes (`(x | g)` terms) is bootstrapped the same way: every grouping
#' factor draws its levels with replacement (terms on the same factor share the draw), each
#' replicate's data is built (row `i` repeated as many times as the product of its levels'
#' multiplicities, each copy in levels of its own) and refitted by the fit's method
#' (`"moments"` or `"efficient"`). The columns are those of [confint.fr_slope_fit()]:
#' standard deviations and correlations (`sd_Days|Subject`, `cor_Days.(Intercept)|Subject`),
#' `sigma` and the fixed effects; the attributes `variances` and `raw` hold the replicates'
#' covariance parameters (`fit$theta`, `fit$theta_raw`), and `interval_values` the
#' replicates whose percentiles [confint.fr_slope_fit()] takes (with more than one grouping
#' factor, the covariance replicates centred on the estimate). A replicate as large as half
#' the memory available is refused.
#'
#' @param fit an `fr_fit` made from a data frame (fits from files keep no data to resample),
#'   with or without random slopes.
#' @param nsim number of replicates.
#' @param seed `NULL` to draw the replicates' seed from R's random stream (so
#'   [set.seed()] makes them reproducible), or a number: the same number gives the same
#'   replicates, and R's random stream is left as it was.
#' @param threads number of threads, at most the cores available (see [fr_fit()]); every
#'   replicate is fitted on one.
#' @param progress whether to show a progress bar (with the cli package, when installed)
#'   if the replicates take more than a few seconds.
#' @return a data frame of class `fr_bootstrap`, one row per replicate, with the columns
#'   `confint()` reports: the standard deviations of the random terms
#'   (`sd_(Intercept)|<term>`), `sigma` and the fixed effects. Attributes: `variances`
#'   (the replicates' variance components, a matrix), `raw` (the same before the
#'   boundary rule: the unbiased solutions of the replicates' moment equations),
#'   `estimate` (the fit's values of the columns), `seed` and `failed` (the messages of
#'   replicates that could not be fitted; they are left out, with a warning).
#' @references A. B. Owen (2007), "The pigeonhole bootstrap", Annals of Applied
#'   Statistics 1(2). A. B. Owen and D. Eckles (2012), "Bootstrapping data arrays of
#'   arbitrary order", Annals of Applied Statistics 6(3).
#' @seealso [confint.fr_fit()]
#' @examples
#' fit <- fr_fit(distance ~ bow + (1 | archer), data = simulate_archers(seed = 1))
#' boot <- fr_bootstrap(fit, nsim = 100, seed = 2)
#' head(boot)
#' @export
fr_bootstrap <- function(fit, nsim = 200, seed = NULL, threads = fit$threads, progress = interactive()) {
  if (!inherits(fit, c("fr_fit", "fr_slope_fit"))) stop("`fit` must be an fr_fit object (a fit from fr_fit(), with or without random slopes)", call. = FALSE)
  nsim <- check_whole_number(nsim, "nsim", at_least = 1)
  threads <- check_threads(if (is.null(threads)) 1L else threads)
  if (inherits(fit, "fr_slope_fit")) return(slope_bootstrap(fit, nsim, seed, threads, progress))
  check_bootstrap_memory(nsim, length(fit$flist) + 1L, length(fit$coef_all))
  model <- bootstrap_model(fit)
  stream <- with_seed(seed, stream_seed())
  bar <- if (isTRUE(progress)) progress_reporter(nsim)
  out <- fr_bootstrap_fit(model$model, bootstrap_method(fit), model$size_columns, nsim, stream, threads, bar, NULL)
  bootstrap_frame(fit, unscale_replicates(out, model$scale), nsim, stream)
}

# Refuses a number of replicates whose results would not fit in memory, before anything
# is allocated (a failed allocation in the core is an error too, but memory that the
# system promises and later cannot give ends the process). Per replicate, the core holds
# the 2 (K + 1) + p estimates and their bookkeeping, the list it returns holds them again,
# and bootstrap_frame() makes about four more copies (variances, raw, coef, the frame).
check_bootstrap_memory <- function(nsim, n_components, n_fixed) {
  per_replicate <- 128 + 6 * 8 * (2 * n_components + n_fixed)
  needed <- nsim * per_replicate
  available <- available_memory()
  if (!is.na(available) && needed > 0.8 * available) {
    stop(sprintf(paste(
      "nsim = %.0f bootstrap replicates would need about %s of memory for their results,",
      "more than the %s available; use fewer replicates (at most about %.0f here)"
    ), nsim, format_bytes(needed), format_bytes(available), floor(0.8 * available / per_replicate)),
    call. = FALSE)
  }
  invisible(needed)
}

# Bytes of memory available to new allocations (MemAvailable of /proc/meminfo, Linux
# only); NA where unknown.
available_memory <- function() {
  if (!file.exists("/proc/meminfo")) return(NA_real_)
  lines <- tryCatch(readLines("/proc/meminfo", warn = FALSE), error = function(e) character())
  line <- grep("^MemAvailable:", lines, value = TRUE)
  if (length(line) != 1L) return(NA_real_)
  kb <- suppressWarnings(as.numeric(gsub("[^0-9]", "", line)))
  if (is.na(kb)) NA_real_ else kb * 1024
}

format_bytes <- function(bytes) {
  units <- c("bytes", "kB", "MB", "GB", "TB", "PB")
  power <- min(max(floor(log(bytes, 1000)), 0), length(units) - 1L)
  sprintf(if (power == 0) "%.0f %s" else "%.1f %s", bytes / 1000^power, units[[power + 1L]])
}

# The core's method of a fit: for method = "fr", the name of its variant ("fr_shared" for
# the crossed equations with the shared-level correction, "fr_centred" for those of the
# least-squares residuals; see fr_core_name()).
bootstrap_method <- function(fit) {
  if (identical(fit$method, "fr")) fr_core_name(fit$fr$shared, fit$fr$centred) else fit$method
}

# The data of the fit in the core's form, with the size() columns of method "fr" (0-based).
bootstrap_model <- function(fit) {
  if (is.null(fit$frame)) {
    stop(paste(
      "the bootstrap resamples the data of the fit, which fits from a list of data frames or",
      "from files do not keep; fit a data frame (chunks of it are fine) to bootstrap"
    ), call. = FALSE)
  }
  fixed <- fixed_effect_columns(fit$terms, fit$frame, fit$contrasts)
  y <- response_vector(fit$frame[[1L]], names(fit$frame)[[1L]])
  size_columns <- if (identical(fit$method, "fr")) match(fit$fr$size_columns, fixed$names) - 1L
  # Resampled at unit size, as the fit was made (see response_scale()).
  scale <- response_scale(y)
  list(model = model_of(scale_response(y, scale), fixed, fit$flist), size_columns = as.integer(size_columns),
       scale = scale)
}

# The replicates' estimates for the response from those for the response / 2^e.
unscale_replicates <- function(out, e) {
  out$components <- out$components * 4^e
  out$raw <- out$raw * 4^e
  out$coef <- out$coef * 2^e
  out
}

# A seed for the core's streams, drawn from R's stream: a whole number below 2^52.
stream_seed <- function() floor(stats::runif(1L) * 2^31) * 2^21 + floor(stats::runif(1L) * 2^21)

# A function the core calls with the number of replicates done; cli shows the bar only
# when the work runs for more than a couple of seconds.
progress_reporter <- function(nsim) {
  if (!requireNamespace("cli", quietly = TRUE)) return(NULL)
  env <- parent.frame()
  id <- cli::cli_progress_bar("Bootstrap replicates", total = nsim, .envir = env)
  function(done) {
    cli::cli_progress_update(id = id, set = done, .envir = env)
    NULL
  }
}

# The replicates as a data frame named as confint() names its rows.
bootstrap_frame <- function(fit, out, nsim, stream) {
  labels <- names(fit$flist)
  k <- length(labels)
  x_names <- names(fit$coef_all)
  variances <- matrix(out$components, nsim, k + 1L, dimnames = list(NULL, c(labels, "Residual")))
  raw <- matrix(out$raw, nsim, k + 1L, dimnames = dimnames(variances))
  coef <- matrix(out$coef, nsim, length(x_names), dimnames = list(NULL, x_names))
  coef <- coef[, names(fit$coefficients), drop = FALSE]
  failed <- !is.na(out$errors)
  if (all(failed)) {
    stop(sprintf("no bootstrap replicate could be fitted; the first failed with: %s", out$errors[[1L]]),
         call. = FALSE)
  }
  if (any(failed)) {
    warning(sprintf(
      "%d of %d bootstrap replicates could not be fitted and are left out; the first failed with: %s",
      sum(failed), nsim, out$errors[failed][[1L]]
    ), call. = FALSE)
  }
  values <- cbind(sqrt(variances), coef)
  colnames(values) <- parameter_names(fit)
  frame <- as.data.frame(values[!failed, , drop = FALSE], optional = TRUE)
  rownames(frame) <- NULL
  structure(frame, class = c("fr_bootstrap", "data.frame"),
            variances = variances[!failed, , drop = FALSE],
            raw = raw[!failed, , drop = FALSE],
            estimate = parameter_estimates(fit), seed = stream,
            failed = out$errors[failed])
}

# lme4's names of the parameters (confint(oldNames = FALSE)): sd_(Intercept)|<term> for
# every term, sigma, then the fixed effects.
parameter_names <- function(fit) {
  if (inherits(fit, "fr_slope_fit")) return(slope_parameter_names(fit))
  c(paste0("sd_(Intercept)|", names(fit$flist)), "sigma", names(fit$coefficients))
}

parameter_estimates <- function(fit) {
  stats::setNames(c(sqrt(unname(fit$theta)), unname(fit$coefficients)), parameter_names(fit))
}

#' @export
print.fr_bootstrap <- function(x, ...) {
  refuse_unknown_arguments("print()", ..., help = "fr_bootstrap")
  cat(sprintf("Pigeonhole bootstrap: %d replicates (seed %.0f)", nrow(x), attr(x, "seed")))
  if (length(attr(x, "failed"))) cat(sprintf(", %d failed", length(attr(x, "failed"))))
  cat("\n")
  summary_table <- rbind(estimate = attr(x, "estimate"),
                         mean = colMeans(as.matrix(x)),
                         sd = apply(as.matrix(x), 2L, stats::sd))
  print(summary_table, digits = 4L)
  invisible(x)
}

#' Confidence intervals for a moment fit
#'
#' Intervals for the standard deviations of the random terms, the residual standard
#' deviation and the fixed effects, named as `lme4::confint.merMod(oldNames = FALSE)`
#' names them: `sd_(Intercept)|<term>`, `sigma`, then the fixed effects.
#'
#' * `"analytic"` (the default): each row by the method that covers for it in the
#'   coverage measurements (`bench/coverage-default.R`, `vignette("intervals")`). The fixed
#'   effects by Wald intervals from the GLS covariance `vcov(fit)`, `b +/- z se`. The variance
#'   components (the terms' and the residual's) by scaled chi-square (Satterthwaite)
#'   intervals, `[df v / q(1 - a/2), df v / q(a/2)]` with `q` the quantiles of a chi-square
#'   with `df = 2 v^2 / se^2` degrees of freedom, reported as standard deviations. A variance
#'   estimate is skewed to the right and its standard error grows with it; the chi-square with
#'   the estimate's own coefficient of variation allows for both, is exact for the mean square
#'   of a balanced one-way layout, and covered 93% to 96% for every parameter of the three
#'   designs measured. Wald intervals on the log scale (`v exp(+/- z se / v)`, the earlier
#'   default) correct the skew by a lognormal and fell short (92%) for the 100 items of a
#'   sparse crossed design: a lognormal, more skewed than the chi-square, puts the interval
#'   too low. The standard errors `se` are analytic and assume normal effects and
#'   residuals: for the moment estimator (`method = "moments"`), the covariance of the
#'   moment equations' quadratic forms `q_m = y'B_m y` under normality at the fitted
#'   components,
#'   `2 tr(B_m V B_n V)`, mapped through the equations, its traces estimated by four
#'   random probes (each a few passes over the rows; their error is far below the
#'   estimates'); for `"efficient"` and `"reml"` fits, the sampling sds from REML's
#'   information (`fit$efficient$model_sd`). Heavy-tailed effects or residuals make
#'   these too small. At and near the boundary: an estimate within `z se` of zero
#'   (`df` at most `2 z^2`, about 7.7 at 95%) cannot rule zero out, and there the chi-square
#'   (like the log scale) fails: it takes `se` proportional to `v`, while near zero `se` is
#'   the noise of the other components in the term's level means, so its upper limit grows
#'   without bound as `v` falls (InstEval's 14 departments, `df` 1.7: an upper sd of 0.63,
#'   against 0.13 by the rule used). Such a term, and one estimated at zero, gets the Wald
#'   interval on the variance scale, `[0, sqrt(v + z se)]` (at zero `v` is the raw solution
#'   if positive, else 0). The two rules meet with a jump at `v = z se`, where the
#'   chi-square's upper variance is 7.5 `se` and the Wald's 3.9 `se`. No resampling:
#'   on InstEval it takes a few times a fit. The
#'   result's attribute `"method"` names the method of every row. When `method` is not
#'   given but `boot`, `nsim` or `seed` is, the bootstrap is used (as before this default).
#' * `"bootstrap"`: percentile intervals from [fr_bootstrap()], the
#'   pigeonhole bootstrap, which resamples the levels of every random term independently
#'   (with one term, the cluster bootstrap). The moment estimates of the variances are
#'   unbiased, but in a replicate of crossed data an observation and its copies share one
#'   residual, which shifts the replicates' variances (the residual variance down, the
#'   terms' up). So the variance components' limits are the percentiles of the replicates
#'   centred on the estimate on the variance scale, `v* - mean(v*) + v` (`v*` the unbiased
#'   solutions of the replicates' moment equations, before the boundary rule; `v` the
#'   reported estimate, after it, so that the interval holds the estimate it goes with),
#'   cut at zero and reported as standard deviations. Percentile intervals need at least
#'   one replicate beyond each limit (40 at the 95% level; fewer is an error) and warn
#'   below two and a half (100 at 95%). The pigeonhole bootstrap counts the variance of a single
#'   observation more than once (three times with two crossed terms), so with crossed
#'   terms its intervals are conservative, most of all for the residual standard deviation
#'   and for slopes of covariates that vary within levels.
#' * `"alchemy"`: intervals from the Software Alchemy covariance of a fit made with
#'   `combine = "average"` and `chunk_by` (see [fr_fit()]): the chunk estimates are
#'   independent only when every random term nests in `chunk_by`. With `g` chunks the
#'   limits are `estimate +/- t se`, `t` the quantile of Student's t with `g - 1` degrees
#'   of freedom (the standard errors come from `g` estimates); variance components get
#'   them on the variance scale, cut at zero, and are reported as standard deviations.
#' * `"Wald"`: the fixed effects from `vcov(fit)`, the GLS covariance. The package has no
#'   analytic variance of the moment estimates that holds without normality, so the
#'   variance components use the bootstrap's variance of their replicates (before the
#'   boundary rule),
#'   `v +/- z sd*(v)` on the variance scale, cut at zero, as standard deviations (lme4
#'   reports `NA` there).
#'
#' @param object an `fr_fit`.
#' @param parm the parameters: names, indices, or lme4's `"theta_"` (the standard
#'   deviations) or `"beta_"` (the fixed effects); all by default.
#' @param level the confidence level.
#' @param method `"analytic"`, `"bootstrap"`, `"alchemy"` or `"Wald"`.
#' @param nsim number of bootstrap replicates (for `"bootstrap"`, and `"Wald"`'s
#'   variance components).
#' @param seed the bootstrap's seed, as for [fr_bootstrap()].
#' @param boot replicates from [fr_bootstrap()] to use instead of drawing new ones.
#' @param ... `threads` and `progress`, passed to [fr_bootstrap()]; any other argument is an
#'   error rather than silently ignored.
#' @return a matrix with one row per parameter and the lower and upper limits as
#'   columns, named as [stats::confint()] names them (`"2.5 %"`, `"97.5 %"`), with the
#'   attribute `"method"`: the method of every row.
#' @examples
#' fit <- fr_fit(distance ~ bow + (1 | archer), data = simulate_archers(seed = 1))
#' confint(fit)
#' confint(fit, method = "bootstrap", nsim = 100, seed = 2)
#' confint(fit, parm = "beta_", method = "Wald", nsim = 100, seed = 2)
#' @importFrom stats confint
#' @export
confint.fr_fit <- function(object, parm, level = 0.95, method = c("analytic", "bootstrap", "alchemy", "Wald"),
                           nsim = 200, seed = NULL, boot = NULL, ...) {
  if (missing(method) && (!is.null(boot) || !missing(nsim) || !is.null(seed))) method <- "bootstrap"
  method <- match.arg(method)
  refuse_unknown_arguments("confint()", ..., allowed = c("threads", "progress"),
                           help = "confint.fr_fit")
  names_all <- parameter_names(object)
  wanted <- select_parameters(object, if (missing(parm)) NULL else parm)
  limits <- interval_limits(level)
  probs <- limits$probs
  columns <- limits$columns
  n_sd <- length(object$flist) + 1L
  needs_boot <- method == "bootstrap" || (method == "Wald" && any(wanted <= n_sd))
  if (needs_boot && is.null(boot)) {
    # Checked before the replicates are drawn, and again below for replicates given in `boot`.
    check_replicate_count(check_whole_number(nsim, "nsim", at_least = 1), method, level)
    boot <- fr_bootstrap(object, nsim = nsim, seed = seed, ...)
  }
  if (!is.null(boot) && needs_boot && !identical(colnames(boot), names_all)) {
    stop("`boot` holds the replicates of another model", call. = FALSE)
  }
  if (needs_boot) check_replicate_count(nrow(boot), method, level)
  row_methods <- rep(switch(method,
    analytic = "Wald (GLS vcov)",
    bootstrap = "bootstrap percentile",
    alchemy = "Software Alchemy",
    Wald = "Wald (GLS vcov)"
  ), length(names_all))
  if (method == "Wald") row_methods[seq_len(n_sd)] <- "Wald (bootstrap SE)"
  out <- switch(method,
    analytic = {
      if (any(wanted <= n_sd)) {
        a <- analytic_intervals(object, probs)
        row_methods[seq_len(n_sd)] <- a$method
        a$limits
      } else {
        wald_intervals(object, probs, NULL)
      }
    },
    bootstrap = percentile_intervals(object, boot, probs),
    alchemy = alchemy_intervals(object, probs),
    Wald = wald_intervals(object, probs, if (needs_boot) attr(boot, "raw"))
  )
  out <- matrix(out, length(names_all), 2L, dimnames = list(names_all, columns))
  out <- out[wanted, , drop = FALSE]
  attr(out, "method") <- stats::setNames(row_methods[wanted], names_all[wanted])
  out
}

# The default intervals: the fixed effects from vcov(), the variance components by the scaled
# chi-square rule with the analytic standard errors (see confint.fr_fit and
# variance_limits()), the method of each variance component's row. `rule` "log" gives the
# earlier log-scale Wald intervals (kept for the coverage measurements).
analytic_intervals <- function(fit, probs, se = "normal", rule = "chisq") {
  n_sd <- length(fit$flist) + 1L
  se <- variance_standard_errors(fit, se)
  a <- variance_limits(unname(fit$theta), unname(fit$theta_raw), unname(se$se), probs, rule, se$label)
  fixed <- wald_intervals(fit, probs, NULL)[-seq_len(n_sd), , drop = FALSE]
  list(limits = rbind(a$limits, fixed), method = a$method)
}

# Interval limits of standard deviations from variance estimates `v` (reported, after the
# boundary rule), their raw solutions `raw` and standard errors `se` on the variance scale.
#
# "chisq" (the default's): the scaled chi-square (Satterthwaite) interval, which takes
# v / var ~ chi2_df / df with df = 2 v^2 / se^2, the degrees of freedom of a chi-square
# with the estimate's coefficient of variation: [df v / q(1 - a/2), df v / q(a/2)], q the
# chi-square quantiles. It is exact for a balanced one-way mean square and allows for the
# right skew of a variance estimate that the log scale (a lognormal) over- or undercorrects
# as df changes. "log": v exp(+/- z se / v). Both take se proportional to v.
#
# At and near the boundary: an estimate within z se of zero (df <= 2 z^2, about 7.7 at 95%)
# cannot rule zero out, and there the chi-square (like the log scale) fails: its df shrinks
# with v while se does not (near zero se is the noise of the other components in the term's
# level means, not a multiple of v), so the upper limit grows without bound as v falls (on
# InstEval's 14 departments, df 1.7: an upper sd of 0.63 against a term sd of 0.07). So such
# an estimate, and a variance reported as zero, get the Wald interval on the variance scale,
# [0, v + z se] (a term reported at zero: [0, max(raw, 0) + z se]), whose se is right there. The two rules meet with a jump at
# v = z se (the upper variance is then 7.5 se by the chi-square, 3.9 se by the Wald).
variance_limits <- function(v, raw, se, probs, rule = c("chisq", "log"), label = "normal-theory SE") {
  rule <- match.arg(rule)
  z <- stats::qnorm(probs)
  name <- switch(rule,
    chisq = "scaled chi-square (df = 2 v^2 / se^2)",
    log = "Wald (log scale)"
  )
  limits <- matrix(NA_real_, length(v), 2L)
  method <- rep(paste0(name, ", ", label), length(v))
  for (j in seq_along(v)) {
    if (v[j] > 0 && v[j] + z[1L] * se[j] > 0) {
      limits[j, ] <- switch(rule,
        chisq = {
          df <- 2 * v[j]^2 / se[j]^2
          if (is.finite(df)) df * v[j] / stats::qchisq(rev(probs), df) else rep(v[j], 2L)
        },
        log = v[j] * exp(z * se[j] / v[j])
      )
    } else {
      # The reported estimate when it is positive (the interval holds it), else the raw solution.
      limits[j, ] <- c(0, max(if (v[j] > 0) v[j] else raw[j], 0) + z[2L] * se[j])
      method[j] <- paste0("Wald (variance scale), ", label, if (v[j] > 0) {
        ", lower limit 0 (estimate within z se of zero)"
      } else {
        ", at zero"
      })
    }
  }
  list(limits = sqrt(limits), method = method)
}

# Percentile limits need replicates beyond them: with fewer than one replicate in a tail
# the limits are the extreme replicates (one replicate gives a zero-width interval), and
# with a few they are noisy, for which boot::boot.ci warns too. Wald's variance
# components need a standard deviation of the replicates.
check_replicate_count <- function(n, method, level) {
  if (method == "bootstrap") {
    tail <- n * (1 - level) / 2
    minimum <- ceiling(2 / (1 - level))
    if (tail < 1) {
      stop(sprintf(paste(
        "%d bootstrap %s too few for %s%% percentile intervals: each tail needs",
        "at least one replicate beyond the limit, so at least %d replicates (use nsim = 1000 or more",
        "for stable limits)"
      ), n, ngettext(n, "replicate is", "replicates are"), format(100 * level), minimum), call. = FALSE)
    }
    if (tail < 2.5) {
      warning(sprintf(paste(
        "%s%% percentile limits from %d bootstrap replicates rest on about %.0f replicate(s) in",
        "each tail and are unstable; use nsim = 1000 or more"
      ), format(100 * level), n, tail), call. = FALSE)
    }
  } else if (method == "Wald" && n < 10) {
    stop(sprintf(paste(
      "%d bootstrap %s too few for the standard deviations of the variance",
      "components in Wald intervals; use at least 10 (nsim = 200 or more for stable limits)"
    ), n, ngettext(n, "replicate is", "replicates are")), call. = FALSE)
  }
  invisible(n)
}

# Percentiles of the replicates; the variance components' replicates are first centred on
# the fit's reported estimate on the variance scale (see confint.fr_fit), then cut at zero.
#
# Why the reported estimate (after the boundary rule) and not the raw solution: the
# centring keeps the replicates' spread and removes their shift (the bootstrap's bias);
# the interval it gives should be one around the estimate the fit reports. The two differ
# only when a term is at the boundary: then the reported components are those of the
# model without it, and centring on the raw solution gave intervals that excluded the
# reported value (a zero variance, or a residual variance re-solved without the term).
# The raw replicates are those of the full model, whose spread is at least that of the
# reduced model, so the intervals err on the wide side.
percentile_intervals <- function(fit, boot, probs) {
  quantiles <- function(x) stats::quantile(x, probs = probs, names = FALSE, na.rm = TRUE)
  variances <- attr(boot, "raw")
  centred <- sweep(variances, 2L, colMeans(variances) - unname(fit$theta))
  rbind(t(apply(sqrt(pmax(centred, 0)), 2L, quantiles)),
        t(apply(as.matrix(boot)[, -seq_len(ncol(variances)), drop = FALSE], 2L, quantiles)))
}

# The indices of the parameters `parm` names (lme4's conventions), all when NULL.
select_parameters <- function(fit, parm) {
  names_all <- parameter_names(fit)
  # The standard deviations (and a slope fit's correlations) and sigma come first.
  n_sd <- length(names_all) - length(fit$coefficients)
  if (is.null(parm)) return(seq_along(names_all))
  if (is.numeric(parm)) {
    if (anyNA(parm) || any(parm < 1 | parm > length(names_all) | parm != round(parm))) {
      stop(sprintf("`parm` indices must lie in 1..%d", length(names_all)), call. = FALSE)
    }
    return(as.integer(parm))
  }
  if (!is.character(parm)) stop("`parm` must be parameter names or indices", call. = FALSE)
  out <- integer()
  for (p in parm) {
    out <- c(out, switch(p,
      theta_ = seq_len(n_sd),
      beta_ = n_sd + seq_along(fit$coefficients),
      {
        at <- match(p, names_all)
        if (is.na(at)) {
          stop(sprintf("unknown parameter '%s'; the parameters are: %s", p,
                       paste(names_all, collapse = ", ")), call. = FALSE)
        }
        at
      }
    ))
  }
  unique(out)
}

# Limits estimate +/- quantile * se: the variance components on the variance scale, cut
# at zero and reported as sds (NA where `se_variances` is NULL), then the fixed effects.
symmetric_limits <- function(fit, se_variances, se_fixed, quantiles) {
  n_sd <- length(fit$flist) + 1L
  sds <- if (is.null(se_variances)) {
    matrix(NA_real_, n_sd, 2L)
  } else {
    limits <- outer(unname(fit$theta), rep(1, 2L)) + outer(unname(se_variances), quantiles)
    sqrt(pmax(limits, 0))
  }
  fixed <- outer(unname(fit$coefficients), rep(1, 2L)) + outer(unname(se_fixed), quantiles)
  rbind(sds, fixed)
}

wald_intervals <- function(fit, probs, variances) {
  se_fixed <- sqrt(diag(fit$vcov))[names(fit$coefficients)]
  se_variances <- if (!is.null(variances)) apply(variances, 2L, stats::sd)
  symmetric_limits(fit, se_variances, se_fixed, stats::qnorm(probs))
}

alchemy_intervals <- function(fit, probs) {
  check_alchemy(fit)
  se <- sqrt(diag(fit$alchemy$vcov))
  n_sd <- length(fit$flist) + 1L
  # The covariance is estimated from g chunk estimates: t quantiles with g - 1 df.
  quantiles <- stats::qt(probs, df = nrow(fit$alchemy$estimates) - 1L)
  symmetric_limits(fit, se[seq_len(n_sd)], se[names(fit$coefficients)], quantiles)
}

# Software Alchemy intervals need independent chunks: averaged chunk estimates, chunks of
# whole levels of chunk_by, and every random term nested in chunk_by.
check_alchemy <- function(fit) {
  chunk_by <- fit$chunks$chunk_by
  if (is.null(fit$alchemy) || is.null(chunk_by)) {
    stop(paste(
      "Software Alchemy intervals need a fit made with `combine = \"average\"` and `chunk_by`",
      "(chunks of whole levels, so that the chunk estimates are independent); this fit",
      if (is.null(fit$alchemy)) "did not average chunk estimates" else "chunked rows at random",
      "- use method = \"bootstrap\""
    ), call. = FALSE)
  }
  if (is.null(fit$alchemy$vcov)) {
    stop("Software Alchemy intervals need at least 2 chunks", call. = FALSE)
  }
  by <- fit$flist[[chunk_by]]
  if (is.null(by) || length(by) != fit$nobs) return(invisible())
  for (term in setdiff(names(fit$flist), chunk_by)) {
    f <- fit$flist[[term]]
    pairs <- unique(as.integer(f) * (nlevels(by) + 1) + as.integer(by))
    if (anyDuplicated(pairs %/% (nlevels(by) + 1))) {
      stop(sprintf(paste(
        "Software Alchemy intervals need every random term nested in `chunk_by` ('%s'); levels",
        "of (1 | %s) fall in several of its levels, so the chunk estimates are not independent -",
        "use method = \"bootstrap\""
      ), chunk_by, term), call. = FALSE)
    }
  }
  invisible()
}

# The tail probabilities of two-sided intervals at `level` and the names confint() gives
# their columns ("2.5 %", "97.5 %").
interval_limits <- function(level) {
  if (!is.numeric(level) || length(level) != 1L || is.na(level) || level <= 0 || level >= 1) {
    stop("`level` must be a single number between 0 and 1", call. = FALSE)
  }
  probs <- c((1 - level) / 2, 1 - (1 - level) / 2)
  list(probs = probs, columns = paste(format(100 * probs, trim = TRUE, scientific = FALSE, digits = 3L), "%"))
}
