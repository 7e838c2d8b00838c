//! Matloff's Full Randomness estimator against a direct evaluation of the paper's
//! formulas on the raw data: the sample variances of the group totals `Y_i` and of the
//! `Y_ij` (divisors r and M), `nu1`, `nu2` from the group sizes and
//!
//!   Var(S) = (nu2 + nu1^2) s2_a + nu1 s2_e + Var(F),   Var(Y) = s2_a + s2_e + Var(h),
//!
//! with `F_i = mu N_i` (model 2) or `c1 N_i + c2 N_i^2` (model 3, `h = c1 + c2 N_i`).

mod common;

use common::*;
use fullrandom_core::fr::{fr_equations, group_sizes};
use fullrandom_core::{fit_full_randomness, thread_pool, FitError, SufficientStats};
use rand::Rng;

/// One-way data: `r` groups with sizes 1 + geometric-like, `y = mu + c2 N_i + a_i + e`,
/// an intercept, optionally the group size as a column and a within-group covariate.
fn one_way(seed: u64, r: usize, mu: f64, c2: f64, with_size: bool, with_covariate: bool) -> Design {
    let mut rng = rng(seed);
    let sizes: Vec<usize> = (0..r).map(|_| 1 + (rng.random::<f64>() * 12.0).powi(2) as usize / 6).collect();
    let effects: Vec<f64> = (0..r).map(|_| normal(&mut rng, 0.8)).collect();
    let mut levels = Vec::new();
    let mut y = Vec::new();
    let mut size_col = Vec::new();
    let mut covariate = Vec::new();
    for (g, &n) in sizes.iter().enumerate() {
        for _ in 0..n {
            let x = normal(&mut rng, 1.0);
            levels.push(g);
            size_col.push(n as f64);
            covariate.push(x);
            y.push(mu + c2 * n as f64 + 0.5 * x + effects[g] + normal(&mut rng, 1.0));
        }
    }
    let mut columns = vec![("(Intercept)".to_string(), vec![1.0; y.len()])];
    if with_size {
        columns.push(("size(g)".to_string(), size_col));
    }
    if with_covariate {
        columns.push(("x".to_string(), covariate));
    }
    Design::new(y, columns, Some(0), vec![Factor::new("g", &levels, r, 1)])
}

/// Population (divisor n) variance and covariance.
fn pvar(v: &[f64]) -> f64 {
    pcov(v, v)
}
fn pcov(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum::<f64>() / n
}

/// The paper's equations evaluated on the raw data at coefficients `coef` (intercept,
/// then the size column if any, then the covariate if any), solved for (s2_a, s2_e).
fn direct(d: &Design, coef: &[f64], with_size: bool) -> [f64; 2] {
    let f = &d.factors[0];
    let r = f.n_levels;
    // Y*: the response with the ordinary regressors (the last column when present) removed.
    let w_col = if d.p > 1 + usize::from(with_size) { Some(d.p - 1) } else { None };
    let ystar: Vec<f64> = (0..d.n()).map(|i| d.y[i] - w_col.map_or(0.0, |j| coef[j] * d.x_at(i, j))).collect();
    let mut totals = vec![0.0; r];
    let mut sizes = vec![0.0; r];
    for i in 0..d.n() {
        totals[f.level(i)] += ystar[i];
        sizes[f.level(i)] += 1.0;
    }
    let nu1 = sizes.iter().sum::<f64>() / r as f64;
    let nu2 = pvar(&sizes);
    let c2 = if with_size { coef[1] } else { 0.0 };
    let f_totals: Vec<f64> = sizes.iter().map(|&n| coef[0] * n + c2 * n * n).collect();
    let h: Vec<f64> = (0..d.n()).map(|i| coef[0] + c2 * sizes[f.level(i)]).collect();
    let q_obs = pvar(&ystar) - pvar(&h);
    let q_group = pvar(&totals) - pvar(&f_totals);
    let m2 = nu2 + nu1 * nu1;
    // [1 1; m2 nu1] [a; e] = [q_obs; q_group]
    let det = nu1 - m2;
    [(nu1 * q_obs - q_group) / det, (q_group - m2 * q_obs) / det]
}

fn fit(d: &Design, size_columns: &[usize], threads: usize) -> fullrandom_core::FullRandomnessFit {
    let stats = SufficientStats::compute(&d.data()).unwrap();
    fit_full_randomness(&stats, size_columns, &thread_pool(threads).unwrap(), &mut || true).unwrap()
}

#[test]
fn model_two_equals_equations_17_and_18() {
    for seed in 0..6 {
        let d = one_way(seed, 40 + 10 * seed as usize, 3.0 + seed as f64, 0.0, false, false);
        let got = fit(&d, &[], 1);
        let mean_y = d.y.iter().sum::<f64>() / d.n() as f64;
        assert!(rel(got.coef_in_equations[0], mean_y) < 1e-13, "mu is Y../M");
        let want = direct(&d, &[mean_y], false);
        for c in 0..2 {
            assert!(rel(got.components.raw[c], want[c]) < 1e-10, "seed {seed}: {:?} vs {want:?}", got.components.raw);
        }
        assert_eq!(got.iterations, 1);
    }
}

#[test]
fn regressors_are_removed_by_least_squares_first() {
    let d = one_way(11, 60, 2.0, 0.0, false, true);
    let got = fit(&d, &[], 1);
    // OLS of y on (1, x), from the normal equations written out.
    let x: Vec<f64> = (0..d.n()).map(|i| d.x_at(i, 1)).collect();
    let slope = pcov(&x, &d.y) / pvar(&x);
    let n = d.n() as f64;
    let intercept = d.y.iter().sum::<f64>() / n - slope * x.iter().sum::<f64>() / n;
    assert!(rel(got.coef_in_equations[1], slope) < 1e-10);
    let want = direct(&d, &[intercept, slope], false);
    for c in 0..2 {
        assert!(rel(got.components.raw[c], want[c]) < 1e-10);
    }
}

#[test]
fn size_model_is_a_fixed_point_of_equations_20_to_22_and_gls() {
    for (seed, with_covariate) in [(3, false), (4, true)] {
        let d = one_way(seed, 80, 3.5, -0.05, true, with_covariate);
        let got = fit(&d, &[1], 1);
        assert!(got.iterations > 1, "the size model iterates");
        let want = direct(&d, &got.coef_in_equations, true);
        for c in 0..2 {
            assert!(rel(got.components.raw[c], want[c]) < 1e-10, "{:?} vs {want:?}", got.components.raw);
        }
        for (j, (&b, &b_eq)) in got.mixed.coef.iter().zip(&got.coef_in_equations).enumerate() {
            let se = got.mixed.vcov[(j, j)].sqrt();
            assert!((b - b_eq).abs() <= 1e-11 * (b.abs() + se), "coefficient {j}: {b} vs {b_eq}");
        }
        // The equations as the crate evaluates them at the same point agree too.
        let stats = SufficientStats::compute(&d.data()).unwrap();
        let eq = fr_equations(&stats, &group_sizes(&stats), &got.ols.kept, &got.coef_in_equations, &[1], false);
        assert_eq!(eq.q, got.equations.q);
    }
}

#[test]
fn results_do_not_depend_on_threads() {
    let d = one_way(5, 3000, 3.5, -0.02, true, true);
    let one = fit(&d, &[1], 1);
    let two = fit(&d, &[1], 2);
    assert_eq!(one.components.raw, two.components.raw);
    assert_eq!(one.mixed.coef, two.mixed.coef);
    assert_eq!(one.iterations, two.iterations);
}

#[test]
fn one_term_only_and_sizes_must_vary() {
    let d = crossed_design(1, 200, 10, 12);
    let stats = SufficientStats::compute(&d.data()).unwrap();
    // Two crossed terms are model (7) (tests/full_randomness_crossed.rs); three are refused.
    assert!(fit_full_randomness(&stats, &[], &thread_pool(1).unwrap(), &mut || true).unwrap().crossed.is_some());
    let mut d3 = d.clone();
    let third: Vec<usize> = (0..d3.n()).map(|i| i % 3).collect();
    d3.factors.push(Factor::new("c", &third, 3, 1));
    let stats = SufficientStats::compute(&d3.data()).unwrap();
    let err = fit_full_randomness(&stats, &[], &thread_pool(1).unwrap(), &mut || true).unwrap_err();
    assert!(
        matches!(&err, FitError::InvalidInput(m) if m.contains("one random-intercept term") && m.contains("(1 | a)")),
        "{err}"
    );

    // Every group of size 1: the two equations coincide.
    let levels: Vec<usize> = (0..30).collect();
    let d = Design::new(
        (0..30).map(|i| (i * 7 % 11) as f64).collect(),
        vec![("(Intercept)".into(), vec![1.0; 30])],
        Some(0),
        vec![Factor::new("g", &levels, 30, 1)],
    );
    let stats = SufficientStats::compute(&d.data()).unwrap();
    let err = fit_full_randomness(&stats, &[], &thread_pool(1).unwrap(), &mut || true).unwrap_err();
    assert!(matches!(&err, FitError::NotIdentifiable(m) if m.contains("(1 | g)")), "{err}");
}
