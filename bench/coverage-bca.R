# A check behind a sentence of vignettes/intervals.Rmd, not part of `make bench`: on the
# one-way design of bench/coverage.R, do bias-corrected and accelerated (BCa) intervals
# cover better than the percentile intervals confint() gives? The acceleration comes from
# a jackknife over the groups (each group left out once, through the bootstrap's own
# replicate fit with multiplicities 1 and one 0), the bias correction from the share of
# replicates below the estimate; variances on the centred variance scale, as confint().
#   Rscript bench/coverage-bca.R [first seed] [last seed]     (about 4 s per 100 seeds)
suppressPackageStartupMessages(library(fullrandom))
source("bench/coverage-designs.R")

seeds <- as.integer(commandArgs(TRUE))
seeds <- if (length(seeds) == 2L) seeds[1]:seeds[2] else 1:500
truth <- c(one_way_truth[1:2]^2, one_way_truth[3])  # variances, then the intercept
z <- qnorm(c(0.025, 0.975))

covered <- t(vapply(seeds, function(seed) {
  data <- one_way(seed)
  fit <- fr_fit(y ~ 1 + (1 | g), data, threads = 1)
  boot <- fr_bootstrap(fit, nsim = 200, seed = seed, threads = 1, progress = FALSE)
  raw <- attr(boot, "raw")
  estimate <- c(fit$theta_raw, fit$coefficients)
  replicates <- cbind(sweep(raw, 2L, colMeans(raw) - fit$theta_raw), boot[["(Intercept)"]])
  model <- fullrandom:::bootstrap_model(fit)
  n_groups <- nlevels(data$g)
  left_out <- t(vapply(seq_len(n_groups), function(g) {
    w <- replace(rep(1L, n_groups), g, 0L)
    out <- fullrandom:::fr_bootstrap_fit(model$model, "moments", integer(), 1L, 0, 1L, NULL, list(w))
    c(out$raw, out$coef)
  }, numeric(3)))
  influence <- sweep(-left_out, 2L, colMeans(left_out), "+")
  acceleration <- colSums(influence^3) / (6 * colSums(influence^2)^1.5)
  bias <- qnorm(pmin(pmax(colMeans(sweep(replicates, 2L, estimate, "<")), 1e-3), 1 - 1e-3))
  inside <- function(limits) limits[1, ] <= truth & truth <= limits[2, ]
  percentile <- apply(replicates, 2L, quantile, probs = pnorm(z), names = FALSE)
  bca <- vapply(1:3, function(j) {
    probs <- pnorm(bias[j] + (bias[j] + z) / (1 - acceleration[j] * (bias[j] + z)))
    quantile(replicates[, j], probs, names = FALSE)
  }, numeric(2))
  c(inside(percentile), inside(bca))
}, logical(6)))
colnames(covered) <- paste(rep(c("percentile", "BCa"), each = 3), c("s_a", "s_e", "intercept"))
cat(sprintf("%d data sets, 200 replicates each; coverage of 95%% intervals:\n", length(seeds)))
print(round(colMeans(covered), 3))
