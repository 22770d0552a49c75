//! Round trip of every row type the rollup writes, through the real ClickHouse, with the
//! compression rollcall ships (LZ4). The crate's schema validation cannot run against
//! 18.16, so this is what proves the Rust types match the migrated tables.

use rollcall_clickhouse::rows::{
    DayStatus, StudentDayRow, StudentMetricsRow, TierValue, STUDENT_DAYS, STUDENT_METRICS,
};
use rollcall_clickhouse::{connect, connect_server, embedded_migrations, migrate};
use rollcall_testkit::{clickhouse_with_unique_db, require_services, secrets};

#[tokio::test]
async fn every_row_type_round_trips_with_lz4() {
    require_services();
    let ch = clickhouse_with_unique_db("rows");
    assert!(ch.compression, "the shipped default compresses");
    let server = connect_server(&ch, &secrets());
    migrate(&server, &ch.database, &embedded_migrations())
        .await
        .expect("migrate");
    let db = connect(&ch, &secrets());

    let statuses = [
        DayStatus::Present,
        DayStatus::Tardy,
        DayStatus::EarlyDeparture,
        DayStatus::ExcusedAbsence,
        DayStatus::UnexcusedAbsence,
        DayStatus::OutOfSchoolSuspension,
        DayStatus::InSchoolSuspension,
        DayStatus::NotEnrolled,
        DayStatus::NoEvent,
        DayStatus::Missing,
    ];
    let days: Vec<StudentDayRow> = statuses
        .iter()
        .enumerate()
        .map(|(i, s)| StudentDayRow {
            school_year: 2022,
            district_id: "d-ü".into(),
            school_id: format!("sch{i}"),
            student_id: format!("stu \"{i}\""),
            date: 19_000 + i as u16,
            status: *s,
            enrolled: (i % 2) as u8,
            absent_milli: (i * 111) as u16,
            excused_milli: 1000,
            unexcused_milli: 500,
            suspended_milli: 333,
            tardy: 1,
            source_version: -(i as i64) * 1_000_000_007,
            version: u64::MAX - i as u64,
            deleted: (i % 3 == 0) as u8,
        })
        .collect();
    let mut ins = db.insert::<StudentDayRow>(STUDENT_DAYS).await.unwrap();
    for r in &days {
        ins.write(r).await.unwrap();
    }
    ins.end().await.unwrap();
    let back: Vec<StudentDayRow> = db
        .query("SELECT ?fields FROM student_days ORDER BY school_id")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(back, days);

    let tiers = [
        TierValue::Satisfactory,
        TierValue::AtRisk,
        TierValue::ModerateChronic,
        TierValue::SevereChronic,
    ];
    let metrics: Vec<StudentMetricsRow> = tiers
        .iter()
        .enumerate()
        .map(|(i, t)| StudentMetricsRow {
            school_year: 2022,
            district_id: "d1".into(),
            school_id: "s1".into(),
            student_id: format!("st{i}"),
            state_student_id: if i == 0 {
                String::new()
            } else {
                format!("SSID{i}")
            },
            grade_level: "Ninth grade".into(),
            subgroups: (0..i).map(|k| format!("g{k}")).collect(),
            as_of_date: 19_139,
            days_enrolled: 170 + i as u32,
            absent_milli: 12_500,
            excused_milli: 7_000,
            unexcused_milli: 5_500,
            suspended_milli: 0,
            days_tardy: 3,
            unexcused_window_milli: 5_500,
            absent_last_30_milli: 2_000,
            meets_min_enrollment: 1,
            is_chronically_absent: (i >= 2) as u8,
            tier: *t,
            is_truant: 1,
            events_non_instructional: 2,
            events_outside_enrollment: 1,
            days_missing: 4,
            version: 1_700_000_000_000 + i as u64,
            deleted: 0,
        })
        .collect();
    let mut ins = db
        .insert::<StudentMetricsRow>(STUDENT_METRICS)
        .await
        .unwrap();
    for r in &metrics {
        ins.write(r).await.unwrap();
    }
    ins.end().await.unwrap();
    let back: Vec<StudentMetricsRow> = db
        .query("SELECT ?fields FROM student_metrics ORDER BY student_id")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(back, metrics);

    server
        .query(&format!("DROP DATABASE {}", ch.database))
        .execute()
        .await
        .unwrap();
}
