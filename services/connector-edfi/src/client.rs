//! The HTTP side of an Ed-Fi ODS/API host: OAuth2 client credentials (refreshed before
//! expiry, and at once on a 401), rate limiting, and mapping of HTTP failures to
//! transient (429, 5xx, network, a 401 right after a fresh token) or fatal (other 4xx)
//! connector errors.

use std::time::{Duration, Instant};

use rollcall_connector_kit::{ConnectorError, RateLimiter};
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
    #[serde(default)]
    expires_in: Option<u64>,
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
}

impl EdfiClient {
    pub fn new(
        base_url: &str,
        client_id: String,
        client_secret: String,
        use_snapshot: bool,
        limiter: RateLimiter,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
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
        })
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
        let url = format!("{}/oauth/token", self.base);
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
        let body: TokenResponse = resp
            .json()
            .await
            .map_err(|e| ConnectorError::transient(format!("token response from {url}: {e}")))?;
        let life = Duration::from_secs(body.expires_in.unwrap_or(1800));
        let margin = (life / 10).min(Duration::from_secs(60));
        let until = Instant::now() + life.saturating_sub(margin);
        self.token = Some((body.access_token.clone(), until));
        tracing::debug!(expires_in_s = life.as_secs(), "Ed-Fi access token obtained");
        Ok(body.access_token)
    }

    /// GET `path` (below the base URL) with `query`; on 401 refresh the token and retry
    /// once.
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
        // one. Bad credentials fail at the token endpoint (fatal), and a client without
        // access to a resource gets 403 (fatal).
        Err(ConnectorError::transient(format!(
            "GET {url}: 401 again right after a fresh token; retrying with a new one"
        )))
    }

    pub async fn available_change_versions(
        &mut self,
    ) -> Result<AvailableChangeVersions, ConnectorError> {
        let resp = self
            .get("/changeQueries/v1/availableChangeVersions", &[])
            .await?;
        resp.json()
            .await
            .map_err(|e| ConnectorError::transient(format!("availableChangeVersions: {e}")))
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
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ConnectorError::transient(format!("GET {path}: reading body: {e}")))?;
        let items: Vec<Box<RawValue>> = serde_json::from_slice(&bytes).map_err(|e| {
            ConnectorError::fatal(format!(
                "GET {path}: the body is not a JSON array ({e}); is base_url the ODS/API root?"
            ))
        })?;
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
        let p: Partitions = resp.json().await.map_err(|e| {
            ConnectorError::fatal(format!(
                "GET {path}: unexpected body ({e}); does this host support token paging (ODS/API 7.3+)? \
                 Otherwise set paging = \"offset\""
            ))
        })?;
        Ok(p.page_tokens)
    }
}

/// 2xx passes; 429 and 5xx are transient (honouring Retry-After); other codes are fatal.
async fn check(resp: reqwest::Response, url: &str) -> Result<reqwest::Response, ConnectorError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = resp
        .headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    if status.as_u16() == 429 || status.is_server_error() {
        Err(ConnectorError::Transient {
            message: format!("{url}: {status} {body}"),
            retry_after,
        })
    } else {
        Err(ConnectorError::fatal(format!("{url}: {status} {body}")))
    }
}
