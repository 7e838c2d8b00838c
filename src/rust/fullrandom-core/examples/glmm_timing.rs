// Times a crossed Bernoulli GLMM fit (fit_glmm) on a design shaped like bench/scale.R's:
// Zipf users and items, N/160 users, N/380 items, logit P(y = 1) = -1 + 0.5 x + u + v,
// sd(u) = 1, sd(v) = 0.5. Prints the estimates and the fit's stage timings.
// Development aid:
//   cargo run --release --example glmm_timing -- <rows> <threads> [subsample_above]
use fullrandom_core::family::GlmFamily;
use fullrandom_core::glmm::{fit_glmm, GlmmOptions};
use fullrandom_core::*;
use std::time::Instant;

mod common;
use common::CrossedBernoulli;

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).map(|s| s.parse().unwrap()).unwrap_or(default);
    let n = arg(1, 100_000);
    let threads = arg(2, 2);
    let data = CrossedBernoulli::new(n);
    let (users, items) = (data.users, data.items);
    let chunk = data.chunk();
    let pool = thread_pool(threads).unwrap();
    let defaults = GlmmOptions::default();
    let options = GlmmOptions {
        weights: glmm::LevelWeights::Simple,
        subsample_above: arg(3, defaults.subsample_above),
        ..defaults
    };
    let start = Instant::now();
    let fit = fit_glmm(
        std::slice::from_ref(&chunk),
        GlmFamily::from_names("binomial", "logit").unwrap(),
        &options,
        &pool,
        &mut || true,
    )
    .unwrap();
    let total = start.elapsed().as_secs_f64();
    println!(
        "rows {n} users {users} items {items} threads {threads}: {total:.3} s ({:.0} ns a row)",
        total / n as f64 * 1e9
    );
    println!("coef {:?} sd {:?}", fit.coef, fit.variances.iter().map(|v| v.sqrt()).collect::<Vec<_>>());
    println!(
        "iterations newton {} working {} pirls {}; passes {:?}",
        fit.iterations, fit.working_iterations, fit.pirls_iterations, fit.passes
    );
    for (stage, seconds) in &fit.timings {
        println!("  {stage:<28} {seconds:8.3} s");
    }
}
