//! `rollcall migrate` against the real ClickHouse: applies everything once, is a no-op the
//! second time (schema unchanged), and refuses to run when an applied file was edited.

use clickhouse::Row;
use rollcall_clickhouse::{connect_server, embedded_migrations, migrate, MigrationError};
use rollcall_testkit::{clickhouse_with_unique_db, require_services, secrets};
use serde::Deserialize;

#[derive(Row, Deserialize, Debug, PartialEq)]
struct TableDef {
    name: String,
    create_table_query: String,
}

async fn schema(client: &clickhouse::Client, db: &str) -> Vec<TableDef> {
    client
        .query(
            "SELECT name, create_table_query FROM system.tables WHERE database = ? ORDER BY name",
        )
        .bind(db)
        .fetch_all()
        .await
        .expect("read system.tables")
}

#[tokio::test]
async fn migrate_is_idempotent_and_refuses_edited_files() {
    require_services();
    let ch = clickhouse_with_unique_db("migr");
    let server = connect_server(&ch, &secrets());
    let ms = embedded_migrations();

    let first = migrate(&server, &ch.database, &ms)
        .await
        .expect("first migrate");
    assert_eq!(first.applied_now.len(), ms.len());
    let before = schema(&server, &ch.database).await;
    assert!(
        before.iter().any(|t| t.name == "student_days"),
        "{before:?}"
    );

    let second = migrate(&server, &ch.database, &ms)
        .await
        .expect("second migrate");
    assert!(second.applied_now.is_empty(), "{second:?}");
    assert_eq!(second.already_applied.len(), ms.len());
    assert_eq!(
        schema(&server, &ch.database).await,
        before,
        "schema unchanged"
    );

    let mut edited = ms.clone();
    edited[0].sql.push_str("\n-- an innocent-looking edit\n");
    let err = migrate(&server, &ch.database, &edited).await.unwrap_err();
    assert!(
        matches!(err, MigrationError::Edited { version: 1, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("0001_") && msg.contains("was edited"), "{msg}");
    assert_eq!(
        schema(&server, &ch.database).await,
        before,
        "nothing changed"
    );

    server
        .query(&format!("DROP DATABASE {}", ch.database))
        .execute()
        .await
        .unwrap();
}
