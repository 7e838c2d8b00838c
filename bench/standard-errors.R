# Analytic (cluster-robust) standard errors of the raw moment estimates against their Monte
# Carlo sd on designs (i)-(iii) of bench/coverage-designs.R: REPS data sets each (default 200).
# Rscript bench/standard-errors.R from the package root with R_LIBS set to the built library.
suppressMessages(library(fullrandom))
source("bench/coverage-designs.R")
reps <- as.integer(Sys.getenv("REPS", "200"))
check <- function(make, formula) {
  est <- se <- NULL
  for (s in seq_len(reps)) {
    fit <- fr_fit(formula, make(s), threads = 1)
    v <- fullrandom:::moment_vcov(fit)
    est <- rbind(est, fit$theta_raw[rownames(v)]); se <- rbind(se, sqrt(diag(v)))
  }
  print(rbind(mc_sd = apply(est, 2, sd), mean_se = colMeans(se), ratio = colMeans(se) / apply(est, 2, sd),
              rms_ratio = sqrt(colMeans(se^2)) / apply(est, 2, sd)), digits = 3)
}
t0 <- Sys.time()
check(one_way, y ~ 1 + (1 | g))
check(two_way, y ~ x + (1 | u) + (1 | v))
check(three_term, y ~ w + (1 | school/class) + (1 | rater))
print(Sys.time() - t0)
