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

/// Posterior means `E[a | d_g]` under the estimate (the prior mean where `d_g` is NaN).
pub fn posterior_means(g: &Npmle, d: &[f64], v: &[f64]) -> Result<Vec<f64>, FitError> {
    if d.len() != v.len() {
        return Err(FitError::InvalidInput(format!("{} level means for {} variances", d.len(), v.len())));
    }
    let sup = support(&g.weights);
    let mut out = vec![0.0; d.len()];
    out.par_chunks_mut(1024).enumerate().for_each(|(c, chunk)| {
        let mut p = Vec::with_capacity(sup.len());
        for (k, o) in chunk.iter_mut().enumerate() {
            let i = c * 1024 + k;
            posterior_weights(g, &sup, d[i], v[i], &mut p);
            *o = sup.iter().zip(&p).map(|(&j, w)| g.grid[j] * w).sum();
        }
    });
    Ok(out)
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

/// Quantiles `probs` of the predictive distribution of `center_i + a + e`, where `a` has
/// the posterior of a level with mean `d_i` and noise variance `v_i` (NaN `d_i`: a new
/// level, `a` from the estimate itself) and `e ~ N(0, noise_i)` independently. Rows are
/// the observations, in `probs` order within a row (row-major).
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
    let (lo_a, hi_a) =
        sup.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &j| (l.min(g.grid[j]), h.max(g.grid[j])));
    let np = probs.len();
    let mut out = vec![f64::NAN; n * np];
    out.par_chunks_mut(np.max(1) * 256).enumerate().for_each(|(c, chunk)| {
        let mut p = Vec::with_capacity(sup.len());
        for (k, row) in chunk.chunks_mut(np.max(1)).enumerate() {
            let i = c * 256 + k;
            if !(center[i].is_finite() && noise[i].is_finite() && noise[i] >= 0.0) {
                continue;
            }
            posterior_weights(g, &sup, d[i], v[i], &mut p);
            let s = noise[i].sqrt().max(1e-12 * (1.0 + (hi_a - lo_a).abs()));
            let cdf =
                |y: f64| -> f64 { sup.iter().zip(&p).map(|(&j, w)| w * pnorm((y - center[i] - g.grid[j]) / s)).sum() };
            for (q, &pr) in row.iter_mut().zip(probs) {
                let (mut lo, mut hi) = (center[i] + lo_a - 9.0 * s, center[i] + hi_a + 9.0 * s);
                for _ in 0..80 {
                    let mid = 0.5 * (lo + hi);
                    if cdf(mid) < pr {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                    if hi - lo <= 1e-10 * (1.0 + mid.abs()) {
                        break;
                    }
                }
                *q = 0.5 * (lo + hi);
            }
        }
    });
    Ok(out)
}
