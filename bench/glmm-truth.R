# Estimates of fr_fit(family = ) against the truth and against glmer (Laplace) by
# simulation: bias, sampling sd, the ratio of sampling sds to glmer's, and Wald coverage
# of the default and sandwich standard errors, for method = "efficient" (the default:
# per-level marginal likelihoods by adaptive quadrature) and method = "moments" (Jiang's
# moment equations, fixed effects from the quasi-score with the working covariance). Writes the
# "glmm-truth" section of bench/results.md. Run from the package root:
#   Rscript bench/glmm-truth.R        (FULLRANDOM_GLMM_SIMS data sets per design, default 150;
#                                      a comma list gives one count per design, in order)
suppressMessages({
  library(fullrandom)
  library(lme4)
})
source("bench/results.R")
options(fullrandom.threads = 1L)
n_sims <- as.integer(strsplit(Sys.getenv("FULLRANDOM_GLMM_SIMS", "150"), ",")[[1]])

designs <- list(
  crossed_bernoulli = list(
    label = "crossed Bernoulli: 60 users x 30 items (every pair once), x ~ N(0, 1) by row, sds 1 (user), 0.5 (item)",
    family = binomial, formula = y ~ x + (1 | user) + (1 | item),
    beta = c("(Intercept)" = -0.5, x = 0.5), sds = c(user = 1, item = 0.5),
    make = function(beta, sds) {
      d <- expand.grid(user = factor(1:60), item = factor(1:30))
      d$x <- rnorm(nrow(d))
      u <- rnorm(60, 0, sds[["user"]])
      v <- rnorm(30, 0, sds[["item"]])
      d$y <- rbinom(nrow(d), 1, plogis(beta[[1]] + beta[[2]] * d$x + u[d$user] + v[d$item]))
      d
    }),
  poisson_clustered = list(
    label = "Poisson: 50 clusters x 8 rows, x ~ N(0, 1) by row, z ~ N(0, 1) by cluster, sd 1.2 (mean count about 7)",
    family = poisson, formula = y ~ x + z + (1 | g),
    beta = c("(Intercept)" = 1, x = 0.3, z = 0.5), sds = c(g = 1.2),
    make = function(beta, sds) {
      d <- data.frame(g = factor(rep(1:50, each = 8)), x = rnorm(400))
      z <- rnorm(50)
      d$z <- z[d$g]
      u <- rnorm(50, 0, sds[["g"]])
      d$y <- rpois(400, exp(beta[[1]] + beta[[2]] * d$x + beta[[3]] * d$z + u[d$g]))
      d
    })
)

one <- function(design, seed) {
  set.seed(seed)
  d <- design$make(design$beta, design$sds)
  fit_fr <- function(method) {
    f <- tryCatch(suppressMessages(fr_fit(design$formula, d, family = design$family, method = method)),
                  error = function(e) NULL)
    if (is.null(f)) return(NULL)
    list(b = fixef(f), se = sqrt(diag(vcov(f))), se_sandwich = sqrt(diag(f$vcov_sandwich)), sd = sqrt(f$theta),
         seconds = sum(f$timings))
  }
  g <- tryCatch(suppressMessages(suppressWarnings(glmer(design$formula, d, family = design$family,
                                                        control = glmerControl(optimizer = "bobyqa")))),
                error = function(e) NULL)
  glmer_fit <- if (is.null(g)) NULL else {
    vg <- as.data.frame(VarCorr(g))
    list(b = fixef(g), se = sqrt(diag(as.matrix(vcov(g)))), se_sandwich = NA,
         sd = stats::setNames(vg$sdcor, vg$grp)[names(design$sds)])
  }
  list(efficient = fit_fr("efficient"), moments = fit_fr("moments"), glmer = glmer_fit)
}

summarise <- function(design, runs) {
  truth <- design$beta
  rows <- list()
  for (method in c("efficient", "moments", "glmer")) {
    ok <- Filter(Negate(is.null), lapply(runs, `[[`, method))
    b <- do.call(rbind, lapply(ok, `[[`, "b"))[, names(truth), drop = FALSE]
    se <- do.call(rbind, lapply(ok, `[[`, "se"))[, names(truth), drop = FALSE]
    ses <- do.call(rbind, lapply(ok, function(r) r$se_sandwich[names(truth)]))
    sds <- do.call(rbind, lapply(ok, `[[`, "sd"))[, names(design$sds), drop = FALSE]
    for (j in names(truth)) {
      cover <- function(s) mean(abs(b[, j] - truth[[j]]) <= qnorm(0.975) * s)
      rows[[length(rows) + 1L]] <- data.frame(
        method = method, parameter = j, fits = nrow(b), truth = truth[[j]],
        bias = mean(b[, j]) - truth[[j]], mc_se = sd(b[, j]) / sqrt(nrow(b)), sd = sd(b[, j]),
        mean_se = mean(se[, j]), coverage = cover(se[, j]),
        coverage_sandwich = if (method == "glmer") NA else cover(ses[, j]))
    }
    for (k in names(design$sds)) {
      rows[[length(rows) + 1L]] <- data.frame(
        method = method, parameter = paste0("sd ", k), fits = nrow(sds), truth = design$sds[[k]],
        bias = mean(sds[, k]) - design$sds[[k]], mc_se = sd(sds[, k]) / sqrt(nrow(sds)), sd = sd(sds[, k]),
        mean_se = NA, coverage = NA, coverage_sandwich = NA)
    }
  }
  out <- do.call(rbind, rows)
  glmer_sd <- stats::setNames(out$sd[out$method == "glmer"], out$parameter[out$method == "glmer"])
  out$sd_over_glmer <- out$sd / glmer_sd[out$parameter]
  out
}

load <- tryCatch(trimws(sub(".*load average:", "", system("uptime", intern = TRUE))), error = function(e) "?")
started <- Sys.time()
n_sims <- stats::setNames(rep_len(n_sims, length(designs)), names(designs))
results <- lapply(names(designs), function(name) {
  runs <- lapply(seq_len(n_sims[[name]]), function(s) one(designs[[name]], 1000L + s))
  summarise(designs[[name]], runs)
})
names(results) <- names(designs)
minutes <- as.numeric(difftime(Sys.time(), started, units = "mins"))

fmt <- function(x, d = 3) ifelse(is.na(x), "", formatC(x, digits = d, format = "f"))
lines <- c("## GLMM fixed effects against the truth (bench/glmm-truth.R)", "",
           sprintf(paste("%s simulated data sets (%.1f minutes, one thread, load %s). Methods: `efficient`,",
                         "opt-in, method = \"efficient\" (per-level marginal likelihoods by adaptive Gauss-Hermite quadrature: the",
                         "likelihood with one term, a composite likelihood with several); `moments`, Jiang's moment",
                         "equations with the fixed effects from the quasi-score (the working covariance);",
                         "`glmer`, Laplace (bobyqa). Coverage: 95%% Wald intervals with vcov() (the inverse observed",
                         "information for `efficient` with one term, the sandwich with several; model-based for",
                         "`moments`) and with the cluster-robust sandwich. sd / glmer: sampling sd over glmer's."),
                   paste(sprintf("%d (%s)", n_sims, names(n_sims)), collapse = " and "), minutes, load), "")
for (name in names(designs)) {
  r <- results[[name]]
  lines <- c(lines, sprintf("### %s", designs[[name]]$label), "",
             "| method | parameter | fits | truth | bias | MC se | sampling sd | sd / glmer | mean SE | coverage | coverage (sandwich) |",
             "|---|---|---|---|---|---|---|---|---|---|---|",
             sprintf("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |", r$method, r$parameter, r$fits, fmt(r$truth, 2),
                     fmt(r$bias), fmt(r$mc_se), fmt(r$sd), fmt(r$sd_over_glmer, 2), fmt(r$mean_se), fmt(r$coverage, 3),
                     fmt(r$coverage_sandwich, 3)), "")
}
write_results_section("glmm-truth", lines)
cat(lines, sep = "\n")
