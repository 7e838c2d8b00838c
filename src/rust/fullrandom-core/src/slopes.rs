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
//! (`Sigma_k = Lambda_k Lambda_k'`, which also covers a singular `Sigma_k`), with the
//! fixed effects eliminated by the Schur complement as [`crate::mixed`] does for
//! intercepts: `C = Lambda'Z'Z Lambda + s2 I` is solved for `[Lambda'Z'X | Lambda'Z'y]`
//! by conjugate gradients preconditioned by symmetric block Gauss-Seidel over the terms
//! (7 iterations at 10^7 rows of examples/slope_timing.rs, as for intercepts, against 9 with the
//! fixed effects in the system), giving the GLS fixed effects, their covariance and the
//! BLUPs. The passes over the cells run kernels compiled for the usual sizes (terms of
//! up to 3 columns, up to 6 right-hand sides).
//!
//! This solver is still a twin of [`crate::mixed`]'s `RandomEffectsMatrix` (the q = 1
//! case). Sharing one would take: per-level `q x q` diagonal blocks and their inverses in
//! place of the scalar diagonal; per-cell `q_k x q_l` blocks in place of the cell counts
//! (the GLMM's per-cell weights are the q = 1 case of them), stored both ways as the
//! intercept path stores the transposed cells (here the column side of a pair scatters
//! into 8 parts instead of gathering), with `Lambda_k' P Lambda_l` folded in at set-up;
//! `add_cell_sums` multiplying a block instead of a count; `level_sums` giving `q` rows a
//! level. The statistics would then be [`SlopeStats`] for every model
//! ([`crate::stats`]'s counts and sums are its q = 1 case, plus the pilot shift).
//!
//! The statistics are sums over rows: the statistics of chunks of rows merge
//! ([`SlopeStats::merge`]) into those of all the rows, so a fit in chunks is exact.

use crate::data::FixedColumn;
use crate::error::{try_filled, try_with_capacity, FitError};
use crate::grouping::{balanced_blocks, bucket_sort, with_bucket};
use rayon::prelude::*;
use std::ops::Range;

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
        let xs: Vec<Option<&[f64]>> = data.x.iter().map(column_slice).collect();
        let blocks: Vec<(Vec<f64>, Vec<f64>, f64)> = (0..n.div_ceil(ROWS))
            .into_par_iter()
            .map(|b| {
                let rows = b * ROWS..((b + 1) * ROWS).min(n);
                // Dot products of the block's columns (contiguous, so they vectorise).
                let ones = vec![1.0; rows.len()];
                let cols: Vec<&[f64]> = xs.iter().map(|c| c.map_or(&ones[..], |v| &v[rows.clone()])).collect();
                let y = &data.y[rows.clone()];
                let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(u, v)| u * v).sum::<f64>();
                let mut xx = vec![0.0; p * p];
                for a in 0..p {
                    for c in 0..=a {
                        xx[a * p + c] = dot(cols[a], cols[c]);
                        xx[c * p + a] = xx[a * p + c];
                    }
                }
                (xx, cols.iter().map(|c| dot(c, y)).collect(), dot(y, y))
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
        // The level sums of the terms alongside the cells of the pairs.
        let (terms, pairs) = rayon::join(
            || data.terms.par_iter().map(|t| term_sums(data, t)).collect::<Result<Vec<_>, _>>(),
            || -> Result<Vec<PairCells>, FitError> {
                let mut pairs = Vec::new();
                for k in 0..data.terms.len() {
                    for l in k + 1..data.terms.len() {
                        pairs.push(pair_cells(&data.terms[k], &data.terms[l], k, l)?);
                    }
                }
                Ok(pairs)
            },
        );
        let (terms, pairs) = (terms?, pairs?);
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

/// A column as a slice (`None` for a column of ones), so the passes below read it
/// without matching on [`FixedColumn`] per value.
fn column_slice<'a>(c: &FixedColumn<'a>) -> Option<&'a [f64]> {
    match c {
        FixedColumn::Ones => None,
        FixedColumn::Values(v) => Some(v),
    }
}

#[inline(always)]
fn at(c: Option<&[f64]>, i: usize) -> f64 {
    match c {
        None => 1.0,
        Some(v) => v[i],
    }
}

/// The level sums of one term: one sequential scatter over the rows per column `a` of
/// the term (the tasks run in parallel), adding `z_a (z, x, y)` of each row into its
/// level's sums, so every level's rows are added in row order whatever the number of
/// threads.
fn term_sums(data: &SlopeData<'_>, t: &SlopeTerm<'_>) -> Result<TermSums, FitError> {
    let n = data.y.len();
    let (q, p) = (t.q(), data.x.len());
    let width = q + p + 1;
    let zs: Vec<Option<&[f64]>> = t.z.iter().map(column_slice).collect();
    let xs: Vec<Option<&[f64]>> = data.x.iter().map(column_slice).collect();
    let size = t.n_levels.saturating_mul(width);
    let parts: Vec<Vec<f64>> = (0..q)
        .into_par_iter()
        .map(|a| -> Result<Vec<f64>, FitError> {
            let mut s = try_filled(size, 0.0, &format!("the level sums of '{}'", t.name))?;
            let za = zs[a];
            for i in 0..n {
                let v = at(za, i);
                let row = &mut s[t.level(i) * width..(t.level(i) + 1) * width];
                for (o, &zb) in row[..q].iter_mut().zip(&zs) {
                    *o += v * at(zb, i);
                }
                for (o, &xb) in row[q..q + p].iter_mut().zip(&xs) {
                    *o += v * at(xb, i);
                }
                row[q + p] += v * data.y[i];
            }
            Ok(s)
        })
        .collect::<Result<_, _>>()?;
    let what = format!("the level sums of '{}'", t.name);
    let mut out = TermSums {
        q,
        n_levels: t.n_levels,
        zz: try_filled(t.n_levels.saturating_mul(q * q), 0.0, &what)?,
        zx: try_filled(t.n_levels.saturating_mul(q * p), 0.0, &what)?,
        zy: try_filled(t.n_levels.saturating_mul(q), 0.0, &what)?,
    };
    for (a, s) in parts.iter().enumerate() {
        for g in 0..t.n_levels {
            let row = &s[g * width..(g + 1) * width];
            out.zz[g * q * q + a * q..g * q * q + (a + 1) * q].copy_from_slice(&row[..q]);
            out.zx[g * q * p + a * p..g * q * p + (a + 1) * p].copy_from_slice(&row[q..q + p]);
            out.zy[g * q + a] = row[q + p];
        }
    }
    Ok(out)
}

/// A pointer through which parallel tasks write disjoint places of one buffer.
struct Places(*mut u32);
// SAFETY: the tasks of `pair_cells` write disjoint places (every row belongs to one level
// of `a`, and each task owns its levels' rows).
unsafe impl Sync for Places {}

/// The cells of terms `a` (rows) and `b` (columns), sorted by level of `a` and then of
/// `b`, with their sums. Two stable counting sorts ([`crate::grouping`]'s parallel
/// `bucket_sort`, as [`crate::grouping::CellCounts::count`] sorts the codes), first of
/// `(level of a, row)` by level of `b`, then of `(level of b, row)` by level of `a`
/// (both read their input in order), list every level of `a`'s rows by level of `b`:
/// each cell is a run. Balanced blocks of levels of `a` find their cells in parallel and
/// give every row its cell; then one sequential scatter over the rows per entry of the
/// cells' `q_a x q_b` sums adds each row into its cell, in row order (entries of two
/// intercepts are the counts). Memory: 8 bytes a row for each sort, then 4.
fn pair_cells(a: &SlopeTerm<'_>, b: &SlopeTerm<'_>, k: usize, l: usize) -> Result<PairCells, FitError> {
    let n = a.codes.len();
    let (qa, qb) = (a.q(), b.q());
    let what = format!("the cells of '{}' and '{}'", a.name, b.name);
    let by_col = bucket_sort(n, b.n_levels, |range| range.map(|i| (b.level(i), (a.level(i) as u32, i as u32))));
    let by_row = bucket_sort(n, a.n_levels, |range| {
        with_bucket(&by_col.starts, &by_col.values, range).map(|(h, (g, i))| (g as usize, (h, i)))
    });
    drop(by_col);
    let starts = &by_row.starts;
    let blocks = balanced_blocks(starts);
    // The cells of every block: per level, how many, and their levels of b.
    let pieces: Vec<(Vec<usize>, Vec<u32>)> = blocks
        .par_iter()
        .map(|block| {
            let mut lens = Vec::with_capacity(block.len());
            let mut cols: Vec<u32> = Vec::new();
            for g in block.clone() {
                let before = cols.len();
                for &(h, _) in &by_row.values[starts[g]..starts[g + 1]] {
                    if cols.len() == before || *cols.last().unwrap() != h {
                        cols.push(h);
                    }
                }
                lens.push(cols.len() - before);
            }
            (lens, cols)
        })
        .collect();
    let mut first_cell = Vec::with_capacity(pieces.len());
    let mut n_cells = 0usize;
    for (_, cols) in &pieces {
        first_cell.push(n_cells);
        n_cells += cols.len();
    }
    let mut cell_of = try_filled(n, 0u32, &what)?;
    let places = Places(cell_of.as_mut_ptr());
    blocks.par_iter().zip(&first_cell).for_each(|(block, &first)| {
        let places = &places;
        // The cell of the current run (first - 1 before the first run of the block).
        let mut cell = first.wrapping_sub(1);
        for g in block.clone() {
            let mut last = None;
            for &(h, i) in &by_row.values[starts[g]..starts[g + 1]] {
                if last != Some(h) {
                    cell = cell.wrapping_add(1);
                    last = Some(h);
                }
                // SAFETY: `i < n`, and row `i` is in the bucket of its own level of `a`
                // only, which this task alone reads.
                unsafe { places.0.add(i as usize).write(cell as u32) };
            }
        }
    });
    drop(by_row);
    let za: Vec<Option<&[f64]>> = a.z.iter().map(column_slice).collect();
    let zb: Vec<Option<&[f64]>> = b.z.iter().map(column_slice).collect();
    let entries: Vec<(usize, usize)> = (0..qa).flat_map(|r| (0..qb).map(move |s| (r, s))).collect();
    let sums: Vec<Vec<f64>> = entries
        .par_iter()
        .map(|&(r, s)| -> Result<Vec<f64>, FitError> {
            let mut out = try_filled(n_cells, 0.0, &what)?;
            if za[r].is_none() && zb[s].is_none() {
                for &c in &cell_of {
                    out[c as usize] += 1.0;
                }
            } else {
                for (i, &c) in cell_of.iter().enumerate() {
                    out[c as usize] += at(za[r], i) * at(zb[s], i);
                }
            }
            Ok(out)
        })
        .collect::<Result<_, _>>()?;
    drop(cell_of);
    let size = qa * qb;
    let mut out = PairCells {
        k,
        l,
        rows: try_with_capacity(n_cells, &what)?,
        cols: try_with_capacity(n_cells, &what)?,
        sums: try_filled(n_cells.saturating_mul(size), 0.0, &what)?,
    };
    let mut g = 0u32;
    for (lens, cols) in pieces {
        for len in lens {
            out.rows.extend(std::iter::repeat_n(g, len));
            g += 1;
        }
        out.cols.extend_from_slice(&cols);
    }
    for (e, values) in sums.iter().enumerate() {
        for (c, &v) in values.iter().enumerate() {
            out.sums[c * size + e] = v;
        }
    }
    Ok(out)
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
    // Block (k, l): equations of term k, parameters of term l. Every cell adds
    // `tr(S_ab X E_cd Y')` for q_k x q_l matrices X = R - 2U, Y = R (see below), which is
    // linear in the products X_ic Y_jd: the cells add those into `t` (n x n, n = q_k q_l,
    // `t[(i q_l + c) n + j q_l + d]`), and this maps the sum into the equations once.
    let add_block = |k: usize, l: usize, t: &[f64], lhs: &mut [f64]| {
        let (qk, ql) = (qs[k], qs[l]);
        let n = qk * ql;
        let xy = |i: usize, c: usize, j: usize, d: usize| t[(i * ql + c) * n + j * ql + d];
        let mut e = first[k];
        for b in 0..qk {
            for a in b..qk {
                let mut pm = first[l];
                for d in 0..ql {
                    for c in d..ql {
                        let xey = |i: usize, j: usize| {
                            if c == d {
                                xy(i, c, j, c)
                            } else {
                                xy(i, c, j, d) + xy(i, d, j, c)
                            }
                        };
                        lhs[e * m + pm] += 0.5 * (xey(a, b) + xey(b, a));
                        pm += 1;
                    }
                }
                e += 1;
            }
        }
    };
    // t += (R - 2U) (x) R for q_k x q_l matrices R, U.
    let add_outer = |t: &mut [f64], r: &[f64], u: &[f64]| {
        let n = r.len();
        for i in 0..n {
            let x = r[i] - 2.0 * u[i];
            for (tj, &rj) in t[i * n..(i + 1) * n].iter_mut().zip(r) {
                *tj += x * rj;
            }
        }
    };
    // Same term: cells are the levels, P = W_g. Fixed blocks of levels run in parallel,
    // each into a table of its own; the tables are added in block order.
    let mut tables: Vec<Vec<f64>> = Vec::new();
    for (k, t) in stats.terms.iter().enumerate() {
        let q = t.q;
        let part: Vec<Vec<f64>> = (0..t.n_levels.div_ceil(CELL_BLOCK))
            .into_par_iter()
            .map(|block| {
                let mut table = vec![0.0; m * m];
                let (mut r, mut u) = (vec![0.0; q * q], vec![0.0; q * q]);
                let mut tensor = vec![0.0; q * q * q * q];
                for g in block * CELL_BLOCK..((block + 1) * CELL_BLOCK).min(t.n_levels) {
                    let kgm = &ks[k][g * q * q..(g + 1) * q * q];
                    let w = &t.zz[g * q * q..(g + 1) * q * q];
                    matmul_into(kgm, w, q, q, q, &mut r);
                    let kga = &kga_all[k][g * q * p..(g + 1) * q * p];
                    let gx = &t.zx[g * q * p..(g + 1) * q * p];
                    matmul_bt_into(kga, gx, q, p, q, &mut u);
                    add_outer(&mut tensor, &r, &u);
                }
                add_block(k, k, &tensor, &mut table);
                table
            })
            .collect();
        tables.extend(part);
    }
    // Different terms: every cell of the pair, both ways, by fixed blocks of cells.
    for pc in &stats.pairs {
        let (k, l) = (pc.k, pc.l);
        let (qk, ql) = (qs[k], qs[l]);
        let (tk, tl) = (&stats.terms[k], &stats.terms[l]);
        let n_cells = pc.rows.len();
        let part: Vec<Vec<f64>> = (0..n_cells.div_ceil(CELL_BLOCK))
            .into_par_iter()
            .map(|block| {
                let mut table = vec![0.0; m * m];
                let (mut phg, mut r1, mut u1) = (vec![0.0; qk * ql], vec![0.0; qk * ql], vec![0.0; qk * ql]);
                let (mut r2, mut u2) = (vec![0.0; qk * ql], vec![0.0; qk * ql]);
                let n = qk * ql;
                let (mut t1, mut t2) = (vec![0.0; n * n], vec![0.0; n * n]);
                for c in block * CELL_BLOCK..((block + 1) * CELL_BLOCK).min(n_cells) {
                    let (g, h) = (pc.rows[c] as usize, pc.cols[c] as usize);
                    let pgh = &pc.sums[c * qk * ql..(c + 1) * qk * ql];
                    for i in 0..qk {
                        for j in 0..ql {
                            phg[j * qk + i] = pgh[i * ql + j];
                        }
                    }
                    // equations of k, parameters of l
                    matmul_into(&ks[k][g * qk * qk..(g + 1) * qk * qk], pgh, qk, qk, ql, &mut r1);
                    matmul_bt_into(
                        &kga_all[k][g * qk * p..(g + 1) * qk * p],
                        &tl.zx[h * ql * p..(h + 1) * ql * p],
                        qk,
                        p,
                        ql,
                        &mut u1,
                    );
                    add_outer(&mut t1, &r1, &u1);
                    // equations of l, parameters of k
                    matmul_into(&ks[l][h * ql * ql..(h + 1) * ql * ql], &phg, ql, ql, qk, &mut r2);
                    matmul_bt_into(
                        &kga_all[l][h * ql * p..(h + 1) * ql * p],
                        &tk.zx[g * qk * p..(g + 1) * qk * p],
                        ql,
                        p,
                        qk,
                        &mut u2,
                    );
                    add_outer(&mut t2, &r2, &u2);
                }
                add_block(k, l, &t1, &mut table);
                add_block(l, k, &t2, &mut table);
                table
            })
            .collect();
        tables.extend(part);
    }
    for table in tables {
        lhs.iter_mut().zip(&table).for_each(|(a, b)| *a += b);
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

/// Levels or cells per parallel task of the moment equations (fixed, so that their
/// tables are added in a fixed order whatever the number of threads).
const CELL_BLOCK: usize = 1 << 12;

/// `o = a b` with `a` n x r and `b` r x m.
fn matmul_into(a: &[f64], b: &[f64], n: usize, r: usize, m: usize, o: &mut [f64]) {
    for i in 0..n {
        for j in 0..m {
            o[i * m + j] = (0..r).map(|s| a[i * r + s] * b[s * m + j]).sum();
        }
    }
}

/// `o = a b'` with `a` n x r and `b` m x r.
fn matmul_bt_into(a: &[f64], b: &[f64], n: usize, r: usize, m: usize, o: &mut [f64]) {
    for i in 0..n {
        for j in 0..m {
            o[i * m + j] = (0..r).map(|s| a[i * r + s] * b[j * r + s]).sum();
        }
    }
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
    solve_components_with(eq, qs, true)
}

/// [`solve_components`] for moment equations (`moment_rule`: the equation of `s2` is
/// `r'r` and gets the adjustment below) or for others, such as the MINQUE equations of
/// [`crate::efficient_slopes`], whose held parameters are simply moved to the right.
pub fn solve_components_with(
    eq: &SlopeEquations,
    qs: &[usize],
    moment_rule: bool,
) -> Result<SlopeComponents, FitError> {
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
            if moment_rule && e == m - 1 {
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
pub(crate) fn sqrt_psd(s: &[f64], q: usize) -> Vec<f64> {
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

/// Henderson's equations in `(b, w)`, `u_k = Lambda_k w_k`,
///
/// ```text
/// [ X'X          X'Z Lambda               ] [b]   [X'y        ]
/// [ Lambda'Z'X   Lambda'Z'Z Lambda + s2 I ] [w] = [Lambda'Z'y ],
/// ```
///
/// are solved with the fixed effects eliminated (as [`crate::mixed`] does for
/// intercepts): `C = Lambda'Z'Z Lambda + s2 I` is applied without forming it, to `r`
/// right-hand sides at once (stored by unknown: `v[i * r + j]`), so that every pass over
/// the cells serves all of them. The blocks are the terms; within a term, every level's
/// `q x q` diagonal block is `Lambda_k' W_g Lambda_k + s2 I`.
pub(crate) struct Henderson<'s> {
    stats: &'s SlopeStats,
    lambda: Vec<Vec<f64>>,
    /// First unknown of every term.
    pub(crate) offsets: Vec<usize>,
    s2: f64,
    pub(crate) dim: usize,
    /// Right-hand sides solved together.
    r: usize,
    /// Per term, the inverses of the level blocks (q x q each, level after level).
    level_inv: Vec<Vec<f64>>,
    /// Per pair of terms, where the cells of each row level start.
    pair_rows: Vec<Vec<usize>>,
    /// Per term, its levels in consecutive blocks with about equal numbers of cells as
    /// row levels (the parallel tasks of [`Henderson::term_sums`]).
    tasks: Vec<Vec<Range<usize>>>,
    /// The products run here; the iterations (and `keep_going`) on the caller's thread.
    pool: &'s rayon::ThreadPool,
}

/// `out += a v` for `a` (n x m, row-major) and `v` (m x r, by rows): the products of
/// Henderson's matrix with `r` columns at once, written so the inner loop runs over
/// contiguous rows without bounds checks.
#[inline(always)]
fn add_product(out: &mut [f64], a: &[f64], v: &[f64], n: usize, m: usize, r: usize) {
    for (i, o) in out.chunks_exact_mut(r).take(n).enumerate() {
        for (&aij, vj) in a[i * m..(i + 1) * m].iter().zip(v.chunks_exact(r)) {
            for (x, &y) in o.iter_mut().zip(vj) {
                *x += aij * y;
            }
        }
    }
}

/// `out += a' v` for `a` (m x n, row-major) and `v` (m x r, by rows).
#[inline(always)]
fn add_product_t(out: &mut [f64], a: &[f64], v: &[f64], n: usize, m: usize, r: usize) {
    for (row, vj) in a.chunks_exact(n).take(m).zip(v.chunks_exact(r)) {
        for (&aji, o) in row.iter().zip(out.chunks_exact_mut(r)) {
            for (x, &y) in o.iter_mut().zip(vj) {
                *x += aji * y;
            }
        }
    }
}

/// `acc (q x r) += sum_c P_c u_{h_c}` over the cells `c` in `cells` of a pair (`P_c`
/// q x ql, `u_h` ql x r): the row side of Henderson's matrix for one level.
#[inline(always)]
fn row_side(acc: &mut [f64], pc: &PairCells, cells: Range<usize>, u: &[f64], q: usize, ql: usize, r: usize) {
    for c in cells {
        let h = pc.cols[c] as usize;
        add_product(acc, &pc.sums[c * q * ql..(c + 1) * q * ql], &u[h * ql * r..(h + 1) * ql * r], q, ql, r);
    }
}

/// `o_h (q x r) += P_c' u_{g_c}` over the cells `c` in `cells` of a pair (`P_c` qk x q,
/// `u_g` qk x r): the column side of Henderson's matrix, scattered by column level.
#[inline(always)]
fn column_side(o: &mut [f64], pc: &PairCells, cells: Range<usize>, u: &[f64], q: usize, qk: usize, r: usize) {
    for c in cells {
        let (g, h) = (pc.rows[c] as usize, pc.cols[c] as usize);
        let pgh = &pc.sums[c * qk * q..(c + 1) * qk * q];
        add_product_t(&mut o[h * q * r..(h + 1) * q * r], pgh, &u[g * qk * r..(g + 1) * qk * r], q, qk, r);
    }
}

/// [`row_side`] compiled for fixed sizes (`Q` x `QL` cells, `R` right-hand sides), so
/// that the loops over a cell are unrolled and free of bounds checks: these passes over
/// the cells are most of an iteration. The sums are added in [`row_side`]'s order.
fn row_side_of<const Q: usize, const QL: usize, const R: usize>(
    acc: &mut [f64],
    pc: &PairCells,
    cells: Range<usize>,
    u: &[f64],
) {
    let mut a = [[0.0f64; R]; Q];
    for (i, ai) in a.iter_mut().enumerate() {
        ai.copy_from_slice(&acc[i * R..(i + 1) * R]);
    }
    let sums = &pc.sums[cells.start * Q * QL..cells.end * Q * QL];
    for (&h, p) in pc.cols[cells].iter().zip(sums.chunks_exact(Q * QL)) {
        let uh = &u[h as usize * QL * R..(h as usize + 1) * QL * R];
        for (i, ai) in a.iter_mut().enumerate() {
            for s in 0..QL {
                let v = p[i * QL + s];
                for j in 0..R {
                    ai[j] += v * uh[s * R + j];
                }
            }
        }
    }
    for (i, ai) in a.iter().enumerate() {
        acc[i * R..(i + 1) * R].copy_from_slice(ai);
    }
}

/// [`column_side`] compiled for fixed sizes (`QK` x `Q` cells, `R` right-hand sides);
/// the sums are added in [`column_side`]'s order.
fn column_side_of<const Q: usize, const QK: usize, const R: usize>(
    o: &mut [f64],
    pc: &PairCells,
    cells: Range<usize>,
    u: &[f64],
) {
    let sums = &pc.sums[cells.start * QK * Q..cells.end * QK * Q];
    let (rows, cols) = (&pc.rows[cells.clone()], &pc.cols[cells]);
    for ((&g, &h), p) in rows.iter().zip(cols).zip(sums.chunks_exact(QK * Q)) {
        let ug = &u[g as usize * QK * R..(g as usize + 1) * QK * R];
        let oh = &mut o[h as usize * Q * R..(h as usize + 1) * Q * R];
        for s in 0..QK {
            for i in 0..Q {
                let v = p[s * Q + i];
                for j in 0..R {
                    oh[i * R + j] += v * ug[s * R + j];
                }
            }
        }
    }
}

/// Dispatches to the kernel compiled for `(q, q_other, r)` when there is one (terms of
/// up to 3 columns, up to 6 right-hand sides), else runs the general loop.
macro_rules! dispatch_sizes {
    ($kernel:ident, $general:ident, $out:expr, $pc:expr, $cells:expr, $u:expr, $q:expr, $q2:expr, $r:expr) => {
        dispatch_sizes!(@arms $kernel, $general, $out, $pc, $cells, $u, ($q, $q2, $r);
            (1 1 1) (1 1 2) (1 1 3) (1 1 4) (1 1 5) (1 1 6) (1 2 1) (1 2 2) (1 2 3) (1 2 4) (1 2 5) (1 2 6)
            (1 3 1) (1 3 2) (1 3 3) (1 3 4) (1 3 5) (1 3 6) (2 1 1) (2 1 2) (2 1 3) (2 1 4) (2 1 5) (2 1 6)
            (2 2 1) (2 2 2) (2 2 3) (2 2 4) (2 2 5) (2 2 6) (2 3 1) (2 3 2) (2 3 3) (2 3 4) (2 3 5) (2 3 6)
            (3 1 1) (3 1 2) (3 1 3) (3 1 4) (3 1 5) (3 1 6) (3 2 1) (3 2 2) (3 2 3) (3 2 4) (3 2 5) (3 2 6)
            (3 3 1) (3 3 2) (3 3 3) (3 3 4) (3 3 5) (3 3 6))
    };
    (@arms $kernel:ident, $general:ident, $out:expr, $pc:expr, $cells:expr, $u:expr, $key:expr;
        $(($a:literal $b:literal $c:literal))*) => {
        match $key {
            $(($a, $b, $c) => $kernel::<$a, $b, $c>($out, $pc, $cells, $u),)*
            (q, q2, r) => $general($out, $pc, $cells, $u, q, q2, r),
        }
    };
}

fn row_side_any(acc: &mut [f64], pc: &PairCells, cells: Range<usize>, u: &[f64], q: usize, ql: usize, r: usize) {
    dispatch_sizes!(row_side_of, row_side, acc, pc, cells, u, q, ql, r)
}

fn column_side_any(o: &mut [f64], pc: &PairCells, cells: Range<usize>, u: &[f64], q: usize, qk: usize, r: usize) {
    dispatch_sizes!(column_side_of, column_side, o, pc, cells, u, q, qk, r)
}

/// The passes over levels of every iteration split into parallel tasks only past these
/// sizes (blocks of [`LEVELS`] levels, values): waking the threads costs more than small
/// passes (and much more on a loaded machine, where a descheduled thread stalls every
/// parallel step). The split never changes the results.
const SERIAL_TASKS: usize = 16;
const SERIAL_VALUES: usize = 1 << 16;

/// Levels per parallel task of the sums over levels (fixed, so they are reduced in order).
const LEVELS: usize = 1 << 10;

impl<'s> Henderson<'s> {
    /// `C = Lambda'Z'Z Lambda + s2 I` at `Lambda_k` (per term, q x q row-major) for `r`
    /// right-hand sides. With `s2 = 0` and `Lambda = I` it is the Gram matrix `Z'Z`, which
    /// is applied but not solved (no preconditioner: its level blocks may be singular).
    pub(crate) fn new(
        stats: &'s SlopeStats,
        lambda: Vec<Vec<f64>>,
        s2: f64,
        r: usize,
        pool: &'s rayon::ThreadPool,
    ) -> Result<Henderson<'s>, FitError> {
        let mut offsets = Vec::new();
        let mut dim = 0;
        for t in &stats.terms {
            offsets.push(dim);
            dim += t.q * t.n_levels;
        }
        let mut level_inv = Vec::new();
        for (k, t) in stats.terms.iter().enumerate() {
            if s2 == 0.0 {
                continue;
            }
            let q = t.q;
            let lam = &lambda[k];
            let blocks: Vec<Vec<f64>> = pool.install(|| {
                (0..t.n_levels)
                    .into_par_iter()
                    .map(|g| {
                        let w = &t.zz[g * q * q..(g + 1) * q * q];
                        let lw = matmul(w, lam, q, q, q);
                        let mut blk = vec![0.0; q * q];
                        for a in 0..q {
                            for c in 0..q {
                                blk[a * q + c] = (0..q).map(|r| lam[r * q + a] * lw[r * q + c]).sum::<f64>()
                                    + if a == c { s2 } else { 0.0 };
                            }
                        }
                        invert_spd(&blk, q)
                    })
                    .collect::<Result<_, _>>()
            })?;
            level_inv.push(blocks.concat());
        }
        let pair_rows: Vec<Vec<usize>> =
            stats.pairs.iter().map(|pc| row_starts(pc, stats.terms[pc.k].n_levels)).collect();
        let tasks = stats
            .terms
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let mut cell_starts = vec![0usize; t.n_levels + 1];
                for (pc, starts) in stats.pairs.iter().zip(&pair_rows) {
                    if pc.k == k {
                        cell_starts.iter_mut().zip(starts).for_each(|(s, c)| *s += c);
                    }
                }
                balanced_blocks(&cell_starts)
            })
            .collect();
        Ok(Henderson { stats, lambda, offsets, s2, dim, r, level_inv, pair_rows, tasks, pool })
    }
}

impl Henderson<'_> {
    /// The unknowns of term `k` in `v`.
    fn part<'v>(&self, k: usize, v: &'v [f64]) -> &'v [f64] {
        let len = self.stats.terms[k].n_levels * self.stats.terms[k].q * self.r;
        &v[self.offsets[k] * self.r..self.offsets[k] * self.r + len]
    }

    /// `Lambda_k w_g` for every level of term `k` (`w` is the term's part of a vector).
    fn lambda_times(&self, k: usize, w: &[f64]) -> Vec<f64> {
        let (q, r) = (self.stats.terms[k].q, self.r);
        let lam = &self.lambda[k];
        let mut out = vec![0.0; w.len()];
        out.par_chunks_mut(LEVELS * q * r).zip(w.par_chunks(LEVELS * q * r)).with_min_len(SERIAL_TASKS).for_each(
            |(o, w)| {
                for (og, wg) in o.chunks_exact_mut(q * r).zip(w.chunks_exact(q * r)) {
                    add_product(og, lam, wg, q, q, r);
                }
            },
        );
        out
    }

    /// For every level `g` of term `k`: `Lambda_k' (W_g u_g [own] + sum_l sum_h P_gh u_h
    /// [terms l whose u is given])`, the rows of term `k` of `C` without `s2 I`, applied
    /// to the parts given.
    fn term_sums(&self, k: usize, u: &[Option<&[f64]>], own: bool) -> Vec<f64> {
        let st = self.stats;
        let r = self.r;
        let t = &st.terms[k];
        let q = t.q;
        // Column sides of the pairs (l, k): P_gh' u_g added into level h of term k, by
        // fixed parts of the cells added in order (a gather by column level would read
        // the cells at random).
        let mut column = vec![0.0; t.n_levels * q * r];
        for pc in st.pairs.iter().filter(|pc| pc.l == k) {
            let Some(ul) = u[pc.k] else { continue };
            let qk = st.terms[pc.k].q;
            let n_cells = pc.rows.len();
            // In parallel only when the parts are large enough to pay for waking threads.
            let parts: Vec<Vec<f64>> = (0..CELL_PARTS)
                .into_par_iter()
                .with_min_len(if n_cells >= 1 << 20 { 1 } else { CELL_PARTS })
                .map(|part| {
                    let mut o = vec![0.0; t.n_levels * q * r];
                    let cells = part * n_cells / CELL_PARTS..(part + 1) * n_cells / CELL_PARTS;
                    column_side_any(&mut o, pc, cells, ul, q, qk, r);
                    o
                })
                .collect();
            for part in parts {
                column.iter_mut().zip(&part).for_each(|(o, v)| *o += v);
            }
        }
        let lam = &self.lambda[k];
        let own_u = if own { u[k] } else { None };
        let mut out = vec![0.0; t.n_levels * q * r];
        // Blocks of levels with about equal numbers of cells (a few levels may hold most).
        let mut blocks = Vec::with_capacity(self.tasks[k].len());
        let mut rest = out.as_mut_slice();
        for range in &self.tasks[k] {
            let (mine, later) = rest.split_at_mut(range.len() * q * r);
            blocks.push((range.start, mine));
            rest = later;
        }
        blocks.into_par_iter().with_min_len(2).for_each(|(first, o)| {
            let mut acc = vec![0.0; q * r];
            for (at, og) in o.chunks_mut(q * r).enumerate() {
                let g = first + at;
                acc.copy_from_slice(&column[g * q * r..(g + 1) * q * r]);
                if let Some(uk) = own_u {
                    add_product(&mut acc, &t.zz[g * q * q..(g + 1) * q * q], &uk[g * q * r..(g + 1) * q * r], q, q, r);
                }
                for (pc, starts) in st.pairs.iter().zip(&self.pair_rows) {
                    if pc.k != k {
                        continue;
                    }
                    let Some(ul) = u[pc.l] else { continue };
                    row_side_any(&mut acc, pc, starts[g]..starts[g + 1], ul, q, st.terms[pc.l].q, r);
                }
                add_product_t(og, lam, &acc, q, q, r);
            }
        });
        out
    }

    /// `out = C v`.
    pub(crate) fn apply(&self, v: &[f64], out: &mut [f64]) {
        self.pool.install(|| {
            let r = self.r;
            let us: Vec<Vec<f64>> =
                (0..self.stats.terms.len()).map(|k| self.lambda_times(k, self.part(k, v))).collect();
            let u: Vec<Option<&[f64]>> = us.iter().map(|x| Some(x.as_slice())).collect();
            for k in 0..self.stats.terms.len() {
                let sums = self.term_sums(k, &u, true);
                let at = self.offsets[k] * r;
                out[at..at + sums.len()]
                    .par_iter_mut()
                    .with_min_len(SERIAL_VALUES)
                    .zip(&sums)
                    .zip(&v[at..at + sums.len()])
                    .for_each(|((o, s), w)| *o = s + self.s2 * w);
            }
        })
    }

    /// `z_a -= D_a^-1 s_a` for every level of term `a` (`z` the term's part).
    fn level_solve(&self, k: usize, s: &[f64], z: &mut [f64]) {
        let (q, r) = (self.stats.terms[k].q, self.r);
        let inv = &self.level_inv[k];
        let mut d = vec![0.0; z.len()];
        d.par_chunks_mut(LEVELS * q * r)
            .zip(s.par_chunks(LEVELS * q * r))
            .with_min_len(SERIAL_TASKS)
            .enumerate()
            .for_each(|(block, (d, s))| {
                for (at, (dg, sg)) in d.chunks_exact_mut(q * r).zip(s.chunks_exact(q * r)).enumerate() {
                    let g = block * LEVELS + at;
                    add_product(dg, &inv[g * q * q..(g + 1) * q * q], sg, q, q, r);
                }
            });
        z.par_iter_mut().with_min_len(SERIAL_VALUES).zip(&d).for_each(|(z, d)| *z -= d);
    }

    /// `z = M^-1 res` for the symmetric block Gauss-Seidel preconditioner
    /// `M = (D + L) D^-1 (D + U)` over the terms, whose diagonal `D` is inverted exactly
    /// (every level's q x q block): a forward sweep, then a backward one, as mixed.rs's
    /// intercept solver does over its terms. Within a term every level is updated on its
    /// own, so the result does not depend on the number of threads.
    fn precondition(&self, res: &[f64], z: &mut [f64]) {
        self.pool.install(|| {
            let r = self.r;
            let n_terms = self.stats.terms.len();
            let mut us: Vec<Option<Vec<f64>>> = vec![None; n_terms];
            // Forward: (D + L) y = res.
            for a in 0..n_terms {
                let at = self.offsets[a] * r;
                let len = self.stats.terms[a].n_levels * self.stats.terms[a].q * r;
                z[at..at + len].iter_mut().for_each(|v| *v = 0.0);
                if a == 0 {
                    // Nothing below: z_a = D^-1 res_a.
                    let minus: Vec<f64> = res[at..at + len].iter().map(|v| -v).collect();
                    self.level_solve(a, &minus, &mut z[at..at + len]);
                } else {
                    let u: Vec<Option<&[f64]>> = us.iter().map(|x| x.as_deref()).collect();
                    let s = self.term_sums(a, &u, false);
                    // z_a = D^-1 (res_a - s_a): from 0, less D^-1 (s_a - res_a).
                    let diff: Vec<f64> = s.iter().zip(&res[at..at + len]).map(|(s, v)| s - v).collect();
                    self.level_solve(a, &diff, &mut z[at..at + len]);
                }
                // Needed below (later terms) or in the backward sweep (the last term).
                if n_terms > 1 {
                    us[a] = Some(self.lambda_times(a, &z[at..at + len]));
                }
            }
            // Backward: (D + U) z = D y.
            for a in (0..n_terms.saturating_sub(1)).rev() {
                let u: Vec<Option<&[f64]>> =
                    us.iter().enumerate().map(|(b, x)| if b > a { x.as_deref() } else { None }).collect();
                let s = self.term_sums(a, &u, false);
                let at = self.offsets[a] * r;
                let len = s.len();
                self.level_solve(a, &s, &mut z[at..at + len]);
                if a > 0 {
                    us[a] = Some(self.lambda_times(a, &z[at..at + len]));
                }
            }
        })
    }

    /// Per column `j`, `sum_i a[i, j] b[i, j]`.
    fn dots(&self, a: &[f64], b: &[f64]) -> Vec<f64> {
        let r = self.r;
        let mut out = vec![0.0; r];
        for (x, y) in a.chunks(r).zip(b.chunks(r)) {
            for j in 0..r {
                out[j] += x[j] * y[j];
            }
        }
        out
    }

    /// Preconditioned conjugate gradients for the `r` right-hand sides together; a column
    /// stops when its residual falls below [`crate::mixed::CG_TOLERANCE`] of its right-hand
    /// side (the intercept solver's tolerance).
    pub(crate) fn cg(&self, rhs: &[f64], keep_going: &mut dyn FnMut() -> bool) -> Result<(Vec<f64>, usize), FitError> {
        let (n, r) = (self.dim * self.r, self.r);
        let mut x = vec![0.0; n];
        let mut res = rhs.to_vec();
        let mut z = vec![0.0; n];
        self.precondition(&res, &mut z);
        let mut d = z.clone();
        let mut rz = self.dots(&res, &z);
        let norm0: Vec<f64> = self.dots(rhs, rhs).iter().map(|v| v.sqrt()).collect();
        let mut ad = vec![0.0; n];
        for it in 0..(10 * self.dim + 100).min(20000) {
            let rn = self.dots(&res, &res);
            let active: Vec<bool> =
                rn.iter().zip(&norm0).map(|(v, n0)| v.sqrt() > crate::mixed::CG_TOLERANCE * n0).collect();
            if !active.iter().any(|&a| a) {
                return Ok((x, it));
            }
            if it % 20 == 0 && !keep_going() {
                return Err(FitError::Interrupted);
            }
            self.apply(&d, &mut ad);
            let dad = self.dots(&d, &ad);
            let alpha: Vec<f64> = (0..r).map(|j| if active[j] { rz[j] / dad[j] } else { 0.0 }).collect();
            for i in 0..n {
                x[i] += alpha[i % r] * d[i];
                res[i] -= alpha[i % r] * ad[i];
            }
            self.precondition(&res, &mut z);
            let rz_new = self.dots(&res, &z);
            let beta: Vec<f64> = (0..r).map(|j| if active[j] { rz_new[j] / rz[j] } else { 0.0 }).collect();
            rz = rz_new;
            for i in 0..n {
                d[i] = z[i] + beta[i % r] * d[i];
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

/// Henderson's equations at the components `theta` (parameters as [`parameter_map`]):
/// the right-hand side and the unit vectors of the kept fixed-effect columns (for the
/// covariance of the fixed effects) solved together.
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
    let r = pk + 1;
    let h = Henderson::new(stats, lambda, s2, r, pool)?;
    let offsets = h.offsets.clone();
    let dim = h.dim;
    // B = [Lambda'Z'X | Lambda'Z'y] over the kept columns, r values per unknown.
    let mut rhs = vec![0.0; dim * r];
    for (k, t) in stats.terms.iter().enumerate() {
        let q = t.q;
        let lam = &h.lambda[k];
        for g in 0..t.n_levels {
            let gx = &t.zx[g * q * p..(g + 1) * q * p];
            for c in 0..q {
                let row = &mut rhs[(offsets[k] + g * q + c) * r..(offsets[k] + g * q + c + 1) * r];
                for (j, &cj) in cols.iter().enumerate() {
                    row[j] = (0..q).map(|a| lam[a * q + c] * gx[a * p + cj]).sum();
                }
                row[pk] = (0..q).map(|a| lam[a * q + c] * t.zy[g * q + a]).sum();
            }
        }
    }
    let (sol, iterations) = h.cg(&rhs, keep_going)?;
    // With X ~ C^-1 B, B'C^-1 B ~ B'X + X'B - X'C X, whose error is of second order in
    // X's (as crate::mixed's gls_from_solution).
    let mut c_sol = vec![0.0; dim * r];
    h.apply(&sol, &mut c_sol);
    let mut cross = vec![0.0; r * r];
    for ((bi, xi), ci) in rhs.chunks_exact(r).zip(sol.chunks_exact(r)).zip(c_sol.chunks_exact(r)) {
        for a in 0..r {
            for c in 0..r {
                cross[a * r + c] += bi[a] * xi[c] + xi[a] * bi[c] - 0.5 * (xi[a] * ci[c] + ci[a] * xi[c]);
            }
        }
    }
    // S = X'X - X'Z Lambda C^-1 Lambda'Z'X, the GLS matrix X'V^-1 X times s2.
    let mut schur = vec![0.0; pk * pk];
    for (i, &ci) in cols.iter().enumerate() {
        for (j, &cj) in cols.iter().enumerate() {
            schur[i * pk + j] = stats.xx[ci * p + cj] - cross[i * r + j];
        }
    }
    let schur_y: Vec<f64> = cols.iter().enumerate().map(|(i, &ci)| stats.xy[ci] - cross[i * r + pk]).collect();
    let schur_inv = invert_spd(&schur, pk).map_err(|_| {
        FitError::NotIdentifiable(
            "the fixed effects are not identifiable given the random effects (X'V^-1 X is singular)".into(),
        )
    })?;
    let b: Vec<f64> = (0..pk).map(|i| (0..pk).map(|j| schur_inv[i * pk + j] * schur_y[j]).sum()).collect();
    let mut coef = vec![f64::NAN; p];
    for (i, &ci) in cols.iter().enumerate() {
        coef[ci] = b[i];
    }
    // w = C^-1 (Lambda'Z'y - Lambda'Z'X b), u = Lambda w.
    let ranef: Vec<Vec<f64>> = stats
        .terms
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let q = t.q;
            let w = |g: usize, c: usize| {
                let row = &sol[(offsets[k] + g * q + c) * r..(offsets[k] + g * q + c + 1) * r];
                row[pk] - (0..pk).map(|j| row[j] * b[j]).sum::<f64>()
            };
            let mut o = vec![0.0; t.n_levels * q];
            for g in 0..t.n_levels {
                for a in 0..q {
                    o[g * q + a] = (0..q).map(|c| h.lambda[k][a * q + c] * w(g, c)).sum();
                }
            }
            o
        })
        .collect();
    let mut vcov = vec![f64::NAN; p * p];
    for (j, &cj) in cols.iter().enumerate() {
        for (i, &ci) in cols.iter().enumerate() {
            vcov[ci * p + cj] = s2 * schur_inv[i * pk + j];
        }
    }
    Ok(SlopeMixed { coef, vcov, ranef, iterations })
}

/// Fitted values and residuals of a slope fit, in parallel over fixed blocks of rows:
///
/// ```text
/// fitted_i = sum_j x_ij b_j + sum_k z_ki' u_k[level_k(i)],    residual_i = y_i - fitted_i,
/// ```
///
/// over the kept columns (`coef` is NaN for the others) and every term (`ranef[k]`
/// level after level, `q_k` values each). Each row is computed on its own, so the values
/// do not depend on the number of threads. The outputs are the caller's (e.g. R's)
/// memory, so no other full-length vector is made.
pub fn slope_fitted_and_residuals(
    data: &SlopeData<'_>,
    coef: &[f64],
    ranef: &[Vec<f64>],
    fitted: &mut [f64],
    residuals: &mut [f64],
) -> Result<(), FitError> {
    check(data)?;
    let n = data.y.len();
    let shapes_ok =
        ranef.len() == data.terms.len() && data.terms.iter().zip(ranef).all(|(t, u)| u.len() == t.n_levels * t.q());
    if fitted.len() != n || residuals.len() != n || coef.len() != data.x.len() || !shapes_ok {
        return Err(FitError::InvalidInput(
            "fitted values: the outputs, coefficients or BLUPs do not match the data".into(),
        ));
    }
    let kept: Vec<(Option<&[f64]>, f64)> =
        data.x.iter().zip(coef).filter(|(_, b)| !b.is_nan()).map(|(c, &b)| (column_slice(c), b)).collect();
    let zs: Vec<Vec<Option<&[f64]>>> = data.terms.iter().map(|t| t.z.iter().map(column_slice).collect()).collect();
    fitted.par_chunks_mut(ROWS).zip(residuals.par_chunks_mut(ROWS)).enumerate().for_each(|(c, (fit, res))| {
        let first = c * ROWS;
        for (j, (f, r)) in fit.iter_mut().zip(res.iter_mut()).enumerate() {
            let i = first + j;
            let mut v = 0.0;
            for &(x, b) in &kept {
                v += at(x, i) * b;
            }
            for ((t, z), u) in data.terms.iter().zip(&zs).zip(ranef) {
                let q = z.len();
                let ug = &u[t.level(i) * q..(t.level(i) + 1) * q];
                for (&za, &ua) in z.iter().zip(ug) {
                    v += at(za, i) * ua;
                }
            }
            *f = v;
            *r = data.y[i] - v;
        }
    });
    Ok(())
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
