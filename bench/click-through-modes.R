# Why fr_fit's conditional modes have a larger logit-scale error than glmer's (Laplace) in
# bench/click-through.R although their probability-scale error is the same: the error of
# the modes at the fitted and at the true parameters (b, s2), at the true b with glmer's
# typical s2 (7.5^2 = 56), and of the posterior means E[u | y] at the truth (quadrature on
# a grid), on 20 future data sets from the same users; 3,000 users, 3 data sets.
# Run from the package root: Rscript bench/click-through-modes.R (about a minute).
suppressMessages({library(fullrandom); library(lme4)})
# Conditional modes of a single random intercept: Newton per user, steps capped at 2.
modes <- function(d, b, s2) {
  off <- b[1] + b[2] * d$display
  u <- numeric(nlevels(d$user))
  for (it in 1:200) {
    p <- plogis(off + u[d$user])
    g <- rowsum(d$clicks - d$impressions * p, d$user)[, 1] - u / s2
    h <- rowsum(d$impressions * p * (1 - p), d$user)[, 1] + 1 / s2
    step <- pmax(pmin(g / h, 2), -2); u <- u + step
    if (max(abs(step)) < 1e-9) break
  }
  u
}
post_mean <- function(d, b, s2) {  # E[u | y] by brute quadrature on a grid
  z <- seq(-40, 40, by = 0.02); w <- dnorm(z, 0, sqrt(s2))
  off <- b[1] + b[2] * d$display
  # the log-likelihood of every user on the grid
  L <- sapply(z, function(a) rowsum(dbinom(d$clicks, d$impressions, plogis(off + a), log = TRUE), d$user)[, 1])
  L <- L - apply(L, 1, max)
  post <- exp(L) * rep(w, each = nrow(L))
  drop(post %*% z) / rowSums(post)
}
metrics <- function(b, u, futures) {
  rowMeans(sapply(futures, function(fu) {
    l <- b[1] + b[2] * fu$display + u[fu$user]; t <- attr(fu, "truth")$logit; n <- fu$impressions
    c(excess = sum(n * (plogis(t) - plogis(l))^2) / sum(n), logit = sum(n * (t - l)^2) / sum(n))
  }))
}
f <- cbind(clicks, impressions - clicks) ~ display + (1 | user)
res <- NULL
for (r in 1:3) {
  d <- simulate_clicks(n_users = 3000, seed = 700 + r); tr <- attr(d, "truth")
  futures <- lapply(1:20, function(k) simulate_clicks(user_effect = tr$user_effect, seed = 7000 + 100 * r + k))
  m <- fr_fit(f, d, family = binomial, method = "moments")  # as the stored numbers
  g <- glmer(f, d, binomial, control = glmerControl(optimizer = "bobyqa"))
  bt <- c(tr$intercept, tr$display_effect)
  s2g <- VarCorr(g)$user[1]
  res <- rbind(res, cbind(data.frame(r = r, what = c("fr_fit", "glmer_laplace", "modes_at_truth", "modes_at_true_b_s2_56", "post_mean_at_truth")),
    rbind(metrics(fixef(m), ranef(m)$user[, 1], futures), metrics(fixef(g), ranef(g)$user[, 1], futures),
          metrics(bt, modes(d, bt, 25), futures), metrics(bt, modes(d, bt, 56), futures),
          metrics(bt, post_mean(d, bt, 25), futures))))
}
print(res)
print(aggregate(cbind(excess, logit) ~ what, res, mean))
