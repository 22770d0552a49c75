//! `rollcall bench pipeline`: the whole pipeline driven by the SIS simulator, against
//! the real Kafka and ClickHouse.
//!
//! - The simulator (its Ed-Fi server, its CSV drops) and the real connectors run in
//!   this process; the normalizer and the rollup run as child processes of this binary
//!   (`rollcall normalizer`, `rollcall rollup`), so each one's peak memory is its own.
//! - **Bulk phase** (throughput): the simulated clock jumps to `bulk_through`, the CSV
//!   district drops its year-to-date export, every connector publishes all it sees
//!   and the pipeline drains it. Per-stage rates come from the services' own Prometheus
//!   counters, sampled every 200 ms.
//! - **Paced phase** (freshness): then day by day for `--days` simulated days, each
//!   day's Ed-Fi changes offered at `--rate` attendance events per second. For sampled
//!   new attendance records of each day, the latency is from the moment the simulated
//!   SIS shows them (the clock moves, the connector starts reading) to the moment their
//!   `student_days` row in ClickHouse carries a source version of that day's window.
//! - **Baseline**: ClickHouse's Kafka engine + a materialized view on JSON copies of
//!   the same attendance events (see `baseline.rs` for what it does not do).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::NaiveDate;
use clickhouse::Row;
use indicatif::{ProgressBar, ProgressStyle};
use rollcall_config::{Config, Secrets};
use rollcall_pipeline::{
    pipeline_lag, prepare_config, Options, Sources, StallWatch, STALL_TIMEOUT,
};
use rollcall_sis_simulator::{generate, CsvPreset, Fact, Feed, Op, Resource, SimConfig, World};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::baseline;

/// How often a plain progress line is printed when stdout is not a terminal.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);
use super::services::{self, metric_sum, Service};

#[derive(clap::Args, Debug, Clone)]
pub struct PipelineArgs {
    /// Students in the simulated world: half in an Ed-Fi district that reports every
    /// day (positive attendance), half in a PowerSchool district (CSV drop, exceptions
    /// only).
    #[arg(long, default_value_t = 20_000)]
    pub students: u32,
    /// Paced phase: attendance events per second offered to the connectors.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u32,
    /// Paced phase: simulated calendar days, revealed one after another at `--rate`.
    #[arg(long, default_value_t = 21)]
    pub days: u32,
    /// Paced phase: the connectors run live and poll their source this often (ms) once
    /// caught up (production's default is 60 s for Ed-Fi; freshness needs it short).
    #[arg(long, default_value_t = 100)]
    pub poll_ms: u64,
    /// Paced phase: new attendance records probed per simulated day.
    #[arg(long, default_value_t = 25)]
    pub samples_per_day: usize,
    /// Seed of the simulated world.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Skip the ClickHouse Kafka-engine baseline.
    #[arg(long)]
    pub no_baseline: bool,
    /// Keep the bench's ClickHouse database (dropped at the end otherwise).
    #[arg(long)]
    pub keep: bool,
}

fn world_config(args: &PipelineArgs) -> anyhow::Result<SimConfig> {
    let half = (args.students / 2).max(1);
    let per_school = half.min(500);
    let schools = half.div_ceil(per_school);
    // The demo's Grand Bend (Ed-Fi) and Northridge (PowerSchool), resized.
    let demo = SimConfig::demo(args.seed);
    let mut edfi = demo.districts[0].clone();
    edfi.id = "bench-edfi".into();
    edfi.name = "Bench Ed-Fi ISD".into();
    edfi.positive_attendance = true;
    let mut csv = demo.districts[2].clone();
    csv.id = "bench-ps".into();
    csv.name = "Bench PowerSchool USD".into();
    anyhow::ensure!(edfi.feed == Feed::Edfi && csv.feed == Feed::Csv(CsvPreset::PowerSchool));
    for d in [&mut edfi, &mut csv] {
        d.schools = schools;
        d.students_per_school = per_school;
    }
    Ok(SimConfig {
        seed: args.seed,
        malformed_rate: 0.001,
        districts: vec![edfi, csv],
        ..SimConfig::default()
    })
}

/// One reading of the services' counters, `t` seconds after the bulk phase started.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    t: f64,
    normalizer_in: f64,
    rollup_records: f64,
    rollup_attendance: f64,
    rows_written: f64,
}

async fn read_counters(normalizer: &Service, rollup: &Service, t: f64) -> anyhow::Result<Sample> {
    let n = normalizer.metrics().await?;
    let r = rollup.metrics().await?;
    Ok(Sample {
        t,
        normalizer_in: metric_sum(&n, "rollcall_normalizer_records_in_total", &[]),
        rollup_records: metric_sum(&r, "rollcall_rollup_records_total", &[]),
        rollup_attendance: metric_sum(
            &r,
            "rollcall_rollup_records_total",
            &["entity=\"attendance\""],
        ),
        rows_written: metric_sum(&r, "rollcall_rollup_rows_written_total", &[]),
    })
}

/// The window in which a counter moved: from the last sample still at its starting
/// value to the first sample at its final value.
fn active_window(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> Option<(f64, f64, f64)> {
    let first = f(samples.first()?);
    let last = f(samples.last()?);
    if last <= first {
        return None;
    }
    let start = samples
        .iter()
        .take_while(|s| f(s) <= first)
        .last()
        .map(|s| s.t)?;
    let end = samples.iter().find(|s| f(s) >= last).map(|s| s.t)?;
    Some((last - first, start, end))
}

/// A probed record: its `student_days` key and the source version that proves it.
#[derive(Debug, Clone)]
struct Probe {
    school_id: String,
    student_id: String,
    date: String,
    min_source_version: i64,
    offered: Instant,
}

#[derive(Row, Deserialize)]
struct Seen {
    school_id: String,
    student_id: String,
    date: String,
    source_version: i64,
}

/// Poll ClickHouse until every probe is visible; latencies in seconds.
async fn probe_loop(
    db: clickhouse::Client,
    district: String,
    pending: Arc<Mutex<Vec<Probe>>>,
    done: Arc<Mutex<Vec<f64>>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let batch: Vec<Probe> = pending.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if batch.is_empty() && stop.is_cancelled() {
            return Ok(());
        }
        if !batch.is_empty() {
            let tuples: Vec<String> = batch
                .iter()
                .map(|p| format!("('{}','{}','{}')", p.school_id, p.student_id, p.date))
                .collect();
            let q = format!(
                "SELECT school_id, student_id, toString(date) AS date, \
                 max(source_version) AS source_version FROM student_days \
                 WHERE district_id = '{district}' AND (school_id, student_id, date) IN ({}) \
                 GROUP BY school_id, student_id, date",
                tuples.join(",")
            );
            let seen: Vec<Seen> = db.query(&q).fetch_all().await.context("probing")?;
            let now = Instant::now();
            let mut p = pending.lock().unwrap_or_else(|p| p.into_inner());
            let mut d = done.lock().unwrap_or_else(|p| p.into_inner());
            p.retain(|probe| {
                let visible = seen.iter().any(|s| {
                    s.school_id == probe.school_id
                        && s.student_id == probe.student_id
                        && s.date == probe.date
                        && s.source_version >= probe.min_source_version
                });
                if visible {
                    d.push(now.duration_since(probe.offered).as_secs_f64());
                }
                !visible
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.cancelled(), if !batch.is_empty() => {}
        }
        if stop.is_cancelled() {
            // The caller stops waiting; whatever is left counts as not seen.
            return Ok(());
        }
    }
}

/// One simulated day's Ed-Fi attendance changes: their change versions in the order
/// the SIS shows them, the day's change-version bounds, and probes for a spread sample
/// of the new records among them.
struct DayChanges {
    /// Change versions of the day before and of this day's last change.
    from: u64,
    to: u64,
    /// Change version of each Ed-Fi attendance change of the day, ascending.
    events: Vec<u64>,
    /// (school, student, date, change version) of the sampled new records.
    probes: Vec<(String, String, String, u64)>,
}

fn day_changes(world: &World, day: NaiveDate, per_day: usize) -> DayChanges {
    let from = world.newest_cv_through(day.pred_opt().unwrap_or(day));
    let to = world.newest_cv_through(day);
    let mut events = Vec::new();
    let mut fresh = Vec::new();
    for (i, c) in world.log[from as usize..to as usize].iter().enumerate() {
        let rec = &world.records[c.record as usize];
        let district = &world.districts[rec.district as usize];
        if rec.resource != Resource::StudentSchoolAttendanceEvents
            || district.spec.feed != Feed::Edfi
        {
            continue;
        }
        // Log entry i of the day is change version from + i + 1.
        let cv = from + i as u64 + 1;
        events.push(cv);
        if let (Op::Upsert(Fact::Attendance(a)), None, None) = (&c.op, c.prev, rec.malformed) {
            fresh.push((cv, *a));
        }
    }
    let step = (fresh.len() / per_day.max(1)).max(1);
    let probes = fresh
        .iter()
        .step_by(step)
        .take(per_day)
        .map(|(cv, a)| {
            (
                world.schools[a.school as usize].school_id.to_string(),
                world.students[a.student as usize].unique_id.clone(),
                a.date.to_string(),
                *cv,
            )
        })
        .collect();
    DayChanges {
        from,
        to,
        events,
        probes,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn rate(n: f64, secs: f64) -> String {
    if secs > 0.0 {
        format!("{:.0}/s", n / secs)
    } else {
        "-".into()
    }
}

pub async fn run(cfg: Config, secrets: Secrets, args: &PipelineArgs) -> anyhow::Result<()> {
    let root = crate::demo::repo_root();
    let sim = world_config(args)?;
    let t = Instant::now();
    let world = Arc::new(generate(&sim).map_err(|e| anyhow::anyhow!("simulator: {}", e.0))?);
    let s = world.summary();
    println!(
        "world: {} students in 2 districts (Ed-Fi, every day; PowerSchool CSV, exceptions), \
         {} schools, {} attendance events in the year (generated in {:.1?})",
        s.students,
        s.schools,
        s.attendance_events,
        t.elapsed()
    );
    let last_instructional = world
        .districts
        .iter()
        .map(|d| d.last_instructional_day)
        .min()
        .context("no district")?;
    let paced_last = last_instructional - chrono::Duration::days(7);
    let bulk_through = paced_last - chrono::Duration::days(i64::from(args.days));
    anyhow::ensure!(
        bulk_through > world.first_day,
        "--days {} leaves no bulk phase",
        args.days
    );

    let mut cfg = super::fresh(&prepare_config(cfg, &world, &root), "pipeline");
    let run_id = cfg.kafka.topic_prefix.clone();
    let work = root.join(".local/bench").join(&run_id);
    let (normalizer_port, rollup_port) = (services::free_port()?, services::free_port()?);
    cfg.normalizer.http_port = normalizer_port;
    cfg.rollup.http_port = rollup_port;
    cfg.normalizer.http_host = "127.0.0.1".into();
    cfg.rollup.http_host = "127.0.0.1".into();
    cfg.rollup.as_of = Some(paced_last.to_string());
    let mut child_cfg = cfg.clone();
    child_cfg.telemetry.log_level = "warn".into();
    let cfg_file = work.join("rollcall.toml");
    services::write_config(&child_cfg, &cfg_file)?;

    let opts = Options {
        through: paced_last,
        step_days: 1,
        csv_every_days: None,
        work_dir: work.clone(),
    };
    let mut sources = Sources::start(cfg.clone(), secrets.clone(), world.clone(), opts).await?;
    let normalizer =
        services::spawn("normalizer", &cfg_file, normalizer_port, &["normalizer"]).await?;
    let rollup = services::spawn("rollup", &cfg_file, rollup_port, &["rollup"]).await?;
    println!(
        "normalizer (pid {}) and rollup (pid {}) running as child processes; topics {run_id}.*, \
         database {}",
        normalizer.pid().unwrap_or(0),
        rollup.pid().unwrap_or(0),
        cfg.clickhouse.database
    );

    // ---- Bulk phase ----
    println!("bulk phase: every change through {bulk_through}, as fast as it goes ...");
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    // indicatif draws nothing when stdout is not a terminal: print plain lines instead.
    let plain = !std::io::stdout().is_terminal();
    // CPU time of every process on the machine's two cores, for where the time goes.
    let local = services::local_dir(&root);
    let procs: [(&str, Option<u32>); 5] = [
        ("bench (simulator + connectors)", Some(std::process::id())),
        ("normalizer", normalizer.pid()),
        ("rollup", rollup.pid()),
        (
            "Kafka broker",
            services::local_service_pid(&local, "kafka/kafka.pid"),
        ),
        (
            "ClickHouse server",
            services::local_service_pid(&local, "clickhouse/clickhouse.pid"),
        ),
    ];
    let cpu = || -> Vec<f64> {
        procs
            .iter()
            .map(|(_, p)| p.map_or(f64::NAN, services::cpu_seconds))
            .collect()
    };
    let cpu_before = cpu();
    let t0 = Instant::now();
    let base = read_counters(&normalizer, &rollup, 0.0).await?;
    let samples = Arc::new(Mutex::new(vec![base]));
    let sampler_stop = CancellationToken::new();
    let sampler = {
        let (samples, stop, bar) = (samples.clone(), sampler_stop.clone(), bar.clone());
        let (n, r) = (&normalizer, &rollup);
        let mut last_line = Instant::now();
        async move {
            while !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let s = read_counters(n, r, t0.elapsed().as_secs_f64()).await?;
                let msg = format!(
                    "normalizer {:.0} records, rollup {:.0} records, {:.0} rows written",
                    s.normalizer_in - base.normalizer_in,
                    s.rollup_records - base.rollup_records,
                    s.rows_written - base.rows_written
                );
                if plain && last_line.elapsed() >= PLAIN_PROGRESS_EVERY {
                    last_line = Instant::now();
                    println!("bulk phase: {msg} ({:.0?})", t0.elapsed());
                }
                bar.set_message(msg);
                samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
            }
            anyhow::Ok(())
        }
    };
    let drive = async {
        let step = sources.step_with(bulk_through, true).await?;
        let connectors_done = t0.elapsed();
        let mut watch = StallWatch::new(STALL_TIMEOUT);
        loop {
            let behind = pipeline_lag(&cfg, &secrets).await?;
            if behind == 0 {
                break;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(600),
                "the bulk phase did not drain in 10 min"
            );
            watch.observe(behind)?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // One more sample after the drain, then stop sampling.
        tokio::time::sleep(Duration::from_millis(400)).await;
        sampler_stop.cancel();
        anyhow::Ok((step, connectors_done, t0.elapsed()))
    };
    let (sampled, driven) = tokio::join!(sampler, drive);
    let (step, connectors_done, drained) = driven?;
    let cpu_after = cpu();
    sampled?;
    bar.finish_and_clear();
    let samples: Vec<Sample> = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let last = *samples.last().context("no samples")?;
    if std::env::var_os("ROLLCALL_BENCH_TIMELINE").is_some() {
        // The counters as sampled, for looking at how the stages fill and drain.
        for s in &samples {
            println!(
                "  t={:>6.1}s normalizer {:>9.0} rollup {:>9.0} (attendance {:>9.0}) rows {:>9.0}",
                s.t,
                s.normalizer_in - base.normalizer_in,
                s.rollup_records - base.rollup_records,
                s.rollup_attendance - base.rollup_attendance,
                s.rows_written - base.rows_written
            );
        }
    }

    println!("\nbulk phase (throughput), single run");
    println!(
        "  {:<34} {:>11} {:>9} {:>12}",
        "stage", "records", "seconds", "rate"
    );
    for c in &sources.last_step {
        let secs = c.elapsed.as_secs_f64();
        println!(
            "  {:<34} {:>11} {:>9.2} {:>12}",
            format!("connector {} (read + publish)", c.id),
            c.records,
            secs,
            rate(c.records as f64, secs)
        );
    }
    println!(
        "  {:<34} {:>11} {:>9.2} {:>12}",
        "connectors together",
        step.raw_records,
        connectors_done.as_secs_f64(),
        rate(step.raw_records as f64, connectors_done.as_secs_f64())
    );
    type Counter = fn(&Sample) -> f64;
    let stages: [(&str, Counter); 3] = [
        ("normalizer (records in)", |s| s.normalizer_in),
        ("rollup (normalized records)", |s| s.rollup_records),
        ("ClickHouse inserts (rows)", |s| s.rows_written),
    ];
    for (name, f) in stages {
        match active_window(&samples, f) {
            Some((n, a, b)) => println!(
                "  {:<34} {:>11.0} {:>9.2} {:>12}   (active {a:.1}–{b:.1} s)",
                name,
                n,
                b - a,
                rate(n, b - a)
            ),
            None => println!("  {name:<34} {:>11}", 0),
        }
    }
    let attendance = last.rollup_attendance - base.rollup_attendance;
    let e2e_end = samples
        .iter()
        .find(|s| s.rows_written >= last.rows_written && s.rollup_records >= last.rollup_records)
        .map(|s| s.t)
        .unwrap_or(drained.as_secs_f64());
    println!(
        "  {:<34} {:>11.0} {:>9.2} {:>12}   (first connector read → last row acknowledged)",
        "END TO END (attendance events)",
        attendance,
        e2e_end,
        rate(attendance, e2e_end)
    );
    println!(
        "  {:<34} {:>11} {:>9.2} {:>12}",
        "end to end (all raw records)",
        step.raw_records,
        e2e_end,
        rate(step.raw_records as f64, e2e_end)
    );
    let bulk_rate = attendance / e2e_end;
    // Sustained: the rate while every stage runs, without the pipeline filling up (the
    // first batches travelling through each stage, calendars and enrollments first) and
    // draining (the last ones): attendance events applied by the rollup, the last
    // stage, while it goes from 10% to 90% of all the records it reads.
    let records = last.rollup_records - base.rollup_records;
    let reached = |share: f64| {
        samples
            .iter()
            .find(|s| s.rollup_records - base.rollup_records >= share * records)
    };
    let sustained = match (reached(0.1), reached(0.9)) {
        (Some(a), Some(b)) if b.t > a.t => Some((
            a.t,
            b.t,
            (b.rollup_attendance - a.rollup_attendance) / (b.t - a.t),
            b.rollup_attendance - a.rollup_attendance,
        )),
        _ => None,
    };
    if let Some((a, b, r, n)) = sustained {
        println!(
            "  {:<34} {:>11.0} {:>9.2} {:>10.0}/s   (while the rollup read 10% → 90% of its records, {a:.1}–{b:.1} s)",
            "END TO END, sustained",
            n,
            b - a,
            r
        );
    }
    println!(
        "  CPU in the bulk phase ({:.1} s wall, {:.0} attendance events):",
        drained.as_secs_f64(),
        attendance
    );
    let mut cpu_total = 0.0;
    for (((name, pid), a), b) in procs.iter().zip(&cpu_before).zip(&cpu_after) {
        let used = b - a;
        if used.is_finite() {
            cpu_total += used;
        }
        println!(
            "    {name:<32} {used:>7.1} s CPU  {:>6.1} µs/event  (pid {})",
            used * 1e6 / attendance.max(1.0),
            pid.map_or("-".to_string(), |p| p.to_string())
        );
    }
    println!(
        "    {:<32} {cpu_total:>7.1} s CPU  {:>6.1} µs/event  = {:.2} cores busy on average",
        "together",
        cpu_total * 1e6 / attendance.max(1.0),
        cpu_total / drained.as_secs_f64()
    );

    // ---- Paced phase ----
    println!(
        "\npaced phase: {} simulated days after {bulk_through}, Ed-Fi changes offered at {} attendance events/s ...",
        args.days, args.rate
    );
    let db = rollcall_clickhouse::connect(&cfg.clickhouse, &secrets);
    let pending = Arc::new(Mutex::new(Vec::<Probe>::new()));
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let probe_stop = CancellationToken::new();
    let edfi_district = sim.districts[0].id.clone();
    let prober = tokio::spawn(probe_loop(
        db.clone(),
        edfi_district,
        pending.clone(),
        latencies.clone(),
        probe_stop.clone(),
    ));
    let bar = ProgressBar::new(u64::from(args.days));
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] day {pos}/{len} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let sim_handle = sources
        .sim()
        .context("the bench world has no Ed-Fi district")?
        .clone();
    // The connectors run as in production from here on: each keeps its producer and
    // polls its source every --poll-ms once caught up.
    sources.start_live(Duration::from_millis(args.poll_ms.max(1)))?;
    let rate = f64::from(args.rate.max(1));
    let paced_started = Instant::now();
    let mut offered = 0u64;
    let mut day = bulk_through;
    while day < paced_last {
        day = day.succ_opt().context("date overflow")?;
        let changes = day_changes(&world, day, args.samples_per_day);
        if changes.events.is_empty() {
            // A weekend or holiday: nothing to offer (its other changes, if any, show
            // with the next school day's).
            bar.inc(1);
            continue;
        }
        // The day's changes appear gradually, `--rate` attendance events per second
        // over the whole phase: every 10 ms the SIS shows the ones now due.
        sim_handle.set_reveal_limit(Some(changes.from));
        sim_handle.set_day(day);
        let mut unoffered = changes.probes;
        let mut shown = 0usize;
        while shown < changes.events.len() {
            let due = (paced_started.elapsed().as_secs_f64() * rate) as u64;
            let n = (due.saturating_sub(offered) as usize).min(changes.events.len() - shown);
            if n > 0 {
                shown += n;
                offered += n as u64;
                let limit = if shown == changes.events.len() {
                    changes.to
                } else {
                    changes.events[shown - 1]
                };
                let now_ms = rollcall_connector_kit::observed_now_ms();
                sim_handle.set_reveal_limit(Some(limit));
                let now = Instant::now();
                let (now_shown, later): (Vec<_>, Vec<_>) =
                    unoffered.into_iter().partition(|p| p.3 <= limit);
                unoffered = later;
                pending.lock().unwrap_or_else(|p| p.into_inner()).extend(
                    now_shown
                        .into_iter()
                        .map(|(school_id, student_id, date, _cv)| Probe {
                            school_id,
                            student_id,
                            date,
                            // Versions start at the clock when the Ed-Fi connector
                            // opened the window that read the record, after it was
                            // shown: nothing read before carries this version.
                            min_source_version: rollcall_connector_kit::version_floor(now_ms),
                            offered: now,
                        }),
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bar.inc(1);
        bar.set_message(format!("{day}: {} events", changes.events.len()));
        if !std::io::stdout().is_terminal() {
            println!(
                "paced phase: {day}, {} events, {offered} offered so far ({:.0?})",
                changes.events.len(),
                paced_started.elapsed()
            );
        }
    }
    let paced_secs = paced_started.elapsed().as_secs_f64();
    sim_handle.set_reveal_limit(None);
    bar.finish_and_clear();
    // Give the last days' probes time to land (30 s), then stop probing.
    let wait_started = Instant::now();
    while !pending.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
        && wait_started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    probe_stop.cancel();
    prober.await??;
    let live = sources.stop_live().await?;
    let timeouts = pending.lock().unwrap_or_else(|p| p.into_inner()).len();
    let mut lat = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!("\npaced phase (freshness), single run");
    println!(
        "  offered {offered} Ed-Fi attendance events over {paced_secs:.1} s = {:.0} events/s (asked {}); \
         the live connectors (polling every {} ms) published {} raw records",
        offered as f64 / paced_secs,
        args.rate,
        args.poll_ms,
        live.raw_records
    );
    println!(
        "  latency, SIS shows the record → its student_days row in ClickHouse: p50 {:.2} s, p99 {:.2} s, max {:.2} s ({} samples{})",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        lat.len(),
        if timeouts > 0 {
            format!(", {timeouts} not visible within 30 s after the last day")
        } else {
            String::new()
        }
    );

    // ---- Memory ----
    let (normalizer_rss, rollup_rss) = (normalizer.peak_rss_mib(), rollup.peak_rss_mib());
    let bench_rss = services::vm_hwm_mib("/proc/self/status");
    // The live connectors may have published after the last probe landed: give the
    // normalizer up to 30 s to read everything before the check below.
    let mut final_counts = read_counters(&normalizer, &rollup, 0.0).await?;
    let wait_started = Instant::now();
    while ((final_counts.normalizer_in - base.normalizer_in) as u64) < sources.raw_records
        && wait_started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        final_counts = read_counters(&normalizer, &rollup, 0.0).await?;
    }
    normalizer.stop().await?;
    rollup.stop().await?;
    let raw_published = sources.raw_records;
    sources.stop();
    println!("\npeak memory (VmHWM)");
    println!("  normalizer process          {normalizer_rss:>8.0} MiB");
    println!("  rollup process              {rollup_rss:>8.0} MiB");
    println!(
        "  bench process               {bench_rss:>8.0} MiB   (simulator world + its Ed-Fi server + both connectors, in process)"
    );

    // Every raw record reached the normalizer (its counter counts each record once).
    let normalizer_in = (final_counts.normalizer_in - base.normalizer_in) as u64;
    println!(
        "\ncheck: {raw_published} raw records published, {normalizer_in} read by the normalizer{}",
        if normalizer_in == raw_published {
            " (all)"
        } else {
            " — MISMATCH"
        }
    );

    // ---- Baseline ----
    if !args.no_baseline {
        println!("\nbaseline: ClickHouse Kafka engine + materialized view (per-student absence counts) on JSON copies of the same attendance events ...");
        match baseline::run(&cfg, &secrets, &world, paced_last, bulk_through).await {
            Ok(b) => {
                let secs = b.total.as_secs_f64();
                println!(
                    "  {} rows: published in {:.2} s, all in the view's table after {secs:.2} s = {:.0} rows/s",
                    b.rows,
                    b.produce.as_secs_f64(),
                    b.rows as f64 / secs
                );
                println!(
                    "  ratio rollcall end to end / baseline: {:.2} (rollcall bulk {:.0} events/s vs {:.0} rows/s)",
                    bulk_rate / (b.rows as f64 / secs),
                    bulk_rate,
                    b.rows as f64 / secs
                );
            }
            Err(e) => println!("  the baseline failed: {e:#}"),
        }
    }

    if !args.keep {
        let server = rollcall_clickhouse::connect_server(&cfg.clickhouse, &secrets);
        server
            .query(&format!(
                "DROP DATABASE IF EXISTS {}",
                cfg.clickhouse.database
            ))
            .execute()
            .await?;
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
