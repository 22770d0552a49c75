//! The file-drop connector against the real Kafka with the SIS simulator's exports: one
//! full-year drop of each preset (PowerSchool, Infinite Campus, Skyward, Aeries,
//! generic), written by `csv_export::write_full_year` into the connector's inbox, is
//! ingested with exactly the row counts the simulator says the files hold. Rows the
//! simulator broke that the connector can see (an impossible date, no student, an empty
//! code column) are dead letters naming file and line; the rest reach the raw topics,
//! and read back from Kafka they normalize, except exactly the rows with unknown codes.

use std::collections::HashMap;
use std::path::PathBuf;

use rollcall_codemaps::CodeMapRegistry;
use rollcall_connector_csv::{CsvConfig, CsvConnector};
use rollcall_connector_kit::{run, RunOptions};
use rollcall_kafka::{read_topic_to_end, DeadLetterHeaders, Topics};
use rollcall_normalize::Normalizer;
use rollcall_policy::Policy;
use rollcall_sis_simulator::model::{Fact, Malformation, Op};
use rollcall_sis_simulator::{
    csv_export, generate, CorrectionStyle, CsvPreset, DistrictSpec, Feed, SimConfig, World,
};
use rollcall_testkit::{config_with_fresh_topics, secrets};
use tokio_util::sync::CancellationToken;

/// One district per preset, named like the demo's (so deploy/codemaps applies).
fn world() -> World {
    let d = |id: &str, lea_id, preset| DistrictSpec {
        id: id.into(),
        name: format!("{id} schools"),
        lea_id,
        feed: Feed::Csv(preset),
        schools: 2,
        students_per_school: 70,
        positive_attendance: false,
        corrections: CorrectionStyle::KeyChange,
    };
    generate(&SimConfig {
        seed: 23,
        malformed_rate: 0.02,
        districts: vec![
            d("northridge", 255903, CsvPreset::PowerSchool),
            d("cedar-falls", 255904, CsvPreset::InfiniteCampus),
            d("riverside", 255905, CsvPreset::Skyward),
            d("san-benito", 255906, CsvPreset::Aeries),
            d("maple-grove", 255907, CsvPreset::Generic),
        ],
        ..SimConfig::default()
    })
    .unwrap()
}

/// (attendance rows, enrollment rows, calendar rows, malformed attendance rows by kind)
/// of a district's full-year files, from the simulator's final view.
fn counts(world: &World, district: &str) -> (usize, usize, usize, HashMap<Malformation, usize>) {
    let di = world.district_index(district).unwrap();
    let (mut a, mut e, mut c) = (0, 0, 0);
    let mut bad = HashMap::new();
    for (idx, _, record, fact) in world.final_view().current() {
        if record.district != di {
            continue;
        }
        match fact {
            Fact::Attendance(_) => {
                let prev = world.log[idx].prev;
                let copies = 1 + usize::from(
                    prev.is_some_and(|p| world.log[p as usize].op == Op::Upsert(*fact)),
                );
                a += copies;
                if let Some(m) = record.malformed {
                    *bad.entry(m).or_default() += copies;
                }
            }
            Fact::Enrollment(_) => e += 1,
            Fact::CalendarDate(_) => c += 1,
        }
    }
    (a, e, c, bad)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_full_year_export_of_each_preset_is_ingested_with_the_expected_counts() {
    let t = std::time::Instant::now();
    let world = world();
    let cfg = config_with_fresh_topics("csvsim").await;
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let (mut want_att, mut want_enr, mut want_cal, mut want_dead) = (0, 0, 0, 0);
    let mut unknown_codes = 0;
    for d in &world.districts {
        let id = d.spec.id.as_str();
        let Feed::Csv(preset) = d.spec.feed else {
            unreachable!()
        };
        let inbox = tempfile::tempdir().unwrap();
        let files = csv_export::write_full_year(&world, id, None, inbox.path()).unwrap();
        let (att, enr, cal, bad) = counts(&world, id);
        // What the connector itself refuses: impossible dates, missing students, and
        // where the code's column is empty for an unknown code (Skyward's Category,
        // generic's category).
        let code_column_empty = matches!(preset, CsvPreset::Skyward | CsvPreset::Generic);
        let unknown = bad.get(&Malformation::UnknownCode).copied().unwrap_or(0);
        let dead = bad.get(&Malformation::BadDate).copied().unwrap_or(0)
            + bad.get(&Malformation::MissingStudent).copied().unwrap_or(0)
            + if code_column_empty { unknown } else { 0 };
        if !code_column_empty {
            unknown_codes += unknown;
        }
        let c: CsvConfig = serde_json::from_value(serde_json::json!({
            "district_id": id,
            "inbox": inbox.path(),
            "preset": preset.as_str(),
            "rows_per_batch": 700,
        "settle_secs": 0,
        }))
        .unwrap();
        let s = run(
            Box::new(CsvConnector::new(id, c).unwrap()),
            &cfg,
            &secrets(),
            RunOptions {
                http: None,
                stop_when_caught_up: true,
                show_progress: false,
            },
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(
            (s.records as usize, s.dead_letters as usize),
            (att + enr + cal - dead, dead),
            "{id} ({preset:?}): {att} attendance, {enr} enrollment, {cal} calendar rows, {bad:?}"
        );
        for f in [&files.attendance, &files.enrollment, &files.calendar] {
            let name = f.file_name().unwrap();
            assert!(
                inbox.path().join("done").join(name).exists(),
                "{name:?} moved to done/"
            );
        }
        assert!(!bad.is_empty(), "{id}: the export has malformed rows");
        want_att += att - dead;
        want_enr += enr;
        want_cal += cal;
        want_dead += dead;
    }

    // What is committed in Kafka: the counts, and every row normalizes but the ones
    // with an unknown code.
    let mut maps = CodeMapRegistry::with_builtins();
    maps.load_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/codemaps"))
        .unwrap();
    let normalizer = Normalizer::try_new(maps, Policy::default()).unwrap();
    let mut rejected: HashMap<String, usize> = HashMap::new();
    let mut by_system: HashMap<String, usize> = HashMap::new();
    for (entity, want) in [
        ("attendance", want_att),
        ("enrollment", want_enr),
        ("calendar", want_cal),
    ] {
        let raw = read_topic_to_end(&client, &topics.raw(entity), true).unwrap();
        assert_eq!(raw.len(), want, "{entity} raw records");
        for r in &raw {
            let env = rollcall_avro::decode_raw(&r.payload).unwrap();
            *by_system.entry(env.source_system.clone()).or_default() += 1;
            if let Err(e) = normalizer.normalize_envelope(&env, world.last_day) {
                *rejected.entry(e.kind.as_str().to_string()).or_default() += 1;
            }
        }
    }
    assert_eq!(
        rejected,
        HashMap::from([("unknown_code".to_string(), unknown_codes)]),
        "only the unknown codes are left for the normalizer to refuse"
    );
    let mut systems: Vec<&String> = by_system.keys().collect();
    systems.sort();
    assert_eq!(
        systems,
        [
            "aeries",
            "generic",
            "infinite_campus",
            "powerschool",
            "skyward"
        ]
    );
    let dl = read_topic_to_end(&client, &topics.dead_letters(), true).unwrap();
    assert_eq!(dl.len(), want_dead);
    for r in &dl {
        let h = DeadLetterHeaders::from_pairs(&r.headers);
        assert_eq!(
            (h.stage.as_str(), h.kind.as_str()),
            ("connector-csv", "csv_row_invalid")
        );
        let file = h.source_file.unwrap();
        assert!(file.starts_with("attendance_"), "{file}");
        let line: u64 = file.rsplit(':').next().unwrap().parse().unwrap();
        assert!(line >= 2);
        assert!(!r.payload.is_empty(), "the row itself is kept");
    }
    eprintln!(
        "{} raw records and {want_dead} dead letters from five presets in {:?}",
        want_att + want_enr + want_cal,
        t.elapsed()
    );
}

/// Nightly snapshots through the weeks of no-show purges and late corrections, each
/// ingested as it lands (`snapshots = true`): replaying the committed raw records by
/// source version leaves exactly the rows the simulator still shows — purged no-shows'
/// enrollments and absences were deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nightly_snapshots_delete_what_the_sis_purged() {
    let t = std::time::Instant::now();
    let world = generate(&SimConfig {
        seed: 29,
        no_show_rate: 0.15,
        malformed_rate: 0.02,
        districts: vec![DistrictSpec {
            id: "northridge".into(),
            name: "Northridge".into(),
            lea_id: 255903,
            feed: Feed::Csv(CsvPreset::PowerSchool),
            schools: 2,
            students_per_school: 40,
            positive_attendance: false,
            corrections: CorrectionStyle::KeyChange,
        }],
        ..SimConfig::default()
    })
    .unwrap();
    let cfg = config_with_fresh_topics("csvsnap").await;
    let inbox = tempfile::tempdir().unwrap();
    let first = world.districts[0].first_instructional_day;
    let mut days: Vec<chrono::NaiveDate> = (0..12)
        .map(|i| first + chrono::Duration::days(2 * i))
        .collect();
    days.push(world.last_day);
    for day in &days {
        csv_export::write_drop(&world, "northridge", None, *day, inbox.path()).unwrap();
        let c: CsvConfig = serde_json::from_value(serde_json::json!({
            "district_id": "northridge",
            "inbox": inbox.path(),
            "preset": "powerschool",
            "snapshots": true,
            "rows_per_batch": 500,
        "settle_secs": 0,
        }))
        .unwrap();
        run(
            Box::new(CsvConnector::new("northridge", c).unwrap()),
            &cfg,
            &secrets(),
            RunOptions {
                http: None,
                stop_when_caught_up: true,
                show_progress: false,
            },
            CancellationToken::new(),
        )
        .await
        .unwrap();
    }

    // Replay the committed raw records: the latest version of each natural key.
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let mut state: HashMap<String, (i64, bool)> = HashMap::new();
    let mut deletes = 0;
    for entity in ["attendance", "enrollment", "calendar"] {
        for r in read_topic_to_end(&client, &topics.raw(entity), true).unwrap() {
            let env = rollcall_avro::decode_raw(&r.payload).unwrap();
            let live = env.operation == rollcall_connector_kit::RawOperation::Upsert;
            deletes += usize::from(!live);
            let e = state
                .entry(env.natural_key.clone())
                .or_insert((i64::MIN, false));
            if env.source_version > e.0 {
                *e = (env.source_version, live);
            }
        }
    }
    let live: std::collections::BTreeSet<String> = state
        .into_iter()
        .filter(|(_, (_, l))| *l)
        .map(|(k, _)| k)
        .collect();

    // What the SIS shows at the end (rows the connector refuses never reach Kafka).
    let school = |s: u32| world.schools[s as usize].school_id.to_string();
    let student = |s: u32| world.students[s as usize].unique_id.clone();
    let mut want = std::collections::BTreeSet::new();
    for (_, _, record, fact) in world.final_view().current() {
        match fact {
            Fact::Attendance(a) => {
                if matches!(
                    record.malformed,
                    Some(Malformation::BadDate | Malformation::MissingStudent)
                ) {
                    continue;
                }
                want.insert(format!(
                    "attendance:{}|{}|{}",
                    school(a.school),
                    student(a.student),
                    a.date
                ));
            }
            Fact::Enrollment(e) => {
                want.insert(format!(
                    "enrollment:{}|{}|{}",
                    school(e.school),
                    student(e.student),
                    e.entry_date
                ));
            }
            Fact::CalendarDate(c) => {
                want.insert(format!("calendar:{}||{}", school(c.school), c.date));
            }
        }
    }
    assert_eq!(live, want, "the raw topics end with what the SIS shows");
    // Purged records a drop had shown: without their deletes they would still be live.
    let purged = world
        .log
        .iter()
        .filter(|c| c.op == Op::Delete && c.visible_on > days[0])
        .count();
    assert!(purged > 10, "{purged} purged records");
    assert!(
        deletes > 10 && deletes <= purged,
        "{deletes} deletes, {purged} purged records"
    );
    eprintln!(
        "{} nightly snapshots, {deletes} deletes, {} live keys, in {:?}",
        days.len(),
        live.len(),
        t.elapsed()
    );
}
