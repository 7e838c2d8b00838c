//! Generalized linear mixed models by the method of moments (Jiang 1998, "Consistent
//! estimators in generalized linear mixed models", JASA 93; Jiang and Zhang 2001,
//! Biometrika 88):
//!
//! ```text
//! y_i | u ~ F(n_i, mu_i),   g(mu_i) = eta_i = x_i'b + o_i + sum_k u_k[g_k(i)],   u_k ~ N(0, s2_k I),
//! ```
//!
//! with `F` binomial (`n_i` trials) or Poisson (`n_i = 1`, offsets `o_i`), see [`crate::family`].
//! The estimating equations match first moments and within-level cross-products to their
//! expectations under the model:
//!
//! ```text
//! sum_i x_i (y_i - n_i m(eta0_i; s2_+)) = 0,        eta0_i = x_i'b + o_i,  s2_+ = sum_k s2_k,
//! T_k = sum_g w_g (S_g^2 - Q_g) = E[T_k]            (S_g = sum_{i in g} y_i, Q_g = sum y_i^2),
//! ```
//!
//! `m(e; s2) = E h(e + z)`, `z ~ N(0, s2)`, `h` the inverse link. `S_g^2 - Q_g` is the sum
//! of `y_s y_t` over the ordered pairs of distinct rows of level `g`; a pair sharing the
//! levels of the terms in `A` has, given the rest,
//!
//! ```text
//! E[y_s y_t] = n_s n_t E_z[ m(eta0_s + z; s2_+ - s2_A) m(eta0_t + z; s2_+ - s2_A) ],   z ~ N(0, s2_A),
//! ```
//!
//! so `E[S_g^2 - Q_g]` for the pairs sharing only term `k` is `E_z[a_g(z)^2 - b_g(z)]` with
//! `a_g(z) = sum_i n_i m(eta0_i + z; s2_+ - s2_k)` and `b_g` the sum of squares: per level
//! and Gauss-Hermite node, sums over rows that add across chunks and are squared after the
//! merge. Pairs that also share a level of a second term `l` (rows in the same cell) are
//! left out of `T_k` when `k` is not nested in `l` (crossed terms with repeated cells:
//! their pairs carry `s2_k + s2_l`, many of them tied to one draw of each effect), their
//! observed sums subtracted and the level's expectation corrected cell by cell (with one
//! such other term, in the same pass: `E_z[a_g(z)^2 - sum_cells a_cell(z)^2]`); a term
//! nested in `l` keeps them, with `A = {k, l}`. The expectations are exact when no pair of
//! rows shares the levels of three terms. For
//! Poisson-log everything is closed form: `m = exp(e + s2/2)` and
//! `E[y_s y_t] = mu_s mu_t exp(s2_A)`, `mu_i = exp(eta0_i + s2_+/2)`. A term whose levels
//! hold single rows (an observation-level term) has no pairs; it is identified instead by
//! `D = sum_i y_i (y_i - 1)`, `E[y_i (y_i - 1)] = n_i (n_i - 1) E h(eta0_i + z)^2`, `z ~ N(0, s2_+)`.
//!
//! The statistics are centred by the marginal means `mu_i = n_i m(eta0_i; s2_+)`: the
//! equation of term `k` is `sum_g w_g (T_g - E[T_g] - 2 sum_{s != t in g} r_s mu_t)`,
//! `r_i = y_i - mu_i` (pairs of trials within a row included as `T_g` includes them), that
//! is `T_g` less its linear projection on the rows. The subtracted term has expectation 0,
//! so the equations stay unbiased, but it removes the part of `T_g` that moves with the
//! level's total `S_g` about its mean: `Var(S_g^2) = 4 E[S_g]^2 Var(S_g) + ...`, the first
//! part carrying no information about `s2_k`. On a power-law crossed Bernoulli design the
//! uncentred equations with information weights gave 10-12 times glmer's sampling sd of
//! the sds. `D` is centred the same way (`2 (1 - 1 / n_i) r_i mu_i` a row, `2 r_i mu_i` for
//! Poisson).
//!
//! `m` is tabulated once per variance over a grid of `e` (step at most 0.02, Hermite
//! cubic interpolation with the derivative, interpolation error below 1e-9) by 64-node
//! Gauss-Hermite quadrature; the outer expectations over `z` use an equally spaced
//! (trapezoidal) rule whose nodes fall on the grid, so that a row's interpolation weights
//! serve all its nodes (see `Layout::pair_expectation`). The rows are read group by
//! group after a gather into group order; every sum over rows is taken in fixed blocks
//! or group by group and added in order, so the fit does not depend on the number of
//! threads.
//!
//! The equations are solved jointly for `b` and `log s2_k` by Newton's method with a
//! finite-difference Jacobian at the first step, then Broyden's updates (differenced
//! again when an updated step fails), and backtracking; `b` is profiled out by Newton's
//! method with the analytic Jacobian of the first moments. The iterations stop when the
//! step taken is below 1e-8 (on `log s2_k`). Above 200,000 rows they start from the
//! first-step fit to a subsample of about 1/16 of the cells (chosen by a hash of their
//! levels, so whatever the chunks) and its last Jacobian, so that fewer passes run over
//! all the rows (the subsample's fit skips the Jacobian of the covariances, which only
//! the full data's fit uses). A component driven to zero is set to zero (a boundary fit) and the rest
//! re-solved. The level weights are first
//! `w_g = 1 / max(n_g - 1, 1)`; the second step (Jiang and Zhang's) weights each level
//! by its information at the first-step estimates, `w_g = 1 / (1 + I_g s2_k)^2`,
//! `I_g = sum_{i in g} n_i mu_i (1 - mu_i)` (binomial) or `sum mu_i` (Poisson), the
//! inverse squared variance of the level's pair statistic per unit of signal.
//!
//! The reported fixed effects then solve, at those variances, the quasi-score
//!
//! ```text
//! X'D V^-1 (y - mu) = 0,   mu_i = n_i m(eta0_i; s2_+),   D = diag(d mu / d eta0),   V = A + D Z G Z' D,
//! ```
//!
//! unbiased whatever the working covariance `V` (the exact marginal mean) and efficient
//! when it is close to `Var(y)`: `A` the conditional variances at the marginal mean and
//! `G = diag(s2_k)` (binomial: the linearized marginal covariance). For Poisson-log two
//! rows sharing the levels of the terms in `S` covary by `mu_s mu_t (prod_{k in S} (1 +
//! G_k) - 1)`, `G_k = exp(s2_k) - 1`, and `V` is exact for every pair of rows sharing the
//! levels of at most two terms, and of any terms nested in each other: `Z` holds the terms
//! and, per pair of crossed terms with repeated cells, a cell effect (a level per cell of
//! two rows or more) of variance `G_k G_l`; a term nested in others has variance `G_k
//! prod_l (1 + G_l)` over the terms `l` it is nested in; and `A_i = mu_i + mu_i^2
//! (exp(s2_+) - 1 - sum_e G_e)` over the row's effects, so the marginal variances are exact
//! too. (With one level a term, the covariance within a cell of two crossed terms lacked
//! `G_k G_l`, a fifth of it at sds 1 and 0.5: on simulate_crossed(2e4) Poisson data, where
//! popular users and items share many rows in one cell, the fit's MSE of the slope was 4.95
//! times glmer's, and 1.76 times with the cell effects, over 48 data sets; at the true
//! variances, 4.9 and 1.4 times.) By Woodbury the equations are `sum_i c_i (y_i - mu_i)
//! x*_i`, `c_i = D_i / A_i`, `x*_i = x_i - sum_e P_e[g_e(i)]`, `P = (Z'WZ + G^-1)^-1 Z'WX`,
//! `W = diag(D_i^2 / A_i)`: one weighted Henderson solve with p right-hand sides by the
//! conjugate gradients of [`crate::mixed`] per update of `V`, started from the last update's
//! `P`. With two terms their cell
//! effect's block is diagonal and is eliminated in closed form (a cell's rows reweighted),
//! so the system keeps the terms' size (as unknowns beside the terms, the cells took 61
//! instead of 7 iterations a solve there). `V` is frozen at the current `b`, the equations
//! solved by Newton's method, and `V` refreshed until `b` settles. The variances stay the
//! estimates of the unweighted system: the pair statistics are centred by marginal means
//! that the unweighted equations match in total, and re-solving them at the weighted `b`
//! made them worse on cbpp, Contraception and grouseticks (bench/glmm.R).
//!
//! Conditional modes (`ranef`) maximise the penalized likelihood at the estimated `b` and
//! `s2_k` (penalized IRLS; the systems `Z'WZ + L` are solved by the conjugate gradients
//! of [`crate::mixed`]; one pass over the rows a step gives the objective at the new modes
//! and the scores and weights of the next step). `b` is not re-estimated with the modes.
//!
//! The covariance of the estimates is a sandwich `J^-1 V J^-T` of the stacked estimating
//! equations (first moments, variances, quasi-score): `J` their Jacobian, `V` multi-way
//! cluster-robust (Cameron, Gelbach and Miller 2011) from the per-level sums of the
//! estimating functions, `sum_k V_k - (K - 1) V_rows`. A pair statistic is not a sum over
//! rows, so it enters `V` by its linear projection on the rows (counted in every term's
//! clusters) and its remainder (in its own term's clusters only): in crossed designs the
//! statistics of different terms share rows, and their covariance is what lets the
//! Jacobian cancel the part they share. Beside it, the model-based covariance of the
//! weighted fixed effects: the same linearization with the quasi-score's variance taken
//! from the model, `X'D V^-1 D X`, and its covariances with the other equations from the
//! meat. The sandwich alone is noisy with few levels (1.3-1.8 times glmer's standard
//! errors on cbpp's 15 herds). `J` of the first moments and the variances is analytic, in
//! one pass over the rows: the expectations' derivatives in `b` through the rows' slopes,
//! in a shared variance through the nodes `z = s u` of the outer rule, in an inner one by
//! the heat equation `d m / d s2 = m'' / 2` (`m''` tabulated by Stein's identity); the
//! quasi-score's derivatives in the variances are differenced (a pass over the rows each).
//!
//! Per-level sums over rows (the estimating functions by cluster, `Z'WX`, the diagonal of
//! `Z'WZ`, the penalized IRLS's scores) are taken by reading the rows in order and adding
//! each to its level, a task a term: a level's sum is added in its rows' order, the same
//! as reading the rows level by level, without that random access to the data.

use crate::condvar::InverseDiagonal;
use crate::data::{FactorCodes, FixedColumn, ModelData};
use crate::dense::solve;
use crate::error::FitError;
use crate::family::{gauss_hermite, Distribution, Family, GlmFamily};
use crate::grouping::CellCounts;
use crate::mixed::RandomEffectsMatrix;
use faer::Mat;
use rayon::prelude::*;
use std::borrow::Cow;

/// Gauss-Hermite nodes of the tabulated marginal means.
pub const TABLE_NODES: usize = 64;
/// The trapezoidal rule of the expectations over a shared effect: its step in sds (at
/// most `OUTER_STEP`, and `OUTER_SPREAD` on the scale of the linear predictor) and its
/// half-width in sds (the normal mass beyond 6.5 sds is 8e-11: 8 sds, 21 nodes instead
/// of 17 at sd 1, moved the estimates by 2e-13 relative and took 2% more time).
const OUTER_STEP: f64 = 0.9;
const OUTER_SPREAD: f64 = 0.85;
const OUTER_HALF_WIDTH: f64 = 6.5;
/// Grid of the tables: `[-TABLE_RANGE, TABLE_RANGE]` in steps of `TABLE_STEP`; outside,
/// the quadrature is evaluated directly.
const TABLE_RANGE: f64 = 30.0;
const TABLE_STEP: f64 = 0.02;
/// Updates of the working covariance of the fixed-effect equations, and the change of
/// the estimates (fixed effects and sds) below which they have settled.
const MAX_WORKING_UPDATES: usize = 20;
const WORKING_TOLERANCE: f64 = 1e-7;
/// Newton iterations in a row whose line search fails before a component below
/// `exp(STALLED_LOG_VARIANCE)` (sd 0.2) is taken to zero.
const STALLED_STEPS: usize = 5;
const STALLED_LOG_VARIANCE: f64 = -3.2;
/// Rows per parallel task over rows (fixed, so sums are reduced in a fixed order).
const ROWS: usize = 1 << 14;
/// Fits above `SUBSAMPLE_ABOVE` rows start from a fit to about `1 / SUBSAMPLE_FRACTION`
/// of them (at least `SUBSAMPLE_ABOVE / 2` rows).
const SUBSAMPLE_ABOVE: usize = 200_000;
const SUBSAMPLE_FRACTION: usize = 16;

/// What the variance equations' solver returns: `(b, s2, iterations, Jacobian of the
/// unscaled equations in (b, s2_active), active, the equations at the solution, the last
/// Newton Jacobian of the scaled profiled equations in log s2_active)`.
type Solution = (Vec<f64>, Vec<f64>, usize, Mat<f64>, Vec<bool>, Evaluation, Mat<f64>);

/// The covariances [`sandwich`] returns: of the reported fixed effects, their
/// model-based covariance (weighted fits), and of the variances.
type Covariances = (Mat<f64>, Option<Mat<f64>>, Mat<f64>);

/// One chunk of rows: the response (successes or counts) with the fixed effects and the
/// grouping codes (levels shared by all chunks), the binomial trials (1 when `None`) and
/// the offsets on the linear-predictor scale (0 when `None`).
pub struct GlmmChunk<'a> {
    pub data: ModelData<'a>,
    pub trials: Option<&'a [f64]>,
    pub offset: Option<&'a [f64]>,
}

impl GlmmChunk<'_> {
    #[inline]
    fn trials(&self, i: usize) -> f64 {
        self.trials.map_or(1.0, |t| t[i])
    }
    #[inline]
    fn offset(&self, i: usize) -> f64 {
        self.offset.map_or(0.0, |o| o[i])
    }
    pub(crate) fn n_obs(&self) -> usize {
        self.data.n_obs()
    }
}

/// The level weights of the pair statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelWeights {
    /// `1 / max(n_g - 1, 1)` only (one step).
    Simple,
    /// The simple weights, then the information weights at the first-step estimates.
    Information,
}

/// The weighting of the fixed-effect equations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixedWeights {
    /// `sum_i x_i (y_i - mu_i) = 0` (independence; the first step).
    Independence,
    /// The quasi-score `X'D V^-1 (y - mu) = 0` with the working covariance `V` at the
    /// estimates, iterated with the variances until both settle.
    Working,
}

/// Settings of [`fit_glmm`].
#[derive(Debug, Clone, Copy)]
pub struct GlmmOptions {
    pub weights: LevelWeights,
    pub fixed: FixedWeights,
    /// Whether to compute the conditional modes.
    pub modes: bool,
    pub max_iterations: usize,
    /// Above this many rows, the variances' Newton iterations start from a fit to a
    /// subsample of the rows (see [`subsample_start`]).
    pub subsample_above: usize,
}

impl Default for GlmmOptions {
    fn default() -> Self {
        GlmmOptions {
            weights: LevelWeights::Information,
            fixed: FixedWeights::Working,
            modes: true,
            max_iterations: 200,
            subsample_above: SUBSAMPLE_ABOVE,
        }
    }
}

/// Which statistic identifies a term's variance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    /// The weighted within-level cross-products `T_k`.
    Pairs,
    /// `D = sum y (y - 1)` (a term without pairs of rows).
    WithinRow,
}

/// The estimates of a GLMM.
#[derive(Debug, Clone)]
pub struct GlmmFit {
    pub coef: Vec<f64>,
    /// The random-effect variances `s2_k`.
    pub variances: Vec<f64>,
    pub at_boundary: Vec<bool>,
    /// Sandwich covariance of `b`.
    pub vcov: Mat<f64>,
    /// Model-based covariance of `b`, `(X'D V^-1 D X)^-1` at the working covariance
    /// (`None` with the independence equations).
    pub vcov_model: Option<Mat<f64>>,
    /// Sandwich covariance of the variances (rows and columns of boundary terms are 0).
    pub vcov_variances: Mat<f64>,
    /// Conditional modes per term and level (empty vectors without `modes`).
    pub ranef: Vec<Vec<f64>>,
    /// The first-step (simple-weight) estimates.
    pub first_coef: Vec<f64>,
    pub first_variances: Vec<f64>,
    pub statistic: Vec<Statistic>,
    /// Whether the information-weighted second step was taken and converged.
    pub second_step: bool,
    /// Newton iterations (all steps) and penalized IRLS iterations.
    pub iterations: usize,
    /// Updates of the working covariance of the fixed-effect equations (0 without).
    pub working_iterations: usize,
    pub pirls_iterations: usize,
    /// Passes over the rows evaluating all the equations, and the fixed-effect equations alone.
    pub passes: [usize; 2],
    /// Seconds spent in each stage of the fit, in order (for profiling and progress).
    pub timings: Vec<(&'static str, f64)>,
}

/// Rows of one chunk grouped by a level (or cell): `rows[starts[g]..starts[g + 1]]`.
struct Grouped {
    starts: Vec<usize>,
    rows: Vec<u32>,
}

impl Grouped {
    fn of(n_groups: usize, n_rows: usize, group: impl Fn(usize) -> Option<usize>) -> Grouped {
        let mut starts = vec![0usize; n_groups + 1];
        for i in 0..n_rows {
            if let Some(g) = group(i) {
                starts[g + 1] += 1;
            }
        }
        for g in 0..n_groups {
            starts[g + 1] += starts[g];
        }
        let mut next = starts.clone();
        let mut rows = vec![0u32; starts[n_groups]];
        for i in 0..n_rows {
            if let Some(g) = group(i) {
                rows[next[g]] = i as u32;
                next[g] += 1;
            }
        }
        Grouped { starts, rows }
    }
    fn group(&self, g: usize) -> &[u32] {
        &self.rows[self.starts[g]..self.starts[g + 1]]
    }
}

/// The cells of a pair of terms `k < l` that hold two rows or more, and every cell of
/// the pair for the penalized IRLS.
struct PairLayout {
    k: usize,
    l: usize,
    /// All cells (k x l), merged over the chunks, and their transpose with, for each
    /// transposed entry, its position in `cells`.
    cells: CellCounts,
    transposed: CellCounts,
    transposed_from: Vec<u32>,
    /// Per chunk, the position in `cells` of every row.
    cell_of_row: Vec<Vec<u32>>,
    /// The cells of two rows or more: their levels of `k` and `l`, and per chunk the
    /// rows grouped by them.
    multi_k: Vec<u32>,
    multi_l: Vec<u32>,
    multi_rows: Vec<Grouped>,
    /// Per cell, its number among the cells of two rows or more (`u32::MAX` for the others).
    multi_of_cell: Vec<u32>,
    /// Whether every level of `k` lies in one level of `l` (k nested in l), and the reverse.
    k_in_l: bool,
    l_in_k: bool,
}

impl PairLayout {
    /// Whether the pair statistic of `term` (`k` or `l`) leaves out the pairs of rows in one
    /// cell: yes unless `term` is nested in the other (then those pairs are all it has).
    fn excludes_cells_of(&self, term: usize) -> bool {
        if term == self.k {
            !self.k_in_l
        } else {
            !self.l_in_k
        }
    }
}

/// A block of unknowns of the working covariance's Henderson system: the levels of a term,
/// or the repeated cells of a pair of crossed terms (a [`CellEffect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Term(usize),
    Cells(usize),
}

/// The repeated cells (two rows or more) of a pair of crossed terms `k, l` as an effect of
/// Poisson-log's working covariance, of variance `G_k G_l`: two rows in one cell covary by
/// `mu_s mu_t (exp(s2_k + s2_l) - 1) = mu_s mu_t (G_k + G_l + G_k G_l)`, the terms' effects
/// giving the first two parts. (A row alone in its cell carries `G_k G_l` in `A_i`.)
struct CellEffect {
    /// Its pair in [`Layout::pairs`].
    pair: usize,
    /// Per effect sharing rows with it (the terms, and the cell effects before it), the
    /// cells (its cells as rows), their transpose and, per transposed entry, its position
    /// in the cells.
    blocks: Vec<(Effect, CellCounts, CellCounts, Vec<u32>)>,
}

/// The transpose of `cells` and, per transposed entry, its position in `cells`.
fn transpose_with_origin(cells: &CellCounts) -> (CellCounts, Vec<u32>) {
    let n_rows = cells.row_starts.len() - 1;
    let mut starts = vec![0usize; cells.n_cols + 1];
    for &m in &cells.cols {
        starts[m as usize + 1] += 1;
    }
    for m in 0..cells.n_cols {
        starts[m + 1] += starts[m];
    }
    let mut next = starts.clone();
    let total = cells.cols.len();
    let (mut t_cols, mut t_counts, mut from) = (vec![0u32; total], vec![0u32; total], vec![0u32; total]);
    for g in 0..n_rows {
        for j in cells.row_starts[g]..cells.row_starts[g + 1] {
            let m = cells.cols[j] as usize;
            let at = next[m];
            next[m] += 1;
            t_cols[at] = g as u32;
            t_counts[at] = cells.counts[j];
            from[at] = j as u32;
        }
    }
    (CellCounts { row_starts: starts, cols: t_cols, counts: t_counts, n_cols: n_rows }, from)
}

/// The cells of two effects: of the rows grouped by the first (`groups`, per chunk, `n_rows`
/// levels) with their `column` (level of the second, of `n_cols`; `None`: none), counted
/// per level of the first in parallel.
fn count_cells(
    groups: &[&Grouped],
    n_rows: usize,
    n_cols: usize,
    column: &(dyn Fn(usize, usize) -> Option<usize> + Sync),
) -> CellCounts {
    let rows: Vec<Vec<(u32, u32)>> = (0..n_rows)
        .into_par_iter()
        .map(|g| {
            let mut cols: Vec<u32> = Vec::new();
            for (c, grouped) in groups.iter().enumerate() {
                cols.extend(grouped.group(g).iter().filter_map(|&i| column(c, i as usize).map(|m| m as u32)));
            }
            cols.sort_unstable();
            let mut cells: Vec<(u32, u32)> = Vec::new();
            for m in cols {
                match cells.last_mut() {
                    Some((last, n)) if *last == m => *n += 1,
                    _ => cells.push((m, 1)),
                }
            }
            cells
        })
        .collect();
    let mut row_starts = Vec::with_capacity(n_rows + 1);
    row_starts.push(0);
    let (mut cols, mut counts) = (Vec::new(), Vec::new());
    for row in rows {
        for (m, n) in row {
            cols.push(m);
            counts.push(n);
        }
        row_starts.push(cols.len());
    }
    CellCounts { row_starts, cols, counts, n_cols }
}

/// Tabulated `m(e; s2) = E h(e + z)`, `z ~ N(0, s2)`.
struct Marginal {
    family: GlmFamily,
    s2: f64,
    nodes: Vec<f64>,
    weights: Vec<f64>,
    values: Vec<f64>,
    slopes: Vec<f64>,
    /// `m''` and `m'''` on the grid (the derivative of `m` in its variance is `m'' / 2`).
    curvatures: Vec<f64>,
    curvature_slopes: Vec<f64>,
}

/// `h''(e)` and `h'''(e)` of the inverse link by central differences of `h'` (the
/// derivatives of the marginal mean at variance 0, where Stein's identity does not serve).
fn link_curvature(family: &GlmFamily, e: f64) -> (f64, f64) {
    const H: f64 = 1e-4;
    let (lo, mid, hi) = (family.mu_eta(e - H), family.mu_eta(e), family.mu_eta(e + H));
    ((hi - lo) / (2.0 * H), (hi - 2.0 * mid + lo) / (H * H))
}

/// `(m, m', m'', m''')` of `m(e) = E h(e + s z)` by the Gauss-Hermite rule `rule`, the
/// last two by Stein's identities `E[h'(e + s z) z] = s m''` and `E[h'(e + s z) (z^2 - 1)]
/// = s^2 m'''` (no third derivative of the link needed); at `s = 0` by differences.
fn marginal_derivatives(family: &GlmFamily, s: f64, rule: &(Vec<f64>, Vec<f64>), e: f64) -> [f64; 4] {
    if s <= 0.0 {
        let (c, cs) = link_curvature(family, e);
        return [family.linkinv(e), family.mu_eta(e), c, cs];
    }
    let mut out = [0.0; 4];
    for (z, w) in rule.0.iter().zip(&rule.1) {
        let d = family.mu_eta(e + s * z);
        out[0] += w * family.linkinv(e + s * z);
        out[1] += w * d;
        out[2] += w * d * z;
        out[3] += w * d * (z * z - 1.0);
    }
    out[2] /= s;
    out[3] /= s * s;
    out
}

impl Marginal {
    fn new(family: &GlmFamily, s2: f64, rule: &(Vec<f64>, Vec<f64>)) -> Marginal {
        let s = s2.max(0.0).sqrt();
        let nodes: Vec<f64> = rule.0.iter().map(|z| s * z).collect();
        let weights = rule.1.clone();
        let mut m = Marginal {
            family: *family,
            s2,
            nodes,
            weights,
            values: Vec::new(),
            slopes: Vec::new(),
            curvatures: Vec::new(),
            curvature_slopes: Vec::new(),
        };
        if s2 > 0.0 && !family.is_poisson_log() {
            let points = (2.0 * TABLE_RANGE / TABLE_STEP).round() as usize + 1;
            let (values, slopes): (Vec<f64>, Vec<f64>) = (0..points)
                .into_par_iter()
                .map(|j| {
                    let e = -TABLE_RANGE + j as f64 * TABLE_STEP;
                    m.direct(e)
                })
                .unzip();
            let (curvatures, curvature_slopes): (Vec<f64>, Vec<f64>) = (0..points)
                .into_par_iter()
                .map(|j| {
                    let d = marginal_derivatives(family, s, rule, -TABLE_RANGE + j as f64 * TABLE_STEP);
                    (d[2], d[3])
                })
                .unzip();
            m.values = values;
            m.slopes = slopes;
            m.curvatures = curvatures;
            m.curvature_slopes = curvature_slopes;
        }
        m
    }

    /// `m''(e)`, `2 d m / d s2` (cubic Hermite interpolation of the tabulated `m''` and `m'''`).
    fn curvature(&self, e: f64) -> f64 {
        if self.family.is_poisson_log() {
            return (e + 0.5 * self.s2).exp();
        }
        let t = (e + TABLE_RANGE) / TABLE_STEP;
        if self.curvatures.is_empty() || !(t >= 0.0 && t < (self.curvatures.len() - 1) as f64) {
            // Off the grid (or at variance 0) by the quadrature itself, on the rule's own nodes.
            let sd = self.s2.max(0.0).sqrt();
            let nodes = self.nodes.iter().map(|z| if sd > 0.0 { z / sd } else { *z }).collect();
            return marginal_derivatives(&self.family, sd, &(nodes, self.weights.clone()), e)[2];
        }
        let j = t as usize;
        let u = t - j as f64;
        let (u2, u3) = (u * u, u * u * u);
        (2.0 * u3 - 3.0 * u2 + 1.0) * self.curvatures[j]
            + (u3 - 2.0 * u2 + u) * TABLE_STEP * self.curvature_slopes[j]
            + (-2.0 * u3 + 3.0 * u2) * self.curvatures[j + 1]
            + (u3 - u2) * TABLE_STEP * self.curvature_slopes[j + 1]
    }

    /// `(m(e), m'(e))` by quadrature.
    fn direct(&self, e: f64) -> (f64, f64) {
        let mut v = 0.0;
        let mut d = 0.0;
        for (z, w) in self.nodes.iter().zip(&self.weights) {
            v += w * self.family.linkinv(e + z);
            d += w * self.family.mu_eta(e + z);
        }
        (v, d)
    }

    #[inline(always)]
    fn mean(&self, e: f64) -> f64 {
        if self.family.is_poisson_log() {
            return (e + 0.5 * self.s2).exp();
        }
        if self.values.is_empty() {
            return self.family.linkinv(e);
        }
        let t = (e + TABLE_RANGE) / TABLE_STEP;
        if !(t >= 0.0 && t < (self.values.len() - 1) as f64) {
            return self.direct(e).0;
        }
        let j = t as usize;
        let u = t - j as f64;
        let (u2, u3) = (u * u, u * u * u);
        let h00 = 2.0 * u3 - 3.0 * u2 + 1.0;
        let h10 = u3 - 2.0 * u2 + u;
        let h01 = -2.0 * u3 + 3.0 * u2;
        let h11 = u3 - u2;
        h00 * self.values[j]
            + h10 * TABLE_STEP * self.slopes[j]
            + h01 * self.values[j + 1]
            + h11 * TABLE_STEP * self.slopes[j + 1]
    }

    /// `(m(e), m'(e))`: the derivative of the interpolant (for the working weights).
    fn mean_slope(&self, e: f64) -> (f64, f64) {
        if self.family.is_poisson_log() {
            let m = (e + 0.5 * self.s2).exp();
            return (m, m);
        }
        if self.values.is_empty() {
            return (self.family.linkinv(e), self.family.mu_eta(e));
        }
        let t = (e + TABLE_RANGE) / TABLE_STEP;
        if !(t >= 0.0 && t < (self.values.len() - 1) as f64) {
            return self.direct(e);
        }
        let j = t as usize;
        let u = t - j as f64;
        let u2 = u * u;
        let d00 = 6.0 * u2 - 6.0 * u;
        let d10 = 3.0 * u2 - 4.0 * u + 1.0;
        let d11 = 3.0 * u2 - 2.0 * u;
        let slope = (d00 * (self.values[j] - self.values[j + 1])) / TABLE_STEP
            + d10 * self.slopes[j]
            + d11 * self.slopes[j + 1];
        (self.mean(e), slope)
    }
}

/// The marginal mean `m(e; s2)` of one trial (tabulated; for tests and the R package).
pub fn marginal_mean(family: &GlmFamily, s2: f64, eta: &[f64]) -> Vec<f64> {
    let m = Marginal::new(family, s2, &gauss_hermite(TABLE_NODES));
    eta.iter().map(|&e| m.mean(e)).collect()
}

/// The parameter-free part of the fit: groupings and the observed statistics.
struct Layout<'c, 'a> {
    chunks: &'c [GlmmChunk<'a>],
    pool: &'c rayon::ThreadPool,
    family: GlmFamily,
    p: usize,
    n_levels: Vec<usize>,
    counts: Vec<Vec<f64>>,
    /// Per term and level, `S_g^2 - Q_g`.
    pair_stats: Vec<Vec<f64>>,
    /// `sum y (y - 1)`.
    within_row: f64,
    /// Whether the pair statistics include the pairs of trials within a row (`y (y - 1)`,
    /// pairs sharing every term): when no term is identified by them alone.
    within_in_pairs: bool,
    /// Whether any row has pairs of trials (Poisson counts, or binomial rows of more than
    /// one trial): without, `y (y - 1)` and its expectation are 0 in every row.
    within_pairs: bool,
    statistic: Vec<Statistic>,
    by_level: Vec<Vec<Grouped>>,
    pairs: Vec<PairLayout>,
    /// Per term whose statistic leaves out the pairs within the repeated cells of exactly
    /// one other term (two crossed terms), [`CellsOfLevel`]: its level expectations then
    /// leave those pairs out in the same pass, not by a second pass over the cells.
    cells_of_level: Vec<Option<CellsOfLevel>>,
    /// Poisson-log's cell effects of the working covariance (empty for binomial data).
    cell_effects: Vec<CellEffect>,
    table: (Vec<f64>, Vec<f64>),
    x_scale: Vec<f64>,
    /// Passes over the rows: of all the equations, of the fixed-effect equations alone.
    passes: [std::sync::atomic::AtomicUsize; 2],
    /// The last tables of the marginal mean, by the bits of their variance: the fixed
    /// effects' Newton steps and the equations at one value of the variances share one.
    marginals: std::sync::Mutex<Vec<(u64, std::sync::Arc<Marginal>)>>,
}

/// The repeated cells (two rows or more) of each level of a term with one other term:
/// per chunk and row of the term's grouping (in its order), the number of the row's cell
/// among the level's repeated cells (`u32::MAX` for a row alone in its cell), and per level
/// the number of its repeated cells.
struct CellsOfLevel {
    local: Vec<Vec<u32>>,
    count: Vec<u32>,
}

/// The moment equations at one parameter value.
struct Evaluation {
    /// `sum x (y - n m)` (p values), then per term the centred statistic's equation
    /// `T_k - E[T_k] - centring_k` (or `D - E[D] - centring_k`).
    f: Vec<f64>,
    /// Per term and level, the expectation of `S_g^2 - Q_g` (empty for `WithinRow`).
    expected: Vec<Vec<f64>>,
    /// Per term and level, the centring of the pair statistic, `2 sum_{pairs} r_s mu_t`
    /// (empty for `WithinRow` and without `pairs`).
    centring_levels: Vec<Vec<f64>>,
    /// Per term, the weighted centring subtracted in `f`.
    centring: Vec<f64>,
    /// On request, the Jacobian of `f` in `b` and the variances of every term.
    jacobian: Option<Mat<f64>>,
}

/// The working covariance of the fixed-effect equations, frozen at one `(b, s2)`: the
/// quasi-score `X'D V^-1 (y - mu)` is `sum_i c_i r_i x*_i` with `c_i = D_i / A_i`,
/// `r_i = y_i - mu_i` and `x*_i = x_i - sum_k P_k[g_k(i)]`, `P = C^-1 Z'WX`,
/// `C = Z'WZ + G^-1`, `W = diag(D_i^2 / A_i)` (Woodbury).
struct Working {
    /// Per chunk and row, `c_i`.
    c: Vec<Vec<f64>>,
    /// Per effect with a positive variance, `(effect, P_e)` with `P_e` levels x p by row.
    proj: Vec<(Effect, Vec<f64>)>,
}

impl<'c, 'a> Layout<'c, 'a> {
    fn new(
        chunks: &'c [GlmmChunk<'a>],
        family: GlmFamily,
        pool: &'c rayon::ThreadPool,
    ) -> Result<Layout<'c, 'a>, FitError> {
        let first = chunks.first().ok_or_else(|| FitError::InvalidInput("no data to fit".into()))?;
        let p = first.data.n_fixed();
        let n_levels: Vec<usize> = first.data.factors.iter().map(|f| f.n_levels).collect();
        let k_terms = n_levels.len();
        if k_terms == 0 {
            return Err(FitError::InvalidInput("the model has no random term".into()));
        }
        for c in chunks {
            c.data.validate()?;
            let n = c.n_obs();
            if c.data.n_fixed() != p || c.data.factors.iter().map(|f| f.n_levels).ne(n_levels.iter().copied()) {
                return Err(FitError::Incompatible("the chunks differ in their columns or levels".into()));
            }
            if c.trials.is_some_and(|t| t.len() != n) || c.offset.is_some_and(|o| o.len() != n) {
                return Err(FitError::InvalidInput("trials or offsets do not match the rows".into()));
            }
            for i in 0..n {
                let (y, t) = (c.data.y[i], c.trials(i));
                let ok = match family.distribution {
                    Distribution::Binomial => t > 0.0 && t.is_finite() && y >= 0.0 && y <= t,
                    Distribution::Poisson => y >= 0.0,
                    Distribution::Gaussian => false,
                };
                if !ok || !c.offset(i).is_finite() {
                    return Err(FitError::InvalidInput(match family.distribution {
                        Distribution::Gaussian => {
                            "the gaussian family is fitted by the linear moment equations, not the GLMM code".into()
                        }
                        _ => format!(
                            "row {} has response {y} with {t} trials and offset {}, outside the family's range",
                            i + 1,
                            c.offset(i)
                        ),
                    }));
                }
            }
        }
        let mut counts = vec![Vec::new(); k_terms];
        let mut pair_stats = vec![Vec::new(); k_terms];
        let mut within_by_level = vec![Vec::new(); k_terms];
        for k in 0..k_terms {
            let mut n = vec![0.0; n_levels[k]];
            let mut s = vec![0.0; n_levels[k]];
            let mut q = vec![0.0; n_levels[k]];
            let mut d = vec![0.0; n_levels[k]];
            for c in chunks {
                let f = &c.data.factors[k];
                for i in 0..c.n_obs() {
                    let (g, y) = (f.level(i), c.data.y[i]);
                    n[g] += 1.0;
                    s[g] += y;
                    q[g] += y * y;
                    d[g] += y * (y - 1.0);
                }
            }
            within_by_level[k] = d;
            pair_stats[k] = s.iter().zip(&q).map(|(s, q)| s * s - q).collect();
            counts[k] = n;
        }
        let within_row: f64 = chunks.iter().map(|c| c.data.y.iter().map(|y| y * (y - 1.0)).sum::<f64>()).sum();
        let mut statistic = Vec::with_capacity(k_terms);
        for k in 0..k_terms {
            let has_pairs = counts[k].iter().any(|&n| n > 1.0);
            statistic.push(if has_pairs { Statistic::Pairs } else { Statistic::WithinRow });
        }
        let n_within = statistic.iter().filter(|&&s| s == Statistic::WithinRow).count();
        let any_trials = chunks.iter().any(|c| c.trials.is_some_and(|t| t.iter().any(|&n| n > 1.0)));
        if n_within > 1 || (n_within == 1 && family.distribution == Distribution::Binomial && !any_trials) {
            let names: Vec<&str> = (0..k_terms)
                .filter(|&k| statistic[k] == Statistic::WithinRow)
                .map(|k| first.data.factors[k].name.as_str())
                .collect();
            return Err(FitError::NotIdentifiable(format!(
                "the variance of {} cannot be estimated: every level holds one row{}",
                names.join(" and "),
                if n_within > 1 {
                    ", and at most one such term is identified (by the within-row moment)"
                } else {
                    ", and 0/1 responses carry no within-row information"
                }
            )));
        }
        let within_in_pairs = n_within == 0;
        if within_in_pairs {
            for k in 0..k_terms {
                pair_stats[k].iter_mut().zip(&within_by_level[k]).for_each(|(t, d)| *t += d);
            }
        }
        let by_level: Vec<Vec<Grouped>> = chunks
            .par_iter()
            .map(|c| {
                (0..k_terms)
                    .map(|k| {
                        let f = &c.data.factors[k];
                        Grouped::of(n_levels[k], c.n_obs(), |i| Some(f.level(i)))
                    })
                    .collect()
            })
            .collect();
        let mut pairs = Vec::new();
        for k in 0..k_terms {
            for l in k + 1..k_terms {
                pairs.push(PairLayout::new(chunks, k, l)?);
            }
        }
        // Pairs of rows in one cell of two crossed terms leave both terms' statistics: they
        // carry s2_k + s2_l (and, for popular users x popular items, quadratically many
        // pairs tied to one draw of each effect), which made the estimates far noisier on
        // power-law designs with repeated cells. A term nested in the other keeps them.
        for pair in &pairs {
            if pair.multi_k.is_empty() {
                continue;
            }
            // Sums of y over a cell are complete only after every chunk: squared then.
            let mut cell_sums = vec![0.0; pair.multi_k.len()];
            let mut cell_squares = vec![0.0; pair.multi_k.len()];
            for (c, chunk) in chunks.iter().enumerate() {
                for cell in 0..pair.multi_k.len() {
                    for &i in pair.multi_rows[c].group(cell) {
                        let y = chunk.data.y[i as usize];
                        cell_sums[cell] += y;
                        cell_squares[cell] += y * y;
                    }
                }
            }
            let same_cell: Vec<f64> = cell_sums.iter().zip(&cell_squares).map(|(s, q)| s * s - q).collect();
            for (term, levels) in [(pair.k, &pair.multi_k), (pair.l, &pair.multi_l)] {
                if pair.excludes_cells_of(term) {
                    for (cell, &g) in levels.iter().enumerate() {
                        pair_stats[term][g as usize] -= same_cell[cell];
                    }
                }
            }
        }
        let cells_of_level: Vec<Option<CellsOfLevel>> = (0..k_terms)
            .map(|k| {
                let mut with = pairs.iter().filter(|pl| (pl.k == k || pl.l == k) && !pl.multi_k.is_empty());
                let pl = with.next()?;
                // Poisson-log's expectations are closed forms without quadrature: the cells
                // are corrected after the levels, as with several other terms.
                if with.next().is_some()
                    || statistic[k] != Statistic::Pairs
                    || !pl.excludes_cells_of(k)
                    || family.is_poisson_log()
                {
                    return None;
                }
                let levels = if pl.k == k { &pl.multi_k } else { &pl.multi_l };
                let mut count = vec![0u32; n_levels[k]];
                let number: Vec<u32> = levels
                    .iter()
                    .map(|&g| {
                        count[g as usize] += 1;
                        count[g as usize] - 1
                    })
                    .collect();
                let local = by_level
                    .iter()
                    .enumerate()
                    .map(|(c, grouped)| {
                        grouped[k]
                            .rows
                            .par_iter()
                            .map(|&i| match pl.multi_of_cell[pl.cell_of_row[c][i as usize] as usize] {
                                u32::MAX => u32::MAX,
                                m => number[m as usize],
                            })
                            .collect()
                    })
                    .collect();
                Some(CellsOfLevel { local, count })
            })
            .collect();
        let x_scale = (0..p)
            .map(|j| {
                let s: f64 = chunks
                    .iter()
                    .map(|c| (0..c.n_obs()).map(|i| c.data.x[j].value(i, 0.0).powi(2) * c.trials(i)).sum::<f64>())
                    .sum();
                s.sqrt().max(1e-300)
            })
            .collect();
        let mut layout = Layout {
            chunks,
            pool,
            family,
            p,
            n_levels,
            counts,
            pair_stats,
            within_row,
            within_in_pairs,
            within_pairs: family.is_poisson_log() || any_trials,
            statistic,
            by_level,
            pairs,
            cells_of_level,
            cell_effects: Vec::new(),
            table: gauss_hermite(TABLE_NODES),
            x_scale,
            passes: Default::default(),
            marginals: Default::default(),
        };
        if family.is_poisson_log() {
            layout.cell_effects = layout.pool.install(|| layout.new_cell_effects());
        }
        Ok(layout)
    }

    /// One [`CellEffect`] per pair of crossed terms (neither nested in the other) with
    /// repeated cells, with its cells against every term and every cell effect before it.
    fn new_cell_effects(&self) -> Vec<CellEffect> {
        let mut out: Vec<CellEffect> = Vec::new();
        for (j, pl) in self.pairs.iter().enumerate() {
            if pl.multi_k.is_empty() || pl.k_in_l || pl.l_in_k {
                continue;
            }
            let groups: Vec<&Grouped> = pl.multi_rows.iter().collect();
            let mut blocks = Vec::new();
            let mut add = |other: Effect, n_other: usize, column: &(dyn Fn(usize, usize) -> Option<usize> + Sync)| {
                let cells = count_cells(&groups, pl.multi_k.len(), n_other, column);
                if !cells.cols.is_empty() {
                    let (transposed, from) = transpose_with_origin(&cells);
                    blocks.push((other, cells, transposed, from));
                }
            };
            for k in 0..self.k_terms() {
                add(Effect::Term(k), self.n_levels[k], &|c, i| Some(self.chunks[c].data.factors[k].level(i)));
            }
            for (e, before) in out.iter().enumerate() {
                let other = &self.pairs[before.pair];
                add(Effect::Cells(e), other.multi_k.len(), &|c, i| {
                    let m = other.multi_of_cell[other.cell_of_row[c][i] as usize];
                    (m != u32::MAX).then_some(m as usize)
                });
            }
            out.push(CellEffect { pair: j, blocks });
        }
        out
    }

    /// The level of effect `e` of row `i` of chunk `c` (`None`: a row alone in its cell).
    #[inline]
    fn effect_level(&self, e: Effect, c: usize, i: usize) -> Option<usize> {
        match e {
            Effect::Term(k) => Some(self.chunks[c].data.factors[k].level(i)),
            Effect::Cells(j) => {
                let pl = &self.pairs[self.cell_effects[j].pair];
                let m = pl.multi_of_cell[pl.cell_of_row[c][i] as usize];
                (m != u32::MAX).then_some(m as usize)
            }
        }
    }

    fn effect_size(&self, e: Effect) -> usize {
        match e {
            Effect::Term(k) => self.n_levels[k],
            Effect::Cells(j) => self.pairs[self.cell_effects[j].pair].multi_k.len(),
        }
    }

    fn k_terms(&self) -> usize {
        self.n_levels.len()
    }

    /// The tabulated marginal mean at total variance `s2` (built once for the last few
    /// variances; the same table whenever built).
    fn marginal(&self, s2: f64) -> std::sync::Arc<Marginal> {
        const KEEP: usize = 4;
        let key = s2.to_bits();
        if let Some((_, m)) = self.marginals.lock().expect("marginal cache").iter().find(|(k, _)| *k == key) {
            return m.clone();
        }
        let m = std::sync::Arc::new(self.pool.install(|| Marginal::new(&self.family, s2, &self.table)));
        let mut cache = self.marginals.lock().expect("marginal cache");
        if cache.len() >= KEEP {
            cache.remove(0);
        }
        cache.push((key, m.clone()));
        m
    }

    /// `value(c, i)` of every row of every chunk, in row order (computed in parallel).
    fn row_values(&self, value: impl Fn(usize, usize) -> f64 + Sync) -> Vec<Vec<f64>> {
        (0..self.chunks.len())
            .map(|c| (0..self.chunks[c].n_obs()).into_par_iter().map(|i| value(c, i)).collect())
            .collect()
    }

    /// Per effect in `effects` and level, `dim` sums: `value(c, i, out)` writes a row's
    /// `dim` values. The rows are read in order and added to their levels (a task an
    /// effect), so each level's sum is added in its rows' order, as by level, without
    /// reading the rows level by level (a random access to the data). A row without a
    /// level of the effect (alone in its cell) adds nothing.
    fn effect_sums_vec(
        &self,
        effects: &[Effect],
        dim: usize,
        value: impl Fn(usize, usize, &mut [f64]) + Sync,
    ) -> Vec<Vec<f64>> {
        effects
            .par_iter()
            .map(|&e| {
                let mut out = vec![0.0; self.effect_size(e) * dim];
                let mut row = vec![0.0; dim];
                for (c, chunk) in self.chunks.iter().enumerate() {
                    for i in 0..chunk.n_obs() {
                        let Some(g) = self.effect_level(e, c, i) else { continue };
                        value(c, i, &mut row);
                        out[g * dim..(g + 1) * dim].iter_mut().zip(&row).for_each(|(s, v)| *s += v);
                    }
                }
                out
            })
            .collect()
    }

    /// [`Self::effect_sums_vec`] over the levels of the terms in `terms`.
    fn level_sums_vec(
        &self,
        terms: &[usize],
        dim: usize,
        value: impl Fn(usize, usize, &mut [f64]) + Sync,
    ) -> Vec<Vec<f64>> {
        let effects: Vec<Effect> = terms.iter().map(|&k| Effect::Term(k)).collect();
        self.effect_sums_vec(&effects, dim, value)
    }

    /// Per level of effect `e`, the sum of `values[c][i]` over its rows.
    fn effect_sums(&self, e: Effect, values: &[Vec<f64>]) -> Vec<f64> {
        self.effect_sums_vec(&[e], 1, |c, i, out| out[0] = values[c][i]).pop().unwrap_or_default()
    }

    /// Per cell of `n_cells` (of two effects), the sum of `values[c][i]` over its rows,
    /// `position(c, i)` the cell of row `i` of chunk `c` (`None`: the row has none). The
    /// rows are read in order, each task adding those of its own range of cells, so every
    /// cell's sum is added in its rows' order whatever the threads: reading the rows level
    /// by level instead (a random access to the rows' values and cells, two cache misses a
    /// row on large data) took most of the time of building a system.
    fn block_sums(
        &self,
        n_cells: usize,
        values: &[Vec<f64>],
        position: impl Fn(usize, usize) -> Option<usize> + Sync,
    ) -> Vec<f64> {
        let mut out = vec![0.0; n_cells];
        let per_task = n_cells.div_ceil(rayon::current_num_threads().max(1)).max(1);
        out.par_chunks_mut(per_task).enumerate().for_each(|(t, slice)| {
            let cells = t * per_task..t * per_task + slice.len();
            for (c, values) in values.iter().enumerate() {
                for (i, v) in values.iter().enumerate() {
                    if let Some(at) = position(c, i).filter(|at| cells.contains(at)) {
                        slice[at - cells.start] += v;
                    }
                }
            }
        });
        out
    }

    /// The fixed-effect equations `sum_i d_i (y_i - n_i m(eta0_i; s2_+))` (`d_i` the row's
    /// coefficient of [`Self::row_design`]) at `(b, s2)` and their Jacobian in `b` (the
    /// working covariance frozen), `-sum_i n_i m'(eta0_i) d_i x_i'`, in one pass over
    /// fixed blocks of rows added in order.
    fn first_moments(&self, b: &[f64], s2: &[f64], wk: Option<&Working>) -> (Vec<f64>, Mat<f64>) {
        self.passes[1].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = self.p;
        let s2_total: f64 = s2.iter().sum();
        let total = self.marginal(s2_total);
        let mut f = vec![0.0; p];
        let mut jac = vec![0.0; p * p];
        for (c, chunk) in self.chunks.iter().enumerate() {
            let n = chunk.n_obs();
            let partial: Vec<Vec<f64>> = self.pool.install(|| {
                (0..n.div_ceil(ROWS))
                    .into_par_iter()
                    .map(|t| {
                        let mut s = vec![0.0; p + p * p];
                        let mut x = vec![0.0; p];
                        let mut d = vec![0.0; p];
                        for i in t * ROWS..((t + 1) * ROWS).min(n) {
                            let mut e = chunk.offset(i);
                            for j in 0..p {
                                x[j] = chunk.data.x[j].value(i, 0.0);
                                e += x[j] * b[j];
                            }
                            let (m, dm) = total.mean_slope(e);
                            let trials = chunk.trials(i);
                            let r = chunk.data.y[i] - trials * m;
                            self.row_design(wk, c, i, &mut d);
                            let slope = trials * dm;
                            for a in 0..p {
                                s[a] += d[a] * r;
                                let da = d[a] * slope;
                                for j in 0..p {
                                    s[p + a * p + j] -= da * x[j];
                                }
                            }
                        }
                        s
                    })
                    .collect()
            });
            for part in partial {
                f.iter_mut().zip(&part[..p]).for_each(|(a, v)| *a += v);
                jac.iter_mut().zip(&part[p..]).for_each(|(a, v)| *a += v);
            }
        }
        (f, Mat::from_fn(p, p, |a, j| jac[a * p + j]))
    }

    /// `sum_v v v'` over the `dim`-vectors stored one after another in `values`, added in
    /// fixed blocks in order (as a `dim` x `dim` matrix).
    fn outer_sum(values: &[f64], dim: usize) -> Mat<f64> {
        const BLOCK: usize = 1024;
        let partial: Vec<Vec<f64>> = values
            .par_chunks(dim * BLOCK)
            .map(|block| {
                let mut m = vec![0.0; dim * dim];
                for v in block.chunks(dim) {
                    for a in 0..dim {
                        for c in 0..dim {
                            m[a * dim + c] += v[a] * v[c];
                        }
                    }
                }
                m
            })
            .collect();
        let mut out = Mat::<f64>::zeros(dim, dim);
        for m in partial {
            for a in 0..dim {
                for c in 0..dim {
                    out[(a, c)] += m[a * dim + c];
                }
            }
        }
        out
    }

    /// The coefficient of row `i` of chunk `c` in the fixed-effect equations, `x_i` (the
    /// independence equations) or `c_i x*_i` (the working covariance), into `out`.
    #[inline]
    fn row_design(&self, working: Option<&Working>, c: usize, i: usize, out: &mut [f64]) {
        let chunk = &self.chunks[c];
        for (j, o) in out.iter_mut().enumerate() {
            *o = chunk.data.x[j].value(i, 0.0);
        }
        if let Some(wk) = working {
            let p = self.p;
            for (e, proj) in &wk.proj {
                if let Some(g) = self.effect_level(*e, c, i) {
                    out.iter_mut().zip(&proj[g * p..(g + 1) * p]).for_each(|(o, v)| *o -= v);
                }
            }
            let ci = wk.c[c][i];
            out.iter_mut().for_each(|o| *o *= ci);
        }
    }

    /// `C = Z'WZ + diag(penalty_e)` over the `(effect, penalty)` of `effects` (in that
    /// order) for row weights `row_w`, as [`RandomEffectsMatrix::weighted`] takes it (on the
    /// fit's threads).
    fn weighted_matrix(&self, effects: &[(Effect, f64)], row_w: &[Vec<f64>]) -> RandomEffectsMatrix<'_> {
        self.pool.install(|| {
            let position = |e: Effect| effects.iter().position(|(f, _)| *f == e);
            let ids: Vec<Effect> = effects.iter().map(|&(e, _)| e).collect();
            let sums = self.effect_sums_vec(&ids, 1, |c, i, out| out[0] = row_w[c][i]);
            let diag: Vec<(usize, Vec<f64>)> = effects
                .iter()
                .zip(sums)
                .map(|(&(e, penalty), mut d)| {
                    d.iter_mut().for_each(|v| *v += penalty);
                    let id = match e {
                        Effect::Term(k) => k,
                        Effect::Cells(j) => self.k_terms() + j,
                    };
                    (id, d)
                })
                .collect();
            let mut cells = Vec::new();
            for pl in &self.pairs {
                if let (Some(a), Some(b)) = (position(Effect::Term(pl.k)), position(Effect::Term(pl.l))) {
                    let cw = self.block_sums(pl.cells.cols.len(), row_w, |c, i| Some(pl.cell_of_row[c][i] as usize));
                    let tw: Vec<f64> = pl.transposed_from.par_iter().map(|&j| cw[j as usize]).collect();
                    cells.push((a, b, Cow::Borrowed(&pl.cells), cw));
                    cells.push((b, a, Cow::Borrowed(&pl.transposed), tw));
                }
            }
            for (j, ce) in self.cell_effects.iter().enumerate() {
                let Some(a) = position(Effect::Cells(j)) else { continue };
                for (other, block, transposed, from) in &ce.blocks {
                    let Some(b) = position(*other) else { continue };
                    let cw = self.block_sums(block.cols.len(), row_w, |c, i| {
                        let g = self.effect_level(Effect::Cells(j), c, i)?;
                        let m = self.effect_level(*other, c, i)? as u32;
                        let range = block.row_starts[g]..block.row_starts[g + 1];
                        block.cols[range.clone()].binary_search(&m).ok().map(|at| range.start + at)
                    });
                    let tw: Vec<f64> = from.par_iter().map(|&j| cw[j as usize]).collect();
                    cells.push((a, b, Cow::Borrowed(block), cw));
                    cells.push((b, a, Cow::Borrowed(transposed), tw));
                }
            }
            RandomEffectsMatrix::weighted(diag, cells)
        })
    }

    /// The working covariance at `(b, s2)`: `V = A + D Z G Z' D` with `D_i = n_i m'(eta0_i;
    /// s2_+)` and, for binomial data, `A_i = n_i m_i (1 - m_i)`, `G = diag(s2_k)` (the
    /// linearized marginal covariance). For Poisson-log, where two rows sharing the levels
    /// of the terms in `S` covary by `mu_s mu_t (prod_{k in S} (1 + G_k) - 1)`, `G_k =
    /// exp(s2_k) - 1`: a term nested in others has variance `G_k prod_l (1 + G_l)` over
    /// the terms `l` it is nested in, the repeated cells of two crossed terms are an effect
    /// of variance `G_k G_l` ([`CellEffect`]), and `A_i = mu_i + mu_i^2 (exp(s2_+) - 1 -
    /// sum_e G_e)` over the effects `e` of row `i`. The marginal variances and the
    /// covariances of rows sharing the levels of one term, of two crossed terms or of any
    /// nested terms are then exact. `start`: the projections of a nearby working covariance
    /// (the last refresh's), from which the conjugate gradients start.
    fn working(
        &self,
        b: &[f64],
        s2: &[f64],
        start: Option<&[(Effect, Vec<f64>)]>,
        keep_going: &mut dyn FnMut() -> bool,
    ) -> Result<Working, FitError> {
        let p = self.p;
        let poisson = self.family.is_poisson_log();
        let g: Vec<f64> = s2.iter().map(|&v| if poisson { v.exp_m1() } else { v }).collect();
        let mut effects: Vec<(Effect, f64)> = Vec::new();
        for k in (0..self.k_terms()).filter(|&k| g[k] > 0.0) {
            let mut variance = g[k];
            if poisson {
                for pl in &self.pairs {
                    // (Two terms nested in each other have the same levels: counted once.)
                    if pl.k == k && pl.k_in_l {
                        variance *= 1.0 + g[pl.l];
                    } else if pl.l == k && pl.l_in_k && !pl.k_in_l {
                        variance *= 1.0 + g[pl.k];
                    }
                }
            }
            effects.push((Effect::Term(k), variance));
        }
        let mut cell_effects = Vec::new();
        for (j, ce) in self.cell_effects.iter().enumerate() {
            let pl = &self.pairs[ce.pair];
            let variance = g[pl.k] * g[pl.l];
            if variance > 0.0 {
                effects.push((Effect::Cells(j), variance));
                cell_effects.push((Effect::Cells(j), variance));
            }
        }
        let s2_total: f64 = s2.iter().sum();
        // Poisson-log: the part of a row's variance that no effect carries.
        let extra = if poisson {
            s2_total.exp_m1()
                - effects.iter().filter(|(e, _)| matches!(e, Effect::Term(_))).map(|(_, v)| v).sum::<f64>()
        } else {
            0.0
        };
        let total = self.marginal(s2_total);
        // Per row, `(c_i, W_i) = (D_i / A_i, D_i^2 / A_i)`. The weights serve the system, the
        // coefficients the equations after it: each is computed when needed (twice the
        // rows' interpolation), so the two never take memory together with the system.
        let row = |ch: usize, i: usize| -> (f64, f64) {
            let n = self.chunks[ch].trials(i);
            let (m, dm) = total.mean_slope(self.row_linear_predictor(ch, i, b));
            let d = n * dm.max(1e-300);
            let a = if poisson {
                let in_cells: f64 =
                    cell_effects.iter().filter(|(e, _)| self.effect_level(*e, ch, i).is_some()).map(|(_, v)| v).sum();
                m + m * m * (extra - in_cells).max(0.0)
            } else {
                n * self.family.variance(m)
            };
            let a = a.max(1e-300);
            (d / a, d * d / a)
        };
        let per_row = |pick: fn((f64, f64)) -> f64| -> Vec<Vec<f64>> {
            self.pool.install(|| {
                (0..self.chunks.len())
                    .map(|ch| (0..self.chunks[ch].n_obs()).into_par_iter().map(|i| pick(row(ch, i))).collect())
                    .collect()
            })
        };
        if effects.is_empty() {
            return Ok(Working { c: per_row(|r| r.0), proj: Vec::new() });
        }
        let row_w = per_row(|r| r.1);
        // With two terms, their cell effect shares rows with them alone and its block of
        // the system is diagonal (`w_c + 1 / G_kl`, `w_c` the cell's total weight): it is
        // eliminated. The Schur complement is the terms' system with the rows of cell `c`
        // weighted by `f_c = 1 / (1 + G_kl w_c)` (its diagonal, cells and right-hand sides
        // alike), and `P_c = G_kl f_c (Z_c'WX - w_c (P_k + P_l))`. The unknowns of a cell
        // effect beside other terms couple levels of those (fill-in): they stay.
        let eliminated = match cell_effects[..] {
            [(e, variance)] if effects.len() == 3 => Some((e, variance)),
            _ => None,
        };
        let solved: Vec<(Effect, f64)> =
            effects.iter().copied().filter(|(e, _)| Some(*e) != eliminated.map(|(f, _)| f)).collect();
        // Each eliminated cell's total weight `w_c`, summed once: for `f_c` and for `P_c`.
        let cell_weights: Option<Vec<f64>> = eliminated.map(|(e, _)| self.pool.install(|| self.effect_sums(e, &row_w)));
        let cell_factor: Option<Vec<f64>> = eliminated
            .zip(cell_weights.as_ref())
            .map(|((_, variance), weights)| weights.iter().map(|w| 1.0 / (1.0 + variance * w)).collect());
        let system_w: Cow<'_, [Vec<f64>]> = match (eliminated, &cell_factor) {
            (Some((e, _)), Some(factor)) => Cow::Owned(self.pool.install(|| {
                (0..self.chunks.len())
                    .map(|ch| {
                        (0..self.chunks[ch].n_obs())
                            .into_par_iter()
                            .map(|i| row_w[ch][i] * self.effect_level(e, ch, i).map_or(1.0, |m| factor[m]))
                            .collect()
                    })
                    .collect()
            })),
            _ => Cow::Borrowed(&row_w[..]),
        };
        let penalties: Vec<(Effect, f64)> = solved.iter().map(|&(e, v)| (e, 1.0 / v)).collect();
        let matrix = self.weighted_matrix(&penalties, &system_w);
        // Z'WX, one row of p values a level of every effect in `of`.
        let weighted_x = |weights: &[Vec<f64>], of: &[Effect]| {
            self.pool.install(|| {
                self.effect_sums_vec(of, p, |c, i, out| {
                    let chunk = &self.chunks[c];
                    for (j, o) in out.iter_mut().enumerate() {
                        *o = weights[c][i] * chunk.data.x[j].value(i, 0.0);
                    }
                })
            })
        };
        let solved_effects: Vec<Effect> = solved.iter().map(|&(e, _)| e).collect();
        let rhs = weighted_x(&system_w, &solved_effects);
        drop(system_w);
        // The eliminated cell effect's Z_c'WX, before the row weights are freed.
        let cell_x: Option<Vec<f64>> = eliminated.map(|(e, _)| weighted_x(&row_w, &[e]).pop().unwrap_or_default());
        drop(row_w);
        let from: Option<Vec<f64>> = start.and_then(|s| {
            let parts: Option<Vec<&[f64]>> =
                solved_effects.iter().map(|e| s.iter().find(|(f, _)| f == e).map(|(_, v)| v.as_slice())).collect();
            parts.map(|parts| parts.concat())
        });
        let solution = matrix.solve_from(&rhs.concat(), p, 1e-10, from.as_deref(), self.pool, keep_going)?.x;
        drop(matrix);
        let c = per_row(|r| r.0);
        let mut proj = Vec::with_capacity(effects.len());
        let mut at = 0;
        for &(e, _) in &solved {
            let len = self.effect_size(e) * p;
            proj.push((e, solution[at..at + len].to_vec()));
            at += len;
        }
        if let (Some((e, variance)), Some(factor), Some(weights), Some(mut cells)) =
            (eliminated, &cell_factor, cell_weights, cell_x)
        {
            let Effect::Cells(j) = e else { unreachable!("only cell effects are eliminated") };
            let pl = &self.pairs[self.cell_effects[j].pair];
            let of = |term: usize| &proj.iter().find(|(f, _)| *f == Effect::Term(term)).expect("an active term").1;
            let (pk, plv) = (of(pl.k), of(pl.l));
            for (m, row) in cells.chunks_mut(p).enumerate() {
                let (gk, gl) = (pl.multi_k[m] as usize, pl.multi_l[m] as usize);
                for (j, v) in row.iter_mut().enumerate() {
                    *v = variance * factor[m] * (*v - weights[m] * (pk[gk * p + j] + plv[gl * p + j]));
                }
            }
            proj.push((e, cells));
        }
        Ok(Working { c, proj })
    }

    /// Estimates given from elsewhere (a fit's): one fixed effect per column, one finite
    /// non-negative variance per term.
    fn check_estimates(&self, b: &[f64], s2: &[f64]) -> Result<(), FitError> {
        if s2.len() != self.k_terms() || b.len() != self.p || s2.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(FitError::InvalidInput("the estimates do not match the model's terms or columns".into()));
        }
        Ok(())
    }

    /// `x_i'b + o_i` of row `i` of chunk `c`, added as [`Self::linear_predictor`] adds it
    /// (for passes that need not store it).
    #[inline]
    fn row_linear_predictor(&self, c: usize, i: usize, b: &[f64]) -> f64 {
        let chunk = &self.chunks[c];
        let mut eta = chunk.offset(i);
        for (column, bj) in chunk.data.x.iter().zip(b) {
            eta += match column {
                FixedColumn::Ones => *bj,
                FixedColumn::Values(v) => bj * v[i],
            };
        }
        eta
    }

    /// `x_i'b + o_i` for every row of every chunk.
    fn linear_predictor(&self, b: &[f64]) -> Vec<Vec<f64>> {
        self.chunks
            .iter()
            .map(|c| {
                let mut eta = vec![0.0; c.n_obs()];
                eta.par_chunks_mut(ROWS).enumerate().for_each(|(t, out)| {
                    let rows = t * ROWS..t * ROWS + out.len();
                    for (o, i) in out.iter_mut().zip(rows.clone()) {
                        *o = c.offset(i);
                    }
                    for (j, bj) in b.iter().enumerate() {
                        c.data.x[j].add_scaled(rows.clone(), *bj, out);
                    }
                });
                eta
            })
            .collect()
    }

    /// Per group, `scale * E_z[a(z)^2 - b(z)]`, `z ~ N(0, s2_shared)`, with `a(z) = sum n
    /// m(eta + z; s2_total - s2_shared)` and `b(z) = sum (n m(eta + z))^2` over the rows of
    /// the group in every chunk (added in chunk order, then row order: the same sums
    /// whatever the number of threads).
    ///
    /// The expectation over `z` is the trapezoidal rule in `z / s` (step `delta <= 0.9`,
    /// `s delta <= 0.85`, over 6.5 sds), spectrally accurate for these analytic integrands:
    /// the error is of order `exp(-2 pi^2 / delta^2)` from the normal density and
    /// `exp(pi^2 / (2 s^2) - 2 pi^2 / (s delta))` from the poles of the logistic at
    /// distance `pi` from the real axis. The fits agree with those of 32-node
    /// Gauss-Hermite quadrature to 2e-8 relative (a step of 1 for both, 15 nodes instead
    /// of 21 at s = 1, moved the estimates by 6e-6). Its nodes are equally spaced, so with the inner mean
    /// tabulated on a grid that divides the spacing, every node of a row falls at the same
    /// fraction of a grid step: the cubic Hermite weights are computed once a row and each
    /// node costs four table reads.
    ///
    /// With `cells` (the groups being the levels of a term), the pairs of rows in one
    /// repeated cell are left out: `E_z[a(z)^2 - sum_cells a_cell(z)^2]`.
    #[allow(clippy::too_many_arguments)]
    fn pair_expectation(
        &self,
        eta: &(impl Fn(usize, usize) -> f64 + Sync),
        eta_range: (f64, f64),
        groups: &[&Grouped],
        n_groups: usize,
        (s2_shared, s2_total): (f64, f64),
        cells: Option<&CellsOfLevel>,
        derivatives: bool,
    ) -> (Vec<f64>, Vec<f64>) {
        let p = self.p;
        // The directions of the derivatives: `b` (p), the shared variance, the inner one.
        let dirs = if derivatives { p + 2 } else { 0 };
        let poisson = self.family.is_poisson_log();
        if poisson || s2_shared <= 0.0 {
            // Poisson-log: m(e; s2_+ - s2_A) is exp(e + (s2_+ - s2_A) / 2), and
            // E[y_s y_t] = exp(eta_s + eta_t + 2 s2_A + (s2_+ - s2_A)). (A binomial level
            // without a shared variance has no derivative in it: its term is no parameter.)
            let inner = self.marginal(s2_total - s2_shared);
            let scale = if poisson { (2.0 * s2_shared).exp() } else { 1.0 };
            let out: Vec<(f64, Vec<f64>)> = (0..n_groups)
                .into_par_iter()
                .map_init(
                    || (Vec::new(), vec![0.0; 1 + dirs], vec![0.0; p]),
                    |(cell, row, x), g| {
                        let (mut a, mut b) = (vec![0.0; 1 + dirs], vec![0.0; 1 + dirs]);
                        cell.clear();
                        cell.resize(cells.map_or(0, |cl| cl.count[g] as usize) * (1 + dirs), 0.0);
                        for (c, chunk) in self.chunks.iter().enumerate() {
                            let start = groups[c].starts[g];
                            for (at, &i) in groups[c].group(g).iter().enumerate() {
                                let (e, n) = (eta(c, i as usize), chunk.trials(i as usize));
                                if derivatives {
                                    let (m, dm) = inner.mean_slope(e);
                                    row[0] = n * m;
                                    for (j, xj) in x.iter_mut().enumerate() {
                                        *xj = chunk.data.x[j].value(i as usize, 0.0);
                                        row[1 + j] = n * dm * *xj;
                                    }
                                    row[1 + p] = 0.0;
                                    row[2 + p] = 0.5 * n * inner.curvature(e);
                                } else {
                                    row[0] = n * inner.mean(e);
                                }
                                let v = row[0];
                                a.iter_mut().zip(row.iter()).for_each(|(a, r)| *a += r);
                                match cells.map_or(u32::MAX, |cl| cl.local[c][start + at]) {
                                    u32::MAX => {
                                        b[0] += v * v;
                                        b[1..].iter_mut().zip(&row[1..]).for_each(|(b, r)| *b += 2.0 * v * r);
                                    }
                                    m => {
                                        let own = &mut cell[m as usize * (1 + dirs)..(m as usize + 1) * (1 + dirs)];
                                        own.iter_mut().zip(row.iter()).for_each(|(o, r)| *o += r);
                                    }
                                }
                            }
                        }
                        b[0] += cell.chunks(1 + dirs).map(|v| v[0] * v[0]).sum::<f64>();
                        for own in cell.chunks(1 + dirs) {
                            b[1..].iter_mut().zip(&own[1..]).for_each(|(b, r)| *b += 2.0 * own[0] * r);
                        }
                        let value = scale * (a[0] * a[0] - b[0]);
                        let mut d: Vec<f64> = (1..1 + dirs).map(|r| scale * (2.0 * a[0] * a[r] - b[r])).collect();
                        if derivatives {
                            d[p] = if poisson { 2.0 * value } else { 0.0 };
                        }
                        (value, d)
                    },
                )
                .collect();
            return out.into_iter().fold((Vec::new(), Vec::new()), |(mut v, mut d), (value, dv)| {
                v.push(value);
                d.extend(dv);
                (v, d)
            });
        }
        let s = s2_shared.sqrt();
        let delta = OUTER_STEP.min(OUTER_SPREAD / s);
        let half = (OUTER_HALF_WIDTH / delta).ceil() as usize;
        let n_nodes = 2 * half + 1;
        let raw: Vec<f64> = (0..n_nodes)
            .map(|q| {
                let u = (q as f64 - half as f64) * delta;
                (-0.5 * u * u).exp()
            })
            .collect();
        let total_weight: f64 = raw.iter().sum();
        let weights: Vec<f64> = raw.iter().map(|w| w / total_weight).collect();
        let spacing = s * delta;
        let per = (spacing / TABLE_STEP).ceil().max(1.0) as usize;
        let step = spacing / per as f64;
        // Beyond +-bound every node is past +-40, where the inverse links are 0 or 1 to
        // double precision: the rows are clamped there, which keeps the table small.
        let bound = 40.0 + half as f64 * spacing;
        let lo = eta_range.0.clamp(-bound, bound) - half as f64 * spacing - 2.0 * step;
        let hi = eta_range.1.clamp(-bound, bound) + half as f64 * spacing + 2.0 * step;
        let points = ((hi - lo) / step).ceil() as usize + 2;
        // The inner mean and step times its slope at lo + j step (and, for the derivatives
        // in the inner variance, step^2 m'' and step^3 m'''), interleaved.
        let inner_s = (s2_total - s2_shared).max(0.0).sqrt();
        let mut table = vec![0.0; 4 * points];
        table.par_chunks_mut(4).enumerate().for_each(|(j, out)| {
            let d = marginal_derivatives(&self.family, inner_s, &self.table, lo + j as f64 * step);
            out[0] = d[0];
            out[1] = step * d[1];
            out[2] = step * step * d[2];
            out[3] = step * step * step * d[3];
        });
        // The table by phase: a row's nodes fall on grid points `j + q per`, so with the
        // points of each residue `r = j mod per` stored in order (value and step times slope
        // at the point and at the next, four arrays a residue, and as many of the curvature
        // with derivatives), a row reads contiguous runs of `n_nodes` values (vectorized;
        // the same products as from `table`).
        let runs = points.div_ceil(per) + 1;
        let arrays = if derivatives { 8 } else { 4 };
        let mut phase = vec![0.0; arrays * per * runs];
        phase.par_chunks_mut(arrays * runs).enumerate().for_each(|(r, out)| {
            for m in 0..runs {
                let at = r + m * per;
                if at + 1 < points {
                    for (a, (column, next)) in [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (3, 0), (2, 1), (3, 1)]
                        .into_iter()
                        .take(arrays)
                        .enumerate()
                    {
                        out[a * runs + m] = table[4 * (at + next) + column];
                    }
                }
            }
        });
        let phase = &phase;
        // The directions of the derivatives here: the fixed-effect columns that vary (a
        // column of ones moves the rows as the shared effect does: its derivative is the
        // slope's, summed with the plain node weights), the slope, the inner curvature.
        let varying: Vec<usize> =
            (0..p).filter(|&j| self.chunks.iter().any(|c| matches!(c.data.x[j], FixedColumn::Values(_)))).collect();
        let nv = varying.len();
        let dirs = if derivatives { nv + 2 } else { 0 };
        // The linear predictor and the trials of the rows in group order: reading them
        // group by group from row order is a random access (a cache miss a row on large
        // data), a gather is one pass with many loads in flight. (With the derivatives,
        // the varying fixed-effect columns too, a row's values together.)
        let gather = |c: usize| {
            let (grouped, chunk) = (groups[c], &self.chunks[c]);
            let len = grouped.rows.len();
            let mut e_out = vec![0.0; len];
            let mut n_out = chunk.trials.map(|_| vec![0.0; len]);
            let mut x_out = vec![0.0; if derivatives { len * nv } else { 0 }];
            let mut n_parts: Vec<Option<&mut [f64]>> = match n_out.as_mut() {
                Some(v) => v.chunks_mut(ROWS).map(Some).collect(),
                None => (0..len.div_ceil(ROWS)).map(|_| None).collect(),
            };
            let mut x_parts: Vec<&mut [f64]> = if derivatives && nv > 0 {
                x_out.chunks_mut(ROWS * nv).collect()
            } else {
                (0..len.div_ceil(ROWS)).map(|_| &mut [][..]).collect()
            };
            e_out
                .par_chunks_mut(ROWS)
                .zip(grouped.rows.par_chunks(ROWS))
                .zip(n_parts.par_iter_mut())
                .zip(x_parts.par_iter_mut())
                .for_each(|(((o, rows), n_o), x_o)| {
                    for (at, &i) in rows.iter().enumerate() {
                        let i = i as usize;
                        o[at] = eta(c, i);
                        if let (Some(n_o), Some(t)) = (n_o.as_deref_mut(), chunk.trials) {
                            n_o[at] = t[i];
                        }
                        if derivatives {
                            for (slot, &j) in varying.iter().enumerate() {
                                x_o[at * nv + slot] = chunk.data.x[j].value(i, 0.0);
                            }
                        }
                    }
                });
            drop(n_parts);
            drop(x_parts);
            (e_out, n_out, x_out)
        };
        let ordered: Vec<_> = (0..self.chunks.len()).map(gather).collect();
        // Per derivative (`b`, the shared variance, the inner one), its direction here and
        // node weights: `2 a A_r - B_r` is summed with the node weights; the shared
        // variance moves the nodes `z_q = s u_q` (d z_q / d s2 = z_q / (2 s2)).
        let shared_weights: Vec<f64> =
            (0..n_nodes).map(|q| weights[q] * (q as f64 - half as f64) * delta * s / (2.0 * s2_shared)).collect();
        let outputs: Vec<(usize, &[f64])> = if derivatives {
            (0..p)
                .map(|j| (varying.iter().position(|&v| v == j).unwrap_or(nv), &weights[..]))
                .chain([(nv, &shared_weights[..]), (nv + 1, &weights[..])])
                .collect()
        } else {
            Vec::new()
        };
        let out: Vec<(f64, Vec<f64>)> = (0..n_groups)
            .into_par_iter()
            .map_init(
                || (vec![0.0; (2 + 2 * dirs) * n_nodes], Vec::new(), vec![0.0; 5 * n_nodes]),
                |(sums, cell, node), g| {
                    sums.iter_mut().for_each(|v| *v = 0.0);
                    let (a, rest) = sums.split_at_mut(n_nodes);
                    let (b, rest) = rest.split_at_mut(n_nodes);
                    // Per direction, A_r and B_r by node.
                    let (da, db) = rest.split_at_mut(dirs * n_nodes);
                    let width = (1 + dirs) * n_nodes;
                    cell.clear();
                    cell.resize(cells.map_or(0, |cl| cl.count[g] as usize) * width, 0.0);
                    for (c, (eta, trials, x)) in ordered.iter().enumerate() {
                        let range = groups[c].starts[g]..groups[c].starts[g + 1];
                        for at_row in range {
                            let n = trials.as_ref().map_or(1.0, |t| t[at_row]);
                            // The first node, z = -half spacing, is at lo + (j + u) step.
                            let t = (eta[at_row].clamp(-bound, bound) - half as f64 * spacing - lo) / step;
                            let j = t as usize;
                            let u = t - j as f64;
                            let (u2, u3) = (u * u, u * u * u);
                            let h00 = n * (2.0 * u3 - 3.0 * u2 + 1.0);
                            let h10 = n * (u3 - 2.0 * u2 + u);
                            let h01 = n * (-2.0 * u3 + 3.0 * u2);
                            let h11 = n * (u3 - u2);
                            let base = (j % per) * arrays * runs + j / per;
                            let column = |a: usize| &phase[base + a * runs..base + a * runs + n_nodes];
                            let (v0, s0, v1, s1) = (column(0), column(1), column(2), column(3));
                            let own_cell = cells.map_or(u32::MAX, |cl| cl.local[c][at_row]);
                            if derivatives {
                                // Per node, the row's value, slope (the derivative of the
                                // interpolant) and half its curvature (tabulated), and twice
                                // the value times each; then per direction (a column of `b`,
                                // the shared variance with a slope of 1, the inner variance
                                // with the curvature) its sums, node by node.
                                let (value, rest) = node.split_at_mut(n_nodes);
                                let (slope, rest) = rest.split_at_mut(n_nodes);
                                let (curvature, rest) = rest.split_at_mut(n_nodes);
                                let (value_slope, value_curvature) = rest.split_at_mut(n_nodes);
                                let g00 = n * (6.0 * u2 - 6.0 * u) / step;
                                let g10 = n * (3.0 * u2 - 4.0 * u + 1.0) / step;
                                let g11 = n * (3.0 * u2 - 2.0 * u) / step;
                                let half_curvature = 0.5 / (step * step);
                                let (c0, cs0, c1, cs1) = (column(4), column(5), column(6), column(7));
                                for q in 0..n_nodes {
                                    let v = h00 * v0[q] + h10 * s0[q] + h01 * v1[q] + h11 * s1[q];
                                    let d = g00 * (v0[q] - v1[q]) + g10 * s0[q] + g11 * s1[q];
                                    let cv = half_curvature * (h00 * c0[q] + h10 * cs0[q] + h01 * c1[q] + h11 * cs1[q]);
                                    value[q] = v;
                                    slope[q] = d;
                                    curvature[q] = cv;
                                    value_slope[q] = 2.0 * v * d;
                                    value_curvature[q] = 2.0 * v * cv;
                                }
                                a.iter_mut().zip(value.iter()).for_each(|(a, v)| *a += v);
                                let xr = &x[at_row * nv..(at_row + 1) * nv];
                                let factor = |r: usize| if r < nv { xr[r] } else { 1.0 };
                                let of = |r: usize| {
                                    if r <= nv {
                                        (&*slope, &*value_slope)
                                    } else {
                                        (&*curvature, &*value_curvature)
                                    }
                                };
                                if own_cell == u32::MAX {
                                    b.iter_mut().zip(value.iter()).for_each(|(b, v)| *b += v * v);
                                    for r in 0..dirs {
                                        let (f, (dv, vdv)) = (factor(r), of(r));
                                        let (da, db) = (
                                            &mut da[r * n_nodes..(r + 1) * n_nodes],
                                            &mut db[r * n_nodes..(r + 1) * n_nodes],
                                        );
                                        da.iter_mut().zip(dv).for_each(|(a, d)| *a += f * d);
                                        db.iter_mut().zip(vdv).for_each(|(b, d)| *b += f * d);
                                    }
                                } else {
                                    let own = &mut cell[own_cell as usize * width..(own_cell as usize + 1) * width];
                                    own[..n_nodes].iter_mut().zip(value.iter()).for_each(|(o, v)| *o += v);
                                    for r in 0..dirs {
                                        let (f, (dv, _)) = (factor(r), of(r));
                                        da[r * n_nodes..(r + 1) * n_nodes]
                                            .iter_mut()
                                            .zip(dv)
                                            .for_each(|(a, d)| *a += f * d);
                                        own[(1 + r) * n_nodes..(2 + r) * n_nodes]
                                            .iter_mut()
                                            .zip(dv)
                                            .for_each(|(o, d)| *o += f * d);
                                    }
                                }
                                continue;
                            }
                            // A row of a repeated cell adds to its cell's sums (squared at the
                            // end), the others their squares.
                            let nodes = v0.iter().zip(s0).zip(v1).zip(s1);
                            match own_cell {
                                u32::MAX => {
                                    for ((aq, bq), (((v0, s0), v1), s1)) in a.iter_mut().zip(b.iter_mut()).zip(nodes) {
                                        let v = h00 * v0 + h10 * s0 + h01 * v1 + h11 * s1;
                                        *aq += v;
                                        *bq += v * v;
                                    }
                                }
                                m => {
                                    let own = &mut cell[m as usize * width..m as usize * width + n_nodes];
                                    for ((aq, oq), (((v0, s0), v1), s1)) in a.iter_mut().zip(own.iter_mut()).zip(nodes)
                                    {
                                        let v = h00 * v0 + h10 * s0 + h01 * v1 + h11 * s1;
                                        *aq += v;
                                        *oq += v;
                                    }
                                }
                            }
                        }
                    }
                    for sums in cell.chunks(width) {
                        b.iter_mut().zip(&sums[..n_nodes]).for_each(|(b, v)| *b += v * v);
                        for r in 0..dirs {
                            let own = &sums[(1 + r) * n_nodes..(2 + r) * n_nodes];
                            db[r * n_nodes..(r + 1) * n_nodes]
                                .iter_mut()
                                .zip(&sums[..n_nodes])
                                .zip(own)
                                .for_each(|((b, v), dv)| *b += 2.0 * v * dv);
                        }
                    }
                    let value = a.iter().zip(b.iter()).zip(&weights).map(|((a, b), w)| w * (a * a - b)).sum::<f64>();
                    let d = outputs
                        .iter()
                        .map(|&(r, weights)| {
                            (0..n_nodes)
                                .map(|q| weights[q] * (2.0 * a[q] * da[r * n_nodes + q] - db[r * n_nodes + q]))
                                .sum::<f64>()
                        })
                        .collect();
                    (value, d)
                },
            )
            .collect();
        out.into_iter().fold((Vec::new(), Vec::new()), |(mut v, mut d), (value, dv)| {
            v.push(value);
            d.extend(dv);
            (v, d)
        })
    }

    /// The share of a row's own centring term in its level's pair statistic: 1 without the
    /// pairs of trials within a row; with them `1 / n_i` (binomial) or 0 (Poisson), which
    /// adds `sum_i (1 - 1 / n_i) r_i mu_i` (binomial) or `sum_i r_i mu_i` (Poisson).
    #[inline]
    fn own_share(&self, n: f64) -> f64 {
        match (self.within_in_pairs, self.family.is_poisson_log()) {
            (false, _) => 1.0,
            (true, true) => 0.0,
            (true, false) => 1.0 / n,
        }
    }

    /// The moment equations at `(b, s2)` with level weights `w`, on the fit's threads.
    fn evaluate(&self, b: &[f64], s2: &[f64], w: &[Vec<f64>], wk: Option<&Working>) -> Evaluation {
        self.pool.install(|| self.evaluate_in(b, s2, w, wk, true, false))
    }

    /// With `pairs = false`, only the first-moment equations (the others are left 0). With
    /// `derivatives`, also their Jacobian in `(b, s2)` (analytic, in the same pass).
    fn evaluate_in(
        &self,
        b: &[f64],
        s2: &[f64],
        w: &[Vec<f64>],
        wk: Option<&Working>,
        pairs: bool,
        derivatives: bool,
    ) -> Evaluation {
        self.passes[usize::from(!pairs)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The linear predictor is recomputed a row at a time (the same sums as
        // `linear_predictor`'s), not stored: a pass over the rows needs no more memory than
        // its sums. The within-row terms (trials or counts) take it stored.
        let eta = |c: usize, i: usize| self.row_linear_predictor(c, i, b);
        let eta_rows = self.within_pairs.then(|| self.linear_predictor(b));
        let stored = || eta_rows.as_ref().expect("stored with pairs of trials");
        let s2_total: f64 = s2.iter().sum();
        let total = self.marginal(s2_total);
        let p = self.p;
        let k_terms = self.k_terms();
        // The Jacobian's columns: `b`, then the variance of every term. Every variance
        // moves the marginal mean alike, `d mu_i / d s2_k = n_i m''(eta0_i; s2_+) / 2`.
        let params = p + k_terms;
        let mut jac = vec![0.0; if derivatives { (p + k_terms) * params } else { 0 }];
        // sum x (y - n m) by fixed blocks of rows, chunk by chunk (with the derivatives,
        // per equation then `-sum d_i n m' x_i'` and `-sum d_i n m'' / 2`).
        let width = if derivatives { p + p * (p + 1) } else { p };
        let mut f = vec![0.0; p + k_terms];
        for (c, chunk) in self.chunks.iter().enumerate() {
            let n = chunk.n_obs();
            let partial: Vec<Vec<f64>> = (0..n.div_ceil(ROWS))
                .into_par_iter()
                .map(|t| {
                    let mut s = vec![0.0; width];
                    let mut x = vec![0.0; p];
                    for i in t * ROWS..((t + 1) * ROWS).min(n) {
                        let trials = chunk.trials(i);
                        let (m, dm) =
                            if derivatives { total.mean_slope(eta(c, i)) } else { (total.mean(eta(c, i)), 0.0) };
                        let r = chunk.data.y[i] - trials * m;
                        self.row_design(wk, c, i, &mut x);
                        s[..p].iter_mut().zip(&x).for_each(|(sj, xj)| *sj += xj * r);
                        if derivatives {
                            let curvature = 0.5 * trials * total.curvature(eta(c, i));
                            for a in 0..p {
                                let row = &mut s[p + a * (p + 1)..p + (a + 1) * (p + 1)];
                                for j in 0..p {
                                    row[j] -= x[a] * trials * dm * chunk.data.x[j].value(i, 0.0);
                                }
                                row[p] -= x[a] * curvature;
                            }
                        }
                    }
                    s
                })
                .collect();
            for s in partial {
                f[..p].iter_mut().zip(&s).for_each(|(a, b)| *a += b);
                for a in (0..p).filter(|_| derivatives) {
                    for j in 0..p {
                        jac[a * params + j] += s[p + a * (p + 1) + j];
                    }
                    for k in 0..k_terms {
                        jac[a * params + p + k] += s[p + a * (p + 1) + p];
                    }
                }
            }
        }
        let mut expected: Vec<Vec<f64>> = vec![Vec::new(); k_terms];
        let mut centring_levels: Vec<Vec<f64>> = vec![Vec::new(); k_terms];
        let mut centring = vec![0.0; k_terms];
        let finish = |jac: Vec<f64>| derivatives.then(|| Mat::from_fn(p + k_terms, params, |r, c| jac[r * params + c]));
        if !pairs {
            return Evaluation { f, expected, centring_levels, centring, jacobian: finish(jac) };
        }
        // The range of the linear predictor (min and max: the same on any number of threads).
        let eta_range = (0..self.chunks.len()).fold((f64::INFINITY, f64::NEG_INFINITY), |acc, c| {
            (0..self.chunks[c].n_obs())
                .into_par_iter()
                .fold(|| acc, |(lo, hi), i| (lo.min(eta(c, i)), hi.max(eta(c, i))))
                .reduce(|| acc, |a, b| (a.0.min(b.0), a.1.max(b.1)))
        });
        // The centring of the pair statistics (see the module's documentation): per level,
        // `2 (R_g M_g - sum_i r_i mu_i share_i)` with `mu_i = n_i m(eta0_i; s2_+)`,
        // `r_i = y_i - mu_i` and `share_i` [`Self::own_share`]. Its derivative in a
        // direction moving `mu_i` by `dmu_i` is `2 (dM_g (R_g - M_g) - sum_i dmu_i (r_i -
        // mu_i) share_i)`: per direction (`b`, then the total variance) two more sums.
        let paired: Vec<usize> = (0..k_terms).filter(|&k| self.statistic[k] == Statistic::Pairs).collect();
        let dim = if derivatives { 3 + 2 * (p + 1) } else { 3 };
        let centring_sums = self.level_sums_vec(&paired, dim, |c, i, out| {
            let chunk = &self.chunks[c];
            let n = chunk.trials(i);
            let m = n * total.mean(eta(c, i));
            let r = chunk.data.y[i] - m;
            out[0] = r;
            out[1] = m;
            out[2] = r * m * self.own_share(n);
            if derivatives {
                let dm = n * total.mean_slope(eta(c, i)).1;
                let by = (r - m) * self.own_share(n);
                for j in 0..=p {
                    let dmu =
                        if j < p { dm * chunk.data.x[j].value(i, 0.0) } else { 0.5 * n * total.curvature(eta(c, i)) };
                    out[3 + 2 * j] = dmu;
                    out[4 + 2 * j] = dmu * by;
                }
            }
        });
        // Per paired term and level, the derivatives of `E[T_g] + centring_g` in `(b, s2)`.
        let mut level_derivatives: Vec<Vec<f64>> = vec![Vec::new(); k_terms];
        for (&k, sums) in paired.iter().zip(&centring_sums) {
            centring_levels[k] = sums.chunks(dim).map(|v| 2.0 * (v[0] * v[1] - v[2])).collect();
            if derivatives {
                level_derivatives[k] = sums
                    .chunks(dim)
                    .flat_map(|v| {
                        (0..params).map(move |col| {
                            let j = col.min(p);
                            2.0 * (v[3 + 2 * j] * (v[0] - v[1]) - v[4 + 2 * j])
                        })
                    })
                    .collect();
            }
        }
        drop(centring_sums);
        // A pair expectation's derivatives (`b`, its shared variance, its inner one) as
        // columns of `(b, s2)`: the terms in `shared` move the first, the others the second.
        let add_derivatives = |to: &mut [f64], from: &[f64], shared: &dyn Fn(usize) -> bool, sign: f64| {
            for (to, from) in to.chunks_mut(params).zip(from.chunks(p + 2)) {
                for col in 0..params {
                    let d = if col < p {
                        from[col]
                    } else if shared(col - p) {
                        from[p]
                    } else {
                        from[p + 1]
                    };
                    to[col] += sign * d;
                }
            }
        };
        // The expectations of the pair statistics.
        for &k in &paired {
            let groups: Vec<&Grouped> = self.by_level.iter().map(|g| &g[k]).collect();
            let (values, d) = self.pair_expectation(
                &eta,
                eta_range,
                &groups,
                self.n_levels[k],
                (s2[k], s2_total),
                self.cells_of_level[k].as_ref(),
                derivatives,
            );
            expected[k] = values;
            if derivatives {
                add_derivatives(&mut level_derivatives[k], &d, &|j| j == k, 1.0);
            }
        }
        // Pairs of rows sharing the levels of two terms.
        for pair in &self.pairs {
            let n_cells = pair.multi_k.len();
            if n_cells == 0 {
                continue;
            }
            let (k, l) = (pair.k, pair.l);
            let groups: Vec<&Grouped> = pair.multi_rows.iter().collect();
            let keeps = |term: usize| self.statistic[term] == Statistic::Pairs && !pair.excludes_cells_of(term);
            let both = (keeps(k) || keeps(l)).then(|| {
                self.pair_expectation(&eta, eta_range, &groups, n_cells, (s2[k] + s2[l], s2_total), None, derivatives)
            });
            for (term, levels) in [(k, &pair.multi_k), (l, &pair.multi_l)] {
                // A term with `cells_of_level` left its cells' pairs out already.
                if self.statistic[term] != Statistic::Pairs || self.cells_of_level[term].is_some() {
                    continue;
                }
                // The level's expectation counted the cell's pairs as sharing `term` alone:
                // taken out (the statistic left them out), or replaced by the expectation
                // of pairs sharing both terms.
                let (alone, alone_d) =
                    self.pair_expectation(&eta, eta_range, &groups, n_cells, (s2[term], s2_total), None, derivatives);
                for c in 0..n_cells {
                    let kept = if keeps(term) { both.as_ref().map_or(0.0, |b| b.0[c]) } else { 0.0 };
                    let g = levels[c] as usize;
                    expected[term][g] += kept - alone[c];
                    if derivatives {
                        let to = &mut level_derivatives[term][g * params..(g + 1) * params];
                        if let (true, Some((_, both_d))) = (keeps(term), both.as_ref()) {
                            add_derivatives(to, &both_d[c * (p + 2)..(c + 1) * (p + 2)], &|j| j == k || j == l, 1.0);
                        }
                        add_derivatives(to, &alone_d[c * (p + 2)..(c + 1) * (p + 2)], &|j| j == term, -1.0);
                    }
                }
            }
        }
        let within_derivatives =
            (derivatives && self.within_pairs).then(|| self.within_row_derivatives(stored(), s2_total));
        if self.within_in_pairs && self.within_pairs {
            // Pairs of trials within a row share every term.
            let terms = self.within_row_terms(stored(), s2_total);
            for k in 0..k_terms {
                for (c, chunk) in self.chunks.iter().enumerate() {
                    let f = &chunk.data.factors[k];
                    for (i, v) in terms[c].iter().enumerate() {
                        expected[k][f.level(i)] += v;
                    }
                    if let Some(d) = &within_derivatives {
                        for (i, d) in d[c].chunks(p + 1).enumerate() {
                            let to = &mut level_derivatives[k][f.level(i) * params..(f.level(i) + 1) * params];
                            for col in 0..params {
                                to[col] += d[col.min(p)];
                            }
                        }
                    }
                }
            }
        }
        // The centring (see the module's documentation): with `r_i = y_i - mu_i` and
        // `mu_i = n_i m(eta0_i; s2_+)`, a level's pairs of distinct rows give
        // `sum_{s != t} r_s mu_t = R_g M_g - sum_i r_i mu_i`; pairs of trials within a row
        // add `sum_i (1 - 1 / n_i) r_i mu_i` (binomial) or `sum_i r_i mu_i` (Poisson). The
        // level sums came with the expectations.
        for k in 0..k_terms {
            f[p + k] = match self.statistic[k] {
                Statistic::Pairs => {
                    centring[k] = w[k].iter().zip(&centring_levels[k]).map(|(w, v)| w * v).sum();
                    let raw: f64 =
                        w[k].iter().zip(&self.pair_stats[k]).zip(&expected[k]).map(|((w, t), e)| w * (t - e)).sum();
                    if derivatives {
                        for (w, d) in w[k].iter().zip(level_derivatives[k].chunks(params)) {
                            for col in 0..params {
                                jac[(p + k) * params + col] -= w * d[col];
                            }
                        }
                    }
                    raw - centring[k]
                }
                Statistic::WithinRow => {
                    let mu = self.row_values(|c, i| self.chunks[c].trials(i) * total.mean(eta(c, i)));
                    centring[k] = self.within_row_centring(&mu);
                    if let Some(d) = &within_derivatives {
                        // `-sum dE[y (y - 1)] - sum 2 share dmu_i (y_i - 2 mu_i)`.
                        let poisson = self.family.is_poisson_log();
                        let mut total_d = vec![0.0; p + 1];
                        for (c, chunk) in self.chunks.iter().enumerate() {
                            for (i, d) in d[c].chunks(p + 1).enumerate() {
                                let n = chunk.trials(i);
                                let share = if poisson { 1.0 } else { 1.0 - 1.0 / n };
                                let e = eta(c, i);
                                let by = 2.0 * share * (chunk.data.y[i] - 2.0 * mu[c][i]);
                                let dm = n * total.mean_slope(e).1;
                                for j in 0..=p {
                                    let dmu = if j < p {
                                        dm * chunk.data.x[j].value(i, 0.0)
                                    } else {
                                        0.5 * n * total.curvature(e)
                                    };
                                    total_d[j] += d[j] + by * dmu;
                                }
                            }
                        }
                        for col in 0..params {
                            jac[(p + k) * params + col] = -total_d[col.min(p)];
                        }
                    }
                    self.within_row - self.within_row_expectation(stored(), s2_total) - centring[k]
                }
            };
        }
        Evaluation { f, expected, centring_levels, centring, jacobian: finish(jac) }
    }

    /// Per row, the centring of `y (y - 1)`: `2 (1 - 1 / n_i) r_i mu_i` (binomial) or
    /// `2 r_i mu_i` (Poisson), for the marginal means `mu` of every row.
    fn within_row_centring_terms(&self, mu: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let poisson = self.family.is_poisson_log();
        self.chunks
            .iter()
            .zip(mu)
            .map(|(chunk, mu)| {
                (0..chunk.n_obs())
                    .into_par_iter()
                    .map(|i| {
                        let share = if poisson { 1.0 } else { 1.0 - 1.0 / chunk.trials(i) };
                        2.0 * share * (chunk.data.y[i] - mu[i]) * mu[i]
                    })
                    .collect()
            })
            .collect()
    }

    fn within_row_centring(&self, mu: &[Vec<f64>]) -> f64 {
        self.within_row_centring_terms(mu).iter().map(|v| v.iter().sum::<f64>()).sum()
    }

    /// Per row, `E[y (y - 1)] = n (n - 1) E h(eta + z)^2`, `z ~ N(0, s2_total)`.
    fn within_row_terms(&self, eta: &[Vec<f64>], s2_total: f64) -> Vec<Vec<f64>> {
        let poisson = self.family.is_poisson_log();
        let (nodes, weights) = &self.table;
        let s = s2_total.sqrt();
        self.chunks
            .iter()
            .zip(eta)
            .map(|(c, eta)| {
                (0..c.n_obs())
                    .into_par_iter()
                    .map(|i| {
                        if poisson {
                            (2.0 * eta[i] + 2.0 * s2_total).exp()
                        } else {
                            let n = c.trials(i);
                            if n <= 1.0 {
                                return 0.0;
                            }
                            let m2: f64 = nodes
                                .iter()
                                .zip(weights)
                                .map(|(z, w)| w * self.family.linkinv(eta[i] + s * z).powi(2))
                                .sum();
                            n * (n - 1.0) * m2
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Per row, the derivatives of [`Self::within_row_terms`] in `b` and `s2_total`
    /// (`p + 1` values a row): `n (n - 1) E[2 h h'(eta + z)] x_i` and, by the heat
    /// equation and Stein's identity, `n (n - 1) E[h h'(eta + z) z] / s` (`s^2 = s2_total`).
    fn within_row_derivatives(&self, eta: &[Vec<f64>], s2_total: f64) -> Vec<Vec<f64>> {
        let poisson = self.family.is_poisson_log();
        let p = self.p;
        let (nodes, weights) = &self.table;
        let s = s2_total.sqrt();
        self.chunks
            .iter()
            .zip(eta)
            .map(|(c, eta)| {
                let mut out = vec![0.0; c.n_obs() * (p + 1)];
                out.par_chunks_mut(p + 1).enumerate().for_each(|(i, out)| {
                    let n = c.trials(i);
                    let (in_b, in_s2) = if poisson {
                        let t = (2.0 * eta[i] + 2.0 * s2_total).exp();
                        (2.0 * t, 2.0 * t)
                    } else if n <= 1.0 {
                        (0.0, 0.0)
                    } else if s > 0.0 {
                        let (mut d, mut v) = (0.0, 0.0);
                        for (z, w) in nodes.iter().zip(weights) {
                            let e = eta[i] + s * z;
                            let hh = self.family.linkinv(e) * self.family.mu_eta(e);
                            d += w * 2.0 * hh;
                            v += w * hh * z;
                        }
                        (n * (n - 1.0) * d, n * (n - 1.0) * v / s)
                    } else {
                        let (h, d) = (self.family.linkinv(eta[i]), self.family.mu_eta(eta[i]));
                        let curvature = link_curvature(&self.family, eta[i]).0;
                        (n * (n - 1.0) * 2.0 * h * d, n * (n - 1.0) * (d * d + h * curvature))
                    };
                    for j in 0..p {
                        out[j] = in_b * c.data.x[j].value(i, 0.0);
                    }
                    out[p] = in_s2;
                });
                out
            })
            .collect()
    }

    fn within_row_expectation(&self, eta: &[Vec<f64>], s2_total: f64) -> f64 {
        self.within_row_terms(eta, s2_total).iter().map(|v| v.iter().sum::<f64>()).sum()
    }

    /// `1 / max(n_g - 1, 1)`.
    fn simple_weights(&self) -> Vec<Vec<f64>> {
        self.counts.iter().map(|n| n.iter().map(|&n| 1.0 / (n - 1.0).max(1.0)).collect()).collect()
    }

    /// `1 / (1 + I_g s2_k)^2` at `(b, s2)`.
    fn information_weights(&self, b: &[f64], s2: &[f64]) -> Vec<Vec<f64>> {
        let eta = self.linear_predictor(b);
        (0..self.k_terms())
            .map(|k| {
                let mut info = vec![0.0; self.n_levels[k]];
                for (c, chunk) in self.chunks.iter().enumerate() {
                    let f = &chunk.data.factors[k];
                    for i in 0..chunk.n_obs() {
                        let mu = self.family.linkinv(eta[c][i]);
                        info[f.level(i)] += chunk.trials(i) * self.family.variance(mu);
                    }
                }
                info.iter().map(|v| 1.0 / (1.0 + v * s2[k]).powi(2)).collect()
            })
            .collect()
    }

    /// Scales of the equations (for the line search and the convergence test).
    fn scales(&self, w: &[Vec<f64>]) -> Vec<f64> {
        let mut s = self.x_scale.clone();
        for k in 0..self.k_terms() {
            s.push(match self.statistic[k] {
                Statistic::Pairs => {
                    let t: f64 = w[k].iter().zip(&self.pair_stats[k]).map(|(w, t)| w * t.abs()).sum();
                    let pairs: f64 = w[k].iter().zip(&self.counts[k]).map(|(w, n)| w * n * (n - 1.0)).sum();
                    t.max(1e-6 * pairs).max(1e-300)
                }
                Statistic::WithinRow => self.within_row.abs().max(1e-300),
            });
        }
        s
    }

    /// A GLM fit (all variances 0) by IRLS, for starting values (fixed blocks of rows
    /// added in order).
    fn glm_start(&self) -> Result<Vec<f64>, FitError> {
        let p = self.p;
        let mut b = vec![0.0; p];
        for _ in 0..50 {
            let mut xwx = Mat::<f64>::zeros(p, p);
            let mut xwz = vec![0.0; p];
            for chunk in self.chunks {
                let n = chunk.n_obs();
                let partial: Vec<Vec<f64>> = self.pool.install(|| {
                    (0..n.div_ceil(ROWS))
                        .into_par_iter()
                        .map(|t| {
                            let mut s = vec![0.0; p + p * p];
                            let mut x = vec![0.0; p];
                            for i in t * ROWS..((t + 1) * ROWS).min(n) {
                                let mut e = chunk.offset(i);
                                for j in 0..p {
                                    x[j] = chunk.data.x[j].value(i, 0.0);
                                    e += x[j] * b[j];
                                }
                                let trials = chunk.trials(i);
                                let mu = self.family.linkinv(e);
                                let d = self.family.mu_eta(e).max(1e-12);
                                let v = self.family.variance(mu).max(1e-12);
                                let wt = trials * d * d / v;
                                let z = (e - chunk.offset(i)) + (chunk.data.y[i] - trials * mu) / (trials * d);
                                for a in 0..p {
                                    s[a] += wt * x[a] * z;
                                    for c in 0..p {
                                        s[p + a * p + c] += wt * x[a] * x[c];
                                    }
                                }
                            }
                            s
                        })
                        .collect()
                });
                for part in partial {
                    for a in 0..p {
                        xwz[a] += part[a];
                        for c in 0..p {
                            xwx[(a, c)] += part[p + a * p + c];
                        }
                    }
                }
            }
            let new = solve(&xwx, &xwz);
            if new.iter().any(|v| !v.is_finite()) {
                return Err(FitError::NotIdentifiable(
                    "the fixed effects are not identifiable (the GLM without random effects does not converge: complete separation or aliased columns)".into(),
                ));
            }
            let change = new.iter().zip(&b).map(|(a, c)| (a - c).abs()).fold(0.0, f64::max);
            b = new;
            if change < 1e-10 {
                break;
            }
        }
        Ok(b)
    }

    /// The fixed effects solving the first-moment equations at given variances (Newton's
    /// method with the analytic Jacobian of [`Self::first_moments`], from `b0`).
    fn solve_b(&self, b0: &[f64], s2: &[f64], _w: &[Vec<f64>], wk: Option<&Working>) -> Result<Vec<f64>, FitError> {
        let p = self.p;
        let scaled = |f: &[f64]| -> Vec<f64> { (0..p).map(|j| f[j] / self.x_scale[j]).collect() };
        let norm = |f: &[f64]| f.iter().map(|v| v * v).sum::<f64>();
        let mut b = b0.to_vec();
        let (f0, mut jac) = self.first_moments(&b, s2, wk);
        let mut f = scaled(&f0);
        for _ in 0..100 {
            let rhs: Vec<f64> = (0..p).map(|j| -f[j] * self.x_scale[j]).collect();
            let step = solve(&jac, &rhs);
            if step.iter().any(|v| !v.is_finite()) {
                return Err(FitError::NotIdentifiable(
                    "the fixed effects are not identifiable (a singular Jacobian of the first-moment equations)".into(),
                ));
            }
            // Newton's method converges quadratically: after a step this small the error is
            // of its square, and a pass to confirm it would change nothing.
            if step.iter().all(|v| v.abs() < 1e-10 * (1.0 + b.iter().map(|b| b.abs()).fold(0.0, f64::max))) {
                return Ok(b.iter().zip(&step).map(|(b, s)| b + s).collect());
            }
            let mut t = 1.0;
            loop {
                let nb: Vec<f64> = b.iter().zip(&step).map(|(b, s)| b + t * s).collect();
                let (nf, njac) = self.first_moments(&nb, s2, wk);
                let nf = scaled(&nf);
                if norm(&nf) <= norm(&f) * (1.0 - 1e-4 * t) || t < 1e-6 {
                    b = nb;
                    f = nf;
                    jac = njac;
                    break;
                }
                t *= 0.5;
            }
            let change = step.iter().map(|v| (v * t).abs()).fold(0.0, f64::max);
            if change < 1e-11 || norm(&f) < 1e-30 {
                return Ok(b);
            }
        }
        Err(FitError::NotConverged("the first-moment equations did not converge in 100 iterations".into()))
    }

    /// Solves the equations of the variances with `b` profiled out (re-solved at every
    /// value of the variances), by Newton's method on `log s2_k` with a finite-difference
    /// Jacobian and backtracking; a component driven to zero is set to zero (a boundary
    /// fit) and the others re-solved. Returns `(b, s2, iterations, Jacobian of the
    /// unscaled equations in (b, s2_active), active)`; the Jacobian (analytic, a pass over
    /// the rows) only `with_jacobian` (for the covariances; empty otherwise).
    #[allow(clippy::too_many_arguments)]
    fn solve(
        &self,
        b0: &[f64],
        s2_start: &[f64],
        jac_start: Option<&Mat<f64>>,
        w: &[Vec<f64>],
        wk: Option<&Working>,
        max_iterations: usize,
        with_jacobian: bool,
        keep_going: &mut dyn FnMut() -> bool,
    ) -> Result<Solution, FitError> {
        let p = self.p;
        let k_terms = self.k_terms();
        let scales = self.scales(w);
        let mut active = vec![true; k_terms];
        let mut b = b0.to_vec();
        let mut theta: Vec<f64> = s2_start.iter().map(|v| v.max(0.05).ln()).collect();
        let mut iterations = 0;
        'restart: loop {
            let idx: Vec<usize> = (0..k_terms).filter(|&k| active[k]).collect();
            let s2_of = |theta: &[f64]| -> Vec<f64> {
                (0..k_terms).map(|k| if active[k] { theta[k].exp() } else { 0.0 }).collect()
            };
            // The profiled equations of the active variances (and all the equations, kept
            // for the last point: the Jacobian and the covariances start from them).
            // (With `derivatives`, the equations' Jacobian comes along, in the same pass.)
            let profiled =
                |theta: &[f64], b: &[f64], derivatives: bool| -> Result<(Vec<f64>, Vec<f64>, Evaluation), FitError> {
                    let s2 = s2_of(theta);
                    let b = self.solve_b(b, &s2, w, wk)?;
                    let eval = self.pool.install(|| self.evaluate_in(&b, &s2, w, wk, true, derivatives));
                    Ok((idx.iter().map(|&k| eval.f[p + k] / scales[p + k]).collect(), b, eval))
                };
            if idx.is_empty() {
                b = self.solve_b(&b, &vec![0.0; k_terms], w, wk)?;
                let eval = self.evaluate(&b, &vec![0.0; k_terms], w, wk);
                let jac =
                    if with_jacobian { self.jacobian(&b, &vec![0.0; k_terms], &idx, w, wk) } else { Mat::zeros(0, 0) };
                return Ok((b, vec![0.0; k_terms], iterations, jac, active, eval, Mat::zeros(0, 0)));
            }
            let norm = |g: &[f64]| g.iter().map(|v| v * v).sum::<f64>();
            let mut stalled = 0;
            let (mut g, nb, _) = profiled(&theta, &b, false)?;
            b = nb;
            let dim = idx.len();
            // The Jacobian: by forward differences at the first step (and whenever an
            // updated one fails to give a full step), otherwise by Broyden's update from
            // the last step (each difference costs a pass over the data and its equations).
            // A start from a subsample's fit brings that fit's last Jacobian (of the same
            // scaled equations, which are means over the levels' rows and so about the same
            // on a subsample): it is used as an updated one.
            let mut jac = Mat::<f64>::zeros(dim, dim);
            let mut fresh = false;
            if let Some(j0) = jac_start.filter(|j| j.nrows() == k_terms && j.ncols() == k_terms && dim == k_terms) {
                if (0..dim).all(|r| (0..dim).all(|c| j0[(r, c)].is_finite())) {
                    jac = j0.clone();
                    fresh = true;
                }
            }
            for _ in 0..max_iterations {
                if !keep_going() {
                    return Err(FitError::Interrupted);
                }
                iterations += 1;
                if !fresh {
                    for (c, &k) in idx.iter().enumerate() {
                        let mut t1 = theta.clone();
                        t1[k] += 1e-5;
                        let (g1, _, _) = profiled(&t1, &b, false)?;
                        for r in 0..dim {
                            jac[(r, c)] = (g1[r] - g[r]) / 1e-5;
                        }
                    }
                }
                let differenced = !fresh;
                let mut step = solve(&jac, &g.iter().map(|v| -v).collect::<Vec<f64>>());

                if step.iter().any(|v| !v.is_finite()) {
                    // A flat equation: the component cannot move it, so it is at zero.
                    step = vec![-4.0; dim];
                }
                step.iter_mut().for_each(|s| *s = s.clamp(-4.0, 4.0));
                // A full step below the tolerance ends the iterations where it lands (if the
                // search takes it): the covariances' Jacobian is taken in that pass, not in
                // one of its own after it.
                let last = with_jacobian && step.iter().all(|v| v.abs() < 1e-8);
                let mut t = 1.0;
                let (mut nt, mut ng, mut nb, mut ne);
                loop {
                    nt = theta.clone();
                    for (c, &k) in idx.iter().enumerate() {
                        nt[k] = (nt[k] + t * step[c]).clamp(-25.0, 6.0);
                    }
                    let r = profiled(&nt, &b, last && t == 1.0)?;
                    ng = r.0;
                    nb = r.1;
                    ne = r.2;
                    if norm(&ng) <= norm(&g) * (1.0 - 1e-4 * t) || t < 1e-4 {
                        break;
                    }
                    if !differenced {
                        break;
                    }
                    t *= 0.5;
                }
                if !differenced && t == 1.0 && !(norm(&ng) <= norm(&g) * (1.0 - 1e-4)) {
                    // The updated Jacobian's step does not shorten the equations: difference
                    // again at the current point.
                    fresh = false;
                    iterations -= 1;
                    continue;
                }
                // Broyden's update with the step taken.
                let taken: Vec<f64> = idx.iter().map(|&k| nt[k] - theta[k]).collect();
                let length: f64 = taken.iter().map(|v| v * v).sum();
                if length > 0.0 {
                    let predicted: Vec<f64> =
                        (0..dim).map(|r| (0..dim).map(|c| jac[(r, c)] * taken[c]).sum()).collect();
                    for r in 0..dim {
                        let miss = ng[r] - g[r] - predicted[r];
                        for c in 0..dim {
                            jac[(r, c)] += miss * taken[c] / length;
                        }
                    }
                    fresh = t == 1.0;
                } else {
                    fresh = false;
                }
                let change = step.iter().map(|v| (v * t).abs()).fold(0.0, f64::max);
                theta = nt;
                g = ng;
                b = nb;
                // A stalled search (no step shortens the equations) next to the boundary:
                // the smallest component is taken to zero, as one heading there.
                stalled = if t < 1e-4 { stalled + 1 } else { 0 };
                let stalled_at = (stalled >= STALLED_STEPS)
                    .then(|| idx.iter().copied().min_by(|&a, &c| theta[a].total_cmp(&theta[c])))
                    .flatten()
                    .filter(|&k| theta[k] < STALLED_LOG_VARIANCE);
                // A component heading to zero: fix it there and solve for the others.
                if let Some(k) = idx.iter().copied().find(|&k| theta[k] < -18.0).or(stalled_at) {
                    active[k] = false;
                    theta[k] = (0.05f64).ln();
                    continue 'restart;
                }
                if change < 1e-8 || norm(&g) < 1e-28 {
                    // `ne`: the equations at the point just taken.
                    let newton = jac;
                    let jac = match (with_jacobian, ne.jacobian.take()) {
                        (false, _) => Mat::zeros(0, 0),
                        (true, Some(full)) => self.active_jacobian(&full, &idx),
                        (true, None) => self.jacobian(&b, &s2_of(&theta), &idx, w, wk),
                    };
                    return Ok((b, s2_of(&theta), iterations, jac, active, ne, newton));
                }
            }
            return Err(FitError::NotConverged(format!(
                "the moment equations did not converge in {max_iterations} Newton iterations"
            )));
        }
    }

    /// The Jacobian of the weighted fixed-effect equations (working covariance frozen) in
    /// `(s2_active, b)`: p x (K_active + p), in `b` analytic ([`Self::first_moments`]),
    /// in the variances by forward differences (a pass over the rows each).
    fn weighted_jacobian(&self, b: &[f64], s2: &[f64], idx: &[usize], w: &[Vec<f64>], wk: &Working) -> Mat<f64> {
        let p = self.p;
        let (f0, in_b) = self.first_moments(b, s2, Some(wk));
        let ka = idx.len();
        let mut jac = Mat::<f64>::zeros(p, ka + p);
        for (col, &k) in idx.iter().enumerate() {
            let mut t1 = s2.to_vec();
            let h = 1e-6 * s2[k].max(1e-6);
            t1[k] += h;
            let f1 = self.pool.install(|| self.evaluate_in(b, &t1, w, Some(wk), false, false)).f;
            for r in 0..p {
                jac[(r, col)] = (f1[r] - f0[r]) / h;
            }
        }
        for r in 0..p {
            for c in 0..p {
                jac[(r, ka + c)] = in_b[(r, c)];
            }
        }
        jac
    }

    /// The Jacobian of the unscaled equations of `b` and the active variances in
    /// `(b, s2_active)` at `(b, s2)`: analytic, one pass over the rows (by forward
    /// differences it took a pass a column, four of a fit's ten on two terms).
    fn jacobian(&self, b: &[f64], s2: &[f64], idx: &[usize], w: &[Vec<f64>], wk: Option<&Working>) -> Mat<f64> {
        let full = self
            .pool
            .install(|| self.evaluate_in(b, s2, w, wk, true, true))
            .jacobian
            .expect("the derivatives were asked for");
        self.active_jacobian(&full, idx)
    }

    /// The rows and columns of `b` and the active variances of the Jacobian in `(b, s2)`.
    fn active_jacobian(&self, full: &Mat<f64>, idx: &[usize]) -> Mat<f64> {
        let p = self.p;
        let eq: Vec<usize> = (0..p).chain(idx.iter().map(|k| p + k)).collect();
        Mat::from_fn(eq.len(), eq.len(), |r, c| full[(eq[r], eq[c])])
    }
}

impl PairLayout {
    fn new(chunks: &[GlmmChunk<'_>], k: usize, l: usize) -> Result<PairLayout, FitError> {
        let mut cells: Option<CellCounts> = None;
        for c in chunks {
            let part = CellCounts::count(&c.data.factors[k], &c.data.factors[l]);
            cells = Some(match cells {
                None => part,
                Some(total) => total.merge(&part)?,
            });
        }
        let cells = cells.expect("at least one chunk");
        let position = |g: usize, h: u32| -> u32 {
            let range = cells.row_starts[g]..cells.row_starts[g + 1];
            let at = cells.cols[range.clone()].binary_search(&h).expect("every row's cell is counted");
            (range.start + at) as u32
        };
        let cell_of_row: Vec<Vec<u32>> = chunks
            .iter()
            .map(|c| {
                let (fk, fl) = (&c.data.factors[k], &c.data.factors[l]);
                (0..c.n_obs()).into_par_iter().map(|i| position(fk.level(i), fl.level(i) as u32)).collect()
            })
            .collect();
        // Cells of two rows or more, numbered in storage order.
        let mut multi_id = vec![u32::MAX; cells.cols.len()];
        let (mut multi_k, mut multi_l) = (Vec::new(), Vec::new());
        for g in 0..cells.row_starts.len() - 1 {
            for j in cells.row_starts[g]..cells.row_starts[g + 1] {
                if cells.counts[j] >= 2 {
                    multi_id[j] = multi_k.len() as u32;
                    multi_k.push(g as u32);
                    multi_l.push(cells.cols[j]);
                }
            }
        }
        let multi_rows = cell_of_row
            .iter()
            .map(|rows| {
                Grouped::of(multi_k.len(), rows.len(), |i| {
                    let id = multi_id[rows[i] as usize];
                    (id != u32::MAX).then_some(id as usize)
                })
            })
            .collect();
        let (transposed, from) = transpose_with_origin(&cells);
        let at_most_one = |c: &CellCounts| c.row_starts.windows(2).all(|w| w[1] - w[0] <= 1);
        let (k_in_l, l_in_k) = (at_most_one(&cells), at_most_one(&transposed));
        Ok(PairLayout {
            k,
            l,
            cells,
            transposed,
            transposed_from: from,
            cell_of_row,
            multi_k,
            multi_l,
            multi_rows,
            multi_of_cell: multi_id,
            k_in_l,
            l_in_k,
        })
    }
}

/// A start of the variances' Newton iterations: `(b, s2, Jacobian of the scaled profiled
/// equations in log s2)`.
type Start = (Vec<f64>, Vec<f64>, Option<Mat<f64>>);

/// The rows of one chunk that a subsample keeps, copied.
struct SubsampleChunk {
    y: Vec<f64>,
    x: Vec<Option<Vec<f64>>>,
    codes: Vec<Vec<i32>>,
    trials: Option<Vec<f64>>,
    offset: Option<Vec<f64>>,
}

/// Starting values of `(b, s2)` from the first-step fit to a subsample of the rows: those
/// whose cell (their levels of every term) falls in a pseudo-random fraction of the cells,
/// chosen by a hash of the levels, so the same rows whatever the chunks and threads. Each
/// level keeps about that fraction of its rows (a one-term model keeps whole levels). The
/// subsample's own fit starts from a smaller subsample in turn. `None` when the data are
/// small or the subsample's fit fails (the start is then the default). `hash_limit`: the
/// rows' hashes are below it (`u64::MAX` for all the data; a subsample's own threshold
/// within a subsample, so that the next one is a fraction of its rows, not all of them).
fn subsample_start(
    chunks: &[GlmmChunk<'_>],
    family: GlmFamily,
    above: usize,
    hash_limit: u64,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Option<Start> {
    let n: usize = chunks.iter().map(|c| c.n_obs()).sum();
    if n <= above || above == 0 {
        return None;
    }
    let target = (n / SUBSAMPLE_FRACTION).max(above / 2);
    let threshold = ((target as f64 / n as f64) * hash_limit as f64) as u64;
    let mix = |mut z: u64| {
        // splitmix64's finalizer.
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    };
    let parts: Vec<SubsampleChunk> = pool.install(|| {
        chunks
            .par_iter()
            .map(|c| {
                let keep: Vec<usize> = (0..c.n_obs())
                    .filter(|&i| {
                        let h = c.data.factors.iter().fold(0x9e3779b97f4a7c15u64, |h, f| {
                            mix(h ^ (f.level(i) as u64).wrapping_add(0x632be59bd9b4e019))
                        });
                        h < threshold
                    })
                    .collect();
                let pick = |v: &[f64]| keep.iter().map(|&i| v[i]).collect::<Vec<f64>>();
                SubsampleChunk {
                    y: pick(c.data.y),
                    x: c.data
                        .x
                        .iter()
                        .map(|col| match col {
                            crate::data::FixedColumn::Ones => None,
                            crate::data::FixedColumn::Values(v) => Some(pick(v)),
                        })
                        .collect(),
                    codes: c.data.factors.iter().map(|f| keep.iter().map(|&i| f.codes[i]).collect()).collect(),
                    trials: c.trials.map(pick),
                    offset: c.offset.map(pick),
                }
            })
            .collect()
    });
    let sub: Vec<GlmmChunk<'_>> = parts
        .iter()
        .zip(chunks)
        .filter(|(part, _)| !part.y.is_empty())
        .map(|(part, c)| GlmmChunk {
            data: ModelData {
                y: &part.y,
                x: part
                    .x
                    .iter()
                    .map(|v| v.as_deref().map_or(crate::data::FixedColumn::Ones, crate::data::FixedColumn::Values))
                    .collect(),
                x_names: c.data.x_names.clone(),
                intercept: c.data.intercept,
                factors: c
                    .data
                    .factors
                    .iter()
                    .zip(&part.codes)
                    .map(|(f, codes)| FactorCodes { codes, ..f.clone() })
                    .collect(),
            },
            trials: part.trials.as_deref(),
            offset: part.offset.as_deref(),
        })
        .collect();
    if sub.is_empty() {
        return None;
    }
    let options = GlmmOptions {
        weights: LevelWeights::Simple,
        fixed: FixedWeights::Independence,
        modes: false,
        max_iterations: 200,
        subsample_above: above,
    };
    first_step(&sub, family, &options, threshold, pool, keep_going).ok()
}

/// The first-step (simple-weight) estimates `(b, s2)` with the layout's timings, from a
/// subsample's start when the data are large.
fn first_step(
    chunks: &[GlmmChunk<'_>],
    family: GlmFamily,
    options: &GlmmOptions,
    hash_limit: u64,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<Start, FitError> {
    let layout = pool.install(|| Layout::new(chunks, family, pool))?;
    let k_terms = layout.k_terms();
    let (start, s_start, jac_start) =
        match subsample_start(chunks, family, options.subsample_above, hash_limit, pool, keep_going) {
            Some(start) => start,
            None => (layout.glm_start()?, vec![0.5; k_terms], None),
        };
    let (b, s2, _, _, active, _, newton) = layout.solve(
        &start,
        &s_start,
        jac_start.as_ref(),
        &layout.simple_weights(),
        None,
        options.max_iterations,
        false,
        keep_going,
    )?;
    Ok((b, s2, active.iter().all(|&a| a).then_some(newton)))
}

/// Fits the GLMM to the rows of `chunks` (which share their levels); the result does not
/// depend on how the rows are split into chunks beyond rounding.
pub fn fit_glmm(
    chunks: &[GlmmChunk<'_>],
    family: GlmFamily,
    options: &GlmmOptions,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<GlmmFit, FitError> {
    let mut clock = std::time::Instant::now();
    let mut timings: Vec<(&'static str, f64)> = Vec::new();
    let mut lap = |stage: &'static str| {
        timings.push((stage, clock.elapsed().as_secs_f64()));
        clock = std::time::Instant::now();
    };
    let layout = pool.install(|| Layout::new(chunks, family, pool))?;
    lap("layout");
    let k_terms = layout.k_terms();
    let (n_y, sum_y, sum_n) = chunks.iter().fold((0usize, 0.0, 0.0), |acc, c| {
        (
            acc.0 + c.n_obs(),
            acc.1 + c.data.y.iter().sum::<f64>(),
            acc.2 + (0..c.n_obs()).map(|i| c.trials(i)).sum::<f64>(),
        )
    });
    if n_y == 0 || sum_y == 0.0 || (family.distribution == Distribution::Binomial && sum_y == sum_n) {
        return Err(FitError::NotIdentifiable(
            "the response is all 0 (or, for binomial data, all successes): it carries no information about the model"
                .into(),
        ));
    }
    // Large data: the start from a subsample's fit, so that few Newton iterations run over
    // all the rows (the estimates are the same to the convergence tolerance).
    let sub = subsample_start(chunks, family, options.subsample_above, u64::MAX, pool, keep_going);
    lap("subsample start");
    let (start, s_start, jac_start) = match sub {
        Some(start) => start,
        None => (layout.glm_start()?, vec![0.5; k_terms], None),
    };
    lap("glm start");
    let w1 = layout.simple_weights();
    let (b1, s1, it1, jac1, active1, eval1, _) =
        layout.solve(&start, &s_start, jac_start.as_ref(), &w1, None, options.max_iterations, true, keep_going)?;
    lap("variances");
    let mut second_step = false;
    let (b, s2, iterations, jac, active, w, eval) = match options.weights {
        LevelWeights::Information => {
            let w2 = layout.information_weights(&b1, &s1);
            let s_start: Vec<f64> = s1.iter().map(|v| v.max(0.05)).collect();
            match layout.solve(&b1, &s_start, None, &w2, None, options.max_iterations, true, keep_going) {
                Ok((b, s2, it2, jac, active, eval, _)) => {
                    second_step = true;
                    (b, s2, it1 + it2, jac, active, w2, eval)
                }
                // The weighted equations without a solution that Newton's method finds:
                // the first-step estimates stand (reported in `second_step`).
                Err(FitError::NotConverged(_)) => (b1.clone(), s1.clone(), it1, jac1, active1, w1, eval1),
                Err(e) => return Err(e),
            }
        }
        LevelWeights::Simple => (b1.clone(), s1.clone(), it1, jac1, active1, w1, eval1),
    };
    lap("second step");
    // The fixed effects from the quasi-score with the working covariance at the estimated
    // variances, by Fisher scoring with the working covariance refreshed at every step
    // (frozen within a step) until the estimates settle. The variances stay those of the
    // first-moment equations: their pair statistics are centred by the fitted marginal
    // means, which the unweighted equations match in total.
    let mut weighted = None;
    let mut working_iterations = 0;
    let b_first_moment = b.clone();
    let mut b = b;
    if options.fixed == FixedWeights::Working {
        let mut wk = layout.working(&b, &s2, None, keep_going)?;
        for _ in 0..MAX_WORKING_UPDATES {
            if !keep_going() {
                return Err(FitError::Interrupted);
            }
            let nb = layout.solve_b(&b, &s2, &w, Some(&wk))?;
            working_iterations += 1;
            let change = nb.iter().zip(&b).map(|(a, c)| (a - c).abs()).fold(0.0, f64::max);
            b = nb;
            // The last projections start the next solve; its row coefficients go first.
            let Working { c: spent, proj: previous } = wk;
            drop(spent);
            wk = layout.working(&b, &s2, Some(&previous), keep_going)?;
            if change < WORKING_TOLERANCE {
                break;
            }
        }
        b = layout.solve_b(&b, &s2, &w, Some(&wk))?;
        let idx: Vec<usize> = (0..k_terms).filter(|&k| active[k]).collect();
        let jac_w = layout.weighted_jacobian(&b, &s2, &idx, &w, &wk);
        weighted = Some((wk, jac_w));
    }
    lap("working fixed effects");
    let (vcov, vcov_model, vcov_variances) = pool.install(|| {
        sandwich(
            &layout,
            &b_first_moment,
            &s2,
            &w,
            &eval,
            &jac,
            &active,
            weighted.as_ref().map(|(wk, j)| (wk, &b[..], j)),
        )
    })?;
    lap("covariances");
    // The working covariance's row coefficients are spent.
    drop(weighted);
    let (ranef, pirls_iterations) =
        if options.modes { conditional_modes(&layout, &b, &s2, keep_going)? } else { (vec![Vec::new(); k_terms], 0) };
    lap("modes");
    Ok(GlmmFit {
        coef: b,
        variances: s2,
        at_boundary: active.iter().map(|a| !a).collect(),
        vcov,
        vcov_model,
        vcov_variances,
        ranef,
        first_coef: b1,
        first_variances: s1,
        statistic: layout.statistic.clone(),
        second_step,
        iterations,
        working_iterations,
        pirls_iterations,
        timings,
        passes: layout.passes.each_ref().map(|p| p.load(std::sync::atomic::Ordering::Relaxed)),
    })
}

/// `J^-1 V J^-T` over `(b, s2_active)` of the first-moment equations, stacked, when the
/// fixed effects come from the working covariance (`weighted`: its frozen weights, the
/// estimates `b_w` and the Jacobian of its equations in `(s2_active, b_w)`), with the
/// quasi-score `sum_i c_i r_i x*_i`, over `(b, s2_active, b_w)`. `V = sum_k V_k -
/// (K - 1) V_rows` from the estimating functions summed by level of every term (the
/// pair statistic of term `k` counted in the clusters of `k`). Returns the covariances
/// of the reported fixed effects (`b_w` when weighted), their model-based covariance
/// `J_ww^-1 (I_w + J_ws V_s J_ws') J_ww^-T` (`I_w = -J_ww = X'D V^-1 D X`, `V_s` the
/// sandwich of the variances: the model-based part plus the propagated uncertainty of
/// the variances), and the covariance of the variances. `eval`: the equations at `(b, s2)`.
#[allow(clippy::too_many_arguments)]
fn sandwich(
    layout: &Layout<'_, '_>,
    b: &[f64],
    s2: &[f64],
    w: &[Vec<f64>],
    eval: &Evaluation,
    jac: &Mat<f64>,
    active: &[bool],
    weighted: Option<(&Working, &[f64], &Mat<f64>)>,
) -> Result<Covariances, FitError> {
    let p = layout.p;
    let k_terms = layout.k_terms();
    let idx: Vec<usize> = (0..k_terms).filter(|&k| active[k]).collect();
    let ka = idx.len();
    let base = p + ka;
    let dim = base + if weighted.is_some() { p } else { 0 };
    // The linear predictors recomputed a row at a time (not stored).
    let eta = |c: usize, i: usize| layout.row_linear_predictor(c, i, b);
    let s2_total: f64 = s2.iter().sum();
    let total = layout.marginal(s2_total);
    // The slot of the within-row statistic, if any (a row-level estimating function).
    let within = idx.iter().position(|&k| layout.statistic[k] == Statistic::WithinRow).map(|c| p + c);
    let within_terms = within.map(|_| layout.within_row_terms(&layout.linear_predictor(b), s2_total));
    // The pair statistics are centred by the marginal means: their linear projection on
    // the rows (`2 w_g r_s sum_{t in g, t != s} mu_t`) is subtracted, so what remains is a
    // sum of products `r_s r_t` within the level, counted in the clusters of its own term
    // only (the rows' part of the pairs left out within repeated cells of crossed terms,
    // `2 w_g r_s (M_cell - mu_s)`, is neglected).
    let pair_slots: Vec<(usize, usize)> = idx
        .iter()
        .enumerate()
        .filter(|&(_, &k)| layout.statistic[k] == Statistic::Pairs)
        .map(|(slot, &k)| (k, p + slot))
        .collect();
    let marginal = |c: usize, i: usize| layout.chunks[c].trials(i) * total.mean(eta(c, i));
    let within_centring = within.map(|_| layout.within_row_centring_terms(&layout.row_values(marginal)));
    let row_psi = |c: usize, i: usize, out: &mut [f64]| {
        let chunk = &layout.chunks[c];
        let mu = marginal(c, i);
        let r = chunk.data.y[i] - mu;
        layout.row_design(None, c, i, &mut out[..p]);
        out[..p].iter_mut().for_each(|v| *v *= r);
        if let (Some(slot), Some(terms), Some(centring)) = (within, &within_terms, &within_centring) {
            let y = chunk.data.y[i];
            out[slot] = y * (y - 1.0) - terms[c][i] - centring[c][i];
        }
        if let Some((wk, bw, _)) = weighted {
            let r = chunk.data.y[i] - chunk.trials(i) * total.mean(layout.row_linear_predictor(c, i, bw));
            layout.row_design(Some(wk), c, i, &mut out[base..]);
            out[base..].iter_mut().for_each(|v| *v *= r);
        }
    };
    let psi_of = |c: usize, i: usize, out: &mut [f64]| {
        out.iter_mut().for_each(|v| *v = 0.0);
        row_psi(c, i, out);
    };
    // Rows by fixed blocks added in order, and the levels of every term. The estimating
    // functions of a stretch of rows are computed once, in row order and in parallel,
    // then added to their levels' sums (each term's in a task of its own): row by row in
    // order, so every level's sum is added in its rows' order, whatever the threads.
    const STRETCH: usize = 4 * ROWS;
    let mut rows = Mat::<f64>::zeros(dim, dim);
    let mut level_sums: Vec<Vec<f64>> = layout.n_levels.iter().map(|&n| vec![0.0; n * dim]).collect();
    let mut psi = vec![0.0; STRETCH * dim];
    for (c, chunk) in layout.chunks.iter().enumerate() {
        let n = chunk.n_obs();
        for first in (0..n).step_by(STRETCH) {
            let len = STRETCH.min(n - first);
            let stretch = &mut psi[..len * dim];
            let partial: Vec<Vec<f64>> = stretch
                .par_chunks_mut(ROWS * dim)
                .enumerate()
                .map(|(t, out)| {
                    let mut m = vec![0.0; dim * dim];
                    for (at, psi) in out.chunks_mut(dim).enumerate() {
                        psi_of(c, first + t * ROWS + at, psi);
                        for a in 0..dim {
                            for b in 0..dim {
                                m[a * dim + b] += psi[a] * psi[b];
                            }
                        }
                    }
                    m
                })
                .collect();
            for m in partial {
                for a in 0..dim {
                    for b in 0..dim {
                        rows[(a, b)] += m[a * dim + b];
                    }
                }
            }
            let stretch = &*stretch;
            level_sums.par_iter_mut().enumerate().for_each(|(k, sums)| {
                let f = &chunk.data.factors[k];
                for (at, psi) in stretch.chunks(dim).enumerate() {
                    let g = f.level(first + at);
                    sums[g * dim..(g + 1) * dim].iter_mut().zip(psi).for_each(|(s, v)| *s += v);
                }
            });
        }
    }
    let mut clustered = Mat::<f64>::zeros(dim, dim);
    for (k, mut sums) in level_sums.into_iter().enumerate() {
        // In its own term's clusters the pair statistic counts whole.
        if let Some(&(_, slot)) = pair_slots.iter().find(|&&(term, _)| term == k) {
            for g in 0..layout.n_levels[k] {
                sums[g * dim + slot] =
                    w[k][g] * (layout.pair_stats[k][g] - eval.expected[k][g] - eval.centring_levels[k][g]);
            }
        }
        clustered += Layout::outer_sum(&sums, dim);
    }
    let mut meat = clustered.clone();
    meat -= &rows * (k_terms as f64 - 1.0);
    if (0..dim).any(|a| !(meat[(a, a)] > 0.0)) {
        meat = clustered;
    }
    // The stacked Jacobian: block lower triangular.
    let mut full = Mat::<f64>::zeros(dim, dim);
    for r in 0..base {
        for c in 0..base {
            full[(r, c)] = jac[(r, c)];
        }
    }
    if let Some((_, _, jw)) = weighted {
        for r in 0..p {
            for c in 0..ka + p {
                full[(base + r, p + c)] = jw[(r, c)];
            }
        }
    }
    let inverse = |m: &Mat<f64>| -> Mat<f64> {
        let n = m.nrows();
        let mut inv = Mat::<f64>::zeros(n, n);
        for c in 0..n {
            let e: Vec<f64> = (0..n).map(|r| if r == c { 1.0 } else { 0.0 }).collect();
            let col = solve(m, &e);
            for r in 0..n {
                inv[(r, c)] = col[r];
            }
        }
        inv
    };
    let jinv = inverse(&full);
    let cov = &jinv * &meat * jinv.transpose();
    let at = if weighted.is_some() { base } else { 0 };
    let vcov = Mat::from_fn(p, p, |a, c| cov[(at + a, at + c)]);
    let mut vcov_variances = Mat::<f64>::zeros(k_terms, k_terms);
    for (a, &ka_) in idx.iter().enumerate() {
        for (c, &kc) in idx.iter().enumerate() {
            vcov_variances[(ka_, kc)] = cov[(p + a, p + c)];
        }
    }
    // The model-based covariance: the same linearization with the quasi-score's own
    // variance taken from the model, `X'D V^-1 D X`, and the estimated variances moving
    // the fixed effects through the Jacobian, `J_ww^-1 (I_w + J_ws V_s J_ws') J_ww^-T`:
    // positive definite by construction. (Taking the quasi-score's covariances with the
    // other estimating functions from the meat as well gave negative or near-zero
    // variances of the slope on power-law crossed Bernoulli data, where the empirical
    // covariances outweigh the model's variance.)
    let vcov_model = weighted.map(|(_, _, jw)| {
        let mut hybrid = meat.clone();
        for a in 0..p {
            for c in 0..base {
                hybrid[(base + a, c)] = 0.0;
                hybrid[(c, base + a)] = 0.0;
            }
            for c in 0..p {
                hybrid[(base + a, base + c)] = -0.5 * (jw[(a, ka + c)] + jw[(c, ka + a)]);
            }
        }
        let cov = &jinv * &hybrid * jinv.transpose();
        Mat::from_fn(p, p, |a, c| cov[(base + a, base + c)])
    });
    Ok((vcov, vcov_model, vcov_variances))
}

/// The conditional variances of the modes `u` at `(b, s2)`, `diag((Z'WZ + G^-1)^-1)` with
/// `W` the Fisher weights at the modes (the curvature of the penalized likelihood that
/// [`conditional_modes`] maximises; lme4's `condVar` for glmer). Terms at zero get 0.
pub fn conditional_variances(
    chunks: &[GlmmChunk<'_>],
    family: GlmFamily,
    b: &[f64],
    s2: &[f64],
    modes: &[Vec<f64>],
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<InverseDiagonal, FitError> {
    let layout = pool.install(|| Layout::new(chunks, family, pool))?;
    let k_terms = layout.k_terms();
    layout.check_estimates(b, s2)?;
    if modes.len() != k_terms {
        return Err(FitError::InvalidInput("the estimates do not match the model's terms or columns".into()));
    }
    if (0..k_terms).any(|k| s2[k] > 0.0 && modes[k].len() != layout.n_levels[k]) {
        return Err(FitError::InvalidInput("the modes do not match the levels of their terms".into()));
    }
    let active: Vec<usize> = (0..k_terms).filter(|&k| s2[k] > 0.0).collect();
    if active.is_empty() {
        return Ok(InverseDiagonal {
            diagonal: layout.n_levels.iter().map(|&n| vec![0.0; n]).collect(),
            std_error: layout.n_levels.iter().map(|&n| vec![0.0; n]).collect(),
            exact: true,
            probes: 0,
            max_relative_error: 0.0,
        });
    }
    let eta0 = pool.install(|| layout.linear_predictor(b));
    let family = &layout.family;
    let row_w: Vec<Vec<f64>> = layout
        .chunks
        .iter()
        .enumerate()
        .map(|(c, chunk)| {
            (0..chunk.n_obs())
                .map(|i| {
                    let e = eta0[c][i] + active.iter().map(|&k| modes[k][chunk.data.factors[k].level(i)]).sum::<f64>();
                    let d = family.mu_eta(e);
                    chunk.trials(i) * d * d / family.variance(family.linkinv(e)).max(1e-300)
                })
                .collect()
        })
        .collect();
    let effects: Vec<(Effect, f64)> = active.iter().map(|&k| (Effect::Term(k), 1.0 / s2[k])).collect();
    let matrix = layout.weighted_matrix(&effects, &row_w);
    crate::condvar::matrix_inverse_diagonal(&matrix, &layout.n_levels, pool, keep_going)
}

/// Conditional modes of the random effects at `(b, s2)` by penalized IRLS (Fisher
/// scoring on `sum_i loglik_i - sum_k |u_k|^2 / (2 s2_k)`), each step's system
/// `Z'WZ + diag(1 / s2_k)` solved by conjugate gradients.
fn conditional_modes(
    layout: &Layout<'_, '_>,
    b: &[f64],
    s2: &[f64],
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<(Vec<Vec<f64>>, usize), FitError> {
    let k_terms = layout.k_terms();
    let family = &layout.family;
    let active: Vec<usize> = (0..k_terms).filter(|&k| s2[k] > 0.0).collect();
    let mut u: Vec<Vec<f64>> = layout.n_levels.iter().map(|&n| vec![0.0; n]).collect();
    if active.is_empty() {
        return Ok((u, 0));
    }
    let pool = layout.pool;
    // The fixed part of the linear predictor is recomputed a row at a time (not stored).
    let eta_of = |u: &[Vec<f64>], c: usize, i: usize| -> f64 {
        let chunk = &layout.chunks[c];
        layout.row_linear_predictor(c, i, b) + active.iter().map(|&k| u[k][chunk.data.factors[k].level(i)]).sum::<f64>()
    };
    // The objective at `u` (the log-likelihood added in fixed blocks of rows, in order)
    // with, per row, the score and the weight there (the next step's, if `u` is taken):
    // one pass over the rows.
    let evaluate_at = |u: &[Vec<f64>]| -> (f64, Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let mut v = 0.0;
        let (mut score, mut weight) = (Vec::new(), Vec::new());
        for (c, chunk) in layout.chunks.iter().enumerate() {
            let (mut s, mut w) = (vec![0.0; chunk.n_obs()], vec![0.0; chunk.n_obs()]);
            let blocks: Vec<f64> = pool.install(|| {
                s.par_chunks_mut(ROWS)
                    .zip(w.par_chunks_mut(ROWS))
                    .enumerate()
                    .map(|(t, (s, w))| {
                        let mut loglik = 0.0;
                        for (at, (s, w)) in s.iter_mut().zip(w.iter_mut()).enumerate() {
                            let i = t * ROWS + at;
                            let (y, n, e) = (chunk.data.y[i], chunk.trials(i), eta_of(u, c, i));
                            let mu = family.linkinv(e);
                            let d = family.mu_eta(e);
                            let v = family.variance(mu).max(1e-300);
                            loglik += family.loglik(y, n, e);
                            *s = (y - n * mu) * d / v;
                            *w = n * d * d / v;
                        }
                        loglik
                    })
                    .collect()
            });
            v += blocks.iter().sum::<f64>();
            score.push(s);
            weight.push(w);
        }
        let value = v - active.iter().map(|&k| u[k].iter().map(|x| x * x).sum::<f64>() / (2.0 * s2[k])).sum::<f64>();
        (value, score, weight)
    };
    let effects: Vec<(Effect, f64)> = active.iter().map(|&k| (Effect::Term(k), 1.0 / s2[k])).collect();
    let (mut current, mut score, mut row_w) = evaluate_at(&u);
    for iteration in 1..=100 {
        if !keep_going() {
            return Err(FitError::Interrupted);
        }
        let mut rhs = pool.install(|| layout.level_sums_vec(&active, 1, |c, i, out| out[0] = score[c][i]));
        for (r, &k) in rhs.iter_mut().zip(&active) {
            r.iter_mut().zip(&u[k]).for_each(|(r, x)| *r -= x / s2[k]);
        }
        // The rows' values at the current modes are spent once summed: the line search's
        // replace them.
        drop(std::mem::take(&mut score));
        let matrix = layout.weighted_matrix(&effects, &row_w);
        drop(std::mem::take(&mut row_w));
        let rhs_flat: Vec<f64> = rhs.concat();
        let step = matrix.solve(&rhs_flat, 1, 1e-10, pool, keep_going)?.x;
        drop(matrix);
        let mut t = 1.0;
        loop {
            let mut trial = u.clone();
            let mut at = 0;
            for &k in &active {
                for x in trial[k].iter_mut() {
                    *x += t * step[at];
                    at += 1;
                }
            }
            let (value, trial_score, trial_w) = evaluate_at(&trial);
            if value >= current - 1e-12 * current.abs() || t < 1e-4 {
                u = trial;
                current = value;
                score = trial_score;
                row_w = trial_w;
                break;
            }
            t *= 0.5;
        }
        let change = step.iter().map(|v| (v * t).abs()).fold(0.0, f64::max);
        if change < 1e-9 {
            return Ok((u, iteration));
        }
    }
    Err(FitError::NotConverged("the conditional modes did not converge in 100 penalized IRLS iterations".into()))
}

/// The statistics of the moment equations and their expectations at `(b, s2)`: first the
/// `p` first moments `sum_i x_ij y_i` (expectation `sum_i x_ij n_i m(eta0_i; s2_+)`), then
/// those of every term (`T_k` with the simple level weights, or `D`). For tests of the
/// expectations and for diagnostics.
pub fn moment_statistics(
    chunks: &[GlmmChunk<'_>],
    family: GlmFamily,
    b: &[f64],
    s2: &[f64],
    pool: &rayon::ThreadPool,
) -> Result<(Vec<f64>, Vec<f64>), FitError> {
    let layout = pool.install(|| Layout::new(chunks, family, pool))?;
    let w = layout.simple_weights();
    let at = layout.evaluate(b, s2, &w, None);
    let p = layout.p;
    let mut t = vec![0.0; p];
    for chunk in chunks {
        for i in 0..chunk.n_obs() {
            for (j, t) in t.iter_mut().enumerate() {
                *t += chunk.data.x[j].value(i, 0.0) * chunk.data.y[i];
            }
        }
    }
    let mut e: Vec<f64> = t.iter().zip(&at.f).map(|(t, f)| t - f).collect();
    for k in 0..layout.k_terms() {
        let stat = match layout.statistic[k] {
            Statistic::Pairs => w[k].iter().zip(&layout.pair_stats[k]).map(|(w, t)| w * t).sum(),
            Statistic::WithinRow => layout.within_row,
        };
        t.push(stat);
        e.push(stat - at.f[p + k] - at.centring[k]);
    }
    Ok((t, e))
}

/// The conditional modes (penalized IRLS) at given `(b, s2)` over the rows of `chunks`,
/// with the number of iterations taken: for fits whose estimates come from elsewhere (the
/// average of chunk fits, the likelihood fit of [`crate::composite`]).
pub fn modes_at(
    chunks: &[GlmmChunk<'_>],
    family: GlmFamily,
    b: &[f64],
    s2: &[f64],
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<(Vec<Vec<f64>>, usize), FitError> {
    let layout = pool.install(|| Layout::new(chunks, family, pool))?;
    layout.check_estimates(b, s2)?;
    conditional_modes(&layout, b, s2, keep_going)
}

/// The model-based covariance of the fixed effects at given `(b, s2)` (`p x p`):
/// `J_ww^-1 (I_w + J_ws V_s J_ws') J_ww^-T` of the quasi-score with the working covariance
/// there (`I_w = X'D V^-1 D X`, the curvature `J_ww` and the variances' Jacobian `J_ws`
/// by differences), `V_s` the covariance of the estimated variances (`K x K`, given). For
/// fits whose fixed effects come from elsewhere: the composite likelihood with crossed
/// terms, whose own sandwich overstates the intercept's variance (its cluster sums over
/// the levels of one term are not independent when the other term's effects are
/// estimated from the same rows).
pub fn fixed_effects_covariance_at(
    chunks: &[GlmmChunk<'_>],
    family: GlmFamily,
    b: &[f64],
    s2: &[f64],
    vcov_variances: &Mat<f64>,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<Mat<f64>, FitError> {
    let layout = pool.install(|| Layout::new(chunks, family, pool))?;
    let (p, k_terms) = (layout.p, layout.k_terms());
    layout.check_estimates(b, s2)?;
    if vcov_variances.nrows() != k_terms || vcov_variances.ncols() != k_terms {
        return Err(FitError::InvalidInput("the estimates do not match the model's terms or columns".into()));
    }
    let idx: Vec<usize> = (0..k_terms).filter(|&k| s2[k] > 0.0).collect();
    let ka = idx.len();
    let working = layout.working(b, s2, None, keep_going)?;
    let jw = layout.weighted_jacobian(b, s2, &idx, &layout.simple_weights(), &working);
    let j_ww = Mat::from_fn(p, p, |r, c| jw[(r, ka + c)]);
    let j_ws = Mat::from_fn(p, ka, |r, c| jw[(r, c)]);
    let v_s = Mat::from_fn(ka, ka, |r, c| vcov_variances[(idx[r], idx[c])]);
    let middle = Mat::from_fn(p, p, |r, c| -0.5 * (j_ww[(r, c)] + j_ww[(c, r)])) + &j_ws * &v_s * j_ws.transpose();
    let inv = crate::dense::inverse(&j_ww, "curvature of the quasi-score")?;
    Ok(&inv * &middle * inv.transpose())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small design's rows: per term its codes and number of levels, one covariate, the
    /// response, binomial trials and offsets.
    struct Rows {
        codes: Vec<Vec<i32>>,
        levels: Vec<usize>,
        x: Vec<f64>,
        y: Vec<f64>,
        trials: Option<Vec<f64>>,
        offset: Option<Vec<f64>>,
    }

    /// `n` rows of `levels` (a level count of 0: an observation-level term; `nested`: the
    /// second term's level is the first's divided by 3), `y ~ Binomial(trials, .)` or
    /// Poisson at `logit`/`log` `-0.3 + 0.6 x + u + v`.
    fn rows(family: &GlmFamily, n: usize, levels: &[usize], nested: bool, trials: u32, seed: u64) -> Rows {
        let mut state = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let levels: Vec<usize> = levels.iter().map(|&m| if m == 0 { n } else { m }).collect();
        let mut codes = vec![Vec::with_capacity(n); levels.len()];
        let (mut x, mut y, mut offset) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            for (k, &m) in levels.iter().enumerate() {
                let g = if m == n {
                    i
                } else if nested && k == 1 {
                    codes[0][i] as usize / 3
                } else {
                    ((uniform() * m as f64) as usize).min(m - 1)
                };
                codes[k].push(g as i32);
            }
            let xi = 2.0 * uniform() - 1.0;
            let off = if family.is_poisson_log() { 0.2 * (i % 3) as f64 } else { 0.0 };
            let eta = -0.3 + 0.6 * xi + off + 0.8 * (uniform() - 0.5);
            let mu = family.linkinv(eta);
            let yi = if family.is_poisson_log() {
                // Inversion of the Poisson distribution function.
                let (mut k, mut p, mut cdf, u) = (0.0, (-mu).exp(), (-mu).exp(), uniform());
                while u > cdf && k < 50.0 {
                    k += 1.0;
                    p *= mu / k;
                    cdf += p;
                }
                k
            } else {
                (0..trials).filter(|_| uniform() < mu).count() as f64
            };
            x.push(xi);
            y.push(yi);
            offset.push(off);
        }
        let trials = (trials > 1).then(|| vec![trials as f64; n]);
        let offset = family.is_poisson_log().then_some(offset);
        Rows { codes, levels, x, y, trials, offset }
    }

    /// The analytic Jacobian of the moment equations in `(b, s2)` against central
    /// differences of the equations.
    fn check_jacobian(family: GlmFamily, rows: &Rows, b: &[f64], s2: &[f64], tolerance: f64) {
        let chunk = GlmmChunk {
            data: ModelData {
                y: &rows.y,
                x: vec![FixedColumn::Ones, FixedColumn::Values(&rows.x)],
                x_names: vec!["(Intercept)".into(), "x".into()],
                intercept: Some(0),
                factors: rows
                    .codes
                    .iter()
                    .zip(&rows.levels)
                    .enumerate()
                    .map(|(k, (codes, &n_levels))| FactorCodes { name: format!("g{k}"), codes, offset: 0, n_levels })
                    .collect(),
            },
            trials: rows.trials.as_deref(),
            offset: rows.offset.as_deref(),
        };
        let pool = crate::thread_pool(2).unwrap();
        let layout = pool.install(|| Layout::new(std::slice::from_ref(&chunk), family, &pool)).unwrap();
        let w = layout.simple_weights();
        let at = |b: &[f64], s2: &[f64], derivatives: bool| {
            pool.install(|| layout.evaluate_in(b, s2, &w, None, true, derivatives))
        };
        let analytic = at(b, s2, true).jacobian.unwrap();
        let (p, k_terms) = (b.len(), s2.len());
        let mut worst: f64 = 0.0;
        for col in 0..p + k_terms {
            let h = if col < p { 1e-5 } else { 1e-5 * s2[col - p] };
            let shifted = |sign: f64| {
                let (mut b1, mut s1) = (b.to_vec(), s2.to_vec());
                if col < p {
                    b1[col] += sign * h;
                } else {
                    s1[col - p] += sign * h;
                }
                at(&b1, &s1, false).f
            };
            let (up, down) = (shifted(1.0), shifted(-1.0));
            for r in 0..p + k_terms {
                // Relative to the equation's largest derivative times its parameter's scale.
                let scale = (0..p + k_terms)
                    .map(|c| analytic[(r, c)].abs() * if c < p { 1.0 } else { s2[c - p] })
                    .fold(0.0, f64::max);
                let numeric = (up[r] - down[r]) / (2.0 * h);
                let unit = if col < p { 1.0 } else { s2[col - p] };
                let error = (analytic[(r, col)] - numeric).abs() * unit / scale;
                worst = worst.max(error);
                assert!(
                    error < tolerance,
                    "d f[{r}] / d param[{col}]: analytic {} numeric {numeric} (relative error {error:e})",
                    analytic[(r, col)]
                );
            }
        }
        eprintln!("largest relative error of the analytic Jacobian: {worst:e}");
    }

    fn binomial() -> GlmFamily {
        GlmFamily::from_names("binomial", "logit").unwrap()
    }

    fn poisson() -> GlmFamily {
        GlmFamily::from_names("poisson", "log").unwrap()
    }

    #[test]
    fn analytic_jacobian_matches_differences_crossed_bernoulli() {
        // Repeated cells of two crossed terms (left out level by level in one pass).
        let fam = binomial();
        check_jacobian(fam, &rows(&fam, 600, &[25, 12], false, 1, 1), &[-0.4, 0.7], &[0.8, 0.3], 1e-6);
        // A shared sd above 0.944 (the trapezoidal nodes fixed, their weights moving).
        check_jacobian(fam, &rows(&fam, 600, &[25, 12], false, 1, 2), &[-0.4, 0.7], &[1.7, 0.3], 1e-6);
    }

    #[test]
    fn analytic_jacobian_matches_differences_binomial_trials_and_one_term() {
        // Pairs of trials within a row in the pair statistics; one term: no inner variance.
        let fam = binomial();
        check_jacobian(fam, &rows(&fam, 300, &[20, 9], false, 4, 3), &[0.2, -0.5], &[0.5, 0.2], 1e-6);
        check_jacobian(fam, &rows(&fam, 300, &[20], false, 3, 4), &[0.2, -0.5], &[0.6], 1e-6);
    }

    #[test]
    fn analytic_jacobian_matches_differences_three_terms_and_nested() {
        // Three crossed terms: the cells corrected pair by pair; a term nested in another
        // keeps its cells' pairs as sharing both.
        let fam = binomial();
        check_jacobian(fam, &rows(&fam, 500, &[15, 10, 6], false, 1, 5), &[-0.2, 0.4], &[0.6, 0.3, 0.2], 1e-6);
        check_jacobian(fam, &rows(&fam, 500, &[30, 10], true, 1, 6), &[-0.2, 0.4], &[0.5, 0.3], 1e-6);
        // Above a shared sd of 0.944 the trapezoidal rule's nodes stay and its weights move
        // with the variance: the analytic derivative (of nodes moving, weights fixed, as
        // below 0.944) and the differences of the rule then differ by its error's
        // derivative, largest for pairs sharing every term (the inner mean the logistic
        // itself, with poles): 7e-5 at sd 0.97, 1e-5 at 1.14 (below 1e-8 with the nodes
        // moving throughout).
        check_jacobian(fam, &rows(&fam, 500, &[30, 10], true, 1, 6), &[-0.2, 0.4], &[0.55, 0.4], 2e-4);
        // An observation-level term of binomial rows (the within-row moment).
        check_jacobian(fam, &rows(&fam, 500, &[30, 0], false, 2, 9), &[-0.2, 0.4], &[0.5, 0.4], 1e-6);
    }

    #[test]
    fn analytic_jacobian_matches_differences_poisson() {
        // Closed forms, crossed cells corrected after the levels, and an observation-level
        // term identified by the within-row moment.
        let fam = poisson();
        check_jacobian(fam, &rows(&fam, 500, &[20, 12], false, 1, 7), &[0.1, 0.5], &[0.4, 0.2], 1e-6);
        check_jacobian(fam, &rows(&fam, 400, &[15, 0], false, 1, 8), &[0.1, 0.5], &[0.3, 0.2], 1e-6);
    }
}
