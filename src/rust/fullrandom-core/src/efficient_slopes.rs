//! The efficient estimator for terms with `q` columns (random slopes): one MINQUE step
//! from the moment estimates of [`crate::slopes`], as [`crate::efficient`] takes for
//! random intercepts (an intercept term is the `q = 1` case, and the two share the
//! probes' equations and their jackknife, [`crate::efficient::probe_until_precise`]).
//!
//! The parameters are the entries `theta_{k,ab}` (`a >= b`) of every `Sigma_k`, with
//! `V_{k,ab} = Z_k (I (x) E^s_ab) Z_k'`, `E^s_ab = (E_ab + E_ba) / (1 + [a = b])` on every
//! level, and `s2`. With `P_0` the REML projection at a prior `theta_0` (scaled so that
//! `s2_0 = 1`), the forms `U_m = y'P_0 V_m P_0 y` have expectations
//! `sum_l theta_l tr(P_0 V_m P_0 V_l)`; equating them is MINQUE(`theta_0`), unbiased for
//! every fixed `theta_0` and, with `theta_0` the moment estimate, one Fisher scoring step
//! of REML (iterating converges to REML).
//!
//! Everything is in level space, with Henderson's equations of [`crate::slopes`] in the
//! parametrisation `u = Lambda w` (`Gamma_k = Lambda_k Lambda_k'`, `C = [X  Z Lambda]`,
//! `M = C'C + diag(0, I)`): `P_0 = I - C M^-1 C'`, so `e = P_0 y = y - X b - Z u` with
//! `(b, w)` Henderson's solution, and
//!
//! ```text
//! U_{k,ab} = sum_g z_ga z_gb (2 - [a = b]),   z_g = Z_g' e = Z_g'y - (Z'X b + Z'Z u)_g,
//! U_e      = e'e = y'y - b'X'y - w'Lambda'Z'y - w'w.
//! ```
//!
//! For a probe `w` on the levels of term `l` and a column `c` of it, `x = Z_l (w (x) e_c)`:
//! `h^c = Z'P_0 x = Z'x - Z'C s`, `M s = C'x`, two products with the Gram matrix
//! `[X Z]'[X Z]` and one solve (no division by `theta_0`, so a term at the floor keeps its
//! accuracy). With `S^{cd}_k = sum_g h^c_{kg} h^d_{kg}'` (q_k x q_k),
//!
//! ```text
//! T_{(k,ab),(l,cd)} = E_w (2 - [c = d]) (S^{cd}_{k,ab} + [a != b] S^{cd}_{k,ba}),
//! t_{l,cd}          = E_w sum_g w_g (h^d_{lgc} + [c != d] h^c_{lgd}),
//! ```
//!
//! since `E[(w (x) e_c)(w (x) e_d)'] = I (x) E_cd` for Rademacher `w` (shared by the
//! columns) and exactly for the sum over the unit vectors of the levels. The residual's
//! row and column, the batches of probes and their jackknife are
//! [`crate::efficient`]'s. The solves use the fit's tolerance
//! ([`crate::mixed::CG_TOLERANCE`]).
//!
//! The prior: `Gamma_k = Sigma_k / s2` of the (positive semidefinite) moment estimate,
//! with the eigenvalues of `D^1/2 Gamma_k D^1/2` floored at
//! [`crate::efficient::GAMMA_FLOOR`], `D` the mean of `z_a^2` over the rows (so the floor
//! is `s2_k / s2 >= GAMMA_FLOOR` for an intercept, as for intercept-only terms, and does
//! not depend on the units of a slope's covariate).

use crate::efficient::{
    probe_batch, probe_until_precise, unit_vector, EfficientOptions, ProbeDesign, TraceAccuracy, TraceSample,
    TraceSums, GAMMA_FLOOR,
};
use crate::error::{try_filled, FitError};
use crate::slopes::{
    parameter_map, sigma_of, slope_equations, solve_components, solve_components_with, solve_slope_mixed, sqrt_psd,
    symmetric_eigen, Henderson, SlopeComponents, SlopeEquations, SlopeFit, SlopeStats,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::ops::Range;

/// The prior `Gamma_k` (q x q, row-major) of every term: `Sigma_k / s2` with the floor
/// of the module documentation.
fn prior_gammas(stats: &SlopeStats, prior: &[f64], s2: f64) -> Vec<Vec<f64>> {
    let qs: Vec<usize> = stats.terms.iter().map(|t| t.q).collect();
    let params = parameter_map(&qs);
    let n = stats.n_obs.max(1) as f64;
    stats
        .terms
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let q = t.q;
            let sigma = sigma_of(prior, &params, k, q);
            let d: Vec<f64> = (0..q)
                .map(|a| {
                    let s: f64 = (0..t.n_levels).map(|g| t.zz[g * q * q + a * q + a]).sum::<f64>() / n;
                    if s > 0.0 && s.is_finite() {
                        s.sqrt()
                    } else {
                        1.0
                    }
                })
                .collect();
            let scaled: Vec<f64> = (0..q * q).map(|i| d[i / q] * sigma[i] * d[i % q] / s2).collect();
            let (values, vectors) = symmetric_eigen(&scaled, q);
            (0..q * q)
                .map(|i| {
                    let (a, b) = (i / q, i % q);
                    let v: f64 =
                        (0..q).map(|j| vectors[a * q + j] * values[j].max(GAMMA_FLOOR) * vectors[b * q + j]).sum();
                    v / (d[a] * d[b])
                })
                .collect()
        })
        .collect()
}

/// The system at the prior. The unknowns are the random effects only (`dim` of them, term
/// after term, `q` a level): Henderson's matrix in `w` is `C = Lambda'Z'Z Lambda + I` and the
/// fixed effects are eliminated here through `S = X'V_0^-1 X`, as [`crate::efficient`]
/// does, so the only solver this needs is one of `C` ([`Henderson`] without fixed effects).
struct Prior<'s> {
    stats: &'s SlopeStats,
    /// The kept fixed-effect columns.
    cols: Vec<usize>,
    lambda: Vec<Vec<f64>>,
    identity: Vec<Vec<f64>>,
    offsets: Vec<usize>,
    dim: usize,
    pool: &'s rayon::ThreadPool,
    /// `Z'V_0^-1 X = Z'X - Z'Z Lambda A` (dim x pk, `A = C^-1 Lambda'Z'X`) and `S^-1` (pk x pk).
    zvx: Vec<f64>,
    s_inv: Vec<f64>,
}

impl Prior<'_> {
    /// `Lambda_k' v` (transpose: `tr = true`) or `Lambda_k v` on every level block of `v`
    /// (`width` columns), in place.
    fn lambda_apply(&self, v: &mut [f64], width: usize, tr: bool) {
        for (k, t) in self.stats.terms.iter().enumerate() {
            let (q, lam) = (t.q, &self.lambda[k]);
            let part = &mut v[self.offsets[k] * width..(self.offsets[k] + t.n_levels * q) * width];
            self.pool.install(|| {
                part.par_chunks_mut(q * width).for_each(|block| {
                    let old = block.to_vec();
                    for a in 0..q {
                        for j in 0..width {
                            block[a * width + j] = (0..q)
                                .map(|b| (if tr { lam[b * q + a] } else { lam[a * q + b] }) * old[b * width + j])
                                .sum();
                        }
                    }
                });
            });
        }
    }

    /// `Z'Z v` (`width` columns).
    fn gram(&self, v: &[f64], width: usize) -> Result<Vec<f64>, FitError> {
        let gram = Henderson::new(self.stats, self.identity.clone(), 0.0, width, self.pool)?;
        let mut out = try_filled(self.dim * width, 0.0, "the efficient estimator's probes")?;
        gram.apply(v, &mut out);
        Ok(out)
    }

    /// `C^-1 v` (`width` columns).
    fn solve(&self, v: &[f64], width: usize, keep_going: &mut dyn FnMut() -> bool) -> Result<Vec<f64>, FitError> {
        let system = Henderson::new(self.stats, self.lambda.clone(), 1.0, width, self.pool)?;
        Ok(system.cg(v, keep_going)?.0)
    }

    /// `X'Z v` (pk x width) over the kept columns.
    fn xt_z(&self, v: &[f64], width: usize) -> Vec<f64> {
        let (p, pk) = (self.stats.p, self.cols.len());
        let mut out = vec![0.0; pk * width];
        for (k, t) in self.stats.terms.iter().enumerate() {
            let q = t.q;
            for g in 0..t.n_levels {
                let gx = &t.zx[g * q * p..(g + 1) * q * p];
                for a in 0..q {
                    let row = &v[(self.offsets[k] + g * q + a) * width..(self.offsets[k] + g * q + a + 1) * width];
                    for (i, &c) in self.cols.iter().enumerate() {
                        let x = gx[a * p + c];
                        out[i * width..(i + 1) * width].iter_mut().zip(row).for_each(|(o, r)| *o += x * r);
                    }
                }
            }
        }
        out
    }

    /// `Z'X b` (dim x width) for `b` pk x width over the kept columns.
    fn z_x(&self, b: &[f64], width: usize) -> Vec<f64> {
        let p = self.stats.p;
        let mut out = vec![0.0; self.dim * width];
        for (k, t) in self.stats.terms.iter().enumerate() {
            let q = t.q;
            for g in 0..t.n_levels {
                let gx = &t.zx[g * q * p..(g + 1) * q * p];
                for a in 0..q {
                    let row =
                        &mut out[(self.offsets[k] + g * q + a) * width..(self.offsets[k] + g * q + a + 1) * width];
                    for (i, &c) in self.cols.iter().enumerate() {
                        let x = gx[a * p + c];
                        row.iter_mut().zip(&b[i * width..(i + 1) * width]).for_each(|(o, v)| *o += x * v);
                    }
                }
            }
        }
        out
    }

    /// `Z'P_0 Z E` for vectors `E` on the random effects (`width` columns):
    /// `Z'V_0^-1 Z E - Z'V_0^-1 X S^-1 X'V_0^-1 Z E`, with `Z'V_0^-1 Z E = Z'Z E - Z'Z Lambda s`
    /// and `X'V_0^-1 Z E = X'Z (E - Lambda s)`, `s = C^-1 Lambda'Z'Z E`.
    fn projected(&self, e: &[f64], width: usize, keep_going: &mut dyn FnMut() -> bool) -> Result<Vec<f64>, FitError> {
        let mut zze = self.gram(e, width)?;
        let mut rhs = zze.clone();
        self.lambda_apply(&mut rhs, width, true);
        let mut s = self.solve(&rhs, width, keep_going)?;
        drop(rhs);
        self.lambda_apply(&mut s, width, false);
        let back = self.gram(&s, width)?;
        zze.iter_mut().zip(&back).for_each(|(a, b)| *a -= b);
        drop(back);
        s.iter_mut().zip(e).for_each(|(s, e)| *s = e - *s);
        let xvz = self.xt_z(&s, width);
        drop(s);
        let pk = self.cols.len();
        // d = S^-1 X'V_0^-1 Z E (pk x width), then less Z'V_0^-1 X d.
        let mut d = vec![0.0; pk * width];
        for i in 0..pk {
            for l in 0..pk {
                let f = self.s_inv[i * pk + l];
                d[i * width..(i + 1) * width]
                    .iter_mut()
                    .zip(&xvz[l * width..(l + 1) * width])
                    .for_each(|(o, v)| *o += f * v);
            }
        }
        self.pool.install(|| {
            zze.par_chunks_mut(width).zip(self.zvx.par_chunks(pk.max(1))).for_each(|(row, zv)| {
                for (i, &zvi) in zv.iter().enumerate().take(pk) {
                    row.iter_mut().zip(&d[i * width..(i + 1) * width]).for_each(|(o, v)| *o -= zvi * v);
                }
            });
        });
        Ok(zze)
    }

    /// The samples of `vectors` (`(term l, w on the levels of l)`): every vector is
    /// solved for each column of its term.
    fn samples(
        &self,
        vectors: &[(usize, Vec<f64>)],
        groups: &[Range<usize>],
        m: usize,
        keep_going: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<TraceSample>, FitError> {
        let terms = &self.stats.terms;
        let starts: Vec<usize> = vectors
            .iter()
            .scan(0usize, |acc, (l, _)| {
                let s = *acc;
                *acc += terms[*l].q;
                Some(s)
            })
            .collect();
        let width: usize = vectors.iter().map(|(l, _)| terms[*l].q).sum();
        if width == 0 {
            return Ok(Vec::new());
        }
        let mut e = try_filled(self.dim * width, 0.0, "the efficient estimator's probes")?;
        for ((l, w), &j0) in vectors.iter().zip(&starts) {
            let q = terms[*l].q;
            for (g, &wg) in w.iter().enumerate() {
                for c in 0..q {
                    e[(self.offsets[*l] + g * q + c) * width + j0 + c] = wg;
                }
            }
        }
        let h = self.projected(&e, width, keep_going)?;
        drop(e);
        let samples = self.pool.install(|| {
            vectors
                .par_iter()
                .zip(&starts)
                .map(|((l, w), &j0)| {
                    let ql = terms[*l].q;
                    let own_params: Vec<(usize, usize)> = (0..ql).flat_map(|d| (d..ql).map(move |c| (c, d))).collect();
                    let mut squares = vec![0.0; own_params.len() * m];
                    let mut own = vec![0.0; own_params.len()];
                    for (k, t) in terms.iter().enumerate() {
                        let qk = t.q;
                        // S^{cd}_k[a, b] for every pair of columns (c, d) of term l.
                        let mut s = vec![0.0; ql * ql * qk * qk];
                        for g in 0..t.n_levels {
                            let row = |a: usize| (self.offsets[k] + g * qk + a) * width + j0;
                            for c in 0..ql {
                                for d in 0..ql {
                                    let block = &mut s[(c * ql + d) * qk * qk..(c * ql + d + 1) * qk * qk];
                                    for a in 0..qk {
                                        let hca = h[row(a) + c];
                                        for b in 0..qk {
                                            block[a * qk + b] += hca * h[row(b) + d];
                                        }
                                    }
                                }
                            }
                        }
                        for (j, &(c, d)) in own_params.iter().enumerate() {
                            let block = &s[(c * ql + d) * qk * qk..(c * ql + d + 1) * qk * qk];
                            let factor = if c == d { 1.0 } else { 2.0 };
                            for (i, col) in groups[k].clone().enumerate() {
                                let (a, b) = pair_of(i, qk);
                                let v = if a == b { block[a * qk + a] } else { block[a * qk + b] + block[b * qk + a] };
                                squares[j * m + col] = factor * v;
                            }
                        }
                    }
                    for (j, &(c, d)) in own_params.iter().enumerate() {
                        own[j] = w
                            .iter()
                            .enumerate()
                            .map(|(g, wg)| {
                                let at = |a: usize, col: usize| h[(self.offsets[*l] + g * ql + a) * width + j0 + col];
                                wg * (at(c, d) + if c != d { at(d, c) } else { 0.0 })
                            })
                            .sum();
                    }
                    TraceSample { squares, own }
                })
                .collect()
        });
        Ok(samples)
    }
}

/// `(row, col)` of the `i`-th parameter of a term with `q` columns (its lower triangle by
/// columns, as [`parameter_map`]).
fn pair_of(i: usize, q: usize) -> (usize, usize) {
    let mut at = 0;
    for col in 0..q {
        for row in col..q {
            if at == i {
                return (row, col);
            }
            at += 1;
        }
    }
    unreachable!("parameter {i} of a term with {q} columns")
}

/// The MINQUE equations at `prior` (parameters as [`parameter_map`], `s2` last), in the
/// layout of [`SlopeEquations`] (equation `m` is that of parameter `m`, `s2`'s last);
/// everything but `lhs` and `q` is `moments`'.
pub fn efficient_slope_equations(
    stats: &SlopeStats,
    moments: &SlopeEquations,
    prior: &[f64],
    options: &EfficientOptions,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<(SlopeEquations, TraceAccuracy), FitError> {
    if !options.restricted {
        return Err(FitError::InvalidInput(
            "the efficient estimator for random slopes takes REML's traces only (restricted = true)".into(),
        ));
    }
    let n_params = moments.params.len();
    let m = n_params - 1;
    let s2_prior = prior[m];
    if !(s2_prior > 0.0 && s2_prior.is_finite()) {
        return Err(FitError::NotIdentifiable(format!(
            "the prior residual variance is {s2_prior}, so the efficient equations are undefined"
        )));
    }
    let gammas = prior_gammas(stats, prior, s2_prior);
    let theta0: Vec<f64> = moments.params[..m]
        .iter()
        .map(|pm| {
            let k = pm.term.expect("a term's parameter");
            gammas[k][pm.row * stats.terms[k].q + pm.col]
        })
        .collect();
    let mut groups = Vec::new();
    let mut first = 0;
    for t in &stats.terms {
        let n = t.q * (t.q + 1) / 2;
        groups.push(first..first + n);
        first += n;
    }
    let cols: Vec<usize> = (0..stats.p).filter(|&j| moments.kept[j]).collect();
    let (p, pk) = (stats.p, cols.len());
    let lambda: Vec<Vec<f64>> = stats.terms.iter().zip(&gammas).map(|(t, g)| sqrt_psd(g, t.q)).collect();
    let identity: Vec<Vec<f64>> = stats
        .terms
        .iter()
        .map(|t| (0..t.q * t.q).map(|i| if i / t.q == i % t.q { 1.0 } else { 0.0 }).collect())
        .collect();
    let mut offsets = Vec::new();
    let mut dim = 0;
    for t in &stats.terms {
        offsets.push(dim);
        dim += t.q * t.n_levels;
    }
    let mut at = Prior { stats, cols, lambda, identity, offsets, dim, pool, zvx: Vec::new(), s_inv: Vec::new() };

    // Henderson's equations at the prior with the fixed effects eliminated: A = C^-1 Lambda'Z'X
    // and a = C^-1 Lambda'Z'y solved together (r = pk + 1 columns), S = X'X - X'Z Lambda A,
    // GLS b = S^-1 (X'y - X'Z Lambda a), w = a - A b, u = Lambda w.
    let r = pk + 1;
    let mut identity_x = vec![0.0; pk * r];
    for i in 0..pk {
        identity_x[i * r + i] = 1.0;
    }
    let mut zx_zy = at.z_x(&identity_x, r);
    for (k, t) in stats.terms.iter().enumerate() {
        for (i, &v) in t.zy.iter().enumerate() {
            zx_zy[(at.offsets[k] + i) * r + pk] = v;
        }
    }
    let mut rhs = zx_zy.clone();
    at.lambda_apply(&mut rhs, r, true);
    let solved = at.solve(&rhs, r, keep_going)?;
    // X'Z Lambda [A a] = B'[A a] with B = Lambda'Z'[X y] (pk + 1 rows: the last is y's).
    let mut cross = vec![0.0; r * r];
    for (bi, xi) in rhs.chunks_exact(r).zip(solved.chunks_exact(r)) {
        for a in 0..r {
            for c in 0..r {
                cross[a * r + c] += bi[a] * xi[c];
            }
        }
    }
    let mut schur = vec![0.0; pk * pk];
    for (i, &ci) in at.cols.iter().enumerate() {
        for (j, &cj) in at.cols.iter().enumerate() {
            schur[i * pk + j] = stats.xx[ci * p + cj] - 0.5 * (cross[i * r + j] + cross[j * r + i]);
        }
    }
    let xvy: Vec<f64> = at.cols.iter().enumerate().map(|(i, &ci)| stats.xy[ci] - cross[i * r + pk]).collect();
    let s_inv: Vec<f64> = if pk == 0 {
        Vec::new()
    } else {
        let s_inv = crate::dense::spd_inverse(&faer::Mat::from_fn(pk, pk, |i, j| schur[i * pk + j]), "X'V^-1 X")
            .map_err(|_| {
                FitError::NotIdentifiable(
                    "the fixed effects are not identifiable given the random effects (X'V^-1 X is singular)".into(),
                )
            })?;
        (0..pk * pk).map(|i| s_inv[(i / pk, i % pk)]).collect()
    };
    let b: Vec<f64> = (0..pk).map(|i| (0..pk).map(|j| s_inv[i * pk + j] * xvy[j]).sum()).collect();
    // w = a - A b, and e'e = y'y - b'X'y - w'Lambda'Z'y - w'w (Henderson's equations).
    let mut w: Vec<f64> =
        solved.chunks_exact(r).map(|row| row[pk] - (0..pk).map(|j| row[j] * b[j]).sum::<f64>()).collect();
    let mut e_e = stats.yy - at.cols.iter().zip(&b).map(|(&c, bc)| stats.xy[c] * bc).sum::<f64>();
    for (wi, bi) in w.iter().zip(rhs.chunks_exact(r)) {
        e_e -= wi * bi[pk] + wi * wi;
    }
    drop(rhs);
    // Z'V_0^-1 X = Z'X - Z'Z Lambda A.
    let mut lambda_a: Vec<f64> = solved.chunks_exact(r).flat_map(|row| row[..pk].to_vec()).collect();
    drop(solved);
    at.lambda_apply(&mut lambda_a, pk, false);
    let mut zvx: Vec<f64> = zx_zy.chunks_exact(r).flat_map(|row| row[..pk].to_vec()).collect();
    if pk > 0 {
        let zz_a = at.gram(&lambda_a, pk)?;
        zvx.iter_mut().zip(&zz_a).for_each(|(a, b)| *a -= b);
    }
    drop(lambda_a);
    // z = Z'e = Z'y - Z'X b - Z'Z u per level.
    at.lambda_apply(&mut w, 1, false);
    let zz_u = at.gram(&w, 1)?;
    let zx_b = at.z_x(&b, 1);
    let mut forms = vec![0.0; n_params];
    for (k, t) in stats.terms.iter().enumerate() {
        let q = t.q;
        for g in 0..t.n_levels {
            let z: Vec<f64> = (0..q)
                .map(|a| {
                    let i = at.offsets[k] + g * q + a;
                    zx_zy[i * r + pk] - zx_b[i] - zz_u[i]
                })
                .collect();
            for (i, col) in groups[k].clone().enumerate() {
                let (a, b) = pair_of(i, q);
                forms[col] += z[a] * z[b] * if a == b { 1.0 } else { 2.0 };
            }
        }
    }
    forms[m] = e_e;
    drop(zx_zy);
    at.zvx = zvx;
    at.s_inv = s_inv;
    let at = at;

    // The traces, from probes: every unit vector of the terms with exact traces (few
    // levels, or every term when the system is small), Rademacher probes for the others.
    let n_levels: Vec<usize> = stats.terms.iter().map(|t| t.n_levels).collect();
    let small_system = dim <= options.exact_unknowns;
    let stochastic: Vec<usize> =
        (0..n_levels.len()).filter(|&l| !small_system && n_levels[l] > options.exact_levels).collect();
    let exact_vectors: Vec<(usize, Vec<f64>)> = (0..n_levels.len())
        .filter(|l| !stochastic.contains(l))
        .flat_map(|l| {
            let n = n_levels[l];
            (0..n).map(move |g| (l, unit_vector(n, g)))
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let first_probes = probe_batch(&mut rng, &n_levels, &stochastic, options.min_probes.max(2));
    let mut exact = TraceSums::zeros(m);
    // The unit vectors in batches of at most `exact_unknowns` columns.
    let mut batch = Vec::new();
    let mut columns = 0;
    for (i, v) in exact_vectors.iter().enumerate() {
        columns += stats.terms[v.0].q;
        batch.push(v.clone());
        if columns >= options.exact_unknowns.max(1) || i + 1 == exact_vectors.len() {
            for ((l, _), sample) in batch.iter().zip(at.samples(&batch, &groups, m, keep_going)?) {
                exact.add(groups[*l].clone(), &sample);
            }
            batch.clear();
            columns = 0;
        }
    }
    let to_probes = |samples: Vec<TraceSample>| -> Vec<Vec<TraceSample>> {
        if stochastic.is_empty() {
            return Vec::new();
        }
        samples.chunks(stochastic.len()).map(|c| c.to_vec()).collect()
    };
    let samples = to_probes(at.samples(&first_probes, &groups, m, keep_going)?);
    let design = ProbeDesign {
        groups: &groups,
        stochastic: &stochastic,
        theta0: &theta0,
        forms: &forms,
        n_obs: stats.n_obs as f64,
        n_fixed: pk as f64,
        s2_prior,
    };
    let mut more = |count: usize| -> Result<Vec<Vec<TraceSample>>, FitError> {
        let vectors = probe_batch(&mut rng, &n_levels, &stochastic, count);
        Ok(to_probes(at.samples(&vectors, &groups, m, keep_going)?))
    };
    let (lhs, accuracy) = probe_until_precise(&design, &exact, samples, options, &mut more)?;
    let lhs: Vec<f64> =
        (0..n_params).flat_map(|i| (0..n_params).map(move |j| (i, j))).map(|(i, j)| lhs[(i, j)]).collect();
    Ok((SlopeEquations { lhs, q: forms, ..moments.clone() }, accuracy))
}

/// The moment fit the efficient steps start from, and what the last step's probes did.
#[derive(Debug, Clone)]
pub struct SlopeEfficientStep {
    pub moment_equations: SlopeEquations,
    pub moment_components: SlopeComponents,
    pub accuracy: TraceAccuracy,
    pub steps: usize,
}

/// The efficient fit of a slope model from its (possibly merged) statistics: the moment
/// fit, then `steps` MINQUE steps (at least one), each at the positive semidefinite
/// components of the one before, then Henderson's equations.
pub fn fit_slope_statistics_efficient(
    stats: &SlopeStats,
    options: &EfficientOptions,
    steps: usize,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<(SlopeFit, SlopeEfficientStep), FitError> {
    let moment_equations = slope_equations(stats)?;
    let qs: Vec<usize> = stats.terms.iter().map(|t| t.q).collect();
    let moment_components = solve_components(&moment_equations, &qs)?;
    let mut prior = moment_components.estimate.clone();
    let mut last = None;
    for _ in 0..steps.max(1) {
        let (equations, accuracy) =
            efficient_slope_equations(stats, &moment_equations, &prior, options, pool, keep_going)?;
        let components = solve_components_with(&equations, &qs, false)?;
        prior = components.estimate.clone();
        last = Some((equations, components, accuracy));
    }
    let (equations, components, accuracy) = last.expect("at least one step");
    let mixed = solve_slope_mixed(stats, &equations, &components.estimate, pool, keep_going)?;
    let step = SlopeEfficientStep { moment_equations, moment_components, accuracy, steps: steps.max(1) };
    Ok((SlopeFit { equations, components, mixed }, step))
}
