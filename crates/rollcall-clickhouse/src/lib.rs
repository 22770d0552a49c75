//! Everything rollcall knows about ClickHouse: the client, the ordered migrations in
//! `schemas/clickhouse/`, and the row types written by the rollup. No other crate talks
//! to ClickHouse. SQL here must run on ClickHouse 18.16 (Debian) and on current releases.

mod client;
mod migrate;
pub mod policy_views;
pub mod rows;

pub use client::{connect, connect_server, within, ChError, CALL_TIMEOUT};
pub use migrate::{
    bootstrap_statements, embedded_migrations, load_migrations_dir, migrate, migrate_with_policy,
    rendered_sql, Migration, MigrationError, MigrationReport, OnPolicyChange,
};
pub use policy_views::{check_view_policy, ViewPolicy, ViewPolicyMismatch};

/// Re-exported so callers can name row types and the client without a direct dependency.
pub use clickhouse::error::Error as ClickHouseError;
pub use clickhouse::{Client, Row};
