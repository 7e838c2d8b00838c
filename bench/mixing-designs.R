# The designs of bench/mixing.R and bench/mixing-gmodel.R: laws of the effects and of
# the level sizes.
draw_alpha <- function(G, law) {
  a <- switch(law,
    normal = rnorm(G),
    gamma = rgamma(G, 2) / sqrt(2),
    bimodal = ifelse(runif(G) < 0.8, rnorm(G, -0.5, 0.3), rnorm(G, 2, 0.5)),
    t3 = rt(G, 3) / sqrt(3),
    spike = ifelse(runif(G) < 0.6, 0, rnorm(G, 1, 1)))
  a - mean(a)
}
draw_sizes <- function(G, sizes) {
  switch(sizes,
    poisson = pmax(rpois(G, 4), 1),
    balanced = rep(4, G),
    # Zipf: P(n = k) proportional to k^-2 on 1..500 (mean about 4, a long tail)
    zipf = sample.int(500, G, replace = TRUE, prob = seq_len(500)^-2))
}

# The timing design of bench/mixing.R and bench/mixing-time.R: 2 x 10^5 levels with
# Poisson(4) sizes (at least 1) and bimodal effects, fitted on 2 threads.
timing_fit <- function() {
  set.seed(7)
  G <- 2e5
  n <- pmax(rpois(G, 4), 1)
  alpha <- draw_alpha(G, "bimodal")
  g <- rep(seq_len(G), n)
  big <- data.frame(y = 1 + alpha[g] + rnorm(length(g)), g = factor(g))
  fr_fit(y ~ 1 + (1 | g), data = big, threads = 2)
}
