//! `rollcall dlq replay` against the real Kafka: a filtered replay leaves every other dead
//! letter replayable (a later replay with another filter still finds them), nothing is
//! re-published twice, and only this deployment's raw topics are targets.

use std::process::{Command, Output};

use rollcall_kafka::{
    read_topic_to_end, DeadLetter, DeadLetterHeaders, OutRecord, Topics, TxnProducer,
};
use rollcall_testkit::{config_with_fresh_topics, secrets, unique};

fn rollcall(config: &std::path::Path, args: &[&str]) -> Output {
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
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn letter(district: &str, key: &str, topic: Option<String>, payload: &[u8]) -> DeadLetter {
    DeadLetter {
        key: Some(format!("{district}/{key}").into_bytes()),
        payload: payload.to_vec(),
        headers: DeadLetterHeaders {
            stage: "normalizer".into(),
            kind: "unknown_code".into(),
            reason: "code ZZQ is not in the map".into(),
            district: Some(district.into()),
            source_key: Some(key.into()),
            source_topic: topic,
            source_partition: Some(0),
            source_offset: Some(7),
            source_file: None,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_replay_leaves_the_other_dead_letters_replayable_and_targets_only_raw_topics() {
    let cfg = config_with_fresh_topics("dlqf").await;
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
    let dlq = topics.dead_letters();

    let mut cut = letter("db", "b-cut", Some(topics.raw("attendance")), b"x");
    cut.payload = vec![b'x'; rollcall_kafka::limits::MAX_DEAD_LETTER_PAYLOAD_BYTES + 10];
    let mut from_file = letter("db", "b-file", None, b"row");
    from_file.headers.source_file = Some("att.csv:3".into());
    let letters = [
        letter("da", "a1", Some(topics.raw("attendance")), b"payload-a1"),
        letter("db", "b1", Some(topics.raw("enrollment")), b"payload-b1"),
        letter("db", "b2", Some(topics.raw("attendance")), b"payload-b2"),
        // Another deployment's raw topic and a normalized topic: refused.
        letter(
            "db",
            "b-foreign",
            Some("othertenant.raw.attendance".into()),
            b"f",
        ),
        letter(
            "db",
            "b-normalized",
            Some(topics.normalized("attendance")),
            b"n",
        ),
        cut,
        from_file,
    ];
    let outs: Vec<OutRecord> = letters
        .iter()
        .cloned()
        .map(|l| l.into_out_record(&dlq))
        .collect();
    TxnProducer::new(&client, &unique("dlqf-producer"))
        .unwrap()
        .send_all(&outs)
        .unwrap();
    let raw_payloads = |entity: &str| {
        let mut v: Vec<Vec<u8>> = read_topic_to_end(&client, &topics.raw(entity), true)
            .unwrap()
            .into_iter()
            .map(|r| r.payload)
            .collect();
        v.sort();
        v
    };

    // Replay district da only.
    let a = stdout(&rollcall(
        &config_file,
        &["dlq", "replay", "--district", "da"],
    ));
    assert!(a.contains("re-published 1 dead letter(s)"), "{a}");
    assert_eq!(raw_payloads("attendance"), [b"payload-a1".to_vec()]);
    // The other district's dead letters are still replayable (before the fix the first
    // replay had committed past them and this found nothing).
    let b = rollcall(&config_file, &["dlq", "replay", "--district", "db"]);
    let (b_out, b_err) = (stdout(&b), String::from_utf8_lossy(&b.stderr).into_owned());
    assert!(
        b_out.contains("re-published 2 dead letter(s)") && b_out.contains("4 refused"),
        "{b_out}\n{b_err}"
    );
    assert_eq!(raw_payloads("enrollment"), [b"payload-b1".to_vec()]);
    assert_eq!(
        raw_payloads("attendance"),
        [b"payload-a1".to_vec(), b"payload-b2".to_vec()]
    );
    for (key, says) in [
        (
            "b-foreign",
            "`othertenant.raw.attendance` is not a raw topic of this deployment",
        ),
        ("b-normalized", "is not a raw topic of this deployment"),
        ("b-cut", "payload was cut"),
        ("b-file", "att.csv:3"),
    ] {
        assert!(
            b_err
                .lines()
                .any(|l| l.contains(&format!("key {key})")) && l.contains(says)),
            "{key}: {b_err}"
        );
    }
    assert!(
        read_topic_to_end(&client, &topics.normalized("attendance"), true)
            .unwrap()
            .is_empty()
    );

    // Again, unfiltered: nothing twice.
    let again = stdout(&rollcall(&config_file, &["dlq", "replay"]));
    assert!(
        again.contains("re-published 0") && again.contains("3 matching were replayed earlier"),
        "{again}"
    );
    assert_eq!(raw_payloads("attendance").len(), 2);
    assert_eq!(raw_payloads("enrollment").len(), 1);

    // The summary counts dead letters (not the replay marks) and says which were replayed.
    let s = stdout(&rollcall(&config_file, &["dlq", "summary"]));
    assert!(
        s.contains(&format!("7 dead letter(s) in {dlq}, 3 of them replayed")),
        "{s}"
    );
    let listed = stdout(&rollcall(
        &config_file,
        &["dlq", "list", "--district", "da"],
    ));
    assert!(listed.contains("[replayed]"), "{listed}");
}
