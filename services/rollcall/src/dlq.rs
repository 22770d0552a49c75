//! `rollcall dlq`: look at dead letters and send them back through the pipeline after a fix.

use anyhow::Context;
use rollcall_config::{Config, Secrets};
use rollcall_kafka::{DeadLetter, DeadLetterHeaders, OutRecord, Topics, TxnProducer, ENTITIES};
use std::collections::{BTreeMap, HashSet};

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
    let (records, replayed) = read_dead_letters(&client, &topic)?;
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    let (mut shown, mut shown_replayed) = (0u64, 0u64);
    for r in &records {
        let h = DeadLetterHeaders::from_pairs(&r.headers);
        if !filter.matches(&h) {
            continue;
        }
        shown += 1;
        let was_replayed = replayed.contains(&(r.partition, r.offset));
        shown_replayed += u64::from(was_replayed);
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
                "{}@{}{}  {}  {}  {}  key={}  from={}\n    {}",
                r.partition,
                r.offset,
                if was_replayed { " [replayed]" } else { "" },
                h.stage,
                district,
                h.kind,
                h.source_key.as_deref().unwrap_or("-"),
                from,
                h.reason
            );
        }
    }
    println!("{shown} dead letter(s) in {topic}, {shown_replayed} of them replayed");
    println!("{:<24} {:<32} {:>10}", "district", "kind", "count");
    for ((d, k), n) in counts {
        println!("{d:<24} {k:<32} {n:>10}");
    }
    Ok(())
}

/// Header of a replay mark on the dead-letter topic: `<partition>@<offset>` of the dead
/// letter it marks as replayed. A mark has an empty payload and no other header.
pub const REPLAYED: &str = "rollcall.replayed";
/// Header of a re-published raw record: `<dead-letter topic>/<partition>@<offset>` it came
/// from (for tracing only; stages ignore it).
pub const REPLAY_OF: &str = "rollcall.replay.of";

/// Dead letters re-published per Kafka transaction at most (and bytes, roughly).
const REPLAY_CHUNK_RECORDS: usize = 1_000;
const REPLAY_CHUNK_BYTES: usize = 16 << 20;

/// The `(partition, offset)` a replay mark names, when `headers` are a mark's.
fn replay_mark(headers: &[(String, Vec<u8>)]) -> Option<(i32, i64)> {
    let (_, v) = headers.iter().find(|(k, _)| k == REPLAYED)?;
    let (p, o) = std::str::from_utf8(v).ok()?.split_once('@')?;
    Some((p.parse().ok()?, o.parse().ok()?))
}

/// The `(partition, offset)` of every dead letter a replay mark names.
type Replayed = HashSet<(i32, i64)>;

/// The dead-letter topic read whole: the dead letters (marks left out) and the
/// coordinates of those already replayed.
fn read_dead_letters(
    client: &rollcall_kafka::ClientConfig,
    topic: &str,
) -> anyhow::Result<(Vec<rollcall_kafka::Consumed>, Replayed)> {
    let records = rollcall_kafka::read_topic_to_end(client, topic, true)
        .with_context(|| format!("reading {topic}"))?;
    let mut replayed = HashSet::new();
    let mut letters = Vec::with_capacity(records.len());
    for r in records {
        match replay_mark(&r.headers) {
            Some(at) => {
                replayed.insert(at);
            }
            None => letters.push(r),
        }
    }
    Ok((letters, replayed))
}

/// Why a matching dead letter is not re-published.
fn unreplayable(
    h: &DeadLetterHeaders,
    pairs: &[(String, Vec<u8>)],
    raw: &[String],
) -> Option<String> {
    let Some(t) = &h.source_topic else {
        return Some(match &h.source_file {
            Some(f) => format!(
                "it came from the file {f}, not from a topic: drop the corrected file again"
            ),
            None => "it names no source topic (rollcall.source.topic)".into(),
        });
    };
    if !raw.iter().any(|r| r == t) {
        return Some(format!(
            "its source topic `{t}` is not a raw topic of this deployment ({}); replay only goes to those",
            raw.join(", ")
        ));
    }
    if let Some(len) = DeadLetter::original_payload_len(pairs) {
        return Some(format!(
            "its payload was cut to fit the dead-letter topic (original {len} bytes): the record has to come from the source again"
        ));
    }
    None
}

/// Re-publish the matching dead letters to the raw topic each came from, each at most
/// once, and leave every other dead letter replayable.
///
/// A replay reads the whole dead-letter topic from the beginning (no consumer group, no
/// committed offsets). A dead letter is identified by its own partition and offset there;
/// re-publishing it writes, in the same Kafka transaction, a replay mark to the
/// dead-letter topic (empty payload, header `rollcall.replayed = <partition>@<offset>`),
/// so a later replay — with any filter — skips it, and one that does not match the
/// filter stays replayable. A record that fails again comes back as a new dead letter
/// (new offset, no mark), so the next replay sees it. The transactional id is fixed per
/// deployment and taken before the topic is read: a second replay started meanwhile
/// fences the first instead of sending the same letters twice.
///
/// Only the raw topics of this deployment (`kafka.topic_prefix`) are replay targets; a
/// dead letter naming any other topic (another prefix, a normalized topic), one with
/// no source topic (file rows: drop the file again) or one whose payload was cut is
/// refused, each named on stderr.
pub fn replay(cfg: &Config, secrets: &Secrets, filter: &Filter) -> anyhow::Result<()> {
    let client = rollcall_kafka::client_config(&cfg.kafka, secrets);
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let dlq = topics.dead_letters();
    let raw: Vec<String> = ENTITIES.iter().map(|e| topics.raw(e)).collect();
    // First the producer (fencing any replay still running), then the read: every mark
    // committed by an earlier replay is then visible.
    let producer = TxnProducer::new(&client, &format!("{}-dlq-replay", cfg.kafka.topic_prefix))
        .context("starting the replay's transactional producer")?;
    let (letters, replayed) = read_dead_letters(&client, &dlq)?;
    let (mut sent, mut earlier, mut unmatched, mut refused) = (0u64, 0u64, 0u64, 0u64);
    let mut chunk: Vec<OutRecord> = Vec::new();
    let (mut chunk_letters, mut chunk_bytes) = (0usize, 0usize);
    for r in &letters {
        let h = DeadLetterHeaders::from_pairs(&r.headers);
        if !filter.matches(&h) {
            unmatched += 1;
            continue;
        }
        let at = (r.partition, r.offset);
        if replayed.contains(&at) {
            earlier += 1;
            continue;
        }
        if let Some(why) = unreplayable(&h, &r.headers, &raw) {
            refused += 1;
            eprintln!(
                "not replayed: dead letter {}@{} ({}, key {}): {why}",
                r.partition,
                r.offset,
                h.kind,
                h.source_key.as_deref().unwrap_or("-")
            );
            continue;
        }
        let target = h.source_topic.clone().expect("checked by unreplayable");
        chunk_bytes += r.payload.len() + r.key.as_ref().map_or(0, Vec::len);
        chunk_letters += 1;
        chunk.push(OutRecord {
            topic: target,
            key: r.key.clone().unwrap_or_default(),
            payload: r.payload.clone(),
            headers: vec![(
                REPLAY_OF.to_string(),
                format!("{dlq}/{}@{}", r.partition, r.offset).into_bytes(),
            )],
        });
        chunk.push(OutRecord {
            topic: dlq.clone(),
            key: format!("replayed/{}@{}", r.partition, r.offset).into_bytes(),
            payload: Vec::new(),
            headers: vec![(
                REPLAYED.to_string(),
                format!("{}@{}", r.partition, r.offset).into_bytes(),
            )],
        });
        if chunk_letters >= REPLAY_CHUNK_RECORDS || chunk_bytes >= REPLAY_CHUNK_BYTES {
            producer.send_all(&chunk).context(
                "re-publishing dead letters (this transaction was aborted; run the replay again)",
            )?;
            sent += chunk_letters as u64;
            chunk.clear();
            (chunk_letters, chunk_bytes) = (0, 0);
        }
    }
    if !chunk.is_empty() {
        producer.send_all(&chunk).context(
            "re-publishing dead letters (this transaction was aborted; run the replay again)",
        )?;
        sent += chunk_letters as u64;
    }
    println!(
        "re-published {sent} dead letter(s); {earlier} matching were replayed earlier; {refused} refused (see above); {unmatched} did not match the filter (still replayable)"
    );
    Ok(())
}
