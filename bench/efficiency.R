# Issue 18's acceptance measurements for method = "efficient" (one MINQUE step from the
# moment estimates) and method = "reml" (REML / ML by Fisher scoring):
#  - precision: simulated data sets fitted by "moments", "efficient", "reml" and
#    lme4::lmer (REML): mean, sampling sd, sd relative to lmer's, bias with its Monte
#    Carlo se, time per fit; simulate_crossed() at 10^4, 10^5 and 10^6 rows (at 10^6
#    against fr_fit's own REML, lmer being too slow) and a Chem97-like nested design
#    (Chem97's own students, schools and areas, with simulated responses);
#  - cost: InstEval (median of 5 fits, lmer once, same session), ml-32m-shaped data
#    (as bench/scale.R makes them) fitted by "efficient" and by "reml" in fresh R
#    processes (bench/efficiency-child.R) for time and peak memory, and REML at 10^6 rows
#    against lmer's (10-minute limits);
#  - REML against lmer on real data (lme4, mlmRev, nlme): components, criterion,
#    logLik, REML and ML, and anova() on a nested pair.
# Each part keeps its results in .build/efficiency/<part>.rds, so one part can be re-run
# alone (FULLRANDOM_BENCH_EFF_PARTS="cost,reml"); the section of bench/results.md (and
# README.md) is written from the parts that exist.
# Knobs (environment): FULLRANDOM_BENCH_EFF_REPS_1E4 (200), _REPS_1E5 (200), _REPS_1E6 (20),
# _REPS_CHEM (200); FULLRANDOM_BENCH_EFF_BUDGET_1E5 (seconds for the 10^5 size, 420: as
# many data sets as fit, up to the count); FULLRANDOM_BENCH_EFF_LIMIT (600 s per child).
suppressPackageStartupMessages({
  library(fullrandom)
  library(lme4)
})
source("bench/results.R")
knob <- function(name, default) as.numeric(Sys.getenv(paste0("FULLRANDOM_BENCH_EFF_", name), default))
parts <- strsplit(Sys.getenv("FULLRANDOM_BENCH_EFF_PARTS", "precision,cost,reml"), ",")[[1]]
cache_dir <- file.path(".build", "efficiency")
dir.create(cache_dir, recursive = TRUE, showWarnings = FALSE)
cache <- function(part) file.path(cache_dir, paste0(part, ".rds"))
has_mlmrev <- requireNamespace("mlmRev", quietly = TRUE)
elapsed <- function(expr) system.time(expr, gcFirst = FALSE)[["elapsed"]]
started <- Sys.time()
say <- function(...) cat(format(Sys.time(), "%H:%M:%S"), sprintf(...), "\n")

# Variances by lme4's group names ("school:lea"), in the order of `groups`.
lmer_theta <- function(l) {
  vc <- as.data.frame(VarCorr(l))
  stats::setNames(vc$vcov, vc$grp)
}

# ---- precision -------------------------------------------------------------------------
methods_fr <- c("moments", "efficient", "reml")
# Fits one data set by every method; a row per method: the variances, the time, whether
# any component is on the boundary (zero).
fit_all <- function(form, d, groups, lmer_too = TRUE) {
  rows <- list()
  for (m in methods_fr) {
    t <- elapsed(f <- suppressMessages(fr_fit(form, data = d, method = m)))
    rows[[m]] <- c(f$theta[groups], time = t, probes = sum(f$efficient$probes %||% 0),
                   steps = f$likelihood$steps %||% NA)
  }
  if (lmer_too) {
    t <- elapsed(l <- suppressMessages(lmer(form, data = d)))
    rows[["lmer"]] <- c(lmer_theta(l)[groups], time = t, probes = NA, steps = NA)
  }
  rows
}

# Runs up to `reps` data sets (seed i) within `budget` seconds; an array
# data set x method x quantity.
precision_run <- function(label, make_data, form, groups, reps, budget = Inf, lmer_too = TRUE,
                          from = 1L) {
  t0 <- Sys.time()
  out <- list()
  for (i in seq(from, length.out = max(0, reps - from + 1))) {
    d <- make_data(i)
    out[[length(out) + 1]] <- do.call(rbind, fit_all(form, d, groups, lmer_too))
    if (i %% 20 == 0) say("%s: %d data sets", label, i)
    if (as.numeric(difftime(Sys.time(), t0, units = "secs")) > budget) break
  }
  say("%s: %d data sets in %.0f s", label, length(out), as.numeric(difftime(Sys.time(), t0, units = "secs")))
  simplify2array(out)  # method x quantity x data set
}

# The Chem97-like design: Chem97's own students, schools and areas (lea) and its
# gcsecnt, with responses simulated from lmer's REML estimates on the real scores.
chem_design <- function() {
  if (!has_mlmrev) return(NULL)
  chem <- mlmRev::Chem97[, c("lea", "school", "gcsecnt", "score")]
  l <- lmer(score ~ gcsecnt + (1 | lea/school), data = chem)
  list(data = chem, truth = lmer_theta(l)[c("school:lea", "lea", "Residual")], beta = fixef(l))
}
chem_simulate <- function(design, seed) {
  set.seed(seed)
  d <- design$data
  v <- design$truth
  lea <- stats::rnorm(nlevels(d$lea), 0, sqrt(v[["lea"]]))
  school_lea <- interaction(d$school, d$lea, drop = TRUE)
  school <- stats::rnorm(nlevels(school_lea), 0, sqrt(v[["school:lea"]]))
  d$score <- design$beta[[1]] + design$beta[[2]] * d$gcsecnt + lea[unclass(d$lea)] +
    school[unclass(school_lea)] + stats::rnorm(nrow(d), 0, sqrt(v[["Residual"]]))
  d
}

if ("precision" %in% parts) {
  crossed <- y ~ x + (1 | user) + (1 | item)
  cg <- c("user", "item", "Residual")
  truth_crossed <- c(user = 0.25, item = 0.16, Residual = 1)
  # Only the sizes named in FULLRANDOM_BENCH_EFF_SIZES are (re)computed, the others kept
  # from the cache; with FULLRANDOM_BENCH_EFF_EXTEND=1 a size's data sets are added to
  # those in the cache (seeds continue), up to its count, within its budget.
  sizes <- strsplit(Sys.getenv("FULLRANDOM_BENCH_EFF_SIZES", "1e4,1e5,1e6,chem"), ",")[[1]]
  extend <- Sys.getenv("FULLRANDOM_BENCH_EFF_EXTEND", "0") == "1"
  prec <- if (file.exists(cache("precision"))) readRDS(cache("precision")) else list()
  run_size <- function(key, label, make_data, form, groups, truth, reference, reps,
                       budget = Inf, lmer_too = TRUE) {
    old <- if (extend) prec[[key]]$res
    res <- precision_run(label, make_data, form, groups, reps, budget, lmer_too,
                         from = if (is.null(old)) 1L else dim(old)[3] + 1L)
    if (!is.null(old)) res <- simplify2array(c(lapply(seq_len(dim(old)[3]), function(i) old[, , i]),
                                               lapply(seq_len(dim(res)[3]), function(i) res[, , i])))
    prec[[key]] <<- list(label = label, groups = groups, truth = truth, reference = reference, res = res)
  }
  if ("1e4" %in% sizes) {
    run_size("n1e4", "simulate_crossed(10^4)", function(i) simulate_crossed(1e4, seed = i), crossed, cg,
             truth_crossed, "lmer", knob("REPS_1E4", 200))
  }
  if ("1e5" %in% sizes) {
    run_size("n1e5", "simulate_crossed(10^5)", function(i) simulate_crossed(1e5, seed = i), crossed, cg,
             truth_crossed, "lmer", knob("REPS_1E5", 200), budget = knob("BUDGET_1E5", 420))
  }
  if ("1e6" %in% sizes) {
    run_size("n1e6", "simulate_crossed(10^6)", function(i) simulate_crossed(1e6, seed = i), crossed, cg,
             truth_crossed, "reml", knob("REPS_1E6", 20), lmer_too = FALSE)
  }
  design <- if ("chem" %in% sizes) chem_design()
  if (!is.null(design)) {
    run_size("chem", "Chem97-like (Chem97's design, simulated scores)", function(i) chem_simulate(design, i),
             score ~ gcsecnt + (1 | lea/school), c("school:lea", "lea", "Residual"), design$truth, "lmer",
             knob("REPS_CHEM", 200))
  }
  saveRDS(prec, cache("precision"))
}

# ---- cost ------------------------------------------------------------------------------
# A fresh Rscript running bench/efficiency-child.R under a time limit; NULL when it ran
# out of time, a list with `failed` when it failed otherwise.
child <- function(file, mode, threads = 2, limit = knob("LIMIT", 600)) {
  out <- tempfile(fileext = ".rds")
  errors <- tempfile()
  on.exit(unlink(c(out, errors)))
  t <- elapsed(status <- suppressWarnings(system2(
    "timeout", c("-k", "10", limit, file.path(R.home("bin"), "Rscript"), "bench/efficiency-child.R",
                 file, mode, threads, out), stdout = TRUE, stderr = errors)))
  code <- attr(status, "status")
  if (!is.null(code) && code %in% c(124L, 137L)) return(list(timeout = TRUE, wall = t))
  if (!is.null(code) || !file.exists(out)) {
    return(list(failed = code %||% NA, message = paste(utils::tail(readLines(errors), 3), collapse = " ")))
  }
  c(readRDS(out), wall = t)
}

if ("cost" %in% parts) {
  # FULLRANDOM_BENCH_EFF_COST names the pieces to (re)measure, the others kept from the
  # cache: insteval, 1e6, ml32m-efficient, ml32m-reml.
  pieces <- strsplit(Sys.getenv("FULLRANDOM_BENCH_EFF_COST", "insteval,1e6,ml32m-efficient,ml32m-reml"), ",")[[1]]
  cost <- if (file.exists(cache("cost"))) readRDS(cache("cost")) else list()
  if ("insteval" %in% pieces) {
    # InstEval, in this session.
    form_ie <- y ~ service + (1 | s) + (1 | d) + (1 | dept)
    ie <- lme4::InstEval
    for (m in methods_fr) fr_fit(form_ie, data = ie, method = m) # warm-up
    cost$insteval <- lapply(stats::setNames(methods_fr, methods_fr), function(m) {
      stats::median(vapply(1:5, function(i) elapsed(fr_fit(form_ie, data = ie, method = m)), 1))
    })
    cost$insteval$lmer <- elapsed(suppressMessages(lmer(form_ie, data = ie)))
    say("InstEval: %s", paste(names(cost$insteval), signif(unlist(cost$insteval), 3), collapse = " "))
  }
  file <- tempfile(fileext = ".rds")
  if ("1e6" %in% pieces) {
    # 10^6 rows (bench/scale.R's data set of that size): REML against lmer, fresh processes.
    saveRDS(simulate_crossed(1e6, seed = 20261121), file, compress = FALSE)
    cost$n1e6 <- list(efficient = child(file, "efficient"), reml = child(file, "reml"),
                      lmer = child(file, "lmer"))
    say("10^6: efficient %s s, reml %s s, lmer %s s", cost$n1e6$efficient[["time"]], cost$n1e6$reml[["time"]],
        cost$n1e6$lmer[["time"]] %||% "timeout")
    unlink(file)
  }
  if (any(c("ml32m-efficient", "ml32m-reml") %in% pieces)) {
    # ml-32m-shaped data as bench/scale.R makes them.
    d <- simulate_crossed(32000204, n_users = 200948, n_items = 84432, seed = 20261121)
    saveRDS(d, file, compress = FALSE)
    rm(d)
    invisible(gc())
    if (is.null(cost$ml32m)) cost$ml32m <- list()
    if ("ml32m-efficient" %in% pieces) cost$ml32m$efficient <- child(file, "efficient")
    if ("ml32m-reml" %in% pieces) cost$ml32m$reml <- child(file, "reml")
    say("ml-32m: efficient %s s, reml %s s", cost$ml32m$efficient[["time"]], cost$ml32m$reml[["time"]] %||% "timeout")
    unlink(file)
  }
  saveRDS(cost, cache("cost"))
}

# ---- REML against lmer on real data -------------------------------------------------------
nlme_data <- function(name) {
  e <- new.env()
  utils::data(list = name, package = "nlme", envir = e)
  d <- as.data.frame(e[[name]])
  # groupedData's ordered grouping factors as plain factors (the same in both fits).
  for (v in names(d)) if (is.ordered(d[[v]])) d[[v]] <- factor(d[[v]], ordered = FALSE)
  d
}
mlm <- function(name) {
  e <- new.env()
  utils::data(list = name, package = "mlmRev", envir = e)
  e[[name]]
}
real_models <- function() {
  m <- list(
    Dyestuff = list(Yield ~ 1 + (1 | Batch), lme4::Dyestuff),
    Penicillin = list(diameter ~ 1 + (1 | plate) + (1 | sample), lme4::Penicillin),
    Pastes = list(strength ~ 1 + (1 | batch/cask), lme4::Pastes),
    sleepstudy = list(Reaction ~ Days + (1 | Subject), lme4::sleepstudy),
    cake = list(angle ~ recipe * temperature + (1 | recipe:replicate), lme4::cake),
    InstEval = list(y ~ service + (1 | s) + (1 | d) + (1 | dept), lme4::InstEval)
  )
  if (has_mlmrev) {
    m <- c(m, list(
      Exam = list(normexam ~ standLRT + sex + schgend + (1 | school), mlm("Exam")),
      Hsb82 = list(mAch ~ meanses * cses + sector * cses + (1 | school), mlm("Hsb82")),
      Chem97 = list(score ~ gcsecnt + (1 | lea/school), mlm("Chem97")),
      ScotsSec = list(attain ~ verbal * sex + (1 | primary) + (1 | second), mlm("ScotsSec")),
      Gcsemv = list(written ~ gender + (1 | school), mlm("Gcsemv")),
      egsingle = list(math ~ year * size + female + (1 | childid) + (1 | schoolid), mlm("egsingle")),
      star = list(math ~ gr + sx + eth + cltype + (1 | id) + (1 | tch) + (1 | sch), mlm("star")),
      bdf = list(langPOST ~ IQ.verb + sex + ses + (1 | schoolNR), mlm("bdf"))
    ))
  }
  c(m, list(
    Rail = list(travel ~ 1 + (1 | Rail), nlme_data("Rail")),
    Oats = list(yield ~ nitro + Variety + (1 | Block/Variety), nlme_data("Oats")),
    Machines = list(score ~ Machine + (1 | Worker/Machine), nlme_data("Machines")),
    Pixel = list(pixel ~ day + I(day^2) + (1 | Dog/Side), nlme_data("Pixel"))
  ))
}

# One model by REML (or ML): components relative to lmer's, lmer's own criterion (its
# deviance function) at fr_fit's estimates against lmer's optimum, logLik difference.
compare_one <- function(form, d, REML) {
  l <- suppressMessages(lmer(form, data = d, REML = REML))
  t_fr <- elapsed(f <- tryCatch(suppressMessages(fr_fit(form, data = d, method = "reml", REML = REML)),
                                error = function(e) e))
  if (inherits(f, "error")) return(list(error = conditionMessage(f)))
  theirs <- lmer_theta(l)
  groups <- names(f$theta)
  rel <- (f$theta - theirs[groups]) / theirs[groups]
  # lmer's criterion at fr_fit's estimates: theta = sd ratios in lmer's order, profiled
  # over the residual variance (the same for REML and ML).
  devfun <- suppressMessages(lmer(form, data = d, REML = REML, devFunOnly = TRUE))
  lnames <- sub("\\.\\(Intercept\\)$", "", names(getME(l, "theta")))
  crit_fr <- devfun(sqrt(f$theta[lnames] / f$theta[["Residual"]]))
  crit_lmer <- devfun(getME(l, "theta"))
  ll_fr <- tryCatch(as.numeric(logLik(f)), error = function(e) NA_real_)
  list(groups = groups, fr = f$theta, lmer = theirs[groups], rel = rel, max_rel = max(abs(rel)),
       crit_diff = crit_fr - crit_lmer, crit_lmer = crit_lmer,
       loglik_fr = ll_fr, loglik_lmer = as.numeric(logLik(l)), loglik_diff = ll_fr - as.numeric(logLik(l)),
       steps = f$likelihood$steps, converged = f$likelihood$converged,
       reason = f$likelihood$reason %||% "", n = nobs(l), time_fr = t_fr)
}

if ("reml" %in% parts) {
  models <- real_models()
  real <- lapply(stats::setNames(names(models), names(models)), function(name) {
    say("real data: %s", name)
    form <- models[[name]][[1]]
    d <- models[[name]][[2]]
    list(formula = deparse1(form), REML = compare_one(form, d, TRUE), ML = compare_one(form, d, FALSE))
  })
  # anova on a nested pair (Exam when mlmRev is there, else sleepstudy): fr_fit's against lme4's.
  pair <- if (has_mlmrev) {
    list(normexam ~ standLRT + (1 | school), normexam ~ standLRT + sex + schgend + (1 | school), mlm("Exam"), "Exam")
  } else {
    list(Reaction ~ 1 + (1 | Subject), Reaction ~ Days + (1 | Subject), lme4::sleepstudy, "sleepstudy")
  }
  dat <- pair[[3]]
  a_fr <- anova(fr_fit(pair[[1]], data = dat, method = "reml"), fr_fit(pair[[2]], data = dat, method = "reml"))
  a_lme4 <- suppressMessages(anova(lmer(pair[[1]], data = dat), lmer(pair[[2]], data = dat)))
  saveRDS(list(real = real, anova = list(fr = a_fr, lme4 = a_lme4, data = pair[[4]],
                                         m0 = deparse1(pair[[1]]), m1 = deparse1(pair[[2]]))),
          cache("reml"))
}

# ---- the section --------------------------------------------------------------------------
f3 <- function(x) formatC(x, digits = 3, format = "fg", flag = "#")
fsig <- function(x, d = 4) trimws(formatC(signif(x, d), digits = d, format = "fg"))
lines <- c("## Efficiency: method = \"efficient\" and method = \"reml\" (issue 18)", "",
           sprintf(paste("From `bench/efficiency.R` (R %s, lme4 %s, fullrandom %s, %d cores shared with other jobs;",
                         "%s). Times are wall-clock seconds on a loaded machine: compare ratios within a table."),
                   getRversion(), utils::packageVersion("lme4"), utils::packageVersion("fullrandom"),
                   parallel::detectCores(), format(Sys.Date())), "")

if (file.exists(cache("precision"))) {
  prec <- readRDS(cache("precision"))
  lines <- c(lines, "### Precision of the variance components", "",
             paste("Each data set fitted by `fr_fit(method = \"moments\")`, `\"efficient\"`, `\"reml\"` and",
                   "`lmer()` (REML). *sd*: the sampling sd of the estimated variance over the data sets;",
                   "*sd / ref*: relative to lmer's (at 10^6 rows, to fr_fit's own REML: lmer is too slow);",
                   "*bias (se)*: mean minus the true variance, with its Monte Carlo se; *zero*: share of",
                   "fits at the boundary; *time*: mean seconds per fit. The acceptance asks for *sd / ref*",
                   "at most 1.15 and |bias| at most 3 se for `\"efficient\"`."), "")
  for (p in prec) {
    res <- p$res  # method x quantity x data set
    R <- dim(res)[3]
    methods <- dimnames(res)[[1]]
    lines <- c(lines, sprintf("**%s**, %d data sets; true variances %s.", p$label, R,
                              paste(sprintf("%s %s", p$groups, fsig(p$truth[p$groups], 4)), collapse = ", ")), "",
               "| method | component | mean | sd | sd / ref | bias (se) | bias / se | zero | time (s) |",
               "|---|---|---|---|---|---|---|---|---|")
    for (m in methods) for (g in p$groups) {
      x <- res[m, g, ]
      ref_sd <- stats::sd(res[p$reference, g, ])
      se <- stats::sd(x) / sqrt(R)
      lines <- c(lines, sprintf("| %s | %s | %s | %s | %s | %s (%s) | %+.1f | %.0f%% | %s |",
                                m, g, fsig(mean(x)), fsig(stats::sd(x), 3),
                                if (m == p$reference) "1" else sprintf("%.3f", stats::sd(x) / ref_sd),
                                fsig(mean(x) - p$truth[[g]], 2), fsig(se, 2), (mean(x) - p$truth[[g]]) / se,
                                100 * mean(x == 0), if (g == p$groups[1]) sprintf("%.3g", mean(res[m, "time", ])) else ""))
    }
    if ("efficient" %in% methods) {
      lines <- c(lines, "", sprintf("Probes per efficient fit (all terms): mean %.0f; REML steps: mean %.1f.",
                                    mean(res["efficient", "probes", ]), mean(res["reml", "steps", ], na.rm = TRUE)))
    }
    lines <- c(lines, "")
  }
}

if (file.exists(cache("cost"))) {
  cost <- readRDS(cache("cost"))
  ie <- cost$insteval
  lines <- c(lines, "### Cost", "",
             "**InstEval** (`y ~ service + (1 | s) + (1 | d) + (1 | dept)`, 73,421 rows), one R session: median of 5 fits, lmer once.", "",
             "| fit | time (s) | lmer / fit |", "|---|---|---|",
             sprintf("| fr_fit(method = \"%s\") | %.3f | **%.0fx** |", methods_fr, unlist(ie[methods_fr]),
                     ie$lmer / unlist(ie[methods_fr])),
             sprintf("| lmer (REML) | %.2f | 1 |", ie$lmer), "")
  fmt_child <- function(r, what = "time") {
    if (isTRUE(r[["timeout"]])) return(sprintf("> %.0f min", knob("LIMIT", 600) / 60))
    if (!is.null(r$failed)) return(paste("failed:", r$message))
    sprintf("%.3g", r[[what]])
  }
  row <- function(label, r) {
    ok <- is.null(r[["timeout"]]) && is.null(r$failed)
    lk <- r$likelihood
    sprintf("| %s | %s | %s | %s | %s | %.0f | %s | %s | %s | %s | %s |", label, format(r$n %||% NA, big.mark = ","),
            fmt_child(r), if (ok) sprintf("%.0f", r$peak_mb) else "",
            if (ok) sprintf("%.0f", r$peak_before_mb) else "", r$data_mb %||% NA,
            if (ok) sprintf("%.2f", r$peak_mb / r$data_mb) else "",
            if (!is.null(lk)) sprintf("%d, %s", lk$steps, if (isTRUE(lk$converged)) "converged" else "not converged") else "",
            if (!is.null(lk$last_step) && !is.null(r$probe_sd)) {
              paste(sprintf("%.2g", abs(lk$last_step) / pmax(r$probe_sd[names(lk$last_step)], 1e-300)), collapse = ", ")
            } else "",
            if (!is.null(r$probe_sd)) paste(sprintf("%.2g", r$probe_sd), collapse = ", ") else "",
            if (!is.null(lk)) (if (is.null(lk$reason)) sprintf("logLik %.2f", r$loglik) else lk$reason) else "")
  }
  n6 <- cost$n1e6
  ml <- cost$ml32m
  lines <- c(lines,
             paste("**Simulated crossed data** (`y ~ x + (1 | user) + (1 | item)`, `simulate_crossed()` as in",
                   "`bench/scale.R`; ml-32m-shaped: 32,000,204 rows, 200,948 users, 84,432 items), each fit in a fresh",
                   "Rscript (`bench/efficiency-child.R`), 2 threads, 10-minute limit; *peak*: VmHWM of the",
                   "process, which holds the data frame (*data*, MB; *before the fit*: VmHWM once it is read back); the efficient time is the better of two calls;",
                   "*last step / probe sd*: REML's last Fisher step of each component (user, item, residual)",
                   "against the probes' sd of that component."), "",
             "| fit | rows | time (s) | peak (MB) | before the fit (MB) | data (MB) | peak / data | REML steps | last step / probe sd | probe sd | likelihood |",
             "|---|---|---|---|---|---|---|---|---|---|---|",
             row("efficient", n6$efficient), row("reml", n6$reml), row("lmer (REML)", n6$lmer),
             row("efficient, ml-32m", ml$efficient), row("reml, ml-32m", ml$reml), "",
             {
               lmer6 <- if (isTRUE(n6$lmer[["timeout"]])) knob("LIMIT", 600) else n6$lmer[["time"]]
               more <- if (isTRUE(n6$lmer[["timeout"]])) "> " else ""
               sprintf("At 10^6 rows (same run) lmer / efficient %s%.0fx, lmer / reml %s%.0fx.",
                       more, lmer6 / n6$efficient[["time"]], more, lmer6 / n6$reml[["time"]])
             },
             "")
}

if (file.exists(cache("reml"))) {
  rr <- readRDS(cache("reml"))
  lines <- c(lines, "### REML and ML against lmer on real data", "",
             paste("`fr_fit(method = \"reml\")` (and `REML = FALSE`) against `lmer(REML = TRUE / FALSE)`, random",
                   "intercepts only. *max rel*: the largest relative difference of a variance component;",
                   "*criterion*: lmer's own deviance function (`devFunOnly = TRUE`) at fr_fit's estimates minus",
                   "at lmer's (negative: fr_fit's estimates are better by lmer's criterion); *logLik diff*:",
                   "fr_fit's minus lmer's. Acceptance: max rel <= 1e-3 or criterion <= 1e-6, and",
                   "|logLik diff| <= 1e-4."), "",
             "| data | formula | n | REML max rel | REML criterion | REML logLik diff | ML max rel | ML criterion | ML logLik diff | REML steps | holds |",
             "|---|---|---|---|---|---|---|---|---|---|---|")
  holds <- function(x) !is.null(x$max_rel) && (x$max_rel <= 1e-3 || x$crit_diff <= 1e-6) && isTRUE(abs(x$loglik_diff) <= 1e-4)
  for (name in names(rr$real)) {
    x <- rr$real[[name]]
    a <- x$REML
    b <- x$ML
    if (!is.null(a$error) || !is.null(b$error)) {
      lines <- c(lines, sprintf("| %s | `%s` | | error: %s | | | %s | | | | no |", name, x$formula, a$error %||% "", b$error %||% ""))
      next
    }
    lines <- c(lines, sprintf("| %s | `%s` | %s | %.1e | %.1e | %.1e | %.1e | %.1e | %.1e | %d | %s |", name, x$formula,
                              format(a$n, big.mark = ","), a$max_rel, a$crit_diff, a$loglik_diff, b$max_rel,
                              b$crit_diff, b$loglik_diff, a$steps, if (holds(a) && holds(b)) "yes" else "**no**"))
  }
  fa <- as.data.frame(rr$anova$fr)
  la <- as.data.frame(rr$anova$lme4)
  col <- function(df, nm) df[[grep(nm, names(df), fixed = TRUE)[1]]]
  lines <- c(lines, "",
             sprintf("`anova(m0, m1)` on %s, m0 `%s`, m1 `%s` (refitted by ML):", rr$anova$data, rr$anova$m0, rr$anova$m1), "",
             "| | AIC | BIC | logLik | Chisq | Df | Pr(>Chisq) |", "|---|---|---|---|---|---|---|",
             sprintf("| fr_fit, %s | %.4f | %.4f | %.4f | %s | %s | %s |", c("m0", "m1"), col(fa, "AIC"), col(fa, "BIC"),
                     col(fa, "logLik"), fsig(col(fa, "Chisq"), 8), col(fa, "Df"), fsig(col(fa, "Pr("), 6)),
             sprintf("| lme4, %s | %.4f | %.4f | %.4f | %s | %s | %s |", c("m0", "m1"), col(la, "AIC"), col(la, "BIC"),
                     col(la, "logLik"), fsig(col(la, "Chisq"), 8), col(la, "Df"), fsig(col(la, "Pr("), 6)),
             "")
}
note <- Sys.getenv("FULLRANDOM_BENCH_EFF_NOTE")
lines <- c(lines, if (nzchar(note)) c(note, ""),
           sprintf("Last run of this script: %.0f s (parts: %s).",
                   as.numeric(difftime(Sys.time(), started, units = "secs")), paste(parts, collapse = ", ")))
write_results_section("efficiency", lines)
cat(lines, sep = "\n")
