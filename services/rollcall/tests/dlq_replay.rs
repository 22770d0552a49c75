//! `rollcall dlq` against the real Kafka: an unknown code is dead-lettered and shows in
//! the summary; after the district's code map is fixed, `rollcall dlq replay`
//! re-publishes it and it comes out normalized, exactly once.

use std::process::Command;
use std::time::{Duration, Instant};

use rollcall_kafka::{read_topic_to_end, OutRecord, Topics, TxnProducer};
use rollcall_model::{Category, Entity, PayloadFormat, RawEnvelope, RawOperation};
use rollcall_testkit::{config_with_fresh_topics, secrets, unique};
use tokio_util::sync::CancellationToken;

fn rollcall(config: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run rollcall");
    assert!(
        out.status.success(),
        "rollcall {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Run the normalizer in-process until `done` holds (or fail after a minute).
fn normalize_until(cfg: &rollcall_config::Config, done: impl Fn() -> bool) {
    let normalizer = rollcall_normalizer::build_normalizer(cfg).unwrap();
    let stop = CancellationToken::new();
    let (c, s, st) = (cfg.clone(), secrets(), stop.clone());
    let worker = std::thread::spawn(move || {
        let mut w = rollcall_normalizer::Worker::connect(&c, &s, normalizer).unwrap();
        w.run(&rollcall_telemetry::Health::new(), &st).unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "the normalizer did not get there in 60 s"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.cancel();
    worker.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_summarized_and_replayed_after_the_map_is_fixed() {
    let mut cfg = config_with_fresh_topics("dlq").await;
    cfg.normalizer.http_port = 0;
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("rollcall.toml");
    std::fs::write(
        &config_file,
        format!(
            "[kafka]\nbrokers = \"{}\"\ntopic_prefix = \"{}\"\n",
            cfg.kafka.brokers, cfg.kafka.topic_prefix
        ),
    )
    .unwrap();
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let env = RawEnvelope {
        source_system: "powerschool".into(),
        source_instance: "test".into(),
        district_id: "d2".into(),
        entity: Entity::Attendance,
        operation: RawOperation::Upsert,
        natural_key: "d2-zzq".into(),
        old_natural_key: None,
        source_version: 1,
        observed_at_ms: 0,
        payload_format: PayloadFormat::FlatJson,
        payload: br#"{"school_id":"101","student_id":"p1","date":"2025-10-08","code":"ZZQ","secondary_code":"Absent"}"#.to_vec(),
    };
    TxnProducer::new(&client, &unique("dlq-producer"))
        .unwrap()
        .send_all(&[OutRecord {
            topic: topics.raw("attendance"),
            key: b"d2/p1".to_vec(),
            payload: rollcall_avro::encode_raw(&env),
            headers: vec![],
        }])
        .unwrap();

    let dead = || {
        read_topic_to_end(&client, &topics.dead_letters(), true)
            .unwrap()
            .len()
    };
    normalize_until(&cfg, || dead() == 1);
    let summary = rollcall(&config_file, &["dlq", "summary"]);
    assert!(summary.contains("1 dead letter(s)"), "{summary}");
    let line = summary
        .lines()
        .find(|l| l.starts_with("d2"))
        .unwrap_or_default();
    assert!(
        line.contains("unknown_code") && line.trim_end().ends_with('1'),
        "{summary}"
    );
    let listed = rollcall(&config_file, &["dlq", "list", "--kind", "unknown_code"]);
    assert!(
        listed.contains("ZZQ") && listed.contains("d2-zzq"),
        "{listed}"
    );

    // The district fixes its map; the dead letter goes back through the pipeline.
    let maps = dir.path().join("codemaps");
    std::fs::create_dir_all(&maps).unwrap();
    std::fs::write(
        maps.join("d2.toml"),
        "district_id = \"d2\"\nsource_system = \"powerschool\"\nextends = \"powerschool\"\n[codes]\n\"ZZQ\" = \"excused_absence\"\n",
    )
    .unwrap();
    let replayed = rollcall(&config_file, &["dlq", "replay", "--district", "d2"]);
    assert!(replayed.contains("re-published 1"), "{replayed}");
    let mut fixed = cfg.clone();
    fixed.normalizer.code_maps_dir = Some(maps);
    let normalized = || {
        read_topic_to_end(&client, &topics.normalized("attendance"), true)
            .unwrap()
            .iter()
            .map(|r| rollcall_avro::decode_attendance_event(&r.payload).unwrap())
            .collect::<Vec<_>>()
    };
    normalize_until(&fixed, || !normalized().is_empty());
    let events = normalized();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].category, Category::ExcusedAbsence);
    assert_eq!(events[0].source_key, "d2-zzq");
    // A second replay finds nothing new to send.
    let again = rollcall(&config_file, &["dlq", "replay", "--district", "d2"]);
    assert!(again.contains("re-published 0"), "{again}");
}
