//! The incremental engine: `RollupState`.

use std::hash::BuildHasher;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use hashbrown::{HashMap, HashTable};
use rollcall_model::{AttendanceEvent, CalendarDay, Enrollment, Operation};
use rollcall_policy::{self as policy, InvalidPolicy, MissingDayRule, Policy, Tier};

use crate::codec::{self, Decoded, Ev, Span, Unit, HASH_MASK, NO_EXIT};
use crate::day::{cat_index, fraction_milli, DayAcc, DayRules, DayVal};
use crate::rows::{DayRow, MetricsRow, StudentChange};

type Fast = foldhash::fast::FixedState;

const SEED_TABLE: u64 = 0x05ee_d0f7_ab1e;
const SEED_KEY: u64 = 0x0c0f_fee0_dd5e_ed01;
/// Bits of a school year's day bitmap (366 days fit).
const YEAR_WORDS: usize = 6;
type YearBits = [u64; YEAR_WORDS];

/// What applying one record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// The record changed the state (the student, or the school's students, are dirty).
    Applied,
    /// Same key and same source_version as the state already holds: nothing to do.
    Duplicate,
    /// An older source_version than the state holds for that key (out of order): ignored.
    Stale,
}

impl Changed {
    pub fn is_applied(self) -> bool {
        self == Changed::Applied
    }
}

/// A record the engine cannot hold. Nothing was changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateError {
    #[error(
        "{entity} {key:?}: {field} {date} is outside the supported range 1970-01-01..=2149-06-05"
    )]
    DateOutOfRange {
        entity: &'static str,
        key: String,
        field: &'static str,
        date: NaiveDate,
    },
    #[error(
        "{entity} {key:?}: school_year {school_year} is outside the supported range (its days must fall in 1970-01-01..=2149-06-05)"
    )]
    SchoolYearOutOfRange {
        entity: &'static str,
        key: String,
        school_year: i32,
    },
    #[error("as-of date {0} is outside the supported range 1970-01-01..=2149-06-05")]
    AsOfOutOfRange(NaiveDate),
    #[error("invalid policy: {0}")]
    Policy(#[from] InvalidPolicy),
}

/// Days since 1970-01-01 in `u16` (`u16::MAX` is reserved for "no exit date").
pub(crate) fn epoch_day(d: NaiveDate) -> Option<u16> {
    // 719_163 = days from 0001-01-01 (CE day 1) to 1970-01-01
    u16::try_from(d.num_days_from_ce() - 719_163)
        .ok()
        .filter(|&v| v < u16::MAX)
}

pub(crate) fn from_epoch_day(d: u16) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Days::new(u64::from(d))
}

struct District {
    id: Arc<str>,
    positive_attendance: bool,
    schools: HashMap<Box<str>, u32, Fast>,
}

struct School {
    id: Arc<str>,
    /// Students with any state at this school (may hold students who no longer do).
    students: Vec<u32>,
    /// The drain epoch in which all `students` were last marked dirty.
    dirty_epoch: u64,
}

/// One calendar code's days of one school year: per day the held version, whether a
/// record was seen, is live and says instructional.
struct CalCode {
    ver: Box<[i64]>,
    seen: YearBits,
    live: YearBits,
    instr: YearBits,
}

/// A school year of a school, over all its calendar codes.
struct CalAgg {
    /// Live instructional records per day (one per calendar code).
    count: Box<[u16]>,
    bits: YearBits,
}

/// How a dirty student looked at the last drain.
enum Before {
    /// Its state is unchanged (it is dirty for a calendar or as-of change).
    Unchanged,
    /// Its encoded state at the last drain.
    Blob(Box<[u8]>),
    /// It did not exist.
    Absent,
}

/// Which calendars and as-of date to compute with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum When {
    LastDrain,
    Now,
}

/// One computed (student, school, school year): its day rows are every day of
/// `counted`, valued `empty` unless listed in `event_days` (offsets from `start`).
#[derive(Debug, Clone, Copy)]
struct UnitOut {
    school: u32,
    year: u16,
    start: u16,
    counted: YearBits,
    /// Range into the shared list of (day offset, value) of days with live events.
    event_days: (u32, u32),
    empty: DayVal,
    metrics: Option<MetricsOut>,
}

/// Computed units of a student and the values of their days with events.
#[derive(Default)]
struct Computed {
    units: Vec<UnitOut>,
    event_days: Vec<(u16, DayVal)>,
}

impl Computed {
    fn clear(&mut self) {
        self.units.clear();
        self.event_days.clear();
    }

    fn days_of(&self, u: &UnitOut) -> &[(u16, DayVal)] {
        &self.event_days[u.event_days.0 as usize..u.event_days.1 as usize]
    }

    /// The value of a counted day.
    fn value(&self, u: &UnitOut, off: u16) -> DayVal {
        let days = self.days_of(u);
        match days.binary_search_by_key(&off, |x| x.0) {
            Ok(i) => days[i].1,
            Err(_) => u.empty,
        }
    }
}

/// Offsets of the set bits, ascending.
fn bits_iter(bits: YearBits) -> impl Iterator<Item = u16> {
    (0..YEAR_WORDS).flat_map(move |w| {
        let mut word = bits[w];
        std::iter::from_fn(move || {
            if word == 0 {
                return None;
            }
            let b = word.trailing_zeros();
            word &= word - 1;
            Some((w * 64) as u16 + b as u16)
        })
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MetricsOut {
    school: u32,
    year: u16,
    as_of: u16,
    days_enrolled: u32,
    absent: u32,
    excused: u32,
    unexcused: u32,
    suspended: u32,
    days_tardy: u32,
    unexcused_window: u32,
    absent_last_30: u32,
    meets_min: bool,
    chronic: bool,
    tier: Tier,
    truant: bool,
    non_instructional: u32,
    outside_enrollment: u32,
    missing: u32,
    grade: u32,
    subgroups: u32,
    ssid: u32,
}

/// Sizes of the engine's structures, for gauges: cheap (no scan of the students).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateStats {
    pub students: usize,
    pub schools: usize,
    /// Students waiting for `drain_dirty`.
    pub dirty: usize,
    /// Bytes held by per-student state (encoded students with their ids, their index,
    /// the school → students lists), as requested from the allocator.
    pub student_bytes: usize,
    /// Bytes held by shared state (calendars, interned names), approximately.
    pub shared_bytes: usize,
}

/// What the students' state holds, counted by a full scan (`RollupState::census`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCensus {
    /// (student, school, school year) units with any state.
    pub units: usize,
    pub spans: usize,
    pub events: usize,
    /// Deleted keys kept so that older records cannot resurrect them.
    pub tombstones: usize,
}

/// The exact rollup state of the students one rollup instance owns, plus every school's
/// calendar. Feed it normalized records in any order; call `drain_dirty` to get the rows
/// that changed.
pub struct RollupState {
    policy: Policy,
    rules: DayRules,
    /// First day of each school year FIRST_YEAR..=LAST_YEAR, when representable.
    year_starts: Vec<Option<u16>>,
    as_of: u16,
    /// The as-of date at the last drain, when it changed since.
    as_of_prev: Option<u16>,

    districts: Vec<District>,
    district_ix: HashMap<Box<str>, u32, Fast>,
    schools: Vec<School>,
    grades: Vec<Arc<str>>,
    grade_ix: HashMap<Box<str>, u32, Fast>,
    subgroup_sets: Vec<Arc<[String]>>,
    subgroup_ix: HashMap<Vec<String>, u32, Fast>,
    cal_codes: HashMap<Box<str>, u32, Fast>,

    /// Encoded students by index, in chunks (no doubling slack).
    students: Vec<Vec<Box<[u8]>>>,
    n_students: usize,
    /// Sum of the encoded students' lengths.
    blob_bytes: usize,
    student_ix: HashTable<u32>,

    cal_codes_by_day: HashMap<(u32, u16, u32), CalCode, Fast>,
    cal: HashMap<(u32, u16), CalAgg, Fast>,
    /// Aggregated calendar bits at the last drain, for school years changed since
    /// (`None`: there was no calendar).
    cal_prev: HashMap<(u32, u16), Option<YearBits>, Fast>,

    dirty: HashMap<u32, Before, Fast>,
    /// Counts drains (and discards); a school marked dirty in this epoch has all its
    /// students dirty already (students added later are dirty by their own change).
    epoch: u64,

    hasher: Fast,
    key_hasher: foldhash::quality::FixedState,
    scratch: Decoded,
    buf: Vec<u8>,
}

const STUDENT_CHUNK: usize = 1 << 14;
/// School years with a table entry: their first day fits the `u16` day numbers.
const FIRST_YEAR: u16 = 1970;
const LAST_YEAR: u16 = 2150;

/// Bits `from..to` set.
fn range_bits(from: usize, to: usize) -> YearBits {
    let mut out = [0u64; YEAR_WORDS];
    for (w, word) in out.iter_mut().enumerate() {
        let (lo, hi) = (w * 64, w * 64 + 64);
        let (a, b) = (from.max(lo), to.min(hi));
        if a < b {
            let n = b - a;
            let m = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << (a - lo)
            };
            *word |= m;
        }
    }
    out
}

fn and(a: &YearBits, b: &YearBits) -> YearBits {
    std::array::from_fn(|w| a[w] & b[w])
}

fn any(a: &YearBits) -> bool {
    a.iter().any(|&w| w != 0)
}

#[inline]
fn test_bit(bits: &YearBits, i: usize) -> bool {
    bits[i >> 6] & (1 << (i & 63)) != 0
}

impl RollupState {
    /// A state with no students or calendars yet, counting days up to `as_of`.
    pub fn new(policy: Policy, as_of: NaiveDate) -> Result<Self, StateError> {
        policy.validate()?;
        let as_of = epoch_day(as_of).ok_or(StateError::AsOfOutOfRange(as_of))?;
        let year_starts = (FIRST_YEAR..=LAST_YEAR)
            .map(|y| epoch_day(policy::school_year_start(i32::from(y), &policy)))
            .collect();
        Ok(RollupState {
            rules: DayRules::new(&policy),
            year_starts,
            policy,
            as_of,
            as_of_prev: None,
            districts: Vec::new(),
            district_ix: HashMap::with_hasher(Fast::with_seed(SEED_TABLE)),
            schools: Vec::new(),
            grades: vec![Arc::from("")],
            grade_ix: HashMap::with_hasher(Fast::with_seed(SEED_TABLE)),
            subgroup_sets: vec![Arc::from(Vec::<String>::new())],
            subgroup_ix: HashMap::with_hasher(Fast::with_seed(SEED_TABLE)),
            cal_codes: HashMap::with_hasher(Fast::with_seed(SEED_TABLE)),
            students: Vec::new(),
            n_students: 0,
            blob_bytes: 0,
            student_ix: HashTable::new(),
            cal_codes_by_day: HashMap::with_hasher(Fast::with_seed(SEED_TABLE)),
            cal: HashMap::with_hasher(Fast::with_seed(SEED_TABLE)),
            cal_prev: HashMap::with_hasher(Fast::with_seed(SEED_TABLE)),
            dirty: HashMap::with_hasher(Fast::with_seed(SEED_TABLE)),
            epoch: 0,
            hasher: Fast::with_seed(SEED_TABLE),
            key_hasher: foldhash::quality::FixedState::with_seed(SEED_KEY),
            scratch: Decoded::default(),
            buf: Vec::with_capacity(512),
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn as_of(&self) -> NaiveDate {
        from_epoch_day(self.as_of)
    }

    /// Students waiting for `drain_dirty`.
    pub fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    // -----------------------------------------------------------------------
    // interning
    // -----------------------------------------------------------------------

    fn district(&mut self, id: &str) -> u32 {
        if let Some(&d) = self.district_ix.get(id) {
            return d;
        }
        let d = self.districts.len() as u32;
        self.districts.push(District {
            id: Arc::from(id),
            positive_attendance: policy::missing_day_rule(id, &self.policy)
                == MissingDayRule::Missing,
            schools: HashMap::with_hasher(Fast::with_seed(SEED_TABLE)),
        });
        self.district_ix.insert(id.into(), d);
        d
    }

    fn school(&mut self, district: u32, id: &str) -> u32 {
        if let Some(&s) = self.districts[district as usize].schools.get(id) {
            return s;
        }
        let s = self.schools.len() as u32;
        self.schools.push(School {
            id: Arc::from(id),
            students: Vec::new(),
            dirty_epoch: u64::MAX,
        });
        self.districts[district as usize]
            .schools
            .insert(id.into(), s);
        s
    }

    fn grade(&mut self, g: Option<&str>) -> u32 {
        let g = g.unwrap_or("");
        if g.is_empty() {
            return 0;
        }
        if let Some(&i) = self.grade_ix.get(g) {
            return i;
        }
        let i = self.grades.len() as u32;
        self.grades.push(Arc::from(g));
        self.grade_ix.insert(g.into(), i);
        i
    }

    fn subgroups(&mut self, s: &[String]) -> u32 {
        if s.is_empty() {
            return 0;
        }
        if let Some(&i) = self.subgroup_ix.get(s) {
            return i;
        }
        let i = self.subgroup_sets.len() as u32;
        self.subgroup_sets.push(Arc::from(s.to_vec()));
        self.subgroup_ix.insert(s.to_vec(), i);
        i
    }

    fn key_hash(&self, source_system: &str, source_key: &str) -> u64 {
        self.key_hasher.hash_one((source_system, source_key)) & HASH_MASK
    }

    fn blob(&self, s: u32) -> &[u8] {
        &self.students[s as usize / STUDENT_CHUNK][s as usize % STUDENT_CHUNK]
    }

    fn blob_mut(&mut self, s: u32) -> &mut Box<[u8]> {
        &mut self.students[s as usize / STUDENT_CHUNK][s as usize % STUDENT_CHUNK]
    }

    fn find_student(&self, district: u32, id: &str) -> Option<u32> {
        let h = self.hasher.hash_one((district, id));
        self.student_ix
            .find(h, |&s| {
                codec::header_ids(self.blob(s)) == (district, id.as_bytes())
            })
            .copied()
    }

    fn student(&mut self, district: u32, id: &str) -> u32 {
        if let Some(s) = self.find_student(district, id) {
            return s;
        }
        let s = self.n_students as u32;
        let mut d = Decoded {
            district,
            id: id.as_bytes().to_vec(),
            ..Default::default()
        };
        codec::normalize(&mut d);
        codec::encode(&d, &mut self.buf);
        if self
            .students
            .last()
            .is_none_or(|c| c.len() == STUDENT_CHUNK)
        {
            self.students.push(Vec::with_capacity(STUDENT_CHUNK));
        }
        self.students
            .last_mut()
            .expect("chunk")
            .push(Box::from(&self.buf[..]));
        self.blob_bytes += self.buf.len();
        self.n_students += 1;
        let h = self.hasher.hash_one((district, id));
        let RollupState {
            student_ix,
            students,
            hasher,
            ..
        } = self;
        student_ix.insert_unique(h, s, |&t| {
            let blob = &students[t as usize / STUDENT_CHUNK][t as usize % STUDENT_CHUNK];
            let (d, id) = codec::header_ids(blob);
            hasher.hash_one((d, std::str::from_utf8(id).expect("ids are str")))
        });
        self.dirty.insert(s, Before::Absent);
        s
    }

    fn year_start(&self, year: u16) -> Option<u16> {
        let i = usize::from(year.checked_sub(FIRST_YEAR)?);
        self.year_starts.get(i).copied().flatten()
    }

    /// (first day, number of days) of a school year.
    fn year_span(&self, year: u16) -> (u16, u16) {
        let a = self.year_start(year).expect("year checked on the way in");
        let b = self
            .year_start(year + 1)
            .expect("year checked on the way in");
        (a, b - a)
    }

    fn check_year(&self, year: i32) -> Option<u16> {
        let y = u16::try_from(year).ok()?;
        self.year_start(y)?;
        self.year_start(y.checked_add(1)?)?;
        Some(y)
    }

    /// (school year, day offset) of a date, or `None` when out of range.
    fn locate(&self, date: NaiveDate) -> Option<(u16, u16)> {
        let day = epoch_day(date)?;
        let year = self.check_year(policy::school_year_of(date, &self.policy))?;
        let start = self.year_start(year)?;
        Some((year, day.checked_sub(start)?))
    }

    // -----------------------------------------------------------------------
    // applying records
    // -----------------------------------------------------------------------

    /// Load a student into the scratch space.
    fn load(&mut self, s: u32) -> Decoded {
        let mut d = std::mem::take(&mut self.scratch);
        codec::decode(self.blob(s), &mut d);
        d
    }

    /// Store a changed student, remembering how it looked at the last drain.
    fn store(&mut self, s: u32, mut d: Decoded, new_school: Option<u32>) {
        codec::normalize(&mut d);
        codec::encode(&d, &mut self.buf);
        let new = Box::from(&self.buf[..]);
        let old = std::mem::replace(self.blob_mut(s), new);
        self.blob_bytes = self.blob_bytes + self.buf.len() - old.len();
        match self.dirty.entry(s) {
            hashbrown::hash_map::Entry::Occupied(mut o) => {
                if matches!(o.get(), Before::Unchanged) {
                    o.insert(Before::Blob(old));
                }
            }
            hashbrown::hash_map::Entry::Vacant(v) => {
                v.insert(Before::Blob(old));
            }
        }
        if let Some(school) = new_school {
            self.schools[school as usize].students.push(s);
        }
        self.scratch = d;
    }

    fn give_back(&mut self, d: Decoded) {
        self.scratch = d;
    }

    /// Apply one normalized attendance event (upsert or delete, identified by
    /// `(source_system, source_key)`).
    pub fn apply_attendance(&mut self, e: &AttendanceEvent) -> Result<Changed, StateError> {
        let (year, day_off) = self
            .locate(e.date)
            .ok_or_else(|| StateError::DateOutOfRange {
                entity: "attendance",
                key: e.source_key.clone(),
                field: "date",
                date: e.date,
            })?;
        let district = self.district(&e.district_id);
        let school = self.school(district, &e.school_id);
        let s = self.student(district, &e.student_id);
        let hash = self.key_hash(&e.source_system, &e.source_key);
        let mut d = self.load(s);
        let new_school = (!d.has_school(school)).then_some(school);
        let held = d.events.iter().position(|x| x.hash == hash);
        let v = e.source_version;
        let outcome = match (e.operation, held) {
            (_, Some(i)) if v < d.events[i].ver => Changed::Stale,
            (Operation::Upsert, Some(i)) if v == d.events[i].ver => Changed::Duplicate,
            (Operation::Delete, Some(i)) if v == d.events[i].ver && d.events[i].tomb => {
                Changed::Duplicate
            }
            (Operation::Upsert, held) => {
                let ev = Ev {
                    school,
                    year,
                    day_off,
                    hash,
                    ver: v,
                    cat: cat_index(e.category),
                    tomb: false,
                    frac: fraction_milli(e.category, e.absent_fraction),
                };
                match held {
                    Some(i) => d.events[i] = ev,
                    None => d.events.push(ev),
                }
                Changed::Applied
            }
            (Operation::Delete, Some(i)) => {
                let x = &mut d.events[i];
                x.tomb = true;
                x.ver = v;
                x.frac = 0;
                Changed::Applied
            }
            (Operation::Delete, None) => {
                d.events.push(Ev {
                    school,
                    year,
                    day_off,
                    hash,
                    ver: v,
                    cat: 0,
                    tomb: true,
                    frac: 0,
                });
                Changed::Applied
            }
        };
        if outcome.is_applied() {
            let new_school = new_school.filter(|&sc| d.events.iter().any(|x| x.school == sc));
            self.store(s, d, new_school);
        } else {
            self.give_back(d);
        }
        Ok(outcome)
    }

    /// Apply one normalized enrollment span (upsert or delete, identified by
    /// `(source_system, source_key)`).
    pub fn apply_enrollment(&mut self, e: &Enrollment) -> Result<Changed, StateError> {
        let bad_date = |field, date| StateError::DateOutOfRange {
            entity: "enrollment",
            key: e.source_key.clone(),
            field,
            date,
        };
        let year =
            self.check_year(e.school_year)
                .ok_or_else(|| StateError::SchoolYearOutOfRange {
                    entity: "enrollment",
                    key: e.source_key.clone(),
                    school_year: e.school_year,
                })?;
        let entry = epoch_day(e.entry_date).ok_or_else(|| bad_date("entry_date", e.entry_date))?;
        let exit = match e.exit_date {
            Some(x) => epoch_day(x).ok_or_else(|| bad_date("exit_date", x))?,
            None => NO_EXIT,
        };
        let district = self.district(&e.district_id);
        let school = self.school(district, &e.school_id);
        let s = self.student(district, &e.student_id);
        let hash = self.key_hash(&e.source_system, &e.source_key);
        let grade = self.grade(e.grade_level.as_deref());
        let subgroups = self.subgroups(&e.subgroups);
        let mut d = self.load(s);
        let new_school = (!d.has_school(school)).then_some(school);
        let held = d.spans.iter().position(|x| x.hash == hash);
        let v = e.source_version;
        let outcome = match (e.operation, held) {
            (_, Some(i)) if v < d.spans[i].ver => Changed::Stale,
            (Operation::Upsert, Some(i)) if v == d.spans[i].ver => Changed::Duplicate,
            (Operation::Delete, Some(i)) if v == d.spans[i].ver && d.spans[i].tomb => {
                Changed::Duplicate
            }
            (Operation::Upsert, held) => {
                let ssid = match e.state_student_id.as_deref() {
                    None | Some("") => 0,
                    Some(id) => d.ssid_ref(id.as_bytes()),
                };
                let span = Span {
                    school,
                    year,
                    hash,
                    ver: v,
                    tomb: false,
                    void: policy::voids_enrollment(e.exit_withdraw_type.as_deref(), &self.policy),
                    entry,
                    exit,
                    grade,
                    subgroups,
                    ssid,
                };
                match held {
                    Some(i) => d.spans[i] = span,
                    None => d.spans.push(span),
                }
                Changed::Applied
            }
            (Operation::Delete, Some(i)) => {
                let x = &mut d.spans[i];
                x.tomb = true;
                x.ver = v;
                Changed::Applied
            }
            (Operation::Delete, None) => {
                d.spans.push(Span {
                    school,
                    year,
                    hash,
                    ver: v,
                    tomb: true,
                    void: false,
                    entry,
                    exit,
                    grade: 0,
                    subgroups: 0,
                    ssid: 0,
                });
                Changed::Applied
            }
        };
        if outcome.is_applied() {
            let new_school = new_school.filter(|&sc| d.spans.iter().any(|x| x.school == sc));
            d.gc_ssids();
            self.store(s, d, new_school);
        } else {
            self.give_back(d);
        }
        Ok(outcome)
    }

    /// Apply one calendar day (identified by district, school, calendar code and date).
    /// A date is instructional for a school when any of its calendar codes says so.
    /// When that changes, every student of the school becomes dirty.
    pub fn apply_calendar(&mut self, c: &CalendarDay) -> Result<Changed, StateError> {
        let (year, off) = self
            .locate(c.date)
            .ok_or_else(|| StateError::DateOutOfRange {
                entity: "calendar",
                key: c.source_key.clone(),
                field: "date",
                date: c.date,
            })?;
        let (_, len) = self.year_span(year);
        let district = self.district(&c.district_id);
        let school = self.school(district, &c.school_id);
        let n = self.cal_codes.len() as u32;
        let code = *self
            .cal_codes
            .entry(c.calendar_code.as_str().into())
            .or_insert(n);
        let cc = self
            .cal_codes_by_day
            .entry((school, year, code))
            .or_insert_with(|| CalCode {
                ver: vec![i64::MIN; len as usize].into_boxed_slice(),
                seen: [0; YEAR_WORDS],
                live: [0; YEAR_WORDS],
                instr: [0; YEAR_WORDS],
            });
        let i = off as usize;
        let (w, b) = (i >> 6, 1u64 << (i & 63));
        let seen = cc.seen[w] & b != 0;
        let v = c.source_version;
        let was_on = cc.live[w] & cc.instr[w] & b != 0;
        let outcome = if seen && v < cc.ver[i] {
            Changed::Stale
        } else if seen
            && v == cc.ver[i]
            && (c.operation == Operation::Upsert || cc.live[w] & b == 0)
        {
            Changed::Duplicate
        } else {
            cc.seen[w] |= b;
            cc.ver[i] = v;
            match c.operation {
                Operation::Upsert => {
                    cc.live[w] |= b;
                    if c.is_instructional {
                        cc.instr[w] |= b;
                    } else {
                        cc.instr[w] &= !b;
                    }
                }
                Operation::Delete => {
                    cc.live[w] &= !b;
                    cc.instr[w] &= !b;
                }
            }
            Changed::Applied
        };
        let is_on = cc.live[w] & cc.instr[w] & b != 0;
        if was_on != is_on {
            let agg = self.cal.entry((school, year)).or_insert_with(|| CalAgg {
                count: vec![0; len as usize].into_boxed_slice(),
                bits: [0; YEAR_WORDS],
            });
            let before = agg.bits;
            if is_on {
                agg.count[i] += 1;
            } else {
                agg.count[i] -= 1;
            }
            if agg.count[i] > 0 {
                agg.bits[w] |= b;
            } else {
                agg.bits[w] &= !b;
            }
            if agg.bits != before {
                self.cal_prev.entry((school, year)).or_insert(Some(before));
                self.dirty_school(school);
            }
        }
        Ok(outcome)
    }

    fn dirty_school(&mut self, school: u32) {
        let RollupState {
            schools,
            dirty,
            epoch,
            ..
        } = self;
        let sc = &mut schools[school as usize];
        if sc.dirty_epoch == *epoch {
            return;
        }
        sc.dirty_epoch = *epoch;
        for &s in &sc.students {
            dirty.entry(s).or_insert(Before::Unchanged);
        }
    }

    /// Move the as-of date (forward or back). Every student of a school with an
    /// instructional day between the old and the new date becomes dirty; returns how
    /// many students are dirty now.
    pub fn set_as_of(&mut self, as_of: NaiveDate) -> Result<usize, StateError> {
        let new = epoch_day(as_of).ok_or(StateError::AsOfOutOfRange(as_of))?;
        let old = self.as_of;
        if new == old {
            return Ok(self.dirty.len());
        }
        self.as_of_prev.get_or_insert(old);
        // days in (lo, hi]
        let (lo, hi) = (old.min(new), old.max(new));
        let mut hit = Vec::new();
        for (&(school, year), agg) in &self.cal {
            let (start, len) = self.year_span(year);
            let end = start + len; // exclusive
            let a = lo.saturating_add(1).max(start);
            let b = hi.saturating_add(1).min(end);
            if a < b
                && any(&and(
                    &agg.bits,
                    &range_bits(usize::from(a - start), usize::from(b - start)),
                ))
            {
                hit.push(school);
            }
        }
        self.as_of = new;
        hit.sort_unstable();
        hit.dedup();
        for school in hit {
            self.dirty_school(school);
        }
        Ok(self.dirty.len())
    }

    // -----------------------------------------------------------------------
    // computing rows
    // -----------------------------------------------------------------------

    fn calendar_bits(&self, school: u32, year: u16, when: When) -> YearBits {
        if when == When::LastDrain {
            if let Some(prev) = self.cal_prev.get(&(school, year)) {
                return prev.unwrap_or([0; YEAR_WORDS]);
            }
        }
        self.cal
            .get(&(school, year))
            .map_or([0; YEAR_WORDS], |a| a.bits)
    }

    /// The units (day sets, event days, metrics) of a decoded student.
    fn compute(&self, d: &Decoded, when: When, out: &mut Computed) {
        out.clear();
        let as_of = match when {
            When::LastDrain => self.as_of_prev.unwrap_or(self.as_of),
            When::Now => self.as_of,
        };
        let missing = self.districts[d.district as usize].positive_attendance;
        for u in &d.units {
            self.compute_unit(d, u, as_of, when, missing, out);
        }
    }

    fn compute_unit(
        &self,
        d: &Decoded,
        u: &Unit,
        as_of: u16,
        when: When,
        missing: bool,
        out: &mut Computed,
    ) {
        let (start, len) = self.year_span(u.year);
        let instr = self.calendar_bits(u.school, u.year, when);
        let exclusive = self.policy.exit_date == policy::ExitDateRule::Exclusive;
        let mut enrolled = [0u64; YEAR_WORDS];
        let mut latest: Option<&Span> = None;
        let live = || d.unit_spans(u).iter().filter(|s| !s.tomb);
        // A void enrollment (policy::voids_enrollment) adds no enrolled day, and gives the
        // unit its grade and subgroups only when no other enrollment does.
        for s in live().filter(|s| !s.void) {
            let from = s.entry.max(start);
            let to = match s.exit {
                NO_EXIT => start + len,
                x if exclusive => x,
                x => x.saturating_add(1),
            }
            .min(start + len);
            if from < to {
                let r = range_bits(usize::from(from - start), usize::from(to - start));
                enrolled = std::array::from_fn(|w| enrolled[w] | r[w]);
            }
            if latest.is_none_or(|l| (s.entry, s.ver) > (l.entry, l.ver)) {
                latest = Some(s);
            }
        }
        if latest.is_none() {
            for s in live() {
                if latest.is_none_or(|l| (s.entry, s.ver) > (l.entry, l.ver)) {
                    latest = Some(s);
                }
            }
        }
        // days counted: instructional, enrolled, up to as-of
        let limit = if as_of < start {
            0
        } else {
            (as_of - start + 1).min(len)
        };
        let counted = and(&and(&instr, &enrolled), &range_bits(0, usize::from(limit)));
        let events = d.unit_events(u);
        let (mut non_instructional, mut outside) = (0u32, 0u32);
        let first = out.event_days.len();
        let mut k = 0usize;
        while k < events.len() {
            let off = events[k].day_off;
            let mut acc = DayAcc::default();
            let mut live = false;
            while k < events.len() && events[k].day_off == off {
                let e = &events[k];
                if !e.tomb {
                    live = true;
                    acc.add(e.cat, e.frac, e.ver);
                    if !test_bit(&instr, usize::from(off)) {
                        non_instructional += 1;
                    } else if !test_bit(&enrolled, usize::from(off)) {
                        outside += 1;
                    }
                }
                k += 1;
            }
            if live && test_bit(&counted, usize::from(off)) {
                out.event_days.push((off, acc.finish(&self.rules, missing)));
            }
        }
        let n_counted: u32 = counted.iter().map(|w| w.count_ones()).sum();
        if n_counted == 0 && non_instructional == 0 && outside == 0 {
            return;
        }
        let unit = UnitOut {
            school: u.school,
            year: u.year,
            start,
            counted,
            event_days: (first as u32, out.event_days.len() as u32),
            empty: DayAcc::default().finish(&self.rules, missing),
            metrics: None,
        };
        let days = out.days_of(&unit);
        let last = (0..YEAR_WORDS)
            .rev()
            .find(|&w| counted[w] != 0)
            .map(|w| (w * 64) as u16 + 63 - counted[w].leading_zeros() as u16);
        let mut m = MetricsOut {
            school: u.school,
            year: u.year,
            as_of: last.map_or(start, |off| start + off),
            days_enrolled: n_counted,
            absent: 0,
            excused: 0,
            unexcused: 0,
            suspended: 0,
            days_tardy: 0,
            unexcused_window: 0,
            absent_last_30: 0,
            meets_min: false,
            chronic: false,
            tier: Tier::Satisfactory,
            truant: false,
            non_instructional,
            outside_enrollment: outside,
            missing: if missing {
                n_counted - days.len() as u32
            } else {
                0
            },
            grade: latest.map_or(0, |s| s.grade),
            subgroups: latest.map_or(0, |s| s.subgroups),
            ssid: latest.map_or(0, |s| s.ssid),
        };
        let window_start = epoch_day(policy::truancy_window_start(
            from_epoch_day(m.as_of),
            &self.policy,
        ))
        .unwrap_or(0);
        let window_off = window_start.saturating_sub(start);
        for (off, v) in days {
            m.days_enrolled -= u32::from(v.enrolled == 0);
            m.absent += u32::from(v.absent);
            m.excused += u32::from(v.excused);
            m.unexcused += u32::from(v.unexcused);
            m.suspended += u32::from(v.suspended);
            m.days_tardy += u32::from(v.tardy);
            if *off >= window_off {
                m.unexcused_window += u32::from(v.unexcused);
            }
        }
        // the last 30 enrolled days: walk the counted days down, skipping not-enrolled
        let mut seen = 0;
        let mut j = days.len();
        'walk: for w in (0..YEAR_WORDS).rev() {
            let mut word = counted[w];
            while word != 0 {
                let b = 63 - word.leading_zeros();
                word &= !(1u64 << b);
                let off = (w * 64) as u16 + b as u16;
                while j > 0 && days[j - 1].0 > off {
                    j -= 1;
                }
                if j > 0 && days[j - 1].0 == off {
                    let v = &days[j - 1].1;
                    if v.enrolled == 0 {
                        continue;
                    }
                    m.absent_last_30 += u32::from(v.absent);
                }
                seen += 1;
                if seen == 30 {
                    break 'walk;
                }
            }
        }
        let absent_days = f64::from(m.absent) / 1000.0;
        m.meets_min = policy::meets_min_enrollment(m.days_enrolled, &self.policy);
        m.chronic = policy::is_chronic(absent_days, m.days_enrolled, &self.policy);
        m.tier = policy::absence_rate(absent_days, m.days_enrolled)
            .map_or(Tier::Satisfactory, |r| policy::tier(r, &self.policy));
        m.truant = policy::is_truant(f64::from(m.unexcused_window) / 1000.0, &self.policy);
        out.units.push(UnitOut {
            metrics: Some(m),
            ..unit
        });
    }

    // -----------------------------------------------------------------------
    // draining
    // -----------------------------------------------------------------------

    /// Recompute every dirty student and return, per student whose rows changed, the
    /// rows to upsert and the rows to tombstone since the last drain. Students are in a
    /// stable order (first seen first).
    pub fn drain_dirty(&mut self) -> Vec<StudentChange> {
        let mut dirty: Vec<(u32, Before)> = std::mem::take(&mut self.dirty).into_iter().collect();
        dirty.sort_unstable_by_key(|(s, _)| *s);
        let mut out = Vec::new();
        let (mut d_old, mut d_new) = (Decoded::default(), Decoded::default());
        let (mut c_old, mut c_new) = (Computed::default(), Computed::default());
        for (s, before) in dirty {
            c_old.clear();
            codec::decode(self.blob(s), &mut d_new);
            let old = match &before {
                Before::Absent => &d_new,
                Before::Unchanged => {
                    self.compute(&d_new, When::LastDrain, &mut c_old);
                    &d_new
                }
                Before::Blob(b) => {
                    codec::decode(b, &mut d_old);
                    self.compute(&d_old, When::LastDrain, &mut c_old);
                    &d_old
                }
            };
            self.compute(&d_new, When::Now, &mut c_new);
            if let Some(c) = self.diff(old, &d_new, &c_old, &c_new) {
                out.push(c);
            }
        }
        self.cal_prev.clear();
        self.as_of_prev = None;
        self.epoch += 1;
        out
    }

    /// Forget what is dirty, as if it had been drained and written: use after rebuilding
    /// the state from a replay of records whose rows are already in the tables.
    pub fn discard_dirty(&mut self) {
        self.dirty = HashMap::with_hasher(Fast::with_seed(SEED_TABLE));
        self.cal_prev.clear();
        self.as_of_prev = None;
        self.epoch += 1;
    }

    /// Every current row of every student (not only the dirty ones): for reconciling
    /// the tables after a rebuild, and for tests.
    pub fn rows(&self) -> (Vec<DayRow>, Vec<MetricsRow>) {
        let (mut day_rows, mut metric_rows) = (Vec::new(), Vec::new());
        let mut d = Decoded::default();
        let mut c = Computed::default();
        for s in 0..self.n_students as u32 {
            codec::decode(self.blob(s), &mut d);
            self.compute(&d, When::Now, &mut c);
            if c.units.is_empty() {
                continue;
            }
            let ids = self.ids(&d);
            for u in &c.units {
                for off in bits_iter(u.counted) {
                    day_rows.push(self.day_row(&ids, u, off, c.value(u, off), 0));
                }
                if let Some(m) = &u.metrics {
                    metric_rows.push(self.metrics_row(&ids, &d, m, 0));
                }
            }
        }
        (day_rows, metric_rows)
    }

    fn ids(&self, d: &Decoded) -> (Arc<str>, Arc<str>) {
        (
            self.districts[d.district as usize].id.clone(),
            Arc::from(std::str::from_utf8(&d.id).expect("ids are str")),
        )
    }

    fn day_row(
        &self,
        ids: &(Arc<str>, Arc<str>),
        u: &UnitOut,
        off: u16,
        v: DayVal,
        deleted: u8,
    ) -> DayRow {
        DayRow {
            school_year: u.year,
            district_id: ids.0.clone(),
            school_id: self.schools[u.school as usize].id.clone(),
            student_id: ids.1.clone(),
            date: from_epoch_day(u.start + off),
            status: v.status,
            enrolled: v.enrolled,
            absent_milli: v.absent,
            excused_milli: v.excused,
            unexcused_milli: v.unexcused,
            suspended_milli: v.suspended,
            tardy: v.tardy,
            source_version: v.source_version,
            deleted,
        }
    }

    fn metrics_row(
        &self,
        ids: &(Arc<str>, Arc<str>),
        d: &Decoded,
        m: &MetricsOut,
        deleted: u8,
    ) -> MetricsRow {
        MetricsRow {
            school_year: m.year,
            district_id: ids.0.clone(),
            school_id: self.schools[m.school as usize].id.clone(),
            student_id: ids.1.clone(),
            state_student_id: if m.ssid == 0 {
                Arc::from("")
            } else {
                Arc::from(std::str::from_utf8(d.ssid(m.ssid)).expect("ids are str"))
            },
            grade_level: self.grades[m.grade as usize].clone(),
            subgroups: self.subgroup_sets[m.subgroups as usize].clone(),
            as_of_date: from_epoch_day(m.as_of),
            days_enrolled: m.days_enrolled,
            absent_milli: m.absent,
            excused_milli: m.excused,
            unexcused_milli: m.unexcused,
            suspended_milli: m.suspended,
            days_tardy: m.days_tardy,
            unexcused_window_milli: m.unexcused_window,
            absent_last_30_milli: m.absent_last_30,
            meets_min_enrollment: u8::from(m.meets_min),
            is_chronically_absent: u8::from(m.chronic),
            tier: m.tier,
            is_truant: u8::from(m.truant),
            events_non_instructional: m.non_instructional,
            events_outside_enrollment: m.outside_enrollment,
            days_missing: m.missing,
            deleted,
        }
    }

    /// The rows that differ between two computations of one student.
    fn diff(
        &self,
        d_old: &Decoded,
        d_new: &Decoded,
        old: &Computed,
        new: &Computed,
    ) -> Option<StudentChange> {
        use std::cmp::Ordering;
        let mut ids: Option<(Arc<str>, Arc<str>)> = None;
        let mut ch = StudentChange::default();
        let (mut i, mut j) = (0, 0);
        while i < old.units.len() || j < new.units.len() {
            let (o, n) = (old.units.get(i), new.units.get(j));
            let ord = match (o, n) {
                (Some(a), Some(b)) => (a.year, a.school).cmp(&(b.year, b.school)),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            match (ord, o, n) {
                (Ordering::Less, Some(a), _) => {
                    let ids = ids.get_or_insert_with(|| self.ids(d_new));
                    for off in bits_iter(a.counted) {
                        ch.day_rows_delete
                            .push(self.day_row(ids, a, off, old.value(a, off), 1));
                    }
                    if let Some(m) = &a.metrics {
                        ch.metrics_delete.push(self.metrics_row(ids, d_old, m, 1));
                    }
                    i += 1;
                }
                (Ordering::Greater, _, Some(b)) => {
                    let ids = ids.get_or_insert_with(|| self.ids(d_new));
                    for off in bits_iter(b.counted) {
                        ch.day_rows_upsert
                            .push(self.day_row(ids, b, off, new.value(b, off), 0));
                    }
                    if let Some(m) = &b.metrics {
                        ch.metrics_upsert.push(self.metrics_row(ids, d_new, m, 0));
                    }
                    j += 1;
                }
                (_, Some(a), Some(b)) => {
                    self.diff_unit(&mut ids, d_old, d_new, old, new, a, b, &mut ch);
                    i += 1;
                    j += 1;
                }
                _ => unreachable!("one side has a unit"),
            }
        }
        if ch.is_empty() {
            return None;
        }
        let ids = ids.expect("set when anything changed");
        ch.district_id = ids.0;
        ch.student_id = ids.1;
        Some(ch)
    }

    #[allow(clippy::too_many_arguments)]
    fn diff_unit(
        &self,
        ids: &mut Option<(Arc<str>, Arc<str>)>,
        d_old: &Decoded,
        d_new: &Decoded,
        old: &Computed,
        new: &Computed,
        a: &UnitOut,
        b: &UnitOut,
        ch: &mut StudentChange,
    ) {
        // days counted on one side only
        let gone = std::array::from_fn(|w| a.counted[w] & !b.counted[w]);
        let came = std::array::from_fn(|w| b.counted[w] & !a.counted[w]);
        if any(&gone) || any(&came) {
            let ids = ids.get_or_insert_with(|| self.ids(d_new));
            for off in bits_iter(gone) {
                ch.day_rows_delete
                    .push(self.day_row(ids, a, off, old.value(a, off), 1));
            }
            for off in bits_iter(came) {
                ch.day_rows_upsert
                    .push(self.day_row(ids, b, off, new.value(b, off), 0));
            }
        }
        // days counted on both sides whose value may differ: those with events on
        // either side, or every day when the value of a day without events differs
        let both = and(&a.counted, &b.counted);
        let mut changed = |off: u16, ids: &mut Option<(Arc<str>, Arc<str>)>| {
            let (x, y) = (old.value(a, off), new.value(b, off));
            if x != y {
                let ids = ids.get_or_insert_with(|| self.ids(d_new));
                ch.day_rows_upsert.push(self.day_row(ids, b, off, y, 0));
            }
        };
        if a.empty != b.empty {
            for off in bits_iter(both) {
                changed(off, ids);
            }
        } else {
            let (xs, ys) = (old.days_of(a), new.days_of(b));
            let (mut p, mut q) = (0, 0);
            while p < xs.len() || q < ys.len() {
                let off = match (xs.get(p), ys.get(q)) {
                    (Some(x), Some(y)) => x.0.min(y.0),
                    (Some(x), None) => x.0,
                    (None, Some(y)) => y.0,
                    (None, None) => unreachable!(),
                };
                if xs.get(p).is_some_and(|x| x.0 == off) {
                    p += 1;
                }
                if ys.get(q).is_some_and(|y| y.0 == off) {
                    q += 1;
                }
                if test_bit(&both, usize::from(off)) {
                    changed(off, ids);
                }
            }
        }
        match (&a.metrics, &b.metrics) {
            (Some(x), Some(y)) if x != y => {
                // the same state student id may sit at another index
                fn ssid<'a>(d: &'a Decoded, m: &MetricsOut) -> &'a [u8] {
                    if m.ssid == 0 {
                        &[]
                    } else {
                        d.ssid(m.ssid)
                    }
                }
                let same = MetricsOut { ssid: 0, ..*x } == MetricsOut { ssid: 0, ..*y }
                    && ssid(d_old, x) == ssid(d_new, y);
                if !same {
                    let ids = ids.get_or_insert_with(|| self.ids(d_new));
                    ch.metrics_upsert.push(self.metrics_row(ids, d_new, y, 0));
                }
            }
            (Some(x), None) => {
                let ids = ids.get_or_insert_with(|| self.ids(d_new));
                ch.metrics_delete.push(self.metrics_row(ids, d_old, x, 1));
            }
            (None, Some(y)) => {
                let ids = ids.get_or_insert_with(|| self.ids(d_new));
                ch.metrics_upsert.push(self.metrics_row(ids, d_new, y, 0));
            }
            _ => {}
        }
    }

    // -----------------------------------------------------------------------
    // sizes
    // -----------------------------------------------------------------------

    /// Counts and approximate heap bytes of the state.
    pub fn stats(&self) -> StateStats {
        let chunks: usize = self
            .students
            .iter()
            .map(|c| c.capacity() * std::mem::size_of::<Box<[u8]>>())
            .sum();
        // buckets (a power of two, 8/7 of the capacity) of a u32 and a control byte
        let index_bytes = (self.student_ix.capacity() * 8 / 7).next_power_of_two()
            * (std::mem::size_of::<u32>() + 1);
        let school_lists: usize = self.schools.iter().map(|s| s.students.capacity() * 4).sum();
        let cal_codes: usize = self
            .cal_codes_by_day
            .values()
            .map(|c| c.ver.len() * 8 + std::mem::size_of::<CalCode>() + 16)
            .sum();
        let cal: usize = self
            .cal
            .values()
            .map(|c| c.count.len() * 2 + std::mem::size_of::<CalAgg>() + 8)
            .sum();
        let names: usize = self
            .schools
            .iter()
            .map(|s| s.id.len() * 2 + 64)
            .sum::<usize>()
            + self.districts.len() * 128;
        StateStats {
            students: self.n_students,
            schools: self.schools.len(),
            dirty: self.dirty.len(),
            student_bytes: self.blob_bytes + chunks + index_bytes + school_lists,
            shared_bytes: cal_codes + cal + names,
        }
    }

    /// Count what the students' state holds (decodes every student: for tests, benches
    /// and diagnostics, not for every batch).
    pub fn census(&self) -> StateCensus {
        let mut c = StateCensus::default();
        let mut d = Decoded::default();
        for b in self.students.iter().flatten() {
            codec::decode(b, &mut d);
            c.units += d.units.len();
            c.spans += d.spans.len();
            c.events += d.events.len();
            c.tombstones += d.spans.iter().filter(|s| s.tomb).count()
                + d.events.iter().filter(|e| e.tomb).count();
        }
        c
    }
}

impl std::fmt::Debug for RollupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RollupState")
            .field("as_of", &self.as_of())
            .field("students", &self.n_students)
            .field("schools", &self.schools.len())
            .field("dirty", &self.dirty.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_days_round_trip_and_reject_out_of_range() {
        let d = NaiveDate::from_ymd_opt(2022, 5, 27).unwrap();
        assert_eq!(epoch_day(d), Some(19139));
        assert_eq!(from_epoch_day(19139), d);
        assert_eq!(
            epoch_day(NaiveDate::from_ymd_opt(1969, 12, 31).unwrap()),
            None
        );
        assert_eq!(
            epoch_day(NaiveDate::from_ymd_opt(2149, 6, 6).unwrap()),
            None
        );
    }
}
