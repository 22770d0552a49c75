//! Hand-written Avro binary encoding for rollcall's fixed schemas: zigzag varints,
//! length-prefixed strings and bytes, IEEE doubles, union indexes for optionals, enum
//! indexes, blocked arrays. apache-avro is the oracle in the tests: every record's bytes
//! here equal apache-avro's for the same value and schema.

use apache_avro::types::Value;
use chrono::{Datelike, NaiveDate};
use rollcall_model::{Category, Entity, Operation, PayloadFormat, RawOperation};

/// Days from 0001-01-01 (chrono's day 1 = CE day 1) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// A body that does not decode, with the field being read.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyError {
    pub field: &'static str,
    pub problem: String,
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The field being read, for errors.
    pub field: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            field: "",
        }
    }

    pub fn err(&self, problem: impl Into<String>) -> BodyError {
        BodyError {
            field: self.field,
            problem: problem.into(),
        }
    }

    fn truncated(&self) -> BodyError {
        self.err(format!("truncated at byte {}", self.pos))
    }

    /// All bytes consumed, or an error naming how many are left over.
    pub fn finish(&self) -> Result<(), BodyError> {
        let left = self.buf.len() - self.pos;
        if left == 0 {
            Ok(())
        } else {
            Err(BodyError {
                field: "(end)",
                problem: format!("{left} trailing bytes after the record"),
            })
        }
    }

    pub fn long(&mut self) -> Result<i64, BodyError> {
        let mut acc: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = *self.buf.get(self.pos).ok_or_else(|| self.truncated())?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            acc |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Ok(((acc >> 1) as i64) ^ -((acc & 1) as i64))
    }

    pub fn int(&mut self) -> Result<i32, BodyError> {
        let v = self.long()?;
        i32::try_from(v).map_err(|_| self.err(format!("int out of range: {v}")))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], BodyError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.truncated())?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], BodyError> {
        let len = self.long()?;
        let len = usize::try_from(len).map_err(|_| self.err(format!("negative length {len}")))?;
        self.take(len)
    }

    pub fn str(&mut self) -> Result<&'a str, BodyError> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| self.err("string is not valid UTF-8"))
    }

    pub fn double(&mut self) -> Result<f64, BodyError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    pub fn boolean(&mut self) -> Result<bool, BodyError> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.err(format!("boolean byte {b}"))),
        }
    }

    /// A union or enum index below `n`.
    pub fn index(&mut self, n: usize) -> Result<usize, BodyError> {
        let i = self.long()?;
        usize::try_from(i)
            .ok()
            .filter(|&i| i < n)
            .ok_or_else(|| self.err(format!("index {i} out of range 0..{n}")))
    }

    /// Item count of the next array block (0 ends the array).
    pub fn block_len(&mut self) -> Result<usize, BodyError> {
        let n = self.long()?;
        if n < 0 {
            self.long()?; // block size in bytes, unused
        }
        let n = n.unsigned_abs();
        // Each item takes at least one byte: a count beyond the bytes left is corrupt.
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.buf.len() - self.pos)
            .ok_or_else(|| self.err(format!("array block of {n} items exceeds the message")))
    }
}

pub(crate) fn write_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

pub(crate) fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// One field type's encoding, decoding and apache-avro `Value` form.
pub(crate) trait AvroField: Sized {
    fn write(&self, out: &mut Vec<u8>);
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError>;
    fn to_value(&self) -> Value;
    fn from_value(v: Value) -> Result<Self, String>;
}

fn unexpected<T>(want: &str, got: &Value) -> Result<T, String> {
    Err(format!("expected {want}, got {got:?}"))
}

impl AvroField for String {
    fn write(&self, out: &mut Vec<u8>) {
        write_bytes(out, self.as_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        r.str().map(str::to_owned)
    }
    fn to_value(&self) -> Value {
        Value::String(self.clone())
    }
    fn from_value(v: Value) -> Result<Self, String> {
        match v {
            Value::String(s) => Ok(s),
            other => unexpected("string", &other),
        }
    }
}

impl AvroField for i32 {
    fn write(&self, out: &mut Vec<u8>) {
        write_long(out, i64::from(*self));
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        r.int()
    }
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
    fn from_value(v: Value) -> Result<Self, String> {
        match v {
            Value::Int(i) => Ok(i),
            other => unexpected("int", &other),
        }
    }
}

impl AvroField for i64 {
    fn write(&self, out: &mut Vec<u8>) {
        write_long(out, *self);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        r.long()
    }
    fn to_value(&self) -> Value {
        Value::Long(*self)
    }
    fn from_value(v: Value) -> Result<Self, String> {
        match v {
            Value::Long(i) | Value::TimestampMillis(i) => Ok(i),
            Value::Int(i) => Ok(i64::from(i)),
            other => unexpected("long", &other),
        }
    }
}

impl AvroField for f64 {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        r.double()
    }
    fn to_value(&self) -> Value {
        Value::Double(*self)
    }
    fn from_value(v: Value) -> Result<Self, String> {
        match v {
            Value::Double(d) => Ok(d),
            Value::Float(f) => Ok(f64::from(f)),
            other => unexpected("double", &other),
        }
    }
}

impl AvroField for bool {
    fn write(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        r.boolean()
    }
    fn to_value(&self) -> Value {
        Value::Boolean(*self)
    }
    fn from_value(v: Value) -> Result<Self, String> {
        match v {
            Value::Boolean(b) => Ok(b),
            other => unexpected("boolean", &other),
        }
    }
}

/// `{"type": "int", "logicalType": "date"}`: days since 1970-01-01.
impl AvroField for NaiveDate {
    fn write(&self, out: &mut Vec<u8>) {
        write_long(
            out,
            i64::from(self.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE),
        );
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        let days = r.int()?;
        date_from_days(days).ok_or_else(|| r.err(format!("date out of range: {days} days")))
    }
    fn to_value(&self) -> Value {
        Value::Date(self.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE)
    }
    fn from_value(v: Value) -> Result<Self, String> {
        match v {
            Value::Date(d) | Value::Int(d) => {
                date_from_days(d).ok_or_else(|| format!("date out of range: {d} days"))
            }
            other => unexpected("date", &other),
        }
    }
}

fn date_from_days(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(days.checked_add(UNIX_EPOCH_DAYS_FROM_CE)?)
}

impl AvroField for Vec<u8> {
    fn write(&self, out: &mut Vec<u8>) {
        write_bytes(out, self);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        r.bytes().map(<[u8]>::to_vec)
    }
    fn to_value(&self) -> Value {
        Value::Bytes(self.clone())
    }
    fn from_value(v: Value) -> Result<Self, String> {
        match v {
            Value::Bytes(b) => Ok(b),
            other => unexpected("bytes", &other),
        }
    }
}

/// `{"type": "array", "items": "string"}`, written as one block.
impl AvroField for Vec<String> {
    fn write(&self, out: &mut Vec<u8>) {
        if !self.is_empty() {
            write_long(out, self.len() as i64);
            for s in self {
                s.write(out);
            }
        }
        out.push(0);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        let mut v = Vec::new();
        loop {
            let n = r.block_len()?;
            if n == 0 {
                return Ok(v);
            }
            v.reserve(n);
            for _ in 0..n {
                v.push(String::read(r)?);
            }
        }
    }
    fn to_value(&self) -> Value {
        Value::Array(self.iter().map(|s| Value::String(s.clone())).collect())
    }
    fn from_value(v: Value) -> Result<Self, String> {
        match v {
            Value::Array(items) => items.into_iter().map(String::from_value).collect(),
            other => unexpected("array of string", &other),
        }
    }
}

/// `["null", T]` with default null.
impl<T: AvroField> AvroField for Option<T> {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(2); // zigzag(1)
                v.write(out);
            }
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        match r.index(2)? {
            0 => Ok(None),
            _ => T::read(r).map(Some),
        }
    }
    fn to_value(&self) -> Value {
        match self {
            None => Value::Union(0, Box::new(Value::Null)),
            Some(v) => Value::Union(1, Box::new(v.to_value())),
        }
    }
    fn from_value(v: Value) -> Result<Self, String> {
        match v {
            Value::Union(_, inner) => Self::from_value(*inner),
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// Enums: the symbol index in the model's `ALL` order, which the schemas use too.
macro_rules! avro_enum {
    ($($ty:ty),+) => {$(
        impl AvroField for $ty {
            fn write(&self, out: &mut Vec<u8>) {
                let i = <$ty>::ALL.iter().position(|v| v == self).unwrap_or(0);
                write_long(out, i as i64);
            }
            fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
                let i = r.index(<$ty>::ALL.len())?;
                Ok(<$ty>::ALL[i])
            }
            fn to_value(&self) -> Value {
                let i = <$ty>::ALL.iter().position(|v| v == self).unwrap_or(0);
                Value::Enum(i as u32, self.as_str().to_string())
            }
            fn from_value(v: Value) -> Result<Self, String> {
                match v {
                    Value::Enum(_, sym) => sym.parse::<$ty>().map_err(|e| e.to_string()),
                    other => unexpected("enum", &other),
                }
            }
        }
    )+};
}

avro_enum!(Category, Operation, RawOperation, Entity, PayloadFormat);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_varints_match_the_spec_examples() {
        for (v, bytes) in [
            (0i64, vec![0x00]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (-2, vec![0x03]),
            (2, vec![0x04]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
        ] {
            let mut out = Vec::new();
            write_long(&mut out, v);
            assert_eq!(out, bytes, "{v}");
            let mut r = Reader::new(&out);
            assert_eq!(r.long(), Ok(v));
            assert_eq!(r.finish(), Ok(()));
        }
        for v in [i64::MIN, i64::MAX, i64::from(i32::MIN), 1 << 40] {
            let mut out = Vec::new();
            write_long(&mut out, v);
            assert_eq!(Reader::new(&out).long(), Ok(v));
        }
    }

    #[test]
    fn corrupt_varints_and_lengths_are_errors() {
        assert!(Reader::new(&[0x80, 0x80]).long().is_err(), "truncated");
        assert!(Reader::new(&[0xff; 11]).long().is_err(), "overflow");
        assert!(Reader::new(&[0x01]).bytes().is_err(), "negative length");
        assert!(
            Reader::new(&[0x08, b'a']).bytes().is_err(),
            "length beyond end"
        );
        assert!(Reader::new(&[0x02, 0xff]).str().is_err(), "bad utf-8");
        assert!(Reader::new(&[0x02]).boolean().is_err(), "boolean byte 2");
        assert!(Reader::new(&[0x04]).index(2).is_err());
        let mut big = Vec::new();
        write_long(&mut big, i64::from(i32::MAX) + 1);
        assert!(Reader::new(&big).int().is_err());
    }

    #[test]
    fn dates_are_days_since_the_unix_epoch() {
        let mut out = Vec::new();
        NaiveDate::from_ymd_opt(1970, 1, 2).unwrap().write(&mut out);
        assert_eq!(out, [0x02]);
        assert_eq!(
            NaiveDate::from_ymd_opt(2021, 8, 25).unwrap().to_value(),
            Value::Date(18_864)
        );
        assert!(NaiveDate::read(&mut Reader::new(&[0xfe, 0xff, 0xff, 0xff, 0x0f])).is_err());
    }
}
