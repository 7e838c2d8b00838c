# Software Alchemy and fits from files (issue "chunks"): writes its section of
# bench/results.md (and README.md).
#  1. Software Alchemy standard errors: 200 one-way data sets, fitted with
#     combine = "average" and chunk_by = the grouping variable; the mean chunk standard
#     error of s2_a against the empirical sd of the averaged estimates.
#  2. A fit from 8 files: the ml-32m-shaped crossed data (32,000,204 rows) written to 8
#     RDS files, fitted with backend = "future" on 2 multisession workers, in a fresh
#     R process whose peak memory is measured; beside it, the same fit from the data in
#     memory, and the exact fit against the averaged one.
suppressPackageStartupMessages(library(fullrandom))
source("bench/results.R")
started <- Sys.time()

# --- 1. Software Alchemy standard errors on a one-way design ---------------------------
# FULLRANDOM_BENCH_ALCHEMY_ROWS and _REPLICATIONS shrink the run for a quick check.
replications <- as.integer(Sys.getenv("FULLRANDOM_BENCH_ALCHEMY_REPLICATIONS", "200"))
groups <- 400L
chunks <- 8L
truth <- c(s2_a = 1, s2_e = 1)
set.seed(20261121)
draws <- t(vapply(seq_len(replications), function(i) {
  sizes <- 1L + stats::rgeom(groups, 1 / 10)
  g <- rep(seq_len(groups), sizes)
  d <- data.frame(g = g, y = 5 + stats::rnorm(groups, sd = sqrt(truth[["s2_a"]]))[g] +
                    stats::rnorm(length(g), sd = sqrt(truth[["s2_e"]])))
  fit <- suppressMessages(fr_fit(y ~ 1 + (1 | g), d, chunks = chunks, combine = "average",
                                 chunk_by = "g", seed = i, threads = 2))
  exact <- suppressMessages(fr_fit(y ~ 1 + (1 | g), d, threads = 2))
  se <- sqrt(diag(fit$alchemy$vcov))
  c(s2_a = fit$theta[["g"]], se_s2_a = se[["g"]], s2_e = fit$theta[["Residual"]],
    se_s2_e = se[["Residual"]], exact_s2_a = exact$theta[["g"]])
}, numeric(5)))
sd_a <- stats::sd(draws[, "s2_a"])
sd_e <- stats::sd(draws[, "s2_e"])
alchemy_rows <- sprintf(
  "| %s | %.3f | %.4f | %.4f | %.4f | %.3f | %.4f |",
  c("s2_a", "s2_e"), truth,
  c(mean(draws[, "s2_a"]), mean(draws[, "s2_e"])),
  c(sd_a, sd_e),
  c(mean(draws[, "se_s2_a"]), mean(draws[, "se_s2_e"])),
  c(mean(draws[, "se_s2_a"]) / sd_a, mean(draws[, "se_s2_e"]) / sd_e),
  c(stats::sd(draws[, "exact_s2_a"]), NA)
)

# --- 2. 32M rows from 8 files ------------------------------------------------------------
dir <- file.path(tempdir(), "alchemy-files")
dir.create(dir, showWarnings = FALSE)
rows <- as.numeric(Sys.getenv("FULLRANDOM_BENCH_ALCHEMY_ROWS", "32000204"))
users <- round(200948 * rows / 32000204)
items <- round(84432 * rows / 32000204)
d <- simulate_crossed(rows, n_users = users, n_items = items, seed = 32)
data_mb <- as.numeric(utils::object.size(d)) / 2^20
part <- rep(1:8, length.out = nrow(d))
paths <- file.path(dir, sprintf("part%d.rds", 1:8))
for (i in 1:8) saveRDS(d[part == i, ], paths[[i]], compress = FALSE)
rm(d, part)
invisible(gc())

child <- function(mode) {
  out <- system2("Rscript", c("bench/alchemy-child.R", mode, dir), stdout = TRUE)
  line <- grep("=", out, value = TRUE)
  vals <- strsplit(strsplit(trimws(line[length(line)]), " ")[[1]], "=")
  stats::setNames(as.numeric(vapply(vals, `[`, "", 2)), vapply(vals, `[`, "", 1))
}
files_future <- child("files-future")
files_threads <- child("files-threads")
memory <- child("memory")
elapsed_total <- as.numeric(difftime(Sys.time(), started, units = "secs"))

fmt_mb <- function(x) sprintf("%.0f", x)
lines <- c(
  "## Software Alchemy: chunk standard errors and fits from files",
  "",
  sprintf(paste(
    "From `bench/alchemy.R` (R %s, fullrandom %s, run time %.0f s). Software Alchemy standard",
    "errors: %d one-way data sets (%d groups of geometric sizes, mean 10; s2_a = s2_e = 1), each",
    "fitted with `fr_fit(y ~ 1 + (1 | g), chunks = %d, combine = \"average\", chunk_by = \"g\")`.",
    "`mean SE` is the mean over data sets of the chunk standard error `sqrt(diag(cov(chunk",
    "estimates) / g))`; `empirical sd` is the spread of the averaged estimates. The last column is",
    "the sd of the exact (unchunked) estimate, for the efficiency of averaging."
  ), getRversion(), utils::packageVersion("fullrandom"), elapsed_total, replications, groups, chunks),
  "",
  "| component | truth | mean estimate | empirical sd | mean SE | SE / sd | sd of exact fit |",
  "|---|---|---|---|---|---|---|",
  alchemy_rows,
  "",
  sprintf(paste(
    "Fits from files: ml-32m-shaped data as in `bench/scale.R` (%s rows, %s users, %s items,",
    "%.0f MB as a data frame) saved as 8 RDS files and fitted by `fr_fit(y ~ x + (1 | user) +",
    "(1 | item), data = <8 paths>)`, each in a fresh R process. `peak` is the main process's peak",
    "resident memory; `statistics` the size of the chunks' sufficient statistics it receives (R",
    "lists); `beyond` = peak - statistics - the memory of an R process that has only loaded",
    "fullrandom. The exact fit from files equals the fit from memory to %.1e (largest relative",
    "difference of the components and fixed effects)."
  ), format(rows, big.mark = ","), format(users, big.mark = ","), format(items, big.mark = ","),
  data_mb, max(files_future[["diff"]], files_threads[["diff"]])),
  "",
  "| fit | time (s) | peak (MB) | statistics (MB) | beyond (MB) |",
  "|---|---|---|---|---|",
  sprintf("| 8 files, `backend = \"future\"`, `plan(multisession, workers = 2)` | %.1f | %s | %s | %s |",
          files_future[["time"]], fmt_mb(files_future[["peak_mb"]]), fmt_mb(files_future[["stats_mb"]]),
          fmt_mb(files_future[["beyond_mb"]])),
  sprintf("| 8 files, `backend = \"threads\"` (one file at a time, in the main process) | %.1f | %s | %s | %s |",
          files_threads[["time"]], fmt_mb(files_threads[["peak_mb"]]), fmt_mb(files_threads[["stats_mb"]]),
          fmt_mb(files_threads[["beyond_mb"]])),
  sprintf("| the data in memory, unchunked (`readRDS` of the 8 files, `rbind`, then `fr_fit`) | %.1f | %s | | |",
          memory[["time"]], fmt_mb(memory[["peak_mb"]]))
)
write_results_section("alchemy", lines)
cat(lines, sep = "\n")
unlink(dir, recursive = TRUE)
