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

/// Writes changes in batches, retrying until ClickHouse accepts them.
pub struct RowWriter {
    db: Client,
    clock: VersionClock,
}

impl RowWriter {
    pub fn new(db: Client) -> Self {
        RowWriter {
            db,
            clock: VersionClock::default(),
        }
    }

    /// Write every upsert and tombstone of `changes`. Returns once ClickHouse has
    /// acknowledged them all; retries with backoff meanwhile (readiness off). Fails only
    /// on shutdown, leaving the offsets uncommitted so a restart writes them again.
    pub async fn write(
        &mut self,
        changes: &[StudentChange],
        shutdown: &CancellationToken,
        health: &Health,
    ) -> anyhow::Result<()> {
        let version = self.clock.next_version();
        let mut days = Vec::new();
        let mut metrics = Vec::new();
        for c in changes {
            days.extend(c.day_rows_upsert.iter().map(|r| to_day_row(r, version)));
            days.extend(c.day_rows_delete.iter().map(|r| to_day_row(r, version)));
            metrics.extend(c.metrics_upsert.iter().map(|r| to_metrics_row(r, version)));
            metrics.extend(c.metrics_delete.iter().map(|r| to_metrics_row(r, version)));
        }
        let mut wait = Duration::from_millis(200);
        loop {
            match self.insert_all(&days, &metrics).await {
                Ok(()) => {
                    metrics::counter!("rollcall_rollup_rows_written_total", "table" => STUDENT_DAYS)
                        .increment(days.len() as u64);
                    metrics::counter!("rollcall_rollup_rows_written_total", "table" => STUDENT_METRICS)
                        .increment(metrics.len() as u64);
                    health.set_ready(true);
                    return Ok(());
                }
                Err(e) => {
                    health.set_ready(false);
                    metrics::counter!("rollcall_rollup_write_retries_total").increment(1);
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64,
                        day_rows = days.len(), metrics_rows = metrics.len(),
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

    async fn insert_all(
        &self,
        days: &[StudentDayRow],
        metrics: &[StudentMetricsRow],
    ) -> Result<(), rollcall_clickhouse::ClickHouseError> {
        if !days.is_empty() {
            let mut ins = self.db.insert::<StudentDayRow>(STUDENT_DAYS).await?;
            for r in days {
                ins.write(r).await?;
            }
            ins.end().await?;
        }
        if !metrics.is_empty() {
            let mut ins = self.db.insert::<StudentMetricsRow>(STUDENT_METRICS).await?;
            for r in metrics {
                ins.write(r).await?;
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
