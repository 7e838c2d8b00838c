# The efficient estimator for random slopes (one MINQUE step from the moment estimates;
# core efficient_slopes.rs) against dense matrices, lmer's REML and the R methods.

# The MINQUE(theta_0) equations by dense matrices, from the definitions: V_m for every
# entry of every Sigma_k (Z_k (I x E^s_ab) Z_k') and I for s2, V_0 = sum theta_0m V_m,
# P_0 = V_0^-1 - V_0^-1 X (X'V_0^-1 X)^-1 X'V_0^-1, T_ml = tr(P_0 V_m P_0 V_l),
# U_m = y'P_0 V_m P_0 y. `zs` is a list of the terms' N x q design matrices, `codes`
# their level codes; parameters as the package orders them (each term's lower triangle by
# columns, then s2).
dense_minque_slopes <- function(y, X, zs, codes, theta0) {
  n <- length(y)
  vs <- list()
  for (k in seq_along(zs)) {
    z <- zs[[k]]
    q <- ncol(z)
    same <- outer(codes[[k]], codes[[k]], "==")
    for (col in seq_len(q)) {
      for (row in col:q) {
        e <- matrix(0, q, q)
        e[row, col] <- 1
        e[col, row] <- 1
        vs[[length(vs) + 1L]] <- (z %*% e %*% t(z)) * same
      }
    }
  }
  vs[[length(vs) + 1L]] <- diag(n)
  v0 <- Reduce(`+`, Map(`*`, vs, theta0))
  vi <- solve(v0)
  p0 <- vi - vi %*% X %*% solve(t(X) %*% vi %*% X, t(X) %*% vi)
  pv <- lapply(vs, function(v) p0 %*% v)
  m <- length(vs)
  lhs <- matrix(0, m, m)
  for (i in seq_len(m)) for (j in seq_len(m)) lhs[i, j] <- sum(pv[[i]] * t(pv[[j]]))
  py <- p0 %*% y
  q <- vapply(vs, function(v) drop(t(py) %*% v %*% py), 0)
  list(lhs = lhs, q = q, theta = solve(lhs, q))
}

# A small unbalanced crossed design with two slope terms, a user with one row and a user
# whose x is constant (singular W_g).
slope_efficient_design <- function(seed) {
  set.seed(seed)
  n <- 150
  d <- data.frame(user = sample(14, n, TRUE), item = sample(6, n, TRUE), x = runif(n, 0, 3), z = rnorm(n))
  d$user[d$user == 14] <- 13
  d$user[1] <- 14
  d$x[d$user == 13] <- 1.5
  d$user <- factor(d$user)
  d$item <- factor(d$item)
  u <- matrix(rnorm(28), 14) %*% chol(matrix(c(2, 0.5, 0.5, 1), 2))
  v <- matrix(rnorm(12), 6) %*% chol(matrix(c(1, -0.3, -0.3, 0.6), 2))
  d$y <- 1 + d$x + u[d$user, 1] + u[d$user, 2] * d$x + v[d$item, 1] + v[d$item, 2] * d$z + rnorm(n)
  d
}

test_that("the slope MINQUE step equals the dense definition (exact traces)", {
  d <- slope_efficient_design(11)
  fit <- fr_fit(y ~ x + (x | user) + (z | item), d, method = "efficient")
  expect_equal(fit$method, "efficient")
  expect_equal(unname(fit$efficient$probes), c(0L, 0L))
  expect_false(any(fit$efficient$moment_boundary))
  theta0 <- unname(fit$efficient$moment_theta)
  X <- cbind(1, d$x)
  zs <- list(cbind(1, d$x), cbind(1, d$z))
  ref <- dense_minque_slopes(d$y, X, zs, list(d$user, d$item), theta0)
  s2 <- theta0[length(theta0)]
  # The package's equations are scaled to s2_0 = 1: T and U times s2_0^2.
  expect_equal(fit$equations$lhs, ref$lhs * s2^2, tolerance = 1e-8)
  expect_equal(fit$equations$q, ref$q * s2^2, tolerance = 1e-8)
  expect_equal(unname(fit$theta_raw), ref$theta, tolerance = 1e-8)
  # The moment step differs from the MINQUE step (the test can fail).
  expect_gt(max(abs(fit$efficient$moment_theta_raw - fit$theta_raw) / abs(ref$theta)), 1e-3)
  # Chunks give the same fit.
  chunked <- fr_fit(y ~ x + (x | user) + (z | item), d, method = "efficient", chunks = 3, seed = 1)
  expect_equal(chunked$theta, fit$theta, tolerance = 1e-10)
})

test_that("a slope prior at the boundary is floored, and one-term and (1 | g) terms match the dense step", {
  d <- slope_efficient_design(4)
  # (x || user) splits into q = 1 terms; an intercept-only term beside a slope term.
  fit <- suppressMessages(fr_fit(y ~ x + (x || user) + (1 | item), d, method = "efficient"))
  theta0 <- unname(fit$efficient$moment_theta)
  # The user intercepts' variance is estimated at 0 here: the prior takes the floor.
  expect_true(fit$efficient$moment_boundary[[1]])
  expect_equal(theta0[1], 0)
  n_levels <- c(nlevels(d$user), nlevels(d$item))
  zs <- list(matrix(1, nrow(d)), matrix(d$x), matrix(1, nrow(d)))
  s2 <- theta0[4]
  # The prior's floor (eigenvalues of D^1/2 Gamma D^1/2 at least 1e-8, D the mean z^2).
  floor <- 1e-8 * s2 / c(1, mean(d$x^2), 1)
  ref <- dense_minque_slopes(d$y, cbind(1, d$x), zs, list(d$user, d$user, d$item), c(pmax(theta0[1:3], floor), s2))
  expect_equal(unname(fit$theta_raw), ref$theta, tolerance = 1e-7)
  expect_length(n_levels, 2L)
})

test_that("iterated slope MINQUE steps converge to lmer's REML (sleepstudy, whole and unbalanced)", {
  skip_if_not_installed("lme4")
  data(sleepstudy, package = "lme4")
  steps_fit <- function(data, steps) {
    terms <- list(list(label = "Subject", codes = as.integer(data$Subject), n_levels = nlevels(data$Subject),
                       z = list(NULL, as.double(data$Days))))
    fullrandom:::fr_slope_fit(data$Reaction, list(NULL, as.double(data$Days)), c("(Intercept)", "Days"),
                              terms, 1L, as.integer(steps))
  }
  lmer_theta <- function(data) {
    m <- lme4::lmer(Reaction ~ Days + (Days | Subject), data)
    s <- lme4::VarCorr(m)$Subject
    c(s[1, 1], s[2, 1], s[2, 2], sigma(m)^2)
  }
  # Balanced: the moment estimate is REML's, and a MINQUE step at REML stays there.
  whole <- fr_fit(Reaction ~ Days + (Days | Subject), sleepstudy, method = "efficient")
  expect_equal(unname(whole$theta), lmer_theta(sleepstudy), tolerance = 1e-4)
  expect_equal(as.data.frame(VarCorr(whole))$vcov,
               as.data.frame(lme4::VarCorr(lme4::lmer(Reaction ~ Days + (Days | Subject), sleepstudy)))$vcov,
               tolerance = 1e-4)
  # A 110-row subsample: one step is close to REML, iterated steps equal it.
  set.seed(1)
  sub <- sleepstudy[sample(nrow(sleepstudy), 110), ]
  sub$Subject <- droplevels(sub$Subject)
  reml <- lmer_theta(sub)
  one <- steps_fit(sub, 1)$estimate
  many <- steps_fit(sub, 30)$estimate
  moments <- steps_fit(sub, 0)$estimate
  expect_equal(many, reml, tolerance = 1e-4)
  expect_equal(one, reml, tolerance = 0.01)
  # The moment estimate is not that close (the test can fail).
  expect_gt(max(abs(moments - reml) / abs(reml)), 0.05)
})

test_that("the R methods work on an efficient slope fit", {
  skip_if_not_installed("lme4")
  data(sleepstudy, package = "lme4")
  set.seed(2)
  sub <- sleepstudy[sample(nrow(sleepstudy), 120), ]
  fit <- fr_fit(Reaction ~ Days + (Days | Subject), sub, method = "efficient")
  expect_s3_class(fit, "fr_slope_fit")
  expect_output(print(fit), "efficient estimator")
  expect_output(print(summary(fit)), "Fixed effects")
  vc <- as.data.frame(VarCorr(fit))
  expect_equal(vc$vcov, unname(fit$theta[c(1, 3, 2, 4)]))
  expect_equal(dim(ranef(fit)$Subject), c(18L, 2L))
  expect_equal(dim(coef(fit)$Subject), c(18L, 2L))
  expect_length(predict(fit, data.frame(Days = 1, Subject = "new"), allow.new.levels = TRUE), 1L)
  expect_true(all(is.finite(vcov(fit))))
  td <- generics::tidy(fit)
  expect_true("cor__(Intercept).Days" %in% td$term)
  expect_equal(names(fit$efficient$model_sd), names(fit$theta))
  expect_true(all(fit$efficient$model_sd > 0))
  expect_length(getME(fit, "theta"), 3L)
  # The REML-iterating method stays intercept-only, with a clear error.
  expect_error(fr_fit(Reaction ~ Days + (Days | Subject), sub, method = "reml"), "\"efficient\"")
})

test_that("intercept terms through the slope path give the intercept path's efficient step (q = 1)", {
  set.seed(4)
  n <- 300
  d <- data.frame(user = factor(sample(40, n, TRUE, prob = rexp(40))), item = factor(sample(12, n, TRUE)),
                  x = rnorm(n))
  d$y <- 1 + d$x + rnorm(40)[d$user] + rnorm(12, sd = 0.5)[d$item] + rnorm(n)
  intercepts <- fr_fit(y ~ x + (1 | user) + (1 | item), d, method = "efficient")
  terms <- lapply(c("user", "item"), function(g) {
    list(label = g, codes = as.integer(d[[g]]), n_levels = nlevels(d[[g]]), z = list(NULL))
  })
  slopes <- fullrandom:::fr_slope_fit(d$y, list(NULL, d$x), c("(Intercept)", "x"), terms, 1L, 1L)
  expect_equal(slopes$efficient$moment_raw, unname(intercepts$efficient$moment_theta_raw), tolerance = 1e-10)
  expect_equal(slopes$raw, unname(intercepts$theta_raw), tolerance = 1e-8)
  expect_equal(slopes$efficient$model_sd, unname(intercepts$efficient$model_sd), tolerance = 1e-8)
})
