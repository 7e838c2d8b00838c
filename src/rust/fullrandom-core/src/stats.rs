//! Mergeable sufficient statistics, made in one parallel pass over the data.
//!
//! With `y~ = y - c_y` and `X~ = X - 1 c_x'` (the pilot [`Shift`]; the intercept column is
//! never shifted) the statistics are
//!
//! ```text
//! N, X~'X~, X~'y~, y~'y~, 1'X~, 1'y~                         (factor 0: all rows)
//! for every factor k and level g:  n_g, sum_{i in g} y~_i, sum_{i in g} X~_i   (S_k = Z_k'X~)
//! for every pair k < l:            n_gm, the nonzero cells of C_kl = Z_k'Z_l
//! ```
//!
//! Every piece is a sum over rows, so the statistics of a union of row sets are the
//! sums of theirs ([`SufficientStats::merge`]). Shifting by a pilot location keeps the
//! sums of squares free of cancellation when the data sit far from zero (y + 1e8); with
//! an intercept in the model the residuals, and so every moment estimate, are unchanged.
//!
//! Parallel work is split over a fixed partition (row blocks of [`ROW_BLOCK`], one task per
//! factor and column) and reduced in a fixed order, so results are bitwise identical for
//! any number of threads.

use crate::data::{FixedColumn, ModelData};
use crate::error::{try_filled, try_with_capacity, FitError};
use crate::grouping::CellCounts;
use rayon::prelude::*;

/// Rows per block of the global sums; fixed so that the reduction order is too.
pub const ROW_BLOCK: usize = 1 << 15;
/// Rows used to choose the pilot location.
const PILOT_ROWS: usize = 1024;

/// The constants subtracted before summing: `y - y_shift`, `x_j - x_shift[j]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Shift {
    pub y: f64,
    pub x: Vec<f64>,
}

impl Shift {
    /// The mean of the first rows when the model has an intercept, otherwise zero (a
    /// shift would change the column space and so the residuals).
    pub fn pilot(data: &ModelData<'_>) -> Shift {
        let p = data.n_fixed();
        let Some(intercept) = data.intercept else {
            return Shift { y: 0.0, x: vec![0.0; p] };
        };
        let rows = data.n_obs().min(PILOT_ROWS);
        let mean = |v: &mut dyn Iterator<Item = f64>| v.sum::<f64>() / rows.max(1) as f64;
        let y = mean(&mut data.y[..rows].iter().copied());
        let x = (0..p)
            .map(|j| if j == intercept { 0.0 } else { mean(&mut data.x[j].shifted(0..rows, 0.0).into_iter()) })
            .collect();
        Shift { y, x }
    }
}

impl Shift {
    /// Coefficients of all `p` columns in the original parametrisation (NaN where not
    /// kept) from those of the `kept` columns fitted to the shifted data: every slope is
    /// unchanged and the intercept absorbs the shift, `b_0 = b~_0 + c_y - sum_j c_j b~_j`.
    pub fn unshift_coefficients(&self, intercept: Option<usize>, kept: &[usize], coef_shifted: &[f64]) -> Vec<f64> {
        let mut coef = vec![f64::NAN; self.x.len()];
        for (&j, &b) in kept.iter().zip(coef_shifted) {
            coef[j] = b;
        }
        if let Some(j0) = intercept {
            let moved: f64 = kept.iter().zip(coef_shifted).map(|(&j, b)| self.x[j] * b).sum();
            coef[j0] += self.y - moved;
        }
        coef
    }
}

/// Per-level sums of one factor. `sum_x` is stored by column: level `g`, column `j` at
/// `j * n_levels + g`.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelSums {
    pub counts: Vec<u64>,
    pub sum_y: Vec<f64>,
    pub sum_x: Vec<f64>,
}

impl LevelSums {
    pub fn n_levels(&self) -> usize {
        self.counts.len()
    }
}

/// The mergeable sufficient statistics of a linear mixed model with random intercepts.
#[derive(Debug, Clone, PartialEq)]
pub struct SufficientStats {
    pub n_obs: u64,
    pub shift: Shift,
    pub x_names: Vec<String>,
    pub intercept: Option<usize>,
    pub factor_names: Vec<String>,
    /// `X~'X~`, p x p, column-major.
    pub xtx: Vec<f64>,
    pub xty: Vec<f64>,
    pub yty: f64,
    pub sum_y: f64,
    pub sum_x: Vec<f64>,
    pub levels: Vec<LevelSums>,
    /// Cells of every pair `k < l`, at [`pair_index`]`(k, l, K)`.
    pub cells: Vec<CellCounts>,
}

/// Position of the pair `k < l` among the `K (K - 1) / 2` pairs of `K` factors.
pub fn pair_index(k: usize, l: usize, n_factors: usize) -> usize {
    debug_assert!(k < l && l < n_factors);
    k * n_factors - k * (k + 1) / 2 + (l - k - 1)
}

/// Global sums of one block of rows.
struct BlockSums {
    xtx: Vec<f64>,
    xty: Vec<f64>,
    yty: f64,
    sum_y: f64,
    sum_x: Vec<f64>,
}

impl SufficientStats {
    /// One pass over `data` (validated first) with the pilot shift.
    pub fn compute(data: &ModelData<'_>) -> Result<SufficientStats, FitError> {
        // Validated before the pilot reads the first rows of every column.
        data.validate()?;
        SufficientStats::compute_validated(data, Shift::pilot(data))
    }

    /// One pass with a given shift; statistics to be merged must share their shift.
    pub fn compute_with_shift(data: &ModelData<'_>, shift: Shift) -> Result<SufficientStats, FitError> {
        data.validate()?;
        SufficientStats::compute_validated(data, shift)
    }

    fn compute_validated(data: &ModelData<'_>, shift: Shift) -> Result<SufficientStats, FitError> {
        let p = data.n_fixed();
        if shift.x.len() != p {
            return Err(FitError::InvalidInput(format!("shift has {} columns, data {p}", shift.x.len())));
        }
        let k_factors = data.factors.len();
        let (global, (levels, cells)) =
            rayon::join(|| global_sums(data, &shift), || rayon::join(|| level_sums(data, &shift), || pair_cells(data)));
        let levels = levels?;
        debug_assert_eq!(cells.len(), k_factors * k_factors.saturating_sub(1) / 2);
        Ok(SufficientStats {
            n_obs: data.n_obs() as u64,
            shift,
            x_names: data.x_names.clone(),
            intercept: data.intercept,
            factor_names: data.factors.iter().map(|f| f.name.clone()).collect(),
            xtx: global.xtx,
            xty: global.xty,
            yty: global.yty,
            sum_y: global.sum_y,
            sum_x: global.sum_x,
            levels,
            cells,
        })
    }

    pub fn n_fixed(&self) -> usize {
        self.xty.len()
    }

    pub fn n_factors(&self) -> usize {
        self.levels.len()
    }

    /// The cells of factors `k` and `l` (`k != l`), and whether they are stored
    /// transposed (as `l` x `k`).
    pub fn cells_of(&self, k: usize, l: usize) -> (&CellCounts, bool) {
        let n = self.n_factors();
        if k < l {
            (&self.cells[pair_index(k, l, n)], false)
        } else {
            (&self.cells[pair_index(l, k, n)], true)
        }
    }

    /// The statistics of the union of the two row sets. Both must describe the same
    /// model: the same columns, factors, numbers of levels (levels matched by code) and shift.
    pub fn merge(&self, other: &SufficientStats) -> Result<SufficientStats, FitError> {
        let incompatible = |what: &str| Err(FitError::Incompatible(format!("statistics differ in {what}")));
        if self.x_names != other.x_names || self.intercept != other.intercept {
            return incompatible("their fixed-effect columns");
        }
        if self.factor_names != other.factor_names {
            return incompatible("their grouping factors");
        }
        if self.shift != other.shift {
            return incompatible("their pilot shift");
        }
        for (k, (a, b)) in self.levels.iter().zip(&other.levels).enumerate() {
            if a.n_levels() != b.n_levels() {
                return incompatible(&format!("the number of levels of '{}'", self.factor_names[k]));
            }
        }
        let add = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x + y).collect::<Vec<f64>>();
        let levels = self
            .levels
            .iter()
            .zip(&other.levels)
            .map(|(a, b)| LevelSums {
                counts: a.counts.iter().zip(&b.counts).map(|(x, y)| x + y).collect(),
                sum_y: add(&a.sum_y, &b.sum_y),
                sum_x: add(&a.sum_x, &b.sum_x),
            })
            .collect();
        let cells = self.cells.iter().zip(&other.cells).map(|(a, b)| a.merge(b)).collect::<Result<Vec<_>, _>>()?;
        Ok(SufficientStats {
            n_obs: self.n_obs + other.n_obs,
            shift: self.shift.clone(),
            x_names: self.x_names.clone(),
            intercept: self.intercept,
            factor_names: self.factor_names.clone(),
            xtx: add(&self.xtx, &other.xtx),
            xty: add(&self.xty, &other.xty),
            yty: self.yty + other.yty,
            sum_y: self.sum_y + other.sum_y,
            sum_x: add(&self.sum_x, &other.sum_x),
            levels,
            cells,
        })
    }
}

impl SufficientStats {
    /// The same statistics about another shift `c'` (exact algebra, no pass over the data).
    /// With `d = c' - c` (per column, and `d_y` for the response) and the sums about `c`:
    ///
    /// ```text
    /// 1'X~'  = 1'X~ - N d'                 1'y~'  = 1'y~ - N d_y
    /// X~''X~' = X~'X~ - (1'X~)' d' - d (1'X~) + N d d'
    /// X~''y~' = X~'y~ - (1'X~)' d_y - d (1'y~) + N d d_y
    /// y~''y~' = y~'y~ - 2 d_y (1'y~) + N d_y^2
    /// per level g:  sum y~' = sum y~ - n_g d_y,   sum X~' = sum X~ - n_g d
    /// ```
    ///
    /// Chunks computed apart choose their own pilot shifts; re-expressed about one shift
    /// they merge. The intercept column is never shifted, so its `d` is 0.
    pub fn reshifted(&self, shift: &Shift) -> Result<SufficientStats, FitError> {
        let p = self.n_fixed();
        if shift.x.len() != p {
            return Err(FitError::Incompatible(format!("a shift of {} columns for {p}", shift.x.len())));
        }
        if let Some(j0) = self.intercept {
            if shift.x[j0] != 0.0 {
                return Err(FitError::Incompatible("the intercept column cannot be shifted".into()));
            }
        }
        if *shift == self.shift {
            return Ok(self.clone());
        }
        let n = self.n_obs as f64;
        let d: Vec<f64> = shift.x.iter().zip(&self.shift.x).map(|(new, old)| new - old).collect();
        let dy = shift.y - self.shift.y;
        let mut out = self.clone();
        out.shift = shift.clone();
        for j in 0..p {
            for i in 0..p {
                out.xtx[j * p + i] += -self.sum_x[i] * d[j] - d[i] * self.sum_x[j] + n * d[i] * d[j];
            }
            out.xty[j] += -self.sum_x[j] * dy - d[j] * self.sum_y + n * d[j] * dy;
            out.sum_x[j] -= n * d[j];
        }
        out.yty += -2.0 * dy * self.sum_y + n * dy * dy;
        out.sum_y -= n * dy;
        for level in &mut out.levels {
            let g_levels = level.n_levels();
            for (g, &count) in level.counts.iter().enumerate() {
                let count = count as f64;
                level.sum_y[g] -= count * dy;
                for (j, dj) in d.iter().enumerate() {
                    level.sum_x[j * g_levels + g] -= count * dj;
                }
            }
        }
        Ok(out)
    }

    /// The same statistics with every factor's levels renumbered: level `g` of factor `k`
    /// becomes `level_maps[k][g]` of `n_levels[k]` (one-to-one). Chunks that saw different
    /// levels are first brought onto the levels of the whole data, matched by label by
    /// the caller; levels a chunk did not see get zero counts and sums.
    pub fn relevelled(&self, level_maps: &[Vec<usize>], n_levels: &[usize]) -> Result<SufficientStats, FitError> {
        let k_factors = self.n_factors();
        if level_maps.len() != k_factors || n_levels.len() != k_factors {
            return Err(FitError::Incompatible(format!(
                "level maps for {} factors, not {k_factors}",
                level_maps.len()
            )));
        }
        let p = self.n_fixed();
        let mut levels = Vec::with_capacity(k_factors);
        for ((old, map), &n_to) in self.levels.iter().zip(level_maps).zip(n_levels) {
            crate::grouping::check_level_map(map, old.n_levels(), n_to)?;
            let n_from = old.n_levels();
            let mut new = LevelSums { counts: vec![0; n_to], sum_y: vec![0.0; n_to], sum_x: vec![0.0; n_to * p] };
            for (g, &to) in map.iter().enumerate() {
                new.counts[to] = old.counts[g];
                new.sum_y[to] = old.sum_y[g];
                for j in 0..p {
                    new.sum_x[j * n_to + to] = old.sum_x[j * n_from + g];
                }
            }
            levels.push(new);
        }
        let mut cells = Vec::with_capacity(self.cells.len());
        for k in 0..k_factors {
            for l in k + 1..k_factors {
                let c = &self.cells[pair_index(k, l, k_factors)];
                cells.push(c.relevelled(&level_maps[k], &level_maps[l], n_levels[k], n_levels[l])?);
            }
        }
        Ok(SufficientStats { levels, cells, ..self.clone_without_levels() })
    }

    /// Checks that every field has the length the others imply (for statistics that
    /// arrive from elsewhere, e.g. another process), naming the first that does not.
    pub fn check_shape(&self) -> Result<(), FitError> {
        let bad = |what: String| Err(FitError::InvalidInput(format!("malformed statistics: {what}")));
        let p = self.x_names.len();
        if self.xtx.len() != p * p || self.xty.len() != p || self.sum_x.len() != p || self.shift.x.len() != p {
            return bad(format!("the fixed-effect sums do not match {p} columns"));
        }
        if self.intercept.is_some_and(|j| j >= p) {
            return bad("the intercept is outside the columns".into());
        }
        let k_factors = self.factor_names.len();
        if self.levels.len() != k_factors || self.cells.len() != k_factors * k_factors.saturating_sub(1) / 2 {
            return bad(format!("the level sums or cell tables do not match {k_factors} factors"));
        }
        for (name, l) in self.factor_names.iter().zip(&self.levels) {
            let g = l.counts.len();
            if l.sum_y.len() != g || l.sum_x.len() != g * p || l.counts.iter().sum::<u64>() != self.n_obs {
                return bad(format!("the level sums of '{name}' do not match its {g} levels"));
            }
        }
        for k in 0..k_factors {
            for l in k + 1..k_factors {
                let c = &self.cells[pair_index(k, l, k_factors)];
                let starts_ok = c.row_starts.len() == self.levels[k].n_levels() + 1
                    && c.row_starts.first() == Some(&0)
                    && c.row_starts.windows(2).all(|w| w[0] <= w[1])
                    && c.row_starts.last() == Some(&c.cols.len());
                if !starts_ok
                    || c.counts.len() != c.cols.len()
                    || c.n_cols != self.levels[l].n_levels()
                    || c.cols.iter().any(|&m| m as usize >= c.n_cols)
                    || (0..c.n_rows())
                        .any(|g| c.cols[c.row_starts[g]..c.row_starts[g + 1]].windows(2).any(|w| w[0] >= w[1]))
                {
                    return bad(format!(
                        "the cells of '{}' and '{}' do not match their levels",
                        self.factor_names[k], self.factor_names[l]
                    ));
                }
            }
        }
        Ok(())
    }

    /// [`SufficientStats::merge`] with `other` first re-expressed about this shift, for
    /// statistics computed apart (each chunk about its own pilot shift).
    pub fn merge_reshifted(&self, other: &SufficientStats) -> Result<SufficientStats, FitError> {
        self.merge(&other.reshifted(&self.shift)?)
    }

    /// `copies[k][g]`, the copies of level `g` of factor `k` in a pigeonhole bootstrap
    /// replicate summed over copies, must give one positive count a level.
    pub fn check_copies(&self, copies: &[Vec<u32>]) -> Result<(), FitError> {
        let fits = |(w, lv): (&Vec<u32>, &LevelSums)| w.len() == lv.n_levels() && w.iter().all(|&c| c > 0);
        if copies.len() != self.n_factors() || !copies.iter().zip(&self.levels).all(fits) {
            return Err(FitError::InvalidInput(
                "the copies must give one positive count for every level of every random term".into(),
            ));
        }
        Ok(())
    }

    /// A copy of everything but the per-level statistics (left empty).
    pub(crate) fn clone_without_levels(&self) -> SufficientStats {
        SufficientStats {
            n_obs: self.n_obs,
            shift: self.shift.clone(),
            x_names: self.x_names.clone(),
            intercept: self.intercept,
            factor_names: self.factor_names.clone(),
            xtx: self.xtx.clone(),
            xty: self.xty.clone(),
            yty: self.yty,
            sum_y: self.sum_y,
            sum_x: self.sum_x.clone(),
            levels: Vec::new(),
            cells: Vec::new(),
        }
    }
}

/// The statistics of the union of disjoint row sets, in the order given: each part is
/// re-expressed about the first part's shift ([`SufficientStats::reshifted`]) and
/// merged ([`SufficientStats::merge`]). Parts must share their levels (see
/// [`SufficientStats::relevelled`]).
pub fn merge_statistics(parts: &[SufficientStats]) -> Result<SufficientStats, FitError> {
    let (first, rest) = parts.split_first().ok_or_else(|| FitError::InvalidInput("no statistics to merge".into()))?;
    let mut total = first.clone();
    for part in rest {
        total = total.merge_reshifted(part)?;
    }
    Ok(total)
}

/// `X~'X~`, `X~'y~`, `y~'y~` and the column sums: per row block, then added in block order.
fn global_sums(data: &ModelData<'_>, shift: &Shift) -> BlockSums {
    let n = data.n_obs();
    let p = data.n_fixed();
    let blocks: Vec<BlockSums> = (0..n.div_ceil(ROW_BLOCK))
        .into_par_iter()
        .map(|b| {
            let rows = b * ROW_BLOCK..((b + 1) * ROW_BLOCK).min(n);
            // Shifted columns of the block, contiguous, so the products below vectorise.
            let ys: Vec<f64> = data.y[rows.clone()].iter().map(|v| v - shift.y).collect();
            let xs: Vec<Vec<f64>> = (0..p).map(|j| data.x[j].shifted(rows.clone(), shift.x[j])).collect();
            let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(u, v)| u * v).sum::<f64>();
            let mut xtx = vec![0.0; p * p];
            for j in 0..p {
                for i in 0..=j {
                    let v = dot(&xs[i], &xs[j]);
                    xtx[j * p + i] = v;
                    xtx[i * p + j] = v;
                }
            }
            BlockSums {
                xtx,
                xty: xs.iter().map(|c| dot(c, &ys)).collect(),
                yty: dot(&ys, &ys),
                sum_y: ys.iter().sum(),
                sum_x: xs.iter().map(|c| c.iter().sum()).collect(),
            }
        })
        .collect();
    let mut total = BlockSums { xtx: vec![0.0; p * p], xty: vec![0.0; p], yty: 0.0, sum_y: 0.0, sum_x: vec![0.0; p] };
    for b in blocks {
        total.xtx.iter_mut().zip(&b.xtx).for_each(|(t, v)| *t += v);
        total.xty.iter_mut().zip(&b.xty).for_each(|(t, v)| *t += v);
        total.sum_x.iter_mut().zip(&b.sum_x).for_each(|(t, v)| *t += v);
        total.yty += b.yty;
        total.sum_y += b.sum_y;
    }
    total
}

/// Per-level counts and sums. One sequential scatter per (factor, column) task: the
/// tasks run in parallel and each sums its rows in row order. The intercept column
/// (never shifted) sums to the counts, so it needs no pass of its own.
fn level_sums(data: &ModelData<'_>, shift: &Shift) -> Result<Vec<LevelSums>, FitError> {
    let p = data.n_fixed();
    // Column 0 is the counts, 1 the response, 2 + j fixed-effect column j.
    let tasks: Vec<(usize, usize)> = (0..data.factors.len())
        .flat_map(|k| (0..p + 2).filter(|&c| c < 2 || Some(c - 2) != data.intercept).map(move |c| (k, c)))
        .collect();
    // The numbers of levels come from the user: buffers are allocated fallibly.
    let level_buffer = |n_levels: usize, name: &str| try_filled(n_levels, 0.0, &format!("the level sums of '{name}'"));
    let results: Vec<(Vec<u64>, Vec<f64>)> = tasks
        .par_iter()
        .map(|&(k, column)| -> Result<(Vec<u64>, Vec<f64>), FitError> {
            let f = &data.factors[k];
            let n_levels = f.n_levels;
            Ok(match column {
                0 => {
                    let mut counts = try_filled(n_levels, 0u64, &format!("the level counts of '{}'", f.name))?;
                    for i in 0..data.n_obs() {
                        counts[f.level(i)] += 1;
                    }
                    (counts, Vec::new())
                }
                1 => {
                    let mut sums = level_buffer(n_levels, &f.name)?;
                    for (i, v) in data.y.iter().enumerate() {
                        sums[f.level(i)] += v - shift.y;
                    }
                    (Vec::new(), sums)
                }
                _ => {
                    let j = column - 2;
                    let mut sums = level_buffer(n_levels, &f.name)?;
                    match data.x[j] {
                        FixedColumn::Values(values) => {
                            for (i, v) in values.iter().enumerate() {
                                sums[f.level(i)] += v - shift.x[j];
                            }
                        }
                        // A constant column that is not the intercept: its (shifted) sums
                        // are the counts times the constant.
                        FixedColumn::Ones => {
                            for i in 0..data.n_obs() {
                                sums[f.level(i)] += 1.0 - shift.x[j];
                            }
                        }
                    }
                    (Vec::new(), sums)
                }
            })
        })
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(data.factors.len());
    let mut results = results.into_iter();
    for f in &data.factors {
        let counts = results.next().unwrap().0;
        let sum_y = results.next().unwrap().1;
        let mut sum_x = try_with_capacity(f.n_levels.saturating_mul(p), &format!("the level sums of '{}'", f.name))?;
        for j in 0..p {
            if Some(j) == data.intercept {
                sum_x.extend(counts.iter().map(|&c| c as f64));
            } else {
                sum_x.extend_from_slice(&results.next().unwrap().1);
            }
        }
        out.push(LevelSums { counts, sum_y, sum_x });
    }
    Ok(out)
}

/// The cell counts of every pair of factors. Pairs run one after the other, each
/// parallel inside, so that only one pair's sorting buffers (8 bytes a row) are alive.
fn pair_cells(data: &ModelData<'_>) -> Vec<CellCounts> {
    let k_factors = data.factors.len();
    let mut cells = Vec::with_capacity(k_factors * k_factors.saturating_sub(1) / 2);
    for k in 0..k_factors {
        for l in k + 1..k_factors {
            cells.push(CellCounts::count(&data.factors[k], &data.factors[l]));
        }
    }
    cells
}
