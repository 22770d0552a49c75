//! Streaming rows out of one export: bytes → (UTF-8 or Windows-1252) fields → the
//! canonical flat fields of the raw envelope, one row at a time, with its line number.

use std::collections::BTreeMap;
use std::io::Read;

use chrono::NaiveDate;
use rollcall_connector_kit::Entity;

use crate::presets::{required, ColumnMap, Other, Transform, DATE_FIELDS};
use crate::Encoding;

/// Every canonical flat field a preset may map.
pub const FIELDS: [&str; 19] = [
    "school_id",
    "student_id",
    "date",
    "code",
    "secondary_code",
    "duration_days",
    "minutes_absent",
    "school_day_minutes",
    "reason",
    "school_year",
    "entry_date",
    "exit_date",
    "grade_level",
    "subgroups",
    "state_student_id",
    "calendar_code",
    "events",
    "is_instructional",
    "operation",
];

/// Longest field accepted, in bytes (a runaway quote can swallow a whole file).
const MAX_FIELD_BYTES: usize = 4096;

/// One data row: its physical line and its canonical flat fields (empty ones left out).
pub struct Row {
    pub line: u64,
    pub fields: BTreeMap<String, String>,
}

pub enum RowError {
    /// This row is unusable; the rest of the file still flows.
    Row {
        line: u64,
        reason: String,
        raw: Vec<u8>,
    },
    /// The file as a whole cannot be read.
    File(String),
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowError::Row { line, reason, .. } => write!(f, "line {line}: {reason}"),
            RowError::File(r) => f.write_str(r),
        }
    }
}

/// A column read into a field.
struct Bound {
    field: &'static str,
    column: usize,
    header: String,
    transform: Option<Transform>,
}

/// Reads one export's rows as canonical flat fields.
pub struct RowReader<R: Read> {
    csv: csv::Reader<R>,
    index: Vec<Bound>,
    width: usize,
    encoding: crate::Encoding,
    date_formats: &'static [&'static str],
    entity: Entity,
    record: csv::ByteRecord,
    delimiter: u8,
    /// Physical line of the next record (the csv crate miscounts CRLF files, so we
    /// count: one line per record plus the line breaks quoted inside its fields).
    next_line: u64,
}

fn line_breaks(r: &csv::ByteRecord) -> u64 {
    r.iter()
        .map(|f| f.iter().filter(|b| **b == b'\n').count() as u64)
        .sum()
}

fn decode(bytes: &[u8], encoding: Encoding) -> Result<String, ()> {
    match encoding {
        Encoding::Utf8 => std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| ()),
        Encoding::Windows1252 => Ok(encoding_rs::WINDOWS_1252.decode(bytes).0.into_owned()),
        Encoding::Auto => Ok(match std::str::from_utf8(bytes) {
            Ok(s) => s.to_string(),
            Err(_) => encoding_rs::WINDOWS_1252.decode(bytes).0.into_owned(),
        }),
    }
}

impl<R: Read> RowReader<R> {
    pub fn new(
        input: R,
        delimiter: u8,
        encoding: Encoding,
        columns: ColumnMap,
        date_formats: &'static [&'static str],
        entity: Entity,
    ) -> Result<Self, String> {
        let mut csv = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .has_headers(true)
            .from_reader(input);
        let headers = csv
            .byte_headers()
            .map_err(|e| format!("cannot read the header line: {e}"))?
            .clone();
        let mut names = Vec::with_capacity(headers.len());
        for (i, h) in headers.iter().enumerate() {
            // A UTF-8 byte-order mark sits at the start of the first header.
            let h = if i == 0 {
                h.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(h)
            } else {
                h
            };
            let name = decode(h, encoding).map_err(|_| {
                "the header line is not UTF-8 (set encoding = \"windows-1252\")".to_string()
            })?;
            names.push(name.trim().to_string());
        }
        let next_line = 2 + line_breaks(&headers);
        let index = bind(&columns, &names, entity)?;
        Ok(RowReader {
            csv,
            index,
            width: names.len(),
            encoding,
            date_formats,
            entity,
            record: csv::ByteRecord::new(),
            delimiter,
            next_line,
        })
    }

    /// Skip `n` data rows (resuming a file part-way).
    pub fn skip_rows(&mut self, n: u64) -> Result<(), RowError> {
        for _ in 0..n {
            match self.csv.read_byte_record(&mut self.record) {
                Ok(true) => self.next_line += 1 + line_breaks(&self.record),
                Ok(false) => return Err(RowError::File(
                    "the file is shorter than the checkpoint says; was it changed in the inbox?"
                        .into(),
                )),
                Err(e) => return Err(RowError::File(format!("reading: {e}"))),
            }
        }
        Ok(())
    }

    fn raw(&self) -> Vec<u8> {
        let mut w = csv::WriterBuilder::new()
            .delimiter(self.delimiter)
            .from_writer(Vec::new());
        let _ = w.write_byte_record(&self.record);
        w.into_inner().unwrap_or_default()
    }

    /// The next data row, `None` at the end of the file.
    pub fn next_row(&mut self) -> Option<Result<Row, RowError>> {
        let line = self.next_line;
        match self.csv.read_byte_record(&mut self.record) {
            Ok(false) => return None,
            Ok(true) => self.next_line += 1 + line_breaks(&self.record),
            Err(e) => {
                self.next_line += 1;
                return Some(match e.kind() {
                    csv::ErrorKind::Io(_) => {
                        Err(RowError::File(format!("reading at line {line}: {e}")))
                    }
                    _ => Err(RowError::Row {
                        line,
                        reason: format!("malformed CSV: {e}"),
                        raw: Vec::new(),
                    }),
                });
            }
        }
        let bad = |this: &Self, reason: String| {
            Some(Err(RowError::Row {
                line,
                reason,
                raw: this.raw(),
            }))
        };
        if self.record.len() != self.width {
            return bad(
                self,
                format!(
                    "has {} fields; the header has {}",
                    self.record.len(),
                    self.width
                ),
            );
        }
        let mut fields = BTreeMap::new();
        for b in &self.index {
            let header = &b.header;
            let bytes = self.record.get(b.column).unwrap_or_default();
            if bytes.len() > MAX_FIELD_BYTES {
                return bad(
                    self,
                    format!(
                        "column `{header}` is {} bytes (at most {MAX_FIELD_BYTES})",
                        bytes.len()
                    ),
                );
            }
            let Ok(text) = decode(bytes, self.encoding) else {
                return bad(self, format!("column `{header}` is not valid UTF-8 (set encoding = \"windows-1252\" or \"auto\")"));
            };
            let mut text = text.trim().to_string();
            if let Some(Transform::Lookup { table, other }) = b.transform {
                text = match table.iter().find(|(k, _)| k.eq_ignore_ascii_case(&text)) {
                    Some((_, v)) => (*v).to_string(),
                    None => match other {
                        Other::Keep => text,
                        Other::Value(v) => v.to_string(),
                        Other::Reject => {
                            let known: Vec<&str> = table.iter().map(|(k, _)| *k).collect();
                            return bad(
                                self,
                                format!("column `{header}`: `{text}` is not one of {known:?}"),
                            );
                        }
                    },
                };
            }
            if text.is_empty() {
                continue;
            }
            let value = if DATE_FIELDS.contains(&b.field) {
                match parse_date(&text, self.date_formats) {
                    Some(d) if b.transform == Some(Transform::DayBefore) => match d.pred_opt() {
                        Some(d) => d.format("%Y-%m-%d").to_string(),
                        None => {
                            return bad(
                                self,
                                format!("column `{header}`: `{text}` has no day before it"),
                            )
                        }
                    },
                    Some(d) => d.format("%Y-%m-%d").to_string(),
                    None => {
                        return bad(
                            self,
                            format!(
                                "column `{header}`: `{text}` is not a date (expected {:?})",
                                self.date_formats
                            ),
                        )
                    }
                }
            } else if let Some(Transform::Add(n)) = b.transform {
                match text.parse::<i64>().ok().and_then(|v| v.checked_add(n)) {
                    Some(v) => v.to_string(),
                    None => {
                        return bad(
                            self,
                            format!("column `{header}`: `{text}` is not a whole number"),
                        )
                    }
                }
            } else {
                text
            };
            fields.insert(b.field.to_string(), value);
        }
        for field in required(self.entity) {
            if !fields.contains_key(*field) {
                let header = self
                    .index
                    .iter()
                    .find(|b| b.field == *field)
                    .map(|b| b.header.as_str())
                    .unwrap_or("?");
                return bad(self, format!("{field} (column `{header}`) is empty"));
            }
        }
        Some(Ok(Row { line, fields }))
    }
}

/// Which column each mapped field reads: a field's first header when the file has it
/// (several fields may read the same column that way); otherwise its first fallback
/// header that the file has and no other field reads. A required field with none of its
/// headers refuses the file.
fn bind(columns: &ColumnMap, names: &[String], entity: Entity) -> Result<Vec<Bound>, String> {
    let find = |h: &str| names.iter().position(|n| n.eq_ignore_ascii_case(h.trim()));
    let mut bound: Vec<Bound> = Vec::new();
    let ordered = || {
        FIELDS
            .iter()
            .filter_map(|f| columns.get_key_value(f).map(|(k, c)| (*k, c)))
    };
    for (field, col) in ordered() {
        if let Some(i) = col.headers.first().and_then(|h| find(h)) {
            bound.push(Bound {
                field,
                column: i,
                header: col.headers[0].clone(),
                transform: col.transform,
            });
        }
    }
    for (field, col) in ordered() {
        if bound.iter().any(|b| b.field == field) {
            continue;
        }
        for h in col.headers.iter().skip(1) {
            match find(h) {
                Some(i) if !bound.iter().any(|b| b.column == i) => {
                    bound.push(Bound {
                        field,
                        column: i,
                        header: h.clone(),
                        transform: col.transform,
                    });
                    break;
                }
                _ => {}
            }
        }
    }
    for field in required(entity) {
        if !bound.iter().any(|b| b.field == *field) {
            let headers = columns
                .get(field)
                .map(|c| c.headers.join("` or `"))
                .unwrap_or_else(|| "?".into());
            return Err(format!(
                "required column `{headers}` (for {field}) is missing; the header has {names:?}"
            ));
        }
    }
    Ok(bound)
}

/// The date in the first format that parses it; a trailing time (`00:00`) is ignored.
pub fn parse_date(text: &str, formats: &[&str]) -> Option<NaiveDate> {
    let head = text.split_whitespace().next().unwrap_or(text);
    formats
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(head, f).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets::preset;

    fn reader<'a>(text: &'a [u8], p: &str, entity: Entity, enc: Encoding) -> RowReader<&'a [u8]> {
        let p = preset(p).unwrap();
        RowReader::new(
            text,
            b',',
            enc,
            p.columns(entity).clone(),
            p.date_formats,
            entity,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn bom_crlf_quotes_and_us_dates_are_read() {
        let text = b"\xEF\xBB\xBFSchoolID,Student_Number,Att_Date,Att_Code,Presence_Status_CD,Total_Minutes,Att_Comment\r\n\
                     101,S1,09/03/2024,A,Absent,,\"sick, fever\"\r\n\
                     101,S2,09/04/2024,T,Present,10,\"two\r\nlines\"\r\n\
                     101,S3,09/05/2024,A,Absent,,\r\n";
        let mut r = reader(text, "powerschool", Entity::Attendance, Encoding::Auto);
        let row = r.next_row().unwrap().ok().unwrap();
        assert_eq!(row.line, 2);
        assert_eq!(row.fields["date"], "2024-09-03");
        assert_eq!(row.fields["reason"], "sick, fever");
        assert_eq!(row.fields["secondary_code"], "Absent");
        assert!(
            !row.fields.contains_key("minutes_absent"),
            "empty fields are left out"
        );
        let row = r.next_row().unwrap().ok().unwrap();
        assert_eq!(
            (row.line, row.fields["reason"].as_str()),
            (3, "two\r\nlines")
        );
        let row = r.next_row().unwrap().ok().unwrap();
        assert_eq!(row.line, 5, "physical line, after a quoted line break");
        assert!(r.next_row().is_none());
    }

    #[test]
    fn windows_1252_rows_are_decoded_in_auto_mode() {
        let text = b"school_id,student_id,date,code,reason\n1,S\xe9,2024-09-03,A,caf\xe9\n";
        let mut r = reader(text, "generic", Entity::Attendance, Encoding::Auto);
        let row = r.next_row().unwrap().ok().unwrap();
        assert_eq!(row.fields["student_id"], "Sé");
        assert_eq!(row.fields["reason"], "café");
        let mut strict = reader(text, "generic", Entity::Attendance, Encoding::Utf8);
        assert!(matches!(
            strict.next_row(),
            Some(Err(RowError::Row { line: 2, .. }))
        ));
    }

    #[test]
    fn bad_rows_are_reported_with_their_line_and_the_rest_flows() {
        let text = b"school_id,student_id,date,code\n1,S1,2024-09-03,A\n1,,2024-09-03,A\n1,S3,2024-13-45,A\n1,S4\n1,S5,2024-09-04,T\n";
        let mut r = reader(text, "generic", Entity::Attendance, Encoding::Auto);
        let mut good = 0;
        let mut bad = Vec::new();
        while let Some(x) = r.next_row() {
            match x {
                Ok(_) => good += 1,
                Err(RowError::Row { line, reason, .. }) => bad.push((line, reason)),
                Err(RowError::File(e)) => panic!("{e}"),
            }
        }
        assert_eq!(good, 2);
        assert_eq!(bad.iter().map(|b| b.0).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert!(bad[0].1.contains("student_id"), "{}", bad[0].1);
        assert!(bad[1].1.contains("not a date"), "{}", bad[1].1);
        assert!(bad[2].1.contains("fields"), "{}", bad[2].1);
    }

    #[test]
    fn a_missing_required_column_refuses_the_file() {
        let p = preset("generic").unwrap();
        let err = RowReader::new(
            &b"school_id,date,code\n"[..],
            b',',
            Encoding::Auto,
            p.columns(Entity::Attendance).clone(),
            p.date_formats,
            Entity::Attendance,
        )
        .err()
        .unwrap();
        assert!(err.contains("student_id"), "{err}");
    }
}
