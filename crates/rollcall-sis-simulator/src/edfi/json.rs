//! Ed-Fi Data Standard 5 JSON shapes of the simulator's records, and their key values
//! as the `deletes` and `keyChanges` endpoints show them.

use chrono::{Datelike, Duration, NaiveDate, NaiveTime};
use serde_json::{json, Map, Value};

use crate::model::{Category, Change, Fact, FactKey, Malformation, World};

/// The calendar code of every school calendar.
pub const CALENDAR_CODE: &str = "REG";
/// Length of the simulated school day in minutes (08:00–14:00).
pub const DAY_MINUTES: u16 = 360;

fn descriptor(kind: &str, value: &str) -> String {
    format!("uri://ed-fi.org/{kind}#{value}")
}

fn date_str(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// `_lastModifiedDate` of a change: its visible day, at a time derived from its version.
pub fn last_modified(c: &Change) -> String {
    let t = NaiveTime::from_hms_opt(6, 0, 0).expect("06:00")
        + Duration::seconds((c.cv % 43_200) as i64);
    format!("{}T{}Z", date_str(c.visible_on), t.format("%H:%M:%S"))
}

/// The JSON resource written by the upsert at log index `idx` (its state as of that
/// change). Malformed records are broken here, as their flag says.
pub fn resource_json(world: &World, idx: usize) -> Value {
    let c = &world.log[idx];
    let fact = world.fact_at(idx).expect("an upsert");
    let record = &world.records[c.record as usize];
    let year = world.config.school_year;
    let mut obj = Map::new();
    obj.insert("id".into(), json!(world.edfi_id(c.record)));
    match *fact {
        Fact::CalendarDate(cd) => {
            let school_id = world.schools[cd.school as usize].school_id;
            obj.insert(
                "calendarReference".into(),
                json!({"calendarCode": CALENDAR_CODE, "schoolId": school_id, "schoolYear": year}),
            );
            obj.insert("date".into(), json!(date_str(cd.date)));
            obj.insert(
                "calendarEvents".into(),
                json!([{"calendarEventDescriptor": descriptor("CalendarEventDescriptor", cd.event.edfi_name())}]),
            );
        }
        Fact::Enrollment(e) => {
            let school_id = world.schools[e.school as usize].school_id;
            obj.insert("schoolReference".into(), json!({"schoolId": school_id}));
            obj.insert(
                "studentReference".into(),
                json!({"studentUniqueId": world.students[e.student as usize].unique_id}),
            );
            obj.insert("entryDate".into(), json!(date_str(e.entry_date)));
            obj.insert(
                "entryGradeLevelDescriptor".into(),
                json!(descriptor("GradeLevelDescriptor", e.grade.edfi_name())),
            );
            obj.insert(
                "entryTypeDescriptor".into(),
                json!(descriptor("EntryTypeDescriptor", e.entry_type.edfi_name())),
            );
            if let Some(x) = e.exit_date {
                obj.insert("exitWithdrawDate".into(), json!(date_str(x)));
            }
            if let Some(t) = e.exit_type {
                obj.insert(
                    "exitWithdrawTypeDescriptor".into(),
                    json!(descriptor("ExitWithdrawTypeDescriptor", t.edfi_name())),
                );
            }
            obj.insert(
                "calendarReference".into(),
                json!({"calendarCode": CALENDAR_CODE, "schoolId": school_id, "schoolYear": year}),
            );
            obj.insert(
                "schoolYearTypeReference".into(),
                json!({"schoolYear": year}),
            );
            obj.insert("primarySchool".into(), json!(true));
        }
        Fact::Attendance(a) => {
            let school_id = world.schools[a.school as usize].school_id;
            obj.insert("schoolReference".into(), json!({"schoolId": school_id}));
            obj.insert(
                "sessionReference".into(),
                json!({"schoolId": school_id, "schoolYear": year, "sessionName": world.session_name(a.date)}),
            );
            if record.malformed != Some(Malformation::MissingStudent) {
                obj.insert(
                    "studentReference".into(),
                    json!({"studentUniqueId": world.students[a.student as usize].unique_id}),
                );
            }
            let category = if record.malformed == Some(Malformation::UnknownCode) {
                "uri://district.example.org/AttendanceEventCategoryDescriptor#ZZ".to_string()
            } else {
                a.category.edfi_descriptor().to_string()
            };
            obj.insert("attendanceEventCategoryDescriptor".into(), json!(category));
            let date = if record.malformed == Some(Malformation::BadDate) {
                format!("{}-02-30", a.date.year())
            } else {
                date_str(a.date)
            };
            obj.insert("eventDate".into(), json!(date));
            if !a.reason.text().is_empty() {
                obj.insert("attendanceEventReason".into(), json!(a.reason.text()));
            }
            match a.category {
                Category::ExcusedAbsence
                | Category::UnexcusedAbsence
                | Category::OutOfSchoolSuspension => {
                    let d = f64::from(a.absent_milli) / 1000.0;
                    obj.insert("eventDuration".into(), json!(d));
                    if a.absent_milli < 1000 {
                        obj.insert(
                            "schoolAttendanceDuration".into(),
                            json!(DAY_MINUTES - a.minutes_missed),
                        );
                    }
                }
                Category::InSchoolSuspension => {
                    obj.insert("eventDuration".into(), json!(1.0));
                }
                Category::Tardy => {
                    let t = NaiveTime::from_hms_opt(8, 0, 0).expect("08:00")
                        + Duration::minutes(i64::from(a.minutes_missed));
                    obj.insert(
                        "arrivalTime".into(),
                        json!(t.format("%H:%M:%S").to_string()),
                    );
                    obj.insert(
                        "schoolAttendanceDuration".into(),
                        json!(DAY_MINUTES - a.minutes_missed),
                    );
                }
                Category::EarlyDeparture => {
                    let t = NaiveTime::from_hms_opt(14, 0, 0).expect("14:00")
                        - Duration::minutes(i64::from(a.minutes_missed));
                    obj.insert(
                        "departureTime".into(),
                        json!(t.format("%H:%M:%S").to_string()),
                    );
                    obj.insert(
                        "schoolAttendanceDuration".into(),
                        json!(DAY_MINUTES - a.minutes_missed),
                    );
                }
                Category::Present => {}
            }
        }
    }
    obj.insert(
        "_etag".into(),
        json!((5_250_000_000_000_000_000u64 + c.cv).to_string()),
    );
    obj.insert("_lastModifiedDate".into(), json!(last_modified(c)));
    Value::Object(obj)
}

/// The natural-key values of a fact, named as Ed-Fi's deletes/keyChanges name them.
pub fn key_values(world: &World, fact: &Fact) -> Value {
    let year = world.config.school_year;
    let school_id = |s: u32| world.schools[s as usize].school_id;
    let student_id = |s: u32| world.students[s as usize].unique_id.clone();
    match fact.key() {
        FactKey::CalendarDate { school, date } => json!({
            "calendarCode": CALENDAR_CODE,
            "date": date_str(date),
            "schoolId": school_id(school),
            "schoolYear": year,
        }),
        FactKey::Enrollment {
            school,
            student,
            entry_date,
        } => json!({
            "entryDate": date_str(entry_date),
            "schoolId": school_id(school),
            "studentUniqueId": student_id(student),
        }),
        FactKey::Attendance {
            school,
            student,
            date,
            category,
        } => json!({
            "attendanceEventCategoryDescriptor": category.edfi_descriptor(),
            "eventDate": date_str(date),
            "schoolId": school_id(school),
            "schoolYear": year,
            "sessionName": world.session_name(date),
            "studentUniqueId": student_id(student),
        }),
    }
}
