//! Everything rollcall knows about Kafka lives here: topic names and their settings,
//! client configuration, the transactional consume–transform–produce loop, committed
//! reads, and dead-letter headers. No other crate depends on `rdkafka`'s types for
//! its logic; services hand this crate plain bytes and keys.

mod assigned;
mod client;
mod consume;
mod dead_letter;
pub mod limits;
mod pipe;
mod read;
mod retry;
mod topics;

pub use assigned::{AssignedReader, Committed, Tp};
pub use client::{client_config, KafkaError};
pub use consume::{committed_offsets, group_lag};
pub use dead_letter::{DeadLetter, DeadLetterHeaders};
pub use pipe::{InRecord, OutRecord, PipeStats, TransactionalPipe, TxnProducer};
pub use read::{read_topic_to_end, Consumed};
pub use retry::{
    classify, classify_code, retry_transient, Backoff, ErrorClass, Retry, DEFAULT_BUDGET,
};
pub use topics::{ensure_topics, list_topics, TopicSpec, Topics, ENTITIES};

/// Re-exported so callers can tune a client without naming rdkafka themselves.
pub use rdkafka::config::ClientConfig;
