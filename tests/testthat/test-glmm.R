# Generalized linear mixed models: families, response forms, errors, methods, and
# agreement with glmer on cbpp.

sim_binomial <- function(n_id = 150, per = 8, trials = 10, sd = 0.8, seed = 1) {
  set.seed(seed)
  d <- data.frame(id = factor(rep(seq_len(n_id), each = per)), x = rnorm(n_id * per))
  u <- rnorm(n_id, 0, sd)
  p <- plogis(-0.5 + 0.5 * d$x + u[d$id])
  d$n <- trials
  d$s <- rbinom(nrow(d), trials, p)
  d$f <- d$n - d$s
  d$prop <- d$s / d$n
  d$b <- rbinom(nrow(d), 1, p)
  d
}

sim_poisson <- function(n_id = 150, per = 8, sd = 0.5, seed = 2) {
  set.seed(seed)
  d <- data.frame(id = factor(rep(seq_len(n_id), each = per)), x = rnorm(n_id * per),
                  t = runif(n_id * per, 0.5, 2))
  u <- rnorm(n_id, 0, sd)
  d$y <- rpois(nrow(d), d$t * exp(0.3 + 0.4 * d$x + u[d$id]))
  d
}

test_that("the binomial response forms give the same fit", {
  d <- sim_binomial()
  a <- fr_fit(cbind(s, f) ~ x + (1 | id), d, family = binomial)
  b <- fr_fit(prop ~ x + (1 | id), d, family = binomial, weights = n)
  c <- fr_fit(cbind(s, n - s) ~ x + (1 | id), d, family = "binomial")
  e <- fr_fit(cbind(s, f) ~ x + (1 | id), d, family = binomial())
  expect_equal(fixef(a), fixef(b), tolerance = 1e-10)
  expect_equal(fixef(a), fixef(c), tolerance = 1e-10)
  expect_equal(fixef(a), fixef(e), tolerance = 1e-10)
  expect_equal(a$theta, b$theta, tolerance = 1e-10)
  expect_s3_class(a, "fr_glmm")
  expect_equal(unname(fixef(a)), c(-0.5, 0.5), tolerance = 0.15)
  expect_equal(sqrt(unname(a$theta)), 0.8, tolerance = 0.15)
})

test_that("0/1, logical and factor responses fit Bernoulli data", {
  d <- sim_binomial(n_id = 300, per = 10)
  a <- fr_fit(b ~ x + (1 | id), d, family = binomial)
  d$lb <- d$b == 1
  d$fb <- factor(ifelse(d$b == 1, "yes", "no"))
  expect_equal(fixef(fr_fit(lb ~ x + (1 | id), d, family = binomial)), fixef(a))
  expect_equal(fixef(fr_fit(fb ~ x + (1 | id), d, family = binomial)), fixef(a))
  expect_equal(unname(fixef(a)[2]), 0.5, tolerance = 0.2)
  expect_equal(sqrt(unname(a$theta)), 0.8, tolerance = 0.3)
})

test_that("probit is fitted", {
  d <- sim_binomial()
  fit <- fr_fit(cbind(s, f) ~ x + (1 | id), d, family = binomial(link = "probit"))
  expect_identical(fit$family$link, "probit")
  expect_true(all(is.finite(fixef(fit))))
})

test_that("family() returns the family and link a GLMM was fitted with, as glmer's does", {
  d <- sim_binomial()
  probit <- family(fr_fit(cbind(s, f) ~ x + (1 | id), d, family = binomial(link = "probit")))
  expect_s3_class(probit, "family")
  expect_identical(c(probit$family, probit$link), c("binomial", "probit"))
  counts <- family(fr_fit(y ~ x + offset(log(t)) + (1 | id), sim_poisson(), family = poisson))
  expect_identical(c(counts$family, counts$link), c("poisson", "log"))
})

test_that("Poisson takes offsets in the formula or as an argument", {
  d <- sim_poisson()
  a <- fr_fit(y ~ x + offset(log(t)) + (1 | id), d, family = poisson)
  b <- fr_fit(y ~ x + (1 | id), d, family = poisson(link = "log"), offset = log(t))
  expect_equal(fixef(a), fixef(b), tolerance = 1e-10)
  expect_lt(max(abs(fixef(a) - c(0.3, 0.4))), 0.2)
  expect_equal(sqrt(unname(a$theta)), 0.5, tolerance = 0.2)
  # Predictions carry the offset.
  expect_equal(unname(predict(a, type = "response")), unname(fitted(a)))
  expect_equal(unname(predict(a, newdata = d[1:5, ], type = "link")), unname(predict(a)[1:5]),
               tolerance = 1e-10)
})

test_that("bad input is an error that says what is wrong", {
  d <- sim_binomial(n_id = 20, per = 4)
  d$bad <- d$prop * 2
  # A slope term would otherwise be fitted as its intercept alone.
  expect_error(fr_fit(cbind(s, n - s) ~ x + (x | id), d, family = binomial), "random slopes are fitted for gaussian")
  expect_error(fr_fit(bad ~ x + (1 | id), d, family = binomial, weights = n), "outside \\[0, 1\\]")
  d$z <- 0
  expect_error(fr_fit(cbind(z, n) ~ x + (1 | id), d, family = binomial), "all 0")
  d$n0 <- d$n
  d$n0[3] <- 0
  expect_error(fr_fit(s / n0 ~ x + (1 | id), d[-3, ][c(1, 1:20), ], family = binomial, weights = n0),
               NA)
  expect_error(fr_fit(I(s / n) ~ x + (1 | id), d, family = binomial, weights = n0), "0 trials")
  expect_warning(try(fr_fit(prop ~ x + (1 | id), d, family = binomial, weights = rep(3.5, nrow(d))),
                     silent = TRUE), "non-integer")
  p <- sim_poisson(n_id = 20, per = 4)
  p$neg <- p$y
  p$neg[1] <- -1
  expect_error(fr_fit(neg ~ x + (1 | id), p, family = poisson), "negative")
  p$half <- p$y + 0.5
  expect_error(fr_fit(half ~ x + (1 | id), p, family = poisson), "non-integer")
  expect_error(fr_fit(y ~ x + (1 | id), p, family = Gamma), "not supported")
  expect_error(fr_fit(y ~ x + (1 | id), p, family = poisson(link = "identity")), "not supported")
  expect_error(fr_fit(y ~ x + (1 | id), p, family = 3), "family as glm\\(\\) takes it")
  expect_error(fr_fit(y ~ x + (1 | id), p, family = poisson, weights = t), "not supported for the Poisson")
})

test_that("a level whose responses are all 0 gets a finite mode", {
  d <- sim_binomial(n_id = 50, per = 6)
  d$s[d$id == "1"] <- 0
  d$f <- d$n - d$s
  fit <- fr_fit(cbind(s, f) ~ x + (1 | id), d, family = binomial)
  expect_true(is.finite(ranef(fit)$id["1", 1]))
  expect_lt(ranef(fit)$id["1", 1], 0)
})

test_that("methods follow glmer's layout", {
  d <- sim_binomial()
  fit <- fr_fit(cbind(s, f) ~ x + (1 | id), d, family = binomial)
  expect_output(print(fit), "Family: binomial  \\( logit \\)")
  expect_output(print(summary(fit)), "z value")
  vc <- as.data.frame(VarCorr(fit))
  expect_identical(vc$grp, "id")
  expect_equal(dim(vcov(fit)), c(2L, 2L))
  expect_true(all(diag(vcov(fit)) > 0))
  expect_equal(length(fitted(fit)), nrow(d))
  expect_true(all(fitted(fit) > 0 & fitted(fit) < 1))
  for (type in c("deviance", "pearson", "response", "working")) {
    expect_length(residuals(fit, type = type), nrow(d))
  }
  expect_equal(unname(residuals(fit, type = "response")), unname(d$prop - fitted(fit)))
  expect_equal(unname(predict(fit, type = "response")), unname(fitted(fit)))
  new <- data.frame(x = 0, id = c("1", "new"))
  expect_error(predict(fit, new), "new level")
  p <- predict(fit, new, allow.new.levels = TRUE)
  expect_equal(unname(p[2]), unname(fixef(fit)[1]))
  expect_equal(unname(predict(fit, new, re.form = NA)), rep(unname(fixef(fit)[1]), 2))
  ci <- confint(fit)
  expect_equal(dim(ci), c(3L, 2L))
  expect_true(all(ci[, 1] < ci[, 2]))
  sims <- simulate(fit, nsim = 2, seed = 1)
  expect_equal(dim(sims), c(nrow(d), 2L))
  expect_equal(nrow(coef(fit)$id), nlevels(d$id))
  if (requireNamespace("generics", quietly = TRUE)) {
    td <- generics::tidy(fit, effects = c("fixed", "ran_pars"))
    expect_false("Residual" %in% td$group)
  }
})

test_that("method = \"efficient\" is the marginal likelihood: glmer(nAGQ = 25) on one term", {
  skip_if_not_installed("lme4")
  cbpp <- lme4::cbpp
  form <- cbind(incidence, size - incidence) ~ period + (1 | herd)
  # The default ("auto") is the likelihood for one term.
  fit <- fr_fit(form, cbpp, family = binomial)
  expect_identical(fit$method, "efficient")
  expect_equal(fixef(fit), fixef(fr_fit(form, cbpp, family = binomial, method = "efficient")), tolerance = 1e-12)
  expect_lte(fit$iterations[["newton"]], 8)
  expect_true(fit$exact)
  g <- lme4::glmer(form, cbpp, family = binomial, nAGQ = 25)
  expect_equal(unname(fixef(fit)), unname(lme4::fixef(g)), tolerance = 1e-4)
  expect_equal(sqrt(fit$theta[["herd"]]), as.data.frame(lme4::VarCorr(g))$sdcor, tolerance = 1e-4)
  expect_equal(unname(sqrt(diag(vcov(fit)))), unname(sqrt(diag(as.matrix(vcov(g))))), tolerance = 1e-3)
  expect_output(print(summary(fit)), "inverse observed information")
  expect_output(print(fit), "fit by maximum likelihood \\(per-level marginal likelihoods by quadrature, method = \"efficient\"\\)")
  # Poisson counts with a large sd, where the moment equations are biased.
  d <- sim_poisson(n_id = 40, per = 6, sd = 1.2, seed = 3)
  fit <- fr_fit(y ~ x + offset(log(t)) + (1 | id), d, family = poisson, method = "efficient")
  g <- lme4::glmer(y ~ x + offset(log(t)) + (1 | id), d, family = poisson, nAGQ = 25)
  expect_equal(unname(fixef(fit)), unname(lme4::fixef(g)), tolerance = 1e-4)
  expect_equal(sqrt(fit$theta[["id"]]), as.data.frame(lme4::VarCorr(g))$sdcor, tolerance = 1e-4)
  expect_error(fr_fit(y ~ x + (1 | id), d, family = poisson, method = "reml"), "\"efficient\" or \"moments\"")
  expect_error(fr_fit(y ~ x + (1 | id), d, method = "auto"), "method = \"auto\" is for GLMMs")
  # The Laplace fit is the default for crossed terms of this size, and print says which.
  b <- sim_binomial(n_id = 30, per = 6)
  b$item <- factor(rep_len(1:6, nrow(b)))
  crossed <- fr_fit(cbind(s, f) ~ x + (1 | id) + (1 | item), b, family = binomial)
  expect_identical(crossed$method, "laplace")
  crossed <- fr_fit(cbind(s, f) ~ x + (1 | id) + (1 | item), b, family = binomial, method = "moments")
  expect_output(print(crossed), "fit by the method of moments \\(method = \"moments\"\\)")
  # The options that steer the moments are refused by the likelihood fit, not ignored.
  withr::with_options(list(fullrandom.glmm_working_covariance = FALSE), {
    expect_error(fr_fit(y ~ x + offset(log(t)) + (1 | id), d, family = poisson),
                 "option `fullrandom.glmm_working_covariance` steers the moment estimator")
    expect_identical(fr_fit(y ~ x + offset(log(t)) + (1 | id), d, family = poisson, method = "moments")$method,
                     "moments")
  })
  withr::with_options(list(fullrandom.glmm_information_weights = "yes"), {
    expect_error(fr_fit(y ~ x + offset(log(t)) + (1 | id), d, family = poisson, method = "moments"),
                 "option `fullrandom.glmm_information_weights` must be TRUE or FALSE")
  })
})

test_that("the likelihood fit converges on the click-through design, to the exact marginal likelihood", {
  # Users' sd 5 on a baseline logit of -4.5: most users never click, and their
  # integrands have a Gaussian tail on one side and a cliff on the other. The reference is
  # the maximum of the marginal likelihood with each user's integral by integrate()
  # (rel.tol 1e-11): a Newton step on its central differences (step 2e-3 in the intercept,
  # display and log sd) from fr_fit's estimate gives intercept -4.69753, display 0.515725,
  # sd 5.30159 (standard errors 0.24, 0.084 and 0.24). glmer's adaptive Gauss-Hermite is not
  # converged in its nodes here (nAGQ = 10: -5.250, 0.5228, 5.977; nAGQ = 25: -4.763,
  # 0.5172, 5.397).
  clicks <- simulate_clicks(n_users = 1000, seed = 1)
  fit <- fr_fit(cbind(clicks, impressions - clicks) ~ display + (1 | user), clicks, family = binomial)
  expect_identical(fit$method, "efficient")
  expect_lte(fit$iterations[["newton"]], 10)
  expect_equal(unname(fixef(fit)), c(-4.69753, 0.515725), tolerance = 1e-4)
  expect_equal(sqrt(fit$theta[["user"]]), 5.30159, tolerance = 1e-4)
})

test_that("the crossed likelihood fit with repeated cells agrees with glmer, standard errors included", {
  skip_if_not_installed("lme4")
  # 60 users x 20 items, 0 to 3 rows a pair: each component integrates the other term's
  # effect cell by cell. vcov() is the model-based covariance at the estimates; the
  # composite's sandwich overstates the intercept's standard error (about 3x here).
  set.seed(11)
  cells <- expand.grid(user = 1:60, item = 1:20)
  d <- cells[rep(seq_len(nrow(cells)), sample(0:3, nrow(cells), replace = TRUE)), ]
  u <- rnorm(60)
  v <- rnorm(20, 0, 0.6)
  d$x <- rnorm(nrow(d))
  d$y <- rbinom(nrow(d), 1, plogis(-1 + 0.5 * d$x + u[d$user] + v[d$item]))
  d$user <- factor(d$user)
  d$item <- factor(d$item)
  form <- y ~ x + (1 | user) + (1 | item)
  fit <- fr_fit(form, d, family = binomial, method = "efficient")
  g <- suppressWarnings(lme4::glmer(form, d, family = binomial, control = lme4::glmerControl(optimizer = "bobyqa")))
  se_g <- sqrt(diag(as.matrix(vcov(g))))
  expect_lt(max(abs(fixef(fit) - lme4::fixef(g)) / se_g), 0.5)
  vg <- as.data.frame(lme4::VarCorr(g))
  expect_equal(unname(sqrt(fit$theta[vg$grp])), vg$sdcor, tolerance = 0.15)
  ratio <- sqrt(diag(vcov(fit))) / se_g
  expect_true(all(ratio > 0.8 & ratio < 1.25), info = paste(round(ratio, 3), collapse = " "))
  expect_gt(sqrt(fit$vcov_sandwich[1, 1]) / se_g[[1]], 1.5)
  expect_output(print(summary(fit)), "standard errors: model-based quasi-score at the estimates")
})

test_that("cbpp agrees with glmer", {
  skip_if_not_installed("lme4")
  cbpp <- lme4::cbpp
  fit <- fr_fit(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, family = binomial)
  g <- suppressWarnings(lme4::glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,
                                    family = binomial))
  se <- sqrt(diag(as.matrix(vcov(g))))
  expect_true(all(abs(fixef(fit) - lme4::fixef(g)) < 1.5 * se))
  sd_g <- as.data.frame(lme4::VarCorr(g))$sdcor
  expect_lt(abs(sqrt(fit$theta[["herd"]]) / sd_g - 1), 0.15)
  expect_gt(cor(ranef(fit)$herd[[1]], lme4::ranef(g)$herd[[1]]), 0.98)
})

test_that("an observation-level term is identified for Poisson counts", {
  d <- sim_poisson(n_id = 100, per = 10)
  d$obs <- factor(seq_len(nrow(d)))
  fit <- fr_fit(y ~ x + offset(log(t)) + (1 | id) + (1 | obs), d, family = poisson)
  expect_identical(fit$statistic[["obs"]], "within-row")
  expect_true(all(is.finite(fit$theta)))
  b <- sim_binomial(n_id = 30, per = 4)
  b$obs <- factor(seq_len(nrow(b)))
  expect_error(fr_fit(b ~ x + (1 | id) + (1 | obs), b, family = binomial), "cannot be estimated")
})

test_that("the fixed effects come from the working covariance, with the unweighted equations as an option", {
  d <- sim_poisson(n_id = 60, per = 8, sd = 1.2, seed = 5)
  fit <- fr_fit(y ~ x + offset(log(t)) + (1 | id), d, family = poisson, method = "moments")
  old <- options(fullrandom.glmm_working_covariance = FALSE)
  on.exit(options(old))
  unweighted <- fr_fit(y ~ x + offset(log(t)) + (1 | id), d, family = poisson, method = "moments")
  # The variances are the same moment estimates; the fixed effects differ.
  expect_equal(fit$theta, unweighted$theta, tolerance = 1e-8)
  expect_false(isTRUE(all.equal(fixef(fit), fixef(unweighted), tolerance = 1e-4)))
  expect_equal(unname(fixef(fit)), c(0.3, 0.4), tolerance = 0.3)
  expect_gt(fit$iterations[["working"]], 0)
  expect_identical(unweighted$iterations[["working"]], 0L)
  # vcov() is the model-based covariance, the sandwich is kept beside it.
  expect_false(isTRUE(all.equal(vcov(fit), fit$vcov_sandwich)))
  expect_true(all(diag(vcov(fit)) > 0))
  expect_identical(vcov(unweighted), unweighted$vcov_sandwich)
  # The weighted slope is at least as precise here (row-level covariate, large clusters).
  expect_lt(vcov(fit)[2, 2], vcov(unweighted)[2, 2])
  expect_output(print(summary(fit)), "model-based quasi-score")
})

test_that("standard errors in a crossed design follow the sampling spread", {
  skip_on_cran()
  # Before the pair statistics entered the sandwich by their row projections, the item
  # variance's standard error was about 6 times its sampling sd on such a design and the
  # slope's 1.4 times.
  fits <- lapply(1:40, function(s) {
    set.seed(s)
    d <- expand.grid(user = factor(1:40), item = factor(1:20))
    d$x <- rnorm(nrow(d))
    d$y <- rbinom(nrow(d), 1, plogis(-0.5 + 0.5 * d$x + rnorm(40)[d$user] + rnorm(20, 0, 0.5)[d$item]))
    fit <- suppressMessages(fr_fit(y ~ x + (1 | user) + (1 | item), d, family = binomial, threads = 1))
    c(b = fixef(fit)[["x"]], se = sqrt(vcov(fit)[2, 2]), theta = fit$theta,
      se_theta = sqrt(diag(fit$vcov_theta)))
  })
  r <- do.call(rbind, fits)
  expect_gt(mean(r[, "se"]) / sd(r[, "b"]), 0.8)
  expect_lt(mean(r[, "se"]) / sd(r[, "b"]), 1.3)
  for (term in c("user", "item")) {
    ratio <- mean(r[, paste0("se_theta.", term)]) / sd(r[, paste0("theta.", term)])
    expect_gt(ratio, 0.6)
    expect_lt(ratio, 1.6)
  }
})

test_that("ranef(condVar = TRUE) gives glmer's conditional variances at glmer's estimates", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(cbind(incidence, size - incidence) ~ period + (1 | herd), lme4::cbpp, family = binomial)
  ref <- lme4::glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), lme4::cbpp, family = binomial)
  ref_ranef <- lme4::ranef(ref, condVar = TRUE)
  at_ref <- fit
  at_ref$coefficients[] <- lme4::fixef(ref)
  at_ref$theta[] <- unlist(lme4::VarCorr(ref))
  at_ref$ranef_values$herd[] <- ref_ranef$herd[, 1]
  cv <- fullrandom:::glmm_conditional_variances(at_ref)
  expect_true(cv$exact)
  expect_lt(max(abs(cv$variance$herd / attr(ref_ranef$herd, "postVar")[1, 1, ] - 1)), 1e-3)
  # At fr_fit's own estimates: the attribute lme4 uses, and condsd in the tidy frame.
  re <- ranef(fit, condVar = TRUE)
  post <- attr(re$herd, "postVar")
  expect_equal(dim(post), c(1L, 1L, 15L))
  expect_true(all(post > 0 & post < fit$theta[["herd"]]))
  expect_equal(as.data.frame(re)$condsd, sqrt(post[1, 1, ]))
})

test_that("the crossed conditional variances match a dense inverse", {
  set.seed(6)
  d <- expand.grid(user = factor(1:12), item = factor(1:8))
  d <- d[sample(nrow(d), 70), ]
  d$y <- rpois(nrow(d), exp(0.5 + rnorm(12, 0, 0.8)[d$user] + rnorm(8, 0, 0.6)[d$item]))
  fit <- fr_fit(y ~ 1 + (1 | user) + (1 | item), d, family = poisson)
  expect_true(all(fit$theta > 0))
  Z <- cbind(stats::model.matrix(~ 0 + user, d), stats::model.matrix(~ 0 + item, d))
  eta <- fit$linear.predictors
  C <- crossprod(Z * exp(eta), Z) + diag(rep(1 / fit$theta, c(12, 8)))
  dense <- unname(diag(solve(C)))
  re <- ranef(fit, condVar = TRUE)
  expect_equal(c(attr(re$user, "postVar")), dense[1:12], tolerance = 1e-8)
  expect_equal(c(attr(re$item, "postVar")), dense[13:20], tolerance = 1e-8)
})

test_that("GLMM fits refuse what needs a linear model, with a sentence", {
  fit <- fr_fit(cbind(incidence, size - incidence) ~ period + (1 | herd), lme4::cbpp, family = binomial)
  expect_error(fr_distribution(fit, "herd"), "linear mixed model")
  expect_error(ranef(fit, type = "npmle"), "linear mixed model")
  expect_error(logLik(fit), "fit with method = \"laplace\"")
  expect_equal(unname(weights(fit)), lme4::cbpp$size)
  w <- weights(fit, type = "working")
  mu <- fitted(fit)
  expect_equal(unname(w), lme4::cbpp$size * unname(mu * (1 - mu)))
})

test_that("confint(method = \"boot\") is the parametric bootstrap, reproducible by seed", {
  fit <- fr_fit(cbind(incidence, size - incidence) ~ period + (1 | herd), lme4::cbpp, family = binomial)
  ci <- confint(fit, method = "boot", nsim = 100, seed = 1)
  expect_equal(dim(ci), c(5L, 2L))
  expect_equal(rownames(ci), c(".sig01", names(fixef(fit))))
  expect_true(all(ci[, 1] < ci[, 2]))
  expect_true(all(ci[-1, 1] < fixef(fit) & fixef(fit) < ci[-1, 2]))
  expect_identical(ci, confint(fit, method = "boot", nsim = 100, seed = 1))
  expect_error(confint(fit, method = "boot", nsim = 10), "too few")
  expect_error(confint(fit, nsim = 10, type = "perc"), "does not take `type`")
})

test_that("fitted values, residuals and predictions are named by rows as glmer names them", {
  skip_if_not_installed("lme4")
  cbpp <- lme4::cbpp
  rownames(cbpp) <- NULL  # automatic row names
  form <- cbind(incidence, size - incidence) ~ period + (1 | herd)
  fit <- fr_fit(form, cbpp, family = binomial)
  g <- lme4::glmer(form, cbpp, family = binomial)
  expect_identical(names(fitted(fit)), names(fitted(g)))
  expect_identical(names(residuals(fit)), names(residuals(g)))
  expect_identical(names(predict(fit)), names(predict(g)))
  kept <- cbpp[-(2:3), ]
  fit_kept <- fr_fit(form, kept, family = binomial)
  expect_identical(names(fitted(fit_kept)), rownames(kept))
})
