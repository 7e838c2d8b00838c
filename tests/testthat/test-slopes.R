# Random slopes by the unbiased moment equations (R/slopes.R, core slopes.rs).

test_that("sleepstudy (Days | Subject) equals lmer's REML on the balanced design", {
  skip_if_not_installed("lme4")
  data(sleepstudy, package = "lme4")
  fit <- fr_fit(Reaction ~ Days + (Days | Subject), sleepstudy)
  m <- lme4::lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
  vc_fr <- as.data.frame(VarCorr(fit))
  vc_lme4 <- as.data.frame(lme4::VarCorr(m))
  expect_equal(vc_fr$grp, vc_lme4$grp)
  expect_equal(vc_fr$var1, vc_lme4$var1)
  expect_equal(vc_fr$var2, vc_lme4$var2)
  # lmer's optimiser stops within ~2e-5 of its optimum.
  expect_equal(vc_fr$vcov, vc_lme4$vcov, tolerance = 1e-4)
  expect_equal(unname(fit$theta), c(612.09, 9.604, 35.072, 654.94), tolerance = 1e-4)
  expect_equal(fixef(fit), lme4::fixef(m), tolerance = 1e-6)
  expect_equal(as.matrix(ranef(fit)$Subject), as.matrix(lme4::ranef(m)$Subject), tolerance = 1e-5)
  expect_equal(as.matrix(coef(fit)$Subject), as.matrix(coef(m)$Subject), tolerance = 1e-5)
  expect_equal(vcov(fit), as.matrix(vcov(m)), tolerance = 1e-4)
  expect_equal(fitted(fit), fitted(m), tolerance = 1e-6)
  nd <- data.frame(Days = c(1, 2), Subject = c("308", "new"))
  expect_equal(unname(predict(fit, nd, allow.new.levels = TRUE)),
               unname(predict(m, nd, allow.new.levels = TRUE)), tolerance = 1e-6)
  expect_error(predict(fit, nd), "new levels")
  td <- generics::tidy(fit)
  expect_setequal(td$term[td$effect == "ran_pars"],
                  c("sd__(Intercept)", "sd__Days", "cor__(Intercept).Days", "sd__Observation"))
  expect_output(print(VarCorr(fit)), "Corr")
  # lme4's theta (Cholesky factor of Sigma / sigma^2 by columns), names and bounds.
  expect_equal(getME(fit, "theta"), lme4::getME(m, "theta"), tolerance = 1e-4)
  expect_equal(getME(fit, "lower"), lme4::getME(m, "lower"))
  expect_equal(getME(fit, "cnms"), lme4::getME(m, "cnms"))
  expect_false(lme4::isSingular(fit))
  expect_error(getME(fit, "L"), "L")
})

test_that("a balanced design with two slope covariates equals lmer's REML", {
  skip_if_not_installed("lme4")
  # Every level has the same rows of x and z, so the moment equations are REML's when the
  # estimate is positive definite (it is for these seeds).
  x <- rep(0:3, 3)
  z <- rep(c(-1, 0, 1), each = 4)
  S <- matrix(c(1, 0.3, -0.2, 0.3, 0.8, 0.1, -0.2, 0.1, 0.7), 3)
  for (seed in 1:2) {
    set.seed(seed)
    d <- data.frame(g = factor(rep(1:60, each = length(x))), x = rep(x, 60), z = rep(z, 60))
    u <- matrix(rnorm(180), 60) %*% chol(S)
    d$y <- 2 + 0.5 * d$x - 0.3 * d$z + u[d$g, 1] + u[d$g, 2] * d$x + u[d$g, 3] * d$z + rnorm(nrow(d))
    fit <- fr_fit(y ~ x + z + (1 + x + z | g), d)
    m <- lme4::lmer(y ~ x + z + (1 + x + z | g), d,
                    control = lme4::lmerControl(optimizer = "bobyqa",
                                                optCtrl = list(rhobeg = 1e-3, rhoend = 1e-12, maxfun = 1e5)))
    expect_false(lme4::isSingular(m))
    expect_false(any(fit$boundary))
    expect_equal(as.data.frame(VarCorr(fit))$vcov, as.data.frame(lme4::VarCorr(m))$vcov, tolerance = 1e-4)
    expect_equal(fixef(fit), lme4::fixef(m), tolerance = 1e-8)
  }
})

test_that("(Days || Subject) has lme4's terms and a diagonal covariance", {
  skip_if_not_installed("lme4")
  data(sleepstudy, package = "lme4")
  fit <- fr_fit(Reaction ~ Days + (Days || Subject), sleepstudy)
  m <- lme4::lmer(Reaction ~ Days + (Days || Subject), sleepstudy)
  vc_fr <- as.data.frame(VarCorr(fit))
  vc_lme4 <- as.data.frame(lme4::VarCorr(m))
  expect_equal(vc_fr$grp, vc_lme4$grp)
  expect_equal(vc_fr$var1, vc_lme4$var1)
  # Unbiased moment estimates, not REML: close, not equal.
  expect_equal(vc_fr$sdcor, vc_lme4$sdcor, tolerance = 0.1)
  expect_equal(ncol(ranef(fit)[[1]]), 1L)
})

test_that("(0 + x | g), crossed slopes and (1 | g) in one slope model fit", {
  set.seed(3)
  n <- 600
  d <- data.frame(user = factor(sample(40, n, TRUE)), item = factor(sample(15, n, TRUE)),
                  x = rnorm(n))
  # Correlated (intercept, slope) effects per user: N(0, Sigma) through Sigma's Cholesky factor.
  u <- matrix(rnorm(80), 40) %*% chol(matrix(c(1, 0.3, 0.3, 0.5), 2))
  d$y <- 1 + 0.5 * d$x + u[d$user, 1] + u[d$user, 2] * d$x +
    rnorm(15, sd = 0.7)[d$item] + rnorm(n)
  fit <- fr_fit(y ~ x + (x | user) + (1 | item), d)
  expect_equal(names(VarCorr(fit)), c("user", "item"))
  expect_equal(dim(ranef(fit)$user), c(40L, 2L))
  fit0 <- fr_fit(y ~ x + (0 + x | user) + (1 | item), d)
  expect_equal(colnames(ranef(fit0)$user), "x")
  expect_error(fr_fit(y ~ x + (x | user), d, method = "reml"), "method = \"moments\" or \"efficient\"")
  expect_error(fr_fit(y ~ x + (x | user), d, chunks = 2, combine = "average"), "combined exactly")
  # A list of data frames is one data set (test-slopes-intervals.R checks the fits).
  expect_equal(fr_fit(y ~ x + (x | user), list(d, d))$theta, fr_fit(y ~ x + (x | user), rbind(d, d))$theta,
               tolerance = 1e-10)
})

test_that("slope fits in chunks (threads and the future backend) equal the whole fit", {
  set.seed(4)
  n <- 3000
  d <- data.frame(user = factor(sample(80, n, TRUE)), item = factor(sample(30, n, TRUE)),
                  x = rnorm(n), w = runif(n))
  d$y <- 1 + 0.5 * d$x + rnorm(80)[d$user] * (1 + 0.4 * d$x) + rnorm(30)[d$item] * d$w + rnorm(n)
  form <- y ~ x + (x | user) + (0 + w | item)
  whole <- fr_fit(form, d)
  same <- function(fit) {
    expect_lt(max(abs(fit$theta_raw - whole$theta_raw)), 1e-10)
    expect_lt(max(abs(fixef(fit) - fixef(whole))), 1e-10)
    expect_lt(max(abs(vcov(fit) - vcov(whole))), 1e-10)
    expect_lt(max(abs(as.matrix(ranef(fit)$user) - as.matrix(ranef(whole)$user))), 1e-8)
    expect_lt(max(abs(fitted(fit) - fitted(whole))), 1e-8)
  }
  same(fr_fit(form, d, chunks = 2, seed = 1))
  same(fr_fit(form, d, chunks = 7, seed = 2))
  same(fr_fit(form, d, chunks = 4, chunk_by = ".order"))
  expect_error(fr_fit(form, d, chunks = 2, chunk_by = "x"), "`chunk_by` must be")
  skip_if_not_installed("future.apply")
  old <- future::plan(future::multisession, workers = 2)
  on.exit(future::plan(old), add = TRUE)
  same(fr_fit(form, d, chunks = 3, seed = 3, backend = "future"))
})

test_that("a slope covariance clipped at the boundary leaves the residual variance positive", {
  # A 60% subsample of a sleepstudy-like design whose raw Sigma has a negative eigenvalue:
  # re-solving s2 from r'r after the clip gave a negative residual variance.
  set.seed(2026)
  s <- matrix(c(612, 9.6, 9.6, 35), 2)
  for (r in 1:33) {
    d <- expand.grid(Days = 0:9, Subject = factor(1:18))
    d <- d[sort(sample(nrow(d), round(0.6 * nrow(d)))), ]
    u <- matrix(rnorm(36), 18) %*% chol(s)
    d$y <- 251 + 10.5 * d$Days + u[d$Subject, 1] + u[d$Subject, 2] * d$Days + rnorm(nrow(d), sd = sqrt(655))
  }
  fit <- suppressMessages(fr_fit(y ~ Days + (Days | Subject), d))
  expect_true(fit$boundary[["Subject"]])
  # The projected Sigma is singular: a zero pivot in lme4's theta, as lmer reports it.
  expect_true(lme4::isSingular(fit))
  expect_equal(unname(getME(fit, "theta")[3]), 0)
  expect_gt(sigma(fit), 0)
  # s2 from the within-subject residual sum of squares: near the true 655 (lmer: 590).
  expect_gt(sigma(fit)^2, 300)
  expect_lt(sigma(fit)^2, 1200)
  # The raw (unclipped) solution still solves the equations.
  expect_equal(drop(fit$equations$lhs %*% fit$theta_raw), fit$equations$q, tolerance = 1e-8)
})

test_that("the slope moment equations are unbiased (Monte Carlo, unbalanced crossed design)", {
  skip_on_cran()
  set.seed(20)
  n <- 400
  user <- factor(sample(30, n, TRUE)); item <- factor(sample(12, n, TRUE))
  x <- runif(n, 0, 3)
  S <- matrix(c(2, 0.5, 0.5, 1), 2)
  truth <- c(2, 0.5, 1, 0.8, 1.5)
  L <- chol(S)
  reps <- 300
  est <- t(replicate(reps, {
    u <- matrix(rnorm(60), 30) %*% L
    d <- data.frame(user, item, x,
                    y = 1 + x + u[user, 1] + u[user, 2] * x + rnorm(12, sd = sqrt(0.8))[item] +
                      rnorm(n, sd = sqrt(1.5)))
    suppressMessages(fr_fit(y ~ x + (x | user) + (1 | item), d, threads = 1))$theta_raw
  }))
  se <- apply(est, 2, sd) / sqrt(reps)
  expect_true(all(abs(colMeans(est) - truth) < 4 * se),
              info = paste(round((colMeans(est) - truth) / se, 2), collapse = " "))
})
