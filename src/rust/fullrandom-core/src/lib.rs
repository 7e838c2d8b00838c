//! # fullrandom-core
//!
//! Method-of-moments estimation of linear mixed models
//!
//! ```text
//! y = X b + sum_k Z_k u_k + e,   Var(u_k) = s2_k I,   Var(e) = s2 I,
//! ```
//!
//! with no distributional assumption beyond the second moments. The modules follow the
//! steps of the method:
//!
//! 1. [`data`]: the borrowed input (response, fixed-effect matrix, grouping codes).
//! 2. [`grouping`]: counting sorts that group rows by level and count the cells of
//!    every pair of factors in O(N), without hashing.
//! 3. [`stats`]: one parallel pass producing [`SufficientStats`], which merge exactly:
//!    the statistics of a union of row sets are the merge of theirs.
//! 4. [`ols`]: ordinary least squares from the statistics, with aliased columns dropped.
//! 5. [`moments`]: the within-level sums of squares `Q_k`, their expectations
//!    `E[Q_k] = sum_l s2_l c_kl + s2 c_ke` in closed form, and the solution of the
//!    moment equations with the boundary (negative component) rule.
//! 6. [`mixed`]: Henderson's mixed-model equations with the estimates plugged in: GLS
//!    fixed effects, their covariance and the BLUPs, again from the statistics alone;
//!    then the fitted values and residuals in one more pass over the rows.
//! 7. [`fr`]: Matloff's Full Randomness estimator for one random intercept (random group
//!    sizes, group totals as pivots, the `size()` covariate) or two crossed ones (random
//!    row and column counts, model 7), an alternative to step 5.
//!
//! 9. [`family`] and [`glmm`]: binomial and Poisson GLMMs by Jiang's method of moments
//!    (first moments and within-level cross-products, expectations by quadrature),
//!    conditional modes by penalized IRLS with the solver of [`mixed`].
//!
//! 8. [`bootstrap`]: the pigeonhole bootstrap, every replicate's statistics made from the
//!    rows and fitted as in steps 4-6 (or 7).
//! 9. [`npmle`]: the distribution of a term's effects after the fit: per-level sums of
//!    powers of residuals (mergeable), the Kiefer-Wolfowitz NPMLE of the effects'
//!    distribution from binned level means, empirical Bayes posterior means and
//!    predictive quantiles.
//!
//! No R types appear here; the R package converts at its boundary.

pub mod bootstrap;
pub mod composite;
pub mod condvar;
pub mod data;
pub mod dense;
pub mod efficient;
pub mod efficient_slopes;
pub mod error;
pub mod family;
pub mod fr;
pub mod glmm;
pub mod grouping;
pub mod laplace;
pub mod likelihood;
pub mod mixed;
pub mod moments;
pub mod npmle;
pub mod ols;
pub mod slopes;
pub mod stats;

pub use data::{FactorCodes, FixedColumn, ModelData};
pub use efficient::{EfficientOptions, TraceAccuracy};
pub use error::FitError;
pub use fr::{
    fit_full_randomness, fit_full_randomness_opts, fit_full_randomness_with, CrossedCounts, FrOptions,
    FullRandomnessFit, GroupSizes,
};
pub use likelihood::{Criterion, LikelihoodFit};
pub use mixed::{fitted_and_residuals, solve_mixed_model, solve_mixed_model_to, Accuracy, MixedModelSolution};
pub use moments::{fit_variance_components, MomentEquations, VarianceComponents};
pub use ols::{ols_from_stats, OlsFit};
/// The pool [`thread_pool`] returns, for callers without a rayon dependency of their own.
pub use rayon::ThreadPool;
pub use stats::{merge_statistics, Shift, SufficientStats};

/// Everything the moment fit produces, in the original (unshifted) parametrisation.
#[derive(Debug, Clone)]
pub struct MomentFit {
    pub ols: OlsFit,
    pub equations: MomentEquations,
    pub components: VarianceComponents,
    pub mixed: MixedModelSolution,
    /// For the efficient estimator: the moment fit it started from and the accuracy of
    /// its traces (`equations` and `components` are then the MINQUE ones).
    pub efficient: Option<EfficientStep>,
}

/// What the efficient estimator adds to a fit.
#[derive(Debug, Clone)]
pub struct EfficientStep {
    /// The unbiased moment equations and their solution: the prior of the first step.
    pub moment_equations: MomentEquations,
    pub moment_components: VarianceComponents,
    /// The trace estimates of the last step.
    pub accuracy: TraceAccuracy,
    /// MINQUE steps taken.
    pub steps: usize,
}

/// Computes the sufficient statistics of `data` with `threads` worker threads, solves
/// the moment equations and then the mixed-model equations.
///
/// The result does not depend on `threads`: every parallel reduction runs over a fixed
/// partition of the rows (or levels) and is merged in a fixed order.
pub fn fit(data: &ModelData<'_>, threads: usize) -> Result<MomentFit, FitError> {
    fit_with(data, threads, &mut || true)
}

/// [`fit`], asking `keep_going` between iterations of the solver (on the calling thread);
/// when it answers false the fit stops with [`FitError::Interrupted`].
pub fn fit_with(
    data: &ModelData<'_>,
    threads: usize,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<MomentFit, FitError> {
    let pool = thread_pool(threads)?;
    let stats = pool.install(|| SufficientStats::compute(data))?;
    fit_stats_in(&stats, &pool, keep_going)
}

/// Solves the moment and mixed-model equations from (possibly merged) sufficient statistics.
pub fn fit_from_stats(stats: &SufficientStats, threads: usize) -> Result<MomentFit, FitError> {
    fit_stats_in(stats, &thread_pool(threads)?, &mut || true)
}

/// The sufficient statistics of `data` with `threads` worker threads (for fits in chunks:
/// statistics per chunk, merged, then [`fit_from_stats_with`]).
pub fn compute_statistics(data: &ModelData<'_>, threads: usize) -> Result<SufficientStats, FitError> {
    thread_pool(threads)?.install(|| SufficientStats::compute(data))
}

/// [`fit_from_stats`], asking `keep_going` between iterations of the solver.
pub fn fit_from_stats_with(
    stats: &SufficientStats,
    threads: usize,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<MomentFit, FitError> {
    fit_stats_in(stats, &thread_pool(threads)?, keep_going)
}

/// Matloff's Full Randomness fit of a model with one random intercept or two crossed
/// ones ([`fr`]) from (possibly merged) sufficient statistics; `size_columns` are the
/// fixed-effect columns that are functions of a group size; `options` asks for the
/// crossed equations with the shared-level correction (eq. 27) and for the equations of
/// the least-squares residuals ([`FrOptions`]).
pub fn fit_full_randomness_from_stats_with(
    stats: &SufficientStats,
    size_columns: &[usize],
    options: FrOptions,
    threads: usize,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<FullRandomnessFit, FitError> {
    fit_full_randomness_opts(stats, size_columns, options, &thread_pool(threads)?, keep_going)
}

/// The mixed-model equations at given variance components (`K` random-effect variances,
/// then the residual variance), e.g. the average of chunk estimates: OLS for the
/// aliasing of the columns, then GLS fixed effects, their covariance and the BLUPs.
pub fn fit_at_components(
    stats: &SufficientStats,
    estimate: &[f64],
    threads: usize,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<(OlsFit, MixedModelSolution), FitError> {
    let k_factors = stats.n_factors();
    if estimate.len() != k_factors + 1 || estimate.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
        return Err(FitError::InvalidInput(format!(
            "{} variance components given for {} random terms and the residual; all must be finite and >= 0",
            estimate.len(),
            k_factors
        )));
    }
    let ols = ols_from_stats(stats)?;
    let components = VarianceComponents {
        raw: estimate.to_vec(),
        estimate: estimate.to_vec(),
        at_boundary: estimate[..k_factors].iter().map(|&v| v == 0.0).collect(),
    };
    let mixed = solve_mixed_model(stats, &ols, &components, &thread_pool(threads)?, keep_going)?;
    Ok((ols, mixed))
}

/// The variance components alone (OLS, the moment equations and their solution),
/// without the mixed-model equations: the first half of [`fit`], for benchmarks and for
/// callers that need no fixed effects or BLUPs.
pub fn fit_components(
    data: &ModelData<'_>,
    threads: usize,
) -> Result<(OlsFit, MomentEquations, VarianceComponents), FitError> {
    let pool = thread_pool(threads)?;
    let stats = pool.install(|| SufficientStats::compute(data))?;
    components_in(&stats, &pool)
}

/// OLS, the moment equations and their solution from the statistics.
pub(crate) fn components_in(
    stats: &SufficientStats,
    pool: &rayon::ThreadPool,
) -> Result<(OlsFit, MomentEquations, VarianceComponents), FitError> {
    let ols = ols_from_stats(stats)?;
    let equations = pool.install(|| MomentEquations::from_stats(stats, &ols))?;
    let components = fit_variance_components(&equations)?;
    Ok((ols, equations, components))
}

fn fit_stats_in(
    stats: &SufficientStats,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<MomentFit, FitError> {
    let (ols, equations, components) = components_in(stats, pool)?;
    let mixed = solve_mixed_model(stats, &ols, &components, pool, keep_going)?;
    Ok(MomentFit { ols, equations, components, mixed, efficient: None })
}

/// The efficient estimator ([`efficient`]) from (possibly merged) statistics: the moment
/// fit, then `steps` MINQUE steps, each at the components of the one before (one step is
/// asymptotically efficient; iterating converges to REML), then the mixed-model equations.
pub fn fit_efficient_from_stats_with(
    stats: &SufficientStats,
    options: &EfficientOptions,
    steps: usize,
    threads: usize,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<MomentFit, FitError> {
    let pool = thread_pool(threads)?;
    let (ols, moment_equations, moment_components) = components_in(stats, &pool)?;
    let mut prior = moment_components.clone();
    let mut last = None;
    for _ in 0..steps.max(1) {
        let (equations, accuracy) = efficient::efficient_equations(stats, &ols, &prior, options, &pool, keep_going)?;
        let components = fit_variance_components(&equations)?;
        prior = components.clone();
        last = Some((equations, components, accuracy));
    }
    let (equations, components, accuracy) = last.expect("at least one step");
    let mixed = solve_mixed_model(stats, &ols, &components, &pool, keep_going)?;
    let efficient = EfficientStep { moment_equations, moment_components, accuracy, steps: steps.max(1) };
    Ok(MomentFit { ols, equations, components, mixed, efficient: Some(efficient) })
}

/// A private rayon pool of `threads` threads (at least 1).
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, FitError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| FitError::Internal(format!("could not start {threads} threads: {e}")))
}

/// Runs `work` on a private rayon pool of `threads` threads (1 or more).
pub fn run_with_threads<T: Send>(threads: usize, work: impl FnOnce() -> T + Send) -> Result<T, FitError> {
    Ok(thread_pool(threads)?.install(work))
}

/// REML or maximum likelihood ([`likelihood`]) from (possibly merged) statistics.
pub fn fit_likelihood_from_stats_with(
    stats: &SufficientStats,
    criterion: Criterion,
    threads: usize,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<LikelihoodFit, FitError> {
    let pool = thread_pool(threads)?;
    likelihood::fit_likelihood(stats, criterion, &likelihood::TRACES, &pool, keep_going)
}
