//! Ordinary least squares from the sufficient statistics.
//!
//! `W = (X'X)^-1` over the non-aliased columns, `b_ols = W X'y`, and the residual sum of
//! squares `r'r = y'y - b'X'y` needed by the moment equations.
//! Computed in the shifted parametrisation of [`crate::stats`] and mapped back:
//! `b_j = b~_j` except the intercept, `b_0 = b~_0 + c_y - sum_j c_j b~_j`.

use crate::dense::{independent_columns, spd_inverse, submatrix};
use crate::error::FitError;
use crate::stats::SufficientStats;
use faer::Mat;

/// Relative squared length below which a column counts as aliased (see
/// [`independent_columns`]); X'X squares the condition number, hence not 1e-7 as in `lm`.
pub const ALIAS_TOLERANCE: f64 = 1e-9;

#[derive(Debug, Clone)]
pub struct OlsFit {
    /// Indices of the columns used; the others are aliased with earlier ones.
    pub kept: Vec<usize>,
    /// Coefficients of all p columns in the original parametrisation, NaN where aliased.
    pub coef: Vec<f64>,
    /// Coefficients of the kept columns in the shifted parametrisation.
    pub coef_shifted: Vec<f64>,
    /// `W = (X~'X~)^-1` over the kept columns.
    pub xtx_inv: Mat<f64>,
    /// `r'r`, the residual sum of squares.
    pub rss: f64,
}

pub fn ols_from_stats(stats: &SufficientStats) -> Result<OlsFit, FitError> {
    let p = stats.n_fixed();
    let kept = independent_columns(&stats.xtx, p, ALIAS_TOLERANCE);
    if let Some(j) = stats.intercept {
        if !kept.contains(&j) {
            return Err(FitError::InvalidInput("the intercept is aliased with other fixed-effect columns".into()));
        }
    }
    let xtx_inv = spd_inverse(&submatrix(&stats.xtx, p, &kept), "X'X")?;
    let xty: Vec<f64> = kept.iter().map(|&j| stats.xty[j]).collect();
    let q = kept.len();
    let coef_shifted: Vec<f64> = (0..q).map(|r| (0..q).map(|c| xtx_inv[(r, c)] * xty[c]).sum()).collect();
    let coef = stats.shift.unshift_coefficients(stats.intercept, &kept, &coef_shifted);
    let fitted_ss: f64 = coef_shifted.iter().zip(&xty).map(|(b, v)| b * v).sum();
    Ok(OlsFit { kept, coef, coef_shifted, xtx_inv, rss: stats.yty - fitted_ss })
}
