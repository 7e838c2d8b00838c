//! Generalized linear mixed models (`fullrandom_core::glmm`): the fit and the
//! conditional variances of its modes.

use crate::{column_major, model_data, no_user_interrupt, r_error};
use extendr_api::prelude::*;
use extendr_api::AsTypedSlice;
use extendr_api::Result;
use fullrandom_core::family::GlmFamily;
use fullrandom_core::glmm::{self, FixedWeights, GlmmChunk, GlmmOptions, LevelWeights, Statistic};
use fullrandom_core::laplace::{self, Laplace};

/// The rows as the core takes them, with the family: `trials` and `offset` NULL or
/// double vectors (R keeps them alive for the whole call).
fn glmm_chunk(
    model: &List,
    family: &str,
    link: &str,
    trials: &Robj,
    offset: &Robj,
) -> Result<(GlmmChunk<'static>, GlmFamily)> {
    let data = model_data(model)?;
    let family = GlmFamily::from_names(family, link).map_err(r_error)?;
    let optional = |x: &Robj, what: &str| -> Result<Option<&'static [f64]>> {
        if x.is_null() {
            return Ok(None);
        }
        let v: &'static [f64] = AsTypedSlice::as_typed_slice(x)
            .ok_or_else(|| Error::Other(format!("the {what} must be a double vector")))?;
        Ok(Some(v))
    };
    let chunk = GlmmChunk { data, trials: optional(trials, "trials")?, offset: optional(offset, "offsets")? };
    Ok((chunk, family))
}

/// Fits a binomial or Poisson GLMM (internal; use fr_fit() with `family`). Checks for
/// user interrupts between Newton iterations.
///
/// @param model the model as for fr_moment_fit() (`y` the successes or counts).
/// @param family,link the family's and link's names, as in R's family objects.
/// @param trials NULL (one trial a row) or the binomial trials of every row (double).
/// @param offset NULL or the offsets on the linear-predictor scale (double).
/// @param information_weights whether to take the information-weighted second step.
/// @param working_covariance whether the fixed effects solve the quasi-score with the
///   working covariance (`FALSE`: the independence first-moment equations).
/// @param method `"moments"` (Jiang's moment equations), `"auto"` (`"efficient"` where the
///   per-level likelihoods are the marginal likelihood, `"moments"` otherwise; the method
///   used is returned as `method`) or `"efficient"` (the per-level
///   marginal likelihoods of `fullrandom_core::composite`, started at the moment
///   estimates: `first_coef` and `first_variances` are then the moment estimates).
/// @param threads number of worker threads.
/// @return a list: `coef`, `variances`, `at_boundary`, `vcov` (p x p, by column),
///   `vcov_model` (the model-based covariance, NULL with the independence equations),
///   `vcov_variances` (K x K), `ranef` (list per term), `first_coef`, `first_variances`,
///   `statistic` ("pairs" or "within-row" per term), `second_step` (whether the
///   information-weighted step converged), `iterations`, `working_iterations`,
///   `pirls_iterations`, `timings` (seconds per stage, named by `stages`), `passes`
///   (over the rows: of all the equations, of the fixed-effect equations) and `method`;
///   the likelihood fit adds `loglik` and `exact`.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn fr_glmm_fit(
    model: List,
    family: &str,
    link: &str,
    trials: Robj,
    offset: Robj,
    information_weights: bool,
    working_covariance: bool,
    method: &str,
    threads: i32,
) -> Result<List> {
    let (chunk, family) = glmm_chunk(&model, family, link, &trials, &offset)?;
    let options = glmm_options(information_weights, working_covariance, true);
    let pool = fullrandom_core::thread_pool(threads.max(1) as usize).map_err(r_error)?;
    glmm_fit_list(std::slice::from_ref(&chunk), family, &options, method, &pool, &mut no_user_interrupt)
}

/// The core's options for the moment fit.
pub(crate) fn glmm_options(information_weights: bool, working_covariance: bool, modes: bool) -> GlmmOptions {
    GlmmOptions {
        weights: if information_weights { LevelWeights::Information } else { LevelWeights::Simple },
        fixed: if working_covariance { FixedWeights::Working } else { FixedWeights::Independence },
        modes,
        ..Default::default()
    }
}

/// The fit of the rows of `chunks` by `method` (`"auto"`, `"moments"` or `"efficient"`),
/// as R receives it; `keep_going` is called between passes.
pub(crate) fn glmm_fit_list(
    chunks: &[GlmmChunk<'static>],
    family: GlmFamily,
    options: &GlmmOptions,
    method: &str,
    pool: &fullrandom_core::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<List> {
    let method = if method == "auto" { auto_method(chunks, family)? } else { method };
    match method {
        "efficient" => efficient_fit(chunks, family, options.modes, pool, keep_going),
        "laplace" => {
            let laplace = Laplace::new(chunks, family).map_err(r_error)?;
            check_factor_size(&laplace)?;
            laplace_fit(&laplace, chunks, family, pool, keep_going)
        }
        "moments" => {
            let fit = glmm::fit_glmm(chunks, family, options, pool, keep_going).map_err(r_error)?;
            Ok(list!(
                coef = fit.coef,
                variances = fit.variances,
                at_boundary = fit.at_boundary,
                vcov = column_major(&fit.vcov),
                vcov_model = fit.vcov_model.as_ref().map_or(Robj::from(()), |m| Robj::from(column_major(m))),
                vcov_variances = column_major(&fit.vcov_variances),
                ranef = List::from_values(fit.ranef.iter().map(|u| Robj::from(u.as_slice()))),
                first_coef = fit.first_coef,
                first_variances = fit.first_variances,
                statistic = statistic_names(&fit.statistic),
                second_step = fit.second_step,
                iterations = fit.iterations as i32,
                working_iterations = fit.working_iterations as i32,
                pirls_iterations = fit.pirls_iterations as i32,
                timings = fit.timings.iter().map(|t| t.1).collect::<Vec<f64>>(),
                stages = fit.timings.iter().map(|t| t.0.to_string()).collect::<Vec<String>>(),
                passes = fit.passes.iter().map(|&p| p as i32).collect::<Vec<i32>>(),
                method = "moments"
            ))
        }
        _ => Err(Error::Other(format!(
            "unknown GLMM method \"{method}\": use \"moments\", \"laplace\" or \"efficient\""
        ))),
    }
}

/// The estimator `method = "auto"` takes: the likelihood fit (`"efficient"`) where the
/// per-level likelihoods are the marginal likelihood (one term, nested terms); for crossed
/// terms the Laplace fit where [`fullrandom_core::laplace::is_affordable`] (up to a few
/// million rows, with a small Cholesky factor), the moments above.
pub(crate) fn auto_method(chunks: &[GlmmChunk<'static>], family: GlmFamily) -> Result<&'static str> {
    Ok(if fullrandom_core::composite::is_marginal_likelihood(chunks, family).map_err(r_error)? {
        "efficient"
    } else if fullrandom_core::laplace::is_affordable(chunks, family).map_err(r_error)? {
        "laplace"
    } else {
        "moments"
    })
}

/// Refuses a Laplace fit whose Cholesky factor would pass [`laplace::MAX_FACTOR_VALUES`].
fn check_factor_size(laplace: &Laplace) -> Result<()> {
    let values = laplace.factor_values();
    if values > laplace::MAX_FACTOR_VALUES {
        return Err(Error::Other(format!(
            "method = \"laplace\" needs a sparse Cholesky factor of {values} values ({:.1} GB), more than the {} allowed: \
             the crossed terms have too many levels; use method = \"moments\"",
            values as f64 * 8e-9,
            laplace::MAX_FACTOR_VALUES
        )));
    }
    Ok(())
}

fn statistic_names(statistic: &[Statistic]) -> Vec<String> {
    statistic
        .iter()
        .map(|s| match s {
            Statistic::Pairs => "pairs".to_string(),
            Statistic::WithinRow => "within-row".to_string(),
        })
        .collect()
}

/// The moment estimates that start a likelihood fit: the independence equations, no
/// modes (or, when they do not converge, 0 and variances of 0.5).
fn moment_start(
    chunks: &[GlmmChunk<'static>],
    family: GlmFamily,
    pool: &fullrandom_core::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<(Vec<f64>, Vec<f64>, Vec<Statistic>)> {
    let options = GlmmOptions {
        weights: LevelWeights::Simple,
        fixed: FixedWeights::Independence,
        modes: false,
        ..Default::default()
    };
    let first = chunks.first().ok_or_else(|| Error::Other("no data to fit".into()))?;
    let (p, k_terms) = (first.data.n_fixed(), first.data.factors.len());
    match glmm::fit_glmm(chunks, family, &options, pool, keep_going) {
        Ok(fit) => Ok((fit.coef, fit.variances, fit.statistic)),
        Err(fullrandom_core::FitError::NotConverged(_)) => {
            Ok((vec![0.0; p], vec![0.5; k_terms], vec![Statistic::Pairs; k_terms]))
        }
        Err(e) => Err(r_error(e)),
    }
}

/// The `d x d` block of `m` from row and column `from`, by column.
fn block(m: &faer::Mat<f64>, from: usize, d: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(d * d);
    for c in 0..d {
        for r in 0..d {
            out.push(m[(from + r, from + c)]);
        }
    }
    out
}

/// The likelihood fit of `fr_glmm_fit(method = "efficient")`: the moment estimates (the
/// independence equations, no modes) as the start, then the per-level marginal
/// likelihoods, then (if `modes`) the modes at the estimates. `vcov_model` is the inverse
/// observed information with one term (the marginal likelihood) and otherwise (a
/// composite likelihood) the model-based covariance of the quasi-score at the estimates
/// (`glmm::fixed_effects_covariance_at`); `vcov` is always the sandwich.
fn efficient_fit(
    chunks: &[GlmmChunk<'static>],
    family: GlmFamily,
    modes: bool,
    pool: &fullrandom_core::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<List> {
    let clock = std::time::Instant::now();
    let first = chunks.first().ok_or_else(|| Error::Other("no data to fit".into()))?;
    let p = first.data.n_fixed();
    let k_terms = first.data.factors.len();
    let (b0, s0, statistic) = moment_start(chunks, family, pool, keep_going)?;
    let t_moments = clock.elapsed().as_secs_f64();
    let fit =
        fullrandom_core::composite::fit_composite(chunks, family, &b0, &s0, &Default::default(), pool, keep_going)
            .map_err(r_error)?;
    let t_fit = clock.elapsed().as_secs_f64() - t_moments;
    let (ranef, pirls) = if modes {
        glmm::modes_at(chunks, family, &fit.coef, &fit.variances, pool, keep_going).map_err(r_error)?
    } else {
        (Vec::new(), 0)
    };
    let t_modes = clock.elapsed().as_secs_f64() - t_moments - t_fit;
    let default = if fit.exact { &fit.vcov_model } else { &fit.vcov_sandwich };
    // With crossed terms the sandwich's fixed-effect block overstates the intercept's
    // variance (up to 3x in sd): vcov() takes the model-based covariance at the estimates.
    let vcov_fixed = if fit.exact {
        block(&fit.vcov_model, 0, p)
    } else {
        let v_s = faer::Mat::from_fn(k_terms, k_terms, |r, c| fit.vcov_sandwich[(p + r, p + c)]);
        let at = glmm::fixed_effects_covariance_at(chunks, family, &fit.coef, &fit.variances, &v_s, pool, keep_going)
            .map_err(r_error)?;
        block(&at, 0, p)
    };
    Ok(list!(
        coef = fit.coef,
        variances = fit.variances,
        at_boundary = fit.at_boundary,
        vcov = block(&fit.vcov_sandwich, 0, p),
        vcov_model = vcov_fixed,
        vcov_variances = block(default, p, k_terms),
        ranef = List::from_values(ranef.iter().map(|u| Robj::from(u.as_slice()))),
        first_coef = b0,
        first_variances = s0,
        statistic = statistic_names(&statistic),
        second_step = false,
        iterations = fit.iterations as i32,
        working_iterations = 0i32,
        pirls_iterations = pirls as i32,
        timings = vec![t_moments, t_fit, t_modes],
        stages = vec!["moments".to_string(), "likelihood".to_string(), "modes".to_string()],
        passes = vec![0i32, 0i32],
        loglik = fit.loglik,
        exact = fit.exact,
        method = "efficient"
    ))
}

/// The Laplace fit of `fr_glmm_fit(method = "laplace")` (glmer's `nAGQ = 1`): started
/// at the moment estimates (`first_coef`, `first_variances`), with its modes; `vcov` and
/// `vcov_model` are both the inverse Hessian's (no sandwich is computed).
fn laplace_fit(
    laplace: &Laplace,
    chunks: &[GlmmChunk<'static>],
    family: GlmFamily,
    pool: &fullrandom_core::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<List> {
    let clock = std::time::Instant::now();
    let (b0, s0, statistic) = moment_start(chunks, family, pool, keep_going)?;
    let t_moments = clock.elapsed().as_secs_f64();
    let fit = laplace.fit(&b0, &s0, &Default::default(), pool, keep_going).map_err(r_error)?;
    let t_fit = clock.elapsed().as_secs_f64() - t_moments;
    let vcov = column_major(&fit.vcov);
    Ok(list!(
        coef = fit.coef,
        variances = fit.variances,
        at_boundary = fit.at_boundary,
        vcov = vcov.clone(),
        vcov_model = vcov,
        vcov_variances = column_major(&fit.vcov_variances),
        ranef = List::from_values(fit.modes.iter().map(|u| Robj::from(u.as_slice()))),
        first_coef = b0,
        first_variances = s0,
        statistic = statistic_names(&statistic),
        second_step = false,
        iterations = fit.steps as i32,
        working_iterations = 0i32,
        pirls_iterations = 0i32,
        timings = vec![t_moments, t_fit],
        stages = vec!["moments".to_string(), "laplace".to_string()],
        passes = vec![fit.evaluations as i32, 0i32],
        loglik = fit.loglik,
        exact = false,
        method = "laplace"
    ))
}

/// The conditional variances of the modes of a GLMM fit, `diag((Z'WZ + G^-1)^-1)` with
/// the Fisher weights at the modes (internal; ranef(fit, condVar = TRUE)).
///
/// @param model,family,link,trials,offset as for fr_glmm_fit().
/// @param coef,variances the fit's fixed effects and variances.
/// @param modes list per term of the modes.
/// @param threads number of worker threads.
/// @return a list: `diagonal` and `std_error` (lists per term), `exact`, `probes`,
///   `max_relative_error`.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn fr_glmm_condvar(
    model: List,
    family: &str,
    link: &str,
    trials: Robj,
    offset: Robj,
    coef: &[f64],
    variances: &[f64],
    modes: List,
    threads: i32,
) -> Result<List> {
    let (chunk, family) = glmm_chunk(&model, family, link, &trials, &offset)?;
    let modes: Vec<Vec<f64>> = modes
        .values()
        .map(|u| {
            AsTypedSlice::<f64>::as_typed_slice(&u)
                .map(|v| v.to_vec())
                .ok_or_else(|| Error::Other("the modes must be double vectors".into()))
        })
        .collect::<Result<_>>()?;
    let pool = fullrandom_core::thread_pool(threads.max(1) as usize).map_err(r_error)?;
    let out = fullrandom_core::glmm::conditional_variances(
        std::slice::from_ref(&chunk),
        family,
        coef,
        variances,
        &modes,
        &pool,
        &mut no_user_interrupt,
    )
    .map_err(r_error)?;
    Ok(list!(
        diagonal = List::from_values(out.diagonal.iter().map(|d| Robj::from(d.as_slice()))),
        std_error = List::from_values(out.std_error.iter().map(|d| Robj::from(d.as_slice()))),
        exact = out.exact,
        probes = out.probes as i32,
        max_relative_error = out.max_relative_error
    ))
}

extendr_module! {
    mod glmm;
    fn fr_glmm_fit;
    fn fr_glmm_condvar;
}
