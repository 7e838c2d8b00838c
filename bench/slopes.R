# Random slopes (issue 20): bias and RMSE of the unbiased moment estimator beside lmer's
# REML over simulated unbalanced designs, and time at 10^5 / 10^6 rows.
# Run from the package root: Rscript bench/slopes.R  (a few minutes).
suppressPackageStartupMessages({ library(fullrandom); library(lme4) })
source("bench/results.R")
set.seed(2026)
reps <- as.integer(Sys.getenv("FR_SLOPES_REPS", "300"))
timing_sizes <- as.numeric(strsplit(Sys.getenv("FR_SLOPES_SIZES", "1e5,1e6"), ",")[[1]])

summarise <- function(est, truth) {
  data.frame(parameter = names(truth), truth = truth,
             bias = colMeans(est) - truth, mc_se = apply(est, 2, sd) / sqrt(nrow(est)),
             rmse = sqrt(colMeans(sweep(est, 2, truth)^2)))
}
lmer_theta <- function(m) {
  vc <- as.data.frame(VarCorr(m))
  vc$vcov
}
# 1. sleepstudy-like: 18 subjects x 10 days, 60% of rows kept.
S <- matrix(c(612, 9.6, 9.6, 35), 2); s2 <- 655
truth1 <- c(`sd(Int)^2` = 612, `cov` = 9.6, `sd(Days)^2` = 35, s2 = 655)
sim1 <- replicate(reps, {
  d <- expand.grid(Days = 0:9, Subject = factor(1:18))
  d <- d[sort(sample(nrow(d), round(0.6 * nrow(d)))), ]
  u <- matrix(rnorm(36), 18) %*% chol(S)
  d$y <- 251 + 10.5 * d$Days + u[d$Subject, 1] + u[d$Subject, 2] * d$Days + rnorm(nrow(d), sd = sqrt(s2))
  f <- suppressMessages(fr_fit(y ~ Days + (Days | Subject), d, threads = 1))
  m <- suppressMessages(lmer(y ~ Days + (Days | Subject), d))
  c(f$theta_raw, f$theta, lmer_theta(m)[c(1, 3, 2, 4)])
})
# 2. crossed y ~ x + (x | user) + (1 | item), unbalanced.
S2 <- matrix(c(1, 0.3, 0.3, 0.5), 2)
truth2 <- c(`user var(Int)` = 1, `user cov` = 0.3, `user var(x)` = 0.5, `item var` = 0.7, s2 = 1)
sim2 <- replicate(reps, {
  n <- 1500
  d <- data.frame(user = factor(sample(100, n, TRUE, prob = rexp(100))),
                  item = factor(sample(40, n, TRUE, prob = rexp(40))), x = rnorm(n))
  u <- matrix(rnorm(200), 100) %*% chol(S2)
  d$y <- 1 + 0.5 * d$x + u[d$user, 1] + u[d$user, 2] * d$x + rnorm(40, sd = sqrt(0.7))[d$item] + rnorm(n)
  f <- suppressMessages(fr_fit(y ~ x + (x | user) + (1 | item), d, threads = 1))
  m <- suppressMessages(lmer(y ~ x + (x | user) + (1 | item), d))
  vc <- lmer_theta(m) # user var(Int), var(x), cov, item, residual
  c(f$theta_raw, f$theta, vc[c(1, 3, 2, 4, 5)])
})
table_of <- function(sim, truth) {
  k <- length(truth)
  raw <- summarise(t(sim[1:k, ]), truth)
  proj <- summarise(t(sim[k + 1:k, ]), truth)
  lm4 <- summarise(t(sim[2 * k + 1:k, ]), truth)
  sprintf("| %s | %.3g | %.3g (%.2g) | %.3g | %.3g | %.3g | %.3g |", names(truth), truth, raw$bias,
          raw$mc_se, raw$rmse, proj$rmse, lm4$bias, lm4$rmse)
}
header <- c("| parameter | truth | bias raw (MC se) | RMSE raw | RMSE projected | lmer bias | lmer RMSE |",
            "|---|---|---|---|---|---|---|")
# 3. time at 10^5 and 10^6 rows, crossed slopes.
timing <- lapply(timing_sizes[!is.na(timing_sizes)], function(n) {
  d <- data.frame(user = factor(sample(n / 20, n, TRUE)), item = factor(sample(2000, n, TRUE)),
                  x = rnorm(n))
  d$y <- 1 + d$x + rnorm(n / 20)[d$user] * (1 + d$x) + rnorm(2000)[d$item] + rnorm(n)
  t_fr <- system.time(fr_fit(y ~ x + (x | user) + (1 | item), d, threads = 2))[["elapsed"]]
  t_int <- system.time(fr_fit(y ~ x + (1 | user) + (1 | item), d, threads = 2))[["elapsed"]]
  t_lmer <- if (n <= 1e5) system.time(suppressMessages(lmer(y ~ x + (x | user) + (1 | item), d)))[["elapsed"]] else NA
  sprintf("| %s | %.2f | %.2f | %s |", format(n, big.mark = ",", scientific = FALSE), t_fr, t_int,
          if (is.na(t_lmer)) "not run" else sprintf("%.1f", t_lmer))
})
lines <- c(
  sprintf("Random slopes, method = \"moments\" (%d replicates per design).", reps), "",
  "sleepstudy-like, 60% of rows kept, `y ~ Days + (Days | Subject)`:", "", header, table_of(sim1, truth1), "",
  "Crossed, unbalanced, `y ~ x + (x | user) + (1 | item)` (1500 rows, 100 users, 40 items):", "",
  header, table_of(sim2, truth2), "",
  "Time (seconds, 2 threads), `y ~ x + (x | user) + (1 | item)` beside the intercept-only fit and lmer:", "",
  "| rows | slopes | intercepts only | lmer |", "|---|---|---|---|", unlist(timing))
write_results_section("slopes", lines)
cat(lines, sep = "\n")
