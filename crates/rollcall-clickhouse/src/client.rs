use std::future::Future;
use std::time::Duration;

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

/// The bound on one ClickHouse call made by a command (migrations, reports, the demo's
/// summary): the `clickhouse` crate's HTTP client has none, so a server that accepts
/// the connection and never answers would hang the caller. Generous, because a
/// migration may rewrite a table; the rollup's writes have their own, tighter bound.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Await `call` for at most `bound`; past it, `clickhouse::error::Error::TimedOut`.
pub async fn within<T>(
    bound: Duration,
    call: impl Future<Output = Result<T, clickhouse::error::Error>>,
) -> Result<T, clickhouse::error::Error> {
    match tokio::time::timeout(bound, call).await {
        Ok(r) => r,
        Err(_) => Err(clickhouse::error::Error::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_that_never_answers_times_out() {
        let never = std::future::pending::<Result<(), clickhouse::error::Error>>();
        let r = within(Duration::from_millis(20), never).await;
        assert!(
            matches!(r, Err(clickhouse::error::Error::TimedOut)),
            "{r:?}"
        );
        let ok = within(Duration::from_secs(1), async { Ok(7) }).await;
        assert_eq!(ok.unwrap(), 7);
    }
}
