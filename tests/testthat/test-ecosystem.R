# Methods for insight/performance/parameters/ggeffects, emmeans, broom.mixed (generics)
# and lattice, registered on load of those suggested packages; compared with lmer on the
# same model where the answers must agree.

sleep_fits <- function() {
  list(
    fr = fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy),
    lmer = lme4::lmer(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  )
}

test_that("insight sees a linear mixed model with lmer's formula parts", {
  skip_if_not_installed("insight")
  skip_if_not_installed("lme4")
  fits <- sleep_fits()
  info <- insight::model_info(fits$fr)
  expect_true(info$is_mixed)
  expect_true(info$is_linear)
  expect_identical(info$family, "gaussian")
  expect_identical(info$link_function, "identity")
  expect_true(insight::is_mixed_model(fits$fr))

  f <- insight::find_formula(fits$fr)
  g <- insight::find_formula(fits$lmer)
  expect_identical(format(f$conditional), format(g$conditional))
  expect_identical(format(f$random), format(g$random))
  expect_identical(insight::find_random(fits$fr), insight::find_random(fits$lmer))
  expect_identical(insight::find_random(fits$fr, flatten = TRUE), "Subject")
  expect_identical(insight::find_parameters(fits$fr), insight::find_parameters(fits$lmer))

  expect_identical(insight::get_parameters(fits$fr)$Parameter, c("(Intercept)", "Days"))
  expect_equal(insight::get_parameters(fits$fr)$Estimate, unname(fixef(fits$fr)))
  st <- insight::get_statistic(fits$fr)
  expect_equal(st$Statistic, unname(summary(fits$fr)$coefficients[, "t value"]))
  expect_identical(insight::get_df(fits$fr), Inf)
  expect_equal(insight::get_df(fits$fr, type = "residual"), 178)
})

test_that("crossed and nested terms give lmer's random formulas and grouping factors", {
  skip_if_not_installed("insight")
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  ref <- lme4::lmer(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  expect_identical(lapply(insight::find_formula(fit)$random, format),
                   lapply(insight::find_formula(ref)$random, format))
  expect_setequal(insight::find_random(fit)$random, insight::find_random(ref)$random)

  nested <- fr_fit(strength ~ 1 + (1 | batch / cask), data = lme4::Pastes)
  ref <- lme4::lmer(strength ~ 1 + (1 | batch / cask), data = lme4::Pastes)
  expect_setequal(vapply(insight::find_formula(nested)$random, format, ""),
                  vapply(insight::find_formula(ref)$random, format, ""))
  expect_setequal(insight::find_random(nested, split_nested = TRUE)$random,
                  insight::find_random(ref, split_nested = TRUE)$random)
})

test_that("get_variance, icc and Nakagawa's r2 equal lmer's on balanced sleepstudy", {
  skip_if_not_installed("performance")
  skip_if_not_installed("lme4")
  fits <- sleep_fits()
  v <- insight::get_variance(fits$fr)
  w <- insight::get_variance(fits$lmer)
  expect_identical(names(v), names(w))
  # On a balanced design the moment estimates equal REML's.
  for (k in names(w)) expect_equal(v[[k]], w[[k]], tolerance = 1e-4, ignore_attr = TRUE)
  expect_equal(insight::get_variance(fits$fr, component = "random"), v$var.random)

  icc <- performance::icc(fits$fr)
  ref <- performance::icc(fits$lmer)
  expect_equal(icc$ICC_adjusted, ref$ICC_adjusted, tolerance = 1e-4)
  expect_equal(icc$ICC_unadjusted, ref$ICC_unadjusted, tolerance = 1e-4)
  expect_equal(round(icc$ICC_adjusted, 3), 0.589)
  expect_equal(round(icc$ICC_unadjusted, 3), 0.424)

  r2 <- performance::r2(fits$fr)
  ref <- performance::r2(fits$lmer)
  expect_equal(unname(r2$R2_conditional), unname(ref$R2_conditional), tolerance = 1e-4)
  expect_equal(unname(r2$R2_marginal), unname(ref$R2_marginal), tolerance = 1e-4)
  expect_true(r2$R2_conditional < 1)
  r2n <- performance::r2_nakagawa(fits$fr)
  expect_equal(unname(r2n$R2_conditional), unname(r2$R2_conditional))
})

test_that("model_performance has NA likelihood columns and lmer's R2, ICC, RMSE and sigma", {
  skip_if_not_installed("performance")
  skip_if_not_installed("lme4")
  fits <- sleep_fits()
  mp <- performance::model_performance(fits$fr)
  ref <- performance::model_performance(fits$lmer)
  expect_s3_class(mp, "performance_model")
  expect_true(all(is.na(mp[c("AIC", "AICc", "BIC")])))
  for (k in c("R2_conditional", "R2_marginal", "ICC", "RMSE", "Sigma")) {
    expect_equal(mp[[k]], ref[[k]], tolerance = 1e-4, info = k)
  }
  expect_output(print(mp), "R2 \\(cond\\.\\)")
})

test_that("parameters::model_parameters gives the fixed effects with Wald intervals", {
  skip_if_not_installed("parameters")
  skip_if_not_installed("lme4")
  fits <- sleep_fits()
  mp <- parameters::model_parameters(fits$fr, effects = "fixed")
  expect_identical(mp$Parameter, c("(Intercept)", "Days"))
  expect_equal(mp$Coefficient, unname(fixef(fits$fr)))
  expect_equal(mp$SE, unname(sqrt(diag(vcov(fits$fr)))))
  ci <- confint(fits$fr, method = "Wald", parm = "beta_")
  expect_equal(mp$CI_low, unname(ci[, 1]), tolerance = 1e-8)
  expect_equal(mp$CI_high, unname(ci[, 2]), tolerance = 1e-8)
  ref <- parameters::model_parameters(fits$lmer, effects = "fixed")
  expect_equal(mp$SE, ref$SE, tolerance = 1e-3)
  expect_output(print(mp), "Days")
  all <- parameters::model_parameters(fits$fr, effects = "all")
  expect_equal(all$Coefficient[all$Effects == "random"], as.data.frame(VarCorr(fits$fr))$sdcor)
})

test_that("ggeffects::ggpredict predicts the fixed part along Days, as for lmer", {
  skip_if_not_installed("ggeffects")
  skip_if_not_installed("lme4")
  fits <- sleep_fits()
  p <- ggeffects::ggpredict(fits$fr, "Days")
  ref <- ggeffects::ggpredict(fits$lmer, "Days")
  expect_s3_class(p, "ggeffects")
  expect_equal(p$x, ref$x)
  expect_equal(p$predicted, ref$predicted, tolerance = 1e-4)
  expect_equal(p$predicted, unname(fixef(fits$fr)[1] + fixef(fits$fr)[2] * p$x))
  # Wald intervals of the fixed part, from vcov().
  se <- sqrt(vcov(fits$fr)[1, 1] + 2 * p$x * vcov(fits$fr)[1, 2] + p$x^2 * vcov(fits$fr)[2, 2])
  expect_equal(p$conf.high - p$predicted, stats::qnorm(0.975) * se)
})

test_that("emmeans and pairs work and match lmer's on sleepstudy", {
  skip_if_not_installed("emmeans")
  skip_if_not_installed("lme4")
  data <- lme4::sleepstudy
  data$week <- factor(data$Days >= 5, labels = c("first", "second"))
  fit <- fr_fit(Reaction ~ week + Days + (1 | Subject), data = data)
  ref <- lme4::lmer(Reaction ~ week + Days + (1 | Subject), data = data)
  em <- summary(emmeans::emmeans(fit, "week"))
  em_ref <- summary(emmeans::emmeans(ref, "week", lmer.df = "asymptotic"))
  expect_equal(em$emmean, em_ref$emmean, tolerance = 1e-4)
  expect_equal(em$SE, em_ref$SE, tolerance = 1e-4)
  expect_identical(em$df, c(Inf, Inf))
  pr <- summary(pairs(emmeans::emmeans(fit, "week")))
  expect_equal(pr$estimate, -unname(fixef(fit)["weeksecond"]))
  expect_equal(pr$SE, unname(sqrt(vcov(fit)["weeksecond", "weeksecond"])))
})

test_that("emmeans handles aliased columns through their non-estimable basis", {
  skip_if_not_installed("emmeans")
  d <- simulate_archers(seed = 1)
  d$bow2 <- d$bow
  fit <- suppressMessages(fr_fit(distance ~ bow + bow2 + (1 | archer), data = d))
  em <- summary(suppressMessages(emmeans::emmeans(fit, "bow")))
  expect_true(all(is.finite(em$emmean)))
})

test_that("emmeans and pairs on InstEval are within 5% of lmer's standard errors", {
  skip_if_not_installed("emmeans")
  skip_if_not_installed("lme4")
  skip_on_cran()
  data <- lme4::InstEval
  fit <- fr_fit(y ~ service + dept + (1 | s) + (1 | d), data = data)
  ref <- lme4::lmer(y ~ service + dept + (1 | s) + (1 | d), data = data)
  em <- summary(emmeans::emmeans(fit, "dept"))
  em_ref <- summary(emmeans::emmeans(ref, "dept", lmer.df = "asymptotic"))
  expect_equal(em$emmean, em_ref$emmean, tolerance = 0.01)
  expect_lt(max(abs(em$SE / em_ref$SE - 1)), 0.05)
  pr <- summary(pairs(emmeans::emmeans(fit, "service")))
  pr_ref <- summary(pairs(emmeans::emmeans(ref, "service", lmer.df = "asymptotic")))
  expect_lt(abs(pr$SE / pr_ref$SE - 1), 0.05)
  pd <- summary(pairs(emmeans::emmeans(fit, "dept")))
  pd_ref <- summary(pairs(emmeans::emmeans(ref, "dept", lmer.df = "asymptotic")))
  expect_lt(max(abs(pd$SE / pd_ref$SE - 1)), 0.05)
})

test_that("glance and augment have broom.mixed's columns", {
  skip_if_not_installed("generics")
  skip_if_not_installed("lme4")
  fits <- sleep_fits()
  gl <- generics::glance(fits$fr)
  expect_identical(names(gl), c("nobs", "sigma", "logLik", "AIC", "BIC", "deviance", "df.residual"))
  expect_identical(gl$nobs, 180L)
  expect_equal(gl$sigma, sigma(fits$fr))
  expect_true(all(is.na(gl[c("logLik", "AIC", "BIC", "deviance")])))
  expect_equal(gl$df.residual, 178)

  au <- generics::augment(fits$fr)
  expect_identical(nrow(au), 180L)
  expect_equal(au$.fitted, unname(fitted(fits$fr)))
  expect_equal(au$.resid, au$Reaction - au$.fitted)
  expect_equal(au$.fixed, unname(predict(fits$fr, re.form = NA)))
  expect_equal(au$.fixed, unname(predict(fits$lmer, re.form = NA)), tolerance = 1e-4)
  new <- data.frame(Days = 0:1, Subject = c("308", "309"))
  an <- generics::augment(fits$fr, newdata = new)
  expect_identical(names(an), c("Days", "Subject", ".fitted", ".fixed"))
  expect_error(generics::augment(fits$fr, foo = 1), "does not take `foo`")
  expect_error(generics::augment(fits$fr, data = lme4::sleepstudy[1:3, ]), "has 3 rows")
})

test_that("broom.mixed's generics dispatch to the methods", {
  skip_if_not_installed("broom.mixed")
  skip_if_not_installed("lme4")
  fit <- sleep_fits()$fr
  expect_identical(broom.mixed::glance(fit), generics::glance(fit))
  expect_identical(broom.mixed::tidy(fit), generics::tidy(fit))
})

test_that("lattice's dotplot and qqmath of ranef draw one plot per term", {
  skip_if_not_installed("lattice")
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  dp <- lattice::dotplot(ranef(fit))
  expect_identical(names(dp), c("plate", "sample"))
  expect_s3_class(dp$plate, "trellis")
  # The caterpillar: levels sorted by their prediction.
  u <- ranef(fit)$plate[["(Intercept)"]]
  expect_identical(levels(dp$plate$panel.args[[1]]$y), rownames(ranef(fit)$plate)[order(u)])
  expect_equal(dp$plate$panel.args[[1]]$x, sort(u))
  qq <- lattice::qqmath(ranef(fit))
  expect_identical(names(qq), c("plate", "sample"))
  expect_s3_class(qq$sample, "trellis")
  path <- withr::local_tempfile(fileext = ".pdf")
  grDevices::pdf(path)
  print(dp$plate)
  print(qq$sample)
  grDevices::dev.off()
  expect_gt(file.size(path), 0)
})

test_that("dotplot of ranef with condVar draws each level's interval", {
  skip_if_not_installed("lattice")
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  re <- ranef(fit, condVar = TRUE)
  dp <- lattice::dotplot(re)
  u <- re$sample[["(Intercept)"]]
  se <- sqrt(attr(re$sample, "postVar")[1, 1, ])
  lim <- dp$sample$x.limits
  expect_lte(lim[[1]], min(u - qnorm(0.975) * se))
  expect_gte(lim[[2]], max(u + qnorm(0.975) * se))
  # Without conditional variances the axis spans the points alone.
  expect_lt(diff(lattice::dotplot(ranef(fit))$sample$x.limits), diff(lim))
  expect_lt(diff(lattice::dotplot(re, level = 0.5)$sample$x.limits), diff(lim))
  expect_match(dp$sample$xlab, "95% interval")
  expect_error(lattice::dotplot(re, level = 1.5), "level")
  # The panel draws these intervals, in the order of the sorted levels.
  expected <- cbind(sort(u), sort(u)) + qnorm(0.975) * se[order(u)] %o% c(-1, 1)
  expect_equal(cbind(dp$sample$panel.args.common$lower, dp$sample$panel.args.common$upper), expected)
  expect_equal(dp$sample$panel.args[[1]]$x, sort(u))
  path <- withr::local_tempfile(fileext = ".pdf")
  grDevices::pdf(path)
  print(dp$sample)
  grDevices::dev.off()
  expect_gt(file.size(path), 0)
})

test_that("family() is gaussian and anova() of one fit gives Wald F tests", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  expect_identical(family(fit)$family, "gaussian")
  expect_identical(family(fit)$link, "identity")
  a <- anova(fit)
  expect_s3_class(a, "anova")
  expect_identical(rownames(a), "Days")
  t <- summary(fit)$coefficients["Days", "t value"]
  expect_equal(a[["F value"]], t^2)
  expect_identical(a$DenDF, Inf)
  expect_equal(a[["Pr(>F)"]], 2 * stats::pnorm(-abs(t)))
  expect_output(print(a), "Wald F tests")

  # A factor's columns are tested together, as lmer's anova (lmerTest) does.
  d <- simulate_archers(seed = 1)
  d$group <- factor(rep_len(c("a", "b", "c"), nrow(d)))
  fit <- fr_fit(distance ~ bow + group + (1 | archer), data = d)
  a <- anova(fit)
  expect_identical(rownames(a), c("bow", "group"))
  expect_identical(a$NumDF, c(nlevels(d$bow) - 1L, 2L))
  cols <- c("groupb", "groupc")
  b <- fixef(fit)[cols]
  expect_equal(a["group", "F value"], drop(b %*% solve(vcov(fit)[cols, cols], b)) / 2)
})
