#' Fit a linear mixed model by the method of moments
#'
#' Fits `y = X b + Z_1 u_1 + ... + Z_K u_K + e` with random intercepts written in
#' lme4's syntax: crossed `(1 | a) + (1 | b)`, nested `(1 | a/b)` (meaning
#' `(1 | a) + (1 | a:b)`) and interactions `(1 | a:b)`. The variance components solve
#' the moment equations below, which hold for any design without assuming normality.
#'
#' @section The estimator:
#' With the ordinary least squares residuals, `r` = `y - X b_ols`, for the whole data (factor
#' 0) and every random term `k` the within-level sum of squares
#' `Q_k = sum_i r_i^2 - sum_g (sum_{i in g} r_i)^2 / n_g` has expectation
#' `E[Q_k] = sum_l s2_l c_kl + s2 c_ke`, where `c_kl = tr(Z_l' M A_k M Z_l)`,
#' `c_ke = tr(A_k M)`, `M = I - X (X'X)^-1 X'` and `A_k = I - Z_k (Z_k'Z_k)^-1 Z_k'`.
#' Equating each `Q_k` with its expectation gives `K + 1` linear equations in the
#' `K` random-effect variances and the residual variance `s2`; their solution (the
#' "raw" estimates, kept in the fit as `theta_raw`) is exactly unbiased. The traces
#' have closed forms in level counts, cross-tabulation counts and per-level sums of
#' `X`, so the fit needs one pass over the data and memory linear in the numbers of
#' observations and levels. In balanced designs the estimates equal REML's.
#'
#' A negative solution is set to zero and the model without that term re-solved,
#' most negative first; the fit is then reported as a boundary (singular) fit, as
#' lmer reports it. When the residual variance comes out negative, the data cannot
#' tell the finest term from the residual: the term with the most levels is set to
#' zero in the same way. The unconstrained solution stays in the fit as `theta_raw`.
#'
#' @section The efficient estimator (`method = "efficient"`) and REML (`method = "reml"`):
#' The unweighted moment equations are unbiased but lose precision on unbalanced data
#' with heavy-tailed level sizes. The REML equations are `y'P V_k P y = tr(P V_k)`, with
#' `V_k = Z_k Z_k'` (and `I` for the residual) and `P = V^-1 - V^-1 X (X'V^-1 X)^-1
#' X'V^-1`. With `P_0` at the moment estimates `theta_0`, the forms `y'P_0 V_k P_0 y`
#' have expectations `sum_l theta_l tr(P_0 V_k P_0 V_l)` under any distribution with
#' these variances; equating them (C. R. Rao's MINQUE) is `method = "efficient"`:
#' unbiased given `theta_0`, asymptotically as efficient as REML (it is one Fisher
#' scoring step of REML from a consistent start), and computed from the same sufficient
#' statistics. The forms come from the BLUPs at `theta_0` (`Z_k'P_0 y = u_k / gamma_k`,
#' `gamma_k = s2_k / s2`); the traces, in level space, are exact for terms with few
#' levels (one solve of Henderson's equations per level) and otherwise estimated by
#' Rademacher probes (Hutchinson's estimator), each probe one solve serving every term,
#' added in batches until their Monte Carlo error (jackknife over probes) is at most a
#' tenth of the sampling sd of every component. `fit$efficient` keeps the moment fit
#' it started from, the probes used, the probes' sd (`probe_sd`) and the sampling sd of
#' the estimates under normality (`model_sd`, from REML's information).
#'
#' Random slopes take the same step: the parameters are the entries of every term's
#' covariance matrix `Sigma_k` (`V_{k,ab} = Z_k (E_ab + E_ba) Z_k'` per level, halved on the
#' diagonal) and the residual variance; the forms come from `Z_k'P_0 y` at the BLUPs, the
#' traces from probes of every column of a term through the q x q Henderson's equations.
#' The step starts from the moment estimate projected onto the positive semidefinite
#' matrices (with a tiny floor on its eigenvalues), and its solution is projected the
#' same way. In simulation (bench/slopes.R) its RMSEs equal lmer's REML where the moment
#' equations' were 1.2-1.9 times them.
#'
#' `method = "reml"` iterates the same step to its fixed point, where the REML
#' equations hold (with ML's traces, `REML = FALSE`, the ML equations): Fisher scoring,
#' with the same probes at every step, so the optimum is exact up to the probes' stated
#' error. Its log-likelihood, `-2 l = (N - p) log(2 pi s2) + log det V_0 + log
#' det(X'V_0^-1 X) + y'P_0 y / s2` (`N` and no determinant of `X` for ML), uses a
#' sparse Cholesky factor of Henderson's matrix for `log det V_0`; when that factor
#' would exceed 800 MB (crossed terms with very many levels) the log-likelihood is not
#' computed and `fit$likelihood$reason` says so. Bootstrap replicates of these fits
#' ([fr_bootstrap()], [confint()][confint.fr_fit]) are refitted by the moment equations,
#' so their intervals are conservative.
#'
#' @section Matloff's Full Randomness estimator (`method = "fr"`):
#' For a model with one random intercept, `method = "fr"` uses the estimator of N.
#' Matloff's paper "A New Framework for Random Effects Models" instead. The group sizes
#' `N_i` are random, the pivots are the group totals `S_i = sum_j Y_ij`, and
#' conditioning on `N` gives the two equations
#' `Var(S) = (nu2 + nu1^2) s2_a + nu1 s2_e + mu^2 nu2` and `Var(Y) = s2_a + s2_e`
#' (the paper's 17 and 18). Their left sides are the sample variances of the `S_i`
#' and of the `Y_ij`; `nu1` and `nu2` are the mean and variance of the `N_i`, and
#' `mu = Y.. / M`, with `M` the number of observations. All sample moments are moments
#' of the empirical distribution (divisors `r`, the number of groups, and `M`). With
#' these divisors the estimator equals the one derived for fixed `n_i` (the paper's
#' section 5) exactly.
#'
#' Other regressors are fitted by least squares and the equations applied to
#' `y - x'b` (the paper's eq. 19).
#'
#' A [size()] term of the grouping variable, `y ~ size(g) + (1 | g)`, is the paper's
#' model (3). It gives `mu N` the form `c1 N + c2 N^2` (eq. 20). The `mu^2 nu2` term
#' becomes the sample variance of `c1 N_i + c2 N_i^2`, and `Var(Y)` gains the variance
#' of `c2 N_i` over the observations. The equations are then nonlinear in `c` and are
#' solved iteratively (eqs. 21-22): `c` is the GLS estimate at the current components,
#' and the components solve the equations at the current `c`. GLS depends on the
#' components only through the intraclass correlation, so the joint solution is found by
#' bisection on it, which always terminates; plain substitution can cycle. When no
#' fixed point leaves a positive residual variance, the fit stops with an error. This
#' happens when a few very large groups dominate `Var(S)`.
#'
#' The fit keeps the group-size distribution (`nu1`, `nu2`) and prints it. The
#' estimator is consistent without normality but not unbiased. Its sampling error grows
#' with `|mu|`, because the equations subtract `mu^2 nu2` from `Var(S)`. (`fr_centred =
#' TRUE`, below, removes this.) It also grows with the tail of the group sizes.
#' `method = "moments"` is invariant to a shift of the response and is unbiased. See
#' `vignette("full-randomness", package = "fullrandom")`. The fixed effects, standard
#' errors and BLUPs are then computed as for the default method, from the mixed-model
#' equations at these components.
#'
#' @section Full Randomness for crossed data (`method = "fr"` with two terms):
#' For `y ~ x + (1 | user) + (1 | item)`, the paper's model (7) (with regressors, model
#' (10)), the row counts `N_i` and column counts `M_j` are random and the pivots are the
#' row totals `S_i` and the column totals `C_j`. Assume `a_i`, `b_j`, `e_ij` independent
#' of each other and of which cells are observed (the incidence `Z`), with mean zero.
#' With `n_ij` the observations in cell `(i, j)`, `S_i = F_i + N_i a_i + sum_j n_ij b_j +
#' sum e`, where `F_i` is the row total of the mean (`mu N_i` in model (7)). Conditioning on
#' `Z` (eq. 13), `E[S | Z] = F` and `Var(S | Z) = N^2 s2_a + (sum_j n_ij^2) s2_b + N s2_e`,
#' so
#' `Var(S) = (nu2 + nu1^2) s2_a + kappa_r s2_b + nu1 s2_e + Var(F)`,
#' `Var(C) = kappa_c s2_a + (lambda2 + lambda1^2) s2_b + lambda1 s2_e + Var(G)` (the
#' mirror image, `G_j` the column totals of the mean) and
#' `Var(Y) = s2_a + s2_b + s2_e`. Here `nu1`, `nu2` (`lambda1`, `lambda2`) are the mean and
#' variance of the `N_i` (`M_j`) and `kappa_r` is the mean over rows of `sum_j n_ij^2`,
#' which is `nu1` when the items within a row are distinct (mirror image `kappa_c`); with
#' model (7), `Var(F) = mu^2 nu2`. The estimator solves these three equations, with the
#' sample moments (divisors `r`, `c` and the number of observations) on the left, as the
#' one-term estimator does; the boundary rule is the default method's. Everything comes
#' from the level counts, per-level sums and cell counts of the sufficient statistics, so
#' the fit merges exactly over chunks.
#'
#' Two rows that share `T` columns (the paper's eq. 27, `T_km = sum_j n_kj n_mj`) have
#' `Cov(S_k, S_m) = E[T] s2_b`, so the sample variance of the `S_i` has expectation
#' `(1 - 1/r) (Var(S) - tau_r s2_b)`, `tau_r` the mean of `T` over pairs of distinct rows
#' (from the counts: `(sum_j M_j^2 - sum_ij n_ij^2) / (r (r - 1))`). `fr_shared = TRUE` uses
#' `kappa_r - tau_r` (and `kappa_c - tau_c`) as the coefficients, with the common factor
#' `1 - 1/r` dropped by the same divisor convention. It matters when a few items are rated
#' by a large share of the users.
#'
#' Regressors, at the user, item or rating level, are fitted by least squares first
#' (eq. 19) and the equations applied to `y - x'b`. `size(user)` and `size(item)` columns
#' (functions of the counts) are part of the mean's totals `F`, `G` and of `Var(h)`, as in
#' model (3), but with their least-squares coefficients: the crossed equations are not
#' iterated with GLS. The derivation covers two crossed terms only: nested terms, data in
#' which every level of one term occurs with a single level of the other, and three or
#' more terms are errors.
#'
#' Limits, as for one term. (1) The location: the sample variance of the totals is
#' `Var(D) + 2 mu Cov(D, N) + mu^2 nu2` with `D_i = S_i - mu N_i`; the equations cancel
#' the last term exactly, but the middle one, zero in expectation, has a standard
#' deviation proportional to `|mu|`. At `mu = 3.5` (`simulate_crossed()`'s default) this
#' made the RMSE of the variance components 4 to 60 times that of `method = "moments"`
#' in simulation. (2) The tails of the counts: `Var(S)` weights user `i` by about
#' `N_i^2`, so when a few users (items) hold most of the squared counts the estimate rests
#' on those few effects. With Zipf counts (probability proportional to `1/rank`) the
#' effective number of users, `(sum w)^2 / sum w^2` for `w_i = N_i^2`, tends to 2.5
#' whatever the size, and the estimates do not converge as the data grow; with counts
#' proportional to `rank^-0.3` (and users in proportion to the rows) they do, at the
#' rate `n^-0.4` instead of `n^-0.5`. See
#' `bench/results.md` and the vignette for the numbers.
#'
#' `fr_centred = TRUE` applies the same equations to the least-squares residuals
#' `y - x'b`, the intercept and `size()` columns included. That is eq. 19 read with the
#' intercept among the regressors, as the paper's eq. 4 folds `mu` into `x`: the
#' residuals have mean zero given the counts, so `Var(F)`, `Var(G)` and `Var(h)` leave the
#' equations and their left sides are the sample variances of the residual totals and
#' of the residuals. Both forms are consistent (in the population `Cov(D, F) = 0`), but
#' the centred one does not depend on the location of the response and removes limit
#' (1), not limit (2): in simulation its RMSEs were 1.1 to 5.5 times those of `method =
#' "moments"`. It applies to one term as well.
#'
#' `chunk_by = ".order"` makes chunks of consecutive rows (the order of submission,
#' eq. 29). Their Software Alchemy standard errors are too small for the variance
#' components, by factors of 4.5 to 72 in `bench/results.md`. By the paper's eq. 13,
#' `Var(avg) = E[Var(avg | a, b)] + Var(E[avg | a, b])`: given the realised effects `a`, `b`,
#' the ratings of eq. 29 are i.i.d. and the chunks independent, so the spread of the
#' chunk estimates measures only the first term. The second, the variation of the
#' realised user and item effects themselves (every chunk sees the same ones), does not
#' shrink as chunks are added, and it dominates. The pigeonhole bootstrap
#' ([fr_bootstrap()], `confint(fit, method = "bootstrap")`) resamples users and items
#' and does estimate it: in the simulation (25 data sets per cell) its standard errors
#' of the three variances were 0.75 to 0.95 times the Monte Carlo spread of the estimate
#' with lighter-tailed counts and 0.57 to 0.99 times with Zipf counts: somewhat small,
#' so its intervals are somewhat narrow. Its replicates are standard deviations (the
#' names [confint()] uses); `attr(, "variances")` holds them as variances.
#'
#' @section Fixed effects and predicted random effects:
#' With the estimates plugged in (`s2` residual, `s2_k` per term), the fixed effects
#' `b` (generalised least squares) and the predicted random effects `u` (BLUPs) solve
#' Henderson's mixed-model equations
#' `[X'X, X'Z; Z'X, Z'Z + L] [b; u] = [X'y; Z'y]`, `L = diag(s2 / s2_k)`, whose blocks
#' are all in the sufficient statistics. `Z'Z + L` is never formed: the systems in it
#' are solved by conjugate gradients preconditioned by block Gauss-Seidel (memory linear in
#' the numbers of levels and observed cells) to a relative residual below 1e-10,
#' recorded in `fit$mme`. Terms estimated at zero drop out (their BLUPs are 0). The
#' covariance of `b` is `vcov(fit) = s2 (X'X - X'Z (Z'Z + L)^-1 Z'X)^-1`, the GLS
#' covariance with the estimated components treated as known, as lmer's is.
#'
#' @section Chunks, Software Alchemy and clusters:
#' The sufficient statistics of disjoint sets of rows add up, so a fit in chunks with
#' `combine = "exact"` computes them per chunk (each chunk needing only its own memory),
#' merges them and solves the equations once: the result equals the fit of the whole
#' data. The levels of the random terms are matched across chunks by label (those of an
#' interaction `a:b` by the labels of `a` and `b`). With
#' `combine = "average"` (N. Matloff's Software Alchemy, section 7 of the Full Randomness
#' paper) every chunk is a complete fit and the estimates are averaged. Their chunk
#' standard errors are honest only when the chunks are independent: with `chunk_by` the
#' grouping variable of the only random term, or of a term in which the others nest.
#' Chunks of rows at random (the paper's eq. 29 for crossed data) share the levels of
#' every term, and their spread misses the variance those shared effects add; the fit
#' warns about it.
#'
#' `data` may also be a list of data frames or a vector of paths to CSV (read with
#' `data.table::fread()`, grouping variables as text, so that IDs such as "03" keep their
#' spelling) or RDS files (each file once), one chunk each; each is read by the process
#' that handles it, so the data never sit in one process. Such fits keep no model frame,
#' fitted values or residuals (use `predict(fit, newdata)`). Models with factor fixed
#' effects or `size()` terms read the chunks twice: once for the levels and the group
#' sizes of the whole data, once for the statistics.
#'
#' Random slopes are combined exactly only (in chunks of a data frame, from lists of data
#' frames and from files; these read every chunk twice, once for the levels and once for
#' the statistics); `combine = "average"` is refused for them, because the core has no
#' entry point yet for Henderson's equations of a slope model at given (averaged)
#' components, which the averaged fit's BLUPs and `vcov()` need.
#'
#' @param formula a two-sided formula in lme4 syntax with at least one random
#'   intercept, e.g. `y ~ service + (1 | s) + (1 | d) + (1 | dept)`. Grouping
#'   variables of any type are treated as factors.
#' @param data a data frame holding the variables of `formula` (it is not modified), or,
#'   for a fit in chunks, a list of data frames or a character vector of file paths. A
#'   `.` in the fixed part stands for every column of a data frame except the response
#'   and the grouping variables, as in [lm()].
#' @param subset an optional expression selecting the rows to use, as in [lm()].
#' @param na.action what to do with rows holding `NA`; by default
#'   `getOption("na.action")`, normally [na.omit()]. The number of dropped rows is
#'   printed with the fit.
#' @param method `"moments"` (the default for linear mixed models): the unbiased moment
#'   equations above, for any number of random terms; `"efficient"`: one MINQUE step from the moment
#'   estimates, as precise as REML on unbalanced data at moment cost (see the section
#'   below), for random intercepts and random slopes; `"reml"`: restricted maximum likelihood (or maximum likelihood with `REML =
#'   FALSE`), with the log-likelihood that `logLik()`, `AIC()`, `BIC()` and `anova()`
#'   need; `"fr"`: Matloff's Full Randomness estimator (below), for one random
#'   intercept, with [size()] covariates solved by the paper's iteration, or two
#'   crossed ones. With `family =` binomial or Poisson, `"efficient"` maximises per-level
#'   marginal likelihoods by quadrature, `"laplace"` the Laplace approximation of the
#'   likelihood (as `glmer()`) and `"moments"` solves Jiang's moment equations; the
#'   default there, `"auto"`, takes `"efficient"` where that is the marginal likelihood
#'   (one term, or nested terms), `"laplace"` for crossed terms up to 2 x 10^6 rows with
#'   a small Cholesky factor, and `"moments"` above (see the GLMM section); `fit$method`
#'   and `print(fit)` say which was used.
#' @param REML for `method = "reml"`: `TRUE` (the default) maximises the restricted
#'   likelihood, `FALSE` the likelihood, as `lmer()`'s `REML`. The moment methods have
#'   no such switch, and giving it to them is an error.
#' @param threads number of threads of the Rust core; the results do not depend on it.
#'   By default the option `fullrandom.threads`, else every core available (at most 2
#'   when the environment variable `_R_CHECK_LIMIT_CORES_` is set, as `R CMD check
#'   --as-cran` sets it). A larger number is reduced to the cores available, with a
#'   message. With `backend = "future"` each worker uses one thread.
#' @param chunks the number of chunks to split a data frame into (Matloff's Software
#'   Alchemy); `NULL` fits it whole. A list of data frames or a vector of files is one
#'   chunk per element.
#' @param combine `"exact"`: the chunks' sufficient statistics are merged and the model
#'   fitted once, which equals the unchunked fit (up to rounding); `"average"`: every
#'   chunk is fitted on its own and the variance components and fixed effects are
#'   averaged with equal weights; the spread of the chunk estimates gives their Software
#'   Alchemy covariance, `cov(chunk estimates) / g`, kept in `fit$alchemy`. The BLUPs and
#'   `vcov()` then come from the mixed-model equations of the whole data at the averaged
#'   components. See the section on chunks.
#' @param chunk_by `NULL` to chunk rows at random, `".order"` for consecutive blocks of
#'   the rows in their order (the order of submission, eq. 29 of the Full Randomness
#'   paper), or the name of the grouping variable of a random term, whose levels are then
#'   assigned to chunks at random (every level's rows in one chunk).
#' @param seed the seed of the random assignment to chunks, for reproducible chunks; the
#'   caller's random stream is left as it was.
#' @param backend `"threads"` (the default; option `fullrandom.backend`): the chunks are
#'   processed one after the other in this R process, each on `threads` threads;
#'   `"future"`: on the workers of the current [future::plan()] (multisession, cluster,
#'   batch schedulers), through future.apply. Workers return statistics or chunk
#'   estimates, never data.
#' @param contrasts `NULL` or a named list of contrasts for factors of the fixed part, as
#'   for [lm()] (the `contrasts.arg` of [model.matrix()]), e.g.
#'   `list(f = "contr.sum")`.
#' @param fr_shared for `method = "fr"` with two crossed terms: `TRUE` corrects the
#'   equations of the row and column totals for the levels that pairs of rows (columns)
#'   share (the paper's eq. 27); see the section on crossed data.
#' @param fr_centred for `method = "fr"`: `TRUE` applies the Full Randomness equations to
#'   the least-squares residuals (the intercept removed with the other regressors, eq.
#'   19), which drops the mean's part (`mu^2 nu2`) from them and makes the estimates
#'   independent of the location of the response; see the sections on Full Randomness.
#' @param family `gaussian` (the default: the linear mixed model above), or `binomial`
#'   or `poisson` as [glm()] takes them, for a generalized linear mixed model (see the
#'   section on them).
#' @param weights for `family = binomial` with a proportion as the response, the
#'   numbers of trials (as glm's prior weights); evaluated in `data`.
#' @param offset for a GLMM, an offset on the linear-predictor scale (like
#'   `offset()` in the formula); evaluated in `data`.
#' @param ... not used: lme4's arguments that fr_fit does not take (`control`,
#'   `start`, `verbose`) and any other argument are an error that says so.
#' @return an object of class `fr_fit`: a list with, among others, `method`, `theta` (the
#'   variance components after the boundary rule, named by term, then `Residual`),
#'   `theta_raw` (the unbiased solution of the moment equations), `boundary`,
#'   `coefficients` (GLS fixed effects), `coef_ols`, `vcov`, `ranef_values`,
#'   `moment_equations` (`lhs` and `q`), `mme`, `flist` (the grouping factors),
#'   `frame` (the model frame) and, for `method = "fr"`, `fr`: the group sizes
#'   (`groups`, `mean` = `nu1`, `variance` = `nu2`), `coef_in_equations` and
#'   `iterations`. Use the accessor functions rather than the fields.
#' @seealso [VarCorr()][VarCorr.fr_fit], [fixef()][fixef.fr_fit],
#'   [ranef()][ranef.fr_fit], [predict()][predict.fr_fit], [summary()][summary.fr_fit],
#'   [tidy()][tidy.fr_fit].
#' @references N. Matloff, "A New Framework for Random Effects Models" (Full
#'   Randomness). K. Gao and A. B. Owen (2017), "Efficient moment calculations for
#'   variance components in large unbalanced crossed random effects models",
#'   Electronic Journal of Statistics 11(1).
#' @examples
#' # A random intercept per archer, on simulated data (no other package needed).
#' fit <- fr_fit(distance ~ bow + (1 | archer), data = simulate_archers(seed = 1))
#' print(fit)
#'
#' if (requireNamespace("lme4", quietly = TRUE)) {
#'   # Dyestuff is balanced: the moment estimates equal lmer's REML estimates.
#'   fit <- fr_fit(Yield ~ 1 + (1 | Batch), data = lme4::Dyestuff)
#'   print(fit)
#'   print(summary(fit))
#'   ref <- lme4::lmer(Yield ~ 1 + (1 | Batch), data = lme4::Dyestuff)
#'   # Variance components (Batch, then the residual) and the fixed effect, side by side.
#'   print(cbind(fr_fit = as.data.frame(VarCorr(fit))$vcov,
#'               lmer = as.data.frame(lme4::VarCorr(ref))$vcov))
#'   print(cbind(fr_fit = fixef(fit), lmer = lme4::fixef(ref)))
#'
#'   # Two crossed random terms.
#'   fit2 <- fr_fit(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
#'   print(fit2)
#'   ref2 <- lme4::lmer(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
#'   print(cbind(fr_fit = as.data.frame(VarCorr(fit2))$vcov,
#'               lmer = as.data.frame(lme4::VarCorr(ref2))$vcov))
#'   # The predicted effects of the six samples.
#'   print(cbind(fr_fit = ranef(fit2)$sample[, 1], lmer = lme4::ranef(ref2)$sample[, 1]))
#' }
#' @importFrom stats gaussian
#' @export
fr_fit <- function(formula, data = NULL, subset, na.action,
                   method = c("moments", "efficient", "reml", "fr", "auto", "laplace"), REML = TRUE,
                   threads = default_threads(),
                   chunks = NULL, combine = c("exact", "average"), chunk_by = NULL, seed = NULL,
                   backend = getOption("fullrandom.backend", "threads"), contrasts = NULL,
                   fr_shared = FALSE, fr_centred = FALSE, family = gaussian, weights = NULL,
                   offset = NULL, ...) {
  refuse_unknown_arguments("fr_fit()", ..., hints = lme4_arguments_not_taken, help = "fr_fit")
  call <- match.call()
  method_given <- !missing(method)
  family <- resolve_family(family, parent.frame())
  glmm <- family$family != "gaussian"
  for (arg in c("weights", "offset")) {
    if (!glmm && !is.null(call[[arg]])) {
      stop(sprintf("fr_fit() does not take `%s` for a linear mixed model: %s", arg,
                   lme4_arguments_not_taken[[arg]]), call. = FALSE)
    }
  }
  check_data_type(data)
  formula <- expand_dot(formula, data)
  method <- likelihood_method(match.arg(method), REML, missing(REML))
  if (method %in% c("auto", "laplace") && !glmm) {
    stop(sprintf(paste(
      "method = \"%s\" is for GLMMs (family = binomial or poisson); a linear mixed model is fitted",
      "by method = \"moments\", \"efficient\", \"reml\" (its exact likelihood) or \"fr\""
    ), method), call. = FALSE)
  }
  combine <- match.arg(combine)
  backend <- check_backend(backend)
  threads <- check_threads(threads)
  if (method == "fr") check_fr_formula(formula)
  parsed <- parse_fr_formula(formula)
  if (method == "fr") check_fr_terms(parsed$random)
  method <- core_fr_method(method, fr_shared, length(parsed$random), fr_centred)
  # Carried with the formula, so every path that builds X (chunks, files) uses them.
  parsed$contrasts <- check_contrasts(contrasts)
  frame_call <- call[c(1L, match(c("data", "subset", "na.action"), names(call), 0L))]
  frame_call[[1L]] <- quote(stats::model.frame)
  if (glmm) {
    if (has_slope_terms(parsed)) {
      stop("random slopes are fitted for gaussian models only; a binomial or Poisson model ",
           "takes random intercepts (1 | g)", call. = FALSE)
    }
    # The likelihood where it is the marginal likelihood (one term, nested terms), the
    # Laplace approximation or the moments for crossed terms (R/glmm-chunks.R resolves it).
    if (!method_given) method <- "auto"
    if (!method %in% c("auto", "moments", "laplace", "efficient")) {
      stop("generalized linear mixed models are fitted by method = \"auto\", \"laplace\", \"efficient\" ",
           "or \"moments\"", call. = FALSE)
    }
    chunking <- if (!is.null(chunks) || !is.null(chunk_by) || backend == "future" ||
                    (!is.null(data) && !is.data.frame(data))) {
      list(chunks = chunks, combine = combine, chunk_by = check_chunk_by(chunk_by, parsed), seed = seed,
           backend = backend)
    }
    return(fr_glmm(call, formula, parsed, data, frame_call, parent.frame(), family, threads,
                   call$weights, call$offset, chunking, method))
  }
  # The groupings whose size() columns Matloff's models (3) and (10) use.
  size_grouping <- if (is_fr(method)) fr_size_groupings(parsed$random)
  if (has_slope_terms(parsed)) {
    chunking <- list(chunks = chunks, combine = combine, chunk_by = chunk_by, seed = seed, backend = backend)
    return(fr_fit_slopes(call, formula, parsed, data, frame_call, parent.frame(), method,
                         threads, chunking))
  }
  if (!is.data.frame(data) && !is.null(data) || !is.null(chunks) || !is.null(chunk_by) ||
      backend == "future") {
    if (is.null(data)) stop("fits in chunks need `data`", call. = FALSE)
    return(fr_fit_chunks(call, formula, parsed, data, frame_call, parent.frame(), method, threads,
                         chunks, combine, chunk_by, seed, backend, size_grouping))
  }
  md <- fr_model_data(parsed, frame_call, data, parent.frame(), threads)
  size_columns <- size_columns_for(method, md, size_grouping)
  moments <- fr_moments(md$y, md$fixed, md$flist, threads, method, size_columns)
  moments$fitted.values <- name_by_rows(moments$fitted.values, md$frame)
  moments$residuals <- name_by_rows(moments$residuals, md$frame)
  finish_fit(moments, call, formula, md$y, md, parsed, threads)
}

# The size() columns of method "fr" (1-based), none otherwise.
size_columns_for <- function(method, md, size_grouping) {
  if (!is_fr(method) || is.null(size_grouping)) return(integer())
  sort(unique(unlist(lapply(size_grouping, function(g) {
    size_columns_of(md$fixed$assign, md$terms, str2lang(g))
  }))))
}

# Reports dropped columns and boundary estimates, and completes the fit object.
finish_fit <- function(fit, call, formula, y, md, parsed, threads, n_obs = length(y)) {
  report_dropped_columns(md$fixed$names, fit$kept)
  if (!is.null(fit$loglik)) attr(fit$loglik, "nobs") <- n_obs
  if (any(fit$boundary)) {
    message(boundary_message(names(fit$boundary)[fit$boundary]))
  }
  structure(
    c(fit, list(
      sigma = sqrt(fit$theta[["Residual"]]),
      contrasts = md$fixed$contrasts,
      xlevels = if (!is.null(md$frame)) stats::.getXlevels(md$terms, md$frame) else md$xlevels,
      call = call,
      formula = formula,
      data_name = if (is.null(call$data)) NULL else deparse1(call$data),
      nobs = n_obs,
      ngrps = vapply(md$flist, nlevels, 1L),
      random = parsed$random,
      n_dropped = md$n_dropped,
      na.action = md$na_action,
      flist = md$flist,
      frame = md$frame,
      terms = md$terms,
      threads = threads
    )),
    class = "fr_fit"
  )
}

# The estimator the core runs: "reml" is REML or, with REML = FALSE, "ml" (maximum
# likelihood); the moment methods have no likelihood to choose.
likelihood_method <- function(method, REML, REML_missing) {
  if (method != "reml") {
    if (!REML_missing) {
      stop(sprintf(paste(
        "`REML` chooses between REML and maximum likelihood for method = \"reml\"; method",
        "= \"%s\" estimates the variance components by moment equations, which have no",
        "such switch"
      ), method), call. = FALSE)
    }
    return(method)
  }
  if (!(is.logical(REML) && length(REML) == 1L && !is.na(REML))) {
    stop("`REML` must be TRUE or FALSE", call. = FALSE)
  }
  if (REML) "reml" else "ml"
}

# Arguments of lmer() that fr_fit() does not take, and what to do instead.
lme4_arguments_not_taken <- c(
  weights = "weights are not supported yet; every observation has weight 1 (for family = binomial they are the trials)",
  offset = "offsets are not supported yet; subtract the offset from the response instead",
  control = "fr_fit has no optimiser to control: the moment equations are solved directly",
  start = "fr_fit has no optimiser to start: the moment equations are solved directly",
  verbose = paste("fr_fit has no optimiser iterations to report; fr_bootstrap() and confint()",
                  "show progress with `progress = TRUE`")
)

# As lm() takes them: NULL or a list naming fixed-effect factors, for model.matrix().
check_contrasts <- function(contrasts) {
  if (!is.null(contrasts) && (!is.list(contrasts) || is.null(names(contrasts)) ||
                              any(names(contrasts) == ""))) {
    stop("`contrasts` must be NULL or a named list, as for lm(): e.g. list(f = \"contr.sum\")",
         call. = FALSE)
  }
  contrasts
}

check_backend <- function(backend) {
  if (!is.character(backend) || length(backend) != 1L || !backend %in% c("threads", "future")) {
    stop("`backend` must be \"threads\" or \"future\"", call. = FALSE)
  }
  backend
}

# The one check of every `threads` argument: a finite whole number of at least 1, capped
# at the cores available, because each thread is an OS thread (a million of them hang R).
check_threads <- function(threads) {
  if (!is.numeric(threads) || length(threads) != 1L || !is.finite(threads) ||
      threads < 1 || threads != round(threads)) {
    stop("`threads` must be a whole number of at least 1 (a finite number; more threads ",
         "than cores are not used)", call. = FALSE)
  }
  cores <- available_cores()
  if (threads > cores) {
    message(sprintf("using %d threads, the number of cores available, instead of the %s requested",
                    cores, if (threads < 1e15) format(threads, big.mark = ",", scientific = FALSE)
                    else format(threads)))
    return(cores)
  }
  as.integer(threads)
}

# The default `threads`: option fullrandom.threads, else every core available.
default_threads <- function() getOption("fullrandom.threads", available_cores())

# The cores this process may use; at most 2 under R CMD check --as-cran, which sets
# _R_CHECK_LIMIT_CORES_ (CRAN's policy for checks), as the parallel package reads it.
available_cores <- function() {
  cores <- parallel::detectCores()
  if (is.na(cores) || cores < 1L) cores <- fr_available_threads()
  limit <- tolower(Sys.getenv("_R_CHECK_LIMIT_CORES_", ""))
  if (nzchar(limit) && limit != "false") cores <- min(cores, 2L)
  as.integer(cores)
}

report_dropped_columns <- function(columns, kept) {
  dropped <- setdiff(seq_along(columns), kept)
  if (length(dropped) == 0L) return(invisible())
  message(sprintf(
    "fixed-effect model matrix is rank deficient so dropping %d %s: %s",
    length(dropped), ngettext(length(dropped), "column / coefficient", "columns / coefficients"),
    paste(columns[dropped], collapse = ", ")
  ))
}

boundary_message <- function(terms) {
  sprintf(
    "boundary (singular) fit: the %s of %s %s estimated at 0 (see ?fr_fit)",
    ngettext(length(terms), "variance", "variances"),
    paste(term_label(terms), collapse = ", "),
    ngettext(length(terms), "is", "are")
  )
}

# Sum over terms of each observation's predicted random effect.
random_part <- function(ranef_values, flist) {
  out <- numeric(length(flist[[1L]]))
  # Unnamed, so that indexing does not build a vector of n names.
  for (k in names(flist)) out <- out + unname(ranef_values[[k]])[unclass(flist[[k]])]
  out
}
