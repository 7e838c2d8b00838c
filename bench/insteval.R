# InstEval, y ~ service + (1 | s) + (1 | d) + (1 | dept): fr_fit (model frame included)
# against lme4::lmer (REML), timed in the same R session. Writes bench/results-insteval.md.
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
  ""
)
out <- file.path("bench", "results-insteval.md")
writeLines(md, out)
cat(md, sep = "\n")
