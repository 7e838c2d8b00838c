# Matloff's Full Randomness estimator (method = "fr"): the checks that keep it to the
# models of the paper. The estimator itself is in the Rust core (module `fr`); its
# documentation is in ?fr_fit.

# Matloff's estimator is for model (2)/(3): one random intercept. Random slopes are
# caught before the general parser, whose message would not mention the method.
check_fr_formula <- function(formula) {
  if (!inherits(formula, "formula") || length(formula) != 3L) return(invisible())
  bars <- split_random_terms(formula[[3L]])$bars
  slopes <- Filter(has_random_slope, bars)
  if (length(slopes) > 0L) {
    stop(sprintf(
      "method = \"fr\" (Matloff's Full Randomness estimator) fits one random intercept (1 | g); it has no random slopes, and the formula has %s",
      paste(vapply(slopes, deparse_bar, ""), collapse = ", ")
    ), call. = FALSE)
  }
}

check_fr_terms <- function(random) {
  if (length(random) == 1L) return(invisible())
  labels <- vapply(random, `[[`, "", "label")
  stop(sprintf(
    "method = \"fr\" (Matloff's Full Randomness estimator) fits one random intercept (1 | g), but the formula has %d random terms: %s; use method = \"moments\" for several terms",
    length(labels), paste(term_label(labels), collapse = ", ")
  ), call. = FALSE)
}
