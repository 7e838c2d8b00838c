# fr_fit against its peers, in one run: lme4::lmer and glmmTMB (R, REML) and two tools
# from PyPI, gpboost (GPModel, maximum likelihood) and mixedlm (lmer in Python with a Rust
# core, REML), on InstEval (y ~ service + (1 | s) + (1 | d) + (1 | dept)) and on the
# simulated crossed data of bench/scale.R (simulate_crossed(), y ~ x + (1 | user) +
# (1 | item), 10^4 rows to the shape of MovieLens ml-32m). Every fit runs in a fresh
# process (bench/scale-child.R for the R tools, bench/peers.py for the Python ones, in the
# virtual environment tools/bench-python.sh makes), which reports the fit's time, the
# process's peak resident memory and the estimates. Each peer has a 5-minute limit
# (FULLRANDOM_BENCH_PEER_LIMIT seconds): past the first size where it does not finish in
# time (or fails) it is not run at the larger sizes; nor at a size where its peak memory
# at the previous size, scaled by the rows, would pass FULLRANDOM_BENCH_PEER_MEM_GB (16;
# the machine is shared). FULLRANDOM_BENCH_PEERS_MAX_ROWS caps the sizes, for a quicker run.
#   Rscript bench/peers.R                    measure everything
#   Rscript bench/peers.R report             rewrite the section from the CSV alone
#   Rscript bench/peers.R rerun TOOL ROWS    measure one cell again (e.g. after a failure that
#                                            was not the tool's), then rewrite the section
# Writes inst/extdata/bench-peers.csv (every measurement; bench/figures.R and the
# vignette "insteval" draw it) and its section of
# bench/results.md (and README.md).
suppressPackageStartupMessages(library(fullrandom))
source("bench/results.R")
python <- Sys.getenv("FULLRANDOM_BENCH_PYTHON", ".build/venv/bin/python")
if (!file.exists(python)) stop("bench/peers.R needs the Python peers: run `bash tools/bench-python.sh` (make bench does)")
if (!requireNamespace("glmmTMB", quietly = TRUE)) {
  stop("bench/peers.R needs glmmTMB: run `bash tools/setup.sh bench` (make bench does)")
}
limit <- as.numeric(Sys.getenv("FULLRANDOM_BENCH_PEER_LIMIT", "300"))
mem_cap_mb <- as.numeric(Sys.getenv("FULLRANDOM_BENCH_PEER_MEM_GB", "16")) * 1024
max_rows <- as.numeric(Sys.getenv("FULLRANDOM_BENCH_PEERS_MAX_ROWS", "Inf"))
sizes <- c(1e4, 1e5, 1e6, 1e7, 32000204)
sizes <- sizes[sizes <= max_rows]
tools <- c("fr_fit", "lmer", "glmmTMB", "gpboost", "mixedlm")
crossed <- "y ~ x + (1 | user) + (1 | item)"
insteval <- "y ~ service + (1 | s) + (1 | d) + (1 | dept)"
started <- Sys.time()
py_versions <- stats::setNames(system2(python, c("-c", shQuote(paste(
  "from importlib.metadata import version as v;", "print(v('gpboost')); print(v('mixedlm'))"))), stdout = TRUE),
  c("gpboost", "mixedlm"))

# Runs one fit in a fresh process under `timeout`; a list with status "ok" (and the
# child's key=value pairs), "timeout" or "failed" (and the child's last message).
run_child <- function(tool, rds, csv, formula, kind, seconds) {
  cmd <- if (tool %in% c("gpboost", "mixedlm")) {
    c(python, "bench/peers.py", tool, csv, kind)
  } else {
    c(file.path(R.home("bin"), "Rscript"), "bench/scale-child.R", rds, "2", tool, formula)
  }
  if (is.finite(seconds)) cmd <- c("timeout", "-k", "10", seconds, cmd)
  errors <- tempfile()
  on.exit(unlink(errors))
  out <- suppressWarnings(system2(cmd[1], shQuote(cmd[-1]), stdout = TRUE, stderr = errors))
  status <- attr(out, "status")
  if (!is.null(status) && status %in% c(124L, 137L)) return(list(status = "timeout"))
  line <- grep("=", out, value = TRUE)
  if (!is.null(status) || !length(line)) {
    message <- utils::tail(readLines(errors), 2)
    return(list(status = "failed", message = paste(message, collapse = " ")))
  }
  pairs <- strsplit(strsplit(trimws(line[length(line)]), " ")[[1]], "=", fixed = TRUE)
  values <- stats::setNames(lapply(pairs, `[`, 2), vapply(pairs, `[`, "", 1))
  c(list(status = "ok"), values)
}

rows <- list()
record <- function(data, n, tool, got) {
  num <- function(key) if (is.null(got[[key]])) NA_real_ else as.numeric(got[[key]])
  est <- got[grepl("^(vc|fe)_", names(got))]
  rows[[length(rows) + 1L]] <<- data.frame(
    data = data, rows = n, tool = tool, status = got$status,
    version = if (tool %in% c("gpboost", "mixedlm")) py_versions[[tool]] else
      as.character(utils::packageVersion(c(fr_fit = "fullrandom", lmer = "lme4", glmmTMB = "glmmTMB")[[tool]])),
    time = num("time"), cpu = num("cpu"), limit = if (tool == "fr_fit") NA else limit, peak_mb = num("peak_mb"),
    data_mb = num("data_mb"), estimates = paste(names(est), unlist(est), sep = "=", collapse = ";"),
    message = got$message %||% "", stringsAsFactors = FALSE
  )
  cat(sprintf("%s %s %s: %s %s\n", data, format(n, scientific = FALSE), tool, got$status,
              if (got$status == "ok") sprintf("%.3g s, %.0f MB", num("time"), num("peak_mb")) else got$message %||% ""))
}
load_average <- function() paste(utils::head(strsplit(readLines("/proc/loadavg"), " ")[[1]], 3), collapse = ", ")

# One data set saved for both kinds of child: InstEval, or the crossed data of
# bench/scale.R with n rows. A list of the two files, the model's kind and formula.
data("InstEval", package = "lme4")
ie <- InstEval[c("y", "service", "s", "d", "dept")]
save_data <- function(n) {
  d <- if (identical(n, "InstEval")) {
    ie
  } else {
    ml <- n == 32000204
    simulate_crossed(n, n_users = if (ml) 200948 else max(2, round(n / 160)),
                     n_items = if (ml) 84432 else max(2, round(n / 380)), seed = 20261121)
  }
  files <- list(rds = tempfile(fileext = ".rds"), csv = tempfile(fileext = ".csv"))
  saveRDS(d, files$rds, compress = FALSE)
  data.table::fwrite(d, files$csv)
  c(files, if (identical(n, "InstEval")) list(kind = "insteval", formula = insteval) else
    list(kind = "crossed", formula = crossed))
}
run_on <- function(files, tool) {
  run_child(tool, files$rds, files$csv, files$formula, files$kind, if (tool == "fr_fit") Inf else limit)
}

mode <- commandArgs(TRUE)
if (length(mode) == 0L) {
  # InstEval: every tool, fr_fit without a limit.
  files <- save_data("InstEval")
  for (tool in tools) record("InstEval", nrow(ie), tool, run_on(files, tool))
  unlink(c(files$rds, files$csv))

  # The simulated crossed sizes, as bench/scale.R makes them.
  stopped <- stats::setNames(rep(FALSE, length(tools)), tools)
  last_peak <- stats::setNames(rep(NA_real_, length(tools)), tools)
  previous_n <- NA
  for (n in sizes) {
    files <- save_data(n)
    for (tool in tools) {
      expected_mb <- last_peak[[tool]] * n / previous_n
      got <- if (stopped[[tool]]) {
        list(status = "not run", message = "did not finish at a smaller size")
      } else if (tool != "fr_fit" && isTRUE(expected_mb > mem_cap_mb)) {
        list(status = "not run", message = sprintf("memory: %.1f GB at the previous size, %.0f GB expected, over the %.0f GB cap",
                                                   last_peak[[tool]] / 1024, expected_mb / 1024, mem_cap_mb / 1024))
      } else {
        run_on(files, tool)
      }
      stopped[[tool]] <- got$status != "ok"
      last_peak[[tool]] <- if (got$status == "ok") as.numeric(got$peak_mb) else NA
      record("crossed", n, tool, got)
    }
    previous_n <- n
    unlink(c(files$rds, files$csv))
  }
  res <- do.call(rbind, rows)
  res$run_date <- format(Sys.Date())
  res$run_minutes <- as.numeric(difftime(Sys.time(), started, units = "mins"))
  res$run_load <- load_average()
  res$rerun <- ""
} else if (mode[[1]] == "report") {
  res <- utils::read.csv("inst/extdata/bench-peers.csv", stringsAsFactors = FALSE)
} else if (mode[[1]] == "rerun" && length(mode) == 3L && mode[[2]] %in% tools) {
  res <- utils::read.csv("inst/extdata/bench-peers.csv", stringsAsFactors = FALSE)
  tool <- mode[[2]]
  n <- if (mode[[3]] == "InstEval") "InstEval" else as.numeric(mode[[3]])
  at <- which(res$tool == tool & (if (identical(n, "InstEval")) res$data == "InstEval" else res$data == "crossed" & res$rows == n))
  if (length(at) != 1L) stop(sprintf("no measurement of %s at %s in inst/extdata/bench-peers.csv", tool, mode[[3]]))
  files <- save_data(n)
  record(res$data[[at]], res$rows[[at]], tool, run_on(files, tool))
  unlink(c(files$rds, files$csv))
  new <- rows[[1]]
  res[at, names(new)] <- new
  res$rerun[[at]] <- sprintf("measured again on %s (load average %s)", format(Sys.Date()), load_average())
} else {
  stop("usage: Rscript bench/peers.R [report | rerun TOOL ROWS]; TOOL one of ", paste(tools, collapse = ", "))
}
utils::write.csv(res, "inst/extdata/bench-peers.csv", row.names = FALSE)

# The results section: time (ratio to fr_fit's in the same run), peak memory, estimates.
big <- function(x) formatC(x, format = "d", big.mark = ",")
estimate <- function(s, key) {
  kv <- strsplit(strsplit(s, ";", fixed = TRUE)[[1]], "=", fixed = TRUE)
  v <- as.numeric(vapply(kv, `[`, "", 2))[match(key, vapply(kv, `[`, "", 1))]
  if (length(v) == 0 || is.na(v)) "" else sprintf("%.4g", v)
}
cell_time <- function(r) {
  switch(r$status, ok = sprintf("%.3g", r$time), timeout = sprintf("> %g min", limit / 60),
         failed = "failed", "not run")
}
table_for <- function(data, keys, labels) {
  part <- res[res$data == data, ]
  fr <- part[part$tool == "fr_fit", c("rows", "time", "cpu")]
  c(sprintf("| rows | tool | time (s) | time / fr_fit | CPU (s) | CPU / fr_fit | peak (MB) | %s |", paste(labels, collapse = " | ")),
    paste0("|", strrep("---|", 7 + length(keys))),
    vapply(seq_len(nrow(part)), function(i) {
      r <- part[i, ]
      ok <- r$status == "ok"
      ratio <- r$time / fr$time[match(r$rows, fr$rows)]
      cpu_ratio <- r$cpu / fr$cpu[match(r$rows, fr$rows)]
      sprintf("| %s | %s %s | %s | %s | %s | %s | %s | %s |", big(r$rows), r$tool, r$version, cell_time(r),
              if (ok && r$tool != "fr_fit") sprintf("**%.0fx**", ratio) else if (ok) "1" else "",
              if (ok) sprintf("%.3g", r$cpu) else "",
              if (ok && r$tool != "fr_fit") sprintf("%.0fx", cpu_ratio) else if (ok) "1" else "",
              if (ok) sprintf("%.0f", r$peak_mb) else "",
              paste(vapply(keys, function(k) if (ok) estimate(r$estimates, k) else "", ""), collapse = " | "))
    }, ""))
}
res$message[is.na(res$message)] <- ""
res$rerun[is.na(res$rerun)] <- ""
notes <- res[res$status %in% c("failed", "not run") & nzchar(res$message), ]
reruns <- res[nzchar(res$rerun), ]
lines <- c(
  "## Peers: lmer, glmmTMB, gpboost and mixedlm",
  "",
  sprintf(paste0(
    "From `bench/peers.R` (`make bench`), %s, %.0f minutes on %d cores (load average at the end %s): ",
    "each fit in a fresh process (fr_fit with 2 threads; gpboost with its default 2 OpenMP threads), ",
    "the time of the fit alone (elapsed; the best of 5 timed batches below 1 s, as `bench/scale.R`) and its ",
    "CPU time (the process's user + system seconds over all its threads: less sensitive than the elapsed time to other ",
    "work on a shared machine), ",
    "the process's peak resident memory (VmHWM: the interpreter and the data included), and the estimates. ",
    "lmer, glmmTMB and mixedlm fit by REML; gpboost (`GPModel`, an intercept, `x` or the `service` dummy as ",
    "covariates) by maximum likelihood, which it only offers. mixedlm and gpboost come from PyPI into ",
    "`.build/venv` (`tools/bench-python.sh`) and read the data from a CSV written by R. Each peer has a ",
    "%g-minute limit; past the first size where it does not finish (or fails) it is not run at larger sizes, ",
    "nor where its peak memory at the previous size scaled by the rows would pass %.0f GB."),
    res$run_date[[1]], res$run_minutes[[1]], parallel::detectCores(), res$run_load[[1]],
    limit / 60, mem_cap_mb / 1024),
  "",
  sprintf("**InstEval**, `%s`, %s rows:", insteval, big(nrow(ie))),
  "",
  table_for("InstEval", c("vc_s", "vc_d", "vc_dept", "vc_Residual", "fe_service1"),
            c("s2 s", "s2 d", "s2 dept", "s2 residual", "service1")),
  "",
  sprintf("**Simulated crossed ratings** (as `bench/scale.R`), `%s`; truth s2 user 0.25, item 0.16, residual 1, slope 0.2:", crossed),
  "",
  table_for("crossed", c("vc_user", "vc_item", "vc_Residual", "fe_x"),
            c("s2 user", "s2 item", "s2 residual", "x")),
  "",
  if (nrow(notes)) c(sprintf("- %s, %s rows, %s: %s %s.", notes$data, big(notes$rows), notes$tool,
                             notes$status, notes$message), ""),
  if (nrow(reruns)) c(sprintf("- %s, %s rows, %s: %s.", reruns$data, big(reruns$rows), reruns$tool, reruns$rerun), ""),
  "Every measurement is in `inst/extdata/bench-peers.csv`; `Rscript bench/figures.R` draws time and memory against rows from it."
)
write_results_section("peers", lines)
cat(lines, sep = "\n")
