//! The inbox's rules that operators see: which names are never read, the date a name
//! declares (drop order), and moving a rejected file back (`rollcall inbox retry`).

use std::path::{Path, PathBuf};

use chrono::NaiveDate;

/// Names that are never read (until renamed): hidden (dot) files, files still being
/// written under a temporary name (`*.part`, `*.partial`, `*.tmp`), and the
/// connector's own `*.reason.txt`.
pub fn ignored_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || [".part", ".partial", ".tmp", ".reason.txt"]
            .iter()
            .any(|s| lower.ends_with(s))
}

/// The date a file name declares, the first found of: `YYYY-MM-DD`, `YYYY_MM_DD` or
/// `YYYY.MM.DD` (month and day with one or two digits: `2024-9-30`), or `YYYYMMDD` (8
/// digits standing alone). Years 1970–2199 only, and the date must exist.
pub fn declared_date(name: &str) -> Option<NaiveDate> {
    let b = name.as_bytes();
    let digits_at = |i: usize| {
        let mut j = i;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        j
    };
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && b[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        let end = digits_at(i);
        let run = &name[i..end];
        let valid = |y: &str, m: &str, d: &str| {
            let y: i32 = y.parse().ok()?;
            if !(1970..=2199).contains(&y) {
                return None;
            }
            NaiveDate::from_ymd_opt(y, m.parse().ok()?, d.parse().ok()?)
        };
        if run.len() == 8 {
            if let Some(d) = valid(&run[..4], &run[4..6], &run[6..]) {
                return Some(d);
            }
        }
        if run.len() == 4 && end < b.len() && matches!(b[end], b'-' | b'_' | b'.') {
            let sep = b[end];
            let m_end = digits_at(end + 1);
            if (1..=2).contains(&(m_end - end - 1)) && m_end < b.len() && b[m_end] == sep {
                let d_end = digits_at(m_end + 1);
                if (1..=2).contains(&(d_end - m_end - 1)) {
                    if let Some(d) = valid(run, &name[end + 1..m_end], &name[m_end + 1..d_end]) {
                        return Some(d);
                    }
                }
            }
        }
        i = end;
    }
    None
}

/// Moves a rejected file (`<inbox>/rejected/<name>`) back into its inbox, so the
/// connector reads it again, and removes its `.reason.txt`. Returns where it went and
/// the reason it had been rejected for. Refuses, with a message saying what to do, a
/// path that is not in a `rejected/` directory, a missing file, or a name already
/// waiting in the inbox.
pub fn retry_rejected(file: &Path) -> Result<(PathBuf, Option<String>), String> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: not a file name", file.display()))?;
    let dir = file.parent().unwrap_or_else(|| Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let dir_name = std::fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
    if dir_name.as_deref() != Some("rejected") {
        return Err(format!(
            "{} is not in an inbox's rejected/ directory; give the path of the rejected file, e.g. <inbox>/rejected/{name}",
            file.display()
        ));
    }
    if name.ends_with(".reason.txt") {
        return Err(format!(
            "{} is a rejection's reason, not the rejected file; give the file itself",
            file.display()
        ));
    }
    if !file.is_file() {
        return Err(format!("{}: no such rejected file", file.display()));
    }
    let inbox = std::fs::canonicalize(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{}: rejected/ has no inbox above it", dir.display()))?;
    let to = inbox.join(name);
    if to.exists() {
        return Err(format!(
            "{} already exists in the inbox; wait for it to be read (or move it away), then retry",
            to.display()
        ));
    }
    let reason_file = dir.join(format!("{name}.reason.txt"));
    let reason = std::fs::read_to_string(&reason_file).ok();
    std::fs::rename(file, &to)
        .map_err(|e| format!("moving {} to {}: {e}", file.display(), to.display()))?;
    let _ = std::fs::remove_file(&reason_file);
    Ok((to, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_declared_in_names_are_read_in_every_documented_spelling() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day);
        assert_eq!(declared_date("attendance-2024-9-30.csv"), d(2024, 9, 30));
        assert_eq!(declared_date("attendance-2024-10-01.csv"), d(2024, 10, 1));
        assert_eq!(declared_date("attendance_d_20240903.csv"), d(2024, 9, 3));
        assert_eq!(declared_date("att_255901_2024_09_03.csv"), d(2024, 9, 3));
        assert_eq!(declared_date("calendar.2025.1.7.csv"), d(2025, 1, 7));
        assert_eq!(declared_date("attendance-2024-13-01.csv"), None);
        assert_eq!(declared_date("attendance-12345678.csv"), None);
        assert_eq!(declared_date("attendance.csv"), None);
        assert!(
            declared_date("attendance-2024-10-01.csv") > declared_date("attendance-2024-9-30.csv")
        );
    }

    #[test]
    fn temporary_and_hidden_names_are_ignored() {
        for n in [
            ".x.csv",
            "a.csv.part",
            "a.csv.partial",
            "a.csv.TMP",
            "a.csv.reason.txt",
        ] {
            assert!(ignored_name(n), "{n}");
        }
        assert!(!ignored_name("attendance.csv"));
    }

    #[test]
    fn retry_moves_a_rejected_file_back_and_refuses_what_it_cannot() {
        let inbox = tempfile::tempdir().unwrap();
        let rejected = inbox.path().join("rejected");
        std::fs::create_dir_all(&rejected).unwrap();
        std::fs::write(rejected.join("a.csv"), "x").unwrap();
        std::fs::write(rejected.join("a.csv.reason.txt"), "bad header").unwrap();
        let (to, reason) = retry_rejected(&rejected.join("a.csv")).unwrap();
        assert_eq!(
            to,
            std::fs::canonicalize(inbox.path()).unwrap().join("a.csv")
        );
        assert!(to.exists());
        assert_eq!(reason.as_deref(), Some("bad header"));
        assert!(!rejected.join("a.csv.reason.txt").exists());
        // Not there any more; not in rejected/; already waiting.
        assert!(retry_rejected(&rejected.join("a.csv"))
            .unwrap_err()
            .contains("no such rejected file"));
        assert!(retry_rejected(&inbox.path().join("a.csv"))
            .unwrap_err()
            .contains("not in an inbox's rejected/"));
        std::fs::write(rejected.join("a.csv"), "y").unwrap();
        assert!(retry_rejected(&rejected.join("a.csv"))
            .unwrap_err()
            .contains("already exists in the inbox"));
    }
}
