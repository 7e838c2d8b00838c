sleep_fit <- function(formula = Reaction ~ Days + (Days | Subject), ...) {
  fr_fit(formula, data = lme4::sleepstudy, ...)
}

test_that("confint rows of a slope fit are named as lme4's", {
  skip_if_not_installed("lme4")
  for (f in list(Reaction ~ Days + (Days | Subject), Reaction ~ Days + (Days || Subject))) {
    fit <- suppressMessages(sleep_fit(f))
    ref <- suppressMessages(lme4::lmer(f, data = lme4::sleepstudy))
    expect_identical(rownames(confint(fit)),
                     rownames(lme4::confint.merMod(ref, method = "Wald", oldNames = FALSE)))
  }
  # Two slope columns: the lower triangle of the covariance by columns.
  d <- lme4::sleepstudy
  d$Days2 <- (d$Days - 4.5)^2
  fit <- suppressMessages(fr_fit(Reaction ~ Days + (Days + Days2 | Subject), data = d))
  expect_identical(rownames(confint(fit))[1:6], c(
    "sd_(Intercept)|Subject", "cor_Days.(Intercept)|Subject", "cor_Days2.(Intercept)|Subject",
    "sd_Days|Subject", "cor_Days2.Days|Subject", "sd_Days2|Subject"
  ))
})

test_that("Wald intervals of a slope fit are fixef +/- z se, NA for the covariance rows", {
  fit <- sleep_fit()
  ci <- confint(fit, level = 0.9)
  se <- sqrt(diag(vcov(fit)))
  expect_equal(ci[c("(Intercept)", "Days"), ], cbind(fixef(fit) - qnorm(0.95) * se, fixef(fit) + qnorm(0.95) * se),
               tolerance = 1e-12, ignore_attr = TRUE)
  expect_identical(colnames(ci), c("5 %", "95 %"))
  expect_true(all(is.na(ci[1:4, ])))
  expect_identical(rownames(confint(fit, parm = "beta_")), c("(Intercept)", "Days"))
  expect_identical(rownames(confint(fit, parm = "theta_")), rownames(ci)[1:4])
  expect_identical(rownames(confint(fit, parm = c(5, 2))), rownames(ci)[c(5, 2)])
  expect_identical(rownames(confint(fit, parm = "sd_Days|Subject")), "sd_Days|Subject")
  expect_error(confint(fit, parm = "sd_Days"), "unknown parameter")
  expect_error(confint(fit, nsim2 = 3), "does not take `nsim2`")
  expect_error(confint(fit, level = 2), "between 0 and 1")
  expect_error(confint(fit, method = "Wald", nsim = 100), "draw no bootstrap replicates")
  expect_error(confint(fit, method = "Wald", threads = 2), "does not take `threads`")
})

test_that("the pigeonhole replicate repeats rows by the product of their levels' draws", {
  set.seed(1)
  d <- data.frame(a = factor(sample(6, 40, TRUE)), b = factor(sample(4, 40, TRUE)), x = rnorm(40), y = rnorm(40))
  fit <- suppressMessages(fr_fit(y ~ x + (x | a) + (1 | b), data = d))
  data <- fullrandom:::slope_bootstrap_data(fit)
  set.seed(3)
  ma <- tabulate(sample.int(6, 6, replace = TRUE), 6)
  mb <- tabulate(sample.int(4, 4, replace = TRUE), 4)
  set.seed(3)
  r <- fullrandom:::slope_replicate(data)
  times <- ma[as.integer(d$a)] * mb[as.integer(d$b)]
  expect_equal(length(r$y), sum(times))
  expect_equal(sort(r$y), sort(rep(d$y, times)))
  # Every copy of a level is a level of its own: a level drawn m times gives m levels,
  # and the copies of a row (the same y) lie in different pairs of levels (a, b).
  codes_a <- r$terms[[1]]$codes
  codes_b <- r$terms[[2]]$codes
  expect_equal(length(unique(codes_a)), sum(ma[unique(as.integer(d$a)[times > 0])]))
  expect_equal(anyDuplicated(paste(r$y, codes_a, codes_b)), 0L)
  expect_true(all(codes_a %in% seq_len(6)) && all(codes_b %in% seq_len(4)))
  # The slope column travels with its rows.
  expect_equal(sort(r$terms[[1]]$z[[2]]), sort(rep(d$x, times)))
})

test_that("the slope bootstrap is reproducible, independent of threads, and leaves R's stream", {
  fit <- sleep_fit()
  set.seed(11)
  before <- runif(1)
  set.seed(11)
  b1 <- fr_bootstrap(fit, nsim = 30, seed = 5, threads = 1)
  expect_identical(runif(1), before)
  b2 <- fr_bootstrap(fit, nsim = 30, seed = 5, threads = 2)
  expect_identical(b1, b2)
  expect_s3_class(b1, "fr_bootstrap")
  expect_identical(colnames(b1), rownames(confint(fit)))
  expect_equal(attr(b1, "estimate"), c(`sd_(Intercept)|Subject` = sqrt(fit$Sigma$Subject[1, 1]),
                                           `cor_Days.(Intercept)|Subject` = cov2cor(fit$Sigma$Subject)[2, 1],
                                           `sd_Days|Subject` = sqrt(fit$Sigma$Subject[2, 2]),
                                           sigma = fit$sigma, fit$coefficients), tolerance = 1e-14)
  expect_identical(colnames(attr(b1, "variances")), names(fit$theta))
  expect_false(identical(b1, fr_bootstrap(fit, nsim = 30, seed = 6)))
  expect_output(print(b1), "Pigeonhole bootstrap: 30 replicates")
  # set.seed() makes a bootstrap without a seed reproducible.
  set.seed(2)
  b3 <- fr_bootstrap(fit, nsim = 5)
  set.seed(2)
  expect_identical(fr_bootstrap(fit, nsim = 5), b3)
  # An efficient fit's replicates are refitted by the efficient estimator (which on
  # unbalanced data differs from the moments).
  d <- lme4::sleepstudy[-c(1:4, 25:27, 101:106), ]
  moments <- fr_bootstrap(fr_fit(Reaction ~ Days + (Days | Subject), data = d), nsim = 5, seed = 5)
  efficient <- fr_bootstrap(fr_fit(Reaction ~ Days + (Days | Subject), data = d, method = "efficient"), nsim = 5, seed = 5)
  expect_false(isTRUE(all.equal(as.matrix(efficient), as.matrix(moments))))
  expect_equal(efficient$Days, moments$Days, tolerance = 0.05)
})

test_that("the slope bootstrap's se of a fixed effect is near lmer's, and percentile limits hold the estimate", {
  skip_if_not_installed("lme4")
  fit <- sleep_fit()
  boot <- fr_bootstrap(fit, nsim = 400, seed = 1)
  ref <- lme4::lmer(Reaction ~ Days + (Days | Subject), data = lme4::sleepstudy)
  se_lmer <- sqrt(diag(as.matrix(vcov(ref))))[["Days"]]
  # One grouping factor: the cluster bootstrap, whose se of a between-subject slope mean
  # is that of the 18 subjects' slopes (a little below, by (n - 1) / n).
  ratio <- sd(boot$Days) / se_lmer
  expect_gt(ratio, 0.75)
  expect_lt(ratio, 1.25)
  ci <- confint(fit, boot = boot)
  # One grouping factor: the replicates' own percentiles.
  expect_identical(unname(attr(ci, "method")[c(1, 6)]), c("bootstrap percentile", "bootstrap percentile"))
  expect_equal(unname(ci["sd_Days|Subject", ]), unname(quantile(boot$`sd_Days|Subject`, c(0.025, 0.975))))
  est <- attr(boot, "estimate")
  expect_true(all(ci[, 1] <= est & est <= ci[, 2]))
  expect_equal(unname(ci["Days", ]), unname(quantile(boot$Days, c(0.025, 0.975))))
  expect_error(confint(fit, boot = boot[, -1]), "another model")
  expect_error(confint(fit, method = "bootstrap", nsim = 10, seed = 1), "too few")
})

test_that("bootstrap percentile intervals of the slope variance cover in a small simulation", {
  skip_on_cran()
  # 40 data sets shaped as sleepstudy (18 subjects x 10 days), true sds 25 and 6,
  # correlation 0.1, sigma 25; 100 replicates each. Loose bounds only: with 18 clusters
  # the percentile interval of a variance is known to undercover somewhat.
  truth <- c(sd0 = 25, sd1 = 6, cor = 0.1, sigma = 25)
  s <- matrix(c(truth[["sd0"]]^2, truth[["cor"]] * truth[["sd0"]] * truth[["sd1"]],
                truth[["cor"]] * truth[["sd0"]] * truth[["sd1"]], truth[["sd1"]]^2), 2)
  covered <- vapply(seq_len(40), function(r) {
    set.seed(1000 + r)
    d <- expand.grid(Days = 0:9, Subject = factor(1:18))
    u <- matrix(rnorm(36), 18) %*% chol(s)
    d$Reaction <- 250 + 10 * d$Days + u[d$Subject, 1] + u[d$Subject, 2] * d$Days + rnorm(nrow(d), sd = truth[["sigma"]])
    fit <- suppressMessages(fr_fit(Reaction ~ Days + (Days | Subject), data = d))
    ci <- confint(fit, method = "bootstrap", nsim = 100, seed = r)
    c(slope = ci["sd_Days|Subject", 1] <= truth[["sd1"]] && truth[["sd1"]] <= ci["sd_Days|Subject", 2],
      days = ci["Days", 1] <= 10 && 10 <= ci["Days", 2])
  }, logical(2))
  coverage <- rowMeans(covered)
  message(sprintf("slope sd coverage %.3f, fixed Days coverage %.3f (40 data sets x 100 replicates)",
                  coverage[["slope"]], coverage[["days"]]))
  expect_gt(coverage[["slope"]], 0.7)
  expect_gt(coverage[["days"]], 0.7)
})

test_that("slope fits from a list of data frames or files equal the data-frame fit", {
  d <- lme4::sleepstudy
  set.seed(1)
  d <- d[sample(nrow(d), 150), ]
  d$item <- factor(sample(sprintf("i%02d", 1:9), nrow(d), TRUE))
  d$x2 <- rnorm(nrow(d))
  d$Subject <- as.character(d$Subject)
  f <- Reaction ~ Days + x2 + (Days | Subject) + (1 | item)
  whole <- suppressMessages(fr_fit(f, data = d))
  parts <- unname(split(d, rep(1:3, length.out = nrow(d))))
  paths <- c(tempfile(fileext = ".csv"), tempfile(fileext = ".rds"), tempfile(fileext = ".csv"))
  on.exit(unlink(paths))
  utils::write.csv(parts[[1]], paths[1], row.names = FALSE)
  saveRDS(parts[[2]], paths[2])
  utils::write.csv(parts[[3]], paths[3], row.names = FALSE)
  for (method in c("moments", "efficient")) {
    whole <- suppressMessages(fr_fit(f, data = d, method = method))
    fits <- list(list = suppressMessages(fr_fit(f, data = parts, method = method)))
    if (requireNamespace("data.table", quietly = TRUE)) fits$files <- suppressMessages(fr_fit(f, data = paths, method = method))
    for (fit in fits) {
      expect_equal(fit$theta, whole$theta, tolerance = 1e-10)
      expect_equal(fit$theta_raw, whole$theta_raw, tolerance = 1e-10)
      expect_equal(fixef(fit), fixef(whole), tolerance = 1e-10)
      expect_equal(vcov(fit), vcov(whole), tolerance = 1e-10)
      for (g in names(whole$ranef)) {
        expect_equal(fit$ranef[[g]][rownames(whole$ranef[[g]]), , drop = FALSE], whole$ranef[[g]], tolerance = 1e-10)
      }
      expect_identical(nobs(fit), nobs(whole))
      expect_identical(ngrps(fit), ngrps(whole))
      expect_equal(predict(fit, newdata = d), predict(whole), tolerance = 1e-10)
      expect_error(predict(fit), "keeps no data")
      expect_error(fr_bootstrap(fit, nsim = 5), "do not keep")
      expect_null(fitted(fit))
    }
  }
  expect_error(fr_fit(f, data = parts, combine = "average"), "combined exactly")
  # Files read on the workers of a future plan.
  skip_if_not_installed("future.apply")
  skip_if_not_installed("data.table")
  old <- future::plan(future::multisession, workers = 2)
  on.exit(future::plan(old), add = TRUE)
  whole <- suppressMessages(fr_fit(f, data = d))
  fit <- suppressMessages(fr_fit(f, data = paths, backend = "future"))
  expect_equal(fit$theta, whole$theta, tolerance = 1e-10)
  expect_equal(fixef(fit), fixef(whole), tolerance = 1e-10)
  expect_error(fr_fit(f, data = parts, chunks = 2), "set by the data")
})

test_that("the slope bootstrap runs on crossed terms and refuses replicates beyond memory", {
  set.seed(8)
  d <- data.frame(user = factor(sample(30, 600, TRUE)), item = factor(sample(20, 600, TRUE)), x = rnorm(600))
  d$y <- 1 + 0.5 * d$x + rnorm(30)[d$user] + rnorm(30, sd = 0.3)[d$user] * d$x + rnorm(20)[d$item] + rnorm(600)
  fit <- suppressMessages(fr_fit(y ~ x + (x | user) + (1 | item), data = d))
  boot <- suppressMessages(fr_bootstrap(fit, nsim = 20, seed = 1))
  expect_identical(colnames(boot), c("sd_(Intercept)|user", "cor_x.(Intercept)|user", "sd_x|user",
                                     "sd_(Intercept)|item", "sigma", "(Intercept)", "x"))
  expect_equal(nrow(boot), 20L)
  expect_true(all(is.finite(as.matrix(boot)[, c("sd_x|user", "sigma", "x")])))
  # Crossed: the replicates' residual variance is shifted down and the slope variance up
  # (their copies share a residual); the intervals, centred on the estimate, hold it.
  expect_lt(mean(boot$sigma), fit$sigma)
  ci <- confint(fit, boot = boot, level = 0.5)
  expect_identical(unname(attr(ci, "method")[1]), "bootstrap percentile (centred on the estimate)")
  expect_equal(unname(ci[, 1]), unname(apply(attr(boot, "interval_values"), 2L, quantile, 0.25)))
  pdf(NULL)
  on.exit(grDevices::dev.off(), add = TRUE)
  expect_identical(plot(boot), boot)
  est <- attr(boot, "estimate")
  expect_true(all(ci[, 1] <= est & est <= ci[, 2]))
  # A replicate of 10^15 rows would not fit in the memory of this machine.
  skip_if(is.na(fullrandom:::available_memory()), "available memory unknown")
  data <- fullrandom:::slope_bootstrap_data(fit)
  expect_error(fullrandom:::check_slope_replicate_memory(data, 1e15, "a replicate drawn"),
               "a replicate drawn, 1000000000000000 rows\\) would need about .* of memory")
  expect_silent(fullrandom:::check_slope_replicate_memory(data, 600, "the size of the data"))
})
