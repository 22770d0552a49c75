//! Logging, metrics and health for every rollcall service: `tracing` (text or JSON),
//! a Prometheus recorder, and the `/healthz`, `/readyz`, `/metrics` HTTP endpoints.
//! Knows nothing of Kafka, ClickHouse or attendance.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rollcall_config::{LogFormat, TelemetryConfig};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// rdkafka's `BaseConsumer::drop` logs "Failed to close consumer queue on drop" at ERROR
/// for every consumer that rollcall-kafka already closed itself (with a bound, which
/// rdkafka's drop lacks): an error where nothing failed. That module logs nothing else
/// an operator acts on (two warnings about ignored poll events), so it is silenced;
/// rollcall-kafka logs its own close failures.
const QUIET_RDKAFKA_DROP: &str = "rdkafka::consumer::base_consumer=off";

/// Install the global `tracing` subscriber. Logs go to stderr. `RUST_LOG` wins over the
/// configured level when set. Safe to call twice (the second call is a no-op).
pub fn init_logging(cfg: &TelemetryConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive(QUIET_RDKAFKA_DROP.parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour only on a terminal: log files and collectors get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match cfg.log_format {
        LogFormat::Text => builder.with_target(true).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Install the global Prometheus recorder once and return its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. in tests); then we render ours.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Liveness and readiness flags a service flips as it starts, works and stops.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
    broken: Arc<AtomicBool>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }
    /// Ready to do work (connected, assigned, state rebuilt).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.is_broken()
    }
    /// Mark the process as unhealthy (a fatal error it cannot recover from).
    pub fn set_broken(&self) {
        self.broken.store(true, Ordering::SeqCst);
    }
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AppState {
    health: Health,
    metrics: PrometheusHandle,
}

/// The router behind the health server (exposed for tests and for services that add routes).
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState {
            health,
            metrics: metrics_handle(),
        })
}

async fn healthz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.health.is_broken() {
        (StatusCode::SERVICE_UNAVAILABLE, "broken\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics_text(State(s): State<AppState>) -> String {
    s.metrics.render()
}

/// Serve `/healthz`, `/readyz` and `/metrics` on `host:port` until `shutdown` fires.
/// Returns the bound address (port 0 picks a free port).
pub async fn serve_health(
    host: &str,
    port: u16,
    health: Health,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .with_context(|| format!("cannot bind the health/metrics port {host}:{port}"))?;
    let addr = listener.local_addr()?;
    // Built (and the recorder installed) before returning, so no early metric is lost.
    let app = router(health);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "health server stopped");
        }
    });
    tracing::info!(%addr, "health and metrics endpoints up (/healthz, /readyz, /metrics)");
    Ok(addr)
}

/// A token cancelled on SIGTERM or Ctrl-C, for graceful shutdown.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("install SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested; finishing the current batch");
        t.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints_report_health_readiness_and_metrics() {
        let health = Health::new();
        let stop = CancellationToken::new();
        let addr = serve_health("127.0.0.1", 0, health.clone(), stop.clone())
            .await
            .unwrap();
        metrics::counter!("rollcall_telemetry_test_total").increment(3);
        let get = |path: &'static str| async move {
            let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        assert_eq!(get("/healthz").await.0, 200);
        assert_eq!(get("/readyz").await.0, 503);
        health.set_ready(true);
        assert_eq!(get("/readyz").await.0, 200);
        let (code, body) = get("/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("rollcall_telemetry_test_total 3"), "{body}");
        health.set_broken();
        assert_eq!(get("/healthz").await.0, 503);
        assert_eq!(get("/readyz").await.0, 503);
        stop.cancel();
    }
}
