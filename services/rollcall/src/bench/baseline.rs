//! The baseline a user might pick instead of rollcall: ClickHouse's own Kafka table
//! engine reading JSON copies of the same attendance events, and a materialized view
//! counting absences per student into a SummingMergeTree. It does no code
//! normalization (the JSON already carries the simulator's own absent share), applies
//! no correction or delete, and computes no as-of chronic-absence metric: it is a
//! throughput reference, not an equivalent.

use std::time::{Duration, Instant};

use anyhow::Context;
use rollcall_config::{Config, Secrets};
use rollcall_kafka::{OutRecord, TopicSpec, TxnProducer};
use rollcall_sis_simulator::{Fact, Op, Resource, World};

pub struct BaselineResult {
    pub rows: u64,
    pub produce: Duration,
    pub total: Duration,
}

/// One JSON row per attendance change of the world that rollcall was given: the Ed-Fi
/// districts' changes visible through `edfi_through`, the CSV districts' through
/// `csv_through` (their one drop).
fn rows<'a>(
    world: &'a World,
    edfi_through: chrono::NaiveDate,
    csv_through: chrono::NaiveDate,
) -> impl Iterator<Item = Vec<u8>> + 'a {
    world.log.iter().enumerate().filter_map(move |(i, c)| {
        let rec = &world.records[c.record as usize];
        if rec.resource != Resource::StudentSchoolAttendanceEvents {
            return None;
        }
        let district = &world.districts[rec.district as usize];
        let through = if district.spec.feed == rollcall_sis_simulator::Feed::Edfi {
            edfi_through
        } else {
            csv_through
        };
        if c.visible_on > through {
            return None;
        }
        let (op, fact) = match &c.op {
            Op::Upsert(f) => ("upsert", f),
            Op::Delete => ("delete", world.previous_fact(i)?),
        };
        let Fact::Attendance(a) = fact else {
            return None;
        };
        let mut line = serde_json::to_vec(&serde_json::json!({
            "district_id": district.spec.id,
            "school_id": world.schools[a.school as usize].school_id.to_string(),
            "student_id": world.students[a.student as usize].unique_id,
            "date": a.date.to_string(),
            "code": a.category.edfi_descriptor(),
            "absent_milli": if op == "upsert" { a.absent_milli } else { 0 },
            "op": op,
        }))
        .ok()?;
        line.push(b'\n');
        Some(line)
    })
}

/// Create the Kafka-engine table and the materialized view, publish the JSON rows, and
/// wait until the view's target holds all of them.
pub async fn run(
    cfg: &Config,
    secrets: &Secrets,
    world: &World,
    edfi_through: chrono::NaiveDate,
    csv_through: chrono::NaiveDate,
) -> anyhow::Result<BaselineResult> {
    let topic = format!("{}.baseline.attendance-json", cfg.kafka.topic_prefix);
    let client = rollcall_kafka::client_config(&cfg.kafka, secrets);
    rollcall_kafka::ensure_topics(
        &client,
        &[TopicSpec::new(
            &topic,
            cfg.kafka.partitions,
            cfg.kafka.replication_factor,
            vec![],
        )],
    )
    .await?;
    let db = &cfg.clickhouse.database;
    let server = rollcall_clickhouse::connect_server(&cfg.clickhouse, secrets);
    let ddl = [
        format!(
            "CREATE TABLE {db}.baseline_queue (district_id String, school_id String, \
             student_id String, date Date, code String, absent_milli UInt16, op String) \
             ENGINE = Kafka('{}', '{topic}', '{}-baseline', 'JSONEachRow')",
            cfg.kafka.brokers, cfg.kafka.topic_prefix
        ),
        format!(
            "CREATE TABLE {db}.baseline_absences (district_id String, student_id String, \
             events UInt64, absences UInt64, absent_milli_total UInt64) \
             ENGINE = SummingMergeTree ORDER BY (district_id, student_id)"
        ),
        format!(
            "CREATE MATERIALIZED VIEW {db}.baseline_mv TO {db}.baseline_absences AS \
             SELECT district_id, student_id, count() AS events, \
             countIf(op = 'upsert' AND absent_milli > 0) AS absences, \
             sum(toUInt64(absent_milli)) AS absent_milli_total \
             FROM {db}.baseline_queue GROUP BY district_id, student_id"
        ),
    ];
    for q in &ddl {
        server
            .query(q)
            .execute()
            .await
            .with_context(|| format!("ClickHouse refused the baseline DDL: {q}"))?;
    }

    // The consumer runs from the moment the view exists; the clock starts with the
    // first record published, as rollcall's starts with the connectors.
    let lines: Vec<Vec<u8>> = rows(world, edfi_through, csv_through).collect();
    let total_rows = lines.len() as u64;
    let (c, t, prefix) = (
        client.clone(),
        topic.clone(),
        cfg.kafka.topic_prefix.clone(),
    );
    let started = Instant::now();
    let producer = tokio::task::spawn_blocking(move || -> anyhow::Result<Duration> {
        let p = TxnProducer::new(&c, &format!("{prefix}-baseline-loader"))?;
        let mut batch = Vec::with_capacity(50_000);
        for (i, line) in lines.into_iter().enumerate() {
            batch.push(OutRecord {
                topic: t.clone(),
                key: i.to_string().into_bytes(),
                payload: line,
                headers: vec![],
            });
            if batch.len() == 50_000 {
                p.send_all(&batch)?;
                batch.clear();
            }
        }
        p.send_all(&batch)?;
        Ok(started.elapsed())
    });
    let db_client = rollcall_clickhouse::connect(&cfg.clickhouse, secrets);
    let produce = producer.await??;
    loop {
        let have: u64 = db_client
            .query("SELECT toUInt64(sum(events)) FROM baseline_absences")
            .fetch_one()
            .await
            .context("counting the baseline's rows")?;
        if have >= total_rows {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the Kafka-engine baseline consumed {have} of {total_rows} rows in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = started.elapsed();
    for q in [
        format!("DROP TABLE {db}.baseline_mv"),
        format!("DROP TABLE {db}.baseline_queue"),
    ] {
        server.query(&q).execute().await?;
    }
    Ok(BaselineResult {
        rows: total_rows,
        produce,
        total,
    })
}
