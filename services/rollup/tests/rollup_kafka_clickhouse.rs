//! The rollup through the real Kafka and ClickHouse: after the stream, the tables equal
//! the reference calculation exactly; then a correction (unexcused → excused) for one
//! student arrives and the tables reflect it within seconds.

mod common;

use std::time::Duration;

use common::*;
use rollcall_kafka::Topics;
use rollcall_model::{Category, Operation};
use rollcall_testkit::{clickhouse_with_unique_db, config_with_fresh_topics, secrets, unique};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_equal_the_reference_and_corrections_show_within_seconds() {
    let mut cfg = config_with_fresh_topics("rollup").await;
    cfg.clickhouse = clickhouse_with_unique_db("rollup");
    cfg.rollup.as_of = Some("2025-10-31".into());
    cfg.rollup.http_port = 0;
    cfg.rollup.batch_max_wait_ms = 200;
    let as_of = d(2025, 10, 31);
    let server = rollcall_clickhouse::connect_server(&cfg.clickhouse, &secrets());
    rollcall_clickhouse::migrate(
        &server,
        &cfg.clickhouse.database,
        &rollcall_clickhouse::embedded_migrations(),
    )
    .await
    .unwrap();
    let db = rollcall_clickhouse::connect(&cfg.clickhouse, &secrets());
    let topics = Topics::new(&cfg.kafka.topic_prefix);

    let mut scenario = Scenario::generate(300);
    send(&cfg, &scenario.records(&topics), &unique("rollup-producer"));
    let stop = CancellationToken::new();
    let task = tokio::spawn(rollcall_rollup::run(cfg.clone(), secrets(), stop.clone()));

    let want = scenario.reference(&cfg, as_of);
    assert!(
        want.1.iter().any(|m| m.is_chronically_absent == 1),
        "the scenario has chronic absence"
    );
    assert!(want
        .1
        .iter()
        .any(|m| m.events_outside_enrollment > 0 && m.events_non_instructional > 0));
    wait_for_reference(&db, &want, Duration::from_secs(120)).await;

    // A correction weeks later: s00001's unexcused day becomes excused.
    let victim = scenario
        .final_events
        .values()
        .find(|e| {
            e.category == Category::UnexcusedAbsence
                && e.absent_fraction == 1.0
                && e.date < d(2025, 9, 20)
        })
        .cloned()
        .expect("an unexcused day to correct");
    let mut del = victim.clone();
    del.operation = Operation::Delete;
    del.source_version = 100;
    let mut fixed = event(
        &victim.student_id,
        &victim.school_id,
        victim.date,
        Category::ExcusedAbsence,
        1.0,
        100,
    );
    fixed.source_key = format!("{}:corrected", victim.source_key);
    let before = scenario.events.len();
    scenario.send_event(del);
    scenario.send_event(fixed);
    let mut correction = Scenario::default();
    correction.events = scenario.events[before..].to_vec();
    send(
        &cfg,
        &correction.records(&topics),
        &unique("rollup-correction"),
    );
    let want = scenario.reference(&cfg, as_of);
    let took = wait_for_reference(&db, &want, Duration::from_secs(30)).await;
    assert_views_equal_reference(&db, &want.1).await;
    eprintln!("correction visible in {took:?}");
    assert!(
        took < Duration::from_secs(10),
        "the correction showed after {took:?}"
    );

    stop.cancel();
    task.await.unwrap().unwrap();
    server
        .query(&format!("DROP DATABASE {}", cfg.clickhouse.database))
        .execute()
        .await
        .unwrap();
}

#[derive(clickhouse::Row, serde::Deserialize, Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct StudentView {
    school_id: String,
    student_id: String,
    days_enrolled: u32,
    absent_milli: u64,
    excused_milli: u64,
    unexcused_milli: u64,
    suspended_milli: u64,
    days_tardy: u32,
    is_chronically_absent: u8,
    tier: String,
    is_truant: u8,
    last_30_milli: u64,
}

#[derive(clickhouse::Row, serde::Deserialize, Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct Aggregate {
    key: String,
    enrolled: Option<u64>,
    chronic: Option<u64>,
    tiers: Vec<Option<u64>>,
    suppressed: u8,
}

/// Counts → what an aggregate view row shows under the default policy (a count of 1..9
/// suppresses the whole row; zeros are published).
fn aggregate(key: String, enrolled: u64, chronic: u64, tiers: [u64; 4]) -> Aggregate {
    let small = |v: u64| v > 0 && v < 10;
    let suppressed = small(enrolled) || small(chronic) || tiers.iter().any(|t| small(*t));
    let show = |v: u64| (!suppressed).then_some(v);
    Aggregate {
        key,
        enrolled: show(enrolled),
        chronic: show(chronic),
        tiers: tiers.iter().map(|t| show(*t)).collect(),
        suppressed: suppressed as u8,
    }
}

const AGG: &str = "toNullable(toUInt64(students_enrolled)), toNullable(toUInt64(students_chronically_absent)), \
    [toNullable(toUInt64(students_satisfactory)), toNullable(toUInt64(students_at_risk)), \
     toNullable(toUInt64(students_moderate_chronic)), toNullable(toUInt64(students_severe_chronic))], suppressed";

/// Every BI view equals what the reference rows say, computed here in plain Rust.
async fn assert_views_equal_reference(
    db: &rollcall_clickhouse::Client,
    metrics: &[rollcall_clickhouse::rows::StudentMetricsRow],
) {
    use rollcall_clickhouse::rows::TierValue;
    let tier_name = |t: TierValue| match t {
        TierValue::Satisfactory => "satisfactory",
        TierValue::AtRisk => "at_risk",
        TierValue::ModerateChronic => "moderate_chronic",
        TierValue::SevereChronic => "severe_chronic",
    };
    // student_attendance
    let mut got: Vec<StudentView> = db
        .query(
            "SELECT school_id, student_id, days_enrolled, toUInt64(round(days_absent * 1000)), \
             toUInt64(round(days_absent_excused * 1000)), toUInt64(round(days_absent_unexcused * 1000)), \
             toUInt64(round(days_suspended * 1000)), days_tardy, is_chronically_absent, toString(tier), \
             is_truant, toUInt64(round(days_absent_last_30 * 1000)) FROM student_attendance",
        )
        .fetch_all()
        .await
        .unwrap();
    let mut want: Vec<StudentView> = metrics
        .iter()
        .map(|m| StudentView {
            school_id: m.school_id.clone(),
            student_id: m.student_id.clone(),
            days_enrolled: m.days_enrolled,
            absent_milli: m.absent_milli.into(),
            excused_milli: m.excused_milli.into(),
            unexcused_milli: m.unexcused_milli.into(),
            suspended_milli: m.suspended_milli.into(),
            days_tardy: m.days_tardy,
            is_chronically_absent: m.is_chronically_absent,
            tier: tier_name(m.tier).to_string(),
            is_truant: m.is_truant,
            last_30_milli: m.absent_last_30_milli.into(),
        })
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "student_attendance");

    // school_chronic_absence: FS195, each school on its own rows
    let mut schools: std::collections::BTreeMap<String, (u64, u64, [u64; 4])> = Default::default();
    for m in metrics {
        let e = schools
            .entry(format!("{}/{}", m.district_id, m.school_id))
            .or_default();
        if m.meets_min_enrollment == 1 {
            e.0 += 1;
            e.2[m.tier as usize - 1] += 1;
        }
        e.1 += u64::from(m.is_chronically_absent);
    }
    let want: Vec<Aggregate> = schools
        .into_iter()
        .map(|(k, (n, c, t))| aggregate(k, n, c, t))
        .collect();
    let mut got: Vec<Aggregate> = db
        .query(&format!(
            "SELECT concat(district_id, '/', school_id), {AGG} FROM school_chronic_absence"
        ))
        .fetch_all()
        .await
        .unwrap();
    got.sort();
    assert_eq!(got, want, "school_chronic_absence");

    // district and state: distinct students judged on their combined days
    let mut students: std::collections::BTreeMap<(String, String), (u64, u64)> = Default::default();
    for m in metrics {
        let e = students
            .entry((m.district_id.clone(), m.student_id.clone()))
            .or_default();
        e.0 += u64::from(m.days_enrolled);
        e.1 += u64::from(m.absent_milli);
    }
    let judge = |rows: &mut dyn Iterator<Item = (u64, u64)>| {
        let (mut n, mut c, mut t) = (0, 0, [0u64; 4]);
        for (de, am) in rows {
            if de < 10 {
                continue;
            }
            n += 1;
            c += u64::from(am >= de * 100);
            let tier = if am < de * 50 {
                0
            } else if am < de * 100 {
                1
            } else if am < de * 200 {
                2
            } else {
                3
            };
            t[tier] += 1;
        }
        (n, c, t)
    };
    let (n, c, t) = judge(&mut students.values().copied());
    let want = vec![aggregate("state".into(), n, c, t)];
    let got: Vec<Aggregate> = db
        .query(&format!("SELECT 'state', {AGG} FROM state_chronic_absence"))
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(got, want, "state_chronic_absence");
    let got: Vec<Aggregate> = db
        .query(&format!(
            "SELECT district_id, {AGG} FROM district_chronic_absence"
        ))
        .fetch_all()
        .await
        .unwrap();
    let want = vec![aggregate(DISTRICT.into(), n, c, t)];
    assert_eq!(got, want, "district_chronic_absence (one district)");

    // chronic_absence_trend: its last date equals the school view's unsuppressed counts
    let trend: Vec<(String, u64)> = db
        .query("SELECT toString(max(date)), toUInt64(count()) FROM chronic_absence_trend")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(trend.len(), 1);
    assert!(trend[0].1 > 0, "the trend has points");
}
