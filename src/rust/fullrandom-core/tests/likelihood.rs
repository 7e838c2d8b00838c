//! REML and ML fits against a dense evaluation of the likelihoods and their scores, with
//! `V = sum_k s2_k Z_k Z_k' + s2 I` formed explicitly.

mod common;

use common::*;
use fullrandom_core::{fit_likelihood_from_stats_with, Criterion, SufficientStats};

struct DenseLikelihood {
    log_likelihood: f64,
    /// `(y'P V_k P y - tr(P V_k)) / 2` (REML) or `(y'P V_k P y - tr(V^-1 V_k)) / 2` (ML),
    /// for the K terms and the residual.
    score: Vec<f64>,
}

fn log_det(m: &Dense) -> f64 {
    // Gaussian elimination without pivoting on an SPD matrix: the pivots are positive.
    let n = m.rows;
    let mut a = m.v.clone();
    let mut total = 0.0;
    for k in 0..n {
        let pivot = a[k * n + k];
        total += pivot.ln();
        for i in k + 1..n {
            let f = a[i * n + k] / pivot;
            for j in k..n {
                a[i * n + j] -= f * a[k * n + j];
            }
        }
    }
    total
}

fn dense_likelihood(d: &Design, theta: &[f64], criterion: Criterion) -> DenseLikelihood {
    let n = d.n();
    let k = d.factors.len();
    let x = Dense::from_fn(n, d.p, |i, j| d.x_at(i, j));
    let y = Dense::column_vector(&d.y);
    let mut vs: Vec<Dense> = d
        .factors
        .iter()
        .map(|f| {
            let z = Dense::from_fn(n, f.n_levels, |i, g| if f.level(i) == g { 1.0 } else { 0.0 });
            z.mul(&z.t())
        })
        .collect();
    vs.push(Dense::identity(n));
    let mut v = Dense::zeros(n, n);
    for (j, vj) in vs.iter().enumerate() {
        for (a, b) in v.v.iter_mut().zip(&vj.v) {
            *a += theta[j] * b;
        }
    }
    let vi = v.inverse();
    let vix = vi.mul(&x);
    let xvx = x.t().mul(&vix);
    let p = vi.sub(&vix.mul(&xvx.inverse()).mul(&vix.t()));
    let py = p.mul(&y);
    let ypy = y.t().mul(&py).v[0];
    let two_pi = (2.0 * std::f64::consts::PI).ln();
    let (nf, pf) = (n as f64, d.p as f64);
    let minus_two = match criterion {
        Criterion::Reml => (nf - pf) * two_pi + log_det(&v) + log_det(&xvx) + ypy,
        Criterion::Ml => nf * two_pi + log_det(&v) + ypy,
    };
    let trace_of = match criterion {
        Criterion::Reml => &p,
        Criterion::Ml => &vi,
    };
    let score = (0..=k).map(|j| 0.5 * (py.t().mul(&vs[j]).mul(&py).v[0] - trace_of.mul(&vs[j]).trace())).collect();
    DenseLikelihood { log_likelihood: -0.5 * minus_two, score }
}

#[test]
fn reml_and_ml_are_the_dense_optima_and_likelihoods() {
    for seed in 0..8u64 {
        let d = crossed_nested_design(seed, true);
        let stats = SufficientStats::compute(&d.data()).unwrap();
        for criterion in [Criterion::Reml, Criterion::Ml] {
            let fit = fit_likelihood_from_stats_with(&stats, criterion, 1, &mut || true).unwrap();
            assert!(fit.converged, "seed {seed} {criterion:?}: {} steps", fit.steps);
            let theta = &fit.fit.components.estimate;
            let dense = dense_likelihood(&d, theta, criterion);
            let got = fit.log_likelihood.clone().unwrap();
            assert!(
                (got - dense.log_likelihood).abs() < 1e-8 * dense.log_likelihood.abs(),
                "seed {seed} {criterion:?}: logLik {got} vs dense {}",
                dense.log_likelihood
            );
            // The score vanishes at interior components and points outward at zero ones.
            let scale: f64 = dense.score.iter().map(|s| s.abs()).fold(0.0, f64::max).max(1.0);
            for (j, s) in dense.score.iter().enumerate() {
                if theta[j] > 0.0 {
                    assert!(
                        s.abs() < 1e-5 * scale * d.n() as f64,
                        "seed {seed} {criterion:?}: score[{j}] = {s} at {theta:?}"
                    );
                } else {
                    assert!(*s <= 1e-6 * d.n() as f64, "seed {seed} {criterion:?}: positive score {s} at zero");
                }
            }
        }
    }
}
