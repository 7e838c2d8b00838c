# Accessors in lme4's style: fixef, vcov, sigma, nobs, ngrps, formula, model.frame,
# terms and model.matrix. `update()` works through stats' default method, which
# re-evaluates the stored call.

#' Fixed effects, their covariance and other parts of a moment fit
#'
#' The accessors an lme4 user expects. `fixef()` gives the GLS fixed effects (see
#' [fr_fit()]), `vcov()` their covariance `s2 (X'X - X'Z (Z'Z + L)^-1 Z'X)^-1`,
#' `sigma()` the residual standard deviation, `nobs()` the number of observations used
#' and `ngrps()` the number of levels of each random term. `formula()` is the model
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
#' @param ... unused.
#' @return `fixef()`: a named numeric vector; `vcov()`: a matrix; `sigma()`, `nobs()`:
#'   a number; `ngrps()`: a named integer vector; the others as their generics.
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
  if (isTRUE(add.dropped)) object$coef_all else object$coefficients
}

#' @rdname fixef.fr_fit
#' @export
vcov.fr_fit <- function(object, correlation = FALSE, ...) {
  v <- object$vcov
  if (isTRUE(correlation)) attr(v, "correlation") <- stats::cov2cor(v)
  v
}

#' @rdname fixef.fr_fit
#' @export
sigma.fr_fit <- function(object, ...) object$sigma

#' @rdname fixef.fr_fit
#' @export
nobs.fr_fit <- function(object, ...) object$nobs

#' Number of levels of each grouping factor
#'
#' The generic of lme4's `ngrps()`; when lme4 is loaded its generic dispatches to the
#' same method.
#' @param object a fitted model.
#' @param ... passed to methods.
#' @return a named integer vector.
#' @export
ngrps <- function(object, ...) UseMethod("ngrps")

#' @rdname fixef.fr_fit
#' @export
#' @rawNamespace S3method(lme4::ngrps, fr_fit)
ngrps.fr_fit <- function(object, ...) object$ngrps

#' @rdname fixef.fr_fit
#' @export
formula.fr_fit <- function(x, ...) x$formula

#' @rdname fixef.fr_fit
#' @export
model.frame.fr_fit <- function(formula, ...) {
  require_data_of_fit(formula, "the model frame and model matrix")
  formula$frame
}

#' @rdname fixef.fr_fit
#' @export
terms.fr_fit <- function(x, ...) x$terms

#' @rdname fixef.fr_fit
#' @export
model.matrix.fr_fit <- function(object, ...) {
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
