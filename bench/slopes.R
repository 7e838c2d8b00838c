# Random slopes (issue 20): bias and RMSE of the unbiased moment estimator and of the
# efficient one (one MINQUE step from it) beside lmer's REML over simulated unbalanced
# designs, on the same data sets, and time and peak memory from 10^5 rows to the
# shape of MovieLens ml-32m beside the intercept-only fit of the same data.
# Run from the package root: Rscript bench/slopes.R  (the simulations take a few minutes,
# the sizes up to 32 million rows about ten more).
#   FR_SLOPES_REPS: data sets per simulated design (300); 0 skips the simulations and
#     keeps their tables from bench/results.md.
#   FR_SLOPES_SIZES: rows of the timed fits (1e5,1e6,1e7,32000204); 0 skips the timing and
#     keeps its table from bench/results.md.
#   FR_SLOPES_LMER_MAX: lmer is timed up to this many rows (0: not run; it took 10 minutes
#     at 10^5 rows on a loaded machine).
suppressPackageStartupMessages({ library(fullrandom); library(lme4) })
source("bench/results.R")
set.seed(2026)
reps <- as.integer(Sys.getenv("FR_SLOPES_REPS", "300"))
timing_sizes <- as.numeric(strsplit(Sys.getenv("FR_SLOPES_SIZES", "1e5,1e6,1e7,32000204"), ",")[[1]])
lmer_max <- as.numeric(Sys.getenv("FR_SLOPES_LMER_MAX", "0"))

summarise <- function(est, truth) {
  data.frame(parameter = names(truth), truth = truth,
             bias = colMeans(est) - truth, mc_se = apply(est, 2, sd) / sqrt(nrow(est)),
             rmse = sqrt(colMeans(sweep(est, 2, truth)^2)))
}
lmer_theta <- function(m) {
  vc <- as.data.frame(VarCorr(m))
  vc$vcov
}
# The efficient fit's raw and projected components (NA if it fails: counted below).
# With `probes`, also the probes of the first term and the largest ratio of the probes' sd
# to the sampling sd.
efficient_theta <- function(form, d, probes = FALSE) {
  f <- tryCatch(suppressMessages(fr_fit(form, d, method = "efficient", threads = 1)), error = function(e) NULL)
  # One parameter per variable of these formulas: Sigma's three entries (one term with
  # (1 + x)) plus s2, and the item's variance in the crossed design.
  if (is.null(f)) return(rep(NA_real_, 2L * (length(all.vars(form)) + 1L) + 2L * probes))
  c(f$theta_raw, f$theta,
    if (probes) c(f$efficient$probes[[1]], max(f$efficient$probe_sd / f$efficient$model_sd)))
}
if (reps > 0) {
  # 1. sleepstudy-like: 18 subjects x 10 days, 60% of rows kept.
  S <- matrix(c(612, 9.6, 9.6, 35), 2); s2 <- 655
  truth1 <- c(`sd(Int)^2` = 612, `cov` = 9.6, `sd(Days)^2` = 35, s2 = 655)
  sim1 <- replicate(reps, {
    d <- expand.grid(Days = 0:9, Subject = factor(1:18))
    d <- d[sort(sample(nrow(d), round(0.6 * nrow(d)))), ]
    u <- matrix(rnorm(36), 18) %*% chol(S)
    d$y <- 251 + 10.5 * d$Days + u[d$Subject, 1] + u[d$Subject, 2] * d$Days + rnorm(nrow(d), sd = sqrt(s2))
    f <- suppressMessages(fr_fit(y ~ Days + (Days | Subject), d, threads = 1))
    e <- efficient_theta(y ~ Days + (Days | Subject), d)
    m <- suppressMessages(lmer(y ~ Days + (Days | Subject), d))
    c(f$theta_raw, f$theta, lmer_theta(m)[c(1, 3, 2, 4)], e)
  })
  # 2. crossed y ~ x + (x | user) + (1 | item), unbalanced.
  S2 <- matrix(c(1, 0.3, 0.3, 0.5), 2)
  truth2 <- c(`user var(Int)` = 1, `user cov` = 0.3, `user var(x)` = 0.5, `item var` = 0.7, s2 = 1)
  # One crossed data set of n rows (users and items with exponential popularity), fitted
  # by the moments, the efficient step (traces by probes if `probes`) and lmer, with the
  # seconds of each.
  crossed_replicate <- function(n, users, items, probes) {
    d <- data.frame(user = factor(sample(users, n, TRUE, prob = rexp(users))),
                    item = factor(sample(items, n, TRUE, prob = rexp(items))), x = rnorm(n))
    u <- matrix(rnorm(2 * users), users) %*% chol(S2)
    d$y <- 1 + 0.5 * d$x + u[d$user, 1] + u[d$user, 2] * d$x + rnorm(items, sd = sqrt(0.7))[d$item] + rnorm(n)
    t0 <- proc.time()[[3]]
    f <- suppressMessages(fr_fit(y ~ x + (x | user) + (1 | item), d, threads = 1))
    t1 <- proc.time()[[3]]
    e <- efficient_theta(y ~ x + (x | user) + (1 | item), d, probes = probes)
    t2 <- proc.time()[[3]]
    m <- suppressMessages(lmer(y ~ x + (x | user) + (1 | item), d))
    t3 <- proc.time()[[3]]
    vc <- lmer_theta(m) # user var(Int), var(x), cov, item, residual
    c(f$theta_raw, f$theta, vc[c(1, 3, 2, 4, 5)], e, t1 - t0, t2 - t1, t3 - t2)
  }
  sim2 <- replicate(reps, crossed_replicate(1500, 100, 40, probes = FALSE))
  # 3. the same model on a larger crossed design (6000 rows, 400 users, 150 items): more
  # than 500 random effects, so the efficient step estimates its traces by probes.
  sim3 <- replicate(reps, crossed_replicate(6000, 400, 150, probes = TRUE))
}
# The data sets where every method gave estimates (the efficient fit may fail).
complete_sets <- function(sim) sim[, colSums(is.na(sim)) == 0, drop = FALSE]
table_of <- function(sim, truth) {
  k <- length(truth)
  sim <- complete_sets(sim)
  raw <- summarise(t(sim[1:k, ]), truth)
  proj <- summarise(t(sim[k + 1:k, ]), truth)
  lm4 <- summarise(t(sim[2 * k + 1:k, ]), truth)
  eff <- summarise(t(sim[3 * k + 1:k, ]), truth)
  eff_proj <- summarise(t(sim[4 * k + 1:k, ]), truth)
  sprintf("| %s | %.3g | %.3g (%.2g) | %.3g | %.3g | %.3g (%.2g) | %.3g | %.3g | %.3g | %.3g | %.2f | %.2f |",
          names(truth), truth, raw$bias, raw$mc_se, raw$rmse, proj$rmse, eff$bias, eff$mc_se, eff$rmse,
          eff_proj$rmse, lm4$bias, lm4$rmse, proj$rmse / lm4$rmse, eff_proj$rmse / lm4$rmse)
}
header <- c(paste("| parameter | truth | moments bias raw (MC se) | moments RMSE raw | moments RMSE projected |",
                  "efficient bias raw (MC se) | efficient RMSE raw | efficient RMSE projected | lmer bias | lmer RMSE |",
                  "moments / lmer RMSE | efficient / lmer RMSE |"),
            "|---|---|---|---|---|---|---|---|---|---|---|---|")
# The probes of the efficient fits and the seconds per fit (design 3).
probe_line <- function(sim) {
  sim <- complete_sets(sim)
  sprintf(paste("Probes per term of the efficient fits: %s (median %g); the probes' sd at most %.3f of the sampling",
                "sd. Seconds per fit (1 thread, mean): moments %.3f, efficient %.3f, lmer %.2f."),
          paste(range(sim[26, ]), collapse = "-"), stats::median(sim[26, ]), max(sim[27, ]),
          mean(sim[28, ]), mean(sim[29, ]), mean(sim[30, ]))
}
# Data sets used and the efficient fits that failed.
failures <- function(sim) sprintf("%d data sets; efficient fits that failed: %d.", ncol(sim), sum(is.na(sim[nrow(sim), ])))
# 3. time and peak memory: simulate_crossed() data shaped as bench/scale.R's (ml-32m at
# 32,000,204 rows) with a random slope of x per user, each fit in a fresh R process
# (bench/scale-child.R: the best of 3 calls, or of 5 timed batches below 1 s).
child <- function(file, form, tool = "fr_fit") {
  line <- system2(file.path(R.home("bin"), "Rscript"), c("bench/scale-child.R", file, 2, tool, shQuote(form)),
                  stdout = TRUE)
  pairs <- strsplit(strsplit(trimws(line[length(line)]), " ")[[1]], "=")
  stats::setNames(as.numeric(vapply(pairs, `[`, "", 2)), vapply(pairs, `[`, "", 1))
}
timing_sizes <- timing_sizes[!is.na(timing_sizes) & timing_sizes > 0]
old_section <- function() {
  old <- readLines("bench/results.md")
  from <- match("<!-- bench:slopes -->", old) + 1L
  to <- match("<!-- /bench:slopes -->", old) - 1L
  time_at <- grep("^Time \\(seconds", old)
  list(old = old, from = from, to = to, time_at = time_at[time_at > from][1])
}
timing_lines <- if (length(timing_sizes) > 0) {
  timing <- lapply(timing_sizes, function(n) {
    ml <- n == 32000204
    d <- simulate_crossed(n, n_users = if (ml) 200948 else max(2, round(n / 160)),
                          n_items = if (ml) 84432 else max(2, round(n / 380)), seed = 20261130)
    d$y <- d$y + rnorm(nlevels(d$user), sd = 0.3)[d$user] * d$x
    file <- tempfile(fileext = ".rds")
    saveRDS(d, file, compress = FALSE)
    rm(d)
    on.exit(unlink(file))
    int <- child(file, "y ~ x + (1 | user) + (1 | item)")
    slo <- child(file, "y ~ x + (1 + x | user) + (1 | item)")
    lm4 <- if (n <= lmer_max) child(file, "y ~ x + (1 + x | user) + (1 | item)", "lmer")[["time"]] else NA
    cat(n, "rows:", slo[["full"]], "s slopes,", int[["full"]], "s intercepts\n")
    c(n = n, users = slo[["users"]], items = slo[["items"]], slopes = slo[["full"]], intercepts = int[["full"]],
      data = slo[["data_mb"]], peak_slopes = slo[["peak_mb"]], peak_intercepts = int[["peak_mb"]], lmer = lm4)
  })
  timing <- as.data.frame(do.call(rbind, timing))
  load_now <- strsplit(readLines("/proc/loadavg"), " ")[[1]][1:3]
  c(
    sprintf(paste("Time (seconds, 2 threads, each fit in a fresh R process) of `y ~ x + (1 + x | user) + (1 | item)`",
                  "beside the intercept-only fit `y ~ x + (1 | user) + (1 | item)` of the same `simulate_crossed()`",
                  "data (power-law users and items, shaped as ml-32m at 32,000,204 rows) with a random slope of x per",
                  "user (sd 0.3); *peak*: the process's peak resident memory (VmHWM), which holds the data frame",
                  "(*data*). Load average at the end: %s."), paste(load_now, collapse = " ")), "",
    "| rows | users | items | slopes | intercepts only | slopes / intercepts | ns per row (slopes) | data (MB) | peak slopes (MB) | peak / data | peak intercepts (MB) | lmer |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
    sprintf("| %s | %s | %s | %.3g | %.3g | %.1fx | %.0f | %.0f | %.0f | %.2f | %.0f | %s |",
            format(timing$n, big.mark = ",", scientific = FALSE), format(timing$users, big.mark = ","),
            format(timing$items, big.mark = ","), timing$slopes, timing$intercepts, timing$slopes / timing$intercepts,
            timing$slopes / timing$n * 1e9, timing$data, timing$peak_slopes, timing$peak_slopes / timing$data,
            timing$peak_intercepts, ifelse(is.na(timing$lmer), "not run", sprintf("%.1f", timing$lmer))))
} else {
  # The time table (and its notes) as the last timed run wrote them.
  o <- old_section()
  o$old[o$time_at:o$to]
}
simulation_lines <- if (reps > 0) {
  load_sim <- strsplit(readLines("/proc/loadavg"), " ")[[1]][1:3]
  c("## Random slopes (bench/slopes.R)", "",
    sprintf(paste(
      "`FR_SLOPES_REPS=%d Rscript bench/slopes.R`, run on %s (load average at the end of the simulations: %s):",
      "random slopes by method = \"moments\" and method = \"efficient\" (one MINQUE step from the moment",
      "estimates) on the same %d data sets per design. *bias raw*: of the unbiased (unprojected) estimates,",
      "with its Monte Carlo se; *RMSE projected*: after clipping Sigma to the positive semidefinite matrices;",
      "lmer: REML on the same data sets; the ratios are projected RMSE over lmer's."),
      reps, format(Sys.Date()), paste(load_sim, collapse = " "), reps), "",
    "sleepstudy-like, 60% of rows kept, `y ~ Days + (Days | Subject)`:", "", header, table_of(sim1, truth1), "",
    failures(sim1), "",
    "Crossed, unbalanced, `y ~ x + (x | user) + (1 | item)` (1500 rows, 100 users, 40 items):", "",
    header, table_of(sim2[1:25, ], truth2), "", failures(sim2[1:25, ]), "",
    "Crossed, unbalanced, the same model with 6000 rows, 400 users, 150 items (950 random effects: traces by probes):", "",
    header, table_of(sim3[1:25, ], truth2), "", failures(sim3[1:25, ]),
    probe_line(sim3), "")
} else {
  # The simulation tables (and their notes) as the last full run wrote them.
  o <- old_section()
  o$old[o$from:(o$time_at - 1L)]
}
lines <- c(simulation_lines, timing_lines)
write_results_section("slopes", lines)
cat(lines, sep = "\n")
