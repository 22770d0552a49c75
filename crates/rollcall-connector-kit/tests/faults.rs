//! The kit against the real Kafka: a record the broker would refuse becomes a dead
//! letter (the stream goes on), and connectors run in one process are supervised — a
//! failed one is restarted (not ready meanwhile) or stops the process, never silently
//! gone, whatever the order of their names; each port reports its own connector.

use std::time::{Duration, Instant};

use rollcall_config::Config;
use rollcall_connector_kit::{
    async_trait, run, run_supervised, Backoff, Batch, Checkpoint, ConnectorError, Entity, Factory,
    PayloadFormat, RawEnvelope, RawOperation, RawRecord, RunArgs, RunOptions, SisConnector,
};
use rollcall_kafka::limits::{MAX_DEAD_LETTER_PAYLOAD_BYTES, MAX_RAW_PAYLOAD_BYTES};
use rollcall_kafka::{read_topic_to_end, DeadLetter, DeadLetterHeaders, OutRecord, Topics};
use rollcall_testkit::{config_with_fresh_topics, secrets};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A connector of the tests: `records` records (payload `payload_bytes` each, the one
/// at `huge_at` of `huge_bytes`), in one batch, then caught up; or, with `fatal`, a
/// fatal error on its first call.
struct TestConnector {
    id: String,
    section: serde_json::Value,
}

fn record(i: u64, payload: usize) -> RawRecord {
    RawRecord {
        key: format!("d1/s{i}"),
        envelope: RawEnvelope {
            source_system: "test".into(),
            source_instance: "t".into(),
            district_id: "d1".into(),
            entity: Entity::Attendance,
            operation: RawOperation::Upsert,
            natural_key: format!("attendance:s{i}"),
            old_natural_key: None,
            source_version: i as i64 + 1,
            observed_at_ms: 0,
            payload_format: PayloadFormat::FlatJson,
            payload: vec![b'x'; payload],
        },
    }
}

#[async_trait]
impl SisConnector for TestConnector {
    fn id(&self) -> &str {
        &self.id
    }
    async fn next_batch(&mut self, cp: Option<&Checkpoint>) -> Result<Batch, ConnectorError> {
        let s = &self.section;
        if s["fatal"].as_bool() == Some(true) {
            return Err(ConnectorError::fatal("the source refused our credentials"));
        }
        if cp.is_some() {
            return Ok(Batch {
                records: Vec::new(),
                dead_letters: Vec::new(),
                checkpoint: cp.cloned().unwrap(),
                caught_up: true,
                progress: None,
            });
        }
        let n = s["records"].as_u64().unwrap_or(3);
        let huge_at = s["huge_at"].as_u64();
        let records = (0..n)
            .map(|i| {
                let size = if Some(i) == huge_at {
                    s["huge_bytes"].as_u64().unwrap() as usize
                } else {
                    100
                };
                record(i, size)
            })
            .collect();
        Ok(Batch {
            records,
            dead_letters: Vec::new(),
            checkpoint: Checkpoint(json!({"done": n})),
            caught_up: true,
            progress: None,
        })
    }
    fn poll_interval(&self) -> Duration {
        Duration::from_millis(100)
    }
}

fn build(name: &str, section: serde_json::Value) -> anyhow::Result<Box<dyn SisConnector>> {
    Ok(Box::new(TestConnector {
        id: format!("test:{name}"),
        section,
    }))
}

const FACTORY: Factory = Factory {
    kind: "test",
    about: "test connector",
    build,
};

fn opts() -> RunOptions {
    RunOptions {
        http: None,
        stop_when_caught_up: true,
        show_progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_raw_payload_cap_becomes_a_dead_letter_and_the_batch_commits() {
    let cfg = config_with_fresh_topics("kit_oversized").await;
    // 1.2 MB: over the producer's message.max.bytes as well. Before this fix the
    // transaction failed on commit (MessageSizeTooLarge) and the run failed, again on
    // every restart.
    let huge = 1_200_000usize;
    let c = build(
        "big",
        json!({"records": 5, "huge_at": 2, "huge_bytes": huge}),
    )
    .unwrap();
    let s = run(c, &cfg, &secrets(), opts(), CancellationToken::new())
        .await
        .expect("the batch commits");
    assert_eq!((s.records, s.dead_letters, s.batches), (4, 1, 1), "{s:?}");

    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let raw = read_topic_to_end(&client, &topics.raw("attendance"), true).unwrap();
    assert_eq!(raw.len(), 4, "the other records of the batch are published");
    assert!(raw.iter().all(|r| r.key.as_deref() != Some(&b"d1/s2"[..])));
    let dls = read_topic_to_end(&client, &topics.dead_letters(), true).unwrap();
    assert_eq!(dls.len(), 1);
    let h = DeadLetterHeaders::from_pairs(&dls[0].headers);
    assert_eq!(
        (h.stage.as_str(), h.kind.as_str()),
        ("connector", "raw_record_too_large")
    );
    assert!(h.reason.contains(&format!("{huge} bytes")), "{}", h.reason);
    assert!(
        h.reason.contains(&MAX_RAW_PAYLOAD_BYTES.to_string()),
        "{}",
        h.reason
    );
    assert!(h.reason.contains("attendance:s2"), "{}", h.reason);
    assert_eq!(h.district.as_deref(), Some("d1"));
    assert_eq!(h.source_key.as_deref(), Some("attendance:s2"));
    assert_eq!(h.source_topic, Some(topics.raw("attendance")));
    assert_eq!(dls[0].key.as_deref(), Some(&b"d1/s2"[..]));
    assert_eq!(
        dls[0].payload.len(),
        MAX_DEAD_LETTER_PAYLOAD_BYTES,
        "cut to fit"
    );
    assert_eq!(
        DeadLetter::original_payload_len(&dls[0].headers),
        Some(huge)
    );
    // and the checkpoint after the batch committed with it
    let cps = read_topic_to_end(&client, &topics.connector_checkpoints(), true).unwrap();
    assert_eq!(cps.len(), 1);
}

/// GET `path` on `addr`: (status, body).
/// (0, "") while nothing listens there yet.
async fn get(addr: &str, path: &str) -> (u16, String) {
    match reqwest::get(format!("http://{addr}{path}")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (bounded) until `f` holds.
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn with_connectors(mut cfg: Config, sections: serde_json::Value) -> Config {
    cfg.connectors = serde_json::from_value(sections).unwrap();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_connector_is_restarted_and_not_ready_while_the_other_runs_on() {
    let base = config_with_fresh_topics("kit_supervise").await;
    let (pa, pb) = (free_port(), free_port());
    let cfg = with_connectors(
        base,
        json!({
            "a": {"kind": "test", "http_port": pa, "records": 3},
            "b": {"kind": "test", "http_port": pb, "records": 2},
        }),
    );
    // b's checkpoint cannot be read (not JSON): each run of b fails at start — the
    // kind of failure that needs an operator, not a process exit.
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let put = |payload: &[u8]| {
        let p =
            rollcall_kafka::TxnProducer::new(&client, &rollcall_testkit::unique("put")).unwrap();
        p.send_all(&[OutRecord {
            topic: topics.connector_checkpoints(),
            key: b"test:b".to_vec(),
            payload: payload.to_vec(),
            headers: Vec::new(),
        }])
        .unwrap();
    };
    put(b"not json");
    let stop = CancellationToken::new();
    let run = {
        let (cfg, stop) = (cfg.clone(), stop.clone());
        tokio::spawn(async move {
            run_supervised(
                &[FACTORY],
                &cfg,
                &secrets(),
                &RunArgs {
                    names: Vec::new(),
                    once: false,
                    no_progress: true,
                },
                stop,
                Backoff::new(Duration::from_millis(100), Duration::from_millis(300)),
            )
            .await
        })
    };
    let (a, b) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));
    let limit = Duration::from_secs(30);
    wait_for("a ready", limit, || async {
        get(&a, "/readyz").await.0 == 200
    })
    .await;
    wait_for("b restarted twice", limit, || async {
        get(&b, "/metrics").await.1.lines().any(|l| {
            l.starts_with("rollcall_connector_restarts_total{connector=\"test:b\"}")
                && l.split(' ').next_back().and_then(|v| v.parse::<f64>().ok()) >= Some(2.0)
        })
    })
    .await;
    // b is stuck: not ready, but alive (it is being retried); a is fine.
    assert_eq!(get(&b, "/readyz").await.0, 503);
    assert_eq!(get(&b, "/healthz").await.0, 200);
    assert_eq!(get(&a, "/readyz").await.0, 200);
    assert!(!run.is_finished(), "nobody brought the process down");
    // Each port shows its own connector's metrics only.
    let ma = get(&a, "/metrics").await.1;
    assert!(
        ma.contains("rollcall_connector_batches_total{connector=\"test:a\"}"),
        "{ma}"
    );
    assert!(!ma.contains("test:b"), "{ma}");
    let mb = get(&b, "/metrics").await.1;
    assert!(!mb.contains("test:a"), "{mb}");

    // The operator resets b's checkpoint: the next restart succeeds and b catches up.
    put(b"");
    wait_for("b ready after the fix", limit, || async {
        get(&b, "/readyz").await.0 == 200
    })
    .await;
    let raw = || read_topic_to_end(&client, &topics.raw("attendance"), true).unwrap();
    wait_for("a's 3 and b's 2 records", limit, || async {
        raw().len() == 5
    })
    .await;
    stop.cancel();
    let done = tokio::time::timeout(limit, run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let names: Vec<&str> = done.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(done[1].1.retries >= 2, "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_connector_stops_the_process_whatever_the_order_of_names() {
    let base = config_with_fresh_topics("kit_fatal").await;
    for (bad, good) in [("a", "z"), ("z", "a")] {
        let (pbad, pgood) = (free_port(), free_port());
        let cfg = with_connectors(
            base.clone(),
            json!({
                bad: {"kind": "test", "http_port": pbad, "fatal": true},
                good: {"kind": "test", "http_port": pgood, "records": 1},
            }),
        );
        let t = Instant::now();
        // Not --once: the good one would poll forever; the fatal one ends the run.
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            run_supervised(
                &[FACTORY],
                &cfg,
                &secrets(),
                &RunArgs {
                    names: Vec::new(),
                    once: false,
                    no_progress: true,
                },
                CancellationToken::new(),
                Backoff::new(Duration::from_millis(100), Duration::from_millis(300)),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("{bad} failed fatally, yet the process runs on"));
        let e = format!("{:#}", r.expect_err("a fatal error is returned"));
        assert!(e.contains(&format!("connector {bad}")), "{e}");
        assert!(e.contains("refused our credentials"), "{e}");
        eprintln!(
            "{bad} fatal, {good} fine: stopped in {:?}: {e}",
            t.elapsed()
        );
    }
}
