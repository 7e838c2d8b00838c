//! Small dense linear algebra (p x p and (K+1) x (K+1) matrices) on top of faer.

use crate::error::FitError;
use faer::linalg::solvers::{DenseSolveCore, Solve};
use faer::{Mat, Side};

/// Columns of the symmetric positive semi-definite `a` (p x p, column-major) that are
/// linearly independent of the columns before them, in order, as `lm()` keeps them.
///
/// Column `j` is kept when its squared residual length after projection on the kept
/// columns, `d_j = a_jj - a_Kj' a_KK^-1 a_Kj` (a Cholesky step), exceeds `tol * a_jj`.
/// faer has no rank-revealing Cholesky that keeps the original order, hence this loop.
pub fn independent_columns(a: &[f64], p: usize, tol: f64) -> Vec<usize> {
    let mut kept: Vec<usize> = Vec::new();
    // Rows of the Cholesky factor L of a[kept, kept] (lower triangular).
    let mut l_rows: Vec<Vec<f64>> = Vec::new();
    for j in 0..p {
        let ajj = a[j * p + j];
        if ajj <= 0.0 || !ajj.is_finite() {
            continue;
        }
        // Forward substitution: L z = a[kept, j].
        let mut z = Vec::with_capacity(kept.len());
        for (r, &i) in kept.iter().enumerate() {
            let partial: f64 = (0..r).map(|c| l_rows[r][c] * z[c]).sum();
            z.push((a[j * p + i] - partial) / l_rows[r][r]);
        }
        let d = ajj - z.iter().map(|v| v * v).sum::<f64>();
        if d > tol * ajj {
            z.push(d.sqrt());
            l_rows.push(z);
            kept.push(j);
        }
    }
    kept
}

/// The symmetric matrix `a[idx, idx]` of a p x p column-major array.
pub fn submatrix(a: &[f64], p: usize, idx: &[usize]) -> Mat<f64> {
    Mat::from_fn(idx.len(), idx.len(), |r, c| a[idx[c] * p + idx[r]])
}

/// Inverse of a symmetric positive definite matrix.
pub fn spd_inverse(a: &Mat<f64>, what: &str) -> Result<Mat<f64>, FitError> {
    if a.nrows() == 0 {
        return Ok(Mat::zeros(0, 0));
    }
    let llt = a.llt(Side::Lower).map_err(|_| FitError::NotIdentifiable(format!("{what} is not positive definite")))?;
    Ok(llt.inverse())
}

/// `log det A` of a symmetric positive definite matrix, from its Cholesky factor.
pub fn spd_log_det(a: &Mat<f64>) -> Result<f64, FitError> {
    if a.nrows() == 0 {
        return Ok(0.0);
    }
    let llt = a
        .llt(Side::Lower)
        .map_err(|_| FitError::NotIdentifiable("a matrix of the likelihood is not positive definite".into()))?;
    let factor = llt.L();
    Ok((0..a.nrows()).map(|i| 2.0 * factor[(i, i)].ln()).sum())
}

/// `tr(A B)` for square matrices of equal size.
pub fn trace_of_product(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    let n = a.nrows();
    let mut t = 0.0;
    for i in 0..n {
        for j in 0..n {
            t += a[(i, j)] * b[(j, i)];
        }
    }
    t
}

/// Solves the square system `a x = b` by LU with partial pivoting.
pub fn solve(a: &Mat<f64>, b: &[f64]) -> Vec<f64> {
    let rhs = Mat::from_fn(b.len(), 1, |i, _| b[i]);
    let x = a.partial_piv_lu().solve(&rhs);
    (0..b.len()).map(|i| x[(i, 0)]).collect()
}

/// The inverse of the square matrix `a` by LU with partial pivoting; an error naming
/// `what` when it is singular (an entry not finite).
pub fn inverse(a: &Mat<f64>, what: &str) -> Result<Mat<f64>, FitError> {
    let d = a.nrows();
    let x = a.partial_piv_lu().solve(&Mat::<f64>::identity(d, d));
    if (0..d).any(|c| (0..d).any(|r| !x[(r, c)].is_finite())) {
        return Err(FitError::NotConverged(format!("the {what} is singular")));
    }
    Ok(x)
}

/// The smallest singular value of `a` relative to its largest, after scaling every row
/// and column to unit maximum, with the matching right singular vector (in the scaled
/// coordinates: which unknowns the near-dependence involves). A column that is zero
/// relative to the largest entry gives 0.
pub fn scaled_rank_deficiency(a: &Mat<f64>) -> Result<(f64, Vec<f64>), FitError> {
    let n = a.nrows();
    let row_max: Vec<f64> = (0..n).map(|i| (0..n).map(|j| a[(i, j)].abs()).fold(0.0, f64::max)).collect();
    let col_max: Vec<f64> = (0..n).map(|j| (0..n).map(|i| a[(i, j)].abs()).fold(0.0, f64::max)).collect();
    // A column that is zero up to rounding (an unknown with no effect on any equation)
    // must not be rescaled into noise.
    let overall = col_max.iter().fold(0.0f64, |m, &c| m.max(c));
    if let Some(j) = col_max.iter().position(|&m| m <= 1e-10 * overall) {
        let mut v = vec![0.0; n];
        v[j] = 1.0;
        return Ok((0.0, v));
    }
    let row_scale: Vec<f64> = row_max.iter().map(|&m| if m > 0.0 { 1.0 / m } else { 0.0 }).collect();
    let scaled = Mat::from_fn(n, n, |i, j| a[(i, j)] * row_scale[i] / col_max[j]);
    let svd =
        scaled.svd().map_err(|_| FitError::Internal("the singular value decomposition did not converge".into()))?;
    let s = svd.S().column_vector();
    let (largest, smallest) = (s[0], s[n - 1]);
    let v = (0..n).map(|i| svd.V()[(i, n - 1)]).collect();
    Ok((if largest > 0.0 { smallest / largest } else { 0.0 }, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_a_column_that_repeats_a_combination_of_earlier_ones() {
        // Columns: 1, x, 2x + 1, z  ->  the third is aliased.
        let x = [1.0, 2.0, 4.0, 7.0];
        let z = [0.0, 1.0, 0.0, 1.0];
        let cols: Vec<Vec<f64>> = vec![vec![1.0; 4], x.to_vec(), x.iter().map(|v| 2.0 * v + 1.0).collect(), z.to_vec()];
        let p = cols.len();
        let mut a = vec![0.0; p * p];
        for i in 0..p {
            for j in 0..p {
                a[j * p + i] = cols[i].iter().zip(&cols[j]).map(|(u, v)| u * v).sum();
            }
        }
        assert_eq!(independent_columns(&a, p, 1e-9), vec![0, 1, 3]);
    }

    #[test]
    fn inverse_and_solve_agree_with_hand_values() {
        let a = Mat::from_fn(2, 2, |i, j| [[4.0, 2.0], [2.0, 3.0]][i][j]);
        let inv = spd_inverse(&a, "test").unwrap();
        let want = [[0.375, -0.25], [-0.25, 0.5]];
        for i in 0..2 {
            for j in 0..2 {
                assert!((inv[(i, j)] - want[i][j]).abs() < 1e-14);
            }
        }
        let x = solve(&a, &[2.0, 1.0]);
        assert!((x[0] - 0.5).abs() < 1e-14 && x[1].abs() < 1e-14);
        assert!((trace_of_product(&a, &inv) - 2.0).abs() < 1e-14);
    }

    #[test]
    fn rank_deficiency_finds_the_dependent_columns() {
        let a = Mat::from_fn(3, 3, |i, j| [[1.0, 2.0, 5.0], [0.0, 3.0, 3.0], [1.0, 1.0, 5.0]][i][j]);
        let (ratio, v) = scaled_rank_deficiency(&a).unwrap();
        assert!(ratio > 1e-3, "full rank: {ratio}");
        let singular = Mat::from_fn(3, 3, |i, j| [[1.0, 2.0, 2.0], [0.0, 3.0, 3.0], [1.0, 1.0, 1.0]][i][j]);
        let (ratio, v2) = scaled_rank_deficiency(&singular).unwrap();
        assert!(ratio < 1e-12, "singular: {ratio}");
        assert!(v2[0].abs() < 1e-8 && (v2[1].abs() - v2[2].abs()).abs() < 1e-8, "{v2:?}");
        let _ = v;
    }
}
