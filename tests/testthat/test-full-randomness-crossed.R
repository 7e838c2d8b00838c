# method = "fr" for two crossed random intercepts (the paper's model 7, with regressors
# model 10), checked against a direct evaluation of the derived equations on raw data:
#   Var(Y) = s2_a + s2_b + s2_e + Var(h)
#   Var(S) = (nu2 + nu1^2) s2_a + (kappa_r - [tau_r]) s2_b + nu1 s2_e + Var(F)
#   Var(C) = (kappa_c - [tau_c]) s2_a + (lambda2 + lambda1^2) s2_b + lambda1 s2_e + Var(G)

pvar <- function(v) mean((v - mean(v))^2)

# The equations on raw data, solved for (s2_a, s2_b, s2_e); `ystar` is the response with
# the ordinary regressors removed, `h` the intercept and size() part of the mean. With
# `shared`, tau is the mean over pairs of distinct rows of T = shared columns (eq. 27),
# from the incidence table.
crossed_direct <- function(ystar, u, v, h, shared = FALSE) {
  u <- droplevels(u)
  v <- droplevels(v)
  tab <- unclass(table(u, v))
  N <- rowSums(tab)
  M <- colSums(tab)
  r <- length(N)
  cc <- length(M)
  T_rows <- tcrossprod(tab)
  T_cols <- crossprod(tab)
  tau_r <- if (shared) (sum(T_rows) - sum(diag(T_rows))) / (r * (r - 1)) else 0
  tau_c <- if (shared) (sum(T_cols) - sum(diag(T_cols))) / (cc * (cc - 1)) else 0
  A <- rbind(c(1, 1, 1),
             c(pvar(N) + mean(N)^2, sum(tab^2) / r - tau_r, mean(N)),
             c(sum(tab^2) / cc - tau_c, pvar(M) + mean(M)^2, mean(M)))
  q <- c(pvar(ystar) - pvar(h),
         pvar(tapply(ystar, u, sum)) - pvar(tapply(h, u, sum)),
         pvar(tapply(ystar, v, sum)) - pvar(tapply(h, v, sum)))
  stats::setNames(solve(A, q), c("user", "item", "Residual"))
}

ratings_data <- function(seed, n = 600, n_users = 50, n_items = 30, distinct = TRUE) {
  with_local_seed(seed, {
    d <- simulate_crossed(n, n_users = n_users, n_items = n_items, user_exponent = 0.8,
                          item_exponent = 0.6)
    if (distinct) d <- d[!duplicated(d[c("user", "item")]), ]
    d$u <- rnorm(n_users)[as.integer(d$user)]   # user-level
    d$v <- rnorm(n_items)[as.integer(d$item)]   # item-level
    d$y <- d$y + 0.5 * d$u - 0.3 * d$v
    d
  })
}

test_that("model (7): the estimates equal the derived equations on raw data", {
  for (seed in 1:4) for (distinct in c(TRUE, FALSE)) for (shared in c(FALSE, TRUE)) {
    d <- ratings_data(seed, distinct = distinct)
    fit <- suppressMessages(fr_fit(y ~ 1 + (1 | user) + (1 | item), d, method = "fr",
                                   fr_shared = shared))
    mu <- mean(d$y)
    want <- crossed_direct(d$y, d$user, d$item, rep(mu, nrow(d)), shared)
    expect_equal(fit$theta_raw, want, tolerance = 1e-10)
    expect_true(fit$fr$crossed)
    expect_identical(fit$fr$shared, shared)
    N <- as.numeric(table(droplevels(d$user)))
    expect_equal(fit$fr$count_distributions["user", "mean"], mean(N), tolerance = 1e-14)
    expect_equal(fit$fr$count_distributions["item", "variance"],
                 pvar(as.numeric(table(droplevels(d$item)))), tolerance = 1e-12)
    if (distinct) expect_equal(fit$fr$repeats[["user"]], mean(N), tolerance = 1e-14)
    expect_identical(rownames(fit$moment_equations$lhs), c("Var(Y)", "Var(S_user)", "Var(S_item)"))
  }
})

test_that("model (10): user-, item- and row-level regressors by least squares first (eq. 19)", {
  for (seed in 5:7) for (shared in c(FALSE, TRUE)) {
    d <- ratings_data(seed, distinct = seed != 6)
    fit <- suppressMessages(fr_fit(y ~ x + u + v + (1 | user) + (1 | item), d, method = "fr",
                                   fr_shared = shared))
    b <- stats::coef(stats::lm(y ~ x + u + v, d))
    expect_equal(fit$fr$coef_in_equations, b, tolerance = 1e-10)
    ystar <- d$y - b[["x"]] * d$x - b[["u"]] * d$u - b[["v"]] * d$v
    want <- crossed_direct(ystar, d$user, d$item, rep(b[["(Intercept)"]], nrow(d)), shared)
    expect_equal(fit$theta_raw, want, tolerance = 1e-10)
  }
})

test_that("size(user) and size(item) are part of h, with OLS coefficients", {
  d <- ratings_data(8, distinct = FALSE)
  fit <- suppressMessages(fr_fit(y ~ x + size(user) + log(size(item)) + (1 | user) + (1 | item),
                                 d, method = "fr"))
  expect_identical(fit$fr$size_columns, c("size(user)", "log(size(item))"))
  N <- size(d$user)
  M <- size(d$item)
  b <- stats::coef(stats::lm(d$y ~ d$x + N + log(M)))
  expect_equal(unname(fit$fr$coef_in_equations), unname(b), tolerance = 1e-10)
  h <- b[[1]] + b[[3]] * N + b[[4]] * log(M)
  want <- crossed_direct(d$y - b[[2]] * d$x, d$user, d$item, h)
  expect_equal(fit$theta_raw, want, tolerance = 1e-10)
})

test_that("fr_centred: the equations of the least-squares residuals, on raw data", {
  for (seed in 11:13) for (shared in c(FALSE, TRUE)) {
    d <- ratings_data(seed, distinct = seed != 12)
    fit <- suppressMessages(fr_fit(y ~ x + u + v + (1 | user) + (1 | item), d, method = "fr",
                                   fr_shared = shared, fr_centred = TRUE))
    e <- stats::residuals(stats::lm(y ~ x + u + v, d))
    # Residuals with mean zero: no Var(h), Var(F) or Var(G) in the equations.
    want <- crossed_direct(e, d$user, d$item, rep(0, nrow(d)), shared)
    expect_equal(fit$theta_raw, want, tolerance = 1e-10)
    expect_true(fit$fr$centred)
    # The same as the paper's equations fitted to the residuals themselves ...
    d$e <- e
    on_residuals <- suppressMessages(fr_fit(e ~ 1 + (1 | user) + (1 | item), d, method = "fr",
                                            fr_shared = shared))
    expect_equal(fit$theta_raw, on_residuals$theta_raw, tolerance = 1e-10)
    # ... and invariant to the location of the response, which the uncentred fit is not.
    shifted <- suppressMessages(fr_fit(I(y + 50) ~ x + u + v + (1 | user) + (1 | item), d, method = "fr",
                                       fr_shared = shared, fr_centred = TRUE))
    expect_equal(shifted$theta_raw, fit$theta_raw, tolerance = 1e-8)
    plain <- suppressMessages(fr_fit(y ~ x + u + v + (1 | user) + (1 | item), d, method = "fr",
                                     fr_shared = shared))
    plain_shifted <- suppressMessages(fr_fit(I(y + 50) ~ x + u + v + (1 | user) + (1 | item), d,
                                             method = "fr", fr_shared = shared))
    expect_gt(max(abs(plain_shifted$theta_raw - plain$theta_raw)), 1e-3)
  }
  # With size() columns: removed with the other regressors.
  d <- ratings_data(14, distinct = FALSE)
  fit <- suppressMessages(fr_fit(y ~ x + size(user) + log(size(item)) + (1 | user) + (1 | item), d,
                                 method = "fr", fr_centred = TRUE))
  N <- size(d$user)
  M <- size(d$item)
  e <- stats::residuals(stats::lm(d$y ~ d$x + N + log(M)))
  expect_equal(fit$theta_raw, crossed_direct(e, d$user, d$item, rep(0, nrow(d))), tolerance = 1e-10)
  expect_output(print(fit), "least-squares residuals \\(fr_centred = TRUE\\)")
  boot <- suppressMessages(fr_bootstrap(fit, nsim = 4, seed = 1, threads = 1))
  expect_true(all(is.finite(as.matrix(boot[, 1:3]))))
  expect_error(fr_fit(y ~ x + (1 | user) + (1 | item), d, fr_centred = TRUE), "method = \"moments\"")
  expect_error(fr_fit(y ~ x + (1 | user) + (1 | item), d, method = "fr", fr_centred = "yes"),
               "`fr_centred` must be TRUE or FALSE")
})

test_that("fr_centred for one term: eqs. 17 and 18 of the residuals", {
  d <- ratings_data(15)
  fit <- suppressMessages(fr_fit(y ~ x + (1 | user), d, method = "fr", fr_centred = TRUE))
  e <- stats::residuals(stats::lm(y ~ x, d))
  S <- tapply(e, droplevels(d$user), sum)
  N <- as.numeric(table(droplevels(d$user)))
  A <- rbind(c(1, 1), c(pvar(N) + mean(N)^2, mean(N)))
  want <- solve(A, c(pvar(e), pvar(S)))
  expect_equal(unname(fit$theta_raw), want, tolerance = 1e-10)
})

test_that("chunks: exact merges equal the whole fit; '.order' chunks are consecutive blocks", {
  d <- ratings_data(9, n = 2000, n_users = 80, n_items = 40)
  whole <- suppressMessages(fr_fit(y ~ x + (1 | user) + (1 | item), d, method = "fr"))
  exact <- suppressMessages(fr_fit(y ~ x + (1 | user) + (1 | item), d, method = "fr",
                                   chunks = 3, chunk_by = ".order"))
  expect_equal(exact$theta_raw, whole$theta_raw, tolerance = 1e-10)
  expect_identical(exact$chunks$sizes, as.numeric(diff(floor(seq(0, nrow(d), length.out = 4)))))
  expect_warning(
    avg <- suppressMessages(fr_fit(y ~ x + (1 | user) + (1 | item), d, method = "fr", chunks = 4,
                                   chunk_by = ".order", combine = "average")),
    "not independent")
  blocks <- split(d, rep(1:4, each = nrow(d) / 4))
  per_block <- sapply(blocks, function(b) {
    suppressMessages(fr_fit(y ~ x + (1 | user) + (1 | item), b, method = "fr"))$theta
  })
  expect_equal(unname(avg$theta), unname(rowMeans(per_block)), tolerance = 1e-10)
  expect_identical(avg$method, "fr")
  expect_equal(unname(sqrt(diag(avg$alchemy$vcov))[1:3]),
               unname(apply(per_block, 1, sd) / 2), tolerance = 1e-10)
  expect_output(print(avg), "consecutive blocks of the row order")
  expect_error(fr_fit(y ~ x + (1 | user) + (1 | item), d, method = "fr", chunk_by = "x"),
               "\\.order")
})

test_that("print, summary and the bootstrap of a crossed FR fit", {
  d <- ratings_data(10, n = 1500, n_users = 60, n_items = 35)
  fit <- suppressMessages(fr_fit(y ~ x + (1 | user) + (1 | item), d, method = "fr"))
  out <- capture.output(print(fit))
  expect_match(out[1], "Matloff's Full Randomness moments", fixed = TRUE)
  expect_true(any(grepl("^Counts of user: 60 levels", out)))
  expect_true(any(grepl("^Counts of item: 35 levels", out)))
  expect_true(any(grepl("Full Randomness", capture.output(summary(fit)))))
  shared <- suppressMessages(fr_fit(y ~ x + (1 | user) + (1 | item), d, method = "fr", fr_shared = TRUE))
  expect_true(any(grepl("Shared levels \\(eq. 27\\)", capture.output(print(shared)))))
  boot <- suppressMessages(fr_bootstrap(shared, nsim = 8, seed = 1, threads = 1))
  expect_identical(nrow(boot), 8L)
  expect_true(all(is.finite(as.matrix(boot[, 1:3]))))
  expect_error(fr_fit(y ~ x + (1 | user) + (1 | item), d, method = "fr", fr_shared = NA), "TRUE or FALSE")
  expect_error(fr_fit(y ~ x + (1 | user) + (1 | item), d, fr_shared = TRUE), "method = \"moments\"")
  expect_error(fr_fit(y ~ x + (1 | user), d, method = "fr", fr_shared = TRUE), "one random term")
})

test_that("nesting in the data is refused with a clear error", {
  d <- data.frame(user = factor(rep(1:20, each = 6)), item = factor(rep(1:60, each = 2)))
  d$y <- with_local_seed(1, rnorm(nrow(d)))
  expect_error(fr_fit(y ~ 1 + (1 | user) + (1 | item), d, method = "fr"),
               "every level of \\(1 \\| item\\) occurs with a single level of \\(1 \\| user\\).*nested")
})
