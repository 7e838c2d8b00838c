# Conditional sds of the BLUPs on InstEval against lmer's condVar, at our components and at
# lmer's, and the stochastic estimate's error against the exact values. Writes its section
# of bench/results.md (run from the package root with R_LIBS set to the built library:
# Rscript bench/condvar-insteval.R).
suppressMessages({
  library(fullrandom)
  library(lme4)
})
source("bench/results.R")
data(InstEval, package = "lme4")
f <- y ~ service + (1 | s) + (1 | d) + (1 | dept)
terms <- c("s", "d", "dept")
t_fit <- system.time(fit <- fr_fit(f, InstEval, threads = 2))[["elapsed"]]
t_cv <- system.time(re <- ranef(fit, condVar = TRUE))[["elapsed"]]
t_lmer <- system.time(m <- lmer(f, InstEval))[["elapsed"]]
rl <- ranef(m, condVar = TRUE)
vc <- as.data.frame(VarCorr(m))
lmer_theta <- stats::setNames(vc$vcov, c(vc$grp[-nrow(vc)], "Residual"))[names(fit$theta)]

# Relative differences of the conditional sds, level by level, against lmer's.
condsd_diff <- function(ours) {
  vapply(terms, function(k) {
    a <- sqrt(as.vector(attr(ours[[k]], "postVar")))
    b <- sqrt(as.vector(attr(rl[[k]], "postVar")))[match(rownames(ours[[k]]), rownames(rl[[k]]))]
    r <- abs(a / b - 1)
    c(max = max(r), median = stats::median(r))
  }, numeric(2))
}
ours <- condsd_diff(re)
# The same at lmer's components isolates the computation from the components' difference.
fit_lmer <- fit
fit_lmer$theta <- lmer_theta
at_lmer <- condsd_diff(ranef(fit_lmer, condVar = TRUE))
t_st <- system.time(cv <- fullrandom:::conditional_variances(fit, method = "stochastic", probes = 128))[["elapsed"]]
stochastic <- vapply(terms, function(k) {
  ex <- as.vector(attr(re[[k]], "postVar"))
  c(max = max(abs(cv$variance[[k]] / ex - 1)), median = stats::median(abs(cv$variance[[k]] / ex - 1)))
}, numeric(2))
sd_ratio <- sqrt(fit$theta / lmer_theta)
pct <- function(x) sprintf("%.2f%%", 100 * x)
lines <- c("", "## Conditional variances of the BLUPs on InstEval", "",
  paste("`Rscript bench/condvar-insteval.R`: `ranef(fit, condVar = TRUE)` (exact:",
        "`s2 diag((Z'Z + L)^-1)` by eliminating the largest term and inverting the Schur complement)",
        "against `lme4::ranef(lmer(...), condVar = TRUE)` on",
        sprintf("`%s`, 2 threads: fit %.2f s, condVar %.2f s (exact: %s), lmer %.0f s.",
                deparse(f), t_fit, t_cv, attr(re, "condVar")$exact, t_lmer)), "",
  sprintf("| | %s |", paste(c(terms, "Residual"), collapse = " | ")),
  "|---|---|---|---|---|",
  sprintf("| our sd / lmer's sd (components) | %s |", paste(sprintf("%.4f", sd_ratio[c(terms, "Residual")]), collapse = " | ")),
  sprintf("| condsd vs lmer, at our components: max level rel. diff | %s | |", paste(pct(ours["max", ]), collapse = " | ")),
  sprintf("| ... median | %s | |", paste(pct(ours["median", ]), collapse = " | ")),
  sprintf("| condsd vs lmer, at lmer's components: max rel. diff | %s | |",
          paste(sprintf("%.1e", at_lmer["max", ]), collapse = " | ")),
  sprintf("| stochastic (128 probes, %.1f s) vs exact: max rel. error of the variance | %s | |", t_st,
          paste(pct(stochastic["max", ]), collapse = " | ")),
  sprintf("| ... median | %s | |", paste(pct(stochastic["median", ]), collapse = " | ")), "",
  paste("At lmer's components the computation equals lmer's to rounding, so every difference at our",
        "components comes from the components: a conditional sd moves with the term's and the",
        "residual's sds (for a level with many rows it is about sigma / sqrt(n), for one with few",
        "about the term's sd)."), "")
cat(lines, sep = "\n")
write_results_section("condvar-insteval", lines)
