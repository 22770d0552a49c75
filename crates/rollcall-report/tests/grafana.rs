//! deploy/grafana/rollcall-dashboard.json: it parses, it is importable (datasource input
//! `DS_CLICKHOUSE`), and every query reads only the BI views that
//! schemas/clickhouse/0002_bi_views.sql creates, through `${database}`. (The browser
//! test also runs every query on the real server.)

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

fn repo_file(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The views 0002 creates: `CREATE VIEW ${database}.<name>`.
fn view_names() -> BTreeSet<String> {
    let sql = repo_file("schemas/clickhouse/0002_bi_views.sql");
    let names: BTreeSet<String> = sql
        .lines()
        .filter_map(|l| l.trim().strip_prefix("CREATE VIEW ${database}."))
        .map(|rest| {
            rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(names.contains("state_chronic_absence"), "{names:?}");
    names
}

/// Every relation named after FROM or JOIN (subqueries skipped), as written.
fn relations(sql: &str) -> Vec<String> {
    let lower = sql.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut out = Vec::new();
    for kw in ["from", "join"] {
        let mut at = 0;
        while let Some(i) = lower[at..].find(kw) {
            let start = at + i;
            at = start + kw.len();
            let before_ok = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let after_ok = bytes.get(at).is_some_and(|b| b.is_ascii_whitespace());
            if !(before_ok && after_ok) {
                continue;
            }
            let rest = sql[at..].trim_start();
            if rest.starts_with('(') {
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "_.${}".contains(*c))
                .collect();
            out.push(name);
        }
    }
    out
}

fn dashboard() -> Value {
    serde_json::from_str(&repo_file("deploy/grafana/rollcall-dashboard.json"))
        .expect("the dashboard is valid JSON")
}

fn queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().unwrap().to_string();
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            assert_eq!(
                t["datasource"]["type"], "grafana-clickhouse-datasource",
                "{title}"
            );
            assert_eq!(t["datasource"]["uid"], "${DS_CLICKHOUSE}", "{title}");
            assert_eq!(t["editorType"], "sql", "{title}");
            out.push((
                title.clone(),
                t["rawSql"].as_str().expect("rawSql").to_string(),
            ));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            assert_eq!(v["datasource"]["uid"], "${DS_CLICKHOUSE}");
            out.push((
                format!("variable {}", v["name"]),
                v["query"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

#[test]
fn every_query_reads_only_the_bi_views() {
    let views = view_names();
    let d = dashboard();
    let qs = queries(&d);
    let mut used = BTreeSet::new();
    for (title, sql) in &qs {
        let rels = relations(sql);
        assert!(!rels.is_empty(), "{title}: no FROM in {sql}");
        for r in rels {
            let name = r
                .strip_prefix("${database}.")
                .unwrap_or_else(|| panic!("{title}: `{r}` is not qualified with ${{database}}"));
            assert!(
                views.contains(name),
                "{title}: `{name}` is not a view of 0002 ({views:?})"
            );
            used.insert(name.to_string());
        }
    }
    for v in [
        "state_chronic_absence",
        "district_chronic_absence",
        "school_chronic_absence",
        "chronic_absence_trend",
    ] {
        assert!(used.contains(v), "no panel reads {v}");
    }
}

#[test]
fn the_dashboard_is_importable_and_has_the_panels() {
    let d = dashboard();
    let inputs = d["__inputs"].as_array().unwrap();
    assert!(inputs.iter().any(|i| i["name"] == "DS_CLICKHOUSE"
        && i["type"] == "datasource"
        && i["pluginId"] == "grafana-clickhouse-datasource"));
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut types = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        types.insert(p["type"].as_str().unwrap().to_string());
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24 && g["h"].as_u64().unwrap() > 0, "{p}");
    }
    for t in ["stat", "barchart", "table", "timeseries"] {
        assert!(types.contains(t), "no {t} panel");
    }
    let titles: Vec<String> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_lowercase())
        .collect();
    for word in ["state", "district", "schools", "tier", "through the year"] {
        assert!(
            titles.iter().any(|t| t.contains(word)),
            "no panel about {word}: {titles:?}"
        );
    }
    // the school year variable and the database constant the queries use
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(vars.contains(&"database") && vars.contains(&"school_year"));
}

#[test]
fn the_relation_scanner_sees_what_it_must() {
    assert_eq!(
        relations("SELECT a FROM ${database}.x WHERE b IN (SELECT c FROM y) JOIN z ON 1"),
        ["${database}.x", "y", "z"]
    );
    assert_eq!(
        relations("SELECT fromDays FROM (SELECT 1)"),
        Vec::<String>::new()
    );
}
