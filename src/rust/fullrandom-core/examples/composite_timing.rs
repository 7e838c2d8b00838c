// Times the crossed Bernoulli likelihood fit (fit_composite, method = "efficient") from
// the moment estimates, on glmm_timing's design (Zipf users and items, N/160 users, N/380
// items). Development aid:
//   cargo run --release --example composite_timing -- <rows> <threads>
use fullrandom_core::composite::{fit_composite, CompositeOptions};
use fullrandom_core::family::GlmFamily;
use fullrandom_core::glmm::{fit_glmm, GlmmChunk, GlmmOptions};
use fullrandom_core::*;
use std::time::Instant;

mod common;
use common::{uniforms, zipf_codes};

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).map(|s| s.parse().unwrap()).unwrap_or(default);
    let n = arg(1, 20_000);
    let threads = arg(2, 2);
    let (users, items) = ((n / 160).max(2), (n / 380).max(2));
    let mut next = uniforms();
    let normal = |next: &mut dyn FnMut() -> f64| {
        let (a, b) = (next().max(1e-300), next());
        (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
    };
    let user = zipf_codes(n, users, &mut next);
    let item = zipf_codes(n, items, &mut next);
    let x: Vec<f64> = (0..n).map(|_| normal(&mut next)).collect();
    let a: Vec<f64> = (0..users).map(|_| normal(&mut next)).collect();
    let b: Vec<f64> = (0..items).map(|_| 0.5 * normal(&mut next)).collect();
    let y: Vec<f64> = (0..n)
        .map(|i| {
            let eta = -1.0 + 0.5 * x[i] + a[user[i] as usize] + b[item[i] as usize];
            f64::from(next() < 1.0 / (1.0 + (-eta).exp()))
        })
        .collect();
    let chunk = GlmmChunk {
        data: ModelData {
            y: &y,
            x: vec![FixedColumn::Ones, FixedColumn::Values(&x)],
            x_names: vec!["(Intercept)".into(), "x".into()],
            intercept: Some(0),
            factors: vec![
                FactorCodes { name: "user".into(), codes: &user, offset: 0, n_levels: users },
                FactorCodes { name: "item".into(), codes: &item, offset: 0, n_levels: items },
            ],
        },
        trials: None,
        offset: None,
    };
    let pool = thread_pool(threads).unwrap();
    let family = GlmFamily::from_names("binomial", "logit").unwrap();
    let options = GlmmOptions { modes: false, ..GlmmOptions::default() };
    let chunks = std::slice::from_ref(&chunk);
    let start = Instant::now();
    let moments = fit_glmm(chunks, family, &options, &pool, &mut || true).unwrap();
    let t_moments = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let fit = fit_composite(
        chunks,
        family,
        &moments.coef,
        &moments.variances,
        &CompositeOptions { nodes: arg(3, 15), ..CompositeOptions::default() },
        &pool,
        &mut || true,
    )
    .unwrap();
    let total = start.elapsed().as_secs_f64();
    println!("rows {n} users {users} items {items} threads {threads}: moments {t_moments:.3} s, composite {total:.3} s, {} iterations", fit.iterations);
    println!("coef {:?} sd {:?}", fit.coef, fit.variances.iter().map(|v| v.sqrt()).collect::<Vec<_>>());
}
