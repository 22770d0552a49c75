//! The Ed-Fi ODS/API connector. Syncs calendar dates, student school associations and
//! school attendance events through Change Queries: an initial full load, then windows
//! of change versions, each processed as key changes, then changes, then deletes.
//! Only Ed-Fi logic lives here; publishing and checkpoints are the connector kit's.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use rollcall_connector_kit::{
    async_trait, rate_limiter, Batch, Checkpoint, ConnectorError, DeadLetter, DeadLetterHeaders,
    Factory, Progress, SisConnector,
};
use serde::{Deserialize, Serialize};

mod client;
mod records;

use client::EdfiClient;
pub use client::{MAX_FRESH_TOKEN_401S, MAX_UNUSABLE_ANSWERS};
pub use records::{natural_key, record_from_item, ItemKind, WindowVersions};

/// The registration the `rollcall` CLI lists.
pub const FACTORY: Factory = Factory {
    kind: "edfi",
    about: "Ed-Fi ODS/API change queries (OAuth2 client credentials)",
    build,
};

/// The three resources rollcall needs, in the order they are synced within a window.
pub const RESOURCES: [&str; 3] = [
    "calendarDates",
    "studentSchoolAssociations",
    "studentSchoolAttendanceEvents",
];

/// `[connectors.<name>]` with `kind = "edfi"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdfiConfig {
    /// The ODS/API root: `{base_url}/oauth/token`, `{base_url}/data/v3/ed-fi/...`,
    /// `{base_url}/changeQueries/v1/...`.
    pub base_url: String,
    /// The district these records belong to (one host per district) ...
    pub district_id: String,
    /// ... or, for a state ODS serving many districts, each school's district.
    #[serde(default)]
    pub school_districts: HashMap<String, String>,
    pub client_id: String,
    /// Name of the environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Or a file holding it (container secrets).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    #[serde(default)]
    pub paging: Paging,
    /// Page tokens requested per resource and window with token paging.
    #[serde(default = "default_partitions")]
    pub token_partitions: u32,
    /// Read each window from a snapshot (`Use-Snapshot: true`), where the host has them.
    #[serde(default)]
    pub use_snapshot: bool,
    #[serde(default = "default_rps")]
    pub requests_per_second: u32,
    /// Once caught up, ask the source again after this many seconds (fractions allowed).
    #[serde(default = "default_poll")]
    pub poll_interval_secs: f64,
    /// Pages are read until a batch holds at least this many items; the batch and the
    /// checkpoint after its last page are one Kafka transaction. Larger batches mean
    /// fewer transactions on a long initial load.
    #[serde(default = "default_batch")]
    pub records_per_batch: usize,
    /// Connecting to the host gives up after this many seconds.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: f64,
    /// One request (token, page, ...) gives up after this many seconds, body included.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: f64,
    /// A page body larger than this fails the request (fatal: lower `page_size`).
    #[serde(default = "default_max_page_bytes")]
    pub max_page_bytes: usize,
}

fn default_connect_timeout() -> f64 {
    10.0
}
fn default_request_timeout() -> f64 {
    60.0
}
fn default_max_page_bytes() -> usize {
    64 * 1024 * 1024
}

fn default_page_size() -> u32 {
    500
}
fn default_partitions() -> u32 {
    4
}
fn default_rps() -> u32 {
    20
}
fn default_poll() -> f64 {
    60.0
}
fn default_batch() -> usize {
    5_000
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Paging {
    /// `offset` + `limit` (every ODS/API).
    #[default]
    Offset,
    /// `partitions` → `pageToken` + `pageSize`, next token in `Next-Page-Token` (7.3+).
    Token,
}

fn build(name: &str, section: serde_json::Value) -> anyhow::Result<Box<dyn SisConnector>> {
    let cfg: EdfiConfig = serde_json::from_value(section)
        .with_context(|| format!("connectors.{name}: invalid Ed-Fi settings"))?;
    let secret = read_secret(name, &cfg)?;
    Ok(Box::new(EdfiConnector::new(name, cfg, secret)?))
}

fn read_secret(name: &str, cfg: &EdfiConfig) -> anyhow::Result<String> {
    match (&cfg.client_secret_env, &cfg.client_secret_file) {
        (Some(var), None) => std::env::var(var).with_context(|| {
            format!("connectors.{name}.client_secret_env names {var}, which is not set")
        }),
        (None, Some(path)) => Ok(std::fs::read_to_string(path)
            .with_context(|| {
                format!(
                    "connectors.{name}.client_secret_file: cannot read {}",
                    path.display()
                )
            })?
            .trim_end()
            .to_string()),
        _ => anyhow::bail!(
            "connectors.{name}: set exactly one of client_secret_env or client_secret_file \
             (secrets never go in the TOML file)"
        ),
    }
}

/// The sync position, saved as the checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct SyncState {
    /// Every change up to this version is published (`None`: initial load not done).
    done_version: Option<i64>,
    window: Option<Window>,
    /// The first source version after the last finished window's (the floor of the
    /// next window's base; see `rollcall_connector_kit::segment_base`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_version: Option<i64>,
}

/// A change-version window in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Window {
    min: i64,
    max: i64,
    /// Index into the window's steps (see [`steps`]).
    step: usize,
    /// Items already read in this step (offset paging).
    offset: u64,
    /// Offset paging: the host's count of the step's items at the last request. Items
    /// leave a window while it is read (a record changed or deleted after `max` is no
    /// longer in it) and never join it, so a smaller count means every later item moved
    /// down by up to the difference: the next page starts that much earlier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step_count: Option<u64>,
    /// Token paging: tokens still to read in this step, and the current one.
    tokens: Option<Vec<String>>,
    token: Option<String>,
    /// Items published in this window so far, and the host's count when known.
    done: u64,
    total: Option<u64>,
    /// The window's version base, taken from the clock when it opened (`None` in a
    /// checkpoint written before versions had bases: `4·min`, the old scheme).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version_base: Option<i64>,
}

impl Window {
    fn versions(&self) -> WindowVersions {
        WindowVersions {
            min: self.min,
            max: self.max,
            base: self
                .version_base
                .unwrap_or_else(|| self.min.saturating_mul(4)),
        }
    }
}

/// The steps of a window: key changes, then changes, then deletes, per resource. The
/// initial load has nothing to re-key or delete downstream, so it reads changes only.
fn steps(initial: bool) -> Vec<(ItemKind, &'static str)> {
    let mut v = Vec::new();
    if !initial {
        v.extend(RESOURCES.iter().map(|r| (ItemKind::KeyChange, *r)));
    }
    v.extend(RESOURCES.iter().map(|r| (ItemKind::Change, *r)));
    if !initial {
        v.extend(RESOURCES.iter().map(|r| (ItemKind::Delete, *r)));
    }
    v
}

pub struct EdfiConnector {
    id: String,
    cfg: EdfiConfig,
    client: EdfiClient,
}

impl EdfiConnector {
    pub fn new(name: &str, cfg: EdfiConfig, secret: String) -> anyhow::Result<Self> {
        if cfg.page_size == 0 {
            anyhow::bail!("connectors.{name}.page_size must be at least 1");
        }
        if !(cfg.poll_interval_secs.is_finite() && cfg.poll_interval_secs > 0.0) {
            anyhow::bail!(
                "connectors.{name}.poll_interval_secs must be a positive number of seconds, not {}",
                cfg.poll_interval_secs
            );
        }
        for (key, v) in [
            ("connect_timeout_secs", cfg.connect_timeout_secs),
            ("request_timeout_secs", cfg.request_timeout_secs),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
                anyhow::bail!(
                    "connectors.{name}.{key} must be a number of seconds in (0, 86400], not {v}"
                );
            }
        }
        let client = EdfiClient::new(
            &cfg.base_url,
            cfg.client_id.clone(),
            secret,
            cfg.use_snapshot,
            rate_limiter(cfg.requests_per_second),
            client::Limits {
                connect_timeout: Duration::from_secs_f64(cfg.connect_timeout_secs),
                request_timeout: Duration::from_secs_f64(cfg.request_timeout_secs),
                max_page_bytes: cfg.max_page_bytes.max(1),
            },
        )?;
        Ok(EdfiConnector {
            id: format!("edfi:{name}"),
            cfg,
            client,
        })
    }

    fn district_of(&self, school_id: &str) -> String {
        self.cfg
            .school_districts
            .get(school_id)
            .cloned()
            .unwrap_or_else(|| self.cfg.district_id.clone())
    }
}

#[async_trait]
impl SisConnector for EdfiConnector {
    fn id(&self) -> &str {
        &self.id
    }

    /// The next batch depends only on the checkpoint (change versions, offsets, page
    /// tokens), so reading it may overlap the previous batch's commit.
    fn reads_ahead(&self) -> bool {
        true
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_secs_f64(self.cfg.poll_interval_secs)
    }

    async fn next_batch(&mut self, cp: Option<&Checkpoint>) -> Result<Batch, ConnectorError> {
        let mut state: SyncState = match cp {
            Some(c) => serde_json::from_value(c.0.clone()).map_err(|e| {
                ConnectorError::fatal(format!(
                    "checkpoint of {} is not an Ed-Fi sync state: {e}",
                    self.id
                ))
            })?,
            None => SyncState::default(),
        };
        check_state(&state).map_err(|why| {
            ConnectorError::fatal(format!(
                "checkpoint of {} cannot be resumed: {why}; it was saved from an impossible \
                 availableChangeVersions answer before such answers were refused: reset this \
                 connector's checkpoint to re-sync",
                self.id
            ))
        })?;
        if state.window.is_none() {
            // Between windows: is there anything new? The window's base is taken
            // first: the host's answer must fit the version math from it.
            let version_base = rollcall_connector_kit::segment_base_now(state.next_version);
            let versions = self.client.available_change_versions(version_base).await?;
            // check_state: done_version + 1 cannot overflow.
            let mut from = state.done_version.map_or(0, |v| v.saturating_add(1));
            if state.done_version.is_some() && from < versions.oldest {
                // The host purged change history we have not read: re-read everything
                // current (upserts are idempotent downstream); deletes older than the
                // oldest available version cannot be recovered and are reported. The
                // host's answer has oldest ≤ newest + 1 (checked), so once this window
                // is done the next starts at or above oldest: a re-sync never repeats
                // by itself.
                tracing::error!(connector = %self.id, saved = ?state.done_version, oldest = versions.oldest,
                    "change history purged past our checkpoint: full re-sync; deletes in the gap are lost");
                from = 0;
            }
            if versions.newest < from {
                return Ok(empty(state, true));
            }
            state.window = Some(Window {
                min: from,
                max: versions.newest,
                step: 0,
                offset: 0,
                step_count: None,
                tokens: None,
                token: None,
                done: 0,
                total: None,
                // Observed now: the base of every version this window publishes, kept
                // in the checkpoint so a retry of any of its batches repeats them.
                version_base: Some(version_base),
            });
            tracing::info!(connector = %self.id, min = from, max = versions.newest,
                initial = state.done_version.is_none(), "new change-version window");
        }
        // Read pages until the batch is full or the window is done: steps with nothing
        // in this window cost a request each, not a transaction each, and a long
        // initial load commits every `records_per_batch` items, not every page.
        let initial = state.done_version.is_none();
        let steps = steps(initial);
        let mut records = Vec::new();
        let mut dead_letters = Vec::new();
        let mut progress = None;
        while let Some(mut w) = state.window.clone() {
            if w.step >= steps.len() {
                close_window(&mut state, &w);
                break;
            }
            let (kind, resource) = steps[w.step];
            let page = match self.fetch(kind, resource, &mut w).await {
                Ok(page) => page,
                // Pages already read are kept: they go out with the checkpoint before
                // the failed request (`w` is dropped), and the next call retries it.
                // Without this, a host failing one request in N could fail every batch.
                Err(e) if !records.is_empty() || !dead_letters.is_empty() => {
                    tracing::debug!(connector = %self.id, error = %e,
                        "request failed mid-batch; publishing the pages read so far");
                    break;
                }
                Err(e) => return Err(e),
            };
            let versions = w.versions();
            for item in &page.items {
                match record_from_item(
                    kind,
                    resource,
                    item,
                    &versions,
                    &|s| self.district_of(s),
                    &self.id,
                ) {
                    Ok(r) => records.push(r),
                    // An item we cannot even key is kept whole, never dropped.
                    Err(reason) => dead_letters.push(DeadLetter {
                        key: None,
                        payload: item.get().as_bytes().to_vec(),
                        headers: DeadLetterHeaders {
                            stage: "connector-edfi".into(),
                            kind: "edfi_item_unusable".into(),
                            reason: format!("{resource} {} item: {reason}", kind.as_str()),
                            district: Some(district_of_item(&self.cfg, item.get())),
                            source_key: None,
                            source_topic: None,
                            source_partition: None,
                            source_offset: None,
                            source_file: Some(format!(
                                "{}/data/v3/ed-fi/{resource}{}",
                                self.cfg.base_url.trim_end_matches('/'),
                                kind.path_suffix()
                            )),
                        },
                    }),
                }
            }
            w.done += page.items.len() as u64;
            if let Some(t) = page.total_count {
                w.total = Some(w.total.unwrap_or(0).saturating_add(t));
            }
            progress = Some(Progress {
                what: format!("{resource} {}", kind.as_str()),
                done: w.done,
                total: w.total,
            });
            if page.step_finished {
                w.step += 1;
                w.offset = 0;
                w.step_count = None;
                w.tokens = None;
                w.token = None;
            }
            state.window = Some(w);
            if records.len() + dead_letters.len() >= self.cfg.records_per_batch.max(1) {
                break;
            }
        }
        // A window finished by this page is recorded in the same transaction.
        if let Some(w) = state.window.clone() {
            if w.step >= steps.len() {
                close_window(&mut state, &w);
            }
        }
        Ok(Batch {
            records,
            dead_letters,
            checkpoint: Checkpoint(serde_json::to_value(&state).expect("state serializes")),
            caught_up: false,
            progress,
        })
    }
}

/// Why `state` (read from a checkpoint) cannot be resumed, if it cannot: a done
/// version whose successor overflows, or a window whose versions do not fit.
fn check_state(state: &SyncState) -> Result<(), String> {
    if let Some(v) = state.done_version {
        if v < -1 || v == i64::MAX {
            return Err(format!("it says every change up to version {v} is done"));
        }
    }
    if let Some(w) = &state.window {
        let base = w.versions().base;
        if !WindowVersions::fits(base, w.min, w.max) {
            return Err(format!(
                "its window of change versions [{}, {}] from version base {base} does not fit \
                 rollcall's record versions",
                w.min, w.max
            ));
        }
    }
    Ok(())
}

/// Every change up to `w.max` is published; the next window's versions start above
/// this one's.
fn close_window(state: &mut SyncState, w: &Window) {
    state.done_version = Some(w.max);
    state.next_version = Some(w.versions().end());
    state.window = None;
}

struct Fetched {
    items: Vec<Box<serde_json::value::RawValue>>,
    total_count: Option<u64>,
    step_finished: bool,
}

impl EdfiConnector {
    /// One page of the current step; advances the window's paging position.
    async fn fetch(
        &mut self,
        kind: ItemKind,
        resource: &str,
        w: &mut Window,
    ) -> Result<Fetched, ConnectorError> {
        let path = format!("/data/v3/ed-fi/{resource}{}", kind.path_suffix());
        let window = [
            ("minChangeVersion", w.min.to_string()),
            ("maxChangeVersion", w.max.to_string()),
        ];
        if self.cfg.paging == Paging::Token && kind == ItemKind::Change {
            if w.tokens.is_none() {
                let tokens = self
                    .client
                    .partitions(resource, self.cfg.token_partitions, w.min, w.max)
                    .await?;
                w.tokens = Some(tokens);
            }
            if w.token.is_none() {
                w.token = w.tokens.as_mut().and_then(|t| {
                    if t.is_empty() {
                        None
                    } else {
                        Some(t.remove(0))
                    }
                });
            }
            let Some(token) = w.token.clone() else {
                return Ok(Fetched {
                    items: Vec::new(),
                    total_count: None,
                    step_finished: true,
                });
            };
            let mut q = window.to_vec();
            q.push(("pageToken", token));
            q.push(("pageSize", self.cfg.page_size.to_string()));
            let page = self.client.page(&path, &q).await?;
            w.token = page.next_page_token.clone();
            let finished = w.token.is_none() && w.tokens.as_ref().is_none_or(|t| t.is_empty());
            return Ok(Fetched {
                items: page.items,
                total_count: None,
                step_finished: finished,
            });
        }
        // Offset paging over a live host: every page asks for the count too, so that
        // items leaving the window while it is read cannot make the offsets skip the
        // items behind them (see `Window::step_count`).
        let first = w.offset == 0 && w.step_count.is_none();
        let mut q = window.to_vec();
        q.push(("offset", w.offset.to_string()));
        q.push(("limit", self.cfg.page_size.to_string()));
        q.push(("totalCount", "true".to_string()));
        let page = self.client.page(&path, &q).await?;
        let shrunk = match (w.step_count, page.total_count) {
            (Some(before), Some(now)) => before.saturating_sub(now),
            _ => 0,
        };
        if page.total_count.is_some() {
            w.step_count = page.total_count;
        }
        let finished = if shrunk > 0 {
            // Up to `shrunk` unread items moved below this page's offset: read again
            // from there (items read twice carry the same version: idempotent).
            tracing::debug!(
                resource,
                offset = w.offset,
                shrunk,
                "items left the change window while it was read; paging back"
            );
            w.offset = w.offset.saturating_sub(shrunk);
            false
        } else {
            // A host may cap the page below `limit`, so only an empty page ends the step.
            w.offset += page.items.len() as u64;
            page.items.is_empty()
        };
        Ok(Fetched {
            items: page.items,
            total_count: if first { page.total_count } else { None },
            step_finished: finished,
        })
    }
}

fn empty(state: SyncState, caught_up: bool) -> Batch {
    Batch {
        records: Vec::new(),
        dead_letters: Vec::new(),
        checkpoint: Checkpoint(serde_json::to_value(&state).expect("state serializes")),
        caught_up,
        progress: None,
    }
}

/// The district of an item that could not be keyed, for its dead letter: from the
/// school it names (`schoolReference`, `calendarReference`, `schoolId`) where it names
/// one, else the connector's district. One connector may serve an ODS of several
/// districts, and `rollcall dlq` filters by district.
fn district_of_item(cfg: &EdfiConfig, item: &str) -> String {
    let school = serde_json::from_str::<serde_json::Value>(item)
        .ok()
        .and_then(|v| {
            [
                "/schoolReference/schoolId",
                "/calendarReference/schoolId",
                "/schoolId",
            ]
            .iter()
            .find_map(|p| match v.pointer(p)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        });
    school
        .and_then(|s| cfg.school_districts.get(&s).cloned())
        .unwrap_or_else(|| cfg.district_id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unusable_item_s_dead_letter_names_the_district_of_its_school() {
        let cfg: EdfiConfig = serde_json::from_value(serde_json::json!({
            "base_url": "http://x", "district_id": "d1", "client_id": "c",
            "client_secret_env": "X", "school_districts": {"255901001": "d2"}
        }))
        .unwrap();
        let no_student = r#"{"schoolReference":{"schoolId":255901001},"eventDate":"2024-09-03"}"#;
        assert_eq!(district_of_item(&cfg, no_student), "d2");
        let cal = r#"{"calendarReference":{"schoolId":"255901001","calendarCode":"A"}}"#;
        assert_eq!(district_of_item(&cfg, cal), "d2");
        assert_eq!(
            district_of_item(&cfg, r#"{"schoolReference":{"schoolId":9}}"#),
            "d1"
        );
        assert_eq!(district_of_item(&cfg, "not json"), "d1");
    }

    #[test]
    fn windows_process_key_changes_then_changes_then_deletes() {
        let s = steps(false);
        assert_eq!(s.len(), 9);
        assert!(s[..3].iter().all(|(k, _)| *k == ItemKind::KeyChange));
        assert!(s[3..6].iter().all(|(k, _)| *k == ItemKind::Change));
        assert!(s[6..].iter().all(|(k, _)| *k == ItemKind::Delete));
        assert!(steps(true).iter().all(|(k, _)| *k == ItemKind::Change));
    }

    #[test]
    fn a_checkpoint_from_before_version_bases_keeps_the_old_versions() {
        let old: Window = serde_json::from_value(serde_json::json!({
            "min": 11, "max": 20, "step": 0, "offset": 0, "tokens": null, "token": null,
            "done": 0, "total": null
        }))
        .unwrap();
        let v = old.versions();
        assert_eq!((v.at(12, 0), v.change(), v.at(13, 2)), (48, 81, 54));
    }

    #[test]
    fn a_later_window_outranks_every_version_of_an_earlier_one() {
        let first = WindowVersions {
            min: 0,
            max: 1_000_000,
            base: rollcall_connector_kit::segment_base(1_700_000_000_000, None),
        };
        let mut state = SyncState::default();
        let w = Window {
            min: first.min,
            max: first.max,
            step: 0,
            offset: 0,
            step_count: None,
            tokens: None,
            token: None,
            done: 0,
            total: None,
            version_base: Some(first.base),
        };
        close_window(&mut state, &w);
        // opened in the same millisecond: the floor keeps it above
        let second = WindowVersions {
            min: 1_000_001,
            max: 1_000_002,
            base: rollcall_connector_kit::segment_base(1_700_000_000_000, state.next_version),
        };
        assert!(second.at(1_000_001, 0) > first.change());
        assert!(second.at(1_000_001, 0) > first.at(1_000_000, 2));
        // within a window: key change < changed record, a delete before the window's
        // end < the changed record, one at its end above it
        assert!(first.at(7, 0) < first.change() && first.at(7, 2) < first.change());
        assert!(first.at(1_000_000, 2) > first.change());
        // a change version the host reports outside the window stays inside it
        assert!(first.at(-5, 2) >= first.base && first.at(i64::MAX, 2) < first.end());
    }

    #[test]
    fn secrets_come_from_the_environment_or_a_file_never_the_toml() {
        let base = serde_json::json!({
            "base_url": "http://x", "district_id": "d", "client_id": "c"
        });
        let cfg: EdfiConfig = serde_json::from_value(base.clone()).unwrap();
        let err = read_secret("h", &cfg).unwrap_err().to_string();
        assert!(err.contains("client_secret_env"), "{err}");
        let mut with = base.clone();
        with["client_secret"] = "oops".into();
        assert!(
            serde_json::from_value::<EdfiConfig>(with).is_err(),
            "unknown keys are refused"
        );
    }
}
