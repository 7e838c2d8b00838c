# tidy() for broom users, in broom.mixed's layout. The method is registered for
# generics::tidy when generics is loaded, so neither generics nor broom is a dependency.

#' Tidy a moment fit
#'
#' One row per estimate, with broom.mixed's columns for lme4 fits: `effect` (`"fixed"`,
#' `"ran_pars"` or `"ran_vals"`), `group` (the random term, `"Residual"` for the residual,
#' `NA` for fixed effects), `term` (`sd__(Intercept)`, `sd__Observation`, or the
#' fixed-effect name), `estimate`, `std.error` and `statistic` (the t value). Random-effect
#' parameters have no standard errors here (see `confint()`); the
#' predicted random effects (`effects = "ran_vals"`) come with a `level` column and, as
#' `std.error`, their conditional sds (`ranef(condVar = TRUE)`; `NA` for fits that do not
#' keep their data). Call it as `broom::tidy(fit)` or `generics::tidy(fit)`.
#'
#' @param x an `fr_fit` object.
#' @param effects any of `"fixed"`, `"ran_pars"` (the variance components) and
#'   `"ran_vals"` (the predicted random effects).
#' @param scales `NULL` or `"sdcor"` for standard deviations (terms `sd__...`), `"vcov"`
#'   for variances (terms `var__...`).
#' @param conf.int if `TRUE`, add Wald intervals `conf.low`, `conf.high` for the fixed
#'   effects (normal quantiles, GLS standard errors).
#' @param conf.level the confidence level.
#' @param ... not used; any argument here is an error rather than silently ignored.
#' @return a data frame.
#' @examples
#' if (requireNamespace("lme4", quietly = TRUE) && requireNamespace("generics", quietly = TRUE)) {
#'   fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
#'   generics::tidy(fit)
#'   generics::tidy(fit, effects = "fixed", conf.int = TRUE)
#' }
#' @exportS3Method generics::tidy
tidy.fr_fit <- function(x, effects = c("ran_pars", "fixed"), scales = NULL,
                        conf.int = FALSE, conf.level = 0.95, ...) {
  refuse_unknown_arguments("tidy()", ..., help = "tidy.fr_fit")
  effects <- match.arg(effects, c("ran_pars", "fixed", "ran_vals"), several.ok = TRUE)
  scale <- if (is.null(scales)) "sdcor" else match.arg(scales, c("sdcor", "vcov"))
  pieces <- list()
  if ("fixed" %in% effects) {
    s <- summary(x)$coefficients
    fixed <- data.frame(effect = rep("fixed", nrow(s)), group = rep(NA_character_, nrow(s)),
                        term = as.character(rownames(s)),
                        estimate = unname(s[, 1L]), std.error = unname(s[, 2L]),
                        statistic = unname(s[, 3L]), stringsAsFactors = FALSE)
    if (isTRUE(conf.int)) {
      z <- stats::qnorm(1 - (1 - conf.level) / 2)
      fixed$conf.low <- fixed$estimate - z * fixed$std.error
      fixed$conf.high <- fixed$estimate + z * fixed$std.error
    }
    pieces$fixed <- fixed
  }
  if ("ran_pars" %in% effects) {
    vc <- as.data.frame(VarCorr(x))
    prefix <- if (scale == "sdcor") "sd__" else "var__"
    pieces$ran_pars <- data.frame(
      effect = "ran_pars", group = vc$grp,
      term = paste0(prefix, ifelse(is.na(vc$var1), "Observation", vc$var1)),
      estimate = if (scale == "sdcor") vc$sdcor else vc$vcov,
      std.error = NA_real_, statistic = NA_real_, stringsAsFactors = FALSE
    )
  }
  if ("ran_vals" %in% effects) {
    # The conditional sds need the fit's data; fits without them get NA.
    re <- as.data.frame(ranef(x, condVar = !is.null(x$frame)))
    pieces$ran_vals <- data.frame(
      effect = "ran_vals", group = re$grpvar, level = as.character(re$grp),
      term = re$term, estimate = re$condval,
      std.error = if (is.null(re$condsd)) NA_real_ else re$condsd,
      stringsAsFactors = FALSE
    )
  }
  columns <- c("effect", "group", if ("ran_vals" %in% effects) "level", "term", "estimate",
               "std.error", "statistic", if (isTRUE(conf.int) && "fixed" %in% effects) c("conf.low", "conf.high"))
  columns <- intersect(columns, unique(unlist(lapply(pieces, names))))
  out <- do.call(rbind, lapply(pieces, function(p) {
    p[setdiff(columns, names(p))] <- NA
    p[columns]
  }))
  rownames(out) <- NULL
  out
}
