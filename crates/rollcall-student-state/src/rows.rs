//! The output rows: one `DayRow` per student × school × enrolled instructional day up to
//! the as-of date, one `MetricsRow` per student × school × school year. Their fields are
//! the columns of `student_days` / `student_metrics` except `version`, which the caller
//! assigns when it writes them.

use std::sync::Arc;

use chrono::NaiveDate;
use rollcall_model::Category;
pub use rollcall_policy::Tier;

/// A day's final status after precedence (docs/rollup-rules.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DayStatus {
    Present,
    Tardy,
    EarlyDeparture,
    ExcusedAbsence,
    UnexcusedAbsence,
    OutOfSchoolSuspension,
    InSchoolSuspension,
    NotEnrolled,
    /// No record, exception-only feed: present.
    NoEvent,
    /// No record, positive-attendance feed: a data-quality gap, present in rates.
    Missing,
}

impl DayStatus {
    pub const ALL: [DayStatus; 10] = [
        DayStatus::Present,
        DayStatus::Tardy,
        DayStatus::EarlyDeparture,
        DayStatus::ExcusedAbsence,
        DayStatus::UnexcusedAbsence,
        DayStatus::OutOfSchoolSuspension,
        DayStatus::InSchoolSuspension,
        DayStatus::NotEnrolled,
        DayStatus::NoEvent,
        DayStatus::Missing,
    ];

    /// The stable snake_case name (the status enum's names in the rollup tables).
    pub const fn as_str(self) -> &'static str {
        match self {
            DayStatus::Present => "present",
            DayStatus::Tardy => "tardy",
            DayStatus::EarlyDeparture => "early_departure",
            DayStatus::ExcusedAbsence => "excused_absence",
            DayStatus::UnexcusedAbsence => "unexcused_absence",
            DayStatus::OutOfSchoolSuspension => "out_of_school_suspension",
            DayStatus::InSchoolSuspension => "in_school_suspension",
            DayStatus::NotEnrolled => "not_enrolled",
            DayStatus::NoEvent => "no_event",
            DayStatus::Missing => "missing",
        }
    }

    /// The stable number 1..=10, in the order above (the status enum's values in the
    /// rollup tables).
    pub const fn code(self) -> i8 {
        match self {
            DayStatus::Present => 1,
            DayStatus::Tardy => 2,
            DayStatus::EarlyDeparture => 3,
            DayStatus::ExcusedAbsence => 4,
            DayStatus::UnexcusedAbsence => 5,
            DayStatus::OutOfSchoolSuspension => 6,
            DayStatus::InSchoolSuspension => 7,
            DayStatus::NotEnrolled => 8,
            DayStatus::NoEvent => 9,
            DayStatus::Missing => 10,
        }
    }

    pub const fn from_category(c: Category) -> DayStatus {
        match c {
            Category::Present => DayStatus::Present,
            Category::Tardy => DayStatus::Tardy,
            Category::EarlyDeparture => DayStatus::EarlyDeparture,
            Category::ExcusedAbsence => DayStatus::ExcusedAbsence,
            Category::UnexcusedAbsence => DayStatus::UnexcusedAbsence,
            Category::OutOfSchoolSuspension => DayStatus::OutOfSchoolSuspension,
            Category::InSchoolSuspension => DayStatus::InSchoolSuspension,
            Category::NotEnrolled => DayStatus::NotEnrolled,
        }
    }
}

/// The number 1..=4 of a tier, in increasing severity (the tier enum's values in the
/// rollup tables).
pub const fn tier_code(t: Tier) -> i8 {
    match t {
        Tier::Satisfactory => 1,
        Tier::AtRisk => 2,
        Tier::ModerateChronic => 3,
        Tier::SevereChronic => 4,
    }
}

/// One student × school × enrolled instructional day (`student_days` without `version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayRow {
    pub school_year: u16,
    pub district_id: Arc<str>,
    pub school_id: Arc<str>,
    pub student_id: Arc<str>,
    pub date: NaiveDate,
    pub status: DayStatus,
    /// 1 when the day is in the denominator; 0 only for `not_enrolled`.
    pub enrolled: u8,
    /// What the day counts as absent under the policy (milli-days) ...
    pub absent_milli: u16,
    /// ... and its parts: `absent = excused + unexcused + suspended`.
    pub excused_milli: u16,
    pub unexcused_milli: u16,
    pub suspended_milli: u16,
    pub tardy: u8,
    /// The source_version of the event that decided the status (0 when none).
    pub source_version: i64,
    /// 1 in `StudentChange::day_rows_delete`: the row no longer exists.
    pub deleted: u8,
}

impl DayRow {
    /// The row's identity (the table's sorting key).
    pub fn key(&self) -> DayKey {
        (
            self.district_id.clone(),
            self.school_id.clone(),
            self.student_id.clone(),
            self.date,
        )
    }
}

/// (district_id, school_id, student_id, date)
pub type DayKey = (Arc<str>, Arc<str>, Arc<str>, NaiveDate);
/// (district_id, school_id, student_id, school_year)
pub type MetricsKey = (Arc<str>, Arc<str>, Arc<str>, u16);

/// One student × school × school year (`student_metrics` without `version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsRow {
    pub school_year: u16,
    pub district_id: Arc<str>,
    pub school_id: Arc<str>,
    pub student_id: Arc<str>,
    /// From the enrollment span with the latest entry date; empty when none.
    pub state_student_id: Arc<str>,
    pub grade_level: Arc<str>,
    pub subgroups: Arc<[String]>,
    /// The last day these numbers include: the latest day row's date; the first day of
    /// the school year when the row has no day rows (data-quality counts only).
    pub as_of_date: NaiveDate,
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
    pub tier: Tier,
    pub is_truant: u8,
    pub events_non_instructional: u32,
    pub events_outside_enrollment: u32,
    pub days_missing: u32,
    /// 1 in `StudentChange::metrics_delete`: the row no longer exists.
    pub deleted: u8,
}

impl MetricsRow {
    pub fn key(&self) -> MetricsKey {
        (
            self.district_id.clone(),
            self.school_id.clone(),
            self.student_id.clone(),
            self.school_year,
        )
    }
}

/// What one student's recomputation changed since the last drain. Write the upserts
/// (deleted = 0) and the deletes (deleted = 1, the last values written) with a
/// `version` higher than any earlier write of the same key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StudentChange {
    pub district_id: Arc<str>,
    pub student_id: Arc<str>,
    pub day_rows_upsert: Vec<DayRow>,
    pub day_rows_delete: Vec<DayRow>,
    pub metrics_upsert: Vec<MetricsRow>,
    pub metrics_delete: Vec<MetricsRow>,
}

impl StudentChange {
    pub fn is_empty(&self) -> bool {
        self.day_rows_upsert.is_empty()
            && self.day_rows_delete.is_empty()
            && self.metrics_upsert.is_empty()
            && self.metrics_delete.is_empty()
    }

    /// Number of rows to write.
    pub fn len(&self) -> usize {
        self.day_rows_upsert.len()
            + self.day_rows_delete.len()
            + self.metrics_upsert.len()
            + self.metrics_delete.len()
    }
}
