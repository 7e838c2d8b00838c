//! The Laplace approximation of a GLMM's likelihood, maximised over the fixed effects and
//! the random-effect sds: what `glmer(nAGQ = 1)` fits, for any random-intercept terms
//! (crossed or nested), as `method = "laplace"`.
//!
//! With `u_k = theta_k v_k`, `v ~ N(0, I)` and `eta = X b + offset + Z Lambda v`
//! (`Lambda = diag(theta_k)` over each term's levels):
//!
//! ```text
//! h(v)  = sum_i l_i(eta_i) - |v|^2 / 2
//! A(v)  = Lambda Z' W(v) Z Lambda + I,     W = diag(-l_i''(eta_i))
//! l_LA(b, theta) = h(v^) - log det A(v^) / 2,     v^ = argmax_v h(v)
//! ```
//!
//! (`-l''` is the Fisher weight for the canonical links, logit and log, as in glmer; for
//! probit it is the observed curvature, the Laplace approximation's own.) The modes `v^`
//! come from Newton's method with step halving; `A` from a sparse Cholesky factor (faer:
//! the fill-reducing ordering and the symbolic analysis once, a numeric factor per step),
//! whose diagonal gives the determinant.
//!
//! `l_LA` is even in each `theta_k` (flipping the sign of `v_k` leaves `eta` unchanged and
//! conjugates `A` by a diagonal of signs), so it is maximised over unconstrained `theta`:
//! a term at the boundary is one whose `theta` goes to 0, without a constraint to handle.
//! The maximisation is Newton's method on `(b, theta)` (the fixed effects scaled by their
//! columns' root mean squares) with central-difference derivatives, each evaluation
//! solving the modes from the centre's until Newton's step is below 1e-13; the evaluations
//! are independent and run in parallel, each one the same whatever the thread, so the
//! fit does not depend on the threads. The covariance of the fixed effects is twice the
//! inverse of the differences' Hessian of `-2 l_LA` at the optimum (lme4's default,
//! `use.hessian = TRUE`).
//!
//! The rows are copied once into a canonical order (by their levels, then response,
//! trials, offset and covariates), and every sum runs over them in that order: the fit is
//! the same, to the last bit, however the rows are ordered or split into chunks (the
//! differences' rounding would otherwise move the optimum by about 1e-8). An evaluation
//! costs one pass over the rows per Newton
//! step of the modes, plus the factor, whose size grows with the crossed terms' levels
//! (a term's levels fill in against the other's): [`Laplace::factor_values`] is known
//! before any fit, and callers refuse a factor above [`MAX_FACTOR_VALUES`].

use crate::dense::inverse;
use crate::error::{try_filled, FitError};
use crate::family::GlmFamily;
use crate::glmm::GlmmChunk;
use crate::likelihood::log_det_of_factor;
use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
use faer::linalg::solvers::Solve;
use faer::sparse::linalg::cholesky::{factorize_symbolic_cholesky, SymbolicCholesky};
use faer::sparse::{SparseColMatRef, SymbolicSparseColMatRef};
use faer::{Conj, Mat, MatMut, Par, Side};
use rayon::prelude::*;

/// The largest sparse Cholesky factor (values) of a Laplace fit: 800 MB.
pub const MAX_FACTOR_VALUES: usize = 100_000_000;
/// `method = "auto"` takes the Laplace fit for crossed terms up to this many rows...
pub const AUTO_MAX_ROWS: usize = 2_000_000;
/// ... and a Cholesky factor of at most this many values.
pub const AUTO_MAX_FACTOR_VALUES: usize = 1_000_000;
/// Newton steps of the modes allowed in one evaluation.
const MAX_MODE_STEPS: usize = 60;
/// The modes are converged when Newton's step moves none of them by more than this: the
/// log determinant's error is first order in the modes' (about `q` times it), and the
/// differences need it small (an error `e` in the deviance is `e / h` in the gradient,
/// `e / h^2` in the Hessian).
const MODE_STEP: f64 = 1e-13;
/// ... or, where rounding stops Newton's steps from shrinking, below this.
const MODE_STEP_FLOOR: f64 = 1e-9;
/// The central differences' steps in `(b scaled, theta)`: the Hessian's, and the
/// gradient's, smaller because the gradient fixes where the optimum is (the third
/// derivative `f3` biases it by `h^2 f3 / 6`; the deviance's rounding, about 1e-11,
/// adds `1e-11 / h`).
const HESSIAN_STEP: f64 = 1e-3;
const GRADIENT_STEP: f64 = 1e-4;
/// Below this predicted decrease Newton's full step is taken without a line search: the
/// deviance's rounding would blur the comparisons, and the step is in Newton's quadratic
/// region.
const FULL_STEP_BELOW: f64 = 1e-4;
/// The fit has converged when Newton's predicted decrease of `-2 l_LA` is below this...
const PREDICTED_DECREASE: f64 = 1e-12;
/// ... or below this and no longer falling tenfold a step (the differences' rounding).
const PREDICTED_DECREASE_FLOOR: f64 = 1e-8;
/// A `theta` below this at the optimum is reported as 0 (the boundary).
const BOUNDARY_THETA: f64 = 1e-4;
/// The smallest starting `theta` (`theta = 0` is a stationary point: Newton would stay).
const MIN_START_THETA: f64 = 0.05;

/// Settings of [`Laplace::fit`].
#[derive(Debug, Clone, Copy)]
pub struct LaplaceOptions {
    /// Newton steps of `(b, theta)` allowed.
    pub max_steps: usize,
}

impl Default for LaplaceOptions {
    fn default() -> Self {
        LaplaceOptions { max_steps: 100 }
    }
}

/// The estimates, their covariances, the modes and the criterion.
#[derive(Debug, Clone)]
pub struct LaplaceFit {
    pub coef: Vec<f64>,
    /// The random-effect variances `theta_k^2`.
    pub variances: Vec<f64>,
    pub at_boundary: Vec<bool>,
    /// `l_LA` at the estimates, up to terms free of the parameters (log binomial
    /// coefficients, `-log y!`).
    pub loglik: f64,
    /// Covariance of the fixed effects (`p x p`).
    pub vcov: Mat<f64>,
    /// Covariance of the variances (`K x K`, by the delta method from the sds'; zero rows
    /// for boundary terms).
    pub vcov_variances: Mat<f64>,
    /// The conditional modes `u_k = theta_k v^_k` per term.
    pub modes: Vec<Vec<f64>>,
    /// Newton steps of `(b, theta)`, and evaluations of `l_LA`.
    pub steps: usize,
    pub evaluations: usize,
}

/// The layout of a Laplace fit: the rows' random-effect indices and where each row adds
/// to the lower triangle of `A`, with the symbolic Cholesky factor of its pattern.
pub struct Laplace {
    family: GlmFamily,
    p: usize,
    k_terms: usize,
    n_rows: usize,
    /// Root mean square of each fixed-effect column (the scale of its coefficient).
    x_scale: Vec<f64>,
    /// First random-effect index of each term, and the total `q` (last entry).
    term_start: Vec<usize>,
    /// Per row in the canonical order: the response, the trials, the offset and the
    /// fixed-effect values (`n_rows x p`).
    y: Vec<f64>,
    trials: Vec<f64>,
    offset: Vec<f64>,
    x: Vec<f64>,
    /// Per row, the random-effect index of each term (`n_rows x K`).
    effect: Vec<u32>,
    /// Per row, the position in `values` of each pair of terms' entry (`n_rows x K(K-1)/2`).
    pair_position: Vec<u32>,
    col_ptr: Vec<usize>,
    row_idx: Vec<usize>,
    symbolic: SymbolicCholesky<usize>,
}

/// Buffers of one evaluation.
struct Workspace {
    eta_fixed: Vec<f64>,
    v: Vec<f64>,
    v_try: Vec<f64>,
    grad: Vec<f64>,
    grad_try: Vec<f64>,
    values: Vec<f64>,
    values_try: Vec<f64>,
    factor: Vec<f64>,
    step: Vec<f64>,
    buffer: MemBuffer,
}

/// `h(v)` with the gradient and `A`'s values at `v`.
struct ModeState {
    h: f64,
}

/// One evaluation of `-2 l_LA`, with the modes it found.
struct Evaluated {
    deviance: f64,
    v: Vec<f64>,
}

impl Laplace {
    /// The layout and the symbolic factor for the rows of `chunks`.
    pub fn new(chunks: &[GlmmChunk<'_>], family: GlmFamily) -> Result<Self, FitError> {
        let first = chunks.first().ok_or_else(|| FitError::InvalidInput("no data to fit".into()))?;
        let p = first.data.n_fixed();
        let k_terms = first.data.factors.len();
        if k_terms == 0 {
            return Err(FitError::InvalidInput("the Laplace fit needs at least one random-effect term".into()));
        }
        let mut term_start = vec![0usize; k_terms + 1];
        for k in 0..k_terms {
            term_start[k + 1] = term_start[k] + first.data.factors[k].n_levels;
        }
        let q = term_start[k_terms];
        if q >= u32::MAX as usize {
            return Err(FitError::InvalidInput(format!("{q} random effects are more than the Laplace fit indexes")));
        }
        let n_rows: usize = chunks.iter().map(|c| c.n_obs()).sum();
        for c in chunks {
            if c.data.n_fixed() != p || c.data.factors.len() != k_terms {
                return Err(FitError::Incompatible("the chunks have different fixed effects or terms".into()));
            }
        }
        // Every row as (effect indices, y, trials, offset, x), sorted.
        let width = k_terms + 3 + p;
        let mut table: Vec<f64> = try_filled(n_rows * width, 0.0, "the rows of the Laplace fit")?;
        let mut at = 0;
        for c in chunks {
            for i in 0..c.n_obs() {
                let row = &mut table[at * width..(at + 1) * width];
                for (k, f) in c.data.factors.iter().enumerate() {
                    row[k] = (term_start[k] + f.level(i)) as f64;
                }
                row[k_terms] = c.data.y[i];
                row[k_terms + 1] = c.trials.map_or(1.0, |t| t[i]);
                row[k_terms + 2] = c.offset.map_or(0.0, |o| o[i]);
                for (j, col) in c.data.x.iter().enumerate() {
                    row[k_terms + 3 + j] = col.value(i, 0.0);
                }
                at += 1;
            }
        }
        let mut order: Vec<u32> = (0..n_rows as u32).collect();
        order.par_sort_unstable_by(|&a, &b| {
            let (a, b) = (a as usize, b as usize);
            table[a * width..(a + 1) * width]
                .iter()
                .zip(&table[b * width..(b + 1) * width])
                .map(|(u, v)| u.total_cmp(v))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let mut effect: Vec<u32> = try_filled(n_rows * k_terms, 0, "the rows' random-effect indices")?;
        let mut y = try_filled(n_rows, 0.0, "the response")?;
        let mut trials = try_filled(n_rows, 0.0, "the trials")?;
        let mut offset = try_filled(n_rows, 0.0, "the offsets")?;
        let mut x = try_filled(n_rows * p, 0.0, "the fixed-effect values")?;
        for (r, &from) in order.iter().enumerate() {
            let row = &table[from as usize * width..(from as usize + 1) * width];
            for k in 0..k_terms {
                effect[r * k_terms + k] = row[k] as u32;
            }
            y[r] = row[k_terms];
            trials[r] = row[k_terms + 1];
            offset[r] = row[k_terms + 2];
            x[r * p..(r + 1) * p].copy_from_slice(&row[k_terms + 3..]);
        }
        drop(table);
        drop(order);
        let mut x_scale = vec![0.0; p];
        for r in 0..n_rows {
            for j in 0..p {
                x_scale[j] += x[r * p + j] * x[r * p + j];
            }
        }
        for s in &mut x_scale {
            *s = (*s / n_rows.max(1) as f64).sqrt();
            if !(*s > 0.0) || !s.is_finite() {
                *s = 1.0;
            }
        }
        // The pattern of A's lower triangle: the diagonal, and an entry per cell of each
        // pair of terms (the later term's effect is the row, as its indices are larger).
        let n_pairs = k_terms * (k_terms - 1) / 2;
        let mut cells: Vec<u64> = crate::error::try_with_capacity(n_rows * n_pairs, "the cells of the terms")?;
        for r in 0..n_rows {
            let e = &effect[r * k_terms..(r + 1) * k_terms];
            for k in 0..k_terms {
                for l in k + 1..k_terms {
                    cells.push(((e[k] as u64) << 32) | e[l] as u64);
                }
            }
        }
        cells.par_sort_unstable();
        cells.dedup();
        let mut col_ptr = vec![0usize; q + 1];
        let mut row_idx: Vec<usize> = crate::error::try_with_capacity(q + cells.len(), "the pattern of A")?;
        let mut next = 0;
        for col in 0..q {
            col_ptr[col] = row_idx.len();
            row_idx.push(col);
            while next < cells.len() && (cells[next] >> 32) as usize == col {
                row_idx.push((cells[next] & 0xffff_ffff) as usize);
                next += 1;
            }
        }
        col_ptr[q] = row_idx.len();
        drop(cells);
        if row_idx.len() >= u32::MAX as usize {
            return Err(FitError::InvalidInput("the crossed terms have too many cells for the Laplace fit".into()));
        }
        let mut pair_position: Vec<u32> = try_filled(n_rows * n_pairs, 0, "the rows' cells")?;
        for r in 0..n_rows {
            let e = &effect[r * k_terms..(r + 1) * k_terms];
            let mut m = 0;
            for k in 0..k_terms {
                let col = e[k] as usize;
                let rows = &row_idx[col_ptr[col]..col_ptr[col + 1]];
                for l in k + 1..k_terms {
                    let found = rows
                        .binary_search(&(e[l] as usize))
                        .map_err(|_| FitError::Internal("a cell is missing from the pattern of A".into()))?;
                    pair_position[r * n_pairs + m] = (col_ptr[col] + found) as u32;
                    m += 1;
                }
            }
        }
        let pattern = SymbolicSparseColMatRef::new_checked(q, q, &col_ptr, None, &row_idx);
        let symbolic = factorize_symbolic_cholesky(pattern, Side::Lower, Default::default(), Default::default())
            .map_err(|e| {
                FitError::InvalidInput(format!("the sparse Cholesky analysis of the Laplace fit failed: {e:?}"))
            })?;
        Ok(Laplace {
            family,
            y,
            trials,
            offset,
            x,
            p,
            k_terms,
            n_rows,
            x_scale,
            term_start,
            effect,
            pair_position,
            col_ptr,
            row_idx,
            symbolic,
        })
    }

    /// Values of the Cholesky factor of `A` (its memory is 8 bytes a value, per thread).
    pub fn factor_values(&self) -> usize {
        self.symbolic.len_val()
    }

    fn q(&self) -> usize {
        self.term_start[self.k_terms]
    }

    fn workspace(&self) -> Result<Workspace, FitError> {
        let q = self.q();
        let nnz = self.row_idx.len();
        let scratch = StackReq::any_of(&[
            self.symbolic.factorize_numeric_llt_scratch::<f64>(Par::Seq, Default::default()),
            self.symbolic.solve_in_place_scratch::<f64>(1, Par::Seq),
        ]);
        Ok(Workspace {
            eta_fixed: try_filled(self.n_rows, 0.0, "the linear predictor")?,
            v: vec![0.0; q],
            v_try: vec![0.0; q],
            grad: vec![0.0; q],
            grad_try: vec![0.0; q],
            values: try_filled(nnz, 0.0, "the matrix A")?,
            values_try: try_filled(nnz, 0.0, "the matrix A")?,
            factor: try_filled(self.factor_values(), 0.0, "the Cholesky factor of A")?,
            step: vec![0.0; q],
            buffer: MemBuffer::try_new(scratch)
                .map_err(|_| FitError::InvalidInput("the Cholesky workspace does not fit in memory".into()))?,
        })
    }

    /// `X b + offset`, row by row.
    fn set_fixed_part(&self, b: &[f64], eta: &mut [f64]) {
        let p = self.p;
        for (r, e) in eta.iter_mut().enumerate() {
            *e = self.offset[r] + self.x[r * p..(r + 1) * p].iter().zip(b).map(|(x, b)| x * b).sum::<f64>();
        }
    }

    /// One pass over the rows at `v`: `h(v)`, its gradient and `A(v)`'s values.
    fn mode_pass(
        &self,
        theta: &[f64],
        eta_fixed: &[f64],
        v: &[f64],
        grad: &mut [f64],
        values: &mut [f64],
    ) -> ModeState {
        let kk = self.k_terms;
        let n_pairs = kk * (kk - 1) / 2;
        grad.iter_mut().for_each(|g| *g = 0.0);
        values.iter_mut().for_each(|a| *a = 0.0);
        let mut loglik = 0.0;
        for r in 0..self.n_rows {
            let e = &self.effect[r * kk..(r + 1) * kk];
            let mut eta = eta_fixed[r];
            for k in 0..kk {
                eta += theta[k] * v[e[k] as usize];
            }
            let (l, l1, l2) = self.family.row_derivatives(self.y[r], self.trials[r], eta);
            loglik += l;
            let w = -l2;
            for k in 0..kk {
                let j = e[k] as usize;
                grad[j] += theta[k] * l1;
                values[self.col_ptr[j]] += theta[k] * theta[k] * w;
            }
            let mut m = 0;
            for k in 0..kk {
                for l in k + 1..kk {
                    values[self.pair_position[r * n_pairs + m] as usize] += theta[k] * theta[l] * w;
                    m += 1;
                }
            }
        }
        let mut penalty = 0.0;
        for j in 0..v.len() {
            grad[j] -= v[j];
            values[self.col_ptr[j]] += 1.0;
            penalty += v[j] * v[j];
        }
        ModeState { h: loglik - 0.5 * penalty }
    }

    /// `-2 l_LA` at `(b, theta)`, the modes solved from `ws.v` (left at the solution).
    fn deviance(&self, ws: &mut Workspace, b: &[f64], theta: &[f64]) -> Result<f64, FitError> {
        self.set_fixed_part(b, &mut ws.eta_fixed);
        let pattern = SymbolicSparseColMatRef::new_checked(self.q(), self.q(), &self.col_ptr, None, &self.row_idx);
        let mut state = self.mode_pass(theta, &ws.eta_fixed, &ws.v, &mut ws.grad, &mut ws.values);
        let mut last_largest = f64::INFINITY;
        for _ in 0..MAX_MODE_STEPS {
            let a = SparseColMatRef::new(pattern, &ws.values);
            let llt = self
                .symbolic
                .factorize_numeric_llt::<f64>(
                    &mut ws.factor,
                    a,
                    Side::Lower,
                    Default::default(),
                    Par::Seq,
                    MemStack::new(&mut ws.buffer),
                    Default::default(),
                )
                .map_err(|e| {
                    FitError::NotConverged(format!("the Laplace fit's matrix is not positive definite: {e:?}"))
                })?;
            ws.step.copy_from_slice(&ws.grad);
            let q = ws.step.len();
            let rhs = MatMut::from_column_major_slice_mut(&mut ws.step, q, 1);
            llt.solve_in_place_with_conj(Conj::No, rhs, Par::Seq, MemStack::new(&mut ws.buffer));
            let decrement: f64 = ws.step.iter().zip(&ws.grad).map(|(s, g)| s * g).sum();
            if !decrement.is_finite() {
                return Err(FitError::NotConverged("the Laplace fit's modes are not finite".into()));
            }
            let largest = ws.step.iter().fold(0.0f64, |m, s| m.max(s.abs()));
            if largest < MODE_STEP || (largest < MODE_STEP_FLOOR && largest > 0.5 * last_largest) {
                let log_det = log_det_of_factor(&self.symbolic, &ws.factor);
                return Ok(-2.0 * state.h + log_det);
            }
            last_largest = largest;
            // Newton's step, halved until h increases.
            let mut scale = 1.0;
            loop {
                for j in 0..q {
                    ws.v_try[j] = ws.v[j] + scale * ws.step[j];
                }
                let trial = self.mode_pass(theta, &ws.eta_fixed, &ws.v_try, &mut ws.grad_try, &mut ws.values_try);
                if trial.h.is_finite() && trial.h >= state.h - 1e-12 * (1.0 + state.h.abs()) {
                    std::mem::swap(&mut ws.v, &mut ws.v_try);
                    std::mem::swap(&mut ws.grad, &mut ws.grad_try);
                    std::mem::swap(&mut ws.values, &mut ws.values_try);
                    state = trial;
                    break;
                }
                scale *= 0.5;
                if scale < 1e-12 {
                    return Err(FitError::NotConverged(format!(
                        "the Laplace fit's modes stalled (Newton decrement {decrement:.3e})"
                    )));
                }
            }
        }
        Err(FitError::NotConverged(format!(
            "the Laplace fit's modes did not converge in {MAX_MODE_STEPS} Newton steps"
        )))
    }

    /// `(b, theta)` from the scaled parameters `t`.
    fn unpack(&self, t: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let b = (0..self.p).map(|j| t[j] / self.x_scale[j]).collect();
        (b, t[self.p..].to_vec())
    }

    /// `-2 l_LA` at each of `points` (scaled parameters), in parallel over `spaces` (one
    /// a thread, made once a fit), each evaluation starting its modes from `v_start`.
    fn deviances(
        &self,
        points: &[Vec<f64>],
        v_start: &[f64],
        spaces: &mut [Workspace],
        pool: &rayon::ThreadPool,
    ) -> Result<Vec<Evaluated>, FitError> {
        let threads = spaces.len().max(1).min(points.len().max(1));
        let per = points.len().div_ceil(threads).max(1);
        let batches: Vec<Result<Vec<Evaluated>, FitError>> = pool.install(|| {
            points
                .par_chunks(per)
                .zip(spaces.par_iter_mut())
                .map(|(batch, ws)| {
                    batch
                        .iter()
                        .map(|t| {
                            ws.v.copy_from_slice(v_start);
                            let (b, theta) = self.unpack(t);
                            let deviance = self.deviance(ws, &b, &theta)?;
                            Ok(Evaluated { deviance, v: ws.v.clone() })
                        })
                        .collect()
                })
                .collect()
        });
        let mut out = Vec::with_capacity(points.len());
        for batch in batches {
            out.extend(batch?);
        }
        Ok(out)
    }

    /// `-2 l_LA` and the modes `u_k = theta_k v^_k` at `(b, theta)` (for tests and
    /// diagnostics).
    pub fn deviance_at(&self, b: &[f64], theta: &[f64]) -> Result<(f64, Vec<Vec<f64>>), FitError> {
        if b.len() != self.p || theta.len() != self.k_terms {
            return Err(FitError::InvalidInput("parameters of the wrong length".into()));
        }
        let mut ws = self.workspace()?;
        let d = self.deviance(&mut ws, b, theta)?;
        Ok((d, self.modes_of(&ws.v, theta)))
    }

    fn modes_of(&self, v: &[f64], theta: &[f64]) -> Vec<Vec<f64>> {
        (0..self.k_terms)
            .map(|k| v[self.term_start[k]..self.term_start[k + 1]].iter().map(|x| theta[k] * x).collect())
            .collect()
    }

    /// The deviance, gradient and Hessian at `t` by central differences (`d` the
    /// parameters): `1 + 4d + 2d(d - 1)` evaluations.
    fn derivatives(
        &self,
        t: &[f64],
        v_start: &[f64],
        spaces: &mut [Workspace],
        pool: &rayon::ThreadPool,
    ) -> Result<(Evaluated, Vec<f64>, Mat<f64>), FitError> {
        let d = t.len();
        let h = HESSIAN_STEP;
        let shifted = |moves: &[(usize, f64)]| {
            let mut x = t.to_vec();
            for &(i, s) in moves {
                x[i] += s;
            }
            x
        };
        let mut points = vec![t.to_vec()];
        for i in 0..d {
            points.push(shifted(&[(i, h)]));
            points.push(shifted(&[(i, -h)]));
        }
        for i in 0..d {
            points.push(shifted(&[(i, GRADIENT_STEP)]));
            points.push(shifted(&[(i, -GRADIENT_STEP)]));
        }
        for i in 0..d {
            for j in 0..i {
                for (si, sj) in [(h, h), (h, -h), (-h, h), (-h, -h)] {
                    points.push(shifted(&[(i, si), (j, sj)]));
                }
            }
        }
        let mut values = self.deviances(&points, v_start, spaces, pool)?;
        let f: Vec<f64> = values.iter().map(|e| e.deviance).collect();
        let f0 = f[0];
        let mut grad = vec![0.0; d];
        let mut hess = Mat::<f64>::zeros(d, d);
        for i in 0..d {
            let (plus, minus) = (f[1 + 2 * i], f[2 + 2 * i]);
            hess[(i, i)] = (plus - 2.0 * f0 + minus) / (h * h);
            grad[i] = (f[1 + 2 * d + 2 * i] - f[2 + 2 * d + 2 * i]) / (2.0 * GRADIENT_STEP);
        }
        let mut at = 1 + 4 * d;
        for i in 0..d {
            for j in 0..i {
                let v = (f[at] - f[at + 1] - f[at + 2] + f[at + 3]) / (4.0 * h * h);
                hess[(i, j)] = v;
                hess[(j, i)] = v;
                at += 4;
            }
        }
        let centre = values.swap_remove(0);
        Ok((centre, grad, hess))
    }

    /// Maximises `l_LA` from `(b_start, s2_start)` (the moment estimates).
    pub fn fit(
        &self,
        b_start: &[f64],
        s2_start: &[f64],
        options: &LaplaceOptions,
        pool: &rayon::ThreadPool,
        keep_going: &mut dyn FnMut() -> bool,
    ) -> Result<LaplaceFit, FitError> {
        let (p, kk) = (self.p, self.k_terms);
        if b_start.len() != p || s2_start.len() != kk {
            return Err(FitError::InvalidInput("starting values of the wrong length".into()));
        }
        // The start rounded to 4 digits, so that the rounding differences of a start computed
        // over other chunks do not change the path: the fit is then a function of the rows.
        let mut t: Vec<f64> = (0..p)
            .map(|j| if b_start[j].is_finite() { round_to_digits(b_start[j] * self.x_scale[j], 4) } else { 0.0 })
            .collect();
        t.extend(s2_start.iter().map(|&s| {
            if s.is_finite() {
                round_to_digits(s.max(0.0).sqrt().max(MIN_START_THETA), 4)
            } else {
                0.5
            }
        }));
        let d = t.len();
        let mut v = vec![0.0; self.q()];
        let mut spaces =
            (0..pool.current_num_threads().max(1)).map(|_| self.workspace()).collect::<Result<Vec<_>, _>>()?;
        let mut evaluations = 0;
        let mut steps = 0;
        let mut last_predicted = f64::INFINITY;
        let (centre, hess) = loop {
            if !keep_going() {
                return Err(FitError::Interrupted);
            }
            if steps >= options.max_steps {
                return Err(FitError::NotConverged(format!(
                    "the Laplace fit did not converge in {steps} Newton steps (last predicted decrease of the deviance {last_predicted:.3e}): use method = \"moments\""
                )));
            }
            steps += 1;
            let (centre, grad, hess) = self.derivatives(&t, &v, &mut spaces, pool)?;
            evaluations += 1 + 4 * d + 2 * d * (d - 1);
            v.clone_from(&centre.v);
            let step = newton_step(&grad, &hess);
            let predicted: f64 = -step.iter().zip(&grad).map(|(s, g)| s * g).sum::<f64>();
            let stalled = predicted < PREDICTED_DECREASE_FLOOR && predicted > 0.1 * last_predicted;
            last_predicted = predicted;
            if predicted < PREDICTED_DECREASE || stalled {
                break (centre, hess);
            }
            if predicted < FULL_STEP_BELOW {
                t.iter_mut().zip(&step).for_each(|(a, s)| *a += s);
                continue;
            }
            // At most 1 on any scaled coefficient or sd per step.
            let biggest = step.iter().fold(0.0f64, |m, s| m.max(s.abs()));
            let limit = if biggest > 1.0 { 1.0 / biggest } else { 1.0 };
            let mut scale = limit;
            let mut moved = false;
            for _ in 0..40 {
                if !keep_going() {
                    return Err(FitError::Interrupted);
                }
                let trial: Vec<f64> = t.iter().zip(&step).map(|(a, s)| a + scale * s).collect();
                let tried = self.deviances(std::slice::from_ref(&trial), &v, &mut spaces, pool);
                evaluations += 1;
                if let Ok(mut e) = tried {
                    let e = e.swap_remove(0);
                    if e.deviance.is_finite() && e.deviance <= centre.deviance - 1e-4 * scale * predicted {
                        t = trial;
                        v = e.v;
                        moved = true;
                        break;
                    }
                }
                scale *= 0.5;
            }
            if !moved {
                if predicted < 1e-4 {
                    // Newton's predicted gain is below what the differences resolve.
                    break (centre, hess);
                }
                return Err(FitError::NotConverged(format!(
                    "the Laplace fit stalled: no decrease of the deviance along Newton's direction (predicted {predicted:.3e}); use method = \"moments\""
                )));
            }
        };
        let theta: Vec<f64> = t[p..].iter().map(|x| x.abs()).collect();
        let at_boundary: Vec<bool> = theta.iter().map(|&x| x < BOUNDARY_THETA).collect();
        // Covariances over the free parameters: 2 H^-1 of -2 l_LA, unscaled.
        let free: Vec<usize> = (0..p).chain((0..kk).filter(|&k| !at_boundary[k]).map(|k| p + k)).collect();
        let h_free = Mat::<f64>::from_fn(free.len(), free.len(), |a, c| hess[(free[a], free[c])]);
        let cov_free = inverse(&h_free, "the Hessian of the Laplace deviance")?;
        let mut vcov = Mat::<f64>::zeros(p, p);
        for a in 0..p {
            for c in 0..p {
                vcov[(a, c)] = 2.0 * cov_free[(a, c)] / (self.x_scale[a] * self.x_scale[c]);
            }
        }
        let mut vcov_variances = Mat::<f64>::zeros(kk, kk);
        for (a, &fa) in free.iter().enumerate().skip(p) {
            for (c, &fc) in free.iter().enumerate().skip(p) {
                let (ka, kc) = (fa - p, fc - p);
                vcov_variances[(ka, kc)] = 2.0 * cov_free[(a, c)] * (2.0 * theta[ka]) * (2.0 * theta[kc]);
            }
        }
        let theta_reported: Vec<f64> = theta.iter().zip(&at_boundary).map(|(&x, &b)| if b { 0.0 } else { x }).collect();
        let (b, theta_signed) = self.unpack(&t);
        Ok(LaplaceFit {
            coef: b,
            variances: theta_reported.iter().map(|x| x * x).collect(),
            at_boundary,
            loglik: -0.5 * centre.deviance,
            vcov,
            vcov_variances,
            modes: self.modes_of(&centre.v, &theta_signed),
            steps,
            evaluations,
        })
    }
}

/// `method = "auto"`'s choice of the Laplace fit for crossed terms: at most
/// [`AUTO_MAX_ROWS`] rows and a Cholesky factor of at most [`AUTO_MAX_FACTOR_VALUES`]
/// values (each evaluation factors it about three times, and a fit takes some hundreds of
/// evaluations; above, the moments scale).
pub fn is_affordable(chunks: &[GlmmChunk<'_>], family: GlmFamily) -> Result<bool, FitError> {
    let rows: usize = chunks.iter().map(|c| c.n_obs()).sum();
    if rows > AUTO_MAX_ROWS {
        return Ok(false);
    }
    Ok(Laplace::new(chunks, family)?.factor_values() <= AUTO_MAX_FACTOR_VALUES)
}

/// `x` rounded to `digits` significant digits.
fn round_to_digits(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// Newton's step `-H^-1 g`, with `H + lambda I` (`lambda` growing) where `H` is not
/// positive definite.
fn newton_step(grad: &[f64], hess: &Mat<f64>) -> Vec<f64> {
    let d = grad.len();
    let scale = (0..d).fold(0.0f64, |m, i| m.max(hess[(i, i)].abs())).max(1e-8);
    let mut lambda = 0.0;
    loop {
        let mut h = hess.clone();
        for i in 0..d {
            h[(i, i)] += lambda;
        }
        if let Ok(llt) = h.llt(Side::Lower) {
            let rhs = Mat::<f64>::from_fn(d, 1, |i, _| -grad[i]);
            let x = llt.solve(&rhs);
            let step: Vec<f64> = (0..d).map(|i| x[(i, 0)]).collect();
            if step.iter().all(|s| s.is_finite()) {
                return step;
            }
        }
        lambda = if lambda == 0.0 { 1e-6 * scale } else { lambda * 10.0 };
        if lambda > 1e12 * scale {
            // Steepest descent, scaled.
            return grad.iter().map(|g| -g / scale).collect();
        }
    }
}
