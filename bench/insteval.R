# InstEval, y ~ service + (1 | s) + (1 | d) + (1 | dept): fr_fit (model frame included)
# against lme4::lmer (REML), timed in the same R session: variance components, GLS
# fixed effects and standard errors, predicted random effects, and a held-out
# comparison (fit on a random 80%, predict the other 20%). Writes
# bench/results-insteval.md.
suppressPackageStartupMessages({
  library(fullrandom)
  library(lme4)
})
data("InstEval", package = "lme4")
form <- y ~ service + (1 | s) + (1 | d) + (1 | dept)

fit <- fr_fit(form, data = InstEval) # warm-up: first-touch allocations
fr_times <- vapply(1:5, function(i) system.time(fr_fit(form, data = InstEval))[["elapsed"]], 1)
lmer_time <- system.time(lfit <- lmer(form, data = InstEval))[["elapsed"]]
fr_time <- stats::median(fr_times)

ours <- as.data.frame(VarCorr(fit))
theirs <- as.data.frame(lme4::VarCorr(lfit))
components <- data.frame(
  group = ours$grp, fr_fit = signif(ours$vcov, 5),
  lmer = signif(theirs$vcov[match(ours$grp, theirs$grp)], 5)
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
  "## InstEval: fr_fit against lmer",
  "",
  sprintf("`%s`, %d rows, %s; R %s, lme4 %s, %d threads for fr_fit.",
          deparse1(form), nrow(InstEval), format(Sys.Date()), getRversion(),
          utils::packageVersion("lme4"), fit$threads),
  "",
  "| fit | time (s) |",
  "|---|---|",
  sprintf("| fr_fit, model frame included (median of 5) | %.3f |", fr_time),
  sprintf("| lme4::lmer (REML) | %.2f |", lmer_time),
  sprintf("| **lmer / fr_fit** | **%.0fx** |", lmer_time / fr_time),
  "",
  "| variance component | fr_fit | lmer | ratio |",
  "|---|---|---|---|",
  sprintf("| %s | %s | %s | %s |", components$group, components$fr_fit, components$lmer, components$ratio),
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
out <- file.path("bench", "results-insteval.md")
writeLines(md, out)
cat(md, sep = "\n")
