//! The connectors running live, as in production and in the bench's paced phase:
//! started once, each keeping its producer and polling the simulated SIS while its
//! clock moves. They publish exactly what day-by-day runs publish for the same steps.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcall_config::Config;
use rollcall_kafka::{Topics, ENTITIES};
use rollcall_pipeline::{prepare_config, Options, Sources};
use rollcall_sis_simulator::{generate, SimConfig, World};
use rollcall_testkit::{clickhouse_with_unique_db, config_with_fresh_topics, secrets};

async fn config(hint: &str, world: &World) -> Config {
    let mut cfg = config_with_fresh_topics(hint).await;
    cfg.clickhouse = clickhouse_with_unique_db(hint);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    prepare_config(cfg, world, &root)
}

/// Committed raw records per topic and Kafka key.
fn raw_keys(cfg: &Config) -> BTreeMap<(String, Vec<u8>), usize> {
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let mut out = BTreeMap::new();
    for e in ENTITIES {
        let t = topics.raw(e);
        for r in rollcall_kafka::read_topic_to_end(&client, &t, true).expect("read") {
            *out.entry((t.clone(), r.key.unwrap_or_default()))
                .or_default() += 1;
        }
    }
    out
}

async fn wait_for(cfg: &Config, n: usize) -> BTreeMap<(String, Vec<u8>), usize> {
    let started = Instant::now();
    loop {
        let c = cfg.clone();
        let keys = tokio::task::spawn_blocking(move || raw_keys(&c))
            .await
            .unwrap();
        let total: usize = keys.values().sum();
        assert!(
            total <= n,
            "{total} raw records published, more than the {n} expected"
        );
        if total == n {
            return keys;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "only {total} of {n} raw records after 90 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_connectors_publish_what_stepped_runs_publish() {
    let world = Arc::new(generate(&SimConfig::small(11)).expect("simulated year"));
    let (first, last) = (world.first_day, world.last_day);
    let opts = |dir: &tempfile::TempDir| Options {
        through: last,
        step_days: 1,
        csv_every_days: None,
        work_dir: dir.path().to_path_buf(),
    };

    // Day by day, as the demo runs them: the first day, then the last with CSV drops.
    let (cfg_a, dir_a) = (
        config("stepped", &world).await,
        tempfile::tempdir().unwrap(),
    );
    let mut a = Sources::start(cfg_a.clone(), secrets(), world.clone(), opts(&dir_a))
        .await
        .expect("sources");
    let first_step = a
        .step_with(first, false)
        .await
        .expect("first day")
        .raw_records;
    let second_step = a.step_with(last, true).await.expect("last day").raw_records;
    a.stop();
    assert!(
        first_step > 0 && second_step > 1_000,
        "{first_step} then {second_step}"
    );
    let stepped = wait_for(&cfg_a, (first_step + second_step) as usize).await;

    // Live: the same two moves of the clock, the connectors polling every 50 ms.
    let (cfg_b, dir_b) = (config("live", &world).await, tempfile::tempdir().unwrap());
    let mut b = Sources::start(cfg_b.clone(), secrets(), world.clone(), opts(&dir_b))
        .await
        .expect("sources");
    b.start_live(Duration::from_millis(50)).expect("live");
    assert!(b.step(last).await.is_err(), "no stepping while live");
    wait_for(&cfg_b, first_step as usize).await;
    b.drop_csv_exports(last).expect("csv drop");
    b.sim().expect("an Ed-Fi district").set_day(last);
    let live = wait_for(&cfg_b, (first_step + second_step) as usize).await;
    let report = b.stop_live().await.expect("stop");
    b.stop();

    assert_eq!(report.raw_records, first_step + second_step);
    assert_eq!(
        stepped
            .iter()
            .map(|((t, k), n)| (
                (t.replacen(&cfg_a.kafka.topic_prefix, "", 1), k.clone()),
                *n
            ))
            .collect::<BTreeMap<_, _>>(),
        live.iter()
            .map(|((t, k), n)| (
                (t.replacen(&cfg_b.kafka.topic_prefix, "", 1), k.clone()),
                *n
            ))
            .collect::<BTreeMap<_, _>>(),
        "the same records per topic and key"
    );
}
