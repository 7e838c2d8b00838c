//! The pigeonhole bootstrap (A. B. Owen 2007, "The pigeonhole bootstrap"; Owen and
//! Eckles 2012, "Bootstrapping data arrays of arbitrary order"), made from the rows
//! without building the resampled data.
//!
//! A replicate draws, for every random factor `k` independently, `G_k` of its levels with
//! replacement: level `g` is drawn `w_kg` times, `(w_k1, .., w_kG) ~ Multinomial(G_k; 1/G_k)`.
//! Row `i` then appears `W_i = prod_k w_{k, g_k(i)}` times, and every copy of a level is a
//! level of its own (a level drawn twice is two independent groups). With one factor this
//! is the cluster bootstrap. The replicate's [`SufficientStats`] follow from the original
//! rows, with `v_ki = prod_{j != k} w_{j, g_j(i)}` the copies of row `i` within one copy
//! of its level of `k`:
//!
//! ```text
//! N* = sum_i W_i,  X~'X~* = sum_i W_i x~_i x~_i',  X~'y~* = sum_i W_i x~_i y~_i,  ...
//! factor k: each of the w_kg copies of level g has
//!           n = sum_{i in g} v_ki,  sum y~ = sum_{i in g} v_ki y~_i,  sum x~ = sum_{i in g} v_ki x~_i
//! pair k<l: each of the w_kg w_lm copies of cell (g, m) holds sum_{i in (g, m)} prod_{j != k, l} w_{j, g_j(i)}
//! ```
//!
//! (the last is `n_gm` itself with two factors). Copies are numbered after each other
//! (the copies of level `g` follow those of levels `< g`), so the cells of every copy stay
//! sorted.
//!
//! A replicate is not fitted from these expanded statistics, which are as large as the
//! data's, but from the same sums over the copies of every level ([`ReplicateStatistics`]):
//! the moment and mixed-model equations of the expanded data follow from them exactly
//! ([`MomentEquations::of_copies`], [`solve_mixed_model_to`]), on the levels with
//! rows in the replicate (about 1 - 1/e of them, and with two factors (1 - 1/e)^2 of the
//! cells). So the estimator of a replicate is the estimator of its expanded data.
//!
//! Replicate `b` draws from a ChaCha8 stream fixed by `(seed, b)`, so results do not depend
//! on the number of threads or on which thread fits which replicate.

use crate::data::ModelData;
use crate::error::FitError;
use crate::fr::{fit_full_randomness_opts, FrOptions};
use crate::grouping::CellCounts;
use crate::mixed::{solve_mixed_model_to, Accuracy};
use crate::moments::{fit_variance_components, MomentEquations};
use crate::stats::{pair_index, LevelSums, SufficientStats};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Which estimator a replicate refits.
#[derive(Debug, Clone, PartialEq)]
pub enum Estimator {
    /// The unbiased moment equations ([`crate::moments`]).
    Moments,
    /// Matloff's Full Randomness equations ([`crate::fr`]) with these size() columns
    /// and variant of the equations (shared-level correction, centred).
    FullRandomness { size_columns: Vec<usize>, options: FrOptions },
}

/// The estimates of one replicate.
#[derive(Debug, Clone, PartialEq)]
pub struct Replicate {
    /// `K` random-effect variances and the residual variance, after the boundary rule.
    pub components: Vec<f64>,
    /// The same before the boundary rule: the unbiased solution of the moment equations.
    pub raw: Vec<f64>,
    /// GLS fixed effects of all `p` columns, NaN where a column is aliased in the replicate.
    pub coef: Vec<f64>,
}

/// The data of a fit, ready to be resampled.
pub struct Pigeonhole<'a> {
    data: ModelData<'a>,
    stats: SufficientStats,
    /// Per factor, the levels that have observations (the ones drawn from).
    drawn_from: Vec<Vec<u32>>,
    /// Per pair `k < l`, the position of every row's cell in `stats.cells`; only needed
    /// (and built) with three or more factors.
    row_cells: Vec<Vec<u32>>,
}

impl<'a> Pigeonhole<'a> {
    /// `stats` must be the statistics of `data` (their shift is kept).
    pub fn new(data: &ModelData<'a>, stats: SufficientStats) -> Result<Pigeonhole<'a>, FitError> {
        data.validate()?;
        let k_factors = data.factors.len();
        if k_factors == 0 {
            return Err(FitError::InvalidInput("the bootstrap needs at least one random term".into()));
        }
        if stats.n_factors() != k_factors || stats.n_obs != data.n_obs() as u64 {
            return Err(FitError::Internal("the statistics are not those of the data".into()));
        }
        let drawn_from = stats
            .levels
            .iter()
            .map(|lv| (0..lv.n_levels() as u32).filter(|&g| lv.counts[g as usize] > 0).collect())
            .collect();
        let row_cells = if k_factors >= 3 {
            let mut out = Vec::new();
            for k in 0..k_factors {
                for l in k + 1..k_factors {
                    let cells = &stats.cells[pair_index(k, l, k_factors)];
                    let (fk, fl) = (&data.factors[k], &data.factors[l]);
                    out.push(
                        (0..data.n_obs())
                            .into_par_iter()
                            .map(|i| {
                                let (g, m) = (fk.level(i), fl.level(i) as u32);
                                let row = cells.row_starts[g]..cells.row_starts[g + 1];
                                let at =
                                    cells.cols[row.clone()].binary_search(&m).expect("every row's cell is counted");
                                (row.start + at) as u32
                            })
                            .collect(),
                    );
                }
            }
            out
        } else {
            Vec::new()
        };
        Ok(Pigeonhole { data: data.clone(), stats, drawn_from, row_cells })
    }

    /// The multiplicities `w_kg` of replicate `replicate` of the stream `seed`: for every
    /// factor, as many draws with replacement as it has levels with observations.
    pub fn draw(&self, seed: u64, replicate: u64) -> Vec<Vec<u32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(replicate);
        self.drawn_from
            .iter()
            .zip(&self.stats.levels)
            .map(|(levels, sums)| {
                let mut w = vec![0u32; sums.n_levels()];
                for _ in 0..levels.len() {
                    w[levels[rng.random_range(0..levels.len())] as usize] += 1;
                }
                w
            })
            .collect()
    }

    /// The sufficient statistics of the data in which level `g` of factor `k` appears
    /// `multiplicities[k][g]` times as distinct levels (see the module documentation).
    pub fn replicate_statistics(&self, multiplicities: &[Vec<u32>]) -> Result<SufficientStats, FitError> {
        Ok(self.replicate(multiplicities, true)?.expanded.expect("asked for"))
    }

    /// The estimates of `estimator` on the replicate of these multiplicities: its
    /// statistics (expanded only for the estimator that needs them), then [`fit_replicate`].
    pub fn fit(
        &self,
        multiplicities: &[Vec<u32>],
        estimator: &Estimator,
        pool: &rayon::ThreadPool,
    ) -> Result<Replicate, FitError> {
        let expand = matches!(estimator, Estimator::FullRandomness { .. });
        fit_replicate(&self.replicate(multiplicities, expand)?, estimator, pool)
    }

    /// The statistics of a replicate summed over the copies of every level (see
    /// [`ReplicateStatistics`]), and expanded too if `expand`.
    pub fn replicate(&self, multiplicities: &[Vec<u32>], expand: bool) -> Result<ReplicateStatistics, FitError> {
        let stats = &self.stats;
        let k_factors = stats.n_factors();
        if multiplicities.len() != k_factors
            || multiplicities.iter().zip(&stats.levels).any(|(w, lv)| w.len() != lv.n_levels())
        {
            return Err(FitError::InvalidInput(
                "the multiplicities must give one count for every level of every random term".into(),
            ));
        }
        let p = stats.n_fixed();
        let data = &self.data;
        let shift = &stats.shift;
        let n_levels: Vec<usize> = stats.levels.iter().map(|lv| lv.n_levels()).collect();

        // Sums per original level, for one copy of it; cell contents per original cell.
        let mut per_level: Vec<LevelSums> = n_levels
            .iter()
            .map(|&g| LevelSums { counts: vec![0; g], sum_y: vec![0.0; g], sum_x: vec![0.0; g * p] })
            .collect();
        let mut per_cell: Vec<Vec<u64>> =
            (0..self.row_cells.len()).map(|pair| vec![0; stats.cells[pair].cols.len()]).collect();
        let (mut n_obs, mut yty, mut sum_y) = (0u64, 0.0, 0.0);
        let (mut xtx, mut xty, mut sum_x) = (vec![0.0; p * p], vec![0.0; p], vec![0.0; p]);
        let mut x = vec![0.0; p];
        let mut w = vec![0u64; k_factors];
        for i in 0..data.n_obs() {
            let mut copies = 1u64;
            for (k, f) in data.factors.iter().enumerate() {
                w[k] = multiplicities[k][f.level(i)] as u64;
                copies = copies.saturating_mul(w[k]);
            }
            // A row that appears nowhere adds nothing, not even to its levels' copies.
            if copies == 0 {
                continue;
            }
            if copies > u32::MAX as u64 {
                return Err(FitError::InvalidInput(format!("row {} would appear {copies} times", i + 1)));
            }
            let y = data.y[i] - shift.y;
            for (j, column) in data.x.iter().enumerate() {
                x[j] = column.value(i, shift.x[j]);
            }
            let weight = copies as f64;
            n_obs += copies;
            sum_y += weight * y;
            yty += weight * y * y;
            for a in 0..p {
                let wx = weight * x[a];
                sum_x[a] += wx;
                xty[a] += wx * y;
                for b in 0..p {
                    xtx[b * p + a] += wx * x[b];
                }
            }
            for (k, f) in data.factors.iter().enumerate() {
                let g = f.level(i);
                let within = copies / w[k];
                let sums = &mut per_level[k];
                let within_f = within as f64;
                sums.counts[g] += within;
                sums.sum_y[g] += within_f * y;
                for j in 0..p {
                    sums.sum_x[j * n_levels[k] + g] += within_f * x[j];
                }
            }
            if !self.row_cells.is_empty() {
                for k in 0..k_factors {
                    for l in k + 1..k_factors {
                        let pair = pair_index(k, l, k_factors);
                        per_cell[pair][self.row_cells[pair][i] as usize] += copies / (w[k] * w[l]);
                    }
                }
            }
        }

        // Summed over copies: every level's totals are w_g times one copy's, every cell's
        // w_g w_m times one pair of copies'. Only the levels and cells with rows in the
        // replicate are kept, numbered in their original order.
        let kept: Vec<Vec<u32>> = per_level
            .iter()
            .map(|sums| (0..sums.n_levels() as u32).filter(|&g| sums.counts[g as usize] > 0).collect())
            .collect();
        let summed_levels: Vec<LevelSums> = per_level
            .iter()
            .zip(&kept)
            .zip(multiplicities)
            .map(|((sums, kept), w)| {
                let g_all = sums.n_levels();
                let total = |g: u32| w[g as usize] as f64;
                LevelSums {
                    counts: kept.iter().map(|&g| sums.counts[g as usize] * w[g as usize] as u64).collect(),
                    sum_y: kept.iter().map(|&g| sums.sum_y[g as usize] * total(g)).collect(),
                    sum_x: (0..p)
                        .flat_map(|j| kept.iter().map(move |&g| sums.sum_x[j * g_all + g as usize] * total(g)))
                        .collect(),
                }
            })
            .collect();
        let copies: Vec<Vec<u32>> =
            kept.iter().zip(multiplicities).map(|(kept, w)| kept.iter().map(|&g| w[g as usize]).collect()).collect();
        let mut summed_cells = Vec::with_capacity(stats.cells.len());
        for k in 0..k_factors {
            for l in k + 1..k_factors {
                let pair = pair_index(k, l, k_factors);
                let original = &stats.cells[pair];
                // Compact numbers of the kept levels of l.
                let mut col_of = vec![u32::MAX; original.n_cols];
                for (at, &m) in kept[l].iter().enumerate() {
                    col_of[m as usize] = at as u32;
                }
                let mut out =
                    CellCounts { row_starts: vec![0], cols: Vec::new(), counts: Vec::new(), n_cols: kept[l].len() };
                for &g in &kept[k] {
                    let (g, wg) = (g as usize, multiplicities[k][g as usize] as u64);
                    for at in original.row_starts[g]..original.row_starts[g + 1] {
                        let m = original.cols[at] as usize;
                        let count =
                            if self.row_cells.is_empty() { original.counts[at] as u64 } else { per_cell[pair][at] };
                        let total = count * wg * multiplicities[l][m] as u64;
                        if total > 0 {
                            out.cols.push(col_of[m]);
                            out.counts.push(u32::try_from(total).map_err(|_| {
                                FitError::InvalidInput("a resampled cell holds more than 2^32 rows".into())
                            })?);
                        }
                    }
                    out.row_starts.push(out.cols.len());
                }
                summed_cells.push(out);
            }
        }

        let summed = SufficientStats {
            n_obs,
            shift: shift.clone(),
            x_names: stats.x_names.clone(),
            intercept: stats.intercept,
            factor_names: stats.factor_names.clone(),
            xtx,
            xty,
            yty,
            sum_y,
            sum_x,
            levels: summed_levels,
            cells: summed_cells,
        };
        let expanded = if expand { Some(self.expanded(&summed, per_level, per_cell, multiplicities)?) } else { None };
        Ok(ReplicateStatistics { summed, copies, levels: kept, expanded })
    }

    /// The expanded statistics from one copy's level sums and one pair of copies' cells.
    fn expanded(
        &self,
        summed: &SufficientStats,
        per_level: Vec<LevelSums>,
        per_cell: Vec<Vec<u64>>,
        multiplicities: &[Vec<u32>],
    ) -> Result<SufficientStats, FitError> {
        let stats = &self.stats;
        let k_factors = stats.n_factors();
        let p = stats.n_fixed();
        // Every copy of a level becomes a level: copies of level g are numbered from first[k][g].
        let first: Vec<Vec<usize>> = multiplicities
            .iter()
            .map(|w| {
                let mut at = 0;
                w.iter()
                    .map(|&c| {
                        let here = at;
                        at += c as usize;
                        here
                    })
                    .collect()
            })
            .collect();
        let levels = per_level
            .iter()
            .zip(multiplicities)
            .map(|(sums, w)| {
                let copies_of = |g: usize| std::iter::repeat_n(g, w[g] as usize);
                let order: Vec<usize> = (0..sums.n_levels()).flat_map(copies_of).collect();
                let g_all = sums.n_levels();
                LevelSums {
                    counts: order.iter().map(|&g| sums.counts[g]).collect(),
                    sum_y: order.iter().map(|&g| sums.sum_y[g]).collect(),
                    sum_x: (0..p).flat_map(|j| order.iter().map(move |&g| sums.sum_x[j * g_all + g])).collect(),
                }
            })
            .collect();
        let mut cells = Vec::with_capacity(stats.cells.len());
        for k in 0..k_factors {
            for l in k + 1..k_factors {
                let pair = pair_index(k, l, k_factors);
                let original = &stats.cells[pair];
                let n_cols: usize = multiplicities[l].iter().map(|&c| c as usize).sum();
                let mut out = CellCounts { row_starts: vec![0], cols: Vec::new(), counts: Vec::new(), n_cols };
                let mut row_cols = Vec::new();
                let mut row_counts = Vec::new();
                for g in 0..original.n_rows() {
                    if multiplicities[k][g] == 0 {
                        continue;
                    }
                    row_cols.clear();
                    row_counts.clear();
                    for at in original.row_starts[g]..original.row_starts[g + 1] {
                        let m = original.cols[at] as usize;
                        let count =
                            if self.row_cells.is_empty() { original.counts[at] as u64 } else { per_cell[pair][at] };
                        if count == 0 {
                            continue;
                        }
                        let count = u32::try_from(count)
                            .map_err(|_| FitError::InvalidInput("a resampled cell holds more than 2^32 rows".into()))?;
                        for d in 0..multiplicities[l][m] as usize {
                            row_cols.push((first[l][m] + d) as u32);
                            row_counts.push(count);
                        }
                    }
                    for _ in 0..multiplicities[k][g] {
                        out.cols.extend_from_slice(&row_cols);
                        out.counts.extend_from_slice(&row_counts);
                        out.row_starts.push(out.cols.len());
                    }
                }
                cells.push(out);
            }
        }
        Ok(SufficientStats { levels, cells, ..summed.clone_without_levels() })
    }

    /// Replicates `range` of the stream `seed`, in parallel on `workers`: every worker
    /// takes the next replicate until none is left, and fits it on its own (a failed fit
    /// is that replicate's error).
    pub fn run(
        &self,
        estimator: &Estimator,
        seed: u64,
        range: std::ops::Range<u64>,
        workers: &Workers,
    ) -> Vec<Result<Replicate, FitError>> {
        let next = AtomicU64::new(range.start);
        let slots: Vec<Mutex<Option<Result<Replicate, FitError>>>> = range.clone().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for local in &workers.serial {
                let (next, slots, range) = (&next, &slots, range.clone());
                scope.spawn(move || {
                    local.install(|| loop {
                        let b = next.fetch_add(1, Ordering::Relaxed);
                        if b >= range.end {
                            break;
                        }
                        let result = self.fit(&self.draw(seed, b), estimator, local);
                        *slots[(b - range.start) as usize].lock().expect("no worker panicked") = Some(result);
                    })
                });
            }
        });
        slots
            .into_iter()
            .map(|slot| slot.into_inner().expect("no worker panicked").expect("every replicate was run"))
            .collect()
    }
}

/// Threads for replicates: every replicate runs whole on one thread, in a pool of its
/// own, so its fit's parallel steps run inline. (Sharing one pool, the fit would hand
/// out pieces of every solver iteration to threads busy with other replicates and wait
/// for them.)
pub struct Workers {
    serial: Vec<rayon::ThreadPool>,
}

impl Workers {
    pub fn new(threads: usize) -> Result<Workers, FitError> {
        let serial = (0..threads.max(1)).map(|_| crate::thread_pool(1)).collect::<Result<_, _>>()?;
        Ok(Workers { serial })
    }
}

/// The statistics of one replicate.
pub struct ReplicateStatistics {
    /// Summed over the copies of every level: the statistics of the original rows, row `i`
    /// weighted by its copies `W_i`, with level and cell totals over all copies of a level
    /// (levels not split).
    pub summed: SufficientStats,
    /// Per factor, the copies `w_kg` of the levels in `summed`.
    pub copies: Vec<Vec<u32>>,
    /// Per factor, the original level of every level in `summed`: those with rows in the
    /// replicate (drawn, and sharing rows with drawn levels of the other factors).
    pub levels: Vec<Vec<u32>>,
    /// The statistics of the expanded data (every copy of a level a level of its own),
    /// when asked for.
    pub expanded: Option<SufficientStats>,
}

/// The estimates of `estimator` from the statistics of one replicate. "Moments" solves
/// the expanded data's moment and mixed-model equations from the statistics summed over
/// copies ([`MomentEquations::of_copies`], [`solve_mixed_model_to`]: exactly the
/// same equations, on the original levels), the latter to [`Accuracy::REPLICATE`]; "full
/// randomness" needs the expanded statistics.
pub fn fit_replicate(
    statistics: &ReplicateStatistics,
    estimator: &Estimator,
    pool: &rayon::ThreadPool,
) -> Result<Replicate, FitError> {
    match estimator {
        Estimator::Moments => {
            let stats = &statistics.summed;
            let ols = crate::ols_from_stats(stats)?;
            let equations = pool.install(|| MomentEquations::of_copies(stats, &statistics.copies, &ols))?;
            let components = fit_variance_components(&equations)?;
            let mixed = solve_mixed_model_to(
                stats,
                Some(&statistics.copies),
                &ols,
                &components,
                Accuracy::REPLICATE,
                pool,
                &mut || true,
            )?;
            Ok(Replicate { components: components.estimate, raw: components.raw, coef: mixed.coef })
        }
        Estimator::FullRandomness { size_columns, options } => {
            let stats = statistics.expanded.as_ref().ok_or_else(|| {
                FitError::Internal("the full randomness estimator needs the expanded statistics".into())
            })?;
            let fit = fit_full_randomness_opts(stats, size_columns, *options, pool, &mut || true)?;
            Ok(Replicate { components: fit.components.estimate, raw: fit.components.raw, coef: fit.mixed.coef })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{FactorCodes, FixedColumn};

    /// Three crossed factors, unbalanced, with one covariate.
    fn design() -> (Vec<f64>, Vec<f64>, Vec<Vec<i32>>, Vec<usize>) {
        let n = 60;
        let levels = vec![5usize, 4, 3];
        let codes: Vec<Vec<i32>> = vec![
            (0..n).map(|i| ((i * 7 + i / 9) % 5) as i32 + 1).collect(),
            (0..n).map(|i| ((i * 3 + i / 5) % 4) as i32 + 1).collect(),
            (0..n).map(|i| ((i / 4 + i % 2) % 3) as i32 + 1).collect(),
        ];
        let x: Vec<f64> = (0..n).map(|i| ((i * 13) % 11) as f64 / 3.0).collect();
        let y: Vec<f64> = (0..n).map(|i| 50.0 + x[i] + ((i * 37) % 17) as f64 / 4.0).collect();
        (y, x, codes, levels)
    }

    fn model<'a>(y: &'a [f64], x: &'a [f64], codes: &'a [Vec<i32>], levels: &[usize]) -> ModelData<'a> {
        ModelData {
            y,
            x: vec![FixedColumn::Ones, FixedColumn::Values(x)],
            x_names: vec!["(Intercept)".into(), "x".into()],
            intercept: Some(0),
            factors: codes
                .iter()
                .zip(levels)
                .enumerate()
                .map(|(k, (c, &g))| FactorCodes { name: format!("f{k}"), codes: c, offset: 1, n_levels: g })
                .collect(),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    fn assert_same_statistics(a: &SufficientStats, b: &SufficientStats) {
        assert_eq!(a.n_obs, b.n_obs);
        assert_eq!(a.cells, b.cells);
        for (la, lb) in a.levels.iter().zip(&b.levels) {
            assert_eq!(la.counts, lb.counts);
            assert!(la.sum_y.iter().zip(&lb.sum_y).all(|(u, v)| close(*u, *v)));
            assert!(la.sum_x.iter().zip(&lb.sum_x).all(|(u, v)| close(*u, *v)));
        }
        for (u, v) in a.xtx.iter().chain(&a.xty).chain(&a.sum_x).zip(b.xtx.iter().chain(&b.xty).chain(&b.sum_x)) {
            assert!(close(*u, *v), "{u} != {v}");
        }
        assert!(close(a.yty, b.yty) && close(a.sum_y, b.sum_y));
    }

    /// The data written out copy by copy: row i once for every combination of the copies
    /// of its levels, copy c of level g of factor k coded first_k(g) + c.
    fn expand(y: &[f64], x: &[f64], codes: &[Vec<i32>], w: &[Vec<u32>]) -> (Vec<f64>, Vec<f64>, Vec<Vec<i32>>) {
        let first: Vec<Vec<i32>> = w
            .iter()
            .map(|wk| {
                wk.iter()
                    .scan(0i32, |at, &c| {
                        let here = *at;
                        *at += c as i32;
                        Some(here)
                    })
                    .collect()
            })
            .collect();
        let (mut ey, mut ex) = (Vec::new(), Vec::new());
        let mut ecodes = vec![Vec::new(); codes.len()];
        for i in 0..y.len() {
            let mut combos: Vec<Vec<i32>> = vec![Vec::new()];
            for (k, c) in codes.iter().enumerate() {
                let g = (c[i] - 1) as usize;
                combos = combos
                    .into_iter()
                    .flat_map(|prefix| {
                        (0..w[k][g] as i32).map(move |d| {
                            let mut next = prefix.clone();
                            next.push(d);
                            next
                        })
                    })
                    .collect();
            }
            for combo in combos {
                ey.push(y[i]);
                ex.push(x[i]);
                for (k, d) in combo.iter().enumerate() {
                    ecodes[k].push(first[k][(codes[k][i] - 1) as usize] + d + 1);
                }
            }
        }
        (ey, ex, ecodes)
    }

    #[test]
    fn replicate_statistics_equal_those_of_the_expanded_rows() {
        let (y, x, codes, levels) = design();
        // Two factors (cells copied) and three (cells re-counted from the rows).
        for k_factors in [1, 2, 3] {
            let (codes, levels) = (&codes[..k_factors], &levels[..k_factors]);
            let data = model(&y, &x, codes, levels);
            let stats = SufficientStats::compute(&data).unwrap();
            let shift = stats.shift.clone();
            let boot = Pigeonhole::new(&data, stats).unwrap();
            for replicate in 0..5 {
                let w = boot.draw(11, replicate);
                for (wk, &g) in w.iter().zip(levels) {
                    assert_eq!(wk.iter().sum::<u32>() as usize, g, "G_k draws per factor");
                }
                let (ey, ex, ecodes) = expand(&y, &x, codes, &w);
                let expanded = model(&ey, &ex, &ecodes, levels);
                let direct = SufficientStats::compute_with_shift(&expanded, shift.clone()).unwrap();
                assert_same_statistics(&boot.replicate_statistics(&w).unwrap(), &direct);
            }
        }
    }

    #[test]
    fn the_equations_summed_over_copies_are_those_of_the_expanded_data() {
        use crate::mixed::solve_mixed_model;
        use crate::moments::VarianceComponents;
        let (y, x, codes, levels) = design();
        let pool = crate::thread_pool(1).unwrap();
        for k_factors in [1, 2, 3] {
            let data = model(&y, &x, &codes[..k_factors], &levels[..k_factors]);
            let boot = Pigeonhole::new(&data, SufficientStats::compute(&data).unwrap()).unwrap();
            for replicate in 0..4 {
                let both = boot.replicate(&boot.draw(3, replicate), true).unwrap();
                let expanded_stats = both.expanded.as_ref().unwrap();
                let ols = crate::ols_from_stats(expanded_stats).unwrap();
                // The moment equations, summed over copies and expanded.
                let summed_eq = MomentEquations::of_copies(&both.summed, &both.copies, &ols).unwrap();
                let expanded_eq = MomentEquations::from_stats(expanded_stats, &ols).unwrap();
                assert_eq!(summed_eq.n_levels, expanded_eq.n_levels);
                for i in 0..=k_factors {
                    assert!(close(summed_eq.q[i], expanded_eq.q[i]), "{} != {}", summed_eq.q[i], expanded_eq.q[i]);
                    for j in 0..=k_factors {
                        let (a, b) = (summed_eq.lhs[(i, j)], expanded_eq.lhs[(i, j)]);
                        assert!(close(a, b), "equation {i}, unknown {j}: {a} != {b}");
                    }
                }
                // Components fixed at positive values, so every term is in the equations.
                let estimate: Vec<f64> = (0..=k_factors).map(|k| 0.5 + k as f64).collect();
                let components =
                    VarianceComponents { raw: estimate.clone(), estimate, at_boundary: vec![false; k_factors] };
                let expanded = solve_mixed_model(expanded_stats, &ols, &components, &pool, &mut || true).unwrap();
                let summed = solve_mixed_model_to(
                    &both.summed,
                    Some(&both.copies),
                    &ols,
                    &components,
                    Accuracy::FIT,
                    &pool,
                    &mut || true,
                )
                .unwrap();
                for (a, b) in expanded.coef.iter().zip(&summed.coef) {
                    assert!((a - b).abs() <= 1e-9 * (1.0 + a.abs()), "{a} != {b}");
                }
                for (a, b) in expanded
                    .vcov
                    .col_iter()
                    .flat_map(|c| c.iter().copied().collect::<Vec<_>>())
                    .zip(summed.vcov.col_iter().flat_map(|c| c.iter().copied().collect::<Vec<_>>()))
                {
                    assert!((a - b).abs() <= 1e-9 * (1.0 + a.abs()), "{a} != {b}");
                }
                // Every copy of level g has the BLUP of level g; the expanded data number
                // the copies of level g after those of the levels before it.
                let w = boot.draw(3, replicate);
                for k in 0..k_factors {
                    assert!(both.copies[k].iter().all(|&c| c > 0));
                    for (at, &g) in both.levels[k].iter().enumerate() {
                        let first: u32 = w[k][..g as usize].iter().sum();
                        for c in 0..w[k][g as usize] {
                            let (a, b) = (expanded.ranef[k][(first + c) as usize], summed.ranef[k][at]);
                            assert!((a - b).abs() <= 1e-8 * (1.0 + a.abs()), "{a} != {b}");
                        }
                    }
                    // Only the levels without rows are left out.
                    assert_eq!(
                        both.copies[k].iter().sum::<u32>() as usize,
                        expanded_stats.levels[k].counts.iter().filter(|&&n| n > 0).count()
                    );
                }
            }
        }
    }

    #[test]
    fn a_level_drawn_twice_is_two_levels() {
        // One factor, levels of sizes 2 and 3: drawing level 1 twice gives two groups of
        // two rows, not one of four.
        let y = [1.0, 2.0, 4.0, 8.0, 16.0];
        let codes = [vec![1, 1, 2, 2, 2]];
        let data = ModelData {
            y: &y,
            x: vec![FixedColumn::Ones],
            x_names: vec!["(Intercept)".into()],
            intercept: Some(0),
            factors: vec![FactorCodes { name: "g".into(), codes: &codes[0], offset: 1, n_levels: 2 }],
        };
        let boot = Pigeonhole::new(
            &data,
            SufficientStats::compute_with_shift(&data, crate::Shift { y: 0.0, x: vec![0.0] }).unwrap(),
        )
        .unwrap();
        let s = boot.replicate_statistics(&[vec![2, 0]]).unwrap();
        assert_eq!(s.n_obs, 4);
        assert_eq!(s.levels[0].counts, vec![2, 2]);
        assert_eq!(s.levels[0].sum_y, vec![3.0, 3.0]);
        assert_eq!(s.yty, 10.0);
    }

    #[test]
    fn replicates_do_not_depend_on_threads() {
        let (y, x, codes, levels) = design();
        let data = model(&y, &x, &codes[..2], &levels[..2]);
        let stats = SufficientStats::compute(&data).unwrap();
        let boot = Pigeonhole::new(&data, stats).unwrap();
        let one = boot.run(&Estimator::Moments, 5, 0..12, &Workers::new(1).unwrap());
        let two = boot.run(&Estimator::Moments, 5, 0..12, &Workers::new(2).unwrap());
        assert_eq!(one, two);
        let in_parts: Vec<_> = [0..5, 5..12]
            .into_iter()
            .flat_map(|r| boot.run(&Estimator::Moments, 5, r, &Workers::new(3).unwrap()))
            .collect();
        assert_eq!(one, in_parts);
        let other_seed = boot.run(&Estimator::Moments, 6, 0..12, &Workers::new(2).unwrap());
        assert_ne!(one, other_seed);
        assert!(one.iter().filter(|r| r.is_ok()).count() >= 10);
    }

    #[test]
    fn all_multiplicities_one_give_the_original_statistics() {
        let (y, x, codes, levels) = design();
        let data = model(&y, &x, &codes, &levels);
        let stats = SufficientStats::compute(&data).unwrap();
        let boot = Pigeonhole::new(&data, stats.clone()).unwrap();
        let ones: Vec<Vec<u32>> = levels.iter().map(|&g| vec![1; g]).collect();
        assert_same_statistics(&boot.replicate_statistics(&ones).unwrap(), &stats);
        // A column of ones that is not the intercept is shifted like any other column.
        let mut constant = model(&y, &x, &codes, &levels);
        constant.x.push(FixedColumn::Ones);
        constant.x_names.push("one".into());
        let stats = SufficientStats::compute(&constant).unwrap();
        assert!(stats.shift.x[2] != 0.0);
        let boot = Pigeonhole::new(&constant, stats.clone()).unwrap();
        assert_same_statistics(&boot.replicate_statistics(&ones).unwrap(), &stats);
    }
}
