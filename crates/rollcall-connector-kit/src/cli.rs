//! Running connectors by name from the configuration, shared by `rollcall connector run`
//! and each connector's own small binary.

use std::path::Path;

use std::time::Duration;

use anyhow::Context;
use rollcall_config::{Config, LogFormat, Secrets};
use rollcall_telemetry::Health;
use tokio_util::sync::CancellationToken;

use crate::retry::Backoff;
use crate::runtime::{is_fatal, run_with_health, FatalError};
use crate::{Factory, RunOptions, RunSummary, SisConnector};

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

/// Run the named connectors concurrently until shutdown (or caught up, with `--once`),
/// each under supervision:
///
/// - each connector has its own [`Health`] and, with `http_port`, its own port (health
///   of that connector, `/metrics` filtered to it);
/// - a run that fails with a transient error (Kafka unreachable, a checkpoint that
///   cannot be read, a publish that failed, ...) is restarted with exponential backoff
///   (0.5 s doubling up to 60 s, reset after a run that lasted a minute); the
///   connector is not ready meanwhile, and the others go on;
/// - a fatal error ([`FatalError`]: the connector says restarting cannot help) or a
///   panic stops every connector of the process (each finishes the batch it is
///   committing) and is returned, naming the connector; its `/healthz` says broken.
pub async fn run_named(
    factories: &[Factory],
    cfg: &Config,
    secrets: &Secrets,
    args: &RunArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<(String, RunSummary)>> {
    run_supervised(
        factories,
        cfg,
        secrets,
        args,
        shutdown,
        Backoff::new(Duration::from_millis(500), Duration::from_secs(60)),
    )
    .await
}

/// [`run_named`] with the restart backoff given (tests use a short one).
pub async fn run_supervised(
    factories: &[Factory],
    cfg: &Config,
    secrets: &Secrets,
    args: &RunArgs,
    shutdown: CancellationToken,
    restart: Backoff,
) -> anyhow::Result<Vec<(String, RunSummary)>> {
    let planned = plan(factories, cfg, &args.names)?;
    // A fatal error of one connector stops the others: their own token is a child of
    // the process's.
    let stop_all = shutdown.child_token();
    let mut tasks = tokio::task::JoinSet::new();
    for p in planned {
        // Built once up front too, so a configuration error fails the start.
        let first = (p.factory.build)(&p.name, p.section.clone())
            .with_context(|| format!("connector {}", p.name))?;
        let health = Health::new();
        if let Some((host, port)) = &p.http {
            crate::http::serve(host, *port, first.id(), health.clone(), stop_all.clone()).await?;
        }
        let sup = Supervised {
            name: p.name.clone(),
            build: p.factory.build,
            section: p.section,
            opts: RunOptions {
                http: None,
                stop_when_caught_up: args.once,
                show_progress: !args.no_progress,
            },
            health,
            restart: restart.clone(),
        };
        let (cfg, secrets, stop) = (cfg.clone(), secrets.clone(), stop_all.clone());
        let name = p.name;
        tasks.spawn(async move {
            let r = sup.run(first, &cfg, &secrets, stop).await;
            (name, r)
        });
    }
    let mut out = Vec::new();
    let mut failed: Option<anyhow::Error> = None;
    while let Some(joined) = tasks.join_next().await {
        let (name, r) = match joined {
            Ok(x) => x,
            Err(e) => {
                // Supervised::run catches the connector's panics; this is the
                // supervisor's own, which must not pass silently either.
                stop_all.cancel();
                failed.get_or_insert(anyhow::anyhow!("a connector supervisor failed: {e}"));
                continue;
            }
        };
        match r {
            Ok(s) => out.push((name, s)),
            Err(e) => {
                tracing::error!(connector = %name, error = %format!("{e:#}"),
                    "connector failed fatally; stopping every connector of this process");
                stop_all.cancel();
                failed.get_or_insert(e.context(format!("connector {name}")));
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// One connector under supervision: restarted on transient failures.
struct Supervised {
    name: String,
    build: fn(&str, serde_json::Value) -> anyhow::Result<Box<dyn SisConnector>>,
    section: serde_json::Value,
    opts: RunOptions,
    health: Health,
    restart: Backoff,
}

impl Supervised {
    async fn run(
        mut self,
        first: Box<dyn SisConnector>,
        cfg: &Config,
        secrets: &Secrets,
        stop: CancellationToken,
    ) -> anyhow::Result<RunSummary> {
        let mut total = RunSummary::default();
        let mut next = Some(first);
        loop {
            let connector = match next.take() {
                Some(c) => c,
                None => match (self.build)(&self.name, self.section.clone()) {
                    Ok(c) => c,
                    Err(e) => {
                        self.health.set_broken();
                        return Err(e.context("rebuilding the connector for a restart"));
                    }
                },
            };
            let id = connector.id().to_string();
            let started = std::time::Instant::now();
            let (c, sec, opts, health, st) = (
                cfg.clone(),
                secrets.clone(),
                self.opts.clone(),
                self.health.clone(),
                stop.clone(),
            );
            let run = tokio::spawn(async move {
                run_with_health(connector, &c, &sec, opts, health, st).await
            });
            // A panic in the connector is a bug: caught here, it stops the process
            // loudly instead of leaving a dead task behind a healthy port.
            let result = match run.await {
                Ok(r) => r,
                Err(joined) => {
                    self.health.set_broken();
                    let what = match joined.try_into_panic() {
                        Ok(panic) => panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "(no message)".into()),
                        Err(e) => e.to_string(),
                    };
                    return Err(FatalError(format!("connector {id} panicked: {what}")).into());
                }
            };
            match result {
                Ok(s) => {
                    add(&mut total, &s);
                    return Ok(total);
                }
                Err(e) if is_fatal(&e) => {
                    self.health.set_broken();
                    return Err(e);
                }
                Err(e) => {
                    self.health.set_ready(false);
                    if stop.is_cancelled() {
                        return Err(e);
                    }
                    if started.elapsed() >= Duration::from_secs(60) {
                        self.restart.reset();
                    }
                    let wait = self.restart.next_delay(None);
                    total.retries += 1;
                    metrics::counter!("rollcall_connector_restarts_total", "connector" => id.clone())
                        .increment(1);
                    tracing::error!(connector = %id, error = %format!("{e:#}"),
                        attempt = self.restart.attempts(), wait_ms = wait.as_millis() as u64,
                        "connector run failed; restarting it after a backoff");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => return Err(e),
                    }
                }
            }
        }
    }
}

fn add(total: &mut RunSummary, s: &RunSummary) {
    total.batches += s.batches;
    total.records += s.records;
    total.dead_letters += s.dead_letters;
    total.retries += s.retries;
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
