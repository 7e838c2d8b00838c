# Accessors in lme4's style: fixef, vcov, sigma, nobs, ngrps, formula, model.frame,
# terms and model.matrix. `update()` works through stats' default method, which
# re-evaluates the stored call.

#' Fixed effects, their covariance and other parts of a moment fit
#'
#' The accessors an lme4 user expects. `fixef()` gives the GLS fixed effects (see
#' [fr_fit()]), `vcov()` their covariance `s2 (X'X - X'Z (Z'Z + L)^-1 Z'X)^-1`,
#' `sigma()` the residual standard deviation, `nobs()` the number of observations used,
#' `df.residual()` the residual degrees of freedom of the fixed part, `n - rank(X)` (as lm
#' reports them; lmer's also subtracts its variance parameters) and `ngrps()` (lme4's
#' generic) the number of levels of each random term. `formula()` is the model
#' formula, `model.frame()` the model frame (every variable of the formula, after
#' `subset` and `na.action`), `terms()` the terms of the fixed part (as lme4's
#' `terms(fixed.only = TRUE)`) and `model.matrix()` the fixed-effect model matrix.
#' `update()` refits with changed arguments, as for any model with a stored call.
#'
#' @param object,x,formula an `fr_fit` object.
#' @param add.dropped if `TRUE`, `fixef()` includes the columns dropped as aliased
#'   (rank deficient), as `NA`.
#' @param correlation if `TRUE`, `vcov()` carries the correlation matrix as attribute
#'   `"correlation"`.
#' @param use.fallback unused: the number of observations is always known.
#' @param ... not used; any argument here is an error rather than silently ignored.
#' @return `fixef()`: a named numeric vector; `vcov()`: a matrix; `sigma()`, `nobs()`,
#'   `df.residual()`: a number; `ngrps()`: a named integer vector; the others as their
#'   generics.
#' @examples
#' if (requireNamespace("lme4", quietly = TRUE)) {
#'   fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
#'   fixef(fit)
#'   sqrt(diag(vcov(fit)))
#'   sigma(fit)
#'   ngrps(fit)
#'   update(fit, . ~ . - Days)
#' }
#' @name fixef.fr_fit
#' @export
fixef.fr_fit <- function(object, add.dropped = FALSE, ...) {
  refuse_unknown_arguments("fixef()", ..., help = "fixef.fr_fit")
  if (isTRUE(add.dropped)) object$coef_all else object$coefficients
}

#' @rdname fixef.fr_fit
#' @export
vcov.fr_fit <- function(object, correlation = FALSE, ...) {
  refuse_unknown_arguments("vcov()", ..., help = "fixef.fr_fit")
  v <- object$vcov
  if (isTRUE(correlation)) attr(v, "correlation") <- stats::cov2cor(v)
  v
}

#' @rdname fixef.fr_fit
#' @export
sigma.fr_fit <- function(object, ...) {
  refuse_unknown_arguments("sigma()", ..., help = "fixef.fr_fit")
  object$sigma
}

#' @rdname fixef.fr_fit
#' @export
nobs.fr_fit <- function(object, use.fallback = FALSE, ...) {
  # use.fallback is stats::nobs()'s own argument (step() passes it); the count is exact.
  refuse_unknown_arguments("nobs()", ..., help = "fixef.fr_fit")
  object$nobs
}

# ngrps() is lme4's generic (re-exported in lme4-methods.R), never a second one that
# would mask it.
#' @rdname fixef.fr_fit
#' @export
ngrps.fr_fit <- function(object, ...) {
  refuse_unknown_arguments("ngrps()", ..., help = "fixef.fr_fit")
  object$ngrps
}

#' @rdname fixef.fr_fit
#' @importFrom stats df.residual
#' @export
df.residual.fr_fit <- function(object, ...) {
  refuse_unknown_arguments("df.residual()", ..., help = "fixef.fr_fit")
  # n - rank(X), as lm reports it: aliased columns were dropped from the coefficients.
  object$nobs - length(object$coefficients)
}

#' @rdname fixef.fr_fit
#' @export
formula.fr_fit <- function(x, ...) {
  refuse_unknown_arguments("formula()", ..., help = "fixef.fr_fit")
  x$formula
}

#' @rdname fixef.fr_fit
#' @export
model.frame.fr_fit <- function(formula, ...) {
  refuse_unknown_arguments("model.frame()", ..., help = "fixef.fr_fit")
  require_data_of_fit(formula, "the model frame and model matrix")
  formula$frame
}

#' @rdname fixef.fr_fit
#' @export
terms.fr_fit <- function(x, ...) {
  refuse_unknown_arguments("terms()", ..., help = "fixef.fr_fit")
  x$terms
}

#' @rdname fixef.fr_fit
#' @export
model.matrix.fr_fit <- function(object, ...) {
  refuse_unknown_arguments("model.matrix()", ..., help = "fixef.fr_fit")
  require_data_of_fit(object, "the model frame and model matrix")
  X <- model.matrix(object$terms, object$frame, contrasts.arg = object$contrasts)
  X[, names(object$coefficients), drop = FALSE]
}

#' @importFrom nlme fixef
#' @export
nlme::fixef

#' @importFrom nlme ranef
#' @export
nlme::ranef
