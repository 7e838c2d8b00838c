# predict(), fitted() and residuals(): lme4's semantics for re.form, new levels and
# missing values.

penicillin_fit <- function() {
  fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
}

test_that("predict() without arguments equals fitted()", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  expect_identical(predict(fit), fitted(fit))
  expect_identical(predict(fit, re.form = NULL), fitted(fit))
  expect_length(fitted(fit), 180L)
  lfit <- lme4::lmer(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  expect_equal(fitted(fit), fitted(lfit), tolerance = 1e-6)
})

test_that("re.form = NA and ~0 give the population-level prediction X b", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  population <- drop(model.matrix(fit) %*% fixef(fit))
  expect_equal(predict(fit, re.form = NA), population, tolerance = 1e-12)
  expect_equal(predict(fit, re.form = ~0), population, tolerance = 1e-12)
  expect_equal(predict(fit, re.form = ~ 0), predict(fit, re.form = NA))
  expect_equal(unname(predict(fit, re.form = NA)),
               fixef(fit)[["(Intercept)"]] + fixef(fit)[["Days"]] * lme4::sleepstudy$Days)
  # It differs from the conditional prediction.
  expect_false(isTRUE(all.equal(predict(fit, re.form = NA), predict(fit))))
  # Also with newdata.
  nd <- data.frame(Days = c(0, 4.5, 9))
  expect_equal(unname(predict(fit, nd, re.form = NA)),
               fixef(fit)[["(Intercept)"]] + fixef(fit)[["Days"]] * nd$Days)
})

test_that("re.form naming one term includes only that term", {
  skip_if_not_installed("lme4")
  fit <- penicillin_fit()
  mf <- model.frame(fit)
  re <- ranef(fit)
  b <- fixef(fit)[["(Intercept)"]]
  plate_only <- b + re$plate[as.character(mf$plate), 1]
  sample_only <- b + re$sample[as.character(mf$sample), 1]
  expect_equal(unname(predict(fit, re.form = ~ (1 | plate))), plate_only)
  expect_equal(unname(predict(fit, re.form = ~ (1 | sample))), sample_only)
  expect_equal(predict(fit, re.form = ~ (1 | plate) + (1 | sample)), fitted(fit))
  expect_equal(predict(fit, re.form = ~ (1 | sample) + (1 | plate)), fitted(fit))
  # The same through newdata.
  nd <- lme4::Penicillin[c(1, 50, 144), ]
  expect_equal(unname(predict(fit, nd, re.form = ~ (1 | plate))), plate_only[c(1, 50, 144)])
  # A column only the dropped term needs may be absent.
  expect_equal(unname(predict(fit, nd["plate"], re.form = ~ (1 | plate))), plate_only[c(1, 50, 144)])
  # As lme4.
  lfit <- lme4::lmer(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  expect_equal(predict(fit, re.form = ~ (1 | plate)), predict(lfit, re.form = ~ (1 | plate)),
               tolerance = 1e-6)
})

test_that("re.form is checked", {
  skip_if_not_installed("lme4")
  fit <- penicillin_fit()
  expect_error(predict(fit, re.form = ~ (1 | batch)),
               "`re.form` names \\(1 \\| batch\\), which is not in the model \\(its terms: \\(1 \\| plate\\), \\(1 \\| sample\\)\\)")
  expect_error(predict(fit, re.form = ~ (1 | plate) + (1 | a) + (1 | b)),
               "names \\(1 \\| a\\), \\(1 \\| b\\), which are not in the model")
  expect_error(predict(fit, re.form = ~ x + (1 | plate)), "may only name random terms .* not x")
  expect_error(predict(fit, re.form = "plate"), "`re.form` must be NULL, NA or a one-sided formula")
  expect_error(predict(fit, re.form = y ~ (1 | plate)), "`re.form` must be NULL, NA or a one-sided formula")
})

test_that("predicting the data of the fit as newdata reproduces fitted()", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  expect_equal(predict(fit, newdata = lme4::sleepstudy), fitted(fit), tolerance = 1e-12)
  expect_equal(predict(fit, newdata = lme4::sleepstudy, re.form = NA),
               predict(fit, re.form = NA), tolerance = 1e-12)
  pen <- penicillin_fit()
  expect_equal(predict(pen, newdata = lme4::Penicillin), fitted(pen), tolerance = 1e-12)
  # Rows are predicted individually: any subset, in any order.
  rows <- c(144, 3, 77, 3)
  expect_equal(unname(predict(pen, lme4::Penicillin[rows, ])), unname(fitted(pen)[rows]),
               tolerance = 1e-12)
})

test_that("grouping values given as character or numbers match the fitted levels", {
  set.seed(8)
  d <- data.frame(g = rep(c(3, 10, 20, 7), each = 6), x = rnorm(24))
  d$y <- d$x + c(1, -1, 2, 0)[factor(d$g)] + rnorm(24, sd = 0.5)
  fit <- fr_fit(y ~ x + (1 | g), data = d)
  nd <- data.frame(x = c(0, 1), g = c(10, 7))
  want <- fixef(fit)[["(Intercept)"]] + fixef(fit)[["x"]] * nd$x +
    ranef(fit)$g[c("10", "7"), 1]
  expect_equal(unname(predict(fit, nd)), want)
  expect_equal(unname(predict(fit, transform(nd, g = as.character(g)))), want)
  expect_equal(unname(predict(fit, transform(nd, g = factor(g)))), want)
})

test_that("new levels are an error naming the level and the term", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  nd <- data.frame(Days = c(1, 2), Subject = c("308", "999"))
  expect_error(predict(fit, nd), "new level of \\(1 \\| Subject\\) in `newdata`: '999'; use allow.new.levels = TRUE")
  pen <- penicillin_fit()
  expect_error(predict(pen, data.frame(plate = "zz", sample = "A")),
               "new level of \\(1 \\| plate\\) in `newdata`: 'zz'")
  expect_error(predict(pen, data.frame(plate = "a", sample = c("Q", "R", "Q"))),
               "new levels of \\(1 \\| sample\\) in `newdata`: 'Q', 'R';")
})

test_that("many new levels are listed up to five, without warnings", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  nd <- data.frame(Days = 1:8, Subject = paste0("n", 1:8))
  expect_no_warning(
    expect_error(predict(fit, nd),
                 "'n1', 'n2', 'n3', 'n4', 'n5' \\(and 3 more\\); use allow.new.levels", fixed = FALSE)
  )
})

test_that("allow.new.levels = TRUE gives new levels a zero random effect", {
  skip_if_not_installed("lme4")
  pen <- penicillin_fit()
  re <- ranef(pen)
  b <- fixef(pen)[["(Intercept)"]]
  nd <- data.frame(plate = c("zz", "a", "zz"), sample = c("A", "B", "new"))
  p <- predict(pen, nd, allow.new.levels = TRUE)
  expect_equal(unname(p), c(
    b + re$sample["A", 1],                 # new plate: population + sample term
    b + re$plate["a", 1] + re$sample["B", 1],
    b                                      # both new: population level
  ))
  # Known rows are unaffected by allow.new.levels.
  expect_equal(predict(pen, lme4::Penicillin[1:5, ], allow.new.levels = TRUE),
               predict(pen, lme4::Penicillin[1:5, ]))
  # As lme4.
  lfit <- lme4::lmer(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  expect_equal(unname(p), unname(predict(lfit, nd, allow.new.levels = TRUE)), tolerance = 1e-5)
})

test_that("a missing grouping value counts as a new level", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  nd <- data.frame(Days = c(3, 3), Subject = c("308", NA))
  expect_error(predict(fit, nd), "new level of \\(1 \\| Subject\\) in `newdata`: NA;")
  p <- predict(fit, nd, allow.new.levels = TRUE)
  population <- predict(fit, nd, re.form = NA)
  expect_equal(p[[2]], population[[2]])
  expect_equal(p[[1]], population[[1]] + ranef(fit)$Subject["308", 1])
})

test_that("a missing newdata column is an error naming it", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  expect_error(predict(fit, data.frame(Subject = "308")), "`newdata` lacks column 'Days'")
  expect_error(predict(fit, data.frame(Days = 1)), "`newdata` lacks column 'Subject'")
  expect_error(predict(fit, data.frame(z = 1)), "`newdata` lacks columns 'Days', 'Subject'")
  # The grouping column is not needed when its term is left out.
  expect_silent(predict(fit, data.frame(Days = 1), re.form = NA))
  expect_error(predict(fit, list(Days = 1, Subject = "308")), "`newdata` must be a data frame")
})

test_that("a missing column named like a function (Penicillin's `sample`) is reported", {
  skip_if_not_installed("lme4")
  pen <- penicillin_fit()
  expect_error(predict(pen, data.frame(plate = "a")), "`newdata` lacks column 'sample'")
})

test_that("nested terms are predicted through their 'inner:outer' labels", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(strength ~ 1 + (1 | batch/cask), data = lme4::Pastes)
  rows <- c(1, 10, 30, 60)
  nd <- lme4::Pastes[rows, c("batch", "cask")]
  expect_equal(predict(fit, nd), fitted(fit)[rows], tolerance = 1e-12)
  re <- ranef(fit)
  want <- fixef(fit)[[1]] + re$batch[as.character(nd$batch), 1] +
    re[["cask:batch"]][paste(nd$cask, nd$batch, sep = ":"), 1]
  expect_equal(unname(predict(fit, nd)), want)
  # Character columns work as well as factors.
  nd_chr <- data.frame(batch = as.character(nd$batch), cask = as.character(nd$cask))
  expect_equal(unname(predict(fit, nd_chr)), want)
  # The inner term alone, and a new cask within a known batch.
  expect_equal(unname(predict(fit, nd, re.form = ~ (1 | batch))),
               fixef(fit)[[1]] + re$batch[as.character(nd$batch), 1])
  expect_error(predict(fit, data.frame(batch = "A", cask = "z")),
               "new level of \\(1 \\| cask:batch\\) in `newdata`: 'z:A'")
  expect_equal(unname(predict(fit, data.frame(batch = "A", cask = "z"), allow.new.levels = TRUE)),
               fixef(fit)[[1]] + re$batch["A", 1])
  # re.form written with the nesting operator names both terms.
  expect_equal(predict(fit, re.form = ~ (1 | batch/cask)), fitted(fit))
  # As lme4.
  lfit <- lme4::lmer(strength ~ 1 + (1 | batch/cask), data = lme4::Pastes)
  expect_equal(unname(predict(fit, nd)), unname(predict(lfit, nd)), tolerance = 1e-5)
})

test_that("a fixed factor in newdata may hold a subset of the fitted levels", {
  set.seed(4)
  d <- data.frame(g = factor(rep(1:8, each = 6)),
                  f = factor(rep(c("a", "b", "c"), 16)), x = rnorm(48))
  d$y <- c(a = 0, b = 2, c = -1)[as.character(d$f)] + d$x + rnorm(8)[d$g] + rnorm(48)
  fit <- fr_fit(y ~ x + f + (1 | g), data = d)
  expect_identical(fit$xlevels, list(f = c("a", "b", "c")))
  b <- fixef(fit)
  nd <- data.frame(x = c(0, 1), f = c("c", "c"), g = c("1", "2"))
  want <- b[["(Intercept)"]] + b[["x"]] * nd$x + b[["fc"]] + ranef(fit)$g[c("1", "2"), 1]
  expect_equal(unname(predict(fit, nd)), want)
  expect_equal(unname(predict(fit, transform(nd, f = factor(f)))), want)
  nd_b <- data.frame(x = 0, f = "b", g = "3")
  expect_equal(unname(predict(fit, nd_b, re.form = NA)), b[["(Intercept)"]] + b[["fb"]])
  # A level the fit never saw is an error.
  expect_error(predict(fit, data.frame(x = 0, f = "d", g = "1")), "new level")
})

test_that("data-dependent terms such as poly() and scale() use the fit's parameters", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ poly(Days, 2) + (1 | Subject), data = lme4::sleepstudy)
  rows <- c(1:4, 95)
  expect_equal(predict(fit, lme4::sleepstudy[rows, ]), fitted(fit)[rows], tolerance = 1e-10)
  d <- data.frame(Days = 2.5, Subject = "308")
  lfit <- lme4::lmer(Reaction ~ poly(Days, 2) + (1 | Subject), data = lme4::sleepstudy)
  expect_equal(unname(predict(fit, d)), unname(predict(lfit, d)), tolerance = 1e-5)

  scaled <- fr_fit(Reaction ~ scale(Days) + (1 | Subject), data = lme4::sleepstudy)
  expect_equal(predict(scaled, lme4::sleepstudy[rows, ], re.form = NA),
               predict(scaled, re.form = NA)[rows], tolerance = 1e-10)
})

test_that("missing fixed-effect values in newdata give NA under na.pass", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  nd <- data.frame(Days = c(1, NA, 3), Subject = c("308", "309", "310"))
  p <- predict(fit, nd)
  expect_length(p, 3L)
  expect_true(is.na(p[[2]]))
  expect_equal(p[c(1, 3)], predict(fit, nd[c(1, 3), ]))
  # na.omit drops the row, keeping the names of the others.
  p_omit <- predict(fit, nd, na.action = na.omit)
  expect_named(p_omit, c("1", "3"))
  expect_equal(unname(p_omit), unname(p[c(1, 3)]))
  # na.exclude pads it back with NA, as lme4 does.
  p_excl <- predict(fit, nd, na.action = na.exclude)
  expect_length(p_excl, 3L)
  expect_named(p_excl, c("1", "2", "3"))
  expect_true(is.na(p_excl[[2]]))
  expect_equal(p_excl[c(1, 3)], p_omit)
  # A missing grouping value is not dropped by na.action: it is a new level.
  expect_error(predict(fit, data.frame(Days = 1, Subject = NA), na.action = na.omit), "new level")
})

test_that("fitted() and residuals() with na.exclude are padded with NA", {
  set.seed(9)
  d <- data.frame(g = factor(rep(letters[1:8], each = 5)), x = rnorm(40))
  d$y <- d$x + rnorm(8)[d$g] + rnorm(40)
  d$y[c(3, 22)] <- NA
  d$x[30] <- NA
  dropped <- c(3L, 22L, 30L)
  fit_ex <- fr_fit(y ~ x + (1 | g), data = d, na.action = na.exclude)
  fit_om <- fr_fit(y ~ x + (1 | g), data = d, na.action = na.omit)
  for (fn in list(fitted, residuals, predict)) {
    padded <- fn(fit_ex)
    expect_length(padded, 40L)
    expect_identical(unname(which(is.na(padded))), dropped)
    expect_equal(unname(padded[-dropped]), unname(fn(fit_om)))
    expect_length(fn(fit_om), 37L)
  }
  expect_identical(unname(which(is.na(predict(fit_ex, re.form = NA)))), dropped)
  expect_equal(unname(predict(fit_ex, re.form = NA)[-dropped]), unname(predict(fit_om, re.form = NA)))
  expect_identical(unname(which(is.na(residuals(fit_ex, scaled = TRUE)))), dropped)
  # Default na.action (na.omit) gives the shorter vectors.
  expect_identical(names(fitted(fr_fit(y ~ x + (1 | g), data = d))), as.character(seq_len(40)[-dropped]))
})

test_that("fitted + residuals = response; scaled residuals are divided by sigma", {
  skip_if_not_installed("lme4")
  fit <- penicillin_fit()
  y <- lme4::Penicillin$diameter
  expect_equal(unname(fitted(fit) + residuals(fit)), y, tolerance = 1e-12)
  expect_equal(residuals(fit, scaled = TRUE), residuals(fit) / sigma(fit))
  expect_equal(residuals(fit, type = "pearson"), residuals(fit))
  expect_error(residuals(fit, type = "deviance"))
  lfit <- lme4::lmer(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  expect_equal(unname(residuals(fit)), unname(residuals(lfit)), tolerance = 1e-5)
})

test_that("interaction levels in newdata are matched by their parts, not their pasted label", {
  set.seed(2)
  d <- data.frame(a = rep(c("x:y", "x", "p", "q"), each = 50), b = rep(c("z", "y:z", "r", "s"), each = 50))
  d$y <- rep(c(-6, 6, -3, 3), each = 50) + rnorm(200)
  fit <- fr_fit(y ~ 1 + (1 | a:b), d)
  expect_equal(predict(fit, d), predict(fit))
  new <- data.frame(a = c("x", "x:y", "x"), b = c("y:z", "z", "z"))
  expect_error(predict(fit, new), "new level of \\(1 \\| a:b\\) in `newdata`: 'x:z'")
  u <- ranef(fit)[["a:b"]]
  expect_equal(unname(predict(fit, new, allow.new.levels = TRUE)),
               fixef(fit)[[1]] + c(u["x:`y:z`", 1], u["`x:y`:z", 1], 0))
})

test_that("a missing newdata column named like a non-vector object in the environment is named", {
  set.seed(6)
  d <- data.frame(y = rnorm(60), f = rnorm(60), g = rep(1:6, 10))
  f <- fr_fit(y ~ f + (1 | g), d)  # `f` the fit is in the formula's environment
  expect_error(predict(f, d[, c("y", "g")]), "`newdata` lacks column 'f'")
  # A vector of the fit's data (60 values) does not describe 5 new rows either.
  x_outside <- rnorm(60)
  fit <- fr_fit(y ~ x_outside + (1 | g), d)
  expect_error(predict(fit, d[1:5, ]), "`newdata` lacks column 'x_outside'")
})

test_that("a grouping expression: the data of the fit as newdata reproduce predict(), new data get a hint", {
  set.seed(7)
  d <- data.frame(age = runif(300, 20, 70), g = rep(letters[1:6], 50))
  d$y <- as.integer(cut(d$age, 5)) + rnorm(300)
  fit <- fr_fit(y ~ 1 + (1 | cut(age, 5)) + (1 | g), d)
  expect_equal(predict(fit, newdata = d), predict(fit))
  expect_error(predict(fit, newdata = d[d$age < 40, ]),
               "the grouping expression was evaluated on `newdata`.*compute it as a column")
})

test_that("arguments predict, fitted and residuals do not use are refused, not ignored", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  expect_error(predict(fit, se.fit = TRUE),
               "^predict\\(\\) does not take `se.fit`: standard errors of predictions are not computed")
  expect_error(predict(fit, lme4::sleepstudy, newparams = list()), "does not take `newparams`")
  expect_error(predict(fit, interval = "confidence"), "should be one of")
  expect_identical(predict(fit, type = "response"), predict(fit))
  expect_error(predict(fit, type = "terms"), "'arg' should be one of")
  expect_error(fitted(fit, re.form = NA), "fitted\\(\\) does not take `re.form`")
  expect_error(residuals(fit, foo = 1), "residuals\\(\\) does not take `foo`")
})
