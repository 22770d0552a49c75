//! The rollup service: reads the normalized topics (`read_committed`), keeps exact
//! per-student state in `rollcall-student-state`, and writes every changed day row and
//! metrics row to ClickHouse as versioned upserts. Kafka offsets are committed only
//! after ClickHouse acknowledged the rows they produced.
//!
//! Restart: the state is rebuilt from Kafka. Records below the committed offsets are
//! replayed silently (their rows are already in ClickHouse); records above them are
//! replayed as new work, so whatever a crash left unwritten is written now.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::NaiveDate;
use rollcall_config::{Config, LogFormat, Secrets};
use rollcall_kafka::{
    retry_transient, AssignedReader, DeadLetter, DeadLetterHeaders, InRecord, KafkaError,
    OutRecord, Retry, Topics, Tp, TxnProducer,
};
use rollcall_student_state::{Changed, RollupState};
use rollcall_telemetry::Health;
use tokio_util::sync::CancellationToken;

mod write;
pub use write::{to_day_row, to_metrics_row, RowWriter, VersionClock};

/// Entry point shared by `rollcall rollup` and the `rollcall-rollup` binary.
pub fn main_with(
    config: Option<&Path>,
    json_logs: bool,
    as_of: Option<String>,
) -> anyhow::Result<()> {
    let mut cfg = Config::load(config)?;
    if json_logs {
        cfg.telemetry.log_format = LogFormat::Json;
    }
    if as_of.is_some() {
        cfg.rollup.as_of = as_of;
        cfg.validate()?;
    }
    rollcall_telemetry::init_logging(&cfg.telemetry);
    let secrets = Secrets::from_env()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let shutdown = rollcall_telemetry::shutdown_on_signals();
        run(cfg, secrets, shutdown).await
    })
}

/// Which date the metrics are computed as of.
#[derive(Debug, Clone)]
pub enum AsOf {
    /// A fixed date (replays, tests).
    Fixed(NaiveDate),
    /// Today (UTC): every instructional day up to today counts.
    Today,
    /// Whatever the owner of the cell says (a simulated clock: the demo and benches).
    Shared(std::sync::Arc<std::sync::Mutex<NaiveDate>>),
}

impl AsOf {
    pub fn from_config(cfg: &Config) -> anyhow::Result<AsOf> {
        Ok(match &cfg.rollup.as_of {
            Some(d) => AsOf::Fixed(
                NaiveDate::parse_from_str(d, "%Y-%m-%d")
                    .with_context(|| format!("rollup.as_of: `{d}`"))?,
            ),
            None => AsOf::Today,
        })
    }
    pub fn date(&self) -> NaiveDate {
        match self {
            AsOf::Fixed(d) => *d,
            AsOf::Today => chrono::Utc::now().date_naive(),
            AsOf::Shared(cell) => *cell.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }
}

const AS_OF_META: &str = "as_of=";

/// Run until `shutdown`; then write what is pending, commit, and return.
pub async fn run(cfg: Config, secrets: Secrets, shutdown: CancellationToken) -> anyhow::Result<()> {
    let as_of = AsOf::from_config(&cfg)?;
    run_with_as_of(cfg, secrets, shutdown, as_of).await
}

/// [`run`], with the as-of date given by the caller.
pub async fn run_with_as_of(
    cfg: Config,
    secrets: Secrets,
    shutdown: CancellationToken,
    as_of: AsOf,
) -> anyhow::Result<()> {
    let health = Health::new();
    rollcall_telemetry::serve_health(
        &cfg.rollup.http_host,
        cfg.rollup.http_port,
        health.clone(),
        shutdown.clone(),
    )
    .await?;
    let result = Rollup::start(&cfg, &secrets, &health, &shutdown, as_of).await;
    let result = match result {
        Ok(mut r) => r.run(&health, &shutdown).await,
        Err(e) => Err(e),
    };
    if result.is_err() {
        health.set_broken();
    }
    result
}

/// Waits until ClickHouse answers (transient errors are retried with backoff, like the
/// writes), then refuses to start unless the BI views carry this policy's fingerprint.
async fn views_built_with_this_policy(
    cfg: &Config,
    secrets: &Secrets,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    use rollcall_clickhouse::ViewPolicyMismatch;
    let db = rollcall_clickhouse::connect(&cfg.clickhouse, secrets);
    let mut backoff = Duration::from_millis(200);
    loop {
        match rollcall_clickhouse::check_view_policy(&db, &cfg.clickhouse.database, &cfg.policy)
            .await
        {
            Ok(()) => return Ok(()),
            Err(e @ ViewPolicyMismatch::Client { .. }) => {
                tracing::warn!(error = %e, "ClickHouse not answering at start; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => anyhow::bail!("shutdown while waiting for ClickHouse"),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e).context("the rollup refuses to start"),
        }
    }
}

/// The partitions this instance owns: its share of attendance and enrollment, and all
/// of the calendar topic.
pub fn owned_partitions(cfg: &Config, secrets: &Secrets) -> anyhow::Result<Vec<Tp>> {
    Ok(owned_partitions_with(
        cfg,
        secrets,
        &Retry::for_up_to(rollcall_kafka::DEFAULT_BUDGET),
    )?)
}

/// [`owned_partitions`], retrying transient errors as `policy` says.
pub fn owned_partitions_with(
    cfg: &Config,
    secrets: &Secrets,
    policy: &Retry<'_>,
) -> Result<Vec<Tp>, KafkaError> {
    let client = rollcall_kafka::client_config(&cfg.kafka, secrets);
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let mut out = Vec::new();
    for entity in ["calendar", "enrollment", "attendance"] {
        let topic = topics.normalized(entity);
        for p in AssignedReader::partitions_with(&client, &topic, policy)? {
            let mine = entity == "calendar"
                || (p as u32) % cfg.rollup.instances == cfg.rollup.instance_index;
            if mine {
                out.push((topic.clone(), p));
            }
        }
    }
    Ok(out)
}

/// The running rollup: state, the reader past the committed offsets, the writer.
pub struct Rollup {
    state: RollupState,
    reader: AssignedReader,
    /// `None` while a write is in flight (the task owns it).
    writer: Option<RowWriter>,
    topics: Topics,
    as_of: AsOf,
    /// Next offset per owned partition: what will be committed.
    next: HashMap<Tp, i64>,
    max_records: usize,
    max_wait: Duration,
    /// Records `apply` could not use, waiting to go to the dead-letter topic before
    /// their offsets are committed.
    dead_letters: Vec<OutRecord>,
    dlq: TxnProducer,
}

/// Retry transient Kafka errors for as long as it takes, until `shutdown`; readiness
/// is off while retrying.
fn forever<'a>(stop: &'a (dyn Fn() -> bool + 'a), retrying: &'a (dyn Fn(bool) + 'a)) -> Retry<'a> {
    Retry {
        stop,
        budget: None,
        retrying,
    }
}

impl Rollup {
    /// Rebuild the state from Kafka and position the reader after the committed offsets.
    pub async fn start(
        cfg: &Config,
        secrets: &Secrets,
        health: &Health,
        shutdown: &CancellationToken,
        as_of: AsOf,
    ) -> anyhow::Result<Rollup> {
        let started = Instant::now();
        // The BI views judge the rows with the policy they were built with: refuse to
        // write rows under another one (rollcall migrate --policy rebuilds them).
        views_built_with_this_policy(cfg, secrets, shutdown).await?;
        let client = rollcall_kafka::client_config(&cfg.kafka, secrets);
        let topics = Topics::new(&cfg.kafka.topic_prefix);
        let group = cfg.rollup.group_id.clone();
        let stop = || shutdown.is_cancelled();
        let not_ready = |_retrying: bool| {};
        let policy = forever(&stop, &not_ready);
        let owned = tokio::task::block_in_place(|| owned_partitions_with(cfg, secrets, &policy))
            .with_context(|| format!("reading the topics on {}", cfg.kafka.brokers))?;
        // Committed offsets through the group's long-lived probe: no throw-away consumer
        // of the live group (its close can hang). A fresh broker answers NotCoordinator /
        // CoordinatorLoadInProgress for a while: retried.
        let committed = tokio::task::block_in_place(|| {
            rollcall_kafka::committed_offsets(&client, &group, &owned, &policy)
        })
        .context("reading the committed offsets")?;
        let dlq_id = format!("{group}-{}-deadletters", cfg.rollup.instance_index);
        let dlq = tokio::task::block_in_place(|| TxnProducer::connect(&client, &dlq_id, &policy))
            .context("creating the dead-letter producer")?;
        // The state starts at the as-of date its rows were last written with.
        let last_as_of = committed
            .values()
            .find_map(|c| c.metadata.strip_prefix(AS_OF_META))
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        let mut state = RollupState::new(
            cfg.policy.clone(),
            last_as_of.unwrap_or_else(|| as_of.date()),
        )?;

        // Phase 1: replay each partition up to its committed offset, silently.
        let mut replayed = 0u64;
        for tp in &owned {
            let Some(c) = committed.get(tp).filter(|c| c.offset > 0) else {
                continue;
            };
            let mut r = tokio::task::block_in_place(|| {
                AssignedReader::without_group(&client, &[(tp.clone(), None)])
            })?;
            let mut idle_since = Instant::now();
            'partition: loop {
                if shutdown.is_cancelled() {
                    anyhow::bail!("shutdown during the state rebuild");
                }
                let batch = tokio::task::block_in_place(|| {
                    r.poll_batch(20_000, Duration::from_millis(300))
                });
                if batch.is_empty() && idle_since.elapsed() > Duration::from_secs(60) {
                    anyhow::bail!(
                        "rebuilding from {}/{}: no records for 60 s before the committed offset {}",
                        tp.0,
                        tp.1,
                        c.offset
                    );
                }
                for rec in &batch {
                    idle_since = Instant::now();
                    if rec.offset < c.offset {
                        // Rejections here were dead-lettered when first read.
                        let _ = apply_or_reject(&mut state, &topics, rec);
                        replayed += 1;
                    }
                    if rec.offset >= c.offset - 1 {
                        break 'partition;
                    }
                }
            }
        }
        state.discard_dirty();
        let rebuild = started.elapsed();
        let stats = state.stats();
        metrics::gauge!("rollcall_rollup_rebuild_seconds").set(rebuild.as_secs_f64());
        tracing::info!(
            records = replayed,
            students = stats.students,
            secs = rebuild.as_secs_f64(),
            "state rebuilt from Kafka up to the committed offsets"
        );

        // Phase 2: everything after the committed offsets is new work.
        let starts: Vec<(Tp, Option<i64>)> = owned
            .iter()
            .map(|tp| (tp.clone(), committed.get(tp).map(|c| c.offset)))
            .collect();
        let reader = tokio::task::block_in_place(|| AssignedReader::new(&client, &group, &starts))?;
        let next = owned
            .iter()
            .map(|tp| (tp.clone(), committed.get(tp).map(|c| c.offset).unwrap_or(0)))
            .collect();
        let db = rollcall_clickhouse::connect(&cfg.clickhouse, secrets);
        health.set_ready(true);
        Ok(Rollup {
            state,
            reader,
            writer: Some(RowWriter::new(db)),
            topics,
            as_of,
            next,
            max_records: cfg.rollup.batch_max_rows.max(1),
            max_wait: Duration::from_millis(cfg.rollup.batch_max_wait_ms),
            dead_letters: Vec::new(),
            dlq,
        })
    }

    /// The state (for tests and benchmarks).
    pub fn state(&self) -> &RollupState {
        &self.state
    }

    pub async fn run(
        &mut self,
        health: &Health,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut last_as_of = None;
        // The ClickHouse write of one batch runs as its own task while the next records
        // are read and applied (a large write — a new enrollment fills every school day
        // of a student — would otherwise stall reading for seconds). Writes stay in
        // order, one at a time, and the offsets of a batch are committed only once its
        // write is acknowledged.
        let mut in_flight: Option<WriteInFlight> = None;
        loop {
            let stopping = shutdown.is_cancelled();
            let started = Instant::now();
            let mut records = 0usize;
            // Read at least once; while a write is in flight keep reading (up to
            // READ_AHEAD_BATCHES batches) so its time is used.
            for round in 0..READ_AHEAD_BATCHES {
                let writing = in_flight.as_ref().is_some_and(|w| !w.task.is_finished());
                if stopping || (round > 0 && !writing) {
                    break;
                }
                let (max, wait) = (self.max_records, self.max_wait);
                let batch = tokio::task::block_in_place(|| self.reader.poll_batch(max, wait));
                for rec in &batch {
                    if let Err(rejected) = apply_or_reject(&mut self.state, &self.topics, rec) {
                        self.dead_letters
                            .push(rejected.into_dead_letter(rec, &self.topics));
                    }
                    self.next
                        .insert((rec.topic.clone(), rec.partition), rec.offset + 1);
                }
                records += batch.len();
                if batch.is_empty() {
                    break;
                }
            }
            let as_of = self.as_of.date();
            if as_of != self.state.as_of() {
                let dirty = self.state.set_as_of(as_of)?;
                tracing::info!(%as_of, students = dirty, "as-of date moved; refreshing students");
            }
            // The previous write must be acknowledged (and its offsets committed)
            // before the next one starts.
            if let Some(w) = in_flight.take() {
                self.finish_write(w, health, shutdown).await?;
            }
            let changes = self.state.drain_dirty();
            let rows: usize = changes.iter().map(|c| c.len()).sum();
            let meta = format!("{AS_OF_META}{as_of}");
            if !changes.is_empty() {
                health.set_ready(true);
                let mut writer = self.writer.take().context("no writer")?;
                let (h, sd) = (health.clone(), shutdown.clone());
                in_flight = Some(WriteInFlight {
                    task: tokio::spawn(async move {
                        let r = writer.write(&changes, &sd, &h).await;
                        (writer, r)
                    }),
                    next: self.next.clone(),
                    meta,
                });
                last_as_of = Some(as_of);
            } else if records > 0 || last_as_of != Some(as_of) {
                // Nothing to write (duplicates, stale records): commit at once.
                let next = self.next.clone();
                if !self.commit(&next, &meta, health, shutdown)? {
                    break;
                }
                last_as_of = Some(as_of);
            }
            if records > 0 {
                metrics::histogram!("rollcall_rollup_batch_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::gauge!("rollcall_rollup_students").set(self.state.stats().students as f64);
                tracing::debug!(
                    records,
                    rows,
                    ms = started.elapsed().as_millis() as u64,
                    "batch applied; its write started"
                );
            }
            if stopping {
                if let Some(w) = in_flight.take() {
                    self.finish_write(w, health, shutdown).await?;
                }
                break;
            }
        }
        health.set_ready(false);
        tracing::info!("rollup stopped cleanly");
        Ok(())
    }

    /// Wait for a write and commit the offsets it made durable.
    async fn finish_write(
        &mut self,
        w: WriteInFlight,
        health: &Health,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let (writer, result) = w.task.await.context("the ClickHouse write task failed")?;
        self.writer = Some(writer);
        result?;
        // Only now is everything up to `w.next` durable in ClickHouse.
        self.commit(&w.next, &w.meta, health, shutdown)?;
        Ok(())
    }

    /// Send the pending dead letters, then commit `next`; transient Kafka errors are
    /// retried for as long as it takes (readiness off meanwhile). `Ok(false)`: stopped
    /// by a shutdown before it was done (nothing lost: a restart reads the records again).
    fn commit(
        &mut self,
        next: &HashMap<Tp, i64>,
        meta: &str,
        health: &Health,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<bool> {
        let stop = || shutdown.is_cancelled();
        let retrying = |r: bool| health.set_ready(!r);
        let policy = forever(&stop, &retrying);
        let done = tokio::task::block_in_place(|| {
            if !self.dead_letters.is_empty() {
                retry_transient("sending the rollup's dead letters", &policy, || {
                    self.dlq.send_all(&self.dead_letters)
                })?;
                metrics::counter!("rollcall_rollup_dead_letters_total")
                    .increment(self.dead_letters.len() as u64);
                self.dead_letters.clear();
            }
            retry_transient("committing offsets", &policy, || {
                self.reader.commit(next, meta)
            })
        });
        match done {
            Ok(()) => Ok(true),
            Err(e) if shutdown.is_cancelled() && e.is_transient() => {
                tracing::warn!(error = %e, "stopped before the offsets were committed; a restart reads them again");
                Ok(false)
            }
            Err(e) => Err(e).context("the rollup cannot commit (fatal Kafka error)"),
        }
    }
}

/// Batches (of `batch_max_rows` records) read and applied at most while one write is
/// in flight: bounds the next write.
const READ_AHEAD_BATCHES: usize = 10;

/// A ClickHouse write running as its own task, and what to commit once it is done.
struct WriteInFlight {
    task: tokio::task::JoinHandle<(RowWriter, anyhow::Result<()>)>,
    next: HashMap<Tp, i64>,
    meta: String,
}

/// Why the rollup could not use a normalized record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// `undecodable` (not a normalized event of its topic's schema) or `not_applicable`
    /// (decoded, but outside what the state can hold, e.g. a date out of range).
    pub kind: &'static str,
    pub reason: String,
}

impl Rejected {
    /// The dead letter for `rec` (stage `rollup`, with its coordinates).
    pub fn into_dead_letter(self, rec: &InRecord, topics: &Topics) -> OutRecord {
        DeadLetter {
            key: rec.key.clone(),
            payload: rec.payload.clone(),
            headers: DeadLetterHeaders {
                stage: "rollup".into(),
                kind: self.kind.into(),
                reason: self.reason,
                district: None,
                source_key: rec
                    .key
                    .as_ref()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
                source_topic: Some(rec.topic.clone()),
                source_partition: Some(rec.partition),
                source_offset: Some(rec.offset),
                source_file: None,
            },
        }
        .into_out_record(&topics.dead_letters())
    }
}

/// Decode one normalized record and apply it. A record that cannot be decoded or held
/// is counted and logged with its coordinates; it never stops the stream (the running
/// rollup sends it to the dead-letter topic before committing past it).
pub fn apply(state: &mut RollupState, topics: &Topics, rec: &InRecord) -> Option<Changed> {
    apply_or_reject(state, topics, rec).ok()
}

/// [`apply`], saying why a record was rejected.
pub fn apply_or_reject(
    state: &mut RollupState,
    topics: &Topics,
    rec: &InRecord,
) -> Result<Changed, Rejected> {
    let entity = if rec.topic == topics.normalized("attendance") {
        "attendance"
    } else if rec.topic == topics.normalized("enrollment") {
        "enrollment"
    } else {
        "calendar"
    };
    let undecodable = |e: String| Rejected {
        kind: "undecodable",
        reason: format!("not a normalized {entity} record: {e}"),
    };
    let not_applicable = |e: String| Rejected {
        kind: "not_applicable",
        reason: format!("the rollup cannot apply this {entity} record: {e}"),
    };
    let result = match entity {
        "attendance" => rollcall_avro::decode_attendance_event(&rec.payload)
            .map_err(|e| undecodable(e.to_string()))
            .and_then(|e| {
                state
                    .apply_attendance(&e)
                    .map_err(|e| not_applicable(e.to_string()))
            }),
        "enrollment" => rollcall_avro::decode_enrollment(&rec.payload)
            .map_err(|e| undecodable(e.to_string()))
            .and_then(|e| {
                state
                    .apply_enrollment(&e)
                    .map_err(|e| not_applicable(e.to_string()))
            }),
        _ => rollcall_avro::decode_calendar_day(&rec.payload)
            .map_err(|e| undecodable(e.to_string()))
            .and_then(|e| {
                state
                    .apply_calendar(&e)
                    .map_err(|e| not_applicable(e.to_string()))
            }),
    };
    match result {
        Ok(changed) => {
            let outcome = match changed {
                Changed::Applied => "applied",
                Changed::Duplicate => "duplicate",
                Changed::Stale => "stale",
            };
            metrics::counter!("rollcall_rollup_records_total", "entity" => entity, "outcome" => outcome)
                .increment(1);
            Ok(changed)
        }
        Err(rejected) => {
            metrics::counter!("rollcall_rollup_records_total", "entity" => entity, "outcome" => "rejected")
                .increment(1);
            tracing::warn!(topic = %rec.topic, partition = rec.partition, offset = rec.offset,
                kind = rejected.kind, reason = %rejected.reason,
                "normalized record rejected by the rollup; dead-lettered");
            Err(rejected)
        }
    }
}
