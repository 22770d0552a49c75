//! Streaming rows out of one export: bytes → physical lines → records (quoted fields
//! may hold line breaks) → (UTF-8 or Windows-1252) fields → the canonical flat fields of
//! the raw envelope, one row at a time, with its line number. Nothing here holds more
//! than one row of at most [`MAX_ROW_BYTES`] (a line longer than that is read past, not
//! buffered), and every physical line ends in exactly one row, bad or good, or is blank.

use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;

use chrono::NaiveDate;
use rollcall_connector_kit::Entity;
use rollcall_kafka::limits::MAX_RAW_PAYLOAD_BYTES;

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

/// Longest mapped field accepted, in bytes; also the longest a quoted field spanning
/// lines may grow before it is taken for a runaway quote.
pub const MAX_FIELD_BYTES: usize = 4096;

/// Longest row accepted, all its lines together, in bytes of the file: the raw payload
/// cap (`rollcall_kafka::limits`), so a row the connector accepts is one the normalizer
/// reads. A longer line is read past (only its first bytes are kept, for the dead
/// letter), never held whole.
pub const MAX_ROW_BYTES: usize = MAX_RAW_PAYLOAD_BYTES;

/// One data row: its physical line, how many lines it spans, and its canonical flat
/// fields (empty ones left out).
pub struct Row {
    pub line: u64,
    pub lines: u64,
    pub fields: BTreeMap<String, String>,
}

pub enum RowError {
    /// This row is unusable; the rest of the file still flows. `raw` is the row as in
    /// the file (its first [`MAX_ROW_BYTES`] at most).
    Row {
        line: u64,
        lines: u64,
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

/// One physical line: up to [`MAX_ROW_BYTES`] of its bytes, its true length, and the
/// line break that ended it (`\n`, `\r\n`, a lone `\r`, or none at the end of the file).
struct Line {
    no: u64,
    bytes: Vec<u8>,
    len: u64,
    term: &'static [u8],
}

/// Physical lines, bounded; lines handed back (after a runaway quote) come first.
struct Lines<R> {
    inner: R,
    next_no: u64,
    pending: VecDeque<Line>,
}

impl<R: BufRead> Lines<R> {
    fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        if let Some(l) = self.pending.pop_front() {
            return Ok(Some(l));
        }
        let mut bytes = Vec::new();
        let mut len = 0u64;
        let term: &'static [u8];
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                if len == 0 {
                    return Ok(None);
                }
                term = b"";
                break;
            }
            let end = buf.iter().position(|&c| c == b'\n' || c == b'\r');
            let take = end.unwrap_or(buf.len());
            let room = MAX_ROW_BYTES.saturating_sub(bytes.len()).min(take);
            bytes.extend_from_slice(&buf[..room]);
            len += take as u64;
            match end {
                Some(i) => {
                    let cr = buf[i] == b'\r';
                    self.inner.consume(i + 1);
                    term = if cr {
                        if self.inner.fill_buf()?.first() == Some(&b'\n') {
                            self.inner.consume(1);
                            b"\r\n"
                        } else {
                            b"\r"
                        }
                    } else {
                        b"\n"
                    };
                    break;
                }
                None => self.inner.consume(take),
            }
        }
        let no = self.next_no;
        self.next_no += 1;
        Ok(Some(Line {
            no,
            bytes,
            len,
            term,
        }))
    }
}

/// The CSV quoting states (as the `csv` crate reads: a quote opens a field only at its
/// start, `""` inside quotes is one quote, text after a closing quote is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Q {
    Start,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

/// The fields of a record being read.
#[derive(Default)]
struct Fields {
    data: Vec<u8>,
    ends: Vec<usize>,
    /// Bytes of the field in progress.
    len: usize,
    /// The field in progress holds a line break.
    spanning: bool,
    /// A field holding a line break grew past [`MAX_FIELD_BYTES`].
    runaway: bool,
}

impl Fields {
    fn push(&mut self, c: u8) {
        self.data.push(c);
        self.len += 1;
    }

    fn end_field(&mut self) {
        self.ends.push(self.data.len());
        self.check();
        self.len = 0;
        self.spanning = false;
    }

    fn check(&mut self) {
        if self.spanning && self.len > MAX_FIELD_BYTES {
            self.runaway = true;
        }
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..end])
    }

    fn count(&self) -> usize {
        self.ends.len()
    }

    fn scan(&mut self, st: &mut Q, delimiter: u8, bytes: &[u8]) {
        for &c in bytes {
            *st = match *st {
                Q::Start if c == b'"' => Q::Quoted,
                Q::Start | Q::Unquoted if c == delimiter => {
                    self.end_field();
                    Q::Start
                }
                Q::Start | Q::Unquoted => {
                    self.push(c);
                    Q::Unquoted
                }
                Q::Quoted if c == b'"' => Q::QuoteInQuoted,
                Q::Quoted => {
                    self.push(c);
                    Q::Quoted
                }
                Q::QuoteInQuoted if c == b'"' => {
                    self.push(c);
                    Q::Quoted
                }
                Q::QuoteInQuoted if c == delimiter => {
                    self.end_field();
                    Q::Start
                }
                Q::QuoteInQuoted => {
                    self.push(c);
                    Q::Unquoted
                }
            };
        }
        self.check();
    }
}

/// One record out of the lines: its fields, or why it is a bad row.
enum Rec {
    Fields {
        line: u64,
        lines: u64,
        fields: Fields,
        raw: Vec<u8>,
    },
    Bad {
        line: u64,
        reason: String,
        raw: Vec<u8>,
    },
}

/// Splits lines into records. A record is one line, or several when a quoted field
/// holds line breaks. A record spanning lines that cannot be a row — the file ends
/// inside its quote, the quoted field grows past [`MAX_FIELD_BYTES`], the record past
/// [`MAX_ROW_BYTES`], or it has the wrong number of fields — is a **runaway quote**: its
/// first line alone is a bad row, and the lines after it are read again as rows.
struct Records<R> {
    lines: Lines<R>,
    delimiter: u8,
    /// Blank lines passed since the last `take_blank`.
    blank: u64,
    /// The first line still to be read is the file's first (its BOM is dropped).
    at_start: bool,
}

impl<R: BufRead> Records<R> {
    fn next_record(&mut self, width: Option<usize>) -> std::io::Result<Option<Rec>> {
        let mut first = loop {
            match self.lines.next_line()? {
                None => return Ok(None),
                Some(mut l) => {
                    if std::mem::take(&mut self.at_start) && l.bytes.starts_with(b"\xEF\xBB\xBF") {
                        l.bytes.drain(..3);
                        l.len -= 3;
                    }
                    if l.len == 0 {
                        self.blank += 1;
                        continue;
                    }
                    break l;
                }
            }
        };
        if first.len > MAX_ROW_BYTES as u64 {
            return Ok(Some(Rec::Bad {
                line: first.no,
                reason: format!(
                    "the row is {} bytes long (at most {MAX_ROW_BYTES}); it was read past, not kept",
                    first.len
                ),
                raw: std::mem::take(&mut first.bytes),
            }));
        }
        let mut st = Q::Start;
        let mut fields = Fields::default();
        fields.scan(&mut st, self.delimiter, &first.bytes);
        if st != Q::Quoted {
            fields.end_field();
            return Ok(Some(Rec::Fields {
                line: first.no,
                lines: 1,
                fields,
                raw: first.bytes,
            }));
        }
        // A quoted field goes on past the line break.
        let mut total = first.len as usize;
        let mut held = vec![first];
        loop {
            let Some(next) = self.lines.next_line()? else {
                return Ok(Some(self.runaway(held, "the file ends inside it".into())));
            };
            let term = held.last().expect("held").term;
            for &c in term {
                fields.push(c);
            }
            fields.spanning = true;
            total += term.len() + next.len as usize;
            if total > MAX_ROW_BYTES {
                held.push(next);
                return Ok(Some(self.runaway(
                    held,
                    format!("the row would grow past {MAX_ROW_BYTES} bytes"),
                )));
            }
            fields.scan(&mut st, self.delimiter, &next.bytes);
            held.push(next);
            if fields.runaway {
                return Ok(Some(self.runaway(
                    held,
                    format!("the quoted field grows past {MAX_FIELD_BYTES} bytes"),
                )));
            }
            if st == Q::Quoted {
                continue;
            }
            fields.end_field();
            if fields.runaway {
                return Ok(Some(self.runaway(
                    held,
                    format!("the quoted field grows past {MAX_FIELD_BYTES} bytes"),
                )));
            }
            if let Some(w) = width.filter(|w| *w != fields.count()) {
                let why = format!(
                    "the {} lines it would join have {} fields; the header has {w}",
                    held.len(),
                    fields.count()
                );
                return Ok(Some(self.runaway(held, why)));
            }
            let mut raw = Vec::with_capacity(total);
            let lines = held.len() as u64;
            let line = held[0].no;
            for (i, l) in held.iter().enumerate() {
                raw.extend_from_slice(&l.bytes);
                if i + 1 < held.len() {
                    raw.extend_from_slice(l.term);
                }
            }
            return Ok(Some(Rec::Fields {
                line,
                lines,
                fields,
                raw,
            }));
        }
    }

    fn runaway(&mut self, mut held: Vec<Line>, why: String) -> Rec {
        let first = held.remove(0);
        for l in held.into_iter().rev() {
            self.lines.pending.push_front(l);
        }
        Rec::Bad {
            line: first.no,
            reason: format!(
                "runaway quote: a quoted field opened on this line is not closed on it, and {why}; this line is a bad row of its own and the next line is read as a new row"
            ),
            raw: first.bytes,
        }
    }
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

/// Reads one export's rows as canonical flat fields.
pub struct RowReader<R: BufRead> {
    records: Records<R>,
    index: Vec<Bound>,
    width: usize,
    encoding: crate::Encoding,
    date_formats: &'static [&'static str],
    entity: Entity,
}

impl<R: BufRead> RowReader<R> {
    pub fn new(
        input: R,
        delimiter: u8,
        encoding: Encoding,
        columns: ColumnMap,
        date_formats: &'static [&'static str],
        entity: Entity,
    ) -> Result<Self, String> {
        let mut records = Records {
            lines: Lines {
                inner: input,
                next_no: 1,
                pending: VecDeque::new(),
            },
            delimiter,
            blank: 0,
            at_start: true,
        };
        let header = match records.next_record(None) {
            Err(e) => return Err(format!("cannot read the header line: {e}")),
            Ok(None) => return Err("the file is empty: it has no header line".into()),
            Ok(Some(Rec::Bad { line, reason, .. })) => {
                return Err(format!(
                    "cannot read the header line (line {line}): {reason}"
                ))
            }
            Ok(Some(Rec::Fields { fields, .. })) => fields,
        };
        let mut names = Vec::with_capacity(header.count());
        for i in 0..header.count() {
            let h = header.get(i).unwrap_or_default();
            let name = decode(h, encoding).map_err(|_| {
                "the header line is not UTF-8 (set encoding = \"windows-1252\")".to_string()
            })?;
            names.push(name.trim().to_string());
        }
        let index = bind(&columns, &names, entity)?;
        records.blank = 0;
        Ok(RowReader {
            records,
            index,
            width: names.len(),
            encoding,
            date_formats,
            entity,
        })
    }

    /// Blank lines passed since the last call (they are no rows; counted for the
    /// file's line total).
    pub fn take_blank_lines(&mut self) -> u64 {
        std::mem::take(&mut self.records.blank)
    }

    /// Physical lines read into rows so far (the header, blank lines and rows).
    pub fn lines_consumed(&self) -> u64 {
        let l = &self.records.lines;
        (l.next_no - 1).saturating_sub(l.pending.len() as u64)
    }

    /// Skip `n` data rows (resuming a file part-way): exactly the rows `next_row` gave.
    pub fn skip_rows(&mut self, n: u64) -> Result<(), RowError> {
        for _ in 0..n {
            match self.records.next_record(Some(self.width)) {
                Ok(Some(_)) => {}
                Ok(None) => return Err(RowError::File(
                    "the file is shorter than the checkpoint says; was it changed in the inbox?"
                        .into(),
                )),
                Err(e) => return Err(RowError::File(format!("reading: {e}"))),
            }
        }
        self.records.blank = 0;
        Ok(())
    }

    /// The next data row, `None` at the end of the file.
    pub fn next_row(&mut self) -> Option<Result<Row, RowError>> {
        let (line, lines, record, raw) = match self.records.next_record(Some(self.width)) {
            Ok(None) => return None,
            Err(e) => {
                return Some(Err(RowError::File(format!(
                    "reading after line {}: {e}",
                    self.records.lines.next_no - 1
                ))))
            }
            Ok(Some(Rec::Bad { line, reason, raw })) => {
                return Some(Err(RowError::Row {
                    line,
                    lines: 1,
                    reason,
                    raw,
                }))
            }
            Ok(Some(Rec::Fields {
                line,
                lines,
                fields,
                raw,
            })) => (line, lines, fields, raw),
        };
        let bad = |reason: String| {
            Some(Err(RowError::Row {
                line,
                lines,
                reason,
                raw: raw.clone(),
            }))
        };
        if record.count() != self.width {
            return bad(format!(
                "has {} fields; the header has {}",
                record.count(),
                self.width
            ));
        }
        let mut fields = BTreeMap::new();
        for b in &self.index {
            let header = &b.header;
            let bytes = record.get(b.column).unwrap_or_default();
            if bytes.len() > MAX_FIELD_BYTES {
                return bad(format!(
                    "column `{header}` is {} bytes (at most {MAX_FIELD_BYTES})",
                    bytes.len()
                ));
            }
            let Ok(text) = decode(bytes, self.encoding) else {
                return bad(format!("column `{header}` is not valid UTF-8 (set encoding = \"windows-1252\" or \"auto\")"));
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
                            return bad(format!(
                                "column `{header}`: `{text}` is not one of {known:?}"
                            ));
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
                            return bad(format!("column `{header}`: `{text}` has no day before it"))
                        }
                    },
                    Some(d) => d.format("%Y-%m-%d").to_string(),
                    None => {
                        return bad(format!(
                            "column `{header}`: `{text}` is not a date (expected {:?})",
                            self.date_formats
                        ))
                    }
                }
            } else if let Some(Transform::Add(n)) = b.transform {
                match text.parse::<i64>().ok().and_then(|v| v.checked_add(n)) {
                    Some(v) => v.to_string(),
                    None => {
                        return bad(format!("column `{header}`: `{text}` is not a whole number"))
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
                return bad(format!("{field} (column `{header}`) is empty"));
            }
        }
        Some(Ok(Row {
            line,
            lines,
            fields,
        }))
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

    type Read = (u64, Result<BTreeMap<String, String>, String>);

    fn all(text: &[u8]) -> Vec<Read> {
        let mut r = reader(text, "generic", Entity::Attendance, Encoding::Auto);
        let mut out = Vec::new();
        while let Some(x) = r.next_row() {
            out.push(match x {
                Ok(row) => (row.line, Ok(row.fields)),
                Err(RowError::Row { line, reason, .. }) => (line, Err(reason)),
                Err(RowError::File(e)) => panic!("{e}"),
            });
        }
        out
    }

    fn lines_of(rows: &[Read]) -> Vec<(u64, bool)> {
        rows.iter().map(|(l, r)| (*l, r.is_ok())).collect()
    }

    #[test]
    fn a_runaway_quote_is_its_first_line_alone_and_the_lines_after_it_are_rows_again() {
        // The file ends inside the quote.
        let rows = all(b"school_id,student_id,date,code\n1,S1,2024-09-03,\"A\n1,S2,2024-09-03,B\n1,S3,2024-09-03,C\n");
        assert_eq!(lines_of(&rows), [(2, false), (3, true), (4, true)]);
        assert!(rows[0].1.as_ref().unwrap_err().contains("runaway quote"));
        // The quote closes on a later line but the joined record has the wrong width.
        let rows = all(b"school_id,student_id,date,code\n1,S1,2024-09-03,\"A\n1,S2,2024-09-03,\"B\",extra\n1,S3,2024-09-03,C\n");
        assert_eq!(lines_of(&rows), [(2, false), (3, false), (4, true)]);
        // The quoted field grows past 4 KiB: stopped there, not at the end of the file.
        let mut text = b"school_id,student_id,date,code\n1,S0,2024-09-03,\"A\n".to_vec();
        for i in 1..2_000 {
            text.extend_from_slice(format!("1,S{i},2024-09-03,B\n").as_bytes());
        }
        let rows = all(&text);
        assert_eq!(rows.len(), 2_000);
        assert!(rows[0].1.is_err() && rows[1..].iter().all(|r| r.1.is_ok()));
        // A legitimate quoted line break is one row of two lines; line numbers after it
        // count both, and blank lines.
        let rows = all(b"school_id,student_id,date,code,reason\n1,S1,2024-09-03,A,\"two\nlines\"\n\n1,S2,2024-09-03,A,x\n");
        assert_eq!(lines_of(&rows), [(2, true), (5, true)]);
        assert_eq!(rows[0].1.as_ref().unwrap()["reason"], "two\nlines");
    }

    #[test]
    fn a_line_over_the_row_cap_is_read_past_not_kept() {
        let mut text = b"school_id,student_id,date,code\n1,S1,2024-09-03,A".to_vec();
        text.extend(std::iter::repeat_n(b'x', 3 * MAX_ROW_BYTES));
        text.extend_from_slice(b"\n1,S2,2024-09-03,A\n");
        let mut r = reader(&text, "generic", Entity::Attendance, Encoding::Auto);
        match r.next_row() {
            Some(Err(RowError::Row {
                line, raw, reason, ..
            })) => {
                assert_eq!(line, 2);
                assert_eq!(raw.len(), MAX_ROW_BYTES);
                assert!(reason.contains("bytes long"), "{reason}");
            }
            _ => panic!("expected a bad row"),
        }
        assert_eq!(r.next_row().unwrap().ok().unwrap().line, 3);
        assert_eq!(r.lines_consumed(), 3);
    }

    #[test]
    fn good_files_split_into_the_same_fields_as_the_csv_crate() {
        let inputs: [&[u8]; 5] = [
            b"a,b,c\n1,\"x,y\",3\r\n4,\"q\"\"uote\",6\n7,,9",
            b"a,b,c\r\n\"multi\r\nline\",\"\",x\r\n",
            b"a,b,c\n\"ab\"cd,e f,\"\"\"\"\n",
            b"a,b,c\n1,2,3\n\n\n4,5,6\n",
            b"a,b,c\n1,2 \" 3,4\n",
        ];
        for input in inputs {
            let mut ours = Records {
                lines: Lines {
                    inner: input,
                    next_no: 1,
                    pending: VecDeque::new(),
                },
                delimiter: b',',
                blank: 0,
                at_start: true,
            };
            let mut theirs = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(input);
            for rec in theirs.byte_records() {
                let rec = rec.unwrap();
                let Some(Rec::Fields { fields, .. }) = ours.next_record(Some(3)).unwrap() else {
                    panic!("{:?}", String::from_utf8_lossy(input));
                };
                let got: Vec<&[u8]> = (0..fields.count())
                    .map(|i| fields.get(i).unwrap())
                    .collect();
                let want: Vec<&[u8]> = rec.iter().collect();
                assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
            }
            assert!(ours.next_record(Some(3)).unwrap().is_none());
        }
    }
}
