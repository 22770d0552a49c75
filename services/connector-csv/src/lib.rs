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

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rollcall_connector_kit::{
    async_trait, Batch, Checkpoint, ConnectorError, DeadLetter, DeadLetterHeaders, Entity, Factory,
    PayloadFormat, Progress, RawEnvelope, RawOperation, RawRecord, SisConnector,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod interchange;
pub mod presets;
pub mod rows;

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
    /// SHA-256 of ingested files, most recent last.
    digests: VecDeque<String>,
    current: Option<Current>,
    /// Snapshot mode: per entity, the file name of the last complete snapshot.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    snapshots: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Current {
    file: String,
    digest: String,
    /// Data rows already published (or dead-lettered).
    rows_done: u64,
    /// The file's sequence number (source versions of its rows start above it).
    seq: u64,
    /// Snapshot mode, after the file's rows: deleting what the previous snapshot has and
    /// this one lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deletes: Option<Deletes>,
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
}

impl CsvConnector {
    pub fn new(name: &str, cfg: CsvConfig) -> anyhow::Result<Self> {
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
        Ok(CsvConnector {
            id: format!("csv:{name}"),
            cfg,
            preset,
            encoding,
            prefixes,
            open: None,
            deleting: None,
            open_xml: None,
        })
    }

    fn entity_of(&self, file: &str) -> Option<Entity> {
        let lower = file.to_lowercase();
        self.prefixes
            .iter()
            .find(|(p, _)| lower.starts_with(p.as_str()))
            .map(|(_, e)| *e)
    }

    /// Files waiting in the inbox, oldest name first (exports are named by date).
    fn waiting(&self) -> Result<Vec<String>, ConnectorError> {
        let rd = std::fs::read_dir(&self.cfg.inbox).map_err(|e| {
            ConnectorError::transient(format!("reading inbox {}: {e}", self.cfg.inbox.display()))
        })?;
        let mut names: Vec<String> = rd
            .filter_map(Result::ok)
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            // still being written, or hidden
            .filter(|n| !n.starts_with('.') && !n.ends_with(".tmp") && !n.ends_with(".part"))
            .collect();
        names.sort();
        Ok(names)
    }

    fn move_to(&self, file: &str, sub: &str, reason: Option<&str>) {
        let from = self.cfg.inbox.join(file);
        let to = self.cfg.inbox.join(sub).join(file);
        if let Err(e) = std::fs::rename(&from, &to) {
            tracing::warn!(file, error = %e, "could not move file to {sub}/");
        }
        if let Some(r) = reason {
            let _ = std::fs::write(
                self.cfg.inbox.join(sub).join(format!("{file}.reason.txt")),
                r,
            );
        }
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
            let mut picked = None;
            for name in self.waiting()? {
                let path = self.cfg.inbox.join(&name);
                let digest = digest_file(&path).map_err(|e| {
                    ConnectorError::transient(format!("reading {}: {e}", path.display()))
                })?;
                if state.digests.contains(&digest) {
                    tracing::info!(file = %name, "already ingested (same content); moving to done/");
                    metrics_duplicate(&self.id);
                    self.move_to(
                        &name,
                        "done",
                        Some("duplicate: this exact content was already ingested"),
                    );
                    continue;
                }
                picked = Some((name, digest));
                break;
            }
            let Some((file, digest)) = picked else {
                return Ok(batch(state, Vec::new(), Vec::new(), true, None));
            };
            state.current = Some(Current {
                file,
                digest,
                rows_done: 0,
                seq: state.files_done + 1,
                deletes: None,
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
            return Ok(self.reject(state, &cur, reason));
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
                Err(reason) => return Ok(self.reject(state, &cur, reason)),
            }
        }
        let (_, _, reader) = self.open.as_mut().expect("opened above");
        let mut records = Vec::new();
        let mut dead = Vec::new();
        let mut rows = 0u64;
        let mut eof = false;
        while records.len() + dead.len() < self.cfg.rows_per_batch {
            match reader.next_row() {
                None => {
                    eof = true;
                    break;
                }
                Some(Ok(row)) => {
                    rows += 1;
                    let version = ((cur.seq as i64) << 32) | (row.line as i64 & 0xffff_ffff);
                    records.push(to_record(
                        &self.cfg.district_id,
                        self.preset.name,
                        &self.id,
                        entity,
                        row,
                        version,
                    ));
                }
                Some(Err(RowError::Row { line, reason, raw })) => {
                    rows += 1;
                    dead.push(DeadLetter {
                        key: None,
                        payload: raw,
                        headers: DeadLetterHeaders {
                            stage: "connector-csv".into(),
                            kind: "csv_row_invalid".into(),
                            reason,
                            district: Some(self.cfg.district_id.clone()),
                            source_key: None,
                            source_topic: None,
                            source_partition: None,
                            source_offset: None,
                            source_file: Some(format!("{}:{line}", cur.file)),
                        },
                    });
                }
                Some(Err(RowError::File(reason))) => {
                    self.open = None;
                    return Ok(self.reject(state, &cur, reason));
                }
            }
        }
        let mut next = cur.clone();
        next.rows_done += rows;
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
                None => self.finish(&mut state, &cur, Some(entity), next.rows_done),
            }
        } else {
            state.current = Some(next.clone());
            if let Some((c, _, _)) = self.open.as_mut() {
                *c = next;
            }
        }
        Ok(batch(state, records, dead, false, progress))
    }

    /// After the checkpoint that finished a file is committed, move it out of the inbox.
    async fn committed(&mut self, cp: &Checkpoint) -> Result<(), ConnectorError> {
        let state: FileState = serde_json::from_value(cp.0.clone())
            .map_err(|e| ConnectorError::fatal(e.to_string()))?;
        if state.current.is_none() {
            for name in self.waiting()? {
                // Finished files: their digest is the newest in the checkpoint.
                if let Some(last) = state.digests.back() {
                    let path = self.cfg.inbox.join(&name);
                    if digest_file(&path).ok().as_ref() == Some(last) {
                        self.move_to(&name, "done", None);
                    }
                }
            }
        }
        Ok(())
    }
}

impl CsvConnector {
    /// The file is done: remember its digest (and, in snapshot mode, that it is the
    /// entity's latest snapshot).
    fn finish(&mut self, state: &mut FileState, cur: &Current, entity: Option<Entity>, rows: u64) {
        state.files_done += 1;
        state.digests.push_back(cur.digest.clone());
        while state.digests.len() > DIGESTS_KEPT {
            state.digests.pop_front();
        }
        if let (true, Some(entity)) = (self.cfg.snapshots, entity) {
            state
                .snapshots
                .insert(entity.as_str().to_string(), cur.file.clone());
        }
        state.current = None;
        tracing::info!(file = %cur.file, rows, "file ingested");
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
                    self.finish(&mut state, &cur, Some(entity), cur.rows_done);
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
                    let version = ((cur.seq as i64) << 32) | (row.line as i64 & 0xffff_ffff);
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
            self.finish(&mut state, &cur, Some(entity), cur.rows_done);
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

    /// Refuse a whole file: it moves to `rejected/` with the reason beside it, and the
    /// checkpoint records it as done so it is not tried again.
    fn reject(&mut self, mut state: FileState, cur: &Current, reason: String) -> Batch {
        tracing::warn!(file = %cur.file, %reason, "file rejected");
        metrics_rejected(&self.id);
        self.move_to(&cur.file, "rejected", Some(&reason));
        state.files_done += 1;
        state.digests.push_back(cur.digest.clone());
        state.current = None;
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
        batch(state, Vec::new(), vec![dl], false, None)
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
                Err(reason) => return self.reject(state, &cur, reason),
            }
        }
        let mut records = Vec::new();
        let mut dead = Vec::new();
        let mut elements = 0u64;
        let mut eof = false;
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
                    let published = cur.rows_done + elements;
                    let reason = if published == 0 {
                        e.0
                    } else {
                        format!(
                            "{} — the {published} elements before this point were already published; fix the file and drop it again (upserts are idempotent)",
                            e.0
                        )
                    };
                    return self.reject(state, &cur, reason);
                }
            };
            elements += 1;
            let ordinal = cur.rows_done + elements;
            match item {
                interchange::Item::Record(r) => {
                    let version = ((cur.seq as i64) << 32) | (ordinal as i64 & 0xffff_ffff);
                    records.push(xml_record(&self.cfg.district_id, &self.id, r, version));
                }
                interchange::Item::Skipped { element } => {
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
                    let mut dl = self.file_dead_letter(
                        "xml_element_invalid",
                        reason,
                        &format!("{}:{line}", cur.file),
                    );
                    dl.payload = xml.into_bytes();
                    dead.push(dl);
                }
            }
        }
        let mut next = cur.clone();
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
            self.finish(&mut state, &cur, None, next.rows_done);
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
