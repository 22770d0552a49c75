//! Streams one large export through the file-drop connector's batches and reports
//! throughput and peak memory (VmHWM): the connector holds one batch at a time, so the
//! peak must not grow with the file.
//!
//!   cargo run --release -p rollcall-connector-csv --example stream_large_file -- 2048
//!   cargo run --release -p rollcall-connector-csv --example stream_large_file -- 2048 xml
//!
//! The first argument is the file size in MiB (default 2048); `xml` writes an Ed-Fi
//! attendance interchange (`StudentSchoolAttendanceEvent` elements) instead of a CSV. The file is written to a
//! temporary directory first and removed afterwards. Kafka is not involved: publishing
//! happens per batch in the connector kit, so it adds no per-file memory.

use std::io::Write;
use std::time::Instant;

use rollcall_connector_csv::{CsvConfig, CsvConnector};
use rollcall_connector_kit::SisConnector;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mib: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(2048);
    let xml = std::env::args().nth(2).as_deref() == Some("xml");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(if xml {
        "StudentSchoolAttendance.xml"
    } else {
        "attendance_large.csv"
    });
    let t = Instant::now();
    if xml {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        writeln!(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InterchangeStudentAttendance xmlns=\"http://ed-fi.org/5.2.0\">")?;
        let mut written = 0u64;
        let mut i = 0u64;
        while written < mib << 20 {
            let el = format!(
                "\t<StudentSchoolAttendanceEvent>\n\t\t<AttendanceEvent>\n\t\t\t<EventDate>2024-{:02}-{:02}</EventDate>\n\t\t\t<AttendanceEventCategory>uri://ed-fi.org/AttendanceEventCategoryDescriptor#{}</AttendanceEventCategory>\n\t\t\t<AttendanceEventReason>note {i}</AttendanceEventReason>\n\t\t</AttendanceEvent>\n\t\t<StudentReference><StudentIdentity><StudentUniqueId>S{:08}</StudentUniqueId></StudentIdentity></StudentReference>\n\t\t<SchoolReference><SchoolIdentity><SchoolId>{}</SchoolId></SchoolIdentity></SchoolReference>\n\t\t<SessionReference><SessionIdentity><SessionName>2024-2025 Fall Semester</SessionName><SchoolYear>2024-2025</SchoolYear><SchoolReference><SchoolIdentity><SchoolId>{}</SchoolId></SchoolIdentity></SchoolReference></SessionIdentity></SessionReference>\n\t</StudentSchoolAttendanceEvent>\n",
                9 + (i % 4),
                1 + (i % 28),
                ["Excused Absence", "Unexcused Absence", "Tardy", "Partial"][(i % 4) as usize],
                i % 5_000_000,
                255901000 + i % 50,
                255901000 + i % 50,
            );
            w.write_all(el.as_bytes())?;
            written += el.len() as u64;
            i += 1;
        }
        writeln!(w, "</InterchangeStudentAttendance>")?;
    } else {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        writeln!(w, "school_id,student_id,date,code,secondary_code,reason")?;
        let mut written = 0u64;
        let mut i = 0u64;
        while written < mib << 20 {
            let line = format!(
                "{},S{:08},2024-{:02}-{:02},{},,\"note {i}, padded to look like a real comment\"\n",
                100 + i % 50,
                i % 5_000_000,
                9 + (i % 4),
                1 + (i % 28),
                ["A", "E", "T", "U"][(i % 4) as usize]
            );
            w.write_all(line.as_bytes())?;
            written += line.len() as u64;
            i += 1;
        }
    }
    let size = std::fs::metadata(&path)?.len();
    eprintln!(
        "wrote {:.0} MiB in {:.1?}; peak RSS so far {:.1} MiB",
        size as f64 / 1048576.0,
        t.elapsed(),
        peak_rss_mib()
    );
    let before = peak_rss_mib();

    let cfg: CsvConfig = serde_json::from_value(serde_json::json!({
        "district_id": "bench", "inbox": dir.path(), "preset": "generic", "rows_per_batch": 5000, "settle_secs": 0,
    }))?;
    let mut c = CsvConnector::new("bench", cfg)?;
    let mut cp = None;
    let (mut rows, mut bytes_out) = (0u64, 0u64);
    let t = Instant::now();
    loop {
        let b = c.next_batch(cp.as_ref()).await?;
        rows += b.records.len() as u64 + b.dead_letters.len() as u64;
        bytes_out += b
            .records
            .iter()
            .map(|r| rollcall_avro::encode_raw(&r.envelope).len() as u64)
            .sum::<u64>();
        let done = b.caught_up;
        cp = Some(b.checkpoint);
        if done {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "file           {:.0} MiB, {rows} rows",
        size as f64 / 1048576.0
    );
    println!(
        "throughput     {:.0} rows/s, {:.0} MiB/s (parse + map + Avro encode, one core)",
        rows as f64 / secs,
        size as f64 / 1048576.0 / secs
    );
    println!("raw envelopes  {:.0} MiB", bytes_out as f64 / 1048576.0);
    println!(
        "peak RSS       {:.1} MiB (before reading: {before:.1} MiB)",
        peak_rss_mib()
    );
    Ok(())
}
