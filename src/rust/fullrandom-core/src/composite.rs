//! Generalized linear mixed models by per-level marginal likelihoods (the "efficient"
//! GLMM estimator): for every term `k` and level `g` of `k`, the marginal likelihood of
//! the rows of `g`,
//!
//! ```text
//! L_kg = int prod_{i in g} f_i(y_i | eta0_i + a; tau_kg) phi(a; S_kg) da,
//! f_i(y | e; tau) = int f(y | e + v) phi(v; tau) dv,
//! ```
//!
//! `S_kg` the summed variances of the terms whose level is the same on every row of `g`
//! (`k` itself and the terms `k` is nested in) and `tau_kg` the variances of the other
//! terms, integrated row by row. The estimates maximise `sum_k sum_g log L_kg`. With one
//! term this is the marginal likelihood (what `glmer(nAGQ > 1)` maximises); with nested
//! terms and observation-level terms each component is the exact marginal likelihood of
//! its rows when the rows of `g` hold distinct levels of every term not constant on `g`
//! (crossed terms with every pair of levels at most once, an observation-level term);
//! otherwise (repeated cells, a term with nested levels repeated inside `g`) the
//! component treats rows that share those levels as independent given `a`, an
//! approximation. The sum over terms is a composite likelihood (Lindsay 1988; Varin,
//! Reid and Firth 2011): its score is unbiased when the components are, so the
//! estimates are consistent, and their covariance is the sandwich `H^-1 V H^-1`.
//!
//! Both integrals are adaptive Gauss-Hermite quadratures: the outer one centred at the
//! mode of the level's integrand and scaled by its curvature (as glmer's nAGQ), the inner
//! one per row the same way. Derivatives in the parameters are posterior expectations
//! (Fisher's identity) with `d f_i / d tau = 1/2 d^2 f_i / d e^2` (the heat equation of
//! a Gaussian convolution). The Hessian is differenced from the analytic score.
//!
//! Everything is a sum over levels computed level by level, in a fixed order, from the
//! rows of every chunk in turn: the fit does not depend on the number of threads or on
//! how the rows are split into chunks (of the same row order).

use crate::dense::solve;
use crate::error::FitError;
use crate::family::{dnorm, gauss_hermite, logistic, pnorm, Distribution, Family, GlmFamily, Link};
use crate::glmm::GlmmChunk;
use faer::Mat;
use rayon::prelude::*;

/// Settings of [`fit_composite`].
#[derive(Debug, Clone, Copy)]
pub struct CompositeOptions {
    /// Nodes of the outer (per level) adaptive quadrature.
    pub nodes: usize,
    /// Nodes of the inner (per row) adaptive quadrature over the other terms.
    pub inner_nodes: usize,
    pub max_iterations: usize,
}

impl Default for CompositeOptions {
    fn default() -> Self {
        CompositeOptions { nodes: 15, inner_nodes: 11, max_iterations: 100 }
    }
}

/// The estimates and their covariances.
#[derive(Debug, Clone)]
pub struct CompositeFit {
    pub coef: Vec<f64>,
    pub variances: Vec<f64>,
    pub at_boundary: Vec<bool>,
    /// The composite log-likelihood at the estimates (up to terms free of the parameters).
    pub loglik: f64,
    /// `-H^-1` (the inverse observed information) over `(b, s2_active)`, expanded to
    /// `p + K` with zero rows for boundary terms.
    pub vcov_model: Mat<f64>,
    /// The sandwich `H^-1 V H^-1`, `V` multi-way cluster-robust from the level scores.
    pub vcov_sandwich: Mat<f64>,
    /// Whether the criterion is the marginal likelihood itself (one term).
    pub exact: bool,
    pub iterations: usize,
}

/// Rows of a level over all chunks: `(chunk, row)` pairs in order.
struct Levels {
    starts: Vec<usize>,
    rows: Vec<(u32, u32)>,
}

/// The per-level layout of every term.
struct Layout<'c, 'a> {
    chunks: &'c [GlmmChunk<'a>],
    family: GlmFamily,
    p: usize,
    k_terms: usize,
    levels: Vec<Levels>,
    /// Per term and level, the bit set of the terms whose level is constant on it (with the term itself).
    shared: Vec<Vec<u64>>,
    /// Per term, the term nested in it whose levels group its rows (integrated level by
    /// level inside its levels); the rows of a level are sorted by that term's level.
    sub: Vec<Option<usize>>,
    /// Per term, whether its component is left out (the term is nested in another, whose
    /// component integrates it).
    omitted: Vec<bool>,
    outer: (Vec<f64>, Vec<f64>),
    inner: (Vec<f64>, Vec<f64>),
}

/// A group of rows sharing one level of a sub-term, integrated over that level's effect
/// at an offset `a`: the log-likelihood, its first two derivatives in `a`, the
/// derivative in the sub-term's variance, and per row the posterior means of `r1` and
/// `r2 / 2` (the row's parts of the gradient in `b` and in the row-integrated variances).
struct GroupEval {
    value: f64,
    d1: f64,
    d2: f64,
    grad_sub: f64,
    rows: Vec<(f64, f64)>,
}

/// `(l, l', l'')` of the log-likelihood of a row in `eta`.
#[inline]
fn row_derivatives(family: &GlmFamily, y: f64, n: f64, e: f64) -> (f64, f64, f64) {
    match (family.distribution, family.link) {
        (Distribution::Binomial, Link::Logit) => {
            let mu = logistic(e);
            (family.loglik(y, n, e), y - n * mu, -n * mu * (1.0 - mu))
        }
        (Distribution::Poisson, Link::Log) => {
            let mu = e.exp();
            (y * e - mu, y - mu, -mu)
        }
        (Distribution::Binomial, Link::Probit) => {
            let phi = dnorm(e);
            let lo = pnorm(e).max(1e-300);
            let hi = pnorm(-e).max(1e-300);
            let (l1, l2) = (phi / lo, phi / hi);
            let d1 = y * l1 - (n - y) * l2;
            let d2 = -y * l1 * (e + l1) - (n - y) * l2 * (l2 - e);
            (y * lo.ln() + (n - y) * hi.ln(), d1, d2)
        }
        _ => {
            let d = family.mu_eta(e);
            let mu = family.linkinv(e);
            (
                family.loglik(y, n, e),
                (y - n * mu) * d / family.variance(mu).max(1e-300),
                -n * d * d / family.variance(mu).max(1e-300),
            )
        }
    }
}

/// `log f(y | e; tau)` with `r1 = f'/f` and `r2 = f''/f` (derivatives in `e`) by adaptive
/// Gauss-Hermite quadrature over `v ~ N(0, tau)` (`tau = 0`: the row's own likelihood).
fn row_marginal(family: &GlmFamily, y: f64, n: f64, e: f64, tau: f64, rule: &(Vec<f64>, Vec<f64>)) -> (f64, f64, f64) {
    if tau <= 0.0 {
        let (l, l1, l2) = row_derivatives(family, y, n, e);
        return (l, l1, l2 + l1 * l1);
    }
    // The mode of l(e + v) - v^2 / (2 tau) by Newton's method (concave for these families).
    let mut v = 0.0;
    for _ in 0..60 {
        let (_, l1, l2) = row_derivatives(family, y, n, e + v);
        let g = l1 - v / tau;
        let mut step = g / (1.0 / tau - l2);
        let cap = 3.0 * tau.sqrt() + 1.0;
        step = step.clamp(-cap, cap);
        v += step;
        if step.abs() < 1e-10 * (1.0 + v.abs()) {
            break;
        }
    }
    let (_, _, l2) = row_derivatives(family, y, n, e + v);
    let curv = (1.0 / tau - l2).max(1e-12);
    let sd = 1.0 / curv.sqrt();
    let mut logs = Vec::with_capacity(rule.0.len());
    let mut d1 = Vec::with_capacity(rule.0.len());
    let mut d2 = Vec::with_capacity(rule.0.len());
    for (z, w) in rule.0.iter().zip(&rule.1) {
        let vj = v + sd * z;
        let (l, l1, l2) = row_derivatives(family, y, n, e + vj);
        logs.push(w.ln() + l - 0.5 * vj * vj / tau + 0.5 * z * z);
        d1.push(l1);
        d2.push(l2 + l1 * l1);
    }
    let top = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut total = 0.0;
    let mut r1 = 0.0;
    let mut r2 = 0.0;
    for j in 0..logs.len() {
        let p = (logs[j] - top).exp();
        total += p;
        r1 += p * d1[j];
        r2 += p * d2[j];
    }
    // int exp(h(v)) phi(v; tau) dv with the change of variable v = mode + sd z.
    let log_f = top + total.ln() + sd.ln() - 0.5 * tau.ln();
    (log_f, r1 / total, r2 / total)
}

/// One level's component: the log-likelihood and its gradient in `(b, s2_1..K)`.
struct Component {
    value: f64,
    grad: Vec<f64>,
    /// Per row of the level, its part of the gradient (`b` and the `tau` terms); the
    /// level part (the `S` derivative) is `grad` minus their sum.
    rows: Vec<Vec<f64>>,
}

impl<'c, 'a> Layout<'c, 'a> {
    fn new(chunks: &'c [GlmmChunk<'a>], family: GlmFamily, options: &CompositeOptions) -> Result<Self, FitError> {
        let first = chunks.first().ok_or_else(|| FitError::InvalidInput("no data to fit".into()))?;
        let p = first.data.n_fixed();
        let k_terms = first.data.factors.len();
        if k_terms == 0 || k_terms > 64 {
            return Err(FitError::InvalidInput(format!("{k_terms} random terms: the likelihood fit takes 1 to 64")));
        }
        let n_levels: Vec<usize> = first.data.factors.iter().map(|f| f.n_levels).collect();
        let mut levels = Vec::with_capacity(k_terms);
        let mut shared = Vec::with_capacity(k_terms);
        for k in 0..k_terms {
            let mut starts = vec![0usize; n_levels[k] + 1];
            for chunk in chunks {
                for i in 0..chunk.n_obs() {
                    starts[chunk.data.factors[k].level(i) + 1] += 1;
                }
            }
            for g in 0..n_levels[k] {
                starts[g + 1] += starts[g];
            }
            let mut next = starts.clone();
            let mut rows = vec![(0u32, 0u32); starts[n_levels[k]]];
            for (c, chunk) in chunks.iter().enumerate() {
                for i in 0..chunk.n_obs() {
                    let g = chunk.data.factors[k].level(i);
                    rows[next[g]] = (c as u32, i as u32);
                    next[g] += 1;
                }
            }
            let lv = Levels { starts, rows };
            let sh: Vec<u64> = (0..n_levels[k])
                .map(|g| {
                    let r = &lv.rows[lv.starts[g]..lv.starts[g + 1]];
                    let mut bits = 1u64 << k;
                    if let Some(&(c0, i0)) = r.first() {
                        for l in 0..k_terms {
                            let f0 = chunks[c0 as usize].data.factors[l].level(i0 as usize);
                            if r.iter().all(|&(c, i)| chunks[c as usize].data.factors[l].level(i as usize) == f0) {
                                bits |= 1u64 << l;
                            }
                        }
                    }
                    bits
                })
                .collect();
            levels.push(lv);
            shared.push(sh);
        }
        // nested[a][c]: every level of term a lies in one level of term c.
        let mut nested = vec![vec![false; k_terms]; k_terms];
        for a in 0..k_terms {
            for c in 0..k_terms {
                if a == c {
                    continue;
                }
                let mut map = vec![u32::MAX; n_levels[a]];
                let mut ok = true;
                'rows: for chunk in chunks {
                    for i in 0..chunk.n_obs() {
                        let (la, lc) = (chunk.data.factors[a].level(i), chunk.data.factors[c].level(i) as u32);
                        if map[la] == u32::MAX {
                            map[la] = lc;
                        } else if map[la] != lc {
                            ok = false;
                            break 'rows;
                        }
                    }
                }
                nested[a][c] = ok;
            }
        }
        let omitted: Vec<bool> =
            (0..k_terms).map(|k| (0..k_terms).any(|l| l != k && nested[k][l] && (!nested[l][k] || l < k))).collect();
        let sub: Vec<Option<usize>> = (0..k_terms)
            .map(|k| {
                (0..k_terms)
                    .filter(|&l| l != k && nested[l][k] && !nested[k][l])
                    .filter(|&l| levels[l].starts.windows(2).any(|w| w[1] - w[0] > 1))
                    .min_by_key(|&l| (n_levels[l], l))
            })
            .collect();
        for k in 0..k_terms {
            if let Some(l) = sub[k] {
                let lv = &mut levels[k];
                for g in 0..n_levels[k] {
                    lv.rows[lv.starts[g]..lv.starts[g + 1]]
                        .sort_by_key(|&(c, i)| chunks[c as usize].data.factors[l].level(i as usize));
                }
            }
        }
        Ok(Layout {
            chunks,
            family,
            p,
            k_terms,
            levels,
            shared,
            sub,
            omitted,
            outer: gauss_hermite(options.nodes),
            inner: gauss_hermite(options.inner_nodes),
        })
    }

    /// Whether the criterion is the marginal likelihood: one component left, integrating
    /// every other term exactly (constant on its levels, its sub-term, or one row a level
    /// of the terms nested in its sub-term or in it).
    fn exact(&self) -> bool {
        let kept: Vec<usize> = (0..self.k_terms).filter(|&k| !self.omitted[k]).collect();
        if kept.len() != 1 {
            return false;
        }
        let k = kept[0];
        (0..self.k_terms).all(|l| {
            l == k
                || Some(l) == self.sub[k]
                || self.levels[l].starts.windows(2).all(|w| w[1] - w[0] <= 1)
                || self.shared[k].iter().all(|bits| bits >> l & 1 == 1)
        })
    }

    fn n_levels(&self, k: usize) -> usize {
        self.levels[k].starts.len() - 1
    }

    #[inline]
    fn eta0(&self, c: usize, i: usize, b: &[f64]) -> f64 {
        let chunk = &self.chunks[c];
        let mut e = chunk.offset.map_or(0.0, |o| o[i]);
        for (j, col) in chunk.data.x.iter().enumerate() {
            e += b[j] * col.value(i, 0.0);
        }
        e
    }

    /// One group of rows (`data`: `(y, n, eta0)`) at offset `a`, integrated over an effect
    /// of variance `s2_sub` (none when 0) with the other variances `tau` integrated row by row.
    fn group(&self, data: &[(f64, f64, f64)], a: f64, s2_sub: f64, tau: f64) -> GroupEval {
        let fam = &self.family;
        let rows_at = |c: f64| -> (f64, f64, f64, Vec<(f64, f64)>) {
            let mut v = 0.0;
            let mut d1 = 0.0;
            let mut d2 = 0.0;
            let r = data
                .iter()
                .map(|&(y, n, e)| {
                    let (l, r1, r2) = row_marginal(fam, y, n, e + a + c, tau, &self.inner);
                    v += l;
                    d1 += r1;
                    d2 += r2 - r1 * r1;
                    (r1, 0.5 * r2)
                })
                .collect();
            (v, d1, d2, r)
        };
        if s2_sub <= 0.0 {
            let (value, d1, d2, rows) = rows_at(0.0);
            return GroupEval { value, d1, d2, grad_sub: 0.5 * (d2 + d1 * d1), rows };
        }
        let (c, sd) = self.mode(
            |c| {
                let (_, d1, d2, _) = rows_at(c);
                (d1, d2)
            },
            s2_sub,
        );
        let mut evals = Vec::with_capacity(self.outer.0.len());
        for (z, w) in self.outer.0.iter().zip(&self.outer.1) {
            let cq = c + sd * z;
            let (v, d1, d2, r) = rows_at(cq);
            evals.push((cq, w.ln() + v - 0.5 * cq * cq / s2_sub + 0.5 * z * z, d1, d2, r));
        }
        let top = evals.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = evals.iter().map(|x| (x.1 - top).exp()).sum();
        let value = top + total.ln() + sd.ln() - 0.5 * s2_sub.ln();
        let mut out = GroupEval { value, d1: 0.0, d2: 0.0, grad_sub: 0.0, rows: vec![(0.0, 0.0); data.len()] };
        let mut second = 0.0;
        for (cq, l, d1, d2, r) in &evals {
            let pq = (l - top).exp() / total;
            out.d1 += pq * d1;
            second += pq * (d2 + d1 * d1);
            out.grad_sub += pq * (0.5 * cq * cq / (s2_sub * s2_sub) - 0.5 / s2_sub);
            for (o, x) in out.rows.iter_mut().zip(r) {
                o.0 += pq * x.0;
                o.1 += pq * x.1;
            }
        }
        out.d2 = second - out.d1 * out.d1;
        out
    }

    /// The mode of `h(a) - a^2 / (2 s2)` by Newton's method from 0 (`derivatives(a)`:
    /// `h'` and `h''`, `h` concave) and the sd of the Gaussian approximation there.
    fn mode(&self, derivatives: impl Fn(f64) -> (f64, f64), s2: f64) -> (f64, f64) {
        let mut a = 0.0;
        let cap = 3.0 * s2.sqrt() + 1.0;
        let mut curv = 1.0 / s2;
        for _ in 0..100 {
            let (d1, d2) = derivatives(a);
            curv = (1.0 / s2 - d2).max(1e-12);
            let step = ((d1 - a / s2) / curv).clamp(-cap, cap);
            a += step;
            if step.abs() < 1e-10 * (1.0 + a.abs()) {
                break;
            }
        }
        (a, 1.0 / curv.sqrt())
    }

    /// The component of level `g` of term `k` at `(b, s2)`; with `keep_rows`, the per-row
    /// parts of its gradient.
    fn component(&self, k: usize, g: usize, b: &[f64], s2: &[f64], keep_rows: bool) -> Component {
        let p = self.p;
        let kk = self.k_terms;
        let lv = &self.levels[k];
        let rows = &lv.rows[lv.starts[g]..lv.starts[g + 1]];
        let bits = self.shared[k][g];
        let sub = self.sub[k].filter(|&l| bits >> l & 1 == 0);
        let s_shared: f64 = (0..kk).filter(|&l| bits >> l & 1 == 1).map(|l| s2[l]).sum();
        let tau: f64 = (0..kk).filter(|&l| bits >> l & 1 == 0 && Some(l) != sub).map(|l| s2[l]).sum();
        let s2_sub = sub.map_or(0.0, |l| s2[l]);
        let data: Vec<(f64, f64, f64)> = rows
            .iter()
            .map(|&(c, i)| {
                let chunk = &self.chunks[c as usize];
                let i = i as usize;
                (chunk.data.y[i], chunk.trials.map_or(1.0, |t| t[i]), self.eta0(c as usize, i, b))
            })
            .collect();
        // The groups: runs of rows with one level of the sub-term (or the single rows).
        let mut bounds = vec![0usize];
        if let Some(l) = sub {
            let level = |r: usize| {
                let (c, i) = rows[r];
                self.chunks[c as usize].data.factors[l].level(i as usize)
            };
            for r in 1..rows.len() {
                if level(r) != level(r - 1) {
                    bounds.push(r);
                }
            }
        } else {
            bounds.extend(1..rows.len());
        }
        bounds.push(rows.len());
        let s2_group = if sub.is_some() { s2_sub } else { 0.0 };
        let groups_at = |a: f64| -> Vec<GroupEval> {
            bounds.windows(2).map(|w| self.group(&data[w[0]..w[1]], a, s2_group, tau)).collect()
        };
        // Posterior nodes over `a` with the groups there (a single node at 0 when S = 0).
        let mut nodes: Vec<(f64, f64, Vec<GroupEval>)> = Vec::new();
        let mut value;
        let mut grad_s = 0.0;
        if s_shared <= 0.0 {
            let gs = groups_at(0.0);
            value = gs.iter().map(|x| x.value).sum();
            let d1: f64 = gs.iter().map(|x| x.d1).sum();
            let d2: f64 = gs.iter().map(|x| x.d2).sum();
            // d/dS log E F(a) at S = 0 is F''(0) / (2 F(0)).
            grad_s = 0.5 * (d2 + d1 * d1);
            nodes.push((0.0, 1.0, gs));
        } else {
            let (a, sd) = self.mode(
                |a| {
                    let gs = groups_at(a);
                    (gs.iter().map(|x| x.d1).sum(), gs.iter().map(|x| x.d2).sum())
                },
                s_shared,
            );
            let mut logs = Vec::with_capacity(self.outer.0.len());
            for (z, w) in self.outer.0.iter().zip(&self.outer.1) {
                let aq = a + sd * z;
                let gs = groups_at(aq);
                let v: f64 = gs.iter().map(|x| x.value).sum();
                logs.push((aq, w.ln() + v - 0.5 * aq * aq / s_shared + 0.5 * z * z, gs));
            }
            let top = logs.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = logs.iter().map(|x| (x.1 - top).exp()).sum();
            value = top + total.ln() + sd.ln() - 0.5 * s_shared.ln();
            for (aq, l, gs) in logs {
                let pq = (l - top).exp() / total;
                grad_s += pq * (0.5 * aq * aq / (s_shared * s_shared) - 0.5 / s_shared);
                nodes.push((aq, pq, gs));
            }
        }
        if !value.is_finite() {
            value = f64::NEG_INFINITY;
        }
        let mut grad = vec![0.0; p + kk];
        let mut row_parts = if keep_rows { vec![vec![0.0; p + kk]; rows.len()] } else { Vec::new() };
        let mut grad_sub = 0.0;
        let mut post = vec![(0.0, 0.0); rows.len()];
        for (_, pq, gs) in &nodes {
            for (h, ge) in gs.iter().enumerate() {
                grad_sub += pq * ge.grad_sub;
                for (r, x) in ge.rows.iter().enumerate() {
                    let o = &mut post[bounds[h] + r];
                    o.0 += pq * x.0;
                    o.1 += pq * x.1;
                }
            }
        }
        for (r, &(c, i)) in rows.iter().enumerate() {
            let (g1, gt) = post[r];
            let chunk = &self.chunks[c as usize];
            for j in 0..p {
                let x = chunk.data.x[j].value(i as usize, 0.0);
                grad[j] += g1 * x;
                if keep_rows {
                    row_parts[r][j] = g1 * x;
                }
            }
            for l in 0..kk {
                if bits >> l & 1 == 0 && Some(l) != sub {
                    grad[p + l] += gt;
                    if keep_rows {
                        row_parts[r][p + l] = gt;
                    }
                }
            }
        }
        for l in 0..kk {
            if bits >> l & 1 == 1 {
                grad[p + l] += grad_s;
            }
        }
        if let Some(l) = sub {
            grad[p + l] += grad_sub;
        }
        Component { value, grad, rows: row_parts }
    }

    /// `sum_k sum_g log L_kg` and its gradient in `(b, s2)`.
    fn evaluate(&self, b: &[f64], s2: &[f64], pool: &rayon::ThreadPool) -> (f64, Vec<f64>) {
        let dim = self.p + self.k_terms;
        let mut value = 0.0;
        let mut grad = vec![0.0; dim];
        for k in (0..self.k_terms).filter(|&k| !self.omitted[k]) {
            let parts: Vec<(f64, Vec<f64>)> = pool.install(|| {
                (0..self.n_levels(k))
                    .into_par_iter()
                    .map(|g| {
                        let c = self.component(k, g, b, s2, false);
                        (c.value, c.grad)
                    })
                    .collect()
            });
            for (v, gr) in parts {
                value += v;
                grad.iter_mut().zip(&gr).for_each(|(a, x)| *a += x);
            }
        }
        (value, grad)
    }

    /// The meat `V = sum_k V_k - (K - 1) V_rows` of the sandwich: the per-row parts of the
    /// level scores summed by every term's levels (each level part in its own term's
    /// clusters only).
    fn meat(&self, b: &[f64], s2: &[f64], pool: &rayon::ThreadPool) -> Mat<f64> {
        let dim = self.p + self.k_terms;
        let kk = self.k_terms;
        let mut row_score: Vec<Vec<Vec<f64>>> = self.chunks.iter().map(|c| vec![vec![0.0; dim]; c.n_obs()]).collect();
        let mut level_part: Vec<Vec<Vec<f64>>> = Vec::with_capacity(kk);
        for k in 0..kk {
            if self.omitted[k] {
                level_part.push(Vec::new());
                continue;
            }
            let comps: Vec<Component> = pool
                .install(|| (0..self.n_levels(k)).into_par_iter().map(|g| self.component(k, g, b, s2, true)).collect());
            let lv = &self.levels[k];
            let mut parts = Vec::with_capacity(comps.len());
            for (g, comp) in comps.into_iter().enumerate() {
                let mut rest = comp.grad.clone();
                for (r, &(c, i)) in lv.rows[lv.starts[g]..lv.starts[g + 1]].iter().enumerate() {
                    let target = &mut row_score[c as usize][i as usize];
                    for j in 0..dim {
                        target[j] += comp.rows[r][j];
                        rest[j] -= comp.rows[r][j];
                    }
                }
                parts.push(rest);
            }
            level_part.push(parts);
        }
        let mut v = Mat::<f64>::zeros(dim, dim);
        let add = |v: &mut Mat<f64>, s: &[f64], scale: f64| {
            for a in 0..dim {
                for c in 0..dim {
                    v[(a, c)] += scale * s[a] * s[c];
                }
            }
        };
        for k in 0..kk {
            let lv = &self.levels[k];
            for (g, part) in level_part[k].iter().enumerate() {
                let mut s = part.clone();
                for &(c, i) in &lv.rows[lv.starts[g]..lv.starts[g + 1]] {
                    s.iter_mut().zip(&row_score[c as usize][i as usize]).for_each(|(a, x)| *a += x);
                }
                add(&mut v, &s, 1.0);
            }
        }
        let used = self.omitted.iter().filter(|o| !**o).count();
        if used > 1 {
            for rows in &row_score {
                for s in rows {
                    add(&mut v, s, -((used - 1) as f64));
                }
            }
        }
        v
    }
}

/// Whether the per-level likelihoods of these data are the marginal likelihood itself
/// (one term, or nested terms with observation-level ones), not a composite likelihood.
pub fn is_marginal_likelihood(chunks: &[GlmmChunk<'_>], family: GlmFamily) -> Result<bool, FitError> {
    Ok(Layout::new(chunks, family, &CompositeOptions::default())?.exact())
}

/// The composite (per-level marginal) log-likelihood and its gradient in `(b, s2)` at a
/// parameter value (for tests and diagnostics).
pub fn composite_loglik(
    chunks: &[GlmmChunk<'_>],
    family: GlmFamily,
    b: &[f64],
    s2: &[f64],
    options: &CompositeOptions,
    pool: &rayon::ThreadPool,
) -> Result<(f64, Vec<f64>), FitError> {
    let layout = Layout::new(chunks, family, options)?;
    Ok(layout.evaluate(b, s2, pool))
}

/// Maximises the composite likelihood from `(b, s2)` (e.g. the moment estimates) by
/// Newton's method in `(b, log s2_active)` with the Hessian differenced from the score
/// and backtracking; a variance whose score at 0 is not positive is a boundary fit.
pub fn fit_composite(
    chunks: &[GlmmChunk<'_>],
    family: GlmFamily,
    b_start: &[f64],
    s2_start: &[f64],
    options: &CompositeOptions,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<CompositeFit, FitError> {
    let layout = Layout::new(chunks, family, options)?;
    let p = layout.p;
    let kk = layout.k_terms;
    if b_start.len() != p || s2_start.len() != kk {
        return Err(FitError::InvalidInput("starting values of the wrong length".into()));
    }
    let mut b = b_start.to_vec();
    let mut s2: Vec<f64> = s2_start.iter().map(|&v| if v.is_finite() { v.max(0.04) } else { 0.5 }).collect();
    let mut active = vec![true; kk];
    let mut iterations = 0;
    // Parameters: b, then log s2 of the active terms.
    let pack = |b: &[f64], s2: &[f64], active: &[bool]| -> Vec<f64> {
        let mut t = b.to_vec();
        t.extend((0..kk).filter(|&k| active[k]).map(|k| s2[k].ln()));
        t
    };
    let unpack = |t: &[f64], active: &[bool]| -> (Vec<f64>, Vec<f64>) {
        let b = t[..p].to_vec();
        let mut s2 = vec![0.0; kk];
        let mut at = p;
        for k in 0..kk {
            if active[k] {
                s2[k] = t[at].exp();
                at += 1;
            }
        }
        (b, s2)
    };
    let value_grad = |t: &[f64], active: &[bool]| -> (f64, Vec<f64>) {
        let (b, s2) = unpack(t, active);
        let (v, g) = layout.evaluate(&b, &s2, pool);
        let mut gt = g[..p].to_vec();
        gt.extend((0..kk).filter(|&k| active[k]).map(|k| g[p + k] * s2[k]));
        (v, gt)
    };
    let hessian = |t: &[f64], active: &[bool]| -> Mat<f64> {
        let d = t.len();
        let mut h = Mat::<f64>::zeros(d, d);
        for j in 0..d {
            let step = 1e-5 * (1.0 + t[j].abs());
            let mut tp = t.to_vec();
            tp[j] += step;
            let gp = value_grad(&tp, active).1;
            tp[j] -= 2.0 * step;
            let gm = value_grad(&tp, active).1;
            for a in 0..d {
                h[(a, j)] = (gp[a] - gm[a]) / (2.0 * step);
            }
        }
        for a in 0..d {
            for c in 0..a {
                let m = 0.5 * (h[(a, c)] + h[(c, a)]);
                h[(a, c)] = m;
                h[(c, a)] = m;
            }
        }
        h
    };
    let mut converged = false;
    'outer: for _round in 0..(kk + 2) {
        let mut t = pack(&b, &s2, &active);
        let (mut value, mut grad) = value_grad(&t, &active);
        if !value.is_finite() {
            return Err(FitError::NotConverged("the likelihood is not finite at the starting values".into()));
        }
        let mut dropped = None;
        for _ in 0..options.max_iterations {
            if !keep_going() {
                return Err(FitError::Interrupted);
            }
            iterations += 1;
            let h = hessian(&t, &active);
            let d = t.len();
            // Newton's step on -H, regularized until it is an ascent direction.
            let mut lambda = 0.0;
            let mut step = Vec::new();
            for _ in 0..30 {
                let mut m = Mat::<f64>::zeros(d, d);
                for a in 0..d {
                    for c in 0..d {
                        m[(a, c)] = -h[(a, c)];
                    }
                    m[(a, a)] += lambda * (1.0 + h[(a, a)].abs());
                }
                step = solve(&m, &grad);
                let ascent: f64 = step.iter().zip(&grad).map(|(s, g)| s * g).sum();
                if step.iter().all(|s| s.is_finite()) && ascent > 0.0 {
                    break;
                }
                lambda = if lambda == 0.0 { 1e-4 } else { lambda * 10.0 };
            }
            // Converged when Newton's predicted gain (the decrement) is at rounding level:
            // a small step alone is not enough (a noisy Hessian can make it small anywhere).
            let decrement: f64 = step.iter().zip(&grad).map(|(s, g)| s * g).sum();
            if decrement <= 1e-10 * (1.0 + value.abs()) {
                converged = true;
                break;
            }
            // Steps in log s2 at most 2 (a factor e^2 on a variance).
            let biggest = step[p..].iter().fold(0.0f64, |m, s| m.max(s.abs()));
            if biggest > 2.0 {
                step.iter_mut().for_each(|s| *s *= 2.0 / biggest);
            }
            let mut scale = 1.0;
            let mut moved = false;
            for _ in 0..40 {
                let trial: Vec<f64> = t.iter().zip(&step).map(|(a, s)| a + scale * s).collect();
                let (v, g) = value_grad(&trial, &active);
                if v.is_finite() && v >= value - 1e-12 * value.abs() {
                    t = trial;
                    value = v;
                    grad = g;
                    moved = true;
                    break;
                }
                scale *= 0.5;
            }
            let size = step.iter().map(|s| (s * scale).abs()).fold(0.0, f64::max);
            // A variance on its way to 0: take it to the boundary.
            let mut at = p;
            for k in 0..kk {
                if active[k] {
                    if t[at] < -14.0 && grad[at] < 1e-6 {
                        dropped = Some(k);
                    }
                    at += 1;
                }
            }
            if dropped.is_some() {
                break;
            }
            if !moved || size < 1e-12 {
                // No better point along Newton's direction although it predicts a gain: a
                // stall, reported, never returned as an estimate.
                return Err(FitError::NotConverged(format!(
                    "the likelihood fit stalled before its optimum (no better point along Newton's step; \
                     predicted gain {decrement:.3e}): use method = \"moments\""
                )));
            }
        }
        let (nb, ns) = unpack(&t, &active);
        b = nb;
        s2 = ns;
        if let Some(k) = dropped {
            active[k] = false;
            s2[k] = 0.0;
            converged = false;
            continue;
        }
        // Boundary terms whose score at 0 is positive come back.
        let (_, g) = layout.evaluate(&b, &s2, pool);
        let mut revived = false;
        for k in 0..kk {
            if !active[k] && g[p + k] > 1e-8 {
                active[k] = true;
                s2[k] = 0.01;
                revived = true;
            }
        }
        if !revived && converged {
            break 'outer;
        }
    }
    if !converged {
        return Err(FitError::NotConverged(
            "the likelihood fit (method = \"efficient\") did not converge: use method = \"moments\"".into(),
        ));
    }
    let (loglik, _) = layout.evaluate(&b, &s2, pool);
    // Covariances over (b, s2_active), by the Hessian in s2 (not log s2).
    let idx: Vec<usize> = (0..p).chain((0..kk).filter(|&k| active[k]).map(|k| p + k)).collect();
    let d = idx.len();
    let grad_at = |theta: &[f64]| -> Vec<f64> {
        let (v, g) = layout.evaluate(&theta[..p], &theta[p..], pool);
        let _ = v;
        idx.iter().map(|&j| g[j]).collect()
    };
    let mut theta: Vec<f64> = b.iter().chain(&s2).cloned().collect();
    let mut h = Mat::<f64>::zeros(d, d);
    for (c, &j) in idx.iter().enumerate() {
        let step = 1e-5 * (1.0 + theta[j].abs());
        let keep = theta[j];
        theta[j] = keep + step;
        let gp = grad_at(&theta);
        theta[j] = keep - step;
        let gm = grad_at(&theta);
        theta[j] = keep;
        for a in 0..d {
            h[(a, c)] = (gp[a] - gm[a]) / (2.0 * step);
        }
    }
    let mut neg = Mat::<f64>::zeros(d, d);
    for a in 0..d {
        for c in 0..d {
            neg[(a, c)] = -0.5 * (h[(a, c)] + h[(c, a)]);
        }
    }
    let inv = inverse(&neg)?;
    let meat_full = layout.meat(&b, &s2, pool);
    let mut meat = Mat::<f64>::zeros(d, d);
    for a in 0..d {
        for c in 0..d {
            meat[(a, c)] = meat_full[(idx[a], idx[c])];
        }
    }
    let sand = &inv * &meat * &inv;
    let dim = p + kk;
    let expand = |m: &Mat<f64>| -> Mat<f64> {
        let mut out = Mat::<f64>::zeros(dim, dim);
        for a in 0..d {
            for c in 0..d {
                out[(idx[a], idx[c])] = m[(a, c)];
            }
        }
        out
    };
    Ok(CompositeFit {
        coef: b,
        variances: s2,
        at_boundary: active.iter().map(|a| !a).collect(),
        loglik,
        vcov_model: expand(&inv),
        vcov_sandwich: expand(&sand),
        exact: layout.exact(),
        iterations,
    })
}

/// The inverse of a symmetric positive definite matrix, or an error.
fn inverse(a: &Mat<f64>) -> Result<Mat<f64>, FitError> {
    let d = a.nrows();
    let mut out = Mat::<f64>::zeros(d, d);
    for c in 0..d {
        let mut e = vec![0.0; d];
        e[c] = 1.0;
        let x = solve(a, &e);
        if x.iter().any(|v| !v.is_finite()) {
            return Err(FitError::NotConverged("the information matrix of the likelihood fit is singular".into()));
        }
        for r in 0..d {
            out[(r, c)] = x[r];
        }
    }
    Ok(out)
}
