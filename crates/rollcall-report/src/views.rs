//! Reading the BI views (docs/bi-views.md) for one school year. The only module of this
//! crate that speaks SQL. Explicit columns, cast where the wire type must be fixed
//! (validation is off: ClickHouse 18.16 lacks RowBinaryWithNamesAndTypes).

use clickhouse::{Client, Row};
use rollcall_clickhouse::rows::from_ch_date;
use rollcall_clickhouse::ChError;
use serde::Deserialize;

use crate::model::{
    AbsenceSums, AggregateRow, Figures, Published, ReportData, Tiers, TrendRow, ViewRules,
};
use crate::ReportError;

/// The BI views the report reads.
pub const VIEWS: [&str; 5] = [
    "state_chronic_absence",
    "district_chronic_absence",
    "school_chronic_absence",
    "chronic_absence_trend",
    "student_attendance",
];

#[derive(Debug, Row, Deserialize)]
struct YearRow {
    school_year: u16,
    rows: u64,
}

#[derive(Debug, Row, Deserialize)]
struct AggRow {
    district_id: String,
    school_id: String,
    as_of_date: u16,
    students_enrolled: Option<u64>,
    students_chronically_absent: Option<u64>,
    chronic_absence_rate: Option<f64>,
    students_satisfactory: Option<u64>,
    students_at_risk: Option<u64>,
    students_moderate_chronic: Option<u64>,
    students_severe_chronic: Option<u64>,
    suppressed: u8,
}

#[derive(Debug, Row, Deserialize)]
struct TrendWire {
    district_id: String,
    school_id: String,
    date: u16,
    students_enrolled: Option<u64>,
    students_chronically_absent: Option<u64>,
    suppressed: u8,
}

#[derive(Debug, Row, Deserialize)]
struct SumsRow {
    district_id: String,
    students: u64,
    days_absent_excused: f64,
    days_absent_unexcused: f64,
    days_suspended: f64,
}

/// The columns of an aggregate view, as `AggRow` reads them; `district` and `school` are
/// the id expressions (`''` where the view has no such column).
fn agg_sql(view: &str, district: &str, school: &str) -> String {
    format!(
        "SELECT {district} AS district_id, {school} AS school_id, as_of_date, \
         toUInt64(students_enrolled) AS students_enrolled, \
         toUInt64(students_chronically_absent) AS students_chronically_absent, \
         toFloat64(chronic_absence_rate) AS chronic_absence_rate, \
         toUInt64(students_satisfactory) AS students_satisfactory, \
         toUInt64(students_at_risk) AS students_at_risk, \
         toUInt64(students_moderate_chronic) AS students_moderate_chronic, \
         toUInt64(students_severe_chronic) AS students_severe_chronic, \
         toUInt8(suppressed) AS suppressed \
         FROM {view} WHERE school_year = ? ORDER BY district_id, school_id"
    )
}

impl AggRow {
    fn into_model(self, view: &'static str) -> Result<AggregateRow, ReportError> {
        let figures = if self.suppressed != 0 {
            Published::Suppressed
        } else {
            let missing = |col: &str| ReportError::Contract {
                view,
                problem: format!(
                    "{col} is NULL in a row with suppressed = 0 (district {:?}, school {:?})",
                    self.district_id, self.school_id
                ),
            };
            Published::Value(Figures {
                students_enrolled: self
                    .students_enrolled
                    .ok_or_else(|| missing("students_enrolled"))?,
                students_chronically_absent: self
                    .students_chronically_absent
                    .ok_or_else(|| missing("students_chronically_absent"))?,
                chronic_absence_rate: self
                    .chronic_absence_rate
                    .ok_or_else(|| missing("chronic_absence_rate"))?,
                tiers: Tiers {
                    satisfactory: self
                        .students_satisfactory
                        .ok_or_else(|| missing("students_satisfactory"))?,
                    at_risk: self
                        .students_at_risk
                        .ok_or_else(|| missing("students_at_risk"))?,
                    moderate_chronic: self
                        .students_moderate_chronic
                        .ok_or_else(|| missing("students_moderate_chronic"))?,
                    severe_chronic: self
                        .students_severe_chronic
                        .ok_or_else(|| missing("students_severe_chronic"))?,
                },
            })
        };
        Ok(AggregateRow {
            district_id: self.district_id,
            school_id: self.school_id,
            as_of_date: Some(from_ch_date(self.as_of_date)),
            figures,
        })
    }
}

async fn aggregates(
    client: &Client,
    view: &'static str,
    district: &str,
    school: &str,
    year: u16,
) -> Result<Vec<AggregateRow>, ReportError> {
    let rows: Vec<AggRow> = client
        .query(&agg_sql(view, district, school))
        .bind(year)
        .fetch_all()
        .await
        .map_err(ChError::ctx(format!("reading the view {view}")))?;
    rows.into_iter().map(|r| r.into_model(view)).collect()
}

/// The latest school year with data in `state_chronic_absence`, if any.
pub async fn latest_school_year(client: &Client) -> Result<Option<u16>, ReportError> {
    let r: YearRow = client
        .query(
            "SELECT toUInt16(max(school_year)) AS school_year, count() AS rows \
             FROM state_chronic_absence",
        )
        .fetch_one()
        .await
        .map_err(ChError::ctx(
            "reading the school years of state_chronic_absence",
        ))?;
    Ok((r.rows > 0).then_some(r.school_year))
}

/// Read every view the page shows for `school_year` (the latest year with data when
/// `None`). `database` and `generated_at` only label the page.
///
/// Bounded by [`rollcall_clickhouse::CALL_TIMEOUT`] as a whole: a server that accepts
/// the connection and never answers is an error, not a hang.
pub async fn load(
    client: &Client,
    school_year: Option<u16>,
    database: &str,
    generated_at: &str,
) -> Result<ReportData, ReportError> {
    let bound = rollcall_clickhouse::CALL_TIMEOUT;
    match tokio::time::timeout(
        bound,
        load_unbounded(client, school_year, database, generated_at),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(ChError {
            doing: format!("reading the BI views (no answer within {bound:?})"),
            source: rollcall_clickhouse::ClickHouseError::TimedOut,
        }
        .into()),
    }
}

/// The settings the views were built with (their `view_policy` record); the defaults
/// when the database has none.
async fn view_rules(client: &Client, database: &str) -> Result<ViewRules, ReportError> {
    let stored = rollcall_clickhouse::policy_views::read_view_policy(client, database)
        .await
        .map_err(|source| ChError {
            doing: "reading the views' policy (view_policy)".into(),
            source,
        })?;
    let mut rules = ViewRules::default();
    let Some(stored) = stored else {
        return Ok(rules);
    };
    let settings: serde_json::Value =
        serde_json::from_str(&stored.settings).map_err(|e| ReportError::Contract {
            view: "view_policy",
            problem: format!("settings are not JSON: {e}"),
        })?;
    let num = |k: &str| settings.get(k).and_then(serde_json::Value::as_f64);
    if let Some(t) = settings
        .get("publication_threshold")
        .and_then(serde_json::Value::as_u64)
    {
        rules.publication_threshold = t;
    }
    if let Some(m) = settings
        .get("min_enrolled_days")
        .and_then(serde_json::Value::as_u64)
    {
        rules.min_enrolled_days = m;
    }
    if let Some(c) = num("chronic_threshold") {
        rules.chronic_threshold = c;
    }
    if let Some(z) = settings
        .get("suppress_zero_counts")
        .and_then(serde_json::Value::as_bool)
    {
        rules.suppress_zero_counts = z;
    }
    for (i, k) in [
        "tiers.at_risk",
        "tiers.moderate_chronic",
        "tiers.severe_chronic",
    ]
    .iter()
    .enumerate()
    {
        if let Some(v) = num(k) {
            rules.tier_cuts[i] = v;
        }
    }
    Ok(rules)
}

async fn load_unbounded(
    client: &Client,
    school_year: Option<u16>,
    database: &str,
    generated_at: &str,
) -> Result<ReportData, ReportError> {
    let mut data = ReportData::empty(database, generated_at);
    data.rules = view_rules(client, database).await?;
    let year = match school_year {
        Some(y) => y,
        None => match latest_school_year(client).await? {
            Some(y) => y,
            None => return Ok(data),
        },
    };
    data.school_year = Some(year);
    data.state = aggregates(client, "state_chronic_absence", "''", "''", year)
        .await?
        .into_iter()
        .next();
    data.districts = aggregates(
        client,
        "district_chronic_absence",
        "district_id",
        "''",
        year,
    )
    .await?;
    data.schools = aggregates(
        client,
        "school_chronic_absence",
        "district_id",
        "school_id",
        year,
    )
    .await?;

    let trend: Vec<TrendWire> = client
        .query(
            "SELECT district_id, school_id, date, \
             toUInt64(students_enrolled) AS students_enrolled, \
             toUInt64(students_chronically_absent) AS students_chronically_absent, \
             toUInt8(suppressed) AS suppressed \
             FROM chronic_absence_trend WHERE school_year = ? \
             ORDER BY district_id, school_id, date",
        )
        .bind(year)
        .fetch_all()
        .await
        .map_err(ChError::ctx("reading the view chronic_absence_trend"))?;
    data.trend = trend
        .into_iter()
        .map(|r| {
            let counts = match (
                r.suppressed,
                r.students_enrolled,
                r.students_chronically_absent,
            ) {
                (0, Some(e), Some(c)) => Published::Value((e, c)),
                (0, _, _) => {
                    return Err(ReportError::Contract {
                        view: "chronic_absence_trend",
                        problem: format!(
                            "NULL count in a row with suppressed = 0 (school {:?})",
                            r.school_id
                        ),
                    })
                }
                _ => Published::Suppressed,
            };
            Ok(TrendRow {
                district_id: r.district_id,
                school_id: r.school_id,
                date: from_ch_date(r.date),
                counts,
            })
        })
        .collect::<Result<_, _>>()?;

    // Days absent by kind: sums over students. A student is (district_id, student_id).
    let sums = |group: &str, district: &str| {
        format!(
            "SELECT {district} AS district_id, \
             toUInt64(uniqExact(district_id, student_id)) AS students, \
             toFloat64(sum(days_absent_excused)) AS days_absent_excused, \
             toFloat64(sum(days_absent_unexcused)) AS days_absent_unexcused, \
             toFloat64(sum(days_suspended)) AS days_suspended \
             FROM student_attendance WHERE school_year = ? {group} ORDER BY district_id"
        )
    };
    data.absence_by_district = client
        .query(&sums("GROUP BY district_id", "district_id"))
        .bind(year)
        .fetch_all::<SumsRow>()
        .await
        .map_err(ChError::ctx("reading the view student_attendance"))?
        .into_iter()
        .map(SumsRow::into_model)
        .collect();
    data.absence_state = client
        .query(&sums("", "''"))
        .bind(year)
        .fetch_all::<SumsRow>()
        .await
        .map_err(ChError::ctx("reading the view student_attendance"))?
        .into_iter()
        .map(SumsRow::into_model)
        .find(|s| s.students > 0);
    Ok(data)
}

impl SumsRow {
    fn into_model(self) -> AbsenceSums {
        AbsenceSums {
            district_id: self.district_id,
            students: self.students,
            days_absent_excused: self.days_absent_excused,
            days_absent_unexcused: self.days_absent_unexcused,
            days_suspended: self.days_suspended,
        }
    }
}
