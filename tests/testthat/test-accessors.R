# Accessors: fixef, vcov, sigma, nobs, ngrps, formula, model.frame, terms,
# model.matrix, and update() through the stored call.

# A small random-intercept data set with a covariate and a fixed factor.
accessor_data <- function(seed = 11, n_groups = 8, per_group = 6) {
  set.seed(seed)
  n <- n_groups * per_group
  d <- data.frame(
    g = factor(rep(sprintf("g%02d", seq_len(n_groups)), each = per_group)),
    x = rnorm(n),
    f = factor(rep(c("lo", "mid", "hi"), length.out = n), levels = c("lo", "mid", "hi"))
  )
  d$y <- 1 + 0.5 * d$x + c(lo = 0, mid = 1, hi = -1)[as.character(d$f)] +
    rnorm(n_groups, sd = 1.5)[d$g] + rnorm(n)
  d
}

test_that("fixef is the GLS coefficient vector, named by column", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  expect_identical(fixef(fit), fit$coefficients)
  expect_named(fixef(fit), c("(Intercept)", "Days"))
  # nlme's generic dispatches to the same method.
  expect_identical(nlme::fixef(fit), fit$coefficients)
  # Balanced design: the moment estimates equal REML's, so the GLS fixed effects agree.
  lfit <- lme4::lmer(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  expect_equal(fixef(fit), lme4::fixef(lfit), tolerance = 1e-6)
})

test_that("fixef(add.dropped = TRUE) shows an aliased column as NA", {
  d <- accessor_data()
  d$x2 <- 2 * d$x
  expect_message(
    fit <- fr_fit(y ~ x + x2 + (1 | g), data = d),
    "rank deficient so dropping 1 column / coefficient: x2"
  )
  expect_named(fixef(fit), c("(Intercept)", "x"))
  all <- fixef(fit, add.dropped = TRUE)
  expect_named(all, c("(Intercept)", "x", "x2"))
  expect_true(is.na(all[["x2"]]))
  expect_equal(all[c("(Intercept)", "x")], fixef(fit))
  # The same model without the aliased column has the same estimates.
  plain <- fr_fit(y ~ x + (1 | g), data = d)
  expect_equal(fixef(fit), fixef(plain), tolerance = 1e-10)
  # The other accessors agree with the kept columns.
  expect_identical(colnames(model.matrix(fit)), c("(Intercept)", "x"))
  expect_equal(fitted(fit), fitted(plain), tolerance = 1e-10)
  expect_equal(residuals(fit), d$y - fitted(fit), tolerance = 1e-12, ignore_attr = TRUE)
  expect_identical(dimnames(vcov(fit)), list(c("(Intercept)", "x"), c("(Intercept)", "x")))
})

test_that("vcov is symmetric, positive definite, and carries the correlation on request", {
  d <- accessor_data()
  fit <- fr_fit(y ~ x + f + (1 | g), data = d)
  v <- vcov(fit)
  expect_identical(dimnames(v), list(names(fixef(fit)), names(fixef(fit))))
  expect_equal(v, t(v), tolerance = 1e-12)
  expect_true(all(eigen(v, symmetric = TRUE, only.values = TRUE)$values > 0))
  expect_null(attr(v, "correlation"))
  vc <- vcov(fit, correlation = TRUE)
  expect_equal(attr(vc, "correlation"), stats::cov2cor(v))
  expect_equal(unname(diag(attr(vc, "correlation"))), rep(1, ncol(v)))
  # The matrix itself is unchanged by correlation = TRUE.
  expect_equal(unclass(vc)[seq_along(v)], v[seq_along(v)])
})

test_that("vcov agrees with lmer's on a balanced design", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  lfit <- lme4::lmer(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  expect_equal(vcov(fit), as.matrix(vcov(lfit)), tolerance = 1e-4)
})

test_that("sigma is the square root of the residual variance in VarCorr", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  vc <- as.data.frame(VarCorr(fit))
  expect_equal(sigma(fit)^2, vc$vcov[vc$grp == "Residual"])
  expect_equal(sigma(fit), attr(VarCorr(fit), "sc"))
  expect_equal(sigma(fit)^2, fit$theta[["Residual"]])
  expect_equal(sigma(fit),
               sigma(lme4::lmer(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)),
               tolerance = 1e-4)
})

test_that("nobs counts the rows used, after NA removal", {
  d <- accessor_data()
  expect_identical(nobs(fr_fit(y ~ x + (1 | g), data = d)), nrow(d))
  d$y[c(2, 9)] <- NA
  d$x[17] <- NA
  d$g[30] <- NA
  fit <- fr_fit(y ~ x + (1 | g), data = d)
  expect_identical(nobs(fit), nrow(d) - 4L)
  fit_ex <- fr_fit(y ~ x + (1 | g), data = d, na.action = na.exclude)
  expect_identical(nobs(fit_ex), nrow(d) - 4L)
  # A column not in the model does not drop rows.
  d$unused <- NA
  expect_identical(nobs(fr_fit(y ~ x + (1 | g), data = d)), nrow(d) - 4L)
})

test_that("ngrps gives the number of levels per term, also through lme4's generic", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  expect_identical(ngrps(fit), c(plate = 24L, sample = 6L))
  expect_identical(fullrandom::ngrps(fit), c(plate = 24L, sample = 6L))
  expect_true(requireNamespace("lme4", quietly = TRUE))
  expect_identical(lme4::ngrps(fit), c(plate = 24L, sample = 6L))
  lfit <- lme4::lmer(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  expect_equal(ngrps(fit), lme4::ngrps(lfit))  # lme4 returns doubles

  nested <- fr_fit(strength ~ 1 + (1 | batch/cask), data = lme4::Pastes)
  expect_identical(ngrps(nested), c("cask:batch" = 30L, batch = 10L))
})

test_that("ngrps counts only the levels left after subset and NA removal", {
  d <- accessor_data()
  d$g[d$g == "g01"] <- NA
  fit <- fr_fit(y ~ x + (1 | g), data = d, subset = g != "g02")
  expect_identical(ngrps(fit), c(g = 6L))
  expect_identical(nobs(fit), nrow(d) - 12L)
})

test_that("formula, terms and model.frame describe the fitted model", {
  skip_if_not_installed("lme4")
  form <- Reaction ~ Days + (1 | Subject)
  fit <- fr_fit(form, data = lme4::sleepstudy)
  expect_identical(formula(fit), form)

  tt <- terms(fit)
  expect_s3_class(tt, "terms")
  expect_identical(attr(tt, "term.labels"), "Days")
  expect_identical(attr(tt, "response"), 1L)
  expect_identical(attr(tt, "intercept"), 1L)
  expect_identical(deparse1(stats::formula(tt)), "Reaction ~ Days")

  mf <- model.frame(fit)
  expect_s3_class(mf, "data.frame")
  expect_identical(names(mf), c("Reaction", "Days", "Subject"))
  expect_identical(nrow(mf), nobs(fit))
  expect_equal(mf$Reaction, lme4::sleepstudy$Reaction)
})

test_that("model.frame reflects subset and na.action", {
  d <- accessor_data()
  d$x[5] <- NA
  fit <- fr_fit(y ~ x + (1 | g), data = d, subset = f != "hi")
  mf <- model.frame(fit)
  keep <- d$f != "hi" & !is.na(d$x)
  expect_identical(nrow(mf), sum(keep))
  expect_identical(rownames(mf), rownames(d)[keep])
  expect_equal(mf$y, d$y[keep])
  expect_identical(nobs(fit), sum(keep))
})

test_that("model.matrix times fixef plus the random effects gives the fitted values", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  X <- model.matrix(fit)
  expect_identical(dim(X), c(144L, 1L))
  expect_identical(colnames(X), "(Intercept)")
  mf <- model.frame(fit)
  re <- ranef(fit)
  by_level <- re$plate[as.character(mf$plate), "(Intercept)"] +
    re$sample[as.character(mf$sample), "(Intercept)"]
  expect_equal(unname(drop(X %*% fixef(fit)) + by_level), unname(fitted(fit)), tolerance = 1e-10)
})

test_that("model.matrix expands factors with the fit's contrasts", {
  d <- accessor_data()
  fit <- fr_fit(y ~ x + f + (1 | g), data = d)
  X <- model.matrix(fit)
  expect_identical(colnames(X), c("(Intercept)", "x", "fmid", "fhi"))
  expect_identical(colnames(X), names(fixef(fit)))
  expect_equal(unname(X[, "fhi"]), as.numeric(d$f == "hi"))
  expect_equal(unname(X[, "x"]), d$x)
  re <- ranef(fit)$g
  expect_equal(unname(drop(X %*% fixef(fit)) + re[as.character(d$g), "(Intercept)"]),
               unname(fitted(fit)), tolerance = 1e-10)

  helmert <- fr_fit(y ~ x + f + (1 | g), data = transform(d, f = `contrasts<-`(f, value = contr.helmert(3))))
  Xh <- model.matrix(helmert)
  expect_identical(colnames(Xh), c("(Intercept)", "x", "f1", "f2"))
  expect_equal(unname(Xh[d$f == "hi", "f2"][1]), 2)
  # Same column space: same fitted values.
  expect_equal(unname(fitted(helmert)), unname(fitted(fit)), tolerance = 1e-8)
})

test_that("update refits with a changed formula", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  smaller <- update(fit, . ~ . - Days)
  expect_s3_class(smaller, "fr_fit")
  expect_named(fixef(smaller), "(Intercept)")
  expect_equal(formula(smaller), Reaction ~ (1 | Subject), ignore_formula_env = TRUE)
  direct <- fr_fit(Reaction ~ 1 + (1 | Subject), data = lme4::sleepstudy)
  expect_equal(fixef(smaller), fixef(direct))
  expect_equal(smaller$theta, direct$theta)
  # In a balanced design the intercept is the grand mean.
  expect_equal(fixef(smaller)[["(Intercept)"]], mean(lme4::sleepstudy$Reaction))
})

test_that("update refits with changed data", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  early <- subset(lme4::sleepstudy, Days < 5)
  refit <- update(fit, data = early)
  expect_identical(nobs(refit), 90L)
  direct <- fr_fit(Reaction ~ Days + (1 | Subject), data = early)
  expect_equal(fixef(refit), fixef(direct))
  expect_equal(refit$theta, direct$theta)
  expect_false(isTRUE(all.equal(fixef(refit), fixef(fit))))
  # ... and with a subset argument.
  sub <- update(fit, subset = Days < 5)
  expect_equal(fixef(sub), fixef(direct))
})

test_that("model.frame() and model.matrix() of a fit from files give the same clear error", {
  dir <- withr::local_tempdir()
  set.seed(9)
  d <- data.frame(y = rnorm(600), x = rnorm(600), user = rep(1:30, 20))
  paths <- file.path(dir, c("a.rds", "b.rds"))
  saveRDS(d[1:300, ], paths[[1]])
  saveRDS(d[301:600, ], paths[[2]])
  fit <- fr_fit(y ~ x + (1 | user), paths)
  expect_error(model.frame(fit), "the model frame and model matrix are not kept by fits from a list")
  expect_error(model.matrix(fit), "the model frame and model matrix are not kept by fits from a list")
})

test_that("arguments the accessors do not use are refused, not ignored", {
  fit <- fr_fit(distance ~ bow + (1 | archer), data = simulate_archers(seed = 1))
  expect_error(fixef(fit, drop = TRUE), "^fixef\\(\\) does not take `drop` \\(see \\?fixef.fr_fit")
  expect_error(vcov(fit, full = TRUE), "vcov\\(\\) does not take `full`")
  expect_error(sigma(fit, 2), "sigma\\(\\) does not take an unnamed argument")
  expect_error(ngrps(fit, foo = 1), "ngrps\\(\\) does not take `foo`")
  expect_error(formula(fit, fixed.only = TRUE), "formula\\(\\) does not take `fixed.only`")
  expect_error(terms(fit, random.only = TRUE), "terms\\(\\) does not take `random.only`")
  expect_error(model.matrix(fit, type = "random"), "model.matrix\\(\\) does not take `type`")
  expect_error(model.frame(fit, fixed.only = TRUE), "model.frame\\(\\) does not take `fixed.only`")
  expect_error(df.residual(fit, foo = 1), "df.residual\\(\\) does not take `foo`")
  expect_identical(nobs(fit, use.fallback = TRUE), nobs(fit))
})
