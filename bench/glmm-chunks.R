# GLMMs in chunks: a crossed Bernoulli fit of 10^6 rows (simulate_crossed(family =
# binomial): power-law users and items, logit P(y = 1) = -1 + 0.2 x + u_user + v_item,
# sd(u) = 0.5, sd(v) = 0.4) whole, in 7 exact chunks of a data frame, from 7 RDS files and
# averaged over 7 chunks by user (Software Alchemy), in one run: elapsed seconds, the R
# heap's peak (gc's "max used"; the Rust core's buffers are not in it), the largest
# relative difference of the variances and fixed effects from the whole fit, and the
# standard errors of the fixed effects.
#   Rscript bench/glmm-chunks.R
suppressPackageStartupMessages(library(fullrandom))
source("bench/results.R")
threads <- 2L
n <- 1e6
d <- simulate_crossed(n, intercept = -1, family = binomial, seed = 1)
form <- y ~ x + (1 | user) + (1 | item)
dir <- tempfile("glmm-chunks")
dir.create(dir)
paths <- file.path(dir, sprintf("part%d.rds", 1:7))
part <- rep_len(1:7, n)
for (i in 1:7) saveRDS(d[part == i, ], paths[[i]])
load <- function() as.numeric(strsplit(readLines("/proc/loadavg"), " ")[[1]][1])
measure <- function(label, expr) {
  gc(reset = TRUE)
  before <- load()
  seconds <- system.time(fit <- suppressWarnings(expr))[["elapsed"]]
  list(label = label, fit = fit, seconds = seconds, heap = sum(gc()[, 6]), load = (before + load()) / 2)
}
runs <- list(
  measure("whole data frame", fr_fit(form, d, family = binomial, threads = threads)),
  measure("7 exact chunks of the data frame", fr_fit(form, d, family = binomial, threads = threads, chunks = 7, seed = 1)),
  measure("7 RDS files, exact", fr_fit(form, paths, family = binomial, threads = threads)),
  measure("7 chunks by user, averaged", fr_fit(form, d, family = binomial, threads = threads, chunks = 7,
                                              chunk_by = "user", seed = 1, combine = "average"))
)
whole <- runs[[1]]$fit
difference <- function(fit) {
  a <- c(fit$theta, fixef(fit))
  b <- c(whole$theta, fixef(whole))
  max(abs(a - b) / abs(b))
}
row <- function(r) {
  se <- sqrt(diag(vcov(r$fit)))
  sprintf("| %s | %.1f | %.0f | %.1f | %.1e | %s | %s | %.4f | %.5f |", r$label, r$seconds, r$heap, r$load,
          difference(r$fit), paste(sprintf("%.3f", sqrt(r$fit$theta)), collapse = ", "),
          paste(sprintf("%.3f", fixef(r$fit)), collapse = ", "), se[[1]], se[[2]])
}
lines <- c(
  "## GLMMs in chunks (bench/glmm-chunks.R)",
  "",
  sprintf(paste("Crossed Bernoulli data, %s rows (%d users, %d items), `y ~ x + (1 | user) + (1 | item)`, %d threads,",
                "one run; truth: sds 0.5 and 0.4, fixed effects -1 and 0.2. \"R heap\": gc's peak in MB (the Rust core's",
                "buffers are not in it). \"Difference\": largest relative difference of the variances and fixed effects",
                "from the whole fit. The averaged chunks hold whole users but share the items, so their SE of the",
                "intercept is too small (see ?fr_fit)."),
          format(as.integer(n), big.mark = ","), nlevels(d$user), nlevels(d$item), threads),
  "",
  "| fit | seconds | R heap (MB) | load | difference | sds | fixed effects | SE (Intercept) | SE x |",
  "|---|---|---|---|---|---|---|---|---|",
  vapply(runs, row, "")
)
writeLines(lines)
write_results_section("glmm-chunks", lines, readme = "")
