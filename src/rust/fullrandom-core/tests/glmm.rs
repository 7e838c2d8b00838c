//! GLMMs by moments: the marginal means against integration and Monte Carlo, merge
//! invariance over chunks and threads, the weighted solver against a dense solve, and
//! recovery of known parameters. The expectations of the moment statistics are tested in
//! glmm_expectations.rs.

use fullrandom_core::family::{gauss_hermite, Family, GlmFamily};
use fullrandom_core::glmm::{fit_glmm, marginal_mean, modes_at, GlmmOptions};
use fullrandom_core::thread_pool;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Binomial, Distribution, Normal, Poisson};

mod common;
use common::GlmmRows;

/// A design of `levels` x `levels2` levels (one term if `levels2 == 0`) with `n` rows,
/// some cells repeated; responses simulated at `(b, s2)`.
fn simulate(family: GlmFamily, n: usize, levels: &[usize], b: &[f64], s2: &[f64], trials: u64, seed: u64) -> GlmmRows {
    let mut rng = StdRng::seed_from_u64(seed);
    let std = Normal::new(0.0, 1.0).unwrap();
    let u: Vec<Vec<f64>> =
        levels.iter().zip(s2).map(|(&m, v)| (0..m).map(|_| v.sqrt() * std.sample(&mut rng)).collect()).collect();
    let mut rows = GlmmRows::empty(levels);
    let (mut trials_of, mut offsets) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let x: f64 = std.sample(&mut rng);
        let off = if family.is_poisson_log() { 0.3 * ((i % 3) as f64) } else { 0.0 };
        let mut eta = b[0] + b[1] * x + off;
        for (k, &m) in levels.iter().enumerate() {
            let g = if k == 0 { i % m } else { rng.random_range(0..m) };
            rows.codes[k].push(g as i32);
            eta += u[k][g];
        }
        let mu = family.linkinv(eta);
        let y = if family.is_poisson_log() {
            Poisson::new(mu.max(1e-12)).unwrap().sample(&mut rng)
        } else {
            Binomial::new(trials, mu).unwrap().sample(&mut rng) as f64
        };
        rows.y.push(y);
        trials_of.push(if family.is_poisson_log() { 1.0 } else { trials as f64 });
        offsets.push(off);
        rows.x.push(x);
    }
    rows.trials = Some(trials_of);
    rows.offset = Some(offsets);
    rows
}

fn binomial() -> GlmFamily {
    GlmFamily::from_names("binomial", "logit").unwrap()
}
fn poisson() -> GlmFamily {
    GlmFamily::from_names("poisson", "log").unwrap()
}

#[test]
fn gauss_hermite_integrates_normal_moments() {
    let (x, w) = gauss_hermite(40);
    let moment = |p: i32| x.iter().zip(&w).map(|(x, w)| w * x.powi(p)).sum::<f64>();
    assert!((moment(0) - 1.0).abs() < 1e-13);
    assert!((moment(2) - 1.0).abs() < 1e-12);
    assert!((moment(4) - 3.0).abs() < 1e-11);
    assert!((moment(6) - 15.0).abs() < 1e-10);
}

#[test]
fn marginal_means_match_integration_and_monte_carlo() {
    let fam = binomial();
    let etas = [-4.0, -1.3, 0.0, 0.7, 2.5, 12.0, 31.0];
    for &s2 in &[0.25, 1.0, 4.0] {
        let m = marginal_mean(&fam, s2, &etas);
        for (&e, &mv) in etas.iter().zip(&m) {
            // Trapezoid rule on a fine grid over +-12 sd (exponentially accurate).
            let s = f64::sqrt(s2);
            let h = 1e-3;
            let mut v = 0.0;
            let mut z = -12.0;
            while z <= 12.0 {
                v += h * fullrandom_core::family::dnorm(z) * fam.linkinv(e + s * z);
                z += h;
            }
            assert!((mv - v).abs() <= 1e-8 * v.max(1e-300) + 1e-14, "eta {e} s2 {s2}: {mv} vs {v}");
        }
        // 10^6 draws: within 4 Monte Carlo standard errors (and 1e-3 relative).
        let mut rng = StdRng::seed_from_u64(7);
        let normal = Normal::new(0.0, s2.sqrt()).unwrap();
        let draws = 1_000_000;
        for (&e, &mv) in etas.iter().zip(&m).take(5) {
            let (mut s, mut ss) = (0.0, 0.0);
            for _ in 0..draws {
                let v = fam.linkinv(e + normal.sample(&mut rng));
                s += v;
                ss += v * v;
            }
            let mean = s / draws as f64;
            let se = ((ss / draws as f64 - mean * mean) / draws as f64).sqrt();
            assert!((mean - mv).abs() < 4.0 * se, "eta {e} s2 {s2}: {mv} vs MC {mean} (se {se})");
        }
    }
}

#[test]
fn probit_marginal_mean_is_closed_form() {
    // E Phi(e + z) = Phi(e / sqrt(1 + s2)), and Phi itself at 0 and in the tails.
    let fam = GlmFamily::from_names("binomial", "probit").unwrap();
    assert_eq!(fam.linkinv(0.0), 0.5);
    assert!((fam.linkinv(-8.0) / 6.220960574271785e-16 - 1.0).abs() < 1e-12);
    let etas = [-2.0, 0.0, 0.3, 1.7];
    let m = marginal_mean(&fam, 0.8, &etas);
    for (e, v) in etas.iter().zip(m) {
        let want = fam.linkinv(e / 1.8f64.sqrt());
        assert!((v - want).abs() < 1e-9, "{v} vs {want}");
    }
}

#[test]
fn poisson_marginal_mean_is_closed_form() {
    let etas = [-3.0, 0.0, 0.4, 2.0];
    for &s2 in &[0.0, 0.5, 2.0] {
        let m = marginal_mean(&poisson(), s2, &etas);
        for (e, v) in etas.iter().zip(m) {
            assert_eq!(v, (e + 0.5 * s2).exp());
        }
    }
}

/// Issue 19's merge invariance: 1, 2, 7 and 64 chunks give the same estimates (fixed
/// effects and variances to 1e-10 relative, modes to 1e-8). 6,400 rows: each of the 64
/// chunks holds 100 rows, and every level of both terms has rows in several chunks.
#[test]
fn fits_are_invariant_to_chunks() {
    let pool = thread_pool(2).unwrap();
    for fam in [binomial(), poisson()] {
        let rows = simulate(fam, 6400, &[60, 40], &[-0.5, 0.5], &[0.5, 0.3], 4, 11);
        for k in 0..2 {
            for g in 0..rows.n_levels[k] {
                let chunks_of_level: std::collections::BTreeSet<usize> =
                    (0..rows.n()).filter(|&i| rows.level(k, i) == g).map(|i| i * 64 / rows.n()).collect();
                assert!(chunks_of_level.len() >= 10, "term {k} level {g} in {} chunks", chunks_of_level.len());
            }
        }
        let fits: Vec<_> = [1, 2, 7, 64]
            .iter()
            .map(|&c| fit_glmm(&rows.chunks(c), fam, &GlmmOptions::default(), &pool, &mut || true).unwrap())
            .collect();
        for (f, pieces) in fits[1..].iter().zip([2, 7, 64]) {
            for (a, b) in f.coef.iter().zip(&fits[0].coef).chain(f.variances.iter().zip(&fits[0].variances)) {
                assert!((a - b).abs() <= 1e-10 * b.abs(), "{:?}, {pieces} chunks: {a} vs {b}", fam.distribution);
            }
            for (u, v) in f.ranef.iter().zip(&fits[0].ranef) {
                for (a, b) in u.iter().zip(v) {
                    assert!((a - b).abs() < 1e-8, "{:?}, {pieces} chunks: mode {a} vs {b}", fam.distribution);
                }
            }
        }
        let worst = fits[1..]
            .iter()
            .flat_map(|f| {
                f.coef
                    .iter()
                    .zip(&fits[0].coef)
                    .chain(f.variances.iter().zip(&fits[0].variances))
                    .map(|(a, b)| (a - b).abs() / b.abs())
            })
            .fold(0.0, f64::max);
        println!("{:?}: largest relative difference over 2, 7 and 64 chunks {worst:.1e}", fam.distribution);
    }
}

/// Large fits start from a fit to a subsample of the cells: the estimates are those of the
/// default start to the convergence tolerance (1e-8 relative), and do not depend on the
/// chunks (1e-10). Forced here on 8,000 rows by a low `subsample_above` (a 1,000-row
/// subsample; with 300, a 500-row subsample started from a 150-row one within it).
#[test]
fn a_subsample_start_gives_the_same_estimates() {
    let pool = thread_pool(2).unwrap();
    let designs = [
        (binomial(), vec![80, 50], 1, vec![0.8, 0.3]),
        (binomial(), vec![80], 1, vec![0.8]),
        (binomial(), vec![80, 50], 4, vec![0.5, 0.2]),
        (poisson(), vec![80, 50], 1, vec![0.5, 0.3]),
    ];
    for (fam, levels, trials, s2) in designs {
        let rows = simulate(fam, 8000, &levels, &[-0.5, 0.5], &s2, trials, 21);
        let fit = |chunks: usize, above: usize| {
            let options = GlmmOptions { subsample_above: above, ..GlmmOptions::default() };
            fit_glmm(&rows.chunks(chunks), fam, &options, &pool, &mut || true).unwrap()
        };
        let plain = fit(1, usize::MAX);
        let sub = fit(1, 2000);
        let nested = fit(1, 300);
        let worst = [&sub, &nested]
            .iter()
            .flat_map(|s| plain.coef.iter().zip(&s.coef).chain(plain.variances.iter().zip(&s.variances)))
            .map(|(a, b)| (a - b).abs() / a.abs().max(1e-3))
            .fold(0.0, f64::max);
        println!(
            "{:?} {levels:?} x {trials}: Newton iterations {} -> {}, largest relative difference {worst:.1e}",
            fam.distribution, plain.iterations, sub.iterations
        );
        assert!(
            worst < 1e-8,
            "{:?} {levels:?}: {:?} {:?} vs {:?} {:?}",
            fam.distribution,
            plain.coef,
            plain.variances,
            sub.coef,
            sub.variances
        );
        for chunks in [7, 64] {
            let f = fit(chunks, 2000);
            for (a, b) in f.coef.iter().zip(&sub.coef).chain(f.variances.iter().zip(&sub.variances)) {
                assert!(
                    (a - b).abs() <= 1e-10 * b.abs(),
                    "{:?} {levels:?}, {chunks} chunks: {a} vs {b}",
                    fam.distribution
                );
            }
        }
    }
}

#[test]
fn fits_do_not_depend_on_the_number_of_threads() {
    // Every sum over rows is taken in fixed blocks or in group order and added in order:
    // 1, 2 and 3 threads give the same bits (more rows than one block of the row passes).
    for fam in [binomial(), poisson()] {
        let rows = simulate(fam, 40_000, &[300, 200], &[-0.5, 0.5], &[0.6, 0.3], 1, 23);
        let fits: Vec<_> = [1, 2, 3]
            .iter()
            .map(|&t| {
                let pool = thread_pool(t).unwrap();
                fit_glmm(&rows.chunks(1), fam, &GlmmOptions::default(), &pool, &mut || true).unwrap()
            })
            .collect();
        for f in &fits[1..] {
            assert_eq!(f.coef, fits[0].coef, "{:?}", fam.distribution);
            assert_eq!(f.variances, fits[0].variances, "{:?}", fam.distribution);
            assert_eq!(f.ranef, fits[0].ranef, "{:?}", fam.distribution);
            for a in 0..2 {
                for b in 0..2 {
                    assert_eq!(f.vcov[(a, b)].to_bits(), fits[0].vcov[(a, b)].to_bits());
                }
            }
        }
    }
}

#[test]
fn estimates_recover_the_truth() {
    let pool = thread_pool(2).unwrap();
    let cases = [(binomial(), 1u64, [1.0, 0.5]), (binomial(), 10, [0.5, 0.25]), (poisson(), 1, [0.5, 0.25])];
    for (fam, trials, s2) in cases {
        let rows = simulate(fam, 40_000, &[400, 300], &[-0.5, 0.5], &s2, trials, 17);
        let fit = fit_glmm(&rows.chunks(1), fam, &GlmmOptions::default(), &pool, &mut || true).unwrap();
        assert!((fit.coef[1] - 0.5).abs() < 0.05, "{:?}: slope {}", fam.distribution, fit.coef[1]);
        assert!((fit.coef[0] + 0.5).abs() < 0.2, "{:?}: intercept {}", fam.distribution, fit.coef[0]);
        for k in 0..2 {
            assert!(
                (fit.variances[k].sqrt() / s2[k].sqrt() - 1.0).abs() < 0.15,
                "{:?} trials {trials}: sd {k} {}",
                fam.distribution,
                fit.variances[k].sqrt()
            );
        }
        assert!(fit.vcov[(1, 1)] > 0.0 && fit.vcov[(1, 1)].sqrt() < 0.05);
    }
}

#[test]
fn bad_input_is_refused() {
    let pool = thread_pool(1).unwrap();
    let mut rows = simulate(binomial(), 50, &[5], &[0.0, 0.0], &[0.5], 3, 1);
    rows.y[3] = 4.0; // more successes than trials
    assert!(fit_glmm(&rows.chunks(1), binomial(), &GlmmOptions::default(), &pool, &mut || true).is_err());
    rows.y.iter_mut().for_each(|y| *y = 0.0);
    let err = fit_glmm(&rows.chunks(1), binomial(), &GlmmOptions::default(), &pool, &mut || true).unwrap_err();
    assert!(err.to_string().contains("all 0"), "{err}");
    assert!(GlmFamily::from_names("Gamma", "inverse").is_err());
}

/// The default fixed effects solve the quasi-score `X'D V^-1 (y - mu) = 0` with the
/// working covariance `V = A + D Z G Z' D` formed densely (the fit applies `V^-1` by
/// Woodbury and conjugate gradients), and the independence option solves
/// `X'(y - mu) = 0`.
#[test]
fn fixed_effects_solve_the_quasi_score() {
    use fullrandom_core::glmm::FixedWeights;
    let pool = thread_pool(2).unwrap();
    for (fam, trials) in [(binomial(), 4u64), (poisson(), 1)] {
        let rows = simulate(fam, 300, &[20, 12], &[-0.3, 0.4], &[0.6, 0.3], trials, 23);
        let n = rows.n();
        for fixed in [FixedWeights::Working, FixedWeights::Independence] {
            let options = GlmmOptions { fixed, ..GlmmOptions::default() };
            let fit = fit_glmm(&rows.chunks(1), fam, &options, &pool, &mut || true).unwrap();
            let (b, s2) = (&fit.coef, &fit.variances);
            let (m, d, v) = dense_working(&rows, fam, b, s2, false);
            let r: Vec<f64> = (0..n).map(|i| rows.y[i] - rows.trials_at(i) * m[i]).collect();
            let z = if fixed == FixedWeights::Working {
                let vr = fullrandom_core::dense::solve(&v, &r);
                (0..n).map(|i| d[i] * vr[i]).collect::<Vec<f64>>()
            } else {
                r.clone()
            };
            let xs = |i: usize, j: usize| if j == 0 { 1.0 } else { rows.x[i] };
            for j in 0..2 {
                let u: f64 = (0..n).map(|i| xs(i, j) * z[i]).sum();
                let scale: f64 = (0..n).map(|i| (xs(i, j) * z[i]).abs()).sum();
                assert!(
                    u.abs() < 1e-6 * scale,
                    "{:?} {fixed:?}: equation {j} is {u:e} (scale {scale:e})",
                    fam.distribution
                );
            }
            assert_eq!(fit.vcov_model.is_some(), fixed == FixedWeights::Working);
        }
    }
}

/// The working covariance of the quasi-score formed densely at `(b, s2)` (one covariate):
/// the marginal means `m`, `D = d mu / d eta` and `V`. Binomial: `V = A + D Z G Z' D`, `G`
/// the variances (the linearized marginal covariance). Poisson-log: the exact marginal
/// covariance, `mu_s mu_t (exp(sum_{k shared} s2_k) - 1)` between rows sharing the levels of
/// the terms `k`, and `mu_s + mu_s^2 (exp(s2_+) - 1)` on the diagonal; or, with `one_level`
/// (the working covariance before the cell effects), `mu_s mu_t sum_{k shared} (exp(s2_k) -
/// 1)` between rows.
fn dense_working(
    rows: &GlmmRows,
    fam: GlmFamily,
    b: &[f64],
    s2: &[f64],
    one_level: bool,
) -> (Vec<f64>, Vec<f64>, faer::Mat<f64>) {
    let n = rows.n();
    let s2_total: f64 = s2.iter().sum();
    let eta0: Vec<f64> = (0..n).map(|i| b[0] + b[1] * rows.x[i] + rows.offset_at(i)).collect();
    let m = marginal_mean(&fam, s2_total, &eta0);
    let h = 1e-6;
    let m_up = marginal_mean(&fam, s2_total, &eta0.iter().map(|e| e + h).collect::<Vec<_>>());
    let m_down = marginal_mean(&fam, s2_total, &eta0.iter().map(|e| e - h).collect::<Vec<_>>());
    let d: Vec<f64> = (0..n).map(|i| rows.trials_at(i) * (m_up[i] - m_down[i]) / (2.0 * h)).collect();
    let terms = s2.len();
    let v = faer::Mat::<f64>::from_fn(n, n, |s, t| {
        let shared = (0..terms).filter(|&k| rows.codes[k][s] == rows.codes[k][t]);
        if !fam.is_poisson_log() {
            let a = if s == t { rows.trials_at(s) * m[s] * (1.0 - m[s]) } else { 0.0 };
            return a + d[s] * d[t] * shared.map(|k| s2[k]).sum::<f64>();
        }
        let covariance = if one_level && s != t {
            shared.map(|k| s2[k].exp_m1()).sum::<f64>()
        } else {
            shared.map(|k| s2[k]).sum::<f64>().exp_m1()
        };
        m[s] * m[t] * covariance + if s == t { m[s] } else { 0.0 }
    });
    (m, d, v)
}

/// The solution of the quasi-score `X'D V^-1 (y - mu(b)) = 0` with the dense `V` of
/// [`dense_working`] at `(b, s2)`, by Fisher scoring from `b0` (`V` refreshed at every step).
fn dense_quasi_score(rows: &GlmmRows, fam: GlmFamily, b0: &[f64], s2: &[f64], one_level: bool) -> Vec<f64> {
    let n = rows.n();
    let xs = |i: usize, j: usize| if j == 0 { 1.0 } else { rows.x[i] };
    let mut b = b0.to_vec();
    for _ in 0..50 {
        let (m, d, v) = dense_working(rows, fam, &b, s2, one_level);
        let weighted: Vec<Vec<f64>> = (0..2)
            .map(|j| fullrandom_core::dense::solve(&v, &(0..n).map(|i| d[i] * xs(i, j)).collect::<Vec<_>>()))
            .collect();
        let info = faer::Mat::<f64>::from_fn(2, 2, |r, c| (0..n).map(|i| weighted[r][i] * d[i] * xs(i, c)).sum());
        let score: Vec<f64> =
            (0..2).map(|r| (0..n).map(|i| weighted[r][i] * (rows.y[i] - rows.trials_at(i) * m[i])).sum()).collect();
        let step = fullrandom_core::dense::solve(&info, &score);
        b.iter_mut().zip(&step).for_each(|(b, s)| *b += s);
        if step.iter().all(|s| s.abs() < 1e-13) {
            break;
        }
    }
    b
}

/// Poisson-log rows on given levels (`codes[k][i]`), with `x ~ N(0, 1)` and offsets,
/// simulated at `(b, s2)`.
fn poisson_rows(codes: Vec<Vec<i32>>, n_levels: &[usize], b: &[f64], s2: &[f64], seed: u64) -> GlmmRows {
    let mut rng = StdRng::seed_from_u64(seed);
    let std = Normal::new(0.0, 1.0).unwrap();
    let u: Vec<Vec<f64>> =
        n_levels.iter().zip(s2).map(|(&m, v)| (0..m).map(|_| v.sqrt() * std.sample(&mut rng)).collect()).collect();
    let mut rows = GlmmRows::empty(n_levels);
    let n = codes[0].len();
    rows.codes = codes;
    rows.offset = Some((0..n).map(|i| 0.2 * ((i % 3) as f64)).collect());
    for i in 0..n {
        let x: f64 = std.sample(&mut rng);
        let eta =
            b[0] + b[1] * x + rows.offset_at(i) + (0..n_levels.len()).map(|k| u[k][rows.level(k, i)]).sum::<f64>();
        rows.y.push(Poisson::new(eta.exp()).unwrap().sample(&mut rng));
        rows.x.push(x);
    }
    rows
}

/// Poisson-log's fixed effects solve the quasi-score with the exact marginal covariance
/// (closed forms, formed densely), through the cell effects of crossed terms with repeated
/// cells and the nested terms' variances, over any chunks: two crossed terms with
/// power-law levels (cells of up to ~30 rows), three crossed terms (no two rows sharing all
/// three levels, so every pair of rows shares at most two), and a term nested in another.
/// The working covariance of one level a term moves the intercept by 1.2e-3 on the first
/// design (the slope by 2e-4).
#[test]
fn poisson_fixed_effects_solve_the_exact_quasi_score() {
    let pool = thread_pool(2).unwrap();
    let mut rng = StdRng::seed_from_u64(41);
    let zipf = |rng: &mut StdRng, m: usize| -> i32 {
        let total: f64 = (1..=m).map(|r| 1.0 / r as f64).sum();
        let mut u = rng.random::<f64>() * total;
        for r in 1..=m {
            u -= 1.0 / r as f64;
            if u <= 0.0 {
                return (r - 1) as i32;
            }
        }
        (m - 1) as i32
    };
    let n = 360;
    let crossed: Vec<Vec<i32>> = {
        let (a, b): (Vec<i32>, Vec<i32>) = (0..n).map(|_| (zipf(&mut rng, 14), zipf(&mut rng, 9))).unzip();
        vec![a, b]
    };
    let three: Vec<Vec<i32>> = {
        let mut seen = std::collections::HashSet::new();
        let mut codes = vec![Vec::new(); 3];
        while codes[0].len() < 300 {
            let cell = [zipf(&mut rng, 12), zipf(&mut rng, 8), rng.random_range(0..6)];
            if seen.insert(cell) {
                codes.iter_mut().zip(cell).for_each(|(c, g)| c.push(g));
            }
        }
        codes
    };
    let nested: Vec<Vec<i32>> = {
        let a: Vec<i32> = (0..300).map(|i| i % 10).collect();
        let b: Vec<i32> = a.iter().map(|&g| 3 * g + rng.random_range(0..3)).collect();
        vec![a, b]
    };
    let designs = [
        ("crossed", crossed, vec![14, 9], vec![0.6, 0.3]),
        ("three crossed", three, vec![12, 8, 6], vec![0.5, 0.4, 0.3]),
        ("nested", nested, vec![10, 30], vec![0.4, 0.3]),
    ];
    for (name, codes, n_levels, s2) in designs {
        let rows = poisson_rows(codes, &n_levels, &[0.8, 0.4], &s2, 7);
        for pieces in [1, 3] {
            let fit = fit_glmm(&rows.chunks(pieces), poisson(), &GlmmOptions::default(), &pool, &mut || true).unwrap();
            assert!(fit.variances.iter().all(|&v| v > 0.02), "{name}: {:?}", fit.variances);
            let want = dense_quasi_score(&rows, poisson(), &fit.coef, &fit.variances, false);
            for j in 0..2 {
                assert!(
                    (fit.coef[j] - want[j]).abs() < 1e-8,
                    "{name}, {pieces} chunks: b{j} {} against dense {} (difference {:e})",
                    fit.coef[j],
                    want[j],
                    fit.coef[j] - want[j]
                );
            }
            if name == "crossed" && pieces == 1 {
                let one_level = dense_quasi_score(&rows, poisson(), &fit.coef, &fit.variances, true);
                assert!((one_level[0] - want[0]).abs() > 1e-3, "{one_level:?} against {want:?}");
            }
        }
    }
}

/// The model-based covariance of fixed effects estimated elsewhere (the crossed likelihood
/// fit) against dense algebra: `J^-1 (X'D V^-1 D X + J_s V_s J_s') J^-T` with `J = -X'D V^-1 D X`
/// and `J_s = -X'D V^-1 d mu / d s2_k` (the working weights frozen).
#[test]
fn fixed_effects_covariance_at_given_estimates_matches_dense_algebra() {
    use fullrandom_core::glmm::fixed_effects_covariance_at;
    let pool = thread_pool(2).unwrap();
    for (fam, trials) in [(binomial(), 1u64), (poisson(), 1)] {
        let rows = simulate(fam, 300, &[20, 12], &[-0.3, 0.4], &[0.6, 0.3], trials, 29);
        let n = rows.n();
        let (b, s2) = ([-0.25, 0.35], [0.5, 0.2]);
        let v_s = faer::Mat::<f64>::from_fn(2, 2, |r, c| if r == c { 0.8 - 0.3 * r as f64 } else { 0.2 });
        let got = fixed_effects_covariance_at(&rows.chunks(3), fam, &b, &s2, &v_s, &pool, &mut || true).unwrap();
        let (_, d, v) = dense_working(&rows, fam, &b, &s2, false);
        let xs = |i: usize, j: usize| if j == 0 { 1.0 } else { rows.x[i] };
        // X'D V^-1 applied to a vector, per column of X.
        let weighted: Vec<Vec<f64>> = (0..2)
            .map(|j| fullrandom_core::dense::solve(&v, &(0..n).map(|i| d[i] * xs(i, j)).collect::<Vec<_>>()))
            .collect();
        let info = faer::Mat::<f64>::from_fn(2, 2, |r, c| (0..n).map(|i| weighted[r][i] * d[i] * xs(i, c)).sum());
        let eta0: Vec<f64> = (0..n).map(|i| b[0] + b[1] * rows.x[i] + rows.offset_at(i)).collect();
        let h = 1e-5;
        let total: f64 = s2.iter().sum();
        let (up, down) = (marginal_mean(&fam, total + h, &eta0), marginal_mean(&fam, total - h, &eta0));
        let dmu: Vec<f64> = (0..n).map(|i| rows.trials_at(i) * (up[i] - down[i]) / (2.0 * h)).collect();
        let js_col: Vec<f64> = (0..2).map(|r| -(0..n).map(|i| weighted[r][i] * dmu[i]).sum::<f64>()).collect();
        // Every variance moves the marginal mean through the total variance alike.
        let j_s = faer::Mat::<f64>::from_fn(2, 2, |r, _| js_col[r]);
        let inv = fullrandom_core::dense::inverse(&info, "information").unwrap();
        let want = &inv * (&info + &j_s * &v_s * j_s.transpose()) * &inv;
        // The variances' part is not negligible here (so leaving it out would fail).
        assert!(want[(0, 0)] > 1.01 * inv[(0, 0)], "{:?}: {} against {}", fam.distribution, want[(0, 0)], inv[(0, 0)]);
        for r in 0..2 {
            for c in 0..2 {
                let scale = (want[(r, r)] * want[(c, c)]).sqrt();
                assert!(
                    (got[(r, c)] - want[(r, c)]).abs() < 1e-4 * scale,
                    "{:?} ({r}, {c}): {} against dense {}",
                    fam.distribution,
                    got[(r, c)],
                    want[(r, c)]
                );
            }
        }
    }
}

#[test]
fn modes_at_the_estimates_are_the_fits_modes_over_any_chunks() {
    let pool = thread_pool(2).unwrap();
    for fam in [binomial(), poisson()] {
        let rows = simulate(fam, 3000, &[60, 40], &[-0.5, 0.5], &[0.5, 0.3], 4, 12);
        let fit = fit_glmm(&rows.chunks(1), fam, &GlmmOptions::default(), &pool, &mut || true).unwrap();
        for pieces in [1, 7] {
            let (modes, iterations) =
                modes_at(&rows.chunks(pieces), fam, &fit.coef, &fit.variances, &pool, &mut || true).unwrap();
            assert!(iterations > 0);
            for (u, v) in modes.iter().zip(&fit.ranef) {
                for (a, b) in u.iter().zip(v) {
                    assert!((a - b).abs() < 1e-8, "mode {a} vs {b}");
                }
            }
        }
        let bad = modes_at(&rows.chunks(1), fam, &fit.coef, &[0.5], &pool, &mut || true);
        assert!(bad.is_err());
    }
}

#[test]
fn a_fit_stops_when_asked_between_passes() {
    let pool = thread_pool(2).unwrap();
    let rows = simulate(binomial(), 3000, &[60, 40], &[-0.5, 0.5], &[0.5, 0.3], 1, 13);
    let mut calls = 0;
    let out = fit_glmm(&rows.chunks(3), binomial(), &GlmmOptions::default(), &pool, &mut || {
        calls += 1;
        calls < 3
    });
    assert!(matches!(out, Err(fullrandom_core::FitError::Interrupted)), "{:?}", out.err());
    assert_eq!(calls, 3);
}
