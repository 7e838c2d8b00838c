# lme4's generics, extended rather than masked: fullrandom imports them from lme4 and
# re-exports them, so that attaching either package first leaves one generic that
# dispatches to both merMod and fr_fit methods. Also the likelihood-based methods, which
# a moment fit answers with an error that says what to use instead, and simulate().

#' @importFrom lme4 ngrps
#' @export
lme4::ngrps

#' @importFrom lme4 getME
#' @export
lme4::getME

#' @importFrom lme4 isSingular
#' @export
lme4::isSingular

#' @importFrom lme4 REMLcrit
#' @export
lme4::REMLcrit

#' @importFrom lme4 refit
#' @export
lme4::refit

#' Likelihood-based methods: for REML and ML fits, and refused for moment fits
#'
#' A fit by `fr_fit(method = "reml")` (REML, or maximum likelihood with `REML = FALSE`)
#' has a log-likelihood: `logLik()` returns it as a `logLik` object (degrees of freedom
#' the fixed effects, the random-effect variances and sigma, as lme4 counts them), so
#' `AIC()` and `BIC()` work; `deviance()` is `-2 logLik` of an ML fit; `anova(m0, m1,
#' ...)` is the likelihood-ratio test of nested fits, refitting REML fits by ML first
#' as lme4 does (`refit = FALSE` compares them as they are).
#'
#' The other methods of [fr_fit()] estimate the variance components by moment equations,
#' and no likelihood is maximised or even evaluated. So for them `logLik()`,
#' `AIC()` and `BIC()` (which call `logLik()`), `deviance()`, `anova()`, `drop1()`,
#' `extractAIC()`, `profile()`, lme4's `REMLcrit()` (which asks lme4's `isLMM()`) and
#' `refit()` (which re-optimises lme4's likelihood) stop with an error that says what to
#' use instead: [confint()][confint.fr_fit] for intervals of the variance components and
#' fixed effects, and Wald tests of the fixed effects from [summary()][summary.fr_fit]
#' or [vcov()][fixef.fr_fit].
#'
#' `anova()` of one fit gives instead the marginal Wald F tests of its fixed-effect
#' terms: for the `q` columns of each term, `F = b' V^-1 b / q` from [vcov()][fixef.fr_fit],
#' with asymptotic denominator degrees of freedom (`Inf`), as a table in the layout of
#' lmerTest's (without sums of squares).
#'
#' @param object,fitted,fit,x an `fr_fit` object.
#' @param scope,scale,k,newresp arguments of the generics, unused.
#' @param refit for `anova()`: refit REML fits by maximum likelihood before comparing
#'   them (as lme4 does); the likelihood-ratio test of fixed effects needs ML fits.
#' @param ... unused (for `anova()`, further models).
#' @return These methods do not return; each signals an error.
#' @examples
#' fit <- fr_fit(distance ~ bow + (1 | archer), data = simulate_archers(seed = 1))
#' try(logLik(fit))
#' try(AIC(fit))
#' @name likelihood.fr_fit
NULL

# The one message of every likelihood-based method: what needs a likelihood, that a
# moment fit has none, and what to use instead.
no_likelihood_message <- function(what, instead = paste(
  "use confint() for intervals of the variance components and fixed effects, and Wald",
  "tests of the fixed effects from summary() or vcov()"
)) {
  sprintf(paste(
    "%s needs a likelihood, and a moment fit has none (fr_fit estimates the variance",
    "components by the method of moments); %s"
  ), what, instead)
}

#' @rdname likelihood.fr_fit
#' @importFrom stats logLik
#' @export
logLik.fr_fit <- function(object, ...) {
  refuse_unknown_arguments("logLik()", ..., help = "likelihood.fr_fit")
  # A fit by a likelihood-based method would carry its log-likelihood.
  if (!is.null(object$loglik)) return(object$loglik)
  stop(no_likelihood_message("logLik() (and so AIC() and BIC())", likelihood_hint_of(object)), call. = FALSE)
}

# What to use instead: a linear fit can be refitted by REML; a GLMM has only the moments.
likelihood_hint_of <- function(object) {
  if (inherits(object, "fr_glmm")) {
    return(paste("fit with method = \"laplace\" (the Laplace approximation, as glmer) or, with one",
                 "term or nested terms, method = \"efficient\" (the likelihood by quadrature) for a",
                 "likelihood, or use confint() for Wald intervals and Wald tests of the fixed effects",
                 "from summary() or vcov()"))
  }
  likelihood_hint
}

likelihood_hint <- paste(
  "fit with method = \"reml\" (REML, or maximum likelihood with REML = FALSE) for a",
  "likelihood, or use confint() for intervals of the variance components and fixed",
  "effects and Wald tests of the fixed effects from summary() or vcov()"
)

#' @rdname likelihood.fr_fit
#' @importFrom stats deviance
#' @export
deviance.fr_fit <- function(object, ...) {
  refuse_unknown_arguments("deviance()", ..., help = "likelihood.fr_fit")
  if (identical(object$method, "reml")) {
    stop(paste(
      "the deviance of a REML fit is not defined; -2 * logLik(fit) is its REML criterion,",
      "and update(fit, REML = FALSE) gives the maximum likelihood fit whose deviance() is"
    ), call. = FALSE)
  }
  if (!is.null(object$loglik)) return(-2 * as.numeric(object$loglik))
  stop(no_likelihood_message("deviance()", likelihood_hint_of(object)), call. = FALSE)
}

#' @rdname likelihood.fr_fit
#' @importFrom stats anova
#' @export
anova.fr_fit <- function(object, ..., refit = TRUE) {
  # One fit: marginal Wald F tests of its fixed-effect terms (R/ecosystem.R).
  if (...length() == 0L) return(wald_anova(object))
  models <- c(list(object), list(...))
  names(models) <- vapply(as.list(substitute(list(object, ...)))[-1L], deparse1, "")
  if (!all(vapply(models, inherits, TRUE, what = "fr_fit"))) {
    stop("anova() compares fr_fit objects only", call. = FALSE)
  }
  if (!all(vapply(models, function(m) m$method %in% c("reml", "ml"), TRUE))) {
    stop(no_likelihood_message("anova() of several models (a likelihood-ratio test)", paste(
      "fit every model with method = \"reml\" for likelihood-ratio tests, or test fixed",
      "effects by Wald tests from vcov() or summary()"
    )), call. = FALSE)
  }
  is_reml <- vapply(models, function(m) identical(m$method, "reml"), TRUE)
  if (refit && any(is_reml)) {
    message("refitting model(s) with ML (instead of REML)")
    models[is_reml] <- lapply(models[is_reml], stats::update, REML = FALSE)
  }
  n <- vapply(models, stats::nobs, 1)
  if (length(unique(n)) > 1L) {
    stop("the models were fitted to different numbers of observations", call. = FALSE)
  }
  lls <- lapply(models, stats::logLik)
  ll <- vapply(lls, as.numeric, 1)
  if (anyNA(ll)) stop("a model has no log-likelihood (see fit$likelihood$reason)", call. = FALSE)
  npar <- vapply(lls, attr, 1, "df")
  o <- order(npar)
  ll <- ll[o]
  npar <- npar[o]
  chisq <- c(NA, 2 * diff(ll))
  df <- c(NA, diff(npar))
  table <- data.frame(
    npar = npar, AIC = -2 * ll + 2 * npar, BIC = -2 * ll + log(n[[1L]]) * npar, logLik = ll,
    deviance = -2 * ll, Chisq = chisq, Df = df,
    "Pr(>Chisq)" = stats::pchisq(chisq, df, lower.tail = FALSE),
    row.names = names(models)[o], check.names = FALSE
  )
  structure(table, heading = c(
    "Data: likelihood-ratio tests of nested fr_fit models\n",
    paste0(names(models)[o], ": ", vapply(models[o], function(m) deparse1(m$formula), ""), collapse = "\n")
  ), class = c("anova", "data.frame"))
}

#' @rdname likelihood.fr_fit
#' @importFrom stats drop1
#' @export
drop1.fr_fit <- function(object, scope, ...) {
  stop(no_likelihood_message("drop1() (likelihood-ratio tests or AIC)", paste(
    "test the fixed effects of a term by a Wald test from vcov() or summary()"
  )), call. = FALSE)
}

#' @rdname likelihood.fr_fit
#' @importFrom stats extractAIC
#' @export
extractAIC.fr_fit <- function(fit, scale, k, ...) {
  stop(no_likelihood_message("extractAIC() (and so step())"), call. = FALSE)
}

#' @rdname likelihood.fr_fit
#' @importFrom stats profile
#' @export
profile.fr_fit <- function(fitted, ...) {
  stop(no_likelihood_message("profile()", paste(
    "use confint(), whose intervals come from analytic standard errors (or the pigeonhole",
    "bootstrap) instead of likelihood profiles"
  )), call. = FALSE)
}

#' @rdname likelihood.fr_fit
#' @export
refit.fr_fit <- function(object, newresp, ...) {
  stop(no_likelihood_message("refit() (which re-optimises lme4's likelihood)", paste(
    "to fit a new response, put it in the data and call fr_fit() again, e.g.",
    "update(fit, data = <data with the new response>)"
  )), call. = FALSE)
}

# lme4's REMLcrit() is not a generic: it asks isLMM() (a generic) and then reads an S4
# slot; this method is where a moment fit can answer.
#' @rdname likelihood.fr_fit
#' @importFrom lme4 isLMM
#' @export
isLMM.fr_fit <- function(x, ...) {
  if (!is.null(x$loglik)) {
    stop(paste(
      "lme4's REMLcrit() reads lme4's own fit objects; for an fr_fit by REML the REML",
      "criterion is -2 * logLik(fit)"
    ), call. = FALSE)
  }
  stop(no_likelihood_message("REMLcrit() (which asks lme4's isLMM())", likelihood_hint), call. = FALSE)
}

#' Parts of a moment fit by lme4's names
#'
#' `getME()` (lme4's generic) extracts the parts of a fit that lme4 users ask for by name.
#' A moment fit has `"theta"` (the standard deviations of the random terms relative to
#' `sigma`, as lme4's `theta` for random intercepts), `"lower"` (their lower bounds, 0),
#' `"beta"` and `"fixef"` (the fixed effects, unnamed and named), `"sigma"`, `"flist"`
#' (the grouping factors), `"cnms"` (the columns of each random term), `"X"` (the
#' fixed-effect model matrix), `"n"`, `"p"` and `"n_rtrms"` (numbers of observations,
#' fixed effects and random terms). The parts of lme4's penalised least squares and
#' likelihood (`"devcomp"`, `"L"`, `"Lambda"`, `"RX"`, `"REML"`, ...) do not exist in a
#' moment fit and are an error.
#'
#' Through `"theta"` and `"lower"`, lme4's `isSingular()` works on a moment fit: it is
#' `TRUE` when a random term's standard deviation, relative to `sigma`, is below `tol`
#' (default `1e-4`), which holds for every term set to zero by the boundary rule of
#' [fr_fit()].
#'
#' @param object an `fr_fit` object.
#' @param name the names of the parts; several give a named list.
#' @param ... unused.
#' @return the part, or a named list of parts.
#' @examples
#' fit <- fr_fit(distance ~ bow + (1 | archer), data = simulate_archers(seed = 1))
#' getME(fit, "theta")
#' isSingular(fit)
#' @export
getME.fr_fit <- function(object, name, ...) {
  refuse_unknown_arguments("getME()", ..., help = "getME.fr_fit")
  parts <- c("theta", "lower", "beta", "fixef", "sigma", "flist", "cnms", "X", "n", "p", "n_rtrms")
  if (missing(name) || !is.character(name) || length(name) == 0L || anyNA(name)) {
    stop("`name` must name parts of the fit: ", paste(parts, collapse = ", "), call. = FALSE)
  }
  if (length(name) > 1L) {
    return(sapply(name, function(one) getME.fr_fit(object, one), simplify = FALSE))
  }
  terms <- names(object$flist)
  switch(name,
    theta = stats::setNames(sqrt(unname(object$theta[terms])) / object$sigma,
                            paste0(terms, ".(Intercept)")),
    lower = rep(0, length(terms)),
    beta = unname(object$coefficients),
    fixef = object$coefficients,
    sigma = object$sigma,
    flist = object$flist,
    cnms = stats::setNames(rep(list("(Intercept)"), length(terms)), terms),
    X = stats::model.matrix(object),
    n = object$nobs,
    p = length(object$coefficients),
    n_rtrms = length(terms),
    devcomp = , devfun = , REML = , is_REML = , L = , Lambda = , Lambdat = , Lind = ,
    RX = , RZX = , ALL = refuse_getme_part(name, parts, likelihood = TRUE),
    refuse_getme_part(name, parts, likelihood = FALSE)
  )
}

# The error of getME() for a part a moment fit does not have: a likelihood's part (lme4's
# deviance function, Cholesky factor, ...) or a name lme4 does not know either.
refuse_getme_part <- function(name, parts, likelihood) {
  if (likelihood) {
    stop(no_likelihood_message(sprintf("getME(fit, \"%s\")", name),
                               paste("its parts are", paste(parts, collapse = ", "))), call. = FALSE)
  }
  stop(sprintf("getME(fit, \"%s\") is not a part of a moment fit; its parts are %s", name,
               paste(parts, collapse = ", ")), call. = FALSE)
}

#' Simulate responses from a moment fit
#'
#' Draws `nsim` responses from the fitted model, as lme4's `simulate()` does by default:
#' the fixed effects `X b` plus, for every random term, new normal random effects with
#' the estimated variance, plus normal errors with variance `sigma^2`. Terms named in
#' `re.form` are instead held at their predicted random effects (BLUPs), so
#' `re.form = NULL` draws only new errors around the fitted values. The estimates are
#' treated as the true values; with [fr_fit()] on each simulated response this is a
#' parametric bootstrap.
#'
#' @param object an `fr_fit` made from a data frame.
#' @param nsim number of responses to draw.
#' @param seed `NULL`, or a number for [set.seed()]; the random stream is then restored
#'   afterwards, as for [stats::simulate()].
#' @param re.form the random terms to condition on: `NA` or `~ 0` (the default) none, so
#'   every term's effects are drawn anew; `NULL` all; or a one-sided formula such as
#'   `~ (1 | s)`.
#' @param ... unused.
#' @return a data frame with one row per observation of the fit and columns `sim_1`,
#'   ..., `sim_<nsim>`, with attribute `"seed"` as [stats::simulate()] sets it (the
#'   state of the random stream before the draws when `seed` is `NULL`, otherwise `seed`
#'   with the generator kinds as attribute `"kind"`).
#' @examples
#' fit <- fr_fit(distance ~ bow + (1 | archer), data = simulate_archers(seed = 1))
#' sims <- simulate(fit, nsim = 2, seed = 3)
#' head(sims)
#' @importFrom stats simulate
#' @export
simulate.fr_fit <- function(object, nsim = 1, seed = NULL, re.form = NA, ...) {
  refuse_unknown_arguments("simulate()", ..., help = "simulate.fr_fit")
  nsim <- check_whole_number(nsim, "nsim", at_least = 1)
  check_seed(seed)
  require_data_of_fit(object, "simulated responses (drawn for the rows of the fit)")
  held <- random_terms_used(object, re.form)
  drawn <- setdiff(names(object$flist), held)
  mean <- drop(stats::model.matrix(object) %*% object$coefficients)
  if (length(held)) mean <- mean + random_part(object$ranef_values[held], object$flist[held])

  # The seed attribute and the restored stream that stats::simulate() documents.
  if (!exists(".Random.seed", envir = globalenv(), inherits = FALSE)) stats::runif(1L)
  if (is.null(seed)) {
    seed_used <- get(".Random.seed", envir = globalenv())
  } else {
    saved <- get(".Random.seed", envir = globalenv())
    on.exit(assign(".Random.seed", saved, envir = globalenv()), add = TRUE)
    set.seed(seed)
    seed_used <- structure(seed, kind = as.list(RNGkind()))
  }
  n <- length(mean)
  sims <- lapply(seq_len(nsim), function(i) {
    y <- mean + stats::rnorm(n, sd = object$sigma)
    for (k in drawn) {
      f <- object$flist[[k]]
      y <- y + stats::rnorm(nlevels(f), sd = sqrt(object$theta[[k]]))[unclass(f)]
    }
    y
  })
  names(sims) <- paste0("sim_", seq_len(nsim))
  out <- as.data.frame(sims, row.names = attr(object$frame, "row.names"))
  attr(out, "seed") <- seed_used
  out
}
