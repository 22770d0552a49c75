//! The BI views rendered from the state's policy, and the policy's fingerprint.
//!
//! A migration may use `${policy.NAME}` placeholders; [`ViewPolicy::render`] replaces each
//! with SQL text rendered from [`Policy`]. The parameters are listed once, in
//! [`ViewPolicy::new`]: adding one is one line there (a number, a flag, a rate in basis
//! points, or a quoted SQL list such as `('Kindergarten', 'First grade')` for an `IN`).
//!
//! Rates are rendered in basis points (`Policy::validate` requires whole ones), so a view
//! compares in exact integers on milli-days:
//! `absent_milli * 10 >= days * ${policy.chronic_threshold_bp}` ⇔ absent days ÷ days ≥
//! threshold. That agrees with `rollcall_policy::is_chronic` / `tier` (rate ≥ threshold −
//! 1e-9) for every day count below 100,000: a rate just below a whole basis point is at
//! least 1 ÷ (10,000 × days) below it, more than the policy's EPSILON.
//!
//! The settings the views use, as JSON, and their SHA-256 (the fingerprint) are written
//! by `migrate` into `${database}.view_policy`; services compare them with their own
//! policy at start ([`check_view_policy`]).

use std::collections::BTreeMap;

use clickhouse::{Client, Row};
use rollcall_policy::{rate_in_basis_points, Policy, StateIdentity};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::client::{within, CALL_TIMEOUT};

/// The table holding the fingerprint of the policy the views were built with.
pub const VIEW_POLICY_TABLE: &str = "view_policy";

/// One setting the views use: its policy key, its value (JSON, for the fingerprint and
/// to name a difference) and the placeholders it renders.
#[derive(Debug, Clone, PartialEq)]
struct Param {
    key: &'static str,
    value: serde_json::Value,
    /// (placeholder name after `policy.`, SQL text)
    sql: Vec<(String, String)>,
}

impl Param {
    /// A whole number: `${policy.KEY}`.
    fn int(key: &'static str, v: u32) -> Param {
        Param {
            key,
            value: v.into(),
            sql: vec![(key.to_string(), v.to_string())],
        }
    }

    /// A flag: `${policy.KEY}` is `1` or `0`.
    fn flag(key: &'static str, v: bool) -> Param {
        Param {
            key,
            value: v.into(),
            sql: vec![(key.to_string(), u8::from(v).to_string())],
        }
    }

    /// A rate: `${policy.KEY_bp}` is the rate in basis points (0.15 → `1500`).
    fn rate(key: &'static str, v: f64) -> Result<Param, ViewPolicyError> {
        let bp =
            rate_in_basis_points(v).ok_or(ViewPolicyError::NotBasisPoints { key, value: v })?;
        Ok(Param {
            key,
            value: serde_json::Number::from_f64(v)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            sql: vec![(format!("{key}_bp"), bp.to_string())],
        })
    }

    /// A list of strings: `${policy.KEY}` is a parenthesised list of quoted SQL strings,
    /// for `column IN ${policy.KEY}`. An empty list renders `('')`… never: it is refused,
    /// since `IN ()` is not SQL.
    fn string_list(key: &'static str, v: &[String]) -> Result<Param, ViewPolicyError> {
        if v.is_empty() {
            return Err(ViewPolicyError::EmptyList { key });
        }
        let items: Vec<String> = v.iter().map(|s| sql_string(s)).collect();
        Ok(Param {
            key,
            value: v.to_vec().into(),
            sql: vec![(key.to_string(), format!("({})", items.join(", ")))],
        })
    }
}

/// A ClickHouse string literal: quotes and backslashes escaped.
pub fn sql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ViewPolicyError {
    #[error(
        "policy.{key} = {value} cannot be rendered into the BI views: rates must be a \
         multiple of 0.0001 (one basis point)"
    )]
    NotBasisPoints { key: &'static str, value: f64 },
    #[error("policy.{key} must not be empty (the views filter with IN (...))")]
    EmptyList { key: &'static str },
    #[error("migration {migration}: unknown placeholder ${{policy.{name}}}")]
    UnknownPlaceholder { migration: String, name: String },
}

/// The policy settings the views use, rendered for SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewPolicy {
    params: Vec<Param>,
}

impl ViewPolicy {
    /// The view parameters of `policy`. **The list of every setting the views use.**
    pub fn new(p: &Policy) -> Result<ViewPolicy, ViewPolicyError> {
        let params = vec![
            Param::int("min_enrolled_days", p.min_enrolled_days),
            Param::rate("chronic_threshold", p.chronic_threshold)?,
            Param::rate("tiers.at_risk", p.tiers.at_risk)?,
            Param::rate("tiers.moderate_chronic", p.tiers.moderate_chronic)?,
            Param::rate("tiers.severe_chronic", p.tiers.severe_chronic)?,
            Param::int("publication_threshold", p.publication_threshold),
            Param::flag("suppress_zero_counts", p.suppress_zero_counts),
            Param::string_list("aggregate_grades", &p.aggregate_grades)?,
            Param {
                key: "state_identity",
                value: serde_json::to_value(p.state_identity).expect("an enum serializes"),
                sql: vec![(
                    "state_identity_by_state_id".to_string(),
                    u8::from(p.state_identity == StateIdentity::StateStudentId).to_string(),
                )],
            },
        ];
        Ok(ViewPolicy { params })
    }

    /// The settings as a JSON object (sorted keys): what `view_policy` stores.
    pub fn settings(&self) -> BTreeMap<String, serde_json::Value> {
        self.params
            .iter()
            .map(|p| (p.key.to_string(), p.value.clone()))
            .collect()
    }

    pub fn settings_json(&self) -> String {
        serde_json::to_string(&self.settings()).expect("a map of JSON values serializes")
    }

    /// SHA-256 of [`ViewPolicy::settings_json`].
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.settings_json().as_bytes()))
    }

    /// Every placeholder name (after `policy.`) with its SQL text.
    pub fn placeholders(&self) -> Vec<(String, String)> {
        self.params.iter().flat_map(|p| p.sql.clone()).collect()
    }

    /// `sql` with every `${policy.NAME}` replaced; an unknown name is an error naming it.
    pub fn render(&self, migration: &str, sql: &str) -> Result<String, ViewPolicyError> {
        let mut out = String::with_capacity(sql.len());
        let mut rest = sql;
        while let Some(at) = rest.find("${policy.") {
            out.push_str(&rest[..at]);
            let after = &rest[at + "${policy.".len()..];
            let end = after
                .find('}')
                .ok_or_else(|| ViewPolicyError::UnknownPlaceholder {
                    migration: migration.to_string(),
                    name: after.chars().take(40).collect(),
                })?;
            let name = &after[..end];
            let (_, text) = self
                .placeholders()
                .into_iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| ViewPolicyError::UnknownPlaceholder {
                    migration: migration.to_string(),
                    name: name.to_string(),
                })?;
            out.push_str(&text);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Whether a migration's text depends on the policy (has a `${policy.` placeholder):
/// such a migration must be re-runnable (views only: DROP … IF EXISTS, then CREATE).
pub fn uses_policy(sql: &str) -> bool {
    sql.contains("${policy.")
}

/// One setting whose value differs between the views and a service's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingDiff {
    pub key: String,
    /// As the views were built (JSON text; `(absent)` when the views did not record it).
    pub views: String,
    /// In this service's policy.
    pub here: String,
}

fn describe(diffs: &[SettingDiff]) -> String {
    diffs
        .iter()
        .map(|d| {
            format!(
                "policy.{} is {} in the views, {} here",
                d.key, d.views, d.here
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The views and a policy disagree, or the views carry no policy.
#[derive(Debug, thiserror::Error)]
pub enum ViewPolicyMismatch {
    #[error(
        "the BI views in database `{database}` were built with another policy: {}. \
         Run `rollcall migrate --policy` with this configuration to rebuild them with this \
         policy (or use the configuration they were built with)",
        describe(.diffs)
    )]
    Differs {
        database: String,
        diffs: Vec<SettingDiff>,
    },
    #[error(
        "the BI views in database `{database}` carry no policy fingerprint \
         ({database}.{VIEW_POLICY_TABLE} is missing or empty): run `rollcall migrate`"
    )]
    Missing { database: String },
    #[error("{0}")]
    Render(#[from] ViewPolicyError),
    #[error("clickhouse: reading {database}.{VIEW_POLICY_TABLE}: {source}")]
    Client {
        database: String,
        source: clickhouse::error::Error,
    },
}

/// The differing settings between a stored settings JSON and `now` (sorted by key).
pub fn differences(stored_json: &str, now: &ViewPolicy) -> Vec<SettingDiff> {
    let stored: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(stored_json).unwrap_or_default();
    let now = now.settings();
    let mut keys: Vec<&String> = stored.keys().chain(now.keys()).collect();
    keys.sort();
    keys.dedup();
    let show = |v: Option<&serde_json::Value>| v.map_or("(absent)".to_string(), |v| v.to_string());
    keys.into_iter()
        .filter(|k| stored.get(*k) != now.get(*k))
        .map(|k| SettingDiff {
            key: k.clone(),
            views: show(stored.get(k)),
            here: show(now.get(k)),
        })
        .collect()
}

/// The fingerprint row the views were last built with.
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub struct StoredViewPolicy {
    pub fingerprint: String,
    pub settings: String,
}

/// `CREATE TABLE` of the fingerprint table.
pub fn create_view_policy_table(database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.{VIEW_POLICY_TABLE} (\
           version UInt64, fingerprint String, settings String, built_at DateTime\
         ) ENGINE = MergeTree ORDER BY version"
    )
}

/// `INSERT` of a fingerprint row (literal values: the same text `--print-sql` shows).
pub fn insert_view_policy(database: &str, version: u64, vp: &ViewPolicy) -> String {
    format!(
        "INSERT INTO {database}.{VIEW_POLICY_TABLE} (version, fingerprint, settings, built_at) \
         VALUES ({version}, {}, {}, now())",
        sql_string(&vp.fingerprint()),
        sql_string(&vp.settings_json())
    )
}

/// The latest fingerprint row, or `None` when the table is missing or empty.
pub async fn read_view_policy(
    client: &Client,
    database: &str,
) -> Result<Option<StoredViewPolicy>, clickhouse::error::Error> {
    #[derive(Row, Deserialize)]
    struct Exists {
        n: u64,
    }
    let exists: Vec<Exists> = within(
        CALL_TIMEOUT,
        client
            .query("SELECT count() AS n FROM system.tables WHERE database = ? AND name = ?")
            .bind(database)
            .bind(VIEW_POLICY_TABLE)
            .fetch_all(),
    )
    .await?;
    if exists.first().map_or(0, |e| e.n) == 0 {
        return Ok(None);
    }
    let rows: Vec<StoredViewPolicy> = within(
        CALL_TIMEOUT,
        client
            .query(&format!(
                "SELECT argMax(fingerprint, version) AS fingerprint, \
                 argMax(settings, version) AS settings \
                 FROM {database}.{VIEW_POLICY_TABLE} HAVING count() > 0"
            ))
            .fetch_all(),
    )
    .await?;
    Ok(rows.into_iter().next())
}

/// Refuse unless the views in `database` were built with `policy`'s view settings.
/// Services call this at start.
pub async fn check_view_policy(
    client: &Client,
    database: &str,
    policy: &Policy,
) -> Result<(), ViewPolicyMismatch> {
    let now = ViewPolicy::new(policy)?;
    let stored = read_view_policy(client, database)
        .await
        .map_err(|source| ViewPolicyMismatch::Client {
            database: database.to_string(),
            source,
        })?
        .ok_or_else(|| ViewPolicyMismatch::Missing {
            database: database.to_string(),
        })?;
    if stored.fingerprint == now.fingerprint() {
        return Ok(());
    }
    Err(ViewPolicyMismatch::Differs {
        database: database.to_string(),
        diffs: differences(&stored.settings, &now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_render_from_the_policy() {
        let vp = ViewPolicy::new(&Policy::default()).unwrap();
        let sql = "a >= ${policy.min_enrolled_days} AND b * 10 >= c * ${policy.chronic_threshold_bp} \
                   AND n < ${policy.publication_threshold} AND ${policy.suppress_zero_counts} = 1 \
                   ${policy.tiers.at_risk_bp} ${policy.tiers.moderate_chronic_bp} ${policy.tiers.severe_chronic_bp}";
        assert_eq!(
            vp.render("t", sql).unwrap(),
            "a >= 10 AND b * 10 >= c * 1000 AND n < 10 AND 0 = 1 500 1000 2000"
        );
        let p = Policy {
            chronic_threshold: 0.15,
            min_enrolled_days: 20,
            publication_threshold: 5,
            suppress_zero_counts: true,
            ..Policy::default()
        };
        let vp = ViewPolicy::new(&p).unwrap();
        assert_eq!(
            vp.render("t", sql).unwrap(),
            "a >= 20 AND b * 10 >= c * 1500 AND n < 5 AND 1 = 1 500 1000 2000"
        );
    }

    #[test]
    fn an_unknown_placeholder_is_named() {
        let vp = ViewPolicy::new(&Policy::default()).unwrap();
        let err = vp
            .render("0002_bi_views", "x ${policy.nope} y")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "migration 0002_bi_views: unknown placeholder ${policy.nope}"
        );
        assert!(vp.render("m", "x ${policy.open").is_err());
    }

    #[test]
    fn a_list_renders_quoted_for_in() {
        let p = Param::string_list(
            "aggregate_grades",
            &["Kindergarten".into(), "O'Brien\\".into()],
        )
        .unwrap();
        assert_eq!(p.sql[0].1, "('Kindergarten', 'O\\'Brien\\\\')");
        assert!(Param::string_list("aggregate_grades", &[]).is_err());
    }

    #[test]
    fn the_fingerprint_follows_every_view_setting_and_differences_name_them() {
        let base = ViewPolicy::new(&Policy::default()).unwrap();
        let changes: Vec<(&str, Policy)> = vec![
            (
                "min_enrolled_days",
                Policy {
                    min_enrolled_days: 11,
                    ..Policy::default()
                },
            ),
            (
                "chronic_threshold",
                Policy {
                    chronic_threshold: 0.15,
                    ..Policy::default()
                },
            ),
            (
                "publication_threshold",
                Policy {
                    publication_threshold: 5,
                    ..Policy::default()
                },
            ),
            (
                "suppress_zero_counts",
                Policy {
                    suppress_zero_counts: true,
                    ..Policy::default()
                },
            ),
        ];
        for (key, p) in changes {
            let vp = ViewPolicy::new(&p).unwrap();
            assert_ne!(vp.fingerprint(), base.fingerprint(), "{key}");
            let d = differences(&base.settings_json(), &vp);
            assert_eq!(d.len(), 1, "{d:?}");
            assert_eq!(d[0].key, key);
        }
        // a setting the views do not use leaves the fingerprint alone
        let other = Policy {
            school_day_minutes: 400,
            ..Policy::default()
        };
        assert_eq!(
            ViewPolicy::new(&other).unwrap().fingerprint(),
            base.fingerprint()
        );
        let d = differences(
            &base.settings_json(),
            &ViewPolicy::new(&Policy {
                chronic_threshold: 0.15,
                ..Policy::default()
            })
            .unwrap(),
        );
        assert_eq!(
            describe(&d),
            "policy.chronic_threshold is 0.1 in the views, 0.15 here"
        );
    }

    #[test]
    fn a_rate_that_is_not_whole_basis_points_is_refused() {
        let p = Policy {
            chronic_threshold: 0.123456,
            ..Policy::default()
        };
        let err = ViewPolicy::new(&p).unwrap_err().to_string();
        assert!(
            err.contains("policy.chronic_threshold") && err.contains("0.0001"),
            "{err}"
        );
    }

    #[test]
    fn the_integer_comparison_agrees_with_the_policys_for_every_rate() {
        // absent_milli * 10 >= days * bp  ⇔  rollcall_policy::is_chronic / tier
        for bp in [
            1u32, 333, 500, 700, 1000, 1234, 1500, 2000, 2500, 3333, 9999, 10_000,
        ] {
            let t = f64::from(bp) / 10_000.0;
            let p = Policy {
                chronic_threshold: t,
                min_enrolled_days: 1,
                ..Policy::default()
            };
            for days in (1u64..=400).chain([999, 5_000, 20_000]) {
                let at = days * u64::from(bp) / 10; // absent milli-days near the cut
                for am in at.saturating_sub(2)..=(at + 2).min(days * 1000) {
                    let sql = am * 10 >= days * u64::from(bp);
                    let rust = rollcall_policy::is_chronic(am as f64 / 1000.0, days as u32, &p);
                    assert_eq!(sql, rust, "bp {bp}, {am} milli of {days} days");
                }
            }
        }
    }
}
