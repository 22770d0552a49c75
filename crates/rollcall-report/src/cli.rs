//! The command-line edge: `rollcall report` (write the page to a file) and
//! `rollcall dashboard` (serve it over HTTP, rebuilt on every request, plus `/healthz`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rollcall_config::{Config, Secrets};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{load, render, ReportError};

/// `rollcall report`: write the chronic-absence report as one self-contained HTML file.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Where to write the page.
    #[arg(long, default_value = "report.html")]
    pub out: PathBuf,
    /// School year to show, as the year it ends (2024 = 2023–24). Default: the latest
    /// year with data.
    #[arg(long)]
    pub school_year: Option<u16>,
}

/// `rollcall dashboard`: serve the report live (rebuilt from the views per request).
#[derive(Debug, Clone, clap::Args)]
pub struct DashboardArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 9180)]
    pub port: u16,
    /// Address to listen on. Loopback by default: the page shows student aggregates;
    /// put an authenticating proxy in front before exposing it.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// School year to show, as the year it ends. Default: the latest year with data.
    #[arg(long)]
    pub school_year: Option<u16>,
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Read the views and render the page once.
pub async fn generate(
    cfg: &Config,
    secrets: &Secrets,
    school_year: Option<u16>,
) -> Result<String, ReportError> {
    let client = rollcall_clickhouse::connect(&cfg.clickhouse, secrets);
    rollcall_clickhouse::check_view_policy(&client, &cfg.clickhouse.database, &cfg.policy).await?;
    let data = load(&client, school_year, &cfg.clickhouse.database, &now()).await?;
    Ok(render::render_html(&data))
}

/// `rollcall report --out report.html [--school-year 2024]`.
pub async fn run_report(cfg: &Config, secrets: &Secrets, args: &ReportArgs) -> anyhow::Result<()> {
    let html = generate(cfg, secrets, args.school_year)
        .await
        .context("building the report")?;
    write_atomically(&args.out, html.as_bytes())
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {} ({} bytes)", args.out.display(), html.len());
    Ok(())
}

/// Write to a temporary file beside `path`, then rename: a reader never sees half a page.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report.html".into());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

struct Dashboard {
    client: clickhouse::Client,
    database: String,
    /// Checked against the views' fingerprint on every page (`migrate --policy` may
    /// rebuild them while the dashboard runs).
    policy: rollcall_policy::Policy,
    school_year: Option<u16>,
}

/// Bind and start serving `/` (the report) and `/healthz`; returns the bound address and
/// the server task, which ends after `shutdown` is cancelled.
pub async fn serve_dashboard(
    cfg: &Config,
    secrets: &Secrets,
    args: &DashboardArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<anyhow::Result<()>>)> {
    // Refuse to start when the views were built with another policy. A ClickHouse that
    // does not answer is no reason to refuse: every page checks again and answers 503
    // with the reason meanwhile.
    let client = rollcall_clickhouse::connect(&cfg.clickhouse, secrets);
    match rollcall_clickhouse::check_view_policy(&client, &cfg.clickhouse.database, &cfg.policy)
        .await
    {
        Ok(()) => {}
        Err(e @ rollcall_clickhouse::ViewPolicyMismatch::Client { .. }) => {
            tracing::warn!(error = %e, "dashboard: cannot check the views' policy yet");
        }
        Err(e) => return Err(e).context("checking the policy of the BI views"),
    }
    let state = Arc::new(Dashboard {
        client,
        database: cfg.clickhouse.database.clone(),
        policy: cfg.policy.clone(),
        school_year: args.school_year,
    });
    let app = Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot bind the dashboard port {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .context("dashboard server")
    });
    tracing::info!(%addr, "dashboard up: / (the report, rebuilt per request), /healthz");
    Ok((addr, task))
}

/// `rollcall dashboard --port 9180`: serve until `shutdown` is cancelled.
pub async fn run_dashboard(
    cfg: &Config,
    secrets: &Secrets,
    args: &DashboardArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (addr, task) = serve_dashboard(cfg, secrets, args, shutdown).await?;
    println!("dashboard at http://{addr}/ (Ctrl-C stops it)");
    task.await.context("dashboard task")?
}

async fn page(State(s): State<Arc<Dashboard>>) -> Response {
    let built = async {
        rollcall_clickhouse::check_view_policy(&s.client, &s.database, &s.policy).await?;
        load(&s.client, s.school_year, &s.database, &now()).await
    };
    let (status, body) = match built.await {
        Ok(data) => (StatusCode::OK, render::render_html(&data)),
        Err(e) => {
            tracing::error!(error = %e, "dashboard: cannot build the report");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                render::error_page(&e.to_string()),
            )
        }
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(render::CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Report {
        #[command(flatten)]
        args: ReportArgs,
    }

    #[derive(Parser)]
    struct Dash {
        #[command(flatten)]
        args: DashboardArgs,
    }

    #[test]
    fn arguments_have_the_documented_defaults() {
        let r = Report::try_parse_from(["report"]).unwrap().args;
        assert_eq!(r.out, PathBuf::from("report.html"));
        assert_eq!(r.school_year, None);
        let r = Report::try_parse_from(["report", "--out", "x.html", "--school-year", "2024"])
            .unwrap()
            .args;
        assert_eq!(r.out, PathBuf::from("x.html"));
        assert_eq!(r.school_year, Some(2024));
        let d = Dash::try_parse_from(["dashboard"]).unwrap().args;
        assert_eq!((d.port, d.host.as_str()), (9180, "127.0.0.1"));
    }

    #[tokio::test]
    async fn the_dashboard_answers_503_with_the_reason_when_clickhouse_is_down() {
        let mut cfg = Config::default();
        cfg.clickhouse.url = "http://127.0.0.1:9".into(); // nothing listens there
        let secrets = Secrets {
            clickhouse_password: Some(rollcall_config::Secret::new("hunter2")),
            ..Secrets::default()
        };
        let stop = CancellationToken::new();
        let args = DashboardArgs {
            port: 0,
            host: "127.0.0.1".into(),
            school_year: None,
        };
        let (addr, task) = serve_dashboard(&cfg, &secrets, &args, stop.clone())
            .await
            .unwrap();
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut buf = String::new();
            s.read_to_string(&mut buf).await.unwrap();
            buf
        };
        let health = get("/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        let page = get("/").await;
        assert!(page.starts_with("HTTP/1.1 503"), "{page}");
        assert!(page.contains("The report is unavailable"));
        assert!(page.contains("data-error=\"1\">clickhouse: "), "{page}");
        assert!(page.contains("content-security-policy: default-src 'none'"));
        assert!(!page.contains("hunter2"));
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    #[test]
    fn the_page_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("report.html");
        write_atomically(&out, b"one").unwrap();
        write_atomically(&out, b"two").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
