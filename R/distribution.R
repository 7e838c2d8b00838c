# The distribution of a random term's effects (Full Randomness, section 8): cumulants by
# moments, the Kiefer-Wolfowitz NPMLE, empirical Bayes predictions and prediction
# intervals. The heavy steps (per-level sums, the EM, posteriors, quantiles) are in the
# Rust core (module npmle).

#' The distribution of a random term's effects
#'
#' A random effects model is a mixing distribution (Full Randomness, section 8): the
#' whole distribution of a term's effects can be estimated, not just its variance.
#' `fr_distribution()` estimates it for one random-intercept term of a moment fit in two
#' ways:
#'
#' * **Cumulants by moments** (`summary()`): the third and fourth cumulants (skewness and
#'   excess kurtosis) of the effects and of the errors, from per-level sums of the first
#'   four powers of the partial residuals `p_i = y_i - x_i b - sum_{l != k} u_l` (the
#'   other terms' BLUPs removed). Within a level the k-statistics of the deviations from
#'   the level mean estimate the error cumulants without bias; between levels,
#'   `E[(dbar_g - mu)^3] = k3(a) + k3(e) / n_g^2` and
#'   `E[(dbar_g - mu)^4] = k4(a) + k4(e) / n_g^3 + 3 Var(dbar_g)^2` (with the estimated
#'   `mu` accounted for exactly, using design weights). The third cumulants are exactly
#'   unbiased in a one-term model with an intercept only (the tests check this by
#'   enumeration); the fourth uses the moment variance estimates squared and is unbiased
#'   up to their sampling variance. Standard errors come from resampling the levels'
#'   sums (`nboot` replicates), and a Wald test of normality (`k3 = k4 = 0`) is given for
#'   the effects and for the errors.
#' * **The NPMLE** (`print()`, `plot()`, `quantile()`): the Kiefer-Wolfowitz
#'   nonparametric maximum likelihood estimate of the distribution `G` of the effects,
#'   from the level means `d_g = mean(p_i)` with known noise variances `v_g`, on a grid
#'   of `grid_size` points (Koenker and Mizera 2014), by EM with SQUAREM acceleration in
#'   the Rust core. Levels are binned on `(log v_g, d_g / sqrt(v_g))` (bins a twentieth
#'   of a noise sd wide), so an iteration costs the same for 10^4 or 10^7 levels. The EM
#'   stops when the Kiefer-Wolfowitz gradient is at most `1 + tol` on the whole grid.
#'
#' **Which estimate: the NPMLE or the normal** (`method = "auto"`, the default). The
#' NPMLE is consistent for any distribution, but with few levels it overfits: under
#' normal effects its posterior means are 1.5-2% worse than the BLUPs with 10^3 levels
#' of four rows (`bench/results.md`). The default uses it only when the data show
#' that it describes the level means better than the normal, by a split likelihood
#' ratio (universal inference; Wasserman, Ramdas and Balakrishnan 2020): the levels are
#' split into two halves by position (odd and even); the NPMLE of one half and the
#' normal `N(mu, t2)` fitted by maximum likelihood to the other half give a likelihood
#' ratio on the other half's level means `d_g ~ N(a_g, v_g)`; the ratio is computed both
#' ways and averaged. Under normal effects this average has expectation at most 1, so
#' it exceeds `1 / alpha` with probability at most `alpha` (Markov's inequality), for
#' any number of levels and without asymptotics; its logarithm grows in proportion to
#' the number of levels when the effects are not normal. When it exceeds `1 / alpha`
#' the NPMLE of all the levels is returned; otherwise the normal with mean 0 and the
#' fit's moment variance (on the same kind of grid), whose posterior means are the
#' BLUPs themselves (`ranef(type = "npmle")` then returns the BLUPs, and prediction
#' intervals come from the normal). `alpha = 1` chooses the model with the larger
#' cross-validated likelihood. The choice costs one or two NPMLE fits of half the
#' levels (one when the first ratio alone passes `2 / alpha`).
#' `method = "npmle"`, `"gmodel"` or `"normal"` forces one estimate.
#'
#' **Noise variances and crossed designs.** `v_g = s2 / n_g` in a model with one random
#' term. With other terms, `d_g` also carries the prediction errors of the other terms'
#' BLUPs; they are approximated as independent with the one-way prediction error variance
#' `PEV_h = s2_l s2 / (n_h s2_l + s2)` of level `h` of term `l`, and the average over the
#' level's rows adds `sum_h (c_gh / n_g)^2 PEV_h` to `v_g`, with `c_gh` the number of
#' rows the level shares with level `h` (rows in one cell share one prediction error).
#' This ignores the correlation between the other terms' BLUPs and `d_g` itself, which is
#' small when each level of term `k` is a small part of each level of the others.
#'
#' **Fits without the data.** Fits from a list of data frames or from files keep no
#' residuals; give the chunks again in `data` (a data frame or a list of data frames):
#' the per-level sums are computed chunk by chunk and added, and the result equals the
#' one from the whole data (cell counts `c_gh` are counted within a chunk, which is
#' exact when chunks hold whole levels, `chunk_by`).
#'
#' @param fit an `fr_fit` object.
#' @param term the random term (its label, as in `names(ranef(fit))`); by default the
#'   first.
#' @param grid_size number of grid points of the NPMLE (and of the g-model); `NULL`
#'   (the default): as many as make the spacing a fifth of the median noise sd
#'   `sqrt(v_g)` of the levels over the range of their means, at least 300 and at most
#'   2000. The estimate cannot resolve detail finer than the noise, and a coarser grid
#'   moves it by up to half a spacing: with heavy-tailed effects (wide range) 300 points
#'   were too few (Wasserstein distance to the truth worse than the BLUPs').
#' @param data `NULL` (use the residuals of the fit), or a data frame or a list of data
#'   frames holding the rows of the fit (see above).
#' @param tol,max_iter the EM's stopping rule: the Kiefer-Wolfowitz gradient at most
#'   `1 + tol`, or `max_iter` EM steps.
#' @param threads number of threads (default: those of the fit).
#' @param method `"auto"` (the default): the NPMLE when the split likelihood ratio
#'   against the normal exceeds `1 / alpha`, else the normal (see above); `"npmle"`:
#'   the Kiefer-Wolfowitz NPMLE above; `"normal"`: the normal with the moment variance;
#'   `"gmodel"`:
#'   Efron's (2016) log-spline g-model, a smooth estimate on the same grid,
#'   `g_j ~ exp(Q_j b)` with `Q` a centred natural spline basis of `df` degrees of
#'   freedom (columns scaled to unit length), fitted by maximising the binned marginal
#'   log-likelihood minus Efron's penalty `|b|` (BFGS in the Rust core); the degrees of
#'   freedom are chosen among `df` by AIC. With 10^3 levels its posterior means are
#'   closer to the oracle Bayes rule than the NPMLE's when the effects are smooth (the
#'   NPMLE is discrete and overfits); the NPMLE is consistent for any distribution.
#' @param df the g-model's candidate degrees of freedom (used by `method = "gmodel"`).
#' @param alpha the level of the split likelihood-ratio test of `method = "auto"`: the
#'   NPMLE is chosen when the ratio is at least `1 / alpha`.
#' @param object,x an `fr_distribution` object.
#' @param nboot number of resamples of the levels for the standard errors of the
#'   cumulants.
#' @param seed seed of the resampling.
#' @param probs probabilities.
#' @param type for `plot()`: `"density"` (histogram of the level means, the NPMLE's
#'   masses and the normal density with the moment variance) or `"cdf"`; both by default.
#' @param ... not used; any argument here is an error.
#' @return `fr_distribution()`: an object of class `fr_distribution`, a list with the
#'   term, the grid and its `weights`, the estimate's `moments`, the cumulant estimates
#'   (`cumulants`), the levels' means `d`, noise variances `v` and row counts `n`, and
#'   the EM's convergence (`iterations`, `converged`, `max_gradient`, `n_bins`), the
#'   `method` (the one chosen, for `"auto"`), for the g-model the chosen `df` and its
#'   `aic`, and for `"auto"` the `selection`: the two halves' log likelihood ratios
#'   (`log_ratio`), the log of their average (`log_e`), `alpha` and the `chosen` method.
#'   When the first ratio alone is at least `2 / alpha` the average passes `1 / alpha`
#'   whatever the second, which is then not computed (`NA`; `log_e` is the lower bound
#'   `log_ratio[1] - log(2)`).
#'   `summary()`: a data frame of cumulants, standard errors and tests (printed).
#'   `quantile()`: the quantiles of the estimated distribution.
#' @references Kiefer, J. and Wolfowitz, J. (1956). Consistency of the maximum likelihood
#'   estimator in the presence of infinitely many incidental parameters. Koenker, R. and
#'   Mizera, I. (2014). Convex optimization, shape constraints, compound decisions and
#'   empirical Bayes rules. Varadhan, R. and Roland, C. (2008). Simple and globally
#'   convergent methods for accelerating the convergence of any EM algorithm.
#'   Efron, B. (2016). Empirical Bayes deconvolution estimates. Biometrika 103, 1-20.
#'   Wasserman, L., Ramdas, A. and Balakrishnan, S. (2020). Universal inference.
#'   Proceedings of the National Academy of Sciences 117, 16880-16890.
#' @examples
#' dat <- simulate_archers(n_archers = 200, seed = 1)
#' fit <- fr_fit(distance ~ bow + (1 | archer), data = dat)
#' g <- fr_distribution(fit)
#' g
#' summary(g, nboot = 50)
#' quantile(g, c(0.1, 0.5, 0.9))
#' @export
fr_distribution <- function(fit, term = NULL, grid_size = NULL, data = NULL, tol = 1e-3,
                            max_iter = 600L, threads = NULL, method = c("auto", "npmle", "gmodel", "normal"),
                            df = 3:12, alpha = 0.05, ...) {
  refuse_unknown_arguments("fr_distribution()", ..., help = "fr_distribution")
  if (!inherits(fit, "fr_fit")) stop("`fit` must be an fr_fit object", call. = FALSE)
  if (inherits(fit, "fr_glmm")) {
    stop("fr_distribution() deconvolves the level means of a linear mixed model; for a ",
         "binomial or Poisson fit it is not available (its levels' data are not a mean plus ",
         "normal noise)", call. = FALSE)
  }
  method <- match.arg(method)
  if (!(is.numeric(alpha) && length(alpha) == 1L && !is.na(alpha) && alpha > 0 && alpha <= 1)) {
    stop("`alpha` must be a number in (0, 1] (the level of the split likelihood-ratio test of normality)", call. = FALSE)
  }
  if (!is.null(grid_size) && !(is.numeric(grid_size) && length(grid_size) == 1L && !is.na(grid_size) && grid_size >= 2)) {
    stop("`grid_size` must be NULL or a whole number of at least 2", call. = FALSE)
  }
  if (!(is.numeric(df) && length(df) >= 1L && all(df == round(df)) && all(df >= 1))) {
    stop("`df` must be whole numbers of at least 1 (the g-model's spline degrees of freedom)", call. = FALSE)
  }
  k <- distribution_term(fit, term)
  if (is.null(threads)) threads <- if (is.null(fit$threads)) 1L else fit$threads
  sums <- partial_residual_sums(fit, k, data)
  n <- sums$count
  theta <- fit$theta
  s2 <- unname(theta[["Residual"]])
  has <- n > 0
  d <- ifelse(has, sums$s1 / pmax(n, 1), NA_real_)
  v <- ifelse(has, s2 / pmax(n, 1) + sums$pev / pmax(n, 1)^2, NA_real_)
  if (is.null(grid_size)) grid_size <- default_grid_size(d[has], v[has])
  fit_npmle <- function(dd, vv) {
    fr_npmle(dd, vv, as.integer(grid_size), 0.05, 0.05, tol, as.integer(max_iter), as.integer(threads))
  }
  selection <- NULL
  if (method == "auto") {
    selection <- split_likelihood_ratio(d[has], v[has], fit_npmle, alpha, as.integer(threads))
    method <- selection$chosen
  }
  g <- switch(method,
    npmle = fit_npmle(d[has], v[has]),
    gmodel = fit_gmodel(d[has], v[has], as.integer(grid_size), df, tol, as.integer(max_iter), as.integer(threads)),
    normal = normal_on_grid(d[has], v[has], unname(theta[[k]]), as.integer(grid_size), as.integer(threads))
  )
  keep <- g$weights > 0
  levels <- names(fit$ranef_values[[k]])
  names(d) <- names(v) <- names(n) <- levels
  out <- list(
    term = k, grid = g$grid, weights = g$weights,
    support = data.frame(point = g$grid[keep], prob = g$weights[keep]),
    loglik = g$loglik, iterations = g$iterations, converged = g$converged,
    max_gradient = g$max_gradient, n_bins = g$n_bins, n_levels = sum(has),
    d = d, v = v, n = n, variance = unname(theta[[k]]), sigma2 = s2,
    threads = as.integer(threads), method = method, df = g$df, aic = g$aic, selection = selection,
    blup = if (method == "normal") fit$ranef_values[[k]],
    sums = list(n = n, d = d, m2 = central_sum(sums, 2L), m3 = central_sum(sums, 3L),
                m4 = central_sum(sums, 4L))
  )
  out$moments <- discrete_moments(g$grid[keep], g$weights[keep])
  out$cumulants <- cumulants_by_moments(out$sums, out$variance, s2)
  class(out) <- "fr_distribution"
  out
}

# The choice of method = "auto" (see ?fr_distribution): a cross-fitted split likelihood
# ratio (universal inference). The levels are split into two halves by their position
# (odd, even); the NPMLE fitted to one half is compared with the normal fitted by
# maximum likelihood to the other, on the other half's marginal likelihood, and the two
# ratios are averaged. Under normal effects the average has expectation at most 1, so it
# exceeds 1 / alpha with probability at most alpha (Markov's inequality).
# The second ratio is not computed when the first alone passes 2 / alpha (the average
# passes 1 / alpha whatever the second, a positive number): the decision is the same,
# and `log_e` is then the lower bound log(first / 2).
split_likelihood_ratio <- function(d, v, fit_npmle, alpha, threads) {
  first <- seq_along(d) %% 2L == 1L
  one_way <- function(fitted) {
    held <- !fitted
    g <- fit_npmle(d[fitted], v[fitted])
    fr_npmle_loglik(g$grid, g$weights, d[held], v[held], threads) - normal_max_loglik(d[held], v[held])
  }
  log_ratio <- c(-Inf, -Inf)
  if (length(d) >= 2L) {
    log_ratio[1L] <- one_way(first)
    log_ratio[2L] <- if (log_ratio[1L] >= log(2 / alpha)) NA_real_ else one_way(!first)
  }
  known <- log_ratio[!is.na(log_ratio)]
  top <- max(known)
  log_e <- if (is.finite(top)) top + log(sum(exp(known - top)) / 2) else -Inf
  list(log_ratio = log_ratio, log_e = log_e, alpha = alpha,
       chosen = if (log_e >= log(1 / alpha)) "npmle" else "normal")
}

# The number of grid points: spacing a fifth of the median noise sd of the levels (the
# estimate cannot resolve finer detail; a coarser grid biases it by up to half a
# spacing, which heavy tails, widening the range, made visible), at least 300 and at
# most 2000 points (memory and time grow with the grid).
default_grid_size <- function(d, v) {
  if (length(d) < 2L) return(300L)
  h <- sqrt(stats::median(v)) / 5
  as.integer(min(2000, max(300, ceiling(diff(range(d)) / h) + 1)))
}

# The largest marginal log-likelihood of d_g ~ N(mu, t2 + v_g): mu profiled out (the
# weighted mean), t2 >= 0 by Fisher scoring on the profile likelihood (step halving
# keeps every step an ascent; 0 when the score there is negative).
normal_max_loglik <- function(d, v) {
  profile <- function(t2) {
    s <- t2 + v
    w <- 1 / s
    mu <- sum(w * d) / sum(w)
    r2 <- (d - mu)^2
    list(ll = -0.5 * sum(log(2 * pi * s) + r2 * w), score = 0.5 * sum(r2 * w * w - w), info = 0.5 * sum(w * w))
  }
  t2 <- max(mean((d - mean(d))^2) - mean(v), 0)
  cur <- profile(t2)
  for (i in seq_len(100L)) {
    step <- cur$score / cur$info
    if (t2 == 0 && step <= 0) break
    next_t2 <- max(t2 + step, 0)
    nxt <- profile(next_t2)
    while (nxt$ll < cur$ll && abs(next_t2 - t2) > 1e-12 * (1 + t2)) {
      next_t2 <- (t2 + next_t2) / 2
      nxt <- profile(next_t2)
    }
    done <- abs(next_t2 - t2) <= 1e-10 * (1 + t2)
    if (nxt$ll >= cur$ll) {
      t2 <- next_t2
      cur <- nxt
    }
    if (done) break
  }
  cur$ll
}

# The normal distribution of the fit (mean 0, the moment variance s2a) on an equally
# spaced grid covering the level means and five of its sds either side of 0; a point
# mass at the grid point nearest 0 when s2a is 0 (or below the grid's resolution).
normal_on_grid <- function(d, v, s2a, grid_size, threads) {
  s <- sqrt(max(s2a, 0))
  grid <- seq(min(d, -5 * s), max(d, 5 * s), length.out = grid_size)
  h <- grid[2L] - grid[1L]
  w <- if (s > h) stats::dnorm(grid, 0, s) else as.numeric(seq_along(grid) == which.min(abs(grid)))
  w <- w / sum(w)
  list(grid = grid, weights = w, loglik = fr_npmle_loglik(grid, w, d, v, threads), iterations = 0L,
       converged = TRUE, max_gradient = NA_real_, n_bins = NA_real_)
}

# Efron's log-spline g-model on an equally spaced grid over the level means: a centred
# natural spline basis with `k` degrees of freedom, columns scaled to unit length (as in
# Efron 2016), penalty |b| (Efron's c0 = 1); `k` chosen among `df` by AIC, -2 loglik + 2 k.
fit_gmodel <- function(d, v, grid_size, df, tol, max_iter, threads) {
  if (grid_size < 4L || !(diff(range(d)) > 0)) {
    stop("the g-model needs a grid of at least 4 points and level means that differ", call. = FALSE)
  }
  grid <- seq(min(d), max(d), length.out = grid_size)
  fits <- lapply(df, function(k) {
    Q <- splines::ns(grid, df = k)
    Q <- scale(Q, center = TRUE, scale = FALSE)
    Q <- sweep(Q, 2L, sqrt(colSums(Q^2)), "/")
    g <- fr_gmodel(d, v, grid, as.double(Q), 1, 0.05, 0.05, tol, max_iter, threads)
    g$df <- k
    g$aic <- -2 * g$loglik + 2 * k
    g
  })
  fits[[which.min(vapply(fits, `[[`, 0, "aic"))]]
}

#' @rdname fr_distribution
#' @export
ranef_distribution <- function(fit, term = NULL, ...) fr_distribution(fit, term, ...)

distribution_term <- function(fit, term) {
  terms <- names(fit$flist)
  if (is.null(term)) return(terms[[1L]])
  if (!is.character(term) || length(term) != 1L || !term %in% terms) {
    stop(sprintf("`term` must be one of the model's random terms: %s",
                 paste0("'", terms, "'", collapse = ", ")), call. = FALSE)
  }
  term
}

# Per-level sums of powers of the partial residuals of term k (the other terms' BLUPs
# removed) and the per-level sum of the other terms' prediction error variances,
# sum_h c_gh^2 PEV_h. From the residuals of the fit, or chunk by chunk from `data`.
partial_residual_sums <- function(fit, k, data) {
  u <- fit$ranef_values[[k]]
  if (is.null(data)) {
    require_data_of_fit(fit, "residuals for the distribution of a term (give them again in `data`)")
    codes <- lapply(fit$flist, function(f) as.integer(unclass(f)))
    counts <- Map(function(x, l) tabulate(x, length(fit$ranef_values[[l]])), codes, names(codes))
    return(level_sums_of(fit, k, unname(fit$residuals) + unname(u)[codes[[k]]], codes, counts))
  }
  chunks <- if (is.data.frame(data)) list(data) else data
  if (!is.list(chunks) || !all(vapply(chunks, is.data.frame, logical(1)))) {
    stop("`data` must be a data frame or a list of data frames", call. = FALSE)
  }
  labels <- vapply(fit$random, `[[`, "", "label")
  chunk_codes <- lapply(chunks, function(chunk) {
    codes <- lapply(fit$random, function(t) newdata_level_index(fit, t, chunk))
    names(codes) <- labels
    codes
  })
  # The level counts of the whole data (the other terms' prediction errors need them).
  counts <- lapply(labels, function(l) {
    Reduce(`+`, lapply(chunk_codes, function(codes) tabulate(codes[[l]], length(fit$ranef_values[[l]]))))
  })
  names(counts) <- labels
  total <- NULL
  for (i in seq_along(chunks)) {
    chunk <- chunks[[i]]
    codes <- chunk_codes[[i]]
    y <- eval(fit$formula[[2L]], chunk, environment(fit$formula))
    eta <- predict(fit, chunk, allow.new.levels = TRUE)
    ok <- !is.na(eta) & !is.na(y) & Reduce(`&`, lapply(codes, Negate(is.na)))
    r <- (y - eta)[ok] + unname(u)[codes[[k]][ok]]
    part <- level_sums_of(fit, k, r, lapply(codes, function(x) x[ok]), counts)
    total <- if (is.null(total)) part else Map(`+`, total, part)
  }
  total
}

level_sums_of <- function(fit, k, r, codes, counts) {
  n_levels <- length(fit$ranef_values[[k]])
  sums <- fr_level_power_sums(as.double(r), codes[[k]], n_levels, 0)
  # The other terms' prediction errors, sum_h c_gh^2 PEV_h per level g of term k.
  pev <- numeric(n_levels)
  s2 <- unname(fit$theta[["Residual"]])
  for (l in setdiff(names(codes), k)) {
    s2l <- unname(fit$theta[[l]])
    if (!(s2l > 0)) next
    nl <- counts[[l]]
    pev_l <- s2l * s2 / (nl * s2l + s2)
    key <- (as.double(codes[[k]]) - 1) * length(nl) + codes[[l]]
    o <- order(key, method = "radix")
    runs <- rle(key[o])
    first <- o[cumsum(runs$lengths) - runs$lengths + 1L]
    pev <- pev + rowsum_by(codes[[k]][first], runs$lengths^2 * pev_l[codes[[l]][first]], n_levels)
  }
  sums$pev <- pev
  sums
}

rowsum_by <- function(index, x, n) {
  out <- numeric(n)
  s <- rowsum(x, index, reorder = TRUE)
  out[as.integer(rownames(s))] <- s[, 1L]
  out
}

# Sums of (x - level mean)^r from the raw power sums.
central_sum <- function(s, r) {
  n <- pmax(s$count, 1)
  m <- s$s1 / n
  switch(r - 1L,
    s$s2 - n * m^2,
    s$s3 - 3 * m * s$s2 + 2 * n * m^3,
    s$s4 - 4 * m * s$s3 + 6 * m^2 * s$s2 - 3 * n * m^4
  )
}

discrete_moments <- function(a, w) {
  mu <- sum(w * a)
  k2 <- sum(w * (a - mu)^2)
  c(mean = mu, variance = k2, sd = sqrt(k2),
    skewness = sum(w * (a - mu)^3) / k2^1.5,
    excess_kurtosis = sum(w * (a - mu)^4) / k2^2 - 3)
}

# The cumulants by moments from per-level row counts `n`, means `d` and central sums
# `m2`, `m3`, `m4` (see ?fr_distribution); `index` resamples the levels.
cumulants_by_moments <- function(s, s2a, s2e, index = NULL) {
  keep <- which(s$n > 0)
  if (!is.null(index)) keep <- keep[index]
  n <- s$n[keep]
  d <- s$d[keep]
  m2 <- s$m2[keep]
  m3 <- s$m3[keep]
  m4 <- s$m4[keep]
  # Within levels: k-statistics of the deviations from the level mean, pooled with
  # weights n - 2 and n - 3 (each level's k-statistic is unbiased for the error's).
  i3 <- n >= 3
  i4 <- n >= 4
  k3e <- if (any(i3)) sum((n * m3 / (n - 1))[i3]) / sum((n - 2)[i3]) else NA_real_
  k4e <- if (any(i4)) {
    sum(((n * (n + 1) * m4 - 3 * (n - 1) * m2^2) / ((n - 1) * (n - 2)))[i4]) / sum((n - 3)[i4])
  } else {
    NA_real_
  }
  # Between levels: design weights w (the mean) and a (the powers), so that the
  # expectations below are exact.
  w <- n / sum(n)
  a <- n / (n + 1)
  z <- d - sum(w * d)
  A3 <- a * (1 - w)^3 - w^3 * (sum(a) - a)
  k3a <- (sum(a * z^3) - (if (is.na(k3e)) 0 else k3e) * sum(A3 / n^2)) / sum(A3)
  B4 <- a * (1 - w)^4 + w^4 * (sum(a) - a)
  sig <- s2a + s2e / n
  S <- sum(w^2 * sig)
  k4a <- (sum(a * z^4) - (if (is.na(k4e)) 0 else k4e) * sum(B4 / n^3) -
            3 * sum(a * (sig * (1 - 2 * w) + S)^2)) / sum(B4)
  c(k3_effect = k3a, k4_effect = k4a, k3_error = k3e, k4_error = k4e)
}

#' @rdname fr_distribution
#' @export
print.fr_distribution <- function(x, ...) {
  m <- x$moments
  gmodel <- identical(x$method, "gmodel")
  what <- switch(x$method, gmodel = sprintf("log-spline g-model (%d df, by AIC)", x$df),
                 normal = "normal (moment variance)", "NPMLE")
  cat(sprintf("Distribution of the effects of %s: %s on a grid of %d points\n",
              term_label(x$term), what, length(x$grid)))
  if (!is.null(x$selection)) {
    cat(sprintf("  chosen by the split likelihood ratio of the NPMLE to the normal: %s %s 1/alpha = %.4g\n",
                format_ratio(x$selection$log_e), if (x$method == "npmle") ">=" else "<", 1 / x$selection$alpha))
  }
  if (x$method == "normal") {
    cat(sprintf("  %d levels; posterior means are the BLUPs\n", x$n_levels))
  } else if (gmodel) {
    cat(sprintf("  %d levels in %d bins; BFGS %s after %d steps (KW gradient %.6f)\n",
                x$n_levels, x$n_bins, if (isTRUE(x$converged)) "converged" else "stopped", x$iterations,
                x$max_gradient))
  } else {
    cat(sprintf("  %d levels in %d bins; %d support points with positive mass; EM %s after %d steps (KW gradient %.6f)\n",
                x$n_levels, x$n_bins, nrow(x$support),
                if (isTRUE(x$converged)) "converged" else "stopped", x$iterations, x$max_gradient))
  }
  cat(sprintf("  mean %.4g, sd %.4g (moment estimate %.4g), skewness %.3g, excess kurtosis %.3g\n",
              m[["mean"]], m[["sd"]], sqrt(x$variance), m[["skewness"]], m[["excess_kurtosis"]]))
  q <- quantile(x, c(0.05, 0.25, 0.5, 0.75, 0.95))
  cat("  quantiles:", paste(sprintf("%s %.4g", names(q), q), collapse = ", "), "\n")
  invisible(x)
}

format_ratio <- function(log_e) {
  if (!is.finite(log_e)) return(if (log_e > 0) "Inf" else "0")
  if (abs(log_e) < log(1e6)) sprintf("%.4g", exp(log_e)) else sprintf("exp(%.1f)", log_e)
}

#' @rdname fr_distribution
#' @export
summary.fr_distribution <- function(object, nboot = 200L, seed = 1L, ...) {
  refuse_unknown_arguments("summary()", ..., help = "fr_distribution")
  est <- cumulants_by_moments(object$sums, object$variance, object$sigma2)
  G <- sum(object$sums$n > 0)
  reps <- if (nboot > 1L) {
    old <- if (exists(".Random.seed", envir = globalenv())) get(".Random.seed", envir = globalenv())
    on.exit(if (is.null(old)) rm(".Random.seed", envir = globalenv()) else
      assign(".Random.seed", old, envir = globalenv()), add = TRUE)
    set.seed(seed)
    t(vapply(seq_len(nboot), function(b) {
      cumulants_by_moments(object$sums, object$variance, object$sigma2,
                           sample.int(G, G, replace = TRUE))
    }, numeric(4)))
  }
  se <- if (is.null(reps)) rep(NA_real_, 4) else apply(reps, 2, stats::sd, na.rm = TRUE)
  scale <- c(object$variance^1.5, object$variance^2, object$sigma2^1.5, object$sigma2^2)
  test <- function(cols) {
    k <- est[cols]
    if (is.null(reps) || anyNA(k)) return(c(NA_real_, NA_real_))
    V <- stats::cov(reps[, cols], use = "complete.obs")
    chi2 <- tryCatch(drop(t(k) %*% solve(V, k)), error = function(e) NA_real_)
    c(chi2, stats::pchisq(chi2, 2, lower.tail = FALSE))
  }
  ta <- test(1:2)
  te <- test(3:4)
  out <- data.frame(
    part = c("effect", "effect", "error", "error"),
    cumulant = c("k3", "k4", "k3", "k4"),
    estimate = unname(est), se = unname(se),
    standardised = unname(est / scale),
    standardised_se = unname(se / scale),
    npmle = c(object$moments[["skewness"]] * object$moments[["variance"]]^1.5,
              object$moments[["excess_kurtosis"]] * object$moments[["variance"]]^2, NA, NA),
    stringsAsFactors = FALSE
  )
  attr(out, "tests") <- data.frame(part = c("effect", "error"), chi2 = c(ta[1], te[1]),
                                   df = 2, p.value = c(ta[2], te[2]))
  attr(out, "term") <- object$term
  attr(out, "nboot") <- nboot
  attr(out, "method") <- object$method
  class(out) <- c("summary.fr_distribution", "data.frame")
  out
}

#' @export
print.summary.fr_distribution <- function(x, digits = 4, ...) {
  cat(sprintf("Cumulants of %s and of the errors, by moments (se from %d resamples of the levels)\n",
              term_label(attr(x, "term")), attr(x, "nboot")))
  tab <- data.frame(
    part = x$part,
    quantity = ifelse(x$cumulant == "k3", "skewness", "excess kurtosis"),
    estimate = signif(x$standardised, digits), se = signif(x$standardised_se, digits),
    cumulant = signif(x$estimate, digits), `cumulant se` = signif(x$se, digits),
    estimate = signif(x$npmle, digits), check.names = FALSE
  )
  names(tab)[7L] <- switch(if (is.null(attr(x, "method"))) "npmle" else attr(x, "method"),
                           normal = "normal's", gmodel = "g-model's", "NPMLE's")
  print(tab, row.names = FALSE)
  tests <- attr(x, "tests")
  cat("Wald tests of normality (k3 = k4 = 0):\n")
  for (i in seq_len(nrow(tests))) {
    cat(sprintf("  %-6s chi2 = %.3g on 2 df, p = %.3g\n", tests$part[i], tests$chi2[i], tests$p.value[i]))
  }
  invisible(x)
}

#' @rdname fr_distribution
#' @importFrom stats quantile
#' @export
quantile.fr_distribution <- function(x, probs = seq(0, 1, 0.25), ...) {
  refuse_unknown_arguments("quantile()", ..., help = "fr_distribution")
  cdf <- cumsum(x$support$prob)
  q <- x$support$point[pmin(findInterval(probs - 1e-12, cdf) + 1L, nrow(x$support))]
  names(q) <- paste0(format(100 * probs, trim = TRUE), "%")
  q
}

#' @rdname fr_distribution
#' @export
plot.fr_distribution <- function(x, type = c("density", "cdf"), ...) {
  refuse_unknown_arguments("plot()", ..., help = "fr_distribution")
  type <- match.arg(type, several.ok = TRUE)
  if (length(type) == 2L) {
    old <- graphics::par(mfrow = c(1L, 2L))
    on.exit(graphics::par(old), add = TRUE)
  }
  mu <- x$moments[["mean"]]
  sd <- sqrt(x$variance)
  d <- x$d[!is.na(x$d)]
  if ("density" %in% type) {
    h <- graphics::hist(d, breaks = "FD", plot = FALSE)
    curve_x <- seq(min(d, x$support$point), max(d, x$support$point), length.out = 200)
    dens <- stats::dnorm(curve_x, mu, sd)
    top <- max(h$density, dens)
    graphics::plot(h, freq = FALSE, col = "grey90", border = "grey60", ylim = c(0, top),
                   main = sprintf("Effects of %s", term_label(x$term)), xlab = "effect / level mean")
    graphics::lines(curve_x, dens, col = "steelblue", lwd = 2, lty = 2)
    graphics::segments(x$support$point, 0, x$support$point,
                       top * x$support$prob / max(x$support$prob), col = "firebrick", lwd = 2)
    graphics::legend("topright", bty = "n", cex = 0.8,
                     legend = c("level means", "normal, moment variance", "NPMLE masses (scaled)"),
                     col = c("grey60", "steelblue", "firebrick"), lty = c(1, 2, 1), lwd = c(6, 2, 2))
  }
  if ("cdf" %in% type) {
    graphics::plot(stats::stepfun(x$support$point, c(0, cumsum(x$support$prob))),
                   do.points = FALSE, col = "firebrick", lwd = 2, main = "Distribution function",
                   xlab = "effect", ylab = "CDF")
    r <- range(x$support$point, mu - 3 * sd, mu + 3 * sd)
    graphics::curve(stats::pnorm(x, mu, sd), from = r[1], to = r[2], add = TRUE,
                    col = "steelblue", lwd = 2, lty = 2)
    graphics::legend("bottomright", bty = "n", cex = 0.8, legend = c("NPMLE", "normal, moment variance"),
                     col = c("firebrick", "steelblue"), lty = c(1, 2), lwd = 2)
  }
  invisible(x)
}

# Posterior means of every level of term k under its NPMLE (empirical Bayes); the
# BLUPs when the distribution is the normal (method "normal", or chosen by "auto").
npmle_ranef <- function(dist) {
  if (identical(dist$method, "normal")) return(dist$blup)
  u <- fr_npmle_posterior_means(dist$grid, dist$weights, unname(dist$d), unname(dist$v),
                                dist$threads)
  names(u) <- names(dist$d)
  u[is.na(dist$d)] <- 0
  u
}

# The index of each row of `newdata` among the levels of random term `term` (NA: new).
newdata_level_index <- function(object, term, newdata) {
  u <- object$ranef_values[[term$label]]
  parts <- newdata_groupings(term, newdata, environment(object$formula))
  labels <- newdata_labels(parts)
  components <- attr(object$flist[[term$label]], "components")
  if (is.null(components)) match(labels, names(u)) else match_tuples(parts, components)
}
