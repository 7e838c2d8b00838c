# The time of fr_distribution() and the posterior means at 2 x 10^5 levels (bimodal effects,
# Poisson(4) sizes), the default (method = "auto") beside the NPMLE alone, best of 5 on 2
# threads. Run from the package root: Rscript bench/mixing-time.R
suppressMessages(library(fullrandom))
source("bench/mixing-designs.R")
fit <- timing_fit()
for (m in c("auto", "npmle")) {
  load1 <- strsplit(readLines("/proc/loadavg"), " ")[[1]][1]
  times <- t(replicate(5, {
    tm <- system.time({ d <- fr_distribution(fit, threads = 2, method = m); eb <- fullrandom:::npmle_ranef(d) })
    c(elapsed = tm[["elapsed"]], cpu = tm[["user.self"]] + tm[["sys.self"]])
  }))
  b <- times[which.min(times[, 1]), ]
  cat(sprintf("%s: best of 5 %.2f s elapsed, %.2f s CPU; all elapsed %s; load before %s\n", m, b[1], b[2],
              paste(sprintf("%.2f", times[, 1]), collapse = ", "), load1))
}
