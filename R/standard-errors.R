# Analytic standard errors of the moment estimates of the variance components.
#
# The estimates solve `lhs theta = q` (see R/moments.R and the core's moments module), with
# `q_0 = r'r` and `q_k = r'A_k r = sum_i r_i (r_i - rbar_k[i])` (r the OLS residuals,
# rbar_k[i] the mean residual of row i's level of term k). Each q_m is a sum over rows of
# psi_mi = r_i (A_m r)_i, centred by its expectation under the fitted components,
#
#   E psi_0i = s2 + sum_l s2_l,
#   E psi_ki = s2 + sum_l s2_l - (s2 + s2_k n_k[i] + sum_{l != k} s2_l n_kl[i]) / n_k[i],
#
# (n_k[i] the rows of i's level of term k, n_kl[i] those of its cell of terms k and l; the
# O(p / N) effect of the fixed effects' estimation on the expectations is left out). Rows
# that share a level of any term are dependent, so the variance of q is the multiway
# cluster-robust sum of Cameron, Gelbach and Miller (2011): over every non-empty set of
# terms, with sign (-1)^(size + 1), the outer products of the sums of the centred
# contributions within the intersections of their levels. Nothing in this assumes normality
# (the fourth moments enter through the squared sums). Then Var(theta) = lhs^-1 Var(q)
# lhs^-T. One pass over the rows per set of terms, and the level sums merge over chunks.

# Both covariances below read the rows again, which fits from files do not keep.
require_frame_for_standard_errors <- function(fit) {
  if (is.null(fit$frame)) {
    stop(paste(
      "analytic standard errors of the variance components need the data of the fit, which",
      "fits from a list of data frames or from files do not keep"
    ), call. = FALSE)
  }
}

# The covariance of the raw moment estimates (terms, then "Residual").
moment_vcov <- function(fit) {
  require_frame_for_standard_errors(fit)
  terms <- names(fit$flist)
  k <- length(terms)
  fixed <- fixed_effect_columns(fit$terms, fit$frame, fit$contrasts)
  y <- response_vector(fit$frame[[1L]], names(fit$frame)[[1L]])
  x <- fixed_matrix(fixed, length(y))
  b <- fit$coef_ols[colnames(x)]
  b[is.na(b)] <- 0
  r <- as.vector(y - x %*% b)
  theta <- unname(fit$theta_raw[c(terms, "Residual")])
  s2 <- theta[[k + 1L]]
  codes <- lapply(fit$flist, as.integer)
  n_level <- lapply(codes, function(g) tabulate(g, max(g))[g])
  total <- s2 + sum(theta[seq_len(k)])
  psi <- matrix(0, length(y), k + 1L)
  psi[, 1L] <- r^2 - total
  for (m in seq_len(k)) {
    g <- codes[[m]]
    level_sums <- numeric(max(g))
    level_sums[sort(unique(g))] <- rowsum(r, g, reorder = TRUE)[, 1L]
    rbar <- level_sums[g] / n_level[[m]]
    expected_between <- s2 + theta[[m]] * n_level[[m]]
    for (l in setdiff(seq_len(k), m)) {
      expected_between <- expected_between + theta[[l]] * cell_counts(codes[[m]], codes[[l]])
    }
    psi[, m + 1L] <- r * (r - rbar) - (total - expected_between / n_level[[m]])
  }
  meat <- matrix(0, k + 1L, k + 1L)
  for (size in seq_len(k)) {
    for (set in utils::combn(k, size, simplify = FALSE)) {
      id <- intersection_codes(codes[set])
      sums <- rowsum(psi, id, reorder = FALSE)
      meat <- meat + (-1)^(size + 1L) * crossprod(sums)
    }
  }
  lhs <- fit$moment_equations$lhs
  inv <- solve(lhs)
  out <- inv %*% meat %*% t(inv)
  dimnames(out) <- list(c(terms, "Residual"), c(terms, "Residual"))
  out
}

# The fixed-effect design as a matrix (plain numeric columns are stored as a list with
# NULL for the intercept; see fixed_effect_columns()).
fixed_matrix <- function(fixed, n) {
  cols <- fixed$columns
  if (is.matrix(cols)) {
    x <- cols
  } else {
    x <- do.call(cbind, lapply(cols, function(v) if (is.null(v)) rep(1, n) else as.double(v)))
    if (is.null(x)) x <- matrix(0, n, 0L)
  }
  colnames(x) <- fixed$names
  x
}

# The rows of every row's cell of two factors' codes.
cell_counts <- function(a, b) {
  id <- intersection_codes(list(a, b))
  tabulate(id)[id]
}

# One integer code per combination of the factors' codes that occurs.
intersection_codes <- function(codes) {
  if (length(codes) == 1L) return(codes[[1L]])
  key <- codes[[1L]]
  for (g in codes[-1L]) {
    key <- match(as.double(key) * (max(g) + 1) + g, unique(as.double(key) * (max(g) + 1) + g))
  }
  key
}

# Standard errors of the variance components (terms, then "Residual") on the variance scale,
# and a label of where they came from: the moment estimator's normal-theory or cluster-robust
# ones, or for efficient and REML fits the sampling sds under normality from REML's information.
# `se` "normal" (moment_vcov_normal) or "robust" (moment_vcov) for moment fits.
variance_standard_errors <- function(fit, se = "normal") {
  names_v <- c(names(fit$flist), "Residual")
  if (!is.null(fit$efficient$model_sd)) {
    out <- unname(fit$efficient$model_sd)
    names(out) <- names_v
    return(list(se = out, label = "normal-theory SE (REML information)"))
  }
  v <- if (se == "robust") moment_vcov(fit) else moment_vcov_normal(fit)
  out <- sqrt(pmax(diag(v), 0))
  list(se = out[names_v], label = if (se == "robust") "cluster-robust SE" else "normal-theory SE")
}

# The covariance of the raw moment estimates under normality at the fit's components:
# Var(q_m, q_n) = 2 tr(B_m V B_n V), B_m = M A_m M (the quadratic forms q_m = y'B_m y),
# V = s2 I + sum_l s2_l Z_l Z_l', then lhs^-1 Var(q) lhs^-T. The traces are estimated with
# Rademacher probes z (4: on InstEval their relative error in a variance is below 3e-4),
# tr(B_m V B_n V) = E[(B_m z)' V B_n V z] (Hutchinson), each probe a
# few passes over the rows; their relative error is about sqrt(2 n_max / (N probes)), n_max
# the rows of the largest level. Returns the covariance with the probes' standard errors of
# its diagonal as attribute "probe_se".
moment_vcov_normal <- function(fit, probes = 4L, seed = 1L) {
  require_frame_for_standard_errors(fit)
  terms <- names(fit$flist)
  k <- length(terms)
  fixed <- fixed_effect_columns(fit$terms, fit$frame, fit$contrasts)
  n <- nrow(fit$frame)
  x <- fixed_matrix(fixed, n)
  qx <- qr(x)
  # An orthonormal basis of the column space: M z = z - Q Q'z by matrix products.
  q_basis <- qr.Q(qx)[, seq_len(qx$rank), drop = FALSE]
  resid <- function(z) z - q_basis %*% crossprod(q_basis, z)
  codes <- lapply(fit$flist, as.integer)
  theta <- unname(pmax(fit$theta[c(terms, "Residual")], 0))
  present <- lapply(codes, function(g) sort(unique(g)))
  level_sums_of <- function(z, l) {
    s <- matrix(0, length(sizes[[l]]), ncol(z))
    s[present[[l]], ] <- rowsum(z, codes[[l]], reorder = TRUE)
    s
  }
  sizes <- lapply(codes, function(g) tabulate(g, max(g)))
  apply_v <- function(z) {
    out <- theta[[k + 1L]] * z
    for (l in seq_len(k)) out <- out + theta[[l]] * level_sums_of(z, l)[codes[[l]], , drop = FALSE]
    out
  }
  apply_b <- function(z, m) {
    z <- resid(z)
    if (m == 0L) return(z)
    z <- z - (level_sums_of(z, m) / pmax(sizes[[m]], 1))[codes[[m]], , drop = FALSE]
    resid(z)
  }
  old_seed <- if (exists(".Random.seed", globalenv())) get(".Random.seed", globalenv())
  on.exit(if (!is.null(old_seed)) assign(".Random.seed", old_seed, globalenv()))
  set.seed(seed)
  each <- array(0, c(k + 1L, k + 1L, probes))
  # Batches of 4 probes bound the memory at a few N x 4 matrices.
  for (first in seq(1L, probes, by = 4L)) {
    cols <- first:min(first + 3L, probes)
    z <- matrix(sample(c(-1, 1), n * length(cols), TRUE), n, length(cols))
    vz <- apply_v(z)
    bz <- lapply(0:k, function(m) apply_b(z, m))
    vbvz <- lapply(0:k, function(m) apply_v(apply_b(vz, m)))
    for (a in 0:k) for (b in 0:k) each[a + 1L, b + 1L, cols] <- colSums(bz[[a + 1L]] * vbvz[[b + 1L]])
  }
  traces <- apply(each, 1:2, mean)
  traces <- (traces + t(traces)) / 2
  inv <- solve(fit$moment_equations$lhs)
  out <- inv %*% (2 * traces) %*% t(inv)
  # The probes' error of every variance, from the spread of the per-probe estimates.
  per_probe <- vapply(seq_len(probes), function(p) diag(inv %*% (2 * each[, , p]) %*% t(inv)), numeric(k + 1L))
  dimnames(out) <- list(c(terms, "Residual"), c(terms, "Residual"))
  attr(out, "probe_se") <- stats::setNames(apply(per_probe, 1L, stats::sd) / sqrt(probes), c(terms, "Residual"))
  out
}
