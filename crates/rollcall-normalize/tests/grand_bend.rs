//! The Grand Bend ISD sample (Ed-Fi Data Standard samples, 2021-22): every one of its
//! 1,917 school attendance events normalizes, in Ed-Fi and in flat form, to the
//! categories the sample's README counts.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rollcall_avro::decode_attendance_event;
use rollcall_codemaps::CodeMapRegistry;
use rollcall_model::Category;
use rollcall_normalize::Normalizer;
use rollcall_policy::{absent_days, Policy};

mod support;
use support::grand_bend;

fn normalize_all(
    make: fn(&grand_bend::Row) -> rollcall_model::RawEnvelope,
) -> Vec<rollcall_model::AttendanceEvent> {
    let n = Normalizer::try_new(CodeMapRegistry::with_builtins(), Policy::default()).unwrap();
    let today = NaiveDate::from_ymd_opt(2022, 6, 30).unwrap();
    grand_bend::rows()
        .iter()
        .map(|row| {
            let raw = rollcall_avro::encode_raw(&make(row));
            let out = n
                .normalize(&raw, today)
                .unwrap_or_else(|r| panic!("{} {}: {r}", row.student_id, row.date));
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].key, format!("255901/{}", row.student_id));
            decode_attendance_event(&out[0].value).unwrap()
        })
        .collect()
}

fn counts(events: &[rollcall_model::AttendanceEvent]) -> BTreeMap<Category, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(e.category).or_default() += 1;
    }
    m
}

#[test]
fn every_grand_bend_event_normalizes_from_edfi_json() {
    let events = normalize_all(grand_bend::edfi);
    assert_eq!(events.len(), 1917);
    // 1,077 excused + 1 partial (excused, half a day), 773 unexcused, 66 tardy.
    assert_eq!(
        counts(&events),
        BTreeMap::from([
            (Category::Tardy, 66),
            (Category::ExcusedAbsence, 1078),
            (Category::UnexcusedAbsence, 773),
        ])
    );
    let partial: Vec<_> = events
        .iter()
        .filter(|e| e.source_code.ends_with("#Partial"))
        .collect();
    assert_eq!(partial.len(), 1);
    assert_eq!(partial[0].absent_fraction, 0.5);
    assert!(events
        .iter()
        .filter(|e| e.category == Category::Tardy)
        .all(|e| e.absent_fraction == 0.0));
    assert!(events.iter().all(|e| e.school_year == 2022));
    let p = Policy::default();
    let days: f64 = events
        .iter()
        .map(|e| absent_days(e.category, e.absent_fraction, &p))
        .sum();
    assert_eq!(days, 1850.5);
}

#[test]
fn every_grand_bend_event_normalizes_from_flat_rows_alike() {
    let edfi = normalize_all(grand_bend::edfi);
    let flat = normalize_all(grand_bend::flat);
    assert_eq!(counts(&flat), counts(&edfi));
    for (a, b) in edfi.iter().zip(&flat) {
        assert_eq!(
            (
                &a.school_id,
                &a.student_id,
                a.date,
                a.category,
                a.absent_fraction
            ),
            (
                &b.school_id,
                &b.student_id,
                b.date,
                b.category,
                b.absent_fraction
            )
        );
    }
}
