//! The state's attendance policy (the DESIGN.md "Policy" table, defaults included) and the
//! pure metric math built on it: absent days, tiers, chronic absence, truancy, school years.
//! No I/O: it knows nothing of Kafka, ClickHouse, Avro or where the policy was read from.

use std::borrow::Cow;

use chrono::{Datelike, Days, NaiveDate};
use rollcall_model::Category;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Tolerance for comparing rates and fractions, so that e.g. 3 ÷ 30 counts as 10%.
pub const EPSILON: f64 = 1e-9;

/// The state's attendance policy. Missing keys take the DESIGN.md defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Chronically absent when absent ≥ this share of enrolled instructional days.
    pub chronic_threshold: f64,
    /// Students enrolled fewer instructional days than this are not judged.
    pub min_enrolled_days: u32,
    /// Cut points of the absence-rate tiers.
    pub tiers: Tiers,
    /// How a partial-day absence counts toward days absent.
    pub partial_day: PartialDayRule,
    pub out_of_school_suspension_counts_as_absent: bool,
    pub in_school_suspension_counts_as_absent: bool,
    /// Whether the exit date is itself an enrolled day.
    pub exit_date: ExitDateRule,
    /// What an enrolled instructional day with no event means.
    pub missing_day: MissingDayRule,
    /// Districts whose feeds report every day ("positive attendance"): for them a day
    /// with no event is `missing`, whatever `missing_day` says.
    pub positive_attendance_districts: Vec<String>,
    pub truancy: Truancy,
    /// Aggregate counts below this are suppressed before publication.
    pub publication_threshold: u32,
    /// Whether a count of 0 is suppressed like any other small count. Default false: a
    /// zero is published — it is no small group, though it still says "none of them";
    /// the trade-off (NCES SLDS Technical Brief 3) is in docs/bi-views.md.
    pub suppress_zero_counts: bool,
    /// Length of an instructional day in minutes, when the record does not say.
    pub school_day_minutes: u32,
    /// The month a school year starts (7 = July); a school year is named by the
    /// calendar year it ends in.
    pub school_year_start_month: u32,
    /// Attendance dated up to this many days after "today" is accepted.
    pub future_date_tolerance_days: u32,
    /// Upper-case every identifier after trimming (trimming always happens).
    pub uppercase_ids: bool,
    /// Longest identifier accepted, in characters.
    pub max_id_length: u32,
    /// Districts whose school calendars rollcall derives from their sessions, because
    /// the SIS publishes no instructional calendar: `[policy.derived_calendars.<district>]`.
    /// Never applied to a district not listed here.
    pub derived_calendars: std::collections::BTreeMap<String, DerivedCalendar>,
    /// The canonical grade levels (Ed-Fi GradeLevelDescriptor code values,
    /// `rollcall_model::GRADE_LEVELS`) whose students enter the aggregates; see
    /// [`counts_in_aggregates`]. Default Kindergarten through Twelfth grade.
    pub aggregate_grades: Vec<String>,
    /// Exit/withdraw types (Ed-Fi ExitWithdrawTypeDescriptor code values,
    /// `rollcall_model::EXIT_WITHDRAW_TYPES`) that void an enrollment: it contributes no
    /// enrolled day. See [`voids_enrollment`]. Default `["No show", "Invalid enrollment"]`.
    pub void_exit_types: Vec<String>,
    /// Who the state row counts once: a state student ID where the SIS supplies one, or
    /// every (district, student) apart. See [`StateIdentity`].
    pub state_identity: StateIdentity,
}

/// How the state's aggregate tells students apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateIdentity {
    /// A student with a state student ID is one student statewide, judged on their days
    /// summed over every district; one without is counted per (district, student).
    #[default]
    StateStudentId,
    /// Every (district, student) is counted apart, even with a shared state ID (a
    /// student who moved districts counts once in each).
    DistrictStudent,
}

/// The fallback calendar of one district: every `weekdays` date inside each session the
/// SIS sends (begin and end inclusive), minus `holidays`. Derived days carry the
/// calendar code [`DERIVED_CALENDAR_CODE`] and say so in their events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DerivedCalendar {
    /// School days of the week, as `mon`..`sun`.
    pub weekdays: Vec<String>,
    /// Dates with no school inside sessions: `"2021-11-25"` or an inclusive range
    /// `"2021-11-24..2021-11-26"`.
    pub holidays: Vec<String>,
}

impl Default for DerivedCalendar {
    fn default() -> Self {
        DerivedCalendar {
            weekdays: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            holidays: Vec::new(),
        }
    }
}

/// The calendar code of derived days (published calendars keep their own codes).
pub const DERIVED_CALENDAR_CODE: &str = "derived";
/// The event a derived school day carries.
pub const DERIVED_SCHOOL_DAY: &str = "Derived: weekday in session";
/// The event a configured holiday carries (a weekday in a session with no school).
pub const DERIVED_HOLIDAY: &str = "Derived: configured holiday";

/// One date of a derived calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DerivedDay {
    pub date: NaiveDate,
    pub is_instructional: bool,
    /// [`DERIVED_SCHOOL_DAY`] or [`DERIVED_HOLIDAY`].
    pub event: &'static str,
}

fn parse_weekday(s: &str) -> Option<chrono::Weekday> {
    match s.trim().to_ascii_lowercase().get(..3)? {
        "mon" => Some(chrono::Weekday::Mon),
        "tue" => Some(chrono::Weekday::Tue),
        "wed" => Some(chrono::Weekday::Wed),
        "thu" => Some(chrono::Weekday::Thu),
        "fri" => Some(chrono::Weekday::Fri),
        "sat" => Some(chrono::Weekday::Sat),
        "sun" => Some(chrono::Weekday::Sun),
        _ => None,
    }
}

fn parse_holiday(s: &str) -> Result<(NaiveDate, NaiveDate), String> {
    let date = |t: &str| {
        NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d")
            .map_err(|_| format!("{t:?} is not a date YYYY-MM-DD"))
    };
    match s.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (date(a)?, date(b)?);
            if b < a {
                return Err(format!("range {s:?} ends before it starts"));
            }
            Ok((a, b))
        }
        None => date(s).map(|d| (d, d)),
    }
}

impl DerivedCalendar {
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.weekdays.is_empty() {
            out.push("weekdays must name at least one day".into());
        }
        for w in &self.weekdays {
            if parse_weekday(w).is_none() {
                out.push(format!(
                    "weekday {w:?} is not one of mon, tue, wed, thu, fri, sat, sun"
                ));
            }
        }
        for h in &self.holidays {
            if let Err(e) = parse_holiday(h) {
                out.push(format!("holiday {e}"));
            }
        }
        out
    }

    /// The days of a session from `begin` to `end` inclusive: each school weekday, as a
    /// school day or (when a configured holiday) a holiday. Other days have no record.
    /// Invalid settings are skipped (validation reports them).
    pub fn days(&self, begin: NaiveDate, end: NaiveDate) -> Vec<DerivedDay> {
        let weekdays: Vec<chrono::Weekday> = self
            .weekdays
            .iter()
            .filter_map(|w| parse_weekday(w))
            .collect();
        let holidays: Vec<(NaiveDate, NaiveDate)> = self
            .holidays
            .iter()
            .filter_map(|h| parse_holiday(h).ok())
            .collect();
        let mut out = Vec::new();
        let mut d = begin;
        while d <= end {
            if weekdays.contains(&d.weekday()) {
                let holiday = holidays.iter().any(|(a, b)| *a <= d && d <= *b);
                out.push(DerivedDay {
                    date: d,
                    is_instructional: !holiday,
                    event: if holiday {
                        DERIVED_HOLIDAY
                    } else {
                        DERIVED_SCHOOL_DAY
                    },
                });
            }
            match d.succ_opt() {
                Some(n) => d = n,
                None => break,
            }
        }
        out
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            chronic_threshold: 0.10,
            min_enrolled_days: 10,
            tiers: Tiers::default(),
            partial_day: PartialDayRule::Fractional,
            out_of_school_suspension_counts_as_absent: true,
            in_school_suspension_counts_as_absent: false,
            exit_date: ExitDateRule::Inclusive,
            missing_day: MissingDayRule::Present,
            positive_attendance_districts: Vec::new(),
            truancy: Truancy::default(),
            publication_threshold: 10,
            suppress_zero_counts: false,
            school_day_minutes: 360,
            school_year_start_month: 7,
            future_date_tolerance_days: 0,
            uppercase_ids: false,
            max_id_length: 64,
            derived_calendars: std::collections::BTreeMap::new(),
            aggregate_grades: DEFAULT_AGGREGATE_GRADES.map(String::from).to_vec(),
            void_exit_types: DEFAULT_VOID_EXIT_TYPES.map(String::from).to_vec(),
            state_identity: StateIdentity::StateStudentId,
        }
    }
}

/// `aggregate_grades` by default: Kindergarten through Twelfth grade (the grades of
/// EDFacts FS195 and ESSA school accountability), so Preschool, Prekindergarten,
/// Transitional Kindergarten, Grade 13, adult, ungraded and postsecondary students are
/// reported separately, not in the K-12 rates.
pub const DEFAULT_AGGREGATE_GRADES: [&str; 13] = [
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
];

/// `void_exit_types` by default: an enrollment that never began (the student did not
/// show up) or was recorded in error.
pub const DEFAULT_VOID_EXIT_TYPES: [&str; 2] = ["No show", "Invalid enrollment"];

/// Whether a student of this (canonical) grade level enters the aggregates
/// (`policy.aggregate_grades`). `None` — the SIS sent no grade — counts: a feed that
/// exports no grades would otherwise publish nothing at all, and a grade that *was*
/// sent but is unknown never gets here (the normalizer dead-letters it). Grades compare
/// exactly, in their canonical spelling (validation guarantees the setting uses it).
pub fn counts_in_aggregates(grade: Option<&str>, policy: &Policy) -> bool {
    match grade {
        None => true,
        Some(g) => policy.aggregate_grades.iter().any(|a| a == g),
    }
}

/// Whether an enrollment with this (canonical) exit/withdraw type is void
/// (`policy.void_exit_types`): it contributes no enrolled day, as if it had never been
/// recorded. `None` (no exit type, or one the code map does not know) never voids.
pub fn voids_enrollment(exit_withdraw_type: Option<&str>, policy: &Policy) -> bool {
    exit_withdraw_type.is_some_and(|t| policy.void_exit_types.iter().any(|v| v == t))
}

/// Lower bounds of the tiers: satisfactory < `at_risk` ≤ at risk < `moderate_chronic`
/// ≤ moderate chronic < `severe_chronic` ≤ severe chronic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tiers {
    pub at_risk: f64,
    pub moderate_chronic: f64,
    pub severe_chronic: f64,
}

impl Default for Tiers {
    fn default() -> Self {
        Tiers {
            at_risk: 0.05,
            moderate_chronic: 0.10,
            severe_chronic: 0.20,
        }
    }
}

/// How a partial-day absence counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartialDayRule {
    /// A day counts as its `absent_fraction` (0.5 for a half day).
    Fractional,
    /// ≥ 0.5 of a day counts as 1, less as 0 (CRDC, Connecticut).
    HalfDayThreshold,
    /// Only a full day (1.0) counts (California STAS).
    FullDayOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitDateRule {
    /// The exit date is still an enrolled day (current Ed-Fi guidance).
    Inclusive,
    /// The last enrolled day is the day before the exit date.
    Exclusive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingDayRule {
    /// Exception-only feeds: no event means present.
    Present,
    /// Positive-attendance feeds: no event is a data-quality gap, counted as missing.
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Truancy {
    /// Truant when unexcused absent days (sum of fractions) in the window reach this.
    pub unexcused_days_threshold: f64,
    /// `"school_year"` or a number of calendar days ending on the as-of date.
    pub window: TruancyWindow,
}

impl Default for Truancy {
    fn default() -> Self {
        Truancy {
            unexcused_days_threshold: 3.0,
            window: TruancyWindow::SchoolYear,
        }
    }
}

/// The span truancy is counted over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruancyWindow {
    /// The school year to date.
    SchoolYear,
    /// The last N calendar days up to and including the as-of date.
    Days(u32),
}

impl Serialize for TruancyWindow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TruancyWindow::SchoolYear => s.serialize_str("school_year"),
            TruancyWindow::Days(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for TruancyWindow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = TruancyWindow;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"school_year\" or a number of days")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TruancyWindow, E> {
                if v == "school_year" {
                    Ok(TruancyWindow::SchoolYear)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<TruancyWindow, E> {
                u32::try_from(v)
                    .map(TruancyWindow::Days)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<TruancyWindow, E> {
                u32::try_from(v)
                    .map(TruancyWindow::Days)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// One invalid policy setting, naming its key: `policy.chronic_threshold must be in
/// (0, 1], got 1.5`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("policy.{key} {problem}")]
pub struct PolicyError {
    pub key: &'static str,
    pub problem: String,
}

/// Every invalid setting of a policy, one per line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct InvalidPolicy(pub Vec<PolicyError>);

impl Policy {
    /// Checks the ranges types cannot express; reports every problem, each naming its key.
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        let mut errs = Vec::new();
        let mut bad = |key: &'static str, problem: String| errs.push(PolicyError { key, problem });
        let unit = |v: f64| v.is_finite() && v > 0.0 && v <= 1.0;
        if !unit(self.chronic_threshold) {
            bad(
                "chronic_threshold",
                format!("must be in (0, 1], got {}", self.chronic_threshold),
            );
        } else if rate_in_basis_points(self.chronic_threshold).is_none() {
            bad(
                "chronic_threshold",
                format!(
                    "must be a multiple of 0.0001 (one basis point), got {}",
                    self.chronic_threshold
                ),
            );
        }
        if self.min_enrolled_days == 0 {
            bad("min_enrolled_days", "must be at least 1, got 0".into());
        }
        let t = &self.tiers;
        for (key, v) in [
            ("tiers.at_risk", t.at_risk),
            ("tiers.moderate_chronic", t.moderate_chronic),
            ("tiers.severe_chronic", t.severe_chronic),
        ] {
            if !unit(v) {
                bad(key, format!("must be in (0, 1], got {v}"));
            } else if rate_in_basis_points(v).is_none() {
                bad(
                    key,
                    format!("must be a multiple of 0.0001 (one basis point), got {v}"),
                );
            }
        }
        if !(t.at_risk < t.moderate_chronic && t.moderate_chronic < t.severe_chronic) {
            bad(
                "tiers",
                format!(
                    "cut points must increase (at_risk < moderate_chronic < severe_chronic), got {} / {} / {}",
                    t.at_risk, t.moderate_chronic, t.severe_chronic
                ),
            );
        }
        let th = self.truancy.unexcused_days_threshold;
        if !(th.is_finite() && th > 0.0) {
            bad(
                "truancy.unexcused_days_threshold",
                format!("must be a positive number of days, got {th}"),
            );
        }
        if self.truancy.window == TruancyWindow::Days(0) {
            bad(
                "truancy.window",
                "must be \"school_year\" or at least 1 day, got 0".into(),
            );
        }
        if !(1..=1440).contains(&self.school_day_minutes) {
            bad(
                "school_day_minutes",
                format!("must be in 1..=1440, got {}", self.school_day_minutes),
            );
        }
        if !(1..=12).contains(&self.school_year_start_month) {
            bad(
                "school_year_start_month",
                format!(
                    "must be a month number 1..=12, got {}",
                    self.school_year_start_month
                ),
            );
        }
        if self.future_date_tolerance_days > 366 {
            bad(
                "future_date_tolerance_days",
                format!(
                    "must be at most 366, got {}",
                    self.future_date_tolerance_days
                ),
            );
        }
        if !(1..=1024).contains(&self.max_id_length) {
            bad(
                "max_id_length",
                format!("must be in 1..=1024, got {}", self.max_id_length),
            );
        }
        for (district, cal) in &self.derived_calendars {
            if district.trim().is_empty() {
                bad(
                    "derived_calendars",
                    "must not contain an empty district id".into(),
                );
            }
            for p in cal.problems() {
                bad("derived_calendars", format!("{district}: {p}"));
            }
        }
        if self.aggregate_grades.is_empty() {
            bad(
                "aggregate_grades",
                "must name at least one grade level (default Kindergarten through Twelfth grade)"
                    .into(),
            );
        }
        for (key, list, canonical) in [
            (
                "aggregate_grades",
                &self.aggregate_grades,
                rollcall_model::GRADE_LEVELS,
            ),
            (
                "void_exit_types",
                &self.void_exit_types,
                rollcall_model::EXIT_WITHDRAW_TYPES,
            ),
        ] {
            for v in list {
                if !canonical.contains(&v.as_str()) {
                    let hint = canonical
                        .iter()
                        .find(|c| c.eq_ignore_ascii_case(v.trim()))
                        .map(|c| format!(" (did you mean {c:?}?)"))
                        .unwrap_or_default();
                    bad(
                        key,
                        format!(
                            "must list Ed-Fi code values exactly as spelled; {v:?} is not one{hint}; expected any of: {}",
                            canonical.join(", ")
                        ),
                    );
                }
            }
        }
        for d in &self.positive_attendance_districts {
            if d.trim().is_empty() {
                bad(
                    "positive_attendance_districts",
                    "must not contain an empty district id".into(),
                );
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(InvalidPolicy(errs))
        }
    }
}

// ---------------------------------------------------------------------------
// Counting one student-day
// ---------------------------------------------------------------------------

/// The contribution of one student-day event to `days_absent`, under the partial-day
/// rule and the suspension settings. Tardy, early departure, present and not enrolled
/// contribute 0.
pub fn absent_days(category: Category, absent_fraction: f64, policy: &Policy) -> f64 {
    let counts = match category {
        Category::ExcusedAbsence | Category::UnexcusedAbsence => true,
        Category::OutOfSchoolSuspension => policy.out_of_school_suspension_counts_as_absent,
        Category::InSchoolSuspension => policy.in_school_suspension_counts_as_absent,
        Category::Present | Category::Tardy | Category::EarlyDeparture | Category::NotEnrolled => {
            false
        }
    };
    if !counts {
        return 0.0;
    }
    apply_partial_day_rule(absent_fraction, policy.partial_day)
}

/// A fraction of a day, counted under a partial-day rule.
pub fn apply_partial_day_rule(absent_fraction: f64, rule: PartialDayRule) -> f64 {
    let f = if absent_fraction.is_finite() {
        absent_fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    match rule {
        PartialDayRule::Fractional => f,
        PartialDayRule::HalfDayThreshold => {
            if f >= 0.5 - EPSILON {
                1.0
            } else {
                0.0
            }
        }
        PartialDayRule::FullDayOnly => {
            if f >= 1.0 - EPSILON {
                1.0
            } else {
                0.0
            }
        }
    }
}

/// The contribution of one student-day to truancy: unexcused absences only, as the
/// sum of fractions (suspensions never count toward truancy).
pub fn truancy_days(category: Category, absent_fraction: f64) -> f64 {
    match category {
        Category::UnexcusedAbsence if absent_fraction.is_finite() => {
            absent_fraction.clamp(0.0, 1.0)
        }
        _ => 0.0,
    }
}

/// Whether a day with this category is an enrolled day (in the denominator).
/// `not_enrolled` removes the day; every other category keeps it.
pub fn counts_as_enrolled(category: Category) -> bool {
    category != Category::NotEnrolled
}

/// Whether the day counts toward `days_tardy`. DESIGN.md: "tardy, early departure —
/// present (counted separately as `days_tardy`)": both are present days, and both are
/// counted in `days_tardy`.
pub fn counts_as_tardy(category: Category) -> bool {
    matches!(category, Category::Tardy | Category::EarlyDeparture)
}

// ---------------------------------------------------------------------------
// Rates, tiers, chronic absence, truancy, publication
// ---------------------------------------------------------------------------

/// Absence tier of a student by absence rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Satisfactory,
    AtRisk,
    ModerateChronic,
    SevereChronic,
}

impl Tier {
    pub const fn as_str(self) -> &'static str {
        match self {
            Tier::Satisfactory => "satisfactory",
            Tier::AtRisk => "at_risk",
            Tier::ModerateChronic => "moderate_chronic",
            Tier::SevereChronic => "severe_chronic",
        }
    }
}

/// Days absent ÷ days enrolled, or `None` with no enrolled days.
pub fn absence_rate(days_absent: f64, days_enrolled: u32) -> Option<f64> {
    (days_enrolled > 0).then(|| days_absent / f64::from(days_enrolled))
}

/// The tier of an absence rate (each cut point belongs to the higher tier).
pub fn tier(rate: f64, policy: &Policy) -> Tier {
    let t = &policy.tiers;
    if rate >= t.severe_chronic - EPSILON {
        Tier::SevereChronic
    } else if rate >= t.moderate_chronic - EPSILON {
        Tier::ModerateChronic
    } else if rate >= t.at_risk - EPSILON {
        Tier::AtRisk
    } else {
        Tier::Satisfactory
    }
}

/// Whether enrolled at least `min_enrolled_days` (so the student is judged at all).
pub fn meets_min_enrollment(days_enrolled: u32, policy: &Policy) -> bool {
    days_enrolled >= policy.min_enrolled_days
}

/// Chronically absent: enrolled at least `min_enrolled_days` and absent at least
/// `chronic_threshold` of the enrolled days.
pub fn is_chronic(days_absent: f64, days_enrolled: u32, policy: &Policy) -> bool {
    meets_min_enrollment(days_enrolled, policy)
        && absence_rate(days_absent, days_enrolled)
            .is_some_and(|r| r >= policy.chronic_threshold - EPSILON)
}

/// Truant: unexcused days (sum of fractions) in the window reach the threshold.
pub fn is_truant(unexcused_days: f64, policy: &Policy) -> bool {
    unexcused_days >= policy.truancy.unexcused_days_threshold - EPSILON
}

/// The first day of the truancy window ending on `as_of`.
pub fn truancy_window_start(as_of: NaiveDate, policy: &Policy) -> NaiveDate {
    match policy.truancy.window {
        TruancyWindow::SchoolYear => school_year_start(school_year_of(as_of, policy), policy),
        TruancyWindow::Days(n) => as_of
            .checked_sub_days(Days::new(u64::from(n.saturating_sub(1))))
            .unwrap_or(NaiveDate::MIN),
    }
}

/// Whether an aggregate count must be suppressed before publication: below
/// `publication_threshold`, except a zero when `suppress_zero_counts` is off.
pub fn is_suppressed(count: u64, policy: &Policy) -> bool {
    count < u64::from(policy.publication_threshold) && (count > 0 || policy.suppress_zero_counts)
}

/// Rates (the chronic threshold, the tier cut points) are multiples of this: 0.0001, one
/// basis point, so that the BI views can compare them in exact integers.
pub const RATE_BASIS_POINTS: u32 = 10_000;

/// A rate in basis points (0.15 → 1500), when it is a whole number of them.
pub fn rate_in_basis_points(rate: f64) -> Option<u32> {
    let bp = rate * f64::from(RATE_BASIS_POINTS);
    let whole = bp.round();
    (bp.is_finite()
        && (0.0..=f64::from(RATE_BASIS_POINTS)).contains(&whole)
        && (bp - whole).abs() < 1e-6)
        .then_some(whole as u32)
}

/// What a day with no event means for this district.
pub fn missing_day_rule(district_id: &str, policy: &Policy) -> MissingDayRule {
    if policy
        .positive_attendance_districts
        .iter()
        .any(|d| d == district_id)
    {
        MissingDayRule::Missing
    } else {
        policy.missing_day
    }
}

// ---------------------------------------------------------------------------
// Dates: school years, enrollment spans, the future
// ---------------------------------------------------------------------------

/// The school year a date belongs to, named by the calendar year it ends in
/// (2021-08-25 → 2022 with a July start).
pub fn school_year_of(date: NaiveDate, policy: &Policy) -> i32 {
    let start = policy.school_year_start_month;
    if start <= 1 || date.month() < start {
        date.year()
    } else {
        date.year() + 1
    }
}

/// The first day of a school year.
pub fn school_year_start(school_year: i32, policy: &Policy) -> NaiveDate {
    let m = policy.school_year_start_month.clamp(1, 12);
    let y = if m == 1 { school_year } else { school_year - 1 };
    NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(NaiveDate::MIN)
}

/// Whether `date` is an enrolled day of an enrollment span, under the exit-date rule.
pub fn is_enrolled_on(
    date: NaiveDate,
    entry_date: NaiveDate,
    exit_date: Option<NaiveDate>,
    policy: &Policy,
) -> bool {
    date >= entry_date
        && match (exit_date, policy.exit_date) {
            (None, _) => true,
            (Some(exit), ExitDateRule::Inclusive) => date <= exit,
            (Some(exit), ExitDateRule::Exclusive) => date < exit,
        }
}

/// Whether an attendance date lies beyond today plus the tolerance.
pub fn is_future(date: NaiveDate, today: NaiveDate, policy: &Policy) -> bool {
    let limit = today
        .checked_add_days(Days::new(u64::from(policy.future_date_tolerance_days)))
        .unwrap_or(NaiveDate::MAX);
    date > limit
}

// ---------------------------------------------------------------------------
// Durations → absent fraction
// ---------------------------------------------------------------------------

/// A duration that cannot become an absent fraction.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    #[error("{what} is not a finite number ({value})")]
    NotFinite { what: &'static str, value: f64 },
    #[error("{what} is negative ({value})")]
    Negative { what: &'static str, value: f64 },
    #[error("school day length must be positive minutes, got {value}")]
    InvalidSchoolDay { value: f64 },
}

/// The absent fraction of an event lasting `days` of a day (Ed-Fi `eventDuration`:
/// 1, 0.5, 0.33). More than one day is clamped to 1 (a student misses at most one
/// day per date); negative or non-finite values are errors.
pub fn absent_fraction_from_duration_days(days: f64) -> Result<f64, DurationError> {
    if !days.is_finite() {
        return Err(DurationError::NotFinite {
            what: "duration in days",
            value: days,
        });
    }
    if days < 0.0 {
        return Err(DurationError::Negative {
            what: "duration in days",
            value: days,
        });
    }
    Ok(days.min(1.0))
}

/// The absent fraction of `minutes_absent` out of a `school_day_minutes` day, clamped
/// to 1 when the minutes exceed the day.
pub fn absent_fraction_from_minutes(
    minutes_absent: f64,
    school_day_minutes: f64,
) -> Result<f64, DurationError> {
    if !(school_day_minutes.is_finite() && school_day_minutes > 0.0) {
        return Err(DurationError::InvalidSchoolDay {
            value: school_day_minutes,
        });
    }
    if !minutes_absent.is_finite() {
        return Err(DurationError::NotFinite {
            what: "minutes absent",
            value: minutes_absent,
        });
    }
    if minutes_absent < 0.0 {
        return Err(DurationError::Negative {
            what: "minutes absent",
            value: minutes_absent,
        });
    }
    Ok((minutes_absent / school_day_minutes).min(1.0))
}

// ---------------------------------------------------------------------------
// Identifiers
// ---------------------------------------------------------------------------

/// An identifier the policy does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("is empty")]
    Empty,
    #[error("is {len} characters long; the limit is {max} (policy.max_id_length)")]
    TooLong { len: usize, max: u32 },
    #[error("contains a control character")]
    ControlCharacter,
}

/// Trims an identifier (always), upper-cases it when `uppercase_ids` is set, and checks
/// it is non-empty, within `max_id_length` characters and free of control characters.
/// Borrows when nothing changes.
pub fn normalize_id<'a>(raw: &'a str, policy: &Policy) -> Result<Cow<'a, str>, IdError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    let len = s.chars().count();
    if len > policy.max_id_length as usize {
        return Err(IdError::TooLong {
            len,
            max: policy.max_id_length,
        });
    }
    if s.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter);
    }
    if policy.uppercase_ids && s.chars().any(char::is_lowercase) {
        Ok(Cow::Owned(s.to_uppercase()))
    } else {
        Ok(Cow::Borrowed(s))
    }
}

#[cfg(test)]
mod tests;
