//! The TOML format of code maps (documented in docs/normalization.md). Entries are read
//! by hand from `toml::Value` so every error names the file, the key and the problem.

use std::collections::{BTreeMap, HashMap};

use rollcall_model::Category;
use serde::Deserialize;

use crate::fold::fold_owned;
use crate::{values, CodeMap, CodeMapError, Mapping, Slot, PRESETS};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    district_id: Option<String>,
    source_system: String,
    extends: Option<String>,
    description: Option<String>,
    strip_descriptor_namespace: Option<bool>,
    #[serde(default)]
    codes: BTreeMap<String, toml::Value>,
    #[serde(default)]
    secondary_codes: BTreeMap<String, BTreeMap<String, toml::Value>>,
    #[serde(default)]
    grade_levels: BTreeMap<String, toml::Value>,
    #[serde(default)]
    exit_withdraw_types: BTreeMap<String, toml::Value>,
}

pub(crate) fn parse(text: &str, origin: &str, district: bool) -> Result<CodeMap, CodeMapError> {
    let file: File = toml::from_str(text).map_err(|e| CodeMapError::Parse {
        origin: origin.to_string(),
        message: e.to_string().trim_end().replace('\n', " | "),
    })?;
    let invalid = |key: String, problem: String| CodeMapError::Invalid {
        origin: origin.to_string(),
        key,
        problem,
    };
    let source_system = file.source_system.trim().to_string();
    if source_system.is_empty() {
        return Err(invalid("source_system".into(), "must not be empty".into()));
    }
    let district_id = match (district, file.district_id) {
        (true, None) => {
            return Err(invalid(
                "district_id".into(),
                "is required in a district code map".into(),
            ))
        }
        (true, Some(d)) if d.trim().is_empty() => {
            return Err(invalid("district_id".into(), "must not be empty".into()))
        }
        (true, Some(d)) => Some(d.trim().to_string()),
        (false, _) => None,
    };
    if let Some(name) = &file.extends {
        if !PRESETS.iter().any(|(p, _)| p == name) {
            return Err(invalid(
                "extends".into(),
                format!(
                    "no built-in preset {name:?}; presets are {}",
                    PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }

    // Folded code → (spelling as written, slot), to report collisions by their spelling.
    let mut slots: HashMap<String, (String, Slot)> = HashMap::new();
    for (code, value) in &file.codes {
        let key = format!("codes.{}", quote(code));
        let mapping = entry(value).map_err(|p| invalid(key.clone(), p))?;
        let (first, slot) = slot_for(&mut slots, code).map_err(|p| invalid(key.clone(), p))?;
        if slot.any.is_some() {
            return Err(invalid(key, same_code(&first)));
        }
        slot.any = Some(mapping);
    }
    for (code, table) in &file.secondary_codes {
        let (_, slot) = slot_for(&mut slots, code)
            .map_err(|p| invalid(format!("secondary_codes.{}", quote(code)), p))?;
        for (secondary, value) in table {
            let key = format!("secondary_codes.{}.{}", quote(code), quote(secondary));
            let mapping = entry(value).map_err(|p| invalid(key.clone(), p))?;
            if slot
                .by_secondary
                .insert(fold_owned(secondary), mapping)
                .is_some()
            {
                return Err(invalid(
                    key,
                    "maps a code and secondary code already mapped (case and spaces are ignored); keep one".into(),
                ));
            }
        }
    }
    let grades = values::read_table(values::Kind::Grade, &file.grade_levels)
        .map_err(|(k, p)| invalid(k, p))?;
    let exits = values::read_table(values::Kind::Exit, &file.exit_withdraw_types)
        .map_err(|(k, p)| invalid(k, p))?;
    if slots.is_empty() && grades.is_empty() && exits.is_empty() && file.extends.is_none() {
        return Err(invalid(
            "codes".into(),
            "maps no code; add [codes], [secondary_codes], [grade_levels] or [exit_withdraw_types] entries, or `extends` a preset".into(),
        ));
    }

    let map = CodeMap {
        origin: origin.to_string(),
        district_id,
        source_system,
        description: file.description,
        extends: file.extends.clone(),
        strip_namespace: file.strip_descriptor_namespace,
        slots: slots.into_iter().map(|(k, (_, s))| (k, s)).collect(),
        grades,
        exits,
    };
    match file.extends.as_deref().and_then(CodeMap::preset) {
        Some(base) => Ok(map.over(&base)),
        None => Ok(map),
    }
}

fn slot_for<'a>(
    slots: &'a mut HashMap<String, (String, Slot)>,
    code: &str,
) -> Result<(String, &'a mut Slot), String> {
    let folded = fold_owned(code);
    if folded.is_empty() {
        return Err("a code must not be empty".into());
    }
    let (first, slot) = slots
        .entry(folded)
        .or_insert_with(|| (code.to_string(), Slot::default()));
    Ok((first.clone(), slot))
}

fn same_code(first: &str) -> String {
    format!("same code as {first:?} once case and spaces are ignored; keep one")
}

/// An entry: `"category"` or `{ category = "...", absent_fraction = 0.5 }`.
fn entry(value: &toml::Value) -> Result<Mapping, String> {
    let category_of = |v: &toml::Value| -> Result<Category, String> {
        let s = v
            .as_str()
            .ok_or_else(|| format!("category must be a string, got {}", v.type_str()))?;
        s.parse::<Category>().map_err(|e| e.to_string())
    };
    match value {
        toml::Value::String(_) => {
            let category = category_of(value)?;
            Ok(Mapping {
                category,
                absent_fraction: category.default_absent_fraction(),
            })
        }
        toml::Value::Table(t) => {
            if let Some(k) = t
                .keys()
                .find(|k| !["category", "absent_fraction"].contains(&k.as_str()))
            {
                return Err(format!(
                    "unknown key {k:?}; an entry has `category` and optional `absent_fraction`"
                ));
            }
            let category = category_of(t.get("category").ok_or("`category` is missing")?)?;
            let absent_fraction = match t.get("absent_fraction") {
                None => category.default_absent_fraction(),
                Some(v) => {
                    let f = v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
                    match f {
                        Some(f) if (0.0..=1.0).contains(&f) => f,
                        Some(f) => {
                            return Err(format!("absent_fraction must be in [0, 1], got {f}"))
                        }
                        None => {
                            return Err(format!(
                                "absent_fraction must be a number, got {}",
                                v.type_str()
                            ))
                        }
                    }
                }
            };
            if !category.takes_duration() && absent_fraction != 0.0 {
                return Err(format!(
                    "absent_fraction must be 0 for {category} (it is never an absence), got {absent_fraction}"
                ));
            }
            Ok(Mapping {
                category,
                absent_fraction,
            })
        }
        other => Err(format!(
            "must be a category name or {{ category = \"...\", absent_fraction = ... }}, got {}",
            other.type_str()
        )),
    }
}

/// A key as TOML would write it.
pub(crate) fn quote(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}
