//! The normalizer and the rollup as separate processes of this very binary, as they run
//! in production, so their peak memory is their own: started with a written
//! configuration file, watched through their `/readyz` and `/metrics`, stopped with
//! SIGTERM (each finishes its batch and commits).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use rollcall_config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Service {
    pub name: &'static str,
    pub port: u16,
    child: tokio::process::Child,
}

/// A free port on loopback (bound and released; the child binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Start `rollcall --config <cfg_file> <subcommand>`. The configuration file holds the
/// effective configuration, so `ROLLCALL_<SECTION>__<KEY>` overrides are not passed on
/// (they are already in it); secrets still come from the environment.
pub async fn spawn(
    name: &'static str,
    cfg_file: &Path,
    port: u16,
    args: &[&str],
) -> anyhow::Result<Service> {
    let exe = std::env::current_exe().context("locating the rollcall binary")?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--config").arg(cfg_file).args(args);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k == "ROLLCALL_CONFIG" || (k.starts_with("ROLLCALL_") && k.contains("__")) {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting the {name}"))?;
    let s = Service { name, port, child };
    let started = Instant::now();
    loop {
        if let Ok((200, _)) = http_get(port, "/readyz").await {
            return Ok(s);
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the {name} did not become ready in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Service {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Peak resident set size so far (VmHWM), MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.pid()
            .map(|p| vm_hwm_mib(&format!("/proc/{p}/status")))
            .unwrap_or(f64::NAN)
    }

    pub async fn metrics(&self) -> anyhow::Result<String> {
        let (status, body) = http_get(self.port, "/metrics").await?;
        anyhow::ensure!(status == 200, "{} /metrics answered {status}", self.name);
        Ok(body)
    }

    /// SIGTERM, then wait (60 s at most, then kill).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                anyhow::ensure!(status.success(), "the {} exited with {status}", self.name);
            }
            Err(_) => {
                self.child.kill().await?;
                anyhow::bail!("the {} did not stop within 60 s of SIGTERM", self.name);
            }
        }
        Ok(())
    }
}

pub fn vm_hwm_mib(status_file: &str) -> f64 {
    std::fs::read_to_string(status_file)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// A minimal HTTP/1.0 GET on loopback (no client library for two endpoints).
async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await??;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Sum of a Prometheus counter's series whose labels contain every `labels` item
/// (e.g. `entity="attendance"`).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name && labels.iter().all(|want| series.contains(want)))
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// The configuration file the child services read.
pub fn write_config(cfg: &Config, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, toml::to_string_pretty(cfg)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// CPU time (user + system) a process has used so far, seconds; `NaN` if it is gone.
/// `/proc/<pid>/stat` counts in clock ticks of 1/100 s (USER_HZ on Linux).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    match (
        fields.get(11).and_then(|v| v.parse::<f64>().ok()),
        fields.get(12).and_then(|v| v.parse::<f64>().ok()),
    ) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// Where `deploy/local` keeps its services: `ROLLCALL_LOCAL_DIR`, default
/// `<repo>/.local`.
pub fn local_dir(repo_root: &Path) -> std::path::PathBuf {
    std::env::var_os("ROLLCALL_LOCAL_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo_root.join(".local"))
}

/// The pid of a service `deploy/local` runs, from its pid file in `local_dir`, e.g.
/// `kafka/kafka.pid`; `None` for a service not started there (an external broker,
/// say), or not running.
pub fn local_service_pid(local_dir: &Path, pid_file: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(local_dir.join(pid_file))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_counter_series_by_label() {
        let text = "# TYPE rollcall_rollup_records_total counter\n\
            rollcall_rollup_records_total{entity=\"attendance\",outcome=\"applied\"} 10\n\
            rollcall_rollup_records_total{entity=\"attendance\",outcome=\"ignored\"} 2\n\
            rollcall_rollup_records_total{entity=\"enrollment\",outcome=\"applied\"} 5\n\
            rollcall_rollup_records_total_x 100\n";
        assert_eq!(metric_sum(text, "rollcall_rollup_records_total", &[]), 17.0);
        assert_eq!(
            metric_sum(
                text,
                "rollcall_rollup_records_total",
                &["entity=\"attendance\""]
            ),
            12.0
        );
        assert_eq!(metric_sum(text, "missing", &[]), 0.0);
    }

    #[test]
    fn this_process_uses_cpu_and_is_found_by_its_pid_file() {
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let used = cpu_seconds(std::process::id());
        assert!(used > 0.0 && used.is_finite(), "{used}");
        assert!(cpu_seconds(u32::MAX).is_nan());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(local_service_pid(dir.path(), "kafka/kafka.pid"), None);
        std::fs::create_dir_all(dir.path().join("kafka")).unwrap();
        std::fs::write(
            dir.path().join("kafka/kafka.pid"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        assert_eq!(
            local_service_pid(dir.path(), "kafka/kafka.pid"),
            Some(std::process::id())
        );
    }
}
