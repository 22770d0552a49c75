//! The payload shapes: Ed-Fi resource JSON (and Ed-Fi delete / key-change items) and the
//! flat JSON of the file connector. Parsed into borrowed structs (fast); on a type error
//! the payload is parsed again with path tracking, so the rejection names the field.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer};

use crate::reject::{RejectKind, Rejection};

/// Larger than any real attendance, enrollment or calendar record; the same number as
/// `rollcall_kafka::limits::MAX_RAW_PAYLOAD_BYTES` (both are this model constant).
pub const MAX_PAYLOAD_BYTES: usize = rollcall_model::MAX_RAW_PAYLOAD_BYTES;

type Str<'a> = Option<Cow<'a, str>>;

/// An identifier given as a JSON string or integer (Ed-Fi `schoolId` is an integer).
#[derive(Debug, Clone, PartialEq)]
pub struct IdValue<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for IdValue<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IdValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an identifier (string or integer)")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(IdValue(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(IdValue(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(IdValue(Cow::Owned(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(IdValue(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(IdValue(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

/// A school year given as a JSON integer or a string of digits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YearValue(pub i64);

impl<'de> Deserialize<'de> for YearValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = YearValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a school year (integer)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<YearValue, E> {
                i64::try_from(v)
                    .map(YearValue)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<YearValue, E> {
                Ok(YearValue(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<YearValue, E> {
                crate::fields::parse_school_year(v)
                    .map(YearValue)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchoolRef<'a> {
    #[serde(borrow)]
    pub school_id: Option<IdValue<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRef<'a> {
    #[serde(borrow)]
    pub school_id: Option<IdValue<'a>>,
    pub school_year: Option<YearValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StudentRef<'a> {
    #[serde(borrow)]
    pub student_unique_id: Option<IdValue<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CalendarRef<'a> {
    #[serde(borrow)]
    pub calendar_code: Option<IdValue<'a>>,
    #[serde(borrow)]
    pub school_id: Option<IdValue<'a>>,
    pub school_year: Option<YearValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchoolYearRef {
    pub school_year: Option<YearValue>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CalendarEvent<'a> {
    #[serde(borrow)]
    pub calendar_event_descriptor: Str<'a>,
}

/// Every Ed-Fi field rollcall reads, from studentSchoolAttendanceEvents,
/// studentSchoolAssociations, calendarDates and sessions, in their resource shape (references)
/// and their `keyValues` shape (flat key names, as in `/deletes` and `/keyChanges`).
/// Other fields are skipped.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdfiDoc<'a> {
    // Resource shape: references.
    #[serde(borrow)]
    pub school_reference: Option<SchoolRef<'a>>,
    #[serde(borrow)]
    pub session_reference: Option<SessionRef<'a>>,
    #[serde(borrow)]
    pub student_reference: Option<StudentRef<'a>>,
    #[serde(borrow)]
    pub calendar_reference: Option<CalendarRef<'a>>,
    pub school_year_type_reference: Option<SchoolYearRef>,
    /// Present on section attendance, which rollcall does not normalize.
    pub section_reference: Option<IgnoredAny>,
    // Attendance.
    #[serde(borrow)]
    pub attendance_event_category_descriptor: Str<'a>,
    #[serde(borrow)]
    pub event_date: Str<'a>,
    #[serde(borrow)]
    pub attendance_event_reason: Str<'a>,
    pub event_duration: Option<f64>,
    pub school_attendance_duration: Option<f64>,
    // Enrollment.
    #[serde(borrow)]
    pub entry_date: Str<'a>,
    #[serde(borrow)]
    pub exit_withdraw_date: Str<'a>,
    #[serde(borrow)]
    pub entry_grade_level_descriptor: Str<'a>,
    #[serde(borrow)]
    pub exit_withdraw_type_descriptor: Str<'a>,
    // Calendar.
    #[serde(borrow)]
    pub date: Str<'a>,
    #[serde(borrow)]
    pub calendar_events: Option<Vec<CalendarEvent<'a>>>,
    // Session (sessions resource): used only by a derived calendar.
    #[serde(borrow)]
    pub session_name: Str<'a>,
    #[serde(borrow)]
    pub begin_date: Str<'a>,
    #[serde(borrow)]
    pub end_date: Str<'a>,
    // keyValues shape: flat key names.
    #[serde(borrow)]
    pub school_id: Option<IdValue<'a>>,
    #[serde(borrow)]
    pub student_unique_id: Option<IdValue<'a>>,
    #[serde(borrow)]
    pub calendar_code: Option<IdValue<'a>>,
    pub school_year: Option<YearValue>,
    // Wrappers of the delete and key-change items.
    #[serde(borrow)]
    pub key_values: Option<Box<EdfiDoc<'a>>>,
    #[serde(borrow)]
    pub old_key_values: Option<Box<EdfiDoc<'a>>>,
    #[serde(borrow)]
    pub new_key_values: Option<Box<EdfiDoc<'a>>>,
}

/// The file connector's flat JSON: every value a string (or null = absent).
#[derive(Debug, Default, Deserialize)]
pub struct FlatDoc<'a> {
    #[serde(borrow)]
    pub district_id: Str<'a>,
    #[serde(borrow)]
    pub school_id: Str<'a>,
    #[serde(borrow)]
    pub student_id: Str<'a>,
    #[serde(borrow)]
    pub date: Str<'a>,
    #[serde(borrow)]
    pub code: Str<'a>,
    #[serde(borrow)]
    pub secondary_code: Str<'a>,
    #[serde(borrow)]
    pub duration_days: Str<'a>,
    #[serde(borrow)]
    pub minutes_absent: Str<'a>,
    #[serde(borrow)]
    pub school_day_minutes: Str<'a>,
    #[serde(borrow)]
    pub reason: Str<'a>,
    #[serde(borrow)]
    pub school_year: Str<'a>,
    #[serde(borrow)]
    pub entry_date: Str<'a>,
    #[serde(borrow)]
    pub exit_date: Str<'a>,
    #[serde(borrow)]
    pub grade_level: Str<'a>,
    #[serde(borrow)]
    pub exit_withdraw_type: Str<'a>,
    #[serde(borrow)]
    pub subgroups: Str<'a>,
    #[serde(borrow)]
    pub state_student_id: Str<'a>,
    #[serde(borrow)]
    pub calendar_code: Str<'a>,
    #[serde(borrow)]
    pub events: Str<'a>,
    #[serde(borrow)]
    pub is_instructional: Str<'a>,
}

/// Parses a payload as `T`, classifying every failure as a rejection kind.
pub fn parse<'a, T: Deserialize<'a>>(payload: &'a [u8], format: &str) -> Result<T, Rejection> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Rejection::new(
            RejectKind::PayloadTooLarge,
            format!(
                "payload is {} bytes; one record is at most {MAX_PAYLOAD_BYTES}. Send one record per message",
                payload.len()
            ),
        ));
    }
    let text = std::str::from_utf8(payload).map_err(|e| {
        Rejection::new(
            RejectKind::PayloadNotUtf8,
            format!(
                "{format} payload is not UTF-8 (invalid byte at offset {}); the connector must send the record's bytes as UTF-8 JSON",
                e.valid_up_to()
            ),
        )
    })?;
    // A derived struct would also accept a JSON array (positionally): insist on an object.
    if !text.trim_start().starts_with('{') {
        return Err(not_an_object(text, format));
    }
    match serde_json::from_str::<T>(text) {
        Ok(v) => Ok(v),
        Err(e) if e.is_data() => Err(data_error::<T>(text, format, e)),
        Err(e) => Err(Rejection::new(
            RejectKind::MalformedJson,
            format!("{format} payload is not valid JSON: {e}"),
        )),
    }
}

fn not_an_object(text: &str, format: &str) -> Rejection {
    match serde_json::from_str::<IgnoredAny>(text) {
        Ok(_) => Rejection::new(
            RejectKind::PayloadNotObject,
            format!(
                "{format} payload is valid JSON but not an object; send one JSON object per record"
            ),
        ),
        Err(e) => Rejection::new(
            RejectKind::MalformedJson,
            format!("{format} payload is not valid JSON: {e}"),
        ),
    }
}

/// A type or shape error: parse again tracking the path, to name the field.
fn data_error<'a, T: Deserialize<'a>>(
    text: &'a str,
    format: &str,
    first: serde_json::Error,
) -> Rejection {
    let mut de = serde_json::Deserializer::from_str(text);
    let (path, message) = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(e) => (e.path().to_string(), e.into_inner().to_string()),
        Ok(_) => (".".to_string(), first.to_string()),
    };
    if message.starts_with("duplicate field") {
        return Rejection::new(
            RejectKind::MalformedJson,
            format!("{format} payload has a field twice at {path}: {message}"),
        );
    }
    Rejection::new(
        RejectKind::WrongType,
        format!("{format} field {path} has the wrong type: {message}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed_fi_attendance_event_parses_borrowed() {
        let json = br#"{"schoolReference":{"schoolId":255901107},
           "sessionReference":{"schoolId":255901107,"schoolYear":2011,"sessionName":"2010-2011 Fall Semester"},
           "studentReference":{"studentUniqueId":"604877","link":{"rel":"Student","href":"/x"}},
           "attendanceEventCategoryDescriptor":"uri://ed-fi.org/AttendanceEventCategoryDescriptor#Unexcused Absence",
           "eventDate":"2010-08-25","attendanceEventReason":"Absent unexcused","eventDuration":1,
           "_etag":"5250168731208835353","id":"abc"}"#;
        let d: EdfiDoc = parse(json, "edfi_json").unwrap();
        assert_eq!(
            d.school_reference.unwrap().school_id.unwrap().0,
            "255901107"
        );
        let s = d.session_reference.unwrap();
        assert_eq!(s.school_year, Some(YearValue(2011)));
        let sid = d.student_reference.unwrap().student_unique_id.unwrap().0;
        assert!(matches!(sid, Cow::Borrowed("604877")));
        assert_eq!(d.event_duration, Some(1.0));
    }

    #[test]
    fn type_errors_name_the_field_path() {
        let r = parse::<EdfiDoc>(
            br#"{"studentReference":{"studentUniqueId":true}}"#,
            "edfi_json",
        )
        .unwrap_err();
        assert_eq!(r.kind, RejectKind::WrongType);
        assert!(
            r.reason.contains("studentReference.studentUniqueId"),
            "{}",
            r.reason
        );
        let r = parse::<FlatDoc>(br#"{"date":20210825}"#, "flat_json").unwrap_err();
        assert_eq!(r.kind, RejectKind::WrongType);
        assert!(r.reason.contains("field date"), "{}", r.reason);
        let r = parse::<EdfiDoc>(br#"{"eventDuration":"half"}"#, "edfi_json").unwrap_err();
        assert!(r.reason.contains("eventDuration"), "{}", r.reason);
    }

    #[test]
    fn non_objects_bad_json_and_bad_bytes_are_classified() {
        for (payload, kind) in [
            (&b"[1,2]"[..], RejectKind::PayloadNotObject),
            (b"  \"x\"", RejectKind::PayloadNotObject),
            (b"null", RejectKind::PayloadNotObject),
            (b"{\"date\":", RejectKind::MalformedJson),
            (b"{} trailing", RejectKind::MalformedJson),
            (b"[1,", RejectKind::MalformedJson),
            (b"", RejectKind::MalformedJson),
            (
                b"{\"date\":\"a\",\"date\":\"b\"}",
                RejectKind::MalformedJson,
            ),
            (b"{\"date\":\"\xff\"}", RejectKind::PayloadNotUtf8),
        ] {
            let r = parse::<FlatDoc>(payload, "flat_json").unwrap_err();
            assert_eq!(
                r.kind,
                kind,
                "{:?}: {}",
                String::from_utf8_lossy(payload),
                r.reason
            );
        }
        let big = format!("{{\"reason\":\"{}\"}}", "x".repeat(MAX_PAYLOAD_BYTES));
        assert_eq!(
            parse::<FlatDoc>(big.as_bytes(), "flat_json")
                .unwrap_err()
                .kind,
            RejectKind::PayloadTooLarge
        );
    }

    #[test]
    fn ids_and_years_accept_strings_and_integers_but_not_floats() {
        let d: EdfiDoc = parse(
            br#"{"schoolId":"255901107","schoolYear":"2022"}"#,
            "edfi_json",
        )
        .unwrap();
        assert_eq!(d.school_id.unwrap().0, "255901107");
        assert_eq!(d.school_year, Some(YearValue(2022)));
        let d: EdfiDoc = parse(br#"{"schoolYear":"2021-2022"}"#, "edfi_json").unwrap();
        assert_eq!(d.school_year, Some(YearValue(2022)), "span = its end year");
        let r = parse::<EdfiDoc>(br#"{"schoolId":1.5}"#, "edfi_json").unwrap_err();
        assert_eq!(r.kind, RejectKind::WrongType);
        let r = parse::<EdfiDoc>(br#"{"schoolYear":"20x2"}"#, "edfi_json").unwrap_err();
        assert!(r.reason.contains("schoolYear"), "{}", r.reason);
    }
}
