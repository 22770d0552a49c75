//! `rollcall demo`: the whole job in one command. Starts the local infrastructure if
//! needed, replays a simulated school year (Ed-Fi and CSV districts, ~20,000 students)
//! through the real connectors, normalizer and rollup, shows progress, prints a summary
//! from the BI views and writes the HTML report.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clickhouse::Row;
use indicatif::{ProgressBar, ProgressStyle};
use rollcall_config::{Config, Secrets};
use rollcall_pipeline::{prepare_config, Options, Pipeline};
use rollcall_sis_simulator::{generate, SimConfig};
use serde::Deserialize;

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Seed of the simulated year (same seed, same year).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// `demo` (~20,000 students in 7 districts) or `small` (2 districts, 200 students).
    #[arg(long, default_value = "demo")]
    pub size: String,
    /// Simulated days per step (connectors run once per step).
    #[arg(long, default_value_t = 7)]
    pub step_days: u32,
    /// Where the HTML report goes.
    #[arg(long, default_value = "rollcall-report.html")]
    pub report: PathBuf,
    /// ClickHouse database for the demo (dropped and recreated on each run).
    #[arg(long, default_value = "rollcall_demo")]
    pub database: String,
    /// Do not start the local infrastructure (use what the configuration points at).
    #[arg(long)]
    pub no_infra: bool,
}

/// The repository root (the demo uses its deploy/ scripts and code maps).
pub fn repo_root() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut dir = std::env::current_dir().unwrap_or_else(|_| compiled.clone());
    loop {
        if dir.join("deploy/local/infra.sh").exists() {
            return dir;
        }
        if !dir.pop() {
            return compiled;
        }
    }
}

/// How often the demo prints a progress line when stdout is not a terminal.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Row, Deserialize)]
struct Summary {
    name: String,
    enrolled: Option<u64>,
    chronic: Option<u64>,
    rate: Option<f64>,
    satisfactory: Option<u64>,
    at_risk: Option<u64>,
    moderate: Option<u64>,
    severe: Option<u64>,
}

const COLS: &str =
    "toNullable(toUInt64(students_enrolled)), toNullable(toUInt64(students_chronically_absent)), \
    toNullable(toFloat64(chronic_absence_rate)), toNullable(toUInt64(students_satisfactory)), \
    toNullable(toUInt64(students_at_risk)), toNullable(toUInt64(students_moderate_chronic)), \
    toNullable(toUInt64(students_severe_chronic))";

fn print_rows(title: &str, rows: &[Summary]) {
    println!("\n{title}");
    println!(
        "  {:<28} {:>9} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8}",
        "", "enrolled", "chronic", "rate", "satisf.", "at risk", "moderate", "severe"
    );
    let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "<10".into());
    for r in rows {
        let rate = r
            .rate
            .map(|v| format!("{:.1}%", v * 100.0))
            .unwrap_or_else(|| "supp.".into());
        println!(
            "  {:<28} {:>9} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8}",
            r.name,
            n(r.enrolled),
            n(r.chronic),
            rate,
            n(r.satisfactory),
            n(r.at_risk),
            n(r.moderate),
            n(r.severe)
        );
    }
}

pub async fn run(cfg: Config, secrets: Secrets, args: &DemoArgs) -> anyhow::Result<()> {
    let root = repo_root();
    if !args.no_infra {
        println!("starting the local infrastructure (deploy/local/infra.sh up) ...");
        let ok = std::process::Command::new("bash")
            .arg(root.join("deploy/local/infra.sh"))
            .arg("up")
            .status()
            .context("running deploy/local/infra.sh")?
            .success();
        anyhow::ensure!(ok, "deploy/local/infra.sh up failed; see its output above");
    }
    let sim = match args.size.as_str() {
        "demo" => SimConfig::demo(args.seed),
        "small" => SimConfig::small(args.seed),
        other => anyhow::bail!("--size: `{other}` is not demo or small"),
    };
    let t = Instant::now();
    let world = Arc::new(generate(&sim).map_err(|e| anyhow::anyhow!("simulator: {}", e.0))?);
    let s = world.summary();
    println!(
        "simulated school year {}: {} districts, {} schools, {} students, {} attendance events ({:.1?})",
        sim.school_year, s.districts, s.schools, s.students, s.attendance_events, t.elapsed()
    );

    let mut cfg = prepare_config(cfg, &world, &root);
    let run_id = chrono::Utc::now().format("%Y%m%d%H%M%S");
    cfg.kafka.topic_prefix = format!("rollcall-demo-{run_id}");
    cfg.normalizer.group_id = format!("{}-normalizer", cfg.kafka.topic_prefix);
    cfg.rollup.group_id = format!("{}-rollup", cfg.kafka.topic_prefix);
    cfg.clickhouse.database = args.database.clone();
    let server = rollcall_clickhouse::connect_server(&cfg.clickhouse, &secrets);
    server
        .query(&format!(
            "DROP DATABASE IF EXISTS {}",
            cfg.clickhouse.database
        ))
        .execute()
        .await
        .with_context(|| format!("resetting the demo database at {}", cfg.clickhouse.url))?;

    let work = root.join(".local/demo").join(run_id.to_string());
    let through = world.last_day;
    let opts = Options {
        through,
        step_days: args.step_days.max(1),
        csv_every_days: Some(args.step_days.max(1)),
        work_dir: work.clone(),
    };
    let shutdown = rollcall_telemetry::shutdown_on_signals();
    let mut pipeline = Pipeline::start(cfg.clone(), secrets.clone(), world.clone(), opts).await?;
    let total_days = (through - world.first_day).num_days().max(1) as u64;
    let bar = ProgressBar::new(total_days);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} replaying {msg} [{bar:40}] day {pos}/{len} ({elapsed})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    // indicatif draws nothing when stdout is not a terminal (CI, a log file): print a
    // plain progress line instead, at most every few seconds and at the end.
    let plain = !std::io::stdout().is_terminal();
    if plain {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut last_line = Instant::now();
    let started = Instant::now();
    let mut day = world.first_day;
    let mut raw = 0u64;
    loop {
        if shutdown.is_cancelled() {
            bar.abandon_with_message("interrupted");
            println!("stopping cleanly (Ctrl-C) ...");
            pipeline.stop().await?;
            return Ok(());
        }
        let step = pipeline.step(day.min(through)).await?;
        raw += step.raw_records;
        bar.set_position((step.day - world.first_day).num_days() as u64);
        bar.set_message(format!("{} ({raw} raw records)", step.day));
        if plain && (last_line.elapsed() >= PLAIN_PROGRESS_EVERY || day >= through) {
            last_line = Instant::now();
            println!(
                "replaying: day {}/{} ({}), {raw} raw records, {:.0?}",
                (step.day - world.first_day).num_days(),
                total_days,
                step.day,
                started.elapsed()
            );
        }
        if day >= through {
            break;
        }
        day += chrono::Duration::days(i64::from(args.step_days.max(1)));
    }
    bar.finish_with_message(format!("through {through} ({raw} raw records)"));
    println!("waiting for the normalizer and the rollup to catch up ...");
    let settle = pipeline.wait_caught_up(Duration::from_secs(600)).await?;
    pipeline.stop().await?;
    println!(
        "pipeline caught up {:.1?} after the last day; {raw} raw records in {:.1?}",
        settle,
        started.elapsed()
    );

    let db = rollcall_clickhouse::connect(&cfg.clickhouse, &secrets);
    let state: Vec<Summary> = db
        .query(&format!(
            "SELECT 'state', {COLS} FROM state_chronic_absence"
        ))
        .fetch_all()
        .await?;
    print_rows("State", &state);
    let districts: Vec<Summary> = db
        .query(&format!(
            "SELECT district_id, {COLS} FROM district_chronic_absence ORDER BY district_id"
        ))
        .fetch_all()
        .await?;
    print_rows("Districts", &districts);
    let worst: Vec<Summary> = db
        .query(&format!(
            "SELECT concat(district_id, ' / ', school_id), {COLS} FROM school_chronic_absence \
             WHERE suppressed = 0 ORDER BY chronic_absence_rate DESC LIMIT 5"
        ))
        .fetch_all()
        .await?;
    print_rows("Worst schools (chronic absence rate)", &worst);

    let report_args = rollcall_report::cli::ReportArgs {
        out: args.report.clone(),
        school_year: None,
    };
    rollcall_report::cli::run_report(&cfg, &secrets, &report_args).await?;
    println!("\nreport written to {}", args.report.display());
    println!(
        "explore: rollcall --config <file> dashboard (database `{}`), or query the views in ClickHouse at {}",
        cfg.clickhouse.database, cfg.clickhouse.url
    );
    Ok(())
}
