//! One record must never stop the stream: a raw record whose dead letter would exceed a
//! Kafka message (a ~400 KB natural key and payload, rejected as too large) used to
//! abort the same batch forever. Now its dead letter is cut to fit, marked, and the
//! records after it are normalized.

use std::time::{Duration, Instant};

use rollcall_kafka::limits::{MAX_DEAD_LETTER_PAYLOAD_BYTES, MAX_HEADER_VALUE_BYTES};
use rollcall_kafka::{
    read_topic_to_end, DeadLetter, DeadLetterHeaders, OutRecord, Topics, TxnProducer,
};
use rollcall_model::{Entity, PayloadFormat, RawEnvelope, RawOperation};
use rollcall_normalizer::{build_normalizer, Worker};
use rollcall_telemetry::Health;
use rollcall_testkit::{config_with_fresh_topics, secrets, unique};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn envelope(student: &str, key: &str) -> RawEnvelope {
    let payload = json!({
        "schoolReference": {"schoolId": 255901107},
        "sessionReference": {"schoolId": 255901107, "schoolYear": 2026, "sessionName": "2025-2026 Fall Semester"},
        "studentReference": {"studentUniqueId": student},
        "attendanceEventCategoryDescriptor": "uri://ed-fi.org/AttendanceEventCategoryDescriptor#Excused Absence",
        "eventDate": "2025-09-03",
        "eventDuration": 1.0,
    })
    .to_string()
    .into_bytes();
    RawEnvelope {
        source_system: "edfi".into(),
        source_instance: "test".into(),
        district_id: "d1".into(),
        entity: Entity::Attendance,
        operation: RawOperation::Upsert,
        natural_key: key.into(),
        old_natural_key: None,
        source_version: 1,
        observed_at_ms: 1_760_000_000_000,
        payload_format: PayloadFormat::EdfiJson,
        payload,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_dead_letter_is_huge_does_not_stop_the_stream() {
    let cfg = config_with_fresh_topics("norm-stuck").await;
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());

    let huge_id = "9".repeat(400_000);
    let bad = envelope(&huge_id, &huge_id);
    let good = envelope("604822", "good-after-the-huge-one");
    let producer = TxnProducer::new(&client, &unique("norm-stuck-producer")).unwrap();
    // The same partition (same key), bad first: nothing after it may be held up.
    let outs: Vec<OutRecord> = [&bad, &good]
        .iter()
        .map(|e| OutRecord {
            topic: topics.raw("attendance"),
            key: b"d1/student".to_vec(),
            payload: rollcall_avro::encode_raw(e),
            headers: vec![],
        })
        .collect();
    assert!(outs[0].payload.len() > 750_000);
    producer.send_all(&outs).unwrap();

    let normalizer = build_normalizer(&cfg).unwrap();
    let stop = CancellationToken::new();
    let (c2, s2, stop2) = (cfg.clone(), secrets(), stop.clone());
    let worker = std::thread::spawn(move || {
        let mut w = Worker::connect(&c2, &s2, normalizer).unwrap();
        w.run(&Health::new(), &stop2)
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let (normalized, dead) = loop {
        let n = read_topic_to_end(&client, &topics.normalized("attendance"), true).unwrap();
        let d = read_topic_to_end(&client, &topics.dead_letters(), true).unwrap();
        if (!n.is_empty() && !d.is_empty()) || Instant::now() > deadline || worker.is_finished() {
            break (n, d);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    stop.cancel();
    worker.join().unwrap().unwrap();

    assert_eq!(
        normalized.len(),
        1,
        "the good record after the huge one is normalized"
    );
    let e = rollcall_avro::decode_attendance_event(&normalized[0].payload).unwrap();
    assert_eq!(e.source_key, "good-after-the-huge-one");
    assert_eq!(dead.len(), 1, "the huge record is one dead letter");
    let d = &dead[0];
    let h = DeadLetterHeaders::from_pairs(&d.headers);
    assert_eq!(h.stage, "normalizer");
    assert!(!h.kind.is_empty() && !h.reason.is_empty());
    assert_eq!(
        h.source_topic.as_deref(),
        Some(topics.raw("attendance").as_str())
    );
    assert_eq!(h.source_offset, Some(0));
    assert_eq!(d.payload.len(), MAX_DEAD_LETTER_PAYLOAD_BYTES);
    assert_eq!(
        DeadLetter::original_payload_len(&d.headers),
        Some(outs[0].payload.len())
    );
    assert!(d
        .headers
        .iter()
        .all(|(_, v)| v.len() <= MAX_HEADER_VALUE_BYTES));
}
