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
