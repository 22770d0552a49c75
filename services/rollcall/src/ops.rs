//! Operator commands: migrations, topics, config.

use std::path::Path;

use anyhow::Context;
use rollcall_config::{Config, Secrets};

pub async fn migrate(cfg: &Config, secrets: &Secrets, dir: Option<&Path>) -> anyhow::Result<()> {
    let migrations = match dir {
        Some(d) => rollcall_clickhouse::load_migrations_dir(d)?,
        None => rollcall_clickhouse::embedded_migrations(),
    };
    let server = rollcall_clickhouse::connect_server(&cfg.clickhouse, secrets);
    let report = rollcall_clickhouse::migrate(&server, &cfg.clickhouse.database, &migrations)
        .await
        .with_context(|| {
            format!(
                "migrating ClickHouse database `{}` at {}",
                cfg.clickhouse.database, cfg.clickhouse.url
            )
        })?;
    for m in &report.already_applied {
        println!("  already applied  {m}");
    }
    for m in &report.applied_now {
        println!("  applied          {m}");
    }
    if report.applied_now.is_empty() {
        println!(
            "schema is up to date ({} migrations)",
            report.already_applied.len()
        );
    } else {
        println!("applied {} migration(s)", report.applied_now.len());
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
