//! rollcall's Avro contracts: the schemas in `schemas/avro/*.avsc` (the source of truth,
//! embedded here) and single-object encoding of the canonical and raw records.
//! No I/O: it knows nothing of Kafka topics, code maps or policy.
//!
//! Wire format: Avro single-object encoding, `C3 01` + the writer schema's CRC-64-AVRO
//! (Rabin) fingerprint, 8 bytes little-endian + the Avro binary body. The current
//! version of each record is written and read by hand-written code (fast); messages
//! written with another known version are resolved to the current one by apache-avro.
//! The Confluent schema-registry framing (`00` + 4-byte big-endian id) is recognised and
//! reported as unsupported: rollcall has no registry client.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use apache_avro::rabin::Rabin;
use apache_avro::types::Value;
use apache_avro::Schema;
use rollcall_model::{AttendanceEvent, CalendarDay, Enrollment, RawEnvelope};

mod codec;

use codec::{AvroField, BodyError, Reader};

pub use apache_avro;

/// The two bytes that open an Avro single-object message.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// Length of the single-object header: magic + 8-byte fingerprint.
pub const HEADER_LEN: usize = 10;

/// The records rollcall has contracts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    AttendanceEvent,
    Enrollment,
    CalendarDay,
    RawEnvelope,
}

impl RecordType {
    pub const ALL: [RecordType; 4] = [
        RecordType::AttendanceEvent,
        RecordType::Enrollment,
        RecordType::CalendarDay,
        RecordType::RawEnvelope,
    ];

    /// The schema file stem: `attendance_event`, `enrollment`, `calendar_day`, `raw_envelope`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RecordType::AttendanceEvent => "attendance_event",
            RecordType::Enrollment => "enrollment",
            RecordType::CalendarDay => "calendar_day",
            RecordType::RawEnvelope => "raw_envelope",
        }
    }

    /// The version this build's Rust type corresponds to (written by `encode_*`).
    pub const fn current_version(self) -> u32 {
        match self {
            // v2: canonical grade level, source grade level, exit/withdraw type.
            RecordType::Enrollment => 2,
            RecordType::AttendanceEvent | RecordType::CalendarDay | RecordType::RawEnvelope => 1,
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every schema this build knows, `schemas/avro/{record}.v{version}.avsc`.
const SCHEMA_FILES: &[(RecordType, u32, &str)] = &[
    (
        RecordType::AttendanceEvent,
        1,
        include_str!("../../../schemas/avro/attendance_event.v1.avsc"),
    ),
    (
        RecordType::AttendanceEvent,
        2,
        include_str!("../../../schemas/avro/attendance_event.v2.avsc"),
    ),
    (
        RecordType::Enrollment,
        1,
        include_str!("../../../schemas/avro/enrollment.v1.avsc"),
    ),
    (
        RecordType::Enrollment,
        2,
        include_str!("../../../schemas/avro/enrollment.v2.avsc"),
    ),
    (
        RecordType::CalendarDay,
        1,
        include_str!("../../../schemas/avro/calendar_day.v1.avsc"),
    ),
    (
        RecordType::RawEnvelope,
        1,
        include_str!("../../../schemas/avro/raw_envelope.v1.avsc"),
    ),
];

/// How a message names its writer schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaId {
    /// Single-object encoding: CRC-64-AVRO fingerprint of the canonical form.
    Fingerprint(u64),
    /// Confluent wire format: a schema-registry id.
    Registry(u32),
}

/// One known schema version.
#[derive(Debug)]
pub struct KnownSchema {
    pub record: RecordType,
    pub version: u32,
    pub schema: Schema,
    /// CRC-64-AVRO of the Parsing Canonical Form (as read little-endian from the header).
    pub fingerprint: u64,
    /// The `.avsc` text.
    pub json: &'static str,
}

/// Every known schema, parsed once on first use.
pub struct SchemaSet {
    schemas: Vec<KnownSchema>,
    by_fingerprint: HashMap<u64, usize>,
    current: HashMap<RecordType, usize>,
}

static SCHEMAS: LazyLock<SchemaSet> = LazyLock::new(|| {
    let mut schemas = Vec::new();
    for &(record, version, json) in SCHEMA_FILES {
        // The .avsc files are compiled in and parsed by this crate's tests: a failure
        // here is a build defect, not bad input.
        let schema = Schema::parse_str(json).unwrap_or_else(|e| {
            panic!("schemas/avro/{record}.v{version}.avsc does not parse: {e}")
        });
        let fp = schema.fingerprint::<Rabin>().bytes;
        let mut b = [0u8; 8];
        b.copy_from_slice(&fp[..8]);
        schemas.push(KnownSchema {
            record,
            version,
            schema,
            fingerprint: u64::from_le_bytes(b),
            json,
        });
    }
    let by_fingerprint = schemas
        .iter()
        .enumerate()
        .map(|(i, s)| (s.fingerprint, i))
        .collect();
    let current = schemas
        .iter()
        .enumerate()
        .filter(|(_, s)| s.version == s.record.current_version())
        .map(|(i, s)| (s.record, i))
        .collect();
    SchemaSet {
        schemas,
        by_fingerprint,
        current,
    }
});

/// The known schemas.
pub fn schemas() -> &'static SchemaSet {
    &SCHEMAS
}

impl SchemaSet {
    pub fn all(&self) -> &[KnownSchema] {
        &self.schemas
    }
    pub fn by_fingerprint(&self, fingerprint: u64) -> Option<&KnownSchema> {
        self.by_fingerprint
            .get(&fingerprint)
            .map(|&i| &self.schemas[i])
    }
    pub fn get(&self, record: RecordType, version: u32) -> Option<&KnownSchema> {
        self.schemas
            .iter()
            .find(|s| s.record == record && s.version == version)
    }
    /// The version the Rust type of `record` corresponds to.
    pub fn current(&self, record: RecordType) -> &KnownSchema {
        &self.schemas[self.current[&record]]
    }
}

/// A message that cannot be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AvroError {
    #[error("message too short: {len} bytes; a single-object message has a {HEADER_LEN}-byte header (C3 01 + fingerprint)")]
    TruncatedHeader { len: usize },
    #[error("not an Avro single-object message: starts with {found:02X?}, expected C3 01")]
    BadMagic { found: Vec<u8> },
    #[error("message is in schema-registry (Confluent) format with schema id {id}; rollcall reads single-object encoding (C3 01 + fingerprint) and has no schema registry configured")]
    RegistryUnsupported { id: u32 },
    #[error("unknown writer schema fingerprint {fingerprint:016x}; this build knows {known}")]
    UnknownFingerprint { fingerprint: u64, known: String },
    #[error("message is a {found} (schema v{version}), expected a {expected}")]
    WrongRecord {
        expected: RecordType,
        found: RecordType,
        version: u32,
    },
    #[error("{record} v{version} body invalid at field {field}: {problem}")]
    Body {
        record: RecordType,
        version: u32,
        field: &'static str,
        problem: String,
    },
    #[error("{record} v{version} cannot be read as v{reader}: {problem}")]
    Resolution {
        record: RecordType,
        version: u32,
        reader: u32,
        problem: String,
    },
    #[error("value does not match schema {record} v{version}: {problem}")]
    Encode {
        record: RecordType,
        version: u32,
        problem: String,
    },
}

/// Reads the header: the schema id and the body after it.
pub fn split_header(message: &[u8]) -> Result<(SchemaId, &[u8]), AvroError> {
    match message {
        [0xC3, 0x01, rest @ ..] => {
            let (fp, body) = rest
                .split_first_chunk::<8>()
                .ok_or(AvroError::TruncatedHeader { len: message.len() })?;
            Ok((SchemaId::Fingerprint(u64::from_le_bytes(*fp)), body))
        }
        [0x00, rest @ ..] => {
            let (id, body) = rest
                .split_first_chunk::<4>()
                .ok_or(AvroError::TruncatedHeader { len: message.len() })?;
            Ok((SchemaId::Registry(u32::from_be_bytes(*id)), body))
        }
        [] | [0xC3] => Err(AvroError::TruncatedHeader { len: message.len() }),
        _ => Err(AvroError::BadMagic {
            found: message[..message.len().min(2)].to_vec(),
        }),
    }
}

/// The known writer schema of a message, and its body.
pub fn writer_schema(message: &[u8]) -> Result<(&'static KnownSchema, &[u8]), AvroError> {
    match split_header(message)? {
        (SchemaId::Registry(id), _) => Err(AvroError::RegistryUnsupported { id }),
        (SchemaId::Fingerprint(fp), body) => {
            let set = schemas();
            let known = set
                .by_fingerprint(fp)
                .ok_or_else(|| AvroError::UnknownFingerprint {
                    fingerprint: fp,
                    known: set
                        .all()
                        .iter()
                        .map(|s| format!("{}.v{} ({:016x})", s.record, s.version, s.fingerprint))
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            Ok((known, body))
        }
    }
}

/// A Rust type bound to a record schema: hand-written body codec for the current
/// version, and the apache-avro `Value` form for resolution and tests.
pub trait AvroRecord: Sized {
    const RECORD: RecordType;
    #[doc(hidden)]
    fn write_body(&self, out: &mut Vec<u8>);
    #[doc(hidden)]
    fn read_body(r: &mut codec::Reader<'_>) -> Result<Self, codec::BodyError>;
    /// The record as an apache-avro value of the current schema (fields in schema order).
    fn to_value(&self) -> Value;
    /// The record from an apache-avro value of the current schema.
    fn from_value(v: Value) -> Result<Self, String>;
}

/// Lists a record's fields in schema order; the struct literal makes the list complete.
macro_rules! avro_record {
    ($ty:ident, { $($field:ident),+ $(,)? }) => {
        impl AvroRecord for $ty {
            const RECORD: RecordType = RecordType::$ty;
            fn write_body(&self, out: &mut Vec<u8>) {
                $( AvroField::write(&self.$field, out); )+
            }
            fn read_body(r: &mut Reader<'_>) -> Result<Self, BodyError> {
                Ok($ty {
                    $( $field: {
                        r.field = stringify!($field);
                        AvroField::read(r)?
                    }, )+
                })
            }
            fn to_value(&self) -> Value {
                Value::Record(vec![
                    $( (stringify!($field).to_string(), AvroField::to_value(&self.$field)), )+
                ])
            }
            fn from_value(v: Value) -> Result<Self, String> {
                let Value::Record(fields) = v else {
                    return Err(format!("expected a record, got {v:?}"));
                };
                let mut fields: HashMap<String, Value> = fields.into_iter().collect();
                Ok($ty {
                    $( $field: {
                        let v = fields
                            .remove(stringify!($field))
                            .ok_or_else(|| format!("field {} is missing", stringify!($field)))?;
                        AvroField::from_value(v)
                            .map_err(|e| format!("field {}: {e}", stringify!($field)))?
                    }, )+
                })
            }
        }
    };
}

avro_record!(AttendanceEvent, {
    district_id, school_id, student_id, school_year, date, category, absent_fraction,
    source_code, source_secondary_code, reason, source_system, source_instance, source_key,
    source_version, operation, observed_at_ms,
});

avro_record!(Enrollment, {
    district_id, school_id, student_id, school_year, entry_date, exit_date, grade_level,
    subgroups, state_student_id, operation, source_version, source_system, source_instance,
    source_key, observed_at_ms, source_grade_level, exit_withdraw_type, source_exit_withdraw_type,
});

avro_record!(CalendarDay, {
    district_id, school_id, calendar_code, school_year, date, is_instructional, events,
    operation, source_version, source_system, source_instance, source_key, observed_at_ms,
});

avro_record!(RawEnvelope, {
    source_system, source_instance, district_id, entity, operation, natural_key,
    old_natural_key, source_version, observed_at_ms, payload_format, payload,
});

/// Encodes a record as a single-object message of its current schema.
pub fn encode<T: AvroRecord>(record: &T) -> Vec<u8> {
    let fp = schemas().current(T::RECORD).fingerprint;
    let mut out = Vec::with_capacity(192);
    out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
    out.extend_from_slice(&fp.to_le_bytes());
    record.write_body(&mut out);
    out
}

/// Decodes a single-object message written with any known version of `T`'s schema.
pub fn decode<T: AvroRecord>(message: &[u8]) -> Result<T, AvroError> {
    let (known, body) = writer_schema(message)?;
    if known.record != T::RECORD {
        return Err(AvroError::WrongRecord {
            expected: T::RECORD,
            found: known.record,
            version: known.version,
        });
    }
    let current = T::RECORD.current_version();
    if known.version == current {
        let mut r = Reader::new(body);
        let body_err = |e: BodyError| AvroError::Body {
            record: T::RECORD,
            version: current,
            field: e.field,
            problem: e.problem,
        };
        let v = T::read_body(&mut r).map_err(body_err)?;
        r.finish().map_err(body_err)?;
        return Ok(v);
    }
    let value = decode_value(message, &schemas().current(T::RECORD).schema)?;
    T::from_value(value).map_err(|problem| AvroError::Resolution {
        record: T::RECORD,
        version: known.version,
        reader: current,
        problem,
    })
}

/// Decodes any message written with a known schema and resolves it to `reader` (which
/// may be a newer or older compatible version), as an apache-avro value.
pub fn decode_value(message: &[u8], reader: &Schema) -> Result<Value, AvroError> {
    let (known, mut body) = writer_schema(message)?;
    let resolution = |problem: String| AvroError::Resolution {
        record: known.record,
        version: known.version,
        reader: schemas()
            .all()
            .iter()
            .find(|s| std::ptr::eq(&s.schema, reader))
            .map_or(0, |s| s.version),
        problem,
    };
    let value = apache_avro::from_avro_datum(&known.schema, &mut body, Some(reader))
        .map_err(|e| resolution(e.to_string()))?;
    if !body.is_empty() {
        return Err(resolution(format!(
            "{} trailing bytes after the record",
            body.len()
        )));
    }
    Ok(value)
}

/// Encodes an apache-avro value with a known schema version (for producing other
/// versions, e.g. in compatibility tests).
pub fn encode_value(value: &Value, schema: &KnownSchema) -> Result<Vec<u8>, AvroError> {
    let body = apache_avro::to_avro_datum(&schema.schema, value.clone()).map_err(|e| {
        AvroError::Encode {
            record: schema.record,
            version: schema.version,
            problem: e.to_string(),
        }
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
    out.extend_from_slice(&schema.fingerprint.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

pub fn encode_attendance_event(e: &AttendanceEvent) -> Vec<u8> {
    encode(e)
}
pub fn decode_attendance_event(message: &[u8]) -> Result<AttendanceEvent, AvroError> {
    decode(message)
}
pub fn encode_enrollment(e: &Enrollment) -> Vec<u8> {
    encode(e)
}
pub fn decode_enrollment(message: &[u8]) -> Result<Enrollment, AvroError> {
    decode(message)
}
pub fn encode_calendar_day(c: &CalendarDay) -> Vec<u8> {
    encode(c)
}
pub fn decode_calendar_day(message: &[u8]) -> Result<CalendarDay, AvroError> {
    decode(message)
}
/// What connectors call to publish a raw record.
pub fn encode_raw(r: &RawEnvelope) -> Vec<u8> {
    encode(r)
}
pub fn decode_raw(message: &[u8]) -> Result<RawEnvelope, AvroError> {
    decode(message)
}

#[cfg(test)]
mod tests;
