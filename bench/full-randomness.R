# Matloff's model (3), rating = c1 + c2 N_i + a_i + e, fitted with
# fr_fit(rating ~ size(user) + (1 | user), method = "fr") on 400 simulated data sets
# per scenario: bias of the size() coefficient (with its Monte Carlo standard error),
# the mean Wald standard error against the spread of the estimates, and the coverage
# of the 95% Wald interval; the same for the default method. Writes
# its section of bench/results.md (and README.md).
suppressPackageStartupMessages(library(fullrandom))
source("bench/results.R")

replications <- 400L
truth <- list(intercept = 3.5, size_slope = -0.02, sd_user = 0.5, sd_rating = 1)
scenarios <- list(
  list(name = "geometric sizes, mean 20, 500 users", n_users = 500, mean_ratings = 20,
       size_distribution = "geometric"),
  list(name = "lognormal sizes (heavy tail), mean 20, 500 users", n_users = 500,
       mean_ratings = 20, size_distribution = "lognormal"),
  list(name = "geometric sizes, mean 8, 150 users", n_users = 150, mean_ratings = 8,
       size_distribution = "geometric")
)

one_scenario <- function(sc, seed) {
  set.seed(seed)
  draws <- vapply(seq_len(replications), function(i) {
    d <- simulate_ratings(
      n_users = sc$n_users, mean_ratings = sc$mean_ratings, intercept = truth$intercept,
      size_slope = truth$size_slope, sd_user = truth$sd_user, sd_rating = truth$sd_rating,
      size_distribution = sc$size_distribution
    )
    out <- numeric()
    for (method in c("fr", "moments")) {
      # method = "fr" refuses data where its equations leave no residual variance.
      fit <- tryCatch(
        suppressMessages(fr_fit(rating ~ size(user) + (1 | user), data = d, method = method)),
        error = function(e) NULL
      )
      out <- c(out, if (is.null(fit)) rep(NA_real_, 4) else c(
        fixef(fit)[["size(user)"]], sqrt(vcov(fit)[2, 2]),
        fit$theta[["user"]], fit$theta[["Residual"]]
      ))
    }
    out
  }, numeric(8))
  rows <- lapply(c(fr = 0, moments = 4), function(at) {
    ok <- !is.na(draws[at + 1, ])
    b <- draws[at + 1, ok]
    se <- draws[at + 2, ok]
    data.frame(
      fits = sum(ok),
      estimate_mean = mean(b),
      bias = mean(b) - truth$size_slope,
      bias_mc_se = sd(b) / sqrt(length(b)),
      sd_estimates = sd(b),
      mean_wald_se = mean(se),
      coverage_95 = mean(abs(b - truth$size_slope) <= qnorm(0.975) * se),
      s2_user_mean = mean(draws[at + 3, ok]),
      s2_residual_mean = mean(draws[at + 4, ok])
    )
  })
  cbind(scenario = sc$name, method = names(rows), do.call(rbind, rows))
}

elapsed <- system.time(
  results <- do.call(rbind, Map(one_scenario, scenarios, 20261121L + seq_along(scenarios)))
)[["elapsed"]]
rownames(results) <- NULL
print(results, digits = 4)

fmt <- function(x, digits = 4) formatC(x, digits = digits, format = "g")
lines <- c(
  "## Full Randomness: the size() coefficient in simulation",
  "",
  sprintf(paste0(
    "From `bench/full-randomness.R`: %d data sets per scenario from `simulate_ratings()`, ",
    "rating = %g + (%g) N_i + a_i + e with sd(a) = %g, sd(e) = %g, fitted with ",
    "`fr_fit(rating ~ size(user) + (1 | user), method = m)`. Coverage is that of the 95%% ",
    "Wald interval `estimate +/- 1.96 se` with the standard error from `vcov()`; a ",
    "coverage estimate from %d replications has a Monte Carlo standard error of about %.3f. ",
    "`fits` counts the data sets fitted: `method = \"fr\"` stops with an error when its ",
    "equations leave no positive residual variance, which happens when a few very large ",
    "groups dominate (heavy-tailed sizes); the other columns are over the fitted data sets. ",
    "Run time %.0f s (R %s, fullrandom %s)."
  ), replications, truth$intercept, truth$size_slope, truth$sd_user, truth$sd_rating,
  replications, sqrt(0.95 * 0.05 / replications), elapsed,
  paste(R.version$major, R.version$minor, sep = "."), utils::packageVersion("fullrandom")),
  "",
  "| scenario | method | fits | mean estimate | bias (MC se) | sd of estimates | mean Wald se | coverage | mean s2_user (0.25) | mean s2_resid (1) |",
  "|---|---|---|---|---|---|---|---|---|---|",
  sprintf("| %s | %s | %d | %s | %s (%s) | %s | %s | %.3f | %s | %s |",
          results$scenario, results$method, results$fits, fmt(results$estimate_mean, 5), fmt(results$bias, 2),
          fmt(results$bias_mc_se, 2), fmt(results$sd_estimates, 3), fmt(results$mean_wald_se, 3),
          results$coverage_95, fmt(results$s2_user_mean, 3), fmt(results$s2_residual_mean, 3))
)
write_results_section("full-randomness", lines)
cat(lines, sep = "\n")
