//! Source versions that compare across sources.
//!
//! The rollup keeps, per record identity (`source_system` + natural key), the record
//! with the highest `source_version` (docs/rollup-rules.md). The same Ed-Fi record may
//! come from the ODS/API connector (change windows) and from the file-drop connector
//! (XML interchanges), and a file-drop connector may start over after its checkpoint is
//! reset. So every connector versions its records the same way:
//!
//! ```text
//! source_version = segment base + ordinal
//! segment base   = max(observed_ms · 2^20, the end of the connector's previous segment)
//! ```
//!
//! A **segment** is one unit a connector reads as of one moment: an Ed-Fi change
//! window, one dropped file. Its base is taken from the wall clock when the segment
//! starts and **stored in the checkpoint**, so `next_batch` stays deterministic for a
//! given checkpoint (a retry re-publishes the same versions). The **ordinal** orders
//! the records within the segment (a file's line or element number; `4·(cv − min) + k`
//! in an Ed-Fi window). Hence:
//!
//! - across segments and across sources, what was observed later wins (an API update
//!   after an XML bulk load, an XML file after API changes, a file dropped after a
//!   checkpoint reset);
//! - within a segment, the source's own order holds.
//!
//! 2^20 ticks per millisecond leave 43 bits of milliseconds: versions stay positive
//! until the year 2248. A segment with more than 2^20 records (a 10-million-row file,
//! an initial load of an ODS at change version 10^8) runs its versions a few
//! milliseconds to seconds ahead of the clock; the next segment of the same connector
//! starts after it (the floor kept in the checkpoint), and a segment of another
//! connector started that soon after is ordered by its clock alone — documented in
//! docs/rollup-rules.md. Versions of the previous schemes (`4·cv + k`, `seq << 32 |
//! line`) are all far below 2^60, so records published after an upgrade outrank them.

/// Version ticks per millisecond of observation time.
pub const VERSION_TICKS_PER_MS: i64 = 1 << 20;

/// The lowest version of a segment that starts at `observed_ms` (milliseconds since the
/// Unix epoch): also what a freshness probe can wait for ("anything observed at or
/// after `observed_ms` has at least this version").
pub fn version_floor(observed_ms: i64) -> i64 {
    observed_ms.max(0).saturating_mul(VERSION_TICKS_PER_MS)
}

/// The base of a new segment starting at `observed_ms`, after the connector's previous
/// segment ended below `after` (the first version it did not use; `None` for the first
/// segment). Never below `after`, so versions of one connector only grow even when the
/// clock steps back. Store it in the checkpoint with the segment.
pub fn segment_base(observed_ms: i64, after: Option<i64>) -> i64 {
    version_floor(observed_ms).max(after.unwrap_or(i64::MIN))
}

/// The source version of the record at `ordinal` within the segment starting at `base`
/// (the one function every connector versions its records with).
pub fn source_version(base: i64, ordinal: u64) -> i64 {
    base.saturating_add(i64::try_from(ordinal).unwrap_or(i64::MAX))
}

/// [`segment_base`] for a segment starting now.
pub fn segment_base_now(after: Option<i64>) -> i64 {
    segment_base(crate::observed_now_ms(), after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_segments_outrank_earlier_ones_whatever_their_ordinals() {
        let a = segment_base(1_700_000_000_000, None);
        // 10 million rows in the first segment, one ms later the second begins: the
        // floor keeps the second above the first's last version.
        let last_a = source_version(a, 10_000_000);
        let b = segment_base(1_700_000_000_001, Some(last_a + 1));
        assert!(source_version(b, 0) > last_a);
        // A clock that stepped back does not reorder a connector's own segments.
        let c = segment_base(1_600_000_000_000, Some(source_version(b, 5) + 1));
        assert!(source_version(c, 0) > source_version(b, 5));
        // And another source's segment observed a ms later outranks an ordinary one.
        let d = segment_base(1_700_000_000_000 + 5, None);
        assert!(source_version(d, 0) > source_version(a, 100_000));
    }

    #[test]
    fn versions_stay_positive_and_above_the_previous_schemes() {
        let now = version_floor(1_760_000_000_000);
        assert!(now > 0);
        assert!(
            now > (1_000_000i64 << 32),
            "above seq << 32 for a million files"
        );
        assert!(
            now > 4 * 1_000_000_000_000,
            "above 4·cv for a trillion changes"
        );
        // 2248-01-01 still fits
        assert!(version_floor(8_765_000_000_000) > 0);
        assert_eq!(source_version(i64::MAX - 1, 5), i64::MAX, "saturates");
        assert_eq!(version_floor(-5), 0);
    }
}
