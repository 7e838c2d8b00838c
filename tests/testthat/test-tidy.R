# tidy() in broom.mixed's layout, registered for generics::tidy.

test_that("generics::tidy dispatches to the fr_fit method with broom.mixed's columns", {
  skip_if_not_installed("generics")
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  td <- generics::tidy(fit)
  expect_s3_class(td, "data.frame")
  expect_identical(names(td), c("effect", "group", "term", "estimate", "std.error", "statistic"))
  expect_identical(td$effect, c("fixed", "fixed", "ran_pars", "ran_pars"))
  expect_identical(td$group, c(NA, NA, "Subject", "Residual"))
  expect_identical(td$term, c("(Intercept)", "Days", "sd__(Intercept)", "sd__Observation"))
  expect_type(td$estimate, "double")
  expect_identical(rownames(td), as.character(1:4))
})

test_that("tidy's values match fixef, vcov and VarCorr", {
  skip_if_not_installed("generics")
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  td <- generics::tidy(fit)
  fixed <- td[td$effect == "fixed", ]
  expect_identical(fixed$term, names(fixef(fit)))
  expect_equal(fixed$estimate, unname(fixef(fit)))
  expect_equal(fixed$std.error, unname(sqrt(diag(vcov(fit)))))
  expect_equal(fixed$statistic, unname(fixef(fit) / sqrt(diag(vcov(fit)))))
  expect_true(all(is.na(fixed$group)))

  ran <- td[td$effect == "ran_pars", ]
  vc <- as.data.frame(VarCorr(fit))
  expect_identical(ran$group, c("plate", "sample", "Residual"))
  expect_identical(ran$term, c("sd__(Intercept)", "sd__(Intercept)", "sd__Observation"))
  expect_equal(ran$estimate, vc$sdcor)
  expect_equal(ran$estimate[3], sigma(fit))
  expect_true(all(is.na(ran$std.error)))
  expect_true(all(is.na(ran$statistic)))
})

test_that("scales = 'vcov' gives variances as var__ terms", {
  skip_if_not_installed("generics")
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  td <- generics::tidy(fit, effects = "ran_pars", scales = "vcov")
  expect_identical(td$effect, rep("ran_pars", 3))
  expect_identical(td$term, c("var__(Intercept)", "var__(Intercept)", "var__Observation"))
  expect_equal(td$estimate, unname(fit$theta[c("plate", "sample", "Residual")]))
  expect_equal(td$estimate[3], sigma(fit)^2)
  sd <- generics::tidy(fit, effects = "ran_pars", scales = "sdcor")
  expect_equal(sd$estimate^2, td$estimate)
  expect_error(generics::tidy(fit, scales = "variance"))
})

test_that("effects selects the rows; ran_vals gives one row per level", {
  skip_if_not_installed("generics")
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  fixed <- generics::tidy(fit, effects = "fixed")
  expect_identical(fixed$effect, "fixed")
  expect_identical(names(fixed), c("effect", "group", "term", "estimate", "std.error", "statistic"))

  vals <- generics::tidy(fit, effects = "ran_vals")
  expect_identical(names(vals), c("effect", "group", "level", "term", "estimate", "std.error"))
  expect_identical(nrow(vals), sum(ngrps(fit)))
  expect_true(all(vals$effect == "ran_vals"))
  expect_identical(vals$group, rep(c("plate", "sample"), c(24L, 6L)))
  expect_type(vals$level, "character")
  expect_identical(vals$level, c(rownames(ranef(fit)$plate), rownames(ranef(fit)$sample)))
  expect_true(all(vals$term == "(Intercept)"))
  expect_equal(vals$estimate, as.data.frame(ranef(fit))$condval)
  expect_equal(vals$estimate[vals$group == "sample" & vals$level == "C"], ranef(fit)$sample["C", 1])

  all3 <- generics::tidy(fit, effects = c("ran_pars", "fixed", "ran_vals"))
  expect_identical(nrow(all3), 1L + 3L + 30L)
  expect_setequal(names(all3), c("effect", "group", "term", "estimate", "std.error",
                                 "statistic", "level"))
  expect_true(all(is.na(all3$level[all3$effect != "ran_vals"])))
  expect_identical(all3$level[all3$effect == "ran_vals"], vals$level)
  expect_error(generics::tidy(fit, effects = "random"))
})

test_that("conf.int adds Wald intervals for the fixed effects", {
  skip_if_not_installed("generics")
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  td <- generics::tidy(fit, effects = "fixed", conf.int = TRUE)
  expect_identical(names(td), c("effect", "group", "term", "estimate", "std.error", "statistic",
                                "conf.low", "conf.high"))
  z <- stats::qnorm(0.975)
  expect_equal(td$conf.low, td$estimate - z * td$std.error)
  expect_equal(td$conf.high, td$estimate + z * td$std.error)
  expect_true(all(td$conf.low < td$estimate & td$estimate < td$conf.high))

  narrow <- generics::tidy(fit, effects = "fixed", conf.int = TRUE, conf.level = 0.5)
  expect_equal(narrow$conf.high - narrow$estimate, stats::qnorm(0.75) * narrow$std.error)

  # Variance parameters have no interval here.
  both <- generics::tidy(fit, conf.int = TRUE)
  expect_true(all(is.na(both$conf.low[both$effect == "ran_pars"])))
  expect_false(anyNA(both$conf.low[both$effect == "fixed"]))

  expect_false("conf.low" %in% names(generics::tidy(fit)))
})

test_that("tidy's fixed rows agree with lmer's coefficient table", {
  skip_if_not_installed("generics")
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  lfit <- lme4::lmer(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  td <- generics::tidy(fit, effects = "fixed")
  cf <- stats::coef(summary(lfit))
  expect_equal(td$estimate, unname(cf[, "Estimate"]), tolerance = 1e-4)
  expect_equal(td$std.error, unname(cf[, "Std. Error"]), tolerance = 1e-4)
  expect_equal(td$statistic, unname(cf[, "t value"]), tolerance = 1e-4)
})

test_that("tidy refuses arguments it does not use", {
  skip_if_not_installed("generics")
  fit <- fr_fit(distance ~ bow + (1 | archer), data = simulate_archers(seed = 1))
  expect_error(generics::tidy(fit, exponentiate = TRUE), "^tidy\\(\\) does not take `exponentiate`")
})
