//! The efficient estimator for random slopes (`efficient_slopes`): stochastic traces
//! against exact ones, and results that do not depend on the number of threads. (The
//! exact step against dense matrices is tests/testthat/test-slopes-efficient.R.)

use fullrandom_core::data::FixedColumn;
use fullrandom_core::efficient::EfficientOptions;
use fullrandom_core::efficient_slopes::{efficient_slope_equations, fit_slope_statistics_efficient};
use fullrandom_core::slopes::{slope_equations, solve_components, solve_dense, SlopeData, SlopeStats, SlopeTerm};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `y ~ x + (1 + x | user) + (1 | item)` with uneven users and items: 300 users and 80
/// items (more unknowns than the exact traces take by default).
struct Data {
    y: Vec<f64>,
    x: Vec<f64>,
    user: Vec<i32>,
    item: Vec<i32>,
}

fn simulate(seed: u64, n: usize) -> Data {
    let mut rng = StdRng::seed_from_u64(seed);
    let (nu, ni) = (300usize, 80usize);
    let normal = |rng: &mut StdRng| -> f64 {
        // Box-Muller.
        let (a, b): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random_range(0.0..1.0));
        (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
    };
    let u0: Vec<f64> = (0..nu).map(|_| normal(&mut rng)).collect();
    let u1: Vec<f64> = (0..nu).map(|_| 0.3 * normal(&mut rng)).collect();
    let v: Vec<f64> = (0..ni).map(|_| 0.8 * normal(&mut rng)).collect();
    let mut d = Data { y: vec![], x: vec![], user: vec![], item: vec![] };
    for _ in 0..n {
        // Squares of uniforms: a few levels hold many rows.
        let g = ((rng.random_range(0.0f64..1.0).powi(2)) * nu as f64) as usize;
        let h = ((rng.random_range(0.0f64..1.0).powi(2)) * ni as f64) as usize;
        let x = normal(&mut rng);
        d.y.push(1.0 + 0.5 * x + u0[g] + u1[g] * x + v[h] + normal(&mut rng));
        d.x.push(x);
        d.user.push(g as i32 + 1);
        d.item.push(h as i32 + 1);
    }
    d
}

fn stats_of(d: &Data) -> SlopeStats {
    let data = SlopeData {
        y: &d.y,
        x: vec![FixedColumn::Ones, FixedColumn::Values(&d.x)],
        terms: vec![
            SlopeTerm {
                name: "user".into(),
                codes: &d.user,
                offset: 1,
                n_levels: 300,
                z: vec![FixedColumn::Ones, FixedColumn::Values(&d.x)],
            },
            SlopeTerm { name: "item".into(), codes: &d.item, offset: 1, n_levels: 80, z: vec![FixedColumn::Ones] },
        ],
    };
    SlopeStats::compute(&data).unwrap()
}

#[test]
fn probed_slope_traces_are_close_to_exact_ones_and_report_their_error() {
    let d = simulate(7, 5000);
    let stats = stats_of(&d);
    let pool = fullrandom_core::thread_pool(2).unwrap();
    let moments = slope_equations(&stats).unwrap();
    let prior = solve_components(&moments, &[2, 1]).unwrap().estimate;
    let exact_options = EfficientOptions { exact_levels: usize::MAX, exact_unknowns: usize::MAX, ..Default::default() };
    let (exact, exact_accuracy) =
        efficient_slope_equations(&stats, &moments, &prior, &exact_options, &pool, &mut || true).unwrap();
    assert_eq!(exact_accuracy.probes, vec![0, 0]);
    let (probed, accuracy) =
        efficient_slope_equations(&stats, &moments, &prior, &EfficientOptions::default(), &pool, &mut || true).unwrap();
    assert!(accuracy.probes.iter().all(|&p| p >= 8), "{:?}", accuracy.probes);
    // The forms do not depend on the probes.
    for (a, b) in exact.q.iter().zip(&probed.q) {
        assert!((a - b).abs() <= 1e-8 * a.abs().max(1.0), "forms {a} vs {b}");
    }
    let m = exact.q.len();
    let exact_theta = solve_dense(&exact.lhs, &exact.q, m).unwrap();
    let probed_theta = solve_dense(&probed.lhs, &probed.q, m).unwrap();
    println!(
        "exact {exact_theta:?}\nprobed {probed_theta:?}\nprobes {:?}\nprobe sd {:?}\nmodel sd {:?}",
        accuracy.probes, accuracy.probe_sd, accuracy.model_sd
    );
    for i in 0..m {
        // The jackknife's sd estimates the probes' error: within 5 of them (and a tenth of the
        // sampling sd, the stopping rule, unless the probes ran out).
        let diff = (exact_theta[i] - probed_theta[i]).abs();
        assert!(
            diff <= 5.0 * accuracy.probe_sd[i] + 1e-9,
            "parameter {i}: {diff} vs probe sd {}",
            accuracy.probe_sd[i]
        );
        assert!(accuracy.probe_sd[i] <= 0.1 * accuracy.model_sd[i] || accuracy.probes[0] >= 512);
        assert!(accuracy.probe_sd[i] > 0.0);
    }
}

#[test]
fn efficient_slope_fit_does_not_depend_on_threads() {
    let d = simulate(8, 4000);
    let stats = stats_of(&d);
    let fits: Vec<_> = [1usize, 2]
        .iter()
        .map(|&t| {
            let pool = fullrandom_core::thread_pool(t).unwrap();
            fit_slope_statistics_efficient(&stats, &EfficientOptions::default(), 1, &pool, &mut || true).unwrap()
        })
        .collect();
    assert_eq!(fits[0].0.components.raw, fits[1].0.components.raw);
    assert_eq!(fits[0].0.mixed.coef, fits[1].0.mixed.coef);
    assert_eq!(fits[0].1.accuracy.probes, fits[1].1.accuracy.probes);
    // The step moved away from the moment estimate.
    let moved =
        fits[0].0.components.raw.iter().zip(&fits[0].1.moment_components.raw).any(|(a, b)| (a - b).abs() > 1e-6);
    assert!(moved);
}
