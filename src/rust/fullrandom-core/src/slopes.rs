//! Random-effects terms with `q` columns (random slopes) by unbiased moment equations.
//!
//! Term `k` has design columns `z_i` (its `q_k` columns, e.g. `(1, x_i)`) and
//! `Var(u_kg) = Sigma_k` (q_k x q_k) for every level `g`. With `r` the OLS residuals,
//! `W_g = sum_{i in g} z_i z_i'` and `K_g` the inverse of its Cholesky factor taken in
//! column order with pivoting (the rows of columns that depend linearly on earlier ones
//! are zero, so `K_g W_g K_g' = I` on the independent columns), the quadratic forms are
//! `r'r` and, per term, the lower-triangle entries of `sum_g v_g v_g'`, `v_g = K_g Z_g' r`.
//! `Cov(y)` is linear in the entries of every `Sigma_k` and in `s2`, so
//! `E[r'B r] = sum_m theta_m tr(B M V_m M)` exactly; the traces are computed below in
//! closed form from per-level sums (`W_g`, `Z_g'X`, `Z_g'y`) and per-cell sums of two
//! terms (`sum z_k z_l'` over the rows in level `g` of `k` and `h` of `l`). Equating
//! gives a square system. For an intercept-only term `v_g = S_g / sqrt(n_g)`, and the
//! system spans the same equations as [`crate::moments`].
//!
//! Parameters are ordered term by term, each term's `Sigma_k` by its lower triangle in
//! column order (`(0,0), (1,0), .., (1,1), ..`, as lme4's theta), then `s2`. A
//! `Sigma_k` that is not positive semidefinite is projected onto the cone (eigenvalues
//! clipped at 0), held, and the other equations re-solved; the raw solution is kept.
//!
//! Then Henderson's equations with q x q blocks, in the parametrisation `u = Lambda w`
//! (`Sigma_k = Lambda_k Lambda_k'`, which also covers a singular `Sigma_k`), solved by
//! conjugate gradients with a block-diagonal preconditioner, give the GLS fixed effects,
//! their covariance and the BLUPs.
//!
//! The statistics are sums over rows: the statistics of chunks of rows merge
//! ([`SlopeStats::merge`]) into those of all the rows, so a fit in chunks is exact.

use crate::data::FixedColumn;
use crate::error::FitError;
use crate::grouping::{balanced_blocks, bucket_sort, with_bucket};
use rayon::prelude::*;

/// One random-effects term: its grouping codes and its `q` design columns.
#[derive(Debug, Clone)]
pub struct SlopeTerm<'a> {
    pub name: String,
    pub codes: &'a [i32],
    /// Subtracted from every code to give a level in `0..n_levels`.
    pub offset: i32,
    pub n_levels: usize,
    /// The term's design columns ([`FixedColumn::Ones`] for an intercept).
    pub z: Vec<FixedColumn<'a>>,
}

impl SlopeTerm<'_> {
    pub fn q(&self) -> usize {
        self.z.len()
    }
    #[inline]
    fn level(&self, i: usize) -> usize {
        (self.codes[i] - self.offset) as usize
    }
}

/// Response, fixed-effect columns and random-effects terms.
#[derive(Debug, Clone)]
pub struct SlopeData<'a> {
    pub y: &'a [f64],
    pub x: Vec<FixedColumn<'a>>,
    pub terms: Vec<SlopeTerm<'a>>,
}

/// Cells of two terms `k < l`: `(g, h, P_gh)` with `P_gh = sum z_k z_l'` (q_k x q_l, row-major).
#[derive(Debug, Clone)]
pub struct PairCells {
    pub k: usize,
    pub l: usize,
    pub rows: Vec<u32>,
    pub cols: Vec<u32>,
    pub sums: Vec<f64>,
}

/// Per-level sums of one term.
#[derive(Debug, Clone)]
pub struct TermSums {
    pub q: usize,
    pub n_levels: usize,
    /// `W_g` (q x q, row-major), level after level.
    pub zz: Vec<f64>,
    /// `Z_g'X` (q x p, row-major).
    pub zx: Vec<f64>,
    /// `Z_g'y` (q).
    pub zy: Vec<f64>,
}

/// The statistics of a slope model.
#[derive(Debug, Clone)]
pub struct SlopeStats {
    pub n_obs: usize,
    pub p: usize,
    pub xx: Vec<f64>,
    pub xy: Vec<f64>,
    pub yy: f64,
    pub terms: Vec<TermSums>,
    pub pairs: Vec<PairCells>,
}

fn check(data: &SlopeData<'_>) -> Result<(), FitError> {
    let n = data.y.len();
    let bad = |m: String| Err(FitError::InvalidInput(m));
    if n == 0 {
        return bad("the data have no observations".into());
    }
    if data.terms.is_empty() {
        return bad("the model has no random-effects term".into());
    }
    let column_ok = |c: &FixedColumn<'_>| match c {
        FixedColumn::Ones => true,
        FixedColumn::Values(v) => v.len() == n && v.iter().all(|x| x.is_finite()),
    };
    if !data.y.iter().all(|v| v.is_finite()) || !data.x.iter().all(column_ok) {
        return bad("the response and the fixed-effect columns must be finite, one value per row".into());
    }
    for t in &data.terms {
        if t.q() == 0 {
            return bad(format!("the term '{}' has no columns", t.name));
        }
        if t.codes.len() != n || !t.z.iter().all(column_ok) {
            return bad(format!("the term '{}' needs finite columns and a level code on every row", t.name));
        }
        if t.codes.iter().any(|&c| c < t.offset || (c - t.offset) as usize >= t.n_levels) {
            return bad(format!("a level code of '{}' is missing or out of range", t.name));
        }
    }
    Ok(())
}

/// Rows per parallel task of the sums over rows (fixed, so the sums are reduced in a
/// fixed order whatever the number of threads).
const ROWS: usize = 1 << 14;

/// `z` of row `i` into `out`.
#[inline]
fn row_values(columns: &[FixedColumn<'_>], i: usize, out: &mut [f64]) {
    for (o, c) in out.iter_mut().zip(columns) {
        *o = c.value(i, 0.0);
    }
}

impl SlopeStats {
    /// The statistics of the rows of `data`: `X'X`, `X'y`, `y'y` over fixed blocks of rows,
    /// the level sums of every term and the cells of every pair of terms over the levels'
    /// rows (stable counting sorts of the rows by level, [`crate::grouping`]'s), in
    /// parallel on the current rayon pool. Every sum adds its rows in row order, so the
    /// statistics do not depend on the number of threads.
    pub fn compute(data: &SlopeData<'_>) -> Result<SlopeStats, FitError> {
        check(data)?;
        let n = data.y.len();
        if u32::try_from(n).is_err() {
            return Err(FitError::InvalidInput(format!(
                "{n} rows: random slopes are fitted on at most 2^32 - 1 rows at once; use chunks"
            )));
        }
        let p = data.x.len();
        let blocks: Vec<(Vec<f64>, Vec<f64>, f64)> = (0..n.div_ceil(ROWS))
            .into_par_iter()
            .map(|b| {
                let mut xx = vec![0.0; p * p];
                let mut xy = vec![0.0; p];
                let mut yy = 0.0;
                let mut xi = vec![0.0; p];
                for i in b * ROWS..((b + 1) * ROWS).min(n) {
                    row_values(&data.x, i, &mut xi);
                    let y = data.y[i];
                    yy += y * y;
                    for a in 0..p {
                        xy[a] += xi[a] * y;
                        for c in 0..p {
                            xx[a * p + c] += xi[a] * xi[c];
                        }
                    }
                }
                (xx, xy, yy)
            })
            .collect();
        let mut xx = vec![0.0; p * p];
        let mut xy = vec![0.0; p];
        let mut yy = 0.0;
        for (bxx, bxy, byy) in blocks {
            xx.iter_mut().zip(&bxx).for_each(|(a, b)| *a += b);
            xy.iter_mut().zip(&bxy).for_each(|(a, b)| *a += b);
            yy += byy;
        }
        let terms = data.terms.iter().map(|t| term_sums(data, t)).collect();
        let mut pairs = Vec::new();
        for k in 0..data.terms.len() {
            for l in k + 1..data.terms.len() {
                pairs.push(pair_cells(&data.terms[k], &data.terms[l], k, l));
            }
        }
        Ok(SlopeStats { n_obs: n, p, xx, xy, yy, terms, pairs })
    }

    /// Checks that every array has the length its shape gives and that the cells of every
    /// pair are in range and sorted (statistics that came from outside, e.g. from R).
    pub fn check_shape(&self) -> Result<(), FitError> {
        let bad = |what: String| Err(FitError::InvalidInput(format!("inconsistent slope statistics: {what}")));
        let p = self.p;
        if self.xx.len() != p * p || self.xy.len() != p {
            return bad("X'X or X'y".into());
        }
        for (k, t) in self.terms.iter().enumerate() {
            let (q, n) = (t.q, t.n_levels);
            if q == 0 || t.zz.len() != n * q * q || t.zx.len() != n * q * p || t.zy.len() != n * q {
                return bad(format!("the level sums of term {k}"));
            }
        }
        for c in &self.pairs {
            if c.k >= c.l || c.l >= self.terms.len() || c.rows.len() != c.cols.len() {
                return bad(format!("the cells of terms {} and {}", c.k, c.l));
            }
            let (tk, tl) = (&self.terms[c.k], &self.terms[c.l]);
            let sorted = c.rows.windows(2).zip(c.cols.windows(2)).all(|(r, h)| (r[0], h[0]) < (r[1], h[1]));
            let in_range = c.rows.iter().all(|&g| (g as usize) < tk.n_levels)
                && c.cols.iter().all(|&h| (h as usize) < tl.n_levels);
            if !sorted || !in_range || c.sums.len() != c.rows.len() * tk.q * tl.q {
                return bad(format!("the cells of terms {} and {}", c.k, c.l));
            }
        }
        Ok(())
    }

    /// The statistics of the union of two sets of rows with the same terms and levels (a
    /// chunk merged into the others): sums add, and cells of the same pair of levels add.
    pub fn merge(&mut self, other: &SlopeStats) -> Result<(), FitError> {
        let shape = |s: &SlopeStats| {
            (
                s.p,
                s.terms.iter().map(|t| (t.q, t.n_levels)).collect::<Vec<_>>(),
                s.pairs.iter().map(|c| (c.k, c.l)).collect::<Vec<_>>(),
            )
        };
        if shape(self) != shape(other) {
            return Err(FitError::Incompatible(
                "the statistics of the chunks differ in their fixed-effect columns, terms or levels".into(),
            ));
        }
        self.n_obs += other.n_obs;
        let add = |a: &mut Vec<f64>, b: &Vec<f64>| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        add(&mut self.xx, &other.xx);
        add(&mut self.xy, &other.xy);
        self.yy += other.yy;
        for (a, b) in self.terms.iter_mut().zip(&other.terms) {
            add(&mut a.zz, &b.zz);
            add(&mut a.zx, &b.zx);
            add(&mut a.zy, &b.zy);
        }
        for (a, b) in self.pairs.iter_mut().zip(&other.pairs) {
            *a = a.merge(b, self.terms[a.k].q * self.terms[a.l].q);
        }
        Ok(())
    }
}

/// The level sums of one term, each level's rows added in row order.
fn term_sums(data: &SlopeData<'_>, t: &SlopeTerm<'_>) -> TermSums {
    let n = data.y.len();
    let (q, p) = (t.q(), data.x.len());
    let by_level = bucket_sort(n, t.n_levels, |range| range.map(|i| (t.level(i), i as u32)));
    let pieces: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = balanced_blocks(&by_level.starts)
        .into_par_iter()
        .map(|levels| {
            let mut zz = vec![0.0; levels.len() * q * q];
            let mut zx = vec![0.0; levels.len() * q * p];
            let mut zy = vec![0.0; levels.len() * q];
            let mut zi = vec![0.0; q];
            let mut xi = vec![0.0; p];
            for (at, g) in levels.enumerate() {
                for &i in &by_level.values[by_level.starts[g]..by_level.starts[g + 1]] {
                    let i = i as usize;
                    row_values(&t.z, i, &mut zi);
                    row_values(&data.x, i, &mut xi);
                    let y = data.y[i];
                    for a in 0..q {
                        zy[at * q + a] += zi[a] * y;
                        for b in 0..q {
                            zz[at * q * q + a * q + b] += zi[a] * zi[b];
                        }
                        for b in 0..p {
                            zx[at * q * p + a * p + b] += zi[a] * xi[b];
                        }
                    }
                }
            }
            (zz, zx, zy)
        })
        .collect();
    let mut out = TermSums { q, n_levels: t.n_levels, zz: Vec::new(), zx: Vec::new(), zy: Vec::new() };
    for (zz, zx, zy) in pieces {
        out.zz.extend(zz);
        out.zx.extend(zx);
        out.zy.extend(zy);
    }
    out
}

/// The cells of terms `a` (rows) and `b` (columns), by level of `a` and then of `b`, as
/// [`crate::grouping::CellCounts::count`] finds them: the rows sorted by `b`'s level, that
/// list sorted by `a`'s, so every level of `a` lists its rows by level of `b` (and in row
/// order within a cell); runs of equal levels are the cells.
fn pair_cells(a: &SlopeTerm<'_>, b: &SlopeTerm<'_>, k: usize, l: usize) -> PairCells {
    let n = a.codes.len();
    let (qa, qb) = (a.q(), b.q());
    let by_b = bucket_sort(n, b.n_levels, |range| range.map(|i| (b.level(i), (a.level(i) as u32, i as u32))));
    let by_a = bucket_sort(n, a.n_levels, |range| {
        with_bucket(&by_b.starts, &by_b.values, range).map(|(h, (g, i))| (g as usize, (h, i)))
    });
    drop(by_b);
    let pieces: Vec<PairCells> = balanced_blocks(&by_a.starts)
        .into_par_iter()
        .map(|levels| {
            let mut out = PairCells { k, l, rows: Vec::new(), cols: Vec::new(), sums: Vec::new() };
            let mut za = vec![0.0; qa];
            let mut zb = vec![0.0; qb];
            for g in levels {
                let mut last = None;
                for &(h, i) in &by_a.values[by_a.starts[g]..by_a.starts[g + 1]] {
                    if last != Some(h) {
                        out.rows.push(g as u32);
                        out.cols.push(h);
                        out.sums.extend(std::iter::repeat_n(0.0, qa * qb));
                        last = Some(h);
                    }
                    row_values(&a.z, i as usize, &mut za);
                    row_values(&b.z, i as usize, &mut zb);
                    let at = out.sums.len() - qa * qb;
                    for r in 0..qa {
                        for s in 0..qb {
                            out.sums[at + r * qb + s] += za[r] * zb[s];
                        }
                    }
                }
            }
            out
        })
        .collect();
    let mut out = PairCells { k, l, rows: Vec::new(), cols: Vec::new(), sums: Vec::new() };
    for piece in pieces {
        out.rows.extend(piece.rows);
        out.cols.extend(piece.cols);
        out.sums.extend(piece.sums);
    }
    out
}

impl PairCells {
    /// The cells of both, sorted by (row level, column level); equal cells add. `size`
    /// is the number of values of a cell's sum.
    fn merge(&self, other: &PairCells, size: usize) -> PairCells {
        let mut out = PairCells { k: self.k, l: self.l, rows: Vec::new(), cols: Vec::new(), sums: Vec::new() };
        let key = |c: &PairCells, i: usize| (c.rows[i], c.cols[i]);
        let (mut i, mut j) = (0, 0);
        while i < self.rows.len() || j < other.rows.len() {
            let take_self = j == other.rows.len() || (i < self.rows.len() && key(self, i) <= key(other, j));
            let take_other = i == self.rows.len() || (j < other.rows.len() && key(other, j) <= key(self, i));
            let (g, h) = if take_self { key(self, i) } else { key(other, j) };
            out.rows.push(g);
            out.cols.push(h);
            let mut sum = vec![0.0; size];
            if take_self {
                sum.iter_mut().zip(&self.sums[i * size..(i + 1) * size]).for_each(|(s, v)| *s += v);
                i += 1;
            }
            if take_other {
                sum.iter_mut().zip(&other.sums[j * size..(j + 1) * size]).for_each(|(s, v)| *s += v);
                j += 1;
            }
            out.sums.extend(sum);
        }
        out
    }
}

/// `K` (q x q, row-major) with `K W K' = I` on the columns of `W` independent of the
/// earlier ones and zero rows for the others: the inverse Cholesky factor of `W` with
/// column-order pivoting (Gram-Schmidt in the `W` inner product). Returns `K` and which
/// columns were kept.
pub fn inverse_cholesky(w: &[f64], q: usize) -> (Vec<f64>, Vec<bool>) {
    let mut k = vec![0.0; q * q];
    let mut kept = vec![false; q];
    let wv = |u: &[f64], v: &[f64]| -> f64 {
        let mut s = 0.0;
        for a in 0..q {
            for b in 0..q {
                s += u[a] * w[a * q + b] * v[b];
            }
        }
        s
    };
    for j in 0..q {
        let mut u = vec![0.0; q];
        u[j] = 1.0;
        // Two passes of (modified) Gram-Schmidt for accuracy.
        for _ in 0..2 {
            for i in 0..j {
                if kept[i] {
                    let ki = &k[i * q..(i + 1) * q];
                    let c = wv(ki, &u);
                    for a in 0..q {
                        u[a] -= c * ki[a];
                    }
                }
            }
        }
        let norm2 = wv(&u, &u);
        let wjj = w[j * q + j];
        if wjj > 0.0 && norm2 > 1e-10 * wjj {
            let s = norm2.sqrt();
            for a in 0..q {
                k[j * q + a] = u[a] / s;
            }
            kept[j] = true;
        }
    }
    (k, kept)
}

/// Solves the square system `a x = b` (n x n row-major) by Gaussian elimination with
/// partial pivoting.
pub fn solve_dense(a: &[f64], b: &[f64], n: usize) -> Result<Vec<f64>, FitError> {
    let mut m = a.to_vec();
    let mut x = b.to_vec();
    for c in 0..n {
        let piv = (c..n).max_by(|&i, &j| m[i * n + c].abs().total_cmp(&m[j * n + c].abs())).unwrap();
        let scale = (0..n).map(|j| a[c * n + j].abs()).fold(0.0, f64::max).max(1e-300);
        if m[piv * n + c].abs() <= 1e-13 * scale {
            return Err(FitError::NotIdentifiable(
                "the moment equations are singular: a variance parameter is not identified by the design".into(),
            ));
        }
        if piv != c {
            for j in 0..n {
                m.swap(c * n + j, piv * n + j);
            }
            x.swap(c, piv);
        }
        for i in c + 1..n {
            let f = m[i * n + c] / m[c * n + c];
            if f != 0.0 {
                for j in c..n {
                    m[i * n + j] -= f * m[c * n + j];
                }
                x[i] -= f * x[c];
            }
        }
    }
    for c in (0..n).rev() {
        let mut s = x[c];
        for j in c + 1..n {
            s -= m[c * n + j] * x[j];
        }
        x[c] = s / m[c * n + c];
    }
    Ok(x)
}

/// Eigenvalues and eigenvectors (columns of `v`, row-major) of a symmetric q x q matrix
/// by Jacobi rotations.
pub fn symmetric_eigen(s: &[f64], q: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = s.to_vec();
    let mut v = vec![0.0; q * q];
    for i in 0..q {
        v[i * q + i] = 1.0;
    }
    for _ in 0..100 {
        let off: f64 = (0..q)
            .flat_map(|i| (0..q).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * q + j].powi(2))
            .sum();
        let total: f64 = a.iter().map(|x| x * x).sum();
        if off <= 1e-30 * total.max(1e-300) {
            break;
        }
        for p in 0..q {
            for r in p + 1..q {
                let apr = a[p * q + r];
                if apr == 0.0 {
                    continue;
                }
                let theta = (a[r * q + r] - a[p * q + p]) / (2.0 * apr);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let sn = t * c;
                for k in 0..q {
                    let akp = a[k * q + p];
                    let akr = a[k * q + r];
                    a[k * q + p] = c * akp - sn * akr;
                    a[k * q + r] = sn * akp + c * akr;
                }
                for k in 0..q {
                    let apk = a[p * q + k];
                    let ark = a[r * q + k];
                    a[p * q + k] = c * apk - sn * ark;
                    a[r * q + k] = sn * apk + c * ark;
                }
                for k in 0..q {
                    let vkp = v[k * q + p];
                    let vkr = v[k * q + r];
                    v[k * q + p] = c * vkp - sn * vkr;
                    v[k * q + r] = sn * vkp + c * vkr;
                }
            }
        }
    }
    ((0..q).map(|i| a[i * q + i]).collect(), v)
}

/// One variance parameter: entry `(row, col)` (row >= col) of `Sigma_term`, or the
/// residual variance (`term == None`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Param {
    pub term: Option<usize>,
    pub row: usize,
    pub col: usize,
}

/// The parameters (and equations) in order: each term's lower triangle by columns, then `s2`.
pub fn parameter_map(qs: &[usize]) -> Vec<Param> {
    let mut out = Vec::new();
    for (k, &q) in qs.iter().enumerate() {
        for col in 0..q {
            for row in col..q {
                out.push(Param { term: Some(k), row, col });
            }
        }
    }
    out.push(Param { term: None, row: 0, col: 0 });
    out
}

/// `tr(S_ab X E_cd Y')` for q_k x q_l matrices `X`, `Y` (row-major), `S_ab` the symmetric
/// part of `e_a e_b'` and `E_cd = e_c e_d' + e_d e_c'` (`e_c e_c'` when c = d).
#[inline]
fn pair_trace(x: &[f64], y: &[f64], ql: usize, a: usize, b: usize, c: usize, d: usize) -> f64 {
    let xey = |i: usize, j: usize| -> f64 {
        if c == d {
            x[i * ql + c] * y[j * ql + c]
        } else {
            x[i * ql + c] * y[j * ql + d] + x[i * ql + d] * y[j * ql + c]
        }
    };
    0.5 * (xey(a, b) + xey(b, a))
}

/// OLS and the moment equations of a slope model.
#[derive(Debug, Clone)]
pub struct SlopeEquations {
    pub params: Vec<Param>,
    /// `T` (m x m, row-major): `E[Q_e] = sum_m T[e, m] theta_m`.
    pub lhs: Vec<f64>,
    /// The observed quadratic forms `Q_e`.
    pub q: Vec<f64>,
    pub coef_ols: Vec<f64>,
    /// The fixed-effect columns kept (not aliased with earlier ones).
    pub kept: Vec<bool>,
    /// `A = (X'X)^-`, p x p.
    pub xx_inverse: Vec<f64>,
    /// `K_g` of every term and level (q x q each).
    pub k: Vec<Vec<f64>>,
}

/// The moment equations: the quadratic forms of the OLS residuals and their expectations.
pub fn slope_equations(stats: &SlopeStats) -> Result<SlopeEquations, FitError> {
    let p = stats.p;
    let (kx, kept) = inverse_cholesky(&stats.xx, p);
    // A = Kx' Kx.
    let mut a_inv = vec![0.0; p * p];
    for i in 0..p {
        for j in 0..p {
            a_inv[i * p + j] = (0..p).map(|r| kx[r * p + i] * kx[r * p + j]).sum();
        }
    }
    let beta: Vec<f64> = (0..p).map(|i| (0..p).map(|j| a_inv[i * p + j] * stats.xy[j]).sum()).collect();
    let rank = kept.iter().filter(|&&k| k).count();
    let rr = stats.yy - beta.iter().zip(&stats.xy).map(|(b, v)| b * v).sum::<f64>();
    let qs: Vec<usize> = stats.terms.iter().map(|t| t.q).collect();
    let params = parameter_map(&qs);
    let m = params.len();
    let mut lhs = vec![0.0; m * m];
    let mut qv = vec![0.0; m];
    qv[m - 1] = rr;
    // First parameter index of each term.
    let mut first = vec![0usize; qs.len()];
    for k in 1..qs.len() {
        first[k] = first[k - 1] + qs[k - 1] * (qs[k - 1] + 1) / 2;
    }
    let mut ks = Vec::with_capacity(qs.len());
    // Per term: KG_g = K_g G_g (q x p), KGA_g = K_g G_g A (q x p), and X'B X per equation.
    let mut kg_all = Vec::with_capacity(qs.len());
    let mut kga_all = Vec::with_capacity(qs.len());
    let mut xbx: Vec<Vec<f64>> = vec![vec![0.0; p * p]; m];
    let mut xvx: Vec<Vec<f64>> = vec![vec![0.0; p * p]; m];
    // tr(V_m) per parameter and tr(B_e) per equation.
    let mut tr_v = vec![0.0; m];
    for (k, t) in stats.terms.iter().enumerate() {
        let q = t.q;
        let mut kk = vec![0.0; t.n_levels * q * q];
        let mut kg = vec![0.0; t.n_levels * q * p];
        let mut kga = vec![0.0; t.n_levels * q * p];
        let mut qk = vec![0.0; q * q];
        for g in 0..t.n_levels {
            let w = &t.zz[g * q * q..(g + 1) * q * q];
            let (kgm, _) = inverse_cholesky(w, q);
            let gx = &t.zx[g * q * p..(g + 1) * q * p];
            // v_g = K (Z'y - G beta)
            let zr: Vec<f64> =
                (0..q).map(|a| t.zy[g * q + a] - (0..p).map(|j| gx[a * p + j] * beta[j]).sum::<f64>()).collect();
            let v: Vec<f64> = (0..q).map(|a| (0..q).map(|b| kgm[a * q + b] * zr[b]).sum()).collect();
            for a in 0..q {
                for b in 0..q {
                    qk[a * q + b] += v[a] * v[b];
                }
            }
            for a in 0..q {
                for j in 0..p {
                    let s: f64 = (0..q).map(|b| kgm[a * q + b] * gx[b * p + j]).sum();
                    kg[g * q * p + a * p + j] = s;
                }
            }
            for a in 0..q {
                for j in 0..p {
                    kga[g * q * p + a * p + j] = (0..p).map(|r| kg[g * q * p + a * p + r] * a_inv[r * p + j]).sum();
                }
            }
            kk[g * q * q..(g + 1) * q * q].copy_from_slice(&kgm);
            // X'B X += (KG)' S_ab (KG); X'V X += G' E_cd G; tr(V) += tr(E W).
            let kgg = &kg[g * q * p..(g + 1) * q * p];
            let mut e = first[k];
            for col in 0..q {
                for row in col..q {
                    let (a, b, c, d) = (row, col, row, col);
                    for i in 0..p {
                        for j in 0..p {
                            xbx[e][i * p + j] +=
                                0.5 * (kgg[a * p + i] * kgg[b * p + j] + kgg[b * p + i] * kgg[a * p + j]);
                            let e_term = if c == d {
                                gx[c * p + i] * gx[c * p + j]
                            } else {
                                gx[c * p + i] * gx[d * p + j] + gx[d * p + i] * gx[c * p + j]
                            };
                            xvx[e][i * p + j] += e_term;
                        }
                    }
                    tr_v[e] += if c == d { w[c * q + c] } else { 2.0 * w[c * q + d] };
                    e += 1;
                }
            }
        }
        let mut e = first[k];
        for col in 0..q {
            for row in col..q {
                qv[e] = qk[row * q + col];
                e += 1;
            }
        }
        ks.push(kk);
        kg_all.push(kg);
        kga_all.push(kga);
    }
    let trace_ab = |x: &[f64], y: &[f64]| -> f64 {
        (0..p).flat_map(|i| (0..p).map(move |j| (i, j))).map(|(i, j)| x[i * p + j] * y[j * p + i]).sum()
    };
    // tr(XBX A XVX A) and tr(A M)
    let mul = |x: &[f64], y: &[f64]| -> Vec<f64> {
        let mut o = vec![0.0; p * p];
        for i in 0..p {
            for j in 0..p {
                o[i * p + j] = (0..p).map(|r| x[i * p + r] * y[r * p + j]).sum();
            }
        }
        o
    };
    let bxa: Vec<Vec<f64>> = xbx.iter().map(|b| mul(b, &a_inv)).collect();
    let vxa: Vec<Vec<f64>> = xvx.iter().map(|v| mul(v, &a_inv)).collect();
    // Block (k, l): equations of term k, parameters of term l, from the cells.
    let add_block = |k: usize, l: usize, x: &[f64], y: &[f64], lhs: &mut [f64], sign: f64| {
        let (qk, ql) = (qs[k], qs[l]);
        let mut e = first[k];
        for b in 0..qk {
            for a in b..qk {
                let mut pm = first[l];
                for d in 0..ql {
                    for c in d..ql {
                        lhs[e * m + pm] += sign * pair_trace(x, y, ql, a, b, c, d);
                        pm += 1;
                    }
                }
                e += 1;
            }
        }
    };
    // Same term: cells are the levels, P = W_g.
    for (k, t) in stats.terms.iter().enumerate() {
        let q = t.q;
        for g in 0..t.n_levels {
            let kgm = &ks[k][g * q * q..(g + 1) * q * q];
            let w = &t.zz[g * q * q..(g + 1) * q * q];
            let r = matmul(kgm, w, q, q, q);
            let kga = &kga_all[k][g * q * p..(g + 1) * q * p];
            let gx = &t.zx[g * q * p..(g + 1) * q * p];
            let u = matmul_bt(kga, gx, q, p, q);
            add_block(k, k, &r, &r, &mut lhs, 1.0);
            add_block(k, k, &u, &r, &mut lhs, -2.0);
        }
    }
    // Different terms: every cell of the pair, both ways.
    for pc in &stats.pairs {
        let (k, l) = (pc.k, pc.l);
        let (qk, ql) = (qs[k], qs[l]);
        let (tk, tl) = (&stats.terms[k], &stats.terms[l]);
        for (c, (&g, &h)) in pc.rows.iter().zip(&pc.cols).enumerate() {
            let (g, h) = (g as usize, h as usize);
            let pgh = &pc.sums[c * qk * ql..(c + 1) * qk * ql];
            let phg = transpose(pgh, qk, ql);
            // equations of k, parameters of l
            let r = matmul(&ks[k][g * qk * qk..(g + 1) * qk * qk], pgh, qk, qk, ql);
            let u =
                matmul_bt(&kga_all[k][g * qk * p..(g + 1) * qk * p], &tl.zx[h * ql * p..(h + 1) * ql * p], qk, p, ql);
            add_block(k, l, &r, &r, &mut lhs, 1.0);
            add_block(k, l, &u, &r, &mut lhs, -2.0);
            // equations of l, parameters of k
            let r = matmul(&ks[l][h * ql * ql..(h + 1) * ql * ql], &phg, ql, ql, qk);
            let u =
                matmul_bt(&kga_all[l][h * ql * p..(h + 1) * ql * p], &tk.zx[g * qk * p..(g + 1) * qk * p], ql, p, qk);
            add_block(l, k, &r, &r, &mut lhs, 1.0);
            add_block(l, k, &u, &r, &mut lhs, -2.0);
        }
    }
    for e in 0..m - 1 {
        for pm in 0..m - 1 {
            lhs[e * m + pm] += trace_ab(&bxa[e], &vxa[pm]);
        }
        // residual parameter: tr(B) - tr(A X'BX); tr(B) = sum_g tr(S_ab K W K') = [a == b] for kept columns.
        let pe = params[e];
        let kg = pe.term.unwrap();
        let t = &stats.terms[kg];
        let q = t.q;
        let mut tr_b = 0.0;
        if pe.row == pe.col {
            for g in 0..t.n_levels {
                // (K W K')_aa = 1 if column a kept, else 0.
                let kgm = &ks[kg][g * q * q..(g + 1) * q * q];
                if kgm[pe.row * q..(pe.row + 1) * q].iter().any(|&v| v != 0.0) {
                    tr_b += 1.0;
                }
            }
        }
        lhs[e * m + m - 1] = tr_b - (0..p).map(|i| bxa[e][i * p + i]).sum::<f64>();
    }
    // r'r equation.
    for pm in 0..m - 1 {
        lhs[(m - 1) * m + pm] = tr_v[pm] - (0..p).map(|i| vxa[pm][i * p + i]).sum::<f64>();
    }
    lhs[m * m - 1] = (stats.n_obs - rank) as f64;
    Ok(SlopeEquations { params, lhs, q: qv, coef_ols: beta, kept, xx_inverse: a_inv, k: ks })
}

fn matmul(a: &[f64], b: &[f64], n: usize, r: usize, m: usize) -> Vec<f64> {
    let mut o = vec![0.0; n * m];
    for i in 0..n {
        for j in 0..m {
            o[i * m + j] = (0..r).map(|s| a[i * r + s] * b[s * m + j]).sum();
        }
    }
    o
}

/// `a b'` with `a` n x r and `b` m x r.
fn matmul_bt(a: &[f64], b: &[f64], n: usize, r: usize, m: usize) -> Vec<f64> {
    let mut o = vec![0.0; n * m];
    for i in 0..n {
        for j in 0..m {
            o[i * m + j] = (0..r).map(|s| a[i * r + s] * b[j * r + s]).sum();
        }
    }
    o
}

fn transpose(a: &[f64], n: usize, m: usize) -> Vec<f64> {
    let mut o = vec![0.0; n * m];
    for i in 0..n {
        for j in 0..m {
            o[j * n + i] = a[i * m + j];
        }
    }
    o
}

/// The solution of the moment equations.
#[derive(Debug, Clone)]
pub struct SlopeComponents {
    /// The unbiased solution of the square system.
    pub raw: Vec<f64>,
    /// After projecting every `Sigma_k` onto the positive semidefinite matrices.
    pub estimate: Vec<f64>,
    /// Terms whose `Sigma_k` was projected (a singular fit).
    pub at_boundary: Vec<bool>,
}

/// `Sigma_k` (q x q, row-major) from a parameter vector.
pub fn sigma_of(theta: &[f64], params: &[Param], k: usize, q: usize) -> Vec<f64> {
    let mut s = vec![0.0; q * q];
    for (v, pm) in theta.iter().zip(params) {
        if pm.term == Some(k) {
            s[pm.row * q + pm.col] = *v;
            s[pm.col * q + pm.row] = *v;
        }
    }
    s
}

/// Solves the equations; a `Sigma_k` with a negative eigenvalue is clipped to the cone,
/// held, and the equations of the other terms re-solved, until every `Sigma_k` is PSD.
pub fn solve_components(eq: &SlopeEquations, qs: &[usize]) -> Result<SlopeComponents, FitError> {
    let m = eq.params.len();
    let raw = solve_dense(&eq.lhs, &eq.q, m)?;
    let mut held = vec![false; qs.len()];
    // Held at a clipped Sigma_k that is not 0.
    let mut partial = vec![false; qs.len()];
    let mut estimate = raw.clone();
    for _ in 0..=qs.len() {
        let mut changed = false;
        for k in 0..qs.len() {
            if held[k] {
                continue;
            }
            let q = qs[k];
            let s = sigma_of(&estimate, &eq.params, k, q);
            let (values, vectors) = symmetric_eigen(&s, q);
            let scale = values.iter().map(|v| v.abs()).fold(0.0, f64::max);
            if values.iter().any(|&v| v < -1e-12 * scale.max(1e-300)) || values.iter().all(|&v| v <= 0.0) {
                let mut clipped = vec![0.0; q * q];
                for a in 0..q {
                    for b in 0..q {
                        clipped[a * q + b] =
                            (0..q).map(|j| vectors[a * q + j] * values[j].max(0.0) * vectors[b * q + j]).sum();
                    }
                }
                for (v, pm) in estimate.iter_mut().zip(&eq.params) {
                    if pm.term == Some(k) {
                        *v = clipped[pm.row * q + pm.col];
                    }
                }
                held[k] = true;
                partial[k] = clipped.iter().any(|&v| v != 0.0);
                changed = true;
            }
        }
        if !changed {
            break;
        }
        // Re-solve the equations of the free parameters with the held ones fixed.
        let free: Vec<usize> = (0..m).filter(|&i| eq.params[i].term.is_none_or(|k| !held[k])).collect();
        let nf = free.len();
        let mut a = vec![0.0; nf * nf];
        let mut b = vec![0.0; nf];
        // The equation of s2: r'r, less tr(sum_g v_g v_g') of every term held at a clipped
        // Sigma_k that is not 0 (the within-level residual sum of squares, which depends on
        // that Sigma_k only through the fixed effects): clipping a negative eigenvalue
        // enlarges Sigma_k, and r'r would pass that on to s2, even below 0. The raw
        // solution is unchanged (a combination of the same equations).
        let equation = |e: usize| -> (Vec<f64>, f64) {
            let mut row = eq.lhs[e * m..(e + 1) * m].to_vec();
            let mut rhs = eq.q[e];
            if e == m - 1 {
                for (d, pm) in eq.params.iter().enumerate() {
                    if pm.term.is_some_and(|k| partial[k]) && pm.row == pm.col {
                        row.iter_mut().zip(&eq.lhs[d * m..(d + 1) * m]).for_each(|(r, v)| *r -= v);
                        rhs -= eq.q[d];
                    }
                }
            }
            (row, rhs)
        };
        for (i, &e) in free.iter().enumerate() {
            let (row, rhs) = equation(e);
            b[i] = rhs;
            for pm in 0..m {
                if !free.contains(&pm) {
                    b[i] -= row[pm] * estimate[pm];
                }
            }
            for (j, &pm) in free.iter().enumerate() {
                a[i * nf + j] = row[pm];
            }
        }
        let sol = solve_dense(&a, &b, nf)?;
        for (i, &pm) in free.iter().enumerate() {
            estimate[pm] = sol[i];
        }
    }
    let at_boundary = held;
    if estimate[m - 1] < 0.0 {
        return Err(FitError::NotIdentifiable("the residual variance is estimated negative".into()));
    }
    Ok(SlopeComponents { raw, estimate, at_boundary })
}

/// GLS fixed effects, their covariance and the BLUPs.
#[derive(Debug, Clone)]
pub struct SlopeMixed {
    /// Fixed effects (NaN for aliased columns).
    pub coef: Vec<f64>,
    /// Their covariance (p x p, row-major; NaN rows/columns for aliased ones).
    pub vcov: Vec<f64>,
    /// BLUPs per term: level after level, q values each.
    pub ranef: Vec<Vec<f64>>,
    pub iterations: usize,
}

/// A symmetric PSD square root `Lambda` (q x q) with `Lambda Lambda' = Sigma`.
fn sqrt_psd(s: &[f64], q: usize) -> Vec<f64> {
    let (values, vectors) = symmetric_eigen(s, q);
    let mut out = vec![0.0; q * q];
    for a in 0..q {
        for b in 0..q {
            out[a * q + b] = vectors[a * q + b] * values[b].max(0.0).sqrt();
        }
    }
    out
}

/// Where the cells of each row level of a pair of terms start (the cells' own order).
fn row_starts(pc: &PairCells, n_rows: usize) -> Vec<usize> {
    let mut starts = vec![0usize; n_rows + 1];
    for &g in &pc.rows {
        starts[g as usize + 1] += 1;
    }
    for g in 0..n_rows {
        starts[g + 1] += starts[g];
    }
    starts
}

/// Parts into which the cells of a pair are split for the products with the column
/// term: each part adds into a vector of its own, and the parts are summed in order, so
/// the result does not depend on the number of threads.
const CELL_PARTS: usize = 8;

struct Henderson<'s> {
    stats: &'s SlopeStats,
    cols: Vec<usize>,
    lambda: Vec<Vec<f64>>,
    offsets: Vec<usize>,
    s2: f64,
    dim: usize,
    /// Inverses of the diagonal blocks (X part first, then every level).
    x_block_inv: Vec<f64>,
    level_inv: Vec<Vec<f64>>,
    /// Per pair of terms, where the cells of each row level start.
    pair_rows: Vec<Vec<usize>>,
    /// The products run here; the iterations (and `keep_going`) on the caller's thread.
    pool: &'s rayon::ThreadPool,
}

/// Levels per parallel task of the products with Henderson's matrix.
const LEVELS: usize = 1 << 10;

impl Henderson<'_> {
    fn pk(&self) -> usize {
        self.cols.len()
    }
    /// `out = H v`, every level's block on its own (in parallel), the fixed-effect block
    /// summed over fixed blocks of levels in order.
    fn apply(&self, v: &[f64], out: &mut [f64]) {
        self.pool.install(|| self.apply_here(v, out))
    }
    fn apply_here(&self, v: &[f64], out: &mut [f64]) {
        let st = self.stats;
        let (p, pk) = (st.p, self.pk());
        let b = &v[..pk];
        // u = Lambda w per term and level.
        let lw: Vec<Vec<f64>> = st
            .terms
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let q = t.q;
                let lam = &self.lambda[k];
                let w = &v[self.offsets[k]..self.offsets[k] + t.n_levels * q];
                let mut o = vec![0.0; t.n_levels * q];
                o.par_chunks_mut(q).zip(w.par_chunks(q)).for_each(|(og, wg)| {
                    for a in 0..q {
                        og[a] = (0..q).map(|c| lam[a * q + c] * wg[c]).sum();
                    }
                });
                o
            })
            .collect();
        // Column side of every pair: P_gh' (Lambda w)_g added into level h of term l, by
        // fixed parts of the cells (a gather by column level would read the cells at
        // random).
        let column_sums: Vec<Vec<f64>> = st
            .pairs
            .iter()
            .map(|pc| {
                let (qk, ql) = (st.terms[pc.k].q, st.terms[pc.l].q);
                let n_cells = pc.rows.len();
                let parts: Vec<Vec<f64>> = (0..CELL_PARTS)
                    .into_par_iter()
                    .map(|part| {
                        let mut o = vec![0.0; st.terms[pc.l].n_levels * ql];
                        for c in part * n_cells / CELL_PARTS..(part + 1) * n_cells / CELL_PARTS {
                            let (g, h) = (pc.rows[c] as usize, pc.cols[c] as usize);
                            let pgh = &pc.sums[c * qk * ql..(c + 1) * qk * ql];
                            for d in 0..ql {
                                o[h * ql + d] += (0..qk).map(|a| pgh[a * ql + d] * lw[pc.k][g * qk + a]).sum::<f64>();
                            }
                        }
                        o
                    })
                    .collect();
                let mut total = vec![0.0; st.terms[pc.l].n_levels * ql];
                for part in parts {
                    total.iter_mut().zip(&part).for_each(|(t, v)| *t += v);
                }
                total
            })
            .collect();
        let (x_out, mut rest) = out.split_at_mut(pk);
        // X side: X'X b + sum_k sum_g G_g' u_g.
        for (i, &ci) in self.cols.iter().enumerate() {
            x_out[i] = self.cols.iter().enumerate().map(|(j, &cj)| st.xx[ci * p + cj] * b[j]).sum();
        }
        for (k, t) in st.terms.iter().enumerate() {
            let q = t.q;
            let (mine, later) = rest.split_at_mut(t.n_levels * q);
            rest = later;
            let lam = &self.lambda[k];
            let partial: Vec<Vec<f64>> = mine
                .par_chunks_mut(LEVELS * q)
                .enumerate()
                .map(|(block, o)| {
                    let mut xs = vec![0.0; pk];
                    let mut acc = vec![0.0; q];
                    for (at, og) in o.chunks_mut(q).enumerate() {
                        let g = block * LEVELS + at;
                        let gx = &t.zx[g * q * p..(g + 1) * q * p];
                        let w = &t.zz[g * q * q..(g + 1) * q * q];
                        let u = &lw[k][g * q..(g + 1) * q];
                        for a in 0..q {
                            acc[a] = self.cols.iter().enumerate().map(|(j, &cj)| gx[a * p + cj] * b[j]).sum::<f64>()
                                + (0..q).map(|c| w[a * q + c] * u[c]).sum::<f64>();
                        }
                        for (i, &ci) in self.cols.iter().enumerate() {
                            xs[i] += (0..q).map(|a| gx[a * p + ci] * u[a]).sum::<f64>();
                        }
                        for ((pc, starts), column) in st.pairs.iter().zip(&self.pair_rows).zip(&column_sums) {
                            let (qk, ql) = (st.terms[pc.k].q, st.terms[pc.l].q);
                            if pc.k == k {
                                for c in starts[g]..starts[g + 1] {
                                    let h = pc.cols[c] as usize;
                                    let pgh = &pc.sums[c * qk * ql..(c + 1) * qk * ql];
                                    for a in 0..qk {
                                        acc[a] += (0..ql).map(|d| pgh[a * ql + d] * lw[pc.l][h * ql + d]).sum::<f64>();
                                    }
                                }
                            } else if pc.l == k {
                                acc.iter_mut().zip(&column[g * ql..(g + 1) * ql]).for_each(|(a, v)| *a += v);
                            }
                        }
                        let vg = &v[self.offsets[k] + g * q..self.offsets[k] + (g + 1) * q];
                        for c in 0..q {
                            og[c] = (0..q).map(|a| lam[a * q + c] * acc[a]).sum::<f64>() + self.s2 * vg[c];
                        }
                    }
                    xs
                })
                .collect();
            for xs in partial {
                x_out.iter_mut().zip(&xs).for_each(|(o, x)| *o += x);
            }
        }
    }
    fn precondition(&self, r: &[f64], z: &mut [f64]) {
        let pk = self.pk();
        for i in 0..pk {
            z[i] = (0..pk).map(|j| self.x_block_inv[i * pk + j] * r[j]).sum();
        }
        let mut at = pk;
        for (k, t) in self.stats.terms.iter().enumerate() {
            let q = t.q;
            for g in 0..t.n_levels {
                let inv = &self.level_inv[self.level_index(k, g)];
                for a in 0..q {
                    z[at + a] = (0..q).map(|c| inv[a * q + c] * r[at + c]).sum();
                }
                at += q;
            }
        }
    }
    fn level_index(&self, k: usize, g: usize) -> usize {
        self.stats.terms[..k].iter().map(|t| t.n_levels).sum::<usize>() + g
    }
    fn cg(&self, rhs: &[f64], keep_going: &mut dyn FnMut() -> bool) -> Result<(Vec<f64>, usize), FitError> {
        let n = self.dim;
        let mut x = vec![0.0; n];
        let mut r = rhs.to_vec();
        let mut z = vec![0.0; n];
        self.precondition(&r, &mut z);
        let mut d = z.clone();
        let mut rz: f64 = r.iter().zip(&z).map(|(a, b)| a * b).sum();
        let norm0 = rhs.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm0 == 0.0 {
            return Ok((x, 0));
        }
        let mut ad = vec![0.0; n];
        for it in 0..(10 * n + 100).min(20000) {
            let rn = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            if rn <= 1e-13 * norm0 {
                return Ok((x, it));
            }
            if it % 20 == 0 && !keep_going() {
                return Err(FitError::Interrupted);
            }
            self.apply(&d, &mut ad);
            let dad: f64 = d.iter().zip(&ad).map(|(a, b)| a * b).sum();
            let alpha = rz / dad;
            for i in 0..n {
                x[i] += alpha * d[i];
                r[i] -= alpha * ad[i];
            }
            self.precondition(&r, &mut z);
            let rz_new: f64 = r.iter().zip(&z).map(|(a, b)| a * b).sum();
            let beta = rz_new / rz;
            rz = rz_new;
            for i in 0..n {
                d[i] = z[i] + beta * d[i];
            }
        }
        Err(FitError::NotConverged("the conjugate gradients for the mixed-model equations did not converge".into()))
    }
}

fn invert_spd(a: &[f64], n: usize) -> Result<Vec<f64>, FitError> {
    let mut out = vec![0.0; n * n];
    for j in 0..n {
        let mut e = vec![0.0; n];
        e[j] = 1.0;
        let col = solve_dense(a, &e, n)?;
        for i in 0..n {
            out[i * n + j] = col[i];
        }
    }
    Ok(out)
}

/// Henderson's equations at the components `theta` (parameters as [`parameter_map`]).
pub fn solve_slope_mixed(
    stats: &SlopeStats,
    eq: &SlopeEquations,
    theta: &[f64],
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<SlopeMixed, FitError> {
    let p = stats.p;
    let cols: Vec<usize> = (0..p).filter(|&j| eq.kept[j]).collect();
    let pk = cols.len();
    let s2 = *theta.last().unwrap();
    if !(s2 > 0.0) {
        return Err(FitError::NotIdentifiable(
            "the residual variance is 0: the mixed-model equations are singular".into(),
        ));
    }
    let lambda: Vec<Vec<f64>> =
        stats.terms.iter().enumerate().map(|(k, t)| sqrt_psd(&sigma_of(theta, &eq.params, k, t.q), t.q)).collect();
    let mut offsets = Vec::new();
    let mut dim = pk;
    for t in &stats.terms {
        offsets.push(dim);
        dim += t.q * t.n_levels;
    }
    let xsub: Vec<f64> = cols.iter().flat_map(|&i| cols.iter().map(move |&j| stats.xx[i * p + j])).collect();
    let x_block_inv = invert_spd(&xsub, pk)?;
    let mut level_inv = Vec::new();
    for (k, t) in stats.terms.iter().enumerate() {
        let q = t.q;
        let lam = &lambda[k];
        for g in 0..t.n_levels {
            let w = &t.zz[g * q * q..(g + 1) * q * q];
            let lw = matmul(w, lam, q, q, q);
            let mut blk = vec![0.0; q * q];
            for a in 0..q {
                for c in 0..q {
                    blk[a * q + c] =
                        (0..q).map(|r| lam[r * q + a] * lw[r * q + c]).sum::<f64>() + if a == c { s2 } else { 0.0 };
                }
            }
            level_inv.push(invert_spd(&blk, q)?);
        }
    }
    let pair_rows = stats.pairs.iter().map(|pc| row_starts(pc, stats.terms[pc.k].n_levels)).collect();
    let h = Henderson {
        stats,
        cols: cols.clone(),
        lambda,
        offsets: offsets.clone(),
        s2,
        dim,
        x_block_inv,
        level_inv,
        pair_rows,
        pool,
    };
    let mut rhs = vec![0.0; dim];
    for (i, &ci) in cols.iter().enumerate() {
        rhs[i] = stats.xy[ci];
    }
    for (k, t) in stats.terms.iter().enumerate() {
        let q = t.q;
        for g in 0..t.n_levels {
            for c in 0..q {
                rhs[offsets[k] + g * q + c] = (0..q).map(|a| h.lambda[k][a * q + c] * t.zy[g * q + a]).sum();
            }
        }
    }
    let (sol, mut iterations) = h.cg(&rhs, keep_going)?;
    let mut coef = vec![f64::NAN; p];
    for (i, &ci) in cols.iter().enumerate() {
        coef[ci] = sol[i];
    }
    let ranef: Vec<Vec<f64>> = stats
        .terms
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let q = t.q;
            let mut o = vec![0.0; t.n_levels * q];
            for g in 0..t.n_levels {
                for a in 0..q {
                    o[g * q + a] = (0..q).map(|c| h.lambda[k][a * q + c] * sol[offsets[k] + g * q + c]).sum();
                }
            }
            o
        })
        .collect();
    let mut vcov = vec![f64::NAN; p * p];
    for (j, &cj) in cols.iter().enumerate() {
        let mut e = vec![0.0; dim];
        e[j] = 1.0;
        let (col, its) = h.cg(&e, keep_going)?;
        iterations += its;
        for (i, &ci) in cols.iter().enumerate() {
            vcov[ci * p + cj] = s2 * col[i];
        }
    }
    Ok(SlopeMixed { coef, vcov, ranef, iterations })
}

/// Everything a slope fit produces.
#[derive(Debug, Clone)]
pub struct SlopeFit {
    pub equations: SlopeEquations,
    pub components: SlopeComponents,
    pub mixed: SlopeMixed,
}

/// Statistics, moment equations, their solution and Henderson's equations.
/// The parallel work runs on `pool`; `keep_going` is asked between iterations, on the
/// calling thread.
pub fn fit_slopes(
    data: &SlopeData<'_>,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<SlopeFit, FitError> {
    let stats = pool.install(|| SlopeStats::compute(data))?;
    fit_slope_statistics(&stats, pool, keep_going)
}

/// Moment equations, their solution and Henderson's equations from the statistics (of all
/// the rows, or merged from chunks).
pub fn fit_slope_statistics(
    stats: &SlopeStats,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<SlopeFit, FitError> {
    let equations = slope_equations(stats)?;
    let qs: Vec<usize> = stats.terms.iter().map(|t| t.q).collect();
    let components = solve_components(&equations, &qs)?;
    let mixed = solve_slope_mixed(stats, &equations, &components.estimate, pool, keep_going)?;
    Ok(SlopeFit { equations, components, mixed })
}
