//! The compact form of one student's state: a single byte string per student.
//!
//! ```text
//! student : district varint | id_len varint | id bytes
//!           | n_ssids varint | (len varint | state student id bytes)* | n_units varint | unit*
//! unit    : school varint | school_year u16le | n_spans varint | n_events varint | span* | event*
//! span    : key_hash 6B | flags u8 | version | entry u16le | exit u16le
//!           | grade varint | subgroups varint | ssid index+1 varint
//!           flags = tombstone 1b | version mode 1b | void 1b
//! event   : key_hash 6B | info u16le | version [| fraction u16le]
//!           info = day_offset 9b | category 3b | tombstone 1b | fraction code 2b | version mode 1b
//!           (fraction code 0 = 0, 1 = 1000, 2 = 500, 3 = the u16 that follows)
//! version : relative to the previous record's version `p` (0 for the first):
//!           mode 0 = zigzag(v - p) varint;
//!           mode 1 = zigzag(v>>32 - p>>32) varint | (v & 0xffff_ffff) varint
//!           (the shorter one; mode 1 suits `file << 32 | line` versions)
//! ```
//!
//! Units are sorted by (school_year, school); spans by key hash; events by (day, key
//! hash). Dates are days since 1970-01-01 (`u16`); an event's day is an offset from
//! the start of its unit's school year. A typical exception-only student-year (one
//! enrollment, a dozen events) takes under 200 bytes.

/// Key hashes keep their low 48 bits.
pub(crate) const HASH_BITS: u32 = 48;
pub(crate) const HASH_MASK: u64 = (1 << HASH_BITS) - 1;
/// `exit` when the span has no exit date.
pub(crate) const NO_EXIT: u16 = u16::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub school: u32,
    pub year: u16,
    pub hash: u64,
    pub ver: i64,
    pub tomb: bool,
    /// The enrollment's exit type voids it (`policy.void_exit_types`): it contributes no
    /// enrolled day, but is kept (with its version) so corrections and deletes apply.
    pub void: bool,
    pub entry: u16,
    pub exit: u16,
    pub grade: u32,
    pub subgroups: u32,
    /// Index + 1 into the student's state student ids; 0 = none.
    pub ssid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ev {
    pub school: u32,
    pub year: u16,
    pub day_off: u16,
    pub hash: u64,
    pub ver: i64,
    pub cat: u8,
    pub tomb: bool,
    pub frac: u16,
}

/// One (school, school_year) of a student: index ranges into `spans` and `events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unit {
    pub school: u32,
    pub year: u16,
    pub spans: (u32, u32),
    pub events: (u32, u32),
}

/// A student's state, decoded.
#[derive(Debug, Clone, Default)]
pub(crate) struct Decoded {
    pub district: u32,
    pub id: Vec<u8>,
    /// The state student ids spans refer to, concatenated; `ssid_ends[i]` ends the i-th.
    pub ssid_bytes: Vec<u8>,
    pub ssid_ends: Vec<u32>,
    pub spans: Vec<Span>,
    pub events: Vec<Ev>,
    pub units: Vec<Unit>,
}

impl Decoded {
    pub(crate) fn clear(&mut self) {
        self.id.clear();
        self.ssid_bytes.clear();
        self.ssid_ends.clear();
        self.spans.clear();
        self.events.clear();
        self.units.clear();
    }

    /// The state student id a span refers to (`ssid` = index + 1).
    pub(crate) fn ssid(&self, ssid: u32) -> &[u8] {
        let i = ssid as usize - 1;
        let start = if i == 0 {
            0
        } else {
            self.ssid_ends[i - 1] as usize
        };
        &self.ssid_bytes[start..self.ssid_ends[i] as usize]
    }

    /// The reference (index + 1) for a state student id, adding it when new.
    pub(crate) fn ssid_ref(&mut self, id: &[u8]) -> u32 {
        for i in 1..=self.ssid_ends.len() as u32 {
            if self.ssid(i) == id {
                return i;
            }
        }
        self.ssid_bytes.extend_from_slice(id);
        self.ssid_ends.push(self.ssid_bytes.len() as u32);
        self.ssid_ends.len() as u32
    }

    /// Drop state student ids no span refers to.
    pub(crate) fn gc_ssids(&mut self) {
        let n = self.ssid_ends.len();
        if n == 0 {
            return;
        }
        let mut used = vec![false; n];
        for s in &self.spans {
            if s.ssid != 0 {
                used[s.ssid as usize - 1] = true;
            }
        }
        if used.iter().all(|&u| u) {
            return;
        }
        let (bytes, ends) = (
            std::mem::take(&mut self.ssid_bytes),
            std::mem::take(&mut self.ssid_ends),
        );
        let mut remap = vec![0u32; n];
        let mut start = 0usize;
        for i in 0..n {
            let end = ends[i] as usize;
            if used[i] {
                self.ssid_bytes.extend_from_slice(&bytes[start..end]);
                self.ssid_ends.push(self.ssid_bytes.len() as u32);
                remap[i] = self.ssid_ends.len() as u32;
            }
            start = end;
        }
        for s in &mut self.spans {
            if s.ssid != 0 {
                s.ssid = remap[s.ssid as usize - 1];
            }
        }
    }

    pub(crate) fn has_school(&self, school: u32) -> bool {
        self.units.iter().any(|u| u.school == school)
    }

    pub(crate) fn unit_spans(&self, u: &Unit) -> &[Span] {
        &self.spans[u.spans.0 as usize..u.spans.1 as usize]
    }

    pub(crate) fn unit_events(&self, u: &Unit) -> &[Ev] {
        &self.events[u.events.0 as usize..u.events.1 as usize]
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn varint(&mut self) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = self.b[self.pos];
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    #[inline]
    fn u16(&mut self) -> u16 {
        let v = u16::from_le_bytes([self.b[self.pos], self.b[self.pos + 1]]);
        self.pos += 2;
        v
    }

    #[inline]
    fn hash48(&mut self) -> u64 {
        let mut a = [0u8; 8];
        a[..6].copy_from_slice(&self.b[self.pos..self.pos + 6]);
        self.pos += 6;
        u64::from_le_bytes(a)
    }

    #[inline]
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let v = &self.b[self.pos..self.pos + n];
        self.pos += n;
        v
    }

    #[inline]
    fn version(&mut self, mode: bool, prev: i64) -> i64 {
        if mode {
            let hi = (prev >> 32).wrapping_add(unzigzag(self.varint()));
            let lo = self.varint() as i64;
            (hi << 32) | lo
        } else {
            prev.wrapping_add(unzigzag(self.varint()))
        }
    }

    #[inline]
    fn u8(&mut self) -> u8 {
        let v = self.b[self.pos];
        self.pos += 1;
        v
    }
}

/// The district and student id of an encoded student, without decoding the rest.
#[inline]
pub(crate) fn header_ids(blob: &[u8]) -> (u32, &[u8]) {
    let mut r = Reader { b: blob, pos: 0 };
    let d = r.varint() as u32;
    let n = r.varint() as usize;
    (d, r.bytes(n))
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Append `v` relative to `prev` in the shorter mode; returns the mode.
fn put_version(buf: &mut Vec<u8>, v: i64, prev: i64) -> bool {
    let a = zigzag(v.wrapping_sub(prev));
    let hi = zigzag((v >> 32).wrapping_sub(prev >> 32));
    let lo = (v & 0xffff_ffff) as u64;
    if varint_len(hi) + varint_len(lo) < varint_len(a) {
        put_varint(buf, hi);
        put_varint(buf, lo);
        true
    } else {
        put_varint(buf, a);
        false
    }
}

/// Decode `blob` into `out` (cleared first).
pub(crate) fn decode(blob: &[u8], out: &mut Decoded) {
    out.clear();
    let mut r = Reader { b: blob, pos: 0 };
    out.district = r.varint() as u32;
    let n = r.varint() as usize;
    out.id.extend_from_slice(r.bytes(n));
    for _ in 0..r.varint() {
        let n = r.varint() as usize;
        out.ssid_bytes.extend_from_slice(r.bytes(n));
        out.ssid_ends.push(out.ssid_bytes.len() as u32);
    }
    let mut prev = 0i64;
    let n_units = r.varint();
    for _ in 0..n_units {
        let school = r.varint() as u32;
        let year = r.u16();
        let n_spans = r.varint() as u32;
        let n_events = r.varint() as u32;
        let s0 = out.spans.len() as u32;
        for _ in 0..n_spans {
            let hash = r.hash48();
            let flags = r.u8();
            let ver = r.version(flags & 2 != 0, prev);
            prev = ver;
            let entry = r.u16();
            let exit = r.u16();
            let grade = r.varint() as u32;
            let subgroups = r.varint() as u32;
            let ssid = r.varint() as u32;
            out.spans.push(Span {
                school,
                year,
                hash,
                ver,
                tomb: flags & 1 != 0,
                void: flags & 4 != 0,
                entry,
                exit,
                grade,
                subgroups,
                ssid,
            });
        }
        let e0 = out.events.len() as u32;
        for _ in 0..n_events {
            let hash = r.hash48();
            let info = r.u16();
            let ver = r.version(info & (1 << 15) != 0, prev);
            prev = ver;
            let frac = match (info >> 13) & 3 {
                0 => 0,
                1 => 1000,
                2 => 500,
                _ => r.u16(),
            };
            out.events.push(Ev {
                school,
                year,
                day_off: info & 0x1ff,
                hash,
                ver,
                cat: ((info >> 9) & 0x7) as u8,
                tomb: info & (1 << 12) != 0,
                frac,
            });
        }
        out.units.push(Unit {
            school,
            year,
            spans: (s0, s0 + n_spans),
            events: (e0, e0 + n_events),
        });
    }
    debug_assert_eq!(r.pos, blob.len());
}

fn unit_key_span(s: &Span) -> (u16, u32, u64) {
    (s.year, s.school, s.hash)
}

fn unit_key_ev(e: &Ev) -> (u16, u32, u16, u64) {
    (e.year, e.school, e.day_off, e.hash)
}

/// Sort spans and events into encoding order and rebuild `units`.
pub(crate) fn normalize(d: &mut Decoded) {
    d.spans.sort_unstable_by_key(unit_key_span);
    d.events.sort_unstable_by_key(unit_key_ev);
    d.units.clear();
    let (mut i, mut j) = (0usize, 0usize);
    while i < d.spans.len() || j < d.events.len() {
        let ks = d.spans.get(i).map(|s| (s.year, s.school));
        let ke = d.events.get(j).map(|e| (e.year, e.school));
        let (year, school) = match (ks, ke) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => unreachable!(),
        };
        let s0 = i;
        while i < d.spans.len() && (d.spans[i].year, d.spans[i].school) == (year, school) {
            i += 1;
        }
        let e0 = j;
        while j < d.events.len() && (d.events[j].year, d.events[j].school) == (year, school) {
            j += 1;
        }
        d.units.push(Unit {
            school,
            year,
            spans: (s0 as u32, i as u32),
            events: (e0 as u32, j as u32),
        });
    }
}

/// Encode a normalized `Decoded` (see `normalize`) into `buf` (cleared first).
pub(crate) fn encode(d: &Decoded, buf: &mut Vec<u8>) {
    buf.clear();
    put_varint(buf, u64::from(d.district));
    put_varint(buf, d.id.len() as u64);
    buf.extend_from_slice(&d.id);
    put_varint(buf, d.ssid_ends.len() as u64);
    for i in 1..=d.ssid_ends.len() as u32 {
        let id = d.ssid(i);
        put_varint(buf, id.len() as u64);
        buf.extend_from_slice(id);
    }
    let mut prev = 0i64;
    put_varint(buf, d.units.len() as u64);
    for u in &d.units {
        put_varint(buf, u64::from(u.school));
        buf.extend_from_slice(&u.year.to_le_bytes());
        put_varint(buf, u64::from(u.spans.1 - u.spans.0));
        put_varint(buf, u64::from(u.events.1 - u.events.0));
        for s in d.unit_spans(u) {
            buf.extend_from_slice(&s.hash.to_le_bytes()[..6]);
            let at = buf.len();
            buf.push(u8::from(s.tomb) | (u8::from(s.void) << 2));
            if put_version(buf, s.ver, prev) {
                buf[at] |= 2;
            }
            prev = s.ver;
            buf.extend_from_slice(&s.entry.to_le_bytes());
            buf.extend_from_slice(&s.exit.to_le_bytes());
            put_varint(buf, u64::from(s.grade));
            put_varint(buf, u64::from(s.subgroups));
            put_varint(buf, u64::from(s.ssid));
        }
        for e in d.unit_events(u) {
            buf.extend_from_slice(&e.hash.to_le_bytes()[..6]);
            let code: u16 = match e.frac {
                0 => 0,
                1000 => 1,
                500 => 2,
                _ => 3,
            };
            let info = (e.day_off & 0x1ff)
                | (u16::from(e.cat & 7) << 9)
                | (u16::from(e.tomb) << 12)
                | (code << 13);
            let at = buf.len();
            buf.extend_from_slice(&info.to_le_bytes());
            if put_version(buf, e.ver, prev) {
                buf[at + 1] |= 0x80;
            }
            prev = e.ver;
            if code == 3 {
                buf.extend_from_slice(&e.frac.to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode_is_the_identity_including_extreme_versions() {
        let mut d = Decoded {
            district: 300,
            id: b"604877".to_vec(),
            ..Default::default()
        };
        assert_eq!(d.ssid_ref(b"S-1"), 1);
        assert_eq!(d.ssid_ref(b"S-22"), 2);
        assert_eq!(d.ssid_ref(b"S-1"), 1);
        d.spans.push(Span {
            school: 70_000,
            year: 2022,
            hash: HASH_MASK,
            ver: i64::MIN,
            tomb: false,
            void: true,
            entry: 19_000,
            exit: NO_EXIT,
            grade: 3,
            subgroups: 0,
            ssid: 2,
        });
        for (i, frac) in [0u16, 1000, 500, 333].into_iter().enumerate() {
            d.events.push(Ev {
                school: if i == 0 { 1 } else { 70_000 },
                year: 2022,
                day_off: 365 - i as u16,
                hash: i as u64 * 7,
                ver: [5 << 32 | 77, -3, 9 << 32 | 1, i64::MAX][i],
                cat: (i % 8) as u8,
                tomb: i == 2,
                frac,
            });
        }
        normalize(&mut d);
        let mut buf = Vec::new();
        encode(&d, &mut buf);
        let mut back = Decoded::default();
        decode(&buf, &mut back);
        assert_eq!(back.district, 300);
        assert_eq!(back.id, b"604877");
        assert_eq!(back.ssid(2), b"S-22");
        assert_eq!(back.spans, d.spans);
        assert_eq!(back.events, d.events);
        assert_eq!(back.units, d.units);
        assert_eq!(header_ids(&buf), (300, &b"604877"[..]));
        assert_eq!(back.units.len(), 2);
        // unreferenced state student ids are dropped, references renumbered
        back.gc_ssids();
        assert_eq!(back.ssid_ends.len(), 1);
        assert_eq!(back.spans[0].ssid, 1);
        assert_eq!(back.ssid(1), b"S-22");
    }
}
