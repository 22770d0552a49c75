//! What every rollcall consumer shares: committed reads, manual commits, batch polling,
//! and how far a consumer group is behind.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;

use crate::dead_letter::header_pairs;
use crate::pipe::InRecord;
use crate::{AssignedReader, KafkaError};

/// A `read_committed` consumer of `group_id` that never commits on its own.
pub(crate) fn committed_reader(
    client: &ClientConfig,
    group_id: &str,
) -> Result<BaseConsumer, KafkaError> {
    let mut c = client.clone();
    c.set("group.id", group_id)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.max.bytes", "52428800")
        // Let the broker gather data for up to 20 ms instead of answering each fetch
        // with the few records that just arrived: far fewer fetch requests at high
        // rates (broker CPU), at most 20 ms more latency per stage at low ones.
        .set("fetch.min.bytes", "262144")
        .set("fetch.wait.max.ms", "20")
        .set("queued.max.messages.kbytes", "262144");
    c.create().map_err(KafkaError::client("creating consumer"))
}

/// Read up to `max` records, waiting at most `wait`. Consumer errors (transient fetch
/// failures) are logged and polling goes on.
pub(crate) fn poll_batch(consumer: &BaseConsumer, max: usize, wait: Duration) -> Vec<InRecord> {
    let mut batch = Vec::new();
    let start = Instant::now();
    while batch.len() < max {
        let left = wait.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        match consumer.poll(left.min(Duration::from_millis(100))) {
            Some(Ok(m)) => batch.push(InRecord {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                headers: header_pairs(m.headers()),
            }),
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error (will retry)"),
            None => {}
        }
    }
    batch
}

/// Records of `topics` that consumer group `group_id` has not committed yet. A commit
/// marker after a transaction's last record is not counted.
pub fn group_lag(
    client: &ClientConfig,
    group_id: &str,
    topics: &[String],
) -> Result<i64, KafkaError> {
    let mut tps = Vec::new();
    for t in topics {
        for p in AssignedReader::partitions_of(client, t)? {
            tps.push((t.clone(), p));
        }
    }
    let r = AssignedReader::from_beginning(client, group_id, &tps)?;
    let committed = r.committed()?;
    Ok(r.end_offsets()?
        .iter()
        .map(|(tp, end)| (end - committed.get(tp).map(|c| c.offset).unwrap_or(0) - 1).max(0))
        .sum())
}
