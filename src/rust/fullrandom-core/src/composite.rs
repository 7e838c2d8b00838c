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
//! terms, integrated row by row. One other term, the sub-term, is integrated level by
//! level inside `g` instead: a term nested in `k`, or else the crossed term whose levels
//! repeat most inside `k`'s levels (repeated cells). The estimates maximise
//! `sum_k sum_g log L_kg`. With one term this is the marginal likelihood (what
//! `glmer(nAGQ > 1)` maximises); each component is the exact marginal likelihood of its
//! rows when every term other than the sub-term and those constant on `g` has distinct
//! levels on the rows of `g` (two crossed terms, with or without repeated cells; nested
//! terms; an observation-level term); otherwise (a third crossed term with repeated
//! cells) the component treats rows that share its levels as independent given `a`, an
//! approximation. The sum over terms is a composite likelihood (Lindsay 1988; Varin,
//! Reid and Firth 2011): its score is unbiased when the components are, so the
//! estimates are consistent, and their covariance is the sandwich `H^-1 V H^-1`.
//!
//! Every integral is adaptive: placed at the mode of its integrand (Newton's method
//! safeguarded by bisection) and scaled by the curvature there. The outer one (over the
//! level's effect) is the trapezoidal rule after `a = mode + sd sinh(t)`, nodes out to
//! where the integrand is negligible (accurate to about 1e-6 where Gauss-Hermite with 25
//! nodes, as glmer's `nAGQ = 25`, errs by 3e-3: a Bernoulli level with no successes and a
//! large variance has a Gaussian tail on one side and a cliff on the other); those over a
//! sub-term's levels and per row are Gauss-Hermite. With the nodes held where they were placed, each quadrature
//! is a smooth function of the parameters whose gradient and Hessian are exact sums over
//! the same nodes (posterior means of the node's gradient, and Louis' identity: the
//! posterior mean of the node's Hessian plus the posterior covariance of its gradient),
//! nested through the three levels of integration. Newton's method on that Hessian, with
//! a line search at nodes held fixed, maximises the likelihood (see [`fit_composite`]).
//!
//! Everything is a sum over levels computed level by level, in a fixed order, from the
//! rows of every chunk in turn: the fit does not depend on the number of threads or on
//! how the rows are split into chunks (of the same row order).

use crate::dense::inverse;
use crate::error::FitError;
use crate::family::{gauss_hermite, GlmFamily};
use crate::glmm::GlmmChunk;
use faer::Mat;
use rayon::prelude::*;

/// Settings of [`fit_composite`].
#[derive(Debug, Clone, Copy)]
pub struct CompositeOptions {
    /// Step of the outer (per level) quadrature: the trapezoidal rule in `t`, `a = centre
    /// + sd sinh(t)`.
    pub step: f64,
    /// Nodes of the adaptive Gauss-Hermite quadrature over a sub-term's levels.
    pub nodes: usize,
    /// Nodes of the inner (per row) adaptive quadrature over the other terms.
    pub inner_nodes: usize,
    pub max_iterations: usize,
}

impl Default for CompositeOptions {
    fn default() -> Self {
        CompositeOptions { step: DEFAULT_STEP, nodes: 15, inner_nodes: 11, max_iterations: 100 }
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
    /// The outer and inner Gauss-Hermite rules, `(z, log w + z^2 / 2)`, centre first.
    outer_rule: Vec<(f64, f64)>,
    inner: Vec<(f64, f64)>,
    /// The step of the outer (per level) quadrature, in `t`.
    step: f64,
    structure: Structure,
}

/// Indices of a component's derivatives after the `p` fixed effects: the variance shared
/// by the level's rows (`S`), the sub-term's variance (`u`) and the variance integrated
/// row by row (`tau`).
const VAR_S: usize = 0;
const VAR_U: usize = 1;
const VAR_TAU: usize = 2;
const N_VAR: usize = 3;

/// The outer quadrature is the trapezoidal rule after the change of variable
/// `a = centre + sd sinh(t)` (`centre`, `sd`: the mode of the level's integrand and the sd
/// of its Gaussian approximation, as for adaptive Gauss-Hermite), with this step in `t`:
/// exact to about 1e-6 of each level's likelihood where Gauss-Hermite with 25 nodes (as
/// `glmer(nAGQ = 25)`) errs by 3e-3 (a level with no successes and a large variance, whose
/// integrand has a Gaussian tail on one side and a cliff on the other).
const DEFAULT_STEP: f64 = 0.15;
/// Nodes on each side until the integrand falls this far (in log) below its largest value.
const RANGE_DROP: f64 = 40.0;
/// At most this many nodes on each side (`t` up to 6, `sinh(6) = 202` sds).
const MAX_NODE: i32 = 40;
const HALF_LOG_2PI: f64 = 0.918_938_533_204_672_8;

/// Where a level's outer quadrature is placed: centre and scale, and the range of nodes
/// (`lo..=hi`, node `j` at `t = j step`).
#[derive(Debug, Clone, Copy, Default)]
struct LevelPlan {
    centre: f64,
    sd: f64,
    lo: i32,
    hi: i32,
}

/// Levels evaluated together (in parallel blocks, summed in block order: the sums do not
/// depend on the number of threads).
const BLOCK: usize = 64;

/// A row's log-likelihood integrated over `v ~ N(0, tau)`, `L(e; tau)`, with its
/// derivatives in `e` and `tau`.
#[derive(Debug, Clone, Copy, Default)]
struct RowD {
    l: f64,
    le: f64,
    lee: f64,
    lt: f64,
    let_: f64,
    ltt: f64,
}

impl RowD {
    fn add_scaled(&mut self, w: f64, o: &RowD) {
        self.le += w * o.le;
        self.lee += w * o.lee;
        self.lt += w * o.lt;
        self.let_ += w * o.let_;
        self.ltt += w * o.ltt;
    }

    fn scale(&mut self, s: f64) {
        self.le *= s;
        self.lee *= s;
        self.lt *= s;
        self.let_ *= s;
        self.ltt *= s;
    }
}

/// Posterior weights of quadrature nodes accumulated node by node: node `q` weighs
/// `exp(lw_q - top)`, with `top` the largest log weight so far (earlier sums are rescaled
/// when a node beats it).
struct Posterior {
    top: f64,
    total: f64,
}

impl Posterior {
    fn new() -> Self {
        Posterior { top: f64::NEG_INFINITY, total: 0.0 }
    }

    /// The weight of a node of log weight `lw` and the factor by which the sums so far
    /// must be rescaled (1 when `lw` is not a new top).
    fn add(&mut self, lw: f64) -> (f64, f64) {
        if !(lw > f64::NEG_INFINITY) {
            return (0.0, 1.0);
        }
        if lw > self.top {
            let rescale = if self.top == f64::NEG_INFINITY { 0.0 } else { (self.top - lw).exp() };
            self.total = self.total * rescale + 1.0;
            self.top = lw;
            (1.0, rescale)
        } else {
            let w = (lw - self.top).exp();
            self.total += w;
            (w, 1.0)
        }
    }

    /// `log sum_q exp(lw_q)`.
    fn log_total(&self) -> f64 {
        if self.total > 0.0 {
            self.top + self.total.ln()
        } else {
            f64::NEG_INFINITY
        }
    }
}

/// Gauss-Hermite nodes ordered by distance from the centre (so that the largest
/// posterior weight comes first, normally): `(z, log w + z^2 / 2)`.
fn ordered_rule(rule: &(Vec<f64>, Vec<f64>)) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = rule.0.iter().zip(&rule.1).map(|(&z, &w)| (z, w.ln() + 0.5 * z * z)).collect();
    out.sort_by(|a, b| a.0.abs().total_cmp(&b.0.abs()).then(a.0.total_cmp(&b.0)));
    out
}

/// The maximum of a concave function from its derivatives `(g, g')` (`g` decreasing) by
/// Newton's method from 0, safeguarded: steps at most `cap`, and a bisection of the
/// bracket (the points where `g` was seen positive and negative) whenever a step leaves
/// it. (Newton alone can cycle: from 0 a long step onto the flat side of a logistic
/// likelihood, whose tiny curvature sends it back.) Returns the maximiser.
fn concave_max(mut derivatives: impl FnMut(f64) -> (f64, f64), cap: f64) -> f64 {
    let (mut lo, mut hi) = (f64::NEG_INFINITY, f64::INFINITY);
    let mut x = 0.0;
    for _ in 0..200 {
        let (g, dg) = derivatives(x);
        if !g.is_finite() {
            break;
        }
        if g > 0.0 {
            lo = x;
        } else if g < 0.0 {
            hi = x;
        } else {
            break;
        }
        let mut next = x + (g / (-dg).max(1e-12)).clamp(-cap, cap);
        if !(next > lo && next < hi) {
            next = if lo.is_finite() && hi.is_finite() { 0.5 * (lo + hi) } else { x + cap * g.signum() };
        }
        let step = next - x;
        x = next;
        if step.abs() < 1e-10 * (1.0 + x.abs()) || hi - lo < 1e-10 * (1.0 + x.abs()) {
            break;
        }
    }
    x
}

/// The mode of `h(x) - x^2 / (2 s2)` (`derivatives(x)`: `h'` and `h''`, `h` concave) and
/// the sd of the Gaussian approximation there.
fn mode(mut derivatives: impl FnMut(f64) -> (f64, f64), s2: f64) -> (f64, f64) {
    let a = concave_max(
        |a| {
            let (d1, d2) = derivatives(a);
            (d1 - a / s2, d2 - 1.0 / s2)
        },
        3.0 * s2.sqrt() + 1.0,
    );
    let (_, d2) = derivatives(a);
    let curv = 1.0 / s2 - d2;
    let curv = if curv.is_finite() && curv > 0.0 { curv } else { 1.0 / s2 };
    (a, 1.0 / curv.sqrt())
}

/// `L(e; tau) = log int f(y | e + v) phi(v; tau) dv` and its derivatives by adaptive
/// Gauss-Hermite quadrature whose nodes are placed for `(e_anchor, tau_anchor)` (the
/// mode and curvature there) and held there: the value at `(e, tau)` is a smooth function
/// of `(e, tau)` whose derivatives are exactly those returned (posterior moments over the
/// nodes). `tau = 0`: the row's own likelihood, with `d/dtau` by the heat equation.
#[allow(clippy::too_many_arguments)]
fn row_marginal(
    family: &GlmFamily,
    y: f64,
    n: f64,
    e_anchor: f64,
    e: f64,
    tau_anchor: f64,
    tau: f64,
    rule: &[(f64, f64)],
) -> RowD {
    if tau <= 0.0 || tau_anchor <= 0.0 {
        let (l, l1, l2) = family.row_derivatives(y, n, e);
        return RowD { l, le: l1, lee: l2, lt: 0.5 * (l2 + l1 * l1), let_: 0.0, ltt: 0.0 };
    }
    // The mode of l(e + v) - v^2 / (2 tau) at the anchor (concave for these families).
    let (v, sd) = mode(|v| family.row_slopes(y, n, e_anchor + v), tau_anchor);
    let mut post = Posterior::new();
    let (mut s1, mut s2, mut sk, mut s1k, mut skk) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(z, lw0) in rule {
        let vj = v + sd * z;
        let (l, l1, l2) = family.row_derivatives(y, n, e + vj);
        let (w, rescale) = post.add(lw0 + l - 0.5 * vj * vj / tau);
        if rescale != 1.0 {
            s1 *= rescale;
            s2 *= rescale;
            sk *= rescale;
            s1k *= rescale;
            skk *= rescale;
        }
        let k = 0.5 * vj * vj / (tau * tau) - 0.5 / tau;
        let dk = -vj * vj / (tau * tau * tau) + 0.5 / (tau * tau);
        s1 += w * l1;
        s2 += w * (l2 + l1 * l1);
        sk += w * k;
        s1k += w * l1 * k;
        skk += w * (dk + k * k);
    }
    let t = post.total;
    let (le, lt) = (s1 / t, sk / t);
    // int exp(h(v)) phi(v; tau) dv with the change of variable v = mode + sd z.
    RowD {
        l: post.log_total() + sd.ln() - 0.5 * tau.ln(),
        le,
        lee: s2 / t - le * le,
        lt,
        let_: s1k / t - le * lt,
        ltt: skk / t - lt * lt,
    }
}

/// A row of a level: response, trials, and the linear predictor (without the random
/// effects) at the anchor and at the parameters evaluated.
#[derive(Debug, Clone, Copy)]
struct RowIn {
    y: f64,
    n: f64,
    e_anchor: f64,
    e: f64,
}

/// Parameter values: fixed effects and variances.
#[derive(Debug, Clone, Copy)]
struct Point<'p> {
    b: &'p [f64],
    s2: &'p [f64],
}

/// The variances a component needs (at the anchor and at the point evaluated).
#[derive(Debug, Clone, Copy)]
struct Variances {
    shared: (f64, f64),
    sub: (f64, f64),
    tau: (f64, f64),
}

/// What a group of rows (one level of the sub-term, or one row) returns at an offset:
/// the log-likelihood, its derivatives in the offset, and `d/du`.
#[derive(Debug, Clone, Copy, Default)]
struct GroupOut {
    value: f64,
    da: f64,
    daa: f64,
    gu: f64,
}

/// One level's component: the log-likelihood and its derivatives in `(b, S, u, tau)`.
struct Component {
    value: f64,
    grad: Vec<f64>,
    /// `d x d` (`d = p + 3`), by rows, when asked for.
    hess: Vec<f64>,
    /// Per row of the level, its parts of the gradient: `d/d eta` (times `x_i` for `b`)
    /// and `d/d tau`, when asked for.
    rows: Vec<(f64, f64)>,
    /// The placement of the level's quadrature (at the anchor).
    plan: LevelPlan,
}

/// The sum of the components over all levels, in `(b, s2_1..K)`.
struct Evaluation {
    value: f64,
    grad: Vec<f64>,
    /// `(p + K)^2` by rows, when asked for.
    hess: Vec<f64>,
}
/// How the terms relate, from one pass over the rows per pair of terms (no per-level row
/// lists): what [`is_marginal_likelihood`] needs, and the layout's plan of integration.
struct Structure {
    n_levels: Vec<usize>,
    /// Rows per level of every term.
    sizes: Vec<Vec<usize>>,
    /// Per term and level, the bit set of the terms whose level is constant on it (with the term itself).
    shared: Vec<Vec<u64>>,
    /// Per term, the term nested in it whose levels group its rows.
    sub: Vec<Option<usize>>,
    /// Per term, whether its component is left out (integrated by a term it is nested in).
    omitted: Vec<bool>,
}

impl Structure {
    fn new(chunks: &[GlmmChunk<'_>]) -> Result<Self, FitError> {
        let first = chunks.first().ok_or_else(|| FitError::InvalidInput("no data to fit".into()))?;
        let k_terms = first.data.factors.len();
        if k_terms == 0 || k_terms > 64 {
            return Err(FitError::InvalidInput(format!("{k_terms} random terms: the likelihood fit takes 1 to 64")));
        }
        let n_levels: Vec<usize> = first.data.factors.iter().map(|f| f.n_levels).collect();
        let mut sizes: Vec<Vec<usize>> = n_levels.iter().map(|&n| vec![0usize; n]).collect();
        for chunk in chunks {
            for (k, s) in sizes.iter_mut().enumerate() {
                for i in 0..chunk.n_obs() {
                    s[chunk.data.factors[k].level(i)] += 1;
                }
            }
        }
        // constant[k][l][g]: the level of term l is the same on every row of level g of
        // term k; nested[a][c]: every level of a lies in one level of c (a's levels all
        // constant in c).
        let mut shared: Vec<Vec<u64>> = (0..k_terms).map(|k| vec![1u64 << k; n_levels[k]]).collect();
        let mut nested = vec![vec![false; k_terms]; k_terms];
        for k in 0..k_terms {
            for l in 0..k_terms {
                if l == k {
                    continue;
                }
                let mut seen = vec![u32::MAX; n_levels[k]];
                let mut constant = vec![true; n_levels[k]];
                for chunk in chunks {
                    for i in 0..chunk.n_obs() {
                        let (g, lv) = (chunk.data.factors[k].level(i), chunk.data.factors[l].level(i) as u32);
                        if seen[g] == u32::MAX {
                            seen[g] = lv;
                        } else if seen[g] != lv {
                            constant[g] = false;
                        }
                    }
                }
                nested[k][l] = constant.iter().all(|&c| c);
                for g in 0..n_levels[k] {
                    if constant[g] && seen[g] != u32::MAX {
                        shared[k][g] |= 1u64 << l;
                    }
                }
            }
        }
        let omitted: Vec<bool> =
            (0..k_terms).map(|k| (0..k_terms).any(|l| l != k && nested[k][l] && (!nested[l][k] || l < k))).collect();
        let sub: Vec<Option<usize>> = (0..k_terms)
            .map(|k| {
                (0..k_terms)
                    .filter(|&l| l != k && nested[l][k] && !nested[k][l])
                    .filter(|&l| sizes[l].iter().any(|&n| n > 1))
                    .min_by_key(|&l| (n_levels[l], l))
            })
            .collect();
        Ok(Structure { n_levels, sizes, shared, sub, omitted })
    }

    /// Whether the criterion is the marginal likelihood: one component left, integrating
    /// every other term exactly (constant on its levels, its sub-term, or one row a level
    /// of the terms nested in its sub-term or in it).
    fn exact(&self) -> bool {
        let k_terms = self.n_levels.len();
        let kept: Vec<usize> = (0..k_terms).filter(|&k| !self.omitted[k]).collect();
        if kept.len() != 1 {
            return false;
        }
        let k = kept[0];
        (0..k_terms).all(|l| {
            l == k
                || Some(l) == self.sub[k]
                || self.sizes[l].iter().all(|&n| n <= 1)
                || self.shared[k].iter().all(|bits| bits >> l & 1 == 1)
        })
    }
}

/// The crossed term whose levels repeat most within the levels of term `k` (rows of a
/// level of `k` that share a cell with an earlier row), if any repeat: integrated cell by
/// cell inside `k`'s levels (as a nested sub-term), each component is then the exact
/// likelihood of its rows with two crossed terms, where a row-by-row integral would treat
/// the rows of a cell as independent. `rows` lists the rows of `k`'s levels.
fn repeated_cells_term(
    structure: &Structure,
    chunks: &[GlmmChunk<'_>],
    k: usize,
    starts: &[usize],
    rows: &[(u32, u32)],
) -> Option<usize> {
    let k_terms = structure.n_levels.len();
    let nested_in = |a: usize, c: usize| structure.shared[a].iter().all(|bits| bits >> c & 1 == 1);
    let mut best: Option<(usize, usize)> = None;
    let mut cells: Vec<usize> = Vec::new();
    for l in (0..k_terms).filter(|&l| l != k && !nested_in(k, l) && !nested_in(l, k)) {
        let mut repeats = 0usize;
        for w in starts.windows(2) {
            cells.clear();
            cells.extend(rows[w[0]..w[1]].iter().map(|&(c, i)| chunks[c as usize].data.factors[l].level(i as usize)));
            cells.sort_unstable();
            repeats += cells.windows(2).filter(|pair| pair[0] == pair[1]).count();
        }
        if repeats > 0 && best.is_none_or(|(most, _)| repeats > most) {
            best = Some((repeats, l));
        }
    }
    best.map(|(_, l)| l)
}

impl<'c, 'a> Layout<'c, 'a> {
    fn new(chunks: &'c [GlmmChunk<'a>], family: GlmFamily, options: &CompositeOptions) -> Result<Self, FitError> {
        let structure = Structure::new(chunks)?;
        let p = chunks[0].data.n_fixed();
        let k_terms = structure.n_levels.len();
        let n_levels = &structure.n_levels;
        let mut levels = Vec::with_capacity(k_terms);
        let mut sub = structure.sub.clone();
        for k in 0..k_terms {
            let mut starts = vec![0usize; n_levels[k] + 1];
            for (g, &size) in structure.sizes[k].iter().enumerate() {
                starts[g + 1] = starts[g] + size;
            }
            let mut next = starts.clone();
            let mut rows = crate::error::try_filled(starts[n_levels[k]], (0u32, 0u32), "the rows of every level")?;
            for (c, chunk) in chunks.iter().enumerate() {
                for i in 0..chunk.n_obs() {
                    let g = chunk.data.factors[k].level(i);
                    rows[next[g]] = (c as u32, i as u32);
                    next[g] += 1;
                }
            }
            if sub[k].is_none() && !structure.omitted[k] {
                sub[k] = repeated_cells_term(&structure, chunks, k, &starts, &rows);
            }
            if let Some(l) = sub[k] {
                for g in 0..n_levels[k] {
                    rows[starts[g]..starts[g + 1]]
                        .sort_by_key(|&(c, i)| chunks[c as usize].data.factors[l].level(i as usize));
                }
            }
            levels.push(Levels { starts, rows });
        }
        Ok(Layout {
            chunks,
            family,
            p,
            k_terms,
            levels,
            shared: structure.shared.clone(),
            sub,
            omitted: structure.omitted.clone(),
            structure,
            outer_rule: ordered_rule(&gauss_hermite(options.nodes)),
            inner: ordered_rule(&gauss_hermite(options.inner_nodes)),
            step: options.step,
        })
    }

    fn exact(&self) -> bool {
        self.structure.exact()
    }

    fn n_levels(&self, k: usize) -> usize {
        self.levels[k].starts.len() - 1
    }

    /// The groups of rows `data` of one level at offset `a`: their total log-likelihood,
    /// derivatives in `a` and `d/du`. Per row, `out` gets the row's derivatives (averaged
    /// over the sub-term's effect when there is one); with `hess`, `mat` (`d x d`) gets the
    /// within-group covariances of the gradients over the sub-term's nodes and `E d2/du2`.
    /// Nodes are placed at the anchor (`RowIn::e_anchor`, the `.0` of the variances).
    #[allow(clippy::too_many_arguments)]
    fn groups_at(
        &self,
        data: &[RowIn],
        x: &[f64],
        bounds: &[usize],
        a: f64,
        var: &Variances,
        has_sub: bool,
        hess: bool,
        out: &mut [RowD],
        mat: &mut [f64],
    ) -> GroupOut {
        let p = self.p;
        let d = p + N_VAR;
        let fam = &self.family;
        let (tau_a, tau) = var.tau;
        let (u_a, u) = var.sub;
        let mut total = GroupOut::default();
        if !has_sub || u_a <= 0.0 {
            // Every row on its own (or the sub-term at 0: its rows at c = 0).
            for w in bounds.windows(2) {
                let (mut d1, mut d2) = (0.0, 0.0);
                for i in w[0]..w[1] {
                    let r = &data[i];
                    let rd = row_marginal(fam, r.y, r.n, r.e_anchor + a, r.e + a, tau_a, tau, &self.inner);
                    total.value += rd.l;
                    d1 += rd.le;
                    d2 += rd.lee;
                    out[i] = rd;
                }
                total.da += d1;
                total.daa += d2;
                if has_sub {
                    // d/du at u = 0 by the heat equation.
                    total.gu += 0.5 * (d2 + d1 * d1);
                }
            }
            return total;
        }
        let dv = p + 2;
        let mut vectors: Vec<f64> = Vec::new();
        let mut logs: Vec<f64> = Vec::new();
        let mut acc: Vec<RowD> = Vec::new();
        for w in bounds.windows(2) {
            let rows = &data[w[0]..w[1]];
            let xs = &x[w[0] * p..w[1] * p];
            // The mode of the group's integrand in c at the anchor.
            let (c0, sd) = mode(
                |c| {
                    rows.iter().fold((0.0, 0.0), |(s1, s2), r| {
                        let e = r.e_anchor + a + c;
                        let (le, lee) = if tau_a > 0.0 {
                            let rd = row_marginal(fam, r.y, r.n, e, e, tau_a, tau_a, &self.inner);
                            (rd.le, rd.lee)
                        } else {
                            fam.row_slopes(r.y, r.n, e)
                        };
                        (s1 + le, s2 + lee)
                    })
                },
                u_a,
            );
            let mut post = Posterior::new();
            acc.clear();
            acc.resize(rows.len(), RowD::default());
            vectors.clear();
            logs.clear();
            let (mut sk1, mut s_dk) = (0.0, 0.0);
            for &(z, lw0) in &self.outer_rule {
                let c = c0 + sd * z;
                let mut value = 0.0;
                let node_start = vectors.len();
                vectors.resize(node_start + dv, 0.0);
                let vec_m = &mut vectors[node_start..];
                for (j, r) in rows.iter().enumerate() {
                    let rd = row_marginal(fam, r.y, r.n, r.e_anchor + a + c, r.e + a + c, tau_a, tau, &self.inner);
                    value += rd.l;
                    out[w[0] + j] = rd;
                    if hess {
                        for (t, xv) in xs[j * p..(j + 1) * p].iter().enumerate() {
                            vec_m[t] += rd.le * xv;
                        }
                        vec_m[p + 1] += rd.lt;
                    }
                }
                let k = 0.5 * c * c / (u * u) - 0.5 / u;
                vec_m[p] = k;
                let lw = lw0 + value - 0.5 * c * c / u;
                let (wt, rescale) = post.add(lw);
                if rescale != 1.0 {
                    acc.iter_mut().for_each(|o| o.scale(rescale));
                    sk1 *= rescale;
                    s_dk *= rescale;
                }
                for (o, rd) in acc.iter_mut().zip(&out[w[0]..w[1]]) {
                    o.add_scaled(wt, rd);
                }
                // Sum of le over the group at this node, for d2/da2.
                let le_sum: f64 = out[w[0]..w[1]].iter().map(|r| r.le).sum();
                vectors.push(le_sum);
                sk1 += wt * k;
                s_dk += wt * (-c * c / (u * u * u) + 0.5 / (u * u));
                logs.push(lw);
            }
            let t = post.total;
            total.value += post.log_total() + sd.ln() - 0.5 * u.ln();
            total.gu += sk1 / t;
            let probs: Vec<f64> =
                logs.iter().map(|&l| if l > f64::NEG_INFINITY { (l - post.top).exp() / t } else { 0.0 }).collect();
            let dw = dv + 1;
            let mut mean = vec![0.0; dw];
            for (q, pq) in probs.iter().enumerate() {
                for (m, v) in mean.iter_mut().zip(&vectors[q * dw..(q + 1) * dw]) {
                    *m += pq * v;
                }
            }
            let mut var_le = 0.0;
            for (q, pq) in probs.iter().enumerate() {
                let dlt = vectors[q * dw + dv] - mean[dv];
                var_le += pq * dlt * dlt;
            }
            let mut e_lee = 0.0;
            for (o, a_row) in out[w[0]..w[1]].iter_mut().zip(&acc) {
                let mut r = *a_row;
                r.scale(1.0 / t);
                e_lee += r.lee;
                *o = r;
            }
            total.da += mean[dv];
            total.daa += e_lee + var_le;
            if hess {
                // Indices of (b, u, tau) in the component's coordinates.
                let index = |t: usize| {
                    if t < p {
                        t
                    } else if t == p {
                        p + VAR_U
                    } else {
                        p + VAR_TAU
                    }
                };
                for (q, pq) in probs.iter().enumerate() {
                    let v = &vectors[q * dw..q * dw + dv];
                    for s in 0..dv {
                        let ds = v[s] - mean[s];
                        if ds == 0.0 {
                            continue;
                        }
                        for t in 0..dv {
                            mat[index(s) * d + index(t)] += pq * ds * (v[t] - mean[t]);
                        }
                    }
                }
                mat[(p + VAR_U) * d + p + VAR_U] += s_dk / t;
            }
        }
        total
    }

    /// The component of level `g` of term `k` at `at`, its quadrature placed at `anchor`
    /// (centre and scale of the outer quadrature from `plan` when given): the value and
    /// gradient (and with `hess` the Hessian) of this quadrature are those of one smooth
    /// function. With `keep_rows`, the per-row parts of the gradient.
    #[allow(clippy::too_many_arguments)]
    fn component(
        &self,
        k: usize,
        g: usize,
        anchor: Point<'_>,
        at: Point<'_>,
        plan: Option<LevelPlan>,
        hess: bool,
        keep_rows: bool,
    ) -> Component {
        // `at` is the anchor: the range of the nodes is found as they are evaluated.
        let adapting = std::ptr::eq(anchor.b, at.b) && std::ptr::eq(anchor.s2, at.s2);
        let p = self.p;
        let d = p + N_VAR;
        let kk = self.k_terms;
        let lv = &self.levels[k];
        let rows = &lv.rows[lv.starts[g]..lv.starts[g + 1]];
        let bits = self.shared[k][g];
        let sub = self.sub[k].filter(|&l| bits >> l & 1 == 0);
        let sum_of =
            |s2: &[f64], pick: &dyn Fn(usize) -> bool| -> f64 { (0..kk).filter(|&l| pick(l)).map(|l| s2[l]).sum() };
        let is_shared = |l: usize| bits >> l & 1 == 1;
        let is_tau = |l: usize| bits >> l & 1 == 0 && Some(l) != sub;
        let var = Variances {
            shared: (sum_of(anchor.s2, &is_shared), sum_of(at.s2, &is_shared)),
            sub: sub.map_or((0.0, 0.0), |l| (anchor.s2[l], at.s2[l])),
            tau: (sum_of(anchor.s2, &is_tau), sum_of(at.s2, &is_tau)),
        };
        let n_rows = rows.len();
        let mut x = vec![0.0; n_rows * p];
        let data: Vec<RowIn> = rows
            .iter()
            .enumerate()
            .map(|(r, &(c, i))| {
                let chunk = &self.chunks[c as usize];
                let i = i as usize;
                let base = chunk.offset.map_or(0.0, |o| o[i]);
                let (mut ea, mut e) = (base, base);
                for (j, col) in chunk.data.x.iter().enumerate() {
                    let v = col.value(i, 0.0);
                    x[r * p + j] = v;
                    ea += anchor.b[j] * v;
                    e += at.b[j] * v;
                }
                RowIn { y: chunk.data.y[i], n: chunk.trials.map_or(1.0, |t| t[i]), e_anchor: ea, e }
            })
            .collect();
        // The groups: runs of rows with one level of the sub-term (or the single rows).
        let mut bounds = vec![0usize];
        if let Some(l) = sub {
            let level = |r: usize| {
                let (c, i) = rows[r];
                self.chunks[c as usize].data.factors[l].level(i as usize)
            };
            for r in 1..n_rows {
                if level(r) != level(r - 1) {
                    bounds.push(r);
                }
            }
        } else {
            bounds.extend(1..n_rows);
        }
        bounds.push(n_rows);
        let has_sub = sub.is_some();
        let mut node_rows = vec![RowD::default(); n_rows];
        let mut scratch = vec![0.0; if hess && has_sub { d * d } else { 0 }];
        let (s_a, s) = var.shared;
        // The outer quadrature: centre and scale at the anchor (from the plan, or the mode
        // and curvature there), and the range of nodes (from the plan, or found as the
        // nodes are evaluated when `at` is the anchor, or by a pass at the anchor).
        let step = self.step;
        let mut plan_out = LevelPlan::default();
        let mut range: Option<(i32, i32)> = None;
        if s_a > 0.0 {
            let anchor_var = Variances { shared: (s_a, s_a), sub: (var.sub.0, var.sub.0), tau: (var.tau.0, var.tau.0) };
            let anchor_rows: Vec<RowIn> = data.iter().map(|r| RowIn { e: r.e_anchor, ..*r }).collect();
            let mut tmp = vec![RowD::default(); n_rows];
            let mut none = Vec::new();
            // The groups' values at the anchor (for the mode and the range of nodes there).
            let mut at_anchor =
                |a: f64| self.groups_at(&anchor_rows, &x, &bounds, a, &anchor_var, has_sub, false, &mut tmp, &mut none);
            plan_out = match plan {
                Some(given) => given,
                None => {
                    let (centre, sd) = mode(
                        |a| {
                            let o = at_anchor(a);
                            (o.da, o.daa)
                        },
                        s_a,
                    );
                    LevelPlan { centre, sd, lo: 0, hi: 0 }
                }
            };
            if plan.is_some() {
                range = Some((plan_out.lo, plan_out.hi));
            } else if !adapting {
                // The range at the anchor, by a pass of values there.
                let (centre, sd) = (plan_out.centre, plan_out.sd);
                let mut top = f64::NEG_INFINITY;
                let mut ends = (0, 0);
                for side in [1i32, -1] {
                    let mut j: i32 = if side == 1 { 0 } else { -1 };
                    loop {
                        let tj = j as f64 * step;
                        let a = centre + sd * tj.sinh();
                        let o = at_anchor(a);
                        let lw = tj.cosh().ln() + o.value - 0.5 * a * a / s_a;
                        top = top.max(lw);
                        if side == 1 {
                            ends.1 = j;
                        } else {
                            ends.0 = j;
                        }
                        if !(lw >= top - RANGE_DROP) || j.abs() >= MAX_NODE {
                            break;
                        }
                        j += side;
                    }
                }
                range = Some(ends);
            }
        }
        let mut post = Posterior::new();
        let mut acc = vec![RowD::default(); n_rows];
        let mut mat_acc = vec![0.0; if hess { d * d } else { 0 }];
        let mut vectors: Vec<f64> = Vec::new();
        let mut logs: Vec<f64> = Vec::new();
        let (mut lo_seen, mut hi_seen) = (0i32, 0i32);
        let mut vec_q = vec![0.0; d];
        let (mut left_open, mut right_open) = (true, true);
        let mut index = 0usize;
        loop {
            // Nodes in the order 0, 1, -1, 2, -2, ... (the centre first).
            let j: i32 = if index == 0 {
                0
            } else if index % 2 == 1 {
                index.div_ceil(2) as i32
            } else {
                -((index / 2) as i32)
            };
            index += 1;
            if s_a <= 0.0 && index > 1 {
                break;
            }
            let open = if j >= 0 { right_open } else { left_open };
            if let Some((lo, hi)) = range {
                if j.abs() > (-lo).max(hi) {
                    break;
                }
                if j < lo || j > hi {
                    continue;
                }
            } else if !open {
                if !left_open && !right_open {
                    break;
                }
                continue;
            }
            let (a, lw0) = if s_a > 0.0 {
                let tj = j as f64 * step;
                (
                    plan_out.centre + plan_out.sd * tj.sinh(),
                    (step * tj.cosh()).ln() + plan_out.sd.ln() - 0.5 * s.ln() - HALF_LOG_2PI,
                )
            } else {
                (0.0, 0.0)
            };
            scratch.iter_mut().for_each(|v| *v = 0.0);
            let o = self.groups_at(&data, &x, &bounds, a, &var, has_sub, hess, &mut node_rows, &mut scratch);
            vec_q.iter_mut().for_each(|v| *v = 0.0);
            for (r, rd) in node_rows.iter().enumerate() {
                for (t, xv) in x[r * p..(r + 1) * p].iter().enumerate() {
                    vec_q[t] += rd.le * xv;
                }
                vec_q[p + VAR_TAU] += rd.lt;
            }
            vec_q[p + VAR_U] = o.gu;
            let (lw, k_s, dk_s) = if s_a > 0.0 {
                (lw0 + o.value - 0.5 * a * a / s, 0.5 * a * a / (s * s) - 0.5 / s, -a * a / (s * s * s) + 0.5 / (s * s))
            } else {
                // Not integrated (S = 0): d/dS by the heat equation.
                (o.value, 0.5 * (o.daa + o.da * o.da), 0.0)
            };
            vec_q[p + VAR_S] = k_s;
            let (wt, rescale) = post.add(lw);
            if rescale != 1.0 {
                acc.iter_mut().for_each(|r| r.scale(rescale));
                mat_acc.iter_mut().for_each(|v| *v *= rescale);
            }
            for (r, rd) in acc.iter_mut().zip(&node_rows) {
                r.add_scaled(wt, rd);
            }
            if hess {
                for (m, sv) in mat_acc.iter_mut().zip(&scratch) {
                    *m += wt * sv;
                }
                mat_acc[(p + VAR_S) * d + p + VAR_S] += wt * dk_s;
            }
            logs.push(lw);
            vectors.extend_from_slice(&vec_q);
            lo_seen = lo_seen.min(j);
            hi_seen = hi_seen.max(j);
            if range.is_none() && (!(lw >= post.top - RANGE_DROP) || j.abs() >= MAX_NODE) {
                // This side has reached the negligible tail (at the anchor: `at` is it).
                if j > 0 {
                    right_open = false;
                } else if j < 0 {
                    left_open = false;
                }
            }
        }
        if s_a > 0.0 {
            plan_out.lo = lo_seen;
            plan_out.hi = hi_seen;
        }
        let t = post.total;
        let mut value = post.log_total();
        if !value.is_finite() {
            value = f64::NEG_INFINITY;
        }
        let probs: Vec<f64> = logs
            .iter()
            .map(|&l| if l > f64::NEG_INFINITY && t > 0.0 { (l - post.top).exp() / t } else { 0.0 })
            .collect();
        let mut grad = vec![0.0; d];
        for (q, pq) in probs.iter().enumerate() {
            for (gv, v) in grad.iter_mut().zip(&vectors[q * d..(q + 1) * d]) {
                *gv += pq * v;
            }
        }
        acc.iter_mut().for_each(|r| r.scale(if t > 0.0 { 1.0 / t } else { 0.0 }));
        let mut h = Vec::new();
        if hess {
            h = vec![0.0; d * d];
            for (hv, m) in h.iter_mut().zip(&mat_acc) {
                *hv = m / t;
            }
            // Covariance of the node gradients.
            for (q, pq) in probs.iter().enumerate() {
                let v = &vectors[q * d..(q + 1) * d];
                for s in 0..d {
                    let ds = v[s] - grad[s];
                    if ds == 0.0 {
                        continue;
                    }
                    for u in 0..d {
                        h[s * d + u] += pq * ds * (v[u] - grad[u]);
                    }
                }
            }
            // E of the rows' second derivatives: (b, b), (b, tau), (tau, tau).
            let it = p + VAR_TAU;
            for (r, rd) in acc.iter().enumerate() {
                let xr = &x[r * p..(r + 1) * p];
                for s in 0..p {
                    let xs = xr[s] * rd.lee;
                    for u in 0..p {
                        h[s * d + u] += xs * xr[u];
                    }
                    h[s * d + it] += rd.let_ * xr[s];
                    h[it * d + s] += rd.let_ * xr[s];
                }
                h[it * d + it] += rd.ltt;
            }
        }
        let rows_out = if keep_rows { acc.iter().map(|r| (r.le, r.lt)).collect() } else { Vec::new() };
        Component { value, grad, hess: h, rows: rows_out, plan: plan_out }
    }

    /// Where each variance enters a component of level `g` of term `k`: `S`, `u` or `tau`.
    fn categories(&self, k: usize, g: usize) -> Vec<usize> {
        let bits = self.shared[k][g];
        let sub = self.sub[k].filter(|&l| bits >> l & 1 == 0);
        (0..self.k_terms)
            .map(|l| {
                if bits >> l & 1 == 1 {
                    VAR_S
                } else if Some(l) == sub {
                    VAR_U
                } else {
                    VAR_TAU
                }
            })
            .collect()
    }

    /// `sum_k sum_g log L_kg` at `at`, with its gradient (and with `hess` its Hessian) in
    /// `(b, s2)`, the quadratures placed at `anchor`. `plan` holds the centre and scale of
    /// every level's quadrature: computed and stored when `adapt` (then `anchor` should be
    /// `at`), read otherwise.
    fn evaluate(
        &self,
        anchor: Point<'_>,
        at: Point<'_>,
        plan: &mut [Vec<LevelPlan>],
        adapt: bool,
        hess: bool,
        pool: &rayon::ThreadPool,
    ) -> Evaluation {
        let p = self.p;
        let kk = self.k_terms;
        let dim = p + kk;
        let d = p + N_VAR;
        let mut value = 0.0;
        let mut grad = vec![0.0; dim];
        let mut h = vec![0.0; if hess { dim * dim } else { 0 }];
        for k in (0..self.k_terms).filter(|&k| !self.omitted[k]) {
            let n = self.n_levels(k);
            let plan_k = &plan[k];
            type Part = (f64, Vec<f64>, Vec<f64>, Vec<LevelPlan>);
            let parts: Vec<Part> = pool.install(|| {
                (0..n.div_ceil(BLOCK))
                    .into_par_iter()
                    .map(|block| {
                        let mut value = 0.0;
                        let mut grad = vec![0.0; dim];
                        let mut h = vec![0.0; if hess { dim * dim } else { 0 }];
                        let mut plans = Vec::new();
                        for g in block * BLOCK..((block + 1) * BLOCK).min(n) {
                            let given = if adapt { None } else { plan_k.get(g).copied() };
                            let c = self.component(k, g, anchor, at, given, hess, false);
                            value += c.value;
                            let cat = self.categories(k, g);
                            let map = |j: usize| if j < p { j } else { p + cat[j - p] };
                            for (j, gv) in grad.iter_mut().enumerate() {
                                *gv += c.grad[map(j)];
                            }
                            if hess {
                                for a in 0..dim {
                                    let ma = map(a);
                                    for b in 0..dim {
                                        h[a * dim + b] += c.hess[ma * d + map(b)];
                                    }
                                }
                            }
                            plans.push(c.plan);
                        }
                        (value, grad, h, plans)
                    })
                    .collect()
            });
            let mut new_plan = Vec::with_capacity(if adapt { n } else { 0 });
            for (v, gr, hb, plans) in parts {
                value += v;
                grad.iter_mut().zip(&gr).for_each(|(a, x)| *a += x);
                h.iter_mut().zip(&hb).for_each(|(a, x)| *a += x);
                if adapt {
                    new_plan.extend(plans);
                }
            }
            if adapt {
                plan[k] = new_plan;
            }
        }
        Evaluation { value, grad, hess: h }
    }

    /// A fresh (empty) plan: every level's quadrature placed at the anchor when evaluated.
    fn empty_plan(&self) -> Vec<Vec<LevelPlan>> {
        vec![Vec::new(); self.k_terms]
    }

    /// The meat `V = sum_k V_k - (K - 1) V_rows` of the sandwich: the per-row parts of the
    /// level scores summed by every term's levels (each level part in its own term's
    /// clusters only).
    fn meat(&self, at: Point<'_>, pool: &rayon::ThreadPool) -> Mat<f64> {
        let p = self.p;
        let dim = p + self.k_terms;
        let kk = self.k_terms;
        let mut row_score: Vec<Vec<Vec<f64>>> = self.chunks.iter().map(|c| vec![vec![0.0; dim]; c.n_obs()]).collect();
        let mut level_part: Vec<Vec<Vec<f64>>> = Vec::with_capacity(kk);
        for k in 0..kk {
            if self.omitted[k] {
                level_part.push(Vec::new());
                continue;
            }
            let comps: Vec<(Component, Vec<usize>)> = pool.install(|| {
                (0..self.n_levels(k))
                    .into_par_iter()
                    .map(|g| (self.component(k, g, at, at, None, false, true), self.categories(k, g)))
                    .collect()
            });
            let lv = &self.levels[k];
            let mut parts = Vec::with_capacity(comps.len());
            for (g, (comp, cat)) in comps.into_iter().enumerate() {
                let mut rest: Vec<f64> =
                    (0..dim).map(|j| if j < p { comp.grad[j] } else { comp.grad[p + cat[j - p]] }).collect();
                for (r, &(c, i)) in lv.rows[lv.starts[g]..lv.starts[g + 1]].iter().enumerate() {
                    let chunk = &self.chunks[c as usize];
                    let (le, lt) = comp.rows[r];
                    let target = &mut row_score[c as usize][i as usize];
                    for j in 0..p {
                        let part = le * chunk.data.x[j].value(i as usize, 0.0);
                        target[j] += part;
                        rest[j] -= part;
                    }
                    for l in 0..kk {
                        if cat[l] == VAR_TAU {
                            target[p + l] += lt;
                            rest[p + l] -= lt;
                        }
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
    let _ = family;
    Ok(Structure::new(chunks)?.exact())
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
    let at = Point { b, s2 };
    let mut plan = layout.empty_plan();
    let ev = layout.evaluate(at, at, &mut plan, true, false, pool);
    Ok((ev.value, ev.grad))
}

/// The composite log-likelihood, its gradient and its Hessian (`(p + K)^2`, by rows) in
/// `(b, s2)`, all of the quadratures placed at `anchor` (`(b, s2)` itself when `None`):
/// the three are exact derivatives of one smooth function of `(b, s2)` (for tests).
#[allow(clippy::too_many_arguments)]
pub fn composite_derivatives(
    chunks: &[GlmmChunk<'_>],
    family: GlmFamily,
    b: &[f64],
    s2: &[f64],
    anchor: Option<(&[f64], &[f64])>,
    options: &CompositeOptions,
    pool: &rayon::ThreadPool,
) -> Result<(f64, Vec<f64>, Vec<f64>), FitError> {
    let layout = Layout::new(chunks, family, options)?;
    let at = Point { b, s2 };
    let anchor = anchor.map_or(at, |(b, s2)| Point { b, s2 });
    let mut plan = layout.empty_plan();
    let ev = layout.evaluate(anchor, at, &mut plan, false, true, pool);
    Ok((ev.value, ev.grad, ev.hess))
}

/// The Cholesky factor of a symmetric matrix (by rows), or `None` when it is not
/// positive definite.
fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let mut s = a[i * d + j];
            for m in 0..j {
                s -= l[i * d + m] * l[j * d + m];
            }
            if i == j {
                if !(s > 0.0) || !s.is_finite() {
                    return None;
                }
                l[i * d + i] = s.sqrt();
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    Some(l)
}

/// `x` with `L L' x = b`.
fn cholesky_solve(l: &[f64], d: usize, b: &[f64]) -> Vec<f64> {
    let mut y = b.to_vec();
    for i in 0..d {
        for m in 0..i {
            y[i] -= l[i * d + m] * y[m];
        }
        y[i] /= l[i * d + i];
    }
    for i in (0..d).rev() {
        for m in i + 1..d {
            y[i] -= l[m * d + i] * y[m];
        }
        y[i] /= l[i * d + i];
    }
    y
}

/// The ascent direction at gradient `g` and Hessian `h` (`d x d`): Newton's step when
/// `-h` is positive definite, else the step of `-h + lambda D` (`D` the absolute
/// diagonal, plus 1) with the smallest `lambda` (a power of 10) that makes it so, which
/// tends to a scaled gradient step. Returns the step and whether it is Newton's.
fn ascent_direction(g: &[f64], h: &[f64], d: usize) -> (Vec<f64>, bool) {
    let mut m: Vec<f64> = h.iter().map(|v| -v).collect();
    if let Some(l) = cholesky(&m, d) {
        let step = cholesky_solve(&l, d, g);
        if step.iter().all(|s| s.is_finite()) {
            return (step, true);
        }
    }
    let diag: Vec<f64> = (0..d).map(|i| h[i * d + i].abs() + 1.0).collect();
    let mut lambda = 1e-6;
    for _ in 0..40 {
        for i in 0..d {
            m[i * d + i] = -h[i * d + i] + lambda * diag[i];
        }
        if let Some(l) = cholesky(&m, d) {
            let step = cholesky_solve(&l, d, g);
            if step.iter().all(|s| s.is_finite()) {
                return (step, false);
            }
        }
        lambda *= 10.0;
    }
    (g.iter().zip(&diag).map(|(gv, dv)| gv / dv).collect(), false)
}

/// Maximises the composite likelihood from `(b, s2)` (e.g. the moment estimates) by
/// Newton's method in `(b, log s2_active)` on the analytic Hessian, with a backtracking
/// (Armijo) line search: each iteration places every level's quadrature at the current
/// point and searches along Newton's direction on the log-likelihood with the nodes held
/// there (a smooth function whose gradient and Hessian are exact), so every accepted step
/// increases it. Where `-H` is not positive definite the step is regularized towards a
/// gradient step. Converged when Newton's decrement `g' (-H)^-1 g` is at rounding level
/// (`1e-11 (1 + |loglik|)`); a variance whose score at 0 is not positive is a boundary fit.
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
    let dim = p + kk;
    if b_start.len() != p || s2_start.len() != kk {
        return Err(FitError::InvalidInput("starting values of the wrong length".into()));
    }
    let mut b = b_start.to_vec();
    let mut s2: Vec<f64> = s2_start.iter().map(|&v| if v.is_finite() { v.max(0.04) } else { 0.5 }).collect();
    let mut active = vec![true; kk];
    let mut iterations = 0;
    let mut plan = layout.empty_plan();
    // Parameters t: b, then log s2 of the active terms.
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
    // The gradient and Hessian in t from those in (b, s2).
    let to_t = |ev: &Evaluation, s2: &[f64], active: &[bool]| -> (Vec<f64>, Vec<f64>) {
        let idx: Vec<usize> = (0..p).chain((0..kk).filter(|&k| active[k]).map(|k| p + k)).collect();
        let scale: Vec<f64> = idx.iter().map(|&j| if j < p { 1.0 } else { s2[j - p] }).collect();
        let d = idx.len();
        let g: Vec<f64> = idx.iter().zip(&scale).map(|(&j, s)| ev.grad[j] * s).collect();
        let mut h = vec![0.0; d * d];
        for a in 0..d {
            for c in 0..d {
                h[a * d + c] = ev.hess[idx[a] * dim + idx[c]] * scale[a] * scale[c];
            }
            if idx[a] >= p {
                h[a * d + a] += g[a];
            }
        }
        (g, h)
    };
    let mut converged = false;
    let mut last_decrement = f64::NAN;
    // The evaluation (with the Hessian) at the point where the iteration converged.
    let mut last_eval: Option<Evaluation> = None;
    'outer: for _round in 0..(kk + 2) {
        let mut t: Vec<f64> = b.clone();
        t.extend((0..kk).filter(|&k| active[k]).map(|k| s2[k].ln()));
        let d = t.len();
        let mut dropped = None;
        converged = false;
        for _ in 0..options.max_iterations {
            if !keep_going() {
                return Err(FitError::Interrupted);
            }
            iterations += 1;
            let (bt, st) = unpack(&t, &active);
            let here = Point { b: &bt, s2: &st };
            let ev = layout.evaluate(here, here, &mut plan, true, true, pool);
            if !ev.value.is_finite() {
                return Err(FitError::NotConverged(
                    "the likelihood is not finite at the starting values of method = \"efficient\": use method = \"moments\"".into(),
                ));
            }
            let (g, h) = to_t(&ev, &st, &active);
            let (mut step, newton) = ascent_direction(&g, &h, d);
            let decrement: f64 = step.iter().zip(&g).map(|(s, gv)| s * gv).sum();
            last_decrement = decrement;
            let tolerance = 1e-11 * (1.0 + ev.value.abs());
            if newton && decrement <= tolerance {
                converged = true;
                last_eval = Some(ev);
                break;
            }
            // Steps in log s2 at most 2 (a factor e^2 on a variance).
            let biggest = step[p..].iter().fold(0.0f64, |m, s| m.max(s.abs()));
            if biggest > 2.0 {
                step.iter_mut().for_each(|s| *s *= 2.0 / biggest);
            }
            let slope: f64 = step.iter().zip(&g).map(|(s, gv)| s * gv).sum();
            // Backtracking on the log-likelihood with the nodes held at this point.
            let mut scale = 1.0;
            let mut moved = false;
            for _ in 0..50 {
                if !keep_going() {
                    return Err(FitError::Interrupted);
                }
                let trial: Vec<f64> = t.iter().zip(&step).map(|(a, s)| a + scale * s).collect();
                let (bn, sn) = unpack(&trial, &active);
                let v = layout.evaluate(here, Point { b: &bn, s2: &sn }, &mut plan, false, false, pool).value;
                if v.is_finite() && v >= ev.value + 1e-4 * scale * slope {
                    t = trial;
                    moved = true;
                    break;
                }
                scale *= 0.5;
            }
            if !moved {
                if newton && decrement <= 1e-8 * (1.0 + ev.value.abs()) {
                    // Newton's predicted gain is below what the log-likelihood resolves.
                    converged = true;
                    last_eval = Some(ev);
                    break;
                }
                return Err(FitError::NotConverged(format!(
                    "the likelihood fit (method = \"efficient\") stalled: no increase along the ascent direction \
                     (predicted gain {decrement:.3e}); use method = \"moments\""
                )));
            }
            // A variance on its way to 0: take it to the boundary.
            let mut at = p;
            for k in 0..kk {
                if active[k] {
                    if t[at] < -14.0 && g[at] < 1e-6 {
                        dropped = Some(k);
                    }
                    at += 1;
                }
            }
            if dropped.is_some() {
                break;
            }
        }
        let (nb, ns) = unpack(&t, &active);
        b = nb;
        s2 = ns;
        if let Some(k) = dropped {
            active[k] = false;
            s2[k] = 0.0;
            continue;
        }
        if !converged {
            break;
        }
        // Boundary terms whose score at 0 is positive come back.
        let mut revived = false;
        if let Some(ev) = last_eval.as_ref().filter(|_| active.iter().any(|a| !a)) {
            for k in 0..kk {
                if !active[k] && ev.grad[p + k] > 1e-8 {
                    active[k] = true;
                    s2[k] = 0.01;
                    revived = true;
                }
            }
        }
        if !revived {
            break 'outer;
        }
        converged = false;
        last_eval = None;
    }
    if !converged {
        return Err(FitError::NotConverged(format!(
            "the likelihood fit (method = \"efficient\") did not converge in {iterations} Newton steps \
             (last predicted gain {last_decrement:.3e}): use method = \"moments\""
        )));
    }
    // Covariances over (b, s2_active), by the analytic Hessian in s2 (not log s2).
    let here = Point { b: &b, s2: &s2 };
    let ev = match last_eval {
        Some(ev) => ev,
        None => layout.evaluate(here, here, &mut plan, true, true, pool),
    };
    let loglik = ev.value;
    let idx: Vec<usize> = (0..p).chain((0..kk).filter(|&k| active[k]).map(|k| p + k)).collect();
    let d = idx.len();
    let mut neg = Mat::<f64>::zeros(d, d);
    for a in 0..d {
        for c in 0..d {
            neg[(a, c)] = -0.5 * (ev.hess[idx[a] * dim + idx[c]] + ev.hess[idx[c] * dim + idx[a]]);
        }
    }
    let inv = inverse(&neg, "information matrix of the likelihood fit")?;
    let meat_full = layout.meat(here, pool);
    let mut meat = Mat::<f64>::zeros(d, d);
    for a in 0..d {
        for c in 0..d {
            meat[(a, c)] = meat_full[(idx[a], idx[c])];
        }
    }
    let sand = &inv * &meat * &inv;
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
