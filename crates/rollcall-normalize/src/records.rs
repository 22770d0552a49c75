//! Building the three canonical records. Each format (Ed-Fi resource, Ed-Fi keyValues,
//! flat) is first read into one input shape per entity, naming its fields as that format
//! spells them; the checks and the policy are then applied once, in `build_*`.

use std::borrow::Cow;

use chrono::NaiveDate;
use rollcall_codemaps::CodeMapRegistry;
use rollcall_model::RawOperation;
use rollcall_model::{is_supported_date, MAX_SUPPORTED_DATE, MIN_SUPPORTED_DATE};
use rollcall_model::{
    AttendanceEvent, CalendarDay, Canonical, Enrollment, Entity, Operation, RawEnvelope,
};
use rollcall_policy::{
    absent_fraction_from_duration_days, absent_fraction_from_minutes, is_future, school_year_of,
    school_year_start, DurationError, Policy,
};

use crate::fields::{self, descriptor_code_value, reject, Name};
use crate::payload::{EdfiDoc, FlatDoc, IdValue, YearValue};
use crate::reject::{RejectKind, Rejection};

type Text<'a> = Option<Cow<'a, str>>;

/// A number as the payload gave it: JSON number (Ed-Fi) or text (flat).
enum Num<'a> {
    Value(f64),
    Text(Cow<'a, str>),
}

impl Num<'_> {
    fn get(&self, name: Name) -> Result<f64, Rejection> {
        match self {
            Num::Value(v) => Ok(*v),
            Num::Text(t) => fields::number(name, t),
        }
    }
}

/// A school year as the payload gave it.
enum Year<'a> {
    Value(i64),
    Text(Cow<'a, str>),
}

impl Year<'_> {
    fn get(&self, name: Name) -> Result<i32, Rejection> {
        match self {
            Year::Value(v) => fields::year(name, *v),
            Year::Text(t) => fields::year_text(name, t),
        }
    }
}

/// The envelope-level facts every record of one raw record shares.
pub struct Meta {
    operation: Operation,
    source_key: String,
    source_system: String,
    source_instance: String,
    source_version: i64,
    observed_at_ms: i64,
}

impl Meta {
    pub fn new(env: &RawEnvelope, operation: Operation, source_key: &str) -> Meta {
        Meta {
            operation,
            source_key: source_key.to_string(),
            source_system: env.source_system.clone(),
            source_instance: env.source_instance.clone(),
            source_version: env.source_version,
            observed_at_ms: env.observed_at_ms,
        }
    }

    fn upsert(&self) -> bool {
        self.operation == Operation::Upsert
    }
}

/// Where a raw record is being normalized: its envelope, district and the rules.
pub struct Source<'a> {
    pub env: &'a RawEnvelope,
    /// The envelope's district id, normalized.
    pub district_id: String,
    pub policy: &'a Policy,
    pub codemaps: &'a CodeMapRegistry,
    /// Exit dates that mean "no exit date".
    pub exit_date_sentinels: &'a [NaiveDate],
    pub today: NaiveDate,
}

struct AttendanceIn<'a> {
    school_id: (Name, Text<'a>),
    session_school_id: Option<(Name, Cow<'a, str>)>,
    student_id: (Name, Text<'a>),
    district_id: Option<(Name, Cow<'a, str>)>,
    date: (Name, Text<'a>),
    code: (Name, Text<'a>),
    secondary_code: (Name, Text<'a>),
    school_year: Option<(Name, Year<'a>)>,
    duration_days: Option<(Name, Num<'a>)>,
    minutes_absent: Option<(Name, Num<'a>)>,
    school_day_minutes: Option<(Name, Num<'a>)>,
    reason: (Name, Text<'a>),
}

struct EnrollmentIn<'a> {
    school_id: (Name, Text<'a>),
    student_id: (Name, Text<'a>),
    district_id: Option<(Name, Cow<'a, str>)>,
    entry_date: (Name, Text<'a>),
    exit_date: (Name, Text<'a>),
    school_year: Option<(Name, Year<'a>)>,
    grade_level: (Name, Text<'a>),
    exit_withdraw_type: (Name, Text<'a>),
    subgroups: (Name, Text<'a>),
    state_student_id: (Name, Text<'a>),
}

struct CalendarIn<'a> {
    school_id: (Name, Text<'a>),
    district_id: Option<(Name, Cow<'a, str>)>,
    /// `None` with a name: required but missing (Ed-Fi); `None` without: optional (flat).
    calendar_code: (Name, Text<'a>, bool),
    date: (Name, Text<'a>),
    school_year: Option<(Name, Year<'a>)>,
    /// Event names (descriptor code values), when the record lists events.
    events: (Name, Option<Vec<String>>),
    is_instructional: (Name, Text<'a>),
}

fn id_text(v: Option<IdValue<'_>>) -> Text<'_> {
    v.map(|i| i.0)
}

fn year_of<'a>(name: Name, v: Option<YearValue>) -> Option<(Name, Year<'a>)> {
    v.map(|y| (name, Year::Value(y.0)))
}

fn text_pair<'a>(name: Name, v: Text<'a>) -> Option<(Name, Cow<'a, str>)> {
    v.map(|t| (name, t))
}

impl Source<'_> {
    /// One Ed-Fi record, in its resource shape or (`key_values`) its flat key shape.
    pub fn edfi(
        &self,
        doc: EdfiDoc<'_>,
        prefix: &'static str,
        key_values: bool,
        meta: Meta,
    ) -> Result<Canonical, Rejection> {
        let n = |leaf| Name(prefix, leaf);
        match self.env.entity {
            Entity::Attendance => {
                if doc.section_reference.is_some() {
                    return Err(reject(
                        RejectKind::UnsupportedEntityOrFormat,
                        "payload is a section attendance event (it has sectionReference); rollcall normalizes school (daily) attendance: publish studentSchoolAttendanceEvents".into(),
                    ));
                }
                let (school, session_school, student, year) = if key_values {
                    (
                        (n("schoolId"), id_text(doc.school_id)),
                        None,
                        (n("studentUniqueId"), id_text(doc.student_unique_id)),
                        year_of(n("schoolYear"), doc.school_year),
                    )
                } else {
                    let session = doc.session_reference.unwrap_or_default();
                    (
                        (
                            n("schoolReference.schoolId"),
                            id_text(doc.school_reference.and_then(|r| r.school_id)),
                        ),
                        session
                            .school_id
                            .map(|s| (n("sessionReference.schoolId"), s.0)),
                        (
                            n("studentReference.studentUniqueId"),
                            id_text(doc.student_reference.and_then(|r| r.student_unique_id)),
                        ),
                        year_of(n("sessionReference.schoolYear"), session.school_year),
                    )
                };
                self.attendance(
                    AttendanceIn {
                        school_id: school,
                        session_school_id: session_school,
                        student_id: student,
                        district_id: None,
                        date: (n("eventDate"), doc.event_date),
                        code: (
                            n("attendanceEventCategoryDescriptor"),
                            doc.attendance_event_category_descriptor,
                        ),
                        secondary_code: (n("-"), None),
                        school_year: year,
                        duration_days: doc
                            .event_duration
                            .map(|v| (n("eventDuration"), Num::Value(v))),
                        minutes_absent: doc
                            .school_attendance_duration
                            .map(|v| (n("schoolAttendanceDuration"), Num::Value(v))),
                        school_day_minutes: None,
                        reason: (n("attendanceEventReason"), doc.attendance_event_reason),
                    },
                    meta,
                )
            }
            Entity::Enrollment => {
                let (school, student) = if key_values {
                    (
                        (n("schoolId"), id_text(doc.school_id)),
                        (n("studentUniqueId"), id_text(doc.student_unique_id)),
                    )
                } else {
                    (
                        (
                            n("schoolReference.schoolId"),
                            id_text(doc.school_reference.and_then(|r| r.school_id)),
                        ),
                        (
                            n("studentReference.studentUniqueId"),
                            id_text(doc.student_reference.and_then(|r| r.student_unique_id)),
                        ),
                    )
                };
                let year = year_of(n("schoolYear"), doc.school_year)
                    .or_else(|| {
                        year_of(
                            n("schoolYearTypeReference.schoolYear"),
                            doc.school_year_type_reference.and_then(|r| r.school_year),
                        )
                    })
                    .or_else(|| {
                        year_of(
                            n("calendarReference.schoolYear"),
                            doc.calendar_reference.and_then(|r| r.school_year),
                        )
                    });
                self.enrollment(
                    EnrollmentIn {
                        school_id: school,
                        student_id: student,
                        district_id: None,
                        entry_date: (n("entryDate"), doc.entry_date),
                        exit_date: (n("exitWithdrawDate"), doc.exit_withdraw_date),
                        school_year: year,
                        grade_level: (
                            n("entryGradeLevelDescriptor"),
                            doc.entry_grade_level_descriptor,
                        ),
                        exit_withdraw_type: (
                            n("exitWithdrawTypeDescriptor"),
                            doc.exit_withdraw_type_descriptor,
                        ),
                        subgroups: (n("-"), None),
                        state_student_id: (n("-"), None),
                    },
                    meta,
                )
            }
            Entity::Calendar => {
                let (school, code, year) = if key_values {
                    (
                        (n("schoolId"), id_text(doc.school_id)),
                        (n("calendarCode"), id_text(doc.calendar_code), true),
                        year_of(n("schoolYear"), doc.school_year),
                    )
                } else {
                    let cal = doc.calendar_reference.unwrap_or_default();
                    (
                        (n("calendarReference.schoolId"), id_text(cal.school_id)),
                        (
                            n("calendarReference.calendarCode"),
                            id_text(cal.calendar_code),
                            true,
                        ),
                        year_of(n("calendarReference.schoolYear"), cal.school_year),
                    )
                };
                let events_name = n("calendarEvents");
                let events = doc
                    .calendar_events
                    .map(|evs| {
                        event_names(
                            events_name,
                            evs.into_iter().filter_map(|e| e.calendar_event_descriptor),
                        )
                    })
                    .transpose()?;
                self.calendar(
                    CalendarIn {
                        school_id: school,
                        district_id: None,
                        calendar_code: code,
                        date: (n("date"), doc.date),
                        school_year: year,
                        events: (events_name, events),
                        is_instructional: (n("-"), None),
                    },
                    meta,
                )
            }
        }
    }

    /// One flat record (file connector).
    pub fn flat(&self, doc: FlatDoc<'_>, meta: Meta) -> Result<Canonical, Rejection> {
        let n = |leaf| Name("", leaf);
        let district = text_pair(n("district_id"), doc.district_id);
        let year = doc.school_year.map(|t| (n("school_year"), Year::Text(t)));
        match self.env.entity {
            Entity::Attendance => self.attendance(
                AttendanceIn {
                    school_id: (n("school_id"), doc.school_id),
                    session_school_id: None,
                    student_id: (n("student_id"), doc.student_id),
                    district_id: district,
                    date: (n("date"), doc.date),
                    code: (n("code"), doc.code),
                    secondary_code: (n("secondary_code"), doc.secondary_code),
                    school_year: year,
                    duration_days: blank_is_none(doc.duration_days)
                        .map(|t| (n("duration_days"), Num::Text(t))),
                    minutes_absent: blank_is_none(doc.minutes_absent)
                        .map(|t| (n("minutes_absent"), Num::Text(t))),
                    school_day_minutes: blank_is_none(doc.school_day_minutes)
                        .map(|t| (n("school_day_minutes"), Num::Text(t))),
                    reason: (n("reason"), doc.reason),
                },
                meta,
            ),
            Entity::Enrollment => self.enrollment(
                EnrollmentIn {
                    school_id: (n("school_id"), doc.school_id),
                    student_id: (n("student_id"), doc.student_id),
                    district_id: district,
                    entry_date: (n("entry_date"), doc.entry_date),
                    exit_date: (n("exit_date"), doc.exit_date),
                    school_year: year,
                    grade_level: (n("grade_level"), doc.grade_level),
                    exit_withdraw_type: (n("exit_withdraw_type"), doc.exit_withdraw_type),
                    subgroups: (n("subgroups"), doc.subgroups),
                    state_student_id: (n("state_student_id"), doc.state_student_id),
                },
                meta,
            ),
            Entity::Calendar => self.calendar(
                CalendarIn {
                    school_id: (n("school_id"), doc.school_id),
                    district_id: district,
                    calendar_code: (n("calendar_code"), doc.calendar_code, false),
                    date: (n("date"), doc.date),
                    school_year: year,
                    events: (
                        n("events"),
                        fields::optional(n("events"), doc.events)?
                            .map(|s| event_names(n("events"), s.split(';').map(Cow::Borrowed)))
                            .transpose()?,
                    ),
                    is_instructional: (n("is_instructional"), doc.is_instructional),
                },
                meta,
            ),
        }
    }

    /// An Ed-Fi session (sessions resource, or `Session` of a calendar interchange). For
    /// a district with a derived calendar in the policy, its school days: every school
    /// weekday from `beginDate` to `endDate` less the configured holidays, each a
    /// calendar day with code `derived` whose event says it was derived. For any other
    /// district, nothing (sessions are not a calendar): the caller counts it as ignored.
    pub fn edfi_session(
        &self,
        doc: EdfiDoc<'_>,
        operation: RawOperation,
        meta: Meta,
    ) -> Result<Vec<Canonical>, Rejection> {
        let Some(derive) = self.policy.derived_calendars.get(&self.district_id) else {
            return Ok(Vec::new());
        };
        if operation != RawOperation::Upsert {
            return Err(reject(
                RejectKind::UnsupportedEntityOrFormat,
                format!(
                    "a session {} cannot change a derived calendar (it does not carry the session's dates); republish the corrected session, and delete derived days it no longer covers with calendar delete rows (calendar code `derived`) — policy.derived_calendars.{}",
                    operation.as_str(),
                    self.district_id
                ),
            ));
        }
        let school_id = self.id((
            Name("", "schoolReference.schoolId"),
            id_text(doc.school_reference.and_then(|r| r.school_id)),
        ))?;
        let begin_name = Name("", "beginDate");
        let begin = self.date((begin_name, doc.begin_date))?;
        let end = self.date((Name("", "endDate"), doc.end_date))?;
        if end < begin {
            return Err(reject(
                RejectKind::InvalidDate,
                format!("session endDate {end} is before its beginDate {begin}"),
            ));
        }
        if (end - begin).num_days() > 400 {
            return Err(reject(
                RejectKind::InvalidDate,
                format!("session {begin}..{end} is longer than a school year; check its dates"),
            ));
        }
        let year = year_of(
            Name("", "schoolYearTypeReference.schoolYear"),
            doc.school_year_type_reference.and_then(|r| r.school_year),
        );
        let school_year = self.school_year(year, begin, begin_name, &meta)?;
        let session = doc.session_name.as_deref().unwrap_or("").trim().to_string();
        Ok(derive
            .days(begin, end)
            .into_iter()
            .map(|day| {
                let event = if session.is_empty() {
                    day.event.to_string()
                } else {
                    format!("{} ({session})", day.event)
                };
                Canonical::Calendar(CalendarDay {
                    district_id: self.district_id.clone(),
                    school_id: school_id.clone(),
                    calendar_code: rollcall_policy::DERIVED_CALENDAR_CODE.to_string(),
                    school_year,
                    date: day.date,
                    is_instructional: day.is_instructional,
                    events: vec![event],
                    operation: Operation::Upsert,
                    source_version: meta.source_version,
                    source_system: meta.source_system.clone(),
                    source_instance: meta.source_instance.clone(),
                    source_key: format!("{}@{}", meta.source_key, day.date),
                    observed_at_ms: meta.observed_at_ms,
                })
            })
            .collect())
    }

    fn id(&self, (name, v): (Name, Text<'_>)) -> Result<String, Rejection> {
        fields::required_id(name, v, self.policy)
    }

    /// The payload's own district, if it names one, must be the envelope's.
    fn same_district(&self, d: Option<(Name, Cow<'_, str>)>) -> Result<(), Rejection> {
        if let Some((name, raw)) = d {
            let d = fields::id(name, &raw, self.policy)?;
            if d != self.district_id {
                return Err(reject(
                    RejectKind::DistrictMismatch,
                    format!(
                        "field {name} is {d:?} but the envelope is for district {:?}; the connector is reading another district's data",
                        self.district_id
                    ),
                ));
            }
        }
        Ok(())
    }

    fn date(&self, (name, v): (Name, Text<'_>)) -> Result<NaiveDate, Rejection> {
        let t = fields::required(name, v)?;
        fields::date(name, &t)
    }

    /// An exit date: absent, or one of the configured sentinels (9999-12-31 by
    /// default), means "no exit date"; any other must be a supported date.
    fn exit_date(&self, (name, v): (Name, Text<'_>)) -> Result<Option<NaiveDate>, Rejection> {
        let Some(t) = fields::optional(name, v)? else {
            return Ok(None);
        };
        let d = fields::parsed_date(name, &t)?;
        if self.exit_date_sentinels.contains(&d) {
            return Ok(None);
        }
        fields::supported_date(name, &t, d).map(Some)
    }

    /// The school year: as given (it must then contain `date` for an upsert), or the one
    /// `date` falls in.
    fn school_year(
        &self,
        given: Option<(Name, Year<'_>)>,
        date: NaiveDate,
        date_name: Name,
        meta: &Meta,
    ) -> Result<i32, Rejection> {
        let of_date = school_year_of(date, self.policy);
        let Some((name, y)) = given else {
            return self.supported_year(of_date, date_name);
        };
        let year = y.get(name)?;
        if meta.upsert() && year != of_date {
            return Err(reject(
                RejectKind::DateOutsideSchoolYear,
                format!(
                    "field {date_name} is {date}, outside school year {year} given by {name} (that date belongs to {of_date}; school years start in month {}, policy.school_year_start_month); fix the date or the school year in the source",
                    self.policy.school_year_start_month
                ),
            ));
        }
        self.supported_year(year, name)
    }

    /// A school year whose every day the rollup and ClickHouse hold (its first day and
    /// the next year's first day are supported dates), else `date_out_of_range`.
    fn supported_year(&self, year: i32, from: Name) -> Result<i32, Rejection> {
        let first = school_year_start(year, self.policy);
        let next = year
            .checked_add(1)
            .map(|y| school_year_start(y, self.policy))
            .unwrap_or(NaiveDate::MAX);
        if is_supported_date(first) && is_supported_date(next) {
            return Ok(year);
        }
        Err(reject(
            RejectKind::DateOutOfRange,
            format!(
                "school year {year} (from {from}) runs {first}..{next}, outside the dates rollcall holds ({MIN_SUPPORTED_DATE}..={MAX_SUPPORTED_DATE}, those of ClickHouse Date); fix the date or school year in the source"
            ),
        ))
    }

    fn attendance(&self, a: AttendanceIn<'_>, meta: Meta) -> Result<Canonical, Rejection> {
        let school_id = self.id(a.school_id)?;
        if let Some((name, s)) = a.session_school_id {
            let s = fields::id(name, &s, self.policy)?;
            if s != school_id {
                return Err(reject(
                    RejectKind::ConflictingFields,
                    format!(
                        "field {name} is {s:?} but the school is {school_id:?}; the event's session must belong to its school"
                    ),
                ));
            }
        }
        let student_id = self.id(a.student_id)?;
        self.same_district(a.district_id)?;
        let date_name = a.date.0;
        let date = self.date(a.date)?;
        let code = fields::required(a.code.0, a.code.1)?;
        let secondary = fields::optional(a.secondary_code.0, a.secondary_code.1)?;
        let school_year = self.school_year(a.school_year, date, date_name, &meta)?;
        let mapping = self
            .codemaps
            .lookup(
                &self.district_id,
                &self.env.source_system,
                &code,
                secondary.as_deref(),
            )
            .map_err(crate::lookup_rejection)?;
        if meta.upsert() && is_future(date, self.today, self.policy) {
            return Err(reject(
                RejectKind::DateInFuture,
                format!(
                    "field {date_name} is {date}, after today ({}) plus policy.future_date_tolerance_days ({}); attendance cannot be recorded ahead — check the source's date or clock",
                    self.today, self.policy.future_date_tolerance_days
                ),
            ));
        }
        let absent_fraction = if meta.upsert() && mapping.category.takes_duration() {
            self.absent_fraction(&a.duration_days, &a.minutes_absent, &a.school_day_minutes)?
                .unwrap_or(mapping.absent_fraction)
        } else {
            0.0
        };
        if !(0.0..=1.0).contains(&absent_fraction) {
            return Err(reject(
                RejectKind::FractionOutOfRange,
                format!("absent fraction {absent_fraction} for code {code:?} is outside [0, 1]; check the code map entry"),
            ));
        }
        let reason = fields::optional(a.reason.0, a.reason.1)?.map(Cow::into_owned);
        Ok(Canonical::Attendance(AttendanceEvent {
            district_id: self.district_id.clone(),
            school_id,
            student_id,
            school_year,
            date,
            category: mapping.category,
            absent_fraction,
            source_code: code.into_owned(),
            source_secondary_code: secondary.map(Cow::into_owned),
            reason,
            source_system: meta.source_system,
            source_instance: meta.source_instance,
            source_key: meta.source_key,
            source_version: meta.source_version,
            operation: meta.operation,
            observed_at_ms: meta.observed_at_ms,
        }))
    }

    /// The record's own duration, by precedence: days, then minutes (of the given or the
    /// policy's school day). `None` when the record gives neither.
    fn absent_fraction(
        &self,
        days: &Option<(Name, Num<'_>)>,
        minutes: &Option<(Name, Num<'_>)>,
        day_minutes: &Option<(Name, Num<'_>)>,
    ) -> Result<Option<f64>, Rejection> {
        if let Some((name, v)) = days {
            let d = v.get(*name)?;
            return absent_fraction_from_duration_days(d)
                .map(Some)
                .map_err(|e| duration_rejection(*name, e));
        }
        if let Some((name, v)) = minutes {
            let m = v.get(*name)?;
            let (day_name, day) = match day_minutes {
                Some((n, v)) => (*n, v.get(*n)?),
                None => (
                    Name("policy.", "school_day_minutes"),
                    f64::from(self.policy.school_day_minutes),
                ),
            };
            return absent_fraction_from_minutes(m, day)
                .map(Some)
                .map_err(|e| match e {
                    DurationError::InvalidSchoolDay { .. } => duration_rejection(day_name, e),
                    _ => duration_rejection(*name, e),
                });
        }
        Ok(None)
    }

    fn enrollment(&self, e: EnrollmentIn<'_>, meta: Meta) -> Result<Canonical, Rejection> {
        let school_id = self.id(e.school_id)?;
        let student_id = self.id(e.student_id)?;
        self.same_district(e.district_id)?;
        let entry_name = e.entry_date.0;
        let entry_date = self.date(e.entry_date)?;
        let exit_name = e.exit_date.0;
        let exit_date = self.exit_date(e.exit_date)?;
        if let Some(exit) = exit_date.filter(|&x| x < entry_date && meta.upsert()) {
            return Err(reject(
                RejectKind::ExitBeforeEntry,
                format!("field {exit_name} ({exit}) is before {entry_name} ({entry_date}); fix the enrollment in the source"),
            ));
        }
        let school_year = self.school_year(e.school_year, entry_date, entry_name, &meta)?;
        let (grade_level, source_grade_level) = self.grade_level(e.grade_level, &meta)?;
        let (exit_withdraw_type, source_exit_withdraw_type) =
            self.exit_withdraw_type(e.exit_withdraw_type)?;
        let subgroups = match fields::optional(e.subgroups.0, e.subgroups.1)? {
            Some(s) => fields::list(e.subgroups.0, &s)?,
            None => Vec::new(),
        };
        let state_student_id = match fields::optional(e.state_student_id.0, e.state_student_id.1)? {
            Some(s) => Some(fields::id(e.state_student_id.0, &s, self.policy)?),
            None => None,
        };
        Ok(Canonical::Enrollment(Enrollment {
            district_id: self.district_id.clone(),
            school_id,
            student_id,
            school_year,
            entry_date,
            exit_date,
            grade_level,
            subgroups,
            state_student_id,
            operation: meta.operation,
            source_version: meta.source_version,
            source_system: meta.source_system,
            source_instance: meta.source_instance,
            source_key: meta.source_key,
            observed_at_ms: meta.observed_at_ms,
            source_grade_level,
            exit_withdraw_type,
            source_exit_withdraw_type,
        }))
    }

    /// The canonical grade level (code maps: the district's or preset's `[grade_levels]`,
    /// then the built-in table) and the grade as sent (a descriptor URI's code value).
    /// Blank or absent → both `None`. An upsert with a grade no table knows is a dead
    /// letter (`unknown_grade_level`), never a guess; a delete keeps the grade as sent
    /// with no canonical one, so a correction of such a record still applies.
    fn grade_level(
        &self,
        (name, v): (Name, Text<'_>),
        meta: &Meta,
    ) -> Result<(Option<String>, Option<String>), Rejection> {
        let Some(raw) = fields::optional(name, v)? else {
            return Ok((None, None));
        };
        let source = descriptor_code_value(&raw).to_string();
        match self
            .codemaps
            .grade_level(&self.district_id, &self.env.source_system, &raw)
        {
            Ok(g) => Ok((Some(g.to_string()), Some(source))),
            Err(_) if !meta.upsert() => Ok((None, Some(source))),
            Err(e) => Err(reject(
                RejectKind::UnknownGradeLevel,
                format!("field {name}: {e}"),
            )),
        }
    }

    /// The canonical exit/withdraw type and the code as sent. A code no table knows is
    /// kept as sent with no canonical type (so it voids nothing) rather than
    /// dead-lettered: an exit type only ever removes enrolled days, and most SIS exit
    /// codes are district-defined. The normalizer counts such records
    /// (`rollcall_normalizer_unmapped_exit_types_total`).
    fn exit_withdraw_type(
        &self,
        (name, v): (Name, Text<'_>),
    ) -> Result<(Option<String>, Option<String>), Rejection> {
        let Some(raw) = fields::optional(name, v)? else {
            return Ok((None, None));
        };
        let source = descriptor_code_value(&raw).to_string();
        let canonical = self
            .codemaps
            .exit_withdraw_type(&self.district_id, &self.env.source_system, &raw)
            .ok()
            .map(str::to_string);
        Ok((canonical, Some(source)))
    }

    fn calendar(&self, c: CalendarIn<'_>, meta: Meta) -> Result<Canonical, Rejection> {
        let school_id = self.id(c.school_id)?;
        self.same_district(c.district_id)?;
        let (code_name, code, code_required) = c.calendar_code;
        let calendar_code = match fields::optional(code_name, code)? {
            Some(code) => fields::id(code_name, &code, self.policy)?,
            None if code_required => {
                return Err(reject(
                    RejectKind::MissingField,
                    format!("required field {code_name} is missing; the source must send it"),
                ))
            }
            None => String::new(),
        };
        let date_name = c.date.0;
        let date = self.date(c.date)?;
        let school_year = self.school_year(c.school_year, date, date_name, &meta)?;
        let (events_name, events) = c.events;
        let (flag_name, flag) = c.is_instructional;
        let is_instructional = match fields::optional(flag_name, flag)? {
            Some(f) => fields::boolean(flag_name, &f)?,
            None if events.is_some() => events.iter().flatten().any(|e| is_instructional_event(e)),
            None if !meta.upsert() => false,
            None => {
                return Err(reject(
                    RejectKind::MissingField,
                    format!("calendar date {date} has neither {events_name} nor is_instructional; the source must say whether it is an instructional day"),
                ))
            }
        };
        Ok(Canonical::Calendar(CalendarDay {
            district_id: self.district_id.clone(),
            school_id,
            calendar_code,
            school_year,
            date,
            is_instructional,
            events: events.unwrap_or_default(),
            operation: meta.operation,
            source_version: meta.source_version,
            source_system: meta.source_system,
            source_instance: meta.source_instance,
            source_key: meta.source_key,
            observed_at_ms: meta.observed_at_ms,
        }))
    }
}

/// Calendar event names: each trimmed, blanks dropped, descriptor URIs to code values.
fn event_names<'a>(
    name: Name,
    items: impl Iterator<Item = Cow<'a, str>>,
) -> Result<Vec<String>, Rejection> {
    let mut names = Vec::new();
    for item in items {
        if let Some(e) = fields::optional(name, Some(item))? {
            names.push(descriptor_code_value(&e).to_string());
        }
    }
    Ok(names)
}

fn blank_is_none(v: Text<'_>) -> Text<'_> {
    v.filter(|s| !s.trim().is_empty())
}

/// Ed-Fi CalendarEventDescriptor values that make a day instructional.
const INSTRUCTIONAL_EVENTS: [&str; 2] = ["instructional day", "make-up day"];

fn is_instructional_event(name: &str) -> bool {
    let folded = name.split_whitespace().collect::<Vec<_>>().join(" ");
    INSTRUCTIONAL_EVENTS
        .iter()
        .any(|e| e.eq_ignore_ascii_case(&folded))
}

fn duration_rejection(name: Name, e: DurationError) -> Rejection {
    let kind = match e {
        DurationError::Negative { .. } => RejectKind::FractionOutOfRange,
        DurationError::NotFinite { .. } | DurationError::InvalidSchoolDay { .. } => {
            RejectKind::InvalidDuration
        }
    };
    reject(
        kind,
        format!("field {name}: {e}; fix the duration in the source"),
    )
}
