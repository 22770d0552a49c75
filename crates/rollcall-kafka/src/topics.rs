//! Topic names and settings. docs/topics.md documents the same table; keep them in step.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::KafkaError;

/// The entities every SIS gives us; each has a raw and a normalized topic.
pub const ENTITIES: [&str; 3] = ["attendance", "enrollment", "calendar"];

/// Topic names, all under one prefix (`kafka.topic_prefix`).
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Topics {
            prefix: prefix.into(),
        }
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// Records as the SIS said them, in the raw envelope: `{prefix}.raw.{entity}`.
    pub fn raw(&self, entity: &str) -> String {
        format!("{}.raw.{entity}", self.prefix)
    }
    /// Canonical Avro events: `{prefix}.normalized.{entity}`.
    pub fn normalized(&self, entity: &str) -> String {
        format!("{}.normalized.{entity}", self.prefix)
    }
    /// Records no stage could process, with the reason in headers: `{prefix}.deadletter`.
    pub fn dead_letters(&self) -> String {
        format!("{}.deadletter", self.prefix)
    }
    /// Connector checkpoints (compacted, keyed by connector instance): `{prefix}.connector.checkpoints`.
    pub fn connector_checkpoints(&self) -> String {
        format!("{}.connector.checkpoints", self.prefix)
    }

    /// Every topic rollcall uses, with its partitions and settings.
    pub fn specs(&self, partitions: i32, replication: i32) -> Vec<TopicSpec> {
        let keep_forever = vec![("retention.ms", "-1".to_string())];
        let mut v = Vec::new();
        for e in ENTITIES {
            // Calendars are small and every rollup instance reads all of them: one partition
            // keeps each school's calendar in order.
            let p = if e == "calendar" { 1 } else { partitions };
            v.push(TopicSpec::new(
                self.raw(e),
                p,
                replication,
                keep_forever.clone(),
            ));
            v.push(TopicSpec::new(
                self.normalized(e),
                p,
                replication,
                keep_forever.clone(),
            ));
        }
        v.push(TopicSpec::new(
            self.dead_letters(),
            partitions,
            replication,
            keep_forever.clone(),
        ));
        v.push(TopicSpec::new(
            self.connector_checkpoints(),
            1,
            replication,
            vec![
                ("cleanup.policy", "compact".to_string()),
                ("min.compaction.lag.ms", "60000".to_string()),
            ],
        ));
        v
    }
}

/// One topic to create.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    pub config: Vec<(&'static str, String)>,
}

impl TopicSpec {
    pub fn new(
        name: impl Into<String>,
        partitions: i32,
        replication: i32,
        config: Vec<(&'static str, String)>,
    ) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            replication,
            config,
        }
    }
}

/// Create the topics that do not exist yet; existing ones are left alone (a partition
/// count that differs from the spec is reported, not changed). Returns, per topic,
/// whether it was created now.
pub async fn ensure_topics(
    client: &ClientConfig,
    specs: &[TopicSpec],
) -> Result<Vec<(String, bool)>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client
        .create()
        .map_err(KafkaError::client("creating the admin client"))?;
    let existing = list_topics(client)?;
    let mut out = Vec::new();
    let mut to_create = Vec::new();
    for s in specs {
        match existing.iter().find(|(n, _)| n == &s.name) {
            Some((_, parts)) => {
                if *parts != s.partitions as usize {
                    tracing::warn!(topic = %s.name, have = parts, want = s.partitions,
                        "topic exists with a different partition count; leaving it");
                }
                out.push((s.name.clone(), false));
            }
            None => to_create.push(s),
        }
    }
    if to_create.is_empty() {
        return Ok(out);
    }
    let new: Vec<NewTopic> = to_create
        .iter()
        .map(|s| {
            let mut t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(s.replication),
            );
            for (k, v) in &s.config {
                t = t.set(k, v);
            }
            t
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(KafkaError::client("creating topics"))?;
    for r in results {
        match r {
            Ok(name) => out.push((name, true)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => out.push((name, false)),
            Err((name, code)) => {
                return Err(KafkaError::Other(format!("creating topic {name}: {code}")))
            }
        }
    }
    // The controller has created them; wait until the brokers' metadata shows every
    // partition with a leader, so a client started next does not find "no such topic".
    let names: Vec<String> = to_create.iter().map(|s| s.name.clone()).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let missing = topics_without_leaders(client, &names)?;
        if missing.is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(KafkaError::Other(format!(
                "topics created but not ready after 30 s (no leader yet): {}",
                missing.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(out)
}

/// The whole cluster's metadata, from a short-lived client.
fn cluster_metadata(client: &ClientConfig) -> Result<rdkafka::metadata::Metadata, KafkaError> {
    let consumer: BaseConsumer = client
        .create()
        .map_err(KafkaError::client("creating a metadata client"))?;
    consumer
        .fetch_metadata(None, Duration::from_secs(15))
        .map_err(KafkaError::client(
            "fetching cluster metadata (is Kafka running?)",
        ))
}

/// Of `names`, those the cluster's metadata does not yet show with a leader for every
/// partition.
fn topics_without_leaders(
    client: &ClientConfig,
    names: &[String],
) -> Result<Vec<String>, KafkaError> {
    let md = cluster_metadata(client)?;
    Ok(names
        .iter()
        .filter(|n| {
            !md.topics().iter().any(|t| {
                t.name() == n.as_str()
                    && t.error().is_none()
                    && !t.partitions().is_empty()
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            })
        })
        .cloned()
        .collect())
}

/// Topic names and partition counts the cluster has.
pub fn list_topics(client: &ClientConfig) -> Result<Vec<(String, usize)>, KafkaError> {
    let md = cluster_metadata(client)?;
    Ok(md
        .topics()
        .iter()
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_scheme() {
        let t = Topics::new("rc");
        assert_eq!(t.raw("attendance"), "rc.raw.attendance");
        assert_eq!(t.normalized("enrollment"), "rc.normalized.enrollment");
        assert_eq!(t.dead_letters(), "rc.deadletter");
        assert_eq!(t.connector_checkpoints(), "rc.connector.checkpoints");
    }

    #[test]
    fn checkpoints_are_compacted_and_calendars_have_one_partition() {
        let specs = Topics::new("rc").specs(8, 1);
        let cp = specs
            .iter()
            .find(|s| s.name == "rc.connector.checkpoints")
            .unwrap();
        assert!(cp
            .config
            .contains(&("cleanup.policy", "compact".to_string())));
        let cal = specs
            .iter()
            .find(|s| s.name == "rc.normalized.calendar")
            .unwrap();
        assert_eq!(cal.partitions, 1);
        let att = specs
            .iter()
            .find(|s| s.name == "rc.normalized.attendance")
            .unwrap();
        assert_eq!(att.partitions, 8);
        assert_eq!(specs.len(), 8);
    }
}
