//! The simulated world: districts, schools, students, and one change log of every
//! record's life (created, corrected, re-keyed, re-sent, deleted), each change stamped
//! with the simulated day it becomes visible and a global change version.

use std::collections::HashMap;
use std::fmt;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

use crate::config::{DistrictSpec, SimConfig};

/// Index of a record in [`World::records`].
pub type RecordId = u32;

/// The simulated world of one school year. Immutable once generated; replay it day by
/// day with [`World::visible_through`].
#[derive(Debug, Clone)]
pub struct World {
    pub config: SimConfig,
    pub districts: Vec<District>,
    pub schools: Vec<School>,
    pub students: Vec<Student>,
    /// Every record (calendar date, enrollment, attendance event) ever created.
    pub records: Vec<Record>,
    /// Every change, ordered by change version (`log[i].cv == i + 1`) and so also by
    /// the day it becomes visible.
    pub log: Vec<Change>,
    /// The first simulated day (1 August before the school year); calendars and the
    /// initial enrollments are visible from it.
    pub first_day: NaiveDate,
    /// The last simulated day: every change is visible by then (about two months
    /// after the last instructional day, so late corrections land).
    pub last_day: NaiveDate,
}

#[derive(Debug, Clone, Serialize)]
pub struct District {
    pub spec: DistrictSpec,
    /// Indexes into [`World::schools`].
    pub schools: Vec<u32>,
    /// The first and last instructional day of the final calendar.
    pub first_instructional_day: NaiveDate,
    pub last_instructional_day: NaiveDate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SchoolLevel {
    Elementary,
    Middle,
    High,
}

impl SchoolLevel {
    /// The grades the school serves.
    pub fn grades(self) -> &'static [Grade] {
        use Grade::*;
        match self {
            SchoolLevel::Elementary => &[K, G1, G2, G3, G4, G5],
            SchoolLevel::Middle => &[G6, G7, G8],
            SchoolLevel::High => &[G9, G10, G11, G12],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct School {
    /// Index into [`World::districts`].
    pub district: u16,
    /// Ed-Fi schoolId: `lea_id * 1000 + n` (n from 1).
    pub school_id: u64,
    /// Short local school code (`n` zero-padded), used by CSV presets that do not
    /// carry the Ed-Fi id (Aeries `SC`, Skyward `Entity`).
    pub local_code: String,
    pub name: String,
    pub level: SchoolLevel,
}

#[derive(Debug, Clone, Serialize)]
pub struct Student {
    /// Index into [`World::districts`].
    pub district: u16,
    /// The district's student number (Ed-Fi studentUniqueId). Unique within a district;
    /// the same number can occur in another district (identity is district + student).
    pub unique_id: String,
    pub first_name: String,
    pub last_name: String,
    pub grade: Grade,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Grade {
    K,
    G1,
    G2,
    G3,
    G4,
    G5,
    G6,
    G7,
    G8,
    G9,
    G10,
    G11,
    G12,
}

impl Grade {
    /// 0 for kindergarten, else the grade number.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The Ed-Fi GradeLevelDescriptor code value.
    pub fn edfi_name(self) -> &'static str {
        [
            "Kindergarten",
            "First grade",
            "Second grade",
            "Third grade",
            "Fourth grade",
            "Fifth grade",
            "Sixth grade",
            "Seventh grade",
            "Eighth grade",
            "Ninth grade",
            "Tenth grade",
            "Eleventh grade",
            "Twelfth grade",
        ][self as usize]
    }
}

/// The three Ed-Fi resources the simulator publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Resource {
    CalendarDates,
    StudentSchoolAssociations,
    StudentSchoolAttendanceEvents,
}

impl Resource {
    pub const ALL: [Resource; 3] = [
        Resource::CalendarDates,
        Resource::StudentSchoolAssociations,
        Resource::StudentSchoolAttendanceEvents,
    ];

    /// The resource's path segment under `/data/v3/ed-fi/`.
    pub fn path(self) -> &'static str {
        match self {
            Resource::CalendarDates => "calendarDates",
            Resource::StudentSchoolAssociations => "studentSchoolAssociations",
            Resource::StudentSchoolAttendanceEvents => "studentSchoolAttendanceEvents",
        }
    }

    pub fn from_path(path: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.path() == path)
    }
}

/// One record's identity over its life (its Ed-Fi `id` stays while its key may change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub resource: Resource,
    /// Index into [`World::districts`].
    pub district: u16,
    /// Set on the extra broken records asked for by `malformed_rate`; expected metrics
    /// exclude them and a correct pipeline dead-letters them.
    pub malformed: Option<Malformation>,
}

/// How a malformed record is broken when it is served or exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Malformation {
    /// The date is not a real date (the 30th of February of the record's year).
    BadDate,
    /// The attendance code is not in any code map (`ZZ` / a district-namespace descriptor).
    UnknownCode,
    /// The student reference / student number is missing (empty).
    MissingStudent,
}

/// One change of one record, visible from `visible_on`.
#[derive(Debug, Clone)]
pub struct Change {
    /// The global, gap-free change version (1-based; `log[cv - 1]`).
    pub cv: u64,
    pub visible_on: NaiveDate,
    pub record: RecordId,
    pub op: Op,
    /// Log index of the previous change of the same record.
    pub prev: Option<u32>,
    /// Change version of the next change of the same record.
    pub next_cv: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Create or replace the record's state (a key change when the key differs from
    /// the previous state's).
    Upsert(Fact),
    Delete,
}

/// A record's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fact {
    CalendarDate(CalendarDateFact),
    Enrollment(EnrollmentFact),
    Attendance(AttendanceFact),
}

/// A school's calendar date (Ed-Fi CalendarDate with one calendar event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalendarDateFact {
    pub school: u32,
    pub date: NaiveDate,
    pub event: CalendarEvent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum CalendarEvent {
    InstructionalDay,
    Holiday,
    TeacherOnlyDay,
    WeatherDay,
    MakeUpDay,
}

impl CalendarEvent {
    /// The Ed-Fi CalendarEventDescriptor code value.
    pub fn edfi_name(self) -> &'static str {
        match self {
            CalendarEvent::InstructionalDay => "Instructional day",
            CalendarEvent::Holiday => "Holiday",
            CalendarEvent::TeacherOnlyDay => "Teacher only day",
            CalendarEvent::WeatherDay => "Weather day",
            CalendarEvent::MakeUpDay => "Make-up day",
        }
    }

    /// Instructional = "Instructional day" or "Make-up day" (Ed-Fi's rule).
    pub fn is_instructional(self) -> bool {
        matches!(
            self,
            CalendarEvent::InstructionalDay | CalendarEvent::MakeUpDay
        )
    }
}

/// A student's enrollment at a school (Ed-Fi StudentSchoolAssociation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnrollmentFact {
    pub school: u32,
    pub student: u32,
    pub entry_date: NaiveDate,
    /// The last enrolled day (inclusive), when the student has left.
    pub exit_date: Option<NaiveDate>,
    pub grade: Grade,
    pub entry_type: EntryType,
    pub exit_type: Option<ExitType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EntryType {
    NextYearSchool,
    NewToEducationSystem,
    Transfer,
}

impl EntryType {
    pub fn edfi_name(self) -> &'static str {
        match self {
            EntryType::NextYearSchool => "Next year school",
            EntryType::NewToEducationSystem => "New to education system",
            EntryType::Transfer => "Transfer",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ExitType {
    Transferred,
    Withdrawn,
}

impl ExitType {
    pub fn edfi_name(self) -> &'static str {
        match self {
            ExitType::Transferred => "Transferred",
            ExitType::Withdrawn => "Withdrawn",
        }
    }
}

/// A school-day attendance event. The simulator makes at most one per student-day
/// (so CSV exports can key rows by school, student and date).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttendanceFact {
    pub school: u32,
    pub student: u32,
    pub date: NaiveDate,
    pub category: Category,
    /// Share of the day missed, in thousandths (1000 = full day, 500 = half day; 0 for
    /// present, tardy, early departure and in-school suspension).
    pub absent_milli: u16,
    /// Minutes of the 360-minute school day missed (late arrival, early departure,
    /// half or full day).
    pub minutes_missed: u16,
    pub reason: Reason,
}

/// The simulator's own attendance categories (the truth a code map must recover).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Present,
    Tardy,
    EarlyDeparture,
    ExcusedAbsence,
    UnexcusedAbsence,
    OutOfSchoolSuspension,
    InSchoolSuspension,
}

impl Category {
    /// The descriptor URI an Ed-Fi feed carries. Suspensions are state extensions.
    pub fn edfi_descriptor(self) -> &'static str {
        match self {
            Category::Present => "uri://ed-fi.org/AttendanceEventCategoryDescriptor#In Attendance",
            Category::Tardy => "uri://ed-fi.org/AttendanceEventCategoryDescriptor#Tardy",
            Category::EarlyDeparture => {
                "uri://ed-fi.org/AttendanceEventCategoryDescriptor#Early departure"
            }
            Category::ExcusedAbsence => {
                "uri://ed-fi.org/AttendanceEventCategoryDescriptor#Excused Absence"
            }
            Category::UnexcusedAbsence => {
                "uri://ed-fi.org/AttendanceEventCategoryDescriptor#Unexcused Absence"
            }
            Category::OutOfSchoolSuspension => {
                "uri://state.example.gov/AttendanceEventCategoryDescriptor#Out-of-School Suspension"
            }
            Category::InSchoolSuspension => {
                "uri://state.example.gov/AttendanceEventCategoryDescriptor#In-School Suspension"
            }
        }
    }

    /// Whether the event's `absent_milli` counts toward days absent under the default
    /// policy (excused, unexcused, out-of-school suspension).
    pub fn counts_absent(self) -> bool {
        matches!(
            self,
            Category::ExcusedAbsence | Category::UnexcusedAbsence | Category::OutOfSchoolSuspension
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Reason {
    None,
    Illness,
    Medical,
    Family,
    Religious,
    Unverified,
    Truant,
    Suspension,
    Late,
    LeftEarly,
    NoShow,
}

impl Reason {
    /// Free text as a SIS would put in attendanceEventReason / a comment column.
    pub fn text(self) -> &'static str {
        match self {
            Reason::None => "",
            Reason::Illness => "Illness",
            Reason::Medical => "Medical appointment",
            Reason::Family => "Family emergency",
            Reason::Religious => "Religious observance",
            Reason::Unverified => "Absent - no parent contact",
            Reason::Truant => "Truant",
            Reason::Suspension => "Disciplinary action",
            Reason::Late => "Late arrival",
            Reason::LeftEarly => "Signed out by parent",
            Reason::NoShow => "Not in attendance",
        }
    }
}

/// Ed-Fi natural-key values of a fact, as `keyValues` of deletes/keyChanges show them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FactKey {
    CalendarDate {
        school: u32,
        date: NaiveDate,
    },
    Enrollment {
        school: u32,
        student: u32,
        entry_date: NaiveDate,
    },
    Attendance {
        school: u32,
        student: u32,
        date: NaiveDate,
        category: Category,
    },
}

impl Fact {
    pub fn resource(&self) -> Resource {
        match self {
            Fact::CalendarDate(_) => Resource::CalendarDates,
            Fact::Enrollment(_) => Resource::StudentSchoolAssociations,
            Fact::Attendance(_) => Resource::StudentSchoolAttendanceEvents,
        }
    }

    pub fn school(&self) -> u32 {
        match self {
            Fact::CalendarDate(c) => c.school,
            Fact::Enrollment(e) => e.school,
            Fact::Attendance(a) => a.school,
        }
    }

    /// The Ed-Fi natural key (the category is part of an attendance event's key).
    pub fn key(&self) -> FactKey {
        match *self {
            Fact::CalendarDate(c) => FactKey::CalendarDate {
                school: c.school,
                date: c.date,
            },
            Fact::Enrollment(e) => FactKey::Enrollment {
                school: e.school,
                student: e.student,
                entry_date: e.entry_date,
            },
            Fact::Attendance(a) => FactKey::Attendance {
                school: a.school,
                student: a.student,
                date: a.date,
                category: a.category,
            },
        }
    }
}

impl World {
    /// Builds a world from already-ordered changes `(visible_on, record, op)`: assigns
    /// change versions 1.. in that order and links each record's changes. `last_day`
    /// is raised to the last change's day if needed.
    #[allow(clippy::too_many_arguments)]
    pub fn assemble(
        config: SimConfig,
        districts: Vec<District>,
        schools: Vec<School>,
        students: Vec<Student>,
        records: Vec<Record>,
        changes: Vec<(NaiveDate, RecordId, Op)>,
        first_day: NaiveDate,
        last_day: NaiveDate,
    ) -> World {
        let mut last_of: HashMap<RecordId, u32> = HashMap::new();
        let mut log: Vec<Change> = Vec::with_capacity(changes.len());
        for (i, (visible_on, record, op)) in changes.into_iter().enumerate() {
            assert!(
                log.last()
                    .is_none_or(|c: &Change| c.visible_on <= visible_on),
                "changes must be ordered by visible day"
            );
            let prev = last_of.insert(record, i as u32);
            if let Some(pi) = prev {
                log[pi as usize].next_cv = Some(i as u64 + 1);
            }
            log.push(Change {
                cv: i as u64 + 1,
                visible_on,
                record,
                op,
                prev,
                next_cv: None,
            });
        }
        let last_day = log.last().map_or(last_day, |c| c.visible_on.max(last_day));
        World {
            config,
            districts,
            schools,
            students,
            records,
            log,
            first_day,
            last_day,
        }
    }

    /// The newest change version visible at the end of `day` (0 before anything).
    pub fn newest_cv_through(&self, day: NaiveDate) -> u64 {
        self.log.partition_point(|c| c.visible_on <= day) as u64
    }

    /// The world as a reader sees it at the end of simulated day `day`.
    pub fn visible_through(&self, day: NaiveDate) -> View<'_> {
        View {
            world: self,
            day,
            newest_cv: self.newest_cv_through(day),
        }
    }

    /// The world once every change has landed.
    pub fn final_view(&self) -> View<'_> {
        self.visible_through(self.last_day)
    }

    /// The state of the record as written by the change at log index `idx`, if that
    /// change is an upsert.
    pub fn fact_at(&self, idx: usize) -> Option<&Fact> {
        match &self.log[idx].op {
            Op::Upsert(f) => Some(f),
            Op::Delete => None,
        }
    }

    /// The record's previous upsert before log index `idx` (for a delete's key values
    /// and a key change's old key).
    pub fn previous_fact(&self, idx: usize) -> Option<&Fact> {
        let mut p = self.log[idx].prev;
        while let Some(i) = p {
            if let Op::Upsert(f) = &self.log[i as usize].op {
                return Some(f);
            }
            p = self.log[i as usize].prev;
        }
        None
    }

    /// Whether the change at log index `idx` is an upsert whose key differs from the
    /// record's previous state (an Ed-Fi key change).
    pub fn is_key_change(&self, idx: usize) -> bool {
        match (self.fact_at(idx), self.previous_fact(idx)) {
            (Some(new), Some(old)) => new.key() != old.key(),
            _ => false,
        }
    }

    /// The Ed-Fi resource `id` of a record: 32 lowercase hex digits, stable for the
    /// record's life and derived from the seed.
    pub fn edfi_id(&self, record: RecordId) -> String {
        self.edfi_id_display(record).to_string()
    }

    /// [`World::edfi_id`] without allocating: displays the same 32 hex digits.
    pub(crate) fn edfi_id_display(&self, record: RecordId) -> EdfiId {
        let a = crate::rng::mix(self.config.seed ^ 0x6564_6669, u64::from(record));
        let b = crate::rng::mix(a, 0x1d);
        EdfiId(a, b)
    }

    pub fn district_of_school(&self, school: u32) -> &District {
        &self.districts[self.schools[school as usize].district as usize]
    }

    pub fn district_index(&self, id: &str) -> Option<u16> {
        self.districts
            .iter()
            .position(|d| d.spec.id == id)
            .map(|i| i as u16)
    }

    /// Session name of a date ("2024-2025 Fall Semester" before 1 January, else Spring).
    pub fn session_name(&self, date: NaiveDate) -> String {
        self.session_name_display(date).to_string()
    }

    /// [`World::session_name`] without allocating.
    pub(crate) fn session_name_display(&self, date: NaiveDate) -> SessionName {
        let year = self.config.school_year;
        SessionName {
            year,
            fall: date.year() < year,
        }
    }

    /// Counts of changes by kind (for logs and docs).
    pub fn summary(&self) -> WorldSummary {
        let mut s = WorldSummary {
            districts: self.districts.len(),
            schools: self.schools.len(),
            students: self.students.len(),
            records: self.records.len(),
            changes: self.log.len(),
            first_day: Some(self.first_day),
            last_day: Some(self.last_day),
            ..WorldSummary::default()
        };
        for (i, c) in self.log.iter().enumerate() {
            match &c.op {
                Op::Delete => s.deletes += 1,
                Op::Upsert(_) if self.is_key_change(i) => s.key_changes += 1,
                Op::Upsert(f) => {
                    if c.prev.is_some() {
                        s.updates += 1;
                    } else {
                        match f.resource() {
                            Resource::CalendarDates => s.calendar_dates += 1,
                            Resource::StudentSchoolAssociations => s.enrollments += 1,
                            Resource::StudentSchoolAttendanceEvents => s.attendance_events += 1,
                        }
                    }
                }
            }
        }
        s.malformed = self
            .records
            .iter()
            .filter(|r| r.malformed.is_some())
            .count();
        s
    }
}

/// Counts describing a world.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorldSummary {
    pub districts: usize,
    pub schools: usize,
    pub students: usize,
    pub records: usize,
    pub changes: usize,
    pub calendar_dates: usize,
    pub enrollments: usize,
    pub attendance_events: usize,
    /// Upserts of an existing record with the same key (exits, duplicates, calendar changes).
    pub updates: usize,
    pub key_changes: usize,
    pub deletes: usize,
    pub malformed: usize,
    pub first_day: Option<NaiveDate>,
    pub last_day: Option<NaiveDate>,
}

/// The world as seen at the end of one simulated day: every change with
/// `cv <= newest_cv`.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub world: &'a World,
    pub day: NaiveDate,
    pub newest_cv: u64,
}

impl<'a> View<'a> {
    /// Whether the change at log index `idx` is the record's latest change in this view.
    pub fn is_latest(&self, idx: usize) -> bool {
        let c = &self.world.log[idx];
        c.cv <= self.newest_cv && c.next_cv.is_none_or(|n| n > self.newest_cv)
    }

    /// Every record's current state in this view (deleted records are absent), in log
    /// order: `(log index, record id, record, fact)`.
    pub fn current(&self) -> impl Iterator<Item = (usize, RecordId, &'a Record, &'a Fact)> + '_ {
        let world = self.world;
        world.log[..self.newest_cv as usize]
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.is_latest(*i))
            .filter_map(move |(i, c)| match &c.op {
                Op::Upsert(f) => Some((i, c.record, &world.records[c.record as usize], f)),
                Op::Delete => None,
            })
    }

    /// Current well-formed facts only, keyed by record id.
    pub fn current_facts(&self) -> HashMap<RecordId, Fact> {
        self.current()
            .filter(|(_, _, r, _)| r.malformed.is_none())
            .map(|(_, id, _, f)| (id, *f))
            .collect()
    }
}

/// A record's Ed-Fi `id` as [`World::edfi_id_display`] gives it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EdfiId(u64, u64);

impl fmt::Display for EdfiId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.0, self.1)
    }
}

/// A session name as [`World::session_name_display`] gives it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionName {
    year: i32,
    fall: bool,
}

impl fmt::Display for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let y = self.year;
        let term = if self.fall { "Fall" } else { "Spring" };
        write!(f, "{}-{} {} Semester", y - 1, y, term)
    }
}
