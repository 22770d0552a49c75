//! Property: for any stream of enrollments, calendars and attendance — shuffled,
//! duplicated, corrected (several versions per key), partly deleted, with the as-of date
//! moving back and forth and drains anywhere — the rows accumulated from the drained
//! diffs equal `reference::compute` on the final facts, at every drain.

mod common;

use chrono::{Days, NaiveDate};
use common::Harness;
use proptest::prelude::*;
use rollcall_model::{AttendanceEvent, CalendarDay, Category, Enrollment, Operation};
use rollcall_policy::{ExitDateRule, PartialDayRule, Policy, Truancy, TruancyWindow};

#[derive(Debug, Clone)]
enum Op {
    Att(AttendanceEvent),
    Enr(Enrollment),
    Cal(CalendarDay),
    Cals(Vec<CalendarDay>),
    Drain,
    AsOf(NaiveDate),
}

/// The dates a stream uses: `days` days from `base`.
#[derive(Debug, Clone, Copy)]
struct Shape {
    base: (i32, u32, u32),
    days: u8,
}

/// 70 days from 2024-05-20: crosses the school-year boundary (July 1).
const ACROSS_YEARS: Shape = Shape {
    base: (2024, 5, 20),
    days: 70,
};
/// 120 days from 2024-01-08, one school year: long enough for the last-30-days rule
/// and day-count truancy windows.
const LONG_YEAR: Shape = Shape {
    base: (2024, 1, 8),
    days: 120,
};

impl Shape {
    fn day(&self, i: u8) -> NaiveDate {
        let (y, m, d) = self.base;
        NaiveDate::from_ymd_opt(y, m, d).unwrap() + Days::new(u64::from(i))
    }
}

const STUDENTS: [(&str, &str); 3] = [("d1", "a"), ("d1", "b"), ("d2", "a")];
const SCHOOLS: [&str; 2] = ["s1", "s2"];
const FRACTIONS: [f64; 7] = [0.0, 0.25, 0.3, 0.5, 0.75, 1.0, 0.333];

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![
            Just(PartialDayRule::Fractional),
            Just(PartialDayRule::HalfDayThreshold),
            Just(PartialDayRule::FullDayOnly)
        ],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(TruancyWindow::SchoolYear),
            (1u32..20).prop_map(TruancyWindow::Days)
        ],
        1u32..6,
        prop_oneof![Just(0.1), Just(0.25), Just(0.5)],
        prop_oneof![Just(0.5), Just(1.0), Just(3.0)],
    )
        .prop_map(
            |(partial, oss, iss, exclusive, positive, window, min, threshold, truant)| Policy {
                partial_day: partial,
                out_of_school_suspension_counts_as_absent: oss,
                in_school_suspension_counts_as_absent: iss,
                exit_date: if exclusive {
                    ExitDateRule::Exclusive
                } else {
                    ExitDateRule::Inclusive
                },
                positive_attendance_districts: if positive { vec!["d2".into()] } else { vec![] },
                truancy: Truancy {
                    unexcused_days_threshold: truant,
                    window,
                },
                min_enrolled_days: min,
                chronic_threshold: threshold,
                ..Policy::default()
            },
        )
}

/// (student, key, school, day, category, fraction, delete)
fn attendance(n: u8) -> impl Strategy<Value = (usize, u8, usize, u8, usize, usize, bool)> {
    (
        0..3usize,
        0..16u8,
        0..2usize,
        0..n,
        0..8usize,
        0..7usize,
        prop::bool::weighted(0.15),
    )
}

/// (student, key, school, year, entry day, exit day, grade, delete)
fn enrollment(n: u8) -> impl Strategy<Value = (usize, u8, usize, bool, u8, Option<u8>, u8, bool)> {
    (
        0..3usize,
        0..3u8,
        0..2usize,
        any::<bool>(),
        0..n,
        prop::option::of(0..n),
        0..3u8,
        prop::bool::weighted(0.15),
    )
}

/// (district, school, code, day, instructional, delete)
fn calendar(n: u8) -> impl Strategy<Value = (usize, usize, bool, u8, bool, bool)> {
    (
        0..2usize,
        0..2usize,
        prop::bool::weighted(0.2),
        0..n,
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.1),
    )
}

#[derive(Debug, Clone)]
enum Spec {
    Att((usize, u8, usize, u8, usize, usize, bool)),
    Enr((usize, u8, usize, bool, u8, Option<u8>, u8, bool)),
    Cal((usize, usize, bool, u8, bool, bool)),
    /// Instructional weekdays for (district, school) from a day to the end.
    CalRange((usize, usize, u8)),
    Drain,
    AsOf(u8),
}

fn spec(shape: Shape) -> impl Strategy<Value = Spec> {
    let n = shape.days;
    prop_oneof![
        6 => attendance(n).prop_map(Spec::Att),
        3 => enrollment(n).prop_map(Spec::Enr),
        4 => calendar(n).prop_map(Spec::Cal),
        1 => (0..2usize, 0..2usize, 0..n / 3).prop_map(Spec::CalRange),
        1 => Just(Spec::Drain),
        1 => (0..n + 4).prop_map(Spec::AsOf),
    ]
}

/// Records get unique versions in generation order, then the stream is shuffled and
/// some records are repeated.
fn build(shape: Shape, specs: Vec<Spec>) -> Vec<Op> {
    let day = |i: u8| shape.day(i);
    specs
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let version = i as i64 * 1_000_003 + 17;
            match s {
                Spec::Att((st, key, school, d, cat, frac, delete)) => {
                    let (district, student) = STUDENTS[st];
                    let category = Category::ALL[cat];
                    Op::Att(AttendanceEvent {
                        district_id: district.into(),
                        school_id: SCHOOLS[school].into(),
                        student_id: student.into(),
                        school_year: 2024,
                        date: day(d),
                        category,
                        absent_fraction: if category.takes_duration() {
                            FRACTIONS[frac]
                        } else {
                            0.0
                        },
                        source_code: "x".into(),
                        source_secondary_code: None,
                        reason: None,
                        source_system: if key == 15 {
                            "csv".into()
                        } else {
                            "edfi".into()
                        },
                        source_instance: "i".into(),
                        source_key: format!("ev{}", key % 15),
                        source_version: version,
                        operation: if delete {
                            Operation::Delete
                        } else {
                            Operation::Upsert
                        },
                        observed_at_ms: 0,
                    })
                }
                Spec::Enr((st, key, school, next_year, entry, exit, grade, delete)) => {
                    let (district, student) = STUDENTS[st];
                    Op::Enr(Enrollment {
                        district_id: district.into(),
                        school_id: SCHOOLS[school].into(),
                        student_id: student.into(),
                        school_year: if next_year { 2025 } else { 2024 },
                        entry_date: day(entry),
                        exit_date: exit.map(day),
                        grade_level: (grade > 0).then(|| format!("g{grade}")),
                        subgroups: (0..grade).map(|g| format!("sg{g}")).collect(),
                        state_student_id: (grade != 1).then(|| format!("SS-{student}-{grade}")),
                        operation: if delete {
                            Operation::Delete
                        } else {
                            Operation::Upsert
                        },
                        source_version: version,
                        source_system: "edfi".into(),
                        source_instance: "i".into(),
                        source_key: format!("en{key}"),
                        observed_at_ms: 0,
                        source_grade_level: None,
                        // Some spans are void (policy.void_exit_types), some not; a
                        // correction of the same key may change it either way.
                        exit_withdraw_type: match (entry + grade + u8::from(next_year)) % 5 {
                            0 => Some("No show".into()),
                            1 => Some("Transferred".into()),
                            _ => None,
                        },
                        source_exit_withdraw_type: None,
                    })
                }
                Spec::Cal((district, school, alt, d, instructional, delete)) => {
                    Op::Cal(CalendarDay {
                        district_id: ["d1", "d2"][district].into(),
                        school_id: SCHOOLS[school].into(),
                        calendar_code: if alt { "alt".into() } else { String::new() },
                        school_year: 2024,
                        date: day(d),
                        is_instructional: instructional,
                        events: vec![],
                        operation: if delete {
                            Operation::Delete
                        } else {
                            Operation::Upsert
                        },
                        source_version: version,
                        source_system: "edfi".into(),
                        source_instance: "i".into(),
                        source_key: String::new(),
                        observed_at_ms: 0,
                    })
                }
                Spec::CalRange((district, school, from)) => Op::Cals(
                    (from..shape.days)
                        .map(day)
                        .filter(|d| {
                            !matches!(
                                chrono::Datelike::weekday(d),
                                chrono::Weekday::Sat | chrono::Weekday::Sun
                            )
                        })
                        .map(|d| CalendarDay {
                            district_id: ["d1", "d2"][district].into(),
                            school_id: SCHOOLS[school].into(),
                            calendar_code: "bulk".into(),
                            school_year: 2024,
                            date: d,
                            is_instructional: true,
                            events: vec![],
                            operation: Operation::Upsert,
                            source_version: version,
                            source_system: "edfi".into(),
                            source_instance: "i".into(),
                            source_key: String::new(),
                            observed_at_ms: 0,
                        })
                        .collect(),
                ),
                Spec::Drain => Op::Drain,
                Spec::AsOf(d) => Op::AsOf(day(d) - Days::new(2)),
            }
        })
        .collect()
}

fn stream(shape: Shape, max: usize) -> impl Strategy<Value = (Vec<Op>, Vec<(usize, usize)>)> {
    prop::collection::vec(spec(shape), 1..max).prop_flat_map(move |specs| {
        let ops = build(shape, specs);
        let n = ops.len();
        (
            Just(ops).prop_shuffle(),
            prop::collection::vec((0..n, 0..n), 0..n / 4 + 1),
        )
    })
}

fn run(shape: Shape, policy: Policy, as_of: u8, ops: Vec<Op>, dups: Vec<(usize, usize)>) {
    let day = |i: u8| shape.day(i);
    let mut ops = ops;
    for (from, to) in dups {
        let op = ops[from].clone();
        ops.insert(to.min(ops.len()), op);
    }
    let mut h = Harness::new(policy, day(as_of));
    for op in ops {
        match op {
            Op::Att(e) => {
                h.attendance(&e);
            }
            Op::Enr(e) => {
                h.enroll(&e);
            }
            Op::Cal(c) => {
                h.calendar(&c);
            }
            Op::Cals(cs) => {
                for c in cs {
                    h.calendar(&c);
                }
            }
            Op::Drain => h.drain(),
            Op::AsOf(d) => {
                h.set_as_of(d);
            }
        }
    }
    h.drain();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn incremental_rows_equal_the_reference_on_the_final_facts(
        policy in policy(),
        as_of in 0..74u8,
        (ops, dups) in stream(ACROSS_YEARS, 160),
    ) {
        run(ACROSS_YEARS, policy, as_of, ops, dups);
    }

    #[test]
    fn incremental_rows_equal_the_reference_over_a_long_school_year(
        policy in policy(),
        as_of in 0..124u8,
        (ops, dups) in stream(LONG_YEAR, 300),
    ) {
        run(LONG_YEAR, policy, as_of, ops, dups);
    }
}
