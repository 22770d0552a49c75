//! Code matching ignores case and runs of spaces; folding is allocation-free for the
//! short ASCII codes real feeds send.

/// Calls `f` with `s` trimmed, lower-cased and with every run of whitespace made one
/// space.
pub(crate) fn fold<R>(s: &str, f: impl FnOnce(&str) -> R) -> R {
    let s = s.trim();
    if is_folded(s) {
        return f(s);
    }
    if s.is_ascii() && s.len() <= 256 {
        let mut buf = [0u8; 256];
        let mut n = 0;
        let mut space = false;
        for &b in s.as_bytes() {
            if b.is_ascii_whitespace() {
                space = true;
                continue;
            }
            if space {
                buf[n] = b' ';
                n += 1;
                space = false;
            }
            buf[n] = b.to_ascii_lowercase();
            n += 1;
        }
        // Only ASCII bytes were written, so this is valid UTF-8.
        return match std::str::from_utf8(&buf[..n]) {
            Ok(folded) => f(folded),
            Err(_) => f(&fold_owned(s)),
        };
    }
    f(&fold_owned(s))
}

/// The folded form as an owned string (map keys, long or non-ASCII codes).
pub(crate) fn fold_owned(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn is_folded(s: &str) -> bool {
    let mut prev_space = false;
    for &b in s.as_bytes() {
        if b >= 0x80 || b.is_ascii_uppercase() || (b.is_ascii_whitespace() && b != b' ') {
            return false;
        }
        let space = b == b' ';
        if space && prev_space {
            return false;
        }
        prev_space = space;
    }
    true
}

/// The code value of a descriptor URI (`uri://ed-fi.org/AttendanceEventCategoryDescriptor#Tardy`
/// → `Tardy`), or `None` if `code` is not one.
pub(crate) fn strip_descriptor_namespace(code: &str) -> Option<&str> {
    let code = code.trim();
    let is_uri = code
        .get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case("uri://"));
    if !is_uri {
        return None;
    }
    code.rfind('#').map(|i| &code[i + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_ignores_case_and_runs_of_spaces() {
        for (raw, want) in [
            ("Unexcused Absence", "unexcused absence"),
            ("  UNEXCUSED   absence\t", "unexcused absence"),
            ("unexcused absence", "unexcused absence"),
            ("Early\u{a0}Release", "early release"),
            ("ÉTÉ  Absent", "été absent"),
            ("", ""),
        ] {
            assert_eq!(fold(raw, str::to_string), want, "{raw:?}");
            assert_eq!(fold_owned(raw), want, "{raw:?}");
        }
        let long = "A ".repeat(300);
        assert_eq!(fold(&long, str::to_string), fold_owned(&long));
    }

    #[test]
    fn descriptor_namespace_is_stripped_only_from_uris() {
        assert_eq!(
            strip_descriptor_namespace("uri://ed-fi.org/AttendanceEventCategoryDescriptor#Tardy"),
            Some("Tardy")
        );
        assert_eq!(
            strip_descriptor_namespace(" URI://tx.gov/X#In School Suspension "),
            Some("In School Suspension")
        );
        assert_eq!(strip_descriptor_namespace("Tardy"), None);
        assert_eq!(strip_descriptor_namespace("A#B"), None);
        assert_eq!(strip_descriptor_namespace("uri://no-hash"), None);
    }
}
