# Matloff's Full Randomness estimator for crossed data (model 7): y = mu + b x + a_user +
# b_item + e from simulate_crossed() (users and items drawn for every rating from
# power-law distributions, the paper's eq. 29), at 10^4, 10^5 and 10^6 rows, 200 data
# sets each. Bias and RMSE of every variance component for method = "fr", "fr" with
# fr_shared = TRUE (eq. 27), "fr" on the least-squares residuals (the intercept removed
# with the other regressors, eq. 19), method = "moments", method = "efficient" and lmer
# (all data sets at 10^4, a subset at 10^5, none at 10^6); then Software Alchemy over
# chunks in submission order (chunk_by = ".order"): the averaged estimates, their chunk
# standard errors and the pigeonhole bootstrap's (fr_bootstrap(), on a subset) against the
# Monte Carlo spread. Writes its section of bench/results.md (and README.md).
# Usage: Rscript bench/full-randomness-crossed.R [data sets at 10^4,10^5,10^6 for s = 0.3]
#   [the same for s = 1] [lmer data sets at 10^5] [bootstrapped data sets at 10^4 and 10^5]
#   [bootstrap replicates] [cores] [lmer data sets at 10^6]
# Each data set's row is kept in a directory beside tempdir() (one file per data set and
# cell), so an interrupted run resumes where it stopped and a larger count, or lmer or the
# bootstrap on more data sets, adds to the rows already there.
suppressPackageStartupMessages(library(fullrandom))
source("bench/results.R")

args <- commandArgs(trailingOnly = TRUE)
arg <- function(k, default) if (length(args) >= k) as.integer(strsplit(args[[k]], ",")[[1]]) else default
# 200 data sets at 10^4 and 10^5 rows; fewer at 10^6, where a data set costs about 15 s
# (simulation 2 s, the efficient fit 4 s, every other fit 1-3 s).
reps <- list(`0.3` = arg(1L, c(200L, 200L, 60L)), `1` = arg(2L, c(200L, 200L, 30L)))
lmer_at_1e5 <- arg(3L, 10L)
boot_sets <- arg(4L, 25L)
boot_nsim <- arg(5L, 100L)
cores <- arg(6L, 2L)
lmer_at_1e6 <- arg(7L, 0L)
cache <- file.path(dirname(tempdir()), "fullrandom-bench-fr-crossed")
dir.create(cache, showWarnings = FALSE)
truth <- c(user = 0.5^2, item = 0.4^2, Residual = 1)
form <- y ~ x + (1 | user) + (1 | item)
has_lme4 <- requireNamespace("lme4", quietly = TRUE)
methods <- c("fr", "fr_shared", "fr_residuals", "moments", "efficient", "lmer", "alchemy")

quiet <- function(expr) suppressWarnings(suppressMessages(expr))
theta_of <- function(fit) if (is.null(fit)) rep(NA_real_, 3) else unname(fit$theta)
fit_or_null <- function(...) tryCatch(quiet(fr_fit(..., threads = 1)), error = function(e) NULL)

# One data set: the estimates of every method, the Software Alchemy average with its
# chunk standard errors, the seconds each step took and, for the first `boot_sets` data
# sets, the pigeonhole bootstrap's standard errors of the whole-data FR fit.
one_data_set <- function(i, n, chunks, exponent, lmer_n, boot_n) {
  file <- file.path(cache, sprintf("s%g-n%g-%04d.rds", exponent, n, i))
  out <- if (file.exists(file)) readRDS(file) else list(seconds = numeric())
  seconds <- out$seconds
  timed <- function(name, expr) {
    t0 <- proc.time()[["elapsed"]]
    value <- expr
    seconds[[name]] <<- proc.time()[["elapsed"]] - t0
    value
  }
  wants_lmer <- has_lme4 && i <= lmer_n && is.null(out$lmer)
  wants_boot <- i <= boot_n && (is.null(out$boot_var_se) || !identical(out$boot_nsim, boot_nsim))
  if (!is.null(out$fr) && !wants_lmer && !wants_boot) return(out)
  d <- timed("simulate", simulate_crossed(n, user_exponent = exponent, item_exponent = exponent,
                                          seed = round(1000 * log10(n)) + i + round(100 * exponent) * 10000L))
  if (is.null(out$fr)) {
    fits <- fits_of(d, n, chunks, timed)
    out[names(fits)] <- fits
  }
  if (wants_lmer) {
    m <- timed("lmer", tryCatch(quiet(lme4::lmer(form, d, REML = TRUE)), error = function(e) NULL))
    if (!is.null(m)) {
      vc <- as.data.frame(lme4::VarCorr(m))
      out$lmer <- vc$vcov[match(c("user", "item", "Residual"), vc$grp)]
    }
  }
  if (wants_boot) {
    fr <- fit_or_null(form, d, method = "fr")
    boot <- timed("bootstrap", tryCatch(quiet(fr_bootstrap(fr, nsim = boot_nsim, seed = i, threads = 1)),
                                        error = function(e) NULL))
    # The replicates are standard deviations (lme4's names for confint); the table compares
    # variances.
    out$boot_var_se <- if (is.null(boot)) rep(NA_real_, 3) else unname(apply(as.matrix(boot[, 1:3])^2, 2, stats::sd))
    out$boot_nsim <- boot_nsim
  }
  out$seconds <- seconds
  saveRDS(out, file)
  out
}

# Every method but lmer on one data set, and the Software Alchemy average with its chunk
# standard errors; `timed(name, expr)` records the seconds of each.
fits_of <- function(d, n, chunks, timed) {
  # FR applied to the least-squares residuals (eq. 19 with the intercept among the
  # regressors, as the paper's eq. 4 folds mu into x): its mean part is zero, so the
  # equations lose the mu^2 nu2 term. Invariant to a shift of y.
  res <- d
  res$y <- stats::lm.fit(cbind(1, d$x), d$y)$residuals
  fr <- timed("fr", fit_or_null(form, d, method = "fr"))
  out <- list(
    fr = theta_of(fr),
    # Skipped at 10^6 rows to keep the run bounded (equal to fr to 4 digits at 10^5).
    fr_shared = if (n < 1e6) theta_of(timed("fr_shared", fit_or_null(form, d, method = "fr", fr_shared = TRUE))),
    fr_residuals = theta_of(timed("fr_residuals", fit_or_null(y ~ 1 + (1 | user) + (1 | item), res,
                                                              method = "fr"))),
    moments = theta_of(timed("moments", fit_or_null(form, d))),
    efficient = theta_of(timed("efficient", fit_or_null(form, d, method = "efficient")))
  )
  avg <- timed("alchemy", fit_or_null(form, d, method = "fr", chunks = chunks, chunk_by = ".order",
                                      combine = "average"))
  out$alchemy <- theta_of(avg)
  out$alchemy_se <- if (is.null(avg)) rep(NA_real_, 3) else unname(sqrt(diag(avg$alchemy$vcov))[1:3])
  out
}

fmt_n <- function(n) format(n, big.mark = ",", scientific = FALSE)

summarise <- function(rows, n, exponent) {
  lines <- character()
  for (m in methods) {
    est <- do.call(rbind, lapply(rows, `[[`, m))
    if (is.null(est)) next
    ok <- stats::complete.cases(est)
    est <- est[ok, , drop = FALSE]
    bias <- colMeans(est) - truth
    rmse <- sqrt(colMeans(sweep(est, 2, truth)^2))
    mcse <- apply(est, 2, stats::sd) / sqrt(nrow(est))
    lines <- c(lines, sprintf("| %s | %s | %s | %s | %s |", exponent, fmt_n(n), m,
                              paste0(nrow(est), if (sum(!ok)) sprintf(" (%d failed)", sum(!ok)) else ""),
                              paste(sprintf("%+.4f (%.4f) / %.4f", bias, mcse, rmse), collapse = " | ")))
  }
  lines
}

# Mean chunk standard error, mean pigeonhole-bootstrap standard error (of the whole-data
# fit, on the data sets that have one) and Monte Carlo sd of the averaged estimate.
alchemy_lines <- function(rows, n, chunks, exponent) {
  est <- do.call(rbind, lapply(rows, `[[`, "alchemy"))
  se <- do.call(rbind, lapply(rows, `[[`, "alchemy_se"))
  boot <- do.call(rbind, lapply(rows, `[[`, "boot_var_se"))
  fr <- do.call(rbind, lapply(rows, `[[`, "fr"))
  mc <- apply(est, 2, stats::sd, na.rm = TRUE)
  mc_fr <- apply(fr, 2, stats::sd, na.rm = TRUE)
  boot_mean <- if (is.null(boot)) rep(NA_real_, 3) else colMeans(boot, na.rm = TRUE)
  sprintf("| %s | %s | %d | %s | %d |", exponent, fmt_n(n), chunks,
          paste(sprintf("%.4f / %.4f / %.4f / %.4f", colMeans(se, na.rm = TRUE), boot_mean, mc, mc_fr),
                collapse = " | "),
          if (is.null(boot)) 0L else nrow(boot))
}

sizes <- c(1e4, 1e5, 1e6)
chunks <- c(5L, 10L, 10L)
started <- Sys.time()
table <- list()
alchemy <- list()
busy <- 0  # seconds the data sets took (simulation and every fit), cells from the cache included
timing <- list()
# Exponent 1: Zipf counts, a few users and items hold a large share of the ratings at
# every size; 0.3: lighter tails.
for (k in seq_along(sizes)) for (exponent in c(0.3, 1)) {
  t0 <- Sys.time()
  n_sets <- reps[[as.character(exponent)]][[k]]
  lmer_n <- c(n_sets, lmer_at_1e5, lmer_at_1e6)[[k]]
  boot_n <- c(boot_sets, boot_sets, 0L)[[k]]
  rows <- parallel::mclapply(seq_len(n_sets), one_data_set, n = sizes[[k]], chunks = chunks[[k]],
                             exponent = exponent, lmer_n = lmer_n, boot_n = boot_n, mc.cores = cores,
                             mc.preschedule = FALSE)
  failed <- vapply(rows, inherits, logical(1), "try-error")
  if (any(failed)) stop(sprintf("%d data sets failed: %s", sum(failed), rows[failed][[1]]))
  busy <- busy + sum(unlist(lapply(rows, `[[`, "seconds")), na.rm = TRUE)
  table[[sprintf("%g-%d", exponent, k)]] <- summarise(rows, sizes[[k]], exponent)
  alchemy[[sprintf("%g-%d", exponent, k)]] <- alchemy_lines(rows, sizes[[k]], chunks[[k]], exponent)
  secs <- do.call(rbind, lapply(rows, function(r) r$seconds[c("simulate", "fr", "efficient", "moments", "lmer",
                                                             "alchemy", "bootstrap")]))
  med <- apply(secs, 2, stats::median, na.rm = TRUE)
  timing[[sprintf("%g-%d", exponent, k)]] <- c(sprintf("| %s | %s | %s |", exponent, fmt_n(sizes[[k]]),
                              paste(ifelse(is.na(med), "-", sprintf("%.2f", med)), collapse = " | ")))
  message(sprintf("%s exponent %g, n = %g: %d data sets in %.0f s", format(Sys.time(), "%H:%M:%S"),
                  exponent, sizes[[k]], n_sets, as.numeric(difftime(Sys.time(), t0, units = "secs"))))
}
elapsed <- as.numeric(difftime(Sys.time(), started, units = "secs"))
# The tables by exponent, then size.
by_exponent <- function(cells) unlist(cells[order(sub("-.*", "", names(cells)), names(cells))], use.names = FALSE)
table <- by_exponent(table)
alchemy <- by_exponent(alchemy)
timing <- by_exponent(timing)

lines <- c(
  "## Full Randomness for crossed data: model (7) in simulation",
  "",
  sprintf(paste(
    "`Rscript bench/full-randomness-crossed.R %s %s %d %d %d %d %d`: `simulate_crossed(n, user_exponent = s,",
    "item_exponent = s)` (every rating's user and item drawn with probability proportional to",
    "rank^-s, s = 0.3 and 1 (Zipf); n/160 users and n/380 items; true variances user 0.25, item 0.16, residual 1,",
    "intercept 3.5), %s data sets at 10^4, 10^5 and 10^6 rows for s = 0.3 and %s for s = 1, one thread per",
    "fit, %d data sets at a time on a 2-core machine shared with other jobs (load average %s at the end);",
    "the data sets took %.0f s in all, summed over data sets (%.0f s of wall time in the last run; data sets read from its cache take none).",
    "Each cell: bias (its Monte Carlo standard error) / RMSE. lmer (REML) runs on all data sets at 10^4,",
    "the first %d at 10^5 and the first %d at 10^6."
  ), paste(reps[["0.3"]], collapse = ","), paste(reps[["1"]], collapse = ","), lmer_at_1e5, boot_sets,
  boot_nsim, cores, lmer_at_1e6, paste(reps[["0.3"]], collapse = "/"), paste(reps[["1"]], collapse = "/"), cores,
  paste(strsplit(readLines("/proc/loadavg"), " ")[[1]][1:3], collapse = ", "), busy, elapsed, lmer_at_1e5,
  lmer_at_1e6),
  "",
  "| s | rows | method | data sets | user | item | Residual |",
  "|---:|---:|---|---:|---|---|---|",
  table,
  "",
  "`fr`: `method = \"fr\"`, the paper's equations with the mean's part `mu^2 nu2` subtracted;",
  "`fr_shared`: with `fr_shared = TRUE` (eq. 27); `fr_residuals`: `method = \"fr\"` fitted to the",
  "least-squares residuals of `y ~ x` (the intercept removed with the regressors, eq. 19), which",
  "drops the `mu^2 nu2` term: this is `fr_centred = TRUE` (equal to 1e-10 in",
  "tests/testthat/test-full-randomness-crossed.R); `efficient`: `method = \"efficient\"` (one MINQUE step from the",
  "moment estimates); `alchemy`: `method = \"fr\"`, `chunks` (5 at 10^4, 10 above),",
  "`chunk_by = \".order\"`, `combine = \"average\"`.",
  "",
  sprintf(paste(
    "Software Alchemy over submission-order chunks: mean chunk standard error / mean pigeonhole",
    "bootstrap standard error of the whole-data `fr` fit (`fr_bootstrap(nsim = %d)`, on the first",
    "data sets at 10^4 and 10^5, count in the last column; not run at 10^6) / Monte Carlo sd of the",
    "averaged estimate / Monte Carlo sd of the whole-data `fr` estimate."
  ), boot_nsim),
  "",
  "| s | rows | chunks | user | item | Residual | bootstrapped |",
  "|---:|---:|---:|---|---|---|---:|",
  alchemy,
  "",
  "Why the chunk standard errors are too small: by eq. 13, Var(average) = E[Var(average | a, b)] +",
  "Var(E[average | a, b]). Eq. 29 makes the ratings i.i.d. only given the realised user and item",
  "effects a, b, which every chunk shares; the spread of the chunk estimates measures the first",
  "term only. The second, the variation of the realised effects themselves, does not shrink as",
  "chunks are added and dominates for the user and item variances. The pigeonhole bootstrap",
  "resamples users and items, so its replicates vary the realised effects too.",
  "",
  sprintf("Median seconds per data set (one thread, %d data sets at a time on a shared 2-core machine):", cores),
  "",
  "| s | rows | simulate | fr | efficient | moments | lmer | alchemy | bootstrap |",
  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  timing
)
write_results_section("full-randomness-crossed", lines)
cat(lines, sep = "\n")
