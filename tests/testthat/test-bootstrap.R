crossed_data <- function(seed = 1, n = 300) {
  set.seed(seed)
  a <- rnorm(12); b <- rnorm(9, sd = 0.7)
  i <- sample(12, n, TRUE); j <- sample(9, n, TRUE)
  x <- rnorm(n)
  data.frame(y = 1 + 0.5 * x + a[i] + b[j] + rnorm(n), x = x,
             u = factor(paste0("u", i)), v = factor(paste0("v", j)))
}

# The data of a replicate written out by hand: every row once for each combination of
# the copies of its levels, copy c of level g labelled "g#c".
expand_by_hand <- function(data, multiplicities) {
  rows <- list()
  for (r in seq_len(nrow(data))) {
    copies <- lapply(names(multiplicities), function(term) {
      seq_len(multiplicities[[term]][[as.character(data[[term]][r])]])
    })
    grid <- expand.grid(copies)
    if (nrow(grid) == 0L) next
    block <- data[rep(r, nrow(grid)), , drop = FALSE]
    for (k in seq_along(multiplicities)) {
      term <- names(multiplicities)[k]
      block[[term]] <- paste0(as.character(data[[term]][r]), "#", grid[[k]])
    }
    rows[[length(rows) + 1L]] <- block
  }
  out <- do.call(rbind, rows)
  for (term in names(multiplicities)) out[[term]] <- factor(out[[term]])
  out
}

replicate_with <- function(fit, multiplicities) {
  model <- fullrandom:::bootstrap_model(fit)
  w <- lapply(names(fit$flist), function(term) {
    as.integer(multiplicities[[term]][levels(fit$flist[[term]])])
  })
  out <- fullrandom:::fr_bootstrap_fit(model$model, fit$method, model$size_columns, 1L, 0, 1L, NULL, w)
  fullrandom:::unscale_replicates(out, model$scale)
}

test_that("a replicate equals the fit of its data written out copy by copy", {
  data <- crossed_data()
  fit <- fr_fit(y ~ x + (1 | u) + (1 | v), data)
  set.seed(3)
  multiplicities <- list(
    u = stats::setNames(as.vector(rmultinom(1, 12, rep(1, 12))), levels(data$u)),
    v = stats::setNames(as.vector(rmultinom(1, 9, rep(1, 9))), levels(data$v))
  )
  # The draw holds levels drawn twice or more and levels left out.
  expect_true(any(multiplicities$u >= 2) && any(multiplicities$u == 0))
  out <- replicate_with(fit, multiplicities)
  expanded <- expand_by_hand(data, multiplicities)
  expect_equal(nrow(expanded), sum(multiplicities$u[as.character(data$u)] *
                                     multiplicities$v[as.character(data$v)]))
  by_hand <- fr_fit(y ~ x + (1 | u) + (1 | v), expanded)
  expect_equal(out$components, unname(by_hand$theta), tolerance = 1e-10)
  expect_equal(out$raw, unname(by_hand$theta_raw), tolerance = 1e-10)
  # Replicates solve the mixed-model equations to a relative residual of 1e-4 only; their
  # fixed effects are of second order in that error.
  expect_equal(out$coef, unname(by_hand$coef_all), tolerance = 1e-7)
  expect_true(is.na(out$errors))
})

test_that("with one random term a replicate is the cluster bootstrap, for both methods", {
  data <- simulate_archers(n_archers = 15, n_shots = 6, seed = 4)
  multiplicities <- list(archer = stats::setNames(c(3, 0, 1, 2, 0, 0, 1, 1, 2, 0, 1, 1, 0, 2, 1),
                                                  levels(data$archer)))
  expanded <- expand_by_hand(data, multiplicities)
  expect_equal(nlevels(expanded$archer), 15L)
  for (method in c("moments", "fr")) {
    fit <- fr_fit(distance ~ bow + (1 | archer), data, method = method)
    out <- replicate_with(fit, multiplicities)
    by_hand <- fr_fit(distance ~ bow + (1 | archer), expanded, method = method)
    expect_equal(out$components, unname(by_hand$theta), tolerance = 1e-10)
    expect_equal(out$coef, unname(by_hand$coef_all), tolerance = 1e-7)
  }
})

test_that("replicates are reproducible with seed and do not depend on threads", {
  fit <- fr_fit(y ~ x + (1 | u) + (1 | v), crossed_data())
  a <- fr_bootstrap(fit, nsim = 30, seed = 11, threads = 1)
  b <- fr_bootstrap(fit, nsim = 30, seed = 11, threads = 2)
  c <- fr_bootstrap(fit, nsim = 30, seed = 12, threads = 2)
  expect_identical(as.matrix(a), as.matrix(b))
  expect_false(isTRUE(all.equal(as.matrix(a), as.matrix(c))))
  # With a seed the caller's random stream is left as it was.
  set.seed(5)
  before <- runif(1)
  set.seed(5)
  fr_bootstrap(fit, nsim = 5, seed = 1)
  expect_identical(runif(1), before)
  # Without one, set.seed() makes the replicates reproducible.
  set.seed(6)
  d <- fr_bootstrap(fit, nsim = 10)
  set.seed(6)
  e <- fr_bootstrap(fit, nsim = 10)
  expect_identical(as.matrix(d), as.matrix(e))
  expect_identical(attr(d, "seed"), attr(e, "seed"))
})

test_that("the bootstrap's spread matches the sampling spread of the cluster bootstrap's estimator", {
  fit <- fr_fit(distance ~ bow + (1 | archer), simulate_archers(n_archers = 40, seed = 7))
  boot <- fr_bootstrap(fit, nsim = 400, seed = 1)
  expect_s3_class(boot, "fr_bootstrap")
  expect_identical(names(boot), c("sd_(Intercept)|archer", "sigma", "(Intercept)", "bowSouthwood"))
  expect_identical(nrow(boot), 400L)
  expect_equal(unname(colMeans(boot)), unname(attr(boot, "estimate")), tolerance = 0.05)
  expect_equal(attr(boot, "variances")[, "archer"], boot[["sd_(Intercept)|archer"]]^2)
  # The archer sd's standard error in a one-way layout with 40 groups is near sd / sqrt(2 * 39).
  se <- sd(boot[["sd_(Intercept)|archer"]])
  expect_gt(se, 0.5 * 23 / sqrt(78))
  expect_lt(se, 2 * 23 / sqrt(78))
})

test_that("confint names its rows as lme4 and computes each method's limits", {
  data <- simulate_archers(seed = 1)
  fit <- fr_fit(distance ~ bow + (1 | archer), data)
  boot <- fr_bootstrap(fit, nsim = 200, seed = 3)
  ci <- confint(fit, boot = boot)
  expect_identical(rownames(ci), c("sd_(Intercept)|archer", "sigma", "(Intercept)", "bowSouthwood"))
  expect_identical(colnames(ci), c("2.5 %", "97.5 %"))
  # Variance components: replicates centred on the reported estimate, on the variance scale.
  raw <- attr(boot, "raw")
  centred <- sqrt(pmax(sweep(raw, 2, colMeans(raw)) + rep(fit$theta, each = nrow(raw)), 0))
  expect_equal(ci[1:2, 1], apply(centred, 2, quantile, 0.025, names = FALSE), ignore_attr = TRUE)
  expect_equal(ci[1:2, 2], apply(centred, 2, quantile, 0.975, names = FALSE), ignore_attr = TRUE)
  expect_equal(ci[3:4, 1], apply(as.matrix(boot)[, 3:4], 2, quantile, 0.025, names = FALSE),
               ignore_attr = TRUE)
  expect_true(all(ci[, 1] < attr(boot, "estimate") & attr(boot, "estimate") < ci[, 2]))
  if (requireNamespace("lme4", quietly = TRUE)) {
    lme4_fit <- lme4::lmer(distance ~ bow + (1 | archer), data)
    expect_identical(rownames(confint(lme4_fit, method = "Wald", oldNames = FALSE)), rownames(ci))
  }
  wald <- confint(fit, method = "Wald", level = 0.9, boot = boot)
  se <- sqrt(diag(vcov(fit)))
  expect_equal(wald[3:4, 2], fixef(fit) + qnorm(0.95) * se, ignore_attr = TRUE)
  v_se <- apply(attr(boot, "raw"), 2, sd)
  expect_equal(wald[1:2, 1], sqrt(pmax(fit$theta - qnorm(0.95) * v_se, 0)), ignore_attr = TRUE)
  expect_identical(colnames(wald), c("5 %", "95 %"))
  expect_identical(rownames(confint(fit, parm = "beta_", method = "Wald")), c("(Intercept)", "bowSouthwood"))
  expect_identical(rownames(confint(fit, parm = c("sigma", "theta_"), boot = boot)),
                   c("sigma", "sd_(Intercept)|archer"))
  expect_identical(rownames(confint(fit, parm = 4, boot = boot)), "bowSouthwood")
})

test_that("a crossed term with no variance gets a bootstrap interval from zero", {
  # Copies of an observation share its residual, which the uncentred replicates of the
  # item variance take for item variance: their percentiles leave zero out.
  set.seed(2)
  n <- 600
  u <- sample(60, n, TRUE)
  v <- sample(40, n, TRUE)
  data <- data.frame(y = rnorm(60)[u] + rnorm(n), u = factor(u), v = factor(v))
  fit <- suppressMessages(fr_fit(y ~ 1 + (1 | u) + (1 | v), data))
  boot <- fr_bootstrap(fit, nsim = 100, seed = 1)
  expect_gt(quantile(boot[["sd_(Intercept)|v"]], 0.025), 0.05)
  ci <- confint(fit, boot = boot)
  expect_identical(ci[["sd_(Intercept)|v", 1]], 0)
  expect_gt(ci[["sd_(Intercept)|v", 2]], 0.2)
  expect_true(ci[["sigma", 1]] < 1 && 1 < ci[["sigma", 2]])
})

test_that("Software Alchemy intervals come from the chunk covariance of independent chunks", {
  data <- simulate_archers(seed = 2)
  fit <- fr_fit(distance ~ bow + (1 | archer), data, chunks = 5, combine = "average",
                chunk_by = "archer", seed = 1)
  ci <- confint(fit, method = "alchemy")
  se <- sqrt(diag(fit$alchemy$vcov))
  t4 <- qt(0.975, df = 4)
  expect_equal(ci[3:4, 1], fixef(fit) - t4 * se[3:4], ignore_attr = TRUE)
  expect_equal(ci[1:2, 2], sqrt(fit$theta + t4 * se[1:2]), ignore_attr = TRUE)
})

test_that("bad requests get errors that say what is wrong", {
  data <- crossed_data()
  fit <- fr_fit(y ~ x + (1 | u) + (1 | v), data)
  expect_error(fr_bootstrap(lm(y ~ x, data)), "fr_fit object")
  expect_error(fr_bootstrap(fit, nsim = 0), "`nsim` must be a whole number")
  expect_error(fr_bootstrap(fit, nsim = 2.5), "`nsim` must be a whole number")
  expect_error(fr_bootstrap(fit, nsim = 5, seed = "a"), "`seed` must be a single number")
  expect_error(confint(fit, method = "alchemy"), "combine = \"average\"")
  expect_error(confint(fit, parm = "slope"), "unknown parameter 'slope'.*sd_\\(Intercept\\)\\|u")
  expect_error(confint(fit, parm = 9), "indices must lie in 1..5")
  expect_error(confint(fit, level = 95), "`level` must be a single number between 0 and 1")
  other <- fr_fit(y ~ 1 + (1 | u), data)
  expect_error(confint(fit, boot = fr_bootstrap(other, nsim = 5, seed = 1)), "another model")
  rows <- suppressWarnings(fr_fit(y ~ x + (1 | u), data, chunks = 3, combine = "average", seed = 1))
  expect_error(confint(rows, method = "alchemy"), "chunked rows at random")
  crossed <- fr_fit(y ~ x + (1 | u) + (1 | v), data, chunks = 3, combine = "average", chunk_by = "u",
                    seed = 1)
  expect_error(confint(crossed, method = "alchemy"), "levels of \\(1 \\| v\\) fall in several")
  dir <- withr::local_tempdir()
  paths <- file.path(dir, c("a.rds", "b.rds"))
  saveRDS(data[1:150, ], paths[1])
  saveRDS(data[151:300, ], paths[2])
  from_files <- fr_fit(y ~ x + (1 | u) + (1 | v), paths)
  expect_error(fr_bootstrap(from_files, nsim = 5), "do not keep; fit a data frame")
})

test_that("the core reports progress between batches of replicates", {
  fit <- fr_fit(y ~ x + (1 | u) + (1 | v), crossed_data())
  model <- fullrandom:::bootstrap_model(fit)
  done <- integer()
  out <- fullrandom:::fr_bootstrap_fit(model$model, "moments", integer(), 20L, 1, 2L,
                                       function(n) done <<- c(done, n), NULL)
  expect_identical(done, c(8L, 16L, 20L))
  expect_length(out$components, 20L * 3L)
  expect_error(fullrandom:::fr_bootstrap_fit(model$model, "moments", integer(), 5L, -1, 1L, NULL, NULL),
               "whole number in \\[0, 2\\^53\\)")
})

test_that("a bootstrap too large for memory is refused with the size it needs, not a crash", {
  skip_if_not(file.exists("/proc/meminfo"), "the memory check reads /proc/meminfo")
  expect_error_in_fresh_process(c(
    "d <- simulate_crossed(500, seed = 1)",
    "fit <- fr_fit(y ~ x + (1 | user) + (1 | item), d)",
    "fr_bootstrap(fit, nsim = 1e9)"
  ), "nsim = 1000000000 bootstrap replicates would need about [0-9.]+ [GT]B of memory")
})

test_that("percentile intervals refuse too few replicates and warn for few", {
  expect_error_in_fresh_process(c(
    "fit <- fr_fit(distance ~ bow + (1 | archer), simulate_archers(seed = 1))",
    "confint(fit, nsim = 1, seed = 1)"
  ), "1 bootstrap replicate is too few for 95% percentile intervals.*at least 40 replicates")
  fit <- fr_fit(distance ~ bow + (1 | archer), simulate_archers(seed = 1))
  boot <- fr_bootstrap(fit, nsim = 60, seed = 1)
  expect_error(confint(fit, boot = boot[1:30, ]), "too few")
  expect_error(confint(fit, level = 0.99, boot = boot), "at least 200 replicates")
  expect_warning(ci <- confint(fit, boot = boot), "from 60 bootstrap replicates .* unstable")
  expect_true(all(ci[, 1] < ci[, 2]))
  expect_error(confint(fit, method = "Wald", nsim = 5, seed = 1), "too few for the standard deviations")
})

test_that("with a term at the boundary, the interval of sigma holds the reported sigma", {
  # id2 has one level per observation but one, so its variance cannot be told from the
  # residual: it is set to zero, and sigma re-solved without it differs from the raw one.
  run <- run_in_fresh_process(c(
    "d <- simulate_crossed(2000, seed = 1)",
    "d$id2 <- c(1:1999, 1999)",
    "fit <- suppressMessages(fr_fit(y ~ x + (1 | id2) + (1 | user), d))",
    "stopifnot(fit$boundary[['id2']])",
    "ci <- confint(fit, nsim = 200, seed = 1)",
    "est <- c(sqrt(fit$theta), fixef(fit))",
    "cat('CONTAINS', all(ci[, 1] <= est & est <= ci[, 2]), '\\n')",
    "cat('SIGMA', sigma(fit), ci['sigma', ], '\\n')"
  ), timeout = 120)
  expect_identical(run$status, 0L, info = run$output)
  expect_match(run$output, "CONTAINS TRUE", fixed = TRUE, info = run$output)
})

test_that("replicates of a fit with contrasts use the fit's contrasts", {
  set.seed(4)
  d <- data.frame(f = factor(rep(c("a", "b", "c"), 40)), g = factor(rep(1:12, each = 10)))
  d$y <- c(a = 1, b = 2, c = 4)[as.character(d$f)] + rnorm(12, sd = 0.3)[d$g] + rnorm(120, sd = 0.3)
  fit <- fr_fit(y ~ f + (1 | g), data = d, contrasts = list(f = "contr.sum"))
  boot <- fr_bootstrap(fit, nsim = 50, seed = 1)
  # With treatment coding the replicates' intercept would sit near 1, not near 7/3.
  expect_equal(mean(boot[["(Intercept)"]]), fixef(fit)[["(Intercept)"]], tolerance = 0.05)
  expect_equal(mean(boot[["f1"]]), fixef(fit)[["f1"]], tolerance = 0.1)
})

test_that("confint passes threads and progress on and refuses other arguments", {
  fit <- fr_fit(distance ~ bow + (1 | archer), data = simulate_archers(seed = 1))
  expect_error(confint(fit, parm = "beta_", method = "Wald", conf.level = 0.9),
               "^confint\\(\\) does not take `conf.level`")
  expect_error(confint(fit, nsim = 20, seed = 1, boot.type = "perc"), "confint\\(\\) does not take `boot.type`")
  # 40 replicates: the fewest percentile intervals accept at 95% (with a warning).
  expect_identical(dim(suppressWarnings(confint(fit, nsim = 40, seed = 1, threads = 1, progress = FALSE))),
                   c(4L, 2L))
  boot <- fr_bootstrap(fit, nsim = 20, seed = 1)
  expect_error(print(boot, digits = 2), "print\\(\\) does not take `digits`")
})

test_that("the default confint: Wald fixed effects, scaled chi-square variance components, methods named", {
  fit <- fr_fit(distance ~ bow + (1 | archer), data = simulate_archers(seed = 1))
  ci <- confint(fit)
  expect_identical(rownames(ci), c("sd_(Intercept)|archer", "sigma", names(fixef(fit))))
  expect_identical(unname(attr(ci, "method")),
                   c(rep("scaled chi-square (df = 2 v^2 / se^2), normal-theory SE", 2L), rep("Wald (GLS vcov)", 2L)))
  se <- sqrt(diag(vcov(fit)))
  expect_equal(unname(ci[names(se), 1L]), unname(fixef(fit) - qnorm(0.975) * se))
  v <- fit$theta
  s <- sqrt(diag(fullrandom:::moment_vcov_normal(fit)))[names(v)]
  # Directly from the chi-square quantiles: v / var ~ chi2_df / df, df = 2 v^2 / se^2.
  df <- 2 * v^2 / s^2
  expect_equal(unname(ci[1:2, 1L]), unname(sqrt(df * v / qchisq(0.975, df))))
  expect_equal(unname(ci[1:2, 2L]), unname(sqrt(df * v / qchisq(0.025, df))))
  expect_true(all(ci[1:2, 1L] < sqrt(v) & sqrt(v) < ci[1:2, 2L]))
  # The chi-square is skewed: the upper limit lies further from the estimate than the lower.
  expect_true(all(ci[1:2, 2L]^2 - v > v - ci[1:2, 1L]^2))
  # Another level: its quantiles.
  ci90 <- confint(fit, level = 0.9)
  expect_equal(unname(ci90[1:2, 2L]), unname(sqrt(df * v / qchisq(0.05, df))))
  # Fixed effects alone need no standard errors of the components.
  expect_identical(unname(attr(confint(fit, parm = "beta_"), "method")), rep("Wald (GLS vcov)", 2L))
  # Bootstrap arguments without a method select the bootstrap, as before.
  expect_identical(unname(attr(confint(fit, nsim = 100, seed = 1, progress = FALSE), "method"))[1],
                   "bootstrap percentile")
  # Efficient fits: REML's normal-theory sds.
  eff <- fr_fit(distance ~ bow + (1 | archer), data = simulate_archers(seed = 1), method = "efficient")
  expect_match(attr(confint(eff), "method")[[1]], "normal-theory")
})

test_that("the analytic standard errors of a one-way fit equal the cluster-robust formula", {
  set.seed(3)
  d <- data.frame(g = factor(rep(1:30, 1 + rpois(30, 5))))
  d$y <- rnorm(30)[d$g] + rnorm(nrow(d))
  fit <- fr_fit(y ~ 1 + (1 | g), data = d)
  r <- d$y - mean(d$y)
  n_g <- as.vector(table(d$g))[d$g]
  s2 <- fit$theta_raw[["Residual"]]; sa <- fit$theta_raw[["g"]]
  psi0 <- r^2 - (s2 + sa)
  psi1 <- r * (r - ave(r, d$g)) - s2 * (1 - 1 / n_g)
  meat <- crossprod(rowsum(cbind(psi0, psi1), d$g))
  inv <- solve(fit$moment_equations$lhs)
  expect_equal(unname(fullrandom:::moment_vcov(fit)), unname(inv %*% meat %*% t(inv)))
})

test_that("the normal-theory covariance of the moment estimates matches 2 tr(B_m V B_n V) computed densely", {
  set.seed(5)
  n <- 150
  d <- data.frame(a = factor(sample(10, n, TRUE)), b = factor(sample(7, n, TRUE)), x = rnorm(n))
  d$y <- d$x + rnorm(10)[d$a] + rnorm(7)[d$b] + rnorm(n)
  fit <- fr_fit(y ~ x + (1 | a) + (1 | b), data = d)
  x <- cbind(1, d$x)
  m <- diag(n) - x %*% solve(crossprod(x), t(x))
  za <- model.matrix(~ 0 + a, d); zb <- model.matrix(~ 0 + b, d)
  th <- fit$theta
  v <- th[["Residual"]] * diag(n) + th[["a"]] * tcrossprod(za) + th[["b"]] * tcrossprod(zb)
  proj <- function(z) z %*% solve(crossprod(z), t(z))
  b <- list(m, m %*% (diag(n) - proj(za)) %*% m, m %*% (diag(n) - proj(zb)) %*% m)
  vq <- outer(1:3, 1:3, Vectorize(function(i, j) 2 * sum(diag(b[[i]] %*% v %*% b[[j]] %*% v))))
  inv <- solve(fit$moment_equations$lhs)
  exact <- diag(inv %*% vq %*% t(inv))
  est <- fullrandom:::moment_vcov_normal(fit, probes = 400L)
  expect_true(all(abs(diag(est) - exact) <= 5 * attr(est, "probe_se")))
  expect_true(all(attr(est, "probe_se") < 0.05 * exact))
})

test_that("the default confint reaches zero for a variance estimated near or at zero", {
  set.seed(4)
  d <- data.frame(a = factor(sample(20, 300, TRUE)), b = factor(sample(15, 300, TRUE)))
  d$y <- rnorm(20)[d$a] + rnorm(300)
  fit <- fr_fit(y ~ 1 + (1 | a) + (1 | b), d)
  ci <- confint(fit)
  expect_identical(ci[["sd_(Intercept)|b", 1L]], 0)
  expect_match(attr(ci, "method")[["sd_(Intercept)|b"]], "lower limit 0|at zero")
  expect_gt(ci[["sd_(Intercept)|a", 1L]], 0)
  expect_match(attr(ci, "method")[["sd_(Intercept)|a"]], "^scaled chi-square")
})

test_that("variance limits at and near the boundary: zero, within z se of zero, and away from it", {
  probs <- c(0.025, 0.975)
  z <- qnorm(0.975)
  # v, raw, se: at zero (raw negative, and raw positive below the boundary rule's cut), near
  # zero (v < z se), and away (a chi-square with df = 2 * 0.5^2 / 0.1^2 = 50).
  a <- fullrandom:::variance_limits(v = c(0, 0, 0.1, 0.5), raw = c(-0.05, 0.02, 0.1, 0.5),
                                    se = c(0.2, 0.2, 0.2, 0.1), probs = probs)
  expect_equal(a$limits[1, ], c(0, sqrt(z * 0.2)))
  expect_equal(a$limits[2, ], c(0, sqrt(0.02 + z * 0.2)))
  expect_match(a$method[1:2], "at zero")
  # Within z se of zero the chi-square's df (here 0.5) would give an upper sd of 300; the Wald
  # interval on the variance scale instead.
  expect_equal(a$limits[3, ], c(0, sqrt(0.1 + z * 0.2)))
  expect_identical(a$method[3], "Wald (variance scale), normal-theory SE, lower limit 0 (estimate within z se of zero)")
  expect_gt(sqrt(0.5 * 0.1 / qchisq(0.025, 0.5)), 300)
  expect_equal(a$limits[4, ], sqrt(50 * 0.5 / qchisq(c(0.975, 0.025), 50)))
  expect_identical(a$method[4], "scaled chi-square (df = 2 v^2 / se^2), normal-theory SE")
  # The log rule is still there for the measurements, and differs.
  b <- fullrandom:::variance_limits(0.5, 0.5, 0.1, probs, rule = "log")
  expect_equal(b$limits[1, ], sqrt(0.5 * exp(c(-z, z) * 0.1 / 0.5)))
  expect_false(isTRUE(all.equal(b$limits[1, ], a$limits[4, ])))
  # A fit with a term at zero: [0, sqrt(max(raw, 0) + z se)] from its own standard error.
  set.seed(9)
  d <- data.frame(a = factor(sample(25, 400, TRUE)), b = factor(sample(12, 400, TRUE)))
  for (seed in 1:50) {
    set.seed(seed)
    d$y <- rnorm(25)[d$a] + rnorm(400)
    fit <- suppressMessages(fr_fit(y ~ 1 + (1 | a) + (1 | b), d))
    if (fit$theta[["b"]] == 0) break
  }
  expect_identical(fit$theta[["b"]], 0)
  ci <- confint(fit)
  s <- sqrt(diag(fullrandom:::moment_vcov_normal(fit)))[["b"]]
  expect_equal(ci[["sd_(Intercept)|b", 2L]], sqrt(max(fit$theta_raw[["b"]], 0) + z * s))
  expect_identical(ci[["sd_(Intercept)|b", 1L]], 0)
  expect_match(attr(ci, "method")[["sd_(Intercept)|b"]], "at zero")
})
