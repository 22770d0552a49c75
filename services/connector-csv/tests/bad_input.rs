//! Bad input never crashes the file-drop connector and never loses a row, through the
//! real Kafka: deeply nested XML, rows and elements over the size caps, runaway quotes,
//! rejected files dropped again, per-file accounting. Without Kafka: drop order and
//! files still being written.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rollcall_connector_csv::{CsvConfig, CsvConnector, FileOutcome};
use rollcall_connector_kit::{run, Checkpoint, RunOptions, RunSummary, SisConnector};
use rollcall_kafka::limits::{MAX_DEAD_LETTER_PAYLOAD_BYTES, MAX_MESSAGE_BYTES};
use rollcall_kafka::{read_topic_to_end, DeadLetterHeaders, Topics};
use rollcall_testkit::{config_with_fresh_topics, secrets};
use tokio_util::sync::CancellationToken;

fn config(inbox: &Path, extra: serde_json::Value) -> CsvConfig {
    let mut v = serde_json::json!({
        "district_id": "d1",
        "inbox": inbox,
        "preset": "generic",
        "rows_per_batch": 100,
        "settle_secs": 0,
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).unwrap()
}

/// Runs the connector until caught up; the summary and the files' outcomes.
async fn ingest(
    cfg: &rollcall_config::Config,
    name: &str,
    c: CsvConfig,
) -> (RunSummary, Vec<FileOutcome>) {
    let connector = CsvConnector::new(name, c).unwrap();
    let outcomes = connector.outcomes();
    let s = run(
        Box::new(connector),
        cfg,
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
    (s, outcomes.all())
}

fn dead_letters(cfg: &rollcall_config::Config) -> Vec<(DeadLetterHeaders, Vec<u8>)> {
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    read_topic_to_end(&client, &topics.dead_letters(), true)
        .unwrap()
        .into_iter()
        .map(|r| (DeadLetterHeaders::from_pairs(&r.headers), r.payload))
        .collect()
}

fn event(student: &str) -> String {
    format!(
        "<StudentSchoolAttendanceEvent><AttendanceEvent><EventDate>2021-09-01</EventDate>\
         <AttendanceEventCategory>uri://ed-fi.org/AttendanceEventCategoryDescriptor#Unexcused Absence</AttendanceEventCategory></AttendanceEvent>\
         <StudentReference><StudentIdentity><StudentUniqueId>{student}</StudentUniqueId></StudentIdentity></StudentReference>\
         <SchoolReference><SchoolIdentity><SchoolId>255901001</SchoolId></SchoolIdentity></SchoolReference>\
         </StudentSchoolAttendanceEvent>\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_and_oversized_elements_are_dead_letters_and_the_file_goes_on() {
    let cfg = config_with_fresh_topics("xmlbad").await;
    let inbox = tempfile::tempdir().unwrap();
    let mut xml = String::from("<InterchangeStudentAttendance>\n");
    xml.push_str(&event("S1"));
    // 200,000 nested elements (1.4 MB) inside an event: a stack overflow before.
    xml.push_str("<StudentSchoolAttendanceEvent>\n");
    xml.push_str(&"<a>".repeat(200_000));
    xml.push_str(&"</a>".repeat(200_000));
    xml.push_str("</StudentSchoolAttendanceEvent>\n");
    xml.push_str(&event("S2"));
    // A 300 KB student id, and a text that `&amp;` makes 5x longer in its dead letter.
    xml.push_str(&event(&"9".repeat(300_000)));
    xml.push_str(&event(&"&amp;".repeat(120_000)));
    xml.push_str(&event("S3"));
    xml.push_str("</InterchangeStudentAttendance>\n");
    std::fs::write(inbox.path().join("StudentSchoolAttendance.xml"), &xml).unwrap();

    let (s, outcomes) = ingest(&cfg, "xmlbad", config(inbox.path(), serde_json::json!({}))).await;
    assert_eq!((s.records, s.dead_letters), (3, 3));
    assert!(inbox
        .path()
        .join("done/StudentSchoolAttendance.xml")
        .exists());
    let o = &outcomes[0];
    assert_eq!(
        (o.outcome.as_str(), o.rows, o.published, o.dead_letters),
        ("ingested", 6, 3, 3)
    );
    let mut dl = dead_letters(&cfg);
    dl.sort_by_key(|(h, _)| h.source_file.clone());
    let at: Vec<String> = dl
        .iter()
        .map(|(h, _)| h.source_file.clone().unwrap())
        .collect();
    assert_eq!(
        at,
        [
            "StudentSchoolAttendance.xml:3",
            "StudentSchoolAttendance.xml:6",
            "StudentSchoolAttendance.xml:7"
        ]
    );
    assert!(
        dl[0].0.reason.contains("deeper than 64"),
        "{}",
        dl[0].0.reason
    );
    for (h, payload) in &dl[1..] {
        assert_eq!(h.kind, "xml_element_invalid");
        assert!(h.reason.contains("larger than"), "{}", h.reason);
        assert!(payload.len() <= MAX_DEAD_LETTER_PAYLOAD_BYTES);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_rows_are_dead_letters_that_fit_and_a_file_without_line_breaks_is_rejected() {
    let cfg = config_with_fresh_topics("csvbig").await;
    let inbox = tempfile::tempdir().unwrap();
    let big = "x".repeat(1_200_000);
    let text = format!(
        "school_id,student_id,date,code,notes\n\
         1,S1,2024-09-03,A,\n\
         1,S2,2024-09-03,A,{big}\n\
         1,S3,2024-09-03,A,{big},extra\n\
         1,S4,2024-09-03,A,\n"
    );
    std::fs::write(inbox.path().join("attendance_2024-09-03.csv"), &text).unwrap();
    // No line break at all: the header line itself is over the cap.
    std::fs::write(
        inbox.path().join("attendance_2024-09-04.csv"),
        format!("school_id,student_id,date,code,{big}"),
    )
    .unwrap();
    let (s, outcomes) = ingest(&cfg, "csvbig", config(inbox.path(), serde_json::json!({}))).await;
    // Rows 2 and 3 (lines 3 and 4) are dead letters; the file without line breaks is
    // rejected (one more dead letter, csv_file_rejected).
    assert_eq!((s.records, s.dead_letters), (2, 3));
    let dl = dead_letters(&cfg);
    let mut rows: Vec<_> = dl
        .iter()
        .filter(|(h, _)| h.kind == "csv_row_invalid")
        .collect();
    rows.sort_by_key(|(h, _)| h.source_file.clone());
    assert_eq!(rows.len(), 2);
    for ((h, payload), line) in rows.iter().zip([3, 4]) {
        assert_eq!(
            h.source_file.as_deref(),
            Some(format!("attendance_2024-09-03.csv:{line}").as_str())
        );
        assert!(h.reason.contains("bytes long"), "{}", h.reason);
        assert!(payload.len() <= MAX_DEAD_LETTER_PAYLOAD_BYTES);
        assert!(payload.len() < MAX_MESSAGE_BYTES);
    }
    assert_eq!(
        outcomes
            .iter()
            .map(|o| (
                o.file.as_str(),
                o.outcome.as_str(),
                o.published,
                o.dead_letters,
                o.lines,
                o.rejected_lines
            ))
            .collect::<Vec<_>>(),
        [
            ("attendance_2024-09-03.csv", "ingested", 2, 2, 5, 0),
            ("attendance_2024-09-04.csv", "rejected", 0, 0, 1, 1),
        ]
    );
    assert!(inbox
        .path()
        .join("rejected/attendance_2024-09-04.csv")
        .exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_quote_is_one_bad_line_and_the_rows_after_it_are_read() {
    let cfg = config_with_fresh_topics("csvquote").await;
    let inbox = tempfile::tempdir().unwrap();
    let mut text = String::from("school_id,student_id,date,code,reason\n");
    for i in 0..198 {
        if i == 4 {
            // Line 6: a quote that never closes.
            text.push_str(&format!("1,S{i},2024-09-03,A,\"sick\n"));
        } else {
            text.push_str(&format!("1,S{i},2024-09-03,A,fine\n"));
        }
    }
    std::fs::write(inbox.path().join("attendance.csv"), &text).unwrap();
    let (s, outcomes) = ingest(
        &cfg,
        "csvquote",
        config(inbox.path(), serde_json::json!({})),
    )
    .await;
    assert_eq!((s.records, s.dead_letters), (197, 1));
    let dl = dead_letters(&cfg);
    assert_eq!(dl[0].0.source_file.as_deref(), Some("attendance.csv:6"));
    assert!(
        dl[0].0.reason.contains("runaway quote"),
        "{}",
        dl[0].0.reason
    );
    assert_eq!(dl[0].1, b"1,S4,2024-09-03,A,\"sick");
    let o = &outcomes[0];
    assert_eq!(
        (o.rows, o.published, o.dead_letters, o.lines),
        (198, 197, 1, 199)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_element_and_row_of_a_file_is_accounted_for() {
    let cfg = config_with_fresh_topics("account").await;
    let inbox = tempfile::tempdir().unwrap();
    // Two elements: one published, one dead letter (no student).
    let xml = format!(
        "<InterchangeStudentAttendance>\n{}{}</InterchangeStudentAttendance>\n",
        event("S1"),
        event("")
    );
    std::fs::write(inbox.path().join("two.xml"), xml).unwrap();
    let (s, outcomes) = ingest(&cfg, "account", config(inbox.path(), serde_json::json!({}))).await;
    assert_eq!((s.records, s.dead_letters), (1, 1));
    let o = &outcomes[0];
    assert_eq!(
        (
            o.outcome.as_str(),
            o.rows,
            o.published,
            o.dead_letters,
            o.skipped
        ),
        ("ingested", 2, 1, 1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_file_dropped_again_is_read_again_and_so_is_one_dropped_after_a_settings_fix() {
    let cfg = config_with_fresh_topics("redrop").await;
    let inbox = tempfile::tempdir().unwrap();
    let p = inbox.path();
    // The student column is called `pupil`: refused until the settings say so.
    let text = "school_id,pupil,date,code\n1,S1,2024-09-03,A\n1,S2,2024-09-03,A\n";
    std::fs::write(p.join("attendance.csv"), text).unwrap();
    let (s, o) = ingest(&cfg, "redrop", config(p, serde_json::json!({}))).await;
    assert_eq!((s.records, s.dead_letters), (0, 1));
    assert_eq!(
        (o[0].outcome.as_str(), o[0].lines, o[0].rejected_lines),
        ("rejected", 3, 3)
    );
    let reason = std::fs::read_to_string(p.join("rejected/attendance.csv.reason.txt")).unwrap();
    assert!(reason.contains("rollcall inbox retry"), "{reason}");
    // Renamed and dropped again, as the reason says: read again (and refused again).
    std::fs::rename(
        p.join("rejected/attendance.csv"),
        p.join("attendance-2.csv"),
    )
    .unwrap();
    let (s, o) = ingest(&cfg, "redrop", config(p, serde_json::json!({}))).await;
    assert_eq!((s.records, s.dead_letters), (0, 1));
    assert_eq!(o[0].outcome, "rejected");
    assert!(p.join("rejected/attendance-2.csv").exists());
    assert!(!p.join("done/attendance-2.csv").exists());
    // After the settings fix, `inbox retry` puts it back and it is ingested.
    rollcall_connector_csv::retry_rejected(&p.join("rejected/attendance-2.csv")).unwrap();
    let fixed = serde_json::json!({"columns": {"attendance": {"student_id": "pupil"}}});
    let (s, o) = ingest(&cfg, "redrop", config(p, fixed.clone())).await;
    assert_eq!((s.records, s.dead_letters), (2, 0));
    assert_eq!((o[0].outcome.as_str(), o[0].published), ("ingested", 2));
    assert!(p.join("done/attendance-2.csv").exists());
    // The same content again with the same settings: a duplicate, unread.
    std::fs::write(p.join("attendance-3.csv"), text).unwrap();
    let (s, o) = ingest(&cfg, "redrop", config(p, fixed)).await;
    assert_eq!(
        (s.records, s.dead_letters, o[0].outcome.as_str()),
        (0, 0, "duplicate")
    );
    // Dropped again after a change of settings (another encoding): read again.
    std::fs::write(p.join("attendance-4.csv"), text).unwrap();
    let refixed = serde_json::json!({"columns": {"attendance": {"student_id": "pupil"}}, "encoding": "utf-8"});
    let (s, o) = ingest(&cfg, "redrop", config(p, refixed)).await;
    assert_eq!((s.records, o[0].outcome.as_str()), (2, "ingested"));
}

/// Drives a connector without Kafka: batches until caught up, the files it read in order.
async fn files_read(c: &mut CsvConnector, cp: &mut Option<Checkpoint>) -> Vec<String> {
    let mut files = Vec::new();
    for _ in 0..100 {
        let b = c.next_batch(cp.as_ref()).await.unwrap();
        if let Some(p) = &b.progress {
            if files.last() != Some(&p.what) {
                files.push(p.what.clone());
            }
        }
        c.committed(&b.checkpoint).await.unwrap();
        *cp = Some(b.checkpoint);
        if b.caught_up {
            return files;
        }
    }
    panic!("not caught up after 100 batches: {files:?}");
}

fn set_mtime(path: &Path, ago: Duration) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - ago).unwrap();
}

#[tokio::test]
async fn files_are_taken_by_declared_date_then_modification_time_never_by_name() {
    let inbox = tempfile::tempdir().unwrap();
    let p = inbox.path();
    let rows = "school_id,student_id,date,code\n1,S1,2024-09-03,A\n";
    for (name, ago) in [
        ("attendance-2024-10-01.csv", 300),
        ("attendance-2024-9-30.csv", 100),
        ("attendance-b.csv", 200),
        ("attendance-a.csv", 100),
    ] {
        // Distinct contents, or the later ones would be duplicates.
        std::fs::write(p.join(name), format!("{rows}1,{name},2024-09-03,A\n")).unwrap();
        set_mtime(&p.join(name), Duration::from_secs(ago));
    }
    let mut c = CsvConnector::new("order", config(p, serde_json::json!({}))).unwrap();
    let order = files_read(&mut c, &mut None).await;
    // Dated names by their date (2024-09-30 first), then undated ones by mtime (they
    // are about today).
    assert_eq!(
        order,
        [
            "attendance-2024-9-30.csv",
            "attendance-2024-10-01.csv",
            "attendance-b.csv",
            "attendance-a.csv"
        ]
    );
}

#[tokio::test]
async fn a_file_still_being_written_is_not_taken_until_it_settles() {
    let inbox = tempfile::tempdir().unwrap();
    let p = inbox.path();
    let path = p.join("attendance.csv");
    std::fs::write(&path, "school_id,student_id,date,code\n1,S1,2024-09-03,A\n").unwrap();
    std::fs::write(p.join("attendance-x.csv.partial"), "school_id\n").unwrap();
    let cfg = config(
        p,
        serde_json::json!({"settle_secs": 60, "poll_interval_secs": 0.05}),
    );
    let mut c = CsvConnector::new("settle", cfg).unwrap();
    let b = c.next_batch(None).await.unwrap();
    assert!(b.records.is_empty() && !b.caught_up, "waits for the file");
    assert!(path.exists());
    // Unchanged for the settle interval (its mtime a minute old): taken.
    set_mtime(&path, Duration::from_secs(61));
    let mut cp = Some(b.checkpoint);
    let b = c.next_batch(cp.as_ref()).await.unwrap();
    assert_eq!(b.records.len(), 1);
    c.committed(&b.checkpoint).await.unwrap();
    cp = Some(b.checkpoint);
    let b = c.next_batch(cp.as_ref()).await.unwrap();
    c.committed(&b.checkpoint).await.unwrap();
    assert!(b.caught_up, "the .partial file is never taken");
    assert!(p.join("done/attendance.csv").exists());
    assert!(p.join("attendance-x.csv.partial").exists());
}
