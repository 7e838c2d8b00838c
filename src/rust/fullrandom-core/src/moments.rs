//! The moment equations and their solution.
//!
//! With OLS residuals `r = M y`, `M = I - X W X'`, `W = (X'X)^-1`, the equations are
//! `E[Q_k] = Q_k` for the total sum of squares (factor 0) and the within-level sum of
//! squares of every random factor `k = 1..K`:
//!
//! ```text
//! Q_0 = r'r,                                               A_0 = I,
//! Q_k = r'A_k r = sum_i r_i^2 - sum_g (sum_{i in g} r_i)^2 / n_g,    A_k = I - Z_k D_k^-1 Z_k',
//! E[Q_k] = sum_{l=1..K} s2_l c_kl + s2 c_ke,   c_kl = tr(Z_l'M A_k M Z_l),   c_ke = tr(A_k M).
//! ```
//!
//! Factor 0 uses `r'r`, not the centred `r'(I - J/N) r`: the two agree whenever 1 is in
//! the column space of X (then `1'r = 0`), but without an intercept the model says the
//! mean is 0, and only the uncentred form is the expectation under that model.
//!
//! In closed form, with `D_k = diag(n_g)`, `S_k = Z_k'X`, `C_kl = Z_k'Z_l` (cells `n_gm`),
//! `F_l = S_l'S_l`, `T_k = X'X - S_k'D_k^-1 S_k` and `q = rank(X)`:
//!
//! ```text
//! c_0e = N - q,   c_0l = N - tr(W F_l)
//! c_ke = (N - G_k) - tr(W T_k)
//! c_kl = (N - sum_g sum_m n_gm^2 / n_g) - 2 tr(W F_l) + 2 tr(W S_k'D_k^-1 C_kl S_l) + tr(W T_k W F_l)
//! ```
//!
//! (for `l = k` this reduces to `tr(W T_k W F_k)`; factor 0 is the case of no levels, `A_0 = I`,
//! `T_0 = X'X`). The residual sums come from the
//! statistics too: `sum_{i in g} r_i = sum_{i in g} y_i - S_k[g] b`. Solving the
//! (K+1) x (K+1) system gives estimates that are exactly unbiased for any design and any
//! X, with no normality assumed. Levels with no observations (possible in merged chunks)
//! contribute nothing and are not counted in `G_k`.

use crate::dense::{scaled_rank_deficiency, solve, trace_of_product};
use crate::error::FitError;
use crate::grouping::balanced_blocks;
use crate::ols::OlsFit;
use crate::stats::SufficientStats;
use faer::Mat;
use rayon::prelude::*;

/// Singular values of the scaled system below this fraction of the largest mean the
/// components cannot be separated.
pub const SINGULARITY_TOLERANCE: f64 = 1e-9;

/// `lhs theta = q` with rows `k = 0..K` (factor 0 first) and unknowns
/// `(s2_1, ..., s2_K, s2)`.
#[derive(Debug, Clone)]
pub struct MomentEquations {
    /// Labels of the K random terms, e.g. `"s"`, `"cask:batch"`.
    pub factor_names: Vec<String>,
    /// Number of levels with observations of each random term.
    pub n_levels: Vec<usize>,
    pub lhs: Mat<f64>,
    pub q: Vec<f64>,
}

/// The estimates; index `K` is the residual variance.
#[derive(Debug, Clone)]
pub struct VarianceComponents {
    /// The solution of the full system: unbiased, possibly negative.
    pub raw: Vec<f64>,
    /// After the boundary rule: negative components set to zero, the rest re-solved.
    pub estimate: Vec<f64>,
    /// Which of the K random components were set to zero.
    pub at_boundary: Vec<bool>,
}

/// The user's spelling of a random term, for messages.
pub fn term_label(name: &str) -> String {
    format!("(1 | {name})")
}

/// What the equations need of one factor's levels (factor 0 included).
struct FactorMoments {
    /// Levels with observations.
    n_nonempty: usize,
    /// `S_k'D_k^-1 S_k`.
    weighted_cross: Mat<f64>,
    /// `F_k = S_k'S_k`.
    cross: Mat<f64>,
    /// `sum_g (sum_{i in g} r_i)^2 / n_g`.
    between_ss: f64,
}

/// How many times every level appears as distinct levels: once each (data), or the
/// multiplicities of a pigeonhole bootstrap replicate whose statistics are summed over
/// the copies (see [`MomentEquations::of_copies`]).
#[derive(Clone, Copy)]
enum Copies<'a> {
    One,
    Of(&'a [Vec<u32>]),
}

impl Copies<'_> {
    fn of(&self, k: usize, g: usize) -> f64 {
        match self {
            Copies::One => 1.0,
            Copies::Of(w) => w[k][g] as f64,
        }
    }
}

impl MomentEquations {
    pub fn from_stats(stats: &SufficientStats, ols: &OlsFit) -> Result<MomentEquations, FitError> {
        MomentEquations::with_copies(stats, ols, Copies::One)
    }

    /// The equations of data in which level `g` of factor `k` appears as `w_g =
    /// copies[k][g]` distinct levels, from `stats` summed over the copies (level and cell
    /// totals over all copies, as in [`crate::solve_mixed_model_to`]). One copy of
    /// a level holds `n_g / w_g` rows and sums `S_g / w_g`, one pair of copies
    /// `n_gm / (w_g w_m)` rows, so the sums over copies are
    ///
    /// ```text
    /// G_k = sum_g w_g,   S_k'D_k^-1 S_k = sum_g S_g S_g' / n_g,   F_k = sum_g S_g S_g' / w_g,
    /// sum_g (sum_{i in g} r_i)^2 / n_g over copies = the same over levels,
    /// sum_copies n_gm^2 / n_g = sum_gm n_gm^2 / (w_m n_g),
    /// S_k'D_k^-1 C_kl S_l = sum_gm (n_gm / (w_m n_g)) S_k[g] S_l[m]',
    /// ```
    ///
    /// which give the expanded data's equations without expanding them.
    pub fn of_copies(stats: &SufficientStats, copies: &[Vec<u32>], ols: &OlsFit) -> Result<MomentEquations, FitError> {
        stats.check_copies(copies)?;
        MomentEquations::with_copies(stats, ols, Copies::Of(copies))
    }

    fn with_copies(stats: &SufficientStats, ols: &OlsFit, copies: Copies<'_>) -> Result<MomentEquations, FitError> {
        check_distinct_partitions(stats, copies)?;
        let k_factors = stats.n_factors();
        let q = ols.kept.len();
        let n = stats.n_obs as f64;
        let w = &ols.xtx_inv;
        let b = &ols.coef_shifted;
        let xtx = crate::dense::submatrix(&stats.xtx, stats.n_fixed(), &ols.kept);

        // Level sums of the kept columns by level: S_k[g] is `level_x[k][g * q..(g + 1) * q]`.
        let level_x: Vec<Vec<f64>> = stats
            .levels
            .iter()
            .map(|lv| {
                let n_levels = lv.n_levels();
                (0..n_levels).flat_map(|g| ols.kept.iter().map(move |&j| lv.sum_x[j * n_levels + g])).collect()
            })
            .collect();
        let mut per_factor = Vec::with_capacity(k_factors + 1);
        // Factor 0, Q_0 = r'r: A_0 = I, as if no level were subtracted. (Its `cross` is
        // never used: factor 0 has no variance of its own.)
        per_factor.push(FactorMoments {
            n_nonempty: 0,
            weighted_cross: Mat::zeros(q, q),
            cross: Mat::zeros(q, q),
            between_ss: 0.0,
        });
        for k in 0..k_factors {
            let lv = &stats.levels[k];
            let mut m = FactorMoments {
                n_nonempty: 0,
                weighted_cross: Mat::zeros(q, q),
                cross: Mat::zeros(q, q),
                between_ss: 0.0,
            };
            for g in 0..lv.n_levels() {
                let count = lv.counts[g] as f64;
                if count == 0.0 {
                    continue;
                }
                let w_g = copies.of(k, g);
                m.n_nonempty += w_g as usize;
                let s = &level_x[k][g * q..(g + 1) * q];
                add_outer(&mut m.weighted_cross, s, s, 1.0 / count);
                add_outer(&mut m.cross, s, s, 1.0 / w_g);
                let level_residual = lv.sum_y[g] - dot(s, b);
                m.between_ss += level_residual * level_residual / count;
            }
            per_factor.push(m);
        }

        let w_f: Vec<Mat<f64>> = per_factor.iter().map(|m| w * &m.cross).collect();
        let w_t: Vec<Mat<f64>> = per_factor.iter().map(|m| w * &(&xtx - &m.weighted_cross)).collect();
        let dim = k_factors + 1;
        let mut lhs = Mat::zeros(dim, dim);
        let mut rhs = vec![0.0; dim];
        for k in 0..dim {
            rhs[k] = ols.rss - per_factor[k].between_ss;
            lhs[(k, k_factors)] = n - per_factor[k].n_nonempty as f64 - trace(&w_t[k]);
            for l in 1..dim {
                let projected = trace_of_product(&w_t[k], &w_f[l]);
                lhs[(k, l - 1)] = if k == l {
                    projected
                } else if k == 0 {
                    // A_0 = I: no concentration or cross term; projected = tr(W F_l).
                    n - 2.0 * trace(&w_f[l]) + projected
                } else {
                    let (concentration, cross_term) = cell_terms(stats, copies, k, l, &level_x, q);
                    n - concentration - 2.0 * trace(&w_f[l]) + 2.0 * trace_of_product(w, &cross_term) + projected
                };
            }
        }
        let n_levels = per_factor[1..].iter().map(|m| m.n_nonempty).collect();
        Ok(MomentEquations { factor_names: stats.factor_names.clone(), n_levels, lhs, q: rhs })
    }

    pub fn n_factors(&self) -> usize {
        self.factor_names.len()
    }
}

/// For random factors `k != l` (indices into the equations, both >= 1),
/// `sum_g sum_m n_gm^2 / n_g` and `S_k'D_k^-1 C_kl S_l = sum_g sum_m (n_gm / n_g) S_k[g] S_l[m]'`.
///
/// The double sum runs over the stored rows of the cell table, whichever factor they
/// are: with rows `g` of `k` it is `sum_g S_k[g] v_g' / n_g`, `v_g = sum_m n_gm S_l[m]`;
/// with rows `m` of `l` it is `sum_m w_m S_l[m]'`, `w_m = sum_g (n_gm / n_g) S_k[g]`.
/// Either way each stored row is summed on its own, so balanced blocks of rows run in
/// parallel and are added in block order (a partition fixed by the data, not the threads).
/// With copies, every term of level `m` of `l` is divided by its copies `w_m`.
fn cell_terms(
    stats: &SufficientStats,
    copies: Copies<'_>,
    k: usize,
    l: usize,
    level_x: &[Vec<f64>],
    q: usize,
) -> (f64, Mat<f64>) {
    debug_assert!(k >= 1 && l >= 1 && k != l);
    let col_x = &level_x[l - 1];
    let row_counts = &stats.levels[k - 1].counts;
    let row_x = &level_x[k - 1];
    let (cells, transposed) = stats.cells_of(k - 1, l - 1);
    let partials: Vec<(f64, Mat<f64>)> = balanced_blocks(&cells.row_starts)
        .into_par_iter()
        .map(|block| {
            let mut concentration = 0.0;
            let mut cross_term = Mat::zeros(q, q);
            let mut acc = vec![0.0; q];
            for a in block {
                acc.iter_mut().for_each(|v| *v = 0.0);
                if transposed {
                    // Stored row a is level m = a of l; its cells are levels g of k.
                    if cells.row_starts[a + 1] == cells.row_starts[a] {
                        continue;
                    }
                    let mut row_concentration = 0.0;
                    for (g, count) in cells.row(a) {
                        let (count, n_g) = (count as f64, row_counts[g] as f64);
                        row_concentration += count * count / n_g;
                        axpy(&mut acc, count / n_g, &row_x[g * q..(g + 1) * q]);
                    }
                    let w_m = copies.of(l - 1, a);
                    concentration += row_concentration / w_m;
                    add_outer(&mut cross_term, &acc, &col_x[a * q..(a + 1) * q], 1.0 / w_m);
                } else {
                    // Stored row a is level g = a of k; its cells are levels m of l.
                    let n_g = row_counts[a] as f64;
                    for (m, count) in cells.row(a) {
                        let (count, w_m) = (count as f64, copies.of(l - 1, m));
                        concentration += count * count / (w_m * n_g);
                        axpy(&mut acc, count / w_m, &col_x[m * q..(m + 1) * q]);
                    }
                    if n_g > 0.0 {
                        add_outer(&mut cross_term, &row_x[a * q..(a + 1) * q], &acc, 1.0 / n_g);
                    }
                }
            }
            (concentration, cross_term)
        })
        .collect();
    let mut concentration = 0.0;
    let mut cross_term = Mat::zeros(q, q);
    for (c, m) in partials {
        concentration += c;
        cross_term += m;
    }
    (concentration, cross_term)
}

/// Two random terms whose levels partition the rows identically cannot be told apart.
/// With copies, a cell stands for `w_g w_m` cells and a level for `w_g` levels.
fn check_distinct_partitions(stats: &SufficientStats, copies: Copies<'_>) -> Result<(), FitError> {
    let k_factors = stats.n_factors();
    for k in 0..k_factors {
        for l in k + 1..k_factors {
            let (cells, _) = stats.cells_of(k, l);
            let nonempty = |f: usize| -> f64 {
                let counts = &stats.levels[f].counts;
                (0..counts.len()).filter(|&g| counts[g] > 0).map(|g| copies.of(f, g)).sum()
            };
            let n_cells: f64 = match copies {
                Copies::One => cells.cols.len() as f64,
                Copies::Of(_) => (0..cells.n_rows())
                    .map(|g| copies.of(k, g) * cells.row(g).map(|(m, _)| copies.of(l, m)).sum::<f64>())
                    .sum(),
            };
            let one_cell_per_level = n_cells == nonempty(k) && n_cells == nonempty(l);
            if one_cell_per_level {
                return Err(FitError::NotIdentifiable(format!(
                    "the random terms {} and {} group the observations identically, so their variances cannot be told apart; keep only one of them",
                    term_label(&stats.factor_names[k]),
                    term_label(&stats.factor_names[l])
                )));
            }
        }
    }
    Ok(())
}

/// Solves the moment equations. A negative component is set to zero and the model
/// without it re-solved (its row and column dropped), most negative first, until all
/// are non-negative, as a boundary fit. A residual variance that comes out negative
/// means the finest term cannot be told from the residual in these data: the active
/// term with the most levels is set to zero in the same way.
pub fn fit_variance_components(eq: &MomentEquations) -> Result<VarianceComponents, FitError> {
    let k_factors = eq.n_factors();
    let dim = k_factors + 1;
    let (ratio, null_vector) = scaled_rank_deficiency(&eq.lhs)?;
    if ratio < SINGULARITY_TOLERANCE {
        return Err(not_identifiable(eq, &null_vector));
    }
    let raw = solve(&eq.lhs, &eq.q);
    let mut active: Vec<usize> = (0..k_factors).collect();
    let mut estimate = raw.clone();
    loop {
        let most_negative =
            active.iter().copied().filter(|&l| estimate[l] < 0.0).min_by(|&a, &b| estimate[a].total_cmp(&estimate[b]));
        let finest_if_residual_negative = || {
            (estimate[k_factors] <= 0.0).then(|| active.iter().copied().max_by_key(|&l| (eq.n_levels[l], l))).flatten()
        };
        let Some(dropped) = most_negative.or_else(finest_if_residual_negative) else { break };
        active.retain(|&l| l != dropped);
        // Equations: factor 0 and the active factors; unknowns: active factors, residual.
        let rows: Vec<usize> = std::iter::once(0).chain(active.iter().map(|&l| l + 1)).collect();
        let cols: Vec<usize> = active.iter().copied().chain(std::iter::once(k_factors)).collect();
        let sub = Mat::from_fn(rows.len(), cols.len(), |i, j| eq.lhs[(rows[i], cols[j])]);
        let sub_q: Vec<f64> = rows.iter().map(|&r| eq.q[r]).collect();
        let sub_solution = solve(&sub, &sub_q);
        estimate = vec![0.0; dim];
        for (j, &c) in cols.iter().enumerate() {
            estimate[c] = sub_solution[j];
        }
    }
    if estimate[k_factors].is_nan() || estimate[k_factors] <= 0.0 {
        return Err(FitError::NotIdentifiable(format!(
            "the moment estimate of the residual variance is not positive ({:.4e}); the model has more random terms than these data can support",
            estimate[k_factors]
        )));
    }
    let at_boundary = (0..k_factors).map(|l| !active.contains(&l)).collect();
    Ok(VarianceComponents { raw, estimate, at_boundary })
}

fn not_identifiable(eq: &MomentEquations, null_vector: &[f64]) -> FitError {
    let k_factors = eq.n_factors();
    let largest = null_vector.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let involved: Vec<String> = null_vector
        .iter()
        .enumerate()
        .filter(|(_, v)| v.abs() > 0.2 * largest)
        .map(|(j, _)| if j == k_factors { "the residual".to_string() } else { term_label(&eq.factor_names[j]) })
        .collect();
    let hint = if involved.len() == 1 && !involved[0].starts_with("the residual") {
        "; its grouping may coincide with a fixed effect or with the whole data"
    } else if involved.iter().any(|t| t.starts_with("the residual")) {
        "; a term whose levels mostly hold a single observation is confounded with the residual"
    } else {
        "; their groupings may be (nearly) the same"
    };
    FitError::NotIdentifiable(format!(
        "the variance components of {} cannot be separated by these data (the moment equations are singular){hint}",
        involved.join(" and ")
    ))
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    y.iter_mut().zip(x).for_each(|(yi, xi)| *yi += a * xi);
}

fn add_outer(m: &mut Mat<f64>, a: &[f64], b: &[f64], scale: f64) {
    for j in 0..b.len() {
        for i in 0..a.len() {
            m[(i, j)] += scale * a[i] * b[j];
        }
    }
}

fn trace(m: &Mat<f64>) -> f64 {
    (0..m.nrows()).map(|i| m[(i, i)]).sum()
}
