//! Shared helpers of the integration tests: an owned design that lends itself as
//! `ModelData`, random design generators, a small dense matrix type written for the
//! tests (independent of the crate's faer code), the dense reference computation
//! of the moment equations straight from their definitions, and owned GLMM rows that
//! lend themselves as chunks.

#![allow(dead_code)]

use fullrandom_core::glmm::GlmmChunk;
use fullrandom_core::{FactorCodes, FixedColumn, ModelData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

// ---------------------------------------------------------------------------------------
// Owned data
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Factor {
    pub name: String,
    pub codes: Vec<i32>,
    pub offset: i32,
    pub n_levels: usize,
}

impl Factor {
    /// A factor from 0-based levels, stored with `offset` added to each code.
    pub fn new(name: &str, levels: &[usize], n_levels: usize, offset: i32) -> Factor {
        Factor { name: name.to_string(), codes: levels.iter().map(|&g| g as i32 + offset).collect(), offset, n_levels }
    }

    pub fn level(&self, i: usize) -> usize {
        (self.codes[i] - self.offset) as usize
    }
}

/// Response, fixed-effect columns (stored column-major, as R does) and factors.
#[derive(Debug, Clone)]
pub struct Design {
    pub y: Vec<f64>,
    /// N x p, column-major.
    pub x: Vec<f64>,
    pub p: usize,
    pub x_names: Vec<String>,
    pub intercept: Option<usize>,
    pub factors: Vec<Factor>,
}

impl Design {
    pub fn new(
        y: Vec<f64>,
        columns: Vec<(String, Vec<f64>)>,
        intercept: Option<usize>,
        factors: Vec<Factor>,
    ) -> Design {
        let n = y.len();
        let p = columns.len();
        let mut x = Vec::with_capacity(n * p);
        let mut x_names = Vec::with_capacity(p);
        for (name, col) in columns {
            assert_eq!(col.len(), n, "column {name}");
            x.extend_from_slice(&col);
            x_names.push(name);
        }
        Design { y, x, p, x_names, intercept, factors }
    }

    pub fn n(&self) -> usize {
        self.y.len()
    }

    pub fn x_at(&self, i: usize, j: usize) -> f64 {
        self.x[j * self.n() + i]
    }

    pub fn column(&self, j: usize) -> &[f64] {
        let n = self.n();
        &self.x[j * n..(j + 1) * n]
    }

    pub fn column_mut(&mut self, j: usize) -> &mut [f64] {
        let n = self.n();
        &mut self.x[j * n..(j + 1) * n]
    }

    pub fn data(&self) -> ModelData<'_> {
        ModelData {
            y: &self.y,
            x: FixedColumn::columns_of(&self.x, self.n()),
            x_names: self.x_names.clone(),
            intercept: self.intercept,
            factors: self
                .factors
                .iter()
                .map(|f| FactorCodes { name: f.name.clone(), codes: &f.codes, offset: f.offset, n_levels: f.n_levels })
                .collect(),
        }
    }

    /// The design restricted to `rows` (in that order); factors keep their level counts.
    pub fn subset(&self, rows: &[usize]) -> Design {
        let columns =
            (0..self.p).map(|j| (self.x_names[j].clone(), rows.iter().map(|&i| self.x_at(i, j)).collect())).collect();
        let factors = self
            .factors
            .iter()
            .map(|f| Factor { codes: rows.iter().map(|&i| f.codes[i]).collect(), ..f.clone() })
            .collect();
        Design::new(rows.iter().map(|&i| self.y[i]).collect(), columns, self.intercept, factors)
    }

    pub fn without_factor(&self, k: usize) -> Design {
        let mut d = self.clone();
        d.factors.remove(k);
        d
    }

    pub fn without_column(&self, j: usize) -> Design {
        let columns =
            (0..self.p).filter(|&c| c != j).map(|c| (self.x_names[c].clone(), self.column(c).to_vec())).collect();
        let intercept = self.intercept.and_then(|i| match i.cmp(&j) {
            std::cmp::Ordering::Less => Some(i),
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Greater => Some(i - 1),
        });
        Design::new(self.y.clone(), columns, intercept, self.factors.clone())
    }
}

// ---------------------------------------------------------------------------------------
// Random designs
// ---------------------------------------------------------------------------------------

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn normal(rng: &mut StdRng, sd: f64) -> f64 {
    Normal::new(0.0, sd).unwrap().sample(rng)
}

/// A level in `0..weights.len()` drawn with probabilities proportional to `weights`.
pub fn weighted_level(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (g, w) in weights.iter().enumerate() {
        if u < *w {
            return g;
        }
        u -= w;
    }
    weights.len() - 1
}

/// Unequal level weights 1, 2, ..., g in shuffled order.
pub fn unequal_weights(rng: &mut StdRng, g: usize) -> Vec<f64> {
    let mut w: Vec<f64> = (1..=g).map(|v| v as f64).collect();
    for i in (1..g).rev() {
        let j = rng.random_range(0..=i);
        w.swap(i, j);
    }
    w
}

/// The design of the dense-reference test: a covariate correlated with a 3-level fixed
/// factor (and with factor `a`), two crossed random factors `a` and `b` with unequal level
/// sizes, and `c` nested in `a`. `b` declares one level that never occurs. The column
/// order of X (and whether there is an intercept at all) and the code offsets vary
/// with the seed.
pub fn crossed_nested_design(seed: u64, with_intercept: bool) -> Design {
    let mut r = rng(seed);
    let n = r.random_range(40..=150usize);
    let ga = r.random_range(5..=8usize);
    let gb = r.random_range(3..=5usize);
    let sub = 3usize;
    let wa = unequal_weights(&mut r, ga);
    let wb = unequal_weights(&mut r, gb);
    let mut f = Vec::with_capacity(n);
    let mut a = Vec::with_capacity(n);
    let mut b = Vec::with_capacity(n);
    let mut c = Vec::with_capacity(n);
    for i in 0..n {
        // Every level of the fixed factor and of a and b occurs at least once.
        f.push(if i < 3 { i } else { r.random_range(0..3usize) });
        let ai = if i < ga { i } else { weighted_level(&mut r, &wa) };
        a.push(ai);
        b.push(if i < gb { (i + 1) % gb } else { weighted_level(&mut r, &wb) });
        c.push(ai * sub + r.random_range(0..sub));
    }
    let ua: Vec<f64> = (0..ga).map(|_| normal(&mut r, 1.5)).collect();
    let ub: Vec<f64> = (0..gb).map(|_| normal(&mut r, 1.0)).collect();
    let uc: Vec<f64> = (0..ga * sub).map(|_| normal(&mut r, 0.7)).collect();
    let xa: Vec<f64> = (0..ga).map(|_| normal(&mut r, 1.0)).collect();
    let beta_f = [0.0, 1.0, -2.0];
    let mut x = Vec::with_capacity(n);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let xi = 1.5 * f[i] as f64 + xa[a[i]] + normal(&mut r, 1.0);
        x.push(xi);
        y.push(10.0 + 0.5 * xi + beta_f[f[i]] + ua[a[i]] + ub[b[i]] + uc[c[i]] + normal(&mut r, 1.0));
    }
    let dummy = |level: usize| -> Vec<f64> { f.iter().map(|&v| if v == level { 1.0 } else { 0.0 }).collect() };
    let mut columns: Vec<(String, Vec<f64>)> = vec![("f2".into(), dummy(1)), ("f3".into(), dummy(2)), ("x".into(), x)];
    if with_intercept {
        columns.push(("(Intercept)".into(), vec![1.0; n]));
    }
    // Shuffle the columns so the intercept is not always first.
    for i in (1..columns.len()).rev() {
        let j = r.random_range(0..=i);
        columns.swap(i, j);
    }
    let intercept = columns.iter().position(|(name, _)| name == "(Intercept)");
    let offset_a = r.random_range(0..=1);
    let offset_b = r.random_range(0..=1);
    let factors = vec![
        Factor::new("a", &a, ga, offset_a),
        Factor::new("b", &b, gb + 1, offset_b),
        Factor::new("a:c", &c, ga * sub, 1),
    ];
    Design::new(y, columns, intercept, factors)
}

/// An unbalanced crossed design with an intercept, a covariate correlated with `a`,
/// and factors `a` (ga levels) and `b` (gb levels) of unequal sizes. The response is
/// filled by `simulate_crossed`.
pub fn crossed_design(seed: u64, n: usize, ga: usize, gb: usize) -> Design {
    let mut r = rng(seed);
    let wa = unequal_weights(&mut r, ga);
    let wb = unequal_weights(&mut r, gb);
    let a: Vec<usize> = (0..n).map(|i| if i < ga { i } else { weighted_level(&mut r, &wa) }).collect();
    let b: Vec<usize> = (0..n).map(|i| if i < gb { i } else { weighted_level(&mut r, &wb) }).collect();
    let xa: Vec<f64> = (0..ga).map(|_| normal(&mut r, 1.0)).collect();
    let x: Vec<f64> = (0..n).map(|i| xa[a[i]] + normal(&mut r, 1.0)).collect();
    let columns = vec![("(Intercept)".into(), vec![1.0; n]), ("x".into(), x)];
    let factors = vec![Factor::new("a", &a, ga, 0), Factor::new("b", &b, gb, 0)];
    let mut d = Design::new(vec![0.0; n], columns, Some(0), factors);
    simulate_crossed(&mut d, &mut r, [1.0, 0.8, 1.2]);
    d
}

/// Fills `y = 2 + 0.3 x + u_a + u_b + e` with normal effects of the given standard
/// deviations (of a, b and e).
pub fn simulate_crossed(d: &mut Design, r: &mut StdRng, sd: [f64; 3]) {
    let ua: Vec<f64> = (0..d.factors[0].n_levels).map(|_| normal(r, sd[0])).collect();
    let ub: Vec<f64> = (0..d.factors[1].n_levels).map(|_| normal(r, sd[1])).collect();
    for i in 0..d.n() {
        let (ga, gb) = (d.factors[0].level(i), d.factors[1].level(i));
        d.y[i] = 2.0 + 0.3 * d.x_at(i, 1) + ua[ga] + ub[gb] + normal(r, sd[2]);
    }
}

// ---------------------------------------------------------------------------------------
// Dense matrices (row-major), written for the tests
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Dense {
    pub rows: usize,
    pub cols: usize,
    pub v: Vec<f64>,
}

impl Dense {
    pub fn zeros(rows: usize, cols: usize) -> Dense {
        Dense { rows, cols, v: vec![0.0; rows * cols] }
    }

    pub fn identity(n: usize) -> Dense {
        let mut m = Dense::zeros(n, n);
        for i in 0..n {
            m.v[i * n + i] = 1.0;
        }
        m
    }

    pub fn from_fn(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f64) -> Dense {
        let mut m = Dense::zeros(rows, cols);
        for i in 0..rows {
            for j in 0..cols {
                m.v[i * cols + j] = f(i, j);
            }
        }
        m
    }

    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.v[i * self.cols + j]
    }

    pub fn t(&self) -> Dense {
        Dense::from_fn(self.cols, self.rows, |i, j| self.at(j, i))
    }

    pub fn mul(&self, other: &Dense) -> Dense {
        assert_eq!(self.cols, other.rows);
        let mut out = Dense::zeros(self.rows, other.cols);
        for i in 0..self.rows {
            for k in 0..self.cols {
                let a = self.v[i * self.cols + k];
                if a == 0.0 {
                    continue;
                }
                let row = &other.v[k * other.cols..(k + 1) * other.cols];
                let dst = &mut out.v[i * other.cols..(i + 1) * other.cols];
                for (d, b) in dst.iter_mut().zip(row) {
                    *d += a * b;
                }
            }
        }
        out
    }

    pub fn sub(&self, other: &Dense) -> Dense {
        assert_eq!((self.rows, self.cols), (other.rows, other.cols));
        Dense { rows: self.rows, cols: self.cols, v: self.v.iter().zip(&other.v).map(|(a, b)| a - b).collect() }
    }

    pub fn trace(&self) -> f64 {
        (0..self.rows.min(self.cols)).map(|i| self.at(i, i)).sum()
    }

    /// `tr(self' other)`, the sum of the elementwise products.
    pub fn frobenius_dot(&self, other: &Dense) -> f64 {
        assert_eq!((self.rows, self.cols), (other.rows, other.cols));
        self.v.iter().zip(&other.v).map(|(a, b)| a * b).sum()
    }

    /// Inverse by Gauss-Jordan elimination with partial pivoting.
    pub fn inverse(&self) -> Dense {
        assert_eq!(self.rows, self.cols);
        let n = self.rows;
        let mut a = self.clone();
        let mut inv = Dense::identity(n);
        for col in 0..n {
            let pivot = (col..n).max_by(|&i, &j| a.at(i, col).abs().total_cmp(&a.at(j, col).abs())).unwrap();
            assert!(a.at(pivot, col) != 0.0, "singular matrix in the reference computation");
            for m in [&mut a, &mut inv] {
                for j in 0..n {
                    m.v.swap(col * n + j, pivot * n + j);
                }
            }
            let d = a.at(col, col);
            for j in 0..n {
                a.v[col * n + j] /= d;
                inv.v[col * n + j] /= d;
            }
            for i in 0..n {
                if i != col {
                    let factor = a.at(i, col);
                    if factor != 0.0 {
                        for j in 0..n {
                            a.v[i * n + j] -= factor * a.v[col * n + j];
                            inv.v[i * n + j] -= factor * inv.v[col * n + j];
                        }
                    }
                }
            }
        }
        inv
    }

    pub fn solve(&self, b: &[f64]) -> Vec<f64> {
        let inv = self.inverse();
        (0..self.rows).map(|i| (0..self.cols).map(|j| inv.at(i, j) * b[j]).sum()).collect()
    }

    pub fn column_vector(v: &[f64]) -> Dense {
        Dense { rows: v.len(), cols: 1, v: v.to_vec() }
    }
}

// ---------------------------------------------------------------------------------------
// The reference computation
// ---------------------------------------------------------------------------------------

/// The moment equations computed from their definitions with dense N x N matrices.
#[derive(Debug, Clone)]
pub struct Reference {
    /// Rows k = 0..K, columns (s2_1..s2_K, s2).
    pub lhs: Vec<Vec<f64>>,
    pub q: Vec<f64>,
    /// OLS coefficients of every column (X must have full column rank).
    pub coef: Vec<f64>,
    pub rss: f64,
}

/// The indicator matrix of the non-empty levels of a factor (N x G).
pub fn indicator(levels: &[usize], n_levels: usize) -> Dense {
    let mut column_of = vec![usize::MAX; n_levels];
    let mut g = 0;
    for &l in levels {
        if column_of[l] == usize::MAX {
            column_of[l] = g;
            g += 1;
        }
    }
    Dense::from_fn(levels.len(), g, |i, j| if column_of[levels[i]] == j { 1.0 } else { 0.0 })
}

pub fn dense_reference(d: &Design) -> Reference {
    let n = d.n();
    let x = Dense::from_fn(n, d.p, |i, j| d.x_at(i, j));
    let y = Dense::column_vector(&d.y);
    let w = x.t().mul(&x).inverse();
    let coef = w.mul(&x.t().mul(&y)).v;
    // M = I - X W X'
    let m = Dense::identity(n).sub(&x.mul(&w).mul(&x.t()));
    let r = m.mul(&y);
    let rss = r.frobenius_dot(&r);
    // Z_k the indicators of factor k; factor 0 has A_0 = I (Q_0 = r'r), whether or not
    // X has an intercept. Z_0 is a placeholder for the index (factor 0 has no variance).
    let mut z: Vec<Dense> = vec![Dense::zeros(n, 0)];
    for f in &d.factors {
        let levels: Vec<usize> = (0..n).map(|i| f.level(i)).collect();
        z.push(indicator(&levels, f.n_levels));
    }
    // A_k B = B - Z_k (Z_k'Z_k)^-1 Z_k' B, with the inverse taken literally.
    let apply_a = |k: usize, b: &Dense| -> Dense {
        if k == 0 {
            return b.clone();
        }
        let zk = &z[k];
        let dinv = zk.t().mul(zk).inverse();
        b.sub(&zk.mul(&dinv.mul(&zk.t().mul(b))))
    };
    let mz: Vec<Dense> = z.iter().map(|zl| m.mul(zl)).collect();
    let k_factors = d.factors.len();
    let mut lhs = vec![vec![0.0; k_factors + 1]; k_factors + 1];
    let mut q = vec![0.0; k_factors + 1];
    for k in 0..=k_factors {
        q[k] = r.frobenius_dot(&apply_a(k, &r));
        for l in 1..=k_factors {
            // tr(Z_l' M A_k M Z_l)
            lhs[k][l - 1] = mz[l].frobenius_dot(&apply_a(k, &mz[l]));
        }
        // tr(A_k M)
        lhs[k][k_factors] = apply_a(k, &m).trace();
    }
    Reference { lhs, q, coef, rss }
}

// ---------------------------------------------------------------------------------------
// Comparisons
// ---------------------------------------------------------------------------------------

/// `|a - b| / |b|` (infinite when b = 0 and a != b).
pub fn rel(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / b.abs()
    }
}

/// `|a - b| / max(|b|, floor)`.
pub fn rel_floor(a: f64, b: f64, floor: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / b.abs().max(floor)
    }
}

/// Largest elementwise relative difference of two vectors, each relative to the
/// reference element, but never to less than `floor` times the largest reference element.
pub fn worst_rel(a: &[f64], b: &[f64], floor: f64) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| rel_floor(*x, *y, floor * scale)).fold(0.0, f64::max)
}

pub fn lhs_rows(lhs: &faer::Mat<f64>) -> Vec<Vec<f64>> {
    (0..lhs.nrows()).map(|i| (0..lhs.ncols()).map(|j| lhs[(i, j)]).collect()).collect()
}

// ---------------------------------------------------------------------------------------
// GLMM rows
// ---------------------------------------------------------------------------------------

/// Owned rows of a GLMM with an intercept and one covariate `x`: the response, the
/// binomial trials and offsets (`None`: 1 and 0, passed to the fit as absent), and the
/// 0-based codes of each term.
#[derive(Debug, Clone, Default)]
pub struct GlmmRows {
    pub y: Vec<f64>,
    pub trials: Option<Vec<f64>>,
    pub offset: Option<Vec<f64>>,
    pub x: Vec<f64>,
    pub codes: Vec<Vec<i32>>,
    pub n_levels: Vec<usize>,
}

impl GlmmRows {
    /// No rows yet, with the given terms.
    pub fn empty(n_levels: &[usize]) -> GlmmRows {
        GlmmRows { codes: vec![Vec::new(); n_levels.len()], n_levels: n_levels.to_vec(), ..GlmmRows::default() }
    }

    pub fn n(&self) -> usize {
        self.y.len()
    }

    /// The trials of row `i` (1 without trials).
    pub fn trials_at(&self, i: usize) -> f64 {
        self.trials.as_ref().map_or(1.0, |t| t[i])
    }

    /// The offset of row `i` (0 without offsets).
    pub fn offset_at(&self, i: usize) -> f64 {
        self.offset.as_ref().map_or(0.0, |o| o[i])
    }

    /// The level of row `i` in term `k`.
    pub fn level(&self, k: usize, i: usize) -> usize {
        self.codes[k][i] as usize
    }

    /// The rows in `range` as a chunk (intercept and `x`; terms named g0, g1, ...).
    pub fn chunk(&self, range: std::ops::Range<usize>) -> GlmmChunk<'_> {
        let factors = self
            .codes
            .iter()
            .zip(&self.n_levels)
            .enumerate()
            .map(|(k, (c, &n))| FactorCodes { name: format!("g{k}"), codes: &c[range.clone()], offset: 0, n_levels: n })
            .collect();
        GlmmChunk {
            data: ModelData {
                y: &self.y[range.clone()],
                x: vec![FixedColumn::Ones, FixedColumn::Values(&self.x[range.clone()])],
                x_names: vec!["(Intercept)".into(), "x".into()],
                intercept: Some(0),
                factors,
            },
            trials: self.trials.as_ref().map(|t| &t[range.clone()]),
            offset: self.offset.as_ref().map(|o| &o[range]),
        }
    }

    /// The rows in `pieces` consecutive chunks of (nearly) equal size.
    pub fn chunks(&self, pieces: usize) -> Vec<GlmmChunk<'_>> {
        let n = self.n();
        (0..pieces).map(|c| self.chunk(c * n / pieces..(c + 1) * n / pieces)).collect()
    }
}
