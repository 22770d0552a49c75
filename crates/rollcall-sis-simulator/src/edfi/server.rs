// Helpers return a ready `Response` as their error so handlers can `?` out early; the
// size of that error is irrelevant next to an HTTP round trip.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::json::{key_values, write_resource_json};
use crate::config::Feed;
use crate::model::{Op, Resource, World};
use crate::rng::{mix, unit};

/// How the server behaves. `Default` gives a well-behaved host: 25 rows per page by
/// default, at most 500, 30-minute tokens, no faults, the clock on manual advance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerOptions {
    /// District ids served (one ODS holding them all, one change-version sequence).
    /// `None`: every district whose feed is Ed-Fi.
    pub districts: Option<Vec<String>>,
    /// The simulated day the server starts on (default: the world's first day).
    pub start_day: Option<NaiveDate>,
    pub client_id: String,
    pub client_secret: String,
    /// Lifetime of an access token (`expires_in`).
    pub token_ttl_secs: u64,
    /// Rows per page when `limit`/`pageSize` is not given (Ed-Fi: 25).
    pub default_page_size: usize,
    /// Largest page served (real hosts: 500). A larger `limit` is cut to this silently,
    /// or answered 400 when `reject_over_max_page_size` is set (as the ODS/API does).
    pub max_page_size: usize,
    pub reject_over_max_page_size: bool,
    pub faults: Faults,
    /// Advance the simulated clock by one day every this many milliseconds of wall
    /// time (in addition to `POST /_sim/advance`). `None`: manual only.
    pub day_every_ms: Option<u64>,
    /// Whether `Use-Snapshot: true` is supported (otherwise such reads get 404, as on a
    /// host with no snapshot).
    pub snapshots: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            districts: None,
            start_day: None,
            client_id: "rollcall".into(),
            client_secret: "rollcall-secret".into(),
            token_ttl_secs: 1800,
            default_page_size: 25,
            max_page_size: 500,
            reject_over_max_page_size: false,
            faults: Faults::default(),
            day_every_ms: None,
            snapshots: true,
        }
    }
}

/// Injected failures of data and change-query requests, decided by a hash of `seed`
/// and the request's sequence number (so a sequential client sees the same faults on
/// every run).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of requests answered 429 Too Many Requests with `Retry-After`.
    pub rate_429: f64,
    /// Share of requests answered 500.
    pub rate_500: f64,
    pub retry_after_secs: u64,
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            rate_429: 0.0,
            rate_500: 0.0,
            retry_after_secs: 1,
            seed: 0,
        }
    }
}

/// What `GET /_sim/state` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimState {
    pub day: NaiveDate,
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    pub newest_change_version: u64,
    /// The clock has reached the last day: every change is visible.
    pub done: bool,
    pub districts: Vec<String>,
    pub requests: u64,
    /// Data requests answered with an injected 429 or 500.
    #[serde(default)]
    pub faults_injected: u64,
}

struct Inner {
    day: NaiveDate,
    /// Within the day, only changes up to this version are shown (`None`: all of them).
    reveal_limit: Option<u64>,
    tokens: HashMap<String, Instant>,
    tokens_issued: u64,
    faults: Faults,
    cache: Vec<(CacheKey, Arc<Vec<u32>>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CacheKey {
    resource: Resource,
    min: u64,
    max: u64,
    newest: u64,
}

struct Shared {
    world: Arc<World>,
    opts: ServerOptions,
    served: Vec<bool>,
    served_ids: Vec<String>,
    requests: AtomicU64,
    faults_injected: AtomicU64,
    inner: Mutex<Inner>,
}

/// Controls a running server's clock, tokens and faults from the same process.
#[derive(Clone)]
pub struct SimHandle(Arc<Shared>);

impl SimHandle {
    pub fn day(&self) -> NaiveDate {
        self.0.inner.lock().expect("lock").day
    }

    /// Moves the clock `days` forward (clamped to the world's last day); returns the day.
    pub fn advance(&self, days: u32) -> NaiveDate {
        let mut inner = self.0.inner.lock().expect("lock");
        let next = inner.day + chrono::Duration::days(i64::from(days));
        inner.day = next.min(self.0.world.last_day);
        inner.day
    }

    /// Sets the clock to `day` (clamped to the world's first and last day).
    pub fn set_day(&self, day: NaiveDate) -> NaiveDate {
        let mut inner = self.0.inner.lock().expect("lock");
        inner.day = day.clamp(self.0.world.first_day, self.0.world.last_day);
        inner.day
    }

    /// Shows only the changes up to change version `limit` (if it is below the day's
    /// newest), so a day's changes can appear gradually, as they would in a real SIS
    /// during a school day. `None` shows the whole day again.
    pub fn set_reveal_limit(&self, limit: Option<u64>) {
        self.0.inner.lock().expect("lock").reveal_limit = limit;
    }

    /// Invalidates every issued token (clients must get a new one).
    pub fn expire_tokens(&self) {
        self.0.inner.lock().expect("lock").tokens.clear();
    }

    pub fn set_faults(&self, faults: Faults) {
        self.0.inner.lock().expect("lock").faults = faults;
    }

    pub fn state(&self) -> SimState {
        let day = self.day();
        SimState {
            day,
            first_day: self.0.world.first_day,
            last_day: self.0.world.last_day,
            newest_change_version: self.0.newest_visible(),
            done: day >= self.0.world.last_day,
            districts: self.0.served_ids.clone(),
            requests: self.0.requests.load(Ordering::Relaxed),
            faults_injected: self.0.faults_injected.load(Ordering::Relaxed),
        }
    }
}

/// The Ed-Fi host over one world.
pub struct EdfiServer {
    shared: Arc<Shared>,
}

impl EdfiServer {
    /// Panics if `opts.districts` names a district the world does not have.
    pub fn new(world: Arc<World>, opts: ServerOptions) -> Self {
        let served: Vec<bool> = world
            .districts
            .iter()
            .map(|d| match &opts.districts {
                Some(ids) => ids.contains(&d.spec.id),
                None => d.spec.feed == Feed::Edfi,
            })
            .collect();
        if let Some(ids) = &opts.districts {
            for id in ids {
                assert!(
                    world.district_index(id).is_some(),
                    "ServerOptions.districts names {id:?}, which the world does not have"
                );
            }
        }
        let served_ids = world
            .districts
            .iter()
            .zip(&served)
            .filter(|(_, s)| **s)
            .map(|(d, _)| d.spec.id.clone())
            .collect();
        let day = opts
            .start_day
            .unwrap_or(world.first_day)
            .clamp(world.first_day, world.last_day);
        let inner = Inner {
            day,
            reveal_limit: None,
            tokens: HashMap::new(),
            tokens_issued: 0,
            faults: opts.faults,
            cache: Vec::new(),
        };
        EdfiServer {
            shared: Arc::new(Shared {
                world,
                opts,
                served,
                served_ids,
                requests: AtomicU64::new(0),
                faults_injected: AtomicU64::new(0),
                inner: Mutex::new(inner),
            }),
        }
    }

    pub fn handle(&self) -> SimHandle {
        SimHandle(self.shared.clone())
    }

    /// The axum router (for embedding; [`EdfiServer::serve`] runs it).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(discovery))
            .route("/oauth/token", post(token))
            .route(
                "/changeQueries/v1/availableChangeVersions",
                get(available_change_versions),
            )
            .route("/data/v3/ed-fi/{resource}", get(list))
            .route("/data/v3/ed-fi/{resource}/{sub}", get(sub_list))
            .route("/_sim/state", get(sim_state))
            .route("/_sim/advance", post(sim_advance))
            .route("/_sim/expire-tokens", post(sim_expire_tokens))
            .route("/_sim/faults", post(sim_faults))
            .with_state(self.shared.clone())
    }

    /// Serves until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        self.serve_with_shutdown(listener, std::future::pending())
            .await
    }

    /// Serves until `shutdown` completes.
    pub async fn serve_with_shutdown(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let ticker = self.shared.opts.day_every_ms.map(|ms| {
            let handle = self.handle();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(ms.max(1)));
                every.tick().await;
                loop {
                    every.tick().await;
                    let state = handle.state();
                    if state.done {
                        break;
                    }
                    handle.advance(1);
                }
            })
        });
        let router = self.router();
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
        if let Some(t) = ticker {
            t.abort();
        }
        result
    }
}

/// Serves `world` as an Ed-Fi host on `listener` until the process ends. Bind port 0
/// and read `listener.local_addr()` first to learn the port.
pub async fn serve(
    listener: tokio::net::TcpListener,
    world: Arc<World>,
    opts: ServerOptions,
) -> std::io::Result<()> {
    EdfiServer::new(world, opts).serve(listener).await
}

// ---------------------------------------------------------------------------------------
// Responses

fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    let body = json!({
        "detail": detail.into(),
        "type": format!("urn:ed-fi:api:{}", status.canonical_reason().unwrap_or("error").to_lowercase().replace(' ', "-")),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "correlationId": null,
    });
    (status, Json(body)).into_response()
}

fn unauthorized(detail: &str) -> Response {
    let mut r = problem(StatusCode::UNAUTHORIZED, detail);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    r
}

impl Shared {
    /// Fault injection for data requests: `Some(response)` when this request fails.
    fn fault(&self) -> Option<Response> {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        let faults = self.inner.lock().expect("lock").faults;
        let u = unit(mix(faults.seed ^ 0xfa17, n));
        if u < faults.rate_429 + faults.rate_500 {
            self.faults_injected.fetch_add(1, Ordering::Relaxed);
        }
        if u < faults.rate_429 {
            let mut r = problem(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests (simulated).",
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(faults.retry_after_secs),
            );
            return Some(r);
        }
        if u < faults.rate_429 + faults.rate_500 {
            return Some(problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "An unexpected error occurred on the server (simulated).",
            ));
        }
        None
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), Response> {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Err(unauthorized("Authorization header is missing."));
        };
        let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        else {
            return Err(unauthorized("Authorization header is not a bearer token."));
        };
        let inner = self.inner.lock().expect("lock");
        match inner.tokens.get(token.trim()) {
            Some(expiry) if *expiry > Instant::now() => Ok(()),
            Some(_) => Err(unauthorized("Access token has expired.")),
            None => Err(unauthorized("Invalid or expired access token.")),
        }
    }

    /// Fault, auth and snapshot checks of every data request; returns the newest
    /// change version the request sees.
    fn admit(&self, headers: &HeaderMap) -> Result<u64, Response> {
        if let Some(r) = self.fault() {
            return Err(r);
        }
        self.authorize(headers)?;
        let snapshot = headers
            .get("use-snapshot")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        if snapshot && !self.opts.snapshots {
            return Err(problem(
                StatusCode::NOT_FOUND,
                "Snapshot not found: this host has no snapshot (Use-Snapshot is not supported).",
            ));
        }
        // The simulated state only changes when the clock or the reveal limit moves, so
        // a snapshot at the current boundary is exactly the live state.
        Ok(self.newest_visible())
    }

    fn newest_visible(&self) -> u64 {
        let (day, limit) = {
            let inner = self.inner.lock().expect("lock");
            (inner.day, inner.reveal_limit)
        };
        let newest = self.world.newest_cv_through(day);
        limit.map_or(newest, |l| l.min(newest))
    }

    fn served_record(&self, record: u32) -> bool {
        self.served[self.world.records[record as usize].district as usize]
    }

    /// Log indexes of the current records of `resource` whose latest change version
    /// (as of `newest`) is within [min, max], ordered by record id. Cached.
    fn window(&self, resource: Resource, min: u64, max: u64, newest: u64) -> Arc<Vec<u32>> {
        let max = max.min(newest);
        // A record superseded after `max` drops out of the window, so the result
        // depends on `newest` too.
        let full_key = CacheKey {
            resource,
            min,
            max,
            newest,
        };
        if let Some((_, v)) = self
            .inner
            .lock()
            .expect("lock")
            .cache
            .iter()
            .find(|(k, _)| *k == full_key)
        {
            return v.clone();
        }
        let world = &self.world;
        let lo = min.max(1);
        let mut out: Vec<u32> = Vec::new();
        if lo <= max {
            for cv in lo..=max {
                let idx = (cv - 1) as usize;
                let c = &world.log[idx];
                if world.records[c.record as usize].resource != resource
                    || !self.served_record(c.record)
                    || matches!(c.op, Op::Delete)
                    || c.next_cv.is_some_and(|n| n <= newest)
                {
                    continue;
                }
                out.push(idx as u32);
            }
        }
        out.sort_by_key(|&i| world.log[i as usize].record);
        let out = Arc::new(out);
        let mut inner = self.inner.lock().expect("lock");
        if inner.cache.len() >= 16 {
            inner.cache.remove(0);
        }
        inner.cache.push((full_key, out.clone()));
        out
    }
}

// ---------------------------------------------------------------------------------------
// Query parameters

struct Params<'a>(&'a HashMap<String, String>);

impl Params<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn u64(&self, name: &str) -> Result<Option<u64>, Response> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
                problem(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "The request is invalid: {name} must be a non-negative integer, not {v:?}."
                    ),
                )
            }),
        }
    }

    fn bool(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// (min, max) change versions; max defaults to "everything".
    fn window(&self) -> Result<(u64, u64), Response> {
        Ok((
            self.u64("minChangeVersion")?.unwrap_or(0),
            self.u64("maxChangeVersion")?.unwrap_or(u64::MAX),
        ))
    }
}

fn page_size(shared: &Shared, requested: Option<u64>, name: &str) -> Result<usize, Response> {
    let max = shared.opts.max_page_size;
    match requested {
        None => Ok(shared.opts.default_page_size.min(max)),
        Some(n) if n as usize > max && shared.opts.reject_over_max_page_size => Err(problem(
            StatusCode::BAD_REQUEST,
            format!("The request is invalid: {name} must be omitted or set to a value between 0 and {max}."),
        )),
        Some(n) => Ok((n as usize).min(max)),
    }
}

fn encode_token(lo: u32, hi: u32) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{{\"minId\":{lo},\"maxId\":{hi}}}"))
}

fn decode_token(token: &str) -> Option<(u32, u32)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim().trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some((
        u32::try_from(v.get("minId")?.as_u64()?).ok()?,
        u32::try_from(v.get("maxId")?.as_u64()?).ok()?,
    ))
}

fn json_array(items: Vec<Value>) -> Response {
    Json(Value::Array(items)).into_response()
}

/// A page of resources: the bytes `json_array` would give for their `resource_json`
/// values, written straight from the world.
fn resource_page(world: &World, log_indexes: impl ExactSizeIterator<Item = u32>) -> Response {
    let mut body = Vec::with_capacity(2 + log_indexes.len() * 512);
    body.push(b'[');
    for (n, i) in log_indexes.enumerate() {
        if n > 0 {
            body.push(b',');
        }
        write_resource_json(world, i as usize, &mut body);
    }
    body.push(b']');
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Bytes::from(body),
    )
        .into_response()
}

fn with_total(mut r: Response, total: Option<usize>) -> Response {
    if let Some(t) = total {
        r.headers_mut()
            .insert("Total-Count", HeaderValue::from(t as u64));
    }
    r
}

// ---------------------------------------------------------------------------------------
// Handlers

async fn discovery(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let base = format!("http://{host}");
    Json(json!({
        "version": "7.3",
        "informationalVersion": "7.3",
        "suite": "3",
        "build": concat!("rollcall-sis-simulator ", env!("CARGO_PKG_VERSION")),
        "apiMode": "Sandbox",
        "dataModels": [{"name": "Ed-Fi", "version": "5.0.0", "informationalVersion": "The Ed-Fi Data Model 5.0"}],
        "urls": {
            "dependencies": format!("{base}/metadata/data/v3/dependencies"),
            "openApiMetadata": format!("{base}/metadata"),
            "oauth": format!("{base}/oauth/token"),
            "dataManagementApi": format!("{base}/data/v3"),
            "changeQueries": format!("{base}/changeQueries/v1"),
        },
        "simulator": {"districts": s.served_ids, "schoolYear": s.world.config.school_year},
    }))
    .into_response()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form_fields(body: &[u8], headers: &HeaderMap) -> HashMap<String, String> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if is_json {
        if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) {
            return m
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
                .collect();
        }
        return HashMap::new();
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

async fn token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = form_fields(&body, &headers);
    let oauth_error = |status: StatusCode, error: &str, description: &str| {
        (
            status,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    if fields.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        });
    let (id, secret) = match basic {
        Some(pair) => pair,
        None => (
            fields.get("client_id").cloned().unwrap_or_default(),
            fields.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    if id != s.opts.client_id || secret != s.opts.client_secret {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client id or secret.",
        );
    }
    let mut inner = s.inner.lock().expect("lock");
    inner.tokens_issued += 1;
    let t = format!(
        "{:016x}{:016x}",
        mix(s.world.config.seed ^ 0x70c3, inner.tokens_issued),
        mix(inner.tokens_issued, 0x70c3)
    );
    let now = Instant::now();
    inner.tokens.retain(|_, exp| *exp > now);
    inner
        .tokens
        .insert(t.clone(), now + Duration::from_secs(s.opts.token_ttl_secs));
    Json(json!({
        "access_token": t,
        "expires_in": s.opts.token_ttl_secs,
        "token_type": "bearer",
    }))
    .into_response()
}

async fn available_change_versions(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match s.admit(&headers) {
        Ok(newest) => {
            Json(json!({"oldestChangeVersion": 0, "newestChangeVersion": newest})).into_response()
        }
        Err(r) => r,
    }
}

async fn list(
    State(s): State<Arc<Shared>>,
    Path(resource): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let newest = match s.admit(&headers) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let Some(resource) = Resource::from_path(&resource) else {
        return problem(
            StatusCode::NOT_FOUND,
            format!("Resource {resource:?} is not served."),
        );
    };
    let p = Params(&q);
    let result = (|| -> Result<Response, Response> {
        let (min, max) = p.window()?;
        let items = s.window(resource, min, max, newest);
        let total = p.bool("totalCount").then_some(items.len());
        let world = &s.world;
        if let Some(token) = p.get("pageToken") {
            let Some((lo, hi)) = decode_token(token) else {
                return Err(problem(
                    StatusCode::BAD_REQUEST,
                    "The request is invalid: pageToken is not a token this host issued.",
                ));
            };
            let size = page_size(&s, p.u64("pageSize")?, "pageSize")?;
            let start = items.partition_point(|&i| world.log[i as usize].record < lo);
            let in_range: Vec<u32> = items[start..]
                .iter()
                .copied()
                .take_while(|&i| world.log[i as usize].record <= hi)
                .take(size + 1)
                .collect();
            let page = in_range.iter().copied().take(size);
            let mut r = with_total(resource_page(world, page), total);
            if in_range.len() > size {
                let next = world.log[in_range[size] as usize].record;
                if let Ok(v) = HeaderValue::from_str(&encode_token(next, hi)) {
                    r.headers_mut().insert("Next-Page-Token", v);
                }
            }
            return Ok(r);
        }
        let offset = p.u64("offset")?.unwrap_or(0) as usize;
        let limit = page_size(&s, p.u64("limit")?, "limit")?;
        let page = items.iter().copied().skip(offset).take(limit);
        Ok(with_total(resource_page(world, page), total))
    })();
    result.unwrap_or_else(|e| e)
}

async fn sub_list(
    State(s): State<Arc<Shared>>,
    Path((resource, sub)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let newest = match s.admit(&headers) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let Some(resource) = Resource::from_path(&resource) else {
        return problem(
            StatusCode::NOT_FOUND,
            format!("Resource {resource:?} is not served."),
        );
    };
    let p = Params(&q);
    let result = (|| -> Result<Response, Response> {
        let (min, max) = p.window()?;
        let world = &s.world;
        match sub.as_str() {
            "partitions" => {
                let number = p.u64("number")?.unwrap_or(1);
                if !(1..=200).contains(&number) {
                    return Err(problem(
                        StatusCode::BAD_REQUEST,
                        "The request is invalid: number must be between 1 and 200.",
                    ));
                }
                let items = s.window(resource, min, max, newest);
                let n = items.len();
                let parts = (number as usize).min(n.max(1));
                let mut tokens = Vec::new();
                for k in 0..parts {
                    let a = k * n / parts;
                    let b = (k + 1) * n / parts;
                    if a < b {
                        let lo = world.log[items[a] as usize].record;
                        let hi = world.log[items[b - 1] as usize].record;
                        tokens.push(encode_token(lo, hi));
                    }
                }
                Ok(Json(json!({"pageTokens": tokens})).into_response())
            }
            "deletes" | "keyChanges" => {
                let deletes = sub == "deletes";
                let hi = max.min(newest);
                let mut rows: Vec<Value> = Vec::new();
                let offset = p.u64("offset")?.unwrap_or(0) as usize;
                let limit = page_size(&s, p.u64("limit")?, "limit")?;
                let mut total = 0usize;
                for cv in min.max(1)..=hi {
                    let idx = (cv - 1) as usize;
                    let c = &world.log[idx];
                    if world.records[c.record as usize].resource != resource
                        || !s.served_record(c.record)
                    {
                        continue;
                    }
                    let row = if deletes {
                        if !matches!(c.op, Op::Delete) {
                            continue;
                        }
                        let Some(old) = world.previous_fact(idx) else {
                            continue;
                        };
                        (total >= offset && rows.len() < limit).then(|| {
                            json!({
                                "id": world.edfi_id(c.record),
                                "changeVersion": c.cv,
                                "keyValues": key_values(world, old),
                            })
                        })
                    } else {
                        if !world.is_key_change(idx) {
                            continue;
                        }
                        (total >= offset && rows.len() < limit).then(|| {
                            json!({
                                "id": world.edfi_id(c.record),
                                "changeVersion": c.cv,
                                "oldKeyValues": key_values(world, world.previous_fact(idx).expect("key change")),
                                "newKeyValues": key_values(world, world.fact_at(idx).expect("upsert")),
                            })
                        })
                    };
                    total += 1;
                    if let Some(r) = row {
                        rows.push(r);
                    }
                }
                Ok(with_total(
                    json_array(rows),
                    p.bool("totalCount").then_some(total),
                ))
            }
            other => Err(problem(
                StatusCode::NOT_FOUND,
                format!("{other:?} is not an endpoint of {}.", resource.path()),
            )),
        }
    })();
    result.unwrap_or_else(|e| e)
}

async fn sim_state(State(s): State<Arc<Shared>>) -> Response {
    Json(SimHandle(s).state()).into_response()
}

async fn sim_advance(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let p = Params(&q);
    let handle = SimHandle(s);
    if let Some(to) = p.get("to") {
        match NaiveDate::parse_from_str(to, "%Y-%m-%d") {
            Ok(d) => {
                handle.set_day(d);
            }
            Err(_) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    format!("to={to:?} is not a YYYY-MM-DD date."),
                );
            }
        }
    } else {
        let days = match p.u64("days") {
            Ok(d) => d.unwrap_or(1),
            Err(r) => return r,
        };
        handle.advance(u32::try_from(days).unwrap_or(u32::MAX));
    }
    Json(handle.state()).into_response()
}

async fn sim_expire_tokens(State(s): State<Arc<Shared>>) -> Response {
    SimHandle(s).expire_tokens();
    StatusCode::NO_CONTENT.into_response()
}

async fn sim_faults(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let p = Params(&q);
    let mut faults = s.inner.lock().expect("lock").faults;
    let rate = |name: &str, current: f64| -> Result<f64, Response> {
        match p.get(name) {
            None => Ok(current),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    problem(
                        StatusCode::BAD_REQUEST,
                        format!("{name}={v:?} must be a number within 0..=1."),
                    )
                }),
        }
    };
    faults.rate_429 = match rate("rate429", faults.rate_429) {
        Ok(v) => v,
        Err(r) => return r,
    };
    faults.rate_500 = match rate("rate500", faults.rate_500) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match p.u64("retryAfter") {
        Ok(Some(v)) => faults.retry_after_secs = v,
        Ok(None) => {}
        Err(r) => return r,
    }
    s.inner.lock().expect("lock").faults = faults;
    Json(faults).into_response()
}
