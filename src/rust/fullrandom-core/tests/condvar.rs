//! The diagonal of (Z'Z + L)^-1 (conditional variances of the BLUPs) against a dense
//! inverse of C formed from the factor codes, on single, nested and crossed designs.

mod common;

use common::*;
use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};
use fullrandom_core::condvar::{inverse_diagonal, DiagonalMethod};
use fullrandom_core::{thread_pool, SufficientStats};

/// diag(C^-1) with every level of every term an unknown (lambda None: the term drops out).
fn dense_diagonal(d: &Design, lambda: &[Option<f64>]) -> Vec<Vec<f64>> {
    let offsets: Vec<usize> = d
        .factors
        .iter()
        .scan(0, |s, f| {
            let o = *s;
            *s += f.n_levels;
            Some(o)
        })
        .collect();
    let m: usize = d.factors.iter().map(|f| f.n_levels).sum();
    let mut c = Mat::<f64>::zeros(m, m);
    for i in 0..d.n() {
        let idx: Vec<usize> = d.factors.iter().zip(&offsets).map(|(f, o)| o + f.level(i)).collect();
        for &a in &idx {
            for &b in &idx {
                c[(a, b)] += 1.0;
            }
        }
    }
    for (k, f) in d.factors.iter().enumerate() {
        for g in 0..f.n_levels {
            let j = offsets[k] + g;
            match lambda[k] {
                Some(l) => c[(j, j)] += l,
                None => {
                    // Dropped: decouple it (its rows and columns to the identity).
                    for t in 0..m {
                        c[(j, t)] = 0.0;
                        c[(t, j)] = 0.0;
                    }
                    c[(j, j)] = 1.0;
                }
            }
        }
    }
    let inv = c.llt(Side::Lower).unwrap().inverse();
    d.factors
        .iter()
        .enumerate()
        .map(|(k, f)| {
            (0..f.n_levels)
                .map(|g| if lambda[k].is_some() { inv[(offsets[k] + g, offsets[k] + g)] } else { 0.0 })
                .collect()
        })
        .collect()
}

fn check(d: &Design, lambda: &[Option<f64>], what: &str) {
    let stats = SufficientStats::compute(&d.data()).unwrap();
    let pool = thread_pool(2).unwrap();
    let want = dense_diagonal(d, lambda);
    for method in [DiagonalMethod::Auto, DiagonalMethod::Exact] {
        let got = inverse_diagonal(&stats, lambda, method, &pool, &mut || true).unwrap();
        assert!(got.exact);
        for (k, (g, w)) in got.diagonal.iter().zip(&want).enumerate() {
            for (a, b) in g.iter().zip(w) {
                assert!((a - b).abs() <= 1e-9 * b.abs().max(1e-3), "{what}, term {k}: {a} vs {b}");
            }
        }
    }
    // Stochastic: within 5 of its stated standard errors (and the errors are honest: most
    // values within 2).
    let got =
        inverse_diagonal(&stats, lambda, DiagonalMethod::Stochastic { probes: 256, seed: 7 }, &pool, &mut || true)
            .unwrap();
    assert!(!got.exact);
    let (mut within, mut total) = (0, 0);
    for (k, ((g, s), w)) in got.diagonal.iter().zip(&got.std_error).zip(&want).enumerate() {
        for ((a, e), b) in g.iter().zip(s).zip(w) {
            assert!((a - b).abs() <= 5.0 * e + 1e-9, "{what} (stochastic), term {k}: {a} vs {b} (se {e})");
            total += 1;
            if (a - b).abs() <= 2.0 * e + 1e-12 {
                within += 1;
            }
        }
    }
    assert!(within as f64 >= 0.85 * total as f64, "{what}: {within} of {total} within 2 se");
}

#[test]
fn single_term() {
    let d = crossed_design(3, 200, 12, 7).without_factor(1);
    check(&d, &[Some(0.7)], "one term");
}

#[test]
fn nested_terms() {
    for seed in 0..4 {
        let d = crossed_nested_design(seed, true).without_factor(1);
        check(&d, &[Some(0.5), Some(2.0)], "nested");
    }
}

#[test]
fn crossed_terms() {
    for seed in 0..4 {
        let d = crossed_design(seed, 300, 25, 9);
        check(&d, &[Some(1.3), Some(0.4)], "crossed");
        check(&d, &[None, Some(0.4)], "crossed with a term at zero");
    }
}

#[test]
fn crossed_and_nested() {
    for seed in 0..4 {
        let d = crossed_nested_design(seed, true);
        check(&d, &[Some(0.5), Some(1.5), Some(2.0)], "crossed and nested");
    }
}
