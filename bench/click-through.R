# The click-through study of the seed post ("GLMMs with Cersei Lannister", "A larger-scale
# example") made real: clicks out of impressions per user and display, simulated by
# simulate_clicks() (baseline logit -4.5, display effect 0.5, user sd 5, 20 impressions on
# average), fitted by
#   fr_fit(family = binomial, method = "moments")   moments, conditional modes for the users
#     (the stored results and the vignette's tables are of the moments; fr_fit's default for
#     this one-term model is now the likelihood, method = "auto")
#   glmer, Laplace (nAGQ = 1)      up to FULLRANDOM_CTR_LAPLACE_MAX users; nAGQ = 0 above
#   glmer, nAGQ = 10 (the seed's)  up to FULLRANDOM_CTR_AGQ_MAX users (bobyqa for both)
#   glm with user as a fixed factor (up to FULLRANDOM_CTR_GLM_MAX users: dense design)
#   LASSO and ridge (cv.glmnet, 10 folds, sparse matrix of user dummies and the display
#   column, everything penalized as in the seed; predictions at lambda.min, and at the
#   seed's default lambda.1se in the csv)
# and scored on 50 future data sets from the same users (same effects, new arms,
# impressions and clicks): the seed's MSPE (squared error of the predicted click
# probability per impression), its excess over the truth (the same with the outcome
# replaced by the true probability, the part a model can reduce), and the squared error of
# the predicted logit against the true logit, per impression. Writes the "click-through"
# section of bench/results.md and inst/extdata/click-through.csv (the vignette's table).
# Run from the package root: Rscript bench/click-through.R
# FULLRANDOM_CTR_SIZES (comma-separated numbers of users) and FULLRANDOM_CTR_REPS (the
# same length) override the grid below.
suppressMessages({
  library(fullrandom)
  library(lme4)
  library(glmnet)
  library(Matrix)
})
source("bench/results.R")
threads <- as.integer(Sys.getenv("FULLRANDOM_BENCH_THREADS", "2"))
options(fullrandom.threads = threads)

env_numbers <- function(name, default) {
  value <- Sys.getenv(name, "")
  if (value == "") default else as.numeric(strsplit(value, ",")[[1]])
}
# Original data sets per number of users: fewer at the large end, where one fit of the
# competitors takes minutes and the 50 future data sets already average over many users.
sizes <- env_numbers("FULLRANDOM_CTR_SIZES", c(100, 300, 1000, 3000, 1e4, 3e4, 1e5, 3e5, 1e6))
reps <- env_numbers("FULLRANDOM_CTR_REPS", c(20, 10, 5, 3, 2, 2, 1, 1, 1))
stopifnot(length(sizes) == length(reps))
n_future <- 50L
glm_max <- env_numbers("FULLRANDOM_CTR_GLM_MAX", 1000)
laplace_max <- env_numbers("FULLRANDOM_CTR_LAPLACE_MAX", 1e5)
agq_max <- env_numbers("FULLRANDOM_CTR_AGQ_MAX", 3e4)
agq0_max <- env_numbers("FULLRANDOM_CTR_AGQ0_MAX", 3e5)
glmnet_max <- env_numbers("FULLRANDOM_CTR_GLMNET_MAX", 1e5)

formula <- cbind(clicks, impressions - clicks) ~ display + (1 | user)
elapsed <- function(expr) {
  t <- system.time(value <- tryCatch(expr, error = function(e) e))
  if (inherits(value, "error")) {
    message("  failed: ", conditionMessage(value))
    return(list(value = NULL, seconds = NA_real_, cpu = NA_real_))
  }
  list(value = value, seconds = t[["elapsed"]], cpu = sum(t[c("user.self", "sys.self")], na.rm = TRUE))
}
sparse_design <- function(user, display) {
  cbind(sparseMatrix(i = seq_along(user), j = as.integer(user), x = 1, dims = c(length(user), nlevels(user))),
        display = display)
}

# One original data set: the fits, their display effects, times, and the predicted logits
# of every user on both displays (a users x 2 matrix per method).
fit_all <- function(d) {
  n_users <- nlevels(d$user)
  grid <- data.frame(user = factor(rep(levels(d$user), each = 2), levels = levels(d$user)),
                     display = rep(0:1, n_users))
  out <- list()
  keep <- function(name, run, effect, predict_link) {
    if (is.null(run$value)) return(invisible())
    out[[name]] <<- list(seconds = run$seconds, cpu = run$cpu, effect = effect(run$value),
                         logit = matrix(predict_link(run$value), ncol = 2, byrow = TRUE))
  }
  run <- elapsed(fr_fit(formula, d, family = binomial, method = "moments"))
  keep("fr_fit", run, function(f) fixef(f)[["display"]],
       function(f) predict(f, newdata = grid, type = "link"))
  if (!is.null(run$value)) out$fr_fit$sd_user <- sqrt(run$value$theta[["user"]])
  glmer_fit <- function(nagq) {
    suppressMessages(suppressWarnings(glmer(formula, d, family = binomial, nAGQ = nagq,
                                            control = glmerControl(optimizer = "bobyqa"))))
  }
  # glmer's own convergence messages (warnings are silenced above): at 30,000 users nAGQ =
  # 10 stops with "Gradient contains NAs" at its nAGQ = 0 start, so these fits are flagged.
  glmer_keep <- function(name, nagq) {
    run <- elapsed(glmer_fit(nagq))
    keep(name, run, function(g) fixef(g)[["display"]], function(g) predict(g, newdata = grid))
    if (!is.null(run$value)) {
      out[[name]]$sd_user <<- as.data.frame(VarCorr(run$value))$sdcor[[1]]
      out[[name]]$failed <<- paste(run$value@optinfo$conv$lme4$messages, collapse = "; ")
    }
  }
  if (n_users <= laplace_max) glmer_keep("glmer", 1)
  if (n_users <= agq_max) glmer_keep("glmer_agq10", 10)
  if (n_users > laplace_max && n_users <= agq0_max) glmer_keep("glmer_nAGQ0", 0)
  if (n_users <= glm_max) {
    run <- elapsed(suppressWarnings(glm(cbind(clicks, impressions - clicks) ~ display + user, d,
                                        family = binomial)))
    keep("glm", run, function(g) coef(g)[["display"]], function(g) predict(g, newdata = grid))
  }
  if (n_users <= glmnet_max) {
    x <- sparse_design(d$user, d$display)
    y <- cbind(d$impressions - d$clicks, d$clicks)
    newx <- sparse_design(grid$user, grid$display)
    for (alpha in c(1, 0)) {
      name <- if (alpha == 1) "lasso" else "ridge"
      set.seed(alpha + 10 * nrow(d))  # the cross-validation folds (unseeded in the run of 30 November 2026)
      run <- elapsed(cv.glmnet(x, y, family = "binomial", alpha = alpha))
      keep(name, run, function(g) coef(g, s = "lambda.min")["display", 1],
           function(g) predict(g, newx = newx, s = "lambda.min"))
      keep(paste0(name, "_1se"), run, function(g) coef(g, s = "lambda.1se")["display", 1],
           function(g) predict(g, newx = newx, s = "lambda.1se"))
      if (!is.null(out[[name]])) out[[paste0(name, "_1se")]]$seconds <- out[[paste0(name, "_1se")]]$cpu <- NA_real_
    }
  }
  out
}

# The three errors of predicted logits (users x 2) on one future data set.
score <- function(logit, future) {
  cell <- cbind(as.integer(future$user), future$display + 1L)
  p_hat <- plogis(logit[cell])
  p_true <- plogis(attr(future, "truth")$logit)
  n <- future$impressions
  c(mspe = sum(future$clicks * (1 - p_hat)^2 + (n - future$clicks) * p_hat^2) / sum(n),
    excess = sum(n * (p_true - p_hat)^2) / sum(n),
    logit = sum(n * (attr(future, "truth")$logit - logit[cell])^2) / sum(n))
}

rows <- list()
seed <- 0L
started <- proc.time()[["elapsed"]]
for (s in seq_along(sizes)) {
  for (r in seq_len(reps[[s]])) {
    seed <- seed + 1L
    d <- simulate_clicks(n_users = sizes[[s]], seed = seed)
    effects <- attr(d, "truth")$user_effect
    fits <- fit_all(d)
    # The future data sets one at a time (at 10^6 users the 50 of them would take GBs).
    errors <- lapply(fits, function(f) matrix(NA_real_, 3, n_future, dimnames = list(c("mspe", "excess", "logit"), NULL)))
    for (k in seq_len(n_future)) {
      future <- simulate_clicks(user_effect = effects, seed = 1e6 + 1000 * seed + k)
      for (m in names(fits)) errors[[m]][, k] <- score(fits[[m]]$logit, future)
    }
    for (m in names(fits)) {
      e <- errors[[m]]
      rows[[length(rows) + 1L]] <- data.frame(
        users = sizes[[s]], rep = r, method = m, display = fits[[m]]$effect,
        sd_user = if (is.null(fits[[m]]$sd_user)) NA_real_ else fits[[m]]$sd_user,
        seconds = fits[[m]]$seconds, cpu = fits[[m]]$cpu,
        failed = if (is.null(fits[[m]]$failed)) "" else fits[[m]]$failed,
        mspe = mean(e["mspe", ]), mspe_sd = sd(e["mspe", ]),
        excess = mean(e["excess", ]), excess_sd = sd(e["excess", ]),
        logit = mean(e["logit", ]), logit_sd = sd(e["logit", ]))
    }
    message(sprintf("%s users, data set %d: %s (%.0f s so far)", format(sizes[[s]], big.mark = ","), r,
                    paste(sprintf("%s %.1fs", names(fits), vapply(fits, function(f) f$seconds, 1)), collapse = ", "),
                    proc.time()[["elapsed"]] - started))
  }
}
raw <- do.call(rbind, rows)

# Per number of users and method: means over the original data sets of the mean errors
# over the 50 future sets, with the standard error over the original data sets where there
# are several (otherwise the sd over the future sets / sqrt(50), the seed's measure).
summarise <- function(x) {
  k <- nrow(x)
  se <- function(v, v_sd) if (k > 1) sd(v) / sqrt(k) else v_sd / sqrt(n_future)
  data.frame(users = x$users[[1]], method = x$method[[1]], data_sets = k, failed = sum(nzchar(x$failed)),
             display = mean(x$display), display_sd = if (k > 1) sd(x$display) else NA_real_,
             sd_user = mean(x$sd_user), seconds = stats::median(x$seconds), cpu = stats::median(x$cpu),
             mspe = mean(x$mspe), mspe_se = se(x$mspe, x$mspe_sd),
             excess = mean(x$excess), excess_se = se(x$excess, x$excess_sd),
             logit = mean(x$logit), logit_se = se(x$logit, x$logit_sd))
}
table <- do.call(rbind, lapply(split(raw, list(raw$users, raw$method), drop = TRUE), summarise))
table <- table[order(table$users, match(table$method, c("fr_fit", "glmer", "glmer_agq10", "glmer_nAGQ0", "glm", "lasso", "ridge",
                                                        "lasso_1se", "ridge_1se"))), ]
rownames(table) <- NULL

# fr_fit against glmer on the same data sets: ratio of the mean errors, and the standard
# error of the paired difference relative to glmer's mean.
paired <- do.call(rbind, lapply(split(raw, raw$users), function(x) {
  a <- x[x$method == "fr_fit", ]
  do.call(rbind, lapply(c("glmer", "glmer_agq10", "glmer_nAGQ0", "glm", "lasso", "ridge"), function(m) {
    b <- x[x$method == m, ]
    if (nrow(b) == 0L) return(NULL)
    b <- b[match(a$rep, b$rep), ]
    ratio_se <- function(u, v) if (length(u) > 1) sd(u - v) / sqrt(length(u)) / mean(v) else NA_real_
    data.frame(users = a$users[[1]], against = if (any(nzchar(b$failed))) paste(m, "(not converged)") else m,
               mspe_ratio = mean(a$mspe) / mean(b$mspe),
               excess_ratio = mean(a$excess) / mean(b$excess), excess_ratio_se = ratio_se(a$excess, b$excess),
               logit_ratio = mean(a$logit) / mean(b$logit))
  }))
}))

dir.create("inst/extdata", showWarnings = FALSE, recursive = TRUE)
csv <- table[!grepl("_1se$", table$method), c("users", "method", "data_sets", "failed", "display", "sd_user", "seconds", "cpu",
                                              "mspe", "mspe_se", "excess", "excess_se", "logit", "logit_se")]
csv[-(1:4)] <- lapply(csv[-(1:4)], signif, 4)
utils::write.csv(csv, "inst/extdata/click-through.csv", row.names = FALSE)
# FULLRANDOM_CTR_RAW names a file for the per-data-set rows (not kept in the package).
if (nzchar(Sys.getenv("FULLRANDOM_CTR_RAW"))) utils::write.csv(raw, Sys.getenv("FULLRANDOM_CTR_RAW"), row.names = FALSE)

big <- function(x) format(x, big.mark = ",", scientific = FALSE)
fmt <- function(x, d = 3) ifelse(is.na(x), "-", formatC(x, digits = d, format = "f"))
sci <- function(x) ifelse(is.na(x), "-", formatC(x, digits = 3, format = "e"))
load <- tryCatch(readLines("/proc/loadavg", n = 1L), error = function(e) "unknown")
total <- proc.time()[["elapsed"]] - started
lines <- c(
  "## Click-through rates (bench/click-through.R)", "",
  sprintf(paste(
    "The seed's design (simulate_clicks(): baseline logit -4.5, display effect 0.5, user sd 5, 20 impressions",
    "on average); %d future data sets from the same users per original data set; data sets per number of users:",
    "%s. Threads: %d; load average at the end: %s; whole run %.0f s."),
    n_future, paste(sprintf("%s x %d", format(sizes, big.mark = ",", scientific = FALSE), reps), collapse = ", "),
    threads, load, total),
  "MSPE is the seed's (squared error of the predicted click probability per future impression); excess is",
  "the same against the true probability (MSPE minus the noise no model removes); logit is the squared error",
  "of the predicted logit against the true one per impression. Standard errors over the original data sets",
  "(over the future sets / sqrt(50) where there is one). LASSO and ridge at lambda.min (at the seed's choice,",
  "lambda.1se, in the last table). Seconds elapsed; CPU s user + system.",
  sprintf(paste("Fitted up to: glmer Laplace %s users, glmer nAGQ = 10 (the seed's) %s, glmer nAGQ = 0 (above Laplace's",
                "limit) %s, glm with user as a fixed factor %s, LASSO and ridge %s; fr_fit at every size."),
          big(laplace_max), big(agq_max), big(agq0_max), big(glm_max), big(glmnet_max)), "",
  "| users | method | display (0.5) | user sd (5) | seconds | CPU s | MSPE | excess | logit |",
  "|---|---|---|---|---|---|---|---|---|",
  with(table[!grepl("_1se$", table$method), ], sprintf(
    "| %s | %s%s | %s | %s | %s | %s | %s (%s) | %s (%s) | %s (%s) |", format(users, big.mark = ",", scientific = FALSE),
    method, ifelse(failed > 0, sprintf(" (%d of %d not converged)", failed, data_sets), ""), fmt(display), fmt(sd_user, 2),
    fmt(seconds, 2), fmt(cpu, 2), sci(mspe), sci(mspe_se), sci(excess), sci(excess_se),
    fmt(logit, 2), fmt(logit_se, 2))),
  if (any(nzchar(raw$failed))) {
    c("", "glmer's convergence messages:", "",
      with(raw[nzchar(raw$failed), ], sprintf("- %s users, data set %d, %s: %s", big(users), rep, method, failed)))
  },
  "", "fr_fit over the other method, on the same data sets (excess: with the standard error of the paired difference):", "",
  "| users | against | MSPE ratio | excess ratio | logit ratio |", "|---|---|---|---|---|",
  with(paired, sprintf("| %s | %s | %s | %s (%s) | %s |", format(users, big.mark = ",", scientific = FALSE), against,
                       fmt(mspe_ratio, 4), fmt(excess_ratio, 3), fmt(excess_ratio_se, 4), fmt(logit_ratio, 3))),
  "", "LASSO and ridge at lambda.1se (the seed's choice, cv.glmnet's default for predict):", "",
  "| users | method | display | MSPE | excess |", "|---|---|---|---|---|",
  with(table[grepl("_1se$", table$method), ], sprintf("| %s | %s | %s | %s | %s |",
                                                      format(users, big.mark = ",", scientific = FALSE), method,
                                                      fmt(display), sci(mspe), sci(excess)))
)
write_results_section("click-through", lines, readme = "")
cat(lines, sep = "\n")
