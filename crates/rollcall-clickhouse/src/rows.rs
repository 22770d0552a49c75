//! The row types the rollup writes, column for column as in
//! `schemas/clickhouse/0001_rollup_tables.sql`. Validation is off against 18.16, so
//! `tests/clickhouse_rows.rs` round-trips every type through the real server.

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use serde_repr::{Deserialize_repr, Serialize_repr};

/// `student_days.status` (Enum8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize_repr, Deserialize_repr)]
#[repr(i8)]
pub enum DayStatus {
    Present = 1,
    Tardy = 2,
    EarlyDeparture = 3,
    ExcusedAbsence = 4,
    UnexcusedAbsence = 5,
    OutOfSchoolSuspension = 6,
    InSchoolSuspension = 7,
    NotEnrolled = 8,
    NoEvent = 9,
    Missing = 10,
}

/// `student_metrics.tier` (Enum8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize_repr, Deserialize_repr)]
#[repr(i8)]
pub enum TierValue {
    Satisfactory = 1,
    AtRisk = 2,
    ModerateChronic = 3,
    SevereChronic = 4,
}

/// One row of `student_days`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct StudentDayRow {
    pub school_year: u16,
    pub district_id: String,
    pub school_id: String,
    pub student_id: String,
    /// Days since 1970-01-01.
    pub date: u16,
    pub status: DayStatus,
    pub enrolled: u8,
    pub absent_milli: u16,
    pub excused_milli: u16,
    pub unexcused_milli: u16,
    pub suspended_milli: u16,
    pub tardy: u8,
    pub source_version: i64,
    pub version: u64,
    pub deleted: u8,
}

/// One row of `student_metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct StudentMetricsRow {
    pub school_year: u16,
    pub district_id: String,
    pub school_id: String,
    pub student_id: String,
    pub state_student_id: String,
    pub grade_level: String,
    pub subgroups: Vec<String>,
    /// Days since 1970-01-01.
    pub as_of_date: u16,
    pub days_enrolled: u32,
    pub absent_milli: u32,
    pub excused_milli: u32,
    pub unexcused_milli: u32,
    pub suspended_milli: u32,
    pub days_tardy: u32,
    pub unexcused_window_milli: u32,
    pub absent_last_30_milli: u32,
    pub meets_min_enrollment: u8,
    pub is_chronically_absent: u8,
    pub tier: TierValue,
    pub is_truant: u8,
    pub events_non_instructional: u32,
    pub events_outside_enrollment: u32,
    pub days_missing: u32,
    pub version: u64,
    pub deleted: u8,
}

pub const STUDENT_DAYS: &str = "student_days";
pub const STUDENT_METRICS: &str = "student_metrics";

/// Days since 1970-01-01 for a ClickHouse `Date`.
pub fn ch_date(d: chrono::NaiveDate) -> u16 {
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
    (d - epoch).num_days().clamp(0, u16::MAX as i64) as u16
}

/// The `Date` back as a calendar date.
pub fn from_ch_date(days: u16) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Days::new(days as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_map_to_days_since_epoch() {
        let d = chrono::NaiveDate::from_ymd_opt(2022, 5, 27).unwrap();
        assert_eq!(ch_date(d), 19139);
        assert_eq!(from_ch_date(ch_date(d)), d);
    }
}
