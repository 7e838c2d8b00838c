# Scale of the binomial GLMM: ml-32m-shaped crossed Bernoulli data, y ~ x + (1 | user) +
# (1 | item), family = binomial, from 10^5 rows to 32,000,204 (200,948 users, 84,432
# items). The design is bench/scale.R's (simulate_crossed(): power-law users and items,
# about 160 rows a user and 380 an item, x ~ N(0, 1)) with a Bernoulli response:
# logit P(y = 1) = -1 + 0.5 x + u_user + v_item, sd(u) = 1, sd(v) = 0.5. Each size in a
# fresh R process (bench/glmm-scale-child.R): elapsed and CPU seconds of the full fit
# (variances, fixed effects, conditional modes and covariances), the peak resident memory
# (VmHWM) beside the data frame, and glmer(nAGQ = 0) at 10^5 rows in the same run.
#   Rscript bench/glmm-scale.R            (FULLRANDOM_GLMM_SCALE_MAX caps the sizes)
suppressPackageStartupMessages(library(fullrandom))
source("bench/results.R")
max_rows <- as.numeric(Sys.getenv("FULLRANDOM_GLMM_SCALE_MAX", "Inf"))
sizes <- c(1e5, 1e6, 1e7, 32000204)
sizes <- sizes[sizes <= max_rows]
threads <- 2L
child <- function(file, tool) {
  line <- system2(file.path(R.home("bin"), "Rscript"),
                  c("bench/glmm-scale-child.R", file, threads, tool), stdout = TRUE)
  pairs <- strsplit(strsplit(trimws(line[length(line)]), " ")[[1]], "=")
  stats::setNames(as.numeric(vapply(pairs, `[`, "", 2)), vapply(pairs, `[`, "", 1))
}
load_average <- function() strsplit(readLines("/proc/loadavg"), " ")[[1]][1:3]
write_section <- function(rows) {
  all_names <- unique(unlist(lapply(rows, names)))
  res <- as.data.frame(do.call(rbind, lapply(rows, function(r) r[all_names])))
  names(res) <- all_names
  big <- function(x) formatC(x, format = "d", big.mark = ",")
  per_row <- res$time / res$n * 1e9
  cpu_per_row <- res$cpu / res$n * 1e9
  at5 <- which(res$n == 1e5)
  lines <- c(
    "## Scale of the binomial GLMM: ml-32m-shaped crossed Bernoulli data",
    "",
    sprintf(paste0(
      "From `bench/glmm-scale.R`: `simulate_crossed()`'s design (power-law users and items, ",
      "bench/scale.R's) with a Bernoulli response, logit P(y = 1) = -1 + 0.5 x + u + v, ",
      "sd(u) = 1, sd(v) = 0.5; `fr_fit(y ~ x + (1 | user) + (1 | item), family = binomial)`, ",
      "the full fit (variances, fixed effects, conditional modes, covariances), each size in a ",
      "fresh R process on %d cores, %d threads. *time*: elapsed seconds (best of 3 up to 10^6 rows, ",
      "one fit above); *cpu*: CPU seconds of the process over all threads; *load*: the 1-minute ",
      "load average before the fit (the machine is shared: with a load above 2 the elapsed times ",
      "are inflated, the CPU times less so); *peak*: VmHWM of the process, which holds the data frame (*data*)."),
      parallel::detectCores(), threads),
    "",
    "| rows | users | items | load | time (s) | cpu (s) | ns per row (time) | ns per row (cpu) | data (MB) | peak (MB) | peak / data | slope | sd user | sd item |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    sprintf("| %s | %s | %s | %.1f | %.3g | %.3g | %.0f | %.0f | %.0f | %.0f | %.2f | %.3f | %.3f | %.3f |",
            big(res$n), big(res$users), big(res$items), res$load, res$time, res$cpu, per_row,
            cpu_per_row, res$data_mb, res$peak_mb, res$peak_mb / res$data_mb, res$slope,
            res$sd_user, res$sd_item),
    "",
    if (length(at5)) sprintf(paste(
      "glmer(nAGQ = 0) at 10^5 rows in the same run: %.3g s (slope %.3f, sd user %.3f, sd item",
      "%.3f); fr_fit %.3g s: %.0fx faster (CPU seconds: glmer %.3g, fr_fit %.3g, %.0fx)."), res$glmer[at5],
      res$glmer_slope[at5], res$glmer_sd_user[at5], res$glmer_sd_item[at5], res$time[at5],
      res$glmer[at5] / res$time[at5], res$glmer_cpu[at5], res$cpu[at5], res$glmer_cpu[at5] / res$cpu[at5]),
    if (nrow(res) > 1) sprintf("Time per row from %s to %s rows grows by %.2fx (elapsed), %.2fx (CPU).",
                               big(min(res$n)), big(max(res$n)), per_row[which.max(res$n)] / per_row[which.min(res$n)],
                               cpu_per_row[which.max(res$n)] / cpu_per_row[which.min(res$n)]),
    "",
    "Stages of the fit at the largest size (seconds, from the core's timings):",
    "",
    paste0("- ", sub("^stage_", "", grep("^stage_", names(res), value = TRUE)), ": ",
           sprintf("%.2f", unlist(res[nrow(res), grep("^stage_", names(res))])))
  )
  write_results_section("glmm-scale", lines, readme = "")
  cat(lines, sep = "\n")
}
rows <- list()
for (n in sizes) {
  ml <- n == 32000204
  d <- simulate_crossed(n, n_users = if (ml) 200948 else max(2, round(n / 160)),
                        n_items = if (ml) 84432 else max(2, round(n / 380)), seed = 20261130)
  set.seed(20261130)
  u <- stats::rnorm(nlevels(d$user), 0, 1)
  v <- stats::rnorm(nlevels(d$item), 0, 0.5)
  d$y <- as.double(stats::runif(n) < stats::plogis(-1 + 0.5 * d$x + u[d$user] + v[d$item]))
  rm(u, v)
  file <- tempfile(fileext = ".rds")
  saveRDS(d, file, compress = FALSE)
  rm(d)
  gc()
  before <- load_average()
  r <- child(file, "fr_fit")
  r[["load"]] <- as.numeric(before[[1]])
  if (n == 1e5) {
    g <- child(file, "glmer")
    r[["glmer"]] <- g[["time"]]
    r[["glmer_cpu"]] <- g[["cpu"]]
    r[["glmer_slope"]] <- g[["slope"]]
    r[["glmer_sd_user"]] <- g[["sd_user"]]
    r[["glmer_sd_item"]] <- g[["sd_item"]]
  }
  unlink(file)
  rows[[length(rows) + 1]] <- r
  print(r)
  # Written after every size, so that a long run leaves the sizes it finished.
  write_section(rows)
}
