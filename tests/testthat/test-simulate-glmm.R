# simulate_crossed(family = ): binomial and Poisson responses on the power-law crossed
# design.

test_that("simulate_crossed(family =) keeps the design and draws responses in the family's range", {
  gauss <- simulate_crossed(5000, seed = 3)
  bern <- simulate_crossed(5000, family = binomial, seed = 3)
  trials <- simulate_crossed(5000, family = "binomial", size = 7, seed = 3)
  counts <- simulate_crossed(5000, family = poisson(link = "log"), seed = 3)
  # The same seed draws the same users, items and covariate whatever the family.
  for (d in list(bern, trials, counts)) {
    expect_identical(d[c("x", "user", "item")], gauss[c("x", "user", "item")])
    expect_identical(nrow(d), 5000L)
  }
  expect_named(bern, c("y", "x", "user", "item"))
  expect_true(is.integer(bern$y) && all(bern$y %in% 0:1))
  expect_named(trials, c("y", "x", "user", "item", "size"))
  expect_identical(trials$size, rep(7L, 5000))
  expect_true(is.integer(trials$y) && all(trials$y >= 0 & trials$y <= 7))
  expect_gt(length(unique(trials$y)), 5)
  expect_true(is.integer(counts$y) && all(counts$y >= 0))
  # Intercept 0 by default: success probability near 1/2 at zero effects; the Poisson
  # mean exp(eta) averages about exp(s2 / 2) over the effects.
  expect_equal(mean(bern$y), 0.5, tolerance = 0.15)
  expect_equal(mean(trials$y / 7), 0.5, tolerance = 0.15)
  expect_gt(mean(counts$y), 0.7)
  expect_lt(mean(counts$y), 2.5)
  truth <- attr(trials, "truth")
  expect_identical(truth[c("family", "link", "size")], list(family = "binomial", link = "logit", size = 7L))
  expect_null(truth$sd_residual)
  expect_identical(attr(counts, "truth")$family, "poisson")
  expect_identical(bern, simulate_crossed(5000, family = binomial, seed = 3))
  # A low intercept gives rare successes; probit is taken as glm takes it.
  rare <- simulate_crossed(5000, intercept = -4, family = binomial, seed = 3)
  expect_lt(mean(rare$y), 0.05)
  probit <- simulate_crossed(5000, family = binomial(link = "probit"), seed = 3)
  expect_identical(attr(probit, "truth")$link, "probit")
})

test_that("simulate_crossed(family =) refuses arguments that do not apply", {
  expect_error(simulate_crossed(100, family = binomial, sd_residual = 1),
               "`sd_residual` applies to gaussian responses; a binomial response has no residual term")
  expect_error(simulate_crossed(100, family = poisson, size = 3), "`size` \\(the trials\\) applies to family = binomial, not poisson")
  expect_error(simulate_crossed(100, size = 3), "applies to family = binomial, not gaussian")
  expect_error(simulate_crossed(100, family = binomial, size = 0), "`size` must be a whole number of at least 1")
  expect_error(simulate_crossed(100, family = binomial, size = 2.5), "`size` must be a whole number")
  expect_error(simulate_crossed(100, family = Gamma), "not supported")
  expect_error(simulate_crossed(100, family = poisson, intercept = 30), "counts that large do not fit in integers")
})

test_that("fits of large simulated binomial and Poisson data recover the parameters", {
  skip_on_cran()
  # Flatter activity than the default Zipf laws, so that the sds are estimated within a
  # few percent at 10^5 rows (263 items, 625 users).
  cases <- list(
    list(family = "binomial", size = 1, formula = y ~ x + (1 | user) + (1 | item)),
    list(family = "binomial", size = 5, formula = cbind(y, size - y) ~ x + (1 | user) + (1 | item)),
    list(family = "poisson", size = 1, formula = y ~ x + (1 | user) + (1 | item))
  )
  for (case in cases) {
    d <- if (case$family == "binomial") {
      simulate_crossed(1e5, user_exponent = 0.3, item_exponent = 0.3, intercept = -0.5, family = binomial,
                       size = case$size, seed = 12)
    } else {
      simulate_crossed(1e5, user_exponent = 0.3, item_exponent = 0.3, intercept = -0.5, family = poisson, seed = 12)
    }
    fit <- fr_fit(case$formula, d, family = case$family, threads = 2)
    truth <- attr(d, "truth")
    expect_lt(abs(fixef(fit)[["(Intercept)"]] - truth$intercept), 0.12)
    expect_lt(abs(fixef(fit)[["x"]] - truth$slope), 0.02)
    expect_equal(sqrt(unname(fit$theta[c("user", "item")])), c(truth$sd_user, truth$sd_item), tolerance = 0.15)
  }
})
