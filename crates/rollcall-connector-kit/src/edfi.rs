//! The one Ed-Fi convention two connectors share: how a record's identity is rendered
//! as its natural key. The Ed-Fi ODS/API connector and the file-drop connector's XML
//! interchange reader must agree on it, so that the same event loaded in bulk from an
//! interchange file and later changed through the API is one record, not two.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// `resource:k1=v1|k2=v2...` with keys sorted case-insensitively: the same for a
/// change, a delete and a key change of the same record, and for the interchange form.
pub fn edfi_natural_key(resource: &str, kv: &Map<String, Value>) -> String {
    let mut parts: Vec<(&String, &Value)> = kv.iter().collect();
    // The order of the lowercased names, without allocating them (a hot path: one key
    // per record of a bulk load).
    parts.sort_by(|a, b| {
        a.0.chars()
            .flat_map(char::to_lowercase)
            .cmp(b.0.chars().flat_map(char::to_lowercase))
    });
    let mut out = String::with_capacity(resource.len() + 1 + 24 * parts.len());
    out.push_str(resource);
    out.push(':');
    for (i, (k, v)) in parts.iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        out.push_str(k);
        out.push('=');
        match v {
            Value::String(s) => out.push_str(s),
            other => {
                let _ = write!(out, "{other}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_case_names_and_non_string_values() {
        let kv: Map<String, Value> =
            serde_json::from_str(r#"{"b":true,"A":1.5,"c":null,"Ä":"x","a_":[1,"y"]}"#).unwrap();
        assert_eq!(
            edfi_natural_key("r", &kv),
            r#"r:A=1.5|a_=[1,"y"]|b=true|c=null|Ä=x"#
        );
    }

    #[test]
    fn keys_sort_case_insensitively_and_numbers_render_bare() {
        let kv: Map<String, Value> = serde_json::from_str(
            r#"{"studentUniqueId":"604822","eventDate":"2021-08-31","schoolId":255901001}"#,
        )
        .unwrap();
        assert_eq!(
            edfi_natural_key("studentSchoolAttendanceEvents", &kv),
            "studentSchoolAttendanceEvents:eventDate=2021-08-31|schoolId=255901001|studentUniqueId=604822"
        );
    }
}
