#' Plots of a moment fit: residuals, its random effects, and against another fit
#'
#' `type = "residuals"` (the default) is the diagnostic plot lme4's `plot()` draws by
#' default: the residuals of the fit (observed minus `X b + Z u`) against the fitted
#' values, with a reference line at 0. With many observations the points are drawn small
#' and translucent.
#'
#' `type = "qq"` draws a normal quantile plot of each random term's predicted random
#' effects (BLUPs), one panel per term. `type = "compare"` draws each term's predicted
#' random effects against those of `other`, another fit of the same data (an lmer fit, or
#' another `fr_fit`), level by level, with the identity line: the picture that shows
#' whether two fits agree.
#'
#' @param x an `fr_fit` object.
#' @param type `"residuals"`, `"qq"` or `"compare"`.
#' @param other for `type = "compare"`: a fit whose `ranef()` has the same terms, e.g.
#'   `lme4::lmer()` of the same model.
#' @param xlab,ylab,main axis labels and title (for `"residuals"`).
#' @param ... passed to [plot.default()] (for `"residuals"`).
#' @return `x`, invisibly.
#' @examples
#' if (requireNamespace("lme4", quietly = TRUE)) {
#'   fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
#'   plot(fit)
#'   plot(fit, type = "qq")
#'   ref <- lme4::lmer(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
#'   plot(fit, type = "compare", other = ref)
#' }
#' @export
plot.fr_fit <- function(x, type = c("residuals", "qq", "compare"), other = NULL,
                        xlab = "Fitted values", ylab = "Residuals", main = NULL, ...) {
  type <- match.arg(type)
  if (type != "residuals") {
    refuse_unknown_arguments("plot()", ..., help = "plot.fr_fit")
    if (type == "qq") plot_ranef_qq(x) else plot_ranef_compare(x, other)
    return(invisible(x))
  }
  require_data_of_fit(x, "residuals")
  many <- length(x$residuals) > 5000L
  graphics::plot.default(
    x$fitted.values, x$residuals, xlab = xlab, ylab = ylab, main = main,
    pch = if (many) "." else 1,
    col = if (many) grDevices::adjustcolor("black", alpha.f = 0.3) else "black",
    ...
  )
  graphics::abline(h = 0, lty = 2, col = "grey40")
  invisible(x)
}

# One panel per random term, in the grid whose panels are closest to square on the
# current device (three panels side by side on a wide figure, stacked on a tall one);
# the old settings come back.
with_panels <- function(n, draw) {
  old <- graphics::par(mfrow = panel_grid(n, aspect = device_aspect()))
  on.exit(graphics::par(old))
  for (i in seq_len(n)) draw(i)
}

# Rows and columns for n panels on a device `aspect` (width / height) times as wide as
# high: the grid whose panels' own aspect is closest to 1, the fewer empty cells on ties.
panel_grid <- function(n, aspect = 1) {
  rows <- seq_len(n)
  cols <- ceiling(n / rows)
  keep <- !duplicated(cols)
  rows <- rows[keep]
  cols <- cols[keep]
  badness <- abs(log(aspect * rows / cols)) + 1e-9 * (rows * cols - n)
  best <- which.min(badness)
  as.integer(c(rows[[best]], cols[[best]]))
}

device_aspect <- function() {
  size <- grDevices::dev.size()
  if (length(size) == 2L && all(is.finite(size)) && all(size > 0)) size[[1]] / size[[2]] else 1
}

plot_ranef_qq <- function(x) {
  u <- x$ranef_values
  with_panels(length(u), function(i) {
    stats::qqnorm(u[[i]], main = names(u)[[i]], ylab = "Predicted random intercepts")
    stats::qqline(u[[i]], col = "grey40", lty = 2)
  })
}

plot_ranef_compare <- function(x, other) {
  if (is.null(other)) {
    stop("plot(type = \"compare\") needs `other`, a fit of the same model to compare with",
         call. = FALSE)
  }
  theirs <- ranef(other)
  terms <- names(x$ranef_values)
  missing <- setdiff(terms, names(theirs))
  if (length(missing)) {
    stop(sprintf("`other` has no random term %s", paste(missing, collapse = ", ")), call. = FALSE)
  }
  other_name <- if (inherits(other, "merMod")) "lmer" else class(other)[[1L]]
  with_panels(length(terms), function(i) {
    mine <- x$ranef_values[[terms[[i]]]]
    ref <- theirs[[terms[[i]]]]
    ref <- stats::setNames(ref[[1L]], rownames(ref))[names(mine)]
    graphics::plot.default(ref, mine, main = terms[[i]], xlab = paste("BLUPs of", other_name),
                           ylab = "BLUPs of fr_fit",
                           pch = if (length(mine) > 5000L) "." else 1)
    graphics::abline(0, 1, col = "grey40", lty = 2)
  })
}

#' Plot the bootstrap replicates
#'
#' One histogram per parameter of the replicates from [fr_bootstrap()], as
#' [confint()][confint.fr_fit] uses them (the variance components' replicates centred on
#' the estimate on the variance scale), with the estimate (solid line) and the percentile
#' interval at `level` (dashed lines) marked.
#'
#' @param x the result of [fr_bootstrap()].
#' @param level the confidence level of the interval marked.
#' @param ... not used; any argument here is an error rather than silently ignored.
#' @return `x`, invisibly.
#' @examples
#' fit <- fr_fit(distance ~ bow + (1 | archer), data = simulate_archers(seed = 1))
#' plot(fr_bootstrap(fit, nsim = 50, seed = 2))
#' @export
plot.fr_bootstrap <- function(x, level = 0.95, ...) {
  refuse_unknown_arguments("plot()", ..., help = "plot.fr_bootstrap")
  estimate <- attr(x, "estimate")
  raw <- attr(x, "raw")
  values <- as.matrix(x)
  if (!is.null(attr(x, "interval_values"))) {
    # A random-slope fit's replicates, as its confint() uses them.
    values <- attr(x, "interval_values")
  } else {
    n_sd <- ncol(raw)
    # As confint's percentile intervals: variances centred on the estimate, then sd.
    centred <- sweep(raw, 2L, colMeans(raw) - estimate[seq_len(n_sd)]^2)
    values[, seq_len(n_sd)] <- sqrt(pmax(centred, 0))
  }
  probs <- c((1 - level) / 2, (1 + level) / 2)
  with_panels(ncol(values), function(j) {
    v <- values[, j]
    graphics::hist(v, breaks = "FD", main = colnames(values)[[j]], xlab = "replicates",
                   col = "grey85", border = "grey60")
    graphics::abline(v = estimate[[j]], lwd = 2)
    graphics::abline(v = stats::quantile(v, probs, names = FALSE, na.rm = TRUE), lty = 2)
  })
  invisible(x)
}
