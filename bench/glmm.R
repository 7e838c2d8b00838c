# Generalized linear mixed models by fr_fit's default method (FULLRANDOM_GLMM_METHOD names
# another) against glmer (Laplace, bobyqa) on cbpp, VerbAgg, grouseticks and mlmRev's
# Contraception (with glmer's profile intervals of the sds), with issue 19's acceptance
# checks, and the time of a crossed Bernoulli fit by method = "moments" at 10^5 and 10^6
# rows against glmer(nAGQ = 0) at 10^5. Writes the "glmm" section of bench/results.md.
# Run from the package root: Rscript bench/glmm.R
suppressMessages({
  library(fullrandom)
  library(lme4)
})
source("bench/results.R")
threads <- as.integer(Sys.getenv("FULLRANDOM_BENCH_THREADS", "2"))
options(fullrandom.threads = threads)
method <- Sys.getenv("FULLRANDOM_GLMM_METHOD", "")
fit_fr <- function(formula, data, family) {
  if (nzchar(method)) fr_fit(formula, data, family = family, method = method) else fr_fit(formula, data, family = family)
}

compare <- function(name, formula, data, family) {
  t_fr <- system.time(f <- fit_fr(formula, data, family))[["elapsed"]]
  t_g <- system.time(g <- glmer(formula, data, family = family,
                                control = glmerControl(optimizer = "bobyqa")))[["elapsed"]]
  b <- fixef(g)[names(fixef(f))]
  se <- sqrt(diag(as.matrix(vcov(g))))[names(fixef(f))]
  vg <- as.data.frame(VarCorr(g))
  sd_g <- stats::setNames(vg$sdcor, vg$grp)[names(f$theta)]
  modes <- vapply(names(f$flist), function(k) {
    u <- ranef(f)[[k]][[1]]
    if (sd(u) == 0) return(NA_real_)
    cor(u, ranef(g)[[k]][rownames(ranef(f)[[k]]), 1])
  }, 1)
  # FULLRANDOM_GLMM_NO_PROFILE lists cases whose (slow) profile intervals are skipped.
  skip <- name %in% strsplit(Sys.getenv("FULLRANDOM_GLMM_NO_PROFILE", ""), ",")[[1]]
  profile <- if (skip) NULL else tryCatch(suppressWarnings(suppressMessages(
    confint(g, parm = "theta_", method = "profile", oldNames = FALSE))), error = function(e) NULL)
  lower <- upper <- stats::setNames(rep(NA_real_, length(f$theta)), names(f$theta))
  if (!is.null(profile)) {
    rows <- paste0("sd_(Intercept)|", names(f$theta))
    lower[] <- profile[rows, 1]
    upper[] <- profile[rows, 2]
  }
  list(name = name, t_fr = t_fr, t_g = t_g, method = f$method,
       fixed = data.frame(term = names(b), fr = fixef(f), glmer = b,
                          diff_in_glmer_se = (fixef(f) - b) / se,
                          se_ratio = sqrt(diag(vcov(f))) / se,
                          se_ratio_sandwich = sqrt(diag(f$vcov_sandwich)) / se),
       sds = data.frame(term = names(f$theta), fr = sqrt(f$theta), glmer = sd_g,
                        ratio = sqrt(f$theta) / sd_g, lower = lower, upper = upper, mode_cor = modes))
}

load <- tryCatch(trimws(sub(".*load average:", "", system("uptime", intern = TRUE))), error = function(e) "?")
data(grouseticks, package = "lme4")
data(Contraception, package = "mlmRev")
cases <- list(
  compare("cbpp", cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial),
  compare("VerbAgg", r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item), VerbAgg, binomial),
  compare("grouseticks", TICKS ~ YEAR + scale(HEIGHT) + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION),
          grouseticks, poisson),
  compare("Contraception", use ~ age + I(age^2) + urban + livch + (1 | district), Contraception, binomial)
)

# Crossed Bernoulli data: users x items, slope 0.5, sds 1 and 0.5.
crossed <- function(n, n_users, n_items, seed) {
  set.seed(seed)
  d <- data.frame(user = factor(sample.int(n_users, n, TRUE)), item = factor(sample.int(n_items, n, TRUE)),
                  x = rnorm(n))
  u <- rnorm(n_users, 0, 1)
  v <- rnorm(n_items, 0, 0.5)
  d$y <- rbinom(n, 1, plogis(-1 + 0.5 * d$x + u[d$user] + v[d$item]))
  d
}
# FULLRANDOM_GLMM_SCALE=0 skips the timings and keeps their table from the last run.
run_scale <- Sys.getenv("FULLRANDOM_GLMM_SCALE", "1") != "0"
scale_rows <- if (run_scale) c(1e5, 1e6) else numeric(0)
scale <- lapply(scale_rows, function(n) {
  d <- crossed(n, n / 40, n / 95, 1)
  t_fr <- system.time(f <- fr_fit(y ~ x + (1 | user) + (1 | item), d, family = binomial,
                                  method = "moments"))[["elapsed"]]
  t_g <- NA_real_
  slope_g <- NA_real_
  if (n <= 1e5) {
    t_g <- system.time(g <- glmer(y ~ x + (1 | user) + (1 | item), d, family = binomial,
                                  nAGQ = 0))[["elapsed"]]
    slope_g <- fixef(g)[["x"]]
  }
  data.frame(rows = n, users = nlevels(d$user), items = nlevels(d$item), fr_seconds = t_fr,
             glmer_nAGQ0_seconds = t_g, fr_slope = fixef(f)[["x"]], glmer_slope = slope_g,
             fr_sd_user = sqrt(f$theta[["user"]]), fr_sd_item = sqrt(f$theta[["item"]]))
})
scale <- do.call(rbind, scale)

fmt <- function(x, d = 3) formatC(x, digits = d, format = "f")
lines <- c("## Generalized linear mixed models (bench/glmm.R)", "",
           sprintf(paste("Threads: %d. fr_fit(family = ) by %s against glmer (Laplace, bobyqa); each heading names the",
                         "method fr_fit used (\"efficient\": per-level marginal likelihoods by adaptive Gauss-Hermite quadrature;",
                         "\"moments\": Jiang's moment equations with the quasi-score fixed effects).",
                         "SE ratio (vcov): fr_fit's vcov() over glmer's; (sandwich): the cluster-robust sandwich",
                         "over glmer's. Issue 19's acceptance: every fixed effect within 1.5 glmer SEs, every sd within 15%% of",
                         "glmer's or inside its profile interval, SE ratios (vcov) in [0.8, 1.3], correlation of the modes at",
                         "least 0.98; *checks* counts the items that hold. Load average at the start: %s."), threads,
                   if (nzchar(method)) sprintf("method = \"%s\"", method) else "the default method", load), "")
for (case in cases) {
  sd_ok <- abs(case$sds$ratio - 1) <= 0.15 | (!is.na(case$sds$lower) & case$sds$fr >= case$sds$lower & case$sds$fr <= case$sds$upper)
  checks <- c(abs(case$fixed$diff_in_glmer_se) <= 1.5, sd_ok, case$fixed$se_ratio >= 0.8 & case$fixed$se_ratio <= 1.3,
              is.na(case$sds$mode_cor) | case$sds$mode_cor >= 0.98)
  lines <- c(lines, sprintf("### %s (method = \"%s\"; fr_fit %s s, glmer %s s; checks: %d of %d hold)", case$name, case$method,
                            fmt(case$t_fr, 2), fmt(case$t_g, 2), sum(checks), length(checks)), "",
             "| fixed effect | fr_fit | glmer | difference / glmer SE | SE ratio (vcov) | SE ratio (sandwich) |",
             "|---|---|---|---|---|---|",
             sprintf("| %s | %s | %s | %s | %s | %s |", case$fixed$term, fmt(case$fixed$fr), fmt(case$fixed$glmer),
                     fmt(case$fixed$diff_in_glmer_se, 2), fmt(case$fixed$se_ratio, 2), fmt(case$fixed$se_ratio_sandwich, 2)), "",
             "| term sd | fr_fit | glmer | ratio | glmer profile 95% | correlation of modes |", "|---|---|---|---|---|---|",
             sprintf("| %s | %s | %s | %s | %s-%s | %s |", case$sds$term, fmt(case$sds$fr), fmt(case$sds$glmer),
                     fmt(case$sds$ratio, 2), fmt(case$sds$lower), fmt(case$sds$upper), fmt(case$sds$mode_cor, 4)), "")
}
if (!run_scale) {
  previous <- readLines("bench/results.md")
  from <- grep("^### Crossed Bernoulli data", previous)
  to <- grep("^<!-- /bench:glmm -->", previous)
  heading <- sub(" \\(not rerun: the table of the previous run\\).*$", "", previous[from])
  lines <- c(lines, paste(heading, "(not rerun: the table of the previous run)"), previous[(from + 1L):(to - 1L)])
} else {
  lines <- c(lines, "### Crossed Bernoulli data by method = \"moments\" (truth: slope 0.5, sd user 1, sd item 0.5)", "",
             "| rows | users | items | fr_fit s | glmer nAGQ=0 s | fr slope | glmer slope | fr sd user | fr sd item |",
             "|---|---|---|---|---|---|---|---|---|",
             sprintf("| %s | %d | %d | %s | %s | %s | %s | %s | %s |", format(scale$rows, big.mark = ",", scientific = FALSE),
                     scale$users, scale$items, fmt(scale$fr_seconds, 2), fmt(scale$glmer_nAGQ0_seconds, 2),
                     fmt(scale$fr_slope), fmt(scale$glmer_slope), fmt(scale$fr_sd_user), fmt(scale$fr_sd_item)))
}
write_results_section("glmm", lines)
cat(lines, sep = "\n")
