# The analytic SEs (normal-theory and cluster-robust) of the raw moment estimates against their Monte Carlo sd
# on a 10^6-row crossed design: 2000 users x 1000 items, ratings at random (50% of the
# cells), a covariate of every rating; s_a = 1, s_b = 0.7, s_e = 1.2. REPS data sets
# (default 200). Run from the package root with R_LIBS set to the built library.
suppressPackageStartupMessages(library(fullrandom))
reps <- as.integer(Sys.getenv("REPS", "200"))
large_crossed <- function(seed) {
  set.seed(seed)
  n <- 1e6
  u <- sample(2000L, n, TRUE)
  v <- sample(1000L, n, TRUE)
  x <- rnorm(n)
  data.frame(y = 2 + 0.5 * x + rnorm(2000L)[u] + rnorm(1000L, sd = 0.7)[v] + rnorm(n, sd = 1.2),
             x = x, u = factor(u), v = factor(v))
}
started <- Sys.time()
raw <- se <- robust <- NULL
fit_s <- se_s <- robust_s <- 0
for (s in seq_len(reps)) {
  d <- large_crossed(s)
  fit_s <- fit_s + system.time(fit <- fr_fit(y ~ x + (1 | u) + (1 | v), d, threads = 2))[["elapsed"]]
  se_s <- se_s + system.time(v <- fullrandom:::moment_vcov_normal(fit))[["elapsed"]]
  robust_s <- robust_s + system.time(r <- fullrandom:::moment_vcov(fit))[["elapsed"]]
  raw <- rbind(raw, fit$theta_raw[rownames(v)])
  se <- rbind(se, sqrt(diag(v)))
  robust <- rbind(robust, sqrt(diag(r)))
}
cat(sprintf(paste("%d data sets of 10^6 rows (%.0f s): fit %.2f s, normal-theory SEs %.2f s,",
                  "cluster-robust SEs %.2f s (means)\n"), reps,
            as.numeric(difftime(Sys.time(), started, units = "secs")), fit_s / reps, se_s / reps, robust_s / reps))
mc <- apply(raw, 2, sd)
print(rbind(mc_sd = mc, normal_rms_se = sqrt(colMeans(se^2)), normal_ratio = sqrt(colMeans(se^2)) / mc,
            robust_ratio = sqrt(colMeans(robust^2)) / mc), digits = 3)
