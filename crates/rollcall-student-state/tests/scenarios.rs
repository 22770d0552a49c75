//! Scenario tests: each case worked out by hand. Every drain is also checked against
//! `reference::compute` on the final facts (see common/mod.rs).
//!
//! The calendar of school "s1" (and "s2"): the 20 weekdays Mon 2023-09-04 ..= Fri
//! 2023-09-29, school year 2024; as-of Fri 2023-09-29 unless a test says otherwise.

mod common;

use common::*;
use rollcall_model::Category::{self, *};
use rollcall_policy::{ExitDateRule, PartialDayRule, Policy, Tier, TruancyWindow};
use rollcall_student_state::{Changed, DayStatus};

fn sep(d: u32) -> chrono::NaiveDate {
    date(2023, 9, d)
}

/// School s1 with 20 instructional days; student "a" enrolled from Sep 4 with no exit.
fn setup(policy: Policy) -> Harness {
    let mut h = Harness::new(policy, sep(29));
    h.school_days("s1", sep(4), sep(29));
    h.enroll(&enrollment("a", "s1", sep(4), None, 1));
    h
}

fn absent(h: &mut Harness, d: u32, cat: Category, frac: f64, version: i64) {
    let key = format!("a|s1|{d}|{cat}");
    h.attendance(&event("a", "s1", sep(d), cat, frac, &key, version));
}

#[test]
fn exception_only_feed_a_day_without_event_is_present() {
    let mut h = setup(Policy::default());
    absent(&mut h, 5, UnexcusedAbsence, 1.0, 10);
    absent(&mut h, 12, ExcusedAbsence, 1.0, 11);
    h.drain();
    assert_eq!(h.day_table.len(), 20);
    assert_eq!(h.status("a", "s1", sep(4)), Some(DayStatus::NoEvent));
    assert_eq!(
        h.status("a", "s1", sep(5)),
        Some(DayStatus::UnexcusedAbsence)
    );
    let d5 = h.day("a", "s1", sep(5)).unwrap();
    assert_eq!(
        (d5.absent_milli, d5.unexcused_milli, d5.source_version),
        (1000, 1000, 10)
    );
    let m = h.metrics("a", "s1");
    assert_eq!(m.days_enrolled, 20);
    assert_eq!(m.absent_milli, 2000);
    assert_eq!((m.excused_milli, m.unexcused_milli), (1000, 1000));
    // 2 / 20 = 10% → chronic, moderate tier; 1 unexcused day < 3 → not truant
    assert_eq!(m.is_chronically_absent, 1);
    assert_eq!(m.tier, Tier::ModerateChronic);
    assert_eq!(m.is_truant, 0);
    assert_eq!(m.as_of_date, sep(29));
    assert_eq!(m.days_missing, 0);
    assert_eq!(&*m.grade_level, "05");
    assert_eq!(&*m.state_student_id, "S-a");
    assert_eq!(&m.subgroups[..], ["ell".to_string()]);
}

#[test]
fn several_events_one_day_status_by_precedence_amount_is_capped_sum() {
    let mut h = setup(Policy::default());
    // Sep 5: excused morning + unexcused afternoon + a tardy record
    h.attendance(&event("a", "s1", sep(5), ExcusedAbsence, 0.5, "k1", 1));
    h.attendance(&event("a", "s1", sep(5), UnexcusedAbsence, 0.5, "k2", 2));
    h.attendance(&event("a", "s1", sep(5), Tardy, 0.0, "k3", 3));
    // Sep 6: out-of-school suspension and a conflicting unexcused record
    h.attendance(&event(
        "a",
        "s1",
        sep(6),
        OutOfSchoolSuspension,
        1.0,
        "k4",
        4,
    ));
    h.attendance(&event("a", "s1", sep(6), UnexcusedAbsence, 1.0, "k5", 5));
    // Sep 7: two half-day excused records
    h.attendance(&event("a", "s1", sep(7), ExcusedAbsence, 0.5, "k6", 6));
    h.attendance(&event("a", "s1", sep(7), ExcusedAbsence, 0.5, "k7", 7));
    // Sep 8: early departure and a present record: present, not tardy
    h.attendance(&event("a", "s1", sep(8), EarlyDeparture, 0.0, "k8", 8));
    h.attendance(&event("a", "s1", sep(8), Present, 0.0, "k9", 9));
    h.drain();
    let d5 = h.day("a", "s1", sep(5)).unwrap();
    assert_eq!(d5.status, DayStatus::UnexcusedAbsence);
    assert_eq!(
        (
            d5.absent_milli,
            d5.unexcused_milli,
            d5.excused_milli,
            d5.tardy,
            d5.source_version
        ),
        (1000, 500, 500, 1, 2)
    );
    let d6 = h.day("a", "s1", sep(6)).unwrap();
    assert_eq!(d6.status, DayStatus::OutOfSchoolSuspension);
    assert_eq!(
        (d6.absent_milli, d6.suspended_milli, d6.unexcused_milli),
        (1000, 1000, 0)
    );
    let d7 = h.day("a", "s1", sep(7)).unwrap();
    assert_eq!(
        (d7.status, d7.absent_milli, d7.excused_milli),
        (DayStatus::ExcusedAbsence, 1000, 1000)
    );
    let d8 = h.day("a", "s1", sep(8)).unwrap();
    assert_eq!(
        (d8.status, d8.absent_milli, d8.tardy),
        // early departure is present and counts in days_tardy (DESIGN.md)
        (DayStatus::EarlyDeparture, 0, 1)
    );
    let m = h.metrics("a", "s1");
    assert_eq!(m.absent_milli, 3000);
    assert_eq!(
        m.absent_milli,
        m.excused_milli + m.unexcused_milli + m.suspended_milli
    );
    assert_eq!(m.days_tardy, 2, "the tardy day and the early-departure day");
}

#[test]
fn late_correction_unexcused_to_excused_weeks_later_as_key_change() {
    let mut h = setup(Policy::default());
    h.attendance(&event(
        "a",
        "s1",
        sep(5),
        UnexcusedAbsence,
        1.0,
        "a|5|U",
        100,
    ));
    h.drain();
    assert_eq!(h.metrics("a", "s1").unexcused_milli, 1000);
    // weeks later (Ed-Fi key change: delete old key, create new key)
    h.attendance(&deleted(
        &event("a", "s1", sep(5), UnexcusedAbsence, 1.0, "a|5|U", 0),
        900,
    ));
    h.attendance(&event("a", "s1", sep(5), ExcusedAbsence, 1.0, "a|5|E", 901));
    h.drain();
    // one day row and the metrics row changed
    assert_eq!(h.last, (1, 0, 1, 0));
    let d = h.day("a", "s1", sep(5)).unwrap();
    assert_eq!(
        (
            d.status,
            d.excused_milli,
            d.unexcused_milli,
            d.source_version
        ),
        (DayStatus::ExcusedAbsence, 1000, 0, 901)
    );
    let m = h.metrics("a", "s1");
    assert_eq!(
        (m.absent_milli, m.excused_milli, m.unexcused_milli),
        (1000, 1000, 0)
    );
}

#[test]
fn late_correction_of_the_same_key_replaces_the_category() {
    let mut h = setup(Policy::default());
    h.attendance(&event(
        "a",
        "s1",
        sep(5),
        UnexcusedAbsence,
        1.0,
        "csv|a|5",
        1 << 32,
    ));
    h.drain();
    h.attendance(&event(
        "a",
        "s1",
        sep(5),
        ExcusedAbsence,
        0.5,
        "csv|a|5",
        9 << 32,
    ));
    h.drain();
    let m = h.metrics("a", "s1");
    assert_eq!(
        (m.absent_milli, m.excused_milli, m.unexcused_milli),
        (500, 500, 0)
    );
}

#[test]
fn delete_removes_the_event_and_its_tombstone_blocks_an_older_upsert() {
    let mut h = setup(Policy::default());
    absent(&mut h, 5, UnexcusedAbsence, 1.0, 5);
    h.drain();
    let e = event(
        "a",
        "s1",
        sep(5),
        UnexcusedAbsence,
        1.0,
        "a|s1|5|unexcused_absence",
        6,
    );
    assert_eq!(h.attendance(&deleted(&e, 6)), Changed::Applied);
    h.drain();
    assert_eq!(h.status("a", "s1", sep(5)), Some(DayStatus::NoEvent));
    // the older upsert arrives late: it cannot resurrect the event
    let mut late = e.clone();
    late.source_version = 4;
    assert_eq!(h.attendance(&late), Changed::Stale);
    // a delete that arrives before its (older) upsert
    let e2 = event("a", "s1", sep(6), ExcusedAbsence, 1.0, "k6", 8);
    assert_eq!(h.attendance(&deleted(&e2, 9)), Changed::Applied);
    assert_eq!(h.attendance(&e2), Changed::Stale);
    h.drain();
    assert_eq!(h.metrics("a", "s1").absent_milli, 0);
    // a newer upsert after a delete is a new life of the key
    let mut again = e2.clone();
    again.source_version = 10;
    assert_eq!(h.attendance(&again), Changed::Applied);
    h.drain();
    assert_eq!(h.metrics("a", "s1").absent_milli, 1000);
}

#[test]
fn duplicates_are_idempotent_and_out_of_order_versions_are_ignored() {
    let mut h = setup(Policy::default());
    let e = event("a", "s1", sep(5), UnexcusedAbsence, 1.0, "k", 7);
    assert_eq!(h.attendance(&e), Changed::Applied);
    h.drain();
    assert_eq!(h.attendance(&e), Changed::Duplicate);
    let mut older = e.clone();
    older.source_version = 3;
    older.category = ExcusedAbsence;
    assert_eq!(h.attendance(&older), Changed::Stale);
    assert_eq!(h.st.dirty_len(), 0);
    h.drain();
    assert_eq!(h.last, (0, 0, 0, 0));
    assert_eq!(
        h.status("a", "s1", sep(5)),
        Some(DayStatus::UnexcusedAbsence)
    );
    // the same for enrollments and calendars
    assert_eq!(
        h.enroll(&enrollment("a", "s1", sep(4), None, 1)),
        Changed::Duplicate
    );
    assert_eq!(
        h.enroll(&enrollment("a", "s1", sep(4), None, 0)),
        Changed::Stale
    );
    assert_eq!(
        h.calendar(&calendar_day("s1", sep(5), true, 1)),
        Changed::Duplicate
    );
    assert_eq!(
        h.calendar(&calendar_day("s1", sep(5), false, 0)),
        Changed::Stale
    );
    h.drain();
    assert_eq!(h.last, (0, 0, 0, 0));
}

#[test]
fn events_on_non_instructional_days_or_outside_enrollment_are_counted_not_rated() {
    let mut h = Harness::new(Policy::default(), sep(29));
    h.school_days("s1", sep(4), sep(29));
    h.enroll(&enrollment("a", "s1", sep(11), None, 1));
    // Saturday Sep 9: not instructional
    h.attendance(&event("a", "s1", sep(9), UnexcusedAbsence, 1.0, "sat", 1));
    // Thursday Sep 7: instructional but before the entry date
    h.attendance(&event("a", "s1", sep(7), UnexcusedAbsence, 1.0, "early", 2));
    // at a school the student was never enrolled in
    h.attendance(&event(
        "a",
        "s2",
        sep(12),
        ExcusedAbsence,
        1.0,
        "elsewhere",
        3,
    ));
    h.drain();
    let m = h.metrics("a", "s1");
    assert_eq!(m.days_enrolled, 15);
    assert_eq!(m.absent_milli, 0);
    assert_eq!(m.events_non_instructional, 1);
    assert_eq!(m.events_outside_enrollment, 1);
    // s2 has no calendar: its event is on a non-instructional day, and only counted
    let m2 = h.metrics("a", "s2");
    assert_eq!((m2.days_enrolled, m2.events_non_instructional), (0, 1));
    assert_eq!(m2.as_of_date, date(2023, 7, 1));
    assert!(h.day("a", "s1", sep(9)).is_none());
    assert!(h.day("a", "s1", sep(7)).is_none());
}

#[test]
fn mid_year_entry_counts_days_from_the_entry_date() {
    let mut h = Harness::new(Policy::default(), sep(29));
    h.school_days("s1", sep(4), sep(29));
    h.enroll(&enrollment("a", "s1", sep(18), None, 1));
    h.attendance(&event("a", "s1", sep(20), UnexcusedAbsence, 1.0, "k", 1));
    h.drain();
    let m = h.metrics("a", "s1");
    // Sep 18..=29: 10 instructional days, 1 absent = 10%
    assert_eq!(m.days_enrolled, 10);
    assert_eq!(m.meets_min_enrollment, 1);
    assert_eq!(m.is_chronically_absent, 1);
    assert!(h.day("a", "s1", sep(15)).is_none());
}

#[test]
fn exit_date_is_inclusive_by_default() {
    let mut h = Harness::new(Policy::default(), sep(29));
    h.school_days("s1", sep(4), sep(29));
    h.enroll(&enrollment("a", "s1", sep(4), Some(sep(15)), 1));
    h.drain();
    let m = h.metrics("a", "s1");
    assert_eq!(m.days_enrolled, 10);
    assert_eq!(m.as_of_date, sep(15));
    assert!(h.day("a", "s1", sep(15)).is_some());
}

#[test]
fn exit_date_exclusive_drops_the_exit_day() {
    let policy = Policy {
        exit_date: ExitDateRule::Exclusive,
        ..Policy::default()
    };
    let mut h = Harness::new(policy, sep(29));
    h.school_days("s1", sep(4), sep(29));
    h.enroll(&enrollment("a", "s1", sep(4), Some(sep(15)), 1));
    h.drain();
    let m = h.metrics("a", "s1");
    assert_eq!(m.days_enrolled, 9);
    assert_eq!(m.as_of_date, sep(14));
    assert_eq!(m.meets_min_enrollment, 0);
    assert!(h.day("a", "s1", sep(15)).is_none());
}

#[test]
fn exit_then_transfer_counts_each_school_on_its_own_days() {
    let mut h = Harness::new(Policy::default(), sep(29));
    h.school_days("s1", sep(4), sep(29));
    h.school_days("s2", sep(4), sep(29));
    h.enroll(&enrollment("a", "s1", sep(4), Some(sep(15)), 1));
    h.enroll(&enrollment("a", "s2", sep(18), None, 2));
    h.attendance(&event("a", "s1", sep(6), UnexcusedAbsence, 1.0, "k1", 3));
    h.attendance(&event("a", "s2", sep(19), UnexcusedAbsence, 1.0, "k2", 4));
    h.attendance(&event("a", "s2", sep(20), ExcusedAbsence, 0.5, "k3", 5));
    h.drain();
    let (m1, m2) = (h.metrics("a", "s1").clone(), h.metrics("a", "s2").clone());
    assert_eq!(
        (m1.days_enrolled, m1.absent_milli, m1.is_chronically_absent),
        (10, 1000, 1)
    );
    assert_eq!(
        (m2.days_enrolled, m2.absent_milli, m2.is_chronically_absent),
        (10, 1500, 1)
    );
    assert_eq!(m2.tier, Tier::ModerateChronic);
    assert_eq!(h.day_table.len(), 20);
    // the exit is corrected later: the student left on Sep 8 instead
    h.enroll(&enrollment("a", "s1", sep(4), Some(sep(8)), 6));
    h.drain();
    assert_eq!(h.last, (0, 5, 1, 0));
    assert_eq!(h.metrics("a", "s1").days_enrolled, 5);
    // 1 of 5 days = 20%: severe, but under the 10-day minimum: not judged chronic
    assert_eq!(h.metrics("a", "s1").tier, Tier::SevereChronic);
    assert_eq!(h.metrics("a", "s1").is_chronically_absent, 0);
}

#[test]
fn deleted_enrollment_tombstones_all_its_rows() {
    let mut h = setup(Policy::default());
    absent(&mut h, 5, UnexcusedAbsence, 1.0, 2);
    h.drain();
    assert_eq!(h.day_table.len(), 20);
    let e = enrollment("a", "s1", sep(4), None, 1);
    h.enroll(&deleted(&e, 3));
    h.drain();
    // 20 day rows deleted; the metrics row stays for the orphan event (outside
    // enrollment) with no enrolled days
    assert_eq!(h.last, (0, 20, 1, 0));
    assert!(h.day_table.is_empty());
    let m = h.metrics("a", "s1");
    assert_eq!((m.days_enrolled, m.events_outside_enrollment), (0, 1));
    assert_eq!(&*m.grade_level, "");
    // and once the event goes too, so does the metrics row
    let ev = event(
        "a",
        "s1",
        sep(5),
        UnexcusedAbsence,
        1.0,
        "a|s1|5|unexcused_absence",
        0,
    );
    h.attendance(&deleted(&ev, 4));
    h.drain();
    assert_eq!(h.last, (0, 0, 0, 1));
    assert!(!h.has_metrics("a", "s1"));
}

#[test]
fn an_event_moved_to_another_day_leaves_the_old_day_present() {
    let mut h = setup(Policy::default());
    h.attendance(&event("a", "s1", sep(5), UnexcusedAbsence, 1.0, "k", 1));
    h.drain();
    h.attendance(&event("a", "s1", sep(6), UnexcusedAbsence, 1.0, "k", 2));
    h.drain();
    assert_eq!(h.status("a", "s1", sep(5)), Some(DayStatus::NoEvent));
    assert_eq!(
        h.status("a", "s1", sep(6)),
        Some(DayStatus::UnexcusedAbsence)
    );
    assert_eq!(h.last, (2, 0, 0, 0));
    // and moved to another school where the student is not enrolled
    h.attendance(&event("a", "s2", sep(6), UnexcusedAbsence, 1.0, "k", 3));
    h.drain();
    assert_eq!(h.metrics("a", "s1").absent_milli, 0);
    assert_eq!(h.metrics("a", "s2").events_non_instructional, 1);
}

fn partial_days(rule: PartialDayRule) -> u32 {
    let mut h = setup(Policy {
        partial_day: rule,
        ..Policy::default()
    });
    absent(&mut h, 5, ExcusedAbsence, 0.5, 1);
    absent(&mut h, 6, UnexcusedAbsence, 0.3, 2);
    absent(&mut h, 7, UnexcusedAbsence, 1.0, 3);
    h.drain();
    h.metrics("a", "s1").absent_milli
}

#[test]
fn partial_day_rule_fractional_counts_the_fraction() {
    assert_eq!(partial_days(PartialDayRule::Fractional), 1800);
}

#[test]
fn partial_day_rule_half_day_threshold_rounds_to_whole_days() {
    assert_eq!(partial_days(PartialDayRule::HalfDayThreshold), 2000);
}

#[test]
fn partial_day_rule_full_day_only_counts_only_whole_days() {
    assert_eq!(partial_days(PartialDayRule::FullDayOnly), 1000);
}

#[test]
fn partial_day_rule_applies_to_the_days_total_not_each_event() {
    // two unexcused quarter days + an excused quarter day = 0.75 → 1 under half-day
    let mut h = setup(Policy {
        partial_day: PartialDayRule::HalfDayThreshold,
        ..Policy::default()
    });
    h.attendance(&event("a", "s1", sep(5), UnexcusedAbsence, 0.25, "p1", 1));
    h.attendance(&event("a", "s1", sep(5), UnexcusedAbsence, 0.25, "p2", 2));
    h.attendance(&event("a", "s1", sep(5), ExcusedAbsence, 0.25, "p3", 3));
    h.drain();
    let d = h.day("a", "s1", sep(5)).unwrap();
    // rounded up: the extra quarter goes to the first part (unexcused)
    assert_eq!(
        (d.absent_milli, d.unexcused_milli, d.excused_milli),
        (1000, 750, 250)
    );
}

fn suspensions(oss: bool, iss: bool) -> (u32, u32) {
    let mut h = setup(Policy {
        out_of_school_suspension_counts_as_absent: oss,
        in_school_suspension_counts_as_absent: iss,
        ..Policy::default()
    });
    absent(&mut h, 5, OutOfSchoolSuspension, 1.0, 1);
    absent(&mut h, 6, OutOfSchoolSuspension, 1.0, 2);
    absent(&mut h, 7, InSchoolSuspension, 1.0, 3);
    h.drain();
    assert_eq!(
        h.status("a", "s1", sep(7)),
        Some(DayStatus::InSchoolSuspension)
    );
    let m = h.metrics("a", "s1");
    (m.absent_milli, m.suspended_milli)
}

#[test]
fn out_of_school_suspension_counts_absent_by_default_in_school_does_not() {
    assert_eq!(suspensions(true, false), (2000, 2000));
}

#[test]
fn out_of_school_suspension_can_count_present() {
    assert_eq!(suspensions(false, false), (0, 0));
}

#[test]
fn in_school_suspension_can_count_absent() {
    assert_eq!(suspensions(true, true), (3000, 3000));
    assert_eq!(suspensions(false, true), (1000, 1000));
}

#[test]
fn suspensions_never_count_toward_truancy() {
    let mut h = setup(Policy::default());
    for d in [5, 6, 7, 8] {
        absent(&mut h, d, OutOfSchoolSuspension, 1.0, i64::from(d));
    }
    h.drain();
    let m = h.metrics("a", "s1");
    assert_eq!((m.unexcused_window_milli, m.is_truant), (0, 0));
}

#[test]
fn missing_day_rule_positive_attendance_district_counts_missing_days_as_present() {
    let policy = Policy {
        positive_attendance_districts: vec![DISTRICT.into()],
        ..Policy::default()
    };
    let mut h = setup(policy);
    // the district reported 17 days present, 1 absent; 2 days have no record
    for d in common::weekdays(sep(4), sep(29)) {
        let day = chrono::Datelike::day(&d);
        if day == 12 || day == 13 {
            continue;
        }
        let cat = if day == 20 { UnexcusedAbsence } else { Present };
        let f = if day == 20 { 1.0 } else { 0.0 };
        h.attendance(&event(
            "a",
            "s1",
            d,
            cat,
            f,
            &format!("p{day}"),
            i64::from(day),
        ));
    }
    h.drain();
    assert_eq!(h.status("a", "s1", sep(12)), Some(DayStatus::Missing));
    assert_eq!(h.status("a", "s1", sep(4)), Some(DayStatus::Present));
    let m = h.metrics("a", "s1");
    assert_eq!(
        (m.days_missing, m.days_enrolled, m.absent_milli),
        (2, 20, 1000)
    );
    assert_eq!(m.is_chronically_absent, 0);
}

#[test]
fn missing_day_rule_present_for_exception_only_districts() {
    let mut h = setup(Policy::default());
    h.drain();
    assert_eq!(h.status("a", "s1", sep(12)), Some(DayStatus::NoEvent));
    assert_eq!(h.metrics("a", "s1").days_missing, 0);
}

#[test]
fn min_enrollment_below_the_minimum_is_not_judged_chronic() {
    for (min, chronic) in [(10, 0), (9, 1)] {
        let mut h = Harness::new(
            Policy {
                min_enrolled_days: min,
                ..Policy::default()
            },
            sep(29),
        );
        h.school_days("s1", sep(4), sep(29));
        // 9 days: Sep 19..=29
        h.enroll(&enrollment("a", "s1", sep(19), None, 1));
        h.attendance(&event("a", "s1", sep(20), UnexcusedAbsence, 1.0, "k", 1));
        h.drain();
        let m = h.metrics("a", "s1");
        assert_eq!(m.days_enrolled, 9);
        assert_eq!(m.meets_min_enrollment, chronic);
        assert_eq!(m.is_chronically_absent, chronic);
    }
}

#[test]
fn truancy_window_school_year_counts_all_unexcused_days() {
    let mut h = setup(Policy::default());
    for d in [5, 6] {
        absent(&mut h, d, UnexcusedAbsence, 1.0, i64::from(d));
    }
    absent(&mut h, 7, UnexcusedAbsence, 0.5, 7);
    h.drain();
    assert_eq!(h.metrics("a", "s1").is_truant, 0); // 2.5 < 3
    absent(&mut h, 8, UnexcusedAbsence, 0.5, 8);
    h.drain();
    let m = h.metrics("a", "s1");
    assert_eq!((m.unexcused_window_milli, m.is_truant), (3000, 1));
}

#[test]
fn truancy_window_of_n_days_ends_on_the_as_of_date() {
    let policy = Policy {
        truancy: rollcall_policy::Truancy {
            unexcused_days_threshold: 3.0,
            window: TruancyWindow::Days(14),
        },
        ..Policy::default()
    };
    let mut h = setup(policy);
    for d in [5, 6, 7] {
        absent(&mut h, d, UnexcusedAbsence, 1.0, i64::from(d));
    }
    absent(&mut h, 18, UnexcusedAbsence, 1.0, 18);
    h.set_as_of(sep(15));
    h.drain();
    // window Sep 2..=15 holds Sep 5, 6, 7
    assert_eq!(h.metrics("a", "s1").unexcused_window_milli, 3000);
    assert_eq!(h.metrics("a", "s1").is_truant, 1);
    h.set_as_of(sep(29));
    h.drain();
    // window Sep 16..=29 holds only Sep 18
    let m = h.metrics("a", "s1");
    assert_eq!((m.unexcused_window_milli, m.is_truant), (1000, 0));
    assert_eq!(m.unexcused_milli, 4000);
}

#[test]
fn tiers_follow_the_cut_points() {
    // 20 enrolled days; absent 0.8 → 4% satisfactory, 1 → 5% at risk,
    // 3.9 → 19.5% moderate, 4 → 20% severe
    for (absent_days, tier) in [
        (0.8, Tier::Satisfactory),
        (1.0, Tier::AtRisk),
        (3.9, Tier::ModerateChronic),
        (4.0, Tier::SevereChronic),
    ] {
        let mut h = setup(Policy::default());
        let mut left: f64 = absent_days;
        let mut d = 5;
        while left > 1e-9 {
            let f = left.min(1.0);
            absent(&mut h, d, ExcusedAbsence, f, i64::from(d));
            left -= f;
            d += 1;
        }
        h.drain();
        assert_eq!(h.metrics("a", "s1").tier, tier, "{absent_days}");
    }
    // other cut points
    let mut h = setup(Policy {
        tiers: rollcall_policy::Tiers {
            at_risk: 0.02,
            moderate_chronic: 0.04,
            severe_chronic: 0.3,
        },
        chronic_threshold: 0.04,
        ..Policy::default()
    });
    absent(&mut h, 5, ExcusedAbsence, 1.0, 1);
    h.drain();
    let m = h.metrics("a", "s1");
    assert_eq!(
        (m.tier, m.is_chronically_absent),
        (Tier::ModerateChronic, 1)
    );
}

#[test]
fn chronic_threshold_is_a_policy_setting() {
    let mut h = setup(Policy {
        chronic_threshold: 0.15,
        ..Policy::default()
    });
    for d in [5, 6] {
        absent(&mut h, d, UnexcusedAbsence, 1.0, i64::from(d));
    }
    h.drain();
    assert_eq!(h.metrics("a", "s1").is_chronically_absent, 0); // 10% < 15%
    absent(&mut h, 7, UnexcusedAbsence, 1.0, 7);
    h.drain();
    assert_eq!(h.metrics("a", "s1").is_chronically_absent, 1); // 15%
}

#[test]
fn advancing_as_of_adds_the_new_days_of_enrolled_students_only() {
    let mut h = Harness::new(Policy::default(), sep(15));
    h.school_days("s1", sep(4), sep(29));
    h.enroll(&enrollment("a", "s1", sep(4), None, 1));
    h.enroll(&enrollment("b", "s1", sep(4), Some(sep(8)), 2));
    h.drain();
    assert_eq!(h.metrics("a", "s1").days_enrolled, 10);
    assert_eq!(h.metrics("a", "s1").as_of_date, sep(15));
    // Saturday: no instructional day, nobody changes
    assert_eq!(h.set_as_of(sep(16)), 0);
    h.drain();
    assert_eq!(h.last, (0, 0, 0, 0));
    // Friday: five new days for a; b left on Sep 8 and does not change
    h.set_as_of(sep(22));
    h.drain();
    assert_eq!(h.last, (5, 0, 1, 0));
    let m = h.metrics("a", "s1");
    assert_eq!((m.days_enrolled, m.as_of_date), (15, sep(22)));
    assert_eq!(h.metrics("b", "s1").as_of_date, sep(8));
    // and back again
    h.set_as_of(sep(15));
    h.drain();
    assert_eq!(h.last, (0, 5, 1, 0));
}

#[test]
fn calendar_change_updates_every_student_of_the_school() {
    let mut h = setup(Policy::default());
    h.enroll(&enrollment("b", "s1", sep(4), None, 1));
    absent(&mut h, 5, UnexcusedAbsence, 1.0, 1);
    h.drain();
    // Sep 5 becomes a weather day
    h.calendar(&calendar_day("s1", sep(5), false, 2));
    h.drain();
    assert_eq!(h.last, (0, 2, 2, 0));
    let m = h.metrics("a", "s1");
    assert_eq!(
        (m.days_enrolled, m.absent_milli, m.events_non_instructional),
        (19, 0, 1)
    );
    // a second calendar code that makes it instructional again (any code counts)
    let mut alt = calendar_day("s1", sep(5), true, 3);
    alt.calendar_code = "alt".into();
    h.calendar(&alt);
    h.drain();
    assert_eq!(h.metrics("a", "s1").absent_milli, 1000);
    // deleting that calendar record reverts it
    h.calendar(&deleted(&alt, 4));
    h.drain();
    assert_eq!(h.metrics("a", "s1").days_enrolled, 19);
}

#[test]
fn not_enrolled_event_takes_the_day_out_of_the_denominator() {
    let mut h = setup(Policy::default());
    h.attendance(&event("a", "s1", sep(5), NotEnrolled, 0.0, "ne", 1));
    h.attendance(&event("a", "s1", sep(5), UnexcusedAbsence, 1.0, "u", 2));
    h.drain();
    let d = h.day("a", "s1", sep(5)).unwrap();
    assert_eq!(
        (d.status, d.enrolled, d.absent_milli, d.source_version),
        (DayStatus::NotEnrolled, 0, 0, 1)
    );
    let m = h.metrics("a", "s1");
    assert_eq!((m.days_enrolled, m.absent_milli), (19, 0));
}

#[test]
fn absent_last_30_counts_the_last_30_enrolled_days() {
    let mut h = Harness::new(Policy::default(), date(2023, 10, 31));
    h.school_days("s1", sep(4), date(2023, 10, 31)); // 20 + 22 = 42 weekdays
    h.enroll(&enrollment("a", "s1", sep(4), None, 1));
    // absent Sep 5 (outside the last 30) and Oct 30 (inside); Oct 31 not enrolled
    h.attendance(&event("a", "s1", sep(5), UnexcusedAbsence, 1.0, "k1", 1));
    h.attendance(&event(
        "a",
        "s1",
        date(2023, 10, 30),
        ExcusedAbsence,
        0.5,
        "k2",
        2,
    ));
    h.attendance(&event(
        "a",
        "s1",
        date(2023, 10, 31),
        NotEnrolled,
        0.0,
        "k3",
        3,
    ));
    h.drain();
    let m = h.metrics("a", "s1");
    assert_eq!(m.days_enrolled, 41);
    assert_eq!(m.absent_milli, 1500);
    assert_eq!(m.absent_last_30_milli, 500);
    // the last 30 enrolled days are Oct 2..=30 (21) and Sep 19..=29 (9); Oct 31 is not
    // enrolled: an absence on Sep 18 falls outside, Sep 19 inside
    h.attendance(&event("a", "s1", sep(18), UnexcusedAbsence, 1.0, "k4", 4));
    h.attendance(&event("a", "s1", sep(19), UnexcusedAbsence, 1.0, "k5", 5));
    h.drain();
    assert_eq!(h.metrics("a", "s1").absent_last_30_milli, 1500);
}

#[test]
fn school_years_are_separate_units() {
    let mut h = Harness::new(Policy::default(), date(2024, 9, 30));
    h.school_days("s1", date(2024, 6, 3), date(2024, 6, 14)); // 10 days of 2024
    h.school_days("s1", date(2024, 9, 2), date(2024, 9, 13)); // 10 days of 2025
    h.enroll(&enrollment("a", "s1", sep(4), Some(date(2024, 6, 14)), 1));
    let mut next = enrollment("a", "s1", date(2024, 9, 2), None, 2);
    next.school_year = 2025;
    next.grade_level = Some("06".into());
    h.enroll(&next);
    h.attendance(&event(
        "a",
        "s1",
        date(2024, 9, 3),
        UnexcusedAbsence,
        1.0,
        "k",
        3,
    ));
    h.drain();
    let m24 = h.metrics("a", "s1").clone();
    assert_eq!(
        (m24.days_enrolled, m24.absent_milli, &*m24.grade_level),
        (10, 0, "05")
    );
    let m25 = h
        .metrics_table
        .get(&(DISTRICT.into(), "s1".into(), "a".into(), 2025))
        .unwrap();
    assert_eq!(
        (m25.days_enrolled, m25.absent_milli, &*m25.grade_level),
        (10, 1000, "06")
    );
    assert_eq!(
        h.day("a", "s1", date(2024, 9, 3)).unwrap().school_year,
        2025
    );
}

#[test]
fn a_record_with_a_date_the_state_cannot_hold_is_an_error_naming_it() {
    let mut h = setup(Policy::default());
    let e = event(
        "a",
        "s1",
        date(1969, 12, 1),
        UnexcusedAbsence,
        1.0,
        "bad-key",
        1,
    );
    let err = h.st.apply_attendance(&e).unwrap_err().to_string();
    assert!(
        err.contains("bad-key") && err.contains("1969-12-01"),
        "{err}"
    );
    let mut en = enrollment("a", "s1", sep(4), None, 1);
    en.school_year = 40000;
    assert!(h.st.apply_enrollment(&en).is_err());
}

#[test]
fn stats_count_students_and_bytes_census_counts_tombstones() {
    let mut h = setup(Policy::default());
    absent(&mut h, 5, UnexcusedAbsence, 1.0, 1);
    let e = event("a", "s1", sep(6), ExcusedAbsence, 1.0, "gone", 2);
    h.attendance(&e);
    h.attendance(&deleted(&e, 3));
    let st = h.st.stats();
    assert_eq!((st.students, st.schools, st.dirty), (1, 1, 1));
    assert!(st.student_bytes > 0 && st.shared_bytes > 0);
    let c = h.st.census();
    assert_eq!((c.units, c.spans, c.events, c.tombstones), (1, 1, 2, 1));
    h.drain();
    assert_eq!(h.st.stats().dirty, 0);
}
