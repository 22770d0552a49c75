//! Running connectors by name from the configuration, shared by `rollcall connector run`
//! and each connector's own small binary.

use std::path::Path;

use anyhow::Context;
use rollcall_config::{Config, LogFormat, Secrets};
use tokio_util::sync::CancellationToken;

use crate::{run, Factory, RunOptions, RunSummary};

/// Arguments of `rollcall connector run`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// `[connectors.<name>]` sections to run (all configured ones when none is given).
    pub names: Vec<String>,
    /// Stop once every source is caught up (a backfill) instead of polling forever.
    #[arg(long)]
    pub once: bool,
    /// No progress bar, only log lines.
    #[arg(long)]
    pub no_progress: bool,
}

/// The keys of a `[connectors.<name>]` section that the kit reads; the rest is the
/// connector's own.
const KIT_KEYS: [&str; 3] = ["kind", "http_port", "http_host"];

/// A configured connector: its factory, name, section and health address.
pub struct Planned<'f> {
    pub name: String,
    pub factory: &'f Factory,
    pub section: serde_json::Value,
    pub http: Option<(String, u16)>,
}

/// Resolve `names` (or every configured connector) against `factories`.
pub fn plan<'f>(
    factories: &'f [Factory],
    cfg: &Config,
    names: &[String],
) -> anyhow::Result<Vec<Planned<'f>>> {
    let all: Vec<String> = cfg.connectors.keys().cloned().collect();
    let names = if names.is_empty() {
        all.clone()
    } else {
        names.to_vec()
    };
    if names.is_empty() {
        anyhow::bail!("no connectors configured: add a [connectors.<name>] section (see docs/adding-a-connector.md)");
    }
    let mut out = Vec::new();
    for name in names {
        let raw = cfg.connectors.get(&name).with_context(|| {
            format!("no [connectors.{name}] section in the configuration (have: {all:?})")
        })?;
        let mut section = serde_json::to_value(raw)?;
        let obj = section
            .as_object_mut()
            .with_context(|| format!("connectors.{name} must be a table"))?;
        let kind = obj
            .get("kind")
            .and_then(|k| k.as_str())
            .with_context(|| format!("connectors.{name}.kind is missing"))?
            .to_string();
        let factory = factories.iter().find(|f| f.kind == kind).with_context(|| {
            let kinds: Vec<&str> = factories.iter().map(|f| f.kind).collect();
            format!("connectors.{name}.kind: unknown connector kind `{kind}` (known: {kinds:?})")
        })?;
        let port = obj.get("http_port").and_then(|p| p.as_u64());
        let host = obj
            .get("http_host")
            .and_then(|h| h.as_str())
            .unwrap_or("127.0.0.1")
            .to_string();
        let http = match port {
            Some(p) => Some((
                host,
                u16::try_from(p)
                    .with_context(|| format!("connectors.{name}.http_port: {p} is not a port"))?,
            )),
            None => None,
        };
        for k in KIT_KEYS {
            obj.remove(k);
        }
        out.push(Planned {
            name,
            factory,
            section,
            http,
        });
    }
    Ok(out)
}

/// Run the named connectors concurrently until shutdown (or caught up, with `--once`).
pub async fn run_named(
    factories: &[Factory],
    cfg: &Config,
    secrets: &Secrets,
    args: &RunArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<(String, RunSummary)>> {
    let planned = plan(factories, cfg, &args.names)?;
    let mut tasks = Vec::new();
    for p in planned {
        let connector = (p.factory.build)(&p.name, p.section)?;
        let opts = RunOptions {
            http: p.http,
            stop_when_caught_up: args.once,
            show_progress: !args.no_progress,
        };
        let (cfg, secrets, shutdown) = (cfg.clone(), secrets.clone(), shutdown.clone());
        let name = p.name;
        tasks.push(tokio::spawn(async move {
            let r = run(connector, &cfg, &secrets, opts, shutdown).await;
            (name, r)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        let (name, r) = t.await?;
        out.push((
            name.clone(),
            r.with_context(|| format!("connector {name}"))?,
        ));
    }
    Ok(out)
}

/// `main` for a connector's own binary: `rollcall-connector-<kind> [--config F] [names...]`.
pub fn binary_main(factory: Factory) {
    #[derive(clap::Parser)]
    struct Args {
        #[arg(long, short, env = "ROLLCALL_CONFIG")]
        config: Option<std::path::PathBuf>,
        #[arg(long)]
        json_logs: bool,
        #[command(flatten)]
        run: RunArgs,
    }
    let args = <Args as clap::Parser>::parse();
    if let Err(e) = main_with(
        &[factory],
        args.config.as_deref(),
        args.json_logs,
        &args.run,
    ) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Load the configuration, start logging and run the named connectors.
pub fn main_with(
    factories: &[Factory],
    config: Option<&Path>,
    json_logs: bool,
    args: &RunArgs,
) -> anyhow::Result<()> {
    let mut cfg = Config::load(config)?;
    if json_logs {
        cfg.telemetry.log_format = LogFormat::Json;
    }
    rollcall_telemetry::init_logging(&cfg.telemetry);
    let secrets = Secrets::from_env()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let shutdown = rollcall_telemetry::shutdown_on_signals();
        print_summaries(&run_named(factories, &cfg, &secrets, args, shutdown).await?);
        Ok(())
    })
}

/// One line per connector run: what it published.
pub fn print_summaries(done: &[(String, RunSummary)]) {
    for (name, s) in done {
        println!(
            "{name}: {} records, {} dead letters in {} batches ({} retries)",
            s.records, s.dead_letters, s.batches, s.retries
        );
    }
}
