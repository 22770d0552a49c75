//! Ed-Fi XML interchange files (the bulk-load format; written for Data Standard 4.x/5.x,
//! tested on the 5.2 samples — 2.x/3.x descriptors written as `<CodeValue>` children are
//! not read):
//! `InterchangeStudentAttendance`, `InterchangeStudentEnrollment`,
//! `InterchangeEducationOrgCalendar`. Streamed one top-level element at a time, so a
//! file of any size is read in bounded memory. Each element rollcall reads becomes the
//! Ed-Fi ODS/API JSON of the same resource (what the Ed-Fi connector publishes), so the
//! normalizer reads both alike and both give the same natural key:
//!
//! | element | resource | entity |
//! | --- | --- | --- |
//! | `StudentSchoolAttendanceEvent` | studentSchoolAttendanceEvents | attendance |
//! | `StudentSectionAttendanceEvent` | studentSectionAttendanceEvents | attendance (the normalizer dead-letters it: rollcall counts daily attendance) |
//! | `StudentSchoolAssociation` | studentSchoolAssociations | enrollment |
//! | `CalendarDate` | calendarDates | calendar |
//! | `Session` | sessions | calendar (used by a derived calendar, see docs/normalization.md) |
//!
//! Other elements (students, grading periods, calendars, education organizations...)
//! are counted and skipped. An element without the identity rollcall keys it by (school
//! and student, or school) is a dead letter with its line number; the file goes on.

use std::io::{BufRead, Read};

use quick_xml::events::Event;
use rollcall_connector_kit::{edfi_natural_key, Entity};
use rollcall_kafka::limits::{truncate_text, MAX_DEAD_LETTER_PAYLOAD_BYTES, MAX_RAW_PAYLOAD_BYTES};
use serde_json::{json, Map, Value};

/// Largest top-level element accepted, in bytes of the file as written (tags, text and
/// entity references before they are resolved, so `&amp;` counts 5): the raw payload cap
/// (`rollcall_kafka::limits`), since a record the connector publishes must be one the
/// normalizer reads. A bigger element is a dead letter; one text run or tag bigger than
/// this is never held in memory whole.
pub const MAX_ELEMENT_BYTES: usize = MAX_RAW_PAYLOAD_BYTES;

/// Deepest nesting accepted inside a top-level element (the element itself is level 1;
/// Ed-Fi's deepest, a section attendance event's school id, is 10). Deeper content is
/// skipped with a counter, not a stack, and the element is a dead letter.
pub const MAX_DEPTH: usize = 64;

/// The top-level elements rollcall reads; every other one is skipped unread.
const READ: [&str; 5] = [
    "StudentSchoolAttendanceEvent",
    "StudentSectionAttendanceEvent",
    "StudentSchoolAssociation",
    "CalendarDate",
    "Session",
];

/// A parsed XML element: name (without namespace prefix), its own text, its children.
/// Never deeper than [`MAX_DEPTH`], so walking it recursively is bounded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The trimmed text at a path of child names; `None` when absent or empty.
    pub fn at(&self, path: &[&str]) -> Option<&str> {
        let mut n = self;
        for p in path {
            n = n.child(p)?;
        }
        Some(n.text.trim()).filter(|t| !t.is_empty())
    }

    /// The element back as (simplified) XML, for dead letters.
    pub fn to_xml(&self) -> String {
        let mut s = String::new();
        self.write_xml(&mut s);
        s
    }

    fn write_xml(&self, out: &mut String) {
        out.push('<');
        out.push_str(&self.name);
        out.push('>');
        out.push_str(&escape(self.text.trim()));
        for c in &self.children {
            c.write_xml(out);
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One top-level element of an interchange.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// An element rollcall reads, as its Ed-Fi API resource.
    Record(Record),
    /// An element rollcall does not read (e.g. `Student`, `GradingPeriod`).
    Skipped { element: String },
    /// An element rollcall reads but cannot key, place or hold (too big, too deep).
    Invalid {
        line: u64,
        element: String,
        reason: String,
        /// The element as XML (what was read of it), at most
        /// `MAX_DEAD_LETTER_PAYLOAD_BYTES`.
        xml: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Line of the element's start tag.
    pub line: u64,
    pub resource: &'static str,
    pub entity: Entity,
    /// The school, and the student for attendance and enrollment: the Kafka key.
    pub school_id: String,
    pub student_id: Option<String>,
    pub natural_key: String,
    /// The Ed-Fi API JSON of the resource.
    pub payload: Value,
}

/// A file-level failure: not XML, not an interchange, cut short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FileError(pub String);

/// What the XML reader is reading now, for the per-event size bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    Unknown,
    Text,
    Markup,
}

/// The file under the XML reader: counts lines and bytes, and bounds every event. A
/// text run longer than [`MAX_ELEMENT_BYTES`] is cut (the rest is skipped up to the next
/// `<` or `&`, and `truncated` says so); a tag, comment or reference that long fails
/// the read (`overflow`), since the reader cannot find its way back into the file.
struct Source<R> {
    inner: R,
    lines: u64,
    consumed: u64,
    event_start: u64,
    kind: EventKind,
    truncated: bool,
    overflow: bool,
}

impl<R: BufRead> Source<R> {
    fn begin_event(&mut self) {
        self.event_start = self.consumed;
        self.kind = EventKind::Unknown;
        self.truncated = false;
    }

    fn advance(&mut self, n: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            let n = n.min(buf.len());
            self.lines += newlines(&buf[..n]);
            self.consumed += n as u64;
            self.inner.consume(n);
        }
    }

    /// Skips text up to the next `<` or `&` (or the end of the file).
    fn skip_text(&mut self) -> std::io::Result<()> {
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            match buf.iter().position(|&c| c == b'<' || c == b'&') {
                Some(i) => {
                    if i > 0 {
                        self.truncated = true;
                    }
                    self.advance(i);
                    return Ok(());
                }
                None => {
                    let n = buf.len();
                    self.truncated = true;
                    self.advance(n);
                }
            }
        }
    }

    /// Skips raw XML until the `depth` elements open at this point are closed. Used
    /// past [`MAX_DEPTH`]: a counter, not a stack, whatever the nesting. `false` when
    /// the file ends first.
    fn skip_elements(&mut self, mut depth: u64) -> std::io::Result<bool> {
        #[derive(Clone, Copy)]
        enum S {
            Text,
            Lt,
            Tag { quote: u8, slash: bool },
            End,
            Bang,
            BangDash,
            Comment(u8),
            CDataHead(u8),
            CData(u8),
            Pi(bool),
            Decl,
        }
        let mut s = S::Text;
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Ok(false);
            }
            let mut used = 0;
            let mut closed = false;
            for &c in buf {
                used += 1;
                s = match s {
                    S::Text if c == b'<' => S::Lt,
                    S::Text => S::Text,
                    S::Lt => match c {
                        b'/' => S::End,
                        b'!' => S::Bang,
                        b'?' => S::Pi(false),
                        _ => S::Tag {
                            quote: 0,
                            slash: false,
                        },
                    },
                    S::End if c == b'>' => {
                        depth -= 1;
                        if depth == 0 {
                            closed = true;
                            break;
                        }
                        S::Text
                    }
                    S::End => S::End,
                    S::Tag { quote, .. } if quote != 0 => S::Tag {
                        quote: if c == quote { 0 } else { quote },
                        slash: false,
                    },
                    S::Tag { slash, .. } => match c {
                        b'"' | b'\'' => S::Tag {
                            quote: c,
                            slash: false,
                        },
                        b'>' => {
                            if !slash {
                                depth += 1;
                            }
                            S::Text
                        }
                        _ => S::Tag {
                            quote: 0,
                            slash: c == b'/',
                        },
                    },
                    S::Bang => match c {
                        b'-' => S::BangDash,
                        b'[' => S::CDataHead(0),
                        b'>' => S::Text,
                        _ => S::Decl,
                    },
                    S::BangDash if c == b'-' => S::Comment(0),
                    S::BangDash => S::Decl,
                    S::Comment(n) => match c {
                        b'-' => S::Comment((n + 1).min(2)),
                        b'>' if n == 2 => S::Text,
                        _ => S::Comment(0),
                    },
                    // `CDATA[` after `<![`
                    S::CDataHead(n) if n >= 5 => S::CData(0),
                    S::CDataHead(n) => S::CDataHead(n + 1),
                    S::CData(n) => match c {
                        b']' => S::CData((n + 1).min(2)),
                        b'>' if n == 2 => S::Text,
                        _ => S::CData(0),
                    },
                    S::Pi(q) if q && c == b'>' => S::Text,
                    S::Pi(_) => S::Pi(c == b'?'),
                    S::Decl if c == b'>' => S::Text,
                    S::Decl => S::Decl,
                };
            }
            self.advance(used);
            if closed {
                return Ok(true);
            }
        }
    }
}

impl<R: BufRead> Read for Source<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let buf = self.fill_buf()?;
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Source<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.kind == EventKind::Unknown {
            self.kind = match self.inner.fill_buf()?.first() {
                None => return Ok(&[]),
                Some(b'<' | b'&') => EventKind::Markup,
                Some(_) => EventKind::Text,
            };
        }
        let used = (self.consumed - self.event_start) as usize;
        if used >= MAX_ELEMENT_BYTES {
            if self.kind == EventKind::Markup {
                self.overflow = true;
                return Err(std::io::Error::other(format!(
                    "markup longer than {MAX_ELEMENT_BYTES} bytes"
                )));
            }
            // Text: what was read of it is kept, the rest skipped.
            self.skip_text()?;
            return self.inner.fill_buf();
        }
        let room = MAX_ELEMENT_BYTES - used;
        let buf = self.inner.fill_buf()?;
        Ok(&buf[..buf.len().min(room)])
    }

    fn consume(&mut self, amt: usize) {
        self.advance(amt)
    }
}

fn newlines(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

/// One top-level element as read: a tree for the elements rollcall reads (`None` for
/// the ones it skips), or the reason it cannot be held.
struct Element {
    line: u64,
    name: String,
    node: Option<Node>,
    problem: Option<String>,
}

/// Streams the top-level elements of one interchange file, in bounded memory and
/// without recursion on the file's nesting: an element is at most
/// [`MAX_ELEMENT_BYTES`] of the file and [`MAX_DEPTH`] levels deep as a tree.
pub struct InterchangeReader<R: BufRead> {
    xml: Option<quick_xml::Reader<Source<R>>>,
    buf: Vec<u8>,
    /// The root element's name, once read.
    root: Option<String>,
    root_qname: String,
    /// Top-level elements read so far (the checkpoint's `rows_done`).
    elements: u64,
    done: bool,
}

fn local(name: &str) -> String {
    match name.rsplit_once(':') {
        Some((_, local)) => local.to_string(),
        None => name.to_string(),
    }
}

/// Closes the open elements of a partly built tree into its top-level node.
fn fold(mut stack: Vec<Node>) -> Node {
    while stack.len() > 1 {
        let n = stack.pop().expect("len > 1");
        stack.last_mut().expect("len > 0").children.push(n);
    }
    stack.pop().unwrap_or_default()
}

impl<R: BufRead> InterchangeReader<R> {
    pub fn new(inner: R) -> Self {
        InterchangeReader {
            xml: Some(quick_xml::Reader::from_reader(Source {
                inner,
                lines: 0,
                consumed: 0,
                event_start: 0,
                kind: EventKind::Unknown,
                truncated: false,
                overflow: false,
            })),
            buf: Vec::with_capacity(4096),
            root: None,
            root_qname: String::new(),
            elements: 0,
            done: false,
        }
    }

    fn src(&self) -> &Source<R> {
        self.xml.as_ref().expect("reader present").get_ref()
    }

    /// The root element (e.g. `InterchangeStudentAttendance`), once the first element
    /// has been read.
    pub fn root(&self) -> Option<&str> {
        self.root.as_deref()
    }

    /// Lines of the file read so far.
    pub fn lines_read(&self) -> u64 {
        self.src().lines
    }

    pub fn elements_read(&self) -> u64 {
        self.elements
    }

    fn line(&self) -> u64 {
        self.src().lines + 1
    }

    fn err(&self, what: impl std::fmt::Display) -> FileError {
        FileError(format!(
            "not a readable Ed-Fi interchange (line {}): {what}",
            self.line()
        ))
    }

    /// A new XML reader over the same file, after raw skipping: the old one's stack of
    /// open names no longer matches the file (the root's end is checked here instead).
    fn reopen(&mut self) {
        let src = self.xml.take().expect("reader present").into_inner();
        let mut xml = quick_xml::Reader::from_reader(src);
        xml.config_mut().allow_unmatched_ends = true;
        self.xml = Some(xml);
    }

    /// Skips `n` top-level elements (resuming after a checkpoint).
    pub fn skip(&mut self, n: u64) -> Result<(), FileError> {
        while self.elements < n {
            if self.next_element()?.is_none() {
                return Err(FileError(format!(
                    "the file has fewer elements ({}) than the checkpoint says were read ({n}); was it changed in the inbox?",
                    self.elements
                )));
            }
        }
        Ok(())
    }

    /// The next top-level element as an [`Item`]; `None` at the end of the file.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Item>, FileError> {
        Ok(self.next_element()?.map(|el| match (el.problem, el.node) {
            (Some(reason), node) => Item::Invalid {
                line: el.line,
                element: el.name,
                reason,
                xml: truncate_text(
                    &node.map(|n| n.to_xml()).unwrap_or_default(),
                    MAX_DEAD_LETTER_PAYLOAD_BYTES,
                ),
            },
            (None, Some(node)) => to_item(el.line, node),
            (None, None) => Item::Skipped { element: el.name },
        }))
    }

    /// Reads one whole top-level element: into a tree when rollcall reads it, else
    /// only past it.
    fn next_element(&mut self) -> Result<Option<Element>, FileError> {
        if self.done {
            return Ok(None);
        }
        // The open elements of the current top-level element, when it is built (not
        // skipped) and not yet too big; `depth` counts every open level either way.
        let mut stack: Vec<Node> = Vec::new();
        let mut depth = 0usize;
        let mut build = false;
        let mut name = String::new();
        let mut start_line = 0;
        let mut start_at = 0u64;
        let mut problem: Option<String> = None;
        loop {
            self.buf.clear();
            let xml = self.xml.as_mut().expect("reader present");
            xml.get_mut().begin_event();
            let ev = match xml.read_event_into(&mut self.buf) {
                Ok(ev) => ev,
                Err(e) => {
                    let src = xml.get_ref();
                    let line = src.lines + 1;
                    self.done = true;
                    return Err(FileError(if src.overflow {
                        format!("not a readable Ed-Fi interchange (line {line}): a tag, comment or entity reference longer than {MAX_ELEMENT_BYTES} bytes; the file cannot be read past it")
                    } else {
                        format!("not well-formed XML near line {line}: {e}")
                    }));
                }
            };
            match ev {
                Event::Start(e) => {
                    let qname = e.name().as_ref().to_string();
                    let tag = local(&qname);
                    if self.root.is_none() {
                        if !tag.starts_with("Interchange") {
                            return Err(self.err(format!(
                                "the root element is <{tag}>, not an Ed-Fi <Interchange...> element"
                            )));
                        }
                        self.root = Some(tag);
                        self.root_qname = qname;
                        continue;
                    }
                    depth += 1;
                    if depth == 1 {
                        start_line = self.line();
                        start_at = self.src().event_start;
                        build = READ.contains(&tag.as_str());
                        name = tag.clone();
                    }
                    if depth > MAX_DEPTH {
                        // Past the cap: skip the rest of the element by counting.
                        let xml = self.xml.as_mut().expect("reader present");
                        let closed = xml.get_mut().skip_elements(depth as u64);
                        match closed {
                            Ok(true) => {}
                            Ok(false) => {
                                self.done = true;
                                return Err(self.err(
                                    "the file ends inside an element (cut short while copying?)",
                                ));
                            }
                            Err(e) => {
                                self.done = true;
                                return Err(self.err(format!("reading: {e}")));
                            }
                        }
                        self.reopen();
                        self.elements += 1;
                        let problem = build.then(|| {
                            format!("{name} at line {start_line} nests deeper than {MAX_DEPTH} elements; rollcall does not read it")
                        });
                        return Ok(Some(Element {
                            line: start_line,
                            node: build.then(|| fold(std::mem::take(&mut stack))),
                            name,
                            problem,
                        }));
                    }
                    if build && problem.is_none() {
                        stack.push(Node {
                            name: tag,
                            ..Node::default()
                        });
                    }
                }
                Event::Empty(e) => {
                    let tag = local(e.name().as_ref());
                    if self.root.is_none() {
                        return Err(self.err(format!("the root element <{tag}/> is empty")));
                    }
                    let node = Node {
                        name: tag,
                        ..Node::default()
                    };
                    if depth == 0 {
                        self.elements += 1;
                        let read = READ.contains(&node.name.as_str());
                        return Ok(Some(Element {
                            line: self.line(),
                            name: node.name.clone(),
                            node: read.then_some(node),
                            problem: None,
                        }));
                    }
                    if build && problem.is_none() {
                        stack.last_mut().expect("open").children.push(node);
                    }
                }
                Event::End(e) => {
                    if depth == 0 {
                        // The root's end.
                        if e.name().as_ref() != self.root_qname.as_str() {
                            let found = e.name().as_ref().to_string();
                            self.done = true;
                            return Err(FileError(format!(
                                "not well-formed XML near line {}: expected </{}>, found </{found}>",
                                self.line(),
                                self.root_qname
                            )));
                        }
                        self.done = true;
                        self.after_root()?;
                        return Ok(None);
                    }
                    depth -= 1;
                    if build && problem.is_none() && depth > 0 {
                        let node = stack.pop().expect("open");
                        stack.last_mut().expect("open").children.push(node);
                    }
                    if depth == 0 {
                        self.elements += 1;
                        return Ok(Some(Element {
                            line: start_line,
                            node: build.then(|| fold(std::mem::take(&mut stack))),
                            name,
                            problem,
                        }));
                    }
                }
                Event::Text(t) => {
                    if build && problem.is_none() && depth > 0 {
                        append_text(&mut stack, &t.into_inner());
                    }
                }
                Event::CData(t) => {
                    if build && problem.is_none() && depth > 0 {
                        append_text(&mut stack, &t.into_inner());
                    }
                }
                Event::GeneralRef(r) => {
                    if depth > 0 {
                        let resolved = match r.resolve_char_ref() {
                            Ok(Some(c)) => c.to_string(),
                            _ => {
                                let name = r.into_inner();
                                match name.as_ref() {
                                    "amp" => "&".into(),
                                    "lt" => "<".into(),
                                    "gt" => ">".into(),
                                    "quot" => "\"".into(),
                                    "apos" => "'".into(),
                                    other => {
                                        let other = other.to_string();
                                        self.done = true;
                                        return Err(self.err(format!(
                                            "unknown entity &{other}; (Ed-Fi interchanges declare none)"
                                        )));
                                    }
                                }
                            }
                        };
                        if build && problem.is_none() {
                            append_text(&mut stack, &resolved);
                        }
                    }
                }
                Event::Eof => {
                    self.done = true;
                    if self.root.is_none() {
                        return Err(self.err("the file has no root element"));
                    }
                    return Err(
                        self.err("the file ends inside an element (cut short while copying?)")
                    );
                }
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
            }
            // The element's size so far, in bytes of the file.
            if build && depth > 0 && problem.is_none() {
                let src = self.src();
                if src.truncated || src.consumed - start_at > MAX_ELEMENT_BYTES as u64 {
                    problem = Some(format!(
                        "{name} at line {start_line} is larger than {MAX_ELEMENT_BYTES} bytes (tags, text and entity references as written); rollcall does not read it"
                    ));
                }
            }
        }
    }
}

impl<R: BufRead> InterchangeReader<R> {
    /// After the root's end: only whitespace, comments and processing instructions may
    /// follow. Anything else (a second root, an element, text) refuses the rest of the
    /// file, with its line: nothing of it is read into rows.
    fn after_root(&mut self) -> Result<(), FileError> {
        loop {
            self.buf.clear();
            let xml = self.xml.as_mut().expect("reader present");
            xml.get_mut().begin_event();
            let line = xml.get_ref().lines + 1;
            let what = match xml.read_event_into(&mut self.buf) {
                Ok(Event::Eof) => return Ok(()),
                Ok(Event::Comment(_) | Event::PI(_)) => continue,
                Ok(Event::Text(t)) => {
                    if t.bytes().all(|b| b.is_ascii_whitespace()) && !xml.get_ref().truncated {
                        continue;
                    }
                    "text".to_string()
                }
                Ok(Event::Start(e) | Event::Empty(e)) => {
                    let tag = local(e.name().as_ref());
                    if tag.starts_with("Interchange") {
                        format!("a second root element <{tag}> (two interchanges in one file? drop each in a file of its own)")
                    } else {
                        format!("an element <{tag}>")
                    }
                }
                Ok(Event::Decl(_)) => {
                    "an XML declaration (two documents in one file? drop each in a file of its own)"
                        .to_string()
                }
                Ok(Event::End(e)) => {
                    format!("an end tag </{}>", local(e.name().as_ref()))
                }
                Ok(Event::CData(_)) => "a CDATA section".to_string(),
                Ok(Event::GeneralRef(_)) => "an entity reference".to_string(),
                Ok(Event::DocType(_)) => "a DOCTYPE".to_string(),
                Err(e) => format!("content that is not XML ({e})"),
            };
            return Err(FileError(format!(
                "not a readable Ed-Fi interchange (line {line}): {what} after the end of the root element </{}>; only whitespace, comments and processing instructions may follow it, so the rest of the file is not read",
                self.root_qname
            )));
        }
    }
}

/// Adds text to the innermost open element.
fn append_text(stack: &mut [Node], text: &str) {
    if let Some(top) = stack.last_mut() {
        top.text.push_str(text);
    }
}

/// `2021-2022` (interchange SchoolYearType) or `2022` → 2022, the year the school year
/// ends (the API's `schoolYear`).
pub fn school_year(text: &str) -> Option<i64> {
    let t = text.trim();
    match t.split_once('-') {
        Some((a, b)) => {
            let (a, b): (i64, i64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            (b == a + 1).then_some(b)
        }
        None => t.parse().ok(),
    }
}

/// An id as the API would type it: a number when it is all digits (school ids), else text.
fn id(text: &str) -> Value {
    match text.parse::<i64>() {
        Ok(n) if !text.starts_with('0') || text == "0" => Value::from(n),
        _ => Value::from(text),
    }
}

fn year_value(text: Option<&str>) -> Option<Value> {
    text.map(|t| school_year(t).map(Value::from).unwrap_or_else(|| t.into()))
}

fn number(text: Option<&str>) -> Option<Value> {
    text.and_then(|t| t.parse::<f64>().ok()).map(Value::from)
}

/// Inserts `v` under `k` when present.
fn put(m: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(k.to_string(), v);
    }
}

fn text(v: Option<&str>) -> Option<Value> {
    v.map(Value::from)
}

const SCHOOL: &[&str] = &["SchoolReference", "SchoolIdentity", "SchoolId"];
const STUDENT: &[&str] = &["StudentReference", "StudentIdentity", "StudentUniqueId"];

fn to_item(line: u64, node: Node) -> Item {
    let invalid = |node: &Node, reason: String| Item::Invalid {
        line,
        element: node.name.clone(),
        reason,
        xml: node.to_xml(),
    };
    let need = |node: &Node, path: &[&str]| -> Result<String, String> {
        node.at(path).map(str::to_string).ok_or_else(|| {
            format!(
                "{} at line {line} has no {}; rollcall keys it by that",
                node.name,
                path.join("/")
            )
        })
    };
    let built = match node.name.as_str() {
        "StudentSchoolAttendanceEvent" | "StudentSectionAttendanceEvent" => {
            attendance(&node, line, &need)
        }
        "StudentSchoolAssociation" => enrollment(&node, line, &need),
        "CalendarDate" => calendar_date(&node, line),
        "Session" => session(&node, line, &need),
        _ => return Item::Skipped { element: node.name },
    };
    match built {
        Ok(r) => Item::Record(r),
        Err(reason) => invalid(&node, reason),
    }
}

type Need<'a> = &'a dyn Fn(&Node, &[&str]) -> Result<String, String>;

fn attendance(node: &Node, line: u64, need: Need) -> Result<Record, String> {
    // Data Standard 4+ wraps the event's own fields in <AttendanceEvent>; without the
    // wrapper they are read from the element itself.
    let ev = node.child("AttendanceEvent").unwrap_or(node);
    let student = need(node, STUDENT)?;
    let section = node.child("SectionReference");
    if section.is_none() && node.name == "StudentSectionAttendanceEvent" {
        // Without it, it would pass for a school (daily) event of the same student.
        return Err(format!(
            "{} at line {line} has no SectionReference; a section attendance event is keyed by its section",
            node.name
        ));
    }
    let (school, session) = match section {
        None => (
            need(node, SCHOOL)?,
            node.child("SessionReference")
                .and_then(|s| s.child("SessionIdentity")),
        ),
        Some(sec) => {
            let offering = sec
                .child("SectionIdentity")
                .and_then(|s| s.child("CourseOfferingReference"))
                .and_then(|c| c.child("CourseOfferingIdentity"));
            let school = offering
                .and_then(|o| o.at(SCHOOL))
                .map(str::to_string)
                .ok_or_else(|| {
                    format!(
                        "{} at line {line} has no school in its SectionReference",
                        node.name
                    )
                })?;
            let session = offering
                .and_then(|o| o.child("SessionReference"))
                .and_then(|s| s.child("SessionIdentity"));
            (school, session)
        }
    };
    let mut doc = Map::new();
    put(
        &mut doc,
        "attendanceEventCategoryDescriptor",
        text(ev.at(&["AttendanceEventCategory"])),
    );
    put(&mut doc, "eventDate", text(ev.at(&["EventDate"])));
    put(
        &mut doc,
        "attendanceEventReason",
        text(ev.at(&["AttendanceEventReason"])),
    );
    put(&mut doc, "eventDuration", number(ev.at(&["EventDuration"])));
    put(
        &mut doc,
        "schoolAttendanceDuration",
        number(node.at(&["SchoolAttendanceDuration"])),
    );
    put(
        &mut doc,
        "educationalEnvironmentDescriptor",
        text(ev.at(&["EducationalEnvironment"])),
    );
    doc.insert(
        "studentReference".into(),
        json!({ "studentUniqueId": student }),
    );
    let mut sess = Map::new();
    if let Some(s) = session {
        put(&mut sess, "schoolId", s.at(SCHOOL).map(id));
        put(&mut sess, "schoolYear", year_value(s.at(&["SchoolYear"])));
        put(&mut sess, "sessionName", text(s.at(&["SessionName"])));
    }
    let resource;
    let mut kv = Map::new();
    kv.insert(
        "attendanceEventCategoryDescriptor".into(),
        doc.get("attendanceEventCategoryDescriptor")
            .cloned()
            .unwrap_or(Value::Null),
    );
    kv.insert(
        "eventDate".into(),
        doc.get("eventDate").cloned().unwrap_or(Value::Null),
    );
    kv.insert("studentUniqueId".into(), Value::from(student.clone()));
    kv.insert(
        "schoolYear".into(),
        sess.get("schoolYear").cloned().unwrap_or(Value::Null),
    );
    kv.insert(
        "sessionName".into(),
        sess.get("sessionName").cloned().unwrap_or(Value::Null),
    );
    match section {
        None => {
            resource = "studentSchoolAttendanceEvents";
            doc.insert("schoolReference".into(), json!({ "schoolId": id(&school) }));
            kv.insert("schoolId".into(), id(&school));
        }
        Some(sec) => {
            resource = "studentSectionAttendanceEvents";
            let ident = sec.child("SectionIdentity");
            let section_id = ident
                .and_then(|s| s.at(&["SectionIdentifier"]))
                .unwrap_or_default();
            let course = ident
                .and_then(|s| s.child("CourseOfferingReference"))
                .and_then(|c| c.at(&["CourseOfferingIdentity", "LocalCourseCode"]))
                .unwrap_or_default();
            let mut r = Map::new();
            r.insert("sectionIdentifier".into(), section_id.into());
            r.insert("localCourseCode".into(), course.into());
            r.insert("schoolId".into(), id(&school));
            for (k, v) in &sess {
                if k != "schoolId" {
                    r.insert(k.clone(), v.clone());
                }
            }
            doc.insert("sectionReference".into(), Value::Object(r));
            kv.insert("schoolId".into(), id(&school));
            kv.insert("sectionIdentifier".into(), section_id.into());
            kv.insert("localCourseCode".into(), course.into());
        }
    }
    if section.is_none() {
        doc.insert("sessionReference".into(), Value::Object(sess));
    }
    Ok(Record {
        line,
        resource,
        entity: Entity::Attendance,
        school_id: school,
        student_id: Some(student),
        natural_key: edfi_natural_key(resource, &kv),
        payload: Value::Object(doc),
    })
}

fn enrollment(node: &Node, line: u64, need: Need) -> Result<Record, String> {
    let student = need(node, STUDENT)?;
    let school = need(node, SCHOOL)?;
    let mut doc = Map::new();
    doc.insert(
        "studentReference".into(),
        json!({ "studentUniqueId": student }),
    );
    doc.insert("schoolReference".into(), json!({ "schoolId": id(&school) }));
    put(&mut doc, "entryDate", text(node.at(&["EntryDate"])));
    put(
        &mut doc,
        "exitWithdrawDate",
        text(node.at(&["ExitWithdrawDate"])),
    );
    // Descriptor elements: as the interchange names them (`EntryGradeLevel`,
    // `ExitWithdrawType`), or with the `Descriptor` suffix the resource uses.
    put(
        &mut doc,
        "entryGradeLevelDescriptor",
        text(
            node.at(&["EntryGradeLevel"])
                .or_else(|| node.at(&["EntryGradeLevelDescriptor"])),
        ),
    );
    put(
        &mut doc,
        "exitWithdrawTypeDescriptor",
        text(
            node.at(&["ExitWithdrawType"])
                .or_else(|| node.at(&["ExitWithdrawTypeDescriptor"])),
        ),
    );
    if let Some(y) = year_value(node.at(&["SchoolYear"])) {
        doc.insert("schoolYearTypeReference".into(), json!({ "schoolYear": y }));
    }
    let mut kv = Map::new();
    kv.insert(
        "entryDate".into(),
        doc.get("entryDate").cloned().unwrap_or(Value::Null),
    );
    kv.insert("schoolId".into(), id(&school));
    kv.insert("studentUniqueId".into(), Value::from(student.clone()));
    let resource = "studentSchoolAssociations";
    Ok(Record {
        line,
        resource,
        entity: Entity::Enrollment,
        school_id: school,
        student_id: Some(student),
        natural_key: edfi_natural_key(resource, &kv),
        payload: Value::Object(doc),
    })
}

fn calendar_date(node: &Node, line: u64) -> Result<Record, String> {
    let cal = node
        .child("CalendarReference")
        .and_then(|c| c.child("CalendarIdentity"));
    let school = cal.and_then(|c| c.at(SCHOOL)).map(str::to_string).ok_or_else(|| {
        format!("CalendarDate at line {line} has no CalendarReference/CalendarIdentity/SchoolReference/SchoolIdentity/SchoolId; rollcall keys it by that")
    })?;
    let mut cref = Map::new();
    put(
        &mut cref,
        "calendarCode",
        cal.and_then(|c| c.at(&["CalendarCode"])).map(Value::from),
    );
    cref.insert("schoolId".into(), id(&school));
    put(
        &mut cref,
        "schoolYear",
        year_value(cal.and_then(|c| c.at(&["SchoolYear"]))),
    );
    let events: Vec<Value> = node
        .children
        .iter()
        .filter(|c| c.name == "CalendarEvent")
        .map(|c| json!({ "calendarEventDescriptor": c.text.trim() }))
        .collect();
    let mut doc = Map::new();
    put(&mut doc, "date", text(node.at(&["Date"])));
    doc.insert("calendarEvents".into(), Value::Array(events));
    let mut kv = Map::new();
    kv.insert(
        "calendarCode".into(),
        cref.get("calendarCode").cloned().unwrap_or(Value::Null),
    );
    kv.insert(
        "date".into(),
        doc.get("date").cloned().unwrap_or(Value::Null),
    );
    kv.insert("schoolId".into(), id(&school));
    kv.insert(
        "schoolYear".into(),
        cref.get("schoolYear").cloned().unwrap_or(Value::Null),
    );
    doc.insert("calendarReference".into(), Value::Object(cref));
    let resource = "calendarDates";
    Ok(Record {
        line,
        resource,
        entity: Entity::Calendar,
        school_id: school,
        student_id: None,
        natural_key: edfi_natural_key(resource, &kv),
        payload: Value::Object(doc),
    })
}

fn session(node: &Node, line: u64, need: Need) -> Result<Record, String> {
    let school = need(node, SCHOOL)?;
    let mut doc = Map::new();
    doc.insert("schoolReference".into(), json!({ "schoolId": id(&school) }));
    put(&mut doc, "sessionName", text(node.at(&["SessionName"])));
    if let Some(y) = year_value(node.at(&["SchoolYear"])) {
        doc.insert("schoolYearTypeReference".into(), json!({ "schoolYear": y }));
    }
    put(&mut doc, "beginDate", text(node.at(&["BeginDate"])));
    put(&mut doc, "endDate", text(node.at(&["EndDate"])));
    put(&mut doc, "termDescriptor", text(node.at(&["Term"])));
    put(
        &mut doc,
        "totalInstructionalDays",
        number(node.at(&["TotalInstructionalDays"])),
    );
    let mut kv = Map::new();
    kv.insert("schoolId".into(), id(&school));
    kv.insert(
        "schoolYear".into(),
        year_value(node.at(&["SchoolYear"])).unwrap_or(Value::Null),
    );
    kv.insert(
        "sessionName".into(),
        doc.get("sessionName").cloned().unwrap_or(Value::Null),
    );
    let resource = "sessions";
    Ok(Record {
        line,
        resource,
        entity: Entity::Calendar,
        school_id: school,
        student_id: None,
        natural_key: edfi_natural_key(resource, &kv),
        payload: Value::Object(doc),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(xml: &str) -> Result<Vec<Item>, FileError> {
        let mut r = InterchangeReader::new(xml.as_bytes());
        let mut out = Vec::new();
        while let Some(i) = r.next()? {
            out.push(i);
        }
        Ok(out)
    }

    const EVENT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<InterchangeStudentAttendance xmlns="http://ed-fi.org/5.2.0">
	<StudentSchoolAttendanceEvent>
		<AttendanceEvent>
			<EventDate>2021-08-31</EventDate>
			<AttendanceEventCategory>uri://ed-fi.org/AttendanceEventCategoryDescriptor#Excused Absence</AttendanceEventCategory>
			<AttendanceEventReason>Absent &amp; excused</AttendanceEventReason>
			<EventDuration>1</EventDuration>
		</AttendanceEvent>
		<StudentReference><StudentIdentity><StudentUniqueId>604822</StudentUniqueId></StudentIdentity></StudentReference>
		<SchoolReference><SchoolIdentity><SchoolId>255901001</SchoolId></SchoolIdentity></SchoolReference>
		<SessionReference>
			<SessionIdentity>
				<SessionName>2021-2022 Fall Semester</SessionName>
				<SchoolYear>2021-2022</SchoolYear>
				<SchoolReference><SchoolIdentity><SchoolId>255901001</SchoolId></SchoolIdentity></SchoolReference>
			</SessionIdentity>
		</SessionReference>
	</StudentSchoolAttendanceEvent>
	<StudentSchoolAttendanceEvent>
		<AttendanceEvent><EventDate>2021-09-01</EventDate></AttendanceEvent>
		<SchoolReference><SchoolIdentity><SchoolId>255901001</SchoolId></SchoolIdentity></SchoolReference>
	</StudentSchoolAttendanceEvent>
	<GradingPeriod><BeginDate>2021-08-23</BeginDate></GradingPeriod>
</InterchangeStudentAttendance>
"#;

    #[test]
    fn an_attendance_event_becomes_the_api_resource_with_the_api_natural_key() {
        let items = read_all(EVENT).unwrap();
        let Item::Record(r) = &items[0] else {
            panic!("{:?}", items[0])
        };
        assert_eq!(r.line, 3);
        assert_eq!(r.entity, Entity::Attendance);
        assert_eq!(r.student_id.as_deref(), Some("604822"));
        assert_eq!(
            r.payload,
            json!({
                "attendanceEventCategoryDescriptor": "uri://ed-fi.org/AttendanceEventCategoryDescriptor#Excused Absence",
                "eventDate": "2021-08-31",
                "attendanceEventReason": "Absent & excused",
                "eventDuration": 1.0,
                "studentReference": {"studentUniqueId": "604822"},
                "schoolReference": {"schoolId": 255901001},
                "sessionReference": {"schoolId": 255901001, "schoolYear": 2022, "sessionName": "2021-2022 Fall Semester"},
            })
        );
        assert_eq!(
            r.natural_key,
            "studentSchoolAttendanceEvents:attendanceEventCategoryDescriptor=uri://ed-fi.org/AttendanceEventCategoryDescriptor#Excused Absence|eventDate=2021-08-31|schoolId=255901001|schoolYear=2022|sessionName=2021-2022 Fall Semester|studentUniqueId=604822"
        );
    }

    #[test]
    fn an_element_without_its_student_is_invalid_with_its_line_and_others_are_skipped() {
        let items = read_all(EVENT).unwrap();
        assert_eq!(items.len(), 3);
        match &items[1] {
            Item::Invalid {
                line,
                element,
                reason,
                xml,
            } => {
                assert_eq!(*line, 20);
                assert_eq!(element, "StudentSchoolAttendanceEvent");
                assert!(
                    reason.contains("StudentReference/StudentIdentity/StudentUniqueId"),
                    "{reason}"
                );
                assert!(xml.contains("<EventDate>2021-09-01</EventDate>"), "{xml}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            items[2],
            Item::Skipped {
                element: "GradingPeriod".into()
            }
        );
    }

    #[test]
    fn resuming_skips_the_elements_already_read() {
        let mut r = InterchangeReader::new(EVENT.as_bytes());
        r.skip(2).unwrap();
        assert!(matches!(r.next().unwrap(), Some(Item::Skipped { .. })));
        assert_eq!(r.next().unwrap(), None);
        let mut r = InterchangeReader::new(EVENT.as_bytes());
        let err = r.skip(4).unwrap_err();
        assert!(err.0.contains("fewer elements (3)"), "{err}");
    }

    const ONE: &str = r#"<InterchangeStudentAttendance xmlns="http://ed-fi.org/5.2.0">
  <StudentSchoolAttendanceEvent>
    <AttendanceEvent><EventDate>2024-09-03</EventDate></AttendanceEvent>
    <StudentReference><StudentIdentity><StudentUniqueId>S1</StudentUniqueId></StudentIdentity></StudentReference>
    <SchoolReference><SchoolIdentity><SchoolId>1</SchoolId></SchoolIdentity></SchoolReference>
  </StudentSchoolAttendanceEvent>
</InterchangeStudentAttendance>
"#;

    /// The items before the file's error, and the error.
    fn read_until_error(xml: &str) -> (Vec<Item>, Option<FileError>) {
        let mut r = InterchangeReader::new(xml.as_bytes());
        let mut out = Vec::new();
        loop {
            match r.next() {
                Ok(Some(i)) => out.push(i),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn anything_but_whitespace_comments_and_pis_after_the_root_refuses_the_rest() {
        // Two interchanges concatenated: the first one's element is read, then the
        // second root refuses the file, naming its line.
        let two = format!("<?xml version=\"1.0\"?>\n{ONE}<?xml version=\"1.0\"?>\n{ONE}");
        let (items, err) = read_until_error(&two);
        assert_eq!(items.len(), 1);
        let err = err.expect("the second root is refused").0;
        assert!(err.contains("line 9"), "{err}");
        assert!(err.contains("XML declaration"), "{err}");
        let (items, err) = read_until_error(&format!("{ONE}{ONE}"));
        assert_eq!(items.len(), 1);
        let err = err.expect("refused").0;
        assert!(
            err.contains("line 8") && err.contains("second root"),
            "{err}"
        );
        // An element or text after the root.
        for tail in [
            "<StudentSchoolAttendanceEvent>trailing junk",
            "<Student/>",
            "junk",
        ] {
            let (items, err) = read_until_error(&format!("{ONE}{tail}"));
            assert_eq!(items.len(), 1, "{tail}");
            let err = err.unwrap_or_else(|| panic!("{tail}: not refused")).0;
            assert!(err.contains("after the end of the root element"), "{err}");
        }
        // Whitespace, comments and processing instructions are fine.
        let (items, err) = read_until_error(&format!("{ONE}\n<!-- end -->\n<?pi x?>\n\t \n"));
        assert_eq!((items.len(), err), (1, None));
    }

    #[test]
    fn a_section_event_without_its_section_is_invalid_not_a_daily_event() {
        let xml = ONE.replace(
            "StudentSchoolAttendanceEvent",
            "StudentSectionAttendanceEvent",
        );
        let items = read_all(&xml).unwrap();
        match &items[0] {
            Item::Invalid {
                line,
                element,
                reason,
                ..
            } => {
                assert_eq!(
                    (*line, element.as_str()),
                    (2, "StudentSectionAttendanceEvent")
                );
                assert!(reason.contains("no SectionReference"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_level_problems_are_errors_not_panics() {
        let e = read_all("<html><body/></html>").unwrap_err();
        assert!(e.0.contains("root element is <html>"), "{e}");
        let e =
            read_all("<InterchangeStudentAttendance><StudentSchoolAttendanceEvent>").unwrap_err();
        assert!(e.0.contains("ends inside an element"), "{e}");
        let e = read_all("<InterchangeStudentAttendance><A></B></InterchangeStudentAttendance>")
            .unwrap_err();
        assert!(e.0.contains("not well-formed"), "{e}");
        assert!(read_all("").is_err());
    }

    #[test]
    fn an_association_exit_withdraw_type_is_read_with_or_without_the_descriptor_suffix() {
        for (grade_el, exit_el) in [
            ("EntryGradeLevel", "ExitWithdrawType"),
            ("EntryGradeLevelDescriptor", "ExitWithdrawTypeDescriptor"),
        ] {
            let xml = format!(
                r#"<InterchangeStudentEnrollment><StudentSchoolAssociation>
    <StudentReference><StudentIdentity><StudentUniqueId>S1</StudentUniqueId></StudentIdentity></StudentReference>
    <SchoolReference><SchoolIdentity><SchoolId>255901001</SchoolId></SchoolIdentity></SchoolReference>
    <EntryDate>2024-08-20</EntryDate><{grade_el}>uri://ed-fi.org/GradeLevelDescriptor#Kindergarten</{grade_el}>
    <ExitWithdrawDate>2024-08-20</ExitWithdrawDate>
    <{exit_el}>uri://ed-fi.org/ExitWithdrawTypeDescriptor#No show</{exit_el}>
  </StudentSchoolAssociation></InterchangeStudentEnrollment>"#
            );
            let items = read_all(&xml).unwrap();
            let [Item::Record(r)] = items.as_slice() else {
                panic!("{items:?}")
            };
            assert_eq!(
                r.payload["exitWithdrawTypeDescriptor"],
                "uri://ed-fi.org/ExitWithdrawTypeDescriptor#No show",
                "{exit_el}"
            );
            assert_eq!(
                r.payload["entryGradeLevelDescriptor"],
                "uri://ed-fi.org/GradeLevelDescriptor#Kindergarten",
                "{grade_el}"
            );
        }
    }

    #[test]
    fn sessions_calendar_dates_and_enrollments_map_to_their_resources() {
        let xml = r#"<InterchangeEducationOrgCalendar>
  <Session><SessionName>2021-2022 Fall Semester</SessionName><SchoolYear>2021-2022</SchoolYear>
    <BeginDate>2021-08-23</BeginDate><EndDate>2021-12-17</EndDate><TotalInstructionalDays>81</TotalInstructionalDays>
    <SchoolReference><SchoolIdentity><SchoolId>255901001</SchoolId></SchoolIdentity></SchoolReference></Session>
  <CalendarDate><Date>2021-08-23</Date>
    <CalendarEvent>uri://ed-fi.org/CalendarEventDescriptor#Instructional day</CalendarEvent>
    <CalendarReference><CalendarIdentity><CalendarCode>2010605675</CalendarCode>
      <SchoolReference><SchoolIdentity><SchoolId>255901107</SchoolId></SchoolIdentity></SchoolReference>
      <SchoolYear>2021-2022</SchoolYear></CalendarIdentity></CalendarReference></CalendarDate>
  <StudentSchoolAssociation>
    <StudentReference><StudentIdentity><StudentUniqueId>604822</StudentUniqueId></StudentIdentity></StudentReference>
    <SchoolReference><SchoolIdentity><SchoolId>255901001</SchoolId></SchoolIdentity></SchoolReference>
    <EntryDate>2021-08-23</EntryDate><EntryGradeLevel>uri://ed-fi.org/GradeLevelDescriptor#Ninth grade</EntryGradeLevel>
    <SchoolYear>2021-2022</SchoolYear></StudentSchoolAssociation>
</InterchangeEducationOrgCalendar>"#;
        let items = read_all(xml).unwrap();
        let recs: Vec<&Record> = items
            .iter()
            .map(|i| match i {
                Item::Record(r) => r,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(recs[0].resource, "sessions");
        assert_eq!(recs[0].payload["beginDate"], "2021-08-23");
        assert_eq!(recs[0].payload["totalInstructionalDays"], 81.0);
        assert_eq!(
            recs[0].payload["schoolYearTypeReference"]["schoolYear"],
            2022
        );
        assert_eq!(recs[1].resource, "calendarDates");
        assert_eq!(recs[1].school_id, "255901107");
        assert_eq!(
            recs[1].payload["calendarEvents"][0]["calendarEventDescriptor"],
            "uri://ed-fi.org/CalendarEventDescriptor#Instructional day"
        );
        assert_eq!(
            recs[1].payload["calendarReference"]["calendarCode"],
            "2010605675"
        );
        assert_eq!(recs[2].entity, Entity::Enrollment);
        assert_eq!(recs[2].payload["entryDate"], "2021-08-23");
        assert_eq!(
            recs[2].natural_key,
            "studentSchoolAssociations:entryDate=2021-08-23|schoolId=255901001|studentUniqueId=604822"
        );
    }

    #[test]
    fn school_years_read_both_spellings() {
        assert_eq!(school_year("2021-2022"), Some(2022));
        assert_eq!(school_year("2022"), Some(2022));
        assert_eq!(school_year("2021-2023"), None);
        assert_eq!(school_year("x"), None);
    }
}
