// Times the steps of pigeonhole bootstrap replicates on InstEval, read from a CSV of
// y, service (0/1), s, d, dept (codes from 1), and shows what looser mixed-model accuracies
// do to the replicates' fixed effects and iterations (how Accuracy::REPLICATE was chosen).
// Development aid:
//   Rscript -e 'd <- lme4::InstEval; write.table(data.frame(d$y, d$service == "1", as.integer(d$s),
//     as.integer(d$d), as.integer(d$dept)) * 1, "insteval.csv", sep = ",", row.names = FALSE, col.names = FALSE)'
//   cargo run --release --example bootstrap_timing -- insteval.csv <replicates>
use fullrandom_core::bootstrap::{fit_replicate, Estimator, Pigeonhole};
use fullrandom_core::*;
use std::time::{Duration, Instant};

fn main() {
    let path = std::env::args().nth(1).expect("a CSV file");
    let replicates: u64 = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(20);
    let text = std::fs::read_to_string(path).unwrap();
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); 5];
    for line in text.lines() {
        for (c, v) in line.split(',').enumerate() {
            cols[c].push(v.parse().unwrap());
        }
    }
    let codes: Vec<Vec<i32>> = cols[2..].iter().map(|c| c.iter().map(|&v| v as i32).collect()).collect();
    let levels: Vec<usize> = codes.iter().map(|c| *c.iter().max().unwrap() as usize).collect();
    let data = ModelData {
        y: &cols[0],
        x: vec![FixedColumn::Ones, FixedColumn::Values(&cols[1])],
        x_names: vec!["(Intercept)".into(), "service".into()],
        intercept: Some(0),
        factors: ["s", "d", "dept"]
            .iter()
            .zip(&codes)
            .zip(&levels)
            .map(|((name, c), &g)| FactorCodes { name: name.to_string(), codes: c, offset: 1, n_levels: g })
            .collect(),
    };
    let pool = thread_pool(1).unwrap();
    let stats = pool.install(|| SufficientStats::compute(&data)).unwrap();
    let t = Instant::now();
    let ols = ols_from_stats(&stats).unwrap();
    let comp = fit_variance_components(&MomentEquations::from_stats(&stats, &ols).unwrap()).unwrap();
    let mixed = solve_mixed_model(&stats, &ols, &comp, &pool, &mut || true).unwrap();
    println!("one fit from statistics: {:?}, {} iterations", t.elapsed(), mixed.iterations);
    let boot = Pigeonhole::new(&data, stats).unwrap();
    let (mut t_draw, mut t_stats, mut t_fit) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    // Inside the pool, as Pigeonhole::run fits replicates.
    pool.install(|| {
        for b in 0..replicates {
            let t = Instant::now();
            let w = boot.draw(1, b);
            t_draw += t.elapsed();
            let t = Instant::now();
            let rs = boot.replicate(&w, false).unwrap();
            t_stats += t.elapsed();
            let t = Instant::now();
            let _ = fit_replicate(&rs, &Estimator::Moments, &pool).unwrap();
            t_fit += t.elapsed();
        }
    });
    let per = |d: Duration| d / replicates as u32;
    println!("per replicate: draw {:?}, statistics {:?}, fit {:?}", per(t_draw), per(t_stats), per(t_fit));
    let rs = boot.replicate_statistics(&boot.draw(1, 0)).unwrap();
    let t = Instant::now();
    let ols = ols_from_stats(&rs).unwrap();
    let eq = MomentEquations::from_stats(&rs, &ols).unwrap();
    let comp = fit_variance_components(&eq).unwrap();
    println!("components {:?}", t.elapsed());
    let t = Instant::now();
    let mixed = solve_mixed_model_to(&rs, None, &ols, &comp, Accuracy::REPLICATE, &pool, &mut || true).unwrap();
    println!("mixed, expanded levels {:?}, {} iterations", t.elapsed(), mixed.iterations);
    let both = boot.replicate(&boot.draw(1, 0), false).unwrap();
    let t = Instant::now();
    let summed =
        solve_mixed_model_to(&both.summed, Some(&both.copies), &ols, &comp, Accuracy::REPLICATE, &pool, &mut || true)
            .unwrap();
    println!(
        "mixed, summed over copies {:?}, {} iterations, coefficients {:?} against {:?}",
        t.elapsed(),
        summed.iterations,
        summed.coef,
        mixed.coef
    );
    let k = rs.n_factors();
    let lambda: Vec<Option<f64>> = (0..k).map(|j| Some(comp.estimate[k] / comp.estimate[j])).collect();
    let t = Instant::now();
    let system = pool.install(|| fullrandom_core::mixed::RandomEffectsMatrix::new(&rs, &lambda));
    println!("setting up C: {:?} ({} levels)", t.elapsed(), system.size());
    for (cg, mme) in [(1e-6, 1e-4), (1e-5, 1e-3), (1e-4, 1e-2), (1e-3, 1e-1), (1e-2, 1.0)] {
        compare(&boot, &pool, cg, mme);
    }
}

/// The largest change of the coefficients from `Accuracy::FIT` to a looser accuracy, and
/// the iterations that accuracy takes, over ten replicates.
fn compare(boot: &Pigeonhole, pool: &rayon::ThreadPool, cg: f64, mme: f64) {
    let mut worst = vec![0.0f64; 2];
    let mut iters = 0;
    let t = Instant::now();
    for b in 0..10 {
        let rs = boot.replicate_statistics(&boot.draw(7, b)).unwrap();
        let ols = ols_from_stats(&rs).unwrap();
        let comp = fit_variance_components(&MomentEquations::from_stats(&rs, &ols).unwrap()).unwrap();
        let tight = solve_mixed_model_to(&rs, None, &ols, &comp, Accuracy::FIT, pool, &mut || true).unwrap();
        let loose = solve_mixed_model_to(&rs, None, &ols, &comp, Accuracy { cg, mme }, pool, &mut || true);
        match loose {
            Ok(loose) => {
                iters += loose.iterations;
                for j in 0..2 {
                    worst[j] = worst[j].max((tight.coef[j] - loose.coef[j]).abs());
                }
            }
            Err(e) => println!("cg {cg}: {e}"),
        }
    }
    println!(
        "cg {cg:e} mme {mme:e}: largest coefficient changes {worst:?}, mean iterations {}, {:?} for 10 (both accuracies)",
        iters as f64 / 10.0,
        t.elapsed()
    );
}
