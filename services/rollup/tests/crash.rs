//! Crash test: the rollup runs as its own process and is killed with SIGKILL several
//! times mid-stream, and ClickHouse itself is restarted once while it works. After a
//! final restart the tables still equal the reference exactly: nothing lost, nothing
//! counted twice.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use rollcall_kafka::Topics;
use rollcall_testkit::{clickhouse_with_unique_db, config_with_fresh_topics, secrets, unique};

/// Kills the process when dropped, so a failing assertion leaves no orphan behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cfg: &rollcall_config::Config) -> Running {
    Running(
        Command::new(env!("CARGO_BIN_EXE_rollcall-rollup"))
            .env("ROLLCALL_KAFKA__BROKERS", &cfg.kafka.brokers)
            .env("ROLLCALL_KAFKA__TOPIC_PREFIX", &cfg.kafka.topic_prefix)
            .env("ROLLCALL_ROLLUP__GROUP_ID", &cfg.rollup.group_id)
            .env("ROLLCALL_ROLLUP__HTTP_PORT", "0")
            .env("ROLLCALL_ROLLUP__BATCH_MAX_ROWS", "250")
            .env("ROLLCALL_ROLLUP__AS_OF", "2025-10-31")
            .env("ROLLCALL_CLICKHOUSE__URL", &cfg.clickhouse.url)
            .env("ROLLCALL_CLICKHOUSE__DATABASE", &cfg.clickhouse.database)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rollcall-rollup"),
    )
}

fn clickhouse(action: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/clickhouse.sh");
    let ok = Command::new("bash")
        .arg(script)
        .arg(action)
        .status()
        .unwrap()
        .success();
    assert!(ok, "deploy/local/clickhouse.sh {action}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_a_clickhouse_restart_lose_nothing_and_count_nothing_twice() {
    let mut cfg = config_with_fresh_topics("rollupcrash").await;
    cfg.clickhouse = clickhouse_with_unique_db("rollupcrash");
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
    let scenario = Scenario::generate(6_000);
    let records = scenario.records(&topics);
    eprintln!("{} normalized records", records.len());
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let owned = rollcall_rollup::owned_partitions(&cfg, &secrets()).unwrap();
    // Uncommitted records (end − committed) right after a kill: > 0 means the kill
    // landed mid-stream.
    let lag = || {
        let r =
            rollcall_kafka::AssignedReader::from_beginning(&client, &cfg.rollup.group_id, &owned)
                .unwrap();
        let committed = r.committed().unwrap();
        let end = r.end_offsets().unwrap();
        end.iter()
            .map(|(tp, hi)| hi - committed.get(tp).map(|c| c.offset).unwrap_or(0))
            .sum::<i64>()
    };

    // The stream arrives in waves while the rollup is killed again and again.
    let waves: Vec<&[rollcall_kafka::OutRecord]> = records.chunks(records.len() / 4 + 1).collect();
    let mut lags = Vec::new();
    for (round, (wave, wait_ms)) in waves.iter().zip([900u64, 700, 1100, 1300]).enumerate() {
        send(&cfg, wave, &unique("rollupcrash-producer"));
        let child = spawn(&cfg);
        if round == 2 {
            // ClickHouse goes away while the rollup works, then comes back.
            std::thread::sleep(Duration::from_millis(300));
            clickhouse("stop");
            std::thread::sleep(Duration::from_millis(1500));
            clickhouse("start");
        }
        std::thread::sleep(Duration::from_millis(wait_ms));
        drop(child); // SIGKILL
        lags.push(lag());
    }
    eprintln!("uncommitted records right after each kill: {lags:?}");
    assert!(
        lags.iter().any(|l| *l > 0),
        "at least one kill must land mid-stream: {lags:?}"
    );

    let want = scenario.reference(&cfg, d(2025, 10, 31));
    let child = spawn(&cfg);
    wait_for_reference(&db, &want, Duration::from_secs(240)).await;
    drop(child);
    server
        .query(&format!("DROP DATABASE {}", cfg.clickhouse.database))
        .execute()
        .await
        .unwrap();
}
