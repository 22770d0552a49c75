//! rollcall's SIS simulator: seeded, deterministic school years (calendars, enrollments,
//! attendance with corrections, deletes, duplicates and malformed records), served as an
//! Ed-Fi ODS/API or written as vendor-shaped CSV exports, plus the expected metrics.
//! It shares no code with the pipeline: it is the independent oracle the pipeline is
//! tested against, so it must never depend on another rollcall crate.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use rollcall_sis_simulator::{csv_export, edfi, expected_metrics, generate, SimConfig};
//!
//! let world = Arc::new(generate(&SimConfig::demo(7))?);
//! // Ed-Fi districts over HTTP, clock advanced with POST /_sim/advance?days=N.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! tokio::spawn(edfi::serve(listener, world.clone(), edfi::ServerOptions::default()));
//! // A CSV district's nightly drop, and the expected metrics as of a day.
//! let day = world.districts[2].first_instructional_day;
//! csv_export::write_drop(&world, "northridge", None, day, "drops".as_ref())?;
//! expected_metrics(&world, day).write_json("expected.json".as_ref())?;
//! # Ok(()) }
//! ```
//! Everything it generates, serves and writes is described in docs/simulator.md.

pub mod calendar;
pub mod config;
pub mod csv_export;
pub mod edfi;
pub mod expected;
pub mod generate;
pub mod model;
pub mod names;
pub mod rng;

pub use config::{ConfigError, CorrectionStyle, CsvPreset, DistrictSpec, Feed, SimConfig};
pub use expected::{
    expected_metrics, expected_metrics_at, expected_metrics_under, Counts, Expected, GradeRow,
    SimPolicy, Tier, TrendRow,
};
pub use generate::generate;
pub use model::{
    AttendanceFact, CalendarDateFact, CalendarEvent, Category, Change, District, EnrollmentFact,
    Fact, Malformation, Op, Record, RecordId, Resource, School, Student, View, World,
};
