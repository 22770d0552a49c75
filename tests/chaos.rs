//! Chaos test: simulated districts (two Ed-Fi API districts, two CSV districts, with the
//! simulator's deliberate malformations) through the real pipeline, every service a
//! separate process — the Ed-Fi and CSV connector binaries, `rollcall-normalizer`,
//! `rollcall-rollup` — against a private Kafka broker and ClickHouse server that this
//! test starts (other ports, its own `ROLLCALL_LOCAL_DIR`), so that restarting them does
//! not disturb the shared services other tests use.
//!
//! While the simulated school year is replayed, connector, normalizer and rollup
//! processes are SIGKILLed (and restarted) at seeded random moments, the Kafka broker is
//! restarted once and ClickHouse once. Then, after a bounded wait for the pipeline to
//! catch up, every BI view (student, school, school by grade, district, state, trend)
//! must equal the simulator's expected metrics exactly, the dead-letter topic must hold
//! the simulator's deliberate malformations and nothing else, and no process may have
//! exited on its own.
//!
//! `ROLLCALL_CHAOS_SEED=<n>` replays a run (the seed decides the world and the schedule);
//! `ROLLCALL_CHAOS=long` runs more students, more kills and a longer load. See
//! docs/chaos.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use clickhouse::Row;
use rollcall_config::{Config, Secrets};
use rollcall_kafka::{read_topic_to_end, DeadLetterHeaders, Topics};
use rollcall_sis_simulator::edfi::{EdfiServer, ServerOptions};
use rollcall_sis_simulator::{
    csv_export, expected_metrics, expected_metrics_at, generate, CorrectionStyle, Counts,
    CsvPreset, DistrictSpec, Expected, Feed, Malformation, SimConfig, World,
};
use rollcall_testkit::procs::{
    log_tail, repo_root, service_binaries, LocalStack, ProcSpec, SeededRng, StackOptions,
    Supervised,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

const SECRET_VAR: &str = "ROLLCALL_CHAOS_EDFI_SECRET";
const SECRET: &str = "rollcall-secret";
/// The service binaries run, in this order (`bins[i]`).
const SERVICES: [&str; 4] = [
    "rollcall-normalizer",
    "rollcall-rollup",
    "rollcall-connector-edfi",
    "rollcall-connector-csv",
];

/// How big a run is.
#[derive(Debug, Clone, Copy)]
struct Scale {
    name: &'static str,
    schools: u32,
    students_per_school: u32,
    /// SIGKILLs of service processes during the load.
    kills: u32,
    /// Wall time over which the simulated year is replayed.
    load: Duration,
    /// Simulated days per step of the Ed-Fi host's clock.
    step_days: i64,
    /// CSV districts drop a year-to-date export every this many simulated days.
    csv_every_days: i64,
    /// Bound on the wait for the pipeline to catch up after the chaos.
    settle: Duration,
    /// Trend dates compared (seeded sample, plus the last date).
    trend_dates: usize,
}

fn scale() -> Scale {
    match std::env::var("ROLLCALL_CHAOS").as_deref() {
        Ok("long") => Scale {
            name: "long",
            schools: 3,
            students_per_school: 250,
            kills: 60,
            load: Duration::from_secs(600),
            step_days: 3,
            csv_every_days: 14,
            settle: Duration::from_secs(900),
            trend_dates: 30,
        },
        _ => Scale {
            name: "ci",
            schools: 2,
            students_per_school: 60,
            kills: 24,
            load: Duration::from_secs(75),
            step_days: 10,
            csv_every_days: 40,
            settle: Duration::from_secs(240),
            trend_dates: 8,
        },
    }
}

fn seed() -> u64 {
    match std::env::var("ROLLCALL_CHAOS_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("ROLLCALL_CHAOS_SEED={s:?} is not a number")),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            SeededRng::new(nanos ^ u64::from(std::process::id())).next_u64() % 1_000_000_000
        }
    }
}

fn world(seed: u64, s: Scale) -> Arc<World> {
    let d = |id: &str, lea_id, feed| DistrictSpec {
        id: id.into(),
        name: format!("{id} district"),
        lea_id,
        feed,
        schools: s.schools,
        students_per_school: s.students_per_school,
        positive_attendance: false,
        corrections: CorrectionStyle::KeyChange,
    };
    let mut districts = vec![
        d("cx-edfi", 255901, Feed::Edfi),
        d("cx-edfi-pos", 255902, Feed::Edfi),
        d("cx-ps", 255903, Feed::Csv(CsvPreset::PowerSchool)),
        d("cx-sky", 255904, Feed::Csv(CsvPreset::Skyward)),
    ];
    // One positive-attendance district with delete + create corrections.
    districts[1].positive_attendance = true;
    districts[1].corrections = CorrectionStyle::DeleteCreate;
    Arc::new(
        generate(&SimConfig {
            seed,
            malformed_rate: 0.01,
            no_show_rate: 0.05,
            districts,
            ..SimConfig::default()
        })
        .expect("simulated year"),
    )
}

/// The whole configuration every child process reads from one file.
fn write_config(
    cfg: &Config,
    world: &World,
    edfi_url: &str,
    work: &Path,
) -> (PathBuf, Vec<(String, bool)>) {
    let mut doc = toml::Table::try_from(cfg).expect("config as TOML");
    let mut connectors = toml::Table::new();
    let mut names = Vec::new();
    let school_districts: serde_json::Map<String, serde_json::Value> = world
        .schools
        .iter()
        .map(|s| {
            let district = &world.districts[s.district as usize].spec.id;
            (s.school_id.to_string(), district.clone().into())
        })
        .collect();
    let mut edfi_done = false;
    for d in &world.districts {
        let section = match d.spec.feed {
            Feed::Edfi if edfi_done => continue,
            Feed::Edfi => {
                // One simulated ODS serves every Ed-Fi district: one connector reads it.
                edfi_done = true;
                serde_json::json!({
                    "kind": "edfi",
                    "base_url": edfi_url,
                    "district_id": d.spec.id,
                    "school_districts": school_districts,
                    "client_id": "rollcall",
                    "client_secret_env": SECRET_VAR,
                    "page_size": 500,
                    "requests_per_second": 1000,
                    "poll_interval_secs": 0.5,
                })
            }
            Feed::Csv(preset) => serde_json::json!({
                "kind": "csv",
                "district_id": d.spec.id,
                "inbox": inbox(work, &d.spec.id).display().to_string(),
                "preset": preset.as_str(),
                "poll_interval_secs": 0.5,
                "snapshots": true,
            }),
        };
        let is_edfi = d.spec.feed == Feed::Edfi;
        let name = format!("sim-{}", d.spec.id);
        let section = toml::Table::try_from(section).expect("connector section as TOML");
        connectors.insert(name.clone(), toml::Value::Table(section));
        names.push((name, is_edfi));
    }
    doc.insert("connectors".into(), toml::Value::Table(connectors));
    let path = work.join("rollcall.toml");
    std::fs::write(&path, toml::to_string_pretty(&doc).unwrap()).unwrap();
    (path, names)
}

fn inbox(work: &Path, district: &str) -> PathBuf {
    work.join("inbox").join(district)
}

/// Every CSV district drops its year-to-date export as of `day`.
fn drop_csv(world: &World, work: &Path, day: NaiveDate) {
    for d in &world.districts {
        if let Feed::Csv(_) = d.spec.feed {
            csv_export::write_drop(world, &d.spec.id, None, day, &inbox(work, &d.spec.id))
                .expect("CSV drop");
        }
    }
}

/// Records the normalizer (raw topics) and the rollup (normalized topics) have not
/// committed, read on a thread of its own with a bound (a consumer that hangs in
/// rdkafka must not hang the test): `None` when it failed or took longer than 20 s.
fn lag(cfg: &Config, secrets: &Secrets) -> Option<i64> {
    let (c, s) = (cfg.clone(), secrets.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let t = Topics::new(&c.kafka.topic_prefix);
        let client = rollcall_kafka::client_config(&c.kafka, &s);
        let raw: Vec<String> = rollcall_kafka::ENTITIES.iter().map(|e| t.raw(e)).collect();
        let normalized: Vec<String> = rollcall_kafka::ENTITIES
            .iter()
            .map(|e| t.normalized(e))
            .collect();
        let r = rollcall_kafka::group_lag(&client, &c.normalizer.group_id, &raw).and_then(|a| {
            rollcall_kafka::group_lag(&client, &c.rollup.group_id, &normalized).map(|b| a + b)
        });
        let _ = tx.send(r.ok());
    });
    rx.recv_timeout(Duration::from_secs(20)).ok().flatten()
}

// ---------------------------------------------------------------------------------
// Comparing the views with the simulator's expected metrics.

#[derive(Row, Deserialize, Debug)]
struct StudentView {
    district_id: String,
    school_id: String,
    student_id: String,
    days_enrolled: u32,
    absent_milli: u64,
    excused_milli: u64,
    unexcused_milli: u64,
    days_tardy: u32,
    days_missing: u32,
    is_chronically_absent: u8,
    is_truant: u8,
    tier: String,
    meets_min_enrollment: u8,
}

#[derive(Row, Deserialize, Debug, PartialEq, Clone)]
struct AggregateView {
    key: String,
    students_enrolled: Option<u64>,
    students_chronically_absent: Option<u64>,
    satisfactory: Option<u64>,
    at_risk: Option<u64>,
    moderate: Option<u64>,
    severe: Option<u64>,
    suppressed: u8,
}

/// Rows with only enrolled / chronic counts (by grade, trend).
#[derive(Row, Deserialize, Debug, PartialEq, Clone)]
struct SmallAggregate {
    key: String,
    students_enrolled: Option<u64>,
    students_chronically_absent: Option<u64>,
    suppressed: u8,
}

#[derive(Row, Deserialize, Debug)]
struct TrendRow {
    district_id: String,
    school_id: String,
    date: String,
    students_enrolled: Option<u64>,
    students_chronically_absent: Option<u64>,
    suppressed: u8,
}

fn milli(days: f64) -> u64 {
    (days * 1000.0).round() as u64
}

/// What a view row must say for these counts (the default policy: a row with a count
/// below 10 is suppressed; zeros are published).
fn expected_aggregate(key: String, c: &Counts) -> AggregateView {
    let n = [
        c.students_meeting_min_enrollment,
        c.chronically_absent,
        c.satisfactory,
        c.at_risk,
        c.moderate_chronic,
        c.severe_chronic,
    ];
    let suppressed = rollcall_sis_simulator::SimPolicy::default().row_suppressed(&n);
    let show = |v: u64| (!suppressed).then_some(v);
    AggregateView {
        key,
        students_enrolled: show(n[0]),
        students_chronically_absent: show(n[1]),
        satisfactory: show(n[2]),
        at_risk: show(n[3]),
        moderate: show(n[4]),
        severe: show(n[5]),
        suppressed: suppressed as u8,
    }
}

fn expected_small(key: String, enrolled: u64, chronic: u64) -> SmallAggregate {
    let suppressed =
        rollcall_sis_simulator::SimPolicy::default().row_suppressed(&[enrolled, chronic]);
    SmallAggregate {
        key,
        students_enrolled: (!suppressed).then_some(enrolled),
        students_chronically_absent: (!suppressed).then_some(chronic),
        suppressed: suppressed as u8,
    }
}

const AGG: &str = "toNullable(toUInt64(students_enrolled)), toNullable(toUInt64(students_chronically_absent)), \
    toNullable(toUInt64(students_satisfactory)), toNullable(toUInt64(students_at_risk)), \
    toNullable(toUInt64(students_moderate_chronic)), toNullable(toUInt64(students_severe_chronic)), suppressed";

/// A grade label as a source spells it (Ed-Fi descriptor code value, `03`, `KG`, `3`,
/// ...) as a grade number (0 = kindergarten).
fn grade_number(label: &str) -> Option<u8> {
    const EDFI: [&str; 13] = [
        "Kindergarten",
        "First grade",
        "Second grade",
        "Third grade",
        "Fourth grade",
        "Fifth grade",
        "Sixth grade",
        "Seventh grade",
        "Eighth grade",
        "Ninth grade",
        "Tenth grade",
        "Eleventh grade",
        "Twelfth grade",
    ];
    let l = label.trim();
    if let Some(i) = EDFI.iter().position(|n| n.eq_ignore_ascii_case(l)) {
        return Some(i as u8);
    }
    if ["K", "KG", "KN", "KF", "0K"].contains(&l.to_ascii_uppercase().as_str()) {
        return Some(0);
    }
    l.parse::<u8>().ok().filter(|n| *n <= 12)
}

/// Rows compared, per view.
#[derive(Debug, Default, Clone)]
struct Compared {
    students: usize,
    schools: usize,
    grades: usize,
    districts: usize,
    state: usize,
    trend: usize,
}

impl Compared {
    fn total(&self) -> usize {
        self.students + self.schools + self.grades + self.districts + self.state + self.trend
    }
}

/// Every difference between the views and `expected` (at most a few per view), and the
/// rows compared.
async fn compare_views(
    db: &clickhouse::Client,
    world: &World,
    expected: &Expected,
    trend: &BTreeMap<NaiveDate, Expected>,
) -> Result<(Vec<String>, Compared), clickhouse::error::Error> {
    let mut diffs = Vec::new();
    let mut n = Compared::default();
    let push = |diffs: &mut Vec<String>, view: &str, msg: String| {
        if diffs.iter().filter(|d| d.starts_with(view)).count() < 5 {
            diffs.push(format!("{view}: {msg}"));
        }
    };

    // Every student at every school.
    let rows: Vec<StudentView> = db
        .query(
            "SELECT district_id, school_id, student_id, days_enrolled, toUInt64(round(days_absent * 1000)), \
             toUInt64(round(days_absent_excused * 1000)), toUInt64(round(days_absent_unexcused * 1000)), \
             days_tardy, days_missing, is_chronically_absent, is_truant, toString(tier), meets_min_enrollment \
             FROM student_attendance WHERE days_enrolled > 0",
        )
        .fetch_all()
        .await?;
    let got: BTreeMap<(String, String, String), &StudentView> = rows
        .iter()
        .map(|r| {
            let k = (
                r.district_id.clone(),
                r.school_id.clone(),
                r.student_id.clone(),
            );
            (k, r)
        })
        .collect();
    let want_keys: BTreeSet<(String, String, String)> = expected
        .students
        .iter()
        .map(|e| {
            (
                e.district_id.clone(),
                e.school_id.to_string(),
                e.student_id.clone(),
            )
        })
        .collect();
    for k in got.keys().filter(|k| !want_keys.contains(*k)) {
        push(
            &mut diffs,
            "student_attendance",
            format!("unexpected row {k:?}"),
        );
    }
    for e in &expected.students {
        let key = (
            e.district_id.clone(),
            e.school_id.to_string(),
            e.student_id.clone(),
        );
        let Some(g) = got.get(&key) else {
            push(
                &mut diffs,
                "student_attendance",
                format!("no row for {key:?}"),
            );
            continue;
        };
        n.students += 1;
        let same = u64::from(g.days_enrolled) == e.days_enrolled
            && g.absent_milli == milli(e.days_absent)
            && g.excused_milli == milli(e.days_excused)
            && g.unexcused_milli == milli(e.days_unexcused)
            && u64::from(g.days_tardy) == e.days_tardy
            && u64::from(g.days_missing) == e.days_missing
            && (g.meets_min_enrollment == 1) == e.meets_min_enrollment
            && (g.is_chronically_absent == 1) == e.chronically_absent
            && (g.is_truant == 1) == e.truant
            && g.tier == e.tier.as_str();
        if !same {
            push(
                &mut diffs,
                "student_attendance",
                format!("{key:?}: view {g:?} vs expected {e:?}"),
            );
        }
    }

    // Schools (FS195), districts and the state (distinct students).
    let check_agg = |diffs: &mut Vec<String>,
                     view: &str,
                     mut got: Vec<AggregateView>,
                     mut want: Vec<AggregateView>| {
        got.sort_by(|a, b| a.key.cmp(&b.key));
        want.sort_by(|a, b| a.key.cmp(&b.key));
        let count = want.len();
        if got != want {
            let g: BTreeMap<_, _> = got.iter().map(|r| (r.key.clone(), r)).collect();
            let w: BTreeMap<_, _> = want.iter().map(|r| (r.key.clone(), r)).collect();
            for k in g.keys().chain(w.keys()).collect::<BTreeSet<_>>() {
                if g.get(k) != w.get(k) {
                    push(
                        diffs,
                        view,
                        format!("{k}: view {:?} vs expected {:?}", g.get(k), w.get(k)),
                    );
                }
            }
        }
        count
    };
    let schools: Vec<AggregateView> = db
        .query(&format!(
            "SELECT concat(district_id, '/', school_id), {AGG} FROM school_chronic_absence"
        ))
        .fetch_all()
        .await?;
    let want = expected
        .schools
        .iter()
        .map(|s| expected_aggregate(format!("{}/{}", s.district_id, s.school_id), &s.counts))
        .collect();
    n.schools = check_agg(&mut diffs, "school_chronic_absence", schools, want);
    let districts: Vec<AggregateView> = db
        .query(&format!(
            "SELECT district_id, {AGG} FROM district_chronic_absence"
        ))
        .fetch_all()
        .await?;
    let want = expected
        .districts
        .iter()
        .map(|d| expected_aggregate(d.district_id.clone(), &d.counts))
        .collect();
    n.districts = check_agg(&mut diffs, "district_chronic_absence", districts, want);
    let state: Vec<AggregateView> = db
        .query(&format!("SELECT 'state', {AGG} FROM state_chronic_absence"))
        .fetch_all()
        .await?;
    n.state = check_agg(
        &mut diffs,
        "state_chronic_absence",
        state,
        vec![expected_aggregate("state".into(), &expected.state)],
    );

    // Schools by grade: the student rows' judgements grouped by the student's grade.
    let grade_of: BTreeMap<(&str, &str), u8> = world
        .students
        .iter()
        .map(|s| {
            (
                (
                    world.districts[s.district as usize].spec.id.as_str(),
                    s.unique_id.as_str(),
                ),
                s.grade.number(),
            )
        })
        .collect();
    let mut by_grade: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for e in &expected.students {
        let g = grade_of[&(e.district_id.as_str(), e.student_id.as_str())];
        let c = by_grade
            .entry(format!("{}/{}/{g}", e.district_id, e.school_id))
            .or_default();
        c.0 += u64::from(e.meets_min_enrollment);
        c.1 += u64::from(e.chronically_absent);
    }
    let grades: Vec<SmallAggregate> = db
        .query(
            "SELECT concat(district_id, '/', school_id, '/', grade), \
             toNullable(toUInt64(students_enrolled)), toNullable(toUInt64(students_chronically_absent)), suppressed \
             FROM school_chronic_absence_by_grade",
        )
        .fetch_all()
        .await?;
    let mut got_grades: BTreeMap<String, SmallAggregate> = BTreeMap::new();
    for mut r in grades {
        let (school, label) = r.key.rsplit_once('/').unwrap();
        let Some(g) = grade_number(label) else {
            push(
                &mut diffs,
                "school_chronic_absence_by_grade",
                format!("unknown grade label in {r:?}"),
            );
            continue;
        };
        r.key = format!("{school}/{g}");
        got_grades.insert(r.key.clone(), r);
    }
    let want_grades: BTreeMap<String, SmallAggregate> = by_grade
        .into_iter()
        .map(|(k, (e, c))| (k.clone(), expected_small(k, e, c)))
        .collect();
    n.grades = want_grades.len();
    for k in got_grades
        .keys()
        .chain(want_grades.keys())
        .collect::<BTreeSet<_>>()
    {
        if got_grades.get(k) != want_grades.get(k) {
            push(
                &mut diffs,
                "school_chronic_absence_by_grade",
                format!(
                    "{k}: view {:?} vs expected {:?}",
                    got_grades.get(k),
                    want_grades.get(k)
                ),
            );
        }
    }

    // The trend: each school's counts as of each sampled date, against the simulator's
    // expected metrics as of that date (with every correction known by the last day).
    if !trend.is_empty() {
        let dates: Vec<String> = trend.keys().map(|d| format!("'{d}'")).collect();
        let rows: Vec<TrendRow> = db
            .query(&format!(
                "SELECT district_id, school_id, toString(date), toNullable(toUInt64(students_enrolled)), \
                 toNullable(toUInt64(students_chronically_absent)), suppressed \
                 FROM chronic_absence_trend WHERE date IN ({})",
                dates.join(", ")
            ))
            .fetch_all()
            .await?;
        let got: BTreeMap<String, SmallAggregate> = rows
            .into_iter()
            .map(|r| {
                let key = format!("{}/{}/{}", r.district_id, r.school_id, r.date);
                (
                    key.clone(),
                    SmallAggregate {
                        key,
                        students_enrolled: r.students_enrolled,
                        students_chronically_absent: r.students_chronically_absent,
                        suppressed: r.suppressed,
                    },
                )
            })
            .collect();
        // A school has a trend row on each of its own instructional days (with someone
        // enrolled); its counts are the expected ones as of that date.
        let days = instructional_days(world);
        let mut want_keys = BTreeSet::new();
        for (date, e) in trend {
            for school in &world.schools {
                if !days[&school.school_id].contains(date) {
                    continue;
                }
                let district = &world.districts[school.district as usize].spec.id;
                let key = format!("{district}/{}/{date}", school.school_id);
                let counts = e
                    .schools
                    .iter()
                    .find(|s| s.school_id == school.school_id)
                    .map(|s| &s.counts);
                let Some(c) = counts.filter(|c| c.students_enrolled > 0) else {
                    continue;
                };
                let want = expected_small(
                    key.clone(),
                    c.students_meeting_min_enrollment,
                    c.chronically_absent,
                );
                n.trend += 1;
                if got.get(&key) != Some(&want) {
                    push(
                        &mut diffs,
                        "chronic_absence_trend",
                        format!("{key}: view {:?} vs expected {want:?}", got.get(&key)),
                    );
                }
                want_keys.insert(key);
            }
        }
        for k in got.keys().filter(|k| !want_keys.contains(*k)) {
            push(
                &mut diffs,
                "chronic_absence_trend",
                format!("unexpected row {k}"),
            );
        }
    }
    Ok((diffs, n))
}

// ---------------------------------------------------------------------------------
// Dead letters.

/// What the simulator says must be dead-lettered, per district.
#[derive(Debug, Default)]
struct WantDead {
    /// Ed-Fi districts: the Ed-Fi `id` of every malformed record still in the SIS at the
    /// end (each must be dead-lettered, however often it was sent) and of every one ever
    /// created (one purged before the connector saw it may be missing).
    edfi_current: BTreeMap<String, BTreeSet<String>>,
    edfi_ever: BTreeMap<String, BTreeSet<String>>,
    /// CSV districts: rows of the final attendance export the connector itself must
    /// refuse (impossible dates, missing students, and unknown codes where the preset
    /// leaves the code column empty), counting a row sent twice in a file twice.
    csv_connector_rows: BTreeMap<String, usize>,
    /// CSV districts: records with an unknown code left for the normalizer to refuse
    /// (still in the SIS at the end, ever created).
    csv_unknown_current: BTreeMap<String, usize>,
    csv_unknown_ever: BTreeMap<String, usize>,
    /// Every malformation kind per district (which dead-letter kinds are allowed).
    kinds: BTreeMap<String, std::collections::HashSet<Malformation>>,
}

fn code_column_empty(preset: CsvPreset) -> bool {
    // sim_drops.rs: Skyward's Category and generic's category are empty for an unknown
    // code, so the connector refuses those rows; other presets pass the code on.
    matches!(preset, CsvPreset::Skyward | CsvPreset::Generic)
}

fn want_dead_letters(world: &World) -> WantDead {
    let mut w = WantDead::default();
    let district =
        |record: &rollcall_sis_simulator::Record| &world.districts[record.district as usize];
    for (idx, id, record, fact) in world.final_view().current() {
        let Some(m) = record.malformed else { continue };
        let d = district(record);
        match d.spec.feed {
            Feed::Edfi => {
                w.edfi_current
                    .entry(d.spec.id.clone())
                    .or_default()
                    .insert(world.edfi_id(id));
            }
            Feed::Csv(preset) => {
                if m == Malformation::UnknownCode && !code_column_empty(preset) {
                    *w.csv_unknown_current.entry(d.spec.id.clone()).or_default() += 1;
                } else {
                    // As sim_drops.rs counts them: a re-sent identical upsert is a
                    // second row of the export.
                    let prev = world.log[idx].prev;
                    let copies = 1 + usize::from(prev.is_some_and(|p| {
                        world.log[p as usize].op == rollcall_sis_simulator::Op::Upsert(*fact)
                    }));
                    *w.csv_connector_rows.entry(d.spec.id.clone()).or_default() += copies;
                }
            }
        }
    }
    for (i, record) in world.records.iter().enumerate() {
        let Some(m) = record.malformed else { continue };
        let d = district(record);
        w.kinds.entry(d.spec.id.clone()).or_default().insert(m);
        match d.spec.feed {
            Feed::Edfi => {
                w.edfi_ever
                    .entry(d.spec.id.clone())
                    .or_default()
                    .insert(world.edfi_id(i as rollcall_sis_simulator::RecordId));
            }
            Feed::Csv(preset) => {
                if m == Malformation::UnknownCode && !code_column_empty(preset) {
                    *w.csv_unknown_ever.entry(d.spec.id.clone()).or_default() += 1;
                }
            }
        }
    }
    w
}

/// The dead-letter kinds each malformation may legitimately end as.
fn allowed_kinds(m: Malformation) -> &'static [&'static str] {
    match m {
        Malformation::BadDate => &["invalid_date", "csv_row_invalid"],
        Malformation::UnknownCode => &["unknown_code", "csv_row_invalid"],
        Malformation::MissingStudent => &[
            "missing_field",
            "empty_identifier",
            "csv_row_invalid",
            "edfi_item_unusable",
        ],
    }
}

/// One committed dead letter, reduced to what identifies the record it stands for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct DeadLetterId {
    district: String,
    stage: String,
    kind: String,
    /// `file:line` of a file-drop row.
    source_file: Option<String>,
    /// The Ed-Fi `id` of the item (in the payload of an Ed-Fi connector's dead letter,
    /// or in the raw envelope's payload of a normalizer's).
    edfi_id: Option<String>,
    /// The raw envelope's natural key (normalizer dead letters).
    natural_key: Option<String>,
}

fn dead_letter_ids(cfg: &Config, secrets: &Secrets) -> Vec<DeadLetterId> {
    let client = rollcall_kafka::client_config(&cfg.kafka, secrets);
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let edfi_id = |json: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v.get("id")?.as_str().map(str::to_string))
    };
    read_topic_to_end(&client, &topics.dead_letters(), true)
        .expect("reading the dead-letter topic")
        .into_iter()
        .map(|r| {
            let h = DeadLetterHeaders::from_pairs(&r.headers);
            let (edfi_id, natural_key) = match rollcall_avro::decode_raw(&r.payload) {
                Ok(env) => (edfi_id(&env.payload), Some(env.natural_key)),
                Err(_) => (edfi_id(&r.payload), None),
            };
            DeadLetterId {
                district: h.district.clone().unwrap_or_default(),
                stage: h.stage,
                kind: h.kind,
                source_file: h.source_file,
                edfi_id,
                natural_key,
            }
        })
        .collect()
}

/// Differences between the dead letters and the deliberate malformations, by district:
/// every dead letter is of a kind a malformation of its district makes; an Ed-Fi
/// district's dead-lettered items are exactly its malformed records (by Ed-Fi `id`); a
/// CSV district's final export has exactly its malformed rows dead-lettered by the
/// connector (by line), and the normalizer refused its unknown codes (by natural key).
fn compare_dead_letters(dls: &[DeadLetterId], want: &WantDead, world: &World) -> Vec<String> {
    let mut diffs = Vec::new();
    let note = |diffs: &mut Vec<String>, msg: String| {
        if diffs.len() < 20 {
            diffs.push(msg);
        }
    };
    for d in dls {
        let ok = want.kinds.get(&d.district).is_some_and(|ms| {
            ms.iter()
                .any(|m| allowed_kinds(*m).contains(&d.kind.as_str()))
        });
        if !ok {
            note(&mut diffs, format!("not a deliberate malformation: {d:?}"));
        }
    }
    for d in &world.districts {
        let id = &d.spec.id;
        let mine = || dls.iter().filter(move |x| &x.district == id);
        match d.spec.feed {
            Feed::Edfi => {
                let got: BTreeSet<String> = mine().filter_map(|x| x.edfi_id.clone()).collect();
                let empty = BTreeSet::new();
                let current = want.edfi_current.get(id).unwrap_or(&empty);
                let ever = want.edfi_ever.get(id).unwrap_or(&empty);
                let missing: Vec<&String> = current.difference(&got).collect();
                let extra: Vec<&String> = got.difference(ever).collect();
                if !missing.is_empty() || !extra.is_empty() {
                    note(
                        &mut diffs,
                        format!(
                            "{id}: {} malformed Ed-Fi records not dead-lettered under {id} {missing:?}; \
                             {} dead-lettered under {id} that are not its malformed records {extra:?}",
                            missing.len(),
                            extra.len()
                        ),
                    );
                }
                for x in mine().filter(|x| x.edfi_id.is_none()) {
                    note(
                        &mut diffs,
                        format!("{id}: a dead letter without an Ed-Fi id: {x:?}"),
                    );
                }
            }
            Feed::Csv(_) => {
                // The newest export the connector read (a final export equal to the
                // one before is a duplicate, moved to done/ unread): its rows are the
                // SIS's final rows.
                let file_of = |x: &DeadLetterId| {
                    x.source_file
                        .as_deref()
                        .and_then(|f| f.rsplit_once(':'))
                        .map(|(file, _)| file.to_string())
                };
                let last = mine()
                    .filter(|x| x.stage == "connector-csv")
                    .filter_map(file_of)
                    .filter(|f| f.starts_with("attendance"))
                    .max()
                    .unwrap_or_default();
                let lines: BTreeSet<&str> = mine()
                    .filter(|x| x.stage == "connector-csv")
                    .filter(|x| file_of(x).as_deref() == Some(last.as_str()))
                    .filter_map(|x| x.source_file.as_deref())
                    .collect();
                let want_rows = want.csv_connector_rows.get(id).copied().unwrap_or(0);
                if lines.len() != want_rows {
                    note(
                        &mut diffs,
                        format!(
                            "{id}: {} rows of the newest export read ({last:?}) dead-lettered by the connector, {want_rows} malformed rows in the final export",
                            lines.len()
                        ),
                    );
                }
                let keys: BTreeSet<&str> = mine()
                    .filter(|x| x.stage == "normalizer")
                    .filter_map(|x| x.natural_key.as_deref())
                    .collect();
                let min = want.csv_unknown_current.get(id).copied().unwrap_or(0);
                let max = want.csv_unknown_ever.get(id).copied().unwrap_or(0);
                if keys.len() < min || keys.len() > max {
                    note(
                        &mut diffs,
                        format!(
                            "{id}: {} records dead-lettered by the normalizer; {min} with an unknown code at the end, {max} ever",
                            keys.len()
                        ),
                    );
                }
            }
        }
    }
    diffs
}

// ---------------------------------------------------------------------------------

/// One scheduled chaos action, at an offset from the start of the load.
#[derive(Debug, Clone)]
enum Action {
    Step(NaiveDate),
    Kill(Target),
    RestartKafka,
    RestartClickHouse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Connector(usize),
    Normalizer,
    Rollup,
}

struct Procs {
    connectors: Vec<Supervised>,
    normalizer: Supervised,
    rollup: Supervised,
}

impl Procs {
    fn all(&mut self) -> impl Iterator<Item = &mut Supervised> {
        self.connectors
            .iter_mut()
            .chain([&mut self.normalizer, &mut self.rollup])
    }

    fn get(&mut self, t: Target) -> &mut Supervised {
        match t {
            Target::Connector(i) => &mut self.connectors[i],
            Target::Normalizer => &mut self.normalizer,
            Target::Rollup => &mut self.rollup,
        }
    }

    /// Restart anything that exited on its own (recorded as an unexpected exit).
    fn check(&mut self) {
        for p in self.all() {
            if p.check() {
                let (_, status, tail) = p.unexpected_exits.last().unwrap();
                eprintln!(
                    "chaos: {} exited on its own ({status}); restarted. Log tail:\n{}",
                    p.spec.name,
                    last_lines(tail, 8)
                );
            }
        }
    }
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The seeded schedule: steps of the simulated clock spread over the load, `kills`
/// SIGKILLs at random moments (targets in shuffled rounds so each kind is hit often),
/// one broker restart and one ClickHouse restart.
fn schedule(
    rng: &mut SeededRng,
    s: Scale,
    world: &World,
    connectors: usize,
) -> Vec<(Duration, Action)> {
    let load_ms = s.load.as_millis() as u64;
    let mut out = Vec::new();
    let days = (world.last_day - world.first_day).num_days();
    let steps = (days + s.step_days - 1) / s.step_days;
    for i in 0..=steps {
        let day = (world.first_day + chrono::Duration::days(i * s.step_days)).min(world.last_day);
        let at = load_ms * i as u64 / steps.max(1) as u64;
        out.push((Duration::from_millis(at), Action::Step(day)));
    }
    let mut targets = Vec::new();
    while targets.len() < s.kills as usize {
        let mut round = vec![
            Target::Connector(rng.range(0, connectors as u64) as usize),
            Target::Normalizer,
            Target::Rollup,
        ];
        for i in (1..round.len()).rev() {
            round.swap(i, rng.range(0, i as u64 + 1) as usize);
        }
        targets.extend(round);
    }
    targets.truncate(s.kills as usize);
    for t in targets {
        let at = rng.range(load_ms / 50, load_ms);
        out.push((Duration::from_millis(at), Action::Kill(t)));
    }
    out.push((
        Duration::from_millis(rng.range(load_ms * 25 / 100, load_ms * 45 / 100)),
        Action::RestartKafka,
    ));
    out.push((
        Duration::from_millis(rng.range(load_ms * 55 / 100, load_ms * 75 / 100)),
        Action::RestartClickHouse,
    ));
    out.sort_by_key(|(at, _)| *at);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kills_and_restarts_lose_nothing_and_count_nothing_twice() {
    let t0 = Instant::now();
    let seed = seed();
    let s = scale();
    eprintln!(
        "chaos: seed {seed} (replay with ROLLCALL_CHAOS_SEED={seed}), scale {} ({s:?})",
        s.name
    );
    let mut rng = SeededRng::new(seed);

    // The service binaries (built here when missing or stale) and the private services.
    let bins = tokio::task::block_in_place(|| {
        // Each package's binary has the package's name.
        service_binaries(&SERVICES, &SERVICES)
    })
    .expect("service binaries");
    let build_time = t0.elapsed();
    let opts = StackOptions::from_env("ROLLCALL_CHAOS", "chaos").expect("chaos stack options");
    let t = Instant::now();
    let mut stack = tokio::task::block_in_place(|| LocalStack::start(opts))
        .expect("private Kafka and ClickHouse");
    let stack_time = t.elapsed();
    eprintln!(
        "chaos: private Kafka at {} and ClickHouse at {} (dir {}) up in {stack_time:?}",
        stack.kafka_brokers(),
        stack.clickhouse_url(),
        stack.opts.local_dir.display()
    );

    let world = world(seed, s);
    let through = world.last_day;
    // The private services have no passwords (deploy/local): the shared services'
    // secrets, if any are set, are not theirs.
    let secrets = Secrets::default();
    let mut cfg = Config::default();
    cfg.kafka.brokers = stack.kafka_brokers();
    cfg.kafka.topic_prefix = "chaos".into();
    cfg.clickhouse.url = stack.clickhouse_url();
    cfg.clickhouse.database = "chaos".into();
    cfg.normalizer.group_id = "chaos-normalizer".into();
    cfg.normalizer.http_port = 0;
    cfg.normalizer.batch_max_records = 2_000;
    cfg.rollup.group_id = "chaos-rollup".into();
    cfg.rollup.http_port = 0;
    cfg.rollup.batch_max_wait_ms = 200;
    cfg.rollup.as_of = Some(through.to_string());
    let cfg = rollcall_pipeline::prepare_config(cfg, &world, &repo_root());

    // Topics and tables, as an operator would create them (`rollcall topics create`,
    // `rollcall migrate`).
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets);
    let specs = Topics::new(&cfg.kafka.topic_prefix)
        .specs(cfg.kafka.partitions, cfg.kafka.replication_factor);
    rollcall_kafka::ensure_topics(&client, &specs)
        .await
        .expect("creating the topics on the fresh broker");
    let server = rollcall_clickhouse::connect_server(&cfg.clickhouse, &secrets);
    rollcall_clickhouse::migrate(
        &server,
        &cfg.clickhouse.database,
        &rollcall_clickhouse::embedded_migrations(),
    )
    .await
    .expect("migrating ClickHouse");

    // The simulated Ed-Fi host, its clock moved by the schedule.
    let stop = CancellationToken::new();
    let _stop_guard = stop.clone().drop_guard();
    let edfi = EdfiServer::new(
        world.clone(),
        ServerOptions {
            start_day: Some(world.first_day),
            max_page_size: 500,
            client_secret: SECRET.into(),
            ..ServerOptions::default()
        },
    );
    let sim = edfi.handle();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let edfi_url = format!("http://{}", listener.local_addr().unwrap());
    let st = stop.clone();
    tokio::spawn(async move {
        edfi.serve_with_shutdown(listener, async move { st.cancelled().await })
            .await
    });

    // This run's files: configuration, inboxes, one log per process.
    let work = stack.opts.local_dir.join("run");
    if work.exists() {
        std::fs::remove_dir_all(&work).unwrap();
    }
    std::fs::create_dir_all(&work).unwrap();
    // Every start runs the same code, whatever is rebuilt in target/ meanwhile.
    let bins = rollcall_testkit::procs::copy_binaries(&bins, &work.join("bin")).unwrap();
    let (cfg_file, connector_names) = write_config(&cfg, &world, &edfi_url, &work);
    let cfg_arg = cfg_file.display().to_string();
    let env = vec![
        (SECRET_VAR.to_string(), SECRET.to_string()),
        ("RUST_LOG".to_string(), "info".to_string()),
        ("RUST_BACKTRACE".to_string(), "1".to_string()),
    ];
    let spec = |name: &str, kind: &str, program: &Path, args: Vec<String>| ProcSpec {
        name: name.into(),
        kind: kind.into(),
        program: program.to_path_buf(),
        args,
        env: env.clone(),
        // The private services have no passwords.
        remove_env: [
            "ROLLCALL_CLICKHOUSE_PASSWORD",
            "ROLLCALL_CLICKHOUSE_PASSWORD_FILE",
            "ROLLCALL_KAFKA_SASL_PASSWORD",
            "ROLLCALL_KAFKA_SASL_PASSWORD_FILE",
        ]
        .map(String::from)
        .to_vec(),
        log: work
            .join("logs")
            .join(format!("{}.log", name.replace(' ', "-"))),
    };
    let normalizer = Supervised::start(spec(
        "normalizer",
        "normalizer",
        &bins[0],
        vec!["--config".into(), cfg_arg.clone()],
    ))
    .unwrap();
    let rollup = Supervised::start(spec(
        "rollup",
        "rollup",
        &bins[1],
        vec!["--config".into(), cfg_arg.clone()],
    ))
    .unwrap();
    let connectors = connector_names
        .iter()
        .map(|(name, is_edfi)| {
            let bin = if *is_edfi { &bins[2] } else { &bins[3] };
            Supervised::start(spec(
                &format!("connector {name}"),
                "connector",
                bin,
                vec![
                    "--config".into(),
                    cfg_arg.clone(),
                    "--no-progress".into(),
                    name.clone(),
                ],
            ))
            .unwrap()
        })
        .collect();
    let mut procs = Procs {
        connectors,
        normalizer,
        rollup,
    };

    // Expected results, computed while the services start.
    let expected = expected_metrics(&world, through);
    let want_dead = want_dead_letters(&world);

    // The chaos.
    let plan = schedule(&mut rng, s, &world, procs.connectors.len());
    let load_start = Instant::now();
    let mut last_csv: Option<NaiveDate> = None;
    let (mut kafka_restarts, mut clickhouse_restarts) = (0, 0);
    let mut restart_times = Vec::new();
    for (at, action) in &plan {
        // Wait for the action's moment (the schedule, not a synchronization), watching
        // for processes that exit on their own.
        while load_start.elapsed() < *at {
            procs.check();
            let left = *at - load_start.elapsed().min(*at);
            tokio::time::sleep(left.min(Duration::from_millis(200))).await;
        }
        procs.check();
        match action {
            Action::Step(day) => {
                sim.set_day(*day);
                let due = last_csv.is_none_or(|l| (*day - l).num_days() >= s.csv_every_days)
                    || *day == world.last_day;
                if due && last_csv != Some(*day) {
                    drop_csv(&world, &work, *day);
                    last_csv = Some(*day);
                }
            }
            Action::Kill(t) => {
                let p = procs.get(*t);
                p.kill_and_restart().expect("SIGKILL and restart");
                eprintln!(
                    "chaos: {:>6.1}s SIGKILL {} (kill {} of it)",
                    load_start.elapsed().as_secs_f64(),
                    p.spec.name,
                    p.kills
                );
            }
            Action::RestartKafka => {
                let took = tokio::task::block_in_place(|| stack.restart_kafka())
                    .expect("restarting the broker");
                kafka_restarts += 1;
                restart_times.push(format!("Kafka away {took:.1?}"));
                eprintln!(
                    "chaos: {:>6.1}s Kafka broker restarted (away {took:.1?})",
                    load_start.elapsed().as_secs_f64()
                );
            }
            Action::RestartClickHouse => {
                let took = tokio::task::block_in_place(|| stack.restart_clickhouse())
                    .expect("restarting ClickHouse");
                clickhouse_restarts += 1;
                restart_times.push(format!("ClickHouse away {took:.1?}"));
                eprintln!(
                    "chaos: {:>6.1}s ClickHouse restarted (away {took:.1?})",
                    load_start.elapsed().as_secs_f64()
                );
            }
        }
    }
    let load_time = load_start.elapsed();
    assert_eq!(sim.day(), world.last_day, "the whole year was replayed");

    // Trend dates to compare: a seeded sample of instructional dates, and the last one.
    let mut instructional: Vec<NaiveDate> = expected_dates(&world, through);
    let last = *instructional.last().expect("instructional days");
    let mut sample = BTreeSet::from([last]);
    while sample.len() < s.trend_dates.min(instructional.len()) {
        let i = rng.range(0, instructional.len() as u64) as usize;
        sample.insert(instructional.swap_remove(i));
    }
    let trend: BTreeMap<NaiveDate, Expected> = sample
        .into_iter()
        .map(|d| (d, expected_metrics_at(&world, d, world.last_day)))
        .collect();

    // Catch up: bounded wait until every view equals the expected metrics.
    let db = rollcall_clickhouse::connect(&cfg.clickhouse, &secrets);
    let settle_start = Instant::now();
    let mut last_report = Instant::now() - Duration::from_secs(60);
    let (diffs, compared) = loop {
        procs.check();
        let lag = tokio::task::block_in_place(|| lag(&cfg, &secrets));
        let result = compare_views(&db, &world, &expected, &trend).await;
        let done = matches!(&result, Ok((d, _)) if d.is_empty());
        if done || settle_start.elapsed() > s.settle {
            match result {
                Ok(r) => break r,
                Err(e) => panic!("reading the views after the chaos: {e}"),
            }
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            let state = match &result {
                Ok((d, _)) => format!("{} differences, e.g. {:?}", d.len(), d.first()),
                Err(e) => format!("views unreadable: {e}"),
            };
            eprintln!(
                "chaos: settling {:.0?}: lag {lag:?}; {state}",
                settle_start.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let settle_time = settle_start.elapsed();

    let dls = tokio::task::block_in_place(|| dead_letter_ids(&cfg, &secrets));
    let dl_diffs = compare_dead_letters(&dls, &want_dead, &world);
    let mut dl_kinds: BTreeMap<(String, String), usize> = BTreeMap::new();
    for d in &dls {
        *dl_kinds
            .entry((d.stage.clone(), d.kind.clone()))
            .or_default() += 1;
    }

    // Stop every service cleanly (SIGTERM), noting any that does not.
    let mut unclean = Vec::new();
    let mut kills: BTreeMap<String, u32> = BTreeMap::new();
    let mut unexpected = Vec::new();
    for p in procs.all() {
        p.check();
        *kills.entry(p.spec.kind.clone()).or_default() += p.kills;
        for (when, status, tail) in &p.unexpected_exits {
            unexpected.push(format!(
                "{} exited on its own ({status}) at {:.1}s:\n{}",
                p.spec.name,
                when.duration_since(load_start).as_secs_f64(),
                last_lines(tail, 12)
            ));
        }
        match p.stop(Duration::from_secs(30)) {
            Some(st) if st.success() => {}
            other => unclean.push(format!("{}: {other:?}", p.spec.name)),
        }
    }
    let total_kills: u32 = kills.values().sum();
    let malformed = world
        .records
        .iter()
        .filter(|r| r.malformed.is_some())
        .count();

    eprintln!(
        "\n== chaos summary (seed {seed}, scale {}) ==\n\
         world: {} districts, {} schools, {} students, {} changes, {malformed} malformed records\n\
         SIGKILLs: {total_kills} ({})\n\
         restarts: Kafka broker {kafka_restarts}, ClickHouse {clickhouse_restarts} ({})\n\
         process starts: {}\n\
         exits nobody asked for: {}\n\
         rows compared: {} (students {}, schools {}, by grade {}, districts {}, state {}, trend {} on {} dates)\n\
         view differences: {}\n\
         dead letters: {} committed ({dl_kinds:?}), {} differences from the deliberate malformations\n\
         stops without a clean exit: {unclean:?}\n\
         durations: binaries {build_time:.1?}, private services {stack_time:.1?}, load {load_time:.1?}, \
         catch-up {settle_time:.1?}, total {:.1?}\n\
         logs: {}",
        s.name,
        world.districts.len(),
        world.schools.len(),
        world.students.len(),
        world.log.len(),
        kills
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        restart_times.join(", "),
        procs
            .all()
            .map(|p| format!("{} {}", p.spec.name, p.starts))
            .collect::<Vec<_>>()
            .join(", "),
        unexpected.len(),
        compared.total(),
        compared.students,
        compared.schools,
        compared.grades,
        compared.districts,
        compared.state,
        compared.trend,
        trend.len(),
        diffs.len(),
        dls.len(),
        dl_diffs.len(),
        t0.elapsed(),
        work.join("logs").display(),
    );
    for u in &unexpected {
        eprintln!("-- {u}");
    }
    if !diffs.is_empty() || !dl_diffs.is_empty() || !unexpected.is_empty() {
        for p in procs.all() {
            eprintln!(
                "-- last lines of {}:\n{}",
                p.spec.name,
                last_lines(&log_tail(&p.spec.log, 20_000), 15)
            );
        }
    }

    let mut failures = Vec::new();
    if total_kills < 20 {
        failures.push(format!("fewer than 20 SIGKILLs: {kills:?}"));
    }
    for kind in ["connector", "normalizer", "rollup"] {
        if kills.get(kind).copied().unwrap_or(0) == 0 {
            failures.push(format!("no {kind} was killed: {kills:?}"));
        }
    }
    if (kafka_restarts, clickhouse_restarts) != (1, 1) {
        failures.push(format!(
            "restarts: Kafka {kafka_restarts}, ClickHouse {clickhouse_restarts} (want 1 each)"
        ));
    }
    if !diffs.is_empty() {
        failures.push(format!(
            "the views differ from the expected metrics after {settle_time:.0?} of catch-up:\n{}",
            diffs.join("\n")
        ));
    }
    if !dl_diffs.is_empty() {
        failures.push(format!(
            "the dead letters are not the deliberate malformations:\n{}",
            dl_diffs.join("\n")
        ));
    }
    if !unexpected.is_empty() {
        failures.push(format!(
            "{} service exits nobody asked for:\n{}",
            unexpected.len(),
            unexpected.join("\n\n")
        ));
    }
    assert!(
        failures.is_empty(),
        "chaos run failed (seed {seed}; replay with ROLLCALL_CHAOS_SEED={seed}):\n\n{}",
        failures.join("\n\n")
    );
    stack
        .stop()
        .expect("stopping the private Kafka and ClickHouse");
}

/// Instructional dates of any school up to `as_of`, in order.
fn expected_dates(world: &World, as_of: NaiveDate) -> Vec<NaiveDate> {
    let set: BTreeSet<NaiveDate> = instructional_days(world)
        .into_values()
        .flatten()
        .filter(|d| *d <= as_of)
        .collect();
    set.into_iter().collect()
}

/// Each school's instructional dates (by school id) in the final calendar.
fn instructional_days(world: &World) -> BTreeMap<u64, BTreeSet<NaiveDate>> {
    let mut out: BTreeMap<u64, BTreeSet<NaiveDate>> = world
        .schools
        .iter()
        .map(|s| (s.school_id, BTreeSet::new()))
        .collect();
    for fact in world.final_view().current_facts().values() {
        if let rollcall_sis_simulator::Fact::CalendarDate(c) = fact {
            if c.event.is_instructional() {
                out.entry(world.schools[c.school as usize].school_id)
                    .or_default()
                    .insert(c.date);
            }
        }
    }
    out
}
