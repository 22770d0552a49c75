//! Tests named after the DESIGN.md policy rules they check.

use super::*;
use Category::*;

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

fn with(f: impl FnOnce(&mut Policy)) -> Policy {
    let mut p = Policy::default();
    f(&mut p);
    p
}

#[test]
fn defaults_are_the_design_table() {
    let p = Policy::default();
    assert_eq!(p.chronic_threshold, 0.10);
    assert_eq!(p.min_enrolled_days, 10);
    assert_eq!(
        (
            p.tiers.at_risk,
            p.tiers.moderate_chronic,
            p.tiers.severe_chronic
        ),
        (0.05, 0.10, 0.20)
    );
    assert_eq!(p.partial_day, PartialDayRule::Fractional);
    assert!(p.out_of_school_suspension_counts_as_absent);
    assert!(!p.in_school_suspension_counts_as_absent);
    assert_eq!(p.exit_date, ExitDateRule::Inclusive);
    assert_eq!(p.missing_day, MissingDayRule::Present);
    assert!(p.positive_attendance_districts.is_empty());
    assert_eq!(p.truancy.unexcused_days_threshold, 3.0);
    assert_eq!(p.truancy.window, TruancyWindow::SchoolYear);
    assert_eq!(p.publication_threshold, 10);
    assert_eq!(p.school_day_minutes, 360);
    assert_eq!(p.school_year_start_month, 7);
    assert_eq!(p.future_date_tolerance_days, 0);
    assert!(!p.uppercase_ids);
    assert_eq!(p.max_id_length, 64);
    assert_eq!(p.validate(), Ok(()));
}

#[test]
fn empty_toml_gives_the_defaults_and_keys_override_them() {
    let p: Policy = toml::from_str("").unwrap();
    assert_eq!(p, Policy::default());
    let p: Policy = toml::from_str(
        r#"
        chronic_threshold = 0.15
        partial_day = "half_day_threshold"
        exit_date = "exclusive"
        positive_attendance_districts = ["d042"]
        [tiers]
        severe_chronic = 0.30
        [truancy]
        window = 180
        "#,
    )
    .unwrap();
    assert_eq!(p.chronic_threshold, 0.15);
    assert_eq!(p.partial_day, PartialDayRule::HalfDayThreshold);
    assert_eq!(p.exit_date, ExitDateRule::Exclusive);
    assert_eq!(p.tiers.severe_chronic, 0.30);
    assert_eq!(p.tiers.at_risk, 0.05, "unset tier keys keep their defaults");
    assert_eq!(p.truancy.window, TruancyWindow::Days(180));
    assert_eq!(p.truancy.unexcused_days_threshold, 3.0);
    let back: Policy = toml::from_str(&toml::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
}

#[test]
fn unknown_policy_keys_are_rejected_by_name() {
    let err = toml::from_str::<Policy>("chronic_treshold = 0.1").unwrap_err();
    assert!(err.to_string().contains("chronic_treshold"), "{err}");
    let err = toml::from_str::<Policy>("[tiers]\nat_rsk = 0.1").unwrap_err();
    assert!(err.to_string().contains("at_rsk"), "{err}");
    let err = toml::from_str::<Policy>("[truancy]\nwindow = \"month\"").unwrap_err();
    assert!(err.to_string().contains("school_year"), "{err}");
}

#[test]
fn validate_names_every_bad_key_and_its_value() {
    let p = with(|p| {
        p.chronic_threshold = 1.5;
        p.min_enrolled_days = 0;
        p.tiers.at_risk = 0.3;
        p.school_day_minutes = 0;
        p.school_year_start_month = 13;
        p.truancy.window = TruancyWindow::Days(0);
        p.truancy.unexcused_days_threshold = -1.0;
        p.max_id_length = 0;
        p.future_date_tolerance_days = 1000;
        p.positive_attendance_districts = vec![" ".into()];
    });
    let errs = p.validate().unwrap_err();
    let text: Vec<String> = errs.0.iter().map(|e| e.to_string()).collect();
    assert!(text.contains(&"policy.chronic_threshold must be in (0, 1], got 1.5".to_string()));
    for key in [
        "policy.min_enrolled_days ",
        "policy.tiers ",
        "policy.school_day_minutes ",
        "policy.school_year_start_month ",
        "policy.truancy.window ",
        "policy.truancy.unexcused_days_threshold ",
        "policy.max_id_length ",
        "policy.future_date_tolerance_days ",
        "policy.positive_attendance_districts ",
    ] {
        assert!(
            text.iter().any(|t| t.starts_with(key)),
            "{key} missing from {text:?}"
        );
    }
    assert_eq!(errs.0.len(), 10, "{text:?}");
    assert!(errs.to_string().contains("; "));
}

// --- partial days ---------------------------------------------------------------------

#[test]
fn partial_day_rule_counts_half_days_per_setting() {
    use PartialDayRule::*;
    // (rule, absent_fraction, days absent)
    let table = [
        (Fractional, 1.0, 1.0),
        (Fractional, 0.5, 0.5),
        (Fractional, 0.33, 0.33),
        (Fractional, 0.0, 0.0),
        (HalfDayThreshold, 1.0, 1.0),
        (HalfDayThreshold, 0.5, 1.0),
        (HalfDayThreshold, 0.49, 0.0),
        (HalfDayThreshold, 0.25, 0.0),
        (FullDayOnly, 1.0, 1.0),
        (FullDayOnly, 0.999_999_999_9, 1.0),
        (FullDayOnly, 0.5, 0.0),
        (FullDayOnly, 0.9, 0.0),
    ];
    for (rule, fraction, want) in table {
        let p = with(|p| p.partial_day = rule);
        for cat in [ExcusedAbsence, UnexcusedAbsence] {
            assert_eq!(
                absent_days(cat, fraction, &p),
                want,
                "{rule:?} {cat} {fraction}"
            );
        }
    }
}

#[test]
fn partial_day_rule_never_counts_outside_zero_to_one() {
    for rule in [
        PartialDayRule::Fractional,
        PartialDayRule::HalfDayThreshold,
        PartialDayRule::FullDayOnly,
    ] {
        assert_eq!(apply_partial_day_rule(f64::NAN, rule), 0.0);
        assert_eq!(apply_partial_day_rule(-1.0, rule), 0.0);
        assert_eq!(apply_partial_day_rule(7.0, rule), 1.0);
    }
}

// --- suspensions, tardy, early departure -------------------------------------------------

#[test]
fn out_of_school_suspension_counts_as_absent_by_default_and_present_when_set() {
    assert_eq!(
        absent_days(OutOfSchoolSuspension, 1.0, &Policy::default()),
        1.0
    );
    assert_eq!(
        absent_days(OutOfSchoolSuspension, 0.5, &Policy::default()),
        0.5
    );
    let p = with(|p| p.out_of_school_suspension_counts_as_absent = false);
    assert_eq!(absent_days(OutOfSchoolSuspension, 1.0, &p), 0.0);
}

#[test]
fn in_school_suspension_counts_as_present_by_default_and_absent_when_set() {
    assert_eq!(
        absent_days(InSchoolSuspension, 1.0, &Policy::default()),
        0.0
    );
    let p = with(|p| p.in_school_suspension_counts_as_absent = true);
    assert_eq!(absent_days(InSchoolSuspension, 1.0, &p), 1.0);
    let p = with(|p| {
        p.in_school_suspension_counts_as_absent = true;
        p.partial_day = PartialDayRule::HalfDayThreshold;
    });
    // Connecticut: ISS of at least half a day counts as absent.
    assert_eq!(absent_days(InSchoolSuspension, 0.5, &p), 1.0);
    assert_eq!(absent_days(InSchoolSuspension, 0.4, &p), 0.0);
}

#[test]
fn suspensions_never_count_toward_truancy() {
    assert_eq!(truancy_days(OutOfSchoolSuspension, 1.0), 0.0);
    assert_eq!(truancy_days(InSchoolSuspension, 1.0), 0.0);
    assert_eq!(truancy_days(ExcusedAbsence, 1.0), 0.0);
    assert_eq!(truancy_days(UnexcusedAbsence, 1.0), 1.0);
    assert_eq!(truancy_days(UnexcusedAbsence, 0.5), 0.5);
}

#[test]
fn tardy_and_early_departure_count_as_present() {
    for p in [
        Policy::default(),
        with(|p| p.partial_day = PartialDayRule::HalfDayThreshold),
    ] {
        for cat in [Tardy, EarlyDeparture, Present] {
            assert_eq!(absent_days(cat, 1.0, &p), 0.0, "{cat}");
            assert_eq!(truancy_days(cat, 1.0), 0.0, "{cat}");
            assert!(counts_as_enrolled(cat));
        }
    }
    assert!(counts_as_tardy(Tardy));
    assert!(
        counts_as_tardy(EarlyDeparture),
        "DESIGN.md: counted separately as days_tardy"
    );
    assert!(!counts_as_tardy(Present));
}

#[test]
fn not_enrolled_day_is_neither_absent_nor_enrolled() {
    assert_eq!(absent_days(NotEnrolled, 1.0, &Policy::default()), 0.0);
    assert!(!counts_as_enrolled(NotEnrolled));
    for &c in Category::ALL.iter().filter(|&&c| c != NotEnrolled) {
        assert!(counts_as_enrolled(c), "{c}");
    }
}

// --- tiers and chronic absence ------------------------------------------------------------

#[test]
fn tiers_follow_the_cut_points_with_each_cut_in_the_higher_tier() {
    let p = Policy::default();
    for (rate, want) in [
        (0.0, Tier::Satisfactory),
        (0.0499, Tier::Satisfactory),
        (0.05, Tier::AtRisk),
        (0.0999, Tier::AtRisk),
        (0.10, Tier::ModerateChronic),
        (3.0 / 30.0, Tier::ModerateChronic),
        (0.1999, Tier::ModerateChronic),
        (0.20, Tier::SevereChronic),
        (1.0, Tier::SevereChronic),
    ] {
        assert_eq!(tier(rate, &p), want, "rate {rate}");
    }
    let p = with(|p| p.tiers.severe_chronic = 0.30);
    assert_eq!(tier(0.25, &p), Tier::ModerateChronic);
    assert_eq!(Tier::AtRisk.as_str(), "at_risk");
}

#[test]
fn chronic_absence_is_at_least_ten_percent_of_enrolled_days() {
    let p = Policy::default();
    // (days absent, days enrolled, chronic)
    for (absent, enrolled, want) in [
        (1.0, 10, true),
        (0.5, 10, false),
        (3.0, 30, true),
        (2.9, 30, false),
        (18.0, 180, true),
        (17.5, 180, false),
        (0.0, 180, false),
    ] {
        assert_eq!(
            is_chronic(absent, enrolled, &p),
            want,
            "{absent}/{enrolled}"
        );
    }
    let p = with(|p| p.chronic_threshold = 0.15);
    assert!(!is_chronic(3.0, 30, &p));
    assert!(is_chronic(4.5, 30, &p));
}

#[test]
fn min_enrolled_days_excludes_short_enrollments_from_chronic_absence() {
    let p = Policy::default();
    assert!(!is_chronic(9.0, 9, &p), "9 days enrolled < 10");
    assert!(is_chronic(1.0, 10, &p));
    assert!(!is_chronic(0.0, 0, &p));
    let ca = with(|p| p.min_enrolled_days = 31);
    assert!(!is_chronic(10.0, 30, &ca));
    assert!(is_chronic(10.0, 31, &ca));
    assert_eq!(absence_rate(1.0, 0), None);
    assert_eq!(absence_rate(1.0, 4), Some(0.25));
}

// --- truancy, publication, missing days ---------------------------------------------------

#[test]
fn truancy_is_three_unexcused_days_in_the_school_year_by_default() {
    let p = Policy::default();
    assert!(!is_truant(2.5, &p));
    assert!(is_truant(3.0, &p));
    assert!(is_truant(0.5 * 6.0, &p));
    assert_eq!(truancy_window_start(d(2022, 3, 15), &p), d(2021, 7, 1));
    assert_eq!(truancy_window_start(d(2021, 9, 1), &p), d(2021, 7, 1));
}

#[test]
fn truancy_window_in_days_ends_on_the_as_of_date() {
    let p = with(|p| p.truancy.window = TruancyWindow::Days(90));
    assert_eq!(truancy_window_start(d(2022, 3, 31), &p), d(2022, 1, 1));
    let one = with(|p| p.truancy.window = TruancyWindow::Days(1));
    assert_eq!(truancy_window_start(d(2022, 3, 31), &one), d(2022, 3, 31));
}

#[test]
fn publication_threshold_suppresses_counts_below_ten() {
    let p = Policy::default();
    assert!(!is_suppressed(0, &p), "a zero is published by default");
    assert!(is_suppressed(1, &p));
    assert!(is_suppressed(9, &p));
    assert!(!is_suppressed(10, &p));
    let zeros = with(|p| p.suppress_zero_counts = true);
    assert!(is_suppressed(0, &zeros));
    assert!(!is_suppressed(10, &zeros));
    let none = with(|p| p.publication_threshold = 0);
    assert!(!is_suppressed(0, &none));
}

#[test]
fn rates_are_whole_basis_points() {
    assert_eq!(rate_in_basis_points(0.1), Some(1000));
    assert_eq!(rate_in_basis_points(0.15), Some(1500));
    assert_eq!(rate_in_basis_points(0.07), Some(700));
    assert_eq!(rate_in_basis_points(0.0001), Some(1));
    assert_eq!(rate_in_basis_points(1.0), Some(10_000));
    assert_eq!(rate_in_basis_points(0.12345), None);
    assert_eq!(rate_in_basis_points(f64::NAN), None);
    let err = with(|p| p.chronic_threshold = 0.12345)
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("policy.chronic_threshold must be a multiple of 0.0001"),
        "{err}"
    );
    let err = with(|p| p.tiers.at_risk = 0.05001)
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("policy.tiers.at_risk must be a multiple of 0.0001"),
        "{err}"
    );
}

#[test]
fn missing_day_is_present_except_in_positive_attendance_districts() {
    let p = with(|p| p.positive_attendance_districts = vec!["d042".into()]);
    assert_eq!(missing_day_rule("d001", &p), MissingDayRule::Present);
    assert_eq!(missing_day_rule("d042", &p), MissingDayRule::Missing);
    let all = with(|p| p.missing_day = MissingDayRule::Missing);
    assert_eq!(missing_day_rule("d001", &all), MissingDayRule::Missing);
}

// --- dates -----------------------------------------------------------------------------

#[test]
fn school_year_is_named_by_the_year_it_ends() {
    let p = Policy::default();
    for (date, want) in [
        (d(2021, 8, 25), 2022),
        (d(2021, 7, 1), 2022),
        (d(2021, 6, 30), 2021),
        (d(2022, 1, 4), 2022),
        (d(2022, 5, 27), 2022),
        (d(2021, 12, 31), 2022),
    ] {
        assert_eq!(school_year_of(date, &p), want, "{date}");
    }
    let aug = with(|p| p.school_year_start_month = 8);
    assert_eq!(school_year_of(d(2021, 7, 15), &aug), 2021);
    assert_eq!(school_year_of(d(2021, 8, 1), &aug), 2022);
    let jan = with(|p| p.school_year_start_month = 1);
    assert_eq!(school_year_of(d(2021, 1, 1), &jan), 2021);
    assert_eq!(school_year_of(d(2021, 12, 31), &jan), 2021);
    assert_eq!(school_year_start(2022, &p), d(2021, 7, 1));
    assert_eq!(school_year_start(2021, &jan), d(2021, 1, 1));
}

#[test]
fn exit_date_is_an_enrolled_day_when_inclusive_and_not_when_exclusive() {
    let entry = d(2021, 8, 23);
    let exit = Some(d(2021, 10, 1));
    let inc = Policy::default();
    let exc = with(|p| p.exit_date = ExitDateRule::Exclusive);
    assert!(is_enrolled_on(d(2021, 10, 1), entry, exit, &inc));
    assert!(!is_enrolled_on(d(2021, 10, 1), entry, exit, &exc));
    assert!(is_enrolled_on(d(2021, 9, 30), entry, exit, &exc));
    assert!(
        is_enrolled_on(entry, entry, exit, &exc),
        "entry day is enrolled"
    );
    assert!(!is_enrolled_on(d(2021, 8, 22), entry, exit, &inc));
    assert!(
        is_enrolled_on(d(2022, 5, 1), entry, None, &exc),
        "no exit = still enrolled"
    );
}

#[test]
fn future_dates_are_beyond_today_plus_the_tolerance() {
    let today = d(2022, 3, 1);
    let p = Policy::default();
    assert!(!is_future(today, today, &p));
    assert!(is_future(d(2022, 3, 2), today, &p));
    let p = with(|p| p.future_date_tolerance_days = 1);
    assert!(!is_future(d(2022, 3, 2), today, &p));
    assert!(is_future(d(2022, 3, 3), today, &p));
}

// --- durations --------------------------------------------------------------------------

#[test]
fn minutes_absent_become_a_fraction_of_the_school_day() {
    for (minutes, day, want) in [
        (180.0, 360.0, 0.5),
        (360.0, 360.0, 1.0),
        (90.0, 360.0, 0.25),
        (0.0, 360.0, 0.0),
        (500.0, 360.0, 1.0),
        (210.0, 420.0, 0.5),
    ] {
        assert_eq!(
            absent_fraction_from_minutes(minutes, day),
            Ok(want),
            "{minutes}/{day}"
        );
    }
}

#[test]
fn invalid_minutes_or_school_day_are_errors_not_guesses() {
    assert!(matches!(
        absent_fraction_from_minutes(-5.0, 360.0),
        Err(DurationError::Negative { .. })
    ));
    assert!(matches!(
        absent_fraction_from_minutes(f64::NAN, 360.0),
        Err(DurationError::NotFinite { .. })
    ));
    for day in [0.0, -360.0, f64::INFINITY] {
        assert!(matches!(
            absent_fraction_from_minutes(10.0, day),
            Err(DurationError::InvalidSchoolDay { .. })
        ));
    }
}

#[test]
fn duration_days_are_the_fraction_clamped_to_one_day() {
    for (days, want) in [(1.0, 1.0), (0.5, 0.5), (0.33, 0.33), (0.0, 0.0), (2.0, 1.0)] {
        assert_eq!(absent_fraction_from_duration_days(days), Ok(want));
    }
    assert!(matches!(
        absent_fraction_from_duration_days(-0.5),
        Err(DurationError::Negative { .. })
    ));
    assert!(matches!(
        absent_fraction_from_duration_days(f64::INFINITY),
        Err(DurationError::NotFinite { .. })
    ));
}

// --- identifiers -------------------------------------------------------------------------

#[test]
fn identifiers_are_always_trimmed_and_borrowed_when_unchanged() {
    let p = Policy::default();
    assert!(matches!(
        normalize_id("604877", &p),
        Ok(Cow::Borrowed("604877"))
    ));
    assert_eq!(normalize_id("  604877\t", &p).unwrap(), "604877");
    assert_eq!(
        normalize_id(" ab12 ", &p).unwrap(),
        "ab12",
        "case kept by default"
    );
}

#[test]
fn uppercase_ids_upper_cases_after_trimming() {
    let p = with(|p| p.uppercase_ids = true);
    assert_eq!(normalize_id(" ab12 ", &p).unwrap(), "AB12");
    assert!(matches!(
        normalize_id("AB12", &p),
        Ok(Cow::Borrowed("AB12"))
    ));
}

#[test]
fn empty_long_or_control_identifiers_are_rejected() {
    let p = with(|p| p.max_id_length = 5);
    assert_eq!(normalize_id("   ", &p), Err(IdError::Empty));
    assert_eq!(normalize_id("", &p), Err(IdError::Empty));
    assert_eq!(
        normalize_id("123456", &p),
        Err(IdError::TooLong { len: 6, max: 5 })
    );
    assert_eq!(normalize_id(" 12345 ", &p).unwrap(), "12345");
    assert_eq!(
        normalize_id("ééééé", &p).unwrap(),
        "ééééé",
        "limit is in characters"
    );
    assert_eq!(normalize_id("a\u{0}b", &p), Err(IdError::ControlCharacter));
}

#[test]
fn a_derived_calendar_is_the_session_weekdays_less_the_holidays() {
    // Grand Bend ISD's fall semester: 2021-08-23..2021-12-17 declares 81 instructional
    // days; Labor Day and the Thanksgiving break account for the 4 other weekdays.
    let cal = DerivedCalendar {
        holidays: vec!["2021-09-06".into(), "2021-11-24..2021-11-26".into()],
        ..DerivedCalendar::default()
    };
    let days = cal.days(d(2021, 8, 23), d(2021, 12, 17));
    assert_eq!(days.len(), 85, "one record per weekday");
    assert_eq!(days.iter().filter(|x| x.is_instructional).count(), 81);
    let holidays: Vec<_> = days.iter().filter(|x| !x.is_instructional).collect();
    assert_eq!(holidays.len(), 4);
    assert!(holidays.iter().all(|x| x.event == DERIVED_HOLIDAY));
    assert_eq!(holidays[0].date, d(2021, 9, 6));
    assert!(days
        .iter()
        .all(|x| x.date.weekday().number_from_monday() <= 5));
    assert_eq!(days.first().unwrap().event, DERIVED_SCHOOL_DAY);
    // Saturday school, for a district that has it.
    let sat = DerivedCalendar {
        weekdays: vec!["Sat".into()],
        holidays: vec![],
    };
    assert_eq!(sat.days(d(2021, 8, 23), d(2021, 9, 5)).len(), 2);
    // An empty or reversed session has no days.
    assert!(cal.days(d(2021, 9, 2), d(2021, 9, 1)).is_empty());
}

#[test]
fn derived_calendar_settings_are_validated_by_name() {
    let p = with(|p| {
        p.derived_calendars.insert(
            "grand-bend".into(),
            DerivedCalendar {
                weekdays: vec!["funday".into()],
                holidays: vec!["2021-13-01".into(), "2021-11-26..2021-11-24".into()],
            },
        );
    });
    let err = p.validate().unwrap_err().to_string();
    assert!(err.contains("grand-bend: weekday \"funday\""), "{err}");
    assert!(err.contains("\"2021-13-01\" is not a date"), "{err}");
    assert!(err.contains("ends before it starts"), "{err}");
    let toml_policy: Policy = toml::from_str(
        r#"
        [derived_calendars.grand-bend]
        holidays = ["2021-09-06"]
        "#,
    )
    .unwrap();
    let cal = &toml_policy.derived_calendars["grand-bend"];
    assert_eq!(cal.weekdays.len(), 5, "Monday to Friday by default");
    assert!(toml_policy.validate().is_ok());
}

// --- grades in aggregates, void exit types (issue 11, points 6 and 7) -----------------

#[test]
fn aggregates_count_kindergarten_through_twelfth_grade_by_default() {
    let p = Policy::default();
    assert_eq!(p.aggregate_grades.len(), 13);
    for g in DEFAULT_AGGREGATE_GRADES {
        assert!(counts_in_aggregates(Some(g), &p), "{g}");
    }
    for g in [
        "Prekindergarten",
        "Preschool",
        "Transitional Kindergarten",
        "Infant/toddler",
        "Grade 13",
        "Adult Education",
        "Ungraded",
        "Postsecondary",
    ] {
        assert!(!counts_in_aggregates(Some(g), &p), "{g}");
    }
    // No grade sent: counted (a feed without grades still publishes).
    assert!(counts_in_aggregates(None, &p));
    let with_pk = with(|p| p.aggregate_grades.push("Prekindergarten".into()));
    assert!(with_pk.validate().is_ok());
    assert!(counts_in_aggregates(Some("Prekindergarten"), &with_pk));
}

#[test]
fn no_show_and_invalid_enrollments_are_void_by_default() {
    let p = Policy::default();
    assert!(voids_enrollment(Some("No show"), &p));
    assert!(voids_enrollment(Some("Invalid enrollment"), &p));
    for t in ["Transferred", "Withdrawn", "Expelled", "Graduated"] {
        assert!(!voids_enrollment(Some(t), &p), "{t}");
    }
    assert!(!voids_enrollment(None, &p));
    let none = with(|p| p.void_exit_types.clear());
    assert!(none.validate().is_ok());
    assert!(!voids_enrollment(Some("No show"), &none));
}

#[test]
fn grade_and_exit_settings_must_be_ed_fi_code_values() {
    let p = with(|p| {
        p.aggregate_grades = vec!["kindergarten".into(), "KG".into()];
        p.void_exit_types = vec!["No-show".into()];
    });
    let err = p.validate().unwrap_err().to_string();
    assert!(err.contains("policy.aggregate_grades"), "{err}");
    assert!(err.contains("did you mean \"Kindergarten\""), "{err}");
    assert!(err.contains("\"KG\" is not one"), "{err}");
    assert!(err.contains("policy.void_exit_types"), "{err}");
    let empty = with(|p| p.aggregate_grades.clear());
    assert!(empty.validate().is_err());
    let toml_p: Policy = toml::from_str(
        "aggregate_grades = [\"Prekindergarten\", \"Kindergarten\"]\nvoid_exit_types = [\"No show\"]\n",
    )
    .unwrap();
    assert!(toml_p.validate().is_ok());
    assert_eq!(toml_p.void_exit_types, ["No show"]);
}
