//! The fast page writer gives byte for byte what serializing `resource_json` gives, for
//! every upsert of generated worlds that hold every shape a resource can take.

use std::collections::BTreeSet;

use rollcall_sis_simulator::edfi::json::{resource_json, write_resource_json};
use rollcall_sis_simulator::*;
use serde_json::Value;

/// Checks every upsert of `world`; returns the shapes seen (kind + optional keys, and
/// which malformations), so the caller can check nothing was left untested.
fn check_world(world: &World) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut checked = 0usize;
    for idx in 0..world.log.len() {
        let Some(fact) = world.fact_at(idx) else {
            continue;
        };
        let expected_value = resource_json(world, idx);
        let expected = serde_json::to_vec(&expected_value).unwrap();
        // Appends: earlier bytes in the buffer are left alone.
        out.clear();
        out.extend_from_slice(b"prefix");
        write_resource_json(world, idx, &mut out);
        assert_eq!(&out[..6], b"prefix");
        let got = &out[6..];
        assert!(
            got == expected.as_slice(),
            "log index {idx}:\n got      {}\n expected {}",
            String::from_utf8_lossy(got),
            String::from_utf8_lossy(&expected),
        );
        checked += 1;

        let kind = match fact {
            Fact::CalendarDate(_) => "calendarDate".to_string(),
            Fact::Enrollment(_) => "enrollment".to_string(),
            Fact::Attendance(a) => format!("attendance:{:?}", a.category),
        };
        let Value::Object(obj) = &expected_value else {
            panic!("not an object")
        };
        for key in obj.keys() {
            seen.insert(format!("{kind}.{key}"));
        }
        if let Some(m) = world.records[world.log[idx].record as usize].malformed {
            seen.insert(format!("malformed:{m:?}"));
        }
        if let Some(s) = obj
            .get("sessionReference")
            .and_then(|r| r["sessionName"].as_str())
        {
            seen.insert(format!("session:{}", s.split(' ').nth(1).unwrap()));
        }
        if let Some(d) = obj.get("eventDuration").and_then(Value::as_f64) {
            seen.insert(format!(
                "eventDuration:{}",
                if d < 1.0 { "partial" } else { "full" }
            ));
        }
    }
    assert!(checked > 1000, "only {checked} upserts checked");
    seen
}

#[test]
fn writer_bytes_equal_serialized_resource_json_for_every_upsert() {
    let small = generate(&SimConfig::small(11)).unwrap();
    let mut seen = check_world(&small);
    // `small` has no positive-attendance district, so no "In Attendance" events: add
    // one with every kind of district feature turned on.
    let mut config = SimConfig::small(12);
    config.districts[0].positive_attendance = true;
    config.districts[0].corrections = CorrectionStyle::DeleteCreate;
    config.malformed_rate = 0.02;
    seen.extend(check_world(&generate(&config).unwrap()));

    let mut wanted: Vec<String> = vec![
        "malformed:BadDate".into(),
        "malformed:UnknownCode".into(),
        "malformed:MissingStudent".into(),
        "session:Fall".into(),
        "session:Spring".into(),
        "eventDuration:partial".into(),
        "eventDuration:full".into(),
    ];
    for key in [
        "_etag",
        "_lastModifiedDate",
        "calendarEvents",
        "calendarReference",
        "date",
        "id",
    ] {
        wanted.push(format!("calendarDate.{key}"));
    }
    for key in [
        "_etag",
        "calendarReference",
        "entryDate",
        "entryGradeLevelDescriptor",
        "entryTypeDescriptor",
        "exitWithdrawDate",
        "exitWithdrawTypeDescriptor",
        "id",
        "primarySchool",
        "schoolReference",
        "schoolYearTypeReference",
        "studentReference",
    ] {
        wanted.push(format!("enrollment.{key}"));
    }
    let always = [
        "_etag",
        "_lastModifiedDate",
        "attendanceEventCategoryDescriptor",
        "eventDate",
        "id",
        "schoolReference",
        "sessionReference",
        "studentReference",
    ];
    for (category, extra) in [
        ("Present", &[][..]),
        ("Tardy", &["arrivalTime", "schoolAttendanceDuration"][..]),
        (
            "EarlyDeparture",
            &["departureTime", "schoolAttendanceDuration"][..],
        ),
        (
            "ExcusedAbsence",
            &[
                "eventDuration",
                "schoolAttendanceDuration",
                "attendanceEventReason",
            ][..],
        ),
        (
            "UnexcusedAbsence",
            &["eventDuration", "attendanceEventReason"][..],
        ),
        ("OutOfSchoolSuspension", &["eventDuration"][..]),
        ("InSchoolSuspension", &["eventDuration"][..]),
    ] {
        for key in always.iter().chain(extra) {
            wanted.push(format!("attendance:{category}.{key}"));
        }
    }
    let missing: Vec<&String> = wanted.iter().filter(|w| !seen.contains(*w)).collect();
    assert!(
        missing.is_empty(),
        "the worlds lack {missing:?}; seen {seen:?}"
    );
    // Unused malformation variants would make the list above silently incomplete.
    let _exhaustive = |m: Malformation| match m {
        Malformation::BadDate | Malformation::UnknownCode | Malformation::MissingStudent => {}
    };
}
