//! What every SIS connector shares: the one trait a connector implements
//! ([`SisConnector`]: "give me the records after this checkpoint"), and the runtime around
//! it — raw records and the checkpoint that follows them commit in one Kafka transaction,
//! retries with exponential backoff and jitter, rate limiting, graceful shutdown, health,
//! metrics and a progress display. A connector crate holds SIS logic only.
//! See docs/adding-a-connector.md.

use std::time::Duration;

use serde::{Deserialize, Serialize};

mod checkpoint;
mod cli;
mod edfi;
mod http;
mod retry;
mod runtime;
mod version;

pub use async_trait::async_trait;
pub use checkpoint::load_checkpoint;
pub use cli::{
    binary_main, main_with, plan, print_summaries, run_named, run_supervised, Planned, RunArgs,
};
pub use edfi::edfi_natural_key;
pub use retry::{rate_limiter, Backoff, RateLimiter, MAX_RETRY_AFTER};
pub use rollcall_kafka::{DeadLetter, DeadLetterHeaders};
pub use rollcall_model::{Entity, PayloadFormat, RawEnvelope, RawOperation};
pub use runtime::{is_fatal, run, run_with_health, FatalError, RunOptions, RunSummary};
pub use version::{
    segment_base, segment_base_now, source_version, version_floor, VERSION_TICKS_PER_MS,
};

/// A connector-defined position (any JSON), saved atomically with the records it follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint(pub serde_json::Value);

/// One raw record and its Kafka key (`district_id/student_id`, or `district_id/school_id`
/// for calendars — see `rollcall_model::student_key` / `school_key`).
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    pub key: String,
    pub envelope: RawEnvelope,
}

/// Milliseconds since the Unix epoch: a raw envelope's `observed_at_ms`.
pub fn observed_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How far a long load has come, for the progress display.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// What is being counted, e.g. "studentSchoolAttendanceEvents".
    pub what: String,
    pub done: u64,
    pub total: Option<u64>,
}

/// What one call of [`SisConnector::next_batch`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub records: Vec<RawRecord>,
    /// Input the connector could not even wrap (e.g. a CSV row with the wrong number of
    /// fields): kept whole in the dead-letter topic, in the same transaction.
    pub dead_letters: Vec<DeadLetter>,
    /// The position after these records.
    pub checkpoint: Checkpoint,
    /// Nothing more is available right now; the runtime waits `poll_interval`.
    pub caught_up: bool,
    pub progress: Option<Progress>,
}

/// A connector failure. Transient ones are retried with backoff; fatal ones stop it.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{message}")]
    Transient {
        message: String,
        /// What the source asked for (e.g. HTTP `Retry-After`).
        retry_after: Option<Duration>,
    },
    #[error("{0}")]
    Fatal(String),
}

impl ConnectorError {
    pub fn transient(message: impl Into<String>) -> Self {
        ConnectorError::Transient {
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn fatal(message: impl Into<String>) -> Self {
        ConnectorError::Fatal(message.into())
    }
}

/// The one trait a SIS connector implements.
#[async_trait]
pub trait SisConnector: Send {
    /// A stable id for this connector instance, e.g. `edfi:grand-bend`. It keys the
    /// checkpoint and the transactional id, so it must not change between runs.
    fn id(&self) -> &str;

    /// The records after `checkpoint` (`None`: from the very beginning), at most a few
    /// thousand at a time, and the checkpoint that follows them. Must be deterministic
    /// for a given checkpoint, so a retry after a crash neither skips nor duplicates.
    async fn next_batch(
        &mut self,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<Batch, ConnectorError>;

    /// Called after a batch and its checkpoint committed (e.g. move a file to `done/`).
    async fn committed(&mut self, _checkpoint: &Checkpoint) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// May [`SisConnector::next_batch`] run while the previous batch's transaction is
    /// still committing? Then reading the source overlaps publishing to Kafka. Only
    /// for a connector whose next batch depends on nothing but the checkpoint it is
    /// given — not one whose `committed` step changes what it reads next (the file-drop
    /// connector moves finished files out of its inbox there).
    fn reads_ahead(&self) -> bool {
        false
    }

    /// How long to wait once caught up before asking again.
    fn poll_interval(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// How the `rollcall` CLI builds a connector from its `[connectors.<name>]` section.
/// Each connector crate exports one; the CLI lists them in one place.
pub struct Factory {
    /// The `kind = "..."` value that selects this connector.
    pub kind: &'static str,
    pub about: &'static str,
    /// Build from the instance name and its config section (JSON, `kind` removed).
    pub build: fn(name: &str, section: serde_json::Value) -> anyhow::Result<Box<dyn SisConnector>>,
}
