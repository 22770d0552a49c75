//! Ordered, checksummed migrations.
//!
//! Files are `schemas/clickhouse/NNNN_name.sql`, applied in order of `NNNN`. Statements
//! are separated by a `;` at the end of a line. `${database}` is replaced by the target
//! database. Each applied file is recorded in `${database}.schema_migrations` with the
//! SHA-256 of its text; a file edited after it was applied stops `migrate` with an error
//! that names it. Statements use `IF NOT EXISTS` / `IF EXISTS`, so a migration interrupted
//! half-way is simply run again.

use std::collections::BTreeMap;
use std::path::Path;

use crate::client::{within, CALL_TIMEOUT};
use clickhouse::{Client, Row};
use include_dir::{include_dir, Dir};
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

    /// The statements of this migration for `database`.
    pub fn statements(&self, database: &str) -> Vec<String> {
        split_statements(&self.sql)
            .into_iter()
            .map(|s| s.replace("${database}", database))
            .collect()
    }
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
}

#[derive(Row, Deserialize)]
struct Applied {
    version: u32,
    name: String,
    checksum: String,
}

/// Apply the pending migrations to `database` (created if missing). `server` is a
/// client with no database selected.
pub async fn migrate(
    server: &Client,
    database: &str,
    migrations: &[Migration],
) -> Result<MigrationReport, MigrationError> {
    let client_err = |doing: &str| {
        let doing = doing.to_string();
        move |source| MigrationError::Client { doing, source }
    };
    within(
        CALL_TIMEOUT,
        server
            .query(&format!("CREATE DATABASE IF NOT EXISTS {database}"))
            .execute(),
    )
    .await
    .map_err(client_err("creating the database"))?;
    within(
        CALL_TIMEOUT,
        server
            .query(&format!(
                "CREATE TABLE IF NOT EXISTS {database}.schema_migrations (\
                   version UInt32, name String, checksum String, applied_at DateTime\
                 ) ENGINE = MergeTree ORDER BY version"
            ))
            .execute(),
    )
    .await
    .map_err(client_err("creating schema_migrations"))?;
    let applied: Vec<Applied> = within(
        CALL_TIMEOUT,
        server
            .query(&format!(
                "SELECT version, any(name), any(checksum) FROM {database}.schema_migrations \
                 GROUP BY version ORDER BY version"
            ))
            .fetch_all(),
    )
    .await
    .map_err(client_err("reading schema_migrations"))?;

    let mut report = MigrationReport::default();
    // Refuse before touching anything if the history does not match the files.
    for a in &applied {
        match migrations.iter().find(|m| m.version == a.version) {
            None => {
                return Err(MigrationError::Unknown {
                    version: a.version,
                    name: a.name.clone(),
                })
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
    for m in migrations {
        let label = format!("{:04}_{}", m.version, m.name);
        if applied.iter().any(|a| a.version == m.version) {
            report.already_applied.push(label);
            continue;
        }
        tracing::info!(migration = %label, "applying");
        for (index, statement) in m.statements(database).into_iter().enumerate() {
            let call = server.query(&statement).execute();
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
        report.applied_now.push(label);
    }
    Ok(report)
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
        assert_eq!(
            m.statements("db1"),
            vec!["CREATE TABLE db1.a (x UInt8)\nENGINE = Log", "SELECT ';'"]
        );
    }

    #[test]
    fn embedded_migrations_are_well_named_and_ordered() {
        let ms = embedded_migrations();
        assert!(!ms.is_empty());
        assert!(ms.windows(2).all(|w| w[0].version < w[1].version));
        for m in &ms {
            assert!(
                !m.statements("db").is_empty(),
                "{} has no statements",
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
