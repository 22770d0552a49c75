//! The pure rollup engine: it owns the exact per-student attendance state (enrollment
//! spans, live events with versions and tombstones, school calendars) and the day and
//! metrics rows it implies, as diffs. It must not know Kafka, ClickHouse, Avro or any I/O.
//!
//! Drive it with [`RollupState`]: `apply_attendance` / `apply_enrollment` /
//! `apply_calendar` for each normalized record (any order; duplicates and stale versions
//! are recognised), `set_as_of` when the day moves, then `drain_dirty` for the rows to
//! upsert and to tombstone. [`reference::compute`] recomputes the same rows from the
//! final facts in one obvious batch pass. The rules are in `docs/rollup-rules.md`.

mod codec;
mod day;
mod engine;
pub mod reference;
mod rows;

pub use engine::{Changed, RollupState, StateCensus, StateError, StateStats};
pub use rows::{tier_code, DayKey, DayRow, DayStatus, MetricsKey, MetricsRow, StudentChange, Tier};
