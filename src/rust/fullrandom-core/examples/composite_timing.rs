// Times the crossed Bernoulli likelihood fit (fit_composite, method = "efficient") from
// the moment estimates, on glmm_timing's design (Zipf users and items, N/160 users, N/380
// items). Development aid:
//   cargo run --release --example composite_timing -- <rows> <threads>
use fullrandom_core::composite::{fit_composite, CompositeOptions};
use fullrandom_core::family::GlmFamily;
use fullrandom_core::glmm::{fit_glmm, GlmmOptions};
use fullrandom_core::*;
use std::time::Instant;

mod common;
use common::CrossedBernoulli;

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).map(|s| s.parse().unwrap()).unwrap_or(default);
    let n = arg(1, 20_000);
    let threads = arg(2, 2);
    let data = CrossedBernoulli::new(n);
    let (users, items) = (data.users, data.items);
    let chunk = data.chunk();
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
