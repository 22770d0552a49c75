//! Streaming rows out of one export: bytes → physical lines → records (quoted fields
//! may hold line breaks) → (UTF-8 or Windows-1252) fields → the canonical flat fields of
//! the raw envelope, one row at a time, with its line number. Nothing here holds more
//! than one row of at most [`MAX_ROW_BYTES`] (a line longer than that is read past, not
//! buffered), and every physical line ends in exactly one row, bad or good, or is blank.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, Seek, SeekFrom};

use chrono::NaiveDate;
use rollcall_connector_kit::Entity;
use rollcall_kafka::limits::MAX_RAW_PAYLOAD_BYTES;

use crate::presets::{required, ColumnMap, Other, Transform, DATE_FIELDS};
use crate::Encoding;

/// Every canonical flat field a preset may map.
pub const FIELDS: [&str; 20] = [
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
    "exit_withdraw_type",
    "subgroups",
    "state_student_id",
    "calendar_code",
    "events",
    "is_instructional",
    "operation",
];

/// Longest mapped field accepted, in bytes.
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

/// One physical line: up to [`MAX_ROW_BYTES`] of its bytes, its true length, the line
/// break that ended it (`\n`, `\r\n`, a lone `\r`, or none at the end of the file), where
/// it starts and ends in the file, and how many quote characters it holds (all of it,
/// kept or not).
struct Line {
    no: u64,
    bytes: Vec<u8>,
    len: u64,
    term: &'static [u8],
    /// Offset of its first byte in the file.
    at: u64,
    /// Offset just past its line break.
    end: u64,
    quotes: u64,
}

/// Physical lines, bounded; lines handed back (after a runaway quote) come first.
struct Lines<R> {
    inner: R,
    next_no: u64,
    pending: VecDeque<Line>,
    /// Offset in the file of the next byte `inner` gives.
    pos: u64,
}

impl<R: BufRead + Seek> Lines<R> {
    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.pos += n as u64;
    }

    /// Goes back (or on) to `offset`, where line `no` starts; lines handed back are
    /// dropped (they are read again from the file).
    fn seek_to(&mut self, offset: u64, no: u64) -> std::io::Result<()> {
        self.inner.seek(SeekFrom::Start(offset))?;
        self.pos = offset;
        self.pending.clear();
        self.next_no = no;
        Ok(())
    }

    fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        if let Some(l) = self.pending.pop_front() {
            return Ok(Some(l));
        }
        let at = self.pos;
        let mut bytes = Vec::new();
        let mut len = 0u64;
        let mut quotes = 0u64;
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
            quotes += buf[..take].iter().filter(|&&c| c == b'"').count() as u64;
            len += take as u64;
            match end {
                Some(i) => {
                    let cr = buf[i] == b'\r';
                    self.consume(i + 1);
                    term = if cr {
                        if self.inner.fill_buf()?.first() == Some(&b'\n') {
                            self.consume(1);
                            b"\r\n"
                        } else {
                            b"\r"
                        }
                    } else {
                        b"\n"
                    };
                    break;
                }
                None => self.consume(take),
            }
        }
        let no = self.next_no;
        self.next_no += 1;
        Ok(Some(Line {
            no,
            bytes,
            len,
            term,
            at,
            end: self.pos,
            quotes,
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

/// What one byte does to the record being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// It is field content.
    Push,
    /// It ends the field in progress (a delimiter).
    End,
    /// It is quoting, not content.
    Quote,
}

/// One step of the quoting states. [`Fields::scan`] and the look-ahead past the row cap
/// ([`Records::read_on`]) both read through this, so they agree on every byte.
fn step(st: Q, c: u8, delimiter: u8) -> (Q, Act) {
    match st {
        Q::Start if c == b'"' => (Q::Quoted, Act::Quote),
        Q::Start | Q::Unquoted if c == delimiter => (Q::Start, Act::End),
        Q::Start | Q::Unquoted => (Q::Unquoted, Act::Push),
        Q::Quoted if c == b'"' => (Q::QuoteInQuoted, Act::Quote),
        Q::Quoted => (Q::Quoted, Act::Push),
        Q::QuoteInQuoted if c == b'"' => (Q::Quoted, Act::Push),
        Q::QuoteInQuoted if c == delimiter => (Q::Start, Act::End),
        Q::QuoteInQuoted => (Q::Unquoted, Act::Push),
    }
}

/// The fields of a record being read.
#[derive(Default)]
struct Fields {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Fields {
    fn push(&mut self, c: u8) {
        self.data.push(c);
    }

    fn end_field(&mut self) {
        self.ends.push(self.data.len());
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
            let (next, act) = step(*st, c, delimiter);
            match act {
                Act::Push => self.push(c),
                Act::End => self.end_field(),
                Act::Quote => {}
            }
            *st = next;
        }
    }
}

/// One record out of the lines: its fields, or why it is a bad row (`lines`: the
/// physical lines it covers).
enum Rec {
    Fields {
        line: u64,
        lines: u64,
        fields: Fields,
        raw: Vec<u8>,
    },
    Bad {
        line: u64,
        lines: u64,
        reason: String,
        raw: Vec<u8>,
    },
}

/// How a record too big to hold ends, read on in the file without being kept.
struct ReadOn {
    /// The quote closed and the record ended (at a line break outside quotes, or at the
    /// end of the file); `false`: the file ended inside the quote.
    closed: bool,
    /// The record's fields, all of them.
    fields: usize,
    /// Line breaks inside quotes passed after the point reading went on from.
    breaks: u64,
    /// Bytes read on, its final line break included.
    bytes: u64,
}

/// Splits lines into records. A record is one line, or several when a quoted field
/// holds line breaks. A record spanning lines that cannot be a row — the file ends
/// inside its quote, or the lines it joins have the wrong number of fields — is a
/// **runaway quote**: its first line alone is a bad row, and the lines after it are read
/// again as rows. A record that is a row but longer than [`MAX_ROW_BYTES`] is read on in
/// the file without being kept, to its end: it is one bad row covering all its lines,
/// and reading goes on after it. Only what is still a runaway then goes back in the file
/// (to the line after its first).
struct Records<R> {
    lines: Lines<R>,
    delimiter: u8,
    /// Blank lines passed since the last `take_blank`.
    blank: u64,
    /// The first line still to be read is the file's first (its BOM is dropped).
    at_start: bool,
}

impl<R: BufRead + Seek> Records<R> {
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
            if first.quotes == 0 {
                // No quote anywhere on it: one line, whatever else it holds.
                return Ok(Some(Rec::Bad {
                    line: first.no,
                    lines: 1,
                    reason: too_long(first.len),
                    raw: std::mem::take(&mut first.bytes),
                }));
            }
            // Only its start is held: how its quotes end is read from the file.
            let (at, no) = (first.at, first.no);
            return self.past_cap(first, Vec::new(), at, no, Q::Start, 0, width);
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
        let mut held: Vec<Line> = Vec::new();
        loop {
            let Some(next) = self.lines.next_line()? else {
                return Ok(Some(self.runaway(
                    first,
                    held,
                    "the file ends inside it".into(),
                )));
            };
            let term = held.last().unwrap_or(&first).term;
            total += term.len() + next.len as usize;
            if total > MAX_ROW_BYTES {
                // Too big to hold: read on from this line without keeping it.
                let (at, no) = (next.at, next.no);
                let ended = fields.count();
                return self.past_cap(first, held, at, no, st, ended, width);
            }
            for &c in term {
                fields.push(c);
            }
            fields.scan(&mut st, self.delimiter, &next.bytes);
            held.push(next);
            if st == Q::Quoted {
                continue;
            }
            fields.end_field();
            if let Some(w) = width.filter(|w| *w != fields.count()) {
                let why = format!(
                    "the {} lines it would join have {} fields; the header has {w}",
                    held.len() + 1,
                    fields.count()
                );
                return Ok(Some(self.runaway(first, held, why)));
            }
            let lines = held.len() as u64 + 1;
            let line = first.no;
            let raw = join(&first, &held);
            return Ok(Some(Rec::Fields {
                line,
                lines,
                fields,
                raw,
            }));
        }
    }

    /// A record longer than [`MAX_ROW_BYTES`]: `first` and `held` are what is kept of
    /// it; reading goes on at `at` (line `no`) in quoting state `st` with `ended` fields
    /// ended, streaming, to the record's end. A record that ends with the header's width
    /// is one bad row of all its lines; otherwise it is a runaway quote.
    #[allow(clippy::too_many_arguments)]
    fn past_cap(
        &mut self,
        first: Line,
        held: Vec<Line>,
        at: u64,
        no: u64,
        st: Q,
        ended: usize,
        width: Option<usize>,
    ) -> std::io::Result<Option<Rec>> {
        self.lines.seek_to(at, no)?;
        let on = self.read_on(st, ended)?;
        let last = no + on.breaks;
        // One line over the cap is a bad row of its own, whatever its width.
        if on.closed && (last == first.no || width.is_none_or(|w| w == on.fields)) {
            self.lines.next_no = last + 1;
            let lines = last - first.no + 1;
            let bytes = at - first.at + on.bytes;
            let reason = if lines == 1 {
                too_long(first.len)
            } else {
                format!(
                    "the row spans {lines} lines (a quoted field holds line breaks) and is {bytes} bytes long (at most {MAX_ROW_BYTES}); it was read past, not kept"
                )
            };
            let mut raw = join(&first, &held);
            raw.truncate(MAX_ROW_BYTES);
            return Ok(Some(Rec::Bad {
                line: first.no,
                lines,
                reason,
                raw,
            }));
        }
        let why = if !on.closed {
            format!("the file ends inside it (read on past {MAX_ROW_BYTES} bytes, to the end)")
        } else {
            format!(
                "the {} lines it would join have {} fields; the header has {}",
                last - first.no + 1,
                on.fields,
                width.unwrap_or_default()
            )
        };
        // Back to the line after the first: every one of them is read as a row again.
        let (end, next) = (first.end, first.no + 1);
        self.lines.seek_to(end, next)?;
        Ok(Some(self.runaway(first, Vec::new(), why)))
    }

    /// Reads on from the current position in quoting state `st`, keeping nothing, to
    /// where the record ends: a line break outside quotes (consumed), or the end of the
    /// file. Through [`step`], as [`Fields::scan`] reads.
    fn read_on(&mut self, mut st: Q, mut ended: usize) -> std::io::Result<ReadOn> {
        let mut on = ReadOn {
            closed: false,
            fields: 0,
            breaks: 0,
            bytes: 0,
        };
        let mut after_cr = false;
        loop {
            let buf = self.lines.inner.fill_buf()?;
            if buf.is_empty() {
                on.closed = st != Q::Quoted;
                on.fields = ended + 1;
                return Ok(on);
            }
            let mut used = 0;
            let mut end: Option<u8> = None;
            for &c in buf {
                used += 1;
                if std::mem::take(&mut after_cr) && c == b'\n' {
                    // The second half of a quoted `\r\n`.
                    continue;
                }
                if c == b'\n' || c == b'\r' {
                    if st == Q::Quoted {
                        on.breaks += 1;
                        after_cr = c == b'\r';
                        continue;
                    }
                    end = Some(c);
                    break;
                }
                let (next, act) = step(st, c, self.delimiter);
                if act == Act::End {
                    ended += 1;
                }
                st = next;
            }
            self.lines.consume(used);
            on.bytes += used as u64;
            if let Some(c) = end {
                if c == b'\r' && self.lines.inner.fill_buf()?.first() == Some(&b'\n') {
                    self.lines.consume(1);
                    on.bytes += 1;
                }
                on.closed = true;
                on.fields = ended + 1;
                return Ok(on);
            }
        }
    }

    fn runaway(&mut self, first: Line, held: Vec<Line>, why: String) -> Rec {
        for l in held.into_iter().rev() {
            self.lines.pending.push_front(l);
        }
        Rec::Bad {
            line: first.no,
            lines: 1,
            reason: format!(
                "runaway quote: a quoted field opened on this line is not closed on it, and {why}; this line is a bad row of its own and the next line is read as a new row"
            ),
            raw: first.bytes,
        }
    }
}

fn too_long(len: u64) -> String {
    format!("the row is {len} bytes long (at most {MAX_ROW_BYTES}); it was read past, not kept")
}

/// A record's lines as in the file (the line breaks between them included).
fn join(first: &Line, rest: &[Line]) -> Vec<u8> {
    let mut raw = first.bytes.clone();
    let mut term = first.term;
    for l in rest {
        raw.extend_from_slice(term);
        raw.extend_from_slice(&l.bytes);
        term = l.term;
    }
    raw
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

impl<R: BufRead + Seek> RowReader<R> {
    pub fn new(
        mut input: R,
        delimiter: u8,
        encoding: Encoding,
        columns: ColumnMap,
        date_formats: &'static [&'static str],
        entity: Entity,
    ) -> Result<Self, String> {
        let pos = input
            .stream_position()
            .map_err(|e| format!("cannot read the file: {e}"))?;
        let mut records = Records {
            lines: Lines {
                inner: input,
                next_no: 1,
                pending: VecDeque::new(),
                pos,
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
            Ok(Some(Rec::Bad {
                line,
                lines,
                reason,
                raw,
            })) => {
                return Some(Err(RowError::Row {
                    line,
                    lines,
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

    type Text<'a> = std::io::Cursor<&'a [u8]>;

    fn reader<'a>(text: &'a [u8], p: &str, entity: Entity, enc: Encoding) -> RowReader<Text<'a>> {
        let p = preset(p).unwrap();
        RowReader::new(
            std::io::Cursor::new(text),
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
            std::io::Cursor::new(&b"school_id,date,code\n"[..]),
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
        // The file ends inside a quote 2,000 lines (40 KB) later.
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

    /// A quoted `notes` field of `n` lines (`line` each), closed, then a good row.
    fn huge_quoted(n: usize, line: &str, eol: &str) -> Vec<u8> {
        let mut text = format!("school_id,student_id,date,code,reason{eol}1,S1,2024-09-03,A,\"");
        for _ in 0..n {
            text.push_str(line);
            text.push_str(eol);
        }
        text.push_str(&format!("\"{eol}1,S2,2024-09-03,A,ok{eol}"));
        text.into_bytes()
    }

    #[test]
    fn a_quoted_field_past_the_row_cap_that_closes_is_one_bad_row_of_all_its_lines() {
        for eol in ["\n", "\r\n", "\r"] {
            // 40,000 lines inside the quote (~1 MB), each of them shaped like a row.
            let text = huge_quoted(40_000, "1,S9,2024-09-03,A,x", eol);
            let mut r = reader(&text, "generic", Entity::Attendance, Encoding::Auto);
            match r.next_row() {
                Some(Err(RowError::Row {
                    line,
                    lines,
                    reason,
                    raw,
                })) => {
                    assert_eq!((line, lines), (2, 40_001), "{eol:?}");
                    assert!(reason.contains("spans 40001 lines"), "{reason}");
                    assert!(raw.len() <= MAX_ROW_BYTES);
                    assert!(raw.starts_with(b"1,S1,2024-09-03,A,\"1,S9"));
                }
                Some(Ok(row)) => panic!("{eol:?}: a row at line {}", row.line),
                Some(Err(e)) => panic!("{eol:?}: {e}"),
                None => panic!("{eol:?}: no row"),
            }
            assert_eq!(r.lines_consumed(), 40_002);
            let row = r.next_row().unwrap().ok().unwrap();
            assert_eq!(
                (row.line, row.fields["student_id"].as_str()),
                (40_003, "S2")
            );
            assert!(r.next_row().is_none(), "{eol:?}");
            assert_eq!(r.lines_consumed(), 40_003);
        }
        // One quoted line over the cap, its quote closed on the next line.
        let mut text = b"school_id,student_id,date,code,reason\n1,S1,2024-09-03,A,\"".to_vec();
        text.extend(std::iter::repeat_n(b'x', 2 * MAX_ROW_BYTES));
        text.extend_from_slice(b"\n\"\"y\"\n1,S2,2024-09-03,A,ok\n");
        let rows = all(&text);
        assert_eq!(lines_of(&rows), [(2, false), (4, true)]);
        assert!(rows[0].1.as_ref().unwrap_err().contains("spans 2 lines"));
    }

    #[test]
    fn a_runaway_quote_past_the_row_cap_still_gives_back_the_lines_after_it() {
        // Never closed: 20,000 lines (~460 KB) after it, read again as rows.
        let mut text = b"school_id,student_id,date,code\n1,S0,2024-09-03,\"A\n".to_vec();
        for i in 1..20_000 {
            text.extend_from_slice(format!("1,S{i},2024-09-03,B\n").as_bytes());
        }
        let rows = all(&text);
        assert_eq!(rows.len(), 20_000);
        assert!(rows[0].1.as_ref().unwrap_err().contains("runaway quote"));
        assert!(rows[1..].iter().all(|r| r.1.is_ok()));
        assert_eq!(rows[19_999].0, 20_001);
        // Closed far away, but the lines it would join are no row: the same.
        let mut text = b"school_id,student_id,date,code\n1,S0,2024-09-03,\"A\n".to_vec();
        for i in 1..20_000 {
            text.extend_from_slice(format!("1,S{i},2024-09-03,B\n").as_bytes());
        }
        text.extend_from_slice(b"\"1\",S20000,2024-09-03,C\n1,S20001,2024-09-03,D\n");
        let rows = all(&text);
        assert_eq!(rows.len(), 20_002);
        let why = rows[0].1.as_ref().unwrap_err();
        assert!(
            why.contains("runaway quote") && why.contains("fields"),
            "{why}"
        );
        assert!(rows[1..].iter().all(|r| r.1.is_ok()));
        assert_eq!(rows[20_001].0, 20_003);
    }

    #[test]
    fn a_quoted_field_of_several_lines_under_the_row_cap_is_a_row() {
        // 10 KB of notes over 500 lines, in an unmapped column.
        let mut text = b"school_id,student_id,date,code,notes\n1,S1,2024-09-03,A,\"".to_vec();
        for _ in 0..500 {
            text.extend_from_slice(b"1,S9,2024-09-03,x\n");
        }
        text.extend_from_slice(b"\"\n1,S2,2024-09-03,A,ok\n");
        let rows = all(&text);
        assert_eq!(lines_of(&rows), [(2, true), (503, true)]);
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
                    inner: std::io::Cursor::new(input),
                    next_no: 1,
                    pending: VecDeque::new(),
                    pos: 0,
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
