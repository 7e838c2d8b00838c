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
//! **Centred equations (option).** The paper's eq. 4 folds `mu` into the regressors and
//! eq. 19 removes them by least squares before "proceeding as before". Applied to the
//! residuals `Y*_ij = Y_ij - x_ij' b` (intercept and `size()` columns included), whose
//! mean given the sizes is zero, the same derivation gives the equations without
//! `Var(F)` and `Var(h)`: their left-hand sides are `Var(D)` and `Var(e)` alone. In the
//! population `Cov(D, F) = 0`, so both forms are consistent; in a sample the cross term
//! `2 Cov(D, F)` of the uncentred form has mean zero but a standard deviation
//! proportional to `|mu|` (to the size coefficients in general). [`FrOptions::centred`]
//! chooses the centred form, which does not depend on the location of the response.
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

/// The variants of the FR equations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrOptions {
    /// For two crossed terms: the shared-level correction of eq. 27.
    pub shared: bool,
    /// The equations applied to the least-squares residuals (eq. 19 with the intercept
    /// and `size()` columns among the regressors): without `Var(F)` and `Var(h)`.
    pub centred: bool,
}

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
    /// For the crossed model (7): the counts of both terms; `group_sizes` are then
    /// those of the first term.
    pub crossed: Option<CrossedCounts>,
    /// Whether the crossed equations used the shared-level correction (eq. 27).
    pub shared: bool,
    /// Whether the equations were applied to the residuals ([`FrOptions::centred`]).
    pub centred: bool,
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
/// intercept they make up `h`. With `centred`, the equations of the residuals (their
/// left sides without `Var(F)` and `Var(h)`).
pub fn fr_equations(
    stats: &SufficientStats,
    sizes: &GroupSizes,
    kept: &[usize],
    coef: &[f64],
    size_columns: &[usize],
    centred: bool,
) -> MomentEquations {
    let parts = EquationParts::new(stats, kept, coef, size_columns, centred);
    let lhs = Mat::from_fn(2, 2, |i, j| match (i, j) {
        (0, _) => 1.0,
        (1, 0) => sizes.variance + sizes.mean * sizes.mean,
        _ => sizes.mean,
    });
    MomentEquations {
        factor_names: stats.factor_names.clone(),
        n_levels: vec![sizes.n_groups],
        lhs,
        q: vec![parts.observation_q(), parts.totals_q(0)],
    }
}

/// The pieces shared by the left-hand sides of every FR equation: the coefficients on
/// the shifted columns and which columns make up `h`.
struct EquationParts<'a> {
    stats: &'a SufficientStats,
    kept: &'a [usize],
    coef: &'a [f64],
    coef_shifted: Vec<f64>,
    size_columns: &'a [usize],
    /// Leave out the mean's part (`Var(h)`, `Var(F)`): the equations of the residuals.
    centred: bool,
}

impl<'a> EquationParts<'a> {
    fn new(
        stats: &'a SufficientStats,
        kept: &'a [usize],
        coef: &'a [f64],
        size_columns: &'a [usize],
        centred: bool,
    ) -> Self {
        let shift = &stats.shift;
        // The coefficients on the shifted columns: slopes unchanged, the intercept moved.
        let mut coef_shifted: Vec<f64> = kept.iter().map(|&j| coef[j]).collect();
        if let Some(j0) = stats.intercept {
            if let Some(c0) = kept.iter().position(|&j| j == j0) {
                let moved: f64 = kept.iter().filter(|&&j| j != j0).map(|&j| shift.x[j] * coef[j]).sum();
                coef_shifted[c0] = coef[j0] - shift.y + moved;
            }
        }
        EquationParts { stats, kept, coef, coef_shifted, size_columns, centred }
    }

    fn in_h(&self, j: usize) -> bool {
        Some(j) == self.stats.intercept || self.size_columns.contains(&j)
    }

    fn xtx_b(&self, j: usize) -> f64 {
        let p = self.stats.n_fixed();
        self.kept.iter().zip(&self.coef_shifted).map(|(&l, b)| self.stats.xtx[l * p + j] * b).sum()
    }

    /// `Var(Y*) - Var(h)` over the observations, as `Var(e) + 2 Cov(e, h)`.
    fn observation_q(&self) -> f64 {
        let stats = self.stats;
        let m = stats.n_obs as f64;
        let (kept, coef_shifted) = (self.kept, &self.coef_shifted);
        // Non-constant columns of h (the intercept does not vary).
        let h_slopes: Vec<(usize, usize)> = kept
            .iter()
            .enumerate()
            .filter(|&(_, &j)| self.in_h(j) && Some(j) != stats.intercept)
            .map(|(c, &j)| (c, j))
            .collect();
        // Observation level: e = y~ - X~ b~, the residual at coef.
        let b_xty: f64 = kept.iter().zip(coef_shifted).map(|(&j, b)| b * stats.xty[j]).sum();
        let b_xtx_b: f64 = kept.iter().zip(coef_shifted).map(|(&j, b)| b * self.xtx_b(j)).sum();
        let sum_e = stats.sum_y - kept.iter().zip(coef_shifted).map(|(&j, b)| stats.sum_x[j] * b).sum::<f64>();
        let mean_e = sum_e / m;
        let var_e = (stats.yty - 2.0 * b_xty + b_xtx_b) / m - mean_e * mean_e;
        if self.centred {
            return var_e;
        }
        // Cov(e, h) with h~ = sum over the varying columns of h of x~_j b_j.
        let sum_e_h: f64 = h_slopes.iter().map(|&(c, j)| coef_shifted[c] * (stats.xty[j] - self.xtx_b(j))).sum();
        let mean_h: f64 = h_slopes.iter().map(|&(c, j)| coef_shifted[c] * stats.sum_x[j]).sum::<f64>() / m;
        let cov_e_h = sum_e_h / m - mean_e * mean_h;
        var_e + 2.0 * cov_e_h
    }

    /// `Var(S*) - Var(F)` over the levels (with observations) of factor `k`, as
    /// `Var(D) + 2 Cov(D, F)`: `D_g = sum_{i in g} e_i`, `F_g = sum_{i in g} h_i`.
    fn totals_q(&self, k: usize) -> f64 {
        let stats = self.stats;
        let shift = &stats.shift;
        let levels = &stats.levels[k];
        let g_all = levels.n_levels();
        let mut d = Vec::with_capacity(g_all);
        let mut f = Vec::with_capacity(g_all);
        for g in (0..g_all).filter(|&g| levels.counts[g] > 0) {
            let n_g = levels.counts[g] as f64;
            let sum_x = |j: usize| levels.sum_x[j * g_all + g];
            d.push(levels.sum_y[g] - self.kept.iter().zip(&self.coef_shifted).map(|(&j, b)| sum_x(j) * b).sum::<f64>());
            f.push(
                self.kept
                    .iter()
                    .filter(|&&j| self.in_h(j))
                    .map(|&j| (sum_x(j) + n_g * shift.x[j]) * self.coef[j])
                    .sum::<f64>(),
            );
        }
        let (mean_d, var_d) = mean_and_variance(&d);
        if self.centred {
            return var_d;
        }
        let mean_f = f.iter().sum::<f64>() / f.len() as f64;
        let cov_d_f = d.iter().zip(&f).map(|(a, b)| (a - mean_d) * (b - mean_f)).sum::<f64>() / d.len() as f64;
        var_d + 2.0 * cov_d_f
    }
}

/// The counts of a crossed design (model 7) that enter its FR equations, all from the
/// level counts and the cell counts of the sufficient statistics. Rows are the levels
/// of the first random term (`N_i`), columns those of the second (`M_j`); `n_ij` is the
/// number of observations in cell `(i, j)` (1 or 0 when every item is rated at most once
/// by a user).
#[derive(Debug, Clone, PartialEq)]
pub struct CrossedCounts {
    /// The distribution of the `N_i` (rows with observations).
    pub rows: GroupSizes,
    /// The distribution of the `M_j` (columns with observations).
    pub columns: GroupSizes,
    /// Observed cells (pairs `(i, j)` with `n_ij > 0`).
    pub n_cells: usize,
    /// `kappa_r`, the mean over rows of `sum_j n_ij^2`: `nu1` when no cell is repeated.
    pub row_repeats: f64,
    /// `kappa_c`, the mean over columns of `sum_i n_ij^2`: `lambda1` when no cell is repeated.
    pub column_repeats: f64,
    /// `tau_r`, the mean over ordered pairs of distinct rows `k != m` of
    /// `T_km = sum_j n_kj n_mj`, the columns they share (the paper's eq. 27).
    pub rows_shared: f64,
    /// `tau_c`, the same for pairs of distinct columns (the rows they share).
    pub columns_shared: f64,
}

/// [`CrossedCounts`] of the two random terms of `stats`. `sum_{k != m} T_km` is
/// `sum_j M_j^2 - sum_ij n_ij^2`, so the mean of `T` needs no pass over pairs of rows.
pub fn crossed_counts(stats: &SufficientStats) -> CrossedCounts {
    let sizes = |k: usize| {
        let counts: Vec<f64> = stats.levels[k].counts.iter().filter(|&&n| n > 0).map(|&n| n as f64).collect();
        let (mean, variance) = mean_and_variance(&counts);
        let squares: f64 = counts.iter().map(|n| n * n).sum();
        (GroupSizes { n_groups: counts.len(), mean, variance }, squares)
    };
    let (rows, row_squares) = sizes(0);
    let (columns, column_squares) = sizes(1);
    let (cells, _) = stats.cells_of(0, 1);
    let cell_squares: f64 = cells.counts.iter().map(|&n| (n as f64) * (n as f64)).sum();
    let (r, c) = (rows.n_groups as f64, columns.n_groups as f64);
    let pairs = |g: f64| if g > 1.0 { g * (g - 1.0) } else { f64::INFINITY };
    CrossedCounts {
        n_cells: cells.counts.iter().filter(|&&n| n > 0).count(),
        row_repeats: cell_squares / r,
        column_repeats: cell_squares / c,
        rows_shared: (column_squares - cell_squares) / pairs(r),
        columns_shared: (row_squares - cell_squares) / pairs(c),
        rows,
        columns,
    }
}

/// The three FR equations of the crossed model (7) at the coefficients `coef` (see
/// [`fit_full_randomness_crossed`]): rows `Var(Y)`, then the totals of the first and of
/// the second random term; unknowns `(s2_a, s2_b, s2_e)`. With `shared`, the
/// coefficients of the other term's variance are reduced by the mean number of shared
/// levels, `tau` (eq. 27); with `options.centred`, the equations of the residuals.
pub fn fr_crossed_equations(
    stats: &SufficientStats,
    counts: &CrossedCounts,
    kept: &[usize],
    coef: &[f64],
    size_columns: &[usize],
    options: FrOptions,
) -> MomentEquations {
    let parts = EquationParts::new(stats, kept, coef, size_columns, options.centred);
    let (n, m) = (&counts.rows, &counts.columns);
    let (tau_r, tau_c) = if options.shared { (counts.rows_shared, counts.columns_shared) } else { (0.0, 0.0) };
    let rows = [
        [1.0, 1.0, 1.0],
        [n.variance + n.mean * n.mean, counts.row_repeats - tau_r, n.mean],
        [counts.column_repeats - tau_c, m.variance + m.mean * m.mean, m.mean],
    ];
    MomentEquations {
        factor_names: stats.factor_names.clone(),
        n_levels: vec![n.n_groups, m.n_groups],
        lhs: Mat::from_fn(3, 3, |i, j| rows[i][j]),
        q: vec![parts.observation_q(), parts.totals_q(0), parts.totals_q(1)],
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
    fit_full_randomness_opts(stats, size_columns, FrOptions::default(), pool, keep_going)
}

/// [`fit_full_randomness`] for one random intercept (models 2 and 3) or two crossed
/// ones (model 7, [`fit_full_randomness_crossed`]); `shared` chooses the crossed
/// equations with the shared-level correction of eq. 27.
pub fn fit_full_randomness_with(
    stats: &SufficientStats,
    size_columns: &[usize],
    shared: bool,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<FullRandomnessFit, FitError> {
    fit_full_randomness_opts(stats, size_columns, FrOptions { shared, centred: false }, pool, keep_going)
}

/// [`fit_full_randomness_with`] with every variant of the equations ([`FrOptions`]).
pub fn fit_full_randomness_opts(
    stats: &SufficientStats,
    size_columns: &[usize],
    options: FrOptions,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<FullRandomnessFit, FitError> {
    if stats.n_factors() == 2 {
        return fit_full_randomness_crossed(stats, size_columns, options, pool, keep_going);
    }
    if stats.n_factors() != 1 {
        let terms: Vec<String> = stats.factor_names.iter().map(|n| term_label(n)).collect();
        return Err(FitError::InvalidInput(format!(
            "the Full Randomness estimator (method = \"fr\") is for models with one random-intercept term or two crossed ones; this model has {}: {}",
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
            let equations = fr_equations(stats, &group_sizes, &ols.kept, &coef, size_columns, options.centred);
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
    let equations = fr_equations(stats, &group_sizes, &ols.kept, &coef, size_columns, options.centred);
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
        crossed: None,
        shared: false,
        centred: options.centred,
    })
}

/// The FR fit of the crossed model (7) and (10),
/// `Y_ij = mu + U_i' g + V_j' h + a_i + b_j + e_ij` for the observed cells: the three
/// equations of [`fr_crossed_equations`] at the OLS coefficients (eq. 19; `size()`
/// columns of either term are part of `h`, with OLS coefficients too), their solution
/// with the boundary rule, and the mixed-model equations at it.
///
/// The derivation (conditioning on the incidence, eq. 13; `a`, `b`, `e` independent of
/// each other and of the incidence, mean zero): the row total is
/// `S_i = F_i + N_i a_i + sum_j n_ij b_j + sum e`, with `F_i = sum_j h_ij`, so
/// `E[S | Z] = F` and `Var(S | Z) = N^2 s2_a + (sum_j n_ij^2) s2_b + N s2_e`, and
///
/// ```text
/// Var(S) = (nu2 + nu1^2) s2_a + kappa_r s2_b + nu1 s2_e + Var(F)
/// Var(C) = kappa_c s2_a + (lambda2 + lambda1^2) s2_b + lambda1 s2_e + Var(G)
/// Var(Y) = s2_a + s2_b + s2_e + Var(h)
/// ```
///
/// with `C_j`, `G_j` the column totals, `lambda1`, `lambda2` the mean and variance of the
/// `M_j` and `kappa_r = E[sum_j n_ij^2]` (`= nu1` when the items within a row are
/// distinct; mirror image `kappa_c`). With model (7), `Var(F) = mu^2 nu2`. Two rows that
/// share `T` columns have `Cov(S_k, S_m) = E[T] s2_b` (eq. 27), so the sample variance
/// of the `S_i` has expectation `(1 - 1/r) (Var(S) - tau_r s2_b)`; with `shared` that is
/// the equation, under the same divisor convention (the common factor `1 - 1/r`
/// dropped). With `options.centred` the equations are those of the least-squares
/// residuals, without `Var(F)`, `Var(G)` and `Var(h)` (see the module documentation).
/// The nested case is refused: there the column totals of the items of one
/// user are not a sample of independent columns.
pub fn fit_full_randomness_crossed(
    stats: &SufficientStats,
    size_columns: &[usize],
    options: FrOptions,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<FullRandomnessFit, FitError> {
    let p = stats.n_fixed();
    if let Some(&j) = size_columns.iter().find(|&&j| j >= p) {
        return Err(FitError::InvalidInput(format!("size column {j} is beyond the {p} fixed-effect columns")));
    }
    let counts = crossed_counts(stats);
    let labels: Vec<String> = stats.factor_names.iter().map(|n| term_label(n)).collect();
    for (inner, outer) in [(1, 0), (0, 1)] {
        let g = if inner == 0 { &counts.rows } else { &counts.columns };
        if counts.n_cells == g.n_groups {
            return Err(FitError::InvalidInput(format!(
                "the Full Randomness estimator (method = \"fr\") for two terms is derived for crossed data (model 7), but every level of {} occurs with a single level of {}: the terms are nested, which the derivation does not cover; use method = \"moments\"",
                labels[inner], labels[outer]
            )));
        }
    }
    if !keep_going() {
        return Err(FitError::Interrupted);
    }
    let ols = ols_from_stats(stats)?;
    let coef = ols.coef.clone();
    let equations = fr_crossed_equations(stats, &counts, &ols.kept, &coef, size_columns, options);
    let components = fit_variance_components(&equations)?;
    let mixed = solve_mixed_model(stats, &ols, &components, pool, keep_going)?;
    Ok(FullRandomnessFit {
        ols,
        group_sizes: counts.rows.clone(),
        equations,
        components,
        mixed,
        coef_in_equations: coef,
        iterations: 1,
        crossed: Some(counts),
        shared: options.shared,
        centred: options.centred,
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
    let components =
        VarianceComponents { raw: vec![rho, 1.0 - rho], estimate: vec![rho, 1.0 - rho], at_boundary: vec![false] };
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
