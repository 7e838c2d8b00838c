# size(g): the group size N_i of Matloff's Full Randomness models as a covariate.
# fr_fit() computes it on the rows of the fit (after subset and NA handling), and
# predict() looks the sizes of the fit up for new data.

#' Group sizes as a covariate
#'
#' In the fixed part of an [fr_fit()] formula, `size(g)` is the number of
#' observations in the observation's level of `g`: with `rating ~ size(user) +
#' (1 | user)` a user who rated 40 movies has the value 40 in each of their rows. This
#' is the model (3) of Matloff's Full Randomness paper, `Y_ij = c1 + c2 N_i + a_i +
#' e_ij`, which asks whether users who rate many movies become jaded and rate lower.
#'
#' In a fit the counts are taken over the rows the fit uses, after `subset` and the
#' removal of rows with missing values, and `size()` may be transformed like any
#' variable (`log(size(user))`, `I(size(user)^2)`). With the default method it is an
#' ordinary covariate; with `method = "fr"` and `g` the grouping of the random term,
#' the equations treat it as part of the group-size effect (see [fr_fit()]).
#'
#' [predict()][predict.fr_fit] on new data uses the counts of the fit for levels seen
#' in the fit, not the counts in `newdata`. A level not seen in the fit has, by this
#' definition, 0 observations, and gets `size() = 0`: its prediction extrapolates the
#' size effect to a group with no data, so it is better supplied explicitly when a
#' group size for new levels is known.
#'
#' @param x a grouping variable (factor, character, integer, ...).
#' @param counts optional named vector of counts per level (the counts of the fit, as
#'   `predict()` passes them); levels not among its names count 0.
#' @return a numeric vector as long as `x`: the size of each element's level, `NA`
#'   where `x` is `NA`.
#' @examples
#' size(c("a", "b", "a", NA, "a"))
#' size(c("a", "c"), counts = c(a = 3, b = 1))
#' if (requireNamespace("lme4", quietly = TRUE)) {
#'   # Do subjects with more nights of data react differently? (Here all have 10.)
#'   unique(size(lme4::sleepstudy$Subject))
#' }
#' @export
size <- function(x, counts = NULL) {
  if (is.null(counts)) {
    # NaN is missing too, as is.na() says, not a group of its own.
    code <- if (is.factor(x)) as.integer(x) else match(x, unique(x), incomparables = c(NA, NaN))
    n <- tabulate(code, nbins = max(0L, code, na.rm = TRUE))
    return(as.numeric(n[code]))
  }
  if (!is.numeric(counts) || is.null(names(counts))) {
    stop("`counts` must be a named numeric vector of counts per level", call. = FALSE)
  }
  out <- unname(counts[match(as.character(x), names(counts))])
  out[is.na(out) & !is.na(x)] <- 0
  as.numeric(out)
}

#' The calls to size() in an expression (a fixed-effect formula's right-hand side)
#' @noRd
find_size_calls <- function(expr) {
  if (!is.call(expr)) return(list())
  if (is_size_call(expr)) {
    if (length(expr) != 2L || !is.null(names(expr)) && any(nzchar(names(expr)))) {
      stop("size() in a formula takes one grouping variable, as in size(user); found ",
           deparse1(expr), call. = FALSE)
    }
    return(list(expr))
  }
  found <- unlist(lapply(as.list(expr)[-1L], find_size_calls), recursive = FALSE)
  found[!duplicated(vapply(found, deparse1, ""))]
}

is_size_call <- function(expr) {
  is.call(expr) && (identical(expr[[1L]], quote(size)) || identical(expr[[1L]], quote(fullrandom::size)))
}

#' Replace the size() columns of a model frame by the counts over its rows, and
#' record those counts in the frame's "predvars" so that new data get the counts of
#' the fit.
#' @param frame the model frame (which holds each size() argument as a variable).
#' @param size_calls the calls from find_size_calls().
#' @param size_counts `NULL`, or per grouping variable (by name) the rows per level of
#'   the whole data, for a chunk of it.
#' @noRd
recount_sizes <- function(frame, size_calls, size_counts = NULL) {
  if (length(size_calls) == 0L) return(frame)
  frame_terms <- attr(frame, "terms")
  predvars <- attr(frame_terms, "predvars")
  variables <- vapply(as.list(attr(frame_terms, "variables"))[-1L], deparse1, "")
  for (call in size_calls) {
    groups <- frame[[deparse1(call[[2L]])]]
    # A chunk's sizes are those of the whole data, when given.
    n <- size(groups, counts = size_counts[[deparse1(call[[2L]])]])
    frame[[deparse1(call)]] <- n
    first <- !duplicated(groups)
    counts <- stats::setNames(n[first], as.character(groups[first]))
    at <- match(deparse1(call), variables)
    if (!is.na(at)) predvars[[at + 1L]] <- call("size", call[[2L]], counts = counts)
  }
  # `size` resolved in the package, whatever the caller has attached.
  attr(frame_terms, "predvars") <- rebind_size(predvars)
  attr(frame, "terms") <- frame_terms
  frame
}

rebind_size <- function(expr) {
  if (!is.call(expr)) return(expr)
  if (identical(expr[[1L]], quote(size))) expr[[1L]] <- quote(fullrandom::size)
  as.call(lapply(as.list(expr), rebind_size))
}

#' Columns of a model matrix that are functions of the group size of `grouping`
#' only: those of terms whose every variable is built from size(<grouping>).
#' @param assign the model matrix's "assign" attribute (the term of every column).
#' @param fixed_terms its terms.
#' @param grouping the random term's grouping expression.
#' @return 1-based column indices.
#' @noRd
size_columns_of <- function(assign, fixed_terms, grouping) {
  factors <- attr(fixed_terms, "factors")
  if (length(factors) == 0L) return(integer())
  target <- deparse1(grouping)
  of_size_only <- vapply(rownames(factors), function(v) {
    expr <- str2lang(v)
    calls <- find_size_calls(expr)
    length(calls) > 0L &&
      all(vapply(calls, function(cl) deparse1(cl[[2L]]) == target, logical(1))) &&
      all(all.vars(expr) %in% all.vars(grouping))
  }, logical(1))
  size_terms <- which(colSums(factors[!of_size_only, , drop = FALSE] > 0) == 0L)
  which(assign %in% size_terms)
}
