#' fullrandom: linear mixed models by the method of moments, at scale
#'
#' `fr_fit()` fits linear mixed models with crossed and nested random intercepts,
#' written in lme4's formula syntax, by the method of moments of N. Matloff's Full
#' Randomness framework. The variance components solve moment equations that are
#' exactly unbiased for any design, without a normality assumption; every quantity
#' comes from sufficient statistics made in one parallel pass over the data, so the
#' time grows linearly with the number of observations.
#'
#' Options:
#' * `fullrandom.threads`: the default number of threads of [fr_fit()]; without it,
#'   every core available (at most 2 when `_R_CHECK_LIMIT_CORES_` is set).
#'
#' @keywords internal
#' @useDynLib fullrandom, .registration = TRUE
#' @importFrom nlme VarCorr
#' @importFrom stats model.frame model.matrix model.response terms formula nobs
#' @importFrom stats coef fitted predict residuals sigma vcov
"_PACKAGE"
