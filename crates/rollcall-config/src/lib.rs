//! The one configuration every rollcall service reads: a TOML file plus `ROLLCALL_*`
//! environment overrides, validated at start with errors that name the key.
//! Secrets never come from the TOML: only from the environment or from files it names.
//!
//! Environment overrides use `ROLLCALL_<SECTION>__<KEY>` (double underscore between
//! levels), e.g. `ROLLCALL_KAFKA__BROKERS=10.0.0.5:9092` or
//! `ROLLCALL_NORMALIZER__HTTP_PORT=9201`. Secrets: see [`Secrets`].

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod secrets;
pub use secrets::{Secret, Secrets};

/// A configuration problem, reported in one line that names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Parse(String),
    #[error("config: {key}: {problem}")]
    Invalid { key: String, problem: String },
    #[error("config: secret {name}: {problem}")]
    Secret { name: String, problem: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Where to find Kafka. Credentials (SASL) come from [`Secrets`], never from here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Comma-separated bootstrap servers.
    pub brokers: String,
    /// Every topic name starts with this prefix (see docs/topics.md).
    pub topic_prefix: String,
    /// Partitions for the keyed topics (raw and normalized attendance/enrollment).
    pub partitions: i32,
    /// Replication factor for topics rollcall creates.
    pub replication_factor: i32,
    /// `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`.
    pub security_protocol: String,
    /// SASL mechanism when a SASL protocol is used (e.g. `SCRAM-SHA-512`).
    pub sasl_mechanism: Option<String>,
    /// SASL user name (the password is the secret `ROLLCALL_KAFKA_SASL_PASSWORD`).
    pub sasl_username: Option<String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:19092".into(),
            topic_prefix: "rollcall".into(),
            partitions: 4,
            replication_factor: 1,
            security_protocol: "PLAINTEXT".into(),
            sasl_mechanism: None,
            sasl_username: None,
        }
    }
}

/// Where to find ClickHouse. The password is the secret `ROLLCALL_CLICKHOUSE_PASSWORD`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP interface URL.
    pub url: String,
    /// Database holding rollcall's tables and BI views.
    pub database: String,
    pub user: String,
    /// Compress inserts and results on the wire (LZ4).
    pub compression: bool,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:18123".into(),
            database: "rollcall".into(),
            user: "default".into(),
            compression: true,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `info,rollcall_normalizer=debug`.
    pub log_level: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_level: "info".into(),
        }
    }
}

/// Settings shared by every long-running service section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NormalizerConfig {
    /// Port of /healthz, /readyz and /metrics (loopback unless `http_host` says otherwise).
    pub http_port: u16,
    pub http_host: String,
    /// Kafka consumer group; also the base of the transactional id.
    pub group_id: String,
    /// This instance's id, unique among the normalizers of one group and stable across
    /// restarts (it makes the transactional id, which fences a crashed predecessor).
    pub instance_id: String,
    /// Directory of district code map files (`*.toml`), read at start.
    pub code_maps_dir: Option<PathBuf>,
    /// Records per transaction at most.
    pub batch_max_records: usize,
    /// How long a transaction may stay open collecting records, in milliseconds.
    pub batch_max_wait_ms: u64,
    /// Exit dates that mean "no exit date" (still enrolled), as `YYYY-MM-DD` strings:
    /// an enrollment whose exit date is one of them is normalized without one. The list
    /// replaces the default, `["9999-12-31"]` (docs/normalization.md).
    pub exit_date_sentinels: Vec<NaiveDate>,
}

impl Default for NormalizerConfig {
    fn default() -> Self {
        Self {
            http_port: 9101,
            http_host: "127.0.0.1".into(),
            group_id: "rollcall-normalizer".into(),
            instance_id: "0".into(),
            code_maps_dir: None,
            batch_max_records: 20_000,
            batch_max_wait_ms: 200,
            exit_date_sentinels: vec![rollcall_model::DEFAULT_EXIT_DATE_SENTINEL],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RollupConfig {
    pub http_port: u16,
    pub http_host: String,
    /// The consumer group whose committed offsets mark what is durable in ClickHouse.
    pub group_id: String,
    /// How many rollup instances share the students, and which one this is: instance
    /// `i` owns the attendance and enrollment partitions `p` with `p % instances == i`.
    pub instances: u32,
    pub instance_index: u32,
    /// Rows per ClickHouse insert at most.
    pub batch_max_rows: usize,
    /// How long to collect changes before writing a batch, in milliseconds.
    pub batch_max_wait_ms: u64,
    /// Compute metrics as of this date (YYYY-MM-DD) instead of "the last instructional
    /// day up to today". For replays and tests.
    pub as_of: Option<String>,
}

impl Default for RollupConfig {
    fn default() -> Self {
        Self {
            http_port: 9102,
            http_host: "127.0.0.1".into(),
            group_id: "rollcall-rollup".into(),
            instances: 1,
            instance_index: 0,
            batch_max_rows: 50_000,
            batch_max_wait_ms: 500,
            as_of: None,
        }
    }
}

/// The whole configuration. Sections a service does not use are ignored by it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub clickhouse: ClickHouseConfig,
    pub telemetry: TelemetryConfig,
    pub normalizer: NormalizerConfig,
    pub rollup: RollupConfig,
    /// The state's attendance policy (DESIGN.md defaults); `rollcall-policy` owns its rules.
    pub policy: rollcall_policy::Policy,
    /// Sections owned by other crates (connectors, simulator), typed by them.
    pub connectors: figment::value::Dict,
}

/// Environment variables that are *not* configuration overrides even though they start
/// with `ROLLCALL_` (local infrastructure script settings and secrets).
fn is_override(key: &str) -> bool {
    key.contains("__")
}

impl Config {
    /// Load defaults, then the TOML file (if given), then `ROLLCALL_<SECTION>__<KEY>`
    /// environment overrides; then validate.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                });
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(
            Env::prefixed("ROLLCALL_")
                .filter(|k| is_override(k.as_str()))
                .split("__"),
        );
        Self::from_figment(figment)
    }

    /// Load from a TOML string (tests and embedded defaults), with env overrides.
    pub fn from_toml_str(toml: &str) -> Result<Config, ConfigError> {
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(toml))
            .merge(
                Env::prefixed("ROLLCALL_")
                    .filter(|k| is_override(k.as_str()))
                    .split("__"),
            );
        Self::from_figment(figment)
    }

    /// The TOML string alone, without environment overrides (tests of the file format).
    #[cfg(test)]
    fn from_toml_str_without_env(toml: &str) -> Result<Config, ConfigError> {
        Self::from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml)),
        )
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            // One line per problem, each naming its key.
            let lines: Vec<String> = e.into_iter().map(|e| describe(&e)).collect();
            ConfigError::Parse(lines.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.policy.validate().map_err(|e| ConfigError::Invalid {
            key: "policy".into(),
            problem: e.to_string(),
        })?;
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            return Err(ConfigError::invalid("kafka.brokers", "must not be empty"));
        }
        for b in k.brokers.split(',') {
            let b = b.trim();
            let ok = b
                .rsplit_once(':')
                .map(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                .unwrap_or(false);
            if !ok {
                return Err(ConfigError::invalid(
                    "kafka.brokers",
                    format!("`{b}` is not host:port"),
                ));
            }
        }
        if k.topic_prefix.is_empty()
            || !k
                .topic_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(ConfigError::invalid(
                "kafka.topic_prefix",
                "must be non-empty and use only letters, digits, '.', '_' or '-'",
            ));
        }
        if k.partitions < 1 {
            return Err(ConfigError::invalid(
                "kafka.partitions",
                "must be at least 1",
            ));
        }
        if k.replication_factor < 1 {
            return Err(ConfigError::invalid(
                "kafka.replication_factor",
                "must be at least 1",
            ));
        }
        const PROTOCOLS: [&str; 4] = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];
        if !PROTOCOLS.contains(&k.security_protocol.as_str()) {
            return Err(ConfigError::invalid(
                "kafka.security_protocol",
                format!("must be one of {PROTOCOLS:?}"),
            ));
        }
        let ch = &self.clickhouse;
        match url::Url::parse(&ch.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
                if !u.username().is_empty() || u.password().is_some() {
                    return Err(ConfigError::invalid(
                        "clickhouse.url",
                        "must not carry credentials; use clickhouse.user and ROLLCALL_CLICKHOUSE_PASSWORD",
                    ));
                }
            }
            _ => {
                return Err(ConfigError::invalid(
                    "clickhouse.url",
                    format!("`{}` is not an http(s) URL", ch.url),
                ))
            }
        }
        if ch.database.is_empty()
            || !ch
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(ConfigError::invalid(
                "clickhouse.database",
                "must be non-empty and use only letters, digits and '_'",
            ));
        }
        for (key, n) in [
            (
                "normalizer.batch_max_records",
                self.normalizer.batch_max_records,
            ),
            ("rollup.batch_max_rows", self.rollup.batch_max_rows),
        ] {
            if n == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if self.rollup.instances == 0 || self.rollup.instance_index >= self.rollup.instances {
            return Err(ConfigError::invalid(
                "rollup.instance_index",
                format!(
                    "must be below rollup.instances ({}), got {}",
                    self.rollup.instances, self.rollup.instance_index
                ),
            ));
        }
        if let Some(d) = &self.rollup.as_of {
            let ok = d.len() == 10
                && d.as_bytes()[4] == b'-'
                && d.as_bytes()[7] == b'-'
                && d[..4].parse::<u16>().is_ok()
                && d[5..7].parse::<u8>().is_ok_and(|m| (1..=12).contains(&m))
                && d[8..].parse::<u8>().is_ok_and(|m| (1..=31).contains(&m));
            if !ok {
                return Err(ConfigError::invalid(
                    "rollup.as_of",
                    format!("`{d}` is not a date YYYY-MM-DD"),
                ));
            }
        }
        Ok(())
    }
}

/// Render a figment error as `key: problem`, without the profile prefix.
fn describe(e: &figment::Error) -> String {
    let key = e
        .path
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(".");
    let source = match &e.metadata {
        Some(m) => match &m.source {
            Some(s) => format!(" (from {s})"),
            None => format!(" (from {})", m.name),
        },
        None => String::new(),
    };
    if key.is_empty() {
        format!("{}{source}", e.kind)
    } else {
        format!("{key}: {}{source}", e.kind)
    }
}

#[cfg(test)]
// figment::Jail fixes the closure's error type; its size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_toml_str_without_env("").unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = Config::from_toml_str_without_env("[normalizer]\nhttp_port = \"abc\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("normalizer.http_port"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let err = Config::from_toml_str_without_env("[kafka]\nbrokerz = \"x:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("brokerz"), "{err}");
    }

    #[test]
    fn bad_broker_list_names_the_key() {
        let err = Config::from_toml_str_without_env("[kafka]\nbrokers = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka.brokers"), "{err}");
    }

    #[test]
    fn credentials_in_clickhouse_url_are_refused() {
        let err = Config::from_toml_str_without_env("[clickhouse]\nurl = \"http://u:p@h:8123\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("clickhouse.url"), "{err}");
        assert!(!err.contains(":p@"), "the secret must not be echoed: {err}");
    }

    #[test]
    fn env_overrides_use_double_underscore_and_ignore_script_variables() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ROLLCALL_KAFKA__BROKERS", "10.1.2.3:9092");
            jail.set_env("ROLLCALL_KAFKA_PORT", "19092"); // a deploy/local setting, not config
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.kafka.brokers, "10.1.2.3:9092");
            Ok(())
        });
    }

    #[test]
    fn env_override_with_bad_value_names_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ROLLCALL_ROLLUP__HTTP_PORT", "abc");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("rollup.http_port"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = Config::load(Some(Path::new("/nonexistent/rollcall.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/rollcall.toml"), "{err}");
    }

    #[test]
    fn policy_is_typed_and_validated_naming_the_key() {
        let c = Config::from_toml_str_without_env("[policy]\nmin_enrolled_days = 31\n").unwrap();
        assert_eq!(c.policy.min_enrolled_days, 31);
        let err = Config::from_toml_str_without_env("[policy]\nchronic_threshold = 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("policy.chronic_threshold"), "{err}");
        let err = Config::from_toml_str_without_env("[policy]\nchronic_treshold = 0.1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("chronic_treshold"), "{err}");
    }

    #[test]
    fn exit_date_sentinels_default_to_9999_12_31_and_are_configurable() {
        let c = Config::from_toml_str_without_env("").unwrap();
        assert_eq!(
            c.normalizer.exit_date_sentinels,
            [NaiveDate::from_ymd_opt(9999, 12, 31).unwrap()]
        );
        let c = Config::from_toml_str_without_env(
            "[normalizer]\nexit_date_sentinels = [\"2999-12-31\", \"9999-12-31\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.normalizer.exit_date_sentinels,
            [
                NaiveDate::from_ymd_opt(2999, 12, 31).unwrap(),
                NaiveDate::from_ymd_opt(9999, 12, 31).unwrap()
            ]
        );
        let err = Config::from_toml_str_without_env(
            "[normalizer]\nexit_date_sentinels = [\"12/31/99\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("normalizer.exit_date_sentinels"), "{err}");
    }

    #[test]
    fn exit_date_sentinels_can_come_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "ROLLCALL_NORMALIZER__EXIT_DATE_SENTINELS",
                "[\"2099-12-31\"]",
            );
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                c.normalizer.exit_date_sentinels,
                [NaiveDate::from_ymd_opt(2099, 12, 31).unwrap()]
            );
            Ok(())
        });
    }

    #[test]
    fn as_of_must_be_a_date() {
        let err = Config::from_toml_str_without_env("[rollup]\nas_of = \"2022-13-01\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rollup.as_of"), "{err}");
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    /// The annotated example under deploy/ must load and equal the defaults it documents.
    #[test]
    fn the_annotated_example_is_valid_and_shows_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rollcall.example.toml");
        // No environment overrides here: the file alone must equal the defaults.
        let c: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(&path))
            .extract()
            .unwrap();
        c.validate().unwrap();
        assert_eq!(c, Config::default());
    }
}
