//! The extendr layer of the fullrandom R package: it converts R vectors into borrowed
//! slices, calls `fullrandom_core` (which holds all the statistics), and converts the
//! result into an R list. No R object is touched from a worker thread: the core only
//! sees slices, and R objects are built after the parallel work has returned.

// Each exported function takes its R function's arguments, one for one.
#![allow(clippy::too_many_arguments)]

use extendr_api::prelude::*;
use extendr_api::AsTypedSlice;
use extendr_api::Result;
use extendr_ffi::SEXPTYPE;
use fullrandom_core::bootstrap::Estimator;
use fullrandom_core::{FactorCodes, FixedColumn, MixedModelSolution, ModelData, SufficientStats};

mod glmm;
mod glmm_chunks;
mod slopes;

/// The entries of a matrix in R's (column-major) order.
pub(crate) fn column_major(m: &faer::Mat<f64>) -> Vec<f64> {
    (0..m.ncols()).flat_map(|j| (0..m.nrows()).map(move |i| m[(i, j)])).collect()
}

// R's own entry points for polling interrupts. R_CheckUserInterrupt may jump out of the
// function that calls it, so it only ever runs inside R_ToplevelExec, which catches the
// jump and reports it as FALSE. (`Rboolean` is read as one byte: 0 is FALSE whether R
// declares it as an enum or as bool.)
extern "C" {
    fn R_ToplevelExec(fun: extern "C" fn(*mut std::ffi::c_void), data: *mut std::ffi::c_void) -> u8;
    fn R_CheckUserInterrupt();
}

extern "C" fn check_interrupt(_: *mut std::ffi::c_void) {
    // SAFETY: called by R_ToplevelExec on the main R thread; no Rust frame with
    // destructors lies between this call and the jump target.
    unsafe { R_CheckUserInterrupt() }
}

/// True unless the user has pressed Ctrl-C (or Esc) since the last check. Called only
/// from the thread that called into R, between iterations of the solver.
pub(crate) fn no_user_interrupt() -> bool {
    // SAFETY: R is single-threaded and this runs on its thread (see above).
    unsafe { R_ToplevelExec(check_interrupt, std::ptr::null_mut()) != 0 }
}

/// The fixed-effect columns: `x` is a double matrix (by column, as R stores it) or a
/// list with one double vector per column, where `NULL` stands for a column of ones (the
/// intercept, never materialised). Borrowed, not copied.
pub(crate) fn fixed_columns(x: Robj, n_rows: usize, x_names: &[String]) -> Result<Vec<FixedColumn<'static>>> {
    let values: Option<&'static [f64]> = AsTypedSlice::as_typed_slice(&x);
    if let Some(values) = values {
        if values.len() != n_rows * x_names.len() {
            return Err(Error::Other(format!(
                "the fixed-effect matrix has {} values, expected {} x {}",
                values.len(),
                n_rows,
                x_names.len()
            )));
        }
        return Ok(FixedColumn::columns_of(values, n_rows));
    }
    let columns = x
        .as_list()
        .ok_or_else(|| Error::Other("the fixed effects must be a double matrix or a list of columns".into()))?;
    if columns.len() != x_names.len() {
        return Err(Error::Other(format!("{} fixed-effect columns for {} names", columns.len(), x_names.len())));
    }
    columns
        .values()
        .zip(x_names)
        .map(|(column, name)| {
            if column.is_null() {
                return Ok(FixedColumn::Ones);
            }
            // Borrowed for 'a (as the factor codes are): an element lives as long as the
            // list, which the caller's `x` keeps alive.
            let values: Option<&'static [f64]> = AsTypedSlice::as_typed_slice(&column);
            values
                .map(FixedColumn::Values)
                .ok_or_else(|| Error::Other(format!("the fixed-effect column '{name}' must be a double vector")))
        })
        .collect()
}

/// The element `name` of a named R list.
pub(crate) fn element(list: &List, name: &str) -> Option<Robj> {
    list.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// Borrows the model as R passes it, a named list (`y`, `x`, `x_names`, `intercept`,
/// `codes`, `n_levels`, `labels`; see fr_moment_fit()), as a [`ModelData`] (checked
/// lengths, no copies of the data).
pub(crate) fn model_data(model: &List) -> Result<ModelData<'static>> {
    let field = |name: &str| -> Result<Robj> {
        element(model, name).ok_or_else(|| Error::Other(format!("the model lacks '{name}'")))
    };
    // The slices borrow the vectors of the caller's list, which R keeps alive for the
    // whole call (the same unbounded borrow extendr's as_integer_slice gives).
    let y: &'static [f64] = AsTypedSlice::as_typed_slice(&field("y")?)
        .ok_or_else(|| Error::Other("the response must be a double vector".into()))?;
    let x_names: Vec<String> = field("x_names")?.try_into()?;
    let intercept: i32 = field("intercept")?.try_into()?;
    let labels: Vec<String> = field("labels")?.try_into()?;
    let n_levels: Vec<i32> = field("n_levels")?.try_into()?;
    let x = fixed_columns(field("x")?, y.len(), &x_names)?;
    let codes = field("codes")?;
    let codes = codes.as_list().ok_or_else(|| Error::Other("the codes must be a list".into()))?;
    if codes.len() != labels.len() || n_levels.len() != labels.len() {
        return Err(Error::Other("codes, n_levels and labels differ in length".into()));
    }
    let mut factors = Vec::with_capacity(labels.len());
    for ((code, n), label) in codes.values().zip(&n_levels).zip(&labels) {
        let codes = code
            .as_integer_slice()
            .ok_or_else(|| Error::Other(format!("the codes of '{label}' must be an integer vector")))?;
        factors.push(FactorCodes { name: label.clone(), codes, offset: 1, n_levels: (*n).max(0) as usize });
    }
    Ok(ModelData { y, x, x_names, intercept: usize::try_from(intercept).ok(), factors })
}

/// The GLS fixed effects, their covariance and the BLUPs as R values.
fn mixed_values(mixed: &fullrandom_core::MixedModelSolution) -> List {
    let ranef = List::from_values(mixed.ranef.iter().map(|u| Robj::from(u.as_slice())));
    list!(
        gls_coef = mixed.coef.clone(),
        vcov = column_major(&mixed.vcov),
        ranef = ranef,
        mme_residual = mixed.relative_residual,
        mme_iterations = mixed.iterations as i32
    )
}

/// Fitted values and residuals of the fit as two new R vectors, filled in parallel by
/// the core (the R vectors are allocated here, on R's thread; the workers only write
/// into their memory).
fn fitted_values(
    data: &ModelData<'_>,
    coef: &[f64],
    ranef: &[Vec<f64>],
    threads: usize,
) -> Result<Vec<(&'static str, Robj)>> {
    let n = data.n_obs();
    let mut fitted = Robj::alloc_vector(SEXPTYPE::REALSXP, n);
    let mut residuals = Robj::alloc_vector(SEXPTYPE::REALSXP, n);
    {
        let fitted_values = fitted.as_real_slice_mut().expect("a double vector");
        let residual_values = residuals.as_real_slice_mut().expect("a double vector");
        fullrandom_core::run_with_threads(threads, || {
            fullrandom_core::fitted_and_residuals(data, coef, ranef, fitted_values, residual_values)
        })
        .and_then(|r| r)
        .map_err(|e| Error::Other(e.to_string()))?;
    }
    Ok(vec![("fitted", fitted), ("residuals", residuals)])
}

/// What every method returns: OLS, the moment equations, the components and the
/// mixed-model solution, as named R values.
fn estimate_values(
    ols: &fullrandom_core::OlsFit,
    equations: &fullrandom_core::MomentEquations,
    components: &fullrandom_core::VarianceComponents,
    mixed: &fullrandom_core::MixedModelSolution,
) -> Vec<(&'static str, Robj)> {
    vec![
        ("coef", ols.coef.clone().into()),
        ("kept", ols.kept.iter().map(|&j| j as i32 + 1).collect::<Vec<i32>>().into()),
        ("lhs", column_major(&equations.lhs).into()),
        ("q", equations.q.clone().into()),
        ("raw", components.raw.clone().into()),
        ("estimate", components.estimate.clone().into()),
        ("at_boundary", components.at_boundary.clone().into()),
        ("mixed", mixed_values(mixed).into()),
    ]
}

/// The estimates of `method` ("reml", "ml", "efficient", "moments" or "fr") from sufficient statistics, as named R
/// values: OLS, the moment equations, the components, the mixed-model solution and, for
/// "fr", a list `fr` with the group sizes and the iteration.
fn fit_statistics(
    stats: &SufficientStats,
    method: &str,
    size_columns: &[i32],
    threads: usize,
) -> Result<(Vec<(&'static str, Robj)>, MixedModelSolution)> {
    if let Some(criterion) = likelihood_criterion(method) {
        let fit = fullrandom_core::fit_likelihood_from_stats_with(stats, criterion, threads, &mut no_user_interrupt)
            .map_err(r_error)?;
        let mut values = estimate_values(&fit.fit.ols, &fit.fit.equations, &fit.fit.components, &fit.fit.mixed);
        if let Some(step) = &fit.fit.efficient {
            values.push(("efficient", efficient_values(step).into()));
        }
        let (log_likelihood, reason) = match &fit.log_likelihood {
            Ok(value) => (*value, String::new()),
            Err(why) => (f64::NAN, why.clone()),
        };
        values.push((
            "likelihood",
            list!(
                log_likelihood = log_likelihood,
                restricted = criterion == fullrandom_core::Criterion::Reml,
                reason = reason,
                steps = fit.steps as i32,
                converged = fit.converged,
                last_step = fit.last_step.clone()
            )
            .into(),
        ));
        return Ok((values, fit.fit.mixed));
    }
    if method == "efficient" {
        let fit = fullrandom_core::fit_efficient_from_stats_with(
            stats,
            &fullrandom_core::EfficientOptions::default(),
            1,
            threads,
            &mut no_user_interrupt,
        )
        .map_err(r_error)?;
        let mut values = estimate_values(&fit.ols, &fit.equations, &fit.components, &fit.mixed);
        if let Some(step) = &fit.efficient {
            values.push(("efficient", efficient_values(step).into()));
        }
        return Ok((values, fit.mixed));
    }
    match estimator_of(method, size_columns)? {
        Estimator::Moments => {
            let fit = fullrandom_core::fit_from_stats_with(stats, threads, &mut no_user_interrupt).map_err(r_error)?;
            Ok((estimate_values(&fit.ols, &fit.equations, &fit.components, &fit.mixed), fit.mixed))
        }
        Estimator::FullRandomness { size_columns, options } => {
            let fit = fullrandom_core::fit_full_randomness_from_stats_with(
                stats,
                &size_columns,
                options,
                threads,
                &mut no_user_interrupt,
            )
            .map_err(r_error)?;
            let mut values = estimate_values(&fit.ols, &fit.equations, &fit.components, &fit.mixed);
            let crossed = match &fit.crossed {
                None => Robj::from(()),
                Some(c) => list!(
                    n_columns = c.columns.n_groups as i32,
                    column_mean = c.columns.mean,
                    column_variance = c.columns.variance,
                    n_cells = c.n_cells as f64,
                    row_repeats = c.row_repeats,
                    column_repeats = c.column_repeats,
                    rows_shared = c.rows_shared,
                    columns_shared = c.columns_shared
                )
                .into(),
            };
            let fr = list!(
                n_groups = fit.group_sizes.n_groups as i32,
                size_mean = fit.group_sizes.mean,
                size_variance = fit.group_sizes.variance,
                coef_in_equations = fit.coef_in_equations,
                iterations = fit.iterations as i32,
                shared = fit.shared,
                centred = fit.centred,
                crossed = crossed
            );
            values.push(("fr", fr.into()));
            Ok((values, fit.mixed))
        }
    }
}

/// The likelihood that `method` maximises: "reml" or "ml".
fn likelihood_criterion(method: &str) -> Option<fullrandom_core::Criterion> {
    match method {
        "reml" => Some(fullrandom_core::Criterion::Reml),
        "ml" => Some(fullrandom_core::Criterion::Ml),
        _ => None,
    }
}

/// What the efficient estimator adds: the moment fit it started from (its equations'
/// right sides, raw and final components) and the accuracy of its traces.
fn efficient_values(step: &fullrandom_core::EfficientStep) -> List {
    let to_i32 = |v: &[usize]| v.iter().map(|&p| p as i32).collect::<Vec<i32>>();
    list!(
        moment_lhs = column_major(&step.moment_equations.lhs),
        moment_q = step.moment_equations.q.clone(),
        moment_raw = step.moment_components.raw.clone(),
        moment_estimate = step.moment_components.estimate.clone(),
        probes = to_i32(&step.accuracy.probes),
        probe_sd = step.accuracy.probe_sd.clone(),
        model_sd = step.accuracy.model_sd.clone(),
        steps = step.steps as i32
    )
}

/// The estimator of a bootstrap replicate for the method R names: "moments", or "fr"
/// with its 0-based size() columns ("fr_shared": the crossed equations with the
/// shared-level correction of eq. 27; "fr_centred", "fr_shared_centred": the equations of
/// the least-squares residuals). Replicates of "efficient" fits are refitted by the
/// moment equations (the efficient step on copies of levels is not implemented), and so
/// are those of "reml" and "ml" fits: their spread is that of the less precise
/// estimator, so the intervals are conservative.
fn estimator_of(method: &str, size_columns: &[i32]) -> Result<Estimator> {
    match method {
        "moments" | "efficient" | "reml" | "ml" => Ok(Estimator::Moments),
        "fr" | "fr_shared" | "fr_centred" | "fr_shared_centred" => Ok(Estimator::FullRandomness {
            size_columns: size_columns.iter().filter_map(|&j| usize::try_from(j).ok()).collect(),
            options: fullrandom_core::FrOptions {
                shared: method.starts_with("fr_shared"),
                centred: method.ends_with("_centred"),
            },
        }),
        other => Err(Error::Other(format!("unknown method '{other}'"))),
    }
}

pub(crate) fn r_error(e: fullrandom_core::FitError) -> Error {
    Error::Other(e.to_string())
}

/// Fit variance components by the method of moments, then the GLS fixed effects and
/// BLUPs (internal; use fr_fit()). Checks for user interrupts between solver iterations.
///
/// @param model the model as a named list: `y` the response (double); `x` the
///   fixed-effect columns, a double n x p matrix or a list of p double vectors of length
///   n in which NULL stands for a column of ones (the intercept); `x_names` their names;
///   `intercept` the 0-based index of the intercept column, or -1; `codes` a list of
///   integer vectors of 1-based level codes, one per random term; `n_levels` the number
///   of levels of each term; `labels` the terms' labels.
/// @param method "reml" or "ml" (the likelihoods, maximised by Fisher scoring from the
///   moment estimates), "efficient" (one MINQUE step from the moment estimates), "moments" (the
///   unbiased equations of every term), "fr" (Matloff's
///   Full Randomness estimator, one term or two crossed ones; "fr_shared" with the
///   shared-level correction, "fr_centred" and "fr_shared_centred" the equations of the
///   least-squares residuals), "components" (the variance components of
///   "moments" alone, without GLS or BLUPs) or "statistics" (the sufficient statistics
///   alone, to be merged with those of other chunks by fr_merged_fit()).
/// @param size_columns for "fr": 0-based indices of the columns that are functions of
///   the group size (from size() terms).
/// @param keep_statistics whether to return the sufficient statistics too (as
///   `statistics`), for "moments" and "fr".
/// @param threads number of worker threads.
/// @return the OLS fit, the moment equations, the components, the mixed-model solution,
///   the fitted values and residuals and, for "fr", a list `fr` with the group sizes and
///   the iteration.
/// @noRd
#[extendr]
fn fr_moment_fit(
    model: List,
    method: &str,
    size_columns: Vec<i32>,
    keep_statistics: bool,
    threads: i32,
) -> Result<List> {
    let data = model_data(&model)?;
    let threads = threads.max(1) as usize;
    match method {
        "moments" | "fr" | "fr_shared" | "fr_centred" | "fr_shared_centred" | "efficient" | "reml" | "ml" => {
            let stats = fullrandom_core::compute_statistics(&data, threads).map_err(r_error)?;
            let (mut values, mixed) = fit_statistics(&stats, method, &size_columns, threads)?;
            values.extend(fitted_values(&data, &mixed.coef, &mixed.ranef, threads)?);
            if keep_statistics {
                values.push(("statistics", statistics_to_r(&stats).into()));
            }
            Ok(List::from_pairs(values))
        }
        "statistics" => {
            let stats = fullrandom_core::compute_statistics(&data, threads).map_err(r_error)?;
            Ok(statistics_to_r(&stats))
        }
        // The default method's variance components alone, without GLS or BLUPs (for
        // the benchmarks, which time the two halves of a fit).
        "components" => {
            let (ols, equations, components) = fullrandom_core::fit_components(&data, threads).map_err(r_error)?;
            Ok(list!(
                coef = ols.coef,
                lhs = column_major(&equations.lhs),
                q = equations.q,
                raw = components.raw,
                estimate = components.estimate
            ))
        }
        other => Err(Error::Other(format!("unknown method '{other}'"))),
    }
}

/// Merges the sufficient statistics of chunks and fits them (internal; fr_fit() with
/// `chunks`): every chunk's levels are first renumbered onto the levels of the whole data
/// (matched by label in R), then the chunks are merged in order, each re-expressed about
/// the first chunk's pilot shift.
///
/// @param parts list of statistics, from fr_moment_fit(method = "statistics").
/// @param level_maps list (one per chunk) of lists (one per random term) of 1-based
///   integer vectors: the global level of each of the chunk's levels; NULL when the
///   chunks already share the global levels (row sets of one model frame).
/// @param n_levels the global number of levels of each term.
/// @param method "reml", "ml", "efficient", "moments" or "fr".
/// @param size_columns for "fr": 0-based indices of the size() columns.
/// @param components NULL, or the variance components (random terms, then the residual)
///   at which to solve the mixed-model equations instead of estimating them.
/// @param threads number of worker threads.
/// @return as fr_moment_fit() without the fitted values, with `n_obs` and `level_counts`
///   (per term, the rows of every global level).
/// @noRd
#[extendr]
fn fr_merged_fit(
    parts: List,
    level_maps: Robj,
    n_levels: Vec<i32>,
    method: &str,
    size_columns: Vec<i32>,
    components: Robj,
    threads: i32,
) -> Result<List> {
    let threads = threads.max(1) as usize;
    let level_maps = if level_maps.is_null() {
        None
    } else {
        let maps = level_maps.as_list().ok_or_else(|| Error::Other("level maps must be a list or NULL".into()))?;
        if parts.len() != maps.len() {
            return Err(Error::Other("one level map per chunk is needed".into()));
        }
        Some(maps)
    };
    let n_levels: Vec<usize> = n_levels.iter().map(|&n| n.max(0) as usize).collect();
    // One chunk at a time (converted, relevelled, merged, dropped), so that at most the
    // running total and one chunk are held besides R's lists.
    let mut merged: Option<SufficientStats> = None;
    for (chunk, part) in parts.values().enumerate() {
        let in_chunk = |e: String| Error::Other(format!("chunk {}: {e}", chunk + 1));
        let mut stats = statistics_from_r(&part).map_err(in_chunk)?;
        if let Some(level_maps) = &level_maps {
            let maps = level_maps.elt(chunk)?;
            let maps = maps.as_list().ok_or_else(|| Error::Other("level maps must be lists".into()))?;
            let maps: Vec<Vec<usize>> = maps
                .values()
                .map(|m| {
                    m.as_integer_slice()
                        .map(|codes| codes.iter().map(|&c| (c.max(1) - 1) as usize).collect())
                        .ok_or_else(|| Error::Other("a level map must be an integer vector".into()))
                })
                .collect::<Result<_>>()?;
            stats = stats.relevelled(&maps, &n_levels).map_err(|e| in_chunk(e.to_string()))?;
        }
        merged = Some(match merged {
            None => stats,
            Some(total) => total.merge_reshifted(&stats).map_err(|e| in_chunk(e.to_string()))?,
        });
    }
    let merged = merged.ok_or_else(|| Error::Other("no chunks to merge".into()))?;
    let mut values = if components.is_null() {
        fit_statistics(&merged, method, &size_columns, threads)?.0
    } else {
        let estimate =
            components.as_real_slice().ok_or_else(|| Error::Other("the components must be a double vector".into()))?;
        let (ols, mixed) =
            fullrandom_core::fit_at_components(&merged, estimate, threads, &mut no_user_interrupt).map_err(r_error)?;
        vec![
            ("coef", ols.coef.clone().into()),
            ("kept", ols.kept.iter().map(|&j| j as i32 + 1).collect::<Vec<i32>>().into()),
            ("mixed", mixed_values(&mixed).into()),
        ]
    };
    values.push(("n_obs", (merged.n_obs as f64).into()));
    let counts = List::from_values(
        merged.levels.iter().map(|l| Robj::from(l.counts.iter().map(|&c| c as f64).collect::<Vec<f64>>())),
    );
    values.push(("level_counts", counts.into()));
    Ok(List::from_pairs(values))
}

/// Sufficient statistics as an R list of plain vectors, so that they travel between R
/// processes (a worker computes them, the main process merges them). Counts are doubles
/// (exact below 2^53).
fn statistics_to_r(stats: &SufficientStats) -> List {
    let as_f64 = |v: &[u64]| v.iter().map(|&c| c as f64).collect::<Vec<f64>>();
    let levels = List::from_values(
        stats
            .levels
            .iter()
            .map(|l| Robj::from(list!(counts = as_f64(&l.counts), sum_y = l.sum_y.clone(), sum_x = l.sum_x.clone()))),
    );
    let cells = List::from_values(stats.cells.iter().map(|c| {
        Robj::from(list!(
            row_starts = c.row_starts.iter().map(|&v| v as f64).collect::<Vec<f64>>(),
            cols = c.cols.iter().map(|&v| v as i32).collect::<Vec<i32>>(),
            counts = c.counts.iter().map(|&v| v as f64).collect::<Vec<f64>>(),
            n_cols = c.n_cols as f64
        ))
    }));
    list!(
        n_obs = stats.n_obs as f64,
        shift_y = stats.shift.y,
        shift_x = stats.shift.x.clone(),
        x_names = stats.x_names.clone(),
        intercept = stats.intercept.map_or(-1, |j| j as i32),
        factor_names = stats.factor_names.clone(),
        xtx = stats.xtx.clone(),
        xty = stats.xty.clone(),
        yty = stats.yty,
        sum_y = stats.sum_y,
        sum_x = stats.sum_x.clone(),
        levels = levels,
        cells = cells
    )
}

/// The inverse of [`statistics_to_r`], checking every field's type.
fn statistics_from_r(x: &Robj) -> std::result::Result<SufficientStats, String> {
    let list = x.as_list().ok_or("the statistics must be a list")?;
    let get = |name: &str| element(&list, name).ok_or_else(|| format!("the statistics lack '{name}'"));
    let reals = |r: &Robj, name: &str| -> std::result::Result<Vec<f64>, String> {
        r.as_real_slice().map(|v| v.to_vec()).ok_or_else(|| format!("'{name}' must be a double vector"))
    };
    let real = |name: &str| -> std::result::Result<Vec<f64>, String> { reals(&get(name)?, name) };
    let scalar = |name: &str| -> std::result::Result<f64, String> {
        real(name)?.first().copied().ok_or_else(|| format!("'{name}' is empty"))
    };
    let strings = |name: &str| -> std::result::Result<Vec<String>, String> {
        get(name)?
            .as_str_vector()
            .map(|v| v.iter().map(|s| s.to_string()).collect())
            .ok_or_else(|| format!("'{name}' must be a character vector"))
    };
    let counts = |v: Vec<f64>| -> std::result::Result<Vec<u64>, String> {
        v.into_iter()
            .map(|c| if c >= 0.0 && c.fract() == 0.0 { Ok(c as u64) } else { Err(format!("invalid count {c}")) })
            .collect()
    };
    let sublists = |name: &str| -> std::result::Result<Vec<Robj>, String> {
        Ok(get(name)?.as_list().ok_or_else(|| format!("'{name}' must be a list"))?.values().collect())
    };
    let field = |l: &Robj, name: &str| -> std::result::Result<Robj, String> {
        l.as_list().and_then(|l| element(&l, name)).ok_or_else(|| format!("a level or cell table lacks '{name}'"))
    };
    let levels = sublists("levels")?
        .iter()
        .map(|l| {
            Ok(fullrandom_core::stats::LevelSums {
                counts: counts(reals(&field(l, "counts")?, "counts")?)?,
                sum_y: reals(&field(l, "sum_y")?, "sum_y")?,
                sum_x: reals(&field(l, "sum_x")?, "sum_x")?,
            })
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    let cells = sublists("cells")?
        .iter()
        .map(|c| {
            let cols = field(c, "cols")?;
            let cols = cols.as_integer_slice().ok_or("'cols' must be an integer vector")?;
            let cell_counts = counts(reals(&field(c, "counts")?, "counts")?)?;
            Ok(fullrandom_core::grouping::CellCounts {
                row_starts: counts(reals(&field(c, "row_starts")?, "row_starts")?)?
                    .into_iter()
                    .map(|v| v as usize)
                    .collect(),
                cols: cols.iter().map(|&m| m as u32).collect(),
                counts: cell_counts.into_iter().map(|v| v as u32).collect(),
                n_cols: reals(&field(c, "n_cols")?, "n_cols")?.first().copied().unwrap_or(0.0) as usize,
            })
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    let intercept = real("intercept").or_else(|_| {
        get("intercept")?.as_integer().map(|v| vec![v as f64]).ok_or_else(|| "'intercept' must be a number".to_string())
    })?;
    let stats = SufficientStats {
        n_obs: scalar("n_obs")? as u64,
        shift: fullrandom_core::Shift { y: scalar("shift_y")?, x: real("shift_x")? },
        x_names: strings("x_names")?,
        intercept: usize::try_from(intercept.first().copied().unwrap_or(-1.0) as i64).ok(),
        factor_names: strings("factor_names")?,
        xtx: real("xtx")?,
        xty: real("xty")?,
        yty: scalar("yty")?,
        sum_y: scalar("sum_y")?,
        sum_x: real("sum_x")?,
        levels,
        cells,
    };
    stats.check_shape().map_err(|e| e.to_string())?;
    Ok(stats)
}

/// Fitted values and residuals at given coefficients (all columns, NA where aliased) and
/// BLUPs (one vector per term, in the order of `codes`), computed in parallel (internal:
/// fits in chunks compute them after the merge).
/// @param model the model, as for fr_moment_fit().
/// @return a list: `fitted`, `residuals`.
/// @noRd
#[extendr]
fn fr_fitted(model: List, coef: Vec<f64>, ranef: List, threads: i32) -> Result<List> {
    let data = model_data(&model)?;
    let ranef: Vec<Vec<f64>> = ranef
        .values()
        .map(|u| u.as_real_slice().map(|v| v.to_vec()).ok_or_else(|| Error::Other("BLUPs must be doubles".into())))
        .collect::<Result<_>>()?;
    Ok(List::from_pairs(fitted_values(&data, &coef, &ranef, threads.max(1) as usize)?))
}

/// The pigeonhole bootstrap of a fit (internal; use fr_bootstrap()): `nsim` replicates,
/// each resampling the levels of every random term independently, refitted by `method`,
/// in parallel. Between batches of replicates, on R's thread, it checks for user
/// interrupts and calls `progress(done)`.
///
/// @param model the model, as for fr_moment_fit().
/// @param method "efficient" (refitted by "moments"), "moments" or "fr".
/// @param size_columns for "fr": 0-based size() columns.
/// @param nsim number of replicates.
/// @param seed the seed of the replicates' streams, a whole number in [0, 2^53).
/// @param threads number of worker threads.
/// @param progress NULL, or a function of the number of replicates done.
/// @param multiplicities NULL, or a list with one integer vector per random term giving
///   the number of copies of every level: then the one replicate these describe.
/// @return a list: `components` (nsim x (K + 1), by column), `raw` (the same before the
///   boundary rule), `coef` (nsim x p, by column, NaN where aliased) and `errors` (NA,
///   or why the replicate could not be fitted).
/// @noRd
#[extendr]
fn fr_bootstrap_fit(
    model: List,
    method: &str,
    size_columns: Vec<i32>,
    nsim: i32,
    seed: f64,
    threads: i32,
    progress: Robj,
    multiplicities: Robj,
) -> Result<List> {
    use fullrandom_core::bootstrap::{Pigeonhole, Workers};
    use fullrandom_core::error::{try_filled, try_with_capacity};
    let data = model_data(&model)?;
    let threads = threads.max(1) as usize;
    let estimator = estimator_of(method, &size_columns)?;
    if !((0.0..9007199254740992.0).contains(&seed) && seed.fract() == 0.0) {
        return Err(Error::Other("the bootstrap seed must be a whole number in [0, 2^53)".into()));
    }
    let pool = fullrandom_core::thread_pool(threads).map_err(r_error)?;
    let stats = pool.install(|| fullrandom_core::SufficientStats::compute(&data)).map_err(r_error)?;
    let boot = Pigeonhole::new(&data, stats).map_err(r_error)?;
    let results = if multiplicities.is_null() {
        let nsim = u64::try_from(nsim).map_err(|_| Error::Other("nsim must be positive".into()))?;
        let progress = if progress.is_null() { None } else { progress.as_function() };
        let batch = 4 * threads as u64;
        let workers = Workers::new(threads).map_err(r_error)?;
        let mut results = try_with_capacity(nsim as usize, "the bootstrap replicates").map_err(r_error)?;
        let mut done = 0;
        while done < nsim {
            let end = (done + batch).min(nsim);
            results.extend(boot.run(&estimator, seed as u64, done..end, &workers));
            done = end;
            if !no_user_interrupt() {
                return Err(r_error(fullrandom_core::FitError::Interrupted));
            }
            if let Some(f) = &progress {
                f.call(pairlist!(done as i32))?;
            }
        }
        results
    } else {
        let list = multiplicities.as_list().ok_or_else(|| Error::Other("multiplicities must be a list".into()))?;
        let w: Vec<Vec<u32>> = list
            .values()
            .map(|v| {
                v.as_integer_slice()
                    .filter(|w| w.iter().all(|&c| c >= 0))
                    .map(|w| w.iter().map(|&c| c as u32).collect())
                    .ok_or_else(|| Error::Other("multiplicities must be non-negative integer vectors".into()))
            })
            .collect::<Result<_>>()?;
        vec![boot.fit(&w, &estimator, &pool)]
    };
    let k = data.factors.len() + 1;
    let p = data.n_fixed();
    let n = results.len();
    // nsim comes from the user: every buffer of its size is allocated fallibly.
    let what = "the bootstrap replicates' estimates";
    let mut components = try_filled(n.saturating_mul(k), f64::NAN, what).map_err(r_error)?;
    let mut raw = try_filled(n.saturating_mul(k), f64::NAN, what).map_err(r_error)?;
    let mut coef = try_filled(n.saturating_mul(p), f64::NAN, what).map_err(r_error)?;
    let mut errors: Vec<Option<String>> = try_filled(n, None, what).map_err(r_error)?;
    for (b, result) in results.into_iter().enumerate() {
        match result {
            Ok(r) => {
                r.components.iter().enumerate().for_each(|(j, v)| components[j * n + b] = *v);
                r.raw.iter().enumerate().for_each(|(j, v)| raw[j * n + b] = *v);
                r.coef.iter().enumerate().for_each(|(j, v)| coef[j * n + b] = *v);
            }
            Err(e) => errors[b] = Some(e.to_string()),
        }
    }
    let errors: Vec<Rstr> = errors.into_iter().map(|e| e.map(Rstr::from).unwrap_or_else(Rstr::na)).collect();
    Ok(list!(components = components, raw = raw, coef = coef, errors = errors))
}

/// The diagonal of `(Z'Z + L)^-1` of a model at given variance ratios (internal; for
/// ranef(condVar = TRUE)): the conditional variances of the BLUPs divided by `s2`.
///
/// @param model the model, as for fr_moment_fit().
/// @param lambda per random term `s2 / s2_k`, or a non-positive or non-finite value for
///   terms at zero (which drop out; their values are 0).
/// @param method "auto", "exact" or "stochastic".
/// @param probes probes of "stochastic".
/// @param seed seed of the probes.
/// @param threads number of worker threads.
/// @return a list: `diagonal` and `std_error` (lists, one vector per term), `exact`,
///   `probes` and `max_relative_error`.
/// @noRd
#[extendr]
fn fr_inverse_diagonal(
    model: List,
    lambda: Vec<f64>,
    method: &str,
    probes: i32,
    seed: f64,
    threads: i32,
) -> Result<List> {
    use fullrandom_core::condvar::{inverse_diagonal, DiagonalMethod};
    let data = model_data(&model)?;
    let method = match method {
        "auto" => DiagonalMethod::Auto,
        "exact" => DiagonalMethod::Exact,
        "stochastic" => DiagonalMethod::Stochastic { probes: probes.max(2) as usize, seed: seed.max(0.0) as u64 },
        other => return Err(Error::Other(format!("unknown method '{other}'"))),
    };
    if lambda.len() != data.factors.len() {
        return Err(Error::Other("one variance ratio per random term is needed".into()));
    }
    let lambda: Vec<Option<f64>> =
        lambda.iter().map(|&l| if l.is_finite() && l > 0.0 { Some(l) } else { None }).collect();
    let pool = fullrandom_core::thread_pool(threads.max(1) as usize).map_err(r_error)?;
    let stats = pool.install(|| fullrandom_core::SufficientStats::compute(&data)).map_err(r_error)?;
    let out = inverse_diagonal(&stats, &lambda, method, &pool, &mut no_user_interrupt).map_err(r_error)?;
    let as_list = |v: &[Vec<f64>]| List::from_values(v.iter().map(|d| Robj::from(d.as_slice())));
    Ok(list!(
        diagonal = as_list(&out.diagonal),
        std_error = as_list(&out.std_error),
        exact = out.exact,
        probes = out.probes as i32,
        max_relative_error = out.max_relative_error
    ))
}

/// Rows per level of a factor's 1-based codes, counted in parallel (internal; the model
/// frame uses it to find unused levels and missing codes in one pass).
/// @param codes integer codes (a factor).
/// @param n_levels its number of levels.
/// @param threads number of worker threads.
/// @return a list: `counts` (double, one per level) and `other`, the number of codes
///   that are NA or outside the levels.
/// @noRd
#[extendr]
fn fr_level_counts(codes: Robj, n_levels: i32, threads: i32) -> Result<List> {
    let codes = codes.as_integer_slice().ok_or_else(|| Error::Other("the codes must be an integer vector".into()))?;
    let n_levels = usize::try_from(n_levels).map_err(|_| Error::Other("negative number of levels".into()))?;
    let (counts, other) = fullrandom_core::run_with_threads(threads.max(1) as usize, || {
        fullrandom_core::grouping::level_counts(codes, n_levels)
    })
    .map_err(|e| Error::Other(e.to_string()))?;
    Ok(list!(counts = counts.iter().map(|&c| c as f64).collect::<Vec<f64>>(), other = other as f64))
}

/// Per-level sums of the first four powers of `values - shift` (internal; see
/// fr_distribution()). Mergeable: the sums of a union of row sets add level by level.
/// @param values double vector; @param codes 1-based level codes; @param n_levels levels.
/// @return a list: `count`, `s1`, `s2`, `s3`, `s4` (double, one per level).
/// @noRd
#[extendr]
fn fr_level_power_sums(values: &[f64], codes: Robj, n_levels: i32, shift: f64) -> Result<List> {
    let codes = codes.as_integer_slice().ok_or_else(|| Error::Other("the codes must be an integer vector".into()))?;
    let n_levels = usize::try_from(n_levels).map_err(|_| Error::Other("negative number of levels".into()))?;
    let s = fullrandom_core::npmle::LevelSums::compute(values, codes, 1, n_levels, shift).map_err(r_error)?;
    Ok(list!(count = s.count, s1 = s.s1, s2 = s.s2, s3 = s.s3, s4 = s.s4))
}

/// The Kiefer-Wolfowitz NPMLE of the distribution of the effects from level means `d`
/// with noise variances `v` (internal; see fr_distribution()).
/// @return a list: `grid`, `weights`, `loglik`, `iterations`, `converged`,
///   `max_gradient`, `n_bins`, `n_levels`.
/// @noRd
#[extendr]
fn fr_npmle(
    d: &[f64],
    v: &[f64],
    grid_size: i32,
    mean_bin: f64,
    variance_bin: f64,
    tol: f64,
    max_iter: i32,
    threads: i32,
) -> Result<List> {
    let opts = fullrandom_core::npmle::NpmleOptions {
        grid_size: grid_size.max(1) as usize,
        mean_bin,
        variance_bin,
        tol,
        max_iter: max_iter.max(1) as usize,
    };
    let g = fullrandom_core::run_with_threads(threads.max(1) as usize, || fullrandom_core::npmle::npmle(d, v, &opts))
        .and_then(|r| r)
        .map_err(r_error)?;
    Ok(distribution_values(g))
}

/// An estimated distribution of the effects (NPMLE or g-model) as an R list.
fn distribution_values(g: fullrandom_core::npmle::Npmle) -> List {
    list!(
        grid = g.grid,
        weights = g.weights,
        loglik = g.loglik,
        iterations = g.iterations as i32,
        converged = g.converged,
        max_gradient = g.max_gradient,
        n_bins = g.n_bins as f64,
        n_levels = g.n_levels as f64
    )
}

/// Efron's log-spline g-model of the distribution of the effects on `grid` with the
/// basis `basis` (grid points x columns, a matrix) and ridge penalty `penalty`
/// (internal; see fr_distribution()).
/// @return a list as fr_npmle()'s.
/// @noRd
#[extendr]
fn fr_gmodel(
    d: &[f64],
    v: &[f64],
    grid: &[f64],
    basis: &[f64],
    penalty: f64,
    mean_bin: f64,
    variance_bin: f64,
    tol: f64,
    max_iter: i32,
    threads: i32,
) -> Result<List> {
    let opts = fullrandom_core::npmle::NpmleOptions {
        grid_size: grid.len(),
        mean_bin,
        variance_bin,
        tol,
        max_iter: max_iter.max(1) as usize,
    };
    let g = fullrandom_core::run_with_threads(threads.max(1) as usize, || {
        fullrandom_core::npmle::gmodel(d, v, grid.to_vec(), basis, penalty, &opts)
    })
    .and_then(|r| r)
    .map_err(r_error)?;
    Ok(distribution_values(g))
}

fn npmle_of(grid: &[f64], weights: &[f64]) -> Result<fullrandom_core::npmle::Npmle> {
    if grid.len() != weights.len() || grid.is_empty() {
        return Err(Error::Other("the grid and the weights differ in length".into()));
    }
    Ok(fullrandom_core::npmle::Npmle {
        grid: grid.to_vec(),
        weights: weights.to_vec(),
        loglik: f64::NAN,
        iterations: 0,
        converged: true,
        max_gradient: f64::NAN,
        n_bins: 0,
        n_levels: 0,
    })
}

/// Posterior means of the effects of levels with means `d` and noise variances `v` under
/// the distribution (`grid`, `weights`); NaN `d` gives the prior mean (internal).
/// @noRd
#[extendr]
fn fr_npmle_posterior_means(grid: &[f64], weights: &[f64], d: &[f64], v: &[f64], threads: i32) -> Result<Vec<f64>> {
    let g = npmle_of(grid, weights)?;
    fullrandom_core::run_with_threads(threads.max(1) as usize, || fullrandom_core::npmle::posterior_means(&g, d, v))
        .and_then(|r| r)
        .map_err(r_error)
}

/// The marginal log-likelihood of level means `d` with noise variances `v` under the
/// distribution (`grid`, `weights`), level by level (internal; see fr_distribution()).
/// @noRd
#[extendr]
fn fr_npmle_loglik(grid: &[f64], weights: &[f64], d: &[f64], v: &[f64], threads: i32) -> Result<f64> {
    let g = npmle_of(grid, weights)?;
    fullrandom_core::run_with_threads(threads.max(1) as usize, || fullrandom_core::npmle::mixture_loglik(&g, d, v))
        .and_then(|r| r)
        .map_err(r_error)
}

/// Quantiles `probs` of `center + a + N(0, noise)` with `a` from the level's posterior
/// (NaN `d`: the distribution itself), row-major (internal).
/// @noRd
#[extendr]
fn fr_npmle_quantiles(
    grid: &[f64],
    weights: &[f64],
    d: &[f64],
    v: &[f64],
    center: &[f64],
    noise: &[f64],
    probs: &[f64],
    threads: i32,
) -> Result<Vec<f64>> {
    let g = npmle_of(grid, weights)?;
    fullrandom_core::run_with_threads(threads.max(1) as usize, || {
        fullrandom_core::npmle::predictive_quantiles(&g, d, v, center, noise, probs)
    })
    .and_then(|r| r)
    .map_err(r_error)
}

/// Number of threads the Rust pool would use by default on this machine.
/// @noRd
#[extendr]
fn fr_available_threads() -> i32 {
    std::thread::available_parallelism().map(|n| n.get() as i32).unwrap_or(1)
}

/// Panics on purpose, to test that a Rust panic reaches R as an error (internal).
/// @noRd
#[extendr]
fn fr_test_panic(message: &str) -> i32 {
    panic!("{}", message)
}

// The names and signatures R sees; R/extendr-wrappers.R is generated from this module.
extendr_module! {
    mod fullrandom;
    fn fr_moment_fit;
    fn fr_merged_fit;
    fn fr_fitted;
    fn fr_bootstrap_fit;
    fn fr_inverse_diagonal;
    fn fr_level_counts;
    fn fr_level_power_sums;
    fn fr_npmle;
    fn fr_gmodel;
    fn fr_npmle_posterior_means;
    fn fr_npmle_loglik;
    fn fr_npmle_quantiles;
    fn fr_available_threads;
    fn fr_test_panic;
    use glmm;
    use glmm_chunks;
    use slopes;
}
