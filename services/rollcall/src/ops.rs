//! Operator commands: migrations, topics, config.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rollcall_clickhouse::OnPolicyChange;
use rollcall_config::{Config, Secrets};

/// `rollcall migrate` and its options.
pub struct MigrateArgs {
    pub dir: Option<PathBuf>,
    pub rebuild_policy_views: bool,
    pub print_sql: bool,
    pub policy_file: Option<PathBuf>,
}

/// The policy of a `--policy-file`: the keys of a `[policy]` section, validated.
fn read_policy_file(path: &Path) -> anyhow::Result<rollcall_policy::Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the policy file {}", path.display()))?;
    let policy: rollcall_policy::Policy = toml::from_str(&text)
        .with_context(|| format!("parsing the policy file {}", path.display()))?;
    policy
        .validate()
        .with_context(|| format!("the policy file {}", path.display()))?;
    Ok(policy)
}

pub async fn migrate(cfg: &Config, secrets: &Secrets, args: &MigrateArgs) -> anyhow::Result<()> {
    let migrations = match &args.dir {
        Some(d) => rollcall_clickhouse::load_migrations_dir(d)?,
        None => rollcall_clickhouse::embedded_migrations(),
    };
    let policy = match &args.policy_file {
        Some(f) => read_policy_file(f)?,
        None => cfg.policy.clone(),
    };
    let database = &cfg.clickhouse.database;
    if args.print_sql {
        for (label, statements) in
            rollcall_clickhouse::rendered_sql(database, &migrations, &policy)?
        {
            println!("-- {label}");
            for s in statements {
                println!("{s};\n");
            }
        }
        return Ok(());
    }
    let on_change = if args.rebuild_policy_views {
        OnPolicyChange::Rebuild
    } else {
        OnPolicyChange::Refuse
    };
    let server = rollcall_clickhouse::connect_server(&cfg.clickhouse, secrets);
    let report = rollcall_clickhouse::migrate_with_policy(
        &server,
        database,
        &migrations,
        &policy,
        on_change,
    )
    .await
    .with_context(|| {
        format!(
            "migrating ClickHouse database `{database}` at {}",
            cfg.clickhouse.url
        )
    })?;
    for m in &report.already_applied {
        println!("  already applied  {m}");
    }
    for m in &report.applied_now {
        println!("  applied          {m}");
    }
    for m in &report.rebuilt {
        println!("  re-rendered      {m} (policy views)");
    }
    if report.applied_now.is_empty() && report.rebuilt.is_empty() {
        println!(
            "schema is up to date ({} migrations)",
            report.already_applied.len()
        );
    } else if !report.applied_now.is_empty() {
        println!("applied {} migration(s)", report.applied_now.len());
    }
    if report.fingerprint_written {
        println!("the views carry policy fingerprint {}", report.fingerprint);
    }
    if !report.policy_changes.is_empty() {
        println!("policy views rebuilt for the new policy:");
        for d in &report.policy_changes {
            println!("  policy.{}: {} -> {}", d.key, d.views, d.here);
        }
        println!(
            "Every view now judges every student with this policy, rows written before \
             included (the views compute the flags from the days). Restart the rollup and \
             the report/dashboard with this configuration: started with the old one they \
             refuse to start."
        );
    }
    Ok(())
}

pub async fn create_topics(cfg: &Config, secrets: &Secrets) -> anyhow::Result<()> {
    let client = rollcall_kafka::client_config(&cfg.kafka, secrets);
    let topics = rollcall_kafka::Topics::new(&cfg.kafka.topic_prefix);
    let specs = topics.specs(cfg.kafka.partitions, cfg.kafka.replication_factor);
    let done = rollcall_kafka::ensure_topics(&client, &specs)
        .await
        .with_context(|| format!("creating topics on {}", cfg.kafka.brokers))?;
    for (name, created) in done {
        println!("  {}  {name}", if created { "created" } else { "exists " });
    }
    Ok(())
}

pub fn list_topics(cfg: &Config, secrets: &Secrets) -> anyhow::Result<()> {
    let client = rollcall_kafka::client_config(&cfg.kafka, secrets);
    let prefix = format!("{}.", cfg.kafka.topic_prefix);
    let mut topics = rollcall_kafka::list_topics(&client)?;
    topics.sort();
    for (name, parts) in topics.into_iter().filter(|(n, _)| n.starts_with(&prefix)) {
        println!("  {name}  partitions={parts}");
    }
    Ok(())
}

pub fn show_config(cfg: &Config) -> anyhow::Result<String> {
    // Config holds no secrets by construction (they live in Secrets).
    Ok(toml::to_string_pretty(cfg)?)
}
