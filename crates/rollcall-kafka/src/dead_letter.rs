//! Dead letters: the original bytes, plus headers saying which stage gave up, why, and
//! where the record came from. docs/topics.md lists the headers.
//!
//! A dead letter always fits in one Kafka message ([`DeadLetter::into_out_record`]): a
//! payload longer than [`MAX_DEAD_LETTER_PAYLOAD_BYTES`] is cut, and the original length
//! is kept in the [`header::PAYLOAD_TRUNCATED`] header; header values and the key are cut
//! to [`MAX_HEADER_VALUE_BYTES`]. The reason and the coordinates always survive.

use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::limits::{truncate_text, MAX_DEAD_LETTER_PAYLOAD_BYTES, MAX_HEADER_VALUE_BYTES};
use crate::OutRecord;

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
    /// Present only when the payload was cut: the original payload's length in bytes.
    pub const PAYLOAD_TRUNCATED: &str = "rollcall.payload.truncated";
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

impl DeadLetter {
    /// The record to produce to the dead-letter topic `topic`. It always fits in one
    /// message (`limits::MAX_MESSAGE_BYTES`): the payload is cut to
    /// `MAX_DEAD_LETTER_PAYLOAD_BYTES` (the original length goes in the
    /// `rollcall.payload.truncated` header), each header value and the key to
    /// `MAX_HEADER_VALUE_BYTES`.
    pub fn into_out_record(self, topic: &str) -> OutRecord {
        let mut headers = self.headers.to_pairs();
        let mut payload = self.payload;
        if payload.len() > MAX_DEAD_LETTER_PAYLOAD_BYTES {
            headers.push((
                header::PAYLOAD_TRUNCATED.to_string(),
                payload.len().to_string().into_bytes(),
            ));
            payload.truncate(MAX_DEAD_LETTER_PAYLOAD_BYTES);
        }
        OutRecord {
            topic: topic.to_string(),
            key: cut_value(self.key.unwrap_or_default()),
            payload,
            headers,
        }
    }

    /// The original payload length when the dead letter's payload was cut (read from
    /// its headers); `None` when the payload is whole.
    pub fn original_payload_len(pairs: &[(String, Vec<u8>)]) -> Option<usize> {
        pairs
            .iter()
            .find(|(k, _)| k == header::PAYLOAD_TRUNCATED)
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
    }
}

/// Cut a header value (or key) to `MAX_HEADER_VALUE_BYTES`: text on a character
/// boundary with a marker, other bytes plainly.
fn cut_value(v: Vec<u8>) -> Vec<u8> {
    if v.len() <= MAX_HEADER_VALUE_BYTES {
        return v;
    }
    match String::from_utf8(v) {
        Ok(s) => truncate_text(&s, MAX_HEADER_VALUE_BYTES).into_bytes(),
        Err(e) => {
            let mut b = e.into_bytes();
            b.truncate(MAX_HEADER_VALUE_BYTES);
            b
        }
    }
}

impl DeadLetterHeaders {
    /// As Kafka header pairs, each value cut to `limits::MAX_HEADER_VALUE_BYTES`.
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
        v.into_iter().map(|(k, val)| (k, cut_value(val))).collect()
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

    #[test]
    fn a_small_dead_letter_is_kept_whole() {
        let dl = DeadLetter {
            key: Some(b"k".to_vec()),
            payload: b"{\"a\":1}".to_vec(),
            headers: DeadLetterHeaders {
                stage: "normalizer".into(),
                kind: "bad_json".into(),
                reason: "r".into(),
                ..Default::default()
            },
        };
        let out = dl.clone().into_out_record("p.deadletter");
        assert_eq!(out.topic, "p.deadletter");
        assert_eq!(out.payload, dl.payload);
        assert_eq!(out.key, b"k");
        assert_eq!(DeadLetter::original_payload_len(&out.headers), None);
        assert_eq!(DeadLetterHeaders::from_pairs(&out.headers), dl.headers);
    }

    #[test]
    fn a_huge_dead_letter_is_cut_to_fit_one_message_and_keeps_its_reason() {
        use crate::limits::MAX_MESSAGE_BYTES;
        let big_text = "é".repeat(400_000); // 800 KB of two-byte characters
        let dl = DeadLetter {
            key: Some(vec![b'k'; 300_000]),
            payload: vec![b'x'; 1_200_000],
            headers: DeadLetterHeaders {
                stage: "normalizer".into(),
                kind: "field_too_large".into(),
                reason: format!("StudentUniqueId is too long: {big_text}"),
                district: Some(big_text.clone()),
                source_key: Some(big_text.clone()),
                source_topic: Some("p.raw.attendance".into()),
                source_partition: Some(2),
                source_offset: Some(99),
                source_file: Some(big_text),
            },
        };
        let out = dl.into_out_record("p.deadletter");
        let size = out.key.len()
            + out.payload.len()
            + out
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        assert!(size < MAX_MESSAGE_BYTES / 2, "{size}");
        assert_eq!(out.payload.len(), MAX_DEAD_LETTER_PAYLOAD_BYTES);
        assert_eq!(
            DeadLetter::original_payload_len(&out.headers),
            Some(1_200_000)
        );
        assert!(out.key.len() <= MAX_HEADER_VALUE_BYTES);
        for (k, v) in &out.headers {
            assert!(v.len() <= MAX_HEADER_VALUE_BYTES, "{k}: {}", v.len());
        }
        let h = DeadLetterHeaders::from_pairs(&out.headers);
        assert_eq!(h.kind, "field_too_large");
        assert!(h.reason.starts_with("StudentUniqueId is too long"));
        assert!(h.reason.ends_with("[truncated]"));
        assert_eq!(h.source_topic.as_deref(), Some("p.raw.attendance"));
        assert_eq!((h.source_partition, h.source_offset), (Some(2), Some(99)));
    }
}
