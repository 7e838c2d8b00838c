//! The mixed-model solution (GLS fixed effects, their covariance, BLUPs) against a dense
//! evaluation of the textbook formulas with V = sum_k s2_k Z_k Z_k' + s2 I:
//!
//!   b = (X'V^-1 X)^-1 X'V^-1 y,   Var(b) = (X'V^-1 X)^-1,   u_k = s2_k Z_k' V^-1 (y - X b),
//!
//! which is a different route from the Henderson equations the crate solves.

mod common;

use common::*;
use fullrandom_core::{fit, ols_from_stats, solve_mixed_model, thread_pool, SufficientStats, VarianceComponents};

struct DenseMixed {
    coef: Vec<f64>,
    vcov: Dense,
    ranef: Vec<Vec<f64>>,
}

/// The dense GLS and BLUPs for the given components `(s2_1, ..., s2_K, s2)`. Every
/// level (occurring or not) has a column in Z_k, so levels without data get u = 0.
fn dense_mixed(d: &Design, theta: &[f64]) -> DenseMixed {
    let n = d.n();
    let k_factors = d.factors.len();
    let x = Dense::from_fn(n, d.p, |i, j| d.x_at(i, j));
    let y = Dense::column_vector(&d.y);
    let zs: Vec<Dense> = d
        .factors
        .iter()
        .map(|f| Dense::from_fn(n, f.n_levels, |i, g| if f.level(i) == g { 1.0 } else { 0.0 }))
        .collect();
    let mut v = Dense::identity(n);
    for i in 0..n {
        v.v[i * n + i] = theta[k_factors];
    }
    for (k, z) in zs.iter().enumerate() {
        let zz = z.mul(&z.t());
        for (a, b) in v.v.iter_mut().zip(&zz.v) {
            *a += theta[k] * b;
        }
    }
    let v_inv = v.inverse();
    let xtvx = x.t().mul(&v_inv).mul(&x);
    let vcov = xtvx.inverse();
    let coef = vcov.mul(&x.t().mul(&v_inv).mul(&y)).v;
    let resid = y.sub(&x.mul(&Dense::column_vector(&coef)));
    let v_inv_resid = v_inv.mul(&resid);
    let ranef =
        zs.iter().enumerate().map(|(k, z)| z.t().mul(&v_inv_resid).v.iter().map(|u| theta[k] * u).collect()).collect();
    DenseMixed { coef, vcov, ranef }
}

fn compare(d: &Design, theta: &[f64], threads: usize, label: &str) -> f64 {
    let data = d.data();
    let stats = SufficientStats::compute(&data).unwrap();
    let ols = ols_from_stats(&stats).unwrap();
    let components = VarianceComponents {
        raw: theta.to_vec(),
        estimate: theta.to_vec(),
        at_boundary: theta[..theta.len() - 1].iter().map(|&v| v == 0.0).collect(),
    };
    let pool = thread_pool(threads).unwrap();
    let got = solve_mixed_model(&stats, &ols, &components, &pool, &mut || true).unwrap();
    let want = dense_mixed(d, theta);
    assert!(got.relative_residual < 1e-10, "{label}: residual {}", got.relative_residual);
    let coef_err = worst_rel(&got.coef, &want.coef, 1e-6);
    let q = d.p;
    let got_vcov: Vec<f64> = (0..q).flat_map(|i| (0..q).map(move |j| (i, j))).map(|(i, j)| got.vcov[(i, j)]).collect();
    let vcov_err = worst_rel(&got_vcov, &want.vcov.v, 1e-6);
    let mut ranef_err: f64 = 0.0;
    for (k, (g, w)) in got.ranef.iter().zip(&want.ranef).enumerate() {
        ranef_err = ranef_err.max(worst_rel(g, w, 1e-6));
        if theta[k] == 0.0 {
            assert!(g.iter().all(|&u| u == 0.0), "{label}: a term at zero has nonzero BLUPs");
        }
    }
    let worst = coef_err.max(vcov_err).max(ranef_err);
    assert!(worst < 1e-8, "{label}: coef {coef_err:e}, vcov {vcov_err:e}, ranef {ranef_err:e}");
    worst
}

#[test]
fn gls_and_blups_match_the_dense_formulas() {
    let mut worst: f64 = 0.0;
    for seed in 0..12u64 {
        let d = crossed_nested_design(seed, seed % 3 != 0);
        // The fitted components, and arbitrary ones with a term at zero.
        let fitted = fit(&d.data(), 1).unwrap().components.estimate;
        worst = worst.max(compare(&d, &fitted, 1, &format!("seed {seed}, fitted")));
        worst = worst.max(compare(&d, &[0.8, 0.0, 2.5, 1.1], 2, &format!("seed {seed}, b at zero")));
        worst = worst.max(compare(&d, &[0.0, 0.0, 0.0, 1.3], 1, &format!("seed {seed}, all at zero")));
    }
    eprintln!("worst relative difference from the dense GLS/BLUP: {worst:e}");
}

#[test]
fn with_no_active_term_gls_is_ols() {
    let d = crossed_nested_design(3, true);
    let stats = SufficientStats::compute(&d.data()).unwrap();
    let ols = ols_from_stats(&stats).unwrap();
    let components = VarianceComponents {
        raw: vec![0.0, 0.0, 0.0, 2.0],
        estimate: vec![0.0, 0.0, 0.0, 2.0],
        at_boundary: vec![true; 3],
    };
    let got = solve_mixed_model(&stats, &ols, &components, &thread_pool(1).unwrap(), &mut || true).unwrap();
    assert!(worst_rel(&got.coef, &ols.coef, 1e-9) < 1e-10);
    assert_eq!(got.iterations, 0);
}

#[test]
fn large_crossed_solution_is_accurate_and_thread_free() {
    let d = crossed_design(11, 60_000, 2_000, 700);
    let fits: Vec<_> = [1usize, 2, 3].iter().map(|&t| fit(&d.data(), t).unwrap().mixed).collect();
    assert!(fits[0].relative_residual < 1e-10, "residual {}", fits[0].relative_residual);
    eprintln!(
        "60k rows, 2000 x 700 levels: {} iterations, residual {:e}",
        fits[0].iterations, fits[0].relative_residual
    );
    for f in &fits[1..] {
        assert_eq!(f.coef, fits[0].coef);
        assert_eq!(f.ranef, fits[0].ranef);
        assert_eq!(f.iterations, fits[0].iterations);
    }
}

#[test]
fn interrupt_stops_the_solver() {
    let d = crossed_design(5, 5_000, 300, 100);
    let stats = SufficientStats::compute(&d.data()).unwrap();
    let ols = ols_from_stats(&stats).unwrap();
    let components =
        VarianceComponents { raw: vec![1.0, 0.6, 1.4], estimate: vec![1.0, 0.6, 1.4], at_boundary: vec![false; 2] };
    let mut asked = 0;
    let result = solve_mixed_model(&stats, &ols, &components, &thread_pool(1).unwrap(), &mut || {
        asked += 1;
        asked < 3
    });
    assert_eq!(result.unwrap_err(), fullrandom_core::FitError::Interrupted);
    assert_eq!(asked, 3);
}

#[test]
fn loose_solves_give_fixed_effects_of_second_order_accuracy() {
    // The GLS matrices come from the variational estimate B'X + X'B - X'CX of B'C^-1 B,
    // whose error is the square of the solver's: with a relative residual near 1e-3 the
    // fixed effects stay within 1e-4 of the dense GLS (a first-order estimate is off by
    // about the residual), a hundredth of the BLUPs' error.
    use fullrandom_core::{solve_mixed_model_to, Accuracy};
    for seed in 0..4u64 {
        let d = crossed_nested_design(seed, true);
        let stats = SufficientStats::compute(&d.data()).unwrap();
        let ols = ols_from_stats(&stats).unwrap();
        let theta = fit(&d.data(), 1).unwrap().components.estimate;
        let components =
            VarianceComponents { raw: theta.clone(), estimate: theta.clone(), at_boundary: vec![false; 3] };
        let loose = Accuracy { cg: 1e-3, mme: 1.0 };
        let got = solve_mixed_model_to(&stats, None, &ols, &components, loose, &thread_pool(1).unwrap(), &mut || true)
            .unwrap();
        let want = dense_mixed(&d, &theta);
        let coef_err = worst_rel(&got.coef, &want.coef, 1e-6);
        let ranef_err = got.ranef.iter().zip(&want.ranef).map(|(g, w)| worst_rel(g, w, 1e-6)).fold(0.0, f64::max);
        eprintln!("seed {seed}: residual {:e}, coef {coef_err:e}, ranef {ranef_err:e}", got.relative_residual);
        assert!(coef_err < 1e-4 && coef_err < ranef_err / 100.0, "seed {seed}: fixed effects off by {coef_err:e}");
    }
}
