//! Shared by the Ed-Fi acceptance tests: a simulator host on 127.0.0.1:0, connector
//! configs, running the connector against the real Kafka, and what the simulator's change
//! log says each change window must publish.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rollcall_config::Config;
use rollcall_connector_edfi::{natural_key, EdfiConfig, EdfiConnector};
use rollcall_connector_kit::{run, RunOptions, RunSummary};
use rollcall_kafka::{read_topic_to_end, DeadLetterHeaders, Topics};
use rollcall_model::{RawEnvelope, RawOperation};
use rollcall_sis_simulator::edfi::json::{key_values, resource_json};
use rollcall_sis_simulator::edfi::{EdfiServer, ServerOptions, SimHandle};
use rollcall_sis_simulator::model::{Fact, Malformation, Op};
use rollcall_sis_simulator::{generate, CorrectionStyle, DistrictSpec, Feed, SimConfig, World};
use rollcall_testkit::secrets;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

/// Two Ed-Fi districts on one host (a state ODS): one with key-change corrections, one
/// positive-attendance with delete + create corrections. Small enough for many runs.
pub fn two_district_world(seed: u64) -> Arc<World> {
    let district = |id: &str, lea_id, schools, students, positive, corrections| DistrictSpec {
        id: id.into(),
        name: format!("{id} ISD"),
        lea_id,
        feed: Feed::Edfi,
        schools,
        students_per_school: students,
        positive_attendance: positive,
        corrections,
    };
    let cfg = SimConfig {
        seed,
        malformed_rate: 0.01,
        no_show_rate: 0.05,
        districts: vec![
            district("d-kc", 255901, 2, 40, false, CorrectionStyle::KeyChange),
            district("d-dc", 255902, 1, 25, true, CorrectionStyle::DeleteCreate),
        ],
        ..SimConfig::default()
    };
    Arc::new(generate(&cfg).unwrap())
}

/// Serves `world` on 127.0.0.1:0; returns the base URL and the clock/fault handle.
pub async fn serve(world: Arc<World>, opts: ServerOptions) -> (String, SimHandle) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = EdfiServer::new(world, opts);
    let handle = server.handle();
    tokio::spawn(server.serve(listener));
    (format!("http://{addr}"), handle)
}

/// school id → district id, for every school of the world.
pub fn school_districts(world: &World) -> BTreeMap<String, String> {
    world
        .schools
        .iter()
        .map(|s| {
            (
                s.school_id.to_string(),
                world.districts[s.district as usize].spec.id.clone(),
            )
        })
        .collect()
}

/// The connector's `[connectors.<name>]` section for the simulator host (the secret in a
/// file, as a container would mount it). `extra` overrides or adds keys.
pub fn edfi_section(
    world: &World,
    base_url: &str,
    secret_file: &std::path::Path,
    extra: Value,
) -> Value {
    let mut v = serde_json::json!({
        "base_url": base_url,
        "district_id": world.districts[0].spec.id,
        "school_districts": school_districts(world),
        "client_id": "rollcall",
        "client_secret_file": secret_file,
        "page_size": 50,
        "requests_per_second": 10_000,
        "poll_interval_secs": 1,
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

pub fn secret_file() -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), "rollcall-secret\n").unwrap();
    f
}

/// Runs the connector named `name` until it is caught up.
pub async fn run_once(cfg: &Config, name: &str, section: &Value) -> RunSummary {
    let ecfg: EdfiConfig = serde_json::from_value(section.clone()).unwrap();
    let secret = std::fs::read_to_string(ecfg.client_secret_file.as_ref().unwrap())
        .unwrap()
        .trim()
        .to_string();
    let connector = EdfiConnector::new(name, ecfg, secret).unwrap();
    run(
        Box::new(connector),
        cfg,
        &secrets(),
        RunOptions {
            http: None,
            stop_when_caught_up: true,
            show_progress: false,
        },
        CancellationToken::new(),
    )
    .await
    .expect("connector run")
}

/// One published raw record, as compared: (entity, operation, natural key, old natural
/// key, source version, Kafka key, district).
pub type Pub = (String, String, String, Option<String>, i64, String, String);

fn op_name(op: RawOperation) -> String {
    format!("{op:?}")
}

/// Every committed raw record of the three raw topics.
pub fn committed_raw(cfg: &Config) -> Vec<(Pub, RawEnvelope)> {
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let mut out = Vec::new();
    for entity in ["attendance", "enrollment", "calendar"] {
        for r in read_topic_to_end(&client, &topics.raw(entity), true).unwrap() {
            let env = rollcall_avro::decode_raw(&r.payload).unwrap();
            assert_eq!(env.entity.as_str(), entity);
            let key = String::from_utf8(r.key.clone().unwrap_or_default()).unwrap();
            out.push((
                (
                    entity.to_string(),
                    op_name(env.operation),
                    env.natural_key.clone(),
                    env.old_natural_key.clone(),
                    env.source_version,
                    key,
                    env.district_id.clone(),
                ),
                env,
            ));
        }
    }
    out
}

/// Committed dead letters of the connector stage.
pub fn committed_dead_letters(cfg: &Config) -> Vec<DeadLetterHeaders> {
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    read_topic_to_end(&client, &topics.dead_letters(), true)
        .unwrap()
        .iter()
        .map(|r| DeadLetterHeaders::from_pairs(&r.headers))
        .collect()
}

fn entity_of(resource: &str) -> &'static str {
    match resource {
        "calendarDates" => "calendar",
        "studentSchoolAssociations" => "enrollment",
        _ => "attendance",
    }
}

/// The simulator's key values of the record as the change at `idx` serves it (a
/// malformed record's key carries its broken date or code, as its item does).
fn served_key(world: &World, idx: usize, fact: &Fact) -> Map<String, Value> {
    let mut kv = key_values(world, fact).as_object().unwrap().clone();
    if world.records[world.log[idx].record as usize]
        .malformed
        .is_some()
    {
        let item = resource_json(world, idx);
        for k in ["eventDate", "attendanceEventCategoryDescriptor"] {
            kv.insert(k.into(), item[k].clone());
        }
    }
    kv
}

fn kafka_key(world: &World, fact: &Fact) -> String {
    let school = fact.school();
    let district = &world.district_of_school(school).spec.id;
    match fact {
        Fact::CalendarDate(_) => format!("{district}/{}", world.schools[school as usize].school_id),
        Fact::Enrollment(e) => format!(
            "{district}/{}",
            world.students[e.student as usize].unique_id
        ),
        Fact::Attendance(a) => format!(
            "{district}/{}",
            world.students[a.student as usize].unique_id
        ),
    }
}

/// What the Ed-Fi sync of the change-version window `[min, max]` (read while the host's
/// newest version is `max`) must publish, from the simulator's change log alone: key
/// changes (version base + 4·(cv − min)), then the current records whose latest change
/// is in the window (base + 4·(max − min) + 1), then deletes (base + 4·(cv − min) + 2).
/// Versions here are relative to the window's base (taken from the clock when the
/// window opened; see [`rebase_windows`]). The initial load (`min` = 0) reads changes
/// only. Items without a student (malformed) cannot be keyed: they are counted in the
/// second value, as connector dead letters.
pub fn expected_window(world: &World, served: &[&str], min: u64, max: u64) -> (Vec<Pub>, usize) {
    let initial = min == 0;
    let mut out = Vec::new();
    let mut dead = 0;
    let is_served = |idx: usize| {
        let r = &world.records[world.log[idx].record as usize];
        served.contains(&world.districts[r.district as usize].spec.id.as_str())
    };
    let district_of = |fact: &Fact| world.district_of_school(fact.school()).spec.id.clone();
    for cv in min.max(1)..=max {
        let idx = (cv - 1) as usize;
        if !is_served(idx) {
            continue;
        }
        let c = &world.log[idx];
        let record = &world.records[c.record as usize];
        let resource = record.resource.path();
        match &c.op {
            Op::Upsert(fact) => {
                if !initial && world.is_key_change(idx) {
                    let old = world.previous_fact(idx).unwrap();
                    let old_kv = key_values(world, old).as_object().unwrap().clone();
                    let new_kv = key_values(world, fact).as_object().unwrap().clone();
                    out.push((
                        entity_of(resource).into(),
                        op_name(RawOperation::KeyChange),
                        natural_key(resource, &new_kv),
                        Some(natural_key(resource, &old_kv)),
                        4 * (cv - min) as i64,
                        kafka_key(world, fact),
                        district_of(fact),
                    ));
                }
                let latest = c.next_cv.is_none_or(|n| n > max);
                if latest {
                    if record.malformed == Some(Malformation::MissingStudent) {
                        dead += 1;
                        continue;
                    }
                    out.push((
                        entity_of(resource).into(),
                        op_name(RawOperation::Upsert),
                        natural_key(resource, &served_key(world, idx, fact)),
                        None,
                        4 * (max - min) as i64 + 1,
                        kafka_key(world, fact),
                        district_of(fact),
                    ));
                }
            }
            Op::Delete => {
                if initial {
                    continue;
                }
                let old = world.previous_fact(idx).unwrap();
                let kv = key_values(world, old).as_object().unwrap().clone();
                out.push((
                    entity_of(resource).into(),
                    op_name(RawOperation::Delete),
                    natural_key(resource, &kv),
                    None,
                    4 * (cv - min) as i64 + 2,
                    kafka_key(world, old),
                    district_of(old),
                ));
            }
        }
    }
    (out, dead)
}

/// The published records with versions relative to their window's base, for comparing
/// with [`expected_window`]s (`windows`: each window's expected records, in the order
/// the windows were read). Every version of a window lies above every version of the
/// one before (the kit's segment bases), so sorted by version the records fall into
/// the windows by their counts; a window's base is its lowest version minus its lowest
/// expected offset (if anything else differs, the comparison that follows fails).
/// Asserts the bases grow, and that each is at least `floors[i]` when given.
pub fn rebase_windows(mut pubs: Vec<Pub>, windows: &[Vec<Pub>], floors: &[i64]) -> Vec<Pub> {
    pubs.sort_by_key(|p| p.4);
    let mut out = Vec::with_capacity(pubs.len());
    let mut rest = pubs.as_slice();
    let mut last_base = i64::MIN;
    for (i, w) in windows.iter().enumerate() {
        let n = w.len().min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        if chunk.is_empty() {
            continue;
        }
        let min_offset = w.iter().map(|p| p.4).min().unwrap();
        let base = chunk[0].4 - min_offset;
        assert!(
            base > last_base,
            "window {i}: base {base} not above {last_base}"
        );
        if let Some(&floor) = floors.get(i) {
            assert!(
                base >= floor,
                "window {i}: base {base} below the clock when it was read ({floor})"
            );
        }
        last_base = base;
        out.extend(chunk.iter().cloned().map(|mut p| {
            p.4 -= base;
            p
        }));
    }
    out.extend(rest.iter().cloned());
    out
}

/// Asserts the committed raw records are exactly `expected` (as multisets): nothing
/// missing, nothing twice, nothing else.
pub fn assert_exactly(mut got: Vec<Pub>, mut expected: Vec<Pub>, what: &str) {
    got.sort();
    expected.sort();
    if got != expected {
        let count = |v: &[Pub]| {
            let mut m: HashMap<Pub, i64> = HashMap::new();
            for p in v {
                *m.entry(p.clone()).or_default() += 1;
            }
            m
        };
        let (g, e) = (count(&got), count(&expected));
        let extra: Vec<_> = g
            .iter()
            .filter(|(p, n)| e.get(*p).copied().unwrap_or(0) < **n)
            .take(5)
            .collect();
        let missing: Vec<_> = e
            .iter()
            .filter(|(p, n)| g.get(*p).copied().unwrap_or(0) < **n)
            .take(5)
            .collect();
        panic!(
            "{what}: {} published, {} expected; extra or duplicated (first 5): {extra:#?}; missing (first 5): {missing:#?}",
            got.len(),
            expected.len()
        );
    }
}

/// Replays raw records by source version (key changes as delete old + upsert new) and
/// returns the natural keys left live.
pub fn live_keys(pubs: &[Pub]) -> std::collections::BTreeSet<String> {
    let mut state: HashMap<String, (i64, bool)> = HashMap::new();
    let mut set = |k: &str, v: i64, live: bool| {
        let e = state.entry(k.to_string()).or_insert((i64::MIN, false));
        if v >= e.0 {
            *e = (v, live);
        }
    };
    for (_, op, key, old, v, _, _) in pubs {
        match op.as_str() {
            "Upsert" => set(key, *v, true),
            "Delete" => set(key, *v, false),
            _ => {
                set(
                    old.as_deref().expect("a key change has the old key"),
                    *v,
                    false,
                );
                set(key, *v, true);
            }
        }
    }
    state
        .into_iter()
        .filter(|(_, (_, live))| *live)
        .map(|(k, _)| k)
        .collect()
}

/// The natural keys of every current record of `served` districts at the end of `day`
/// (items without a student excluded: they never reach the raw topics).
pub fn current_keys(
    world: &World,
    served: &[&str],
    day: chrono::NaiveDate,
) -> std::collections::BTreeSet<String> {
    let view = world.visible_through(day);
    view.current()
        .filter(|(_, _, r, _)| {
            served.contains(&world.districts[r.district as usize].spec.id.as_str())
                && r.malformed != Some(Malformation::MissingStudent)
        })
        .map(|(idx, _, r, f)| natural_key(r.resource.path(), &served_key(world, idx, f)))
        .collect()
}
