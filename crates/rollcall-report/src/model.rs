//! The report's data model: what the BI views returned for one school year, and the pure
//! derivations the charts need (trend series, absence breakdown, orderings). No I/O.

use std::collections::BTreeMap;

use chrono::NaiveDate;

/// DESIGN.md's default publication threshold; the report uses the one the views were
/// built with ([`ViewRules`]).
pub const PUBLICATION_THRESHOLD: u64 = 10;

/// The policy settings the views were built with, as recorded beside them
/// (`view_policy`): the publication threshold the report applies itself where no view
/// does (the absence breakdown, whose source is per student), and the cut points its
/// labels name. Read, never computed: the numbers come from the views.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewRules {
    pub publication_threshold: u64,
    pub min_enrolled_days: u64,
    pub chronic_threshold: f64,
    pub suppress_zero_counts: bool,
    /// Tier cut points at risk, moderate, severe, as rates.
    pub tier_cuts: [f64; 3],
}

impl Default for ViewRules {
    fn default() -> Self {
        ViewRules {
            publication_threshold: PUBLICATION_THRESHOLD,
            min_enrolled_days: 10,
            chronic_threshold: 0.10,
            suppress_zero_counts: false,
            tier_cuts: [0.05, 0.10, 0.20],
        }
    }
}

fn pct(rate: f64) -> String {
    let p = (rate * 10_000.0).round() / 100.0;
    if p.fract() == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p}%")
    }
}

impl ViewRules {
    /// The chronic threshold as shown: `10%`.
    pub fn chronic_percent(&self) -> String {
        pct(self.chronic_threshold)
    }

    /// What a suppressed figure shows: `suppressed (< 10)`.
    pub fn suppressed_text(&self) -> String {
        format!("suppressed (< {})", self.publication_threshold)
    }

    /// Whether a count is suppressed, as the views decide.
    pub fn is_suppressed(&self, count: u64) -> bool {
        count < self.publication_threshold && (count > 0 || self.suppress_zero_counts)
    }

    /// A tier's label with its cut points: `At risk (5–10%)`.
    pub fn tier_label(&self, t: Tier) -> String {
        let [a, m, s] = self.tier_cuts;
        match t {
            Tier::Satisfactory => format!("Satisfactory (< {})", pct(a)),
            Tier::AtRisk => format!("At risk ({}–{})", pct(a).trim_end_matches('%'), pct(m)),
            Tier::ModerateChronic => {
                format!(
                    "Moderate chronic ({}–{})",
                    pct(m).trim_end_matches('%'),
                    pct(s)
                )
            }
            Tier::SevereChronic => format!("Severe chronic (≥ {})", pct(s)),
        }
    }
}

/// A published figure, or the fact that it was suppressed. A suppressed value carries no
/// number at all, so nothing downstream can render one by mistake.
#[derive(Debug, Clone, PartialEq)]
pub enum Published<T> {
    Suppressed,
    Value(T),
}

impl<T> Published<T> {
    pub fn value(&self) -> Option<&T> {
        match self {
            Published::Suppressed => None,
            Published::Value(v) => Some(v),
        }
    }
    pub fn is_suppressed(&self) -> bool {
        matches!(self, Published::Suppressed)
    }
}

/// Students meeting the minimum enrollment, per tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tiers {
    pub satisfactory: u64,
    pub at_risk: u64,
    pub moderate_chronic: u64,
    pub severe_chronic: u64,
}

impl Tiers {
    /// The tiers in display order with their view column names and labels.
    pub fn parts(&self) -> [(Tier, u64); 4] {
        [
            (Tier::Satisfactory, self.satisfactory),
            (Tier::AtRisk, self.at_risk),
            (Tier::ModerateChronic, self.moderate_chronic),
            (Tier::SevereChronic, self.severe_chronic),
        ]
    }
    pub fn total(&self) -> u64 {
        self.satisfactory + self.at_risk + self.moderate_chronic + self.severe_chronic
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Satisfactory,
    AtRisk,
    ModerateChronic,
    SevereChronic,
}

impl Tier {
    /// The column of the aggregate views that counts this tier.
    pub fn column(self) -> &'static str {
        match self {
            Tier::Satisfactory => "students_satisfactory",
            Tier::AtRisk => "students_at_risk",
            Tier::ModerateChronic => "students_moderate_chronic",
            Tier::SevereChronic => "students_severe_chronic",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Tier::Satisfactory => "Satisfactory (< 5%)",
            Tier::AtRisk => "At risk (5–10%)",
            Tier::ModerateChronic => "Moderate chronic (10–20%)",
            Tier::SevereChronic => "Severe chronic (≥ 20%)",
        }
    }
}

/// The published figures of one aggregate row (`school_chronic_absence`,
/// `district_chronic_absence`, `state_chronic_absence`).
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub students_enrolled: u64,
    pub students_chronically_absent: u64,
    pub chronic_absence_rate: f64,
    pub tiers: Tiers,
}

/// One aggregate row: the state, a district or a school.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateRow {
    /// Empty for the state row.
    pub district_id: String,
    /// Empty for state and district rows.
    pub school_id: String,
    pub as_of_date: Option<NaiveDate>,
    pub figures: Published<Figures>,
}

/// One row of `chronic_absence_trend`: a school as of one instructional date.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendRow {
    pub district_id: String,
    pub school_id: String,
    pub date: NaiveDate,
    /// (students_enrolled, students_chronically_absent)
    pub counts: Published<(u64, u64)>,
}

/// Sums of `student_attendance` for a district (or the state, with an empty id).
#[derive(Debug, Clone, PartialEq)]
pub struct AbsenceSums {
    pub district_id: String,
    /// Distinct students contributing.
    pub students: u64,
    pub days_absent_excused: f64,
    pub days_absent_unexcused: f64,
    pub days_suspended: f64,
}

/// Everything the views returned for one school year, plus where and when.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportData {
    pub school_year: Option<u16>,
    /// The database the views were read from (shown in the header).
    pub database: String,
    /// When the page was generated, already formatted (keeps rendering pure).
    pub generated_at: String,
    pub state: Option<AggregateRow>,
    pub districts: Vec<AggregateRow>,
    pub schools: Vec<AggregateRow>,
    pub trend: Vec<TrendRow>,
    pub absence_by_district: Vec<AbsenceSums>,
    pub absence_state: Option<AbsenceSums>,
    /// The settings the views were built with.
    pub rules: ViewRules,
}

impl ReportData {
    /// A report with nothing in it (no school year has data yet).
    pub fn empty(database: impl Into<String>, generated_at: impl Into<String>) -> Self {
        ReportData {
            school_year: None,
            database: database.into(),
            generated_at: generated_at.into(),
            state: None,
            districts: Vec::new(),
            schools: Vec::new(),
            trend: Vec::new(),
            absence_by_district: Vec::new(),
            absence_state: None,
            rules: ViewRules::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.state.is_none()
            && self.districts.is_empty()
            && self.schools.is_empty()
            && self.trend.is_empty()
    }
}

/// Published rows by rate (worst first, ties by id), then suppressed rows by id.
pub fn worst_first(rows: &[AggregateRow]) -> (Vec<&AggregateRow>, Vec<&AggregateRow>) {
    let mut published: Vec<&AggregateRow> =
        rows.iter().filter(|r| !r.figures.is_suppressed()).collect();
    let mut suppressed: Vec<&AggregateRow> =
        rows.iter().filter(|r| r.figures.is_suppressed()).collect();
    let rate = |r: &AggregateRow| {
        r.figures
            .value()
            .map(|f| f.chronic_absence_rate)
            .unwrap_or(0.0)
    };
    published.sort_by(|a, b| {
        rate(b)
            .total_cmp(&rate(a))
            .then_with(|| a.district_id.cmp(&b.district_id))
            .then_with(|| a.school_id.cmp(&b.school_id))
    });
    suppressed.sort_by(|a, b| {
        a.district_id
            .cmp(&b.district_id)
            .then_with(|| a.school_id.cmp(&b.school_id))
    });
    (published, suppressed)
}

/// The absence breakdown of a district or the state: published only when its count of
/// distinct students is not suppressed under the views' [`ViewRules`].
#[derive(Debug, Clone, PartialEq)]
pub struct Breakdown {
    pub district_id: String,
    /// (excused, unexcused, suspended) days absent.
    pub days: Published<(f64, f64, f64)>,
}

pub fn breakdown(sums: &AbsenceSums, rules: &ViewRules) -> Breakdown {
    Breakdown {
        district_id: sums.district_id.clone(),
        days: if rules.is_suppressed(sums.students) {
            Published::Suppressed
        } else {
            Published::Value((
                sums.days_absent_excused,
                sums.days_absent_unexcused,
                sums.days_suspended,
            ))
        },
    }
}

/// One point of a trend line: the published schools of the series as of `date`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendPoint {
    pub date: NaiveDate,
    pub students_enrolled: u64,
    pub students_chronically_absent: u64,
    /// Schools whose figures as of `date` are published (and summed here).
    pub schools_published: usize,
    /// Schools with figures as of `date` that are suppressed (left out).
    pub schools_suppressed: usize,
}

impl TrendPoint {
    pub fn rate(&self) -> f64 {
        if self.students_enrolled == 0 {
            0.0
        } else {
            self.students_chronically_absent as f64 / self.students_enrolled as f64
        }
    }
}

/// A trend line: the state (empty `district_id`) or one district.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendSeries {
    pub district_id: String,
    pub points: Vec<TrendPoint>,
}

impl TrendSeries {
    pub fn is_state(&self) -> bool {
        self.district_id.is_empty()
    }
    pub fn last(&self) -> Option<&TrendPoint> {
        self.points.last()
    }
}

/// The state's trend line and one per district, from the per-school rows of
/// `chronic_absence_trend`.
///
/// As of each date of the series, every school contributes its latest row on or before
/// that date (the view's counts are cumulative "as of", and a school has no row on a day
/// it was closed). Only published school rows are summed: a suppressed school is left
/// out and counted in `schools_suppressed`, so every number shown is a sum of published
/// numbers. Dates on which no school is published, or the published ones judge no
/// student yet (counts of 0), have no point.
pub fn trend_series(rows: &[TrendRow]) -> Vec<TrendSeries> {
    // school -> its rows by date
    let mut by_school: BTreeMap<(&str, &str), Vec<&TrendRow>> = BTreeMap::new();
    for r in rows {
        by_school
            .entry((r.district_id.as_str(), r.school_id.as_str()))
            .or_default()
            .push(r);
    }
    for v in by_school.values_mut() {
        v.sort_by_key(|r| r.date);
    }
    let mut out = Vec::new();
    let state: Vec<&Vec<&TrendRow>> = by_school.values().collect();
    out.push(series_of(String::new(), &state));
    let mut districts: BTreeMap<&str, Vec<&Vec<&TrendRow>>> = BTreeMap::new();
    for ((d, _), v) in &by_school {
        districts.entry(d).or_default().push(v);
    }
    for (d, schools) in districts {
        out.push(series_of(d.to_string(), &schools));
    }
    out.retain(|s| !s.points.is_empty());
    out
}

fn series_of(district_id: String, schools: &[&Vec<&TrendRow>]) -> TrendSeries {
    let mut dates: Vec<NaiveDate> = schools
        .iter()
        .flat_map(|v| v.iter().map(|r| r.date))
        .collect();
    dates.sort();
    dates.dedup();
    // a cursor per school: index of its next row not yet taken
    let mut cursor = vec![0usize; schools.len()];
    let mut points = Vec::new();
    for date in dates {
        let mut p = TrendPoint {
            date,
            students_enrolled: 0,
            students_chronically_absent: 0,
            schools_published: 0,
            schools_suppressed: 0,
        };
        for (i, rows) in schools.iter().enumerate() {
            while cursor[i] < rows.len() && rows[cursor[i]].date <= date {
                cursor[i] += 1;
            }
            let Some(current) = cursor[i].checked_sub(1).map(|k| rows[k]) else {
                continue; // the school has no figures yet
            };
            match current.counts {
                Published::Value((enrolled, chronic)) => {
                    p.students_enrolled += enrolled;
                    p.students_chronically_absent += chronic;
                    p.schools_published += 1;
                }
                Published::Suppressed => p.schools_suppressed += 1,
            }
        }
        // A zero is published (policy.suppress_zero_counts = false): a date whose
        // published schools judge nobody yet has no rate, so no point.
        if p.schools_published > 0 && p.students_enrolled > 0 {
            points.push(p);
        }
    }
    TrendSeries {
        district_id,
        points,
    }
}

/// The dates worth a row in the trend table: the last date of each month, and the last.
pub fn month_ends(dates: &[NaiveDate]) -> Vec<NaiveDate> {
    use chrono::Datelike;
    let mut sorted: Vec<NaiveDate> = dates.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut out: Vec<NaiveDate> = Vec::new();
    for (i, d) in sorted.iter().enumerate() {
        let next_month_differs = sorted
            .get(i + 1)
            .map(|n| (n.year(), n.month()) != (d.year(), d.month()))
            .unwrap_or(true);
        if next_month_differs {
            out.push(*d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2023, 9, day).unwrap()
    }

    fn row(district: &str, school: &str, day: u32, counts: Option<(u64, u64)>) -> TrendRow {
        TrendRow {
            district_id: district.into(),
            school_id: school.into(),
            date: d(day),
            counts: counts.map_or(Published::Suppressed, Published::Value),
        }
    }

    #[test]
    fn trend_sums_only_published_schools_and_carries_rows_forward() {
        let rows = vec![
            row("A", "a1", 4, Some((20, 10))),
            row("A", "a1", 5, Some((22, 11))),
            // a2 is closed on the 5th: its row of the 4th still holds then
            row("A", "a2", 4, Some((30, 12))),
            row("A", "a2", 6, Some((31, 12))),
            row("A", "a1", 6, Some((22, 12))),
            // b1 is suppressed until the 6th
            row("B", "b1", 4, None),
            row("B", "b1", 5, None),
            row("B", "b1", 6, Some((40, 10))),
        ];
        let series = trend_series(&rows);
        assert_eq!(series.len(), 3);
        let state = &series[0];
        assert!(state.is_state());
        let p = |s: &TrendSeries, day: u32| {
            s.points.iter().find(|p| p.date == d(day)).cloned().unwrap()
        };
        assert_eq!(
            p(state, 4),
            TrendPoint {
                date: d(4),
                students_enrolled: 50,
                students_chronically_absent: 22,
                schools_published: 2,
                schools_suppressed: 1
            }
        );
        // a2 carried forward from the 4th
        assert_eq!(p(state, 5).students_enrolled, 52);
        assert_eq!(p(state, 5).students_chronically_absent, 23);
        assert_eq!(p(state, 6).students_enrolled, 93);
        assert_eq!(p(state, 6).schools_suppressed, 0);
        let a = &series[1];
        assert_eq!(a.district_id, "A");
        assert_eq!(a.points.len(), 3);
        assert!((a.last().unwrap().rate() - 24.0 / 53.0).abs() < 1e-12);
        // district B has a point only once it is published
        let b = &series[2];
        assert_eq!(b.points.len(), 1);
        assert_eq!(b.points[0].date, d(6));
    }

    #[test]
    fn trend_of_nothing_published_is_empty() {
        let rows = vec![row("A", "a1", 4, None), row("A", "a1", 5, None)];
        assert!(trend_series(&rows).is_empty());
        assert!(trend_series(&[]).is_empty());
    }

    #[test]
    fn labels_and_suppression_follow_the_views_settings() {
        let d = ViewRules::default();
        assert_eq!(d.tier_label(Tier::AtRisk), "At risk (5–10%)");
        assert_eq!(d.tier_label(Tier::SevereChronic), "Severe chronic (≥ 20%)");
        assert_eq!(d.suppressed_text(), crate::format::SUPPRESSED_TEXT);
        let r = ViewRules {
            publication_threshold: 5,
            min_enrolled_days: 20,
            chronic_threshold: 0.15,
            suppress_zero_counts: false,
            tier_cuts: [0.07, 0.15, 0.255],
        };
        assert_eq!(r.tier_label(Tier::Satisfactory), "Satisfactory (< 7%)");
        assert_eq!(
            r.tier_label(Tier::ModerateChronic),
            "Moderate chronic (15–25.5%)"
        );
        assert_eq!(r.chronic_percent(), "15%");
        assert_eq!(r.suppressed_text(), "suppressed (< 5)");
        assert!(!r.is_suppressed(0) && r.is_suppressed(4) && !r.is_suppressed(5));
        let mut s = AbsenceSums {
            district_id: "D".into(),
            students: 5,
            days_absent_excused: 1.0,
            days_absent_unexcused: 0.0,
            days_suspended: 0.0,
        };
        assert!(breakdown(&s, &r).days.value().is_some());
        s.students = 4;
        assert_eq!(breakdown(&s, &r).days, Published::Suppressed);
    }

    #[test]
    fn breakdown_is_suppressed_below_the_threshold() {
        let mut s = AbsenceSums {
            district_id: "D".into(),
            students: 9,
            days_absent_excused: 3.5,
            days_absent_unexcused: 2.0,
            days_suspended: 1.0,
        };
        assert_eq!(
            breakdown(&s, &ViewRules::default()).days,
            Published::Suppressed
        );
        s.students = 10;
        assert_eq!(
            breakdown(&s, &ViewRules::default()).days,
            Published::Value((3.5, 2.0, 1.0))
        );
    }

    #[test]
    fn worst_first_orders_published_by_rate_then_suppressed_by_id() {
        let agg = |school: &str, rate: Option<f64>| AggregateRow {
            district_id: "D".into(),
            school_id: school.into(),
            as_of_date: None,
            figures: match rate {
                None => Published::Suppressed,
                Some(r) => Published::Value(Figures {
                    students_enrolled: 100,
                    students_chronically_absent: (r * 100.0) as u64,
                    chronic_absence_rate: r,
                    tiers: Tiers::default(),
                }),
            },
        };
        let rows = vec![
            agg("s1", Some(0.1)),
            agg("s9", None),
            agg("s2", Some(0.3)),
            agg("s3", Some(0.1)),
            agg("s0", None),
        ];
        let (p, s) = worst_first(&rows);
        let ids = |v: &[&AggregateRow]| v.iter().map(|r| r.school_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&p), ["s2", "s1", "s3"]);
        assert_eq!(ids(&s), ["s0", "s9"]);
    }

    #[test]
    fn month_ends_are_the_last_date_of_each_month() {
        let dates = [
            d(28),
            d(29),
            NaiveDate::from_ymd_opt(2023, 10, 2).unwrap(),
            NaiveDate::from_ymd_opt(2023, 10, 31).unwrap(),
            NaiveDate::from_ymd_opt(2023, 11, 1).unwrap(),
            d(29),
        ];
        assert_eq!(
            month_ends(&dates),
            vec![
                d(29),
                NaiveDate::from_ymd_opt(2023, 10, 31).unwrap(),
                NaiveDate::from_ymd_opt(2023, 11, 1).unwrap()
            ]
        );
    }
}
