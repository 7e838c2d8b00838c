//! The moment equations and their solution against independent computations: dense
//! matrices built from the definitions, classical ANOVA, OLS, and simulation.

mod common;

use common::*;
use fullrandom_core::{fit, fit_variance_components, ols_from_stats, MomentEquations, SufficientStats};
use rand::Rng;
use rand_distr::{Distribution, Exp, StudentT};

/// Compares the crate's equations, OLS fit and raw solution with the dense reference
/// for one design; returns the worst relative errors (lhs, q, raw, coef).
fn compare_with_reference(d: &Design, label: &str) -> [f64; 4] {
    let reference = dense_reference(d);
    let stats = SufficientStats::compute(&d.data()).unwrap();
    let ols = ols_from_stats(&stats).unwrap();
    assert_eq!(ols.kept, (0..d.p).collect::<Vec<_>>(), "{label}: no column is aliased");
    let eq = MomentEquations::from_stats(&stats, &ols).unwrap();
    let k = d.factors.len();
    assert_eq!((eq.lhs.nrows(), eq.lhs.ncols()), (k + 1, k + 1), "{label}");
    assert_eq!(eq.factor_names, d.factors.iter().map(|f| f.name.clone()).collect::<Vec<_>>());

    let mut worst = [0.0f64; 4];
    let got = lhs_rows(&eq.lhs);
    for (i, (row, want)) in got.iter().zip(&reference.lhs).enumerate() {
        for (j, (a, b)) in row.iter().zip(want).enumerate() {
            let e = rel(*a, *b);
            assert!(e < 1e-8, "{label}: lhs[{i}, {j}] = {a}, reference {b} (relative error {e:.2e})");
            worst[0] = worst[0].max(e);
        }
    }
    for (i, (a, b)) in eq.q.iter().zip(&reference.q).enumerate() {
        let e = rel(*a, *b);
        assert!(e < 1e-8, "{label}: q[{i}] = {a}, reference {b} (relative error {e:.2e})");
        worst[1] = worst[1].max(e);
    }

    let vc = fit_variance_components(&eq).unwrap();
    let dense_lhs = Dense::from_fn(k + 1, k + 1, |i, j| reference.lhs[i][j]);
    let want = dense_lhs.solve(&reference.q);
    for (i, (a, b)) in vc.raw.iter().zip(&want).enumerate() {
        // Relative to the component itself, or to a thousandth of the largest one when
        // it is near zero (an estimate crossing zero has no meaningful relative error).
        let e = rel_floor(*a, *b, 1e-3 * want.iter().fold(0.0f64, |m, v| m.max(v.abs())));
        assert!(e < 1e-8, "{label}: raw[{i}] = {a}, dense solve {b} (relative error {e:.2e})");
        worst[2] = worst[2].max(e);
    }
    for (j, (a, b)) in ols.coef.iter().zip(&reference.coef).enumerate() {
        let e = rel_floor(*a, *b, 1e-6);
        assert!(e < 1e-8, "{label}: coef[{j}] = {a}, reference {b} (relative error {e:.2e})");
        worst[3] = worst[3].max(e);
    }
    let e = rel(ols.rss, reference.rss);
    assert!(e < 1e-8, "{label}: rss {} vs {} ({e:.2e})", ols.rss, reference.rss);
    worst
}

#[test]
fn moment_equations_match_dense_definitions() {
    let mut worst = [0.0f64; 4];
    for seed in 0..30u64 {
        // Every third design has no intercept (and so no shift).
        let d = crossed_nested_design(1000 + seed, seed % 3 != 2);
        let w = compare_with_reference(&d, &format!("seed {seed}, N = {}", d.n()));
        for i in 0..4 {
            worst[i] = worst[i].max(w[i]);
        }
    }
    println!(
        "dense reference, worst relative errors: lhs {:.2e}, q {:.2e}, raw {:.2e}, coef {:.2e}",
        worst[0], worst[1], worst[2], worst[3]
    );
}

#[test]
fn merged_chunks_lacking_levels_match_dense_definitions() {
    // The same designs split into two halves and merged: empty levels in the chunks and
    // the unused level of `b` must leave the equations exactly as defined.
    for seed in 0..5u64 {
        let d = crossed_nested_design(2000 + seed, true);
        let n = d.n();
        let shift = fullrandom_core::Shift::pilot(&d.data());
        let first: Vec<usize> = (0..n / 3).collect();
        let rest: Vec<usize> = (n / 3..n).collect();
        let s1 = SufficientStats::compute_with_shift(&d.subset(&first).data(), shift.clone()).unwrap();
        let s2 = SufficientStats::compute_with_shift(&d.subset(&rest).data(), shift).unwrap();
        let merged = s1.merge(&s2).unwrap();
        let ols = ols_from_stats(&merged).unwrap();
        let eq = MomentEquations::from_stats(&merged, &ols).unwrap();
        let reference = dense_reference(&d);
        for (row, want) in lhs_rows(&eq.lhs).iter().zip(&reference.lhs) {
            for (a, b) in row.iter().zip(want) {
                assert!(rel(*a, *b) < 1e-8, "seed {seed}: lhs {a} vs {b}");
            }
        }
        for (a, b) in eq.q.iter().zip(&reference.q) {
            assert!(rel(*a, *b) < 1e-8, "seed {seed}: q {a} vs {b}");
        }
    }
}

#[test]
fn model_without_fixed_effects_matches_dense_definitions() {
    // p = 0: M = I, no intercept, no shift.
    for seed in 0..5u64 {
        let full = crossed_nested_design(3000 + seed, false);
        let mut d = full.clone();
        d.x.clear();
        d.p = 0;
        d.x_names.clear();
        d.intercept = None;
        let reference = dense_reference(&d);
        let stats = SufficientStats::compute(&d.data()).unwrap();
        let ols = ols_from_stats(&stats).unwrap();
        assert!(ols.kept.is_empty());
        let e = rel(ols.rss, d.y.iter().map(|v| v * v).sum());
        assert!(e < 1e-12, "rss is y'y without fixed effects ({e:.2e})");
        let eq = MomentEquations::from_stats(&stats, &ols).unwrap();
        // With M = I the entry of a nested factor's equation for its parent,
        // tr(Z_a' A_c Z_a), is exactly 0; the dense reference leaves rounding noise, so
        // errors are measured against at least 1 (the entries are of the order of counts).
        let floor = 1.0;
        for (row, want) in lhs_rows(&eq.lhs).iter().zip(&reference.lhs) {
            for (a, b) in row.iter().zip(want) {
                assert!(rel_floor(*a, *b, floor) < 1e-8, "seed {seed}: lhs {a} vs {b}");
            }
        }
        for (a, b) in eq.q.iter().zip(&reference.q) {
            assert!(rel(*a, *b) < 1e-8, "seed {seed}: q {a} vs {b}");
        }
        let vc = fit_variance_components(&eq).unwrap();
        let want = Dense::from_fn(eq.lhs.nrows(), eq.lhs.ncols(), |i, j| reference.lhs[i][j]).solve(&reference.q);
        assert!(worst_rel(&vc.raw, &want, 1e-3) < 1e-8, "seed {seed}: raw {:?} vs {want:?}", vc.raw);
    }
}

#[test]
fn balanced_one_way_equals_classical_anova() {
    let mut worst = 0.0f64;
    let mut saw_boundary = false;
    let mut saw_interior = false;
    for (case, &(g, n_per, sd_a)) in
        [(6usize, 5usize, 1.0f64), (4, 2, 0.3), (10, 7, 2.0), (3, 12, 0.0), (8, 3, 0.2)].iter().enumerate()
    {
        for seed in 0..6u64 {
            let mut r = rng(40 + 100 * case as u64 + seed);
            // Levels in shuffled row order, 1-based codes.
            let mut levels: Vec<usize> = (0..g * n_per).map(|i| i % g).collect();
            for i in (1..levels.len()).rev() {
                let j = r.random_range(0..=i);
                levels.swap(i, j);
            }
            let effects: Vec<f64> = (0..g).map(|_| normal(&mut r, sd_a.max(1e-300))).collect();
            let y: Vec<f64> = levels.iter().map(|&l| 5.0 + effects[l] + normal(&mut r, 1.0)).collect();
            let n = y.len();
            let d = Design::new(
                y.clone(),
                vec![("(Intercept)".into(), vec![1.0; n])],
                Some(0),
                vec![Factor::new("a", &levels, g, 1)],
            );

            // Classical one-way ANOVA.
            let grand = y.iter().sum::<f64>() / n as f64;
            let mut sums = vec![0.0; g];
            for (v, &l) in y.iter().zip(&levels) {
                sums[l] += v;
            }
            let means: Vec<f64> = sums.iter().map(|s| s / n_per as f64).collect();
            let ssb: f64 = means.iter().map(|m| n_per as f64 * (m - grand).powi(2)).sum();
            let ssw: f64 = y.iter().zip(&levels).map(|(v, &l)| (v - means[l]).powi(2)).sum();
            let msb = ssb / (g - 1) as f64;
            let msw = ssw / (g * (n_per - 1)) as f64;
            let s2_a = (msb - msw) / n_per as f64;

            let f = fit(&d.data(), 1).unwrap();
            let raw = &f.components.raw;
            let label = format!("G = {g}, n = {n_per}, seed {seed}");
            let e_s2 = rel(raw[1], msw);
            let e_a = rel_floor(raw[0], s2_a, 1e-6 * msw);
            assert!(e_s2 < 1e-10, "{label}: s2 {} vs MSW {msw} ({e_s2:.2e})", raw[1]);
            assert!(e_a < 1e-10, "{label}: s2_a {} vs (MSB - MSW)/n {s2_a} ({e_a:.2e})", raw[0]);
            worst = worst.max(e_s2).max(e_a);
            if raw[0] >= 0.0 {
                saw_interior = true;
                assert!(!f.components.at_boundary[0]);
                assert_eq!(f.components.estimate, f.components.raw);
            } else {
                // At the boundary the model is y = mu + e: s2 is the total mean square.
                saw_boundary = true;
                assert!(f.components.at_boundary[0], "{label}");
                assert_eq!(f.components.estimate[0], 0.0);
                let mst = (ssb + ssw) / (n - 1) as f64;
                let e = rel(f.components.estimate[1], mst);
                assert!(e < 1e-10, "{label}: boundary s2 {} vs SST/(N-1) {mst}", f.components.estimate[1]);
            }
        }
    }
    assert!(saw_boundary && saw_interior, "both branches exercised");
    println!("balanced one-way ANOVA: worst relative error {worst:.2e}");
}

#[test]
fn no_random_terms_gives_the_ols_residual_variance() {
    let d = crossed_nested_design(77, true);
    let d = Design { factors: Vec::new(), ..d };
    let f = fit(&d.data(), 1).unwrap();
    let reference = dense_reference(&d);
    let s2 = reference.rss / (d.n() - d.p) as f64;
    assert_eq!(f.components.raw.len(), 1);
    assert!(rel(f.components.estimate[0], s2) < 1e-10, "{} vs {s2}", f.components.estimate[0]);
}

#[test]
fn raw_estimates_are_unbiased_in_simulation() {
    // Fixed unbalanced crossed design; effects and errors re-drawn from skewed and
    // heavy-tailed distributions with known variances.
    let truth = [2.0f64, 1.0, 1.5];
    let mut d = crossed_design(9, 150, 12, 7);
    let mut r = rng(123);
    let exp = Exp::new(1.0).unwrap(); // variance 1, mean 1
    let t = StudentT::new(5.0).unwrap(); // variance 5/3
    let reps = 300;
    let mut sums = [0.0f64; 3];
    let mut squares = [0.0f64; 3];
    let mut boundary = 0usize;
    for _ in 0..reps {
        let ua: Vec<f64> = (0..12).map(|_| truth[0].sqrt() * (exp.sample(&mut r) - 1.0)).collect();
        let ub: Vec<f64> = (0..7).map(|_| truth[1].sqrt() * (r.random::<f64>() - 0.5) * 12f64.sqrt()).collect();
        for i in 0..d.n() {
            let e = (truth[2] * 3.0 / 5.0).sqrt() * t.sample(&mut r);
            d.y[i] = 2.0 + 0.3 * d.x_at(i, 1) + ua[d.factors[0].level(i)] + ub[d.factors[1].level(i)] + e;
        }
        let f = fit(&d.data(), 1).unwrap();
        for j in 0..3 {
            sums[j] += f.components.raw[j];
            squares[j] += f.components.raw[j].powi(2);
        }
        boundary += f.components.at_boundary.iter().filter(|&&b| b).count();
    }
    for j in 0..3 {
        let mean = sums[j] / reps as f64;
        let var = (squares[j] - reps as f64 * mean * mean) / (reps - 1) as f64;
        let se = (var / reps as f64).sqrt();
        let z = (mean - truth[j]) / se;
        println!("component {j}: mean {mean:.4}, truth {}, MC se {se:.4}, z {z:.2}", truth[j]);
        assert!(z.abs() < 4.0, "component {j}: mean {mean} vs truth {} ({z:.2} standard errors)", truth[j]);
    }
    // The truncated estimates are biased upwards; the raw ones must not be.
    assert!(boundary > 0, "some replications hit the boundary, so raw differs from estimate");
}

#[test]
fn strong_covariate_keeps_reasonable_precision() {
    // y'y - b'X'y loses digits as the covariate explains more of y: with a slope of 1000
    // (R^2 about 1 - 1e-6) the raw solution must still agree with the dense one (which
    // forms r = M y directly) to 1e-7. Measured: 6e-10 here, 4e-7 at slope 1e4, 5e-3 at 1e6, 0.14 at 1e7.
    let mut d = crossed_design(8, 300, 12, 7);
    for i in 0..d.n() {
        d.y[i] += 1e3 * d.x_at(i, 1);
    }
    let f = fit(&d.data(), 1).unwrap();
    let reference = dense_reference(&d);
    let want = Dense::from_fn(3, 3, |i, j| reference.lhs[i][j]).solve(&reference.q);
    let e = worst_rel(&f.components.raw, &want, 1e-3);
    println!("slope 1e3: raw relative error {e:.2e}");
    assert!(e < 1e-7, "raw {:?} vs dense {want:?} ({e:.2e})", f.components.raw);
}
