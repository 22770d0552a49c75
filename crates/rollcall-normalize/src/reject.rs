//! Why a raw record was not normalized. The kind's name is stable: it is a Kafka header
//! on the dead-letter topic and a metric label.

use std::fmt;

macro_rules! reject_kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)+) => {
        /// What went wrong with a raw record, one stable snake_case name each.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum RejectKind {
            $($(#[$doc])* $variant,)+
        }

        impl RejectKind {
            /// Every kind, for dashboards and docs.
            pub const ALL: &'static [RejectKind] = &[$(RejectKind::$variant,)+];

            /// The stable name (Kafka header `rollcall.error.kind`, metric label).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(RejectKind::$variant => $name,)+
                }
            }
        }
    };
}

reject_kinds! {
    /// The raw value is not a decodable Avro single-object raw envelope.
    EnvelopeUndecodable = "envelope_undecodable",
    /// The envelope's schema fingerprint (or registry id) is not one this build knows.
    UnknownSchema = "unknown_schema",
    /// A combination the normalizer does not handle (e.g. a section attendance resource,
    /// a key change in flat_json).
    UnsupportedEntityOrFormat = "unsupported_entity_or_format",
    /// The payload is larger than one record can be.
    PayloadTooLarge = "payload_too_large",
    PayloadNotUtf8 = "payload_not_utf8",
    MalformedJson = "malformed_json",
    /// Valid JSON, but not an object.
    PayloadNotObject = "payload_not_object",
    MissingField = "missing_field",
    WrongType = "wrong_type",
    /// One field is larger than any legitimate value (4 KiB).
    FieldTooLarge = "field_too_large",
    EmptyIdentifier = "empty_identifier",
    IdentifierTooLong = "identifier_too_long",
    /// An identifier with control characters, or a district id with `/`.
    InvalidIdentifier = "invalid_identifier",
    InvalidDate = "invalid_date",
    /// A date (or a school year's days) outside what the rollup and ClickHouse `Date`
    /// hold, `rollcall_model::MIN_SUPPORTED_DATE..=MAX_SUPPORTED_DATE`.
    DateOutOfRange = "date_out_of_range",
    DateInFuture = "date_in_future",
    DateOutsideSchoolYear = "date_outside_school_year",
    /// The code (and secondary code) is not in the district's code map.
    UnknownCode = "unknown_code",
    /// No code map for the district and source system, and no preset of that name.
    NoCodeMap = "no_code_map",
    /// A grade level that neither the district's (or preset's) `[grade_levels]` nor the
    /// built-in table maps to an Ed-Fi GradeLevelDescriptor code value.
    UnknownGradeLevel = "unknown_grade_level",
    /// A duration or minutes value that is not a usable number.
    InvalidDuration = "invalid_duration",
    FractionOutOfRange = "fraction_out_of_range",
    /// A field whose text is not one of its allowed values (a year, a boolean).
    InvalidValue = "invalid_value",
    ExitBeforeEntry = "exit_before_entry",
    /// The payload names a different district than the envelope.
    DistrictMismatch = "district_mismatch",
    /// Two fields of one record disagree (e.g. the school of the session vs the school).
    ConflictingFields = "conflicting_fields",
}

impl fmt::Display for RejectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A raw record that was not normalized: what is wrong, in words that name the field or
/// code and what to do, plus the coordinates known so far.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}: {reason}")]
pub struct Rejection {
    pub kind: RejectKind,
    pub reason: String,
    /// The envelope's district, once the envelope decoded.
    pub district_id: Option<String>,
    /// The envelope's natural key, once the envelope decoded.
    pub source_key: Option<String>,
}

impl Rejection {
    pub fn new(kind: RejectKind, reason: impl Into<String>) -> Self {
        Rejection {
            kind,
            reason: reason.into(),
            district_id: None,
            source_key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_kind_names_are_unique_snake_case_and_at_least_fifteen() {
        let names: Vec<&str> = RejectKind::ALL.iter().map(|k| k.as_str()).collect();
        assert!(names.len() >= 15, "{}", names.len());
        let mut dedup = names.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), names.len());
        for n in names {
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{n}"
            );
        }
    }

    #[test]
    fn rejection_displays_kind_and_reason() {
        let r = Rejection::new(RejectKind::MissingField, "eventDate is missing");
        assert_eq!(r.to_string(), "missing_field: eventDate is missing");
    }
}
