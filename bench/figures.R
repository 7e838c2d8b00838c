# The README's figures, drawn from measured data only: time and peak memory against rows
# for fr_fit, lmer, glmmTMB, gpboost and mixedlm, from inst/extdata/bench-peers.csv (written
# by bench/peers.R), into man/figures/. Run after bench/peers.R (make bench does).
source("inst/extdata/plot-peers.R")
peers <- utils::read.csv("inst/extdata/bench-peers.csv", stringsAsFactors = FALSE)
dir.create("man/figures", showWarnings = FALSE, recursive = TRUE)
for (what in c("time", "memory")) {
  file <- sprintf("man/figures/peers-%s.png", what)
  grDevices::png(file, width = 7, height = 4.5, units = "in", res = 100)
  graphics::par(mar = c(4, 4.5, 1.5, 1))
  plot_peers(peers, what)
  grDevices::dev.off()
  cat("wrote", file, "\n")
}
