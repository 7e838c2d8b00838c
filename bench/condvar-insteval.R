# Conditional sds of the BLUPs on InstEval against lmer's condVar, at our components and at
# lmer's, and the stochastic estimate's error against the exact values (run with R_LIBS set to
# the built library: Rscript bench/condvar-insteval.R).
suppressMessages({library(fullrandom); library(lme4)})
data(InstEval, package = "lme4")
f <- y ~ service + (1 | s) + (1 | d) + (1 | dept)
t_fit <- system.time(fit <- fr_fit(f, InstEval, threads = 2))[["elapsed"]]
t_cv <- system.time(re <- ranef(fit, condVar = TRUE))[["elapsed"]]
cat(sprintf("fit %.2fs, condVar %.2fs, exact %s\n", t_fit, t_cv, attr(re, "condVar")$exact))
m <- lmer(f, InstEval)
rl <- ranef(m, condVar = TRUE)
print(VarCorr(m)); print(VarCorr(fit))
for (k in c("s", "d", "dept")) {
  a <- sqrt(as.vector(attr(re[[k]], "postVar"))); b <- sqrt(as.vector(attr(rl[[k]], "postVar")))
  b <- b[match(rownames(re[[k]]), rownames(rl[[k]]))]
  r <- a / b - 1
  cat(sprintf("%s: condsd rel diff max %.4f median %.4f\n", k, max(abs(r)), median(abs(r))))
}
# The same at lmer's components: isolates the computation from the components' difference.
vc <- as.data.frame(VarCorr(m))
theta <- setNames(vc$vcov, c(vc$grp[-nrow(vc)], "Residual"))
fit2 <- fit; fit2$theta <- theta[names(fit$theta)]
re2 <- ranef(fit2, condVar = TRUE)
for (k in c("s", "d", "dept")) {
  a <- sqrt(as.vector(attr(re2[[k]], "postVar"))); b <- sqrt(as.vector(attr(rl[[k]], "postVar")))
  b <- b[match(rownames(re2[[k]]), rownames(rl[[k]]))]
  r <- a / b - 1
  cat(sprintf("at lmer's components %s: condsd rel diff max %.2e\n", k, max(abs(r))))
}
# stochastic on InstEval: its error against the exact values
t_st <- system.time(cv <- fullrandom:::conditional_variances(fit, method = "stochastic", probes = 128))[["elapsed"]]
for (k in c("s", "d", "dept")) {
  ex <- as.vector(attr(re[[k]], "postVar"))
  cat(sprintf("stochastic (128 probes, %.1fs) %s: max rel err %.3f, median %.4f, stated max rel se %.3f\n", t_st, k,
              max(abs(cv$variance[[k]] / ex - 1)), median(abs(cv$variance[[k]] / ex - 1)), max(cv$std_error[[k]] / ex)))
}
