//! `rollcall bench`: throughput through the real Kafka and ClickHouse, printed as figures
//! (BENCHMARKS.md records them and how to reproduce them). In-process speed of the pure
//! parts is measured by the Criterion benches of rollcall-normalize and
//! rollcall-student-state.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{Datelike, Days, NaiveDate, Weekday};
use rollcall_config::{Config, Secrets};
use rollcall_kafka::{OutRecord, Topics, TxnProducer};
use rollcall_model::{
    AttendanceEvent, CalendarDay, Category, Enrollment, Entity, Operation, PayloadFormat,
    RawEnvelope, RawOperation,
};
use tokio_util::sync::CancellationToken;

mod baseline;
pub mod pipeline;
mod services;

#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchCommand {
    /// Raw records → normalizer → normalized topics, through Kafka transactions.
    Normalizer {
        #[arg(long, default_value_t = 500_000)]
        records: usize,
    },
    /// The whole pipeline on a simulated world: throughput per stage and end to end,
    /// freshness at a paced rate, peak memory per service, and the ClickHouse
    /// Kafka-engine baseline in the same run.
    Pipeline(pipeline::PipelineArgs),
    /// Normalized events → rollup → ClickHouse; then a restart to time the rebuild.
    Rollup {
        /// Students, each with ~180 instructional days and ~8% absences.
        #[arg(long, default_value_t = 20_000)]
        students: usize,
    },
}

fn fresh(cfg: &Config, what: &str) -> Config {
    let mut cfg = cfg.clone();
    let id = format!("bench-{what}-{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    cfg.kafka.topic_prefix = id.clone();
    cfg.normalizer.group_id = format!("{id}-normalizer");
    cfg.rollup.group_id = format!("{id}-rollup");
    cfg.clickhouse.database = id.replace('-', "_");
    cfg.normalizer.http_port = 0;
    cfg.rollup.http_port = 0;
    cfg
}

async fn create_topics(cfg: &Config, secrets: &Secrets) -> anyhow::Result<()> {
    let client = rollcall_kafka::client_config(&cfg.kafka, secrets);
    let specs = Topics::new(&cfg.kafka.topic_prefix)
        .specs(cfg.kafka.partitions, cfg.kafka.replication_factor);
    rollcall_kafka::ensure_topics(&client, &specs).await?;
    Ok(())
}

fn produce(cfg: &Config, secrets: &Secrets, records: Vec<OutRecord>) -> anyhow::Result<Duration> {
    let client = rollcall_kafka::client_config(&cfg.kafka, secrets);
    let p = TxnProducer::new(&client, &format!("{}-loader", cfg.kafka.topic_prefix))?;
    let t = Instant::now();
    for chunk in records.chunks(50_000) {
        p.send_all(chunk)?;
    }
    Ok(t.elapsed())
}

/// Wait until consumer group `group` has committed everything in `topics` (30 min at most).
async fn wait_until_committed(
    cfg: &Config,
    secrets: &Secrets,
    group: &str,
    topics: &[String],
    what: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let client = rollcall_kafka::client_config(&cfg.kafka, secrets);
        let (g, t) = (group.to_string(), topics.to_vec());
        if tokio::task::spawn_blocking(move || rollcall_kafka::group_lag(&client, &g, &t)).await??
            == 0
        {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "the {what} did not finish in 30 min"
        );
    }
}

fn peak_rss_mib() -> f64 {
    services::vm_hwm_mib("/proc/self/status")
}

fn raw_record(i: usize) -> (String, Vec<u8>) {
    let key = format!("bench-{i:08}");
    let student = format!("s{}", i % 50_000);
    let date = NaiveDate::from_ymd_opt(2025, 9, 1).unwrap() + Days::new((i % 150) as u64);
    let (format, payload) = if i.is_multiple_of(2) {
        let code = ["Excused Absence", "Unexcused Absence", "Tardy"][i % 3];
        (
            PayloadFormat::EdfiJson,
            serde_json::json!({
                "schoolReference": {"schoolId": 100 + (i % 40)},
                "studentReference": {"studentUniqueId": student},
                "attendanceEventCategoryDescriptor": format!("uri://ed-fi.org/AttendanceEventCategoryDescriptor#{code}"),
                "eventDate": date.to_string(),
                "eventDuration": if i.is_multiple_of(10) { 0.5 } else { 1.0 },
            }),
        )
    } else {
        (
            PayloadFormat::FlatJson,
            serde_json::json!({"school_id": format!("{}", 100 + (i % 40)), "student_id": student,
                "date": date.to_string(), "code": "A", "secondary_code": "Absent"}),
        )
    };
    let env = RawEnvelope {
        source_system: if format == PayloadFormat::EdfiJson {
            "edfi"
        } else {
            "powerschool"
        }
        .into(),
        source_instance: "bench".into(),
        district_id: format!("d{}", i % 5),
        entity: Entity::Attendance,
        operation: RawOperation::Upsert,
        natural_key: key.clone(),
        old_natural_key: None,
        source_version: i as i64,
        observed_at_ms: 0,
        payload_format: format,
        payload: payload.to_string().into_bytes(),
    };
    (
        format!("d{}/{student}", i % 5),
        rollcall_avro::encode_raw(&env),
    )
}

pub async fn normalizer(cfg: &Config, secrets: &Secrets, records: usize) -> anyhow::Result<()> {
    let cfg = fresh(cfg, "normalizer");
    create_topics(&cfg, secrets).await?;
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let outs: Vec<OutRecord> = (0..records)
        .map(|i| {
            let (key, payload) = raw_record(i);
            OutRecord {
                topic: topics.raw("attendance"),
                key: key.into_bytes(),
                payload,
                headers: vec![],
            }
        })
        .collect();
    let bytes: usize = outs.iter().map(|o| o.payload.len()).sum();
    let (c, s) = (cfg.clone(), secrets.clone());
    let load = tokio::task::spawn_blocking(move || produce(&c, &s, outs)).await??;
    println!(
        "loaded {records} raw records ({:.0} MiB) in {load:.1?}",
        bytes as f64 / 1048576.0
    );

    let normalizer = rollcall_normalizer::build_normalizer(&cfg)?;
    let stop = CancellationToken::new();
    let (c, s, st) = (cfg.clone(), secrets.clone(), stop.clone());
    let t = Instant::now();
    let worker = std::thread::spawn(move || -> anyhow::Result<()> {
        let mut w = rollcall_normalizer::Worker::connect(&c, &s, normalizer)?;
        w.run(&rollcall_telemetry::Health::new(), &st)
    });
    let inputs = vec![topics.raw("attendance")];
    wait_until_committed(
        &cfg,
        secrets,
        &cfg.normalizer.group_id,
        &inputs,
        "normalizer",
    )
    .await?;
    let took = t.elapsed();
    stop.cancel();
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("normalizer thread panicked"))??;
    println!("normalizer through Kafka: {records} records in {took:.2?} = {:.0} records/s end to end (consume, normalize, produce, commit in transactions)",
        records as f64 / took.as_secs_f64());
    println!(
        "peak RSS of this process (loader + normalizer): {:.0} MiB",
        peak_rss_mib()
    );
    Ok(())
}

pub async fn rollup(cfg: &Config, secrets: &Secrets, students: usize) -> anyhow::Result<()> {
    let cfg = fresh(cfg, "rollup");
    create_topics(&cfg, secrets).await?;
    let server = rollcall_clickhouse::connect_server(&cfg.clickhouse, secrets);
    rollcall_clickhouse::migrate_with_policy(
        &server,
        &cfg.clickhouse.database,
        &rollcall_clickhouse::embedded_migrations(),
        &cfg.policy,
        rollcall_clickhouse::OnPolicyChange::Rebuild,
    )
    .await?;
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let meta = |k: String| (0i64, "bench".to_string(), "b".to_string(), k, 0i64);
    let mut outs = Vec::new();
    let schools = (students / 500).max(1);
    let mut days = Vec::new();
    let mut d = NaiveDate::from_ymd_opt(2024, 8, 26).unwrap();
    while days.len() < 180 {
        if !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) {
            days.push(d);
        }
        d = d + Days::new(1);
    }
    for s in 0..schools {
        for day in &days {
            let (v, sys, inst, key, obs) = meta(format!("cal-{s}-{day}"));
            let c = CalendarDay {
                district_id: "d1".into(),
                school_id: format!("sch{s}"),
                calendar_code: "c".into(),
                school_year: 2025,
                date: *day,
                is_instructional: true,
                events: vec!["Instructional day".into()],
                operation: Operation::Upsert,
                source_version: v,
                source_system: sys,
                source_instance: inst,
                source_key: key,
                observed_at_ms: obs,
            };
            outs.push(OutRecord {
                topic: topics.normalized("calendar"),
                key: c.kafka_key().into_bytes(),
                payload: rollcall_avro::encode_calendar_day(&c),
                headers: vec![],
            });
        }
    }
    let mut events = 0usize;
    for i in 0..students {
        let school = format!("sch{}", i % schools);
        let student = format!("s{i:07}");
        let (v, sys, inst, key, obs) = meta(format!("enr-{i}"));
        let e = Enrollment {
            district_id: "d1".into(),
            school_id: school.clone(),
            student_id: student.clone(),
            school_year: 2025,
            entry_date: days[0],
            exit_date: None,
            grade_level: Some("Ninth grade".into()),
            subgroups: vec![],
            state_student_id: None,
            operation: Operation::Upsert,
            source_version: v,
            source_system: sys,
            source_instance: inst,
            source_key: key,
            observed_at_ms: obs,
            source_grade_level: None,
            exit_withdraw_type: None,
            source_exit_withdraw_type: None,
        };
        outs.push(OutRecord {
            topic: topics.normalized("enrollment"),
            key: e.kafka_key().into_bytes(),
            payload: rollcall_avro::encode_enrollment(&e),
            headers: vec![],
        });
        for (k, day) in days.iter().enumerate() {
            if (i * 7 + k * 13) % 12 == 0 {
                events += 1;
                let cat = [
                    Category::ExcusedAbsence,
                    Category::UnexcusedAbsence,
                    Category::Tardy,
                ][(i + k) % 3];
                let a = AttendanceEvent {
                    district_id: "d1".into(),
                    school_id: school.clone(),
                    student_id: student.clone(),
                    school_year: 2025,
                    date: *day,
                    category: cat,
                    absent_fraction: if cat == Category::Tardy { 0.0 } else { 1.0 },
                    source_code: "x".into(),
                    source_secondary_code: None,
                    reason: None,
                    source_system: "bench".into(),
                    source_instance: "b".into(),
                    source_key: format!("ev-{i}-{k}"),
                    source_version: 1,
                    operation: Operation::Upsert,
                    observed_at_ms: 0,
                };
                outs.push(OutRecord {
                    topic: topics.normalized("attendance"),
                    key: a.kafka_key().into_bytes(),
                    payload: rollcall_avro::encode_attendance_event(&a),
                    headers: vec![],
                });
            }
        }
    }
    let records = outs.len();
    let (c, s) = (cfg.clone(), secrets.clone());
    let load = tokio::task::spawn_blocking(move || produce(&c, &s, outs)).await??;
    println!("loaded {records} normalized records ({students} students, {events} attendance events, {} day rows to write) in {load:.1?}",
        students * days.len());

    let mut cfg = cfg;
    cfg.rollup.as_of = Some(days[days.len() - 1].to_string());
    let inputs: Vec<String> = rollcall_kafka::ENTITIES
        .iter()
        .map(|e| topics.normalized(e))
        .collect();
    let stop = CancellationToken::new();
    let t = Instant::now();
    let task = tokio::spawn(rollcall_rollup::run(
        cfg.clone(),
        secrets.clone(),
        stop.clone(),
    ));
    wait_until_committed(&cfg, secrets, &cfg.rollup.group_id, &inputs, "rollup").await?;
    let took = t.elapsed();
    stop.cancel();
    task.await??;
    let db = rollcall_clickhouse::connect(&cfg.clickhouse, secrets);
    let rows: u64 = db
        .query("SELECT count() FROM student_days")
        .fetch_one()
        .await
        .context("counting rows")?;
    println!("rollup through Kafka and ClickHouse: {records} records in {took:.2?} = {:.0} records/s; {rows} day rows = {:.0} rows/s into ClickHouse",
        records as f64 / took.as_secs_f64(), rows as f64 / took.as_secs_f64());

    // Restart: rebuild the state from Kafka up to the committed offsets.
    let stop = CancellationToken::new();
    let t = Instant::now();
    let health = rollcall_telemetry::Health::new();
    let r = rollcall_rollup::Rollup::start(
        &cfg,
        secrets,
        &health,
        &stop,
        rollcall_rollup::AsOf::from_config(&cfg)?,
    )
    .await?;
    let rebuild = t.elapsed();
    let students_held = r.state().stats().students;
    println!("restart: state of {students_held} students rebuilt from Kafka in {rebuild:.2?} = {:.1} s per million students",
        rebuild.as_secs_f64() * 1e6 / students_held.max(1) as f64);
    println!(
        "peak RSS of this process (loader + rollup): {:.0} MiB",
        peak_rss_mib()
    );
    server
        .query(&format!("DROP DATABASE {}", cfg.clickhouse.database))
        .execute()
        .await?;
    Ok(())
}
