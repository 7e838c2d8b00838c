# The simulators: reproducibility, the caller's random number state, the designs, and
# the truth recovered by simple moment checks (no fitting code of the package). The
# tolerances are 4 or 5 standard errors of the statistic checked.

global_seed <- function() {
  if (exists(".Random.seed", envir = globalenv(), inherits = FALSE)) {
    get(".Random.seed", envir = globalenv(), inherits = FALSE)
  }
}

set_global_seed <- function(seed) {
  if (is.null(seed)) {
    if (exists(".Random.seed", envir = globalenv(), inherits = FALSE)) {
      rm(".Random.seed", envir = globalenv())
    }
  } else {
    assign(".Random.seed", seed, envir = globalenv())
  }
}

# Standard error of a sample standard deviation of n normal draws with sd sigma (an
# upper bound for the lighter-tailed uniform draws).
se_sd <- function(sigma, n) sigma / sqrt(2 * (n - 1))

test_that("a seed makes the simulations reproducible, NULL uses the current stream", {
  expect_identical(simulate_archers(seed = 11), simulate_archers(seed = 11))
  expect_identical(simulate_ratings(n_items = 30, seed = 11),
                   simulate_ratings(n_items = 30, seed = 11))
  expect_false(identical(simulate_archers(seed = 11), simulate_archers(seed = 12)))
  expect_false(identical(simulate_ratings(seed = 11), simulate_ratings(seed = 12)))

  saved <- global_seed()
  on.exit(set_global_seed(saved), add = TRUE)
  set.seed(5)
  a <- simulate_archers(n_archers = 4)
  b <- simulate_archers(n_archers = 4)
  set.seed(5)
  expect_identical(simulate_archers(n_archers = 4), a)
  expect_false(identical(a, b)) # the stream moved on
  # With the default generators, seed = s draws what set.seed(s) then NULL draws.
  set.seed(5)
  expect_identical(simulate_ratings(n_users = 30, size_distribution = "lognormal"),
                   simulate_ratings(n_users = 30, size_distribution = "lognormal", seed = 5))
})

test_that("a seed leaves the caller's .Random.seed exactly as it was", {
  saved <- global_seed()
  kind <- RNGkind()
  on.exit({
    RNGkind(kind[1], kind[2], kind[3])
    set_global_seed(saved)
  }, add = TRUE)

  set.seed(2024)
  before <- .Random.seed
  simulate_archers(seed = 1)
  simulate_ratings(n_items = 20, seed = 1)
  expect_identical(.Random.seed, before)
  next_draw <- runif(3)
  set.seed(2024)
  expect_identical(runif(3), next_draw)

  # A missing .Random.seed stays missing, with the generator kinds unchanged.
  set_global_seed(NULL)
  simulate_archers(seed = 1, archer_effects = "uniform")
  expect_false(exists(".Random.seed", envir = globalenv(), inherits = FALSE))
  simulate_ratings(seed = 1, n_items = 5, size_distribution = "lognormal")
  expect_false(exists(".Random.seed", envir = globalenv(), inherits = FALSE))
  expect_identical(RNGkind(), kind)

  # Other generator kinds are kept, and do not change what a seed draws.
  RNGkind("L'Ecuyer-CMRG", "Box-Muller")
  set.seed(3)
  before <- .Random.seed
  other_kind <- simulate_archers(n_archers = 5, seed = 9)
  simulate_ratings(seed = 9)
  expect_identical(.Random.seed, before)
  expect_identical(RNGkind()[1:2], c("L'Ecuyer-CMRG", "Box-Muller"))
  RNGkind(kind[1], kind[2], kind[3])
  expect_identical(simulate_archers(n_archers = 5, seed = 9), other_kind)
})

test_that("every archer shoots each bow n_shots times", {
  d <- simulate_archers(n_archers = 7, n_shots = 4, seed = 1)
  truth <- attr(d, "truth")
  expect_named(d, c("distance", "bow", "archer", "shot"))
  expect_type(d$distance, "double")
  expect_type(d$shot, "integer")
  expect_s3_class(d$archer, "factor")
  expect_identical(levels(d$bow), c("Northwood", "Southwood"))
  expect_identical(nrow(d), 2L * 7L * 4L)
  counts <- table(d$archer, d$bow)
  expect_true(all(counts == 4))
  expect_identical(dim(counts), c(7L, 2L))
  shots <- tapply(d$shot, list(d$archer, d$bow), function(s) paste(sort(s), collapse = ","))
  expect_true(all(shots == "1,2,3,4"))
  # Names: unique, in the order drawn, and the truth is named by them.
  expect_identical(levels(d$archer), unique(as.character(d$archer)))
  expect_identical(names(truth$archer_effect), levels(d$archer))
  expect_true(all(grepl("^[A-Z][a-z]+ [A-Z][a-z]+$", levels(d$archer))))
  expect_named(truth, c("mean_distance", "bow_effect", "sd_archer", "sd_shot",
                        "archer_effect"))
  many <- simulate_archers(n_archers = 1000, n_shots = 1, seed = 2)
  expect_identical(nlevels(many$archer), 1000L)
  expect_identical(anyDuplicated(levels(many$archer)), 0L)
  expect_true(any(grepl(" 3$", levels(many$archer)))) # beyond the 400 combinations
})

test_that("the archers' distances follow the model with the truth attached", {
  n_archers <- 2000
  n_shots <- 10
  d <- simulate_archers(n_archers = n_archers, n_shots = n_shots, seed = 3)
  truth <- attr(d, "truth")
  south <- d$bow == "Southwood"
  error <- d$distance - (truth$mean_distance + truth$bow_effect * south +
                           truth$archer_effect[as.character(d$archer)])
  n <- nrow(d)
  expect_lt(abs(mean(error)), 4 * 5 / sqrt(n))
  expect_lt(abs(sd(error) - 5), 4 * se_sd(5, n))

  # Between archers: archer means with the bow effect taken out. Their sd is
  # sqrt(23^2 + 5^2 / 20), 23.03, within a standard error of 0.37 of 23.
  adjusted <- d$distance - truth$bow_effect * south
  archer_means <- tapply(adjusted, d$archer, mean)
  expect_lt(abs(sd(archer_means) - 23), 4 * se_sd(23, n_archers) + 0.03)
  expect_lt(abs(mean(archer_means) - 160), 4 * 23 / sqrt(n_archers))
  expect_lt(abs(sd(truth$archer_effect) - 23), 4 * se_sd(23, n_archers))

  # The bow effect, within archers (the archer effects cancel): se sqrt(2 * 25 / 20000).
  per_bow <- tapply(d$distance, list(d$archer, d$bow), mean)
  difference <- mean(per_bow[, "Southwood"] - per_bow[, "Northwood"])
  expect_lt(abs(difference - (-10)), 4 * sqrt(2 * 5^2 / (n_archers * n_shots)))
})

test_that("uniform archer effects have the same sd and a uniform's shape", {
  n_archers <- 2000
  d <- simulate_archers(n_archers = n_archers, n_shots = 2, sd_archer = 10,
                        archer_effects = "uniform", seed = 4)
  a <- attr(d, "truth")$archer_effect
  expect_true(all(abs(a) <= sqrt(3) * 10))
  expect_lt(abs(sd(a) - 10), 4 * se_sd(10, n_archers))
  kurtosis <- function(x) mean((x - mean(x))^4) / mean((x - mean(x))^2)^2
  # Uniform: 1.8 (sd about 0.03 at this n); normal: 3 (sd about sqrt(24 / n) = 0.11).
  expect_lt(kurtosis(a), 2.2)
  normal <- attr(simulate_archers(n_archers = n_archers, n_shots = 1, seed = 4), "truth")
  expect_gt(kurtosis(normal$archer_effect), 2.5)
  # No spread at all is allowed too.
  flat <- simulate_archers(n_archers = 3, sd_archer = 0, sd_shot = 0, seed = 1)
  expect_equal(flat$distance, ifelse(flat$bow == "Southwood", 150, 160))
})

test_that("each user's number of ratings is the truth's n_ratings, with the asked mean", {
  d <- simulate_ratings(n_users = 50, mean_ratings = 6, seed = 5)
  truth <- attr(d, "truth")
  expect_named(d, c("rating", "user"))
  expect_type(d$rating, "double")
  expect_s3_class(d$user, "factor")
  expect_named(truth, c("intercept", "size_slope", "sd_user", "sd_rating", "sd_item",
                        "n_ratings", "user_effect"))
  expect_identical(truth$sd_item, 0)
  expect_identical(names(truth$n_ratings), levels(d$user))
  expect_identical(names(truth$user_effect), levels(d$user))
  expect_identical(c(table(d$user)), truth$n_ratings)
  expect_false(is.unsorted(as.integer(d$user))) # grouped by user
  expect_true(all(truth$n_ratings >= 1))

  n_users <- 20000
  for (distribution in c("geometric", "lognormal")) {
    n_i <- attr(simulate_ratings(n_users = n_users, mean_ratings = 20,
                                 size_distribution = distribution, seed = 6),
                "truth")$n_ratings
    expect_type(n_i, "integer")
    expect_gte(min(n_i), 1L)
    expect_lt(abs(mean(n_i) - 20), 4 * sd(n_i) / sqrt(n_users))
  }
  # The lognormal's tail is heavier: P(N > 150) is about 0.005 (about 100 users)
  # against 0.95^150 = 0.0005 (about 9 users).
  tail_share <- function(distribution) {
    n_i <- attr(simulate_ratings(n_users = n_users, size_distribution = distribution,
                                 seed = 7), "truth")$n_ratings
    mean(n_i > 150)
  }
  expect_gt(tail_share("lognormal"), 3 * tail_share("geometric"))
  ones <- simulate_ratings(n_users = 10, mean_ratings = 1, seed = 8)
  expect_true(all(attr(ones, "truth")$n_ratings == 1L))
  expect_identical(nrow(ones), 10L)
})

test_that("the ratings follow model (3): the slope on N_i is size_slope", {
  n_users <- 5000
  d <- simulate_ratings(n_users = n_users, seed = 9)
  truth <- attr(d, "truth")
  n_i <- unname(truth$n_ratings[as.integer(d$user)])
  a_i <- unname(truth$user_effect[as.integer(d$user)])

  error <- d$rating - (3.5 - 0.02 * n_i + a_i)
  expect_lt(abs(mean(error)), 4 / sqrt(nrow(d)))
  expect_lt(abs(sd(error) - 1), 4 * se_sd(1, nrow(d)))
  expect_lt(abs(sd(truth$user_effect) - 0.5), 4 * se_sd(0.5, n_users))
  # a_i is independent of N_i, the user's total effect is not.
  expect_lt(abs(cor(truth$user_effect, truth$n_ratings)), 4 / sqrt(n_users))
  expect_lt(cor(-0.02 * truth$n_ratings + truth$user_effect, truth$n_ratings), -0.5)

  # Row-level least squares, with a standard error clustered by user (the rows of a
  # user share a_i, so lm()'s own standard error would be too small).
  fit <- lm(d$rating ~ n_i)
  x <- n_i - mean(n_i)
  score <- tapply(x * residuals(fit), d$user, sum)
  se_slope <- sqrt(sum(score^2)) / sum(x^2)
  expect_lt(abs(coef(fit)[["n_i"]] - (-0.02)), 4 * se_slope)
  expect_lt(se_slope, 0.002) # the check is sharp: the slope is -0.02
})

test_that("with items, ratings carry popularity-weighted item effects", {
  n_items <- 50
  d <- simulate_ratings(n_users = 3000, n_items = n_items, sd_item = 0.4, seed = 10)
  truth <- attr(d, "truth")
  expect_named(d, c("rating", "user", "item"))
  expect_s3_class(d$item, "factor")
  expect_identical(truth$sd_item, 0.4)
  expect_length(truth$item_effect, n_items)
  expect_true(all(levels(d$item) %in% names(truth$item_effect)))
  expect_false(any(table(d$item) == 0)) # no unused levels

  n <- nrow(d)
  p1 <- 1 / sum(1 / seq_len(n_items)^0.8)
  share1 <- mean(d$item == names(truth$item_effect)[1])
  expect_lt(abs(share1 - p1), 4 * sqrt(p1 * (1 - p1) / n))
  expect_gt(sum(d$item == levels(d$item)[1]), sum(d$item == levels(d$item)[10]))

  error <- d$rating - (3.5 - 0.02 * truth$n_ratings[as.integer(d$user)] +
                         truth$user_effect[as.integer(d$user)] +
                         truth$item_effect[as.character(d$item)])
  expect_lt(abs(sd(error) - 1), 4 * se_sd(1, n))
  expect_lt(abs(mean(error)), 4 / sqrt(n))
})

test_that("bad arguments give errors naming the argument", {
  expect_error(simulate_archers(n_archers = 1), "`n_archers` must be a whole number of at least 2")
  expect_error(simulate_archers(n_archers = 2.5), "`n_archers`")
  expect_error(simulate_archers(n_archers = "50"), "`n_archers`")
  expect_error(simulate_archers(n_shots = 0), "`n_shots`")
  expect_error(simulate_archers(n_shots = c(1, 2)), "`n_shots`")
  expect_error(simulate_archers(sd_archer = -1), "`sd_archer`")
  expect_error(simulate_archers(sd_shot = -0.1), "`sd_shot`")
  expect_error(simulate_archers(mean_distance = NA), "`mean_distance`")
  expect_error(simulate_archers(bow_effect = Inf), "`bow_effect`")
  expect_error(simulate_archers(archer_effects = "cauchy"), "`archer_effects`")
  expect_error(simulate_archers(seed = "a"), "`seed`")
  expect_error(simulate_ratings(n_users = 1), "`n_users`")
  expect_error(simulate_ratings(mean_ratings = 0.5), "`mean_ratings`")
  expect_error(simulate_ratings(sd_user = -1), "`sd_user`")
  expect_error(simulate_ratings(sd_rating = -1), "`sd_rating`")
  expect_error(simulate_ratings(sd_item = -1), "`sd_item`")
  expect_error(simulate_ratings(n_items = -1), "`n_items`")
  expect_error(simulate_ratings(size_slope = NULL), "`size_slope`")
  expect_error(simulate_ratings(intercept = "3"), "`intercept`")
  expect_error(simulate_ratings(size_distribution = "poisson"), "`size_distribution`")
  expect_error(simulate_ratings(seed = c(1, 2)), "`seed`")
  # Partial matching of the choices, as match.arg() does.
  expect_identical(attr(simulate_archers(n_archers = 2, archer_effects = "unif", seed = 1),
                        "truth")$sd_archer, 23)
})

test_that("simulate_crossed() draws power-law users and items, reproducibly", {
  d <- simulate_crossed(20000, n_users = 300, n_items = 100, seed = 9)
  expect_identical(d, simulate_crossed(20000, n_users = 300, n_items = 100, seed = 9))
  expect_named(d, c("y", "x", "user", "item"))
  expect_identical(nrow(d), 20000L)
  # Levels are the codes that occur, in order of activity: u1 is the most active user.
  expect_true(all(table(d$user) > 0))
  counts <- as.numeric(table(d$user))
  expect_identical(levels(d$user)[1], "u1")
  # Zipf with exponent 1: user 1 is drawn about 10 times as often as user 10.
  expect_equal(counts[1] / counts[10], 10, tolerance = 0.25)
  truth <- attr(d, "truth")
  expect_equal(unname(coef(lm(y ~ x, data = d))[2]), truth$slope, tolerance = 0.1)
  expect_error(simulate_crossed(1), "`n_obs` must be a whole number")
  expect_error(simulate_crossed(100, sd_user = -1), "`sd_user`")
})

test_that("a seed must be a whole number in R's integer range", {
  expect_error(simulate_archers(seed = 1.5), "`seed` must be a single number or NULL: a whole number")
  expect_error(simulate_crossed(100, seed = 1e20), "got 1e\\+20")
  expect_error(simulate_ratings(seed = Inf), "got Inf")
})

test_that("simulate_crossed() refuses sizes it cannot honour at once, instead of running for minutes", {
  run <- expect_error_in_fresh_process(
    "simulate_crossed(10, n_users = 1e9)",
    "`n_users` \\(1,000,000,000\\) is larger than `n_obs` \\(10\\)", timeout = 30
  )
  expect_error(simulate_crossed(10, n_items = 11), "`n_items` \\(11\\) is larger than `n_obs` \\(10\\)")
  available <- fullrandom:::available_memory_bytes()
  skip_if(is.na(available) || available > 90e9, "the available memory is not known or too large here")
  expect_error(simulate_crossed(2e9, n_users = 10, n_items = 10),
               "needs at least 96.0 GB of memory, more than the")
})

test_that("simulate_clicks() draws the click-through design: arms, impressions and clicks", {
  d <- simulate_clicks(n_users = 4000, seed = 3)
  expect_identical(d, simulate_clicks(n_users = 4000, seed = 3))
  expect_named(d, c("clicks", "impressions", "display", "user"))
  expect_type(d$clicks, "integer")
  expect_identical(nlevels(d$user), 4000L)
  expect_false(is.unsorted(as.integer(d$user)))
  # One row per control user (display 0), two per treated user (display 0, then 1).
  rows <- tabulate(d$user, 4000L)
  expect_true(all(rows %in% 1:2))
  expect_identical(d$display, sequence(rows) - 1L)
  treated <- rows == 2L
  expect_equal(mean(treated), 0.5, tolerance = 5 * sqrt(0.25 / 4000) / 0.5)
  expect_true(all(d$clicks >= 0L & d$clicks <= d$impressions & d$impressions >= 1L))
  # Every user's impressions: 2 + Poisson(20), so mean 22 and variance 20.
  per_user <- as.vector(tapply(d$impressions, d$user, sum))
  expect_lt(abs(mean(per_user) - 22), 5 * sqrt(20 / 4000))
  expect_lt(abs(var(per_user) - 20), 5 * sqrt(2 * 20^2 / 4000 + 20 / 4000))
  # A treated user's two parts are each 1 + Poisson(10).
  new_part <- d$impressions[d$display == 1L]
  expect_lt(abs(mean(new_part) - 11), 5 * sqrt(10 / sum(treated)))

  truth <- attr(d, "truth")
  expect_identical(names(truth$user_effect), levels(d$user))
  expect_equal(truth$logit, -4.5 + 0.5 * d$display + unname(truth$user_effect[as.integer(d$user)]))
  expect_lt(abs(sd(truth$user_effect) - 5), 5 * se_sd(5, 4000))
})

test_that("simulate_clicks() clicks follow the logistic model with the display effect", {
  # Without user effects the click rates are plogis(intercept) and plogis(intercept + effect).
  d <- simulate_clicks(n_users = 20000, intercept = -1, display_effect = 0.5, sd_user = 0, seed = 4)
  for (i in 0:1) {
    rows <- d$display == i
    p <- stats::plogis(-1 + 0.5 * i)
    n <- sum(d$impressions[rows])
    expect_lt(abs(sum(d$clicks[rows]) / n - p), 5 * sqrt(p * (1 - p) / n))
  }
})

test_that("simulate_clicks() draws future data from the same users with user_effect", {
  d <- simulate_clicks(n_users = 50, seed = 5)
  effects <- attr(d, "truth")$user_effect
  future <- simulate_clicks(user_effect = effects, seed = 6)
  expect_identical(levels(future$user), levels(d$user))
  expect_identical(attr(future, "truth")$user_effect, effects)
  expect_false(identical(future$impressions, d$impressions[seq_len(nrow(future))]))
  # The user effects, when given, are not drawn: the rest of the stream is the same.
  unnamed <- simulate_clicks(user_effect = unname(effects), seed = 6)
  expect_identical(levels(unnamed$user), levels(d$user)) # the default names
  expect_identical(unnamed$clicks, future$clicks)
  expect_identical(simulate_clicks(n_users = 50, user_effect = effects, seed = 6), future)
})

test_that("simulate_clicks() refuses bad arguments with errors naming them", {
  expect_error(simulate_clicks(n_users = 1), "`n_users` must be a whole number of at least 2")
  expect_error(simulate_clicks(n_users = 10, user_effect = rnorm(3)), "`user_effect` has 3 values but `n_users` is 10")
  expect_error(simulate_clicks(user_effect = c(1, NA)), "`user_effect` must be NULL or a numeric vector")
  expect_error(simulate_clicks(user_effect = c(a = 1, a = 2)), "names of `user_effect` must be unique")
  expect_error(simulate_clicks(mean_impressions = -1), "`mean_impressions` must be a non-negative")
  expect_error(simulate_clicks(p_treated = 1.5), "`p_treated` must be a probability")
  expect_error(simulate_clicks(sd_user = -1), "`sd_user` must be a non-negative")
  expect_error(simulate_clicks(display_effect = NA), "`display_effect` must be a single finite number")
  expect_error(simulate_clicks(seed = 1.5), "`seed`")
})
