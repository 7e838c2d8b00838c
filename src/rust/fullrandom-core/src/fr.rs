//! Matloff's Full Randomness (FR) estimator for a model with one random intercept,
//! from "A New Framework for Random Effects Models", sections 4 and 5.
//!
//! The group sizes `N_i` are random; the pivots are the group totals
//! `S_i = sum_{j <= N_i} Y_ij`. Conditioning on `N` ("the Pythagorean theorem for
//! expectations", `Var(U) = E[Var(U | V)] + Var(E[U | V])`) gives
//!
//! ```text
//! Var(S) = (nu2 + nu1^2) s2_a + nu1 s2_e + Var(F)      (paper eqs. 17 and 21)
//! Var(Y) = s2_a + s2_e + Var(h)                        (paper eq. 18)
//! ```
//!
//! where `nu1`, `nu2` are the mean and variance of `N`, `h_ij` is the part of the mean
//! that depends on the group size only and `F_i = sum_j h_ij` its group total:
//!
//! * model (2), `Y_ij = mu + a_i + e_ij`: `h = mu`, `F = mu N`, `Var(F) = mu^2 nu2`, and
//!   `Var(h) = 0`, which are eqs. 17 and 18 exactly;
//! * model (3), `Y_ij = c1 + c2 N_i + a_i + e_ij` (the `size()` covariate):
//!   `F = c1 N + c2 N^2` (eq. 20), and `Var(F)` is the sample variance of
//!   `c1 N_i + c2 N_i^2` at the current `c` (eqs. 21-22).
//!
//! Other regressors are estimated separately (eq. 19) and removed first: the equations
//! are applied to `Y*_ij = Y_ij - w_ij' beta`. The left-hand sides are the sample
//! variances of the `S_i` (over the `r` groups) and of the `Y*_ij` (over the `M`
//! observations).
//!
//! **Divisors.** Every sample moment is a moment of the empirical distribution
//! (divisor `r` or `M`, not `r - 1` or `M - 1`). This is section 5's reading: with
//! fixed `n_i` the same equations arise from treating the `n_i` as uniform on
//! `{n_1, ..., n_r}`, and with these divisors the two estimators coincide exactly
//! (the variance equation becomes `mean(Y_i^2) = mean(n_i^2) (s2_a + mu^2) + nu1 s2_e`,
//! eq. 24).
//!
//! **The fixed effects in the equations.** Without `size()` columns they are OLS
//! (eq. 19; `mu = Y.. / M`). With them, the equations are nonlinear in `c` (eq. 20)
//! and are solved iteratively: the coefficients are the GLS estimate at the current
//! components, and the components solve the equations at the current coefficients.
//! GLS depends on the components only through the intraclass correlation
//! `rho = s2_a / (s2_a + s2_e)`, so the joint solution is a fixed point of the map
//! `rho -> rho(equations at c_GLS(rho))` on `[0, 1]`; it is found by bisection (plain
//! substitution can cycle when the group sizes have a heavy tail). `rho = 0` is OLS;
//! a fixed point there is a boundary fit. When the map stays above the diagonal up to
//! `rho = 1` the equations leave no positive residual variance at any fixed point and
//! the fit is an error. At the fixed point the coefficients in the equations are the
//! reported GLS fixed effects.
//!
//! **Numerics.** `Var(S) - Var(F)` is computed as `Var(D) + 2 Cov(D, F)` with
//! `D = S - F` the group totals of the residuals, and `Var(Y*) - Var(h)` as
//! `Var(e) + 2 Cov(e, h)`: the same numbers, without subtracting two large
//! variances when the mean is far from zero.

use crate::error::FitError;
use crate::mixed::{solve_mixed_model, MixedModelSolution};
use crate::moments::{fit_variance_components, term_label, MomentEquations, VarianceComponents};
use crate::ols::{ols_from_stats, OlsFit};
use crate::stats::SufficientStats;
use faer::Mat;

/// Width of the bracket of the intraclass correlation at which the bisection stops.
pub const FR_TOLERANCE: f64 = 1e-14;
/// The upper end of the bracket: a correlation this close to 1 means no residual variance.
const RHO_MAX: f64 = 1.0 - 1e-9;

/// The empirical distribution of the group sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSizes {
    /// Number of groups with observations, `r`.
    pub n_groups: usize,
    /// `nu1`, the mean of the `N_i`.
    pub mean: f64,
    /// `nu2`, the variance of the `N_i` (divisor `r`).
    pub variance: f64,
}

#[derive(Debug, Clone)]
pub struct FullRandomnessFit {
    pub ols: OlsFit,
    pub group_sizes: GroupSizes,
    /// Rows: the observation-level equation (`Var(Y)`), then the group-total equation
    /// (`Var(S)`); unknowns `(s2_a, s2_e)`.
    pub equations: MomentEquations,
    pub components: VarianceComponents,
    pub mixed: MixedModelSolution,
    /// The coefficients (all columns, NaN where aliased) at which the equations were
    /// evaluated: OLS, or the GLS fixed point with `size()` columns.
    pub coef_in_equations: Vec<f64>,
    pub iterations: usize,
}

/// The group sizes of the (only) factor, over the levels that have observations.
pub fn group_sizes(stats: &SufficientStats) -> GroupSizes {
    let counts: Vec<f64> = stats.levels[0].counts.iter().filter(|&&n| n > 0).map(|&n| n as f64).collect();
    let (mean, variance) = mean_and_variance(&counts);
    GroupSizes { n_groups: counts.len(), mean, variance }
}

/// The two FR moment equations at the coefficients `coef` (original parametrisation,
/// all `p` columns, only the `kept` ones read). `sizes` are [`group_sizes`]`(stats)`;
/// `size_columns` are the columns that are functions of the group size; with the
/// intercept they make up `h`.
pub fn fr_equations(
    stats: &SufficientStats,
    sizes: &GroupSizes,
    kept: &[usize],
    coef: &[f64],
    size_columns: &[usize],
) -> MomentEquations {
    let p = stats.n_fixed();
    let m = stats.n_obs as f64;
    let shift = &stats.shift;
    // The coefficients on the shifted columns: slopes unchanged, the intercept moved.
    let mut coef_shifted: Vec<f64> = kept.iter().map(|&j| coef[j]).collect();
    if let Some(j0) = stats.intercept {
        if let Some(c0) = kept.iter().position(|&j| j == j0) {
            let moved: f64 = kept.iter().filter(|&&j| j != j0).map(|&j| shift.x[j] * coef[j]).sum();
            coef_shifted[c0] = coef[j0] - shift.y + moved;
        }
    }
    let in_h = |j: usize| Some(j) == stats.intercept || size_columns.contains(&j);
    // Non-constant columns of h (the intercept does not vary).
    let h_slopes: Vec<(usize, usize)> =
        kept.iter().enumerate().filter(|&(_, &j)| in_h(j) && Some(j) != stats.intercept).map(|(c, &j)| (c, j)).collect();

    // Observation level: e = y~ - X~ b~, the residual at coef.
    let xtx_b = |j: usize| -> f64 { kept.iter().zip(&coef_shifted).map(|(&l, b)| stats.xtx[l * p + j] * b).sum() };
    let b_xty: f64 = kept.iter().zip(&coef_shifted).map(|(&j, b)| b * stats.xty[j]).sum();
    let b_xtx_b: f64 = kept.iter().zip(&coef_shifted).map(|(&j, b)| b * xtx_b(j)).sum();
    let sum_e = stats.sum_y - kept.iter().zip(&coef_shifted).map(|(&j, b)| stats.sum_x[j] * b).sum::<f64>();
    let mean_e = sum_e / m;
    let var_e = (stats.yty - 2.0 * b_xty + b_xtx_b) / m - mean_e * mean_e;
    // Cov(e, h) with h~ = sum over the varying columns of h of x~_j b_j.
    let sum_e_h: f64 = h_slopes.iter().map(|&(c, j)| coef_shifted[c] * (stats.xty[j] - xtx_b(j))).sum();
    let mean_h: f64 = h_slopes.iter().map(|&(c, j)| coef_shifted[c] * stats.sum_x[j]).sum::<f64>() / m;
    let cov_e_h = sum_e_h / m - mean_e * mean_h;

    // Group level: D_i = sum_j e_ij, F_i = sum_j h_ij (original columns).
    let levels = &stats.levels[0];
    let g_all = levels.n_levels();
    let mut d = Vec::with_capacity(g_all);
    let mut f = Vec::with_capacity(g_all);
    for g in (0..g_all).filter(|&g| levels.counts[g] > 0) {
        let n_g = levels.counts[g] as f64;
        let sum_x = |j: usize| levels.sum_x[j * g_all + g];
        d.push(levels.sum_y[g] - kept.iter().zip(&coef_shifted).map(|(&j, b)| sum_x(j) * b).sum::<f64>());
        f.push(kept.iter().filter(|&&j| in_h(j)).map(|&j| (sum_x(j) + n_g * shift.x[j]) * coef[j]).sum::<f64>());
    }
    let (mean_d, var_d) = mean_and_variance(&d);
    let mean_f = f.iter().sum::<f64>() / f.len() as f64;
    let cov_d_f = d.iter().zip(&f).map(|(a, b)| (a - mean_d) * (b - mean_f)).sum::<f64>() / d.len() as f64;

    let lhs = Mat::from_fn(2, 2, |i, j| match (i, j) {
        (0, _) => 1.0,
        (1, 0) => sizes.variance + sizes.mean * sizes.mean,
        _ => sizes.mean,
    });
    MomentEquations {
        factor_names: stats.factor_names.clone(),
        n_levels: vec![sizes.n_groups],
        lhs,
        q: vec![var_e + 2.0 * cov_e_h, var_d + 2.0 * cov_d_f],
    }
}

/// The FR fit: the equations, their solution, and the mixed-model equations at it,
/// iterated to the fixed point when the model has `size()` columns (see the module
/// documentation). `keep_going` is asked between iterations.
pub fn fit_full_randomness(
    stats: &SufficientStats,
    size_columns: &[usize],
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<FullRandomnessFit, FitError> {
    if stats.n_factors() != 1 {
        let terms: Vec<String> = stats.factor_names.iter().map(|n| term_label(n)).collect();
        return Err(FitError::InvalidInput(format!(
            "the Full Randomness estimator (method = \"fr\") is for models with one random-intercept term; this model has {}: {}",
            terms.len(),
            terms.join(", ")
        )));
    }
    let p = stats.n_fixed();
    if let Some(&j) = size_columns.iter().find(|&&j| j >= p) {
        return Err(FitError::InvalidInput(format!("size column {j} is beyond the {p} fixed-effect columns")));
    }
    let ols = ols_from_stats(stats)?;
    let group_sizes = group_sizes(stats);
    let has_size = size_columns.iter().any(|&j| ols.kept.contains(&j) && Some(j) != stats.intercept);
    let mut evaluations = 0;
    let rho = if has_size {
        let mut at = |rho: f64| -> Result<f64, FitError> {
            if !keep_going() {
                return Err(FitError::Interrupted);
            }
            evaluations += 1;
            let coef = gls_at(stats, &ols, rho, pool, keep_going)?;
            let equations = fr_equations(stats, &group_sizes, &ols.kept, &coef, size_columns);
            Ok(correlation_of(&fit_variance_components(&equations)?.raw))
        };
        let (mut low, mut high) = (0.0, RHO_MAX);
        if at(low)? <= low {
            low
        } else if at(high)? >= high {
            let terms = term_label(&stats.factor_names[0]);
            return Err(FitError::NotIdentifiable(format!(
                "the Full Randomness equations with size() leave no positive residual variance at any GLS fixed point: they put all the variance in {terms}. This happens when a few very large groups dominate Var(S); method = \"moments\" does not have this weakness"
            )));
        } else {
            while high - low > FR_TOLERANCE {
                let mid = 0.5 * (low + high);
                if at(mid)? > mid {
                    low = mid;
                } else {
                    high = mid;
                }
            }
            0.5 * (low + high)
        }
    } else {
        0.0
    };
    let coef = gls_at(stats, &ols, rho, pool, keep_going)?;
    let equations = fr_equations(stats, &group_sizes, &ols.kept, &coef, size_columns);
    let components = fit_variance_components(&equations)?;
    let mixed = solve_mixed_model(stats, &ols, &components, pool, keep_going)?;
    Ok(FullRandomnessFit {
        ols,
        group_sizes,
        equations,
        components,
        mixed,
        coef_in_equations: coef,
        iterations: evaluations.max(1),
    })
}

/// The GLS coefficients (all columns) when the intraclass correlation is `rho` (OLS at 0).
fn gls_at(
    stats: &SufficientStats,
    ols: &OlsFit,
    rho: f64,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<Vec<f64>, FitError> {
    if rho <= 0.0 {
        return Ok(ols.coef.clone());
    }
    let components = VarianceComponents { raw: vec![rho, 1.0 - rho], estimate: vec![rho, 1.0 - rho], at_boundary: vec![false] };
    Ok(solve_mixed_model(stats, ols, &components, pool, keep_going)?.coef)
}

/// `s2_a / (s2_a + s2_e)` of an unconstrained solution, clamped to `[0, 1]`: a
/// non-positive residual variance counts as 1, a negative `s2_a` as 0.
fn correlation_of(raw: &[f64]) -> f64 {
    let (a, e) = (raw[0], raw[1]);
    if e <= 0.0 {
        1.0
    } else if a <= 0.0 {
        0.0
    } else {
        a / (a + e)
    }
}

/// Mean and variance (divisor n) by two passes.
fn mean_and_variance(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, variance)
}
