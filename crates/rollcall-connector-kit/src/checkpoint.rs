//! Checkpoints live in the compacted topic `<prefix>.connector.checkpoints`, keyed by
//! connector id, written in the same transaction as the records they follow.

use rollcall_kafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::Checkpoint;

/// The value stored in the checkpoint topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredCheckpoint {
    pub connector: String,
    pub checkpoint: Checkpoint,
    pub committed_at_ms: i64,
}

/// The last committed checkpoint of connector `id`, if any.
pub fn load_checkpoint(
    client: &ClientConfig,
    topic: &str,
    id: &str,
) -> anyhow::Result<Option<Checkpoint>> {
    let records = rollcall_kafka::read_topic_to_end(client, topic, true)?;
    // Only the last record of this connector counts: a tombstone or a good checkpoint
    // written after a bad one supersedes it (the fix the error below recommends).
    let Some(r) = records
        .iter()
        .rev()
        .find(|r| r.key.as_deref() == Some(id.as_bytes()))
    else {
        return Ok(None);
    };
    if r.payload.is_empty() {
        return Ok(None); // a tombstone: the checkpoint was reset
    }
    let stored: StoredCheckpoint = serde_json::from_slice(&r.payload).map_err(|e| {
        anyhow::anyhow!(
            "checkpoint of {id} at {topic}/{}@{} is not valid JSON ({e}); \
             delete it with a tombstone to restart from the beginning",
            r.partition,
            r.offset
        )
    })?;
    Ok(Some(stored.checkpoint))
}
