//! GLMM fits over several chunks of rows held in this process (`fr_fit(family =,
//! chunks =)`): the core's passes run over every chunk and merge their per-level sums,
//! so the fit equals the unchunked one. Also the conditional modes at given estimates
//! (for `combine = "average"`), and the progress reports of long fits.

use crate::glmm::{auto_method, glmm_fit_list, glmm_options};
use crate::{model_data, no_user_interrupt, r_error};
use extendr_api::prelude::*;
use extendr_api::AsTypedSlice;
use extendr_api::Result;
use fullrandom_core::family::GlmFamily;
use fullrandom_core::glmm::GlmmChunk;

/// Seconds between two calls of the progress function.
const PROGRESS_EVERY: f64 = 0.2;

/// The chunks as the core takes them: `models` a list of models (as for fr_glmm_fit(),
/// sharing the numbers of levels), `trials` and `offsets` lists of NULL or double vectors.
fn glmm_chunks(models: &List, trials: &List, offsets: &List) -> Result<Vec<GlmmChunk<'static>>> {
    if trials.len() != models.len() || offsets.len() != models.len() {
        return Err(Error::Other("models, trials and offsets differ in length".into()));
    }
    let optional = |x: Robj, what: &str| -> Result<Option<&'static [f64]>> {
        if x.is_null() {
            return Ok(None);
        }
        let v: &'static [f64] = AsTypedSlice::as_typed_slice(&x)
            .ok_or_else(|| Error::Other(format!("the {what} must be a double vector")))?;
        Ok(Some(v))
    };
    models
        .values()
        .zip(trials.values())
        .zip(offsets.values())
        .map(|((model, t), o)| {
            let model = model.as_list().ok_or_else(|| Error::Other("every model must be a list".into()))?;
            Ok(GlmmChunk { data: model_data(&model)?, trials: optional(t, "trials")?, offset: optional(o, "offsets")? })
        })
        .collect()
}

/// The core's check between passes: a user interrupt stops the fit; `progress` (an R
/// function of the number of steps so far, or NULL) is called at the first check and then
/// at most every `PROGRESS_EVERY` seconds (the bar decides when to show itself, so a
/// progress function sees every fit, however fast). Runs on R's thread only.
fn reporter(progress: &Robj) -> impl FnMut() -> bool + '_ {
    let function = if progress.is_null() { None } else { progress.as_function() };
    let mut steps: i32 = 0;
    let mut last: Option<std::time::Instant> = None;
    move || {
        steps = steps.saturating_add(1);
        if let Some(f) = &function {
            if last.is_none_or(|t| t.elapsed().as_secs_f64() >= PROGRESS_EVERY) {
                last = Some(std::time::Instant::now());
                // A failing progress bar does not stop the fit.
                let _ = f.call(pairlist!(steps));
            }
        }
        no_user_interrupt()
    }
}

/// Fits a binomial or Poisson GLMM to the rows of several chunks (internal; use fr_fit()
/// with `family` and `chunks` or files). Every pass of the estimator runs over all the
/// chunks, so the result equals fr_glmm_fit() on the rows stacked (up to rounding).
/// Checks for user interrupts between passes and calls `progress`.
///
/// @param models list of models as for fr_glmm_fit(), one per chunk, with the same
///   columns and numbers of levels (the codes of the whole data's levels).
/// @param family,link the family's and link's names.
/// @param trials,offsets lists (one element per chunk) of NULL or double vectors.
/// @param information_weights,working_covariance,method as for fr_glmm_fit().
/// @param modes whether to compute the conditional modes.
/// @param threads number of worker threads.
/// @param progress NULL, or a function of the number of solver steps so far.
/// @return a list as fr_glmm_fit() returns it.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn fr_glmm_fit_chunks(
    models: List,
    family: &str,
    link: &str,
    trials: List,
    offsets: List,
    information_weights: bool,
    working_covariance: bool,
    method: &str,
    modes: bool,
    threads: i32,
    progress: Robj,
) -> Result<List> {
    let chunks = glmm_chunks(&models, &trials, &offsets)?;
    let family = GlmFamily::from_names(family, link).map_err(r_error)?;
    let options = glmm_options(information_weights, working_covariance, modes);
    let pool = fullrandom_core::thread_pool(threads.max(1) as usize).map_err(r_error)?;
    glmm_fit_list(&chunks, family, &options, method, &pool, &mut reporter(&progress))
}

/// The estimator that `method = "auto"` takes for these rows (internal; fr_fit() with
/// `family`): `"efficient"` where the per-level likelihoods are the marginal likelihood
/// (one term, or nested terms), `"moments"` otherwise (crossed terms).
///
/// @param models,family,link,trials,offsets as for fr_glmm_fit_chunks().
/// @return `"efficient"` or `"moments"`.
/// @noRd
#[extendr]
fn fr_glmm_auto_method(models: List, family: &str, link: &str, trials: List, offsets: List) -> Result<String> {
    let chunks = glmm_chunks(&models, &trials, &offsets)?;
    let family = GlmFamily::from_names(family, link).map_err(r_error)?;
    Ok(auto_method(&chunks, family)?.to_string())
}

/// The conditional modes of a GLMM at given fixed effects and variances over the rows of
/// several chunks (internal; fr_fit(combine = "average") with a binomial or Poisson
/// family). Checks for user interrupts and calls `progress` between iterations.
///
/// @param models,family,link,trials,offsets as for fr_glmm_fit_chunks().
/// @param coef,variances the estimates.
/// @param threads number of worker threads.
/// @param progress NULL, or a function of the number of solver steps so far.
/// @return a list: `ranef` (list per term) and `pirls_iterations`.
/// @noRd
#[extendr]
fn fr_glmm_modes(
    models: List,
    family: &str,
    link: &str,
    trials: List,
    offsets: List,
    coef: &[f64],
    variances: &[f64],
    threads: i32,
    progress: Robj,
) -> Result<List> {
    let chunks = glmm_chunks(&models, &trials, &offsets)?;
    let family = GlmFamily::from_names(family, link).map_err(r_error)?;
    let pool = fullrandom_core::thread_pool(threads.max(1) as usize).map_err(r_error)?;
    let mut keep_going = reporter(&progress);
    let (ranef, iterations) =
        fullrandom_core::glmm::modes_at(&chunks, family, coef, variances, &pool, &mut keep_going).map_err(r_error)?;
    Ok(list!(
        ranef = List::from_values(ranef.iter().map(|u| Robj::from(u.as_slice()))),
        pirls_iterations = iterations as i32
    ))
}

extendr_module! {
    mod glmm_chunks;
    fn fr_glmm_fit_chunks;
    fn fr_glmm_auto_method;
    fn fr_glmm_modes;
}
