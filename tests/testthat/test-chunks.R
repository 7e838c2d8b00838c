crossed_chunk_data <- function(n = 3000, seed = 11) {
  set.seed(seed)
  users <- 120
  items <- 40
  user <- sample(users, n, replace = TRUE, prob = 1 / seq_len(users))
  item <- sample(items, n, replace = TRUE, prob = 1 / sqrt(seq_len(items)))
  x <- rnorm(n) + rnorm(users)[user] / 2
  f <- sample(c("lo", "mid", "hi"), n, replace = TRUE)
  y <- 2 + 0.5 * x + c(lo = 0, mid = 0.3, hi = -0.4)[f] + rnorm(users, sd = 0.8)[user] +
    rnorm(items, sd = 0.5)[item] + rnorm(n)
  data.frame(y = y, x = x, f = factor(f, levels = c("lo", "mid", "hi")),
             user = paste0("u", user), item = item)
}

# Largest relative difference of two fits' estimates: the variance components and the
# fixed effects (GLS).
fit_difference <- function(a, b) {
  max(relative_difference(a$theta, b$theta), relative_difference(fixef(a), fixef(b)))
}

relative_difference <- function(u, v) max(abs(u - v) / pmax(abs(v), 1e-8 * max(abs(v))))

# The same for the BLUPs (matched by level label) and the covariance of the fixed
# effects, which come from an iterative solve to a relative residual of 1e-10.
solution_difference <- function(a, b) {
  blups <- vapply(names(b$ranef_values), function(k) {
    relative_difference(a$ranef_values[[k]][names(b$ranef_values[[k]])], b$ranef_values[[k]])
  }, 1)
  max(relative_difference(vcov(a), vcov(b)), blups)
}

form <- y ~ x + f + (1 | user) + (1 | item)

test_that("exact chunks equal the whole fit, with threads, for 2 and 7 chunks", {
  d <- crossed_chunk_data()
  whole <- fr_fit(form, d, threads = 2)
  for (g in c(2, 7)) {
    for (by in list(NULL, "user")) {
      chunked <- fr_fit(form, d, chunks = g, chunk_by = by, seed = 1, threads = 2)
      expect_lt(fit_difference(chunked, whole), 1e-10)
      expect_lt(solution_difference(chunked, whole), 1e-8)
      expect_equal(unname(fitted(chunked)), unname(fitted(whole)), tolerance = 1e-9)
      expect_identical(chunked$chunks$chunks, as.integer(g))
      expect_identical(ngrps(chunked), ngrps(whole))
      expect_identical(nobs(chunked), nobs(whole))
    }
  }
})

test_that("a list of data frames and files give the whole fit, levels matched by label", {
  d <- crossed_chunk_data()
  whole <- fr_fit(form, d, threads = 2)
  set.seed(3)
  part <- sample(rep_len(1:8, nrow(d)))
  # Chunks with their own level sets: the user codes are characters, so each chunk's
  # factor has only its own levels, in its own order.
  pieces <- split(d, part)
  from_list <- fr_fit(form, unname(pieces))
  expect_lt(fit_difference(from_list, whole), 1e-10)
  expect_lt(solution_difference(from_list, whole), 1e-8)
  expect_identical(levels(from_list$flist$user), levels(whole$flist$user))
  expect_identical(levels(from_list$flist$item), levels(whole$flist$item))
  # A factor grouping variable keeps its level order (here not the sorted one).
  d2 <- transform(d, user = factor(user, levels = rev(sort(unique(user)))))
  pieces2 <- unname(split(d2, part))
  expect_identical(levels(fr_fit(form, pieces2)$flist$user), levels(fr_fit(form, d2)$flist$user))
  # A fixed-effect factor keeps its level order when the chunks hold different levels of it.
  by_level <- unname(split(d, d$f == "mid" | (d$f == "hi" & part > 4)))
  expect_identical(lapply(by_level, function(p) sort(unique(as.character(p$f)))),
                   list(c("hi", "lo"), c("hi", "mid")))
  from_levels <- fr_fit(form, by_level)
  expect_identical(names(fixef(from_levels)), names(fixef(whole)))
  expect_lt(fit_difference(from_levels, whole), 1e-10)

  dir <- withr::local_tempdir()
  csv <- file.path(dir, sprintf("part%d.csv", seq_along(pieces)))
  for (i in seq_along(pieces)) utils::write.csv(pieces[[i]], csv[[i]], row.names = FALSE)
  from_files <- fr_fit(form, csv)
  # CSV holds no factor levels: f is read as characters, whose levels are sorted, as an
  # unchunked fit of the same columns sorts them.
  whole_read <- fr_fit(form, transform(d, f = as.character(f)), threads = 2)
  expect_identical(names(fixef(from_files)), c("(Intercept)", "x", "flo", "fmid"))
  expect_lt(fit_difference(from_files, whole_read), 1e-10)
  rds <- file.path(dir, sprintf("part%d.rds", 1:2))
  saveRDS(d[part <= 4, ], rds[[1]])
  saveRDS(d[part > 4, ], rds[[2]])
  expect_lt(fit_difference(fr_fit(form, rds), whole), 1e-10)
  # No data in the fit: predictions need new data.
  expect_error(fitted(from_files), "not kept by fits from a list of data frames or from files")
  expect_equal(predict(from_files, d[1:5, ]), predict(whole, d[1:5, ]), tolerance = 1e-9)
  expect_output(print(summary(from_files)), "Chunks: 8 \\(statistics merged exactly, backend \"threads\"\\)")
  expect_output(print(from_files), "Random effects")
})

test_that("average combines chunk fits with their Software Alchemy covariance", {
  set.seed(5)
  groups <- 60
  g <- rep(seq_len(groups), times = sample(5:15, groups, replace = TRUE))
  d <- data.frame(g = g, y = 1 + rnorm(groups)[g] + rnorm(length(g)))
  fit <- fr_fit(y ~ 1 + (1 | g), d, chunks = 4, combine = "average", chunk_by = "g", seed = 9)
  est <- fit$alchemy$estimates
  expect_identical(dim(est), c(4L, 3L))
  expect_equal(unname(fit$theta), unname(colMeans(est)[1:2]))
  expect_equal(unname(fixef(fit)), unname(mean(est[, "(Intercept)"])))
  expect_equal(fit$alchemy$vcov, cov(est) / 4)
  expect_output(print(fit), "Chunks: 4 \\(estimates averaged, Software Alchemy, by levels of g")
  # Each row is the fit of its chunk alone: recompute chunk 1 from the assignment.
  chunk_of <- local({
    set.seed(9)
    sample(rep_len(1:4, groups))[g]
  })
  alone <- fr_fit(y ~ 1 + (1 | g), d[chunk_of == 1, ])
  expect_equal(unname(est[1, 1:2]), unname(alone$theta), tolerance = 1e-10)
  # Rows at random: a warning about the dependence of the chunks.
  expect_warning(fr_fit(y ~ 1 + (1 | g), d, chunks = 3, combine = "average", seed = 1),
                 "not independent")
})

test_that("chunked fits are reproducible with seed and leave the random stream alone", {
  d <- crossed_chunk_data(1500)
  set.seed(42)
  before <- runif(1)
  set.seed(42)
  a <- fr_fit(form, d, chunks = 3, combine = "average", chunk_by = "user", seed = 7)
  after <- runif(1)
  b <- fr_fit(form, d, chunks = 3, combine = "average", chunk_by = "user", seed = 7)
  c <- fr_fit(form, d, chunks = 3, combine = "average", chunk_by = "user", seed = 8)
  expect_identical(before, after)
  expect_identical(a$alchemy$estimates, b$alchemy$estimates)
  expect_false(identical(a$alchemy$estimates, c$alchemy$estimates))
})

test_that("bad chunk arguments get clear errors", {
  d <- crossed_chunk_data(500)
  expect_error(fr_fit(form, d, chunks = 0), "`chunks` must be a whole number of at least 1")
  expect_error(fr_fit(form, d, chunks = 2.5), "`chunks` must be a whole number")
  expect_error(fr_fit(form, d, chunks = 500, chunk_by = "item"),
               "500 chunks but chunk_by 'item' has \\d+ levels")
  expect_error(fr_fit(form, d, chunks = 2, chunk_by = "nosuch"),
               "`chunk_by` must be \"\\.order\" or name the grouping variable of a random term \\('user', 'item'\\); 'nosuch'")
  expect_error(fr_fit(form, c(tempfile(fileext = ".csv"), "also/missing.rds")),
               "files not found: .*also/missing.rds")
  expect_error(fr_fit(form, list(d, "a")), "element 2 of `data` is character, not a data frame")
  expect_error(fr_fit(form, list(d, d), chunks = 3), "`chunks` is set by the data: 2 data frames")
  expect_error(fr_fit(form, d, backend = "mpi"), "`backend` must be \"threads\" or \"future\"")
  expect_error(fr_fit(form, d, chunks = 2, seed = "a"), "`seed` must be a single number")
  # A chunk that lacks a column is named, as is a worker's failure.
  expect_error(fr_fit(form, list(d, d[, names(d) != "x"])),
               "chunk 2 failed: column 'x' not found in `data`")
  bad <- d
  bad$y <- as.character(bad$y)
  expect_error(fr_fit(form, list(d, bad)), "chunk 2 failed: the response 'y' must be numeric")
  dir <- withr::local_tempdir()
  path <- file.path(dir, "broken.rds")
  saveRDS(list(1, 2), path)
  expect_error(fr_fit(form, c(path)), "chunk 1 \\(file 'broken.rds'\\) failed: .*not a data frame")
})

test_that("size() in chunks takes the group sizes of the whole data", {
  set.seed(8)
  groups <- 80
  g <- rep(seq_len(groups), times = sample(3:20, groups, replace = TRUE))
  d <- data.frame(g = g, y = 3 - 0.05 * tabulate(g)[g] + rnorm(groups)[g] + rnorm(length(g)))
  f <- y ~ size(g) + (1 | g)
  whole <- fr_fit(f, d, method = "fr")
  pieces <- split(d, sample(rep_len(1:3, nrow(d))))
  chunked <- fr_fit(f, unname(pieces), method = "fr")
  expect_equal(fixef(chunked), fixef(whole), tolerance = 1e-10)
  expect_equal(chunked$theta, whole$theta, tolerance = 1e-10)
  expect_equal(fr_fit(f, d, method = "fr", chunks = 3, seed = 2)$theta, whole$theta, tolerance = 1e-10)
})

test_that("the future backend gives the exact fit on multisession and cluster workers", {
  skip_if_not_installed("future.apply")
  skip_on_cran()
  d <- crossed_chunk_data()
  whole <- fr_fit(form, d, threads = 1)
  old <- future::plan(future::multisession, workers = 2)
  on.exit(future::plan(old), add = TRUE)
  for (g in c(2, 7)) {
    expect_lt(fit_difference(fr_fit(form, d, chunks = g, seed = 1, backend = "future"), whole), 1e-10)
  }
  dir <- withr::local_tempdir()
  paths <- file.path(dir, sprintf("part%d.rds", 1:3))
  part <- rep_len(1:3, nrow(d))
  for (i in 1:3) saveRDS(d[part == i, ], paths[[i]])
  expect_lt(fit_difference(fr_fit(form, paths, backend = "future"), whole), 1e-10)
  expect_error(fr_fit(form, list(d, d[, -2]), backend = "future"), "chunk 2 failed: column 'x' not found")
  future::plan(future::cluster, workers = c("localhost", "localhost"))
  for (g in c(2, 7)) {
    expect_lt(fit_difference(fr_fit(form, d, chunks = g, seed = 1, backend = "future"), whole), 1e-10)
  }
})

test_that("interaction levels are matched across chunks by their parts, not their pasted label", {
  set.seed(4)
  d <- data.frame(a = rep(c("x:y", "x", "p", "q"), each = 60), b = rep(c("z", "y:z", "r", "s"), each = 60))
  d$y <- rep(c(-6, 6, -3, 3), each = 60) + rnorm(240)
  whole <- fr_fit(y ~ 1 + (1 | a:b), d)
  # The first chunk holds only "x:y" + "z", the second only "x" + "y:z": their joined
  # labels are the same, the levels are not.
  pieces <- unname(split(d, c(rep(1, 60), rep(2, 60), rep(1:2, 60))))
  chunked <- fr_fit(y ~ 1 + (1 | a:b), pieces)
  expect_identical(ngrps(chunked), c("a:b" = 4L))
  expect_lt(fit_difference(chunked, whole), 1e-10)
  expect_equal(predict(chunked, d), predict(whole, d), tolerance = 1e-9)
})

test_that("a seed that set.seed() would truncate or refuse is an error, with no stray warning", {
  run <- expect_error_in_fresh_process(c(
    "d <- data.frame(y = rnorm(40), g = rep(1:8, 5))",
    "fr_fit(y ~ 1 + (1 | g), d, chunks = 2, seed = Inf)"
  ), "`seed` must be a single number or NULL: a whole number between")
  expect_no_match(run$output, "Random.seed")
  d <- data.frame(y = rnorm(40), g = rep(1:8, 5))
  expect_error(fr_fit(y ~ 1 + (1 | g), d, chunks = 2, seed = 1.5), "as set.seed\\(\\) takes \\(got 1.5\\)")
  expect_error(fr_fit(y ~ 1 + (1 | g), d, chunks = 2, seed = 1e20), "got 1e\\+20")
})

test_that("the same file given twice is refused", {
  dir <- withr::local_tempdir()
  d <- crossed_chunk_data(600)
  path <- file.path(dir, "part.csv")
  utils::write.csv(d, path, row.names = FALSE)
  expect_error_in_fresh_process(
    sprintf("fr_fit(y ~ x + (1 | user), c('%s', '%s'))", path, file.path(dir, ".", "part.csv")),
    "file '.*part.csv' is given more than once \\(as elements 1 and 2 of `data`\\); its rows would be counted twice"
  )
})

test_that("grouping IDs in CSV files are read as text: '03' and '3' are two levels", {
  dir <- withr::local_tempdir()
  set.seed(8)
  ids <- c("03", "3", "7", "12", "5")
  d <- data.frame(id = rep(ids, each = 20), x = rnorm(100))
  d$y <- rep(c(-2, 2, 0, 1, -1), each = 20) + d$x + rnorm(100)
  paths <- file.path(dir, c("a.csv", "b.csv"))
  # "03" only in the first file, "3" only in the second.
  utils::write.csv(d[d$id != "3", ], paths[[1]], row.names = FALSE)
  utils::write.csv(d[d$id == "3", ], paths[[2]], row.names = FALSE)
  from_files <- fr_fit(y ~ x + (1 | id), paths)
  whole <- fr_fit(y ~ x + (1 | id), d)
  expect_identical(ngrps(from_files), c(id = 5L))
  expect_lt(fit_difference(from_files, whole), 1e-10)
  # Numeric-looking IDs keep their numeric order (then text order for ties such as 03 and 3).
  expect_identical(levels(from_files$flist$id), c("03", "3", "5", "7", "12"))
})
