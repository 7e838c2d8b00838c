# summary() and its print method, in lmer's layout.

test_that("summary's coefficient table holds estimates, standard errors and t values", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  s <- summary(fit)
  expect_s3_class(s, "summary.fr_fit")
  cf <- s$coefficients
  expect_true(is.matrix(cf))
  expect_identical(colnames(cf), c("Estimate", "Std. Error", "t value"))
  expect_identical(rownames(cf), c("(Intercept)", "Days"))
  expect_equal(cf[, "Estimate"], fixef(fit))
  expect_equal(cf[, "Std. Error"], sqrt(diag(vcov(fit))))
  expect_equal(cf[, "t value"], fixef(fit) / sqrt(diag(vcov(fit))))
  expect_equal(s$vcov, vcov(fit))
  expect_equal(s$sigma, sigma(fit))
  expect_identical(s$ngrps, ngrps(fit))
  expect_identical(s$nobs, nobs(fit))
  expect_equal(s$residuals, unname(residuals(fit)) / sigma(fit), ignore_attr = TRUE)
  expect_s3_class(s$varcor, "VarCorr.fr_fit")
})

test_that("summary's standard errors match lmer's on sleepstudy", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  lfit <- lme4::lmer(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  ours <- summary(fit)$coefficients
  theirs <- stats::coef(summary(lfit))
  expect_equal(ours[, "Std. Error"], theirs[, "Std. Error"], tolerance = 1e-4)
  expect_equal(ours[, "Estimate"], theirs[, "Estimate"], tolerance = 1e-4)
  expect_equal(ours[, "t value"], theirs[, "t value"], tolerance = 1e-4)
  # The scaled residuals' quantiles too (what both print first).
  expect_equal(stats::quantile(summary(fit)$residuals, names = FALSE),
               stats::quantile(residuals(lfit, scaled = TRUE), names = FALSE), tolerance = 1e-4)
})

test_that("print(summary()) shows lmer's sections with the right numbers", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  s <- summary(fit)
  out <- capture.output(res <- withVisible(print(s)))
  expect_false(res$visible)
  expect_identical(res$value, s)
  expect_identical(out[1], "Linear mixed model fit by the method of moments ['fr_fit']")
  sections <- c("Scaled residuals: ", "Random effects:", "Fixed effects:",
                "Correlation of Fixed Effects:")
  at <- match(sections, out)
  expect_false(anyNA(at))
  expect_true(all(diff(at) > 0))

  # The scaled residual quantiles.
  q_line <- out[match("Scaled residuals: ", out) + 2L]
  q <- as.numeric(strsplit(trimws(q_line), " +")[[1]])
  expect_equal(q, unname(stats::quantile(s$residuals)), tolerance = 1e-3)

  # The fixed-effects table: estimates, standard errors and t values of each row.
  days <- out[grep("^Days ", out)[1]]
  numbers <- as.numeric(strsplit(trimws(sub("^Days", "", days)), " +")[[1]])
  expect_equal(numbers, unname(s$coefficients["Days", ]), tolerance = 1e-3)
  expect_match(out[match("Fixed effects:", out) + 1L], "Estimate +Std. Error +t value")
  expect_false(any(grepl("Pr\\(", out)))

  # The correlation of the fixed effects, abbreviated as lme4 does.
  corr <- stats::cov2cor(vcov(fit))["Days", "(Intercept)"]
  at_corr <- match("Correlation of Fixed Effects:", out)
  expect_match(out[at_corr + 1L], "\\(Intr\\)")
  expect_match(out[at_corr + 2L], paste0("^Days +", sprintf("%.3f", corr), "$"))
  expect_true("Number of obs: 180, groups:  Subject, 18" %in% out)
})

test_that("the correlation table lists the lower triangle", {
  set.seed(6)
  d <- data.frame(g = factor(rep(1:10, each = 6)), x = rnorm(60), z = rnorm(60))
  d$y <- d$x - d$z + rnorm(10)[d$g] + rnorm(60)
  fit <- fr_fit(y ~ x + z + (1 | g), data = d)
  out <- capture.output(print(summary(fit)))
  at <- match("Correlation of Fixed Effects:", out)
  corr <- stats::cov2cor(vcov(fit))
  expect_match(out[at + 1L], "^ +\\(Intr\\) +x$")
  expect_match(out[at + 2L], paste0("^x +", sprintf("%.3f", corr["x", "(Intercept)"]), " *$"))
  expect_match(out[at + 3L], paste0("^z +", sprintf("%.3f", corr["z", "(Intercept)"]), " +",
                                    sprintf("%.3f", corr["z", "x"]), "$"))
})

test_that("the correlation is left out for one fixed effect, or when asked", {
  skip_if_not_installed("lme4")
  one <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  out <- capture.output(print(summary(one)))
  expect_true("Fixed effects:" %in% out)
  expect_false(any(grepl("Correlation", out)))
  expect_match(out[grep("^\\(Intercept\\)", out)],
               sprintf("%.4f", summary(one)$coefficients[1, "Estimate"]), fixed = TRUE)

  two <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  expect_false(any(grepl("Correlation", capture.output(print(summary(two), correlation = FALSE)))))
})

test_that("more than 12 fixed effects hide the correlation unless asked", {
  set.seed(12)
  d <- data.frame(g = factor(rep(1:8, each = 26)), f = factor(rep(sprintf("l%02d", 1:13), 16)))
  d$y <- as.integer(d$f) / 4 + rnorm(8)[d$g] + rnorm(nrow(d))
  fit <- fr_fit(y ~ f + (1 | g), data = d)
  expect_length(fixef(fit), 13L)
  out <- capture.output(print(summary(fit)))
  expect_false("Correlation of Fixed Effects:" %in% out)
  expect_true("Correlation matrix not shown by default, as p = 13 > 12." %in% out)
  forced <- capture.output(print(summary(fit), correlation = TRUE))
  expect_true("Correlation of Fixed Effects:" %in% forced)
})

test_that("summary reports dropped rows and a boundary fit", {
  d <- boundary_design()
  # A covariate with equal means within the levels of h keeps h at the boundary.
  d$x <- rnorm(48)
  d$x <- d$x - ave(d$x, d$h)
  d$x[c(4, 9)] <- NA
  expect_message(fit <- fr_fit(y ~ x + (1 | g) + (1 | h), data = d), "boundary")
  out <- capture.output(print(summary(fit)))
  expect_true("  (2 observations deleted due to missingness)" %in% out)
  expect_true("Number of obs: 46, groups:  h, 8; g, 6" %in% out)
  expect_true(any(grepl("^boundary \\(singular\\) fit: the variance of \\(1 \\| h\\) is estimated at 0", out)))
})

test_that("the digits argument changes the printed precision", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  out <- capture.output(print(summary(fit), digits = 8))
  days <- out[grep("^Days ", out)[1]]
  numbers <- as.numeric(strsplit(trimws(sub("^Days", "", days)), " +")[[1]])
  expect_equal(numbers, unname(summary(fit)$coefficients["Days", ]), tolerance = 1e-7)
})

test_that("summary takes lme4's correlation argument and refuses others", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  expect_true(any(grepl("Correlation of Fixed Effects", capture.output(print(summary(fit))))))
  expect_false(any(grepl("Correlation of Fixed Effects",
                         capture.output(print(summary(fit, correlation = FALSE))))))
  expect_error(summary(fit, use.hessian = TRUE), "summary\\(\\) does not take `use.hessian`")
  expect_error(print(summary(fit), signif.stars = FALSE), "print\\(\\) does not take `signif.stars`")
})
