# Simulated data sets with known truth: Jaime's archers (a balanced random-intercept
# experiment) and Matloff's jaded raters (random group sizes that carry an effect).

#' Simulate Jaime's archers experiment
#'
#' Simulates the experiment of the "Jaime's archers" story: `n_archers` archers,
#' drawn at random from a population, each shoot a Northwood bow and a Southwood bow
#' `n_shots` times, and the distance of every shot is recorded. The shot distances
#' follow the random-intercept model
#'
#' `distance_ijk = mean_distance + bow_effect * 1(bow_i = "Southwood") + a_j + e_ijk`,
#'
#' for bow `i`, archer `j` and shot `k`, where the archer effects `a_j` are
#' independent with mean 0 and standard deviation `sd_archer`, and the shot errors
#' `e_ijk` are independent `N(0, sd_shot^2)`. The archer effects are normal
#' (`archer_effects = "normal"`) or uniform on `[-sqrt(3) sd_archer, sqrt(3) sd_archer]`
#' (`"uniform"`, same standard deviation): the method of moments needs no normality,
#' so [fr_fit()] estimates the same variance components either way.
#'
#' The model is fitted by `fr_fit(distance ~ bow + (1 | archer), data)`: the
#' coefficient `bowSouthwood` estimates `bow_effect` and the variance components
#' estimate `sd_archer^2` and `sd_shot^2`.
#'
#' Archers get fantasy names made of a first name and a family name from short
#' built-in lists (400 combinations), drawn without repetition; when `n_archers`
#' exceeds the number of combinations the names are reused with a number appended
#' (`"Aldren Ashford 2"`), so the names are always unique. The rows are grouped by
#' archer, in the order the archers were drawn (which is also the order of the levels
#' of `archer`); within an archer the `n_shots` Northwood shots come first, then the
#' Southwood shots.
#'
#' @param n_archers number of archers, a whole number of at least 2.
#' @param n_shots number of shots of each archer with each bow, a whole number of at
#'   least 1.
#' @param mean_distance mean distance of a Northwood shot (meters).
#' @param bow_effect mean difference Southwood minus Northwood (meters).
#' @param sd_archer standard deviation of the archer effects (non-negative).
#' @param sd_shot standard deviation of the shot errors (non-negative).
#' @param archer_effects distribution of the archer effects, `"normal"` or
#'   `"uniform"`.
#' @param seed `NULL` to use the current random number stream, or a number: the
#'   result is then reproducible (it is drawn with R's default generators, whatever
#'   the session's [RNGkind()]) and the caller's random number state, `.Random.seed`
#'   in the global environment, is left exactly as it was (also when it does not
#'   exist).
#' @return a data frame with `2 * n_archers * n_shots` rows and columns `distance`
#'   (double), `bow` (factor with levels `"Northwood"`, `"Southwood"`), `archer`
#'   (factor) and `shot` (integer, `1..n_shots` within archer and bow). Its attribute
#'   `"truth"` is a list with `mean_distance`, `bow_effect`, `sd_archer`, `sd_shot`
#'   and `archer_effect`, the drawn `a_j` as a numeric vector named by archer.
#' @seealso [simulate_ratings()], [fr_fit()]
#' @references "GLMMs with Cersei Lannister" (blog post, 2016), the story "Jaime's
#'   archers".
#' @examples
#' archers <- simulate_archers(n_archers = 3, seed = 1)
#' head(archers)
#' attr(archers, "truth")$archer_effect
#' # Archer means, with the Southwood shots moved back by the true bow effect:
#' big <- simulate_archers(n_archers = 200, archer_effects = "uniform", seed = 2)
#' truth <- attr(big, "truth")
#' adjusted <- big$distance - truth$bow_effect * (big$bow == "Southwood")
#' sd(tapply(adjusted, big$archer, mean))  # near sd_archer = 23
#' \donttest{
#' fit <- fr_fit(distance ~ bow + (1 | archer), data = big)
#' fit
#' }
#' @export
simulate_archers <- function(n_archers = 50, n_shots = 10, mean_distance = 160,
                             bow_effect = -10, sd_archer = 23, sd_shot = 5,
                             archer_effects = c("normal", "uniform"), seed = NULL) {
  n_archers <- check_whole_number(n_archers, "n_archers", at_least = 2)
  n_shots <- check_whole_number(n_shots, "n_shots", at_least = 1)
  check_real_number(mean_distance, "mean_distance")
  check_real_number(bow_effect, "bow_effect")
  check_real_number(sd_archer, "sd_archer", non_negative = TRUE)
  check_real_number(sd_shot, "sd_shot", non_negative = TRUE)
  archer_effects <- match_choice(archer_effects, c("normal", "uniform"), "archer_effects")
  check_seed(seed)

  with_local_seed(seed, {
    archer_names <- draw_archer_names(n_archers)
    effect <- switch(archer_effects,
      normal = stats::rnorm(n_archers, 0, sd_archer),
      uniform = stats::runif(n_archers, -sqrt(3) * sd_archer, sqrt(3) * sd_archer)
    )
    names(effect) <- archer_names
    per_archer <- 2L * n_shots
    n <- n_archers * per_archer
    archer <- factor(rep(archer_names, each = per_archer), levels = archer_names)
    bow <- factor(rep(rep(c("Northwood", "Southwood"), each = n_shots), times = n_archers),
                  levels = c("Northwood", "Southwood"))
    shot <- rep(seq_len(n_shots), times = 2L * n_archers)
    distance <- mean_distance + bow_effect * (bow == "Southwood") +
      rep(unname(effect), each = per_archer) + stats::rnorm(n, 0, sd_shot)
    out <- data.frame(distance = as.double(distance), bow = bow, archer = archer,
                      shot = as.integer(shot))
    attr(out, "truth") <- list(mean_distance = mean_distance, bow_effect = bow_effect,
                               sd_archer = sd_archer, sd_shot = sd_shot,
                               archer_effect = effect)
    out
  })
}

#' Simulate jaded raters: ratings whose user effect depends on the user's activity
#'
#' Simulates the recommender-system setting of model (3) of Matloff's Full
#' Randomness paper: user `i` rates a random number `N_i` of items, and users who rate
#' a lot may become jaded and rate lower. The ratings follow
#'
#' `rating_ij = intercept + size_slope * N_i + a_i + b_item(ij) + e_ij`, `j = 1..N_i`,
#'
#' with user effects `a_i ~ N(0, sd_user^2)` independent of `N_i`, item effects
#' `b ~ N(0, sd_item^2)` (only when `n_items > 0`) and errors
#' `e_ij ~ N(0, sd_rating^2)`, all independent. A user's total effect,
#' `size_slope * N_i + a_i`, is therefore correlated with the user's number of ratings.
#' The ratings are continuous (not rounded to stars), so the model holds exactly.
#'
#' The model is fitted by `fr_fit(rating ~ size(user) + (1 | user), data)`, where
#' `size(user)` (see [size()]) is the number of ratings of the row's user, `N_i`; with
#' items, add `+ (1 | item)`.
#'
#' The number of ratings `N_i` is drawn independently for each user, with mean exactly
#' `mean_ratings`:
#'
#' * `"geometric"`: `N_i = 1 + G`, `G` geometric with success probability
#'   `1 / mean_ratings` (counting failures, as [stats::rgeom()]);
#' * `"lognormal"`: a heavier tail, `N_i = 1 + R(X)` with `X` lognormal with `sdlog = 1`
#'   and mean `mean_ratings - 1`, and `R` a random rounding (`X` rounded up with
#'   probability equal to its fractional part, otherwise down), which keeps the mean.
#'
#' With `mean_ratings = 1` every user rates once.
#'
#' With `n_items > 0` the items are named `item1`, `item2`, ... (zero-padded) in order
#' of popularity: each rating is of an item drawn independently, with probability
#' proportional to `1 / rank^0.8`, so a user may rate the same item more than once
#' (replicated ratings, which the model allows). The levels of `item` are the items
#' rated at least once, in order of popularity.
#'
#' Users are named `user1`, `user2`, ... (zero-padded); the rows are grouped by user,
#' in the order of the levels of `user`.
#'
#' @param n_users number of users, a whole number of at least 2.
#' @param mean_ratings mean number of ratings per user, a number of at least 1.
#' @param intercept the constant `c1` of the model.
#' @param size_slope the effect `c2` of one more rating on all the user's ratings.
#' @param sd_user standard deviation of the user effects `a_i` (non-negative).
#' @param sd_rating standard deviation of the rating errors (non-negative).
#' @param n_items number of items (a whole number, 0 for no item effect).
#' @param sd_item standard deviation of the item effects (non-negative); not used
#'   when `n_items = 0`.
#' @param size_distribution distribution of the numbers of ratings, `"geometric"` or
#'   `"lognormal"` (see Details).
#' @param seed `NULL` to use the current random number stream, or a number: the
#'   result is then reproducible (it is drawn with R's default generators, whatever
#'   the session's [RNGkind()]) and the caller's random number state, `.Random.seed`
#'   in the global environment, is left exactly as it was (also when it does not
#'   exist).
#' @return a data frame with one row per rating and columns `rating` (double), `user`
#'   (factor) and, when `n_items > 0`, `item` (factor). Its attribute `"truth"` is a
#'   list with `intercept`, `size_slope`, `sd_user`, `sd_rating`, `sd_item` (0 when
#'   `n_items = 0`, as there is then no item effect), `n_ratings` (the `N_i`) and
#'   `user_effect` (the `a_i`), both named by user, and, when `n_items > 0`,
#'   `item_effect` (the `b` of all `n_items` items, named by item).
#' @seealso [simulate_archers()], [fr_fit()], [size()]
#' @references N. Matloff, "A New Framework for Random Effects Models" (Full
#'   Randomness), model (3).
#' @examples
#' ratings <- simulate_ratings(n_users = 5, mean_ratings = 4, seed = 1)
#' ratings
#' attr(ratings, "truth")$n_ratings
#' # The slope of the user means on the users' numbers of ratings estimates size_slope:
#' big <- simulate_ratings(n_users = 2000, size_distribution = "lognormal", seed = 2)
#' n_i <- attr(big, "truth")$n_ratings
#' coef(lm(tapply(big$rating, big$user, mean) ~ n_i))
#' \donttest{
#' fit <- fr_fit(rating ~ size(user) + (1 | user), data = big)
#' fit
#' with_items <- simulate_ratings(n_users = 500, n_items = 200, seed = 3)
#' fr_fit(rating ~ size(user) + (1 | user) + (1 | item), data = with_items)
#' }
#' @export
simulate_ratings <- function(n_users = 500, mean_ratings = 20, intercept = 3.5,
                             size_slope = -0.02, sd_user = 0.5, sd_rating = 1,
                             n_items = 0, sd_item = 0.3,
                             size_distribution = c("geometric", "lognormal"), seed = NULL) {
  n_users <- check_whole_number(n_users, "n_users", at_least = 2)
  check_real_number(mean_ratings, "mean_ratings")
  if (mean_ratings < 1) {
    stop("`mean_ratings` must be a number of at least 1 (every user rates at least once)",
         call. = FALSE)
  }
  check_real_number(intercept, "intercept")
  check_real_number(size_slope, "size_slope")
  check_real_number(sd_user, "sd_user", non_negative = TRUE)
  check_real_number(sd_rating, "sd_rating", non_negative = TRUE)
  n_items <- check_whole_number(n_items, "n_items", at_least = 0)
  check_real_number(sd_item, "sd_item", non_negative = TRUE)
  size_distribution <- match_choice(size_distribution, c("geometric", "lognormal"),
                                    "size_distribution")
  check_seed(seed)

  with_local_seed(seed, {
    users <- padded_names("user", n_users)
    n_ratings <- draw_group_sizes(n_users, mean_ratings, size_distribution)
    user_effect <- stats::rnorm(n_users, 0, sd_user)
    names(n_ratings) <- names(user_effect) <- users
    n <- sum(n_ratings)
    user <- factor(rep(users, times = n_ratings), levels = users)
    rating <- intercept + rep(size_slope * n_ratings + user_effect, times = n_ratings)
    truth <- list(intercept = intercept, size_slope = size_slope, sd_user = sd_user,
                  sd_rating = sd_rating, sd_item = if (n_items > 0) sd_item else 0,
                  n_ratings = n_ratings, user_effect = user_effect)
    out <- data.frame(rating = numeric(n), user = user)
    if (n_items > 0) {
      items <- padded_names("item", n_items)
      item_effect <- stats::rnorm(n_items, 0, sd_item)
      names(item_effect) <- items
      popularity <- 1 / seq_len(n_items)^0.8
      item_index <- sample.int(n_items, n, replace = TRUE, prob = popularity)
      rating <- rating + item_effect[item_index]
      out$item <- factor(items[item_index], levels = items[sort(unique(item_index))])
      truth$item_effect <- item_effect
    }
    out$rating <- as.double(unname(rating) + stats::rnorm(n, 0, sd_rating))
    attr(out, "truth") <- truth
    out
  })
}

#' Simulate large crossed ratings data with power-law activity and popularity
#'
#' Simulates the crossed design of recommender data at any size, for benchmarks and
#' scale tests: `n_obs` ratings, each by a user and of an item drawn independently,
#' user `i` with probability proportional to `1 / i^user_exponent` and item `j` with
#' probability proportional to `1 / j^item_exponent` (Zipf laws: a few very active
#' users and very popular items, a long tail of rare ones). The ratings follow
#'
#' `y = intercept + slope * x + a_user + b_item + e`,
#'
#' with `x ~ N(0, 1)`, `a ~ N(0, sd_user^2)`, `b ~ N(0, sd_item^2)` and
#' `e ~ N(0, sd_residual^2)`, all independent, which `fr_fit(y ~ x + (1 | user) +
#' (1 | item), data)` fits. A pair may be drawn twice (a replicated cell). Users and
#' items never drawn do not appear, so the numbers of levels can be a little below
#' `n_users` and `n_items`. The defaults give the shape of MovieLens ml-32m (32,000,204
#' ratings of 84,432 movies by 200,948 users) at any `n_obs`: about 160 ratings per user
#' and 380 per item.
#'
#' The factors are built from integer codes directly, so 32 million rows take seconds
#' and about 0.8 GB.
#'
#' With `family = binomial` or `poisson` (as [glm()] takes them: links logit and probit,
#' and log) the same design and effects give a generalized linear mixed model instead:
#' `eta = intercept + slope * x + a_user + b_item`, and `y ~ Binomial(size, h(eta))`
#' (successes out of `size` trials; `size = 1`, the default, gives 0/1 responses such as
#' clicks or ratings above a threshold) or `y ~ Poisson(exp(eta))`, `h` the inverse link.
#' `fr_fit(y ~ x + (1 | user) + (1 | item), data, family = binomial)` (with `size > 1`,
#' `cbind(y, size - y) ~ ...`) or `family = poisson` fits them.
#'
#' @param n_obs number of ratings.
#' @param n_users,n_items numbers of users and items to draw from.
#' @param user_exponent,item_exponent exponents of the Zipf laws (0 is uniform).
#' @param intercept,slope the fixed effects (on the scale of the linear predictor for
#'   binomial and Poisson responses). By default `intercept` is 3.5 for `gaussian` and 0
#'   otherwise (success probability 1/2, Poisson mean 1 at zero effects).
#' @param sd_user,sd_item,sd_residual standard deviations of the user and item effects
#'   and of the errors (`sd_residual` only for `gaussian`: binomial and Poisson
#'   responses have no residual term, and giving it with them is an error).
#' @param seed `NULL` or a number, as for [simulate_archers()].
#' @param family `gaussian` (the default), `binomial` or `poisson`, as [glm()] takes a
#'   family (`binomial`, `binomial()`, `"binomial"`, `poisson(link = "log")`).
#' @param size for `family = binomial`, the number of trials of every row, a whole number
#'   of at least 1 (1: Bernoulli responses).
#' @return a data frame with columns `y` (double; for binomial the successes and for
#'   Poisson the counts, as integers), `x` (double), `user` and `item` (factors with
#'   levels `"u1"`, `"u2"`, ... and `"i1"`, ... in order of activity) and, for binomial
#'   data with `size > 1`, `size` (integer, the trials), with attribute `"truth"`: a list
#'   of the parameters (with `family` and `link`, and `size` for binomial data).
#' @seealso [simulate_ratings()] for Matloff's one-way model with `size()`.
#' @examples
#' d <- simulate_crossed(1e4, seed = 1)
#' c(users = nlevels(d$user), items = nlevels(d$item))
#' head(sort(table(d$user), decreasing = TRUE))
#' fr_fit(y ~ x + (1 | user) + (1 | item), data = d)
#' # Bernoulli responses (clicks) on the same design, and counts.
#' clicks <- simulate_crossed(2e4, intercept = -1, family = binomial, seed = 1)
#' mean(clicks$y)
#' fr_fit(y ~ x + (1 | user) + (1 | item), data = clicks, family = binomial)
#' counts <- simulate_crossed(2e4, family = poisson, seed = 1)
#' table(counts$y)[1:5]
#' @export
simulate_crossed <- function(n_obs, n_users = max(2, round(n_obs / 160)),
                             n_items = max(2, round(n_obs / 380)), user_exponent = 1,
                             item_exponent = 1, intercept = NULL, slope = 0.2,
                             sd_user = 0.5, sd_item = 0.4, sd_residual = 1, seed = NULL,
                             family = gaussian, size = 1) {
  family <- resolve_family(family, parent.frame())
  gaussian_family <- family$family == "gaussian"
  if (!gaussian_family && !missing(sd_residual)) {
    stop(sprintf("`sd_residual` applies to gaussian responses; a %s response has no residual term",
                 family$family), call. = FALSE)
  }
  if (family$family != "binomial" && !missing(size)) {
    stop(sprintf("`size` (the trials) applies to family = binomial, not %s", family$family), call. = FALSE)
  }
  size <- check_whole_number(size, "size", at_least = 1)
  if (is.null(intercept)) intercept <- if (gaussian_family) 3.5 else 0
  n_obs <- check_whole_number(n_obs, "n_obs", at_least = 2)
  n_users <- check_whole_number(n_users, "n_users", at_least = 2)
  n_items <- check_whole_number(n_items, "n_items", at_least = 2)
  for (name in c("user_exponent", "item_exponent", "sd_user", "sd_item", "sd_residual")) {
    check_real_number(get(name), name, non_negative = TRUE)
  }
  check_real_number(intercept, "intercept")
  check_real_number(slope, "slope")
  check_seed(seed)
  check_crossed_sizes(n_obs, n_users, n_items)
  with_local_seed(seed, {
    user <- sample.int(n_users, n_obs, replace = TRUE, prob = 1 / seq_len(n_users)^user_exponent)
    item <- sample.int(n_items, n_obs, replace = TRUE, prob = 1 / seq_len(n_items)^item_exponent)
    a <- stats::rnorm(n_users, 0, sd_user)
    b <- stats::rnorm(n_items, 0, sd_item)
    x <- stats::rnorm(n_obs)
    if (gaussian_family) {
      y <- intercept + slope * x + a[user] + b[item] + stats::rnorm(n_obs, 0, sd_residual)
      truth <- list(intercept = intercept, slope = slope, sd_user = sd_user,
                    sd_item = sd_item, sd_residual = sd_residual)
    } else {
      y <- crossed_glmm_response(intercept + slope * x + a[user] + b[item], family, size)
      truth <- c(list(intercept = intercept, slope = slope, sd_user = sd_user, sd_item = sd_item,
                      family = family$family, link = family$link),
                 if (family$family == "binomial") list(size = size))
    }
    out <- data.frame(y = y, x = x, user = codes_as_factor(user, "u"),
                      item = codes_as_factor(item, "i"))
    if (family$family == "binomial" && size > 1) out$size <- rep.int(as.integer(size), n_obs)
    attr(out, "truth") <- truth
    out
  })
}

# Binomial successes out of `size` trials (integers) or Poisson counts, given the linear
# predictor. Counts beyond the integer range are an error, not NA.
crossed_glmm_response <- function(eta, family, size) {
  mu <- family$linkinv(eta)
  rm(eta)
  if (family$family == "binomial") return(stats::rbinom(length(mu), size, mu))
  if (any(mu > 1e9)) {
    stop(sprintf(paste(
      "the Poisson means reach %.3g (exp of the linear predictor): counts that large do not fit",
      "in integers; lower the intercept or the sds"
    ), max(mu)), call. = FALSE)
  }
  stats::rpois(length(mu), mu)
}

#' Simulate click-through data: clicks out of impressions per user and display
#'
#' Simulates the online-advertising experiment of the click-through study (the second
#' half of "GLMMs with Cersei Lannister"): users see an ad display a random number of
#' times ("impressions") and click on it some of those times. A coin flip puts each user
#' in the treatment arm with probability `p_treated`; a treated user's impressions are
#' split between the current display (`display = 0`) and the new one (`display = 1`),
#' a control user sees only the current display. The clicks of user `j` on display `i`
#' follow the logistic random-intercept model
#'
#' `clicks_ij ~ Binomial(impressions_ij, p_ij)`,
#' `logit(p_ij) = intercept + display_effect * 1(i = 1) + a_j`, `a_j ~ N(0, sd_user^2)`,
#'
#' which `fr_fit(cbind(clicks, impressions - clicks) ~ display + (1 | user), data,
#' family = binomial)` fits (as does [lme4::glmer()]).
#'
#' Every user's impressions come in two parts, each `1 + Poisson(mean_impressions / 2)`:
#' a control user sees the current display `2 + Poisson(mean_impressions)` times (one
#' row), a treated user sees the current display for the first part and the new display
#' for the second (two rows). The defaults are the study's: 1,000 users, 20 impressions
#' on average (22 with the two added ones), a baseline logit of -4.5 (a click-through
#' rate near 1%), a display effect of 0.5 and a user sd of 5.
#'
#' Future data from the same users, to measure prediction error, are drawn by passing
#' the user effects of a first simulation back as `user_effect`: the users keep their
#' effects (and names), and get new arms, impressions and clicks.
#'
#' @param n_users number of users, a whole number of at least 2; by default the length
#'   of `user_effect` when that is given, otherwise 1000.
#' @param mean_impressions the Poisson mean of a user's impressions beyond the two every
#'   user has (a non-negative number).
#' @param intercept the logit of the click probability on the current display for a
#'   user with effect 0.
#' @param display_effect the effect of the new display on the logit scale.
#' @param sd_user standard deviation of the user effects (non-negative); not used when
#'   `user_effect` is given.
#' @param p_treated probability that a user is in the treatment arm, in `[0, 1]`.
#' @param user_effect `NULL` to draw the user effects, or a numeric vector of them (for
#'   instance `attr(d, "truth")$user_effect` of an earlier simulation `d`), one per user;
#'   its names, if any, are the users' names.
#' @param seed `NULL` or a number, as for [simulate_archers()].
#' @return a data frame with one row per user and display seen, grouped by user, and
#'   columns `clicks` and `impressions` (integers, `0 <= clicks <= impressions`),
#'   `display` (integer, 0 for the current display and 1 for the new one) and `user`
#'   (factor, its levels all the users in order). Its attribute `"truth"` is a list with
#'   `intercept`, `display_effect`, `sd_user`, `user_effect` (named by user) and `logit`,
#'   the true logit of every row.
#' @seealso [fr_fit()] with `family = binomial`; [simulate_crossed()] for Gaussian
#'   crossed data.
#' @references "GLMMs with Cersei Lannister" (blog post, 2016), the section "A
#'   larger-scale example"; the vignette `vignette("click-through", package =
#'   "fullrandom")`.
#' @examples
#' d <- simulate_clicks(n_users = 6, seed = 1)
#' d
#' # Future data from the same users: same effects, new arms, impressions and clicks.
#' future <- simulate_clicks(user_effect = attr(d, "truth")$user_effect, seed = 2)
#' future
#' \donttest{
#' d <- simulate_clicks(n_users = 2000, seed = 3)
#' fr_fit(cbind(clicks, impressions - clicks) ~ display + (1 | user), d,
#'        family = binomial)
#' }
#' @export
simulate_clicks <- function(n_users = if (is.null(user_effect)) 1000 else length(user_effect),
                            mean_impressions = 20, intercept = -4.5, display_effect = 0.5,
                            sd_user = 5, p_treated = 0.5, user_effect = NULL, seed = NULL) {
  if (!is.null(user_effect) && (!is.numeric(user_effect) || !is.null(dim(user_effect)) ||
                                  any(!is.finite(user_effect)))) {
    stop("`user_effect` must be NULL or a numeric vector of finite user effects", call. = FALSE)
  }
  n_users <- check_whole_number(n_users, "n_users", at_least = 2)
  if (!is.null(user_effect) && length(user_effect) != n_users) {
    stop(sprintf("`user_effect` has %d values but `n_users` is %d: give one effect per user",
                 length(user_effect), n_users), call. = FALSE)
  }
  check_real_number(mean_impressions, "mean_impressions")
  if (mean_impressions < 0) stop("`mean_impressions` must be a non-negative number", call. = FALSE)
  check_real_number(intercept, "intercept")
  check_real_number(display_effect, "display_effect")
  check_real_number(sd_user, "sd_user", non_negative = TRUE)
  check_real_number(p_treated, "p_treated")
  if (p_treated < 0 || p_treated > 1) stop("`p_treated` must be a probability, in [0, 1]", call. = FALSE)
  users <- if (!is.null(names(user_effect))) names(user_effect) else padded_names("user", n_users)
  if (anyNA(users) || anyDuplicated(users)) {
    stop("the names of `user_effect` must be unique and not missing", call. = FALSE)
  }
  check_seed(seed)

  with_local_seed(seed, {
    effect <- if (is.null(user_effect)) stats::rnorm(n_users, 0, sd_user) else as.double(user_effect)
    names(effect) <- users
    treated <- stats::runif(n_users) < p_treated
    first <- 1L + stats::rpois(n_users, mean_impressions / 2)
    second <- 1L + stats::rpois(n_users, mean_impressions / 2)
    # A control user has one row (display 0, all impressions), a treated user two: the
    # first part of the impressions on display 0, the second on display 1.
    rows <- 1L + treated
    user <- rep.int(seq_len(n_users), rows)
    display <- sequence(rows) - 1L
    impressions <- ifelse(display == 1L, second[user],
                          ifelse(treated[user], first[user], first[user] + second[user]))
    logit <- intercept + display_effect * display + unname(effect[user])
    clicks <- stats::rbinom(length(user), impressions, stats::plogis(logit))
    out <- data.frame(clicks = as.integer(clicks), impressions = as.integer(impressions),
                      display = as.integer(display),
                      user = structure(user, levels = users, class = "factor"))
    attr(out, "truth") <- list(intercept = intercept, display_effect = display_effect,
                               sd_user = sd_user, user_effect = effect, logit = logit)
    out
  })
}

# ---- internal helpers -------------------------------------------------------------

# Sizes simulate_crossed() can honour, refused before minutes of drawing: each of the
# n_users (n_items) levels is drawn with its own probability, so more of them than rows
# only costs time and memory, and the data must fit in memory: the result alone takes 24
# bytes a row, the draws at least as much again, and the weighted sampling 8 bytes a level
# (a lower bound, so that only sizes that cannot work are refused).
check_crossed_sizes <- function(n_obs, n_users, n_items) {
  for (name in c("n_users", "n_items")) {
    n_levels <- get(name)
    if (n_levels > n_obs) {
      stop(sprintf(paste(
        "`%s` (%s) is larger than `n_obs` (%s): at most n_obs of them can appear in the data;",
        "use %s <= n_obs"
      ), name, format(n_levels, big.mark = ","), format(n_obs, big.mark = ","), name), call. = FALSE)
    }
  }
  needed <- 48 * n_obs + 8 * (n_users + n_items)
  available <- available_memory_bytes()
  if (!is.na(available) && needed > available) {
    stop(sprintf(paste(
      "simulate_crossed(n_obs = %s) needs at least %.1f GB of memory, more than the %.1f GB",
      "available; use a smaller n_obs"
    ), format(n_obs, big.mark = ","), needed / 1e9, available / 1e9), call. = FALSE)
  }
  invisible()
}

# The memory available to new allocations, in bytes (MemAvailable of /proc/meminfo on
# Linux), or NA where it is not known.
available_memory_bytes <- function() {
  info <- tryCatch(readLines("/proc/meminfo", n = 5L, warn = FALSE), error = function(e) character())
  line <- grep("^MemAvailable:", info, value = TRUE)
  if (length(line) != 1L) return(NA_real_)
  kb <- suppressWarnings(as.numeric(gsub("[^0-9]", "", line)))
  if (is.na(kb)) NA_real_ else kb * 1024
}

# Evaluates `expr` (lazily, after seeding) with the random number generators seeded by
# `seed`, and puts the caller's state back afterwards: `.Random.seed` in the global
# environment is restored exactly, or removed again when it did not exist (with the
# generator kinds that were in use restored too). With `seed = NULL` it just evaluates
# `expr` in the current stream.
with_local_seed <- function(seed, expr) {
  if (is.null(seed)) {
    return(expr)
  }
  env <- globalenv()
  had_seed <- exists(".Random.seed", envir = env, inherits = FALSE)
  old_seed <- if (had_seed) get(".Random.seed", envir = env, inherits = FALSE)
  old_kind <- RNGkind()
  on.exit({
    if (had_seed) {
      # The first element of the seed encodes the generator kinds, so this restores
      # them as well.
      assign(".Random.seed", old_seed, envir = env)
    } else {
      suppressWarnings(RNGkind(kind = old_kind[1], normal.kind = old_kind[2],
                               sample.kind = old_kind[3]))
      if (exists(".Random.seed", envir = env, inherits = FALSE)) {
        rm(".Random.seed", envir = env)
      }
    }
  }, add = TRUE)
  set.seed(seed, kind = "Mersenne-Twister", normal.kind = "Inversion",
           sample.kind = "Rejection")
  expr
}

check_whole_number <- function(x, name, at_least) {
  if (!is.numeric(x) || length(x) != 1 || !is.finite(x) || x != round(x) || x < at_least ||
      x > .Machine$integer.max) {
    stop(sprintf("`%s` must be a whole number of at least %d", name, at_least),
         call. = FALSE)
  }
  as.integer(x)
}

check_real_number <- function(x, name, non_negative = FALSE) {
  if (!is.numeric(x) || length(x) != 1 || !is.finite(x)) {
    stop(sprintf("`%s` must be a single finite number", name), call. = FALSE)
  }
  if (non_negative && x < 0) {
    stop(sprintf("`%s` must be a non-negative number (a standard deviation)", name),
         call. = FALSE)
  }
  invisible(x)
}

# A seed set.seed() takes as given: a whole number in R's integer range. set.seed() would
# truncate 1.5 to 1 without a word, and fail on Inf or 1e20 only after the caller's random
# state was saved for restoring.
check_seed <- function(seed) {
  if (is.null(seed)) return(invisible(seed))
  valid <- is.numeric(seed) && length(seed) == 1L && is.finite(seed) && seed == round(seed) &&
    abs(seed) <= .Machine$integer.max
  if (!valid) {
    shown <- if (is.numeric(seed) && length(seed) == 1L) format(seed, digits = 15) else describe_type(seed)
    stop(sprintf(paste(
      "`seed` must be a single number or NULL: a whole number between -%d and %d,",
      "as set.seed() takes (got %s)"
    ), .Machine$integer.max, .Machine$integer.max, shown), call. = FALSE)
  }
  invisible(seed)
}

# match.arg(), with an error that names the argument.
match_choice <- function(arg, choices, name) {
  tryCatch(match.arg(arg, choices),
           error = function(e) {
             stop(sprintf("`%s` must be one of %s", name,
                          paste0("\"", choices, "\"", collapse = ", ")), call. = FALSE)
           })
}

# "user001", "user002", ...: unique names that sort in their numeric order.
padded_names <- function(prefix, n) {
  paste0(prefix, formatC(seq_len(n), width = nchar(n), flag = "0"))
}

# Numbers of observations per group, at least 1 and with mean exactly `mean_size`.
draw_group_sizes <- function(n, mean_size, distribution) {
  if (mean_size == 1) {
    return(rep(1L, n))
  }
  extra <- switch(distribution,
    geometric = stats::rgeom(n, prob = 1 / mean_size),
    lognormal = {
      sdlog <- 1
      x <- stats::rlnorm(n, meanlog = log(mean_size - 1) - sdlog^2 / 2, sdlog = sdlog)
      floor(x) + (stats::runif(n) < x - floor(x))
    }
  )
  1L + as.integer(extra)
}

archer_first_names <- c(
  "Aldren", "Brisa", "Caelor", "Derwyn", "Elowen", "Faelan", "Garrick", "Hestra",
  "Ilsabeth", "Joryn", "Kaelith", "Lyssa", "Maddoc", "Neria", "Orrin", "Peyra",
  "Rhosyn", "Saelis", "Torvald", "Yselde"
)

archer_family_names <- c(
  "Ashford", "Blackmere", "Coldbrook", "Dunholt", "Emberlyn", "Fallowmere", "Greythorn",
  "Harrowgate", "Ironvale", "Kestrelby", "Longbarrow", "Marchbank", "Nettlefield",
  "Oakhollow", "Ravensworth", "Stonebridge", "Thistlewood", "Umberfell", "Wolfstead",
  "Yarrowby"
)

# n unique archer names in random order: all first x family combinations are
# shuffled; beyond their number the shuffled list is reused with " 2", " 3", ...
draw_archer_names <- function(n) {
  combos <- as.vector(outer(archer_first_names, archer_family_names, paste))
  combos <- combos[sample.int(length(combos))]
  i <- seq_len(n) - 1L
  base <- combos[i %% length(combos) + 1L]
  round <- i %/% length(combos) + 1L
  ifelse(round == 1L, base, paste(base, round))
}

# A factor from integer codes 1..n labelled prefix1..prefixn, keeping only the codes
# that occur, without the character conversion factor() would do on millions of values.
codes_as_factor <- function(codes, prefix) {
  all_codes <- structure(codes, levels = paste0(prefix, seq_len(max(codes))), class = "factor")
  drop_unused_codes(all_codes)
}
