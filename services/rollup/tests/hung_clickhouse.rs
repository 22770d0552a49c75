//! A ClickHouse that accepts connections and never answers must not hang the rollup
//! while it reports ready: every write attempt is bounded, the write is retried with
//! readiness off, and a shutdown ends it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use rollcall_rollup::RowWriter;
use rollcall_student_state::{DayRow, DayStatus, StudentChange};
use rollcall_telemetry::Health;
use tokio_util::sync::CancellationToken;

fn one_day_row() -> StudentChange {
    let s: Arc<str> = Arc::from("s1");
    StudentChange {
        district_id: Arc::from("d1"),
        student_id: s.clone(),
        day_rows_upsert: vec![DayRow {
            school_year: 2026,
            district_id: Arc::from("d1"),
            school_id: Arc::from("sch"),
            student_id: s,
            date: NaiveDate::from_ymd_opt(2025, 9, 3).unwrap(),
            status: DayStatus::Present,
            enrolled: 1,
            absent_milli: 0,
            excused_milli: 0,
            unexcused_milli: 0,
            suspended_milli: 0,
            tardy: 0,
            source_version: 1,
            deleted: 0,
        }],
        day_rows_delete: vec![],
        metrics_upsert: vec![],
        metrics_delete: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_clickhouse_turns_readiness_off_and_the_write_is_retried_not_awaited_forever() {
    // A server that accepts and then says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    let db = clickhouse::Client::default()
        .with_url(format!("http://{addr}"))
        .with_database("nothing");
    let mut writer = RowWriter::new(db).with_attempt_timeout(Duration::from_millis(300));
    let health = Health::new();
    health.set_ready(true);
    let stop = CancellationToken::new();
    let (h, s) = (health.clone(), stop.clone());
    let task = tokio::spawn(async move { writer.write(&[one_day_row()], &s, &h).await });

    let deadline = Instant::now() + Duration::from_secs(10);
    while health.is_ready() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !health.is_ready(),
        "readiness must go off while ClickHouse does not answer"
    );
    assert!(!task.is_finished(), "the write is still being retried");
    stop.cancel();
    let r = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("a shutdown ends the retrying write")
        .unwrap();
    assert!(r.is_err(), "not acknowledged, so the write reports failure");
    held.abort();
}
