# Methods for the packages lme4 users reach for after fitting: insight (and through it
# performance, parameters and ggeffects), emmeans, broom.mixed (generics), and lattice.
# Each is registered for the generic of a suggested package when that package is loaded
# (`@exportS3Method pkg::generic`), as tidy() is, so none of them is a dependency.

# The fixed-effect formula, and one `~ 1 | g` formula per random term, as lme4 writes
# them (a list when there are several).
fr_formula_parts <- function(x) {
  env <- environment(x$formula)
  fixed <- lme4::nobars(x$formula)
  random <- lapply(x$random, function(term) {
    stats::as.formula(paste("~ 1 |", term$label), env = env)
  })
  list(conditional = fixed, random = if (length(random) == 1L) random[[1L]] else random)
}

# The variances of the random intercepts, named by term.
fr_random_variances <- function(x) {
  stats::setNames(as.numeric(x$theta[names(x$flist)]), names(x$flist))
}

# X b, the predictions of the fixed part for the rows of the fit.
fr_fixed_predictions <- function(x) {
  drop(stats::model.matrix(x) %*% x$coefficients)
}

#' Methods for insight, performance, parameters and ggeffects
#'
#' The easystats packages learn about a model through the insight package; these methods
#' tell it what an `fr_fit` is, so that `performance::icc()`, `performance::r2()`
#' (Nakagawa's R2), `performance::model_performance()`, `parameters::model_parameters()`
#' and `ggeffects::ggpredict()` work as on an lmer fit. They are registered when insight
#' (or performance) is loaded; neither is a dependency.
#'
#' * `model_info()`: a linear (gaussian, identity link) mixed model.
#' * `find_formula()`: the fixed part as `conditional`, the random terms (`~ 1 | g`) as
#'   `random`, as for lmer; `find_random()` then names the grouping factors.
#' * `get_variance()`: Nakagawa's components: the variance of the fixed part's
#'   predictions `X b` (`var.fixed`), the sum of the random-intercept variances
#'   (`var.random`, and each in `var.intercept`), and `sigma^2` (`var.residual`,
#'   `var.distribution`). These are the moment estimates of [VarCorr()][VarCorr.fr_fit],
#'   so `icc()` and `r2_nakagawa()` are computed from them as from lmer's.
#' * `get_parameters()`, `find_parameters()`, `get_statistic()` (the t values of
#'   [summary()][summary.fr_fit]): the fixed effects. (insight's `find_statistic()` is
#'   not a generic and accepts only the model classes insight knows.)
#' * `get_predicted()`: the predictions of the fixed part (with `include_random = TRUE`,
#'   of the fit with the random effects) and Wald intervals from `vcov()`; what
#'   `ggeffects::ggpredict()` calls.
#' * `parameters::model_parameters()`: the fixed effects with Wald intervals and normal
#'   p values (asymptotic df), and with `effects = "all"` the standard deviations of the
#'   random terms (without intervals).
#' * `get_df()`: `Inf` (asymptotic, normal) for Wald intervals and tests, as [tidy()][tidy.fr_fit]
#'   and [confint()][confint.fr_fit] use; the residual degrees of freedom `n - p` for
#'   `type = "residual"`.
#' * `performance::r2()`: Nakagawa's marginal and conditional R2 (`r2_nakagawa()`).
#' * `performance::model_performance()`: R2, ICC, RMSE and sigma; the likelihood-based
#'   columns (AIC, AICc, BIC) are `NA`, since a moment fit has no likelihood.
#'
#' @param x,model an `fr_fit` object.
#' @param verbose,split_nested,flatten,component,effects,type,... as for the generics;
#'   `effects = "random"` of `get_parameters()` gives the predicted random effects.
#' @return as the generics.
#' @examples
#' if (requireNamespace("performance", quietly = TRUE) &&
#'     requireNamespace("lme4", quietly = TRUE)) {
#'   fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
#'   performance::icc(fit)
#'   performance::r2(fit)
#'   insight::find_formula(fit)
#' }
#' @name insight.fr_fit
NULL

#' @rdname insight.fr_fit
#' @exportS3Method insight::model_info
model_info.fr_fit <- function(x, ...) {
  # insight's own description of a gaussian model, told that it is mixed.
  info <- NextMethod()
  info$is_mixed <- TRUE
  info$is_linear <- TRUE
  info$n_obs <- x$nobs
  info$n_grouplevels <- x$ngrps
  info
}

#' @rdname insight.fr_fit
#' @exportS3Method insight::find_formula
find_formula.fr_fit <- function(x, verbose = TRUE, ...) {
  structure(fr_formula_parts(x), class = c("insight_formula", "list"))
}

#' @rdname insight.fr_fit
#' @exportS3Method insight::find_random
find_random.fr_fit <- function(x, split_nested = FALSE, flatten = FALSE) {
  groups <- if (isTRUE(split_nested)) {
    unique(unlist(lapply(x$random, function(term) vapply(term$factors, deparse1, ""))))
  } else {
    names(x$flist)
  }
  if (isTRUE(flatten)) groups else list(random = groups)
}

#' @rdname insight.fr_fit
#' @exportS3Method insight::get_variance
get_variance.fr_fit <- function(x, component = c("all", "fixed", "random", "residual",
                                                 "distribution", "dispersion", "intercept"),
                                verbose = TRUE, ...) {
  component <- match.arg(component)
  intercepts <- fr_random_variances(x)
  out <- list(
    var.fixed = stats::var(fr_fixed_predictions(x)),
    var.random = sum(intercepts),
    var.residual = x$sigma^2,
    var.distribution = x$sigma^2,
    var.dispersion = 0,
    var.intercept = intercepts
  )
  if (component == "all") out else out[[paste0("var.", component)]]
}

#' @rdname insight.fr_fit
#' @exportS3Method insight::get_parameters
get_parameters.fr_fit <- function(x, effects = c("fixed", "random"), ...) {
  effects <- match.arg(effects)
  if (effects == "random") return(lapply(ranef(x), as.matrix))
  b <- x$coefficients
  data.frame(Parameter = names(b), Estimate = unname(b), stringsAsFactors = FALSE)
}

#' @rdname insight.fr_fit
#' @exportS3Method insight::find_parameters
find_parameters.fr_fit <- function(x, effects = c("all", "fixed", "random"), flatten = FALSE, ...) {
  effects <- match.arg(effects)
  out <- list(
    conditional = names(x$coefficients),
    random = stats::setNames(rep(list("(Intercept)"), length(x$flist)), names(x$flist))
  )
  out <- switch(effects, all = out, fixed = out["conditional"], random = out["random"])
  if (isTRUE(flatten)) unique(unlist(out, use.names = FALSE)) else out
}

#' @rdname insight.fr_fit
#' @exportS3Method insight::get_statistic
get_statistic.fr_fit <- function(x, ...) {
  b <- x$coefficients
  out <- data.frame(Parameter = names(b), Statistic = unname(b / sqrt(diag(x$vcov))),
                    stringsAsFactors = FALSE)
  attr(out, "statistic") <- "t-statistic"
  out
}

#' @rdname insight.fr_fit
#' @exportS3Method insight::get_df
get_df.fr_fit <- function(x, type = "wald", ...) {
  if (identical(type, "residual")) stats::df.residual(x) else Inf
}

#' @rdname insight.fr_fit
#' @param data,predict,ci,include_random for `get_predicted()`: the data to predict for
#'   (by default the data of the fit), `"expectation"` (the only kind for a linear model),
#'   the level of the Wald intervals of the fixed part's predictions (`NULL` for none),
#'   and whether to add the predicted random effects (by default not: the fixed part, as
#'   ggeffects shows for lmer).
#' @exportS3Method insight::get_predicted
get_predicted.fr_fit <- function(x, data = NULL, predict = "expectation", ci = 0.95,
                                 include_random = FALSE, ...) {
  if (!is.null(predict) && !predict %in% c("expectation", "link", "prediction")) {
    stop(sprintf("get_predicted(predict = \"%s\") is not available for a linear mixed model",
                 predict), call. = FALSE)
  }
  if (is.null(data)) data <- stats::model.frame(x)
  random <- isTRUE(include_random)
  out <- unname(stats::predict(x, newdata = data, re.form = if (random) NULL else NA,
                               allow.new.levels = random))
  if (!is.null(ci) && !random) {
    X <- fr_newdata_matrix(x, data)
    se <- sqrt(rowSums((X %*% x$vcov) * X))
    z <- stats::qnorm((1 + ci) / 2)
    attr(out, "ci_data") <- data.frame(SE = se, CI_low = out - z * se, CI_high = out + z * se)
  }
  class(out) <- c("get_predicted", class(out))
  out
}

# The fixed-effect model matrix of new data, in the columns of the fixed effects.
fr_newdata_matrix <- function(x, newdata) {
  trms <- stats::delete.response(x$terms)
  frame <- stats::model.frame(trms, newdata, na.action = stats::na.pass, xlev = x$xlevels)
  X <- stats::model.matrix(trms, frame, contrasts.arg = x$contrasts)
  X[, names(x$coefficients), drop = FALSE]
}

#' @rdname insight.fr_fit
#' @param ci_method for `model_parameters()`: only `"wald"` (normal intervals).
#' @exportS3Method parameters::model_parameters
model_parameters.fr_fit <- function(model, ci = 0.95, ci_method = "wald",
                                    effects = c("fixed", "all", "random"), verbose = TRUE,
                                    ...) {
  effects <- match.arg(effects)
  if (!identical(tolower(ci_method), "wald")) {
    stop("model_parameters() of a moment fit has Wald intervals only (ci_method = \"wald\")",
         call. = FALSE)
  }
  b <- model$coefficients
  se <- sqrt(diag(model$vcov))
  z <- stats::qnorm((1 + ci) / 2)
  fixed <- data.frame(
    Parameter = names(b), Coefficient = unname(b), SE = unname(se), CI = ci,
    CI_low = unname(b - z * se), CI_high = unname(b + z * se), t = unname(b / se),
    df_error = Inf, p = unname(2 * stats::pnorm(-abs(b / se))),
    Effects = "fixed", Group = "", stringsAsFactors = FALSE
  )
  vc <- as.data.frame(VarCorr(model))
  random <- data.frame(
    Parameter = ifelse(is.na(vc$var1), "SD (Observations)", "SD (Intercept)"),
    Coefficient = vc$sdcor, SE = NA_real_, CI = ci, CI_low = NA_real_, CI_high = NA_real_,
    t = NA_real_, df_error = NA_real_, p = NA_real_, Effects = "random",
    Group = vc$grp, stringsAsFactors = FALSE
  )
  out <- switch(effects, fixed = fixed, random = random, all = rbind(fixed, random))
  if (effects == "fixed") out$Effects <- out$Group <- NULL
  rownames(out) <- NULL
  attr(out, "ci") <- ci
  attr(out, "ci_method") <- "wald"
  attr(out, "model_class") <- class(model)
  attr(out, "object_name") <- deparse1(substitute(model))
  attr(out, "title") <- "Fixed effects (moment fit; Wald intervals, asymptotic df)"
  class(out) <- c("parameters_model", "see_parameters_model", "data.frame")
  out
}

#' @rdname insight.fr_fit
#' @exportS3Method performance::r2
r2.fr_fit <- function(model, ...) {
  performance::r2_nakagawa(model, ...)
}

#' @rdname insight.fr_fit
#' @exportS3Method performance::model_performance
model_performance.fr_fit <- function(model, verbose = TRUE, ...) {
  v <- get_variance.fr_fit(model)
  total <- v$var.fixed + v$var.random + v$var.residual
  out <- data.frame(
    AIC = NA_real_, AICc = NA_real_, BIC = NA_real_,
    R2_conditional = (v$var.fixed + v$var.random) / total,
    R2_marginal = v$var.fixed / total,
    ICC = v$var.random / (v$var.random + v$var.residual),
    RMSE = sqrt(mean(stats::residuals(model)^2)),
    Sigma = model$sigma
  )
  class(out) <- c("performance_model", "data.frame")
  out
}

#' emmeans for a moment fit
#'
#' `recover_data()` and `emm_basis()` methods, registered when emmeans is loaded, so that
#' `emmeans::emmeans()`, `pairs()`, `contrast()` and `emtrends()` work on an `fr_fit`:
#' the estimated marginal means are linear functions of the GLS fixed effects, with
#' standard errors from [vcov()][fixef.fr_fit]. The degrees of freedom are asymptotic
#' (`Inf`: normal intervals and z tests), as for the Wald intervals of
#' [confint()][confint.fr_fit].
#'
#' @param object an `fr_fit` object.
#' @param trms,xlev,grid,... as for emmeans' generics.
#' @return as emmeans' generics.
#' @examples
#' if (requireNamespace("emmeans", quietly = TRUE)) {
#'   fit <- fr_fit(distance ~ bow + (1 | archer), data = simulate_archers(seed = 1))
#'   em <- emmeans::emmeans(fit, "bow")
#'   em
#'   pairs(em)
#' }
#' @name emmeans.fr_fit
NULL

#' @rdname emmeans.fr_fit
#' @exportS3Method emmeans::recover_data
recover_data.fr_fit <- function(object, ...) {
  require_data_of_fit(object, "emmeans' reference grid")
  emmeans::recover_data(object$call, stats::delete.response(object$terms),
                        object$na.action, frame = object$frame, ...)
}

#' @rdname emmeans.fr_fit
#' @exportS3Method emmeans::emm_basis
emm_basis.fr_fit <- function(object, trms, xlev, grid, ...) {
  frame <- stats::model.frame(trms, grid, na.action = stats::na.pass, xlev = xlev)
  X <- stats::model.matrix(trms, frame, contrasts.arg = object$contrasts)
  bhat <- object$coef_all
  X <- X[, names(bhat), drop = FALSE]
  nbasis <- if (anyNA(bhat)) {
    full <- stats::model.matrix(object$terms, object$frame, contrasts.arg = object$contrasts)
    estimability::nonest.basis(qr(full[, names(bhat), drop = FALSE]))
  } else {
    estimability::all.estble
  }
  list(X = X, bhat = unname(bhat), nbasis = nbasis, V = object$vcov,
       dffun = function(k, dfargs) Inf, dfargs = list(),
       misc = list(estName = "emmean"))
}

#' glance() and augment() for broom users
#'
#' In broom.mixed's layout for lme4 fits. `glance()` gives one row: `nobs`, `sigma`,
#' `logLik`, `AIC`, `BIC`, `deviance` (all `NA`: a moment fit has no likelihood, unless
#' its method provides one) and `df.residual`. `augment()` adds to the data of the fit
#' (or to `newdata`) the columns `.fitted` (the predictions with the random effects),
#' `.resid` (the response minus `.fitted`; only for the data of the fit) and `.fixed`
#' (the fixed part `X b`). Call them as `broom.mixed::glance(fit)` or
#' `generics::glance(fit)`.
#'
#' @param x an `fr_fit` object.
#' @param data the data to add the columns to: by default the model frame of the fit.
#' @param newdata a data frame to predict for instead, as for [predict()][predict.fr_fit].
#' @param ... not used; any argument here is an error rather than silently ignored.
#' @return a data frame.
#' @examples
#' if (requireNamespace("generics", quietly = TRUE) &&
#'     requireNamespace("lme4", quietly = TRUE)) {
#'   fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
#'   generics::glance(fit)
#'   head(generics::augment(fit))
#' }
#' @name glance.fr_fit
NULL

#' @rdname glance.fr_fit
#' @exportS3Method generics::glance
glance.fr_fit <- function(x, ...) {
  refuse_unknown_arguments("glance()", ..., help = "glance.fr_fit")
  maybe <- function(f) tryCatch(as.numeric(f(x)), error = function(e) NA_real_)
  data.frame(nobs = x$nobs, sigma = x$sigma, logLik = maybe(stats::logLik),
             AIC = maybe(stats::AIC), BIC = maybe(stats::BIC), deviance = maybe(stats::deviance),
             df.residual = stats::df.residual(x))
}

#' @rdname glance.fr_fit
#' @exportS3Method generics::augment
augment.fr_fit <- function(x, data = stats::model.frame(x), newdata = NULL, ...) {
  refuse_unknown_arguments("augment()", ..., help = "glance.fr_fit")
  if (!is.null(newdata)) {
    out <- newdata
    out$.fitted <- unname(stats::predict(x, newdata))
    out$.fixed <- unname(stats::predict(x, newdata, re.form = NA))
    return(out)
  }
  if (nrow(data) != x$nobs) {
    stop(sprintf("`data` has %d rows and the fit %d; give the rows the fit used, or `newdata`",
                 nrow(data), x$nobs), call. = FALSE)
  }
  out <- data
  out$.fitted <- unname(stats::fitted(x))
  out$.resid <- unname(stats::residuals(x))
  out$.fixed <- unname(fr_fixed_predictions(x))
  out
}

#' lattice plots of the predicted random effects
#'
#' `dotplot()` of [ranef()][ranef.fr_fit] is the caterpillar plot of lme4: for each random
#' term, its levels sorted by their predicted random effect, with a line at zero. With
#' `ranef(fit, condVar = TRUE)`, each prediction gets its interval, plus and minus
#' `qnorm((1 + level) / 2)` conditional standard deviations (lme4 draws 1.96 of them);
#' without conditional variances there are no intervals. `qqmath()` draws a normal quantile
#' plot of each term's predictions.
#' Both return a named list of lattice plots, one per term, which print in turn.
#' Registered for lattice's generics when lattice is loaded.
#'
#' @param x the result of `ranef()` on an `fr_fit`.
#' @param data not used.
#' @param main the titles of the plots: by default the names of the terms.
#' @param level the level of the intervals drawn when `x` has conditional variances.
#' @param ... further arguments to [lattice::dotplot()] or [lattice::qqmath()].
#' @return a named list of `trellis` objects.
#' @examples
#' if (requireNamespace("lattice", quietly = TRUE) &&
#'     requireNamespace("lme4", quietly = TRUE)) {
#'   fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
#'   lattice::dotplot(ranef(fit))$plate
#'   lattice::dotplot(ranef(fit, condVar = TRUE))$sample
#'   lattice::qqmath(ranef(fit))$sample
#' }
#' @name dotplot.ranef.fr_fit
NULL

#' @rdname dotplot.ranef.fr_fit
#' @exportS3Method lattice::dotplot
dotplot.ranef.fr_fit <- function(x, data, main = names(x), level = 0.95, ...) {
  check_real_number(level, "level")
  if (level <= 0 || level >= 1) stop("`level` must be between 0 and 1", call. = FALSE)
  main <- rep_len(main, length(x))
  z <- stats::qnorm((1 + level) / 2)
  plots <- lapply(seq_along(x), function(i) {
    u <- stats::setNames(x[[i]][["(Intercept)"]], rownames(x[[i]]))
    post_var <- attr(x[[i]], "postVar")
    o <- order(u)
    d <- data.frame(level = factor(names(u)[o], levels = names(u)[o]), value = unname(u[o]))
    half <- if (is.null(post_var)) NULL else z * sqrt(as.numeric(post_var[1L, 1L, ]))[o]
    # The intervals go to the panel as arguments (panel.args.common), in the rows' order.
    # The intervals over the level lines of panel.dotplot, the points over the intervals.
    panel <- function(x, y, lower = NULL, upper = NULL, ...) {
      lattice::panel.abline(v = 0, col = "grey60")
      lattice::panel.dotplot(x, y, ...)
      if (!is.null(lower)) {
        lattice::panel.segments(lower, as.numeric(y), upper, as.numeric(y), col = "grey20", lwd = 1.5)
        dot <- lattice::trellis.par.get("dot.symbol")
        lattice::panel.points(x, y, pch = dot$pch, col = dot$col, cex = dot$cex)
      }
    }
    if (is.null(half)) {
      lattice::dotplot(level ~ value, data = d, main = main[[i]],
                       xlab = "predicted random intercept", ylab = NULL, panel = panel, ...)
    } else {
      lower <- d$value - half
      upper <- d$value + half
      lattice::dotplot(level ~ value, data = d, main = main[[i]],
                       xlab = sprintf("predicted random intercept, %g%% interval", 100 * level),
                       ylab = NULL, panel = panel, lower = lower, upper = upper,
                       xlim = grDevices::extendrange(c(lower, upper)), ...)
    }
  })
  stats::setNames(plots, names(x))
}

#' @rdname dotplot.ranef.fr_fit
#' @exportS3Method lattice::qqmath
qqmath.ranef.fr_fit <- function(x, data, main = names(x), ...) {
  main <- rep_len(main, length(x))
  plots <- lapply(seq_along(x), function(i) {
    d <- data.frame(value = x[[i]][["(Intercept)"]])
    lattice::qqmath(~value, data = d, main = main[[i]], xlab = "standard normal quantiles",
                    ylab = "predicted random intercept",
                    panel = function(...) {
                      lattice::panel.qqmathline(...)
                      lattice::panel.qqmath(...)
                    }, ...)
  })
  stats::setNames(plots, names(x))
}

#' The family of a moment fit
#'
#' A linear mixed model: `gaussian()` with the identity link, as `family()` of an lmer fit;
#' a generalized one (`fr_fit(family = )`): its family and link, as `family()` of a glmer fit.
#'
#' @param object an `fr_fit` object.
#' @param ... not used.
#' @return A `family` object: `stats::gaussian()`, or the binomial or Poisson family the
#'   model was fitted with.
#' @examples
#' family(fr_fit(distance ~ bow + (1 | archer), data = simulate_archers(seed = 1)))
#' family(fr_fit(cbind(incidence, size - incidence) ~ period + (1 | herd),
#'               data = lme4::cbpp, family = binomial))
#' @importFrom stats family
#' @export
family.fr_fit <- function(object, ...) {
  refuse_unknown_arguments("family()", ..., help = "family.fr_fit")
  if (inherits(object, "fr_glmm")) object$family else stats::gaussian()
}

# Marginal Wald F tests of the fixed-effect terms, from vcov(): for the columns of each
# term, F = b' V^-1 b / q with q numerator degrees of freedom; the denominator degrees of
# freedom are asymptotic (Inf), so p = P(chi^2_q > q F).
wald_anova <- function(object) {
  b <- object$coefficients
  V <- object$vcov
  X <- stats::model.matrix(object$terms, object$frame, contrasts.arg = object$contrasts)
  assign <- attr(X, "assign")[match(names(b), colnames(X))]
  labels <- attr(object$terms, "term.labels")
  rows <- lapply(seq_along(labels), function(j) {
    cols <- which(assign == j)
    if (!length(cols)) return(NULL)
    q <- length(cols)
    f <- drop(crossprod(b[cols], solve(V[cols, cols, drop = FALSE], b[cols]))) / q
    data.frame(NumDF = q, DenDF = Inf, `F value` = f,
               `Pr(>F)` = stats::pchisq(q * f, q, lower.tail = FALSE),
               check.names = FALSE, row.names = labels[[j]])
  })
  table <- do.call(rbind, rows)
  if (is.null(table)) {
    table <- data.frame(NumDF = integer(), DenDF = numeric(), `F value` = numeric(),
                        `Pr(>F)` = numeric(), check.names = FALSE)
  }
  structure(table, heading = paste(
    "Marginal Wald F tests of the fixed-effect terms (from vcov(); asymptotic: DenDF = Inf).",
    "A moment fit has no likelihood, so there are no likelihood-ratio tests.\n"
  ), class = c("anova", "data.frame"))
}
