//! The per-level marginal likelihoods of `composite`: the crossed composite
//! log-likelihood and its score against dense (trapezoidal) integration on a tiny design,
//! a nested design against the dense two-level integral, the analytic Hessian against
//! differences of the score (and exactly, with the quadratures held at an anchor, of the
//! quadrature's own value and gradient), and invariance of the fit to chunks and threads.

use fullrandom_core::composite::{composite_derivatives, composite_loglik, fit_composite, CompositeOptions};
use fullrandom_core::family::{Family, GlmFamily};
use fullrandom_core::glmm::GlmmChunk;
use fullrandom_core::thread_pool;

mod common;
use common::GlmmRows;

/// `int f(a) phi(a; s2) da` by the trapezoidal rule with `m` steps over +-10 sd (dense,
/// non-adaptive; exponentially accurate for smooth integrands).
fn dense_with(m: usize, s2: f64, f: impl Fn(f64) -> f64) -> f64 {
    let sd = s2.sqrt();
    let h = 20.0 * sd / m as f64;
    (0..=m)
        .map(|j| {
            let a = -10.0 * sd + j as f64 * h;
            let w = if j == 0 || j == m { 0.5 } else { 1.0 };
            w * h * f(a) * (-0.5 * a * a / s2).exp() / (2.0 * std::f64::consts::PI * s2).sqrt()
        })
        .sum()
}

fn dense(s2: f64, f: impl Fn(f64) -> f64) -> f64 {
    dense_with(200, s2, f)
}

/// Users x items, every pair once: Bernoulli responses (fixed, not random).
fn crossed() -> GlmmRows {
    let (nu, ni) = (4usize, 3usize);
    let mut rows = GlmmRows::empty(&[nu, ni]);
    for u in 0..nu {
        for i in 0..ni {
            rows.codes[0].push(u as i32);
            rows.codes[1].push(i as i32);
            rows.x.push(((u * 7 + i * 3) % 5) as f64 / 2.0 - 1.0);
            rows.y.push(((u + 2 * i) % 3 == 0 || u == i) as u8 as f64);
        }
    }
    rows
}

/// Users x items with repeated cells: pairs `(u, i)` holding 0 to 3 rows (Bernoulli).
fn crossed_repeated() -> GlmmRows {
    let (nu, ni) = (3usize, 3usize);
    let mut rows = GlmmRows::empty(&[nu, ni]);
    for u in 0..nu {
        for i in 0..ni {
            for r in 0..(u + 2 * i) % 4 {
                rows.codes[0].push(u as i32);
                rows.codes[1].push(i as i32);
                rows.x.push(((u * 7 + i * 3 + r) % 5) as f64 / 2.0 - 1.0);
                rows.y.push(((u + 2 * i + r) % 3 == 0 || u == i) as u8 as f64);
            }
        }
    }
    rows
}

/// The crossed composite log-likelihood by dense integration: per user, the rows of each
/// cell integrated over the cell's item effect, then over the user effect; the same per
/// item. Each component is the exact likelihood of its level's rows.
fn crossed_dense(rows: &GlmmRows, b: &[f64], s2: &[f64]) -> f64 {
    let fam = GlmFamily::from_names("binomial", "logit").unwrap();
    let mut total = 0.0;
    for k in 0..2 {
        let other = 1 - k;
        for g in 0..rows.n_levels[k] {
            let members: Vec<usize> = (0..rows.y.len()).filter(|&i| rows.codes[k][i] == g as i32).collect();
            let like = dense(s2[k], |a| {
                (0..rows.n_levels[other])
                    .map(|h| {
                        let cell: Vec<usize> =
                            members.iter().copied().filter(|&i| rows.codes[other][i] == h as i32).collect();
                        if cell.is_empty() {
                            return 1.0;
                        }
                        dense(s2[other], |v| {
                            cell.iter()
                                .map(|&i| {
                                    let p = fam.linkinv(b[0] + b[1] * rows.x[i] + a + v);
                                    if rows.y[i] > 0.5 {
                                        p
                                    } else {
                                        1.0 - p
                                    }
                                })
                                .product()
                        })
                    })
                    .product()
            });
            total += like.ln();
        }
    }
    total
}

#[test]
fn crossed_composite_likelihood_and_score_match_dense_integration() {
    // Every pair once (the other term integrated row by row), and repeated cells (the
    // other term integrated cell by cell inside each level).
    for rows in [crossed(), crossed_repeated()] {
        let chunk = rows.chunk(0..rows.y.len());
        let fam = GlmFamily::from_names("binomial", "logit").unwrap();
        let pool = thread_pool(1).unwrap();
        let options = CompositeOptions { nodes: 25, inner_nodes: 25, ..Default::default() };
        let b = [-0.3, 0.4];
        let s2 = [0.8, 0.35];
        let (value, grad) = composite_loglik(std::slice::from_ref(&chunk), fam, &b, &s2, &options, &pool).unwrap();
        let reference = crossed_dense(&rows, &b, &s2);
        assert!((value - reference).abs() < 1e-7, "value {value} against dense {reference}");
        // The score against central differences of the dense log-likelihood.
        let theta: Vec<f64> = b.iter().chain(&s2).cloned().collect();
        for j in 0..4 {
            let h = 1e-4;
            let (mut up, mut down) = (theta.clone(), theta.clone());
            up[j] += h;
            down[j] -= h;
            let fd =
                (crossed_dense(&rows, &up[..2], &up[2..]) - crossed_dense(&rows, &down[..2], &down[2..])) / (2.0 * h);
            assert!((grad[j] - fd).abs() < 1e-6 * (1.0 + fd.abs()), "score {j}: {} against dense {fd}", grad[j]);
        }
    }
}

/// Poisson rows in 3 groups of 2 subgroups of 2 rows, the subgroups nested in the groups,
/// with an observation-level term.
fn nested() -> GlmmRows {
    let mut rows = GlmmRows::empty(&[3, 6, 12]);
    let counts = [3.0, 0.0, 5.0, 2.0, 1.0, 1.0, 9.0, 4.0, 0.0, 2.0, 7.0, 3.0];
    for (i, &c) in counts.iter().enumerate() {
        rows.codes[0].push((i / 4) as i32);
        rows.codes[1].push((i / 2) as i32);
        rows.codes[2].push(i as i32);
        rows.x.push((i % 3) as f64 - 1.0);
        rows.y.push(c);
    }
    rows
}

/// The marginal log-likelihood of the nested Poisson model by dense integration (the
/// observation-level effect integrated row by row, then the subgroup, then the group).
fn nested_dense(rows: &GlmmRows, b: &[f64], s2: &[f64]) -> f64 {
    let pois = |y: f64, e: f64| (y * e - e.exp()).exp();
    let dense = |s2: f64, f: &dyn Fn(f64) -> f64| dense_with(80, s2, f);
    let mut total = 0.0;
    for g in 0..3usize {
        let like = dense(s2[0], &|a| {
            (0..2usize)
                .map(|h| {
                    let members: Vec<usize> = (0..12).filter(|&i| rows.codes[1][i] == (2 * g + h) as i32).collect();
                    dense(s2[1], &|c| {
                        members
                            .iter()
                            .map(|&i| {
                                let e = b[0] + b[1] * rows.x[i] + a + c;
                                dense(s2[2], &|w| pois(rows.y[i], e + w))
                            })
                            .product()
                    })
                })
                .product()
        });
        total += like.ln();
    }
    total
}

#[test]
fn nested_likelihood_matches_dense_integration() {
    let rows = nested();
    let chunk = rows.chunk(0..12);
    let fam = GlmFamily::from_names("poisson", "log").unwrap();
    let pool = thread_pool(1).unwrap();
    let options = CompositeOptions { nodes: 20, inner_nodes: 20, ..Default::default() };
    let b = [0.8, 0.3];
    let s2 = [0.5, 0.3, 0.2];
    let (value, grad) = composite_loglik(std::slice::from_ref(&chunk), fam, &b, &s2, &options, &pool).unwrap();
    let reference = nested_dense(&rows, &b, &s2);
    assert!((value - reference).abs() < 1e-6, "value {value} against dense {reference}");
    let theta: Vec<f64> = b.iter().chain(&s2).cloned().collect();
    for j in 0..5 {
        let h = 1e-4;
        let (mut up, mut down) = (theta.clone(), theta.clone());
        up[j] += h;
        down[j] -= h;
        let fd = (nested_dense(&rows, &up[..2], &up[2..]) - nested_dense(&rows, &down[..2], &down[2..])) / (2.0 * h);
        assert!((grad[j] - fd).abs() < 1e-5 * (1.0 + fd.abs()), "score {j}: {} against dense {fd}", grad[j]);
    }
}

#[test]
fn fit_does_not_depend_on_chunks_or_threads() {
    // 40 users x 12 items, every pair once, Bernoulli from a fixed pseudo-random rule.
    let (nu, ni) = (40usize, 12usize);
    let mut rows = GlmmRows::empty(&[nu, ni]);
    let mut state = 12345u64;
    let mut unif = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let uu: Vec<f64> = (0..nu).map(|_| 2.0 * unif() - 1.0).collect();
    let vv: Vec<f64> = (0..ni).map(|_| unif() - 0.5).collect();
    for u in 0..nu {
        for i in 0..ni {
            let x = 2.0 * unif() - 1.0;
            let p = 1.0 / (1.0 + (-(-0.3 + 0.5 * x + 1.5 * uu[u] + vv[i])).exp());
            rows.codes[0].push(u as i32);
            rows.codes[1].push(i as i32);
            rows.x.push(x);
            rows.y.push((unif() < p) as u8 as f64);
        }
    }
    let fam = GlmFamily::from_names("binomial", "logit").unwrap();
    let options = CompositeOptions::default();
    let fit = |pieces: usize, threads: usize| {
        let chunks: Vec<GlmmChunk<'_>> = rows.chunks(pieces);
        let pool = thread_pool(threads).unwrap();
        fit_composite(&chunks, fam, &[0.0, 0.0], &[0.5, 0.5], &options, &pool, &mut || true).unwrap()
    };
    let one = fit(1, 1);
    assert!(one.variances.iter().all(|&v| v > 0.0));
    for (pieces, threads) in [(3, 1), (7, 2), (1, 2)] {
        let other = fit(pieces, threads);
        for (a, b) in one.coef.iter().chain(&one.variances).zip(other.coef.iter().chain(&other.variances)) {
            assert!((a - b).abs() < 1e-10, "{pieces} chunks, {threads} threads: {a} against {b}");
        }
    }
}

/// One term with a few rows per level, Bernoulli (a design like the click-through one:
/// large effects, many levels whose rows are all 0).
fn one_term() -> GlmmRows {
    let n_levels = 12usize;
    let mut rows = GlmmRows::empty(&[n_levels]);
    for g in 0..n_levels {
        for r in 0..(1 + g % 3) {
            rows.codes[0].push(g as i32);
            rows.x.push(((g * 5 + r * 3) % 4) as f64 / 2.0 - 0.5);
            rows.y.push(((g % 4 == 0) || (g + r) % 5 == 0) as u8 as f64);
        }
    }
    rows
}

/// The designs of the derivative tests at their parameter values: one term (variance
/// `one_term_variance`), crossed and nested terms.
fn derivative_designs(one_term_variance: f64) -> Vec<(GlmmRows, GlmFamily, Vec<f64>, Vec<f64>)> {
    let logit = GlmFamily::from_names("binomial", "logit").unwrap();
    vec![
        (one_term(), logit, vec![-1.0, 0.7], vec![one_term_variance]),
        (crossed(), logit, vec![-0.3, 0.4], vec![0.8, 0.35]),
        (nested(), GlmFamily::from_names("poisson", "log").unwrap(), vec![0.8, 0.3], vec![0.5, 0.3, 0.2]),
    ]
}

/// With every quadrature held at an anchor, the value, gradient and Hessian are those of one
/// smooth function: the gradient equals central differences of the value and the Hessian
/// those of the gradient, to the accuracy of the differences (the nodes do not move).
#[test]
fn held_quadrature_gives_exact_derivatives() {
    let pool = thread_pool(1).unwrap();
    let designs = derivative_designs(4.0);
    for (design, (rows, fam, b, s2)) in designs.iter().enumerate() {
        let chunk = rows.chunk(0..rows.y.len());
        let chunks = std::slice::from_ref(&chunk);
        let options = CompositeOptions { nodes: 9, inner_nodes: 7, ..Default::default() };
        let theta: Vec<f64> = b.iter().chain(s2).cloned().collect();
        let p = b.len();
        let dim = theta.len();
        // The point evaluated is away from the anchor.
        let at: Vec<f64> = theta.iter().enumerate().map(|(j, v)| v * (1.0 + 0.05 * (j as f64 + 1.0))).collect();
        let eval =
            |t: &[f64]| composite_derivatives(chunks, *fam, &t[..p], &t[p..], Some((b, s2)), &options, &pool).unwrap();
        let (_, grad, hess) = eval(&at);
        for j in 0..dim {
            let h = 1e-5 * (1.0 + at[j].abs());
            let (mut up, mut down) = (at.clone(), at.clone());
            up[j] += h;
            down[j] -= h;
            let (vu, gu, _) = eval(&up);
            let (vd, gd, _) = eval(&down);
            let fd = (vu - vd) / (2.0 * h);
            assert!(
                (grad[j] - fd).abs() < 1e-6 * (1.0 + fd.abs()),
                "design {design}, gradient {j}: {} against {fd}",
                grad[j]
            );
            for a in 0..dim {
                let fd = (gu[a] - gd[a]) / (2.0 * h);
                let an = hess[a * dim + j];
                assert!(
                    (an - fd).abs() < 1e-5 * (1.0 + fd.abs()),
                    "design {design}, Hessian ({a}, {j}): {an} against {fd}"
                );
            }
        }
        // Symmetric.
        for a in 0..dim {
            for c in 0..a {
                assert!((hess[a * dim + c] - hess[c * dim + a]).abs() < 1e-9 * (1.0 + hess[a * dim + c].abs()));
            }
        }
    }
}

/// The Hessian with the quadratures placed at the point itself against central differences
/// of the score (each difference re-placing them), on designs where the quadrature is exact
/// to rounding: one term, crossed and nested terms.
#[test]
fn hessian_matches_differences_of_the_score() {
    let pool = thread_pool(1).unwrap();
    let designs = derivative_designs(2.0);
    for (design, (rows, fam, b, s2)) in designs.iter().enumerate() {
        let chunk = rows.chunk(0..rows.y.len());
        let chunks = std::slice::from_ref(&chunk);
        let options = CompositeOptions { nodes: 25, inner_nodes: 25, ..Default::default() };
        let theta: Vec<f64> = b.iter().chain(s2).cloned().collect();
        let p = b.len();
        let dim = theta.len();
        let (_, _, hess) = composite_derivatives(chunks, *fam, b, s2, None, &options, &pool).unwrap();
        for j in 0..dim {
            let h = 1e-4;
            let (mut up, mut down) = (theta.clone(), theta.clone());
            up[j] += h;
            down[j] -= h;
            let gu = composite_loglik(chunks, *fam, &up[..p], &up[p..], &options, &pool).unwrap().1;
            let gd = composite_loglik(chunks, *fam, &down[..p], &down[p..], &options, &pool).unwrap().1;
            for a in 0..dim {
                let fd = (gu[a] - gd[a]) / (2.0 * h);
                let an = hess[a * dim + j];
                assert!(
                    (an - fd).abs() < 1e-5 * (1.0 + fd.abs()),
                    "design {design}, Hessian ({a}, {j}): {an} against {fd}"
                );
            }
        }
    }
}
