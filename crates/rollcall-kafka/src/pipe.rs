//! Exactly-once plumbing.
//!
//! [`TransactionalPipe`] is the consume–transform–produce loop: it reads a batch with
//! `read_committed`, the caller turns it into output records (including dead letters),
//! and [`TransactionalPipe::commit`] produces the outputs and commits the input offsets
//! in **one Kafka transaction**. A crash anywhere before the commit leaves nothing
//! visible to `read_committed` readers, and the inputs are read again on restart.
//!
//! [`TxnProducer`] is the same without a consumer, for connectors: records and the
//! connector's checkpoint record commit together.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::consume::{OwnedConsumer, REQUEST_TIMEOUT};
use crate::dead_letter::to_owned_headers;
use crate::retry::{retry_transient, ErrorClass, Retry, DEFAULT_BUDGET};
use crate::KafkaError;

const TXN_TIMEOUT: Duration = Duration::from_secs(60);
/// One attempt at `init_transactions` (retried while transient), short so a shutdown
/// during start-up is answered within seconds.
const INIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A record read from an input topic.
#[derive(Debug, Clone)]
pub struct InRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// Empty when the record had no value (a tombstone).
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// What one committed transaction carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipeStats {
    pub consumed: usize,
    pub produced: usize,
}

/// Consume with `read_committed`, produce and commit offsets in one transaction.
pub struct TransactionalPipe {
    consumer: OwnedConsumer,
    producer: TxnProducer,
    max_records: usize,
    max_wait: Duration,
}

impl TransactionalPipe {
    /// `transactional_id` must be stable per instance (it fences a zombie of the same
    /// instance after a crash) and unique across instances.
    pub fn new(
        client: &ClientConfig,
        group_id: &str,
        transactional_id: &str,
        inputs: &[String],
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Self, KafkaError> {
        Self::connect(
            client,
            group_id,
            transactional_id,
            inputs,
            max_records,
            max_wait,
            &Retry::for_up_to(DEFAULT_BUDGET),
        )
    }

    /// [`Self::new`], retrying transient start-up errors (a coordinator not loaded yet
    /// on a fresh broker, a broker restarting) as `policy` says; `policy.stop` is
    /// checked between attempts, so a shutdown during start-up is answered promptly.
    pub fn connect(
        client: &ClientConfig,
        group_id: &str,
        transactional_id: &str,
        inputs: &[String],
        max_records: usize,
        max_wait: Duration,
        policy: &Retry<'_>,
    ) -> Result<Self, KafkaError> {
        let mut c = client.clone();
        // Static membership: a restarted instance (same transactional id) takes its
        // partitions back at once instead of waiting out its dead predecessor's session.
        c.set("group.instance.id", transactional_id);
        let consumer = crate::consume::committed_reader(&c, Some(group_id))?;
        let topics: Vec<&str> = inputs.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(KafkaError::client(format!("subscribing to {topics:?}")))?;
        let producer = TxnProducer::connect(client, transactional_id, policy)?;
        Ok(TransactionalPipe {
            consumer,
            producer,
            max_records,
            max_wait,
        })
    }

    /// Read up to `max_records`, waiting at most `max_wait`. May return an empty batch.
    pub fn poll_batch(&mut self) -> Result<Vec<InRecord>, KafkaError> {
        Ok(crate::consume::poll_batch(
            &self.consumer,
            self.max_records,
            self.max_wait,
        ))
    }

    /// Produce `outputs` and commit the offsets after `batch` in one transaction.
    /// When the transaction has to be aborted, the consumer is rewound to the last
    /// committed offsets, so the same inputs come again; the error says why. If the
    /// rewind itself cannot be done, the error says so and is fatal
    /// ([`ErrorClass::Fatal`]): the consumer would be past uncommitted records, so the
    /// caller must not go on with this pipe.
    pub fn commit(
        &mut self,
        batch: &[InRecord],
        outputs: &[OutRecord],
    ) -> Result<PipeStats, KafkaError> {
        match self.try_commit(batch, outputs) {
            Ok(s) => Ok(s),
            Err(e) => {
                self.rewind()?;
                Err(e)
            }
        }
    }

    /// [`Self::commit`] without the rewind: when the transaction is aborted the consumer
    /// stays after `batch`, so the caller must either commit the same records again
    /// (whole or in parts, in order) or call [`Self::rewind`] before polling on.
    pub fn try_commit(
        &mut self,
        batch: &[InRecord],
        outputs: &[OutRecord],
    ) -> Result<PipeStats, KafkaError> {
        if batch.is_empty() && outputs.is_empty() {
            return Ok(PipeStats::default());
        }
        let mut next: HashMap<(&str, i32), i64> = HashMap::new();
        for r in batch {
            let e = next.entry((r.topic.as_str(), r.partition)).or_insert(0);
            *e = (*e).max(r.offset + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in next {
            tpl.add_partition_offset(t, p, Offset::Offset(o))
                .map_err(KafkaError::client("building offsets"))?;
        }
        let meta = self
            .consumer
            .group_metadata()
            .ok_or_else(|| KafkaError::Other("consumer has no group metadata".into()))?;
        let result = self.producer.in_transaction(outputs, |p| {
            p.send_offsets_to_transaction(&tpl, &meta, TXN_TIMEOUT)
        });
        result.map(|()| PipeStats {
            consumed: batch.len(),
            produced: outputs.len(),
        })
    }

    /// Offsets between this consumer's position and the end of its assigned partitions,
    /// and how many partitions are assigned; `None` while none is assigned yet. A caught-up
    /// reader of a transactional topic can sit one offset (the commit marker) below the
    /// end of each partition.
    pub fn lag(&self) -> Result<Option<(i64, usize)>, KafkaError> {
        let assigned = self
            .consumer
            .assignment()
            .map_err(KafkaError::client("reading the assignment"))?;
        if assigned.count() == 0 {
            return Ok(None);
        }
        let positions = self
            .consumer
            .position()
            .map_err(KafkaError::client("reading positions"))?;
        let mut lag = 0;
        for e in assigned.elements() {
            let (_, hi) = self
                .consumer
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))
                .map_err(KafkaError::client("reading watermarks"))?;
            let pos = match positions
                .find_partition(e.topic(), e.partition())
                .map(|p| p.offset())
            {
                Some(Offset::Offset(o)) => o,
                // Nothing consumed yet: the committed offset (or the beginning).
                _ => match self
                    .consumer
                    .committed_offsets(
                        {
                            let mut t = TopicPartitionList::new();
                            t.add_partition(e.topic(), e.partition());
                            t
                        },
                        Duration::from_secs(10),
                    )
                    .ok()
                    .and_then(|t| {
                        t.find_partition(e.topic(), e.partition())
                            .map(|p| p.offset())
                    }) {
                    Some(Offset::Offset(o)) => o,
                    _ => 0,
                },
            };
            // Transaction markers occupy offsets, so a caught-up reader can sit one below.
            lag += (hi - pos).max(0);
        }
        Ok(Some((lag, assigned.count())))
    }

    /// Seek every assigned partition back to its committed offset, so the next poll
    /// reads again everything not committed. Transient errors are retried for up to
    /// [`DEFAULT_BUDGET`]; if it still cannot be done the error is fatal (the consumer
    /// may be past uncommitted records: re-create the pipe or stop).
    pub fn rewind(&self) -> Result<(), KafkaError> {
        self.rewind_with(&Retry::for_up_to(DEFAULT_BUDGET))
    }

    /// [`Self::rewind`], retrying transient errors as `policy` says (a service riding
    /// out a broker outage retries for as long as it takes).
    pub fn rewind_with(&self, policy: &Retry<'_>) -> Result<(), KafkaError> {
        let done = retry_transient("rewinding to the committed offsets", policy, || {
            let committed = self
                .consumer
                .committed(REQUEST_TIMEOUT)
                .map_err(KafkaError::client("reading committed offsets"))?;
            for e in committed.elements() {
                let to = match e.offset() {
                    Offset::Offset(o) => Offset::Offset(o),
                    _ => Offset::Beginning,
                };
                self.consumer
                    .seek(e.topic(), e.partition(), to, REQUEST_TIMEOUT)
                    .map_err(|err| {
                        KafkaError::Transient(format!(
                            "rewinding {}/{}: {err}",
                            e.topic(),
                            e.partition()
                        ))
                    })?;
            }
            Ok(())
        });
        done.map_err(|e| {
            KafkaError::Other(format!(
                "could not rewind the consumer to its committed offsets ({e}); \
                 it must be re-created before reading on"
            ))
        })
    }
}

/// Serve delivery reports until nothing is in flight, checking every 0.5 ms. rdkafka's
/// own flush (which `commit_transaction` calls first) serves them with
/// `BaseProducer::poll(100 ms)`, which always runs to its deadline, so it added 100 ms
/// to every transaction whatever its size; after this it finds nothing to wait for.
/// (`poll` with a zero timeout serves what is there without spinning to a deadline.)
/// Bounded by the transaction timeout; commit_transaction reports any error.
fn flush_promptly(p: &BaseProducer) {
    let deadline = std::time::Instant::now() + TXN_TIMEOUT;
    while p.in_flight_count() > 0 && std::time::Instant::now() < deadline {
        p.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// A transactional producer: a set of records becomes visible all together or not at all.
pub struct TxnProducer {
    producer: BaseProducer,
}

impl TxnProducer {
    /// Transient start-up errors are retried for up to [`DEFAULT_BUDGET`].
    pub fn new(client: &ClientConfig, transactional_id: &str) -> Result<Self, KafkaError> {
        Self::connect(client, transactional_id, &Retry::for_up_to(DEFAULT_BUDGET))
    }

    /// [`Self::new`], retrying transient start-up errors as `policy` says.
    pub fn connect(
        client: &ClientConfig,
        transactional_id: &str,
        policy: &Retry<'_>,
    ) -> Result<Self, KafkaError> {
        let mut c = client.clone();
        c.set("transactional.id", transactional_id)
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("transaction.timeout.ms", "60000")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "500000")
            .set("compression.type", "lz4")
            // What this producer accepts the broker accepts (limits.rs).
            .set(
                "message.max.bytes",
                crate::limits::MAX_MESSAGE_BYTES.to_string(),
            );
        let producer: BaseProducer = c
            .create()
            .map_err(KafkaError::client("creating producer"))?;
        retry_transient("initialising transactions", policy, || {
            producer
                .init_transactions(INIT_TIMEOUT)
                .map_err(KafkaError::client(format!(
                    "initialising transactions for {transactional_id}"
                )))
        })?;
        Ok(TxnProducer { producer })
    }

    /// Produce `records` in one transaction and commit it.
    pub fn send_all(&self, records: &[OutRecord]) -> Result<(), KafkaError> {
        self.in_transaction(records, |_| Ok(()))
    }

    /// Begin, produce `records`, run `extra` (e.g. send consumer offsets), commit.
    /// On failure the transaction is aborted and nothing becomes visible.
    fn in_transaction(
        &self,
        records: &[OutRecord],
        extra: impl FnOnce(&BaseProducer) -> Result<(), RdError>,
    ) -> Result<(), KafkaError> {
        let p = &self.producer;
        p.begin_transaction()
            .map_err(KafkaError::client("beginning a transaction"))?;
        let work = (|| {
            for r in records {
                self.send_one(r)?;
            }
            extra(p)?;
            flush_promptly(p);
            p.commit_transaction(TXN_TIMEOUT)
        })();
        match work {
            Ok(()) => Ok(()),
            Err(e) => {
                let abortable = matches!(&e, RdError::Transaction(t) if t.txn_requires_abort())
                    || !matches!(&e, RdError::Transaction(t) if t.is_fatal());
                if abortable {
                    if let Err(a) = p.abort_transaction(TXN_TIMEOUT) {
                        tracing::error!(error = %a, "aborting the transaction failed");
                        let a = KafkaError::client("aborting a transaction")(a);
                        if a.class() == ErrorClass::Fatal {
                            return Err(a);
                        }
                    }
                }
                Err(KafkaError::Client {
                    doing: "committing a transaction (aborted; the batch will be retried)".into(),
                    source: e,
                })
            }
        }
    }

    fn send_one(&self, r: &OutRecord) -> Result<(), RdError> {
        loop {
            let mut rec = BaseRecord::to(&r.topic)
                .key(&r.key[..])
                .payload(&r.payload[..]);
            if let Some(h) = to_owned_headers(&r.headers) {
                rec = rec.headers(h);
            }
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}
