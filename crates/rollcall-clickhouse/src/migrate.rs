//! Ordered, checksummed migrations.
//!
//! Files are `schemas/clickhouse/NNNN_name.sql`, applied in order of `NNNN`. Statements
//! are separated by a `;` at the end of a line. `${database}` is replaced by the target
//! database. Each applied file is recorded in `${database}.schema_migrations` with the
//! SHA-256 of its text; a file edited after it was applied stops `migrate` with an error
//! that names it. Statements use `IF NOT EXISTS` / `IF EXISTS`, so a migration interrupted
//! half-way is simply run again.
//!
//! Migrations with `${policy.NAME}` placeholders (the BI views, 0002) are rendered from
//! the state's policy (`policy_views`); their checksum is that of the template. They hold
//! views only, so `migrate` re-runs them whenever the views must change: on a database
//! without a policy fingerprint, and with [`OnPolicyChange::Rebuild`] (`rollcall migrate
//! --policy`) when the policy differs from the recorded one. Without it a different
//! policy is refused, naming every differing setting.

use std::collections::BTreeMap;
use std::path::Path;

use crate::client::{within, CALL_TIMEOUT};
use crate::policy_views::{
    create_view_policy_table, differences, insert_view_policy, read_view_policy, uses_policy,
    SettingDiff, ViewPolicy, ViewPolicyError,
};
use clickhouse::{Client, Row};
use include_dir::{include_dir, Dir};
use rollcall_policy::Policy;
use serde::Deserialize;
use sha2::{Digest, Sha256};

static EMBEDDED: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../schemas/clickhouse");

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub name: String,
    pub sql: String,
}

impl Migration {
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }

    fn label(&self) -> String {
        format!("{:04}_{}", self.version, self.name)
    }

    /// Whether the migration is rendered from the policy (views only, re-runnable).
    pub fn uses_policy(&self) -> bool {
        uses_policy(&self.sql)
    }

    /// The statements of this migration for `database`, with `${policy.*}` rendered
    /// from `policy`.
    pub fn statements(
        &self,
        database: &str,
        policy: &ViewPolicy,
    ) -> Result<Vec<String>, ViewPolicyError> {
        split_statements(&self.sql)
            .into_iter()
            .map(|s| policy.render(&self.label(), &s.replace("${database}", database)))
            .collect()
    }
}

/// Checksums of earlier texts of view-only migrations, accepted as an upgrade: the
/// migration is run again with its current text (it drops and re-creates views only).
/// 0002 before it was rendered from the policy.
const SUPERSEDED: &[(u32, &str)] = &[
    (
        2,
        "2fc4dc6726df27755e1dc5adf6d7f21aa300f90b68d22a79a0ef8c057989bb67",
    ),
    (
        2,
        "7da905d0c3a2f985b9745dc2d7684b4463782fa330d8bc7755d667352678f563",
    ),
];

/// What `migrate` does when the views were built with another policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPolicyChange {
    /// Refuse, naming each differing setting (`rollcall migrate`).
    Refuse,
    /// Re-render the policy views with this policy and record its fingerprint
    /// (`rollcall migrate --policy`).
    Rebuild,
}

/// Split SQL text on `;` at the end of a line; `--` comment lines are dropped.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql.lines() {
        let t = line.trim();
        if t.starts_with("--") || (t.is_empty() && cur.trim().is_empty()) {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if t.ends_with(';') {
            let stmt = cur.trim().trim_end_matches(';').trim().to_string();
            if !stmt.is_empty() {
                out.push(stmt);
            }
            cur.clear();
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("migration file name `{0}` must look like NNNN_name.sql")]
    BadName(String),
    #[error("two migration files have version {0}")]
    DuplicateVersion(u32),
    #[error("cannot read migrations from {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "migration {version:04}_{name}.sql was edited after it was applied \
         (applied checksum {applied}, file now {now}); restore the file and put the change \
         in a new migration"
    )]
    Edited {
        version: u32,
        name: String,
        applied: String,
        now: String,
    },
    #[error(
        "the database has migration {version:04} ({name}) applied but no such file exists; \
         is this rollcall older than the schema?"
    )]
    Unknown { version: u32, name: String },
    #[error(
        "migration {version:04}_{name}.sql failed on statement {index}: {source}\n{statement}"
    )]
    Statement {
        version: u32,
        name: String,
        index: usize,
        statement: String,
        source: clickhouse::error::Error,
    },
    #[error("{0}")]
    Policy(#[from] ViewPolicyError),
    #[error(
        "the BI views in database `{database}` were built with another policy: {}. \
         Nothing was changed. Run `rollcall migrate --policy` to rebuild the views with this \
         policy, then restart the rollup and the other services with it",
        .diffs.iter().map(|d| format!("policy.{} is {} in the views, {} here", d.key, d.views, d.here)).collect::<Vec<_>>().join("; ")
    )]
    PolicyChanged {
        database: String,
        diffs: Vec<SettingDiff>,
    },
    #[error("clickhouse: {doing}: {source}")]
    Client {
        doing: String,
        source: clickhouse::error::Error,
    },
}

fn parse_name(file: &str) -> Result<(u32, String), MigrationError> {
    let stem = file
        .strip_suffix(".sql")
        .ok_or_else(|| MigrationError::BadName(file.into()))?;
    let (num, name) = stem
        .split_once('_')
        .ok_or_else(|| MigrationError::BadName(file.into()))?;
    let version = num
        .parse::<u32>()
        .map_err(|_| MigrationError::BadName(file.into()))?;
    Ok((version, name.to_string()))
}

fn sorted(files: Vec<(String, String)>) -> Result<Vec<Migration>, MigrationError> {
    let mut by_version = BTreeMap::new();
    for (file, sql) in files {
        if !file.ends_with(".sql") {
            continue;
        }
        let (version, name) = parse_name(&file)?;
        if by_version
            .insert(version, Migration { version, name, sql })
            .is_some()
        {
            return Err(MigrationError::DuplicateVersion(version));
        }
    }
    Ok(by_version.into_values().collect())
}

/// The migrations compiled into this binary (from `schemas/clickhouse/`).
pub fn embedded_migrations() -> Vec<Migration> {
    let files = EMBEDDED
        .files()
        .filter_map(|f| {
            let name = f.path().file_name()?.to_str()?.to_string();
            Some((name, f.contents_utf8()?.to_string()))
        })
        .collect();
    sorted(files).expect("schemas/clickhouse holds well-named migrations (checked by tests)")
}

/// Migrations read from a directory at run time (`rollcall migrate --dir`).
pub fn load_migrations_dir(dir: &Path) -> Result<Vec<Migration>, MigrationError> {
    let read_err = |source| MigrationError::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".sql") {
            let sql = std::fs::read_to_string(entry.path()).map_err(read_err)?;
            files.push((name, sql));
        }
    }
    sorted(files)
}

/// What `migrate` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied_now: Vec<String>,
    pub already_applied: Vec<String>,
    /// Policy views re-rendered (already applied, run again with the policy).
    pub rebuilt: Vec<String>,
    /// The fingerprint of the policy the views carry now.
    pub fingerprint: String,
    /// The settings that changed (empty unless the views were rebuilt for a new policy).
    pub policy_changes: Vec<SettingDiff>,
    /// Whether a fingerprint was recorded by this run.
    pub fingerprint_written: bool,
}

/// The bootstrap statements `migrate` runs before any migration (database, history,
/// fingerprint table).
pub fn bootstrap_statements(database: &str) -> Vec<String> {
    vec![
        format!("CREATE DATABASE IF NOT EXISTS {database}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {database}.schema_migrations (\
               version UInt32, name String, checksum String, applied_at DateTime\
             ) ENGINE = MergeTree ORDER BY version"
        ),
        create_view_policy_table(database),
    ]
}

/// Every statement a fresh `migrate` of `database` runs under `policy`, as
/// `rollcall migrate --print-sql` shows them: the bootstrap, each migration rendered,
/// and the fingerprint row (labelled).
pub fn rendered_sql(
    database: &str,
    migrations: &[Migration],
    policy: &Policy,
) -> Result<Vec<(String, Vec<String>)>, MigrationError> {
    let vp = ViewPolicy::new(policy)?;
    let mut out = vec![("bootstrap".to_string(), bootstrap_statements(database))];
    for m in migrations {
        out.push((m.label(), m.statements(database, &vp)?));
    }
    out.push((
        format!("policy fingerprint {}", vp.fingerprint()),
        vec![insert_view_policy(database, 1, &vp)],
    ));
    Ok(out)
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[derive(Row, Deserialize)]
struct Applied {
    version: u32,
    name: String,
    checksum: String,
}

/// Apply the pending migrations to `database` (created if missing) under the default
/// policy, refusing a database whose views were built with another one. `server` is a
/// client with no database selected.
pub async fn migrate(
    server: &Client,
    database: &str,
    migrations: &[Migration],
) -> Result<MigrationReport, MigrationError> {
    migrate_with_policy(
        server,
        database,
        migrations,
        &Policy::default(),
        OnPolicyChange::Refuse,
    )
    .await
}

/// Apply the pending migrations to `database` with the policy views rendered from
/// `policy`; see the module documentation for what happens when the views were built
/// with another policy.
pub async fn migrate_with_policy(
    server: &Client,
    database: &str,
    migrations: &[Migration],
    policy: &Policy,
    on_change: OnPolicyChange,
) -> Result<MigrationReport, MigrationError> {
    let vp = ViewPolicy::new(policy)?;
    // Render everything first: a bad placeholder stops before anything is touched.
    let mut rendered = Vec::new();
    for m in migrations {
        rendered.push(m.statements(database, &vp)?);
    }
    let client_err = |doing: &str| {
        let doing = doing.to_string();
        move |source| MigrationError::Client { doing, source }
    };
    for (statement, doing) in bootstrap_statements(database).into_iter().zip([
        "creating the database",
        "creating schema_migrations",
        "creating view_policy",
    ]) {
        within(CALL_TIMEOUT, server.query(&statement).execute())
            .await
            .map_err(client_err(doing))?;
    }
    // Every recorded row: a view-only migration re-run after a superseded text has two
    // rows for its version (the old checksum and the current one).
    let rows: Vec<Applied> = within(
        CALL_TIMEOUT,
        server
            .query(&format!(
                "SELECT version, name, checksum FROM {database}.schema_migrations \
                 ORDER BY version"
            ))
            .fetch_all(),
    )
    .await
    .map_err(client_err("reading schema_migrations"))?;
    // Per version: the row with the file's current checksum when there is one.
    let mut applied: Vec<Applied> = Vec::new();
    for r in rows {
        let current = migrations
            .iter()
            .find(|m| m.version == r.version)
            .map(Migration::checksum);
        match applied.iter_mut().find(|a| a.version == r.version) {
            Some(a) => {
                if Some(&r.checksum) == current.as_ref() {
                    *a = r;
                }
            }
            None => applied.push(r),
        }
    }

    let mut report = MigrationReport {
        fingerprint: vp.fingerprint(),
        ..MigrationReport::default()
    };
    // Policy migrations applied with an earlier, superseded text: run again.
    let mut rerun: Vec<u32> = Vec::new();
    // Refuse before touching anything if the history does not match the files.
    for a in &applied {
        match migrations.iter().find(|m| m.version == a.version) {
            None => {
                return Err(MigrationError::Unknown {
                    version: a.version,
                    name: a.name.clone(),
                })
            }
            Some(m)
                if m.checksum() != a.checksum
                    && SUPERSEDED.contains(&(m.version, a.checksum.as_str())) =>
            {
                rerun.push(m.version);
            }
            Some(m) if m.checksum() != a.checksum => {
                return Err(MigrationError::Edited {
                    version: m.version,
                    name: m.name.clone(),
                    applied: a.checksum.clone(),
                    now: m.checksum(),
                })
            }
            Some(_) => {}
        }
    }
    // The policy the views carry now.
    let stored = read_view_policy(server, database)
        .await
        .map_err(client_err("reading view_policy"))?;
    let rebuild_policy_views = match &stored {
        // A database without a fingerprint: (re)build the policy views and record it.
        None => true,
        Some(s) if s.fingerprint == vp.fingerprint() => false,
        Some(s) => {
            let diffs = differences(&s.settings, &vp);
            if on_change == OnPolicyChange::Refuse {
                return Err(MigrationError::PolicyChanged {
                    database: database.to_string(),
                    diffs,
                });
            }
            report.policy_changes = diffs;
            true
        }
    };
    let mut touched_policy_views = false;
    for (m, statements) in migrations.iter().zip(rendered) {
        let label = m.label();
        let is_applied = applied.iter().any(|a| a.version == m.version);
        let again = rerun.contains(&m.version);
        if is_applied && !again {
            if m.uses_policy() && rebuild_policy_views {
                tracing::info!(migration = %label, "re-rendering with the policy");
                run_statements(server, m, &statements).await?;
                report.rebuilt.push(label);
                touched_policy_views = true;
            } else {
                report.already_applied.push(label);
            }
            continue;
        }
        tracing::info!(migration = %label, "applying");
        run_statements(server, m, &statements).await?;
        touched_policy_views |= m.uses_policy();
        let record = server
            .query(&format!(
                "INSERT INTO {database}.schema_migrations (version, name, checksum, applied_at) \
                 VALUES (?, ?, ?, now())"
            ))
            .bind(m.version)
            .bind(&m.name)
            .bind(m.checksum())
            .execute();
        within(CALL_TIMEOUT, record)
            .await
            .map_err(client_err("recording a migration"))?;
        if again {
            report.rebuilt.push(label);
        } else {
            report.applied_now.push(label);
        }
    }
    if touched_policy_views || stored.is_none() {
        let insert = insert_view_policy(database, now_micros(), &vp);
        within(CALL_TIMEOUT, server.query(&insert).execute())
            .await
            .map_err(client_err("recording the policy fingerprint"))?;
        report.fingerprint_written = true;
    }
    Ok(report)
}

async fn run_statements(
    server: &Client,
    m: &Migration,
    statements: &[String],
) -> Result<(), MigrationError> {
    {
        for (index, statement) in statements.iter().enumerate() {
            let call = server.query(statement).execute();
            within(CALL_TIMEOUT, call)
                .await
                .map_err(|source| MigrationError::Statement {
                    version: m.version,
                    name: m.name.clone(),
                    index: index + 1,
                    statement: statement.clone(),
                    source,
                })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_on_line_final_semicolons_and_substitute_the_database() {
        let m = Migration {
            version: 1,
            name: "x".into(),
            sql:
                "-- comment\nCREATE TABLE ${database}.a (x UInt8)\nENGINE = Log;\n\nSELECT ';' ;\n"
                    .into(),
        };
        let vp = ViewPolicy::new(&Policy::default()).unwrap();
        assert_eq!(
            m.statements("db1", &vp).unwrap(),
            vec!["CREATE TABLE db1.a (x UInt8)\nENGINE = Log", "SELECT ';'"]
        );
    }

    #[test]
    fn embedded_migrations_are_well_named_and_ordered() {
        let ms = embedded_migrations();
        assert!(!ms.is_empty());
        assert!(ms.windows(2).all(|w| w[0].version < w[1].version));
        let vp = ViewPolicy::new(&Policy::default()).unwrap();
        for m in &ms {
            let st = m.statements("db", &vp).expect("every placeholder is known");
            assert!(!st.is_empty(), "{} has no statements", m.name);
            assert!(
                st.iter().all(|s| !s.contains("${")),
                "{} left a placeholder",
                m.name
            );
        }
    }

    #[test]
    fn bad_file_names_are_refused() {
        assert!(matches!(
            sorted(vec![("first.sql".into(), "SELECT 1".into())]),
            Err(MigrationError::BadName(_))
        ));
        assert!(matches!(
            sorted(vec![
                ("0001_a.sql".into(), "SELECT 1".into()),
                ("0001_b.sql".into(), "SELECT 1".into())
            ]),
            Err(MigrationError::DuplicateVersion(1))
        ));
    }
}
