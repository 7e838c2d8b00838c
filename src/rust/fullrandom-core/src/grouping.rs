//! Grouping rows by level and counting the cells of two factors, in O(N) without hashing.
//!
//! For factors `k` (rows) and `l` (columns) the cell counts are
//! `n_gm = #{i : level_k(i) = g, level_l(i) = m}`, the entries of `C_kl = Z_k' Z_l`.
//! They are found by two stable counting sorts (a least-significant-digit radix sort on
//! the pair of codes): the `k` level of every row is first grouped by the row's `l`
//! level, then that list, read in order, is grouped by `k` level, so each `k` bucket
//! lists its `l` levels in ascending order and the cells are its runs. Both sorts read
//! their input sequentially. Time O(N + G_k + G_l), memory one `u32` per row each.
//!
//! Each counting sort runs in parallel ([`bucket_sort`]): every thread counts its part
//! of the input per bucket, the counts give every part its own places in each bucket,
//! and the parts are placed at once. A stable sort has one result, so it does not
//! depend on the number of threads.

use crate::data::FactorCodes;
use crate::error::FitError;
use rayon::prelude::*;
use std::ops::Range;

/// Items below which a part of a [`bucket_sort`] is not worth a thread of its own.
const MIN_ITEMS_PER_PART: usize = 1 << 16;
/// Items per task when buckets are processed in parallel ([`balanced_blocks`]).
const ITEMS_PER_BLOCK: usize = 1 << 16;

/// The number of rows of every level of 1-based `codes` (R's factor codes), in parallel
/// over parts of the rows, and the number of codes that are missing (`NA`, i.e.
/// `i32::MIN`) or outside `1..=n_levels`. Integer sums, so exact for any thread count.
pub fn level_counts(codes: &[i32], n_levels: usize) -> (Vec<u64>, u64) {
    let parts = rayon::current_num_threads().min(codes.len() / MIN_ITEMS_PER_PART).max(1);
    let per_part: Vec<(Vec<u64>, u64)> = (0..parts)
        .into_par_iter()
        .map(|b| {
            let mut counts = vec![0u64; n_levels];
            let mut other = 0u64;
            for &c in &codes[b * codes.len() / parts..(b + 1) * codes.len() / parts] {
                match usize::try_from(c).ok().filter(|&c| (1..=n_levels).contains(&c)) {
                    Some(level) => counts[level - 1] += 1,
                    None => other += 1,
                }
            }
            (counts, other)
        })
        .collect();
    let mut total = vec![0u64; n_levels];
    let mut other = 0;
    for (counts, o) in per_part {
        total.iter_mut().zip(&counts).for_each(|(t, c)| *t += c);
        other += o;
    }
    (total, other)
}

/// Items grouped into buckets: bucket `g` holds `values[starts[g]..starts[g + 1]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets<T> {
    pub starts: Vec<usize>,
    pub values: Vec<T>,
}

/// A pointer that parts of a [`bucket_sort`] write through at disjoint places.
struct Places<T>(*mut T);
// SAFETY: the places written through the pointer are disjoint between threads (see
// `bucket_sort`), and `T: Send` values are moved, not shared.
unsafe impl<T: Send> Sync for Places<T> {}

impl<T> Places<T> {
    /// # Safety
    /// `at` must lie inside the allocation and be written by no other thread.
    unsafe fn write(&self, at: usize, value: T) {
        unsafe { self.0.add(at).write(value) }
    }
}

/// A stable counting sort of `n_items` items into `n_buckets` buckets, in parallel.
///
/// `items(range)` lists the items with indices in `range`, in order, as
/// `(bucket, value)` pairs; it is called twice per part of the input (to count and to
/// place) and must list the same pairs both times. Each bucket receives its values in
/// item order.
pub(crate) fn bucket_sort<T, I, F>(n_items: usize, n_buckets: usize, items: F) -> Buckets<T>
where
    T: Copy + Send,
    I: Iterator<Item = (usize, T)>,
    F: Fn(Range<usize>) -> I + Sync,
{
    assert!(u32::try_from(n_items).is_ok(), "a bucket sort holds at most 2^32 - 1 items");
    let parts = rayon::current_num_threads().min(n_items / MIN_ITEMS_PER_PART).max(1);
    let ranges: Vec<Range<usize>> = (0..parts).map(|b| b * n_items / parts..(b + 1) * n_items / parts).collect();
    // Each part's counts per bucket, then turned into the part's first place in each
    // bucket: bucket g holds part 0's items, then part 1's, ...
    let mut next: Vec<Vec<u32>> = ranges
        .par_iter()
        .map(|range| {
            let mut counts = vec![0u32; n_buckets];
            for (g, _) in items(range.clone()) {
                counts[g] += 1;
            }
            counts
        })
        .collect();
    let mut starts = Vec::with_capacity(n_buckets + 1);
    let mut total = 0u32;
    for g in 0..n_buckets {
        starts.push(total as usize);
        for part in next.iter_mut() {
            let count = part[g];
            part[g] = total;
            total += count;
        }
    }
    starts.push(total as usize);
    assert_eq!(total as usize, n_items, "the items were not all counted");

    let mut values: Vec<T> = Vec::with_capacity(n_items);
    let places = Places(values.as_mut_ptr());
    ranges.par_iter().zip(next.par_iter_mut()).for_each(|(range, next)| {
        for (g, value) in items(range.clone()) {
            let at = next[g] as usize;
            // The places of (part, bucket) are disjoint by construction, so this only
            // fails if `items` listed other items than it counted.
            assert!(at < starts[g + 1], "bucket_sort: items changed between counting and placing");
            // SAFETY: `at` is inside the allocation (at < starts[g + 1] <= n_items) and
            // in the range of places that belong to this part alone.
            unsafe { places.write(at, value) };
            next[g] += 1;
        }
    });
    // SAFETY: the n_items places were each written once: every part wrote exactly as
    // many values to each bucket as it counted, filling its places there.
    unsafe { values.set_len(n_items) };
    Buckets { starts, values }
}

/// The values of `buckets`, each listed with its bucket: `(bucket, value)` for the
/// positions in `range` of `values`, in order (the items of a second sort pass).
pub(crate) fn with_bucket<'a, T: Copy>(
    starts: &'a [usize],
    values: &'a [T],
    range: Range<usize>,
) -> impl Iterator<Item = (u32, T)> + 'a {
    // The bucket holding position range.start; empty buckets are skipped by their empty ranges.
    let first = starts.partition_point(|&s| s <= range.start).saturating_sub(1);
    (first..starts.len() - 1).take_while(move |&g| starts[g] < range.end).flat_map(move |g| {
        (starts[g].max(range.start)..starts[g + 1].min(range.end)).map(move |i| (g as u32, values[i]))
    })
}

/// Consecutive buckets grouped into blocks of about [`ITEMS_PER_BLOCK`] items (a
/// bucket larger than that is a block of its own), so that parallel work over buckets
/// is balanced however skewed their sizes are.
pub fn balanced_blocks(starts: &[usize]) -> Vec<Range<usize>> {
    let n_buckets = starts.len() - 1;
    let mut blocks = Vec::new();
    let mut first = 0;
    for g in 0..n_buckets {
        // Each bucket counts at least 1, so many empty buckets still split.
        if starts[g + 1] - starts[first] + (g + 1 - first) >= ITEMS_PER_BLOCK {
            blocks.push(first..g + 1);
            first = g + 1;
        }
    }
    if first < n_buckets || blocks.is_empty() {
        blocks.push(first..n_buckets);
    }
    blocks
}

/// The nonzero cell counts of two factors, stored by rows (compressed sparse rows):
/// the cells of row level `g` are `cols[row_starts[g]..row_starts[g + 1]]`, ascending,
/// with counts in `counts` at the same positions.
#[derive(Debug, Clone, PartialEq)]
pub struct CellCounts {
    pub row_starts: Vec<usize>,
    pub cols: Vec<u32>,
    /// Counts as `u32` (rows are indexed by `u32` too): 8 bytes a cell with `cols`.
    pub counts: Vec<u32>,
    pub n_cols: usize,
}

impl CellCounts {
    /// Counts the cells of `rows` x `cols` factors (same length, validated codes).
    pub fn count(rows: &FactorCodes<'_>, cols: &FactorCodes<'_>) -> CellCounts {
        let n = rows.codes.len();
        // The row level of every observation, grouped by column level.
        let by_col = bucket_sort(n, cols.n_levels, |i| i.map(|i| (cols.level(i), rows.level(i) as u32)));
        // That list read in order (ascending column level) and grouped by row level:
        // every row bucket comes out with its column levels sorted.
        let by_row = bucket_sort(n, rows.n_levels, |range| {
            with_bucket(&by_col.starts, &by_col.values, range).map(|(m, g)| (g as usize, m))
        });
        drop(by_col);
        CellCounts::from_sorted_buckets(&by_row, cols.n_levels)
    }

    /// Run-length encodes buckets of sorted column levels into cells. Buckets are
    /// independent, so balanced blocks of them run in parallel and are concatenated in
    /// order.
    fn from_sorted_buckets(by_row: &Buckets<u32>, n_cols: usize) -> CellCounts {
        let starts = &by_row.starts;
        let pieces: Vec<(Vec<usize>, Vec<u32>, Vec<u32>)> = balanced_blocks(starts)
            .into_par_iter()
            .map(|block| {
                let mut lens = Vec::with_capacity(block.len());
                let mut cs = Vec::new();
                let mut ns = Vec::new();
                for g in block {
                    let before = cs.len();
                    for &m in &by_row.values[starts[g]..starts[g + 1]] {
                        if cs.len() > before && *cs.last().unwrap() == m {
                            *ns.last_mut().unwrap() += 1;
                        } else {
                            cs.push(m);
                            ns.push(1u32);
                        }
                    }
                    lens.push(cs.len() - before);
                }
                (lens, cs, ns)
            })
            .collect();
        // Sized exactly, so that concatenating does not reallocate (the cell table is
        // the largest object of the statistics).
        let n_cells: usize = pieces.iter().map(|p| p.1.len()).sum();
        let mut out = CellCounts {
            row_starts: Vec::with_capacity(starts.len()),
            cols: Vec::with_capacity(n_cells),
            counts: Vec::with_capacity(n_cells),
            n_cols,
        };
        out.row_starts.push(0);
        for (lens, cs, ns) in pieces {
            for len in lens {
                let last = *out.row_starts.last().unwrap();
                out.row_starts.push(last + len);
            }
            out.cols.extend_from_slice(&cs);
            out.counts.extend_from_slice(&ns);
        }
        out
    }

    pub fn n_rows(&self) -> usize {
        self.row_starts.len() - 1
    }

    /// The cells `(m, n_gm)` of row level `g`.
    pub fn row(&self, g: usize) -> impl Iterator<Item = (usize, u64)> + '_ {
        let r = self.row_starts[g]..self.row_starts[g + 1];
        self.cols[r.clone()].iter().map(|&m| m as usize).zip(self.counts[r].iter().map(|&n| n as u64))
    }

    /// The same cells stored by the column factor: `n_mg` for column level `m`, row
    /// levels ascending. One stable counting sort of the cells, O(cells + levels).
    pub fn transpose(&self) -> CellCounts {
        let by_col = bucket_sort(self.cols.len(), self.n_cols, |range| {
            with_bucket(&self.row_starts, &self.cols, range.clone())
                .zip(&self.counts[range])
                .map(|((g, m), &n)| (m as usize, (g, n)))
        });
        let (cols, counts) = by_col.values.into_par_iter().unzip();
        CellCounts { row_starts: by_col.starts, cols, counts, n_cols: self.n_rows() }
    }

    /// The cell counts of the union of two row sets: counts of equal cells add.
    pub fn merge(&self, other: &CellCounts) -> Result<CellCounts, FitError> {
        if self.n_rows() != other.n_rows() || self.n_cols != other.n_cols {
            return Err(FitError::Incompatible(format!(
                "cell tables of shape {} x {} and {} x {} cannot be merged",
                self.n_rows(),
                self.n_cols,
                other.n_rows(),
                other.n_cols
            )));
        }
        let mut out = CellCounts {
            row_starts: vec![0],
            cols: Vec::with_capacity(self.cols.len().max(other.cols.len())),
            counts: Vec::with_capacity(self.cols.len().max(other.cols.len())),
            n_cols: self.n_cols,
        };
        for g in 0..self.n_rows() {
            let mut a = self.row(g).peekable();
            let mut b = other.row(g).peekable();
            loop {
                let next = match (a.peek(), b.peek()) {
                    (None, None) => break,
                    (Some(_), None) => a.next().unwrap(),
                    (None, Some(_)) => b.next().unwrap(),
                    (Some(&(ma, na)), Some(&(mb, nb))) => {
                        if ma == mb {
                            a.next();
                            b.next();
                            (ma, na + nb)
                        } else if ma < mb {
                            a.next().unwrap()
                        } else {
                            b.next().unwrap()
                        }
                    }
                };
                out.cols.push(next.0 as u32);
                out.counts.push(
                    u32::try_from(next.1)
                        .map_err(|_| FitError::Incompatible("a cell holds more than 2^32 - 1 observations".into()))?,
                );
            }
            out.row_starts.push(out.cols.len());
        }
        Ok(out)
    }
}

impl CellCounts {
    /// The same cells with the levels renumbered, as when chunks with their own levels are
    /// merged: row level `g` becomes `row_map[g]` of `n_rows`, column level `m` becomes
    /// `col_map[m]` of `n_cols`. The maps must be one-to-one. Each new row's cells are
    /// sorted by column again (already sorted when the maps keep the order).
    pub fn relevelled(
        &self,
        row_map: &[usize],
        col_map: &[usize],
        n_rows: usize,
        n_cols: usize,
    ) -> Result<CellCounts, FitError> {
        check_level_map(row_map, self.n_rows(), n_rows)?;
        check_level_map(col_map, self.n_cols, n_cols)?;
        let mut starts = vec![0usize; n_rows + 1];
        for g in 0..self.n_rows() {
            starts[row_map[g] + 1] = self.row_starts[g + 1] - self.row_starts[g];
        }
        for g in 0..n_rows {
            starts[g + 1] += starts[g];
        }
        let mut cells = vec![(0u32, 0u32); self.cols.len()];
        for g in 0..self.n_rows() {
            let at = starts[row_map[g]];
            let r = self.row_starts[g]..self.row_starts[g + 1];
            for (slot, (&m, &n)) in
                cells[at..at + r.len()].iter_mut().zip(self.cols[r.clone()].iter().zip(&self.counts[r]))
            {
                *slot = (col_map[m as usize] as u32, n);
            }
        }
        for g in 0..n_rows {
            let row = &mut cells[starts[g]..starts[g + 1]];
            if !row.is_sorted_by_key(|c| c.0) {
                row.sort_unstable_by_key(|c| c.0);
            }
        }
        let (cols, counts) = cells.into_iter().unzip();
        Ok(CellCounts { row_starts: starts, cols, counts, n_cols })
    }
}

/// Checks that `map` sends each of `n_from` levels to a distinct level below `n_to`.
pub fn check_level_map(map: &[usize], n_from: usize, n_to: usize) -> Result<(), FitError> {
    if map.len() != n_from {
        return Err(FitError::Incompatible(format!("a level map has {} entries for {n_from} levels", map.len())));
    }
    let mut seen = vec![false; n_to];
    for &g in map {
        if g >= n_to || std::mem::replace(&mut seen[g], true) {
            return Err(FitError::Incompatible(format!("a level map is not one-to-one into {n_to} levels")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn factor<'a>(codes: &'a [i32], n_levels: usize) -> FactorCodes<'a> {
        FactorCodes { name: "f".into(), codes, offset: 0, n_levels }
    }

    #[test]
    fn cells_match_a_direct_count_and_are_sorted() {
        let a_codes = [2, 0, 1, 2, 2, 0, 1, 1, 2, 0];
        let b_codes = [1, 3, 0, 1, 0, 3, 3, 0, 2, 0];
        let (a, b) = (factor(&a_codes, 4), factor(&b_codes, 4));
        let cells = CellCounts::count(&a, &b);
        let mut dense = [[0u64; 4]; 4];
        for i in 0..a_codes.len() {
            dense[a_codes[i] as usize][b_codes[i] as usize] += 1;
        }
        for (g, row) in dense.iter().enumerate() {
            let got: Vec<(usize, u64)> = cells.row(g).collect();
            let want: Vec<(usize, u64)> =
                row.iter().enumerate().filter(|(_, &n)| n > 0).map(|(m, &n)| (m, n)).collect();
            assert_eq!(got, want, "row level {g}");
        }
        assert_eq!(cells.row(3).count(), 0, "an empty level has no cells");
    }

    #[test]
    fn transpose_lists_the_same_cells_by_column() {
        let a_codes = [2, 0, 1, 2, 2, 0, 1, 1, 2, 0, 2];
        let b_codes = [1, 3, 0, 1, 0, 3, 3, 0, 2, 0, 4];
        let (a, b) = (factor(&a_codes, 4), factor(&b_codes, 5));
        let cells = CellCounts::count(&a, &b);
        let by_column = CellCounts::count(&b, &a);
        assert_eq!(cells.transpose(), by_column);
        assert_eq!(cells.transpose().transpose(), cells);
    }

    /// Row indices ordered by level, rows of one level in their original order.
    fn rows_by_level(factor: &FactorCodes<'_>) -> Buckets<u32> {
        bucket_sort(factor.codes.len(), factor.n_levels, |rows| rows.map(|i| (factor.level(i), i as u32)))
    }

    #[test]
    fn rows_by_level_is_stable() {
        let codes = [1, 0, 1, 0, 1];
        let f = factor(&codes, 2);
        let order = rows_by_level(&f);
        assert_eq!(order.values, vec![1, 3, 0, 2, 4]);
        assert_eq!(order.starts, vec![0, 2, 5], "two rows of level 0, three of level 1");
    }

    #[test]
    fn merged_cells_equal_cells_of_the_union() {
        let a_all = [0, 1, 1, 2, 0, 2, 1, 0];
        let b_all = [1, 0, 1, 1, 1, 0, 2, 2];
        let count = |a_codes: &[i32], b_codes: &[i32]| CellCounts::count(&factor(a_codes, 3), &factor(b_codes, 3));
        let whole = count(&a_all, &b_all);
        let merged = count(&a_all[..3], &b_all[..3]).merge(&count(&a_all[3..], &b_all[3..])).unwrap();
        assert_eq!(merged, whole);
    }

    /// Enough rows that the sorts split into parts, with skewed levels (a few levels
    /// hold most rows) and empty levels: the result must equal a direct count and not
    /// depend on the number of threads.
    #[test]
    fn parallel_sorts_match_a_direct_count_for_any_thread_count() {
        let n = 5 * MIN_ITEMS_PER_PART + 17;
        let mut state = 7u64;
        let mut draw = |levels: u64| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = (state >> 33) as f64 / (1u64 << 31) as f64;
            ((u * u * u) * levels as f64) as i32 * 2 // even codes only: odd levels stay empty
        };
        let a_codes: Vec<i32> = (0..n).map(|_| draw(3000)).collect();
        let b_codes: Vec<i32> = (0..n).map(|_| draw(700)).collect();
        let (a, b) = (factor(&a_codes, 6000), factor(&b_codes, 1400));
        let mut direct = std::collections::BTreeMap::new();
        for (&g, &m) in a_codes.iter().zip(&b_codes) {
            *direct.entry((g as usize, m as usize)).or_insert(0u64) += 1;
        }
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| (CellCounts::count(&a, &b), rows_by_level(&a)))
        };
        let (cells, order) = run(1);
        let listed: Vec<((usize, usize), u64)> =
            (0..cells.n_rows()).flat_map(|g| cells.row(g).map(move |(m, c)| ((g, m), c))).collect();
        assert_eq!(listed, direct.into_iter().collect::<Vec<_>>());
        let mut by_level: Vec<u32> = (0..n as u32).collect();
        by_level.sort_by_key(|&i| a_codes[i as usize]); // a stable sort
        assert_eq!(order.values, by_level);
        for threads in [2, 3, 4] {
            let (cells_t, order_t) = run(threads);
            assert_eq!(cells_t, cells, "cells with {threads} threads");
            assert_eq!(order_t, order, "order with {threads} threads");
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            assert_eq!(pool.install(|| cells.transpose()), CellCounts::count(&b, &a));
        }
    }

    #[test]
    fn balanced_blocks_cover_every_bucket_once() {
        let sizes = [0usize, 5 * ITEMS_PER_BLOCK, 3, 0, ITEMS_PER_BLOCK / 2, ITEMS_PER_BLOCK / 2, 7];
        let mut starts = vec![0];
        for s in sizes {
            starts.push(starts.last().unwrap() + s);
        }
        let blocks = balanced_blocks(&starts);
        let covered: Vec<usize> = blocks.iter().flat_map(|b| b.clone()).collect();
        assert_eq!(covered, (0..sizes.len()).collect::<Vec<_>>());
        assert!(blocks.len() >= 3, "the large bucket is a block of its own: {blocks:?}");
        assert_eq!(balanced_blocks(&[0]), vec![0..0]);
    }

    #[test]
    fn level_counts_count_codes_and_set_aside_the_rest() {
        let mut codes: Vec<i32> = (0..3 * MIN_ITEMS_PER_PART as i32).map(|i| 1 + (i % 5) * (i % 7) % 5).collect();
        codes[7] = i32::MIN; // NA
        codes[8] = 6; // outside the levels
        codes[9] = 0;
        let mut want = vec![0u64; 6];
        for &c in &codes {
            if (1..=6).contains(&c) {
                want[c as usize - 1] += 1;
            }
        }
        want.truncate(5);
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let (counts, other) = pool.install(|| level_counts(&codes, 5));
            assert_eq!(counts, want);
            assert_eq!(other, 3);
        }
        assert_eq!(level_counts(&[], 2), (vec![0, 0], 0));
    }
}
