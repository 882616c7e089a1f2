//! The weekly health report (being written; see issue 8).

use crate::cli::ReportArgs;

/// Errors of the report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Not built yet.
    #[error("the report is not implemented yet")]
    NotImplemented,
}

/// Builds and writes the report.
pub fn run(_args: &ReportArgs) -> Result<(), ReportError> {
    Err(ReportError::NotImplemented)
}
