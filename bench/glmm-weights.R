# The GLMM moment fit's level weights on power-law crossed Bernoulli data: the default
# (simple weights 1 / max(n_g - 1, 1)) and the information-weighted second step (option
# fullrandom.glmm_information_weights) against glmer (Laplace, bobyqa), by the bias and
# sampling sd of the sds and fixed effects and the Wald coverage of vcov(). Data:
# simulate_crossed(20000, n_users = 400, n_items = 200, sd_user = 1, sd_item = 0.5,
# intercept = -1, slope = 0.5, family = binomial, seed = r). One file per data set is cached
# in FULLRANDOM_WEIGHTS_CACHE (default /tmp/fullrandom-bench-glmm-weights), so a run
# extends the last one. Writes the "glmm-weights" section of bench/results.md.
# Run from the package root: Rscript bench/glmm-weights.R [data sets, default 100]
suppressPackageStartupMessages({
  library(fullrandom)
  library(lme4)
  library(parallel)
})
source("bench/results.R")
options(fullrandom.threads = 1L)
args <- commandArgs(TRUE)
reps <- if (length(args)) as.integer(args[[1]]) else 100L
cache <- Sys.getenv("FULLRANDOM_WEIGHTS_CACHE", "/tmp/fullrandom-bench-glmm-weights")
dir.create(cache, showWarnings = FALSE, recursive = TRUE)
form <- y ~ x + (1 | user) + (1 | item)
truth <- c(sd_user = 1, sd_item = 0.5, b0 = -1, b1 = 0.5)

one <- function(r) {
  file <- file.path(cache, sprintf("%03d.rds", r))
  if (file.exists(file)) return(readRDS(file))
  d <- simulate_crossed(20000, n_users = 400, n_items = 200, sd_user = 1, sd_item = 0.5, intercept = -1,
                        slope = 0.5, family = binomial, seed = r)
  fr <- function(information) {
    options(fullrandom.glmm_information_weights = information)
    t <- system.time(m <- tryCatch(fr_fit(form, data = d, family = binomial), error = function(e) NULL))[[3]]
    if (is.null(m)) return(rep(NA_real_, 7))
    c(sqrt(m$theta[c("user", "item")]), fixef(m), sqrt(diag(vcov(m))), t)
  }
  simple <- fr(FALSE)
  information <- fr(TRUE)
  t <- system.time(g <- glmer(form, data = d, family = binomial, control = glmerControl(optimizer = "bobyqa")))[[3]]
  vg <- as.data.frame(VarCorr(g))
  sds <- stats::setNames(vg$sdcor, vg$grp)
  out <- rbind(moments = simple, information = information,
               glmer = c(sds[c("user", "item")], fixef(g), sqrt(diag(as.matrix(vcov(g)))), t))
  colnames(out) <- c("sd_user", "sd_item", "b0", "b1", "se0", "se1", "time")
  saveRDS(out, file)
  out
}
start <- Sys.time()
runs <- simplify2array(mclapply(seq_len(reps), one, mc.cores = 2))
minutes <- as.numeric(difftime(Sys.time(), start, units = "mins"))
estimates <- c("sd_user", "sd_item", "b0", "b1")
fmt <- function(x, d = 3) formatC(x, digits = d, format = "f")
rows <- lapply(dimnames(runs)[[1]], function(m) {
  x <- runs[m, , ]
  est <- x[estimates, , drop = FALSE]
  spread <- apply(est, 1, sd, na.rm = TRUE)
  glmer_spread <- apply(runs["glmer", estimates, ], 1, sd)
  cover <- function(b, se, true) mean(abs(x[b, ] - true) < 1.96 * x[se, ], na.rm = TRUE)
  sprintf("| %s | %d | %s | %s | %s | %s, %s | %s, %s | %s |", m, sum(!is.na(x[1, ])),
          paste(fmt(rowMeans(est, na.rm = TRUE) - truth), collapse = ", "), paste(fmt(spread), collapse = ", "),
          paste(fmt(spread / glmer_spread, 2), collapse = ", "),
          fmt(cover("b0", "se0", truth[["b0"]])), fmt(cover("b1", "se1", truth[["b1"]])),
          fmt(mean(x["se0", ], na.rm = TRUE) / spread[["b0"]], 2), fmt(mean(x["se1", ], na.rm = TRUE) / spread[["b1"]], 2),
          fmt(mean(x["time", ], na.rm = TRUE), 1))
})
lines <- c("## GLMM moment fit: level weights on power-law crossed data (bench/glmm-weights.R)", "",
           paste(sprintf("%d data sets of `simulate_crossed(20000, n_users = 400, n_items = 200, sd_user = 1, sd_item = 0.5,", dim(runs)[3]),
                 "intercept = -1, slope = 0.5, family = binomial)` (Zipf level sizes), `y ~ x + (1 | user) + (1 | item)`:",
                 "fr_fit by the moments with the default simple weights and with the information-weighted second step",
                 "(`options(fullrandom.glmm_information_weights = TRUE)`), and glmer (Laplace, bobyqa). One thread a fit,",
                 sprintf("two data sets at a time; %.1f minutes for the data sets not in the cache.", minutes)), "",
           "| fit | fits | bias (sd user, sd item, intercept, x) | sampling sd | sampling sd / glmer's | Wald coverage (intercept, x) | mean SE / sampling sd | seconds |",
           "|---|---|---|---|---|---|---|---|",
           unlist(rows), "",
           paste("Before the pair statistics were centred by the marginal means (main at 881fb2f, seeds 1 to 100, which include these):",
                 "the default's estimates were the same to 3 digits (sampling sd of the sds 2.97 and 3.61 times glmer's), the",
                 "information-weighted step's sampling sds were 12.0, 10.1, 3.7 and 4.4 times glmer's (fits at 0 or 1.3 for a",
                 "true sd of 1), and vcov()'s coverage of x was 0.756 with 22 of 100 standard errors NaN."))
write_results_section("glmm-weights", lines)
cat(lines, sep = "\n")
