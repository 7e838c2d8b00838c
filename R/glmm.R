# Generalized linear mixed models (binomial and Poisson) by the method of moments: the
# family, response and frame handling of fr_fit(family = ), and the methods of the
# fr_glmm class (which extends fr_fit).

#' @section Generalized linear mixed models (`family =`):
#' With `family = binomial` or `poisson` (as [glm()] takes it: `binomial`, `binomial()`,
#' `"binomial"`, `poisson(link = "log")`; links logit and probit for binomial, log for
#' Poisson), `fr_fit()` fits `g(E[y | u]) = X b + offset + sum_k Z_k u_k`,
#' `u_k ~ N(0, s2_k I)`. The default, `method = "auto"`, maximises the likelihood
#' (`"efficient"`, below) where the per-level likelihoods are the marginal likelihood
#' (one term, or nested terms, with observation-level terms); for crossed terms it
#' maximises the Laplace approximation of the likelihood (`"laplace"`, below) up to
#' 2 x 10^6 rows when the sparse Cholesky factor of the modes' system has at most 10^6
#' values, and uses the moments (`"moments"`, below) above; `fit$method`, `print()` and
#' `summary()` say which.
#' `method = "laplace"` maximises the Laplace approximation of the likelihood, the
#' criterion of `glmer(nAGQ = 1)`, for any random-intercept terms: the conditional modes
#' by Newton's method (to steps below 1e-13), `log det(Lambda Z'WZ Lambda + I)` from a
#' sparse Cholesky factor (fill-reducing ordering and symbolic analysis once), and
#' Newton's method on the fixed effects and the sds with central-difference derivatives,
#' started at the moment estimates. glmer stops its modes at `tolPwrss = 1e-7`, which
#' moves its deviance by about 1e-3; with its modes solved to 1e-13 the two deviance
#' functions agree to 1e-8 and the optima to 2e-4 standard errors (the tests).
#' `vcov()` is twice the inverse Hessian of the deviance over the fixed effects and sds,
#' as glmer's; `logLik()`, `AIC()` and `BIC()` are glmer's (log binomial coefficients and
#' `-log y!` included). The rows are sorted into a canonical order first, so the fit is
#' the same to the last bit over any chunks, row order or threads. On power-law crossed
#' data (`simulate_crossed(2e4)`, 125 users x 53 items) it takes about 0.6 CPU seconds to
#' glmer's 1.3 (bench/glmm-laplace-crossed.R); each evaluation factors the matrix, so its
#' cost grows with the crossed terms' levels (about 5 s for 10^5 rows with 625 x 263
#' levels).
#' `method = "efficient"` maximises per-level
#' marginal likelihoods: for every term and level, the likelihood of the level's rows
#' integrated over the level's effect (the trapezoidal rule after the change of variable
#' `a = m + s sinh(t)`, `m` the level's mode and `s` the sd of the Gaussian approximation
#' there, with nodes out to where the integrand is negligible: about 1e-6 of each level's
#' log-likelihood, where Gauss-Hermite at the mode with 25 nodes, as `glmer(nAGQ = 25)`,
#' errs by 1e-3 on levels with no successes and a large variance), the effects of the
#' other terms integrated row by row and the levels of a term nested in it inside each
#' level (adaptive Gauss-Hermite). With one term, or nested terms, this is the marginal
#' likelihood itself (it equals `glmer(nAGQ = 25)` to 2e-5 on cbpp and mlmRev's
#' Contraception); with crossed terms the sum over terms is a composite likelihood
#' (consistent; each component is the exact likelihood of its level's rows with two
#' crossed terms: rows that share a level of the other term, a repeated cell, are
#' integrated over that level's effect together).
#' The fixed effects and variances are solved jointly by Newton's method on the
#' analytic Hessian with a line search, started at the moment estimates below, to
#' Newton's decrement `1e-11 (1 + |log-likelihood|)` (typically 4 to 6 steps); a
#' variance whose score at 0 is not positive is set to 0. `vcov()` is the inverse observed
#' information (one term or nested terms); with crossed terms it is the model-based
#' covariance of the quasi-score below at the estimates, `J^-1 (X'D V^-1 D X + J_s V_s J_s') J^-T`
#' with `V_s` the variances' block of the sandwich `H^-1 V H^-1` (`V` multi-way
#' cluster-robust from the level scores; `x$vcov_sandwich` is that sandwich's fixed-effect
#' block, which overstates the intercept's standard error up to three times, because
#' the cluster sums over one term's levels are not independent when the other term's
#' effects are estimated from the same rows). That covariance is the quasi-score
#' estimator's, so it is conservative where the likelihood's estimates are more precise:
#' on power-law crossed Poisson data (`simulate_crossed(2e4)`, three data sets) the
#' standard errors are 0.95 to 1.36 times glmer's; on power-law and balanced crossed
#' Bernoulli data the intervals cover 0.93 to 0.99. It costs a quadrature per level and,
#' with crossed terms, per row at every evaluation: 5 to 8 CPU seconds for 2 x 10^4 rows
#' with power-law sizes and repeated cells, Bernoulli or Poisson (glmer: 1 to 1.5), so
#' with crossed terms `"laplace"` is the default and `method = "moments"` the scalable
#' choice (on that power-law Bernoulli design the sampling sd of the sds is 1.4 to 1.5
#' times glmer's for this composite likelihood, against 2.2 to 3.5 times for the moments;
#' bench/glmm-grid.R, bench/glmm-minque.R).
#' `method = "moments"` fits by Jiang's method of moments (Jiang 1998, JASA 93; Jiang and
#' Zhang 2001, Biometrika 88): the first moments `sum_i x_i (y_i - n_i E h(eta_i + z))`
#' and, per term, the within-level cross-products `sum_g w_g sum_{s != t in g} y_s y_t`
#' (leaving out pairs of rows that also share a level of a crossed term; a term nested in
#' another keeps them), centred by the marginal means (`y_s y_t` less its projection
#' `(y_s - mu_s) mu_t + mu_s (y_t - mu_t)`, which has expectation 0), are equated to their
#' expectations under the model, computed by Gauss-Hermite
#' quadrature (closed forms for Poisson-log). The level weights are
#' `1 / max(n_g - 1, 1)` (option `fullrandom.glmm_information_weights = TRUE` adds a
#' second, experimental step weighting each level by its information at these estimates:
#' on power-law crossed Bernoulli data it brings the sampling sd of the user sd from 3.0
#' to 1.8 times glmer's, but not the item sd's (3.4 times) and it makes the slope's worse;
#' this option and `fullrandom.glmm_working_covariance` below steer the moments only, and
#' setting either for a fit by `"efficient"` is an error).
#' A term whose levels each hold one row (an observation-level effect) is identified by
#' `sum y (y - 1)` instead (Poisson, or binomial with trials). The fixed effects reported
#' then solve the quasi-score `X'D V^-1 (y - mu) = 0` at the estimated variances, with
#' `mu` the exact marginal mean, `D = d mu / d eta` and the working covariance
#' `V = A + D Z G Z' D` (`A` the conditional variances, `G` the variances; for Poisson-log
#' the exact marginal variances and covariances of rows sharing one level), iterated to a
#' fixed point; the equations are unbiased whatever `V` is, and efficient when the random
#' effects are large (option `fullrandom.glmm_working_covariance = FALSE` keeps the
#' unweighted first-moment estimates). The conditional modes (`ranef()`) maximise the
#' penalized likelihood at the estimates. `vcov()` is model-based:
#' `J^-1 (X'D V^-1 D X + J_s V_s J_s') J^-T`, the quasi-score's variance from the model plus
#' the uncertainty of the estimated variances (`V_s`, their sandwich) carried to the fixed
#' effects through the Jacobian `J_s`; `x$vcov_sandwich` is the sandwich of the stacked estimating
#' equations, cluster-robust over the levels of every term (each centred pair statistic
#' counted in its own term's clusters).
#' `confint()` gives Wald intervals (the sds by the delta method on the sandwich of the
#' variances) or, with `method = "boot"`, percentile intervals from the parametric
#' bootstrap as lme4's `confint(method = "boot")`: `nsim` data sets simulated from the
#' fitted model (new random effects, new responses) and refitted.
#' The binomial response is a two-column matrix `cbind(successes, failures)`, a
#' proportion with the trials as `weights`, a 0/1 vector, a logical or a factor (the first
#' level a failure), as for glm; Poisson counts take offsets in the formula
#' (`offset(log(t))`) or as `offset`.
#' @name fr_fit
NULL

# The family as glm() takes it, checked; NULL for the default gaussian fit.
resolve_family <- function(family, env) {
  if (is.character(family) && length(family) == 1L) {
    family <- tryCatch(get(family, mode = "function", envir = env), error = function(e) {
      stop(sprintf("`family` \"%s\" is not a family function", family), call. = FALSE)
    })
  }
  if (is.function(family)) family <- family()
  if (!inherits(family, "family")) {
    stop("`family` must be a family as glm() takes it: binomial, binomial(), \"binomial\" or ",
         "poisson(link = \"log\")", call. = FALSE)
  }
  supported <- list(gaussian = "identity", binomial = c("logit", "probit"), poisson = "log")
  if (!family$family %in% names(supported) || !family$link %in% supported[[family$family]]) {
    stop(sprintf(paste(
      "family %s(link = \"%s\") is not supported: fr_fit fits gaussian (identity),",
      "binomial (logit or probit) and poisson (log) models"
    ), family$family, family$link), call. = FALSE)
  }
  family
}

# The GLMM branch of fr_fit(): frame, response, core fit and the fr_glmm object.
fr_glmm <- function(call, formula, parsed, data, frame_call, env, family, threads,
                    weights_expr, offset_expr, chunking = NULL, method = "moments") {
  check_data_type(data)
  if (!is.null(data) && !is.data.frame(data)) {
    # A list of data frames or files: stacked here, one chunk each (R/glmm-chunks.R).
    sources <- glmm_stack_sources(data, parsed, frame_call, weights_expr, offset_expr, chunking, env)
    data <- sources$data
    frame_call$data <- data
    chunking <- sources$chunking
  }
  check_columns_exist(parsed$frame_formula, data)
  frame_call$formula <- parsed$frame_formula
  frame_call$weights <- weights_expr
  frame_call$offset <- offset_expr
  frame <- automatic_row_names(lean_model_frame(frame_call, data, env, threads))
  if (nrow(frame) == 0L) stop("the data have no rows", call. = FALSE)
  na_action <- attr(frame, "na.action")
  fixed_terms <- terms(parsed$fixed, data = frame)
  # The response is the frame's first column: model.response() would also name it by
  # the row names, materialising them as strings.
  y <- if (attr(attr(frame, "terms"), "response") == 1L) frame[[1L]]
  if (is.matrix(y) && ncol(y) == 1L) dim(y) <- NULL
  response <- glmm_response(y, stats::model.weights(frame), family, deparse1(parsed$response))
  offset <- stats::model.offset(frame)
  if (!is.null(offset)) {
    if (!is.numeric(offset) || any(!is.finite(offset))) {
      stop("the offset must be finite numbers", call. = FALSE)
    }
    offset <- as.double(offset)
  }
  # Plain numeric columns are passed as they are (no N x p model matrix, no column of
  # ones): at 10^7 rows and more the copies are most of the memory of a fit.
  fixed <- fixed_effect_columns(fixed_terms, frame, parsed$contrasts)
  check_finite_columns(fixed)
  kept <- fixed_columns_kept(fixed)
  # An observation-level term is allowed (no residual variance to confuse it with).
  flist <- grouping_factors(parsed$random, frame, check = FALSE)
  for (k in names(flist)) {
    if (nlevels(flist[[k]]) < 2L) {
      stop(sprintf("the grouping factor of %s has a single level; a random effect needs at least two",
                   term_label(k)), call. = FALSE)
    }
  }
  x_kept <- if (is.list(fixed$columns)) fixed$columns[kept] else fixed$columns[, kept, drop = FALSE]
  model <- glmm_core_model(response$y, x_kept, fixed$names[kept], flist)
  # The information-weighted second step (Jiang and Zhang) is experimental: it improves
  # one term's precision on power-law crossed data but not the other's, and worsens the
  # slope's, so the simple weights 1 / max(n_g - 1, 1) are the default.
  out <- glmm_fit_core(model, family, response$trials, offset, threads, chunking, frame, method)
  x_names <- fixed$names[kept]
  b <- stats::setNames(out$coef, x_names)
  theta <- stats::setNames(out$variances, names(flist))
  boundary <- stats::setNames(out$at_boundary, names(flist))
  ranef_values <- name_ranef(out$ranef, flist)
  eta <- glmm_fixed_part(x_kept, b) + (if (is.null(offset)) 0 else offset) + random_part(ranef_values, flist)
  mu <- family$linkinv(eta)
  fit <- list(
    method = out$method,
    family = family,
    theta = theta,
    boundary = boundary,
    coefficients = b,
    coef_all = stats::setNames(replace(rep(NA_real_, length(fixed$names)), kept, out$coef), fixed$names),
    kept = kept,
    # vcov(): the model-based covariance of the quasi-score (with the propagated
    # uncertainty of the variances); the cluster-robust sandwich is kept beside it.
    vcov = matrix(if (is.null(out$vcov_model)) out$vcov else out$vcov_model, length(kept),
                  dimnames = list(x_names, x_names)),
    vcov_sandwich = matrix(out$vcov, length(kept), dimnames = list(x_names, x_names)),
    vcov_theta = matrix(out$vcov_variances, length(flist),
                        dimnames = list(names(flist), names(flist))),
    first_step = list(coefficients = stats::setNames(out$first_coef, x_names),
                      theta = stats::setNames(out$first_variances, names(flist))),
    statistic = stats::setNames(out$statistic, names(flist)),
    iterations = c(newton = out$iterations, working = out$working_iterations, pirls = out$pirls_iterations),
    # Seconds in each stage of the core's fit, and its passes over the rows.
    timings = stats::setNames(out$timings, out$stages),
    passes = c(all = out$passes[[1L]], fixed = out$passes[[2L]]),
    second_step = out$second_step,
    # method = "efficient": whether the criterion is the marginal likelihood itself.
    exact = isTRUE(out$exact),
    ranef_values = ranef_values,
    y = if (is.null(response$trials)) response$y else response$y / response$trials,
    prior.weights = if (is.null(response$trials)) rep(1, length(response$y)) else response$trials,
    offset = offset,
    linear.predictors = name_by_rows(eta, frame),
    fitted.values = name_by_rows(mu, frame),
    chunks = out$chunks,
    alchemy = out$alchemy,
    loglik = glmm_loglik(out, response, family, nrow(frame))
  )
  report_dropped_columns(fixed$names, kept)
  if (any(boundary)) message(boundary_message(names(boundary)[boundary]))
  fit <- c(fit, list(
    sigma = 1,
    contrasts = fixed$contrasts,
    xlevels = stats::.getXlevels(fixed_terms, frame),
    call = call,
    formula = formula,
    data_name = if (is.null(call$data)) NULL else deparse1(call$data),
    nobs = nrow(frame),
    ngrps = vapply(flist, nlevels, 1L),
    random = parsed$random,
    n_dropped = length(na_action),
    na.action = na_action,
    flist = flist,
    frame = frame,
    terms = fixed_terms,
    threads = threads
  ))
  fit$residuals <- name_by_rows(fit$y - mu, frame)
  structure(fit, class = c("fr_glmm", "fr_fit"))
}

# logLik() of a fit by the Laplace approximation (method = "laplace"), NULL otherwise
# (the quadrature criterion of method = "efficient" is not on glmer's scale: its
# constants differ). The core's criterion leaves out the terms free of the parameters,
# which glmer's includes: log choose(n, y) per binomial row, -log y! per Poisson row.
glmm_loglik <- function(out, response, family, nobs) {
  if (is.null(out$loglik) || !identical(out$method, "laplace")) return(NULL)
  y <- response$y
  constant <- if (family$family == "poisson") {
    -sum(lgamma(y + 1))
  } else if (!is.null(response$trials)) {
    sum(lchoose(response$trials, y))
  } else {
    0
  }
  structure(out$loglik + constant, df = length(out$coef) + length(out$variances), nobs = nobs,
            class = "logLik")
}

# The model as the core takes it: successes (or counts), the kept fixed-effect columns (a
# matrix or a list of columns, NULL for the intercept) with their names, and the grouping
# codes: the factors themselves, whose integer codes the core reads (unclass() would copy
# them, 4 bytes a row a term).
glmm_core_model <- function(y, x, x_names, flist) {
  list(y = y, x = x, x_names = x_names,
       intercept = match("(Intercept)", x_names, nomatch = 0L) - 1L,
       codes = flist,
       n_levels = vapply(flist, nlevels, 1L), labels = names(flist))
}

# diag((Z'WZ + G^-1)^-1) per term at the modes of a GLMM fit (ranef(condVar = TRUE)),
# with how it was computed, as conditional_variances() returns it for linear fits.
glmm_conditional_variances <- function(fit) {
  X <- stats::model.matrix(fit$terms, fit$frame, contrasts.arg = fit$contrasts)[, fit$kept, drop = FALSE]
  storage.mode(X) <- "double"
  trials <- if (fit$family$family == "binomial") as.double(fit$prior.weights)
  y <- as.double(if (is.null(trials)) fit$y else fit$y * trials)
  model <- glmm_core_model(y, X, colnames(X), fit$flist)
  terms <- names(fit$flist)
  out <- fr_glmm_condvar(model, fit$family$family, fit$family$link, trials, fit$offset,
                         unname(fit$coefficients), unname(as.double(fit$theta[terms])),
                         lapply(fit$ranef_values[terms], function(u) as.double(unname(u))),
                         as.integer(if (is.null(fit$threads)) 1L else fit$threads))
  list(variance = stats::setNames(out$diagonal, terms), std_error = stats::setNames(out$std_error, terms),
       exact = out$exact, probes = out$probes, max_relative_error = out$max_relative_error)
}

# Successes (or counts) and trials from the response as glm's families take it.
glmm_response <- function(y, weights, family, name) {
  if (is.null(y)) stop("the formula has no response", call. = FALSE)
  if (!is.null(weights) && (!is.numeric(weights) || any(!is.finite(weights)) || any(weights < 0))) {
    stop("`weights` must be finite non-negative numbers", call. = FALSE)
  }
  if (family$family == "poisson") {
    if (!is.null(weights)) {
      stop("`weights` are not supported for the Poisson family; use an offset for exposures",
           call. = FALSE)
    }
    if (!is.numeric(y) || !is.null(dim(y))) {
      stop(sprintf("the Poisson response '%s' must be a numeric vector of counts", name), call. = FALSE)
    }
    if (any(!is.finite(y)) || any(y < 0)) {
      stop(sprintf("the Poisson response '%s' has negative or non-finite values", name), call. = FALSE)
    }
    if (any(abs(y - round(y)) > 1e-7)) {
      stop(sprintf("the Poisson response '%s' has non-integer values (counts are whole numbers)", name),
           call. = FALSE)
    }
    if (all(y == 0)) stop(sprintf("the response '%s' is all 0: it carries no information", name), call. = FALSE)
    return(list(y = as.double(y), trials = NULL))
  }
  if (is.matrix(y)) {
    if (ncol(y) != 2L) stop("a binomial matrix response must have two columns: cbind(successes, failures)", call. = FALSE)
    if (!is.null(weights)) stop("`weights` are not taken with a cbind(successes, failures) response", call. = FALSE)
    if (any(!is.finite(y)) || any(y < 0)) stop("the counts of successes and failures must be finite and non-negative", call. = FALSE)
    s <- as.double(y[, 1L])
    n <- as.double(y[, 1L] + y[, 2L])
  } else {
    if (is.factor(y)) y <- as.double(y != levels(y)[1L])
    if (is.logical(y)) y <- as.double(y)
    if (!is.numeric(y)) stop(sprintf("the binomial response '%s' must be numeric, logical, a factor or a two-column matrix", name), call. = FALSE)
    if (any(!is.finite(y)) || any(y < 0 | y > 1)) {
      stop(sprintf("the binomial response '%s' has values outside [0, 1]; give counts as cbind(successes, failures)", name), call. = FALSE)
    }
    if (is.null(weights)) {
      # One trial a row: the core takes no trials vector (at 10^7 rows and more, two
      # vectors of N doubles fewer).
      if (any(y != round(y))) {
        stop(sprintf("the binomial response '%s' has values strictly between 0 and 1; give the trials as `weights` or counts as cbind(successes, failures)", name), call. = FALSE)
      }
      if (all(y == 0) || all(y == 1)) {
        stop(sprintf("the response '%s' is all %s: it carries no information about the model",
                     name, if (all(y == 0)) "0" else "successes"), call. = FALSE)
      }
      return(list(y = as.double(y), trials = NULL))
    }
    n <- as.double(weights)
    s <- y * n
  }
  if (any(n == 0)) {
    stop(sprintf("%d %s 0 trials; remove them (they carry no information)", sum(n == 0),
                 ngettext(sum(n == 0), "row has", "rows have")), call. = FALSE)
  }
  if (any(abs(s - round(s)) > 1e-7)) warning("non-integer #successes in a binomial glmm!", call. = FALSE)
  if (all(s == 0) || all(s == n)) {
    stop(sprintf("the response '%s' is all %s: it carries no information about the model",
                 name, if (all(s == 0)) "0" else "successes"), call. = FALSE)
  }
  list(y = s, trials = n)
}

#' @export
print.fr_glmm <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  refuse_unknown_arguments("print()", ..., help = "print.fr_fit")
  print_glmm_header(x)
  x$varcor <- VarCorr(x)
  print_random_effects(x, digits)
  cat("Fixed Effects:\n")
  print(format(x$coefficients, digits = digits), quote = FALSE)
  print_boundary(x)
  invisible(x)
}

# The header of print() and summary(): which estimator fitted the model.
print_glmm_header <- function(x) {
  fit <- if (inherits(x, "summary.fr_glmm")) x$object else x
  how <- if (identical(fit$method, "efficient")) {
    sprintf("%s (per-level marginal likelihoods by quadrature, method = \"efficient\")",
            if (isTRUE(fit$exact)) "maximum likelihood" else "composite likelihood")
  } else if (identical(fit$method, "laplace")) {
    "maximum likelihood (Laplace Approximation, method = \"laplace\")"
  } else {
    "the method of moments (method = \"moments\")"
  }
  cat(sprintf("Generalized linear mixed model fit by %s ['fr_fit']\n", how))
  cat(sprintf(" Family: %s  ( %s )\n", x$family$family, x$family$link))
  cat("Formula:", deparse1(x$formula), "\n")
  if (!is.null(x$data_name)) cat("   Data:", x$data_name, "\n")
  print_glmm_chunks(if (inherits(x, "summary.fr_glmm")) x$object else x)
}

#' @export
summary.fr_glmm <- function(object, correlation = NULL, ...) {
  refuse_unknown_arguments("summary()", ..., help = "summary.fr_fit")
  b <- object$coefficients
  se <- sqrt(diag(object$vcov))
  z <- b / se
  coefficients <- cbind(Estimate = b, "Std. Error" = se, "z value" = z,
                        "Pr(>|z|)" = 2 * stats::pnorm(-abs(z)))
  structure(list(object = object, coefficients = coefficients, varcor = VarCorr(object),
                 residuals = stats::residuals(object, type = "pearson"),
                 nobs = object$nobs, ngrps = object$ngrps, n_dropped = object$n_dropped,
                 boundary = object$boundary, formula = object$formula,
                 data_name = object$data_name, family = object$family, vcov = object$vcov),
            class = "summary.fr_glmm")
}

#' @export
print.summary.fr_glmm <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  print_glmm_header(x)
  cat("\nScaled residuals: \n")
  q <- stats::quantile(x$residuals, names = FALSE, na.rm = TRUE)
  names(q) <- c("Min", "1Q", "Median", "3Q", "Max")
  print(zapsmall(q, digits + 1L), digits = digits)
  cat("\n")
  print_random_effects(x, digits)
  se_kind <- if (identical(x$object$method, "laplace")) {
    "inverse Hessian of the Laplace deviance"
  } else if (identical(x$object$method, "efficient")) {
    if (isTRUE(x$object$exact)) "inverse observed information" else "model-based quasi-score at the estimates"
  } else if (is.null(x$object$vcov_sandwich) || identical(x$vcov, x$object$vcov_sandwich)) {
    "sandwich of the moment equations"
  } else {
    "model-based quasi-score"
  }
  cat(sprintf("\nFixed effects (standard errors: %s):\n", se_kind))
  stats::printCoefmat(x$coefficients, digits = digits, signif.legend = FALSE)
  print_boundary(x)
  invisible(x)
}

#' @export
VarCorr.fr_glmm <- function(x, sigma = 1, ...) {
  x$theta <- c(x$theta, Residual = 1)
  out <- VarCorr.fr_fit(x, ...)
  attr(out, "sc") <- 1
  attr(out, "useSc") <- FALSE
  class(out) <- c("VarCorr.fr_glmm", class(out))
  out
}

#' @export
as.data.frame.VarCorr.fr_glmm <- function(x, row.names = NULL, optional = FALSE, ...) {
  out <- NextMethod()
  out[out$grp != "Residual", , drop = FALSE]
}

#' @export
fitted.fr_glmm <- function(object, ...) {
  refuse_unknown_arguments("fitted()", ..., help = "predict.fr_fit")
  stats::naresid(object$na.action, name_rows_now(object$fitted.values, object$frame))
}

#' @importFrom stats weights
#' @export
weights.fr_glmm <- function(object, type = c("prior", "working"), ...) {
  refuse_unknown_arguments("weights()", ..., help = "predict.fr_fit")
  type <- match.arg(type)
  # As glm: the trials of every row ("prior"), or the IRLS weights at the fitted
  # conditional means ("working").
  w <- if (type == "prior") {
    object$prior.weights
  } else {
    eta <- object$linear.predictors
    object$prior.weights * object$family$mu.eta(eta)^2 / object$family$variance(object$family$linkinv(eta))
  }
  stats::naresid(object$na.action, name_rows_now(as.double(w), object$frame))
}

#' @export
predict.fr_glmm <- function(object, newdata = NULL, re.form = NULL, allow.new.levels = FALSE,
                            na.action = stats::na.pass, type = c("link", "response"), ...) {
  refuse_unknown_arguments("predict()", ..., help = "predict.fr_fit")
  type <- match.arg(type)
  if (is.null(newdata)) {
    used <- random_terms_used(object, re.form)
    X <- stats::model.matrix(object$terms, object$frame, contrasts.arg = object$contrasts)
    eta <- drop(X[, names(object$coefficients), drop = FALSE] %*% object$coefficients) +
      (if (is.null(object$offset)) 0 else object$offset) +
      if (length(used)) random_part(object$ranef_values[used], object$flist[used]) else 0
    eta <- stats::naresid(object$na.action, name_rows_now(eta, object$frame))
  } else {
    eta <- predict.fr_fit(object, newdata = newdata, re.form = re.form,
                          allow.new.levels = allow.new.levels, na.action = na.action)
    frame <- model.frame(fixed_terms_for_newdata(object), newdata, na.action = na.action,
                         xlev = object$xlevels)
    off <- stats::model.offset(frame)
    if (!is.null(off)) eta <- eta + stats::napredict(attr(frame, "na.action"), off)
    if (!is.null(object$call$offset)) {
      warning("the `offset` argument of the fit is not applied to `newdata` (write it as ",
              "offset() in the formula)", call. = FALSE)
    }
  }
  if (type == "response") object$family$linkinv(eta) else eta
}

#' @export
residuals.fr_glmm <- function(object, type = c("deviance", "pearson", "response", "working"), ...) {
  refuse_unknown_arguments("residuals()", ..., help = "predict.fr_fit")
  type <- match.arg(type)
  mu <- object$fitted.values
  y <- object$y
  wt <- if (is.null(object$prior.weights)) rep(1, length(y)) else object$prior.weights
  eta <- object$linear.predictors
  r <- switch(type,
    response = y - mu,
    pearson = (y - mu) * sqrt(wt) / sqrt(object$family$variance(mu)),
    working = (y - mu) / object$family$mu.eta(eta),
    deviance = sign(y - mu) * sqrt(pmax(object$family$dev.resids(y, mu, wt), 0))
  )
  stats::naresid(object$na.action, name_rows_now(unname(r), object$frame))
}

#' @export
confint.fr_glmm <- function(object, parm, level = 0.95, method = c("Wald", "boot"), nsim = 200,
                            seed = NULL, ...) {
  refuse_unknown_arguments("confint()", ..., help = "confint.fr_fit")
  method <- match.arg(method)
  limits <- interval_limits(level)
  probs <- limits$probs
  b <- object$coefficients
  sd <- sqrt(object$theta)
  est <- c(stats::setNames(sd, paste0(".sig", sprintf("%02d", seq_along(sd)))), b)
  if (method == "Wald") {
    z <- stats::qnorm(probs[2L])
    # The sds by the delta method on the sandwich of the variances.
    sd_se <- sqrt(pmax(diag(object$vcov_theta), 0)) / (2 * pmax(sd, 1e-300))
    ses <- c(sd_se, sqrt(diag(object$vcov)))
    out <- cbind(est - z * ses, est + z * ses)
    out[seq_along(sd), 1L] <- pmax(out[seq_along(sd), 1L], 0)
  } else {
    nsim <- check_whole_number(nsim, "nsim", at_least = 1)
    check_replicate_count(nsim, "bootstrap", level)
    boot <- glmm_parametric_bootstrap(object, nsim, seed)
    out <- t(apply(boot, 2L, stats::quantile, probs = probs, names = FALSE, na.rm = TRUE))
  }
  dimnames(out) <- list(names(est), limits$columns)
  if (!missing(parm)) out <- out[parm, , drop = FALSE]
  out
}

# The parametric bootstrap of a GLMM fit, as lme4's confint(method = "boot") does it:
# `nsim` responses simulated from the fitted model (new random effects and new
# responses), each refitted; a matrix of the sds and fixed effects, one row per
# replicate (NA where a refit failed, with a warning counting them).
glmm_parametric_bootstrap <- function(object, nsim, seed) {
  sims <- simulate(object, nsim = nsim, seed = seed)
  X <- stats::model.matrix(object$terms, object$frame, contrasts.arg = object$contrasts)[, object$kept, drop = FALSE]
  storage.mode(X) <- "double"
  trials <- if (object$family$family == "binomial") as.double(object$prior.weights)
  threads <- as.integer(if (is.null(object$threads)) 1L else object$threads)
  moment_options <- glmm_moment_options(object$method)
  failed <- 0L
  out <- t(vapply(sims, function(y) {
    y <- as.double(if (is.null(trials)) y else round(y * trials))
    if (all(y == 0) || (!is.null(trials) && all(y == trials))) {
      failed <<- failed + 1L
      return(rep(NA_real_, length(object$theta) + length(object$coefficients)))
    }
    fit <- tryCatch(
      fr_glmm_fit(glmm_core_model(y, X, colnames(X), object$flist), object$family$family, object$family$link,
                  trials, object$offset, moment_options$information, moment_options$working, object$method, threads),
      error = function(e) NULL
    )
    if (is.null(fit)) {
      failed <<- failed + 1L
      return(rep(NA_real_, length(object$theta) + length(object$coefficients)))
    }
    c(sqrt(fit$variances), fit$coef)
  }, numeric(length(object$theta) + length(object$coefficients))))
  if (failed > 0L) warning(sprintf("%d of %d bootstrap refits failed and are left out", failed, nsim), call. = FALSE)
  colnames(out) <- c(paste0(".sig", sprintf("%02d", seq_along(object$theta))), names(object$coefficients))
  out
}

#' @exportS3Method generics::tidy
tidy.fr_glmm <- function(x, effects = c("ran_pars", "fixed"), scales = NULL,
                         conf.int = FALSE, conf.level = 0.95, ...) {
  out <- tidy.fr_fit(x, effects = effects, scales = scales, conf.int = conf.int,
                     conf.level = conf.level, ...)
  out[is.na(out$group) | out$group != "Residual", , drop = FALSE]
}

#' @export
simulate.fr_glmm <- function(object, nsim = 1, seed = NULL, re.form = NA, ...) {
  refuse_unknown_arguments("simulate()", ..., help = "simulate.fr_fit")
  if (!is.null(seed)) set.seed(seed)
  n <- length(object$y)
  X <- stats::model.matrix(object$terms, object$frame, contrasts.arg = object$contrasts)
  eta0 <- drop(X[, names(object$coefficients), drop = FALSE] %*% object$coefficients) +
    (if (is.null(object$offset)) 0 else object$offset)
  sims <- lapply(seq_len(nsim), function(i) {
    eta <- eta0
    if (is.null(re.form)) {
      eta <- eta + random_part(object$ranef_values, object$flist)
    } else {
      for (k in names(object$flist)) {
        u <- stats::rnorm(nlevels(object$flist[[k]]), 0, sqrt(object$theta[[k]]))
        eta <- eta + u[unclass(object$flist[[k]])]
      }
    }
    mu <- object$family$linkinv(eta)
    if (object$family$family == "poisson") {
      stats::rpois(n, mu)
    } else {
      stats::rbinom(n, object$prior.weights, mu) / object$prior.weights
    }
  })
  out <- as.data.frame(sims)
  names(out) <- paste0("sim_", seq_len(nsim))
  out
}

# The fixed-effect columns that are not linearly dependent on earlier ones, as qr() of
# the model matrix keeps them; for a list of plain columns (NULL the intercept), from
# the QR of their N x p matrix built a block of rows at a time (R' R = X'X).
fixed_columns_kept <- function(fixed) {
  if (!is.list(fixed$columns)) {
    qx <- qr(fixed$columns)
    return(sort(qx$pivot[seq_len(qx$rank)]))
  }
  p <- length(fixed$columns)
  if (p == 0L) return(integer())
  values <- Find(Negate(is.null), fixed$columns)
  if (is.null(values)) return(seq_len(p))
  n <- length(values)
  block <- 1e6
  r <- NULL
  for (start in seq(1, n, by = block)) {
    rows <- start:min(n, start + block - 1)
    x <- vapply(fixed$columns, function(column) if (is.null(column)) rep(1, length(rows)) else column[rows],
                numeric(length(rows)))
    if (!is.matrix(x)) x <- matrix(x, nrow = length(rows))
    q <- qr(rbind(r, x))
    # In the columns' own order (qr() moves dependent columns to the end): X'X = R'R.
    r <- qr.R(q)[, order(q$pivot), drop = FALSE]
  }
  qx <- qr(r)
  sort(qx$pivot[seq_len(qx$rank)])
}

# X b for the model matrix or a list of columns (NULL the intercept).
glmm_fixed_part <- function(x, b) {
  if (!is.list(x)) return(drop(x %*% b))
  out <- 0
  for (j in seq_along(x)) out <- out + if (is.null(x[[j]])) b[[j]] else b[[j]] * x[[j]]
  out
}
