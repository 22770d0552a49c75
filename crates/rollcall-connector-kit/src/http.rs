//! Each connector's own HTTP port: `/healthz` and `/readyz` of that connector, and
//! `/metrics` filtered to it.
//!
//! Several connectors may run in one process (`rollcall connector run a b`), and the
//! `metrics` crate has one global recorder per process. Every connector metric carries
//! a `connector` label (the connector id), so each port renders the process's metrics
//! and keeps the samples labelled with its own connector, plus the samples with no
//! `connector` label at all (process-wide ones, which then appear on every port).

use std::net::SocketAddr;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use rollcall_telemetry::Health;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct PortState {
    health: Health,
    /// `connector="<id>"` as it appears in the Prometheus text.
    label: String,
}

/// The router of connector `id`'s port.
pub fn router(id: &str, health: Health) -> Router {
    // The exporter escapes `\` and `"` in label values.
    let escaped = id.replace('\\', "\\\\").replace('"', "\\\"");
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(PortState {
            health,
            label: format!("connector=\"{escaped}\""),
        })
}

/// Serve connector `id`'s port on `host:port` until `shutdown`; the bound address.
pub async fn serve(
    host: &str,
    port: u16,
    id: &str,
    health: Health,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .with_context(|| format!("cannot bind the health/metrics port {host}:{port} of {id}"))?;
    let addr = listener.local_addr()?;
    // The recorder is installed before the first metric of the run is recorded.
    let _ = rollcall_telemetry::metrics_handle();
    let app = router(id, health);
    let who = id.to_string();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(connector = %who, error = %e, "health server stopped");
        }
    });
    tracing::info!(connector = %id, %addr, "health and metrics endpoints up (/healthz, /readyz, /metrics)");
    Ok(addr)
}

async fn healthz(State(s): State<PortState>) -> (StatusCode, &'static str) {
    if s.health.is_broken() {
        (StatusCode::SERVICE_UNAVAILABLE, "broken\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn readyz(State(s): State<PortState>) -> (StatusCode, &'static str) {
    if s.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics_text(State(s): State<PortState>) -> String {
    filter_metrics(&rollcall_telemetry::metrics_handle().render(), &s.label)
}

/// Keep the samples labelled `label` (`connector="<id>"`) or with no connector label,
/// and the `# HELP` / `# TYPE` lines of the families that keep a sample.
pub(crate) fn filter_metrics(text: &str, label: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut comments: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            comments.push(line);
            continue;
        }
        if line.trim().is_empty() {
            comments.clear();
            continue;
        }
        let labels = line
            .find('{')
            .and_then(|a| line[a..].find('}').map(|b| &line[a + 1..a + b]));
        let keep = match labels {
            None => true,
            Some(l) => !has_connector_label(l) || l.contains(label),
        };
        if keep {
            for c in comments.drain(..) {
                out.push_str(c);
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn has_connector_label(labels: &str) -> bool {
    labels.starts_with("connector=\"") || labels.contains(",connector=\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_port_keeps_its_own_connector_and_the_process_wide_samples() {
        let text = "# TYPE rollcall_connector_batches_total counter\n\
rollcall_connector_batches_total{connector=\"edfi:a\"} 3\n\
rollcall_connector_batches_total{connector=\"csv:b\"} 5\n\
\n\
# TYPE rollcall_connector_records_total counter\n\
rollcall_connector_records_total{entity=\"attendance\",connector=\"csv:b\"} 9\n\
\n\
# TYPE process_things gauge\n\
process_things 1\n\
process_things{kind=\"x\"} 2\n";
        let a = filter_metrics(text, "connector=\"edfi:a\"");
        assert!(a.contains("{connector=\"edfi:a\"} 3"), "{a}");
        assert!(!a.contains("csv:b"), "{a}");
        assert!(
            !a.contains("rollcall_connector_records_total"),
            "a family with none of a's samples is left out: {a}"
        );
        assert!(
            a.contains("process_things 1") && a.contains("kind=\"x\"} 2"),
            "{a}"
        );
        let b = filter_metrics(text, "connector=\"csv:b\"");
        assert!(
            b.contains("connector=\"csv:b\"} 9") && !b.contains("edfi:a"),
            "{b}"
        );
    }
}
