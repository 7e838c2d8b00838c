# fr_fit() as a whole: the object it returns and its arguments.

test_that("fr_fit returns the documented pieces", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  expect_s3_class(fit, "fr_fit")
  expect_named(fit$theta, c("plate", "sample", "Residual"))
  expect_identical(fit$ngrps, c(plate = 24L, sample = 6L))
  expect_identical(fit$nobs, 144L)
  expect_identical(fit$data_name, "lme4::Penicillin")
  expect_equal(fit$coefficients[["(Intercept)"]], mean(lme4::Penicillin$diameter))
  # The moment equations hold at the raw solution.
  eq <- fit$moment_equations
  expect_equal(drop(eq$lhs %*% fit$theta_raw), eq$q, tolerance = 1e-10)
})

test_that("terms are ordered by decreasing number of levels, as lme4 orders them", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | sample) + (1 | plate), data = lme4::Penicillin)
  expect_named(fit$flist, c("plate", "sample"))
})

test_that("formula errors reach the user", {
  d <- data.frame(y = rnorm(20), x = rnorm(20), g = rep(1:4, 5))
  expect_error(fr_fit(y ~ x, data = d), "use lm\\(\\)")
  expect_error(fr_fit(y ~ x + (x | g), data = d, method = "reml"), "method = \"moments\" or \"efficient\"")
})

test_that("threads must be a positive whole number", {
  d <- data.frame(y = rnorm(20), g = rep(1:4, 5))
  expect_error(fr_fit(y ~ 1 + (1 | g), data = d, threads = 0), "`threads` must be a whole number")
  expect_error(fr_fit(y ~ 1 + (1 | g), data = d, threads = 1.5), "`threads` must be a whole number")
  expect_s3_class(fr_fit(y ~ 1 + (1 | g), data = d, threads = 1), "fr_fit")
  expect_error(fr_fit(y ~ 1 + (1 | g), data = d, threads = Inf), "`threads` must be a whole number")
  expect_error(fr_fit(y ~ 1 + (1 | g), data = d, threads = NA), "`threads` must be a whole number")
  expect_error(fr_fit(y ~ 1 + (1 | g), data = d, threads = -2), "`threads` must be a whole number")
})

test_that("more threads than cores are capped at the cores, with a message, and do not hang", {
  # Each thread is an OS thread: a million of them once hung R (run apart, so a hang fails).
  run <- run_in_fresh_process(c(
    "d <- data.frame(y = rnorm(40), g = rep(1:8, 5))",
    "fit <- fr_fit(y ~ 1 + (1 | g), data = d, threads = 1e6)",
    "boot <- fr_bootstrap(fit, nsim = 5, seed = 1, threads = 5000)",
    "cat('threads used:', fit$threads, nrow(boot), '\\n')"
  ))
  expect_identical(run$status, 0L, info = run$output)
  expect_match(run$output, "using [0-9]+ threads, the number of cores available, instead of the 1,000,000 requested")
  expect_match(run$output, "instead of the 5,000 requested")
  expect_match(run$output, sprintf("threads used: %d 5", available_cores()))
  expect_error_in_fresh_process(
    "fr_fit(y ~ 1 + (1 | g), data = data.frame(y = rnorm(40), g = rep(1:8, 5)), threads = Inf)",
    "`threads` must be a whole number of at least 1"
  )
})

test_that("the default threads follow the option, else the cores, at most 2 under CRAN's check", {
  d <- data.frame(y = rnorm(40), g = rep(1:8, 5))
  withr::with_options(list(fullrandom.threads = 1), {
    expect_identical(fr_fit(y ~ 1 + (1 | g), data = d)$threads, 1L)
  })
  withr::with_options(list(fullrandom.threads = NULL), {
    expect_identical(fr_fit(y ~ 1 + (1 | g), data = d)$threads, available_cores())
  })
  withr::with_envvar(c("_R_CHECK_LIMIT_CORES_" = "TRUE"), expect_lte(available_cores(), 2L))
  withr::with_envvar(c("_R_CHECK_LIMIT_CORES_" = "false"), {
    expect_identical(available_cores(), as.integer(parallel::detectCores()))
  })
})

test_that("a model without an intercept is fitted without shifting", {
  set.seed(3)
  d <- data.frame(g = factor(rep(1:10, each = 6)), x = rnorm(60))
  d$y <- 5 + 2 * d$x + rnorm(10)[d$g] + rnorm(60)
  with <- fr_fit(y ~ x + (1 | g), data = d)
  without <- fr_fit(y ~ 0 + x + (1 | g), data = d)
  expect_named(without$coefficients, "x")
  X <- model.matrix(~ 0 + x, d)
  reference <- dense_moment_reference(d$y, X, list(g = d$g))
  expect_equal(unname(without$theta_raw), unname(reference$theta), tolerance = 1e-8)
  expect_false(isTRUE(all.equal(with$theta, without$theta)))
})

test_that("a Rust panic becomes an R error", {
  expect_error(fr_test_panic("deliberate panic"), "deliberate panic")
})

test_that("a model without fixed effects is fitted, printed and tidied", {
  set.seed(11)
  d <- data.frame(g = factor(rep(1:8, each = 5)))
  d$y <- rnorm(8)[d$g] + rnorm(40)
  fit <- fr_fit(y ~ 0 + (1 | g), data = d)
  expect_length(fixef(fit), 0L)
  expect_identical(dim(vcov(fit)), c(0L, 0L))
  # With no fixed part, the BLUP is the shrunken level mean: n_g / (n_g + s2 / s2_g) * mean_g.
  shrink <- 5 / (5 + fit$theta[["Residual"]] / fit$theta[["g"]])
  expect_equal(unname(fit$ranef_values$g), as.vector(shrink * tapply(d$y, d$g, mean)), tolerance = 1e-10)
  expect_equal(predict(fit, d), fitted(fit), ignore_attr = TRUE)
  expect_true("No fixed effects" %in% capture.output(print(fit)))
  expect_true("No fixed effects" %in% capture.output(print(summary(fit))))
  skip_if_not_installed("generics")
  expect_identical(generics::tidy(fit)$effect, rep("ran_pars", 2))
})

test_that("GLS fixed effects and BLUPs without an intercept equal a dense Henderson solve", {
  worst <- 0
  for (seed in 1:6) {
    d <- random_small_design(seed)$data
    d$y <- d$y + 5
    cases <- list(
      list(formula = y ~ 0 + x1 + (1 | a) + (1 | b), fixed = ~ 0 + x1),
      list(formula = y ~ x1 - 1 + (1 | a) + (1 | b), fixed = ~ x1 - 1),
      list(formula = y ~ 0 + f + (1 | a) + (1 | b), fixed = ~ 0 + f),
      list(formula = y ~ 0 + (1 | a) + (1 | b), fixed = ~ 0)
    )
    for (case in cases) {
      fit <- suppressMessages(fr_fit(case$formula, data = d))
      X <- model.matrix(case$fixed, d)
      factors <- list(a = d$a, b = d$b)
      moments <- dense_moment_reference(d$y, X, factors)
      expect_equal(fit$theta_raw[names(moments$theta)], moments$theta, tolerance = 1e-8)
      ref <- dense_mixed_reference(d$y, X, factors, fit$theta)
      if (ncol(X) > 0) {
        worst <- max(worst, max(abs(fit$coefficients - ref$b[names(fit$coefficients)]) /
                                  pmax(abs(ref$b[names(fit$coefficients)]), 1e-12)))
      }
      for (k in names(fit$flist)) {
        u <- fit$ranef_values[[k]]
        worst <- max(worst, max(abs(u - ref$u[[k]][names(u)])) / max(abs(ref$u[[k]]), 1e-12))
      }
    }
  }
  expect_lt(worst, 1e-8)
})

test_that("the fit is equivariant in the scale of the response, far beyond unit size", {
  d <- simulate_crossed(1500, seed = 4)
  formula <- y ~ x + (1 | user) + (1 | item)
  base <- fr_fit(formula, d)
  for (c in c(1e-150, 1e150, 3, 1 / 3)) {
    scaled <- d
    scaled$y <- d$y * c
    fit <- fr_fit(formula, scaled)
    expect_equal(fit$theta / c^2, base$theta, tolerance = 1e-8, info = format(c))
    expect_equal(fit$theta_raw / c^2, base$theta_raw, tolerance = 1e-8, info = format(c))
    expect_equal(fixef(fit) / c, fixef(base), tolerance = 1e-8, info = format(c))
    expect_equal(vcov(fit) / c^2, vcov(base), tolerance = 1e-8, info = format(c))
    expect_equal(fit$ranef_values$user / c, base$ranef_values$user, tolerance = 1e-8, info = format(c))
    expect_equal(residuals(fit) / c, residuals(base), tolerance = 1e-8, info = format(c))
  }
  # A power of two scales exactly.
  scaled <- d
  scaled$y <- d$y * 2^-400
  expect_identical(fr_fit(formula, scaled)$theta * 2^800, base$theta)
  boot <- fr_bootstrap(fr_fit(formula, transform(d, y = y * 1e150)), nsim = 20, seed = 1)
  expect_equal(attr(boot, "variances") / 1e300, attr(fr_bootstrap(base, nsim = 20, seed = 1), "variances"),
               tolerance = 1e-8)
})

test_that("a constant response, or one beyond the range of variances, is refused clearly", {
  expect_error_in_fresh_process(c(
    "d <- simulate_crossed(200, seed = 1)", "d$y <- 5",
    "fr_fit(y ~ x + (1 | user), d)"
  ), "the response is constant \\(every value is 5\\)")
  expect_error_in_fresh_process(c(
    "d <- simulate_crossed(200, seed = 1)", "d$y <- d$y * 1e300",
    "fr_fit(y ~ x + (1 | user), d)"
  ), "the response is too large for its variances to be represented")
  expect_error_in_fresh_process(c(
    "d <- simulate_crossed(200, seed = 1)", "d$y <- d$y * 1e-300",
    "fr_fit(y ~ x + (1 | user), d)"
  ), "the response is too small for its variances to be represented")
})

test_that("contrasts are passed to the fixed part's model matrix, as lm passes them", {
  set.seed(4)
  d <- data.frame(f = factor(rep(c("a", "b", "c"), 40)), g = factor(rep(1:12, each = 10)),
                  x = rnorm(120))
  d$y <- c(a = 1, b = 2, c = 4)[as.character(d$f)] + d$x + rnorm(12)[d$g] + rnorm(120)
  treatment <- fr_fit(y ~ f + x + (1 | g), data = d)
  sum_coded <- fr_fit(y ~ f + x + (1 | g), data = d, contrasts = list(f = "contr.sum"))
  expect_named(fixef(sum_coded), names(coef(lm(y ~ f + x, d, contrasts = list(f = "contr.sum")))))
  expect_false(isTRUE(all.equal(fixef(sum_coded), fixef(treatment), check.attributes = FALSE)))
  # The same model, parametrised differently: the intercept of sum coding is the mean of
  # the level means, and the variance components and predictions do not change.
  b <- fixef(treatment)
  expect_equal(fixef(sum_coded)[["(Intercept)"]], b[["(Intercept)"]] + (b[["fb"]] + b[["fc"]]) / 3)
  expect_equal(sum_coded$theta, treatment$theta)
  expect_equal(fitted(sum_coded), fitted(treatment))
  new <- data.frame(f = c("c", "a"), x = c(0, 1), g = c("1", "2"))
  expect_equal(predict(sum_coded, new), predict(treatment, new))
  expect_identical(ncol(model.matrix(sum_coded)), 4L)
  expect_error(fr_fit(y ~ f + (1 | g), data = d, contrasts = "contr.sum"),
               "`contrasts` must be NULL or a named list")
})

test_that("lmer's arguments that fr_fit does not take are refused with what to do instead", {
  d <- data.frame(y = rnorm(40), g = rep(1:8, 5))
  expect_error(fr_fit(y ~ 1 + (1 | g), d, REML = FALSE),
               "^`REML` chooses between REML and maximum likelihood for method = \"reml\"; method = \"moments\" estimates")
  expect_error(fr_fit(y ~ 1 + (1 | g), d, weights = rep(2, 40)), "does not take `weights` for a linear mixed model: weights are not supported yet")
  expect_error(fr_fit(y ~ 1 + (1 | g), d, offset = rep(1, 40)), "does not take `offset` for a linear mixed model: .*subtract the offset from the response")
  expect_error(fr_fit(y ~ 1 + (1 | g), d, family = Gamma), "family Gamma\\(link = \"inverse\"\\) is not supported")
  expect_error(fr_fit(y ~ 1 + (1 | g), d, control = list()), "does not take `control`: fr_fit has no optimiser")
  expect_error(fr_fit(y ~ 1 + (1 | g), d, start = 1), "does not take `start`: fr_fit has no optimiser")
  expect_error(fr_fit(y ~ 1 + (1 | g), d, verbose = TRUE), "does not take `verbose`: fr_fit has no optimiser iterations")
  expect_error(fr_fit(y ~ 1 + (1 | g), d, nonsense = 1), "fr_fit\\(\\) does not take `nonsense` \\(see \\?fr_fit")
})
