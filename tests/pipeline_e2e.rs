//! End to end, at small scale: the SIS simulator (Ed-Fi over HTTP and CSV drops) →
//! the real connectors → Kafka → normalizer → rollup → ClickHouse. After a school year
//! replayed month by month, every student, school, district and the state in the BI
//! views equal the simulator's independently computed expected metrics: once under the
//! default policy, and once (a smaller world) under a policy where every view setting
//! differs from its default — chronic 15%, 20 days minimum, tiers 7/15/25%, publication
//! threshold 5, zero counts published — computed by the simulator's own `SimPolicy`.
//! Every view is compared: student, school, school by grade, district, state, trend.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clickhouse::Row;
use rollcall_pipeline::{prepare_config, Options, Pipeline};
use rollcall_policy::{Policy, Tiers};
use rollcall_sis_simulator::{expected_metrics_under, generate, Counts, SimConfig, SimPolicy};
use rollcall_testkit::{clickhouse_with_unique_db, config_with_fresh_topics, secrets};
use serde::Deserialize;

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
    is_chronically_absent: u8,
    tier: String,
    meets_min_enrollment: u8,
}

#[derive(Row, Deserialize, Debug, PartialEq)]
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

fn milli(days: f64) -> u64 {
    (days * 1000.0).round() as u64
}

/// What a view row must say for these expected counts under `p` (row-level suppression:
/// any count below the publication threshold, a zero only when zeros are suppressed).
fn expected_aggregate(key: String, c: &Counts, p: &SimPolicy) -> AggregateView {
    let n = c.published();
    let suppressed = p.row_suppressed(&n);
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

/// A two-count view row (by grade, trend).
#[derive(Row, Deserialize, Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct SmallView {
    key: String,
    students_enrolled: Option<u64>,
    students_chronically_absent: Option<u64>,
    suppressed: u8,
}

fn expected_small(key: String, enrolled: u64, chronic: u64, p: &SimPolicy) -> SmallView {
    let suppressed = p.row_suppressed(&[enrolled, chronic]);
    let show = |v: u64| (!suppressed).then_some(v);
    SmallView {
        key,
        students_enrolled: show(enrolled),
        students_chronically_absent: show(chronic),
        suppressed: suppressed as u8,
    }
}

const SMALL: &str = "toNullable(toUInt64(students_enrolled)), \
    toNullable(toUInt64(students_chronically_absent)), suppressed";

const AGG: &str = "toNullable(toUInt64(students_enrolled)), toNullable(toUInt64(students_chronically_absent)), \
    toNullable(toUInt64(students_satisfactory)), toNullable(toUInt64(students_at_risk)), \
    toNullable(toUInt64(students_moderate_chronic)), toNullable(toUInt64(students_severe_chronic)), suppressed";

/// Replays `sim` through the pipeline with `policy` and checks every view against the
/// simulator's expected metrics under `sim_policy` (the same settings, its own code).
/// `step_days`: how many simulated days the connectors advance per step.
async fn views_equal_expected_under(
    sim: SimConfig,
    policy: Policy,
    sim_policy: SimPolicy,
    step_days: u32,
) {
    let world = Arc::new(generate(&sim).expect("simulated year"));
    let mut cfg = config_with_fresh_topics("e2e").await;
    cfg.policy = policy;
    cfg.clickhouse = clickhouse_with_unique_db("e2e");
    cfg.rollup.http_port = 0;
    cfg.normalizer.http_port = 0;
    cfg.rollup.batch_max_wait_ms = 200;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg = prepare_config(cfg, &world, &root);
    let work = tempfile::tempdir().unwrap();
    let through = world.last_day;
    let opts = Options {
        through,
        step_days,
        csv_every_days: None,
        work_dir: work.path().to_path_buf(),
    };
    let mut p = Pipeline::start(cfg.clone(), secrets(), world.clone(), opts)
        .await
        .expect("pipeline");
    p.replay(|_| {}).await.expect("replay");
    p.wait_caught_up(Duration::from_secs(180))
        .await
        .expect("caught up");
    let raw = p.raw_records;
    p.stop().await.expect("clean stop");
    assert!(raw > 1_000, "the connectors published {raw} raw records");

    let expected = expected_metrics_under(&world, through, through, &sim_policy);
    let p = &sim_policy;
    let db = rollcall_clickhouse::connect(&cfg.clickhouse, &secrets());

    // Every student at every school.
    let rows: Vec<StudentView> = db
        .query(
            "SELECT district_id, school_id, student_id, days_enrolled, toUInt64(round(days_absent * 1000)), \
             toUInt64(round(days_absent_excused * 1000)), toUInt64(round(days_absent_unexcused * 1000)), \
             days_tardy, is_chronically_absent, toString(tier), meets_min_enrollment \
             FROM student_attendance WHERE days_enrolled > 0",
        )
        .fetch_all()
        .await
        .unwrap();
    let got: BTreeMap<(String, String, String), &StudentView> = rows
        .iter()
        .map(|r| {
            (
                (
                    r.district_id.clone(),
                    r.school_id.clone(),
                    r.student_id.clone(),
                ),
                r,
            )
        })
        .collect();
    let per_district = |it: &mut dyn Iterator<Item = String>| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        it.for_each(|d| *m.entry(d).or_default() += 1);
        m
    };
    assert_eq!(
        per_district(&mut got.keys().map(|k| k.0.clone())),
        per_district(&mut expected.students.iter().map(|s| s.district_id.clone())),
        "student-school rows per district"
    );
    for e in &expected.students {
        let key = (
            e.district_id.clone(),
            e.school_id.to_string(),
            e.student_id.clone(),
        );
        let g = got
            .get(&key)
            .unwrap_or_else(|| panic!("no view row for {key:?}"));
        let ctx = format!("{key:?}: view {g:?} vs expected {e:?}");
        assert_eq!(u64::from(g.days_enrolled), e.days_enrolled, "{ctx}");
        assert_eq!(g.absent_milli, milli(e.days_absent), "{ctx}");
        assert_eq!(g.excused_milli, milli(e.days_excused), "{ctx}");
        assert_eq!(g.unexcused_milli, milli(e.days_unexcused), "{ctx}");
        assert_eq!(u64::from(g.days_tardy), e.days_tardy, "{ctx}");
        assert_eq!(g.meets_min_enrollment == 1, e.meets_min_enrollment, "{ctx}");
        assert_eq!(g.is_chronically_absent == 1, e.chronically_absent, "{ctx}");
        assert_eq!(g.tier, e.tier.as_str(), "{ctx}");
    }

    // Every school (FS195: per school), every district and the state (distinct students).
    let mut schools: Vec<AggregateView> = db
        .query(&format!(
            "SELECT concat(district_id, '/', school_id), {AGG} FROM school_chronic_absence"
        ))
        .fetch_all()
        .await
        .unwrap();
    let mut want: Vec<AggregateView> = expected
        .schools
        .iter()
        .map(|s| expected_aggregate(format!("{}/{}", s.district_id, s.school_id), &s.counts, p))
        .collect();
    want.sort_by(|a, b| a.key.cmp(&b.key));
    schools.sort_by(|a, b| a.key.cmp(&b.key));
    assert!(
        want.iter().any(|s| s.suppressed == 0),
        "some schools are large enough to publish"
    );
    assert_eq!(schools, want, "schools");
    let mut districts: Vec<AggregateView> = db
        .query(&format!(
            "SELECT district_id, {AGG} FROM district_chronic_absence"
        ))
        .fetch_all()
        .await
        .unwrap();
    let mut want: Vec<AggregateView> = expected
        .districts
        .iter()
        .map(|d| expected_aggregate(d.district_id.clone(), &d.counts, p))
        .collect();
    want.sort_by(|a, b| a.key.cmp(&b.key));
    districts.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(districts, want, "districts");
    let state: Vec<AggregateView> = db
        .query(&format!("SELECT 'state', {AGG} FROM state_chronic_absence"))
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        state,
        vec![expected_aggregate("state".into(), &expected.state, p)],
        "state"
    );

    // School by grade: the pipeline shows the SIS's grade string, the simulator its own
    // grade; per school, the rows must be the same multiset of counts.
    let got: Vec<SmallView> = db
        .query(&format!(
            "SELECT concat(district_id, '/', school_id), {SMALL} FROM school_chronic_absence_by_grade"
        ))
        .fetch_all()
        .await
        .unwrap();
    let mut got_by_school: BTreeMap<String, Vec<SmallView>> = BTreeMap::new();
    for r in got {
        got_by_school.entry(r.key.clone()).or_default().push(r);
    }
    let mut want_by_school: BTreeMap<String, Vec<SmallView>> = BTreeMap::new();
    for g in &expected.grades {
        let key = format!("{}/{}", g.district_id, g.school_id);
        let c = &g.counts;
        want_by_school
            .entry(key.clone())
            .or_default()
            .push(expected_small(
                key,
                c.students_meeting_min_enrollment,
                c.chronically_absent,
                p,
            ));
    }
    for rows in got_by_school
        .values_mut()
        .chain(want_by_school.values_mut())
    {
        rows.sort();
    }
    assert_eq!(got_by_school, want_by_school, "schools by grade");

    // The trend: every school on every date.
    let mut got: Vec<SmallView> = db
        .query(&format!(
            "SELECT concat(district_id, '/', school_id, ' ', toString(date)), {SMALL} FROM chronic_absence_trend"
        ))
        .fetch_all()
        .await
        .unwrap();
    got.sort();
    let mut want: Vec<SmallView> = expected
        .trend
        .iter()
        .map(|t| {
            expected_small(
                format!("{}/{} {}", t.district_id, t.school_id, t.date),
                t.students_meeting_min_enrollment,
                t.chronically_absent,
                p,
            )
        })
        .collect();
    want.sort();
    assert!(
        want.iter()
            .any(|t| t.suppressed == 0 && t.students_chronically_absent > Some(0)),
        "some trend rows publish chronic students"
    );
    assert_eq!(got.len(), want.len(), "trend rows");
    assert_eq!(got, want, "trend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_equal_the_simulators_expected_metrics() {
    // Two districts (Ed-Fi, PowerSchool CSV), two schools each, big enough that
    // aggregates are published rather than suppressed.
    let mut sim = SimConfig::small(11);
    for d in &mut sim.districts {
        d.students_per_school = 400;
    }
    views_equal_expected_under(sim, Policy::default(), SimPolicy::default(), 30).await;
}

/// Every view setting away from its default, the same numbers given to the pipeline's
/// policy and to the simulator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_equal_the_simulators_expected_metrics_under_another_policy() {
    let mut sim = SimConfig::small(12);
    for d in &mut sim.districts {
        d.students_per_school = 60;
    }
    let policy = Policy {
        chronic_threshold: 0.15,
        min_enrolled_days: 20,
        tiers: Tiers {
            at_risk: 0.07,
            moderate_chronic: 0.15,
            severe_chronic: 0.25,
        },
        publication_threshold: 5,
        suppress_zero_counts: false,
        ..Policy::default()
    };
    let sim_policy = SimPolicy {
        chronic_bp: 1500,
        min_enrolled_days: 20,
        at_risk_bp: 700,
        moderate_chronic_bp: 1500,
        severe_chronic_bp: 2500,
        publication_threshold: 5,
        suppress_zero_counts: false,
    };
    assert_ne!(sim_policy, SimPolicy::default());
    // Fewer, longer steps than the default run: the policy is what this run checks.
    views_equal_expected_under(sim, policy, sim_policy, 120).await;
}
