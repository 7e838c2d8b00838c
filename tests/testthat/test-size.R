# size(g): counts of the level of g, over the rows a fit uses, and the counts of the
# fit for new data.

test_that("size() counts each element's level; NA stays NA", {
  expect_identical(size(c("a", "b", "a", NA, "a")), c(3, 1, 3, NA, 3))
  expect_identical(size(factor(c("x", "y", "x"), levels = c("z", "y", "x"))), c(2, 1, 2))
  expect_identical(size(c(10L, 10L, 7L)), c(2, 2, 1))
  expect_identical(size(character()), numeric())
})

test_that("with counts, size() looks levels up and gives 0 to unknown ones", {
  counts <- c(a = 3, b = 1)
  expect_identical(size(c("b", "a", "c", NA), counts = counts), c(1, 3, 0, NA))
  expect_identical(size(factor("a"), counts = counts), 3)
  expect_error(size("a", counts = c(3, 1)), "named numeric vector")
})

sized_data <- function() {
  with_local_seed(11, {
    n <- rep(c(2L, 5L, 9L, 3L, 12L, 6L), 4)
    g <- factor(rep(seq_along(n), n))
    data.frame(y = rnorm(length(g)) + 0.1 * n[g] + rnorm(length(n))[g],
               g = g, x = rnorm(length(g)))
  })
}

test_that("in a fit, size(g) is counted after NA handling and subset", {
  d <- sized_data()
  d$x[c(1, 2, 8)] <- NA  # two rows of group 1 (it disappears) and one of group 2
  fit <- fr_fit(y ~ size(g) + x + (1 | g), data = d, subset = g != "3")
  kept <- d[!is.na(d$x) & d$g != "3", ]
  expect_identical(unname(model.matrix(fit)[, "size(g)"]),
                   as.numeric(table(droplevels(kept$g))[as.character(kept$g)]))
  # The same fit as with the counts computed by hand.
  kept$n_g <- as.numeric(table(kept$g)[as.character(kept$g)])
  by_hand <- fr_fit(y ~ n_g + x + (1 | g), data = kept)
  expect_equal(unname(fixef(fit)), unname(fixef(by_hand)), tolerance = 1e-12)
  expect_equal(fit$theta, by_hand$theta, tolerance = 1e-12)
  # The user's data are not modified.
  expect_false("size(g)" %in% names(d))
})

test_that("size() is found when the package is not attached", {
  d <- sized_data()
  f <- y ~ size(g) + (1 | g)
  environment(f) <- new.env(parent = baseenv())
  fit <- fullrandom::fr_fit(f, data = d)
  expect_identical(names(fixef(fit)), c("(Intercept)", "size(g)"))
  expect_equal(predict(fit, d[1:5, ]), fitted(fit)[1:5], tolerance = 1e-12, ignore_attr = TRUE)
})

test_that("predict() uses the fit's counts for known levels and 0 for new ones", {
  d <- sized_data()
  fit <- fr_fit(y ~ size(g) + (1 | g), data = d)
  # Two rows of a group in newdata still get the group's size in the fit.
  new <- d[c(3, 4, 30), ]
  expect_equal(unname(predict(fit, new)), unname(fitted(fit)[c(3, 4, 30)]), tolerance = 1e-12)
  b <- fixef(fit)
  unseen <- data.frame(g = "new")
  expect_equal(unname(predict(fit, unseen, allow.new.levels = TRUE)), unname(b[[1]]), tolerance = 1e-12)
  expect_equal(unname(predict(fit, d[3, ], re.form = NA)), unname(b[[1]] + b[[2]] * size(d$g)[3]),
               tolerance = 1e-12)
  expect_error(predict(fit, unseen), "new level")
})

test_that("size() in a formula takes one grouping variable", {
  d <- sized_data()
  expect_error(fr_fit(y ~ size(g, x) + (1 | g), data = d), "one grouping variable")
  expect_error(fr_fit(y ~ size(g, counts = 1) + (1 | g), data = d), "one grouping variable")
  expect_error(fr_fit(y ~ size(nope) + (1 | g), data = d), "'nope' not found")
})

test_that("NaN is missing, not a group of its own", {
  expect_identical(size(c(1, NaN, 1, NaN, NA, 2)), c(2, NA, 2, NA, NA, 1))
})
