// Times the steps of a random-slope fit `y ~ x + (1 + x | user) + (1 | item)` (statistics,
// moment equations, their solution, Henderson's equations) beside the intercept-only fit
// of the same data, on a crossed design shaped like bench/scale.R's: Zipf users and items,
// N/160 users, N/380 items. Development aid:
//   cargo run --release --example slope_timing -- <rows> <threads>
use fullrandom_core::slopes::*;
use fullrandom_core::*;
use std::time::Instant;

mod common;
use common::{uniforms, zipf_codes};

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).map(|s| s.parse().unwrap()).unwrap_or(default);
    let n = arg(1, 1_000_000);
    let threads = arg(2, 2);
    let (users, items) = ((n / 160).max(2), (n / 380).max(2));
    let mut next = uniforms();
    let user = zipf_codes(n, users, &mut next);
    let item = zipf_codes(n, items, &mut next);
    let x: Vec<f64> = (0..n).map(|_| next() - 0.5).collect();
    let a: Vec<f64> = (0..users).map(|_| next() - 0.5).collect();
    let s: Vec<f64> = (0..users).map(|_| 0.6 * (next() - 0.5)).collect();
    let b: Vec<f64> = (0..items).map(|_| 0.8 * (next() - 0.5)).collect();
    let y: Vec<f64> = (0..n)
        .map(|i| {
            let g = user[i] as usize;
            3.5 + 0.2 * x[i] + a[g] + s[g] * x[i] + b[item[i] as usize] + 2.0 * next()
        })
        .collect();
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
    let slope_data = SlopeData {
        y: &y,
        x: vec![FixedColumn::Ones, FixedColumn::Values(&x)],
        terms: vec![
            SlopeTerm {
                name: "user".into(),
                codes: &user,
                offset: 0,
                n_levels: users,
                z: vec![FixedColumn::Ones, FixedColumn::Values(&x)],
            },
            SlopeTerm { name: "item".into(), codes: &item, offset: 0, n_levels: items, z: vec![FixedColumn::Ones] },
        ],
    };
    let pool = thread_pool(threads).unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let stats = pool.install(|| SufficientStats::compute(&data)).unwrap();
        let ols = ols_from_stats(&stats).unwrap();
        let eq = MomentEquations::from_stats(&stats, &ols).unwrap();
        let vc = fit_variance_components(&eq).unwrap();
        let mixed = solve_mixed_model(&stats, &ols, &vc, &pool, &mut || true).unwrap();
        let t_int = t.elapsed();
        let t = Instant::now();
        let st = pool.install(|| SlopeStats::compute(&slope_data)).unwrap();
        let t_stats = t.elapsed();
        let t = Instant::now();
        let seq = slope_equations(&st).unwrap();
        let t_eq = t.elapsed();
        let t = Instant::now();
        let qs: Vec<usize> = st.terms.iter().map(|t| t.q).collect();
        let comp = solve_components(&seq, &qs).unwrap();
        let t_comp = t.elapsed();
        let t = Instant::now();
        let sm = solve_slope_mixed(&st, &seq, &comp.estimate, &pool, &mut || true).unwrap();
        let t_mixed = t.elapsed();
        let total = t_stats + t_eq + t_comp + t_mixed;
        println!(
            "n {n}, {users} x {items}, threads {threads}: intercepts {t_int:.2?} ({} it); slopes {total:.2?} = stats {t_stats:.2?} + equations {t_eq:.2?} + solve {t_comp:.2?} + mixed {t_mixed:.2?} ({} it); ratio {:.2}; cells {}, theta {:.4?}",
            mixed.iterations,
            sm.iterations,
            total.as_secs_f64() / t_int.as_secs_f64(),
            st.pairs[0].rows.len(),
            comp.estimate
        );
    }
}
