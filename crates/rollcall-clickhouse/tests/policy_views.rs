//! The BI views under a policy, against the real ClickHouse: synthetic rows inserted into
//! `student_metrics` and `student_days`, every view queried, and each row compared with
//! the same calculation done with `rollcall_policy` (is_chronic, tier,
//! meets_min_enrollment, is_suppressed). The rows sit on the boundaries of every view
//! setting: exactly at each rate cut point and one milli-day below and above, the
//! minimum enrollment −1 / = / +1, a school whose counts equal the publication threshold
//! and one with one student fewer, counts of 0 under each zero rule, and a student at two
//! schools judged on combined days.

use std::collections::BTreeMap;

use clickhouse::Row;
use rollcall_clickhouse::{connect, connect_server, embedded_migrations, migrate_with_policy};
use rollcall_clickhouse::{Client, OnPolicyChange};
use rollcall_policy::{
    counts_in_aggregates, is_chronic, is_suppressed, meets_min_enrollment, tier, Policy,
    StateIdentity, Tiers,
};
use rollcall_testkit::{clickhouse_with_unique_db, require_services, secrets};
use serde::Deserialize;

/// One student at one school: (district, school, student, grade, days, absent milli).
type Student = (&'static str, String, String, String, u32, u64);

fn students() -> Vec<Student> {
    let mut out = Vec::new();
    // Near every cut point of both policies tested, for several enrolment lengths.
    let mut n = 0;
    for days in [9u32, 10, 11, 19, 20, 21, 30] {
        for bp in [500u64, 700, 1000, 1500, 2000, 2500] {
            let at = u64::from(days) * bp / 10;
            for absent in [at.saturating_sub(1), at, at + 1] {
                n += 1;
                out.push((
                    "d1",
                    format!("edge{}", days % 2),
                    format!("b{n}"),
                    ["Kindergarten", "First grade", ""][n % 3].to_string(),
                    days,
                    absent,
                ));
            }
        }
    }
    // Five students judged and satisfactory: counts [5, 0, 5, 0, 0, 0].
    for i in 0..5 {
        out.push((
            "d2",
            "five".into(),
            format!("f{i}"),
            "First grade".into(),
            30,
            0,
        ));
    }
    // Pre-kindergarten, chronically absent: outside `aggregate_grades` (K-12 by
    // default), so in the student rows and the by-grade view, not in any total.
    for i in 0..3 {
        out.push((
            "d2",
            "five".into(),
            format!("pk{i}"),
            "Prekindergarten".into(),
            30,
            15_000,
        ));
    }
    // Four: one below a threshold of 5.
    for i in 0..4 {
        out.push((
            "d2",
            "four".into(),
            format!("q{i}"),
            "Sixth grade".into(),
            30,
            0,
        ));
    }
    // One student at two schools: 10 days and 1.5 absent at each; 20 days and 3 absent
    // (15%) in the district.
    out.push((
        "d3",
        "split-a".into(),
        "x".into(),
        "Ninth grade".into(),
        10,
        1500,
    ));
    out.push((
        "d3",
        "split-b".into(),
        "x".into(),
        "Ninth grade".into(),
        10,
        1500,
    ));
    // Nobody judged: every count 0.
    out.push(("d4", "tiny".into(), "t".into(), "".into(), 3, 0));
    out
}

/// A student's tier label under `p`, as the rollup computes it.
fn tier_of(days: u32, absent: u64, p: &Policy) -> &'static str {
    if days == 0 {
        return "satisfactory";
    }
    tier(absent as f64 / 1000.0 / f64::from(days), p).as_str()
}

/// The six counts of an aggregate: judged, chronic, then the four tiers.
fn counts<'a>(rows: impl Iterator<Item = (u32, u64)> + 'a, p: &Policy) -> [u64; 6] {
    let mut c = [0u64; 6];
    for (days, absent) in rows {
        if !meets_min_enrollment(days, p) {
            continue;
        }
        c[0] += 1;
        c[1] += u64::from(is_chronic(absent as f64 / 1000.0, days, p));
        let i = match tier_of(days, absent, p) {
            "satisfactory" => 2,
            "at_risk" => 3,
            "moderate_chronic" => 4,
            _ => 5,
        };
        c[i] += 1;
    }
    c
}

/// What a view row shows for these counts under `p` (row-level suppression).
fn shown(key: String, c: &[u64], p: &Policy) -> (String, Vec<Option<u64>>, u8) {
    let suppressed = c.iter().any(|v| is_suppressed(*v, p));
    (
        key,
        c.iter().map(|v| (!suppressed).then_some(*v)).collect(),
        u8::from(suppressed),
    )
}

#[derive(Row, Deserialize, Debug)]
struct StudentRow {
    key: String,
    days_enrolled: u32,
    absent: u64,
    meets_min_enrollment: u8,
    is_chronically_absent: u8,
    tier: String,
}

#[derive(Row, Deserialize, Debug)]
struct AggRow {
    key: String,
    counts: Vec<Option<u64>>,
    suppressed: u8,
    rate: Option<f64>,
}

const SIX: &str = "[toNullable(toUInt64(students_enrolled)), toNullable(toUInt64(students_chronically_absent)), \
     toNullable(toUInt64(students_satisfactory)), toNullable(toUInt64(students_at_risk)), \
     toNullable(toUInt64(students_moderate_chronic)), toNullable(toUInt64(students_severe_chronic))], \
     suppressed, chronic_absence_rate";
const TWO: &str = "[toNullable(toUInt64(students_enrolled)), toNullable(toUInt64(students_chronically_absent))], \
     suppressed, chronic_absence_rate";

async fn agg(db: &Client, sql: &str) -> Vec<(String, Vec<Option<u64>>, u8)> {
    let mut rows: Vec<AggRow> = db.query(sql).fetch_all().await.expect(sql);
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    for r in &rows {
        // A rate only where the counts are published and someone is judged.
        let published = r.suppressed == 0 && r.counts[0].is_some_and(|n| n > 0);
        assert_eq!(r.rate.is_some(), published, "{r:?}");
        if let (Some(rate), Some(Some(n)), Some(Some(c))) =
            (r.rate, r.counts.first(), r.counts.get(1))
        {
            assert_eq!(rate, *c as f64 / *n as f64, "{r:?}");
        }
    }
    rows.into_iter()
        .map(|r| (r.key, r.counts, r.suppressed))
        .collect()
}

async fn insert_metrics(db: &Client, database: &str, rows: &[Student]) {
    let values: Vec<String> = rows
        .iter()
        .map(|(d, s, st, g, days, absent)| {
            format!("(2024, '{d}', '{s}', '{st}', '{g}', '2024-05-31', {days}, {absent}, 1, 0)")
        })
        .collect();
    db.query(&format!(
        "INSERT INTO {database}.student_metrics (school_year, district_id, school_id, student_id, \
         grade_level, as_of_date, days_enrolled, absent_milli, version, deleted) VALUES {}",
        values.join(", ")
    ))
    .execute()
    .await
    .expect("insert student_metrics");
}

/// Trend fixture: school `trend`, students with one row per day for `days` days from
/// 2024-01-01 (day n = 2024-01-n), absent on the last `absent_days` (`milli` each).
fn trend_students() -> Vec<(String, u32, u32, u64)> {
    let mut out = Vec::new();
    for i in 0..5 {
        // 20 days, the last three absent: 3 of 20 = 15% on day 20, 3 of 19 before.
        out.push((format!("c{i}"), 20, 3, 1000));
    }
    // One below: 2.999 of 20 on day 20.
    out.push(("below".to_string(), 20, 3, 999));
    // Pre-kindergarten (its metrics row says so): absent every day, never in the trend.
    out.push((TREND_PK.to_string(), 20, 20, 1000));
    out
}

/// The trend fixture's student outside `aggregate_grades`.
const TREND_PK: &str = "pk";

/// The metrics rows of the trend fixture's students (their grades, for the filter).
fn trend_metrics() -> Vec<Student> {
    trend_students()
        .into_iter()
        .map(|(st, days, absent_days, milli)| {
            let grade = if st == TREND_PK {
                "Prekindergarten"
            } else {
                "Third grade"
            };
            (
                "d9",
                "trend".to_string(),
                st,
                grade.to_string(),
                days,
                u64::from(absent_days) * milli,
            )
        })
        .collect()
}

async fn insert_days(db: &Client, database: &str) {
    let mut values = Vec::new();
    for (student, days, absent_days, milli) in trend_students() {
        for day in 1..=days {
            let absent = if day > days - absent_days { milli } else { 0 };
            values.push(format!(
                "(2024, 'd9', 'trend', '{student}', toDate('2024-01-{day:02}'), 'present', 1, {absent}, 1, 0)"
            ));
        }
    }
    db.query(&format!(
        "INSERT INTO {database}.student_days (school_year, district_id, school_id, student_id, \
         date, status, enrolled, absent_milli, version, deleted) VALUES {}",
        values.join(", ")
    ))
    .execute()
    .await
    .expect("insert student_days");
}

/// The trend under `p`, computed here: per date, students judged on their days through it.
fn expected_trend(p: &Policy) -> Vec<(String, Vec<Option<u64>>, u8)> {
    let students = trend_students();
    let last = students.iter().map(|s| s.1).max().unwrap();
    (1..=last)
        .map(|date| {
            let mut c = [0u64; 2];
            for (st, days, absent_days, milli) in &students {
                if st == TREND_PK {
                    continue;
                }
                let through = date.min(*days);
                let absent: u64 = (1..=through)
                    .filter(|d| *d > days - absent_days)
                    .map(|_| *milli)
                    .sum();
                if meets_min_enrollment(through, p) {
                    c[0] += 1;
                    c[1] += u64::from(is_chronic(absent as f64 / 1000.0, through, p));
                }
            }
            shown(format!("trend 2024-01-{date:02}"), &c, p)
        })
        .collect()
}

async fn check_views_under(p: &Policy) {
    p.validate().expect("a valid policy");
    let ch = clickhouse_with_unique_db("pviews");
    let server = connect_server(&ch, &secrets());
    migrate_with_policy(
        &server,
        &ch.database,
        &embedded_migrations(),
        p,
        OnPolicyChange::Refuse,
    )
    .await
    .expect("migrate");
    let db = connect(&ch, &secrets());
    let students = students();
    insert_metrics(&server, &ch.database, &students).await;
    insert_days(&server, &ch.database).await;
    insert_metrics(&server, &ch.database, &trend_metrics()).await;
    let counted = |g: &str| counts_in_aggregates((!g.is_empty()).then_some(g), p);

    // Students: every flag as rollcall_policy computes it.
    let rows: Vec<StudentRow> = db
        .query(
            "SELECT concat(school_id, '/', student_id), days_enrolled, toUInt64(round(days_absent * 1000)), \
             meets_min_enrollment, is_chronically_absent, toString(tier) FROM student_attendance",
        )
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(rows.len(), students.len() + trend_metrics().len());
    let by_key: BTreeMap<&str, &StudentRow> = rows.iter().map(|r| (r.key.as_str(), r)).collect();
    for (_, s, st, _, days, absent) in &students {
        let r = by_key[format!("{s}/{st}").as_str()];
        let ctx = format!("{r:?} under {p:?}");
        assert_eq!((r.days_enrolled, r.absent), (*days, *absent), "{ctx}");
        assert_eq!(
            r.meets_min_enrollment == 1,
            meets_min_enrollment(*days, p),
            "{ctx}"
        );
        assert_eq!(
            r.is_chronically_absent == 1,
            is_chronic(*absent as f64 / 1000.0, *days, p),
            "{ctx}"
        );
        assert_eq!(r.tier, tier_of(*days, *absent, p), "{ctx}");
    }

    // Schools (a student at each school), by grade, districts and the state (each student
    // judged on their days summed over the district's schools).
    let mut schools: BTreeMap<String, Vec<(u32, u64)>> = BTreeMap::new();
    let mut grades: BTreeMap<String, Vec<(u32, u64)>> = BTreeMap::new();
    let trend_rows = trend_metrics();
    let mut combined: BTreeMap<(&str, &str), (u32, u64)> = BTreeMap::new();
    for (d, s, st, g, days, absent) in students.iter().chain(trend_rows.iter()) {
        grades
            .entry(format!("{s}/{g}"))
            .or_default()
            .push((*days, *absent));
        if !counted(g) {
            continue;
        }
        schools.entry(s.clone()).or_default().push((*days, *absent));
        let e = combined.entry((d, st.as_str())).or_default();
        e.0 += days;
        e.1 += absent;
    }
    let want: Vec<_> = schools
        .iter()
        .map(|(k, v)| shown(k.clone(), &counts(v.iter().copied(), p), p))
        .collect();
    let got = agg(
        &db,
        &format!("SELECT school_id, {SIX} FROM school_chronic_absence"),
    )
    .await;
    assert_eq!(got, want, "schools under {p:?}");
    let want: Vec<_> = grades
        .iter()
        .map(|(k, v)| shown(k.clone(), &counts(v.iter().copied(), p)[..2], p))
        .collect();
    let got = agg(
        &db,
        &format!(
            "SELECT concat(school_id, '/', grade), {TWO} FROM school_chronic_absence_by_grade"
        ),
    )
    .await;
    assert_eq!(got, want, "grades under {p:?}");
    let mut districts: BTreeMap<String, Vec<(u32, u64)>> = BTreeMap::new();
    for ((d, _), v) in &combined {
        districts.entry(d.to_string()).or_default().push(*v);
    }
    let want: Vec<_> = districts
        .iter()
        .map(|(k, v)| shown(k.clone(), &counts(v.iter().copied(), p), p))
        .collect();
    let got = agg(
        &db,
        &format!("SELECT district_id, {SIX} FROM district_chronic_absence"),
    )
    .await;
    assert_eq!(got, want, "districts under {p:?}");
    let want = vec![shown(
        "state".into(),
        &counts(combined.values().copied(), p),
        p,
    )];
    let got = agg(
        &db,
        &format!("SELECT 'state', {SIX} FROM state_chronic_absence"),
    )
    .await;
    assert_eq!(got, want, "state under {p:?}");

    // The trend, every date.
    let got = agg(
        &db,
        &format!("SELECT concat(school_id, ' ', toString(date)), {TWO} FROM chronic_absence_trend"),
    )
    .await;
    assert_eq!(got, expected_trend(p), "trend under {p:?}");

    server
        .query(&format!("DROP DATABASE {}", ch.database))
        .execute()
        .await
        .unwrap();
}

fn another_policy(suppress_zero_counts: bool) -> Policy {
    Policy {
        chronic_threshold: 0.15,
        min_enrolled_days: 20,
        tiers: Tiers {
            at_risk: 0.07,
            moderate_chronic: 0.15,
            severe_chronic: 0.25,
        },
        publication_threshold: 5,
        suppress_zero_counts,
        ..Policy::default()
    }
}

#[tokio::test]
async fn every_view_follows_the_default_policy_on_its_boundaries() {
    require_services();
    check_views_under(&Policy::default()).await;
}

#[tokio::test]
async fn every_view_follows_another_policy_with_zeros_published() {
    require_services();
    let p = another_policy(false);
    // the fixture hits the cases it is meant to
    assert!(!is_suppressed(0, &p) && !is_suppressed(5, &p) && is_suppressed(4, &p));
    check_views_under(&p).await;
}

#[tokio::test]
async fn every_view_follows_another_policy_with_zeros_suppressed() {
    require_services();
    check_views_under(&another_policy(true)).await;
}

#[tokio::test]
async fn a_threshold_between_the_defaults_chronic_and_tier_cut_points() {
    require_services();
    // The chronic threshold is not a tier cut point: chronic and tier counts disagree
    // on purpose, so a view that mixes them up fails.
    check_views_under(&Policy {
        chronic_threshold: 0.12,
        min_enrolled_days: 11,
        publication_threshold: 1,
        ..Policy::default()
    })
    .await;
}

/// The state row under each `state_identity`: a student who moved districts with one
/// state student ID, and a student without one.
async fn state_counts_under(identity: StateIdentity) -> (String, Vec<Option<u64>>, u8) {
    let p = Policy {
        publication_threshold: 1,
        state_identity: identity,
        ..Policy::default()
    };
    p.validate().expect("a valid policy");
    let ch = clickhouse_with_unique_db("pstate");
    let server = connect_server(&ch, &secrets());
    migrate_with_policy(
        &server,
        &ch.database,
        &embedded_migrations(),
        &p,
        OnPolicyChange::Refuse,
    )
    .await
    .expect("migrate");
    // "mover": 20 days and 1 absent in d5 (5%), 10 days and 2 absent in d6 (20%);
    // statewide 30 days and 3 absent = 10%: chronic. "local": no state ID, 10 days, 0.
    server
        .query(&format!(
            "INSERT INTO {}.student_metrics (school_year, district_id, school_id, student_id, \
             state_student_id, grade_level, as_of_date, days_enrolled, absent_milli, version, \
             deleted) VALUES \
             (2024, 'd5', 'a', 'm5', 'ST-1', 'Third grade', '2024-05-31', 20, 1000, 1, 0), \
             (2024, 'd6', 'b', 'm6', 'ST-1', 'Third grade', '2024-05-31', 10, 2000, 1, 0), \
             (2024, 'd6', 'b', 'local', '', 'Third grade', '2024-05-31', 10, 0, 1, 0)",
            ch.database
        ))
        .execute()
        .await
        .expect("insert");
    let db = connect(&ch, &secrets());
    let mut got = agg(
        &db,
        &format!("SELECT 'state', {SIX} FROM state_chronic_absence"),
    )
    .await;
    server
        .query(&format!("DROP DATABASE {}", ch.database))
        .execute()
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    got.remove(0)
}

#[tokio::test]
async fn the_state_counts_a_student_who_moved_districts_once_by_state_student_id() {
    require_services();
    // judged, chronic, satisfactory, at risk, moderate, severe
    let by_state_id = state_counts_under(StateIdentity::StateStudentId).await;
    assert_eq!(
        by_state_id,
        ("state".into(), [2, 1, 1, 0, 1, 0].map(Some).to_vec(), 0),
        "one mover judged on 30 days statewide (10%: moderate chronic), one local"
    );
    let apart = state_counts_under(StateIdentity::DistrictStudent).await;
    assert_eq!(
        apart,
        ("state".into(), [3, 1, 1, 1, 0, 1].map(Some).to_vec(), 0),
        "the mover counted in each district: 5% in d5 (at risk), 20% in d6 (severe, chronic)"
    );
}
