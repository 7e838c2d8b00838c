# GLMM fits in chunks (combine = "exact" and "average", threads and the future
# backend), progress reports and interrupts.

glmm_chunk_data <- function(n = 6000, seed = 21) {
  d <- simulate_crossed(n, n_users = 150, n_items = 60, user_exponent = 0.6, item_exponent = 0.6,
                        intercept = -0.5, family = binomial, size = 4, seed = seed)
  set.seed(seed)
  d$t <- stats::runif(n, 0.5, 2)
  d$count <- stats::rpois(n, d$t * exp(0.2 + 0.3 * d$x + 0.5 * (d$y - 2)))
  d$click <- as.integer(d$y > 2)
  d
}

# Largest relative difference of the variances and fixed effects of two GLMM fits, and
# of their covariances and modes (matched by level label). The covariances use the
# core's finite-difference Jacobians (steps 1e-5 and 1e-6), which turn rounding
# differences of 1e-16 in the merged sums into about 1e-8: they are compared to 1e-7.
glmm_fit_difference <- function(a, b) {
  rel <- function(u, v) max(abs(u - v) / pmax(abs(v), 1e-8 * max(abs(v))))
  max(rel(a$theta, b$theta), rel(fixef(a), fixef(b)))
}
glmm_solution_difference <- function(a, b) {
  rel <- function(u, v) max(abs(u - v) / pmax(abs(v), 1e-8 * max(abs(v))))
  modes <- vapply(names(b$ranef_values), function(k) {
    rel(a$ranef_values[[k]][names(b$ranef_values[[k]])], b$ranef_values[[k]])
  }, 1)
  max(rel(vcov(a), vcov(b)), rel(a$vcov_sandwich, b$vcov_sandwich), rel(a$vcov_theta, b$vcov_theta), modes)
}

glmm_forms <- list(
  bernoulli = list(formula = click ~ x + (1 | user) + (1 | item), family = "binomial"),
  trials = list(formula = cbind(y, size - y) ~ x + (1 | user) + (1 | item), family = "binomial"),
  poisson = list(formula = count ~ x + offset(log(t)) + (1 | user) + (1 | item), family = "poisson")
)

test_that("exact GLMM chunks equal the whole fit for 2 and 7 chunks, at random and by user", {
  d <- glmm_chunk_data(n = 4000)
  for (name in names(glmm_forms)) {
    case <- glmm_forms[[name]]
    whole <- fr_fit(case$formula, d, family = case$family, threads = 2)
    for (g in c(2, 7)) {
      for (by in if (name == "bernoulli") list(NULL, "user") else list(NULL)) {
        chunked <- fr_fit(case$formula, d, family = case$family, chunks = g, chunk_by = by, seed = 1, threads = 2)
        expect_lt(glmm_fit_difference(chunked, whole), 1e-10)
        expect_lt(glmm_solution_difference(chunked, whole), 1e-7)
        expect_equal(unname(fitted(chunked)), unname(fitted(whole)), tolerance = 1e-10)
        expect_identical(chunked$chunks$chunks, as.integer(g))
        expect_identical(sum(chunked$chunks$sizes), nrow(d))
        expect_identical(chunked$chunks$combine, "exact")
      }
    }
  }
  # The chunks line of print() and summary().
  fit <- fr_fit(click ~ x + (1 | user) + (1 | item), d, family = binomial, chunks = 3, seed = 1)
  expect_output(print(fit), "Chunks: 3 \\(passes over all chunks, exact, backend \"threads\"\\)")
  expect_output(print(summary(fit)), "Chunks: 3")
  # One chunk is the whole fit too; more chunks than rows is an error.
  expect_lt(glmm_fit_difference(fr_fit(click ~ x + (1 | user) + (1 | item), d, family = binomial, chunks = 1),
                                fr_fit(click ~ x + (1 | user) + (1 | item), d, family = binomial)), 1e-10)
  expect_error(fr_fit(click ~ x + (1 | user) + (1 | item), d[1:20, ], family = binomial, chunks = 30),
               "30 chunks for 20 observations")
  expect_error(fr_fit(click ~ x + (1 | user) + (1 | item), d, family = binomial, chunks = 2, chunk_by = "x"),
               "`chunk_by` must be \".order\" or name the grouping variable of a random term")
})

test_that("the likelihood fit (method = \"efficient\") is exact over chunks", {
  d <- glmm_chunk_data(n = 1500)
  whole <- fr_fit(click ~ x + (1 | user), d, family = binomial, method = "efficient")
  expect_identical(whole$method, "efficient")
  for (g in c(2, 7)) {
    chunked <- fr_fit(click ~ x + (1 | user), d, family = binomial, chunks = g, seed = 1, method = "efficient")
    expect_identical(chunked$method, "efficient")
    expect_lt(glmm_fit_difference(chunked, whole), 1e-8)
    expect_equal(unname(fitted(chunked)), unname(fitted(whole)), tolerance = 1e-8)
  }
  # The average of chunk fits by user: each chunk fitted by the likelihood too.
  avg <- fr_fit(click ~ x + (1 | user), d, family = binomial, chunks = 3, chunk_by = "user", combine = "average",
                method = "efficient")
  expect_identical(avg$method, "efficient")
  expect_equal(unname(avg$theta), unname(colMeans(avg$alchemy$estimates[, "user", drop = FALSE])), tolerance = 1e-12)
})

test_that("combine = \"average\" averages the chunk fits, with vcov from their covariances", {
  d <- glmm_chunk_data(n = 9000)
  form <- click ~ x + (1 | user) + (1 | item)
  expect_warning(avg <- fr_fit(form, d, family = binomial, chunks = 3, chunk_by = ".order", combine = "average"),
                 "chunks of rows \\(at random or in their order\\) share the levels")
  # Consecutive blocks: each is fitted on its own by fr_fit() as well.
  blocks <- split(seq_len(nrow(d)), rep(1:3, each = 3000))
  fits <- lapply(blocks, function(rows) fr_fit(form, d[rows, ], family = binomial))
  expect_equal(unname(avg$alchemy$estimates[, c("user", "item")]),
               unname(do.call(rbind, lapply(fits, function(f) f$theta[c("user", "item")]))), tolerance = 1e-10)
  expect_equal(fixef(avg), colMeans(do.call(rbind, lapply(fits, fixef))), tolerance = 1e-10)
  expect_equal(avg$theta, colMeans(do.call(rbind, lapply(fits, function(f) f$theta[c("user", "item")]))),
               tolerance = 1e-10)
  # vcov(): the covariance of the mean of three independent estimates.
  expect_equal(unname(vcov(avg)), unname(Reduce(`+`, lapply(fits, vcov)) / 9), tolerance = 1e-10)
  expect_equal(unname(avg$alchemy$vcov), unname(stats::cov(avg$alchemy$estimates) / 3))
  # The modes over all rows at the averaged estimates, close to the whole fit's.
  whole <- fr_fit(form, d, family = binomial)
  expect_gt(stats::cor(ranef(avg)$user[, 1], ranef(whole)$user[rownames(ranef(avg)$user), 1]), 0.97)
  expect_output(print(avg), "estimates averaged, Software Alchemy, consecutive blocks of the row order")
  # By user, no warning; a chunk that cannot be fitted is named.
  expect_silent(fr_fit(form, d, family = binomial, chunks = 2, chunk_by = "user", seed = 2, combine = "average"))
  bad <- d
  bad$click[4501:9000] <- 0L
  expect_error(suppressWarnings(fr_fit(form, bad, family = binomial, chunks = 2, chunk_by = ".order",
                                       combine = "average")),
               "chunk 2 failed: the response is all 0")
})

test_that("the future backend gives the exact GLMM fit and the same average", {
  skip_if_not_installed("future.apply")
  skip_on_cran()
  d <- glmm_chunk_data(n = 4000)
  form <- cbind(y, size - y) ~ x + (1 | user) + (1 | item)
  whole <- fr_fit(form, d, family = binomial, threads = 1)
  avg <- fr_fit(form, d, family = binomial, chunks = 3, chunk_by = "user", seed = 4, combine = "average")
  old <- future::plan(future::multisession, workers = 2)
  on.exit(future::plan(old), add = TRUE)
  for (g in c(2, 7)) {
    fit <- fr_fit(form, d, family = binomial, chunks = g, seed = 1, backend = "future")
    expect_lt(glmm_fit_difference(fit, whole), 1e-10)
    expect_identical(fit$chunks$backend, "future")
  }
  on_workers <- fr_fit(form, d, family = binomial, chunks = 3, chunk_by = "user", seed = 4, combine = "average",
                       backend = "future")
  expect_lt(glmm_fit_difference(on_workers, avg), 1e-10)
  expect_lt(glmm_solution_difference(on_workers, avg), 1e-7)
  # Files read on the workers.
  dir <- withr::local_tempdir()
  paths <- file.path(dir, sprintf("part%d.rds", 1:3))
  part <- rep_len(1:3, nrow(d))
  for (i in 1:3) saveRDS(d[part == i, ], paths[[i]])
  expect_lt(glmm_fit_difference(fr_fit(form, paths, family = binomial, backend = "future"), whole), 1e-10)
})

test_that("a list of data frames and files give the exact GLMM fit, levels matched by label", {
  d <- glmm_chunk_data(n = 3000)
  d$user <- as.character(d$user)
  form <- count ~ x + offset(log(t)) + (1 | user) + (1 | item)
  whole <- fr_fit(form, d, family = poisson)
  set.seed(8)
  part <- sample(rep_len(1:4, nrow(d)))
  # Each data frame has its own level sets and an extra column the fit does not use.
  pieces <- lapply(split(d, part), function(p) transform(p, item = droplevels(item), unused = "z"))
  from_list <- fr_fit(form, unname(pieces), family = poisson)
  expect_lt(glmm_fit_difference(from_list, whole), 1e-10)
  expect_lt(glmm_solution_difference(from_list, whole), 1e-7)
  expect_identical(from_list$chunks$chunks, 4L)
  expect_identical(from_list$chunks$sizes, as.integer(table(part)))
  expect_identical(nobs(from_list), nrow(d))
  dir <- withr::local_tempdir()
  paths <- file.path(dir, c("a.csv", "b.rds", "c.csv"))
  part <- rep_len(1:3, nrow(d))
  utils::write.csv(d[part == 1, ], paths[[1]], row.names = FALSE)
  saveRDS(d[part == 2, ], paths[[2]])
  utils::write.csv(d[part == 3, ], paths[[3]], row.names = FALSE)
  skip_if_not_installed("data.table")
  from_files <- fr_fit(form, paths, family = poisson)
  # CSV keeps 15 significant digits of x: the Laplace fit moves by about 1e-10.
  expect_lt(glmm_fit_difference(from_files, whole), 1e-9)
  expect_equal(unname(sort(fitted(from_files))), unname(sort(fitted(whole))), tolerance = 1e-9)
  expect_warning(avg <- fr_fit(form, paths, family = poisson, combine = "average"), "share the levels")
  expect_identical(nrow(avg$alchemy$estimates), 3L)
  expect_error(fr_fit(form, list(d, d[, names(d) != "x"]), family = poisson), "chunk 1 lacks column 'x', which other chunks have|chunk 2 lacks column 'x'")
  expect_error(fr_fit(form, unname(pieces), family = poisson, chunks = 2), "`chunks` is set by the data: 4 data frames")
  expect_error(fr_fit(form, paths[c(1, 1)], family = poisson), "is given more than once")
})

test_that("long GLMM fits report progress to R and stop on a user interrupt", {
  d <- glmm_chunk_data(n = 40000)
  family <- binomial()
  model <- glmm_core_model(as.double(d$click), list(NULL, d$x), c("(Intercept)", "x"),
                           list(user = d$user, item = d$item))
  # The core calls the progress function at its first check, then at most every 0.2 s:
  # with a callback slower than that, at every check (however fast the machine).
  steps <- integer()
  slow <- function(s) {
    steps <<- c(steps, s)
    Sys.sleep(0.25)
    NULL
  }
  out <- fr_glmm_fit_chunks(list(model), "binomial", "logit", list(NULL), list(NULL), FALSE, TRUE, "moments", TRUE, 1L, slow)
  plain <- fr_glmm_fit_chunks(list(model), "binomial", "logit", list(NULL), list(NULL), FALSE, TRUE, "moments", TRUE, 1L, NULL)
  expect_gt(length(steps), 2)
  expect_true(all(diff(steps) > 0))
  expect_identical(out$coef, plain$coef)
  # The progress bar: off by option, on with cli when asked; a bad option is an error.
  withr::local_options(fullrandom.progress = FALSE)
  expect_null(glmm_progress_reporter("GLMM fit by moments"))
  withr::local_options(fullrandom.progress = TRUE)
  skip_if_not_installed("cli")
  expect_true(is.function(glmm_progress_reporter("GLMM fit by moments")))
  # The bar names the estimator.
  expect_identical(glmm_method_label("moments"), "GLMM fit by moments")
  expect_identical(glmm_method_label("efficient"), "GLMM fit by likelihood (adaptive quadrature)")
  expect_identical(glmm_method_label("laplace"), "GLMM fit by likelihood (Laplace approximation)")
  fit <- fr_fit(click ~ x + (1 | user) + (1 | item), d, family = binomial, method = "moments")
  expect_identical(unname(fixef(fit)), plain$coef)
  withr::local_options(fullrandom.progress = "yes")
  expect_error(fr_fit(click ~ x + (1 | user) + (1 | item), d, family = binomial),
               "option `fullrandom.progress` must be TRUE or FALSE")
  # A user interrupt (SIGINT, as Ctrl-C sends it) between two passes stops the fit with
  # an error, and R goes on.
  skip_on_os("windows")
  run <- run_in_fresh_process(c(
    "d <- simulate_crossed(1e5, family = binomial, seed = 1)",
    "model <- fullrandom:::glmm_core_model(as.double(d$y), list(NULL, d$x), c('(Intercept)', 'x'),",
    "  list(user = d$user, item = d$item))",
    "calls <- 0",
    "r <- tryCatch(fullrandom:::fr_glmm_fit_chunks(list(model), 'binomial', 'logit', list(NULL), list(NULL),",
    "  FALSE, TRUE, 'moments', TRUE, 1L, function(s) { calls <<- calls + 1; tools::pskill(Sys.getpid(), tools::SIGINT); NULL }),",
    "  error = function(e) paste('ERROR:', conditionMessage(e)))",
    "cat(r, 'after', calls, 'call\\n')"
  ), timeout = 120)
  expect_identical(run$status, 0L, info = run$output)
  expect_match(run$output, "ERROR: interrupted by the user after 1 call", fixed = TRUE)
})
