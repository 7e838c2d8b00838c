# Coverage of the default confint() (method = "analytic": Wald fixed effects from vcov(),
# scaled chi-square (Satterthwaite) variance components with the analytic normal-theory SEs)
# beside the other rules measured (log-scale Wald; chi-square with df the levels less one;
# the cluster-robust SEs) on designs
# (i)-(iv) of bench/coverage-designs.R, the analytic SEs against the Monte Carlo sd of the
# raw estimates on the same data sets, and the time of the default confint() on InstEval
# against a fit. Writes its section of bench/results.md (and README.md).
# FULLRANDOM_BENCH_COVERAGE_SETS gives a quick run.
suppressPackageStartupMessages(library(fullrandom))
source("bench/results.R")
source("bench/coverage-designs.R")

n_sets <- as.integer(Sys.getenv("FULLRANDOM_BENCH_COVERAGE_SETS", "500"))
threads <- 2L
cell <- function(name) sprintf("`%s`", gsub("|", "\\|", name, fixed = TRUE))
covers <- function(ci, truth) ci[names(truth), 1] <= truth & truth <= ci[names(truth), 2]

# The rules the default was chosen from, all with the same normal-theory SEs: the scaled
# chi-square (df = 2 v^2 / se^2, the default), Wald on the log scale, and a chi-square with
# df the levels of the term less one (the residual: the scaled chi-square), and that
# chi-square shifted: v + c ~ (var + c) chi2_df / df, df the levels less one, c the part of
# the term's between-level variance that is noise of other terms and the residual, taken
# from the SE as se sqrt(df / 2) - v (a balanced one-way mean square's exact interval).
rules <- c("chisq", "log", "levels", "shifted")
rule_limits <- function(fit, se, probs, rule) {
  v <- unname(fit$theta)
  raw <- unname(fit$theta_raw)
  if (!rule %in% c("levels", "shifted")) return(fullrandom:::variance_limits(v, raw, se, probs, rule)$limits)
  out <- fullrandom:::variance_limits(v, raw, se, probs, "chisq")$limits
  for (j in seq_along(fit$flist)) {
    df <- nlevels(droplevels(fit$flist[[j]])) - 1
    if (v[j] <= 0) next
    if (rule == "levels") {
      out[j, ] <- sqrt(df * v[j] / stats::qchisq(rev(probs), df))
    } else {
      shift <- max(se[j] * sqrt(df / 2) - v[j], 0)
      out[j, ] <- sqrt(pmax((v[j] + shift) * df / stats::qchisq(rev(probs), df) - shift, 0))
    }
  }
  out
}

run_design <- function(simulate, formula, truth) {
  started <- Sys.time()
  hits <- robust_hits <- below <- upper <- NULL
  rule_hits <- rule_upper <- stats::setNames(vector("list", length(rules)), rules)
  raw <- se <- robust_se <- NULL
  probs <- c(0.025, 0.975)
  n_sd <- length(truth) - sum(!grepl("^sd_|^sigma$", names(truth)))
  for (s in seq_len(n_sets)) {
    fit <- suppressMessages(fr_fit(formula, simulate(s), threads = threads))
    ci <- confint(fit)
    hits <- rbind(hits, covers(ci, truth))
    below <- rbind(below, truth < ci[names(truth), 1])
    upper <- rbind(upper, ci[names(truth), 2])
    robust <- fullrandom:::analytic_intervals(fit, probs, se = "robust")$limits
    dimnames(robust) <- list(fullrandom:::parameter_names(fit), NULL)
    robust_hits <- rbind(robust_hits, covers(robust, truth))
    v <- fullrandom:::moment_vcov_normal(fit)
    s_v <- sqrt(pmax(diag(v), 0))[c(names(fit$flist), "Residual")]
    for (rule in rules) {
      lim <- rule_limits(fit, unname(s_v), probs, rule)
      dimnames(lim) <- list(fullrandom:::parameter_names(fit)[seq_len(n_sd)], NULL)
      rule_hits[[rule]] <- rbind(rule_hits[[rule]], covers(lim, truth[seq_len(n_sd)]))
      rule_upper[[rule]] <- rbind(rule_upper[[rule]], lim[names(truth)[seq_len(n_sd)], 2])
    }
    raw <- rbind(raw, fit$theta_raw[rownames(v)])
    se <- rbind(se, sqrt(diag(v)))
    robust_se <- rbind(robust_se, sqrt(diag(fullrandom:::moment_vcov(fit))))
  }
  mc <- apply(raw, 2, stats::sd)
  list(coverage = colMeans(hits), below = colMeans(below), robust_coverage = colMeans(robust_hits),
       rule_coverage = lapply(rule_hits, colMeans), upper = apply(upper, 2, stats::median),
       rule_upper = lapply(rule_upper, function(u) apply(u, 2, stats::median)),
       se_ratio = sqrt(colMeans(se^2)) / mc, robust_ratio = sqrt(colMeans(robust_se^2)) / mc,
       seconds = as.numeric(difftime(Sys.time(), started, units = "secs")))
}

designs <- list(
  "(i) unbalanced one-way" = list(one_way, y ~ 1 + (1 | g), one_way_truth),
  "(ii) sparse crossed with a within-level covariate" = list(two_way, y ~ x + (1 | u) + (1 | v), two_way_truth),
  "(iii) nested pair, crossed term, between-level covariate" =
    list(three_term, y ~ w + (1 | school/class) + (1 | rater), three_term_truth),
  "(iv) few levels, a variance far below its noise (the boundary rules)" =
    list(few_levels, y ~ 1 + (1 | dept) + (1 | lect), few_levels_truth)
)
results <- lapply(designs, function(d) run_design(d[[1]], d[[2]], d[[3]]))

data(InstEval, package = "lme4")
f <- y ~ service + (1 | s) + (1 | d) + (1 | dept)
fit_seconds <- median(vapply(1:5, function(i) system.time(fr_fit(f, InstEval, threads = threads))[["elapsed"]], 1))
insteval <- fr_fit(f, InstEval, threads = threads)
ci_seconds <- median(vapply(1:3, function(i) system.time(confint(insteval))[["elapsed"]], 1))
ci <- confint(insteval)

rule_names <- c(chisq = "scaled chi-square, df = 2 v^2 / se^2 (the default)", log = "Wald on the log scale",
                levels = "chi-square, df = levels - 1",
                shifted = "shifted chi-square, df = levels - 1")
lines <- c("", "## Intervals: coverage of the default confint()", "",
  sprintf(paste(
    "`Rscript bench/coverage-default.R`: %d simulated data sets per design; 95%% intervals of",
    "`confint(fit)` (method \"analytic\"): fixed effects by Wald from `vcov()`, variance",
    "components by the scaled chi-square (Satterthwaite) rule, `[df v / q(0.975), df v / q(0.025)]`",
    "with `df = 2 v^2 / se^2` and the analytic normal-theory SEs. Beside it, on the same data sets,",
    "the other rules measured for the variance components: Wald on the log-variance scale",
    "(the earlier default), a chi-square with df the term's levels less one, that chi-square",
    "shifted by the noise in the term's level means (`v + c`, `c = se sqrt(df / 2) - v`), and the",
    "scaled chi-square with the cluster-robust SEs. A",
    "coverage is the share of data sets whose interval holds the true value (Monte Carlo SE",
    "about 0.01); \"below\" the share whose default interval lies wholly above the truth.",
    "\"SE / MC sd\": root mean square of the analytic SEs of the raw variance",
    "estimates over their Monte Carlo sd on the same data sets."), n_sets), "")
fmt <- function(x) paste(sprintf("%.3f", x), collapse = " | ")
for (name in names(designs)) {
  r <- results[[name]]
  truth <- designs[[name]][[3]]
  n_fixed <- sum(!grepl("^sd_|^sigma$", names(truth)))
  lines <- c(lines, sprintf("**%s** (%.0f s)", name, r$seconds), "",
             sprintf("| | %s |", paste(cell(names(truth)), collapse = " | ")),
             paste0("|---|", strrep("---|", length(truth))),
             sprintf("| **coverage, default** | %s |", fmt(r$coverage)),
             sprintf("| truth below the default interval | %s |", fmt(r$below)),
             sprintf("| median upper limit, default | %s |", fmt(r$upper)))
  for (rule in setdiff(rules, "chisq")) {
    lines <- c(lines, sprintf("| coverage, %s | %s |%s", rule_names[[rule]], fmt(r$rule_coverage[[rule]]),
                              strrep(" |", n_fixed)),
               sprintf("| median upper limit, %s | %s |%s", rule_names[[rule]], fmt(r$rule_upper[[rule]]),
                       strrep(" |", n_fixed)))
  }
  lines <- c(lines,
             sprintf("| coverage, default rule with the cluster-robust SE | %s |", fmt(r$robust_coverage)),
             sprintf("| SE / MC sd, normal-theory (%s) | %s |", paste(names(r$se_ratio), collapse = ", "),
                     paste(sprintf("%.2f", r$se_ratio), collapse = ", ")),
             sprintf("| SE / MC sd, cluster-robust (%s) | %s |", paste(names(r$robust_ratio), collapse = ", "),
                     paste(sprintf("%.2f", r$robust_ratio), collapse = ", ")), "")
}
lines <- c(lines,
  sprintf(paste("**InstEval** (73,421 rows), 2 threads: one fit %.3f s (median of 5); the default",
                "`confint()` %.3f s (median of 3), **%.1fx** a fit."), fit_seconds, ci_seconds,
          ci_seconds / fit_seconds), "",
  "```", utils::capture.output(print(round(ci[, 1:2], 4))), "```", "")
cat(lines, sep = "\n")
saveRDS(results, file.path(tempdir(), "coverage-default.rds"))
write_results_section("coverage-default", lines)
