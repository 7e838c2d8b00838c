// Times the steps of a fit (the sufficient statistics and, inside them, the cell counts;
// the moment equations; the mixed-model equations) on a crossed design shaped like
// bench/scale.R's: Zipf users and items, N/160 users, N/380 items. Development aid:
//   cargo run --release --example fit_timing -- <rows> <threads>
use fullrandom_core::grouping::CellCounts;
use fullrandom_core::*;
use std::time::Instant;

mod common;
use common::{uniforms, zipf_codes};

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).map(|s| s.parse().unwrap()).unwrap_or(default);
    let n = arg(1, 10_000_000);
    let threads = arg(2, 2);
    let (users, items) = ((n / 160).max(2), (n / 380).max(2));
    let mut next = uniforms();
    let user = zipf_codes(n, users, &mut next);
    let item = zipf_codes(n, items, &mut next);
    let x: Vec<f64> = (0..n).map(|_| next() - 0.5).collect();
    let a: Vec<f64> = (0..users).map(|_| next() - 0.5).collect();
    let b: Vec<f64> = (0..items).map(|_| 0.8 * (next() - 0.5)).collect();
    let y: Vec<f64> =
        (0..n).map(|i| 3.5 + 0.2 * x[i] + a[user[i] as usize] + b[item[i] as usize] + 2.0 * next()).collect();
    let data = ModelData {
        y: &y,
        x: vec![FixedColumn::Ones, FixedColumn::Values(&x)],
        x_names: vec!["(Intercept)".into(), "x".into()],
        intercept: Some(0),
        factors: vec![
            FactorCodes { name: "user".into(), codes: &user, offset: 0, n_levels: users },
            FactorCodes { name: "item".into(), codes: &item, offset: 0, n_levels: items },
        ],
    };
    let pool = thread_pool(threads).unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let stats = pool.install(|| SufficientStats::compute(&data)).unwrap();
        let t_stats = t.elapsed();
        let t = Instant::now();
        let cells = pool.install(|| CellCounts::count(&data.factors[0], &data.factors[1]));
        let t_count = t.elapsed();
        let t = Instant::now();
        let ols = ols_from_stats(&stats).unwrap();
        let eq = MomentEquations::from_stats(&stats, &ols).unwrap();
        let vc = fit_variance_components(&eq).unwrap();
        let t_moments = t.elapsed();
        let t = Instant::now();
        let mixed = solve_mixed_model(&stats, &ols, &vc, &pool, &mut || true).unwrap();
        let t_mixed = t.elapsed();
        println!(
            "n {n}, {users} x {items}, cells {}, threads {threads}: stats {t_stats:.2?} (of which cells {t_count:.2?}), moments {t_moments:.2?}, mixed {t_mixed:.2?} ({} it), theta {:.4?}",
            cells.cols.len(), mixed.iterations,
            vc.estimate
        );
    }
}
