# The Laplace fit (fr_fit's default for crossed GLMM terms of moderate size, method =
# "laplace") against the truth and against glmer (Laplace, bobyqa) on crossed designs:
#   crossed_pl       simulate_crossed(2e4, family = binomial): 125 users x 53 items, Zipf
#                    sizes, sds 1 and 0.5, intercept qlogis(0.2), slope 0.5 (82% of rows
#                    in repeated cells)
#   crossed_pl_pois  the same design, Poisson, intercept log(5)
#   crossed          100 users x 50 items, every pair once, Bernoulli, sds 1 and 0.5
# Per data set: fr_fit's and glmer's estimates, vcov()'s standard errors and CPU seconds
# (one thread each, two data sets at a time). Writes the "glmm-laplace-crossed" section of
# bench/results.md. Run from the package root:
#   nice -n 19 Rscript bench/glmm-laplace-crossed.R [data sets per design]
# Data sets are cached in /tmp/fullrandom-bench-glmm-laplace-crossed (one file each); the
# section is written from the cache ("0" only rewrites it).
suppressMessages({
  library(fullrandom)
  library(lme4)
  library(parallel)
})
source("bench/results.R")
options(fullrandom.threads = 1L)
args <- commandArgs(trailingOnly = TRUE)
n_sets <- if (length(args) >= 1L) as.integer(args[[1]]) else 100L
cache <- "/tmp/fullrandom-bench-glmm-laplace-crossed"
dir.create(cache, showWarnings = FALSE)
designs <- list(
  crossed_pl = list(family = "binomial", truth = c(qlogis(0.2), 0.5, 1, 0.5)),
  crossed_pl_pois = list(family = "poisson", truth = c(log(5), 0.5, 1, 0.5)),
  crossed = list(family = "binomial", truth = c(qlogis(0.2), 0.5, 1, 0.5))
)

make_data <- function(design, seed) {
  spec <- designs[[design]]
  truth <- spec$truth
  if (design == "crossed") {
    set.seed(seed)
    d <- expand.grid(user = seq_len(100), item = seq_len(50))
    d$x <- stats::rnorm(nrow(d))
    eta <- truth[[1]] + truth[[2]] * d$x + stats::rnorm(100, 0, truth[[3]])[d$user] +
      stats::rnorm(50, 0, truth[[4]])[d$item]
    d$y <- stats::rbinom(nrow(d), 1, stats::plogis(eta))
    d$user <- factor(d$user)
    d$item <- factor(d$item)
    return(d)
  }
  simulate_crossed(2e4, family = get(spec$family), intercept = truth[[1]], slope = truth[[2]],
                   sd_user = truth[[3]], sd_item = truth[[4]], seed = seed)
}

one <- function(job) {
  f_out <- file.path(cache, sprintf("%s-%d.rds", job$design, job$seed))
  if (file.exists(f_out)) return(NULL)
  d <- make_data(job$design, job$seed)
  fam <- get(designs[[job$design]]$family)
  form <- y ~ x + (1 | user) + (1 | item)
  t1 <- system.time(f <- tryCatch(suppressMessages(fr_fit(form, d, family = fam)),
                                  error = function(e) conditionMessage(e)))[[1]]
  t2 <- system.time(g <- suppressWarnings(glmer(form, d, family = fam,
                                                control = glmerControl(optimizer = "bobyqa"))))[[1]]
  vg <- as.data.frame(VarCorr(g))
  ok <- inherits(f, "fr_fit")
  out <- list(design = job$design, seed = job$seed, method = if (ok) f$method else f,
              fr = if (ok) c(fixef(f), sqrt(f$theta[c("user", "item")])) else rep(NA, 4),
              fr_se = if (ok) sqrt(diag(vcov(f))) else rep(NA, 2),
              loglik = c(fr = if (ok) as.numeric(logLik(f)) else NA, glmer = as.numeric(logLik(g))),
              glmer = c(fixef(g), vg$sdcor[match(c("user", "item"), vg$grp)]),
              glmer_se = sqrt(diag(as.matrix(vcov(g)))), cpu = c(fr = t1, glmer = t2))
  saveRDS(out, f_out)
  NULL
}
jobs <- unlist(lapply(names(designs), function(design) {
  lapply(2000L + seq_len(n_sets), function(seed) list(design = design, seed = seed))
}), recursive = FALSE)
if (n_sets > 0L) invisible(mclapply(jobs, one, mc.cores = 2, mc.preschedule = FALSE))

res <- lapply(list.files(cache, full.names = TRUE), readRDS)
f2 <- function(v, d = 2) paste(formatC(v, format = "f", digits = d), collapse = "; ")
rows <- character()
for (design in names(designs)) {
  r <- Filter(function(x) x$design == design, res)
  if (length(r) == 0L) next
  truth <- designs[[design]]$truth
  est <- t(sapply(r, `[[`, "fr"))
  ref <- t(sapply(r, `[[`, "glmer"))
  ok <- stats::complete.cases(est) & stats::complete.cases(ref)
  failed <- sum(!stats::complete.cases(est))
  methods <- table(vapply(r, function(x) x$method, ""))
  est <- est[ok, , drop = FALSE]
  ref <- ref[ok, , drop = FALSE]
  se <- t(sapply(r, `[[`, "fr_se"))[ok, , drop = FALSE]
  se_ref <- t(sapply(r, `[[`, "glmer_se"))[ok, , drop = FALSE]
  cmp <- against_glmer(est, ref, se, se_ref, truth)
  ll <- t(sapply(r, `[[`, "loglik"))[ok, , drop = FALSE]
  cpu <- rowMeans(sapply(r, `[[`, "cpu"))
  rows <- c(rows, sprintf(
    "| %s | %d (%s; %d failed) | %s | %s | %s (%s) | %s | %s | %s | %.1e | %.3f | %.2f, %.2f |",
    design, nrow(est), paste(names(methods), methods, sep = " ", collapse = ", "), failed,
    f2(cmp$bias, 1), f2(cmp$bias_ref, 1), f2(cmp$spread), f2(cmp$spread_se), f2(cmp$mse),
    f2(cmp$coverage, 3), f2(cmp$coverage_ref, 3), max(abs(ll[, 1] - ll[, 2])),
    max(abs(est[, 1:2] - ref[, 1:2]) / se_ref), cpu[["fr"]], cpu[["glmer"]]))
}
lines <- c(
  "## GLMM Laplace fit on crossed data (bench/glmm-laplace-crossed.R)",
  "",
  paste(
    "`fr_fit(y ~ x + (1 | user) + (1 | item), family = ...)` (the default, `method = \"auto\"`, which takes the",
    "Laplace fit for these crossed designs) against glmer (Laplace, bobyqa) and the truth. `crossed_pl`:",
    "`simulate_crossed(2e4, family = binomial)`, 125 users x 53 items, Zipf sizes, intercept qlogis(0.2);",
    "`crossed_pl_pois`: the same design, Poisson, intercept log(5); `crossed`: 100 users x 50 items, every pair",
    "once, Bernoulli, intercept qlogis(0.2); sds 1 and 0.5, slope 0.5 throughout. Columns in the order",
    "(Intercept), x, sd user, sd item. |logLik gap|: the largest difference of the two fits' log-likelihoods;",
    "max |b - b_glmer| / se: the largest difference of the fixed effects in glmer's standard errors. One",
    "thread a fit, two data sets at a time on the shared 2-core machine; CPU seconds a fit."
  ),
  "",
  "| design | data sets (method; failures) | bias of the sds (%), fr_fit | glmer | sampling sd / glmer's (bootstrap se) | MSE / glmer's | Wald coverage (Intercept); x, fr_fit | glmer | max abs logLik gap | max abs b - b_glmer / se | CPU s: fr_fit, glmer |",
  "|---|---|---|---|---|---|---|---|---|---|---|",
  rows
)
write_results_section("glmm-laplace-crossed", lines)
cat(lines, sep = "\n")
