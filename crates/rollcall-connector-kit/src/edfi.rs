//! The one Ed-Fi convention two connectors share: how a record's identity is rendered
//! as its natural key. The Ed-Fi ODS/API connector and the file-drop connector's XML
//! interchange reader must agree on it, so that the same event loaded in bulk from an
//! interchange file and later changed through the API is one record, not two.

use serde_json::{Map, Value};

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `resource:k1=v1|k2=v2...` with keys sorted case-insensitively: the same for a
/// change, a delete and a key change of the same record, and for the interchange form.
pub fn edfi_natural_key(resource: &str, kv: &Map<String, Value>) -> String {
    let mut parts: Vec<(&String, &Value)> = kv.iter().collect();
    parts.sort_by_cached_key(|a| a.0.to_lowercase());
    let body: Vec<String> = parts
        .iter()
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect();
    format!("{resource}:{}", body.join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
