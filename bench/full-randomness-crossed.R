# Matloff's Full Randomness estimator for crossed data (model 7): y = mu + b x + a_user +
# b_item + e from simulate_crossed() (users and items drawn for every rating from
# power-law distributions, the paper's eq. 29), at 10^4, 10^5 and 10^6 rows. Bias and
# RMSE of every variance component for method = "fr", "fr" with fr_shared = TRUE (eq.
# 27), "fr" fitted to the centred response, method = "moments" and lmer (where it runs
# in the time), then Software Alchemy over chunks in submission order (chunk_by =
# ".order"): the averaged estimates and their chunk standard errors against the Monte
# Carlo spread. Writes its section of bench/results.md (and README.md).
# Usage: Rscript bench/full-randomness-crossed.R [replications at 1e4 and 1e5] [at 1e6]
suppressPackageStartupMessages(library(fullrandom))
source("bench/results.R")

args <- commandArgs(trailingOnly = TRUE)
# 100 and 10 by default: 8 minutes on a loaded 2-core machine (200 and 20 double it).
reps_small <- if (length(args) >= 1L) as.integer(args[[1]]) else 100L
reps_large <- if (length(args) >= 2L) as.integer(args[[2]]) else 10L
lmer_reps <- c(`1e4` = reps_small, `1e5` = 20L, `1e6` = 0L)
truth <- c(user = 0.5^2, item = 0.4^2, Residual = 1)
form <- y ~ x + (1 | user) + (1 | item)
has_lme4 <- requireNamespace("lme4", quietly = TRUE)

fit_theta <- function(d, ...) {
  fit <- tryCatch(suppressWarnings(suppressMessages(fr_fit(form, d, threads = 1, ...))),
                  error = function(e) NULL)
  if (is.null(fit)) rep(NA_real_, 3) else unname(fit$theta)
}

one_size <- function(n, reps, chunks, exponent) {
  lmer_n <- lmer_reps[[sprintf("1e%d", as.integer(round(log10(n))))]]
  rows <- lapply(seq_len(reps), function(i) {
    d <- simulate_crossed(n, user_exponent = exponent, item_exponent = exponent,
                          seed = 1000L * log10(n) + i)
    centred <- d
    centred$y <- d$y - mean(d$y)
    out <- list(
      fr = fit_theta(d, method = "fr"),
      fr_shared = fit_theta(d, method = "fr", fr_shared = TRUE),
      fr_centred = fit_theta(centred, method = "fr"),
      moments = fit_theta(d)
    )
    if (has_lme4 && i <= lmer_n) {
      m <- lme4::lmer(form, d, REML = TRUE)
      vc <- as.data.frame(lme4::VarCorr(m))
      out$lmer <- vc$vcov[match(c("user", "item", "Residual"), vc$grp)]
    }
    avg <- suppressWarnings(suppressMessages(fr_fit(form, d, method = "fr", threads = 1, chunks = chunks,
                                                    chunk_by = ".order", combine = "average")))
    out$alchemy <- unname(avg$theta)
    out$alchemy_se <- unname(sqrt(diag(avg$alchemy$vcov))[1:3])
    out
  })
  rows
}

summarise <- function(rows, n, reps, exponent) {
  methods <- c("fr", "fr_shared", "fr_centred", "moments", "lmer", "alchemy")
  lines <- character()
  for (m in methods) {
    est <- do.call(rbind, lapply(rows, `[[`, m))
    if (is.null(est)) next
    ok <- stats::complete.cases(est)
    est <- est[ok, , drop = FALSE]
    bias <- colMeans(est) - truth
    rmse <- sqrt(colMeans(sweep(est, 2, truth)^2))
    mcse <- apply(est, 2, stats::sd) / sqrt(nrow(est))
    lines <- c(lines, sprintf("| %s | %s | %s | %s | %s |", exponent, format(n, big.mark = ",", scientific = FALSE),
                              m, paste0(nrow(est), if (sum(!ok)) sprintf(" (%d failed)", sum(!ok)) else ""),
                              paste(sprintf("%+.4f (%.4f) / %.4f", bias, mcse, rmse), collapse = " | ")))
  }
  lines
}

alchemy_lines <- function(rows, n, chunks, exponent) {
  est <- do.call(rbind, lapply(rows, `[[`, "alchemy"))
  se <- do.call(rbind, lapply(rows, `[[`, "alchemy_se"))
  sprintf("| %s | %s | %d | %s |", exponent, format(n, big.mark = ",", scientific = FALSE), chunks,
          paste(sprintf("%.4f / %.4f", colMeans(se), apply(est, 2, stats::sd)), collapse = " | "))
}

sizes <- c(1e4, 1e5, 1e6)
reps <- c(reps_small, reps_small, reps_large)
chunks <- c(5L, 10L, 10L)
started <- Sys.time()
table <- character()
alchemy <- character()
# Exponent 1: Zipf counts, a few users and items hold a fixed share of the ratings at
# every size (the counts' variance grows without bound); 0.3: lighter tails.
for (exponent in c(1, 0.3)) for (k in seq_along(sizes)) {
  t0 <- Sys.time()
  rows <- one_size(sizes[[k]], reps[[k]], chunks[[k]], exponent)
  table <- c(table, summarise(rows, sizes[[k]], reps[[k]], exponent))
  alchemy <- c(alchemy, alchemy_lines(rows, sizes[[k]], chunks[[k]], exponent))
  message(sprintf("exponent %g, n = %g: %d data sets in %.0f s", exponent, sizes[[k]], reps[[k]],
                  as.numeric(difftime(Sys.time(), t0, units = "secs"))))
}
elapsed <- as.numeric(difftime(Sys.time(), started, units = "secs"))

lines <- c(
  "## Full Randomness for crossed data: model (7) in simulation",
  "",
  sprintf(paste(
    "`Rscript bench/full-randomness-crossed.R %d %d`: `simulate_crossed(n, user_exponent = s,",
    "item_exponent = s)` (every rating's user and item drawn with probability proportional to",
    "rank^-s, s = 1 (Zipf) and 0.3; %s users and %s items per 10^4 rows; true variances user 0.25, item 0.16, residual 1,",
    "intercept 3.5), %d data sets at 10^4 and 10^5 rows and %d at 10^6 (reduced to keep the run",
    "to minutes), one thread, %.0f s in all. Each cell: bias (its Monte Carlo standard error) /",
    "RMSE. lmer (REML) runs on all data sets at 10^4, the first %d at 10^5 and none at 10^6.",
    "`method = \"efficient\"` (MINQUE) was not in main when this ran: no column."
  ), reps_small, reps_large, "62", "26", reps_small, reps_large, elapsed, lmer_reps[["1e5"]]),
  "",
  "| s | rows | method | data sets | user | item | Residual |",
  "|---:|---:|---|---:|---|---|---|",
  table,
  "",
  "`fr_shared`: `fr_fit(..., method = \"fr\", fr_shared = TRUE)`; `fr_centred`: `method = \"fr\"`",
  "on `y - mean(y)`; `alchemy`: `method = \"fr\"`, `chunks` (5 at 10^4, 10 above), `chunk_by =",
  "\".order\"`, `combine = \"average\"`.",
  "",
  "Software Alchemy over submission-order chunks: mean chunk standard error / Monte Carlo",
  "standard deviation of the averaged estimate.",
  "",
  "| s | rows | chunks | user | item | Residual |",
  "|---:|---:|---:|---|---|---|",
  alchemy
)
write_results_section("full-randomness-crossed", lines)
cat(lines, sep = "\n")
