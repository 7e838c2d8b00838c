# The mixing distribution (issue 23): NPMLE of a term's effects, empirical Bayes
# posterior means against the BLUPs, and 90% prediction intervals, over effect
# distributions; and the time for 2e5 levels. Writes its section of bench/results.md.
suppressMessages(library(fullrandom))
source("bench/results.R")
started <- Sys.time()
draw_alpha <- function(G, law) {
  a <- switch(law,
    normal = rnorm(G),
    gamma = rgamma(G, 2) / sqrt(2),
    bimodal = ifelse(runif(G) < 0.8, rnorm(G, -0.5, 0.3), rnorm(G, 2, 0.5)),
    t3 = rt(G, 3) / sqrt(3),
    spike = ifelse(runif(G) < 0.6, 0, rnorm(G, 1, 1)))
  a - mean(a)
}
w1 <- function(x, wx, y) {  # Wasserstein-1 between a discrete law and a sample
  pts <- sort(unique(c(x, y)))
  Fx <- stats::approx(x = sort(x), y = cumsum(wx[order(x)]), xout = pts, method = "constant", yleft = 0, rule = 2, ties = max)$y
  Fy <- stats::ecdf(y)(pts)
  sum(abs(Fx - Fy)[-length(pts)] * diff(pts))
}
one_run <- function(law, G, sizes, crossed = FALSE) {
  n <- if (sizes == "poisson") pmax(rpois(G, 4), 1) else rep(4, G)
  alpha <- draw_alpha(G, law)
  g <- rep(seq_len(G), n)
  y <- 1 + alpha[g] + rnorm(length(g))
  dat <- data.frame(y = y, g = factor(g))
  if (crossed) {
    items <- 200
    h <- sample.int(items, length(g), replace = TRUE, prob = 1 / seq_len(items))
    dat$h <- factor(h)
    dat$y <- dat$y + rnorm(items, 0, 0.4)[h]
    fit <- fr_fit(y ~ 1 + (1 | g) + (1 | h), data = dat)
  } else {
    fit <- fr_fit(y ~ 1 + (1 | g), data = dat)
  }
  d <- fr_distribution(fit, "g")
  blup <- fit$ranef_values$g
  eb <- fullrandom:::npmle_ranef(d)
  center <- alpha + 1 - fit$coefficients[[1]]  # effects on the fit's scale
  # one new observation in every level
  nd <- data.frame(g = factor(seq_len(G), levels = levels(dat$g)))
  if (crossed) nd$h <- factor(sample.int(items, G, replace = TRUE), levels = levels(dat$h))
  ynew <- 1 + alpha + rnorm(G) + if (crossed) 0 else 0
  if (crossed) ynew <- ynew + (dat$y - y)[match(nd$h, dat$h)]
  p <- predict(fit, nd, interval = "prediction", level = 0.9)
  cov <- ynew >= p[, "lwr"] & ynew <= p[, "upr"]
  covn <- ynew >= p[, "lwr_normal"] & ynew <= p[, "upr_normal"]
  qa <- cut(rank(alpha, ties.method = "random"), 4, labels = FALSE)
  qn <- cut(rank(n, ties.method = "first"), 4, labels = FALSE)
  c(w1_npmle = w1(d$support$point, d$support$prob, center),
    w1_blup = w1(blup, rep(1 / G, G), center),
    mse_blup = mean((blup - center)^2), mse_eb = mean((eb - center)^2),
    cover = mean(cov), cover_normal = mean(covn),
    min_q_alpha = min(tapply(cov, qa, mean)), min_q_alpha_normal = min(tapply(covn, qa, mean)),
    min_q_n = min(tapply(cov, qn, mean)))
}
set.seed(20230)
designs <- expand.grid(law = c("normal", "gamma", "bimodal", "t3", "spike"),
                       sizes = c("poisson", "balanced"), G = 1000, crossed = FALSE,
                       stringsAsFactors = FALSE)
designs <- rbind(designs,
  data.frame(law = c("normal", "bimodal"), sizes = "poisson", G = 20000, crossed = FALSE),
  data.frame(law = c("normal", "bimodal"), sizes = "poisson", G = 3000, crossed = TRUE))
reps <- ifelse(designs$G >= 20000, 1L, 4L)
rows <- lapply(seq_len(nrow(designs)), function(i) {
  r <- replicate(reps[i], one_run(designs$law[i], designs$G[i], designs$sizes[i], designs$crossed[i]))
  m <- rowMeans(r)
  cat(designs$law[i], designs$sizes[i], designs$G[i], designs$crossed[i], round(m, 3), "\n")
  m
})
res <- cbind(designs, reps = reps, do.call(rbind, rows))
# Time for 2e5 levels on 2 threads: distribution and posterior means.
G <- 2e5
n <- pmax(rpois(G, 4), 1)
alpha <- draw_alpha(G, "bimodal")
g <- rep(seq_len(G), n)
big <- data.frame(y = 1 + alpha[g] + rnorm(length(g)), g = factor(g))
fit <- fr_fit(y ~ 1 + (1 | g), data = big, threads = 2)
tm <- system.time({ d <- fr_distribution(fit, threads = 2); eb <- fullrandom:::npmle_ranef(d) })[["elapsed"]]
f <- function(x, k = 3) formatC(x, digits = k, format = "f")
lines <- c(
  "## The mixing distribution: NPMLE, empirical Bayes and prediction intervals",
  "",
  sprintf(paste(
    "From `bench/mixing.R`: y = 1 + a_g + e, e ~ N(0, 1), effects centred with variance about 1",
    "(normal; gamma(2) scaled; bimodal 0.8 N(-0.5, 0.3^2) + 0.2 N(2, 0.5^2); t3 scaled; 60%% point",
    "mass at 0 + 40%% N(1, 1)); Poisson(4) (at least 1) or 4 rows per level; crossed: plus a",
    "Zipf-weighted item term with sd 0.4. `fr_distribution()` with its defaults (300-point grid,",
    "EM+SQUAREM), posterior means against the BLUPs, and 90%% prediction intervals for one new",
    "observation in every level (NPMLE-based, `predict(interval = \"prediction\")`, and the normal",
    "one beside it). W1 is the Wasserstein-1 distance to the true effects' empirical distribution",
    "(for BLUPs: of the BLUPs' empirical distribution). Means over `reps` data sets. Time for",
    "2e5 levels (distribution and posterior means, 2 threads): %.2f s (EM steps %d, %d bins).",
    "Run time %.0f s."), tm, d$iterations, d$n_bins,
    as.numeric(difftime(Sys.time(), started, units = "secs"))),
  "",
  "| effects | sizes | levels | crossed | reps | W1 NPMLE | W1 BLUP | MSE BLUP | MSE EB | EB/BLUP | PI cover | normal PI cover | min cover by quartile of a | normal, same | min cover by quartile of n |",
  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  sprintf("| %s | %s | %d | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |",
          res$law, res$sizes, res$G, res$crossed, res$reps, f(res$w1_npmle), f(res$w1_blup),
          f(res$mse_blup), f(res$mse_eb), f(res$mse_eb / res$mse_blup), f(res$cover),
          f(res$cover_normal), f(res$min_q_alpha), f(res$min_q_alpha_normal), f(res$min_q_n)))
write_results_section("mixing", lines, readme = "/nonexistent")
cat(lines, sep = "\n")
