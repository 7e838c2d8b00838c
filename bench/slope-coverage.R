# Coverage of confint() for random-slope fits: pigeonhole-bootstrap percentile intervals
# (one grouping factor: the cluster bootstrap) of every parameter, and the Wald interval of
# the fixed slope from vcov(), on data sets shaped as sleepstudy (18 subjects x 10 days),
# Reaction ~ Days + (Days | Subject) with true sds 25 and 6, correlation 0.1, sigma 25.
# Writes its section of bench/results.md. FULLRANDOM_BENCH_SLOPE_SETS and
# FULLRANDOM_BENCH_SLOPE_NSIM give a quick run.
suppressPackageStartupMessages(library(fullrandom))
source("bench/results.R")

n_sets <- as.integer(Sys.getenv("FULLRANDOM_BENCH_SLOPE_SETS", "300"))
nsim <- as.integer(Sys.getenv("FULLRANDOM_BENCH_SLOPE_NSIM", "200"))
truth <- c(`sd_(Intercept)|Subject` = 25, `cor_Days.(Intercept)|Subject` = 0.1, `sd_Days|Subject` = 6,
           sigma = 25, `(Intercept)` = 250, Days = 10)
s <- matrix(c(25^2, 0.1 * 25 * 6, 0.1 * 25 * 6, 6^2), 2)
started <- Sys.time()
one_set <- function(r) {
  set.seed(1000 + r)
  d <- expand.grid(Days = 0:9, Subject = factor(1:18))
  u <- matrix(stats::rnorm(36), 18) %*% chol(s)
  d$Reaction <- 250 + 10 * d$Days + u[d$Subject, 1] + u[d$Subject, 2] * d$Days + stats::rnorm(nrow(d), sd = 25)
  fit <- suppressMessages(fr_fit(Reaction ~ Days + (Days | Subject), data = d))
  ci <- confint(fit, method = "bootstrap", nsim = nsim, seed = r)
  wald <- confint(fit, parm = "beta_")
  c(ci[names(truth), 1] <= truth & truth <= ci[names(truth), 2],
    wald = unname(wald["Days", 1] <= 10 & 10 <= wald["Days", 2]))
}
coverage <- rowMeans(vapply(seq_len(n_sets), one_set, logical(length(truth) + 1L)))
elapsed <- as.numeric(difftime(Sys.time(), started, units = "secs"))

# Crossed: 60 users x 40 items, 1200 ratings at random cells, y ~ x + (x | user) + (1 | item),
# user sds 1 and 0.4 (correlation 0.3), item sd 0.7, sigma 1; the covariance replicates are
# centred on the estimate (more than one grouping factor).
truth_crossed <- c(`sd_(Intercept)|user` = 1, `cor_x.(Intercept)|user` = 0.3, `sd_x|user` = 0.4,
                   `sd_(Intercept)|item` = 0.7, sigma = 1, `(Intercept)` = 1, x = 0.5)
s_user <- matrix(c(1, 0.3 * 0.4, 0.3 * 0.4, 0.16), 2)
started_crossed <- Sys.time()
one_crossed <- function(r) {
  set.seed(5000 + r)
  d <- data.frame(user = factor(sample(60, 1200, TRUE), levels = 1:60), item = factor(sample(40, 1200, TRUE), levels = 1:40),
                  x = stats::rnorm(1200))
  u <- matrix(stats::rnorm(120), 60) %*% chol(s_user)
  d$y <- 1 + 0.5 * d$x + u[d$user, 1] + u[d$user, 2] * d$x + stats::rnorm(40, sd = 0.7)[d$item] + stats::rnorm(1200)
  fit <- suppressMessages(fr_fit(y ~ x + (x | user) + (1 | item), data = d))
  ci <- confint(fit, method = "bootstrap", nsim = nsim, seed = r)
  ci[names(truth_crossed), 1] <= truth_crossed & truth_crossed <= ci[names(truth_crossed), 2]
}
coverage_crossed <- rowMeans(vapply(seq_len(n_sets), one_crossed, logical(length(truth_crossed))))
elapsed_crossed <- as.numeric(difftime(Sys.time(), started_crossed, units = "secs"))
cell <- function(name) sprintf("`%s`", gsub("|", "\\|", name, fixed = TRUE))
lines <- c(
  "", "## Intervals: coverage of confint() for random slopes", "",
  sprintf(paste(
    "`Rscript bench/slope-coverage.R`: %d data sets shaped as sleepstudy (18 subjects x 10 days),",
    "`Reaction ~ Days + (Days | Subject)`, true sds 25 and 6, correlation 0.1, sigma 25; 95%%",
    "pigeonhole-bootstrap percentile intervals (%d replicates each; one factor: the cluster",
    "bootstrap) and the Wald interval of `Days` from `vcov()`. Monte Carlo SE of a coverage",
    "about %.3f; %.0f s (load %s)."
  ), n_sets, nsim, sqrt(0.95 * 0.05 / n_sets), elapsed, paste(sprintf("%.1f", utils::tail(as.numeric(strsplit(
    sub(".*load average: ", "", system("uptime", intern = TRUE)), ", ")[[1]]), 3L)), collapse = ", ")),
  "", "| parameter | interval | coverage |", "|---|---|---|",
  sprintf("| %s | bootstrap percentile | %.3f |", vapply(names(truth), cell, ""), coverage[names(truth)]),
  sprintf("| `Days` | Wald (GLS vcov) | %.3f |", coverage[["wald"]]),
  "",
  sprintf(paste(
    "Crossed: %d data sets of 60 users x 40 items, 1200 ratings at random cells, `y ~ x + (x | user) + (1 | item)`,",
    "user sds 1 and 0.4 (correlation 0.3), item sd 0.7, sigma 1; 95%% pigeonhole-bootstrap percentile",
    "intervals (%d replicates each), the covariance replicates centred on the estimate; %.0f s."
  ), n_sets, nsim, elapsed_crossed),
  "", "| parameter | coverage |", "|---|---|",
  sprintf("| %s | %.3f |", vapply(names(truth_crossed), cell, ""), coverage_crossed),
  ""
)
write_results_section("slope-coverage", lines)
cat(lines, sep = "\n")
