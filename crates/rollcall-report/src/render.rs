//! The page: [`ReportData`] in, one self-contained HTML document out. Pure: no I/O, no
//! clock, no randomness — the same data always gives the same bytes.
//!
//! Every element that shows a number carries it as visible text (or, for trend points,
//! as a tooltip and in the trend table) and in `data-value`, with `data-chart`,
//! `data-metric` and `data-district` / `data-school` / `data-date` saying what it is.
//! A suppressed figure is an element with `data-suppressed="1"` whose only text is
//! [`crate::model::ViewRules::suppressed_text`]; it has no `data-value`.

use std::fmt::Write as _;

use chrono::{Datelike, NaiveDate};

use crate::format::{count, days, esc, exact, percent, school_year};
use crate::model::{
    breakdown, month_ends, trend_series, worst_first, AggregateRow, Breakdown, Figures, Published,
    ReportData, Tier, TrendSeries, ViewRules,
};

/// The page's Content-Security-Policy: nothing may be fetched; inline styles and
/// `data:` images (the favicon) only.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

/// Bars in the school chart (the worst schools).
pub const MAX_SCHOOL_BARS: usize = 20;
/// Bars in the district charts; every district is in the summary table.
pub const MAX_DISTRICT_BARS: usize = 20;
/// District lines in the trend chart besides the state's (the largest districts).
pub const MAX_TREND_DISTRICTS: usize = 6;

const TIER_COLORS: [&str; 4] = ["#3a9d5d", "#e9b23a", "#e0703a", "#b8312f"];
const BREAKDOWN_COLORS: [&str; 3] = ["#4a7bd0", "#c8405a", "#6b5a8e"];
const SERIES_COLORS: [&str; 6] = [
    "#1f6fb4", "#e07b00", "#2e9c4a", "#8a55b5", "#a0522d", "#d0479a",
];

const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;background:#f3f4f6;color:#1d2330;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1320px;margin:0 auto;padding:14px 18px 28px}
header{display:flex;align-items:baseline;justify-content:space-between;gap:16px;flex-wrap:wrap}
h1{font-size:22px;margin:0 0 2px}
.sub{color:#505a6b;font-size:13px;margin:0}
.kpis{display:grid;grid-template-columns:repeat(4,1fr);gap:12px;margin:12px 0}
.kpi{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:8px 14px}
.kpi .label{color:#505a6b;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.kpi .num{font-size:26px;font-weight:650;font-variant-numeric:tabular-nums}
.kpi .num.sup,.sup{color:#6b7280;font-style:italic;font-weight:400}
.kpi .num.sup{font-size:18px;line-height:39px}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:10px 14px 12px;min-width:0}
.card.wide{grid-column:1/-1}
h2{font-size:15px;margin:0 0 2px}
.card p.note{margin:0 0 6px;color:#505a6b;font-size:12px}
.empty{color:#6b7280;font-style:italic}
svg{display:block;width:100%;height:auto}
svg text{font-size:12px;fill:#1d2330}
svg .axis{fill:#6b7280;font-size:11px}
svg .sup{fill:#6b7280;font-style:italic}
svg .strong{font-weight:650}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;margin:2px 0 6px;color:#374151}
.legend i{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;vertical-align:-1px}
table{border-collapse:collapse;width:100%;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:4px 8px;border-bottom:1px solid #e5e7eb;text-align:right;white-space:nowrap}
th{background:#f8f9fb;color:#374151;font-weight:600;position:sticky;top:0}
th:first-child,td:first-child{text-align:left}
td.sup{text-align:center}
tr.state td{font-weight:650;background:#f8fafc}
.scroll{max-height:420px;overflow:auto}
details{margin-top:10px}
summary{cursor:pointer;color:#1f4f8f}
ul.suppressed{margin:4px 0 0;padding-left:18px;font-size:12px;columns:3}
footer{color:#6b7280;font-size:12px;margin-top:14px}
"#;

/// Render the whole page.
pub fn render_html(data: &ReportData) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let title = match data.school_year {
        Some(y) => format!("Chronic absence — school year {}", school_year(y)),
        None => "Chronic absence".to_string(),
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <link rel=\"icon\" href=\"data:,\">\n\
         <title>{t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        csp = esc(CSP),
        t = esc(&title),
    );
    header(&mut h, data, &title);
    if data.is_empty() {
        h.push_str(
            "<section class=\"card wide\"><h2>No data</h2><p class=\"empty\" data-empty=\"1\">\
             The BI views returned no rows for this school year: nothing to show yet. \
             Run the rollup, then generate the report again.</p></section>\n",
        );
    } else {
        kpis(&mut h, data);
        h.push_str("<div class=\"grid\">\n");
        district_rates(&mut h, data);
        tier_distribution(&mut h, data);
        school_rates(&mut h, data);
        absence_breakdown(&mut h, data);
        trend(&mut h, data);
        summary_table(&mut h, data);
        h.push_str("</div>\n");
    }
    footer(&mut h, &data.rules);
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

/// The page the dashboard shows when the views cannot be read (same CSP, no numbers).
pub fn error_page(message: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n\
         <link rel=\"icon\" href=\"data:,\">\n<title>Chronic absence — unavailable</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<main><section class=\"card\">\
         <h2>The report is unavailable</h2><p data-error=\"1\">{msg}</p></section></main>\n\
         </body>\n</html>\n",
        csp = esc(CSP),
        msg = esc(message),
    )
}

fn header(h: &mut String, data: &ReportData, title: &str) {
    let as_of = data
        .state
        .as_ref()
        .and_then(|s| s.as_of_date)
        .map(|d| format!("As of {d}. "))
        .unwrap_or_default();
    let _ = writeln!(
        h,
        "<header><div><h1>{}</h1><p class=\"sub\">{}Read from the BI views of database \
         <code>{}</code>; generated {}.</p></div></header>",
        esc(title),
        as_of,
        esc(&data.database),
        esc(&data.generated_at),
    );
}

fn footer(h: &mut String, rules: &ViewRules) {
    let zeros = if rules.suppress_zero_counts {
        "zeros included"
    } else {
        "zeros are published"
    };
    let _ = writeln!(
        h,
        "<footer>Counts below {t} are suppressed ({zeros}) and shown as “{text}”. \
         Students are counted when enrolled at least {min} instructional days; chronically absent \
         = absent at least {chronic} of their enrolled days. Schools count a student at each school \
         attended (EDFacts FS195); districts and the state count distinct students on all \
         their days. Definitions: docs/bi-views.md.</footer>",
        t = rules.publication_threshold,
        text = esc(&rules.suppressed_text()),
        min = rules.min_enrolled_days,
        chronic = rules.chronic_percent(),
    );
}

fn suppressed_span(attrs: &str, text: &str) -> String {
    format!(
        "<span class=\"sup\" data-suppressed=\"1\"{attrs}>{}</span>",
        esc(text)
    )
}

fn kpis(h: &mut String, data: &ReportData) {
    h.push_str("<section class=\"kpis\">\n");
    let figures = data.state.as_ref().map(|s| &s.figures);
    let enrolled = format!("Students enrolled ≥ {} days", data.rules.min_enrolled_days);
    let severe = data.rules.tier_label(Tier::SevereChronic);
    let cards = [
        ("Chronically absent (state)", "chronic_absence_rate"),
        (enrolled.as_str(), "students_enrolled"),
        ("Chronically absent students", "students_chronically_absent"),
        (severe.as_str(), "students_severe_chronic"),
    ];
    // (data-value, visible text) of a KPI
    let get = |f: &Figures, metric: &str| match metric {
        "chronic_absence_rate" => (
            exact(f.chronic_absence_rate),
            percent(f.chronic_absence_rate),
        ),
        "students_enrolled" => (f.students_enrolled.to_string(), count(f.students_enrolled)),
        "students_chronically_absent" => (
            f.students_chronically_absent.to_string(),
            count(f.students_chronically_absent),
        ),
        _ => (
            f.tiers.severe_chronic.to_string(),
            count(f.tiers.severe_chronic),
        ),
    };
    for (label, metric) in cards {
        let _ = write!(h, "<div class=\"kpi\"><div class=\"label\">{label}</div>");
        match figures {
            Some(Published::Value(f)) => {
                let (value, text) = get(f, metric);
                let _ = write!(
                    h,
                    "<div class=\"num\" data-chart=\"kpi\" data-scope=\"state\" \
                     data-metric=\"{metric}\" data-value=\"{value}\">{text}</div>"
                );
            }
            Some(Published::Suppressed) => {
                let _ = write!(
                    h,
                    "<div class=\"num sup\" data-chart=\"kpi\" data-scope=\"state\" \
                     data-metric=\"{metric}\" data-suppressed=\"1\">{}</div>",
                    esc(&data.rules.suppressed_text())
                );
            }
            None => h.push_str("<div class=\"num sup\">no data</div>"),
        }
        h.push_str("</div>\n");
    }
    h.push_str("</section>\n");
}

/// A rate axis maximum: the next 10% above the largest rate (at least 10%).
fn rate_axis_max(max_rate: f64) -> f64 {
    let m = if max_rate.is_finite() { max_rate } else { 0.0 };
    ((m * 10.0).ceil() / 10.0).clamp(0.1, 1.0)
}

fn svg_open(h: &mut String, width: u32, height: u32, label: &str) {
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" \
         width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{}\">",
        esc(label)
    );
}

fn rate_of(r: &AggregateRow) -> Option<&Figures> {
    r.figures.value()
}

/// Horizontal bars of `chronic_absence_rate`, one row per aggregate row.
struct RateBars<'a> {
    chart: &'a str,
    /// What a suppressed row shows.
    suppressed: &'a str,
    rows: Vec<&'a AggregateRow>,
    /// Label column width.
    label_w: f64,
    reference: Option<f64>,
}

fn rate_bars(h: &mut String, bars: RateBars<'_>) {
    const W: f64 = 600.0;
    const ROW: f64 = 24.0;
    const TOP: f64 = 24.0;
    let x0 = bars.label_w + 10.0;
    let x1 = W - 70.0;
    let max = bars
        .rows
        .iter()
        .filter_map(|r| rate_of(r).map(|f| f.chronic_absence_rate))
        .chain(bars.reference)
        .fold(0.0_f64, f64::max);
    let axis_max = rate_axis_max(max);
    let scale = |r: f64| x0 + (x1 - x0) * (r.clamp(0.0, axis_max) / axis_max);
    let bars_end = TOP + ROW * bars.rows.len() as f64;
    let height = bars_end + if bars.reference.is_some() { 22.0 } else { 6.0 };
    svg_open(h, W as u32, height as u32, bars.chart);
    // grid lines every 10% (5% when the axis is short)
    let step = if axis_max <= 0.2 { 0.05 } else { 0.1 };
    let mut t = 0.0;
    while t <= axis_max + 1e-9 {
        let x = scale(t);
        let _ = write!(
            h,
            "<line x1=\"{x:.1}\" y1=\"{y0:.1}\" x2=\"{x:.1}\" y2=\"{y1:.1}\" stroke=\"#e5e7eb\"/>\
             <text class=\"axis\" x=\"{x:.1}\" y=\"12\" text-anchor=\"middle\">{p:.0}%</text>",
            y0 = TOP - 6.0,
            y1 = bars_end,
            p = t * 100.0
        );
        t += step;
    }
    for (i, r) in bars.rows.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        // about 6.5 px per character at 12 px
        let (label, key_attrs) = row_label(r, (bars.label_w / 6.5) as usize);
        let _ = write!(
            h,
            "<text x=\"{lx:.1}\" y=\"{ty:.1}\" text-anchor=\"end\">{label}</text>",
            lx = bars.label_w,
            ty = y + 13.0,
        );
        match &r.figures {
            Published::Value(f) => {
                let rate = f.chronic_absence_rate;
                let x = scale(if rate.is_finite() { rate } else { 0.0 });
                let _ = write!(
                    h,
                    "<g data-chart=\"{c}\"{key_attrs} data-metric=\"chronic_absence_rate\" \
                     data-value=\"{v}\"><title>{tl}: {p} ({n} of {e} students)</title>\
                     <rect x=\"{x0:.1}\" y=\"{by:.1}\" width=\"{bw:.1}\" height=\"16\" rx=\"2\" \
                     fill=\"{fill}\"/><text x=\"{tx:.1}\" y=\"{ty:.1}\">{p}</text></g>",
                    c = bars.chart,
                    v = exact(rate),
                    tl = esc(&plain_name(r)),
                    p = percent(rate),
                    n = count(f.students_chronically_absent),
                    e = count(f.students_enrolled),
                    by = y + 1.0,
                    bw = (x - x0).max(1.0),
                    fill = if rate >= 0.2 { "#b8312f" } else { "#e0703a" },
                    tx = x + 5.0,
                    ty = y + 13.0,
                );
            }
            Published::Suppressed => {
                let _ = write!(
                    h,
                    "<text class=\"sup\" x=\"{x0:.1}\" y=\"{ty:.1}\" data-chart=\"{c}\"{key_attrs} \
                     data-metric=\"chronic_absence_rate\" data-suppressed=\"1\">{s}</text>",
                    ty = y + 13.0,
                    c = bars.chart,
                    s = esc(bars.suppressed)
                );
            }
        }
    }
    if let Some(r) = bars.reference {
        let x = scale(r);
        let _ = write!(
            h,
            "<g data-chart=\"{c}\" data-scope=\"state\" data-metric=\"chronic_absence_rate\" \
             data-value=\"{v}\"><line x1=\"{x:.1}\" y1=\"{y0:.1}\" x2=\"{x:.1}\" y2=\"{y1:.1}\" \
             stroke=\"#1d2330\" stroke-dasharray=\"4 3\"/><text class=\"axis strong\" x=\"{x:.1}\" \
             y=\"{ty:.1}\" text-anchor=\"middle\">state {p}</text></g>",
            c = bars.chart,
            v = exact(r),
            y0 = TOP - 4.0,
            y1 = bars_end + 4.0,
            ty = bars_end + 16.0,
            p = percent(r),
        );
    }
    h.push_str("</svg>\n");
}

/// The full name of a row as plain text.
fn plain_name(r: &AggregateRow) -> String {
    match (r.district_id.is_empty(), r.school_id.is_empty()) {
        (true, _) => "State".into(),
        (false, true) => r.district_id.clone(),
        (false, false) => format!("{} ({})", r.school_id, r.district_id),
    }
}

/// `s` in at most `max` characters, escaped: a long name keeps its start and its end
/// (where ids and numbers that tell similar names apart usually are).
fn fit(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return esc(s);
    }
    let keep = max.saturating_sub(1);
    let head = keep.div_ceil(2);
    let tail = keep - head;
    let start: String = s.chars().take(head).collect();
    let end: String = s.chars().skip(n - tail).collect();
    format!("{}…{}", esc(&start), esc(&end))
}

/// The visible SVG label of a row (at most `max` characters, the full name as a
/// tooltip when cut) and the attributes that identify the row.
fn row_label(r: &AggregateRow, max: usize) -> (String, String) {
    if r.district_id.is_empty() {
        ("State".into(), " data-scope=\"state\"".into())
    } else if r.school_id.is_empty() {
        let mut label = fit(&r.district_id, max);
        if r.district_id.chars().count() > max {
            label.push_str(&format!("<title>{}</title>", esc(&r.district_id)));
        }
        (
            label,
            format!(
                " data-scope=\"district\" data-district=\"{}\"",
                esc(&r.district_id)
            ),
        )
    } else {
        let (school, district) = (r.school_id.chars().count(), r.district_id.chars().count());
        let label = if school + 1 + district <= max {
            format!(
                "{} <tspan class=\"axis\">{}</tspan>",
                esc(&r.school_id),
                esc(&r.district_id)
            )
        } else {
            format!(
                "{}<title>{} ({})</title>",
                fit(&r.school_id, max),
                esc(&r.school_id),
                esc(&r.district_id)
            )
        };
        (
            label,
            format!(
                " data-scope=\"school\" data-district=\"{}\" data-school=\"{}\"",
                esc(&r.district_id),
                esc(&r.school_id)
            ),
        )
    }
}

fn state_rate(data: &ReportData) -> Option<f64> {
    data.state
        .as_ref()
        .and_then(|s| s.figures.value())
        .map(|f| f.chronic_absence_rate)
}

fn district_rates(h: &mut String, data: &ReportData) {
    let _ = writeln!(
        h,
        "<section class=\"card\"><h2>Chronic absence rate by district</h2>\
         <p class=\"note\">Share of students (≥ {} enrolled days) absent ≥ {} of their days; \
         worst first. Dashed line: the state.</p>",
        data.rules.min_enrolled_days,
        data.rules.chronic_percent()
    );
    let (published, suppressed) = worst_first(&data.districts);
    if published.is_empty() && suppressed.is_empty() {
        h.push_str("<p class=\"empty\">No districts yet.</p></section>\n");
        return;
    }
    let total = published.len() + suppressed.len();
    let rows: Vec<&AggregateRow> = published
        .iter()
        .chain(suppressed.iter())
        .take(MAX_DISTRICT_BARS)
        .copied()
        .collect();
    let shown = rows.len();
    rate_bars(
        h,
        RateBars {
            chart: "district-rate",
            suppressed: &data.rules.suppressed_text(),
            rows,
            label_w: 150.0,
            reference: state_rate(data),
        },
    );
    if shown < total {
        let _ = write!(
            h,
            "<p class=\"note\">{} more districts in the summary table below.</p>",
            total - shown
        );
    }
    h.push_str("</section>\n");
}

fn school_rates(h: &mut String, data: &ReportData) {
    let _ = writeln!(
        h,
        "<section class=\"card\"><h2>Schools with the highest chronic absence</h2>\
         <p class=\"note\">The {MAX_SCHOOL_BARS} worst published schools (school, then district). \
         A student counts at each school attended.</p>"
    );
    let (published, suppressed) = worst_first(&data.schools);
    if published.is_empty() && suppressed.is_empty() {
        h.push_str("<p class=\"empty\">No schools yet.</p></section>\n");
        return;
    }
    if published.is_empty() {
        h.push_str("<p class=\"empty\">No school has published figures.</p>");
    } else {
        let rows: Vec<&AggregateRow> = published.iter().take(MAX_SCHOOL_BARS).copied().collect();
        rate_bars(
            h,
            RateBars {
                chart: "school-rate",
                suppressed: &data.rules.suppressed_text(),
                rows,
                label_w: 210.0,
                reference: state_rate(data),
            },
        );
        if published.len() > MAX_SCHOOL_BARS {
            let _ = write!(
                h,
                "<p class=\"note\">{} more published schools under “All schools”.</p>",
                published.len() - MAX_SCHOOL_BARS
            );
        }
    }
    if !suppressed.is_empty() {
        let _ = write!(
            h,
            "<details><summary>{} schools suppressed (fewer than {} in a count)</summary>\
             <ul class=\"suppressed\">",
            suppressed.len(),
            data.rules.publication_threshold
        );
        for r in &suppressed {
            let _ = write!(
                h,
                "<li>{} <span class=\"axis\">({})</span> {}</li>",
                esc(&r.school_id),
                esc(&r.district_id),
                suppressed_span(
                    &format!(
                        " data-chart=\"school-suppressed\" data-district=\"{}\" data-school=\"{}\"",
                        esc(&r.district_id),
                        esc(&r.school_id)
                    ),
                    &data.rules.suppressed_text()
                )
            );
        }
        h.push_str("</ul></details>");
    }
    h.push_str("</section>\n");
}

/// One row of a 100%-stacked bar with its numbers in columns at the right.
struct StackRow<'a> {
    label: String,
    key_attrs: String,
    strong: bool,
    /// None when suppressed.
    parts: Option<Vec<Segment<'a>>>,
}

/// One part of a stacked bar.
struct Segment<'a> {
    metric: &'a str,
    /// The exact value for `data-value`.
    value: String,
    /// The value as shown.
    text: String,
    /// Share of the bar, in [0, 1].
    share: f64,
    color: &'a str,
}

/// Label characters that fit the stacked charts' label column.
const STACK_LABEL_CHARS: usize = 23;

fn stacked_bars(
    h: &mut String,
    chart: &str,
    headers: &[&str],
    col_w: f64,
    rows: &[StackRow<'_>],
    suppressed: &str,
) {
    const W: f64 = 600.0;
    const ROW: f64 = 24.0;
    const TOP: f64 = 22.0;
    let label_w = 150.0;
    let x0 = label_w + 10.0;
    let cols = headers.len() as f64;
    let x1 = W - cols * col_w - 12.0;
    let height = TOP + ROW * rows.len() as f64 + 4.0;
    svg_open(h, W as u32, height as u32, chart);
    for (j, hd) in headers.iter().enumerate() {
        let _ = write!(
            h,
            "<text class=\"axis\" x=\"{x:.1}\" y=\"13\" text-anchor=\"end\">{hd}</text>",
            x = x1 + col_w * (j as f64 + 1.0) + 4.0
        );
    }
    let _ = write!(
        h,
        "<text class=\"axis\" x=\"{x0:.1}\" y=\"13\">0%</text>\
         <text class=\"axis\" x=\"{x1:.1}\" y=\"13\" text-anchor=\"end\">100%</text>"
    );
    for (i, r) in rows.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let _ = write!(
            h,
            "<text x=\"{lx:.1}\" y=\"{ty:.1}\" text-anchor=\"end\"{cls}>{l}</text>",
            lx = label_w,
            ty = y + 13.0,
            cls = if r.strong { " class=\"strong\"" } else { "" },
            l = r.label
        );
        match &r.parts {
            Some(parts) => {
                let mut x = x0;
                let _ = write!(
                    h,
                    "<rect x=\"{x0:.1}\" y=\"{by:.1}\" width=\"{w:.1}\" height=\"16\" \
                     fill=\"#f1f2f4\"/>",
                    by = y + 1.0,
                    w = x1 - x0
                );
                for (j, seg) in parts.iter().enumerate() {
                    let Segment {
                        metric,
                        value,
                        text,
                        share,
                        color,
                    } = seg;
                    let w = (x1 - x0) * share.clamp(0.0, 1.0);
                    let _ = write!(
                        h,
                        "<g data-chart=\"{chart}\"{k} data-metric=\"{metric}\" \
                         data-value=\"{value}\"><rect x=\"{x:.1}\" y=\"{by:.1}\" \
                         width=\"{w:.1}\" height=\"16\" fill=\"{color}\"/>\
                         <text x=\"{tx:.1}\" y=\"{ty:.1}\" text-anchor=\"end\" fill=\"{color}\" \
                         style=\"fill:{color}\"{cls}>{text}</text></g>",
                        k = r.key_attrs,
                        by = y + 1.0,
                        tx = x1 + col_w * (j as f64 + 1.0) + 4.0,
                        ty = y + 13.0,
                        cls = if r.strong { " class=\"strong\"" } else { "" },
                    );
                    x += w;
                }
            }
            None => {
                let _ = write!(
                    h,
                    "<text class=\"sup\" x=\"{x0:.1}\" y=\"{ty:.1}\" data-chart=\"{chart}\"{k} \
                     data-suppressed=\"1\">{s}</text>",
                    ty = y + 13.0,
                    k = r.key_attrs,
                    s = esc(suppressed)
                );
            }
        }
    }
    h.push_str("</svg>\n");
}

fn legend(h: &mut String, items: &[(&str, &str)]) {
    h.push_str("<div class=\"legend\">");
    for (label, color) in items {
        let _ = write!(
            h,
            "<span><i style=\"background:{color}\"></i>{}</span>",
            esc(label)
        );
    }
    h.push_str("</div>\n");
}

fn tier_distribution(h: &mut String, data: &ReportData) {
    let _ = writeln!(
        h,
        "<section class=\"card\"><h2>Tier distribution</h2>\
         <p class=\"note\">Students (≥ {} enrolled days) by absence rate; numbers are students.</p>",
        data.rules.min_enrolled_days
    );
    let tiers = [
        Tier::Satisfactory,
        Tier::AtRisk,
        Tier::ModerateChronic,
        Tier::SevereChronic,
    ];
    let labels: Vec<String> = tiers.iter().map(|t| data.rules.tier_label(*t)).collect();
    let items: Vec<(&str, &str)> = labels.iter().map(String::as_str).zip(TIER_COLORS).collect();
    legend(h, &items);
    let (published, suppressed) = worst_first(&data.districts);
    let mut rows: Vec<StackRow> = Vec::new();
    let mut push = |r: &AggregateRow, strong: bool| {
        let (label, key_attrs) = row_label(r, STACK_LABEL_CHARS);
        let parts = r.figures.value().map(|f| {
            let total = f.tiers.total().max(1) as f64;
            f.tiers
                .parts()
                .iter()
                .zip(TIER_COLORS)
                .map(|((tier, n), color)| Segment {
                    metric: tier.column(),
                    value: n.to_string(),
                    text: count(*n),
                    share: *n as f64 / total,
                    color,
                })
                .collect()
        });
        rows.push(StackRow {
            label,
            key_attrs,
            strong,
            parts,
        });
    };
    if let Some(s) = &data.state {
        push(s, true);
    }
    for r in published
        .iter()
        .chain(suppressed.iter())
        .take(MAX_DISTRICT_BARS)
    {
        push(r, false);
    }
    if rows.is_empty() {
        h.push_str("<p class=\"empty\">No data yet.</p></section>\n");
        return;
    }
    stacked_bars(
        h,
        "tiers",
        &["Satisf.", "At risk", "Moderate", "Severe"],
        60.0,
        &rows,
        &data.rules.suppressed_text(),
    );
    h.push_str("</section>\n");
}

fn absence_breakdown(h: &mut String, data: &ReportData) {
    h.push_str(
        "<section class=\"card\"><h2>Days absent: excused, unexcused, suspension</h2>\
         <p class=\"note\">Sums of days absent over students (student_attendance); \
         bars are shares, numbers are days. Fewer than 10 students: suppressed.</p>\n",
    );
    legend(
        h,
        &[
            ("Excused", BREAKDOWN_COLORS[0]),
            ("Unexcused", BREAKDOWN_COLORS[1]),
            ("Suspension (counted absent)", BREAKDOWN_COLORS[2]),
        ],
    );
    // districts in the order of the district chart
    let (published, suppressed) = worst_first(&data.districts);
    let mut order: Vec<&str> = published
        .iter()
        .chain(suppressed.iter())
        .map(|r| r.district_id.as_str())
        .collect();
    for s in &data.absence_by_district {
        if !order.contains(&s.district_id.as_str()) {
            order.push(&s.district_id);
        }
    }
    let mut list: Vec<Breakdown> = Vec::new();
    if let Some(s) = &data.absence_state {
        list.push(breakdown(s, &data.rules));
    }
    for d in order.into_iter().take(MAX_DISTRICT_BARS) {
        if let Some(s) = data.absence_by_district.iter().find(|s| s.district_id == d) {
            list.push(breakdown(s, &data.rules));
        }
    }
    if list.is_empty() {
        h.push_str("<p class=\"empty\">No data yet.</p></section>\n");
        return;
    }
    let rows: Vec<StackRow> = list
        .iter()
        .map(|b| {
            let agg = AggregateRow {
                district_id: b.district_id.clone(),
                school_id: String::new(),
                as_of_date: None,
                figures: Published::Suppressed,
            };
            let (label, key_attrs) = row_label(&agg, STACK_LABEL_CHARS);
            let parts = b.days.value().map(|&(e, u, s)| {
                let total = e + u + s;
                let share = |x: f64| if total > 0.0 { x / total } else { 0.0 };
                [
                    ("days_absent_excused", e, BREAKDOWN_COLORS[0]),
                    ("days_absent_unexcused", u, BREAKDOWN_COLORS[1]),
                    ("days_suspended", s, BREAKDOWN_COLORS[2]),
                ]
                .into_iter()
                .map(|(metric, x, color)| Segment {
                    metric,
                    value: exact(x),
                    text: days(x),
                    share: share(x),
                    color,
                })
                .collect()
            });
            StackRow {
                strong: b.district_id.is_empty(),
                label,
                key_attrs,
                parts,
            }
        })
        .collect();
    stacked_bars(
        h,
        "absence-breakdown",
        &["Excused", "Unexcused", "Suspension"],
        76.0,
        &rows,
        &data.rules.suppressed_text(),
    );
    h.push_str("</section>\n");
}

fn series_label(s: &TrendSeries) -> String {
    if s.is_state() {
        "State".into()
    } else {
        s.district_id.clone()
    }
}

fn series_attrs(s: &TrendSeries) -> String {
    if s.is_state() {
        " data-scope=\"state\"".into()
    } else {
        format!(
            " data-scope=\"district\" data-district=\"{}\"",
            esc(&s.district_id)
        )
    }
}

fn trend(h: &mut String, data: &ReportData) {
    h.push_str(
        "<section class=\"card wide\"><h2>Chronic absence through the year</h2>\
         <p class=\"note\">Share of students chronically absent as of each instructional date \
         (their days from the start of the year to that date), summed over the schools whose \
         figures are published that day; suppressed schools are left out. School-level \
         counting (a student counts at each school attended), so the last value can differ \
         slightly from the district and state rates above. Hover a point for its numbers; month ends are in the table.</p>\n",
    );
    let all = trend_series(&data.trend);
    if all.is_empty() {
        h.push_str(
            "<p class=\"empty\">No published trend yet (early in the year every school is \
             below the publication threshold).</p></section>\n",
        );
        return;
    }
    // the state, then the largest districts (by students on their last date)
    let mut districts: Vec<&TrendSeries> = all.iter().filter(|s| !s.is_state()).collect();
    districts.sort_by(|a, b| {
        let n = |s: &TrendSeries| s.last().map(|p| p.students_enrolled).unwrap_or(0);
        n(b).cmp(&n(a))
            .then_with(|| a.district_id.cmp(&b.district_id))
    });
    let omitted = districts.len().saturating_sub(MAX_TREND_DISTRICTS);
    districts.truncate(MAX_TREND_DISTRICTS);
    districts.sort_by(|a, b| a.district_id.cmp(&b.district_id));
    let mut shown: Vec<(&TrendSeries, &str, f64)> = Vec::new();
    if let Some(state) = all.iter().find(|s| s.is_state()) {
        shown.push((state, "#1d2330", 3.0));
    }
    for (i, s) in districts.iter().enumerate() {
        shown.push((s, SERIES_COLORS[i % SERIES_COLORS.len()], 1.8));
    }

    let dates: Vec<NaiveDate> = {
        let mut v: Vec<NaiveDate> = shown
            .iter()
            .flat_map(|(s, _, _)| s.points.iter().map(|p| p.date))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let (first, last) = (dates[0], dates[dates.len() - 1]);
    let span = (last - first).num_days().max(1) as f64;
    const W: f64 = 1240.0;
    const H: f64 = 300.0;
    let (px0, px1, py0, py1) = (48.0, 990.0, 14.0, 270.0);
    let max_rate = shown
        .iter()
        .flat_map(|(s, _, _)| s.points.iter().map(|p| p.rate()))
        .fold(0.0_f64, f64::max);
    let axis_max = rate_axis_max(max_rate);
    let xs = |d: NaiveDate| {
        if first == last {
            (px0 + px1) / 2.0
        } else {
            px0 + (px1 - px0) * ((d - first).num_days() as f64 / span)
        }
    };
    let ys = |r: f64| py1 - (py1 - py0) * (r.clamp(0.0, axis_max) / axis_max);
    svg_open(h, W as u32, H as u32, "trend");
    // y grid
    let step = if axis_max <= 0.2 { 0.05 } else { 0.1 };
    let mut t = 0.0;
    while t <= axis_max + 1e-9 {
        let y = ys(t);
        let _ = write!(
            h,
            "<line x1=\"{px0}\" y1=\"{y:.1}\" x2=\"{px1}\" y2=\"{y:.1}\" stroke=\"#e5e7eb\"/>\
             <text class=\"axis\" x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\">{p:.0}%</text>",
            tx = px0 - 6.0,
            ty = y + 4.0,
            p = t * 100.0
        );
        t += step;
    }
    // x ticks: the first date of each month
    let mut prev: Option<(i32, u32)> = None;
    for d in &dates {
        let ym = (d.year(), d.month());
        if prev != Some(ym) {
            let x = xs(*d);
            let label = if prev.is_none() || d.month() == 1 {
                d.format("%b %Y").to_string()
            } else {
                d.format("%b").to_string()
            };
            let _ = write!(
                h,
                "<line x1=\"{x:.1}\" y1=\"{py1}\" x2=\"{x:.1}\" y2=\"{y2}\" stroke=\"#9ca3af\"/>\
                 <text class=\"axis\" x=\"{x:.1}\" y=\"{ty}\" text-anchor=\"start\">{label}</text>",
                y2 = py1 + 5.0,
                ty = py1 + 18.0
            );
            prev = Some(ym);
        }
    }
    let _ = write!(
        h,
        "<line x1=\"{px0}\" y1=\"{py1}\" x2=\"{px1}\" y2=\"{py1}\" stroke=\"#9ca3af\"/>"
    );
    // lines, points, end labels; the state last so that it is on top
    for (s, color, width) in shown.iter().rev() {
        let label = esc(&series_label(s));
        let attrs = series_attrs(s);
        let path: Vec<String> = s
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", xs(p.date), ys(p.rate())))
            .collect();
        let _ = write!(
            h,
            "<g{attrs} data-series=\"1\"><polyline fill=\"none\" stroke=\"{color}\" \
             stroke-width=\"{width}\" stroke-linejoin=\"round\" points=\"{}\"/>",
            path.join(" ")
        );
        for p in &s.points {
            let _ = write!(
                h,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{r}\" fill=\"{color}\" data-chart=\"trend\"{attrs} \
                 data-date=\"{d}\" data-metric=\"chronic_absence_rate\" data-value=\"{v}\" \
                 data-students-enrolled=\"{e}\" data-students-chronically-absent=\"{c}\">\
                 <title>{label}, {d}: {pt} ({cn} of {en} students; {sp} of {st} schools published)</title></circle>",
                x = xs(p.date),
                y = ys(p.rate()),
                r = if s.is_state() { 3.0 } else { 2.2 },
                d = p.date,
                v = exact(p.rate()),
                e = p.students_enrolled,
                c = p.students_chronically_absent,
                pt = percent(p.rate()),
                cn = count(p.students_chronically_absent),
                en = count(p.students_enrolled),
                sp = p.schools_published,
                st = p.schools_published + p.schools_suppressed,
            );
        }
        h.push_str("</g>");
    }
    // legend at the right: last value of each line
    let lx = px1 + 24.0;
    for (i, (s, color, _)) in shown.iter().enumerate() {
        let y = py0 + 8.0 + 22.0 * i as f64;
        let Some(p) = s.last() else { continue };
        let _ = write!(
            h,
            "<line x1=\"{lx}\" y1=\"{ly:.1}\" x2=\"{lx2}\" y2=\"{ly:.1}\" stroke=\"{color}\" \
             stroke-width=\"3\"/><text x=\"{tx}\" y=\"{ty:.1}\"{cls}>{label}</text>\
             <text x=\"{vx}\" y=\"{ty:.1}\" text-anchor=\"end\" data-chart=\"trend-legend\"{attrs} \
             data-date=\"{d}\" data-metric=\"chronic_absence_rate\" data-value=\"{v}\"{cls}>{pt}</text>",
            ly = y,
            lx2 = lx + 18.0,
            tx = lx + 24.0,
            ty = y + 4.0,
            vx = W - 6.0,
            cls = if s.is_state() { " class=\"strong\"" } else { "" },
            label = fit(&series_label(s), 20),
            attrs = series_attrs(s),
            d = p.date,
            v = exact(p.rate()),
            pt = percent(p.rate()),
        );
    }
    let _ = write!(
        h,
        "<text class=\"axis\" x=\"{lx}\" y=\"{y:.1}\">as of {last}</text>",
        y = py0 + 8.0 + 22.0 * shown.len() as f64 + 4.0
    );
    h.push_str("</svg>\n");
    if omitted > 0 {
        let _ = write!(
            h,
            "<p class=\"note\">{omitted} smaller districts not drawn; their figures are in the \
             summary table.</p>"
        );
    }
    // month-end table
    let state_dates: Vec<NaiveDate> = shown
        .first()
        .map(|(s, _, _)| s.points.iter().map(|p| p.date).collect())
        .unwrap_or_default();
    let rows = month_ends(&state_dates);
    h.push_str("<details><summary>Month-end values</summary><div class=\"scroll\"><table><thead><tr><th>Date</th>");
    for (s, _, _) in &shown {
        let _ = write!(h, "<th>{}</th>", esc(&series_label(s)));
    }
    h.push_str("</tr></thead><tbody>");
    for d in rows {
        let _ = write!(h, "<tr><td>{d}</td>");
        for (s, _, _) in &shown {
            match s.points.iter().find(|p| p.date == d) {
                Some(p) => {
                    let _ = write!(
                        h,
                        "<td data-chart=\"trend-table\"{a} data-date=\"{d}\" \
                         data-metric=\"chronic_absence_rate\" data-value=\"{v}\">{pt} \
                         <span class=\"axis\">({c} / {e})</span></td>",
                        a = series_attrs(s),
                        v = exact(p.rate()),
                        pt = percent(p.rate()),
                        c = count(p.students_chronically_absent),
                        e = count(p.students_enrolled),
                    );
                }
                None => h.push_str("<td>—</td>"),
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table></div></details></section>\n");
}

const TABLE_METRICS: [&str; 7] = [
    "students_enrolled",
    "students_chronically_absent",
    "chronic_absence_rate",
    "students_satisfactory",
    "students_at_risk",
    "students_moderate_chronic",
    "students_severe_chronic",
];

fn table_cells(h: &mut String, r: &AggregateRow, chart: &str, suppressed: &str) {
    let (_, key) = row_label(r, usize::MAX);
    match &r.figures {
        Published::Value(f) => {
            let cells: [(String, String); 7] = [
                (f.students_enrolled.to_string(), count(f.students_enrolled)),
                (
                    f.students_chronically_absent.to_string(),
                    count(f.students_chronically_absent),
                ),
                (
                    exact(f.chronic_absence_rate),
                    percent(f.chronic_absence_rate),
                ),
                (
                    f.tiers.satisfactory.to_string(),
                    count(f.tiers.satisfactory),
                ),
                (f.tiers.at_risk.to_string(), count(f.tiers.at_risk)),
                (
                    f.tiers.moderate_chronic.to_string(),
                    count(f.tiers.moderate_chronic),
                ),
                (
                    f.tiers.severe_chronic.to_string(),
                    count(f.tiers.severe_chronic),
                ),
            ];
            for (metric, (value, text)) in TABLE_METRICS.iter().zip(cells) {
                let _ = write!(
                    h,
                    "<td data-chart=\"{chart}\"{key} data-metric=\"{metric}\" \
                     data-value=\"{value}\">{text}</td>"
                );
            }
        }
        Published::Suppressed => {
            let _ = write!(
                h,
                "<td class=\"sup\" colspan=\"7\" data-chart=\"{chart}\"{key} \
                 data-suppressed=\"1\">{}</td>",
                esc(suppressed)
            );
        }
    }
}

fn summary_table(h: &mut String, data: &ReportData) {
    let r = &data.rules;
    let _ = writeln!(
        h,
        "<section class=\"card wide\"><h2>Summary</h2>\
         <p class=\"note\">Enrolled = students with at least {} enrolled instructional days. \
         Tiers by absence rate: {}, {}, {}, {}.</p>\n<div class=\"scroll\"><table><thead><tr><th>Scope</th>\
         <th>As of</th><th>Enrolled</th><th>Chronically absent</th><th>Rate</th>\
         <th>Satisfactory</th><th>At risk</th><th>Moderate</th><th>Severe</th></tr></thead><tbody>",
        r.min_enrolled_days,
        esc(&r.tier_label(Tier::Satisfactory)),
        esc(&r.tier_label(Tier::AtRisk)),
        esc(&r.tier_label(Tier::ModerateChronic)),
        esc(&r.tier_label(Tier::SevereChronic)),
    );
    let as_of = |r: &AggregateRow| r.as_of_date.map(|d| d.to_string()).unwrap_or_default();
    if let Some(s) = &data.state {
        let _ = write!(h, "<tr class=\"state\"><td>State</td><td>{}</td>", as_of(s));
        table_cells(h, s, "summary", &data.rules.suppressed_text());
        h.push_str("</tr>\n");
    }
    let mut districts: Vec<&AggregateRow> = data.districts.iter().collect();
    districts.sort_by(|a, b| a.district_id.cmp(&b.district_id));
    for r in districts {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td>",
            esc(&r.district_id),
            as_of(r)
        );
        table_cells(h, r, "summary", &data.rules.suppressed_text());
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table></div>\n");
    if !data.schools.is_empty() {
        let mut schools: Vec<&AggregateRow> = data.schools.iter().collect();
        schools.sort_by(|a, b| {
            a.district_id
                .cmp(&b.district_id)
                .then_with(|| a.school_id.cmp(&b.school_id))
        });
        let _ = writeln!(
            h,
            "<details><summary>All schools ({})</summary><div class=\"scroll\"><table><thead><tr>\
             <th>School</th><th>District</th><th>As of</th><th>Enrolled</th>\
             <th>Chronically absent</th><th>Rate</th><th>Satisfactory</th><th>At risk</th>\
             <th>Moderate</th><th>Severe</th></tr></thead><tbody>",
            schools.len()
        );
        for r in schools {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td>",
                esc(&r.school_id),
                esc(&r.district_id),
                as_of(r)
            );
            table_cells(h, r, "school-table", &data.rules.suppressed_text());
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody></table></div></details>\n");
    }
    h.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AbsenceSums, Tiers, TrendRow};

    fn figures(enrolled: u64, chronic: u64) -> Published<Figures> {
        Published::Value(Figures {
            students_enrolled: enrolled,
            students_chronically_absent: chronic,
            chronic_absence_rate: chronic as f64 / enrolled as f64,
            tiers: Tiers {
                satisfactory: enrolled - chronic - 10,
                at_risk: 10,
                moderate_chronic: chronic - 11,
                severe_chronic: 11,
            },
        })
    }

    fn agg(district: &str, school: &str, f: Published<Figures>) -> AggregateRow {
        AggregateRow {
            district_id: district.into(),
            school_id: school.into(),
            as_of_date: NaiveDate::from_ymd_opt(2023, 10, 31),
            figures: f,
        }
    }

    fn sample() -> ReportData {
        let mut d = ReportData::empty("rollcall", "2024-01-02 03:04 UTC");
        d.school_year = Some(2024);
        d.state = Some(agg("", "", figures(200, 50)));
        d.districts = vec![
            agg("D1", "", figures(150, 40)),
            agg("D<2>", "", Published::Suppressed),
        ];
        d.schools = vec![
            agg("D1", "S1", figures(100, 30)),
            agg("D1", "S2", figures(50, 21)),
            agg("D<2>", "Tiny & \"Small\"", Published::Suppressed),
        ];
        let date = |day| NaiveDate::from_ymd_opt(2023, 10, day).unwrap();
        d.trend = vec![
            TrendRow {
                district_id: "D1".into(),
                school_id: "S1".into(),
                date: date(30),
                counts: Published::Value((100, 29)),
            },
            TrendRow {
                district_id: "D1".into(),
                school_id: "S1".into(),
                date: date(31),
                counts: Published::Value((100, 30)),
            },
            TrendRow {
                district_id: "D<2>".into(),
                school_id: "Tiny & \"Small\"".into(),
                date: date(31),
                counts: Published::Suppressed,
            },
        ];
        d.absence_by_district = vec![
            AbsenceSums {
                district_id: "D1".into(),
                students: 150,
                days_absent_excused: 100.5,
                days_absent_unexcused: 80.0,
                days_suspended: 3.0,
            },
            AbsenceSums {
                district_id: "D<2>".into(),
                students: 6,
                days_absent_excused: 7.0,
                days_absent_unexcused: 1.5,
                days_suspended: 0.0,
            },
        ];
        d.absence_state = Some(AbsenceSums {
            district_id: String::new(),
            students: 156,
            days_absent_excused: 107.5,
            days_absent_unexcused: 81.5,
            days_suspended: 3.0,
        });
        d
    }

    /// The text of every element carrying `data-suppressed="1"`, up to its closing tag.
    fn suppressed_texts(html: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = html;
        while let Some(i) = rest.find("data-suppressed=\"1\"") {
            let after = &rest[i..];
            let start = after.find('>').unwrap() + 1;
            let end = after[start..].find('<').unwrap() + start;
            out.push(after[start..end].to_string());
            rest = &after[end..];
        }
        out
    }

    #[test]
    fn suppressed_figures_show_the_label_and_never_a_number() {
        let html = render_html(&sample());
        let texts = suppressed_texts(&html);
        // district D<2> in: rate chart, tier chart, breakdown, summary table;
        // the tiny school in: suppressed list and the school table
        assert_eq!(texts.len(), 6, "{texts:?}");
        for t in &texts {
            assert_eq!(t, "suppressed (&lt; 10)");
        }
        // the suppressed district's breakdown sums never appear
        assert!(!html.contains("data-value=\"7\""), "suppressed sum leaked");
        assert!(!html.contains(">7.0<"));
        // no element about the suppressed district or school carries a value
        for tag in html.split('<') {
            if tag.contains("D&lt;2&gt;") || tag.contains("Tiny") {
                assert!(!tag.contains("data-value"), "{tag}");
            }
        }
    }

    #[test]
    fn published_numbers_appear_as_text_and_data_value() {
        let html = render_html(&sample());
        // state rate: KPI, reference line, summary table
        assert!(
            html.contains("data-metric=\"chronic_absence_rate\" data-value=\"0.25\">25.0%</div>")
        );
        assert!(html.contains(
            "data-chart=\"summary\" data-scope=\"district\" data-district=\"D1\" \
             data-metric=\"students_enrolled\" data-value=\"150\">150</td>"
        ));
        // the school bar: value attribute and visible text
        let s2 = html
            .split("<g data-chart=\"school-rate\"")
            .find(|s| s.contains("data-school=\"S2\""))
            .unwrap();
        assert!(s2.contains("data-value=\"0.42\""));
        assert!(s2.contains(">42.0%</text>"));
        // the breakdown of D1 in days
        assert!(html.contains("data-metric=\"days_absent_excused\" data-value=\"100.5\""));
        assert!(html.contains(">100.5</text>"));
        // the trend: the state's last point (only S1 published) and a month-end cell
        assert!(html.contains(
            "data-date=\"2023-10-31\" data-metric=\"chronic_absence_rate\" data-value=\"0.3\""
        ));
        assert!(html.contains("data-chart=\"trend-table\""));
    }

    #[test]
    fn names_are_escaped_everywhere() {
        let mut d = sample();
        d.districts
            .push(agg("<script>alert(1)</script>", "", figures(40, 20)));
        d.schools.push(agg(
            "<script>alert(1)</script>",
            "\"><img src=x onerror=alert(1)>",
            figures(40, 20),
        ));
        let html = render_html(&d);
        assert!(!html.contains("<script"));
        assert!(!html.contains("<img"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("data-school=\"&quot;&gt;&lt;img src=x onerror=alert(1)&gt;\""));
        assert!(html.contains("Tiny &amp; &quot;Small&quot;"));
    }

    #[test]
    fn the_page_is_self_contained() {
        let html = render_html(&sample());
        assert!(html.contains(
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src &#39;none&#39;; \
             style-src &#39;unsafe-inline&#39;; img-src data:\">"
        ));
        for bad in [
            "src=\"http",
            "href=\"http",
            "url(",
            "@import",
            "<script",
            "@font-face",
        ] {
            assert!(!html.contains(bad), "{bad}");
        }
        // the only href is the data: favicon; the SVG namespace is not a request
        assert_eq!(html.matches("href=").count(), 1);
        assert!(html.contains("<link rel=\"icon\" href=\"data:,\">"));
    }

    #[test]
    fn empty_data_renders_a_page_that_says_so() {
        let html = render_html(&ReportData::empty("rollcall", "now"));
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("data-empty=\"1\""));
        assert!(!html.contains("data-value"));
        assert!(!html.contains("NaN"));
        assert!(html.ends_with("</html>\n"));
    }

    #[test]
    fn a_year_with_everything_suppressed_renders_without_numbers() {
        let mut d = ReportData::empty("rollcall", "now");
        d.school_year = Some(2024);
        d.state = Some(agg("", "", Published::Suppressed));
        d.districts = vec![agg("D1", "", Published::Suppressed)];
        d.schools = vec![agg("D1", "S1", Published::Suppressed)];
        d.trend = vec![TrendRow {
            district_id: "D1".into(),
            school_id: "S1".into(),
            date: NaiveDate::from_ymd_opt(2023, 9, 5).unwrap(),
            counts: Published::Suppressed,
        }];
        let html = render_html(&d);
        assert!(!html.contains("data-value"), "no published figure exists");
        assert!(!html.contains("NaN"));
        assert!(html.contains("No published trend yet"));
        assert!(suppressed_texts(&html).len() >= 5);
    }

    #[test]
    fn long_names_keep_their_start_and_end() {
        assert_eq!(fit("Springfield Unified 34", 30), "Springfield Unified 34");
        assert_eq!(
            fit("Springfield Unified School District 34", 15),
            "Springf…rict 34"
        );
        assert_eq!(fit("<<<<<<<<<<>>>>", 5), "&lt;&lt;…&gt;&gt;");
        assert_eq!(
            fit("Springfield Unified School District 34", 15)
                .chars()
                .count(),
            15
        );
    }

    #[test]
    fn rendering_is_deterministic() {
        assert_eq!(render_html(&sample()), render_html(&sample()));
    }
}
