//! The Grand Bend ISD sample attendance (Ed-Fi, 2021-22) as raw envelopes, in the Ed-Fi
//! resource shape and as flat rows, for the sample-data test and the benchmark.

use rollcall_avro::encode_raw;
use rollcall_model::{Entity, PayloadFormat, RawEnvelope, RawOperation};
use serde_json::json;

/// 1,917 events: schoolId, sessionName, studentUniqueId, eventDate, category, reason, duration.
pub const TSV: &str = include_str!("../data/grand-bend-attendance.tsv");
pub const DISTRICT: &str = "255901";

pub struct Row<'a> {
    pub school_id: &'a str,
    pub session: &'a str,
    pub student_id: &'a str,
    pub date: &'a str,
    pub category: &'a str,
    pub reason: &'a str,
    pub duration: &'a str,
}

pub fn rows() -> Vec<Row<'static>> {
    TSV.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Row {
                school_id: f[0],
                session: f[1],
                student_id: f[2],
                date: f[3],
                category: f[4],
                reason: f[5],
                duration: f[6],
            }
        })
        .collect()
}

fn envelope(row: &Row, source: &str, format: PayloadFormat, payload: Vec<u8>) -> RawEnvelope {
    RawEnvelope {
        source_system: source.into(),
        source_instance: "grand-bend".into(),
        district_id: DISTRICT.into(),
        entity: Entity::Attendance,
        operation: RawOperation::Upsert,
        natural_key: format!(
            "{}|{}|{}|{}",
            row.school_id, row.student_id, row.date, row.category
        ),
        old_natural_key: None,
        source_version: 1,
        observed_at_ms: 1_650_000_000_000,
        payload_format: format,
        payload,
    }
}

/// The row as the Ed-Fi ODS/API returns a studentSchoolAttendanceEvent.
pub fn edfi(row: &Row) -> RawEnvelope {
    let school: i64 = row.school_id.parse().expect("numeric schoolId");
    let mut p = json!({
        "id": format!("{:032x}", school ^ row.student_id.len() as i64),
        "schoolReference": {"schoolId": school, "link": {"rel": "School", "href": format!("/ed-fi/schools/{school}")}},
        "sessionReference": {"schoolId": school, "schoolYear": 2022, "sessionName": row.session,
                             "link": {"rel": "Session", "href": "/ed-fi/sessions/x"}},
        "studentReference": {"studentUniqueId": row.student_id, "link": {"rel": "Student", "href": "/ed-fi/students/x"}},
        "attendanceEventCategoryDescriptor": format!("uri://ed-fi.org/AttendanceEventCategoryDescriptor#{}", row.category),
        "eventDate": row.date,
        "attendanceEventReason": row.reason,
        "_etag": "5250168731208835353",
        "_lastModifiedDate": "2022-06-01T12:00:00.000Z"
    });
    if !row.duration.is_empty() {
        p["eventDuration"] = json!(row.duration.parse::<f64>().expect("numeric duration"));
    }
    envelope(
        row,
        "edfi",
        PayloadFormat::EdfiJson,
        serde_json::to_vec(&p).unwrap(),
    )
}

/// The same event as a PowerSchool-style flat row from the file connector.
pub fn flat(row: &Row) -> RawEnvelope {
    let (code, presence) = match row.category {
        "Excused Absence" => ("E", "Absent"),
        "Unexcused Absence" => ("A", "Absent"),
        "Tardy" => ("T", "Present"),
        _ => ("HE", "Absent"),
    };
    let p = json!({
        "school_id": row.school_id, "student_id": row.student_id, "date": row.date,
        "code": code, "secondary_code": presence, "reason": row.reason,
        "duration_days": row.duration, "school_year": "2022"
    });
    envelope(
        row,
        "powerschool",
        PayloadFormat::FlatJson,
        serde_json::to_vec(&p).unwrap(),
    )
}

/// Encoded raw values: every sample event in both shapes, interleaved.
#[allow(dead_code)] // used by the benchmark
pub fn mixed_raw_values() -> Vec<Vec<u8>> {
    rows()
        .iter()
        .flat_map(|r| [encode_raw(&edfi(r)), encode_raw(&flat(r))])
        .collect()
}
