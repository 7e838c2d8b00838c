# A study, not a method of the package: can a MINQUE-like step make the GLMM moment fit
# as precise as glmer on power-law crossed Bernoulli data (issue 19, "Against the truth":
# the moments' sampling sd of the sds is 2.2-3.5x glmer's there)? The Gaussian
# efficient estimator (efficient.rs) is one MINQUE step from the moment estimates; this is
# its analogue on the working scale of the GLMM:
#
#   U_k = ||G_k^-1 u_k||^2,  u = C^-1 Z'(D/A) r,  r = y - m(X b; s2_+),  C = Z'WZ + G^-1,
#
# with D, A, W = D^2 / A and G frozen at the moment estimates theta_0 (the quasi-score's
# working covariance V_0 = A + D Z G Z' D, Woodbury). E[U_k](b, theta) = tr(L_k Sigma(theta) L_k'),
# L_k = G_k^-1 [C^-1 Z' diag(D/A)]_k, is computed with the EXACT marginal covariance Sigma:
# a row's variance m (1 - m), pairs sharing the user only E_u[m(e_s + u; s2_i) m(e_t + u; s2_i)] - m_s m_t
# (the item likewise), pairs in one cell E_z[h(e_s + z) h(e_t + z)] - m_s m_t (z ~ N(0, s2_+)),
# each sum over pairs by Gauss-Hermite nodes and per-level sums (rowsum). So U_k = E[U_k]
# are unbiased estimating equations whatever theta_0; b solves the working quasi-score
# X'D V_0^-1 r = 0 at each theta. Exact level-space algebra (dense C^-1): only for a few
# hundred levels. Checked against a 20,000-replicate simulation of U_k on a 600-row
# design with a wrong theta_0 (within 0.6 and 1.8 Monte Carlo se).
#
#   nice -n 19 Rscript bench/glmm-minque.R [data sets]     (from the package root)
#
# Data sets are cached in /tmp/fullrandom-bench-glmm-minque (one file each); the section
# "glmm-minque" of bench/results.md is written from the cache.
suppressMessages({
  library(Matrix)
  library(statmod)
  library(fullrandom)
  library(lme4)
  library(parallel)
})
source("bench/results.R")
options(fullrandom.threads = 1L)

gh <- gauss.quad.prob(20, "normal")
go <- gauss.quad.prob(12, "normal")
zq <- gh$nodes; wq <- gh$weights

mfun <- function(e, s2) {  # E plogis(e + z), z ~ N(0, s2): N vector
  s <- sqrt(s2); out <- 0
  for (q in seq_along(zq)) out <- out + wq[q] * plogis(e + s * zq[q])
  out
}
mslope <- function(e, s2) {
  s <- sqrt(s2); out <- 0
  for (q in seq_along(zq)) { p <- plogis(e + s * zq[q]); out <- out + wq[q] * p * (1 - p) }
  out
}

setup <- function(d, b0, s2_0) {
  X <- cbind(1, d$x)
  u <- as.integer(d$user); i <- as.integer(d$item)
  nu <- max(u); ni <- max(i); N <- nrow(d)
  Z <- cbind(sparseMatrix(seq_len(N), u, x = 1, dims = c(N, nu)), sparseMatrix(seq_len(N), i, x = 1, dims = c(N, ni)))
  cell <- as.integer(factor(paste(u, i)))
  e0 <- drop(X %*% b0)
  m0 <- mfun(e0, sum(s2_0)); D <- mslope(e0, sum(s2_0)); A <- m0 * (1 - m0)
  W <- D^2 / A
  G <- c(rep(s2_0[1], nu), rep(s2_0[2], ni))
  C <- as.matrix(crossprod(Z, W * Z)) + diag(1 / G)
  Cinv <- solve(C)
  ZtDA <- t(as.matrix(Z * (D / A)))
  L <- (Cinv / G) %*% ZtDA   # (nu+ni) x N dense: G^-1 C^-1 Z' diag(D/A)
  # the working quasi-score X'D V0^-1 r = Q r
  Q <- t(X * (D / A)) - (t(X * W) %*% Z) %*% Cinv %*% ZtDA
  rows <- list(seq_len(nu), nu + seq_len(ni))
  list(X = X, Q = as.matrix(Q), u = u, i = i, nu = nu, ni = ni, N = N, cell = cell, L = L, tL = t(L), rows = rows,
       sq = lapply(rows, function(r) colSums(L[r, , drop = FALSE]^2)))
}

# sum_{s != t sharing a level of `grp`} a_s . a_t f_q(s) f_q(t), over nodes q, for the L rows of term k.
pair_part <- function(tL, grp, fq, sq_norms, rows) {
  tot <- numeric(length(rows))
  for (q in seq_along(fq)) {
    f <- fq[[q]]$f
    M <- rowsum(tL * f, grp, reorder = FALSE)
    tot <- tot + fq[[q]]$w * sapply(seq_along(rows), function(k) sum(M[, rows[[k]]]^2) - sum(sq_norms[[k]] * f^2))
  }
  tot
}

expected_U <- function(st, e, s2) {
  s2t <- sum(s2)
  m <- mfun(e, s2t)
  # node functions for each grouping: user (other variance s2i), item (s2u), cell (total)
  zo <- go$nodes; wo <- go$weights
  fu <- lapply(seq_along(zo), function(q) list(w = wo[q], f = mfun(e + sqrt(s2[1]) * zo[q], s2[2])))
  fi <- lapply(seq_along(zo), function(q) list(w = wo[q], f = mfun(e + sqrt(s2[2]) * zo[q], s2[1])))
  fc <- lapply(seq_along(zq), function(q) list(w = wq[q], f = plogis(e + sqrt(s2t) * zq[q])))
  fm <- list(list(w = 1, f = m))
  sq <- st$sq
  rows <- st$rows
  diag_part <- sapply(sq, function(v) sum(v * m * (1 - m)))
  pu <- pair_part(st$tL, st$u, fu, sq, rows) - pair_part(st$tL, st$u, fm, sq, rows)
  pi <- pair_part(st$tL, st$i, fi, sq, rows) - pair_part(st$tL, st$i, fm, sq, rows)
  # same-cell pairs: the cell covariance minus what the user and item parts counted
  pc <- pair_part(st$tL, st$cell, fc, sq, rows) - pair_part(st$tL, st$cell, fu, sq, rows) -
    pair_part(st$tL, st$cell, fi, sq, rows) + pair_part(st$tL, st$cell, fm, sq, rows)
  diag_part + pu + pi + pc
}

profile_b <- function(b, s2, st, y) {
  for (it in 1:30) {
    e <- drop(st$X %*% b)
    r <- y - mfun(e, sum(s2))
    H <- st$Q %*% (mslope(e, sum(s2)) * st$X)
    step <- solve(H, st$Q %*% r)
    b <- b + drop(step)
    if (max(abs(step)) < 1e-10) break
  }
  b
}

theta_eq <- function(ls2, st, y, b) {
  s2 <- exp(ls2)
  b <- profile_b(b, s2, st, y)
  e <- drop(st$X %*% b)
  r <- y - mfun(e, sum(s2))
  U <- sapply(1:2, function(k) sum((st$L[st$rows[[k]], , drop = FALSE] %*% r)^2))
  EU <- expected_U(st, e, s2)
  structure(log(U) - log(EU), b = b)
}

solve_eq <- function(start, st, y, tol = 1e-6, maxit = 20) {
  ls2 <- start[3:4]; b <- start[1:2]
  f <- theta_eq(ls2, st, y, b); b <- attr(f, "b")
  for (it in seq_len(maxit)) {
    J <- sapply(1:2, function(j) {
      h <- 1e-4; p2 <- ls2; p2[j] <- p2[j] + h
      (theta_eq(p2, st, y, b) - f) / h
    })
    step <- -solve(J, f)
    step <- step * min(1, 2 / max(abs(step)))
    lam <- 1
    repeat {
      f_new <- theta_eq(ls2 + lam * step, st, y, b)
      if (sum(f_new^2) < sum(f^2) || lam < 1e-2) break
      lam <- lam / 2
    }
    ls2 <- ls2 + lam * step; f <- f_new; b <- attr(f, "b")
    if (max(abs(lam * step)) < tol || max(abs(f)) < 1e-9) break
  }
  list(par = c(b, ls2), f = f, it = it)
}

minque_fit <- function(d, b0, s2_0, steps = 1) {
  par <- c(b0, log(s2_0))
  for (s in seq_len(steps)) {
    st <- setup(d, par[1:2], exp(par[3:4]))
    sol <- solve_eq(par, st, d$y)
    par <- sol$par
  }
  structure(c(b = par[1:2], sd = sqrt(exp(par[3:4]))), it = sol$it)
}

# ---- the study ----------------------------------------------------------------------
args <- commandArgs(trailingOnly = TRUE)
n_sets <- if (length(args) >= 1L) as.integer(args[[1]]) else 40L
cache <- "/tmp/fullrandom-bench-glmm-minque"
dir.create(cache, showWarnings = FALSE)
one <- function(seed) {
  f_out <- file.path(cache, sprintf("%d.rds", seed))
  if (file.exists(f_out)) return(readRDS(f_out))
  d <- simulate_crossed(2e4, family = binomial, intercept = qlogis(0.2), slope = 0.5, sd_user = 1,
                        sd_item = 0.5, seed = seed)
  form <- y ~ x + (1 | user) + (1 | item)
  t0 <- proc.time()[[3]]
  f <- suppressWarnings(fr_fit(form, d, family = binomial))
  t_mom <- proc.time()[[3]] - t0
  b0 <- unname(fixef(f))
  s2_0 <- unname(f$theta[c("user", "item")])
  t0 <- proc.time()[[3]]
  m1 <- tryCatch(minque_fit(d, b0, pmax(s2_0, 1e-3), steps = 1), error = function(e) rep(NA, 4))
  t_m1 <- proc.time()[[3]] - t0
  t0 <- proc.time()[[3]]
  g <- suppressWarnings(glmer(form, d, family = binomial, control = glmerControl(optimizer = "bobyqa")))
  t_g <- proc.time()[[3]] - t0
  vg <- as.data.frame(VarCorr(g))
  out <- rbind(moments = c(b0, sqrt(s2_0)), minque1 = unname(m1), minque2 = rep(NA, 4),
               glmer = c(unname(fixef(g)), vg$sdcor[match(c("user", "item"), vg$grp)]))
  colnames(out) <- c("b0", "b1", "sd_user", "sd_item")
  attr(out, "time") <- c(moments = t_mom, minque1 = t_m1, glmer = t_g)
  saveRDS(out, f_out)
  out
}
invisible(mclapply(seq_len(n_sets), one, mc.cores = 2))

res <- lapply(list.files(cache, full.names = TRUE), readRDS)
arr <- simplify2array(res)
truth <- c(b0 = qlogis(0.2), b1 = 0.5, sd_user = 1, sd_item = 0.5)
glmer_est <- t(arr["glmer", , ])
row_of <- function(m, label) {
  x <- t(arr[m, , ])
  ok <- complete.cases(x) & complete.cases(glmer_est)
  f <- function(v) paste(sprintf("%.2f", v), collapse = "; ")
  sprintf("| %s | %d | %s | %s | %s |", label, sum(ok),
          paste(sprintf("%+.1f", 100 * (colMeans(x[ok, 3:4]) - truth[3:4]) / truth[3:4]), collapse = "; "),
          f(apply(x[ok, ], 2, sd) / apply(glmer_est[ok, ], 2, sd)),
          f(colMeans(sweep(x[ok, ], 2, truth)^2) / colMeans(sweep(glmer_est[ok, ], 2, truth)^2)))
}
times <- rowMeans(sapply(res, attr, "time"))
lines <- c(
  "## GLMM moment fit: a MINQUE step on power-law crossed data (bench/glmm-minque.R)",
  "",
  paste(
    "A study of a possible second step for the crossed moment fit, prototyped in R (not in the package):",
    "the quadratic forms of the working BLUPs `U_k = ||u_k||^2 / G_k^2`, with the working covariance frozen at",
    "the moment estimates, equated to their exact expectations under the model (the analogue of the Gaussian",
    "`method = \"efficient\"`, one MINQUE step). Data: `simulate_crossed(2e4, family = binomial)`, 125 users x",
    "53 items with Zipf sizes (82% of rows in repeated cells), sds 1 and 0.5, slope 0.5; columns in the order",
    "(Intercept), x, sd user, sd item; ratios to glmer (Laplace, bobyqa) on the same data sets."
  ),
  "",
  "| method | data sets | bias of the sds (%) | sampling sd / glmer's | MSE / glmer's |",
  "|---|---|---|---|---|",
  row_of("moments", "moments (fr_fit's default)"),
  row_of("minque1", "MINQUE step from the moments"),
  "",
  paste0(
    "Mean seconds a fit (two at a time on the shared 2-core machine): moments ", sprintf("%.2f", times[["moments"]]),
    ", the R prototype ", sprintf("%.0f", times[["minque1"]]), ", glmer ", sprintf("%.1f", times[["glmer"]]), ". ",
    "The step removes the moments' bias of the item sd and cuts the spread of the sds, but not to 1.3x glmer's; ",
    "the likelihood (`method = \"efficient\"`, bench/glmm-grid.R) does better on this design (1.39x and 1.36x). ",
    "Iterating the step (the working covariance at the new estimates, two more times) moved the sds by at most ",
    "0.011 on 4 data sets: the remaining gap is the working covariance's linearization (heavy levels far from ",
    "the marginal mean), not the starting point. The prototype's slope (the working quasi-score with the ",
    "covariance frozen at the moment estimates) is less precise than the moment fit's own. Not built into the package."
  )
)
write_results_section("glmm-minque", lines)
cat(lines, sep = "\n")
