//! The real Grand Bend ISD sample (Ed-Fi Data Standard 5.2 sample data, 2021-22), as the
//! district's Ed-Fi XML interchange files, end to end: the file-drop connector → Kafka →
//! normalizer → rollup → ClickHouse, with the configuration of
//! `deploy/samples/grand-bend.toml` (derived calendar). Every student's figures in the
//! views are checked against a count made here straight from the XML, and the sample's
//! quirks land where docs/grand-bend.md says: section tardies in dead letters, Sunday
//! tardies in `events_non_instructional`, the Excused + Partial day counted once.
//!
//! The sample has no enrollment file, so the test writes one from the documented
//! assumption: each student with a school attendance event at a school is enrolled there
//! for the whole school year (2021-08-23 to 2022-05-27). `--nocapture` prints the table
//! docs/grand-bend.md shows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate};
use clickhouse::Row;
use rollcall_connector_csv::CsvConnector;
use rollcall_connector_kit::{run, RunOptions};
use rollcall_kafka::{read_topic_to_end, DeadLetterHeaders, Topics};
use rollcall_policy::DerivedCalendar;
use rollcall_testkit::{clickhouse_with_unique_db, config_with_fresh_topics, secrets};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

const DISTRICT: &str = "grand-bend";
const YEAR_START: &str = "2021-08-23";
const YEAR_END: &str = "2022-05-27";
const SESSIONS: [(&str, &str); 2] = [("2021-08-23", "2021-12-17"), ("2022-01-04", "2022-05-27")];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// The derived calendar exactly as the shipped sample configuration has it.
fn sample_calendar() -> DerivedCalendar {
    let text = std::fs::read_to_string(root().join("deploy/samples/grand-bend.toml")).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    v["policy"]["derived_calendars"][DISTRICT]
        .clone()
        .try_into()
        .unwrap()
}

/// The text of the first `<tag>` in `block`.
fn tag<'a>(block: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let i = block.find(&open).unwrap_or_else(|| panic!("no {tag}")) + open.len();
    let j = block[i..].find('<').unwrap();
    &block[i..i + j]
}

/// `(student, school, date, category code value)` of every school attendance event,
/// read with plain string search (not rollcall's reader).
fn events_in_xml(path: &Path) -> Vec<(String, String, NaiveDate, String)> {
    let xml = std::fs::read_to_string(path).unwrap();
    xml.split("<StudentSchoolAttendanceEvent>")
        .skip(1)
        .map(|b| {
            let code = tag(b, "AttendanceEventCategory");
            (
                tag(b, "StudentUniqueId").to_string(),
                tag(b, "SchoolId").to_string(),
                date(tag(b, "EventDate")),
                code.rsplit('#').next().unwrap().to_string(),
            )
        })
        .collect()
}

/// The assumed enrollment: one StudentSchoolAssociation per (student, school) seen.
fn enrollment_interchange(pairs: &BTreeSet<(String, String)>) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InterchangeStudentEnrollment xmlns=\"http://ed-fi.org/5.2.0\">\n",
    );
    for (student, school) in pairs {
        x.push_str(&format!(
            "\t<StudentSchoolAssociation>\n\t\t<StudentReference><StudentIdentity><StudentUniqueId>{student}</StudentUniqueId></StudentIdentity></StudentReference>\n\t\t<SchoolReference><SchoolIdentity><SchoolId>{school}</SchoolId></SchoolIdentity></SchoolReference>\n\t\t<EntryDate>{YEAR_START}</EntryDate>\n\t\t<ExitWithdrawDate>{YEAR_END}</ExitWithdrawDate>\n\t\t<SchoolYear>2021-2022</SchoolYear>\n\t</StudentSchoolAssociation>\n"
        ));
    }
    x.push_str("</InterchangeStudentEnrollment>\n");
    x
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Expected {
    days_enrolled: u32,
    absent_milli: u64,
    excused_milli: u64,
    days_tardy: u32,
    non_instructional: u32,
}

/// The figures of each (school, student), counted from the XML under the documented
/// rules: whole-day absences 1, Partial ½ (excused), a day's absences capped at 1,
/// tardies 0 but counted as tardy days, events off the instructional calendar counted
/// apart.
fn expected(
    events: &[(String, String, NaiveDate, String)],
    cal: &DerivedCalendar,
) -> BTreeMap<(String, String), Expected> {
    let holidays: Vec<(NaiveDate, NaiveDate)> = cal
        .holidays
        .iter()
        .map(|h| match h.split_once("..") {
            Some((a, b)) => (date(a), date(b)),
            None => (date(h), date(h)),
        })
        .collect();
    let instructional = |d: NaiveDate| {
        d.weekday().number_from_monday() <= 5
            && SESSIONS.iter().any(|(a, b)| date(a) <= d && d <= date(b))
            && !holidays.iter().any(|(a, b)| *a <= d && d <= *b)
    };
    let mut days = 0;
    let mut d = date(YEAR_START);
    while d <= date(YEAR_END) {
        days += u32::from(instructional(d));
        d = d.succ_opt().unwrap();
    }
    assert_eq!(days, 81 + 88, "the sessions' declared instructional days");
    // (school, student) → date → (absent milli, excused milli, tardy)
    type Days = BTreeMap<NaiveDate, (u64, u64, bool)>;
    let mut by_day: BTreeMap<(String, String), Days> = BTreeMap::new();
    let mut out: BTreeMap<(String, String), Expected> = BTreeMap::new();
    for (student, school, d, code) in events {
        let key = (school.clone(), student.clone());
        let e = out.entry(key.clone()).or_insert_with(|| Expected {
            days_enrolled: days,
            ..Expected::default()
        });
        if !instructional(*d) {
            e.non_instructional += 1;
            continue;
        }
        let day = by_day.entry(key).or_default().entry(*d).or_default();
        match code.as_str() {
            "Excused Absence" => {
                day.0 += 1000;
                day.1 += 1000
            }
            "Partial" => {
                day.0 += 500;
                day.1 += 500
            }
            "Unexcused Absence" => day.0 += 1000,
            "Tardy" => day.2 = true,
            other => panic!("unexpected category {other}"),
        }
    }
    for (key, dates) in by_day {
        let e = out.get_mut(&key).unwrap();
        for (absent, excused, tardy) in dates.values() {
            e.absent_milli += absent.min(&1000);
            e.excused_milli += excused.min(&1000);
            e.days_tardy += u32::from(*tardy);
        }
    }
    out
}

#[derive(Row, Deserialize, Debug)]
struct StudentView {
    school_id: String,
    student_id: String,
    days_enrolled: u32,
    absent_milli: u64,
    excused_milli: u64,
    days_tardy: u32,
    is_chronically_absent: u8,
    tier: String,
    events_non_instructional: u32,
}

/// A row of `school_chronic_absence` / `district_chronic_absence`.
#[derive(Row, Deserialize, Debug)]
struct Published {
    suppressed: u8,
    counts: Vec<Option<u64>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grand_bend_interchanges_ingest_end_to_end() {
    let sample = root().join("tests/data/grand-bend");
    let derived = sample_calendar();
    let mut cfg = config_with_fresh_topics("grandbend").await;
    cfg.clickhouse = clickhouse_with_unique_db("grandbend");
    cfg.rollup.http_port = 0;
    cfg.normalizer.http_port = 0;
    cfg.rollup.batch_max_wait_ms = 200;
    cfg.policy
        .derived_calendars
        .insert(DISTRICT.into(), derived.clone());
    let server = rollcall_clickhouse::connect_server(&cfg.clickhouse, &secrets());
    rollcall_clickhouse::migrate(
        &server,
        &cfg.clickhouse.database,
        &rollcall_clickhouse::embedded_migrations(),
    )
    .await
    .unwrap();

    // The inbox: the district's five interchange files and the assumed enrollment.
    let events = events_in_xml(&sample.join("StudentSchoolAttendance.xml"));
    assert_eq!(events.len(), 1917);
    let pairs: BTreeSet<(String, String)> = events
        .iter()
        .map(|(st, sc, _, _)| (st.clone(), sc.clone()))
        .collect();
    assert_eq!(pairs.len(), 227);
    let inbox = tempfile::tempdir().unwrap();
    let files = [
        "EducationOrgCalendar.xml",
        "EducationOrganization.xml",
        "Student.xml",
        "StudentSchoolAttendance.xml",
        "StudentSectionAttendance-Tardy.xml",
    ];
    for f in files {
        std::fs::copy(sample.join(f), inbox.path().join(f)).unwrap();
    }
    std::fs::write(
        inbox.path().join("enrollment-assumed.xml"),
        enrollment_interchange(&pairs),
    )
    .unwrap();

    let connector: rollcall_connector_csv::CsvConfig = serde_json::from_value(serde_json::json!({
        "district_id": DISTRICT,
        "inbox": inbox.path(),
        "rows_per_batch": 500,
    }))
    .unwrap();
    let summary = run(
        Box::new(CsvConnector::new(DISTRICT, connector).unwrap()),
        &cfg,
        &secrets(),
        RunOptions {
            http: None,
            stop_when_caught_up: true,
            show_progress: false,
        },
        CancellationToken::new(),
    )
    .await
    .expect("connector run");
    // 1,917 school events + 66 section events + 6 sessions + 2 calendar dates + 227
    // assumed enrollments; students, courses, grading periods... are skipped.
    assert_eq!((summary.records, summary.dead_letters), (2218, 0));
    for f in files.iter().chain(&["enrollment-assumed.xml"]) {
        assert!(
            inbox.path().join("done").join(f).exists(),
            "{f} not in done/"
        );
    }

    // The normalizer and the rollup, as of the last day of school.
    let stop = CancellationToken::new();
    let normalizer = rollcall_normalizer::build_normalizer(&cfg).unwrap();
    let (c, s, st) = (cfg.clone(), secrets(), stop.clone());
    let normalizer = std::thread::spawn(move || {
        let mut w = rollcall_normalizer::Worker::connect(&c, &s, normalizer)?;
        w.run(&rollcall_telemetry::Health::new(), &st)
    });
    let rollup = tokio::spawn(rollcall_rollup::run_with_as_of(
        cfg.clone(),
        secrets(),
        stop.clone(),
        rollcall_rollup::AsOf::Fixed(date(YEAR_END)),
    ));
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if rollcall_pipeline::pipeline_lag(&cfg, &secrets())
            .await
            .unwrap()
            == 0
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the pipeline did not catch up"
        );
    }
    tokio::time::sleep(Duration::from_millis(cfg.rollup.batch_max_wait_ms * 3)).await;
    stop.cancel();
    tokio::task::spawn_blocking(move || normalizer.join())
        .await
        .unwrap()
        .expect("normalizer thread")
        .expect("normalizer");
    rollup.await.unwrap().expect("rollup");

    // Dead letters: exactly the 66 section-level tardies, each saying why.
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let dl = read_topic_to_end(&client, &topics.dead_letters(), true).unwrap();
    assert_eq!(dl.len(), 66);
    for r in &dl {
        let h = DeadLetterHeaders::from_pairs(&r.headers);
        assert_eq!(
            (h.stage.as_str(), h.kind.as_str()),
            ("normalizer", "unsupported_entity_or_format")
        );
        assert!(h.reason.contains("section attendance"), "{}", h.reason);
        assert!(h
            .source_key
            .unwrap()
            .starts_with("studentSectionAttendanceEvents:"));
    }
    // The derived calendar: 3 schools × 189 weekdays in sessions (fall 85, spring 104), 169 of them instructional, all marked derived; plus the 2
    // published dates.
    let cal = read_topic_to_end(&client, &topics.normalized("calendar"), true).unwrap();
    let days: Vec<_> = cal
        .iter()
        .map(|r| rollcall_avro::decode_calendar_day(&r.payload).unwrap())
        .collect();
    let derived_days: Vec<_> = days
        .iter()
        .filter(|d| d.calendar_code == "derived")
        .collect();
    assert_eq!(derived_days.len(), 3 * 189);
    assert_eq!(
        derived_days.iter().filter(|d| d.is_instructional).count(),
        3 * 169
    );
    assert!(derived_days
        .iter()
        .all(|d| d.events[0].starts_with("Derived: ")));
    assert_eq!(days.len() - derived_days.len(), 2);

    // Every student's figures in the views equal the count made from the XML.
    let want = expected(&events, &derived);
    let db = rollcall_clickhouse::connect(&cfg.clickhouse, &secrets());
    let rows: Vec<StudentView> = db
        .query(
            "SELECT school_id, student_id, days_enrolled, toUInt64(round(days_absent * 1000)), \
             toUInt64(round(days_absent_excused * 1000)), days_tardy, is_chronically_absent, \
             toString(tier), events_non_instructional FROM student_attendance",
        )
        .fetch_all()
        .await
        .unwrap();
    let keys: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r.school_id.clone(), r.student_id.clone()))
        .collect();
    assert_eq!(rows.len(), keys.len(), "one row per student and school");
    assert_eq!(keys, want.keys().cloned().collect::<BTreeSet<_>>());
    let threshold = cfg.policy.chronic_threshold;
    for r in &rows {
        let key = (r.school_id.clone(), r.student_id.clone());
        let w = want
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected {key:?}"));
        let got = Expected {
            days_enrolled: r.days_enrolled,
            absent_milli: r.absent_milli,
            excused_milli: r.excused_milli,
            days_tardy: r.days_tardy,
            non_instructional: r.events_non_instructional,
        };
        assert_eq!(&got, w, "{key:?}");
        let chronic = w.absent_milli as f64 / 1000.0 / f64::from(w.days_enrolled) >= threshold;
        assert_eq!(r.is_chronically_absent == 1, chronic, "{key:?}");
    }
    // The quirks: three Sunday tardies, one day with Excused Absence and Partial.
    assert_eq!(
        rows.iter().map(|r| r.events_non_instructional).sum::<u32>(),
        3
    );
    let both: Vec<_> = {
        let mut by: BTreeMap<(&str, NaiveDate), BTreeSet<&str>> = BTreeMap::new();
        for (st, _, d, code) in &events {
            by.entry((st, *d)).or_default().insert(code);
        }
        by.into_iter()
            .filter(|(_, c)| c.contains("Partial") && c.contains("Excused Absence"))
            .collect()
    };
    assert_eq!(both.len(), 1, "the sample's one Excused + Partial day");

    // The table of docs/grand-bend.md.
    let names = BTreeMap::from([
        ("255901001", "Grand Bend High School"),
        ("255901044", "Grand Bend Middle School"),
        ("255901107", "Grand Bend Elementary School"),
    ]);
    println!("| school | students (assumed enrolled) | chronically absent | rate | satisfactory | at risk | moderate | severe |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let schools: BTreeSet<&str> = rows.iter().map(|r| r.school_id.as_str()).collect();
    for school in schools.iter().copied().chain(["all"]) {
        let of: Vec<&StudentView> = rows
            .iter()
            .filter(|r| school == "all" || r.school_id == school)
            .collect();
        let count = |t: &str| of.iter().filter(|r| r.tier == t).count();
        let n = [
            of.len(),
            of.iter().filter(|r| r.is_chronically_absent == 1).count(),
            count("satisfactory"),
            count("at_risk"),
            count("moderate_chronic"),
            count("severe_chronic"),
        ];
        // The published views say the same wherever the policy lets them publish.
        let sql = if school == "all" {
            "SELECT toUInt8(suppressed), [students_enrolled, students_chronically_absent, \
             students_satisfactory, students_at_risk, students_moderate_chronic, \
             students_severe_chronic] FROM district_chronic_absence"
                .to_string()
        } else {
            format!(
                "SELECT toUInt8(suppressed), [students_enrolled, students_chronically_absent, \
                 students_satisfactory, students_at_risk, students_moderate_chronic, \
                 students_severe_chronic] FROM school_chronic_absence WHERE school_id = '{school}'"
            )
        };
        let published: Vec<Published> = db.query(&sql).fetch_all().await.expect(&sql);
        let suppressed = n
            .iter()
            .any(|&v| rollcall_policy::is_suppressed(v as u64, &cfg.policy));
        let want_counts: Vec<Option<u64>> = n
            .iter()
            .map(|&v| (!suppressed).then_some(v as u64))
            .collect();
        assert_eq!(
            published
                .iter()
                .map(|p| (p.suppressed, p.counts.clone()))
                .collect::<Vec<_>>(),
            vec![(u8::from(suppressed), want_counts)],
            "the published row of {school}"
        );
        println!(
            "| {} | {} | {} | {:.1}% | {} | {} | {} | {} |",
            names
                .get(school)
                .map_or("district".to_string(), |n| format!("{n} ({school})")),
            n[0],
            n[1],
            100.0 * n[1] as f64 / n[0] as f64,
            n[2],
            n[3],
            n[4],
            n[5]
        );
    }
}
