//! Property-based tests: random small designs (with and without an intercept, factors
//! with one observation per level, nested and crossed factors, declared levels with no
//! rows, shifted and scaled y and X) checked against the dense definitions of the
//! moment equations, merged in arbitrary chunks, shifted, and thrown at the fit whole
//! (any input must give estimates or an error, never a panic).

mod common;

use common::*;
use fullrandom_core::{fit, fit_components, ols_from_stats, MomentEquations, Shift, SufficientStats};
use proptest::prelude::*;

/// A random design: `n` rows, up to three factors (the second may be nested in the first,
/// the third may give one row per level), an optional intercept and up to two covariates
/// of small integers (so X'X is exact), y of small integers plus a scaled offset.
#[derive(Debug, Clone)]
struct Spec {
    n: usize,
    intercept: bool,
    covariates: Vec<Vec<i8>>,
    /// Per factor: levels of each row, the declared number of levels (>= used).
    factors: Vec<(Vec<usize>, usize)>,
    y: Vec<i16>,
    y_shift: f64,
    y_scale: f64,
}

fn spec() -> impl Strategy<Value = Spec> {
    (6usize..40).prop_flat_map(|n| {
        (
            Just(n),
            any::<bool>(),
            prop::collection::vec(prop::collection::vec(-3i8..=3, n), 0..=2),
            1usize..=3,
            prop::collection::vec(1usize..=6, 3),
            prop::collection::vec(0usize..=2, 3),
            prop::collection::vec(prop::collection::vec(0usize..6, n), 3),
            any::<bool>(),
            prop::collection::vec(-50i16..=50, n),
            prop_oneof![Just(0.0), -1e6f64..1e6],
            prop_oneof![Just(1.0), Just(1e-3), Just(1e3), 0.1f64..10.0],
        )
            .prop_map(|(n, intercept, covariates, k, levels, extra, draws, nested, y, y_shift, y_scale)| {
                let mut factors = Vec::new();
                for f in 0..k {
                    let codes: Vec<usize> = match f {
                        // The second factor nested in the first when asked: level = 6 a + b.
                        1 if nested => (0..n).map(|i| factors_first(&draws, i) * 6 + draws[1][i] % levels[1]).collect(),
                        // The third: one observation per level (a factor as fine as the rows).
                        2 => (0..n).collect(),
                        _ => draws[f].iter().map(|&d| d % levels[f]).collect(),
                    };
                    let used = codes.iter().max().map_or(0, |m| m + 1);
                    factors.push((codes, used + extra[f]));
                }
                Spec { n, intercept, covariates, factors, y, y_shift, y_scale }
            })
    })
}

fn factors_first(draws: &[Vec<usize>], i: usize) -> usize {
    draws[0][i] % 6
}

impl Spec {
    fn design(&self) -> Design {
        let n = self.n;
        let mut columns: Vec<(String, Vec<f64>)> = Vec::new();
        if self.intercept {
            columns.push(("(Intercept)".into(), vec![1.0; n]));
        }
        for (j, c) in self.covariates.iter().enumerate() {
            columns.push((format!("x{j}"), c.iter().map(|&v| v as f64 + 10.0 * j as f64).collect()));
        }
        let factors = self
            .factors
            .iter()
            .enumerate()
            .map(|(k, (codes, n_levels))| Factor::new(&format!("f{k}"), codes, *n_levels, (k % 2) as i32))
            .collect();
        let y = self.y.iter().map(|&v| v as f64 * self.y_scale + self.y_shift).collect();
        Design::new(y, columns, self.intercept.then_some(0), factors)
    }
}

/// `|a - b|` relative to `|b|`, but never to less than `floor` (a zero is zero only up
/// to the rounding of the larger entries).
fn close(a: f64, b: f64, floor: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(floor)
}

/// The moment equations agree entry by entry, relative to the largest entry of each side.
fn assert_same_equations(a: &MomentEquations, b: &MomentEquations, tol: f64) -> Result<(), TestCaseError> {
    let dim = b.q.len();
    let lhs_scale =
        (0..dim).flat_map(|i| (0..dim).map(move |j| (i, j))).fold(0.0f64, |m, (i, j)| m.max(b.lhs[(i, j)].abs()));
    let q_scale = b.q.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for i in 0..dim {
        prop_assert!(close(a.q[i], b.q[i], q_scale, tol), "q[{i}]: {} vs {}", a.q[i], b.q[i]);
        for j in 0..dim {
            prop_assert!(
                close(a.lhs[(i, j)], b.lhs[(i, j)], lhs_scale, tol),
                "lhs[{i},{j}]: {} vs {}",
                a.lhs[(i, j)],
                b.lhs[(i, j)]
            );
        }
    }
    Ok(())
}

fn config() -> ProptestConfig {
    // Modest, so that `cargo test` stays fast on two cores; a fixed seed, so that CI sees
    // the same cases every run (PROPTEST_RNG_SEED does not override a seed set here;
    // change it to explore other cases).
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(20_261_130),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Whenever X has full column rank, the O(N) equations are the dense trace formulas.
    #[test]
    fn equations_equal_the_dense_definitions(spec in spec()) {
        let d = spec.design();
        let stats = SufficientStats::compute(&d.data()).unwrap();
        let ols = ols_from_stats(&stats).unwrap();
        prop_assume!(ols.kept.len() == d.p);
        let Ok(eq) = MomentEquations::from_stats(&stats, &ols) else {
            // Only two terms grouping the rows identically are refused here.
            return Ok(());
        };
        // With an intercept, M (y - c) = M y exactly; the dense reference is evaluated
        // without the offset, as its N x N products would lose the residuals' digits to
        // cancellation (the fast path removes the offset by its pilot shift).
        let unshifted = if spec.intercept { Spec { y_shift: 0.0, ..spec.clone() }.design() } else { d.clone() };
        let reference = dense_reference(&unshifted);
        let scale = reference.lhs.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
        for (i, (row, want)) in lhs_rows(&eq.lhs).iter().zip(&reference.lhs).enumerate() {
            for (j, (a, b)) in row.iter().zip(want).enumerate() {
                prop_assert!(close(*a, *b, 1e-4 * scale, 1e-8), "lhs[{i}, {j}] = {a}, dense {b}");
            }
        }
        // q_k = r'r - (between-level sum) cancels: an entry near zero carries the
        // rounding of r'r, so it is compared on 1% of the largest entry's scale.
        let q_scale = reference.q.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (i, (a, b)) in eq.q.iter().zip(&reference.q).enumerate() {
            prop_assert!(close(*a, *b, 1e-2 * q_scale, 1e-8), "q[{i}] = {a}, dense {b}");
        }
    }

    /// Any split of the rows into chunks, merged in any order, gives the statistics of
    /// the whole (about one shift) and so the same estimates.
    #[test]
    fn merging_chunks_in_any_order_gives_the_statistics_of_the_whole(
        spec in spec(),
        chunk_of in prop::collection::vec(0usize..4, 40),
        order in Just([0usize, 1, 2, 3]).prop_shuffle(),
    ) {
        let d = spec.design();
        let whole = SufficientStats::compute(&d.data()).unwrap();
        let shift = Shift::pilot(&d.data());
        let mut parts = Vec::new();
        for &c in &order {
            let rows: Vec<usize> = (0..d.n()).filter(|&i| chunk_of[i] == c).collect();
            if rows.is_empty() {
                continue;
            }
            parts.push(SufficientStats::compute_with_shift(&d.subset(&rows).data(), shift.clone()).unwrap());
        }
        let mut merged = parts[0].clone();
        for part in &parts[1..] {
            merged = merged.merge(part).unwrap();
        }
        prop_assert_eq!(merged.n_obs, whole.n_obs);
        prop_assert_eq!(&merged.cells, &whole.cells);
        let scale = whole.yty.abs().max(whole.xtx.iter().fold(0.0f64, |m, v| m.max(v.abs()))).max(1.0);
        let pairs = [(&merged.xtx, &whole.xtx), (&merged.xty, &whole.xty), (&merged.sum_x, &whole.sum_x)];
        for (a, b) in pairs {
            for (u, v) in a.iter().zip(b.iter()) {
                prop_assert!(close(*u, *v, 1e-4 * scale, 1e-10), "{u} vs {v}");
            }
        }
        prop_assert!(close(merged.yty, whole.yty, 1e-4 * scale, 1e-10));
        for (a, b) in merged.levels.iter().zip(&whole.levels) {
            prop_assert_eq!(&a.counts, &b.counts);
            for (u, v) in a.sum_y.iter().chain(&a.sum_x).zip(b.sum_y.iter().chain(&b.sum_x)) {
                prop_assert!(close(*u, *v, 1e-4 * scale, 1e-10), "{u} vs {v}");
            }
        }
        let (Ok(a), Ok(b)) = (fullrandom_core::fit_from_stats(&merged, 1), fullrandom_core::fit_from_stats(&whole, 1)) else {
            return Ok(());
        };
        // The equations, not their solution: a nearly singular system (tiny designs are
        // drawn too) turns rounding in the sums into any difference in the components.
        assert_same_equations(&a.equations, &b.equations, 1e-8)?;
    }

    /// With an intercept, adding a constant to y changes no variance component.
    #[test]
    fn components_are_invariant_to_shifts_of_y(spec in spec(), c in prop_oneof![Just(1e4), Just(-1e6), -100.0f64..100.0]) {
        let spec = Spec { intercept: true, ..spec };
        let d = spec.design();
        let mut shifted = d.clone();
        shifted.y.iter_mut().for_each(|v| *v += c);
        let (Ok((_, _, a)), Ok((_, _, b))) = (fit_components(&d.data(), 1), fit_components(&shifted.data(), 1)) else {
            return Ok(());
        };
        // The equations (sums of squares of residuals) are compared, not their solution,
        // which a nearly singular system makes as sensitive as it likes to the rounding of
        // y + c (about |c| 1e-16 in every value).
        let (Ok((_, ea, _)), Ok((_, eb, _))) = (fit_components(&d.data(), 1), fit_components(&shifted.data(), 1)) else {
            return Ok(());
        };
        assert_same_equations(&eb, &ea, 1e-7)?;
        let _ = (a, b);
    }

    /// Any input, however degenerate (codes outside the levels, non-finite values, no
    /// levels, a single row), gives estimates or an error: never a panic.
    #[test]
    fn no_input_panics(
        spec in spec(),
        bad_row in 0usize..40,
        damage in 0u8..6,
    ) {
        let mut d = spec.design();
        let i = bad_row % d.n();
        match damage {
            0 => d.y[i] = f64::NAN,
            1 => d.y[i] = f64::INFINITY,
            2 => d.factors[0].codes[i] = d.factors[0].n_levels as i32 + 5,
            3 => d.factors[0].codes[i] = -7,
            4 => d.factors[0].n_levels = 0,
            _ => {
                let rows = [i];
                d = d.subset(&rows);
            }
        }
        let _ = fit(&d.data(), 1);
        let _ = fit(&spec.design().data(), 2);
    }
}
