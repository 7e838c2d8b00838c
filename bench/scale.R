# Simulated crossed data with power-law user activity and item popularity
# (simulate_crossed()), y ~ x + (1 | user) + (1 | item), from 10^4 rows to the shape of
# MovieLens ml-32m (32,000,204 ratings, 200,948 users, 84,432 items). For each size,
# in a fresh R process: a floor (one pass of tabulate() over both code vectors plus
# sum(y) and sum(x)), the variance components alone, the full fit (GLS and BLUPs
# included), and the process's peak resident memory. lmer is run with a 10-minute
# limit at every size up to the first it does not finish (optionally only up to
# FULLRANDOM_BENCH_LMER_MAX rows, for a quicker run). Threads 1 against 2 at 10^7. Writes its section of bench/results.md (and README.md).
suppressPackageStartupMessages(library(fullrandom))
source("bench/results.R")
lmer_max <- as.numeric(Sys.getenv("FULLRANDOM_BENCH_LMER_MAX", "Inf"))
sizes <- c(1e4, 1e5, 1e6, 1e7, 32000204)
child <- function(file, threads, lmer = FALSE, limit = NULL) {
  cmd <- c(if (!is.null(limit)) c("-k", "10", limit), file.path(R.home("bin"), "Rscript"),
           "bench/scale-child.R", file, threads, if (lmer) "lmer")
  errors <- tempfile()
  on.exit(unlink(errors))
  line <- suppressWarnings(system2(if (is.null(limit)) cmd[1] else "timeout",
                                   if (is.null(limit)) cmd[-1] else cmd, stdout = TRUE,
                                   stderr = errors))
  status <- attr(line, "status")
  # timeout exits with 124 (137 when it had to kill); any other failure is reported as
  # one, with the child's last message, not as a time.
  if (!is.null(status) && status %in% c(124L, 137L)) return(NULL)
  if (!is.null(status)) {
    message <- utils::tail(readLines(errors), 3)
    return(c(failed = status, message = paste(message, collapse = " ")))
  }
  pairs <- strsplit(strsplit(trimws(line[length(line)]), " ")[[1]], "=")
  stats::setNames(as.numeric(vapply(pairs, `[`, "", 2)), vapply(pairs, `[`, "", 1))
}
rows <- list()
lmer_out_of_time <- FALSE
lmer_failures <- list()
for (n in sizes) {
  ml <- n == 32000204
  d <- simulate_crossed(n, n_users = if (ml) 200948 else max(2, round(n / 160)),
                        n_items = if (ml) 84432 else max(2, round(n / 380)), seed = 20261121)
  file <- tempfile(fileext = ".rds")
  saveRDS(d, file, compress = FALSE)
  rm(d)
  r <- child(file, 2)
  one <- if (n == 1e7) child(file, 1) else c(components = NA, full = NA)
  r[["components1"]] <- one[["components"]]
  r[["threads1"]] <- one[["full"]]
  # Past the first size where lmer needs over 10 minutes it is not run again: it only
  # gets slower (Inf, shown as "> 10 min"). Beyond FULLRANDOM_BENCH_LMER_MAX: NA, "not run".
  r[["lmer"]] <- if (lmer_out_of_time) {
    lmer_last
  } else if (n <= lmer_max) {
    got <- child(file, 2, lmer = TRUE, limit = "600")
    if (is.null(got)) {
      Inf
    } else if (!is.na(got["failed"])) {
      lmer_failures[[format(n, scientific = FALSE)]] <- got[["message"]]
      NaN
    } else {
      got[["lmer"]]
    }
  } else NA
  lmer_out_of_time <- is.infinite(r[["lmer"]]) || is.nan(r[["lmer"]])
  lmer_last <- r[["lmer"]]
  unlink(file)
  rows[[length(rows) + 1]] <- r
  print(r)
}
res <- as.data.frame(do.call(rbind, rows))

big <- function(x) formatC(x, format = "d", big.mark = ",")
fmt_time <- function(t) {
  ifelse(is.nan(t), "failed", ifelse(is.na(t), "not run", ifelse(is.infinite(t), "> 10 min", sprintf("%.3g", t))))
}
fmt_ratio <- function(t) ifelse(is.finite(t), sprintf("%.0fx", t), "")
per_row <- res$full / res$n * 1e9
at7 <- res$n == 1e7
lines <- c(
  "## Scale: simulated crossed ratings",
  "",
  sprintf(paste0(
    "From `bench/scale.R` (`make bench`): `simulate_crossed()` data (power-law users and items), ",
    "`y ~ x + (1 | user) + (1 | item)`, each size in a fresh R process on %d cores, 2 threads. ",
    "Times in seconds: the best of 3 calls (below 1 s, of 5 timed batches of calls). *floor*: one `tabulate()` of each code vector plus ",
    "`sum(y)` and `sum(x)`; *components*: the variance components alone; *full*: `fr_fit()` with GLS ",
    "fixed effects, BLUPs and fitted values; *peak*: the peak resident memory of the process ",
    "(VmHWM), which holds the data frame (*data*)."), parallel::detectCores()),
  "",
  "| rows | users | items | floor | components | full | components / floor | full / floor | ns per row (full) | data (MB) | peak (MB) | peak / data | lmer | lmer / full |",
  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  sprintf("| %s | %s | %s | %.3g | %.3g | %.3g | %.1f | %.1f | %.0f | %.0f | %.0f | %.2f | %s | %s |",
          big(res$n), big(res$users), big(res$items), res$floor, res$components, res$full,
          res$components / res$floor, res$full / res$floor, per_row, res$data_mb, res$peak_mb,
          res$peak_mb / res$data_mb, fmt_time(res$lmer),
          fmt_ratio(res$lmer / res$full)),
  "",
  "lmer is run with a 10-minute limit; once it needs more (or fails), it is not run at the larger sizes.",
  if (length(lmer_failures)) sprintf("lmer failed at %s rows: %s", names(lmer_failures), unlist(lmer_failures)),
  "",
  sprintf(paste("Threads at 10^7 rows: full fit %.3g s with 1 thread, %.3g s with 2 (speed-up %.2fx);",
                "variance components %.3g s with 1, %.3g s with 2 (%.2fx)."),
          res$threads1[at7], res$full[at7], res$threads1[at7] / res$full[at7],
          res$components1[at7], res$components[at7], res$components1[at7] / res$components[at7]),
  sprintf("Time per row from 10^5 to %s rows grows by %.2fx.", big(max(res$n)),
          per_row[which.max(res$n)] / per_row[res$n == 1e5])
)
write_results_section("scale", lines)
cat(lines, sep = "\n")
