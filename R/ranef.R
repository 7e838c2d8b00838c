# Predicted random effects (BLUPs) and the per-level coefficients built from them.

#' Predicted random effects of a moment fit
#'
#' `ranef()` gives the best linear unbiased predictions of the random intercepts,
#' `E[u_g | data]` with the estimated variance components plugged in (the "score" of
#' each level, shrunk towards zero by `s2 / s2_k`), from Henderson's equations (see
#' [fr_fit()]). As in lme4, the result is a list with one data frame per random term,
#' with an `(Intercept)` column and the levels as row names; `as.data.frame()` turns it
#' into one tidy data frame with lme4's columns `grpvar`, `term`, `grp` and `condval`.
#' Terms whose variance is estimated at zero have all predictions 0.
#'
#' `coef()` adds the fixed effects: for every term, a data frame with one row per level
#' and one column per fixed effect, the intercept column shifted by the level's
#' prediction, as lme4's `coef()`.
#'
#' With `condVar = TRUE`, every term's data frame carries lme4's attribute `"postVar"`
#' (a 1 x 1 x levels array) with the conditional variances `Var(u_g | y)` of the
#' predictions, the fixed effects taken as known as in lme4: `s2` times the diagonal of
#' `(Z'Z + L)^-1`, `L = diag(s2 / s2_k)` (Henderson's equations, see [fr_fit()]), at the
#' fit's components; `as.data.frame()` then adds lme4's column `condsd`. The diagonal is
#' exact (block elimination of the term with the most levels, and a dense inverse of the
#' Schur complement on the levels of the other terms) while those other terms have at
#' most 4000 levels together (and the work stays below 2e10 multiply-adds): one term, nested terms whose coarse term has up to 4000
#' levels, and crossed designs with a small side (InstEval). Beyond that it is the
#' stochastic estimate of Bekas, Kokiopoulou and Saad (2007) from 128 Rademacher
#' probes solved by conjugate gradients; its standard errors are in the attribute
#' `"condVar"` of the result (`exact`, `probes`, `max_relative_error`, the largest
#' standard error of a conditional variance relative to the value). Terms estimated at
#' zero have conditional variance 0. For a binomial or Poisson fit (`family =`) the
#' values are the conditional modes and their variances those glmer reports, the
#' diagonal of `(Z'WZ + G^-1)^-1` with `W` the Fisher weights at the modes and
#' `G = diag(s2_k)`: exact by conjugate-gradient solves for the unit vectors up to
#' 4000 levels in all, the same stochastic estimate beyond. `lattice::dotplot()` then draws the caterpillar plot
#' with each level's interval ([dotplot.ranef.fr_fit]); the result also carries lme4's
#' class `"ranef.mer"` after its own. The fit's data are needed (not kept by fits from
#' files or lists of data frames).
#'
#' @param object an `fr_fit` object (for `ranef`, `coef`), or the result of `ranef()`.
#' @param x the result of `ranef()`.
#' @param row.names,optional unused; for compatibility with [as.data.frame()].
#' @param condVar `TRUE` to attach the conditional variances (see above).
#' @param type `"blup"` (the default) or `"npmle"`: the empirical Bayes posterior means
#'   `E[u_g | d_g]` under each term's estimated distribution ([fr_distribution()] with
#'   its defaults: the Kiefer-Wolfowitz NPMLE when a split likelihood-ratio test rejects
#'   normal effects, else the normal, whose posterior means are the BLUPs) instead of the
#'   linear predictions; the same layout. They differ from the BLUPs where the effects
#'   are not normal (skewed, multimodal).
#' @param ... not used; any argument here is an error rather than silently ignored.
#' @return `ranef()`: a list of class `ranef.fr_fit` of data frames; `coef()`: a named
#'   list of data frames; `as.data.frame()`: a data frame.
#' @examples
#' if (requireNamespace("lme4", quietly = TRUE)) {
#'   fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
#'   ranef(fit)$sample
#'   head(as.data.frame(ranef(fit)))
#'   coef(fit)$sample
#' }
#' @name ranef.fr_fit
#' @export
ranef.fr_fit <- function(object, condVar = FALSE, type = c("blup", "npmle"), ...) {
  refuse_unknown_arguments("ranef()", ..., help = "ranef.fr_fit")
  if (!isTRUE(condVar) && !isFALSE(condVar)) stop("`condVar` must be TRUE or FALSE", call. = FALSE)
  type <- match.arg(type)
  if (condVar && type != "blup") {
    stop("conditional variances are those of the BLUPs: use type = \"blup\" with condVar = TRUE",
         call. = FALSE)
  }
  values <- if (type == "blup") object$ranef_values else npmle_ranef_values(object)
  out <- lapply(values, function(u) {
    data.frame("(Intercept)" = unname(u), row.names = names(u), check.names = FALSE)
  })
  if (condVar) {
    cv <- if (inherits(object, "fr_glmm")) glmm_conditional_variances(object) else conditional_variances(object)
    for (k in names(out)) {
      attr(out[[k]], "postVar") <- array(cv$variance[[k]], c(1L, 1L, nrow(out[[k]])))
    }
    attr(out, "condVar") <- cv[c("exact", "probes", "max_relative_error")]
  }
  # lme4's class after ours: its lattice methods (dotplot, qqmath) draw these.
  class(out) <- c("ranef.fr_fit", "ranef.mer")
  out
}

# s2 diag((Z'Z + L)^-1) per term at the fit's components (see ranef.fr_fit), with how it
# was computed; `method` "auto", "exact" or "stochastic" (for the tests).
conditional_variances <- function(fit, method = "auto", probes = 128L, seed = 1) {
  if (is.null(fit$frame)) {
    stop(paste(
      "conditional variances need the data of the fit, which fits from a list of data frames",
      "or from files do not keep; fit a data frame (chunks of it are fine)"
    ), call. = FALSE)
  }
  terms <- names(fit$flist)
  s2 <- fit$theta[["Residual"]]
  lambda <- s2 / unname(fit$theta[terms])
  lambda[!is.finite(lambda)] <- 0
  model <- bootstrap_model(fit)$model
  out <- fr_inverse_diagonal(model, as.numeric(lambda), method, as.integer(probes), seed,
                             as.integer(if (is.null(fit$threads)) 1L else fit$threads))
  list(variance = stats::setNames(lapply(out$diagonal, function(d) s2 * d), terms),
       std_error = stats::setNames(lapply(out$std_error, function(d) s2 * d), terms),
       exact = out$exact, probes = out$probes, max_relative_error = out$max_relative_error)
}

#' @rdname ranef.fr_fit
#' @export
print.ranef.fr_fit <- function(x, ...) {
  shown <- lapply(unclass(x), function(d) {
    attr(d, "postVar") <- NULL
    d
  })
  print(shown, ...)
  invisible(x)
}

#' @rdname ranef.fr_fit
#' @export
as.data.frame.ranef.fr_fit <- function(x, row.names = NULL, optional = FALSE, ...) {
  refuse_unknown_arguments("as.data.frame()", ..., help = "ranef.fr_fit")
  pieces <- lapply(names(x), function(k) {
    piece <- data.frame(
      grpvar = k,
      term = "(Intercept)",
      grp = rownames(x[[k]]),
      condval = x[[k]][["(Intercept)"]],
      stringsAsFactors = FALSE
    )
    post <- attr(x[[k]], "postVar")
    if (!is.null(post)) piece$condsd <- sqrt(as.vector(post))
    piece
  })
  out <- do.call(rbind, pieces)
  out$grp <- factor(out$grp, levels = unique(out$grp))
  rownames(out) <- NULL
  out
}

#' @rdname ranef.fr_fit
#' @export
coef.fr_fit <- function(object, ...) {
  refuse_unknown_arguments("coef()", ..., help = "ranef.fr_fit")
  b <- object$coefficients
  out <- lapply(object$ranef_values, function(u) {
    df <- as.data.frame(matrix(rep(b, each = length(u)), length(u),
                               dimnames = list(names(u), names(b))),
                        optional = TRUE)
    if ("(Intercept)" %in% names(b)) {
      df[["(Intercept)"]] <- df[["(Intercept)"]] + unname(u)
      df
    } else {
      # A random intercept in a model without a fixed one, as lme4 shows it.
      cbind(data.frame("(Intercept)" = unname(u), check.names = FALSE), df)
    }
  })
  out
}

# The empirical Bayes posterior means of every term's levels under its NPMLE.
npmle_ranef_values <- function(object, dists = NULL) {
  terms <- names(object$flist)
  if (is.null(dists)) dists <- lapply(terms, function(k) fr_distribution(object, k))
  out <- lapply(dists, npmle_ranef)
  names(out) <- terms
  out
}
