//! Column presets: for each SIS export style, which column holds each canonical field
//! (the `flat_json` field names of the raw envelope), how dates are written, and the few
//! per-SIS value rules (PowerSchool's exclusive `ExitDate`, Aeries's holiday flag, ...).
//! docs/csv-presets.md lists them; a config's `[connectors.<name>.columns.<entity>]`
//! overrides single columns.

use std::collections::BTreeMap;

use rollcall_connector_kit::Entity;

/// Where one canonical field comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column headers, matched ignoring ASCII case. The first is the preferred one; the
    /// others are fallbacks, used in order when the file lacks the earlier ones and no
    /// other field of the file reads that column.
    pub headers: Vec<String>,
    /// Applied to the column's text (trimmed; also when empty) before the value is used.
    pub transform: Option<Transform>,
}

impl Column {
    fn new(headers: &[&str]) -> Self {
        Column {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            transform: None,
        }
    }

    fn with(mut self, t: Transform) -> Self {
        self.transform = Some(t);
        self
    }
}

/// A per-SIS value rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// The date one calendar day earlier: an exclusive end date (the first day no longer
    /// enrolled) becomes the inclusive last enrolled day.
    DayBefore,
    /// The value from a table (matched ignoring ASCII case; `""` matches an empty column);
    /// `other` says what a value not in the table becomes.
    Lookup {
        table: &'static [(&'static str, &'static str)],
        other: Other,
    },
    /// An integer plus a constant (PowerSchool's `YearID` + 1991 = the school year's end).
    Add(i64),
}

/// What [`Transform::Lookup`] does with a value its table does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Other {
    /// Keep it as it is.
    Keep,
    /// Use this value.
    Value(&'static str),
    /// The row is invalid (a dead letter naming the column and value).
    Reject,
}

/// Canonical field → where it comes from, per entity.
pub type ColumnMap = BTreeMap<&'static str, Column>;

#[derive(Debug, Clone)]
pub struct Preset {
    /// The preset's name, also the raw envelope's `source_system`: it picks the code map.
    pub name: &'static str,
    /// chrono formats tried in order for date fields.
    pub date_formats: &'static [&'static str],
    pub attendance: ColumnMap,
    pub enrollment: ColumnMap,
    pub calendar: ColumnMap,
}

impl Preset {
    pub fn columns(&self, entity: Entity) -> &ColumnMap {
        match entity {
            Entity::Attendance => &self.attendance,
            Entity::Enrollment => &self.enrollment,
            Entity::Calendar => &self.calendar,
        }
    }

    pub fn columns_mut(&mut self, entity: Entity) -> &mut ColumnMap {
        match entity {
            Entity::Attendance => &mut self.attendance,
            Entity::Enrollment => &mut self.enrollment,
            Entity::Calendar => &mut self.calendar,
        }
    }
}

/// Fields a row must have, per entity.
pub fn required(entity: Entity) -> &'static [&'static str] {
    match entity {
        Entity::Attendance => &["school_id", "student_id", "date", "code"],
        Entity::Enrollment => &["school_id", "student_id", "entry_date"],
        Entity::Calendar => &["school_id", "date"],
    }
}

/// Fields holding dates (converted to ISO 8601 by the connector).
pub const DATE_FIELDS: [&str; 3] = ["date", "entry_date", "exit_date"];

fn map(pairs: Vec<(&'static str, Column)>) -> ColumnMap {
    pairs.into_iter().collect()
}

fn col(headers: &[&str]) -> Column {
    Column::new(headers)
}

/// The preset names a config may use.
pub const PRESETS: [&str; 5] = [
    "generic",
    "powerschool",
    "infinite_campus",
    "skyward",
    "aeries",
];

/// The Ed-Fi calendar event names, which the normalizer knows (`Instructional day` and
/// `Make-up day` are instructional).
const INSTRUCTIONAL_DAY: &str = "Instructional day";

/// Skyward `DayType` → Ed-Fi calendar event.
const SKYWARD_DAY_TYPES: &[(&str, &str)] = &[
    ("Regular", INSTRUCTIONAL_DAY),
    ("Holiday", "Holiday"),
    ("Teacher Workday", "Teacher only day"),
    ("Snow Day", "Weather day"),
    ("Makeup", "Make-up day"),
];

/// Aeries `HO` (holiday code; empty on a school day) → Ed-Fi calendar event.
const AERIES_HOLIDAY_EVENTS: &[(&str, &str)] = &[
    ("", INSTRUCTIONAL_DAY),
    ("H", "Holiday"),
    ("T", "Teacher only day"),
    ("W", "Weather day"),
    ("M", "Make-up day"),
];

/// Aeries `HO` → instructional: an empty holiday code is a school day, `M` a make-up
/// day; any other code is a day without school.
const AERIES_HOLIDAY_INSTRUCTIONAL: &[(&str, &str)] = &[("", "true"), ("M", "true")];

/// The preset called `name` (`power_school` is accepted for `powerschool`).
pub fn preset(name: &str) -> Option<Preset> {
    let p = match name {
        // Canonical names as headers, plus the simulator's and other common spellings
        // as fallbacks. A file with both `category` (a canonical category) and `code`
        // (a local code) maps by the category and keeps the code as the secondary code.
        "generic" => Preset {
            name: "generic",
            date_formats: &["%Y-%m-%d", "%m/%d/%Y"],
            attendance: map(vec![
                ("school_id", col(&["school_id"])),
                ("student_id", col(&["student_id"])),
                ("date", col(&["date"])),
                ("code", col(&["category", "code"])),
                ("secondary_code", col(&["secondary_code", "code"])),
                ("duration_days", col(&["duration_days", "absent_fraction"])),
                ("minutes_absent", col(&["minutes_absent", "minutes_missed"])),
                ("school_day_minutes", col(&["school_day_minutes"])),
                ("reason", col(&["reason"])),
                ("school_year", col(&["school_year"])),
                ("operation", col(&["operation"])),
            ]),
            enrollment: map(vec![
                ("school_id", col(&["school_id"])),
                ("student_id", col(&["student_id"])),
                ("entry_date", col(&["entry_date"])),
                ("exit_date", col(&["exit_date"])),
                ("grade_level", col(&["grade_level", "grade"])),
                (
                    "exit_withdraw_type",
                    col(&["exit_withdraw_type", "exit_type", "exit_code"]),
                ),
                ("subgroups", col(&["subgroups"])),
                ("state_student_id", col(&["state_student_id"])),
                ("school_year", col(&["school_year"])),
                ("operation", col(&["operation"])),
            ]),
            calendar: map(vec![
                ("school_id", col(&["school_id"])),
                ("calendar_code", col(&["calendar_code"])),
                ("date", col(&["date"])),
                ("events", col(&["events", "event"])),
                (
                    "is_instructional",
                    col(&["is_instructional", "instructional"]),
                ),
                ("school_year", col(&["school_year"])),
                ("operation", col(&["operation"])),
            ]),
        },
        // PowerSchool: Attendance joined to Attendance_Code; CC/Students for enrollment;
        // Calendar_Day. YearID is the school year − 1991 (34 = 2024-25). ExitDate is
        // exclusive (the first day no longer enrolled): read as the day before.
        "powerschool" | "power_school" => Preset {
            name: "powerschool",
            date_formats: &["%m/%d/%Y", "%Y-%m-%d"],
            attendance: map(vec![
                ("school_id", col(&["SchoolID"])),
                ("student_id", col(&["Student_Number"])),
                ("date", col(&["Att_Date"])),
                ("code", col(&["Att_Code"])),
                ("secondary_code", col(&["Presence_Status_CD"])),
                ("minutes_absent", col(&["Total_Minutes"])),
                ("reason", col(&["Att_Comment"])),
                ("school_year", col(&["YearID"]).with(Transform::Add(1991))),
            ]),
            enrollment: map(vec![
                ("school_id", col(&["SchoolID"])),
                ("student_id", col(&["Student_Number"])),
                ("entry_date", col(&["EntryDate"])),
                ("exit_date", col(&["ExitDate"]).with(Transform::DayBefore)),
                ("grade_level", col(&["Grade_Level"])),
                // District-defined exit codes: the district's code map names them.
                ("exit_withdraw_type", col(&["ExitCode"])),
                ("state_student_id", col(&["State_StudentNumber"])),
                ("school_year", col(&["YearID"]).with(Transform::Add(1991))),
            ]),
            calendar: map(vec![
                ("school_id", col(&["SchoolID"])),
                ("date", col(&["Date_Value"])),
                ("is_instructional", col(&["InSession"])),
                ("events", col(&["Note"])),
            ]),
        },
        // Infinite Campus: a code is status × excuse (P/A/T/E × E/U/X, or the words);
        // absentMinutes of scheduledMinutes give the share of the day.
        "infinite_campus" => Preset {
            name: "infinite_campus",
            date_formats: &["%Y-%m-%d", "%m/%d/%Y"],
            attendance: map(vec![
                ("school_id", col(&["schoolID"])),
                ("student_id", col(&["studentNumber"])),
                ("date", col(&["date"])),
                ("code", col(&["status"])),
                ("secondary_code", col(&["excuse"])),
                ("minutes_absent", col(&["absentMinutes"])),
                ("school_day_minutes", col(&["scheduledMinutes"])),
                ("reason", col(&["comments"])),
            ]),
            enrollment: map(vec![
                ("school_id", col(&["schoolID"])),
                ("student_id", col(&["studentNumber"])),
                ("entry_date", col(&["startDate"])),
                ("exit_date", col(&["endDate"])),
                ("grade_level", col(&["grade"])),
                // The end status (local, or the state's when exported so).
                ("exit_withdraw_type", col(&["endStatus"])),
                ("state_student_id", col(&["stateID"])),
            ]),
            calendar: map(vec![
                ("school_id", col(&["schoolID"])),
                ("calendar_code", col(&["calendarID"])),
                ("date", col(&["date"])),
                ("is_instructional", col(&["instruction"])),
                ("events", col(&["comments"])),
            ]),
        },
        // Skyward: code = the attendance type's Category (Present, Tardy, Excused,
        // Unexcused, Suspension, ...), secondary code = IsTruant (Y/N); DayValue is the
        // share of the day absent. The district-defined AttendanceTypeCode is not used.
        "skyward" => Preset {
            name: "skyward",
            date_formats: &["%m/%d/%Y", "%Y-%m-%d"],
            attendance: map(vec![
                ("school_id", col(&["SchoolID"])),
                ("student_id", col(&["StudentNumber"])),
                ("date", col(&["AttendanceDate"])),
                ("code", col(&["Category"])),
                ("secondary_code", col(&["IsTruant"])),
                ("duration_days", col(&["DayValue"])),
                ("reason", col(&["Comment"])),
                ("school_year", col(&["SchoolYear"])),
            ]),
            enrollment: map(vec![
                ("school_id", col(&["SchoolID"])),
                ("student_id", col(&["StudentNumber"])),
                ("entry_date", col(&["EntryDate"])),
                ("exit_date", col(&["WithdrawalDate"])),
                ("grade_level", col(&["GradeLevel"])),
                ("exit_withdraw_type", col(&["WithdrawalCode"])),
                ("state_student_id", col(&["StateID"])),
            ]),
            calendar: map(vec![
                ("school_id", col(&["SchoolID"])),
                ("date", col(&["CalendarDate"])),
                ("is_instructional", col(&["Membership"])),
                (
                    "events",
                    col(&["DayType"]).with(Transform::Lookup {
                        table: SKYWARD_DAY_TYPES,
                        other: Other::Keep,
                    }),
                ),
            ]),
        },
        // Aeries: ATT (SC school, SN student number, DT date, AL all-day code, TM
        // minutes), STU (ED enter, LD leave date), DAY (HO holiday code, empty on school
        // days). All-day codes are district-defined: the district's code map says them.
        "aeries" => Preset {
            name: "aeries",
            date_formats: &["%m/%d/%Y", "%Y-%m-%d"],
            attendance: map(vec![
                ("school_id", col(&["SC"])),
                ("student_id", col(&["SN"])),
                ("date", col(&["DT"])),
                ("code", col(&["AL"])),
                ("minutes_absent", col(&["TM"])),
                ("reason", col(&["CO"])),
            ]),
            enrollment: map(vec![
                ("school_id", col(&["SC"])),
                ("student_id", col(&["SN"])),
                ("entry_date", col(&["ED"])),
                ("exit_date", col(&["LD"])),
                ("grade_level", col(&["GR"])),
                // The leave record's exit reason (ATT.RS), else the summer withdrawal
                // reason (STU.SWR): CALPADS exit codes (N470 = no show, ...).
                ("exit_withdraw_type", col(&["RS", "SWR"])),
                ("state_student_id", col(&["CID"])),
            ]),
            calendar: map(vec![
                ("school_id", col(&["SC"])),
                ("date", col(&["DT"])),
                (
                    "is_instructional",
                    col(&["HO"]).with(Transform::Lookup {
                        table: AERIES_HOLIDAY_INSTRUCTIONAL,
                        other: Other::Value("false"),
                    }),
                ),
                (
                    "events",
                    col(&["HO"]).with(Transform::Lookup {
                        table: AERIES_HOLIDAY_EVENTS,
                        other: Other::Keep,
                    }),
                ),
            ]),
        },
        _ => return None,
    };
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_preset_exists_and_maps_the_required_fields() {
        for name in PRESETS {
            let p = preset(name).unwrap();
            assert_eq!(p.name, name);
            for entity in [Entity::Attendance, Entity::Enrollment, Entity::Calendar] {
                for field in required(entity) {
                    assert!(
                        p.columns(entity).contains_key(field),
                        "{name} {entity:?} lacks {field}"
                    );
                }
                for field in p.columns(entity).keys() {
                    assert!(crate::rows::FIELDS.contains(field), "{name}: {field}");
                }
            }
        }
        assert_eq!(preset("power_school").unwrap().name, "powerschool");
        assert!(preset("sis-x").is_none());
    }
}
