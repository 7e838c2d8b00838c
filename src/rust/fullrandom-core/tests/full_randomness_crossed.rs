//! Matloff's Full Randomness estimator for crossed data (model 7, with regressors model
//! 10) against a direct evaluation of the derived equations on the raw data:
//!
//!   Var(Y) = s2_a + s2_b + s2_e + Var(h)
//!   Var(S) = (nu2 + nu1^2) s2_a + (kappa_r - [tau_r]) s2_b + nu1 s2_e + Var(F)
//!   Var(C) = (kappa_c - [tau_c]) s2_a + (lambda2 + lambda1^2) s2_b + lambda1 s2_e + Var(G)
//!
//! with S, C the row and column totals of Y* (the response with the ordinary regressors
//! removed), F, G those of h (intercept and size() columns), kappa_r = mean over rows of
//! sum_j n_ij^2, and tau_r the mean over pairs of distinct rows of the shared-column
//! count T_km = sum_j n_kj n_mj (eq. 27), formed pair by pair here.

mod common;

use common::*;
use fullrandom_core::fr::{crossed_counts, fit_full_randomness_opts, fit_full_randomness_with, FrOptions};
use fullrandom_core::{merge_statistics, thread_pool, FitError, SufficientStats};
use rand::Rng;
use std::collections::HashMap;

/// Users (rows) and items (columns) with power-law activity and popularity, every
/// user's items distinct when `distinct`, y from model (10) with a user-level, an
/// item-level and a row-level covariate; columns: intercept, u, v, w, size(user),
/// size(item).
fn ratings(seed: u64, n_users: usize, n_items: usize, distinct: bool) -> Design {
    let mut r = rng(seed);
    let activity: Vec<usize> =
        (0..n_users).map(|_| 1 + (3.0 / (1.0 - r.random::<f64>() * 0.95).powf(1.3)) as usize).collect();
    let popularity: Vec<f64> = (0..n_items).map(|j| 1.0 / (1.0 + j as f64).powf(0.9)).collect();
    let ua: Vec<f64> = (0..n_users).map(|_| normal(&mut r, 0.9)).collect();
    let ub: Vec<f64> = (0..n_items).map(|_| normal(&mut r, 0.6)).collect();
    let uu: Vec<f64> = (0..n_users).map(|_| normal(&mut r, 1.0)).collect();
    let vv: Vec<f64> = (0..n_items).map(|_| normal(&mut r, 1.0)).collect();
    let (mut users, mut items, mut w) = (Vec::new(), Vec::new(), Vec::new());
    for (i, &n) in activity.iter().enumerate() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..n.min(n_items) {
            let mut j = weighted_level(&mut r, &popularity);
            while distinct && !seen.insert(j) {
                j = weighted_level(&mut r, &popularity);
            }
            users.push(i);
            items.push(j);
            w.push(normal(&mut r, 1.0));
        }
    }
    let n = users.len();
    let count = |levels: &[usize], g: usize| {
        let mut c = vec![0.0; g];
        levels.iter().for_each(|&l| c[l] += 1.0);
        c
    };
    let (nu, mi) = (count(&users, n_users), count(&items, n_items));
    let y: Vec<f64> = (0..n)
        .map(|k| {
            let (i, j) = (users[k], items[k]);
            4.0 + 0.5 * uu[i] - 0.3 * vv[j] + 0.2 * w[k] - 0.01 * nu[i] + ua[i] + ub[j] + normal(&mut r, 1.0)
        })
        .collect();
    let columns = vec![
        ("(Intercept)".to_string(), vec![1.0; n]),
        ("u".to_string(), users.iter().map(|&i| uu[i]).collect()),
        ("v".to_string(), items.iter().map(|&j| vv[j]).collect()),
        ("w".to_string(), w),
        ("size(user)".to_string(), users.iter().map(|&i| nu[i]).collect()),
        ("size(item)".to_string(), items.iter().map(|&j| mi[j]).collect()),
    ];
    Design::new(
        y,
        columns,
        Some(0),
        vec![Factor::new("user", &users, n_users, 1), Factor::new("item", &items, n_items, 1)],
    )
}

/// Keeps the columns `keep` (the intercept first) of a design.
fn with_columns(d: &Design, keep: &[usize]) -> Design {
    let columns = keep.iter().map(|&j| (d.x_names[j].clone(), d.column(j).to_vec())).collect();
    Design::new(d.y.clone(), columns, Some(0), d.factors.clone())
}

fn pvar(v: &[f64]) -> f64 {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n
}

/// OLS coefficients of y on the columns, from the normal equations written out.
fn ols(d: &Design) -> Vec<f64> {
    let p = d.p;
    let xtx = Dense::from_fn(p, p, |a, b| (0..d.n()).map(|i| d.x_at(i, a) * d.x_at(i, b)).sum());
    let xty: Vec<f64> = (0..p).map(|a| (0..d.n()).map(|i| d.x_at(i, a) * d.y[i]).sum()).collect();
    xtx.solve(&xty)
}

/// The derived equations evaluated on the raw data at `coef`, `h_columns` the columns in
/// h besides the intercept; solved for (s2_a, s2_b, s2_e).
fn direct(d: &Design, coef: &[f64], h_columns: &[usize], shared: bool) -> Vec<f64> {
    let n = d.n();
    let (fa, fb) = (&d.factors[0], &d.factors[1]);
    let in_h = |j: usize| j == 0 || h_columns.contains(&j);
    let ystar: Vec<f64> =
        (0..n).map(|i| d.y[i] - (0..d.p).filter(|&j| !in_h(j)).map(|j| coef[j] * d.x_at(i, j)).sum::<f64>()).collect();
    let h: Vec<f64> = (0..n).map(|i| (0..d.p).filter(|&j| in_h(j)).map(|j| coef[j] * d.x_at(i, j)).sum()).collect();
    // Totals over the levels with observations.
    let totals = |f: &Factor, v: &[f64]| {
        let mut t: HashMap<usize, f64> = HashMap::new();
        (0..n).for_each(|i| *t.entry(f.level(i)).or_default() += v[i]);
        let mut keys: Vec<usize> = t.keys().copied().collect();
        keys.sort();
        keys.iter().map(|k| t[k]).collect::<Vec<f64>>()
    };
    let ones = vec![1.0; n];
    let (n_rows, n_cols) = (totals(fa, &ones), totals(fb, &ones));
    let mut cells: HashMap<(usize, usize), f64> = HashMap::new();
    (0..n).for_each(|i| *cells.entry((fa.level(i), fb.level(i))).or_default() += 1.0);
    let (r, c) = (n_rows.len() as f64, n_cols.len() as f64);
    let sum_sq: f64 = cells.values().map(|v| v * v).sum();
    // Shared columns of every pair of distinct rows, and rows of every pair of columns.
    let (mut t_rows, mut t_cols) = (0.0, 0.0);
    if shared {
        let rows: Vec<usize> = {
            let mut v: Vec<usize> = cells.keys().map(|k| k.0).collect();
            v.sort();
            v.dedup();
            v
        };
        let cols: Vec<usize> = {
            let mut v: Vec<usize> = cells.keys().map(|k| k.1).collect();
            v.sort();
            v.dedup();
            v
        };
        let cell = |i: usize, j: usize| cells.get(&(i, j)).copied().unwrap_or(0.0);
        for &k in &rows {
            for &m in &rows {
                if k != m {
                    t_rows += cols.iter().map(|&j| cell(k, j) * cell(m, j)).sum::<f64>();
                }
            }
        }
        for &k in &cols {
            for &m in &cols {
                if k != m {
                    t_cols += rows.iter().map(|&i| cell(i, k) * cell(i, m)).sum::<f64>();
                }
            }
        }
        t_rows /= r * (r - 1.0);
        t_cols /= c * (c - 1.0);
    }
    let (nu1, nu2) = (n_rows.iter().sum::<f64>() / r, pvar(&n_rows));
    let (la1, la2) = (n_cols.iter().sum::<f64>() / c, pvar(&n_cols));
    let lhs = Dense::from_fn(3, 3, |i, j| {
        [[1.0, 1.0, 1.0], [nu2 + nu1 * nu1, sum_sq / r - t_rows, nu1], [sum_sq / c - t_cols, la2 + la1 * la1, la1]][i]
            [j]
    });
    let q = [
        pvar(&ystar) - pvar(&h),
        pvar(&totals(fa, &ystar)) - pvar(&totals(fa, &h)),
        pvar(&totals(fb, &ystar)) - pvar(&totals(fb, &h)),
    ];
    lhs.solve(&q)
}

fn fit(d: &Design, size_columns: &[usize], shared: bool) -> fullrandom_core::FullRandomnessFit {
    let stats = SufficientStats::compute(&d.data()).unwrap();
    fit_full_randomness_with(&stats, size_columns, shared, &thread_pool(1).unwrap(), &mut || true).unwrap()
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    for c in 0..3 {
        assert!(rel(got[c], want[c]) < 1e-10, "{what}: {got:?} vs {want:?}");
    }
}

#[test]
fn model_seven_equals_the_derived_equations() {
    for seed in 0..4 {
        for distinct in [true, false] {
            for shared in [false, true] {
                let d = with_columns(&ratings(seed, 60 + 7 * seed as usize, 25, distinct), &[0]);
                let got = fit(&d, &[], shared);
                let mean_y = d.y.iter().sum::<f64>() / d.n() as f64;
                assert!(rel(got.coef_in_equations[0], mean_y) < 1e-13);
                assert_close(
                    &got.components.raw,
                    &direct(&d, &[mean_y], &[], shared),
                    &format!("seed {seed} distinct {distinct} shared {shared}"),
                );
                let counts = got.crossed.as_ref().unwrap();
                if distinct {
                    assert!(rel(counts.row_repeats, counts.rows.mean) < 1e-14, "kappa_r = nu1 with distinct items");
                    assert!(rel(counts.column_repeats, counts.columns.mean) < 1e-14);
                }
                assert_eq!(got.equations.lhs.nrows(), 3);
            }
        }
    }
}

#[test]
fn model_ten_regressors_are_removed_by_least_squares_first() {
    // User-level u, item-level v, row-level w; then with size(user) and size(item) in h.
    for (seed, keep, h) in
        [(7, vec![0, 1, 2, 3], vec![]), (8, vec![0, 1, 2, 3, 4, 5], vec![4, 5]), (9, vec![0, 4], vec![1])]
    {
        let d = with_columns(&ratings(seed, 90, 30, seed != 9), &keep);
        let coef = ols(&d);
        for shared in [false, true] {
            let got = fit(&d, &h, shared);
            for (j, (&a, &b)) in got.coef_in_equations.iter().zip(&coef).enumerate() {
                assert!((a - b).abs() < 1e-9 * (1.0 + b.abs()), "coefficient {j}: {a} vs {b}");
            }
            assert_close(&got.components.raw, &direct(&d, &coef, &h, shared), &format!("seed {seed} shared {shared}"));
        }
    }
}

#[test]
fn centred_equations_are_those_of_the_least_squares_residuals() {
    // The residuals y - X b (intercept and size() columns included) as the response of a
    // model with an intercept only, at coefficient 0: h = 0 and Y* = the residuals.
    for (seed, keep, h) in [(11, vec![0], vec![]), (12, vec![0, 1, 2, 3], vec![]), (13, vec![0, 1, 4, 5], vec![2, 3])] {
        let d = with_columns(&ratings(seed, 80, 30, seed != 12), &keep);
        let coef = ols(&d);
        let mut residuals = with_columns(&d, &[0]);
        residuals.y = (0..d.n()).map(|i| d.y[i] - (0..d.p).map(|j| coef[j] * d.x_at(i, j)).sum::<f64>()).collect();
        let stats = SufficientStats::compute(&d.data()).unwrap();
        for shared in [false, true] {
            let options = FrOptions { shared, centred: true };
            let got = fit_full_randomness_opts(&stats, &h, options, &thread_pool(1).unwrap(), &mut || true).unwrap();
            assert!(got.centred && got.shared == shared);
            assert_close(
                &got.components.raw,
                &direct(&residuals, &[0.0], &[], shared),
                &format!("seed {seed} shared {shared}"),
            );
        }
    }
}

#[test]
fn merged_statistics_give_the_same_fit() {
    let d = with_columns(&ratings(3, 120, 40, true), &[0, 1, 3, 4]);
    let whole = fit(&d, &[3], false);
    let n = d.n();
    let rows: Vec<usize> = (0..n).collect();
    let (first, second) = rows.split_at(n / 3);
    let parts = [
        SufficientStats::compute(&d.subset(first).data()).unwrap(),
        SufficientStats::compute(&d.subset(second).data()).unwrap(),
    ];
    let merged = merge_statistics(&parts).unwrap();
    let got = fit_full_randomness_with(&merged, &[3], false, &thread_pool(2).unwrap(), &mut || true).unwrap();
    assert_close(&got.components.raw, &whole.components.raw, "merged");
    assert_eq!(crossed_counts(&merged), whole.crossed.clone().unwrap());
}

#[test]
fn nesting_and_three_terms_are_refused() {
    // Items nested in users: every item rated by one user.
    let users: Vec<usize> = (0..60).map(|i| i / 6).collect();
    let items: Vec<usize> = (0..60).map(|i| i / 2).collect();
    let y: Vec<f64> = (0..60).map(|i| ((i * 37) % 17) as f64 / 3.0).collect();
    let d = Design::new(
        y.clone(),
        vec![("(Intercept)".into(), vec![1.0; 60])],
        Some(0),
        vec![Factor::new("user", &users, 10, 1), Factor::new("item", &items, 30, 1)],
    );
    let stats = SufficientStats::compute(&d.data()).unwrap();
    let err = fit_full_randomness_with(&stats, &[], false, &thread_pool(1).unwrap(), &mut || true).unwrap_err();
    assert!(matches!(&err, FitError::InvalidInput(m) if m.contains("nested") && m.contains("(1 | item)")), "{err}");
    let third: Vec<usize> = (0..60).map(|i| i % 4).collect();
    let mut d3 = ratings(1, 30, 10, true);
    let n = d3.n();
    d3.factors.push(Factor::new("day", &third.iter().cycle().take(n).copied().collect::<Vec<_>>(), 4, 1));
    let stats = SufficientStats::compute(&d3.data()).unwrap();
    let err = fit_full_randomness_with(&stats, &[], false, &thread_pool(1).unwrap(), &mut || true).unwrap_err();
    assert!(matches!(&err, FitError::InvalidInput(m) if m.contains("this model has 3")), "{err}");
}

#[test]
fn shared_columns_mean_is_that_of_eq_27() {
    let d = ratings(5, 50, 20, false);
    let stats = SufficientStats::compute(&d.data()).unwrap();
    let counts = crossed_counts(&stats);
    let (fa, fb) = (&d.factors[0], &d.factors[1]);
    let mut cell: HashMap<(usize, usize), f64> = HashMap::new();
    (0..d.n()).for_each(|i| *cell.entry((fa.level(i), fb.level(i))).or_default() += 1.0);
    let r = counts.rows.n_groups as f64;
    let mut t = 0.0;
    for k in 0..fa.n_levels {
        for m in 0..fa.n_levels {
            if k != m {
                t += (0..fb.n_levels)
                    .map(|j| cell.get(&(k, j)).unwrap_or(&0.0) * cell.get(&(m, j)).unwrap_or(&0.0))
                    .sum::<f64>();
            }
        }
    }
    assert!(rel(counts.rows_shared, t / (r * (r - 1.0))) < 1e-13);
    assert_eq!(counts.n_cells, cell.len());
}
