//! `rollcall simulate`: the SIS simulator from the command line — an Ed-Fi ODS/API
//! server, CSV exports, and the expected metrics for any as-of date.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use chrono::NaiveDate;
use rollcall_sis_simulator::edfi::{EdfiServer, ServerOptions};
use rollcall_sis_simulator::{csv_export, expected_metrics, generate, Feed, SimConfig, World};

#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// `demo` (~20,000 students, 7 districts), `small` (2 districts), or a TOML file
    /// with a SimConfig (see docs/simulator.md).
    #[arg(long, default_value = "demo")]
    pub size: String,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[command(subcommand)]
    pub what: SimulateCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum SimulateCommand {
    /// Serve the Ed-Fi districts as an Ed-Fi ODS/API (client `rollcall` / `rollcall-secret`).
    Edfi {
        #[arg(long, default_value_t = 8099)]
        port: u16,
        /// Advance one simulated day every this many milliseconds (else: POST /_sim/advance).
        #[arg(long)]
        day_every_ms: Option<u64>,
        /// Largest page served.
        #[arg(long, default_value_t = 500)]
        max_page_size: usize,
    },
    /// Write each CSV district's year-to-date export as of a day into `<out>/<district>/`.
    Csv {
        #[arg(long)]
        out: PathBuf,
        /// The export's day (default: the end of the simulated year).
        #[arg(long)]
        day: Option<NaiveDate>,
    },
    /// Write the expected metrics as of a date (JSON, and CSV files beside it).
    Expected {
        #[arg(long)]
        as_of: Option<NaiveDate>,
        #[arg(long, default_value = "expected.json")]
        out: PathBuf,
    },
}

fn world(args: &SimulateArgs) -> anyhow::Result<World> {
    let cfg = match args.size.as_str() {
        "demo" => SimConfig::demo(args.seed),
        "small" => SimConfig::small(args.seed),
        path => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("--size: reading {path}"))?;
            toml::from_str(&text)
                .with_context(|| format!("--size: {path} is not a simulator config"))?
        }
    };
    generate(&cfg).map_err(|e| anyhow::anyhow!("simulator config: {}", e.0))
}

pub async fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let world = Arc::new(world(args)?);
    match &args.what {
        SimulateCommand::Edfi {
            port,
            day_every_ms,
            max_page_size,
        } => {
            let opts = ServerOptions {
                day_every_ms: *day_every_ms,
                max_page_size: *max_page_size,
                ..Default::default()
            };
            let server = EdfiServer::new(world.clone(), opts);
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", *port))
                .await
                .with_context(|| format!("binding 127.0.0.1:{port}"))?;
            println!(
                "Ed-Fi ODS/API simulator on http://{} (client rollcall / rollcall-secret); days {}..{}; \
                 POST /_sim/advance?days=N moves the clock",
                listener.local_addr()?, world.first_day, world.last_day
            );
            let shutdown = rollcall_telemetry::shutdown_on_signals();
            server
                .serve_with_shutdown(listener, async move { shutdown.cancelled().await })
                .await?;
        }
        SimulateCommand::Csv { out, day } => {
            let day = day.unwrap_or(world.last_day);
            for d in world
                .districts
                .iter()
                .filter(|d| matches!(d.spec.feed, Feed::Csv(_)))
            {
                let files =
                    csv_export::write_drop(&world, &d.spec.id, None, day, &out.join(&d.spec.id))?;
                println!(
                    "{}: {} {} {}",
                    d.spec.id,
                    files.attendance.display(),
                    files.enrollment.display(),
                    files.calendar.display()
                );
            }
        }
        SimulateCommand::Expected { as_of, out } => {
            let as_of = as_of.unwrap_or(world.last_day);
            let e = expected_metrics(&world, as_of);
            let dir = out.parent().map(|p| p.to_path_buf()).unwrap_or_default();
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            e.write_json(out)
                .with_context(|| format!("writing {}", out.display()))?;
            let files = e.write_csv(&dir)?;
            println!(
                "expected metrics as of {as_of}: {} ({} CSV files beside it)",
                out.display(),
                files.len()
            );
        }
    }
    Ok(())
}
