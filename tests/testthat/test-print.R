test_that("print follows lmer's layout", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  out <- capture.output(print(fit))
  expect_identical(out[1], "Linear mixed model fit by the method of moments ['fr_fit']")
  expect_match(out[2], "^Formula: diameter ~ 1 \\+ \\(1 \\| plate\\) \\+ \\(1 \\| sample\\)")
  expect_match(out[3], "^   Data: lme4::Penicillin")
  expect_true("Random effects:" %in% out)
  expect_match(out[grep("^ Groups", out)], "Groups +Name +Variance +Std.Dev.")
  residual_line <- out[grep("^ Residual", out)]
  expect_match(residual_line, formatC(fit$theta[["Residual"]], digits = 3, format = "fg"))
  expect_true("Number of obs: 144, groups:  plate, 24; sample, 6" %in% out)
  at <- match("Fixed Effects:", out)
  expect_false(is.na(at))
  expect_identical(out[at + 1L], "(Intercept) ")
  expect_equal(as.numeric(out[at + 2L]), fixef(fit)[["(Intercept)"]], tolerance = 1e-3)
  capture.output(expect_invisible(print(fit)))
})

# The values printed under "Fixed Effects:", read back as a named vector.
printed_fixef <- function(out) {
  at <- match("Fixed Effects:", out)
  lines <- out[-seq_len(at)]
  # Stop at the first line that is not part of the name/value pairs.
  end <- match(TRUE, grepl("^boundary", lines), nomatch = length(lines) + 1L)
  lines <- lines[seq_len(end - 1L)]
  names <- unlist(lapply(lines[c(TRUE, FALSE)], function(l) strsplit(trimws(l), " +")[[1]]))
  values <- unlist(lapply(lines[c(FALSE, TRUE)], function(l) as.numeric(strsplit(trimws(l), " +")[[1]])))
  stats::setNames(values, names)
}

test_that("print shows the fixed effects, equal to fixef()", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  out <- capture.output(print(fit))
  expect_true("Fixed Effects:" %in% out)
  expect_false("Fixed effects:" %in% out)
  expect_equal(printed_fixef(out), fixef(fit), tolerance = 1e-3)
  expect_equal(printed_fixef(capture.output(print(fit, digits = 10))), fixef(fit), tolerance = 1e-9)
  # The random-effects table comes first, as in lmer.
  expect_lt(match("Random effects:", out), match("Fixed Effects:", out))
})

test_that("print shows every fixed effect of a wider model", {
  set.seed(7)
  d <- data.frame(g = factor(rep(1:10, each = 8)), x = rnorm(80), z = runif(80),
                  f = factor(rep(c("alpha", "beta", "gamma", "delta"), 20)))
  d$y <- d$x + 2 * d$z + as.integer(d$f) + rnorm(10)[d$g] + rnorm(80)
  fit <- fr_fit(y ~ x + z + f + x:z + (1 | g), data = d)
  old <- options(width = 40)
  on.exit(options(old), add = TRUE)
  out <- capture.output(print(fit, digits = 9))
  # Narrow output wraps the name/value pairs over several lines.
  expect_gt(length(out) - match("Fixed Effects:", out), 2L)
  printed <- printed_fixef(out)
  expect_identical(names(printed), names(fixef(fit)))
  expect_equal(printed, fixef(fit), tolerance = 1e-8)
})

test_that("print reports a boundary fit after the fixed effects", {
  d <- boundary_design()
  expect_message(fit <- fr_fit(y ~ 1 + (1 | g) + (1 | h), data = d), "boundary")
  out <- capture.output(print(fit))
  expect_match(out[length(out)], "^boundary \\(singular\\) fit: the variance of \\(1 \\| h\\) is estimated at 0")
  expect_equal(printed_fixef(out), fixef(fit), tolerance = 1e-3)
})

test_that("print refuses arguments it does not use", {
  fit <- fr_fit(distance ~ bow + (1 | archer), data = simulate_archers(seed = 1))
  expect_error(print(fit, ranef.comp = "Variance"), "^print\\(\\) does not take `ranef.comp`")
})
