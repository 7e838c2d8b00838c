# Fitted values, residuals and predictions, with lme4's semantics for re.form and
# allow.new.levels.

#' Predictions from a moment fit
#'
#' `predict()` gives `X b + Z u` for the data of the fit or for `newdata`, with lme4's
#' arguments: `re.form = NULL` includes every random term, `re.form = NA` (or `~ 0`)
#' none (the population-level prediction `X b`), and a formula such as `~ (1 | s)` the
#' terms it names. Levels of a grouping factor not seen in the fit are an error that
#' names them, unless `allow.new.levels = TRUE`, which gives them a random effect of 0
#' (their expected value); a missing (`NA`) grouping value counts as a new level.
#' Levels of an interaction `a:b` are matched by the levels of `a` and `b`.
#' A grouping expression such as `cut(age, 5)` is evaluated on `newdata` and its values
#' matched to the fit's levels by label; unlike the fixed part (whose data-dependent
#' terms such as `poly()` keep the fit's parameters), a data-dependent grouping gives other
#' levels on other data, so compute such a grouping as a column of the data before fitting.
#' Factor levels of fixed-effect variables must be among those of the fit.
#'
#' `fitted()` is `predict()` with no arguments and `residuals()` the response minus it.
#' With `na.action = na.exclude` in the fit, both are padded with `NA` where rows were
#' dropped.
#'
#' @param object an `fr_fit` object.
#' @param newdata a data frame holding the variables of the fixed part and the grouping
#'   variables of the random terms used; `NULL` for the data of the fit.
#' @param re.form which random terms to include: `NULL` (all), `NA` or `~ 0` (none) or a
#'   one-sided formula of random terms of the model, e.g. `~ (1 | s) + (1 | d)`.
#' @param allow.new.levels if `TRUE`, levels not seen in the fit get a zero random
#'   effect; if `FALSE` (the default) they are an error.
#' @param na.action what to do with `newdata` rows with missing fixed-effect
#'   variables: [na.pass()] (the default) predicts `NA` for them.
#' @param type for `predict()`, `"link"` or `"response"` (the same for a linear model);
#'   for `residuals()`, `"response"`, `"pearson"` or `"working"` (all the same for a
#'   linear model without weights).
#' @param scaled if `TRUE`, residuals are divided by `sigma(object)`.
#' @param ranef.type `"blup"` (the default) predicts with the BLUPs; `"npmle"` with the
#'   empirical Bayes posterior means under each term's estimated distribution
#'   ([fr_distribution()], [ranef.fr_fit()] with `type = "npmle"`).
#' @param interval `"none"` or `"prediction"`: prediction intervals for the mean of `m`
#'   new observations in each row's levels (needs `newdata` and all random terms). For a
#'   known level of the term `term` the interval comes from the level's posterior under
#'   the term's estimated distribution ([fr_distribution()] with its defaults: the NPMLE,
#'   a mixture over its support points, or the normal when the split likelihood ratio
#'   does not reject normal effects) and normal errors with the residual variance; for a
#'   new level (with `allow.new.levels = TRUE`) from the distribution itself. Other terms enter as normal: their prediction (BLUP or posterior mean) and
#'   its one-way prediction error variance `s2_l s2 / (n_h s2_l + s2)` (`s2_l` for a new
#'   level); the fixed effects' variance `x' vcov x` is added. The normal-theory interval
#'   (BLUP +/- z sd, every term normal) is returned beside it, since the NPMLE's tails
#'   converge slowly.
#' @param level the coverage of the intervals.
#' @param m the number of new observations whose mean is predicted (1: one observation).
#' @param term the term whose distribution is estimated nonparametrically for the
#'   intervals (default: the first).
#' @param ... not used; any argument here is an error (`se.fit`, for instance, is not
#'   supported) rather than silently ignored.
#' @return a numeric vector; with `interval = "prediction"` a matrix with columns `fit`,
#'   `lwr`, `upr` (from the NPMLE) and `lwr_normal`, `upr_normal` (normal theory).
#' @examples
#' if (requireNamespace("lme4", quietly = TRUE)) {
#'   fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
#'   new <- data.frame(Days = c(0, 5), Subject = c("308", "new"))
#'   predict(fit, new, allow.new.levels = TRUE)
#'   predict(fit, new, re.form = NA)
#' }
#' @export
predict.fr_fit <- function(object, newdata = NULL, re.form = NULL,
                           allow.new.levels = FALSE, na.action = stats::na.pass,
                           type = c("link", "response"), ranef.type = c("blup", "npmle"),
                           interval = c("none", "prediction"), level = 0.9, m = 1,
                           term = NULL, ...) {
  refuse_unknown_arguments("predict()", ..., help = "predict.fr_fit", hints = c(
    se.fit = paste("standard errors of predictions are not computed; for X b (re.form = NA)",
                   "they are sqrt(rowSums((X %*% vcov(fit)) * X)) with X the model matrix of",
                   "newdata's fixed part"),
    newparams = "predictions are made at the fitted parameters only",
    random.only = "use predict(fit, re.form = NULL) - predict(fit, re.form = NA)"
  ))
  match.arg(type)  # the same for a linear model: no link
  ranef.type <- match.arg(ranef.type)
  interval <- match.arg(interval)
  npmle_term <- if (interval == "prediction") distribution_term(object, term)
  used <- random_terms_used(object, re.form)
  blups <- object$ranef_values
  dists <- NULL
  # The intervals need the distribution of their term only; posterior means, every term's.
  need <- if (ranef.type == "npmle") names(object$flist) else if (interval == "prediction") npmle_term
  if (length(need)) {
    dists <- lapply(need, function(k) fr_distribution(object, k))
    names(dists) <- need
  }
  if (ranef.type == "npmle") object$ranef_values <- npmle_ranef_values(object, dists)
  if (interval == "prediction") {
    if (is.null(newdata)) stop("prediction intervals need `newdata`", call. = FALSE)
    if (length(used) != length(object$flist)) {
      stop("prediction intervals include every random term: use re.form = NULL", call. = FALSE)
    }
    if (!(is.numeric(level) && length(level) == 1L && level > 0 && level < 1)) {
      stop("`level` must be a number between 0 and 1", call. = FALSE)
    }
    if (!(is.numeric(m) && length(m) == 1L && m > 0)) stop("`m` must be a positive number", call. = FALSE)
  }
  if (is.null(newdata)) {
    require_data_of_fit(object, "predictions for the data of the fit")
    if (length(used) == length(object$flist) && ranef.type == "blup") return(stats::fitted(object))
    eta <- drop(stats::model.matrix(object) %*% object$coefficients) +
      if (length(used)) random_part(object$ranef_values[used], object$flist[used]) else 0
    return(stats::naresid(object$na.action, name_by_rows(eta, object$frame)))
  }
  if (!is.data.frame(newdata)) stop("`newdata` must be a data frame", call. = FALSE)
  fixed_terms <- fixed_terms_for_newdata(object)
  check_newdata_columns(newdata, c(all.vars(fixed_terms), unlist(lapply(
    object$random[match(used, vapply(object$random, `[[`, "", "label"))],
    function(term) unlist(lapply(term$factors, all.vars))
  ))), environment(object$formula))
  frame <- model.frame(fixed_terms, newdata, na.action = na.action, xlev = object$xlevels)
  X <- model.matrix(fixed_terms, frame, contrasts.arg = object$contrasts)
  eta <- drop(X[, names(object$coefficients), drop = FALSE] %*% object$coefficients)
  rows <- seq_len(nrow(newdata))
  dropped <- attr(frame, "na.action")
  if (!is.null(dropped)) rows <- rows[-dropped]
  indices <- list()
  for (term in object$random) {
    if (!term$label %in% used) next
    u <- object$ranef_values[[term$label]]
    parts <- newdata_groupings(term, newdata[rows, , drop = FALSE], environment(object$formula))
    labels <- newdata_labels(parts)
    components <- attr(object$flist[[term$label]], "components")
    # An interaction's levels are matched by the tuple of their components' labels, which
    # a joined label cannot tell apart ("x:y" + "z", "x" + "y:z").
    index <- if (is.null(components)) match(labels, names(u)) else match_tuples(parts, components)
    new <- is.na(index)
    if (any(new) && !isTRUE(allow.new.levels)) {
      unseen <- unique(labels[new])
      stop(sprintf(
        "new %s of %s in `newdata`: %s%s; use allow.new.levels = TRUE to predict them with a random effect of 0%s",
        ngettext(length(unseen), "level", "levels"), term_label(term$label),
        paste(utils::head(ifelse(is.na(unseen), "NA", paste0("'", unseen, "'")), 5L), collapse = ", "),
        if (length(unseen) > 5L) sprintf(" (and %d more)", length(unseen) - 5L) else "",
        if (any(vapply(term$factors, is.call, logical(1)))) paste(
          "; the grouping expression was evaluated on `newdata`, and one that depends on the",
          "data, such as cut(x, 5), gives other levels on other data: compute it as a column",
          "of the data before fitting"
        ) else ""
      ), call. = FALSE)
    }
    eta <- eta + ifelse(new, 0, u[index])
    indices[[term$label]] <- index
  }
  names(eta) <- rownames(frame)
  if (interval == "prediction") {
    Xf <- X[, names(object$coefficients), drop = FALSE]
    out <- prediction_intervals(object, blups, dists, indices, eta, Xf, level, m, npmle_term)
    rownames(out) <- rownames(frame)
    return(stats::napredict(dropped, out))
  }
  # na.exclude pads the dropped rows with NA, as for lm and lmer.
  stats::napredict(dropped, eta)
}

#' @rdname predict.fr_fit
#' @export
fitted.fr_fit <- function(object, ...) {
  refuse_unknown_arguments("fitted()", ..., help = "predict.fr_fit")
  require_data_of_fit(object, "fitted values")
  stats::naresid(object$na.action, object$fitted.values)
}

#' @rdname predict.fr_fit
#' @export
residuals.fr_fit <- function(object, type = c("response", "pearson", "working"),
                             scaled = FALSE, ...) {
  refuse_unknown_arguments("residuals()", ..., help = "predict.fr_fit")
  match.arg(type)
  require_data_of_fit(object, "residuals")
  r <- object$residuals  # named as the fitted values are
  if (isTRUE(scaled)) r <- r / object$sigma
  stats::naresid(object$na.action, r)
}

# The labels of the random terms that re.form keeps.
random_terms_used <- function(object, re.form) {
  all_terms <- names(object$flist)
  if (is.null(re.form)) return(all_terms)
  if (length(re.form) == 1L && !inherits(re.form, "formula") && is.na(re.form)) return(character())
  if (!inherits(re.form, "formula") || length(re.form) != 2L) {
    stop("`re.form` must be NULL, NA or a one-sided formula of random terms such as ~ (1 | g)",
         call. = FALSE)
  }
  rhs <- re.form[[2L]]
  if (identical(rhs, 0) || identical(rhs, 0L)) return(character())
  split <- split_random_terms(rhs)
  if (!is.null(split$fixed) && !identical(split$fixed, 0) && !identical(split$fixed, 1)) {
    stop("`re.form` may only name random terms such as (1 | g), not ", deparse1(split$fixed),
         call. = FALSE)
  }
  terms <- unlist(lapply(split$bars, expand_bar_term), recursive = FALSE)
  labels <- vapply(terms, `[[`, "", "label")
  unknown <- setdiff(labels, all_terms)
  if (length(unknown)) {
    stop(sprintf("`re.form` names %s, which %s not in the model (its terms: %s)",
                 paste(term_label(unknown), collapse = ", "),
                 ngettext(length(unknown), "is", "are"),
                 paste(term_label(all_terms), collapse = ", ")), call. = FALSE)
  }
  intersect(all_terms, labels)
}

# The fixed part's terms carrying the "predvars" of the fit's model frame, so that
# data-dependent terms such as poly(x, 2) or scale(x) are evaluated on new data with
# the parameters computed from the data of the fit (safe prediction, as in lm).
fixed_terms_for_newdata <- function(object) {
  tt <- stats::delete.response(object$terms)
  frame_terms <- attr(object$frame, "terms")
  predvars <- attr(frame_terms, "predvars")
  vars <- as.list(attr(tt, "variables"))[-1L]
  if (is.null(predvars) || length(vars) == 0L) return(tt)
  frame_vars <- vapply(as.list(attr(frame_terms, "variables"))[-1L], deparse1, "")
  at <- match(vapply(vars, deparse1, ""), frame_vars)
  if (anyNA(at)) return(tt)
  attr(tt, "predvars") <- as.call(c(quote(list), as.list(predvars)[-1L][at]))
  tt
}

check_newdata_columns <- function(newdata, vars, env) {
  missing <- missing_variables(vars, newdata, env, n = nrow(newdata))
  if (length(missing)) {
    stop(sprintf("`newdata` lacks %s %s", ngettext(length(missing), "column", "columns"),
                 paste0("'", missing, "'", collapse = ", ")), call. = FALSE)
  }
}

# The grouping values of a random term's components in new data (a list, one per
# component).
newdata_groupings <- function(term, newdata, env) {
  lapply(term$factors, function(expr) eval(expr, newdata, env))
}

# The level labels of a random term in new data, spelled as in the fit ("b:a" for
# interactions), for messages and for matching single groupings; NA where any part is
# missing.
newdata_labels <- function(parts) {
  missing <- Reduce(`|`, lapply(parts, is.na))
  labels <- do.call(paste, c(lapply(parts, as.character), sep = ":"))
  labels[missing] <- NA_character_
  labels
}

# Fits from a list of data frames or from files never hold the data in one process, so
# they keep no model frame.
require_data_of_fit <- function(object, what) {
  if (is.null(object$frame)) {
    stop(sprintf(paste(
      "%s are not kept by fits from a list of data frames or from files (the data never",
      "sit in one process); use predict(fit, newdata = <a data frame>)"
    ), what), call. = FALSE)
  }
}

# Prediction intervals for the mean of m new rows (see ?predict.fr_fit): the NPMLE-based
# mixture for term k, normal for the other terms, and the normal-theory interval.
prediction_intervals <- function(object, blups, dists, indices, eta, X, level, m, k) {
  s2 <- unname(object$theta[["Residual"]])
  fixed_var <- rowSums((X %*% stats::vcov(object)) * X)
  pev <- function(l, index) {
    s2l <- unname(object$theta[[l]])
    nl <- tabulate(as.integer(unclass(object$flist[[l]])), length(blups[[l]]))
    ifelse(is.na(index), s2l, if (s2l > 0) s2l * s2 / (nl[index] * s2l + s2) else 0)
  }
  pred <- function(u, index) ifelse(is.na(index), 0, unname(u)[index])
  others <- setdiff(names(indices), k)
  center <- eta - pred(object$ranef_values[[k]], indices[[k]])
  noise <- s2 / m + fixed_var
  normal_center <- eta
  normal_var <- noise + pev(k, indices[[k]])
  for (l in names(indices)) {
    normal_center <- normal_center - pred(object$ranef_values[[l]], indices[[l]]) +
      pred(blups[[l]], indices[[l]])
    if (l != k) {
      noise <- noise + pev(l, indices[[l]])
      normal_var <- normal_var + pev(l, indices[[l]])
    }
  }
  dist <- dists[[k]]
  idx <- indices[[k]]
  probs <- c((1 - level) / 2, (1 + level) / 2)
  q <- fr_npmle_quantiles(dist$grid, dist$weights,
                          ifelse(is.na(idx), NaN, unname(dist$d)[idx]),
                          ifelse(is.na(idx), NaN, unname(dist$v)[idx]),
                          as.double(center), as.double(noise), probs, dist$threads)
  q <- matrix(q, ncol = 2L, byrow = TRUE)
  z <- stats::qnorm(probs[2])
  cbind(fit = unname(eta), lwr = q[, 1], upr = q[, 2],
        lwr_normal = unname(normal_center - z * sqrt(normal_var)),
        upr_normal = unname(normal_center + z * sqrt(normal_var)))
}
