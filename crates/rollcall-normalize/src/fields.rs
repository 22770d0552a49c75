//! Field-level reading and checks shared by every entity: presence, size, identifiers,
//! dates, numbers, booleans, lists. Each failure names the field.

use std::borrow::Cow;
use std::fmt;

use chrono::{Datelike, NaiveDate};
use rollcall_model::{is_supported_date, MAX_SUPPORTED_DATE, MIN_SUPPORTED_DATE};
use rollcall_policy::{normalize_id, IdError, Policy};

use crate::reject::{RejectKind, Rejection};

/// No legitimate field value is longer (identifiers have their own, smaller limit).
pub const MAX_FIELD_BYTES: usize = 4096;

/// A field's name as the payload spells it: a prefix (`keyValues.`, `envelope.`) and
/// the field.
#[derive(Debug, Clone, Copy)]
pub struct Name(pub &'static str, pub &'static str);

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.0, self.1)
    }
}

pub fn reject(kind: RejectKind, reason: String) -> Rejection {
    Rejection::new(kind, reason)
}

fn trim_cow(v: Cow<'_, str>) -> Cow<'_, str> {
    match v {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
        Cow::Owned(s) if s.trim().len() == s.len() => Cow::Owned(s),
        Cow::Owned(s) => Cow::Owned(s.trim().to_owned()),
    }
}

fn check_size(name: Name, s: &str) -> Result<(), Rejection> {
    if s.len() > MAX_FIELD_BYTES {
        return Err(reject(
            RejectKind::FieldTooLarge,
            format!(
                "field {name} is {} bytes; at most {MAX_FIELD_BYTES} are accepted. Check the connector's column mapping",
                s.len()
            ),
        ));
    }
    Ok(())
}

/// A field that must be present and not blank; trimmed.
pub fn required<'a>(name: Name, v: Option<Cow<'a, str>>) -> Result<Cow<'a, str>, Rejection> {
    match optional(name, v)? {
        Some(s) => Ok(s),
        None => Err(reject(
            RejectKind::MissingField,
            format!("required field {name} is missing or empty; the source must send it"),
        )),
    }
}

/// An optional field; blank counts as absent; trimmed.
pub fn optional<'a>(
    name: Name,
    v: Option<Cow<'a, str>>,
) -> Result<Option<Cow<'a, str>>, Rejection> {
    match v {
        None => Ok(None),
        Some(s) => {
            check_size(name, &s)?;
            let s = trim_cow(s);
            Ok((!s.is_empty()).then_some(s))
        }
    }
}

/// An identifier, normalized by the policy (trim, case, length, no control characters).
pub fn id(name: Name, raw: &str, policy: &Policy) -> Result<String, Rejection> {
    check_size(name, raw)?;
    normalize_id(raw, policy).map(Cow::into_owned).map_err(|e| {
        let kind = match e {
            IdError::Empty => RejectKind::EmptyIdentifier,
            IdError::TooLong { .. } => RejectKind::IdentifierTooLong,
            IdError::ControlCharacter => RejectKind::InvalidIdentifier,
        };
        reject(
            kind,
            format!("identifier {name} {e}; fix it in the source system"),
        )
    })
}

/// A required identifier.
pub fn required_id(
    name: Name,
    v: Option<Cow<'_, str>>,
    policy: &Policy,
) -> Result<String, Rejection> {
    match v {
        None => Err(reject(
            RejectKind::MissingField,
            format!("required field {name} is missing; the source must send it"),
        )),
        Some(s) => id(name, &s, policy),
    }
}

/// A date: `YYYY-MM-DD` (a time after it, `T...` or ` ...`, is ignored), or US
/// `M/D/YYYY`, as CSV exports write them. A two-digit year (`9/3/24`) is rejected: its
/// century is not guessed. The date must also be one every stage holds
/// ([`rollcall_model::is_supported_date`]) → else `date_out_of_range`.
pub fn date(name: Name, raw: &str) -> Result<NaiveDate, Rejection> {
    let d = parsed_date(name, raw)?;
    supported_date(name, raw, d)
}

/// A date that parses (see [`date`]), not yet checked against the supported range.
pub fn parsed_date(name: Name, raw: &str) -> Result<NaiveDate, Rejection> {
    match read_date(raw) {
        Ok(d) => Ok(d),
        Err(DateError::TwoDigitYear) => Err(reject(
            RejectKind::InvalidDate,
            format!(
                "field {name} is {:?}, a date with a two-digit year; its century is not guessed: send four-digit years (YYYY-MM-DD or M/D/YYYY)",
                truncate(raw)
            ),
        )),
        Err(DateError::NotADate) => Err(reject(
            RejectKind::InvalidDate,
            format!(
                "field {name} is {:?}, not a date; use YYYY-MM-DD (or M/D/YYYY)",
                truncate(raw)
            ),
        )),
    }
}

/// `d` (read from `raw`) when every stage can hold it, else `date_out_of_range`.
pub fn supported_date(name: Name, raw: &str, d: NaiveDate) -> Result<NaiveDate, Rejection> {
    if is_supported_date(d) {
        return Ok(d);
    }
    let hint = if (0..100).contains(&d.year()) {
        " (a two-digit year written out as four digits? e.g. 9/3/24 read as year 0024: the exporter must write the full year)"
    } else {
        ""
    };
    Err(reject(
        RejectKind::DateOutOfRange,
        format!(
            "field {name} is {:?} ({d}), outside the dates rollcall holds ({MIN_SUPPORTED_DATE}..={MAX_SUPPORTED_DATE}, those of ClickHouse Date){hint}; fix the date in the source",
            truncate(raw)
        ),
    ))
}

enum DateError {
    NotADate,
    TwoDigitYear,
}

/// The date `raw` names, or `None` (not a date, or a two-digit year).
pub fn parse_date(raw: &str) -> Option<NaiveDate> {
    read_date(raw).ok()
}

fn read_date(raw: &str) -> Result<NaiveDate, DateError> {
    use DateError::NotADate;
    let s = raw.trim();
    let day = s.split(['T', ' ']).next().unwrap_or(s);
    let b = day.as_bytes();
    if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        let y = digits(&b[0..4]).ok_or(NotADate)?;
        let m = digits(&b[5..7]).ok_or(NotADate)?;
        let d = digits(&b[8..10]).ok_or(NotADate)?;
        return NaiveDate::from_ymd_opt(y as i32, m, d).ok_or(NotADate);
    }
    let mut parts = day.split('/');
    let (m, d, y) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(d), Some(y)) => (m, d, y),
        _ => return Err(NotADate),
    };
    if parts.next().is_some() || m.len() > 2 || d.len() > 2 {
        return Err(NotADate);
    }
    let (m, d) = (
        digits(m.as_bytes()).ok_or(NotADate)?,
        digits(d.as_bytes()).ok_or(NotADate)?,
    );
    let y = match y.len() {
        4 => digits(y.as_bytes()).ok_or(NotADate)? as i32,
        2 if digits(y.as_bytes()).is_some() && NaiveDate::from_ymd_opt(2000, m, d).is_some() => {
            return Err(DateError::TwoDigitYear)
        }
        _ => return Err(NotADate),
    };
    NaiveDate::from_ymd_opt(y, m, d).ok_or(NotADate)
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() {
        return None;
    }
    b.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// A number given as text (flat JSON). Failure is an invalid duration: these are the
/// duration fields.
pub fn number(name: Name, raw: &str) -> Result<f64, Rejection> {
    check_size(name, raw)?;
    match raw.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(reject(
            RejectKind::InvalidDuration,
            format!("field {name} is {:?}, not a number", truncate(raw)),
        )),
    }
}

/// A school year (the year it ends), as text or a number; 1900..=9999.
pub fn year(name: Name, v: i64) -> Result<i32, Rejection> {
    i32::try_from(v)
        .ok()
        .filter(|y| (1900..=9999).contains(y))
        .ok_or_else(|| {
            reject(
                RejectKind::InvalidValue,
                format!("field {name} is {v}, not a school year (the year it ends, e.g. 2022)"),
            )
        })
}

pub fn year_text(name: Name, raw: &str) -> Result<i32, Rejection> {
    match parse_school_year(raw) {
        Some(v) => year(name, v),
        None => Err(reject(
            RejectKind::InvalidValue,
            format!(
                "field {name} is {:?}, not a school year (the year it ends, e.g. 2022)",
                truncate(raw)
            ),
        )),
    }
}

/// `"2022"`, or a span `"2021-2022"` (as Ed-Fi XML and CSV exports write it) = its end
/// year.
pub fn parse_school_year(raw: &str) -> Option<i64> {
    let t = raw.trim();
    let end = match t.split_once('-') {
        Some((start, end)) if start.len() == 4 && end.len() == 4 => end,
        _ => t,
    };
    end.parse().ok()
}

/// `true/false`, `yes/no`, `y/n`, `1/0` (any case).
pub fn boolean(name: Name, raw: &str) -> Result<bool, Rejection> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "1" | "t" => Ok(true),
        "false" | "no" | "n" | "0" | "f" => Ok(false),
        _ => Err(reject(
            RejectKind::InvalidValue,
            format!("field {name} is {:?}; use true or false", truncate(raw)),
        )),
    }
}

/// A `;`-separated list; items trimmed, blanks dropped.
pub fn list(name: Name, raw: &str) -> Result<Vec<String>, Rejection> {
    check_size(name, raw)?;
    Ok(raw
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The code value of an Ed-Fi descriptor URI (`uri://ed-fi.org/GradeLevelDescriptor#Ninth grade`
/// → `Ninth grade`); other text unchanged.
pub fn descriptor_code_value(s: &str) -> &str {
    let t = s.trim();
    if t.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("uri://")) {
        if let Some(i) = t.rfind('#') {
            return t[i + 1..].trim();
        }
    }
    t
}

/// At most 80 characters of a value, for error messages.
pub fn truncate(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(80) {
        None => Cow::Borrowed(s),
        Some((i, _)) => Cow::Owned(format!("{}…", &s[..i])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(y, m, day)
    }

    #[test]
    fn dates_parse_iso_and_us_with_four_digit_years_only() {
        for (raw, want) in [
            ("2021-08-25", d(2021, 8, 25)),
            (" 2021-08-25 ", d(2021, 8, 25)),
            ("2021-08-25T00:00:00", d(2021, 8, 25)),
            ("2021-08-25 00:00", d(2021, 8, 25)),
            ("8/22/2016", d(2016, 8, 22)),
            ("08/02/2016 00:00", d(2016, 8, 2)),
            // Two-digit years: the century is not guessed.
            ("8/22/16 00:00", None),
            ("08/02/16", None),
            ("9/3/24", None),
            ("2021-02-30", None),
            ("2021-8-25", None),
            ("25.08.2021", None),
            ("13/01/2021", None),
            ("1/2/3/4", None),
            ("", None),
            ("2021-08-2x", None),
            ("+021-08-25", None),
        ] {
            assert_eq!(parse_date(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn booleans_and_lists() {
        let n = Name("", "x");
        assert!(boolean(n, "TRUE").unwrap());
        assert!(!boolean(n, " n ").unwrap());
        assert_eq!(
            boolean(n, "maybe").unwrap_err().kind,
            RejectKind::InvalidValue
        );
        assert_eq!(list(n, " ell; ;swd;").unwrap(), ["ell", "swd"]);
        assert!(list(n, "").unwrap().is_empty());
    }

    #[test]
    fn descriptor_uris_give_their_code_value() {
        assert_eq!(
            descriptor_code_value("uri://ed-fi.org/GradeLevelDescriptor#Ninth grade"),
            "Ninth grade"
        );
        assert_eq!(descriptor_code_value(" 09 "), "09");
    }

    #[test]
    fn oversized_fields_are_field_too_large() {
        let big = "x".repeat(MAX_FIELD_BYTES + 1);
        let r = optional(Name("", "reason"), Some(Cow::Borrowed(&big))).unwrap_err();
        assert_eq!(r.kind, RejectKind::FieldTooLarge);
        assert!(r.reason.contains("reason"));
    }
}
