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
  expect_lte(d$loglik, fr_distribution(fit)$loglik + 1e-6)
  expect_output(print(d), "g-model")
  # bimodal effects: the upper mode's mass
  b <- fr_distribution(fr_fit(y ~ 1 + (1 | g), data = bimodal_data()), method = "gmodel")
  upper <- sum(b$weights[b$grid > 0.75 + b$moments[["mean"]]])
  expect_lt(abs(upper - 0.2), 0.05)
  expect_error(fr_distribution(fit, method = "gmodel", df = 0), "whole numbers")
  expect_error(fr_distribution(fit, method = "spline"), "should be one of")
})
