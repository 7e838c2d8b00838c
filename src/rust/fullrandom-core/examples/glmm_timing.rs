// Times a crossed Bernoulli GLMM fit (fit_glmm) on a design shaped like bench/scale.R's:
// Zipf users and items, N/160 users, N/380 items, logit P(y = 1) = -1 + 0.5 x + u + v,
// sd(u) = 1, sd(v) = 0.5. Prints the estimates and the fit's stage timings.
// Development aid:
//   cargo run --release --example glmm_timing -- <rows> <threads> [subsample_above] [dump] [information]
// With `dump` (a file name), every estimate is written there, one number a line at full
// precision, to compare fits before and after a change of the code; `information`: the
// second step with information weights (otherwise the simple weights alone).
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
        weights: if std::env::args().nth(5).as_deref() == Some("information") {
            glmm::LevelWeights::Information
        } else {
            glmm::LevelWeights::Simple
        },
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
    if let Some(path) = std::env::args().nth(4) {
        let matrix = |m: &faer::Mat<f64>| {
            (0..m.nrows()).flat_map(|r| (0..m.ncols()).map(move |c| m[(r, c)])).collect::<Vec<_>>()
        };
        let mut out = String::new();
        let mut section = |name: &str, values: &[f64]| {
            for v in values {
                out.push_str(&format!("{name} {v:e}\n"));
            }
        };
        section("coef", &fit.coef);
        section("variances", &fit.variances);
        section("vcov", &matrix(&fit.vcov));
        section("vcov_model", &fit.vcov_model.as_ref().map(matrix).unwrap_or_default());
        section("vcov_variances", &matrix(&fit.vcov_variances));
        section("ranef", &fit.ranef.concat());
        std::fs::write(path, out).unwrap();
    }
}
