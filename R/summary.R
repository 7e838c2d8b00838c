# summary() in lmer's layout: scaled residuals, random effects, fixed effects with
# standard errors and t values, and their correlations.

#' Summarise a moment fit
#'
#' `summary()` collects what lmer's summary shows: the quantiles of the scaled
#' residuals, the variance components, the fixed effects with standard errors (from
#' [vcov()][fixef.fr_fit]) and t values, and the correlation of the fixed effects.
#' No p-values are given, as in lme4: the degrees of freedom of a t test in a mixed
#' model are not well defined.
#'
#' @param object an `fr_fit` object.
#' @param x a `summary.fr_fit` object.
#' @param digits number of significant digits.
#' @param correlation print the correlation of the fixed effects? By default when
#'   there are at most 12 of them; given to `summary()` (as lme4 takes it) or `print()`.
#' @param ... not used; any argument here is an error rather than silently ignored.
#' @return `summary()`: an object of class `summary.fr_fit`, a list with
#'   `coefficients` (a matrix with columns `Estimate`, `Std. Error`, `t value`),
#'   `varcor`, `residuals` (scaled), `vcov`, `sigma`, `ngrps` and the call's details.
#' @examples
#' if (requireNamespace("lme4", quietly = TRUE)) {
#'   summary(fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy))
#' }
#' @export
summary.fr_fit <- function(object, correlation = NULL, ...) {
  refuse_unknown_arguments("summary()", ..., help = "summary.fr_fit")
  b <- object$coefficients
  se <- sqrt(diag(object$vcov))
  coefficients <- cbind(Estimate = b, "Std. Error" = se, "t value" = b / se)
  structure(list(
    formula = object$formula,
    data_name = object$data_name,
    residuals = if (!is.null(object$residuals)) object$residuals / object$sigma,
    varcor = VarCorr(object),
    nobs = object$nobs,
    ngrps = object$ngrps,
    n_dropped = object$n_dropped,
    coefficients = coefficients,
    vcov = object$vcov,
    sigma = object$sigma,
    boundary = object$boundary,
    method = object$method,
    loglik = object$loglik,
    likelihood = object$likelihood,
    efficient = object$efficient,
    fr = object$fr,
    chunks = object$chunks,
    correlation = correlation
  ), class = "summary.fr_fit")
}

#' @rdname summary.fr_fit
#' @export
print.summary.fr_fit <- function(x, digits = max(3L, getOption("digits") - 3L),
                                 correlation = NULL, ...) {
  refuse_unknown_arguments("print()", ..., help = "summary.fr_fit")
  print_header(x)
  if (!is.null(x$residuals)) {
    cat("\nScaled residuals: \n")
    quantiles <- stats::quantile(x$residuals, names = FALSE)
    names(quantiles) <- c("Min", "1Q", "Median", "3Q", "Max")
    print(zapsmall(quantiles, digits + 1L), digits = digits)
  }
  cat("\n")
  print_random_effects(x, digits)
  if (nrow(x$coefficients) == 0L) {
    cat("\nNo fixed effects\n")
  } else {
    cat("\nFixed effects:\n")
    stats::printCoefmat(x$coefficients, digits = digits, has.Pvalue = FALSE)
  }
  p <- nrow(x$coefficients)
  if (is.null(correlation)) correlation <- x$correlation  # as summary(fit, correlation =)
  if (is.null(correlation)) correlation <- p <= 12L
  if (p > 1L && isTRUE(correlation)) {
    cat("\nCorrelation of Fixed Effects:\n")
    print(correlation_table(x$vcov), quote = FALSE, right = TRUE)
  } else if (p > 12L) {
    cat(sprintf("\nCorrelation matrix not shown by default, as p = %d > 12.\n", p),
        "Use print(summary(fit), correlation = TRUE) or vcov(fit, correlation = TRUE)\n", sep = "")
  }
  print_boundary(x)
  invisible(x)
}

# The lower triangle of the correlations, columns abbreviated as lme4 abbreviates them.
correlation_table <- function(v) {
  corr <- stats::cov2cor(v)
  p <- nrow(corr)
  table <- format(round(corr, 3L), nsmall = 3L)
  table[upper.tri(table, diag = TRUE)] <- ""
  table <- table[-1L, -p, drop = FALSE]
  dimnames(table) <- list(rownames(corr)[-1L], abbreviate(colnames(corr)[-p], minlength = 6L))
  table
}

print_header <- function(x) {
  cat(switch(x$method,
    fr = , fr_shared = "Linear mixed model fit by Matloff's Full Randomness moments ['fr_fit']\n",
    efficient = "Linear mixed model fit by the efficient moment equations (MINQUE) ['fr_fit']\n",
    reml = "Linear mixed model fit by REML ['fr_fit']\n",
    ml = "Linear mixed model fit by maximum likelihood ['fr_fit']\n",
    "Linear mixed model fit by the method of moments ['fr_fit']\n"
  ))
  cat("Formula:", deparse1(x$formula), "\n")
  if (!is.null(x$data_name)) cat("   Data:", x$data_name, "\n")
  print_likelihood(x)
  if (!is.null(x$chunks)) {
    chunks <- x$chunks
    cat(sprintf("Chunks: %d (%s%s, backend \"%s\")\n", chunks$chunks,
                if (chunks$combine == "exact") "statistics merged exactly"
                else "estimates averaged, Software Alchemy",
                if (identical(chunks$chunk_by, ".order")) ", consecutive blocks of the row order"
                else if (!is.null(chunks$chunk_by)) sprintf(", by levels of %s", chunks$chunk_by) else "",
                chunks$backend))
  }
  if (isTRUE(x$fr$crossed)) {
    print_fr_crossed_counts(x$fr)
  } else if (!is.null(x$fr)) {
    sizes <- x$fr$group_sizes
    cat(sprintf("Group sizes: %d groups, mean (nu1) %s, variance (nu2) %s\n",
                as.integer(sizes[["groups"]]), format(sizes[["mean"]], digits = 5),
                format(sizes[["variance"]], digits = 5)))
  }
  if (isTRUE(x$fr$centred)) cat("Equations of the least-squares residuals (fr_centred = TRUE)\n")
}

# lmer's line: the REML criterion, or AIC, BIC, logLik and deviance of an ML fit.
print_likelihood <- function(x) {
  if (!x$method %in% c("reml", "ml")) return(invisible())
  ll <- x$loglik
  if (is.null(ll)) {
    cat("(log-likelihood not computed: ", x$likelihood$reason, ")\n", sep = "")
  } else if (x$method == "reml") {
    cat(sprintf("REML criterion at convergence: %s\n", format(-2 * as.numeric(ll), nsmall = 1, digits = 7)))
  } else {
    values <- c(AIC = stats::AIC(ll), BIC = stats::BIC(ll), logLik = as.numeric(ll),
                deviance = -2 * as.numeric(ll), df.resid = attr(ll, "nobs") - attr(ll, "df"))
    print(round(values, 1))
  }
}

print_random_effects <- function(x, digits) {
  cat("Random effects:\n")
  table <- varcorr_table(as.data.frame(x$varcor), digits, c("Variance", "Std.Dev."))
  print(table, quote = FALSE, right = FALSE, row.names = FALSE)
  cat(sprintf("Number of obs: %d, groups:  %s\n", x$nobs,
              paste(names(x$ngrps), x$ngrps, sep = ", ", collapse = "; ")))
  if (x$n_dropped > 0L) {
    cat(sprintf("  (%d %s deleted due to missingness)\n", x$n_dropped,
                ngettext(x$n_dropped, "observation", "observations")))
  }
}

print_boundary <- function(x) {
  if (any(x$boundary)) {
    cat(boundary_message(names(x$boundary)[x$boundary]), "\n", sep = "")
  }
}
