//! Random-slope models (`fullrandom_core::slopes`): statistics of the rows, of chunks of
//! rows merged, and the fit from them.

use crate::{element, fixed_columns, no_user_interrupt, r_error};
use extendr_api::prelude::*;
use extendr_api::AsTypedSlice;
use extendr_api::Result;
use extendr_ffi::SEXPTYPE;
use fullrandom_core::efficient_slopes::{fit_slope_statistics_efficient, SlopeEfficientStep};
use fullrandom_core::slopes::{
    fit_slope_statistics, slope_fitted_and_residuals, PairCells, SlopeData, SlopeFit, SlopeStats, SlopeTerm, TermSums,
};
use fullrandom_core::FixedColumn;

/// Borrows the response, fixed-effect columns and terms as R passes them (see
/// fr_slope_fit()).
fn slope_data(y: &Robj, x: Robj, x_names: &[String], terms: &List) -> Result<SlopeData<'static>> {
    // The slices borrow the caller's vectors, which R keeps alive for the whole call.
    let y: &'static [f64] =
        AsTypedSlice::as_typed_slice(y).ok_or_else(|| Error::Other("the response must be a double vector".into()))?;
    let x = fixed_columns(x, y.len(), x_names)?;
    let mut slope_terms = Vec::with_capacity(terms.len());
    for term in terms.values() {
        let term = term.as_list().ok_or_else(|| Error::Other("a term must be a list".into()))?;
        let field = |name: &str| element(&term, name).ok_or_else(|| Error::Other(format!("a term lacks '{name}'")));
        let label: String = field("label")?.try_into()?;
        let n_levels: i32 = field("n_levels")?.try_into()?;
        let codes: &'static [i32] = AsTypedSlice::as_typed_slice(&field("codes")?)
            .ok_or_else(|| Error::Other(format!("the codes of '{label}' must be an integer vector")))?;
        let z_list = field("z")?;
        let z_list = z_list.as_list().ok_or_else(|| Error::Other("`z` must be a list".into()))?;
        let mut z = Vec::with_capacity(z_list.len());
        for column in z_list.values() {
            if column.is_null() {
                z.push(FixedColumn::Ones);
            } else {
                let values: &'static [f64] = AsTypedSlice::as_typed_slice(&column)
                    .ok_or_else(|| Error::Other(format!("the columns of '{label}' must be double vectors")))?;
                z.push(FixedColumn::Values(values));
            }
        }
        slope_terms.push(SlopeTerm { name: label, codes, offset: 1, n_levels: n_levels.max(0) as usize, z });
    }
    Ok(SlopeData { y, x, terms: slope_terms })
}

/// The statistics of the rows R passes (see fr_slope_fit()), computed on a pool of
/// `threads` workers, which is returned for the fit.
fn statistics_of(
    y: &Robj,
    x: Robj,
    x_names: &[String],
    terms: &List,
    threads: i32,
) -> Result<(SlopeStats, fullrandom_core::ThreadPool)> {
    let data = slope_data(y, x, x_names, terms)?;
    let pool = fullrandom_core::thread_pool(threads.max(1) as usize).map_err(r_error)?;
    let stats = pool.install(|| SlopeStats::compute(&data)).map_err(r_error)?;
    Ok((stats, pool))
}

fn statistics_to_r(stats: &SlopeStats) -> List {
    let terms = List::from_values(stats.terms.iter().map(|t| {
        list!(q = t.q as i32, n_levels = t.n_levels as i32, zz = t.zz.clone(), zx = t.zx.clone(), zy = t.zy.clone())
    }));
    let pairs = List::from_values(stats.pairs.iter().map(|c| {
        list!(
            k = c.k as i32,
            l = c.l as i32,
            rows = c.rows.iter().map(|&g| g as i32).collect::<Vec<i32>>(),
            cols = c.cols.iter().map(|&h| h as i32).collect::<Vec<i32>>(),
            sums = c.sums.clone()
        )
    }));
    list!(
        n_obs = stats.n_obs as f64,
        p = stats.p as i32,
        xx = stats.xx.clone(),
        xy = stats.xy.clone(),
        yy = stats.yy,
        terms = terms,
        pairs = pairs
    )
}

fn statistics_from_r(x: &Robj) -> Result<SlopeStats> {
    let bad = |what: &str| Error::Other(format!("slope statistics: {what}"));
    let list = x.as_list().ok_or_else(|| bad("not a list"))?;
    let get = |l: &List, name: &str| element(l, name).ok_or_else(|| bad(&format!("'{name}' missing")));
    let doubles = |r: Robj, name: &str| -> Result<Vec<f64>> {
        r.as_real_vector().ok_or_else(|| bad(&format!("'{name}' not double")))
    };
    let index = |r: Robj, name: &str| -> Result<Vec<u32>> {
        let v = r.as_integer_slice().ok_or_else(|| bad(&format!("'{name}' not integer")))?;
        v.iter().map(|&g| u32::try_from(g).map_err(|_| bad(&format!("'{name}' negative")))).collect()
    };
    let int = |r: Robj, name: &str| -> Result<usize> {
        let v: i32 = r.try_into().map_err(|_| bad(&format!("'{name}' not an integer")))?;
        usize::try_from(v).map_err(|_| bad(&format!("'{name}' negative")))
    };
    let n_obs: f64 = get(&list, "n_obs")?.try_into().map_err(|_| bad("'n_obs' not a number"))?;
    let mut terms = Vec::new();
    for t in get(&list, "terms")?.as_list().ok_or_else(|| bad("'terms' not a list"))?.values() {
        let t = t.as_list().ok_or_else(|| bad("a term is not a list"))?;
        terms.push(TermSums {
            q: int(get(&t, "q")?, "q")?,
            n_levels: int(get(&t, "n_levels")?, "n_levels")?,
            zz: doubles(get(&t, "zz")?, "zz")?,
            zx: doubles(get(&t, "zx")?, "zx")?,
            zy: doubles(get(&t, "zy")?, "zy")?,
        });
    }
    let mut pairs = Vec::new();
    for c in get(&list, "pairs")?.as_list().ok_or_else(|| bad("'pairs' not a list"))?.values() {
        let c = c.as_list().ok_or_else(|| bad("a pair is not a list"))?;
        pairs.push(PairCells {
            k: int(get(&c, "k")?, "k")?,
            l: int(get(&c, "l")?, "l")?,
            rows: index(get(&c, "rows")?, "rows")?,
            cols: index(get(&c, "cols")?, "cols")?,
            sums: doubles(get(&c, "sums")?, "sums")?,
        });
    }
    let stats = SlopeStats {
        n_obs: n_obs as usize,
        p: int(get(&list, "p")?, "p")?,
        xx: doubles(get(&list, "xx")?, "xx")?,
        xy: doubles(get(&list, "xy")?, "xy")?,
        yy: get(&list, "yy")?.try_into().map_err(|_| bad("'yy' not a number"))?,
        terms,
        pairs,
    };
    stats.check_shape().map_err(r_error)?;
    Ok(stats)
}

fn fit_values(fit: &SlopeFit, step: Option<&SlopeEfficientStep>, p: usize) -> List {
    let params = &fit.equations.params;
    // By columns, as R stores a matrix.
    let vcov: Vec<f64> =
        (0..p).flat_map(|j| (0..p).map(move |i| (i, j))).map(|(i, j)| fit.mixed.vcov[i * p + j]).collect();
    let ranef = List::from_values(fit.mixed.ranef.iter().map(|r| Robj::from(r.clone())));
    list!(
        term = params.iter().map(|pm| pm.term.map_or(-1, |k| k as i32)).collect::<Vec<i32>>(),
        row = params.iter().map(|pm| pm.row as i32).collect::<Vec<i32>>(),
        col = params.iter().map(|pm| pm.col as i32).collect::<Vec<i32>>(),
        lhs = fit.equations.lhs.clone(),
        q = fit.equations.q.clone(),
        raw = fit.components.raw.clone(),
        estimate = fit.components.estimate.clone(),
        boundary = fit.components.at_boundary.clone(),
        coef_ols = fit.equations.coef_ols.clone(),
        kept = fit.equations.kept.clone(),
        coef = fit.mixed.coef.clone(),
        vcov = vcov,
        ranef = ranef,
        iterations = fit.mixed.iterations as i32,
        efficient = step.map_or(Robj::from(()), |e| {
            list!(
                moment_lhs = e.moment_equations.lhs.clone(),
                moment_q = e.moment_equations.q.clone(),
                moment_raw = e.moment_components.raw.clone(),
                moment_estimate = e.moment_components.estimate.clone(),
                moment_boundary = e.moment_components.at_boundary.clone(),
                probes = e.accuracy.probes.iter().map(|&v| v as i32).collect::<Vec<i32>>(),
                probe_sd = e.accuracy.probe_sd.clone(),
                model_sd = e.accuracy.model_sd.clone(),
                steps = e.steps as i32
            )
            .into()
        })
    )
}

/// The moment fit (`steps` 0) or the efficient one (`steps` MINQUE steps) of `stats`.
fn fit_of(stats: &SlopeStats, pool: &fullrandom_core::ThreadPool, steps: i32) -> Result<List> {
    if steps < 0 {
        return Err(Error::Other(format!("`steps` must be 0 (moments) or positive, not {steps}")));
    }
    if steps == 0 {
        let fit = fit_slope_statistics(stats, pool, &mut no_user_interrupt).map_err(r_error)?;
        return Ok(fit_values(&fit, None, stats.p));
    }
    let options = fullrandom_core::EfficientOptions::default();
    let (fit, step) = fit_slope_statistics_efficient(stats, &options, steps as usize, pool, &mut no_user_interrupt)
        .map_err(r_error)?;
    Ok(fit_values(&fit, Some(&step), stats.p))
}

/// Fits a model with random-slope terms by the unbiased moment equations of
/// `fullrandom_core::slopes`, then Henderson's equations (internal; fr_fit()).
///
/// @param y the response; @param x the fixed-effect columns (as fr_moment_fit());
/// @param x_names their names; @param terms a list with one entry per term: `codes`
///   (1-based integer level codes), `n_levels`, `z` (a list of double columns, NULL for
///   an intercept) and `label`; @param threads worker threads; @param steps 0 for the
///   moment equations, else the number of MINQUE steps from them (1: the efficient
///   estimator, `fullrandom_core::efficient_slopes`).
/// @return the parameter map (`term`, `row`, `col`, 0-based; term -1 for the residual),
///   the equations (`lhs` by rows, `q`), `raw`, `estimate`, `boundary` (per term), `coef`,
///   `vcov` (by columns), `ranef` (per term, level after level, q values each) and, for
///   MINQUE steps, `efficient` (the moment equations and estimates, the probes per term,
///   their sd and the model sd per parameter, the steps).
/// @noRd
#[extendr]
fn fr_slope_fit(y: Robj, x: Robj, x_names: Vec<String>, terms: List, threads: i32, steps: i32) -> Result<List> {
    let (stats, pool) = statistics_of(&y, x, &x_names, &terms, threads)?;
    fit_of(&stats, &pool, steps)
}

/// The statistics of a chunk of rows of a random-slope model, as an R list to be merged
/// by fr_slope_merged_fit() (internal). Arguments as fr_slope_fit().
/// @noRd
#[extendr]
fn fr_slope_statistics(y: Robj, x: Robj, x_names: Vec<String>, terms: List, threads: i32) -> Result<List> {
    let (stats, _) = statistics_of(&y, x, &x_names, &terms, threads)?;
    Ok(statistics_to_r(&stats))
}

/// The fit of the merged statistics of chunks (a list of fr_slope_statistics() values
/// over the same terms and levels), the same as the fit of all their rows at once
/// (internal). `steps` and the value as fr_slope_fit()'s.
/// @noRd
#[extendr]
fn fr_slope_merged_fit(statistics: List, threads: i32, steps: i32) -> Result<List> {
    let mut parts = statistics.values();
    let first = parts.next().ok_or_else(|| Error::Other("no chunk statistics to merge".into()))?;
    let mut stats = statistics_from_r(&first)?;
    for part in parts {
        stats.merge(&statistics_from_r(&part)?).map_err(r_error)?;
    }
    let pool = fullrandom_core::thread_pool(threads.max(1) as usize).map_err(r_error)?;
    fit_of(&stats, &pool, steps)
}

/// Fitted values and residuals of a random-slope fit on the rows R passes (internal;
/// fr_fit()), computed in parallel into two new double vectors (no other full-length
/// copies). Arguments as fr_slope_fit(), with `coef` (all columns, NaN where aliased)
/// and `ranef` (per term, level after level, q values each) as it returns them.
/// @return a list of `fitted` and `residuals`.
/// @noRd
#[extendr]
fn fr_slope_fitted(
    y: Robj,
    x: Robj,
    x_names: Vec<String>,
    terms: List,
    coef: Vec<f64>,
    ranef: List,
    threads: i32,
) -> Result<List> {
    let data = slope_data(&y, x, &x_names, &terms)?;
    let ranef: Vec<Vec<f64>> = ranef
        .values()
        .map(|u| u.as_real_slice().map(|v| v.to_vec()).ok_or_else(|| Error::Other("BLUPs must be doubles".into())))
        .collect::<Result<_>>()?;
    let n = data.y.len();
    let mut fitted = Robj::alloc_vector(SEXPTYPE::REALSXP, n);
    let mut residuals = Robj::alloc_vector(SEXPTYPE::REALSXP, n);
    {
        let fitted_values = fitted.as_real_slice_mut().expect("a double vector");
        let residual_values = residuals.as_real_slice_mut().expect("a double vector");
        let pool = fullrandom_core::thread_pool(threads.max(1) as usize).map_err(r_error)?;
        pool.install(|| slope_fitted_and_residuals(&data, &coef, &ranef, fitted_values, residual_values))
            .map_err(r_error)?;
    }
    Ok(list!(fitted = fitted, residuals = residuals))
}

extendr_module! {
    mod slopes;
    fn fr_slope_fit;
    fn fr_slope_statistics;
    fn fr_slope_merged_fit;
    fn fr_slope_fitted;
}
