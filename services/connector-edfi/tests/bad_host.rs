//! The Ed-Fi connector against a host that misbehaves (a small HTTP server on
//! 127.0.0.1 in the test): every call is bounded — a Retry-After of years, an
//! `expires_in` that overflows a clock, bodies larger than their cap or endless, a host
//! that never answers, and a token the host refuses right after issuing it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcall_connector_edfi::{EdfiConfig, EdfiConnector};
use rollcall_connector_kit::{ConnectorError, SisConnector, MAX_RETRY_AFTER};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refused_right_after_issue_backs_off_not_ready_and_names_the_credential_problem() {
    let (base, requests) = host(|_, path| match path {
        "/oauth/token" => token(json!(1800)),
        _ => Reply::Full(401, Vec::new(), b"{\"message\":\"invalid token\"}".to_vec()),
    })
    .await;
    // The error, straight from the connector: transient, names the client and the 401,
    // never the secret.
    let mut c = connector(&base, json!({}));
    let m = match c.next_batch(None).await {
        Err(ConnectorError::Transient { message, .. }) => message,
        other => panic!("{other:?}"),
    };
    assert!(m.contains("401") && m.contains("rollcall-client"), "{m}");
    assert!(m.contains("client's key"), "{m}");
    assert!(!m.contains(SECRET), "{m}");

    // Under the kit: retried with backoff (not at full speed), and not ready meanwhile.
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
    let t = Instant::now();
    while retries(&get("/metrics").await.1) < 3.0 {
        assert!(t.elapsed() < Duration::from_secs(30), "no retries seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get("/readyz").await.0,
        503,
        "not ready while stuck retrying"
    );
    assert_eq!(get("/healthz").await.0, 200, "alive: it is retrying");
    // Bounded: measured over two seconds once the backoff has grown.
    let before = requests.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let in_two_s = requests.load(Ordering::SeqCst) - before;
    assert!(
        in_two_s < 40,
        "{in_two_s} requests in 2 s: retrying at full speed"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
