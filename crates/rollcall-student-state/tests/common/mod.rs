//! Test harness: drives a `RollupState`, applies every drained diff to a "table" (a map
//! by row key, like ClickHouse would hold after FINAL), and checks the table against
//! `reference::compute` on the facts resolved from every record seen so far.
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, Weekday};
use rollcall_model::{AttendanceEvent, CalendarDay, Category, Enrollment, Operation};
use rollcall_policy::Policy;
use rollcall_student_state::{
    reference, Changed, DayKey, DayRow, DayStatus, MetricsKey, MetricsRow, RollupState,
};

pub const DISTRICT: &str = "d1";

pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

pub fn weekdays(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    from.iter_days()
        .take_while(|d| *d <= to)
        .filter(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun))
        .collect()
}

pub fn event(
    student: &str,
    school: &str,
    d: NaiveDate,
    category: Category,
    fraction: f64,
    key: &str,
    version: i64,
) -> AttendanceEvent {
    AttendanceEvent {
        district_id: DISTRICT.into(),
        school_id: school.into(),
        student_id: student.into(),
        school_year: 2024,
        date: d,
        category,
        absent_fraction: fraction,
        source_code: category.as_str().into(),
        source_secondary_code: None,
        reason: None,
        source_system: "edfi".into(),
        source_instance: "test".into(),
        source_key: key.into(),
        source_version: version,
        operation: Operation::Upsert,
        observed_at_ms: 0,
    }
}

pub fn enrollment(
    student: &str,
    school: &str,
    entry: NaiveDate,
    exit: Option<NaiveDate>,
    version: i64,
) -> Enrollment {
    Enrollment {
        district_id: DISTRICT.into(),
        school_id: school.into(),
        student_id: student.into(),
        school_year: 2024,
        entry_date: entry,
        exit_date: exit,
        grade_level: Some("05".into()),
        subgroups: vec!["ell".into()],
        state_student_id: Some(format!("S-{student}")),
        operation: Operation::Upsert,
        source_version: version,
        source_system: "edfi".into(),
        source_instance: "test".into(),
        source_key: format!("enr|{school}|{student}|{entry}"),
        observed_at_ms: 0,
        source_grade_level: None,
        exit_withdraw_type: None,
        source_exit_withdraw_type: None,
    }
}

pub fn calendar_day(school: &str, d: NaiveDate, instructional: bool, version: i64) -> CalendarDay {
    CalendarDay {
        district_id: DISTRICT.into(),
        school_id: school.into(),
        calendar_code: String::new(),
        school_year: 2024,
        date: d,
        is_instructional: instructional,
        events: vec![],
        operation: Operation::Upsert,
        source_version: version,
        source_system: "edfi".into(),
        source_instance: "test".into(),
        source_key: format!("cal|{school}|{d}"),
        observed_at_ms: 0,
    }
}

pub fn deleted<T: Clone + HasOp>(r: &T, version: i64) -> T {
    let mut r = r.clone();
    r.set_op(Operation::Delete, version);
    r
}

pub trait HasOp {
    fn set_op(&mut self, op: Operation, version: i64);
}
impl HasOp for AttendanceEvent {
    fn set_op(&mut self, op: Operation, version: i64) {
        self.operation = op;
        self.source_version = version;
    }
}
impl HasOp for Enrollment {
    fn set_op(&mut self, op: Operation, version: i64) {
        self.operation = op;
        self.source_version = version;
    }
}
impl HasOp for CalendarDay {
    fn set_op(&mut self, op: Operation, version: i64) {
        self.operation = op;
        self.source_version = version;
    }
}

/// Keeps, per key, the record with the highest version (a delete wins a tie; among
/// upserts of equal version the first stays) — the "final facts".
#[derive(Clone)]
pub struct Facts<T> {
    by_key: BTreeMap<String, T>,
}

impl<T> Default for Facts<T> {
    fn default() -> Self {
        Facts {
            by_key: BTreeMap::new(),
        }
    }
}

impl<T: Clone> Facts<T> {
    fn put(
        &mut self,
        key: String,
        r: &T,
        version: i64,
        op: Operation,
        held: impl Fn(&T) -> (i64, Operation),
    ) {
        match self.by_key.get(&key) {
            Some(h) => {
                let (hv, hop) = held(h);
                if version > hv
                    || (version == hv && op == Operation::Delete && hop == Operation::Upsert)
                {
                    self.by_key.insert(key, r.clone());
                }
            }
            None => {
                self.by_key.insert(key, r.clone());
            }
        }
    }

    pub fn values(&self) -> Vec<T> {
        self.by_key.values().cloned().collect()
    }
}

pub struct Harness {
    pub st: RollupState,
    pub policy: Policy,
    pub day_table: BTreeMap<DayKey, DayRow>,
    pub metrics_table: BTreeMap<MetricsKey, MetricsRow>,
    pub events: Facts<AttendanceEvent>,
    pub enrollments: Facts<Enrollment>,
    pub calendars: Facts<CalendarDay>,
    /// Rows written by the last drain: (day upserts, day deletes, metrics upserts,
    /// metrics deletes).
    pub last: (usize, usize, usize, usize),
}

impl Harness {
    pub fn new(policy: Policy, as_of: NaiveDate) -> Self {
        Harness {
            st: RollupState::new(policy.clone(), as_of).unwrap(),
            policy,
            day_table: BTreeMap::new(),
            metrics_table: BTreeMap::new(),
            events: Facts::default(),
            enrollments: Facts::default(),
            calendars: Facts::default(),
            last: (0, 0, 0, 0),
        }
    }

    pub fn attendance(&mut self, e: &AttendanceEvent) -> Changed {
        let key = format!(
            "{}|{}|{}|{}",
            e.district_id, e.student_id, e.source_system, e.source_key
        );
        self.events.put(key, e, e.source_version, e.operation, |h| {
            (h.source_version, h.operation)
        });
        self.st.apply_attendance(e).unwrap()
    }

    pub fn enroll(&mut self, e: &Enrollment) -> Changed {
        let key = format!(
            "{}|{}|{}|{}",
            e.district_id, e.student_id, e.source_system, e.source_key
        );
        self.enrollments
            .put(key, e, e.source_version, e.operation, |h| {
                (h.source_version, h.operation)
            });
        self.st.apply_enrollment(e).unwrap()
    }

    pub fn calendar(&mut self, c: &CalendarDay) -> Changed {
        let key = format!(
            "{}|{}|{}|{}",
            c.district_id, c.school_id, c.calendar_code, c.date
        );
        self.calendars
            .put(key, c, c.source_version, c.operation, |h| {
                (h.source_version, h.operation)
            });
        self.st.apply_calendar(c).unwrap()
    }

    /// Instructional weekdays for a school, from..=to.
    pub fn school_days(&mut self, school: &str, from: NaiveDate, to: NaiveDate) {
        for d in weekdays(from, to) {
            self.calendar(&calendar_day(school, d, true, 1));
        }
    }

    pub fn set_as_of(&mut self, d: NaiveDate) -> usize {
        self.st.set_as_of(d).unwrap()
    }

    /// Drain, apply the diff to the tables (checking it is a proper diff), then compare
    /// the tables with the reference.
    pub fn drain(&mut self) {
        let changes = self.st.drain_dirty();
        self.last = (0, 0, 0, 0);
        for c in changes {
            assert!(!c.is_empty(), "an empty change was returned");
            for r in c.day_rows_delete {
                assert_eq!(r.deleted, 1);
                let mut live = r.clone();
                live.deleted = 0;
                let held = self.day_table.remove(&r.key());
                assert_eq!(held.as_ref(), Some(&live), "tombstone for a row not held");
                self.last.1 += 1;
            }
            for r in c.day_rows_upsert {
                assert_eq!(r.deleted, 0);
                assert_eq!(&*r.student_id, &*c.student_id);
                let old = self.day_table.insert(r.key(), r.clone());
                assert_ne!(old.as_ref(), Some(&r), "upsert of an unchanged row");
                self.last.0 += 1;
            }
            for r in c.metrics_delete {
                assert_eq!(r.deleted, 1);
                let mut live = r.clone();
                live.deleted = 0;
                let held = self.metrics_table.remove(&r.key());
                assert_eq!(
                    held.as_ref(),
                    Some(&live),
                    "tombstone for a metrics row not held"
                );
                self.last.3 += 1;
            }
            for r in c.metrics_upsert {
                assert_eq!(r.deleted, 0);
                let old = self.metrics_table.insert(r.key(), r.clone());
                assert_ne!(old.as_ref(), Some(&r), "upsert of an unchanged metrics row");
                self.last.2 += 1;
            }
        }
        self.check_reference();
    }

    pub fn check_reference(&self) {
        let (days, metrics) = reference::compute(
            &self.events.values(),
            &self.enrollments.values(),
            &self.calendars.values(),
            &self.policy,
            self.st.as_of(),
        );
        let ref_days: BTreeMap<DayKey, DayRow> = days.into_iter().map(|r| (r.key(), r)).collect();
        let ref_metrics: BTreeMap<MetricsKey, MetricsRow> =
            metrics.into_iter().map(|r| (r.key(), r)).collect();
        if ref_days != self.day_table {
            for (k, v) in &ref_days {
                if self.day_table.get(k) != Some(v) {
                    panic!(
                        "day {k:?}: reference {v:?}\n engine {:?}",
                        self.day_table.get(k)
                    );
                }
            }
            for (k, v) in &self.day_table {
                assert!(
                    ref_days.contains_key(k),
                    "engine has an extra day row {v:?}"
                );
            }
        }
        if ref_metrics != self.metrics_table {
            for (k, v) in &ref_metrics {
                if self.metrics_table.get(k) != Some(v) {
                    panic!(
                        "metrics {k:?}: reference {v:?}\n engine {:?}",
                        self.metrics_table.get(k)
                    );
                }
            }
            for (k, v) in &self.metrics_table {
                assert!(
                    ref_metrics.contains_key(k),
                    "engine has an extra metrics row {v:?}"
                );
            }
        }
        // and the full snapshot equals the table
        let (all_days, all_metrics) = self.st.rows();
        let snap: BTreeMap<DayKey, DayRow> = all_days.into_iter().map(|r| (r.key(), r)).collect();
        assert!(
            snap == self.day_table,
            "rows() differs from the drained table"
        );
        let snap: BTreeMap<MetricsKey, MetricsRow> =
            all_metrics.into_iter().map(|r| (r.key(), r)).collect();
        assert!(
            snap == self.metrics_table,
            "rows() differs from the drained metrics"
        );
    }

    pub fn day(&self, student: &str, school: &str, d: NaiveDate) -> Option<&DayRow> {
        self.day_table
            .get(&(DISTRICT.into(), school.into(), student.into(), d))
    }

    pub fn status(&self, student: &str, school: &str, d: NaiveDate) -> Option<DayStatus> {
        self.day(student, school, d).map(|r| r.status)
    }

    pub fn metrics(&self, student: &str, school: &str) -> &MetricsRow {
        self.metrics_table
            .get(&(DISTRICT.into(), school.into(), student.into(), 2024))
            .unwrap_or_else(|| panic!("no metrics for {student} at {school}"))
    }

    pub fn has_metrics(&self, student: &str, school: &str) -> bool {
        self.metrics_table
            .contains_key(&(DISTRICT.into(), school.into(), student.into(), 2024))
    }
}
