//! The normalizer against the real Kafka: a mixed batch of valid records from several
//! districts and sources and 20 kinds of bad ones. Every valid record appears normalized
//! exactly once with the right category and fraction; every bad one is in the
//! dead-letter topic with the right kind; inputs = normalized inputs + dead letters.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rollcall_kafka::{read_topic_to_end, DeadLetterHeaders, OutRecord, Topics, TxnProducer};
use rollcall_model::{Category, Entity, Operation, PayloadFormat, RawEnvelope, RawOperation};
use rollcall_normalizer::{build_normalizer, Worker};
use rollcall_telemetry::Health;
use rollcall_testkit::{config_with_fresh_topics, secrets, unique};
use serde_json::json;
use tokio_util::sync::CancellationToken;

struct Case {
    envelope: Option<RawEnvelope>,
    /// Raw bytes instead of an encoded envelope.
    bytes: Option<Vec<u8>>,
    /// Valid: (category, fraction, operation) of each expected output, in order.
    expect: Result<Vec<(Category, f64, Operation)>, &'static str>,
}

fn env(
    district: &str,
    system: &str,
    entity: Entity,
    key: &str,
    format: PayloadFormat,
    payload: Vec<u8>,
) -> RawEnvelope {
    RawEnvelope {
        source_system: system.into(),
        source_instance: "test".into(),
        district_id: district.into(),
        entity,
        operation: RawOperation::Upsert,
        natural_key: key.into(),
        old_natural_key: None,
        source_version: 1,
        observed_at_ms: 1_760_000_000_000,
        payload_format: format,
        payload,
    }
}

fn edfi_event(student: &str, category: &str, date: &str, duration: serde_json::Value) -> Vec<u8> {
    json!({
        "schoolReference": {"schoolId": 255901107},
        "sessionReference": {"schoolId": 255901107, "schoolYear": 2026, "sessionName": "2025-2026 Fall Semester"},
        "studentReference": {"studentUniqueId": student},
        "attendanceEventCategoryDescriptor": format!("uri://ed-fi.org/AttendanceEventCategoryDescriptor#{category}"),
        "eventDate": date,
        "eventDuration": duration,
    })
    .to_string()
    .into_bytes()
}

fn flat(fields: serde_json::Value) -> Vec<u8> {
    fields.to_string().into_bytes()
}

fn ok(v: Vec<(Category, f64, Operation)>) -> Result<Vec<(Category, f64, Operation)>, &'static str> {
    Ok(v)
}

fn cases() -> Vec<(String, Case)> {
    use Category::*;
    use Entity::*;
    use PayloadFormat::*;
    let up = Operation::Upsert;
    let mut v: Vec<(String, Case)> = Vec::new();
    let mut add = |key: &str, envelope: Option<RawEnvelope>, bytes: Option<Vec<u8>>, expect| {
        v.push((
            key.to_string(),
            Case {
                envelope,
                bytes,
                expect,
            },
        ));
    };
    // ---- valid, several districts and sources
    add(
        "ok-edfi-unexcused",
        Some(env(
            "d1",
            "edfi",
            Attendance,
            "ok-edfi-unexcused",
            EdfiJson,
            edfi_event("s1", "Unexcused Absence", "2025-10-06", json!(1)),
        )),
        None,
        ok(vec![(UnexcusedAbsence, 1.0, up)]),
    );
    add(
        "ok-edfi-half-excused",
        Some(env(
            "d1",
            "edfi",
            Attendance,
            "ok-edfi-half-excused",
            EdfiJson,
            edfi_event("s2", "Excused Absence", "2025-10-07", json!(0.5)),
        )),
        None,
        ok(vec![(ExcusedAbsence, 0.5, up)]),
    );
    add(
        "ok-edfi-tardy",
        Some(env(
            "d1",
            "edfi",
            Attendance,
            "ok-edfi-tardy",
            EdfiJson,
            edfi_event("s3", "Tardy", "2025-10-07", json!(null)),
        )),
        None,
        ok(vec![(Tardy, 0.0, up)]),
    );
    add(
        "ok-ps-absent",
        Some(env(
            "d2",
            "powerschool",
            Attendance,
            "ok-ps-absent",
            FlatJson,
            flat(
                json!({"school_id": "101", "student_id": "p1", "date": "2025-10-08", "code": "A", "secondary_code": "Absent"}),
            ),
        )),
        None,
        ok(vec![(UnexcusedAbsence, 1.0, up)]),
    );
    add(
        "ok-ic-excused-minutes",
        Some(env(
            "d3",
            "infinite_campus",
            Attendance,
            "ok-ic-excused-minutes",
            FlatJson,
            flat(
                json!({"school_id": "7", "student_id": "i1", "date": "2025-10-08", "code": "Absent", "secondary_code": "Excused",
                    "minutes_absent": "180", "school_day_minutes": "360"}),
            ),
        )),
        None,
        ok(vec![(ExcusedAbsence, 0.5, up)]),
    );
    add(
        "ok-generic-oss",
        Some(env(
            "d3",
            "generic",
            Attendance,
            "ok-generic-oss",
            FlatJson,
            flat(
                json!({"school_id": "7", "student_id": "i2", "date": "2025-10-09", "code": "out_of_school_suspension"}),
            ),
        )),
        None,
        ok(vec![(OutOfSchoolSuspension, 1.0, up)]),
    );
    let mut del = env("d1", "edfi", Attendance, "ok-edfi-delete", EdfiJson, json!({"id": "x", "changeVersion": 9, "keyValues": {
        "attendanceEventCategoryDescriptor": "uri://ed-fi.org/AttendanceEventCategoryDescriptor#Unexcused Absence",
        "eventDate": "2025-10-06", "schoolId": 255901107, "schoolYear": 2026, "sessionName": "2025-2026 Fall Semester",
        "studentUniqueId": "s1"}}).to_string().into_bytes());
    del.operation = RawOperation::Delete;
    add(
        "ok-edfi-delete",
        Some(del),
        None,
        ok(vec![(UnexcusedAbsence, 0.0, Operation::Delete)]),
    );
    let mut kc = env("d1", "edfi", Attendance, "ok-edfi-keychange", EdfiJson, json!({"id": "y", "changeVersion": 10,
        "oldKeyValues": {"attendanceEventCategoryDescriptor": "Unexcused Absence", "eventDate": "2025-10-10", "schoolId": 255901107,
            "schoolYear": 2026, "sessionName": "2025-2026 Fall Semester", "studentUniqueId": "s4"},
        "newKeyValues": {"attendanceEventCategoryDescriptor": "Excused Absence", "eventDate": "2025-10-10", "schoolId": 255901107,
            "schoolYear": 2026, "sessionName": "2025-2026 Fall Semester", "studentUniqueId": "s4"}}).to_string().into_bytes());
    kc.operation = RawOperation::KeyChange;
    kc.old_natural_key = Some("ok-edfi-keychange-old".into());
    add(
        "ok-edfi-keychange",
        Some(kc),
        None,
        ok(vec![
            (UnexcusedAbsence, 0.0, Operation::Delete),
            (ExcusedAbsence, 1.0, up),
        ]),
    );
    add("ok-enrollment", Some(env("d1", "edfi", Enrollment, "ok-enrollment", EdfiJson, json!({
        "schoolReference": {"schoolId": 255901107}, "studentReference": {"studentUniqueId": "s1"},
        "entryDate": "2025-08-25", "entryGradeLevelDescriptor": "uri://ed-fi.org/GradeLevelDescriptor#Ninth grade"}).to_string().into_bytes())),
        None, ok(vec![]));
    add("ok-calendar", Some(env("d1", "edfi", Calendar, "ok-calendar", EdfiJson, json!({
        "calendarReference": {"calendarCode": "2026", "schoolId": 255901107, "schoolYear": 2026}, "date": "2025-10-06",
        "calendarEvents": [{"calendarEventDescriptor": "uri://ed-fi.org/CalendarEventDescriptor#Instructional day"}]}).to_string().into_bytes())),
        None, ok(vec![]));

    // ---- bad: one of each kind
    add(
        "bad-undecodable",
        None,
        Some(b"this is not avro".to_vec()),
        Err("envelope_undecodable"),
    );
    let mut unknown = vec![0xC3, 0x01];
    unknown.extend_from_slice(&0xdead_beef_u64.to_le_bytes());
    unknown.extend_from_slice(b"body");
    add(
        "bad-unknown-schema",
        None,
        Some(unknown),
        Err("unknown_schema"),
    );
    let mut section = serde_json::from_slice::<serde_json::Value>(&edfi_event(
        "s9",
        "Tardy",
        "2025-10-06",
        json!(null),
    ))
    .unwrap();
    section["sectionReference"] = json!({"sectionIdentifier": "x"});
    add(
        "bad-section",
        Some(env(
            "d1",
            "edfi",
            Attendance,
            "bad-section",
            EdfiJson,
            section.to_string().into_bytes(),
        )),
        None,
        Err("unsupported_entity_or_format"),
    );
    add(
        "bad-too-large",
        Some(env(
            "d1",
            "edfi",
            Attendance,
            "bad-too-large",
            EdfiJson,
            vec![b' '; 300 * 1024],
        )),
        None,
        Err("payload_too_large"),
    );
    add(
        "bad-not-utf8",
        Some(env(
            "d1",
            "edfi",
            Attendance,
            "bad-not-utf8",
            EdfiJson,
            vec![b'{', 0xff, 0xfe, b'}'],
        )),
        None,
        Err("payload_not_utf8"),
    );
    add(
        "bad-malformed-json",
        Some(env(
            "d1",
            "edfi",
            Attendance,
            "bad-malformed-json",
            EdfiJson,
            b"{\"eventDate\": ".to_vec(),
        )),
        None,
        Err("malformed_json"),
    );
    add(
        "bad-not-object",
        Some(env(
            "d1",
            "edfi",
            Attendance,
            "bad-not-object",
            EdfiJson,
            b"[1,2,3]".to_vec(),
        )),
        None,
        Err("payload_not_object"),
    );
    let mut missing = serde_json::from_slice::<serde_json::Value>(&edfi_event(
        "s9",
        "Tardy",
        "2025-10-06",
        json!(null),
    ))
    .unwrap();
    missing.as_object_mut().unwrap().remove("eventDate");
    add(
        "bad-missing-field",
        Some(env(
            "d1",
            "edfi",
            Attendance,
            "bad-missing-field",
            EdfiJson,
            missing.to_string().into_bytes(),
        )),
        None,
        Err("missing_field"),
    );
    add(
        "bad-wrong-type",
        Some(env(
            "d1",
            "edfi",
            Attendance,
            "bad-wrong-type",
            EdfiJson,
            edfi_event("s9", "Tardy", "2025-10-06", json!({"days": 1})),
        )),
        None,
        Err("wrong_type"),
    );
    add(
        "bad-field-too-large",
        Some(env(
            "d2",
            "powerschool",
            Attendance,
            "bad-field-too-large",
            FlatJson,
            flat(
                json!({"school_id": "101", "student_id": "p1", "date": "2025-10-08", "code": "A", "secondary_code": "Absent", "reason": "x".repeat(5000)}),
            ),
        )),
        None,
        Err("field_too_large"),
    );
    add(
        "bad-empty-id",
        Some(env(
            "d1",
            "edfi",
            Attendance,
            "bad-empty-id",
            EdfiJson,
            edfi_event("   ", "Tardy", "2025-10-06", json!(null)),
        )),
        None,
        Err("empty_identifier"),
    );
    add(
        "bad-long-id",
        Some(env(
            "d1",
            "edfi",
            Attendance,
            "bad-long-id",
            EdfiJson,
            edfi_event(&"9".repeat(70), "Tardy", "2025-10-06", json!(null)),
        )),
        None,
        Err("identifier_too_long"),
    );
    add(
        "bad-control-char",
        Some(env(
            "d1",
            "edfi",
            Attendance,
            "bad-control-char",
            EdfiJson,
            edfi_event("s\u{7}9", "Tardy", "2025-10-06", json!(null)),
        )),
        None,
        Err("invalid_identifier"),
    );
    add(
        "bad-impossible-date",
        Some(env(
            "d1",
            "edfi",
            Attendance,
            "bad-impossible-date",
            EdfiJson,
            edfi_event("s9", "Tardy", "2026-02-30", json!(null)),
        )),
        None,
        Err("invalid_date"),
    );
    add(
        "bad-future-date",
        Some(env(
            "d2",
            "powerschool",
            Attendance,
            "bad-future-date",
            FlatJson,
            flat(
                json!({"school_id": "101", "student_id": "p1", "date": "2099-01-05", "code": "A", "secondary_code": "Absent"}),
            ),
        )),
        None,
        Err("date_in_future"),
    );
    add(
        "bad-out-of-year",
        Some(env(
            "d1",
            "edfi",
            Attendance,
            "bad-out-of-year",
            EdfiJson,
            edfi_event("s9", "Tardy", "2024-10-07", json!(null)),
        )),
        None,
        Err("date_outside_school_year"),
    );
    add(
        "bad-unknown-code",
        Some(env(
            "d2",
            "powerschool",
            Attendance,
            "bad-unknown-code",
            FlatJson,
            flat(
                json!({"school_id": "101", "student_id": "p1", "date": "2025-10-08", "code": "ZZQ"}),
            ),
        )),
        None,
        Err("unknown_code"),
    );
    add(
        "bad-no-code-map",
        Some(env(
            "d4",
            "aeries",
            Attendance,
            "bad-no-code-map",
            FlatJson,
            flat(json!({"school_id": "3", "student_id": "a1", "date": "2025-10-08", "code": "U"})),
        )),
        None,
        Err("no_code_map"),
    );
    add(
        "bad-duration",
        Some(env(
            "d1",
            "edfi",
            Attendance,
            "bad-duration",
            EdfiJson,
            edfi_event("s9", "Excused Absence", "2025-10-06", json!(-0.5)),
        )),
        None,
        Err("fraction_out_of_range"),
    );
    add(
        "bad-minutes",
        Some(env(
            "d2",
            "powerschool",
            Attendance,
            "bad-minutes",
            FlatJson,
            flat(
                json!({"school_id": "101", "student_id": "p1", "date": "2025-10-08", "code": "A", "secondary_code": "Absent",
                    "minutes_absent": "ninety"}),
            ),
        )),
        None,
        Err("invalid_duration"),
    );
    add(
        "bad-exit-before-entry",
        Some(env(
            "d2",
            "powerschool",
            Enrollment,
            "bad-exit-before-entry",
            FlatJson,
            flat(
                json!({"school_id": "101", "student_id": "p1", "entry_date": "2025-09-01", "exit_date": "2025-08-01"}),
            ),
        )),
        None,
        Err("exit_before_entry"),
    );
    add(
        "bad-district-mismatch",
        Some(env(
            "d2",
            "powerschool",
            Attendance,
            "bad-district-mismatch",
            FlatJson,
            flat(
                json!({"district_id": "d9", "school_id": "101", "student_id": "p1", "date": "2025-10-08", "code": "A", "secondary_code": "Absent"}),
            ),
        )),
        None,
        Err("district_mismatch"),
    );
    let mut conflict = serde_json::from_slice::<serde_json::Value>(&edfi_event(
        "s9",
        "Tardy",
        "2025-10-06",
        json!(null),
    ))
    .unwrap();
    conflict["sessionReference"]["schoolId"] = json!(1);
    add(
        "bad-conflicting",
        Some(env(
            "d1",
            "edfi",
            Attendance,
            "bad-conflicting",
            EdfiJson,
            conflict.to_string().into_bytes(),
        )),
        None,
        Err("conflicting_fields"),
    );
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_ends_normalized_once_or_dead_lettered_with_its_reason() {
    let cfg = config_with_fresh_topics("norm").await;
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let cases = cases();
    let bad_kinds: std::collections::BTreeSet<&str> = cases
        .iter()
        .filter_map(|(_, c)| c.expect.as_ref().err().copied())
        .collect();
    assert!(
        bad_kinds.len() >= 15,
        "at least 15 kinds of bad records, have {}",
        bad_kinds.len()
    );

    let outs: Vec<OutRecord> = cases
        .iter()
        .map(|(key, c)| {
            let (entity, payload) = match (&c.envelope, &c.bytes) {
                (Some(e), _) => (e.entity.as_str(), rollcall_avro::encode_raw(e)),
                (None, Some(b)) => ("attendance", b.clone()),
                _ => unreachable!(),
            };
            OutRecord {
                topic: topics.raw(entity),
                key: key.clone().into_bytes(),
                payload,
                headers: vec![],
            }
        })
        .collect();
    let producer = TxnProducer::new(&client, &unique("norm-test-producer")).unwrap();
    producer.send_all(&outs).unwrap();

    // Run the normalizer in-process until it has caught up.
    let normalizer = build_normalizer(&cfg).unwrap();
    let stop = CancellationToken::new();
    let (c2, s2, stop2) = (cfg.clone(), secrets(), stop.clone());
    let worker = std::thread::spawn(move || {
        let mut w = Worker::connect(&c2, &s2, normalizer).unwrap();
        w.run(&Health::new(), &stop2).unwrap();
    });
    let expected_out: usize = cases
        .iter()
        .map(|(_, c)| c.expect.as_ref().map(|v| v.len().max(1)).unwrap_or(0))
        .sum();
    let expected_dl = cases.iter().filter(|(_, c)| c.expect.is_err()).count();
    let deadline = Instant::now() + Duration::from_secs(90);
    let (normalized, dead) = loop {
        let mut n = Vec::new();
        for e in ["attendance", "enrollment", "calendar"] {
            n.extend(
                read_topic_to_end(&client, &topics.normalized(e), true)
                    .unwrap()
                    .into_iter()
                    .map(|r| (e, r)),
            );
        }
        let d = read_topic_to_end(&client, &topics.dead_letters(), true).unwrap();
        if n.len() + d.len() >= expected_out + expected_dl || Instant::now() > deadline {
            break (n, d);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    stop.cancel();
    worker.join().unwrap();

    // Valid records: exactly once, right category and fraction.
    let mut by_key: HashMap<String, Vec<(Category, f64, Operation)>> = HashMap::new();
    let mut entities_by_key: HashMap<String, usize> = HashMap::new();
    for (entity, r) in &normalized {
        match *entity {
            "attendance" => {
                let e = rollcall_avro::decode_attendance_event(&r.payload).unwrap();
                let key = e.source_key.trim_end_matches("-old").to_string();
                by_key
                    .entry(key)
                    .or_default()
                    .push((e.category, e.absent_fraction, e.operation));
            }
            "enrollment" => {
                let e = rollcall_avro::decode_enrollment(&r.payload).unwrap();
                *entities_by_key.entry(e.source_key).or_default() += 1;
            }
            _ => {
                let c = rollcall_avro::decode_calendar_day(&r.payload).unwrap();
                assert!(c.is_instructional);
                *entities_by_key.entry(c.source_key).or_default() += 1;
            }
        }
    }
    // Bad records: each in the dead-letter topic, with its kind, reason and origin.
    let mut dl_by_key: HashMap<String, DeadLetterHeaders> = HashMap::new();
    for r in &dead {
        let key = String::from_utf8(r.key.clone().unwrap()).unwrap();
        let h = DeadLetterHeaders::from_pairs(&r.headers);
        assert_eq!(h.stage, "normalizer");
        assert!(
            h.source_topic.is_some() && h.source_offset.is_some(),
            "{key}: source coordinates"
        );
        assert!(!h.reason.is_empty(), "{key}: a reason");
        let original = outs.iter().find(|o| o.key == key.as_bytes()).unwrap();
        // The original bytes, unchanged — or, when longer than a dead letter carries,
        // their beginning, with the original length in a header.
        let cap = rollcall_kafka::limits::MAX_DEAD_LETTER_PAYLOAD_BYTES;
        if original.payload.len() <= cap {
            assert!(
                r.payload == original.payload,
                "{key}: the original bytes, unchanged"
            );
            assert_eq!(
                rollcall_kafka::DeadLetter::original_payload_len(&r.headers),
                None
            );
        } else {
            assert!(
                r.payload[..] == original.payload[..cap],
                "{key}: the original's first {cap} bytes"
            );
            assert_eq!(
                rollcall_kafka::DeadLetter::original_payload_len(&r.headers),
                Some(original.payload.len()),
                "{key}: marked as cut"
            );
        }
        assert!(
            dl_by_key.insert(key.clone(), h).is_none(),
            "{key} dead-lettered twice"
        );
    }
    for (key, c) in &cases {
        match &c.expect {
            Ok(v) if v.is_empty() => {
                assert_eq!(entities_by_key.get(key), Some(&1), "{key} exactly once")
            }
            Ok(v) => assert_eq!(
                by_key.get(key),
                Some(v),
                "{key}: dead letter {:?}",
                dl_by_key.get(key)
            ),
            Err(_) => assert!(!by_key.contains_key(key), "{key} must not be normalized"),
        }
    }
    assert_eq!(
        normalized.len(),
        expected_out,
        "no duplicates in the committed output"
    );

    for (key, c) in &cases {
        if let Err(kind) = c.expect {
            let h = dl_by_key
                .get(key)
                .unwrap_or_else(|| panic!("{key} missing from the dead-letter topic"));
            assert_eq!(h.kind, kind, "{key}: {}", h.reason);
        }
    }
    // in = normalized inputs + dead letters
    let normalized_inputs = cases.iter().filter(|(_, c)| c.expect.is_ok()).count();
    assert_eq!(cases.len(), normalized_inputs + dead.len());
}
