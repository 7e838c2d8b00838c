//! The efficient estimator: one MINQUE step from the moment estimates.
//!
//! The unweighted moment equations of [`crate::moments`] are unbiased but waste much of
//! the information in unbalanced data (heavy-tailed level sizes). The REML equations
//! `y'P V_k P y = tr(P V_k)` are efficient; with `P` fixed at a prior `theta_0`, the
//! forms `U_k = y'P_0 V_k P_0 y` have expectations `sum_l theta_l tr(P_0 V_k P_0 V_l)`
//! for any distribution with these second moments, and equating them is MINQUE(`theta_0`)
//! (C. R. Rao 1971): unbiased for every fixed `theta_0`, and with `theta_0` the consistent
//! moment estimate as efficient as REML asymptotically (one Fisher scoring step;
//! iterating converges to REML). Here `V_k = Z_k Z_k'`, `V_e = I`, and `theta_0` is
//! scaled so that `s2_0 = 1`: `V_0 = I + Z G Z'`, `G = diag(gamma_k)`, `gamma_k = s2_k/s2`.
//!
//! Everything is in level space, from the sufficient statistics. With `C = Z'Z + G^-1`
//! (the matrix of Henderson's equations, [`RandomEffectsMatrix`]),
//! `Z'V_0^-1 x = G^-1 C^-1 Z'x`, so with `u` the BLUPs and `b` the GLS fixed effects at
//! `theta_0`, `P_0 y = y - X b - Z u` and
//!
//! ```text
//! U_k = ||u_k||^2 / gamma_k^2,    U_e = ||P_0 y||^2 = y'y - b'X'y - u'Z'y - u'G^-1 u.
//! ```
//!
//! For a vector `w` on the levels of term `l` (`e_w` in the unknowns), `A = C^-1 Z'X`
//! and `S = X'V_0^-1 X`,
//!
//! ```text
//! Z'P_0 Z_l w = G^-1 h,    h = v - A S^-1 X'Z (e_w - v),    v = C^-1 Z'Z e_w,
//! ```
//!
//! (`v = e_w - C^-1 G^-1 e_w`, solved from `Z'Z e_w` so that nothing cancels for a small
//! `gamma_l`; with ML's traces `h = v`),
//!
//! so `T_kl = tr(P_0 V_k P_0 V_l) = ||Z_k'P_0 Z_l||_F^2 = E_w ||h_k||^2 / gamma_k^2` and
//! `t_l = tr(P_0 V_l) = E_w w'h_l / gamma_l` over probes with `E[w w'] = I`: every unit
//! vector of a term with few levels (exact), Rademacher vectors otherwise (Hutchinson's
//! estimator; one solve with `C` per probe serves every `k`). The residual's row and
//! column follow from `P_0 V_0 P_0 = P_0` and `tr(P_0 V_0) = N - rank(X)`:
//!
//! ```text
//! T_ke = t_k - sum_l gamma_l T_kl,   tr(P_0) = N - rank(X) - sum_l gamma_l t_l,
//! T_ee = tr(P_0) - sum_l gamma_l T_le.
//! ```
//!
//! The probes' error is measured by the jackknife over probes and compared with the
//! sampling sd of the estimates under normality, `sqrt(2 s2_0^2 diag(T^-1))` (`T / 2`
//! is REML's information at `theta_0`); probes are added in batches until the first is at
//! most [`EfficientOptions::noise_ratio`] of the second. The probes come from a fixed
//! ChaCha8 stream, so results do not depend on the threads.
//!
//! That part ([`probe_until_precise`]: the traces' sums, the residual's row and column,
//! the jackknife and the batches) works on groups of parameters whose probes give their
//! columns of `T`: here every term is a group of one parameter, and
//! [`crate::efficient_slopes`] makes a term with `q` columns a group of `q(q + 1)/2`.

use crate::error::{try_filled, FitError};
use crate::mixed::{gls_from_solution, RandomEffectsMatrix};
use crate::moments::{MomentEquations, VarianceComponents};
use crate::ols::OlsFit;
use crate::stats::SufficientStats;
use faer::Mat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::ops::Range;

/// The smallest ratio `s2_k / s2` used for the prior: a term estimated at zero keeps its
/// equation (the level-space identities divide by `gamma_k`) while its weight in `V_0`
/// is nil for every purpose (`gamma_k n_g` far below 1). The probes' right-hand sides are
/// `Z'Z e_w`, so nothing cancels however small it is.
pub const GAMMA_FLOOR: f64 = 1e-8;

/// How the traces are estimated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EfficientOptions {
    /// Terms with at most this many levels get exact traces (one solve per level), and
    /// so does every term when all of them have at most `exact_unknowns` levels together
    /// (a small system, where exact traces cost little).
    pub exact_levels: usize,
    pub exact_unknowns: usize,
    /// Rademacher probes per term and batch.
    pub batch: usize,
    /// Probes per term at the least (the jackknife needs a few) and at the most.
    pub min_probes: usize,
    pub max_probes: usize,
    /// Stop adding probes once the probes' sd of every component is at most this
    /// fraction of its sampling sd (0.1: the probes add at most 1% to the variance).
    pub noise_ratio: f64,
    /// Relative residual of the solves for the probes: an error of this order in a trace
    /// is far below the sampling error (about `sqrt(2 / levels)` relative) at any size.
    pub tolerance: f64,
    pub seed: u64,
    /// REML's traces, with `P_0` (true), or ML's, with `V_0^-1` in place of `P_0` in
    /// `T_kl = tr(V_0^-1 V_k V_0^-1 V_l)` and `tr(V_0^-1 V_k)` (false): iterating the
    /// latter converges to maximum likelihood, as the former does to REML. The forms
    /// `y'P_0 V_k P_0 y` are the same for both.
    pub restricted: bool,
}

impl Default for EfficientOptions {
    fn default() -> Self {
        EfficientOptions {
            exact_levels: 16,
            exact_unknowns: 500,
            batch: 8,
            min_probes: 8,
            max_probes: 512,
            noise_ratio: 0.1,
            tolerance: 1e-4,
            seed: 20_261_130,
            restricted: true,
        }
    }
}

/// What the trace estimation did, per component (the `K` terms, then the residual).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceAccuracy {
    /// Rademacher probes per term (0 where the traces are exact).
    pub probes: Vec<usize>,
    /// The probes' standard deviation of every raw component (jackknife; 0 when exact).
    pub probe_sd: Vec<f64>,
    /// The sampling sd of every component under normality at the prior.
    pub model_sd: Vec<f64>,
}

/// The MINQUE equations at `prior`, in the layout of [`MomentEquations`]: row 0 is the
/// residual's equation (`U_e`), row `k + 1` that of term `k`; unknowns `s2_1..s2_K, s2`.
/// So [`crate::fit_variance_components`] solves them with the same boundary rule.
pub fn efficient_equations(
    stats: &SufficientStats,
    ols: &OlsFit,
    prior: &VarianceComponents,
    options: &EfficientOptions,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<(MomentEquations, TraceAccuracy), FitError> {
    let k_factors = stats.n_factors();
    let s2_prior = prior.estimate[k_factors];
    if !(s2_prior > 0.0 && s2_prior.is_finite()) {
        return Err(FitError::NotIdentifiable(format!(
            "the prior residual variance is {s2_prior}, so the efficient equations are undefined"
        )));
    }
    let gamma: Vec<f64> = (0..k_factors).map(|k| (prior.estimate[k] / s2_prior).max(GAMMA_FLOOR)).collect();
    let lambda: Vec<Option<f64>> = gamma.iter().map(|g| Some(1.0 / g)).collect();
    let system = pool.install(|| RandomEffectsMatrix::new(stats, &lambda));
    let terms = system.term_ranges();
    let kept = &ols.kept;
    let q = kept.len();
    let r = q + 1;

    // Henderson's equations at the prior (A = C^-1 Z'X, a = C^-1 Z'y, then GLS b and the
    // BLUPs u), the unit vectors of the terms with exact traces and the first batch of
    // probes are solved together: one pass over the cells per iteration serves them all.
    let small_system = system.size() <= options.exact_unknowns;
    let stochastic: Vec<usize> =
        (0..k_factors).filter(|&l| !small_system && stats.levels[l].n_levels() > options.exact_levels).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let n_levels_of: Vec<usize> = stats.levels.iter().map(|lv| lv.n_levels()).collect();
    let mut first: Vec<(usize, Vec<f64>)> = (0..k_factors)
        .filter(|l| !stochastic.contains(l))
        .flat_map(|l| (0..stats.levels[l].n_levels()).map(move |g| (l, unit_vector(stats.levels[l].n_levels(), g))))
        .collect();
    let n_exact = first.len();
    first.extend(probe_batch(&mut rng, &n_levels_of, &stochastic, options.min_probes.max(2)));
    let zt = system.level_sums(stats, kept);
    let m = system.size();
    let henderson = system.solve(&zt, r, crate::mixed::CG_TOLERANCE, pool, keep_going)?;
    let (solved, residual) = (henderson.x, henderson.residual);
    let width = unrolled_width(first.len());
    let rhs = gram_of_vectors(&system, &first, width, &terms, pool)?;
    // With every trace exact (few levels), they are solved as tightly as the fit.
    let tolerance = if stochastic.is_empty() { crate::mixed::CG_TOLERANCE } else { options.tolerance };
    let first_solve = system.solve(&rhs, width, tolerance, pool, keep_going)?;
    drop(rhs);
    let first_v = first_solve.x;
    let (schur_inv, b) = gls_from_solution(stats, kept, &zt, &solved, &residual, pool)?;
    let u: Vec<f64> = (0..m)
        .into_par_iter()
        .map(|i| {
            let row = &solved[i * r..(i + 1) * r];
            row[q] - (0..q).map(|c| row[c] * b[c]).sum::<f64>()
        })
        .collect();

    // The quadratic forms.
    let mut forms = vec![0.0; k_factors + 1];
    let mut u_zty = 0.0;
    let mut u_ginv_u = 0.0;
    for (k, range) in &terms {
        let uk = &u[range.clone()];
        let ss: f64 = uk.iter().map(|v| v * v).sum();
        forms[k + 1] = ss / (gamma[*k] * gamma[*k]);
        u_ginv_u += ss / gamma[*k];
        u_zty += range.clone().map(|i| u[i] * zt[i * r + q]).sum::<f64>();
    }
    let b_xty: f64 = kept.iter().zip(&b).map(|(&j, bj)| stats.xty[j] * bj).sum();
    forms[0] = stats.yty - b_xty - u_zty - u_ginv_u;

    // The traces, from probes.
    let probes = Probes {
        restricted: options.restricted,
        system: &system,
        terms: &terms,
        gamma: &gamma,
        zt: &zt,
        solved: &solved,
        schur_inv: &schur_inv,
        q,
    };
    let first_samples = probes.samples_of(&first_v, width, &first, pool);
    let groups: Vec<Range<usize>> = (0..k_factors).map(|k| k..k + 1).collect();
    let mut exact = TraceSums::zeros(k_factors);
    for ((l, _), sample) in first.iter().zip(&first_samples).take(n_exact) {
        exact.add(groups[*l].clone(), sample);
    }
    // samples[j][i]: probe j of the i-th stochastic term.
    let mut samples: Vec<Vec<TraceSample>> = Vec::new();
    if !stochastic.is_empty() {
        for per_probe in first_samples[n_exact..].chunks(stochastic.len()) {
            samples.push(per_probe.to_vec());
        }
    }
    // The generic equations take the forms in the unknowns' order (terms, then e).
    let mut generic_forms = forms[1..].to_vec();
    generic_forms.push(forms[0]);
    let design = ProbeDesign {
        groups: &groups,
        stochastic: &stochastic,
        theta0: &gamma,
        forms: &generic_forms,
        n_obs: stats.n_obs as f64,
        // tr(P_0 V_0) = N - rank(X); tr(V_0^-1 V_0) = N.
        n_fixed: if options.restricted { q as f64 } else { 0.0 },
        s2_prior,
    };
    let mut more = |count: usize| -> Result<Vec<Vec<TraceSample>>, FitError> {
        let vectors = probe_batch(&mut rng, &n_levels_of, &stochastic, count);
        let width = unrolled_width(vectors.len());
        let rhs = gram_of_vectors(&system, &vectors, width, &terms, pool)?;
        let v = system.solve(&rhs, width, options.tolerance, pool, keep_going)?.x;
        let batch = probes.samples_of(&v, width, &vectors, pool);
        Ok(batch.chunks(stochastic.len()).map(|c| c.to_vec()).collect())
    };
    let (lhs, accuracy) = probe_until_precise(&design, &exact, samples, options, &mut more)?;
    // MomentEquations' layout: row 0 is the residual's equation, row k + 1 term k's.
    let dim = k_factors + 1;
    let lhs = Mat::from_fn(dim, dim, |i, j| lhs[((i + dim - 1) % dim, j)]);
    let n_levels = stats.levels.iter().map(|lv| lv.counts.iter().filter(|&&c| c > 0).count()).collect();
    let equations = MomentEquations { factor_names: stats.factor_names.clone(), n_levels, lhs, q: forms };
    Ok((equations, accuracy))
}

/// What [`probe_until_precise`] needs besides the samples: the parameters (every
/// variance parameter of the terms, not the residual) that each group's probes give the
/// columns of `T` and the traces of, which groups are probed stochastically, the prior
/// `theta_0` (scaled so that `s2_0 = 1`, one value per parameter: `V_0 = I + sum_m
/// theta_0m V_m`), the forms `U` (the parameters', then `U_e`), `N`, `rank(X)` (0 for
/// ML's traces) and `s2_0`.
pub(crate) struct ProbeDesign<'a> {
    pub(crate) groups: &'a [Range<usize>],
    pub(crate) stochastic: &'a [usize],
    pub(crate) theta0: &'a [f64],
    pub(crate) forms: &'a [f64],
    pub(crate) n_obs: f64,
    pub(crate) n_fixed: f64,
    pub(crate) s2_prior: f64,
}

/// The MINQUE equations from the exact trace sums and the probes' samples (`samples[j][i]`:
/// probe `j` of the `i`-th stochastic group), asking `more(count)` for batches of `count`
/// probes of every stochastic group until the probes' jackknife sd of every component is
/// at most [`EfficientOptions::noise_ratio`] of its sampling sd (or `max_probes`).
/// Returns `T` ((m + 1) x (m + 1): the parameters, then the residual, for rows and
/// columns alike) and the accuracy. An intercept term is a group of one parameter; a
/// term with q columns ([`crate::efficient_slopes`]) one of q(q + 1) / 2.
pub(crate) fn probe_until_precise(
    design: &ProbeDesign<'_>,
    exact: &TraceSums,
    mut samples: Vec<Vec<TraceSample>>,
    options: &EfficientOptions,
    more: &mut dyn FnMut(usize) -> Result<Vec<Vec<TraceSample>>, FitError>,
) -> Result<(Mat<f64>, TraceAccuracy), FitError> {
    let n_groups = design.groups.len();
    loop {
        let done_with_probes = design.stochastic.is_empty()
            || (samples.len() >= options.min_probes && {
                let accuracy = accuracy_of(design, exact, &samples);
                accuracy.probe_sd.iter().zip(&accuracy.model_sd).all(|(p, s)| *p <= options.noise_ratio * s)
            })
            || samples.len() >= options.max_probes;
        if done_with_probes {
            let lhs = assemble(design, &Traces::from(design, exact, &samples, None));
            let mut accuracy = if design.stochastic.is_empty() {
                let model_sd = model_sd(&lhs, design.s2_prior);
                TraceAccuracy { probes: vec![0; n_groups], probe_sd: vec![0.0; lhs.nrows()], model_sd }
            } else {
                accuracy_of(design, exact, &samples)
            };
            for &l in design.stochastic {
                accuracy.probes[l] = samples.len();
            }
            return Ok((lhs, accuracy));
        }
        samples.extend(more(options.batch.max(1))?);
    }
}

/// The number of columns solved for `n` vectors: zero columns pad it to a width whose
/// cell sums are unrolled (a zero column costs a little and converges at once).
fn unrolled_width(n: usize) -> usize {
    match n {
        0..=4 => n,
        5..=8 => 8,
        9..=12 => 12,
        13..=16 => 16,
        17..=24 => 24,
        25..=32 => 32,
        _ => n,
    }
}

/// `count` Rademacher probes for every stochastic term, probe by probe.
pub(crate) fn probe_batch(
    rng: &mut ChaCha8Rng,
    n_levels: &[usize],
    stochastic: &[usize],
    count: usize,
) -> Vec<(usize, Vec<f64>)> {
    let mut out = Vec::with_capacity(count * stochastic.len());
    for _ in 0..count {
        for &l in stochastic {
            out.push((l, (0..n_levels[l]).map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 }).collect()));
        }
    }
    out
}

pub(crate) fn unit_vector(n: usize, g: usize) -> Vec<f64> {
    let mut w = vec![0.0; n];
    w[g] = 1.0;
    w
}

/// Writes each `(term, w)` into column `first + j` of the row-major `rhs` (`width`
/// values a level), on the unknowns of its term.
fn place_vectors(
    rhs: &mut [f64],
    width: usize,
    first: usize,
    vectors: &[(usize, Vec<f64>)],
    terms: &[(usize, Range<usize>)],
) {
    for (j, (l, w)) in vectors.iter().enumerate() {
        let range = terms.iter().find(|(f, _)| f == l).map(|(_, r)| r.clone()).expect("every term is active");
        for (g, i) in range.enumerate() {
            rhs[i * width + first + j] = w[g];
        }
    }
}

/// `Z'Z e_w` for every vector, `width` columns by level (the right-hand sides of the probes).
fn gram_of_vectors(
    system: &RandomEffectsMatrix<'_>,
    vectors: &[(usize, Vec<f64>)],
    width: usize,
    terms: &[(usize, Range<usize>)],
    pool: &rayon::ThreadPool,
) -> Result<Vec<f64>, FitError> {
    let m = system.size();
    let mut placed = try_filled(m * width, 0.0, "the efficient estimator's probes")?;
    place_vectors(&mut placed, width, 0, vectors, terms);
    let mut rhs = try_filled(m * width, 0.0, "the efficient estimator's probes")?;
    pool.install(|| system.apply_gram(&placed, &mut rhs, width));
    Ok(rhs)
}

/// One probe's contributions for a group of parameters (`own.len()` of them): column `j`
/// of `T` (the group's `j`-th parameter) in `squares[j * m..(j + 1) * m]`, the trace of
/// that parameter in `own[j]`. For an intercept term: `||h_k||^2 / gamma_k^2` for every
/// term `k`, and `w'h_l / gamma_l`.
#[derive(Debug, Clone)]
pub(crate) struct TraceSample {
    pub(crate) squares: Vec<f64>,
    pub(crate) own: Vec<f64>,
}

/// Sums of exact (unit-vector) samples: `T` by column and the traces `t`.
pub(crate) struct TraceSums {
    squares: Vec<Vec<f64>>,
    own: Vec<f64>,
}

impl TraceSums {
    pub(crate) fn zeros(m: usize) -> TraceSums {
        TraceSums { squares: vec![vec![0.0; m]; m], own: vec![0.0; m] }
    }
    /// Adds a sample of the group whose parameters are `columns`.
    pub(crate) fn add(&mut self, columns: Range<usize>, s: &TraceSample) {
        let m = self.own.len();
        for (j, c) in columns.enumerate() {
            self.squares[c].iter_mut().zip(&s.squares[j * m..(j + 1) * m]).for_each(|(a, b)| *a += b);
            self.own[c] += s.own[j];
        }
    }
}

/// `T_kl` (by column `l`) and `t_l`.
struct Traces {
    by_column: Vec<Vec<f64>>,
    own: Vec<f64>,
}

impl Traces {
    /// Exact sums plus the means of the stochastic samples, leaving out probe `skip`.
    fn from(design: &ProbeDesign<'_>, exact: &TraceSums, samples: &[Vec<TraceSample>], skip: Option<usize>) -> Traces {
        let mut by_column = exact.squares.clone();
        let mut own = exact.own.clone();
        let m = own.len();
        let used = (samples.len() - skip.map_or(0, |_| 1)) as f64;
        for (i, &l) in design.stochastic.iter().enumerate() {
            for (j, c) in design.groups[l].clone().enumerate() {
                by_column[c] = vec![0.0; m];
                own[c] = 0.0;
                for (p, probe) in samples.iter().enumerate() {
                    if Some(p) == skip {
                        continue;
                    }
                    by_column[c]
                        .iter_mut()
                        .zip(&probe[i].squares[j * m..(j + 1) * m])
                        .for_each(|(a, b)| *a += b / used);
                    own[c] += probe[i].own[j] / used;
                }
            }
        }
        Traces { by_column, own }
    }
}

/// The `(m + 1) x (m + 1)` matrix `T`: parameters, then the residual (rows and columns).
/// The residual's row and column follow from `P_0 V_0 P_0 = P_0` (module documentation).
fn assemble(design: &ProbeDesign<'_>, traces: &Traces) -> Mat<f64> {
    let m = traces.own.len();
    let theta0 = design.theta0;
    let mut lhs = Mat::<f64>::zeros(m + 1, m + 1);
    // T_kl from the probes of l and of k are two estimates of one number.
    for k in 0..m {
        for l in 0..m {
            lhs[(k, l)] = 0.5 * (traces.by_column[l][k] + traces.by_column[k][l]);
        }
    }
    let mut trace_p = design.n_obs - design.n_fixed;
    for k in 0..m {
        let t_ke = traces.own[k] - (0..m).map(|l| theta0[l] * lhs[(k, l)]).sum::<f64>();
        lhs[(k, m)] = t_ke;
        lhs[(m, k)] = t_ke;
        trace_p -= theta0[k] * traces.own[k];
    }
    lhs[(m, m)] = trace_p - (0..m).map(|l| theta0[l] * lhs[(m, l)]).sum::<f64>();
    lhs
}

/// `sqrt(2 s2_0^2 diag(T^-1))` in the order of the unknowns (`T` as [`assemble`]'s).
fn model_sd(lhs: &Mat<f64>, s2_prior: f64) -> Vec<f64> {
    let dim = lhs.nrows();
    let inverse = crate::dense::spd_inverse(lhs, "the efficient equations");
    (0..dim)
        .map(|i| match &inverse {
            Ok(inv) => (2.0 * inv[(i, i)]).max(0.0).sqrt() * s2_prior,
            Err(_) => f64::NAN,
        })
        .collect()
}

/// The probes' jackknife sd of the raw components, and the model sd.
fn accuracy_of(design: &ProbeDesign<'_>, exact: &TraceSums, samples: &[Vec<TraceSample>]) -> TraceAccuracy {
    let full = assemble(design, &Traces::from(design, exact, samples, None));
    let m = samples.len();
    let leave_outs: Vec<Vec<f64>> = (0..m)
        .map(|j| crate::dense::solve(&assemble(design, &Traces::from(design, exact, samples, Some(j))), design.forms))
        .collect();
    let probe_sd = (0..full.nrows())
        .map(|c| {
            let mean = leave_outs.iter().map(|v| v[c]).sum::<f64>() / m as f64;
            let ss: f64 = leave_outs.iter().map(|v| (v[c] - mean).powi(2)).sum();
            ((m as f64 - 1.0) / m as f64 * ss).sqrt()
        })
        .collect();
    TraceAccuracy { probes: vec![0; design.groups.len()], probe_sd, model_sd: model_sd(&full, design.s2_prior) }
}

/// What a probe needs: the system at the prior and the pieces of its GLS solution.
struct Probes<'a> {
    restricted: bool,
    system: &'a RandomEffectsMatrix<'a>,
    terms: &'a [(usize, Range<usize>)],
    gamma: &'a [f64],
    zt: &'a [f64],
    solved: &'a [f64],
    schur_inv: &'a Mat<f64>,
    q: usize,
}

impl Probes<'_> {
    /// The samples of `vectors` (`(term l, w on the levels of l)`) from their solutions
    /// `v = C^-1 e_w` (row-major, `width` columns of which the first are the vectors').
    fn samples_of(
        &self,
        v: &[f64],
        width: usize,
        vectors: &[(usize, Vec<f64>)],
        pool: &rayon::ThreadPool,
    ) -> Vec<TraceSample> {
        let n = vectors.len();
        let m = self.system.size();
        let range_of =
            |l: usize| self.terms.iter().find(|(f, _)| *f == l).map(|(_, r)| r.clone()).expect("every term is active");
        let (q, r) = (self.q, self.q + 1);
        // S^-1 X'Z (e_w - v) for every probe (REML's projection; none for ML).
        let d: Vec<Vec<f64>> = pool.install(|| {
            (0..n)
                .into_par_iter()
                .map(|j| {
                    if !self.restricted {
                        return vec![0.0; q];
                    }
                    let (l, w) = &vectors[j];
                    let own_range = range_of(*l);
                    let mut s = vec![0.0; q];
                    for i in 0..m {
                        let probe = if own_range.contains(&i) { w[i - own_range.start] } else { 0.0 };
                        let ei = probe - v[i * width + j];
                        for c in 0..q {
                            s[c] += self.zt[i * r + c] * ei;
                        }
                    }
                    (0..q).map(|a| (0..q).map(|c| self.schur_inv[(a, c)] * s[c]).sum()).collect()
                })
                .collect()
        });
        pool.install(|| {
            (0..n)
                .into_par_iter()
                .map(|j| {
                    let (l, w) = &vectors[j];
                    let own_range = range_of(*l);
                    let mut squares = vec![0.0; self.gamma.len()];
                    let mut own = 0.0;
                    for (k, range) in self.terms {
                        let mut ss = 0.0;
                        for i in range.clone() {
                            let a_d: f64 = (0..q).map(|c| self.solved[i * r + c] * d[j][c]).sum();
                            let h = v[i * width + j] - a_d;
                            ss += h * h;
                            if own_range.contains(&i) {
                                own += w[i - own_range.start] * h;
                            }
                        }
                        squares[*k] = ss / (self.gamma[*k] * self.gamma[*k]);
                    }
                    TraceSample { squares, own: vec![own / self.gamma[*l]] }
                })
                .collect()
        })
    }
}

/// The exact traces `tr(P_0 V_k)` (REML; `tr(V_0^-1 V_k)` for ML) of every term at
/// `prior`, in the units of [`efficient_equations`] (`s2_0 = 1`), where they can be had:
/// from `Z'V_0^-1 Z = G^-1 - G^-1 C^-1 G^-1` and `Z'V_0^-1 X = G^-1 A` (`A = C^-1 Z'X`),
///
/// ```text
/// tr(V_0^-1 V_k) = (G_k - tr(C^-1)_kk / gamma_k) / gamma_k,
/// tr(P_0 V_k)    = tr(V_0^-1 V_k) - tr(S^-1 A_k'A_k) / gamma_k^2,
/// ```
///
/// with `diag(C^-1)` exact ([`crate::condvar`], Schur complement) when the levels outside
/// the largest term are few enough; `None` otherwise. A term with `gamma_k n_g` tiny on
/// average gets `None` in its place: the difference above would cancel.
pub fn exact_own_traces(
    stats: &SufficientStats,
    ols: &OlsFit,
    prior: &VarianceComponents,
    restricted: bool,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<Option<Vec<Option<f64>>>, FitError> {
    use crate::condvar::{inverse_diagonal, DiagonalMethod};
    let k_factors = stats.n_factors();
    let s2_prior = prior.estimate[k_factors];
    let gamma: Vec<f64> = (0..k_factors).map(|k| (prior.estimate[k] / s2_prior).max(GAMMA_FLOOR)).collect();
    let lambda: Vec<Option<f64>> = gamma.iter().map(|g| Some(1.0 / g)).collect();
    let inverse = inverse_diagonal(stats, &lambda, DiagonalMethod::Auto, pool, keep_going)?;
    if !inverse.exact {
        return Ok(None);
    }
    // A and S^-1 for REML's projection.
    let projection = if restricted {
        let system = pool.install(|| RandomEffectsMatrix::new(stats, &lambda));
        let zt = system.level_sums(stats, &ols.kept);
        let r = ols.kept.len() + 1;
        let solution = system.solve(&zt, r, crate::mixed::CG_TOLERANCE, pool, keep_going)?;
        let (schur_inv, _) = gls_from_solution(stats, &ols.kept, &zt, &solution.x, &solution.residual, pool)?;
        Some((system.term_ranges(), solution.x, schur_inv, r))
    } else {
        None
    };
    let n_obs = stats.n_obs as f64;
    let traces = (0..k_factors)
        .map(|k| {
            let g = gamma[k];
            let levels = stats.levels[k].n_levels() as f64;
            if g * n_obs / levels.max(1.0) < 1e-4 {
                return None;
            }
            let inverse_trace: f64 = inverse.diagonal[k].iter().sum();
            let mut trace = (levels - inverse_trace / g) / g;
            if let Some((ranges, solved, schur_inv, r)) = &projection {
                let q = r - 1;
                let range =
                    ranges.iter().find(|(f, _)| *f == k).map(|(_, range)| range.clone()).expect("every term is active");
                let mut cross = Mat::<f64>::zeros(q, q);
                for i in range {
                    let a = &solved[i * r..i * r + q];
                    for u in 0..q {
                        for v in 0..q {
                            cross[(u, v)] += a[u] * a[v];
                        }
                    }
                }
                trace -= crate::dense::trace_of_product(schur_inv, &cross) / (g * g);
            }
            Some(trace)
        })
        .collect();
    Ok(Some(traces))
}
