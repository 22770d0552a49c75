//! The normalizer service: consumes the raw topics, turns each record into canonical
//! events with `rollcall-normalize`, and produces them — or a dead letter — exactly once
//! (output, dead letters and input offsets commit in one Kafka transaction).
//! It owns the loop, the counters and health; the rules live in the pure crates.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use rollcall_config::{Config, LogFormat, Secrets};
use rollcall_kafka::{
    DeadLetter, DeadLetterHeaders, InRecord, OutRecord, Topics, TransactionalPipe, ENTITIES,
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
    rt.block_on(run(cfg, secrets))
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
    let result = tokio::task::spawn_blocking(move || {
        let mut worker = Worker::connect(&cfg, &secrets, normalizer)?;
        worker.run(&h, &s)
    })
    .await
    .context("normalizer worker panicked")?;
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
        let topics = Topics::new(&cfg.kafka.topic_prefix);
        let client = rollcall_kafka::client_config(&cfg.kafka, secrets);
        let inputs: Vec<String> = ENTITIES.iter().map(|e| topics.raw(e)).collect();
        // Stable per instance: a restarted instance fences its crashed predecessor.
        let txn_id = format!("{}-{}", cfg.normalizer.group_id, cfg.normalizer.instance_id);
        let pipe = TransactionalPipe::new(
            &client,
            &cfg.normalizer.group_id,
            &txn_id,
            &inputs,
            cfg.normalizer.batch_max_records,
            Duration::from_millis(cfg.normalizer.batch_max_wait_ms),
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
        while !shutdown.is_cancelled() {
            let batch = self.pipe.poll_batch()?;
            if batch.is_empty() {
                continue;
            }
            let started = Instant::now();
            let today = chrono::Utc::now().date_naive();
            let (outs, tally) = transform_batch(&self.normalizer, &self.topics, &batch, today);
            match self.pipe.commit(&batch, &outs) {
                Ok(_) => tally.emit(started.elapsed()),
                Err(e) => {
                    metrics::counter!("rollcall_normalizer_aborted_batches_total").increment(1);
                    tracing::warn!(error = %e, records = batch.len(),
                        "batch not committed; it will be read again");
                }
            }
        }
        health.set_ready(false);
        tracing::info!("normalizer stopped cleanly");
        Ok(())
    }
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
                } in events
                {
                    tally.record_out(&district_id, entity.as_str());
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
