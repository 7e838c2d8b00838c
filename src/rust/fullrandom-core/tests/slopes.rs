//! Random-slope terms: the closed-form traces of the moment equations against a dense
//! evaluation of their definitions `tr(B M V_m M)`, Henderson's equations against a
//! dense GLS/BLUP solve, and the intercept-only case against the existing estimator.

use fullrandom_core::data::FixedColumn;
use fullrandom_core::slopes::{
    fit_slope_statistics, fit_slopes, inverse_cholesky, parameter_map, slope_equations, slope_fitted_and_residuals,
    solve_dense, SlopeData, SlopeStats, SlopeTerm,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct OwnedTerm {
    levels: Vec<usize>,
    n_levels: usize,
    /// `None` is a column of ones.
    z: Vec<Option<Vec<f64>>>,
}

struct Design {
    y: Vec<f64>,
    x: Vec<Option<Vec<f64>>>,
    terms: Vec<OwnedTerm>,
    codes: Vec<Vec<i32>>,
}

fn col(c: &Option<Vec<f64>>) -> FixedColumn<'_> {
    match c {
        None => FixedColumn::Ones,
        Some(v) => FixedColumn::Values(v),
    }
}

impl Design {
    fn new(y: Vec<f64>, x: Vec<Option<Vec<f64>>>, terms: Vec<OwnedTerm>) -> Design {
        let codes = terms.iter().map(|t| t.levels.iter().map(|&g| g as i32 + 1).collect()).collect();
        Design { y, x, terms, codes }
    }
    fn data(&self) -> SlopeData<'_> {
        SlopeData {
            y: &self.y,
            x: self.x.iter().map(col).collect(),
            terms: self
                .terms
                .iter()
                .zip(&self.codes)
                .enumerate()
                .map(|(k, (t, c))| SlopeTerm {
                    name: format!("t{k}"),
                    codes: c,
                    offset: 1,
                    n_levels: t.n_levels,
                    z: t.z.iter().map(col).collect(),
                })
                .collect(),
        }
    }
    fn n(&self) -> usize {
        self.y.len()
    }
    fn value(c: &Option<Vec<f64>>, i: usize) -> f64 {
        c.as_ref().map_or(1.0, |v| v[i])
    }
}

type Dense = Vec<Vec<f64>>;

fn serial() -> rayon::ThreadPool {
    fullrandom_core::thread_pool(1).unwrap()
}

fn zeros(n: usize, m: usize) -> Dense {
    vec![vec![0.0; m]; n]
}
fn mul(a: &Dense, b: &Dense) -> Dense {
    let (n, r, m) = (a.len(), b.len(), b[0].len());
    let mut o = zeros(n, m);
    for i in 0..n {
        for s in 0..r {
            if a[i][s] != 0.0 {
                for j in 0..m {
                    o[i][j] += a[i][s] * b[s][j];
                }
            }
        }
    }
    o
}
fn t(a: &Dense) -> Dense {
    let mut o = zeros(a[0].len(), a.len());
    for (i, row) in a.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            o[j][i] = *v;
        }
    }
    o
}
fn trace(a: &Dense) -> f64 {
    (0..a.len()).map(|i| a[i][i]).sum()
}
fn inverse(a: &Dense) -> Dense {
    let n = a.len();
    let flat: Vec<f64> = a.iter().flatten().copied().collect();
    let mut o = zeros(n, n);
    for j in 0..n {
        let mut e = vec![0.0; n];
        e[j] = 1.0;
        let c = solve_dense(&flat, &e, n).unwrap();
        for i in 0..n {
            o[i][j] = c[i];
        }
    }
    o
}

/// Z_k: n x (q n_levels), column g q + a.
fn z_matrix(d: &Design, k: usize) -> Dense {
    let term = &d.terms[k];
    let q = term.z.len();
    let mut z = zeros(d.n(), q * term.n_levels);
    for i in 0..d.n() {
        for a in 0..q {
            z[i][term.levels[i] * q + a] = Design::value(&term.z[a], i);
        }
    }
    z
}

/// The moment equations straight from their definitions.
fn dense_equations(d: &Design) -> (Vec<f64>, Vec<f64>) {
    let n = d.n();
    let x: Dense = (0..n).map(|i| d.x.iter().map(|c| Design::value(c, i)).collect()).collect();
    let xtx = mul(&t(&x), &x);
    let h = mul(&mul(&x, &inverse(&xtx)), &t(&x));
    let mut m = zeros(n, n);
    for i in 0..n {
        for j in 0..n {
            m[i][j] = f64::from(i == j) - h[i][j];
        }
    }
    let y: Dense = d.y.iter().map(|&v| vec![v]).collect();
    let r = mul(&m, &y);
    let qs: Vec<usize> = d.terms.iter().map(|t| t.z.len()).collect();
    let params = parameter_map(&qs);
    let sym = |q: usize, a: usize, b: usize, half: bool| -> Dense {
        let mut s = zeros(q, q);
        let w = if a == b {
            1.0
        } else if half {
            0.5
        } else {
            1.0
        };
        s[a][b] += w;
        if a != b {
            s[b][a] += w;
        }
        s
    };
    // B and V for every parameter.
    let mut bs = Vec::new();
    let mut vs = Vec::new();
    for pm in &params {
        match pm.term {
            None => {
                let mut i_n = zeros(n, n);
                for i in 0..n {
                    i_n[i][i] = 1.0;
                }
                bs.push(i_n.clone());
                vs.push(i_n);
            }
            Some(k) => {
                let z = z_matrix(d, k);
                let term = &d.terms[k];
                let q = qs[k];
                let dim = q * term.n_levels;
                let mut cb = zeros(dim, dim);
                let mut cv = zeros(dim, dim);
                let s = sym(q, pm.row, pm.col, true);
                let e = sym(q, pm.row, pm.col, false);
                for g in 0..term.n_levels {
                    let zg: Dense = z.iter().map(|row| row[g * q..(g + 1) * q].to_vec()).collect();
                    let w = mul(&t(&zg), &zg);
                    let flat: Vec<f64> = w.iter().flatten().copied().collect();
                    let (kf, _) = inverse_cholesky(&flat, q);
                    let kg: Dense = (0..q).map(|a| kf[a * q..(a + 1) * q].to_vec()).collect();
                    let c = mul(&mul(&t(&kg), &s), &kg);
                    for a in 0..q {
                        for b in 0..q {
                            cb[g * q + a][g * q + b] = c[a][b];
                            cv[g * q + a][g * q + b] = e[a][b];
                        }
                    }
                }
                bs.push(mul(&mul(&z, &cb), &t(&z)));
                vs.push(mul(&mul(&z, &cv), &t(&z)));
            }
        }
    }
    // Equations: terms' entries first then r'r, as the parameters.
    let mm = params.len();
    let mut lhs = vec![0.0; mm * mm];
    let mut qv = vec![0.0; mm];
    for e in 0..mm {
        let bm = mul(&bs[e], &m);
        qv[e] = mul(&mul(&t(&r), &bs[e]), &r)[0][0];
        for p in 0..mm {
            lhs[e * mm + p] = trace(&mul(&mul(&bm, &vs[p]), &m));
        }
    }
    (lhs, qv)
}

fn close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    let scale = b.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1.0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * scale, "{what}[{i}]: {x} vs {y} (scale {scale})");
    }
}

/// An unbalanced crossed design: a slope term (1 + x | g) with a one-row level and a
/// level where x is constant, a crossed (1 | h), and a no-intercept (0 + w | f).
fn crossed_design(seed: u64, n: usize) -> Design {
    let mut rng = StdRng::seed_from_u64(seed);
    let ng = 7;
    let nh = 5;
    let nf = 3;
    let mut g: Vec<usize> = (0..n).map(|i| if i < n - 1 { 1 + rng.random_range(0..ng - 1) } else { 0 }).collect();
    g[n - 1] = 0; // level 0 has one row
    let h: Vec<usize> = (0..n).map(|_| rng.random_range(0..nh)).collect();
    let f: Vec<usize> = (0..n).map(|_| rng.random_range(0..nf)).collect();
    let mut x: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..2.0)).collect();
    for i in 0..n {
        if g[i] == 1 {
            x[i] = 0.75; // x constant within level 1
        }
    }
    let w: Vec<f64> = (0..n).map(|_| rng.random_range(0.0..1.0)).collect();
    let x2: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let y: Vec<f64> = (0..n).map(|i| 1.0 + x[i] + rng.random_range(-2.0..2.0) + g[i] as f64 * 0.3 * x[i]).collect();
    Design::new(
        y,
        vec![None, Some(x.clone()), Some(x2)],
        vec![
            OwnedTerm { levels: g, n_levels: ng, z: vec![None, Some(x)] },
            OwnedTerm { levels: h, n_levels: nh, z: vec![None] },
            OwnedTerm { levels: f, n_levels: nf, z: vec![Some(w)] },
        ],
    )
}

/// The closed-form equations of `d` against a dense evaluation of their definitions.
fn equations_match_the_dense_definitions(d: &Design) {
    let stats = SlopeStats::compute(&d.data()).unwrap();
    let eq = slope_equations(&stats).unwrap();
    let (lhs, qv) = dense_equations(d);
    close(&eq.lhs, &lhs, 1e-9, "lhs");
    close(&eq.q, &qv, 1e-9, "q");
}

#[test]
fn closed_form_traces_equal_the_dense_definitions() {
    for (seed, n) in [(1u64, 40usize), (2, 57), (3, 33)] {
        equations_match_the_dense_definitions(&crossed_design(seed, n));
    }
}

#[test]
fn two_slope_covariates_nested_terms_match_the_dense_definitions() {
    let mut rng = StdRng::seed_from_u64(11);
    let n = 45;
    let g: Vec<usize> = (0..n).map(|_| rng.random_range(0..6)).collect();
    let outer: Vec<usize> = g.iter().map(|&v| v / 2).collect(); // g nested in outer
    let x: Vec<f64> = (0..n).map(|_| rng.random_range(0.0..3.0)).collect();
    let z: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let y: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let d = Design::new(
        y,
        vec![None, Some(x.clone())],
        vec![
            OwnedTerm { levels: g, n_levels: 6, z: vec![None, Some(x.clone()), Some(z)] },
            OwnedTerm { levels: outer, n_levels: 3, z: vec![None, Some(x)] },
        ],
    );
    equations_match_the_dense_definitions(&d);
}

#[test]
fn henderson_equations_equal_a_dense_gls_and_blup_solve() {
    let d = crossed_design(5, 50);
    let fit = fit_slopes(&d.data(), &serial(), &mut || true).unwrap();
    // Dense solve at the fitted components.
    let theta = &fit.components.estimate;
    let params = &fit.equations.params;
    let n = d.n();
    let s2 = *theta.last().unwrap();
    let mut v = zeros(n, n);
    for i in 0..n {
        v[i][i] = s2;
    }
    let mut zs = Vec::new();
    let mut gs = Vec::new();
    for (k, term) in d.terms.iter().enumerate() {
        let q = term.z.len();
        let z = z_matrix(&d, k);
        let mut g = zeros(q * term.n_levels, q * term.n_levels);
        for lv in 0..term.n_levels {
            for (val, pm) in theta.iter().zip(params) {
                if pm.term == Some(k) {
                    g[lv * q + pm.row][lv * q + pm.col] = *val;
                    g[lv * q + pm.col][lv * q + pm.row] = *val;
                }
            }
        }
        let zgz = mul(&mul(&z, &g), &t(&z));
        for i in 0..n {
            for j in 0..n {
                v[i][j] += zgz[i][j];
            }
        }
        zs.push(z);
        gs.push(g);
    }
    let vi = inverse(&v);
    let x: Dense = (0..n).map(|i| d.x.iter().map(|c| Design::value(c, i)).collect()).collect();
    let xvx_inv = inverse(&mul(&mul(&t(&x), &vi), &x));
    let y: Dense = d.y.iter().map(|&v| vec![v]).collect();
    let beta = mul(&xvx_inv, &mul(&mul(&t(&x), &vi), &y));
    let b: Vec<f64> = beta.iter().map(|r| r[0]).collect();
    close(&fit.mixed.coef, &b, 1e-8, "coef");
    let vc: Vec<f64> = xvx_inv.iter().flatten().copied().collect();
    close(&fit.mixed.vcov, &vc, 1e-8, "vcov");
    let resid: Dense = (0..n).map(|i| vec![d.y[i] - (0..b.len()).map(|j| x[i][j] * b[j]).sum::<f64>()]).collect();
    for k in 0..d.terms.len() {
        let u = mul(&mul(&mul(&gs[k], &t(&zs[k])), &vi), &resid);
        let u: Vec<f64> = u.iter().map(|r| r[0]).collect();
        close(&fit.mixed.ranef[k], &u, 1e-8, "ranef");
    }
}

#[test]
fn intercept_only_terms_give_the_existing_moment_estimates() {
    use fullrandom_core::{FactorCodes, ModelData};
    let mut rng = StdRng::seed_from_u64(3);
    let n = 300;
    let a: Vec<i32> = (0..n).map(|_| 1 + rng.random_range(0..20)).collect();
    let b: Vec<i32> = (0..n).map(|_| 1 + rng.random_range(0..9)).collect();
    let x: Vec<f64> = (0..n).map(|_| rng.random_range(0.0..1.0)).collect();
    let y: Vec<f64> =
        (0..n).map(|i| x[i] + (a[i] % 5) as f64 + (b[i] % 3) as f64 + rng.random_range(-1.0..1.0)).collect();
    let md = ModelData {
        y: &y,
        x: vec![FixedColumn::Ones, FixedColumn::Values(&x)],
        x_names: vec!["(Intercept)".into(), "x".into()],
        intercept: Some(0),
        factors: vec![
            FactorCodes { name: "a".into(), codes: &a, offset: 1, n_levels: 20 },
            FactorCodes { name: "b".into(), codes: &b, offset: 1, n_levels: 9 },
        ],
    };
    let (_, _, old) = fullrandom_core::fit_components(&md, 1).unwrap();
    let sd = SlopeData {
        y: &y,
        x: vec![FixedColumn::Ones, FixedColumn::Values(&x)],
        terms: vec![
            SlopeTerm { name: "a".into(), codes: &a, offset: 1, n_levels: 20, z: vec![FixedColumn::Ones] },
            SlopeTerm { name: "b".into(), codes: &b, offset: 1, n_levels: 9, z: vec![FixedColumn::Ones] },
        ],
    };
    let fit = fit_slopes(&sd, &serial(), &mut || true).unwrap();
    close(&fit.components.raw, &old.raw, 1e-10, "raw");
    close(&fit.components.estimate, &old.estimate, 1e-10, "estimate");
}

/// The rows of `d` in `rows`, as a design of their own with the same levels.
fn subset(d: &Design, rows: &[usize]) -> Design {
    let pick = |v: &Vec<f64>| rows.iter().map(|&i| v[i]).collect::<Vec<f64>>();
    Design::new(
        rows.iter().map(|&i| d.y[i]).collect(),
        d.x.iter().map(|c| c.as_ref().map(pick)).collect(),
        d.terms
            .iter()
            .map(|t| OwnedTerm {
                levels: rows.iter().map(|&i| t.levels[i]).collect(),
                n_levels: t.n_levels,
                z: t.z.iter().map(|c| c.as_ref().map(pick)).collect(),
            })
            .collect(),
    )
}

#[test]
fn merged_chunk_statistics_give_the_whole_fit() {
    let d = crossed_design(5, 300);
    let whole = fit_slopes(&d.data(), &serial(), &mut || true).unwrap();
    for chunks in [2usize, 7] {
        // Rows dealt to chunks out of order, so every chunk sees part of most cells.
        let mut parts: Vec<Vec<usize>> = vec![Vec::new(); chunks];
        for i in 0..d.n() {
            parts[(i * 5 + i / 3) % chunks].push(i);
        }
        let designs: Vec<Design> = parts.iter().map(|rows| subset(&d, rows)).collect();
        let mut stats = SlopeStats::compute(&designs[0].data()).unwrap();
        for part in &designs[1..] {
            stats.merge(&SlopeStats::compute(&part.data()).unwrap()).unwrap();
        }
        assert_eq!(stats.n_obs, d.n());
        let merged = fit_slope_statistics(&stats, &serial(), &mut || true).unwrap();
        close(&merged.components.raw, &whole.components.raw, 1e-10, "raw components");
        close(&merged.mixed.coef, &whole.mixed.coef, 1e-10, "fixed effects");
        close(&merged.mixed.vcov, &whole.mixed.vcov, 1e-10, "vcov");
        for (a, b) in merged.mixed.ranef.iter().zip(&whole.mixed.ranef) {
            close(a, b, 1e-10, "BLUPs");
        }
    }
    // Statistics of other terms or levels are refused.
    let mut stats = SlopeStats::compute(&d.data()).unwrap();
    let other = crossed_design(6, 50);
    let mut smaller = subset(&other, &(0..50).collect::<Vec<_>>());
    smaller.terms[1].n_levels += 1;
    assert!(stats.merge(&SlopeStats::compute(&smaller.data()).unwrap()).is_err());
}

#[test]
fn statistics_and_fit_do_not_depend_on_the_number_of_threads() {
    // Large enough that the sums and sorts split into several parallel parts.
    let mut rng = StdRng::seed_from_u64(8);
    let n = 300_000;
    let g: Vec<usize> = (0..n).map(|_| rng.random_range(0..5000)).collect();
    let h: Vec<usize> = (0..n).map(|_| rng.random_range(0..300)).collect();
    let x: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let y: Vec<f64> = (0..n)
        .map(|i| x[i] + (g[i] % 7) as f64 * 0.1 * (1.0 + x[i]) + (h[i] % 5) as f64 * 0.2 + rng.random_range(-1.0..1.0))
        .collect();
    let d = Design::new(
        y,
        vec![None, Some(x.clone())],
        vec![
            OwnedTerm { levels: g, n_levels: 5000, z: vec![None, Some(x)] },
            OwnedTerm { levels: h, n_levels: 300, z: vec![None] },
        ],
    );
    let fit_on = |threads: usize| {
        let pool = fullrandom_core::thread_pool(threads).unwrap();
        fit_slopes(&d.data(), &pool, &mut || true).unwrap()
    };
    let (one, two) = (fit_on(1), fit_on(2));
    assert_eq!(one.components.raw, two.components.raw);
    assert_eq!(one.mixed.coef, two.mixed.coef);
    assert_eq!(one.mixed.ranef, two.mixed.ranef);
    // Fitted values and residuals: X b + sum_k z_k' u_k[level], the same on any number of
    // threads, and y less them.
    let fitted_on = |threads: usize| {
        let (mut f, mut r) = (vec![0.0; d.n()], vec![0.0; d.n()]);
        let pool = fullrandom_core::thread_pool(threads).unwrap();
        pool.install(|| slope_fitted_and_residuals(&d.data(), &one.mixed.coef, &one.mixed.ranef, &mut f, &mut r))
            .unwrap();
        (f, r)
    };
    let ((f1, r1), (f2, r2)) = (fitted_on(1), fitted_on(2));
    assert_eq!(f1, f2);
    assert_eq!(r1, r2);
    for i in (0..d.n()).step_by(997) {
        let mut want: f64 = d.x.iter().zip(&one.mixed.coef).map(|(c, b)| Design::value(c, i) * b).sum();
        for (k, t) in d.terms.iter().enumerate() {
            let q = t.z.len();
            want += (0..q).map(|a| Design::value(&t.z[a], i) * one.mixed.ranef[k][t.levels[i] * q + a]).sum::<f64>();
        }
        assert!((f1[i] - want).abs() <= 1e-12 * (1.0 + want.abs()), "row {i}: {} against {want}", f1[i]);
        assert_eq!(r1[i], d.y[i] - f1[i]);
    }
    // Outputs of the wrong length are refused.
    let mut short = vec![0.0; 3];
    let mut other = vec![0.0; d.n()];
    assert!(slope_fitted_and_residuals(&d.data(), &one.mixed.coef, &one.mixed.ranef, &mut short, &mut other).is_err());
}
