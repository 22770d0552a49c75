//! The file-drop connector against the real Kafka: good rows flow, bad rows become dead
//! letters with their line numbers, the same file is never ingested twice, and every
//! preset's export is read.

use std::path::Path;

use rollcall_connector_csv::{CsvConfig, CsvConnector};
use rollcall_connector_kit::{run, RunOptions, RunSummary};
use rollcall_kafka::{read_topic_to_end, DeadLetterHeaders, Topics};
use rollcall_testkit::{config_with_fresh_topics, secrets};
use tokio_util::sync::CancellationToken;

fn csv_config(district: &str, inbox: &Path, preset: &str) -> CsvConfig {
    serde_json::from_value(serde_json::json!({
        "district_id": district,
        "inbox": inbox,
        "preset": preset,
        "rows_per_batch": 1000,
        "settle_secs": 0,
    }))
    .unwrap()
}

async fn ingest(cfg: &rollcall_config::Config, name: &str, c: CsvConfig) -> RunSummary {
    let connector = CsvConnector::new(name, c).unwrap();
    run(
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
    .expect("connector run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_become_dead_letters_with_line_numbers_and_files_are_ingested_once() {
    let cfg = config_with_fresh_topics("csvdrop").await;
    let inbox = tempfile::tempdir().unwrap();
    let mut text = String::from("school_id,student_id,date,code,reason\n");
    let bad_lines = [101u64, 2002, 4503, 7004, 9905];
    for i in 0..10_000u64 {
        let line = i + 2;
        if bad_lines.contains(&line) {
            match line % 3 {
                0 => text.push_str("1,,2024-09-03,A,no student\n"),
                1 => text.push_str(&format!("1,S{i},2024-02-30,A,impossible date\n")),
                _ => text.push_str(&format!("1,S{i}\n")),
            }
        } else {
            text.push_str(&format!("1,S{i},2024-09-{:02},A,\n", 3 + i % 20));
        }
    }
    std::fs::write(inbox.path().join("attendance_2024-09-23.csv"), &text).unwrap();

    let s = ingest(&cfg, "drop1", csv_config("d1", inbox.path(), "generic")).await;
    assert_eq!((s.records, s.dead_letters), (9_995, 5));
    assert!(inbox.path().join("done/attendance_2024-09-23.csv").exists());

    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let raw = read_topic_to_end(&client, &topics.raw("attendance"), true).unwrap();
    assert_eq!(raw.len(), 9_995);
    let env = rollcall_avro::decode_raw(&raw[0].payload).unwrap();
    assert_eq!(env.district_id, "d1");
    let dl = read_topic_to_end(&client, &topics.dead_letters(), true).unwrap();
    let mut lines: Vec<u64> = dl
        .iter()
        .map(|r| {
            let h = DeadLetterHeaders::from_pairs(&r.headers);
            assert_eq!(h.stage, "connector-csv");
            assert!(!h.reason.is_empty());
            let f = h.source_file.unwrap();
            f.rsplit(':').next().unwrap().parse().unwrap()
        })
        .collect();
    lines.sort();
    assert_eq!(lines, bad_lines);

    // The same content again, under another name: not ingested twice.
    std::fs::write(inbox.path().join("attendance_2024-09-24.csv"), &text).unwrap();
    let s = ingest(&cfg, "drop1", csv_config("d1", inbox.path(), "generic")).await;
    assert_eq!((s.records, s.dead_letters), (0, 0));
    assert!(inbox.path().join("done/attendance_2024-09-24.csv").exists());
    assert_eq!(
        read_topic_to_end(&client, &topics.raw("attendance"), true)
            .unwrap()
            .len(),
        9_995
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_export_of_each_preset_is_ingested() {
    let cfg = config_with_fresh_topics("csvpresets").await;
    let files: [(&str, &str, &[u8]); 5] = [
        ("generic", "attendance_g.csv", b"school_id,student_id,date,code\n1,S1,2024-09-03,A\n"),
        ("powerschool", "attendance_ps.csv",
         b"\xEF\xBB\xBFSchoolID,Student_Number,Att_Date,Att_Code,Presence_Status_CD,Total_Minutes,Att_Comment\r\n101,S1,09/03/2024,A,Absent,,\"sick, fever\"\r\n"),
        ("infinite_campus", "attendance_ic.csv",
         b"schoolID,studentNumber,date,status,excuse,absentMinutes,scheduledMinutes,comments\n7,S1,2024-09-03,A,U,,,caf\xe9\n"),
        ("skyward", "attendance_sk.csv",
         b"SchoolID,StudentNumber,AttendanceDate,AttendanceTypeCode,Category,IsTruant,DayValue,Comment\r\n9,S1,9/3/2024,EXH,Excused,N,0.5,\r\n"),
        ("aeries", "attendance_ae.csv", b"SC,SN,DT,AL\n3,1001,09/03/2024,U\n"),
    ];
    for (preset, file, body) in files {
        let inbox = tempfile::tempdir().unwrap();
        std::fs::write(inbox.path().join(file), body).unwrap();
        let s = ingest(
            &cfg,
            &format!("p-{preset}"),
            csv_config(preset, inbox.path(), preset),
        )
        .await;
        assert_eq!((s.records, s.dead_letters), (1, 0), "{preset}");
    }
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let raw = read_topic_to_end(
        &client,
        &Topics::new(&cfg.kafka.topic_prefix).raw("attendance"),
        true,
    )
    .unwrap();
    let mut dates: Vec<String> = raw
        .iter()
        .map(|r| {
            let env = rollcall_avro::decode_raw(&r.payload).unwrap();
            let fields: serde_json::Value = serde_json::from_slice(&env.payload).unwrap();
            fields["date"].as_str().unwrap().to_string()
        })
        .collect();
    dates.dedup();
    assert_eq!(
        dates,
        vec!["2024-09-03"],
        "every preset's date becomes ISO 8601"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed_fi_interchanges_flow_with_bad_elements_dead_lettered_and_bad_files_rejected() {
    let cfg = config_with_fresh_topics("xmldrop").await;
    let inbox = tempfile::tempdir().unwrap();
    let event = |student: &str, date: &str| {
        format!(
            "  <StudentSchoolAttendanceEvent>\n    <AttendanceEvent><EventDate>{date}</EventDate>\n      <AttendanceEventCategory>uri://ed-fi.org/AttendanceEventCategoryDescriptor#Unexcused Absence</AttendanceEventCategory></AttendanceEvent>\n    <StudentReference><StudentIdentity><StudentUniqueId>{student}</StudentUniqueId></StudentIdentity></StudentReference>\n    <SchoolReference><SchoolIdentity><SchoolId>255901001</SchoolId></SchoolIdentity></SchoolReference>\n  </StudentSchoolAttendanceEvent>\n"
        )
    };
    let mut xml = String::from("<?xml version=\"1.0\"?>\n<InterchangeStudentAttendance xmlns=\"http://ed-fi.org/5.2.0\">\n");
    for i in 0..1_000 {
        // One element in the middle lacks its student.
        let student = if i == 500 {
            String::new()
        } else {
            format!("S{i}")
        };
        xml.push_str(&event(&student, "2021-09-01"));
        xml.push_str("  <Student><StudentUniqueId>x</StudentUniqueId></Student>\n");
    }
    xml.push_str("</InterchangeStudentAttendance>\n");
    std::fs::write(inbox.path().join("StudentSchoolAttendance.xml"), &xml).unwrap();
    std::fs::write(
        inbox.path().join("broken.xml"),
        "<InterchangeStudentAttendance><StudentSchoolAttendanceEvent>",
    )
    .unwrap();
    let c: CsvConfig = serde_json::from_value(serde_json::json!({
        "district_id": "d9",
        "inbox": inbox.path(),
        "rows_per_batch": 300,
        "settle_secs": 0,
    }))
    .unwrap();
    let s = ingest(&cfg, "xml1", c.clone()).await;
    // 999 events; one dead letter for the element, one for the broken file.
    assert_eq!((s.records, s.dead_letters), (999, 2));
    assert!(inbox
        .path()
        .join("done/StudentSchoolAttendance.xml")
        .exists());
    assert!(inbox.path().join("rejected/broken.xml").exists());
    let reason =
        std::fs::read_to_string(inbox.path().join("rejected/broken.xml.reason.txt")).unwrap();
    assert!(reason.contains("ends inside an element"), "{reason}");

    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let raw = read_topic_to_end(&client, &topics.raw("attendance"), true).unwrap();
    assert_eq!(raw.len(), 999);
    // Records are keyed by student (spread over partitions): find S0's.
    let s0 = raw
        .iter()
        .find(|r| r.key.as_deref() == Some(&b"d9/S0"[..]))
        .expect("S0's record, keyed district/student");
    let env = rollcall_avro::decode_raw(&s0.payload).unwrap();
    assert_eq!(env.source_system, "edfi");
    assert_eq!(
        env.payload_format,
        rollcall_connector_kit::PayloadFormat::EdfiJson
    );
    let doc: serde_json::Value = serde_json::from_slice(&env.payload).unwrap();
    assert_eq!(doc["studentReference"]["studentUniqueId"], "S0");
    let mut dl: Vec<DeadLetterHeaders> = read_topic_to_end(&client, &topics.dead_letters(), true)
        .unwrap()
        .iter()
        .map(|r| DeadLetterHeaders::from_pairs(&r.headers))
        .collect();
    dl.sort_by(|a, b| a.kind.cmp(&b.kind));
    assert_eq!(dl[0].kind, "csv_file_rejected");
    assert_eq!(dl[1].kind, "xml_element_invalid");
    // Each iteration writes 7 lines (6 for the event, 1 for a skipped Student) after
    // the declaration and the root: the 501st event starts on line 3 + 7 × 500.
    let line = 3 + 7 * 500;
    assert_eq!(
        dl[1].source_file.as_deref(),
        Some(format!("StudentSchoolAttendance.xml:{line}").as_str())
    );
    // Dropped again: not ingested twice.
    std::fs::write(inbox.path().join("StudentSchoolAttendance-again.xml"), &xml).unwrap();
    let s = ingest(&cfg, "xml1", c).await;
    assert_eq!((s.records, s.dead_letters), (0, 0));
}
