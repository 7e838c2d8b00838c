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
#' Conditional variances (lme4's `condVar`) are not computed: for crossed terms they
#' need the diagonal of the inverse of `Z'Z + L`, which this version does not form.
#'
#' @param object an `fr_fit` object (for `ranef`, `coef`), or the result of `ranef()`.
#' @param x the result of `ranef()`.
#' @param row.names,optional unused; for compatibility with [as.data.frame()].
#' @param condVar must be `FALSE`: conditional variances are not computed (see above);
#'   `TRUE` (lme4's default) is an error rather than silently ignored.
#' @param type `"blup"` (the default) or `"npmle"`: the empirical Bayes posterior means
#'   `E[u_g | d_g]` under the Kiefer-Wolfowitz estimate of each term's distribution
#'   ([fr_distribution()]) instead of the linear predictions; the same layout. They
#'   differ from the BLUPs where the effects are not normal (skewed, multimodal).
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
  if (!isFALSE(condVar)) {
    stop(paste(
      "ranef(condVar = TRUE) is not supported: conditional variances of crossed terms need",
      "the diagonal of the inverse of Z'Z + L, which fr_fit does not form; use condVar = FALSE"
    ), call. = FALSE)
  }
  type <- match.arg(type)
  values <- if (type == "blup") object$ranef_values else npmle_ranef_values(object)
  out <- lapply(values, function(u) {
    data.frame("(Intercept)" = unname(u), row.names = names(u), check.names = FALSE)
  })
  class(out) <- "ranef.fr_fit"
  out
}

#' @rdname ranef.fr_fit
#' @export
print.ranef.fr_fit <- function(x, ...) {
  print(unclass(x), ...)
  invisible(x)
}

#' @rdname ranef.fr_fit
#' @export
as.data.frame.ranef.fr_fit <- function(x, row.names = NULL, optional = FALSE, ...) {
  refuse_unknown_arguments("as.data.frame()", ..., help = "ranef.fr_fit")
  pieces <- lapply(names(x), function(k) {
    data.frame(
      grpvar = k,
      term = "(Intercept)",
      grp = rownames(x[[k]]),
      condval = x[[k]][["(Intercept)"]],
      stringsAsFactors = FALSE
    )
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
