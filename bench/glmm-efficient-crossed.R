# The crossed likelihood fit (method = "efficient", a composite likelihood) against glmer
# (Laplace, bobyqa) on power-law crossed Bernoulli data, with more data sets than
# bench/glmm-grid.R's crossed_pl cell: simulate_crossed(2e4, family = binomial), 125 users
# x 53 items with Zipf sizes, sds 1 and 0.5, intercept qlogis(0.2), slope 0.5; seeds from
# 1001. Per data set: the estimates, vcov()'s standard errors and CPU seconds of both
# fits. Writes the "glmm-efficient-crossed" section of bench/results.md. Run from the
# package root:
#   nice -n 19 Rscript bench/glmm-efficient-crossed.R [data sets]
# Data sets are cached in /tmp/fullrandom-bench-glmm-efficient-crossed (one file each);
# the section is written from the cache ("0" only rewrites it).
suppressMessages({
  library(fullrandom)
  library(lme4)
  library(parallel)
})
source("bench/results.R")
options(fullrandom.threads = 1L)
args <- commandArgs(trailingOnly = TRUE)
n_sets <- if (length(args) >= 1L) as.integer(args[[1]]) else 120L
cache <- "/tmp/fullrandom-bench-glmm-efficient-crossed"
dir.create(cache, showWarnings = FALSE)
truth <- c(qlogis(0.2), 0.5, 1, 0.5)

one <- function(seed) {
  f_out <- file.path(cache, sprintf("%d.rds", seed))
  if (file.exists(f_out)) return(NULL)
  d <- simulate_crossed(2e4, family = binomial, intercept = truth[[1]], slope = truth[[2]], sd_user = truth[[3]],
                        sd_item = truth[[4]], seed = seed)
  form <- y ~ x + (1 | user) + (1 | item)
  t1 <- system.time(f <- tryCatch(suppressWarnings(fr_fit(form, d, family = binomial, method = "efficient")),
                                  error = function(e) NULL))[[1]]
  t2 <- system.time(g <- suppressWarnings(glmer(form, d, family = binomial,
                                                control = glmerControl(optimizer = "bobyqa"))))[[1]]
  vg <- as.data.frame(VarCorr(g))
  out <- list(eff = if (!is.null(f)) c(fixef(f), sqrt(f$theta[c("user", "item")])) else rep(NA, 4),
              eff_se = if (!is.null(f)) sqrt(diag(vcov(f))) else rep(NA, 2),
              glmer = c(fixef(g), vg$sdcor[match(c("user", "item"), vg$grp)]),
              glmer_se = sqrt(diag(as.matrix(vcov(g)))), cpu = c(eff = t1, glmer = t2))
  saveRDS(out, f_out)
  NULL
}
if (n_sets > 0L) invisible(mclapply(1000L + seq_len(n_sets), one, mc.cores = 2, mc.preschedule = FALSE))

res <- lapply(list.files(cache, full.names = TRUE), readRDS)
est <- t(sapply(res, `[[`, "eff"))
ref <- t(sapply(res, `[[`, "glmer"))
ok <- stats::complete.cases(est) & stats::complete.cases(ref)
est <- est[ok, , drop = FALSE]
ref <- ref[ok, , drop = FALSE]
se <- t(sapply(res, `[[`, "eff_se"))[ok, , drop = FALSE]
se_ref <- t(sapply(res, `[[`, "glmer_se"))[ok, , drop = FALSE]
cmp <- against_glmer(est, ref, se, se_ref, truth)
cpu <- rowMeans(sapply(res, `[[`, "cpu"))
f2 <- function(v, d = 2) paste(formatC(v, format = "f", digits = d), collapse = "; ")
lines <- c(
  "## GLMM likelihood fit on power-law crossed data (bench/glmm-efficient-crossed.R)",
  "",
  paste(
    "`fr_fit(y ~ x + (1 | user) + (1 | item), family = binomial, method = \"efficient\")` (the composite",
    "likelihood, each level's rows integrated exactly) against glmer (Laplace, bobyqa) on",
    "`simulate_crossed(2e4, family = binomial)`: 125 users x 53 items, Zipf sizes, sds 1 and 0.5, intercept",
    "qlogis(0.2), slope 0.5. Columns in the order (Intercept), x, sd user, sd item; one thread a fit, two",
    "data sets at a time on the shared 2-core machine."
  ),
  "",
  "| data sets | bias of the sds (%), efficient | bias of the sds (%), glmer | sampling sd / glmer's (bootstrap se) | MSE / glmer's | Wald coverage (Intercept); x, efficient | glmer | CPU s a fit: efficient, glmer |",
  "|---|---|---|---|---|---|---|---|",
  sprintf("| %d | %s | %s | %s (%s) | %s | %s | %s | %.1f, %.1f |", nrow(est), f2(cmp$bias, 1), f2(cmp$bias_ref, 1),
          f2(cmp$spread), f2(cmp$spread_se), f2(cmp$mse), f2(cmp$coverage, 3), f2(cmp$coverage_ref, 3),
          cpu[["eff"]], cpu[["glmer"]]),
  "",
  paste(
    "Issue 19 asks for the sampling sd of each sd and the MSE of each fixed effect within 1.3x glmer's: the",
    "likelihood fit misses the first for both sds and the second for the intercept here (bench/glmm-grid.R's",
    "60 data sets of the same design gave 1.39 and 1.36 for the sds, 1.08 and 1.04 for the fixed effects)."
  )
)
write_results_section("glmm-efficient-crossed", lines)
cat(lines, sep = "\n")
