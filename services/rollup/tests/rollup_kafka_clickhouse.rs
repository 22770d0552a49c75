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
