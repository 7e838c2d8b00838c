# The smooth alternative to the NPMLE (issue 23): posterior means under Efron's log-spline
# g-model (fr_distribution(method = "gmodel"), df by AIC among 3:12) against the NPMLE's,
# the BLUPs and the oracle Bayes rule, on the designs of bench/mixing.R. Writes its
# section of bench/results.md. Rscript bench/mixing-gmodel.R [reps at 10^3 levels, default 50]
suppressMessages(library(fullrandom))
source("bench/results.R")
started <- Sys.time()
args <- commandArgs(trailingOnly = TRUE)
reps_small <- if (length(args)) as.integer(args[[1]]) else 50L
source("bench/mixing-designs.R")
oracle_means <- function(center, d, v) {
  grid <- seq(min(center), max(center), length.out = 1000)
  w <- tabulate(findInterval(center, grid, all.inside = TRUE), 1000)
  fullrandom:::fr_npmle_posterior_means(grid, w / sum(w), unname(d), unname(v), 1L)
}
one_run <- function(law, G, sizes) {
  n <- draw_sizes(G, sizes)
  alpha <- draw_alpha(G, law)
  g <- rep(seq_len(G), n)
  dat <- data.frame(y = 1 + alpha[g] + rnorm(length(g)), g = factor(g, levels = seq_len(G)))
  fit <- fr_fit(y ~ 1 + (1 | g), data = dat, threads = 1)
  center <- alpha + 1 - fit$coefficients[[1]]
  np <- fr_distribution(fit, threads = 1, method = "npmle")
  t0 <- proc.time()[["elapsed"]]
  gm <- fr_distribution(fit, threads = 1, method = "gmodel")
  t_gm <- proc.time()[["elapsed"]] - t0
  mse <- function(u) mean((u - center)^2)
  c(blup = mse(fit$ranef_values$g), npmle = mse(fullrandom:::npmle_ranef(np)),
    gmodel = mse(fullrandom:::npmle_ranef(gm)), oracle = mse(oracle_means(center, np$d, np$v)),
    df = gm$df, converged = gm$converged, seconds = t_gm)
}
designs <- rbind(
  expand.grid(law = c("normal", "gamma", "bimodal", "t3", "spike"), sizes = c("balanced", "poisson"),
              G = 1000, reps = reps_small, stringsAsFactors = FALSE),
  data.frame(law = c("normal", "gamma", "bimodal"), sizes = "zipf", G = 1000, reps = reps_small),
  data.frame(law = c("normal", "bimodal", "spike"), sizes = "poisson", G = 1e5, reps = 2L)
)
RNGkind("L'Ecuyer-CMRG")
set.seed(20231)
rows <- lapply(seq_len(nrow(designs)), function(i) {
  des <- designs[i, ]
  r <- do.call(rbind, parallel::mclapply(seq_len(des$reps), function(k) one_run(des$law, des$G, des$sizes),
                                         mc.cores = 2L, mc.set.seed = TRUE))
  R <- nrow(r)
  ratio <- function(col) {
    q <- mean(r[, col]) / mean(r[, "blup"])
    c(q, stats::sd(r[, col] - q * r[, "blup"]) / sqrt(R) / mean(r[, "blup"]))
  }
  out <- data.frame(des, npmle = ratio("npmle")[1], npmle_se = ratio("npmle")[2],
                    gmodel = ratio("gmodel")[1], gmodel_se = ratio("gmodel")[2],
                    oracle = ratio("oracle")[1], df = mean(r[, "df"]), converged = mean(r[, "converged"]),
                    seconds = mean(r[, "seconds"]))
  cat(sprintf("%s %s %g: NPMLE %.4f (%.4f) g-model %.4f (%.4f) oracle %.4f df %.1f\n", des$law, des$sizes,
              des$G, out$npmle, out$npmle_se, out$gmodel, out$gmodel_se, out$oracle, out$df))
  out
})
res <- do.call(rbind, rows)
f <- function(x, k = 4) formatC(x, digits = k, format = "f")
lines <- c(
  "## The mixing distribution: the log-spline g-model beside the NPMLE",
  "",
  sprintf(paste(
    "From `bench/mixing-gmodel.R %d`, the one-term designs of `bench/mixing.R`: the MSE of the posterior",
    "means under the NPMLE (`method = \"npmle\"`) and under Efron's log-spline g-model",
    "(`method = \"gmodel\"`, natural spline df chosen by AIC among 3:12, penalty |b|), and of the oracle",
    "Bayes rule, each divided by the BLUPs' MSE (ratio of means over `reps` data sets, delta-method Monte",
    "Carlo se). Time: the g-model's fit (all 10 df), one thread, loaded machine. Run time %.0f s."),
    reps_small, as.numeric(difftime(Sys.time(), started, units = "secs"))),
  "",
  "| effects | sizes | levels | reps | NPMLE/BLUP (se) | g-model/BLUP (se) | oracle/BLUP | mean df | converged | g-model s |",
  "|---|---|---|---|---|---|---|---|---|---|",
  sprintf("| %s | %s | %d | %d | %s (%s) | %s (%s) | %s | %.1f | %.2f | %.2f |", res$law, res$sizes,
          as.integer(res$G), as.integer(res$reps), f(res$npmle), f(res$npmle_se), f(res$gmodel),
          f(res$gmodel_se), f(res$oracle), res$df, res$converged, res$seconds))
write_results_section("mixing-gmodel", lines, readme = "/nonexistent")
cat(lines, sep = "\n")
