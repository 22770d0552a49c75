//! `rollcall`: one command line for every part of the pipeline.
//! Each service subcommand runs the same code as that service's own small binary.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rollcall_config::{Config, LogFormat, Secrets};

mod bench;
mod connectors;
mod demo;
mod dlq;
mod inbox;
mod ops;
mod simulate;

#[derive(Parser)]
#[command(
    name = "rollcall",
    version,
    about = "Attendance from every SIS, one definition of chronic absence."
)]
struct Cli {
    /// The TOML configuration file (see deploy/rollcall.example.toml). Without it, the
    /// built-in defaults (local infrastructure) plus ROLLCALL_<SECTION>__<KEY> overrides.
    #[arg(long, short, global = true, env = "ROLLCALL_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending ClickHouse migrations from schemas/clickhouse (idempotent).
    ///
    /// The BI views are rendered from the configured `[policy]` and carry its
    /// fingerprint; a database whose views were built with another policy is refused
    /// (naming each differing setting) unless `--policy` is given.
    Migrate {
        /// Read migrations from this directory instead of the ones built in.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rebuild the policy views with the configured policy when they were built with
        /// another one, and record its fingerprint.
        #[arg(long)]
        policy: bool,
        /// Print every statement a fresh migrate would run (rendered for the policy),
        /// without connecting to ClickHouse.
        #[arg(long)]
        print_sql: bool,
        /// Take the policy from this TOML file (the keys of a `[policy]` section)
        /// instead of the configuration.
        #[arg(long)]
        policy_file: Option<PathBuf>,
    },
    /// Create the Kafka topics rollcall needs (idempotent), or list them.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Print the effective configuration (secrets are never printed).
    Config,
    /// Run the normalizer service: raw SIS records in, canonical events out, exactly once.
    Normalizer,
    /// Run the rollup service: normalized events in, per-student metrics in ClickHouse.
    Rollup {
        /// Compute metrics as of this date (YYYY-MM-DD) instead of today.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// The whole job in one command: infrastructure, a simulated school year through the
    /// real pipeline, a summary and the HTML report.
    Demo(demo::DemoArgs),
    /// The SIS simulator: an Ed-Fi ODS/API server, CSV exports, expected metrics.
    Simulate(simulate::SimulateArgs),
    /// Measure throughput through the real Kafka and ClickHouse (see BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
    /// Write the chronic-absence report (one self-contained HTML page) from the BI views.
    Report(rollcall_report::cli::ReportArgs),
    /// Serve the report live over HTTP.
    Dashboard(rollcall_report::cli::DashboardArgs),
    /// Run SIS connectors (`[connectors.<name>]` sections), or list the kinds built in.
    Connector {
        #[command(subcommand)]
        action: ConnectorAction,
    },
    /// Inspect dead letters, or re-publish them after a code map fix.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// File-drop inboxes: move a rejected file back to be read again.
    Inbox {
        #[command(subcommand)]
        action: inbox::InboxAction,
    },
}

#[derive(Subcommand)]
enum ConnectorAction {
    /// Run the named connectors (all configured ones when none is named).
    Run(rollcall_connector_kit::RunArgs),
    /// The connector kinds this build knows.
    Kinds,
}

#[derive(Subcommand)]
enum DlqAction {
    /// Counts by district and error kind.
    Summary {
        #[command(flatten)]
        filter: dlq::Filter,
    },
    /// Every dead letter with its reason and where it came from, then the summary.
    List {
        #[command(flatten)]
        filter: dlq::Filter,
    },
    /// Re-publish matching dead letters to the raw topic they came from, each once.
    ///
    /// Reads the whole dead-letter topic from the beginning each time (no consumer
    /// group, no committed offsets). Each re-published dead letter gets a replay mark on
    /// the dead-letter topic in the same transaction (header rollcall.replayed =
    /// <partition>@<offset>), so later replays skip it; dead letters a filter leaves out
    /// stay replayable. A record that fails again is a new dead letter. Only this
    /// deployment's raw topics are targets: dead letters naming another topic, none (file
    /// rows: drop the file again) or with a cut payload are refused and named on stderr.
    Replay {
        #[command(flatten)]
        filter: dlq::Filter,
    },
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Create every topic that does not exist yet.
    Create,
    /// List rollcall's topics with their partition counts.
    List,
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if let Err(e) = real_main() {
        // One line for the person at the terminal; details in the chain.
        eprintln!("rollcall: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut cfg = Config::load(cli.config.as_deref())?;
    if cli.json_logs {
        cfg.telemetry.log_format = LogFormat::Json;
    }
    if matches!(cli.command, Command::Demo(_) | Command::Bench { .. }) {
        // These drive every service in one process: their progress is the output.
        cfg.telemetry.log_level = "warn".into();
    }
    rollcall_telemetry::init_logging(&cfg.telemetry);
    // The long-running services own their runtime and shutdown handling.
    match &cli.command {
        Command::Rollup { as_of } => {
            return rollcall_rollup::main_with(cli.config.as_deref(), cli.json_logs, as_of.clone())
        }
        Command::Normalizer => {
            return rollcall_normalizer::main_with(cli.config.as_deref(), cli.json_logs)
        }
        _ => {}
    }
    let secrets = Secrets::from_env()?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        match cli.command {
            Command::Migrate {
                dir,
                policy,
                print_sql,
                policy_file,
            } => {
                let args = ops::MigrateArgs {
                    dir,
                    rebuild_policy_views: policy,
                    print_sql,
                    policy_file,
                };
                ops::migrate(&cfg, &secrets, &args).await
            }
            Command::Topics { action } => match action {
                TopicsAction::Create => ops::create_topics(&cfg, &secrets).await,
                TopicsAction::List => ops::list_topics(&cfg, &secrets),
            },
            Command::Demo(args) => demo::run(cfg, secrets, &args).await,
            Command::Simulate(args) => simulate::run(&args).await,
            Command::Bench { what } => match what {
                bench::BenchCommand::Normalizer { records } => {
                    bench::normalizer(&cfg, &secrets, records).await
                }
                bench::BenchCommand::Rollup { students } => {
                    bench::rollup(&cfg, &secrets, students).await
                }
                bench::BenchCommand::Pipeline(args) => {
                    bench::pipeline::run(cfg, secrets, &args).await
                }
            },
            Command::Report(args) => rollcall_report::cli::run_report(&cfg, &secrets, &args).await,
            Command::Dashboard(args) => {
                let shutdown = rollcall_telemetry::shutdown_on_signals();
                rollcall_report::cli::run_dashboard(&cfg, &secrets, &args, shutdown).await
            }
            Command::Connector { action } => match action {
                ConnectorAction::Run(args) => {
                    let shutdown = rollcall_telemetry::shutdown_on_signals();
                    let done = rollcall_connector_kit::run_named(
                        connectors::CONNECTORS,
                        &cfg,
                        &secrets,
                        &args,
                        shutdown,
                    )
                    .await?;
                    rollcall_connector_kit::print_summaries(&done);
                    Ok(())
                }
                ConnectorAction::Kinds => {
                    for f in connectors::CONNECTORS {
                        println!("{:<10} {}", f.kind, f.about);
                    }
                    Ok(())
                }
            },
            Command::Dlq { action } => match action {
                DlqAction::Summary { filter } => dlq::summarize(&cfg, &secrets, &filter, false),
                DlqAction::List { filter } => dlq::summarize(&cfg, &secrets, &filter, true),
                DlqAction::Replay { filter } => dlq::replay(&cfg, &secrets, &filter),
            },
            Command::Inbox { action } => inbox::run(action),
            Command::Rollup { .. } | Command::Normalizer => Ok(()), // handled above
            Command::Config => {
                println!("{}", ops::show_config(&cfg)?);
                Ok(())
            }
        }
    })
}
