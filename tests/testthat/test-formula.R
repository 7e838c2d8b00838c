# Tests for parse_fr_formula() and fr_formula_labels() (R/formula.R).

deparse_formula <- function(f) paste(deparse(f, width.cutoff = 500L), collapse = " ")

# Build y ~ x + <bar> by hand, for bar terms the parser cannot produce
# (e.g. an empty grouping).
formula_with_bar <- function(bar) {
  f <- y ~ x
  f[[3L]] <- call("+", quote(x), call("(", bar))
  f
}

# --- basic structure --------------------------------------------------------

test_that("size() calls are collected and their grouping joins the frame formula", {
  p <- parse_fr_formula(y ~ log(size(u)) + size(u) + x + (1 | m))
  expect_identical(p$size_calls, list(quote(size(u))))
  expect_identical(deparse_formula(p$frame_formula), "y ~ log(size(u)) + size(u) + x + u + m")
  p2 <- parse_fr_formula(y ~ size(u) + (1 | u))
  expect_identical(deparse_formula(p2$frame_formula), "y ~ size(u) + u")
})

test_that("a crossed random-intercept model is split into its parts", {
  p <- parse_fr_formula(y ~ service + (1 | s) + (1 | d) + (1 | dept))

  expect_named(p, c("response", "fixed", "random", "size_calls", "frame_formula"))
  expect_identical(p$size_calls, list())
  expect_identical(p$response, quote(y))
  expect_s3_class(p$fixed, "formula")
  expect_identical(deparse_formula(p$fixed), "y ~ service")
  expect_identical(fr_formula_labels(p), c("s", "d", "dept"))
  expect_identical(p$random[[1]],
                   list(label = "s", factors = list(quote(s)), term = "(1 | s)"))
  expect_identical(p$random[[3]]$term, "(1 | dept)")
  expect_identical(deparse_formula(p$frame_formula), "y ~ service + s + d + dept")
})

test_that("the response can be a call", {
  p <- parse_fr_formula(log(y) ~ x + (1 | g))
  expect_identical(p$response, quote(log(y)))
  expect_identical(deparse_formula(p$fixed), "log(y) ~ x")
  expect_identical(deparse_formula(p$frame_formula), "log(y) ~ x + g")
})

test_that("fixed and frame formulas keep the caller's environment", {
  env <- new.env()
  f <- local(y ~ x + (1 | g), envir = env)
  p <- parse_fr_formula(f)
  expect_identical(environment(p$fixed), env)
  expect_identical(environment(p$frame_formula), env)
  expect_s3_class(p$frame_formula, "formula")
})

test_that("bar terms can sit anywhere among the fixed terms", {
  p <- parse_fr_formula(y ~ (1 | a) + x + (1 | b) + z)
  expect_identical(deparse_formula(p$fixed), "y ~ x + z")
  expect_identical(fr_formula_labels(p), c("a", "b"))
})

# --- the fixed part ---------------------------------------------------------

test_that("a model with only random terms gets an intercept-only fixed part", {
  p <- parse_fr_formula(y ~ (1 | g))
  expect_identical(deparse_formula(p$fixed), "y ~ 1")
  expect_identical(deparse_formula(p$frame_formula), "y ~ g")
})

test_that("intercept removal is kept", {
  p0 <- parse_fr_formula(y ~ 0 + (1 | g))
  expect_identical(deparse_formula(p0$fixed), "y ~ 0")
  expect_identical(attr(terms(p0$fixed), "intercept"), 0L)
  expect_identical(deparse_formula(p0$frame_formula), "y ~ g")

  p1 <- parse_fr_formula(y ~ -1 + (1 | g))
  expect_identical(deparse_formula(p1$fixed), "y ~ -1")
  expect_identical(attr(terms(p1$fixed), "intercept"), 0L)

  p2 <- parse_fr_formula(y ~ (1 | g) - 1)
  expect_identical(deparse_formula(p2$fixed), "y ~ -1")
  expect_identical(attr(terms(p2$fixed), "intercept"), 0L)

  p3 <- parse_fr_formula(y ~ x + (1 | g) - 1)
  expect_identical(deparse_formula(p3$fixed), "y ~ x - 1")
  expect_identical(attr(terms(p3$fixed), "intercept"), 0L)
  expect_identical(deparse_formula(p3$frame_formula), "y ~ x - 1 + g")

  p4 <- parse_fr_formula(y ~ 0 + x + (1 | g))
  expect_identical(deparse_formula(p4$fixed), "y ~ 0 + x")

  p5 <- parse_fr_formula(y ~ 1 + (1 | g))
  expect_identical(deparse_formula(p5$fixed), "y ~ 1")
  expect_identical(attr(terms(p5$fixed), "intercept"), 1L)
})

test_that("fixed terms are kept as written", {
  p <- parse_fr_formula(
    y ~ a * b + poly(x, 2) + I(x^2) + offset(log(n)) + (1 | g) + a:x
  )
  expect_identical(deparse_formula(p$fixed),
                   "y ~ a * b + poly(x, 2) + I(x^2) + offset(log(n)) + a:x")
  # A logical or inside a fixed term is not a bar term.
  q <- parse_fr_formula(y ~ I(u | v) + (1 | g))
  expect_identical(deparse_formula(q$fixed), "y ~ I(u | v)")
  expect_identical(fr_formula_labels(q), "g")
})

# --- grouping expansion -----------------------------------------------------

test_that("interactions keep their order in label and factors", {
  p <- parse_fr_formula(y ~ (1 | a:b))
  expect_identical(p$random,
                   list(list(label = "a:b", factors = list(quote(a), quote(b)),
                             term = "(1 | a:b)")))
  expect_identical(deparse_formula(p$frame_formula), "y ~ a + b")
})

test_that("nesting a/b expands to a and b:a", {
  p <- parse_fr_formula(y ~ (1 | a/b))
  expect_identical(fr_formula_labels(p), c("a", "b:a"))
  expect_identical(p$random[[1]]$factors, list(quote(a)))
  expect_identical(p$random[[2]]$factors, list(quote(b), quote(a)))
  expect_identical(p$random[[1]]$term, "(1 | a/b)")
  expect_identical(p$random[[2]]$term, "(1 | a/b)")
  expect_identical(deparse_formula(p$frame_formula), "y ~ a + b")
})

test_that("nesting matches lme4's labels for Pastes", {
  p <- parse_fr_formula(strength ~ (1 | batch/cask))
  expect_setequal(fr_formula_labels(p), c("cask:batch", "batch"))
})

test_that("three-level nesting a/b/c expands to a, b:a, c:b:a", {
  p <- parse_fr_formula(y ~ x + (1 | a/b/c))
  expect_identical(fr_formula_labels(p), c("a", "b:a", "c:b:a"))
  expect_identical(p$random[[3]]$factors, list(quote(c), quote(b), quote(a)))
  expect_identical(deparse_formula(p$frame_formula), "y ~ x + a + b + c")

  # Explicit parentheses on the right give the same expansion.
  q <- parse_fr_formula(y ~ x + (1 | a/(b/c)))
  expect_identical(fr_formula_labels(q), c("a", "b:a", "c:b:a"))
})

test_that("an interaction can be nested in or contain a nesting context", {
  p <- parse_fr_formula(y ~ (1 | (a:b)/c))
  expect_identical(fr_formula_labels(p), c("a:b", "c:a:b"))
  expect_identical(p$random[[2]]$factors, list(quote(c), quote(a), quote(b)))
})

test_that("grouping components may be calls", {
  p <- parse_fr_formula(y ~ (1 | factor(id)) + (1 | cut(age, 3):sex))
  expect_identical(fr_formula_labels(p), c("factor(id)", "cut(age, 3):sex"))
  expect_identical(p$random[[1]]$factors, list(quote(factor(id))))
  expect_identical(p$random[[2]]$factors, list(quote(cut(age, 3)), quote(sex)))
  expect_identical(deparse_formula(p$frame_formula),
                   "y ~ factor(id) + cut(age, 3) + sex")
})

test_that("spacing, double bars and extra parentheses are accepted", {
  reference <- parse_fr_formula(y ~ x + (1 | g))$random
  variants <- list(
    y ~ x + (1|g),
    y ~ x + (1 | (g)),
    y ~ x + (1 | ((g))),
    y ~ x + ((1 | g)),
    y ~ x + ((1) | g)
  )
  for (f in variants) {
    got <- parse_fr_formula(f)$random
    expect_identical(got[[1]]$label, "g")
    expect_identical(got[[1]]$factors, list(quote(g)))
  }
  expect_identical(parse_fr_formula(y ~ x + (1|g))$random, reference)

  double <- parse_fr_formula(y ~ x + (1 || g))
  expect_identical(fr_formula_labels(double), "g")
  expect_identical(double$random[[1]]$term, "(1 || g)")
})

test_that("a bare top-level bar is a random term", {
  p <- parse_fr_formula(y ~ 1 | g)
  expect_identical(fr_formula_labels(p), "g")
  expect_identical(p$random[[1]]$term, "(1 | g)")
  expect_identical(deparse_formula(p$fixed), "y ~ 1")
})

# --- frame formula and model.frame -----------------------------------------

test_that("frame_formula builds one frame with all needed columns", {
  d <- data.frame(y = 1:6, x = c(1, 2, 3, 4, 5, 6),
                  a = c("p", "p", "q", "q", "r", "r"),
                  b = c("u", "v", "u", "v", "u", "v"),
                  n = 6:1)
  p <- parse_fr_formula(log(y) ~ x + offset(log(n)) + (1 | a/b))
  mf <- stats::model.frame(p$frame_formula, d)
  expect_identical(names(mf), c("log(y)", "x", "offset(log(n))", "a", "b"))
  expect_equal(mf[["log(y)"]], log(d$y))
  expect_equal(stats::model.offset(mf), log(d$n))
  expect_identical(nrow(mf), 6L)
})

test_that("frame_formula drops rows with NA in any needed column, once", {
  d <- data.frame(y = c(1, 2, NA, 4, 5, 6, 7),
                  x = c(1, NA, 3, 4, 5, 6, 7),
                  g = c("a", "a", "b", NA, "c", "c", "b"),
                  h = c("u", "v", "u", "v", "u", NA, "u"),
                  unused = NA)
  p <- parse_fr_formula(y ~ x + (1 | g) + (1 | h))
  mf <- stats::model.frame(p$frame_formula, d)
  expect_identical(names(mf), c("y", "x", "g", "h"))
  expect_identical(as.integer(rownames(mf)), c(1L, 5L, 7L))
  expect_identical(mf$g, c("a", "c", "b"))
  expect_identical(as.integer(attr(mf, "na.action")), c(2L, 3L, 4L, 6L))

  # With only random terms the fixed part adds no column.
  q <- parse_fr_formula(y ~ 0 + (1 | g))
  mq <- stats::model.frame(q$frame_formula, d)
  expect_identical(names(mq), c("y", "g"))
  expect_identical(as.integer(rownames(mq)), c(1L, 2L, 5L, 6L, 7L))
})

test_that("a grouping that is also a fixed term appears once in the frame", {
  d <- data.frame(y = 1:4, g = c("a", "a", "b", "b"))
  p <- parse_fr_formula(y ~ g + (1 | g))
  expect_identical(names(stats::model.frame(p$frame_formula, d)), c("y", "g"))
  q <- parse_fr_formula(y ~ (1 | a) + (1 | a:b))
  expect_identical(deparse_formula(q$frame_formula), "y ~ a + b")
})

# --- errors -----------------------------------------------------------------

test_that("a response is required", {
  msg <- "the formula needs a response on its left-hand side, e\\.g\\. y ~ x \\+ \\(1 \\| g\\)"
  expect_error(parse_fr_formula(~ x + (1 | g)), msg)
  no_lhs <- y ~ x + (1 | g)
  no_lhs[[2L]] <- quote(expr = )
  expect_error(parse_fr_formula(no_lhs), msg)
  expect_error(parse_fr_formula("y ~ (1 | g)"), "must be a formula")
})

test_that("a formula without random terms is refused", {
  msg <- paste0("the formula has no random-effects term such as \\(1 \\| g\\); ",
                "use lm\\(\\) for a model with fixed effects only")
  expect_error(parse_fr_formula(y ~ x), msg)
  expect_error(parse_fr_formula(y ~ 1), msg)
  expect_error(parse_fr_formula(y ~ I(a | b)), msg)
})

test_that("random slopes keep their left-hand side; || splits it by column", {
  lhs_of <- function(f) lapply(parse_fr_formula(f)$random, function(t) deparse(t$lhs))
  expect_equal(lhs_of(y ~ (x | g)), list("x"))
  expect_equal(lhs_of(y ~ z + (x || g)), list("1", "0 + x"))
  expect_equal(lhs_of(y ~ (0 + x | g)), list("0 + x"))
  expect_equal(lhs_of(y ~ (1 | a) + (x | b/c)), list("NULL", "x", "x"))
  expect_equal(vapply(parse_fr_formula(y ~ (1 | a) + (x | b/c))$random, `[[`, "", "label"),
               c("a", "b", "c:b"))
  expect_error(parse_fr_formula(y ~ (0 | g)), "has no columns")
})

test_that("bar terms nested in other terms are refused, naming the term", {
  expect_error(parse_fr_formula(y ~ x:(1 | g)),
               "top level of the formula.*found \\(1 \\| g\\) inside x:\\(1 \\| g\\)")
  expect_error(parse_fr_formula(y ~ x + I((1 | g))),
               "top level of the formula.*found \\(1 \\| g\\) inside I\\(\\(1 \\| g\\)\\)")
  expect_error(parse_fr_formula(y ~ (1 | a) + x * (1 | g)),
               "found \\(1 \\| g\\) inside x \\* \\(1 \\| g\\)")
  expect_error(parse_fr_formula(y ~ x - (1 | g)),
               "cannot be removed with '-': \\(1 \\| g\\)")
})

test_that("repeated groupings are refused", {
  expect_error(parse_fr_formula(y ~ (1 | a) + (1 | a)),
               "the random-effects term for 'a' appears more than once")
  expect_error(parse_fr_formula(y ~ (1 | a/b) + (1 | a)),
               "the random-effects term for 'a' appears more than once")
  expect_error(parse_fr_formula(y ~ (1 | a) + (1 || (a))),
               "the random-effects term for 'a' appears more than once")
  expect_error(parse_fr_formula(y ~ (1 | a/b) + (1 | b:a)),
               "the random-effects term for 'b:a' appears more than once")
  # a:b and b:a are the same groups.
  expect_error(parse_fr_formula(y ~ (1 | a:b) + (1 | b:a)),
               "the random-effects term for 'b:a' appears more than once")
  expect_error(parse_fr_formula(y ~ (1 | a/a)),
               "the grouping in \\(1 \\| a/a\\) uses 'a' more than once")
})

test_that("empty or constant groupings are refused", {
  expect_error(parse_fr_formula(formula_with_bar(call("|", 1, quote(expr = )))),
               "the random-effects term \\(1 \\| \\) has an empty grouping factor")
  expect_error(parse_fr_formula(y ~ x + (1 | 2)),
               "the grouping factor in \\(1 \\| 2\\) must be a variable or an expression, not the constant 2")
  expect_error(parse_fr_formula(y ~ x + (1 | "g")),
               "must be a variable or an expression, not the constant \"g\"")
  expect_error(parse_fr_formula(y ~ x + (1 | a/2)),
               "not the constant 2")
})

test_that("additive or crossed groupings inside one bar are refused", {
  expect_error(parse_fr_formula(y ~ (1 | a + b)),
               "the grouping in \\(1 \\| a \\+ b\\) must be a factor.*\\(1 \\| a\\) \\+ \\(1 \\| b\\)")
  expect_error(parse_fr_formula(y ~ (1 | a * b)),
               "the grouping in \\(1 \\| a \\* b\\) must be a factor")
  expect_error(parse_fr_formula(y ~ (1 | (a/b):c)),
               "nesting with '/' inside an interaction ':' is not supported: \\(1 \\| \\(a/b\\):c\\)")
})

# Issue 17, item 9: `.` means every other column, as in lm().
test_that("`.` in the fixed part stands for the columns other than the response and groupings", {
  set.seed(3)
  g <- rep(1:6, 10)
  h <- rep(1:4, 15)
  d <- data.frame(y = rnorm(60) + 2 * rnorm(6)[g] + 2 * rnorm(4)[h], x = rnorm(60), z = rnorm(60),
                  g = g, h = h)
  dotted <- fr_fit(y ~ . + (1 | g) + (1 | h), d)
  written <- fr_fit(y ~ x + z + (1 | g) + (1 | h), d)
  expect_identical(names(fixef(dotted)), c("(Intercept)", "x", "z"))
  expect_equal(dotted$theta, written$theta, tolerance = 1e-12)
  expect_identical(names(fixef(fr_fit(y ~ . - z + (1 | g), d[, c("y", "x", "z", "g")]))),
                   c("(Intercept)", "x"))
  expect_identical(names(fixef(fr_fit(log(y + 10) ~ . + (1 | g), d[, c("y", "x", "g")]))),
                   c("(Intercept)", "x"))
  expect_error(fr_fit(y ~ x + (1 | .), d), "`.` may stand only for fixed-effect columns")
  expect_error(fr_fit(y ~ . + (1 | g), list(d[1:30, ], d[31:60, ])),
               "`.` in the formula stands for the columns of `data`, which must then be a data frame")
})
