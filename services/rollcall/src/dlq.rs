//! `rollcall dlq`: look at dead letters and send them back through the pipeline after a fix.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use rollcall_config::{Config, Secrets};
use rollcall_kafka::{DeadLetterHeaders, OutRecord, Topics, TransactionalPipe};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Filter {
    /// Only dead letters of this district.
    #[arg(long)]
    pub district: Option<String>,
    /// Only this error kind (e.g. unknown_code).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only dead letters from this stage (e.g. normalizer).
    #[arg(long)]
    pub stage: Option<String>,
}

impl Filter {
    fn matches(&self, h: &DeadLetterHeaders) -> bool {
        self.district
            .as_ref()
            .is_none_or(|d| h.district.as_deref() == Some(d))
            && self.kind.as_ref().is_none_or(|k| &h.kind == k)
            && self.stage.as_ref().is_none_or(|s| &h.stage == s)
    }
}

/// Print counts by district and kind (and, with `list`, every dead letter).
pub fn summarize(
    cfg: &Config,
    secrets: &Secrets,
    filter: &Filter,
    list: bool,
) -> anyhow::Result<()> {
    let client = rollcall_kafka::client_config(&cfg.kafka, secrets);
    let topic = Topics::new(&cfg.kafka.topic_prefix).dead_letters();
    let records = rollcall_kafka::read_topic_to_end(&client, &topic, true)
        .with_context(|| format!("reading {topic}"))?;
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut shown = 0u64;
    for r in &records {
        let h = DeadLetterHeaders::from_pairs(&r.headers);
        if !filter.matches(&h) {
            continue;
        }
        shown += 1;
        let district = h.district.clone().unwrap_or_else(|| "unknown".into());
        *counts
            .entry((district.clone(), h.kind.clone()))
            .or_default() += 1;
        if list {
            let from = match (&h.source_file, &h.source_topic) {
                (Some(f), _) => f.clone(),
                (None, Some(t)) => format!(
                    "{t}/{}@{}",
                    h.source_partition.unwrap_or(-1),
                    h.source_offset.unwrap_or(-1)
                ),
                _ => "?".into(),
            };
            println!(
                "{}@{}  {}  {}  {}  key={}  from={}\n    {}",
                r.partition,
                r.offset,
                h.stage,
                district,
                h.kind,
                h.source_key.as_deref().unwrap_or("-"),
                from,
                h.reason
            );
        }
    }
    println!("{shown} dead letter(s) in {topic}");
    println!("{:<24} {:<32} {:>10}", "district", "kind", "count");
    for ((d, k), n) in counts {
        println!("{d:<24} {k:<32} {n:>10}");
    }
    Ok(())
}

/// Re-publish matching dead letters to the topic they came from, exactly once: the
/// replay's position in the dead-letter topic (consumer group `<prefix>-dlq-replay`)
/// commits in the same transaction as the re-published records. Records that fail again
/// come back to the dead-letter topic with a new offset, so the next replay sees them.
pub fn replay(cfg: &Config, secrets: &Secrets, filter: &Filter) -> anyhow::Result<()> {
    let client = rollcall_kafka::client_config(&cfg.kafka, secrets);
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let dlq = topics.dead_letters();
    let group = format!("{}-dlq-replay", cfg.kafka.topic_prefix);
    let mut pipe = TransactionalPipe::new(
        &client,
        &group,
        &group,
        std::slice::from_ref(&dlq),
        5_000,
        Duration::from_secs(3),
    )?;
    let (mut replayed, mut skipped) = (0u64, 0u64);
    let mut idle = 0;
    loop {
        let batch = pipe.poll_batch()?;
        if batch.is_empty() {
            // Done once assigned and nothing new arrives (a transaction marker can sit
            // at the end, so allow a little lag).
            idle += 1;
            if matches!(pipe.lag()?, Some((l, parts)) if l <= parts as i64) && idle >= 2
                || idle >= 20
            {
                break;
            }
            continue;
        }
        idle = 0;
        let mut outs = Vec::new();
        for r in &batch {
            let h = DeadLetterHeaders::from_pairs(&r.headers);
            match (&h.source_topic, filter.matches(&h)) {
                (Some(t), true) => outs.push(OutRecord {
                    topic: t.clone(),
                    key: r.key.clone().unwrap_or_default(),
                    payload: r.payload.clone(),
                    headers: Vec::new(),
                }),
                _ => skipped += 1,
            }
        }
        pipe.commit(&batch, &outs)?;
        replayed += outs.len() as u64;
    }
    println!("re-published {replayed} dead letter(s); {skipped} did not match the filter or had no source topic");
    Ok(())
}
