//! The Ed-Fi connector against the SIS simulator's Ed-Fi host (127.0.0.1:0) and the real
//! Kafka. A full load and then day-by-day change windows (the simulator's clock moved
//! with its `SimHandle`) arrive in the raw topics exactly once: the committed records are,
//! as a multiset, exactly what the simulator's change log says each window must publish
//! (natural keys, operations, source versions, Kafka keys), and replaying them leaves
//! exactly the simulator's current records. Both paging styles, a host that caps pages
//! below the requested size, token expiry, and injected 429/500 faults.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rollcall_sis_simulator::edfi::{Faults, ServerOptions, SimHandle};
use rollcall_sis_simulator::World;
use rollcall_testkit::config_with_fresh_topics;
use serde_json::{json, Value};

const SERVED: [&str; 2] = ["d-kc", "d-dc"];

/// Runs the connector once per step of `days` (0 = the initial load at the start day),
/// tracking what each window must publish; then checks the raw topics.
async fn sync_and_check(
    hint: &str,
    world: &World,
    handle: &SimHandle,
    base: &str,
    extra: Value,
    days: &[u32],
) -> (u64, u64) {
    let cfg = config_with_fresh_topics(hint).await;
    let secret = secret_file();
    let section = edfi_section(world, base, secret.path(), extra);
    let (mut expected, mut dead) = (Vec::new(), 0usize);
    let (mut windows, mut floors) = (Vec::new(), Vec::new());
    let (mut records, mut retries) = (0u64, 0u64);
    let mut done: Option<u64> = None;
    for (i, &d) in days.iter().enumerate() {
        handle.advance(d);
        let newest = handle.state().newest_change_version;
        let t = Instant::now();
        let floor =
            rollcall_connector_kit::version_floor(rollcall_connector_kit::observed_now_ms());
        let s = run_once(&cfg, "sim", &section).await;
        eprintln!(
            "{hint}: step {i} (day {}): {} records, {} dead letters, {} batches, {} retries in {:?}",
            handle.day(),
            s.records,
            s.dead_letters,
            s.batches,
            s.retries,
            t.elapsed()
        );
        records += s.records;
        retries += s.retries;
        let min = done.map_or(0, |v| v + 1);
        if newest >= min {
            let (e, d) = expected_window(world, &SERVED, min, newest);
            assert_eq!(
                s.records as usize,
                e.len(),
                "{hint}: step {i} window [{min}, {newest}]"
            );
            assert_eq!(s.dead_letters as usize, d, "{hint}: step {i} dead letters");
            expected.extend(e.iter().cloned());
            windows.push(e);
            floors.push(floor);
            dead += d;
            done = Some(newest);
        } else {
            assert_eq!(s.records, 0, "{hint}: nothing new");
        }
    }
    let pubs: Vec<Pub> = committed_raw(&cfg).into_iter().map(|(p, _)| p).collect();
    assert_exactly(
        rebase_windows(pubs.clone(), &windows, &floors),
        expected,
        hint,
    );
    assert_eq!(
        live_keys(&pubs),
        current_keys(world, &SERVED, handle.day()),
        "{hint}: replaying the raw topics gives the simulator's current records"
    );
    let dls = committed_dead_letters(&cfg);
    assert_eq!(
        dls.len(),
        dead,
        "{hint}: items without a student are dead letters"
    );
    for h in &dls {
        assert_eq!(
            (h.stage.as_str(), h.kind.as_str()),
            ("connector-edfi", "edfi_item_unusable")
        );
        assert!(h.reason.contains("studentReference"), "{}", h.reason);
    }
    assert_eq!(records as usize, pubs.len());
    (records, retries)
}

fn start_day(world: &World) -> chrono::NaiveDate {
    // A few instructional days in: enrollments, the first absences, no-shows not yet
    // purged (their deletes come in the daily windows).
    world.districts[0].first_instructional_day + chrono::Duration::days(3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_paging_full_load_and_daily_windows_arrive_exactly_once_under_a_page_cap() {
    let t = Instant::now();
    let world = two_district_world(3);
    // The host serves at most 30 rows a page; the connector asks for 100.
    let (base, handle) = serve(
        world.clone(),
        ServerOptions {
            start_day: Some(start_day(&world)),
            max_page_size: 30,
            ..ServerOptions::default()
        },
    )
    .await;
    // Initial load, ten school days one by one (late entries, no-show purges,
    // corrections, duplicates), a month, then the rest of the year.
    let days = [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 30, 400];
    let (records, _) = sync_and_check(
        "edfi_offset",
        &world,
        &handle,
        &base,
        json!({"paging": "offset", "page_size": 100}),
        &days,
    )
    .await;
    assert!(handle.state().done);
    assert!(records > 5_000, "{records}");
    eprintln!("offset paging: {records} records in {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_paging_full_load_and_daily_windows_arrive_exactly_once_under_a_page_cap() {
    let t = Instant::now();
    let world = two_district_world(4);
    let (base, handle) = serve(
        world.clone(),
        ServerOptions {
            start_day: Some(start_day(&world)),
            max_page_size: 45,
            ..ServerOptions::default()
        },
    )
    .await;
    let days = [0, 1, 1, 1, 1, 1, 20, 400];
    let (records, _) = sync_and_check(
        "edfi_token",
        &world,
        &handle,
        &base,
        json!({"paging": "token", "page_size": 200, "token_partitions": 3}),
        &days,
    )
    .await;
    assert!(records > 5_000, "{records}");
    eprintln!("token paging: {records} records in {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_and_injected_429_and_500_faults_are_retried_and_nothing_is_lost() {
    let t = Instant::now();
    let world = two_district_world(5);
    let (base, handle) = serve(
        world.clone(),
        ServerOptions {
            start_day: Some(start_day(&world)),
            // Tokens also run out by themselves every two seconds.
            token_ttl_secs: 2,
            faults: Faults {
                rate_429: 0.12,
                rate_500: 0.08,
                retry_after_secs: 0,
                seed: 9,
            },
            ..ServerOptions::default()
        },
    )
    .await;
    // Invalidate every issued token every 150 ms while the connector runs.
    let expirer = {
        let h = handle.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                tokio::time::sleep(Duration::from_millis(150)).await;
                h.expire_tokens();
                n += 1;
                if n >= 10_000 {
                    return n;
                }
            }
        })
    };
    let before = handle.state();
    let (records, retries) = sync_and_check(
        "edfi_faults",
        &world,
        &handle,
        &base,
        json!({"paging": "offset", "page_size": 100}),
        &[0, 1, 1, 1, 400],
    )
    .await;
    expirer.abort();
    let after = handle.state();
    let requests = after.requests - before.requests;
    let faults = after.faults_injected - before.faults_injected;
    // About a fifth of the requests failed; yet every record arrived exactly once
    // (checked above). A failure after some pages of a batch publishes those pages and
    // the next batch retries the request; a failure on a batch's first request is a
    // retry with backoff in the kit.
    assert!(
        faults * 10 >= requests,
        "{faults} faults in {requests} requests"
    );
    assert!(
        retries > 0,
        "some faults reached the kit's retry with backoff"
    );
    assert!(records > 5_000);
    eprintln!(
        "faults: {records} records, {requests} requests, {faults} faults, {retries} kit retries in {:?}",
        t.elapsed()
    );
}
