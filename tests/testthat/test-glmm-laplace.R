# method = "laplace": the Laplace approximation of the GLMM likelihood, which glmer
# (nAGQ = 1) maximises. The two maximise the same function, so they must agree to the
# optimisers' tolerances; the core's deviance is checked against dense algebra in
# src/rust/fullrandom-core/tests/laplace.rs. glmer's modes stop at tolPwrss = 1e-7 by
# default, which moves its deviance by about 1e-3 (and its estimates by 0.002 standard
# errors); with its modes solved to 1e-13 its deviance function equals fr_fit's to 1e-8.

glmer_exact <- function(form, d, family) {
  suppressWarnings(lme4::glmer(form, d, family = family, control = lme4::glmerControl(
    optimizer = "bobyqa", tolPwrss = 1e-13, optCtrl = list(rhoend = 1e-10)
  )))
}

crossed_rows <- function(seed, family = "binomial") {
  set.seed(seed)
  cells <- expand.grid(user = 1:60, item = 1:20)
  d <- cells[rep(seq_len(nrow(cells)), sample(0:3, nrow(cells), replace = TRUE)), ]
  u <- rnorm(60)
  v <- rnorm(20, 0, 0.6)
  d$x <- rnorm(nrow(d))
  d$t <- runif(nrow(d), 0.5, 2)
  eta <- -1 + 0.5 * d$x + u[d$user] + v[d$item]
  d$y <- if (family == "binomial") rbinom(nrow(d), 1, plogis(eta)) else rpois(nrow(d), d$t * exp(eta + 1))
  d$user <- factor(d$user)
  d$item <- factor(d$item)
  d
}

expect_same_as_glmer <- function(fit, g) {
  se_g <- sqrt(diag(as.matrix(vcov(g))))
  expect_lt(max(abs(fixef(fit) - lme4::fixef(g)) / se_g), 2e-4)
  vg <- as.data.frame(lme4::VarCorr(g))
  expect_equal(unname(sqrt(fit$theta[vg$grp])), vg$sdcor, tolerance = 2e-4)
  expect_lt(abs(as.numeric(logLik(fit)) - as.numeric(logLik(g))), 1e-5)
  expect_equal(attr(logLik(fit), "df"), attr(logLik(g), "df"))
  expect_equal(sqrt(diag(vcov(fit))), se_g, tolerance = 5e-3)
  for (k in names(ranef(g))) {
    expect_gt(cor(ranef(fit)[[k]][, 1], ranef(g)[[k]][, 1]), 0.9999)
  }
}

test_that("method = \"laplace\" is glmer's Laplace fit: crossed Bernoulli terms with repeated cells", {
  skip_if_not_installed("lme4")
  d <- crossed_rows(11)
  form <- y ~ x + (1 | user) + (1 | item)
  fit <- fr_fit(form, d, family = binomial, method = "laplace")
  g <- glmer_exact(form, d, binomial)
  expect_identical(fit$method, "laplace")
  expect_same_as_glmer(fit, g)
  expect_output(print(fit), "Laplace Approximation")
  expect_output(print(summary(fit)), "standard errors: inverse Hessian of the Laplace deviance")
  expect_equal(AIC(fit), AIC(g), tolerance = 1e-6)
})

test_that("method = \"laplace\" agrees with glmer for Poisson with an offset and for binomial trials", {
  skip_if_not_installed("lme4")
  d <- crossed_rows(12, "poisson")
  form <- y ~ x + offset(log(t)) + (1 | user) + (1 | item)
  fit <- fr_fit(form, d, family = poisson, method = "laplace")
  g <- glmer_exact(form, d, poisson)
  expect_same_as_glmer(fit, g)
  # Trials: cbind(successes, failures), with log choose(n, y) in logLik as glmer has it.
  d <- crossed_rows(13)
  d$n <- 1 + (seq_len(nrow(d)) %% 4)
  d$y <- rbinom(nrow(d), d$n, plogis(-0.5 + 0.5 * d$x + rnorm(60)[d$user]))
  form <- cbind(y, n - y) ~ x + (1 | user) + (1 | item)
  fit <- suppressMessages(fr_fit(form, d, family = binomial, method = "laplace"))
  g <- glmer_exact(form, d, binomial)
  expect_same_as_glmer(fit, g)
})

test_that("method = \"auto\" takes the Laplace fit for crossed terms, and chunks do not change it", {
  d <- crossed_rows(14)
  form <- y ~ x + (1 | user) + (1 | item)
  fit <- fr_fit(form, d, family = binomial)
  expect_identical(fit$method, "laplace")
  chunked <- fr_fit(form, d, family = binomial, chunks = 3, method = "laplace")
  expect_equal(fixef(chunked), fixef(fit), tolerance = 1e-10)
  expect_equal(chunked$theta, fit$theta, tolerance = 1e-10)
  # One term stays with the marginal likelihood by quadrature.
  expect_identical(fr_fit(y ~ x + (1 | user), d, family = binomial)$method, "efficient")
})

test_that("method = \"laplace\" refuses what it cannot honour", {
  d <- crossed_rows(15)
  expect_error(fr_fit(x ~ 1 + (1 | user) + (1 | item), d, method = "laplace"),
               "method = \"laplace\" is for GLMMs")
  withr::local_options(fullrandom.glmm_information_weights = TRUE)
  expect_error(fr_fit(y ~ x + (1 | user) + (1 | item), d, family = binomial, method = "laplace"),
               "steers the moment estimator.*method = \"laplace\"")
})

test_that("a moment fit of a GLMM says how to get a likelihood", {
  d <- crossed_rows(16)
  fit <- fr_fit(y ~ x + (1 | user) + (1 | item), d, family = binomial, method = "moments")
  expect_error(logLik(fit), "method = \"laplace\"")
})
