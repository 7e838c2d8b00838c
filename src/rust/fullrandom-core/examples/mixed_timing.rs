// Times the steps of a fit on a simulated crossed design (development aid).
use fullrandom_core::*;
use ndarray::{ArrayView2, ShapeBuilder};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(73_000);
    let ga = (n / 25).max(10);
    let gb = (n / 65).max(10);
    let mut state = 12345u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // power-law-ish levels
    let a: Vec<i32> = (0..n).map(|_| { let u = (next() % 1_000_000) as f64 / 1e6; ((u * u) * ga as f64) as i32 }).collect();
    let b: Vec<i32> = (0..n).map(|_| { let u = (next() % 1_000_000) as f64 / 1e6; ((u * u * u) * gb as f64) as i32 }).collect();
    let ua: Vec<f64> = (0..ga).map(|_| (next() % 1000) as f64 / 1000.0 - 0.5).collect();
    let ub: Vec<f64> = (0..gb).map(|_| (next() % 1000) as f64 / 1000.0 - 0.5).collect();
    let x: Vec<f64> = (0..n).map(|_| (next() % 1000) as f64 / 1000.0).collect();
    let y: Vec<f64> = (0..n).map(|i| 1.0 + 0.5 * x[i] + ua[a[i] as usize] + ub[b[i] as usize] + (next() % 1000) as f64 / 500.0 - 1.0).collect();
    let mut xm = vec![1.0; n];
    xm.extend_from_slice(&x);
    let data = ModelData {
        y: &y,
        x: ArrayView2::from_shape((n, 2).f(), &xm).unwrap(),
        x_names: vec!["(Intercept)".into(), "x".into()],
        intercept: Some(0),
        factors: vec![
            FactorCodes { name: "a".into(), codes: &a, offset: 0, n_levels: ga },
            FactorCodes { name: "b".into(), codes: &b, offset: 0, n_levels: gb },
        ],
    };
    let threads: usize = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(2);
    let pool = thread_pool(threads).unwrap();
    let t = Instant::now();
    let stats = pool.install(|| SufficientStats::compute(&data)).unwrap();
    let t_stats = t.elapsed();
    let t = Instant::now();
    let ols = ols_from_stats(&stats).unwrap();
    let eq = MomentEquations::from_stats(&stats, &ols).unwrap();
    let vc = fit_variance_components(&eq).unwrap();
    let t_moments = t.elapsed();
    let t = Instant::now();
    let mixed = solve_mixed_model(&stats, &ols, &vc, &pool, &mut || true).unwrap();
    let t_mixed = t.elapsed();
    let cells: usize = stats.cells.iter().map(|c| c.cols.len()).sum();
    println!("n {n}, levels {ga} x {gb}, cells {cells}: stats {t_stats:?}, moments {t_moments:?}, mixed {t_mixed:?} ({} iterations, residual {:e}), theta {:?}", mixed.iterations, mixed.relative_residual, vc.estimate);
}
