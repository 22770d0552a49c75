//! The normalizer service: consumes the raw topics, turns each record into canonical
//! events with `rollcall-normalize`, and produces them — or a dead letter — exactly once
//! (output, dead letters and input offsets commit in one Kafka transaction).
//! It owns the loop, the counters and health; the rules live in the pure crates.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use rollcall_config::{Config, LogFormat, Secrets};
use rollcall_kafka::{
    Backoff, DeadLetter, DeadLetterHeaders, ErrorClass, InRecord, KafkaError, OutRecord, Retry,
    Topics, TransactionalPipe, ENTITIES,
};
use rollcall_normalize::{Normalized, Normalizer, Rejection};
use rollcall_telemetry::Health;
use tokio_util::sync::CancellationToken;

mod telemetry;
use telemetry::BatchTally;

/// Entry point shared by `rollcall normalizer` and the `rollcall-normalizer` binary.
pub fn main_with(config: Option<&Path>, json_logs: bool) -> anyhow::Result<()> {
    let mut cfg = Config::load(config)?;
    if json_logs {
        cfg.telemetry.log_format = LogFormat::Json;
    }
    rollcall_telemetry::init_logging(&cfg.telemetry);
    let secrets = Secrets::from_env()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(run(cfg, secrets));
    // A shutdown during start-up leaves the connecting thread behind: do not wait for it.
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

/// Run until SIGTERM / Ctrl-C; then finish the batch in hand, commit it, and return.
pub async fn run(cfg: Config, secrets: Secrets) -> anyhow::Result<()> {
    let shutdown = rollcall_telemetry::shutdown_on_signals();
    let health = Health::new();
    // Build the rules first: a bad policy or code map stops us before touching Kafka.
    let normalizer = build_normalizer(&cfg)?;
    rollcall_telemetry::serve_health(
        &cfg.normalizer.http_host,
        cfg.normalizer.http_port,
        health.clone(),
        shutdown.clone(),
    )
    .await?;
    let h = health.clone();
    let s = shutdown.clone();
    let work = tokio::task::spawn_blocking(move || {
        let stop = || s.is_cancelled();
        let mut worker = match Worker::connect_until(&cfg, &secrets, normalizer, &stop) {
            Ok(w) => w,
            Err(e) if s.is_cancelled() => {
                tracing::info!(error = %format!("{e:#}"), "shutdown during start-up");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        worker.run(&h, &s)
    });
    // Answer a shutdown at once even while still connecting (Kafka start-up calls block
    // for seconds at a time): the worker checks the token between attempts.
    let result = tokio::select! {
        r = work => r.context("normalizer worker panicked")?,
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(Duration::from_secs(5)).await
        } => {
            tracing::warn!("shutdown requested while the worker was busy for 5 s; leaving");
            Ok(())
        }
    };
    if result.is_err() {
        health.set_broken();
    }
    shutdown.cancel();
    result
}

/// The rules: the state policy and the district code maps, from the configuration.
pub fn build_normalizer(cfg: &Config) -> anyhow::Result<Normalizer> {
    let policy = cfg.policy.clone();
    let mut maps = rollcall_codemaps::CodeMapRegistry::with_builtins();
    if let Some(dir) = &cfg.normalizer.code_maps_dir {
        let n = maps
            .load_dir(dir)
            .with_context(|| format!("loading code maps from {}", dir.display()))?;
        tracing::info!(dir = %dir.display(), maps = n, "district code maps loaded");
    }
    Ok(Normalizer::new(maps, policy)
        .with_exit_date_sentinels(cfg.normalizer.exit_date_sentinels.clone()))
}

/// The consume–normalize–produce loop.
pub struct Worker {
    pipe: TransactionalPipe,
    topics: Topics,
    normalizer: Normalizer,
}

impl Worker {
    pub fn connect(
        cfg: &Config,
        secrets: &Secrets,
        normalizer: Normalizer,
    ) -> anyhow::Result<Self> {
        Self::connect_until(cfg, secrets, normalizer, &|| false)
    }

    /// [`Self::connect`], retrying transient Kafka errors (a broker starting or
    /// restarting, a coordinator not loaded yet) until `stop()`.
    pub fn connect_until(
        cfg: &Config,
        secrets: &Secrets,
        normalizer: Normalizer,
        stop: &dyn Fn() -> bool,
    ) -> anyhow::Result<Self> {
        let topics = Topics::new(&cfg.kafka.topic_prefix);
        let client = rollcall_kafka::client_config(&cfg.kafka, secrets);
        let inputs: Vec<String> = ENTITIES.iter().map(|e| topics.raw(e)).collect();
        // Stable per instance: a restarted instance fences its crashed predecessor.
        let txn_id = format!("{}-{}", cfg.normalizer.group_id, cfg.normalizer.instance_id);
        let pipe = TransactionalPipe::connect(
            &client,
            &cfg.normalizer.group_id,
            &txn_id,
            &inputs,
            cfg.normalizer.batch_max_records,
            Duration::from_millis(cfg.normalizer.batch_max_wait_ms),
            &Retry {
                stop,
                budget: None,
                retrying: &|_| {},
            },
        )
        .with_context(|| format!("connecting to Kafka at {}", cfg.kafka.brokers))?;
        tracing::info!(inputs = ?inputs, transactional_id = %txn_id, "normalizer connected");
        Ok(Worker {
            pipe,
            topics,
            normalizer,
        })
    }

    pub fn run(&mut self, health: &Health, shutdown: &CancellationToken) -> anyhow::Result<()> {
        health.set_ready(true);
        let mut backoff = Backoff::default();
        while !shutdown.is_cancelled() {
            let batch = self.pipe.poll_batch()?;
            if batch.is_empty() {
                continue;
            }
            match self.commit_in_parts(&batch) {
                Ok(()) => {
                    if backoff.attempts > 0 {
                        tracing::info!(attempts = backoff.attempts, "batches commit again");
                        backoff = Backoff::default();
                    }
                    health.set_ready(true);
                }
                Err(e) if e.is_transient() => {
                    // Stuck until the broker comes back: not ready meanwhile. The
                    // consumer goes back to the committed offsets, so nothing after them
                    // is skipped (and a rewind that cannot be done stops us).
                    health.set_ready(false);
                    metrics::counter!("rollcall_normalizer_aborted_batches_total").increment(1);
                    tracing::warn!(error = %e, records = batch.len(), attempt = backoff.attempts + 1,
                        "batch not committed (transient); it will be read again");
                    let stop = || shutdown.is_cancelled();
                    let policy = Retry {
                        stop: &stop,
                        budget: None,
                        retrying: &|_| {},
                    };
                    if let Err(r) = self.pipe.rewind_with(&policy) {
                        if shutdown.is_cancelled() {
                            break; // nothing committed past the batch; a restart reads it
                        }
                        return Err(r).context("after an aborted transaction");
                    }
                    backoff.wait(&stop);
                }
                Err(e) => {
                    return Err(e).context("the normalizer cannot go on (fatal Kafka error)");
                }
            }
        }
        health.set_ready(false);
        tracing::info!("normalizer stopped cleanly");
        Ok(())
    }

    /// Normalize and commit `batch`. A part the broker refuses for its records
    /// ([`ErrorClass::Record`], e.g. a message too large) is halved until the one record
    /// at fault is found; that record is committed as a dead letter with the broker's
    /// reason, and the rest goes on. Transient and fatal errors are returned; what was
    /// committed before them stays committed.
    fn commit_in_parts(&mut self, batch: &[InRecord]) -> Result<(), KafkaError> {
        let (normalizer, topics, pipe) = (&self.normalizer, &self.topics, &mut self.pipe);
        commit_in_parts(batch, |part, culprit| {
            let started = Instant::now();
            let today = chrono::Utc::now().date_naive();
            let (outs, tally) = match culprit {
                None => transform_batch(normalizer, topics, part, today),
                Some(reason) => refused_output(topics, &part[0], reason),
            };
            match pipe.try_commit(part, &outs) {
                Ok(_) => {
                    tally.emit(started.elapsed());
                    Ok(())
                }
                Err(e) => {
                    metrics::counter!("rollcall_normalizer_aborted_batches_total").increment(1);
                    Err(e)
                }
            }
        })
    }
}

/// Commit `batch` through `commit(part, culprit)`, in order. `culprit` is `None` for a
/// normal commit of `part`, or `Some(reason)` when `part` is the single record whose
/// output the broker refused: commit it as a dead letter. A part refused for its
/// records is split in halves until the culprit is found.
pub fn commit_in_parts<T>(
    batch: &[T],
    mut commit: impl FnMut(&[T], Option<&str>) -> Result<(), KafkaError>,
) -> Result<(), KafkaError> {
    let mut pending: Vec<&[T]> = vec![batch];
    while let Some(part) = pending.pop() {
        match commit(part, None) {
            Ok(()) => {}
            Err(e) if e.class() == ErrorClass::Record => {
                if part.len() > 1 {
                    let (a, b) = part.split_at(part.len() / 2);
                    tracing::warn!(error = %e, records = part.len(),
                        "the broker refused a batch for its records; splitting it to find the culprit");
                    pending.push(b);
                    pending.push(a);
                } else {
                    let reason = format!("the broker refused this record's output: {e}");
                    commit(part, Some(&reason))?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The dead-letter kind of a record whose output the broker refused.
pub const OUTPUT_REFUSED: &str = "output_refused";

/// One record whose output the broker refuses, as a dead letter (which always fits).
fn refused_output(topics: &Topics, rec: &InRecord, reason: &str) -> (Vec<OutRecord>, BatchTally) {
    let mut tally = BatchTally::default();
    tally.record_in(None);
    tally.record_dead_letter_kind(None, OUTPUT_REFUSED, reason);
    let headers = DeadLetterHeaders {
        stage: "normalizer".into(),
        kind: OUTPUT_REFUSED.into(),
        reason: reason.to_string(),
        district: None,
        source_key: None,
        source_topic: Some(rec.topic.clone()),
        source_partition: Some(rec.partition),
        source_offset: Some(rec.offset),
        source_file: None,
    };
    let dl = DeadLetter {
        key: rec.key.clone(),
        payload: rec.payload.clone(),
        headers,
    };
    (vec![dl.into_out_record(&topics.dead_letters())], tally)
}

/// Normalize one batch: every input gives its canonical events or one dead letter.
/// Pure apart from the clock passed in; no Kafka here.
pub fn transform_batch(
    normalizer: &Normalizer,
    topics: &Topics,
    batch: &[InRecord],
    today: chrono::NaiveDate,
) -> (Vec<OutRecord>, BatchTally) {
    let mut outs = Vec::with_capacity(batch.len());
    let mut tally = BatchTally::default();
    let dlq = topics.dead_letters();
    for rec in batch {
        match normalizer.normalize(&rec.payload, today) {
            Ok(events) => {
                let district = events.first().map(|e| e.district_id.clone());
                tally.record_in(district.as_deref());
                if events.is_empty() {
                    tally.record_ignored();
                }
                for Normalized {
                    entity,
                    district_id,
                    key,
                    value,
                    unmapped_exit_type,
                } in events
                {
                    tally.record_out(&district_id, entity.as_str());
                    if unmapped_exit_type {
                        tally.record_unmapped_exit_type(&district_id);
                    }
                    outs.push(OutRecord {
                        topic: topics.normalized(entity.as_str()),
                        key: key.into_bytes(),
                        payload: value,
                        headers: Vec::new(),
                    });
                }
            }
            Err(rejection) => {
                tally.record_in(rejection.district_id.as_deref());
                tally.record_dead_letter(&rejection);
                outs.push(dead_letter(&dlq, rec, rejection));
            }
        }
    }
    (outs, tally)
}

fn dead_letter(dlq: &str, rec: &InRecord, r: Rejection) -> OutRecord {
    let headers = DeadLetterHeaders {
        stage: "normalizer".into(),
        kind: r.kind.as_str().to_string(),
        reason: r.reason,
        district: r.district_id,
        source_key: r.source_key,
        source_topic: Some(rec.topic.clone()),
        source_partition: Some(rec.partition),
        source_offset: Some(rec.offset),
        source_file: None,
    };
    DeadLetter {
        key: rec.key.clone(),
        payload: rec.payload.clone(),
        headers,
    }
    .into_out_record(dlq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_record_is_found_by_halving_and_dead_lettered_alone() {
        let batch: Vec<u32> = (0..13).collect();
        let mut committed: Vec<(Vec<u32>, bool)> = Vec::new();
        let mut attempts = 0;
        commit_in_parts(&batch, |part, culprit| {
            attempts += 1;
            if culprit.is_none() && part.contains(&9) {
                return Err(KafkaError::Refused("message too large".into()));
            }
            committed.push((part.to_vec(), culprit.is_some()));
            Ok(())
        })
        .unwrap();
        let order: Vec<u32> = committed.iter().flat_map(|(p, _)| p.clone()).collect();
        assert_eq!(order, batch, "every record committed once, in order");
        let dead: Vec<&Vec<u32>> = committed
            .iter()
            .filter(|(_, d)| *d)
            .map(|(p, _)| p)
            .collect();
        assert_eq!(dead, vec![&vec![9]], "only the culprit is dead-lettered");
        // log2(13) rounds of halving, each failing once and then committing the halves.
        assert!(attempts <= 13, "{attempts} attempts");
    }

    fn enrollment_record(offset: i64, payload: serde_json::Value) -> InRecord {
        let env = rollcall_model::RawEnvelope {
            source_system: "powerschool".into(),
            source_instance: "inbox".into(),
            district_id: "d1".into(),
            entity: rollcall_model::Entity::Enrollment,
            operation: rollcall_model::RawOperation::Upsert,
            natural_key: format!("enrollment:{offset}"),
            old_natural_key: None,
            source_version: offset,
            observed_at_ms: 0,
            payload_format: rollcall_model::PayloadFormat::FlatJson,
            payload: payload.to_string().into_bytes(),
        };
        InRecord {
            topic: "t.raw.enrollment".into(),
            partition: 0,
            offset,
            key: None,
            payload: rollcall_avro::encode_raw(&env),
            headers: Vec::new(),
        }
    }

    #[test]
    fn grades_are_canonical_unknown_grades_dead_letter_and_unmapped_exit_codes_are_counted() {
        let normalizer = Normalizer::try_new(
            rollcall_codemaps::CodeMapRegistry::with_builtins(),
            rollcall_policy::Policy::default(),
        )
        .unwrap();
        let topics = Topics::new("t");
        let base = |grade: &str, exit: &str| {
            serde_json::json!({"school_id": "101", "student_id": "S1", "entry_date": "2024-08-20",
                "exit_date": "2024-08-20", "grade_level": grade, "exit_withdraw_type": exit})
        };
        let batch = vec![
            enrollment_record(1, base("0", "")),
            enrollment_record(2, base("-1", "")),
            enrollment_record(3, base("5", "W1")),
            enrollment_record(4, base("5", "No show")),
        ];
        let today = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        let (outs, tally) = transform_batch(&normalizer, &topics, &batch, today);
        assert_eq!(outs.len(), 4, "3 enrollments and 1 dead letter");
        assert_eq!(tally.total_in(), 4);
        assert_eq!(tally.total_out(), 3);
        assert_eq!(
            tally
                .dead_letters
                .get(&("d1".to_string(), "unknown_grade_level".to_string())),
            Some(&1)
        );
        assert_eq!(
            tally.unmapped_exit_types.get("d1"),
            Some(&1),
            "W1 is district-defined"
        );
        let enrollments: Vec<rollcall_model::Enrollment> = outs
            .iter()
            .filter(|o| o.topic == topics.normalized("enrollment"))
            .map(|o| rollcall_avro::decode_enrollment(&o.payload).unwrap())
            .collect();
        let got: Vec<(Option<&str>, Option<&str>, Option<&str>)> = enrollments
            .iter()
            .map(|e| {
                (
                    e.grade_level.as_deref(),
                    e.exit_withdraw_type.as_deref(),
                    e.source_exit_withdraw_type.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (Some("Kindergarten"), None, None),
                (Some("Fifth grade"), None, Some("W1")),
                (Some("Fifth grade"), Some("No show"), Some("No show")),
            ]
        );
        let dl = outs
            .iter()
            .find(|o| o.topic == topics.dead_letters())
            .unwrap();
        let reason = dl
            .headers
            .iter()
            .find(|(k, _)| k == "rollcall.error.reason")
            .map(|(_, v)| String::from_utf8_lossy(v).to_string())
            .unwrap_or_default();
        assert!(reason.contains("\"-1\""), "{reason}");
    }

    #[test]
    fn transient_and_fatal_errors_are_not_split() {
        let batch: Vec<u32> = (0..8).collect();
        let mut calls = 0;
        let e = commit_in_parts(&batch, |_, _| {
            calls += 1;
            Err(KafkaError::Transient("broker down".into()))
        })
        .unwrap_err();
        assert!(e.is_transient());
        assert_eq!(calls, 1, "an outage is no reason to split the batch");
        calls = 0;
        let e = commit_in_parts(&batch, |_, _| {
            calls += 1;
            Err(KafkaError::Other("producer fenced".into()))
        })
        .unwrap_err();
        assert!(!e.is_transient());
        assert_eq!(calls, 1);
    }
}
