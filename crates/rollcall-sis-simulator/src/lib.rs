//! rollcall's SIS simulator: seeded, deterministic school years (calendars, enrollments,
//! attendance with corrections, deletes, duplicates and malformed records), served as an
//! Ed-Fi ODS/API or written as vendor-shaped CSV exports, plus the expected metrics.
//! It shares no code with the pipeline: it is the independent oracle the pipeline is
//! tested against, so it must never depend on another rollcall crate.

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
pub use generate::generate;
pub use model::{
    AttendanceFact, CalendarDateFact, CalendarEvent, Category, Change, District, EnrollmentFact,
    Fact, Malformation, Op, Record, RecordId, Resource, School, Student, View, World,
};
pub use expected::{expected_metrics, expected_metrics_at, Expected, Tier};
