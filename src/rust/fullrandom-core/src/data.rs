//! The model's data, borrowed from the caller without copying.
//!
//! Row `i` has response `y[i]`, fixed-effect row `x_i = (x[0][i], .., x[p-1][i])` and, for
//! every random term `k`, the level `codes_k[i] - offset_k` in `0..n_levels_k`. Taking an
//! offset lets a caller pass 1-based codes (as R factors store them) without a copy of N
//! integers; taking the intercept as [`FixedColumn::Ones`] spares a column of N ones.

use crate::error::FitError;
use rayon::prelude::*;
use std::ops::Range;

/// One column of the fixed-effect matrix `X`: values borrowed from the caller, or the
/// constant 1 (an intercept), which is never stored.
#[derive(Debug, Clone, Copy)]
pub enum FixedColumn<'a> {
    Ones,
    Values(&'a [f64]),
}

impl<'a> FixedColumn<'a> {
    /// The columns of an `n_rows` x `p` matrix stored column by column (as R stores it).
    pub fn columns_of(values: &'a [f64], n_rows: usize) -> Vec<FixedColumn<'a>> {
        if n_rows == 0 {
            return Vec::new();
        }
        values.chunks(n_rows).map(FixedColumn::Values).collect()
    }

    /// `x_i - shift` for the rows in `rows`, as a new vector.
    pub fn shifted(&self, rows: Range<usize>, shift: f64) -> Vec<f64> {
        match self {
            FixedColumn::Ones => vec![1.0 - shift; rows.len()],
            FixedColumn::Values(v) => v[rows].iter().map(|x| x - shift).collect(),
        }
    }

    /// `x_i - shift` of row `i`.
    pub fn value(&self, i: usize, shift: f64) -> f64 {
        match self {
            FixedColumn::Ones => 1.0 - shift,
            FixedColumn::Values(v) => v[i] - shift,
        }
    }

    /// Adds `b x_i` to `out[i - rows.start]` for the rows in `rows`.
    pub fn add_scaled(&self, rows: Range<usize>, b: f64, out: &mut [f64]) {
        match self {
            FixedColumn::Ones => out.iter_mut().for_each(|o| *o += b),
            FixedColumn::Values(v) => out.iter_mut().zip(&v[rows]).for_each(|(o, x)| *o += b * x),
        }
    }
}

/// The grouping codes of one random-intercept term.
#[derive(Debug, Clone)]
pub struct FactorCodes<'a> {
    /// The term's label as the user knows it, e.g. `"s"` or `"cask:batch"`.
    pub name: String,
    pub codes: &'a [i32],
    /// Subtracted from every code to give a level in `0..n_levels`.
    pub offset: i32,
    pub n_levels: usize,
}

impl FactorCodes<'_> {
    /// The 0-based level of row `i` (valid after [`ModelData::validate`]).
    #[inline(always)]
    pub fn level(&self, i: usize) -> usize {
        (self.codes[i] - self.offset) as usize
    }
}

/// Response, fixed-effect columns and grouping factors.
#[derive(Debug, Clone)]
pub struct ModelData<'a> {
    pub y: &'a [f64],
    /// The `p` columns of `X`, each of `N` values or [`FixedColumn::Ones`].
    pub x: Vec<FixedColumn<'a>>,
    /// Column names of `x`, used in messages.
    pub x_names: Vec<String>,
    /// The column of `x` that is identically 1, if any (given as values, checked, or as
    /// [`FixedColumn::Ones`]). Only with an intercept may the statistics be computed
    /// about a pilot location (see [`crate::Shift`]).
    pub intercept: Option<usize>,
    pub factors: Vec<FactorCodes<'a>>,
}

impl ModelData<'_> {
    pub fn n_obs(&self) -> usize {
        self.y.len()
    }

    pub fn n_fixed(&self) -> usize {
        self.x.len()
    }

    /// Checks shapes, level codes and finiteness, naming what is wrong.
    pub fn validate(&self) -> Result<(), FitError> {
        let n = self.n_obs();
        let bad = |m: String| Err(FitError::InvalidInput(m));
        if n == 0 {
            return bad("the data have no observations".into());
        }
        if u32::try_from(n).is_err() {
            return bad(format!("{n} observations are more than one fit holds (2^32 - 1); split the data into chunks"));
        }
        if self.x_names.len() != self.x.len() {
            return bad(format!("{} names given for {} fixed-effect columns", self.x_names.len(), self.x.len()));
        }
        for (column, name) in self.x.iter().zip(&self.x_names) {
            if let FixedColumn::Values(values) = column {
                if values.len() != n {
                    return bad(format!(
                        "the fixed-effect column '{name}' has {} values but the response has {n}",
                        values.len()
                    ));
                }
            }
        }
        if let Some(j) = self.intercept {
            if j >= self.x.len() {
                return bad(format!("intercept column {j} is outside the fixed-effect matrix"));
            }
            // The pilot shift relies on this column being the constant 1.
            if let FixedColumn::Values(values) = self.x[j] {
                if let Some(i) = first_position(values, |&v| v != 1.0) {
                    return bad(format!("the intercept column '{}' is not 1 in row {}", self.x_names[j], i + 1));
                }
            }
        }
        if let Some(i) = first_position(self.y, |v| !v.is_finite()) {
            return bad(format!("the response has a non-finite value ({}) in row {}", self.y[i], i + 1));
        }
        for (column, name) in self.x.iter().zip(&self.x_names) {
            if let FixedColumn::Values(values) = column {
                if let Some(i) = first_position(values, |v| !v.is_finite()) {
                    return bad(format!(
                        "fixed-effect column '{name}' has a non-finite value ({}) in row {}",
                        values[i],
                        i + 1
                    ));
                }
            }
        }
        for f in &self.factors {
            if f.codes.len() != n {
                return bad(format!("grouping factor '{}' has {} codes for {n} observations", f.name, f.codes.len()));
            }
            if f.n_levels == 0 || u32::try_from(f.n_levels).is_err() {
                return bad(format!("grouping factor '{}' has {} levels", f.name, f.n_levels));
            }
            let top = f.n_levels as i64;
            let out_of_range = first_position(f.codes, |&c| !(0..top).contains(&(c as i64 - f.offset as i64)));
            if let Some(i) = out_of_range {
                return bad(format!(
                    "grouping factor '{}' has code {} in row {}, outside its {} levels",
                    f.name,
                    f.codes[i],
                    i + 1,
                    f.n_levels
                ));
            }
        }
        Ok(())
    }
}

/// The first index at which `bad` holds, scanning blocks of the slice in parallel. (Rayon's
/// `position_first` coordinates the threads at every element, which made these checks
/// cost as much as the statistics themselves.)
fn first_position<T: Sync>(values: &[T], bad: impl Fn(&T) -> bool + Sync) -> Option<usize> {
    const BLOCK: usize = 1 << 16;
    values
        .par_chunks(BLOCK)
        .enumerate()
        .filter_map(|(b, block)| block.iter().position(&bad).map(|i| b * BLOCK + i))
        .min()
}
