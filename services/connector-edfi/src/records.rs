//! Ed-Fi items → raw records: natural keys, Kafka keys and source versions.
//!
//! Source versions are the kit's (`rollcall_connector_kit::source_version`): the
//! window's base, taken from the clock when the window opened and kept in the
//! checkpoint, plus an ordinal within the window `[min, max]`: `4·(cv − min) + 0` for a
//! key change (exact change version `cv`), `4·(max − min) + 1` for a changed record
//! (items carry no change version of their own), `4·(cv − min) + 2` for a delete. So
//! within a window a key change is overridden by the full record that follows it, and a
//! delete wins only if nothing re-created the record later; across windows — and
//! against the XML interchanges and CSV files of the file-drop connector — what was
//! observed later wins.

use rollcall_connector_kit::{Entity, PayloadFormat, RawEnvelope, RawOperation, RawRecord};

/// How the items of one change window `[min, max]` are versioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowVersions {
    pub min: i64,
    pub max: i64,
    /// The window's segment base (`rollcall_connector_kit::segment_base`).
    pub base: i64,
}

impl WindowVersions {
    /// The version of an item at change version `cv` (clamped into the window), of
    /// kind `k` (0 key change, 1 changed record, 2 delete).
    pub fn at(&self, cv: i64, k: i64) -> i64 {
        let cv = cv.clamp(self.min, self.max.max(self.min));
        let ordinal = 4i64
            .saturating_mul(cv.saturating_sub(self.min))
            .saturating_add(k);
        rollcall_connector_kit::source_version(self.base, ordinal.max(0) as u64)
    }
    /// The version of a changed record read in this window.
    pub fn change(&self) -> i64 {
        self.at(self.max, 1)
    }
    /// The first version above every version of this window.
    pub fn end(&self) -> i64 {
        self.at(self.max, 3)
    }
    /// Whether every version of the window `[min, max]` from `base` is exact: `min ≥ 0`,
    /// `min ≤ max + 1` and `base + 4·(max − min) + 3` held by an i64 without saturating.
    /// A window that does not fit would give its items versions that collide at
    /// `i64::MAX` (and a checkpoint no later window can follow), so it is never opened.
    pub fn fits(base: i64, min: i64, max: i64) -> bool {
        min >= 0
            && max.checked_add(1).is_some_and(|m| min <= m)
            && max
                .checked_sub(min)
                .and_then(|d| d.max(0).checked_mul(4))
                .and_then(|o| o.checked_add(3))
                .and_then(|o| base.checked_add(o))
                .is_some()
    }
}
use serde_json::value::RawValue;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    KeyChange,
    Change,
    Delete,
}

impl ItemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::KeyChange => "key changes",
            ItemKind::Change => "changes",
            ItemKind::Delete => "deletes",
        }
    }
    pub fn path_suffix(self) -> &'static str {
        match self {
            ItemKind::KeyChange => "/keyChanges",
            ItemKind::Change => "",
            ItemKind::Delete => "/deletes",
        }
    }
}

fn entity_of(resource: &str) -> Result<Entity, String> {
    match resource {
        "studentSchoolAttendanceEvents" => Ok(Entity::Attendance),
        "studentSchoolAssociations" => Ok(Entity::Enrollment),
        "calendarDates" => Ok(Entity::Calendar),
        other => Err(format!("resource {other} is not one rollcall reads")),
    }
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

/// The only parts of a changed item its identity comes from, read without building the
/// whole item (the hot path of a load: a full `Value` per item costs more than the rest
/// of the connector). Anything this shape cannot read (an item that is not an object,
/// a reference that is not an object, a duplicate field) goes the general way, through
/// `Value`, so both ways give the same keys and the same errors.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangeKeys<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    attendance_event_category_descriptor: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    event_date: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    entry_date: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    date: Option<&'a RawValue>,
    #[serde(borrow)]
    school_reference: Option<RefKeys<'a>>,
    #[serde(borrow)]
    session_reference: Option<RefKeys<'a>>,
    #[serde(borrow)]
    student_reference: Option<RefKeys<'a>>,
    #[serde(borrow)]
    calendar_reference: Option<RefKeys<'a>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefKeys<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    school_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    school_year: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    session_name: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    student_unique_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    calendar_code: Option<&'a RawValue>,
}

/// A field that is there, even as `null` (which `Option` alone would read as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue as serde::Deserialize>::deserialize(d).map(Some)
}

impl ChangeKeys<'_> {
    fn get(&self, path: &[&str]) -> Option<Value> {
        let leaf = match path {
            ["attendanceEventCategoryDescriptor"] => self.attendance_event_category_descriptor,
            ["eventDate"] => self.event_date,
            ["entryDate"] => self.entry_date,
            ["date"] => self.date,
            [reference, field] => {
                let r = match *reference {
                    "schoolReference" => self.school_reference.as_ref(),
                    "sessionReference" => self.session_reference.as_ref(),
                    "studentReference" => self.student_reference.as_ref(),
                    "calendarReference" => self.calendar_reference.as_ref(),
                    _ => None,
                }?;
                match *field {
                    "schoolId" => r.school_id,
                    "schoolYear" => r.school_year,
                    "sessionName" => r.session_name,
                    "studentUniqueId" => r.student_unique_id,
                    "calendarCode" => r.calendar_code,
                    _ => None,
                }
            }
            _ => None,
        }?;
        serde_json::from_str(leaf.get()).ok()
    }
}

/// The identity of a changed item, read the quick way when it can be.
fn key_values_of_item(resource: &str, item: &RawValue) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<ChangeKeys>(item.get()) {
        Ok(keys) => key_values_with(resource, |path| keys.get(path)),
        Err(_) => {
            let v: Value =
                serde_json::from_str(item.get()).map_err(|e| format!("not JSON: {e}"))?;
            key_values_of_change(resource, &v)
        }
    }
}

/// The identity of a changed resource item, flattened the way Ed-Fi flattens
/// `keyValues` in deletes and key changes.
fn key_values_of_change(resource: &str, item: &Value) -> Result<Map<String, Value>, String> {
    key_values_with(resource, |path| get(item, path).cloned())
}

fn key_values_with(
    resource: &str,
    get: impl Fn(&[&str]) -> Option<Value>,
) -> Result<Map<String, Value>, String> {
    let fields: &[(&str, &[&str])] = match resource {
        "studentSchoolAttendanceEvents" => &[
            (
                "attendanceEventCategoryDescriptor",
                &["attendanceEventCategoryDescriptor"],
            ),
            ("eventDate", &["eventDate"]),
            ("schoolId", &["schoolReference", "schoolId"]),
            ("schoolYear", &["sessionReference", "schoolYear"]),
            ("sessionName", &["sessionReference", "sessionName"]),
            ("studentUniqueId", &["studentReference", "studentUniqueId"]),
        ],
        "studentSchoolAssociations" => &[
            ("entryDate", &["entryDate"]),
            ("schoolId", &["schoolReference", "schoolId"]),
            ("studentUniqueId", &["studentReference", "studentUniqueId"]),
        ],
        "calendarDates" => &[
            ("calendarCode", &["calendarReference", "calendarCode"]),
            ("date", &["date"]),
            ("schoolId", &["calendarReference", "schoolId"]),
            ("schoolYear", &["calendarReference", "schoolYear"]),
        ],
        other => return Err(format!("resource {other} is not one rollcall reads")),
    };
    let mut m = Map::new();
    for (name, path) in fields {
        let v = get(path).ok_or_else(|| format!("missing {}", path.join(".")))?;
        m.insert((*name).to_string(), v);
    }
    Ok(m)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `resource:k1=v1|k2=v2...` with keys sorted (the kit's rendering, shared with the
/// file-drop connector's interchange reader).
pub fn natural_key(resource: &str, kv: &Map<String, Value>) -> String {
    rollcall_connector_kit::edfi_natural_key(resource, kv)
}

fn field<'a>(kv: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    kv.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Build the raw record for one item read in the window `versions`; `district_of` maps
/// a school id to its district.
pub fn record_from_item(
    kind: ItemKind,
    resource: &str,
    item: &RawValue,
    versions: &WindowVersions,
    district_of: &dyn Fn(&str) -> String,
    source_instance: &str,
) -> Result<RawRecord, String> {
    let entity = entity_of(resource)?;
    if kind == ItemKind::Change {
        let kv = key_values_of_item(resource, item)?;
        return build_record(
            entity,
            resource,
            item,
            (RawOperation::Upsert, kv, None, versions.change()),
            district_of,
            source_instance,
        );
    }
    let v: Value = serde_json::from_str(item.get()).map_err(|e| format!("not JSON: {e}"))?;
    let change_version = || {
        v.get("changeVersion")
            .and_then(Value::as_i64)
            .unwrap_or(versions.max)
    };
    let as_map = |name: &str| -> Result<Map<String, Value>, String> {
        v.get(name)
            .and_then(Value::as_object)
            .cloned()
            .ok_or_else(|| format!("missing {name}"))
    };
    let parts = match kind {
        ItemKind::Change => (
            RawOperation::Upsert,
            key_values_of_change(resource, &v)?,
            None,
            versions.change(),
        ),
        ItemKind::Delete => (
            RawOperation::Delete,
            as_map("keyValues")?,
            None,
            versions.at(change_version(), 2),
        ),
        ItemKind::KeyChange => (
            RawOperation::KeyChange,
            as_map("newKeyValues")?,
            Some(as_map("oldKeyValues")?),
            versions.at(change_version(), 0),
        ),
    };
    build_record(entity, resource, item, parts, district_of, source_instance)
}

type RecordParts = (
    RawOperation,
    Map<String, Value>,
    Option<Map<String, Value>>,
    i64,
);

fn build_record(
    entity: Entity,
    resource: &str,
    item: &RawValue,
    (operation, kv, old_kv, version): RecordParts,
    district_of: &dyn Fn(&str) -> String,
    source_instance: &str,
) -> Result<RawRecord, String> {
    let school = field(&kv, "schoolId")
        .map(text)
        .ok_or("missing schoolId in the key")?;
    let district = district_of(&school);
    let key = match entity {
        Entity::Calendar => rollcall_model::school_key(&district, &school),
        _ => {
            let student = field(&kv, "studentUniqueId")
                .map(text)
                .ok_or("missing studentUniqueId in the key")?;
            rollcall_model::student_key(&district, &student)
        }
    };
    let observed_at_ms = rollcall_connector_kit::observed_now_ms();
    Ok(RawRecord {
        key,
        envelope: RawEnvelope {
            source_system: "edfi".into(),
            source_instance: source_instance.to_string(),
            district_id: district,
            entity,
            operation,
            natural_key: natural_key(resource, &kv),
            old_natural_key: old_kv.map(|o| natural_key(resource, &o)),
            source_version: version,
            observed_at_ms,
            payload_format: PayloadFormat::EdfiJson,
            payload: item.get().as_bytes().to_vec(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_fits_only_when_every_version_is_exact() {
        let base = rollcall_connector_kit::segment_base(1_760_000_000_000, None);
        assert!(WindowVersions::fits(base, 0, 1 << 50));
        assert!(WindowVersions::fits(base, 0, -1), "an empty window");
        let max = (i64::MAX - base - 3) / 4;
        assert!(WindowVersions::fits(base, 0, max));
        assert!(!WindowVersions::fits(base, 0, max + 1));
        assert!(!WindowVersions::fits(base, 0, i64::MAX));
        assert!(
            !WindowVersions::fits(base, -1, 10),
            "negative change versions"
        );
        assert!(!WindowVersions::fits(base, 20, 10), "inverted");
        assert!(!WindowVersions::fits(i64::MAX, 0, 0));
        let v = WindowVersions { min: 0, max, base };
        assert!(
            v.change() < v.at(max, 2) && v.at(max, 2) < v.end(),
            "none saturates"
        );
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    const EVENT: &str = r#"{"id":"x","schoolReference":{"schoolId":255901107},
      "sessionReference":{"schoolId":255901107,"schoolYear":2011,"sessionName":"2010-2011 Fall Semester"},
      "studentReference":{"studentUniqueId":"604877"},
      "attendanceEventCategoryDescriptor":"uri://ed-fi.org/AttendanceEventCategoryDescriptor#Unexcused Absence",
      "eventDate":"2010-08-25","eventDuration":1}"#;

    #[test]
    fn the_quick_key_reader_agrees_with_the_general_one() {
        let items = [
            (EVENT, "studentSchoolAttendanceEvents"),
            // null leaves are values, not missing
            (
                r#"{"schoolReference":{"schoolId":1},"sessionReference":{"schoolId":1,"schoolYear":null,"sessionName":"F"},"studentReference":{"studentUniqueId":"s"},"attendanceEventCategoryDescriptor":"x","eventDate":"2010-08-25"}"#,
                "studentSchoolAttendanceEvents",
            ),
            // a missing field, a reference that is not an object, a duplicate field
            (
                r#"{"schoolReference":{"schoolId":1},"studentReference":{"studentUniqueId":"s"},"attendanceEventCategoryDescriptor":"x","eventDate":"2010-08-25"}"#,
                "studentSchoolAttendanceEvents",
            ),
            (
                r#"{"schoolReference":7,"sessionReference":{"schoolId":1,"schoolYear":2011,"sessionName":"F"},"studentReference":{"studentUniqueId":"s"},"attendanceEventCategoryDescriptor":"x","eventDate":"2010-08-25"}"#,
                "studentSchoolAttendanceEvents",
            ),
            (
                r#"{"eventDate":"2010-08-24","schoolReference":{"schoolId":1},"sessionReference":{"schoolId":1,"schoolYear":2011,"sessionName":"F"},"studentReference":{"studentUniqueId":"s"},"attendanceEventCategoryDescriptor":"x","eventDate":"2010-08-25"}"#,
                "studentSchoolAttendanceEvents",
            ),
            // escapes, numbers as strings, extra nesting ignored
            (
                r#"{"schoolReference":{"schoolId":"0012","link":{"rel":"School"}},"studentReference":{"studentUniqueId":"a\"b\u00e9"},"entryDate":"2024-08-20","extra":[1,{"a":2}]}"#,
                "studentSchoolAssociations",
            ),
            (
                r#"{"calendarReference":{"calendarCode":"REG","schoolId":5,"schoolYear":2025},"date":"2024-09-02","calendarEvents":[]}"#,
                "calendarDates",
            ),
            (r#"[1,2]"#, "calendarDates"),
            (r#""text""#, "studentSchoolAssociations"),
        ];
        for (json, resource) in items {
            let quick = key_values_of_item(resource, &raw(json));
            let general = serde_json::from_str::<Value>(json)
                .map_err(|e| format!("not JSON: {e}"))
                .and_then(|v| key_values_of_change(resource, &v));
            assert_eq!(quick, general, "{json}");
        }
        // and the quick way really reads the usual item
        let k = key_values_of_item("studentSchoolAttendanceEvents", &raw(EVENT)).unwrap();
        assert_eq!(k["schoolYear"], serde_json::json!(2011));
        assert_eq!(k["studentUniqueId"], serde_json::json!("604877"));
    }

    #[test]
    fn a_change_and_a_delete_of_the_same_event_share_the_natural_key() {
        let d = |_: &str| "d1".to_string();
        let up = record_from_item(
            ItemKind::Change,
            "studentSchoolAttendanceEvents",
            &raw(EVENT),
            &WindowVersions {
                min: 0,
                max: 10,
                base: 0,
            },
            &d,
            "edfi:t",
        )
        .unwrap();
        let del = raw(
            r#"{"id":"x","changeVersion":12,"keyValues":{"attendanceEventCategoryDescriptor":"uri://ed-fi.org/AttendanceEventCategoryDescriptor#Unexcused Absence","eventDate":"2010-08-25","schoolId":255901107,"schoolYear":2011,"sessionName":"2010-2011 Fall Semester","studentUniqueId":"604877"}}"#,
        );
        let del = record_from_item(
            ItemKind::Delete,
            "studentSchoolAttendanceEvents",
            &del,
            &WindowVersions {
                min: 0,
                max: 20,
                base: 0,
            },
            &d,
            "edfi:t",
        )
        .unwrap();
        assert_eq!(up.envelope.natural_key, del.envelope.natural_key);
        assert_eq!(up.key, "d1/604877");
        assert_eq!(
            up.envelope.payload,
            EVENT.as_bytes(),
            "payload is the bytes as sent"
        );
        assert_eq!(up.envelope.source_version, 41);
        assert_eq!(del.envelope.source_version, 50);
        assert_eq!(del.envelope.operation, RawOperation::Delete);
    }

    #[test]
    fn key_changes_carry_old_and_new_keys_and_sort_before_the_full_record() {
        let d = |_: &str| "d1".to_string();
        let kc = raw(r#"{"id":"x","changeVersion":7,
          "oldKeyValues":{"attendanceEventCategoryDescriptor":"Unexcused Absence","eventDate":"2010-08-25","schoolId":1,"schoolYear":2011,"sessionName":"F","studentUniqueId":"s"},
          "newKeyValues":{"attendanceEventCategoryDescriptor":"Excused Absence","eventDate":"2010-08-25","schoolId":1,"schoolYear":2011,"sessionName":"F","studentUniqueId":"s"}}"#);
        let r = record_from_item(
            ItemKind::KeyChange,
            "studentSchoolAttendanceEvents",
            &kc,
            &WindowVersions {
                min: 0,
                max: 7,
                base: 0,
            },
            &d,
            "edfi:t",
        )
        .unwrap();
        assert_eq!(r.envelope.operation, RawOperation::KeyChange);
        assert!(r.envelope.natural_key.contains("Excused Absence"));
        assert!(r
            .envelope
            .old_natural_key
            .as_deref()
            .unwrap()
            .contains("Unexcused Absence"));
        assert!(r.envelope.source_version < 4 * 7 + 1);
    }

    #[test]
    fn an_item_without_its_key_is_an_error_not_a_panic() {
        let d = |_: &str| "d1".to_string();
        let e = record_from_item(
            ItemKind::Change,
            "studentSchoolAttendanceEvents",
            &raw(r#"{"eventDate":"2020-01-01"}"#),
            &WindowVersions {
                min: 0,
                max: 1,
                base: 0,
            },
            &d,
            "t",
        )
        .unwrap_err();
        assert!(e.contains("missing"), "{e}");
        let e = record_from_item(
            ItemKind::Delete,
            "calendarDates",
            &raw(r#"[1,2]"#),
            &WindowVersions {
                min: 0,
                max: 1,
                base: 0,
            },
            &d,
            "t",
        )
        .unwrap_err();
        assert!(e.contains("keyValues"), "{e}");
    }
}
