# The GLMM likelihood fit (fr_fit's default for one term or nested terms, method =
# "efficient") on the click-through design of simulate_clicks() (baseline logit -4.5,
# display effect 0.5, user sd 5): Newton steps, time and estimates at 10^3, 10^4 and 10^5
# users beside the moments in the same run, and at 10^3 users against the maximum of the
# marginal likelihood with every user's integral by integrate() (a Newton step on its
# central differences from fr_fit's estimate) and against glmer(nAGQ = 10 and 25).
# Writes the "glmm-likelihood" section of bench/results.md.
suppressMessages({
  library(fullrandom)
  library(lme4)
})
source("bench/results.R")
threads <- 2L
form <- cbind(clicks, impressions - clicks) ~ display + (1 | user)
load <- function() readLines("/proc/loadavg")
fmt <- function(x, digits = 4) formatC(x, digits = digits, format = "g")
rows <- list()
for (n in c(1e3, 1e4, 1e5)) {
  d <- simulate_clicks(n_users = n, seed = 1)
  before <- load()
  t_fit <- system.time(fit <- fr_fit(form, d, family = binomial, threads = threads))
  t_mom <- system.time(mom <- fr_fit(form, d, family = binomial, threads = threads, method = "moments"))
  rows[[length(rows) + 1L]] <- data.frame(
    users = n, rows = nrow(d), method = fit$method, newton = fit$iterations[["newton"]],
    seconds = t_fit[["elapsed"]], likelihood_seconds = fit$timings[["likelihood"]],
    intercept = fixef(fit)[[1]], display = fixef(fit)[[2]], sd = sqrt(fit$theta[[1]]),
    moments_seconds = t_mom[["elapsed"]], moments_sd = sqrt(mom$theta[[1]]),
    load = paste(before, "->", load())
  )
}
rows <- do.call(rbind, rows)
# The reference at 10^3 users: each user's integral by integrate().
d <- simulate_clicks(n_users = 1000, seed = 1)
fit <- fr_fit(form, d, family = binomial, threads = threads)
by_user <- split(d, d$user)
exact_loglik <- function(par) {
  s2 <- exp(2 * par[3])
  sum(vapply(by_user, function(u) {
    eta <- par[1] + par[2] * u$display
    f <- function(a) {
      vapply(a, function(ai) sum(dbinom(u$clicks, u$impressions, plogis(eta + ai), log = TRUE)), 0) +
        dnorm(a, 0, sqrt(s2), log = TRUE)
    }
    m <- optimize(f, c(-80, 80), maximum = TRUE, tol = 1e-10)
    log(integrate(function(x) exp(f(x) - m$objective), m$maximum - 80, m$maximum + 80, rel.tol = 1e-11,
                  subdivisions = 2000)$value) + m$objective
  }, 0))
}
theta <- c(fixef(fit), log(sqrt(fit$theta[[1]])))
h <- 2e-3
f0 <- exact_loglik(theta)
g <- numeric(3)
H <- matrix(0, 3, 3)
for (j in 1:3) {
  e <- replace(numeric(3), j, h)
  up <- exact_loglik(theta + e)
  down <- exact_loglik(theta - e)
  g[j] <- (up - down) / (2 * h)
  H[j, j] <- (up - 2 * f0 + down) / h^2
}
for (j in 1:2) for (k in (j + 1):3) {
  ej <- replace(numeric(3), j, h)
  ek <- replace(numeric(3), k, h)
  H[j, k] <- H[k, j] <- (exact_loglik(theta + ej + ek) - exact_loglik(theta + ej - ek) -
                           exact_loglik(theta - ej + ek) + exact_loglik(theta - ej - ek)) / (4 * h^2)
}
exact <- theta - solve(H, g)
exact[3] <- exp(exact[3])
glmers <- lapply(c(1, 10, 25), function(q) {
  t <- system.time(g <- glmer(form, d, family = binomial, nAGQ = q))[["elapsed"]]
  c(fixef(g), as.data.frame(VarCorr(g))$sdcor, t)
})
lines <- c(
  "## GLMM likelihood fit on the click-through design (bench/glmm-likelihood.R)", "",
  sprintf(paste("`simulate_clicks(n_users, seed = 1)`, `cbind(clicks, impressions - clicks) ~ display + (1 | user)`,",
                "threads %d. fr_fit's default (`method = \"auto\"`: the likelihood, `\"efficient\"`, for one term):",
                "Newton steps, elapsed seconds of the whole fit (moment start, likelihood, modes) and of the likelihood",
                "stage, beside `method = \"moments\"` in the same run; load average (1, 5, 15 min) before -> after."), threads), "",
  "| users | rows | Newton steps | fr_fit s | likelihood s | intercept | display | sd user | moments s | moments sd | load |",
  "|---|---|---|---|---|---|---|---|---|---|---|",
  sprintf("| %s | %s | %d | %.2f | %.2f | %s | %s | %s | %.2f | %s | %s |",
          format(rows$users, big.mark = ",", scientific = FALSE), format(rows$rows, big.mark = ",", scientific = FALSE),
          rows$newton, rows$seconds, rows$likelihood_seconds, fmt(rows$intercept, 6), fmt(rows$display, 6), fmt(rows$sd, 6),
          rows$moments_seconds, fmt(rows$moments_sd), rows$load), "",
  "At 1,000 users against the maximum of the marginal likelihood with each user's integral by `integrate()`",
  "(rel.tol 1e-11; a Newton step on central differences, step 2e-3, from fr_fit's estimate) and glmer:", "",
  "| fit | intercept | display | sd user | seconds |", "|---|---|---|---|---|",
  sprintf("| fr_fit | %s | %s | %s | %.2f |", fmt(fixef(fit)[[1]], 7), fmt(fixef(fit)[[2]], 7), fmt(sqrt(fit$theta[[1]]), 7),
          rows$seconds[[1]]),
  sprintf("| integrate() reference | %s | %s | %s | |", fmt(exact[1], 7), fmt(exact[2], 7), fmt(exact[3], 7)),
  sprintf("| glmer, nAGQ = %d | %s | %s | %s | %.2f |", c(1, 10, 25), fmt(sapply(glmers, `[`, 1), 7),
          fmt(sapply(glmers, `[`, 2), 7), fmt(sapply(glmers, `[`, 3), 7), sapply(glmers, `[`, 4)), "",
  "glmer's adaptive Gauss-Hermite is centred at each user's mode and scaled by the curvature there; for a user who",
  "never clicks the integrand has a Gaussian tail on one side and a cliff on the other, and 10 or 25 nodes are not",
  "enough. fr_fit integrates each level by the trapezoidal rule after `a = mode + sd sinh(t)` (step 0.15, out to",
  "where the integrand falls e^-40 below its top): about 1e-6 of each level's log-likelihood."
)
write_results_section("glmm-likelihood", lines)
cat(lines, sep = "\n")
