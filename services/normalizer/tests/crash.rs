//! Crash test: the normalizer runs as a separate process and is killed with SIGKILL
//! several times while it works through 100,000 raw records; after each kill it is
//! restarted. The committed output (read_committed) must hold every input exactly once.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rollcall_kafka::{read_topic_to_end, OutRecord, Topics, TxnProducer};
use rollcall_model::{Entity, PayloadFormat, RawEnvelope, RawOperation};
use rollcall_testkit::{config_with_fresh_topics, secrets, unique};

const RECORDS: usize = 100_000;
const BAD_EVERY: usize = 97;

fn raw(i: usize) -> (String, Vec<u8>) {
    let key = format!("crash-{i:06}");
    let code = if i.is_multiple_of(BAD_EVERY) {
        "Not A Real Code"
    } else {
        ["Excused Absence", "Unexcused Absence", "Tardy"][i % 3]
    };
    let payload = serde_json::json!({
        "schoolReference": {"schoolId": 100 + (i % 7)},
        "studentReference": {"studentUniqueId": format!("s{}", i % 20_000)},
        "attendanceEventCategoryDescriptor": format!("uri://ed-fi.org/AttendanceEventCategoryDescriptor#{code}"),
        "eventDate": format!("2025-{:02}-{:02}", 9 + (i % 3), 1 + (i % 28)),
    });
    let env = RawEnvelope {
        source_system: "edfi".into(),
        source_instance: "crash".into(),
        district_id: "d1".into(),
        entity: Entity::Attendance,
        operation: RawOperation::Upsert,
        natural_key: key.clone(),
        old_natural_key: None,
        source_version: i as i64,
        observed_at_ms: 0,
        payload_format: PayloadFormat::EdfiJson,
        payload: payload.to_string().into_bytes(),
    };
    (key, rollcall_avro::encode_raw(&env))
}

fn spawn(cfg: &rollcall_config::Config) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rollcall-normalizer"))
        .env("ROLLCALL_KAFKA__BROKERS", &cfg.kafka.brokers)
        .env("ROLLCALL_KAFKA__TOPIC_PREFIX", &cfg.kafka.topic_prefix)
        .env("ROLLCALL_NORMALIZER__GROUP_ID", &cfg.normalizer.group_id)
        .env("ROLLCALL_NORMALIZER__HTTP_PORT", "0")
        .env("ROLLCALL_NORMALIZER__BATCH_MAX_RECORDS", "2000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start rollcall-normalizer")
}

/// Committed outputs: normalized events and dead letters, keyed by the input's key.
fn committed(cfg: &rollcall_config::Config) -> HashMap<String, usize> {
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in read_topic_to_end(&client, &topics.normalized("attendance"), true).unwrap() {
        let e = rollcall_avro::decode_attendance_event(&r.payload).unwrap();
        *seen.entry(e.source_key).or_default() += 1;
    }
    for r in read_topic_to_end(&client, &topics.dead_letters(), true).unwrap() {
        *seen
            .entry(String::from_utf8(r.key.unwrap_or_default()).unwrap())
            .or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_never_loses_or_duplicates_a_record() {
    let cfg = config_with_fresh_topics("crash").await;
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let producer = TxnProducer::new(&client, &unique("crash-producer")).unwrap();
    let inputs: Vec<(String, Vec<u8>)> = (0..RECORDS).map(raw).collect();
    for chunk in inputs.chunks(20_000) {
        let outs: Vec<OutRecord> = chunk
            .iter()
            .map(|(k, v)| OutRecord {
                topic: topics.raw("attendance"),
                key: k.clone().into_bytes(),
                payload: v.clone(),
                headers: vec![],
            })
            .collect();
        producer.send_all(&outs).unwrap();
    }

    // Kill it mid-work several times.
    let mut partial_kills = 0;
    let inputs_topic = vec![topics.raw("attendance")];
    for (round, extra_ms) in [0u64, 300, 0, 600].into_iter().enumerate() {
        let mut child = spawn(&cfg);
        // Kill once this run has committed something (so the kill lands mid-stream,
        // whatever the machine's speed), plus a little more in some rounds.
        let start =
            rollcall_kafka::group_lag(&client, &cfg.normalizer.group_id, &inputs_topic).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let lag = rollcall_kafka::group_lag(&client, &cfg.normalizer.group_id, &inputs_topic)
                .unwrap();
            if lag < start {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(extra_ms));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        let seen = committed(&cfg);
        let dupes = seen.values().filter(|n| **n > 1).count();
        assert_eq!(
            dupes, 0,
            "after kill {round}: {dupes} inputs committed twice"
        );
        eprintln!(
            "after kill {round}: {} of {RECORDS} inputs committed",
            seen.len()
        );
        if !seen.is_empty() && seen.len() < RECORDS {
            partial_kills += 1;
        }
    }
    assert!(
        partial_kills >= 1,
        "at least one kill must land mid-stream to test anything"
    );

    // Restart and let it finish; stop it gracefully (SIGTERM).
    let mut child = spawn(&cfg);
    let deadline = Instant::now() + Duration::from_secs(300);
    let seen = loop {
        let seen = committed(&cfg);
        if seen.len() >= RECORDS || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful shutdown on SIGTERM: {status:?}");

    assert_eq!(seen.len(), RECORDS, "every input committed");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "inputs committed more than once: {twice:?}"
    );
    for (k, _) in &inputs {
        assert_eq!(seen.get(k), Some(&1), "{k}");
    }
    let dead = read_topic_to_end(&client, &topics.dead_letters(), true)
        .unwrap()
        .len();
    assert_eq!(
        dead,
        RECORDS.div_ceil(BAD_EVERY),
        "the unknown codes, each dead-lettered once"
    );
}
