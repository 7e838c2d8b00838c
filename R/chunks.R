# Fits in chunks: N. Matloff's Software Alchemy (fit every chunk, average the
# estimates) and exact merges of the chunks' sufficient statistics, on threads or on
# the workers of a future plan, from a data frame, a list of data frames or files.

# The chunked path of fr_fit(). `data` is a data frame (split into `chunks` here), a list
# of data frames or a character vector of file paths (one chunk each).
fr_fit_chunks <- function(call, formula, parsed, data, frame_call, env, method, threads,
                          chunks, combine, chunk_by, seed, backend, size_grouping) {
  if (is.data.frame(data)) {
    return(fit_data_frame_chunks(call, formula, parsed, data, frame_call, env, method, threads,
                                 chunks, combine, chunk_by, seed, backend, size_grouping))
  }
  sources <- chunk_sources(data, chunks, chunk_by)
  fit_source_chunks(call, formula, parsed, sources, frame_call, env, method, threads, combine,
                    backend, size_grouping)
}

# Runs `expr` with the RNG seeded by `seed` (when not NULL), leaving the caller's random
# stream as it was.
with_seed <- function(seed, expr) {
  if (is.null(seed)) return(expr)
  check_seed(seed)
  had_seed <- exists(".Random.seed", envir = globalenv(), inherits = FALSE)
  old <- if (had_seed) get(".Random.seed", envir = globalenv(), inherits = FALSE)
  on.exit(if (had_seed) assign(".Random.seed", old, envir = globalenv())
          else rm(".Random.seed", envir = globalenv()))
  set.seed(seed)
  expr
}

#' The chunk of every row: at random (`chunk_by = NULL`), or by whole levels of the
#' grouping variable `chunk_by`, assigned to chunks at random. Every chunk gets rows.
#' @noRd
assign_chunks <- function(n, chunks, by = NULL, by_name = NULL) {
  if (identical(by_name, ".order")) {
    # Consecutive blocks of the row order (the order of submission, eq. 29 of the Full
    # Randomness paper), as equal as whole rows allow.
    if (chunks > n) {
      stop(sprintf("%d chunks for %d observations; use at most %d", chunks, n, n), call. = FALSE)
    }
    return(rep.int(seq_len(chunks), diff(floor(seq(0, n, length.out = chunks + 1L)))))
  }
  if (is.null(by)) {
    if (chunks > n) {
      stop(sprintf("%d chunks for %d observations; use at most %d", chunks, n, n), call. = FALSE)
    }
    return(sample(rep_len(seq_len(chunks), n)))
  }
  by <- droplevels(as.factor(by))
  if (chunks > nlevels(by)) {
    stop(sprintf("%d chunks but chunk_by '%s' has %d levels; use at most %d chunks",
                 chunks, by_name, nlevels(by), nlevels(by)), call. = FALSE)
  }
  sample(rep_len(seq_len(chunks), nlevels(by)))[as.integer(by)]
}

# The grouping variables chunk_by may name: those of the random terms (a chunk then holds
# whole levels, so its estimates are independent of the other chunks' when the other
# terms nest in it).
check_chunk_by <- function(chunk_by, parsed) {
  if (is.null(chunk_by) || identical(chunk_by, ".order")) return(chunk_by)
  allowed <- unique(unlist(lapply(parsed$random, function(term) vapply(term$factors, deparse1, ""))))
  if (!is.character(chunk_by) || length(chunk_by) != 1L || !chunk_by %in% allowed) {
    stop(sprintf("`chunk_by` must be \".order\" or name the grouping variable of a random term (%s); %s is not one",
                 paste0("'", allowed, "'", collapse = ", "),
                 if (is.character(chunk_by) && length(chunk_by) == 1L) paste0("'", chunk_by, "'")
                 else "the value given"), call. = FALSE)
  }
  chunk_by
}

warn_row_chunks <- function() {
  warning(paste(
    "chunks of rows (at random or in their order) share the levels of every random term, so they are not",
    "independent: the Software Alchemy standard errors miss the variance the random",
    "effects share across chunks (those of the intercept and of the variance components",
    "can be several times too small). Use",
    "chunk_by = <grouping variable> for independent chunks, or combine = \"exact\"."
  ), call. = FALSE)
}

# ---------------------------------------------------------------------------------------
# A data frame in memory: the model frame is built once; chunks are sets of its rows.
# ---------------------------------------------------------------------------------------

fit_data_frame_chunks <- function(call, formula, parsed, data, frame_call, env, method, threads,
                                  chunks, combine, chunk_by, seed, backend, size_grouping) {
  chunks <- check_whole_number(if (is.null(chunks)) 1L else chunks, "chunks", at_least = 1)
  chunk_by <- check_chunk_by(chunk_by, parsed)
  md <- fr_model_data(parsed, frame_call, data, env, threads)
  size_columns <- size_columns_for(method, md, size_grouping)
  n <- length(md$y)
  chunk_of <- with_seed(seed, assign_chunks(
    n, chunks, if (!is.null(chunk_by) && chunk_by != ".order") md$frame[[chunk_by]], chunk_by
  ))
  rows <- rows_by_chunk(chunk_of, chunks)
  rm(chunk_of)
  if (combine == "average" && (is.null(chunk_by) || chunk_by == ".order")) warn_row_chunks()
  spec <- list(method = method, combine = combine, size_columns = size_columns,
               threads = worker_threads(backend, threads), labels = names(md$flist),
               n_levels = vapply(md$flist, nlevels, 1L), x_names = md$fixed$names)
  # Only the vectors the core reads make a chunk: the rows of y, of the fixed columns and
  # of the codes (the levels stay global, so no labels are matched). A worker of a future
  # plan is sent its own chunk's vectors; in this process a chunk's vectors are copied
  # only while it is processed, so that the chunks never all sit in memory at once.
  pieces <- if (backend == "future") {
    lapply(seq_along(rows), function(i) list(index = i, data = chunk_vectors(md, rows[[i]])))
  } else {
    spec$md <- md
    lapply(seq_along(rows), function(i) list(index = i, rows = rows[[i]]))
  }
  results <- run_chunks(pieces, chunk_vectors_worker, spec, backend)
  rm(pieces, rows)
  # The chunks share the frame's levels: no level maps.
  merged <- merge_chunks(results, NULL, spec$n_levels, method, size_columns, combine, threads)
  fit <- chunked_fit_object(merged, results, spec, md$flist, combine, chunk_by, backend, size_columns)
  rm(merged, results)  # the chunks' statistics, before the fitted values take their memory
  # The data are here, so the fit has its fitted values and residuals as unchunked.
  fitted <- fr_fitted_values(md, fit$coef_all, fit$ranef_values, threads)
  fit$fitted.values <- name_by_rows(fitted$fitted, md$frame)
  fit$residuals <- name_by_rows(fitted$residuals, md$frame)
  finish_fit(fit, call, formula, md$y, md, parsed, threads)
}

# The rows of every chunk, from the chunk of every row: split() would first turn the
# chunk numbers into a factor through strings, a vector of n of them.
rows_by_chunk <- function(chunk_of, chunks) {
  by_chunk <- order(chunk_of, method = "radix")
  ends <- cumsum(tabulate(chunk_of, chunks))
  starts <- c(1L, utils::head(ends, -1L) + 1L)
  lapply(seq_len(chunks), function(i) by_chunk[seq.int(starts[[i]], length.out = ends[[i]] - starts[[i]] + 1L)])
}

# The rows `rows` of the model's vectors, in the form the core reads.
chunk_vectors <- function(md, rows) {
  list(y = md$y[rows], columns = chunk_columns(md$fixed$columns, rows), intercept = md$fixed$intercept,
       codes = lapply(md$flist, function(f) .subset(f, rows)))  # no copy of the whole factor
}

# The rows `rows` of the fixed-effect columns (a matrix, or a list with NULL for the
# intercept).
chunk_columns <- function(columns, rows) {
  if (is.matrix(columns)) return(columns[rows, , drop = FALSE])
  lapply(columns, function(v) if (is.null(v)) NULL else v[rows])
}

chunk_vectors_worker <- function(piece, spec) {
  d <- if (is.null(piece$data)) chunk_vectors(spec$md, piece$rows) else piece$data
  fit_chunk_vectors(d$y, d$columns, d$intercept, d$codes, spec$n_levels, spec)
}

# Statistics of one chunk and, for combine = "average", its complete fit.
fit_chunk_vectors <- function(y, columns, intercept, codes, n_levels, spec) {
  model <- core_model(y, columns, spec$x_names, intercept, codes, n_levels, spec$labels)
  core <- function(method, keep) {
    fr_moment_fit(model, method, as.integer(spec$size_columns) - 1L, keep, spec$threads)
  }
  if (spec$combine == "exact") return(list(statistics = core("statistics", FALSE), n = length(y)))
  out <- core(spec$method, TRUE)
  kept <- out$kept
  list(statistics = out$statistics, n = length(y),
       estimate = list(theta = out$estimate, coef = out$mixed$gls_coef, kept = kept,
                       vcov = matrix(out$mixed$vcov, length(kept))))
}

# ---------------------------------------------------------------------------------------
# A list of data frames, or files: each chunk is read (on its worker) and framed on its
# own; the levels of the random terms are matched across chunks by label.
# ---------------------------------------------------------------------------------------

chunk_sources <- function(data, chunks, chunk_by) {
  if (!is.null(chunk_by)) {
    stop("`chunk_by` applies to a single data frame; a list of data frames or files is chunked already",
         call. = FALSE)
  }
  n <- length(data)
  if (n == 0L) stop("`data` has no chunks: the list or the vector of files is empty", call. = FALSE)
  if (!is.null(chunks) && !identical(as.integer(chunks), n)) {
    stop(sprintf("`chunks` is set by the data: %d %s", n,
                 if (is.character(data)) "files" else "data frames"), call. = FALSE)
  }
  if (is.character(data)) {
    missing <- data[!file.exists(data)]
    if (length(missing) > 0L) {
      stop(sprintf("%s not found: %s", ngettext(length(missing), "file", "files"),
                   paste0("'", missing, "'", collapse = ", ")), call. = FALSE)
    }
    unknown <- data[!grepl("\\.(csv|tsv|txt|rds)(\\.gz|\\.bz2|\\.xz)?$", data, ignore.case = TRUE)]
    if (length(unknown) > 0L) {
      stop(sprintf("cannot read '%s': data files must be .csv, .tsv, .txt (read by data.table::fread) or .rds",
                   unknown[[1L]]), call. = FALSE)
    }
    if (any(!grepl("\\.rds$", data, ignore.case = TRUE))) require_suggested("data.table", "to read CSV files")
    paths <- normalizePath(data)
    twice <- which(duplicated(paths))
    if (length(twice) > 0L) {
      first <- match(paths[[twice[[1L]]]], paths)
      stop(sprintf(
        "file '%s' is given more than once (as elements %d and %d of `data`); its rows would be counted twice",
        data[[twice[[1L]]]], first, twice[[1L]]
      ), call. = FALSE)
    }
    return(lapply(seq_len(n), function(i) list(index = i, path = paths[[i]])))
  }
  if (!is.list(data)) {
    stop("`data` must be a data frame, a list of data frames or a character vector of file paths",
         call. = FALSE)
  }
  for (i in seq_len(n)) {
    if (!is.data.frame(data[[i]])) {
      stop(sprintf("element %d of `data` is %s, not a data frame", i, describe_type(data[[i]])),
           call. = FALSE)
    }
  }
  lapply(seq_len(n), function(i) list(index = i, data = data[[i]]))
}

require_suggested <- function(pkg, why) {
  if (!requireNamespace(pkg, quietly = TRUE)) {
    stop(sprintf("package '%s' is needed %s; install it", pkg, why), call. = FALSE)
  }
}

# One chunk's data frame. Of a CSV file, the `text_columns` (the grouping variables) are
# read as text: read as numbers, an ID "03" would become 3 and merge with the "3" of
# another file.
read_chunk <- function(piece, text_columns = character()) {
  if (!is.null(piece$data)) return(piece$data)
  path <- piece$path
  if (grepl("\\.rds$", path, ignore.case = TRUE)) {
    out <- readRDS(path)
    if (!is.data.frame(out)) stop(sprintf("'%s' holds %s, not a data frame", path, describe_type(out)),
                                  call. = FALSE)
    return(out)
  }
  header <- names(data.table::fread(path, nrows = 0L, showProgress = FALSE))
  text_columns <- intersect(text_columns, header)
  data.table::fread(path, data.table = FALSE, showProgress = FALSE,
                    colClasses = if (length(text_columns)) list(character = text_columns))
}

# The grouping variables of the random terms that are plain columns, as `(1 | id)` uses
# them (an expression such as cut(age, 5) needs its variable as read).
grouping_columns <- function(parsed) {
  components <- unlist(lapply(parsed$random, `[[`, "factors"))
  unique(vapply(Filter(is.name, components), as.character, ""))
}

fit_source_chunks <- function(call, formula, parsed, sources, frame_call, env, method, threads,
                              combine, backend, size_grouping) {
  spec <- list(parsed = parsed, frame_call = frame_call, env = env, method = method,
               combine = combine, threads = worker_threads(backend, threads),
               size_grouping = size_grouping, xlev = NULL, size_counts = NULL)
  if (combine == "average") warn_row_chunks()
  size_vars <- unique(vapply(parsed$size_calls, function(cl) deparse1(cl[[2L]]), ""))
  # size() columns take the group sizes of the whole data: a first pass counts them (and
  # finds the levels of fixed-effect factors).
  if (length(size_vars) > 0L) {
    spec$size_vars <- size_vars
    scans <- run_chunks(sources, scan_chunk_worker, spec, backend)
    spec$xlev <- merge_fixed_levels(lapply(scans, `[[`, "fixed_levels"))
    spec$size_counts <- merge_size_counts(lapply(scans, `[[`, "size_counts"))
  }
  results <- run_chunks(sources, source_chunk_worker, spec, backend)
  # Factor fixed effects must have the same columns in every chunk: when the chunks were
  # framed without the whole data's levels, frame them again with those levels.
  fixed_levels <- lapply(results, `[[`, "fixed_levels")
  if (is.null(spec$xlev) && any(lengths(fixed_levels) > 0L)) {
    spec$xlev <- merge_fixed_levels(fixed_levels)
    results <- run_chunks(sources, source_chunk_worker, spec, backend)
  }
  labels <- names(results[[1L]]$levels)
  global <- lapply(stats::setNames(seq_along(labels), labels), function(k) {
    global_levels(lapply(results, function(r) r$levels[[k]]))
  })
  maps <- lapply(seq_along(results), function(i) unname(lapply(global, function(g) g$maps[[i]])))
  n_levels <- vapply(global, function(g) length(g$labels), 1L)
  n <- sum(vapply(results, `[[`, 1, "n"))
  check_grouping_sizes(n_levels, n, labels)
  first <- results[[1L]]
  spec$x_names <- first$x_names
  merged <- merge_chunks(results, maps, n_levels, method, first$size_columns, combine, threads)
  flist <- lapply(global, function(g) {
    structure(factor(character(), levels = g$labels), components = g$components)
  })
  fit <- chunked_fit_object(merged, results, spec, flist, combine, NULL, backend, first$size_columns)
  md <- list(fixed = list(names = first$x_names, contrasts = first$contrasts), terms = first$terms,
             frame = NULL, flist = flist, n_dropped = sum(vapply(results, `[[`, 1, "n_dropped")),
             na_action = NULL, xlevels = first$xlevels)
  finish_fit(fit, call, formula, NULL, md, parsed, threads, n_obs = n)
}

# The model frame of one chunk read from its source, with the whole data's fixed-effect
# factor levels and size() counts once they are known.
chunk_model_data <- function(piece, spec) {
  data <- read_chunk(piece, grouping_columns(spec$parsed))
  frame_call <- spec$frame_call
  frame_call$data <- quote(data)
  env <- new.env(parent = spec$env)
  env$data <- data
  md <- fr_model_data(spec$parsed, frame_call, data, env, spec$threads, xlev = spec$xlev,
                      size_counts = spec$size_counts, whole = FALSE)
  # The full level sets of the chunk's factor columns, whose order the whole data's
  # levels follow.
  md$source_levels <- Filter(Negate(is.null), lapply(data, levels))
  md
}

scan_chunk_worker <- function(piece, spec) {
  md <- chunk_model_data(piece, spec)
  size_counts <- lapply(stats::setNames(spec$size_vars, spec$size_vars), function(g) {
    counts <- table(as.character(md$frame[[g]]))
    stats::setNames(as.numeric(counts), names(counts))
  })
  list(fixed_levels = fixed_factor_levels(md), size_counts = size_counts)
}

# The levels of the fixed part's factor (or character) variables in a chunk's frame: the
# used ones, and for a factor the order of all its levels (those of the chunk's data: the
# frame has dropped the unused ones).
fixed_factor_levels <- function(md) {
  frame <- md$frame
  out <- list()
  for (v in intersect(all.vars(stats::delete.response(md$terms)), names(frame))) {
    x <- frame[[v]]
    if (is.factor(x)) {
      order <- if (is.null(md$source_levels[[v]])) levels(x) else md$source_levels[[v]]
      out[[v]] <- list(order = order, used = levels(x)[tabulate(x, nlevels(x)) > 0L])
    } else if (is.character(x)) {
      out[[v]] <- list(order = NULL, used = sort(unique(x)))
    }
  }
  out
}

merge_fixed_levels <- function(pieces) {
  vars <- unique(unlist(lapply(pieces, names)))
  if (length(vars) == 0L) return(NULL)
  out <- lapply(stats::setNames(vars, vars), function(v) {
    parts <- lapply(pieces, `[[`, v)
    parts <- parts[!vapply(parts, is.null, TRUE)]
    used <- sort(unique(unlist(lapply(parts, `[[`, "used"))))
    in_order(unique(unlist(lapply(parts, `[[`, "order"))), used)
  })
  out
}

merge_size_counts <- function(pieces) {
  groupings <- unique(unlist(lapply(pieces, names)))
  lapply(stats::setNames(groupings, groupings), function(g) {
    all <- unlist(lapply(pieces, `[[`, g))
    total <- tapply(all, names(all), sum)
    stats::setNames(as.numeric(total), names(total))
  })
}

source_chunk_worker <- function(piece, spec) {
  md <- chunk_model_data(piece, spec)
  size_columns <- size_columns_for(spec$method, md, spec$size_grouping)
  spec$labels <- names(md$flist)
  spec$x_names <- md$fixed$names
  spec$size_columns <- size_columns
  out <- fit_chunk_vectors(md$y, md$fixed$columns, md$fixed$intercept, md$flist,
                           vapply(md$flist, nlevels, 1L), spec)
  out$levels <- chunk_level_sets(md, spec$parsed)
  out$fixed_levels <- if (is.null(spec$xlev)) fixed_factor_levels(md)
  out$x_names <- md$fixed$names
  out$size_columns <- size_columns
  out$terms <- md$terms
  out$contrasts <- md$fixed$contrasts
  out$xlevels <- stats::.getXlevels(md$terms, md$frame)
  out$n_dropped <- md$n_dropped
  out
}

# The levels of one random term over all chunks, in the order an unchunked fit gives them:
# sorted values for a grouping variable that is not a factor (as factor() sorts them),
# the order of the factor's levels for a factor, otherwise (interactions) first appearance.
# Returns `labels`, `maps` (per chunk, the global level of each of its levels) and, for an
# interaction, `components`: its levels are matched by the tuple of their components'
# labels, not by the joined label, which two distinct tuples can share.
# The levels of every grouping factor of a chunk's frame, in the form global_levels()
# merges: the labels, and how the whole data orders them.
chunk_level_sets <- function(md, parsed) {
  terms_by_label <- stats::setNames(parsed$random, vapply(parsed$random, `[[`, "", "label"))
  labels <- unique(names(md$flist))
  lapply(stats::setNames(labels, labels), function(label) {
    factors <- terms_by_label[[label]]$factors
    column <- if (length(factors) == 1L) md$frame[[deparse1(factors[[1L]])]]
    # factor() orders a non-factor variable by its sorted values; the whole data's order
    # comes from sorting the values of all chunks.
    values <- if (!is.null(column) && !is.factor(column)) unique(column)
    order <- if (length(factors) == 1L) md$source_levels[[deparse1(factors[[1L]])]]
    list(labels = levels(md$flist[[label]]), values = values, order = order,
         components = attr(md$flist[[label]], "components"))
  })
}

global_levels <- function(parts) {
  if (!is.null(parts[[1L]]$components)) return(global_interaction_levels(parts))
  values <- lapply(parts, `[[`, "values")
  labels <- if (all(!vapply(values, is.null, TRUE))) {
    sort_values(unique(unlist(values)))
  } else {
    in_order(unique(unlist(lapply(parts, `[[`, "order"))), unique(unlist(lapply(parts, `[[`, "labels"))))
  }
  list(labels = labels, maps = lapply(parts, function(p) match(p$labels, labels)))
}

# Values of a grouping variable as the sorted labels factor() would give them; grouping
# columns of CSV files are read as text, whose numbers sort by value (then as text, so
# that "03" and "3" stay two levels).
sort_values <- function(values) {
  if (is.character(values)) {
    number <- suppressWarnings(as.numeric(values))
    if (!anyNA(number[!is.na(values)])) return(values[order(number, values)])
  }
  as.character(sort(values))
}

global_interaction_levels <- function(parts) {
  n_components <- length(parts[[1L]]$components)
  components <- lapply(seq_len(n_components), function(j) {
    unlist(lapply(parts, function(p) p$components[[j]]))
  })
  code <- tuple_codes(lapply(components, function(x) match(x, x)))
  first <- !duplicated(code)
  global <- match(code, code[first])
  chunk <- rep(seq_along(parts), vapply(parts, function(p) length(p$labels), 1L))
  global_components <- lapply(components, function(x) x[first])
  maps <- unname(split(global, factor(chunk, levels = seq_along(parts))))
  list(labels = interaction_labels(global_components), maps = maps,
       components = global_components)
}

# The levels `used` in the chunks, those of the factors' level sets `order` in that
# order, then the others as given.
in_order <- function(order, used) c(order[order %in% used], setdiff(used, order))

# ---------------------------------------------------------------------------------------
# Running the chunks and combining them
# ---------------------------------------------------------------------------------------

worker_threads <- function(backend, threads) if (backend == "future") 1L else threads

# `worker(piece, spec)` on every piece: in this process one after the other (each chunk
# using the threads), or on the workers of the current future plan. A failure names
# its chunk.
run_chunks <- function(pieces, worker, spec, backend) {
  results <- if (backend == "future") {
    require_suggested("future.apply", "for backend = \"future\"")
    future.apply::future_lapply(pieces, run_guarded, worker = worker, spec = spec,
                                future.seed = NULL, future.packages = "fullrandom")
  } else {
    lapply(pieces, run_guarded, worker = worker, spec = spec)
  }
  for (r in results) {
    if (inherits(r, "fr_chunk_failure")) {
      where <- if (!is.null(r$path)) sprintf("chunk %d (file '%s')", r$index, basename(r$path))
               else sprintf("chunk %d", r$index)
      stop(sprintf("%s failed: %s", where, r$message), call. = FALSE)
    }
  }
  results
}

# One chunk, its error caught and returned with the chunk's number. A function of the
# namespace (not a closure of run_chunks()), so that a future worker is sent only its
# own piece.
run_guarded <- function(piece, worker, spec) {
  tryCatch(worker(piece, spec), error = function(e) {
    structure(list(message = conditionMessage(e), index = piece$index, path = piece$path),
              class = "fr_chunk_failure")
  })
}

# The merged fit: "exact" estimates from the merged statistics; "average" the mean of the
# chunks' estimates, with the mixed-model equations of the whole data solved at the
# averaged components (for the BLUPs and the covariance of the fixed effects). `maps`:
# per chunk, the global level of each of its levels; NULL when the chunks share them.
merge_chunks <- function(results, maps, n_levels, method, size_columns, combine, threads) {
  statistics <- lapply(results, `[[`, "statistics")
  components <- NULL
  if (combine == "average") {
    theta <- do.call(rbind, lapply(results, function(r) r$estimate$theta))
    components <- colMeans(theta)
  }
  fr_merged_fit(statistics, maps, as.integer(n_levels), if (combine == "average") "moments" else method,
                as.integer(size_columns) - 1L, components, threads)
}

chunked_fit_object <- function(merged, results, spec, flist, combine, chunk_by, backend,
                               size_columns = integer()) {
  x_names <- spec$x_names
  g <- length(results)
  sizes <- vapply(results, `[[`, 1, "n")
  out <- if (combine == "exact") {
    name_core_output(merged, x_names, flist, spec$method, size_columns)
  } else {
    average_chunk_estimates(merged, results, x_names, flist, spec$method)
  }
  out$chunks <- list(chunks = g, combine = combine, chunk_by = chunk_by, backend = backend,
                     sizes = sizes)
  out
}

# Software Alchemy: the equal-weight mean of the chunks' estimates (variance components,
# then fixed effects) and their covariance cov(estimates) / g; the BLUPs and vcov() from
# the whole data's mixed-model equations at the averaged components (`merged`).
average_chunk_estimates <- function(merged, results, x_names, flist, method) {
  kept <- merged$kept
  for (i in seq_along(results)) {
    if (!identical(as.integer(results[[i]]$estimate$kept), as.integer(kept))) {
      stop(sprintf(paste(
        "chunk %d does not estimate the same fixed effects as the whole data (a column is",
        "aliased in it); averaging needs every chunk to estimate every coefficient"
      ), i), call. = FALSE)
    }
  }
  labels <- names(flist)
  component_names <- c(labels, "Residual")
  kept_names <- x_names[kept]
  theta <- do.call(rbind, lapply(results, function(r) r$estimate$theta))
  coef <- do.call(rbind, lapply(results, function(r) r$estimate$coef[kept]))
  colnames(theta) <- component_names
  colnames(coef) <- kept_names
  estimates <- cbind(theta, coef)
  rownames(estimates) <- paste("chunk", seq_along(results))
  average <- colMeans(estimates)
  g <- length(results)
  coef_all <- stats::setNames(rep(NA_real_, length(x_names)), x_names)
  coef_all[kept] <- average[kept_names]
  mixed <- merged$mixed
  list(
    method = if (is_fr(method)) "fr" else method,
    theta = average[component_names],
    theta_raw = average[component_names],
    boundary = stats::setNames(average[labels] == 0, labels),
    coefficients = average[kept_names],
    coef_ols = NULL,
    coef_all = coef_all,
    kept = kept,
    vcov = matrix(mixed$vcov, length(kept), dimnames = list(kept_names, kept_names)),
    ranef_values = name_ranef(mixed$ranef, flist),
    mme = list(relative_residual = mixed$mme_residual, iterations = mixed$mme_iterations),
    moment_equations = NULL,
    # How the chunks were made (chunk_by, sizes) is in the fit's `chunks`.
    alchemy = list(estimates = estimates, vcov = if (g > 1L) stats::cov(estimates) / g)
  )
}
