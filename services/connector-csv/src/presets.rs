//! Column presets: for each SIS export style, which column holds each canonical field
//! (the `flat_json` field names of the raw envelope), and how dates are written.
//! docs/csv-presets.md lists them; a config's `[connectors.<name>.columns.<entity>]`
//! overrides single columns.

use std::collections::BTreeMap;

use rollcall_connector_kit::Entity;

/// Canonical field → the export's column header, per entity.
pub type ColumnMap = BTreeMap<&'static str, String>;

#[derive(Debug, Clone)]
pub struct Preset {
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

fn map(pairs: &[(&'static str, &str)]) -> ColumnMap {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

pub const PRESETS: [&str; 5] = [
    "generic",
    "powerschool",
    "infinite_campus",
    "skyward",
    "aeries",
];

/// The preset called `name`.
pub fn preset(name: &str) -> Option<Preset> {
    let p = match name {
        // Headers are the canonical names themselves; dates ISO 8601.
        "generic" => Preset {
            name: "generic",
            date_formats: &["%Y-%m-%d"],
            attendance: map(&[
                ("school_id", "school_id"),
                ("student_id", "student_id"),
                ("date", "date"),
                ("code", "code"),
                ("secondary_code", "secondary_code"),
                ("duration_days", "duration_days"),
                ("minutes_absent", "minutes_absent"),
                ("school_day_minutes", "school_day_minutes"),
                ("reason", "reason"),
                ("operation", "operation"),
            ]),
            enrollment: map(&[
                ("school_id", "school_id"),
                ("student_id", "student_id"),
                ("entry_date", "entry_date"),
                ("exit_date", "exit_date"),
                ("grade_level", "grade_level"),
                ("subgroups", "subgroups"),
                ("state_student_id", "state_student_id"),
                ("school_year", "school_year"),
                ("operation", "operation"),
            ]),
            calendar: map(&[
                ("school_id", "school_id"),
                ("calendar_code", "calendar_code"),
                ("date", "date"),
                ("events", "events"),
                ("is_instructional", "is_instructional"),
                ("school_year", "school_year"),
                ("operation", "operation"),
            ]),
        },
        // PowerSchool: Attendance joined to Attendance_Code; CC/Students for enrollment;
        // Calendar_Day (InSession 1/0).
        "powerschool" => Preset {
            name: "powerschool",
            date_formats: &["%m/%d/%Y", "%Y-%m-%d"],
            attendance: map(&[
                ("school_id", "SchoolID"),
                ("student_id", "Student_Number"),
                ("date", "Att_Date"),
                ("code", "Att_Code"),
                ("secondary_code", "Presence_Status_CD"),
                ("minutes_absent", "Total_Minutes"),
                ("reason", "Att_Comment"),
            ]),
            enrollment: map(&[
                ("school_id", "SchoolID"),
                ("student_id", "Student_Number"),
                ("entry_date", "EntryDate"),
                ("exit_date", "ExitDate"),
                ("grade_level", "Grade_Level"),
                ("state_student_id", "State_StudentNumber"),
            ]),
            calendar: map(&[
                ("school_id", "SchoolID"),
                ("date", "Date_Value"),
                ("is_instructional", "InSession"),
                ("events", "Note"),
            ]),
        },
        // Infinite Campus: a code is Status × Excuse.
        "infinite_campus" => Preset {
            name: "infinite_campus",
            date_formats: &["%m/%d/%Y", "%Y-%m-%d"],
            attendance: map(&[
                ("school_id", "schoolNumber"),
                ("student_id", "studentNumber"),
                ("date", "date"),
                ("code", "status"),
                ("secondary_code", "excuse"),
                ("minutes_absent", "minutesAbsent"),
                ("school_day_minutes", "minutesInDay"),
                ("reason", "comments"),
            ]),
            enrollment: map(&[
                ("school_id", "schoolNumber"),
                ("student_id", "studentNumber"),
                ("entry_date", "startDate"),
                ("exit_date", "endDate"),
                ("grade_level", "grade"),
                ("state_student_id", "stateID"),
            ]),
            calendar: map(&[
                ("school_id", "schoolNumber"),
                ("calendar_code", "calendarName"),
                ("date", "date"),
                ("is_instructional", "instruction"),
                ("events", "comments"),
            ]),
        },
        // Skyward (Qmlativ): AttendanceType code and category.
        "skyward" => Preset {
            name: "skyward",
            date_formats: &["%m/%d/%Y", "%Y-%m-%d"],
            attendance: map(&[
                ("school_id", "School Code"),
                ("student_id", "Student ID"),
                ("date", "Attendance Date"),
                ("code", "Attendance Type Code"),
                ("secondary_code", "Attendance Category"),
                ("duration_days", "Day Fraction"),
                ("reason", "Reason"),
            ]),
            enrollment: map(&[
                ("school_id", "School Code"),
                ("student_id", "Student ID"),
                ("entry_date", "Entry Date"),
                ("exit_date", "Withdrawal Date"),
                ("grade_level", "Grade"),
                ("state_student_id", "State ID"),
            ]),
            calendar: map(&[
                ("school_id", "School Code"),
                ("date", "Calendar Date"),
                ("is_instructional", "Instructional"),
                ("events", "Day Type"),
            ]),
        },
        // Aeries: ATT table (SC school, SN student number, DT date, AL all-day code).
        "aeries" => Preset {
            name: "aeries",
            date_formats: &["%m/%d/%Y", "%Y-%m-%d"],
            attendance: map(&[
                ("school_id", "SC"),
                ("student_id", "SN"),
                ("date", "DT"),
                ("code", "AL"),
            ]),
            enrollment: map(&[
                ("school_id", "SC"),
                ("student_id", "SN"),
                ("entry_date", "ED"),
                ("exit_date", "LD"),
                ("grade_level", "GR"),
                ("state_student_id", "CID"),
            ]),
            calendar: map(&[
                ("school_id", "SC"),
                ("date", "DT"),
                ("is_instructional", "HO"),
            ]),
        },
        _ => return None,
    };
    Some(p)
}
