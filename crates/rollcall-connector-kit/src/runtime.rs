//! The loop around a connector: load the checkpoint, ask for the next batch, publish the
//! records, dead letters and the new checkpoint in one transaction, repeat.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rollcall_config::{Config, Secrets};
use rollcall_kafka::limits::{MAX_DEAD_LETTER_PAYLOAD_BYTES, MAX_RAW_PAYLOAD_BYTES};
use rollcall_kafka::{DeadLetterHeaders, OutRecord, Topics, TxnProducer};
use rollcall_telemetry::Health;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{load_checkpoint, StoredCheckpoint};
use crate::retry::Backoff;
use crate::{Checkpoint, ConnectorError, DeadLetter, Progress, RawRecord, SisConnector};

/// How to run a connector.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Serve /healthz, /readyz, /metrics here (`None`: don't).
    pub http: Option<(String, u16)>,
    /// Return once the source has nothing more (backfills, tests) instead of polling.
    pub stop_when_caught_up: bool,
    /// Draw a progress bar on a terminal (logs progress otherwise).
    pub show_progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            http: None,
            stop_when_caught_up: false,
            show_progress: true,
        }
    }
}

/// What a run published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub batches: u64,
    pub records: u64,
    pub dead_letters: u64,
    pub retries: u64,
}

/// A failure restarting cannot cure (the connector said so: bad credentials, a host
/// without what the configuration asks for, an unreadable checkpoint shape). A
/// supervisor ([`crate::run_named`]) stops the process on it; any other error of a run
/// is retried with backoff.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FatalError(pub String);

/// Whether a run's error is a [`FatalError`].
pub fn is_fatal(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<FatalError>())
}

/// Run `connector` until shutdown (or until caught up, with `stop_when_caught_up`).
/// Serves `/healthz`, `/readyz` and this connector's `/metrics` on `opts.http`.
pub async fn run(
    connector: Box<dyn SisConnector>,
    cfg: &Config,
    secrets: &Secrets,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<RunSummary> {
    let health = Health::new();
    if let Some((host, port)) = &opts.http {
        crate::http::serve(
            host,
            *port,
            connector.id(),
            health.clone(),
            shutdown.clone(),
        )
        .await?;
    }
    run_with_health(connector, cfg, secrets, opts, health, shutdown).await
}

/// [`run`] reporting to `health` (kept by a supervisor across restarts); `opts.http`
/// is not served here. Ready once the checkpoint is loaded; not ready while the
/// connector's last attempt failed and it waits to retry; broken on a fatal error.
pub async fn run_with_health(
    mut connector: Box<dyn SisConnector>,
    cfg: &Config,
    secrets: &Secrets,
    opts: RunOptions,
    health: Health,
    shutdown: CancellationToken,
) -> anyhow::Result<RunSummary> {
    let id = connector.id().to_string();
    let topics = Topics::new(&cfg.kafka.topic_prefix);
    let client = rollcall_kafka::client_config(&cfg.kafka, secrets);

    // The transactional producer first: initialising it fences a previous instance of
    // this connector (e.g. one that was killed) and aborts its open transaction, so the
    // read_committed checkpoint read below is not held up by it and sees exactly the
    // last committed checkpoint.
    let c = client.clone();
    let txn_id = format!("{}-connector-{id}", cfg.kafka.topic_prefix);
    let producer = Arc::new(
        tokio::task::spawn_blocking(move || TxnProducer::new(&c, &txn_id))
            .await?
            .with_context(|| format!("connecting to Kafka at {}", cfg.kafka.brokers))?,
    );
    let cp_topic = topics.connector_checkpoints();
    let (c, t, i) = (client.clone(), cp_topic.clone(), id.clone());
    let mut checkpoint = tokio::task::spawn_blocking(move || load_checkpoint(&c, &t, &i))
        .await?
        .with_context(|| format!("loading the checkpoint of {id} from {cp_topic}"))?;
    match &checkpoint {
        Some(cp) => tracing::info!(connector = %id, checkpoint = %cp.0, "resuming"),
        None => tracing::info!(connector = %id, "no checkpoint: starting from the beginning"),
    }
    health.set_ready(true);

    let mut summary = RunSummary::default();
    let mut backoff = Backoff::default();
    let mut display = ProgressDisplay::new(opts.show_progress);
    // For a connector that reads ahead, one batch is published (its Kafka transaction
    // committing on a blocking thread) while the next is read from the source. The
    // next batch starts from the checkpoint of the one in flight, which is exactly
    // what a restart would start from once that transaction has committed; if it does
    // not commit, the run fails and the batch read meanwhile is dropped unpublished.
    let mut in_flight: Option<InFlight> = None;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let next = tokio::select! {
            r = connector.next_batch(checkpoint.as_ref()) => r,
            _ = shutdown.cancelled() => break,
        };
        let mut batch = match next {
            Ok(b) => b,
            Err(ConnectorError::Transient {
                message,
                retry_after,
            }) => {
                finish(&mut in_flight, &mut *connector, &id, &mut summary).await?;
                // Not ready until an attempt succeeds again: a connector stuck retrying
                // (a host down, credentials refused again and again) says so.
                health.set_ready(false);
                let wait = backoff.next_delay(retry_after);
                summary.retries += 1;
                metrics::counter!("rollcall_connector_retries_total", "connector" => id.clone())
                    .increment(1);
                tracing::warn!(connector = %id, error = %message, attempt = backoff.attempts(),
                    wait_ms = wait.as_millis() as u64, "transient failure; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = shutdown.cancelled() => break,
                }
            }
            Err(ConnectorError::Fatal(m)) => {
                // What was read before still lands; then stop.
                let published = finish(&mut in_flight, &mut *connector, &id, &mut summary).await;
                health.set_broken();
                published?;
                return Err(FatalError(format!("connector {id}: {m}")).into());
            }
        };
        backoff.reset();
        health.set_ready(true);
        // The previous transaction must have committed before this one starts.
        finish(&mut in_flight, &mut *connector, &id, &mut summary).await?;
        let unchanged = checkpoint.as_ref() == Some(&batch.checkpoint);
        if !(batch.records.is_empty() && batch.dead_letters.is_empty() && unchanged) {
            let (p, t, i) = (producer.clone(), topics.clone(), id.clone());
            let (records, mut dead_letters) = (
                std::mem::take(&mut batch.records),
                std::mem::take(&mut batch.dead_letters),
            );
            let records = divert_oversized(&id, &topics, records, &mut dead_letters);
            let cp = batch.checkpoint.clone();
            in_flight = Some(InFlight {
                batch: Published {
                    records: records.len() as u64,
                    dead_letters: dead_letters.len() as u64,
                    counts: entity_counts(&records),
                    checkpoint: cp.clone(),
                },
                // Encoding (Avro) and producing both happen off the async task.
                publish: tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                    p.send_all(&out_records(&t, &i, &records, &dead_letters, &cp)?)?;
                    Ok(())
                }),
            });
        }
        if !connector.reads_ahead() {
            finish(&mut in_flight, &mut *connector, &id, &mut summary).await?;
        }
        if let Some(p) = &batch.progress {
            display.show(p);
        }
        checkpoint = Some(batch.checkpoint);
        if batch.caught_up {
            finish(&mut in_flight, &mut *connector, &id, &mut summary).await?;
            if opts.stop_when_caught_up {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(connector.poll_interval()) => {},
                _ = shutdown.cancelled() => break,
            }
        }
    }
    // A batch in flight at shutdown is finished, not abandoned.
    finish(&mut in_flight, &mut *connector, &id, &mut summary).await?;
    display.finish();
    health.set_ready(false);
    tracing::info!(connector = %id, batches = summary.batches, records = summary.records,
        dead_letters = summary.dead_letters, retries = summary.retries, "connector stopped");
    Ok(summary)
}

/// The Kafka records of one batch: raw records, dead letters, then the checkpoint.
fn out_records(
    topics: &Topics,
    id: &str,
    records: &[RawRecord],
    dead_letters: &[DeadLetter],
    checkpoint: &Checkpoint,
) -> anyhow::Result<Vec<OutRecord>> {
    let mut outs = Vec::with_capacity(records.len() + dead_letters.len() + 1);
    for r in records {
        outs.push(OutRecord {
            topic: topics.raw(r.envelope.entity.as_str()),
            key: r.key.clone().into_bytes(),
            payload: rollcall_avro::encode_raw(&r.envelope),
            headers: Vec::new(),
        });
    }
    let dl_topic = topics.dead_letters();
    for d in dead_letters {
        // Cut to fit one message (payload, header values): a dead letter never makes
        // the transaction fail.
        outs.push(d.clone().into_out_record(&dl_topic));
    }
    let stored = StoredCheckpoint {
        connector: id.to_string(),
        checkpoint: checkpoint.clone(),
        committed_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
    };
    outs.push(OutRecord {
        topic: topics.connector_checkpoints(),
        key: id.as_bytes().to_vec(),
        payload: serde_json::to_vec(&stored)?,
        headers: Vec::new(),
    });
    Ok(outs)
}

/// The broker refuses a message over `message.max.bytes`, and then the whole
/// transaction fails, again on every retry: a record whose payload exceeds
/// [`MAX_RAW_PAYLOAD_BYTES`] (or whose keys take more than
/// [`MAX_DEAD_LETTER_PAYLOAD_BYTES`] together) is published as a dead letter instead,
/// with its coordinates, and counted.
fn divert_oversized(
    id: &str,
    topics: &Topics,
    records: Vec<RawRecord>,
    dead_letters: &mut Vec<DeadLetter>,
) -> Vec<RawRecord> {
    if !records.iter().any(|r| oversize(r).is_some()) {
        return records;
    }
    let mut kept = Vec::with_capacity(records.len());
    for r in records {
        let Some(reason) = oversize(&r) else {
            kept.push(r);
            continue;
        };
        let e = &r.envelope;
        metrics::counter!("rollcall_connector_oversized_records_total",
            "connector" => id.to_string(), "entity" => e.entity.as_str())
        .increment(1);
        tracing::warn!(connector = %id, entity = e.entity.as_str(), payload_bytes = e.payload.len(),
            "raw record too large for Kafka: published as a dead letter");
        let reason = format!(
            "{reason}; {} {:?} record {} (source version {}) from {} was not published \
             to the raw topic — shorten the field in the source system and send it again",
            e.entity.as_str(),
            e.operation,
            rollcall_kafka::limits::truncate_text(&e.natural_key, 512),
            e.source_version,
            e.source_instance,
        );
        dead_letters.push(DeadLetter {
            key: Some(r.key.into_bytes()),
            headers: DeadLetterHeaders {
                stage: "connector".into(),
                kind: "raw_record_too_large".into(),
                reason,
                district: Some(e.district_id.clone()),
                source_key: Some(e.natural_key.clone()),
                source_topic: Some(topics.raw(e.entity.as_str())),
                source_partition: None,
                source_offset: None,
                source_file: None,
            },
            payload: r.envelope.payload,
        });
    }
    kept
}

/// Why `r` cannot be published as a raw record, if it cannot.
fn oversize(r: &RawRecord) -> Option<String> {
    let e = &r.envelope;
    if e.payload.len() > MAX_RAW_PAYLOAD_BYTES {
        return Some(format!(
            "payload of {} bytes exceeds the raw record limit of {MAX_RAW_PAYLOAD_BYTES} bytes",
            e.payload.len()
        ));
    }
    let keys = r.key.len()
        + e.natural_key.len()
        + e.old_natural_key.as_ref().map_or(0, String::len)
        + e.source_instance.len()
        + e.district_id.len();
    (keys > MAX_DEAD_LETTER_PAYLOAD_BYTES).then(|| {
        format!(
            "its keys take {keys} bytes, more than the {MAX_DEAD_LETTER_PAYLOAD_BYTES} bytes \
             a raw envelope allows beside its payload"
        )
    })
}

/// A batch being published: its transaction commits on a blocking thread.
struct InFlight {
    publish: tokio::task::JoinHandle<anyhow::Result<()>>,
    batch: Published,
}

/// What a published batch held, for `committed`, the counters and the log.
struct Published {
    /// The checkpoint after the batch.
    checkpoint: Checkpoint,
    records: u64,
    dead_letters: u64,
    counts: Vec<(&'static str, u64)>,
}

/// Wait for the batch in flight (if any) to commit, then run the connector's
/// after-commit step and count it.
async fn finish(
    in_flight: &mut Option<InFlight>,
    connector: &mut dyn SisConnector,
    id: &str,
    summary: &mut RunSummary,
) -> anyhow::Result<()> {
    let Some(InFlight { publish, batch: f }) = in_flight.take() else {
        return Ok(());
    };
    publish
        .await?
        .with_context(|| format!("publishing a batch of {id}"))?;
    if let Err(e) = connector.committed(&f.checkpoint).await {
        tracing::warn!(connector = %id, error = %e, "after-commit step failed; it is retried on the next start");
    }
    summary.batches += 1;
    summary.records += f.records;
    summary.dead_letters += f.dead_letters;
    emit(id, &f);
    Ok(())
}

/// Records per entity in a batch (one counter update each, not one per record).
fn entity_counts(records: &[RawRecord]) -> Vec<(&'static str, u64)> {
    let mut per_entity: Vec<(&'static str, u64)> = Vec::new();
    for r in records {
        let e = r.envelope.entity.as_str();
        match per_entity.iter_mut().find(|(k, _)| *k == e) {
            Some((_, n)) => *n += 1,
            None => per_entity.push((e, 1)),
        }
    }
    per_entity
}

fn emit(id: &str, f: &Published) {
    for (entity, n) in &f.counts {
        metrics::counter!("rollcall_connector_records_total",
            "connector" => id.to_string(), "entity" => *entity)
        .increment(*n);
    }
    if f.dead_letters > 0 {
        metrics::counter!("rollcall_connector_dead_letters_total", "connector" => id.to_string())
            .increment(f.dead_letters);
    }
    metrics::counter!("rollcall_connector_batches_total", "connector" => id.to_string())
        .increment(1);
    tracing::debug!(connector = %id, records = f.records,
        dead_letters = f.dead_letters, checkpoint = %f.checkpoint.0, "batch committed");
}

/// A progress bar on a terminal, a log line every few seconds otherwise.
struct ProgressDisplay {
    bar: Option<ProgressBar>,
    last_log: Instant,
}

impl ProgressDisplay {
    fn new(enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg:28} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b
        });
        ProgressDisplay {
            bar,
            last_log: Instant::now() - Duration::from_secs(60),
        }
    }

    fn show(&mut self, p: &Progress) {
        match &self.bar {
            Some(b) => {
                b.set_message(p.what.clone());
                b.set_length(p.total.unwrap_or(p.done).max(p.done));
                b.set_position(p.done);
            }
            None if self.last_log.elapsed() >= Duration::from_secs(5) => {
                self.last_log = Instant::now();
                tracing::info!(what = %p.what, done = p.done, total = ?p.total, "progress");
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
