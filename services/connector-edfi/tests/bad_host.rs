//! The Ed-Fi connector against a host that misbehaves (a small HTTP server on
//! 127.0.0.1 in the test): every call is bounded — a Retry-After of years, an
//! `expires_in` that overflows a clock, bodies larger than their cap or endless, a host
//! that never answers, and a token the host refuses right after issuing it. Nothing
//! the host answers is retried forever: 401s with fresh tokens, unparseable 200 bodies
//! and impossible change versions are transient a bounded number of times in a row,
//! then fatal — never a panic, never a checkpoint saved from them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcall_connector_edfi::{
    EdfiConfig, EdfiConnector, MAX_FRESH_TOKEN_401S, MAX_UNUSABLE_ANSWERS,
};
use rollcall_connector_kit::{Batch, Checkpoint, ConnectorError, SisConnector, MAX_RETRY_AFTER};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "s3cr3t-never-shown";

/// What the host answers.
#[derive(Clone)]
enum Reply {
    /// Status, extra headers, body.
    Full(u16, Vec<(&'static str, String)>, Vec<u8>),
    /// 200 with a body that never ends (no Content-Length).
    Endless,
    /// Accept, read the request, never answer.
    Silent,
}

fn ok_json(v: serde_json::Value) -> Reply {
    Reply::Full(200, Vec::new(), serde_json::to_vec(&v).unwrap())
}

fn token(expires_in: serde_json::Value) -> Reply {
    ok_json(json!({"access_token": "tok", "token_type": "bearer", "expires_in": expires_in}))
}

/// Serves `route(method, path)` on 127.0.0.1:0, one response per connection; counts
/// requests.
async fn host(
    route: impl Fn(&str, &str) -> Reply + Send + Sync + 'static,
) -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let route = Arc::new(route);
    let count = Arc::new(AtomicU64::new(0));
    let n = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let route = route.clone();
            let n = n.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => head.extend_from_slice(&buf[..k]),
                    }
                }
                n.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&head).into_owned();
                let mut first = text.lines().next().unwrap_or("").split(' ');
                let method = first.next().unwrap_or("").to_string();
                let path = first.next().unwrap_or("").to_string();
                let path = path.split('?').next().unwrap_or("").to_string();
                match route(&method, &path) {
                    Reply::Full(status, headers, body) => {
                        let mut out = format!(
                            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                            body.len()
                        );
                        for (k, v) in headers {
                            out.push_str(&format!("{k}: {v}\r\n"));
                        }
                        out.push_str("\r\n");
                        let _ = sock.write_all(out.as_bytes()).await;
                        let _ = sock.write_all(&body).await;
                    }
                    Reply::Endless => {
                        let _ = sock
                            .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n[")
                            .await;
                        let chunk = vec![b' '; 64 * 1024];
                        while sock.write_all(&chunk).await.is_ok() {}
                    }
                    Reply::Silent => {
                        let _ = sock.read(&mut buf).await; // until the client gives up
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), count)
}

fn connector(base: &str, extra: serde_json::Value) -> EdfiConnector {
    let mut v = json!({
        "base_url": base,
        "district_id": "d1",
        "client_id": "rollcall-client",
        "client_secret_env": "UNUSED",
        "page_size": 10,
        "requests_per_second": 10_000,
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    let cfg: EdfiConfig = serde_json::from_value(v).unwrap();
    EdfiConnector::new("bad", cfg, SECRET.into()).unwrap()
}

fn versions(newest: i64) -> Reply {
    ok_json(json!({"oldestChangeVersion": 0, "newestChangeVersion": newest}))
}

#[tokio::test]
async fn a_retry_after_of_years_is_cut_to_five_minutes() {
    let (base, _) = host(|_, path| match path {
        "/oauth/token" => token(json!(1800)),
        _ => Reply::Full(429, vec![("Retry-After", "999999999".into())], Vec::new()),
    })
    .await;
    let mut c = connector(&base, json!({}));
    match c.next_batch(None).await {
        Err(ConnectorError::Transient { retry_after, .. }) => {
            // before: 999,999,999 s (31 years) of waiting
            assert_eq!(retry_after, Some(MAX_RETRY_AFTER));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_expires_in_beyond_any_clock_does_not_panic() {
    // u64::MAX seconds: before, `Instant::now() + life` overflowed and panicked.
    for expires_in in [
        json!(u64::MAX),
        json!(1e300),
        json!(-5),
        json!("3600"),
        json!(null),
    ] {
        let e = expires_in.clone();
        let (base, _) = host(move |_, path| match path {
            "/oauth/token" => token(e.clone()),
            "/changeQueries/v1/availableChangeVersions" => versions(0),
            _ => ok_json(json!([])),
        })
        .await;
        let mut c = connector(&base, json!({}));
        let b = c
            .next_batch(None)
            .await
            .unwrap_or_else(|e| panic!("expires_in {expires_in}: {e}"));
        assert!(b.records.is_empty());
        // and the token is used again (or refreshed) without trouble
        c.next_batch(Some(&b.checkpoint)).await.unwrap();
    }
}

#[tokio::test]
async fn a_page_over_its_cap_fails_the_request_with_the_fix() {
    // A valid page of ~2 MiB with a 1 MiB cap: before, read whole (no cap at all).
    let item = json!({"eventDate": "x".repeat(1000)});
    let page = serde_json::to_vec(&vec![item; 2100]).unwrap();
    assert!(page.len() > 2 << 20);
    for chunked in [false, true] {
        let page = page.clone();
        let (base, _) = host(move |_, path| match path {
            "/oauth/token" => token(json!(1800)),
            "/changeQueries/v1/availableChangeVersions" => versions(5),
            _ if chunked => Reply::Endless,
            _ => Reply::Full(200, Vec::new(), page.clone()),
        })
        .await;
        let mut c = connector(&base, json!({"max_page_bytes": 1 << 20}));
        let t = Instant::now();
        match c.next_batch(None).await {
            Err(ConnectorError::Fatal(m)) => {
                assert!(m.contains("1048576-byte limit"), "{m}");
                assert!(m.contains("page_size"), "{m}");
                assert!(m.contains("/data/v3/ed-fi/calendarDates"), "{m}");
            }
            other => panic!("chunked {chunked}: {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }
}

#[tokio::test]
async fn an_endless_token_response_fails_fast() {
    let (base, _) = host(|_, path| match path {
        "/oauth/token" => Reply::Endless,
        _ => versions(0),
    })
    .await;
    let mut c = connector(&base, json!({}));
    let t = Instant::now();
    let e = c.next_batch(None).await.unwrap_err().to_string();
    assert!(
        e.contains("/oauth/token") && e.contains("65536-byte limit"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_host_that_never_answers_times_out() {
    let (base, _) = host(|_, _| Reply::Silent).await;
    let mut c = connector(&base, json!({"request_timeout_secs": 0.5}));
    let t = Instant::now();
    match c.next_batch(None).await {
        Err(ConnectorError::Transient { message, .. }) => {
            assert!(message.contains("/oauth/token"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

const ATTENDANCE: &str = "/data/v3/ed-fi/studentSchoolAttendanceEvents";

fn attendance_item(student: &str) -> serde_json::Value {
    json!({
        "id": format!("e-{student}"),
        "schoolReference": {"schoolId": 255901001},
        "sessionReference": {"schoolId": 255901001, "schoolYear": 2025, "sessionName": "Fall"},
        "studentReference": {"studentUniqueId": student},
        "attendanceEventCategoryDescriptor":
            "uri://ed-fi.org/AttendanceEventCategoryDescriptor#Unexcused Absence",
        "eventDate": "2024-09-03"
    })
}

/// Calls `next_batch` from `cp` until it returns a batch or a fatal error, at most
/// `max_calls` times; the transient messages seen on the way and the outcome.
async fn until_not_transient(
    c: &mut EdfiConnector,
    cp: Option<&Checkpoint>,
    max_calls: u32,
) -> (Vec<String>, Result<Batch, String>) {
    let mut transient = Vec::new();
    for _ in 0..max_calls {
        match c.next_batch(cp).await {
            Ok(b) => return (transient, Ok(b)),
            Err(ConnectorError::Fatal(m)) => return (transient, Err(m)),
            Err(ConnectorError::Transient { message, .. }) => transient.push(message),
        }
    }
    panic!("still transient after {max_calls} calls: {transient:?}");
}

#[tokio::test]
async fn a_401_with_every_fresh_token_is_fatal_after_the_bound_naming_the_client_not_the_secret() {
    // Only the attendance pages are refused; every other request succeeds, as in the
    // corpus case api-401-loop (before: transient forever, 2 requests that succeed
    // between each pair of 401s).
    let (base, _) = host(|method, path| match (method, path) {
        ("POST", "/oauth/token") => token(json!(1800)),
        (_, "/changeQueries/v1/availableChangeVersions") => versions(10),
        (_, ATTENDANCE) => Reply::Full(401, Vec::new(), b"{}".to_vec()),
        _ => ok_json(json!([])),
    })
    .await;
    let mut c = connector(&base, json!({}));
    let (transient, end) = until_not_transient(&mut c, None, 2 * MAX_FRESH_TOKEN_401S).await;
    assert_eq!(
        transient.len() as u32,
        MAX_FRESH_TOKEN_401S - 1,
        "{transient:?}"
    );
    for m in &transient {
        assert!(m.contains("401") && m.contains("rollcall-client"), "{m}");
        assert!(m.contains("client's key"), "{m}");
        assert!(!m.contains(SECRET), "{m}");
    }
    let m = end.expect_err("fatal");
    assert!(m.contains("401") && m.contains("rollcall-client"), "{m}");
    assert!(m.contains("claim set") && m.contains(ATTENDANCE), "{m}");
    assert!(!m.contains(SECRET), "{m}");
}

#[tokio::test]
async fn a_401_now_and_then_never_adds_up_to_the_bound() {
    // Each request path is refused twice (a stale and a fresh token), then answered:
    // the answer starts that path's count again, so nothing is ever fatal.
    let per_path = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        u64,
    >::new()));
    let (base, _) = host(move |method, path| match (method, path) {
        ("POST", "/oauth/token") => token(json!(1800)),
        (_, "/changeQueries/v1/availableChangeVersions") => versions(0),
        _ => {
            let mut m = per_path.lock().unwrap();
            let k = m.entry(path.to_string()).or_insert(0);
            *k += 1;
            if !(*k).is_multiple_of(3) {
                Reply::Full(401, Vec::new(), b"{}".to_vec())
            } else {
                ok_json(json!([]))
            }
        }
    })
    .await;
    let mut c = connector(&base, json!({}));
    let mut cp: Option<Checkpoint> = None;
    let (mut transient, mut batches) = (0, 0);
    for _ in 0..(6 * MAX_FRESH_TOKEN_401S) {
        match c.next_batch(cp.as_ref()).await {
            Ok(b) => {
                batches += 1;
                cp = Some(b.checkpoint)
            }
            Err(ConnectorError::Transient { .. }) => transient += 1,
            Err(ConnectorError::Fatal(m)) => panic!("fatal: {m}"),
        }
    }
    assert!(transient >= MAX_FRESH_TOKEN_401S, "{transient}");
    assert!(batches > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_kit_fresh_token_401s_back_off_not_ready_then_stop_loudly() {
    let (base, requests) = host(|_, path| match path {
        "/oauth/token" => token(json!(1800)),
        _ => Reply::Full(401, Vec::new(), b"{\"message\":\"invalid token\"}".to_vec()),
    })
    .await;
    let cfg = rollcall_testkit::config_with_fresh_topics("edfi_401").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stop = tokio_util::sync::CancellationToken::new();
    let run = {
        let (cfg, stop) = (cfg.clone(), stop.clone());
        let c = connector(&base, json!({}));
        tokio::spawn(async move {
            rollcall_connector_kit::run(
                Box::new(c),
                &cfg,
                &rollcall_testkit::secrets(),
                rollcall_connector_kit::RunOptions {
                    http: Some(("127.0.0.1".into(), port)),
                    stop_when_caught_up: false,
                    show_progress: false,
                },
                stop,
            )
            .await
        })
    };
    let get = |path: &'static str| async move {
        match reqwest::get(format!("http://127.0.0.1:{port}{path}")).await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    };
    let retries = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("rollcall_connector_retries_total{connector=\"edfi:bad\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Retrying: not ready (the health server answers throughout).
    let t = Instant::now();
    while retries(&get("/metrics").await.1) < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(30), "no retries seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get("/readyz").await.0, 503, "not ready while retrying");
    // Then a fatal error, bounded: the run ends by itself (before: retried forever).
    let err = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run stops by itself")
        .unwrap()
        .expect_err("fatal");
    let m = format!("{err:#}");
    assert!(m.contains("401") && m.contains("rollcall-client"), "{m}");
    assert!(m.contains("claim set"), "{m}");
    assert!(!m.contains(SECRET), "{m}");
    assert_eq!(get("/healthz").await.0, 503, "broken after the fatal error");
    assert_eq!(
        retries(&get("/metrics").await.1),
        f64::from(MAX_FRESH_TOKEN_401S - 1),
        "retried with backoff in between"
    );
    // token + GET twice per attempt, nothing more
    assert!(
        requests.load(Ordering::SeqCst) <= 4 * u64::from(MAX_FRESH_TOKEN_401S),
        "{} requests",
        requests.load(Ordering::SeqCst)
    );
    stop.cancel();
}

/// A host whose first attendance page answers `bad` once, then the page.
async fn page_bad_once(bad: Reply) -> String {
    let served = Arc::new(AtomicU64::new(0));
    let (base, _) = host(move |method, path| match (method, path) {
        ("POST", "/oauth/token") => token(json!(1800)),
        (_, "/changeQueries/v1/availableChangeVersions") => versions(10),
        (_, ATTENDANCE) => match served.fetch_add(1, Ordering::SeqCst) {
            0 => bad.clone(),
            1 => ok_json(json!([attendance_item("S1"), attendance_item("S2")])),
            _ => ok_json(json!([])),
        },
        _ => ok_json(json!([])),
    })
    .await;
    base
}

#[tokio::test]
async fn an_unparseable_page_once_is_retried_not_fatal() {
    let html = Reply::Full(
        200,
        vec![("Content-Type", "text/html".into())],
        b"<html><body>502 Bad Gateway</body></html>".to_vec(),
    );
    let empty = Reply::Full(200, Vec::new(), Vec::new());
    let truncated = Reply::Full(
        200,
        Vec::new(),
        br#"[{"id":"a","schoolReference":{"schoo"#.to_vec(),
    );
    for (what, bad) in [("html", html), ("empty", empty), ("truncated", truncated)] {
        let base = page_bad_once(bad).await;
        let mut c = connector(&base, json!({}));
        // before: fatal at once
        let (transient, end) = until_not_transient(&mut c, None, MAX_UNUSABLE_ANSWERS).await;
        assert_eq!(transient.len(), 1, "{what}: {transient:?}");
        assert!(
            transient[0].contains("not a JSON array"),
            "{what}: {}",
            transient[0]
        );
        let b = end.unwrap_or_else(|m| panic!("{what}: {m}"));
        assert_eq!(b.records.len(), 2, "{what}");
    }
}

#[tokio::test]
async fn an_unparseable_page_that_persists_is_fatal_after_the_bound() {
    let (base, _) = host(|method, path| match (method, path) {
        ("POST", "/oauth/token") => token(json!(1800)),
        (_, "/changeQueries/v1/availableChangeVersions") => versions(10),
        (_, ATTENDANCE) => Reply::Full(200, Vec::new(), b"<html/>".to_vec()),
        _ => ok_json(json!([])),
    })
    .await;
    let mut c = connector(&base, json!({}));
    let (transient, end) = until_not_transient(&mut c, None, 2 * MAX_UNUSABLE_ANSWERS).await;
    assert_eq!(
        transient.len() as u32,
        MAX_UNUSABLE_ANSWERS - 1,
        "{transient:?}"
    );
    let m = end.expect_err("fatal");
    assert!(
        m.contains("not a JSON array") && m.contains(ATTENDANCE),
        "{m}"
    );
    assert!(m.contains("in a row"), "{m}");
}

/// A host answering availableChangeVersions with `(oldest, newest)`, three items.
async fn host_with_versions(oldest: i64, newest: i64) -> String {
    let (base, _) = host(move |method, path| match (method, path) {
        ("POST", "/oauth/token") => token(json!(1800)),
        (_, "/changeQueries/v1/availableChangeVersions") => {
            ok_json(json!({"oldestChangeVersion": oldest, "newestChangeVersion": newest}))
        }
        _ => ok_json(json!([])),
    })
    .await;
    base
}

#[tokio::test]
async fn impossible_change_versions_are_refused_never_saved_never_a_panic() {
    for (oldest, newest) in [
        (0, i64::MAX),
        (0, i64::MAX / 4),
        (50, 10),
        (-3, 10),
        (0, -7),
    ] {
        let base = host_with_versions(oldest, newest).await;
        let mut c = connector(&base, json!({}));
        // before: (0, i64::MAX) read a window and saved done_version i64::MAX (every
        // call after it panicked); (50, 10) re-synced [0, 10] forever.
        let (transient, end) = until_not_transient(&mut c, None, 2 * MAX_UNUSABLE_ANSWERS).await;
        let m = match end {
            Err(m) => m,
            Ok(b) => panic!(
                "({oldest}, {newest}): a batch, checkpoint {}",
                b.checkpoint.0
            ),
        };
        assert_eq!(
            transient.len() as u32,
            MAX_UNUSABLE_ANSWERS - 1,
            "{transient:?}"
        );
        assert!(m.contains("impossible answer"), "{m}");
        assert!(m.contains(&newest.to_string()), "{m}");
    }
}

#[tokio::test]
async fn possible_change_versions_still_work() {
    // nothing yet
    let base = host_with_versions(0, -1).await;
    let b = connector(&base, json!({})).next_batch(None).await.unwrap();
    assert!(b.caught_up && b.records.is_empty());
    // history empty after a purge: oldest = newest + 1
    let base = host_with_versions(11, 10).await;
    let b = connector(&base, json!({})).next_batch(None).await.unwrap();
    assert_eq!(b.checkpoint.0["done_version"], json!(10));
    // large, but the version math holds it
    let base = host_with_versions(0, 1 << 50).await;
    let b = connector(&base, json!({})).next_batch(None).await.unwrap();
    assert_eq!(b.checkpoint.0["done_version"], json!(1i64 << 50));
}

#[tokio::test]
async fn a_purge_past_the_checkpoint_re_syncs_once() {
    let base = host_with_versions(8, 10).await;
    let mut c = connector(&base, json!({}));
    let cp = Checkpoint(json!({"done_version": 5, "window": null}));
    let b = c.next_batch(Some(&cp)).await.unwrap();
    assert_eq!(b.checkpoint.0["done_version"], json!(10), "re-read [0, 10]");
    let again = c.next_batch(Some(&b.checkpoint)).await.unwrap();
    assert!(again.caught_up, "no second re-sync");
    assert_eq!(again.checkpoint, b.checkpoint);
}

#[tokio::test]
async fn a_checkpoint_saved_from_an_impossible_answer_is_a_clear_error_not_a_panic() {
    let base = host_with_versions(0, 10).await;
    for cp in [
        json!({"done_version": i64::MAX, "window": null}),
        json!({"done_version": -9, "window": null}),
        json!({"done_version": null, "window": {
            "min": 0, "max": i64::MAX, "step": 0, "offset": 0, "tokens": null,
            "token": null, "done": 0, "total": null, "version_base": 1_800_000_000_000_000_000i64
        }}),
    ] {
        let mut c = connector(&base, json!({}));
        // before: the first one panicked ("attempt to add with overflow") on every start
        match c.next_batch(Some(&Checkpoint(cp.clone()))).await {
            Err(ConnectorError::Fatal(m)) => {
                assert!(m.contains("checkpoint") && m.contains("reset"), "{m}")
            }
            other => panic!("{cp}: {:?}", other.map(|b| b.checkpoint)),
        }
    }
}

#[tokio::test]
async fn a_total_count_of_u64_max_on_every_page_does_not_overflow() {
    let served = Arc::new(AtomicU64::new(0));
    let (base, _) = host(move |method, path| match (method, path) {
        ("POST", "/oauth/token") => token(json!(1800)),
        (_, "/changeQueries/v1/availableChangeVersions") => versions(10),
        (_, ATTENDANCE) => {
            let body = match served.fetch_add(1, Ordering::SeqCst) {
                0 => json!([attendance_item("S1")]),
                1 => json!([attendance_item("S2")]),
                _ => json!([]),
            };
            Reply::Full(
                200,
                vec![("Total-Count", u64::MAX.to_string())],
                serde_json::to_vec(&body).unwrap(),
            )
        }
        _ => ok_json(json!([])),
    })
    .await;
    let mut c = connector(&base, json!({}));
    let b = c.next_batch(None).await.unwrap();
    assert_eq!(b.records.len(), 2);
    assert_eq!(b.progress.unwrap().total, Some(u64::MAX));
}
