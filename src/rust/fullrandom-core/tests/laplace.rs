//! The Laplace fit: its deviance against a dense computation of the same approximation,
//! its optimum (a stationary point, the same over chunks and threads), and the boundary.

use fullrandom_core::family::{Family, GlmFamily};
use fullrandom_core::laplace::{Laplace, LaplaceOptions};
use fullrandom_core::thread_pool;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Binomial, Distribution, Normal, Poisson};

mod common;
use common::GlmmRows;

/// Two crossed terms (with repeated cells) and a third nested in the first, responses at
/// `(b, s2)`; binomial rows with 1-3 trials, or Poisson rows with offsets.
fn simulate(family: GlmFamily, n: usize, b: &[f64], s2: &[f64], seed: u64) -> GlmmRows {
    let levels = [12usize, 8, 4];
    let mut rng = StdRng::seed_from_u64(seed);
    let std = Normal::new(0.0, 1.0).unwrap();
    let u: Vec<Vec<f64>> = [levels[0], levels[1], levels[0] * levels[2]]
        .iter()
        .zip(s2)
        .map(|(&m, v)| (0..m).map(|_| v.sqrt() * std.sample(&mut rng)).collect())
        .collect();
    let mut rows = GlmmRows::empty(&[levels[0], levels[1], levels[0] * levels[2]]);
    let (mut trials, mut offsets) = (Vec::new(), Vec::new());
    for i in 0..n {
        let x: f64 = std.sample(&mut rng);
        let g = if i % 5 == 0 { 0 } else { i % levels[0] };
        let h = rng.random_range(0..levels[1]);
        let s = g * levels[2] + rng.random_range(0..levels[2]);
        let off = if family.is_poisson_log() { 0.2 * ((i % 3) as f64) } else { 0.0 };
        let eta = b[0] + b[1] * x + off + u[0][g] + u[1][h] + u[2][s];
        let mu = family.linkinv(eta);
        let m = if family.is_poisson_log() { 1 } else { 1 + (i % 3) as u64 };
        let y = if family.is_poisson_log() {
            Poisson::new(mu.max(1e-12)).unwrap().sample(&mut rng)
        } else {
            Binomial::new(m, mu).unwrap().sample(&mut rng) as f64
        };
        rows.codes[0].push(g as i32);
        rows.codes[1].push(h as i32);
        rows.codes[2].push(s as i32);
        rows.y.push(y);
        rows.x.push(x);
        trials.push(m as f64);
        offsets.push(off);
    }
    rows.trials = Some(trials);
    rows.offset = Some(offsets);
    rows
}

fn families() -> [GlmFamily; 3] {
    [
        GlmFamily::from_names("binomial", "logit").unwrap(),
        GlmFamily::from_names("poisson", "log").unwrap(),
        GlmFamily::from_names("binomial", "probit").unwrap(),
    ]
}

/// `-2 l_LA` by dense algebra: Newton's method on the modes with `A` formed and factored
/// as a dense matrix, `log det A` from its Cholesky factor.
fn dense_deviance(rows: &GlmmRows, family: GlmFamily, b: &[f64], theta: &[f64]) -> (f64, Vec<f64>) {
    let starts: Vec<usize> = std::iter::once(0)
        .chain(rows.n_levels.iter().scan(0, |s, &m| {
            *s += m;
            Some(*s)
        }))
        .collect();
    let q = starts[rows.n_levels.len()];
    let column = |k: usize, i: usize| starts[k] + rows.level(k, i);
    let mut v = vec![0.0; q];
    let eta_at = |v: &[f64], i: usize| {
        let mut e = b[0] + b[1] * rows.x[i] + rows.offset_at(i);
        for (k, t) in theta.iter().enumerate() {
            e += t * v[column(k, i)];
        }
        e
    };
    for _ in 0..100 {
        let mut a = vec![0.0; q * q];
        let mut g: Vec<f64> = v.iter().map(|x| -x).collect();
        for i in 0..rows.n() {
            let (_, l1, l2) = family.row_derivatives(rows.y[i], rows.trials_at(i), eta_at(&v, i));
            for (k, tk) in theta.iter().enumerate() {
                g[column(k, i)] += tk * l1;
                for (l, tl) in theta.iter().enumerate() {
                    a[column(k, i) * q + column(l, i)] -= tk * tl * l2;
                }
            }
        }
        for j in 0..q {
            a[j * q + j] += 1.0;
        }
        let chol = cholesky(&a, q);
        let step = cholesky_solve(&chol, q, &g);
        let decrement: f64 = step.iter().zip(&g).map(|(s, x)| s * x).sum();
        if decrement < 1e-20 {
            let h: f64 = (0..rows.n())
                .map(|i| family.row_derivatives(rows.y[i], rows.trials_at(i), eta_at(&v, i)).0)
                .sum::<f64>()
                - 0.5 * v.iter().map(|x| x * x).sum::<f64>();
            let log_det: f64 = 2.0 * (0..q).map(|j| chol[j * q + j].ln()).sum::<f64>();
            return (-2.0 * h + log_det, v);
        }
        v.iter_mut().zip(&step).for_each(|(x, s)| *x += s);
    }
    panic!("dense Newton did not converge");
}

fn cholesky(a: &[f64], d: usize) -> Vec<f64> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s = a[i * d + j] - (0..j).map(|m| l[i * d + m] * l[j * d + m]).sum::<f64>();
            l[i * d + j] = if i == j { s.sqrt() } else { s / l[j * d + j] };
        }
    }
    l
}

fn cholesky_solve(l: &[f64], d: usize, b: &[f64]) -> Vec<f64> {
    let mut z = b.to_vec();
    for i in 0..d {
        z[i] = (z[i] - (0..i).map(|m| l[i * d + m] * z[m]).sum::<f64>()) / l[i * d + i];
    }
    for i in (0..d).rev() {
        z[i] = (z[i] - (i + 1..d).map(|m| l[m * d + i] * z[m]).sum::<f64>()) / l[i * d + i];
    }
    z
}

#[test]
fn the_deviance_is_the_dense_laplace_approximation() {
    for family in families() {
        let rows = simulate(family, 400, &[-0.3, 0.6], &[0.8, 0.4, 0.3], 7);
        for chunks in [1, 3] {
            let pieces = rows.chunks(chunks);
            let laplace = Laplace::new(&pieces, family).unwrap();
            for (b, theta) in
                [([-0.3, 0.6], [0.9, 0.6, 0.5]), ([0.1, 0.2], [1.5, 0.0, 0.2]), ([-0.5, 0.7], [-0.9, 0.6, 0.5])]
            {
                let (d, modes) = laplace.deviance_at(&b, &theta).unwrap();
                let (dense, v) = dense_deviance(&rows, family, &b, &theta);
                assert!(
                    (d - dense).abs() < 1e-10 * dense.abs(),
                    "{:?} {:?}: deviance {d} against dense {dense}",
                    family.distribution,
                    family.link
                );
                let mut at = 0;
                for (k, u) in modes.iter().enumerate() {
                    for x in u {
                        assert!((x - theta[k] * v[at]).abs() < 1e-7, "mode {x} against {}", theta[k] * v[at]);
                        at += 1;
                    }
                }
            }
            // Even in each theta.
            let (plus, _) = laplace.deviance_at(&[-0.3, 0.6], &[0.9, 0.6, 0.5]).unwrap();
            let (minus, _) = laplace.deviance_at(&[-0.3, 0.6], &[0.9, -0.6, 0.5]).unwrap();
            assert!((plus - minus).abs() < 1e-9 * plus.abs());
        }
    }
}

#[test]
fn the_fit_is_a_minimum_of_the_deviance_over_any_chunks_and_threads() {
    for family in families().into_iter().take(2) {
        let rows = simulate(family, 1500, &[-0.3, 0.6], &[0.8, 0.4, 0.3], 21);
        let one = rows.chunks(1);
        // Seven chunks of the rows in reverse order: the canonical order makes the fit the same.
        let mut reversed = rows.clone();
        reversed.y.reverse();
        reversed.x.reverse();
        reversed.codes.iter_mut().for_each(|c| c.reverse());
        reversed.trials.as_mut().unwrap().reverse();
        reversed.offset.as_mut().unwrap().reverse();
        let seven = reversed.chunks(7);
        let fit_one = Laplace::new(&one, family)
            .unwrap()
            .fit(&[0.0, 0.0], &[0.5, 0.5, 0.5], &LaplaceOptions::default(), &thread_pool(1).unwrap(), &mut || true)
            .unwrap();
        let laplace = Laplace::new(&seven, family).unwrap();
        let fit = laplace
            .fit(&[0.0, 0.0], &[0.5, 0.5, 0.5], &LaplaceOptions::default(), &thread_pool(2).unwrap(), &mut || true)
            .unwrap();
        for (a, b) in fit.coef.iter().chain(&fit.variances).zip(fit_one.coef.iter().chain(&fit_one.variances)) {
            assert_eq!(a, b, "1 chunk and 1 thread against 7 chunks of the reversed rows and 2 threads");
        }
        assert_eq!(fit.loglik, fit_one.loglik);
        // No direction lowers the deviance.
        let theta: Vec<f64> = fit.variances.iter().map(|s| s.sqrt()).collect();
        let (best, _) = laplace.deviance_at(&fit.coef, &theta).unwrap();
        assert!((best + 2.0 * fit.loglik).abs() < 1e-9 * best.abs());
        for j in 0..5 {
            for s in [-1e-3, 1e-3] {
                let (mut b, mut t) = (fit.coef.clone(), theta.clone());
                if j < 2 {
                    b[j] += s;
                } else {
                    t[j - 2] += s;
                }
                let (d, _) = laplace.deviance_at(&b, &t).unwrap();
                assert!(d >= best - 1e-7, "{:?}: parameter {j} moved by {s}: {d} below {best}", family.distribution);
            }
        }
        // The covariance is positive definite and the modes are the ones at the estimates.
        for j in 0..2 {
            assert!(fit.vcov[(j, j)] > 0.0);
        }
        let (_, modes) = laplace.deviance_at(&fit.coef, &theta).unwrap();
        for (u, w) in modes.iter().zip(&fit.modes) {
            for (a, b) in u.iter().zip(w) {
                assert!((a.abs() - b.abs()).abs() < 1e-6);
            }
        }
        println!("{:?}: {} steps, {} evaluations", family.distribution, fit.steps, fit.evaluations);
    }
}

#[test]
fn a_term_without_variance_goes_to_the_boundary() {
    let family = GlmFamily::from_names("binomial", "logit").unwrap();
    let mut rows = simulate(family, 1200, &[0.2, 0.5], &[0.8, 0.0, 0.0], 5);
    // The third term's levels shuffled among the rows of each first-term level carry no
    // variance of their own; its estimate is at or near zero.
    rows.codes.truncate(2);
    rows.n_levels.truncate(2);
    let mut rng = StdRng::seed_from_u64(3);
    for c in rows.codes[1].iter_mut() {
        *c = rng.random_range(0..8);
    }
    let pieces = rows.chunks(1);
    let fit = Laplace::new(&pieces, family)
        .unwrap()
        .fit(&[0.0, 0.0], &[0.5, 0.5], &LaplaceOptions::default(), &thread_pool(2).unwrap(), &mut || true)
        .unwrap();
    assert!(fit.variances[1] < 0.02, "{:?}", fit.variances);
    if fit.at_boundary[1] {
        assert_eq!(fit.variances[1], 0.0);
        assert!(fit.vcov_variances[(1, 1)] == 0.0);
    }
    assert!(fit.variances[0] > 0.3);
}
