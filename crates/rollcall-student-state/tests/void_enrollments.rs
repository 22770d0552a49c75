//! Exit types that void an enrollment (`policy.void_exit_types`, default "No show" and
//! "Invalid enrollment"): such an enrollment contributes no enrolled day, while its
//! corrections and deletes still apply. Every drain is also checked against
//! `reference::compute` (common/mod.rs).
//!
//! School "s1" has the 20 weekdays Mon 2023-09-04 ..= Fri 2023-09-29 (school year 2024);
//! as-of Fri 2023-09-29.

mod common;

use common::*;
use rollcall_model::Category::*;
use rollcall_model::Enrollment;
use rollcall_policy::Policy;
use rollcall_student_state::Changed;

fn sep(d: u32) -> chrono::NaiveDate {
    date(2023, 9, d)
}

fn harness(policy: Policy) -> Harness {
    let mut h = Harness::new(policy, sep(29));
    h.school_days("s1", sep(4), sep(29));
    h.school_days("s2", sep(4), sep(29));
    h
}

fn with_exit(mut e: Enrollment, exit_type: Option<&str>) -> Enrollment {
    e.exit_withdraw_type = exit_type.map(str::to_string);
    e.source_exit_withdraw_type = exit_type.map(str::to_string);
    e
}

#[test]
fn a_no_show_enrollment_has_no_enrolled_day() {
    let mut h = harness(Policy::default());
    let e = with_exit(
        enrollment("a", "s1", sep(4), Some(sep(4)), 1),
        Some("No show"),
    );
    assert_eq!(h.enroll(&e), Changed::Applied);
    h.drain();
    assert!(h.day_table.is_empty());
    assert!(
        !h.has_metrics("a", "s1"),
        "no enrolled day, no event: no row"
    );
    // An absence recorded for the no-show is outside any enrollment, never counted.
    h.attendance(&event("a", "s1", sep(4), UnexcusedAbsence, 1.0, "ev4", 2));
    h.drain();
    let m = h.metrics("a", "s1");
    assert_eq!((m.days_enrolled, m.absent_milli), (0, 0));
    assert_eq!(m.events_outside_enrollment, 1);
}

#[test]
fn invalid_enrollment_is_void_and_other_exit_types_are_not() {
    let mut h = harness(Policy::default());
    h.enroll(&with_exit(
        enrollment("a", "s1", sep(4), None, 1),
        Some("Invalid enrollment"),
    ));
    h.enroll(&with_exit(
        enrollment("b", "s1", sep(4), Some(sep(15)), 1),
        Some("Transferred"),
    ));
    h.enroll(&with_exit(
        enrollment("c", "s1", sep(4), Some(sep(15)), 1),
        Some("Expelled"),
    ));
    h.drain();
    assert!(!h.has_metrics("a", "s1"));
    assert_eq!(h.metrics("b", "s1").days_enrolled, 10);
    assert_eq!(h.metrics("c", "s1").days_enrolled, 10);
}

#[test]
fn a_correction_to_or_from_no_show_applies() {
    let mut h = harness(Policy::default());
    let plain = enrollment("a", "s1", sep(4), None, 1);
    h.enroll(&plain);
    h.attendance(&event("a", "s1", sep(5), ExcusedAbsence, 1.0, "ev5", 2));
    h.drain();
    assert_eq!(h.metrics("a", "s1").days_enrolled, 20);
    // The SIS corrects the enrollment to a no-show: its 20 days go.
    let mut noshow = with_exit(plain.clone(), Some("No show"));
    noshow.source_version = 3;
    assert_eq!(h.enroll(&noshow), Changed::Applied);
    h.drain();
    assert!(h.day_table.is_empty());
    let m = h.metrics("a", "s1");
    assert_eq!((m.days_enrolled, m.events_outside_enrollment), (0, 1));
    // The older version arriving late does not bring the days back.
    assert_eq!(h.enroll(&plain), Changed::Stale);
    // Corrected back (the student did come): the days return.
    let mut back = with_exit(plain.clone(), None);
    back.source_version = 4;
    assert_eq!(h.enroll(&back), Changed::Applied);
    h.drain();
    assert_eq!(h.metrics("a", "s1").days_enrolled, 20);
    assert_eq!(h.metrics("a", "s1").absent_milli, 1000);
}

#[test]
fn a_void_enrollment_can_be_deleted_and_its_tombstone_holds() {
    let mut h = harness(Policy::default());
    let noshow = with_exit(
        enrollment("a", "s1", sep(4), Some(sep(4)), 1),
        Some("No show"),
    );
    h.enroll(&noshow);
    h.drain();
    assert_eq!(h.enroll(&deleted(&noshow, 2)), Changed::Applied);
    h.drain();
    assert_eq!(
        h.enroll(&noshow),
        Changed::Stale,
        "the delete outranks the upsert"
    );
    assert!(!h.has_metrics("a", "s1"));
}

#[test]
fn a_void_enrollment_beside_a_real_one_adds_nothing_and_gives_no_grade() {
    let mut h = harness(Policy::default());
    let mut real = enrollment("a", "s1", sep(11), None, 1);
    real.grade_level = Some("Fifth grade".into());
    let mut noshow = with_exit(
        enrollment("a", "s1", sep(4), Some(sep(8)), 2),
        Some("No show"),
    );
    noshow.source_key = "enr|s1|a|noshow".into();
    noshow.grade_level = Some("Sixth grade".into());
    h.enroll(&real);
    h.enroll(&noshow);
    h.drain();
    let m = h.metrics("a", "s1");
    assert_eq!(m.days_enrolled, 15, "Sep 11..29 only");
    assert_eq!(
        &*m.grade_level, "Fifth grade",
        "the void span's later entry does not win"
    );
    // At another school, only a no-show: no row there.
    let mut other = with_exit(enrollment("a", "s2", sep(4), None, 3), Some("No show"));
    other.source_key = "enr|s2|a".into();
    h.enroll(&other);
    h.drain();
    assert!(!h.has_metrics("a", "s2"));
}

#[test]
fn with_no_void_exit_types_a_no_show_counts_as_enrolled() {
    let mut policy = Policy::default();
    policy.void_exit_types.clear();
    let mut h = harness(policy);
    h.enroll(&with_exit(
        enrollment("a", "s1", sep(4), Some(sep(8)), 1),
        Some("No show"),
    ));
    h.drain();
    assert_eq!(h.metrics("a", "s1").days_enrolled, 5);
}
