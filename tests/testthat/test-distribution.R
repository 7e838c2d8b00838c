# fr_distribution(): cumulants by moments, the NPMLE, empirical Bayes predictions and
# prediction intervals (issue 23).

bimodal_data <- function(G = 1500, seed = 1) {
  set.seed(seed)
  n <- pmax(rpois(G, 4), 1)
  alpha <- ifelse(runif(G) < 0.8, rnorm(G, -0.5, 0.3), rnorm(G, 2, 0.5))
  g <- rep(seq_len(G), n)
  data.frame(y = 1 + alpha[g] + rnorm(length(g)), g = factor(g), x = rnorm(length(g)))
}

two_point <- function(p, a, b) {
  # values and probabilities of a centred two-point law, and its 3rd cumulant
  m <- p * a + (1 - p) * b
  list(x = c(a, b) - m, p = c(p, 1 - p), k3 = p * (a - m)^3 + (1 - p) * (b - m)^3)
}

test_that("third cumulants by moments are exactly unbiased (enumeration of a small design)", {
  sizes <- c(1, 3, 4)
  A <- two_point(0.3, 0, 2)   # effects
  E <- two_point(0.2, 0, 1.5) # errors
  codes <- rep(seq_along(sizes), sizes)
  N <- length(codes)
  ea <- as.matrix(expand.grid(rep(list(1:2), length(sizes))))
  ee <- as.matrix(expand.grid(rep(list(1:2), N)))
  total <- c(0, 0, 0, 0)
  for (i in seq_len(nrow(ea))) {
    pa <- prod(A$p[ea[i, ]])
    a <- A$x[ea[i, ]]
    for (j in seq_len(nrow(ee))) {
      y <- 5 + a[codes] + E$x[ee[j, ]]
      s <- fullrandom:::fr_level_power_sums(y, codes, length(sizes), 0)
      sums <- list(n = s$count, d = s$s1 / s$count, m2 = fullrandom:::central_sum(s, 2L),
                   m3 = fullrandom:::central_sum(s, 3L), m4 = fullrandom:::central_sum(s, 4L))
      total <- total + pa * prod(E$p[ee[j, ]]) *
        fullrandom:::cumulants_by_moments(sums, sum(A$p * A$x^2), sum(E$p * E$x^2))
    }
  }
  expect_equal(total[["k3_effect"]], A$k3, tolerance = 1e-10)
  expect_equal(total[["k3_error"]], E$k3, tolerance = 1e-10)
})

test_that("the NPMLE, its summary and quantiles describe a bimodal term", {
  dat <- bimodal_data()
  fit <- fr_fit(y ~ 1 + (1 | g), data = dat)
  d <- fr_distribution(fit)
  expect_s3_class(d, "fr_distribution")
  expect_equal(sum(d$weights), 1, tolerance = 1e-12)
  expect_lt(d$max_gradient, 1.01)
  upper <- sum(d$support$prob[d$support$point > 0.75 + d$moments[["mean"]]])
  expect_lt(abs(upper - 0.2), 0.05)
  s <- summary(d, nboot = 50)
  expect_gt(s$standardised[1], 0.8)            # skewed effects
  expect_lt(attr(s, "tests")$p.value[1], 1e-6) # normality rejected
  # the NPMLE's third cumulant agrees with the moment one within a few se
  expect_lt(abs(s$npmle[1] - s$estimate[1]), 4 * s$se[1] + 0.1 * abs(s$estimate[1]))
  expect_output(print(d), "NPMLE")
  expect_output(print(s), "normality")
  q <- quantile(d, c(0.1, 0.5, 0.9))
  expect_true(all(diff(q) > 0))
  pdf(NULL); on.exit(dev.off())
  expect_invisible(plot(d))
  expect_error(fr_distribution(fit, "h"), "must be one of")
})

test_that("posterior means: same layout as the BLUPs, lower error on bimodal effects", {
  dat <- bimodal_data(seed = 2)
  fit <- fr_fit(y ~ 1 + (1 | g), data = dat)
  b <- ranef(fit)
  e <- ranef(fit, type = "npmle")
  expect_identical(dim(e$g), dim(b$g))
  expect_identical(rownames(e$g), rownames(b$g))
  set.seed(2)
  G <- 1500
  n <- pmax(rpois(G, 4), 1)
  alpha <- ifelse(runif(G) < 0.8, rnorm(G, -0.5, 0.3), rnorm(G, 2, 0.5))
  a <- alpha - mean(alpha)
  expect_lt(mean((e$g[[1]] - a)^2), 0.85 * mean((b$g[[1]] - a)^2))
  p <- predict(fit, ranef.type = "npmle")
  expect_equal(unname(p), unname(fit$coefficients[[1]] + e$g[[1]][as.integer(dat$g)]))
})

test_that("prediction intervals for known and new levels, beside the normal ones", {
  dat <- bimodal_data(seed = 3)
  fit <- fr_fit(y ~ x + (1 | g), data = dat)
  nd <- data.frame(g = c("1", "2", "new"), x = c(0, 1, 0))
  expect_error(predict(fit, nd, interval = "prediction"), "new level")
  p <- predict(fit, nd, interval = "prediction", level = 0.9, allow.new.levels = TRUE)
  expect_identical(colnames(p), c("fit", "lwr", "upr", "lwr_normal", "upr_normal"))
  expect_true(all(p[, "lwr"] < p[, "fit"] & p[, "fit"] < p[, "upr"]))
  expect_true(all(p[, "lwr_normal"] < p[, "upr_normal"]))
  # a wider level gives a wider interval
  p2 <- predict(fit, nd, interval = "prediction", level = 0.99, allow.new.levels = TRUE)
  expect_true(all(p2[, "upr"] - p2[, "lwr"] > p[, "upr"] - p[, "lwr"]))
  expect_error(predict(fit, interval = "prediction"), "newdata")
  expect_error(predict(fit, nd, interval = "prediction", level = 2, allow.new.levels = TRUE), "level")
})

test_that("chunked sums equal the whole data's (crossed design)", {
  set.seed(4)
  dat <- simulate_crossed(6000, seed = 4)
  fit <- fr_fit(y ~ x + (1 | user) + (1 | item), data = dat)
  whole <- fr_distribution(fit, "user")
  chunks <- split(dat, as.integer(dat$user) %% 3)
  parts <- fr_distribution(fit, "user", data = chunks)
  expect_equal(parts$d, whole$d, tolerance = 1e-10)
  expect_equal(parts$v, whole$v, tolerance = 1e-10)
  expect_equal(parts$weights, whole$weights, tolerance = 1e-8)
  # the other term's prediction error enters the noise variance
  expect_true(all((whole$v - fit$theta[["Residual"]] / whole$n)[whole$n > 0] > 0))
})

test_that("the g-model: a smooth distribution by AIC, normal effects near the BLUPs, bimodal ones found", {
  set.seed(31)
  G <- 1500
  a <- rnorm(G)
  g <- rep(seq_len(G), 4)
  dat <- data.frame(y = a[g] + rnorm(4 * G), g = factor(g))
  fit <- fr_fit(y ~ 1 + (1 | g), data = dat)
  d <- fr_distribution(fit, method = "gmodel")
  expect_identical(d$method, "gmodel")
  expect_true(d$converged)
  expect_true(d$df %in% 3:12)
  expect_equal(sum(d$weights), 1, tolerance = 1e-12)
  expect_true(all(d$weights > 0))  # smooth: every grid point carries mass
  # a normal estimate: its variance near the moment one, posterior means near the BLUPs
  expect_lt(abs(d$moments[["variance"]] / d$variance - 1), 0.1)
  eb <- fullrandom:::npmle_ranef(d)
  expect_lt(sqrt(mean((eb - fit$ranef_values$g)^2)), 0.03)
  expect_lt(max(abs(eb - fit$ranef_values$g)), 0.2)
  # its log-likelihood is at most the NPMLE's (the NPMLE maximises it over all laws)
  expect_lte(d$loglik, fr_distribution(fit, method = "npmle")$loglik + 1e-6)
  expect_output(print(d), "g-model")
  # bimodal effects: the upper mode's mass
  b <- fr_distribution(fr_fit(y ~ 1 + (1 | g), data = bimodal_data()), method = "gmodel")
  upper <- sum(b$weights[b$grid > 0.75 + b$moments[["mean"]]])
  expect_lt(abs(upper - 0.2), 0.05)
  expect_error(fr_distribution(fit, method = "gmodel", df = 0), "whole numbers")
  expect_error(fr_distribution(fit, method = "spline"), "should be one of")
})

test_that("the marginal log-likelihood of level means under a distribution equals the direct sum", {
  set.seed(41)
  grid <- seq(-2, 3, length.out = 7)
  w <- c(0, 0.1, 0.3, 0, 0.2, 0.4, 0)
  d <- c(rnorm(50), NA, 40)
  v <- c(runif(50, 0.1, 1), 1, 0.2)
  direct <- sum(log(vapply(seq_len(50), function(i) sum(w * dnorm(d[i], grid, sqrt(v[i]))), 0)))
  # dnorm(40, grid, sqrt(0.2)) underflows: the reference for that level by log-sum-exp
  lse <- function(x) max(x) + log(sum(exp(x - max(x))))
  far <- lse(log(w[w > 0]) - (40 - grid[w > 0])^2 / 0.4) - 0.5 * log(2 * pi * 0.2)
  expect_equal(fullrandom:::fr_npmle_loglik(grid, w, d[1:50], v[1:50], 1L), direct, tolerance = 1e-12)
  # the missing level is skipped; a level far from the support is finite
  expect_equal(fullrandom:::fr_npmle_loglik(grid, w, d, v, 2L), direct + far, tolerance = 1e-12)
  # the normal's profile maximum is the maximum over (mu, t2)
  nll <- function(p) -sum(dnorm(d[1:50], p[1], sqrt(exp(p[2]) + v[1:50]), log = TRUE))
  best <- optim(c(0, 0), nll, control = list(reltol = 1e-14))
  expect_equal(fullrandom:::normal_max_loglik(d[1:50], v[1:50]), -best$value, tolerance = 1e-7)
  # no variance between levels: the maximum is on the boundary t2 = 0
  z <- rep(c(-0.1, 0.1), 25)
  expect_equal(fullrandom:::normal_max_loglik(z, rep(1, 50)), sum(dnorm(z, 0, 1, log = TRUE)), tolerance = 1e-10)
})

test_that("method = 'auto' keeps the normal for normal effects: the BLUPs and the normal intervals", {
  set.seed(42)
  G <- 1000
  a <- rnorm(G)
  g <- rep(seq_len(G), 4)
  dat <- data.frame(y = 1 + a[g] + rnorm(4 * G), g = factor(g))
  fit <- fr_fit(y ~ 1 + (1 | g), data = dat)
  d <- fr_distribution(fit)
  expect_identical(d$method, "normal")
  expect_identical(d$selection$chosen, "normal")
  expect_lt(d$selection$log_e, log(20))
  expect_length(d$selection$log_ratio, 2L)
  expect_false(anyNA(d$selection$log_ratio)) # both ways round when the first does not decide
  expect_equal(d$selection$log_e, log(mean(exp(d$selection$log_ratio))), tolerance = 1e-12)
  expect_equal(sum(d$weights), 1, tolerance = 1e-12)
  expect_equal(d$moments[["variance"]], d$variance, tolerance = 1e-3)
  expect_equal(d$moments[["mean"]], 0, tolerance = 1e-3)
  expect_output(print(d), "normal \\(moment variance\\)")
  expect_output(print(d), "split likelihood ratio")
  # the posterior means are the BLUPs themselves
  expect_identical(ranef(fit, type = "npmle")$g, ranef(fit)$g)
  # the intervals from the normal's posterior on the grid are the normal-theory ones
  nd <- data.frame(g = c("1", "2", "3", "new"))
  p <- predict(fit, nd, interval = "prediction", level = 0.9, allow.new.levels = TRUE)
  expect_equal(p[, "lwr"], p[, "lwr_normal"], tolerance = 2e-3)
  expect_equal(p[, "upr"], p[, "upr_normal"], tolerance = 2e-3)
  # forcing the NPMLE gives a discrete law with a higher likelihood on the same levels
  n <- fr_distribution(fit, method = "npmle")
  expect_identical(n$method, "npmle")
  expect_null(n$selection)
  expect_gt(n$loglik, d$loglik)
  expect_identical(fr_distribution(fit, method = "normal")$weights, d$weights)
  expect_error(fr_distribution(fit, alpha = 0), "alpha")
  expect_error(fr_distribution(fit, alpha = c(0.1, 0.2)), "alpha")
  # no variance between levels: a point mass at the grid point nearest 0
  fit0 <- fr_fit(y ~ 1 + (1 | g), data = transform(dat, y = 1 + rnorm(4 * G)))
  d0 <- fr_distribution(fit0, method = "normal")
  if (fit0$theta[["g"]] == 0) expect_identical(sum(d0$weights > 0), 1L)
})

test_that("method = 'auto' chooses the NPMLE for bimodal effects, and its test holds its level", {
  fit <- fr_fit(y ~ 1 + (1 | g), data = bimodal_data(G = 1000, seed = 5))
  d <- fr_distribution(fit)
  expect_identical(d$method, "npmle")
  expect_gt(d$selection$log_e, 20) # far beyond log(1 / 0.05)
  # the first ratio alone decided: the second is not computed, log_e is its lower bound
  expect_true(is.na(d$selection$log_ratio[2]))
  expect_equal(d$selection$log_e, d$selection$log_ratio[1] - log(2))
  expect_output(print(d), ">= 1/alpha = 20")
  expect_identical(d$weights, fr_distribution(fit, method = "npmle")$weights)
  # with alpha = 1 the choice is by the cross-validated likelihood (a ratio of at least 1)
  expect_identical(fr_distribution(fit, alpha = 1)$method, "npmle")
  # Under normal effects the averaged split ratio exceeds 1 / alpha with probability at
  # most alpha (Markov): 200 data sets of 200 levels with unequal noise variances.
  fit_npmle <- function(d, v) fullrandom:::fr_npmle(d, v, 300L, 0.05, 0.05, 1e-3, 600L, 1L)
  set.seed(43)
  log_e <- replicate(200, {
    v <- 1 / sample(1:8, 200, replace = TRUE)
    d <- 0.3 + rnorm(200, 0, 0.7) + rnorm(200, 0, sqrt(v))
    fullrandom:::split_likelihood_ratio(d, v, fit_npmle, 0.05, 1L)$log_e
  })
  expect_lte(mean(log_e >= log(1 / 0.2)), 0.2)
  expect_lt(mean(exp(log_e)), 1.3) # an e-value: expectation at most 1
  # and it finds bimodal effects of 200 levels
  set.seed(44)
  v <- 1 / sample(1:8, 200, replace = TRUE)
  d <- ifelse(runif(200) < 0.8, rnorm(200, -0.5, 0.3), rnorm(200, 2, 0.5)) + rnorm(200, 0, sqrt(v))
  expect_gte(fullrandom:::split_likelihood_ratio(d, v, fit_npmle, 0.05, 1L)$log_e, log(20))
})

test_that("the default grid's spacing is a fifth of the median noise sd, within 300 to 2000 points", {
  v <- rep(c(0.25, 0.25, 1), 100)
  expect_identical(fullrandom:::default_grid_size(seq(0, 100, length.out = 300), v), 1001L)
  expect_identical(fullrandom:::default_grid_size(seq(-3, 3, length.out = 300), v), 300L)
  expect_identical(fullrandom:::default_grid_size(seq(-1e4, 1e4, length.out = 300), v), 2000L)
  dat <- bimodal_data(G = 300, seed = 6)
  dat$y[dat$g == "1"] <- dat$y[dat$g == "1"] + 60  # one far level widens the range
  d <- fr_distribution(fr_fit(y ~ 1 + (1 | g), data = dat), method = "npmle")
  h <- diff(d$grid[1:2])
  expect_gt(length(d$grid), 300L)
  expect_lt(h, 1.05 * sqrt(median(d$v)) / 5)
  expect_error(fr_distribution(fr_fit(y ~ 1 + (1 | g), data = dat), grid_size = 1), "grid_size")
})
