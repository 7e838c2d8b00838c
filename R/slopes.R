# Random slopes: (1 + x | g), (x | g), (0 + x | g), (x || g), several terms crossed or
# nested, fitted by the unbiased moment equations of the core's `slopes` module
# (method = "moments") or one MINQUE step from them (method = "efficient", the core's
# `efficient_slopes`), then Henderson's equations with q x q blocks.
#
# A fit is an object of class "fr_slope_fit" with its own methods (print, summary,
# VarCorr, ranef, coef, fixef, vcov, sigma, fitted, residuals, predict, tidy, nobs,
# ngrps, formula, confint and fr_bootstrap, in R/slope-intervals.R); chunks of a data
# frame are merged exactly. It deliberately does not inherit from "fr_fit": methods that
# do not handle slopes yet (anova, simulate, fr_distribution) then fail with "no
# applicable method" instead of giving wrong numbers.

# The left-hand sides of the terms a slope bar expands into: `(lhs | g)` keeps its
# left-hand side; `(lhs || g)` gives one term per column of lhs, `1` and `0 + x` ...,
# as lme4 expands it (uncorrelated: a diagonal covariance).
slope_term_sides <- function(bar, term_text) {
  lhs <- strip_parens(bar[[2L]])
  tt <- stats::terms(stats::as.formula(call("~", lhs)))
  if (length(attr(tt, "term.labels")) == 0L && attr(tt, "intercept") == 0L) {
    stop("the random-effects term ", term_text, " has no columns", call. = FALSE)
  }
  if (!is_call_to(bar, "||")) return(list(lhs))
  labels <- attr(tt, "term.labels")
  c(if (attr(tt, "intercept") == 1L) list(1),
    lapply(labels, function(label) call("+", 0, str2lang(label))))
}

# The variables named on the left of slope terms, for the model frame.
slope_variables <- function(random) {
  vars <- unique(unlist(lapply(random, function(term) all.vars(term$lhs))))
  lapply(vars, as.name)
}

has_slope_terms <- function(parsed) {
  any(vapply(parsed$random, function(term) !is.null(term$lhs), logical(1)))
}

# The design columns of one slope term on `frame`, with lme4's column names: a list of
# double vectors, NULL for the intercept. A term whose columns are plain numeric variables
# (`1 + x + z`) takes them from the frame as they are, which is what model.matrix() gives
# (without an n x q matrix and its copies); anything else (factors, interactions, calls)
# goes through model.matrix().
slope_design <- function(term, frame) {
  tt <- stats::terms(stats::as.formula(call("~", term$lhs)))
  labels <- attr(tt, "term.labels")
  plain <- all(labels %in% names(frame)) &&
    all(vapply(labels, function(v) is.numeric(frame[[v]]) && is.null(dim(frame[[v]])), logical(1)))
  if (plain) {
    columns <- c(if (attr(tt, "intercept") == 1L) list(NULL), lapply(labels, function(v) as.double(frame[[v]])))
    names <- c(if (attr(tt, "intercept") == 1L) "(Intercept)", labels)
  } else {
    z <- stats::model.matrix(tt, frame)
    storage.mode(z) <- "double"
    names <- colnames(z)
    columns <- lapply(seq_len(ncol(z)), function(j) if (names[j] == "(Intercept)") NULL else unname(z[, j]))
  }
  if (length(names) == 0L) stop("the random-effects term ", term$term, " has no columns", call. = FALSE)
  list(names = names, columns = columns)
}

fr_fit_slopes <- function(call, formula, parsed, data, frame_call, env, method, threads,
                          chunking) {
  if (!method %in% c("moments", "efficient")) {
    stop(sprintf(paste(
      "random slopes are fitted by method = \"moments\" or \"efficient\"; method = \"%s\"",
      "handles random intercepts only"),
      method), call. = FALSE)
  }
  # MINQUE steps from the moment estimates: 0 for the moments, 1 for the efficient estimator.
  steps <- if (method == "efficient") 1L else 0L
  chunked <- !is.null(chunking$chunks) || !is.null(chunking$chunk_by) || chunking$backend == "future"
  if ((chunked || !is.data.frame(data) && !is.null(data)) && chunking$combine != "exact") {
    stop("random slopes in chunks are combined exactly (combine = \"exact\"); ",
         "Software Alchemy averaging is not supported yet for them", call. = FALSE)
  }
  labels <- vapply(parsed$random, `[[`, "", "label")
  if (!is.data.frame(data) && !is.null(data)) {
    # A list of data frames or files: statistics of every source merged exactly; no
    # frame is kept, so the fit has no fitted values or residuals.
    sources <- fit_slope_sources(parsed, data, frame_call, env, chunking, threads, steps)
    md <- sources$md
    res <- sources$res
    design_names <- sources$design_names
  } else {
    md <- fr_model_data(parsed, frame_call, data, env, threads)
    md$n <- length(md$y)
    # Each term's columns as vectors (NULL for the intercept); the model matrices are not
    # kept, only their column names.
    designs <- lapply(parsed$random, slope_design, frame = md$frame)
    design_names <- lapply(designs, `[[`, "names")
    # The factors themselves are the codes (the core reads a factor's integer codes), so
    # no full-length copy is made of them.
    terms <- lapply(seq_along(parsed$random), function(k) {
      f <- md$flist[[labels[k]]]
      list(label = labels[k], codes = f, n_levels = nlevels(f), z = designs[[k]]$columns)
    })
    rm(designs)
    res <- if (chunked) {
      fit_slope_chunks(md, terms, parsed, chunking, threads, steps)
    } else {
      fr_slope_fit(md$y, md$fixed$columns, md$fixed$names, terms, threads, steps)
    }
  }
  p <- length(md$fixed$names)
  coef <- stats::setNames(res$coef, md$fixed$names)
  kept <- which(res$kept)
  report_dropped_columns(md$fixed$names, kept)
  vcov <- matrix(res$vcov, p, p, dimnames = list(md$fixed$names, md$fixed$names))
  groups <- make.unique(labels)
  sigma_of <- function(theta) slope_sigma_list(theta, res, design_names, groups)
  ranef <- lapply(seq_along(parsed$random), function(k) {
    cn <- design_names[[k]]
    f <- md$flist[[labels[k]]]
    u <- matrix(res$ranef[[k]], ncol = length(cn), byrow = TRUE,
                dimnames = list(levels(f), cn))
    as.data.frame(u, check.names = FALSE)
  })
  names(ranef) <- groups
  # Computed by the core in parallel, straight into the two vectors the fit keeps.
  fitted <- if (!is.null(md$frame)) {
    fr_slope_fitted(md$y, md$fixed$columns, md$fixed$names, terms, as.double(res$coef), res$ranef, threads)
  }
  theta_names <- ifelse(res$term < 0L, "Residual", paste0(
    groups[pmax(res$term, 0L) + 1L], ".",
    vapply(seq_along(res$term), function(i) {
      if (res$term[i] < 0L) return("")
      cn <- design_names[[res$term[i] + 1L]]
      if (res$row[i] == res$col[i]) cn[res$row[i] + 1L]
      else paste(cn[res$row[i] + 1L], cn[res$col[i] + 1L], sep = ".")
    }, "")))
  boundary <- stats::setNames(res$boundary, groups)
  if (any(boundary)) {
    message("boundary (singular) fit: the covariance matrix of ",
            paste(groups[boundary], collapse = ", "),
            " is estimated singular (projected onto the positive semidefinite matrices); ",
            "see ?fr_fit, or try uncorrelated terms (x || g)")
  }
  efficient <- if (!is.null(res$efficient)) slope_efficient_info(res$efficient, theta_names, groups, sigma_of)
  structure(list(
    method = method, coefficients = coef, vcov = vcov,
    theta = stats::setNames(res$estimate, theta_names),
    theta_raw = stats::setNames(res$raw, theta_names),
    # Where each entry of theta sits: term (0-based, -1 the residual), row and column.
    theta_layout = list(term = res$term, row = res$row, col = res$col),
    Sigma = sigma_of(res$estimate), Sigma_raw = sigma_of(res$raw),
    sigma = sqrt(res$estimate[length(res$estimate)]),
    boundary = boundary, ranef = ranef,
    equations = list(lhs = matrix(res$lhs, length(res$q), byrow = TRUE), q = res$q),
    efficient = efficient,
    fitted.values = if (!is.null(fitted)) name_by_rows(fitted$fitted, md$frame),
    residuals = if (!is.null(fitted)) name_by_rows(fitted$residuals, md$frame),
    call = call, formula = formula, random = parsed$random, groups = groups, threads = threads,
    flist = md$flist, frame = md$frame, terms = md$terms, fixed_names = md$fixed$names,
    contrasts = md$fixed$contrasts,
    xlevels = if (!is.null(md$frame)) stats::.getXlevels(md$terms, md$frame) else md$xlevels,
    nobs = md$n, n_dropped = md$n_dropped, na.action = md$na_action,
    chunks = if (!is.data.frame(data) && !is.null(data)) list(chunks = length(data), combine = "exact", backend = chunking$backend),
    data_name = if (is.null(call$data)) NULL else deparse1(call$data)
  ), class = "fr_slope_fit")
}

# The covariance matrix of every term from the core's parameter vector `theta`, whose
# entry i is row res$row[i], column res$col[i] (0-based) of term res$term[i] (-1: the
# residual), as the core's fit `res` lays them out.
slope_sigma_list <- function(theta, res, design_names, groups) {
  out <- lapply(seq_along(design_names), function(k) {
    cn <- design_names[[k]]
    q <- length(cn)
    s <- matrix(0, q, q, dimnames = list(cn, cn))
    at <- which(res$term == k - 1L)
    for (i in at) {
      s[res$row[i] + 1L, res$col[i] + 1L] <- theta[i]
      s[res$col[i] + 1L, res$row[i] + 1L] <- theta[i]
    }
    s
  })
  stats::setNames(out, groups)
}

# What an efficient slope fit keeps of its moment fit and its probes (as fit$efficient of
# an intercept-only efficient fit): the moment equations and estimates, the probes per
# term (0: exact traces), the probes' sd and the sampling sd under normality per parameter.
slope_efficient_info <- function(eff, theta_names, groups, sigma_of) {
  m <- length(theta_names)
  list(
    moment_equations = list(lhs = matrix(eff$moment_lhs, m, byrow = TRUE, dimnames = list(theta_names, theta_names)),
                            q = stats::setNames(eff$moment_q, theta_names)),
    moment_theta_raw = stats::setNames(eff$moment_raw, theta_names),
    moment_theta = stats::setNames(eff$moment_estimate, theta_names),
    moment_Sigma = sigma_of(eff$moment_estimate),
    moment_boundary = stats::setNames(eff$moment_boundary, groups),
    probes = stats::setNames(eff$probes, groups),
    probe_sd = stats::setNames(eff$probe_sd, theta_names),
    model_sd = stats::setNames(eff$model_sd, theta_names),
    steps = eff$steps
  )
}

# Exact fits in chunks of the rows: each chunk's statistics (on threads here or on the
# workers of a future plan), merged; the levels are the whole frame's, so they match.
fit_slope_chunks <- function(md, terms, parsed, chunking, threads, steps = 0L) {
  n_chunks <- check_whole_number(if (is.null(chunking$chunks)) 1L else chunking$chunks, "chunks", at_least = 1)
  chunk_by <- check_chunk_by(chunking$chunk_by, parsed)
  chunk_of <- with_seed(chunking$seed, assign_chunks(
    length(md$y), n_chunks, if (!is.null(chunk_by) && chunk_by != ".order") md$frame[[chunk_by]], chunk_by
  ))
  rows <- rows_by_chunk(chunk_of, n_chunks)
  rm(chunk_of)
  spec <- list(x_names = md$fixed$names, threads = worker_threads(chunking$backend, threads))
  # As for intercept-only models: a future worker is sent its chunk's vectors; here a
  # chunk's vectors are made only while it is processed.
  pieces <- if (chunking$backend == "future") {
    lapply(seq_along(rows), function(i) list(index = i, data = slope_chunk_vectors(md, terms, rows[[i]])))
  } else {
    spec$md <- md
    spec$terms <- terms
    lapply(seq_along(rows), function(i) list(index = i, rows = rows[[i]]))
  }
  results <- run_chunks(pieces, slope_chunk_worker, spec, chunking$backend)
  fr_slope_merged_fit(results, threads, steps)
}

# A list of data frames or files (one chunk each): every source is read and framed on
# its worker twice, first for the levels of its grouping factors (and fixed-effect
# factors), then, with the whole data's levels, for its statistics, its codes mapped to
# the whole data's levels; the statistics are merged exactly. Returns the core's fit
# `res`, the terms' column names and the model data without a frame.
fit_slope_sources <- function(parsed, data, frame_call, env, chunking, threads, steps) {
  if (length(parsed$size_calls) > 0L) {
    stop("size() terms are not supported with random slopes fitted from lists of data frames or files",
         call. = FALSE)
  }
  sources <- chunk_sources(data, chunking$chunks, chunking$chunk_by)
  spec <- list(parsed = parsed, frame_call = frame_call, env = env, xlev = NULL, size_counts = NULL,
               threads = worker_threads(chunking$backend, threads))
  scans <- run_chunks(sources, slope_scan_worker, spec, chunking$backend)
  fixed_levels <- lapply(scans, `[[`, "fixed_levels")
  if (any(lengths(fixed_levels) > 0L)) spec$xlev <- merge_fixed_levels(fixed_levels)
  labels <- names(scans[[1L]]$levels)
  global <- lapply(stats::setNames(labels, labels), function(label) {
    global_levels(lapply(scans, function(s) s$levels[[label]]))
  })
  spec$n_levels <- vapply(global, function(g) length(g$labels), 1L)
  for (i in seq_along(sources)) sources[[i]]$maps <- lapply(global, function(g) g$maps[[i]])
  results <- run_chunks(sources, slope_source_worker, spec, chunking$backend)
  first <- results[[1L]]
  for (r in results[-1L]) {
    if (!identical(r$x_names, first$x_names) || !identical(r$design_names, first$design_names)) {
      stop(sprintf(paste(
        "the sources give different model columns (source %d: %s; source 1: %s); factor",
        "slope variables must have the same levels in every source"
      ), r$index, paste(c(r$x_names, unlist(r$design_names)), collapse = ", "),
      paste(c(first$x_names, unlist(first$design_names)), collapse = ", ")), call. = FALSE)
    }
  }
  n <- sum(vapply(results, `[[`, 1L, "n"))
  check_grouping_sizes(spec$n_levels, n, labels)
  res <- fr_slope_merged_fit(lapply(results, `[[`, "statistics"), threads, steps)
  flist <- lapply(global, function(g) structure(factor(character(), levels = g$labels), components = g$components))
  md <- list(fixed = list(names = first$x_names, contrasts = first$contrasts), terms = first$terms,
             frame = NULL, y = NULL, flist = flist, n = n, xlevels = first$xlevels, na_action = NULL,
             n_dropped = sum(vapply(results, `[[`, 1L, "n_dropped")))
  list(res = res, md = md, design_names = first$design_names)
}

slope_scan_worker <- function(piece, spec) {
  md <- chunk_model_data(piece, spec)
  list(levels = chunk_level_sets(md, spec$parsed), fixed_levels = fixed_factor_levels(md))
}

slope_source_worker <- function(piece, spec) {
  md <- chunk_model_data(piece, spec)
  designs <- lapply(spec$parsed$random, slope_design, frame = md$frame)
  terms <- lapply(seq_along(spec$parsed$random), function(k) {
    label <- spec$parsed$random[[k]]$label
    list(label = label, codes = piece$maps[[label]][as.integer(md$flist[[label]])],
         n_levels = spec$n_levels[[label]], z = designs[[k]]$columns)
  })
  list(index = piece$index, n = length(md$y), n_dropped = md$n_dropped,
       statistics = fr_slope_statistics(md$y, md$fixed$columns, md$fixed$names, terms, spec$threads),
       x_names = md$fixed$names, design_names = lapply(designs, `[[`, "names"), terms = md$terms,
       contrasts = md$fixed$contrasts, xlevels = stats::.getXlevels(md$terms, md$frame))
}

# The rows `rows` of the response, the fixed columns and the terms' codes and columns.
slope_chunk_vectors <- function(md, terms, rows) {
  list(y = md$y[rows], columns = chunk_columns(md$fixed$columns, rows), terms = lapply(terms, function(term) {
    # Plain integer codes (.subset drops the factor's levels, which a future worker
    # would otherwise be sent with every chunk).
    term$codes <- .subset(term$codes, rows)
    term$z <- lapply(term$z, function(v) if (is.null(v)) NULL else v[rows])
    term
  }))
}

slope_chunk_worker <- function(piece, spec) {
  d <- if (is.null(piece$data)) slope_chunk_vectors(spec$md, spec$terms, piece$rows) else piece$data
  fr_slope_statistics(d$y, d$columns, spec$x_names, d$terms, spec$threads)
}

#' @export
print.fr_slope_fit <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  cat(if (identical(x$method, "efficient")) {
    "Linear mixed model fit by the efficient estimator (one MINQUE step; fullrandom, random slopes)\n"
  } else {
    "Linear mixed model fit by the method of moments (fullrandom, random slopes)\n"
  })
  cat("Formula:", deparse1(x$formula), "\n")
  cat("Random effects:\n")
  print(VarCorr(x), digits = digits)
  cat(sprintf("Number of obs: %d, groups:  %s\n", x$nobs,
              paste(sprintf("%s, %d", unique(names(x$flist)),
                            vapply(x$flist[unique(names(x$flist))], nlevels, 1L)),
                    collapse = "; ")))
  cat("Fixed Effects:\n")
  print(x$coefficients, digits = digits)
  invisible(x)
}

#' @export
summary.fr_slope_fit <- function(object, ...) {
  se <- sqrt(diag(object$vcov))
  object$coef_table <- cbind(Estimate = object$coefficients, `Std. Error` = se,
                             `t value` = object$coefficients / se)
  class(object) <- c("summary.fr_slope_fit", class(object))
  object
}

#' @export
print.summary.fr_slope_fit <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  print.fr_slope_fit(x, digits = digits)
  cat("\nFixed effects:\n")
  print(x$coef_table, digits = digits)
  invisible(x)
}

#' @export
VarCorr.fr_slope_fit <- function(x, sigma = 1, ...) {
  out <- lapply(x$Sigma, function(s) {
    sd <- sqrt(diag(s))
    corr <- s / outer(sd, sd)
    corr[!is.finite(corr)] <- NaN
    diag(corr) <- 1
    structure(s, stddev = sd, correlation = corr)
  })
  structure(out, sc = x$sigma, useSc = TRUE, class = "VarCorr.fr_slope_fit")
}

#' @export
print.VarCorr.fr_slope_fit <- function(x, digits = max(3L, getOption("digits") - 2L), ...) {
  rows <- list()
  for (g in names(x)) {
    s <- x[[g]]
    sd <- attr(s, "stddev")
    corr <- attr(s, "correlation")
    q <- length(sd)
    for (i in seq_len(q)) {
      cor_text <- if (i > 1L) formatC(corr[i, seq_len(i - 1L)], digits = 2L, format = "f") else character()
      rows[[length(rows) + 1L]] <- c(if (i == 1L) g else "", names(sd)[i],
                                     format(sd[i], digits = digits),
                                     paste(cor_text, collapse = " "))
    }
  }
  rows[[length(rows) + 1L]] <- c("Residual", "", format(attr(x, "sc"), digits = digits), "")
  m <- do.call(rbind, rows)
  colnames(m) <- c("Groups", "Name", "Std.Dev.", "Corr")
  if (all(m[, 4L] == "")) m <- m[, -4L, drop = FALSE]
  rownames(m) <- rep("", nrow(m))
  print(m, quote = FALSE, ...)
  invisible(x)
}

#' @export
as.data.frame.VarCorr.fr_slope_fit <- function(x, row.names = NULL, optional = FALSE, ...) {
  pieces <- lapply(names(x), function(g) {
    s <- x[[g]]
    sd <- attr(s, "stddev")
    corr <- attr(s, "correlation")
    nm <- names(sd)
    q <- length(nm)
    lower <- which(lower.tri(s), arr.ind = TRUE)
    lower <- lower[order(lower[, "col"], lower[, "row"]), , drop = FALSE]
    data.frame(grp = g, var1 = c(nm, nm[lower[, "col"]]),
               var2 = c(rep(NA_character_, q), nm[lower[, "row"]]),
               vcov = c(diag(s), s[lower]), sdcor = c(sd, corr[lower]),
               stringsAsFactors = FALSE)
  })
  sc <- attr(x, "sc")
  out <- rbind(do.call(rbind, pieces),
        data.frame(grp = "Residual", var1 = NA_character_, var2 = NA_character_,
                   vcov = sc^2, sdcor = sc, stringsAsFactors = FALSE))
  rownames(out) <- NULL
  out
}

#' @export
ranef.fr_slope_fit <- function(object, condVar = FALSE, ...) {
  if (!isFALSE(condVar)) stop("ranef(condVar = TRUE) is not supported for random slopes", call. = FALSE)
  structure(object$ranef, class = "ranef.fr_slope_fit")
}

#' @export
print.ranef.fr_slope_fit <- function(x, ...) {
  print(unclass(x), ...)
  invisible(x)
}

#' @export
as.data.frame.ranef.fr_slope_fit <- function(x, row.names = NULL, optional = FALSE, ...) {
  do.call(rbind, lapply(names(x), function(g) {
    u <- x[[g]]
    data.frame(grpvar = g, term = rep(colnames(u), each = nrow(u)),
               grp = rep(rownames(u), ncol(u)), condval = unlist(u, use.names = FALSE),
               stringsAsFactors = FALSE)
  }))
}

#' @export
coef.fr_slope_fit <- function(object, ...) {
  b <- object$coefficients
  out <- lapply(object$ranef, function(u) {
    cf <- matrix(b, nrow(u), length(b), byrow = TRUE, dimnames = list(rownames(u), names(b)))
    cf <- as.data.frame(cf, check.names = FALSE)
    for (j in colnames(u)) {
      if (!j %in% names(cf)) cf[[j]] <- 0
      cf[[j]] <- cf[[j]] + u[[j]]
    }
    cf
  })
  structure(out, class = "coef.mer")
}

#' @export
fixef.fr_slope_fit <- function(object, ...) object$coefficients[!is.na(object$coefficients)]

#' @export
vcov.fr_slope_fit <- function(object, ...) {
  keep <- !is.na(object$coefficients)
  object$vcov[keep, keep, drop = FALSE]
}

#' @export
sigma.fr_slope_fit <- function(object, ...) object$sigma

#' @export
fitted.fr_slope_fit <- function(object, ...) object$fitted.values

#' @export
residuals.fr_slope_fit <- function(object, ...) object$residuals

#' @export
nobs.fr_slope_fit <- function(object, ...) object$nobs

#' @export
formula.fr_slope_fit <- function(x, ...) x$formula

#' @export
ngrps.fr_slope_fit <- function(object, ...) vapply(object$flist, nlevels, 1L)

#' @export
predict.fr_slope_fit <- function(object, newdata = NULL, re.form = NULL,
                                 allow.new.levels = FALSE, ...) {
  include_random <- !(identical(re.form, NA) || (inherits(re.form, "formula") &&
                                                  identical(re.form[[length(re.form)]], 0)))
  if (!is.null(re.form) && include_random) {
    stop("re.form must be NULL (every random term) or NA / ~0 (none) for random-slope fits",
         call. = FALSE)
  }
  if (is.null(newdata)) {
    if (is.null(object$frame)) {
      stop("a fit from a list of data frames or from files keeps no data: give `newdata`", call. = FALSE)
    }
    if (include_random) return(object$fitted.values)
    newdata <- object$frame
  }
  keep <- !is.na(object$coefficients)
  tt <- stats::delete.response(object$terms)
  mf <- stats::model.frame(tt, newdata, na.action = stats::na.pass, xlev = object$xlevels)
  X <- stats::model.matrix(tt, mf, contrasts.arg = object$contrasts)
  out <- drop(X[, names(object$coefficients)[keep], drop = FALSE] %*% object$coefficients[keep])
  if (!include_random) return(stats::setNames(out, rownames(newdata)))
  for (k in seq_along(object$random)) {
    term <- object$random[[k]]
    g <- eval(Reduce(function(a, b) call("interaction", a, b, drop = TRUE, sep = ":"),
                     term$factors), newdata, environment(object$formula))
    g <- as.character(g)
    u <- as.matrix(object$ranef[[k]])
    codes <- match(g, rownames(u))
    if (anyNA(codes[!is.na(g)]) && !isTRUE(allow.new.levels)) {
      stop(sprintf("new levels of '%s' in newdata (e.g. '%s'); use allow.new.levels = TRUE",
                   term$label, g[!is.na(g) & is.na(codes)][1L]), call. = FALSE)
    }
    z <- slope_design(term, newdata)$columns
    uk <- u[codes, , drop = FALSE]
    uk[is.na(uk)] <- 0
    for (j in seq_along(z)) out <- out + if (is.null(z[[j]])) uk[, j] else z[[j]] * uk[, j]
  }
  stats::setNames(out, rownames(newdata))
}

#' @exportS3Method generics::tidy
tidy.fr_slope_fit <- function(x, effects = c("ran_pars", "fixed"), ...) {
  effects <- match.arg(effects, c("ran_pars", "fixed", "ran_vals"), several.ok = TRUE)
  pieces <- list()
  if ("fixed" %in% effects) {
    b <- fixef(x)
    se <- sqrt(diag(vcov(x)))
    pieces$fixed <- data.frame(effect = "fixed", group = NA_character_, term = names(b),
                               estimate = unname(b), std.error = unname(se),
                               statistic = unname(b / se), stringsAsFactors = FALSE)
  }
  if ("ran_pars" %in% effects) {
    vc <- as.data.frame(VarCorr(x))
    term <- ifelse(is.na(vc$var1), "sd__Observation",
                   ifelse(is.na(vc$var2), paste0("sd__", vc$var1),
                          paste0("cor__", vc$var1, ".", vc$var2)))
    pieces$ran_pars <- data.frame(effect = "ran_pars", group = vc$grp, term = term,
                                  estimate = vc$sdcor, std.error = NA_real_,
                                  statistic = NA_real_, stringsAsFactors = FALSE)
  }
  if ("ran_vals" %in% effects) {
    re <- as.data.frame(ranef(x))
    pieces$ran_vals <- data.frame(effect = "ran_vals", group = re$grpvar, level = re$grp,
                                  term = re$term, estimate = re$condval,
                                  stringsAsFactors = FALSE)
  }
  out <- do.call(rbind, lapply(pieces, function(p) {
    if (!"level" %in% names(p)) p$level <- NA_character_
    p
  }))
  rownames(out) <- NULL
  out
}

# The lower Cholesky factor of a positive semidefinite matrix, taken in column order; a
# column that depends linearly on the earlier ones gets a zero pivot (and column), as a
# singular covariance has in lme4's theta.
psd_cholesky <- function(s) {
  q <- nrow(s)
  l <- matrix(0, q, q)
  scale <- max(abs(diag(s)), .Machine$double.xmin)
  for (j in seq_len(q)) {
    before <- seq_len(j - 1L)
    d <- s[j, j] - sum(l[j, before]^2)
    if (d > 1e-12 * scale) {
      l[j, j] <- sqrt(d)
      for (i in seq_len(q - j) + j) l[i, j] <- (s[i, j] - sum(l[i, before] * l[j, before])) / l[j, j]
    }
  }
  l
}

#' @rdname getME.fr_fit
#' @details For a fit with random slopes ([fr_fit()] with `(x | g)` terms), `"theta"` is
#'   lme4's: per term, the lower triangle (by columns) of the Cholesky factor of
#'   `Sigma_k / sigma^2`, named as lme4 names it (`"Subject.(Intercept)"`,
#'   `"Subject.Days.(Intercept)"`, `"Subject.Days"`), and `"lower"` is 0 on the diagonal
#'   and `-Inf` below it, so `isSingular()` is `TRUE` for a fit whose covariance was
#'   projected onto the boundary (a zero pivot).
#' @export
getME.fr_slope_fit <- function(object, name, ...) {
  refuse_unknown_arguments("getME()", ..., help = "getME.fr_fit")
  parts <- c("theta", "lower", "beta", "fixef", "sigma", "flist", "cnms", "n", "p", "n_rtrms")
  if (missing(name) || !is.character(name) || length(name) == 0L || anyNA(name)) {
    stop("`name` must name parts of the fit: ", paste(parts, collapse = ", "), call. = FALSE)
  }
  if (length(name) > 1L) {
    return(sapply(name, function(one) getME.fr_slope_fit(object, one), simplify = FALSE))
  }
  triangle <- function(k) {
    cn <- colnames(object$Sigma[[k]])
    at <- which(lower.tri(object$Sigma[[k]], diag = TRUE), arr.ind = TRUE)
    at <- at[order(at[, "col"], at[, "row"]), , drop = FALSE]
    list(at = at, names = paste0(object$groups[k], ".", ifelse(at[, "row"] == at[, "col"], cn[at[, "row"]],
                                                                paste(cn[at[, "row"]], cn[at[, "col"]], sep = "."))))
  }
  switch(name,
    theta = unlist(lapply(seq_along(object$Sigma), function(k) {
      l <- psd_cholesky(object$Sigma[[k]] / object$sigma^2)
      tri <- triangle(k)
      stats::setNames(l[tri$at], tri$names)
    })),
    lower = unlist(lapply(seq_along(object$Sigma), function(k) {
      tri <- triangle(k)
      stats::setNames(ifelse(tri$at[, "row"] == tri$at[, "col"], 0, -Inf), tri$names)
    })),
    beta = unname(object$coefficients),
    fixef = object$coefficients,
    sigma = object$sigma,
    flist = object$flist,
    cnms = stats::setNames(lapply(object$Sigma, colnames), object$groups),
    n = object$nobs,
    p = length(object$coefficients),
    n_rtrms = length(object$Sigma),
    devcomp = , devfun = , REML = , is_REML = , L = , Lambda = , Lambdat = , Lind = ,
    RX = , RZX = , ALL = refuse_getme_part(name, parts, likelihood = TRUE),
    refuse_getme_part(name, parts, likelihood = FALSE)
  )
}
