# One size of bench/glmm-scale.R in a fresh R process, so that its peak memory is the
# fit's: reads the data set saved by the driver, fits y ~ x + (1 | user) + (1 | item) with
# family = binomial and prints one line of key=value pairs.
#   Rscript bench/glmm-scale-child.R <data.rds> <threads> [fr_fit|glmer]
# fr_fit: the full fit by the moments (method = "moments": the default takes the Laplace fit
# for crossed terms below 2 x 10^6 rows; this bench measures the scalable estimator), with
# variances, fixed effects, conditional modes and covariances, once
# (at most 10^6 rows: the best of 3). glmer: glmer(nAGQ = 0), once. `time` is elapsed
# seconds, `cpu` the process's CPU seconds over all threads, `peak_mb` the peak resident
# memory (VmHWM), `data_mb` the size of the data frame.
suppressPackageStartupMessages(library(fullrandom))
args <- commandArgs(TRUE)
d <- readRDS(args[[1]])
threads <- as.integer(args[[2]])
tool <- if (length(args) >= 3) args[[3]] else "fr_fit"
form <- y ~ x + (1 | user) + (1 | item)
peak_mb <- function() {
  status <- readLines("/proc/self/status")
  as.numeric(gsub("[^0-9]", "", grep("^VmHWM", status, value = TRUE))) / 1024
}
timed <- function(expr) {
  st <- system.time(expr, gcFirst = TRUE)
  c(elapsed = st[["elapsed"]], cpu = st[["user.self"]] + st[["sys.self"]])
}
out <- list(n = nrow(d), users = nlevels(d$user), items = nlevels(d$item),
            data_mb = as.numeric(utils::object.size(d)) / 2^20)
if (tool == "glmer") {
  loadNamespace("lme4")
  t <- timed(fit <- lme4::glmer(form, data = d, family = stats::binomial, nAGQ = 0))
  sds <- vapply(lme4::VarCorr(fit), function(v) sqrt(v[1, 1]), 1)
  fe <- lme4::fixef(fit)
} else {
  repeats <- if (nrow(d) <= 1e6) 3L else 1L
  runs <- t(vapply(seq_len(repeats), function(r) {
    timed(fit <<- fr_fit(form, data = d, family = stats::binomial, method = "moments", threads = threads))
  }, c(elapsed = 1, cpu = 1)))
  t <- runs[which.min(runs[, "elapsed"]), ]
  sds <- sqrt(fit$theta)
  fe <- fit$coefficients
  out$newton <- fit$iterations[["newton"]]
  if (!is.null(fit$timings)) {
    out <- c(out, stats::setNames(as.list(fit$timings), paste0("stage_", gsub("[^a-z]+", "_", names(fit$timings)))))
  }
}
out$time <- t[["elapsed"]]
out$cpu <- t[["cpu"]]
out$peak_mb <- peak_mb()
out$sd_user <- sds[["user"]]
out$sd_item <- sds[["item"]]
out$slope <- fe[["x"]]
out$intercept <- fe[["(Intercept)"]]
cat(paste(names(out), unlist(out), sep = "=", collapse = " "), "\n")
