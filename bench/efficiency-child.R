# One fit of bench/efficiency.R's cost part, in a fresh R process so that its peak
# memory (VmHWM) is the fit's: reads the data set saved by the driver, fits it and saves
# a list (time, peak memory, and for REML the convergence record) to <out.rds>.
#   Rscript bench/efficiency-child.R <data.rds> <efficient|reml|lmer> <threads> <out.rds>
suppressPackageStartupMessages(library(fullrandom))
args <- commandArgs(TRUE)
d <- readRDS(args[[1]])
mode <- args[[2]]
threads <- as.integer(args[[3]])
form <- y ~ x + (1 | user) + (1 | item)
peak_mb <- function() {
  status <- readLines("/proc/self/status")
  as.numeric(gsub("[^0-9]", "", grep("^VmHWM", status, value = TRUE))) / 1024
}
elapsed <- function(expr) system.time(expr, gcFirst = TRUE)[["elapsed"]]
out <- list(n = nrow(d), users = nlevels(d$user), items = nlevels(d$item),
            data_mb = as.numeric(utils::object.size(d)) / 2^20, mode = mode)
# The peak before any fit: the data read back plus R itself.
out$peak_before_mb <- peak_mb()
if (mode == "lmer") {
  loadNamespace("lme4")
  out$time <- elapsed(suppressMessages(lme4::lmer(form, data = d)))
} else {
  out$time <- elapsed(fit <- suppressMessages(fr_fit(form, data = d, method = mode,
                                                     threads = threads)))
  if (mode == "efficient") {
    # A second call: the best of two, as scale.R takes the best of its calls.
    out$time <- min(out$time, elapsed(fit <- suppressMessages(
      fr_fit(form, data = d, method = mode, threads = threads))))
  }
  out$theta <- fit$theta
  out$probes <- fit$efficient$probes
  out$probe_sd <- fit$efficient$probe_sd
  out$model_sd <- fit$efficient$model_sd
  out$likelihood <- fit$likelihood
  out$loglik <- if (!is.null(fit$loglik)) as.numeric(fit$loglik) else NA_real_
}
out$peak_mb <- peak_mb()
saveRDS(out, args[[4]])
cat(paste(names(out)[1:6], unlist(out[1:6]), sep = "=", collapse = " "), "\n")
