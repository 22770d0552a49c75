//! Throughput of `Normalizer::normalize` on a realistic mix: the Grand Bend sample's
//! 1,917 attendance events as Ed-Fi resources and as PowerSchool-style flat rows
//! (interleaved), plus enrollments, calendar dates and 1% bad records that are rejected.
//! Criterion reports elements/s = raw records/s on one core. Target ≥ 300,000/s.

use std::hint::black_box;

use chrono::NaiveDate;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rollcall_avro::encode_raw;
use rollcall_codemaps::CodeMapRegistry;
use rollcall_model::{Entity, PayloadFormat, RawEnvelope, RawOperation};
use rollcall_normalize::Normalizer;
use rollcall_policy::Policy;
use serde_json::json;

#[path = "../tests/support/grand_bend.rs"]
mod grand_bend;

fn other(entity: Entity, format: PayloadFormat, payload: serde_json::Value) -> Vec<u8> {
    encode_raw(&RawEnvelope {
        source_system: if format == PayloadFormat::EdfiJson {
            "edfi"
        } else {
            "powerschool"
        }
        .into(),
        source_instance: "bench".into(),
        district_id: grand_bend::DISTRICT.into(),
        entity,
        operation: RawOperation::Upsert,
        natural_key: "k".into(),
        old_natural_key: None,
        source_version: 1,
        observed_at_ms: 0,
        payload_format: format,
        payload: serde_json::to_vec(&payload).unwrap(),
    })
}

fn workload() -> Vec<Vec<u8>> {
    let mut values = grand_bend::mixed_raw_values();
    let n = values.len();
    for i in 0..n / 20 {
        values.push(other(
            Entity::Enrollment,
            PayloadFormat::EdfiJson,
            json!({"schoolReference": {"schoolId": 255901001}, "studentReference": {"studentUniqueId": format!("6{i:05}")},
                   "entryDate": "2021-08-23", "entryGradeLevelDescriptor": "uri://ed-fi.org/GradeLevelDescriptor#Ninth grade",
                   "schoolYearTypeReference": {"schoolYear": 2022}}),
        ));
        values.push(other(
            Entity::Calendar,
            PayloadFormat::EdfiJson,
            json!({"calendarReference": {"calendarCode": "1", "schoolId": 255901001, "schoolYear": 2022},
                   "date": "2021-09-01", "calendarEvents": [{"calendarEventDescriptor": "uri://ed-fi.org/CalendarEventDescriptor#Instructional day"}]}),
        ));
    }
    for _ in 0..n / 100 {
        values.push(other(
            Entity::Attendance,
            PayloadFormat::FlatJson,
            json!({"school_id": "1", "student_id": "2", "date": "2022-01-10", "code": "ZZ", "secondary_code": "Absent"}),
        ));
    }
    values
}

fn bench(c: &mut Criterion) {
    let normalizer =
        Normalizer::try_new(CodeMapRegistry::with_builtins(), Policy::default()).unwrap();
    let today = NaiveDate::from_ymd_opt(2022, 6, 30).unwrap();
    let values = workload();
    let ok = values
        .iter()
        .filter(|v| normalizer.normalize(v, today).is_ok())
        .count();
    assert!(
        ok >= values.len() * 98 / 100,
        "{ok} of {} normalized",
        values.len()
    );

    let rows = grand_bend::rows();
    let edfi_only: Vec<Vec<u8>> = rows
        .iter()
        .map(|r| encode_raw(&grand_bend::edfi(r)))
        .collect();
    let flat_only: Vec<Vec<u8>> = rows
        .iter()
        .map(|r| encode_raw(&grand_bend::flat(r)))
        .collect();

    let mut g = c.benchmark_group("normalize");
    for (name, set) in [
        ("mixed_edfi_and_flat", &values),
        ("edfi_attendance", &edfi_only),
        ("flat_attendance", &flat_only),
    ] {
        g.throughput(Throughput::Elements(set.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut events = 0usize;
                for v in set {
                    if let Ok(out) = normalizer.normalize(black_box(v), today) {
                        events += out.len();
                    }
                }
                black_box(events)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
