#' Variance components of a moment fit
#'
#' `VarCorr()` (the generic of the nlme package, which lme4 also uses) returns the
#' estimated variances of the random intercepts and of the residual, in lme4's layout:
#' a list with one 1 x 1 covariance matrix per term, carrying attributes `stddev` and
#' `correlation`, and the residual standard deviation in attribute `sc`.
#' `as.data.frame()` gives lme4's long form with columns `grp`, `var1`, `var2`,
#' `vcov` and `sdcor`.
#'
#' @param x an `fr_fit` object (for `VarCorr`) or the result of `VarCorr()`.
#' @param sigma unused; present for compatibility with the generic.
#' @param digits number of significant digits to print.
#' @param comp which columns to print: `"Variance"`, `"Std.Dev."` or both.
#' @param row.names,optional unused; for compatibility with [as.data.frame()].
#' @param ... not used; any argument here is an error rather than silently ignored.
#' @return `VarCorr()`: an object of class `VarCorr.fr_fit`; `as.data.frame()`: a data frame.
#' @examples
#' if (requireNamespace("lme4", quietly = TRUE)) {
#'   fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
#'   VarCorr(fit)
#'   as.data.frame(VarCorr(fit))
#' }
#' @name VarCorr.fr_fit
#' @export
VarCorr.fr_fit <- function(x, sigma = 1, ...) {
  refuse_unknown_arguments("VarCorr()", ..., help = "VarCorr.fr_fit")
  k <- length(x$flist)
  out <- lapply(seq_len(k), function(i) {
    v <- matrix(x$theta[[i]], 1L, 1L, dimnames = list("(Intercept)", "(Intercept)"))
    attr(v, "stddev") <- c("(Intercept)" = sqrt(x$theta[[i]]))
    attr(v, "correlation") <- matrix(1, 1L, 1L, dimnames = dimnames(v))
    v
  })
  names(out) <- names(x$flist)
  attr(out, "sc") <- sqrt(x$theta[["Residual"]])
  attr(out, "useSc") <- TRUE
  class(out) <- "VarCorr.fr_fit"
  out
}

#' @rdname VarCorr.fr_fit
#' @export
as.data.frame.VarCorr.fr_fit <- function(x, row.names = NULL, optional = FALSE, ...) {
  refuse_unknown_arguments("as.data.frame()", ..., help = "VarCorr.fr_fit")
  variances <- c(vapply(x, function(v) v[1L, 1L], 1), attr(x, "sc")^2)
  data.frame(
    grp = c(names(x), "Residual"),
    var1 = c(rep("(Intercept)", length(x)), NA_character_),
    var2 = NA_character_,
    vcov = unname(variances),
    sdcor = unname(sqrt(variances)),
    stringsAsFactors = FALSE
  )
}

#' @rdname VarCorr.fr_fit
#' @export
print.VarCorr.fr_fit <- function(x, digits = max(3L, getOption("digits") - 2L),
                                 comp = "Std.Dev.", ...) {
  refuse_unknown_arguments("print()", ..., help = "VarCorr.fr_fit")
  comp <- match.arg(comp, c("Variance", "Std.Dev."), several.ok = TRUE)
  table <- varcorr_table(as.data.frame(x), digits, comp)
  print(table, quote = FALSE, right = FALSE, row.names = FALSE)
  invisible(x)
}

# lme4's printed layout: Groups, Name, then the chosen columns.
varcorr_table <- function(df, digits, comp) {
  out <- data.frame(
    Groups = df$grp,
    Name = ifelse(is.na(df$var1), "", df$var1),
    check.names = FALSE, stringsAsFactors = FALSE
  )
  if ("Variance" %in% comp) out$Variance <- format(signif(df$vcov, digits), digits = digits)
  if ("Std.Dev." %in% comp) out$Std.Dev. <- format(signif(df$sdcor, digits), digits = digits)
  out
}

#' @importFrom nlme VarCorr
#' @export
nlme::VarCorr
