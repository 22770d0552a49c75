//! What every rollcall consumer shares: committed reads, manual commits, batch polling,
//! consumer lifecycles that cannot hang, committed offsets, and how far a consumer group
//! is behind.

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::dead_letter::header_pairs;
use crate::pipe::InRecord;
use crate::retry::{retry_transient, Retry, DEFAULT_BUDGET};
use crate::{AssignedReader, Committed, KafkaError, Tp};

/// How long dropping a group consumer waits for its close before giving up on it.
pub(crate) const CLOSE_BOUND: Duration = Duration::from_secs(10);

/// The bound on one metadata, offsets or watermark request.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A consumer whose drop cannot hang. rdkafka's `BaseConsumer::drop` of a consumer with
/// a group id polls for the consumer close with no bound, and that close can wait
/// forever (rust-rdkafka issues #509, #453, #611). This one closes with a bound
/// ([`CLOSE_BOUND`]); a close that does not finish leaves the handle behind (leaked,
/// logged) instead of hanging the caller.
pub(crate) struct OwnedConsumer {
    inner: ManuallyDrop<BaseConsumer>,
}

impl OwnedConsumer {
    pub(crate) fn new(inner: BaseConsumer) -> Self {
        OwnedConsumer {
            inner: ManuallyDrop::new(inner),
        }
    }
}

impl Deref for OwnedConsumer {
    type Target = BaseConsumer;
    fn deref(&self) -> &BaseConsumer {
        &self.inner
    }
}

impl Drop for OwnedConsumer {
    fn drop(&mut self) {
        if !close_bounded(&self.inner, CLOSE_BOUND) {
            tracing::warn!(
                bound_s = CLOSE_BOUND.as_secs(),
                "a Kafka consumer did not close in time; left behind instead of waiting"
            );
            return; // leaked: never dropped, so never waited on
        }
        // Closed: rdkafka's own drop finds nothing to wait for.
        unsafe { ManuallyDrop::drop(&mut self.inner) }
    }
}

/// Close a group consumer, serving its queue, for at most `bound`. True once closed
/// (or when there was nothing to close).
fn close_bounded(c: &BaseConsumer, bound: Duration) -> bool {
    if c.close_queue().is_err() {
        // Already closed or not a group consumer: rdkafka's drop skips its wait too.
        return true;
    }
    let deadline = Instant::now() + bound;
    while !c.closed() {
        if Instant::now() >= deadline {
            return false;
        }
        let _ = c.poll(Duration::from_millis(100));
    }
    true
}

/// The group id of readers that belong to no live group (librdkafka needs one to
/// assign partitions): private to this process, never joined, never committed.
pub(crate) fn reader_group() -> String {
    format!("rollcall-reader-{}", std::process::id())
}

/// A `read_committed` consumer that never commits on its own, of `group_id` (`None`: a
/// private reader group, see [`reader_group`]).
pub(crate) fn committed_reader(
    client: &ClientConfig,
    group_id: Option<&str>,
) -> Result<OwnedConsumer, KafkaError> {
    let mut c = client.clone();
    match group_id {
        Some(g) => c.set("group.id", g),
        None => c.set("group.id", reader_group()),
    };
    c.set("isolation.level", "read_committed")
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
    let consumer: BaseConsumer = c
        .create()
        .map_err(KafkaError::client("creating consumer"))?;
    Ok(OwnedConsumer::new(consumer))
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

/// The probe of one consumer group on one cluster: a consumer that carries the group's
/// id but never subscribes, never commits, and is never dropped (so never closed: a
/// close is what can hang). One per (brokers, group) for the life of the process.
fn probe(client: &ClientConfig, group_id: &str) -> Result<&'static BaseConsumer, KafkaError> {
    static PROBES: OnceLock<Mutex<HashMap<(String, String), &'static BaseConsumer>>> =
        OnceLock::new();
    let key = (
        client
            .get("bootstrap.servers")
            .unwrap_or_default()
            .to_string(),
        group_id.to_string(),
    );
    let mut probes = PROBES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(p) = probes.get(&key) {
        return Ok(p);
    }
    let mut c = client.clone();
    c.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let consumer: BaseConsumer = c
        .create()
        .map_err(KafkaError::client("creating an offsets probe"))?;
    let leaked: &'static BaseConsumer = Box::leak(Box::new(consumer));
    probes.insert(key, leaked);
    Ok(leaked)
}

/// The committed offsets (and metadata) of consumer group `group_id` for `partitions`,
/// read without joining the group and without creating a consumer that would have to
/// be closed. Transient errors are retried as `policy` says.
pub fn committed_offsets(
    client: &ClientConfig,
    group_id: &str,
    partitions: &[Tp],
    policy: &Retry<'_>,
) -> Result<HashMap<Tp, Committed>, KafkaError> {
    let p = probe(client, group_id)?;
    let mut tpl = TopicPartitionList::new();
    for (t, part) in partitions {
        tpl.add_partition(t, *part);
    }
    let got = retry_transient("reading committed offsets", policy, || {
        p.committed_offsets(tpl.clone(), REQUEST_TIMEOUT)
            .map_err(KafkaError::client(format!(
                "reading the committed offsets of group {group_id}"
            )))
    })?;
    let mut out = HashMap::new();
    for e in got.elements() {
        if let Some(err) = e.error().err() {
            return Err(KafkaError::client(format!(
                "reading the committed offset of {}/{}",
                e.topic(),
                e.partition()
            ))(err));
        }
        if let Offset::Offset(o) = e.offset() {
            out.insert(
                (e.topic().to_string(), e.partition()),
                Committed {
                    offset: o,
                    metadata: e.metadata().to_string(),
                },
            );
        }
    }
    Ok(out)
}

/// The high watermark of `topic/partition`, retrying transient errors (a leader
/// election, a topic created a moment ago) as `policy` says.
pub(crate) fn high_watermark(
    c: &BaseConsumer,
    topic: &str,
    partition: i32,
    policy: &Retry<'_>,
) -> Result<i64, KafkaError> {
    retry_transient("reading a high watermark", policy, || {
        c.fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map(|(_, hi)| hi)
            .map_err(KafkaError::client(format!(
                "reading the end of {topic}/{partition}"
            )))
    })
}

/// Records of `topics` that consumer group `group_id` has not committed yet. A commit
/// marker after a transaction's last record is not counted. Never creates or drops a
/// consumer of the group (it reads through the group's long-lived probe); every call
/// to the broker is bounded and transient errors are retried for up to
/// [`DEFAULT_BUDGET`].
pub fn group_lag(
    client: &ClientConfig,
    group_id: &str,
    topics: &[String],
) -> Result<i64, KafkaError> {
    let policy = Retry::for_up_to(DEFAULT_BUDGET);
    let mut tps = Vec::new();
    for t in topics {
        for p in AssignedReader::partitions_of(client, t)? {
            tps.push((t.clone(), p));
        }
    }
    let committed = committed_offsets(client, group_id, &tps, &policy)?;
    let p = probe(client, group_id)?;
    let mut lag = 0;
    for tp in &tps {
        let end = high_watermark(p, &tp.0, tp.1, &policy)?;
        lag += (end - committed.get(tp).map(|c| c.offset).unwrap_or(0) - 1).max(0);
    }
    Ok(lag)
}
