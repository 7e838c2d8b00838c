# refuse_unknown_arguments(): the one check of the arguments a method's `...` would swallow.

test_that("arguments a method does not take are refused by name, with a hint when one exists", {
  f <- function(...) refuse_unknown_arguments("f()", ..., allowed = "threads",
                                              hints = c(se.fit = "no standard errors"),
                                              help = "f")
  expect_silent(f())
  expect_silent(f(threads = 2))
  expect_error(f(se.fit = TRUE), "^f\\(\\) does not take `se.fit`: no standard errors$")
  expect_error(f(foo = 1, bar = 2), "f\\(\\) does not take `foo`, `bar` \\(see \\?f for the arguments it takes\\)")
  expect_error(f(1), "f\\(\\) does not take an unnamed argument")
  # The arguments are not evaluated to be refused.
  expect_error(f(foo = stop("evaluated")), "does not take `foo`")
})
