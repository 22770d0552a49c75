//! How numbers and text appear on the page. Public so that tests can check the visible
//! text against the values the views return.

/// What a suppressed cell shows, instead of any number.
/// (Under the default publication threshold; the page shows the views' own,
/// [`crate::model::ViewRules::suppressed_text`].)
pub const SUPPRESSED_TEXT: &str = "suppressed (< 10)";

/// A count with thousands separators: `12,345`.
pub fn count(n: u64) -> String {
    group_thousands(&n.to_string())
}

/// A rate in [0, 1] as a percentage with one decimal: `23.4%`.
pub fn percent(rate: f64) -> String {
    if !rate.is_finite() {
        return "n/a".into();
    }
    format!("{:.1}%", rate * 100.0)
}

/// Days with one decimal and thousands separators: `1,234.5`.
pub fn days(d: f64) -> String {
    if !d.is_finite() {
        return "n/a".into();
    }
    let s = format!("{:.1}", d.abs());
    let (int, frac) = s.split_once('.').unwrap_or((&s, "0"));
    let sign = if d < 0.0 && s != "0.0" { "-" } else { "" };
    format!("{sign}{}.{frac}", group_thousands(int))
}

/// The exact value for a `data-value` attribute: the shortest text that reads back as
/// the same `f64`.
pub fn exact(x: f64) -> String {
    format!("{x}")
}

/// The school year ending in `year` as `2023–24`.
pub fn school_year(year: u16) -> String {
    format!("{}–{:02}", year.saturating_sub(1), year % 100)
}

fn group_thousands(digits: &str) -> String {
    let mut rev = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().rev().enumerate() {
        if i > 0 && i % 3 == 0 {
            rev.push(',');
        }
        rev.push(c);
    }
    rev.chars().rev().collect()
}

/// Escape text for HTML element content and double- or single-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_the_way_analysts_write_them() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(percent(0.234375), "23.4%");
        assert_eq!(percent(1.0), "100.0%");
        assert_eq!(percent(f64::NAN), "n/a");
        assert_eq!(days(1234.5), "1,234.5");
        assert_eq!(days(0.0), "0.0");
        assert_eq!(days(12.25), "12.2");
        assert_eq!(school_year(2024), "2023–24");
        assert_eq!(school_year(2000), "1999–00");
    }

    #[test]
    fn exact_values_read_back_identically() {
        for x in [0.1, 1.0 / 3.0, 0.234375, 0.0, 1e-9] {
            assert_eq!(exact(x).parse::<f64>().unwrap(), x);
        }
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc(r#"<a href="x">O'Neil & Co</a>"#),
            "&lt;a href=&quot;x&quot;&gt;O&#39;Neil &amp; Co&lt;/a&gt;"
        );
    }
}
