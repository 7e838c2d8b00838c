# Input handling: every bad input is an error naming the problem; NA rows are dropped.

small_data <- function(n_groups = 6, per_group = 5, seed = 1) {
  set.seed(seed)
  g <- rep(seq_len(n_groups), each = per_group)
  data.frame(y = rnorm(n_groups * per_group) + rnorm(n_groups)[g], x = runif(n_groups * per_group),
             g = factor(paste0("g", g)), h = rep(c("u", "v", "w"), length.out = n_groups * per_group))
}

test_that("unknown columns are named", {
  d <- small_data()
  expect_error(fr_fit(y ~ nosuch + (1 | g), data = d), "column 'nosuch' not found in `data`")
  expect_error(fr_fit(y ~ x + (1 | nogroup), data = d), "column 'nogroup' not found")
  # A missing column named like a function (base::sample) is still a missing column.
  expect_error(fr_fit(y ~ x + (1 | sample), data = d), "column 'sample' not found")
})

test_that("the response must be numeric and finite", {
  d <- small_data()
  d$yf <- factor(d$y > 0)
  d$yc <- as.character(d$y)
  expect_error(fr_fit(yf ~ x + (1 | g), data = d), "response 'yf' must be numeric, not a factor")
  expect_error(fr_fit(yc ~ x + (1 | g), data = d), "response 'yc' must be numeric, not character")
  d$y[3] <- Inf
  expect_error(fr_fit(y ~ x + (1 | g), data = d), "response 'y' has non-finite values \\(Inf in rows 3\\)")
  d$y[3] <- NaN
  expect_error(fr_fit(y ~ x + (1 | g), data = d), "column 'y' has NaN values \\(rows 3\\)")
  d <- small_data()
  d$x[5] <- -Inf
  expect_error(fr_fit(y ~ x + (1 | g), data = d), "fixed-effect column 'x' has non-finite values \\(rows 5\\)")
})

test_that("finite values whose sum overflows pass the finiteness checks", {
  # The checks screen with one sum; an overflowing sum must not be reported as Inf.
  huge <- c(1e308, 1e308, -5)
  expect_identical(response_vector(huge, "y"), huge)
  as_matrix <- function(...) list(columns = cbind(...), names = names(list(...)))
  as_list <- function(...) list(columns = list(NULL, ...), names = c("(Intercept)", names(list(...))))
  for (fixed in list(as_matrix, as_list)) {
    expect_invisible(check_finite_columns(fixed(x = huge)))
    expect_error(check_finite_columns(fixed(x = huge, z = c(1, NA, 2))),
                 "fixed-effect column 'z' has non-finite values \\(rows 2\\)")
  }
})

test_that("plain numeric terms give model.matrix's columns without building it", {
  d <- small_data()
  d$k <- rep_len(1:4, nrow(d))
  d$`a b` <- d$x * 2
  d$f <- factor(rep_len(c("u", "v", "w"), nrow(d)))
  d$flag <- d$x > 0
  # The columns as a matrix, whichever form fixed_effect_columns() chose.
  as_matrix <- function(fixed) {
    columns <- fixed$columns
    if (is.matrix(columns)) return(unname(columns))
    n <- nrow(d)
    do.call(cbind, lapply(columns, function(v) if (is.null(v)) rep(1, n) else v))
  }
  plain <- list(y ~ x, y ~ x + k, y ~ 0 + x, y ~ log(abs(x) + 1) + I(x^2), y ~ `a b` + x, y ~ 1)
  other <- list(y ~ x * k, y ~ f + x, y ~ poly(x, 2), y ~ flag)
  for (form in c(plain, other)) {
    fixed_terms <- terms(form, data = d)
    frame <- model.frame(fixed_terms, d)
    got <- fixed_effect_columns(fixed_terms, frame)
    want <- model.matrix(fixed_terms, frame)
    label <- deparse1(form)
    expect_identical(is.list(got$columns), any(vapply(plain, identical, TRUE, form)), info = label)
    expect_equal(as_matrix(got), unname(want), ignore_attr = TRUE, info = label)
    expect_identical(got$names, colnames(want), info = label)
    expect_identical(got$assign, attr(want, "assign"), info = label)
    expect_identical(got$intercept, match("(Intercept)", colnames(want), nomatch = 0L), info = label)
    expect_identical(got$contrasts, attr(want, "contrasts"), info = label)
  }
  # The plain path reads the data's own vector: no copy of it.
  fixed <- fixed_effect_columns(terms(y ~ x, data = d), model.frame(y ~ x, d))
  expect_null(fixed$columns[[1L]])
  expect_identical(fixed$columns[[2L]], d$x)
})

test_that("empty data and data emptied by NA are errors", {
  d <- small_data()
  expect_error(fr_fit(y ~ x + (1 | g), data = d[0, ]), "the data have no rows")
  d$x <- NA_real_
  expect_error(fr_fit(y ~ x + (1 | g), data = d), "no observations are left after removing 30 rows")
})

test_that("groupings that cannot carry a variance component are errors", {
  d <- small_data()
  d$id <- seq_len(nrow(d))
  d$one <- "same"
  expect_error(fr_fit(y ~ x + (1 | id), data = d),
               "grouping factor of \\(1 \\| id\\) has as many levels \\(30\\) as there are observations")
  expect_error(fr_fit(y ~ x + (1 | one), data = d), "grouping factor of \\(1 \\| one\\) has a single level")
  tiny <- d[1:4, ]
  tiny$g <- factor(c("a", "a", "b", "b"))
  expect_error(fr_fit(y ~ x + h + (1 | g), data = tiny), "fewer observations \\(4\\) than parameters \\(6")
})

test_that("rows with NA are dropped per na.action and counted", {
  d <- small_data()
  d$y[c(2, 9)] <- NA
  d$g[14] <- NA
  fit <- fr_fit(y ~ x + (1 | g), data = d)
  expect_identical(fit$nobs, 27L)
  expect_identical(fit$n_dropped, 3L)
  expect_output(print(fit), "\\(3 observations deleted due to missingness\\)")
  expect_equal(fit$theta, fr_fit(y ~ x + (1 | g), data = stats::na.omit(d))$theta)
  expect_error(fr_fit(y ~ x + (1 | g), data = d, na.action = na.fail), "missing values")

  # NA only in the grouping factor, on every row of one level: the level goes unused
  # once the rows are dropped, and is dropped with them.
  d <- small_data()
  first <- levels(d$g)[1]
  d$g[d$g == first] <- NA
  fit <- fr_fit(y ~ x + (1 | g), data = d)
  expect_identical(fit$n_dropped, sum(is.na(d$g)))
  expect_identical(fit$ngrps[["g"]], nlevels(d$g) - 1L)
  expect_false(first %in% rownames(ranef(fit)$g))
})

test_that("subset selects rows as in lm()", {
  d <- small_data(n_groups = 10)
  fit <- fr_fit(y ~ x + (1 | g), data = d, subset = x > 0.2)
  expect_equal(fit$theta, fr_fit(y ~ x + (1 | g), data = d[d$x > 0.2, ])$theta)
})

test_that("aliased fixed-effect columns are dropped with a message", {
  d <- small_data()
  d$x2 <- 2 * d$x + 1
  expect_message(fit <- fr_fit(y ~ x + x2 + (1 | g), data = d),
                 "rank deficient so dropping 1 column / coefficient: x2")
  expect_named(fit$coefficients, c("(Intercept)", "x"))
  expect_true(is.na(fit$coef_all[["x2"]]))
  expect_equal(fit$theta, fr_fit(y ~ x + (1 | g), data = d)$theta)
})

test_that("grouping variables of any type are treated as factors", {
  d <- small_data()
  d$g_int <- as.integer(d$g) * 10L
  d$g_chr <- as.character(d$g)
  d$g_dbl <- as.integer(d$g) + 0.5
  base <- fr_fit(y ~ x + (1 | g), data = d)$theta
  for (v in c("g_int", "g_chr", "g_dbl")) {
    f <- stats::as.formula(paste("y ~ x + (1 |", v, ")"))
    expect_equal(unname(fr_fit(f, data = d)$theta), unname(base))
  }
})

test_that("the user's data are not modified", {
  d <- small_data()
  d$y[2] <- NA
  copy <- d
  fit <- suppressMessages(fr_fit(y ~ x + (1 | g) + (1 | h), data = d))
  expect_identical(d, copy)
})

test_that("variables can come from the formula's environment", {
  d <- small_data()
  yy <- d$y; xx <- d$x; gg <- d$g
  expect_equal(fr_fit(yy ~ xx + (1 | gg))$theta[[1]], fr_fit(y ~ x + (1 | g), data = d)$theta[[1]])
})

test_that("offsets are refused rather than ignored", {
  d <- small_data()
  expect_error(fr_fit(y ~ x + offset(x) + (1 | g), data = d), "offset\\(\\) terms are not supported")
})

# Issue 17, item 2: interaction levels are told apart by the factors' codes.
labels_that_collide <- function(n_per = 100, seed = 1) {
  set.seed(seed)
  # "x:y" + "z" and "x" + "y:z" both paste to "x:y:z", but are different groups.
  a <- rep(c("x:y", "x", "p", "q"), each = n_per)
  b <- rep(c("z", "y:z", "r", "s"), each = n_per)
  data.frame(a = a, b = b, y = rep(c(-6, 6, -3, 3), each = n_per) + rnorm(4 * n_per))
}

test_that("interaction groups whose pasted labels coincide stay distinct", {
  d <- labels_that_collide()
  fit <- fr_fit(y ~ 1 + (1 | a:b), d)
  expect_identical(ngrps(fit), c("a:b" = 4L))
  # With the groups merged, the residual variance was 5.6; the errors have variance 1.
  expect_equal(unname(fit$theta[["Residual"]]), 1, tolerance = 0.15)
  sums <- tapply(d$y, paste(d$a, d$b, sep = "|"), function(v) sum((v - mean(v))^2))
  expect_equal(unname(fit$theta[["Residual"]]), sum(sums) / (nrow(d) - 4), tolerance = 1e-10)
  # Labels as lme4 writes them, backquoted only where they would otherwise coincide.
  expect_setequal(rownames(ranef(fit)[["a:b"]]), c("`x:y`:z", "x:`y:z`", "p:r", "q:s"))
  expect_identical(levels(fullrandom:::interaction_factor(list(factor(c("p", "q")), factor(c("r", "s"))))),
                   c("p:r", "q:s"))
})

test_that("interaction codes stay exact when the product of the numbers of levels exceeds 2^53", {
  # 20,064 combinations of four factors with about 10^4 levels each (product ~2e16 > 2^53);
  # pairs of combinations differ only in the last factor, whose codes differ by 1.
  i <- 1:10032
  combos <- data.frame(a = i, b = 10033L - i, c = (i * 7919L) %% 10032L + 1L)
  combos <- combos[rep(seq_along(i), each = 2L), ]
  combos$e <- seq_len(nrow(combos))
  expect_gt(prod(vapply(combos, function(v) length(unique(v)), 1)), 2^53)
  f <- fullrandom:::interaction_factor(lapply(combos, factor))
  expect_identical(nlevels(f), 20064L)
  expect_identical(as.integer(f), seq_len(20064L))  # level order: a slowest, as a:b orders
  d <- combos[rep(seq_len(nrow(combos)), each = 2L), ]
  d$y <- stats::rnorm(nrow(d))
  expect_identical(ngrps(fr_fit(y ~ 1 + (1 | a:b:c:e), d)), c("a:b:c:e" = 20064L))
})

test_that("a grouping factor with NA as a level is refused", {
  d <- small_data()
  d$g[c(2, 9)] <- NA
  d$g <- factor(d$g, exclude = NULL)
  expect_error(fr_fit(y ~ x + (1 | g), data = d),
               "grouping variable 'g' of \\(1 \\| g\\) has NA as a level")
  expect_error(fr_fit(y ~ x + (1 | h:g), data = d), "'g' of \\(1 \\| h:g\\) has NA as a level")
  # Without the NA level the rows are missing and dropped, as usual.
  d$g <- factor(d$g)
  expect_identical(nobs(fr_fit(y ~ x + (1 | g), data = d)), 28L)
})

test_that("a matrix, an environment or another object as `data` is refused clearly", {
  d <- small_data()
  # A matrix was taken for a vector of file paths.
  expect_error_in_fresh_process(c(
    "d <- data.frame(y = rnorm(30), x = runif(30), g = rep(1:6, 5))",
    "fr_fit(y ~ x + (1 | g), data = as.matrix(d))"
  ), "`data` is a matrix; fr_fit\\(\\) needs a data frame \\(as lm\\(\\) does\\): use as.data.frame\\(data\\)")
  expect_error(fr_fit(y ~ x + (1 | g), data = new.env()),
               "`data` is an environment; fr_fit\\(\\) needs a data frame")
  expect_error(fr_fit(y ~ x + (1 | g), data = 3), "`data` must be a data frame, .* not numeric")
})

test_that("a list or a fitted model in the environment is not taken for a missing column", {
  d <- small_data()
  f <- list(1, 2)
  expect_error(fr_fit(y ~ f + (1 | g), data = d), "column 'f' not found in `data`")
})
