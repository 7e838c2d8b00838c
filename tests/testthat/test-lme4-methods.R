# lme4's generics extended (never masked), the likelihood-based methods a moment fit
# refuses with a sentence, getME()/isSingular() and simulate().

archers_fit <- function() fr_fit(distance ~ bow + (1 | archer), data = simulate_archers(seed = 1))

test_that("likelihood-based methods say that a moment fit has no likelihood, and what to use", {
  fit <- archers_fit()
  no_likelihood <- "needs a likelihood, and a moment fit has none"
  expect_error(logLik(fit), paste0("^logLik\\(\\) \\(and so AIC\\(\\) and BIC\\(\\)\\) ", no_likelihood))
  expect_error(logLik(fit), "use confint\\(\\) for intervals")
  # AIC and BIC reach the message through stats' default methods, which call logLik().
  expect_error(AIC(fit), paste0("AIC\\(\\) and BIC\\(\\)\\) ", no_likelihood))
  expect_error(BIC(fit), paste0("AIC\\(\\) and BIC\\(\\)\\) ", no_likelihood))
  expect_error(AIC(fit, fit), no_likelihood)
  expect_error(deviance(fit), paste0("^deviance\\(\\) ", no_likelihood))
  expect_error(anova(fit, archers_fit()), paste0("^anova\\(\\) of several models \\(a likelihood-ratio test\\) ", no_likelihood, ".*Wald tests"))
  expect_error(drop1(fit), paste0("^drop1\\(\\) .*", no_likelihood, ".*Wald test"))
  expect_error(step(fit, trace = 0), paste0("extractAIC\\(\\) \\(and so step\\(\\)\\) ", no_likelihood))
  expect_error(profile(fit), paste0("^profile\\(\\) ", no_likelihood, ".*confint\\(\\)"))
  expect_error(refit(fit), paste0("^refit\\(\\) .*", no_likelihood, ".*call fr_fit\\(\\) again"))
  expect_error(refit(fit, rnorm(nobs(fit))), no_likelihood)
  expect_error(REMLcrit(fit), paste0("^REMLcrit\\(\\) .*", no_likelihood))
  expect_error(lme4::REMLcrit(fit), no_likelihood)
  expect_error(getME(fit, "devcomp"), paste0("getME\\(fit, \"devcomp\"\\) ", no_likelihood))
})

test_that("a fit that carries a log-likelihood answers logLik, AIC and BIC with it", {
  # The hook a likelihood-based method (a planned method = "reml") would use.
  fit <- archers_fit()
  fit$loglik <- structure(-100, df = 4, nobs = nobs(fit), class = "logLik")
  expect_identical(logLik(fit), fit$loglik)
  expect_equal(AIC(fit), 208)
  expect_equal(deviance(fit), 200)
})

test_that("df.residual is n - rank(X), as lm reports it, also with aliased columns", {
  d <- simulate_archers(seed = 1)
  d$bow2 <- d$bow  # aliased: dropped from the fit
  fit <- suppressMessages(fr_fit(distance ~ bow + bow2 + (1 | archer), data = d))
  expect_identical(df.residual(fit), df.residual(lm(distance ~ bow + bow2, data = d)))
  expect_identical(df.residual(fit), nobs(fit) - 2L)
})

test_that("getME gives lme4's theta and lower, so lme4's isSingular works, with its tol", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  theta <- getME(fit, "theta")
  expect_named(theta, "Subject.(Intercept)")
  expect_equal(unname(theta), sqrt(fit$theta[["Subject"]]) / sigma(fit))
  expect_identical(getME(fit, "lower"), 0)
  expect_identical(getME(fit, "fixef"), fixef(fit))
  expect_identical(getME(fit, c("n", "p")), list(n = 180L, p = 2L))
  expect_error(getME(fit, "Zt"), "getME\\(fit, \"Zt\"\\) is not a part of a moment fit; its parts are theta")
  expect_false(isSingular(fit))
  expect_true(isSingular(fit, tol = 10))  # theta is about 1.2: below a tolerance of 10
  # Groups whose means are all equal: the term's variance is estimated at the boundary.
  set.seed(5)
  d <- data.frame(g = factor(rep(1:10, each = 5)), e = rnorm(50))
  d$y <- 10 + d$e - ave(d$e, d$g)
  singular <- suppressMessages(fr_fit(y ~ 1 + (1 | g), data = d))
  expect_true(singular$boundary[["g"]])
  expect_true(isSingular(singular))
  expect_true(isSingular(singular, tol = 1e-12))
  expect_true(lme4::isSingular(singular))
})

test_that("simulate draws responses whose mean and covariance are the fitted model's", {
  set.seed(2)
  d <- data.frame(g = factor(rep(1:30, each = 4)), x = rnorm(120))
  d$y <- 1 + 2 * d$x + rnorm(30, sd = 1.5)[d$g] + rnorm(120)
  fit <- fr_fit(y ~ x + (1 | g), data = d)
  nsim <- 4000
  sims <- as.matrix(simulate(fit, nsim = nsim, seed = 7))
  expect_identical(dim(sims), c(120L, 4000L))
  expect_identical(colnames(sims)[c(1, nsim)], c("sim_1", paste0("sim_", nsim)))
  s2_g <- fit$theta[["g"]]
  s2 <- fit$theta[["Residual"]]
  # Mean: X b for every row (the standard error of a row's mean is sqrt((s2_g + s2) / nsim)).
  xb <- drop(model.matrix(fit) %*% fixef(fit))
  z <- (rowMeans(sims) - xb) / sqrt((s2_g + s2) / nsim)
  expect_lt(max(abs(z)), 5)
  # Variance s2_g + s2 per row; covariance s2_g within a group, 0 between groups. The
  # averages over rows and pairs are within a few percent after 4000 draws.
  v <- stats::cov(t(sims))
  same <- outer(d$g, d$g, "==") & !diag(120)
  expect_equal(mean(diag(v)), s2_g + s2, tolerance = 0.05)
  expect_equal(mean(v[same]), s2_g, tolerance = 0.08)
  expect_lt(abs(mean(v[!outer(d$g, d$g, "==")])), 0.05 * (s2_g + s2))
  # re.form = NULL holds the random effects at their predictions: only new errors.
  cond <- as.matrix(simulate(fit, nsim = 2000, seed = 8, re.form = NULL))
  expect_lt(max(abs(rowMeans(cond) - fitted(fit)) / sqrt(s2 / 2000)), 5)
  expect_equal(mean(apply(cond, 1L, stats::var)), s2, tolerance = 0.05)
})

test_that("simulate's seed reproduces the draws, restores the stream and is an attribute", {
  fit <- archers_fit()
  set.seed(1)
  before <- .Random.seed
  a <- simulate(fit, nsim = 2, seed = 3)
  expect_identical(.Random.seed, before)
  expect_identical(simulate(fit, nsim = 2, seed = 3), a)
  expect_identical(names(a), c("sim_1", "sim_2"))
  expect_identical(nrow(a), nobs(fit))
  expect_identical(attr(a, "seed"), structure(3, kind = as.list(RNGkind())))
  b <- simulate(fit)
  expect_identical(attr(b, "seed"), before)
  expect_error(simulate(fit, nsim = 0), "`nsim` must be a whole number")
  expect_error(simulate(fit, seed = Inf), "`seed` must be a single number or NULL: a whole number")
  expect_error(simulate(fit, use.u = TRUE), "simulate\\(\\) does not take `use.u`")
})

test_that("lme4's generics work on lmer and fr_fit fits with both packages attached, in either order", {
  skip_if_not_installed("lme4")
  checks <- c(
    "m <- lme4::lmer(Reaction ~ Days + (1 | Subject), lme4::sleepstudy)",
    "f <- fr_fit(Reaction ~ Days + (1 | Subject), lme4::sleepstudy)",
    "stopifnot(ngrps(m) == 18, ngrps(f) == 18)",
    "stopifnot(length(fixef(m)) == 2, length(fixef(f)) == 2)",
    "stopifnot(nrow(ranef(m)$Subject) == 18, nrow(ranef(f)$Subject) == 18)",
    "stopifnot(inherits(VarCorr(m), 'VarCorr.merMod'), inherits(VarCorr(f), 'VarCorr.fr_fit'))",
    "stopifnot(!isSingular(m), !isSingular(f))",
    "stopifnot(length(getME(m, 'theta')) == 1, length(getME(f, 'theta')) == 1)",
    "stopifnot(sigma(m) > 0, sigma(f) > 0, nobs(m) == 180, nobs(f) == 180)",
    "stopifnot(length(predict(m)) == 180, length(predict(f)) == 180)",
    "stopifnot(ncol(simulate(m, 2, seed = 1)) == 2, ncol(simulate(f, 2, seed = 1)) == 2)",
    "stopifnot(is.finite(logLik(m)), is.finite(REMLcrit(m)))",
    "stopifnot(inherits(try(logLik(f), silent = TRUE), 'try-error'))",
    "cat('all generics work\\n')"
  )
  # The helper attaches fullrandom first; detach it to attach lme4 first, then fullrandom.
  orders <- list(
    fullrandom_first = "suppressPackageStartupMessages(library(lme4))",
    lme4_first = c("detach('package:fullrandom')", "suppressPackageStartupMessages(library(lme4))",
                   "library(fullrandom)")
  )
  for (order in names(orders)) {
    run <- run_in_fresh_process(c(orders[[order]], checks))
    expect_identical(run$status, 0L, info = paste(order, run$output))
    expect_match(run$output, "all generics work", info = order)
    # Nothing of lme4's is masked by an incompatible object.
    expect_no_match(run$output, "masked", info = order)
  }
})

test_that("method = 'reml' fits equal lmer's REML and ML fits, with the same logLik, AIC and anova", {
  skip_if_not_installed("lme4")
  data(Pastes, package = "lme4")
  for (REML in c(TRUE, FALSE)) {
    fit <- fr_fit(strength ~ 1 + (1 | batch / cask), Pastes, method = "reml", REML = REML)
    ref <- lme4::lmer(strength ~ 1 + (1 | batch / cask), Pastes, REML = REML)
    vc <- as.data.frame(lme4::VarCorr(ref))
    expect_equal(unname(fit$theta[c(vc$grp[-3], "Residual")]), vc$vcov, tolerance = 1e-4)
    expect_equal(as.numeric(logLik(fit)), as.numeric(logLik(ref)), tolerance = 1e-8)
    expect_identical(attr(logLik(fit), "df"), attr(logLik(ref), "df"))
    expect_equal(AIC(fit), AIC(ref), tolerance = 1e-8)
    expect_equal(BIC(fit), BIC(ref), tolerance = 1e-8)
    expect_true(fit$likelihood$converged)
  }
  expect_equal(deviance(fr_fit(strength ~ 1 + (1 | batch / cask), Pastes, method = "reml", REML = FALSE)),
               deviance(lme4::lmer(strength ~ 1 + (1 | batch / cask), Pastes, REML = FALSE)), tolerance = 1e-8)
  expect_error(deviance(fit <- fr_fit(strength ~ 1 + (1 | batch / cask), Pastes, method = "reml")),
               "deviance of a REML fit is not defined")
  m0 <- fr_fit(Reaction ~ 1 + (1 | Subject), lme4::sleepstudy, method = "reml")
  m1 <- fr_fit(Reaction ~ Days + (1 | Subject), lme4::sleepstudy, method = "reml")
  expect_message(a <- anova(m0, m1), "refitting model\\(s\\) with ML")
  r0 <- lme4::lmer(Reaction ~ 1 + (1 | Subject), lme4::sleepstudy)
  r1 <- lme4::lmer(Reaction ~ Days + (1 | Subject), lme4::sleepstudy)
  b <- suppressMessages(anova(r0, r1))
  for (column in c("npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)")) {
    expect_equal(unname(a[[column]]), unname(b[[column]]), tolerance = 1e-7, info = column)
  }
  expect_s3_class(anova(m1), "anova")  # one fit: marginal Wald F tests
  expect_error(anova(fr_fit(Reaction ~ Days + (1 | Subject), lme4::sleepstudy), m1), "method = \"reml\"")
})

test_that("REML is only a switch of method = 'reml'", {
  d <- simulate_archers(seed = 1)
  expect_error(fr_fit(distance ~ bow + (1 | archer), d, REML = FALSE), "`REML` chooses between REML and maximum likelihood")
  expect_error(fr_fit(distance ~ bow + (1 | archer), d, method = "reml", REML = NA), "`REML` must be TRUE or FALSE")
  fit <- fr_fit(distance ~ bow + (1 | archer), d, method = "reml")
  expect_output(print(fit), "fit by REML")
  expect_output(print(fr_fit(distance ~ bow + (1 | archer), d, method = "reml", REML = FALSE)), "maximum likelihood")
  expect_error(logLik(fr_fit(distance ~ bow + (1 | archer), d)), "method = \"reml\"")
})

test_that("the log-likelihood is equivariant in the scale of the response", {
  d <- simulate_crossed(2000, seed = 3)
  for (REML in c(TRUE, FALSE)) {
    a <- fr_fit(y ~ x + (1 | user) + (1 | item), d, method = "reml", REML = REML)
    b <- fr_fit(y ~ x + (1 | user) + (1 | item), transform(d, y = y * 1e10), method = "reml", REML = REML)
    dims <- if (REML) nobs(a) - length(fixef(a)) else nobs(a)
    expect_equal(as.numeric(logLik(b)), as.numeric(logLik(a)) - dims * log(1e10), tolerance = 1e-9)
    expect_equal(b$theta / 1e20, a$theta, tolerance = 1e-8)
  }
})
