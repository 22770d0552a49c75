//! District code maps: which canonical category each SIS attendance code means, from TOML
//! files and built-in presets (edfi, powerschool, infinite_campus, skyward, generic).
//! A code not in the map is never guessed. No I/O except the explicit `load_*` helpers;
//! knows nothing of Kafka, Avro, payload formats or policy.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rollcall_model::Category;

mod fold;
mod parse;
mod values;

use fold::{fold, strip_descriptor_namespace};

/// What a code means: its canonical category and the share of the day it misses when
/// the record itself does not say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mapping {
    pub category: Category,
    pub absent_fraction: f64,
}

/// A code map could not be read or is invalid. Names the file, the key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum CodeMapError {
    #[error("code map {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("code map {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("code map {origin}: {key}: {problem}")]
    Invalid {
        origin: String,
        key: String,
        problem: String,
    },
    #[error(
        "code map {origin}: district {district_id:?} already has a map for source system \
         {source_system:?} (from {other}); keep one file per district and source system"
    )]
    Duplicate {
        origin: String,
        other: String,
        district_id: String,
        source_system: String,
    },
}

/// A code that cannot be mapped. Never guessed: the record goes to the dead letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error(
        "code {code:?}{} from source system {source_system:?} is not in the code map for \
         district {district_id:?} ({origin}); add it to that district's code map",
        secondary_code.as_ref().map(|s| format!(" with secondary code {s:?}")).unwrap_or_default()
    )]
    UnknownCode {
        district_id: String,
        source_system: String,
        code: String,
        secondary_code: Option<String>,
        /// The file or preset that was consulted.
        origin: String,
    },
    #[error(
        "no code map for district {district_id:?} and source system {source_system:?}, and no \
         built-in preset of that name ({}); add a code map for it (it may `extends` a preset)",
        PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
    )]
    NoCodeMap {
        district_id: String,
        source_system: String,
    },
    #[error(
        "grade level {value:?} from source system {source_system:?} is not in the grade levels of \
         district {district_id:?} ({origin}) nor the built-in table; add it to that district's \
         code map under [grade_levels] (value = an Ed-Fi GradeLevelDescriptor code value)"
    )]
    UnknownGradeLevel {
        district_id: String,
        source_system: String,
        value: String,
        origin: String,
    },
    #[error(
        "exit/withdraw type {value:?} from source system {source_system:?} is not in the exit \
         types of district {district_id:?} ({origin}) nor the built-in table; add it to that \
         district's code map under [exit_withdraw_types] (value = an Ed-Fi \
         ExitWithdrawTypeDescriptor code value)"
    )]
    UnknownExitType {
        district_id: String,
        source_system: String,
        value: String,
        origin: String,
    },
}

/// The entries for one code: one for any secondary code, and one per secondary code
/// (the empty secondary code means "none given").
#[derive(Debug, Clone, Default)]
struct Slot {
    any: Option<Mapping>,
    by_secondary: HashMap<String, Mapping>,
}

/// One code map: a built-in preset or a district's file (possibly extending a preset).
#[derive(Debug, Clone)]
pub struct CodeMap {
    origin: String,
    district_id: Option<String>,
    source_system: String,
    description: Option<String>,
    /// The preset a district map builds on (already applied once inserted).
    extends: Option<String>,
    strip_namespace: Option<bool>,
    /// Keyed by the folded code (lower case, trimmed, single spaces).
    slots: HashMap<String, Slot>,
    /// `[grade_levels]`: folded SIS value → canonical grade level.
    grades: values::Table,
    /// `[exit_withdraw_types]`: folded SIS value → canonical exit/withdraw type.
    exits: values::Table,
}

/// One entry of a map, for listing and documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<'a> {
    /// The folded code.
    pub code: &'a str,
    /// `None`: any secondary code; `Some("")`: no secondary code given.
    pub secondary_code: Option<&'a str>,
    pub mapping: Mapping,
}

impl CodeMap {
    /// Parses a district code map; `origin` (usually the file path) names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<CodeMap, CodeMapError> {
        parse::parse(text, origin, true)
    }

    /// Reads and parses a district code map file.
    pub fn load_file(path: impl AsRef<Path>) -> Result<CodeMap, CodeMapError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| CodeMapError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// A built-in preset by name (`edfi`, `powerschool`, `infinite_campus`, `skyward`,
    /// `generic`).
    pub fn preset(name: &str) -> Option<CodeMap> {
        let (_, text) = PRESETS.iter().find(|(n, _)| *n == name)?;
        // Presets are tested to parse; a failure here is a build defect, reported as None.
        parse::parse(text, &format!("preset {name}"), false).ok()
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }
    /// `None` for a preset.
    pub fn district_id(&self) -> Option<&str> {
        self.district_id.as_deref()
    }
    pub fn source_system(&self) -> &str {
        &self.source_system
    }
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    /// Whether codes are also matched by their code value after a descriptor URI's `#`.
    /// The preset a district map extends.
    pub fn extends(&self) -> Option<&str> {
        self.extends.as_deref()
    }
    pub fn strips_descriptor_namespace(&self) -> bool {
        self.strip_namespace.unwrap_or(false)
    }

    /// Maps a code and optional secondary code. Precedence: the exact code (as a full
    /// descriptor URI, if given as one) before its namespace-stripped code value; within
    /// a code, the entry for the given secondary code (or for "none given") before the
    /// entry for any secondary code. Matching ignores case and runs of spaces.
    pub fn get(&self, code: &str, secondary_code: Option<&str>) -> Option<Mapping> {
        let secondary = secondary_code.map(str::trim).unwrap_or("");
        let try_code = |c: &str| {
            fold(c, |folded| {
                let slot = self.slots.get(folded)?;
                fold(secondary, |s| slot.by_secondary.get(s).copied()).or(slot.any)
            })
        };
        try_code(code).or_else(|| {
            self.strips_descriptor_namespace()
                .then(|| strip_descriptor_namespace(code))
                .flatten()
                .and_then(try_code)
        })
    }

    /// Every entry, sorted by code then secondary code.
    pub fn entries(&self) -> Vec<Entry<'_>> {
        let mut out = Vec::new();
        for (code, slot) in &self.slots {
            if let Some(m) = slot.any {
                out.push(Entry {
                    code,
                    secondary_code: None,
                    mapping: m,
                });
            }
            for (s, m) in &slot.by_secondary {
                out.push(Entry {
                    code,
                    secondary_code: Some(s),
                    mapping: *m,
                });
            }
        }
        out.sort_by(|a, b| (a.code, a.secondary_code).cmp(&(b.code, b.secondary_code)));
        out
    }

    /// The canonical grade level of a SIS value: this map's `[grade_levels]`, then the
    /// built-in table (`presets/common.toml`), then the Ed-Fi code values themselves;
    /// a descriptor URI also by its code value. Case and runs of spaces are ignored.
    pub fn grade_level(&self, value: &str) -> Option<&'static str> {
        values::map_value(values::Kind::Grade, Some(&self.grades), value)
    }

    /// The canonical exit/withdraw type of a SIS value, looked up like `grade_level`.
    pub fn exit_withdraw_type(&self, value: &str) -> Option<&'static str> {
        values::map_value(values::Kind::Exit, Some(&self.exits), value)
    }

    /// This map's own `[grade_levels]` entries (folded value, canonical), sorted.
    pub fn grade_entries(&self) -> Vec<(&str, &'static str)> {
        sorted(&self.grades)
    }

    /// This map's own `[exit_withdraw_types]` entries (folded value, canonical), sorted.
    pub fn exit_type_entries(&self) -> Vec<(&str, &'static str)> {
        sorted(&self.exits)
    }

    /// Lays `self`'s entries over `base`'s (a district map over the preset it extends):
    /// a code the district maps in any form replaces all of the preset's entries for it.
    fn over(mut self, base: &CodeMap) -> CodeMap {
        let mut slots = base.slots.clone();
        slots.extend(self.slots.drain());
        self.slots = slots;
        let mut grades = base.grades.clone();
        grades.extend(self.grades.drain());
        self.grades = grades;
        let mut exits = base.exits.clone();
        exits.extend(self.exits.drain());
        self.exits = exits;
        self.strip_namespace = self.strip_namespace.or(base.strip_namespace);
        self
    }
}

fn sorted(t: &values::Table) -> Vec<(&str, &'static str)> {
    let mut v: Vec<(&str, &'static str)> = t.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    v.sort();
    v
}

/// The built-in grade level of a SIS value with no code map at all: the built-in table
/// (`presets/common.toml`) and the Ed-Fi code values.
pub fn builtin_grade_level(value: &str) -> Option<&'static str> {
    values::map_value(values::Kind::Grade, None, value)
}

/// The built-in exit/withdraw type of a SIS value with no code map at all.
pub fn builtin_exit_withdraw_type(value: &str) -> Option<&'static str> {
    values::map_value(values::Kind::Exit, None, value)
}

/// (folded SIS value, canonical code value) pairs, sorted.
pub type ValueEntries = Vec<(&'static str, &'static str)>;

/// The built-in table's own entries (`presets/common.toml`): grade levels and exit
/// types, each (folded value, canonical) sorted. For documentation and tests.
pub fn builtin_value_entries() -> (ValueEntries, ValueEntries) {
    (
        sorted(&values::COMMON.grades),
        sorted(&values::COMMON.exits),
    )
}

/// The built-in presets: name and TOML text (the same format as district maps).
pub const PRESETS: &[(&str, &str)] = &[
    ("edfi", include_str!("../presets/edfi.toml")),
    ("powerschool", include_str!("../presets/powerschool.toml")),
    (
        "infinite_campus",
        include_str!("../presets/infinite_campus.toml"),
    ),
    ("skyward", include_str!("../presets/skyward.toml")),
    ("generic", include_str!("../presets/generic.toml")),
];

/// All code maps in force: district maps keyed by (district, source system), with the
/// built-in preset of the same source system as the fallback.
#[derive(Debug, Clone, Default)]
pub struct CodeMapRegistry {
    presets: HashMap<String, Arc<CodeMap>>,
    /// district (lower case) → source system → map.
    districts: HashMap<String, HashMap<String, Arc<CodeMap>>>,
}

impl CodeMapRegistry {
    /// No maps at all: every lookup fails with `NoCodeMap`.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The built-in presets, no district maps.
    pub fn with_builtins() -> Self {
        let mut r = Self::default();
        for (name, _) in PRESETS {
            if let Some(map) = CodeMap::preset(name) {
                r.presets.insert(map.source_system.clone(), Arc::new(map));
            }
        }
        r
    }

    /// Adds a district map (a preset it `extends` was applied when it was parsed).
    pub fn insert(&mut self, map: CodeMap) -> Result<(), CodeMapError> {
        let district = map
            .district_id
            .clone()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let by_source = self.districts.entry(district).or_default();
        if let Some(other) = by_source.get(&map.source_system) {
            return Err(CodeMapError::Duplicate {
                origin: map.origin.clone(),
                other: other.origin.clone(),
                district_id: map.district_id.clone().unwrap_or_default(),
                source_system: map.source_system.clone(),
            });
        }
        by_source.insert(map.source_system.clone(), Arc::new(map));
        Ok(())
    }

    /// Reads one district map file and adds it.
    pub fn load_file(&mut self, path: impl AsRef<Path>) -> Result<(), CodeMapError> {
        self.insert(CodeMap::load_file(path)?)
    }

    /// Reads every `*.toml` file of a directory (sorted by name) and adds it. Returns
    /// how many maps were added.
    pub fn load_dir(&mut self, dir: impl AsRef<Path>) -> Result<usize, CodeMapError> {
        let dir = dir.as_ref();
        let read_err = |source| CodeMapError::Read {
            path: dir.to_owned(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        for p in &paths {
            self.load_file(p)?;
        }
        Ok(paths.len())
    }

    /// The map in force for a district and source system: the district's own, else the
    /// preset named like the source system. District ids match ignoring ASCII case.
    pub fn get(&self, district_id: &str, source_system: &str) -> Option<&CodeMap> {
        let own = if district_id.bytes().any(|b| b.is_ascii_uppercase()) {
            self.districts.get(&district_id.to_ascii_lowercase())
        } else {
            self.districts.get(district_id)
        };
        own.and_then(|m| m.get(source_system))
            .or_else(|| self.presets.get(source_system))
            .map(Arc::as_ref)
    }

    /// Maps one code for a district and source system.
    pub fn lookup(
        &self,
        district_id: &str,
        source_system: &str,
        code: &str,
        secondary_code: Option<&str>,
    ) -> Result<Mapping, LookupError> {
        let map = self
            .get(district_id, source_system)
            .ok_or_else(|| LookupError::NoCodeMap {
                district_id: district_id.to_string(),
                source_system: source_system.to_string(),
            })?;
        map.get(code, secondary_code)
            .ok_or_else(|| LookupError::UnknownCode {
                district_id: district_id.to_string(),
                source_system: source_system.to_string(),
                code: code.to_string(),
                secondary_code: secondary_code.map(str::to_string),
                origin: map.origin.clone(),
            })
    }

    /// The canonical grade level of a SIS value for a district and source system: the
    /// map in force (district's own, else the preset), then the built-in table. A
    /// source with no map at all still gets the built-in table (grades need no
    /// attendance code map). Never guessed: unknown → `UnknownGradeLevel`.
    pub fn grade_level(
        &self,
        district_id: &str,
        source_system: &str,
        value: &str,
    ) -> Result<&'static str, LookupError> {
        let map = self.get(district_id, source_system);
        map.map_or_else(|| builtin_grade_level(value), |m| m.grade_level(value))
            .ok_or_else(|| LookupError::UnknownGradeLevel {
                district_id: district_id.to_string(),
                source_system: source_system.to_string(),
                value: value.to_string(),
                origin: map.map_or("no code map", |m| m.origin.as_str()).to_string(),
            })
    }

    /// The canonical exit/withdraw type of a SIS value, looked up like `grade_level`.
    pub fn exit_withdraw_type(
        &self,
        district_id: &str,
        source_system: &str,
        value: &str,
    ) -> Result<&'static str, LookupError> {
        let map = self.get(district_id, source_system);
        map.map_or_else(
            || builtin_exit_withdraw_type(value),
            |m| m.exit_withdraw_type(value),
        )
        .ok_or_else(|| LookupError::UnknownExitType {
            district_id: district_id.to_string(),
            source_system: source_system.to_string(),
            value: value.to_string(),
            origin: map.map_or("no code map", |m| m.origin.as_str()).to_string(),
        })
    }

    /// Every (district, source system) that has its own map, sorted.
    pub fn district_maps(&self) -> Vec<(&str, &str)> {
        let mut v: Vec<(&str, &str)> = self
            .districts
            .values()
            .flat_map(|m| {
                m.values().map(|c| {
                    (
                        c.district_id.as_deref().unwrap_or(""),
                        c.source_system.as_str(),
                    )
                })
            })
            .collect();
        v.sort();
        v
    }
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.category, self.absent_fraction)
    }
}

#[cfg(test)]
mod tests;
