//! REML and maximum likelihood: the efficient estimator ([`crate::efficient`]) iterated
//! to its fixed point, and the criterion that `logLik` reports.
//!
//! One MINQUE step from `theta_t` is one Fisher scoring step of the restricted likelihood:
//! with `T` and `U` at `theta_t`, `sum_l T_kl theta_t,l = tr(P V_k)` (as `P V P = P`), so
//! `theta_t+1 = T^-1 U = theta_t + I^-1 s` with the score `s_k = (U_k - tr(P V_k)) / 2` and
//! the information `I = T / 2`. At a fixed point the REML equations `y'P V_k P y = tr(P V_k)`
//! hold (with ML's traces, the ML equations). The probes are the same at every step (a
//! fixed stream), so the map is deterministic and its fixed point is the optimum up to
//! the trace estimator's error, which the fit reports.
//!
//! With `V = s2 V_0`, `V_0 = I + Z G Z'`, `C = Z'Z + G^-1` (active terms only: a term at
//! zero leaves `V`), `log det V_0 = sum_k G_k log gamma_k + log det C`, and
//!
//! ```text
//! -2 l_REML = (N - p) log(2 pi s2) + log det V_0 + log det(X'V_0^-1 X) + y'P_0 y / s2
//! -2 l_ML   =  N      log(2 pi s2) + log det V_0                       + y'P_0 y / s2
//! ```
//!
//! (`y'P_0 y = (y - X b)'V_0^-1 (y - X b)` at the GLS `b`), as lme4 defines them.
//! `log det C` comes from a sparse Cholesky factor (faer, fill-reducing ordering); where
//! the factor would be too large (crossed terms with very many levels), the criterion is
//! not computed and the fit says why.

use crate::dense::solve;
use crate::efficient::{efficient_equations, exact_own_traces, EfficientOptions, TraceAccuracy, GAMMA_FLOOR};
use crate::error::FitError;
use crate::mixed::solve_mixed_model;
use crate::moments::{fit_variance_components, MomentEquations, VarianceComponents};
use crate::stats::SufficientStats;
use crate::{components_in, EfficientStep, MomentFit};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::sparse::linalg::cholesky::{
    factorize_symbolic_cholesky, supernodal::SupernodalLltRef, SymbolicCholesky, SymbolicCholeskyRaw,
};
use faer::sparse::{SparseColMat, Triplet};
use faer::{Par, Side};

/// Steps allowed before the iteration is reported as not converged.
pub const MAX_STEPS: usize = 200;
/// The iteration stops when no component moves by more than this fraction of the total
/// variance in a step.
pub const STEP_TOLERANCE: f64 = 1e-8;
/// The largest sparse Cholesky factor (values) made for the log-likelihood: 800 MB.
pub const MAX_FACTOR_VALUES: usize = 100_000_000;

/// The traces of a likelihood fit: more probes than one efficient step uses, and a
/// tighter bound on their error (3% of the sampling sd, so 0.05% of the variance), since
/// the optimum, not only an efficient estimate, is asked for.
pub const TRACES: EfficientOptions = EfficientOptions {
    exact_levels: 16,
    exact_unknowns: 500,
    batch: 16,
    min_probes: 32,
    max_probes: 512,
    noise_ratio: 0.03,
    tolerance: 1e-6,
    seed: 20_261_130,
    restricted: true,
};

/// Which likelihood is maximised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    Reml,
    Ml,
}

/// A likelihood fit: the estimates, the mixed-model solution at them, and the criterion.
#[derive(Debug, Clone)]
pub struct LikelihoodFit {
    pub fit: MomentFit,
    pub criterion: Criterion,
    /// The log-likelihood (REML's or ML's) at the estimates, or why it was not computed.
    pub log_likelihood: Result<f64, String>,
    /// Fisher scoring (MINQUE) steps taken, and whether the last moved the components by
    /// less than [`STEP_TOLERANCE`] of the total variance.
    pub steps: usize,
    pub converged: bool,
    /// The last step, `I^-1 s` (the scaled score), per component: at the optimum it is 0
    /// up to the probes' error (`fit.efficient.accuracy.probe_sd`).
    pub last_step: Vec<f64>,
}

/// Maximises the restricted (`Criterion::Reml`) or full likelihood by Fisher scoring from
/// the moment estimates, each step a MINQUE step with the traces of `options`.
pub fn fit_likelihood(
    stats: &SufficientStats,
    criterion: Criterion,
    options: &EfficientOptions,
    pool: &rayon::ThreadPool,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<LikelihoodFit, FitError> {
    let options = EfficientOptions { restricted: criterion == Criterion::Reml, ..*options };
    let (ols, moment_equations, moment_components) = components_in(stats, pool)?;
    let k_factors = stats.n_factors();
    let mut theta = moment_components.clone();
    let mut last: Option<(MomentEquations, TraceAccuracy)> = None;
    let mut last_step = vec![f64::NAN; k_factors + 1];
    let (mut steps, mut converged) = (0, false);
    while steps < MAX_STEPS {
        let (mut equations, accuracy) = efficient_equations(stats, &ols, &theta, &options, pool, keep_going)?;
        // The score from exact traces where they can be had: then the fixed point is the
        // optimum exactly, the probes entering only the information (the step's metric).
        if let Some(own) = exact_own_traces(stats, &ols, &theta, options.restricted, pool, keep_going)? {
            exact_score(&mut equations, &theta.estimate, &own, &options, stats, ols.kept.len());
        }
        let next = fit_variance_components(&equations)?;
        steps += 1;
        let total: f64 = theta.estimate.iter().sum();
        last_step = next.estimate.iter().zip(&theta.estimate).map(|(a, b)| a - b).collect();
        let moved = last_step.iter().fold(0.0f64, |m, d| m.max(d.abs()));
        last = Some((equations, accuracy));
        if moved <= STEP_TOLERANCE * total {
            // The estimates are the last prior: the equations, the score and the
            // likelihood all refer to it.
            converged = true;
            break;
        }
        theta = next;
    }
    let (equations, accuracy) = last.expect("at least one step");
    // The raw solution of the last equations is kept for reference.
    let components = VarianceComponents { raw: solve(&equations.lhs, &equations.q), ..theta };
    let mixed = solve_mixed_model(stats, &ols, &components, pool, keep_going)?;
    let log_likelihood = log_likelihood(stats, &components.estimate, &mixed, ols.kept.len(), criterion);
    let efficient = EfficientStep { moment_equations, moment_components, accuracy, steps };
    Ok(LikelihoodFit {
        fit: MomentFit { ols, equations, components, mixed, efficient: Some(efficient) },
        criterion,
        log_likelihood,
        steps,
        converged,
        last_step,
    })
}

/// Replaces the probes' traces in the right-hand side of the Fisher step by exact ones:
/// the step solves `T theta' = T theta + U - s2 t` (`t` the traces `tr(P_0 V_k)`, the
/// residual's `tr(P_0) = N - p - sum_l gamma_l t_l`), and `T theta = s2 t_probes` row by
/// row, so the right side is `U + s2 (t_probes - t_exact)` where `t` is exact.
fn exact_score(
    equations: &mut MomentEquations,
    theta: &[f64],
    own: &[Option<f64>],
    options: &EfficientOptions,
    stats: &SufficientStats,
    rank: usize,
) {
    let k_factors = own.len();
    let s2 = theta[k_factors];
    let dim = k_factors + 1;
    // T theta, row by row (rows: residual, then terms; columns: terms, then residual).
    let t_theta: Vec<f64> = (0..dim).map(|row| (0..dim).map(|c| equations.lhs[(row, c)] * theta[c]).sum()).collect();
    let gamma: Vec<f64> = (0..k_factors).map(|k| (theta[k] / s2).max(GAMMA_FLOOR)).collect();
    let dimensions = stats.n_obs as f64 - if options.restricted { rank as f64 } else { 0.0 };
    let mut trace_p = dimensions;
    for k in 0..k_factors {
        // The term's trace: exact where known, else the probes' (t = (T theta) / s2).
        let t_k = own[k].unwrap_or(t_theta[k + 1] / s2);
        if own[k].is_some() {
            equations.q[k + 1] += t_theta[k + 1] - s2 * t_k;
        }
        trace_p -= gamma[k] * t_k;
    }
    if own.iter().all(Option::is_some) {
        equations.q[0] += t_theta[0] - s2 * trace_p;
    }
}

/// The log-likelihood at `theta` (random-effect variances, then `s2`) from the
/// mixed-model solution there.
fn log_likelihood(
    stats: &SufficientStats,
    theta: &[f64],
    mixed: &crate::MixedModelSolution,
    rank: usize,
    criterion: Criterion,
) -> Result<f64, String> {
    let k_factors = stats.n_factors();
    let s2 = theta[k_factors];
    let gamma: Vec<Option<f64>> = theta[..k_factors].iter().map(|&v| (v > 0.0).then(|| v / s2)).collect();
    let log_det_c = log_det_henderson(stats, &gamma)?;
    let log_det_v0: f64 = log_det_c
        + gamma.iter().zip(&stats.levels).filter_map(|(g, lv)| g.map(|g| lv.n_levels() as f64 * g.ln())).sum::<f64>();
    let n = stats.n_obs as f64;
    let two_pi_s2 = (2.0 * std::f64::consts::PI * s2).ln();
    let minus_two = match criterion {
        Criterion::Reml => (n - rank as f64) * two_pi_s2 + log_det_v0 + mixed.log_det_gls + mixed.quadratic_form / s2,
        Criterion::Ml => n * two_pi_s2 + log_det_v0 + mixed.quadratic_form / s2,
    };
    Ok(-0.5 * minus_two)
}

/// `log det C`, `C = Z'Z + G^-1` over the terms with `gamma[k] = Some(s2_k / s2)`, by a
/// sparse Cholesky factor of its lower triangle (diagonal `n_g + 1/gamma_k`, the cell
/// counts between terms below it).
pub fn log_det_henderson(stats: &SufficientStats, gamma: &[Option<f64>]) -> Result<f64, String> {
    let mut offsets = Vec::with_capacity(gamma.len());
    let mut size = 0usize;
    for (k, g) in gamma.iter().enumerate() {
        offsets.push(g.map(|_| size));
        if g.is_some() {
            size += stats.levels[k].n_levels();
        }
    }
    if size == 0 {
        return Ok(0.0);
    }
    let mut entries: Vec<Triplet<usize, usize, f64>> = Vec::new();
    for (k, g) in gamma.iter().enumerate() {
        let (Some(g), Some(offset)) = (g, offsets[k]) else { continue };
        for (i, &count) in stats.levels[k].counts.iter().enumerate() {
            entries.push(Triplet::new(offset + i, offset + i, count as f64 + 1.0 / g));
        }
        for l in k + 1..gamma.len() {
            let Some(offset_l) = offsets[l] else { continue };
            let (cells, transposed) = stats.cells_of(k, l);
            for a in 0..cells.n_rows() {
                for (b, count) in cells.row(a) {
                    let (g_k, m_l) = if transposed { (b, a) } else { (a, b) };
                    entries.push(Triplet::new(offset_l + m_l, offset + g_k, count as f64));
                }
            }
        }
    }
    let matrix = SparseColMat::<usize, f64>::try_new_from_triplets(size, size, &entries)
        .map_err(|e| format!("the matrix of Henderson's equations could not be formed: {e:?}"))?;
    drop(entries);
    let symbolic = factorize_symbolic_cholesky(matrix.symbolic(), Side::Lower, Default::default(), Default::default())
        .map_err(|e| format!("the sparse Cholesky analysis failed: {e:?}"))?;
    if symbolic.len_val() > MAX_FACTOR_VALUES {
        return Err(format!(
            "the log-likelihood needs a sparse Cholesky factor of {} values ({:.1} GB), more than the {} allowed: the crossed terms have too many levels for an exact determinant",
            symbolic.len_val(),
            symbolic.len_val() as f64 * 8e-9,
            MAX_FACTOR_VALUES
        ));
    }
    let mut values = Vec::new();
    values
        .try_reserve_exact(symbolic.len_val())
        .map_err(|_| "the Cholesky factor does not fit in memory".to_string())?;
    values.resize(symbolic.len_val(), 0.0);
    let scratch = symbolic.factorize_numeric_llt_scratch::<f64>(Par::Seq, Default::default());
    let mut buffer =
        MemBuffer::try_new(scratch).map_err(|_| "the Cholesky workspace does not fit in memory".to_string())?;
    symbolic
        .factorize_numeric_llt::<f64>(
            &mut values,
            matrix.as_ref(),
            Side::Lower,
            Default::default(),
            Par::Seq,
            MemStack::new(&mut buffer),
            Default::default(),
        )
        .map_err(|e| format!("the matrix of Henderson's equations is not positive definite: {e:?}"))?;
    Ok(log_det_of_factor(&symbolic, &values))
}

/// `log det A` from the values of a sparse Cholesky factor `L` of `A` (`2 sum log L_jj`).
pub(crate) fn log_det_of_factor(symbolic: &SymbolicCholesky<usize>, values: &[f64]) -> f64 {
    let diagonal_logs: f64 = match symbolic.raw() {
        SymbolicCholeskyRaw::Simplicial(s) => {
            // Column j of L starts with its diagonal entry.
            let starts = s.col_ptr();
            (0..symbolic.nrows()).map(|j| values[starts[j]].ln()).sum()
        }
        SymbolicCholeskyRaw::Supernodal(s) => {
            let factor = SupernodalLltRef::<'_, usize, f64>::new(s, values);
            (0..s.n_supernodes())
                .map(|i| {
                    let block = factor.supernode(i).val();
                    (0..block.ncols()).map(|j| block[(j, j)].ln()).sum::<f64>()
                })
                .sum()
        }
    };
    2.0 * diagonal_logs
}
