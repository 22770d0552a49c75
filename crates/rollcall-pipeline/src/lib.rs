//! The whole pipeline in one process, driven by the SIS simulator: the simulator serves
//! its Ed-Fi districts over HTTP and drops its CSV districts' exports in inboxes; the
//! real connectors, normalizer and rollup run against the real Kafka and ClickHouse.
//! Used by `rollcall demo`, `rollcall bench` and the end-to-end tests. It owns only the
//! orchestration: every piece it runs is the production code.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::NaiveDate;
use rollcall_config::{Config, Secrets};
use rollcall_connector_kit::{run, RunOptions, SisConnector};
use rollcall_kafka::Topics;
use rollcall_sis_simulator::edfi::{EdfiServer, ServerOptions, SimHandle};
use rollcall_sis_simulator::{csv_export, Feed, World};
use tokio_util::sync::CancellationToken;

const EDFI_SECRET_ENV: &str = "ROLLCALL_PIPELINE_EDFI_SECRET";
/// Poll interval of connectors built for stepping (they stop once caught up instead).
const STEP_POLL: Duration = Duration::from_secs(1);

/// How to replay the simulated year.
#[derive(Debug, Clone)]
pub struct Options {
    /// Replay simulated days up to and including this one (metrics as of it).
    pub through: NaiveDate,
    /// Simulated days per step (connectors run once per step).
    pub step_days: u32,
    /// CSV districts drop a year-to-date export every this many days (and on the last
    /// day); `None`: only on the last day.
    pub csv_every_days: Option<u32>,
    /// Inboxes of the CSV districts live under this directory.
    pub work_dir: PathBuf,
}

/// What one step did, for progress displays.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    pub day: NaiveDate,
    pub raw_records: u64,
    pub elapsed: Duration,
}

/// What one connector did in a step.
#[derive(Debug, Clone)]
pub struct ConnectorReport {
    pub id: String,
    pub records: u64,
    pub dead_letters: u64,
    pub elapsed: Duration,
}

/// The sources side alone: the simulator (its Ed-Fi server and CSV drops) and the real
/// connectors, publishing to Kafka. [`Pipeline`] adds the normalizer and the rollup in
/// this process; `rollcall bench pipeline` runs those as separate processes instead.
pub struct Sources {
    cfg: Config,
    secrets: Secrets,
    world: Arc<World>,
    sim: Option<SimHandle>,
    edfi_url: Option<String>,
    stop: CancellationToken,
    connectors: Vec<Box<dyn SisConnector>>,
    opts: Options,
    pub raw_records: u64,
    pub dead_letters_at_source: u64,
    /// What each connector did in the last step.
    pub last_step: Vec<ConnectorReport>,
    live: Option<LiveRuns>,
}

/// Connectors running as they do in production: polling their source until stopped.
struct LiveRuns {
    stop: CancellationToken,
    started: Instant,
    runs: tokio::task::JoinSet<anyhow::Result<(usize, ConnectorReport)>>,
}

/// The running pipeline.
pub struct Pipeline {
    sources: Sources,
    as_of: Arc<Mutex<NaiveDate>>,
    stop: CancellationToken,
    normalizer: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    rollup: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub raw_records: u64,
    pub dead_letters_at_source: u64,
}

impl Sources {
    /// Create topics, migrate ClickHouse and start the simulator's Ed-Fi server (at the
    /// world's first day). Connectors run in [`Sources::step`].
    pub async fn start(
        cfg: Config,
        secrets: Secrets,
        world: Arc<World>,
        opts: Options,
    ) -> anyhow::Result<Sources> {
        let client = rollcall_kafka::client_config(&cfg.kafka, &secrets);
        let specs = Topics::new(&cfg.kafka.topic_prefix)
            .specs(cfg.kafka.partitions, cfg.kafka.replication_factor);
        rollcall_kafka::ensure_topics(&client, &specs)
            .await
            .context("creating topics")?;
        let server = rollcall_clickhouse::connect_server(&cfg.clickhouse, &secrets);
        // The views are built with this run's policy (rebuilt if the database has
        // views of another one), so the rollup's start-up check passes.
        rollcall_clickhouse::migrate_with_policy(
            &server,
            &cfg.clickhouse.database,
            &rollcall_clickhouse::embedded_migrations(),
            &cfg.policy,
            rollcall_clickhouse::OnPolicyChange::Rebuild,
        )
        .await
        .context("migrating ClickHouse")?;

        let stop = CancellationToken::new();
        let first = world.first_day;
        let has_edfi = world.districts.iter().any(|d| d.spec.feed == Feed::Edfi);
        let (sim, edfi_url) = if !has_edfi {
            (None, None)
        } else {
            let server = EdfiServer::new(
                world.clone(),
                ServerOptions {
                    start_day: Some(first),
                    max_page_size: 500,
                    ..ServerOptions::default()
                },
            );
            let handle = server.handle();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", listener.local_addr()?);
            let s = stop.clone();
            tokio::spawn(async move {
                server
                    .serve_with_shutdown(listener, async move { s.cancelled().await })
                    .await
            });
            (Some(handle), Some(url))
        };
        let mut s = Sources {
            cfg,
            secrets,
            world,
            sim,
            edfi_url,
            stop,
            connectors: Vec::new(),
            opts,
            raw_records: 0,
            dead_letters_at_source: 0,
            last_step: Vec::new(),
            live: None,
        };
        s.connectors = s.build_connectors(STEP_POLL)?;
        Ok(s)
    }

    fn inbox(&self, district: &str) -> PathBuf {
        self.opts.work_dir.join("inbox").join(district)
    }

    /// The connectors, polling every `poll_interval` once caught up when they run live.
    fn build_connectors(
        &self,
        poll_interval: Duration,
    ) -> anyhow::Result<Vec<Box<dyn SisConnector>>> {
        let mut out: Vec<Box<dyn SisConnector>> = Vec::new();
        let mut edfi_done = false;
        for d in &self.world.districts {
            match d.spec.feed {
                Feed::Edfi if edfi_done => {}
                Feed::Edfi => {
                    // One Ed-Fi host per district would be configured the same way; here
                    // one simulated ODS serves them all and school ids say the district.
                    let school_districts: serde_json::Map<String, serde_json::Value> = self
                        .world
                        .schools
                        .iter()
                        .map(|s| {
                            let district = &self.world.districts[s.district as usize].spec.id;
                            (
                                s.school_id.to_string(),
                                serde_json::Value::String(district.clone()),
                            )
                        })
                        .collect();
                    let cfg: rollcall_connector_edfi::EdfiConfig =
                        serde_json::from_value(serde_json::json!({
                            "base_url": self.edfi_url.clone().expect("an Ed-Fi server"),
                            "district_id": d.spec.id,
                            "school_districts": school_districts,
                            "client_id": "rollcall",
                            "client_secret_env": EDFI_SECRET_ENV,
                            "page_size": 500,
                            "requests_per_second": 1000,
                            "poll_interval_secs": poll_interval.as_secs_f64(),
                        }))?;
                    out.push(Box::new(rollcall_connector_edfi::EdfiConnector::new(
                        &format!("sim-{}", d.spec.id),
                        cfg,
                        "rollcall-secret".into(),
                    )?));
                    // The simulated ODS holds every Ed-Fi district: one connector reads it all.
                    edfi_done = true;
                }
                Feed::Csv(preset) => {
                    let cfg: rollcall_connector_csv::CsvConfig =
                        serde_json::from_value(serde_json::json!({
                            "district_id": d.spec.id,
                            "inbox": self.inbox(&d.spec.id),
                            "preset": preset.as_str(),
                            "poll_interval_secs": poll_interval.as_secs_f64(),
                            // the simulator's exports are year-to-date snapshots
                            "snapshots": true,
                            // written whole and renamed into place: take them at once
                            "settle_secs": 0,
                        }))?;
                    out.push(Box::new(rollcall_connector_csv::CsvConnector::new(
                        &format!("sim-{}", d.spec.id),
                        cfg,
                    )?));
                }
            }
        }
        Ok(out)
    }

    /// Advance the simulated clock to `day`, drop CSV exports that are due, and run
    /// every connector (concurrently) until it is caught up.
    pub async fn step(&mut self, day: NaiveDate) -> anyhow::Result<StepReport> {
        let last = day >= self.opts.through;
        let since_start = (day - self.world.first_day).num_days();
        let csv_due = last
            || self
                .opts
                .csv_every_days
                .is_some_and(|n| n > 0 && since_start % i64::from(n) == 0);
        self.step_with(day, csv_due).await
    }

    /// [`Sources::step`] with the CSV drop decided by the caller.
    pub async fn step_with(
        &mut self,
        day: NaiveDate,
        drop_csv: bool,
    ) -> anyhow::Result<StepReport> {
        anyhow::ensure!(
            self.live.is_none(),
            "the connectors are running live; stop them before stepping"
        );
        let started = Instant::now();
        if let Some(sim) = &self.sim {
            sim.set_day(day);
        }
        if drop_csv {
            self.drop_csv_exports(day)?;
        }
        let runs = self.spawn_runs(true, self.stop.child_token());
        let raw = self.collect(runs).await?;
        Ok(StepReport {
            day,
            raw_records: raw,
            elapsed: started.elapsed(),
        })
    }

    /// Every CSV district drops its year-to-date export as of `day` in its inbox.
    pub fn drop_csv_exports(&self, day: NaiveDate) -> anyhow::Result<()> {
        for d in &self.world.districts {
            if let Feed::Csv(_) = d.spec.feed {
                csv_export::write_drop(
                    &self.world,
                    &d.spec.id,
                    None,
                    day,
                    &self.inbox(&d.spec.id),
                )?;
            }
        }
        Ok(())
    }

    /// Run every connector (concurrently) in `stop_when_caught_up` mode or live.
    fn spawn_runs(
        &mut self,
        stop_when_caught_up: bool,
        stop: CancellationToken,
    ) -> tokio::task::JoinSet<anyhow::Result<(usize, ConnectorReport)>> {
        let connectors = std::mem::take(&mut self.connectors);
        let mut runs = tokio::task::JoinSet::new();
        for (i, c) in connectors.into_iter().enumerate() {
            let opts = RunOptions {
                http: None,
                stop_when_caught_up,
                show_progress: false,
            };
            let (cfg, secrets, stop) = (self.cfg.clone(), self.secrets.clone(), stop.clone());
            runs.spawn(async move {
                let id = c.id().to_string();
                let t = Instant::now();
                // `run` consumes the connector; it is rebuilt from its checkpoint next time.
                let summary = run(c, &cfg, &secrets, opts, stop).await?;
                anyhow::Ok((
                    i,
                    ConnectorReport {
                        id,
                        records: summary.records,
                        dead_letters: summary.dead_letters,
                        elapsed: t.elapsed(),
                    },
                ))
            });
        }
        runs
    }

    /// Wait for the runs, record what they did and rebuild the connectors.
    async fn collect(
        &mut self,
        mut runs: tokio::task::JoinSet<anyhow::Result<(usize, ConnectorReport)>>,
    ) -> anyhow::Result<u64> {
        let mut reports = Vec::new();
        let mut failed = None;
        while let Some(r) = runs.join_next().await {
            match r.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok(r) => reports.push(r),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        self.connectors = self.build_connectors(STEP_POLL)?;
        if let Some(e) = failed {
            return Err(e);
        }
        reports.sort_by_key(|(i, _)| *i);
        let reports: Vec<ConnectorReport> = reports.into_iter().map(|(_, r)| r).collect();
        let raw: u64 = reports.iter().map(|r| r.records).sum();
        self.dead_letters_at_source += reports.iter().map(|r| r.dead_letters).sum::<u64>();
        self.last_step = reports;
        self.raw_records += raw;
        Ok(raw)
    }

    /// Start every connector the way production runs it: polling its source every
    /// `poll_interval` once caught up, with one transactional producer for its whole
    /// life, until [`Sources::stop_live`]. Move the simulated SIS with [`Sources::sim`].
    pub fn start_live(&mut self, poll_interval: Duration) -> anyhow::Result<()> {
        anyhow::ensure!(self.live.is_none(), "the connectors are already live");
        anyhow::ensure!(
            !poll_interval.is_zero(),
            "a live poll interval must be positive"
        );
        self.connectors = self.build_connectors(poll_interval)?;
        let stop = self.stop.child_token();
        let runs = self.spawn_runs(false, stop.clone());
        self.live = Some(LiveRuns {
            stop,
            started: Instant::now(),
            runs,
        });
        Ok(())
    }

    /// Stop the live connectors (each finishes the batch it is publishing) and return
    /// the raw records they published and how long they ran.
    pub async fn stop_live(&mut self) -> anyhow::Result<StepReport> {
        let live = self.live.take().context("the connectors are not live")?;
        live.stop.cancel();
        let raw = self.collect(live.runs).await?;
        Ok(StepReport {
            day: self.sim.as_ref().map_or(self.opts.through, |s| s.day()),
            raw_records: raw,
            elapsed: live.started.elapsed(),
        })
    }

    /// The simulated Ed-Fi host's clock and reveal limit (`None`: no Ed-Fi district).
    pub fn sim(&self) -> Option<&SimHandle> {
        self.sim.as_ref()
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    /// Stop the simulator's server.
    pub fn stop(self) {
        self.stop.cancel();
    }
}

impl Pipeline {
    /// Create topics, migrate ClickHouse, start the simulator's Ed-Fi server and the
    /// normalizer and rollup. Connectors run in [`Pipeline::step`].
    pub async fn start(
        cfg: Config,
        secrets: Secrets,
        world: Arc<World>,
        opts: Options,
    ) -> anyhow::Result<Pipeline> {
        let first = world.first_day;
        let sources = Sources::start(cfg.clone(), secrets.clone(), world, opts).await?;
        let stop = CancellationToken::new();
        // The normalizer: the production worker on its own thread.
        let normalizer = rollcall_normalizer::build_normalizer(&cfg)?;
        let (c, s, st) = (cfg.clone(), secrets.clone(), stop.clone());
        let normalizer = std::thread::Builder::new()
            .name("normalizer".into())
            .spawn(move || {
                let mut w = rollcall_normalizer::Worker::connect(&c, &s, normalizer)?;
                w.run(&rollcall_telemetry::Health::new(), &st)
            })?;
        // The rollup, following the simulated clock.
        let as_of = Arc::new(Mutex::new(first));
        let rollup = tokio::spawn(rollcall_rollup::run_with_as_of(
            cfg,
            secrets,
            stop.clone(),
            rollcall_rollup::AsOf::Shared(as_of.clone()),
        ));
        Ok(Pipeline {
            sources,
            as_of,
            stop,
            normalizer: Some(normalizer),
            rollup: Some(rollup),
            raw_records: 0,
            dead_letters_at_source: 0,
        })
    }

    /// Advance the simulated clock to `day`, drop CSV exports that are due, run every
    /// connector until it is caught up, and move the rollup's as-of date to `day`.
    pub async fn step(&mut self, day: NaiveDate) -> anyhow::Result<StepReport> {
        self.check_services().await?;
        let r = tokio::time::timeout(STALL_TIMEOUT, self.sources.step(day))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the connectors did not finish the step to {day} within {STALL_TIMEOUT:?}; \
                     check the SIS and Kafka"
                )
            })??;
        self.raw_records = self.sources.raw_records;
        self.dead_letters_at_source = self.sources.dead_letters_at_source;
        *self.as_of.lock().unwrap_or_else(|p| p.into_inner()) = day;
        Ok(r)
    }

    /// Replay every step from the first simulated day through `opts.through`.
    pub async fn replay(&mut self, mut on_step: impl FnMut(&StepReport)) -> anyhow::Result<()> {
        let mut day = self.sources.world.first_day;
        let through = self.sources.opts.through;
        let step_days = self.sources.opts.step_days;
        loop {
            let r = self.step(day.min(through)).await?;
            on_step(&r);
            if day >= through {
                break;
            }
            day += chrono::Duration::days(i64::from(step_days.max(1)));
        }
        Ok(())
    }

    /// Wait until the normalizer and the rollup have committed everything published so
    /// far (their consumer groups' offsets reach the ends of their input topics).
    ///
    /// Fails with a message, instead of waiting out `timeout`, as soon as the normalizer
    /// or the rollup has stopped, or the records behind have not gone down for
    /// [`STALL_TIMEOUT`].
    pub async fn wait_caught_up(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut watch = StallWatch::new(STALL_TIMEOUT);
        loop {
            self.check_services().await?;
            let lag = pipeline_lag(&self.sources.cfg, &self.sources.secrets).await?;
            if lag == 0 {
                // One more rollup batch interval so an as-of change is written too.
                let wait = self.sources.cfg.rollup.batch_max_wait_ms * 3;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                anyhow::bail!(
                    "the pipeline did not catch up within {timeout:?} ({lag} records behind)"
                );
            }
            watch.observe(lag)?;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// An error if the normalizer or the rollup has stopped (with its own error).
    pub async fn check_services(&mut self) -> anyhow::Result<()> {
        if self.normalizer.as_ref().is_some_and(|n| n.is_finished()) {
            let n = self.normalizer.take().context("no normalizer")?;
            let result = tokio::task::spawn_blocking(move || n.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the normalizer thread panicked"))?;
            result.context("the normalizer stopped")?;
            anyhow::bail!("the normalizer stopped before the pipeline did");
        }
        if self.rollup.as_ref().is_some_and(|r| r.is_finished()) {
            let r = self.rollup.take().context("no rollup")?;
            r.await?.context("the rollup stopped")?;
            anyhow::bail!("the rollup stopped before the pipeline did");
        }
        Ok(())
    }

    pub fn config(&self) -> &Config {
        &self.sources.cfg
    }

    pub fn world(&self) -> &World {
        &self.sources.world
    }

    /// Stop the normalizer and the rollup (each finishes its batch and commits).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.sources.stop.cancel();
        if let Some(n) = self.normalizer.take() {
            tokio::task::spawn_blocking(move || n.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the normalizer thread panicked"))??;
        }
        if let Some(r) = self.rollup.take() {
            r.await??;
        }
        Ok(())
    }
}

/// Records the normalizer (on the raw topics) and the rollup (on the normalized topics)
/// have not committed yet. Bounded: a reading that does not answer within
/// [`LAG_READ_TIMEOUT`] is an error, never a hang.
pub async fn pipeline_lag(cfg: &Config, secrets: &Secrets) -> anyhow::Result<i64> {
    let (c, s) = (cfg.clone(), secrets.clone());
    let t = Topics::new(&cfg.kafka.topic_prefix);
    let read = tokio::task::spawn_blocking(move || -> anyhow::Result<i64> {
        let client = rollcall_kafka::client_config(&c.kafka, &s);
        let raw: Vec<String> = rollcall_kafka::ENTITIES.iter().map(|e| t.raw(e)).collect();
        let normalized: Vec<String> = rollcall_kafka::ENTITIES
            .iter()
            .map(|e| t.normalized(e))
            .collect();
        Ok(
            rollcall_kafka::group_lag(&client, &c.normalizer.group_id, &raw)?
                + rollcall_kafka::group_lag(&client, &c.rollup.group_id, &normalized)?,
        )
    });
    tokio::time::timeout(LAG_READ_TIMEOUT, read)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "reading the consumer groups' committed offsets from {} did not answer within {LAG_READ_TIMEOUT:?}",
                cfg.kafka.brokers
            )
        })??
}

/// How long the pipeline may make no progress (a step that does not finish, records
/// behind that do not go down) before the demo, the benches and the tests give up with
/// a message instead of hanging.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The bound on one reading of the consumer groups' lag.
pub const LAG_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Watches a figure that should go down (records behind): [`StallWatch::observe`]
/// fails once it has not reached a new low for the stall interval.
#[derive(Debug)]
pub struct StallWatch {
    stall: Duration,
    best: Option<i64>,
    since: Instant,
}

impl StallWatch {
    pub fn new(stall: Duration) -> Self {
        StallWatch {
            stall,
            best: None,
            since: Instant::now(),
        }
    }

    /// Record the current figure; an error if it has not gone down for the interval.
    pub fn observe(&mut self, behind: i64) -> anyhow::Result<()> {
        self.observe_at(behind, Instant::now())
    }

    fn observe_at(&mut self, behind: i64, now: Instant) -> anyhow::Result<()> {
        if self.best.is_none_or(|b| behind < b) {
            self.best = Some(behind);
            self.since = now;
            return Ok(());
        }
        let still = now.saturating_duration_since(self.since);
        anyhow::ensure!(
            still <= self.stall,
            "the pipeline made no progress for {still:.0?}: still {behind} records behind; \
             see the normalizer's and the rollup's logs (and /readyz) for the reason"
        );
        Ok(())
    }
}

/// The configuration the pipeline needs on top of `cfg`: the simulated Ed-Fi secret in
/// the environment, the code maps shipped for the simulator's districts, and the
/// positive-attendance districts in the policy.
pub fn prepare_config(mut cfg: Config, world: &World, repo_root: &Path) -> Config {
    // SAFETY of intent: the connector reads secrets from the environment by design.
    std::env::set_var(EDFI_SECRET_ENV, "rollcall-secret");
    let maps = repo_root.join("deploy/codemaps");
    if cfg.normalizer.code_maps_dir.is_none() && maps.is_dir() {
        cfg.normalizer.code_maps_dir = Some(maps);
    }
    for d in &world.districts {
        if d.spec.positive_attendance
            && !cfg
                .policy
                .positive_attendance_districts
                .contains(&d.spec.id)
        {
            cfg.policy
                .positive_attendance_districts
                .push(d.spec.id.clone());
        }
    }
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_watch_fails_only_when_nothing_went_down_for_the_interval() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(Duration::from_secs(10));
        w.observe_at(100, t0).unwrap();
        w.observe_at(100, t0 + Duration::from_secs(9)).unwrap();
        // A new low restarts the interval.
        w.observe_at(99, t0 + Duration::from_secs(9)).unwrap();
        w.observe_at(120, t0 + Duration::from_secs(18)).unwrap();
        let err = w.observe_at(99, t0 + Duration::from_secs(20)).unwrap_err();
        assert!(err.to_string().contains("no progress"), "{err}");
        assert!(err.to_string().contains("99 records behind"), "{err}");
    }
}
