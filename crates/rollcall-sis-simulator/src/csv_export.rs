//! CSV exports of a district as vendor-shaped files (PowerSchool, Infinite Campus,
//! Skyward, Aeries, generic): `attendance_*.csv`, `enrollment_*.csv`, `calendar_*.csv`,
//! each a full school-year-to-date snapshot of what the SIS shows at the end of a
//! simulated day (nightly drops), with each preset's encoding, BOM and line endings.
//! Every column is documented in docs/simulator.md.

use std::path::{Path, PathBuf};

use chrono::{Datelike, Duration, NaiveDate};

use crate::config::CsvPreset;
use crate::model::{
    AttendanceFact, CalendarDateFact, CalendarEvent, Category, EnrollmentFact, EntryType, ExitType,
    Fact, Grade, Malformation, Op, Reason, View, World,
};

/// How a preset's files are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// Windows-1252 instead of UTF-8.
    pub windows_1252: bool,
    /// A UTF-8 byte-order mark opens the file.
    pub bom: bool,
    /// Lines end in CR LF.
    pub crlf: bool,
    /// chrono format of dates.
    pub date_format: &'static str,
}

impl CsvPreset {
    pub fn encoding(self) -> Encoding {
        match self {
            CsvPreset::PowerSchool => Encoding {
                windows_1252: false,
                bom: true,
                crlf: true,
                date_format: "%m/%d/%Y",
            },
            CsvPreset::InfiniteCampus => Encoding {
                windows_1252: false,
                bom: false,
                crlf: false,
                date_format: "%Y-%m-%d",
            },
            CsvPreset::Skyward => Encoding {
                windows_1252: true,
                bom: false,
                crlf: true,
                date_format: "%-m/%-d/%Y",
            },
            CsvPreset::Aeries => Encoding {
                windows_1252: true,
                bom: false,
                crlf: true,
                date_format: "%m/%d/%Y",
            },
            CsvPreset::Generic => Encoding {
                windows_1252: false,
                bom: false,
                crlf: false,
                date_format: "%Y-%m-%d",
            },
        }
    }
}

/// A table before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

/// The three files of one district at the end of one simulated day, encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvExport {
    pub attendance: Vec<u8>,
    pub enrollment: Vec<u8>,
    pub calendar: Vec<u8>,
}

/// Paths written for one drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvFiles {
    pub day: NaiveDate,
    pub attendance: PathBuf,
    pub enrollment: PathBuf,
    pub calendar: PathBuf,
}

/// Everything needed to render one district at one day.
struct Ctx<'a> {
    world: &'a World,
    preset: CsvPreset,
    enc: Encoding,
}

impl Ctx<'_> {
    fn date(&self, d: NaiveDate) -> String {
        d.format(self.enc.date_format).to_string()
    }

    /// The 30th of February of `d`'s year, in the preset's date format.
    fn bad_date(&self, d: NaiveDate) -> String {
        let y = d.year();
        match self.enc.date_format {
            "%Y-%m-%d" => format!("{y}-02-30"),
            "%-m/%-d/%Y" => format!("2/30/{y}"),
            _ => format!("02/30/{y}"),
        }
    }

    fn school_id(&self, s: u32) -> String {
        self.world.schools[s as usize].school_id.to_string()
    }

    fn local(&self, s: u32) -> String {
        self.world.schools[s as usize].local_code.clone()
    }

    fn student_number(&self, s: u32, malformed: Option<Malformation>) -> String {
        if malformed == Some(Malformation::MissingStudent) {
            String::new()
        } else {
            self.world.students[s as usize].unique_id.clone()
        }
    }

    /// A vendor-internal numeric student id (not the identity: use the student number).
    fn internal_id(&self, s: u32) -> String {
        (10_000 + s).to_string()
    }

    fn last_first(&self, s: u32) -> String {
        let st = &self.world.students[s as usize];
        format!("{}, {}", st.last_name, st.first_name)
    }
}

fn grade_two_digit(g: Grade) -> String {
    match g {
        Grade::K => "KG".into(),
        g => format!("{:02}", g.number()),
    }
}

fn minutes_present(a: &AttendanceFact) -> u16 {
    360 - a.minutes_missed
}

fn fraction(milli: u16) -> String {
    match milli {
        1000 => "1".into(),
        500 => "0.5".into(),
        0 => "0".into(),
        m => format!("{}", f64::from(m) / 1000.0),
    }
}

// --- PowerSchool -------------------------------------------------------------------------

fn ps_code(a: &AttendanceFact) -> (&'static str, u32, &'static str, &'static str) {
    // (Att_Code, Attendance_CodeID, Presence_Status_CD, Description)
    let half = a.absent_milli == 500;
    match a.category {
        Category::Present => ("P", 1, "Present", "Present"),
        Category::Tardy => ("T", 2, "Present", "Tardy"),
        Category::EarlyDeparture => ("LE", 3, "Present", "Left Early"),
        Category::ExcusedAbsence if half => ("HE", 6, "Absent", "Half Day Excused"),
        Category::ExcusedAbsence => ("E", 4, "Absent", "Excused Absence"),
        Category::UnexcusedAbsence if half => ("HA", 7, "Absent", "Half Day Unexcused"),
        Category::UnexcusedAbsence => ("A", 5, "Absent", "Unexcused Absence"),
        Category::OutOfSchoolSuspension => ("S", 8, "Absent", "Out of School Suspension"),
        Category::InSchoolSuspension => ("ISS", 9, "Present", "In School Suspension"),
    }
}

fn ps_tables(cx: &Ctx, f: &Facts) -> [Table; 3] {
    let year_id = (cx.world.config.school_year - 1991).to_string();
    let mut att = Table {
        header: vec![
            "ID",
            "SchoolID",
            "StudentID",
            "Student_Number",
            "Att_Date",
            "Att_Mode_Code",
            "Attendance_CodeID",
            "Att_Code",
            "Presence_Status_CD",
            "Code_Description",
            "Total_Minutes",
            "ADA_Value_Code",
            "Att_Comment",
            "YearID",
        ],
        rows: vec![],
    };
    for (rec, a, m) in &f.attendance {
        let (mut code, mut code_id, presence, desc) = ps_code(a);
        if *m == Some(Malformation::UnknownCode) {
            (code, code_id) = ("ZZ", 99);
        }
        att.rows.push(vec![
            (1_000_000 + rec).to_string(),
            cx.school_id(a.school),
            cx.internal_id(a.student),
            cx.student_number(a.student, *m),
            date_or_bad(cx, a.date, *m),
            "ATT_ModeDaily".into(),
            code_id.to_string(),
            code.into(),
            if *m == Some(Malformation::UnknownCode) {
                ""
            } else {
                presence
            }
            .into(),
            if *m == Some(Malformation::UnknownCode) {
                ""
            } else {
                desc
            }
            .into(),
            if a.category.counts_absent() {
                a.minutes_missed
            } else {
                0
            }
            .to_string(),
            fraction(1000 - a.absent_milli),
            a.reason.text().into(),
            year_id.clone(),
        ]);
    }
    let mut enr = Table {
        header: vec![
            "SchoolID",
            "StudentID",
            "Student_Number",
            "LastFirst",
            "First_Name",
            "Last_Name",
            "Grade_Level",
            "EntryDate",
            "ExitDate",
            "EntryCode",
            "ExitCode",
            "Enroll_Status",
            "YearID",
        ],
        rows: vec![],
    };
    for e in &f.enrollments {
        let st = &cx.world.students[e.student as usize];
        // PowerSchool's ExitDate is exclusive: the first day no longer enrolled.
        let exit = e.exit_date.unwrap_or(f.last_day[&e.school]) + Duration::days(1);
        enr.rows.push(vec![
            cx.school_id(e.school),
            cx.internal_id(e.student),
            st.unique_id.clone(),
            cx.last_first(e.student),
            st.first_name.clone(),
            st.last_name.clone(),
            e.grade.number().to_string(),
            cx.date(e.entry_date),
            cx.date(exit),
            match e.entry_type {
                EntryType::NextYearSchool => "R1",
                EntryType::NewToEducationSystem => "E1",
                EntryType::Transfer => "E2",
            }
            .into(),
            match e.exit_type {
                None => "",
                Some(ExitType::Withdrawn) => "W1",
                Some(ExitType::Transferred) => "T1",
            }
            .into(),
            if e.exit_date.is_some() { "2" } else { "0" }.into(),
            year_id.clone(),
        ]);
    }
    let mut cal = Table {
        header: vec![
            "SchoolID",
            "Date_Value",
            "InSession",
            "MembershipValue",
            "Type",
            "Note",
        ],
        rows: vec![],
    };
    for c in &f.calendar {
        let ins = c.event.is_instructional();
        cal.rows.push(vec![
            cx.school_id(c.school),
            cx.date(c.date),
            u8::from(ins).to_string(),
            u8::from(ins).to_string(),
            match c.event {
                CalendarEvent::InstructionalDay => "",
                CalendarEvent::Holiday => "HOL",
                CalendarEvent::TeacherOnlyDay => "INS",
                CalendarEvent::WeatherDay => "WTH",
                CalendarEvent::MakeUpDay => "MKP",
            }
            .into(),
            c.event.edfi_name().into(),
        ]);
    }
    [att, enr, cal]
}

// --- Infinite Campus -----------------------------------------------------------------------

fn ic_code(a: &AttendanceFact) -> (&'static str, &'static str, &'static str, &'static str) {
    // (status, excuse, code, description)
    let half = a.absent_milli == 500;
    match a.category {
        Category::Present => ("P", "", "PR", "Present"),
        Category::Tardy => ("T", "U", "TU", "Tardy Unexcused"),
        Category::EarlyDeparture => ("E", "E", "ERE", "Early Release Excused"),
        Category::ExcusedAbsence if half => ("A", "E", "AEH", "Absent Excused Half Day"),
        Category::ExcusedAbsence => ("A", "E", "AE", "Absent Excused"),
        Category::UnexcusedAbsence if half => ("A", "U", "AUH", "Absent Unexcused Half Day"),
        Category::UnexcusedAbsence => ("A", "U", "AU", "Absent Unexcused"),
        Category::OutOfSchoolSuspension => ("A", "X", "OSS", "Out of School Suspension"),
        Category::InSchoolSuspension => ("P", "X", "ISS", "In School Suspension"),
    }
}

fn ic_tables(cx: &Ctx, f: &Facts) -> [Table; 3] {
    let calendar_id = |s: u32| (cx.world.schools[s as usize].school_id % 100_000).to_string();
    let mut att = Table {
        header: vec![
            "attendanceID",
            "personID",
            "studentNumber",
            "schoolID",
            "calendarID",
            "date",
            "status",
            "excuse",
            "code",
            "description",
            "presentMinutes",
            "absentMinutes",
            "scheduledMinutes",
            "comments",
        ],
        rows: vec![],
    };
    for (rec, a, m) in &f.attendance {
        let (mut status, mut excuse, mut code, mut desc) = ic_code(a);
        if *m == Some(Malformation::UnknownCode) {
            (status, excuse, code, desc) = ("Q", "", "ZZ", "");
        }
        att.rows.push(vec![
            (500_000 + rec).to_string(),
            cx.internal_id(a.student),
            cx.student_number(a.student, *m),
            cx.school_id(a.school),
            calendar_id(a.school),
            date_or_bad(cx, a.date, *m),
            status.into(),
            excuse.into(),
            code.into(),
            desc.into(),
            minutes_present(a).to_string(),
            a.minutes_missed.to_string(),
            "360".into(),
            a.reason.text().into(),
        ]);
    }
    let mut enr = Table {
        header: vec![
            "enrollmentID",
            "personID",
            "studentNumber",
            "lastName",
            "firstName",
            "schoolID",
            "calendarID",
            "grade",
            "startDate",
            "endDate",
            "startStatus",
            "endStatus",
            "serviceType",
        ],
        rows: vec![],
    };
    for (i, e) in f.enrollments.iter().enumerate() {
        let st = &cx.world.students[e.student as usize];
        enr.rows.push(vec![
            (70_000 + i).to_string(),
            cx.internal_id(e.student),
            st.unique_id.clone(),
            st.last_name.clone(),
            st.first_name.clone(),
            cx.school_id(e.school),
            calendar_id(e.school),
            grade_two_digit(e.grade),
            cx.date(e.entry_date),
            e.exit_date.map(|d| cx.date(d)).unwrap_or_default(),
            match e.entry_type {
                EntryType::NextYearSchool => "01",
                EntryType::NewToEducationSystem => "02",
                EntryType::Transfer => "03",
            }
            .into(),
            match e.exit_type {
                None => "",
                Some(ExitType::Withdrawn) => "W1",
                Some(ExitType::Transferred) => "T1",
            }
            .into(),
            "P".into(),
        ]);
    }
    let mut cal = Table {
        header: vec![
            "calendarID",
            "schoolID",
            "date",
            "instruction",
            "attendance",
            "dayEventCode",
            "comments",
        ],
        rows: vec![],
    };
    for c in &f.calendar {
        let ins = u8::from(c.event.is_instructional()).to_string();
        cal.rows.push(vec![
            calendar_id(c.school),
            cx.school_id(c.school),
            cx.date(c.date),
            ins.clone(),
            ins,
            match c.event {
                CalendarEvent::InstructionalDay => "",
                CalendarEvent::Holiday => "HOL",
                CalendarEvent::TeacherOnlyDay => "PD",
                CalendarEvent::WeatherDay => "SNOW",
                CalendarEvent::MakeUpDay => "MU",
            }
            .into(),
            c.event.edfi_name().into(),
        ]);
    }
    [att, enr, cal]
}

// --- Skyward --------------------------------------------------------------------------------

fn sky_code(a: &AttendanceFact) -> (&'static str, &'static str, &'static str, bool, bool) {
    // (AttendanceTypeCode, Description, Category, IsTruant, IncludeInTotals)
    let half = a.absent_milli == 500;
    match a.category {
        Category::Present => ("P", "Present", "Present", false, false),
        Category::Tardy => ("T", "Tardy", "Tardy", false, false),
        Category::EarlyDeparture => ("ED", "Early Dismissal", "EarlyDismissal", false, false),
        Category::ExcusedAbsence if half => ("EXH", "Excused Half Day", "Excused", false, true),
        Category::ExcusedAbsence => ("EX", "Excused", "Excused", false, true),
        Category::UnexcusedAbsence if half => {
            ("UXH", "Unexcused Half Day", "Unexcused", true, true)
        }
        Category::UnexcusedAbsence => ("UX", "Unexcused", "Unexcused", true, true),
        Category::OutOfSchoolSuspension => ("SUS", "Suspension", "Suspension", false, true),
        Category::InSchoolSuspension => (
            "ISS",
            "In School Suspension",
            "InSchoolSuspension",
            false,
            false,
        ),
    }
}

fn yn(b: bool) -> String {
    if b { "Y" } else { "N" }.into()
}

fn sky_tables(cx: &Ctx, f: &Facts) -> [Table; 3] {
    let year = format!(
        "{}-{}",
        cx.world.config.school_year - 1,
        cx.world.config.school_year
    );
    let mut att = Table {
        header: vec![
            "Entity",
            "SchoolID",
            "SchoolYear",
            "StudentNumber",
            "StudentName",
            "AttendanceDate",
            "AttendanceTypeCode",
            "AttendanceTypeDescription",
            "Category",
            "IsTruant",
            "IncludeInTotals",
            "DayValue",
            "Comment",
        ],
        rows: vec![],
    };
    for (_, a, m) in &f.attendance {
        let (mut code, mut desc, mut cat, truant, totals) = sky_code(a);
        if *m == Some(Malformation::UnknownCode) {
            (code, desc, cat) = ("ZZ", "", "");
        }
        att.rows.push(vec![
            cx.local(a.school),
            cx.school_id(a.school),
            year.clone(),
            cx.student_number(a.student, *m),
            cx.last_first(a.student),
            date_or_bad(cx, a.date, *m),
            code.into(),
            desc.into(),
            cat.into(),
            yn(truant),
            yn(totals),
            if a.category.counts_absent() {
                fraction(a.absent_milli)
            } else {
                "0".into()
            },
            a.reason.text().into(),
        ]);
    }
    let mut enr = Table {
        header: vec![
            "Entity",
            "SchoolID",
            "StudentNumber",
            "StudentName",
            "GradeLevel",
            "EntryDate",
            "EntryCode",
            "WithdrawalDate",
            "WithdrawalCode",
        ],
        rows: vec![],
    };
    for e in &f.enrollments {
        enr.rows.push(vec![
            cx.local(e.school),
            cx.school_id(e.school),
            cx.world.students[e.student as usize].unique_id.clone(),
            cx.last_first(e.student),
            grade_two_digit(e.grade),
            cx.date(e.entry_date),
            match e.entry_type {
                EntryType::NextYearSchool => "R",
                EntryType::NewToEducationSystem => "N",
                EntryType::Transfer => "T",
            }
            .into(),
            e.exit_date.map(|d| cx.date(d)).unwrap_or_default(),
            match e.exit_type {
                None => "",
                Some(ExitType::Withdrawn) => "WD",
                Some(ExitType::Transferred) => "TR",
            }
            .into(),
        ]);
    }
    let mut cal = Table {
        header: vec![
            "Entity",
            "SchoolID",
            "CalendarDate",
            "DayType",
            "Membership",
        ],
        rows: vec![],
    };
    for c in &f.calendar {
        cal.rows.push(vec![
            cx.local(c.school),
            cx.school_id(c.school),
            cx.date(c.date),
            match c.event {
                CalendarEvent::InstructionalDay => "Regular",
                CalendarEvent::Holiday => "Holiday",
                CalendarEvent::TeacherOnlyDay => "Teacher Workday",
                CalendarEvent::WeatherDay => "Snow Day",
                CalendarEvent::MakeUpDay => "Makeup",
            }
            .into(),
            yn(c.event.is_instructional()),
        ]);
    }
    [att, enr, cal]
}

// --- Aeries -------------------------------------------------------------------------------

fn aeries_code(a: &AttendanceFact) -> &'static str {
    let half = a.absent_milli == 500;
    match a.category {
        Category::Present => "P",
        Category::Tardy => "T",
        Category::EarlyDeparture => "L",
        Category::ExcusedAbsence if half => "H",
        Category::ExcusedAbsence if a.reason == Reason::Illness => "I",
        Category::ExcusedAbsence => "X",
        Category::UnexcusedAbsence if half => "Q",
        Category::UnexcusedAbsence => "U",
        Category::OutOfSchoolSuspension => "S",
        Category::InSchoolSuspension => "N",
    }
}

fn aeries_tables(cx: &Ctx, f: &Facts) -> [Table; 3] {
    let mut att = Table {
        header: vec!["SC", "SN", "DT", "DY", "AL", "TM", "CO"],
        rows: vec![],
    };
    for (_, a, m) in &f.attendance {
        let code = if *m == Some(Malformation::UnknownCode) {
            "ZZ"
        } else {
            aeries_code(a)
        };
        att.rows.push(vec![
            cx.school_id(a.school),
            cx.student_number(a.student, *m),
            date_or_bad(cx, a.date, *m),
            f.day_number(a.school, a.date).to_string(),
            code.into(),
            a.minutes_missed.to_string(),
            a.reason.text().into(),
        ]);
    }
    let mut enr = Table {
        header: vec!["SC", "SN", "ID", "LN", "FN", "GR", "ED", "LD", "TG"],
        rows: vec![],
    };
    for e in &f.enrollments {
        let st = &cx.world.students[e.student as usize];
        enr.rows.push(vec![
            cx.school_id(e.school),
            st.unique_id.clone(),
            format!(
                "{}{}",
                cx.world.districts[st.district as usize].spec.lea_id, st.unique_id
            ),
            st.last_name.clone(),
            st.first_name.clone(),
            e.grade.number().to_string(),
            cx.date(e.entry_date),
            e.exit_date.map(|d| cx.date(d)).unwrap_or_default(),
            if e.exit_date.is_some() { "I" } else { "" }.into(),
        ]);
    }
    let mut cal = Table {
        header: vec!["SC", "DT", "DY", "HO"],
        rows: vec![],
    };
    for c in &f.calendar {
        cal.rows.push(vec![
            cx.school_id(c.school),
            cx.date(c.date),
            f.day_number(c.school, c.date).to_string(),
            match c.event {
                CalendarEvent::InstructionalDay => "",
                CalendarEvent::Holiday => "H",
                CalendarEvent::TeacherOnlyDay => "T",
                CalendarEvent::WeatherDay => "W",
                CalendarEvent::MakeUpDay => "M",
            }
            .into(),
        ]);
    }
    [att, enr, cal]
}

// --- Generic ------------------------------------------------------------------------------

fn generic_tables(cx: &Ctx, f: &Facts) -> [Table; 3] {
    let mut att = Table {
        header: vec![
            "school_id",
            "student_id",
            "date",
            "code",
            "category",
            "absent_fraction",
            "minutes_missed",
            "reason",
        ],
        rows: vec![],
    };
    for (_, a, m) in &f.attendance {
        let (code, cat) = if *m == Some(Malformation::UnknownCode) {
            ("ZZ", "")
        } else {
            match a.category {
                Category::Present => ("PR", "present"),
                Category::Tardy => ("TD", "tardy"),
                Category::EarlyDeparture => ("ED", "early_departure"),
                Category::ExcusedAbsence => ("EA", "excused_absence"),
                Category::UnexcusedAbsence => ("UA", "unexcused_absence"),
                Category::OutOfSchoolSuspension => ("OSS", "out_of_school_suspension"),
                Category::InSchoolSuspension => ("ISS", "in_school_suspension"),
            }
        };
        att.rows.push(vec![
            cx.school_id(a.school),
            cx.student_number(a.student, *m),
            date_or_bad(cx, a.date, *m),
            code.into(),
            cat.into(),
            fraction(a.absent_milli),
            a.minutes_missed.to_string(),
            a.reason.text().into(),
        ]);
    }
    let mut enr = Table {
        header: vec![
            "school_id",
            "student_id",
            "last_name",
            "first_name",
            "grade",
            "entry_date",
            "exit_date",
        ],
        rows: vec![],
    };
    for e in &f.enrollments {
        let st = &cx.world.students[e.student as usize];
        enr.rows.push(vec![
            cx.school_id(e.school),
            st.unique_id.clone(),
            st.last_name.clone(),
            st.first_name.clone(),
            match e.grade {
                Grade::K => "K".into(),
                g => g.number().to_string(),
            },
            cx.date(e.entry_date),
            e.exit_date.map(|d| cx.date(d)).unwrap_or_default(),
        ]);
    }
    let mut cal = Table {
        header: vec!["school_id", "date", "instructional", "event"],
        rows: vec![],
    };
    for c in &f.calendar {
        cal.rows.push(vec![
            cx.school_id(c.school),
            cx.date(c.date),
            c.event.is_instructional().to_string(),
            c.event.edfi_name().into(),
        ]);
    }
    [att, enr, cal]
}

fn date_or_bad(cx: &Ctx, d: NaiveDate, m: Option<Malformation>) -> String {
    if m == Some(Malformation::BadDate) {
        cx.bad_date(d)
    } else {
        cx.date(d)
    }
}

// --- Collecting and encoding ------------------------------------------------------------------

/// One district's current facts in a view, sorted as the files list them.
struct Facts {
    /// (record id, fact, malformation); a re-sent duplicate appears twice.
    attendance: Vec<(u32, AttendanceFact, Option<Malformation>)>,
    enrollments: Vec<EnrollmentFact>,
    calendar: Vec<CalendarDateFact>,
    /// Per school: the last instructional day of the visible calendar.
    last_day: std::collections::HashMap<u32, NaiveDate>,
    /// Per school: instructional day numbers (1-based).
    day_numbers: std::collections::HashMap<(u32, NaiveDate), u32>,
}

impl Facts {
    fn day_number(&self, school: u32, date: NaiveDate) -> u32 {
        self.day_numbers.get(&(school, date)).copied().unwrap_or(0)
    }

    fn collect(view: &View, district: u16) -> Facts {
        let world = view.world;
        let mut attendance = Vec::new();
        let mut enrollments = Vec::new();
        let mut calendar = Vec::new();
        for (idx, id, record, fact) in view.current() {
            if record.district != district {
                continue;
            }
            match fact {
                Fact::Attendance(a) => {
                    attendance.push((id, *a, record.malformed));
                    let c = &world.log[idx];
                    // The latest change re-sent the same state: the export lists it twice.
                    if c.prev
                        .is_some_and(|p| world.log[p as usize].op == Op::Upsert(*fact))
                    {
                        attendance.push((id, *a, record.malformed));
                    }
                }
                Fact::Enrollment(e) => enrollments.push(*e),
                Fact::CalendarDate(c) => calendar.push(*c),
            }
        }
        attendance.sort_by_key(|(id, a, _)| (a.school, a.student, a.date, *id));
        enrollments.sort_by_key(|e| (e.school, e.student, e.entry_date));
        calendar.sort_by_key(|c| (c.school, c.date));
        let mut last_day = std::collections::HashMap::new();
        let mut day_numbers = std::collections::HashMap::new();
        let mut n = 0;
        let mut current = u32::MAX;
        for c in &calendar {
            if c.school != current {
                current = c.school;
                n = 0;
            }
            if c.event.is_instructional() {
                n += 1;
                day_numbers.insert((c.school, c.date), n);
                last_day.insert(c.school, c.date);
            }
        }
        Facts {
            attendance,
            enrollments,
            calendar,
            last_day,
            day_numbers,
        }
    }
}

/// Maps a character to Windows-1252 (`?` when it has no code there).
fn to_windows_1252(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| match c as u32 {
            0..=0x7F | 0xA0..=0xFF => c as u32 as u8,
            _ => match c {
                '€' => 0x80,
                '‚' => 0x82,
                'ƒ' => 0x83,
                '„' => 0x84,
                '…' => 0x85,
                '‘' => 0x91,
                '’' => 0x92,
                '“' => 0x93,
                '”' => 0x94,
                '–' => 0x96,
                '—' => 0x97,
                'š' => 0x9A,
                'Š' => 0x8A,
                'ž' => 0x9E,
                'Ž' => 0x8E,
                'Ÿ' => 0x9F,
                _ => b'?',
            },
        })
        .collect()
}

/// Encodes a table the way `enc` says.
pub fn encode(table: &Table, enc: Encoding) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(if enc.crlf {
            csv::Terminator::CRLF
        } else {
            csv::Terminator::Any(b'\n')
        })
        .from_writer(Vec::new());
    w.write_record(&table.header).expect("write to memory");
    for row in &table.rows {
        w.write_record(row).expect("write to memory");
    }
    let utf8 = w.into_inner().expect("flush to memory");
    let text = String::from_utf8(utf8).expect("UTF-8 input");
    if enc.windows_1252 {
        to_windows_1252(&text)
    } else if enc.bom {
        let mut out = vec![0xEF, 0xBB, 0xBF];
        out.extend_from_slice(text.as_bytes());
        out
    } else {
        text.into_bytes()
    }
}

/// The attendance, enrollment and calendar tables of `district` at the end of `day`,
/// in `preset`'s columns (not yet encoded).
pub fn tables(
    world: &World,
    district: &str,
    preset: CsvPreset,
    day: NaiveDate,
) -> anyhow::Result<[Table; 3]> {
    let di = world
        .district_index(district)
        .ok_or_else(|| anyhow::anyhow!("no district {district:?} in this world"))?;
    let view = world.visible_through(day);
    let facts = Facts::collect(&view, di);
    let cx = Ctx {
        world,
        preset,
        enc: preset.encoding(),
    };
    Ok(match cx.preset {
        CsvPreset::PowerSchool => ps_tables(&cx, &facts),
        CsvPreset::InfiniteCampus => ic_tables(&cx, &facts),
        CsvPreset::Skyward => sky_tables(&cx, &facts),
        CsvPreset::Aeries => aeries_tables(&cx, &facts),
        CsvPreset::Generic => generic_tables(&cx, &facts),
    })
}

/// The three encoded files of `district` at the end of simulated day `day`.
pub fn render(
    world: &World,
    district: &str,
    preset: CsvPreset,
    day: NaiveDate,
) -> anyhow::Result<CsvExport> {
    let [a, e, c] = tables(world, district, preset, day)?;
    let enc = preset.encoding();
    Ok(CsvExport {
        attendance: encode(&a, enc),
        enrollment: encode(&e, enc),
        calendar: encode(&c, enc),
    })
}

/// Writes `attendance_<district>_<YYYYMMDD>.csv`, `enrollment_…` and `calendar_…` into
/// `dir` (created if missing): the district's school year to date as the SIS shows it at
/// the end of `day`. `preset: None` uses the district's own preset (generic for an
/// Ed-Fi district).
pub fn write_drop(
    world: &World,
    district: &str,
    preset: Option<CsvPreset>,
    day: NaiveDate,
    dir: &Path,
) -> anyhow::Result<CsvFiles> {
    let preset = match preset {
        Some(p) => p,
        None => district_preset(world, district)?,
    };
    let export = render(world, district, preset, day)?;
    std::fs::create_dir_all(dir)?;
    let stamp = day.format("%Y%m%d");
    let files = CsvFiles {
        day,
        attendance: dir.join(format!("attendance_{district}_{stamp}.csv")),
        enrollment: dir.join(format!("enrollment_{district}_{stamp}.csv")),
        calendar: dir.join(format!("calendar_{district}_{stamp}.csv")),
    };
    // Write to a temporary name and rename, so a watcher never sees half a file.
    for (path, bytes) in [
        (&files.attendance, &export.attendance),
        (&files.enrollment, &export.enrollment),
        (&files.calendar, &export.calendar),
    ] {
        let tmp = path.with_extension("csv.part");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)?;
    }
    Ok(files)
}

/// Writes one drop per simulated day from `from` through `to` (nightly exports).
pub fn write_nightly(
    world: &World,
    district: &str,
    preset: Option<CsvPreset>,
    from: NaiveDate,
    to: NaiveDate,
    dir: &Path,
) -> anyhow::Result<Vec<CsvFiles>> {
    let mut out = Vec::new();
    let mut day = from;
    while day <= to {
        out.push(write_drop(world, district, preset, day, dir)?);
        day += Duration::days(1);
    }
    Ok(out)
}

/// Writes the full-year files: one drop at the world's last day (every change landed).
pub fn write_full_year(
    world: &World,
    district: &str,
    preset: Option<CsvPreset>,
    dir: &Path,
) -> anyhow::Result<CsvFiles> {
    write_drop(world, district, preset, world.last_day, dir)
}

/// The preset of a CSV district; generic for an Ed-Fi one.
pub fn district_preset(world: &World, district: &str) -> anyhow::Result<CsvPreset> {
    let di = world
        .district_index(district)
        .ok_or_else(|| anyhow::anyhow!("no district {district:?} in this world"))?;
    Ok(match world.districts[di as usize].spec.feed {
        crate::config::Feed::Csv(p) => p,
        crate::config::Feed::Edfi => CsvPreset::Generic,
    })
}
