# The mixing distribution (issue 23): NPMLE of a term's effects, empirical Bayes
# posterior means against the BLUPs and the oracle Bayes rule, and 90% prediction
# intervals, over effect distributions, level sizes, numbers of levels and a crossed
# design, with Monte Carlo standard errors; and the time for 2e5 levels. Writes its
# section of bench/results.md. Replicates run on 2 processes (parallel::mclapply), each
# fit on one thread. Rscript bench/mixing.R [reps at 10^3 levels, default 100]
suppressMessages(library(fullrandom))
source("bench/results.R")
started <- Sys.time()
args <- commandArgs(trailingOnly = TRUE)
reps_small <- if (length(args)) as.integer(args[[1]]) else 100L
cores <- 2L

source("bench/mixing-designs.R")
w1 <- function(x, wx, y) {  # Wasserstein-1 between a discrete law and a sample
  pts <- sort(unique(c(x, y)))
  Fx <- stats::approx(x = sort(x), y = cumsum(wx[order(x)]), xout = pts, method = "constant",
                      yleft = 0, rule = 2, ties = max)$y
  Fy <- stats::ecdf(y)(pts)
  sum(abs(Fx - Fy)[-length(pts)] * diff(pts))
}
# The oracle Bayes rule: posterior means under the true effects' (empirical) distribution,
# binned on 1000 points, with the same level means and noise variances as the estimate.
oracle_means <- function(center, d, v) {
  grid <- seq(min(center), max(center), length.out = 1000)
  w <- tabulate(findInterval(center, grid, all.inside = TRUE), 1000)
  w <- w / sum(w)
  fullrandom:::fr_npmle_posterior_means(grid, w, unname(d), unname(v), 1L)
}
one_run <- function(law, G, sizes, crossed, n_pred) {
  n <- draw_sizes(G, sizes)
  alpha <- draw_alpha(G, law)
  g <- rep(seq_len(G), n)
  y <- 1 + alpha[g] + rnorm(length(g))
  dat <- data.frame(y = y, g = factor(g, levels = seq_len(G)))
  items <- 200
  zipf <- 1 / seq_len(items)
  b <- rnorm(items, 0, 0.4)
  if (crossed) {
    h <- sample.int(items, length(g), replace = TRUE, prob = zipf)
    dat$h <- factor(h, levels = seq_len(items))
    dat$y <- dat$y + b[h]
    fit <- fr_fit(y ~ 1 + (1 | g) + (1 | h), data = dat, threads = 1)
  } else {
    fit <- fr_fit(y ~ 1 + (1 | g), data = dat, threads = 1)
  }
  d <- fr_distribution(fit, "g", threads = 1)
  blup <- fit$ranef_values$g
  eb <- fullrandom:::npmle_ranef(d)
  # the NPMLE alone (method = "npmle"), to show what the default's choice does
  eb_npmle <- if (d$method == "npmle") eb else fullrandom:::npmle_ranef(fr_distribution(fit, "g", threads = 1, method = "npmle"))
  center <- alpha + 1 - fit$coefficients[[1]]  # the effects on the fit's scale
  oracle <- oracle_means(center, d$d, d$v)
  # one new observation in n_pred levels (all of them at 10^3 levels)
  at <- if (n_pred >= G) seq_len(G) else sort(sample.int(G, n_pred))
  nd <- data.frame(g = factor(at, levels = seq_len(G)))
  ynew <- 1 + alpha[at] + rnorm(length(at))
  if (crossed) {
    hn <- sample.int(items, length(at), replace = TRUE, prob = zipf)
    nd$h <- factor(hn, levels = seq_len(items))
    ynew <- ynew + b[hn]
  }
  p <- predict(fit, nd, interval = "prediction", level = 0.9)
  cov <- ynew >= p[, "lwr"] & ynew <= p[, "upr"]
  covn <- ynew >= p[, "lwr_normal"] & ynew <= p[, "upr_normal"]
  qa <- cut(rank(alpha, ties.method = "random"), 4, labels = FALSE)[at]
  qn <- cut(rank(n, ties.method = "random"), 4, labels = FALSE)[at]
  quart <- function(x, q) vapply(1:4, function(i) mean(x[q == i]), 0)
  c(w1_npmle = w1(d$support$point, d$support$prob, center),
    w1_blup = w1(blup, rep(1 / G, G), center),
    mse_blup = mean((blup - center)^2), mse_eb = mean((eb - center)^2),
    mse_npmle = mean((eb_npmle - center)^2), chose_npmle = d$method == "npmle",
    mse_oracle = mean((oracle - center)^2),
    cover = mean(cov), cover_normal = mean(covn),
    setNames(quart(cov, qa), paste0("qa", 1:4)),
    setNames(quart(covn, qa), paste0("qan", 1:4)),
    setNames(quart(cov, qn), paste0("qn", 1:4)),
    em_steps = if (d$method == "npmle") d$iterations else NA, converged = d$converged)
}

designs <- rbind(
  expand.grid(law = c("normal", "gamma", "bimodal", "t3", "spike"), sizes = c("balanced", "poisson"),
              G = 1000, crossed = FALSE, reps = reps_small, n_pred = 1000, stringsAsFactors = FALSE),
  data.frame(law = c("normal", "gamma", "bimodal"), sizes = "zipf", G = 1000, crossed = FALSE,
             reps = reps_small, n_pred = 1000),
  data.frame(law = c("normal", "gamma", "bimodal"), sizes = "poisson", G = 3000, crossed = TRUE,
             reps = max(10L, reps_small %/% 5L), n_pred = 3000),
  data.frame(law = c("normal", "gamma", "bimodal", "t3", "spike"), sizes = "poisson", G = 1e5,
             crossed = FALSE, reps = 5L, n_pred = 20000)
)
# Time for 2e5 levels on 2 threads: the distribution and the posterior means (fit excluded).
fit <- timing_fit()
load_before <- readLines("/proc/loadavg")
times <- t(replicate(5, {
  tm <- system.time({
    d <- fr_distribution(fit, threads = 2)
    eb <- fullrandom:::npmle_ranef(d)
  })
  c(elapsed = tm[["elapsed"]], cpu = tm[["user.self"]] + tm[["sys.self"]])
}))
load1 <- strsplit(load_before, " ")[[1]][1]
best <- times[which.min(times[, "elapsed"]), ]

RNGkind("L'Ecuyer-CMRG")
set.seed(20230)
rows <- lapply(seq_len(nrow(designs)), function(i) {
  des <- designs[i, ]
  r <- parallel::mclapply(seq_len(des$reps), function(k) {
    one_run(des$law, des$G, des$sizes, des$crossed, des$n_pred)
  }, mc.cores = cores, mc.set.seed = TRUE)
  r <- do.call(rbind, r)
  R <- nrow(r)
  se <- function(x) stats::sd(x) / sqrt(R)
  ratio <- mean(r[, "mse_eb"]) / mean(r[, "mse_blup"])
  ratio_se <- se(r[, "mse_eb"] - ratio * r[, "mse_blup"]) / mean(r[, "mse_blup"])
  ratio_npmle <- mean(r[, "mse_npmle"]) / mean(r[, "mse_blup"])
  ratio_npmle_se <- se(r[, "mse_npmle"] - ratio_npmle * r[, "mse_blup"]) / mean(r[, "mse_blup"])
  qa <- colMeans(r[, paste0("qa", 1:4)])
  qan <- colMeans(r[, paste0("qan", 1:4)])
  qn <- colMeans(r[, paste0("qn", 1:4)])
  worst <- which.min(qa)
  out <- data.frame(
    des, w1_npmle = mean(r[, "w1_npmle"]), w1_blup = mean(r[, "w1_blup"]),
    mse_blup = mean(r[, "mse_blup"]), mse_eb = mean(r[, "mse_eb"]), mse_oracle = mean(r[, "mse_oracle"]),
    ratio = ratio, ratio_se = ratio_se, ratio_npmle = ratio_npmle, ratio_npmle_se = ratio_npmle_se,
    chose_npmle = mean(r[, "chose_npmle"]), oracle_ratio = mean(r[, "mse_oracle"]) / mean(r[, "mse_blup"]),
    cover = mean(r[, "cover"]), cover_se = se(r[, "cover"]), cover_normal = mean(r[, "cover_normal"]),
    qa_min = qa[[worst]], qa_min_se = se(r[, paste0("qa", worst)]), qa_which = worst,
    qa_all = paste(sprintf("%.3f", qa), collapse = " "),
    qan_all = paste(sprintf("%.3f", qan), collapse = " "),
    qn_min = min(qn), em_steps = mean(r[, "em_steps"], na.rm = TRUE), converged = mean(r[, "converged"]),
    stringsAsFactors = FALSE)
  cat(sprintf("%s %s %g %s R=%d NPMLE chosen %.2f ratio %.4f (%.4f) NPMLE alone %.4f oracle %.3f cover %.3f (%.4f) qa %s normal %s\n",
              des$law, des$sizes, des$G, des$crossed, R, out$chose_npmle, ratio, ratio_se, ratio_npmle, out$oracle_ratio,
              out$cover, out$cover_se, out$qa_all, out$qan_all))
  saveRDS(out, file.path(tempdir(), sprintf("mixing-%02d.rds", i)))  # progress
  out
})
res <- do.call(rbind, rows)
saveRDS(res, file.path(tempdir(), "mixing.rds"))

f <- function(x, k = 3) formatC(x, digits = k, format = "f")
lines <- c(
  "## The mixing distribution: NPMLE, empirical Bayes and prediction intervals",
  "",
  sprintf(paste(
    "From `bench/mixing.R %d`: y = 1 + a_g + e, e ~ N(0, 1), effects centred with variance about 1",
    "(normal; gamma(2) scaled; bimodal 0.8 N(-0.5, 0.3^2) + 0.2 N(2, 0.5^2); t3 scaled; spike: 60%% point",
    "mass at 0 + 40%% N(1, 1)); level sizes Poisson(4) (at least 1), 4 rows, or Zipf (P(n = k) ~ k^-2 on",
    "1..500, mean about 4); crossed: plus 200 items with Zipf weights and sd 0.4. `fr_distribution()`",
    "with its defaults (`method = \"auto\"`: the NPMLE (grid spacing a fifth of the median noise sd, 300 to 2000 points; EM+SQUAREM) when the split",
    "likelihood ratio of the NPMLE to the normal is at least 1/alpha = 20, else the normal with the moment",
    "variance, whose posterior means are the BLUPs; 'NPMLE chosen': the fraction of data sets where the NPMLE",
    "was chosen); posterior means (EB) against the BLUPs, the NPMLE's alone (`method = \"npmle\"`) and the",
    "oracle Bayes rule (posterior means under the true effects' empirical distribution, same level",
    "means and noise variances); 90%% prediction intervals (`predict(interval = \"prediction\")`) for one",
    "new observation in every level (20,000 sampled levels at 10^5), the one from the estimate and the normal",
    "one beside it. W1: Wasserstein-1 distance to the true effects' empirical distribution (for BLUPs: of",
    "the BLUPs' empirical distribution). MSE ratios are ratios of the mean MSEs over `reps` data sets",
    "with a delta-method Monte Carlo se; coverages are pooled over the data sets, se from their spread.",
    "Coverage by quartile of the true effect (lowest to highest): from the estimate and normal. Run time %.0f s."),
    reps_small, as.numeric(difftime(Sys.time(), started, units = "secs"))),
  "",
  sprintf(paste(
    "**Time for 2 x 10^5 levels** (Poisson(4) sizes, bimodal; the distribution and the posterior means",
    "of every level, fit excluded, 2 threads): best of 5 %.2f s elapsed, %.2f s CPU (user + system, all",
    "threads); all 5 elapsed: %s s; load average before the runs %s (2 cores shared with other jobs)."),
    best[["elapsed"]], best[["cpu"]], paste(f(times[, "elapsed"], 2), collapse = ", "), load1),
  "",
  paste("| effects | sizes | levels | crossed | reps | NPMLE chosen | W1 estimate | W1 BLUP | MSE BLUP | MSE EB | MSE oracle |",
        "EB/BLUP (se) | NPMLE alone/BLUP (se) | oracle/BLUP | PI cover (se) | normal PI cover | cover by quartile of a | normal, same |",
        "min quartile cover (se) | min cover by quartile of n | EM steps |"),
  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  sprintf("| %s | %s | %d | %s | %d | %.2f | %s | %s | %s | %s | %s | %s (%s) | %s (%s) | %s | %s (%s) | %s | %s | %s | %s (%s) | %s | %s |",
          res$law, res$sizes, as.integer(res$G), res$crossed, as.integer(res$reps), res$chose_npmle, f(res$w1_npmle),
          f(res$w1_blup), f(res$mse_blup), f(res$mse_eb), f(res$mse_oracle), f(res$ratio, 4), f(res$ratio_se, 4),
          f(res$ratio_npmle, 4), f(res$ratio_npmle_se, 4),
          f(res$oracle_ratio), f(res$cover), f(res$cover_se, 4), f(res$cover_normal), res$qa_all,
          res$qan_all, f(res$qa_min), f(res$qa_min_se, 4), f(res$qn_min),
          ifelse(is.nan(res$em_steps), "-", sprintf("%.0f", res$em_steps))))
write_results_section("mixing", lines, readme = "/nonexistent")
cat(lines, sep = "\n")
