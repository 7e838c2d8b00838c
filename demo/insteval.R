# fr_fit and lmer side by side on lme4's InstEval (73,421 ratings of 1,128 instructors
# by 2,972 students in 14 departments): y ~ service + (1 | s) + (1 | d) + (1 | dept).
library(fullrandom)
data("InstEval", package = "lme4")
form <- y ~ service + (1 | s) + (1 | d) + (1 | dept)

fr_time <- system.time(fit <- fr_fit(form, data = InstEval))[["elapsed"]]
print(fit)

cat("\nlme4::lmer (REML) on the same model...\n")
lmer_time <- system.time(lfit <- lme4::lmer(form, data = InstEval))[["elapsed"]]
print(lme4::VarCorr(lfit), comp = c("Variance", "Std.Dev."))

side <- merge(
  setNames(as.data.frame(VarCorr(fit))[, c("grp", "vcov")], c("grp", "fr_fit")),
  setNames(as.data.frame(lme4::VarCorr(lfit))[, c("grp", "vcov")], c("grp", "lmer")),
  sort = FALSE
)
side$ratio <- side$fr_fit / side$lmer
cat("\nVariance components side by side:\n")
print(side, digits = 4, row.names = FALSE)
cat(sprintf("\nTime: fr_fit %.3f s, lmer %.1f s (%.0fx)\n", fr_time, lmer_time, lmer_time / max(fr_time, 1e-3)))

cat("\nFixed effects (fr_fit: GLS with the moment estimates; lmer: REML):\n")
print(data.frame(
  fr_fit = fixef(fit), se_fr_fit = sqrt(diag(vcov(fit))),
  lmer = lme4::fixef(lfit), se_lmer = sqrt(diag(as.matrix(vcov(lfit))))
), digits = 4)
cat("\nCorrelation of the predicted random effects with lmer's:\n")
print(vapply(names(fit$flist), function(k) {
  u <- ranef(fit)[[k]]
  cor(u[["(Intercept)"]], lme4::ranef(lfit)[[k]][rownames(u), "(Intercept)"])
}, 1), digits = 6)
