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

use std::io::BufRead;

use quick_xml::events::Event;
use rollcall_connector_kit::{edfi_natural_key, Entity};
use serde_json::{json, Map, Value};

/// Largest top-level element accepted (bytes of text and names); bigger ones are dead
/// letters, so one runaway element cannot exhaust memory.
pub const MAX_ELEMENT_BYTES: usize = 1 << 20;

/// A parsed XML element: name (without namespace prefix), its own text, its children.
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
    /// An element rollcall reads but cannot key or place.
    Invalid {
        line: u64,
        element: String,
        reason: String,
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

/// Counts the newlines the XML reader consumes, for exact line numbers in dead letters.
struct LineCounting<R> {
    inner: R,
    lines: u64,
}

impl<R: BufRead> std::io::Read for LineCounting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.lines += memchr_count(&buf[..n]);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for LineCounting<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            let n = amt.min(buf.len());
            self.lines += memchr_count(&buf[..n]);
        }
        self.inner.consume(amt)
    }
}

fn memchr_count(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

/// Streams the top-level elements of one interchange file.
pub struct InterchangeReader<R: BufRead> {
    xml: quick_xml::Reader<LineCounting<R>>,
    buf: Vec<u8>,
    /// The root element's name, once read.
    root: Option<String>,
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

impl<R: BufRead> InterchangeReader<R> {
    pub fn new(inner: R) -> Self {
        InterchangeReader {
            xml: quick_xml::Reader::from_reader(LineCounting { inner, lines: 0 }),
            buf: Vec::with_capacity(4096),
            root: None,
            elements: 0,
            done: false,
        }
    }

    /// The root element (e.g. `InterchangeStudentAttendance`), once the first element
    /// has been read.
    pub fn root(&self) -> Option<&str> {
        self.root.as_deref()
    }

    pub fn elements_read(&self) -> u64 {
        self.elements
    }

    fn line(&self) -> u64 {
        self.xml.get_ref().lines + 1
    }

    fn err(&self, what: impl std::fmt::Display) -> FileError {
        FileError(format!(
            "not a readable Ed-Fi interchange (line {}): {what}",
            self.line()
        ))
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
        Ok(self.next_element()?.map(|(line, node, too_big)| {
            if too_big {
                return Item::Invalid {
                    line,
                    element: node.name.clone(),
                    reason: format!(
                        "element {} is larger than {MAX_ELEMENT_BYTES} bytes",
                        node.name
                    ),
                    xml: String::new(),
                };
            }
            to_item(line, node)
        }))
    }

    /// Reads one whole top-level element into a tree.
    fn next_element(&mut self) -> Result<Option<(u64, Node, bool)>, FileError> {
        if self.done {
            return Ok(None);
        }
        let mut stack: Vec<Node> = Vec::new();
        let mut start_line = 0;
        let mut size = 0usize;
        let mut too_big = false;
        loop {
            self.buf.clear();
            let ev = self.xml.read_event_into(&mut self.buf).map_err(|e| {
                FileError(format!(
                    "not well-formed XML near line {}: {e}",
                    self.xml.get_ref().lines + 1
                ))
            })?;
            match ev {
                Event::Start(e) => {
                    let name = local(e.name().as_ref());
                    if self.root.is_none() {
                        if !name.starts_with("Interchange") {
                            return Err(self.err(format!(
                                "the root element is <{name}>, not an Ed-Fi <Interchange...> element"
                            )));
                        }
                        self.root = Some(name);
                        continue;
                    }
                    if stack.is_empty() {
                        start_line = self.line();
                    }
                    size += name.len();
                    too_big |= size > MAX_ELEMENT_BYTES;
                    stack.push(Node {
                        name,
                        ..Node::default()
                    });
                }
                Event::Empty(e) => {
                    let name = local(e.name().as_ref());
                    if self.root.is_none() {
                        return Err(self.err(format!("the root element <{name}/> is empty")));
                    }
                    // Counted like any child (name plus a node's overhead), so a run of
                    // empty elements cannot grow the tree without bound.
                    size += name.len() + std::mem::size_of::<Node>();
                    too_big |= size > MAX_ELEMENT_BYTES;
                    let node = Node {
                        name,
                        ..Node::default()
                    };
                    match stack.last_mut() {
                        Some(parent) => {
                            if !too_big {
                                parent.children.push(node)
                            }
                        }
                        None => {
                            self.elements += 1;
                            return Ok(Some((self.line(), node, false)));
                        }
                    }
                }
                Event::End(_) => {
                    let Some(node) = stack.pop() else {
                        // The root's end.
                        self.done = true;
                        return Ok(None);
                    };
                    match stack.last_mut() {
                        Some(parent) => {
                            if !too_big {
                                parent.children.push(node)
                            }
                        }
                        None => {
                            self.elements += 1;
                            return Ok(Some((start_line, node, too_big)));
                        }
                    }
                }
                Event::Text(t) => append_text(&mut stack, &t.into_inner(), &mut size, &mut too_big),
                Event::CData(t) => {
                    append_text(&mut stack, &t.into_inner(), &mut size, &mut too_big)
                }
                Event::GeneralRef(r) => {
                    if !stack.is_empty() {
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
                                        return Err(FileError(format!(
                                            "not a readable Ed-Fi interchange (line {}): unknown entity &{other}; (Ed-Fi interchanges declare none)",
                                            self.xml.get_ref().lines + 1
                                        )))
                                    }
                                }
                            }
                        };
                        append_text(&mut stack, &resolved, &mut size, &mut too_big);
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
        }
    }
}

/// Adds text to the innermost open element, counting it toward the element's size cap.
fn append_text(stack: &mut [Node], text: &str, size: &mut usize, too_big: &mut bool) {
    if let Some(top) = stack.last_mut() {
        *size += text.len();
        *too_big |= *size > MAX_ELEMENT_BYTES;
        if !*too_big {
            top.text.push_str(text);
        }
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
    put(
        &mut doc,
        "entryGradeLevelDescriptor",
        text(node.at(&["EntryGradeLevel"])),
    );
    put(
        &mut doc,
        "exitWithdrawTypeDescriptor",
        text(node.at(&["ExitWithdrawType"])),
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
