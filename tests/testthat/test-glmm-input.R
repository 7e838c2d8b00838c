# The bad inputs of issue 19's list that test-glmm.R does not cover: responses that are
# all 0 or all successes in every form, and the rest of the count checks.

test_that("a response that is all 0 or all successes is an error in every form", {
  set.seed(5)
  d <- data.frame(id = factor(rep(1:20, each = 4)), x = rnorm(80), n = 3)
  d$zero <- 0L
  d$one <- 1L
  d$all <- d$n
  expect_error(fr_fit(zero ~ x + (1 | id), d, family = binomial), "the response 'zero' is all 0: it carries no information")
  expect_error(fr_fit(one ~ x + (1 | id), d, family = binomial), "the response 'one' is all successes")
  expect_error(fr_fit(I(one == 1) ~ x + (1 | id), d, family = binomial), "is all successes")
  expect_error(fr_fit(cbind(all, n - all) ~ x + (1 | id), d, family = binomial), "is all successes")
  expect_error(fr_fit(one ~ x + (1 | id), d, family = binomial, weights = n), "is all successes")
  expect_error(fr_fit(zero ~ x + (1 | id), d, family = poisson), "the response 'zero' is all 0")
  # Chunks see the same checks before any chunk is fitted.
  expect_error(fr_fit(one ~ x + (1 | id), d, family = binomial, chunks = 2), "is all successes")
})

test_that("counts, trials and proportions out of range are errors naming the problem", {
  set.seed(6)
  d <- data.frame(id = factor(rep(1:20, each = 4)), x = rnorm(80), n = 3)
  d$s <- rbinom(80, 3, 0.4)
  d$neg <- d$s
  d$neg[2] <- -1
  expect_error(fr_fit(cbind(neg, n - neg) ~ x + (1 | id), d, family = binomial),
               "the counts of successes and failures must be finite and non-negative")
  d$p <- d$s / d$n
  d$p[5] <- -0.2
  expect_error(fr_fit(p ~ x + (1 | id), d, family = binomial, weights = n), "has values outside \\[0, 1\\]")
  d$p[5] <- 1.5
  expect_error(fr_fit(p ~ x + (1 | id), d, family = binomial, weights = n), "has values outside \\[0, 1\\]")
  d$half <- rep(c(0, 0.5), 40)
  expect_error(fr_fit(half ~ x + (1 | id), d, family = binomial), "strictly between 0 and 1; give the trials as `weights`")
  expect_error(fr_fit(s ~ x + (1 | id), d, family = binomial), "outside \\[0, 1\\]")
  expect_error(fr_fit(cbind(s, n - s) ~ x + (1 | id), d, family = binomial, weights = n),
               "`weights` are not taken with a cbind")
  expect_error(fr_fit(p ~ x + (1 | id), d, family = binomial, weights = -n), "`weights` must be finite non-negative")
  d$z <- d$n
  d$z[1:2] <- 0
  expect_error(fr_fit(I(s / 3) ~ x + (1 | id), d, family = binomial, weights = z), "2 rows have 0 trials")
  d$cnt <- rpois(80, 2)
  d$cnt[7] <- 2.5
  expect_error(fr_fit(cnt ~ x + (1 | id), d, family = poisson), "non-integer values \\(counts are whole numbers\\)")
  d$cnt[7] <- Inf
  expect_error(fr_fit(cnt ~ x + (1 | id), d, family = poisson), "negative or non-finite values")
  d$cnt[7] <- -3
  expect_error(fr_fit(cnt ~ x + (1 | id), d, family = poisson), "negative or non-finite values")
})
