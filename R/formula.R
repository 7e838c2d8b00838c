# Parsing of lme4-style model formulas such as
#   y ~ service + (1 | s) + (1 | d) + (1 | dept)
# into a fixed-effects formula, a list of random-intercept terms and a
# formula from which a single model frame can be built.
#
# Only random intercepts are supported: every bar term must have exactly `1`
# on its left-hand side. Written from scratch using base R and stats only.

#' Parse a mixed-model formula
#'
#' @param formula A two-sided formula with at least one random-intercept term
#'   `(1 | g)`, written at the top level of the right-hand side and combined
#'   with the other terms by `+`. Groupings may be nested (`a/b`) or crossed
#'   interactions (`a:b`).
#' @return A list with elements
#'   * `response`: the left-hand side expression (name or call);
#'   * `fixed`: formula `response ~ fixed terms` (bar terms removed; `~ 1`
#'     when nothing is left);
#'   * `random`: list with one element per expanded random-intercept term,
#'     each a list of `label` (character, e.g. `"b:a"`), `factors` (list of
#'     grouping expressions in label order) and `term` (deparsed bar term);
#'   * `size_calls`: the calls to [size()] in the fixed part (list);
#'   * `frame_formula`: formula `response ~ ...` naming every expression
#'     needed to build the model frame.
#'   Both formulas carry the environment of `formula`.
#' @noRd
parse_fr_formula <- function(formula) {
  if (!inherits(formula, "formula")) {
    stop("`formula` must be a formula, e.g. y ~ x + (1 | g)", call. = FALSE)
  }
  if (length(formula) != 3L || is_empty_symbol(formula[[2L]])) {
    stop("the formula needs a response on its left-hand side, ",
         "e.g. y ~ x + (1 | g)", call. = FALSE)
  }
  response <- formula[[2L]]
  env <- environment(formula)

  # Split the right-hand side into the fixed part and the bar terms.
  split <- split_random_terms(formula[[3L]])
  if (length(split$bars) == 0L) {
    stop("the formula has no random-effects term such as (1 | g); ",
         "use lm() for a model with fixed effects only", call. = FALSE)
  }

  random <- unlist(lapply(split$bars, expand_bar_term), recursive = FALSE)
  check_no_duplicate_groupings(random)

  # A formula without any fixed term still has an intercept, as in lm().
  fixed_rhs <- if (is.null(split$fixed)) 1 else split$fixed
  # size(g) needs g itself in the frame, to be counted after rows are dropped.
  size_calls <- find_size_calls(fixed_rhs)

  list(
    response = response,
    fixed = make_formula(response, fixed_rhs, env),
    random = random,
    size_calls = size_calls,
    frame_formula = make_formula(
      response, frame_rhs(fixed_rhs, random, c(lapply(size_calls, `[[`, 2L),
                                               slope_variables(random))), env
    )
  )
}

#' Labels of the random-effect terms of a parsed formula
#'
#' @param parsed Result of [parse_fr_formula()].
#' @return Character vector, e.g. `c("a", "b:a")`.
#' @noRd
fr_formula_labels <- function(parsed) {
  vapply(parsed$random, function(term) term$label, character(1))
}

# ---------------------------------------------------------------------------
# Splitting the right-hand side
# ---------------------------------------------------------------------------

#' Separate top-level bar terms from the fixed part of a right-hand side
#'
#' Walks only through the additive structure (`+`, `-`, grouping
#' parentheses), because that is where a bar term may legitimately appear;
#' anything else is a fixed-effects term and must not contain a bar term.
#'
#' @param expr Right-hand side expression.
#' @return List with `fixed` (the expression without bar terms, or `NULL` if
#'   nothing is left) and `bars` (list of bar calls, parentheses stripped).
#' @noRd
split_random_terms <- function(expr) {
  bars <- list()

  walk <- function(expr) {
    bar <- as_bar_call(expr)
    if (!is.null(bar)) {
      bars[[length(bars) + 1L]] <<- bar
      return(NULL)
    }
    if (is_call_to(expr, "+")) {
      if (length(expr) == 2L) {  # unary plus
        inner <- walk(expr[[2L]])
        return(if (is.null(inner)) NULL else call("+", inner))
      }
      return(join_terms("+", walk(expr[[2L]]), walk(expr[[3L]])))
    }
    if (is_call_to(expr, "-")) {
      # What is subtracted is a fixed-effects removal such as `- 1`; a bar
      # term cannot be removed from a model it is not part of.
      removed <- expr[[length(expr)]]
      nested <- find_nested_bar(removed)
      if (!is.null(nested)) {
        stop("a random-effects term cannot be removed with '-': ",
             deparse_bar(nested), call. = FALSE)
      }
      if (length(expr) == 2L) return(expr)  # unary minus, e.g. -1
      kept <- walk(expr[[2L]])
      return(if (is.null(kept)) call("-", removed) else call("-", kept, removed))
    }
    if (is_call_to(expr, "(")) {
      # Plain grouping parentheses, e.g. (x + (1 | g)): look inside.
      inner <- walk(expr[[2L]])
      return(if (is.null(inner)) NULL else call("(", inner))
    }
    nested <- find_nested_bar(expr)
    if (!is.null(nested)) {
      stop("random-effects terms must be added at the top level of the ",
           "formula, e.g. y ~ x + (1 | g); found ", deparse_bar(nested),
           " inside ", deparse_expr(expr), call. = FALSE)
    }
    expr
  }

  fixed <- walk(expr)
  list(fixed = fixed, bars = bars)
}

#' Combine two optional terms with a binary operator
#' @noRd
join_terms <- function(op, left, right) {
  if (is.null(left)) return(right)
  if (is.null(right)) return(left)
  call(op, left, right)
}

#' Return the `|`/`||` call if `expr` is a bar term, else `NULL`
#'
#' Any number of enclosing parentheses is allowed: `(1 | g)`, `((1 | g))`,
#' and a bare top-level `1 | g`.
#' @noRd
as_bar_call <- function(expr) {
  expr <- strip_parens(expr)
  if (is_call_to(expr, "|") || is_call_to(expr, "||")) expr else NULL
}

#' First parenthesised bar term found anywhere inside `expr`, else `NULL`
#'
#' Only parenthesised bars count, so that a logical or inside a fixed term,
#' e.g. `I(a | b)`, stays a fixed-effects expression.
#' @noRd
find_nested_bar <- function(expr) {
  if (!is.call(expr)) return(NULL)
  if (is_call_to(expr, "(")) {
    bar <- as_bar_call(expr)
    if (!is.null(bar)) return(bar)
  }
  for (arg in as.list(expr)[-1L]) {
    if (is_empty_symbol(arg)) next
    found <- find_nested_bar(arg)
    if (!is.null(found)) return(found)
  }
  NULL
}

# ---------------------------------------------------------------------------
# Expanding one bar term
# ---------------------------------------------------------------------------

#' Does a bar term have anything but `1` on its left, as in `(x | g)` or `(1 + x | g)`?
#' @noRd
has_random_slope <- function(bar) {
  lhs <- strip_parens(bar[[2L]])
  !(identical(lhs, 1) || identical(lhs, 1L))
}

#' Turn one bar call into random-intercept term descriptions
#'
#' @param bar A `|` or `||` call.
#' @return List of terms, each `list(label, factors, term)`; nested
#'   groupings give several terms.
#' @noRd
expand_bar_term <- function(bar) {
  term_text <- deparse_bar(bar)

  # `(1 || g)` is accepted: with one intercept there is no correlation to drop.
  # Random slopes: the term keeps its left-hand side (`lhs`); `(x || g)` becomes one
  # term per column, `(1 | g) + (0 + x | g)`, as lme4 expands it (see R/slopes.R).
  slope_lhs <- if (has_random_slope(bar)) slope_term_sides(bar, term_text)
  groupings <- expand_grouping(bar[[3L]], term_text)
  if (!is.null(slope_lhs)) {
    return(unlist(lapply(groupings, function(factors) {
      labels <- vapply(factors, deparse_expr, character(1))
      lapply(slope_lhs, function(lhs) {
        list(label = paste(labels, collapse = ":"), factors = factors, term = term_text, lhs = lhs)
      })
    }), recursive = FALSE))
  }
  lapply(groupings, function(factors) {
    labels <- vapply(factors, deparse_expr, character(1))
    if (anyDuplicated(labels)) {
      stop("the grouping in ", term_text, " uses '",
           labels[anyDuplicated(labels)], "' more than once", call. = FALSE)
    }
    list(label = paste(labels, collapse = ":"), factors = factors,
         term = term_text)
  })
}

#' Expand a grouping expression into lists of component factors
#'
#' `a` gives `list(list(a))`; `a:b` one term with components a, b; `a/b`
#' means "a, and b within a", i.e. the terms a and b:a. The nested term lists
#' the inner factor first, which is how lme4 labels it (e.g. "cask:batch").
#'
#' @param expr Grouping expression (right-hand side of the bar).
#' @param term_text Deparsed bar term, for error messages.
#' @return List of terms, each a list of component expressions.
#' @noRd
expand_grouping <- function(expr, term_text) {
  if (is_empty_symbol(expr)) {
    stop("the random-effects term ", term_text,
         " has an empty grouping factor", call. = FALSE)
  }
  expr <- strip_parens(expr)
  if (is.name(expr)) return(list(list(expr)))
  if (!is.call(expr)) {
    stop("the grouping factor in ", term_text, " must be a variable or an ",
         "expression, not the constant ", deparse_expr(expr), call. = FALSE)
  }

  if (is_call_to(expr, "/") && length(expr) == 3L) {
    outer_terms <- expand_grouping(expr[[2L]], term_text)
    inner_terms <- expand_grouping(expr[[3L]], term_text)
    # The last outer term contains every outer factor, so it is the context
    # in which each inner term is nested.
    context <- outer_terms[[length(outer_terms)]]
    nested <- lapply(inner_terms, function(inner) c(inner, context))
    return(c(outer_terms, nested))
  }

  if (is_call_to(expr, ":") && length(expr) == 3L) {
    left <- expand_grouping(expr[[2L]], term_text)
    right <- expand_grouping(expr[[3L]], term_text)
    if (length(left) != 1L || length(right) != 1L) {
      stop("nesting with '/' inside an interaction ':' is not supported: ",
           term_text, call. = FALSE)
    }
    return(list(c(left[[1L]], right[[1L]])))
  }

  if (is_call_to(expr, "+") || is_call_to(expr, "*") ||
      is_call_to(expr, "-") || is_call_to(expr, "|") ||
      is_call_to(expr, "||")) {
    stop("the grouping in ", term_text, " must be a factor, an interaction ",
         "a:b or a nesting a/b; write several groupings as separate terms, ",
         "e.g. (1 | a) + (1 | b)", call. = FALSE)
  }

  # Any other call, e.g. factor(x), is one grouping expression.
  list(list(expr))
}

#' Stop if two expanded terms describe the same grouping
#'
#' `a:b` and `b:a` define the same groups, so components are compared as sets.
#' @noRd
check_no_duplicate_groupings <- function(random) {
  keys <- vapply(random, function(term) {
    parts <- vapply(term$factors, deparse_expr, character(1))
    key <- paste(sort(parts), collapse = ":")
    if (is.null(term$lhs)) key else paste(key, deparse_expr(term$lhs))
  }, character(1))
  duplicated_at <- which(duplicated(keys))
  if (length(duplicated_at) > 0L) {
    stop("the random-effects term for '",
         random[[duplicated_at[1L]]]$label, "' appears more than once",
         call. = FALSE)
  }
  invisible(NULL)
}

# ---------------------------------------------------------------------------
# Building the output formulas
# ---------------------------------------------------------------------------

#' Right-hand side naming every expression the model frame needs
#'
#' The fixed part is kept as written (model.frame() collects its variables,
#' including offsets); each distinct grouping component is then added so that
#' NA handling drops the same rows for fixed and random parts.
#' @noRd
frame_rhs <- function(fixed_rhs, random, extra = list()) {
  components <- extra
  for (term in random) {
    for (component in term$factors) {
      already <- any(vapply(components, identical, logical(1), component))
      if (!already) components[[length(components) + 1L]] <- component
    }
  }
  rhs <- if (is_intercept_only(fixed_rhs)) NULL else fixed_rhs
  for (component in components) rhs <- join_terms("+", rhs, component)
  rhs
}

#' Does an expression only set the intercept, like `1`, `0`, `-1`, `0 + 1`?
#' @noRd
is_intercept_only <- function(expr) {
  if (is.numeric(expr)) return(TRUE)
  if (is_call_to(expr, "+") || is_call_to(expr, "-") ||
      is_call_to(expr, "(")) {
    args <- as.list(expr)[-1L]
    return(all(vapply(args, is_intercept_only, logical(1))))
  }
  FALSE
}

#' Build `lhs ~ rhs` as a formula with the given environment
#' @noRd
make_formula <- function(lhs, rhs, env) {
  structure(call("~", lhs, rhs), class = "formula", .Environment = env)
}

# ---------------------------------------------------------------------------
# Small expression helpers
# ---------------------------------------------------------------------------

#' Is `expr` a call to the function named `name`?
#' @noRd
is_call_to <- function(expr, name) {
  is.call(expr) && identical(expr[[1L]], as.name(name))
}

#' Remove any number of enclosing parentheses
#' @noRd
strip_parens <- function(expr) {
  while (is_call_to(expr, "(") && length(expr) == 2L) expr <- expr[[2L]]
  expr
}

#' Is `expr` the empty symbol (a missing argument)?
#' @noRd
is_empty_symbol <- function(expr) {
  is.name(expr) && identical(as.character(expr), "")
}

#' Deparse an expression to a single string
#' @noRd
deparse_expr <- function(expr) {
  paste(deparse(expr, width.cutoff = 500L), collapse = " ")
}

#' Deparse a bar call in its usual parenthesised form, e.g. "(1 | a/b)"
#' @noRd
deparse_bar <- function(bar) {
  deparse_expr(call("(", bar))
}

# ---------------------------------------------------------------------------
# `.` in the fixed part
# ---------------------------------------------------------------------------

#' Replace `.` in the fixed part of a formula by the columns of the data
#'
#' As in [lm()], `.` stands for every column of `data` not otherwise used: here all
#' columns except those of the response and of the grouping variables, so that
#' `y ~ . + (1 | g)` does not also fit `g` as a fixed effect.
#' @param formula the model formula.
#' @param data the user's `data`.
#' @return the formula, with `.` replaced by `(a + b + ...)`.
#' @noRd
expand_dot <- function(formula, data) {
  if (!inherits(formula, "formula") || length(formula) != 3L ||
      !"." %in% all.vars(formula[[3L]])) {
    return(formula)
  }
  split <- split_random_terms(formula[[3L]])
  grouping_vars <- unique(unlist(lapply(split$bars, function(bar) all.vars(bar[[3L]]))))
  if ("." %in% grouping_vars || "." %in% all.vars(formula[[2L]])) {
    stop("`.` may stand only for fixed-effect columns, as in y ~ . + (1 | g); ",
         "name the response and the grouping variables", call. = FALSE)
  }
  if (!is.data.frame(data)) {
    stop("`.` in the formula stands for the columns of `data`, which must then be a ",
         "data frame; write the fixed effects out for a fit from a list of data frames ",
         "or from files", call. = FALSE)
  }
  columns <- setdiff(names(data), c(all.vars(formula[[2L]]), grouping_vars))
  replacement <- if (length(columns) == 0L) {
    1
  } else if (length(columns) == 1L) {
    as.name(columns)
  } else {
    call("(", Reduce(function(a, b) call("+", a, b), lapply(columns, as.name)))
  }
  formula[[3L]] <- replace_dot(formula[[3L]], replacement)
  formula
}

replace_dot <- function(expr, replacement) {
  if (identical(expr, as.name("."))) return(replacement)
  if (!is.call(expr)) return(expr)
  as.call(lapply(as.list(expr), replace_dot, replacement = replacement))
}
