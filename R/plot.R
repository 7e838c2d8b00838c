#' Residuals against fitted values
#'
#' The diagnostic plot lme4's `plot()` draws by default: the residuals of the fit
#' (observed minus `X b + Z u`) against the fitted values, with a reference line at 0.
#' With many observations the points are drawn small and translucent.
#'
#' @param x an `fr_fit` object.
#' @param xlab,ylab,main axis labels and title.
#' @param ... passed to [plot.default()].
#' @return `x`, invisibly.
#' @examples
#' if (requireNamespace("lme4", quietly = TRUE)) {
#'   plot(fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy))
#' }
#' @export
plot.fr_fit <- function(x, xlab = "Fitted values", ylab = "Residuals", main = NULL, ...) {
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
