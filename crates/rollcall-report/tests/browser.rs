//! The report in a real browser, against the real ClickHouse.
//!
//! A fresh database gets the migrations and a small, realistic school year (three
//! districts, five schools, one transfer, a late correction, a purged no-show, a school
//! and a district small enough to be suppressed). Then:
//! - `rollcall report` writes the page; headless Chromium takes a screenshot
//!   (`<target>/report-screenshot.png`, kept) and dumps the rendered DOM;
//! - every `data-value` in that DOM is checked against the views, queried here with our
//!   own SQL, and its visible text against the value; every suppressed figure shows
//!   exactly "suppressed (< 10)"; the CSP is in force and nothing links out;
//! - Chromium's network log shows the page made no request (a control page with one
//!   image proves the check would see one);
//! - `rollcall dashboard` serves the same figures over HTTP with `/healthz`, and the
//!   browser requests nothing but the page itself;
//! - every SQL query of the Grafana dashboard runs on this server.
//!
//! ClickHouse must be running (deploy/local/infra.sh up) and Chromium installed
//! (`apt-get install chromium`, or ROLLCALL_CHROMIUM=<path>); the test fails, never
//! skips, when either is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{Datelike, NaiveDate, Weekday};
use clickhouse::Row;
use rollcall_clickhouse::rows::{
    ch_date, DayStatus, StudentDayRow, StudentMetricsRow, TierValue, STUDENT_DAYS, STUDENT_METRICS,
};
use rollcall_clickhouse::{connect, connect_server, embedded_migrations, migrate};
use rollcall_report::cli::{run_report, serve_dashboard, DashboardArgs, ReportArgs};
use rollcall_report::format::{count, days, percent, SUPPRESSED_TEXT};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

const YEAR: u16 = 2024;

// ---------------------------------------------------------------------------------
// The school year

/// Instructional days: 40 weekdays from Tuesday 2023-09-05 (to 2023-10-30).
fn calendar() -> Vec<NaiveDate> {
    let mut d = NaiveDate::from_ymd_opt(2023, 9, 5).unwrap();
    let mut out = Vec::new();
    while out.len() < 40 {
        if !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) {
            out.push(d);
        }
        d = d.succ_opt().unwrap();
    }
    out
}

/// (district, school, grade (canonical, as the normalizer writes it), students per tier: satisfactory, at risk, moderate, severe).
/// Two schools are below the publication threshold; so is district 0300.
const SCHOOLS: [(&str, &str, &str, [usize; 4]); 7] = [
    ("0100", "0100-01", "Fourth grade", [34, 12, 14, 10]),
    ("0100", "0100-02", "Seventh grade", [20, 10, 10, 12]),
    ("0200", "0200-A&B <East>", "Tenth grade", [18, 11, 15, 16]),
    ("0200", "0200-09", "Tenth grade", [3, 1, 1, 1]),
    ("0300", "0300-01", "Second grade", [4, 2, 1, 1]),
    ("0400", "0400-01", "Fifth grade", [40, 14, 11, 10]),
    ("0400", "0400-02", "Eighth grade", [12, 10, 10, 22]),
];

struct Student {
    district: &'static str,
    id: String,
    /// (school, grade, first day index, last day index) of each enrollment.
    stints: Vec<(&'static str, &'static str, usize, usize)>,
    /// Day indices absent, with the kind and milli-days.
    absences: BTreeMap<usize, (DayStatus, u16)>,
}

/// Students of each school in the four tiers, with a mix of excused, unexcused,
/// half-day and suspension absences; a few enter late; one transfers between schools.
fn students() -> Vec<Student> {
    let mut out = Vec::new();
    for (school_no, (district, school, grade, per_tier)) in SCHOOLS.into_iter().enumerate() {
        // interleave the tiers so that ids do not sort by tier
        let mut tiers: Vec<usize> = Vec::new();
        let mut left = per_tier;
        while left.iter().any(|&n| n > 0) {
            for (tier, n) in left.iter_mut().enumerate() {
                if *n > 0 {
                    *n -= 1;
                    tiers.push(tier);
                }
            }
        }
        for (i, tier) in tiers.into_iter().enumerate() {
            let s = out.len();
            // satisfactory: 0-1 days; at risk: 2-3; moderate: 4-7; severe: 12-20
            let k = match tier {
                0 => i % 2,
                1 => 2 + i % 2,
                2 => 4 + i % 4,
                _ => 12 + i % 9,
            };
            let late = tier == 0 && i % 3 == 0;
            let first = if late { 10 } else { 0 };
            let span = 40 - first;
            let mut absences = BTreeMap::new();
            for m in 0..k {
                let day = first + (s * 7 + m * span / k.max(1)) % span;
                let kind = match (s + m) % 5 {
                    0 | 1 => (DayStatus::ExcusedAbsence, 1000),
                    2 | 3 if tier == 3 && m % 4 == 0 => (DayStatus::UnexcusedAbsence, 500),
                    2 | 3 => (DayStatus::UnexcusedAbsence, 1000),
                    _ => (DayStatus::OutOfSchoolSuspension, 1000),
                };
                absences.insert(day, kind);
            }
            out.push(Student {
                district,
                id: format!("{district}-{school_no}{i:03}"),
                stints: vec![(school, grade, first, 39)],
                absences,
            });
        }
    }
    // a transfer: a satisfactory student of 0100-01 moves to 0100-02 on day 20
    let t = out
        .iter_mut()
        .find(|s| s.stints[0].0 == "0100-01" && s.absences.is_empty() && s.stints[0].2 == 0)
        .unwrap();
    t.stints = vec![
        ("0100-01", "Fourth grade", 0, 19),
        ("0100-02", "04", 20, 39),
    ];
    out
}

fn rows() -> (Vec<StudentDayRow>, Vec<StudentMetricsRow>) {
    let cal = calendar();
    let mut day_rows = Vec::new();
    let mut metrics = Vec::new();
    for st in students() {
        for &(school, grade, first, last) in &st.stints {
            let mut m = StudentMetricsRow {
                school_year: YEAR,
                district_id: st.district.into(),
                school_id: school.into(),
                student_id: st.id.clone(),
                state_student_id: String::new(),
                grade_level: grade.into(),
                subgroups: vec![],
                as_of_date: ch_date(cal[last]),
                days_enrolled: 0,
                absent_milli: 0,
                excused_milli: 0,
                unexcused_milli: 0,
                suspended_milli: 0,
                days_tardy: 0,
                unexcused_window_milli: 0,
                absent_last_30_milli: 0,
                meets_min_enrollment: 0,
                is_chronically_absent: 0,
                tier: TierValue::Satisfactory,
                is_truant: 0,
                events_non_instructional: 0,
                events_outside_enrollment: 0,
                days_missing: 0,
                version: 2,
                deleted: 0,
            };
            for (idx, date) in cal.iter().enumerate().take(last + 1).skip(first) {
                let (status, milli) = st
                    .absences
                    .get(&idx)
                    .copied()
                    .unwrap_or((DayStatus::NoEvent, 0));
                let (e, u, s) = match status {
                    DayStatus::ExcusedAbsence => (milli, 0, 0),
                    DayStatus::UnexcusedAbsence => (0, milli, 0),
                    DayStatus::OutOfSchoolSuspension => (0, 0, milli),
                    _ => (0, 0, 0),
                };
                m.days_enrolled += 1;
                m.absent_milli += milli as u32;
                m.excused_milli += e as u32;
                m.unexcused_milli += u as u32;
                m.suspended_milli += s as u32;
                if idx + 30 > last {
                    m.absent_last_30_milli += milli as u32;
                }
                day_rows.push(StudentDayRow {
                    school_year: YEAR,
                    district_id: st.district.into(),
                    school_id: school.into(),
                    student_id: st.id.clone(),
                    date: ch_date(*date),
                    status,
                    enrolled: 1,
                    absent_milli: milli,
                    excused_milli: e,
                    unexcused_milli: u,
                    suspended_milli: s,
                    tardy: 0,
                    source_version: 1,
                    version: 2,
                    deleted: 0,
                });
            }
            let de = m.days_enrolled;
            let am = m.absent_milli;
            m.unexcused_window_milli = m.unexcused_milli;
            m.is_truant = (m.unexcused_milli >= 3000) as u8;
            m.meets_min_enrollment = (de >= 10) as u8;
            m.is_chronically_absent = (de >= 10 && am >= de * 100) as u8;
            m.tier = if am < de * 50 {
                TierValue::Satisfactory
            } else if am < de * 100 {
                TierValue::AtRisk
            } else if am < de * 200 {
                TierValue::ModerateChronic
            } else {
                TierValue::SevereChronic
            };
            metrics.push(m);
        }
    }
    // A late correction: an excused day first arrived as unexcused (older version).
    let corrected = day_rows
        .iter()
        .find(|r| r.status == DayStatus::ExcusedAbsence && r.absent_milli == 1000)
        .cloned()
        .unwrap();
    day_rows.push(StudentDayRow {
        status: DayStatus::UnexcusedAbsence,
        excused_milli: 0,
        unexcused_milli: 1000,
        version: 1,
        ..corrected
    });
    // A purged no-show: written, then deleted (every view must ignore them).
    let ghost_days: Vec<StudentDayRow> = cal
        .iter()
        .flat_map(|d| {
            let r = StudentDayRow {
                school_year: YEAR,
                district_id: "0100".into(),
                school_id: "0100-01".into(),
                student_id: "0100-GHOST".into(),
                date: ch_date(*d),
                status: DayStatus::UnexcusedAbsence,
                enrolled: 1,
                absent_milli: 1000,
                excused_milli: 0,
                unexcused_milli: 1000,
                suspended_milli: 0,
                tardy: 0,
                source_version: 1,
                version: 1,
                deleted: 0,
            };
            [
                r.clone(),
                StudentDayRow {
                    version: 2,
                    deleted: 1,
                    ..r
                },
            ]
        })
        .collect();
    day_rows.extend(ghost_days);
    let ghost = StudentMetricsRow {
        student_id: "0100-GHOST".into(),
        absent_milli: 40_000,
        unexcused_milli: 40_000,
        days_enrolled: 40,
        tier: TierValue::SevereChronic,
        is_chronically_absent: 1,
        meets_min_enrollment: 1,
        version: 1,
        ..metrics[0].clone()
    };
    metrics.push(ghost.clone());
    metrics.push(StudentMetricsRow {
        version: 2,
        deleted: 1,
        ..ghost
    });
    (day_rows, metrics)
}

// ---------------------------------------------------------------------------------
// What the views say (our own queries, not the crate's)

#[derive(Debug, Row, Deserialize)]
struct AggExpect {
    district_id: String,
    school_id: String,
    students_enrolled: Option<u64>,
    students_chronically_absent: Option<u64>,
    chronic_absence_rate: Option<f64>,
    students_satisfactory: Option<u64>,
    students_at_risk: Option<u64>,
    students_moderate_chronic: Option<u64>,
    students_severe_chronic: Option<u64>,
    suppressed: u8,
}

#[derive(Debug, Row, Deserialize)]
struct TrendExpect {
    district_id: String,
    date: String,
    enrolled: u64,
    chronic: u64,
    rate: f64,
}

#[derive(Debug, Row, Deserialize)]
struct SumsExpect {
    district_id: String,
    students: u64,
    excused: f64,
    unexcused: f64,
    suspended: f64,
}

/// Identity of a figure on the page: (scope, district, school, date, metric).
type Key = (String, String, String, String, String);

fn key(scope: &str, district: &str, school: &str, date: &str, metric: &str) -> Key {
    (
        scope.into(),
        district.into(),
        school.into(),
        date.into(),
        metric.into(),
    )
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expected {
    Count(u64),
    Rate(f64),
    Days(f64),
}

struct Truth {
    /// Figures that must be published, by key.
    values: BTreeMap<Key, Expected>,
    /// (scope, district, school) rows that must be suppressed.
    suppressed: BTreeSet<(String, String, String)>,
    /// (scope, district) absence breakdowns that must be suppressed.
    breakdown_suppressed: BTreeSet<(String, String)>,
    trend_points: usize,
}

const METRICS: [&str; 7] = [
    "students_enrolled",
    "students_chronically_absent",
    "chronic_absence_rate",
    "students_satisfactory",
    "students_at_risk",
    "students_moderate_chronic",
    "students_severe_chronic",
];

async fn truth(db: &clickhouse::Client) -> Truth {
    let mut t = Truth {
        values: BTreeMap::new(),
        suppressed: BTreeSet::new(),
        breakdown_suppressed: BTreeSet::new(),
        trend_points: 0,
    };
    let agg = |view: &str, d: &str, s: &str| {
        format!(
            "SELECT {d} AS district_id, {s} AS school_id, students_enrolled, \
             students_chronically_absent, chronic_absence_rate, students_satisfactory, \
             students_at_risk, students_moderate_chronic, students_severe_chronic, suppressed \
             FROM {view} WHERE school_year = {YEAR}"
        )
    };
    for (scope, sql) in [
        ("state", agg("state_chronic_absence", "''", "''")),
        (
            "district",
            agg("district_chronic_absence", "district_id", "''"),
        ),
        (
            "school",
            agg("school_chronic_absence", "district_id", "school_id"),
        ),
    ] {
        let rows: Vec<AggExpect> = db.query(&sql).fetch_all().await.unwrap();
        assert!(!rows.is_empty(), "{scope} view is empty");
        for r in rows {
            let (d, s) = (r.district_id.as_str(), r.school_id.as_str());
            if r.suppressed == 1 {
                assert!(r.students_enrolled.is_none() && r.chronic_absence_rate.is_none());
                t.suppressed.insert((scope.into(), d.into(), s.into()));
                continue;
            }
            let vals = [
                Expected::Count(r.students_enrolled.unwrap()),
                Expected::Count(r.students_chronically_absent.unwrap()),
                Expected::Rate(r.chronic_absence_rate.unwrap()),
                Expected::Count(r.students_satisfactory.unwrap()),
                Expected::Count(r.students_at_risk.unwrap()),
                Expected::Count(r.students_moderate_chronic.unwrap()),
                Expected::Count(r.students_severe_chronic.unwrap()),
            ];
            for (m, v) in METRICS.iter().zip(vals) {
                t.values.insert(key(scope, d, s, "", m), v);
            }
        }
    }
    // The trend: published schools summed per date (all schools here share one calendar,
    // so no school needs carrying forward from an earlier date).
    for (scope, group) in [("state", "''"), ("district", "district_id")] {
        let sql = format!(
            "SELECT {group} AS district_id, toString(date) AS date, \
             toUInt64(sumIf(ifNull(students_enrolled, 0), suppressed = 0)) AS enrolled, \
             toUInt64(sumIf(ifNull(students_chronically_absent, 0), suppressed = 0)) AS chronic, \
             chronic / enrolled AS rate \
             FROM chronic_absence_trend WHERE school_year = {YEAR} \
             GROUP BY district_id, date HAVING countIf(suppressed = 0) > 0 AND enrolled > 0"
        );
        let rows: Vec<TrendExpect> = db.query(&sql).fetch_all().await.unwrap();
        t.trend_points += rows.len();
        for r in rows {
            t.values.insert(
                key(scope, &r.district_id, "", &r.date, "chronic_absence_rate"),
                Expected::Rate(r.rate),
            );
            t.values.insert(
                key(scope, &r.district_id, "", &r.date, "students_enrolled"),
                Expected::Count(r.enrolled),
            );
            t.values.insert(
                key(
                    scope,
                    &r.district_id,
                    "",
                    &r.date,
                    "students_chronically_absent",
                ),
                Expected::Count(r.chronic),
            );
        }
    }
    // Days absent by kind from student_attendance.
    for (scope, group) in [("state", ""), ("district", "GROUP BY district_id")] {
        let d = if group.is_empty() {
            "''"
        } else {
            "district_id"
        };
        let sql = format!(
            "SELECT {d} AS district_id, uniqExact(district_id, student_id) AS students, \
             sum(days_absent_excused) AS excused, sum(days_absent_unexcused) AS unexcused, \
             sum(days_suspended) AS suspended \
             FROM student_attendance WHERE school_year = {YEAR} {group}"
        );
        let rows: Vec<SumsExpect> = db.query(&sql).fetch_all().await.unwrap();
        for r in rows {
            if r.students < 10 {
                t.breakdown_suppressed.insert((scope.into(), r.district_id));
                continue;
            }
            for (m, v) in [
                ("days_absent_excused", r.excused),
                ("days_absent_unexcused", r.unexcused),
                ("days_suspended", r.suspended),
            ] {
                t.values
                    .insert(key(scope, &r.district_id, "", "", m), Expected::Days(v));
            }
        }
    }
    t
}

// ---------------------------------------------------------------------------------
// A minimal reader for Chromium's serialized DOM

mod dom {
    #[derive(Debug, Clone)]
    pub struct Element {
        pub name: String,
        pub attrs: Vec<(String, String)>,
        /// All text inside the element, entities decoded.
        pub text: String,
    }

    impl Element {
        pub fn attr(&self, name: &str) -> Option<&str> {
            self.attrs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    const VOID: [&str; 8] = ["meta", "link", "br", "img", "input", "hr", "source", "wbr"];

    pub fn decode(s: &str) -> String {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&nbsp;", "\u{a0}")
            .replace("&amp;", "&")
    }

    /// Every element of the document, in document order.
    pub fn parse(html: &str) -> Vec<Element> {
        let mut out: Vec<Element> = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        let mut rest = html;
        while !rest.is_empty() {
            let Some(lt) = rest.find('<') else {
                push_text(&mut out, &open, rest);
                break;
            };
            push_text(&mut out, &open, &rest[..lt]);
            rest = &rest[lt..];
            if rest.starts_with("<!--") {
                let end = rest.find("-->").map(|i| i + 3).unwrap_or(rest.len());
                rest = &rest[end..];
            } else if rest.starts_with("<!") {
                let end = rest.find('>').map(|i| i + 1).unwrap_or(rest.len());
                rest = &rest[end..];
            } else if let Some(after) = rest.strip_prefix("</") {
                let end = after.find('>').unwrap();
                let name = after[..end].trim().to_ascii_lowercase();
                rest = &after[end + 1..];
                while let Some(i) = open.pop() {
                    if out[i].name == name {
                        break;
                    }
                }
            } else {
                let (el, self_closing, consumed) = start_tag(rest);
                rest = &rest[consumed..];
                let name = el.name.clone();
                out.push(el);
                if name == "style" || name == "script" {
                    let close = format!("</{name}>");
                    let end = rest.find(&close).unwrap_or(rest.len());
                    rest = &rest[end..];
                    out.last_mut().unwrap().text.clear();
                    open.push(out.len() - 1);
                } else if !self_closing && !VOID.contains(&name.as_str()) {
                    open.push(out.len() - 1);
                }
            }
        }
        out
    }

    fn push_text(out: &mut [Element], open: &[usize], raw: &str) {
        if raw.is_empty() {
            return;
        }
        let text = decode(raw);
        for &i in open {
            out[i].text.push_str(&text);
        }
    }

    fn start_tag(s: &str) -> (Element, bool, usize) {
        let b = s.as_bytes();
        let mut i = 1;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' && b[i] != b'/' {
            i += 1;
        }
        let name = s[1..i].to_ascii_lowercase();
        let mut attrs = Vec::new();
        let mut self_closing = false;
        loop {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= b.len() {
                break;
            }
            if b[i] == b'>' {
                i += 1;
                break;
            }
            if b[i] == b'/' {
                self_closing = true;
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !b"= \t\n\r>/".contains(&b[i]) {
                i += 1;
            }
            let an = s[start..i].to_ascii_lowercase();
            let mut value = String::new();
            if i < b.len() && b[i] == b'=' {
                i += 1;
                let q = b[i];
                if q == b'"' || q == b'\'' {
                    let end = s[i + 1..].find(q as char).unwrap() + i + 1;
                    value = decode(&s[i + 1..end]);
                    i = end + 1;
                } else {
                    let start = i;
                    while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                        i += 1;
                    }
                    value = decode(&s[start..i]);
                }
            }
            attrs.push((an, value));
        }
        (
            Element {
                name,
                attrs,
                text: String::new(),
            },
            self_closing,
            i,
        )
    }
}

// ---------------------------------------------------------------------------------
// Chromium

fn chromium() -> PathBuf {
    let p = std::env::var_os("ROLLCALL_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        p.exists(),
        "Chromium not found at {} (install it: apt-get install -y chromium, or set \
         ROLLCALL_CHROMIUM)",
        p.display()
    );
    p
}

struct Run {
    stdout: String,
    net_log: Option<serde_json::Value>,
}

/// Run headless Chromium on `url` with `extra` arguments; with a network log when asked.
async fn chromium_run(url: &str, extra: &[String], net_log: bool) -> Run {
    let profile = tempfile::tempdir().unwrap();
    let log_path = profile.path().join("net-log.json");
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!(
        "--user-data-dir={}",
        profile.path().join("profile").display()
    ))
    .args(extra);
    if net_log {
        cmd.arg(format!("--log-net-log={}", log_path.display()));
    }
    cmd.arg(url).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("chromium finished within 2 minutes")
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let net_log = net_log.then(|| {
        let text = std::fs::read_to_string(&log_path).expect("chromium wrote its net log");
        serde_json::from_str(&text).expect("the net log is JSON")
    });
    Run {
        stdout: String::from_utf8(out.stdout).unwrap(),
        net_log,
    }
}

/// URLs the page asked for: requests whose initiator is a document, or that carry the
/// page's site in their isolation key. (Chromium's own background traffic — update
/// checks, the network time — has no initiating origin and no page site, so it does not
/// count against the page; it goes nowhere on a machine without the internet anyway.)
fn page_requests(log: &serde_json::Value, page_site: &str) -> Vec<String> {
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        .as_u64()
        .expect("net log constants name URL_REQUEST_START_JOB");
    let mut out = Vec::new();
    for e in log["events"].as_array().expect("net log events") {
        if e["type"].as_u64() != Some(start_job) {
            continue;
        }
        let p = &e["params"];
        let initiator = p["initiator"].as_str().unwrap_or("not an origin");
        let nik = p["network_isolation_key"].as_str().unwrap_or("");
        if initiator != "not an origin" || nik.starts_with(page_site) {
            out.push(p["url"].as_str().unwrap_or_default().to_string());
        }
    }
    out
}

fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

// ---------------------------------------------------------------------------------
// Checks on a rendered DOM

fn element_key(e: &dom::Element) -> Key {
    key(
        e.attr("data-scope").unwrap_or(""),
        e.attr("data-district").unwrap_or(""),
        e.attr("data-school").unwrap_or(""),
        e.attr("data-date").unwrap_or(""),
        e.attr("data-metric").unwrap_or(""),
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Check every figure of the page against the views; returns the charts seen.
fn check_dom(html: &str, t: &Truth) -> BTreeMap<String, usize> {
    let els = dom::parse(html);
    let mut charts: BTreeMap<String, usize> = BTreeMap::new();
    let mut trend_points = 0;
    let mut seen_values: BTreeSet<Key> = BTreeSet::new();
    for e in &els {
        let chart = e.attr("data-chart").unwrap_or("").to_string();
        if let Some(v) = e.attr("data-value") {
            *charts.entry(chart.clone()).or_default() += 1;
            assert!(
                e.attr("data-suppressed").is_none(),
                "suppressed with a value: {e:?}"
            );
            let k = element_key(e);
            let want = t
                .values
                .get(&k)
                .unwrap_or_else(|| panic!("{chart}: {k:?} is not a published figure of the views"));
            let shown = match *want {
                Expected::Count(n) => {
                    assert_eq!(v.parse::<u64>().unwrap(), n, "{chart} {k:?}");
                    count(n)
                }
                Expected::Rate(r) => {
                    let got: f64 = v.parse().unwrap();
                    assert!(close(got, r), "{chart} {k:?}: page {got}, view {r}");
                    percent(r)
                }
                Expected::Days(d) => {
                    let got: f64 = v.parse().unwrap();
                    assert!(close(got, d), "{chart} {k:?}: page {got}, view {d}");
                    days(d)
                }
            };
            assert!(
                e.text.contains(&shown),
                "{chart} {k:?}: the visible text {:?} lacks {shown}",
                e.text
            );
            if chart == "trend" {
                trend_points += 1;
                // the point also carries its counts
                let (s, d, _, date, _) = &k;
                for (attr, m) in [
                    ("data-students-enrolled", "students_enrolled"),
                    (
                        "data-students-chronically-absent",
                        "students_chronically_absent",
                    ),
                ] {
                    let want = t.values[&key(s, d, "", date, m)];
                    assert_eq!(
                        Expected::Count(e.attr(attr).unwrap().parse().unwrap()),
                        want,
                        "{k:?} {attr}"
                    );
                }
            }
            seen_values.insert(k);
        }
        if e.attr("data-suppressed").is_some() {
            assert_eq!(e.attr("data-suppressed"), Some("1"));
            assert_eq!(
                e.text.trim(),
                SUPPRESSED_TEXT,
                "suppressed cell shows {e:?}"
            );
            *charts.entry(format!("{chart} (suppressed)")).or_default() += 1;
            let scope = e.attr("data-scope").unwrap_or("school");
            let row = (
                scope.to_string(),
                e.attr("data-district").unwrap_or("").to_string(),
                e.attr("data-school").unwrap_or("").to_string(),
            );
            if chart == "absence-breakdown" {
                assert!(
                    t.breakdown_suppressed
                        .contains(&(row.0.clone(), row.1.clone())),
                    "breakdown suppressed on the page only: {row:?}"
                );
            } else {
                assert!(
                    t.suppressed.contains(&row),
                    "suppressed on the page, published by the view: {row:?}"
                );
            }
        }
    }
    // Every trend point of the views is drawn (the chart shows all districts here).
    assert_eq!(trend_points, t.trend_points, "trend points drawn");
    // Every published aggregate figure is on the page; every suppressed row says so.
    for (k, _) in t.values.iter().filter(|(k, _)| k.3.is_empty()) {
        assert!(seen_values.contains(k), "published figure missing: {k:?}");
    }
    for (scope, d, s) in &t.suppressed {
        let says_so = els.iter().any(|e| {
            e.attr("data-suppressed").is_some()
                && e.attr("data-scope").unwrap_or("school") == scope
                && e.attr("data-district").unwrap_or("") == d
                && e.attr("data-school").unwrap_or("") == s
        });
        assert!(
            says_so,
            "suppressed row not shown as suppressed: {scope} {d} {s}"
        );
        // ... and nothing on the page gives a number for it
        assert!(
            !els.iter().any(|e| e.attr("data-value").is_some()
                && e.attr("data-scope") == Some(scope)
                && e.attr("data-district").unwrap_or("") == d
                && e.attr("data-school").unwrap_or("") == s),
            "a number for suppressed {scope} {d} {s}"
        );
    }
    // Self-contained: the CSP is there, nothing links out, nothing runs.
    let csp = els
        .iter()
        .find(|e| e.name == "meta" && e.attr("http-equiv") == Some("Content-Security-Policy"))
        .expect("CSP meta");
    assert_eq!(
        csp.attr("content"),
        Some("default-src 'none'; style-src 'unsafe-inline'; img-src data:")
    );
    for e in &els {
        assert_ne!(e.name, "script");
        assert_ne!(e.name, "iframe");
        for (n, v) in &e.attrs {
            if matches!(
                n.as_str(),
                "src" | "href" | "xlink:href" | "action" | "srcset"
            ) {
                assert!(v.starts_with("data:"), "{} {n}={v}", e.name);
            }
        }
    }
    assert!(!html.contains("url("), "no CSS url()");
    charts
}

// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_in_a_browser_shows_the_views_and_fetches_nothing() {
    let ch = rollcall_testkit::clickhouse_with_unique_db("report");
    let secrets = rollcall_testkit::secrets();
    let server = connect_server(&ch, &secrets);
    migrate(&server, &ch.database, &embedded_migrations())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "migrate {} at {} ({e}); is ClickHouse up? deploy/local/infra.sh up",
                ch.database, ch.url
            )
        });
    let db = connect(&ch, &secrets);
    let (day_rows, metric_rows) = rows();
    let mut ins = db.insert::<StudentDayRow>(STUDENT_DAYS).await.unwrap();
    for r in &day_rows {
        ins.write(r).await.unwrap();
    }
    ins.end().await.unwrap();
    let mut ins = db
        .insert::<StudentMetricsRow>(STUDENT_METRICS)
        .await
        .unwrap();
    for r in &metric_rows {
        ins.write(r).await.unwrap();
    }
    ins.end().await.unwrap();

    let t = truth(&db).await;
    // The data set exercises what it should.
    assert!(t
        .suppressed
        .contains(&("school".into(), "0200".into(), "0200-09".into())));
    assert!(t
        .suppressed
        .contains(&("district".into(), "0300".into(), "".into())));
    assert!(t.values.contains_key(&key(
        "school",
        "0200",
        "0200-A&B <East>",
        "",
        "chronic_absence_rate"
    )));
    assert!(t
        .values
        .contains_key(&key("state", "", "", "", "students_enrolled")));
    assert!(t
        .breakdown_suppressed
        .contains(&("district".into(), "0300".into())));
    assert!(t.trend_points > 40, "trend has {} points", t.trend_points);

    // rollcall report
    let mut cfg = rollcall_testkit::config();
    cfg.clickhouse = ch.clone();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("report.html");
    run_report(
        &cfg,
        &secrets,
        &ReportArgs {
            out: out.clone(),
            school_year: None,
        },
    )
    .await
    .expect("rollcall report");
    let page_url = format!("file://{}", out.display());

    // Screenshot at a laptop's width.
    let shot = target_dir().join("report-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    chromium_run(
        &page_url,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1366,900".into(),
        ],
        false,
    )
    .await;
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 20_000, "screenshot is {} bytes", png.len());
    // keep the page beside it, to open by hand
    std::fs::copy(&out, target_dir().join("report.html")).unwrap();
    println!("screenshot: {}", shot.display());

    // The rendered DOM against the views, and the network log.
    let run = chromium_run(&page_url, &["--dump-dom".into()], true).await;
    let charts = check_dom(&run.stdout, &t);
    for c in [
        "kpi",
        "district-rate",
        "school-rate",
        "tiers",
        "absence-breakdown",
        "trend",
        "trend-legend",
        "trend-table",
        "summary",
        "school-table",
        "summary (suppressed)",
        "school-table (suppressed)",
        "school-suppressed (suppressed)",
        "district-rate (suppressed)",
        "tiers (suppressed)",
        "absence-breakdown (suppressed)",
    ] {
        assert!(charts.contains_key(c), "no {c} on the page: {charts:?}");
    }
    let requested = page_requests(run.net_log.as_ref().unwrap(), "file://");
    assert!(requested.is_empty(), "the page requested {requested:?}");

    // Control: the same check sees a page that does fetch something.
    let control = work.path().join("control.html");
    std::fs::write(
        &control,
        "<!DOCTYPE html><html><body><img src=\"http://127.0.0.1:9/pixel.png\"></body></html>",
    )
    .unwrap();
    let run = chromium_run(
        &format!("file://{}", control.display()),
        &["--dump-dom".into()],
        true,
    )
    .await;
    let requested = page_requests(run.net_log.as_ref().unwrap(), "file://");
    assert_eq!(requested, ["http://127.0.0.1:9/pixel.png"]);

    // rollcall dashboard: the same figures over HTTP, nothing fetched but the page.
    let stop = CancellationToken::new();
    let (addr, task) = serve_dashboard(
        &cfg,
        &secrets,
        &DashboardArgs {
            port: 0,
            host: "127.0.0.1".into(),
            school_year: Some(YEAR),
        },
        stop.clone(),
    )
    .await
    .expect("dashboard");
    let health = http_get(addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok\n"), "{health}");
    let head = http_get(addr, "/").await;
    assert!(head.starts_with("HTTP/1.1 200"));
    let head_lower = head.to_ascii_lowercase();
    assert!(head_lower.contains("content-type: text/html; charset=utf-8"));
    assert!(head_lower.contains("content-security-policy: default-src 'none'"));
    let url = format!("http://{addr}/");
    let run = chromium_run(&url, &["--dump-dom".into()], true).await;
    let charts_http = check_dom(&run.stdout, &t);
    assert_eq!(
        charts_http, charts,
        "the dashboard shows what the report shows"
    );
    let requested = page_requests(run.net_log.as_ref().unwrap(), "http://127.0.0.1");
    assert_eq!(requested, [url], "only the page itself");
    stop.cancel();
    task.await.unwrap().unwrap();

    // The Grafana dashboard's queries run on this server.
    grafana_queries_run(&db, &ch.database).await;
}

/// A raw HTTP/1.1 GET (the response, headers and body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    String::from_utf8(buf).unwrap()
}

async fn grafana_queries_run(db: &clickhouse::Client, database: &str) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/rollcall-dashboard.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut sqls: Vec<String> = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            sqls.push(t["rawSql"].as_str().unwrap().to_string());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            sqls.push(v["query"].as_str().unwrap().to_string());
        }
    }
    assert!(sqls.len() >= 6);
    for sql in sqls {
        let sql = sql
            .replace("${database}", database)
            .replace("${school_year}", &YEAR.to_string());
        db.query(&sql)
            .execute()
            .await
            .unwrap_or_else(|e| panic!("Grafana query fails on this server: {e}\n{sql}"));
    }
}
