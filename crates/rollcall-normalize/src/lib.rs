//! The pure transform: one raw record (an Avro raw envelope around an Ed-Fi or flat JSON
//! payload) to canonical Avro events, or a `Rejection` that says what is wrong and what to
//! do. Applies the district code maps and the state policy. No I/O: it knows nothing of
//! Kafka, ClickHouse or clocks (the caller passes "today"), and never panics on input.

use chrono::NaiveDate;
use rollcall_avro::{decode_raw, encode, AvroError};
use rollcall_codemaps::{CodeMapRegistry, LookupError};
pub use rollcall_model::{
    is_supported_date, DEFAULT_EXIT_DATE_SENTINEL, MAX_SUPPORTED_DATE, MIN_SUPPORTED_DATE,
};
use rollcall_model::{Canonical, Entity, Operation, PayloadFormat, RawEnvelope, RawOperation};
use rollcall_policy::{InvalidPolicy, Policy};

mod fields;
mod payload;
mod records;
mod reject;

pub use fields::{parse_date, MAX_FIELD_BYTES};
pub use payload::MAX_PAYLOAD_BYTES;
pub use reject::{RejectKind, Rejection};

use fields::{reject, Name};
use payload::{EdfiDoc, FlatDoc};
use records::{Meta, Source};

/// How an Ed-Fi natural key of a section attendance event starts (`resource:`, as the
/// Ed-Fi connector and the interchange reader render it).
const SECTION_ATTENDANCE_RESOURCE_PREFIX: &str = "studentSectionAttendanceEvents:";

/// One canonical event, ready to produce: the topic is chosen by `entity`.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub entity: Entity,
    pub district_id: String,
    /// Kafka key: `district/student` (attendance, enrollment) or `district/school` (calendar).
    pub key: String,
    /// Avro single-object encoded canonical record.
    pub value: Vec<u8>,
    /// An enrollment whose exit/withdraw code the code maps do not know: published with
    /// no canonical exit type (it voids nothing); the normalizer counts it.
    pub unmapped_exit_type: bool,
}

/// Turns raw records into canonical events under one policy and set of code maps.
#[derive(Debug, Clone)]
pub struct Normalizer {
    codemaps: CodeMapRegistry,
    policy: Policy,
    /// Exit dates that mean "no exit date" (still enrolled).
    exit_date_sentinels: Vec<NaiveDate>,
}

impl Normalizer {
    /// The policy should already be validated (configuration loading does it); see
    /// [`Normalizer::try_new`].
    pub fn new(codemaps: CodeMapRegistry, policy: Policy) -> Self {
        Normalizer {
            codemaps,
            policy,
            exit_date_sentinels: vec![DEFAULT_EXIT_DATE_SENTINEL],
        }
    }

    /// The exit dates that mean "no exit date" (the student is still enrolled): an
    /// enrollment whose exit date is one of them gets none. Replaces the default,
    /// `[9999-12-31]` ([`DEFAULT_EXIT_DATE_SENTINEL`]); `[normalizer] exit_date_sentinels`.
    pub fn with_exit_date_sentinels(mut self, sentinels: Vec<NaiveDate>) -> Self {
        self.exit_date_sentinels = sentinels;
        self
    }

    pub fn exit_date_sentinels(&self) -> &[NaiveDate] {
        &self.exit_date_sentinels
    }

    /// Validates the policy first.
    pub fn try_new(codemaps: CodeMapRegistry, policy: Policy) -> Result<Self, InvalidPolicy> {
        policy.validate()?;
        Ok(Self::new(codemaps, policy))
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn codemaps(&self) -> &CodeMapRegistry {
        &self.codemaps
    }

    /// Normalizes one raw Kafka value (an Avro single-object raw envelope). A key change
    /// gives two events: the delete of the old key, then the upsert of the new one.
    pub fn normalize(
        &self,
        raw_value: &[u8],
        today: NaiveDate,
    ) -> Result<Vec<Normalized>, Rejection> {
        let env = decode_raw(raw_value).map_err(envelope_rejection)?;
        let records = self.normalize_envelope(&env, today)?;
        Ok(records.into_iter().map(encode_canonical).collect())
    }

    /// Normalizes a decoded envelope to typed canonical records.
    pub fn normalize_envelope(
        &self,
        env: &RawEnvelope,
        today: NaiveDate,
    ) -> Result<Vec<Canonical>, Rejection> {
        self.records(env, today).map_err(|mut r| {
            let d = env.district_id.trim();
            r.district_id = (!d.is_empty()).then(|| d.to_string());
            r.source_key = (!env.natural_key.is_empty()).then(|| env.natural_key.clone());
            r
        })
    }

    fn records(&self, env: &RawEnvelope, today: NaiveDate) -> Result<Vec<Canonical>, Rejection> {
        let policy = &self.policy;
        let district_id = fields::id(Name("envelope.", "district_id"), &env.district_id, policy)?;
        if district_id.contains('/') {
            return Err(reject(
                RejectKind::InvalidIdentifier,
                format!("envelope.district_id {district_id:?} contains '/', which separates Kafka key parts; configure the connector with a district id without it"),
            ));
        }
        fields::required(
            Name("envelope.", "source_system"),
            Some(env.source_system.as_str().into()),
        )?;
        fields::required(
            Name("envelope.", "natural_key"),
            Some(env.natural_key.as_str().into()),
        )?;
        let src = Source {
            env,
            district_id,
            policy,
            codemaps: &self.codemaps,
            exit_date_sentinels: &self.exit_date_sentinels,
            today,
        };
        let meta = |operation| Meta::new(env, operation, &env.natural_key);
        match env.payload_format {
            PayloadFormat::FlatJson => {
                let meta = match env.operation {
                    RawOperation::Upsert => meta(Operation::Upsert),
                    RawOperation::Delete => meta(Operation::Delete),
                    RawOperation::KeyChange => {
                        return Err(reject(
                            RejectKind::UnsupportedEntityOrFormat,
                            "flat_json has no key changes; send a delete of the old row and an upsert of the new one".into(),
                        ))
                    }
                };
                let doc: FlatDoc = payload::parse(&env.payload, "flat_json")?;
                Ok(vec![src.flat(doc, meta)?])
            }
            PayloadFormat::EdfiJson => {
                let mut doc: EdfiDoc = payload::parse(&env.payload, "edfi_json")?;
                // The resource is the natural key's prefix (both Ed-Fi readers render it
                // so): a section event is one whatever its payload holds, so one without
                // its sectionReference cannot pass for a daily event.
                if env.entity == Entity::Attendance
                    && env
                        .natural_key
                        .starts_with(SECTION_ATTENDANCE_RESOURCE_PREFIX)
                {
                    return Err(reject(
                        RejectKind::UnsupportedEntityOrFormat,
                        format!(
                            "the record is a section attendance event (its natural key is of {}); rollcall normalizes school (daily) attendance: publish studentSchoolAttendanceEvents",
                            SECTION_ATTENDANCE_RESOURCE_PREFIX.trim_end_matches(':')
                        ),
                    ));
                }
                if env.entity == Entity::Calendar
                    && (doc.begin_date.is_some() || doc.session_name.is_some())
                {
                    return src.edfi_session(doc, env.operation, meta(Operation::Upsert));
                }
                match env.operation {
                    RawOperation::Upsert => {
                        Ok(vec![src.edfi(doc, "", false, meta(Operation::Upsert))?])
                    }
                    RawOperation::Delete => match doc.key_values.take() {
                        Some(kv) => Ok(vec![src.edfi(
                            *kv,
                            "keyValues.",
                            true,
                            meta(Operation::Delete),
                        )?]),
                        None => Ok(vec![src.edfi(doc, "", false, meta(Operation::Delete))?]),
                    },
                    RawOperation::KeyChange => {
                        let old_key = fields::required(
                            Name("envelope.", "old_natural_key"),
                            env.old_natural_key.as_deref().map(Into::into),
                        )?;
                        let old = doc.old_key_values.take().ok_or_else(|| {
                            reject(
                                RejectKind::MissingField,
                                "key_change payload has no oldKeyValues; send Ed-Fi's keyChanges item (oldKeyValues + newKeyValues), or the new resource with oldKeyValues added".into(),
                            )
                        })?;
                        let old = src.edfi(
                            *old,
                            "oldKeyValues.",
                            true,
                            Meta::new(env, Operation::Delete, &old_key),
                        )?;
                        let new = match doc.new_key_values.take() {
                            Some(kv) => {
                                src.edfi(*kv, "newKeyValues.", true, meta(Operation::Upsert))?
                            }
                            None => src.edfi(doc, "", false, meta(Operation::Upsert))?,
                        };
                        Ok(vec![old, new])
                    }
                }
            }
        }
    }
}

fn encode_canonical(c: Canonical) -> Normalized {
    let entity = c.entity();
    let key = c.kafka_key();
    let unmapped_exit_type = matches!(&c, Canonical::Enrollment(e)
        if e.exit_withdraw_type.is_none() && e.source_exit_withdraw_type.is_some());
    let (district_id, value) = match c {
        Canonical::Attendance(e) => {
            let v = encode(&e);
            (e.district_id, v)
        }
        Canonical::Enrollment(e) => {
            let v = encode(&e);
            (e.district_id, v)
        }
        Canonical::Calendar(e) => {
            let v = encode(&e);
            (e.district_id, v)
        }
    };
    Normalized {
        entity,
        district_id,
        key,
        value,
        unmapped_exit_type,
    }
}

fn envelope_rejection(e: AvroError) -> Rejection {
    let kind = match e {
        AvroError::UnknownFingerprint { .. }
        | AvroError::RegistryUnsupported { .. }
        | AvroError::WrongRecord { .. } => RejectKind::UnknownSchema,
        AvroError::TruncatedHeader { .. }
        | AvroError::BadMagic { .. }
        | AvroError::Body { .. }
        | AvroError::Resolution { .. }
        | AvroError::Encode { .. } => RejectKind::EnvelopeUndecodable,
    };
    reject(
        kind,
        format!("raw value is not a rollcall raw envelope: {e}; connectors must publish rollcall_avro::encode_raw output"),
    )
}

fn lookup_rejection(e: LookupError) -> Rejection {
    let kind = match e {
        LookupError::UnknownCode { .. } => RejectKind::UnknownCode,
        LookupError::NoCodeMap { .. } => RejectKind::NoCodeMap,
        LookupError::UnknownGradeLevel { .. } => RejectKind::UnknownGradeLevel,
        // Unknown exit types are kept, not rejected (records.rs); listed for completeness.
        LookupError::UnknownExitType { .. } => RejectKind::InvalidValue,
    };
    reject(kind, e.to_string())
}

#[cfg(test)]
mod tests;
