//! Nothing vanishes in the rollup: a normalized record it cannot decode or apply goes
//! to the dead-letter topic (stage `rollup`, kind, reason, source coordinates) before
//! its offset is committed, and the records around it are applied as usual.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rollcall_kafka::{read_topic_to_end, DeadLetterHeaders, OutRecord, Topics};
use rollcall_testkit::{clickhouse_with_unique_db, config_with_fresh_topics, secrets, unique};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_rollup_cannot_use_are_dead_lettered_and_the_rest_applied() {
    let mut cfg = config_with_fresh_topics("rollup-rej").await;
    cfg.clickhouse = clickhouse_with_unique_db("rollup_rej");
    cfg.rollup.as_of = Some("2025-10-31".into());
    cfg.rollup.http_port = 0;
    cfg.rollup.batch_max_wait_ms = 200;
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

    let scenario = Scenario::generate(20);
    let mut records = scenario.records(&topics);
    let garbage = |topic: String, key: &str| OutRecord {
        topic,
        key: key.as_bytes().to_vec(),
        payload: b"\xc3\x01not avro at all".to_vec(),
        headers: vec![],
    };
    // In the middle of the stream, on two topics.
    let mid = records.len() / 2;
    records.insert(
        mid,
        garbage(topics.normalized("attendance"), "bad-attendance"),
    );
    records.insert(
        mid,
        garbage(topics.normalized("enrollment"), "bad-enrollment"),
    );
    send(&cfg, &records, &unique("rollup-rej-producer"));

    let stop = CancellationToken::new();
    let task = tokio::spawn(rollcall_rollup::run(cfg.clone(), secrets(), stop.clone()));
    let want = scenario.reference(&cfg, d(2025, 10, 31));
    wait_for_reference(&db, &want, Duration::from_secs(90)).await;

    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let normalized: Vec<String> = ["calendar", "enrollment", "attendance"]
        .iter()
        .map(|e| topics.normalized(e))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let dead = loop {
        let dead = read_topic_to_end(&client, &topics.dead_letters(), true).unwrap();
        let lag = rollcall_kafka::group_lag(&client, &cfg.rollup.group_id, &normalized).unwrap();
        if (dead.len() >= 2 && lag == 0) || Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    stop.cancel();
    task.await.unwrap().unwrap();

    let mut got: Vec<(String, String, String)> = dead
        .iter()
        .map(|r| {
            let h = DeadLetterHeaders::from_pairs(&r.headers);
            assert_eq!(h.stage, "rollup");
            assert!(!h.reason.is_empty());
            assert!(h.source_partition.is_some() && h.source_offset.is_some());
            assert_eq!(r.payload, b"\xc3\x01not avro at all");
            (
                h.source_key.unwrap_or_default(),
                h.kind,
                h.source_topic.unwrap_or_default(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "bad-attendance".to_string(),
                "undecodable".to_string(),
                topics.normalized("attendance")
            ),
            (
                "bad-enrollment".to_string(),
                "undecodable".to_string(),
                topics.normalized("enrollment")
            ),
        ]
    );
    assert_eq!(
        rollcall_kafka::group_lag(&client, &cfg.rollup.group_id, &normalized).unwrap(),
        0,
        "committed past them only once they were dead-lettered"
    );
}
