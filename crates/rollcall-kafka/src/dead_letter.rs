//! Dead letters: the original bytes, untouched, plus headers saying which stage gave up,
//! why, and where the record came from. docs/topics.md lists the headers.

use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Header names on the dead-letter topic.
pub mod header {
    pub const STAGE: &str = "rollcall.stage";
    pub const KIND: &str = "rollcall.error.kind";
    pub const REASON: &str = "rollcall.error.reason";
    pub const DISTRICT: &str = "rollcall.district";
    pub const SOURCE_KEY: &str = "rollcall.source.key";
    pub const SOURCE_TOPIC: &str = "rollcall.source.topic";
    pub const SOURCE_PARTITION: &str = "rollcall.source.partition";
    pub const SOURCE_OFFSET: &str = "rollcall.source.offset";
    /// Where a file-drop row came from: `file:line`.
    pub const SOURCE_FILE: &str = "rollcall.source.file";
}

/// What the dead-letter headers say about one record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterHeaders {
    /// `normalizer`, `connector-csv`, ...
    pub stage: String,
    /// A stable snake_case error kind (metric label).
    pub kind: String,
    /// A human-readable reason naming the field or code and what to do.
    pub reason: String,
    pub district: Option<String>,
    pub source_key: Option<String>,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub source_file: Option<String>,
}

/// A record for the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    /// The original bytes, exactly as received.
    pub payload: Vec<u8>,
    pub headers: DeadLetterHeaders,
}

impl DeadLetterHeaders {
    /// As Kafka header pairs.
    pub fn to_pairs(&self) -> Vec<(String, Vec<u8>)> {
        let mut v = vec![
            (header::STAGE.to_string(), self.stage.clone().into_bytes()),
            (header::KIND.to_string(), self.kind.clone().into_bytes()),
            (header::REASON.to_string(), self.reason.clone().into_bytes()),
        ];
        let mut opt = |k: &str, val: Option<String>| {
            if let Some(val) = val {
                v.push((k.to_string(), val.into_bytes()));
            }
        };
        opt(header::DISTRICT, self.district.clone());
        opt(header::SOURCE_KEY, self.source_key.clone());
        opt(header::SOURCE_TOPIC, self.source_topic.clone());
        opt(
            header::SOURCE_PARTITION,
            self.source_partition.map(|p| p.to_string()),
        );
        opt(
            header::SOURCE_OFFSET,
            self.source_offset.map(|p| p.to_string()),
        );
        opt(header::SOURCE_FILE, self.source_file.clone());
        v
    }

    /// Read back from Kafka header pairs; unknown headers are ignored.
    pub fn from_pairs(pairs: &[(String, Vec<u8>)]) -> Self {
        let mut h = DeadLetterHeaders::default();
        for (k, v) in pairs {
            let s = String::from_utf8_lossy(v).into_owned();
            match k.as_str() {
                header::STAGE => h.stage = s,
                header::KIND => h.kind = s,
                header::REASON => h.reason = s,
                header::DISTRICT => h.district = Some(s),
                header::SOURCE_KEY => h.source_key = Some(s),
                header::SOURCE_TOPIC => h.source_topic = Some(s),
                header::SOURCE_PARTITION => h.source_partition = s.parse().ok(),
                header::SOURCE_OFFSET => h.source_offset = s.parse().ok(),
                header::SOURCE_FILE => h.source_file = Some(s),
                _ => {}
            }
        }
        h
    }
}

pub(crate) fn to_owned_headers(pairs: &[(String, Vec<u8>)]) -> Option<OwnedHeaders> {
    if pairs.is_empty() {
        return None;
    }
    let mut h = OwnedHeaders::new_with_capacity(pairs.len());
    for (k, v) in pairs {
        h = h.insert(Header {
            key: k,
            value: Some(v),
        });
    }
    Some(h)
}

pub(crate) fn header_pairs(
    h: Option<&rdkafka::message::BorrowedHeaders>,
) -> Vec<(String, Vec<u8>)> {
    match h {
        None => Vec::new(),
        Some(h) => h
            .iter()
            .map(|x| {
                (
                    x.key.to_string(),
                    x.value.map(<[u8]>::to_vec).unwrap_or_default(),
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let h = DeadLetterHeaders {
            stage: "normalizer".into(),
            kind: "unknown_code".into(),
            reason: "code `ZZ` is not in the map".into(),
            district: Some("d1".into()),
            source_key: Some("k".into()),
            source_topic: Some("t".into()),
            source_partition: Some(3),
            source_offset: Some(42),
            source_file: None,
        };
        assert_eq!(DeadLetterHeaders::from_pairs(&h.to_pairs()), h);
    }
}
