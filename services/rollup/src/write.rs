//! Writing the engine's row changes to ClickHouse: versions, tombstones, retries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rollcall_clickhouse::rows::{
    ch_date, DayStatus as ChStatus, StudentDayRow, StudentMetricsRow, TierValue, STUDENT_DAYS,
    STUDENT_METRICS,
};
use rollcall_clickhouse::Client;
use rollcall_student_state::{DayRow, DayStatus, MetricsRow, StudentChange, Tier};
use rollcall_telemetry::Health;
use tokio_util::sync::CancellationToken;

/// Row versions: microseconds since the epoch, strictly increasing within the process,
/// so a later write of a key always wins in ReplacingMergeTree.
#[derive(Debug, Default)]
pub struct VersionClock {
    last: u64,
}

impl VersionClock {
    pub fn next_version(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.last = now.max(self.last + 1);
        self.last
    }
}

fn status(s: DayStatus) -> ChStatus {
    match s {
        DayStatus::Present => ChStatus::Present,
        DayStatus::Tardy => ChStatus::Tardy,
        DayStatus::EarlyDeparture => ChStatus::EarlyDeparture,
        DayStatus::ExcusedAbsence => ChStatus::ExcusedAbsence,
        DayStatus::UnexcusedAbsence => ChStatus::UnexcusedAbsence,
        DayStatus::OutOfSchoolSuspension => ChStatus::OutOfSchoolSuspension,
        DayStatus::InSchoolSuspension => ChStatus::InSchoolSuspension,
        DayStatus::NotEnrolled => ChStatus::NotEnrolled,
        DayStatus::NoEvent => ChStatus::NoEvent,
        DayStatus::Missing => ChStatus::Missing,
    }
}

fn tier(t: Tier) -> TierValue {
    match t {
        Tier::Satisfactory => TierValue::Satisfactory,
        Tier::AtRisk => TierValue::AtRisk,
        Tier::ModerateChronic => TierValue::ModerateChronic,
        Tier::SevereChronic => TierValue::SevereChronic,
    }
}

pub fn to_day_row(r: &DayRow, version: u64) -> StudentDayRow {
    StudentDayRow {
        school_year: r.school_year,
        district_id: r.district_id.to_string(),
        school_id: r.school_id.to_string(),
        student_id: r.student_id.to_string(),
        date: ch_date(r.date),
        status: status(r.status),
        enrolled: r.enrolled,
        absent_milli: r.absent_milli,
        excused_milli: r.excused_milli,
        unexcused_milli: r.unexcused_milli,
        suspended_milli: r.suspended_milli,
        tardy: r.tardy,
        source_version: r.source_version,
        version,
        deleted: r.deleted,
    }
}

pub fn to_metrics_row(r: &MetricsRow, version: u64) -> StudentMetricsRow {
    StudentMetricsRow {
        school_year: r.school_year,
        district_id: r.district_id.to_string(),
        school_id: r.school_id.to_string(),
        student_id: r.student_id.to_string(),
        state_student_id: r.state_student_id.to_string(),
        grade_level: r.grade_level.to_string(),
        subgroups: r.subgroups.to_vec(),
        as_of_date: ch_date(r.as_of_date),
        days_enrolled: r.days_enrolled,
        absent_milli: r.absent_milli,
        excused_milli: r.excused_milli,
        unexcused_milli: r.unexcused_milli,
        suspended_milli: r.suspended_milli,
        days_tardy: r.days_tardy,
        unexcused_window_milli: r.unexcused_window_milli,
        absent_last_30_milli: r.absent_last_30_milli,
        meets_min_enrollment: r.meets_min_enrollment,
        is_chronically_absent: r.is_chronically_absent,
        tier: tier(r.tier),
        is_truant: r.is_truant,
        events_non_instructional: r.events_non_instructional,
        events_outside_enrollment: r.events_outside_enrollment,
        days_missing: r.days_missing,
        version,
        deleted: r.deleted,
    }
}

/// Day rows from which a write is sent as two concurrent inserts.
const PARALLEL_INSERT_ROWS: usize = 200_000;

/// How long one attempt at a write may take before it counts as failed (and is
/// retried): a hung server must not hang the rollup while it reports ready. A base plus
/// one second per 10,000 rows (a bulk load's year of day rows takes a while).
pub fn attempt_timeout(rows: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(rows as u64 / 10)
}

/// Writes changes in batches, retrying until ClickHouse accepts them.
pub struct RowWriter {
    db: Client,
    clock: VersionClock,
    /// Fixed bound per attempt instead of [`attempt_timeout`] (tests).
    timeout: Option<Duration>,
}

impl RowWriter {
    pub fn new(db: Client) -> Self {
        RowWriter {
            db,
            clock: VersionClock::default(),
            timeout: None,
        }
    }

    /// Bound every attempt by `t` instead of [`attempt_timeout`].
    pub fn with_attempt_timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Write every upsert and tombstone of `changes`. Returns once ClickHouse has
    /// acknowledged them all; retries with backoff meanwhile (readiness off). Every
    /// attempt is bounded ([`attempt_timeout`]): a server that hangs is retried like
    /// one that fails. Rows are versioned upserts, so a retry of a write that did land
    /// changes nothing. Fails only on shutdown, leaving the offsets uncommitted so a
    /// restart writes them again.
    pub async fn write(
        &mut self,
        changes: &[StudentChange],
        shutdown: &CancellationToken,
        health: &Health,
    ) -> anyhow::Result<()> {
        let version = self.clock.next_version();
        // Rows are converted while they are sent, never gathered: a bulk load's batch can
        // hold millions of day rows (a new enrollment fills every school day), and a
        // vector of them cost hundreds of MiB and its regrowth ~15% of the rollup's CPU.
        let day_rows: usize = changes
            .iter()
            .map(|c| c.day_rows_upsert.len() + c.day_rows_delete.len())
            .sum();
        let metrics_rows: usize = changes
            .iter()
            .map(|c| c.metrics_upsert.len() + c.metrics_delete.len())
            .sum();
        let mut wait = Duration::from_millis(200);
        let bound = self
            .timeout
            .unwrap_or_else(|| attempt_timeout(day_rows + metrics_rows));
        loop {
            let attempt = tokio::select! {
                r = tokio::time::timeout(
                    bound,
                    self.insert_all(changes, version, day_rows, metrics_rows),
                ) => r,
                _ = shutdown.cancelled() => anyhow::bail!(
                    "stopped before ClickHouse accepted the batch; it is rewritten on restart"
                ),
            };
            let attempt = match attempt {
                Ok(r) => r.map_err(anyhow::Error::from),
                Err(_) => {
                    metrics::counter!("rollcall_rollup_write_timeouts_total").increment(1);
                    Err(anyhow::anyhow!(
                        "ClickHouse did not answer within {} s",
                        bound.as_secs_f64()
                    ))
                }
            };
            match attempt {
                Ok(()) => {
                    metrics::counter!("rollcall_rollup_rows_written_total", "table" => STUDENT_DAYS)
                        .increment(day_rows as u64);
                    metrics::counter!("rollcall_rollup_rows_written_total", "table" => STUDENT_METRICS)
                        .increment(metrics_rows as u64);
                    health.set_ready(true);
                    return Ok(());
                }
                Err(e) => {
                    health.set_ready(false);
                    metrics::counter!("rollcall_rollup_write_retries_total").increment(1);
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64,
                        day_rows, metrics_rows,
                        "ClickHouse did not accept the batch; retrying (offsets stay uncommitted)");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {},
                        _ = shutdown.cancelled() => anyhow::bail!(
                            "stopped before ClickHouse accepted the batch; it is rewritten on restart"
                        ),
                    }
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn insert_days(
        &self,
        changes: &[StudentChange],
        version: u64,
    ) -> Result<(), rollcall_clickhouse::ClickHouseError> {
        let mut ins = self.db.insert::<StudentDayRow>(STUDENT_DAYS).await?;
        for c in changes {
            for r in c.day_rows_upsert.iter().chain(&c.day_rows_delete) {
                ins.write(&to_day_row(r, version)).await?;
            }
        }
        ins.end().await
    }

    async fn insert_all(
        &self,
        changes: &[StudentChange],
        version: u64,
        day_rows: usize,
        metrics_rows: usize,
    ) -> Result<(), rollcall_clickhouse::ClickHouseError> {
        if day_rows > 0 {
            // A large write goes as two inserts at once (disjoint students, so disjoint
            // keys): ClickHouse parses and sorts each insert on one thread.
            if day_rows >= PARALLEL_INSERT_ROWS && changes.len() >= 2 {
                let (a, b) = changes.split_at(changes.len() / 2);
                tokio::try_join!(self.insert_days(a, version), self.insert_days(b, version))?;
            } else {
                self.insert_days(changes, version).await?;
            }
        }
        if metrics_rows > 0 {
            let mut ins = self.db.insert::<StudentMetricsRow>(STUDENT_METRICS).await?;
            for c in changes {
                for r in c.metrics_upsert.iter().chain(&c.metrics_delete) {
                    ins.write(&to_metrics_row(r, version)).await?;
                }
            }
            ins.end().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strictly_increase() {
        let mut c = VersionClock::default();
        let v: Vec<u64> = (0..1000).map(|_| c.next_version()).collect();
        assert!(v.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn status_codes_match_the_table_enum() {
        for s in DayStatus::ALL {
            assert_eq!(status(s) as i8, s.code(), "{s:?}");
        }
    }
}
