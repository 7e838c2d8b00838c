# Coverage of the default confint() (method = "analytic": Wald fixed effects from vcov(),
# log-scale Wald variance components with the analytic cluster-robust SEs) on designs
# (i)-(iii) of bench/coverage-designs.R, the analytic SEs against the Monte Carlo sd of the
# raw estimates on the same data sets, and the time of the default confint() on InstEval
# against a fit. Writes its section of bench/results.md (and README.md).
# FULLRANDOM_BENCH_COVERAGE_SETS gives a quick run.
suppressPackageStartupMessages(library(fullrandom))
source("bench/results.R")
source("bench/coverage-designs.R")

n_sets <- as.integer(Sys.getenv("FULLRANDOM_BENCH_COVERAGE_SETS", "500"))
threads <- 2L
cell <- function(name) sprintf("`%s`", gsub("|", "\\|", name, fixed = TRUE))
covers <- function(ci, truth) ci[names(truth), 1] <= truth & truth <= ci[names(truth), 2]

run_design <- function(simulate, formula, truth) {
  started <- Sys.time()
  hits <- robust_hits <- NULL
  raw <- se <- robust_se <- NULL
  probs <- c(0.025, 0.975)
  for (s in seq_len(n_sets)) {
    fit <- suppressMessages(fr_fit(formula, simulate(s), threads = threads))
    hits <- rbind(hits, covers(confint(fit), truth))
    robust <- fullrandom:::analytic_intervals(fit, probs, se = "robust")$limits
    dimnames(robust) <- list(fullrandom:::parameter_names(fit), NULL)
    robust_hits <- rbind(robust_hits, covers(robust, truth))
    v <- fullrandom:::moment_vcov_normal(fit)
    raw <- rbind(raw, fit$theta_raw[rownames(v)])
    se <- rbind(se, sqrt(diag(v)))
    robust_se <- rbind(robust_se, sqrt(diag(fullrandom:::moment_vcov(fit))))
  }
  mc <- apply(raw, 2, stats::sd)
  list(coverage = colMeans(hits), robust_coverage = colMeans(robust_hits),
       se_ratio = sqrt(colMeans(se^2)) / mc, robust_ratio = sqrt(colMeans(robust_se^2)) / mc,
       seconds = as.numeric(difftime(Sys.time(), started, units = "secs")))
}

designs <- list(
  "(i) unbalanced one-way" = list(one_way, y ~ 1 + (1 | g), one_way_truth),
  "(ii) sparse crossed with a within-level covariate" = list(two_way, y ~ x + (1 | u) + (1 | v), two_way_truth),
  "(iii) nested pair, crossed term, between-level covariate" =
    list(three_term, y ~ w + (1 | school/class) + (1 | rater), three_term_truth)
)
results <- lapply(designs, function(d) run_design(d[[1]], d[[2]], d[[3]]))

data(InstEval, package = "lme4")
f <- y ~ service + (1 | s) + (1 | d) + (1 | dept)
fit_seconds <- median(vapply(1:5, function(i) system.time(fr_fit(f, InstEval, threads = threads))[["elapsed"]], 1))
insteval <- fr_fit(f, InstEval, threads = threads)
ci_seconds <- median(vapply(1:3, function(i) system.time(confint(insteval))[["elapsed"]], 1))
ci <- confint(insteval)

lines <- c("", "## Intervals: coverage of the default confint()", "",
  sprintf(paste(
    "`Rscript bench/coverage-default.R`: %d simulated data sets per design; 95%% intervals of",
    "`confint(fit)` (method \"analytic\"): fixed effects by Wald from `vcov()`, variance",
    "components by Wald on the log-variance scale with the analytic SEs (normal-theory by",
    "default; the cluster-robust ones beside). A",
    "coverage is the share of data sets whose interval holds the true value (Monte Carlo SE",
    "about 0.01). \"SE / MC sd\": root mean square of the analytic SEs of the raw variance",
    "estimates over their Monte Carlo sd on the same data sets."), n_sets), "")
for (name in names(designs)) {
  r <- results[[name]]
  truth <- designs[[name]][[3]]
  lines <- c(lines, sprintf("**%s** (%.0f s)", name, r$seconds), "",
             sprintf("| | %s |", paste(cell(names(truth)), collapse = " | ")),
             paste0("|---|", strrep("---|", length(truth))),
             sprintf("| coverage, default (normal-theory SE) | %s |", paste(sprintf("%.3f", r$coverage), collapse = " | ")),
             sprintf("| coverage with the cluster-robust SE | %s |",
                     paste(sprintf("%.3f", r$robust_coverage), collapse = " | ")),
             sprintf("| SE / MC sd, normal-theory (%s) | %s |", paste(names(r$se_ratio), collapse = ", "),
                     paste(sprintf("%.2f", r$se_ratio), collapse = ", ")),
             sprintf("| SE / MC sd, cluster-robust (%s) | %s |", paste(names(r$robust_ratio), collapse = ", "),
                     paste(sprintf("%.2f", r$robust_ratio), collapse = ", ")), "")
}
lines <- c(lines,
  sprintf(paste("**InstEval** (73,421 rows), 2 threads: one fit %.3f s (median of 5); the default",
                "`confint()` %.3f s (median of 3), **%.1fx** a fit."), fit_seconds, ci_seconds,
          ci_seconds / fit_seconds), "",
  "```", utils::capture.output(print(round(ci[, 1:2], 4))), "```", "")
cat(lines, sep = "\n")
write_results_section("coverage-default", lines)
