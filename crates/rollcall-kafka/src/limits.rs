//! Size limits that agree from the connector to the dead-letter topic.
//!
//! A record can stop a stream only if some hop refuses it and the hop before keeps
//! retrying. So every hop uses these numbers:
//!
//! - a connector never publishes a raw record whose payload exceeds
//!   [`MAX_RAW_PAYLOAD_BYTES`]; such a record becomes a dead letter instead;
//! - the normalizer accepts raw payloads up to the same size (`rollcall-normalize`'s
//!   `MAX_PAYLOAD_BYTES` is this constant) and dead-letters anything larger;
//! - a dead letter always fits in one Kafka message: its payload is cut to
//!   [`MAX_DEAD_LETTER_PAYLOAD_BYTES`] and each header value to [`MAX_HEADER_VALUE_BYTES`],
//!   with the original length in the `rollcall.payload.truncated` header, so the
//!   reason and the coordinates always survive;
//! - every producer's `message.max.bytes` is [`MAX_MESSAGE_BYTES`], below the broker's
//!   default limit (1,048,588 bytes), so what a producer accepts the broker accepts.

/// The producers' `message.max.bytes` (librdkafka's default; the broker's own default
/// limit is slightly larger).
pub const MAX_MESSAGE_BYTES: usize = 1_000_000;

/// The largest raw record payload a connector publishes and the normalizer reads
/// (stated once, in `rollcall-model`, which `rollcall-normalize` reads without Kafka).
pub const MAX_RAW_PAYLOAD_BYTES: usize = rollcall_model::MAX_RAW_PAYLOAD_BYTES;

/// The largest payload a dead letter carries; longer originals are cut (and marked).
pub const MAX_DEAD_LETTER_PAYLOAD_BYTES: usize = 64 * 1024;

/// The largest value of one dead-letter header (reason, source key, file name ...).
pub const MAX_HEADER_VALUE_BYTES: usize = 4 * 1024;

/// Cut `s` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate_text(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    const MARK: &str = "…[truncated]";
    let mut end = max.saturating_sub(MARK.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_char_boundaries_and_marks_the_cut() {
        assert_eq!(truncate_text("short", 10), "short");
        let long = "é".repeat(5000);
        let t = truncate_text(&long, MAX_HEADER_VALUE_BYTES);
        assert!(t.len() <= MAX_HEADER_VALUE_BYTES, "{}", t.len());
        assert!(t.ends_with("[truncated]"));
    }

    #[test]
    fn a_dead_letter_of_any_size_fits_in_a_message() {
        // Payload plus nine header values, each at its cap, plus generous framing.
        let worst = MAX_DEAD_LETTER_PAYLOAD_BYTES + 10 * MAX_HEADER_VALUE_BYTES + 4096;
        assert!(worst < MAX_MESSAGE_BYTES);
        const { assert!(MAX_RAW_PAYLOAD_BYTES + 64 * 1024 < MAX_MESSAGE_BYTES) };
    }
}
