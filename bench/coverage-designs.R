# The two simulated designs of bench/coverage.R (and bench/coverage-bca.R), with their true
# parameters named as confint() names them.

# (i) 120 groups of 1 + Poisson(7) observations (1 to about 17): s_a = 1, s_e = 2.
one_way <- function(seed) {
  set.seed(seed)
  sizes <- 1L + rpois(120L, 7)
  g <- rep(seq_along(sizes), sizes)
  a <- rnorm(length(sizes), sd = 1)
  data.frame(y = 5 + a[g] + rnorm(length(g), sd = 2), g = factor(g))
}
one_way_truth <- c("sd_(Intercept)|g" = 1, sigma = 2, "(Intercept)" = 5)

# (ii) 150 users and 100 items, 2500 ratings at random (17% of the cells), a covariate of
# every rating: s_a = 1, s_b = 0.7, s_e = 1.2, slope 0.5.
two_way <- function(seed) {
  set.seed(seed)
  n <- 2500L
  u <- sample(150L, n, TRUE)
  v <- sample(100L, n, TRUE)
  x <- rnorm(n)
  a <- rnorm(150L, sd = 1)
  b <- rnorm(100L, sd = 0.7)
  data.frame(y = 2 + 0.5 * x + a[u] + b[v] + rnorm(n, sd = 1.2), x = x, u = factor(u), v = factor(v))
}
two_way_truth <- c("sd_(Intercept)|u" = 1, "sd_(Intercept)|v" = 0.7, sigma = 1.2, x = 0.5)

# (iii) 40 schools with 4 classes each (nested) and 30 raters crossed with them, 1600 rows
# (10 a class, each rated by a rater at random) and a covariate of the school (between
# levels): s_school = 0.8, s_class = 0.5, s_rater = 0.6, s_e = 1, slope 0.5.
three_term <- function(seed) {
  set.seed(seed)
  school <- rep(1:40, each = 40L)
  class <- rep(1:160, each = 10L)
  rater <- sample(30L, 1600L, TRUE)
  w <- rnorm(40L)
  y <- 1 + 0.5 * w[school] + rnorm(40L, sd = 0.8)[school] + rnorm(160L, sd = 0.5)[class] +
    rnorm(30L, sd = 0.6)[rater] + rnorm(1600L)
  data.frame(y = y, w = w[school], school = factor(school), class = factor(class), rater = factor(rater))
}
three_term_truth <- c("sd_(Intercept)|class:school" = 0.5, "sd_(Intercept)|school" = 0.8,
                      "sd_(Intercept)|rater" = 0.6, sigma = 1, w = 0.5)

# (iv) a term of few levels with a variance far below the noise in its level means (as
# InstEval's 14 departments): 14 departments of 40 lecturers (nested), 10 ratings each,
# 5600 rows; s2_dept = 0.005, s2_lecturer = 0.28, s_e = 1.2. Checks the boundary rules.
few_levels <- function(seed) {
  set.seed(seed)
  dept <- rep(1:14, each = 400L)
  lect <- rep(1:560, each = 10L)
  data.frame(y = 3 + rnorm(14, sd = sqrt(0.005))[dept] + rnorm(560, sd = sqrt(0.28))[lect] + rnorm(5600, sd = 1.2),
             dept = factor(dept), lect = factor(lect))
}
few_levels_truth <- c("sd_(Intercept)|dept" = sqrt(0.005), "sd_(Intercept)|lect" = sqrt(0.28), sigma = 1.2,
                      "(Intercept)" = 3)
