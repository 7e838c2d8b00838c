//! The extendr layer of the fullrandom R package: it converts R vectors into borrowed
//! slices, calls `fullrandom_core` (which holds all the statistics), and converts the
//! result into an R list. No R object is touched from a worker thread: the core only
//! sees slices, and R objects are built after the parallel work has returned.

use extendr_api::prelude::*;
use extendr_api::AsTypedSlice;
use extendr_api::Result;
use extendr_ffi::SEXPTYPE;
use fullrandom_core::{FactorCodes, FixedColumn, ModelData};

/// The entries of a matrix in R's (column-major) order.
fn column_major(m: &faer::Mat<f64>) -> Vec<f64> {
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
fn no_user_interrupt() -> bool {
    // SAFETY: R is single-threaded and this runs on its thread (see above).
    unsafe { R_ToplevelExec(check_interrupt, std::ptr::null_mut()) != 0 }
}

fn real_slice<'a>(x: &'a Robj, what: &str) -> Result<&'a [f64]> {
    x.as_real_slice().ok_or_else(|| Error::Other(format!("{what} must be a double vector")))
}

/// The fixed-effect columns: `x` is a double matrix (by column, as R stores it) or a
/// list with one double vector per column, where `NULL` stands for a column of ones (the
/// intercept, never materialised). Borrowed, not copied.
fn fixed_columns<'a>(x: &'a Robj, n_rows: usize, x_names: &[String]) -> Result<Vec<FixedColumn<'a>>> {
    if let Some(values) = x.as_real_slice() {
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
            let values: Option<&'a [f64]> = AsTypedSlice::as_typed_slice(&column);
            values
                .map(FixedColumn::Values)
                .ok_or_else(|| Error::Other(format!("the fixed-effect column '{name}' must be a double vector")))
        })
        .collect()
}

/// Borrows the R inputs as a [`ModelData`] (checked lengths, no copies).
fn model_data<'a>(
    y: &'a Robj,
    x: &'a Robj,
    x_names: Vec<String>,
    intercept: i32,
    codes: &'a List,
    n_levels: &[i32],
    labels: &[String],
) -> Result<ModelData<'a>> {
    let y = real_slice(y, "the response")?;
    let x = fixed_columns(x, y.len(), &x_names)?;
    if codes.len() != labels.len() || n_levels.len() != labels.len() {
        return Err(Error::Other("codes, n_levels and labels differ in length".into()));
    }
    let mut factors = Vec::with_capacity(labels.len());
    for ((code, n), label) in codes.values().zip(n_levels).zip(labels) {
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
    mixed: &fullrandom_core::MixedModelSolution,
    threads: usize,
) -> Result<Vec<(&'static str, Robj)>> {
    let n = data.n_obs();
    let mut fitted = Robj::alloc_vector(SEXPTYPE::REALSXP, n);
    let mut residuals = Robj::alloc_vector(SEXPTYPE::REALSXP, n);
    {
        let fitted_values = fitted.as_real_slice_mut().expect("a double vector");
        let residual_values = residuals.as_real_slice_mut().expect("a double vector");
        fullrandom_core::run_with_threads(threads, || {
            fullrandom_core::fitted_and_residuals(data, &mixed.coef, &mixed.ranef, fitted_values, residual_values)
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

/// Fit variance components by the method of moments, then the GLS fixed effects and
/// BLUPs (internal; use fr_fit()). Checks for user interrupts between solver iterations.
///
/// @param y response (double).
/// @param x the fixed-effect columns: a double n x p matrix, or a list of p double
///   vectors of length n in which NULL stands for a column of ones (the intercept).
/// @param x_names its column names.
/// @param intercept 0-based index of the intercept column, or -1.
/// @param codes list of integer vectors of 1-based level codes, one per random term.
/// @param n_levels number of levels of each term.
/// @param labels the terms' labels.
/// @param method "moments" (the unbiased equations of every term), "fr" (Matloff's
///   Full Randomness estimator, one term) or "components" (the variance components of
///   "moments" alone, without GLS or BLUPs).
/// @param size_columns for "fr": 0-based indices of the columns that are functions of
///   the group size (from size() terms).
/// @param threads number of worker threads.
/// @return the OLS fit, the moment equations, the components, the mixed-model solution,
///   the fitted values and residuals and, for "fr", a list `fr` with the group sizes and
///   the iteration.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn fr_moment_fit(
    y: Robj,
    x: Robj,
    x_names: Vec<String>,
    intercept: i32,
    codes: List,
    n_levels: Vec<i32>,
    labels: Vec<String>,
    method: &str,
    size_columns: Vec<i32>,
    threads: i32,
) -> Result<List> {
    let data = model_data(&y, &x, x_names, intercept, &codes, &n_levels, &labels)?;
    let threads = threads.max(1) as usize;
    let to_r_error = |e: fullrandom_core::FitError| Error::Other(e.to_string());
    match method {
        "moments" => {
            let fit = fullrandom_core::fit_with(&data, threads, &mut no_user_interrupt).map_err(to_r_error)?;
            let mut values = estimate_values(&fit.ols, &fit.equations, &fit.components, &fit.mixed);
            values.extend(fitted_values(&data, &fit.mixed, threads)?);
            Ok(List::from_pairs(values))
        }
        "fr" => {
            let size_columns: Vec<usize> = size_columns.iter().filter_map(|&j| usize::try_from(j).ok()).collect();
            let fit = fullrandom_core::fit_full_randomness_with(&data, &size_columns, threads, &mut no_user_interrupt)
                .map_err(to_r_error)?;
            let mut values = estimate_values(&fit.ols, &fit.equations, &fit.components, &fit.mixed);
            let fr = list!(
                n_groups = fit.group_sizes.n_groups as i32,
                size_mean = fit.group_sizes.mean,
                size_variance = fit.group_sizes.variance,
                coef_in_equations = fit.coef_in_equations,
                iterations = fit.iterations as i32
            );
            values.push(("fr", fr.into()));
            values.extend(fitted_values(&data, &fit.mixed, threads)?);
            Ok(List::from_pairs(values))
        }
        // The default method's variance components alone, without GLS or BLUPs (for
        // the benchmarks, which time the two halves of a fit).
        "components" => {
            let (ols, equations, components) = fullrandom_core::fit_components(&data, threads).map_err(to_r_error)?;
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
    fn fr_level_counts;
    fn fr_available_threads;
    fn fr_test_panic;
}
