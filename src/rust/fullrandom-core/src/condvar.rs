//! Conditional variances of the predicted random effects: `Var(u | y) = s2 diag(C^-1)`
//! with `C = Z'Z + L` of [`crate::mixed`] (the fixed effects taken as known, as lme4's
//! `condVar`). This module gives `diag(C^-1)`, one value per level of every active term.
//!
//! **Exact** (the default whenever it fits in memory): order the unknowns as `A`, the
//! term with the most levels, whose block `D_A = diag(n_g + lambda)` is diagonal, and `B`,
//! the levels of all other active terms. With the Schur complement
//! `S = C_BB - C_BA D_A^-1 C_AB` (dense, `|B| x |B|`),
//!
//! ```text
//! diag(C^-1)_B = diag(S^-1),
//! diag(C^-1)_a = 1/d_a + c_a' S^-1 c_a / d_a^2     (c_a = row a of C_AB, its cells).
//! ```
//!
//! `S` is formed column by column from products with `C` (two per batch of unit
//! vectors), so it costs `O(cells |B|)`, its inverse `O(|B|^3)`, and the levels of `A`
//! `sum_a cells_a^2`. One term (`B` empty) gives `1/d_a`; a nested pair has `A` the
//! finer term and `|B|` the coarse one's levels; InstEval's students x lecturers x
//! departments has `|B| = 1142`. [`DiagonalMethod::Auto`] uses it while `|B|` is at most
//! [`DENSE_LIMIT`] and those costs stay below 2e10 multiply-adds.
//!
//! **Stochastic** (Bekas, Kokiopoulou and Saad 2007) beyond that: with Rademacher probes
//! `v_1..v_s` and `x_j = C^-1 v_j` by the conjugate gradient solver of [`crate::mixed`],
//! `diag(C^-1)_i ~ mean_j v_ij x_ij`, unbiased, with variance
//! `sum_{l != i} (C^-1)_il^2 / s`. Its standard error is estimated per level from the
//! spread of `v_ij x_ij` over the probes and returned, with the largest relative one.

use crate::dense::spd_inverse;
use crate::error::FitError;
use crate::mixed::RandomEffectsMatrix;
use crate::stats::SufficientStats;
use faer::Mat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Largest Schur complement (levels outside the largest term) formed densely: 4000^2
/// doubles are 128 MB.
pub const DENSE_LIMIT: usize = 4000;
/// Unit vectors per product with `C` when `S` is formed.
const BATCH: usize = 32;
/// Relative residual of the probes' solves: far below the probes' own error.
const PROBE_TOLERANCE: f64 = 1e-8;

/// How [`inverse_diagonal`] computes the diagonal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DiagonalMethod {
    /// Exact when `|B| <= DENSE_LIMIT`, stochastic otherwise.
    Auto,
    Exact,
    /// With the given number of probes.
    Stochastic {
        probes: usize,
        seed: u64,
    },
}

/// `diag(C^-1)` per term (zeros for terms at zero variance) and how it was computed.
#[derive(Debug, Clone)]
pub struct InverseDiagonal {
    pub diagonal: Vec<Vec<f64>>,
    /// Standard error of every value (zeros when exact).
    pub std_error: Vec<Vec<f64>>,
    pub exact: bool,
    /// Probes used (0 when exact).
    pub probes: usize,
    /// The largest standard error relative to its value (0 when exact).
    pub max_relative_error: f64,
}

/// Probes of the automatic method when the exact one does not fit.
pub const DEFAULT_PROBES: usize = 128;

/// `diag(C^-1)` of `C = Z'Z + L`, `lambda[k]` as for [`RandomEffectsMatrix::new`].
pub fn inverse_diagonal(
    stats: &SufficientStats,
    lambda: &[Option<f64>],
    method: DiagonalMethod,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<InverseDiagonal, FitError> {
    let c = pool.install(|| RandomEffectsMatrix::new(stats, lambda));
    let ranges = c.term_ranges();
    let largest = ranges.iter().enumerate().max_by_key(|(_, (_, r))| r.len()).map(|(i, _)| i);
    let outside = c.size() - largest.map_or(0, |i| ranges[i].1.len());
    let affordable = outside <= DENSE_LIMIT && exact_cost(stats, &ranges, largest, outside) <= EXACT_COST_LIMIT;
    let (values, errors, probes) = match method {
        DiagonalMethod::Exact => (exact(stats, &c, largest, pool, keep_going)?, None, 0),
        DiagonalMethod::Auto if affordable => (exact(stats, &c, largest, pool, keep_going)?, None, 0),
        DiagonalMethod::Auto => {
            let (v, e) = stochastic(&c, DEFAULT_PROBES, 0x5eed, pool, keep_going)?;
            (v, Some(e), DEFAULT_PROBES)
        }
        DiagonalMethod::Stochastic { probes, seed } => {
            let (v, e) = stochastic(&c, probes.max(2), seed, pool, keep_going)?;
            (v, Some(e), probes.max(2))
        }
    };
    let mut diagonal: Vec<Vec<f64>> = stats.levels.iter().map(|l| vec![0.0; l.counts.len()]).collect();
    let mut std_error = diagonal.clone();
    let mut max_relative_error: f64 = 0.0;
    for (factor, range) in &ranges {
        diagonal[*factor].copy_from_slice(&values[range.clone()]);
        if let Some(e) = &errors {
            std_error[*factor].copy_from_slice(&e[range.clone()]);
            for (s, v) in e[range.clone()].iter().zip(&values[range.clone()]) {
                max_relative_error = max_relative_error.max(s / v.abs());
            }
        }
    }
    Ok(InverseDiagonal { diagonal, std_error, exact: errors.is_none(), probes, max_relative_error })
}

/// `diag(C^-1)` of an assembled matrix `C` over the levels of its terms (a GLMM's
/// `Z'WZ + L` at the conditional modes, whose weights the sufficient statistics of
/// [`inverse_diagonal`] do not carry): exact, by solving for the unit vectors in batches,
/// when it has at most [`DENSE_LIMIT`] unknowns; by [`DEFAULT_PROBES`] probes otherwise.
/// Levels of terms that `C` leaves out get 0.
pub fn matrix_inverse_diagonal(
    c: &RandomEffectsMatrix<'_>,
    n_levels: &[usize],
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<InverseDiagonal, FitError> {
    let m = c.size();
    let (values, errors, probes) = if m <= DENSE_LIMIT {
        let mut values = vec![0.0; m];
        for start in (0..m).step_by(BATCH) {
            let r = BATCH.min(m - start);
            let mut unit = vec![0.0; m * r];
            (0..r).for_each(|t| unit[(start + t) * r + t] = 1.0);
            let solution = c.solve(&unit, r, 1e-12, pool, keep_going)?;
            (0..r).for_each(|t| values[start + t] = solution.x[(start + t) * r + t]);
        }
        (values, None, 0)
    } else {
        let (v, e) = stochastic(c, DEFAULT_PROBES, 0x5eed, pool, keep_going)?;
        (v, Some(e), DEFAULT_PROBES)
    };
    let mut diagonal: Vec<Vec<f64>> = n_levels.iter().map(|&n| vec![0.0; n]).collect();
    let mut std_error = diagonal.clone();
    let mut max_relative_error: f64 = 0.0;
    for (factor, range) in c.term_ranges() {
        diagonal[factor].copy_from_slice(&values[range.clone()]);
        if let Some(e) = &errors {
            std_error[factor].copy_from_slice(&e[range.clone()]);
            for (s, v) in e[range.clone()].iter().zip(&values[range]) {
                max_relative_error = max_relative_error.max(s / v.abs());
            }
        }
    }
    Ok(InverseDiagonal { diagonal, std_error, exact: errors.is_none(), probes, max_relative_error })
}

/// Multiply-adds the automatic method allows the exact one (a minute or so).
const EXACT_COST_LIMIT: f64 = 2e10;

/// The exact method's multiply-adds: forming `S` (two products with `C` per unit vector),
/// inverting it, and `sum_a cells_a^2` for the levels of the largest term.
fn exact_cost(
    stats: &SufficientStats,
    ranges: &[(usize, std::ops::Range<usize>)],
    largest: Option<usize>,
    outside: usize,
) -> f64 {
    let Some(largest) = largest else { return 0.0 };
    let factor_a = ranges[largest].0;
    let mut cells_total = 0.0;
    let mut per_level = vec![0usize; ranges[largest].1.len()];
    for (f, _) in ranges.iter().filter(|(f, _)| *f != factor_a) {
        let (cells, transposed) = stats.cells_of(factor_a, *f);
        cells_total += cells.cols.len() as f64;
        if transposed {
            cells.cols.iter().for_each(|&a| per_level[a as usize] += 1);
        } else {
            per_level.iter_mut().enumerate().for_each(|(a, n)| *n += cells.row_starts[a + 1] - cells.row_starts[a]);
        }
    }
    let squares: f64 = per_level.iter().map(|&n| (n as f64) * (n as f64)).sum();
    let b = outside as f64;
    4.0 * cells_total * b + b * b * b + squares
}

/// The exact diagonal by the Schur complement on the levels outside the term `largest`.
fn exact(
    stats: &SufficientStats,
    c: &RandomEffectsMatrix<'_>,
    largest: Option<usize>,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<Vec<f64>, FitError> {
    let m = c.size();
    let Some(largest) = largest else { return Ok(Vec::new()) };
    let ranges = c.term_ranges();
    let (factor_a, range_a) = ranges[largest].clone();
    let d = c.diagonal();
    // Positions of the unknowns outside A, and each one's index among them.
    let outside: Vec<usize> = (0..m).filter(|i| !range_a.contains(i)).collect();
    let nb = outside.len();
    let mut index_b = vec![usize::MAX; m];
    outside.iter().enumerate().for_each(|(j, &i)| index_b[i] = j);
    let mut s = Mat::<f64>::zeros(nb, nb);
    let mut x = vec![0.0; m * BATCH];
    let mut y = vec![0.0; m * BATCH];
    let mut z = vec![0.0; m * BATCH];
    for start in (0..nb).step_by(BATCH) {
        if !keep_going() {
            return Err(FitError::Interrupted);
        }
        let width = BATCH.min(nb - start);
        x.iter_mut().for_each(|v| *v = 0.0);
        for t in 0..width {
            x[outside[start + t] * BATCH + t] = 1.0;
        }
        pool.install(|| c.apply(&x, &mut y, BATCH));
        // z = [D_A^-1 C_AB e_j; 0], then C z holds C_BA D_A^-1 C_AB e_j outside A.
        z.iter_mut().for_each(|v| *v = 0.0);
        for i in range_a.clone() {
            for t in 0..width {
                z[i * BATCH + t] = y[i * BATCH + t] / d[i];
            }
        }
        pool.install(|| c.apply(&z, &mut x, BATCH));
        for (j, &i) in outside.iter().enumerate() {
            for t in 0..width {
                s[(j, start + t)] = y[i * BATCH + t] - x[i * BATCH + t];
            }
        }
    }
    let s_inv = pool.install(|| spd_inverse(&s, "the Schur complement of Z'Z + L"))?;
    let mut out = vec![0.0; m];
    for (j, &i) in outside.iter().enumerate() {
        out[i] = s_inv[(j, j)];
    }
    // The cells of every level of A with every other active term, as rows by A's level.
    let others: Vec<_> = ranges
        .iter()
        .filter(|(f, _)| *f != factor_a)
        .map(|(f, r)| {
            let (cells, transposed) = stats.cells_of(factor_a, *f);
            let cells =
                if transposed { std::borrow::Cow::Owned(cells.transpose()) } else { std::borrow::Cow::Borrowed(cells) };
            (cells, r.start)
        })
        .collect();
    let index_b = &index_b;
    let values: Vec<f64> = pool.install(|| {
        (0..range_a.len())
            .into_par_iter()
            .map(|g| {
                let row: Vec<(usize, f64)> = others
                    .iter()
                    .flat_map(|(cells, base)| {
                        let base = *base;
                        cells.row(g).map(move |(l, n)| (index_b[base + l], n as f64))
                    })
                    .collect();
                let mut q = 0.0;
                for &(j, nj) in &row {
                    let mut inner = 0.0;
                    for &(k, nk) in &row {
                        inner += nk * s_inv[(j, k)];
                    }
                    q += nj * inner;
                }
                let da = d[range_a.start + g];
                1.0 / da + q / (da * da)
            })
            .collect()
    });
    out[range_a].copy_from_slice(&values);
    Ok(out)
}

/// The stochastic estimate and its standard error per unknown.
fn stochastic(
    c: &RandomEffectsMatrix<'_>,
    probes: usize,
    seed: u64,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<(Vec<f64>, Vec<f64>), FitError> {
    let m = c.size();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sum = vec![0.0; m];
    let mut sum_sq = vec![0.0; m];
    let mut done = 0;
    while done < probes {
        let r = BATCH.min(probes - done);
        let v: Vec<f64> = (0..m * r).map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 }).collect();
        let solution = c.solve(&v, r, PROBE_TOLERANCE, pool, keep_going)?;
        for i in 0..m {
            for t in 0..r {
                let e = v[i * r + t] * solution.x[i * r + t];
                sum[i] += e;
                sum_sq[i] += e * e;
            }
        }
        done += r;
    }
    let s = probes as f64;
    let mean: Vec<f64> = sum.iter().map(|a| a / s).collect();
    let se = sum_sq.iter().zip(&mean).map(|(q, mu)| ((q / s - mu * mu).max(0.0) * s / (s - 1.0) / s).sqrt()).collect();
    Ok((mean, se))
}
