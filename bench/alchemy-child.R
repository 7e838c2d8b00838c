# One fit of bench/alchemy.R in a fresh R process, so that its peak memory is the fit's:
#   Rscript bench/alchemy-child.R files-future|files-threads|memory <dir of part*.rds>
# Prints one line of key=value pairs.
suppressPackageStartupMessages(library(fullrandom))
args <- commandArgs(TRUE)
mode <- args[[1]]
paths <- file.path(args[[2]], sprintf("part%d.rds", 1:8))
form <- y ~ x + (1 | user) + (1 | item)
status_mb <- function(field) {
  status <- readLines("/proc/self/status")
  as.numeric(gsub("[^0-9]", "", grep(paste0("^", field), status, value = TRUE))) / 1024
}
baseline_mb <- status_mb("VmRSS")
out <- list()
if (mode == "memory") {
  out$time <- system.time({
    d <- do.call(rbind, lapply(paths, readRDS))
    fit <- fr_fit(form, d, threads = 2)
  })[["elapsed"]]
  out$peak_mb <- status_mb("VmHWM")
} else {
  if (mode == "files-future") future::plan(future::multisession, workers = 2)
  out$time <- system.time(
    fit <- fr_fit(form, paths, backend = if (mode == "files-future") "future" else "threads",
                  threads = 2)
  )[["elapsed"]]
  out$peak_mb <- status_mb("VmHWM")
  # The statistics the main process receives: one chunk's, measured, times 8.
  chunk <- readRDS(paths[[1]])
  md <- fullrandom:::fr_model_data(fullrandom:::parse_fr_formula(form),
                                   quote(stats::model.frame(data = chunk)), chunk, environment(),
                                   whole = FALSE)
  stats <- fullrandom:::call_core(md$y, md$fixed, md$flist, 1L, "statistics")
  out$stats_mb <- 8 * as.numeric(utils::object.size(stats)) / 2^20
  rm(chunk, md, stats)
  # The same fit from the data in memory, for the difference.
  d <- do.call(rbind, lapply(paths, readRDS))
  whole <- fr_fit(form, d, threads = 2)
  rel <- function(a, b) max(abs(a - b) / abs(b))
  out$diff <- max(rel(fit$theta, whole$theta), rel(fixef(fit), fixef(whole)))
}
# The peak was read right after the fit, before the comparison loads the data.
out$beyond_mb <- out$peak_mb - baseline_mb - (if (is.null(out$stats_mb)) 0 else out$stats_mb)
cat(paste(names(out), unlist(out), sep = "=", collapse = " "), "\n")
