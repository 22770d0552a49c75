use rdkafka::config::ClientConfig;
use rollcall_config::{KafkaConfig, Secrets};

/// A Kafka failure, with what rollcall was doing when it happened.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka: {doing}: {source}")]
    Client {
        doing: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A condition worth retrying that has no rdkafka error (a topic not in the metadata
    /// yet, a consumer close that did not finish in time).
    #[error("kafka: {0}")]
    Transient(String),
    /// These records were refused for what they are (too large, invalid): retrying them
    /// fails the same way.
    #[error("kafka: {0}")]
    Refused(String),
    #[error("kafka: {0}")]
    Other(String),
}

impl KafkaError {
    pub(crate) fn client(
        doing: impl Into<String>,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let doing = doing.into();
        move |source| KafkaError::Client { doing, source }
    }
}

/// The settings every rollcall client shares: brokers and security. Secrets are set here
/// and nowhere else, and never logged.
pub fn client_config(cfg: &KafkaConfig, secrets: &Secrets) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("security.protocol", &cfg.security_protocol)
        .set("socket.keepalive.enable", "true")
        .set("log_level", "4");
    if let Some(m) = &cfg.sasl_mechanism {
        c.set("sasl.mechanism", m);
    }
    if let Some(u) = &cfg.sasl_username {
        c.set("sasl.username", u);
    }
    if let Some(p) = &secrets.kafka_sasl_password {
        c.set("sasl.password", p.expose());
    }
    c
}
