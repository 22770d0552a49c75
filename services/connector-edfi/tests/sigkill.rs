//! Crash safety of the Ed-Fi connector: the `rollcall-connector-edfi` binary (a separate
//! process, configured by a TOML file plus `ROLLCALL_KAFKA__*` environment overrides, its
//! client secret in the environment variable its config names) is SIGKILLed several
//! times in the middle of the initial load and restarted. The committed raw topics then
//! hold every record of the load exactly once: no gap, no duplicate.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rollcall_sis_simulator::edfi::ServerOptions;
use rollcall_sis_simulator::{generate, CorrectionStyle, DistrictSpec, Feed, SimConfig, World};
use rollcall_testkit::config_with_fresh_topics;

const SERVED: [&str; 2] = ["d-kc", "d-dc"];
const SECRET_VAR: &str = "SIM_EDFI_CLIENT_SECRET";

/// A bigger world than the other tests': a positive-attendance district makes a long
/// initial load (a record for every enrolled day).
fn world() -> Arc<World> {
    let district = |id: &str, lea_id, schools, positive, corrections| DistrictSpec {
        id: id.into(),
        name: format!("{id} ISD"),
        lea_id,
        feed: Feed::Edfi,
        schools,
        students_per_school: 80,
        positive_attendance: positive,
        corrections,
    };
    Arc::new(
        generate(&SimConfig {
            seed: 17,
            malformed_rate: 0.01,
            districts: vec![
                district("d-kc", 255901, 3, false, CorrectionStyle::KeyChange),
                district("d-dc", 255902, 2, true, CorrectionStyle::DeleteCreate),
            ],
            ..SimConfig::default()
        })
        .unwrap(),
    )
}

fn config_file(dir: &std::path::Path, world: &World, base: &str) -> std::path::PathBuf {
    let mut toml = String::from("[connectors.sim]\nkind = \"edfi\"\n");
    toml.push_str(&format!(
        "base_url = \"{base}\"\ndistrict_id = \"d-kc\"\nclient_id = \"rollcall\"\n\
         client_secret_env = \"{SECRET_VAR}\"\npage_size = 100\nrecords_per_batch = 100\nrequests_per_second = 10000\n\
         poll_interval_secs = 1\n"
    ));
    toml.push_str("\n[connectors.sim.school_districts]\n");
    for (school, district) in school_districts(world) {
        toml.push_str(&format!("\"{school}\" = \"{district}\"\n"));
    }
    let path = dir.join("rollcall.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Raw records in the topics including those of aborted transactions.
fn uncommitted_count(cfg: &rollcall_config::Config) -> usize {
    let client = rollcall_kafka::client_config(&cfg.kafka, &rollcall_testkit::secrets());
    let topics = rollcall_kafka::Topics::new(&cfg.kafka.topic_prefix);
    ["attendance", "enrollment", "calendar"]
        .iter()
        .map(|e| {
            rollcall_kafka::read_topic_to_end(&client, &topics.raw(e), false)
                .unwrap()
                .len()
        })
        .sum()
}

fn spawn(cfg: &rollcall_config::Config, file: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_rollcall-connector-edfi"))
        .args(["--config"])
        .arg(file)
        .args(["--once", "--no-progress", "sim"])
        .env("ROLLCALL_KAFKA__BROKERS", &cfg.kafka.brokers)
        .env("ROLLCALL_KAFKA__TOPIC_PREFIX", &cfg.kafka.topic_prefix)
        .env(SECRET_VAR, "rollcall-secret")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start rollcall-connector-edfi")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_the_initial_load_loses_nothing_and_duplicates_nothing() {
    let t = Instant::now();
    let world = world();
    let (base, handle) = serve(
        world.clone(),
        ServerOptions {
            start_day: Some(world.last_day),
            ..ServerOptions::default()
        },
    )
    .await;
    let newest = handle.state().newest_change_version;
    let (expected, dead) = expected_window(&world, &SERVED, 0, newest);
    let pages = expected.len() / 100;
    assert!(pages > 300, "a long load: {pages} pages");

    let cfg = config_with_fresh_topics("edfi_sigkill").await;
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path(), &world, &base);
    let log = dir.path().join("connector.log");

    // Kill after a varying number of data requests since each start (each request is a
    // page, and each page one transaction) and a varying delay (so some kills land inside
    // a transaction), several times during the load.
    let mut kills = 0;
    for (after, delay_ms) in [(40u64, 0u64), (75, 40), (55, 80), (90, 20), (30, 120)] {
        let start = handle.state().requests;
        let spawned = Instant::now();
        let mut child = spawn(&cfg, &file, &log);
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut first_request = None;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the connector exited ({status}) before it was killed:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let n = handle.state().requests;
            if n > start && first_request.is_none() {
                first_request = Some(spawned.elapsed());
            }
            if n >= start + after {
                break;
            }
            assert!(Instant::now() < deadline, "the connector made no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        eprintln!(
            "kill {kills}: first request {:?} after the start, killed after {:?}",
            first_request.unwrap(),
            spawned.elapsed()
        );
    }
    let done_before_last = handle.state().requests;

    // The last run completes the load.
    let mut child = spawn(&cfg, &file, &log);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "final run failed:\n{log_text}");
    let last_run = handle.state().requests - done_before_last;
    assert!(
        last_run + 100 < pages as u64,
        "the restart resumed from its checkpoint, not from the start ({last_run} requests, {pages} pages)"
    );

    let pubs: Vec<Pub> = committed_raw(&cfg).into_iter().map(|(p, _)| p).collect();
    let written = uncommitted_count(&cfg);
    assert!(written >= pubs.len());
    assert_exactly(
        rebase_windows(pubs.clone(), std::slice::from_ref(&expected), &[]),
        expected,
        "after SIGKILLs",
    );
    assert_eq!(committed_dead_letters(&cfg).len(), dead);
    eprintln!(
        "{kills} SIGKILLs during a {pages}-page load; {} records committed exactly once, {} more written in aborted transactions; {:?}",
        pubs.len(),
        written - pubs.len(),
        t.elapsed()
    );
}
