//! Errors that name the offending input: the column, the term, the level.

use std::fmt;

/// Why a fit could not be made. The message is written for the user of the R package.
#[derive(Debug, Clone, PartialEq)]
pub enum FitError {
    /// The input violates a precondition (lengths, codes out of range, non-finite values).
    InvalidInput(String),
    /// The moment equations cannot separate some variance components.
    NotIdentifiable(String),
    /// Statistics that cannot be merged (different shapes, levels or shifts).
    Incompatible(String),
    /// An iterative solver that did not reach its tolerance.
    NotConverged(String),
    /// The user asked to stop (an interrupt seen between iterations).
    Interrupted,
    /// Something that should not happen; reported rather than panicking.
    Internal(String),
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FitError::InvalidInput(m)
            | FitError::NotIdentifiable(m)
            | FitError::Incompatible(m)
            | FitError::NotConverged(m)
            | FitError::Internal(m) => f.write_str(m),
            FitError::Interrupted => f.write_str("interrupted by the user"),
        }
    }
}

impl std::error::Error for FitError {}

/// `Vec::with_capacity(len)` that reports a failed allocation as an error instead of
/// aborting the process (Rust's allocation failure is an abort, which would take R down).
/// For every buffer whose size the user chooses (replicates, levels, columns); `what`
/// names it in the message.
pub fn try_with_capacity<T>(len: usize, what: &str) -> Result<Vec<T>, FitError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| out_of_memory::<T>(len, what))?;
    Ok(v)
}

/// `vec![value; len]`, failing as [`try_with_capacity`] does.
pub fn try_filled<T: Clone>(len: usize, value: T, what: &str) -> Result<Vec<T>, FitError> {
    let mut v = try_with_capacity(len, what)?;
    v.resize(len, value);
    Ok(v)
}

fn out_of_memory<T>(len: usize, what: &str) -> FitError {
    let bytes = (len as f64) * (std::mem::size_of::<T>() as f64);
    FitError::InvalidInput(format!("not enough memory for {what}: {len} entries would need {}", human_bytes(bytes)))
}

/// `1.5 GB`, `312 MB`, ...
pub fn human_bytes(bytes: f64) -> String {
    let units = ["bytes", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", units[unit])
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_impossible_allocation_is_an_error_not_an_abort() {
        let e = try_with_capacity::<[f64; 4]>(usize::MAX / 64, "the test buffer").unwrap_err();
        assert!(e.to_string().starts_with("not enough memory for the test buffer"), "{e}");
        assert_eq!(try_filled(3, 0u32, "three").unwrap(), vec![0, 0, 0]);
        assert_eq!(human_bytes(2.5e9), "2.5 GB");
    }
}
