//! A reader with explicit partition ownership, for stateful services (the rollup).
//!
//! It is assigned its partitions (no group rebalancing), reads them from the beginning
//! with `read_committed` to rebuild state, and commits offsets — with a small metadata
//! string — only when the caller says its output is durable.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::consume::{high_watermark, OwnedConsumer, REQUEST_TIMEOUT};
use crate::pipe::InRecord;
use crate::retry::{retry_transient, Retry, DEFAULT_BUDGET};
use crate::KafkaError;

/// A topic-partition.
pub type Tp = (String, i32);

/// What is committed for a partition: the next offset to read and the metadata string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub metadata: String,
}

/// Dropping one never hangs: its consumer closes with a bound (see `OwnedConsumer`).
pub struct AssignedReader {
    consumer: OwnedConsumer,
    assigned: Vec<Tp>,
}

impl AssignedReader {
    /// Assign `partitions` and position every one at its beginning.
    pub fn from_beginning(
        client: &ClientConfig,
        group_id: &str,
        partitions: &[Tp],
    ) -> Result<Self, KafkaError> {
        let starts: Vec<(Tp, Option<i64>)> =
            partitions.iter().map(|tp| (tp.clone(), None)).collect();
        Self::new(client, group_id, &starts)
    }

    /// Assign partitions, each starting at the given offset (`None`: its beginning).
    pub fn new(
        client: &ClientConfig,
        group_id: &str,
        starts: &[(Tp, Option<i64>)],
    ) -> Result<Self, KafkaError> {
        Self::assign(client, Some(group_id), starts)
    }

    /// A reader of no live consumer group (a private one: it reads, never commits): for
    /// reading a range again, e.g. a state rebuild, without a throw-away consumer of a
    /// live group.
    pub fn without_group(
        client: &ClientConfig,
        starts: &[(Tp, Option<i64>)],
    ) -> Result<Self, KafkaError> {
        Self::assign(client, None, starts)
    }

    fn assign(
        client: &ClientConfig,
        group_id: Option<&str>,
        starts: &[(Tp, Option<i64>)],
    ) -> Result<Self, KafkaError> {
        let consumer = crate::consume::committed_reader(client, group_id)?;
        let mut tpl = TopicPartitionList::new();
        for ((t, p), start) in starts {
            let offset = match start {
                Some(o) => Offset::Offset(*o),
                None => Offset::Beginning,
            };
            tpl.add_partition_offset(t, *p, offset)
                .map_err(KafkaError::client("assigning"))?;
        }
        consumer
            .assign(&tpl)
            .map_err(KafkaError::client("assigning partitions"))?;
        Ok(AssignedReader {
            consumer,
            assigned: starts.iter().map(|(tp, _)| tp.clone()).collect(),
        })
    }

    /// The partition ids of `topic`. Transient errors (a broker unreachable or moving,
    /// a topic created a moment ago and not in the metadata yet) are retried for up to
    /// [`DEFAULT_BUDGET`].
    pub fn partitions_of(client: &ClientConfig, topic: &str) -> Result<Vec<i32>, KafkaError> {
        Self::partitions_with(client, topic, &Retry::for_up_to(DEFAULT_BUDGET))
    }

    /// [`Self::partitions_of`], retrying as `policy` says.
    pub fn partitions_with(
        client: &ClientConfig,
        topic: &str,
        policy: &Retry<'_>,
    ) -> Result<Vec<i32>, KafkaError> {
        // No group id: dropping it never waits for a consumer close. (Metadata needs none.)
        let c: BaseConsumer = client
            .create()
            .map_err(KafkaError::client("creating a metadata client"))?;
        let got = retry_transient(
            &format!("reading the partitions of {topic}"),
            policy,
            || {
                let md = c
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
        );
        match got {
            Err(KafkaError::Transient(_)) => Err(KafkaError::Other(format!(
                "topic {topic} does not exist; run `rollcall topics create`"
            ))),
            other => other,
        }
    }

    /// The committed offsets (and metadata) of the assigned partitions.
    pub fn committed(&self) -> Result<HashMap<Tp, Committed>, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &self.assigned {
            tpl.add_partition(t, *p);
        }
        let got = retry_transient(
            "reading committed offsets",
            &Retry::for_up_to(DEFAULT_BUDGET),
            || {
                self.consumer
                    .committed_offsets(tpl.clone(), REQUEST_TIMEOUT)
                    .map_err(KafkaError::client("reading committed offsets"))
            },
        )?;
        let mut out = HashMap::new();
        for e in got.elements() {
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

    /// The current end (high watermark) of each assigned partition; transient errors
    /// are retried for up to [`DEFAULT_BUDGET`].
    pub fn end_offsets(&self) -> Result<HashMap<Tp, i64>, KafkaError> {
        let policy = Retry::for_up_to(DEFAULT_BUDGET);
        let mut out = HashMap::new();
        for (t, p) in &self.assigned {
            let hi = high_watermark(&self.consumer, t, *p, &policy)?;
            out.insert((t.clone(), *p), hi);
        }
        Ok(out)
    }

    /// The next offset this reader will deliver, per assigned partition (absent until
    /// the first fetch).
    pub fn positions(&self) -> Result<HashMap<Tp, i64>, KafkaError> {
        let pos = self
            .consumer
            .position()
            .map_err(KafkaError::client("reading positions"))?;
        Ok(pos
            .elements()
            .into_iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                _ => None,
            })
            .collect())
    }

    /// Read up to `max` records, waiting at most `wait`.
    pub fn poll_batch(&mut self, max: usize, wait: Duration) -> Vec<InRecord> {
        crate::consume::poll_batch(&self.consumer, max, wait)
    }

    /// Commit `next_offsets` (the next offset to read per partition) with `metadata`,
    /// synchronously (one attempt; see [`KafkaError::is_transient`] and
    /// [`crate::retry_transient`]). Call only once the output of everything before them
    /// is durable.
    pub fn commit(
        &self,
        next_offsets: &HashMap<Tp, i64>,
        metadata: &str,
    ) -> Result<(), KafkaError> {
        if next_offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in next_offsets {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o))
                .map_err(KafkaError::client("building offsets"))?;
        }
        for mut e in tpl.elements() {
            e.set_metadata(metadata);
        }
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(KafkaError::client("committing offsets"))
    }
}
