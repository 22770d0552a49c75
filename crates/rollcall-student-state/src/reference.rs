//! The reference: every row recomputed from scratch from the final facts, written for
//! obviousness rather than speed and independently of the engine (it shares only the
//! row types and `rollcall_policy`'s functions). Tests check the engine against it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use rollcall_model::{AttendanceEvent, CalendarDay, Category, Enrollment, Operation};
use rollcall_policy::{self as policy, MissingDayRule, Policy, Tier};

use crate::rows::{DayRow, DayStatus, MetricsRow};

/// Rank of a category in the day's precedence: the highest rank decides the status.
fn rank(c: Category) -> u8 {
    match c {
        Category::NotEnrolled => 8,
        Category::OutOfSchoolSuspension => 7,
        Category::UnexcusedAbsence => 6,
        Category::ExcusedAbsence => 5,
        Category::InSchoolSuspension => 4,
        Category::EarlyDeparture => 3,
        Category::Tardy => 2,
        Category::Present => 1,
    }
}

fn milli(e: &AttendanceEvent) -> u32 {
    if e.category.default_absent_fraction() == 0.0 || !e.absent_fraction.is_finite() {
        0
    } else {
        (e.absent_fraction.clamp(0.0, 1.0) * 1000.0).round() as u32
    }
}

struct Day {
    status: DayStatus,
    enrolled: u8,
    absent: u32,
    excused: u32,
    unexcused: u32,
    suspended: u32,
    tardy: u8,
    source_version: i64,
}

fn one_day(events: &[&AttendanceEvent], missing: bool, p: &Policy) -> Day {
    let Some(top) = events.iter().map(|e| e.category).max_by_key(|&c| rank(c)) else {
        return Day {
            status: if missing {
                DayStatus::Missing
            } else {
                DayStatus::NoEvent
            },
            enrolled: 1,
            absent: 0,
            excused: 0,
            unexcused: 0,
            suspended: 0,
            tardy: 0,
            source_version: 0,
        };
    };
    let source_version = events
        .iter()
        .filter(|e| e.category == top)
        .map(|e| e.source_version)
        .max()
        .unwrap_or(0);
    if !policy::counts_as_enrolled(top) {
        return Day {
            status: DayStatus::from_category(top),
            enrolled: 0,
            absent: 0,
            excused: 0,
            unexcused: 0,
            suspended: 0,
            tardy: 0,
            source_version,
        };
    }
    // per category, the day's share (capped at a whole day)
    let share = |c: Category| -> u32 {
        events
            .iter()
            .filter(|e| e.category == c)
            .map(|e| milli(e))
            .sum::<u32>()
            .min(1000)
    };
    let counts = |c: Category| policy::absent_days(c, 1.0, p) > 0.0;
    let order = [
        Category::OutOfSchoolSuspension,
        Category::UnexcusedAbsence,
        Category::ExcusedAbsence,
        Category::InSchoolSuspension,
    ];
    let raw: u32 = order
        .iter()
        .filter(|&&c| counts(c))
        .map(|&c| share(c))
        .sum::<u32>()
        .min(1000);
    let total = (policy::apply_partial_day_rule(f64::from(raw) / 1000.0, p.partial_day) * 1000.0)
        .round() as u32;
    let mut parts: BTreeMap<Category, u32> = BTreeMap::new();
    let mut left = total;
    for c in order.iter().copied().filter(|&c| counts(c)) {
        let take = left.min(share(c));
        parts.insert(c, take);
        left -= take;
    }
    if left > 0 {
        let first = order
            .iter()
            .copied()
            .find(|&c| counts(c) && share(c) > 0)
            .expect("a rounded-up day has an absence");
        *parts.get_mut(&first).expect("counted") += left;
    }
    let part = |c: Category| parts.get(&c).copied().unwrap_or(0);
    Day {
        status: DayStatus::from_category(top),
        enrolled: 1,
        absent: total,
        excused: part(Category::ExcusedAbsence),
        unexcused: part(Category::UnexcusedAbsence),
        suspended: part(Category::OutOfSchoolSuspension) + part(Category::InSchoolSuspension),
        tardy: u8::from(events.iter().any(|e| policy::counts_as_tardy(e.category))),
        source_version,
    }
}

type UnitKey = (String, String, String, i32); // district, student, school, school year

/// All day and metrics rows for the final facts (upserts only; records whose
/// `operation` is delete are skipped), counting days up to `as_of`. Rows are sorted by
/// their keys.
pub fn compute(
    events: &[AttendanceEvent],
    enrollments: &[Enrollment],
    calendars: &[CalendarDay],
    p: &Policy,
    as_of: NaiveDate,
) -> (Vec<DayRow>, Vec<MetricsRow>) {
    let instructional: BTreeSet<(&str, &str, NaiveDate)> = calendars
        .iter()
        .filter(|c| c.operation == Operation::Upsert && c.is_instructional)
        .map(|c| (c.district_id.as_str(), c.school_id.as_str(), c.date))
        .collect();
    let mut spans: BTreeMap<UnitKey, Vec<&Enrollment>> = BTreeMap::new();
    let mut evs: BTreeMap<UnitKey, Vec<&AttendanceEvent>> = BTreeMap::new();
    for e in enrollments
        .iter()
        .filter(|e| e.operation == Operation::Upsert)
    {
        let k = (
            e.district_id.clone(),
            e.student_id.clone(),
            e.school_id.clone(),
            e.school_year,
        );
        spans.entry(k).or_default().push(e);
    }
    for e in events.iter().filter(|e| e.operation == Operation::Upsert) {
        let k = (
            e.district_id.clone(),
            e.student_id.clone(),
            e.school_id.clone(),
            policy::school_year_of(e.date, p),
        );
        evs.entry(k).or_default().push(e);
    }
    let units: BTreeSet<UnitKey> = spans.keys().chain(evs.keys()).cloned().collect();

    let mut day_rows = Vec::new();
    let mut metric_rows = Vec::new();
    for unit in units {
        let (district, student, school, year) = &unit;
        let no_spans = Vec::new();
        let no_events = Vec::new();
        let unit_spans = spans.get(&unit).unwrap_or(&no_spans);
        let unit_events = evs.get(&unit).unwrap_or(&no_events);
        let is_instructional =
            |d: NaiveDate| instructional.contains(&(district.as_str(), school.as_str(), d));
        let voids = |s: &Enrollment| policy::voids_enrollment(s.exit_withdraw_type.as_deref(), p);
        let is_enrolled = |d: NaiveDate| {
            unit_spans
                .iter()
                .filter(|s| !voids(s))
                .any(|s| policy::is_enrolled_on(d, s.entry_date, s.exit_date, p))
        };
        let missing = policy::missing_day_rule(district, p) == MissingDayRule::Missing;
        let first = policy::school_year_start(*year, p);
        let last = policy::school_year_start(year + 1, p) - Days::new(1);
        let (district_a, school_a, student_a): (Arc<str>, Arc<str>, Arc<str>) = (
            Arc::from(district.as_str()),
            Arc::from(school.as_str()),
            Arc::from(student.as_str()),
        );

        let mut mine: Vec<DayRow> = Vec::new();
        let mut d = first;
        while d <= last && d <= as_of {
            if is_instructional(d) && is_enrolled(d) {
                let todays: Vec<&AttendanceEvent> = unit_events
                    .iter()
                    .copied()
                    .filter(|e| e.date == d)
                    .collect();
                let day = one_day(&todays, missing, p);
                mine.push(DayRow {
                    school_year: *year as u16,
                    district_id: district_a.clone(),
                    school_id: school_a.clone(),
                    student_id: student_a.clone(),
                    date: d,
                    status: day.status,
                    enrolled: day.enrolled,
                    absent_milli: day.absent as u16,
                    excused_milli: day.excused as u16,
                    unexcused_milli: day.unexcused as u16,
                    suspended_milli: day.suspended as u16,
                    tardy: day.tardy,
                    source_version: day.source_version,
                    deleted: 0,
                });
            }
            d = d + Days::new(1);
        }
        let non_instructional = unit_events
            .iter()
            .filter(|e| !is_instructional(e.date))
            .count() as u32;
        let outside = unit_events
            .iter()
            .filter(|e| is_instructional(e.date) && !is_enrolled(e.date))
            .count() as u32;
        if mine.is_empty() && non_instructional == 0 && outside == 0 {
            continue;
        }
        let as_of_date = mine.last().map_or(first, |r| r.date);
        let enrolled_rows: Vec<&DayRow> = mine.iter().filter(|r| r.enrolled == 1).collect();
        let days_enrolled = enrolled_rows.len() as u32;
        let sum = |f: fn(&DayRow) -> u16| mine.iter().map(|r| u32::from(f(r))).sum::<u32>();
        let absent = sum(|r| r.absent_milli);
        let window_start = policy::truancy_window_start(as_of_date, p);
        let unexcused_window: u32 = mine
            .iter()
            .filter(|r| r.date >= window_start)
            .map(|r| u32::from(r.unexcused_milli))
            .sum();
        let last_30: u32 = enrolled_rows
            .iter()
            .rev()
            .take(30)
            .map(|r| u32::from(r.absent_milli))
            .sum();
        let latest = unit_spans
            .iter()
            .filter(|s| !voids(s))
            .max_by_key(|s| (s.entry_date, s.source_version))
            .or_else(|| {
                unit_spans
                    .iter()
                    .max_by_key(|s| (s.entry_date, s.source_version))
            });
        let absent_days = f64::from(absent) / 1000.0;
        let tier = if days_enrolled == 0 {
            Tier::Satisfactory
        } else {
            policy::tier(absent_days / f64::from(days_enrolled), p)
        };
        metric_rows.push(MetricsRow {
            school_year: *year as u16,
            district_id: district_a.clone(),
            school_id: school_a.clone(),
            student_id: student_a.clone(),
            state_student_id: Arc::from(
                latest
                    .and_then(|s| s.state_student_id.as_deref())
                    .unwrap_or(""),
            ),
            grade_level: Arc::from(latest.and_then(|s| s.grade_level.as_deref()).unwrap_or("")),
            subgroups: Arc::from(latest.map(|s| s.subgroups.clone()).unwrap_or_default()),
            as_of_date,
            days_enrolled,
            absent_milli: absent,
            excused_milli: sum(|r| r.excused_milli),
            unexcused_milli: sum(|r| r.unexcused_milli),
            suspended_milli: sum(|r| r.suspended_milli),
            days_tardy: sum(|r| u16::from(r.tardy)),
            unexcused_window_milli: unexcused_window,
            absent_last_30_milli: last_30,
            meets_min_enrollment: u8::from(days_enrolled >= p.min_enrolled_days),
            is_chronically_absent: u8::from(policy::is_chronic(absent_days, days_enrolled, p)),
            tier,
            is_truant: u8::from(policy::is_truant(f64::from(unexcused_window) / 1000.0, p)),
            events_non_instructional: non_instructional,
            events_outside_enrollment: outside,
            days_missing: mine
                .iter()
                .filter(|r| r.status == DayStatus::Missing)
                .count() as u32,
            deleted: 0,
        });
        day_rows.extend(mine);
    }
    day_rows.sort_by_key(DayRow::key);
    metric_rows.sort_by_key(MetricsRow::key);
    (day_rows, metric_rows)
}
