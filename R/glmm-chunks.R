# Generalized linear mixed models over chunks of rows (combine = "exact" and "average",
# threads and the future backend), and the progress reports of long GLMM fits.

#' @section GLMMs in chunks:
#' With `family = binomial` or `poisson`, `chunks` splits a data frame into chunks of rows
#' (at random, by `chunk_by` or in row order, as for linear models). `combine = "exact"`
#' runs every pass of the estimator (the Newton steps of the moment equations, the
#' working-covariance updates, the standard errors and the penalized IRLS of the modes)
#' over all the chunks, adding their per-level sums before any of them is squared: the
#' fit equals the unchunked one up to rounding (1e-10 in the tests). Those passes read
#' the rows at every parameter value, so they run in this process, on `threads` threads,
#' with the response, fixed-effect columns and level codes of every chunk in memory (a
#' copy of those vectors: chunks of a data frame save no memory); with `backend =
#' "future"` the exact fit is computed the same way, here. `combine = "average"` fits
#' every chunk on its own (on the workers of the future plan with `backend = "future"`)
#' and averages the variances and fixed effects with equal weights (Software Alchemy);
#' `vcov()` is then `sum_i V_i / g^2` from the chunks' own covariances `V_i` (the
#' covariance of the average of `g` independent estimates), the covariance of the
#' variances likewise, and `fit$alchemy` holds the chunk estimates with their spread
#' `cov(estimates) / g`. Both are honest only for independent chunks (`chunk_by` the
#' grouping variable of the only random term, or of a term the others nest in); chunks of
#' rows at random share every level and the fit warns. The modes are computed over all
#' the rows at the averaged estimates.
#'
#' `data` may also be a list of data frames or a vector of CSV or RDS files (as for linear
#' models), one chunk each. Each is read (by the workers of the future plan with `backend
#' = "future"`) and cut to the variables the model uses, and these are stacked in this
#' process, where the estimator's passes run: they read the rows at every parameter value
#' (some 50 times), which re-reading the files would make slower than the fit, so the
#' model's variables of every row are held here (not the files' other columns; as the
#' stacked columns, the model frame and the chunks' vectors, a few copies). The fit
#' is then that of the stacked rows, with its model frame, fitted values and all methods;
#' levels are matched by label.
#'
#' A GLMM fit that runs for more than about two seconds shows a progress bar (with the
#' cli package) counting the solver's steps, in interactive sessions; option
#' `fullrandom.progress = FALSE` turns it off (`TRUE` turns it on elsewhere). A user
#' interrupt (Ctrl-C, Esc) stops the fit between two steps.
#' @name fr_fit
NULL

# The core fit of a GLMM over the rows of one model (the whole data) or, with `chunking`,
# over chunks of its rows; returns what fr_glmm_fit() returns, with `chunks` and, for
# combine = "average", `alchemy`.
glmm_fit_core <- function(model, family, trials, offset, threads, chunking = NULL, frame = NULL,
                          method = "auto") {
  if (method == "auto") {
    # The likelihood fit where it is the marginal likelihood (one term, nested terms);
    # for crossed terms the Laplace fit where its factor is small, else the moments.
    method <- fr_glmm_auto_method(list(model), family$family, family$link, list(trials), list(offset))
  }
  spec <- glmm_core_spec(family, threads, method)
  if (is.null(chunking)) {
    return(glmm_core_call(list(model), list(trials), list(offset), spec, modes = TRUE))
  }
  n <- length(model$y)
  chunk_by <- chunking$chunk_by
  rows <- if (!is.null(chunking$source)) {
    # One chunk per data frame or file (the rows the frame kept of each), empty ones left out.
    kept <- attr(frame, "row.names")
    source <- chunking$source[if (is.integer(kept) && !(length(kept) == 2L && is.na(kept[[1L]]))) kept else seq_len(n)]
    Filter(length, rows_by_chunk(source, max(chunking$source)))
  } else {
    g <- check_whole_number(if (is.null(chunking$chunks)) 1L else chunking$chunks, "chunks", at_least = 1)
    by <- if (!is.null(chunk_by) && chunk_by != ".order") frame[[chunk_by]]
    rows_by_chunk(with_seed(chunking$seed, assign_chunks(n, g, by, chunk_by)), g)
  }
  g <- length(rows)
  combine <- chunking$combine
  out <- if (combine == "exact") {
    pieces <- lapply(rows, function(r) glmm_chunk_piece(model, trials, offset, r))
    glmm_core_call(lapply(pieces, `[[`, "model"), lapply(pieces, `[[`, "trials"),
                   lapply(pieces, `[[`, "offset"), spec, modes = TRUE)
  } else {
    if (is.null(chunk_by) || chunk_by == ".order") warn_row_chunks()
    glmm_average_chunks(model, trials, offset, rows, spec, chunking$backend, threads)
  }
  out$chunks <- list(chunks = g, combine = combine, chunk_by = chunk_by, backend = chunking$backend,
                     sizes = lengths(rows))
  out
}

# What every core call of a fit shares: the family's names, the fit's options, the
# estimator ("moments", "laplace" or "efficient") and threads.
glmm_core_spec <- function(family, threads, method) {
  options <- glmm_moment_options(method)
  list(family = family$family, link = family$link, method = method,
       information = options$information, working = options$working, threads = as.integer(threads))
}

# The options that steer the moment estimator, checked; the likelihood fit (method =
# "efficient") has no use for them, so setting one is an error there rather than ignored.
glmm_moment_options <- function(method) {
  read <- function(name, default) {
    value <- getOption(name, default)
    if (!is.logical(value) || length(value) != 1L || is.na(value)) {
      stop(sprintf("option `%s` must be TRUE or FALSE", name), call. = FALSE)
    }
    value
  }
  information <- read("fullrandom.glmm_information_weights", FALSE)
  working <- read("fullrandom.glmm_working_covariance", TRUE)
  if (method %in% c("efficient", "laplace")) {
    set <- c(fullrandom.glmm_information_weights = information, fullrandom.glmm_working_covariance = !working)
    if (any(set)) {
      stop(sprintf(paste(
        "option %s steers the moment estimator (method = \"moments\"), but this GLMM is fitted by",
        "its likelihood (method = \"%s\"); unset it, or fit with method = \"moments\""
      ), paste0("`", names(set)[set], "`", collapse = " and "), method), call. = FALSE)
    }
  }
  list(information = information, working = working)
}

# The name of a GLMM estimator in progress bars and messages.
glmm_method_label <- function(method) {
  switch(method,
         efficient = "GLMM fit by likelihood (adaptive quadrature)",
         laplace = "GLMM fit by likelihood (Laplace approximation)",
         "GLMM fit by moments")
}

glmm_core_call <- function(models, trials, offsets, spec, modes,
                           progress = glmm_progress_reporter(glmm_method_label(spec$method))) {
  fr_glmm_fit_chunks(models, spec$family, spec$link, trials, offsets, spec$information, spec$working,
                     spec$method, modes, spec$threads, progress)
}

# The rows `rows` of a core model, its trials and offsets.
glmm_chunk_piece <- function(model, trials, offset, rows) {
  model$y <- model$y[rows]
  model$x <- chunk_columns(model$x, rows)
  model$codes <- lapply(model$codes, function(codes) .subset(codes, rows))
  list(model = model, trials = if (!is.null(trials)) trials[rows], offset = if (!is.null(offset)) offset[rows])
}

# Software Alchemy for a GLMM: every chunk fitted on its own (no modes), the estimates
# averaged, vcov() from the chunks' own covariances, the modes over all the rows at the
# averaged estimates.
glmm_average_chunks <- function(model, trials, offset, rows, spec, backend, threads) {
  worker_spec <- spec
  worker_spec$threads <- as.integer(worker_threads(backend, threads))
  pieces <- if (backend == "future") {
    lapply(seq_along(rows), function(i) c(list(index = i), glmm_chunk_piece(model, trials, offset, rows[[i]])))
  } else {
    worker_spec$whole <- list(model = model, trials = trials, offset = offset)
    lapply(seq_along(rows), function(i) list(index = i, rows = rows[[i]]))
  }
  fits <- run_chunks(pieces, glmm_chunk_worker, worker_spec, backend)
  rm(pieces)
  g <- length(fits)
  p <- length(fits[[1L]]$coef)
  k <- length(fits[[1L]]$variances)
  mean_of <- function(field) colMeans(do.call(rbind, lapply(fits, `[[`, field)))
  # The covariance of the mean of g independent estimates: sum_i V_i / g^2.
  pooled <- function(field, dim) {
    Reduce(`+`, lapply(fits, function(f) matrix(if (is.null(f[[field]])) f$vcov else f[[field]], dim))) / g^2
  }
  coef <- mean_of("coef")
  variances <- mean_of("variances")
  estimates <- cbind(do.call(rbind, lapply(fits, `[[`, "variances")), do.call(rbind, lapply(fits, `[[`, "coef")))
  colnames(estimates) <- c(model$labels, model$x_names)
  rownames(estimates) <- paste("chunk", seq_len(g))
  modes <- fr_glmm_modes(list(model), spec$family, spec$link, list(trials), list(offset), coef, variances,
                         spec$threads, glmm_progress_reporter("GLMM conditional modes"))
  sum_of <- function(field) Reduce(`+`, lapply(fits, `[[`, field))
  list(
    coef = coef, variances = variances, at_boundary = variances == 0, method = spec$method,
    vcov = as.vector(pooled("vcov", p)),
    vcov_model = if (!is.null(fits[[1L]]$vcov_model)) as.vector(pooled("vcov_model", p)),
    vcov_variances = as.vector(pooled("vcov_variances", k)),
    ranef = modes$ranef, first_coef = mean_of("first_coef"), first_variances = mean_of("first_variances"),
    statistic = fits[[1L]]$statistic, second_step = all(vapply(fits, `[[`, TRUE, "second_step")),
    iterations = sum_of("iterations"), working_iterations = sum_of("working_iterations"),
    pirls_iterations = modes$pirls_iterations, timings = sum_of("timings"), stages = fits[[1L]]$stages,
    passes = sum_of("passes"),
    alchemy = list(estimates = estimates, vcov = if (g > 1L) stats::cov(estimates) / g)
  )
}

# One chunk's GLMM fit (a namespace function, so that a future worker is sent only its
# own piece): the piece's rows of the whole model, or the piece's own vectors.
glmm_chunk_worker <- function(piece, spec) {
  d <- if (is.null(piece$rows)) piece else glmm_chunk_piece(spec$whole$model, spec$whole$trials, spec$whole$offset, piece$rows)
  fr_glmm_fit_chunks(list(d$model), spec$family, spec$link, list(d$trials), list(d$offset), spec$information,
                     spec$working, spec$method, FALSE, spec$threads, NULL)
}

# Whether long fits show a progress bar: option fullrandom.progress, by default in
# interactive sessions, and only with cli installed.
progress_enabled <- function() {
  on <- getOption("fullrandom.progress", interactive())
  if (!is.logical(on) || length(on) != 1L || is.na(on)) {
    stop("option `fullrandom.progress` must be TRUE or FALSE", call. = FALSE)
  }
  on && requireNamespace("cli", quietly = TRUE)
}

# A function the core calls (at most every 0.2 s) with the number of solver steps so far,
# or NULL when progress is off. The bar is created at the first call and shown by cli
# only once the fit has run for `cli.progress_show_after` seconds (2 by default); it
# closes when the calling function returns.
glmm_progress_reporter <- function(what, env = parent.frame()) {
  if (!progress_enabled()) return(NULL)
  id <- NULL
  function(steps) {
    if (is.null(id)) {
      id <<- cli::cli_progress_bar(what, total = NA, .envir = env,
                                   format = "{cli::pb_spin} {cli::pb_name} | {cli::pb_current} solver steps | {cli::pb_elapsed}")
    }
    cli::cli_progress_update(id = id, set = steps, .envir = env)
    NULL
  }
}

# The chunks line of a GLMM fit's print and summary.
print_glmm_chunks <- function(x) {
  chunks <- x$chunks
  if (is.null(chunks)) return(invisible())
  cat(sprintf("Chunks: %d (%s%s, backend \"%s\")\n", chunks$chunks,
              if (chunks$combine == "exact") "passes over all chunks, exact" else "estimates averaged, Software Alchemy",
              if (identical(chunks$chunk_by, ".order")) ", consecutive blocks of the row order"
              else if (!is.null(chunks$chunk_by)) sprintf(", by levels of %s", chunks$chunk_by) else "",
              chunks$backend))
  invisible()
}

# A list of data frames or a vector of files for a GLMM fit: each chunk read (on the
# workers of the future plan with backend = "future"), cut to the variables the fit uses
# and stacked here, where the estimator's passes run; `chunking` then makes one chunk of
# each source (`source`: the source of every stacked row).
glmm_stack_sources <- function(data, parsed, frame_call, weights_expr, offset_expr, chunking, env) {
  if (is.null(chunking)) {
    chunking <- list(chunks = NULL, combine = "exact", chunk_by = NULL, seed = NULL, backend = "threads")
  }
  sources <- chunk_sources(data, chunking$chunks, chunking$chunk_by)
  vars <- unique(c(all.vars(parsed$frame_formula), all.vars(weights_expr), all.vars(offset_expr),
                   all.vars(frame_call$subset)))
  spec <- list(vars = vars, text_columns = grouping_columns(parsed))
  parts <- run_chunks(sources, glmm_read_worker, spec, chunking$backend)
  present <- lapply(parts, names)
  everywhere <- Reduce(intersect, present)
  for (i in seq_along(parts)) {
    lacking <- setdiff(unique(unlist(present)), present[[i]])
    if (length(lacking) > 0L) {
      stop(sprintf("chunk %d lacks %s %s, which other chunks have", i,
                   ngettext(length(lacking), "column", "columns"), paste0("'", lacking, "'", collapse = ", ")),
           call. = FALSE)
    }
  }
  sizes <- vapply(parts, nrow, 1L)
  stacked <- do.call(rbind, unname(lapply(parts, function(part) part[everywhere])))
  rm(parts)
  rownames(stacked) <- NULL
  chunking$source <- rep.int(seq_along(sizes), sizes)
  chunking$chunks <- length(sizes)
  list(data = stacked, chunking = chunking)
}

# One source's columns that the fit uses (grouping variables of CSV files read as text).
glmm_read_worker <- function(piece, spec) {
  d <- read_chunk(piece, spec$text_columns)
  as.data.frame(d)[intersect(names(d), spec$vars)]
}
