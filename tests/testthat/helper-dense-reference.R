# Dense, slow reference implementation of the exact method-of-moments
# variance-component estimator, plus design simulators used by the tests.
#
# Everything here is written literally from the definitions with dense
# matrices, so that it can serve as an independent check of the fast
# (closed-form, sparse) implementation. Only use it for small N.
#
# Model: y = X b + sum_k Z_k u_k + e, u_k iid with variance s2_k, e iid with
# variance s2 (no normality assumed).
#
#   W = (X'X)^-1, b_ols = W X'y, r = y - X b_ols, H = X W X', M = I - H
#   factor 0 = the total sum of squares, A_0 = I (Q_0 = r'r, with or without an
#   intercept); factors 1..K = the random-effect grouping factors;
#   Z_k = N x G_k indicator matrix, P_k = Z_k (Z_k'Z_k)^-1 Z_k', A_k = I - P_k
#   Q_k  = r' A_k r
#   E[Q_k] = sum_l s2_l tr(Z_l' M A_k M Z_l) + s2 tr(A_k M)
#   C theta = Q, theta = (s2_1, ..., s2_K, s2)

# ---------------------------------------------------------------------------
# internal helpers
# ---------------------------------------------------------------------------

# Dense N x G indicator matrix of a factor (unused levels dropped).
dense_indicator <- function(f) {
  f <- droplevels(as.factor(f))
  lev <- levels(f)
  Z <- matrix(0, nrow = length(f), ncol = length(lev),
              dimnames = list(NULL, lev))
  Z[cbind(seq_along(f), as.integer(f))] <- 1
  Z
}

# Trace of a square matrix.
dense_trace <- function(A) sum(diag(A))


# n standardized draws (mean 0, variance 1) from the requested distribution.
standardized_draws <- function(n, error_dist) {
  switch(error_dist,
    normal = stats::rnorm(n),
    t5 = stats::rt(n, df = 5) / sqrt(5 / 3),        # Var(t_5) = 5/3
    centered_exp = stats::rexp(n, rate = 1) - 1,    # mean 1, variance 1
    stop("unknown error_dist: ", error_dist)
  )
}

# ---------------------------------------------------------------------------
# 1. dense reference estimator
# ---------------------------------------------------------------------------

#' Dense reference for the exact method-of-moments estimator.
#'
#' @param y numeric response of length N.
#' @param X N x p fixed-effect model matrix of full column rank.
#' @param factors named list of K grouping factors, each of length N.
#' @return list(C, Q, theta, b_ols):
#'   C     (K+1) x (K+1), rows "(all)", names(factors);
#'                        cols names(factors), "Residual";
#'   Q     named (K+1) vector of quadratic forms r' A_k r (names = rownames(C));
#'   theta named raw solution of C theta = Q (names = colnames(C));
#'   b_ols named OLS coefficients (names = colnames(X)).
dense_moment_reference <- function(y, X, factors) {
  y <- as.numeric(y)
  N <- length(y)
  if (N > 3000) stop("dense_moment_reference: N = ", N, " > 3000; too large")
  if (anyNA(y)) stop("dense_moment_reference: y contains NA")
  X <- as.matrix(X)
  storage.mode(X) <- "double"
  if (nrow(X) != N) stop("dense_moment_reference: nrow(X) != length(y)")
  if (anyNA(X)) stop("dense_moment_reference: X contains NA")
  p <- ncol(X)
  if (is.null(colnames(X)) && p > 0) colnames(X) <- paste0("X", seq_len(p))
  if (qr(X)$rank < p) stop("dense_moment_reference: X is not of full column rank")

  if (!is.list(factors)) {
    stop("dense_moment_reference: factors must be a named list")
  }
  factors <- as.list(factors)
  K <- length(factors)
  if (K < 1) stop("dense_moment_reference: need at least one random factor")
  fn <- names(factors)
  if (is.null(fn) || any(fn == "") || anyDuplicated(fn)) {
    stop("dense_moment_reference: factors must have unique, non-empty names")
  }
  for (nm in fn) {
    if (length(factors[[nm]]) != N) {
      stop("dense_moment_reference: factor '", nm, "' has wrong length")
    }
    if (anyNA(factors[[nm]])) {
      stop("dense_moment_reference: factor '", nm, "' contains NA")
    }
  }

  # Fixed-effect part, literally (p = 0 allowed: no fixed effects, M = I).
  I_N <- diag(N)
  if (p > 0) {
    XtX <- crossprod(X)
    W <- solve(XtX)
    b_ols <- drop(W %*% crossprod(X, y))
    names(b_ols) <- colnames(X)
    r <- drop(y - X %*% b_ols)
    M <- I_N - X %*% W %*% t(X)
  } else {
    b_ols <- setNames(numeric(), character())
    r <- y
    M <- I_N
  }

  # Indicator matrices: factor 0 ("(all)", A_0 = I) then the random factors.
  Z_all <- c(list("(all)" = matrix(0, nrow = N, ncol = 0)),
             lapply(factors, dense_indicator))
  A <- c(list("(all)" = I_N), lapply(Z_all[-1], function(Z) {
    P <- Z %*% solve(crossprod(Z)) %*% t(Z)
    I_N - P
  }))

  row_names <- c("(all)", fn)
  col_names <- c(fn, "Residual")
  C <- matrix(NA_real_, nrow = K + 1, ncol = K + 1,
              dimnames = list(row_names, col_names))
  Q <- setNames(numeric(K + 1), row_names)

  for (k in seq_len(K + 1)) {
    A_k <- A[[k]]
    MAM <- M %*% A_k %*% M
    for (l in seq_len(K)) {
      Z_l <- Z_all[[l + 1]]
      C[k, l] <- dense_trace(t(Z_l) %*% MAM %*% Z_l)
    }
    C[k, K + 1] <- dense_trace(A_k %*% M)
    Q[k] <- drop(t(r) %*% A_k %*% r)
  }

  theta <- tryCatch(
    solve(C, Q),
    error = function(e) {
      stop("dense_moment_reference: moment matrix C is singular ",
           "(variance components not identifiable): ", conditionMessage(e))
    }
  )
  theta <- setNames(as.numeric(theta), col_names)

  list(C = C, Q = Q, theta = theta, b_ols = b_ols)
}

# ---------------------------------------------------------------------------
# 2. unbalanced sparse crossed design simulator
# ---------------------------------------------------------------------------

#' Simulate an unbalanced, sparse crossed (optionally + nested) design.
#'
#' Factor a levels are drawn with probability proportional to 1/rank^0.7,
#' factor b levels with probability proportional to 1/rank^0.35 (ranks
#' randomly permuted so the two skews are unrelated). The covariate x is
#' correlated with the a level (x = 0.5 * shift[a] + N(0,1) noise) so X is
#' not orthogonal to the factors. If n_c_per_b is given, a factor c nested
#' in b (labels "b<j>:c<m>", m uniform in 1..n_c_per_b) with variance s2_c
#' is added. Random effects and errors are standardized draws from
#' error_dist scaled to the stated variances. Unused levels are dropped.
#'
#' @return data.frame(y, x, a, b[, c]) with factor columns a, b (and c).
simulate_crossed_design <- function(n_a, n_b, n_obs, s2_a, s2_b, s2_e,
                                    beta = c(1, 0.5), seed = NULL,
                                    error_dist = c("normal", "t5",
                                                   "centered_exp"),
                                    n_c_per_b = NULL, s2_c = 0) {
  error_dist <- match.arg(error_dist)
  stopifnot(n_a >= 1, n_b >= 1, n_obs >= 1,
            s2_a >= 0, s2_b >= 0, s2_e >= 0, s2_c >= 0,
            length(beta) == 2)
  with_local_seed(seed, {
    pa <- 1 / sample.int(n_a)^0.7
    pb <- 1 / sample.int(n_b)^0.35
    ia <- sample.int(n_a, n_obs, replace = TRUE, prob = pa)
    ib <- sample.int(n_b, n_obs, replace = TRUE, prob = pb)

    # level-specific shift of the covariate (independent of the a effects)
    shift_a <- stats::rnorm(n_a)
    x <- 0.5 * shift_a[ia] + stats::rnorm(n_obs)

    u_a <- sqrt(s2_a) * standardized_draws(n_a, error_dist)
    u_b <- sqrt(s2_b) * standardized_draws(n_b, error_dist)
    e <- sqrt(s2_e) * standardized_draws(n_obs, error_dist)
    y <- beta[1] + beta[2] * x + u_a[ia] + u_b[ib] + e

    a_lab <- paste0("a", seq_len(n_a))
    b_lab <- paste0("b", seq_len(n_b))
    out <- data.frame(
      y = NA_real_, x = x,
      a = droplevels(factor(a_lab[ia], levels = a_lab)),
      b = droplevels(factor(b_lab[ib], levels = b_lab))
    )

    if (!is.null(n_c_per_b)) {
      stopifnot(n_c_per_b >= 1)
      within <- sample.int(n_c_per_b, n_obs, replace = TRUE)
      c_lab_all <- as.vector(t(outer(b_lab, paste0("c", seq_len(n_c_per_b)),
                                     paste, sep = ":")))
      # index of (b, within) in c_lab_all (b-major order)
      ic <- (ib - 1L) * n_c_per_b + within
      u_c <- sqrt(s2_c) * standardized_draws(n_b * n_c_per_b, error_dist)
      y <- y + u_c[ic]
      out$c <- droplevels(factor(c_lab_all[ic], levels = c_lab_all))
    }
    out$y <- y
    out
  })
}

# ---------------------------------------------------------------------------
# 3. random small designs for fast-vs-dense comparisons
# ---------------------------------------------------------------------------

#' Random small mixed design (N in 30..120).
#'
#' Fixed part: intercept, numeric covariates x1 (correlated with a) and x2,
#' and a 3-level fixed factor f (all levels present). Random part: crossed
#' factors a and b on a sparse grid of cells, each used cell replicated
#' 1..4 times (so several observations share an a x b cell), and a factor c
#' nested in b (labels "b<j>:c<m>"). The design is redrawn until X has full
#' column rank and the dense moment matrix C is well conditioned.
#'
#' @return list(data = data.frame(y, x1, x2, f, a, b, c),
#'              formula_terms = list(response = "y",
#'                                   fixed = c("x1", "x2", "f"),
#'                                   random = c("a", "b", "c"),
#'                                   fixed_formula = y ~ x1 + x2 + f,
#'                                   formula = y ~ x1 + x2 + f +
#'                                     (1 | a) + (1 | b) + (1 | c)))
random_small_design <- function(seed) {
  fixed_formula <- y ~ x1 + x2 + f
  formula_terms <- list(
    response = "y",
    fixed = c("x1", "x2", "f"),
    random = c("a", "b", "c"),
    fixed_formula = fixed_formula,
    formula = y ~ x1 + x2 + f + (1 | a) + (1 | b) + (1 | c)
  )
  # detach the formulas from this function's frame (keeps results identical
  # across calls and avoids capturing local variables)
  environment(formula_terms$fixed_formula) <- globalenv()
  environment(formula_terms$formula) <- globalenv()
  with_local_seed(seed, {
    for (attempt in seq_len(200)) {
      n_a <- sample(3:8, 1)
      n_b <- sample(3:7, 1)
      n_c_per_b <- sample(2:3, 1)
      cells <- expand.grid(ia = seq_len(n_a), ib = seq_len(n_b))
      n_cells <- sample(max(8, ceiling(0.4 * nrow(cells))):nrow(cells), 1)
      cells <- cells[sort(sample.int(nrow(cells), n_cells)), , drop = FALSE]
      reps <- sample.int(4, n_cells, replace = TRUE)
      ia <- rep(cells$ia, reps)
      ib <- rep(cells$ib, reps)
      N <- length(ia)
      if (N < 30 || N > 120) next

      within <- sample.int(n_c_per_b, N, replace = TRUE)
      ic <- (ib - 1L) * n_c_per_b + within

      shift_a <- stats::rnorm(n_a)
      x1 <- 0.7 * shift_a[ia] + stats::rnorm(N)
      x2 <- stats::runif(N, -1, 1)
      f <- factor(sample(c("f1", "f2", "f3"), N, replace = TRUE),
                  levels = c("f1", "f2", "f3"))
      if (any(table(f) < 2)) next

      s2 <- stats::rexp(4) + 0.2  # s2_a, s2_b, s2_c, s2_e
      u_a <- sqrt(s2[1]) * stats::rnorm(n_a)
      u_b <- sqrt(s2[2]) * stats::rnorm(n_b)
      u_c <- sqrt(s2[3]) * stats::rnorm(n_b * n_c_per_b)
      e <- sqrt(s2[4]) * stats::rnorm(N)
      fx <- c(f1 = 0, f2 = 0.5, f3 = -1)[as.character(f)]
      y <- 2 + 0.8 * x1 - 0.3 * x2 + fx + u_a[ia] + u_b[ib] + u_c[ic] + e

      a_lab <- paste0("a", seq_len(n_a))
      b_lab <- paste0("b", seq_len(n_b))
      c_lab_all <- as.vector(t(outer(b_lab, paste0("c", seq_len(n_c_per_b)),
                                     paste, sep = ":")))
      data <- data.frame(
        y = unname(y), x1 = x1, x2 = x2, f = f,
        a = droplevels(factor(a_lab[ia], levels = a_lab)),
        b = droplevels(factor(b_lab[ib], levels = b_lab)),
        c = droplevels(factor(c_lab_all[ic], levels = c_lab_all))
      )

      # identifiability checks
      X <- stats::model.matrix(formula_terms$fixed_formula, data)
      if (qr(X)$rank < ncol(X)) next
      if (nlevels(data$c) <= nlevels(data$b)) next
      ref <- tryCatch(
        dense_moment_reference(data$y, X, as.list(data[formula_terms$random])),
        error = function(e) NULL
      )
      if (is.null(ref) || !all(is.finite(ref$theta))) next
      if (kappa(ref$C, exact = TRUE) > 1e8) next

      return(list(data = data, formula_terms = formula_terms))
    }
    stop("random_small_design: could not draw an identifiable design")
  })
}

#' Convenience: dense reference for a design from random_small_design().
dense_reference_for_design <- function(design) {
  ft <- design$formula_terms
  X <- stats::model.matrix(ft$fixed_formula, design$data)
  dense_moment_reference(design$data[[ft$response]], X,
                         as.list(design$data[ft$random]))
}

# ---------------------------------------------------------------------------
# 4. dense mixed-model equations (GLS fixed effects, BLUPs, vcov)
# ---------------------------------------------------------------------------

#' Henderson's equations solved densely, with the components taken as given:
#' [X'X, X'Z; Z'X, Z'Z + L] [b; u] = [X'y; Z'y], L = diag(s2 / s2_k); terms with
#' s2_k = 0 are left out (u = 0). vcov = s2 (X'X - X'Z (Z'Z + L)^-1 Z'X)^-1.
#'
#' @param theta named variances: one per factor, then "Residual".
#' @return list(b, u = named list of named vectors, vcov)
dense_mixed_reference <- function(y, X, factors, theta) {
  s2 <- theta[["Residual"]]
  active <- names(factors)[theta[names(factors)] > 0]
  Z <- do.call(cbind, c(list(matrix(0, length(y), 0)), lapply(factors[active], dense_indicator)))
  lambda <- unlist(lapply(active, function(k) rep(s2 / theta[[k]], nlevels(factors[[k]]))))
  p <- ncol(X)
  H <- rbind(cbind(crossprod(X), crossprod(X, Z)),
             cbind(crossprod(Z, X), crossprod(Z) + diag(lambda, length(lambda))))
  sol <- solve(H, c(crossprod(X, y), crossprod(Z, y)))
  b <- stats::setNames(sol[seq_len(p)], colnames(X))
  u <- lapply(factors, function(f) stats::setNames(numeric(nlevels(f)), levels(f)))
  at <- p
  for (k in active) {
    g <- nlevels(factors[[k]])
    u[[k]][] <- sol[at + seq_len(g)]
    at <- at + g
  }
  if (p == 0) return(list(b = b, u = u, vcov = matrix(0, 0, 0)))
  C <- crossprod(Z) + diag(lambda, length(lambda))
  schur <- crossprod(X) - crossprod(X, Z) %*% solve(C, crossprod(Z, X))
  list(b = b, u = u, vcov = s2 * solve(schur))
}

#' A crossed 6 x 8 design whose second factor h has identical level means, so its
#' moment estimate is negative and the fit is at the boundary (variance of h set to 0).
boundary_design <- function() {
  with_local_seed(5, {
    d <- data.frame(g = factor(rep(1:6, each = 8)), h = factor(rep(1:8, times = 6)))
    d$y <- stats::rnorm(6, sd = 3)[d$g] + stats::rnorm(48)
    d$y <- d$y - stats::ave(d$y, d$h) + mean(d$y)
    d
  })
}

# ---------------------------------------------------------------------------
# 5. dense MINQUE equations (the efficient estimator's one step)
# ---------------------------------------------------------------------------

#' The MINQUE(theta0) equations from their definition, with dense matrices:
#' V0 = I + sum_k gamma_k Z_k Z_k' (gamma_k = s2_k / s2 of the prior, floored as the
#' package floors them), P0 = V0^-1 - V0^-1 X (X'V0^-1 X)^-1 X'V0^-1,
#' T_kl = tr(P0 V_k P0 V_l), U_k = y'P0 V_k P0 y, V_e = I; returns the solution theta.
dense_minque_reference <- function(y, X, factors, prior, gamma_floor = 1e-8) {
  k <- length(factors)
  gamma <- pmax(prior[seq_len(k)] / prior[[k + 1L]], gamma_floor)
  Vs <- lapply(factors, function(f) { Z <- dense_indicator(f); Z %*% t(Z) })
  Vs[[k + 1L]] <- diag(length(y))
  V0 <- diag(length(y))
  for (j in seq_len(k)) V0 <- V0 + gamma[[j]] * Vs[[j]]
  Vi <- solve(V0)
  P0 <- if (ncol(X) > 0) Vi - Vi %*% X %*% solve(t(X) %*% Vi %*% X, t(X) %*% Vi) else Vi
  PV <- lapply(Vs, function(V) P0 %*% V)
  T <- outer(seq_along(Vs), seq_along(Vs), Vectorize(function(a, b) dense_trace(PV[[a]] %*% PV[[b]])))
  Py <- P0 %*% y
  U <- vapply(Vs, function(V) drop(t(Py) %*% V %*% Py), 0)
  stats::setNames(solve(T, U), c(names(factors), "Residual"))
}
