# InstEval, y ~ service + (1 | s) + (1 | d) + (1 | dept): fr_fit (model frame included)
# against lme4::lmer and glmmTMB::glmmTMB (both REML), timed in the same R session:
# variance components, GLS fixed effects and standard errors, predicted random effects,
# and a held-out comparison with lmer (fit on a random 80%, predict the other 20%).
# Writes its section of bench/results.md (and README.md).
suppressPackageStartupMessages({
  library(fullrandom)
  library(lme4)
})
if (!requireNamespace("glmmTMB", quietly = TRUE)) {
  stop("bench/insteval.R needs glmmTMB: run `bash tools/setup.sh bench` (make bench does)")
}
source("bench/results.R")
data("InstEval", package = "lme4")
form <- y ~ service + (1 | s) + (1 | d) + (1 | dept)

fit <- fr_fit(form, data = InstEval) # warm-up: first-touch allocations
fr_times <- vapply(1:5, function(i) system.time(fr_fit(form, data = InstEval))[["elapsed"]], 1)
lmer_time <- system.time(lfit <- lmer(form, data = InstEval))[["elapsed"]]
tmb_time <- system.time(tfit <- glmmTMB::glmmTMB(form, data = InstEval, REML = TRUE))[["elapsed"]]
fr_time <- stats::median(fr_times)

ours <- as.data.frame(VarCorr(fit))
theirs <- as.data.frame(lme4::VarCorr(lfit))
# glmmTMB's variances by term, and its residual variance (sigma^2).
tmb_vc <- c(vapply(glmmTMB::VarCorr(tfit)$cond, function(v) v[1, 1], 1),
            Residual = glmmTMB::sigma(tfit)^2)
components <- data.frame(
  group = ours$grp, fr_fit = signif(ours$vcov, 5),
  lmer = signif(theirs$vcov[match(ours$grp, theirs$grp)], 5),
  glmmTMB = signif(tmb_vc[ours$grp], 5)
)
components$ratio <- round(components$fr_fit / components$lmer, 3)

se_fr <- sqrt(diag(vcov(fit)))
se_lmer <- sqrt(diag(as.matrix(vcov(lfit))))
fixed <- data.frame(
  term = names(fixef(fit)), fr_fit = fixef(fit), lmer = fixef(lfit),
  diff_se = (fixef(fit) - fixef(lfit)) / se_lmer,
  se_fr = se_fr, se_lmer = se_lmer, se_ratio = se_fr / se_lmer
)
ranef_cor <- vapply(c("s", "d", "dept"), function(k) {
  u <- ranef(fit)[[k]]
  stats::cor(u[["(Intercept)"]], ranef(lfit)[[k]][rownames(u), "(Intercept)"])
}, 1)

set.seed(20261121)
train <- sample(nrow(InstEval), round(0.8 * nrow(InstEval)))
test <- InstEval[-train, ]
rmse <- function(p) sqrt(mean((test$y - p)^2))
holdout <- c(
  fr_fit = rmse(predict(fr_fit(form, data = InstEval[train, ]), test, allow.new.levels = TRUE)),
  lmer = rmse(predict(lmer(form, data = InstEval[train, ]), test, allow.new.levels = TRUE))
)

md <- c(
  "## InstEval: fr_fit against lmer and glmmTMB",
  "",
  sprintf(paste("From `bench/insteval.R`: `%s`, %d rows, %s; R %s, lme4 %s, glmmTMB %s, %d threads",
                "for fr_fit, on %d cores. All three fits in the same R session."),
          deparse1(form), nrow(InstEval), format(Sys.Date()), getRversion(),
          utils::packageVersion("lme4"), utils::packageVersion("glmmTMB"), fit$threads,
          parallel::detectCores()),
  "",
  "| fit | time (s) | time / fr_fit |",
  "|---|---|---|",
  sprintf("| fr_fit: moments, GLS, BLUPs, model frame included (median of 5) | %.3f | 1 |", fr_time),
  sprintf("| lme4::lmer (REML) | %.2f | **%.0fx** |", lmer_time, lmer_time / fr_time),
  sprintf("| glmmTMB::glmmTMB (REML) | %.2f | **%.0fx** |", tmb_time, tmb_time / fr_time),
  "",
  "| variance component | fr_fit | lmer | glmmTMB | fr_fit / lmer |",
  "|---|---|---|---|---|",
  sprintf("| %s | %s | %s | %s | %s |", components$group, components$fr_fit, components$lmer,
          components$glmmTMB, components$ratio),
  "",
  "| fixed effect | fr_fit (GLS) | lmer | difference / lmer's SE | SE fr_fit | SE lmer | SE ratio |",
  "|---|---|---|---|---|---|---|",
  sprintf("| %s | %.5f | %.5f | %.4f | %.5f | %.5f | %.3f |", fixed$term, fixed$fr_fit, fixed$lmer,
          fixed$diff_se, fixed$se_fr, fixed$se_lmer, fixed$se_ratio),
  "",
  sprintf("Correlation of the predicted random effects with lmer's: %s.",
          paste(sprintf("%s %.5f", names(ranef_cor), ranef_cor), collapse = ", ")),
  "",
  sprintf("Held-out RMSE (fit on a random 80%%, predict the other 20%%, new levels at 0): fr_fit %.5f, lmer %.5f, ratio %.5f.",
          holdout[["fr_fit"]], holdout[["lmer"]], holdout[["fr_fit"]] / holdout[["lmer"]]),
  ""
)
write_results_section("insteval", md)
cat(md, sep = "\n")
