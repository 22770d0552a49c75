//! Smoke test through both real services: records produced with rdkafka to a fresh
//! topic cross the real Kafka broker, are consumed, written to the real ClickHouse with
//! the `clickhouse` crate (LZ4, as shipped), read back, and compared value by value.

use std::time::{Duration, Instant};

use clickhouse::Row;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rollcall_kafka::{ensure_topics, TopicSpec};
use rollcall_testkit::{clickhouse_with_unique_db, kafka, require_services, secrets, unique};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Row)]
struct SmokeRow {
    id: u64,
    district_id: String,
    student_id: String,
    day: u16, // Date: days since 1970-01-01
    absent_fraction: f64,
    excused: u8,
    note: String,
}

fn rows(n: u64) -> Vec<SmokeRow> {
    (0..n)
        .map(|i| SmokeRow {
            id: i,
            district_id: format!("d{:03}", i % 7),
            student_id: format!("s-{i:06}"),
            day: 19_000 + (i % 180) as u16,
            absent_fraction: [0.0, 0.5, 1.0, 0.25][(i % 4) as usize],
            excused: (i % 2) as u8,
            note: if i % 5 == 0 {
                "ünïcødé, \"quoted\"\ttab".into()
            } else {
                String::new()
            },
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_cross_real_kafka_and_land_in_real_clickhouse() {
    require_services();
    let kcfg = kafka();
    let client = rollcall_kafka::client_config(&kcfg, &secrets());
    let topic = unique("smoke");
    ensure_topics(&client, &[TopicSpec::new(&topic, 3, 1, vec![])])
        .await
        .expect("create the smoke topic");

    // 1. produce
    let sent = rows(1_000);
    let producer: FutureProducer = client.clone().create().expect("producer");
    for r in &sent {
        let payload = serde_json::to_vec(r).unwrap();
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&r.student_id)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivery");
    }

    // 2. consume everything back
    let mut cc = client.clone();
    cc.set("group.id", unique("smoke-group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = cc.create().expect("consumer");
    consumer.subscribe(&[&topic]).unwrap();
    let mut received: Vec<SmokeRow> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.len() < sent.len() && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            received.push(serde_json::from_slice(m.payload().unwrap()).expect("decode"));
        }
    }
    assert_eq!(
        received.len(),
        sent.len(),
        "all records consumed back from Kafka"
    );

    // 3. write to ClickHouse (fresh database, LZ4 as shipped)
    let ch = clickhouse_with_unique_db("smoke");
    let server = rollcall_clickhouse::connect_server(&ch, &secrets());
    server
        .query(&format!("CREATE DATABASE {}", ch.database))
        .execute()
        .await
        .expect("create database");
    let db = rollcall_clickhouse::connect(&ch, &secrets());
    db.query(
        "CREATE TABLE smoke (id UInt64, district_id String, student_id String, day Date, \
         absent_fraction Float64, excused UInt8, note String) ENGINE = MergeTree ORDER BY id",
    )
    .execute()
    .await
    .expect("create table");
    let mut insert = db.insert::<SmokeRow>("smoke").await.expect("insert");
    for r in &received {
        insert.write(r).await.expect("write row");
    }
    insert.end().await.expect("finish insert");

    // 4. read back and compare every value
    let back: Vec<SmokeRow> = db
        .query("SELECT ?fields FROM smoke ORDER BY id")
        .fetch_all()
        .await
        .expect("select");
    assert_eq!(
        back, sent,
        "every value survives Kafka and ClickHouse unchanged"
    );

    server
        .query(&format!("DROP DATABASE {}", ch.database))
        .execute()
        .await
        .expect("drop database");
}
