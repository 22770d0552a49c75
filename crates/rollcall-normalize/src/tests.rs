//! Normalization rules, table-driven and named after the rule. Every record goes the whole
//! way: encoded raw envelope in, Avro events out, decoded again for the assertions.

use chrono::NaiveDate;
use rollcall_avro::{decode_attendance_event, decode_calendar_day, decode_enrollment, encode_raw};
use rollcall_codemaps::{CodeMap, CodeMapRegistry, PRESETS};
use rollcall_model::*;
use rollcall_policy::{absent_days, PartialDayRule, Policy};
use serde_json::json;

use super::*;

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

const TODAY: (i32, u32, u32) = (2022, 3, 15);

fn today() -> NaiveDate {
    d(TODAY.0, TODAY.1, TODAY.2)
}

const D_CSV_MAP: &str = r#"
district_id = "d001"
source_system = "csv"
extends = "powerschool"
[codes]
"HD" = { category = "excused_absence", absent_fraction = 0.5 }
"#;

fn registry() -> CodeMapRegistry {
    let mut r = CodeMapRegistry::with_builtins();
    r.insert(CodeMap::from_toml_str(D_CSV_MAP, "d001.toml").unwrap())
        .unwrap();
    r
}

fn normalizer() -> Normalizer {
    Normalizer::try_new(registry(), Policy::default()).unwrap()
}

fn envelope(
    source: &str,
    entity: Entity,
    op: RawOperation,
    format: PayloadFormat,
    payload: &serde_json::Value,
) -> RawEnvelope {
    RawEnvelope {
        source_system: source.into(),
        source_instance: "test-host".into(),
        district_id: "d001".into(),
        entity,
        operation: op,
        natural_key: "nk-1".into(),
        old_natural_key: None,
        source_version: 42,
        observed_at_ms: 1_650_000_000_000,
        payload_format: format,
        payload: serde_json::to_vec(payload).unwrap(),
    }
}

fn edfi(entity: Entity, payload: serde_json::Value) -> RawEnvelope {
    envelope(
        "edfi",
        entity,
        RawOperation::Upsert,
        PayloadFormat::EdfiJson,
        &payload,
    )
}

fn flat(source: &str, entity: Entity, payload: serde_json::Value) -> RawEnvelope {
    envelope(
        source,
        entity,
        RawOperation::Upsert,
        PayloadFormat::FlatJson,
        &payload,
    )
}

/// The Ed-Fi example event of attendance-facts.md, moved into the 2021-22 school year.
fn edfi_event() -> serde_json::Value {
    json!({
        "id": "3a1b",
        "schoolReference": {"schoolId": 255901107, "link": {"rel": "School", "href": "/ed-fi/schools/x"}},
        "sessionReference": {"schoolId": 255901107, "schoolYear": 2022, "sessionName": "2021-2022 Fall Semester"},
        "studentReference": {"studentUniqueId": "604877"},
        "attendanceEventCategoryDescriptor": "uri://ed-fi.org/AttendanceEventCategoryDescriptor#Unexcused Absence",
        "eventDate": "2021-08-25",
        "attendanceEventReason": "Absent unexcused",
        "eventDuration": 1,
        "_etag": "5250168731208835353",
        "_lastModifiedDate": "2021-08-26T10:00:00Z"
    })
}

fn flat_event() -> serde_json::Value {
    json!({"school_id": "101", "student_id": "S1", "date": "2022-02-01", "code": "A", "secondary_code": "Absent"})
}

fn with(mut v: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    v[key] = value;
    v
}

fn without(mut v: serde_json::Value, key: &str) -> serde_json::Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

/// Runs the whole path and decodes what came out, checking keys and districts.
fn run_with(n: &Normalizer, env: &RawEnvelope) -> Result<Vec<Canonical>, Rejection> {
    let out = n.normalize(&encode_raw(env), today())?;
    Ok(out
        .into_iter()
        .map(|o| {
            let c = match o.entity {
                Entity::Attendance => {
                    Canonical::Attendance(decode_attendance_event(&o.value).unwrap())
                }
                Entity::Enrollment => Canonical::Enrollment(decode_enrollment(&o.value).unwrap()),
                Entity::Calendar => Canonical::Calendar(decode_calendar_day(&o.value).unwrap()),
            };
            assert_eq!(o.key, c.kafka_key());
            assert_eq!(o.district_id, c.district_id());
            assert_eq!(o.entity, c.entity());
            c
        })
        .collect())
}

fn run(env: &RawEnvelope) -> Result<Vec<Canonical>, Rejection> {
    run_with(&normalizer(), env)
}

fn one_attendance_with(n: &Normalizer, env: &RawEnvelope) -> AttendanceEvent {
    match run_with(n, env) {
        Ok(mut v) if v.len() == 1 => match v.remove(0) {
            Canonical::Attendance(e) => e,
            other => panic!("not attendance: {other:?}"),
        },
        other => panic!("expected one attendance event, got {other:?}"),
    }
}

fn one_attendance(env: &RawEnvelope) -> AttendanceEvent {
    one_attendance_with(&normalizer(), env)
}

fn rejected_with(n: &Normalizer, env: &RawEnvelope) -> Rejection {
    match run_with(n, env) {
        Err(r) => r,
        Ok(v) => panic!("expected a rejection, got {v:?}"),
    }
}

fn rejected(env: &RawEnvelope) -> Rejection {
    rejected_with(&normalizer(), env)
}

fn policy_with(f: impl FnOnce(&mut Policy)) -> Normalizer {
    let mut p = Policy::default();
    f(&mut p);
    Normalizer::try_new(registry(), p).unwrap()
}

// --- the happy path ------------------------------------------------------------------------

#[test]
fn edfi_attendance_event_becomes_one_canonical_event_with_every_field() {
    let e = one_attendance(&edfi(Entity::Attendance, edfi_event()));
    assert_eq!(
        e,
        AttendanceEvent {
            district_id: "d001".into(),
            school_id: "255901107".into(),
            student_id: "604877".into(),
            school_year: 2022,
            date: d(2021, 8, 25),
            category: Category::UnexcusedAbsence,
            absent_fraction: 1.0,
            source_code: "uri://ed-fi.org/AttendanceEventCategoryDescriptor#Unexcused Absence"
                .into(),
            source_secondary_code: None,
            reason: Some("Absent unexcused".into()),
            source_system: "edfi".into(),
            source_instance: "test-host".into(),
            source_key: "nk-1".into(),
            source_version: 42,
            operation: Operation::Upsert,
            observed_at_ms: 1_650_000_000_000,
        }
    );
    assert_eq!(e.kafka_key(), "d001/604877");
}

#[test]
fn flat_attendance_row_becomes_one_canonical_event() {
    let e = one_attendance(&flat(
        "csv",
        Entity::Attendance,
        with(flat_event(), "reason", json!("  sick  ")),
    ));
    assert_eq!(
        (
            e.school_id.as_str(),
            e.student_id.as_str(),
            e.date,
            e.school_year
        ),
        ("101", "S1", d(2022, 2, 1), 2022)
    );
    assert_eq!(
        (e.category, e.absent_fraction),
        (Category::UnexcusedAbsence, 1.0)
    );
    assert_eq!(e.source_code, "A");
    assert_eq!(e.source_secondary_code.as_deref(), Some("Absent"));
    assert_eq!(e.reason.as_deref(), Some("sick"));
}

#[test]
fn calendar_key_is_district_and_school() {
    let out = normalizer()
        .normalize(
            &encode_raw(&flat(
                "csv",
                Entity::Calendar,
                json!({"school_id": "101", "date": "2021-09-01", "is_instructional": "true"}),
            )),
            today(),
        )
        .unwrap();
    assert_eq!(out[0].key, "d001/101");
    assert_eq!(out[0].entity, Entity::Calendar);
}

// --- every entry of every preset, end to end -------------------------------------------------

#[test]
fn every_preset_entry_normalizes_to_its_category_and_fraction() {
    let n = normalizer();
    for (preset, _) in PRESETS {
        let map = CodeMap::preset(preset).unwrap();
        for entry in map.entries() {
            let mut row = json!({"school_id": "101", "student_id": "S1", "date": "2022-02-01", "code": entry.code});
            if let Some(s) = entry.secondary_code.filter(|s| !s.is_empty()) {
                row["secondary_code"] = json!(s);
            }
            let e = one_attendance_with(&n, &flat(preset, Entity::Attendance, row));
            assert_eq!(
                (e.category, e.absent_fraction),
                (entry.mapping.category, entry.mapping.absent_fraction),
                "{preset}: {:?} × {:?}",
                entry.code,
                entry.secondary_code
            );
        }
    }
}

#[test]
fn edfi_descriptor_uris_in_any_namespace_map_through_the_edfi_preset() {
    for (value, category, fraction) in [
        ("In Attendance", Category::Present, 0.0),
        ("Present", Category::Present, 0.0),
        ("Tardy", Category::Tardy, 0.0),
        ("Early departure", Category::EarlyDeparture, 0.0),
        ("Excused Absence", Category::ExcusedAbsence, 1.0),
        ("Unexcused Absence", Category::UnexcusedAbsence, 1.0),
        ("Partial", Category::ExcusedAbsence, 0.5),
        ("Suspended", Category::OutOfSchoolSuspension, 1.0),
        (
            "Out of School Suspension",
            Category::OutOfSchoolSuspension,
            1.0,
        ),
        ("Expelled", Category::OutOfSchoolSuspension, 1.0),
        ("In School Suspension", Category::InSchoolSuspension, 1.0),
        ("Student Not Expected", Category::NotEnrolled, 0.0),
    ] {
        for ns in ["uri://ed-fi.org", "uri://tea.texas.gov"] {
            let payload = without(
                with(
                    edfi_event(),
                    "attendanceEventCategoryDescriptor",
                    json!(format!("{ns}/AttendanceEventCategoryDescriptor#{value}")),
                ),
                "eventDuration",
            );
            let e = one_attendance(&edfi(Entity::Attendance, payload));
            assert_eq!(
                (e.category, e.absent_fraction),
                (category, fraction),
                "{ns} {value}"
            );
        }
    }
}

// --- partial days and durations ------------------------------------------------------------

#[test]
fn half_day_event_duration_counts_per_partial_day_rule() {
    let payload = with(edfi_event(), "eventDuration", json!(0.5));
    let e = one_attendance(&edfi(Entity::Attendance, payload));
    assert_eq!(e.absent_fraction, 0.5);
    for (rule, days) in [
        (PartialDayRule::Fractional, 0.5),
        (PartialDayRule::HalfDayThreshold, 1.0),
        (PartialDayRule::FullDayOnly, 0.0),
    ] {
        let p = Policy {
            partial_day: rule,
            ..Policy::default()
        };
        assert_eq!(
            absent_days(e.category, e.absent_fraction, &p),
            days,
            "{rule:?}"
        );
    }
}

#[test]
fn minutes_absent_become_a_fraction_of_the_given_or_policy_school_day() {
    let n = normalizer();
    for (row, want) in [
        (
            json!({"minutes_absent": "180", "school_day_minutes": "360"}),
            0.5,
        ),
        (
            json!({"minutes_absent": "210", "school_day_minutes": "420"}),
            0.5,
        ),
        (json!({"minutes_absent": "90"}), 0.25),
        (
            json!({"minutes_absent": "500", "school_day_minutes": "360"}),
            1.0,
        ),
        (json!({"minutes_absent": "0"}), 0.0),
        (json!({"minutes_absent": " ", "duration_days": ""}), 1.0),
    ] {
        let mut r = flat_event();
        for (k, v) in row.as_object().unwrap() {
            r[k] = v.clone();
        }
        let e = one_attendance_with(&n, &flat("csv", Entity::Attendance, r.clone()));
        assert_eq!(e.absent_fraction, want, "{r}");
    }
    let n = policy_with(|p| p.school_day_minutes = 400);
    let e = one_attendance_with(
        &n,
        &flat(
            "csv",
            Entity::Attendance,
            with(flat_event(), "minutes_absent", json!("100")),
        ),
    );
    assert_eq!(e.absent_fraction, 0.25, "policy.school_day_minutes");
}

#[test]
fn edfi_school_attendance_duration_is_minutes_missed() {
    let payload = with(
        without(edfi_event(), "eventDuration"),
        "schoolAttendanceDuration",
        json!(180),
    );
    assert_eq!(
        one_attendance(&edfi(Entity::Attendance, payload)).absent_fraction,
        0.5
    );
}

#[test]
fn duration_precedence_is_days_then_minutes_then_code_map_then_category() {
    let both = with(
        with(edfi_event(), "eventDuration", json!(0.25)),
        "schoolAttendanceDuration",
        json!(360),
    );
    assert_eq!(
        one_attendance(&edfi(Entity::Attendance, both)).absent_fraction,
        0.25
    );
    // The code map's fraction when the record gives none, overridden when it does.
    let hd = with(flat_event(), "code", json!("HD"));
    assert_eq!(
        one_attendance(&flat("csv", Entity::Attendance, hd.clone())).absent_fraction,
        0.5
    );
    assert_eq!(
        one_attendance(&flat(
            "csv",
            Entity::Attendance,
            with(hd, "duration_days", json!("1"))
        ))
        .absent_fraction,
        1.0
    );
    let partial = with(
        edfi_event(),
        "attendanceEventCategoryDescriptor",
        json!("uri://ed-fi.org/AttendanceEventCategoryDescriptor#Partial"),
    );
    assert_eq!(
        one_attendance(&edfi(
            Entity::Attendance,
            with(partial, "eventDuration", json!(0.33))
        ))
        .absent_fraction,
        0.33
    );
}

#[test]
fn duration_over_one_day_is_clamped_and_negative_is_out_of_range() {
    let e = one_attendance(&edfi(
        Entity::Attendance,
        with(edfi_event(), "eventDuration", json!(2)),
    ));
    assert_eq!(e.absent_fraction, 1.0);
    let r = rejected(&edfi(
        Entity::Attendance,
        with(edfi_event(), "eventDuration", json!(-0.5)),
    ));
    assert_eq!(r.kind, RejectKind::FractionOutOfRange);
    assert!(r.reason.contains("eventDuration"), "{}", r.reason);
    let r = rejected(&flat(
        "csv",
        Entity::Attendance,
        with(flat_event(), "minutes_absent", json!("-10")),
    ));
    assert_eq!(r.kind, RejectKind::FractionOutOfRange);
}

#[test]
fn unusable_durations_are_invalid_duration_naming_the_field() {
    for (field, value) in [
        ("duration_days", "half"),
        ("minutes_absent", "NaN"),
        ("duration_days", "inf"),
    ] {
        let r = rejected(&flat(
            "csv",
            Entity::Attendance,
            with(flat_event(), field, json!(value)),
        ));
        assert_eq!(r.kind, RejectKind::InvalidDuration, "{field}={value}");
        assert!(r.reason.contains(field), "{}", r.reason);
    }
    let r = rejected(&flat(
        "csv",
        Entity::Attendance,
        with(
            with(flat_event(), "minutes_absent", json!("30")),
            "school_day_minutes",
            json!("0"),
        ),
    ));
    assert_eq!(r.kind, RejectKind::InvalidDuration);
    assert!(r.reason.contains("school_day_minutes"), "{}", r.reason);
}

#[test]
fn tardy_and_early_departure_are_present_with_zero_fraction_whatever_the_duration() {
    for (value, category) in [
        ("Tardy", Category::Tardy),
        ("Early departure", Category::EarlyDeparture),
        ("In Attendance", Category::Present),
    ] {
        let payload = with(
            with(
                edfi_event(),
                "attendanceEventCategoryDescriptor",
                json!(format!(
                    "uri://ed-fi.org/AttendanceEventCategoryDescriptor#{value}"
                )),
            ),
            "eventDuration",
            json!(0.25),
        );
        let e = one_attendance(&edfi(Entity::Attendance, payload));
        assert_eq!((e.category, e.absent_fraction), (category, 0.0));
        assert_eq!(
            absent_days(e.category, e.absent_fraction, &Policy::default()),
            0.0
        );
    }
}

#[test]
fn suspensions_normalize_as_suspensions_and_count_per_policy() {
    for (value, category, absent_by_default) in [
        ("Suspended", Category::OutOfSchoolSuspension, 1.0),
        ("In School Suspension", Category::InSchoolSuspension, 0.0),
    ] {
        let payload = with(
            edfi_event(),
            "attendanceEventCategoryDescriptor",
            json!(format!(
                "uri://ed-fi.org/AttendanceEventCategoryDescriptor#{value}"
            )),
        );
        let e = one_attendance(&edfi(Entity::Attendance, payload));
        assert_eq!((e.category, e.absent_fraction), (category, 1.0));
        let p = Policy::default();
        assert_eq!(
            absent_days(e.category, e.absent_fraction, &p),
            absent_by_default
        );
        let flipped = Policy {
            out_of_school_suspension_counts_as_absent: false,
            in_school_suspension_counts_as_absent: true,
            ..Policy::default()
        };
        assert_eq!(
            absent_days(e.category, e.absent_fraction, &flipped),
            1.0 - absent_by_default
        );
    }
}

// --- dates ------------------------------------------------------------------------------------

#[test]
fn attendance_dated_after_today_is_date_in_future() {
    let tomorrow = with(flat_event(), "date", json!("2022-03-16"));
    let r = rejected(&flat("csv", Entity::Attendance, tomorrow.clone()));
    assert_eq!(r.kind, RejectKind::DateInFuture);
    assert!(r.reason.contains("2022-03-16") && r.reason.contains("future_date_tolerance_days"));
    let today = with(flat_event(), "date", json!("2022-03-15"));
    assert!(run(&flat("csv", Entity::Attendance, today)).is_ok());
    let tolerant = policy_with(|p| p.future_date_tolerance_days = 1);
    assert!(run_with(&tolerant, &flat("csv", Entity::Attendance, tomorrow)).is_ok());
}

#[test]
fn date_outside_the_given_school_year_is_rejected() {
    let r = rejected(&edfi(
        Entity::Attendance,
        with(
            edfi_event(),
            "sessionReference",
            json!({"schoolId": 255901107, "schoolYear": 2021, "sessionName": "x"}),
        ),
    ));
    assert_eq!(r.kind, RejectKind::DateOutsideSchoolYear);
    assert!(
        r.reason.contains("sessionReference.schoolYear"),
        "{}",
        r.reason
    );
    let r = rejected(&flat(
        "csv",
        Entity::Attendance,
        with(flat_event(), "school_year", json!("2023")),
    ));
    assert_eq!(r.kind, RejectKind::DateOutsideSchoolYear);
    // With no school year given, the date decides it (July start).
    let e = one_attendance(&flat(
        "csv",
        Entity::Attendance,
        with(flat_event(), "date", json!("2021-07-01")),
    ));
    assert_eq!(e.school_year, 2022);
    let aug = policy_with(|p| p.school_year_start_month = 8);
    let e = one_attendance_with(
        &aug,
        &flat(
            "csv",
            Entity::Attendance,
            with(flat_event(), "date", json!("2021-07-01")),
        ),
    );
    assert_eq!(e.school_year, 2021);
}

#[test]
fn school_year_spans_like_2021_2022_mean_their_end_year() {
    let e = one_attendance(&edfi(
        Entity::Attendance,
        with(
            edfi_event(),
            "sessionReference",
            json!({"schoolId": 255901107, "schoolYear": "2021-2022", "sessionName": "x"}),
        ),
    ));
    assert_eq!(e.school_year, 2022);
}

#[test]
fn dates_in_us_format_are_read_and_nonsense_is_invalid_date() {
    let e = one_attendance(&flat(
        "csv",
        Entity::Attendance,
        with(flat_event(), "date", json!("2/1/2022")),
    ));
    assert_eq!(e.date, d(2022, 2, 1));
    for bad in ["2022-02-30", "yesterday", "01.02.2022"] {
        let r = rejected(&flat(
            "csv",
            Entity::Attendance,
            with(flat_event(), "date", json!(bad)),
        ));
        assert_eq!(r.kind, RejectKind::InvalidDate, "{bad}");
        assert!(r.reason.contains("field date"), "{}", r.reason);
    }
}

// --- codes that are not guessed ----------------------------------------------------------------

#[test]
fn unknown_code_is_rejected_naming_the_code_and_the_map() {
    let r = rejected(&edfi(
        Entity::Attendance,
        with(
            edfi_event(),
            "attendanceEventCategoryDescriptor",
            json!("uri://ed-fi.org/AttendanceEventCategoryDescriptor#Field Trip"),
        ),
    ));
    assert_eq!(r.kind, RejectKind::UnknownCode);
    assert!(
        r.reason.contains("Field Trip") && r.reason.contains("d001"),
        "{}",
        r.reason
    );
    assert_eq!(r.district_id.as_deref(), Some("d001"));
    assert_eq!(r.source_key.as_deref(), Some("nk-1"));
}

#[test]
fn infinite_campus_unknown_excuse_goes_to_dead_letters() {
    let row = json!({"school_id": "1", "student_id": "2", "date": "2022-01-10", "code": "Absent", "secondary_code": "Unknown"});
    let r = rejected(&flat("infinite_campus", Entity::Attendance, row));
    assert_eq!(r.kind, RejectKind::UnknownCode);
    assert!(r.reason.contains("\"Unknown\""), "{}", r.reason);
}

#[test]
fn source_without_map_or_preset_is_no_code_map() {
    let mut env = flat("csv", Entity::Attendance, flat_event());
    env.district_id = "d002".into();
    let r = rejected(&env);
    assert_eq!(r.kind, RejectKind::NoCodeMap);
    assert!(
        r.reason.contains("d002") && r.reason.contains("csv"),
        "{}",
        r.reason
    );
}

// --- identifiers -------------------------------------------------------------------------------

#[test]
fn identifiers_are_trimmed_and_case_kept_by_default() {
    let mut env = flat(
        "csv",
        Entity::Attendance,
        with(
            with(flat_event(), "student_id", json!("  s1 \t")),
            "school_id",
            json!(" 101"),
        ),
    );
    env.district_id = " d001 ".into();
    let e = one_attendance(&env);
    assert_eq!(
        (
            e.district_id.as_str(),
            e.school_id.as_str(),
            e.student_id.as_str()
        ),
        ("d001", "101", "s1")
    );
    assert_eq!(e.kafka_key(), "d001/s1");
}

#[test]
fn uppercase_ids_policy_upper_cases_every_identifier() {
    let n = policy_with(|p| p.uppercase_ids = true);
    let e = one_attendance_with(
        &n,
        &flat(
            "csv",
            Entity::Attendance,
            with(flat_event(), "student_id", json!(" ab7 ")),
        ),
    );
    assert_eq!(
        (e.district_id.as_str(), e.student_id.as_str()),
        ("D001", "AB7")
    );
    // The district's code map is still found (district ids match ignoring case).
    assert_eq!(e.category, Category::UnexcusedAbsence);
}

#[test]
fn bad_identifiers_are_rejected_by_kind() {
    let long = "9".repeat(65);
    for (field, value, kind) in [
        ("student_id", "   ", RejectKind::EmptyIdentifier),
        ("student_id", long.as_str(), RejectKind::IdentifierTooLong),
        ("school_id", "1\u{7}", RejectKind::InvalidIdentifier),
    ] {
        let r = rejected(&flat(
            "csv",
            Entity::Attendance,
            with(flat_event(), field, json!(value)),
        ));
        assert_eq!(r.kind, kind, "{field}={value:?}: {}", r.reason);
        assert!(r.reason.contains(field), "{}", r.reason);
    }
    let r = rejected(&edfi(
        Entity::Attendance,
        with(
            edfi_event(),
            "studentReference",
            json!({"studentUniqueId": "  "}),
        ),
    ));
    assert_eq!(r.kind, RejectKind::EmptyIdentifier);
    assert!(
        r.reason.contains("studentReference.studentUniqueId"),
        "{}",
        r.reason
    );
    let mut env = flat("csv", Entity::Attendance, flat_event());
    env.district_id = "d0/01".into();
    assert_eq!(rejected(&env).kind, RejectKind::InvalidIdentifier);
}

// --- deletes and key changes ------------------------------------------------------------------

fn key_values() -> serde_json::Value {
    json!({
        "attendanceEventCategoryDescriptor": "uri://ed-fi.org/AttendanceEventCategoryDescriptor#Tardy",
        "eventDate": "2021-09-01",
        "schoolId": 255901001,
        "schoolYear": 2022,
        "sessionName": "2021-2022 Fall Semester",
        "studentUniqueId": "605614"
    })
}

#[test]
fn edfi_delete_item_becomes_a_canonical_delete() {
    let env = envelope(
        "edfi",
        Entity::Attendance,
        RawOperation::Delete,
        PayloadFormat::EdfiJson,
        &json!({"id": "x", "changeVersion": 99, "keyValues": key_values()}),
    );
    let e = one_attendance(&env);
    assert_eq!(e.operation, Operation::Delete);
    assert_eq!(
        (e.school_id.as_str(), e.student_id.as_str()),
        ("255901001", "605614")
    );
    assert_eq!(
        (e.date, e.category, e.absent_fraction),
        (d(2021, 9, 1), Category::Tardy, 0.0)
    );
    assert_eq!(e.source_key, "nk-1");
    assert_eq!(e.kafka_key(), "d001/605614");
}

#[test]
fn edfi_delete_may_carry_the_whole_resource_and_skips_the_future_check() {
    let env = envelope(
        "edfi",
        Entity::Attendance,
        RawOperation::Delete,
        PayloadFormat::EdfiJson,
        &with(edfi_event(), "eventDate", json!("2022-06-01")),
    );
    let e = one_attendance(&env);
    assert_eq!(
        (e.operation, e.date, e.absent_fraction),
        (Operation::Delete, d(2022, 6, 1), 0.0)
    );
}

#[test]
fn flat_delete_needs_the_key_fields() {
    let env = envelope(
        "csv",
        Entity::Attendance,
        RawOperation::Delete,
        PayloadFormat::FlatJson,
        &flat_event(),
    );
    assert_eq!(one_attendance(&env).operation, Operation::Delete);
    let env = envelope(
        "csv",
        Entity::Attendance,
        RawOperation::Delete,
        PayloadFormat::FlatJson,
        &without(flat_event(), "date"),
    );
    let r = rejected(&env);
    assert_eq!(r.kind, RejectKind::MissingField);
    assert!(r.reason.contains("date"), "{}", r.reason);
}

#[test]
fn key_change_is_a_delete_of_the_old_key_then_an_upsert_of_the_new() {
    let mut new = key_values();
    new["attendanceEventCategoryDescriptor"] =
        json!("uri://ed-fi.org/AttendanceEventCategoryDescriptor#Excused Absence");
    let mut env = envelope(
        "edfi",
        Entity::Attendance,
        RawOperation::KeyChange,
        PayloadFormat::EdfiJson,
        &json!({"id": "x", "changeVersion": 7, "oldKeyValues": key_values(), "newKeyValues": new}),
    );
    env.old_natural_key = Some("nk-0".into());
    let out = run(&env).unwrap();
    let [Canonical::Attendance(old), Canonical::Attendance(new)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        (old.operation, old.category, old.source_key.as_str()),
        (Operation::Delete, Category::Tardy, "nk-0")
    );
    assert_eq!(
        (
            new.operation,
            new.category,
            new.absent_fraction,
            new.source_key.as_str()
        ),
        (Operation::Upsert, Category::ExcusedAbsence, 1.0, "nk-1")
    );

    // The new side may be the full resource, with oldKeyValues added.
    let mut env2 = env.clone();
    env2.payload = serde_json::to_vec(&with(
        with(edfi_event(), "eventDuration", json!(0.5)),
        "oldKeyValues",
        key_values(),
    ))
    .unwrap();
    let out = run(&env2).unwrap();
    let Canonical::Attendance(new) = &out[1] else {
        panic!()
    };
    assert_eq!(
        (new.absent_fraction, new.student_id.as_str()),
        (0.5, "604877")
    );

    env.old_natural_key = None;
    let r = rejected(&env);
    assert_eq!(r.kind, RejectKind::MissingField);
    assert!(r.reason.contains("old_natural_key"), "{}", r.reason);
}

#[test]
fn key_change_without_old_key_values_or_in_flat_json_is_rejected() {
    let mut env = envelope(
        "edfi",
        Entity::Attendance,
        RawOperation::KeyChange,
        PayloadFormat::EdfiJson,
        &edfi_event(),
    );
    env.old_natural_key = Some("old".into());
    let r = rejected(&env);
    assert_eq!(r.kind, RejectKind::MissingField);
    assert!(r.reason.contains("oldKeyValues"));
    env.payload_format = PayloadFormat::FlatJson;
    assert_eq!(rejected(&env).kind, RejectKind::UnsupportedEntityOrFormat);
}

// --- enrollment and calendar -------------------------------------------------------------------

#[test]
fn edfi_student_school_association_becomes_an_enrollment() {
    let env = edfi(
        Entity::Enrollment,
        json!({
            "schoolReference": {"schoolId": 255901001},
            "studentReference": {"studentUniqueId": "604822"},
            "entryDate": "2021-08-23",
            "exitWithdrawDate": "2022-01-14",
            "entryGradeLevelDescriptor": "uri://ed-fi.org/GradeLevelDescriptor#Ninth grade",
            "schoolYearTypeReference": {"schoolYear": 2022}
        }),
    );
    let out = run(&env).unwrap();
    let [Canonical::Enrollment(e)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        (e.school_id.as_str(), e.student_id.as_str(), e.school_year),
        ("255901001", "604822", 2022)
    );
    assert_eq!(
        (e.entry_date, e.exit_date),
        (d(2021, 8, 23), Some(d(2022, 1, 14)))
    );
    assert_eq!(e.grade_level.as_deref(), Some("Ninth grade"));
    assert_eq!(e.source_grade_level.as_deref(), Some("Ninth grade"));
    assert_eq!(
        (
            e.exit_withdraw_type.as_deref(),
            e.source_exit_withdraw_type.as_deref()
        ),
        (None, None)
    );
    assert_eq!(e.kafka_key(), "d001/604822");
}

fn enrollment_of(env: &RawEnvelope) -> Enrollment {
    match run(env).unwrap().as_slice() {
        [Canonical::Enrollment(e)] => e.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn grade_levels_become_ed_fi_code_values_from_every_source() {
    let flat_enr = |source: &str, grade: &str| {
        flat(
            source,
            Entity::Enrollment,
            json!({"school_id": "101", "student_id": "S1", "entry_date": "2021-09-01", "grade_level": grade}),
        )
    };
    for (source, grade, want) in [
        ("powerschool", "0", "Kindergarten"),
        ("powerschool", "9", "Ninth grade"),
        ("infinite_campus", "KG", "Kindergarten"),
        ("infinite_campus", "03", "Third grade"),
        ("skyward", "PK", "Prekindergarten"),
        ("skyward", "12", "Twelfth grade"),
        ("aeries", "0", "Kindergarten"),
        ("generic", "K", "Kindergarten"),
        (
            "generic",
            " Transitional Kindergarten ",
            "Transitional Kindergarten",
        ),
        ("csv", "TK", "Transitional Kindergarten"),
    ] {
        let e = enrollment_of(&flat_enr(source, grade));
        assert_eq!(e.grade_level.as_deref(), Some(want), "{source} {grade:?}");
        assert_eq!(e.source_grade_level.as_deref(), Some(grade.trim()));
    }
    // Ed-Fi: a descriptor URI of any namespace, or a state's code value.
    for (descriptor, want) in [
        (
            "uri://ed-fi.org/GradeLevelDescriptor#Kindergarten",
            "Kindergarten",
        ),
        ("uri://tx.gov/GradeLevelDescriptor#KG", "Kindergarten"),
        ("First grade", "First grade"),
    ] {
        let e = enrollment_of(&edfi(
            Entity::Enrollment,
            json!({"schoolReference": {"schoolId": 1}, "studentReference": {"studentUniqueId": "2"},
                   "entryDate": "2021-08-23", "entryGradeLevelDescriptor": descriptor}),
        ));
        assert_eq!(e.grade_level.as_deref(), Some(want), "{descriptor}");
    }
    // Blank or absent: no grade, no dead letter.
    let e = enrollment_of(&flat_enr("powerschool", "  "));
    assert_eq!((e.grade_level, e.source_grade_level), (None, None));
}

#[test]
fn an_unknown_grade_is_a_dead_letter_naming_it_and_a_district_map_fixes_it() {
    let env = flat(
        "powerschool",
        Entity::Enrollment,
        json!({"school_id": "101", "student_id": "S1", "entry_date": "2021-09-01", "grade_level": "-1"}),
    );
    let r = rejected(&env);
    assert_eq!(r.kind, RejectKind::UnknownGradeLevel);
    assert!(
        r.reason.contains("\"-1\"") && r.reason.contains("d001"),
        "{}",
        r.reason
    );
    assert_eq!(r.kind.as_str(), "unknown_grade_level");
    // A delete of such a record still applies (no canonical grade).
    let mut del = env.clone();
    del.operation = RawOperation::Delete;
    let e = enrollment_of(&del);
    assert_eq!(
        (e.grade_level.as_deref(), e.source_grade_level.as_deref()),
        (None, Some("-1"))
    );
    // After the district maps it, the same record replays into an enrollment.
    let mut r = CodeMapRegistry::with_builtins();
    r.insert(
        CodeMap::from_toml_str(
            "district_id = \"d001\"\nsource_system = \"powerschool\"\nextends = \"powerschool\"\n[grade_levels]\n\"-1\" = \"Prekindergarten\"\n",
            "d001.toml",
        )
        .unwrap(),
    )
    .unwrap();
    let n = Normalizer::try_new(r, Policy::default()).unwrap();
    let out = n.normalize(&encode_raw(&env), today()).unwrap();
    let e = decode_enrollment(&out[0].value).unwrap();
    assert_eq!(e.grade_level.as_deref(), Some("Prekindergarten"));
    assert_eq!(e.source_grade_level.as_deref(), Some("-1"));
}

#[test]
fn exit_withdraw_types_are_read_from_every_source() {
    let e = enrollment_of(&edfi(
        Entity::Enrollment,
        json!({"schoolReference": {"schoolId": 1}, "studentReference": {"studentUniqueId": "2"},
               "entryDate": "2021-08-23", "exitWithdrawDate": "2021-08-23",
               "exitWithdrawTypeDescriptor": "uri://ed-fi.org/ExitWithdrawTypeDescriptor#No show"}),
    ));
    assert_eq!(e.exit_withdraw_type.as_deref(), Some("No show"));
    assert_eq!(e.source_exit_withdraw_type.as_deref(), Some("No show"));
    let flat_exit = |code: &str| {
        flat(
            "powerschool",
            Entity::Enrollment,
            json!({"school_id": "101", "student_id": "S1", "entry_date": "2021-09-01",
                   "exit_date": "2021-09-01", "exit_withdraw_type": code}),
        )
    };
    // A canonical name is understood from any source.
    let e = enrollment_of(&flat_exit("invalid enrollment"));
    assert_eq!(e.exit_withdraw_type.as_deref(), Some("Invalid enrollment"));
    // A district-defined code the map does not know: kept, not canonical, flagged.
    let out = normalizer()
        .normalize(&encode_raw(&flat_exit("NS")), today())
        .unwrap();
    assert!(out[0].unmapped_exit_type);
    let e = decode_enrollment(&out[0].value).unwrap();
    assert_eq!(
        (
            e.exit_withdraw_type.as_deref(),
            e.source_exit_withdraw_type.as_deref()
        ),
        (None, Some("NS"))
    );
    // The district's map names it.
    let mut r = CodeMapRegistry::with_builtins();
    r.insert(
        CodeMap::from_toml_str(
            "district_id = \"d001\"\nsource_system = \"powerschool\"\nextends = \"powerschool\"\n[exit_withdraw_types]\nNS = \"No show\"\n",
            "d001.toml",
        )
        .unwrap(),
    )
    .unwrap();
    let n = Normalizer::try_new(r, Policy::default()).unwrap();
    let out = n.normalize(&encode_raw(&flat_exit("NS")), today()).unwrap();
    assert!(!out[0].unmapped_exit_type);
    let e = decode_enrollment(&out[0].value).unwrap();
    assert_eq!(e.exit_withdraw_type.as_deref(), Some("No show"));
    // No exit code: nothing, not flagged.
    let out = normalizer()
        .normalize(
            &encode_raw(&flat(
                "powerschool",
                Entity::Enrollment,
                json!({"school_id": "101", "student_id": "S1", "entry_date": "2021-09-01"}),
            )),
            today(),
        )
        .unwrap();
    assert!(!out[0].unmapped_exit_type);
}

#[test]
fn flat_enrollment_reads_subgroups_and_state_id() {
    let env = flat(
        "csv",
        Entity::Enrollment,
        json!({"school_id": "101", "student_id": "S1", "entry_date": "8/23/2021", "grade_level": "09",
               "subgroups": "ell; swd;;frl ", "state_student_id": " tx123 "}),
    );
    let Canonical::Enrollment(e) = &run(&env).unwrap()[0] else {
        panic!()
    };
    assert_eq!(e.subgroups, ["ell", "swd", "frl"]);
    assert_eq!(e.state_student_id.as_deref(), Some("tx123"));
    assert_eq!((e.exit_date, e.school_year), (None, 2022));
}

#[test]
fn exit_before_entry_is_rejected() {
    let env = flat(
        "csv",
        Entity::Enrollment,
        json!({"school_id": "101", "student_id": "S1", "entry_date": "2021-09-01", "exit_date": "2021-08-31"}),
    );
    let r = rejected(&env);
    assert_eq!(r.kind, RejectKind::ExitBeforeEntry);
    assert!(r.reason.contains("exit_date") && r.reason.contains("entry_date"));
    let same_day = flat(
        "csv",
        Entity::Enrollment,
        json!({"school_id": "101", "student_id": "S1", "entry_date": "2021-09-01", "exit_date": "2021-09-01"}),
    );
    assert!(run(&same_day).is_ok());
}

#[test]
fn instructional_day_comes_from_edfi_calendar_events() {
    for (events, want) in [
        (vec!["Instructional day"], true),
        (vec!["Make-up day"], true),
        (vec!["Holiday"], false),
        (vec!["Teacher only day", "Weather day"], false),
        (vec!["Weather day", "instructional  DAY"], true),
        (vec![], false),
    ] {
        let evs: Vec<_> = events
            .iter()
            .map(|e| json!({"calendarEventDescriptor": format!("uri://ed-fi.org/CalendarEventDescriptor#{e}")}))
            .collect();
        let env = edfi(
            Entity::Calendar,
            json!({"calendarReference": {"calendarCode": "2", "schoolId": 255901107, "schoolYear": 2022},
                   "date": "2021-09-01", "calendarEvents": evs}),
        );
        let Canonical::Calendar(c) = &run(&env).unwrap()[0] else {
            panic!()
        };
        assert_eq!(c.is_instructional, want, "{events:?}");
        assert_eq!(c.events, events);
        assert_eq!((c.calendar_code.as_str(), c.school_year), ("2", 2022));
        assert_eq!(c.kafka_key(), "d001/255901107");
    }
}

#[test]
fn flat_calendar_reads_is_instructional_or_derives_it_from_events() {
    for (row, want) in [
        (json!({"is_instructional": "N"}), Some(false)),
        (
            json!({"is_instructional": "1", "events": "Holiday"}),
            Some(true),
        ),
        (json!({"events": "Instructional day"}), Some(true)),
        (json!({"events": "Holiday;Weather day"}), Some(false)),
        (json!({}), None),
    ] {
        let mut r =
            json!({"school_id": "101", "date": "8/22/2016 00:00", "school_year": "2016-2017"});
        for (k, v) in row.as_object().unwrap() {
            r[k] = v.clone();
        }
        let result = run(&flat("csv", Entity::Calendar, r.clone()));
        match want {
            Some(w) => {
                let Canonical::Calendar(c) = &result.unwrap()[0] else {
                    panic!()
                };
                assert_eq!(c.is_instructional, w, "{r}");
                assert_eq!((c.date, c.calendar_code.as_str()), (d(2016, 8, 22), ""));
            }
            None => assert_eq!(result.unwrap_err().kind, RejectKind::MissingField, "{r}"),
        }
    }
    let r = rejected(&flat(
        "csv",
        Entity::Calendar,
        json!({"school_id": "101", "date": "2021-09-01", "is_instructional": "maybe"}),
    ));
    assert_eq!(r.kind, RejectKind::InvalidValue);
}

#[test]
fn a_section_resource_without_its_section_reference_is_not_a_daily_event() {
    // The payload alone looks like a school event; the natural key says section.
    let mut e = edfi(Entity::Attendance, edfi_event());
    e.natural_key = "studentSectionAttendanceEvents:eventDate=2021-09-01|localCourseCode=|schoolId=101|sectionIdentifier=|studentUniqueId=S1".into();
    let r = run(&e).unwrap_err();
    assert_eq!(r.kind, RejectKind::UnsupportedEntityOrFormat);
    assert!(r.reason.contains("section attendance"), "{}", r.reason);
    // A delete of one too.
    e.operation = RawOperation::Delete;
    assert_eq!(
        run(&e).unwrap_err().kind,
        RejectKind::UnsupportedEntityOrFormat
    );
    // The same payload under a school event's key normalizes.
    e.operation = RawOperation::Upsert;
    e.natural_key = "studentSchoolAttendanceEvents:x".into();
    assert_eq!(run(&e).unwrap().len(), 1);
}

// --- every reject kind ----------------------------------------------------------------------

/// One bad record per kind; the test fails if a kind has none.
fn bad_records() -> Vec<(RejectKind, Vec<u8>)> {
    let raw = |e: &RawEnvelope| encode_raw(e);
    let att = |p: serde_json::Value| raw(&edfi(Entity::Attendance, p));
    let flat_att = |p: serde_json::Value| raw(&flat("csv", Entity::Attendance, p));
    let with_payload = |bytes: &[u8]| {
        let mut e = edfi(Entity::Attendance, json!({}));
        e.payload = bytes.to_vec();
        raw(&e)
    };
    let mut unknown_schema = raw(&edfi(Entity::Attendance, edfi_event()));
    unknown_schema[3] ^= 0x55;
    vec![
        (RejectKind::EnvelopeUndecodable, b"not avro".to_vec()),
        (RejectKind::UnknownSchema, unknown_schema),
        (RejectKind::UnknownSchema, vec![0, 0, 0, 0, 7, 1, 2]),
        (
            RejectKind::UnsupportedEntityOrFormat,
            att(with(
                edfi_event(),
                "sectionReference",
                json!({"sectionIdentifier": "x"}),
            )),
        ),
        (
            RejectKind::PayloadTooLarge,
            with_payload(&vec![b' '; MAX_PAYLOAD_BYTES + 1]),
        ),
        (
            RejectKind::PayloadNotUtf8,
            with_payload(b"{\"eventDate\":\"\xc3\x28\"}"),
        ),
        (RejectKind::MalformedJson, with_payload(b"{\"eventDate\": ")),
        (RejectKind::PayloadNotObject, with_payload(b"[1, 2, 3]")),
        (
            RejectKind::MissingField,
            att(without(edfi_event(), "eventDate")),
        ),
        (
            RejectKind::WrongType,
            att(with(edfi_event(), "eventDuration", json!("one"))),
        ),
        (
            RejectKind::FieldTooLarge,
            att(with(
                edfi_event(),
                "attendanceEventReason",
                json!("x".repeat(MAX_FIELD_BYTES + 1)),
            )),
        ),
        (
            RejectKind::EmptyIdentifier,
            att(with(
                edfi_event(),
                "studentReference",
                json!({"studentUniqueId": ""}),
            )),
        ),
        (
            RejectKind::IdentifierTooLong,
            flat_att(with(flat_event(), "student_id", json!("x".repeat(100)))),
        ),
        (
            RejectKind::InvalidIdentifier,
            flat_att(with(flat_event(), "student_id", json!("a\nb"))),
        ),
        (
            RejectKind::InvalidDate,
            att(with(edfi_event(), "eventDate", json!("2021-13-01"))),
        ),
        (
            RejectKind::DateOutOfRange,
            flat_att(with(flat_event(), "date", json!("1969-09-03"))),
        ),
        (
            RejectKind::DateInFuture,
            flat_att(with(flat_event(), "date", json!("2030-01-01"))),
        ),
        (
            RejectKind::DateOutsideSchoolYear,
            flat_att(with(flat_event(), "school_year", json!("2021"))),
        ),
        (
            RejectKind::UnknownCode,
            flat_att(with(flat_event(), "code", json!("ZZ"))),
        ),
        (
            RejectKind::NoCodeMap,
            raw(&flat("aeries", Entity::Attendance, flat_event())),
        ),
        (
            RejectKind::UnknownGradeLevel,
            raw(&flat(
                "powerschool",
                Entity::Enrollment,
                json!({"school_id": "1", "student_id": "2", "entry_date": "2021-09-01", "grade_level": "-1"}),
            )),
        ),
        (
            RejectKind::InvalidDuration,
            flat_att(with(flat_event(), "duration_days", json!("most"))),
        ),
        (
            RejectKind::FractionOutOfRange,
            att(with(edfi_event(), "eventDuration", json!(-1))),
        ),
        (
            RejectKind::InvalidValue,
            flat_att(with(flat_event(), "school_year", json!("twenty"))),
        ),
        (
            RejectKind::ExitBeforeEntry,
            raw(&flat(
                "csv",
                Entity::Enrollment,
                json!({"school_id": "1", "student_id": "2", "entry_date": "2022-01-02", "exit_date": "2021-12-01"}),
            )),
        ),
        (
            RejectKind::DistrictMismatch,
            flat_att(with(flat_event(), "district_id", json!("d999"))),
        ),
        (
            RejectKind::ConflictingFields,
            att(with(
                edfi_event(),
                "sessionReference",
                json!({"schoolId": 1, "schoolYear": 2022, "sessionName": "x"}),
            )),
        ),
    ]
}

#[test]
fn every_reject_kind_is_produced_by_a_real_bad_record() {
    let n = normalizer();
    let cases = bad_records();
    for (kind, bytes) in &cases {
        let r = n.normalize(bytes, today()).unwrap_err();
        assert_eq!(r.kind, *kind, "{}", r.reason);
        assert!(r.reason.len() > 20, "reason too thin: {}", r.reason);
    }
    for kind in RejectKind::ALL {
        assert!(
            cases.iter().any(|(k, _)| k == kind),
            "no test record for {}",
            kind.as_str()
        );
    }
    assert!(RejectKind::ALL.len() >= 15);
}

#[test]
fn rejections_after_the_envelope_carry_district_and_source_key() {
    let r = normalizer()
        .normalize(
            &encode_raw(&flat(
                "csv",
                Entity::Attendance,
                with(flat_event(), "code", json!("ZZ")),
            )),
            today(),
        )
        .unwrap_err();
    assert_eq!(
        (r.district_id.as_deref(), r.source_key.as_deref()),
        (Some("d001"), Some("nk-1"))
    );
    let r = normalizer().normalize(b"junk", today()).unwrap_err();
    assert_eq!((r.district_id, r.source_key), (None, None));
}

#[test]
fn invalid_policy_is_refused_by_try_new() {
    let p = Policy {
        chronic_threshold: 2.0,
        ..Policy::default()
    };
    let err = Normalizer::try_new(registry(), p).unwrap_err();
    assert!(err.to_string().contains("policy.chronic_threshold"));
}

// --- never panics -------------------------------------------------------------------------

mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn any_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<f64>().prop_map(|f| json!(f)),
            "\\PC{0,12}".prop_map(serde_json::Value::String),
            Just(json!("2021-09-01")),
            Just(json!(
                "uri://ed-fi.org/AttendanceEventCategoryDescriptor#Tardy"
            )),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("schoolReference".to_string()),
                        Just("studentReference".to_string()),
                        Just("sessionReference".to_string()),
                        Just("schoolId".to_string()),
                        Just("studentUniqueId".to_string()),
                        Just("eventDate".to_string()),
                        Just("eventDuration".to_string()),
                        Just("keyValues".to_string()),
                        Just("oldKeyValues".to_string()),
                        Just("calendarEvents".to_string()),
                        Just("date".to_string()),
                        Just("code".to_string()),
                        "[a-z_]{1,8}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = normalizer().normalize(&bytes, today());
        }

        #[test]
        fn random_payloads_never_panic(
            payload in any_json(),
            entity in 0..3usize,
            op in 0..3usize,
            format in any::<bool>(),
        ) {
            let mut env = envelope(
                if format { "edfi" } else { "csv" },
                Entity::ALL[entity],
                RawOperation::ALL[op],
                if format { PayloadFormat::EdfiJson } else { PayloadFormat::FlatJson },
                &payload,
            );
            env.old_natural_key = Some("old".into());
            let _ = normalizer().normalize(&encode_raw(&env), today());
        }

        #[test]
        fn mutated_valid_records_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
            let mut bytes = encode_raw(&edfi(Entity::Attendance, edfi_event()));
            for (i, b) in flips {
                let i = i % bytes.len();
                bytes[i] = b;
            }
            let _ = normalizer().normalize(&bytes, today());
        }
    }
}

fn session_payload() -> serde_json::Value {
    json!({
        "sessionName": "2021-2022 Fall Semester",
        "schoolReference": {"schoolId": 255901001},
        "schoolYearTypeReference": {"schoolYear": 2022},
        "beginDate": "2021-08-23",
        "endDate": "2021-12-17",
        "totalInstructionalDays": 81
    })
}

#[test]
fn a_session_derives_school_days_only_for_a_district_configured_to_derive() {
    let env = envelope(
        "edfi",
        Entity::Calendar,
        RawOperation::Upsert,
        PayloadFormat::EdfiJson,
        &session_payload(),
    );
    // Not configured: a session is no calendar, so nothing comes out (and no error).
    let out = normalizer().normalize(&encode_raw(&env), today()).unwrap();
    assert!(out.is_empty());
    // Configured: one record per weekday, holidays not instructional, all marked derived.
    let mut policy = Policy::default();
    policy.derived_calendars.insert(
        "d001".into(),
        rollcall_policy::DerivedCalendar {
            holidays: vec!["2021-09-06".into(), "2021-11-24..2021-11-26".into()],
            ..Default::default()
        },
    );
    let n = Normalizer::try_new(registry(), policy).unwrap();
    let out = n.normalize(&encode_raw(&env), today()).unwrap();
    assert_eq!(out.len(), 85);
    let days: Vec<CalendarDay> = out
        .iter()
        .map(|o| {
            assert_eq!(o.entity, Entity::Calendar);
            assert_eq!(o.key, "d001/255901001");
            decode_calendar_day(&o.value).unwrap()
        })
        .collect();
    assert_eq!(days.iter().filter(|d| d.is_instructional).count(), 81);
    assert!(days
        .iter()
        .all(|d| d.calendar_code == "derived" && d.school_year == 2022));
    assert_eq!(
        days[0].events,
        ["Derived: weekday in session (2021-2022 Fall Semester)"]
    );
    let labor_day = days.iter().find(|x| x.date == d(2021, 9, 6)).unwrap();
    assert!(!labor_day.is_instructional);
    assert!(labor_day.events[0].starts_with("Derived: configured holiday"));
    assert_eq!(days[0].source_key, "nk-1@2021-08-23");
    // A delete cannot say which days to remove: a dead letter that says what to do.
    let del = envelope(
        "edfi",
        Entity::Calendar,
        RawOperation::Delete,
        PayloadFormat::EdfiJson,
        &session_payload(),
    );
    let r = n.normalize(&encode_raw(&del), today()).unwrap_err();
    assert_eq!(r.kind, RejectKind::UnsupportedEntityOrFormat);
    assert!(r.reason.contains("derived_calendars.d001"), "{}", r.reason);
    // Dates out of order are named.
    let mut bad = session_payload();
    bad["endDate"] = json!("2021-08-01");
    let env = envelope(
        "edfi",
        Entity::Calendar,
        RawOperation::Upsert,
        PayloadFormat::EdfiJson,
        &bad,
    );
    let r = n.normalize(&encode_raw(&env), today()).unwrap_err();
    assert_eq!(r.kind, RejectKind::InvalidDate);
}

// --- dates every stage holds ------------------------------------------------------------------

fn ps_attendance(date: &str) -> RawEnvelope {
    flat(
        "powerschool",
        Entity::Attendance,
        json!({"school_id": "101", "student_id": "S1", "date": date, "code": "A", "secondary_code": "Absent"}),
    )
}

fn enrollment_exit(exit: &str) -> RawEnvelope {
    flat(
        "csv",
        Entity::Enrollment,
        json!({"school_id": "101", "student_id": "S1", "entry_date": "2021-08-23", "exit_date": exit}),
    )
}

#[test]
fn attendance_dated_outside_what_clickhouse_holds_is_date_out_of_range_naming_field_and_value() {
    // 0000-02-29 exists (year 0 is a leap year), 1969-09-03 is before 1970-01-01, and
    // 0024-09-03 is what `9/3/24` becomes when an exporter reads it as year 24.
    for (raw, hint) in [
        ("0000-02-29", true),
        ("1969-09-03", false),
        ("0024-09-03", true),
        ("2149-06-06", false),
    ] {
        for op in [RawOperation::Upsert, RawOperation::Delete] {
            let mut env = ps_attendance(raw);
            env.operation = op;
            let r = normalizer()
                .normalize(&encode_raw(&env), today())
                .unwrap_err();
            assert_eq!(
                r.kind,
                RejectKind::DateOutOfRange,
                "{raw} {op}: {}",
                r.reason
            );
            assert!(
                r.reason.contains("field date") && r.reason.contains(raw),
                "{}",
                r.reason
            );
            assert!(r.reason.contains("1970-01-01..=2149-06-05"), "{}", r.reason);
            assert_eq!(r.reason.contains("two-digit year"), hint, "{}", r.reason);
            assert_eq!(r.source_key.as_deref(), Some("nk-1"));
        }
    }
    // Ed-Fi eventDate too.
    let r = normalizer()
        .normalize(
            &encode_raw(&edfi(
                Entity::Attendance,
                with(edfi_event(), "eventDate", json!("1969-09-03")),
            )),
            today(),
        )
        .unwrap_err();
    assert_eq!(r.kind, RejectKind::DateOutOfRange);
    assert!(r.reason.contains("field eventDate"), "{}", r.reason);
}

#[test]
fn the_first_and_last_supported_dates_pass() {
    let n = Normalizer::try_new(registry(), Policy::default()).unwrap();
    // The school year must fit too: with July starts, 1970-07-01 opens the first whole
    // school year (1971) and 2148-06-30 closes the last (2148).
    let out = run_with(&n, &ps_attendance("1970-07-01")).unwrap();
    let [Canonical::Attendance(a)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!((a.date, a.school_year), (d(1970, 7, 1), 1971));
    let cal = |date: &str| {
        flat(
            "csv",
            Entity::Calendar,
            json!({"school_id": "101", "date": date, "is_instructional": "y"}),
        )
    };
    assert!(run_with(&n, &cal("2148-06-30")).is_ok());
    for date in ["1970-03-02", "2148-07-01", "2149-06-05"] {
        let r = run_with(&n, &cal(date)).unwrap_err();
        assert_eq!(r.kind, RejectKind::DateOutOfRange, "{date}: {}", r.reason);
        assert!(r.reason.contains("school year"), "{}", r.reason);
    }
    // A calendar date outside the range names its field.
    let r = run_with(&n, &cal("1969-12-31")).unwrap_err();
    assert_eq!(r.kind, RejectKind::DateOutOfRange);
    assert!(r.reason.contains("field date is"), "{}", r.reason);
}

#[test]
fn two_digit_years_are_rejected_never_read_as_year_24() {
    let r = normalizer()
        .normalize(&encode_raw(&ps_attendance("9/3/24")), today())
        .unwrap_err();
    assert_eq!(r.kind, RejectKind::InvalidDate, "{}", r.reason);
    assert!(
        r.reason.contains("two-digit year") && r.reason.contains("9/3/24"),
        "{}",
        r.reason
    );
    // Also in enrollment dates; a four-digit M/D/YYYY still reads.
    let r = run(&enrollment_exit("6/30/22")).unwrap_err();
    assert_eq!(r.kind, RejectKind::InvalidDate);
    assert!(r.reason.contains("field exit_date"), "{}", r.reason);
    let out = run(&enrollment_exit("6/30/2022")).unwrap();
    let [Canonical::Enrollment(e)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(e.exit_date, Some(d(2022, 6, 30)));
}

#[test]
fn exit_date_9999_12_31_means_still_enrolled() {
    for exit in ["9999-12-31", "12/31/9999", "9999-12-31T00:00:00"] {
        let out = run(&enrollment_exit(exit)).unwrap();
        let [Canonical::Enrollment(e)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(e.exit_date, None, "{exit}");
        assert_eq!(e.entry_date, d(2021, 8, 23));
    }
    // Ed-Fi exitWithdrawDate the same.
    let env = edfi(
        Entity::Enrollment,
        json!({
            "schoolReference": {"schoolId": 255901001},
            "studentReference": {"studentUniqueId": "604822"},
            "entryDate": "2021-08-23",
            "exitWithdrawDate": "9999-12-31"
        }),
    );
    let out = run(&env).unwrap();
    let [Canonical::Enrollment(e)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(e.exit_date, None);
}

#[test]
fn exit_date_sentinels_are_configurable_and_other_far_dates_are_out_of_range() {
    // Default: 2999-12-31 is no sentinel, and out of range.
    let r = run(&enrollment_exit("2999-12-31")).unwrap_err();
    assert_eq!(r.kind, RejectKind::DateOutOfRange);
    assert!(
        r.reason.contains("field exit_date") && r.reason.contains("2999-12-31"),
        "{}",
        r.reason
    );
    // Configured: 2999-12-31 and 2099-12-31 mean "no exit date"; 9999-12-31 is then
    // just a date (out of range), since the list replaces the default.
    let n = normalizer().with_exit_date_sentinels(vec![d(2999, 12, 31), d(2099, 12, 31)]);
    for exit in ["2999-12-31", "2099-12-31"] {
        let out = run_with(&n, &enrollment_exit(exit)).unwrap();
        let [Canonical::Enrollment(e)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(e.exit_date, None, "{exit}");
    }
    let r = run_with(&n, &enrollment_exit("9999-12-31")).unwrap_err();
    assert_eq!(r.kind, RejectKind::DateOutOfRange);
    // Entry dates are never sentinels.
    let env = flat(
        "csv",
        Entity::Enrollment,
        json!({"school_id": "101", "student_id": "S1", "entry_date": "9999-12-31"}),
    );
    let r = run(&env).unwrap_err();
    assert_eq!(r.kind, RejectKind::DateOutOfRange);
    assert!(r.reason.contains("field entry_date"), "{}", r.reason);
}

#[test]
fn session_dates_outside_the_supported_range_are_date_out_of_range() {
    let mut policy = Policy::default();
    policy
        .derived_calendars
        .insert("d001".into(), rollcall_policy::DerivedCalendar::default());
    let n = Normalizer::try_new(registry(), policy).unwrap();
    for (field, value) in [("beginDate", "1969-09-03"), ("endDate", "2149-06-06")] {
        let mut p = session_payload();
        p[field] = json!(value);
        if field == "beginDate" {
            p["endDate"] = json!("1969-12-19");
            p["schoolYearTypeReference"] = json!({"schoolYear": 1970});
        } else {
            p["beginDate"] = json!("2149-06-01");
            p["schoolYearTypeReference"] = json!({"schoolYear": 2150});
        }
        let env = envelope(
            "edfi",
            Entity::Calendar,
            RawOperation::Upsert,
            PayloadFormat::EdfiJson,
            &p,
        );
        let r = n.normalize(&encode_raw(&env), today()).unwrap_err();
        assert_eq!(r.kind, RejectKind::DateOutOfRange, "{}", r.reason);
        assert!(r.reason.contains(field), "{}", r.reason);
    }
}

#[test]
fn the_payload_limit_is_the_one_the_kafka_limits_use() {
    assert_eq!(MAX_PAYLOAD_BYTES, rollcall_model::MAX_RAW_PAYLOAD_BYTES);
}
