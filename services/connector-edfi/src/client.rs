//! The HTTP side of an Ed-Fi ODS/API host: OAuth2 client credentials (refreshed before
//! expiry, and at once on a 401), rate limiting, and mapping of HTTP failures to
//! transient (429, 5xx, network, a 401 right after a fresh token) or fatal (other 4xx)
//! connector errors.
//!
//! Every call is bounded: a connect timeout and a total timeout per request (body
//! included); bodies are read in chunks up to a cap (`max_page_bytes` for pages,
//! [`MAX_SMALL_BODY_BYTES`] for tokens, versions, partitions and error bodies), and a
//! body over its cap fails that request with an error saying which and how to fix it;
//! `Retry-After` is honoured up to the kit's `MAX_RETRY_AFTER` (5 minutes); a token's
//! `expires_in` is read as at most [`MAX_TOKEN_LIFE`].
//!
//! Nothing a host answers is retried forever: an answer that cannot be used (a 200
//! body that does not parse — an HTML error page, an empty or truncated body — or an
//! impossible change-version answer) is transient, and fatal once the same request has
//! been answered so [`MAX_UNUSABLE_ANSWERS`] times in a row; a 401 with a token just
//! issued is transient, and fatal after [`MAX_FRESH_TOKEN_401S`] in a row for the same
//! request. A usable answer to that request starts its count again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rollcall_connector_kit::{ConnectorError, RateLimiter, MAX_RETRY_AFTER};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A page of items, each kept as the exact bytes the host sent.
pub struct Page {
    pub items: Vec<Box<RawValue>>,
    pub next_page_token: Option<String>,
    pub total_count: Option<u64>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Seconds; read leniently (a number or a numeric string), see [`token_life`].
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// The largest token, change-version, partitions or error body read (64 KiB).
pub const MAX_SMALL_BODY_BYTES: usize = 64 * 1024;

/// An unusable answer (unparseable 200 body, impossible change versions) to the same
/// request this many times in a row is fatal; fewer are retried with backoff.
pub const MAX_UNUSABLE_ANSWERS: u32 = 5;

/// A request refused with 401 this many times in a row, each time with a token issued
/// for it, is fatal: the credentials are accepted but their tokens are not (the
/// client's key lacks access to the API: its claim set or education organizations).
pub const MAX_FRESH_TOKEN_401S: u32 = 5;

/// The availableChangeVersions request (its key in the counts of unusable answers).
pub const VERSIONS_PATH: &str = "/changeQueries/v1/availableChangeVersions";

const TOKEN_PATH: &str = "/oauth/token";

/// A token is used for at most a day, whatever `expires_in` says.
pub const MAX_TOKEN_LIFE: Duration = Duration::from_secs(24 * 3600);

/// The life of a token: `expires_in` seconds, at most [`MAX_TOKEN_LIFE`]; 30 minutes
/// when it is missing or not a number of seconds; none when zero or negative.
fn token_life(expires_in: Option<&serde_json::Value>) -> Duration {
    let secs = match expires_in {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match secs {
        Some(s) if s.is_finite() => {
            Duration::from_secs_f64(s.clamp(0.0, MAX_TOKEN_LIFE.as_secs_f64()))
        }
        _ => Duration::from_secs(1800),
    }
}

/// The bounds of every request to one host.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect_timeout: Duration,
    /// From sending the request to the last byte of the body.
    pub request_timeout: Duration,
    /// The largest page body read.
    pub max_page_bytes: usize,
}

#[derive(Deserialize)]
pub struct AvailableChangeVersions {
    #[serde(rename = "oldestChangeVersion")]
    pub oldest: i64,
    #[serde(rename = "newestChangeVersion")]
    pub newest: i64,
}

pub struct EdfiClient {
    http: reqwest::Client,
    base: String,
    client_id: String,
    client_secret: String,
    use_snapshot: bool,
    token: Option<(String, Instant)>,
    limiter: RateLimiter,
    limits: Limits,
    /// Unusable answers in a row, per request path (a usable answer removes its entry).
    unusable: HashMap<String, u32>,
    /// 401s with a fresh token in a row, per request path.
    refused: HashMap<String, u32>,
}

/// Bump `key`'s count in `counts`; the new count.
fn strike(counts: &mut HashMap<String, u32>, key: &str) -> u32 {
    let n = counts.entry(key.to_string()).or_insert(0);
    *n = n.saturating_add(1);
    *n
}

impl EdfiClient {
    pub fn new(
        base_url: &str,
        client_id: String,
        client_secret: String,
        use_snapshot: bool,
        limiter: RateLimiter,
        limits: Limits,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(limits.request_timeout)
            .connect_timeout(limits.connect_timeout)
            .user_agent(concat!(
                "rollcall-connector-edfi/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(EdfiClient {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            client_id,
            client_secret,
            use_snapshot,
            token: None,
            limiter,
            limits,
            unusable: HashMap::new(),
            refused: HashMap::new(),
        })
    }

    /// The error for an answer to `key` that cannot be used (`why`, which must not
    /// quote the body): transient, fatal once [`MAX_UNUSABLE_ANSWERS`] in a row.
    fn unusable_answer(&mut self, key: &str, why: String) -> ConnectorError {
        let n = strike(&mut self.unusable, key);
        if n >= MAX_UNUSABLE_ANSWERS {
            self.unusable.remove(key);
            ConnectorError::fatal(format!(
                "{why} — {n} answers in a row, giving up (the limit is {MAX_UNUSABLE_ANSWERS})"
            ))
        } else {
            ConnectorError::transient(format!(
                "{why} — retrying ({n} of {MAX_UNUSABLE_ANSWERS} unusable answers in a row \
                 before giving up)"
            ))
        }
    }

    /// `key` was answered usably: its count of unusable answers starts again.
    fn usable_answer(&mut self, key: &str) {
        self.unusable.remove(key);
    }

    /// A valid access token, fetched or refreshed when it has less than a minute (or a
    /// tenth of its life) left.
    async fn token(&mut self) -> Result<String, ConnectorError> {
        if let Some((t, until)) = &self.token {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        self.limiter.until_ready().await;
        let url = format!("{}{TOKEN_PATH}", self.base);
        let resp = self
            .http
            .post(&url)
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| ConnectorError::transient(format!("POST {url}: {e}")))?;
        let status = resp.status();
        if status.as_u16() == 401 || status.as_u16() == 400 || status.as_u16() == 403 {
            return Err(ConnectorError::fatal(format!(
                "the Ed-Fi host refused client `{}` at {url} ({status}); check client_id and the secret",
                self.client_id
            )));
        }
        let resp = check(resp, &url).await?;
        let bytes = read_capped(resp, MAX_SMALL_BODY_BYTES, &format!("POST {url}")).await?;
        // The error says what is wrong, never what the host sent (it may hold a token).
        let body: TokenResponse = match serde_json::from_slice(&bytes) {
            Ok(b) => b,
            Err(e) => {
                let why = format!(
                    "POST {url}: the token response is not {{\"access_token\": ..., \"expires_in\": ...}} \
                     (line {}, column {}); is base_url the ODS/API root?",
                    e.line(),
                    e.column()
                );
                return Err(self.unusable_answer(TOKEN_PATH, why));
            }
        };
        self.usable_answer(TOKEN_PATH);
        let life = token_life(body.expires_in.as_ref());
        let margin = (life / 10).min(Duration::from_secs(60));
        let now = Instant::now();
        let until = now.checked_add(life.saturating_sub(margin)).unwrap_or(now);
        self.token = Some((body.access_token.clone(), until));
        tracing::debug!(expires_in_s = life.as_secs(), "Ed-Fi access token obtained");
        Ok(body.access_token)
    }

    /// GET `path` (below the base URL) with `query`; on 401 refresh the token and retry
    /// once (a second 401 counts towards [`MAX_FRESH_TOKEN_401S`] for `path`).
    async fn get(
        &mut self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<reqwest::Response, ConnectorError> {
        let url = format!("{}{path}", self.base);
        for attempt in 0..2 {
            let token = self.token().await?;
            self.limiter.until_ready().await;
            let mut req = self.http.get(&url).bearer_auth(token).query(query);
            if self.use_snapshot {
                req = req.header("Use-Snapshot", "true");
            }
            let resp = req
                .send()
                .await
                .map_err(|e| ConnectorError::transient(format!("GET {url}: {e}")))?;
            if resp.status().as_u16() == 401 {
                self.token = None;
                if attempt == 0 {
                    tracing::info!(%url, "401: refreshing the access token and retrying once");
                    continue;
                }
                break;
            }
            self.refused.remove(path);
            if resp.status().as_u16() == 404 && self.use_snapshot {
                return Err(ConnectorError::fatal(format!(
                    "GET {url}: 404 with Use-Snapshot: the host has no snapshot; \
                     set use_snapshot = false for this host or ask its operator to enable snapshots"
                )));
            }
            return check(resp, &url).await;
        }
        // A token refused right after it was issued was most likely invalidated in
        // between (a host restart, a token cache flush): try again later with another
        // one — with the kit's backoff, the connector not ready meanwhile. Bad
        // credentials fail at the token endpoint (fatal), and a client without access
        // to a resource gets 403 (fatal) — or, from some hosts, 401 with every token:
        // after MAX_FRESH_TOKEN_401S in a row for this request, that is what it is.
        let n = strike(&mut self.refused, path);
        if n >= MAX_FRESH_TOKEN_401S {
            self.refused.remove(path);
            return Err(ConnectorError::fatal(format!(
                "GET {url}: 401 Unauthorized {n} times in a row, each time with a token just \
                 issued to client `{}`: the host accepts the credentials but not their tokens \
                 for this request — most likely the client's key has no access to it (its \
                 claim set or education organization permissions on the host); fix those on \
                 the host, then start the connector again",
                self.client_id
            )));
        }
        Err(ConnectorError::transient(format!(
            "GET {url}: 401 Unauthorized again with a token just issued to client `{}`: the host \
             accepts the credentials but refuses its own token (tokens invalidated, or the \
             client's key has no access to this API); retrying with backoff ({n} of \
             {MAX_FRESH_TOKEN_401S} in a row before giving up) — check the client's key and claim \
             set on the host if this persists",
            self.client_id
        )))
    }

    /// The host's change versions, checked: `newest ≥ −1` (−1: nothing yet),
    /// `0 ≤ oldest ≤ newest + 1`, and a window `[0, newest]` from the version `base`
    /// must fit the version math (`WindowVersions::fits`). Anything else is an
    /// impossible answer: refused like an unparseable one (never used, so never in a
    /// checkpoint).
    pub async fn available_change_versions(
        &mut self,
        base: i64,
    ) -> Result<AvailableChangeVersions, ConnectorError> {
        let what = format!("GET {VERSIONS_PATH}");
        let resp = self.get(VERSIONS_PATH, &[]).await?;
        let bytes = read_capped(resp, MAX_SMALL_BODY_BYTES, &what).await?;
        let v: AvailableChangeVersions = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return Err(self.unusable_answer(
                    VERSIONS_PATH,
                    format!(
                    "{what}: not {{\"oldestChangeVersion\": n, \"newestChangeVersion\": n}} ({e})"
                ),
                ))
            }
        };
        let impossible = if v.newest < -1 || v.oldest < 0 {
            Some("a change version is negative".to_string())
        } else if v.oldest > v.newest.saturating_add(1) {
            Some("the oldest available change version is above the newest".to_string())
        } else if !crate::WindowVersions::fits(base, 0, v.newest) {
            Some(format!(
                "newestChangeVersion is too large for rollcall's record versions (4 per change \
                 version above the window's base {base} must fit in an i64: at most {})",
                max_newest(base)
            ))
        } else {
            None
        };
        if let Some(why) = impossible {
            return Err(self.unusable_answer(
                VERSIONS_PATH,
                format!(
                    "{what}: impossible answer oldestChangeVersion {}, newestChangeVersion {}: \
                     {why}; refused (nothing read or saved from it)",
                    v.oldest, v.newest
                ),
            ));
        }
        self.usable_answer(VERSIONS_PATH);
        Ok(v)
    }

    /// One page of `path` (`/data/v3/ed-fi/{resource}[/deletes|/keyChanges]`).
    pub async fn page(
        &mut self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Page, ConnectorError> {
        let resp = self.get(path, query).await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let next_page_token = header("Next-Page-Token").filter(|t| !t.is_empty());
        let total_count = header("Total-Count").and_then(|v| v.parse().ok());
        let bytes = read_capped(
            resp,
            self.limits.max_page_bytes,
            &format!("GET {path} (query {query:?})"),
        )
        .await?;
        // An HTML error page, an empty or a truncated body from a proxy is usually
        // gone on the next request; the same answer again and again is not.
        let items: Vec<Box<RawValue>> = match serde_json::from_slice(&bytes) {
            Ok(items) => items,
            Err(e) => {
                let why = format!(
                    "GET {path}: the body is not a JSON array ({e}); is base_url the ODS/API root?"
                );
                return Err(self.unusable_answer(path, why));
            }
        };
        self.usable_answer(path);
        Ok(Page {
            items,
            next_page_token,
            total_count,
        })
    }

    /// Page tokens for `resource` in a change-version window (ODS/API 7.3+).
    pub async fn partitions(
        &mut self,
        resource: &str,
        number: u32,
        min: i64,
        max: i64,
    ) -> Result<Vec<String>, ConnectorError> {
        #[derive(Deserialize)]
        struct Partitions {
            #[serde(rename = "pageTokens")]
            page_tokens: Vec<String>,
        }
        let path = format!("/data/v3/ed-fi/{resource}/partitions");
        let resp = self
            .get(
                &path,
                &[
                    ("number", number.to_string()),
                    ("minChangeVersion", min.to_string()),
                    ("maxChangeVersion", max.to_string()),
                ],
            )
            .await?;
        let bytes = read_capped(resp, MAX_SMALL_BODY_BYTES, &format!("GET {path}")).await?;
        let p: Partitions = match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(e) => {
                let why = format!(
                    "GET {path}: unexpected body ({e}); does this host support token paging \
                     (ODS/API 7.3+)? Otherwise set paging = \"offset\""
                );
                return Err(self.unusable_answer(&path, why));
            }
        };
        self.usable_answer(&path);
        Ok(p.page_tokens)
    }
}

/// The largest newestChangeVersion a window `[0, newest]` from `base` can hold.
fn max_newest(base: i64) -> i64 {
    (i64::MAX.saturating_sub(base).saturating_sub(3) / 4).max(-1)
}

/// 2xx passes; 429 and 5xx are transient (honouring Retry-After); other codes are fatal.
async fn check(resp: reqwest::Response, url: &str) -> Result<reqwest::Response, ConnectorError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = retry_after(resp.headers().get("Retry-After"));
    // A little of the body says what the host complained about; no more is read.
    let body = read_capped(resp, MAX_SMALL_BODY_BYTES, url)
        .await
        .unwrap_or_default();
    let body: String = String::from_utf8_lossy(&body).chars().take(300).collect();
    if status.as_u16() == 429 || status.is_server_error() {
        Err(ConnectorError::Transient {
            message: format!("{url}: {status} {body}"),
            retry_after,
        })
    } else {
        Err(ConnectorError::fatal(format!("{url}: {status} {body}")))
    }
}

/// `Retry-After` in seconds, at most the kit's `MAX_RETRY_AFTER` (5 minutes); an
/// HTTP-date or anything else unreadable is ignored (the backoff applies).
fn retry_after(v: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    let secs = v?.to_str().ok()?.trim().parse::<u64>().ok()?;
    let asked = Duration::from_secs(secs);
    if asked > MAX_RETRY_AFTER {
        tracing::warn!(
            asked_s = secs,
            cap_s = MAX_RETRY_AFTER.as_secs(),
            "Retry-After longer than the cap; waiting the cap"
        );
    }
    Some(asked.min(MAX_RETRY_AFTER))
}

/// The body of `resp`, read chunk by chunk, failing as soon as it passes `cap` bytes
/// (a host sending an endless or huge body cannot exhaust memory). A body over the cap
/// is fatal: the same request would bring the same body.
async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
    what: &str,
) -> Result<Vec<u8>, ConnectorError> {
    let too_large = |n: String| {
        ConnectorError::fatal(format!(
            "{what}: the response body is {n} bytes, over the {cap}-byte limit for it; \
             for pages lower page_size (or raise max_page_bytes)"
        ))
    };
    if let Some(n) = resp.content_length() {
        if n > cap as u64 {
            return Err(too_large(n.to_string()));
        }
    }
    let mut body = Vec::with_capacity(resp.content_length().map_or(8192, |n| n as usize));
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if body.len() + c.len() > cap {
                    return Err(too_large(format!("more than {}", body.len() + c.len())));
                }
                body.extend_from_slice(&c);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                let why = if e.is_timeout() {
                    "timed out reading the body"
                } else {
                    "reading the body failed"
                };
                return Err(ConnectorError::transient(format!("{what}: {why}: {e}")));
            }
        }
    }
}
