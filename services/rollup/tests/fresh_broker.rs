//! The rollup on a freshly formatted broker and through a broker restart. On a new
//! broker the group coordinator answers `NotCoordinator` / `CoordinatorLoadInProgress`
//! for a while: `topics create; migrate; rollup` used to exit 1 every time. And a broker
//! restart mid-stream used to stop it on `WaitingForCoordinator` / transport failures.
//! Runs its own broker and ClickHouse (deploy/local on other ports), never the shared
//! ones. Ports: ROLLCALL_FRESH_{KAFKA_PORT,KAFKA_CONTROLLER_PORT,CLICKHOUSE_HTTP_PORT,
//! CLICKHOUSE_TCP_PORT}, ROLLCALL_FRESH_LOCAL_DIR.

mod common;

use std::time::Duration;

use common::*;
use rollcall_kafka::Topics;
use rollcall_model::{Category, Operation};
use rollcall_testkit::procs::{LocalStack, StackOptions};
use rollcall_testkit::{config, secrets, unique};
use tokio_util::sync::CancellationToken;

fn port(var: &str, default: u16) -> u16 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollup_starts_on_a_fresh_broker_and_rides_out_a_broker_restart() {
    let mut opts = StackOptions::from_env("ROLLCALL_FRESH", "rollup-fresh").unwrap();
    // Away from the chaos test's defaults (29392...), so both can run at once.
    opts.kafka_port = port("ROLLCALL_FRESH_KAFKA_PORT", 29492);
    opts.kafka_controller_port = port("ROLLCALL_FRESH_KAFKA_CONTROLLER_PORT", 29493);
    opts.clickhouse_http_port = port("ROLLCALL_FRESH_CLICKHOUSE_HTTP_PORT", 28423);
    opts.clickhouse_tcp_port = port("ROLLCALL_FRESH_CLICKHOUSE_TCP_PORT", 29400);
    let stack = LocalStack::start(opts).expect("start a private Kafka and ClickHouse");

    let mut cfg = config();
    cfg.kafka.brokers = stack.kafka_brokers();
    cfg.kafka.topic_prefix = unique("fresh");
    cfg.rollup.group_id = format!("{}-rollup", cfg.kafka.topic_prefix);
    cfg.clickhouse.url = stack.clickhouse_url();
    cfg.clickhouse.database = "rollcall_fresh".into();
    cfg.rollup.as_of = Some("2025-10-31".into());
    cfg.rollup.http_port = 0;
    cfg.rollup.batch_max_wait_ms = 200;
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    rollcall_kafka::ensure_topics(
        &client,
        &topics.specs(cfg.kafka.partitions, cfg.kafka.replication_factor),
    )
    .await
    .unwrap();
    let server = rollcall_clickhouse::connect_server(&cfg.clickhouse, &secrets());
    rollcall_clickhouse::migrate(
        &server,
        &cfg.clickhouse.database,
        &rollcall_clickhouse::embedded_migrations(),
    )
    .await
    .unwrap();
    let db = rollcall_clickhouse::connect(&cfg.clickhouse, &secrets());

    // Start at once, as `topics create; migrate; rollup` does.
    let stop = CancellationToken::new();
    let task = tokio::spawn(rollcall_rollup::run(cfg.clone(), secrets(), stop.clone()));
    let mut scenario = Scenario::generate(20);
    send(&cfg, &scenario.records(&topics), &unique("fresh-producer"));
    let as_of = d(2025, 10, 31);
    wait_for_reference(
        &db,
        &scenario.reference(&cfg, as_of),
        Duration::from_secs(90),
    )
    .await;
    assert!(!task.is_finished(), "the rollup is still running");

    // The broker goes away and comes back: the rollup waits and goes on by itself.
    let away = stack.restart_kafka().expect("restart the private broker");
    eprintln!("broker away {:.1} s", away.as_secs_f64());
    // A correction sent while the rollup reconnects: an absence deleted.
    let victim = scenario
        .final_events
        .values()
        .find(|e| e.category != Category::Present)
        .cloned()
        .expect("an absence to delete");
    let mut del = victim;
    del.operation = Operation::Delete;
    del.source_version = 100;
    let before = scenario.events.len();
    scenario.send_event(del);
    let mut correction = Scenario::default();
    correction.events = scenario.events[before..].to_vec();
    send(
        &cfg,
        &correction.records(&topics),
        &unique("fresh-producer-2"),
    );
    wait_for_reference(
        &db,
        &scenario.reference(&cfg, as_of),
        Duration::from_secs(120),
    )
    .await;
    assert!(
        !task.is_finished(),
        "the rollup survived the broker restart"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
}
