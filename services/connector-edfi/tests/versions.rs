//! Versions of one Ed-Fi record from two sources compare (issue 10): the rollup engine
//! applies what was observed later, whichever source it comes from — API after an XML
//! bulk load, XML after API changes, a file dropped after the file-drop connector's
//! checkpoint was reset. The API side's versions come from the connector's own code
//! (`record_from_item` in a window based like the connector opens one); the file side's
//! from the kit's one function exactly as the file-drop connector calls it (a file's
//! base when picked + its line or element number).
//!
//! Before this scheme, an XML row was `seq << 32 | ordinal` (≥ 4,294,967,297) and an
//! API change `4·cv + 1`: every API update or delete after a bulk load was `Stale`; and
//! a file after a checkpoint reset restarted at `1 << 32`, below the files before it.

use chrono::NaiveDate;
use rollcall_connector_edfi::{record_from_item, ItemKind, WindowVersions};
use rollcall_connector_kit::{observed_now_ms, segment_base_now, source_version};
use rollcall_model::{AttendanceEvent, Category, Operation};
use rollcall_policy::Policy;
use rollcall_student_state::{Changed, RollupState};
use serde_json::value::RawValue;

const NATURAL_KEY: &str = "studentSchoolAttendanceEvents:attendanceEventCategoryDescriptor=x|eventDate=2024-09-03|schoolId=1|schoolYear=2025|sessionName=F|studentUniqueId=s1";

const ITEM: &str = r#"{"schoolReference":{"schoolId":1},"sessionReference":{"schoolId":1,"schoolYear":2025,"sessionName":"F"},"studentReference":{"studentUniqueId":"s1"},"attendanceEventCategoryDescriptor":"x","eventDate":"2024-09-03"}"#;

/// Segments of different connectors are ordered by the clock (millisecond resolution):
/// wait until it has moved on (bounded), as any two real observations are apart.
fn next_millisecond() {
    let t = observed_now_ms();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while observed_now_ms() <= t {
        assert!(
            std::time::Instant::now() < deadline,
            "the clock stands still"
        );
        std::hint::spin_loop();
    }
}

/// The API connector's version of the change read in a window `[min, max]` opened now.
fn api_change(min: i64, max: i64) -> i64 {
    let w = WindowVersions {
        min,
        max,
        base: segment_base_now(None),
    };
    let item = RawValue::from_string(ITEM.to_string()).unwrap();
    let r = record_from_item(
        ItemKind::Change,
        "studentSchoolAttendanceEvents",
        &item,
        &w,
        &|_| "d1".to_string(),
        "edfi:t",
    )
    .unwrap();
    assert_eq!(r.envelope.natural_key, NATURAL_KEY);
    r.envelope.source_version
}

/// The API connector's version of a delete at change version `cv` in `[min, max]`.
fn api_delete(min: i64, max: i64, cv: i64) -> i64 {
    let w = WindowVersions {
        min,
        max,
        base: segment_base_now(None),
    };
    let item = format!(
        r#"{{"changeVersion":{cv},"keyValues":{{"attendanceEventCategoryDescriptor":"x","eventDate":"2024-09-03","schoolId":1,"schoolYear":2025,"sessionName":"F","studentUniqueId":"s1"}}}}"#
    );
    let item = RawValue::from_string(item).unwrap();
    let r = record_from_item(
        ItemKind::Delete,
        "studentSchoolAttendanceEvents",
        &item,
        &w,
        &|_| "d1".to_string(),
        "edfi:t",
    )
    .unwrap();
    assert_eq!(r.envelope.natural_key, NATURAL_KEY);
    r.envelope.source_version
}

/// The file-drop connector's version of the element or row at `ordinal` of a file
/// picked now (`services/connector-csv`: `source_version(cur.version_base, ordinal)`).
fn file_row(ordinal: u64) -> i64 {
    source_version(segment_base_now(None), ordinal)
}

fn event(category: Category, version: i64, op: Operation) -> AttendanceEvent {
    AttendanceEvent {
        district_id: "d1".into(),
        school_id: "1".into(),
        student_id: "s1".into(),
        school_year: 2025,
        date: NaiveDate::from_ymd_opt(2024, 9, 3).unwrap(),
        category,
        absent_fraction: 1.0,
        source_code: "x".into(),
        source_secondary_code: None,
        reason: None,
        source_system: "edfi".into(),
        source_instance: "t".into(),
        source_key: NATURAL_KEY.into(),
        source_version: version,
        operation: op,
        observed_at_ms: 0,
    }
}

fn engine() -> RollupState {
    RollupState::new(
        Policy::default(),
        NaiveDate::from_ymd_opt(2025, 6, 30).unwrap(),
    )
    .unwrap()
}

#[test]
fn api_updates_and_deletes_after_an_xml_bulk_load_are_applied() {
    let mut s = engine();
    // Element 40,000 of a bulk interchange.
    let xml = file_row(40_000);
    assert_eq!(
        s.apply_attendance(&event(Category::UnexcusedAbsence, xml, Operation::Upsert)),
        Ok(Changed::Applied)
    );
    next_millisecond();
    // The ODS then corrects it (change version 12 of a young ODS) ...
    let update = api_change(0, 12);
    assert!(update > xml, "{update} vs {xml}");
    assert_eq!(
        s.apply_attendance(&event(Category::ExcusedAbsence, update, Operation::Upsert)),
        Ok(Changed::Applied),
        "an API update after the bulk load is not stale"
    );
    next_millisecond();
    // ... and deletes it in a later window.
    let delete = api_delete(13, 20, 15);
    assert_eq!(
        s.apply_attendance(&event(Category::ExcusedAbsence, delete, Operation::Delete)),
        Ok(Changed::Applied),
        "an API delete after the bulk load is not stale"
    );
}

#[test]
fn an_xml_file_after_api_changes_is_applied() {
    let mut s = engine();
    // An ODS with a long history: change version 9 million.
    let api = api_change(8_999_000, 9_000_000);
    assert_eq!(
        s.apply_attendance(&event(Category::UnexcusedAbsence, api, Operation::Upsert)),
        Ok(Changed::Applied)
    );
    next_millisecond();
    let xml = file_row(1);
    assert_eq!(
        s.apply_attendance(&event(Category::ExcusedAbsence, xml, Operation::Upsert)),
        Ok(Changed::Applied),
        "an interchange loaded after the API changes wins"
    );
    // and the older API version arriving late (a replay) stays stale
    assert_eq!(
        s.apply_attendance(&event(Category::UnexcusedAbsence, api, Operation::Upsert)),
        Ok(Changed::Stale)
    );
}

#[test]
fn a_csv_file_after_a_checkpoint_reset_is_applied() {
    let mut s = engine();
    // Line 7 of the fifth file of a connector ...
    let before = file_row(7);
    assert_eq!(
        s.apply_attendance(&event(
            Category::UnexcusedAbsence,
            before,
            Operation::Upsert
        )),
        Ok(Changed::Applied)
    );
    next_millisecond();
    // ... then the checkpoint is reset (files_done = 0): the next file is file 1 again,
    // and its row is on line 2.
    let after = file_row(2);
    assert_eq!(
        s.apply_attendance(&event(Category::ExcusedAbsence, after, Operation::Upsert)),
        Ok(Changed::Applied),
        "a file after a checkpoint reset is not older than the files before it"
    );
}
