//! The mixing-distribution step: level sums merge exactly, the NPMLE satisfies the
//! Kiefer-Wolfowitz optimality condition and finds a two-point mixture, posterior means
//! are Bayes rules under the estimate, and the results do not depend on the threads or
//! on how the rows were split into chunks.

use fullrandom_core::npmle::{
    bin_levels, mixture_loglik, npmle, pnorm, posterior_means, predictive_quantiles, LevelSums, NpmleOptions,
};
use fullrandom_core::run_with_threads;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal, Poisson};

/// One random-intercept design: codes (1-based), values, true effects.
fn bimodal(n_levels: usize, seed: u64) -> (Vec<i32>, Vec<f64>, Vec<f64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let pois = Poisson::new(4.0).unwrap();
    let z = Normal::new(0.0, 1.0).unwrap();
    let mut codes = Vec::new();
    let mut values = Vec::new();
    let mut alpha = Vec::new();
    for g in 0..n_levels {
        let a =
            if rng.random::<f64>() < 0.8 { -0.5 + 0.3 * z.sample(&mut rng) } else { 2.0 + 0.5 * z.sample(&mut rng) };
        alpha.push(a);
        let n = (pois.sample(&mut rng) as usize).max(1);
        for _ in 0..n {
            codes.push(g as i32 + 1);
            values.push(a + z.sample(&mut rng));
        }
    }
    (codes, values, alpha)
}

#[test]
fn level_sums_merge_exactly_in_any_split() {
    let (codes, values, _) = bimodal(300, 1);
    let whole = LevelSums::compute(&values, &codes, 1, 300, 0.25).unwrap();
    for cut in [1usize, 17, values.len() / 2, values.len() - 1] {
        let mut a = LevelSums::compute(&values[..cut], &codes[..cut], 1, 300, 0.25).unwrap();
        let b = LevelSums::compute(&values[cut..], &codes[cut..], 1, 300, 0.25).unwrap();
        a.merge(&b).unwrap();
        for g in 0..300 {
            assert_eq!(a.count[g], whole.count[g]);
            for (x, y) in [(&a.s1, &whole.s1), (&a.s2, &whole.s2), (&a.s3, &whole.s3), (&a.s4, &whole.s4)] {
                assert!((x[g] - y[g]).abs() <= 1e-12 * (1.0 + y[g].abs()));
            }
        }
    }
    assert!(LevelSums::compute(&values, &codes, 1, 299, 0.0).is_err());
    let mut c = LevelSums::empty(300, 0.0);
    assert!(c.merge(&whole).is_err(), "different shifts must not merge");
}

#[test]
fn npmle_recovers_a_bimodal_distribution_and_is_optimal() {
    let (codes, values, alpha) = bimodal(5000, 2);
    let sums = LevelSums::compute(&values, &codes, 1, 5000, 0.0).unwrap();
    let d = sums.means();
    let v: Vec<f64> = sums.count.iter().map(|n| 1.0 / n).collect();
    let g = npmle(&d, &v, &NpmleOptions::default()).unwrap();
    assert!(g.converged, "{g:?}");
    assert!(g.max_gradient <= 1.0 + 1e-3, "optimality condition: {}", g.max_gradient);
    eprintln!("iterations {} bins {}", g.iterations, g.n_bins);
    assert!((g.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    let upper: f64 = g.grid.iter().zip(&g.weights).filter(|(a, _)| **a > 0.75).map(|(_, w)| w).sum();
    assert!((upper - 0.2).abs() < 0.03, "mass of the upper mode {upper}");
    // Empirical Bayes beats the linear (BLUP) rule on this design.
    let post = posterior_means(&g, &d, &v).unwrap();
    let mean_a = alpha.iter().sum::<f64>() / alpha.len() as f64;
    let var_a = alpha.iter().map(|a| (a - mean_a).powi(2)).sum::<f64>() / alpha.len() as f64;
    let mse = |p: &[f64]| p.iter().zip(&alpha).map(|(x, a)| (x - a).powi(2)).sum::<f64>() / alpha.len() as f64;
    let blup: Vec<f64> = d.iter().zip(&v).map(|(x, vv)| mean_a + var_a / (var_a + vv) * (x - mean_a)).collect();
    assert!(mse(&post) < 0.8 * mse(&blup), "{} vs {}", mse(&post), mse(&blup));
}

#[test]
fn results_do_not_depend_on_threads() {
    let (codes, values, _) = bimodal(2000, 3);
    let sums = LevelSums::compute(&values, &codes, 1, 2000, 0.0).unwrap();
    let d = sums.means();
    let v: Vec<f64> = sums.count.iter().map(|n| 1.0 / n).collect();
    let one = run_with_threads(1, || npmle(&d, &v, &NpmleOptions::default()).unwrap()).unwrap();
    let two = run_with_threads(2, || npmle(&d, &v, &NpmleOptions::default()).unwrap()).unwrap();
    assert_eq!(one, two);
    let p1 = run_with_threads(1, || posterior_means(&one, &d, &v).unwrap()).unwrap();
    let p2 = run_with_threads(3, || posterior_means(&one, &d, &v).unwrap()).unwrap();
    assert_eq!(p1, p2);
}

#[test]
fn bins_keep_counts_and_means() {
    let d = [0.0, 0.001, 5.0, 0.0, f64::NAN];
    let v = [1.0, 1.0, 1.0, 4.0, 1.0];
    let b = bin_levels(&d, &v, &NpmleOptions::default()).unwrap();
    assert_eq!(b.count.iter().sum::<f64>(), 4.0);
    let total: f64 = b.d.iter().zip(&b.count).map(|(x, c)| x * c).sum();
    assert!((total - 5.001).abs() < 1e-12);
}

#[test]
fn predictive_quantiles_of_a_point_mass_are_normal() {
    let g = fullrandom_core::npmle::Npmle {
        grid: vec![-1.0, 0.5, 2.0],
        weights: vec![0.0, 1.0, 0.0],
        loglik: 0.0,
        iterations: 0,
        converged: true,
        max_gradient: 1.0,
        n_bins: 1,
        n_levels: 1,
    };
    let q = predictive_quantiles(&g, &[f64::NAN, 3.0], &[1.0, 1.0], &[1.0, 0.0], &[4.0, 1.0], &[0.05, 0.95]).unwrap();
    // 1 + 0.5 +/- 2 * 1.6448536
    assert!((q[0] - (1.5 - 2.0 * 1.6448536269514722)).abs() < 1e-6, "{q:?}");
    assert!((q[1] - (1.5 + 2.0 * 1.6448536269514722)).abs() < 1e-6);
    assert!((q[2] - (0.5 - 1.6448536269514722)).abs() < 1e-6);
    assert!((pnorm(1.959963984540054) - 0.975).abs() < 2e-8);
}

/// The posterior mean by its definition, with one `exp` per grid point.
fn direct_posterior_mean(grid: &[f64], w: &[f64], d: f64, v: f64) -> f64 {
    let e: Vec<f64> = grid.iter().map(|a| -(d - a) * (d - a) / (2.0 * v)).collect();
    let top = e.iter().zip(w).filter(|(_, w)| **w > 0.0).map(|(e, _)| *e).fold(f64::NEG_INFINITY, f64::max);
    let (mut s0, mut s1) = (0.0, 0.0);
    for ((x, a), wj) in e.iter().zip(grid).zip(w).filter(|(_, wj)| **wj > 0.0) {
        let t = wj * (x - top).exp();
        s0 += t;
        s1 += t * a;
    }
    s1 / s0
}

#[test]
fn posterior_means_on_an_equal_grid_match_their_definition() {
    // Equally spaced grid (the walk) and the same points perturbed (the exp path); weights
    // with gaps, two far-apart clusters, and level means inside, between and outside them.
    let m = 300;
    let grid: Vec<f64> = (0..m).map(|j| -3.0 + 9.0 * j as f64 / (m - 1) as f64).collect();
    let mut rng = StdRng::seed_from_u64(7);
    let mut w: Vec<f64> = (0..m)
        .map(|j| if !(60..=250).contains(&j) && rng.random::<f64>() < 0.5 { rng.random::<f64>() } else { 0.0 })
        .collect();
    let s: f64 = w.iter().sum();
    w.iter_mut().for_each(|x| *x /= s);
    let g = fullrandom_core::npmle::Npmle {
        grid: grid.clone(),
        weights: w.clone(),
        loglik: 0.0,
        iterations: 0,
        converged: true,
        max_gradient: 1.0,
        n_bins: 1,
        n_levels: 1,
    };
    let mut d = Vec::new();
    let mut v = Vec::new();
    for k in 0..400 {
        d.push(-6.0 + 15.0 * k as f64 / 399.0);
        v.push([1.0, 0.25, 0.01, 1e-4][k % 4]);
    }
    let walked = posterior_means(&g, &d, &v).unwrap();
    for i in 0..d.len() {
        let exact = direct_posterior_mean(&grid, &w, d[i], v[i]);
        assert!(
            (walked[i] - exact).abs() <= 1e-9 * (1.0 + exact.abs()),
            "d {} v {}: {} vs {}",
            d[i],
            v[i],
            walked[i],
            exact
        );
    }
    let mut uneven = g.clone();
    uneven.grid[100] += 1e-3;
    let direct = posterior_means(&uneven, &d, &v).unwrap();
    for i in 0..d.len() {
        let exact = direct_posterior_mean(&uneven.grid, &w, d[i], v[i]);
        assert!((direct[i] - exact).abs() <= 1e-9 * (1.0 + exact.abs()));
    }
}

#[test]
fn predictive_quantiles_solve_the_mixture_distribution_function() {
    // A bimodal estimate: the distribution function of center + a + N(0, noise) at each
    // returned quantile equals its probability, for known levels (posterior) and a new one.
    let (codes, values, _) = bimodal(2000, 5);
    let sums = LevelSums::compute(&values, &codes, 1, 2000, 0.0).unwrap();
    let d = sums.means();
    let v: Vec<f64> = sums.count.iter().map(|n| 1.0 / n).collect();
    let g = npmle(&d, &v, &NpmleOptions::default()).unwrap();
    let probs = [0.05, 0.5, 0.95, 0.999];
    let dq: Vec<f64> = vec![f64::NAN, -0.5, 0.7, 2.0, 5.0];
    let vq = vec![1.0, 0.25, 0.25, 1.0, 0.5];
    let center = vec![1.0, 0.0, -2.0, 0.5, 0.0];
    let noise = vec![1.0, 1.0, 0.01, 4.0, 1e-6];
    let q = predictive_quantiles(&g, &dq, &vq, &center, &noise, &probs).unwrap();
    for i in 0..dq.len() {
        // the posterior weights by their definition
        let e: Vec<f64> =
            g.grid.iter().map(|a| if dq[i].is_nan() { 0.0 } else { -(dq[i] - a).powi(2) / (2.0 * vq[i]) }).collect();
        let top =
            e.iter().zip(&g.weights).filter(|(_, w)| **w > 0.0).map(|(e, _)| *e).fold(f64::NEG_INFINITY, f64::max);
        let post: Vec<f64> =
            e.iter().zip(&g.weights).map(|(x, w)| if *w > 0.0 { w * (x - top).exp() } else { 0.0 }).collect();
        let tot: f64 = post.iter().sum();
        let cdf = |y: f64| -> f64 {
            post.iter().zip(&g.grid).map(|(w, a)| w / tot * pnorm((y - center[i] - a) / noise[i].sqrt())).sum()
        };
        for (k, &p) in probs.iter().enumerate() {
            let y = q[i * probs.len() + k];
            assert!((cdf(y) - p).abs() < 1e-7, "level {i} p {p}: F(q) = {}", cdf(y));
        }
    }
}

#[test]
fn mixture_loglik_matches_its_definition_on_any_grid_and_threads() {
    // The marginal log-likelihood of held-out level means: on an equally spaced grid (the
    // walk) and on the same points perturbed (one exp per support point), against the
    // direct sum; levels inside, between and far outside the support; NaN skipped.
    let m = 200;
    let equal: Vec<f64> = (0..m).map(|j| -3.0 + 9.0 * j as f64 / (m - 1) as f64).collect();
    let mut rng = StdRng::seed_from_u64(11);
    let w: Vec<f64> =
        (0..m).map(|j| if j % 7 == 0 || (60..90).contains(&j) { 0.0 } else { rng.random::<f64>() }).collect();
    let perturbed: Vec<f64> = equal.iter().enumerate().map(|(j, a)| a + if j % 2 == 0 { 1e-4 } else { 0.0 }).collect();
    let mut d: Vec<f64> = (0..500).map(|_| -5.0 + 13.0 * rng.random::<f64>()).collect();
    let mut v: Vec<f64> = (0..500).map(|_| 0.01 + rng.random::<f64>()).collect();
    d.extend([40.0, -60.0, f64::NAN]);
    v.extend([0.2, 0.05, 1.0]);
    let total: f64 = w.iter().sum();
    for grid in [&equal, &perturbed] {
        let g = fullrandom_core::npmle::Npmle {
            grid: grid.clone(),
            weights: w.clone(),
            loglik: 0.0,
            iterations: 0,
            converged: true,
            max_gradient: 1.0,
            n_bins: 1,
            n_levels: 1,
        };
        let mut direct = 0.0;
        for (&di, &vi) in d.iter().zip(&v).filter(|(x, _)| x.is_finite()) {
            let e: Vec<f64> = grid
                .iter()
                .zip(&w)
                .filter(|(_, wj)| **wj > 0.0)
                .map(|(a, wj)| (wj / total).ln() - (di - a) * (di - a) / (2.0 * vi))
                .collect();
            let top = e.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            direct += top + e.iter().map(|x| (x - top).exp()).sum::<f64>().ln()
                - 0.5 * (2.0 * std::f64::consts::PI * vi).ln();
        }
        let one = run_with_threads(1, || mixture_loglik(&g, &d, &v).unwrap()).unwrap();
        let two = run_with_threads(2, || mixture_loglik(&g, &d, &v).unwrap()).unwrap();
        assert_eq!(one.to_bits(), two.to_bits());
        assert!((one - direct).abs() <= 1e-10 * direct.abs(), "{one} vs {direct}");
    }
}
