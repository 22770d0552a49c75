//! Dates the rollup and ClickHouse cannot hold never pass the normalizer, through the
//! real service and Kafka: attendance dated 0000-02-29, 1969-09-03, 0024-09-03 (`9/3/24`
//! read as year 24 by an exporter) or `9/3/24` itself is a dead letter naming the field
//! and value; an exit date of 9999-12-31, or one of the configured sentinels, means
//! "still enrolled".

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use rollcall_kafka::{read_topic_to_end, DeadLetterHeaders, OutRecord, Topics, TxnProducer};
use rollcall_model::{Entity, PayloadFormat, RawEnvelope, RawOperation};
use rollcall_normalizer::{build_normalizer, Worker};
use rollcall_telemetry::Health;
use rollcall_testkit::{config_with_fresh_topics, secrets, unique};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn record(topics: &Topics, entity: Entity, key: &str, payload: serde_json::Value) -> OutRecord {
    let env = RawEnvelope {
        source_system: "powerschool".into(),
        source_instance: "test".into(),
        district_id: "d1".into(),
        entity,
        operation: RawOperation::Upsert,
        natural_key: key.into(),
        old_natural_key: None,
        source_version: 1,
        observed_at_ms: 1_760_000_000_000,
        payload_format: PayloadFormat::FlatJson,
        payload: payload.to_string().into_bytes(),
    };
    OutRecord {
        topic: topics.raw(entity.as_str()),
        key: key.as_bytes().to_vec(),
        payload: rollcall_avro::encode_raw(&env),
        headers: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_dates_are_dead_letters_and_sentinel_exit_dates_mean_still_enrolled() {
    let mut cfg = config_with_fresh_topics("dates").await;
    cfg.normalizer.http_port = 0;
    let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
    // A deployment whose SIS also uses 2999-12-31 (the list replaces the default).
    cfg.normalizer.exit_date_sentinels = vec![d(9999, 12, 31), d(2999, 12, 31)];
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());

    let att = |key: &str, date: &str| {
        record(
            &topics,
            Entity::Attendance,
            key,
            json!({"school_id": "101", "student_id": "s1", "date": date, "code": "A", "secondary_code": "Absent"}),
        )
    };
    let enr = |key: &str, exit: &str| {
        record(
            &topics,
            Entity::Enrollment,
            key,
            json!({"school_id": "101", "student_id": "s1", "entry_date": "2025-08-20", "exit_date": exit}),
        )
    };
    let bad = [
        ("att-year-0", "0000-02-29", "date_out_of_range"),
        ("att-1969", "1969-09-03", "date_out_of_range"),
        ("att-year-24", "0024-09-03", "date_out_of_range"),
        ("att-two-digit", "9/3/24", "invalid_date"),
    ];
    let mut outs: Vec<OutRecord> = bad.iter().map(|(k, date, _)| att(k, date)).collect();
    outs.push(att("att-good", "2025-10-08"));
    outs.push(enr("enr-9999", "9999-12-31"));
    outs.push(enr("enr-2999", "2999-12-31"));
    TxnProducer::new(&client, &unique("dates-producer"))
        .unwrap()
        .send_all(&outs)
        .unwrap();

    let normalizer = build_normalizer(&cfg).unwrap();
    let stop = CancellationToken::new();
    let (c2, s2, stop2) = (cfg.clone(), secrets(), stop.clone());
    let worker = std::thread::spawn(move || {
        let mut w = Worker::connect(&c2, &s2, normalizer).unwrap();
        w.run(&Health::new(), &stop2).unwrap();
    });
    let read = |topic: String| read_topic_to_end(&client, &topic, true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (attendance, enrollments, dead) = loop {
        let a = read(topics.normalized("attendance"));
        let e = read(topics.normalized("enrollment"));
        let dl = read(topics.dead_letters());
        if a.len() + e.len() + dl.len() >= outs.len() || Instant::now() > deadline {
            break (a, e, dl);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    stop.cancel();
    worker.join().unwrap();

    // in = out + dead letters: nothing vanished.
    assert_eq!(
        (attendance.len(), enrollments.len(), dead.len()),
        (1, 2, bad.len())
    );
    let a = rollcall_avro::decode_attendance_event(&attendance[0].payload).unwrap();
    assert_eq!(
        (a.source_key.as_str(), a.date),
        ("att-good", d(2025, 10, 8))
    );
    for r in &enrollments {
        let e = rollcall_avro::decode_enrollment(&r.payload).unwrap();
        assert_eq!(e.exit_date, None, "{}: still enrolled", e.source_key);
        assert_eq!(e.entry_date, d(2025, 8, 20));
    }
    let dl: HashMap<String, DeadLetterHeaders> = dead
        .iter()
        .map(|r| {
            let h = DeadLetterHeaders::from_pairs(&r.headers);
            (h.source_key.clone().unwrap_or_default(), h)
        })
        .collect();
    for (key, date, kind) in bad {
        let h = dl
            .get(key)
            .unwrap_or_else(|| panic!("{key}: no dead letter"));
        assert_eq!(h.kind, kind, "{key}: {}", h.reason);
        assert!(
            h.reason.contains("field date") && h.reason.contains(date),
            "{key}: {}",
            h.reason
        );
    }
}
