//! The sufficient statistics: exact merging over row chunks, independence of the
//! number of threads, and invariance to the location of the response and covariates.

mod common;

use common::*;
use fullrandom_core::stats::ROW_BLOCK;
use fullrandom_core::{fit, fit_from_stats, FitError, MomentFit, Shift, SufficientStats};
use rand::Rng;

/// `|a - b| <= tol * max(|b|, scale)`.
fn close(a: f64, b: f64, scale: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(scale)
}

/// Every float of `got` within `tol` of `want`, relative to the element or, for
/// elements that may be near zero, to `floor` times the largest element of the vector.
fn assert_vec_close(got: &[f64], want: &[f64], floor: f64, tol: f64, what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let e = worst_rel(got, want, floor);
    assert!(e <= tol, "{what}: relative difference {e:.2e}\n got  {got:?}\n want {want:?}");
    e
}

/// `|got_i - want_i| <= tol * max(|want_i|, scale_i)`, returning the worst ratio
/// `|got_i - want_i| / max(|want_i|, scale_i)`.
fn assert_scaled(got: &[f64], want: &[f64], scale: &[f64], tol: f64, what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 0.0f64;
    for i in 0..got.len() {
        let e = rel_floor(got[i], want[i], scale[i]);
        assert!(e <= tol, "{what}[{i}]: {} vs {} (scale {}, relative difference {e:.2e})", got[i], want[i], scale[i]);
        worst = worst.max(e);
    }
    worst
}

/// Compares two sets of statistics: integers exactly, floats to `tol` relative. A sum of
/// signed terms (1'y~ is about 0 after the shift) is compared relative to the
/// Cauchy-Schwarz bound on the sum of its absolute terms, e.g. sqrt(x'x y'y) for x'y.
fn assert_stats_close(got: &SufficientStats, want: &SufficientStats, tol: f64, what: &str) -> f64 {
    assert_eq!(got.n_obs, want.n_obs, "{what}: n_obs");
    assert_eq!(got.shift, want.shift, "{what}: shift");
    assert_eq!(got.x_names, want.x_names);
    assert_eq!(got.factor_names, want.factor_names);
    assert_eq!(got.intercept, want.intercept);
    assert_eq!(got.cells, want.cells, "{what}: cell counts");
    let p = want.n_fixed();
    let n = want.n_obs as f64;
    let xx: Vec<f64> = (0..p).map(|j| want.xtx[j * p + j]).collect();
    let yy = want.yty;
    let mut worst = 0.0f64;
    let s: Vec<f64> = (0..p * p).map(|ij| (xx[ij / p] * xx[ij % p]).sqrt()).collect();
    worst = worst.max(assert_scaled(&got.xtx, &want.xtx, &s, tol, &format!("{what}: X'X")));
    let s: Vec<f64> = xx.iter().map(|v| (v * yy).sqrt()).collect();
    worst = worst.max(assert_scaled(&got.xty, &want.xty, &s, tol, &format!("{what}: X'y")));
    let s: Vec<f64> = xx.iter().map(|v| (v * n).sqrt()).collect();
    worst = worst.max(assert_scaled(&got.sum_x, &want.sum_x, &s, tol, &format!("{what}: 1'X")));
    worst = worst.max(assert_scaled(&[got.sum_y], &[want.sum_y], &[(n * yy).sqrt()], tol, &format!("{what}: 1'y")));
    worst = worst.max(assert_scaled(&[got.yty], &[want.yty], &[0.0], tol, &format!("{what}: y'y")));
    for (k, (a, b)) in got.levels.iter().zip(&want.levels).enumerate() {
        assert_eq!(a.counts, b.counts, "{what}: counts of factor {k}");
        let g = b.n_levels();
        let s: Vec<f64> = b.counts.iter().map(|&c| (c as f64 * yy).sqrt()).collect();
        worst = worst.max(assert_scaled(&a.sum_y, &b.sum_y, &s, tol, &format!("{what}: level sums of y, factor {k}")));
        let s: Vec<f64> = (0..g * p).map(|jg| (b.counts[jg % g] as f64 * xx[jg / g]).sqrt()).collect();
        worst = worst.max(assert_scaled(&a.sum_x, &b.sum_x, &s, tol, &format!("{what}: level sums of X, factor {k}")));
    }
    worst
}

/// Compares two fits: equations, OLS and components to `tol` relative (components that
/// are near zero relative to a thousandth of the largest).
fn assert_fits_close(got: &MomentFit, want: &MomentFit, tol: f64, what: &str) -> f64 {
    assert_eq!(got.ols.kept, want.ols.kept, "{what}: kept columns");
    assert_eq!(got.components.at_boundary, want.components.at_boundary, "{what}: boundary");
    let flat = |f: &MomentFit| lhs_rows(&f.equations.lhs).concat();
    let mut worst = 0.0f64;
    worst = worst.max(assert_vec_close(&flat(got), &flat(want), 0.0, tol, &format!("{what}: lhs")));
    worst = worst.max(assert_vec_close(&got.equations.q, &want.equations.q, 0.0, tol, &format!("{what}: q")));
    worst = worst.max(assert_vec_close(&got.components.raw, &want.components.raw, 1e-3, tol, &format!("{what}: raw")));
    worst = worst.max(assert_vec_close(
        &got.components.estimate,
        &want.components.estimate,
        1e-3,
        tol,
        &format!("{what}: estimate"),
    ));
    worst = worst.max(assert_vec_close(&got.ols.coef, &want.ols.coef, 1e-6, tol, &format!("{what}: coef")));
    assert!(close(got.ols.rss, want.ols.rss, 0.0, tol), "{what}: rss");
    worst
}

fn merge_all(parts: &[SufficientStats]) -> SufficientStats {
    let mut it = parts.iter();
    let first = it.next().unwrap().clone();
    it.fold(first, |acc, s| acc.merge(s).unwrap())
}

/// Splits `0..n` into `k` contiguous chunks of unequal sizes.
fn contiguous_chunks(n: usize, k: usize) -> Vec<Vec<usize>> {
    // Cut points at (i^2 / k^2) n: small chunks first, large ones last.
    let cuts: Vec<usize> = (0..=k).map(|i| i * i * n / (k * k)).collect();
    (0..k).map(|i| (cuts[i]..cuts[i + 1]).collect()).filter(|c: &Vec<usize>| !c.is_empty()).collect()
}

/// A random partition of `0..n` into `k` non-empty interleaved parts.
fn random_partition(n: usize, k: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut r = rng(seed);
    let mut parts = vec![Vec::new(); k];
    for i in 0..n {
        let part = if i < k { i } else { r.random_range(0..k) };
        parts[part].push(i);
    }
    parts
}

#[test]
fn merged_chunk_statistics_give_the_whole_fit() {
    let mut worst_stats = 0.0f64;
    let mut worst_fit = 0.0f64;
    let mut chunk_lacked_a_level = false;
    let designs: Vec<Design> =
        (0..4u64).map(|s| crossed_nested_design(500 + s, true)).chain([crossed_design(8, 400, 20, 9)]).collect();
    for (case, d) in designs.iter().enumerate() {
        let whole_data = d.data();
        let shift = Shift::pilot(&whole_data);
        let whole = SufficientStats::compute(&whole_data).unwrap();
        let whole_fit = fit(&whole_data, 1).unwrap();
        let splits = [
            ("2 chunks", contiguous_chunks(d.n(), 2)),
            ("7 chunks", contiguous_chunks(d.n(), 7)),
            ("7 interleaved parts", random_partition(d.n(), 7, 31 + case as u64)),
        ];
        for (name, parts) in splits {
            let what = format!("design {case}, {name}");
            let stats: Vec<SufficientStats> = parts
                .iter()
                .map(|rows| {
                    let chunk = d.subset(rows);
                    for f in &chunk.factors {
                        let mut seen = vec![false; f.n_levels];
                        (0..chunk.n()).for_each(|i| seen[f.level(i)] = true);
                        chunk_lacked_a_level |= seen.iter().any(|s| !s);
                    }
                    SufficientStats::compute_with_shift(&chunk.data(), shift.clone()).unwrap()
                })
                .collect();
            let merged = merge_all(&stats);
            worst_stats = worst_stats.max(assert_stats_close(&merged, &whole, 1e-10, &what));
            let merged_fit = fit_from_stats(&merged, 1).unwrap();
            worst_fit = worst_fit.max(assert_fits_close(&merged_fit, &whole_fit, 1e-10, &what));
            // Merging in the reverse order gives the same fit.
            let reversed: Vec<SufficientStats> = stats.into_iter().rev().collect();
            let reversed_fit = fit_from_stats(&merge_all(&reversed), 2).unwrap();
            assert_fits_close(&reversed_fit, &whole_fit, 1e-10, &format!("{what}, reversed"));
        }
    }
    assert!(chunk_lacked_a_level, "the test must include chunks that lack some levels");
    println!("merge: worst relative difference of statistics {worst_stats:.2e}, of fits {worst_fit:.2e}");
}

#[test]
fn statistics_of_different_models_do_not_merge() {
    let d = crossed_design(3, 200, 10, 6);
    let (first, rest): (Vec<usize>, Vec<usize>) = ((0..100).collect(), (100..200).collect());
    let shift = Shift::pilot(&d.data());
    let a = SufficientStats::compute_with_shift(&d.subset(&first).data(), shift.clone()).unwrap();

    // A different shift.
    let other_shift = Shift { y: shift.y + 1.0, ..shift.clone() };
    let b = SufficientStats::compute_with_shift(&d.subset(&rest).data(), other_shift).unwrap();
    match a.merge(&b) {
        Err(FitError::Incompatible(m)) => assert!(m.contains("shift"), "{m}"),
        other => panic!("different shifts merged: {other:?}"),
    }

    // A different number of levels of `b`.
    let mut chunk = d.subset(&rest);
    chunk.factors[1].n_levels += 1;
    let b = SufficientStats::compute_with_shift(&chunk.data(), shift.clone()).unwrap();
    match a.merge(&b) {
        Err(FitError::Incompatible(m)) => assert!(m.contains("'b'"), "names the factor: {m}"),
        other => panic!("different level counts merged: {other:?}"),
    }

    // Different factors.
    let mut chunk = d.subset(&rest);
    chunk.factors[1].name = "plate".into();
    let b = SufficientStats::compute_with_shift(&chunk.data(), shift.clone()).unwrap();
    assert!(matches!(a.merge(&b), Err(FitError::Incompatible(_))));

    // A shift of the wrong length is rejected.
    let bad = Shift { y: 0.0, x: vec![0.0; 5] };
    assert!(matches!(SufficientStats::compute_with_shift(&d.data(), bad), Err(FitError::InvalidInput(_))));
}

/// About 100k rows: several row blocks, and a factor with more than 4096 levels so the
/// cell counting splits its levels into parallel blocks too.
fn large_design() -> Design {
    let n = 3 * ROW_BLOCK + 4321;
    let mut r = rng(2024);
    let (ga, gb, gc) = (9000usize, 37usize, 600usize);
    let a: Vec<usize> = (0..n).map(|_| r.random_range(0..ga)).collect();
    let b: Vec<usize> = (0..n).map(|i| (i * 7 + r.random_range(0..3usize)) % gb).collect();
    let c: Vec<usize> = a.iter().map(|&v| (v * 13 + r.random_range(0..5usize)) % gc).collect();
    let ua: Vec<f64> = (0..ga).map(|_| normal(&mut r, 1.0)).collect();
    let ub: Vec<f64> = (0..gb).map(|_| normal(&mut r, 0.5)).collect();
    let uc: Vec<f64> = (0..gc).map(|_| normal(&mut r, 0.8)).collect();
    let x1: Vec<f64> = (0..n).map(|i| (i % 101) as f64 / 10.0 + ua[a[i]]).collect();
    let x2: Vec<f64> = (0..n).map(|i| ((i * 31) % 17) as f64).collect();
    let y: Vec<f64> = (0..n)
        .map(|i| 100.0 + 0.2 * x1[i] - 0.1 * x2[i] + ua[a[i]] + ub[b[i]] + uc[c[i]] + normal(&mut r, 1.0))
        .collect();
    Design::new(
        y,
        vec![("x1".into(), x1), ("(Intercept)".into(), vec![1.0; n]), ("x2".into(), x2)],
        Some(1),
        vec![Factor::new("a", &a, ga, 1), Factor::new("b", &b, gb, 1), Factor::new("c", &c, gc, 0)],
    )
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn thread_count_does_not_change_a_bit() {
    let d = large_design();
    assert!(d.n() > 3 * ROW_BLOCK);
    let data = d.data();
    let fits: Vec<MomentFit> = [1usize, 2, 3].iter().map(|&t| fit(&data, t).unwrap()).collect();
    let stats: Vec<SufficientStats> = [1usize, 2, 3]
        .iter()
        .map(|&t| fullrandom_core::run_with_threads(t, || SufficientStats::compute(&data)).unwrap().unwrap())
        .collect();
    for (t, (f, s)) in fits.iter().zip(&stats).enumerate().skip(1) {
        let what = format!("{} threads vs 1", t + 1);
        assert!(s == &stats[0], "{what}: statistics differ");
        assert_eq!(bits(&s.xtx), bits(&stats[0].xtx), "{what}");
        assert_eq!(s.yty.to_bits(), stats[0].yty.to_bits(), "{what}");
        assert_eq!(bits(&f.components.raw), bits(&fits[0].components.raw), "{what}: raw");
        assert_eq!(bits(&f.components.estimate), bits(&fits[0].components.estimate), "{what}: estimate");
        assert_eq!(bits(&f.equations.q), bits(&fits[0].equations.q), "{what}: q");
        assert_eq!(
            bits(&lhs_rows(&f.equations.lhs).concat()),
            bits(&lhs_rows(&fits[0].equations.lhs).concat()),
            "{what}: lhs"
        );
        assert_eq!(bits(&f.ols.coef), bits(&fits[0].ols.coef), "{what}: coef");
        assert_eq!(f.ols.rss.to_bits(), fits[0].ols.rss.to_bits(), "{what}: rss");
    }
    // Threads 0 is taken as 1.
    let f0 = fit(&data, 0).unwrap();
    assert_eq!(bits(&f0.components.raw), bits(&fits[0].components.raw));
    // The estimates are sensible: all components near their simulated values.
    let est = &fits[0].components.estimate;
    for (j, want) in [1.0, 0.25, 0.64, 1.0].iter().enumerate() {
        assert!((est[j] - want).abs() < 0.5 * want, "component {j}: {} vs {want}", est[j]);
    }
}

#[test]
fn code_offsets_do_not_matter() {
    let d = crossed_nested_design(71, true);
    let reference = fit(&d.data(), 1).unwrap();
    for offset in [0, 1, -3, 1000] {
        let mut e = d.clone();
        for f in &mut e.factors {
            let levels: Vec<usize> = (0..e.y.len()).map(|i| f.level(i)).collect();
            *f = Factor::new(&f.name, &levels, f.n_levels, offset);
        }
        let got = fit(&e.data(), 2).unwrap();
        assert_eq!(bits(&got.components.raw), bits(&reference.components.raw), "offset {offset}");
    }
}

/// Estimates with every component compared relative to itself, or to a thousandth of
/// the largest when near zero.
fn components_change(got: &MomentFit, want: &MomentFit) -> f64 {
    worst_rel(&got.components.raw, &want.components.raw, 1e-3).max(worst_rel(
        &got.components.estimate,
        &want.components.estimate,
        1e-3,
    ))
}

fn slope_change(got: &MomentFit, want: &MomentFit, intercept: Option<usize>) -> f64 {
    (0..got.ols.coef.len())
        .filter(|&j| Some(j) != intercept)
        .map(|j| rel_floor(got.ols.coef[j], want.ols.coef[j], 1e-6))
        .fold(0.0, f64::max)
}

#[test]
fn location_shifts_leave_the_estimates_unchanged() {
    let mut designs: Vec<Design> = (0..6u64).map(|s| crossed_nested_design(900 + s, true)).collect();
    // More rows than the pilot uses, sorted by the covariate so the pilot location (the
    // mean of the first rows) is far from the overall mean.
    let big = crossed_design(12, 3000, 40, 15);
    let mut order: Vec<usize> = (0..big.n()).collect();
    order.sort_by(|&i, &j| big.x_at(i, 1).total_cmp(&big.x_at(j, 1)));
    designs.push(big.subset(&order));

    let (mut worst_y, mut worst_x, mut worst_shift) = (0.0f64, 0.0f64, 0.0f64);
    for (case, d) in designs.iter().enumerate() {
        let base = fit(&d.data(), 1).unwrap();
        let x_col = d.x_names.iter().position(|n| n == "x").unwrap();

        let mut moved_y = d.clone();
        moved_y.y.iter_mut().for_each(|v| *v += 1e8);
        let f = fit(&moved_y.data(), 1).unwrap();
        let e = components_change(&f, &base);
        assert!(e < 1e-6, "design {case}: y + 1e8 changes the components by {e:.2e}");
        assert!(slope_change(&f, &base, d.intercept) < 1e-6, "design {case}: y + 1e8 changes slopes");
        let i0 = d.intercept.unwrap();
        assert!((f.ols.coef[i0] - 1e8 - base.ols.coef[i0]).abs() < 1e-5, "design {case}: intercept moves by 1e8");
        worst_y = worst_y.max(e);

        let mut moved_x = d.clone();
        moved_x.column_mut(x_col).iter_mut().for_each(|v| *v += 1e6);
        let f = fit(&moved_x.data(), 1).unwrap();
        let e = components_change(&f, &base);
        assert!(e < 1e-6, "design {case}: x + 1e6 changes the components by {e:.2e}");
        assert!(slope_change(&f, &base, d.intercept) < 1e-6, "design {case}: x + 1e6 changes slopes");
        worst_x = worst_x.max(e);

        let mut both = moved_x.clone();
        both.y.iter_mut().for_each(|v| *v += 1e8);
        let e = components_change(&fit(&both.data(), 1).unwrap(), &base);
        assert!(e < 1e-6, "design {case}: y + 1e8 and x + 1e6 change the components by {e:.2e}");
        worst_y = worst_y.max(e);

        // Any shift gives the same fit as the pilot one (the shift is a reparametrisation).
        let data = d.data();
        let shift = Shift {
            y: -37.5,
            x: (0..d.p).map(|j| if Some(j) == d.intercept { 0.0 } else { 2.25 * j as f64 - 4.0 }).collect(),
        };
        let f = fit_from_stats(&SufficientStats::compute_with_shift(&data, shift).unwrap(), 1).unwrap();
        let e = components_change(&f, &base);
        assert!(e < 1e-8, "design {case}: another shift changes the components by {e:.2e}");
        assert!(slope_change(&f, &base, None) < 1e-8, "design {case}: another shift changes coef");
        worst_shift = worst_shift.max(e);
    }
    println!("location: worst relative change y + 1e8: {worst_y:.2e}, x + 1e6: {worst_x:.2e}, arbitrary shift: {worst_shift:.2e}");
}

/// An intercept given as [`FixedColumn::Ones`] (never stored) is the column of ones it
/// stands for: the same statistics, fit and fitted values, to the bit.
#[test]
fn implicit_intercept_equals_a_column_of_ones() {
    use fullrandom_core::FixedColumn;
    let d = large_design();
    let explicit = d.data();
    let j0 = d.intercept.unwrap();
    let mut implicit = d.data();
    implicit.x[j0] = FixedColumn::Ones;
    let (a, b) = (fit(&explicit, 2).unwrap(), fit(&implicit, 2).unwrap());
    let (sa, sb) = (SufficientStats::compute(&explicit).unwrap(), SufficientStats::compute(&implicit).unwrap());
    assert!(sa == sb, "statistics differ");
    assert_eq!(bits(&a.components.raw), bits(&b.components.raw));
    assert_eq!(bits(&a.mixed.coef), bits(&b.mixed.coef));
    let fitted = |data: &fullrandom_core::ModelData<'_>| {
        let (mut f, mut r) = (vec![0.0; d.n()], vec![0.0; d.n()]);
        fullrandom_core::fitted_and_residuals(data, &a.mixed.coef, &a.mixed.ranef, &mut f, &mut r).unwrap();
        (f, r)
    };
    let (fe, re) = fitted(&explicit);
    let (fi, ri) = fitted(&implicit);
    assert_eq!(bits(&fe), bits(&fi));
    assert_eq!(bits(&re), bits(&ri));
    // Near-truth check that the fitted values are those of X b + Z u.
    let i = 12345;
    let want = (0..d.p).map(|j| d.x_at(i, j) * a.mixed.coef[j]).sum::<f64>()
        + d.factors.iter().zip(&a.mixed.ranef).map(|(f, u)| u[f.level(i)]).sum::<f64>();
    assert!((fi[i] - want).abs() < 1e-9 * want.abs().max(1.0));
    assert_eq!(ri[i], d.y[i] - fi[i]);
}

/// Statistics about one shift, re-expressed about another, equal those computed about
/// the other directly.
#[test]
fn reshifted_statistics_equal_a_pass_about_the_new_shift() {
    let d = crossed_nested_design(77, true);
    let data = d.data();
    let a = Shift::pilot(&data);
    let b = Shift {
        y: a.y + 3.25,
        x: a.x.iter().enumerate().map(|(j, v)| if Some(j) == d.intercept { 0.0 } else { v - 1.5 }).collect(),
    };
    let about_a = SufficientStats::compute_with_shift(&data, a).unwrap();
    let about_b = SufficientStats::compute_with_shift(&data, b.clone()).unwrap();
    let moved = about_a.reshifted(&b).unwrap();
    assert_eq!(moved.shift, b);
    assert_stats_close(&moved, &about_b, 1e-12, "reshifted");
    // The intercept column is never shifted.
    let mut bad = b.clone();
    bad.x[d.intercept.unwrap()] = 1.0;
    assert!(matches!(about_a.reshifted(&bad), Err(FitError::Incompatible(_))));
}

/// Chunks that number their levels themselves (only the levels they see, in an order of
/// their own, as chunks read from separate files do), each about its own pilot shift,
/// relevelled onto the whole data's levels and merged: the whole fit.
#[test]
fn chunks_with_their_own_levels_and_shifts_merge_to_the_whole_fit() {
    use fullrandom_core::merge_statistics;
    let mut r = rng(4040);
    for (case, d) in [crossed_nested_design(600, true), crossed_design(9, 500, 25, 11)].iter().enumerate() {
        let whole_fit = fit(&d.data(), 1).unwrap();
        for parts in [random_partition(d.n(), 2, 5), random_partition(d.n(), 7, 6)] {
            let mut chunk_stats = Vec::new();
            for rows in &parts {
                let mut chunk = d.subset(rows);
                let mut maps = Vec::new();
                for f in &mut chunk.factors {
                    // The levels this chunk sees, numbered in a shuffled order.
                    let mut seen: Vec<usize> = (0..rows.len()).map(|i| f.level(i)).collect();
                    seen.sort_unstable();
                    seen.dedup();
                    for i in (1..seen.len()).rev() {
                        seen.swap(i, r.random_range(0..=i));
                    }
                    let mut local = vec![usize::MAX; f.n_levels];
                    seen.iter().enumerate().for_each(|(l, &g)| local[g] = l);
                    let levels: Vec<usize> = (0..rows.len()).map(|i| local[f.level(i)]).collect();
                    *f = Factor::new(&f.name, &levels, seen.len(), 1);
                    maps.push(seen);
                }
                let stats = SufficientStats::compute(&chunk.data()).unwrap();
                let n_levels: Vec<usize> = d.factors.iter().map(|f| f.n_levels).collect();
                chunk_stats.push(stats.relevelled(&maps, &n_levels).unwrap());
            }
            assert!(chunk_stats.windows(2).any(|w| w[0].shift != w[1].shift), "chunks must differ in shift");
            let merged = fit_from_stats(&merge_statistics(&chunk_stats).unwrap(), 2).unwrap();
            assert_fits_close(&merged, &whole_fit, 1e-10, &format!("design {case}, {} chunks", parts.len()));
            let worst = worst_rel(&merged.mixed.coef, &whole_fit.mixed.coef, 1e-8);
            assert!(worst < 1e-10, "GLS coefficients differ by {worst:e}");
            for (u, v) in merged.mixed.ranef.iter().zip(&whole_fit.mixed.ranef) {
                assert!(worst_rel(u, v, 1e-8) < 1e-8, "BLUPs differ");
            }
        }
    }
}

#[test]
fn level_maps_must_be_one_to_one() {
    let d = crossed_design(10, 80, 6, 4);
    let stats = SufficientStats::compute(&d.data()).unwrap();
    let identity: Vec<usize> = (0..4).collect();
    let clash = vec![0, 1, 2, 3, 4, 4];
    assert!(matches!(stats.relevelled(&[clash, identity.clone()], &[6, 4]), Err(FitError::Incompatible(_))));
    let short = vec![0, 1, 2];
    assert!(matches!(stats.relevelled(&[short, identity.clone()], &[6, 4]), Err(FitError::Incompatible(_))));
    let beyond = vec![0, 1, 2, 3, 4, 9];
    assert!(matches!(stats.relevelled(&[beyond, identity], &[6, 4]), Err(FitError::Incompatible(_))));
}
