//! Secrets: read from the environment (`ROLLCALL_<NAME>`) or from a file named by
//! `ROLLCALL_<NAME>_FILE` (for container secrets). Never from the TOML file, and
//! [`Secret`]'s `Debug`/`Display` never show the value.

use std::fmt;

use crate::ConfigError;

/// A secret value. Formatting it prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value, for handing to a client library. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The secrets rollcall knows about.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// `ROLLCALL_CLICKHOUSE_PASSWORD` / `ROLLCALL_CLICKHOUSE_PASSWORD_FILE`.
    pub clickhouse_password: Option<Secret>,
    /// `ROLLCALL_KAFKA_SASL_PASSWORD` / `ROLLCALL_KAFKA_SASL_PASSWORD_FILE`.
    pub kafka_sasl_password: Option<Secret>,
}

impl Secrets {
    pub fn from_env() -> Result<Secrets, ConfigError> {
        Ok(Secrets {
            clickhouse_password: read("CLICKHOUSE_PASSWORD")?,
            kafka_sasl_password: read("KAFKA_SASL_PASSWORD")?,
        })
    }
}

/// Read one secret named `ROLLCALL_{name}` or from the file `ROLLCALL_{name}_FILE`.
pub fn read(name: &str) -> Result<Option<Secret>, ConfigError> {
    let var = format!("ROLLCALL_{name}");
    let file_var = format!("{var}_FILE");
    match (std::env::var(&var).ok(), std::env::var(&file_var).ok()) {
        (Some(_), Some(_)) => Err(ConfigError::Secret {
            name: var,
            problem: format!("set either it or {file_var}, not both"),
        }),
        (Some(v), None) => Ok(Some(Secret(v))),
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(v) => Ok(Some(Secret(v.trim_end_matches(['\n', '\r']).to_owned()))),
            Err(e) => Err(ConfigError::Secret {
                name: file_var,
                problem: format!("cannot read {path}: {e}"),
            }),
        },
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
// figment::Jail fixes the closure's error type; its size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_formats_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn secret_from_file_is_read_and_trimmed() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("pw", "s3cret\n")?;
            let path = jail.directory().join("pw");
            jail.set_env("ROLLCALL_TEST_PW_FILE", path.display());
            let s = read("TEST_PW").map_err(|e| e.to_string())?.unwrap();
            assert_eq!(s.expose(), "s3cret");
            Ok(())
        });
    }

    #[test]
    fn secret_in_both_places_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ROLLCALL_TEST_BOTH", "a");
            jail.set_env("ROLLCALL_TEST_BOTH_FILE", "/x");
            let e = read("TEST_BOTH").unwrap_err().to_string();
            assert!(e.contains("ROLLCALL_TEST_BOTH"), "{e}");
            assert!(!e.contains(": a"), "{e}");
            Ok(())
        });
    }
}
