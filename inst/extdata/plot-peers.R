# Draws the measurements of bench/peers.R (inst/extdata/bench-peers.csv): the time of one
# fit, or the peak memory of the process, against the rows of the simulated crossed data,
# on log-log axes, one line per tool. A fit that did not finish within the limit is drawn
# as an open triangle on the limit's line. Used by bench/figures.R (the README's figures)
# and by the vignettes; base graphics only.
#   source(system.file("extdata", "plot-peers.R", package = "fullrandom"))
#   plot_peers(read.csv(system.file("extdata", "bench-peers.csv", package = "fullrandom")), "time")
plot_peers <- function(d, what = c("time", "memory"), limit = max(d$limit, na.rm = TRUE)) {
  what <- match.arg(what)
  d <- d[d$data == "crossed", ]
  tools <- c("fr_fit", "lmer", "glmmTMB", "gpboost", "mixedlm")
  tools <- tools[tools %in% d$tool]
  col <- c(fr_fit = "#D55E00", lmer = "#0072B2", glmmTMB = "#009E73", gpboost = "#CC79A7",
           mixedlm = "#56B4E9")[tools]
  pch <- c(fr_fit = 19, lmer = 15, glmmTMB = 17, gpboost = 18, mixedlm = 4)[tools]
  y <- if (what == "time") d$time else d$peak_mb / 1024
  ok <- d$status == "ok"
  late <- d$status == "timeout"
  if (what == "time") y[late] <- limit
  ylim <- range(y[ok | late], na.rm = TRUE) * c(0.7, 1.6)
  y_at <- grDevices::axisTicks(log10(ylim), log = TRUE)
  graphics::plot(range(d$rows), ylim, type = "n", log = "xy", xaxt = "n", yaxt = "n",
                 xlab = "rows (simulated crossed ratings)",
                 ylab = if (what == "time") "seconds for one fit" else "peak memory of the process (GB)")
  graphics::abline(v = 10^(3:8), h = y_at, col = "grey92")
  x_at <- 10^(floor(log10(min(d$rows))):ceiling(log10(max(d$rows))))
  graphics::axis(1, at = x_at, labels = parse(text = sprintf("10^%d", log10(x_at))))
  graphics::axis(2, at = y_at, labels = format(y_at, scientific = FALSE, drop0trailing = TRUE, trim = TRUE), las = 1)
  if (what == "time" && any(late)) {
    graphics::abline(h = limit, lty = 2, col = "grey40")
    graphics::text(max(d$rows), limit, sprintf("%g-minute limit", limit / 60), adj = c(1, -0.4),
                   cex = 0.8, col = "grey30")
  }
  for (tool in tools) {
    k <- d$tool == tool & ok
    graphics::lines(d$rows[k], y[k], col = col[[tool]], lwd = 2)
    graphics::points(d$rows[k], y[k], col = col[[tool]], pch = pch[[tool]])
    k_late <- d$tool == tool & late
    # Side by side when several tools miss the limit at one size.
    nudge <- 1.12^(match(tool, tools) - (length(tools) + 1) / 2)
    graphics::points(d$rows[k_late] * nudge, y[k_late], col = col[[tool]], pch = 2, cex = 1.4, lwd = 1.5)
  }
  if (!is.null(d$run_date)) {
    graphics::mtext(sprintf("measured by bench/peers.R on %s (load average at the end: %s)",
                            d$run_date[[1]], d$run_load[[1]]),
                    side = 3, line = 0.2, cex = 0.7, col = "grey30")
  }
  graphics::legend("topleft", legend = tools, col = col, pch = pch, lwd = 2, bg = "white",
                   cex = 0.85, inset = 0.01)
  invisible(d)
}
