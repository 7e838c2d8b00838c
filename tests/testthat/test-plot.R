# plot(): residuals against fitted values, base graphics.

# The graphics calls recorded on the current device: a list of
# list(name = "C_plotXY", args = list(...)), from its display list.
recorded_calls <- function() {
  lapply(grDevices::recordPlot()[[1]], function(entry) {
    args <- as.list(entry[[2]])
    routine <- args[[1]]
    list(name = if (is.list(routine)) routine$name else NA_character_, args = args[-1])
  })
}

# Opens a null device that records its display list, closed when the calling test ends.
local_recording_device <- function(envir = parent.frame()) {
  grDevices::pdf(NULL)
  do.call(on.exit, list(quote(grDevices::dev.off()), add = TRUE), envir = envir)
  grDevices::dev.control(displaylist = "enable")
}

recorded_call <- function(name) {
  calls <- recorded_calls()
  Filter(function(call) identical(call$name, name), calls)
}

test_that("plot draws residuals against fitted values and returns the fit invisibly", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  local_recording_device()
  expect_length(grDevices::recordPlot()[[1]], 0L)
  res <- withVisible(plot(fit))
  expect_false(res$visible)
  expect_identical(res$value, fit)
  # The points drawn are (fitted, residual) pairs, with open circles.
  points <- recorded_call("C_plotXY")
  expect_length(points, 1L)
  xy <- points[[1]]$args[[1]]
  expect_equal(unname(xy$x), unname(fitted(fit)))
  expect_equal(unname(xy$y), unname(residuals(fit)))
  expect_identical(points[[1]]$args[[3]], 1)
  # The dashed reference line at 0.
  line <- recorded_call("C_abline")
  expect_length(line, 1L)
  expect_identical(line[[1]]$args[[3]], 0)
  # The axes span the fitted values (x) and the residuals (y).
  usr <- graphics::par("usr")
  f <- fitted(fit)
  r <- residuals(fit)
  expect_lte(usr[1], min(f))
  expect_gte(usr[2], max(f))
  expect_lte(usr[3], min(r))
  expect_gte(usr[4], max(r))
  # ... and no more than R's default 4% extension on each side.
  expect_equal(usr[1:2], range(f) + c(-1, 1) * 0.04 * diff(range(f)), tolerance = 1e-8)
  expect_equal(usr[3:4], range(r) + c(-1, 1) * 0.04 * diff(range(r)), tolerance = 1e-8)
})

test_that("plot passes further arguments to plot.default", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  local_recording_device()
  plot(fit, xlim = c(0, 1000), ylim = c(-500, 500), xaxs = "i", yaxs = "i",
       main = "Residuals", xlab = "fitted", ylab = "resid")
  expect_equal(graphics::par("usr"), c(0, 1000, -500, 500))
})

test_that("plot draws a large fit with small translucent points", {
  set.seed(14)
  n <- 6000
  d <- data.frame(g = factor(sample(1:50, n, replace = TRUE)), x = rnorm(n))
  d$y <- d$x + rnorm(50)[d$g] + rnorm(n)
  fit <- fr_fit(y ~ x + (1 | g), data = d)
  local_recording_device()
  expect_invisible(plot(fit))
  usr <- graphics::par("usr")
  expect_lte(usr[1], min(fitted(fit)))
  expect_gte(usr[2], max(fitted(fit)))
  points <- recorded_call("C_plotXY")
  expect_length(points, 1L)
  expect_length(points[[1]]$args[[1]]$x, n)
  expect_identical(points[[1]]$args[[3]], ".")
  expect_identical(points[[1]]$args[[5]], grDevices::adjustcolor("black", alpha.f = 0.3))
})

test_that("plot(type = 'qq') draws a normal QQ plot of each term's BLUPs", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  local_recording_device()
  expect_identical(withVisible(plot(fit, type = "qq"))$value, fit)
  points <- recorded_call("C_plotXY")
  expect_length(points, 2L)
  # The y values of each panel are the term's BLUPs (sorted, as qqnorm draws them).
  expect_equal(sort(points[[1]]$args[[1]]$y), sort(ranef(fit)$plate[[1]]))
  expect_equal(sort(points[[2]]$args[[1]]$y), sort(ranef(fit)$sample[[1]]))
  expect_error(plot(fit, type = "qq", col = "red"), "does not take `col`")
})

test_that("plot(type = 'compare') draws the BLUPs against another fit's, level by level", {
  skip_if_not_installed("lme4")
  fit <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  ref <- lme4::lmer(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  local_recording_device()
  plot(fit, type = "compare", other = ref)
  points <- recorded_call("C_plotXY")
  expect_length(points, 2L)
  mine <- ranef(fit)$sample[[1]]
  theirs <- lme4::ranef(ref)$sample
  expect_equal(points[[2]]$args[[1]]$y, mine)
  expect_equal(points[[2]]$args[[1]]$x, theirs[rownames(ranef(fit)$sample), 1])
  expect_error(plot(fit, type = "compare"), "needs `other`")
  other <- fr_fit(diameter ~ 1 + (1 | plate), data = lme4::Penicillin)
  expect_error(plot(fit, type = "compare", other = other), "no random term sample")
})

test_that("plot() of bootstrap replicates marks the estimate and confint's interval", {
  fit <- fr_fit(distance ~ bow + (1 | archer), data = simulate_archers(seed = 1))
  boot <- fr_bootstrap(fit, nsim = 40, seed = 2)
  local_recording_device()
  expect_identical(withVisible(plot(boot))$value, boot)
  lines <- recorded_call("C_abline")
  # Per parameter: the estimate, then the two percentile limits.
  ci <- suppressWarnings(confint(fit, boot = boot))  # few replicates: warned, still exact
  expect_length(lines, 2L * ncol(boot))
  # abline's recorded arguments are a, b, h, v, ...: the lines are vertical.
  limits <- unlist(lapply(lines[seq(2, length(lines), 2)], function(l) l$args[[4]]))
  expect_equal(unname(limits), as.vector(t(ci)), tolerance = 1e-12)
  estimates <- unlist(lapply(lines[seq(1, length(lines), 2)], function(l) l$args[[4]]))
  expect_equal(unname(estimates), unname(attr(boot, "estimate")))
})

test_that("panels are laid out closest to square on the device: side by side when it is wide", {
  expect_identical(fullrandom:::panel_grid(3, aspect = 7 / 2.8), c(1L, 3L))
  expect_identical(fullrandom:::panel_grid(3, aspect = 1), c(2L, 2L))
  expect_identical(fullrandom:::panel_grid(3, aspect = 0.4), c(3L, 1L))
  expect_identical(fullrandom:::panel_grid(4, aspect = 7 / 4.2), c(2L, 2L))
  expect_identical(fullrandom:::panel_grid(1, aspect = 3), c(1L, 1L))
  # On a wide device, three panels side by side; the old layout comes back afterwards.
  grDevices::pdf(NULL, width = 7, height = 2.8)
  on.exit(grDevices::dev.off())
  seen <- NULL
  fullrandom:::with_panels(3, function(i) {
    seen <<- graphics::par("mfrow")
    graphics::plot.new()
  })
  expect_identical(seen, c(1L, 3L))
  expect_identical(graphics::par("mfrow"), c(1L, 1L))
})
