# Predicted random effects: ranef(), its print and as.data.frame() methods, and coef().

test_that("ranef has lme4's structure", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  re <- ranef(fit)
  expect_s3_class(re, "ranef.fr_fit")
  expect_named(re, c("plate", "sample"))
  for (k in names(re)) {
    expect_s3_class(re[[k]], "data.frame")
    expect_identical(names(re[[k]]), "(Intercept)")
    expect_identical(rownames(re[[k]]), levels(lme4::Penicillin[[k]]))
    expect_type(re[[k]][["(Intercept)"]], "double")
  }
  expect_identical(vapply(re, nrow, 1L), ngrps(fit))
  # nlme's generic (which lme4 re-exports) dispatches to the same method.
  expect_identical(nlme::ranef(fit), re)
  # The values are the stored BLUPs.
  expect_equal(re$sample[["(Intercept)"]], unname(fit$ranef_values$sample))
})

test_that("ranef matches lme4 on Penicillin (balanced, so the components equal REML's)", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  lfit <- lme4::lmer(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  ours <- ranef(fit)
  theirs <- lme4::ranef(lfit)
  expect_identical(names(ours), names(theirs))
  for (k in names(theirs)) {
    expect_identical(rownames(ours[[k]]), rownames(theirs[[k]]))
    expect_identical(names(ours[[k]]), names(theirs[[k]]))
    expect_equal(ours[[k]][["(Intercept)"]], theirs[[k]][["(Intercept)"]], tolerance = 1e-4)
  }
})

test_that("nested terms are labelled as lme4 labels them", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(strength ~ 1 + (1 | batch/cask), data = lme4::Pastes)
  lfit <- lme4::lmer(strength ~ 1 + (1 | batch/cask), data = lme4::Pastes)
  ours <- ranef(fit)
  theirs <- lme4::ranef(lfit)
  expect_identical(names(ours), c("cask:batch", "batch"))
  expect_identical(names(ours), names(theirs))
  expect_identical(rownames(ours[["cask:batch"]]), rownames(theirs[["cask:batch"]]))
  expect_true("a:A" %in% rownames(ours[["cask:batch"]]))
  for (k in names(theirs)) {
    expect_equal(ours[[k]][["(Intercept)"]], theirs[[k]][["(Intercept)"]], tolerance = 1e-4)
  }
})

test_that("predictions of a single term are shrunk level means of the residuals", {
  # One term, intercept only: u_g = n_g / (n_g + s2 / s2_g) * (mean_g(y) - b).
  set.seed(21)
  g <- factor(rep(letters[1:7], times = c(3, 4, 5, 6, 7, 8, 9)))
  y <- 10 + rnorm(7, sd = 2)[g] + rnorm(length(g))
  d <- data.frame(y = y, g = g)
  fit <- fr_fit(y ~ 1 + (1 | g), data = d)
  lambda <- fit$theta[["Residual"]] / fit$theta[["g"]]
  n_g <- as.vector(table(g))
  want <- n_g / (n_g + lambda) * (as.vector(tapply(y, g, mean)) - fixef(fit)[[1]])
  expect_equal(ranef(fit)$g[["(Intercept)"]], want, tolerance = 1e-8)
  expect_identical(rownames(ranef(fit)$g), letters[1:7])
})

test_that("a term estimated at zero variance has all predictions zero", {
  d <- boundary_design()
  expect_message(fit <- fr_fit(y ~ 1 + (1 | g) + (1 | h), data = d), "boundary")
  expect_identical(fit$theta[["h"]], 0)
  expect_identical(ranef(fit)$h[["(Intercept)"]], rep(0, 8))
  expect_true(any(ranef(fit)$g[["(Intercept)"]] != 0))
})

test_that("print.ranef.fr_fit prints the list of data frames and returns invisibly", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  re <- ranef(fit)
  out <- capture.output(res <- withVisible(print(re)))
  expect_false(res$visible)
  expect_identical(res$value, re)
  expect_true(all(c("$plate", "$sample") %in% out))
  expect_false(any(grepl("attr(,\"class\")", out, fixed = TRUE)))
  expect_identical(out, capture.output(print(unclass(re))))
})

test_that("as.data.frame(ranef()) gives lme4's long layout", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  re <- ranef(fit)
  df <- as.data.frame(re)
  expect_identical(names(df), c("grpvar", "term", "grp", "condval"))
  expect_identical(nrow(df), sum(ngrps(fit)))
  expect_identical(df$grpvar, rep(c("plate", "sample"), c(24L, 6L)))
  expect_true(all(df$term == "(Intercept)"))
  expect_s3_class(df$grp, "factor")
  expect_identical(as.character(df$grp), c(rownames(re$plate), rownames(re$sample)))
  expect_identical(df$condval, c(re$plate[["(Intercept)"]], re$sample[["(Intercept)"]]))
  expect_identical(rownames(df), as.character(seq_len(nrow(df))))

  # Same columns and values as lme4's (which adds condsd).
  lfit <- lme4::lmer(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  theirs <- as.data.frame(lme4::ranef(lfit))
  expect_identical(as.character(df$grpvar), as.character(theirs$grpvar))
  expect_identical(as.character(df$grp), as.character(theirs$grp))
  expect_equal(df$condval, theirs$condval, tolerance = 1e-4)
})

test_that("coef adds the fixed effects to each term's predictions", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  cf <- coef(fit)
  expect_type(cf, "list")
  expect_named(cf, "Subject")
  s <- cf$Subject
  expect_s3_class(s, "data.frame")
  expect_identical(names(s), c("(Intercept)", "Days"))
  expect_identical(rownames(s), rownames(ranef(fit)$Subject))
  expect_equal(s[["(Intercept)"]], fixef(fit)[["(Intercept)"]] + ranef(fit)$Subject[["(Intercept)"]])
  expect_equal(s$Days, rep(fixef(fit)[["Days"]], 18))
  # As lme4's coef().
  lfit <- lme4::lmer(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  expect_equal(as.matrix(s), as.matrix(coef(lfit)$Subject), tolerance = 1e-5)
})

test_that("coef with crossed terms adds only that term's predictions", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  cf <- coef(fit)
  expect_named(cf, c("plate", "sample"))
  for (k in names(cf)) {
    expect_identical(names(cf[[k]]), "(Intercept)")
    expect_identical(rownames(cf[[k]]), rownames(ranef(fit)[[k]]))
    expect_equal(cf[[k]][["(Intercept)"]],
                 fixef(fit)[["(Intercept)"]] + ranef(fit)[[k]][["(Intercept)"]])
  }
})

test_that("coef of a model without a fixed intercept shows the random intercept", {
  set.seed(3)
  d <- data.frame(g = factor(rep(1:10, each = 6)), x = rnorm(60))
  d$y <- 5 + 2 * d$x + rnorm(10, sd = 2)[d$g] + rnorm(60)
  fit <- fr_fit(y ~ 0 + x + (1 | g), data = d)
  cf <- coef(fit)$g
  expect_identical(names(cf), c("(Intercept)", "x"))
  expect_identical(rownames(cf), as.character(1:10))
  expect_equal(cf[["(Intercept)"]], ranef(fit)$g[["(Intercept)"]])
  expect_equal(cf$x, rep(fixef(fit)[["x"]], 10))
})

test_that("arguments ranef and coef do not use are refused, not ignored", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  expect_error(ranef(fit, condVar = NA), "`condVar` must be TRUE or FALSE")
  expect_error(ranef(fit, condVar = TRUE, type = "npmle"), "conditional variances are those of the BLUPs")
  expect_identical(ranef(fit, condVar = FALSE), ranef(fit))
  expect_error(ranef(fit, type = "x"), "should be one of")
  expect_error(ranef(fit, whichel = "plate"), "ranef\\(\\) does not take `whichel`")
  expect_error(coef(fit, foo = 1), "coef\\(\\) does not take `foo`")
  expect_error(as.data.frame(ranef(fit), foo = 1), "as.data.frame\\(\\) does not take `foo`")
})

# s2 diag((Z'Z + L)^-1) from the model matrices, all levels of every active term.
dense_condvar <- function(fit, data) {
  terms <- names(fit$flist)
  s2 <- fit$theta[["Residual"]]
  active <- terms[fit$theta[terms] > 0]
  z <- do.call(cbind, lapply(active, function(k) {
    f <- factor(fit$flist[[k]])
    stats::model.matrix(~ 0 + f)
  }))
  lambda <- unlist(lapply(active, function(k) rep(s2 / fit$theta[[k]], nlevels(fit$flist[[k]]))))
  d <- s2 * diag(solve(crossprod(z) + diag(lambda, length(lambda))))
  sizes <- vapply(active, function(k) nlevels(fit$flist[[k]]), 1L)
  out <- split(unname(d), rep(active, sizes))
  for (k in setdiff(terms, active)) out[[k]] <- rep(0, nlevels(fit$flist[[k]]))
  out[terms]
}

test_that("conditional variances equal a dense computation: one, nested and crossed terms", {
  set.seed(21)
  n <- 400
  d <- data.frame(a = factor(sample(12, n, TRUE)), b = factor(sample(30, n, TRUE)), x = rnorm(n))
  d$c <- factor(paste(d$a, sample(4, n, TRUE)))
  d$y <- 1 + d$x + rnorm(12)[d$a] + rnorm(30, sd = 0.7)[d$b] + rnorm(48, sd = 0.5)[as.integer(d$c)] + rnorm(n)
  for (f in list(y ~ x + (1 | a), y ~ x + (1 | a) + (1 | c), y ~ x + (1 | a) + (1 | b),
                 y ~ x + (1 | a) + (1 | b) + (1 | c))) {
    fit <- fr_fit(f, data = d)
    re <- ranef(fit, condVar = TRUE)
    want <- dense_condvar(fit, d)
    for (k in names(re)) {
      expect_equal(as.vector(attr(re[[k]], "postVar")), want[[k]], tolerance = 1e-6)
    }
    expect_true(attr(re, "condVar")$exact)
    df <- as.data.frame(re)
    expect_equal(df$condsd, sqrt(unlist(want, use.names = FALSE)), tolerance = 1e-6)
    expect_identical(ranef(fit, condVar = FALSE), ranef(fit))
  }
  # The stochastic estimate lies within a few of its standard errors of the exact values.
  fit <- fr_fit(y ~ x + (1 | a) + (1 | b), data = d)
  cv <- conditional_variances(fit, method = "stochastic", probes = 256)
  want <- dense_condvar(fit, d)
  for (k in names(want)) {
    expect_true(all(abs(cv$variance[[k]] - want[[k]]) <= 5 * cv$std_error[[k]] + 1e-12))
  }
  expect_false(cv$exact)
  expect_gt(cv$max_relative_error, 0)
})

test_that("tidy(ran_vals) gives the conditional sds as standard errors", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  tv <- tidy.fr_fit(fit, effects = "ran_vals")
  expect_equal(tv$std.error, as.data.frame(ranef(fit, condVar = TRUE))$condsd)
  # One term: s2 / (n_g + s2 / s2_a).
  n_g <- as.vector(table(lme4::sleepstudy$Subject))
  expect_equal(tv$std.error, sqrt(fit$theta[["Residual"]] /
                                    (n_g + fit$theta[["Residual"]] / fit$theta[["Subject"]])))
})
