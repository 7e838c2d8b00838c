# method = "fr": Matloff's Full Randomness estimator, checked against a direct
# evaluation of the paper's formulas on the raw data (eqs. 17-18, 19, 20-22), against
# the fixed-n derivation of its section 5, and for its errors.

# Sample variance with divisor n: a moment of the empirical distribution.
pvar <- function(v) mean((v - mean(v))^2)

# The paper's equations on the raw data, solved for (s2_a, s2_e). `h` is the part of
# the mean that depends on the group only (mu, or c1 + c2 N_i) per observation, and
# `ystar` the response with the other regressors removed.
fr_direct <- function(ystar, g, h) {
  S <- as.numeric(tapply(ystar, g, sum))
  N <- as.numeric(table(g))
  F_total <- as.numeric(tapply(h, g, sum))
  nu1 <- mean(N)
  nu2 <- pvar(N)
  A <- rbind(c(1, 1), c(nu2 + nu1^2, nu1))
  stats::setNames(solve(A, c(pvar(ystar) - pvar(h), pvar(S) - pvar(F_total))), c("a", "e"))
}

one_way_data <- function(seed, r = 60, mu = 3.5, c2 = 0, sd_a = 0.8) {
  with_local_seed(seed, {
    n <- 1L + rpois(r, 1 + 12 * runif(r)^2)
    g <- factor(rep(sprintf("g%03d", seq_len(r)), n))
    x <- rnorm(length(g))
    y <- mu + c2 * n[g] + 0.5 * x + rnorm(r, 0, sd_a)[g] + rnorm(length(g))
    data.frame(y = y, x = x, g = g)
  })
}

test_that("model (2): method = 'fr' equals equations 17 and 18 with mu = Y../M", {
  for (seed in 1:5) {
    d <- one_way_data(seed, r = 30 + 10 * seed, mu = seed)
    # (the raw solution is compared, so a boundary fit is fine)
    fit <- suppressMessages(fr_fit(y ~ 1 + (1 | g), data = d, method = "fr"))
    mu <- sum(d$y) / nrow(d)
    expect_equal(unname(fit$fr$coef_in_equations), mu, tolerance = 1e-13)
    want <- fr_direct(d$y, d$g, rep(mu, nrow(d)))
    expect_equal(unname(fit$theta_raw), unname(want), tolerance = 1e-10)
    # Written as in the paper: Var(S) - mu^2 nu2 on the left.
    S <- tapply(d$y, d$g, sum)
    N <- as.numeric(table(d$g))
    lhs <- c(1, pvar(N) + mean(N)^2) * fit$theta_raw[["g"]] + c(1, mean(N)) * fit$theta_raw[["Residual"]]
    expect_equal(lhs, c(pvar(d$y), pvar(S) - mu^2 * pvar(N)), tolerance = 1e-10)
    expect_equal(fit$fr$group_sizes[["mean"]], mean(N), tolerance = 1e-14)
    expect_equal(fit$fr$group_sizes[["variance"]], pvar(N), tolerance = 1e-12)
    expect_identical(fit$fr$iterations, 1L)
  }
})

test_that("section 5: the fixed-n_i derivation (eq. 24) gives the same estimates", {
  d <- one_way_data(7)
  fit <- fr_fit(y ~ 1 + (1 | g), data = d, method = "fr")
  S <- as.numeric(tapply(d$y, d$g, sum))
  n <- as.numeric(table(d$g))
  mu <- mean(d$y)
  # mean(Y_i.^2) = mean(n_i^2) (s2_a + mu^2) + mean(n_i) s2_e;  mean(Y_ij^2) = s2_a + s2_e + mu^2
  A <- rbind(c(1, 1), c(mean(n^2), mean(n)))
  fixed_n <- solve(A, c(mean(d$y^2) - mu^2, mean(S^2) - mean(n^2) * mu^2))
  expect_equal(unname(fit$theta_raw), fixed_n, tolerance = 1e-10)
})

test_that("with regressors the equations apply to y - x'b_ols (eq. 19)", {
  d <- one_way_data(3)
  fit <- fr_fit(y ~ x + (1 | g), data = d, method = "fr")
  ols <- coef(lm(y ~ x, data = d))
  expect_equal(fit$fr$coef_in_equations, ols, tolerance = 1e-10)
  ystar <- d$y - ols[["x"]] * d$x
  want <- fr_direct(ystar, d$g, rep(ols[["(Intercept)"]], nrow(d)))
  expect_equal(unname(fit$theta_raw), unname(want), tolerance = 1e-10)
  # GLS fixed effects and BLUPs at the FR components, as for the default method.
  ref <- dense_mixed_reference(d$y, model.matrix(fit), list(g = fit$flist$g), fit$theta)
  expect_equal(fixef(fit), ref$b, tolerance = 1e-8)
  expect_equal(ranef(fit)$g[, 1], unname(ref$u$g), tolerance = 1e-8)
})

test_that("model (3) with size(): a fixed point of equations 20-22 and GLS", {
  d <- one_way_data(4, r = 120, c2 = -0.05)
  fit <- fr_fit(y ~ size(g) + (1 | g), data = d, method = "fr")
  expect_identical(fit$fr$size_columns, "size(g)")
  expect_gt(fit$fr$iterations, 1L)
  c_eq <- fit$fr$coef_in_equations
  N_obs <- as.numeric(table(d$g))[as.integer(d$g)]
  want <- fr_direct(d$y, d$g, c_eq[[1]] + c_eq[[2]] * N_obs)
  expect_equal(unname(fit$theta_raw), unname(want), tolerance = 1e-10)
  # The sample variance of c1 N_i + c2 N_i^2 is the term the paper names (eq. 22).
  N <- as.numeric(table(d$g))
  expect_equal(pvar(tapply(c_eq[[1]] + c_eq[[2]] * N_obs, d$g, sum)),
               pvar(c_eq[[1]] * N + c_eq[[2]] * N^2), tolerance = 1e-12)
  # At the fixed point the coefficients in the equations are the reported GLS ones.
  expect_equal(fixef(fit), c_eq, tolerance = 1e-10)
  ref <- dense_mixed_reference(d$y, model.matrix(fit), list(g = fit$flist$g), fit$theta)
  expect_equal(fixef(fit), ref$b, tolerance = 1e-8)
  expect_equal(vcov(fit), ref$vcov, tolerance = 1e-8, ignore_attr = TRUE)

  # A regressor besides size() is removed at the current coefficients too.
  fit_x <- fr_fit(y ~ size(g) + x + (1 | g), data = d, method = "fr")
  b <- fit_x$fr$coef_in_equations
  want_x <- fr_direct(d$y - b[["x"]] * d$x, d$g, b[[1]] + b[[2]] * N_obs)
  expect_equal(unname(fit_x$theta_raw), unname(want_x), tolerance = 1e-10)
  expect_equal(fixef(fit_x), b, tolerance = 1e-10)
})

test_that("functions of size(g) belong to the size part; other sizes are regressors", {
  d <- one_way_data(5, r = 80, c2 = -0.05)
  d$h <- factor(sample(c("p", "q", "r"), nrow(d), replace = TRUE))
  fit <- fr_fit(y ~ log(size(g)) + I(size(g)^2) + size(h) + (1 | g), data = d, method = "fr")
  expect_identical(fit$fr$size_columns, c("log(size(g))", "I(size(g)^2)"))
  b <- fit$fr$coef_in_equations
  N_obs <- as.numeric(table(d$g))[as.integer(d$g)]
  n_h <- as.numeric(table(d$h))[as.integer(d$h)]
  h <- b[["(Intercept)"]] + b[["log(size(g))"]] * log(N_obs) + b[["I(size(g)^2)"]] * N_obs^2
  want <- fr_direct(d$y - b[["size(h)"]] * n_h, d$g, h)
  expect_equal(unname(fit$theta_raw), unname(want), tolerance = 1e-10)
})

test_that("with an interaction grouping, size() of one part is an ordinary regressor", {
  d <- one_way_data(9, r = 40)
  d$a <- factor(substr(as.character(d$g), 1, 3))
  d$b <- factor(as.integer(substr(as.character(d$g), 4, 4)) %% 3)
  fit <- fr_fit(y ~ size(b) + (1 | a:b), data = d, method = "fr")
  expect_identical(fit$fr$size_columns, character())
  expect_identical(fit$fr$iterations, 1L)
})

test_that("the size() coefficient is unbiased with Wald intervals near 95% (small check)", {
  # 60 replications here; bench/full-randomness.R runs 400.
  est <- with_local_seed(2024, t(replicate(60, {
    d <- simulate_ratings(n_users = 150, mean_ratings = 15, size_slope = -0.03)
    fit <- suppressMessages(fr_fit(rating ~ size(user) + (1 | user), data = d, method = "fr"))
    c(fixef(fit)[["size(user)"]], sqrt(vcov(fit)[2, 2]))
  })))
  mc_se <- sd(est[, 1]) / sqrt(nrow(est))
  expect_lt(abs(mean(est[, 1]) + 0.03), 4 * mc_se)
  # The model-based standard error matches the spread of the estimates within 25%.
  expect_lt(abs(mean(est[, 2]) / sd(est[, 1]) - 1), 0.25)
})

test_that("the print shows the method and the group-size distribution", {
  d <- one_way_data(6)
  fit <- fr_fit(y ~ 1 + (1 | g), data = d, method = "fr")
  out <- capture.output(print(fit))
  expect_match(out[1], "Full Randomness", fixed = TRUE)
  N <- as.numeric(table(d$g))
  expect_true(any(grepl(sprintf("%d groups, mean \\(nu1\\) %s", length(N), format(mean(N), digits = 5)), out)))
  expect_match(capture.output(summary(fit))[1], "Full Randomness", fixed = TRUE)
  expect_identical(fr_fit(y ~ 1 + (1 | g), data = d)$method, "moments")
})

test_that("method = 'fr' refuses three random terms, nesting and random slopes", {
  d <- one_way_data(8)
  d$h <- factor(rep_len(1:7, nrow(d)))
  d$k <- factor(rep_len(1:3, nrow(d)))
  # Two crossed terms are model (7) (test-full-randomness-crossed.R); three are not.
  expect_error(fr_fit(y ~ 1 + (1 | g) + (1 | h) + (1 | k), data = d, method = "fr"),
               "3 random terms: \\(1 \\| g\\), \\(1 \\| h\\), \\(1 \\| k\\)")
  expect_error(fr_fit(y ~ 1 + (1 | g/h), data = d, method = "fr"), "nested term")
  expect_error(fr_fit(y ~ x + (x | g), data = d, method = "fr"),
               "no random slopes, and the formula has \\(x \\| g\\)")
  expect_error(fr_fit(y ~ x + (1 + x | g), data = d, method = "fr"), "no random slopes")
  expect_error(fr_fit(y ~ 1 + (1 | g), data = d, method = "FR"), "should be one of")
})

test_that("a negative FR estimate is set to zero as a boundary fit", {
  # Group means closer together than the residual noise allows: s2_a comes out negative.
  d <- data.frame(g = factor(rep(1:30, each = 4)), y = rep(c(-1, 1, -1, 1), 30) + rep(c(0, 0.01), 60))
  expect_message(fr_fit(y ~ 1 + (1 | g), data = d, method = "fr"), "boundary")
  fit <- suppressMessages(fr_fit(y ~ 1 + (1 | g), data = d, method = "fr"))
  expect_lt(fit$theta_raw[["g"]], 0)
  expect_identical(fit$theta[["g"]], 0)
  expect_equal(fit$theta[["Residual"]], pvar(d$y), tolerance = 1e-12)
})

test_that("size() data with no admissible fixed point get an error that says why", {
  # Heavy-tailed group sizes: a few very large users dominate Var(S).
  d <- simulate_ratings(n_users = 100, mean_ratings = 20, size_distribution = "lognormal", seed = 45)
  expect_error(fr_fit(rating ~ size(user) + (1 | user), data = d, method = "fr"),
               "no positive residual variance at any GLS fixed point.*very large groups")
  # The default method fits the same data.
  expect_gt(suppressMessages(fr_fit(rating ~ size(user) + (1 | user), data = d))$theta[["Residual"]], 0)
})
