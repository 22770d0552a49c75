//! What the normalizer reports: one tally per batch, emitted (logs + counters together)
//! only after the batch's transaction committed, so counters never count a record twice.

use std::collections::HashMap;
use std::time::Duration;

use rollcall_normalize::Rejection;

const UNKNOWN: &str = "unknown";

/// Counts of one batch, by district.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchTally {
    /// district → records in
    pub records_in: HashMap<String, u64>,
    /// (district, entity) → canonical events out
    pub events_out: HashMap<(String, String), u64>,
    /// (district, kind) → dead letters
    pub dead_letters: HashMap<(String, String), u64>,
    /// Records that give no event and are no error: sessions of a district whose
    /// calendar is not derived.
    pub ignored: u64,
    /// district → enrollments published with an exit/withdraw code no code map knows
    /// (kept as sent; it voids nothing until the district's map names it).
    pub unmapped_exit_types: HashMap<String, u64>,
}

impl BatchTally {
    pub fn record_in(&mut self, district: Option<&str>) {
        *self
            .records_in
            .entry(district.unwrap_or(UNKNOWN).to_string())
            .or_default() += 1;
    }

    pub fn record_unmapped_exit_type(&mut self, district: &str) {
        *self
            .unmapped_exit_types
            .entry(district.to_string())
            .or_default() += 1;
    }

    pub fn record_ignored(&mut self) {
        self.ignored += 1;
    }

    pub fn record_out(&mut self, district: &str, entity: &str) {
        *self
            .events_out
            .entry((district.to_string(), entity.to_string()))
            .or_default() += 1;
    }

    pub fn record_dead_letter(&mut self, r: &Rejection) {
        tracing::debug!(source_key = ?r.source_key, "record dead-lettered");
        self.record_dead_letter_kind(r.district_id.as_deref(), r.kind.as_str(), &r.reason);
    }

    /// A dead letter of `kind` (also those that are no `Rejection`: output refused).
    pub fn record_dead_letter_kind(&mut self, district: Option<&str>, kind: &str, reason: &str) {
        let district = district.unwrap_or(UNKNOWN).to_string();
        tracing::debug!(district = %district, kind, reason, "record dead-lettered");
        *self
            .dead_letters
            .entry((district, kind.to_string()))
            .or_default() += 1;
    }

    pub fn total_in(&self) -> u64 {
        self.records_in.values().sum()
    }
    pub fn total_out(&self) -> u64 {
        self.events_out.values().sum()
    }
    pub fn total_dead_letters(&self) -> u64 {
        self.dead_letters.values().sum()
    }

    /// Bump the counters and log the batch. Call once the batch is committed.
    pub fn emit(&self, took: Duration) {
        for (d, n) in &self.records_in {
            metrics::counter!("rollcall_normalizer_records_in_total", "district" => d.clone())
                .increment(*n);
        }
        for ((d, e), n) in &self.events_out {
            metrics::counter!("rollcall_normalizer_events_out_total",
                "district" => d.clone(), "entity" => e.clone())
            .increment(*n);
        }
        for ((d, k), n) in &self.dead_letters {
            metrics::counter!("rollcall_normalizer_dead_letters_total",
                "district" => d.clone(), "kind" => k.clone())
            .increment(*n);
        }
        for (d, n) in &self.unmapped_exit_types {
            metrics::counter!("rollcall_normalizer_unmapped_exit_types_total", "district" => d.clone())
                .increment(*n);
        }
        if self.ignored > 0 {
            metrics::counter!("rollcall_normalizer_records_ignored_total").increment(self.ignored);
        }
        metrics::counter!("rollcall_normalizer_batches_total").increment(1);
        metrics::histogram!("rollcall_normalizer_batch_seconds").record(took.as_secs_f64());
        tracing::info!(
            records_in = self.total_in(),
            events_out = self.total_out(),
            dead_letters = self.total_dead_letters(),
            ms = took.as_millis() as u64,
            "batch committed"
        );
    }
}
