use clickhouse::{Client, Compression};
use rollcall_config::{ClickHouseConfig, Secrets};

/// A ClickHouse failure with what rollcall was doing.
#[derive(Debug, thiserror::Error)]
#[error("clickhouse: {doing}: {source}")]
pub struct ChError {
    pub doing: String,
    #[source]
    pub source: clickhouse::error::Error,
}

impl ChError {
    pub fn ctx(doing: impl Into<String>) -> impl FnOnce(clickhouse::error::Error) -> Self {
        let doing = doing.into();
        move |source| ChError { doing, source }
    }
}

/// A client bound to the configured database.
///
/// Validation is off: the crate's schema validation needs `RowBinaryWithNamesAndTypes`,
/// which ClickHouse 18.16 lacks; every row type has a round-trip test instead.
pub fn connect(cfg: &ClickHouseConfig, secrets: &Secrets) -> Client {
    connect_server(cfg, secrets).with_database(&cfg.database)
}

/// A client with no database selected (to create the database itself).
pub fn connect_server(cfg: &ClickHouseConfig, secrets: &Secrets) -> Client {
    let mut c = Client::default()
        .with_url(&cfg.url)
        .with_user(&cfg.user)
        .with_validation(false)
        .with_compression(if cfg.compression {
            Compression::Lz4
        } else {
            Compression::None
        });
    if let Some(p) = &secrets.clickhouse_password {
        c = c.with_password(p.expose());
    }
    c
}
