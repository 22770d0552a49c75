//! The Rust types against the .avsc files, with apache-avro as the oracle.

use apache_avro::schema::RecordSchema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::{GenericSingleObjectReader, GenericSingleObjectWriter};
use chrono::NaiveDate;
use proptest::prelude::*;
use rollcall_model::*;

use super::*;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn attendance() -> AttendanceEvent {
    AttendanceEvent {
        district_id: "255901".into(),
        school_id: "255901107".into(),
        student_id: "604877".into(),
        school_year: 2022,
        date: date(2021, 8, 25),
        category: Category::UnexcusedAbsence,
        absent_fraction: 0.5,
        source_code: "uri://ed-fi.org/AttendanceEventCategoryDescriptor#Unexcused Absence".into(),
        source_secondary_code: None,
        reason: Some("Absent unexcused".into()),
        source_system: "edfi".into(),
        source_instance: "https://api.ed-fi.org".into(),
        source_key: "255901107|604877|2021-08-25|Unexcused Absence".into(),
        source_version: 123_456,
        operation: Operation::Upsert,
        observed_at_ms: 1_700_000_000_000,
    }
}

fn enrollment() -> Enrollment {
    Enrollment {
        district_id: "d1".into(),
        school_id: "s1".into(),
        student_id: "st1".into(),
        school_year: 2022,
        entry_date: date(2021, 8, 23),
        exit_date: Some(date(2022, 1, 14)),
        grade_level: Some("Ninth grade".into()),
        subgroups: vec!["ell".into(), "swd".into()],
        state_student_id: None,
        operation: Operation::Delete,
        source_version: -3,
        source_system: "csv".into(),
        source_instance: "inbox".into(),
        source_key: "k".into(),
        observed_at_ms: 0,
        source_grade_level: Some("09".into()),
        exit_withdraw_type: Some("No show".into()),
        source_exit_withdraw_type: Some("NS".into()),
    }
}

fn calendar() -> CalendarDay {
    CalendarDay {
        district_id: "d1".into(),
        school_id: "s1".into(),
        calendar_code: String::new(),
        school_year: 2017,
        date: date(2016, 8, 22),
        is_instructional: true,
        events: vec!["Instructional day".into()],
        operation: Operation::Upsert,
        source_version: 9,
        source_system: "edfi".into(),
        source_instance: "h".into(),
        source_key: "k2".into(),
        observed_at_ms: 42,
    }
}

fn raw() -> RawEnvelope {
    RawEnvelope {
        source_system: "edfi".into(),
        source_instance: "host".into(),
        district_id: "255901".into(),
        entity: Entity::Attendance,
        operation: RawOperation::KeyChange,
        natural_key: "new".into(),
        old_natural_key: Some("old".into()),
        source_version: 77,
        observed_at_ms: 1,
        payload_format: PayloadFormat::EdfiJson,
        payload: br#"{"a":1}"#.to_vec(),
    }
}

/// Field names of a record schema, in order.
fn schema_fields(schema: &Schema) -> Vec<String> {
    match schema {
        Schema::Record(RecordSchema { fields, .. }) => {
            fields.iter().map(|f| f.name.clone()).collect()
        }
        other => panic!("not a record: {other:?}"),
    }
}

/// Encoding by hand and by apache-avro agree byte for byte, both decoders agree, and
/// the whole single-object frame is what apache-avro's single-object reader expects.
fn assert_matches_the_oracle<T: AvroRecord + PartialEq + std::fmt::Debug>(rec: &T) {
    let known = schemas().current(T::RECORD);
    let value = rec.to_value();
    assert!(
        value.validate(&known.schema),
        "value does not validate: {value:?}"
    );
    let ours = encode(rec);
    let theirs = apache_avro::to_avro_datum(&known.schema, value.clone()).unwrap();
    assert_eq!(&ours[HEADER_LEN..], &theirs[..], "body bytes differ");

    let mut body = &ours[HEADER_LEN..];
    let decoded = apache_avro::from_avro_datum(&known.schema, &mut body, None).unwrap();
    assert_eq!(
        &T::from_value(decoded).unwrap(),
        rec,
        "apache-avro reads our bytes"
    );
    assert_eq!(&decode::<T>(&ours).unwrap(), rec, "we read our bytes");

    let reader = GenericSingleObjectReader::new(known.schema.clone()).unwrap();
    let v = reader.read_value(&mut &ours[..]).unwrap();
    assert_eq!(&T::from_value(v).unwrap(), rec, "single-object frame");
    let mut writer = GenericSingleObjectWriter::new_with_capacity(&known.schema, 256).unwrap();
    let mut framed = Vec::new();
    writer.write_value(value, &mut framed).unwrap();
    assert_eq!(
        framed, ours,
        "apache-avro's single-object writer gives our bytes"
    );
}

#[test]
fn every_schema_file_parses_and_has_a_distinct_fingerprint() {
    let set = schemas();
    assert_eq!(set.all().len(), SCHEMA_FILES.len());
    for s in set.all() {
        assert_eq!(
            set.by_fingerprint(s.fingerprint).unwrap().version,
            s.version
        );
        assert_eq!(
            set.get(s.record, s.version).unwrap().fingerprint,
            s.fingerprint
        );
        assert!(s.json.contains("\"namespace\": \"org.rollcall\""));
    }
    for r in RecordType::ALL {
        assert_eq!(set.current(r).version, r.current_version());
    }
}

#[test]
fn fingerprints_are_pinned_so_contracts_change_only_on_purpose() {
    // Changing a schema's canonical form changes its fingerprint; add a new version
    // file instead of editing one, then add its fingerprint here.
    let got: Vec<String> = schemas()
        .all()
        .iter()
        .map(|s| format!("{}.v{} {:016x}", s.record, s.version, s.fingerprint))
        .collect();
    assert_eq!(got, PINNED_FINGERPRINTS, "{got:#?}");
}

const PINNED_FINGERPRINTS: &[&str] = &[
    "attendance_event.v1 7b6a3a01a10811ee",
    "attendance_event.v2 eef954f579b840e5",
    "enrollment.v1 58bb8aaac7632a63",
    "enrollment.v2 88a717d1348829b9",
    "calendar_day.v1 d29cf0332814abba",
    "raw_envelope.v1 d2ed8f18b8bac1b3",
];

#[test]
fn rust_types_have_exactly_the_schema_fields_in_order() {
    assert_eq!(
        schema_fields(&schemas().current(RecordType::AttendanceEvent).schema),
        record_field_names(&attendance().to_value())
    );
    assert_eq!(
        schema_fields(&schemas().current(RecordType::Enrollment).schema),
        record_field_names(&enrollment().to_value())
    );
    assert_eq!(
        schema_fields(&schemas().current(RecordType::CalendarDay).schema),
        record_field_names(&calendar().to_value())
    );
    assert_eq!(
        schema_fields(&schemas().current(RecordType::RawEnvelope).schema),
        record_field_names(&raw().to_value())
    );
}

fn record_field_names(v: &Value) -> Vec<String> {
    match v {
        Value::Record(f) => f.iter().map(|(n, _)| n.clone()).collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn enum_symbols_match_the_model_enums() {
    let symbols = |record: RecordType, field: &str| -> Vec<String> {
        let Schema::Record(r) = &schemas().current(record).schema else {
            panic!()
        };
        let f = r.fields.iter().find(|f| f.name == field).unwrap();
        let Schema::Enum(e) = &f.schema else {
            panic!("{field} is not an enum")
        };
        e.symbols.clone()
    };
    let names = |all: &[&str]| all.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        symbols(RecordType::AttendanceEvent, "category"),
        names(&Category::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>())
    );
    for r in [
        RecordType::AttendanceEvent,
        RecordType::Enrollment,
        RecordType::CalendarDay,
    ] {
        assert_eq!(symbols(r, "operation"), names(&["upsert", "delete"]));
    }
    assert_eq!(
        symbols(RecordType::RawEnvelope, "operation"),
        names(&["upsert", "delete", "key_change"])
    );
    assert_eq!(
        symbols(RecordType::RawEnvelope, "entity"),
        names(&["attendance", "enrollment", "calendar"])
    );
    assert_eq!(
        symbols(RecordType::RawEnvelope, "payload_format"),
        names(&["edfi_json", "flat_json"])
    );
}

#[test]
fn hand_encoding_matches_apache_avro_for_every_record() {
    assert_matches_the_oracle(&attendance());
    assert_matches_the_oracle(&AttendanceEvent {
        source_secondary_code: Some("Absent".into()),
        reason: None,
        category: Category::NotEnrolled,
        absent_fraction: 0.0,
        operation: Operation::Delete,
        ..attendance()
    });
    assert_matches_the_oracle(&enrollment());
    assert_matches_the_oracle(&Enrollment {
        exit_date: None,
        grade_level: None,
        subgroups: vec![],
        state_student_id: Some("S-1".into()),
        source_grade_level: None,
        exit_withdraw_type: None,
        source_exit_withdraw_type: Some("W1".into()),
        ..enrollment()
    });
    assert_matches_the_oracle(&calendar());
    assert_matches_the_oracle(&CalendarDay {
        events: vec![],
        is_instructional: false,
        ..calendar()
    });
    assert_matches_the_oracle(&raw());
    assert_matches_the_oracle(&RawEnvelope {
        old_natural_key: None,
        payload: vec![],
        ..raw()
    });
}

#[test]
fn v2_reader_reads_a_v1_attendance_message() {
    let v1 = schemas().get(RecordType::AttendanceEvent, 1).unwrap();
    let v2 = schemas().get(RecordType::AttendanceEvent, 2).unwrap();
    assert!(
        SchemaCompatibility::can_read(&v1.schema, &v2.schema).is_ok(),
        "backward"
    );
    assert!(
        SchemaCompatibility::can_read(&v2.schema, &v1.schema).is_ok(),
        "forward"
    );

    let msg = encode_attendance_event(&attendance());
    let Value::Record(fields) = decode_value(&msg, &v2.schema).unwrap() else {
        panic!()
    };
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, schema_fields(&v2.schema));
    let period = fields.iter().find(|(n, _)| n == "period").unwrap();
    assert_eq!(period.1, Value::Union(0, Box::new(Value::Null)), "default");
    let without: Vec<(String, Value)> = fields.into_iter().filter(|(n, _)| n != "period").collect();
    assert_eq!(
        AttendanceEvent::from_value(Value::Record(without)).unwrap(),
        attendance()
    );
}

#[test]
fn current_reader_reads_a_v2_attendance_message() {
    let v2 = schemas().get(RecordType::AttendanceEvent, 2).unwrap();
    let Value::Record(mut fields) = attendance().to_value() else {
        panic!()
    };
    fields.push((
        "period".into(),
        Value::Union(1, Box::new(Value::String("3".into()))),
    ));
    let msg = encode_value(&Value::Record(fields), v2).unwrap();
    assert_eq!(
        split_header(&msg).unwrap().0,
        SchemaId::Fingerprint(v2.fingerprint)
    );
    assert_eq!(decode_attendance_event(&msg).unwrap(), attendance());
}

#[test]
fn enrollment_v2_reads_a_v1_message_with_the_new_fields_null() {
    let v1 = schemas().get(RecordType::Enrollment, 1).unwrap();
    let v2 = schemas().get(RecordType::Enrollment, 2).unwrap();
    assert_eq!(RecordType::Enrollment.current_version(), 2);
    assert!(
        SchemaCompatibility::can_read(&v1.schema, &v2.schema).is_ok(),
        "backward: v2 reads v1"
    );
    assert!(
        SchemaCompatibility::can_read(&v2.schema, &v1.schema).is_ok(),
        "forward: v1 reads v2"
    );
    // A record as a v1 writer (an older normalizer) put it on the topic.
    let old = Enrollment {
        grade_level: Some("KG".into()),
        source_grade_level: None,
        exit_withdraw_type: None,
        source_exit_withdraw_type: None,
        ..enrollment()
    };
    let Value::Record(fields) = old.to_value() else {
        panic!()
    };
    let v1_fields: Vec<(String, Value)> = fields
        .into_iter()
        .filter(|(n, _)| {
            !matches!(
                n.as_str(),
                "source_grade_level" | "exit_withdraw_type" | "source_exit_withdraw_type"
            )
        })
        .collect();
    let msg = encode_value(&Value::Record(v1_fields), v1).unwrap();
    assert_eq!(
        split_header(&msg).unwrap().0,
        SchemaId::Fingerprint(v1.fingerprint)
    );
    assert_eq!(decode_enrollment(&msg).unwrap(), old);
    // And the current writer writes v2.
    assert_eq!(
        split_header(&encode_enrollment(&enrollment())).unwrap().0,
        SchemaId::Fingerprint(v2.fingerprint)
    );
}

#[test]
fn every_record_round_trips() {
    assert_eq!(
        decode_attendance_event(&encode_attendance_event(&attendance())).unwrap(),
        attendance()
    );
    assert_eq!(
        decode_enrollment(&encode_enrollment(&enrollment())).unwrap(),
        enrollment()
    );
    assert_eq!(
        decode_calendar_day(&encode_calendar_day(&calendar())).unwrap(),
        calendar()
    );
    assert_eq!(decode_raw(&encode_raw(&raw())).unwrap(), raw());
}

#[test]
fn bad_frames_get_clear_errors() {
    let msg = encode_attendance_event(&attendance());
    assert_eq!(
        decode_attendance_event(&[]),
        Err(AvroError::TruncatedHeader { len: 0 })
    );
    assert_eq!(
        decode_attendance_event(&msg[..5]),
        Err(AvroError::TruncatedHeader { len: 5 })
    );
    assert!(matches!(
        decode_attendance_event(b"{\"json\":1}"),
        Err(AvroError::BadMagic { found }) if found == b"{\""
    ));
    assert_eq!(
        decode_attendance_event(&[0, 0, 0, 1, 0x2c, 2, 3]),
        Err(AvroError::RegistryUnsupported { id: 300 })
    );
    assert!(decode_attendance_event(&[0, 0, 1])
        .unwrap_err()
        .to_string()
        .contains("too short"));
    let mut unknown = msg.clone();
    unknown[2] ^= 0xff;
    let err = decode_attendance_event(&unknown).unwrap_err();
    assert!(matches!(err, AvroError::UnknownFingerprint { .. }));
    assert!(err.to_string().contains("attendance_event.v1"), "{err}");
    assert!(matches!(
        decode_enrollment(&msg),
        Err(AvroError::WrongRecord {
            expected: RecordType::Enrollment,
            found: RecordType::AttendanceEvent,
            version: 1
        })
    ));
    let err = decode_attendance_event(&msg[..msg.len() - 3]).unwrap_err();
    assert!(
        matches!(
            err,
            AvroError::Body {
                field: "observed_at_ms",
                ..
            }
        ),
        "{err}"
    );
    let mut long = msg.clone();
    long.push(0);
    assert!(matches!(
        decode_attendance_event(&long),
        Err(AvroError::Body { field: "(end)", .. })
    ));
    let v2 = schemas().get(RecordType::AttendanceEvent, 2).unwrap();
    let mut v2msg = encode_value(
        &{
            let Value::Record(mut f) = attendance().to_value() else {
                panic!()
            };
            f.push(("period".into(), Value::Union(0, Box::new(Value::Null))));
            Value::Record(f)
        },
        v2,
    )
    .unwrap();
    v2msg.truncate(v2msg.len() - 2);
    assert!(matches!(
        decode_attendance_event(&v2msg),
        Err(AvroError::Resolution { version: 2, .. })
    ));
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

prop_compose! {
    fn any_date()(days in -200_000i64..200_000) -> NaiveDate {
        date(1970, 1, 1) + chrono::Days::new(0) + chrono::TimeDelta::days(days)
    }
}

prop_compose! {
    fn any_attendance()(
        ids in (text(), text(), text()),
        school_year in any::<i32>(),
        date in any_date(),
        cat in 0..Category::ALL.len(),
        absent_fraction in -1e9f64..1e9,
        codes in (text(), proptest::option::of(text()), proptest::option::of(text())),
        src in (text(), text(), text()),
        source_version in any::<i64>(),
        delete in any::<bool>(),
        observed_at_ms in any::<i64>(),
    ) -> AttendanceEvent {
        AttendanceEvent {
            district_id: ids.0, school_id: ids.1, student_id: ids.2, school_year, date,
            category: Category::ALL[cat], absent_fraction,
            source_code: codes.0, source_secondary_code: codes.1, reason: codes.2,
            source_system: src.0, source_instance: src.1, source_key: src.2,
            source_version,
            operation: if delete { Operation::Delete } else { Operation::Upsert },
            observed_at_ms,
        }
    }
}

prop_compose! {
    fn any_enrollment()(
        ids in (text(), text(), text()),
        school_year in any::<i32>(),
        entry_date in any_date(),
        exit_date in proptest::option::of(any_date()),
        grade_level in proptest::option::of(text()),
        subgroups in proptest::collection::vec(text(), 0..4),
        state_student_id in proptest::option::of(text()),
        source_version in any::<i64>(),
        src in (text(), text(), text()),
        observed_at_ms in any::<i64>(),
        v2 in (proptest::option::of(text()), proptest::option::of(text()), proptest::option::of(text())),
    ) -> Enrollment {
        Enrollment {
            district_id: ids.0, school_id: ids.1, student_id: ids.2, school_year,
            entry_date, exit_date, grade_level, subgroups, state_student_id,
            operation: Operation::Upsert, source_version,
            source_system: src.0, source_instance: src.1, source_key: src.2, observed_at_ms,
            source_grade_level: v2.0, exit_withdraw_type: v2.1, source_exit_withdraw_type: v2.2,
        }
    }
}

prop_compose! {
    fn any_calendar()(
        ids in (text(), text(), text()),
        school_year in any::<i32>(),
        date in any_date(),
        is_instructional in any::<bool>(),
        events in proptest::collection::vec(text(), 0..4),
        source_version in any::<i64>(),
        src in (text(), text(), text()),
        observed_at_ms in any::<i64>(),
    ) -> CalendarDay {
        CalendarDay {
            district_id: ids.0, school_id: ids.1, calendar_code: ids.2, school_year, date,
            is_instructional, events, operation: Operation::Delete, source_version,
            source_system: src.0, source_instance: src.1, source_key: src.2, observed_at_ms,
        }
    }
}

prop_compose! {
    fn any_raw()(
        src in (text(), text(), text()),
        entity in 0..3usize,
        op in 0..3usize,
        keys in (text(), proptest::option::of(text())),
        source_version in any::<i64>(),
        observed_at_ms in any::<i64>(),
        json in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) -> RawEnvelope {
        RawEnvelope {
            source_system: src.0, source_instance: src.1, district_id: src.2,
            entity: Entity::ALL[entity], operation: RawOperation::ALL[op],
            natural_key: keys.0, old_natural_key: keys.1, source_version, observed_at_ms,
            payload_format: if json { PayloadFormat::EdfiJson } else { PayloadFormat::FlatJson },
            payload,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_attendance_event_matches_the_oracle(e in any_attendance()) {
        assert_matches_the_oracle(&e);
    }

    #[test]
    fn any_enrollment_matches_the_oracle(e in any_enrollment()) {
        assert_matches_the_oracle(&e);
    }

    #[test]
    fn any_calendar_day_matches_the_oracle(c in any_calendar()) {
        assert_matches_the_oracle(&c);
    }

    #[test]
    fn any_raw_envelope_matches_the_oracle(r in any_raw()) {
        assert_matches_the_oracle(&r);
    }

    #[test]
    fn random_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_raw(&bytes);
        let _ = decode_attendance_event(&bytes);
        let _ = decode_enrollment(&bytes);
        let _ = decode_calendar_day(&bytes);
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200), which in 0..5usize) {
        let s = &schemas().all()[which];
        let mut msg = SINGLE_OBJECT_MAGIC.to_vec();
        msg.extend_from_slice(&s.fingerprint.to_le_bytes());
        msg.extend_from_slice(&body);
        let _ = decode_raw(&msg);
        let _ = decode_attendance_event(&msg);
        let _ = decode_enrollment(&msg);
        let _ = decode_calendar_day(&msg);
    }
}
