//! rollcall's canonical types: the attendance categories, the normalized attendance,
//! enrollment and calendar records, and the raw envelope connectors publish.
//! No I/O and no rules: it knows nothing of Kafka, ClickHouse, Avro, code maps or policy.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// A name that is not one of an enum's canonical spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?}; expected one of: {expected}")]
pub struct UnknownName {
    pub what: &'static str,
    pub given: String,
    pub expected: String,
}

/// Declares a fieldless enum with a stable snake_case name per variant: `as_str`,
/// `ALL`, `Display`, `FromStr` (exact names only) and serde as that name.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every variant, in declaration (and Avro symbol) order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stable snake_case name used in Avro, ClickHouse, TOML and metrics.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownName {
                        what: $what,
                        given: s.to_string(),
                        expected: [$($text,)+].join(", "),
                    }),
                }
            }
        }
    };
}

named_enum! {
    /// The canonical attendance categories (DESIGN.md "Canonical categories").
    Category, "category" {
        Present = "present",
        /// Arrived late; still present (counted separately as a tardy day).
        Tardy = "tardy",
        /// Left early; still present.
        EarlyDeparture = "early_departure",
        ExcusedAbsence = "excused_absence",
        UnexcusedAbsence = "unexcused_absence",
        OutOfSchoolSuspension = "out_of_school_suspension",
        InSchoolSuspension = "in_school_suspension",
        /// The student should not be counted that day at all (not in the denominator).
        NotEnrolled = "not_enrolled",
    }
}

impl Category {
    /// The share of the day missed when neither the record nor the code map says
    /// otherwise: 1 for absences and suspensions (a full day in suspension), 0 for
    /// present, tardy, early departure and not enrolled.
    pub const fn default_absent_fraction(self) -> f64 {
        match self {
            Category::ExcusedAbsence
            | Category::UnexcusedAbsence
            | Category::OutOfSchoolSuspension
            | Category::InSchoolSuspension => 1.0,
            Category::Present
            | Category::Tardy
            | Category::EarlyDeparture
            | Category::NotEnrolled => 0.0,
        }
    }

    /// Whether a record's duration (fraction or minutes) may set `absent_fraction` for
    /// this category. Present, tardy, early departure and not enrolled are always 0.
    pub const fn takes_duration(self) -> bool {
        self.default_absent_fraction() > 0.0
    }
}

named_enum! {
    /// What a normalized record does to the state keyed by its source key.
    Operation, "operation" {
        Upsert = "upsert",
        Delete = "delete",
    }
}

named_enum! {
    /// What a connector saw happen in the SIS. A key change becomes a delete of the old
    /// key followed by an upsert of the new one.
    RawOperation, "raw operation" {
        Upsert = "upsert",
        Delete = "delete",
        KeyChange = "key_change",
    }
}

named_enum! {
    /// The three entities a SIS must give us.
    Entity, "entity" {
        Attendance = "attendance",
        Enrollment = "enrollment",
        Calendar = "calendar",
    }
}

named_enum! {
    /// How a raw envelope's payload is to be read.
    PayloadFormat, "payload format" {
        /// An Ed-Fi resource JSON as the ODS/API returns it (or an Ed-Fi delete /
        /// key-change item); see docs/normalization.md.
        EdfiJson = "edfi_json",
        /// A flat JSON object of string fields, from the CSV/file connector.
        FlatJson = "flat_json",
    }
}

/// The largest raw record payload (the SIS record's bytes inside the raw envelope) a
/// connector publishes and the normalizer reads: 256 KiB. Stated once here, so the pure
/// crates (`rollcall-normalize`) and `rollcall-kafka`'s size limits agree without the
/// pure crates depending on Kafka.
pub const MAX_RAW_PAYLOAD_BYTES: usize = 256 * 1024;

/// The first date any stage holds: ClickHouse's `Date` starts at 1970-01-01.
pub const MIN_SUPPORTED_DATE: NaiveDate = match NaiveDate::from_ymd_opt(1970, 1, 1) {
    Some(d) => d,
    None => panic!("1970-01-01 is a date"),
};

/// The last date any stage holds: 2149-06-05, the last day the rollup's day numbers
/// (days since 1970-01-01 in `u16`, one value reserved) and ClickHouse's `Date` both hold.
pub const MAX_SUPPORTED_DATE: NaiveDate = match NaiveDate::from_ymd_opt(2149, 6, 5) {
    Some(d) => d,
    None => panic!("2149-06-05 is a date"),
};

/// Whether every stage (the rollup's state, ClickHouse `Date` columns) can hold `date`:
/// `MIN_SUPPORTED_DATE..=MAX_SUPPORTED_DATE`. The normalizer dead-letters any record
/// with a date outside it, so nothing downstream meets one.
pub fn is_supported_date(date: NaiveDate) -> bool {
    (MIN_SUPPORTED_DATE..=MAX_SUPPORTED_DATE).contains(&date)
}

/// The exit date that, by default, means "no exit date" (still enrolled) when a SIS
/// sends it: 9999-12-31, a common sentinel. The normalizer's list is configurable
/// (`[normalizer] exit_date_sentinels`).
pub const DEFAULT_EXIT_DATE_SENTINEL: NaiveDate = match NaiveDate::from_ymd_opt(9999, 12, 31) {
    Some(d) => d,
    None => panic!("9999-12-31 is a date"),
};

/// The canonical grade levels: every code value of Ed-Fi's GradeLevelDescriptor (Data
/// Standard 5.2, `shared/edfi/descriptors/GradeLevelDescriptor.xml`), in its order and
/// spelling. `Enrollment::grade_level` is one of these (or `None`); the code maps
/// (`rollcall-codemaps`) turn each SIS's spelling into one, and policy settings that
/// name grades are checked against this list. The last four are deprecated in the
/// Ed-Fi standard but still valid code values, so a feed that sends them keeps them.
pub const GRADE_LEVELS: &[&str] = &[
    "Infant/toddler",
    "Preschool",
    "Prekindergarten",
    "Transitional Kindergarten",
    "Kindergarten",
    "First grade",
    "Second grade",
    "Third grade",
    "Fourth grade",
    "Fifth grade",
    "Sixth grade",
    "Seventh grade",
    "Eighth grade",
    "Ninth grade",
    "Tenth grade",
    "Eleventh grade",
    "Twelfth grade",
    "Grade 13",
    "Postsecondary",
    "Ungraded",
    "Other",
    "Out of School",
    "Adult Education",
    "Early Education",
    "No grade level",
    "Preschool/Prekindergarten",
];

/// The canonical exit/withdraw types: every code value of Ed-Fi's
/// ExitWithdrawTypeDescriptor (Data Standard 5.2,
/// `shared/edfi/descriptors/ExitWithdrawTypeDescriptor.xml`), in its order and spelling.
/// `Enrollment::exit_withdraw_type` is one of these (or `None`).
pub const EXIT_WITHDRAW_TYPES: &[&str] = &[
    "Completed",
    "Died or is permanently incapacitated",
    "Dropout",
    "End of school year",
    "Enrolled in a high school diploma program",
    "Expelled",
    "Graduated",
    "Incarcerated",
    "Invalid enrollment",
    "Involuntarily Removed",
    "No show",
    "Other",
    "Reached maximum age",
    "Transferred",
    "Withdrawn",
];

/// The canonical spelling of a grade level named exactly or differing only in ASCII
/// case (`"first grade"` → `"First grade"`), else `None`.
pub fn canonical_grade_level(name: &str) -> Option<&'static str> {
    let name = name.trim();
    GRADE_LEVELS
        .iter()
        .copied()
        .find(|g| g.eq_ignore_ascii_case(name))
}

/// The canonical spelling of an exit/withdraw type named exactly or differing only in
/// ASCII case, else `None`.
pub fn canonical_exit_withdraw_type(name: &str) -> Option<&'static str> {
    let name = name.trim();
    EXIT_WITHDRAW_TYPES
        .iter()
        .copied()
        .find(|g| g.eq_ignore_ascii_case(name))
}

/// The Kafka key of attendance and enrollment records: one student's records share a
/// partition (and so one rollup instance).
pub fn student_key(district_id: &str, student_id: &str) -> String {
    let mut k = String::with_capacity(district_id.len() + 1 + student_id.len());
    k.push_str(district_id);
    k.push('/');
    k.push_str(student_id);
    k
}

/// The Kafka key of calendar records.
pub fn school_key(district_id: &str, school_id: &str) -> String {
    student_key(district_id, school_id)
}

/// One normalized student-day attendance event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttendanceEvent {
    pub district_id: String,
    pub school_id: String,
    pub student_id: String,
    /// The year the school year ends: 2022 for 2021-22.
    pub school_year: i32,
    pub date: NaiveDate,
    pub category: Category,
    /// Share of the instructional day missed, in [0, 1].
    pub absent_fraction: f64,
    /// The SIS's code as received (e.g. an Ed-Fi descriptor URI, a PowerSchool Att_Code).
    pub source_code: String,
    /// The second half of a two-part code (Infinite Campus excuse, PowerSchool
    /// Presence_Status_CD), as received.
    pub source_secondary_code: Option<String>,
    pub reason: Option<String>,
    pub source_system: String,
    pub source_instance: String,
    /// The record's natural key as the SIS gave it; the identity rollup keys state by.
    pub source_key: String,
    pub source_version: i64,
    pub operation: Operation,
    pub observed_at_ms: i64,
}

impl AttendanceEvent {
    pub fn kafka_key(&self) -> String {
        student_key(&self.district_id, &self.student_id)
    }
}

/// One enrollment span of a student at a school.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    pub district_id: String,
    pub school_id: String,
    pub student_id: String,
    pub school_year: i32,
    pub entry_date: NaiveDate,
    /// Inclusive or exclusive per the policy's `exit_date` rule; `None` = still enrolled.
    pub exit_date: Option<NaiveDate>,
    /// The canonical grade level, one of [`GRADE_LEVELS`] (mapped by the code maps);
    /// `None` when the SIS sent none.
    pub grade_level: Option<String>,
    pub subgroups: Vec<String>,
    pub state_student_id: Option<String>,
    pub operation: Operation,
    pub source_version: i64,
    pub source_system: String,
    pub source_instance: String,
    pub source_key: String,
    pub observed_at_ms: i64,
    /// The grade level as the SIS sent it (a descriptor URI's code value, `"KG"`, `"0"`).
    pub source_grade_level: Option<String>,
    /// The canonical exit/withdraw type, one of [`EXIT_WITHDRAW_TYPES`]; `None` when the
    /// SIS sent none or the code map does not know the code (see `source_exit_withdraw_type`).
    pub exit_withdraw_type: Option<String>,
    /// The exit/withdraw code as the SIS sent it (a descriptor URI's code value, a
    /// PowerSchool `ExitCode`).
    pub source_exit_withdraw_type: Option<String>,
}

impl Enrollment {
    pub fn kafka_key(&self) -> String {
        student_key(&self.district_id, &self.student_id)
    }
}

/// One date of a school's calendar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalendarDay {
    pub district_id: String,
    pub school_id: String,
    /// The SIS's calendar code; empty when the SIS has one calendar per school.
    pub calendar_code: String,
    pub school_year: i32,
    pub date: NaiveDate,
    pub is_instructional: bool,
    /// The calendar event names as received (descriptor code values).
    pub events: Vec<String>,
    pub operation: Operation,
    pub source_version: i64,
    pub source_system: String,
    pub source_instance: String,
    pub source_key: String,
    pub observed_at_ms: i64,
}

impl CalendarDay {
    pub fn kafka_key(&self) -> String {
        school_key(&self.district_id, &self.school_id)
    }
}

/// Any one normalized record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "entity", rename_all = "snake_case")]
pub enum Canonical {
    Attendance(AttendanceEvent),
    Enrollment(Enrollment),
    Calendar(CalendarDay),
}

impl Canonical {
    pub fn entity(&self) -> Entity {
        match self {
            Canonical::Attendance(_) => Entity::Attendance,
            Canonical::Enrollment(_) => Entity::Enrollment,
            Canonical::Calendar(_) => Entity::Calendar,
        }
    }

    pub fn district_id(&self) -> &str {
        match self {
            Canonical::Attendance(e) => &e.district_id,
            Canonical::Enrollment(e) => &e.district_id,
            Canonical::Calendar(e) => &e.district_id,
        }
    }

    /// The Kafka key: `district/student` for attendance and enrollment,
    /// `district/school` for calendars.
    pub fn kafka_key(&self) -> String {
        match self {
            Canonical::Attendance(e) => e.kafka_key(),
            Canonical::Enrollment(e) => e.kafka_key(),
            Canonical::Calendar(e) => e.kafka_key(),
        }
    }
}

/// What connectors publish to the raw topics: the SIS record unchanged, plus where it
/// came from and what happened to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawEnvelope {
    /// e.g. `edfi`, `csv`, `powerschool`: selects the code map preset.
    pub source_system: String,
    /// The host or inbox the record came from.
    pub source_instance: String,
    pub district_id: String,
    pub entity: Entity,
    pub operation: RawOperation,
    /// The record's natural key as the connector renders it; becomes `source_key`.
    pub natural_key: String,
    /// The previous natural key, for `key_change`.
    pub old_natural_key: Option<String>,
    /// Monotonic per source (e.g. an Ed-Fi change version); later versions win.
    pub source_version: i64,
    pub observed_at_ms: i64,
    pub payload_format: PayloadFormat,
    /// The bytes exactly as received.
    pub payload: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_exactly_the_design_list() {
        let names: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "present",
                "tardy",
                "early_departure",
                "excused_absence",
                "unexcused_absence",
                "out_of_school_suspension",
                "in_school_suspension",
                "not_enrolled"
            ]
        );
    }

    #[test]
    fn category_names_round_trip_through_from_str_display_and_serde() {
        for &c in Category::ALL {
            assert_eq!(c.as_str().parse::<Category>(), Ok(c));
            assert_eq!(c.to_string(), c.as_str());
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<Category>(&json).unwrap(), c);
        }
    }

    #[test]
    fn unknown_category_name_lists_the_valid_ones() {
        let err = "Absent".parse::<Category>().unwrap_err();
        assert_eq!(err.given, "Absent");
        assert!(err.to_string().contains("excused_absence"), "{err}");
    }

    #[test]
    fn absences_and_suspensions_default_to_a_full_day_others_to_zero() {
        use Category::*;
        for (c, f) in [
            (Present, 0.0),
            (Tardy, 0.0),
            (EarlyDeparture, 0.0),
            (ExcusedAbsence, 1.0),
            (UnexcusedAbsence, 1.0),
            (OutOfSchoolSuspension, 1.0),
            (InSchoolSuspension, 1.0),
            (NotEnrolled, 0.0),
        ] {
            assert_eq!(c.default_absent_fraction(), f, "{c}");
            assert_eq!(c.takes_duration(), f > 0.0, "{c}");
        }
    }

    #[test]
    fn other_enums_have_stable_names() {
        assert_eq!(
            Operation::ALL
                .iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>(),
            ["upsert", "delete"]
        );
        assert_eq!(
            RawOperation::ALL
                .iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>(),
            ["upsert", "delete", "key_change"]
        );
        assert_eq!(
            Entity::ALL.iter().map(|o| o.as_str()).collect::<Vec<_>>(),
            ["attendance", "enrollment", "calendar"]
        );
        assert_eq!(
            PayloadFormat::ALL
                .iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>(),
            ["edfi_json", "flat_json"]
        );
        assert_eq!("key_change".parse(), Ok(RawOperation::KeyChange));
        assert!("keychange".parse::<RawOperation>().is_err());
    }

    #[test]
    fn grade_levels_and_exit_types_are_the_ed_fi_code_values() {
        let xml = |f: &str| {
            let text = std::fs::read_to_string(format!(
                "{}/../../../shared/edfi/descriptors/{f}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .ok()?;
            Some(
                text.split("<CodeValue>")
                    .skip(1)
                    .filter_map(|p| p.split_once("</CodeValue>").map(|(v, _)| v.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        // The shared descriptor files sit beside the checkout; compare when present.
        if let Some(grades) = xml("GradeLevelDescriptor.xml") {
            assert_eq!(grades, GRADE_LEVELS);
        }
        if let Some(exits) = xml("ExitWithdrawTypeDescriptor.xml") {
            assert_eq!(exits, EXIT_WITHDRAW_TYPES);
        }
        assert_eq!(canonical_grade_level(" first GRADE "), Some("First grade"));
        assert_eq!(canonical_grade_level("1st"), None);
        assert_eq!(canonical_exit_withdraw_type("no show"), Some("No show"));
        assert_eq!(canonical_exit_withdraw_type("NS"), None);
    }

    #[test]
    fn the_supported_dates_are_clickhouse_dates_the_rollup_can_number() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        assert!(is_supported_date(d(1970, 1, 1)));
        assert!(is_supported_date(d(2149, 6, 5)));
        assert!(!is_supported_date(d(1969, 12, 31)));
        assert!(!is_supported_date(d(2149, 6, 6)));
        assert!(!is_supported_date(d(24, 9, 3)));
        assert!(!is_supported_date(DEFAULT_EXIT_DATE_SENTINEL));
        // Days since 1970-01-01 of the last date: u16::MAX - 1 (u16::MAX is reserved).
        assert_eq!(
            (MAX_SUPPORTED_DATE - MIN_SUPPORTED_DATE).num_days(),
            i64::from(u16::MAX) - 1
        );
    }

    #[test]
    fn kafka_keys_are_district_slash_student_or_school() {
        assert_eq!(student_key("d001", "604877"), "d001/604877");
        assert_eq!(school_key("d001", "255901107"), "d001/255901107");
        let day = CalendarDay {
            district_id: "d1".into(),
            school_id: "s9".into(),
            calendar_code: String::new(),
            school_year: 2022,
            date: NaiveDate::from_ymd_opt(2021, 9, 1).unwrap(),
            is_instructional: true,
            events: vec![],
            operation: Operation::Upsert,
            source_version: 1,
            source_system: "edfi".into(),
            source_instance: "h".into(),
            source_key: "k".into(),
            observed_at_ms: 0,
        };
        assert_eq!(day.kafka_key(), "d1/s9");
        let c = Canonical::Calendar(day);
        assert_eq!(c.kafka_key(), "d1/s9");
        assert_eq!(c.entity(), Entity::Calendar);
        assert_eq!(c.district_id(), "d1");
    }
}
