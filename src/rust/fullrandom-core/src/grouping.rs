//! Grouping rows by level and counting the cells of two factors, in O(N) without hashing.
//!
//! For factors `k` (rows) and `l` (columns) the cell counts are
//! `n_gm = #{i : level_k(i) = g, level_l(i) = m}`, the entries of `C_kl = Z_k' Z_l`.
//! They are found by two stable counting sorts (a least-significant-digit radix sort on
//! the pair of codes): rows are first ordered by their `l` level, then scattered into
//! `k` buckets in that order, so each `k` bucket lists its `l` levels in ascending order
//! and the cells are its runs. Time O(N + G_k + G_l), memory one `u32` per row each.

use crate::data::FactorCodes;
use crate::error::FitError;
use rayon::prelude::*;

/// Start of each level's block in a by-level ordering: `starts[g]..starts[g + 1]`.
pub fn level_starts(counts: &[u64]) -> Vec<usize> {
    let mut starts = Vec::with_capacity(counts.len() + 1);
    let mut total = 0usize;
    starts.push(0);
    for &c in counts {
        total += c as usize;
        starts.push(total);
    }
    starts
}

/// Row indices ordered by level, rows of one level in their original order (stable).
pub fn rows_by_level(factor: &FactorCodes<'_>, starts: &[usize]) -> Vec<u32> {
    let mut next = starts[..starts.len() - 1].to_vec();
    let mut order = vec![0u32; factor.codes.len()];
    for i in 0..factor.codes.len() {
        let g = factor.level(i);
        order[next[g]] = i as u32;
        next[g] += 1;
    }
    order
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
    /// Counts the cells of `rows` x `cols` factors.
    ///
    /// `row_starts` are the [`level_starts`] of the row factor; `cols_order` is
    /// [`rows_by_level`] of the column factor.
    pub fn count(
        rows: &FactorCodes<'_>,
        row_starts: &[usize],
        cols: &FactorCodes<'_>,
        cols_order: &[u32],
    ) -> CellCounts {
        // Scatter the column level of every observation into its row bucket, visiting
        // observations by ascending column level so every bucket comes out sorted.
        let mut next = row_starts[..row_starts.len() - 1].to_vec();
        let mut sorted_cols = vec![0u32; cols_order.len()];
        for &i in cols_order {
            let i = i as usize;
            let g = rows.level(i);
            sorted_cols[next[g]] = cols.level(i) as u32;
            next[g] += 1;
        }
        drop(next);
        // Run-length encode each bucket; buckets are independent, so blocks of row
        // levels run in parallel and are concatenated in order (thread-count free).
        let n_rows = row_starts.len() - 1;
        let block = 4096usize;
        let pieces: Vec<(Vec<usize>, Vec<u32>, Vec<u32>)> = (0..n_rows.div_ceil(block))
            .into_par_iter()
            .map(|b| {
                let (lo, hi) = (b * block, ((b + 1) * block).min(n_rows));
                let mut lens = Vec::with_capacity(hi - lo);
                let mut cs = Vec::new();
                let mut ns = Vec::new();
                for g in lo..hi {
                    let bucket = &sorted_cols[row_starts[g]..row_starts[g + 1]];
                    let before = cs.len();
                    for &m in bucket {
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
        // The scattered levels are no longer needed; size the result exactly so that
        // concatenating does not reallocate (it is the largest object of the pass).
        drop(sorted_cols);
        let n_cells: usize = pieces.iter().map(|p| p.1.len()).sum();
        let mut out = CellCounts {
            row_starts: Vec::with_capacity(n_rows + 1),
            cols: Vec::with_capacity(n_cells),
            counts: Vec::with_capacity(n_cells),
            n_cols: cols.n_levels,
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
    /// levels ascending. One counting pass over the cells, O(cells + levels).
    pub fn transpose(&self) -> CellCounts {
        let mut row_starts = vec![0usize; self.n_cols + 1];
        for &m in &self.cols {
            row_starts[m as usize + 1] += 1;
        }
        for m in 0..self.n_cols {
            row_starts[m + 1] += row_starts[m];
        }
        let mut next = row_starts[..self.n_cols].to_vec();
        let mut cols = vec![0u32; self.cols.len()];
        let mut counts = vec![0u32; self.cols.len()];
        for g in 0..self.n_rows() {
            let r = self.row_starts[g]..self.row_starts[g + 1];
            for (&m, &n) in self.cols[r.clone()].iter().zip(&self.counts[r]) {
                let m = m as usize;
                cols[next[m]] = g as u32;
                counts[next[m]] = n;
                next[m] += 1;
            }
        }
        CellCounts { row_starts, cols, counts, n_cols: self.n_rows() }
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
                out.counts.push(u32::try_from(next.1).map_err(|_| {
                    FitError::Incompatible("a cell holds more than 2^32 - 1 observations".into())
                })?);
            }
            out.row_starts.push(out.cols.len());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn factor<'a>(codes: &'a [i32], n_levels: usize) -> FactorCodes<'a> {
        FactorCodes { name: "f".into(), codes, offset: 0, n_levels }
    }

    fn counts_of(f: &FactorCodes<'_>) -> Vec<u64> {
        let mut c = vec![0u64; f.n_levels];
        for i in 0..f.codes.len() {
            c[f.level(i)] += 1;
        }
        c
    }

    #[test]
    fn cells_match_a_direct_count_and_are_sorted() {
        let a_codes = [2, 0, 1, 2, 2, 0, 1, 1, 2, 0];
        let b_codes = [1, 3, 0, 1, 0, 3, 3, 0, 2, 0];
        let (a, b) = (factor(&a_codes, 4), factor(&b_codes, 4));
        let a_starts = level_starts(&counts_of(&a));
        let b_order = rows_by_level(&b, &level_starts(&counts_of(&b)));
        let cells = CellCounts::count(&a, &a_starts, &b, &b_order);
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
        let b_order = rows_by_level(&b, &level_starts(&counts_of(&b)));
        let cells = CellCounts::count(&a, &level_starts(&counts_of(&a)), &b, &b_order);
        let a_order = rows_by_level(&a, &level_starts(&counts_of(&a)));
        let by_column = CellCounts::count(&b, &level_starts(&counts_of(&b)), &a, &a_order);
        assert_eq!(cells.transpose(), by_column);
        assert_eq!(cells.transpose().transpose(), cells);
    }

    #[test]
    fn rows_by_level_is_stable() {
        let codes = [1, 0, 1, 0, 1];
        let f = factor(&codes, 2);
        let order = rows_by_level(&f, &level_starts(&counts_of(&f)));
        assert_eq!(order, vec![1, 3, 0, 2, 4]);
    }

    #[test]
    fn merged_cells_equal_cells_of_the_union() {
        let a_all = [0, 1, 1, 2, 0, 2, 1, 0];
        let b_all = [1, 0, 1, 1, 1, 0, 2, 2];
        let count = |a_codes: &[i32], b_codes: &[i32]| {
            let (a, b) = (factor(a_codes, 3), factor(b_codes, 3));
            let b_order = rows_by_level(&b, &level_starts(&counts_of(&b)));
            CellCounts::count(&a, &level_starts(&counts_of(&a)), &b, &b_order)
        };
        let whole = count(&a_all, &b_all);
        let merged = count(&a_all[..3], &b_all[..3]).merge(&count(&a_all[3..], &b_all[3..])).unwrap();
        assert_eq!(merged, whole);
    }
}
