//! Ed-Fi Data Standard 5 JSON shapes of the simulator's records, and their key values
//! as the `deletes` and `keyChanges` endpoints show them.

use std::fmt;

use chrono::{Datelike, Duration, NaiveDate, NaiveTime};
use serde::{Serialize, Serializer};
use serde_json::{json, Map, Value};

use crate::model::{
    AttendanceFact, CalendarDateFact, Category, Change, EdfiId, EnrollmentFact, Fact, FactKey,
    Malformation, SessionName, World,
};

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

// ---------------------------------------------------------------------------------------
// The fast writer: the same bytes as `serde_json::to_vec(&resource_json(..))`, without
// building a `Value` (no maps, no per-field strings, no strftime).

/// Appends to `out` exactly the bytes `serde_json::to_vec(&resource_json(world, idx))`
/// gives: the same keys in the same (alphabetical) order at every level, the same
/// numbers and the same string escaping, malformed records broken the same way.
pub fn write_resource_json(world: &World, idx: usize, out: &mut Vec<u8>) {
    let c = &world.log[idx];
    let fact = world.fact_at(idx).expect("an upsert");
    let common = Common {
        etag: Text(5_250_000_000_000_000_000u64 + c.cv),
        last_modified: Text(LastModified(c)),
        id: Text(world.edfi_id_display(c.record)),
    };
    let written = match *fact {
        Fact::CalendarDate(cd) => {
            serde_json::to_writer(&mut *out, &calendar_date_out(world, common, cd))
        }
        Fact::Enrollment(e) => serde_json::to_writer(&mut *out, &enrollment_out(world, common, e)),
        Fact::Attendance(a) => {
            serde_json::to_writer(&mut *out, &attendance_out(world, idx, common, a))
        }
    };
    written.expect("writing JSON to a Vec cannot fail");
}

/// Serializes a `Display` value as a JSON string, escaped by serde_json, with no
/// heap allocation: formatted into a stack buffer first (one escape pass over the
/// whole text), or streamed through serde_json when it does not fit.
struct Text<T>(T);

impl<T: fmt::Display> Serialize for Text<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = StackStr::<128>::new();
        if fmt::write(&mut buf, format_args!("{}", self.0)).is_ok() {
            s.serialize_str(buf.as_str())
        } else {
            s.collect_str(&self.0)
        }
    }
}

/// Text of at most `N` bytes on the stack; writing more fails.
struct StackStr<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackStr<N> {
    fn new() -> Self {
        StackStr {
            buf: [0; N],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so this cannot fail.
        std::str::from_utf8(&self.buf[..self.len]).expect("whole UTF-8 strings")
    }
}

impl<const N: usize> fmt::Write for StackStr<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > N {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The last two decimal digits of `v`.
fn two_digits(v: u32) -> [u8; 2] {
    [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8]
}

/// `%Y-%m-%d` as chrono writes it (chrono's own formatting outside years 0–9999).
struct Ymd(NaiveDate);

impl fmt::Display for Ymd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let Ok(y) = u32::try_from(d.year()) else {
            return write!(f, "{}", d.format("%Y-%m-%d"));
        };
        if y > 9999 {
            return write!(f, "{}", d.format("%Y-%m-%d"));
        }
        let [y1, y2] = two_digits(y / 100);
        let [y3, y4] = two_digits(y);
        let [m1, m2] = two_digits(d.month());
        let [d1, d2] = two_digits(d.day());
        let text = [y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2];
        f.write_str(std::str::from_utf8(&text).expect("ASCII digits"))
    }
}

/// `%H:%M:%S` of a time of day given in seconds after midnight (0..86400).
struct Hms(u32);

impl Hms {
    /// `base` plus `delta_secs`, wrapping around midnight as `NaiveTime + Duration` does.
    fn wrapping(base_secs: i64, delta_secs: i64) -> Hms {
        Hms((base_secs + delta_secs).rem_euclid(86_400) as u32)
    }
}

impl fmt::Display for Hms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let [h1, h2] = two_digits(s / 3600);
        let [m1, m2] = two_digits(s / 60 % 60);
        let [s1, s2] = two_digits(s % 60);
        let text = [h1, h2, b':', m1, m2, b':', s1, s2];
        f.write_str(std::str::from_utf8(&text).expect("ASCII digits"))
    }
}

/// [`last_modified`] as a `Display`.
struct LastModified<'a>(&'a Change);

impl fmt::Display for LastModified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        let t = Hms::wrapping(6 * 3600, (c.cv % 43_200) as i64);
        write!(f, "{}T{}Z", Ymd(c.visible_on), t)
    }
}

/// [`descriptor`] as a `Display`.
struct Descriptor(&'static str, &'static str);

impl fmt::Display for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("uri://ed-fi.org/")?;
        f.write_str(self.0)?;
        f.write_str("#")?;
        f.write_str(self.1)
    }
}

/// An attendance `eventDate`: the real date, or the malformed 30th of February.
enum EventDate {
    Real(NaiveDate),
    February30(i32),
}

impl fmt::Display for EventDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EventDate::Real(d) => Ymd(d).fmt(f),
            EventDate::February30(year) => write!(f, "{year}-02-30"),
        }
    }
}

/// The fields every resource has.
struct Common<'a> {
    etag: Text<u64>,
    last_modified: Text<LastModified<'a>>,
    id: Text<EdfiId>,
}

// Field order below is the JSON names' byte order (`_` sorts before lowercase letters),
// which is the order `serde_json::Map` (a BTreeMap) writes them in.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CalendarReference {
    calendar_code: &'static str,
    school_id: u64,
    school_year: i32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SchoolReference {
    school_id: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SchoolYearTypeReference {
    school_year: i32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionReference {
    school_id: u64,
    school_year: i32,
    session_name: Text<SessionName>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StudentReference<'a> {
    student_unique_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CalendarEventOut {
    calendar_event_descriptor: Text<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CalendarDateOut<'a> {
    #[serde(rename = "_etag")]
    etag: Text<u64>,
    #[serde(rename = "_lastModifiedDate")]
    last_modified: Text<LastModified<'a>>,
    calendar_events: [CalendarEventOut; 1],
    calendar_reference: CalendarReference,
    date: Text<Ymd>,
    id: Text<EdfiId>,
}

fn calendar_date_out<'a>(
    world: &World,
    common: Common<'a>,
    cd: CalendarDateFact,
) -> CalendarDateOut<'a> {
    CalendarDateOut {
        etag: common.etag,
        last_modified: common.last_modified,
        calendar_events: [CalendarEventOut {
            calendar_event_descriptor: Text(Descriptor(
                "CalendarEventDescriptor",
                cd.event.edfi_name(),
            )),
        }],
        calendar_reference: CalendarReference {
            calendar_code: CALENDAR_CODE,
            school_id: world.schools[cd.school as usize].school_id,
            school_year: world.config.school_year,
        },
        date: Text(Ymd(cd.date)),
        id: common.id,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnrollmentOut<'a> {
    #[serde(rename = "_etag")]
    etag: Text<u64>,
    #[serde(rename = "_lastModifiedDate")]
    last_modified: Text<LastModified<'a>>,
    calendar_reference: CalendarReference,
    entry_date: Text<Ymd>,
    entry_grade_level_descriptor: Text<Descriptor>,
    entry_type_descriptor: Text<Descriptor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_withdraw_date: Option<Text<Ymd>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_withdraw_type_descriptor: Option<Text<Descriptor>>,
    id: Text<EdfiId>,
    primary_school: bool,
    school_reference: SchoolReference,
    school_year_type_reference: SchoolYearTypeReference,
    student_reference: StudentReference<'a>,
}

fn enrollment_out<'a>(
    world: &'a World,
    common: Common<'a>,
    e: EnrollmentFact,
) -> EnrollmentOut<'a> {
    let school_id = world.schools[e.school as usize].school_id;
    let year = world.config.school_year;
    EnrollmentOut {
        etag: common.etag,
        last_modified: common.last_modified,
        calendar_reference: CalendarReference {
            calendar_code: CALENDAR_CODE,
            school_id,
            school_year: year,
        },
        entry_date: Text(Ymd(e.entry_date)),
        entry_grade_level_descriptor: Text(Descriptor("GradeLevelDescriptor", e.grade.edfi_name())),
        entry_type_descriptor: Text(Descriptor("EntryTypeDescriptor", e.entry_type.edfi_name())),
        exit_withdraw_date: e.exit_date.map(|x| Text(Ymd(x))),
        exit_withdraw_type_descriptor: e
            .exit_type
            .map(|t| Text(Descriptor("ExitWithdrawTypeDescriptor", t.edfi_name()))),
        id: common.id,
        primary_school: true,
        school_reference: SchoolReference { school_id },
        school_year_type_reference: SchoolYearTypeReference { school_year: year },
        student_reference: StudentReference {
            student_unique_id: &world.students[e.student as usize].unique_id,
        },
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AttendanceOut<'a> {
    #[serde(rename = "_etag")]
    etag: Text<u64>,
    #[serde(rename = "_lastModifiedDate")]
    last_modified: Text<LastModified<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arrival_time: Option<Text<Hms>>,
    attendance_event_category_descriptor: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    attendance_event_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    departure_time: Option<Text<Hms>>,
    event_date: Text<EventDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_duration: Option<f64>,
    id: Text<EdfiId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    school_attendance_duration: Option<u16>,
    school_reference: SchoolReference,
    session_reference: SessionReference,
    #[serde(skip_serializing_if = "Option::is_none")]
    student_reference: Option<StudentReference<'a>>,
}

fn attendance_out<'a>(
    world: &'a World,
    idx: usize,
    common: Common<'a>,
    a: AttendanceFact,
) -> AttendanceOut<'a> {
    let record = &world.records[world.log[idx].record as usize];
    let school_id = world.schools[a.school as usize].school_id;
    let year = world.config.school_year;
    let mut out = AttendanceOut {
        etag: common.etag,
        last_modified: common.last_modified,
        arrival_time: None,
        attendance_event_category_descriptor: if record.malformed == Some(Malformation::UnknownCode)
        {
            "uri://district.example.org/AttendanceEventCategoryDescriptor#ZZ"
        } else {
            a.category.edfi_descriptor()
        },
        attendance_event_reason: Some(a.reason.text()).filter(|t| !t.is_empty()),
        departure_time: None,
        event_date: Text(if record.malformed == Some(Malformation::BadDate) {
            EventDate::February30(a.date.year())
        } else {
            EventDate::Real(a.date)
        }),
        event_duration: None,
        id: common.id,
        school_attendance_duration: None,
        school_reference: SchoolReference { school_id },
        session_reference: SessionReference {
            school_id,
            school_year: year,
            session_name: Text(world.session_name_display(a.date)),
        },
        student_reference: (record.malformed != Some(Malformation::MissingStudent)).then(|| {
            StudentReference {
                student_unique_id: &world.students[a.student as usize].unique_id,
            }
        }),
    };
    let minutes = i64::from(a.minutes_missed);
    match a.category {
        Category::ExcusedAbsence | Category::UnexcusedAbsence | Category::OutOfSchoolSuspension => {
            out.event_duration = Some(f64::from(a.absent_milli) / 1000.0);
            if a.absent_milli < 1000 {
                out.school_attendance_duration = Some(DAY_MINUTES - a.minutes_missed);
            }
        }
        Category::InSchoolSuspension => out.event_duration = Some(1.0),
        Category::Tardy => {
            out.arrival_time = Some(Text(Hms::wrapping(8 * 3600, minutes * 60)));
            out.school_attendance_duration = Some(DAY_MINUTES - a.minutes_missed);
        }
        Category::EarlyDeparture => {
            out.departure_time = Some(Text(Hms::wrapping(14 * 3600, -minutes * 60)));
            out.school_attendance_duration = Some(DAY_MINUTES - a.minutes_missed);
        }
        Category::Present => {}
    }
    out
}
