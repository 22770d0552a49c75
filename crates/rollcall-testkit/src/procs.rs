//! Process and service control for chaos tests: a private Kafka broker and ClickHouse
//! server (started by `deploy/local`'s own scripts, on other ports and under another
//! `ROLLCALL_LOCAL_DIR`, so restarting them never disturbs the shared services other
//! tests use), the service binaries (found next to the test binary, built with cargo
//! when missing or older than the sources), and supervised child processes that can be
//! SIGKILLed and restarted.
//!
//! Everything here stops what it started when dropped, also when a test panics.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The repository's root (this crate lives in `crates/rollcall-testkit`).
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn env_port(var: &str, default: u16) -> io::Result<u16> {
    match std::env::var(var) {
        Ok(v) => v.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{var}={v:?} is not a port"),
            )
        }),
        Err(_) => Ok(default),
    }
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    )
    .is_ok()
}

/// Ports and directory of a private Kafka + ClickHouse pair.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub local_dir: PathBuf,
    pub kafka_port: u16,
    pub kafka_controller_port: u16,
    pub clickhouse_http_port: u16,
    pub clickhouse_tcp_port: u16,
}

impl StackOptions {
    /// Defaults chosen away from the shared services (19092/19093/18123/19000), from
    /// common development ports, and below Linux's ephemeral range (32768-60999: a port
    /// there can be taken at any moment by an outgoing connection, and the broker then
    /// fails to bind); each can be overridden with an environment variable
    /// `{prefix}_KAFKA_PORT`, `{prefix}_KAFKA_CONTROLLER_PORT`,
    /// `{prefix}_CLICKHOUSE_HTTP_PORT`, `{prefix}_CLICKHOUSE_TCP_PORT`,
    /// `{prefix}_LOCAL_DIR` (default `<name>` under `ROLLCALL_LOCAL_DIR`, which
    /// defaults to `.local` in the repository, as for deploy/local).
    pub fn from_env(prefix: &str, name: &str) -> io::Result<StackOptions> {
        let local_dir = match std::env::var_os(format!("{prefix}_LOCAL_DIR")) {
            Some(d) => PathBuf::from(d),
            None => std::env::var_os("ROLLCALL_LOCAL_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join(".local"))
                .join(name),
        };
        Ok(StackOptions {
            local_dir,
            kafka_port: env_port(&format!("{prefix}_KAFKA_PORT"), 29392)?,
            kafka_controller_port: env_port(&format!("{prefix}_KAFKA_CONTROLLER_PORT"), 29393)?,
            clickhouse_http_port: env_port(&format!("{prefix}_CLICKHOUSE_HTTP_PORT"), 28323)?,
            clickhouse_tcp_port: env_port(&format!("{prefix}_CLICKHOUSE_TCP_PORT"), 29300)?,
        })
    }
}

/// A private Kafka broker and ClickHouse server with fresh (empty) data, run by
/// `deploy/local/kafka.sh` and `deploy/local/clickhouse.sh`. Both are stopped on drop.
pub struct LocalStack {
    pub opts: StackOptions,
    /// How long each start took (install included), for summaries.
    pub kafka_start: Duration,
    pub clickhouse_start: Duration,
    stopped: bool,
    /// Held for the stack's life: one run at a time per directory.
    _lock: std::fs::File,
}

impl LocalStack {
    /// Stop whatever a previous run left under `opts.local_dir`, wipe the data (Kafka
    /// jars and logs of earlier runs stay), check the ports are free and start both.
    pub fn start(opts: StackOptions) -> io::Result<LocalStack> {
        std::fs::create_dir_all(&opts.local_dir)?;
        // Another run using the same directory (and ports) would stop our services:
        // wait for it (bounded) instead.
        let lock = std::fs::File::create(opts.local_dir.join(".lock"))?;
        let deadline = Instant::now() + Duration::from_secs(20 * 60);
        let mut told = false;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    if !told {
                        eprintln!(
                            "{} is in use by another run; waiting for it (20 min at most)",
                            opts.local_dir.display()
                        );
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!("{} stayed locked by another run", opts.local_dir.display()),
                    ))
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        let mut stack = LocalStack {
            opts,
            kafka_start: Duration::ZERO,
            clickhouse_start: Duration::ZERO,
            stopped: false,
            _lock: lock,
        };
        // Leftovers of a run that could not clean up (its processes are ours by dir).
        stack.script("kafka", "stop")?;
        stack.script("clickhouse", "stop")?;
        for d in ["kafka/data", "clickhouse/data", "clickhouse/tmp"] {
            let p = stack.opts.local_dir.join(d);
            if p.exists() {
                std::fs::remove_dir_all(&p)?;
            }
        }
        for (port, var) in [
            (stack.opts.kafka_port, "KAFKA_PORT"),
            (stack.opts.kafka_controller_port, "KAFKA_CONTROLLER_PORT"),
            (stack.opts.clickhouse_http_port, "CLICKHOUSE_HTTP_PORT"),
            (stack.opts.clickhouse_tcp_port, "CLICKHOUSE_TCP_PORT"),
        ] {
            if port_open(port) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "port {port} is taken by another process; choose another with the \
                         test's ..._{var} environment variable"
                    ),
                ));
            }
        }
        let t = Instant::now();
        stack.script("kafka", "start")?;
        stack.kafka_start = t.elapsed();
        let t = Instant::now();
        stack.script("clickhouse", "start")?;
        stack.clickhouse_start = t.elapsed();
        Ok(stack)
    }

    pub fn kafka_brokers(&self) -> String {
        format!("127.0.0.1:{}", self.opts.kafka_port)
    }

    pub fn clickhouse_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.opts.clickhouse_http_port)
    }

    /// Where the Kafka broker's logs are.
    pub fn kafka_log_dir(&self) -> PathBuf {
        self.opts.local_dir.join("kafka/logs")
    }

    pub fn clickhouse_log_dir(&self) -> PathBuf {
        self.opts.local_dir.join("clickhouse/logs")
    }

    /// Stop the broker (SIGTERM, a clean shutdown) and start it again on the same data;
    /// returns how long the broker was away.
    pub fn restart_kafka(&self) -> io::Result<Duration> {
        let t = Instant::now();
        self.script("kafka", "stop")?;
        self.script("kafka", "start")?;
        Ok(t.elapsed())
    }

    /// Stop ClickHouse and start it again on the same data; returns how long it was away.
    pub fn restart_clickhouse(&self) -> io::Result<Duration> {
        let t = Instant::now();
        self.script("clickhouse", "stop")?;
        self.script("clickhouse", "start")?;
        Ok(t.elapsed())
    }

    /// Stop both (also done on drop).
    pub fn stop(&mut self) -> io::Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let k = self.script("kafka", "stop");
        let c = self.script("clickhouse", "stop");
        k.and(c)
    }

    /// `deploy/local/<service>.sh <action>` with this stack's ports and directory. The
    /// script bounds its own waits (120 s to start, 60 s to stop).
    fn script(&self, service: &str, action: &str) -> io::Result<()> {
        let script = repo_root().join(format!("deploy/local/{service}.sh"));
        let out = Command::new("bash")
            .arg(&script)
            .arg(action)
            .env("ROLLCALL_LOCAL_DIR", &self.opts.local_dir)
            .env("ROLLCALL_KAFKA_PORT", self.opts.kafka_port.to_string())
            .env(
                "ROLLCALL_KAFKA_CONTROLLER_PORT",
                self.opts.kafka_controller_port.to_string(),
            )
            .env(
                "ROLLCALL_CLICKHOUSE_HTTP_PORT",
                self.opts.clickhouse_http_port.to_string(),
            )
            .env(
                "ROLLCALL_CLICKHOUSE_TCP_PORT",
                self.opts.clickhouse_tcp_port.to_string(),
            )
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "{} {action} failed ({}): {}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping the private Kafka/ClickHouse: {e}");
        }
    }
}

/// The newest modification time of a Rust source or manifest under `dir`.
fn newest_source(dir: &Path, newest: &mut SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            let name = e.file_name();
            if name != "target" && name != "tests" && name != ".git" {
                newest_source(&p, newest);
            }
        } else if p
            .extension()
            .is_some_and(|x| x == "rs" || x == "toml" || x == "sql" || x == "avsc")
        {
            if let Ok(m) = meta.modified() {
                *newest = (*newest).max(m);
            }
        }
    }
}

/// The paths of the service binaries `bins` (of the packages `packages`), in the target
/// directory this test binary was built into (`target/<profile>/`). They are built with
/// `cargo build --locked --bins -p ...` (same profile) when one is missing or older than
/// a source file of the workspace's crates, services or schemas, so a test run after a
/// service change never runs stale code. `ROLLCALL_TEST_NO_BUILD=1` only looks.
pub fn service_binaries(packages: &[&str], bins: &[&str]) -> io::Result<Vec<PathBuf>> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| io::Error::other("cannot locate the target directory"))?
        .to_path_buf();
    let paths: Vec<PathBuf> = bins.iter().map(|b| profile_dir.join(b)).collect();
    let root = repo_root();
    let mut newest = SystemTime::UNIX_EPOCH;
    for d in ["crates", "services", "schemas"] {
        newest_source(&root.join(d), &mut newest);
    }
    if let Ok(m) = std::fs::metadata(root.join("Cargo.lock")).and_then(|m| m.modified()) {
        newest = newest.max(m);
    }
    let stale = paths.iter().any(|p| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .map_or(true, |m| m < newest)
    });
    if stale && std::env::var_os("ROLLCALL_TEST_NO_BUILD").is_none() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&root)
            .args(["build", "--locked", "--bins"])
            .arg("--target-dir")
            .arg(profile_dir.parent().unwrap_or(&profile_dir));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        for p in packages {
            cmd.args(["-p", p]);
        }
        eprintln!("building the service binaries: {cmd:?}");
        let status = cmd.stdin(Stdio::null()).status()?;
        if !status.success() {
            return Err(io::Error::other(format!("{cmd:?} failed: {status}")));
        }
    }
    for p in &paths {
        if !p.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("service binary {} is missing", p.display()),
            ));
        }
    }
    Ok(paths)
}

/// Copies of `paths` in `dir`, so that every restart during a test runs the same code
/// even when someone rebuilds the target directory meanwhile (a shared checkout).
pub fn copy_binaries(paths: &[PathBuf], dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    paths
        .iter()
        .map(|p| {
            let to = dir.join(p.file_name().unwrap_or_default());
            std::fs::copy(p, &to)?;
            Ok(to)
        })
        .collect()
}

/// How to (re)start one service process.
#[derive(Debug, Clone)]
pub struct ProcSpec {
    /// A short name for logs and summaries (`normalizer`, `connector sim-edfi`, ...).
    pub name: String,
    /// The process kind for counts (`normalizer`, `rollup`, `connector`).
    pub kind: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Set on the child; every other `ROLLCALL_<SECTION>__<KEY>` override and
    /// `ROLLCALL_CONFIG` of this process is removed, so the child reads only its file.
    pub env: Vec<(String, String)>,
    /// Also removed from the child's environment (e.g. secrets of other services).
    pub remove_env: Vec<String>,
    /// stdout and stderr of every start are appended here.
    pub log: PathBuf,
}

/// A service process that can be SIGKILLed and restarted; killed on drop.
pub struct Supervised {
    pub spec: ProcSpec,
    child: Option<Child>,
    pub starts: u32,
    pub kills: u32,
    /// Exits nobody asked for: (when, status, the log's tail).
    pub unexpected_exits: Vec<(Instant, ExitStatus, String)>,
}

impl Supervised {
    pub fn start(spec: ProcSpec) -> io::Result<Supervised> {
        let mut s = Supervised {
            spec,
            child: None,
            starts: 0,
            kills: 0,
            unexpected_exits: Vec::new(),
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> io::Result<()> {
        if let Some(dir) = self.spec.log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log)?;
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&self.spec.args);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k == "ROLLCALL_CONFIG" || (k.starts_with("ROLLCALL_") && k.contains("__")) {
                cmd.env_remove(k.as_ref());
            }
        }
        for k in &self.spec.remove_env {
            cmd.env_remove(k);
        }
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        self.child = Some(cmd.spawn().map_err(|e| {
            io::Error::other(format!(
                "starting {} ({}): {e}",
                self.spec.name,
                self.spec.program.display()
            ))
        })?);
        self.starts += 1;
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL now (if running), then start again.
    pub fn kill_and_restart(&mut self) -> io::Result<()> {
        self.check();
        if let Some(mut c) = self.child.take() {
            c.kill()?; // SIGKILL on Unix
            c.wait()?;
            self.kills += 1;
        }
        self.spawn()
    }

    /// Notice an exit nobody asked for: record it (with the log's tail) and restart, as
    /// a supervisor would. Returns whether it had exited.
    pub fn check(&mut self) -> bool {
        let Some(c) = self.child.as_mut() else {
            return false;
        };
        match c.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                let tail = log_tail(&self.spec.log, 4000);
                self.unexpected_exits.push((Instant::now(), status, tail));
                if let Err(e) = self.spawn() {
                    eprintln!("restarting {} after its exit: {e}", self.spec.name);
                }
                true
            }
            _ => false,
        }
    }

    /// SIGTERM and wait up to `grace` for a clean exit, then SIGKILL. Returns the exit
    /// status when the process stopped by itself within `grace`.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The last `max` bytes of a log file (lossy UTF-8), for failure messages.
pub fn log_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// A small deterministic generator (SplitMix64) for seeded chaos schedules.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        SeededRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo)
        }
    }
}
