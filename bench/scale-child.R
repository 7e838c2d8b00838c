# One size of bench/scale.R (and one fit of bench/peers.R), in a fresh R process so that
# its peak memory is the fit's: reads the data set saved by the driver and prints one line
# of key=value pairs.
#   Rscript bench/scale-child.R <data.rds> <threads> [fr_fit|lmer|glmmTMB] [formula]
# fr_fit (the default): times a floor pass (crossed data only), the variance components
# alone and the full fit. lmer / glmmTMB (both REML): times one fit (also as `lmer=` for
# bench/scale.R). `time` is elapsed seconds, `cpu` the process's CPU seconds over all threads. Every tool also prints the peak resident memory and the estimates:
# vc_<group> and vc_Residual (variances), fe_<term> (fixed effects).
suppressPackageStartupMessages(library(fullrandom))
args <- commandArgs(TRUE)
d <- readRDS(args[[1]])
threads <- as.integer(args[[2]])
tool <- if (length(args) >= 3) args[[3]] else "fr_fit"
form <- if (length(args) >= 4) stats::as.formula(args[[4]]) else y ~ x + (1 | user) + (1 | item)
peak_mb <- function() {
  status <- readLines("/proc/self/status")
  as.numeric(gsub("[^0-9]", "", grep("^VmHWM", status, value = TRUE))) / 1024
}
# Elapsed and CPU seconds (the process's user + system time, all its threads) of a call.
timed <- function(expr) {
  st <- system.time(expr, gcFirst = TRUE)
  c(elapsed = st[["elapsed"]], cpu = st[["user.self"]] + st[["sys.self"]])
}
# Seconds per call: the best of 3 calls when one takes a second or more, otherwise the
# best of 5 batches of calls, each batch long enough (>= 0.1 s) to be timed; the elapsed
# and CPU seconds of the best by elapsed time.
best_of <- function(f) {
  once <- timed(f())
  runs <- if (once[["elapsed"]] >= 1) {
    rbind(once, timed(f()), timed(f()))
  } else {
    reps <- max(1L, ceiling(0.1 / max(once[["elapsed"]], 1e-4)))
    t(vapply(1:5, function(i) timed(for (r in seq_len(reps)) f()) / reps, c(elapsed = 1, cpu = 1)))
  }
  runs[which.min(runs[, "elapsed"]), ]
}
# Variances by grouping factor (random intercepts) and the fixed effects, as key=value names.
estimates <- function(variances, fixed) {
  c(stats::setNames(as.list(variances), paste0("vc_", names(variances))),
    stats::setNames(as.list(fixed), paste0("fe_", names(fixed))))
}
out <- list(n = nrow(d), data_mb = as.numeric(utils::object.size(d)) / 2^20)
if (tool == "lmer") {
  loadNamespace("lme4")
  t <- timed(fit <- suppressMessages(lme4::lmer(form, data = d)))
  out$lmer <- t[["elapsed"]]
  out$time <- t[["elapsed"]]
  out$cpu <- t[["cpu"]]
  out$peak_mb <- peak_mb()
  vc <- as.data.frame(lme4::VarCorr(fit))
  out <- c(out, estimates(stats::setNames(vc$vcov, vc$grp), lme4::fixef(fit)))
} else if (tool == "glmmTMB") {
  loadNamespace("glmmTMB")
  t <- timed(fit <- glmmTMB::glmmTMB(form, data = d, REML = TRUE))
  out$time <- t[["elapsed"]]
  out$cpu <- t[["cpu"]]
  out$peak_mb <- peak_mb()
  vc <- vapply(glmmTMB::VarCorr(fit)$cond, function(v) v[1, 1], 1)
  out <- c(out, estimates(c(vc, Residual = glmmTMB::sigma(fit)^2), glmmTMB::fixef(fit)$cond))
} else if (tool == "fr_fit") {
  out$users <- nlevels(d$user)
  out$items <- nlevels(d$item)
  # The floor: one cheapest pass over the same columns (of the crossed data); the
  # components alone exist for random intercepts only.
  slopes <- fullrandom:::has_slope_terms(fullrandom:::parse_fr_formula(form))
  if (!slopes && all(c("user", "item", "x") %in% names(d))) {
    out$floor <- best_of(function() {
      tabulate(unclass(d$user), nlevels(d$user))
      tabulate(unclass(d$item), nlevels(d$item))
      sum(d$y) + sum(d$x)
    })[["elapsed"]]
    out$components <- best_of(function() fullrandom:::fr_variance_components(form, d, threads))[["elapsed"]]
  }
  t <- best_of(function() fr_fit(form, data = d, threads = threads))
  out$full <- t[["elapsed"]]
  out$time <- t[["elapsed"]]
  out$cpu <- t[["cpu"]]
  out$peak_mb <- peak_mb()
  fit <- fr_fit(form, data = d, threads = threads)
  vc <- as.data.frame(VarCorr(fit))
  out <- c(out, estimates(stats::setNames(vc$vcov, vc$grp), fixef(fit)))
} else {
  stop(sprintf("unknown tool %s: fr_fit, lmer or glmmTMB", tool))
}
cat(paste(names(out), unlist(out), sep = "=", collapse = " "), "\n")
