//! The distribution of a random term's effects (Full Randomness, section 8: a random
//! effects model is a mixing distribution, and the whole distribution of the effects can
//! be estimated, not only its variance).
//!
//! * [`LevelSums`]: per-level sums of the first four powers of (partial) residuals, the
//!   mergeable statistics of this step: the sums of a union of row sets are the sums of
//!   the parts' sums, level by level.
//! * [`npmle`]: the Kiefer-Wolfowitz nonparametric maximum likelihood estimate of the
//!   distribution `G` of the effects from the level means `d_g ~ N(a_g, v_g)`, `a_g ~ G`,
//!   with known noise variances `v_g`, on a fixed grid of support points (Koenker and
//!   Mizera 2014), by EM accelerated with SQUAREM (Varadhan and Roland 2008). Levels are
//!   binned on `(log v, d / sqrt(v))` first, so the cost of every iteration depends on the
//!   number of occupied bins, not on the number of levels.
//! * [`posterior_means`] and [`predictive_quantiles`]: empirical Bayes predictions under
//!   the estimate, and quantiles of the predictive distribution of a new observation.

use crate::error::FitError;
use rayon::prelude::*;

/// Per-level sums of `x - shift`, `(x - shift)^2`, `(x - shift)^3`, `(x - shift)^4` and
/// the level counts.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelSums {
    pub shift: f64,
    pub count: Vec<f64>,
    pub s1: Vec<f64>,
    pub s2: Vec<f64>,
    pub s3: Vec<f64>,
    pub s4: Vec<f64>,
}

impl LevelSums {
    /// The sums of `values` by level; `codes[i] - offset` is the 0-based level of row `i`.
    pub fn compute(
        values: &[f64],
        codes: &[i32],
        offset: i32,
        n_levels: usize,
        shift: f64,
    ) -> Result<LevelSums, FitError> {
        if values.len() != codes.len() {
            return Err(FitError::InvalidInput(format!("{} values for {} level codes", values.len(), codes.len())));
        }
        if !shift.is_finite() {
            return Err(FitError::InvalidInput("the shift must be finite".into()));
        }
        let mut out = LevelSums::empty(n_levels, shift);
        for (i, (&x, &c)) in values.iter().zip(codes).enumerate() {
            let g = c as i64 - offset as i64;
            if g < 0 || g >= n_levels as i64 {
                return Err(FitError::InvalidInput(format!("row {}: level code {} outside 1..{}", i + 1, c, n_levels)));
            }
            if !x.is_finite() {
                return Err(FitError::InvalidInput(format!("row {}: the value is not finite", i + 1)));
            }
            let g = g as usize;
            let z = x - shift;
            let z2 = z * z;
            out.count[g] += 1.0;
            out.s1[g] += z;
            out.s2[g] += z2;
            out.s3[g] += z2 * z;
            out.s4[g] += z2 * z2;
        }
        Ok(out)
    }

    /// No rows in any of `n_levels` levels.
    pub fn empty(n_levels: usize, shift: f64) -> LevelSums {
        let zeros = vec![0.0; n_levels];
        LevelSums { shift, count: zeros.clone(), s1: zeros.clone(), s2: zeros.clone(), s3: zeros.clone(), s4: zeros }
    }

    pub fn n_levels(&self) -> usize {
        self.count.len()
    }

    /// Adds the sums of another row set (the same levels and shift).
    pub fn merge(&mut self, other: &LevelSums) -> Result<(), FitError> {
        if other.n_levels() != self.n_levels() || other.shift != self.shift {
            return Err(FitError::Incompatible(format!(
                "level sums of {} levels (shift {}) cannot be merged with {} levels (shift {})",
                other.n_levels(),
                other.shift,
                self.n_levels(),
                self.shift
            )));
        }
        for g in 0..self.n_levels() {
            self.count[g] += other.count[g];
            self.s1[g] += other.s1[g];
            self.s2[g] += other.s2[g];
            self.s3[g] += other.s3[g];
            self.s4[g] += other.s4[g];
        }
        Ok(())
    }

    /// The level means of the values (NaN for an empty level).
    pub fn means(&self) -> Vec<f64> {
        self.s1.iter().zip(&self.count).map(|(s, &n)| if n > 0.0 { self.shift + s / n } else { f64::NAN }).collect()
    }
}

/// Settings of [`npmle`].
#[derive(Debug, Clone)]
pub struct NpmleOptions {
    /// Number of equally spaced support points from the smallest to the largest binned mean.
    pub grid_size: usize,
    /// Width of a bin of level means, in units of the bin's noise sd.
    pub mean_bin: f64,
    /// Width of a bin of noise variances on the log scale.
    pub variance_bin: f64,
    /// The EM stops when the Kiefer-Wolfowitz gradient is at most `1 + tol` on the whole
    /// grid (then the log-likelihood is within `tol` per level of its maximum). EM's
    /// tail is slow and flat: the last digits of the log-likelihood move the posterior
    /// means far less than their sampling error.
    pub tol: f64,
    pub max_iter: usize,
}

impl Default for NpmleOptions {
    fn default() -> Self {
        NpmleOptions { grid_size: 300, mean_bin: 0.05, variance_bin: 0.05, tol: 1e-3, max_iter: 600 }
    }
}

/// Levels grouped into bins of `(log v, d / sqrt(v))`: the bins' mean `d`, mean `v` and
/// number of levels.
#[derive(Debug, Clone, PartialEq)]
pub struct Bins {
    pub d: Vec<f64>,
    pub v: Vec<f64>,
    pub count: Vec<f64>,
}

/// Bins the levels with finite `d` and positive finite `v` (others are skipped).
pub fn bin_levels(d: &[f64], v: &[f64], opts: &NpmleOptions) -> Result<Bins, FitError> {
    if d.len() != v.len() {
        return Err(FitError::InvalidInput(format!("{} level means for {} variances", d.len(), v.len())));
    }
    if !(opts.mean_bin > 0.0 && opts.variance_bin > 0.0) {
        return Err(FitError::InvalidInput("bin widths must be positive".into()));
    }
    let mut keyed: Vec<(i64, i64, usize)> = (0..d.len())
        .filter(|&g| d[g].is_finite() && v[g].is_finite() && v[g] > 0.0)
        .map(|g| {
            let vb = (v[g].ln() / opts.variance_bin).floor();
            let sd = ((vb + 0.5) * opts.variance_bin).exp().sqrt();
            let db = (d[g] / (opts.mean_bin * sd)).floor();
            (vb as i64, db as i64, g)
        })
        .collect();
    // Stable: levels of one bin are summed in level order, whatever the threads.
    keyed.par_sort_by_key(|&(a, b, _)| (a, b));
    let mut bins = Bins { d: Vec::new(), v: Vec::new(), count: Vec::new() };
    let mut i = 0;
    while i < keyed.len() {
        let (a, b, _) = keyed[i];
        let (mut sd, mut sv, mut n) = (0.0, 0.0, 0.0);
        while i < keyed.len() && keyed[i].0 == a && keyed[i].1 == b {
            let g = keyed[i].2;
            sd += d[g];
            sv += v[g];
            n += 1.0;
            i += 1;
        }
        bins.d.push(sd / n);
        bins.v.push(sv / n);
        bins.count.push(n);
    }
    Ok(bins)
}

/// The estimated distribution: support points and their probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct Npmle {
    pub grid: Vec<f64>,
    pub weights: Vec<f64>,
    pub loglik: f64,
    pub iterations: usize,
    pub converged: bool,
    /// Largest ratio `(1/N) sum_b c_b f(d_b | a_j) / f(d_b)` over the grid: 1 at the NPMLE
    /// (the Kiefer-Wolfowitz optimality condition), larger before it.
    pub max_gradient: f64,
    pub n_bins: usize,
    pub n_levels: usize,
}

const ROWS_PER_TASK: usize = 64;

/// The likelihood matrix of the bins (rows) at the grid (columns), each row divided by
/// its largest entry (the row's log scale is kept for the log-likelihood).
struct Likelihood {
    m: usize,
    values: Vec<f64>,
    log_scale: Vec<f64>,
    count: Vec<f64>,
    total: f64,
}

impl Likelihood {
    fn new(bins: &Bins, grid: &[f64]) -> Likelihood {
        let m = grid.len();
        let nb = bins.d.len();
        let mut values = vec![0.0; nb * m];
        let mut log_scale = vec![0.0; nb];
        values.par_chunks_mut(m).zip(log_scale.par_iter_mut()).enumerate().for_each(|(b, (row, ls))| {
            let (d, v) = (bins.d[b], bins.v[b]);
            let mut best = f64::NEG_INFINITY;
            for (j, a) in grid.iter().enumerate() {
                let e = -(d - a) * (d - a) / (2.0 * v);
                row[j] = e;
                best = best.max(e);
            }
            for x in row.iter_mut() {
                *x = (*x - best).exp();
            }
            *ls = best - 0.5 * (2.0 * std::f64::consts::PI * v).ln();
        });
        let total = bins.count.iter().sum();
        Likelihood { m, values, log_scale, count: bins.count.clone(), total }
    }

    /// The mixture density of every bin at `w` (restricted to the support `active`).
    fn densities(&self, w: &[f64], active: &[usize]) -> Vec<f64> {
        let mut f = vec![0.0; self.count.len()];
        f.par_iter_mut().enumerate().for_each(|(b, fb)| {
            let row = &self.values[b * self.m..(b + 1) * self.m];
            *fb = active.iter().map(|&j| row[j] * w[j]).sum();
        });
        f
    }

    fn loglik_of(&self, f: &[f64]) -> f64 {
        f.iter().zip(&self.count).zip(&self.log_scale).map(|((fb, c), ls)| c * (fb.max(1e-300).ln() + ls)).sum()
    }

    /// `(1/N) sum_b c_b L_bj / f_b` for the columns `cols`, summed in a fixed order.
    fn gradient(&self, f: &[f64], cols: &[usize]) -> Vec<f64> {
        let nb = self.count.len();
        let starts: Vec<usize> = (0..nb).step_by(ROWS_PER_TASK).collect();
        let parts: Vec<Vec<f64>> = starts
            .par_iter()
            .map(|&s| {
                let mut acc = vec![0.0; cols.len()];
                for b in s..(s + ROWS_PER_TASK).min(nb) {
                    let r = self.count[b] / f[b].max(1e-300);
                    let row = &self.values[b * self.m..(b + 1) * self.m];
                    for (k, &j) in cols.iter().enumerate() {
                        acc[k] += row[j] * r;
                    }
                }
                acc
            })
            .collect();
        let mut out = vec![0.0; cols.len()];
        for p in parts {
            for (o, x) in out.iter_mut().zip(p) {
                *o += x;
            }
        }
        out.iter_mut().for_each(|x| *x /= self.total);
        out
    }

    /// One EM step from `w`; returns the new weights and the log-likelihood at `w`.
    fn em(&self, w: &[f64], active: &[usize]) -> (Vec<f64>, f64) {
        let f = self.densities(w, active);
        let grad = self.gradient(&f, active);
        let mut out = vec![0.0; w.len()];
        for (k, &j) in active.iter().enumerate() {
            out[j] = w[j] * grad[k];
        }
        normalise(&mut out);
        (out, self.loglik_of(&f))
    }

    fn loglik(&self, w: &[f64], active: &[usize]) -> f64 {
        self.loglik_of(&self.densities(w, active))
    }
}

fn normalise(w: &mut [f64]) {
    let s: f64 = w.iter().sum();
    if s > 0.0 {
        w.iter_mut().for_each(|x| *x /= s);
    }
}

fn support(w: &[f64]) -> Vec<usize> {
    (0..w.len()).filter(|&j| w[j] > 0.0).collect()
}

/// The grid: `grid_size` equally spaced points from the smallest to the largest bin mean.
pub fn default_grid(bins: &Bins, grid_size: usize) -> Vec<f64> {
    let lo = bins.d.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = bins.d.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if !(hi > lo) || grid_size < 2 {
        return vec![if lo.is_finite() { lo } else { 0.0 }];
    }
    (0..grid_size).map(|j| lo + (hi - lo) * j as f64 / (grid_size - 1) as f64).collect()
}

/// The NPMLE of the distribution of `a_g` from `d_g ~ N(a_g, v_g)`.
pub fn npmle(d: &[f64], v: &[f64], opts: &NpmleOptions) -> Result<Npmle, FitError> {
    let bins = bin_levels(d, v, opts)?;
    if bins.d.is_empty() {
        return Err(FitError::InvalidInput("no level has a finite mean and a positive noise variance".into()));
    }
    let grid = default_grid(&bins, opts.grid_size);
    npmle_binned(&bins, grid, opts)
}

/// [`npmle`] from binned levels on a given grid.
pub fn npmle_binned(bins: &Bins, grid: Vec<f64>, opts: &NpmleOptions) -> Result<Npmle, FitError> {
    let m = grid.len();
    if m == 0 || grid.iter().any(|a| !a.is_finite()) {
        return Err(FitError::InvalidInput("the grid must hold finite points".into()));
    }
    let lik = Likelihood::new(bins, &grid);
    let all: Vec<usize> = (0..m).collect();
    let mut w = vec![1.0 / m as f64; m];
    let mut iterations = 0;
    let mut converged = false;
    let mut ll = f64::NEG_INFINITY;
    let mut max_gradient = f64::INFINITY;
    // SQUAREM cycles of three EM steps after a few plain EM steps. Every few cycles the
    // Kiefer-Wolfowitz condition is checked over the whole grid: at the NPMLE the
    // gradient `(1/N) sum_b c_b L_bj / f_b` is at most 1 everywhere, and by concavity the
    // log-likelihood is within `N (max_j gradient_j - 1)` of its maximum. Weights that
    // SQUAREM set to zero where the gradient exceeds 1 are put back with a small weight.
    for _ in 0..3 {
        let (w1, _) = lik.em(&w, &support(&w));
        w = w1;
        iterations += 1;
    }
    let mut cycles = 0usize;
    while iterations < opts.max_iter {
        let active = support(&w);
        let (w1, _) = lik.em(&w, &active);
        let (w2, _) = lik.em(&w1, &active);
        let r: Vec<f64> = w1.iter().zip(&w).map(|(a, b)| a - b).collect();
        let vv: Vec<f64> = (0..m).map(|j| w2[j] - 2.0 * w1[j] + w[j]).collect();
        let rn = r.iter().map(|x| x * x).sum::<f64>().sqrt();
        let vn = vv.iter().map(|x| x * x).sum::<f64>().sqrt();
        let mut candidate = if vn > 0.0 {
            let alpha = (-rn / vn).min(-1.0);
            let mut c: Vec<f64> =
                (0..m).map(|j| (w[j] - 2.0 * alpha * r[j] + alpha * alpha * vv[j]).max(0.0)).collect();
            normalise(&mut c);
            c
        } else {
            w2.clone()
        };
        let (stabilised, _) = lik.em(&candidate, &support(&candidate));
        candidate = stabilised;
        let mut new_ll = lik.loglik(&candidate, &support(&candidate));
        let ll2 = lik.loglik(&w2, &active);
        if !(new_ll >= ll2) {
            candidate = w2;
            new_ll = ll2;
        }
        iterations += 3;
        cycles += 1;
        // Negligible weights are dropped (they cost time and change nothing).
        let top = candidate.iter().cloned().fold(0.0, f64::max);
        candidate.iter_mut().for_each(|x| {
            if *x < 1e-12 * top {
                *x = 0.0
            }
        });
        normalise(&mut candidate);
        w = candidate;
        ll = new_ll;
        if cycles % 5 == 0 || iterations >= opts.max_iter {
            let f = lik.densities(&w, &support(&w));
            let grad = lik.gradient(&f, &all);
            max_gradient = grad.iter().cloned().fold(0.0, f64::max);
            if max_gradient <= 1.0 + opts.tol {
                converged = true;
                break;
            }
            let mut revived = false;
            for j in 0..m {
                if w[j] == 0.0 && grad[j] > 1.0 + 10.0 * opts.tol {
                    w[j] = 1e-4 / m as f64;
                    revived = true;
                }
            }
            if revived {
                normalise(&mut w);
            }
        }
    }
    if !converged {
        let f = lik.densities(&w, &support(&w));
        max_gradient = lik.gradient(&f, &all).iter().cloned().fold(0.0, f64::max);
        ll = lik.loglik_of(&f);
    }
    Ok(Npmle {
        grid,
        weights: w,
        loglik: ll,
        iterations,
        converged,
        max_gradient,
        n_bins: bins.d.len(),
        n_levels: bins.count.iter().sum::<f64>() as usize,
    })
}

/// Efron's (2016) log-spline g-model: the distribution on `grid` with probabilities
/// `g_j(b) = exp(Q_j b) / sum_l exp(Q_l b)`, `Q` an `m x p` basis (column-major in
/// `basis`; R builds a centred natural spline), fitted by maximising the binned marginal
/// log-likelihood minus Efron's penalty `penalty |b|` (its gradient smoothed at 0), by BFGS with a
/// backtracking line search. The gradient of the log-likelihood is
/// `N sum_j g_j (grad_j - 1) Q_j`, with `grad_j` the Kiefer-Wolfowitz gradient of the
/// NPMLE. A smooth, low-dimensional alternative to the NPMLE (which is discrete and
/// overfits with few levels).
pub fn gmodel(
    d: &[f64],
    v: &[f64],
    grid: Vec<f64>,
    basis: &[f64],
    penalty: f64,
    opts: &NpmleOptions,
) -> Result<Npmle, FitError> {
    let m = grid.len();
    if m == 0 || basis.len() % m != 0 || grid.iter().any(|a| !a.is_finite()) {
        return Err(FitError::InvalidInput("the basis must have one row per (finite) grid point".into()));
    }
    if !(penalty >= 0.0 && penalty.is_finite()) {
        // penalty |b|, smoothed at b = 0 by adding 1e-12 under the root
        return Err(FitError::InvalidInput("the penalty must be a finite non-negative number".into()));
    }
    let p = basis.len() / m;
    let bins = bin_levels(d, v, opts)?;
    if bins.d.is_empty() {
        return Err(FitError::InvalidInput("no level has a finite mean and a positive noise variance".into()));
    }
    let lik = Likelihood::new(&bins, &grid);
    let all: Vec<usize> = (0..m).collect();
    let n_total = lik.total;
    let weights_of = |b: &[f64]| -> Vec<f64> {
        let eta: Vec<f64> = (0..m).map(|j| (0..p).map(|k| basis[k * m + j] * b[k]).sum::<f64>()).collect();
        let top = eta.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut w: Vec<f64> = eta.iter().map(|e| (e - top).exp()).collect();
        normalise(&mut w);
        w
    };
    // The objective (to minimise) and its gradient at b.
    let eval = |b: &[f64]| -> (f64, Vec<f64>, Vec<f64>) {
        let w = weights_of(b);
        let f = lik.densities(&w, &all);
        let ll = lik.loglik_of(&f);
        let grad = lik.gradient(&f, &all);
        let norm = (b.iter().map(|x| x * x).sum::<f64>() + 1e-12).sqrt();
        let pen = penalty * norm;
        let gr: Vec<f64> = (0..p)
            .map(|k| {
                -n_total * (0..m).map(|j| w[j] * (grad[j] - 1.0) * basis[k * m + j]).sum::<f64>()
                    + penalty * b[k] / norm
            })
            .collect();
        (-ll + pen, gr, w)
    };
    let mut b = vec![0.0; p];
    let (mut fval, mut gr, mut w) = eval(&b);
    // Inverse Hessian approximation, started at I / N (the objective is of order N).
    let mut h = vec![0.0; p * p];
    for k in 0..p {
        h[k * p + k] = 1.0 / n_total;
    }
    let mut iterations = 0;
    let mut converged = false;
    while iterations < opts.max_iter {
        iterations += 1;
        let dir: Vec<f64> = (0..p).map(|i| -(0..p).map(|k| h[i * p + k] * gr[k]).sum::<f64>()).collect();
        let slope: f64 = dir.iter().zip(&gr).map(|(a, b)| a * b).sum();
        if !(slope < 0.0) {
            // not a descent direction: restart from the scaled identity
            h.iter_mut().for_each(|x| *x = 0.0);
            for k in 0..p {
                h[k * p + k] = 1.0 / n_total;
            }
            continue;
        }
        let mut step = 1.0;
        let mut accepted = None;
        for _ in 0..40 {
            let cand: Vec<f64> = b.iter().zip(&dir).map(|(x, dd)| x + step * dd).collect();
            let (fc, gc, wc) = eval(&cand);
            if fc.is_finite() && fc <= fval + 1e-4 * step * slope {
                accepted = Some((cand, fc, gc, wc));
                break;
            }
            step *= 0.5;
        }
        let Some((nb, nf, ng, nw)) = accepted else { break };
        let s: Vec<f64> = nb.iter().zip(&b).map(|(x, y)| x - y).collect();
        let y: Vec<f64> = ng.iter().zip(&gr).map(|(x, y)| x - y).collect();
        let sy: f64 = s.iter().zip(&y).map(|(a, b)| a * b).sum();
        let change = fval - nf;
        b = nb;
        fval = nf;
        gr = ng;
        w = nw;
        if sy > 1e-12 * s.iter().map(|x| x * x).sum::<f64>().sqrt() * y.iter().map(|x| x * x).sum::<f64>().sqrt() {
            // BFGS update of the inverse Hessian
            let hy: Vec<f64> = (0..p).map(|i| (0..p).map(|k| h[i * p + k] * y[k]).sum::<f64>()).collect();
            let yhy: f64 = y.iter().zip(&hy).map(|(a, b)| a * b).sum();
            for i in 0..p {
                for k in 0..p {
                    h[i * p + k] += ((sy + yhy) * s[i] * s[k]) / (sy * sy) - (hy[i] * s[k] + s[i] * hy[k]) / sy;
                }
            }
        }
        let gmax = gr.iter().fold(0.0f64, |a, x| a.max(x.abs()));
        if gmax <= opts.tol * 1e-3 * n_total || change.abs() <= 1e-12 * n_total {
            converged = gmax <= opts.tol * n_total;
            break;
        }
    }
    let f = lik.densities(&w, &all);
    let max_gradient = lik.gradient(&f, &all).iter().cloned().fold(0.0, f64::max);
    Ok(Npmle {
        grid,
        weights: w,
        loglik: lik.loglik_of(&f),
        iterations,
        converged,
        max_gradient,
        n_bins: bins.d.len(),
        n_levels: bins.count.iter().sum::<f64>() as usize,
    })
}

/// The posterior weights of the support points for one level mean `d` with noise
/// variance `v`; NaN `d` (a new level) gives the estimated distribution itself.
fn posterior_weights(g: &Npmle, support: &[usize], d: f64, v: f64, out: &mut Vec<f64>) {
    out.clear();
    if !(d.is_finite() && v.is_finite() && v > 0.0) {
        out.extend(support.iter().map(|&j| g.weights[j]));
        return;
    }
    let mut best = f64::NEG_INFINITY;
    for &j in support {
        let e = -(d - g.grid[j]) * (d - g.grid[j]) / (2.0 * v);
        out.push(e);
        best = best.max(e);
    }
    let mut s = 0.0;
    for (k, &j) in support.iter().enumerate() {
        out[k] = g.weights[j] * (out[k] - best).exp();
        s += out[k];
    }
    out.iter_mut().for_each(|x| *x /= s);
}

/// The spacing of an equally spaced grid (relative deviations below 1e-9), else `None`.
fn equal_spacing(grid: &[f64]) -> Option<f64> {
    if grid.len() < 2 {
        return None;
    }
    let h = (grid[grid.len() - 1] - grid[0]) / (grid.len() - 1) as f64;
    if !(h > 0.0) {
        return None;
    }
    let ok = grid.windows(2).all(|p| ((p[1] - p[0]) - h).abs() <= 1e-9 * h);
    if ok {
        Some(h)
    } else {
        None
    }
}

/// The posterior mean of a level with mean `d` and noise variance `v` on an equally
/// spaced grid with spacing `h`, over the grid indices `lo..=hi`, without an `exp` per
/// grid point: the likelihood ratios of neighbouring points,
/// `t_{j+1} / t_j = exp((d - a_j) h / v - h^2 / (2 v))`, change by the constant factor
/// `exp(-h^2 / v)` from one point to the next. Starting at the grid point nearest `d`,
/// the likelihoods relative to it decrease monotonically in both directions, and the
/// walk stops where they fall below 1e-300. `None` when the posterior mass near `d` is
/// too small for this to be accurate (the caller then uses [`posterior_weights`]).
fn posterior_mean_walk(g: &Npmle, lo: usize, hi: usize, h: f64, d: f64, v: f64) -> Option<f64> {
    walk_sums(g, lo, hi, h, d, v).map(|(s0, s1, _)| s1 / s0)
}

/// The sums of [`posterior_mean_walk`]: `s0 = sum_j w_j t_j`, `s1 = sum_j w_j t_j a_j`
/// with `t_j = exp(((d - a_p)^2 - (d - a_j)^2) / (2 v))` the likelihoods relative to the
/// grid point `p` nearest `d` (returned third).
fn walk_sums(g: &Npmle, lo: usize, hi: usize, h: f64, d: f64, v: f64) -> Option<(f64, f64, usize)> {
    let (a, w) = (&g.grid, &g.weights);
    let c = (-h * h / v).exp();
    let p = ((d - a[0]) / h).round().clamp(lo as f64, hi as f64) as usize;
    let (mut s0, mut s1) = (w[p], w[p] * a[p]);
    let half = h * h / (2.0 * v);
    let (mut t, mut q) = (1.0, ((d - a[p]) * h / v - half).exp());
    for j in p + 1..=hi {
        t *= q;
        q *= c;
        if t < 1e-300 {
            break;
        }
        s0 += w[j] * t;
        s1 += w[j] * t * a[j];
    }
    let (mut t, mut r) = (1.0, (-(d - a[p]) * h / v - half).exp());
    for j in (lo..p).rev() {
        t *= r;
        r *= c;
        if t < 1e-300 {
            break;
        }
        s0 += w[j] * t;
        s1 += w[j] * t * a[j];
    }
    if s0 > 1e-200 && s0.is_finite() && s1.is_finite() {
        Some((s0, s1, p))
    } else {
        None
    }
}

/// Posterior means `E[a | d_g]` under the estimate (the prior mean where `d_g` is NaN).
/// On an equally spaced grid (the default) by [`posterior_mean_walk`], a few
/// multiplications per grid point; otherwise one `exp` per support point.
pub fn posterior_means(g: &Npmle, d: &[f64], v: &[f64]) -> Result<Vec<f64>, FitError> {
    if d.len() != v.len() {
        return Err(FitError::InvalidInput(format!("{} level means for {} variances", d.len(), v.len())));
    }
    let sup = support(&g.weights);
    if sup.is_empty() {
        return Err(FitError::InvalidInput("the distribution has no positive weight".into()));
    }
    let spacing = equal_spacing(&g.grid);
    let (lo, hi) = (sup[0], sup[sup.len() - 1]);
    let mut out = vec![0.0; d.len()];
    out.par_chunks_mut(1024).enumerate().for_each(|(c, chunk)| {
        let mut p = Vec::with_capacity(sup.len());
        for (k, o) in chunk.iter_mut().enumerate() {
            let i = c * 1024 + k;
            let walked = match spacing {
                Some(h) if d[i].is_finite() && v[i].is_finite() && v[i] > 0.0 => {
                    posterior_mean_walk(g, lo, hi, h, d[i], v[i])
                }
                _ => None,
            };
            *o = walked.unwrap_or_else(|| {
                posterior_weights(g, &sup, d[i], v[i], &mut p);
                sup.iter().zip(&p).map(|(&j, w)| g.grid[j] * w).sum()
            });
        }
    });
    Ok(out)
}

/// The marginal log-likelihood `sum_g log sum_j w_j phi(d_g; a_j, v_g)` of level means
/// `d` with noise variances `v` under the distribution `g`, level by level (no binning:
/// the levels need not be those `g` was fitted to, as in the held-out half of the split
/// likelihood ratio of `fr_distribution()`). Levels with a non-finite `d` or a
/// non-positive `v` are skipped. The per-level terms are summed in level order, so the
/// result does not depend on the number of threads.
pub fn mixture_loglik(g: &Npmle, d: &[f64], v: &[f64]) -> Result<f64, FitError> {
    if d.len() != v.len() {
        return Err(FitError::InvalidInput(format!("{} level means for {} variances", d.len(), v.len())));
    }
    let sup = support(&g.weights);
    if sup.is_empty() {
        return Err(FitError::InvalidInput("the distribution has no positive weight".into()));
    }
    let total: f64 = g.weights.iter().sum();
    let log_w: Vec<f64> = sup.iter().map(|&j| (g.weights[j] / total).ln()).collect();
    let spacing = equal_spacing(&g.grid);
    let (lo, hi) = (sup[0], sup[sup.len() - 1]);
    let mut terms = vec![0.0; d.len()];
    terms.par_chunks_mut(1024).enumerate().for_each(|(c, chunk)| {
        let mut e = Vec::with_capacity(sup.len());
        for (k, o) in chunk.iter_mut().enumerate() {
            let i = c * 1024 + k;
            if !(d[i].is_finite() && v[i].is_finite() && v[i] > 0.0) {
                continue;
            }
            let log_norm = -0.5 * (2.0 * std::f64::consts::PI * v[i]).ln() - total.ln();
            // On an equally spaced grid by the walk of the posterior means (no exp per point).
            if let Some((s0, _, p)) = spacing.and_then(|h| walk_sums(g, lo, hi, h, d[i], v[i])) {
                *o = s0.ln() - (d[i] - g.grid[p]) * (d[i] - g.grid[p]) / (2.0 * v[i]) + log_norm;
                continue;
            }
            e.clear();
            let mut best = f64::NEG_INFINITY;
            for (&j, lw) in sup.iter().zip(&log_w) {
                let x = lw - (d[i] - g.grid[j]) * (d[i] - g.grid[j]) / (2.0 * v[i]);
                e.push(x);
                best = best.max(x);
            }
            let s: f64 = e.iter().map(|x| (x - best).exp()).sum();
            *o = best + s.ln() - 0.5 * (2.0 * std::f64::consts::PI * v[i]).ln();
        }
    });
    Ok(terms.iter().sum())
}

/// The complementary error function (Numerical Recipes' Chebyshev fit, relative error
/// below 1.2e-7 everywhere).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The standard normal distribution function.
pub fn pnorm(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// A rough inverse of the standard normal distribution function (Shore 1982, error
/// about 0.01): the starting point of the safeguarded Newton iteration below.
fn rough_qnorm(p: f64) -> f64 {
    if p >= 0.5 {
        5.5556 * (1.0 - ((1.0 - p) / p).powf(0.1186))
    } else {
        -rough_qnorm(1.0 - p)
    }
}

/// Quantiles `probs` of the predictive distribution of `center_i + a + e`, where `a` has
/// the posterior of a level with mean `d_i` and noise variance `v_i` (NaN `d_i`: a new
/// level, `a` from the estimate itself) and `e ~ N(0, noise_i)` independently. Rows are
/// the observations, in `probs` order within a row (row-major).
///
/// Posterior weights below 1e-15 are dropped (they move the distribution function by
/// less than 1e-12), and each quantile is found by Newton's method on the mixture's
/// distribution function, started from the normal with the same mean and variance and
/// kept inside a bracket that shrinks with every step (a bisection step whenever Newton
/// would leave it).
pub fn predictive_quantiles(
    g: &Npmle,
    d: &[f64],
    v: &[f64],
    center: &[f64],
    noise: &[f64],
    probs: &[f64],
) -> Result<Vec<f64>, FitError> {
    let n = d.len();
    if v.len() != n || center.len() != n || noise.len() != n {
        return Err(FitError::InvalidInput("d, v, center and noise differ in length".into()));
    }
    if probs.iter().any(|p| !(*p > 0.0 && *p < 1.0)) {
        return Err(FitError::InvalidInput("probabilities must lie strictly between 0 and 1".into()));
    }
    let sup = support(&g.weights);
    if sup.is_empty() {
        return Err(FitError::InvalidInput("the distribution has no positive weight".into()));
    }
    let (lo_a, hi_a) =
        sup.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &j| (l.min(g.grid[j]), h.max(g.grid[j])));
    let np = probs.len();
    let mut out = vec![f64::NAN; n * np];
    let inv_sqrt_2pi = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
    out.par_chunks_mut(np.max(1) * 256).enumerate().for_each(|(c, chunk)| {
        let mut p = Vec::with_capacity(sup.len());
        let mut atoms: Vec<(f64, f64)> = Vec::with_capacity(sup.len());
        for (k, row) in chunk.chunks_mut(np.max(1)).enumerate() {
            let i = c * 256 + k;
            if !(center[i].is_finite() && noise[i].is_finite() && noise[i] >= 0.0) {
                continue;
            }
            posterior_weights(g, &sup, d[i], v[i], &mut p);
            atoms.clear();
            atoms.extend(sup.iter().zip(&p).filter(|(_, w)| **w > 1e-15).map(|(&j, &w)| (center[i] + g.grid[j], w)));
            let total: f64 = atoms.iter().map(|x| x.1).sum();
            atoms.iter_mut().for_each(|x| x.1 /= total);
            let s = noise[i].sqrt().max(1e-12 * (1.0 + (hi_a - lo_a).abs()));
            let mean: f64 = atoms.iter().map(|(a, w)| a * w).sum();
            let var: f64 = atoms.iter().map(|(a, w)| w * (a - mean) * (a - mean)).sum::<f64>() + s * s;
            let cdf_pdf = |y: f64| -> (f64, f64) {
                let (mut f, mut dens) = (0.0, 0.0);
                for &(a, w) in atoms.iter() {
                    let z = (y - a) / s;
                    f += w * pnorm(z);
                    dens += w * (-0.5 * z * z).exp();
                }
                (f, dens * inv_sqrt_2pi / s)
            };
            for (q, &pr) in row.iter_mut().zip(probs) {
                let (mut lo, mut hi) = (center[i] + lo_a - 9.0 * s, center[i] + hi_a + 9.0 * s);
                let mut x = (mean + var.sqrt() * rough_qnorm(pr)).clamp(lo, hi);
                for _ in 0..200 {
                    let (f, dens) = cdf_pdf(x);
                    if f < pr {
                        lo = x;
                    } else {
                        hi = x;
                    }
                    let step = (f - pr) / dens;
                    let mut next = x - step;
                    if !(dens > 0.0 && next > lo && next < hi) {
                        next = 0.5 * (lo + hi);
                    }
                    let done = (next - x).abs() <= 1e-11 * (1.0 + x.abs()) || hi - lo <= 1e-10 * (1.0 + x.abs());
                    x = next;
                    if done {
                        break;
                    }
                }
                *q = x;
            }
        }
    });
    Ok(out)
}
