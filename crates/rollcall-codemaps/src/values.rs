//! Grade levels and exit/withdraw types: a SIS's spelling → the canonical Ed-Fi code
//! value (`rollcall_model::GRADE_LEVELS`, `EXIT_WITHDRAW_TYPES`). The built-in table
//! (`presets/common.toml`) applies to every source; a preset or district map's
//! `[grade_levels]` / `[exit_withdraw_types]` entries come before it. A value no table
//! knows is never guessed.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use rollcall_model::{canonical_exit_withdraw_type, canonical_grade_level};
use serde::Deserialize;

use crate::fold::{fold, fold_owned, strip_descriptor_namespace};

/// Which canonical list a table maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Grade,
    Exit,
}

impl Kind {
    pub(crate) fn section(self) -> &'static str {
        match self {
            Kind::Grade => "grade_levels",
            Kind::Exit => "exit_withdraw_types",
        }
    }

    fn canonical(self, name: &str) -> Option<&'static str> {
        match self {
            Kind::Grade => canonical_grade_level(name),
            Kind::Exit => canonical_exit_withdraw_type(name),
        }
    }

    fn list(self) -> &'static [&'static str] {
        match self {
            Kind::Grade => rollcall_model::GRADE_LEVELS,
            Kind::Exit => rollcall_model::EXIT_WITHDRAW_TYPES,
        }
    }
}

/// Folded SIS value → canonical code value.
pub(crate) type Table = HashMap<String, &'static str>;

/// Reads one `[grade_levels]` or `[exit_withdraw_types]` section. Every value must be a
/// canonical code value (ASCII case ignored); two keys equal after folding are an error.
pub(crate) fn read_table(
    kind: Kind,
    entries: &BTreeMap<String, toml::Value>,
) -> Result<Table, (String, String)> {
    let mut out = Table::new();
    let mut first: HashMap<String, &str> = HashMap::new();
    for (key, value) in entries {
        let at = format!("{}.{}", kind.section(), crate::parse::quote(key));
        let folded = fold_owned(key);
        if folded.is_empty() {
            return Err((at, "a value must not be empty".into()));
        }
        let name = value.as_str().ok_or_else(|| {
            (
                at.clone(),
                format!("must be a string, got {}", value.type_str()),
            )
        })?;
        let canonical = kind.canonical(name).ok_or_else(|| {
            (
                at.clone(),
                format!(
                    "{name:?} is not an Ed-Fi {} code value; expected one of: {}",
                    match kind {
                        Kind::Grade => "GradeLevelDescriptor",
                        Kind::Exit => "ExitWithdrawTypeDescriptor",
                    },
                    kind.list().join(", ")
                ),
            )
        })?;
        if let Some(prev) = first.insert(folded.clone(), key) {
            return Err((
                at,
                format!("same value as {prev:?} once case and spaces are ignored; keep one"),
            ));
        }
        out.insert(folded, canonical);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonFile {
    #[serde(default)]
    grade_levels: BTreeMap<String, toml::Value>,
    #[serde(default)]
    exit_withdraw_types: BTreeMap<String, toml::Value>,
}

/// The built-in table of `presets/common.toml`, for every source.
pub(crate) struct Common {
    pub grades: Table,
    pub exits: Table,
}

pub(crate) const COMMON_TOML: &str = include_str!("../presets/common.toml");

pub(crate) fn parse_common(text: &str) -> Result<Common, String> {
    let file: CommonFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let grades =
        read_table(Kind::Grade, &file.grade_levels).map_err(|(k, p)| format!("{k}: {p}"))?;
    let exits =
        read_table(Kind::Exit, &file.exit_withdraw_types).map_err(|(k, p)| format!("{k}: {p}"))?;
    Ok(Common { grades, exits })
}

/// Tested to parse (`tests::the_common_table_parses`); empty if it ever did not.
pub(crate) static COMMON: LazyLock<Common> = LazyLock::new(|| {
    parse_common(COMMON_TOML).unwrap_or_else(|_| Common {
        grades: Table::new(),
        exits: Table::new(),
    })
});

/// Maps a SIS value: the map's own table, then the built-in one, then the canonical
/// names themselves; each tried with the value as given and then, for a descriptor URI,
/// with its code value.
pub(crate) fn map_value(kind: Kind, own: Option<&Table>, value: &str) -> Option<&'static str> {
    let common = match kind {
        Kind::Grade => &COMMON.grades,
        Kind::Exit => &COMMON.exits,
    };
    let try_one = |v: &str| {
        fold(v, |folded| {
            own.and_then(|t| t.get(folded))
                .or_else(|| common.get(folded))
                .copied()
                .or_else(|| kind.canonical(folded))
        })
    };
    try_one(value).or_else(|| strip_descriptor_namespace(value).and_then(try_one))
}
