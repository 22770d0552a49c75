//! The SIS file-drop connector. Watches one inbox directory per district for attendance,
//! enrollment and calendar exports, maps their columns (a preset per SIS, overridable)
//! to the raw envelope's flat fields, and streams rows out a batch at a time — files
//! larger than memory work. Each file is ingested exactly once (its SHA-256 is in the
//! checkpoint) and then moved to `done/`, or to `rejected/` with a `.reason.txt`. With
//! `snapshots = true` every file is a full snapshot of its entity, and rows of the
//! previous snapshot that it lacks are published as deletes (docs/csv-presets.md).
//! Files ending in `.xml` are Ed-Fi XML interchanges instead (`interchange`): their
//! elements are published as the Ed-Fi API resources the Ed-Fi connector would publish.
//! Only file logic lives here; publishing and checkpoints are the connector kit's.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use rollcall_connector_kit::{
    async_trait, Batch, Checkpoint, ConnectorError, DeadLetter, DeadLetterHeaders, Entity, Factory,
    PayloadFormat, Progress, RawEnvelope, RawOperation, RawRecord, SisConnector,
};
use rollcall_kafka::limits::{MAX_DEAD_LETTER_PAYLOAD_BYTES, MAX_RAW_PAYLOAD_BYTES};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod inbox;
pub mod interchange;
pub mod presets;
pub mod rows;

pub use inbox::{declared_date, ignored_name, retry_rejected};
pub use interchange::InterchangeReader;
pub use presets::{preset, Column, Other, Preset, Transform, PRESETS};
pub use rows::{Row, RowError, RowReader};

/// The registration the `rollcall` CLI lists.
pub const FACTORY: Factory = Factory {
    kind: "csv",
    about: "SIS file drops: CSV exports and Ed-Fi XML interchanges in an inbox directory",
    build,
};

/// How many checkpointed file digests to remember (older duplicates are still caught
/// by their name being in `done/`).
const DIGESTS_KEPT: usize = 100_000;

/// How many digests of rejected files to remember (only to say "rejected before" in
/// the log: a rejected file dropped again is always read again).
const REJECTED_KEPT: usize = 1_000;

/// `[connectors.<name>]` with `kind = "csv"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvConfig {
    pub district_id: String,
    /// Watched directory; processed files move to `<inbox>/done`, refused ones to
    /// `<inbox>/rejected`.
    pub inbox: PathBuf,
    /// `generic`, `powerschool`, `infinite_campus`, `skyward` or `aeries`.
    #[serde(default = "default_preset")]
    pub preset: String,
    /// Per-entity column overrides: `[connectors.<name>.columns.attendance] code = "AttCode"`.
    #[serde(default)]
    pub columns: BTreeMap<String, BTreeMap<String, String>>,
    /// `auto` (UTF-8, with or without BOM; a row that is not UTF-8 is read as
    /// Windows-1252), `utf-8` or `windows-1252`.
    #[serde(default = "default_encoding")]
    pub encoding: String,
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// File name prefixes that say which entity a file holds.
    #[serde(default)]
    pub file_prefixes: Option<BTreeMap<String, String>>,
    /// Each file is a full snapshot of its entity (what nightly SIS exports are): a row
    /// of the previous snapshot of the same entity that the new one lacks is published
    /// as a delete — within the school years the new snapshot covers.
    #[serde(default)]
    pub snapshots: bool,
    /// The month school years start in, for the snapshot's school years (as
    /// `policy.school_year_start_month`).
    #[serde(default = "default_start_month")]
    pub school_year_start_month: u32,
    #[serde(default = "default_rows")]
    pub rows_per_batch: usize,
    /// Once caught up, ask the source again after this many seconds (fractions allowed).
    #[serde(default = "default_poll")]
    pub poll_interval_secs: f64,
    /// A file is taken only once it has not changed (size and modification time) for
    /// this many seconds — by its modification time, or as this connector saw it — so
    /// a file still being copied in is not read half-written. 0 takes files at once
    /// (for writers that rename complete files into the inbox).
    #[serde(default = "default_settle")]
    pub settle_secs: f64,
}

fn default_preset() -> String {
    "generic".into()
}
fn default_encoding() -> String {
    "auto".into()
}
fn default_delimiter() -> char {
    ','
}
fn default_start_month() -> u32 {
    7
}
fn default_rows() -> usize {
    5_000
}
fn default_poll() -> f64 {
    10.0
}
fn default_settle() -> f64 {
    5.0
}

fn build(name: &str, section: serde_json::Value) -> anyhow::Result<Box<dyn SisConnector>> {
    let cfg: CsvConfig = serde_json::from_value(section)
        .with_context(|| format!("connectors.{name}: invalid file-drop settings"))?;
    Ok(Box::new(CsvConnector::new(name, cfg)?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Auto,
    Utf8,
    Windows1252,
}

/// The checkpoint: which files are done, and where we are in the current one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct FileState {
    files_done: u64,
    /// Ingested files, most recent last: `<SHA-256>:<settings>` (the settings'
    /// fingerprint, so a file dropped again after a change of preset, columns,
    /// encoding... is read again); a bare SHA-256 in older checkpoints.
    digests: VecDeque<String>,
    /// SHA-256 of rejected files, most recent last. Never a reason to skip a file:
    /// a rejected file dropped again (renamed, after a fix, or by `rollcall inbox
    /// retry`) is read again.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    rejected: VecDeque<String>,
    current: Option<Current>,
    /// Snapshot mode: per entity, the file name of the last complete snapshot.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    snapshots: BTreeMap<String, String>,
    /// The file finished last: moved to `done/` or `rejected/` and reported once its
    /// checkpoint is committed (again after a restart, if need be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<FileOutcome>,
    /// The first source version no file has used yet: the floor of the next file's
    /// version base, so a file picked within the same millisecond as the previous one
    /// (or after the clock stepped back) still outranks it. `None` in older checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_version: Option<i64>,
}

/// How one file ended: the connector's per-file account. Every physical line of a
/// file is in exactly one of: the header, a blank line, a published row, a
/// dead-lettered row, a skipped (unread) XML element, or `rejected_lines`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOutcome {
    pub file: String,
    /// SHA-256 of the file's content.
    pub digest: String,
    /// `ingested`, `rejected` or `duplicate` (already ingested with these settings:
    /// moved to `done/` unread).
    pub outcome: String,
    /// Rows (CSV) or top-level elements (XML) read: `published + dead_letters + skipped`.
    pub rows: u64,
    /// Rows published as raw records.
    pub published: u64,
    /// Rows published as dead letters (one each).
    pub dead_letters: u64,
    /// XML elements rollcall does not read (`Student`, `Course`, ...).
    pub skipped: u64,
    /// Physical lines of the file.
    pub lines: u64,
    /// Lines of a rejected file not read into any row (all of them when the file was
    /// refused before its first row).
    pub rejected_lines: u64,
    /// Why the file was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The outcomes of the files a connector finished, in order, shared with whoever holds
/// a clone (tests, the corpus check); each is also a log line and counters.
#[derive(Debug, Clone, Default)]
pub struct Outcomes(Arc<Mutex<Vec<FileOutcome>>>);

impl Outcomes {
    pub fn all(&self) -> Vec<FileOutcome> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn push(&self, o: FileOutcome) {
        if let Ok(mut v) = self.0.lock() {
            v.push(o);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Current {
    file: String,
    digest: String,
    /// Data rows already published (or dead-lettered).
    rows_done: u64,
    /// The file's sequence number.
    seq: u64,
    /// The base of the file's source versions (`rollcall_connector_kit::segment_base`,
    /// from the clock when the file was picked); `None` in a checkpoint from before
    /// bases: `seq << 32`, the old scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version_base: Option<i64>,
    /// Snapshot mode, after the file's rows: deleting what the previous snapshot has and
    /// this one lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deletes: Option<Deletes>,
    /// The file's account so far (see [`FileOutcome`]).
    #[serde(default)]
    published: u64,
    #[serde(default)]
    dead: u64,
    #[serde(default)]
    skipped: u64,
    /// Physical lines read so far (header, blank lines and rows).
    #[serde(default)]
    lines_done: u64,
    /// Physical lines of the file.
    #[serde(default)]
    lines: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Deletes {
    /// The previous snapshot's file name (in `done/`).
    previous: String,
    /// Its rows already compared.
    rows_done: u64,
}

/// The deletes phase in progress: the current file's natural keys (hashed) and school
/// years, and the previous snapshot's reader.
struct DeletePhase {
    cur: Current,
    keys: HashSet<u64>,
    years: BTreeSet<i32>,
    previous: RowReader<BufReader<File>>,
}

pub struct CsvConnector {
    id: String,
    cfg: CsvConfig,
    preset: Preset,
    encoding: Encoding,
    prefixes: Vec<(String, Entity)>,
    /// The open file matching the checkpoint's `current`, kept across batches.
    open: Option<(Current, Entity, RowReader<BufReader<File>>)>,
    /// Snapshot mode: the deletes phase matching the checkpoint's `current`.
    deleting: Option<DeletePhase>,
    /// The open Ed-Fi XML interchange matching the checkpoint's `current`.
    open_xml: Option<(Current, InterchangeReader<BufReader<File>>)>,
    /// Fingerprint of the settings that shape what a file publishes.
    settings: String,
    /// Files seen still changing: name → (size, modification time, first seen so).
    seen: HashMap<String, (u64, SystemTime, Instant)>,
    /// Rejected files that could not be moved out of the inbox (by digest): not read
    /// again by this process.
    unmovable: HashSet<String>,
    outcomes: Outcomes,
}

/// A file waiting in the inbox.
struct Waiting {
    name: String,
    size: u64,
    mtime: SystemTime,
}

impl CsvConnector {
    pub fn new(name: &str, cfg: CsvConfig) -> anyhow::Result<Self> {
        if !(cfg.settle_secs.is_finite() && cfg.settle_secs >= 0.0) {
            anyhow::bail!(
                "connectors.{name}.settle_secs must be zero or a positive number of seconds, not {}",
                cfg.settle_secs
            );
        }
        if !(cfg.poll_interval_secs.is_finite() && cfg.poll_interval_secs > 0.0) {
            anyhow::bail!(
                "connectors.{name}.poll_interval_secs must be a positive number of seconds, not {}",
                cfg.poll_interval_secs
            );
        }
        let mut preset = preset(&cfg.preset).with_context(|| {
            format!(
                "connectors.{name}.preset: unknown preset `{}` (known: {PRESETS:?})",
                cfg.preset
            )
        })?;
        for (entity, cols) in &cfg.columns {
            let e: Entity = entity
                .parse()
                .map_err(|_| anyhow::anyhow!("connectors.{name}.columns.{entity}: not an entity (attendance, enrollment, calendar)"))?;
            let map = preset.columns_mut(e);
            for (field, header) in cols {
                let f = rows::FIELDS
                    .iter()
                    .find(|f| **f == field.as_str())
                    .with_context(|| {
                        format!(
                            "connectors.{name}.columns.{entity}.{field}: not a field (known: {:?})",
                            rows::FIELDS
                        )
                    })?;
                // The preset's value rule for the field stays (e.g. PowerSchool's
                // exclusive exit date), whatever the column is called.
                let transform = map.get(f).and_then(|c| c.transform);
                map.insert(
                    f,
                    Column {
                        headers: vec![header.clone()],
                        transform,
                    },
                );
            }
        }
        let encoding = match cfg.encoding.to_ascii_lowercase().as_str() {
            "auto" => Encoding::Auto,
            "utf-8" | "utf8" => Encoding::Utf8,
            "windows-1252" | "cp1252" | "latin1" => Encoding::Windows1252,
            other => anyhow::bail!(
                "connectors.{name}.encoding: `{other}` is not auto, utf-8 or windows-1252"
            ),
        };
        if !(1..=12).contains(&cfg.school_year_start_month) {
            anyhow::bail!("connectors.{name}.school_year_start_month must be 1..=12");
        }
        if !cfg.delimiter.is_ascii() {
            anyhow::bail!("connectors.{name}.delimiter must be one ASCII character");
        }
        let mut prefixes = vec![
            ("attendance".to_string(), Entity::Attendance),
            ("enrollment".to_string(), Entity::Enrollment),
            ("calendar".to_string(), Entity::Calendar),
        ];
        if let Some(p) = &cfg.file_prefixes {
            prefixes.clear();
            for (entity, prefix) in p {
                let e: Entity = entity.parse().map_err(|_| {
                    anyhow::anyhow!("connectors.{name}.file_prefixes.{entity}: not an entity")
                })?;
                prefixes.push((prefix.to_lowercase(), e));
            }
        }
        for sub in ["done", "rejected"] {
            std::fs::create_dir_all(cfg.inbox.join(sub)).with_context(|| {
                format!(
                    "connectors.{name}.inbox: cannot create {}/{sub}",
                    cfg.inbox.display()
                )
            })?;
        }
        let settings = {
            let shape = serde_json::json!({
                "district_id": cfg.district_id,
                "preset": cfg.preset,
                "columns": cfg.columns,
                "encoding": cfg.encoding,
                "delimiter": cfg.delimiter,
                "file_prefixes": cfg.file_prefixes,
                "snapshots": cfg.snapshots,
                "school_year_start_month": cfg.school_year_start_month,
            });
            hex::encode(&Sha256::digest(shape.to_string().as_bytes())[..8])
        };
        Ok(CsvConnector {
            id: format!("csv:{name}"),
            cfg,
            preset,
            encoding,
            prefixes,
            open: None,
            deleting: None,
            open_xml: None,
            settings,
            seen: HashMap::new(),
            unmovable: HashSet::new(),
            outcomes: Outcomes::default(),
        })
    }

    /// The outcomes of the files this connector finishes (a shared handle: clone it
    /// before handing the connector to the kit).
    pub fn outcomes(&self) -> Outcomes {
        self.outcomes.clone()
    }

    fn entity_of(&self, file: &str) -> Option<Entity> {
        let lower = file.to_lowercase();
        self.prefixes
            .iter()
            .find(|(p, _)| lower.starts_with(p.as_str()))
            .map(|(_, e)| *e)
    }

    /// Files waiting in the inbox, in drop order: by the day a file is about (the date
    /// its name declares, else the day it was last modified), then modification time,
    /// then name — never by name alone (`2024-10-01` sorts before `2024-9-30`).
    fn waiting(&self) -> Result<Vec<Waiting>, ConnectorError> {
        let rd = std::fs::read_dir(&self.cfg.inbox).map_err(|e| {
            ConnectorError::transient(format!("reading inbox {}: {e}", self.cfg.inbox.display()))
        })?;
        let mut files: Vec<(chrono::NaiveDate, Waiting)> = Vec::new();
        for e in rd.filter_map(Result::ok) {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if ignored_name(&name) {
                continue;
            }
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let day = declared_date(&name)
                .unwrap_or_else(|| chrono::DateTime::<chrono::Utc>::from(mtime).date_naive());
            files.push((
                day,
                Waiting {
                    name,
                    size: meta.len(),
                    mtime,
                },
            ));
        }
        files.sort_by(|(da, a), (db, b)| (da, a.mtime, &a.name).cmp(&(db, b.mtime, &b.name)));
        Ok(files.into_iter().map(|(_, w)| w).collect())
    }

    /// How long until `w` counts as complete: unchanged for `settle_secs`, by its
    /// modification time or as this connector has seen it. `None`: it is.
    fn unsettled_for(&mut self, w: &Waiting) -> Option<Duration> {
        let settle = Duration::from_secs_f64(self.cfg.settle_secs);
        if settle.is_zero() {
            return None;
        }
        let now = Instant::now();
        let entry = self
            .seen
            .entry(w.name.clone())
            .or_insert((w.size, w.mtime, now));
        if (entry.0, entry.1) != (w.size, w.mtime) {
            *entry = (w.size, w.mtime, now);
        }
        let by_mtime = SystemTime::now()
            .duration_since(w.mtime)
            .unwrap_or(Duration::ZERO);
        let by_sight = now.duration_since(entry.2);
        let quiet = by_mtime.max(by_sight);
        (quiet < settle).then(|| settle - quiet)
    }

    fn move_to(&self, file: &str, sub: &str, reason: Option<&str>) -> bool {
        let from = self.cfg.inbox.join(file);
        let to = self.cfg.inbox.join(sub).join(file);
        let moved = match std::fs::rename(&from, &to) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(file, error = %e, "could not move file to {sub}/");
                false
            }
        };
        let reason_file = self.cfg.inbox.join(sub).join(format!("{file}.reason.txt"));
        match reason {
            Some(r) => {
                let _ = std::fs::write(&reason_file, r);
            }
            // A stale reason from an earlier rejection of the same name would mislead.
            None => {
                let _ = std::fs::remove_file(&reason_file);
            }
        }
        moved
    }

    /// The file finished last, once its checkpoint is committed: moved to `done/` or
    /// `rejected/` (if it is still in the inbox with the same content), logged, counted
    /// and reported. Idempotent: after a restart it runs again harmlessly.
    fn settle_last(&mut self, last: &FileOutcome) {
        let path = self.cfg.inbox.join(&last.file);
        if digest_file(&path).ok().as_deref() != Some(last.digest.as_str()) {
            return; // moved already (or replaced by another file of the same name)
        }
        let rejected = last.outcome == "rejected";
        let sub = if rejected { "rejected" } else { "done" };
        if self.unmovable.contains(&last.digest) {
            return; // reported already; the move failed
        }
        let moved = self.move_to(&last.file, sub, last.reason.as_deref());
        if rejected && !moved {
            self.unmovable.insert(last.digest.clone());
        }
        report(&self.id, last);
        self.outcomes.push(last.clone());
    }

    fn open_file(
        &self,
        cur: &Current,
        entity: Entity,
    ) -> Result<RowReader<BufReader<File>>, String> {
        let mut reader = self.reader(&self.cfg.inbox.join(&cur.file), entity)?;
        reader.skip_rows(cur.rows_done).map_err(|e| e.to_string())?;
        Ok(reader)
    }

    fn reader(&self, path: &Path, entity: Entity) -> Result<RowReader<BufReader<File>>, String> {
        let f = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        RowReader::new(
            BufReader::with_capacity(1 << 20, f),
            self.cfg.delimiter as u8,
            self.encoding,
            self.preset.columns(entity).clone(),
            self.preset.date_formats,
            entity,
        )
    }
}

/// SHA-256 of a file and its number of physical lines (ended by `\n`, `\r\n`, a lone
/// `\r`, or the end of the file), streamed.
pub fn digest_and_lines(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let (mut lines, mut prev) = (0u64, b'\n');
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        for &c in &buf[..n] {
            if c == b'\n' && prev != b'\r' || c == b'\r' {
                lines += 1;
            }
            prev = c;
        }
    }
    if prev != b'\n' && prev != b'\r' {
        lines += 1; // a last line without a line break
    }
    Ok((hex::encode(h.finalize()), lines))
}

/// SHA-256 of a file, streamed.
pub fn digest_file(path: &Path) -> std::io::Result<String> {
    let mut f = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[async_trait]
impl SisConnector for CsvConnector {
    fn id(&self) -> &str {
        &self.id
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_secs_f64(self.cfg.poll_interval_secs)
    }

    async fn next_batch(&mut self, cp: Option<&Checkpoint>) -> Result<Batch, ConnectorError> {
        let mut state: FileState = match cp {
            Some(c) => serde_json::from_value(c.0.clone()).map_err(|e| {
                ConnectorError::fatal(format!(
                    "checkpoint of {} is not a file-drop state: {e}",
                    self.id
                ))
            })?,
            None => FileState::default(),
        };
        // Pick the next file when none is in progress.
        if state.current.is_none() {
            if let Some(last) = state.last.take() {
                // Committed but maybe not moved yet (a restart in between); then
                // forgotten, so a file brought back later (`inbox retry`) is read.
                self.settle_last(&last);
            }
            let mut picked = None;
            let mut wait = None;
            for w in self.waiting()? {
                if let Some(left) = self.unsettled_for(&w) {
                    // Still being written: wait for it rather than skip ahead of it.
                    tracing::debug!(file = %w.name, "file still changing; waiting for it to settle");
                    wait = Some(left);
                    break;
                }
                let path = self.cfg.inbox.join(&w.name);
                let (digest, lines) = digest_and_lines(&path).map_err(|e| {
                    ConnectorError::transient(format!("reading {}: {e}", path.display()))
                })?;
                if self.unmovable.contains(&digest) {
                    continue;
                }
                let key = format!("{digest}:{}", self.settings);
                if state.digests.iter().any(|d| *d == key || *d == digest) {
                    tracing::info!(file = %w.name, "already ingested (same content, same settings); moving to done/");
                    metrics_duplicate(&self.id);
                    self.move_to(
                        &w.name,
                        "done",
                        Some("duplicate: this exact content was already ingested with these settings"),
                    );
                    let o = FileOutcome {
                        file: w.name.clone(),
                        digest,
                        outcome: "duplicate".into(),
                        lines,
                        ..FileOutcome::default()
                    };
                    report(&self.id, &o);
                    self.outcomes.push(o);
                    continue;
                }
                if state.rejected.contains(&digest) {
                    tracing::info!(file = %w.name, "this content was rejected before; reading it again");
                }
                picked = Some((w.name, digest, lines));
                break;
            }
            let Some((file, digest, lines)) = picked else {
                if let Some(left) = wait {
                    // Not caught up: a file is arriving. Look again once it may be complete.
                    let nap = left
                        .min(self.poll_interval())
                        .max(Duration::from_millis(20));
                    tokio::time::sleep(nap).await;
                    return Ok(batch(state, Vec::new(), Vec::new(), false, None));
                }
                return Ok(batch(state, Vec::new(), Vec::new(), true, None));
            };
            self.seen.remove(&file);
            state.current = Some(Current {
                file,
                digest,
                rows_done: 0,
                seq: state.files_done + 1,
                version_base: Some(rollcall_connector_kit::segment_base_now(state.next_version)),
                deletes: None,
                published: 0,
                dead: 0,
                skipped: 0,
                lines_done: 0,
                lines,
            });
        }
        let cur = state.current.clone().expect("set above");
        if is_interchange(&cur.file) {
            return Ok(self.xml_batch(state, cur));
        }
        let Some(entity) = self.entity_of(&cur.file) else {
            let reason = format!(
                "file name `{}` does not start with a known prefix ({:?}); rename it and drop it again",
                cur.file,
                self.prefixes.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>()
            );
            return Ok(self.reject(state, &cur, reason, Vec::new(), Vec::new()));
        };
        if cur.deletes.is_some() {
            return Ok(self.delete_batch(state, cur, entity));
        }
        // Reuse the open reader if it is exactly where the checkpoint says.
        let reuse = matches!(&self.open, Some((c, _, _)) if c == &cur);
        if !reuse {
            self.open = None;
            match self.open_file(&cur, entity) {
                Ok(r) => self.open = Some((cur.clone(), entity, r)),
                Err(reason) => return Ok(self.reject(state, &cur, reason, Vec::new(), Vec::new())),
            }
        }
        let (_, _, reader) = self.open.as_mut().expect("opened above");
        let mut records = Vec::new();
        let mut dead = Vec::new();
        let mut rows = 0u64;
        let mut eof = false;
        let mut next = cur.clone();
        let mut failed = None;
        while records.len() + dead.len() < self.cfg.rows_per_batch {
            match reader.next_row() {
                None => {
                    eof = true;
                    break;
                }
                Some(Ok(row)) => {
                    rows += 1;
                    let line = row.line;
                    let version = rollcall_connector_kit::source_version(
                        cur.version_base.unwrap_or((cur.seq as i64) << 32),
                        row.line,
                    );
                    state.next_version = state.next_version.max(Some(version + 1));
                    let r = to_record(
                        &self.cfg.district_id,
                        self.preset.name,
                        &self.id,
                        entity,
                        row,
                        version,
                    );
                    if r.envelope.payload.len() > MAX_RAW_PAYLOAD_BYTES {
                        // Fields of 4 KiB each can still escape past the cap in JSON.
                        next.dead += 1;
                        dead.push(row_dead_letter(
                            &self.cfg.district_id,
                            format!(
                                "the row's fields are {} bytes as JSON (at most {MAX_RAW_PAYLOAD_BYTES})",
                                r.envelope.payload.len()
                            ),
                            format!("{}:{line}", cur.file),
                            r.envelope.payload,
                        ));
                    } else {
                        next.published += 1;
                        records.push(r);
                    }
                }
                Some(Err(RowError::Row {
                    line, reason, raw, ..
                })) => {
                    rows += 1;
                    next.dead += 1;
                    dead.push(row_dead_letter(
                        &self.cfg.district_id,
                        reason,
                        format!("{}:{line}", cur.file),
                        raw,
                    ));
                }
                Some(Err(RowError::File(reason))) => {
                    failed = Some(reason);
                    break;
                }
            }
        }
        next.lines_done = reader.lines_consumed();
        next.rows_done += rows;
        if let Some(reason) = failed {
            self.open = None;
            let reason = if next.rows_done > 0 {
                format!(
                    "{reason} — the {} rows before this point were published or dead-lettered; fix the file and drop it again (upserts are idempotent)",
                    next.rows_done
                )
            } else {
                reason
            };
            return Ok(self.reject(state, &next, reason, records, dead));
        }
        let progress = Some(Progress {
            what: cur.file.clone(),
            done: next.rows_done,
            total: None,
        });
        if eof {
            self.open = None;
            let previous = self
                .cfg
                .snapshots
                .then(|| state.snapshots.get(entity.as_str()).cloned())
                .flatten();
            match previous {
                // Snapshot mode: now compare with the previous snapshot.
                Some(previous) => {
                    next.deletes = Some(Deletes {
                        previous,
                        rows_done: 0,
                    });
                    state.current = Some(next);
                }
                None => self.finish(&mut state, &next, Some(entity)),
            }
        } else {
            state.current = Some(next.clone());
            if let Some((c, _, _)) = self.open.as_mut() {
                *c = next;
            }
        }
        Ok(batch(state, records, dead, false, progress))
    }

    /// After the checkpoint that finished a file is committed, move it out of the inbox
    /// and report it.
    async fn committed(&mut self, cp: &Checkpoint) -> Result<(), ConnectorError> {
        let state: FileState = serde_json::from_value(cp.0.clone())
            .map_err(|e| ConnectorError::fatal(e.to_string()))?;
        if let (None, Some(last)) = (&state.current, &state.last) {
            self.settle_last(last);
        }
        Ok(())
    }
}

impl CsvConnector {
    /// The file is done: remember its digest (and, in snapshot mode, that it is the
    /// entity's latest snapshot).
    fn finish(&mut self, state: &mut FileState, cur: &Current, entity: Option<Entity>) {
        state.files_done += 1;
        state
            .digests
            .push_back(format!("{}:{}", cur.digest, self.settings));
        while state.digests.len() > DIGESTS_KEPT {
            state.digests.pop_front();
        }
        if let (true, Some(entity)) = (self.cfg.snapshots, entity) {
            state
                .snapshots
                .insert(entity.as_str().to_string(), cur.file.clone());
        }
        state.current = None;
        state.last = Some(outcome(cur, "ingested", None));
    }

    /// Snapshot mode, after a file's rows: the previous snapshot's rows that this file
    /// lacks (within the school years this file covers) become deletes, a batch at a time.
    fn delete_batch(&mut self, mut state: FileState, cur: Current, entity: Entity) -> Batch {
        let d = cur.deletes.clone().expect("in the deletes phase");
        let reuse = matches!(&self.deleting, Some(p) if p.cur == cur);
        if !reuse {
            self.deleting = None;
            match self.open_delete_phase(&cur, &d, entity) {
                Ok(p) => self.deleting = Some(p),
                Err(reason) => {
                    // Without the previous snapshot nothing can be compared: say so and
                    // take this file as the new snapshot.
                    tracing::warn!(file = %cur.file, %reason, "snapshot deletes skipped");
                    let dl = self.file_dead_letter(
                        "csv_snapshot_deletes_skipped",
                        format!(
                            "rows of the previous snapshot {} missing from {} could not be deleted: {reason}",
                            d.previous, cur.file
                        ),
                        &cur.file,
                    );
                    self.finish(&mut state, &cur, Some(entity));
                    return batch(state, Vec::new(), vec![dl], false, None);
                }
            }
        }
        let phase = self.deleting.as_mut().expect("opened above");
        let mut records = Vec::new();
        let mut rows = 0u64;
        let mut eof = false;
        let mut unreadable = None;
        while records.len() < self.cfg.rows_per_batch {
            match phase.previous.next_row() {
                None => {
                    eof = true;
                    break;
                }
                Some(Ok(mut row)) => {
                    rows += 1;
                    let (_, natural) = keys(&self.cfg.district_id, entity, &row.fields);
                    let year = school_year_of(entity, &row, self.cfg.school_year_start_month);
                    if phase.keys.contains(&hash_key(&natural))
                        || !year.is_some_and(|y| phase.years.contains(&y))
                    {
                        continue;
                    }
                    let version = rollcall_connector_kit::source_version(
                        cur.version_base.unwrap_or((cur.seq as i64) << 32),
                        row.line,
                    );
                    state.next_version = state.next_version.max(Some(version + 1));
                    row.fields.insert("operation".into(), "delete".into());
                    records.push(to_record(
                        &self.cfg.district_id,
                        self.preset.name,
                        &self.id,
                        entity,
                        row,
                        version,
                    ));
                }
                // Rows that were bad then were never published: nothing to delete.
                Some(Err(RowError::Row { .. })) => rows += 1,
                Some(Err(RowError::File(reason))) => {
                    unreadable = Some(reason);
                    break;
                }
            }
        }
        let mut dead = Vec::new();
        if let Some(reason) = unreadable {
            dead.push(self.file_dead_letter(
                "csv_snapshot_deletes_skipped",
                format!(
                    "the previous snapshot {} became unreadable while comparing ({reason}); rows after line {} were not compared",
                    d.previous,
                    d.rows_done + rows
                ),
                &cur.file,
            ));
            eof = true;
        }
        let progress = Some(Progress {
            what: format!("{} (deletes against {})", cur.file, d.previous),
            done: d.rows_done + rows,
            total: None,
        });
        if eof {
            self.deleting = None;
            tracing::info!(file = %cur.file, previous = %d.previous, "snapshot compared");
            self.finish(&mut state, &cur, Some(entity));
        } else {
            let mut next = cur.clone();
            next.deletes = Some(Deletes {
                previous: d.previous.clone(),
                rows_done: d.rows_done + rows,
            });
            state.current = Some(next.clone());
            if let Some(p) = self.deleting.as_mut() {
                p.cur = next;
            }
        }
        batch(state, records, dead, false, progress)
    }

    /// Reads the current file's keys and school years, and opens the previous snapshot
    /// where the checkpoint says.
    fn open_delete_phase(
        &self,
        cur: &Current,
        d: &Deletes,
        entity: Entity,
    ) -> Result<DeletePhase, String> {
        let mut seen = HashSet::new();
        let mut years = BTreeSet::new();
        let mut reader = self.reader(&self.cfg.inbox.join(&cur.file), entity)?;
        while let Some(row) = reader.next_row() {
            match row {
                Ok(row) => {
                    let (_, natural) = keys(&self.cfg.district_id, entity, &row.fields);
                    seen.insert(hash_key(&natural));
                    if let Some(y) = school_year_of(entity, &row, self.cfg.school_year_start_month)
                    {
                        years.insert(y);
                    }
                }
                Err(RowError::Row { .. }) => {}
                Err(RowError::File(e)) => return Err(format!("re-reading {}: {e}", cur.file)),
            }
        }
        let done = self.cfg.inbox.join("done").join(&d.previous);
        let path = if done.exists() {
            done
        } else {
            self.cfg.inbox.join(&d.previous)
        };
        let mut previous = self.reader(&path, entity)?;
        previous.skip_rows(d.rows_done).map_err(|e| e.to_string())?;
        Ok(DeletePhase {
            cur: cur.clone(),
            keys: seen,
            years,
            previous,
        })
    }

    fn file_dead_letter(&self, kind: &str, reason: String, file: &str) -> DeadLetter {
        DeadLetter {
            key: None,
            payload: Vec::new(),
            headers: DeadLetterHeaders {
                stage: "connector-csv".into(),
                kind: kind.into(),
                reason,
                district: Some(self.cfg.district_id.clone()),
                source_key: None,
                source_topic: None,
                source_partition: None,
                source_offset: None,
                source_file: Some(file.to_string()),
            },
        }
    }

    /// Refuse a whole file: once the checkpoint is committed it moves to `rejected/`
    /// with the reason beside it. What was read of it in this batch (`records`, `dead`)
    /// is published with it. Its digest is remembered as rejected, not ingested: the
    /// same content dropped again is read again.
    fn reject(
        &mut self,
        mut state: FileState,
        cur: &Current,
        reason: String,
        records: Vec<RawRecord>,
        mut dead: Vec<DeadLetter>,
    ) -> Batch {
        let reason = format!(
            "{reason}\nTo read it again, fix it (or the connector's settings) and drop it into the inbox again under any name, or run `rollcall inbox retry {}`.",
            self.cfg.inbox.join("rejected").join(&cur.file).display()
        );
        state.files_done += 1;
        state.rejected.retain(|d| d != &cur.digest);
        state.rejected.push_back(cur.digest.clone());
        while state.rejected.len() > REJECTED_KEPT {
            state.rejected.pop_front();
        }
        state.current = None;
        state.last = Some(outcome(cur, "rejected", Some(reason.clone())));
        let dl = DeadLetter {
            key: None,
            payload: Vec::new(),
            headers: DeadLetterHeaders {
                stage: "connector-csv".into(),
                kind: "csv_file_rejected".into(),
                reason,
                district: Some(self.cfg.district_id.clone()),
                source_key: None,
                source_topic: None,
                source_partition: None,
                source_offset: None,
                source_file: Some(format!("rejected/{}", cur.file)),
            },
        };
        dead.push(dl);
        batch(state, records, dead, false, None)
    }
}

impl CsvConnector {
    /// The next batch of an Ed-Fi XML interchange: its elements as Ed-Fi API resources
    /// (source system `edfi`, so the district's Ed-Fi code map applies), elements
    /// rollcall cannot key as dead letters with their line, other elements counted and
    /// skipped. Interchanges are loads, never snapshots: nothing is deleted.
    fn xml_batch(&mut self, mut state: FileState, cur: Current) -> Batch {
        let reuse = matches!(&self.open_xml, Some((c, _)) if c == &cur);
        if !reuse {
            self.open_xml = None;
            let path = self.cfg.inbox.join(&cur.file);
            let opened = File::open(&path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))
                .and_then(|f| {
                    let mut r = InterchangeReader::new(BufReader::with_capacity(1 << 20, f));
                    r.skip(cur.rows_done).map_err(|e| e.0)?;
                    Ok(r)
                });
            match opened {
                Ok(r) => self.open_xml = Some((cur.clone(), r)),
                Err(reason) => return self.reject(state, &cur, reason, Vec::new(), Vec::new()),
            }
        }
        let mut records = Vec::new();
        let mut dead = Vec::new();
        let mut elements = 0u64;
        let mut eof = false;
        let mut next = cur.clone();
        while (elements as usize) < self.cfg.rows_per_batch {
            let (_, reader) = self.open_xml.as_mut().expect("opened above");
            let item = match reader.next() {
                Ok(Some(item)) => item,
                Ok(None) => {
                    eof = true;
                    break;
                }
                Err(e) => {
                    self.open_xml = None;
                    next.rows_done += elements;
                    let read = next.rows_done;
                    let reason = if read == 0 {
                        e.0
                    } else {
                        format!(
                            "{} — the {read} elements before this point were published, dead-lettered or skipped; fix the file and drop it again (upserts are idempotent)",
                            e.0
                        )
                    };
                    return self.reject(state, &next, reason, records, dead);
                }
            };
            next.lines_done = reader.lines_read();
            elements += 1;
            let ordinal = cur.rows_done + elements;
            match item {
                interchange::Item::Record(r) => {
                    let line = r.line;
                    let version = rollcall_connector_kit::source_version(
                        cur.version_base.unwrap_or((cur.seq as i64) << 32),
                        ordinal,
                    );
                    state.next_version = state.next_version.max(Some(version + 1));
                    let rec = xml_record(&self.cfg.district_id, &self.id, r, version);
                    if rec.envelope.payload.len() > MAX_RAW_PAYLOAD_BYTES {
                        next.dead += 1;
                        let mut dl = self.file_dead_letter(
                            "xml_element_invalid",
                            format!(
                                "the element's Ed-Fi JSON is {} bytes (at most {MAX_RAW_PAYLOAD_BYTES})",
                                rec.envelope.payload.len()
                            ),
                            &format!("{}:{line}", cur.file),
                        );
                        dl.payload = cut(rec.envelope.payload);
                        dead.push(dl);
                    } else {
                        next.published += 1;
                        records.push(rec);
                    }
                }
                interchange::Item::Skipped { element } => {
                    next.skipped += 1;
                    metrics::counter!(
                        "rollcall_connector_xml_elements_skipped_total",
                        "connector" => self.id.clone(),
                        "element" => element
                    )
                    .increment(1);
                }
                interchange::Item::Invalid {
                    line,
                    element,
                    reason,
                    xml,
                } => {
                    tracing::debug!(file = %cur.file, line, %element, "interchange element dead-lettered");
                    next.dead += 1;
                    let mut dl = self.file_dead_letter(
                        "xml_element_invalid",
                        reason,
                        &format!("{}:{line}", cur.file),
                    );
                    dl.payload = cut(xml.into_bytes());
                    dead.push(dl);
                }
            }
        }
        next.rows_done += elements;
        let progress = Some(Progress {
            what: cur.file.clone(),
            done: next.rows_done,
            total: None,
        });
        if eof {
            let root = self
                .open_xml
                .take()
                .and_then(|(_, r)| r.root().map(str::to_string))
                .unwrap_or_default();
            tracing::info!(file = %cur.file, interchange = %root, "interchange read");
            next.lines_done = next.lines;
            self.finish(&mut state, &next, None);
        } else {
            state.current = Some(next.clone());
            if let Some((c, _)) = self.open_xml.as_mut() {
                *c = next;
            }
        }
        batch(state, records, dead, false, progress)
    }
}

/// Ed-Fi XML interchange files are recognised by their extension, whatever their
/// name's prefix: the interchange's elements say what they hold.
fn is_interchange(file: &str) -> bool {
    file.to_ascii_lowercase().ends_with(".xml")
}

/// The raw record of one interchange element: exactly what the Ed-Fi connector would
/// publish for the same resource (payload, natural key, Kafka key).
fn xml_record(district: &str, source: &str, r: interchange::Record, version: i64) -> RawRecord {
    let key = match &r.student_id {
        Some(student) => rollcall_model::student_key(district, student),
        None => rollcall_model::school_key(district, &r.school_id),
    };
    let observed_at_ms = rollcall_connector_kit::observed_now_ms();
    RawRecord {
        key,
        envelope: RawEnvelope {
            source_system: "edfi".into(),
            source_instance: source.to_string(),
            district_id: district.to_string(),
            entity: r.entity,
            operation: RawOperation::Upsert,
            natural_key: r.natural_key,
            old_natural_key: None,
            source_version: version,
            observed_at_ms,
            payload_format: PayloadFormat::EdfiJson,
            payload: serde_json::to_vec(&r.payload).expect("JSON values serialize"),
        },
    }
}

/// A dead letter's payload, cut to what a dead letter carries.
fn cut(mut payload: Vec<u8>) -> Vec<u8> {
    payload.truncate(MAX_DEAD_LETTER_PAYLOAD_BYTES);
    payload
}

/// The dead letter of one bad CSV row: the row as in the file (cut to the dead-letter
/// cap), the reason, `file:line`.
fn row_dead_letter(district: &str, reason: String, at: String, raw: Vec<u8>) -> DeadLetter {
    DeadLetter {
        key: None,
        payload: cut(raw),
        headers: DeadLetterHeaders {
            stage: "connector-csv".into(),
            kind: "csv_row_invalid".into(),
            reason,
            district: Some(district.to_string()),
            source_key: None,
            source_topic: None,
            source_partition: None,
            source_offset: None,
            source_file: Some(at),
        },
    }
}

/// The account of a finished file.
fn outcome(cur: &Current, outcome: &str, reason: Option<String>) -> FileOutcome {
    let rejected = outcome == "rejected";
    FileOutcome {
        file: cur.file.clone(),
        digest: cur.digest.clone(),
        outcome: outcome.into(),
        rows: cur.published + cur.dead + cur.skipped,
        published: cur.published,
        dead_letters: cur.dead,
        skipped: cur.skipped,
        lines: cur.lines,
        rejected_lines: if rejected {
            cur.lines.saturating_sub(cur.lines_done)
        } else {
            0
        },
        reason,
    }
}

/// One log line and the counters of a finished file (after its commit).
fn report(id: &str, o: &FileOutcome) {
    let c = |what: &'static str, n: u64| {
        if n > 0 {
            metrics::counter!("rollcall_connector_file_rows_total", "connector" => id.to_string(), "outcome" => what)
                .increment(n);
        }
    };
    c("published", o.published);
    c("dead_letter", o.dead_letters);
    c("skipped", o.skipped);
    if o.rejected_lines > 0 {
        metrics::counter!("rollcall_connector_rejected_lines_total", "connector" => id.to_string())
            .increment(o.rejected_lines);
    }
    metrics::counter!("rollcall_connector_files_total", "connector" => id.to_string(), "outcome" => o.outcome.clone())
        .increment(1);
    if o.outcome == "rejected" {
        metrics_rejected(id);
        tracing::warn!(connector = id, file = %o.file, outcome = %o.outcome, rows = o.rows,
            published = o.published, dead_letters = o.dead_letters, skipped = o.skipped,
            lines = o.lines, rejected_lines = o.rejected_lines,
            reason = o.reason.as_deref().unwrap_or(""), "file done");
    } else {
        tracing::info!(connector = id, file = %o.file, outcome = %o.outcome, rows = o.rows,
            published = o.published, dead_letters = o.dead_letters, skipped = o.skipped,
            lines = o.lines, rejected_lines = o.rejected_lines, "file done");
    }
}

fn metrics_duplicate(id: &str) {
    metrics::counter!("rollcall_connector_duplicate_files_total", "connector" => id.to_string())
        .increment(1);
}

fn metrics_rejected(id: &str) {
    metrics::counter!("rollcall_connector_rejected_files_total", "connector" => id.to_string())
        .increment(1);
}

fn batch(
    state: FileState,
    records: Vec<RawRecord>,
    dead_letters: Vec<DeadLetter>,
    caught_up: bool,
    progress: Option<Progress>,
) -> Batch {
    Batch {
        records,
        dead_letters,
        checkpoint: Checkpoint(serde_json::to_value(&state).expect("state serializes")),
        caught_up,
        progress,
    }
}

/// The Kafka key and the natural key of a row.
fn keys(district: &str, entity: Entity, fields: &BTreeMap<String, String>) -> (String, String) {
    let f = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
    match entity {
        Entity::Attendance => (
            rollcall_model::student_key(district, f("student_id")),
            format!(
                "attendance:{}|{}|{}",
                f("school_id"),
                f("student_id"),
                f("date")
            ),
        ),
        Entity::Enrollment => (
            rollcall_model::student_key(district, f("student_id")),
            format!(
                "enrollment:{}|{}|{}",
                f("school_id"),
                f("student_id"),
                f("entry_date")
            ),
        ),
        Entity::Calendar => (
            rollcall_model::school_key(district, f("school_id")),
            format!(
                "calendar:{}|{}|{}",
                f("school_id"),
                f("calendar_code"),
                f("date")
            ),
        ),
    }
}

/// A natural key's 64-bit hash (a snapshot's key set in little memory; a collision
/// could only keep a row that should have been deleted, with odds of about 10⁻⁸ for a
/// million rows).
fn hash_key(natural: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    natural.hash(&mut h);
    h.finish()
}

/// The school year a row belongs to, named by the year it ends: by its date
/// (enrollments by the entry date).
fn school_year_of(entity: Entity, row: &Row, start_month: u32) -> Option<i32> {
    use chrono::Datelike;
    let field = match entity {
        Entity::Enrollment => "entry_date",
        _ => "date",
    };
    let d = chrono::NaiveDate::parse_from_str(row.fields.get(field)?, "%Y-%m-%d").ok()?;
    Some(d.year() + i32::from(d.month() >= start_month))
}

/// The raw record of one row. `source_system` is the preset's SIS (`powerschool`, ...):
/// it picks the district's code map in the normalizer; `source` is the connector id.
/// Attendance is keyed by school, student and date (one daily record per student-day),
/// enrollment by school, student and entry date, calendars by school, calendar code and
/// date.
pub fn to_record(
    district: &str,
    source_system: &str,
    source: &str,
    entity: Entity,
    mut row: Row,
    version: i64,
) -> RawRecord {
    let op = row.fields.remove("operation").unwrap_or_default();
    let (key, natural) = keys(district, entity, &row.fields);
    let operation = match op.to_ascii_lowercase().as_str() {
        "delete" | "d" | "deleted" => RawOperation::Delete,
        _ => RawOperation::Upsert,
    };
    let observed_at_ms = rollcall_connector_kit::observed_now_ms();
    RawRecord {
        key,
        envelope: RawEnvelope {
            source_system: source_system.to_string(),
            source_instance: source.to_string(),
            district_id: district.to_string(),
            entity,
            operation,
            natural_key: natural,
            old_natural_key: None,
            source_version: version,
            observed_at_ms,
            payload_format: PayloadFormat::FlatJson,
            payload: serde_json::to_vec(&row.fields).expect("strings serialize"),
        },
    }
}
