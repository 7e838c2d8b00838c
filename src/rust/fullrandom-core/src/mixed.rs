//! Henderson's mixed-model equations, solved from the sufficient statistics: GLS fixed
//! effects, their covariance and the BLUPs.
//!
//! With the moment estimates plugged in (`s2` the residual variance, `s2_k > 0` the
//! variances of the active random terms, `lambda_k = s2 / s2_k`):
//!
//! ```text
//! [ X'X   X'Z     ] [b]   [X'y]
//! [ Z'X   Z'Z + L ] [u] = [Z'y],      L = diag(lambda_k) on the block of term k.
//! ```
//!
//! `C = Z'Z + L` has diagonal blocks `diag(n_g + lambda_k)` and off-diagonal blocks the
//! cell counts `C_kl`; `Z'X` and `Z'y` are the per-level sums. All of it is in the
//! statistics, so no second pass over the data is needed. Eliminating `u`, with
//! `A = C^-1 Z'X` and `a = C^-1 Z'y`,
//!
//! ```text
//! S = X'X - X'Z A,    b = S^-1 (X'y - X'Z a),    u = a - A b,    Var(b) = s2 S^-1.
//! ```
//!
//! The `q + 1` systems in `C` are solved together by conjugate gradients preconditioned
//! by symmetric block Gauss-Seidel over the terms (one backfitting sweep each way), sharing
//! the passes over the cells of every iteration; memory is
//! linear in the numbers of levels and cells (no dense levels x levels block). Terms
//! estimated at zero drop out of `Z` (their `u` is 0).
//!
//! Everything runs in the shifted parametrisation of [`crate::stats`] (the intercept
//! absorbs the shift, so `u` is unchanged) and `b`, `Var(b)` are mapped back with
//! `b_0 = b~_0 + c_y - sum_j c_j b~_j`, i.e. `b = T b~ + const`, `Var(b) = T Var(b~) T'`.
//!
//! Parallel work does not change the results with the number of threads: the product
//! `C X` computes every row on its own (over blocks of levels balanced by their cells),
//! and sums run over fixed blocks of levels reduced in order. Fitted values and
//! residuals ([`fitted_and_residuals`]) are one more parallel pass over the rows.

use crate::dense::{spd_inverse, submatrix};
use crate::error::FitError;
use crate::grouping::{balanced_blocks, CellCounts};
use crate::moments::VarianceComponents;
use crate::ols::OlsFit;
use crate::stats::SufficientStats;
use faer::Mat;
use rayon::prelude::*;
use std::borrow::Cow;
use std::ops::Range;

/// Relative residual at which the conjugate gradient iterations stop, per right-hand side.
pub const CG_TOLERANCE: f64 = 1e-12;
/// Relative residual the solution of the full equations must reach.
pub const MME_TOLERANCE: f64 = 1e-10;
/// Conjugate gradient iterations allowed per round of refinement.
pub const MAX_ITERATIONS: usize = 20_000;
/// How far the equations are solved: the conjugate gradient tolerance per right-hand
/// side and the relative residual the full equations must reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accuracy {
    pub cg: f64,
    pub mme: f64,
}

impl Accuracy {
    /// For fits: [`CG_TOLERANCE`] and [`MME_TOLERANCE`].
    pub const FIT: Accuracy = Accuracy { cg: CG_TOLERANCE, mme: MME_TOLERANCE };
    /// For bootstrap replicates, which need the GLS fixed effects but not the BLUPs. Those
    /// come from a variational estimate whose error is of second order in the solver's
    /// (see [`solve_mixed_model_to`]): on InstEval a relative CG residual of 1e-4 moves
    /// them by at most 2.5e-6 (0.01% of their standard errors) in half the iterations.
    pub const REPLICATE: Accuracy = Accuracy { cg: 1e-4, mme: 1e-2 };
}

/// Levels per parallel task; fixed, so that sums are reduced in a fixed order.
const LEVEL_BLOCK: usize = 2048;

/// The GLS fixed effects, their covariance and the BLUPs.
#[derive(Debug, Clone)]
pub struct MixedModelSolution {
    /// All p coefficients in the original parametrisation, NaN where aliased.
    pub coef: Vec<f64>,
    /// `s2 S^-1` over the kept columns, original parametrisation.
    pub vcov: Mat<f64>,
    /// Per random term, one BLUP per level (zeros for terms estimated at zero).
    pub ranef: Vec<Vec<f64>>,
    /// `||residual|| / ||right-hand side||` of the full equations at the solution.
    pub relative_residual: f64,
    /// Conjugate gradient iterations used (all rounds).
    pub iterations: usize,
    /// `y'P y` times `s2`, i.e. with `V = s2 V_0`: `y'P_0 y = y'y - b'X'y - u'Z'y`, the
    /// residual quadratic form of the likelihoods (invariant to the shift of y).
    pub quadratic_form: f64,
    /// `log det(X'V_0^-1 X)` over the kept columns (shifted coordinates, which have the
    /// same determinant: the shift's map has determinant 1).
    pub log_det_gls: f64,
}

/// One active random term's block of unknowns.
struct Block<'a> {
    factor: usize,
    offset: usize,
    n_levels: usize,
    /// `(other block, cells with this block's levels as rows, weights of the cells)`:
    /// a cell enters `C` with its count, or with its weight when weights are given
    /// ([`RandomEffectsMatrix::weighted`]).
    neighbours: Vec<(usize, Cow<'a, CellCounts>, Option<Vec<f64>>)>,
    /// Consecutive levels grouped so that each group holds about the same number of
    /// cells: the parallel tasks of [`RandomEffectsMatrix::apply`], balanced even when a
    /// few levels hold most of the data.
    tasks: Vec<Range<usize>>,
}

/// What [`RandomEffectsMatrix::solve`] returns: `X`, the true residual `B - C X` of its
/// last refinement round (so `C X` needs no further product), and the CG iterations.
pub struct Solution {
    pub x: Vec<f64>,
    pub residual: Vec<f64>,
    pub iterations: usize,
}

/// `C = Z'Z + L` restricted to the active terms, applied without forming it.
pub struct RandomEffectsMatrix<'a> {
    blocks: Vec<Block<'a>>,
    diagonal: Vec<f64>,
    /// `n_g`, the diagonal of `Z'Z` (without `L`).
    counts: Vec<f64>,
}

impl<'a> RandomEffectsMatrix<'a> {
    /// `lambda[k]` is `Some(s2 / s2_k)` for the active terms, `None` for those at zero.
    pub fn new(stats: &'a SufficientStats, lambda: &[Option<f64>]) -> RandomEffectsMatrix<'a> {
        RandomEffectsMatrix::of_copies(stats, None, lambda)
    }

    /// `C` of data in which level `g` of term `k` is copied `copies[k][g] > 0` times as
    /// distinct levels, from `stats` summed over the copies (see [`solve_mixed_model_to`]):
    /// diagonal `n_g + w_g lambda_k`. `None` is one copy of every level.
    pub fn of_copies(
        stats: &'a SufficientStats,
        copies: Option<&[Vec<u32>]>,
        lambda: &[Option<f64>],
    ) -> RandomEffectsMatrix<'a> {
        let mut blocks: Vec<Block<'a>> = Vec::new();
        let mut diagonal = Vec::new();
        let mut level_counts = Vec::new();
        for (k, l) in lambda.iter().enumerate() {
            if let Some(l) = l {
                let counts = &stats.levels[k].counts;
                blocks.push(Block {
                    factor: k,
                    offset: diagonal.len(),
                    n_levels: counts.len(),
                    neighbours: Vec::new(),
                    tasks: Vec::new(),
                });
                level_counts.extend(counts.iter().map(|&n| n as f64));
                match copies {
                    None => diagonal.extend(counts.iter().map(|&n| n as f64 + l)),
                    Some(w) => diagonal.extend(counts.iter().zip(&w[k]).map(|(&n, &c)| n as f64 + l * c as f64)),
                }
            }
        }
        let pairs: Vec<(usize, usize)> =
            (0..blocks.len()).flat_map(|a| (a + 1..blocks.len()).map(move |b| (a, b))).collect();
        // The transposes are built once, in parallel; rows by the second factor.
        let transposed: Vec<CellCounts> =
            pairs.par_iter().map(|&(a, b)| stats.cells_of(blocks[a].factor, blocks[b].factor).0.transpose()).collect();
        for (&(a, b), t) in pairs.iter().zip(transposed) {
            let (cells, stored_transposed) = stats.cells_of(blocks[a].factor, blocks[b].factor);
            debug_assert!(!stored_transposed);
            blocks[a].neighbours.push((b, Cow::Borrowed(cells), None));
            blocks[b].neighbours.push((a, Cow::Owned(t), None));
        }
        balance_tasks(&mut blocks);
        RandomEffectsMatrix { blocks, diagonal, counts: level_counts }
    }

    /// `B = [Z'X~ | Z'y~]` over the `kept` columns: one row of `kept.len() + 1` values per
    /// level of the active terms, in the order of the unknowns.
    pub(crate) fn level_sums(&self, stats: &SufficientStats, kept: &[usize]) -> Vec<f64> {
        let q = kept.len();
        let r = q + 1;
        let mut zt = vec![0.0; self.size() * r];
        for block in &self.blocks {
            let sums = &stats.levels[block.factor];
            let g_all = sums.n_levels();
            for g in 0..block.n_levels {
                let row = &mut zt[(block.offset + g) * r..(block.offset + g + 1) * r];
                for (c, &j) in kept.iter().enumerate() {
                    row[c] = sums.sum_x[j * g_all + g];
                }
                row[q] = sums.sum_y[g];
            }
        }
        zt
    }

    /// `(factor, first unknown, levels)` of every active term, in the order of the unknowns.
    pub(crate) fn term_ranges(&self) -> Vec<(usize, Range<usize>)> {
        self.blocks.iter().map(|b| (b.factor, b.offset..b.offset + b.n_levels)).collect()
    }

    /// The diagonal of `C`, `n_g + lambda_k`, in the order of the unknowns.
    pub(crate) fn diagonal(&self) -> &[f64] {
        &self.diagonal
    }

    /// `C = Z'WZ + L` for per-row weights `W_i` (the working weights of a GLMM's penalized
    /// IRLS, for instance), from their sums: `diagonals` holds, for every active term
    /// (`(factor, values)`), `sum_{i in g} W_i + lambda_k` per level; `cells` holds, for
    /// every ordered pair `(a, b)` of positions in `diagonals` with `a != b` whose levels
    /// share rows, the cells of `a` x `b` and the sum of `W_i` over the rows of each cell.
    /// Unit weights give the matrix of [`Self::new`].
    pub fn weighted<'c>(
        diagonals: Vec<(usize, Vec<f64>)>,
        cells: Vec<(usize, usize, Cow<'c, CellCounts>, Vec<f64>)>,
    ) -> RandomEffectsMatrix<'c> {
        let mut blocks: Vec<Block<'c>> = Vec::new();
        let mut diagonal = Vec::new();
        for (factor, d) in diagonals {
            blocks.push(Block {
                factor,
                offset: diagonal.len(),
                n_levels: d.len(),
                neighbours: Vec::new(),
                tasks: Vec::new(),
            });
            diagonal.extend(d);
        }
        for (a, b, counts, weights) in cells {
            debug_assert_eq!(counts.cols.len(), weights.len());
            blocks[a].neighbours.push((b, counts, Some(weights)));
        }
        balance_tasks(&mut blocks);
        // Z'Z's own diagonal is not known here: `apply_gram` is for `new`'s matrices.
        RandomEffectsMatrix { blocks, diagonal, counts: Vec::new() }
    }
}

/// Splits every block's levels into parallel tasks of about equal numbers of cells.
fn balance_tasks(blocks: &mut [Block<'_>]) {
    for block in blocks.iter_mut() {
        // The cells of every level over all its neighbours, as starts.
        let mut cell_starts = vec![0usize; block.n_levels + 1];
        for (_, cells, _) in &block.neighbours {
            cell_starts.iter_mut().zip(&cells.row_starts).for_each(|(s, c)| *s += c);
        }
        block.tasks = balanced_blocks(&cell_starts);
    }
}

impl<'a> RandomEffectsMatrix<'a> {
    /// Number of unknowns (levels of the active terms).
    pub fn size(&self) -> usize {
        self.diagonal.len()
    }

    /// `Y = C X` for `r` right-hand sides stored by row (`X[i * r + j]`). Every row
    /// of `Y` is summed over its level's cells in their stored order, so the result
    /// does not depend on how the levels are split between threads.
    pub fn apply(&self, x: &[f64], y: &mut [f64], r: usize) {
        self.apply_with_diagonal(&self.diagonal, x, y, r)
    }

    /// `Y = Z'Z X`: [`Self::apply`] without `L` (diagonal `n_g`), formed directly so that
    /// nothing cancels when `L` is large. For matrices made by [`Self::new`] or
    /// [`Self::of_copies`] (a weighted matrix has no such diagonal).
    pub fn apply_gram(&self, x: &[f64], y: &mut [f64], r: usize) {
        assert_eq!(self.counts.len(), self.diagonal.len(), "apply_gram needs Z'Z's diagonal");
        self.apply_with_diagonal(&self.counts, x, y, r)
    }

    fn apply_with_diagonal(&self, diagonal: &[f64], x: &[f64], y: &mut [f64], r: usize) {
        for block in &self.blocks {
            let rows = &mut y[block.offset * r..(block.offset + block.n_levels) * r];
            split_by_tasks(block, rows, r).into_par_iter().for_each(|(first, chunk)| {
                for (i, out) in chunk.chunks_mut(r).enumerate() {
                    let g = first + i;
                    let row = block.offset + g;
                    let d = diagonal[row];
                    for (o, v) in out.iter_mut().zip(&x[row * r..(row + 1) * r]) {
                        *o = d * v;
                    }
                    for (other, cells, weights) in &block.neighbours {
                        add_cell_sums(out, cells, weights.as_deref(), g, x, self.blocks[*other].offset);
                    }
                }
            });
        }
    }

    /// Solves `C X = B` for `r` right-hand sides (stored by row) by conjugate gradients
    /// preconditioned by symmetric block Gauss-Seidel ([`Self::precondition`]), to a
    /// relative residual of `tolerance` per column (e.g. [`CG_TOLERANCE`]), with rounds of
    /// iterative refinement on the true residual.
    ///
    /// The iterations run on the calling thread, the work of each in `pool`, and
    /// `keep_going` is asked before every iteration (false stops with
    /// [`FitError::Interrupted`]).
    pub fn solve(
        &self,
        rhs: &[f64],
        r: usize,
        tolerance: f64,
        pool: &rayon::ThreadPool,
        keep_going: &mut dyn FnMut() -> bool,
    ) -> Result<Solution, FitError> {
        self.solve_from(rhs, r, tolerance, None, pool, keep_going)
    }

    /// [`Self::solve`] from the approximate solution `start` (`None`: from zero), to the
    /// same relative residual: a start near the solution (that of a nearby system) saves
    /// iterations.
    pub fn solve_from(
        &self,
        rhs: &[f64],
        r: usize,
        tolerance: f64,
        start: Option<&[f64]>,
        pool: &rayon::ThreadPool,
        keep_going: &mut dyn FnMut() -> bool,
    ) -> Result<Solution, FitError> {
        let m = self.size();
        let rhs_norm: Vec<f64> = pool.install(|| column_dots(rhs, rhs, r)).iter().map(|v| v.sqrt()).collect();
        let mut x = vec![0.0; m * r];
        let mut residual = rhs.to_vec();
        if let Some(start) = start.filter(|s| s.len() == m * r) {
            x.copy_from_slice(start);
            pool.install(|| {
                self.apply(&x, &mut residual, r);
                residual.par_iter_mut().zip(rhs).for_each(|(res, b)| *res = b - *res);
            });
        }
        let mut iterations = 0;
        for _round in 0..4 {
            let (dx, used) = self.conjugate_gradients(&residual, &rhs_norm, r, tolerance, pool, keep_going)?;
            iterations += used;
            pool.install(|| x.par_iter_mut().zip(&dx).for_each(|(a, b)| *a += b));
            // The true residual, which the recursion only approximates.
            pool.install(|| {
                self.apply(&x, &mut residual, r);
                residual.par_iter_mut().zip(rhs).for_each(|(res, b)| *res = b - *res);
            });
            let norm = pool.install(|| column_dots(&residual, &residual, r));
            if norm.iter().zip(&rhs_norm).all(|(n, b)| n.sqrt() <= 10.0 * tolerance * b) {
                return Ok(Solution { x, residual, iterations });
            }
        }
        Err(FitError::NotConverged(format!(
            "the mixed-model equations did not reach a relative residual of {:e} after {iterations} conjugate gradient iterations",
            tolerance
        )))
    }

    /// `Z = M^-1 R` for the symmetric block Gauss-Seidel preconditioner
    /// `M = (D + L) D^-1 (D + U)`, where `D` is the diagonal of `C` and `L`, `U` its blocks
    /// below and above the diagonal blocks (one block per term): a forward sweep over the
    /// terms solves `(D + L) Y = R`, then a backward sweep `(D + U) Z = D Y`. It is one pass
    /// of backfitting each way, so nested and crossed terms that plain `diag(C)` leaves
    /// to many iterations (InstEval's lecturers within departments) converge in a few;
    /// it costs about one product with `C`. Within a term every level is updated on its
    /// own, so the result does not depend on the number of threads.
    fn precondition(&self, res: &[f64], z: &mut [f64], r: usize) {
        let n_blocks = self.blocks.len();
        for a in 0..n_blocks {
            let below = self.neighbour_sums(a, z, r, &|b| b < a);
            let block = &self.blocks[a];
            let rows = block.offset * r..(block.offset + block.n_levels) * r;
            z[rows.clone()]
                .par_chunks_mut(r)
                .zip(res[rows].par_chunks(r))
                .zip(below.par_chunks(r))
                .enumerate()
                .for_each(|(g, ((zg, rg), sg))| {
                    let d = self.diagonal[block.offset + g];
                    for j in 0..r {
                        zg[j] = (rg[j] - sg[j]) / d;
                    }
                });
        }
        for a in (0..n_blocks.saturating_sub(1)).rev() {
            let above = self.neighbour_sums(a, z, r, &|b| b > a);
            let block = &self.blocks[a];
            let rows = block.offset * r..(block.offset + block.n_levels) * r;
            z[rows].par_chunks_mut(r).zip(above.par_chunks(r)).enumerate().for_each(|(g, (zg, sg))| {
                let d = self.diagonal[block.offset + g];
                for j in 0..r {
                    zg[j] -= sg[j] / d;
                }
            });
        }
    }

    /// `sum_b C_ab Z_b` over the terms `b` that `include` accepts, for every level of term `a`.
    fn neighbour_sums(&self, a: usize, z: &[f64], r: usize, include: &(dyn Fn(usize) -> bool + Sync)) -> Vec<f64> {
        let block = &self.blocks[a];
        let mut out = vec![0.0; block.n_levels * r];
        if !block.neighbours.iter().any(|(b, _, _)| include(*b)) {
            return out;
        }
        split_by_tasks(block, &mut out, r).into_par_iter().for_each(|(first, chunk)| {
            for (i, sum) in chunk.chunks_mut(r).enumerate() {
                let g = first + i;
                for (other, cells, weights) in block.neighbours.iter().filter(|(b, _, _)| include(*b)) {
                    add_cell_sums(sum, cells, weights.as_deref(), g, z, self.blocks[*other].offset);
                }
            }
        });
        out
    }

    /// Conjugate gradients from zero for `C X = B`; columns stop when their residual
    /// falls below `tolerance` times `scale` (the norms of the original right-hand sides).
    fn conjugate_gradients(
        &self,
        rhs: &[f64],
        scale: &[f64],
        r: usize,
        tolerance: f64,
        pool: &rayon::ThreadPool,
        keep_going: &mut dyn FnMut() -> bool,
    ) -> Result<(Vec<f64>, usize), FitError> {
        let m = self.size();
        let precondition = |res: &[f64], z: &mut [f64]| self.precondition(res, z, r);
        let mut x = vec![0.0; m * r];
        let mut res = rhs.to_vec();
        let mut z = vec![0.0; m * r];
        let mut q = vec![0.0; m * r];
        let (mut p, mut rz, mut active) = pool.install(|| {
            precondition(&res, &mut z);
            let rz = column_dots(&res, &z, r);
            let norm = column_dots(&res, &res, r);
            let active: Vec<bool> = norm.iter().zip(scale).map(|(n, s)| n.sqrt() > tolerance * s).collect();
            (z.clone(), rz, active)
        });
        for iteration in 0..MAX_ITERATIONS {
            if !active.iter().any(|&a| a) {
                return Ok((x, iteration));
            }
            if !keep_going() {
                return Err(FitError::Interrupted);
            }
            pool.install(|| {
                self.apply(&p, &mut q, r);
                let pq = column_dots(&p, &q, r);
                let alpha: Vec<f64> =
                    (0..r).map(|j| if active[j] && pq[j] > 0.0 { rz[j] / pq[j] } else { 0.0 }).collect();
                x.par_chunks_mut(r).zip(res.par_chunks_mut(r)).zip(p.par_chunks(r).zip(q.par_chunks(r))).for_each(
                    |((xi, ri), (pi, qi))| {
                        for j in 0..r {
                            xi[j] += alpha[j] * pi[j];
                            ri[j] -= alpha[j] * qi[j];
                        }
                    },
                );
                let norm = column_dots(&res, &res, r);
                for j in 0..r {
                    // pq = 0 means the direction is exhausted: the column has converged.
                    if !(pq[j] > 0.0) || norm[j].sqrt() <= tolerance * scale[j] {
                        active[j] = false;
                    }
                }
                precondition(&res, &mut z);
                let rz_new = column_dots(&res, &z, r);
                let beta: Vec<f64> = (0..r).map(|j| if active[j] { rz_new[j] / rz[j] } else { 0.0 }).collect();
                p.par_chunks_mut(r).zip(z.par_chunks(r)).for_each(|(pi, zi)| {
                    for j in 0..r {
                        pi[j] = zi[j] + beta[j] * pi[j];
                    }
                });
                rz = rz_new;
            });
        }
        Err(FitError::NotConverged(format!(
            "the mixed-model equations did not converge in {MAX_ITERATIONS} conjugate gradient iterations"
        )))
    }
}

/// `out += sum_m n_gm x[base + m]` over the cells `(m, n_gm)` of row `g`, where `x` holds
/// `r = out.len()` values a level, added in the cells' stored order (with `weights`, the
/// cells' weights stand for the counts `n_gm`). The inner loop over `r` is unrolled for
/// the usual few right-hand sides and for the widths of the efficient estimator's probes
/// (see [`crate::efficient`]); it is most of a solver iteration.
#[inline]
fn add_cell_sums(out: &mut [f64], cells: &CellCounts, weights: Option<&[f64]>, g: usize, x: &[f64], base: usize) {
    let range = cells.row_starts[g]..cells.row_starts[g + 1];
    if let Some(w) = weights {
        let r = out.len();
        for (&m, &n) in cells.cols[range.clone()].iter().zip(&w[range]) {
            let at = (base + m as usize) * r;
            out.iter_mut().zip(&x[at..at + r]).for_each(|(o, v)| *o += n * v);
        }
        return;
    }
    let (cols, counts) = (&cells.cols[range.clone()], &cells.counts[range]);
    match out.len() {
        1 => add_cell_sums_of::<1>(out, cols, counts, x, base),
        2 => add_cell_sums_of::<2>(out, cols, counts, x, base),
        3 => add_cell_sums_of::<3>(out, cols, counts, x, base),
        4 => add_cell_sums_of::<4>(out, cols, counts, x, base),
        8 => add_cell_sums_of::<8>(out, cols, counts, x, base),
        12 => add_cell_sums_of::<12>(out, cols, counts, x, base),
        16 => add_cell_sums_of::<16>(out, cols, counts, x, base),
        24 => add_cell_sums_of::<24>(out, cols, counts, x, base),
        32 => add_cell_sums_of::<32>(out, cols, counts, x, base),
        r => {
            for (&m, &n) in cols.iter().zip(counts) {
                let (n, at) = (n as f64, (base + m as usize) * r);
                out.iter_mut().zip(&x[at..at + r]).for_each(|(o, v)| *o += n * v);
            }
        }
    }
}

fn add_cell_sums_of<const R: usize>(out: &mut [f64], cols: &[u32], counts: &[u32], x: &[f64], base: usize) {
    let mut sums: [f64; R] = out.try_into().expect("R values a level");
    for (&m, &n) in cols.iter().zip(counts) {
        let n = n as f64;
        let at = (base + m as usize) * R;
        let xm: &[f64; R] = x[at..at + R].try_into().expect("R values a level");
        for j in 0..R {
            sums[j] += n * xm[j];
        }
    }
    out.copy_from_slice(&sums);
}

/// The rows of one term's levels (`r` values a level) cut at its tasks: `(first level, rows)`.
fn split_by_tasks<'r>(block: &Block<'_>, rows: &'r mut [f64], r: usize) -> Vec<(usize, &'r mut [f64])> {
    let mut rest = rows;
    let mut pieces = Vec::with_capacity(block.tasks.len());
    for task in &block.tasks {
        let (piece, tail) = std::mem::take(&mut rest).split_at_mut(task.len() * r);
        pieces.push((task.start, piece));
        rest = tail;
    }
    pieces
}

/// Column-wise dot products of two row-major `n x r` arrays, summed over fixed blocks of
/// rows in block order.
fn column_dots(a: &[f64], b: &[f64], r: usize) -> Vec<f64> {
    if r == 0 {
        return Vec::new();
    }
    let partial: Vec<Vec<f64>> = a
        .par_chunks(LEVEL_BLOCK * r)
        .zip(b.par_chunks(LEVEL_BLOCK * r))
        .map(|(ca, cb)| {
            let mut s = vec![0.0; r];
            for (ra, rb) in ca.chunks(r).zip(cb.chunks(r)) {
                for j in 0..r {
                    s[j] += ra[j] * rb[j];
                }
            }
            s
        })
        .collect();
    let mut total = vec![0.0; r];
    for s in partial {
        total.iter_mut().zip(&s).for_each(|(t, v)| *t += v);
    }
    total
}

/// `sum_i A[i, ..]' B[i, ..]` for row-major `n x a` and `n x b` arrays (an `a x b`
/// matrix), over fixed blocks of rows reduced in order.
fn cross_product(left: &[f64], a: usize, right: &[f64], b: usize) -> Mat<f64> {
    let n = left.len().checked_div(a).unwrap_or(0);
    let blocks = n.div_ceil(LEVEL_BLOCK);
    let partial: Vec<Mat<f64>> = (0..blocks)
        .into_par_iter()
        .map(|c| {
            let mut s = Mat::<f64>::zeros(a, b);
            for i in c * LEVEL_BLOCK..((c + 1) * LEVEL_BLOCK).min(n) {
                for (u, lv) in left[i * a..(i + 1) * a].iter().enumerate() {
                    for (v, rv) in right[i * b..(i + 1) * b].iter().enumerate() {
                        s[(u, v)] += lv * rv;
                    }
                }
            }
            s
        })
        .collect();
    let mut total = Mat::<f64>::zeros(a, b);
    for s in partial {
        total += s;
    }
    total
}

/// Solves the mixed-model equations with the estimated components plugged in.
pub fn solve_mixed_model(
    stats: &SufficientStats,
    ols: &OlsFit,
    components: &VarianceComponents,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<MixedModelSolution, FitError> {
    solve_mixed_model_to(stats, None, ols, components, Accuracy::FIT, pool, keep_going)
}

/// [`solve_mixed_model`] to a given [`Accuracy`], and for a pigeonhole bootstrap
/// replicate given its `copies`. With `B = [Z'X | Z'y]` and `X ~ C^-1 B` the solver's
/// iterate, the GLS matrices use
///
/// ```text
/// B'C^-1 B ~ B'X + X'B - X'C X,   error -(X - C^-1 B)'C(X - C^-1 B),
/// ```
///
/// of second order in the solver's error, so the fixed effects are far more exact than
/// the relative residual (the BLUPs are not).
///
/// With `copies`, these are the equations of data in which level `g` of term `k` appears
/// as `w_g = copies[k][g]` distinct levels, solved on the levels of `stats`, which are
/// summed over the copies: the statistics of the rows, each weighted by its number of
/// copies, with levels not split (`n_g`, `Z'X`, `Z'y` and the cells are totals over a
/// level's copies). The copies of a level have the same right-hand sides, and swapping
/// them leaves `C` unchanged, so `C^-1 B` is the same on all of them: `x_g`. Summing the
/// equations of the `w_g` copies of level `g`,
///
/// ```text
/// (n_g + w_g lambda_k) x_g + sum_m n_gm x_m = (Z'B)_g,   B'C^-1 B = sum_g (Z'B)_g x_g',
/// ```
///
/// a symmetric system on the levels of `stats`, so the GLS fixed effects are those of the
/// expanded data, from a system with about (1 - 1/e) of its levels and, with two terms,
/// (1 - 1/e)^2 of its cells. The BLUPs returned are per level of `stats` (every copy's).
pub fn solve_mixed_model_to(
    stats: &SufficientStats,
    copies: Option<&[Vec<u32>]>,
    ols: &OlsFit,
    components: &VarianceComponents,
    accuracy: Accuracy,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<MixedModelSolution, FitError> {
    if let Some(copies) = copies {
        stats.check_copies(copies)?;
    }
    let k_factors = stats.n_factors();
    let s2 = components.estimate[k_factors];
    if !(s2 > 0.0 && s2.is_finite()) {
        return Err(FitError::NotIdentifiable(format!(
            "the residual variance is estimated at {s2}, so the mixed-model equations are undefined"
        )));
    }
    let lambda: Vec<Option<f64>> = (0..k_factors)
        .map(|k| {
            let v = components.estimate[k];
            (v > 0.0).then(|| s2 / v)
        })
        .collect();
    let system = pool.install(|| RandomEffectsMatrix::of_copies(stats, copies, &lambda));
    let m = system.size();
    let kept = &ols.kept;
    let q = kept.len();
    let r = q + 1;

    let zt = system.level_sums(stats, kept);
    let Solution { x: solved, residual, iterations } = system.solve(&zt, r, accuracy.cg, pool, keep_going)?;
    let (schur_inv, coef_shifted) = gls_from_solution(stats, kept, &zt, &solved, &residual, pool)?;

    // u = a - A b~.
    let mut u = vec![0.0; m];
    pool.install(|| {
        u.par_iter_mut().enumerate().for_each(|(i, ui)| {
            let row = &solved[i * r..(i + 1) * r];
            *ui = row[q] - (0..q).map(|c| row[c] * coef_shifted[c]).sum::<f64>();
        })
    });

    let relative_residual = pool.install(|| full_residual(stats, &system, &zt, kept, &coef_shifted, &u));
    if !(relative_residual <= accuracy.mme) {
        return Err(FitError::NotConverged(format!(
            "the mixed-model equations were solved only to a relative residual of {relative_residual:.3e} (required: {:e})",
            accuracy.mme
        )));
    }

    // Back to the original parametrisation.
    let coef = stats.shift.unshift_coefficients(stats.intercept, kept, &coef_shifted);
    // Var(b) = T Var(b~) T', T the linear part of the same map.
    let mut transform = Mat::<f64>::identity(q, q);
    if let Some(j0) = stats.intercept {
        let r0 = kept.iter().position(|&j| j == j0).expect("the intercept is kept");
        for (c, &j) in kept.iter().enumerate() {
            if c != r0 {
                transform[(r0, c)] = -stats.shift.x[j];
            }
        }
    }
    let vcov = &transform * (&schur_inv * s2) * transform.transpose();

    let mut ranef: Vec<Vec<f64>> = stats.levels.iter().map(|l| vec![0.0; l.n_levels()]).collect();
    for block in &system.blocks {
        ranef[block.factor].copy_from_slice(&u[block.offset..block.offset + block.n_levels]);
    }
    let u_zty: f64 = (0..m).map(|i| u[i] * zt[i * r + q]).sum();
    let b_xty: f64 = kept.iter().zip(&coef_shifted).map(|(&j, b)| stats.xty[j] * b).sum();
    let quadratic_form = stats.yty - b_xty - u_zty;
    let log_det_gls = -crate::dense::spd_log_det(&schur_inv)?;
    Ok(MixedModelSolution { coef, vcov, ranef, relative_residual, iterations, quadratic_form, log_det_gls })
}

/// The GLS matrix `S = X'V^-1 X` (up to `s2`) inverted, and the GLS fixed effects `b~`
/// (shifted coordinates), from `X ~ C^-1 B` for `B = zt = [Z'X | Z'y]` and the solver's
/// true residual `B - C X`.
///
/// `S = X'X - X'Z A` and `s_y = X'y - X'Z a` need `B'C^-1 B`. From the iterate,
/// `B'X + X'B - X'C X` has an error of second order in `X`'s (the variational estimate of
/// a bilinear form), so looser solves still give exact GLS; `C X = B - residual`.
pub(crate) fn gls_from_solution(
    stats: &SufficientStats,
    kept: &[usize],
    zt: &[f64],
    solved: &[f64],
    residual: &[f64],
    pool: &rayon::ThreadPool,
) -> Result<(Mat<f64>, Vec<f64>), FitError> {
    let p = stats.n_fixed();
    let q = kept.len();
    let r = q + 1;
    let cross = pool.install(|| {
        let c_solved: Vec<f64> = zt.par_iter().zip(residual).map(|(b, res)| b - res).collect();
        let (bx, xcx) = (cross_product(zt, r, solved, r), cross_product(solved, r, &c_solved, r));
        Mat::from_fn(r, r, |i, j| bx[(i, j)] + bx[(j, i)] - 0.5 * (xcx[(i, j)] + xcx[(j, i)]))
    });
    let xtx = submatrix(&stats.xtx, p, kept);
    let schur = Mat::from_fn(q, q, |i, j| xtx[(i, j)] - cross[(i, j)]);
    let schur_y: Vec<f64> = (0..q).map(|i| stats.xty[kept[i]] - cross[(i, q)]).collect();
    let schur_inv = spd_inverse(&schur, "the GLS matrix X'V^-1 X").map_err(|_| {
        FitError::NotIdentifiable(
            "the fixed effects are not identifiable given the random effects (X'V^-1 X is singular): a fixed-effect column is constant within the levels of a random term".into(),
        )
    })?;
    let coef_shifted: Vec<f64> = (0..q).map(|i| (0..q).map(|j| schur_inv[(i, j)] * schur_y[j]).sum()).collect();
    Ok((schur_inv, coef_shifted))
}

/// `||[X'X b + X'Z u - X'y; Z'X b + C u - Z'y]|| / ||[X'y; Z'y]||` in the shifted coordinates.
fn full_residual(
    stats: &SufficientStats,
    system: &RandomEffectsMatrix<'_>,
    zt: &[f64],
    kept: &[usize],
    b: &[f64],
    u: &[f64],
) -> f64 {
    let p = stats.n_fixed();
    let q = kept.len();
    let r = q + 1;
    let m = system.size();
    let mut cu = vec![0.0; m];
    system.apply(u, &mut cu, 1);
    let mut norm2 = 0.0;
    let mut rhs2 = 0.0;
    for i in 0..m {
        let row = &zt[i * r..(i + 1) * r];
        let zxb: f64 = (0..q).map(|c| row[c] * b[c]).sum();
        let res = zxb + cu[i] - row[q];
        norm2 += res * res;
        rhs2 += row[q] * row[q];
    }
    // X'Z u, then the fixed-effect rows.
    let mut xzu = vec![0.0; q];
    for i in 0..m {
        for c in 0..q {
            xzu[c] += zt[i * r + c] * u[i];
        }
    }
    for (c, &j) in kept.iter().enumerate() {
        let xtxb: f64 = kept.iter().zip(b).map(|(&l, bl)| stats.xtx[l * p + j] * bl).sum();
        let res = xtxb + xzu[c] - stats.xty[j];
        norm2 += res * res;
        rhs2 += stats.xty[j] * stats.xty[j];
    }
    if rhs2 > 0.0 {
        (norm2 / rhs2).sqrt()
    } else {
        norm2.sqrt()
    }
}

/// Fitted values and residuals at the solution, in parallel over fixed blocks of rows:
///
/// ```text
/// fitted_i = sum_j x_ij b_j + sum_k u_k[level_k(i)],    residual_i = y_i - fitted_i,
/// ```
///
/// over the kept columns (`coef` is NaN for the others) and every random term (`ranef`
/// in the order of `data.factors`). Each row is computed on its own, so the values do not
/// depend on the number of threads. The outputs are the caller's (e.g. R's) memory.
pub fn fitted_and_residuals(
    data: &crate::data::ModelData<'_>,
    coef: &[f64],
    ranef: &[Vec<f64>],
    fitted: &mut [f64],
    residuals: &mut [f64],
) -> Result<(), FitError> {
    let n = data.n_obs();
    if fitted.len() != n || residuals.len() != n || coef.len() != data.n_fixed() || ranef.len() != data.factors.len() {
        return Err(FitError::InvalidInput("fitted values: the outputs do not match the data".into()));
    }
    let kept: Vec<(usize, f64)> = coef.iter().copied().enumerate().filter(|(_, b)| !b.is_nan()).collect();
    const ROWS: usize = 1 << 14;
    fitted.par_chunks_mut(ROWS).zip(residuals.par_chunks_mut(ROWS)).enumerate().for_each(|(c, (fit, res))| {
        let first = c * ROWS;
        let rows = first..first + fit.len();
        fit.fill(0.0);
        for &(j, b) in &kept {
            data.x[j].add_scaled(rows.clone(), b, fit);
        }
        for (factor, u) in data.factors.iter().zip(ranef) {
            for (f, i) in fit.iter_mut().zip(rows.clone()) {
                *f += u[factor.level(i)];
            }
        }
        for ((r, f), y) in res.iter_mut().zip(fit.iter()).zip(&data.y[rows]) {
            *r = y - f;
        }
    });
    Ok(())
}
