//! Builds a [`World`] from a [`SimConfig`]: calendars, enrollments (mid-year entries,
//! exits, transfers, no-shows), attendance with a realistic chronically-absent tail,
//! and the change log (late entries, corrections, duplicates, deletes, malformed records).

use std::collections::HashMap;

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::calendar::{district_calendar, DistrictCalendar};
use crate::config::{ConfigError, CorrectionStyle, Feed, SimConfig};
use crate::model::*;
use crate::names;
use crate::rng::{normal, stream};

// Order of changes visible on the same day: calendars, enrollments, attendance,
// attendance deletes, enrollment deletes (so references always resolve).
const PH_CALENDAR: u8 = 0;
const PH_ENROLL: u8 = 1;
const PH_ATTEND: u8 = 2;
const PH_ATTEND_DELETE: u8 = 3;
const PH_ENROLL_DELETE: u8 = 4;

struct Pending {
    visible_on: NaiveDate,
    phase: u8,
    seq: u64,
    record: RecordId,
    op: Op,
}

#[derive(Default)]
struct Builder {
    records: Vec<Record>,
    pending: Vec<Pending>,
}

impl Builder {
    fn record(
        &mut self,
        resource: Resource,
        district: u16,
        malformed: Option<Malformation>,
    ) -> RecordId {
        self.records.push(Record {
            resource,
            district,
            malformed,
        });
        (self.records.len() - 1) as RecordId
    }

    fn push(&mut self, visible_on: NaiveDate, phase: u8, record: RecordId, op: Op) {
        let seq = self.pending.len() as u64;
        self.pending.push(Pending {
            visible_on,
            phase,
            seq,
            record,
            op,
        });
    }

    fn create(&mut self, visible_on: NaiveDate, phase: u8, district: u16, fact: Fact) -> RecordId {
        let id = self.record(fact.resource(), district, None);
        self.push(visible_on, phase, id, Op::Upsert(fact));
        id
    }
}

/// Generates the world of `config`. Deterministic: the same config gives the same world.
pub fn generate(config: &SimConfig) -> Result<World, ConfigError> {
    config.validate()?;
    let first_day = NaiveDate::from_ymd_opt(config.school_year - 1, 8, 1).expect("1 August");
    let mut b = Builder::default();
    let mut districts = Vec::new();
    let mut schools: Vec<School> = Vec::new();
    let mut students: Vec<Student> = Vec::new();

    for (di, spec) in config.districts.iter().enumerate() {
        let di16 = di as u16;
        let cal = district_calendar(
            config.school_year,
            &mut stream(config.seed, &[1, di as u64]),
        );
        let days = cal.instructional_days();
        let school_ix: Vec<u32> = (0..spec.schools)
            .map(|s| {
                let level = match s % 4 {
                    0 | 1 => SchoolLevel::Elementary,
                    2 => SchoolLevel::Middle,
                    _ => SchoolLevel::High,
                };
                let stem = names::SCHOOL_STEMS[(di * 7 + s as usize) % names::SCHOOL_STEMS.len()];
                let kind = match level {
                    SchoolLevel::Elementary => "Elementary School",
                    SchoolLevel::Middle => "Middle School",
                    SchoolLevel::High => "High School",
                };
                schools.push(School {
                    district: di16,
                    school_id: spec.lea_id * 1000 + u64::from(s) + 1,
                    local_code: format!("{:03}", s + 1),
                    name: format!("{stem} {kind}"),
                    level,
                });
                (schools.len() - 1) as u32
            })
            .collect();
        for &s in &school_ix {
            publish_calendar(&mut b, di16, s, &cal, first_day);
        }
        let mut ctx = DistrictCtx {
            config,
            di: di16,
            positive: spec.positive_attendance,
            corrections: match spec.feed {
                Feed::Edfi => spec.corrections,
                Feed::Csv(_) => CorrectionStyle::KeyChange,
            },
            days: &days,
            day_factor: day_factors(&days),
            first_day,
            next_number: 100_001,
        };
        let mut local = 0u64;
        for (k, &s) in school_ix.iter().enumerate() {
            let level = schools[s as usize].level;
            let peers: Vec<u32> = school_ix
                .iter()
                .copied()
                .filter(|&o| o != s && schools[o as usize].level == level)
                .collect();
            let entrants = {
                let mut rng = stream(config.seed, &[3, di as u64, k as u64]);
                let x = f64::from(spec.students_per_school) * config.mid_year_entry_rate;
                x.floor() as u32 + u32::from(rng.random_bool(x.fract()))
            };
            for n in 0..spec.students_per_school + entrants {
                let mut rng = stream(config.seed, &[2, di as u64, local]);
                local += 1;
                let student = ctx.new_student(&mut rng, level, &mut students);
                let plan = ctx.plan(&mut rng, s, &peers, n >= spec.students_per_school);
                ctx.realize(&mut b, &mut rng, student, &students[student as usize], plan);
            }
        }
        districts.push(District {
            spec: spec.clone(),
            schools: school_ix,
            first_instructional_day: days[0],
            last_instructional_day: *days.last().expect("instructional days"),
        });
    }

    // Order the log: by visible day, then phase, then creation order.
    let mut pending = b.pending;
    pending.sort_by_key(|p| (p.visible_on, p.phase, p.seq));
    let changes = pending
        .into_iter()
        .map(|p| (p.visible_on, p.record, p.op))
        .collect();
    let latest_school_day = districts
        .iter()
        .map(|d: &District| d.last_instructional_day)
        .max()
        .unwrap_or(first_day);
    Ok(World::assemble(
        config.clone(),
        districts,
        schools,
        students,
        b.records,
        changes,
        first_day,
        latest_school_day + Duration::days(30),
    ))
}

fn publish_calendar(
    b: &mut Builder,
    di: u16,
    school: u32,
    cal: &DistrictCalendar,
    first_day: NaiveDate,
) {
    let mut by_date = HashMap::new();
    for &(date, event) in &cal.published {
        let id = b.create(
            first_day,
            PH_CALENDAR,
            di,
            Fact::CalendarDate(CalendarDateFact {
                school,
                date,
                event,
            }),
        );
        by_date.insert(date, id);
    }
    for w in &cal.weather {
        b.push(
            w.date,
            PH_CALENDAR,
            by_date[&w.date],
            Op::Upsert(Fact::CalendarDate(CalendarDateFact {
                school,
                date: w.date,
                event: CalendarEvent::WeatherDay,
            })),
        );
        b.create(
            w.announced,
            PH_CALENDAR,
            di,
            Fact::CalendarDate(CalendarDateFact {
                school,
                date: w.makeup,
                event: CalendarEvent::MakeUpDay,
            }),
        );
    }
}

/// Per instructional day: weekday × season × next-to-a-break factor on absence odds.
fn day_factors(days: &[NaiveDate]) -> Vec<f64> {
    days.iter()
        .enumerate()
        .map(|(i, d)| {
            let dow = match d.weekday() {
                Weekday::Mon => 1.2,
                Weekday::Tue => 0.9,
                Weekday::Wed => 0.85,
                Weekday::Thu => 0.9,
                Weekday::Fri => 1.25,
                _ => 1.0,
            };
            let season = match d.month() {
                8 => 0.7,
                9 => 0.78,
                10 => 0.9,
                11 => 1.0,
                12 => 1.2,
                1 => 1.4,
                2 => 1.3,
                3 => 1.05,
                4 => 0.95,
                5 => 1.05,
                _ => 1.15,
            };
            let gap_before = i > 0 && (*d - days[i - 1]).num_days() > 3;
            let gap_after = i + 1 < days.len() && (days[i + 1] - *d).num_days() > 3;
            let edge = if gap_before || gap_after { 1.3 } else { 1.0 };
            dow * season * edge
        })
        .collect()
}

/// One enrollment span in instructional-day indices (inclusive).
#[derive(Debug, Clone, Copy)]
struct Span {
    school: u32,
    start: usize,
    end: usize,
    entry_type: EntryType,
    exit_type: Option<ExitType>,
}

enum Plan {
    /// Enrolled spans (one, or two for a transfer), in order.
    Spans(Vec<Span>),
    /// Enrolled from the first day, absent every day, purged after `purge_at` days.
    NoShow { school: u32, purge_at: usize },
}

struct DistrictCtx<'a> {
    config: &'a SimConfig,
    di: u16,
    positive: bool,
    corrections: CorrectionStyle,
    days: &'a [NaiveDate],
    day_factor: Vec<f64>,
    first_day: NaiveDate,
    next_number: u32,
}

/// Per-student behaviour.
struct Propensity {
    absence: f64,
    excused_share: f64,
    tardy: f64,
    early: f64,
    /// Day index → suspension category.
    suspensions: HashMap<usize, Category>,
}

#[derive(Clone, Copy)]
struct Planned {
    fact: AttendanceFact,
}

impl DistrictCtx<'_> {
    fn new_student(
        &mut self,
        rng: &mut ChaCha8Rng,
        level: SchoolLevel,
        students: &mut Vec<Student>,
    ) -> u32 {
        let grades = level.grades();
        let first = names::FIRST[rng.random_range(0..names::FIRST.len())];
        let mut last = names::LAST[rng.random_range(0..names::LAST.len())].to_string();
        if rng.random_bool(0.03) {
            last = format!(
                "{last} {}",
                names::SUFFIX[rng.random_range(0..names::SUFFIX.len())]
            );
        }
        students.push(Student {
            district: self.di,
            unique_id: self.next_number.to_string(),
            first_name: first.to_string(),
            last_name: last,
            grade: grades[rng.random_range(0..grades.len())],
        });
        self.next_number += 1;
        (students.len() - 1) as u32
    }

    fn plan(&self, rng: &mut ChaCha8Rng, school: u32, peers: &[u32], entrant: bool) -> Plan {
        let n = self.days.len();
        let c = self.config;
        if entrant {
            return Plan::Spans(vec![Span {
                school,
                start: rng.random_range(5..n - 5),
                end: n - 1,
                entry_type: if rng.random_bool(0.5) {
                    EntryType::NewToEducationSystem
                } else {
                    EntryType::Transfer
                },
                exit_type: None,
            }]);
        }
        let full = Span {
            school,
            start: 0,
            end: n - 1,
            entry_type: EntryType::NextYearSchool,
            exit_type: None,
        };
        let r: f64 = rng.random();
        if r < c.no_show_rate {
            return Plan::NoShow {
                school,
                purge_at: rng.random_range(5..=15),
            };
        }
        if r < c.no_show_rate + c.exit_rate {
            let end = rng.random_range(10..n - 10);
            return Plan::Spans(vec![Span {
                end,
                exit_type: Some(ExitType::Withdrawn),
                ..full
            }]);
        }
        if r < c.no_show_rate + c.exit_rate + c.transfer_rate && !peers.is_empty() {
            let end = rng.random_range(10..n - 10);
            let to = peers[rng.random_range(0..peers.len())];
            return Plan::Spans(vec![
                Span {
                    end,
                    exit_type: Some(ExitType::Transferred),
                    ..full
                },
                Span {
                    school: to,
                    start: end + 1,
                    end: n - 1,
                    entry_type: EntryType::Transfer,
                    exit_type: None,
                },
            ]);
        }
        Plan::Spans(vec![full])
    }

    fn propensity(&self, rng: &mut ChaCha8Rng, grade: Grade) -> Propensity {
        let level_factor = match grade.number() {
            0 => 1.15,
            1..=5 => 0.9,
            6..=8 => 1.05,
            _ => 1.35,
        };
        let absence =
            ((0.037f64).ln() + 0.85 * normal(rng)).exp() * level_factor * self.config.absence_scale;
        let absence = absence.min(0.7);
        let excused_share = (0.72 - 1.5 * (absence - 0.04) + 0.15 * normal(rng)).clamp(0.1, 0.95);
        let tardy = (((0.012f64).ln() + normal(rng)).exp() * level_factor).min(0.4);
        let early = tardy * 0.4;
        let mut suspensions = HashMap::new();
        let n = self.days.len();
        let susp_factor: f64 = match grade.number() {
            0..=5 => 0.4,
            6..=8 => 1.5,
            _ => 1.2,
        };
        if rng.random_bool((0.03 * susp_factor).min(1.0)) {
            for _ in 0..rng.random_range(1..=2) {
                let len = rng.random_range(1..=5);
                let at = rng.random_range(0..n - len);
                for i in at..at + len {
                    suspensions.insert(i, Category::OutOfSchoolSuspension);
                }
            }
        }
        if rng.random_bool((0.05 * susp_factor).min(1.0)) {
            for _ in 0..rng.random_range(1..=2) {
                let len = rng.random_range(1..=2);
                let at = rng.random_range(0..n - len);
                for i in at..at + len {
                    suspensions.entry(i).or_insert(Category::InSchoolSuspension);
                }
            }
        }
        Propensity {
            absence,
            excused_share,
            tardy,
            early,
            suspensions,
        }
    }

    fn realize(
        &mut self,
        b: &mut Builder,
        rng: &mut ChaCha8Rng,
        student: u32,
        info: &Student,
        plan: Plan,
    ) {
        let days = self.days;
        match plan {
            Plan::NoShow { school, purge_at } => {
                let enrollment = b.create(
                    self.first_day,
                    PH_ENROLL,
                    self.di,
                    Fact::Enrollment(EnrollmentFact {
                        school,
                        student,
                        entry_date: days[0],
                        exit_date: None,
                        grade: info.grade,
                        entry_type: EntryType::NextYearSchool,
                        exit_type: None,
                    }),
                );
                let purge_day = days[purge_at];
                for &date in &days[..purge_at] {
                    let fact = AttendanceFact {
                        school,
                        student,
                        date,
                        category: Category::UnexcusedAbsence,
                        absent_milli: 1000,
                        minutes_missed: 360,
                        reason: Reason::NoShow,
                    };
                    let id = b.create(date, PH_ATTEND, self.di, Fact::Attendance(fact));
                    b.push(purge_day, PH_ATTEND_DELETE, id, Op::Delete);
                }
                b.push(purge_day, PH_ENROLL_DELETE, enrollment, Op::Delete);
            }
            Plan::Spans(spans) => {
                let prop = self.propensity(rng, info.grade);
                for span in spans {
                    self.realize_span(b, rng, student, info, &prop, span);
                }
            }
        }
    }

    fn realize_span(
        &mut self,
        b: &mut Builder,
        rng: &mut ChaCha8Rng,
        student: u32,
        info: &Student,
        prop: &Propensity,
        span: Span,
    ) {
        let days = self.days;
        let entry_date = days[span.start];
        let entry_visible = if span.start == 0 {
            self.first_day
        } else {
            (entry_date - Duration::days(rng.random_range(0..=3))).max(self.first_day)
        };
        let enrollment = EnrollmentFact {
            school: span.school,
            student,
            entry_date,
            exit_date: None,
            grade: info.grade,
            entry_type: span.entry_type,
            exit_type: None,
        };
        let rec = b.create(
            entry_visible,
            PH_ENROLL,
            self.di,
            Fact::Enrollment(enrollment),
        );
        if let Some(exit_type) = span.exit_type {
            let exit_date = days[span.end];
            b.push(
                exit_date + Duration::days(rng.random_range(0..=5)),
                PH_ENROLL,
                rec,
                Op::Upsert(Fact::Enrollment(EnrollmentFact {
                    exit_date: Some(exit_date),
                    exit_type: Some(exit_type),
                    ..enrollment
                })),
            );
        }

        // Plan the span's days first (at most one event per student-day).
        let mut planned: Vec<Option<Planned>> = vec![None; span.end - span.start + 1];
        let mut ill_yesterday = false;
        for (slot, i) in (span.start..=span.end).enumerate() {
            let date = days[i];
            let event = |category, absent_milli, minutes_missed, reason| Planned {
                fact: AttendanceFact {
                    school: span.school,
                    student,
                    date,
                    category,
                    absent_milli,
                    minutes_missed,
                    reason,
                },
            };
            if let Some(&cat) = prop.suspensions.get(&i) {
                let absent = if cat == Category::OutOfSchoolSuspension {
                    1000
                } else {
                    0
                };
                let minutes = if cat == Category::OutOfSchoolSuspension {
                    360
                } else {
                    0
                };
                planned[slot] = Some(event(cat, absent, minutes, Reason::Suspension));
                ill_yesterday = false;
                continue;
            }
            let p = (prop.absence * self.day_factor[i]).min(0.95);
            let continued = ill_yesterday && rng.random_bool(0.35);
            if continued || rng.random_bool(p) {
                let half = !continued && rng.random_bool(0.1);
                let excused = continued || rng.random_bool(prop.excused_share);
                let (absent, minutes) = if half { (500, 180) } else { (1000, 360) };
                let (cat, reason) = if excused {
                    let reason = match rng.random_range(0..10) {
                        0..6 => Reason::Illness,
                        6..8 => Reason::Medical,
                        8 => Reason::Family,
                        _ => Reason::Religious,
                    };
                    (Category::ExcusedAbsence, reason)
                } else if rng.random_bool(0.2) {
                    (Category::UnexcusedAbsence, Reason::Truant)
                } else {
                    (Category::UnexcusedAbsence, Reason::Unverified)
                };
                ill_yesterday = excused && !half && reason == Reason::Illness;
                planned[slot] = Some(event(cat, absent, minutes, reason));
                continue;
            }
            ill_yesterday = false;
            if rng.random_bool(prop.tardy) {
                let m = rng.random_range(5..=45);
                planned[slot] = Some(event(Category::Tardy, 0, m, Reason::Late));
            } else if rng.random_bool(prop.early) {
                let m = rng.random_range(30..=150);
                planned[slot] = Some(event(Category::EarlyDeparture, 0, m, Reason::LeftEarly));
            } else if self.positive && !rng.random_bool(self.config.missing_day_rate) {
                planned[slot] = Some(event(Category::Present, 0, 0, Reason::None));
            }
        }

        let free: Vec<usize> = planned
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_none())
            .map(|(s, _)| s)
            .collect();
        for p in planned.iter().flatten() {
            self.emit_event(b, rng, p.fact);
            if p.fact.category != Category::Present
                && !free.is_empty()
                && rng.random_bool(self.config.malformed_rate)
            {
                let slot = free[rng.random_range(0..free.len())];
                let kind = match rng.random_range(0..3) {
                    0 => Malformation::BadDate,
                    1 => Malformation::UnknownCode,
                    _ => Malformation::MissingStudent,
                };
                let date = days[span.start + slot];
                let id = b.record(Resource::StudentSchoolAttendanceEvents, self.di, Some(kind));
                b.push(
                    date,
                    PH_ATTEND,
                    id,
                    Op::Upsert(Fact::Attendance(AttendanceFact {
                        date,
                        category: Category::UnexcusedAbsence,
                        absent_milli: 1000,
                        minutes_missed: 360,
                        reason: Reason::Unverified,
                        ..p.fact
                    })),
                );
            }
        }
    }

    /// One event: its creation (possibly late), a later correction, a duplicate re-send.
    fn emit_event(&mut self, b: &mut Builder, rng: &mut ChaCha8Rng, fact: AttendanceFact) {
        let c = self.config;
        let late = fact.category != Category::Present && rng.random_bool(c.late_entry_rate);
        let visible = fact.date + Duration::days(if late { rng.random_range(1..=6) } else { 0 });
        let id = b.create(visible, PH_ATTEND, self.di, Fact::Attendance(fact));
        let correction = (fact.category == Category::UnexcusedAbsence
            && rng.random_bool(c.late_correction_rate))
        .then(|| visible + Duration::days(rng.random_range(3..=30)));
        let duplicate = rng
            .random_bool(c.duplicate_rate)
            .then(|| visible + Duration::days(rng.random_range(1..=10)));
        let corrected = AttendanceFact {
            category: Category::ExcusedAbsence,
            reason: Reason::Medical,
            ..fact
        };
        let mut current = id;
        if let Some(day) = correction {
            if let Some(dup) = duplicate.filter(|d| *d < day) {
                b.push(dup, PH_ATTEND, id, Op::Upsert(Fact::Attendance(fact)));
            }
            match self.corrections {
                CorrectionStyle::KeyChange => {
                    b.push(day, PH_ATTEND, id, Op::Upsert(Fact::Attendance(corrected)));
                }
                CorrectionStyle::DeleteCreate => {
                    current = b.create(day, PH_ATTEND, self.di, Fact::Attendance(corrected));
                    b.push(day, PH_ATTEND_DELETE, id, Op::Delete);
                }
            }
            if let Some(dup) = duplicate.filter(|d| *d >= day) {
                b.push(
                    dup.max(day + Duration::days(1)),
                    PH_ATTEND,
                    current,
                    Op::Upsert(Fact::Attendance(corrected)),
                );
            }
        } else if let Some(dup) = duplicate {
            b.push(dup, PH_ATTEND, id, Op::Upsert(Fact::Attendance(fact)));
        }
    }
}
