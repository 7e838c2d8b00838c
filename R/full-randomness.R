# Matloff's Full Randomness estimator (method = "fr"): the checks that keep it to the
# models of the paper. The estimator itself is in the Rust core (module `fr`); its
# documentation is in ?fr_fit.

# Matloff's estimator is for models (2)/(3), one random intercept, and (7)/(10), two
# crossed ones. Random slopes are
# caught before the general parser, whose message would not mention the method.
check_fr_formula <- function(formula) {
  if (!inherits(formula, "formula") || length(formula) != 3L) return(invisible())
  bars <- split_random_terms(formula[[3L]])$bars
  slopes <- Filter(has_random_slope, bars)
  if (length(slopes) > 0L) {
    stop(sprintf(
      "method = \"fr\" (Matloff's Full Randomness estimator) fits one random intercept (1 | g) or two crossed ones; it has no random slopes, and the formula has %s",
      paste(vapply(slopes, deparse_bar, ""), collapse = ", ")
    ), call. = FALSE)
  }
}

check_fr_terms <- function(random) {
  if (length(random) == 1L) return(invisible())
  labels <- vapply(random, `[[`, "", "label")
  interactions <- labels[vapply(random, function(term) length(term$factors) > 1L, logical(1))]
  if (length(random) == 2L && length(interactions) == 0L) return(invisible())
  if (length(random) == 2L) {
    stop(sprintf(paste(
      "method = \"fr\" (Matloff's Full Randomness estimator) fits one random intercept or two",
      "crossed ones (model 7, (1 | user) + (1 | item)); the formula has %s, a nested term, which",
      "its derivation does not cover; use method = \"moments\" for nested terms"
    ), paste(term_label(interactions), collapse = ", ")), call. = FALSE)
  }
  stop(sprintf(
    paste("method = \"fr\" (Matloff's Full Randomness estimator) fits one random intercept (1 | g) or two",
          "crossed ones, but the formula has %d random terms: %s; use method = \"moments\" for three or more terms"),
    length(labels), paste(term_label(labels), collapse = ", ")
  ), call. = FALSE)
}

# Whether `method` is Matloff's estimator: "fr", or the core's names of its variants:
# "fr_shared" (fr_fit(fr_shared = TRUE), the crossed equations with the shared-level
# correction of eq. 27), "fr_centred" (fr_centred = TRUE, the equations of the
# least-squares residuals) and "fr_shared_centred" (both).
is_fr <- function(method) method %in% c("fr", "fr_shared", "fr_centred", "fr_shared_centred")

# The core's name of Matloff's estimator with these options.
fr_core_name <- function(shared, centred) {
  paste0("fr", if (isTRUE(shared)) "_shared", if (isTRUE(centred)) "_centred")
}

# The core's method for fr_fit(method, fr_shared, fr_centred).
core_fr_method <- function(method, fr_shared, n_terms, fr_centred = FALSE) {
  for (name in c("fr_shared", "fr_centred")) {
    value <- get(name)
    if (!is.logical(value) || length(value) != 1L || is.na(value)) {
      stop(sprintf("`%s` must be TRUE or FALSE", name), call. = FALSE)
    }
  }
  if (fr_centred && method != "fr") {
    stop(sprintf(paste("`fr_centred = TRUE` applies the Full Randomness equations (method = \"fr\") to",
                       "the least-squares residuals; this fit has method = \"%s\""), method), call. = FALSE)
  }
  if (fr_shared && (method != "fr" || n_terms != 2L)) {
    stop(paste("`fr_shared = TRUE` corrects the Full Randomness equations of two crossed terms",
               "(method = \"fr\" with (1 | user) + (1 | item)); this fit has",
               if (method != "fr") sprintf("method = \"%s\"", method) else "one random term"),
         call. = FALSE)
  }
  if (method == "fr") fr_core_name(fr_shared, fr_centred) else method
}

# The grouping variables whose size() columns Matloff's models (3) and (10) use: those of
# the random terms with one grouping variable (an interaction a:b has no size() of its own).
fr_size_groupings <- function(random) {
  groupings <- lapply(random, `[[`, "factors")
  unlist(lapply(groupings, function(g) if (length(g) == 1L) deparse1(g[[1L]])))
}

# The counts of a crossed FR fit (model 7) as the fit keeps them: the distributions of
# the row counts N_i and column counts M_j (named by term), the repeat counts kappa and
# the mean shared-level counts tau of eq. 27, and whether the equations used tau.
fr_crossed_counts <- function(fr, labels) {
  crossed <- fr$crossed
  sizes <- rbind(
    c(groups = fr$n_groups, mean = fr$size_mean, variance = fr$size_variance),
    c(groups = crossed$n_columns, mean = crossed$column_mean, variance = crossed$column_variance)
  )
  rownames(sizes) <- labels
  list(
    crossed = TRUE,
    shared = fr$shared,
    count_distributions = sizes,
    n_cells = crossed$n_cells,
    repeats = stats::setNames(c(crossed$row_repeats, crossed$column_repeats), labels),
    shared_levels = stats::setNames(c(crossed$rows_shared, crossed$columns_shared), labels)
  )
}

# The header lines of a crossed FR fit: the count distributions of both factors (N_i of
# the rows, M_j of the columns), the repeated cells and, with fr_shared, the shared levels.
print_fr_crossed_counts <- function(fr) {
  sizes <- fr$count_distributions
  for (k in seq_len(nrow(sizes))) {
    cat(sprintf("Counts of %s: %d levels, mean %s, variance %s\n", rownames(sizes)[[k]],
                as.integer(sizes[k, "groups"]), format(sizes[k, "mean"], digits = 5),
                format(sizes[k, "variance"], digits = 5)))
  }
  mean_counts <- sizes[, "mean"]
  repeated <- any(abs(fr$repeats - mean_counts) > 1e-9 * mean_counts)
  cat(sprintf("Cells: %s observed%s\n", format(fr$n_cells, big.mark = ","),
              if (repeated) " (some hold several observations)" else ", each once"))
  if (isTRUE(fr$shared)) {
    cat(sprintf("Shared levels (eq. 27), mean per pair: %s\n",
                paste(names(fr$shared_levels), format(fr$shared_levels, digits = 4), sep = " ",
                      collapse = "; ")))
  }
}
