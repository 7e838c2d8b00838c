# The estimator against known truth: a dense evaluation of the trace formulas,
# lme4's REML on balanced designs, unbiasedness by simulation, numerical invariances.

# Reorders the fit's equations to the reference's row and column names.
fit_equations_as <- function(fit, reference) {
  eq <- fit$moment_equations
  list(C = eq$lhs[rownames(reference$C), colnames(reference$C)],
       Q = eq$q[names(reference$Q)],
       theta = fit$theta_raw[names(reference$theta)])
}

max_rel_diff <- function(a, b) max(abs(a - b) / pmax(abs(b), 1e-300))

test_that("the O(N) equations equal a dense evaluation of the traces on random designs", {
  worst <- 0
  for (seed in 1:25) {
    design <- random_small_design(seed)
    d <- design$data
    fit <- suppressMessages(fr_fit(y ~ x1 + x2 + f + (1 | a) + (1 | b) + (1 | c), data = d))
    X <- model.matrix(~ x1 + x2 + f, d)
    reference <- dense_moment_reference(d$y, X, list(a = d$a, b = d$b, c = d$c))
    got <- fit_equations_as(fit, reference)
    worst <- max(worst, max_rel_diff(got$C, reference$C), max_rel_diff(got$Q, reference$Q),
                 max_rel_diff(got$theta, reference$theta))
    expect_equal(unname(fit$coef_ols), unname(reference$b_ols), tolerance = 1e-10)
  }
  expect_lt(worst, 1e-8)
})

test_that("nested and interaction syntax give the equations of the expanded factors", {
  design <- random_small_design(101)
  d <- design$data
  fit <- suppressMessages(fr_fit(y ~ x1 + (1 | a) + (1 | b/c), data = d))
  expect_setequal(names(fit$flist), c("a", "b", "c:b"))
  X <- model.matrix(~ x1, d)
  reference <- dense_moment_reference(d$y, X, list(a = d$a, b = d$b, "c:b" = interaction(d$c, d$b, drop = TRUE)))
  got <- fit_equations_as(fit, reference)
  expect_lt(max_rel_diff(got$C, reference$C), 1e-8)
  expect_lt(max_rel_diff(got$theta, reference$theta), 1e-8)

  fit_ab <- suppressMessages(fr_fit(y ~ x1 + (1 | a:b) + (1 | a), data = d))
  reference_ab <- dense_moment_reference(d$y, X, list("a:b" = interaction(d$a, d$b, drop = TRUE), a = d$a))
  expect_lt(max_rel_diff(fit_equations_as(fit_ab, reference_ab)$theta, reference_ab$theta), 1e-8)
})

test_that("a negative residual estimate sets the finest term to zero", {
  # Seed 9's raw solution has every random component positive and the residual negative.
  d <- random_small_design(9)$data
  expect_message(fit <- fr_fit(y ~ x1 + x2 + f + (1 | a) + (1 | b) + (1 | c), data = d),
                 "boundary \\(singular\\) fit: the variances? of \\(1 \\| c\\)")
  expect_lt(fit$theta_raw[["Residual"]], 0)
  expect_true(all(fit$theta_raw[c("a", "b", "c")] > 0))
  expect_identical(fit$theta[["c"]], 0)
  expect_gt(fit$theta[["Residual"]], 0)
  without_c <- suppressMessages(fr_fit(y ~ x1 + x2 + f + (1 | a) + (1 | b), data = d))
  expect_equal(fit$theta[c("a", "b", "Residual")], without_c$theta[c("a", "b", "Residual")], tolerance = 1e-12)
})

test_that("balanced designs reproduce lmer's REML variance components", {
  skip_if_not_installed("lme4")
  balanced <- list(
    list(Yield ~ 1 + (1 | Batch), lme4::Dyestuff),
    list(diameter ~ 1 + (1 | plate) + (1 | sample), lme4::Penicillin),
    list(strength ~ 1 + (1 | batch/cask), lme4::Pastes),
    list(Reaction ~ Days + (1 | Subject), lme4::sleepstudy)
  )
  for (case in balanced) {
    fit <- fr_fit(case[[1]], data = case[[2]])
    ours <- as.data.frame(VarCorr(fit))
    theirs <- as.data.frame(lme4::VarCorr(lme4::lmer(case[[1]], data = case[[2]])))
    expect_identical(ours$grp, theirs$grp)
    expect_lt(max_rel_diff(ours$vcov, theirs$vcov), 1e-4)
  }
})

test_that("the raw estimates are unbiased on an unbalanced crossed design with a covariate", {
  truth <- c(a = 0.8, b = 0.5, Residual = 1)
  reps <- 250
  estimates <- t(vapply(seq_len(reps), function(r) {
    d <- simulate_crossed_design(n_a = 40, n_b = 25, n_obs = 400, s2_a = truth[["a"]],
                                 s2_b = truth[["b"]], s2_e = truth[["Residual"]],
                                 seed = 1000 + r, error_dist = "t5")
    fit <- suppressMessages(fr_fit(y ~ x + (1 | a) + (1 | b), data = d))
    fit$theta_raw[names(truth)]
  }, numeric(3)))
  z <- (colMeans(estimates) - truth) / (apply(estimates, 2, sd) / sqrt(reps))
  expect_true(all(abs(z) < 4), label = paste("z scores", paste(round(z, 2), collapse = ", ")))
})

test_that("adding 1e8 to the response or 1e6 to a covariate leaves the estimates unchanged", {
  d <- simulate_crossed_design(n_a = 30, n_b = 20, n_obs = 500, s2_a = 1, s2_b = 0.5,
                               s2_e = 1, seed = 7)
  base <- fr_fit(y ~ x + (1 | a) + (1 | b), data = d)
  d_far <- transform(d, y = y + 1e8)
  far <- fr_fit(y ~ x + (1 | a) + (1 | b), data = d_far)
  expect_lt(max_rel_diff(far$theta, base$theta), 1e-6)
  expect_equal(far$coefficients[["x"]], base$coefficients[["x"]], tolerance = 1e-6)
  expect_equal(far$coefficients[["(Intercept)"]] - 1e8, base$coefficients[["(Intercept)"]], tolerance = 1e-6)

  shifted_x <- fr_fit(y ~ x + (1 | a) + (1 | b), data = transform(d, x = x + 1e6))
  expect_lt(max_rel_diff(shifted_x$theta, base$theta), 1e-6)
})

test_that("results are bitwise identical with 1 and 2 threads", {
  # Enough rows that the counting sorts of the statistics split between threads.
  d <- simulate_crossed_design(n_a = 3000, n_b = 800, n_obs = 300000, s2_a = 1, s2_b = 0.5,
                               s2_e = 1, seed = 11)
  one <- fr_fit(y ~ x + (1 | a) + (1 | b), data = d, threads = 1)
  two <- fr_fit(y ~ x + (1 | a) + (1 | b), data = d, threads = 2)
  expect_identical(one$theta_raw, two$theta_raw)
  expect_identical(one$moment_equations, two$moment_equations)
  expect_identical(one$coefficients, two$coefficients)
  expect_identical(one$vcov, two$vcov)
  expect_identical(ranef(one), ranef(two))
  expect_identical(fitted(one), fitted(two))
  expect_identical(residuals(one), residuals(two))
})

test_that("a negative component is set to zero, reported, and the rest re-solved", {
  # With no variance between levels of b, about half the raw estimates are negative.
  negative <- NULL
  for (seed in 1:50) {
    d <- simulate_crossed_design(n_a = 20, n_b = 15, n_obs = 200, s2_a = 1, s2_b = 0,
                                 s2_e = 1, seed = seed)
    fit <- suppressMessages(fr_fit(y ~ x + (1 | a) + (1 | b), data = d))
    if (fit$theta_raw[["b"]] < 0) { negative <- d; break }
  }
  expect_false(is.null(negative))
  expect_message(fit <- fr_fit(y ~ x + (1 | a) + (1 | b), data = negative),
                 "boundary \\(singular\\) fit: .*\\(1 \\| b\\)")
  expect_identical(fit$theta[["b"]], 0)
  expect_true(fit$boundary[["b"]])
  expect_lt(fit$theta_raw[["b"]], 0)
  without_b <- fr_fit(y ~ x + (1 | a), data = negative)
  expect_equal(fit$theta[c("a", "Residual")], without_b$theta[c("a", "Residual")], tolerance = 1e-12)
  expect_output(print(fit), "boundary \\(singular\\) fit")
})

test_that("terms that group the observations identically are an error naming both", {
  d <- data.frame(y = rnorm(40), g = rep(1:8, each = 5))
  d$h <- paste0("h", d$g)
  expect_error(fr_fit(y ~ 1 + (1 | g) + (1 | h), data = d),
               "\\(1 \\| g\\) and \\(1 \\| h\\) group the observations identically")
})

test_that("a random term confounded with a fixed effect makes the equations singular", {
  d <- data.frame(y = rnorm(60), g = factor(rep(1:6, each = 10)))
  expect_error(suppressMessages(fr_fit(y ~ g + (1 | g), data = d)),
               "variance components of \\(1 \\| g\\) cannot be separated")
})

test_that("GLS fixed effects, BLUPs and vcov equal a dense solve of Henderson's equations", {
  worst <- 0
  for (seed in 1:15) {
    d <- random_small_design(seed)$data
    fit <- suppressMessages(fr_fit(y ~ x1 + x2 + f + (1 | a) + (1 | b) + (1 | c), data = d))
    X <- model.matrix(~ x1 + x2 + f, d)
    ref <- dense_mixed_reference(d$y, X, list(a = d$a, b = d$b, c = d$c), fit$theta)
    expect_lt(fit$mme$relative_residual, 1e-10)
    worst <- max(worst,
                 max_rel_diff(fit$coefficients, ref$b[names(fit$coefficients)]),
                 max(abs(fit$vcov - ref$vcov)) / max(abs(ref$vcov)))
    for (k in names(fit$flist)) {
      u <- fit$ranef_values[[k]]
      worst <- max(worst, max(abs(u - ref$u[[k]][names(u)])) / max(abs(ref$u[[k]]), 1e-12))
    }
  }
  expect_lt(worst, 1e-8)
})

test_that("a term estimated at zero drops out of the mixed-model equations", {
  skip_if_not_installed("lme4")
  fit <- suppressMessages(fr_fit(Yield ~ 1 + (1 | Batch), data = lme4::Dyestuff2))
  expect_true(fit$boundary[["Batch"]])
  expect_true(all(fit$ranef_values$Batch == 0))
  # With no random effect left, GLS is OLS and vcov is s2 (X'X)^-1.
  expect_equal(fit$coefficients, fit$coef_ols, tolerance = 1e-12)
  expect_equal(fit$vcov[1, 1], fit$theta[["Residual"]] / nrow(lme4::Dyestuff2), tolerance = 1e-12)
})

test_that("fixed effects, standard errors and BLUPs equal lmer's on balanced designs", {
  skip_if_not_installed("lme4")
  tight <- lme4::lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 0.2, rhoend = 1e-10))
  cases <- list(
    list(formula = Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy),
    list(formula = diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin),
    list(formula = strength ~ 1 + (1 | batch/cask), data = lme4::Pastes)
  )
  for (case in cases) {
    fit <- fr_fit(case$formula, data = case$data)
    m <- lme4::lmer(case$formula, data = case$data, REML = TRUE, control = tight)
    expect_lt(max_rel_diff(fixef(fit), lme4::fixef(m)), 1e-4)
    expect_lt(max_rel_diff(sqrt(diag(vcov(fit))), sqrt(diag(as.matrix(vcov(m))))), 1e-4)
    re_l <- lme4::ranef(m)
    for (k in names(fit$flist)) {
      u <- ranef(fit)[[k]]
      want <- re_l[[k]][rownames(u), "(Intercept)"]
      expect_lt(max(abs(u[["(Intercept)"]] - want)) / max(abs(want)), 1e-4)
    }
  }
})

test_that("the components-only path gives the components of the full fit", {
  d <- simulate_crossed(3000, seed = 3)
  fit <- fr_fit(y ~ x + (1 | user) + (1 | item), data = d)
  expect_identical(fr_variance_components(y ~ x + (1 | user) + (1 | item), d), fit$theta)
})

# Formulas without an intercept: factor 0's equation is Q_0 = r'r (A_0 = I), which is the
# centred r'(I - J/N) r only when 1 is in the column space of X. Each case: the formula,
# the fixed part as model.matrix reads it, and the random factors of the dense reference.
no_intercept_cases <- function(d) {
  d$cb <- interaction(d$c, d$b, drop = TRUE)
  list(
    list(formula = y ~ 0 + x1 + (1 | a) + (1 | b), fixed = ~ 0 + x1, factors = list(a = d$a, b = d$b)),
    list(formula = y ~ x1 + x2 - 1 + (1 | a) + (1 | b), fixed = ~ x1 + x2 - 1, factors = list(a = d$a, b = d$b)),
    list(formula = y ~ 0 + (1 | a) + (1 | b), fixed = ~ 0, factors = list(a = d$a, b = d$b)),
    list(formula = y ~ 0 + f + (1 | a) + (1 | b), fixed = ~ 0 + f, factors = list(a = d$a, b = d$b)),
    list(formula = y ~ 0 + x1 + (1 | b/c), fixed = ~ 0 + x1, factors = list(b = d$b, "c:b" = d$cb)),
    list(formula = y ~ 0 + x2 + (1 | a) + (1 | b) + (1 | c), fixed = ~ 0 + x2,
         factors = list(a = d$a, b = d$b, c = d$c))
  )
}

test_that("models without an intercept have the equations of Q_0 = r'r (dense reference)", {
  worst <- 0
  for (seed in 1:8) {
    d <- random_small_design(seed)$data
    # The response far from 0, so that a centred Q_0 would be visibly wrong.
    d$y <- d$y + 5
    for (case in no_intercept_cases(d)) {
      fit <- suppressMessages(fr_fit(case$formula, data = d))
      X <- model.matrix(case$fixed, d)
      reference <- dense_moment_reference(d$y, X, case$factors)
      got <- fit_equations_as(fit, reference)
      # Without fixed effects tr(Z_a' A_a Z_a) is exactly 0 and the dense product leaves
      # rounding noise: entries are compared relative to at least 1e-6 of the largest.
      C_scale <- pmax(abs(reference$C), 1e-6 * max(abs(reference$C)))
      worst <- max(worst, max(abs(got$C - reference$C) / C_scale), max_rel_diff(got$Q, reference$Q),
                   max_rel_diff(got$theta, reference$theta))
      if (ncol(X) > 0) expect_equal(unname(fit$coef_ols), unname(reference$b_ols), tolerance = 1e-10)
    }
  }
  expect_lt(worst, 1e-8)
})

test_that("with 1 in the column space of X, dropping the intercept changes nothing", {
  d <- random_small_design(4)$data
  with_intercept <- suppressMessages(fr_fit(y ~ f + (1 | a) + (1 | b), data = d))
  cell_means <- suppressMessages(fr_fit(y ~ 0 + f + (1 | a) + (1 | b), data = d))
  expect_equal(cell_means$theta_raw, with_intercept$theta_raw, tolerance = 1e-10)
})

test_that("without an intercept the random effects carry the mean (lmer's answer)", {
  d <- simulate_crossed(2000, seed = 1)
  fit <- fr_fit(y ~ 0 + (1 | user), data = d)
  with_intercept <- fr_fit(y ~ 1 + (1 | user), data = d)
  # The mean of y is far from 0, so the user variance must absorb it: many times the
  # variance of the model with an intercept (0.38; lmer gives 11.84 without).
  expect_gt(fit$theta[["user"]], 10 * with_intercept$theta[["user"]])
  skip_if_not_installed("lme4")
  m <- lme4::lmer(y ~ 0 + (1 | user), data = d)
  lmer_user <- as.data.frame(lme4::VarCorr(m))$vcov[[1]]
  expect_lt(abs(fit$theta[["user"]] - lmer_user) / lmer_user, 0.25)
})

test_that("method = 'efficient' solves the MINQUE equations at the moment estimates (dense reference)", {
  worst <- 0
  for (seed in 1:6) {
    design <- random_small_design(seed)
    d <- design$data
    fit <- suppressMessages(fr_fit(design$formula_terms$formula, d, method = "efficient"))
    expect_identical(fit$method, "efficient")
    X <- stats::model.matrix(design$formula_terms$fixed_formula, d)
    factors <- as.list(d[design$formula_terms$random])
    # Few levels: every trace is exact (no probes).
    expect_true(all(fit$efficient$probes == 0))
    want <- dense_minque_reference(d$y, X, factors, fit$efficient$moment_theta[c(names(factors), "Residual")])
    worst <- max(worst, max(abs(fit$theta_raw[names(want)] - want) / max(abs(want))))
  }
  expect_lt(worst, 1e-8)
})

test_that("the efficient estimator equals the moment estimator and REML on a balanced design", {
  skip_if_not_installed("lme4")
  data(Penicillin, package = "lme4")
  moments <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin)
  efficient <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin, method = "efficient")
  # A small system: every trace is exact, and on a balanced design MINQUE does not
  # depend on its prior, so one step from the moment (ANOVA = REML) estimates stays there.
  expect_true(all(efficient$efficient$probes == 0))
  expect_equal(efficient$theta, moments$theta, tolerance = 1e-8)
})

test_that("the efficient estimator's probes are reported and small beside the sampling error", {
  d <- simulate_crossed(1e5, seed = 2)
  fit <- fr_fit(y ~ x + (1 | user) + (1 | item), d, method = "efficient")
  expect_true(all(fit$efficient$probes >= 8))
  expect_true(all(fit$efficient$probe_sd <= 0.1 * fit$efficient$model_sd))
  expect_identical(fit$theta, fr_fit(y ~ x + (1 | user) + (1 | item), d, method = "efficient", threads = 1)$theta)
})

test_that("the efficient fit is equivariant in the scale of the response", {
  d <- simulate_crossed(3000, seed = 5)
  base <- fr_fit(y ~ x + (1 | user) + (1 | item), d, method = "efficient")
  scaled <- fr_fit(y ~ x + (1 | user) + (1 | item), transform(d, y = y * 1e100), method = "efficient")
  expect_equal(scaled$theta / 1e200, base$theta, tolerance = 1e-8)
  expect_equal(scaled$efficient$moment_theta / 1e200, base$efficient$moment_theta, tolerance = 1e-8)
  expect_equal(scaled$efficient$model_sd / 1e200, base$efficient$model_sd, tolerance = 1e-8)
})
