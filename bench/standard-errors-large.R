# The analytic SEs (normal-theory and cluster-robust) of the raw moment estimates against their Monte Carlo sd
# on a 10^6-row crossed design: 2000 users x 1000 items, ratings at random (50% of the
# cells), a covariate of every rating; s_a = 1, s_b = 0.7, s_e = 1.2. REPS data sets
# (default 200), seeds FIRST, FIRST + 1, ... (default 1). Run from the package root with
# R_LIBS set to the built library; writes its section of bench/results.md.
#
# PROGRESS_FILE=path writes every data set's row as it is done. FROM=file1,file2 skips the
# simulation and summarises such files instead (a run split over processes, or one that
# was stopped): the rows are those of distinct seeds.
suppressPackageStartupMessages(library(fullrandom))
source("bench/results.R")
reps <- as.integer(Sys.getenv("REPS", "200"))
first <- as.integer(Sys.getenv("FIRST", "1"))
progress_file <- Sys.getenv("PROGRESS_FILE")
from <- Sys.getenv("FROM")
large_crossed <- function(seed) {
  set.seed(seed)
  n <- 1e6
  u <- sample(2000L, n, TRUE)
  v <- sample(1000L, n, TRUE)
  x <- rnorm(n)
  data.frame(y = 2 + 0.5 * x + rnorm(2000L)[u] + rnorm(1000L, sd = 0.7)[v] + rnorm(n, sd = 1.2),
             x = x, u = factor(u), v = factor(v))
}
components <- c("u", "v", "Residual")
if (nzchar(from)) {
  rows <- do.call(rbind, lapply(strsplit(from, ",", fixed = TRUE)[[1]], function(f) {
    r <- utils::read.table(f, header = TRUE)
    for (col in c("fit_s", "se_s", "robust_s")) if (is.null(r[[col]])) r[[col]] <- NA_real_
    r
  }))
  if (anyDuplicated(rows$seed)) stop("FROM files repeat seeds")
  seconds <- NA_real_
  command <- sprintf("FROM=%s Rscript bench/standard-errors-large.R (seeds %d to %d, from runs split over processes)",
                     from, min(rows$seed), max(rows$seed))
} else {
  started <- Sys.time()
  rows <- NULL
  for (s in first + seq_len(reps) - 1L) {
    d <- large_crossed(s)
    fit_s <- system.time(fit <- fr_fit(y ~ x + (1 | u) + (1 | v), d, threads = 2))[["elapsed"]]
    se_s <- system.time(v <- fullrandom:::moment_vcov_normal(fit))[["elapsed"]]
    robust_s <- system.time(r <- fullrandom:::moment_vcov(fit))[["elapsed"]]
    row <- data.frame(seed = s, raw = t(fit$theta_raw[components]), se = t(sqrt(diag(v))[components]),
                      robust = t(sqrt(diag(r))[components]), fit_s = fit_s, se_s = se_s, robust_s = robust_s)
    rows <- rbind(rows, row)
    if (nzchar(progress_file)) {
      utils::write.table(row, progress_file, append = s > first, col.names = s == first, row.names = FALSE)
    }
  }
  seconds <- as.numeric(difftime(Sys.time(), started, units = "secs"))
  command <- sprintf("REPS=%d Rscript bench/standard-errors-large.R", reps)
}
pick <- function(prefix) as.matrix(rows[paste0(prefix, ".", components)])
raw <- pick("raw")
se <- pick("se")
robust <- pick("robust")
n <- nrow(rows)
timing <- colMeans(rows[c("fit_s", "se_s", "robust_s")], na.rm = TRUE)
timed <- sum(!is.na(rows$fit_s))
mc <- apply(raw, 2, stats::sd)
normal_ratio <- sqrt(colMeans(se^2)) / mc
robust_ratio <- sqrt(colMeans(robust^2)) / mc
print(rbind(mc_sd = mc, normal_rms_se = sqrt(colMeans(se^2)), normal_ratio = normal_ratio,
            robust_ratio = robust_ratio), digits = 3)
row_text <- function(x, f) paste(sprintf(f, x), collapse = " | ")
lines <- c("", "## Analytic standard errors on a 10^6-row crossed design", "",
  sprintf(paste(
    "`%s`: 2000 users x 1000 items, 10^6 ratings at",
    "random, a covariate of every rating; s_a = 1, s_b = 0.7, s_e = 1.2. %d data sets%s:",
    "a fit %.2f s, the normal-theory SEs %.2f s, the cluster-robust ones %.2f s (means over %d data sets,",
    "2 threads, shared machine). Root mean square SE over the Monte Carlo sd of the raw estimates:"),
    command, n, if (is.na(seconds)) "" else sprintf(" (%.0f s)", seconds), timing[[1]], timing[[2]], timing[[3]], timed), "",
  sprintf("| | %s |", paste(components, collapse = " | ")), "|---|---|---|---|",
  sprintf("| Monte Carlo sd | %s |", row_text(mc, "%.3g")),
  sprintf("| normal-theory (the default's) | %s |", row_text(normal_ratio, "%.3f")),
  sprintf("| cluster-robust | %s |", row_text(robust_ratio, "%.3f")), "",
  sprintf("(With %d data sets a Monte Carlo sd is itself uncertain by about %.1f%%: 1 / sqrt(2 (n - 1)).)",
          n, 100 / sqrt(2 * (n - 1))), "")
cat(lines, sep = "\n")
write_results_section("standard-errors-large", lines)
