# The pigeonhole bootstrap and confidence intervals of fits with random slopes
# ("fr_slope_fit", R/slopes.R). fr_bootstrap() hands a slope fit to slope_bootstrap();
# the replicates are refitted by the core's slope fit (the fit's method, "moments" or
# "efficient") from resampled data that is built in R, one replicate at a time.

# lme4's names of the parameters of a slope fit (confint(oldNames = FALSE)): per term, the
# lower triangle of its covariance by columns, `sd_<column>|<group>` on the diagonal and
# `cor_<row>.<column>|<group>` below it; then `sigma` and the fixed effects. The group is
# the term's grouping factor as written (`(x || g)` gives two terms, both `|g`).
slope_parameter_names <- function(fit) {
  names(slope_parameter_values(fit$Sigma, fit$sigma, fit$coefficients, slope_term_labels(fit)))
}

slope_term_labels <- function(fit) vapply(fit$random, `[[`, "", "label")

# The values of those parameters from the terms' covariance matrices `sigma_list`, the
# residual sd and the fixed effects: standard deviations and correlations (NaN when a
# standard deviation is zero; cut to [-1, 1] when the matrix is not positive semidefinite).
slope_parameter_values <- function(sigma_list, sigma, coefficients, labels) {
  pieces <- lapply(seq_along(sigma_list), function(k) {
    s <- sigma_list[[k]]
    cn <- colnames(s)
    at <- which(lower.tri(s, diag = TRUE), arr.ind = TRUE)
    at <- at[order(at[, "col"], at[, "row"]), , drop = FALSE]
    sd <- sqrt(pmax(diag(s), 0))
    diagonal <- at[, "row"] == at[, "col"]
    value <- ifelse(diagonal, sd[at[, "row"]], s[at] / (sd[at[, "row"]] * sd[at[, "col"]]))
    value[!diagonal] <- pmin(pmax(value[!diagonal], -1), 1)
    value[!diagonal & !is.finite(value)] <- NaN
    stats::setNames(value, paste0(ifelse(diagonal, paste0("sd_", cn[at[, "row"]]),
                                         paste0("cor_", cn[at[, "row"]], ".", cn[at[, "col"]])),
                                  "|", labels[k]))
  })
  c(unlist(pieces), sigma = unname(sigma), coefficients)
}

# The fit's data in the core's form, as fr_fit_slopes() gave it to the core.
slope_bootstrap_data <- function(fit) {
  fixed <- fixed_effect_columns(fit$terms, fit$frame, fit$contrasts)
  y <- response_vector(fit$frame[[1L]], names(fit$frame)[[1L]])
  labels <- slope_term_labels(fit)
  terms <- lapply(seq_along(fit$random), function(k) {
    f <- fit$flist[[labels[k]]]
    list(label = labels[k], codes = f, n_levels = nlevels(f), z = slope_design(fit$random[[k]], fit$frame)$columns)
  })
  list(y = y, columns = fixed$columns, x_names = fixed$names, terms = terms,
       factors = fit$flist[unique(labels)])
}

# Bytes a replicate of `rows` rows holds while it is fitted: its response, fixed and
# slope columns and codes, about three times over (the resampled vectors, the core's copy
# of them and its per-row work).
slope_replicate_bytes <- function(data, rows) {
  n_columns <- 1 + length(data$x_names) + sum(vapply(data$terms, function(t) length(t$z), 1L))
  3 * rows * (8 * n_columns + 4 * (length(data$factors) + 1))
}

# Refuses a bootstrap whose replicates would not fit in memory: a replicate has as many
# rows as the data on average, and more when crossed factors draw a level many times.
check_slope_replicate_memory <- function(data, rows, what) {
  needed <- slope_replicate_bytes(data, rows)
  available <- available_memory()
  if (!is.na(available) && needed > 0.5 * available) {
    stop(sprintf(paste(
      "a bootstrap replicate of this random-slope fit (%s, %.0f rows) would need about %s of",
      "memory, more than half the %s available; bootstrap a subset of the data, or use",
      "confint(method = \"Wald\") for the fixed effects"
    ), what, rows, format_bytes(needed), format_bytes(available)), call. = FALSE)
  }
  invisible(needed)
}

# One pigeonhole replicate of `data`: every grouping factor draws its levels with
# replacement (multiplicities m); row i is repeated prod_k m_k(i) times, each copy with
# its own pair (level, copy) in every factor, numbered level by level, so a level drawn
# twice becomes two levels. Terms on the same factor share its draw.
slope_replicate <- function(data) {
  n <- length(data$y)
  draws <- lapply(data$factors, function(f) tabulate(sample.int(nlevels(f), nlevels(f), replace = TRUE), nlevels(f)))
  sizes <- Reduce(`*`, Map(function(f, m) as.double(m[as.integer(f)]), data$factors, draws), rep(1, n))
  check_slope_replicate_memory(data, sum(sizes), "a replicate drawn")
  index <- seq_len(n)
  codes <- list()
  for (g in names(data$factors)) {
    m <- draws[[g]]
    level <- as.integer(data$factors[[g]])[index]
    times <- m[level]
    copies <- rep.int(seq_along(index), times)
    codes <- lapply(codes, function(code) code[copies])
    codes[[g]] <- rep.int(c(0L, cumsum(m))[level], times) + sequence(times)
    index <- index[copies]
  }
  terms <- lapply(data$terms, function(term) {
    term$codes <- codes[[term$label]]
    term$z <- lapply(term$z, function(v) if (is.null(v)) NULL else v[index])
    term
  })
  list(y = data$y[index], columns = chunk_columns(data$columns, index), terms = terms)
}

# The pigeonhole bootstrap of a slope fit (see fr_bootstrap()): replicates drawn from
# R's random stream seeded by the bootstrap's seed, refitted one after the other by the
# core (on `threads` threads each, whose number does not change the results).
slope_bootstrap <- function(fit, nsim, seed, threads, progress) {
  if (is.null(fit$frame)) {
    stop(paste(
      "the bootstrap resamples the data of the fit, which fits from a list of data frames or",
      "from files do not keep; fit a data frame (chunks of it are fine) to bootstrap"
    ), call. = FALSE)
  }
  data <- slope_bootstrap_data(fit)
  check_bootstrap_memory(nsim, length(fit$theta), length(fit$coefficients))
  check_slope_replicate_memory(data, length(data$y), "the size of the data")
  steps <- if (identical(fit$method, "efficient")) 1L else 0L
  labels <- slope_term_labels(fit)
  design_names <- lapply(fit$Sigma, colnames)
  stream <- with_seed(seed, floor(stats::runif(1L) * .Machine$integer.max))
  bar <- if (isTRUE(progress)) progress_reporter(nsim)
  n_values <- length(slope_parameter_names(fit))
  values <- matrix(NA_real_, nsim, n_values)
  variances <- raw <- matrix(NA_real_, nsim, length(fit$theta))
  errors <- rep(NA_character_, nsim)
  with_seed(stream, for (b in seq_len(nsim)) {
    d <- slope_replicate(data)
    res <- tryCatch(fr_slope_fit(d$y, d$columns, data$x_names, d$terms, threads, steps),
                    error = function(e) conditionMessage(e))
    if (is.character(res)) {
      errors[b] <- res
    } else {
      sigma_list <- slope_sigma_list(res$estimate, res, design_names, fit$groups)
      coef <- stats::setNames(res$coef, data$x_names)[names(fit$coefficients)]
      values[b, ] <- slope_parameter_values(sigma_list, sqrt(res$estimate[length(res$estimate)]), coef, labels)
      variances[b, ] <- res$estimate
      raw[b, ] <- res$raw
    }
    if (!is.null(bar)) bar(b)
  })
  failed <- !is.na(errors)
  if (all(failed)) {
    stop(sprintf("no bootstrap replicate could be fitted; the first failed with: %s", errors[[1L]]), call. = FALSE)
  }
  if (any(failed)) {
    warning(sprintf(
      "%d of %d bootstrap replicates could not be fitted and are left out; the first failed with: %s",
      sum(failed), nsim, errors[failed][[1L]]
    ), call. = FALSE)
  }
  colnames(values) <- slope_parameter_names(fit)
  colnames(variances) <- colnames(raw) <- names(fit$theta)
  frame <- as.data.frame(values[!failed, , drop = FALSE], optional = TRUE)
  rownames(frame) <- NULL
  frame <- structure(frame, class = c("fr_bootstrap", "data.frame"),
                     variances = variances[!failed, , drop = FALSE],
                     raw = raw[!failed, , drop = FALSE],
                     estimate = slope_parameter_values(fit$Sigma, fit$sigma, fit$coefficients, labels),
                     seed = stream, failed = errors[failed])
  # For plot(): the replicates confint() takes the percentiles of.
  attr(frame, "interval_values") <- slope_interval_values(fit, frame)
  frame
}

# Percentile limits of a slope fit's parameters. The covariance parameters' replicates
# (the raw solutions, before the boundary rule) are first centred on the fit's reported
# estimate entry by entry on the variance scale, theta* - mean(theta*) + theta, as for
# intercept-only fits (see percentile_intervals()): in crossed data the pigeonhole
# replicates' variances are shifted (a resampled row's copies share its residual). The
# centred covariance matrices give standard deviations (variances cut at zero) and
# correlations (cut to [-1, 1]); the fixed effects are the replicates' own percentiles.
slope_percentile_intervals <- function(fit, boot, probs) {
  quantiles <- function(x) stats::quantile(x, probs = probs, names = FALSE, na.rm = TRUE)
  t(apply(slope_interval_values(fit, boot), 2L, quantiles))
}

# The replicates whose percentiles are the limits (a matrix with the columns of `boot`).
slope_interval_values <- function(fit, boot) {
  values <- as.matrix(boot)
  if (!slope_bootstrap_centred(fit)) return(values)
  raw <- attr(boot, "raw")
  centred <- sweep(raw, 2L, colMeans(raw) - unname(fit$theta))
  labels <- slope_term_labels(fit)
  design_names <- lapply(fit$Sigma, colnames)
  random <- t(apply(centred, 1L, function(theta) {
    sigma_list <- slope_sigma_list(theta, fit$theta_layout, design_names, fit$groups)
    slope_parameter_values(sigma_list, sqrt(max(theta[[length(theta)]], 0)), NULL, labels)
  }))
  values[, seq_len(ncol(random))] <- random
  values
}

# Whether the percentile intervals centre the covariance replicates: with more than one
# grouping factor. With one, the pigeonhole bootstrap is the cluster bootstrap, whose
# replicates are not shifted by shared residuals; on 300 sleepstudy-shaped data sets
# (bench/slope-coverage.R) centring them lowered the slope sd's coverage from 0.877 to 0.847.
slope_bootstrap_centred <- function(fit) length(unique(slope_term_labels(fit))) > 1L

#' Confidence intervals for a fit with random slopes
#'
#' Intervals for the standard deviations and correlations of the random terms, the
#' residual standard deviation and the fixed effects of a random-slope fit ([fr_fit()]
#' with `(x | g)` terms), with rows named as `lme4::confint.merMod(oldNames = FALSE)`
#' names them: per term `sd_(Intercept)|Subject`, `cor_Days.(Intercept)|Subject`,
#' `sd_Days|Subject` (the lower triangle of its covariance, by columns), then `sigma` and
#' the fixed effects.
#'
#' * `"Wald"` (the default): the fixed effects by `b +/- z se` from the GLS covariance
#'   `vcov(fit)`; the standard deviations, correlations and `sigma` are `NA`, as in lme4's
#'   Wald intervals (the package has no standard errors for them with random slopes yet).
#' * `"bootstrap"`: percentile intervals of every row from [fr_bootstrap()], the pigeonhole
#'   bootstrap (with one grouping factor, the cluster bootstrap), each replicate refitted by
#'   the fit's method. With crossed grouping factors a resampled observation and its
#'   copies share one residual, which shifts the replicates' residual variance down and
#'   the terms' variances up (on 20,000 crossed ratings by 2.3 bootstrap sds for the slope
#'   sd and for `sigma`). So with more than one grouping factor, as for intercept-only fits
#'   ([confint.fr_fit()]), the covariance parameters' replicates (the unbiased solutions,
#'   before the boundary rule) are centred on the reported estimate entry by entry on the
#'   variance scale, `theta* - mean(theta*) + theta`, and the limits are the percentiles of
#'   the standard deviations (variances cut at zero) and correlations (cut to \[-1, 1\]) of
#'   the centred matrices. With one grouping factor (the cluster bootstrap, whose replicates
#'   are not shifted so) the limits are the replicates' own percentiles: on 300
#'   sleepstudy-shaped data sets (`bench/slope-coverage.R`) centring them lowered the slope
#'   sd's coverage from 0.877 to 0.847. The fixed effects' limits are their replicates'
#'   percentiles. With 18 levels the percentile intervals run short (see the vignette).
#'   Percentile intervals need at least one replicate beyond each limit (40 at the 95%
#'   level; fewer is an error) and warn below two and a half (100 at 95%).
#'
#' @param object a random-slope fit from [fr_fit()].
#' @param parm the parameters: names, indices, or lme4's `"theta_"` (the standard
#'   deviations and correlations, and `sigma`) or `"beta_"` (the fixed effects); all by default.
#' @param level the confidence level.
#' @param method `"Wald"` or `"bootstrap"`.
#' @param nsim number of bootstrap replicates.
#' @param seed the bootstrap's seed, as for [fr_bootstrap()].
#' @param boot replicates from [fr_bootstrap()] of this fit to use instead of drawing new ones.
#' @param ... for `"bootstrap"`, `threads` and `progress`, passed to [fr_bootstrap()]; any
#'   other argument (and any with `"Wald"`, as are `nsim`, `seed` and `boot`) is an error
#'   rather than silently ignored.
#' @return a matrix with one row per parameter and the lower and upper limits as columns
#'   (`"2.5 %"`, `"97.5 %"`), with the attribute `"method"`: the method of every row.
#' @examples
#' fit <- fr_fit(Reaction ~ Days + (Days | Subject), data = lme4::sleepstudy)
#' confint(fit)
#' confint(fit, method = "bootstrap", nsim = 200, seed = 1)
#' @export
confint.fr_slope_fit <- function(object, parm, level = 0.95, method = c("Wald", "bootstrap"),
                                 nsim = 200, seed = NULL, boot = NULL, ...) {
  if (missing(method) && (!is.null(boot) || !missing(nsim) || !is.null(seed))) method <- "bootstrap"
  method <- match.arg(method)
  refuse_unknown_arguments("confint()", ..., allowed = if (method == "bootstrap") c("threads", "progress"),
                           help = "confint.fr_slope_fit")
  if (method == "Wald" && (!is.null(boot) || !missing(nsim) || !is.null(seed))) {
    stop("Wald intervals of a slope fit draw no bootstrap replicates: `nsim`, `seed` and `boot` ",
         "apply to method = \"bootstrap\"", call. = FALSE)
  }
  names_all <- slope_parameter_names(object)
  wanted <- select_parameters(object, if (missing(parm)) NULL else parm)
  limits <- interval_limits(level)
  probs <- limits$probs
  columns <- limits$columns
  n_fixed <- length(object$coefficients)
  n_random <- length(names_all) - n_fixed
  if (method == "bootstrap") {
    if (is.null(boot)) {
      check_replicate_count(check_whole_number(nsim, "nsim", at_least = 1), method, level)
      boot <- fr_bootstrap(object, nsim = nsim, seed = seed, ...)
    } else if (!identical(colnames(boot), names_all)) {
      stop("`boot` holds the replicates of another model", call. = FALSE)
    }
    check_replicate_count(nrow(boot), method, level)
    out <- slope_percentile_intervals(object, boot, probs)
    row_methods <- c(rep(if (slope_bootstrap_centred(object)) "bootstrap percentile (centred on the estimate)" else "bootstrap percentile",
                         n_random), rep("bootstrap percentile", n_fixed))
  } else {
    se <- sqrt(diag(object$vcov))[names(object$coefficients)]
    fixed <- outer(unname(object$coefficients), rep(1, 2L)) + outer(unname(se), stats::qnorm(probs))
    out <- rbind(matrix(NA_real_, n_random, 2L), fixed)
    row_methods <- c(rep("not available (Wald)", n_random), rep("Wald (GLS vcov)", n_fixed))
  }
  out <- matrix(out, length(names_all), 2L, dimnames = list(names_all, columns))[wanted, , drop = FALSE]
  attr(out, "method") <- stats::setNames(row_methods[wanted], names_all[wanted])
  out
}
