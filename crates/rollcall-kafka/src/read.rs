//! Reading a whole topic from the beginning to its current end (tools and tests).

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::consume::REQUEST_TIMEOUT;
use crate::dead_letter::header_pairs;
use crate::retry::{retry_transient, Retry, DEFAULT_BUDGET};
use crate::KafkaError;

/// One record read back.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Read every record of `topic` from the beginning up to the end it had when called.
/// With `committed_only`, reads with `isolation.level=read_committed` (records of
/// aborted or open transactions are not returned). The reader is of no live consumer
/// group (a private one, never joined) and closes with a bound, so it cannot hang; transient errors — a broker moving, a
/// topic created a moment ago (`NotLeaderForPartition` on its watermarks) — are retried
/// for up to [`DEFAULT_BUDGET`].
pub fn read_topic_to_end(
    client: &ClientConfig,
    topic: &str,
    committed_only: bool,
) -> Result<Vec<Consumed>, KafkaError> {
    let mut c = client.clone();
    c.set("group.id", crate::consume::reader_group())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "isolation.level",
            if committed_only {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        );
    let consumer: BaseConsumer = c
        .create()
        .map_err(KafkaError::client("creating a reader"))?;
    let consumer = crate::consume::OwnedConsumer::new(consumer);
    let policy = Retry::for_up_to(DEFAULT_BUDGET);
    // A topic created a moment ago may not be in this broker's metadata yet (seen under
    // load): look again before calling it missing.
    let parts = retry_transient(
        &format!("reading the partitions of {topic}"),
        &policy,
        || {
            let md = consumer
                .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
                .map_err(KafkaError::client(format!("reading metadata of {topic}")))?;
            let parts: Vec<i32> = md
                .topics()
                .first()
                .filter(|t| t.error().is_none())
                .map(|t| t.partitions().iter().map(|p| p.id()).collect())
                .unwrap_or_default();
            if parts.is_empty() {
                return Err(KafkaError::Transient(format!(
                    "topic {topic} is not in the metadata"
                )));
            }
            Ok(parts)
        },
    )
    .map_err(|e| match e {
        KafkaError::Transient(_) => KafkaError::Other(format!("topic {topic} does not exist")),
        e => e,
    })?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = Vec::new();
    for p in &parts {
        let (lo, hi) = retry_transient(
            &format!("reading watermarks of {topic}/{p}"),
            &policy,
            || {
                consumer
                    .fetch_watermarks(topic, *p, REQUEST_TIMEOUT)
                    .map_err(KafkaError::client(format!(
                        "reading watermarks of {topic}/{p}"
                    )))
            },
        )?;
        if hi > lo {
            tpl.add_partition_offset(topic, *p, Offset::Offset(lo))
                .map_err(KafkaError::client("assigning"))?;
            remaining.push((*p, hi));
        }
    }
    if remaining.is_empty() {
        return Ok(Vec::new());
    }
    consumer
        .assign(&tpl)
        .map_err(KafkaError::client("assigning"))?;
    let mut out = Vec::new();
    let mut last_progress = Instant::now();
    // Transaction markers take offsets but are never delivered, so "done" is judged by
    // the consumer's position; a quiet period ends the read if a marker is the last offset.
    while !remaining.is_empty() && last_progress.elapsed() < Duration::from_secs(5) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                out.push(Consumed {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers: header_pairs(m.headers()),
                });
            }
            Some(Err(e)) => {
                let e = KafkaError::client(format!("reading {topic}"))(e);
                if !e.is_transient() {
                    return Err(e);
                }
                tracing::warn!(error = %e, "transient error reading a topic; going on");
            }
            None => {}
        }
        if let Ok(pos) = consumer.position() {
            remaining.retain(
                |(p, hi)| match pos.find_partition(topic, *p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o < *hi,
                    _ => true,
                },
            );
        }
    }
    Ok(out)
}
