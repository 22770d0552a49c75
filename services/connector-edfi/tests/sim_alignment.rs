//! The Ed-Fi side of the three pieces agreeing (issue #5): every change the simulator's
//! Ed-Fi host would serve for its demo year — every version of every calendar date,
//! enrollment and attendance event, every key change and every delete — is turned into a
//! raw record by the connector's own code (`record_from_item`), through the Avro raw
//! envelope, and normalized with the built-in code maps plus `deploy/codemaps`. Each one
//! comes out as the simulator's truth (category, share of the day for absences, dates,
//! instructional days; a key change as the delete of the old key and the upsert of the
//! new one); each record the simulator broke on purpose is refused, by the connector
//! (no student: cannot be keyed) or by the normalizer (bad date, unknown code). Pure.

use std::collections::HashMap;
use std::path::PathBuf;

use rollcall_codemaps::CodeMapRegistry;
use rollcall_connector_edfi::{record_from_item, ItemKind, WindowVersions};
use rollcall_model::{Canonical, Category, Operation};
use rollcall_normalize::Normalizer;
use rollcall_policy::Policy;
use rollcall_sis_simulator::edfi::json::{key_values, resource_json};
use rollcall_sis_simulator::model::{Fact, Malformation, Op};
use rollcall_sis_simulator::{generate, Feed, SimConfig, World};
use serde_json::json;
use serde_json::value::RawValue;

fn category(c: rollcall_sis_simulator::Category) -> Category {
    use rollcall_sis_simulator::Category as S;
    match c {
        S::Present => Category::Present,
        S::Tardy => Category::Tardy,
        S::EarlyDeparture => Category::EarlyDeparture,
        S::ExcusedAbsence => Category::ExcusedAbsence,
        S::UnexcusedAbsence => Category::UnexcusedAbsence,
        S::OutOfSchoolSuspension => Category::OutOfSchoolSuspension,
        S::InSchoolSuspension => Category::InSchoolSuspension,
    }
}

fn normalizer() -> Normalizer {
    let mut maps = CodeMapRegistry::with_builtins();
    maps.load_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/codemaps"))
        .expect("deploy/codemaps loads");
    Normalizer::try_new(maps, Policy::default()).unwrap()
}

fn raw(v: &serde_json::Value) -> Box<RawValue> {
    RawValue::from_string(v.to_string()).unwrap()
}

/// Checks a canonical record against the simulator's fact. `full`: the record was read
/// from the full resource (a key change's upsert, read from `newKeyValues` alone, has the
/// code map's share of the day until the full record that follows corrects it).
fn assert_is(world: &World, c: &Canonical, fact: &Fact, full: bool, ctx: &str) {
    let school = |s: u32| world.schools[s as usize].school_id.to_string();
    let student = |s: u32| world.students[s as usize].unique_id.clone();
    match (c, fact) {
        (Canonical::Attendance(e), Fact::Attendance(a)) => {
            assert_eq!(
                (&e.school_id, &e.student_id, e.date, e.category),
                (
                    &school(a.school),
                    &student(a.student),
                    a.date,
                    category(a.category)
                ),
                "{ctx}"
            );
            if full && e.operation == Operation::Upsert && a.category.counts_absent() {
                assert_eq!(
                    (e.absent_fraction * 1000.0).round() as u16,
                    a.absent_milli,
                    "{ctx}: share of the day"
                );
            }
        }
        (Canonical::Enrollment(e), Fact::Enrollment(f)) => {
            assert_eq!(
                (&e.school_id, &e.student_id, e.entry_date),
                (&school(f.school), &student(f.student), f.entry_date),
                "{ctx}"
            );
            if full && e.operation == Operation::Upsert {
                assert_eq!(e.exit_date, f.exit_date, "{ctx}: inclusive exit date");
                assert_eq!(e.grade_level.as_deref(), Some(f.grade.edfi_name()), "{ctx}");
                assert_eq!(
                    e.exit_withdraw_type.as_deref(),
                    f.exit_type.map(|t| t.edfi_name()),
                    "{ctx}: exit/withdraw type"
                );
            }
        }
        (Canonical::Calendar(d), Fact::CalendarDate(f)) => {
            assert_eq!((&d.school_id, d.date), (&school(f.school), f.date), "{ctx}");
            if full && d.operation == Operation::Upsert {
                assert_eq!(d.is_instructional, f.event.is_instructional(), "{ctx}");
                assert_eq!(d.events, vec![f.event.edfi_name().to_string()], "{ctx}");
            }
        }
        other => panic!("{ctx}: entity mismatch {other:?}"),
    }
    assert_eq!(
        c.district_id(),
        world.district_of_school(fact.school()).spec.id
    );
}

#[test]
fn every_change_of_the_demo_ed_fi_districts_normalizes_to_the_simulators_truth() {
    let start = std::time::Instant::now();
    let world = generate(&SimConfig::demo(7)).unwrap();
    let n = normalizer();
    let district_of_school: HashMap<String, String> = world
        .schools
        .iter()
        .map(|s| {
            (
                s.school_id.to_string(),
                world.districts[s.district as usize].spec.id.clone(),
            )
        })
        .collect();
    let district_of = |school: &str| district_of_school[school].clone();
    let today = world.last_day;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut refused: HashMap<Malformation, usize> = HashMap::new();
    let mut malformed_records: HashMap<Malformation, usize> = HashMap::new();

    let normalize = |rec: rollcall_connector_kit::RawRecord| {
        let bytes = rollcall_avro::encode_raw(&rec.envelope);
        let env = rollcall_avro::decode_raw(&bytes).unwrap();
        n.normalize_envelope(&env, today)
    };

    for (idx, c) in world.log.iter().enumerate() {
        let record = &world.records[c.record as usize];
        if world.districts[record.district as usize].spec.feed != Feed::Edfi {
            continue;
        }
        let resource = record.resource.path();
        let ctx = format!("cv {} ({resource})", c.cv);
        match &c.op {
            Op::Upsert(fact) => {
                if world.is_key_change(idx) {
                    let old = world.previous_fact(idx).unwrap();
                    let item = json!({
                        "id": world.edfi_id(c.record),
                        "changeVersion": c.cv,
                        "oldKeyValues": key_values(&world, old),
                        "newKeyValues": key_values(&world, fact),
                    });
                    let rec = record_from_item(
                        ItemKind::KeyChange,
                        resource,
                        &raw(&item),
                        &WindowVersions {
                            min: 0,
                            max: c.cv as i64,
                            base: 0,
                        },
                        &district_of,
                        "edfi:sim",
                    )
                    .unwrap_or_else(|e| panic!("{ctx}: key change: {e}"));
                    let out = normalize(rec).unwrap_or_else(|r| panic!("{ctx}: key change: {r}"));
                    assert_eq!(out.len(), 2, "{ctx}: delete old + upsert new");
                    assert_eq!(operation(&out[0]), Operation::Delete);
                    assert_eq!(operation(&out[1]), Operation::Upsert);
                    assert_is(&world, &out[0], old, false, &ctx);
                    assert_is(&world, &out[1], fact, false, &ctx);
                    *counts.entry("key change").or_default() += 1;
                }
                if c.prev.is_none() {
                    if let Some(m) = record.malformed {
                        *malformed_records.entry(m).or_default() += 1;
                    }
                }
                let item = resource_json(&world, idx);
                let rec = record_from_item(
                    ItemKind::Change,
                    resource,
                    &raw(&item),
                    &WindowVersions {
                        min: 0,
                        max: c.cv as i64,
                        base: 0,
                    },
                    &district_of,
                    "edfi:sim",
                );
                let rec = match (rec, record.malformed) {
                    (Ok(r), _) => r,
                    (Err(e), Some(Malformation::MissingStudent)) => {
                        assert!(e.contains("studentReference"), "{ctx}: {e}");
                        *refused.entry(Malformation::MissingStudent).or_default() += 1;
                        continue;
                    }
                    (Err(e), _) => panic!("{ctx}: the connector cannot key a good item: {e}"),
                };
                match (normalize(rec), record.malformed) {
                    (Ok(out), None) => {
                        assert_eq!(out.len(), 1, "{ctx}");
                        assert_is(&world, &out[0], fact, true, &ctx);
                        *counts.entry("upsert").or_default() += 1;
                    }
                    (Err(r), Some(m)) => {
                        let want = match m {
                            Malformation::BadDate => "invalid_date",
                            Malformation::UnknownCode => "unknown_code",
                            Malformation::MissingStudent => "missing_field",
                        };
                        assert_eq!(r.kind.as_str(), want, "{ctx}: {r}");
                        *refused.entry(m).or_default() += 1;
                    }
                    (Ok(out), Some(m)) => {
                        panic!("{ctx}: malformed ({m:?}) but normalized: {out:?}")
                    }
                    (Err(r), None) => panic!("{ctx}: refused: {r}"),
                }
            }
            Op::Delete => {
                let old = world.previous_fact(idx).unwrap();
                assert!(record.malformed.is_none());
                let item = json!({
                    "id": world.edfi_id(c.record),
                    "changeVersion": c.cv,
                    "keyValues": key_values(&world, old),
                });
                let rec = record_from_item(
                    ItemKind::Delete,
                    resource,
                    &raw(&item),
                    &WindowVersions {
                        min: 0,
                        max: c.cv as i64,
                        base: 0,
                    },
                    &district_of,
                    "edfi:sim",
                )
                .unwrap_or_else(|e| panic!("{ctx}: delete: {e}"));
                let out = normalize(rec).unwrap_or_else(|r| panic!("{ctx}: delete: {r}"));
                assert_eq!(out.len(), 1, "{ctx}");
                assert_eq!(operation(&out[0]), Operation::Delete);
                assert_is(&world, &out[0], old, false, &ctx);
                *counts.entry("delete").or_default() += 1;
            }
        }
    }
    assert_eq!(
        refused, malformed_records,
        "every malformed record refused, by kind"
    );
    assert!(malformed_records.values().sum::<usize>() > 10);
    assert!(counts["upsert"] > 300_000, "{counts:?}");
    assert!(counts["key change"] > 100, "{counts:?}");
    assert!(counts["delete"] > 100, "{counts:?}");
    eprintln!("{counts:?}, refused {refused:?}, in {:?}", start.elapsed());
}

fn operation(c: &Canonical) -> Operation {
    match c {
        Canonical::Attendance(e) => e.operation,
        Canonical::Enrollment(e) => e.operation,
        Canonical::Calendar(e) => e.operation,
    }
}
