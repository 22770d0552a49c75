//! The pure rollup engine: exact per-student attendance state (enrollment spans, live
//! events with their source versions and tombstones, shared school calendars) and the
//! day and metrics rows it implies, handed out as diffs. It does no I/O and knows nothing
//! of Kafka, ClickHouse or Avro; the rollup service feeds it records and writes its rows.
//!
//! Drive it with [`RollupState`]: `apply_attendance` / `apply_enrollment` /
//! `apply_calendar` for each normalized record (any order, duplicates and stale versions
//! are recognised), `set_as_of` when the day moves, then `drain_dirty` for the rows to
//! upsert and to tombstone. [`reference::compute`] recomputes the same rows from the
//! final facts in one obvious batch pass. The counting rules are in
//! `docs/rollup-rules.md`.

mod codec;
mod day;
mod engine;
pub mod reference;
mod rows;

pub use engine::{Changed, RollupState, StateCensus, StateError, StateStats};
pub use rows::{tier_code, DayKey, DayRow, DayStatus, MetricsKey, MetricsRow, StudentChange, Tier};
