//! A deterministic scenario for the rollup's integration tests: calendars, enrollments
//! (mid-year entries, exits, a transfer) and attendance with duplicates, out-of-order
//! versions, corrections and deletes — plus the final facts, for the reference check.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{Datelike, Days, NaiveDate, Weekday};
use rollcall_clickhouse::rows::{StudentDayRow, StudentMetricsRow};
use rollcall_config::Config;
use rollcall_kafka::{OutRecord, Topics, TxnProducer};
use rollcall_model::{AttendanceEvent, CalendarDay, Category, Enrollment, Operation};
use rollcall_rollup::{to_day_row, to_metrics_row};

pub const DISTRICT: &str = "d1";
pub const SCHOOLS: [&str; 2] = ["sch-a", "sch-b"];

pub fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

/// What is sent, in send order, and the final live facts.
#[derive(Default)]
pub struct Scenario {
    pub calendars: Vec<CalendarDay>,
    pub enrollments: Vec<Enrollment>,
    pub events: Vec<AttendanceEvent>,
    pub final_calendars: BTreeMap<String, CalendarDay>,
    pub final_enrollments: BTreeMap<String, Enrollment>,
    pub final_events: BTreeMap<String, AttendanceEvent>,
    versions: BTreeMap<String, i64>,
}

fn calendar(school: &str, date: NaiveDate, instructional: bool) -> CalendarDay {
    CalendarDay {
        district_id: DISTRICT.into(),
        school_id: school.into(),
        calendar_code: "main".into(),
        school_year: 2026,
        date,
        is_instructional: instructional,
        events: vec![if instructional {
            "Instructional day"
        } else {
            "Holiday"
        }
        .into()],
        operation: Operation::Upsert,
        source_version: 1,
        source_system: "test".into(),
        source_instance: "t".into(),
        source_key: format!("cal:{school}:{date}"),
        observed_at_ms: 0,
    }
}

fn enrollment(
    student: &str,
    school: &str,
    entry: NaiveDate,
    exit: Option<NaiveDate>,
) -> Enrollment {
    Enrollment {
        district_id: DISTRICT.into(),
        school_id: school.into(),
        student_id: student.into(),
        school_year: 2026,
        entry_date: entry,
        exit_date: exit,
        grade_level: Some("Ninth grade".into()),
        subgroups: vec![],
        state_student_id: None,
        operation: Operation::Upsert,
        source_version: 1,
        source_system: "test".into(),
        source_instance: "t".into(),
        source_key: format!("enr:{student}:{school}:{entry}"),
        observed_at_ms: 0,
        source_grade_level: None,
        exit_withdraw_type: None,
        source_exit_withdraw_type: None,
    }
}

pub fn event(
    student: &str,
    school: &str,
    date: NaiveDate,
    category: Category,
    fraction: f64,
    version: i64,
) -> AttendanceEvent {
    AttendanceEvent {
        district_id: DISTRICT.into(),
        school_id: school.into(),
        student_id: student.into(),
        school_year: 2026,
        date,
        category,
        absent_fraction: fraction,
        source_code: category.as_str().into(),
        source_secondary_code: None,
        reason: None,
        source_system: "test".into(),
        source_instance: "t".into(),
        source_key: format!("ev:{student}:{school}:{date}:{}", category.as_str()),
        source_version: version,
        operation: Operation::Upsert,
        observed_at_ms: 0,
    }
}

impl Scenario {
    pub fn send_calendar(&mut self, c: CalendarDay) {
        self.final_calendars.insert(c.source_key.clone(), c.clone());
        self.calendars.push(c);
    }
    pub fn send_enrollment(&mut self, e: Enrollment) {
        self.final_enrollments
            .insert(e.source_key.clone(), e.clone());
        self.enrollments.push(e);
    }
    /// Send an event. The final facts follow the engine's documented rule: a higher
    /// source_version replaces (a delete with an equal or higher one removes); lower or
    /// equal versions are stale or duplicates.
    pub fn send_event(&mut self, e: AttendanceEvent) {
        let held = self.versions.get(&e.source_key).copied();
        let applies = match held {
            None => true,
            Some(v) if e.operation == Operation::Delete => e.source_version >= v,
            Some(v) => e.source_version > v,
        };
        if applies {
            self.versions.insert(e.source_key.clone(), e.source_version);
            if e.operation == Operation::Delete {
                self.final_events.remove(&e.source_key);
            } else {
                self.final_events.insert(e.source_key.clone(), e.clone());
            }
        }
        self.events.push(e);
    }

    /// `students` students over September–October 2025 at two schools.
    pub fn generate(students: usize) -> Scenario {
        let mut s = Scenario::default();
        let start = d(2025, 9, 1);
        let end = d(2025, 10, 31);
        let mut days = Vec::new();
        let mut day = start;
        while day <= end {
            let weekday = !matches!(day.weekday(), Weekday::Sat | Weekday::Sun);
            let holiday = day == d(2025, 9, 1) || day == d(2025, 10, 13);
            for school in SCHOOLS {
                if weekday {
                    s.send_calendar(calendar(school, day, !holiday));
                }
            }
            if weekday && !holiday {
                days.push(day);
            }
            day = day + Days::new(1);
        }
        for i in 0..students {
            let st = format!("s{i:05}");
            let school = SCHOOLS[i % 2];
            // most enrolled all along; some enter mid-way; some leave; one in 50 transfers
            let entry = if i % 7 == 3 { d(2025, 9, 22) } else { start };
            let exit = if i % 11 == 5 {
                Some(d(2025, 10, 17))
            } else {
                None
            };
            if i % 50 == 17 {
                s.send_enrollment(enrollment(&st, SCHOOLS[0], start, Some(d(2025, 9, 30))));
                s.send_enrollment(enrollment(&st, SCHOOLS[1], d(2025, 10, 1), None));
            } else {
                s.send_enrollment(enrollment(&st, school, entry, exit));
            }
            // a chronic tail: every 5th student misses a lot
            let rate = if i % 5 == 0 { 4 } else { 17 };
            for (k, day) in days.iter().enumerate() {
                let h = (i * 31 + k * 17) % 97;
                let sch = if i % 50 == 17 {
                    if *day >= d(2025, 10, 1) {
                        SCHOOLS[1]
                    } else {
                        SCHOOLS[0]
                    }
                } else {
                    school
                };
                if h % rate == 0 {
                    let (cat, frac) = match h % 6 {
                        0 => (Category::ExcusedAbsence, 1.0),
                        1 => (Category::UnexcusedAbsence, 1.0),
                        2 => (Category::UnexcusedAbsence, 0.5),
                        3 => (Category::OutOfSchoolSuspension, 1.0),
                        4 => (Category::Tardy, 0.0),
                        _ => (Category::InSchoolSuspension, 1.0),
                    };
                    let e = event(&st, sch, *day, cat, frac, 10);
                    s.send_event(e.clone());
                    if h % 13 == 0 {
                        s.send_event(e.clone()); // a duplicate
                    }
                    if h % 19 == 0 {
                        let mut old = e.clone(); // out of order: an older version after
                        old.source_version = 5;
                        old.absent_fraction = 0.25;
                        s.send_event(old);
                    }
                    if h % 23 == 0 && cat == Category::UnexcusedAbsence {
                        // late correction: unexcused → excused (delete + upsert new key)
                        let mut del = e.clone();
                        del.operation = Operation::Delete;
                        del.source_version = 20;
                        s.send_event(del);
                        s.send_event(event(&st, sch, *day, Category::ExcusedAbsence, frac, 20));
                    }
                }
                if h == 42 {
                    // two events on one day
                    s.send_event(event(&st, sch, *day, Category::Tardy, 0.0, 11));
                }
            }
            if i % 9 == 0 {
                // an event on a holiday and one outside enrollment: counted, not mixed in
                s.send_event(event(
                    &st,
                    school,
                    d(2025, 10, 13),
                    Category::UnexcusedAbsence,
                    1.0,
                    10,
                ));
            }
        }
        s
    }

    /// Every record, encoded for the normalized topics.
    pub fn records(&self, topics: &Topics) -> Vec<OutRecord> {
        let mut out = Vec::new();
        for c in &self.calendars {
            out.push(OutRecord {
                topic: topics.normalized("calendar"),
                key: c.kafka_key().into_bytes(),
                payload: rollcall_avro::encode_calendar_day(c),
                headers: vec![],
            });
        }
        for e in &self.enrollments {
            out.push(OutRecord {
                topic: topics.normalized("enrollment"),
                key: e.kafka_key().into_bytes(),
                payload: rollcall_avro::encode_enrollment(e),
                headers: vec![],
            });
        }
        for e in &self.events {
            out.push(OutRecord {
                topic: topics.normalized("attendance"),
                key: e.kafka_key().into_bytes(),
                payload: rollcall_avro::encode_attendance_event(e),
                headers: vec![],
            });
        }
        out
    }

    /// The reference rows from the final facts, as table rows (version 0).
    pub fn reference(
        &self,
        cfg: &Config,
        as_of: NaiveDate,
    ) -> (Vec<StudentDayRow>, Vec<StudentMetricsRow>) {
        let events: Vec<_> = self.final_events.values().cloned().collect();
        let enrollments: Vec<_> = self.final_enrollments.values().cloned().collect();
        let calendars: Vec<_> = self.final_calendars.values().cloned().collect();
        let (days, metrics) = rollcall_student_state::reference::compute(
            &events,
            &enrollments,
            &calendars,
            &cfg.policy,
            as_of,
        );
        let mut days: Vec<_> = days.iter().map(|r| to_day_row(r, 0)).collect();
        let mut metrics: Vec<_> = metrics.iter().map(|r| to_metrics_row(r, 0)).collect();
        days.sort_by_key(day_key);
        metrics.sort_by_key(metrics_key);
        (days, metrics)
    }
}

pub fn day_key(r: &StudentDayRow) -> (String, String, String, u16) {
    (
        r.district_id.clone(),
        r.school_id.clone(),
        r.student_id.clone(),
        r.date,
    )
}

pub fn metrics_key(r: &StudentMetricsRow) -> (String, String, String, u16) {
    (
        r.district_id.clone(),
        r.school_id.clone(),
        r.student_id.clone(),
        r.school_year,
    )
}

/// Current rows of the tables (latest version per key, deleted ones dropped), version 0.
pub async fn current_rows(
    db: &rollcall_clickhouse::Client,
) -> (Vec<StudentDayRow>, Vec<StudentMetricsRow>) {
    let mut days: Vec<StudentDayRow> = db
        .query("SELECT ?fields FROM student_days FINAL WHERE deleted = 0")
        .fetch_all()
        .await
        .expect("read student_days");
    let mut metrics: Vec<StudentMetricsRow> = db
        .query("SELECT ?fields FROM student_metrics FINAL WHERE deleted = 0")
        .fetch_all()
        .await
        .expect("read student_metrics");
    days.iter_mut().for_each(|r| r.version = 0);
    metrics.iter_mut().for_each(|r| r.version = 0);
    days.sort_by_key(day_key);
    metrics.sort_by_key(metrics_key);
    (days, metrics)
}

/// Wait until the tables equal the reference; returns how long it took.
pub async fn wait_for_reference(
    db: &rollcall_clickhouse::Client,
    want: &(Vec<StudentDayRow>, Vec<StudentMetricsRow>),
    timeout: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = current_rows(db).await;
        if got.0 == want.0 && got.1 == want.1 {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            let first_diff = got.1.iter().zip(want.1.iter()).find(|(a, b)| a != b);
            panic!(
                "tables differ from the reference after {timeout:?}: day rows {} vs {}, metrics rows {} vs {}; first metrics difference {first_diff:#?}",
                got.0.len(), want.0.len(), got.1.len(), want.1.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub fn send(cfg: &Config, records: &[OutRecord], txn_id: &str) {
    let client = rollcall_kafka::client_config(&cfg.kafka, &rollcall_testkit::secrets());
    let p = TxnProducer::new(&client, txn_id).unwrap();
    for chunk in records.chunks(20_000) {
        p.send_all(chunk).unwrap();
    }
}
