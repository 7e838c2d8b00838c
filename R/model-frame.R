# From the user's formula and data to what the Rust core reads: the response, the
# fixed-effect columns and one factor per random term. All input checks live here, so
# every bad input is reported in the user's terms (the column, the term, the level).

#' Build the model frame, response, fixed-effect columns and grouping factors
#'
#' @param parsed the result of `parse_fr_formula()`.
#' @param frame_call a call to `stats::model.frame` carrying the user's `data`,
#'   `subset` and `na.action` arguments, unevaluated.
#' @param data the user's data (or `NULL` when the variables come from the formula's
#'   environment), used for checks that must see the data before rows are dropped.
#' @param env where to evaluate `frame_call`.
#' @param threads threads for counting the factors' levels.
#' @param xlev for a chunk of the data: the levels of the fixed-effect factors in the
#'   whole data (as `model.frame(xlev =)`), kept even when the chunk lacks some.
#' @param size_counts for a chunk: per grouping variable, its rows per level in the whole
#'   data, which size() columns then use.
#' @param whole `FALSE` for a chunk, whose numbers of levels and rows are checked only
#'   once the chunks are merged.
#' @return a list with `frame`, `y`, `fixed` (the fixed-effect columns, from
#'   `fixed_effect_columns()`), `flist` (named list of factors, ordered by
#'   decreasing number of levels as lme4 orders them), `terms` (fixed part),
#'   `n_dropped` and `na_action`.
#' @noRd
fr_model_data <- function(parsed, frame_call, data, env, threads = 1L, xlev = NULL,
                          size_counts = NULL, whole = TRUE) {
  check_columns_exist(parsed$frame_formula, data)
  check_no_nan(parsed$frame_formula, data)

  frame_formula <- parsed$frame_formula
  if (length(parsed$size_calls) > 0L) {
    # size() is found even when the package is not attached; its values are
    # recomputed below on the rows that remain.
    size_env <- new.env(parent = environment(frame_formula))
    size_env$size <- size
    environment(frame_formula) <- size_env
  }
  frame_call$formula <- frame_formula
  frame <- lean_model_frame(frame_call, data, env, threads, xlev)
  na_action <- attr(frame, "na.action")
  n_dropped <- length(na_action)
  if (nrow(frame) == 0L) {
    stop(if (n_dropped > 0L) {
      sprintf("no observations are left after removing %d rows with missing values", n_dropped)
    } else {
      "the data have no rows"
    }, call. = FALSE)
  }

  frame <- recount_sizes(frame, parsed$size_calls, size_counts)
  fixed_terms <- terms(parsed$fixed, data = frame)
  if (!is.null(attr(fixed_terms, "offset"))) {
    stop("offset() terms are not supported yet; subtract the offset from the response instead",
         call. = FALSE)
  }
  response_name <- deparse1(parsed$response)
  # The response is the frame's first column; model.response() would also name it by
  # the row names, materialising them as strings.
  y <- response_vector(frame[[1L]], response_name)
  fixed <- fixed_effect_columns(fixed_terms, frame, parsed$contrasts)
  check_finite_columns(fixed)
  flist <- grouping_factors(parsed$random, frame, check = whole)

  p <- length(fixed$names)
  n_params <- p + length(flist) + 1L
  if (whole && length(y) < n_params) {
    stop(sprintf(
      "fewer observations (%d) than parameters (%d: %d fixed effects and %d variance components)",
      length(y), n_params, p, length(flist) + 1L
    ), call. = FALSE)
  }
  list(frame = frame, y = y, fixed = fixed, flist = flist, terms = fixed_terms,
       n_dropped = n_dropped, na_action = na_action)
}

# The model frame of `frame_call` (a call to stats::model.frame with its formula), with
# two things model.frame would do done here, because at 10^7 rows they dominate the fit:
# its dropping of unused levels re-creates every factor through factor(), and na.omit()
# copies the whole frame even when nothing is missing. The user's na.action is applied
# only when a value is missing. `xlev`: levels to keep, as model.frame(xlev =) takes them.
lean_model_frame <- function(frame_call, data, env, threads = 1L, xlev = NULL) {
  na_fun <- user_na_action(frame_call, data, env)
  frame_call$drop.unused.levels <- FALSE
  frame_call$na.action <- stats::na.pass
  if (!is.null(xlev)) frame_call$xlev <- xlev
  frame <- eval(frame_call, env)
  # One count of every factor's codes (in parallel) finds both its missing codes and
  # its unused levels.
  counts <- factor_level_counts(frame, threads)
  if (has_missing(frame, counts)) {
    frame_terms <- attr(frame, "terms")
    frame <- na_fun(frame)
    attr(frame, "terms") <- frame_terms
    counts <- factor_level_counts(frame, threads)
  }
  drop_unused_levels(frame, counts, keep = names(xlev))
}

#' The fixed-effect design as the core reads it
#'
#' When every fixed term is a plain numeric column of the frame (`y ~ x + log(z)`), the
#' columns are the frame's own vectors and the intercept is implicit: no N x p model
#' matrix and no column of N ones is built, which at 10^7 rows is most of the serial
#' time of a fit. Any other term (a factor, an interaction, a matrix column such as
#' `poly(x, 2)`) goes through [model.matrix()]. Both give the same columns and names.
#' @return a list: `columns` (a double matrix, or a list of double vectors with `NULL`
#'   for the intercept), `names`, `intercept` (1-based position, 0 when none),
#'   `assign` (as model.matrix's attribute) and `contrasts`.
#' @noRd
fixed_effect_columns <- function(fixed_terms, frame, contrasts = NULL) {
  columns <- plain_numeric_columns(fixed_terms, frame)
  if (!is.null(columns)) {
    has_intercept <- attr(fixed_terms, "intercept") == 1L
    labels <- attr(fixed_terms, "term.labels")
    names <- c(if (has_intercept) "(Intercept)", labels)
    if (has_intercept) columns <- c(list(NULL), columns)
    return(list(columns = columns, names = names, intercept = if (has_intercept) 1L else 0L,
                assign = c(if (has_intercept) 0L, seq_along(labels)), contrasts = NULL))
  }
  X <- model.matrix(fixed_terms, frame, contrasts.arg = contrasts)
  if (!is.double(X)) storage.mode(X) <- "double"
  names <- if (ncol(X) > 0L) colnames(X) else character()
  list(columns = X, names = names, intercept = match("(Intercept)", names, nomatch = 0L),
       assign = attr(X, "assign"), contrasts = attr(X, "contrasts"))
}

# The frame's column of every fixed term, as double vectors, when each term is one
# numeric variable (as model.matrix would copy it); NULL otherwise.
plain_numeric_columns <- function(fixed_terms, frame) {
  if (any(attr(fixed_terms, "order") != 1L)) return(NULL)
  factors <- attr(fixed_terms, "factors")
  if (length(factors) == 0L) return(list())
  variables <- as.list(attr(fixed_terms, "variables"))[-1L]
  # model.frame names a column by its expression, backquoted only when it is a call.
  frame_names <- vapply(variables, function(v) {
    paste(deparse(v, width.cutoff = 500L, backtick = !is.symbol(v) && is.language(v)), collapse = " ")
  }, "")
  columns <- vector("list", ncol(factors))
  for (j in seq_len(ncol(factors))) {
    column <- frame[[frame_names[[which(factors[, j] > 0L)[[1L]]]]]]
    if (inherits(column, "AsIs")) column <- unclass(column)
    if (is.null(column) || !is.numeric(column) || is.object(column) || !is.null(dim(column))) {
      return(NULL)
    }
    columns[[j]] <- if (is.double(column)) column else as.double(column)
  }
  columns
}

# The na.action model.frame would use: the argument, else the data's own, else the
# option (as model.frame.default chooses it), as a function.
user_na_action <- function(frame_call, data, env) {
  na <- if (!is.null(frame_call$na.action)) {
    eval(frame_call$na.action, env)
  } else if (!is.null(attr(data, "na.action")) && !is.numeric(attr(data, "na.action"))) {
    attr(data, "na.action")
  } else {
    getOption("na.action", "na.omit")
  }
  if (is.character(na)) na <- get(na, mode = "function", envir = env)
  if (!is.function(na)) stop("`na.action` must be a function or the name of one", call. = FALSE)
  na
}

# The kinds of `data` fr_fit() reads: a data frame, a list of data frames or file paths
# (checked with the chunks), or NULL for the formula's environment. A matrix would
# otherwise be taken for file paths or chunks.
check_data_type <- function(data) {
  if (is.null(data) || is.data.frame(data)) return(invisible())
  if (is.matrix(data) || is.array(data)) {
    stop("`data` is a matrix; fr_fit() needs a data frame (as lm() does): use as.data.frame(data)",
         call. = FALSE)
  }
  if (is.environment(data)) {
    stop("`data` is an environment; fr_fit() needs a data frame (or, for a fit in chunks, ",
         "a list of data frames or a vector of file paths)", call. = FALSE)
  }
  if (!is.character(data) && !is.list(data)) {
    stop(sprintf(paste(
      "`data` must be a data frame, a list of data frames or a character vector of file",
      "paths, not %s"
    ), describe_type(data)), call. = FALSE)
  }
  invisible()
}

check_columns_exist <- function(frame_formula, data) {
  if (is.null(data)) return(invisible())
  if (!is.data.frame(data) && !is.list(data)) {
    stop("`data` must be a data frame", call. = FALSE)
  }
  unknown <- missing_variables(all.vars(frame_formula), data, environment(frame_formula))
  if (length(unknown) > 0L) {
    stop(sprintf(
      "%s %s not found in `data`",
      ngettext(length(unknown), "column", "columns"),
      paste0("'", unknown, "'", collapse = ", ")
    ), call. = FALSE)
  }
}

# The variables found neither in `data` nor, as data, in `env`. A variable missing from
# the data may come from the formula's environment, but only a vector (or a factor or
# matrix) there is data: a function (`sample`, `c`), a list or a fitted model is not, and
# the column is missing. With `n` (the rows of new data), an environment vector must also
# have length 1 or `n`: a vector of the data of the fit does not describe new rows.
missing_variables <- function(vars, data, env, n = NULL) {
  in_env <- vapply(vars, function(name) {
    obj <- get0(name, envir = env, inherits = TRUE)
    is_variable <- (is.atomic(obj) && !is.null(obj)) || is.factor(obj)
    is_variable && (is.null(n) || NROW(obj) %in% c(1L, n))
  }, logical(1))
  unique(vars[!vars %in% names(data) & !in_env])
}

# The rows per level of every factor column of the frame (by column position), and the
# number of its codes that are NA, counted by the core in parallel.
factor_level_counts <- function(frame, threads) {
  out <- vector("list", length(frame))
  for (j in which(vapply(frame, is.factor, logical(1)))) {
    out[[j]] <- fr_level_counts(frame[[j]], nlevels(frame[[j]]), threads)
  }
  out
}

# Whether any value of the frame is missing: for factors from their counts (anyNA() of a
# factor dispatches to is.na(), which allocates a logical vector as long as the data).
has_missing <- function(frame, counts) {
  for (j in seq_along(frame)) {
    missing <- if (is.null(counts[[j]])) anyNA(frame[[j]]) else counts[[j]]$other > 0
    if (missing) return(TRUE)
  }
  FALSE
}

# Names a per-observation vector by the model frame's row names, unless those are the
# automatic 1..n (not materialised for large data).
name_by_rows <- function(x, frame) {
  if (.row_names_info(frame) > 0L) names(x) <- rownames(frame)
  x
}

# `x` named by the frame's row names, automatic ones ("1", "2", ...) included, as glmer
# names its fitted values and residuals: made when a method is called, not kept in the fit.
name_rows_now <- function(x, frame) {
  if (!is.null(frame) && length(x) == nrow(frame)) names(x) <- rownames(frame)
  x
}

# model.frame() turns the data's automatic row names 1..n into the compact but "set" form
# c(NA, n), which name_by_rows() would then materialise as n strings (about 70 bytes a
# row, most of a large fit's memory): such a frame gets automatic row names back, and
# the methods name their results when called (name_rows_now()). Row names that are not
# 1..n (rows dropped for missing values, the user's own) stay.
automatic_row_names <- function(frame) {
  stored <- .row_names_info(frame, 0L)
  if (is.integer(stored) && length(stored) == 2L && is.na(stored[[1L]]) && stored[[2L]] == nrow(frame)) {
    attr(frame, "row.names") <- .set_row_names(nrow(frame))
  }
  frame
}

# NaN would be dropped as missing by na.omit; it is more often a computation gone wrong.
check_no_nan <- function(frame_formula, data) {
  if (is.null(data)) return(invisible())
  for (v in intersect(all.vars(frame_formula), names(data))) {
    column <- data[[v]]
    if (is.double(column) && anyNA(column)) {
      rows <- which(is.nan(column))
      if (length(rows) > 0L) {
        stop(sprintf(
          "column '%s' has NaN values (rows %s); remove or replace them (NA values are dropped per na.action)",
          v, format_rows(rows)
        ), call. = FALSE)
      }
    }
  }
}

response_vector <- function(y, name) {
  if (is.null(y)) {
    stop("the formula has no response", call. = FALSE)
  }
  if (is.matrix(y) && ncol(y) != 1L) {
    stop(sprintf("the response '%s' must be a numeric vector, not a matrix", name), call. = FALSE)
  }
  if (!is.numeric(y) || is.factor(y)) {
    stop(sprintf("the response '%s' must be numeric, not %s", name, describe_type(y)),
         call. = FALSE)
  }
  y <- as.vector(y)
  if (!is.double(y)) y <- as.double(y)
  # The sum is finite when every value is (it can also overflow, which the exact check
  # below then clears); one pass, with no vector as long as the data.
  if (is.finite(sum(y))) return(y)
  bad <- which(!is.finite(y))
  if (length(bad) > 0L) {
    stop(sprintf("the response '%s' has non-finite values (%s in rows %s)",
                 name, paste(unique(y[bad]), collapse = ", "), format_rows(bad)),
         call. = FALSE)
  }
  y
}

check_finite_columns <- function(fixed) {
  columns <- fixed$columns
  if (is.matrix(columns)) {
    # As in response_vector(): finite column sums clear the common case in one pass.
    if (all(is.finite(colSums(columns)))) return(invisible())
    bad <- which(colSums(!is.finite(columns)) > 0L)
    column_values <- function(j) columns[, j]
  } else {
    finite <- vapply(columns, function(v) is.null(v) || is.finite(sum(v)), logical(1))
    if (all(finite)) return(invisible())
    bad <- which(!finite)
    bad <- bad[vapply(columns[bad], function(v) !all(is.finite(v)), logical(1))]
    column_values <- function(j) columns[[j]]
  }
  if (length(bad) == 0L) return(invisible())
  rows <- which(!is.finite(column_values(bad[[1L]])))
  stop(sprintf("the fixed-effect column '%s' has non-finite values (rows %s)",
               fixed$names[[bad[[1L]]]], format_rows(rows)), call. = FALSE)
}

#' One factor per random term, levels as observed (unused levels dropped), any
#' grouping type treated as a factor; interactions get lme4-style labels "b:a".
#' @noRd
grouping_factors <- function(random, frame, check = TRUE) {
  flist <- lapply(random, function(term) {
    parts <- lapply(term$factors, function(expr) {
      as_grouping_factor(frame[[deparse1(expr)]], deparse1(expr), term$label)
    })
    if (length(parts) == 1L) parts[[1L]] else interaction_factor(parts)
  })
  names(flist) <- vapply(random, `[[`, "", "label")
  if (check) check_grouping_sizes(vapply(flist, nlevels, 1L), nrow(frame), names(flist))
  # lme4 lists terms by decreasing number of levels; order() is stable for ties.
  flist[order(-vapply(flist, nlevels, 1L))]
}

# A random term needs at least two levels, and fewer levels than observations.
check_grouping_sizes <- function(n_levels, n, labels) {
  for (k in seq_along(n_levels)) {
    if (n_levels[[k]] < 2L) {
      stop(sprintf("the grouping factor of %s has a single level; a random effect needs at least two",
                   term_label(labels[[k]])), call. = FALSE)
    }
    if (n_levels[[k]] >= n) {
      stop(sprintf(
        "the grouping factor of %s has as many levels (%d) as there are observations, so its variance cannot be separated from the residual variance",
        term_label(labels[[k]]), n_levels[[k]]
      ), call. = FALSE)
    }
  }
}

# Frame columns: factors there have had their unused levels dropped already. An NA level
# (factor(x, exclude = NULL)) is refused: NA means missing, and its rows would otherwise
# form a group that ranef() cannot name and predict() cannot find.
as_grouping_factor <- function(x, name, label) {
  if (!is.factor(x)) return(factor(x))
  if (anyNA(levels(x))) {
    stop(sprintf(paste(
      "the grouping variable '%s' of %s has NA as a level (as factor(x, exclude = NULL)",
      "makes); give the missing values a level name such as \"(missing)\", or use factor(x)",
      "so that their rows are treated as missing (per na.action)"
    ), name, term_label(label)), call. = FALSE)
  }
  x
}

# The frame with unused levels dropped from every factor column (as lm's
# drop.unused.levels = TRUE does), keeping its attributes; `counts` from
# factor_level_counts().
drop_unused_levels <- function(frame, counts, keep = NULL) {
  for (j in which(vapply(frame, is.factor, logical(1)) & !names(frame) %in% keep)) {
    frame[[j]] <- drop_unused_codes(frame[[j]], counts[[j]]$counts > 0)
  }
  frame
}

# droplevels() for a factor, from which of its levels are used: O(n) integer work, no
# strings.
drop_unused_codes <- function(f, used = tabulate(f, nbins = nlevels(f)) > 0L) {
  if (all(used)) return(f)
  if (!is.null(attr(f, "contrasts"))) return(droplevels(f))
  new_code <- cumsum(used)
  out <- new_code[unclass(f)]
  attributes(out) <- attributes(f)
  attr(out, "levels") <- levels(f)[used]
  out
}

# The observed combinations of several factors, one level each. Which rows share a level
# is decided by the factors' integer codes only (see tuple_codes()), never by labels, which
# can coincide ("x:y" + "z" and "x" + "y:z"). The levels follow the factors' level order
# (the first factor varying slowest, as `a:b` orders them) and are labelled "x:z" as lme4
# labels them (see interaction_labels()); every level's component labels are kept as
# attribute "components" (one character vector per factor), by which predict() and fits
# in chunks match the levels.
interaction_factor <- function(parts) {
  code <- tuple_codes(lapply(parts, unclass))
  first <- attr(code, "first")
  components <- lapply(parts, function(f) levels(f)[unclass(f)[first]])
  structure(as.vector(code), levels = interaction_labels(components), class = "factor",
            components = components)
}

# Dense integer codes 1..m of the distinct tuples of several integer code vectors (NA where
# any code is NA), in the sorted order of the tuples. The codes are combined two at a time
# and re-coded densely after each step, so they stay exact integers however many levels the
# factors have (a product of codes in doubles is inexact above 2^53). Attribute "first":
# a row holding each tuple, in code order.
tuple_codes <- function(codes) {
  code <- as.integer(codes[[1L]])
  if (length(codes) == 1L) codes <- c(codes, list(integer(length(code))))
  for (other in codes[-1L]) code <- pair_codes(code, as.integer(other))
  code
}

pair_codes <- function(a, b) {
  sorted <- order(a, b, method = "radix", na.last = NA)  # rows with an NA are left out
  m <- length(sorted)
  sa <- a[sorted]
  sb <- b[sorted]
  starts <- if (m > 0L) c(TRUE, sa[-1L] != sa[-m] | sb[-1L] != sb[-m]) else logical()
  out <- rep(NA_integer_, length(a))
  out[sorted] <- cumsum(starts)
  structure(out, first = sorted[starts])
}

# Labels of interaction levels from their component labels: joined by ":", as lme4 shows
# them. When two levels would get the same label (a component label holding ":"), the
# components holding ":" or a backquote are backquoted in that term, so that every label
# names one level unambiguously.
interaction_labels <- function(components) {
  labels <- do.call(paste, c(components, sep = ":"))
  if (!anyDuplicated(labels)) return(labels)
  quoted <- lapply(components, function(x) {
    ifelse(grepl("[:`]", x), paste0("`", gsub("`", "\\\\`", x), "`"), x)
  })
  do.call(paste, c(quoted, sep = ":"))
}

# For each tuple of `x` (a list of vectors, one per component), the position of the same
# tuple in `table` (a list of as many vectors), or NA; components are compared as labels.
match_tuples <- function(x, table) {
  n_table <- length(table[[1L]])
  codes <- Map(function(t, v) {
    all <- c(as.character(t), as.character(v))
    match(all, all, incomparables = NA)
  }, table, x)
  code <- tuple_codes(codes)
  match(code[-seq_len(n_table)], code[seq_len(n_table)], incomparables = NA)
}

term_label <- function(label) sprintf("(1 | %s)", label)

format_rows <- function(rows, max = 5L) {
  shown <- paste(utils::head(rows, max), collapse = ", ")
  if (length(rows) > max) paste0(shown, ", ...") else shown
}

describe_type <- function(x) {
  if (is.factor(x)) "a factor" else if (is.logical(x)) "logical" else class(x)[1L]
}
