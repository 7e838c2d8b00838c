# One size of bench/scale.R, in a fresh R process so that its peak memory is the fit's:
# reads the data set saved by the driver, times a floor pass, the variance components
# alone and the full fit, and prints one line of key=value pairs.
#   Rscript bench/scale-child.R <data.rds> <threads> [lmer]
suppressPackageStartupMessages(library(fullrandom))
args <- commandArgs(TRUE)
d <- readRDS(args[[1]])
threads <- as.integer(args[[2]])
form <- y ~ x + (1 | user) + (1 | item)
peak_mb <- function() {
  status <- readLines("/proc/self/status")
  as.numeric(gsub("[^0-9]", "", grep("^VmHWM", status, value = TRUE))) / 1024
}
elapsed <- function(expr) system.time(expr, gcFirst = TRUE)[["elapsed"]]
# Seconds per call: the best of 3 calls when one takes a second or more, otherwise the
# best of 5 batches of calls, each batch long enough (>= 0.1 s) to be timed.
best_of <- function(f) {
  once <- elapsed(f())
  if (once >= 1) return(min(once, elapsed(f()), elapsed(f())))
  reps <- max(1L, ceiling(0.1 / max(once, 1e-4)))
  min(vapply(1:5, function(i) elapsed(for (r in seq_len(reps)) f()) / reps, 1))
}
out <- list(n = nrow(d), users = nlevels(d$user), items = nlevels(d$item),
            data_mb = as.numeric(utils::object.size(d)) / 2^20)
if (length(args) >= 3 && args[[3]] == "lmer") {
  loadNamespace("lme4")
  out$lmer <- elapsed(suppressMessages(lme4::lmer(form, data = d)))
} else {
  # The floor: one cheapest pass over the same columns.
  out$floor <- best_of(function() {
    tabulate(unclass(d$user), nlevels(d$user))
    tabulate(unclass(d$item), nlevels(d$item))
    sum(d$y) + sum(d$x)
  })
  out$components <- best_of(function() fullrandom:::fr_variance_components(form, d, threads))
  out$full <- best_of(function() fr_fit(form, data = d, threads = threads))
  out$peak_mb <- peak_mb()
}
cat(paste(names(out), unlist(out), sep = "=", collapse = " "), "\n")
