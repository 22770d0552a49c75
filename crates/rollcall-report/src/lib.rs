//! The chronic-absence report: reads the BI views (docs/bi-views.md), builds a pure data
//! model and renders one self-contained HTML page with inline SVG charts; `cli` serves it.
//! Must not know the rollup's tables or policy math: every number comes from a view.

pub mod cli;
pub mod format;
pub mod model;
pub mod render;
mod views;

pub use model::ReportData;
pub use render::{render_html, CSP};
pub use views::{latest_school_year, load, VIEWS};

/// Why the report could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Query(#[from] rollcall_clickhouse::ChError),
    #[error("the view {view} broke its contract (docs/bi-views.md): {problem}")]
    Contract { view: &'static str, problem: String },
    /// The views were built with another policy than this configuration's (or carry
    /// none): the report would publish figures judged by rules it was not given.
    #[error(transparent)]
    Policy(#[from] rollcall_clickhouse::ViewPolicyMismatch),
}
