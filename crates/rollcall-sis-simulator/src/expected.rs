//! Expected metrics: a plain batch calculation over the facts visible on a day, under
//! DESIGN.md's default policy. Written independently of the pipeline and kept obvious:
//! loops over instructional days, enrollments and events, exact milli-day integers.
//!
//! The default policy, as implemented here:
//! - enrolled day = an instructional day of the student's school ("Instructional day" or
//!   "Make-up day") between entry and exit date, **exit date inclusive**, ≤ `as_of`;
//! - a day's absence = min(1, Σ duration of its excused, unexcused and out-of-school
//!   suspension events) — **fractional** partial days; in-school suspension, tardy,
//!   early departure and present events count present; a day with no event is present
//!   (for positive-attendance districts it is also counted in `days_missing`);
//! - chronically absent = absence rate ≥ 10% with ≥ 10 enrolled days;
//! - tiers: satisfactory < 5% ≤ at_risk < 10% ≤ moderate_chronic < 20% ≤ severe_chronic;
//! - truant = unexcused days (sum of fractions) ≥ 3;
//! - schools count a student per school (FS195); districts and the state count distinct
//!   students (`district_id`, `student_id`), each judged on their days summed over the
//!   schools of that district.
//!
//! The judging settings (chronic threshold, minimum days, tier cut points, publication
//! threshold, zero rule) are a [`SimPolicy`], this crate's own (it shares no code with
//! the pipeline); [`SimPolicy::default`] is the defaults above, and
//! [`expected_metrics_under`] computes under another, all in exact integers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;

use chrono::NaiveDate;
use serde::Serialize;

use crate::model::{Category, Fact, World};

/// Students enrolled fewer days than this are not judged.
pub const MIN_ENROLLED_DAYS: u64 = 10;
/// Chronic threshold and tier cut points, in percent.
pub const CHRONIC_PERCENT: u64 = 10;
pub const AT_RISK_PERCENT: u64 = 5;
pub const SEVERE_PERCENT: u64 = 20;
/// Unexcused days (in milli-days) at which a student is truant.
pub const TRUANCY_MILLI: u64 = 3000;

/// The settings that judge students and publish counts, as the oracle applies them.
/// Rates are in basis points (1/10,000): 1000 = 10%.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimPolicy {
    pub chronic_bp: u64,
    pub min_enrolled_days: u64,
    pub at_risk_bp: u64,
    pub moderate_chronic_bp: u64,
    pub severe_chronic_bp: u64,
    /// A count below this is suppressed (with the whole row).
    pub publication_threshold: u64,
    /// Whether a count of 0 is suppressed too.
    pub suppress_zero_counts: bool,
}

impl Default for SimPolicy {
    fn default() -> Self {
        SimPolicy {
            chronic_bp: CHRONIC_PERCENT * 100,
            min_enrolled_days: MIN_ENROLLED_DAYS,
            at_risk_bp: AT_RISK_PERCENT * 100,
            moderate_chronic_bp: CHRONIC_PERCENT * 100,
            severe_chronic_bp: SEVERE_PERCENT * 100,
            publication_threshold: 10,
            suppress_zero_counts: false,
        }
    }
}

impl SimPolicy {
    /// absent ÷ enrolled ≥ bp ÷ 10,000, exactly: absent_milli × 10 ≥ enrolled × bp.
    fn at_least(absent_milli: u64, enrolled: u64, bp: u64) -> bool {
        absent_milli * 10 >= enrolled * bp
    }

    /// Whether one count is suppressed.
    pub fn is_suppressed(&self, count: u64) -> bool {
        count < self.publication_threshold && (count > 0 || self.suppress_zero_counts)
    }

    /// Whether a row with these counts is suppressed (any of them small).
    pub fn row_suppressed(&self, counts: &[u64]) -> bool {
        counts.iter().any(|c| self.is_suppressed(*c))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Satisfactory,
    AtRisk,
    ModerateChronic,
    SevereChronic,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Satisfactory => "satisfactory",
            Tier::AtRisk => "at_risk",
            Tier::ModerateChronic => "moderate_chronic",
            Tier::SevereChronic => "severe_chronic",
        }
    }

    /// The tier of `absent_milli` absent milli-days over `enrolled` days (exact integers),
    /// under the default policy.
    pub fn of(absent_milli: u64, enrolled: u64) -> Tier {
        Tier::under(absent_milli, enrolled, &SimPolicy::default())
    }

    /// The tier under `p`.
    pub fn under(absent_milli: u64, enrolled: u64, p: &SimPolicy) -> Tier {
        let at = |bp: u64| SimPolicy::at_least(absent_milli, enrolled, bp);
        if at(p.severe_chronic_bp) {
            Tier::SevereChronic
        } else if at(p.moderate_chronic_bp) {
            Tier::ModerateChronic
        } else if at(p.at_risk_bp) {
            Tier::AtRisk
        } else {
            Tier::Satisfactory
        }
    }
}

/// Day counts of one student at one school (or summed over a district's schools).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Days {
    pub enrolled: u64,
    pub absent_milli: u64,
    pub excused_milli: u64,
    pub unexcused_milli: u64,
    pub suspended_milli: u64,
    pub in_school_suspension: u64,
    pub tardy: u64,
    pub missing: u64,
}

impl Days {
    fn add(&mut self, o: &Days) {
        self.enrolled += o.enrolled;
        self.absent_milli += o.absent_milli;
        self.excused_milli += o.excused_milli;
        self.unexcused_milli += o.unexcused_milli;
        self.suspended_milli += o.suspended_milli;
        self.in_school_suspension += o.in_school_suspension;
        self.tardy += o.tardy;
        self.missing += o.missing;
    }

    pub fn meets_min_enrollment(&self, p: &SimPolicy) -> bool {
        self.enrolled >= p.min_enrolled_days
    }

    pub fn chronically_absent(&self, p: &SimPolicy) -> bool {
        self.meets_min_enrollment(p)
            && SimPolicy::at_least(self.absent_milli, self.enrolled, p.chronic_bp)
    }

    pub fn tier(&self, p: &SimPolicy) -> Option<Tier> {
        (self.enrolled > 0).then(|| Tier::under(self.absent_milli, self.enrolled, p))
    }

    pub fn absence_rate(&self) -> f64 {
        if self.enrolled == 0 {
            0.0
        } else {
            self.absent_milli as f64 / 1000.0 / self.enrolled as f64
        }
    }
}

fn days_f(milli: u64) -> f64 {
    milli as f64 / 1000.0
}

/// One student at one school.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudentSchoolRow {
    pub district_id: String,
    pub school_id: u64,
    pub student_id: String,
    pub days_enrolled: u64,
    pub days_absent: f64,
    pub days_excused: f64,
    pub days_unexcused: f64,
    /// Out-of-school suspension days (absent).
    pub days_suspended: f64,
    /// In-school suspension days (present).
    pub days_in_school_suspension: u64,
    /// Days with a tardy or early-departure event.
    pub days_tardy: u64,
    /// Positive-attendance districts only: enrolled days with no record (counted present).
    pub days_missing: u64,
    pub absence_rate: f64,
    pub meets_min_enrollment: bool,
    pub chronically_absent: bool,
    pub tier: Tier,
    pub truant: bool,
}

/// Counts over a set of judged students (a school, a district, the state).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Students with at least one enrolled day.
    pub students_enrolled: u64,
    /// Students with at least [`MIN_ENROLLED_DAYS`] enrolled days (the denominator).
    pub students_meeting_min_enrollment: u64,
    pub chronically_absent: u64,
    /// chronically_absent ÷ students_meeting_min_enrollment (0 when none).
    pub chronic_absence_rate: f64,
    /// Tier counts among students meeting the minimum enrollment.
    pub satisfactory: u64,
    pub at_risk: u64,
    pub moderate_chronic: u64,
    pub severe_chronic: u64,
    pub truant: u64,
    pub days_enrolled: u64,
    pub days_absent: f64,
}

impl Counts {
    /// The six counts a published aggregate row shows, in the views' order: enrolled
    /// (meeting the minimum), chronic, satisfactory, at risk, moderate, severe.
    pub fn published(&self) -> [u64; 6] {
        [
            self.students_meeting_min_enrollment,
            self.chronically_absent,
            self.satisfactory,
            self.at_risk,
            self.moderate_chronic,
            self.severe_chronic,
        ]
    }

    fn judge(&mut self, d: &Days, p: &SimPolicy) {
        if d.enrolled == 0 {
            return;
        }
        self.students_enrolled += 1;
        self.days_enrolled += d.enrolled;
        self.days_absent += days_f(d.absent_milli);
        if d.unexcused_milli >= TRUANCY_MILLI {
            self.truant += 1;
        }
        if !d.meets_min_enrollment(p) {
            return;
        }
        self.students_meeting_min_enrollment += 1;
        if d.chronically_absent(p) {
            self.chronically_absent += 1;
        }
        match d.tier(p).expect("enrolled") {
            Tier::Satisfactory => self.satisfactory += 1,
            Tier::AtRisk => self.at_risk += 1,
            Tier::ModerateChronic => self.moderate_chronic += 1,
            Tier::SevereChronic => self.severe_chronic += 1,
        }
        self.chronic_absence_rate =
            self.chronically_absent as f64 / self.students_meeting_min_enrollment as f64;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchoolRow {
    pub district_id: String,
    pub school_id: u64,
    #[serde(flatten)]
    pub counts: Counts,
}

/// One school × grade (the grade of the student's latest enrollment at the school).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GradeRow {
    pub district_id: String,
    pub school_id: u64,
    /// The simulator's grade (`K`, `G1`, …), not the SIS string the pipeline shows.
    pub grade: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// One school on one date of the trend: its students judged on their days through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrendRow {
    pub district_id: String,
    pub school_id: u64,
    pub date: NaiveDate,
    /// Students with at least the minimum enrolled days through `date`.
    pub students_meeting_min_enrollment: u64,
    pub chronically_absent: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DistrictRow {
    pub district_id: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// Expected results as of a date.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expected {
    /// Instructional days up to and including this date count.
    pub as_of: NaiveDate,
    /// Facts visible at the end of this simulated day are used.
    pub visible_through: NaiveDate,
    pub newest_change_version: u64,
    /// Sorted by district, school, student.
    pub students: Vec<StudentSchoolRow>,
    pub schools: Vec<SchoolRow>,
    /// Sorted by district, school, grade.
    pub grades: Vec<GradeRow>,
    /// Every school on every date one of its students is enrolled, ≤ `as_of`; sorted.
    pub trend: Vec<TrendRow>,
    pub districts: Vec<DistrictRow>,
    pub state: Counts,
    /// The policy these were computed under.
    pub policy: SimPolicy,
}

/// Expected metrics for instructional days ≤ `as_of`, from the facts visible at the end
/// of simulated day `as_of` — what a correct pipeline shows after replaying the feeds
/// through that day.
pub fn expected_metrics(world: &World, as_of: NaiveDate) -> Expected {
    expected_metrics_at(world, as_of, as_of)
}

/// Expected metrics for instructional days ≤ `as_of` from the facts visible at the end
/// of `visible_through` (e.g. `world.last_day` for the final truth of a past date).
pub fn expected_metrics_at(
    world: &World,
    as_of: NaiveDate,
    visible_through: NaiveDate,
) -> Expected {
    expected_metrics_under(world, as_of, visible_through, &SimPolicy::default())
}

/// [`expected_metrics_at`] under the policy `p`.
pub fn expected_metrics_under(
    world: &World,
    as_of: NaiveDate,
    visible_through: NaiveDate,
    p: &SimPolicy,
) -> Expected {
    let view = world.visible_through(visible_through);
    let facts = view.current_facts();

    // Instructional days per school.
    let mut instructional: HashMap<u32, BTreeSet<NaiveDate>> = HashMap::new();
    for fact in facts.values() {
        if let Fact::CalendarDate(c) = fact {
            if c.event.is_instructional() && c.date <= as_of {
                instructional.entry(c.school).or_default().insert(c.date);
            }
        }
    }
    // Events per (school, student, date).
    let mut events: HashMap<(u32, u32, NaiveDate), Vec<Category>> = HashMap::new();
    let mut durations: HashMap<(u32, u32, NaiveDate), Vec<(Category, u64)>> = HashMap::new();
    for fact in facts.values() {
        if let Fact::Attendance(a) = fact {
            let k = (a.school, a.student, a.date);
            events.entry(k).or_default().push(a.category);
            durations
                .entry(k)
                .or_default()
                .push((a.category, u64::from(a.absent_milli)));
        }
    }
    // Enrolled days per (school, student): a set, so overlapping enrollments at one
    // school never count a day twice.
    let mut enrolled: BTreeMap<(u32, u32), BTreeSet<NaiveDate>> = BTreeMap::new();
    // The grade of the latest enrollment (by entry date) per (school, student).
    let mut grade_of: BTreeMap<(u32, u32), (NaiveDate, String)> = BTreeMap::new();
    for fact in facts.values() {
        if let Fact::Enrollment(e) = fact {
            let g = grade_of
                .entry((e.school, e.student))
                .or_insert((e.entry_date, format!("{:?}", e.grade)));
            if e.entry_date > g.0 {
                *g = (e.entry_date, format!("{:?}", e.grade));
            }
            let set = enrolled.entry((e.school, e.student)).or_default();
            if let Some(days) = instructional.get(&e.school) {
                for d in days.range(e.entry_date..) {
                    if e.exit_date.is_some_and(|x| *d > x) {
                        break;
                    }
                    set.insert(*d);
                }
            }
        }
    }

    let mut per_school_student: BTreeMap<(u32, u32), Days> = BTreeMap::new();
    // Per (school, student): (date, enrolled days, absent milli) through each enrolled date.
    let mut through: Through = BTreeMap::new();
    for (&(school, student), dates) in &enrolled {
        let positive = world.district_of_school(school).spec.positive_attendance;
        let mut d = Days::default();
        for date in dates {
            d.enrolled += 1;
            let k = (school, student, *date);
            let Some(evs) = durations.get(&k) else {
                if positive {
                    d.missing += 1;
                }
                through.entry((school, student)).or_default().push((
                    *date,
                    d.enrolled,
                    d.absent_milli,
                ));
                continue;
            };
            let mut absent = 0;
            for &(cat, milli) in evs {
                match cat {
                    Category::ExcusedAbsence => d.excused_milli += milli,
                    Category::UnexcusedAbsence => d.unexcused_milli += milli,
                    Category::OutOfSchoolSuspension => d.suspended_milli += milli,
                    _ => {}
                }
                if cat.counts_absent() {
                    absent += milli;
                }
            }
            d.absent_milli += absent.min(1000);
            through
                .entry((school, student))
                .or_default()
                .push((*date, d.enrolled, d.absent_milli));
            let cats = &events[&k];
            if cats.contains(&Category::InSchoolSuspension) {
                d.in_school_suspension += 1;
            }
            if cats.contains(&Category::Tardy) || cats.contains(&Category::EarlyDeparture) {
                d.tardy += 1;
            }
        }
        per_school_student.insert((school, student), d);
    }

    let mut students = Vec::new();
    let mut schools: BTreeMap<u32, Counts> = BTreeMap::new();
    let mut grades: BTreeMap<(u32, String), Counts> = BTreeMap::new();
    let mut per_district_student: BTreeMap<(u16, u32), Days> = BTreeMap::new();
    for (&(school, student), d) in &per_school_student {
        if d.enrolled == 0 {
            continue;
        }
        let s = &world.schools[school as usize];
        students.push(StudentSchoolRow {
            district_id: world.districts[s.district as usize].spec.id.clone(),
            school_id: s.school_id,
            student_id: world.students[student as usize].unique_id.clone(),
            days_enrolled: d.enrolled,
            days_absent: days_f(d.absent_milli),
            days_excused: days_f(d.excused_milli),
            days_unexcused: days_f(d.unexcused_milli),
            days_suspended: days_f(d.suspended_milli),
            days_in_school_suspension: d.in_school_suspension,
            days_tardy: d.tardy,
            days_missing: d.missing,
            absence_rate: d.absence_rate(),
            meets_min_enrollment: d.meets_min_enrollment(p),
            chronically_absent: d.chronically_absent(p),
            tier: d.tier(p).expect("enrolled"),
            truant: d.unexcused_milli >= TRUANCY_MILLI,
        });
        schools.entry(school).or_default().judge(d, p);
        let grade = grade_of[&(school, student)].1.clone();
        grades.entry((school, grade)).or_default().judge(d, p);
        per_district_student
            .entry((s.district, student))
            .or_default()
            .add(d);
    }
    let mut districts: BTreeMap<u16, Counts> = BTreeMap::new();
    let mut state = Counts::default();
    for (&(district, _), d) in &per_district_student {
        districts.entry(district).or_default().judge(d, p);
        state.judge(d, p);
    }
    let school_key = |s: u32| {
        let school = &world.schools[s as usize];
        (
            world.districts[school.district as usize].spec.id.clone(),
            school.school_id,
        )
    };
    let mut grades: Vec<GradeRow> = grades
        .into_iter()
        .map(|((s, grade), counts)| {
            let (district_id, school_id) = school_key(s);
            GradeRow {
                district_id,
                school_id,
                grade,
                counts,
            }
        })
        .collect();
    grades.sort_by(|a, b| {
        (&a.district_id, a.school_id, &a.grade).cmp(&(&b.district_id, b.school_id, &b.grade))
    });
    let mut trend: Vec<TrendRow> = trend_counts(&through, p)
        .into_iter()
        .map(|((s, date), (n, c))| {
            let (district_id, school_id) = school_key(s);
            TrendRow {
                district_id,
                school_id,
                date,
                students_meeting_min_enrollment: n,
                chronically_absent: c,
            }
        })
        .collect();
    trend.sort_by(|a, b| {
        (&a.district_id, a.school_id, a.date).cmp(&(&b.district_id, b.school_id, b.date))
    });
    students.sort_by(|a, b| {
        (&a.district_id, a.school_id, &a.student_id).cmp(&(
            &b.district_id,
            b.school_id,
            &b.student_id,
        ))
    });
    let mut schools: Vec<SchoolRow> = schools
        .into_iter()
        .map(|(s, counts)| {
            let school = &world.schools[s as usize];
            SchoolRow {
                district_id: world.districts[school.district as usize].spec.id.clone(),
                school_id: school.school_id,
                counts,
            }
        })
        .collect();
    schools.sort_by(|a, b| (&a.district_id, a.school_id).cmp(&(&b.district_id, b.school_id)));
    let mut districts: Vec<DistrictRow> = districts
        .into_iter()
        .map(|(d, counts)| DistrictRow {
            district_id: world.districts[d as usize].spec.id.clone(),
            counts,
        })
        .collect();
    districts.sort_by(|a, b| a.district_id.cmp(&b.district_id));
    Expected {
        as_of,
        visible_through,
        newest_change_version: view.newest_cv,
        students,
        schools,
        grades,
        trend,
        districts,
        state,
        policy: p.clone(),
    }
}

/// Per (school, student): (date, enrolled days, absent milli-days) through each of the
/// student's enrolled dates at the school.
type Through = BTreeMap<(u32, u32), Vec<(NaiveDate, u64, u64)>>;

/// The trend: for each school and each date one of its students is enrolled, every
/// student of the school judged on their days through that date (a student who left
/// keeps their last standing).
fn trend_counts(through: &Through, p: &SimPolicy) -> BTreeMap<(u32, NaiveDate), (u64, u64)> {
    let mut dates: BTreeMap<u32, BTreeSet<NaiveDate>> = BTreeMap::new();
    for (&(school, _), seq) in through {
        dates
            .entry(school)
            .or_default()
            .extend(seq.iter().map(|t| t.0));
    }
    let mut out: BTreeMap<(u32, NaiveDate), (u64, u64)> = BTreeMap::new();
    for (&(school, _), seq) in through {
        let mut i = 0;
        let mut standing: Option<(u64, u64)> = None;
        for &date in &dates[&school] {
            while i < seq.len() && seq[i].0 <= date {
                standing = Some((seq[i].1, seq[i].2));
                i += 1;
            }
            let e = out.entry((school, date)).or_default();
            if let Some((enrolled, absent)) = standing {
                if enrolled >= p.min_enrolled_days {
                    e.0 += 1;
                    if SimPolicy::at_least(absent, enrolled, p.chronic_bp) {
                        e.1 += 1;
                    }
                }
            }
        }
    }
    out
}

impl Expected {
    /// Writes the whole result as one pretty JSON document.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        serde_json::to_writer_pretty(&mut f, self)?;
        f.write_all(b"\n")?;
        f.flush()?;
        Ok(())
    }

    /// Writes `students.csv`, `schools.csv`, `districts.csv` and `state.csv` into `dir`
    /// (created if missing). Returns the paths written.
    pub fn write_csv(&self, dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        let path = dir.join("students.csv");
        let mut w = csv::Writer::from_path(&path)?;
        for row in &self.students {
            w.serialize(row)?;
        }
        w.flush()?;
        written.push(path);

        // csv cannot serialize flattened structs: write the count columns by hand.
        let header = [
            "students_enrolled",
            "students_meeting_min_enrollment",
            "chronically_absent",
            "chronic_absence_rate",
            "satisfactory",
            "at_risk",
            "moderate_chronic",
            "severe_chronic",
            "truant",
            "days_enrolled",
            "days_absent",
        ];
        let cells = |c: &Counts| -> Vec<String> {
            vec![
                c.students_enrolled.to_string(),
                c.students_meeting_min_enrollment.to_string(),
                c.chronically_absent.to_string(),
                c.chronic_absence_rate.to_string(),
                c.satisfactory.to_string(),
                c.at_risk.to_string(),
                c.moderate_chronic.to_string(),
                c.severe_chronic.to_string(),
                c.truant.to_string(),
                c.days_enrolled.to_string(),
                c.days_absent.to_string(),
            ]
        };
        let path = dir.join("schools.csv");
        let mut w = csv::Writer::from_path(&path)?;
        w.write_record(["district_id", "school_id"].iter().chain(header.iter()))?;
        for s in &self.schools {
            let mut rec = vec![s.district_id.clone(), s.school_id.to_string()];
            rec.extend(cells(&s.counts));
            w.write_record(&rec)?;
        }
        w.flush()?;
        written.push(path);

        let path = dir.join("districts.csv");
        let mut w = csv::Writer::from_path(&path)?;
        w.write_record(["district_id"].iter().chain(header.iter()))?;
        for d in &self.districts {
            let mut rec = vec![d.district_id.clone()];
            rec.extend(cells(&d.counts));
            w.write_record(&rec)?;
        }
        w.flush()?;
        written.push(path);

        let path = dir.join("state.csv");
        let mut w = csv::Writer::from_path(&path)?;
        w.write_record(header)?;
        w.write_record(cells(&self.state))?;
        w.flush()?;
        written.push(path);
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CorrectionStyle, DistrictSpec, Feed, SimConfig};
    use crate::model::*;

    fn sep(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 9, d).unwrap()
    }

    fn oct(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 10, d).unwrap()
    }

    /// School days: the 20 weekdays 2–27 September 2024; 30 September is a holiday and
    /// 1 October a weather day.
    fn school_days() -> Vec<NaiveDate> {
        (2..=27)
            .map(sep)
            .filter(|d| d.weekday().number_from_monday() <= 5)
            .collect()
    }

    use chrono::Datelike;

    struct Tiny {
        positive: bool,
        records: Vec<Record>,
        changes: Vec<(NaiveDate, RecordId, Op)>,
    }

    const A: u32 = 0;
    const B: u32 = 1;

    impl Tiny {
        fn new(positive: bool) -> Tiny {
            let mut t = Tiny {
                positive,
                records: vec![],
                changes: vec![],
            };
            for school in [A, B] {
                for date in school_days() {
                    t.calendar(school, date, CalendarEvent::InstructionalDay);
                }
                t.calendar(school, sep(30), CalendarEvent::Holiday);
                t.calendar(school, oct(1), CalendarEvent::WeatherDay);
            }
            t
        }

        fn add(
            &mut self,
            visible: NaiveDate,
            fact: Fact,
            malformed: Option<Malformation>,
        ) -> RecordId {
            self.records.push(Record {
                resource: fact.resource(),
                district: 0,
                malformed,
            });
            let id = (self.records.len() - 1) as RecordId;
            self.changes.push((visible, id, Op::Upsert(fact)));
            id
        }

        fn calendar(&mut self, school: u32, date: NaiveDate, event: CalendarEvent) {
            self.add(
                sep(1),
                Fact::CalendarDate(CalendarDateFact {
                    school,
                    date,
                    event,
                }),
                None,
            );
        }

        fn enroll(
            &mut self,
            school: u32,
            student: u32,
            entry: NaiveDate,
            exit: Option<NaiveDate>,
        ) -> RecordId {
            self.add(
                sep(1),
                Fact::Enrollment(EnrollmentFact {
                    school,
                    student,
                    entry_date: entry,
                    exit_date: exit,
                    grade: Grade::G3,
                    entry_type: EntryType::NextYearSchool,
                    exit_type: exit.map(|_| ExitType::Withdrawn),
                }),
                None,
            )
        }

        fn event(
            &mut self,
            school: u32,
            student: u32,
            date: NaiveDate,
            category: Category,
            absent_milli: u16,
        ) -> RecordId {
            self.add(
                sep(1),
                Fact::Attendance(att(school, student, date, category, absent_milli)),
                None,
            )
        }

        fn world(mut self) -> World {
            self.changes.sort_by_key(|c| c.0);
            let spec = DistrictSpec {
                id: "d1".into(),
                name: "Tiny".into(),
                lea_id: 1,
                feed: Feed::Edfi,
                schools: 2,
                students_per_school: 3,
                positive_attendance: self.positive,
                corrections: CorrectionStyle::KeyChange,
            };
            let schools = [A, B]
                .iter()
                .map(|s| School {
                    district: 0,
                    school_id: 1001 + u64::from(*s),
                    local_code: format!("{:03}", s + 1),
                    name: format!("School {s}"),
                    level: SchoolLevel::Elementary,
                })
                .collect();
            let students = (1..=7)
                .map(|i| Student {
                    district: 0,
                    unique_id: format!("s{i}"),
                    first_name: "F".into(),
                    last_name: "L".into(),
                    grade: Grade::G3,
                })
                .collect();
            World::assemble(
                SimConfig {
                    districts: vec![spec.clone()],
                    ..SimConfig::default()
                },
                vec![District {
                    spec,
                    schools: vec![A, B],
                    first_instructional_day: sep(2),
                    last_instructional_day: sep(27),
                }],
                schools,
                students,
                self.records,
                self.changes,
                NaiveDate::from_ymd_opt(2024, 8, 1).unwrap(),
                oct(31),
            )
        }
    }

    fn att(
        school: u32,
        student: u32,
        date: NaiveDate,
        category: Category,
        absent_milli: u16,
    ) -> AttendanceFact {
        AttendanceFact {
            school,
            student,
            date,
            category,
            absent_milli,
            minutes_missed: absent_milli / 1000 * 360,
            reason: Reason::None,
        }
    }

    /// Students (index → id): 0 s1, 1 s2, 2 s3, 3 s4, 4 s5, 5 s6 (no-show), 6 s7.
    fn scenario() -> World {
        let mut t = Tiny::new(false);
        // s1 at A all month: 1 excused + ½ unexcused + 1 OSS = 2.5 absent days of 20.
        t.enroll(A, 0, sep(2), None);
        t.event(A, 0, sep(3), Category::ExcusedAbsence, 1000);
        let half = t.event(A, 0, sep(4), Category::UnexcusedAbsence, 500);
        t.event(A, 0, sep(5), Category::OutOfSchoolSuspension, 1000);
        t.event(A, 0, sep(6), Category::InSchoolSuspension, 0);
        t.event(A, 0, sep(9), Category::Tardy, 0);
        t.event(A, 0, sep(10), Category::EarlyDeparture, 0);
        t.event(A, 0, sep(30), Category::UnexcusedAbsence, 1000); // a holiday: ignored
        t.event(A, 0, oct(1), Category::UnexcusedAbsence, 1000); // a weather day: ignored
        t.add(
            sep(11),
            Fact::Attendance(att(A, 0, sep(11), Category::UnexcusedAbsence, 1000)),
            Some(Malformation::UnknownCode),
        );
        // The half day is corrected to excused on 10 October.
        t.changes.push((
            oct(10),
            half,
            Op::Upsert(Fact::Attendance(att(
                A,
                0,
                sep(4),
                Category::ExcusedAbsence,
                500,
            ))),
        ));
        // s2 at A, exit 17 September inclusive: 12 days, 1 absent (8.3%).
        t.enroll(A, 1, sep(2), Some(sep(17)));
        t.event(A, 1, sep(16), Category::UnexcusedAbsence, 1000);
        t.event(A, 1, sep(18), Category::UnexcusedAbsence, 1000); // after exit: ignored
                                                                  // s3 at A from 16 September: 10 days, 1 absent = exactly 10%.
        t.enroll(A, 2, sep(16), None);
        t.event(A, 2, sep(20), Category::UnexcusedAbsence, 1000);
        // s4 transfers: A 2–13 September (10 days, 1 absent), B from 16 (10 days, 0).
        t.enroll(A, 3, sep(2), Some(sep(13)));
        t.event(A, 3, sep(9), Category::ExcusedAbsence, 1000);
        t.enroll(B, 3, sep(16), None);
        // s5 at B from 23 September: 5 days, 3 unexcused (below the minimum; truant).
        t.enroll(B, 4, sep(23), None);
        for d in [23, 24, 25] {
            t.event(B, 4, sep(d), Category::UnexcusedAbsence, 1000);
        }
        // s6: a no-show, purged on 20 September with the events.
        let e = t.enroll(A, 5, sep(2), None);
        let mut purged = vec![e];
        for d in [2, 3, 4] {
            purged.push(t.event(A, 5, sep(d), Category::UnexcusedAbsence, 1000));
        }
        for r in purged {
            t.changes.push((sep(20), r, Op::Delete));
        }
        t.world()
    }

    fn row<'a>(e: &'a Expected, school: u64, student: &str) -> &'a StudentSchoolRow {
        e.students
            .iter()
            .find(|r| r.school_id == school && r.student_id == student)
            .unwrap_or_else(|| panic!("no row for {school} {student}"))
    }

    #[test]
    fn fractional_partial_days_oss_absent_iss_and_tardy_present() {
        let world = scenario();
        let e = expected_metrics(&world, sep(27));
        let s1 = row(&e, 1001, "s1");
        assert_eq!(s1.days_enrolled, 20);
        assert_eq!(s1.days_absent, 2.5);
        assert_eq!(s1.days_excused, 1.0);
        assert_eq!(s1.days_unexcused, 0.5);
        assert_eq!(s1.days_suspended, 1.0);
        assert_eq!(s1.days_in_school_suspension, 1);
        assert_eq!(s1.days_tardy, 2);
        assert_eq!(s1.absence_rate, 0.125);
        assert!(s1.chronically_absent);
        assert_eq!(s1.tier, Tier::ModerateChronic);
        assert!(!s1.truant);
    }

    #[test]
    fn exit_date_is_an_enrolled_day_and_later_events_are_ignored() {
        let e = expected_metrics(&scenario(), sep(27));
        let s2 = row(&e, 1001, "s2");
        assert_eq!((s2.days_enrolled, s2.days_absent), (12, 1.0));
        assert_eq!(s2.tier, Tier::AtRisk);
        assert!(!s2.chronically_absent);
    }

    #[test]
    fn exactly_ten_percent_with_ten_days_is_chronic() {
        let e = expected_metrics(&scenario(), sep(27));
        let s3 = row(&e, 1001, "s3");
        assert_eq!((s3.days_enrolled, s3.days_absent), (10, 1.0));
        assert!(s3.chronically_absent && s3.meets_min_enrollment);
        assert_eq!(s3.tier, Tier::ModerateChronic);
    }

    #[test]
    fn below_minimum_enrollment_is_not_judged_chronic() {
        let e = expected_metrics(&scenario(), sep(27));
        let s5 = row(&e, 1002, "s5");
        assert_eq!((s5.days_enrolled, s5.days_absent), (5, 3.0));
        assert!(!s5.meets_min_enrollment && !s5.chronically_absent);
        assert_eq!(s5.tier, Tier::SevereChronic);
        assert!(s5.truant, "3 unexcused days");
    }

    #[test]
    fn school_counts_per_school_and_district_counts_distinct_students_on_combined_days() {
        let e = expected_metrics(&scenario(), sep(27));
        // s4 is chronic at A (1 of 10) and satisfactory at B (0 of 10).
        assert!(row(&e, 1001, "s4").chronically_absent);
        assert_eq!(row(&e, 1002, "s4").tier, Tier::Satisfactory);
        let a = &e
            .schools
            .iter()
            .find(|s| s.school_id == 1001)
            .unwrap()
            .counts;
        assert_eq!(a.students_enrolled, 4);
        assert_eq!(a.students_meeting_min_enrollment, 4);
        assert_eq!(a.chronically_absent, 3);
        assert_eq!(
            (
                a.satisfactory,
                a.at_risk,
                a.moderate_chronic,
                a.severe_chronic
            ),
            (0, 1, 3, 0)
        );
        assert_eq!(a.chronic_absence_rate, 0.75);
        let b = &e
            .schools
            .iter()
            .find(|s| s.school_id == 1002)
            .unwrap()
            .counts;
        assert_eq!(
            (b.students_enrolled, b.students_meeting_min_enrollment),
            (2, 1)
        );
        assert_eq!((b.chronically_absent, b.satisfactory, b.truant), (0, 1, 1));
        // District: s4 judged on 20 days with 1 absence = 5% (at risk, not chronic).
        let d = &e.districts[0].counts;
        assert_eq!(d.students_enrolled, 5);
        assert_eq!(d.students_meeting_min_enrollment, 4);
        assert_eq!(d.chronically_absent, 2);
        assert_eq!(
            (
                d.satisfactory,
                d.at_risk,
                d.moderate_chronic,
                d.severe_chronic
            ),
            (0, 2, 2, 0)
        );
        assert_eq!(d.days_enrolled, 20 + 12 + 10 + 20 + 5);
        assert_eq!(d.days_absent, 2.5 + 1.0 + 1.0 + 1.0 + 3.0);
        assert_eq!(e.state, *d);
    }

    #[test]
    fn deleted_and_malformed_records_are_excluded_and_deletes_apply_when_visible() {
        let world = scenario();
        let e = expected_metrics(&world, sep(27));
        assert!(e.students.iter().all(|r| r.student_id != "s6"));
        assert_eq!(
            row(&e, 1001, "s1").days_absent,
            2.5,
            "the malformed event is not counted"
        );
        // Before the purge is visible the no-show counts: 3 of 9 days absent.
        let before = expected_metrics(&world, sep(12));
        let s6 = row(&before, 1001, "s6");
        assert_eq!((s6.days_enrolled, s6.days_absent), (9, 3.0));
    }

    #[test]
    fn as_of_cuts_the_days_and_late_corrections_apply_once_visible() {
        let world = scenario();
        let e = expected_metrics(&world, sep(13));
        let s1 = row(&e, 1001, "s1");
        assert_eq!((s1.days_enrolled, s1.days_absent), (10, 2.5));
        assert_eq!(s1.tier, Tier::SevereChronic);
        assert!(
            e.students.iter().all(|r| r.student_id != "s3"),
            "not enrolled yet"
        );
        // The correction (visible 10 October) turns the half day excused.
        let later = expected_metrics_at(&world, sep(27), oct(15));
        let s1 = row(&later, 1001, "s1");
        assert_eq!(
            (s1.days_excused, s1.days_unexcused, s1.days_absent),
            (1.5, 0.0, 2.5)
        );
    }

    #[test]
    fn positive_attendance_missing_days_count_present_and_are_reported() {
        let mut t = Tiny::new(true);
        t.enroll(A, 0, sep(2), None);
        let days = school_days();
        for d in &days[2..] {
            t.event(A, 0, *d, Category::Present, 0);
        }
        let e = expected_metrics(&t.world(), sep(27));
        let s1 = row(&e, 1001, "s1");
        assert_eq!(
            (s1.days_enrolled, s1.days_absent, s1.days_missing),
            (20, 0.0, 2)
        );
    }

    #[test]
    fn another_policy_judges_and_publishes_by_its_own_settings() {
        let p = SimPolicy {
            chronic_bp: 1500,
            min_enrolled_days: 20,
            at_risk_bp: 700,
            moderate_chronic_bp: 1500,
            severe_chronic_bp: 2500,
            publication_threshold: 5,
            suppress_zero_counts: false,
        };
        let world = scenario();
        let e = expected_metrics_under(&world, sep(27), sep(27), &p);
        // s1: 2.5 of 20 = 12.5%: at risk, not chronic under 15%.
        let s1 = row(&e, 1001, "s1");
        assert!(s1.meets_min_enrollment && !s1.chronically_absent);
        assert_eq!(s1.tier, Tier::AtRisk);
        // s3: 10 days is below the minimum of 20.
        assert!(!row(&e, 1001, "s3").meets_min_enrollment);
        // s4 in the district: 20 days, 1 absent = 5% < 7%: satisfactory.
        let d = &e.districts[0].counts;
        assert_eq!(d.students_meeting_min_enrollment, 2, "s1 and s4");
        assert_eq!((d.satisfactory, d.at_risk), (1, 1));
        // Publication: 1..4 suppressed, 0 and 5 published.
        assert!(!p.is_suppressed(0) && p.is_suppressed(1) && p.is_suppressed(4));
        assert!(!p.is_suppressed(5));
        let zeros = SimPolicy {
            suppress_zero_counts: true,
            ..p.clone()
        };
        assert!(zeros.is_suppressed(0));
        // The trend on the last day equals the school counts.
        let a_last = e
            .trend
            .iter()
            .filter(|t| t.school_id == 1001)
            .max_by_key(|t| t.date)
            .unwrap();
        let a = &e
            .schools
            .iter()
            .find(|s| s.school_id == 1001)
            .unwrap()
            .counts;
        assert_eq!(
            (
                a_last.students_meeting_min_enrollment,
                a_last.chronically_absent
            ),
            (a.students_meeting_min_enrollment, a.chronically_absent)
        );
        // Grades partition the school.
        let by_grade: u64 = e
            .grades
            .iter()
            .filter(|g| g.school_id == 1001)
            .map(|g| g.counts.students_enrolled)
            .sum();
        assert_eq!(by_grade, a.students_enrolled);
    }

    #[test]
    fn tier_cut_points_are_exact() {
        assert_eq!(Tier::of(499, 10), Tier::Satisfactory);
        assert_eq!(Tier::of(500, 10), Tier::AtRisk);
        assert_eq!(Tier::of(999, 10), Tier::AtRisk);
        assert_eq!(Tier::of(1000, 10), Tier::ModerateChronic);
        assert_eq!(Tier::of(3000, 15), Tier::SevereChronic);
        assert_eq!(Tier::of(2999, 15), Tier::ModerateChronic);
    }
}
