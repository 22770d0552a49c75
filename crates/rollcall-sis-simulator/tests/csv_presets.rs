//! CSV presets: encodings, quoting and line endings, read back through the `csv` crate.

use std::collections::{HashMap, HashSet};

use rollcall_sis_simulator::csv_export::{self, CsvExport};
use rollcall_sis_simulator::model::Malformation;
use rollcall_sis_simulator::*;

fn world() -> World {
    generate(&SimConfig::small(21)).unwrap()
}

/// Decodes a file the way a connector would: BOM stripped, Windows-1252 decoded.
fn decode(bytes: &[u8], preset: CsvPreset) -> String {
    let enc = preset.encoding();
    if enc.windows_1252 {
        assert!(
            std::str::from_utf8(bytes).is_err() || bytes.is_ascii(),
            "not UTF-8"
        );
        let (text, _, bad) = encoding_rs::WINDOWS_1252.decode(bytes);
        assert!(!bad);
        text.into_owned()
    } else if enc.bom {
        assert_eq!(&bytes[..3], b"\xEF\xBB\xBF");
        String::from_utf8(bytes[3..].to_vec()).unwrap()
    } else {
        assert_ne!(&bytes[..3], b"\xEF\xBB\xBF");
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}

fn read(bytes: &[u8], preset: CsvPreset) -> (Vec<String>, Vec<HashMap<String, String>>) {
    let text = decode(bytes, preset);
    assert_eq!(
        text.contains("\r\n"),
        preset.encoding().crlf,
        "{preset:?} line endings"
    );
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| {
            let rec = rec.unwrap();
            assert_eq!(rec.len(), header.len());
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect()
        })
        .collect();
    (header, rows)
}

const HEADERS: &[(CsvPreset, [&str; 3])] = &[
    (
        CsvPreset::PowerSchool,
        [
            "ID,SchoolID,StudentID,Student_Number,Att_Date,Att_Mode_Code,Attendance_CodeID,Att_Code,Presence_Status_CD,Code_Description,Total_Minutes,ADA_Value_Code,Att_Comment,YearID",
            "SchoolID,StudentID,Student_Number,LastFirst,First_Name,Last_Name,Grade_Level,EntryDate,ExitDate,EntryCode,ExitCode,Enroll_Status,YearID",
            "SchoolID,Date_Value,InSession,MembershipValue,Type,Note",
        ],
    ),
    (
        CsvPreset::InfiniteCampus,
        [
            "attendanceID,personID,studentNumber,schoolID,calendarID,date,status,excuse,code,description,presentMinutes,absentMinutes,scheduledMinutes,comments",
            "enrollmentID,personID,studentNumber,lastName,firstName,schoolID,calendarID,grade,startDate,endDate,startStatus,endStatus,serviceType",
            "calendarID,schoolID,date,instruction,attendance,dayEventCode,comments",
        ],
    ),
    (
        CsvPreset::Skyward,
        [
            "Entity,SchoolID,SchoolYear,StudentNumber,StudentName,AttendanceDate,AttendanceTypeCode,AttendanceTypeDescription,Category,IsTruant,IncludeInTotals,DayValue,Comment",
            "Entity,SchoolID,StudentNumber,StudentName,GradeLevel,EntryDate,EntryCode,WithdrawalDate,WithdrawalCode",
            "Entity,SchoolID,CalendarDate,DayType,Membership",
        ],
    ),
    (
        CsvPreset::Aeries,
        ["SC,SN,DT,DY,AL,TM,CO", "SC,SN,ID,LN,FN,GR,ED,LD,TG", "SC,DT,DY,HO"],
    ),
    (
        CsvPreset::Generic,
        [
            "school_id,student_id,date,code,category,absent_fraction,minutes_missed,reason",
            "school_id,student_id,last_name,first_name,grade,entry_date,exit_date",
            "school_id,date,instructional,event",
        ],
    ),
];

#[test]
fn every_preset_round_trips_with_its_encoding_and_documented_columns() {
    let world = world();
    let view = world.final_view();
    for &(preset, headers) in HEADERS {
        let CsvExport {
            attendance,
            enrollment,
            calendar,
        } = csv_export::render(&world, "d-ps", preset, world.last_day).unwrap();
        let facts: Vec<_> = view
            .current()
            .filter(|(_, _, r, _)| r.district == 1)
            .collect();
        let count = |f: fn(&Fact) -> bool| facts.iter().filter(|(_, _, _, x)| f(x)).count();
        for (bytes, header, n) in [
            (
                &attendance,
                headers[0],
                count(|f| matches!(f, Fact::Attendance(_))),
            ),
            (
                &enrollment,
                headers[1],
                count(|f| matches!(f, Fact::Enrollment(_))),
            ),
            (
                &calendar,
                headers[2],
                count(|f| matches!(f, Fact::CalendarDate(_))),
            ),
        ] {
            let (h, rows) = read(bytes, preset);
            assert_eq!(h.join(","), header, "{preset:?}");
            // Attendance may list re-sent duplicates twice.
            assert!(
                rows.len() >= n && rows.len() <= n + n / 20 + 2,
                "{preset:?} {} vs {n}",
                rows.len()
            );
        }
        // Names with commas are quoted and come back whole; accents survive the encoding.
        let (_, rows) = read(&enrollment, preset);
        let names: HashSet<String> = rows
            .iter()
            .flat_map(|r| {
                ["LastFirst", "StudentName", "LN", "lastName", "last_name"]
                    .map(|c| r.get(c).cloned())
            })
            .flatten()
            .collect();
        assert!(!names.is_empty());
        if preset == CsvPreset::PowerSchool || preset == CsvPreset::Skyward {
            assert!(names.iter().all(|n| n.contains(", ")), "Last, First");
        }
    }
}

#[test]
fn windows_1252_files_carry_latin1_bytes() {
    // Find a seed whose district has an accented name, then check the byte.
    let world = world();
    let [_, enrollment, _] =
        csv_export::tables(&world, "d-ps", CsvPreset::Skyward, world.last_day).unwrap();
    let accented = enrollment
        .rows
        .iter()
        .flat_map(|r| r.iter())
        .find(|c| c.chars().any(|ch| ('\u{a0}'..='\u{ff}').contains(&ch)))
        .expect("an accented name")
        .clone();
    let bytes = csv_export::render(&world, "d-ps", CsvPreset::Skyward, world.last_day)
        .unwrap()
        .enrollment;
    let (encoded, _, _) = encoding_rs::WINDOWS_1252.encode(&accented);
    assert!(bytes.windows(encoded.len()).any(|w| w == &encoded[..]));
}

#[test]
fn generic_rows_carry_exactly_the_final_facts_and_the_malformed_ones() {
    let world = world();
    let view = world.final_view();
    let mut truth: HashSet<(String, String, String, String)> = HashSet::new();
    let mut malformed = HashMap::new();
    for (_, _, r, f) in view.current() {
        if let (Fact::Attendance(a), 1) = (f, r.district) {
            match r.malformed {
                None => {
                    truth.insert((
                        world.schools[a.school as usize].school_id.to_string(),
                        world.students[a.student as usize].unique_id.clone(),
                        a.date.to_string(),
                        serde_json::to_value(a.category)
                            .unwrap()
                            .as_str()
                            .unwrap()
                            .to_string(),
                    ));
                }
                Some(m) => *malformed.entry(m).or_insert(0) += 1,
            }
        }
    }
    assert!(!malformed.is_empty());
    let bytes = csv_export::render(&world, "d-ps", CsvPreset::Generic, world.last_day)
        .unwrap()
        .attendance;
    let (_, rows) = read(&bytes, CsvPreset::Generic);
    let mut seen = HashSet::new();
    let mut bad = HashMap::new();
    for r in rows {
        if r["code"] == "ZZ" {
            *bad.entry(Malformation::UnknownCode).or_insert(0) += 1;
        } else if r["student_id"].is_empty() {
            *bad.entry(Malformation::MissingStudent).or_insert(0) += 1;
        } else if chrono::NaiveDate::parse_from_str(&r["date"], "%Y-%m-%d").is_err() {
            *bad.entry(Malformation::BadDate).or_insert(0) += 1;
        } else {
            seen.insert((
                r["school_id"].clone(),
                r["student_id"].clone(),
                r["date"].clone(),
                r["category"].clone(),
            ));
        }
    }
    assert_eq!(seen, truth);
    assert_eq!(bad, malformed);
}

#[test]
fn powerschool_exit_dates_are_exclusive_and_others_inclusive() {
    let world = world();
    let di = world.district_index("d-ps").unwrap();
    let exited = world
        .final_view()
        .current()
        .find_map(|(_, _, r, f)| match f {
            Fact::Enrollment(e) if r.district == di && e.exit_date.is_some() => Some(*e),
            _ => None,
        })
        .expect("an exit");
    let number = &world.students[exited.student as usize].unique_id;
    let exit = exited.exit_date.unwrap();
    let bytes = csv_export::render(&world, "d-ps", CsvPreset::PowerSchool, world.last_day)
        .unwrap()
        .enrollment;
    let (_, rows) = read(&bytes, CsvPreset::PowerSchool);
    let row = rows
        .iter()
        .find(|r| &r["Student_Number"] == number && !r["ExitCode"].is_empty())
        .unwrap();
    let next = exit.succ_opt().unwrap().format("%m/%d/%Y").to_string();
    assert_eq!(row["ExitDate"], next);
    let bytes = csv_export::render(&world, "d-ps", CsvPreset::Generic, world.last_day)
        .unwrap()
        .enrollment;
    let (_, rows) = read(&bytes, CsvPreset::Generic);
    let row = rows
        .iter()
        .find(|r| &r["student_id"] == number && !r["exit_date"].is_empty())
        .unwrap();
    assert_eq!(row["exit_date"], exit.to_string());
}

#[test]
fn nightly_drops_grow_day_by_day() {
    let world = world();
    let dir = tempfile::tempdir().unwrap();
    let from = world.districts[1].first_instructional_day;
    let to = from + chrono::Duration::days(3);
    let files = csv_export::write_nightly(&world, "d-ps", None, from, to, dir.path()).unwrap();
    assert_eq!(files.len(), 4);
    let name = files[0]
        .attendance
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        name,
        format!("attendance_d-ps_{}.csv", from.format("%Y%m%d"))
    );
    let sizes: Vec<u64> = files
        .iter()
        .map(|f| std::fs::metadata(&f.attendance).unwrap().len())
        .collect();
    assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    assert!(files
        .iter()
        .all(|f| f.enrollment.exists() && f.calendar.exists()));
    let full = csv_export::write_full_year(&world, "d-ps", None, dir.path()).unwrap();
    assert!(std::fs::metadata(&full.attendance).unwrap().len() > sizes[3]);
}

#[test]
fn expected_metrics_write_json_and_csv() {
    let world = world();
    let e = expected_metrics(&world, world.last_day);
    let dir = tempfile::tempdir().unwrap();
    e.write_json(&dir.path().join("expected.json")).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("expected.json")).unwrap()).unwrap();
    assert_eq!(v["students"].as_array().unwrap().len(), e.students.len());
    let written = e.write_csv(dir.path()).unwrap();
    assert_eq!(written.len(), 4);
    let mut r = csv::Reader::from_path(dir.path().join("schools.csv")).unwrap();
    assert_eq!(r.records().count(), e.schools.len());
    let mut r = csv::Reader::from_path(dir.path().join("state.csv")).unwrap();
    let row = r.records().next().unwrap().unwrap();
    assert_eq!(row[2].parse::<u64>().unwrap(), e.state.chronically_absent);
}
