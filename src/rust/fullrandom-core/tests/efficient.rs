//! The efficient (MINQUE) equations against a dense evaluation of their definition,
//! with `V_0 = I + sum_k gamma_k Z_k Z_k'` and
//! `P_0 = V_0^-1 - V_0^-1 X (X'V_0^-1 X)^-1 X'V_0^-1`:
//!
//!   T_kl = tr(P_0 V_k P_0 V_l),   U_k = y'P_0 V_k P_0 y,   V_e = I,
//!
//! a different route from the level-space identities the crate uses.

mod common;

use common::*;
use fullrandom_core::efficient::{efficient_equations, EfficientOptions, GAMMA_FLOOR};
use fullrandom_core::{fit, fit_efficient_from_stats_with, ols_from_stats, thread_pool, SufficientStats};

/// The dense equations, rows and columns in the order (terms, residual).
fn dense_minque(d: &Design, gamma: &[f64]) -> (Dense, Vec<f64>) {
    let n = d.n();
    let x = Dense::from_fn(n, d.p, |i, j| d.x_at(i, j));
    let y = Dense::column_vector(&d.y);
    let zs: Vec<Dense> = d
        .factors
        .iter()
        .map(|f| Dense::from_fn(n, f.n_levels, |i, g| if f.level(i) == g { 1.0 } else { 0.0 }))
        .collect();
    let mut vs: Vec<Dense> = zs.iter().map(|z| z.mul(&z.t())).collect();
    vs.push(Dense::identity(n));
    let mut v0 = Dense::identity(n);
    for (k, vk) in vs[..zs.len()].iter().enumerate() {
        for (a, b) in v0.v.iter_mut().zip(&vk.v) {
            *a += gamma[k] * b;
        }
    }
    let vi = v0.inverse();
    let vix = vi.mul(&x);
    let p0 = vi.sub(&vix.mul(&x.t().mul(&vix).inverse()).mul(&vix.t()));
    let dim = vs.len();
    let pv: Vec<Dense> = vs.iter().map(|v| p0.mul(v)).collect();
    let t = Dense::from_fn(dim, dim, |k, l| pv[k].mul(&pv[l]).trace());
    let py = p0.mul(&y);
    let u = vs.iter().map(|v| py.t().mul(v).mul(&py).v[0]).collect();
    (t, u)
}

/// The crate's equations reordered to (terms, residual) rows.
fn reordered(lhs: &faer::Mat<f64>, q: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let dim = q.len();
    let rows: Vec<usize> = (1..dim).chain(std::iter::once(0)).collect();
    let t = rows.iter().flat_map(|&r| (0..dim).map(move |c| (r, c))).map(|(r, c)| lhs[(r, c)]).collect();
    (t, rows.iter().map(|&r| q[r]).collect())
}

#[test]
fn exact_traces_match_the_dense_definition() {
    let mut worst: f64 = 0.0;
    for seed in 0..10u64 {
        let d = crossed_nested_design(seed, seed % 3 != 0);
        let stats = SufficientStats::compute(&d.data()).unwrap();
        let ols = ols_from_stats(&stats).unwrap();
        let prior = fit(&d.data(), 1).unwrap().components;
        let k = d.factors.len();
        let s2 = prior.estimate[k];
        let gamma: Vec<f64> = (0..k).map(|j| (prior.estimate[j] / s2).max(GAMMA_FLOOR)).collect();
        let pool = thread_pool(1).unwrap();
        let (eq, accuracy) =
            efficient_equations(&stats, &ols, &prior, &EfficientOptions::default(), &pool, &mut || true).unwrap();
        assert!(accuracy.probes.iter().all(|&p| p == 0), "small terms get exact traces");
        let (t, u) = reordered(&eq.lhs, &eq.q);
        let (want_t, want_u) = dense_minque(&d, &gamma);
        let err = worst_rel(&t, &want_t.v, 1e-6).max(worst_rel(&u, &want_u, 1e-6));
        assert!(err < 1e-8, "seed {seed}: relative difference {err:e}");
        worst = worst.max(err);
    }
    eprintln!("worst relative difference from the dense MINQUE equations: {worst:e}");
}

#[test]
fn probed_traces_are_close_and_report_their_error() {
    let d = crossed_nested_design(4, true);
    let stats = SufficientStats::compute(&d.data()).unwrap();
    let ols = ols_from_stats(&stats).unwrap();
    let prior = fit(&d.data(), 1).unwrap().components;
    let pool = thread_pool(1).unwrap();
    let exact = efficient_equations(&stats, &ols, &prior, &EfficientOptions::default(), &pool, &mut || true).unwrap().0;
    let options = EfficientOptions {
        exact_levels: 0,
        exact_unknowns: 0,
        min_probes: 400,
        max_probes: 400,
        ..EfficientOptions::default()
    };
    let (probed, accuracy) = efficient_equations(&stats, &ols, &prior, &options, &pool, &mut || true).unwrap();
    assert!(accuracy.probes.iter().all(|&p| p == 400));
    let solve = |eq: &fullrandom_core::MomentEquations| fullrandom_core::dense::solve(&eq.lhs, &eq.q);
    let (a, b) = (solve(&exact), solve(&probed));
    for c in 0..a.len() {
        let z = (b[c] - a[c]) / accuracy.probe_sd[c];
        assert!(
            accuracy.probe_sd[c] > 0.0 && z.abs() < 4.0,
            "component {c}: exact {}, probed {}, probe sd {}",
            a[c],
            b[c],
            accuracy.probe_sd[c]
        );
    }
    eprintln!("exact {a:?}\nprobed {b:?}\nprobe sd {:?}\nmodel sd {:?}", accuracy.probe_sd, accuracy.model_sd);
}

#[test]
fn efficient_fit_does_not_depend_on_threads() {
    let d = crossed_design(11, 20_000, 700, 300);
    let stats = SufficientStats::compute(&d.data()).unwrap();
    let fits: Vec<_> = [1usize, 2]
        .iter()
        .map(|&t| fit_efficient_from_stats_with(&stats, &EfficientOptions::default(), 1, t, &mut || true).unwrap())
        .collect();
    assert_eq!(fits[0].components.estimate, fits[1].components.estimate);
    assert_eq!(fits[0].mixed.coef, fits[1].mixed.coef);
    let step = fits[0].efficient.as_ref().unwrap();
    eprintln!(
        "20k rows, 700 x 300 levels: moments {:?}, efficient {:?}, probes {:?}, probe sd {:?}, model sd {:?}",
        step.moment_components.estimate,
        fits[0].components.estimate,
        step.accuracy.probes,
        step.accuracy.probe_sd,
        step.accuracy.model_sd
    );
}
