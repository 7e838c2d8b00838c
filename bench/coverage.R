# Coverage of 95% intervals (issue "uncertainty"): for every method that applies, the
# share of simulated data sets whose interval holds the true value, on
#   (i)  an unbalanced one-way design (s_a, s_e, intercept), and
#   (ii) a sparse two-way crossed design with a covariate (s_a, s_b, s_e, slope),
# then the time of a bootstrap of InstEval against one fit, and fr_fit's intervals beside
# lmer's profile intervals on the archers data. Writes its section of bench/results.md
# (and README.md). FULLRANDOM_BENCH_COVERAGE_SETS and _NSIM give a quick run.
# The default confint() (method "analytic") is measured by bench/coverage-default.R; the
# calls here pass `boot`, which selects the bootstrap.
suppressPackageStartupMessages(library(fullrandom))
source("bench/results.R")
source("bench/coverage-designs.R")

n_sets <- as.integer(Sys.getenv("FULLRANDOM_BENCH_COVERAGE_SETS", "500"))
nsim <- as.integer(Sys.getenv("FULLRANDOM_BENCH_COVERAGE_NSIM", "200"))
threads <- 2L

# Parameter names in a markdown table cell (their "|" would end the cell).
cell <- function(name) sprintf("`%s`", gsub("|", "\\|", name, fixed = TRUE))

covers <- function(ci, truth) ci[names(truth), 1] <= truth & truth <= ci[names(truth), 2]

run_design <- function(simulate, formula, truth, alchemy_by = NULL) {
  started <- Sys.time()
  hits <- list(bootstrap = NULL, Wald = NULL, alchemy = NULL)
  centre <- NULL
  for (s in seq_len(n_sets)) {
    data <- simulate(s)
    fit <- suppressMessages(fr_fit(formula, data, threads = threads))
    boot <- suppressWarnings(fr_bootstrap(fit, nsim = nsim, seed = s, threads = threads, progress = FALSE))
    hits$bootstrap <- rbind(hits$bootstrap, covers(confint(fit, boot = boot), truth))
    hits$Wald <- rbind(hits$Wald, covers(confint(fit, method = "Wald", boot = boot), truth))
    # How far the replicates sit from the estimate, in units of their spread.
    est <- attr(boot, "estimate")[names(truth)]
    centre <- rbind(centre, (colMeans(as.matrix(boot))[names(truth)] - est) /
                      apply(as.matrix(boot), 2, sd)[names(truth)])
    if (!is.null(alchemy_by)) {
      averaged <- suppressMessages(fr_fit(formula, data, chunks = 6, combine = "average",
                                          chunk_by = alchemy_by, seed = s, threads = threads))
      hits$alchemy <- rbind(hits$alchemy, covers(confint(averaged, method = "alchemy"), truth))
    }
  }
  list(coverage = lapply(Filter(Negate(is.null), hits), colMeans),
       shift = colMeans(centre),
       seconds = as.numeric(difftime(Sys.time(), started, units = "secs")))
}

one <- run_design(one_way, y ~ 1 + (1 | g), one_way_truth, alchemy_by = "g")
two <- run_design(two_way, y ~ x + (1 | u) + (1 | v), two_way_truth)

table_of <- function(result, truth) {
  header <- c(sprintf("| method | %s |", paste(cell(names(truth)), collapse = " | ")),
              paste0("|---|", strrep("---|", length(truth))))
  rows <- vapply(names(result$coverage), function(m) {
    sprintf("| %s | %s |", m, paste(sprintf("%.3f", result$coverage[[m]]), collapse = " | "))
  }, "")
  shift <- sprintf("| uncentred replicates' mean - estimate, in replicate sds | %s |",
                   paste(sprintf("%+.2f", result$shift), collapse = " | "))
  c(header, rows, shift)
}

# InstEval: a bootstrap of nsim = 200 against one fit, both on 2 threads.
data(InstEval, package = "lme4")
fit_seconds <- median(vapply(1:5, function(i) {
  system.time(fr_fit(y ~ service + (1 | s) + (1 | d) + (1 | dept), InstEval, threads = threads))[["elapsed"]]
}, 1))
insteval <- fr_fit(y ~ service + (1 | s) + (1 | d) + (1 | dept), InstEval, threads = threads)
boot_seconds <- median(vapply(1:3, function(i) {
  system.time(fr_bootstrap(insteval, nsim = 200, seed = i, threads = threads, progress = FALSE))[["elapsed"]]
}, 1))

# The archers: fr_fit's intervals beside lmer's profile intervals.
archers <- simulate_archers(seed = 1)
archer_fit <- fr_fit(distance ~ bow + (1 | archer), archers)
archer_boot <- fr_bootstrap(archer_fit, nsim = 1000, seed = 1, progress = FALSE)
ours <- list(bootstrap = confint(archer_fit, boot = archer_boot),
             Wald = confint(archer_fit, method = "Wald", boot = archer_boot))
profile <- suppressMessages(confint(lme4::lmer(distance ~ bow + (1 | archer), archers), oldNames = FALSE))
archer_rows <- vapply(rownames(profile), function(p) {
  f <- function(ci) sprintf("%.2f to %.2f", ci[p, 1], ci[p, 2])
  sprintf("| %s | %s | %s | %s |", cell(p), f(profile), f(ours$bootstrap), f(ours$Wald))
}, "")

lines <- c(
  "", "## Intervals: coverage of 95% intervals", "",
  sprintf(paste(
    "`Rscript bench/coverage.R`: %d simulated data sets per design, %d pigeonhole bootstrap",
    "replicates each (`confint(fit)`: percentile intervals, the replicates' variances centred on",
    "the estimate); Wald: fixed effects from `vcov()`, variance components from the bootstrap",
    "variance; alchemy: `chunks = 6, combine =",
    "\"average\", chunk_by = \"g\"`. A coverage is the share of data sets whose interval holds",
    "the true value (Monte Carlo standard error about 0.01)."), n_sets, nsim),
  "",
  sprintf("**(i) Unbalanced one-way**: 120 groups of 1 + Poisson(7) rows, s_a = 1, s_e = 2 (%.0f s).",
          one$seconds),
  "", table_of(one, one_way_truth), "",
  sprintf(paste("**(ii) Sparse crossed**: 150 users x 100 items, 2500 ratings (17%% of the cells),",
                "a covariate of every rating; s_a = 1, s_b = 0.7, s_e = 1.2, slope 0.5 (%.0f s)."),
          two$seconds),
  "", table_of(two, two_way_truth), "",
  sprintf(paste("**InstEval** (73,421 rows, 3 crossed terms), 2 threads: one fit %.3f s (median of 5); a",
                "bootstrap of 200 replicates %.2f s (median of 3), **%.1fx** a fit."), fit_seconds, boot_seconds,
          boot_seconds / fit_seconds),
  "",
  "**Archers** (`simulate_archers(seed = 1)`; lmer's profile intervals, fr_fit's with 1000 replicates):",
  "", "| parameter | lmer profile | fr_fit bootstrap | fr_fit Wald |", "|---|---|---|---|",
  archer_rows, ""
)
cat(lines, sep = "\n")
write_results_section("coverage", lines)
