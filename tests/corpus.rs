//! The bad-input corpus (issue 10, point 9): malformed CSV preset files, Ed-Fi XML
//! interchanges and Ed-Fi API responses, each run through the real pipeline — the
//! file-drop and Ed-Fi connectors against the real Kafka, then the real normalizer — and
//! checked against its expected outcome (tests/corpus/README.md lists every case).
//!
//! Per case: the connector runs in a child process (this test binary again, so a stack
//! overflow, an abort or a hang is seen as that case's failure instead of killing the
//! test), until it is caught up; then a good input is dropped (a good file in the same
//! inbox, or the stand-in Ed-Fi host turning healthy) and the connector is started
//! again: it must ingest it. Then the normalizer (in-process) drains the raw topics, and
//! for every case:
//!
//! `rows in = normalized records + dead letters (connector and normalizer) + rows of a
//! rejected file or response`
//!
//! with each term equal to the case's expectation, no panic, no crash, no raw record
//! without an outcome, and the good input normalized. Each raw record is matched to its
//! outcome exactly: a normalizer dead letter by its source coordinates, normalized
//! events by (district, source version, source key). Big inputs are generated in a temp
//! directory. One line per case and the totals are printed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, Uri};
use axum::response::Response;
use rollcall_connector_kit::{run, RunOptions, SisConnector};
use rollcall_kafka::{read_topic_to_end, AssignedReader, DeadLetterHeaders, Topics};
use rollcall_normalizer::{build_normalizer, Worker};
use rollcall_telemetry::Health;
use rollcall_testkit::{config_with_fresh_topics, secrets};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Set in a child process: the JSON of the [`ChildSpec`] to run.
const CHILD_ENV: &str = "ROLLCALL_CORPUS_CHILD";
const SECRET_ENV: &str = "ROLLCALL_CORPUS_EDFI_SECRET";
/// Child processes at a time (the machine has two cores; children mostly wait on Kafka).
const PARALLEL: usize = 4;
/// Rows of the good input dropped after each case; their student ids start with GOOD.
const GOOD_ROWS: u64 = 3;

// ---------------------------------------------------------------------------------------
// Cases and their expected outcomes

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Csv,
    Xml,
    Api,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Csv => "csv",
            Kind::Xml => "xml",
            Kind::Api => "api",
        }
    }
}

/// How the connector's first run must end.
#[derive(Debug, Clone, PartialEq)]
enum RunExpect {
    /// Caught up without an error (retries allowed).
    Done,
    /// Caught up after at least one retried request.
    Retried,
    /// Stopped with an error containing this text (a loud, clear failure).
    Failed(&'static str),
    /// Logs a retry whose wait is at most this many milliseconds (the run is then
    /// stopped: the wait itself is not sat out).
    RetryWaitAtMost(u64),
}

/// What the good input after the case must become.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Good {
    Normalized,
    /// Every good row is dead-lettered by the normalizer with this kind (a district
    /// without a code map stays without one).
    DeadLettered(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
struct Expect {
    /// Raw records the normalizer turns into events.
    normalized: u64,
    /// Row dead letters of the connector, by kind (`*`: any kind).
    connector_dl: Vec<(&'static str, u64)>,
    /// Dead letters of the normalizer, by kind.
    normalizer_dl: Vec<(&'static str, u64)>,
    /// The file (or response) is refused, with this many of its rows never published.
    rejected: Option<u64>,
    run: RunExpect,
}

fn expect() -> Expect {
    Expect {
        normalized: 0,
        connector_dl: Vec::new(),
        normalizer_dl: Vec::new(),
        rejected: None,
        run: RunExpect::Done,
    }
}

impl Expect {
    fn n(mut self, n: u64) -> Self {
        self.normalized = n;
        self
    }
    fn cdl(mut self, kind: &'static str, n: u64) -> Self {
        self.connector_dl.push((kind, n));
        self
    }
    fn ndl(mut self, kind: &'static str, n: u64) -> Self {
        self.normalizer_dl.push((kind, n));
        self
    }
    fn rej(mut self, rows: u64) -> Self {
        self.rejected = Some(rows);
        self
    }
    fn run(mut self, r: RunExpect) -> Self {
        self.run = r;
        self
    }
    fn total(&self) -> u64 {
        self.normalized
            + self.connector_dl.iter().map(|(_, n)| n).sum::<u64>()
            + self.normalizer_dl.iter().map(|(_, n)| n).sum::<u64>()
            + self.rejected.unwrap_or(0)
    }
}

enum Input {
    /// A file dropped in the inbox: its name and bytes.
    File { name: String, bytes: Vec<u8> },
    /// A scripted Ed-Fi host.
    Api { items: Vec<String>, script: Script },
}

struct Case {
    id: String,
    kind: Kind,
    what: &'static str,
    input: Input,
    /// Rows in: data rows of a CSV file, elements rollcall reads of an interchange,
    /// items the host serves.
    rows: u64,
    expect: Expect,
    /// Another acceptable outcome, where the fix may reasonably choose either.
    alt: Option<Expect>,
    /// Preset (CSV) and extra connector settings.
    preset: &'static str,
    extra: Value,
    good: Good,
    timeout: Duration,
}

fn case(kind: Kind, id: &str, what: &'static str, input: Input, rows: u64, e: Expect) -> Case {
    Case {
        id: format!("{}-{id}", kind.as_str()),
        kind,
        what,
        input,
        rows,
        expect: e,
        alt: None,
        preset: "generic",
        extra: json!({}),
        good: Good::Normalized,
        timeout: Duration::from_secs(30),
    }
}

impl Case {
    fn preset(mut self, p: &'static str) -> Self {
        self.preset = p;
        self
    }
    fn extra(mut self, v: Value) -> Self {
        self.extra = v;
        self
    }
    fn or(mut self, alt: Expect) -> Self {
        self.alt = Some(alt);
        self
    }
    fn timeout(mut self, secs: u64) -> Self {
        self.timeout = Duration::from_secs(secs);
        self
    }
    fn good(mut self, g: Good) -> Self {
        self.good = g;
        self
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn data(rel: &str) -> Vec<u8> {
    let p = corpus_dir().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn file(rel: &str) -> Input {
    let name = Path::new(rel)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    Input::File {
        name,
        bytes: data(rel),
    }
}

fn generated(name: &str, bytes: Vec<u8>) -> Input {
    Input::File {
        name: name.to_string(),
        bytes,
    }
}

fn csv_cases() -> Vec<Case> {
    use Kind::Csv;
    let c = |id, what, rel: &str, rows, e| case(Csv, id, what, file(rel), rows, e);
    let row_dl = "csv_row_invalid";
    let head = "school_id,student_id,date,code";
    let mut v = vec![
        c(
            "ok",
            "control: three good rows",
            "csv/attendance_ok.csv",
            3,
            expect().n(3),
        ),
        c(
            "bom",
            "UTF-8 byte-order mark",
            "csv/attendance_bom.csv",
            2,
            expect().n(2),
        ),
        c(
            "utf16",
            "UTF-16LE with BOM (headers unreadable)",
            "csv/attendance_utf16.csv",
            2,
            expect().rej(2),
        ),
        c(
            "cp1252-auto",
            "Windows-1252 bytes, encoding auto",
            "csv/attendance_cp1252.csv",
            2,
            expect().n(2),
        ),
        c(
            "cp1252-strict",
            "Windows-1252 bytes, encoding utf-8",
            "csv/attendance_cp1252_strict.csv",
            2,
            expect().n(1).cdl(row_dl, 1),
        )
        .extra(json!({"encoding": "utf-8"})),
        c(
            "mixed-encodings",
            "a UTF-8 row and a Windows-1252 row",
            "csv/attendance_mixed_encodings.csv",
            2,
            expect().n(2),
        ),
        c(
            "semicolons",
            "semicolon-delimited, comma configured",
            "csv/attendance_semicolons.csv",
            2,
            expect().rej(2),
        ),
        c(
            "tabs",
            "tab-delimited, comma configured",
            "csv/attendance_tabs.csv",
            2,
            expect().rej(2),
        ),
        c(
            "tab-config",
            "tab-delimited, tab configured",
            "csv/attendance_tab_config.csv",
            2,
            expect().n(2),
        )
        .extra(json!({"delimiter": "\t"})),
        c(
            "missing-column",
            "no date column",
            "csv/attendance_missing_column.csv",
            3,
            expect().rej(3),
        ),
        c(
            "extra-columns",
            "unknown extra columns",
            "csv/attendance_extra_columns.csv",
            2,
            expect().n(2),
        ),
        c(
            "duplicate-columns",
            "student_id twice (the first is read)",
            "csv/attendance_duplicate_columns.csv",
            2,
            expect().n(2),
        ),
        c(
            "short-row",
            "a row with fewer fields",
            "csv/attendance_short_row.csv",
            3,
            expect().n(2).cdl(row_dl, 1),
        ),
        c(
            "long-row",
            "a row with more fields",
            "csv/attendance_long_row.csv",
            3,
            expect().n(2).cdl(row_dl, 1),
        ),
        // Line 3 opens a quote that never closes: lines 3..201 must each be accounted
        // for (a dead letter each, or the rest of the file rejected), not one record.
        c(
            "runaway-quote",
            "a quote opened on line 3 never closes (200 rows)",
            "csv/attendance_runaway_quote.csv",
            200,
            expect().n(199).cdl(row_dl, 1),
        )
        .or(expect().n(1).rej(199)),
        c(
            "oversized-field",
            "a 10 KB mapped field",
            "csv/attendance_oversized_field.csv",
            3,
            expect().n(2).cdl(row_dl, 1),
        ),
        c(
            "empty",
            "an empty file",
            "csv/attendance_empty.csv",
            0,
            expect().rej(0),
        ),
        c(
            "header-only",
            "a header and no rows",
            "csv/attendance_header_only.csv",
            0,
            expect(),
        ),
        c(
            "cr-only",
            "old Mac line endings (CR only)",
            "csv/attendance_cr_only.csv",
            3,
            expect().n(3),
        ),
        c(
            "date-9999",
            "attendance dated 9999-12-31",
            "csv/attendance_date_9999.csv",
            3,
            expect().n(2).ndl("date_out_of_range", 1),
        ),
        c(
            "date-0000",
            "attendance dated 0000-02-29",
            "csv/attendance_date_0000.csv",
            3,
            expect().n(2).ndl("date_out_of_range", 1),
        )
        .or(expect().n(2).cdl(row_dl, 1)),
        c(
            "date-1969",
            "attendance dated 1969-09-03",
            "csv/attendance_date_1969.csv",
            3,
            expect().n(2).ndl("date_out_of_range", 1),
        ),
        c(
            "date-impossible",
            "2024-02-30",
            "csv/attendance_date_impossible.csv",
            3,
            expect().n(2).cdl(row_dl, 1),
        ),
        c(
            "date-garbage",
            "`yesterday` as a date",
            "csv/attendance_date_garbage.csv",
            3,
            expect().n(2).cdl(row_dl, 1),
        ),
        c(
            "unknown-code",
            "a code the generic map lacks",
            "csv/attendance_unknown_code.csv",
            3,
            expect().n(2).ndl("unknown_code", 1),
        ),
        c(
            "blank-keys",
            "empty, blank and missing key fields",
            "csv/attendance_blank_keys.csv",
            4,
            expect().n(1).cdl(row_dl, 3),
        ),
        c(
            "nul-bytes",
            "a NUL byte inside a student id",
            "csv/attendance_nul_bytes.csv",
            3,
            expect().n(2).ndl("invalid_identifier", 1),
        )
        .or(expect().n(2).cdl(row_dl, 1)),
        c(
            "control-chars",
            "an ANSI escape inside a student id",
            "csv/attendance_control_chars.csv",
            2,
            expect().n(1).ndl("invalid_identifier", 1),
        )
        .or(expect().n(1).cdl(row_dl, 1)),
        c(
            "crlf-mix",
            "CRLF and LF lines mixed",
            "csv/attendance_crlf_mix.csv",
            3,
            expect().n(3),
        ),
        c(
            "truncated-last-line",
            "the last line cut mid-date, no newline",
            "csv/attendance_truncated_last_line.csv",
            3,
            expect().n(2).cdl(row_dl, 1),
        ),
        c(
            "quoted-newlines",
            "quoted line breaks, quotes and commas",
            "csv/attendance_quoted_newlines.csv",
            2,
            expect().n(2),
        ),
        c(
            "spaces",
            "headers and values padded, headers in other case",
            "csv/attendance_spaces.csv",
            2,
            expect().n(2),
        ),
        c(
            "bad-fraction",
            "duration 1.5 (counts as one day), -0.5 and `abc`",
            "csv/attendance_bad_fraction.csv",
            3,
            expect()
                .n(1)
                .ndl("fraction_out_of_range", 1)
                .ndl("invalid_duration", 1),
        ),
        c(
            "school-year-mismatch",
            "school_year 2020 for a 2024 date",
            "csv/attendance_school_year_mismatch.csv",
            2,
            expect().n(1).ndl("date_outside_school_year", 1),
        ),
        c(
            "binary-garbage",
            "a line of binary bytes",
            "csv/attendance_binary_garbage.csv",
            1,
            expect().cdl(row_dl, 1),
        ),
        c(
            "unknown-prefix",
            "a file name that names no entity",
            "csv/students_2024.csv",
            2,
            expect().rej(2),
        ),
        c(
            "enrollment-exit-9999",
            "exit date 9999-12-31 (\"still enrolled\")",
            "csv/enrollment_exit_9999.csv",
            2,
            expect().n(2),
        ),
        c(
            "enrollment-exit-before-entry",
            "exit before entry",
            "csv/enrollment_exit_before_entry.csv",
            2,
            expect().n(1).ndl("exit_before_entry", 1),
        ),
        c(
            "calendar-bad-flag",
            "is_instructional `maybe`",
            "csv/calendar_bad_instructional.csv",
            2,
            expect().n(1).ndl("invalid_value", 1),
        ),
        c(
            "powerschool",
            "PowerSchool: no presence status; YearID not a number",
            "csv/attendance_powerschool.csv",
            3,
            expect().n(1).ndl("unknown_code", 1).cdl(row_dl, 1),
        )
        .preset("powerschool"),
        c(
            "powerschool-noshow",
            "PowerSchool no-show (ExitDate = EntryDate)",
            "csv/enrollment_powerschool_noshow.csv",
            2,
            expect().n(1).ndl("exit_before_entry", 1),
        )
        .preset("powerschool"),
        // Grade 0 is kindergarten; -1 is district-defined (no built-in mapping): a dead
        // letter naming it. An unmapped ExitCode is kept, not dead-lettered.
        c(
            "powerschool-grades",
            "PowerSchool grades 0, -1 (district-defined), 12 and an unmapped ExitCode",
            "csv/enrollment_powerschool_grades.csv",
            3,
            expect().n(2).ndl("unknown_grade_level", 1),
        )
        .preset("powerschool"),
        // 9/3/24 must not be read as the year 24: dead-lettered at either stage.
        c(
            "skyward",
            "Skyward: Windows-1252, an empty Category, a two-digit year 9/3/24",
            "csv/attendance_skyward.csv",
            3,
            expect().n(1).cdl(row_dl, 1).ndl("date_out_of_range", 1),
        )
        .preset("skyward")
        .or(expect().n(1).cdl(row_dl, 2)),
        c(
            "infinite-campus",
            "Infinite Campus: unknown status Q",
            "csv/attendance_infinite_campus.csv",
            2,
            expect().n(1).ndl("unknown_code", 1),
        )
        .preset("infinite_campus"),
        c(
            "aeries-no-codemap",
            "Aeries export for a district without a code map",
            "csv/attendance_aeries.csv",
            2,
            expect().ndl("no_code_map", 2),
        )
        .preset("aeries")
        .good(Good::DeadLettered("no_code_map")),
    ];
    // Generated: big inputs.
    let mut huge = format!("{head},notes\n1,S1,2024-09-03,tardy,ok\n1,S2,2024-09-03,tardy,");
    huge.push_str(&"n".repeat(1_200_000));
    huge.push_str("\n1,S3,2024-09-03,tardy,ok\n");
    v.push(case(
        Csv,
        "huge-unmapped-column",
        "a 1.2 MB unmapped column",
        generated("attendance_huge_unmapped.csv", huge.into_bytes()),
        3,
        expect().n(2).cdl(row_dl, 1),
    ));
    let no_newline = "1,S1,2024-09-03,tardy;".repeat(100_000);
    v.push(case(
        Csv,
        "no-newline",
        "2.2 MB without a single line break",
        generated("attendance_no_newline.csv", no_newline.into_bytes()),
        0,
        expect().rej(0),
    ));
    let mut many = format!("{head}\n");
    for i in 0..5_000 {
        if i % 10 == 7 {
            many.push_str(&format!("1,S{i}\n"));
        } else {
            many.push_str(&format!(
                "1,S{i},2024-09-{:02},unexcused_absence\n",
                3 + i % 20
            ));
        }
    }
    v.push(
        case(
            Csv,
            "many-rows",
            "5,000 rows, every tenth short",
            generated("attendance_many.csv", many.into_bytes()),
            5_000,
            expect().n(4_500).cdl(row_dl, 500),
        )
        .extra(json!({"rows_per_batch": 700})),
    );
    let mut deep_quote = format!("{head},notes\n1,S1,2024-09-03,tardy,\"");
    for _ in 0..40_000 {
        deep_quote.push_str("1,S9,2024-09-03,tardy,x\n");
    }
    deep_quote.push_str("\"\n1,S2,2024-09-03,tardy,ok\n");
    v.push(
        case(
            Csv,
            "huge-quoted-field",
            "a row whose quoted notes (1 MB) span 40,000 lines, then a good row",
            generated("attendance_huge_quoted.csv", deep_quote.into_bytes()),
            2,
            expect().n(1).cdl(row_dl, 1),
        )
        .or(expect().rej(2)),
    );
    v
}

fn xml_cases(xxe_url: &str) -> Vec<Case> {
    use Kind::Xml;
    let c = |id, what, rel: &str, rows, e| case(Xml, id, what, file(rel), rows, e);
    let el_dl = "xml_element_invalid";
    let mut v = vec![
        c(
            "ok",
            "control: three events",
            "xml/ok.xml",
            3,
            expect().n(3),
        ),
        c(
            "not-xml",
            "plain text",
            "xml/not_xml.xml",
            0,
            expect().rej(0),
        ),
        c(
            "mismatched-tags",
            "</EvntDate> closes <EventDate> in element 2",
            "xml/mismatched_tags.xml",
            3,
            expect().n(1).rej(2),
        ),
        c(
            "truncated",
            "cut short inside element 3",
            "xml/truncated.xml",
            3,
            expect().n(2).rej(1),
        ),
        c(
            "wrong-root",
            "root <StudentAttendanceExport>",
            "xml/wrong_root.xml",
            3,
            expect().rej(3),
        ),
        c(
            "wrong-namespace",
            "a non-Ed-Fi namespace (elements read by local name)",
            "xml/wrong_namespace.xml",
            3,
            expect().n(3),
        ),
        c(
            "billion-laughs",
            "entity amplification (&lol9;)",
            "xml/billion_laughs.xml",
            2,
            expect().n(1).rej(1),
        )
        .or(expect().n(1).cdl(el_dl, 1)),
        c(
            "doctype-harmless",
            "a DOCTYPE without entities",
            "xml/doctype_harmless.xml",
            2,
            expect().n(2),
        ),
        c(
            "missing-student",
            "an event without StudentUniqueId",
            "xml/missing_student.xml",
            3,
            expect().n(2).cdl(el_dl, 1),
        ),
        c(
            "missing-school",
            "an event without SchoolId",
            "xml/missing_school.xml",
            3,
            expect().n(2).cdl(el_dl, 1),
        ),
        c(
            "unknown-elements",
            "<Student> and <Frobnicator> between events (skipped)",
            "xml/unknown_elements.xml",
            2,
            expect().n(2),
        ),
        c(
            "unknown-children",
            "unknown children inside an event",
            "xml/unknown_children.xml",
            1,
            expect().n(1),
        ),
        c(
            "bad-descriptor",
            "an unknown AttendanceEventCategory",
            "xml/bad_descriptor.xml",
            3,
            expect().n(2).ndl("unknown_code", 1),
        ),
        c(
            "codevalue-descriptor",
            "a Data Standard 2.x <CodeValue> descriptor",
            "xml/codevalue_descriptor.xml",
            2,
            expect().n(1).ndl("missing_field", 1),
        )
        .or(expect().n(1).cdl(el_dl, 1)),
        c(
            "bad-dates",
            "2024-13-45 and 9/3/24",
            "xml/bad_date.xml",
            3,
            expect().n(1).ndl("invalid_date", 2),
        ),
        c(
            "date-9999",
            "9999-12-31",
            "xml/date_9999.xml",
            2,
            expect().n(1).ndl("date_out_of_range", 1),
        ),
        c(
            "date-0000",
            "0000-02-29",
            "xml/date_0000.xml",
            2,
            expect().n(1).ndl("date_out_of_range", 1),
        )
        .or(expect().n(1).ndl("invalid_date", 1)),
        c(
            "date-1969",
            "1969-09-03",
            "xml/date_1969.xml",
            2,
            expect().n(1).ndl("date_out_of_range", 1),
        ),
        c(
            "cdata",
            "a student id in CDATA",
            "xml/cdata.xml",
            2,
            expect().n(2),
        ),
        c(
            "comments-pis",
            "comments and processing instructions everywhere",
            "xml/comments_pis.xml",
            2,
            expect().n(2),
        ),
        c(
            "empty",
            "an empty file",
            "xml/empty.xml",
            0,
            expect().rej(0),
        ),
        c(
            "root-empty-tag",
            "<InterchangeStudentAttendance/>",
            "xml/root_empty_tag.xml",
            0,
            expect().rej(0),
        )
        .or(expect()),
        c(
            "root-no-elements",
            "a root with no elements",
            "xml/root_no_elements.xml",
            0,
            expect(),
        ),
        c(
            "utf16",
            "UTF-16 with BOM and declaration",
            "xml/utf16.xml",
            2,
            expect().n(2),
        )
        .or(expect().rej(2)),
        c(
            "latin1",
            "ISO-8859-1 declared, é in a student id",
            "xml/latin1_declared.xml",
            2,
            expect().n(2),
        )
        .or(expect().rej(2))
        .or(expect().rej(1).n(1)),
        c(
            "nul-byte",
            "a NUL byte in a student id",
            "xml/nul_byte.xml",
            2,
            expect().n(1).rej(1),
        )
        .or(expect().n(1).ndl("invalid_identifier", 1)),
        c(
            "control-chars",
            "&#27; in a student id",
            "xml/control_chars.xml",
            2,
            expect().n(1).ndl("invalid_identifier", 1),
        )
        .or(expect().n(1).rej(1)),
        // Nothing may vanish: a second root's elements are refused loudly, not skipped.
        c(
            "two-roots",
            "two interchanges concatenated",
            "xml/two_roots.xml",
            2,
            expect().n(1).rej(1),
        ),
        c(
            "garbage-after-root",
            "an unclosed element after the root's end",
            "xml/garbage_after_root.xml",
            2,
            expect().n(2).rej(0),
        )
        .or(expect().n(2)),
        c(
            "conflicting-schools",
            "the session's school differs from the school",
            "xml/conflicting_schools.xml",
            2,
            expect().n(1).ndl("conflicting_fields", 1),
        ),
        c(
            "section-attendance",
            "StudentSectionAttendanceEvent (documented: dead-lettered)",
            "xml/section_attendance.xml",
            2,
            expect().n(1).ndl("unsupported_entity_or_format", 1),
        ),
        c(
            "section-without-section",
            "a StudentSectionAttendanceEvent without its SectionReference",
            "xml/section_without_section_ref.xml",
            2,
            expect().n(1).ndl("unsupported_entity_or_format", 1),
        )
        .or(expect().n(1).cdl(el_dl, 1)),
        c(
            "enrollment-exit-9999",
            "ExitWithdrawDate 9999-12-31",
            "xml/enrollment_exit_9999.xml",
            2,
            expect().n(2),
        ),
        c(
            "calendar-unknown-event",
            "an unknown CalendarEvent descriptor (documented: not instructional)",
            "xml/calendar_bad_event.xml",
            2,
            expect().n(2),
        ),
    ];
    let xxe = String::from_utf8(data("xml/xxe_external_entity.xml"))
        .unwrap()
        .replace("{{XXE_URL}}", xxe_url);
    v.push(
        case(
            Xml,
            "xxe",
            "external entities (http and file://): never fetched",
            generated("xxe_external_entity.xml", xxe.into_bytes()),
            3,
            expect().n(1).rej(2),
        )
        .or(expect().n(1).cdl(el_dl, 2)),
    );
    // Generated: big inputs.
    let ev = |s: &str, extra: &str| xml_event(s, "2024-09-03", extra);
    let doc = |body: String| {
        format!("<?xml version=\"1.0\"?>\n<InterchangeStudentAttendance xmlns=\"http://ed-fi.org/5.2.0\">\n{body}</InterchangeStudentAttendance>\n")
    };
    let deep = format!(
        "{}  <StudentSchoolAttendanceEvent>{}{}</StudentSchoolAttendanceEvent>\n{}",
        ev("S1", ""),
        "<a>".repeat(200_000),
        "</a>".repeat(200_000),
        ev("S3", "")
    );
    v.push(
        case(
            Xml,
            "deep-nesting",
            "200,000 nested elements (1.4 MB)",
            generated("deep.xml", doc(deep).into_bytes()),
            3,
            expect().n(2).cdl(el_dl, 1),
        )
        .or(expect().n(1).rej(2)),
    );
    let amp = format!(
        "  <StudentSchoolAttendanceEvent><AttendanceEvent><EventDate>2024-09-03</EventDate><AttendanceEventReason>{}</AttendanceEventReason></AttendanceEvent></StudentSchoolAttendanceEvent>\n{}",
        "&amp;".repeat(200_000),
        ev("S2", "")
    );
    v.push(case(
        Xml,
        "amp-amplified-invalid",
        "an invalid element of 200,000 &amp; (1 MB escaped)",
        generated("amp.xml", doc(amp).into_bytes()),
        2,
        expect().n(1).cdl(el_dl, 1),
    ));
    let huge_text = format!(
        "{}{}",
        ev("S1", &format!("<Notes>{}</Notes>", "t".repeat(2_000_000))),
        ev("S2", "")
    );
    v.push(case(
        Xml,
        "huge-text",
        "2 MB of text in one element",
        generated("huge_text.xml", doc(huge_text).into_bytes()),
        2,
        expect().n(1).cdl(el_dl, 1),
    ));
    let big_id = format!("{}{}", ev(&"9".repeat(300_000), ""), ev("S2", ""));
    v.push(
        case(
            Xml,
            "huge-student-id",
            "a 300 KB StudentUniqueId (raw record over the limit)",
            generated("huge_id.xml", doc(big_id).into_bytes()),
            2,
            expect().n(1).cdl("*", 1),
        )
        .or(expect().n(1).ndl("field_too_large", 1))
        .or(expect().n(1).ndl("payload_too_large", 1)),
    );
    let mut many = String::new();
    for i in 0..3_000 {
        if i % 10 == 3 {
            many.push_str(&xml_event_without_student("2024-09-03"));
        } else {
            many.push_str(&xml_event(
                &format!("S{i}"),
                &format!("2024-09-{:02}", 3 + i % 20),
                "",
            ));
        }
        if i % 7 == 0 {
            many.push_str("  <Student><StudentUniqueId>x</StudentUniqueId></Student>\n");
        }
    }
    v.push(
        case(
            Xml,
            "many-elements",
            "3,000 events, every tenth without a student",
            generated("many.xml", doc(many).into_bytes()),
            3_000,
            expect().n(2_700).cdl(el_dl, 300),
        )
        .extra(json!({"rows_per_batch": 700})),
    );
    v
}

fn xml_event(student: &str, date: &str, extra: &str) -> String {
    format!(
        "  <StudentSchoolAttendanceEvent><AttendanceEvent><EventDate>{date}</EventDate><AttendanceEventCategory>uri://ed-fi.org/AttendanceEventCategoryDescriptor#Unexcused Absence</AttendanceEventCategory><EventDuration>1</EventDuration></AttendanceEvent><StudentReference><StudentIdentity><StudentUniqueId>{student}</StudentUniqueId></StudentIdentity></StudentReference><SchoolReference><SchoolIdentity><SchoolId>255901001</SchoolId></SchoolIdentity></SchoolReference><SessionReference><SessionIdentity><SessionName>2024-2025 Fall Semester</SessionName><SchoolYear>2024-2025</SchoolYear><SchoolReference><SchoolIdentity><SchoolId>255901001</SchoolId></SchoolIdentity></SchoolReference></SessionIdentity></SessionReference>{extra}</StudentSchoolAttendanceEvent>\n"
    )
}

fn xml_event_without_student(date: &str) -> String {
    xml_event("", date, "")
}

// ---------------------------------------------------------------------------------------
// The stand-in Ed-Fi host

#[derive(Debug, Clone, PartialEq)]
enum Ep {
    Token,
    Versions,
    Partitions,
    /// resource, path suffix (`""`, `/deletes`, `/keyChanges`)
    Page(String, String),
    Other,
}

struct Req {
    ep: Ep,
    query: HashMap<String, String>,
    /// How many requests to this endpoint came before in this phase.
    n: u64,
}

impl Req {
    fn is_attendance_page(&self) -> bool {
        matches!(&self.ep, Ep::Page(r, s) if r == "studentSchoolAttendanceEvents" && s.is_empty())
    }
}

#[derive(Clone)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn resp(status: u16, body: impl Into<Vec<u8>>) -> Resp {
    Resp {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.into(),
    }
}

impl Resp {
    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.retain(|(h, _)| !h.eq_ignore_ascii_case(k));
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// A case's deviation from a healthy host (`None`: answer as a healthy host would).
type Script = Arc<dyn Fn(&Req) -> Option<Resp> + Send + Sync>;

struct ApiCase {
    items: Vec<String>,
    script: Script,
    phase2: bool,
    counts: HashMap<String, u64>,
    good_served: bool,
}

#[derive(Default)]
struct Host {
    cases: Mutex<HashMap<String, ApiCase>>,
    /// Requests for the XML corpus's external entities: must stay 0.
    xxe_hits: AtomicU64,
}

fn token_body() -> Vec<u8> {
    br#"{"access_token":"corpus-token","token_type":"bearer","expires_in":1800}"#.to_vec()
}

fn items_body(items: &[String]) -> Vec<u8> {
    format!("[{}]", items.join(",")).into_bytes()
}

fn good_items() -> Vec<String> {
    (1..=GOOD_ROWS)
        .map(|i| api_event(&format!("GOOD{i}"), "2024-09-10"))
        .collect()
}

fn api_event(student: &str, date: &str) -> String {
    api_item(student, date, "Unexcused Absence", "255901001")
}

fn api_item(student: &str, date: &str, category: &str, school: &str) -> String {
    json!({
        "id": format!("id-{student}-{date}"),
        "schoolReference": {"schoolId": school.parse::<i64>().map(Value::from).unwrap_or(Value::from(school))},
        "sessionReference": {"schoolId": 255901001, "schoolYear": 2025, "sessionName": "2024-2025 Fall Semester"},
        "studentReference": {"studentUniqueId": student},
        "attendanceEventCategoryDescriptor": format!("uri://ed-fi.org/AttendanceEventCategoryDescriptor#{category}"),
        "eventDate": date,
        "eventDuration": 1,
    })
    .to_string()
}

fn healthy(c: &mut ApiCase, req: &Req) -> Resp {
    match &req.ep {
        Ep::Token => resp(200, token_body()),
        Ep::Versions => resp(
            200,
            format!(
                r#"{{"oldestChangeVersion":0,"newestChangeVersion":{}}}"#,
                if c.phase2 { 1000 } else { 10 }
            ),
        ),
        Ep::Partitions => resp(200, r#"{"pageTokens":["p1"]}"#),
        Ep::Page(..) if req.is_attendance_page() => {
            if c.phase2 {
                if c.good_served {
                    return resp(200, "[]");
                }
                c.good_served = true;
                return resp(200, items_body(&good_items()));
            }
            if req.query.contains_key("pageToken") {
                return resp(200, items_body(&c.items));
            }
            let offset: usize = req
                .query
                .get("offset")
                .and_then(|o| o.parse().ok())
                .unwrap_or(0);
            let limit: usize = req
                .query
                .get("limit")
                .and_then(|o| o.parse().ok())
                .unwrap_or(500);
            let end = (offset + limit).min(c.items.len());
            let page = if offset < end {
                &c.items[offset..end]
            } else {
                &[][..]
            };
            let r = resp(200, items_body(page));
            // Like the ODS/API: the count only when asked for (`totalCount=true`).
            if req.query.get("totalCount").map(String::as_str) == Some("true") {
                r.header("Total-Count", &c.items.len().to_string())
            } else {
                r
            }
        }
        Ep::Page(..) => resp(200, "[]"),
        Ep::Other => resp(404, "{}"),
    }
}

async fn serve_host(State(host): State<Arc<Host>>, method: Method, uri: Uri) -> Response {
    let path = uri.path().to_string();
    if path == "/xxe" {
        host.xxe_hits.fetch_add(1, Ordering::SeqCst);
        return Response::new(Body::from("S-from-the-network"));
    }
    let query: HashMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let trimmed = path.trim_start_matches('/');
    let (case_id, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    let rest = format!("/{rest}");
    let ep = if method == Method::POST && rest == "/oauth/token" {
        Ep::Token
    } else if rest == "/changeQueries/v1/availableChangeVersions" {
        Ep::Versions
    } else if let Some(r) = rest.strip_prefix("/data/v3/ed-fi/") {
        match r.split_once('/') {
            Some((res, "partitions")) => {
                let _ = res;
                Ep::Partitions
            }
            Some((res, suffix)) => Ep::Page(res.to_string(), format!("/{suffix}")),
            None => Ep::Page(r.to_string(), String::new()),
        }
    } else {
        Ep::Other
    };
    let r = {
        let mut cases = host.cases.lock().unwrap();
        let Some(c) = cases.get_mut(case_id) else {
            return Response::builder()
                .status(404)
                .body(Body::from("no such case"))
                .unwrap();
        };
        let key = format!("{ep:?}");
        let n = *c.counts.get(&key).unwrap_or(&0);
        c.counts.insert(key, n + 1);
        let req = Req { ep, query, n };
        let scripted = if c.phase2 { None } else { (c.script)(&req) };
        match scripted {
            Some(r) => r,
            None => healthy(c, &req),
        }
    };
    let mut b = Response::builder().status(r.status);
    for (k, v) in &r.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(Body::from(r.body)).unwrap()
}

/// Script helpers.
fn on<F>(f: F) -> Script
where
    F: Fn(&Req) -> Option<Resp> + Send + Sync + 'static,
{
    Arc::new(f)
}

fn none() -> Script {
    on(|_| None)
}

/// The first `k` attendance pages answer `r`, then the host is healthy.
fn page_fails(k: u64, r: Resp) -> Script {
    on(move |q| (q.is_attendance_page() && q.n < k).then(|| r.clone()))
}

fn token_fails(k: u64, r: Resp) -> Script {
    on(move |q| (q.ep == Ep::Token && q.n < k).then(|| r.clone()))
}

fn api_cases() -> Vec<Case> {
    use Kind::Api;
    let three = || {
        vec![
            api_event("S1", "2024-09-03"),
            api_event("S2", "2024-09-04"),
            api_event("S3", "2024-09-05"),
        ]
    };
    let c = |id, what, items: Vec<String>, script: Script, rows, e| {
        case(Api, id, what, Input::Api { items, script }, rows, e)
    };
    let item_dl = "edfi_item_unusable";
    let html = || {
        resp(200, "<html><body>502 Bad Gateway</body></html>").header("Content-Type", "text/html")
    };
    let retry_after = |v: &str| resp(429, "{\"message\":\"slow down\"}").header("Retry-After", v);
    let token_with = |body: &'static str| token_fails(u64::MAX, resp(200, body));
    let mut v = vec![
        c("ok", "control: three items", three(), none(), 3, expect().n(3)),
        c("non-json-page", "an HTML page with 200, once", three(), page_fails(1, html()), 3,
          expect().n(3).run(RunExpect::Retried)),
        c("empty-body", "an empty 200 body, once", three(), page_fails(1, resp(200, "")), 3,
          expect().n(3).run(RunExpect::Retried)),
        c("truncated-json", "a page cut mid-item, once", three(),
          page_fails(1, resp(200, r#"[{"id":"a","schoolReference":{"schoo"#)), 3,
          expect().n(3).run(RunExpect::Retried)),
        c("object-not-array", "an object instead of an array, always", three(),
          on(|q| q.is_attendance_page().then(|| resp(200, r#"{"items":[]}"#))), 0,
          expect().run(RunExpect::Failed("not a JSON array"))),
        c("wrong-content-type", "a JSON array served as text/html", three(),
          none(), 3, expect().n(3)),
        c("http-500-twice", "500, 500, then the page", three(),
          page_fails(2, resp(500, "{\"error\":\"boom\"}")), 3, expect().n(3).run(RunExpect::Retried)),
        c("http-502-html", "502 with an HTML body, once", three(),
          page_fails(1, resp(502, "<html>bad gateway</html>").header("Content-Type", "text/html")), 3,
          expect().n(3).run(RunExpect::Retried)),
        c("http-503-retry-after-1", "503 with Retry-After: 1", three(),
          page_fails(1, resp(503, "{}").header("Retry-After", "1")), 3,
          expect().n(3).run(RunExpect::Retried)),
        c("http-429-retry-after-0", "429 with Retry-After: 0", three(), page_fails(1, retry_after("0")),
          3, expect().n(3).run(RunExpect::Retried)),
        c("http-429-retry-after-negative", "429 with Retry-After: -5", three(),
          page_fails(1, retry_after("-5")), 3, expect().n(3).run(RunExpect::Retried)),
        c("http-429-retry-after-garbage", "429 with Retry-After: soon", three(),
          page_fails(1, retry_after("soon")), 3, expect().n(3).run(RunExpect::Retried)),
        c("http-429-retry-after-date", "429 with an HTTP-date Retry-After in the past", three(),
          page_fails(1, retry_after("Wed, 21 Oct 2015 07:28:00 GMT")), 3,
          expect().n(3).run(RunExpect::Retried)),
        c("http-429-retry-after-fraction", "429 with Retry-After: 0.5", three(),
          page_fails(1, retry_after("0.5")), 3, expect().n(3).run(RunExpect::Retried)),
        // A host asking for 3,000 years: the wait must be capped (≤ 10 minutes).
        c("http-429-retry-after-huge", "429 with Retry-After: 99999999999", three(),
          page_fails(u64::MAX, retry_after("99999999999")), 0,
          expect().run(RunExpect::RetryWaitAtMost(600_000))),
        c("http-404", "404 on the attendance resource", three(),
          page_fails(u64::MAX, resp(404, "{\"message\":\"not found\"}")), 0,
          expect().run(RunExpect::Failed("404"))),
        c("token-no-expiry", "a token without expires_in", three(),
          token_with(r#"{"access_token":"t","token_type":"bearer"}"#), 3, expect().n(3)),
        c("token-negative-expiry", "expires_in: -5", three(),
          token_with(r#"{"access_token":"t","token_type":"bearer","expires_in":-5}"#), 3,
          expect().n(3)),
        c("token-huge-expiry", "expires_in: u64::MAX (overflows Instant)", three(),
          token_with(r#"{"access_token":"t","token_type":"bearer","expires_in":18446744073709551615}"#),
          3, expect().n(3)),
        c("token-string-expiry", "expires_in: \"3600\" (a string)", three(),
          token_with(r#"{"access_token":"t","token_type":"bearer","expires_in":"3600"}"#), 3,
          expect().n(3)),
        c("token-zero-expiry", "expires_in: 0", three(),
          token_with(r#"{"access_token":"t","token_type":"bearer","expires_in":0}"#), 3,
          expect().n(3)),
        c("token-float-expiry", "expires_in: 1799.5", three(),
          token_with(r#"{"access_token":"t","token_type":"bearer","expires_in":1799.5}"#), 3,
          expect().n(3)),
        c("token-not-json", "an HTML token response, once", three(), token_fails(1, html()), 3,
          expect().n(3).run(RunExpect::Retried)),
        c("token-missing-access-token", "a token response without access_token, once", three(),
          token_fails(1, resp(200, r#"{"expires_in":1800}"#)), 3,
          expect().n(3).run(RunExpect::Retried)),
        c("token-500", "500 from the token endpoint, twice", three(),
          token_fails(2, resp(500, "{}")), 3, expect().n(3).run(RunExpect::Retried)),
        c("token-refused", "401 from the token endpoint (bad credentials)", three(),
          token_fails(u64::MAX, resp(401, "{\"error\":\"invalid_client\"}")), 0,
          expect().run(RunExpect::Failed("refused client"))),
        c("401-once", "a page refused once (token revoked)", three(),
          page_fails(1, resp(401, "{}")), 3, expect().n(3)),
        // Every page refused with every fresh token: the connector must give up loudly
        // (bounded), not retry forever while healthy.
        c("401-loop", "every page 401 with every fresh token", three(),
          page_fails(u64::MAX, resp(401, "{}")), 0, expect().run(RunExpect::Failed("401")))
            .timeout(30),
        c("items-missing-keys", "an item without studentReference", vec![
              api_event("S1", "2024-09-03"),
              r#"{"id":"x","schoolReference":{"schoolId":255901001},"eventDate":"2024-09-03"}"#.into(),
              api_event("S3", "2024-09-05"),
          ], none(), 3, expect().n(2).cdl(item_dl, 1)),
        c("items-not-objects", "a number, a string and null as items", vec![
              "1".into(), "\"x\"".into(), "null".into(), api_event("S1", "2024-09-03"),
          ], none(), 4, expect().n(1).cdl(item_dl, 3)),
        c("items-wrong-types", "schoolId as an object, studentUniqueId as an array", vec![
              api_item("S1", "2024-09-03", "Unexcused Absence", "255901001"),
              r#"{"id":"y","schoolReference":{"schoolId":{"n":1}},"sessionReference":{"schoolId":255901001,"schoolYear":2025,"sessionName":"F"},"studentReference":{"studentUniqueId":["S2"]},"attendanceEventCategoryDescriptor":"uri://ed-fi.org/AttendanceEventCategoryDescriptor#Tardy","eventDate":"2024-09-03"}"#.into(),
          ], none(), 2, expect().n(1).ndl("wrong_type", 1))
            .or(expect().n(1).cdl(item_dl, 1))
            .or(expect().n(1).ndl("invalid_identifier", 1)),
        c("items-bad-dates", "9/3/24, 9999-12-31 and 1969-09-03", vec![
              api_event("S1", "2024-09-03"), api_event("S2", "9/3/24"),
              api_event("S3", "9999-12-31"), api_event("S4", "1969-09-03"),
          ], none(), 4, expect().n(1).ndl("invalid_date", 1).ndl("date_out_of_range", 2)),
        c("items-unknown-descriptor", "an unknown attendance category", vec![
              api_event("S1", "2024-09-03"),
              api_item("S2", "2024-09-03", "Beamed Up", "255901001"),
          ], none(), 2, expect().n(1).ndl("unknown_code", 1)),
        c("items-duplicate", "the same item twice in a page", vec![
              api_event("S1", "2024-09-03"), api_event("S1", "2024-09-03"),
          ], none(), 2, expect().n(2)),
        c("items-huge-field", "a 300 KB studentUniqueId (raw record over the limit)", vec![
              api_event(&"7".repeat(300_000), "2024-09-03"), api_event("S2", "2024-09-03"),
          ], none(), 2, expect().n(1).cdl("*", 1))
            .or(expect().n(1).ndl("field_too_large", 1))
            .or(expect().n(1).ndl("payload_too_large", 1)),
        c("total-count-garbage", "Total-Count: lots", three(),
          none(), 3, expect().n(3)),
        c("versions-not-json", "availableChangeVersions as HTML, once", three(),
          on(|q| (q.ep == Ep::Versions && q.n == 0).then(|| resp(200, "<html/>"))), 3,
          expect().n(3).run(RunExpect::Retried)),
        c("versions-strings", "change versions as strings, once", three(),
          on(|q| (q.ep == Ep::Versions && q.n == 0)
              .then(|| resp(200, r#"{"oldestChangeVersion":"0","newestChangeVersion":"10"}"#))), 3,
          expect().n(3).run(RunExpect::Retried)),
        c("versions-negative", "newestChangeVersion -1 (nothing yet)", three(),
          on(|q| (q.ep == Ep::Versions)
              .then(|| resp(200, r#"{"oldestChangeVersion":0,"newestChangeVersion":-1}"#))), 0,
          expect()),
        // 4·cv + 1 overflows i64: refused loudly (or published), never a panic.
        c("versions-huge", "newestChangeVersion i64::MAX", three(),
          on(|q| (q.ep == Ep::Versions).then(|| {
              resp(200, r#"{"oldestChangeVersion":0,"newestChangeVersion":9223372036854775807}"#)
          })), 3, expect().rej(3).run(RunExpect::Failed(""))),
        c("versions-inverted", "oldest > newest", three(),
          on(|q| (q.ep == Ep::Versions)
              .then(|| resp(200, r#"{"oldestChangeVersion":50,"newestChangeVersion":10}"#))), 3,
          expect().n(3)).or(expect().rej(3).run(RunExpect::Failed(""))).timeout(30),
        c("partitions-not-json", "token paging: partitions answered with HTML", three(),
          on(|q| (q.ep == Ep::Partitions).then(|| resp(200, "<html/>"))), 0,
          expect().run(RunExpect::Failed("token paging")))
            .extra(json!({"paging": "token"})),
        c("partitions-empty", "token paging: no page tokens", three(),
          on(|q| (q.ep == Ep::Partitions).then(|| resp(200, r#"{"pageTokens":[]}"#))), 0, expect())
            .extra(json!({"paging": "token"})),
        c("host-ignores-limit", "a host returning 120 items for limit 50", (0..120)
              .map(|i| api_event(&format!("S{i}"), "2024-09-03"))
              .collect(),
          none(), 120, expect().n(120)),
    ];
    // Generated: a 12 MB page, over the 1 MiB max_page_bytes of this case.
    let big = format!("[\"{}\"]", "z".repeat(12 << 20));
    v.push(
        c(
            "huge-body",
            "a 12 MB page (max_page_bytes 1 MiB)",
            three(),
            on(move |q| q.is_attendance_page().then(|| resp(200, big.clone()))),
            0,
            expect().run(RunExpect::Failed("limit")),
        )
        .extra(json!({"max_page_bytes": 1 << 20}))
        .timeout(30),
    );
    // Scripts that change headers only.
    for c in v.iter_mut() {
        if c.id == "api-wrong-content-type" {
            if let Input::Api { script, items } = &mut c.input {
                let body = items_body(items);
                *script = on(move |q| {
                    (q.is_attendance_page()
                        && q.query.get("offset").map(String::as_str) == Some("0"))
                    .then(|| {
                        resp(200, body.clone())
                            .header("Content-Type", "text/html; charset=iso-8859-1")
                    })
                });
            }
        }
        if c.id == "api-total-count-garbage" {
            if let Input::Api { script, items } = &mut c.input {
                let body = items_body(items);
                *script = on(move |q| {
                    (q.is_attendance_page()
                        && q.query.get("offset").map(String::as_str) == Some("0"))
                    .then(|| resp(200, body.clone()).header("Total-Count", "lots"))
                });
            }
        }
        if c.id == "api-host-ignores-limit" {
            if let Input::Api { script, items } = &mut c.input {
                let body = items_body(items);
                *script = on(move |q| {
                    q.is_attendance_page().then(|| {
                        if q.query.get("offset").map(String::as_str) == Some("0") {
                            resp(200, body.clone())
                        } else {
                            resp(200, "[]")
                        }
                    })
                });
            }
        }
    }
    v
}

// ---------------------------------------------------------------------------------------
// Child processes: one connector run each

#[derive(Debug, Serialize, Deserialize)]
struct ChildSpec {
    kind: String,
    name: String,
    section: Value,
    topic_prefix: String,
    result: PathBuf,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct ChildResult {
    records: u64,
    dead_letters: u64,
    retries: u64,
    error: Option<String>,
}

fn child_main(spec: &str) {
    let spec: ChildSpec = serde_json::from_str(spec).expect("child spec");
    let mut cfg = rollcall_testkit::config();
    cfg.kafka.topic_prefix = spec.topic_prefix.clone();
    rollcall_telemetry::init_logging(&cfg.telemetry);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = rt.block_on(async {
        let connector: Box<dyn SisConnector> = match spec.kind.as_str() {
            "csv" => Box::new(rollcall_connector_csv::CsvConnector::new(
                &spec.name,
                serde_json::from_value(spec.section.clone())?,
            )?),
            _ => Box::new(rollcall_connector_edfi::EdfiConnector::new(
                &spec.name,
                serde_json::from_value(spec.section.clone())?,
                std::env::var(SECRET_ENV)?,
            )?),
        };
        run(
            connector,
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
    });
    let result = match outcome {
        Ok(s) => ChildResult {
            records: s.records,
            dead_letters: s.dead_letters,
            retries: s.retries,
            error: None,
        },
        Err(e) => ChildResult {
            error: Some(format!("{e:#}")),
            ..ChildResult::default()
        },
    };
    std::fs::write(&spec.result, serde_json::to_vec(&result).unwrap()).unwrap();
}

#[derive(Debug, Clone)]
enum RunOutcome {
    Done(ChildResult),
    Failed(String),
    Panicked(String),
    Crashed(String),
    TimedOut,
    /// RunExpect::RetryWaitAtMost: the logged wait.
    Waited(u64),
}

impl RunOutcome {
    fn short(&self) -> String {
        match self {
            RunOutcome::Done(r) => format!("done (retries {})", r.retries),
            RunOutcome::Failed(e) => format!("failed: {}", one_line(e, 160)),
            RunOutcome::Panicked(p) => format!("PANIC: {}", one_line(p, 200)),
            RunOutcome::Crashed(s) => format!("CRASH: {s}"),
            RunOutcome::TimedOut => "TIMED OUT".into(),
            RunOutcome::Waited(ms) => format!("retry logged, wait {ms} ms"),
        }
    }
}

fn one_line(s: &str, max: usize) -> String {
    let s = s.replace('\n', " | ");
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s
    }
}

/// `text` without ANSI colour sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The wait of the first "retrying" line of a connector's log.
fn logged_wait(log: &str) -> Option<u64> {
    let log = strip_ansi(log);
    let line = log
        .lines()
        .find(|l| l.contains("retrying") && l.contains("wait_ms"))?;
    let at = line.find("wait_ms")? + "wait_ms".len();
    let digits: String = line[at..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

async fn run_child(
    exe: PathBuf,
    spec: ChildSpec,
    log: PathBuf,
    timeout: Duration,
    watch_wait: bool,
) -> RunOutcome {
    let result_path = spec.result.clone();
    let _ = std::fs::remove_file(&result_path);
    let out = std::fs::File::create(&log).unwrap();
    let mut child = tokio::process::Command::new(exe)
        .args([
            "bad_input_corpus",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, serde_json::to_string(&spec).unwrap())
        .env(SECRET_ENV, "corpus-secret")
        .env("RUST_LOG", "info,librdkafka=warn")
        .env("RUST_BACKTRACE", "0")
        .env("NO_COLOR", "1")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the connector child");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if watch_wait {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(ms) = logged_wait(&text) {
                let _ = child.kill().await;
                return RunOutcome::Waited(ms);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = child.kill().await;
            return RunOutcome::TimedOut;
        }
        match tokio::time::timeout(left.min(Duration::from_millis(200)), child.wait()).await {
            Ok(s) => break s.unwrap(),
            Err(_) => continue,
        }
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if let Some(at) = text.find("panicked at") {
        return RunOutcome::Panicked(text[at..].lines().take(3).collect::<Vec<_>>().join(" "));
    }
    if !status.success() && status.code().is_none() {
        use std::os::unix::process::ExitStatusExt;
        let tail: Vec<&str> = text.lines().rev().take(2).collect();
        return RunOutcome::Crashed(format!(
            "killed by signal {:?}; log ends: {}",
            status.signal(),
            one_line(&tail.join(" | "), 200)
        ));
    }
    match std::fs::read(&result_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<ChildResult>(&b).ok())
    {
        Some(r) => match &r.error {
            Some(e) => RunOutcome::Failed(e.clone()),
            None => RunOutcome::Done(r),
        },
        None => RunOutcome::Crashed(format!(
            "exit {status} without a result; log ends: {}",
            one_line(
                &text.lines().rev().take(3).collect::<Vec<_>>().join(" | "),
                300
            )
        )),
    }
}

// ---------------------------------------------------------------------------------------
// The good input after each case

fn good_file(case: &Case) -> (String, Vec<u8>) {
    let rows = |f: &dyn Fn(u64) -> String| (1..=GOOD_ROWS).map(f).collect::<Vec<_>>().concat();
    match case.kind {
        Kind::Xml => {
            let body = rows(&|i| xml_event(&format!("GOOD{i}"), "2024-09-10", ""));
            (
                "zz_good.xml".into(),
                format!("<?xml version=\"1.0\"?>\n<InterchangeStudentAttendance xmlns=\"http://ed-fi.org/5.2.0\">\n{body}</InterchangeStudentAttendance>\n").into_bytes(),
            )
        }
        _ => {
            let delim = case
                .extra
                .get("delimiter")
                .and_then(Value::as_str)
                .unwrap_or(",");
            let text = match case.preset {
                "powerschool" => format!(
                    "SchoolID,Student_Number,Att_Date,Att_Code,Presence_Status_CD\r\n{}",
                    rows(&|i| format!("101,GOOD{i},09/10/2024,A,Absent\r\n"))
                ),
                "infinite_campus" => format!(
                    "schoolID,studentNumber,date,status,excuse\n{}",
                    rows(&|i| format!("7,GOOD{i},2024-09-10,A,U\n"))
                ),
                "skyward" => format!(
                    "SchoolID,StudentNumber,AttendanceDate,Category,IsTruant,DayValue\r\n{}",
                    rows(&|i| format!("9,GOOD{i},9/10/2024,Excused,N,1\r\n"))
                ),
                "aeries" => format!(
                    "SC,SN,DT,AL\r\n{}",
                    rows(&|i| format!("3,GOOD{i},09/10/2024,U\r\n"))
                ),
                _ => format!(
                    "school_id,student_id,date,code\n{}",
                    rows(&|i| format!("1,GOOD{i},2024-09-10,unexcused_absence\n"))
                ),
            };
            (
                "attendance_zz_good.csv".into(),
                text.replace(',', delim).into_bytes(),
            )
        }
    }
}

// ---------------------------------------------------------------------------------------
// What happened, per case

#[derive(Debug, Default, Clone, PartialEq)]
struct Seen {
    raw: u64,
    normalized: u64,
    connector_dl: BTreeMap<String, u64>,
    normalizer_dl: BTreeMap<String, u64>,
    /// Raw records with neither events nor a dead letter.
    vanished: u64,
    file_rejected: bool,
    good_normalized: u64,
    good_dl: BTreeMap<String, u64>,
}

fn matches(seen: &Seen, rows: u64, e: &Expect) -> Result<(), String> {
    let kinds = |want: &[(&str, u64)], got: &BTreeMap<String, u64>| -> bool {
        let wild: u64 = want.iter().filter(|(k, _)| *k == "*").map(|(_, n)| n).sum();
        let mut rest = got.clone();
        for (k, n) in want.iter().filter(|(k, _)| *k != "*") {
            match rest.get_mut(*k) {
                Some(m) if *m >= *n => *m -= n,
                _ => return false,
            }
        }
        rest.values().sum::<u64>() == wild
    };
    let dl_rows =
        seen.connector_dl.values().sum::<u64>() + seen.normalizer_dl.values().sum::<u64>();
    let residual = rows as i64 - seen.normalized as i64 - dl_rows as i64;
    let mut why = Vec::new();
    if seen.normalized != e.normalized {
        why.push(format!(
            "normalized {} (expected {})",
            seen.normalized, e.normalized
        ));
    }
    if !kinds(&e.connector_dl, &seen.connector_dl) {
        why.push(format!(
            "connector dead letters {:?} (expected {:?})",
            seen.connector_dl, e.connector_dl
        ));
    }
    if !kinds(&e.normalizer_dl, &seen.normalizer_dl) {
        why.push(format!(
            "normalizer dead letters {:?} (expected {:?})",
            seen.normalizer_dl, e.normalizer_dl
        ));
    }
    match e.rejected {
        Some(r) => {
            if matches!(e.run, RunExpect::Done | RunExpect::Retried) && !seen.file_rejected {
                why.push("the file was not rejected".into());
            }
            if residual != r as i64 {
                why.push(format!(
                    "{residual} rows unaccounted for (expected {r} rows of the refused input)"
                ));
            }
        }
        None => {
            if seen.file_rejected {
                why.push("the file was rejected".into());
            }
            if residual != 0 {
                why.push(format!(
                    "rows in {rows} ≠ normalized + dead letters (off by {residual})"
                ));
            }
        }
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

fn run_matches(o: &RunOutcome, e: &RunExpect) -> Result<(), String> {
    let ok = match (e, o) {
        (RunExpect::Done, RunOutcome::Done(_)) => true,
        (RunExpect::Retried, RunOutcome::Done(r)) => r.retries > 0,
        (RunExpect::Failed(text), RunOutcome::Failed(m)) => m.contains(text),
        (RunExpect::RetryWaitAtMost(max), RunOutcome::Waited(ms)) => ms <= max,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("run: {} (expected {e:?})", o.short()))
    }
}

// ---------------------------------------------------------------------------------------
// tests/corpus/README.md: its case table is generated from the cases above

const TABLE_START: &str =
    "<!-- cases: generated by tests/corpus.rs (ROLLCALL_CORPUS_WRITE_README=1) -->";
const TABLE_END: &str = "<!-- end of cases -->";

fn outcome_text(e: &Expect) -> String {
    let mut parts = Vec::new();
    if e.normalized > 0 {
        parts.push(format!("{} normalized", e.normalized));
    }
    for (k, n) in &e.connector_dl {
        let k = if *k == "*" { "any kind" } else { k };
        parts.push(format!(
            "{n} connector dead letter{} `{k}`",
            if *n == 1 { "" } else { "s" }
        ));
    }
    for (k, n) in &e.normalizer_dl {
        parts.push(format!(
            "{n} normalizer dead letter{} `{k}`",
            if *n == 1 { "" } else { "s" }
        ));
    }
    match (e.rejected, &e.run) {
        (Some(r), RunExpect::Done | RunExpect::Retried) => {
            parts.push(format!("file rejected ({r} rows unpublished)"))
        }
        (Some(r), _) => parts.push(format!("response refused ({r} rows unpublished)")),
        _ => {}
    }
    match &e.run {
        RunExpect::Done => {}
        RunExpect::Retried => parts.push("request failed and retried".into()),
        RunExpect::Failed("") => parts.push("the connector stops with a clear error".into()),
        RunExpect::Failed(t) => {
            parts.push(format!("the connector stops with a clear error (`{t}`)"))
        }
        RunExpect::RetryWaitAtMost(ms) => {
            parts.push(format!("retried after at most {} s", ms / 1000))
        }
    }
    if parts.is_empty() {
        "nothing published, nothing refused".into()
    } else {
        parts.join(", ")
    }
}

fn readme_table(cases: &[Case]) -> String {
    let mut t = String::new();
    for kind in [Kind::Csv, Kind::Xml, Kind::Api] {
        let title = match kind {
            Kind::Csv => "CSV preset files (file-drop connector)",
            Kind::Xml => "Ed-Fi XML interchanges (file-drop connector)",
            Kind::Api => "Ed-Fi API responses (Ed-Fi connector against a stand-in host)",
        };
        let n = cases.iter().filter(|c| c.kind == kind).count();
        t.push_str(&format!("\n### {title}: {n} cases\n\n| case | input | rows in | expected outcome |\n| --- | --- | --- | --- |\n"));
        for c in cases.iter().filter(|c| c.kind == kind) {
            let input = match &c.input {
                Input::File { name, .. } => {
                    let committed = ["csv", "xml"]
                        .iter()
                        .any(|d| corpus_dir().join(d).join(name).exists());
                    let preset = if c.kind == Kind::Csv && c.preset != "generic" {
                        format!(" ({})", c.preset)
                    } else {
                        String::new()
                    };
                    if committed {
                        format!(
                            "{}: `{}/{name}`{preset}",
                            c.what,
                            if c.kind == Kind::Csv { "csv" } else { "xml" }
                        )
                    } else {
                        format!("{} (generated){preset}", c.what)
                    }
                }
                Input::Api { .. } => c.what.to_string(),
            };
            let mut outcome = outcome_text(&c.expect);
            if let Some(a) = &c.alt {
                outcome.push_str(&format!("; or: {}", outcome_text(a)));
            }
            if c.good != Good::Normalized {
                outcome.push_str("; the good input after it is dead-lettered too");
            }
            t.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                c.id,
                input.replace('|', "\\|"),
                c.rows,
                outcome.replace('|', "\\|")
            ));
        }
    }
    t
}

fn check_readme(cases: &[Case]) {
    let path = corpus_dir().join("README.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let (Some(a), Some(b)) = (text.find(TABLE_START), text.find(TABLE_END)) else {
        panic!("{} lacks the case table markers", path.display());
    };
    let table = readme_table(cases);
    let current = &text[a + TABLE_START.len()..b];
    if current != table {
        if std::env::var("ROLLCALL_CORPUS_WRITE_README").is_ok() {
            let new = format!("{}{TABLE_START}{table}{}", &text[..a], &text[b..]);
            std::fs::write(&path, new).unwrap();
        } else {
            panic!(
                "{} does not list the cases as they are; regenerate it with ROLLCALL_CORPUS_WRITE_README=1",
                path.display()
            );
        }
    }
    // Every committed data file is some case's input.
    for dir in ["csv", "xml"] {
        for f in std::fs::read_dir(corpus_dir().join(dir)).unwrap() {
            let name = f.unwrap().file_name().to_string_lossy().to_string();
            assert!(
                cases
                    .iter()
                    .any(|c| matches!(&c.input, Input::File { name: n, .. } if *n == name)),
                "tests/corpus/{dir}/{name} is no case's input"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The test

#[test]
fn bad_input_corpus() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child_main(&spec);
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(parent());
}

struct Prepared {
    case: Case,
    dir: PathBuf,
    section: Value,
}

async fn parent() {
    let started = Instant::now();
    let mut cfg = config_with_fresh_topics("corpus").await;
    let work = tempfile::tempdir().unwrap();
    // Built-in code maps only: the Aeries case is a district without one.
    cfg.normalizer.code_maps_dir = None;

    // The stand-in Ed-Fi host (also the target the XXE case must never reach).
    let host = Arc::new(Host::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(serve_host)
        .with_state(host.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}");

    let mut cases = csv_cases();
    cases.extend(xml_cases(&format!("{base}/xxe")));
    cases.extend(api_cases());
    for c in &cases {
        assert_eq!(
            c.expect.total(),
            c.rows,
            "{}: the expectation must account for every row",
            c.id
        );
        if let Some(a) = &c.alt {
            assert_eq!(
                a.total(),
                c.rows,
                "{}: the alternative must account for every row",
                c.id
            );
        }
    }
    let mut ids = HashSet::new();
    assert!(
        cases.iter().all(|c| ids.insert(c.id.clone())),
        "case ids are unique"
    );
    for kind in [Kind::Csv, Kind::Xml, Kind::Api] {
        let n = cases.iter().filter(|c| c.kind == kind).count();
        assert!(n >= 30, "{}: {n} cases, at least 30 wanted", kind.as_str());
    }
    check_readme(&cases);
    // ROLLCALL_CORPUS_ONLY=<text>: run only the cases whose id contains it (debugging).
    if let Ok(only) = std::env::var("ROLLCALL_CORPUS_ONLY") {
        cases.retain(|c| c.id.contains(only.as_str()));
    }

    // Start the normalizer: it drains the raw topics while the connectors publish.
    let normalizer = build_normalizer(&cfg).unwrap();
    let stop = CancellationToken::new();
    let (c2, s2, stop2) = (cfg.clone(), secrets(), stop.clone());
    let worker = std::thread::spawn(move || -> anyhow::Result<()> {
        let mut w = Worker::connect(&c2, &s2, normalizer)?;
        w.run(&Health::new(), &stop2)
    });

    // Lay out the inboxes and register the API cases.
    let mut prepared = Vec::new();
    for c in cases {
        let dir = work.path().join(&c.id);
        std::fs::create_dir_all(&dir).unwrap();
        let section = match &c.input {
            Input::File { name, bytes } => {
                let inbox = dir.join("inbox");
                std::fs::create_dir_all(&inbox).unwrap();
                std::fs::write(inbox.join(name), bytes).unwrap();
                let mut s = json!({
                    "district_id": c.id, "inbox": inbox, "preset": c.preset,
                    "rows_per_batch": 1000, "poll_interval_secs": 1,
                });
                for (k, v) in c.extra.as_object().unwrap() {
                    s[k] = v.clone();
                }
                s
            }
            Input::Api { items, script } => {
                host.cases.lock().unwrap().insert(
                    c.id.clone(),
                    ApiCase {
                        items: items.clone(),
                        script: script.clone(),
                        phase2: false,
                        counts: HashMap::new(),
                        good_served: false,
                    },
                );
                let mut s = json!({
                    "base_url": format!("{base}/{}", c.id), "district_id": c.id,
                    "client_id": "rollcall", "client_secret_env": SECRET_ENV,
                    "page_size": 50, "requests_per_second": 10_000, "poll_interval_secs": 1,
                });
                for (k, v) in c.extra.as_object().unwrap() {
                    s[k] = v.clone();
                }
                s
            }
        };
        prepared.push(Prepared {
            case: c,
            dir,
            section,
        });
    }
    let prepared = Arc::new(prepared);
    // The children run a copy of this binary: a rebuild of the test during the run (the
    // checkout is shared) must not change the code under test half-way.
    let exe = work.path().join("corpus-child");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();

    // Phase 1 (the corpus input) and phase 2 (the good input, connector restarted), per
    // case, PARALLEL cases at a time.
    let sem = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut tasks = Vec::new();
    for i in 0..prepared.len() {
        let (prepared, sem, host, prefix, exe) = (
            prepared.clone(),
            sem.clone(),
            host.clone(),
            cfg.kafka.topic_prefix.clone(),
            exe.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let p = &prepared[i];
            let c = &p.case;
            let spec = |phase: u32| ChildSpec {
                kind: if c.kind == Kind::Api {
                    "edfi".into()
                } else {
                    "csv".into()
                },
                name: c.id.clone(),
                section: p.section.clone(),
                topic_prefix: prefix.clone(),
                result: p.dir.join(format!("result{phase}.json")),
            };
            let t = Instant::now();
            let watch = matches!(c.expect.run, RunExpect::RetryWaitAtMost(_));
            let first = run_child(
                exe.clone(),
                spec(1),
                p.dir.join("phase1.log"),
                c.timeout,
                watch,
            )
            .await;
            let first_time = t.elapsed();
            match &c.input {
                Input::File { .. } => {
                    let (name, bytes) = good_file(c);
                    std::fs::write(p.dir.join("inbox").join(name), bytes).unwrap();
                }
                Input::Api { .. } => {
                    let mut cases = host.cases.lock().unwrap();
                    let ac = cases.get_mut(&c.id).unwrap();
                    ac.phase2 = true;
                    ac.counts.clear();
                }
            }
            let second = run_child(
                exe.clone(),
                spec(2),
                p.dir.join("phase2.log"),
                Duration::from_secs(60),
                false,
            )
            .await;
            (i, first, first_time, second)
        }));
    }
    let mut runs: HashMap<usize, (RunOutcome, Duration, RunOutcome)> = HashMap::new();
    for t in tasks {
        let (i, a, d, b) = t.await.unwrap();
        runs.insert(i, (a, d, b));
    }
    let connectors_done = started.elapsed();

    // Wait (bounded) until the normalizer has committed everything in the raw topics.
    let client = rollcall_kafka::client_config(&cfg.kafka, &secrets());
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let raw_topics: Vec<String> = ["attendance", "enrollment", "calendar"]
        .iter()
        .map(|e| topics.raw(e))
        .collect();
    let mut tps = Vec::new();
    for t in &raw_topics {
        for p in AssignedReader::partitions_of(&client, t).unwrap() {
            tps.push((t.clone(), p));
        }
    }
    // The raw topics are complete now (every connector run has ended): read them once,
    // and note per partition the offset after its last committed record — what the
    // normalizer must have committed (aborted batches and transaction markers after it
    // are never consumed).
    struct RawRec {
        district: String,
        key: String,
        version: i64,
    }
    let mut raw: HashMap<(String, i32, i64), RawRec> = HashMap::new();
    let mut needed: HashMap<(String, i32), i64> = HashMap::new();
    for t in &raw_topics {
        for r in read_topic_to_end(&client, t, true).unwrap() {
            let env = rollcall_avro::decode_raw(&r.payload).expect("raw envelopes decode");
            let n = needed.entry((t.clone(), r.partition)).or_insert(0);
            *n = (*n).max(r.offset + 1);
            raw.insert(
                (t.clone(), r.partition, r.offset),
                RawRec {
                    district: env.district_id,
                    key: env.natural_key,
                    version: env.source_version,
                },
            );
        }
    }
    // Wait (bounded) until the normalizer has committed past every one of them, through
    // one long-lived probe of its group's committed offsets (assigned, never polled).
    let probe = AssignedReader::from_beginning(&client, &cfg.normalizer.group_id, &tps).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut behind;
    loop {
        let committed = probe.committed().unwrap();
        behind = needed
            .iter()
            .map(|(tp, n)| (n - committed.get(tp).map(|c| c.offset).unwrap_or(0)).max(0))
            .sum::<i64>();
        if behind == 0 || Instant::now() > deadline || worker.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.cancel();
    let worker_result = worker.join();
    // The probe's group is now idle; never wait on its close.
    std::mem::forget(probe);
    assert!(
        matches!(worker_result, Ok(Ok(()))),
        "the normalizer stopped: {:?}",
        worker_result.map(|r| r.map_err(|e| format!("{e:#}")))
    );
    assert_eq!(
        behind, 0,
        "the normalizer did not commit past every raw record within 120 s (offsets behind)"
    );

    let mut events: HashMap<(String, i64), Vec<String>> = HashMap::new();
    for e in ["attendance", "enrollment", "calendar"] {
        for r in read_topic_to_end(&client, &topics.normalized(e), true).unwrap() {
            let (d, k, v) = match e {
                "attendance" => {
                    let x = rollcall_avro::decode_attendance_event(&r.payload).unwrap();
                    (x.district_id, x.source_key, x.source_version)
                }
                "enrollment" => {
                    let x = rollcall_avro::decode_enrollment(&r.payload).unwrap();
                    (x.district_id, x.source_key, x.source_version)
                }
                _ => {
                    let x = rollcall_avro::decode_calendar_day(&r.payload).unwrap();
                    (x.district_id, x.source_key, x.source_version)
                }
            };
            events.entry((d, v)).or_default().push(k);
        }
    }
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut dl_of_raw: HashMap<(String, i32, i64), String> = HashMap::new();
    let mut stray = Vec::new();
    for r in read_topic_to_end(&client, &topics.dead_letters(), true).unwrap() {
        let h = DeadLetterHeaders::from_pairs(&r.headers);
        if h.stage == "normalizer" {
            let coords = (
                h.source_topic.clone().unwrap_or_default(),
                h.source_partition.unwrap_or(-1),
                h.source_offset.unwrap_or(-1),
            );
            if !raw.contains_key(&coords) {
                stray.push(format!(
                    "normalizer dead letter without its raw record: {h:?}"
                ));
            } else if dl_of_raw.insert(coords, h.kind.clone()).is_some() {
                stray.push(format!("a raw record dead-lettered twice: {h:?}"));
            }
            continue;
        }
        let district = h.district.clone().unwrap_or_default();
        let s = seen.entry(district).or_default();
        let file = h.source_file.clone().unwrap_or_default();
        if h.kind == "csv_file_rejected" {
            s.file_rejected = true;
            if file.contains("zz_good") {
                *s.good_dl.entry(h.kind.clone()).or_default() += 1;
            }
        } else if file.contains("zz_good") {
            *s.good_dl.entry(h.kind.clone()).or_default() += 1;
        } else {
            *s.connector_dl.entry(h.kind.clone()).or_default() += 1;
        }
    }
    for (coords, r) in &raw {
        let s = seen.entry(r.district.clone()).or_default();
        let good = r.key.contains("GOOD");
        if let Some(kind) = dl_of_raw.get(coords) {
            let m = if good {
                &mut s.good_dl
            } else {
                &mut s.normalizer_dl
            };
            *m.entry(kind.clone()).or_default() += 1;
            continue;
        }
        let has_events = events
            .get(&(r.district.clone(), r.version))
            .is_some_and(|keys| keys.iter().any(|k| k.starts_with(r.key.as_str())));
        match (has_events, good) {
            (true, true) => s.good_normalized += 1,
            (true, false) => s.normalized += 1,
            (false, _) => s.vanished += 1,
        }
        if !good {
            s.raw += 1;
        }
    }

    // Verdicts.
    let mut failures = Vec::new();
    let mut per_kind: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    let (mut total_rows, mut total_norm, mut total_dl, mut total_rej) = (0u64, 0u64, 0u64, 0u64);
    println!("\n== bad-input corpus: {} cases ==", prepared.len());
    for (i, p) in prepared.iter().enumerate() {
        let c = &p.case;
        let (first, took, second) = runs.get(&i).cloned().unwrap();
        let s = seen.get(&c.id).cloned().unwrap_or_default();
        let mut why = Vec::new();
        let outcome_ok = [Some(&c.expect), c.alt.as_ref()]
            .into_iter()
            .flatten()
            .map(|e| matches(&s, c.rows, e).and(run_matches(&first, &e.run)))
            .collect::<Vec<_>>();
        if !outcome_ok.iter().any(Result::is_ok) {
            why.push(outcome_ok[0].clone().unwrap_err());
        }
        if s.vanished > 0 {
            why.push(format!(
                "{} raw records have neither events nor a dead letter",
                s.vanished
            ));
        }
        if let RunOutcome::Panicked(_) | RunOutcome::Crashed(_) = &first {
            why.push(format!("first run: {}", first.short()));
        }
        if !matches!(second, RunOutcome::Done(_)) {
            why.push(format!("restart with the good input: {}", second.short()));
        }
        let good_ok = match c.good {
            Good::Normalized => s.good_normalized == GOOD_ROWS && s.good_dl.is_empty(),
            Good::DeadLettered(k) => s.good_dl.get(k) == Some(&GOOD_ROWS) && s.good_normalized == 0,
        };
        if !good_ok {
            why.push(format!(
                "good input after the case: {} of {GOOD_ROWS} normalized, dead letters {:?}",
                s.good_normalized, s.good_dl
            ));
        }
        if c.kind != Kind::Api {
            if let Input::File { name, .. } = &c.input {
                let inbox = p.dir.join("inbox");
                if inbox.join(name).exists() {
                    why.push(format!("{name} is still in the inbox"));
                }
            }
        }
        let dls = s.connector_dl.values().sum::<u64>() + s.normalizer_dl.values().sum::<u64>();
        let rej = (c.rows as i64 - s.normalized as i64 - dls as i64).max(0) as u64;
        total_rows += c.rows;
        total_norm += s.normalized;
        total_dl += dls;
        total_rej += rej;
        let entry = per_kind.entry(c.kind.as_str()).or_default();
        entry.0 += 1;
        let verdict = if why.is_empty() {
            entry.1 += 1;
            "PASS".to_string()
        } else {
            entry.2 += 1;
            failures.push(format!("{} ({}): {}", c.id, c.what, why.join("; ")));
            "FAIL".to_string()
        };
        println!(
            "{verdict} {:<40} rows {:>5} = normalized {:>5} + dl {:>4} {:?}{:?} + rejected {:>4}{} | run {} in {:.1}s | good {}/{}",
            c.id,
            c.rows,
            s.normalized,
            dls,
            s.connector_dl,
            s.normalizer_dl,
            rej,
            if s.file_rejected { " (file rejected)" } else { "" },
            first.short(),
            took.as_secs_f64(),
            s.good_normalized,
            GOOD_ROWS,
        );
    }
    let xxe = host.xxe_hits.load(Ordering::SeqCst);
    if xxe > 0 {
        failures.push(format!(
            "xml-xxe: the external entity was fetched {xxe} times"
        ));
    }
    failures.extend(stray);
    println!(
        "== totals: rows {total_rows} = normalized {total_norm} + dead letters {total_dl} + rows of refused inputs {total_rej}; external-entity fetches {xxe}"
    );
    for (k, (n, pass, fail)) in &per_kind {
        println!("== {k}: {n} cases, {pass} pass, {fail} fail");
    }
    println!(
        "== connectors {:.1}s, total {:.1}s",
        connectors_done.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        println!("== logs under {} (kept)", work.path().display());
        let _ = work.keep();
        panic!(
            "{} corpus cases failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}
