//! Shared helpers for integration and end-to-end tests: where the real services are, and unique
//! names so tests run in parallel and re-run without cleanup.
//!
//! The services are started by `scripts/test.sh` (deploy/local/infra.sh up). If they
//! are not reachable, tests fail with the reason — they are never skipped.

pub mod procs;

use std::time::{SystemTime, UNIX_EPOCH};

use rollcall_config::{ClickHouseConfig, Config, KafkaConfig, Secrets};

/// The configuration tests use: defaults (the local infrastructure) plus any
/// ROLLCALL_<SECTION>__<KEY> overrides from the environment.
pub fn config() -> Config {
    Config::load(None).expect("test configuration")
}

pub fn kafka() -> KafkaConfig {
    config().kafka
}

pub fn secrets() -> Secrets {
    Secrets::from_env().expect("secrets from environment")
}

/// A name unique to this test run: `{prefix}_{pid}_{nanos}_{random}`.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let rnd = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        &rnd[..8]
    )
}

/// ClickHouse settings pointing at a fresh, unique database.
pub fn clickhouse_with_unique_db(prefix: &str) -> ClickHouseConfig {
    let mut ch = config().clickhouse;
    ch.database = unique(prefix);
    ch
}

/// Fail loudly (with the fix) when a service is down.
pub fn require_services() {
    let cfg = config();
    let kafka = cfg
        .kafka
        .brokers
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    if std::net::TcpStream::connect(&kafka).is_err() {
        panic!(
            "Kafka is not reachable at {kafka}. Start it with `deploy/local/infra.sh up` \
             (scripts/test.sh does this for you)."
        );
    }
    let ch = cfg
        .clickhouse
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    if std::net::TcpStream::connect(&ch).is_err() {
        panic!(
            "ClickHouse is not reachable at {}. Start it with `deploy/local/infra.sh up` \
             (scripts/test.sh does this for you).",
            cfg.clickhouse.url
        );
    }
}

/// A configuration whose Kafka topic prefix (and consumer group names) are unique to
/// this test, with every rollcall topic created.
pub async fn config_with_fresh_topics(hint: &str) -> Config {
    require_services();
    let mut cfg = config();
    cfg.kafka.topic_prefix = unique(hint);
    cfg.normalizer.group_id = format!("{}-normalizer", cfg.kafka.topic_prefix);
    cfg.rollup.group_id = format!("{}-rollup", cfg.kafka.topic_prefix);
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let specs = rollcall_kafka::Topics::new(&cfg.kafka.topic_prefix)
        .specs(cfg.kafka.partitions, cfg.kafka.replication_factor);
    rollcall_kafka::ensure_topics(&client, &specs)
        .await
        .expect("create the test's topics");
    cfg
}
