//! `rollcall migrate` against the real ClickHouse: applies everything once, is a no-op the
//! second time (schema unchanged), and refuses to run when an applied file was edited;
//! the policy fingerprint: written on a fresh database, a different policy refused
//! (naming each setting) until `--policy` rebuilds the views, services refuse a
//! mismatch, and a database migrated before the views were rendered is upgraded.

use clickhouse::Row;
use rollcall_clickhouse::{
    check_view_policy, connect, connect_server, embedded_migrations, migrate, migrate_with_policy,
    MigrationError, OnPolicyChange, ViewPolicy, ViewPolicyMismatch,
};
use rollcall_policy::Policy;
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

#[derive(Row, Deserialize, Debug)]
struct ViewDef {
    name: String,
    create_table_query: String,
}

async fn view_sql(client: &clickhouse::Client, db: &str, view: &str) -> String {
    let rows: Vec<ViewDef> = client
        .query("SELECT name, create_table_query FROM system.tables WHERE database = ? AND name = ?")
        .bind(db)
        .bind(view)
        .fetch_all()
        .await
        .expect("read system.tables");
    assert_eq!(rows.len(), 1, "{view}");
    assert_eq!(rows[0].name, view);
    rows[0].create_table_query.clone()
}

#[tokio::test]
async fn the_views_carry_the_policy_and_a_change_needs_migrate_policy() {
    require_services();
    let ch = clickhouse_with_unique_db("migrpol");
    let server = connect_server(&ch, &secrets());
    let ms = embedded_migrations();
    let db = &ch.database;

    // Fresh database: the fingerprint of the policy is written.
    let first = migrate(&server, db, &ms).await.expect("first migrate");
    assert!(first.fingerprint_written);
    let default_fp = ViewPolicy::new(&Policy::default()).unwrap().fingerprint();
    assert_eq!(first.fingerprint, default_fp);
    let client = connect(&ch, &secrets());
    check_view_policy(&client, db, &Policy::default())
        .await
        .expect("the views carry the default policy");
    let district_before = view_sql(&server, db, "district_chronic_absence").await;

    // Another policy: refused, naming each setting with both values; nothing changes.
    let other = Policy {
        chronic_threshold: 0.15,
        min_enrolled_days: 20,
        publication_threshold: 5,
        ..Policy::default()
    };
    let err = migrate_with_policy(&server, db, &ms, &other, OnPolicyChange::Refuse)
        .await
        .unwrap_err();
    assert!(matches!(err, MigrationError::PolicyChanged { .. }), "{err}");
    let msg = err.to_string();
    for part in [
        "policy.chronic_threshold is 0.1 in the views, 0.15 here",
        "policy.min_enrolled_days is 10 in the views, 20 here",
        "policy.publication_threshold is 10 in the views, 5 here",
        "rollcall migrate --policy",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }
    assert!(
        !msg.contains("tiers"),
        "only differing settings are named: {msg}"
    );
    assert_eq!(
        view_sql(&server, db, "district_chronic_absence").await,
        district_before
    );

    // A service with that policy refuses to start, the same way.
    let err = check_view_policy(&client, db, &other).await.unwrap_err();
    assert!(matches!(err, ViewPolicyMismatch::Differs { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("policy.chronic_threshold is 0.1 in the views, 0.15 here")
            && msg.contains("rollcall migrate --policy"),
        "{msg}"
    );

    // --policy: the views are re-rendered and the new fingerprint recorded.
    let rebuilt = migrate_with_policy(&server, db, &ms, &other, OnPolicyChange::Rebuild)
        .await
        .expect("migrate --policy");
    assert_eq!(rebuilt.rebuilt, vec!["0002_bi_views".to_string()]);
    assert!(rebuilt.applied_now.is_empty());
    assert_eq!(
        rebuilt.policy_changes.len(),
        3,
        "{:?}",
        rebuilt.policy_changes
    );
    let district_after = view_sql(&server, db, "district_chronic_absence").await;
    assert_ne!(district_after, district_before);
    assert!(district_after.contains("1500"), "{district_after}");
    check_view_policy(&client, db, &other)
        .await
        .expect("the views carry the new policy");
    assert!(check_view_policy(&client, db, &Policy::default())
        .await
        .is_err());
    // Then a plain migrate with that policy is a no-op.
    let again = migrate_with_policy(&server, db, &ms, &other, OnPolicyChange::Refuse)
        .await
        .expect("same policy");
    assert!(again.rebuilt.is_empty() && again.applied_now.is_empty() && !again.fingerprint_written);

    server
        .query(&format!("DROP DATABASE {db}"))
        .execute()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_database_migrated_before_the_views_were_rendered_is_upgraded() {
    require_services();
    let ch = clickhouse_with_unique_db("migrold");
    let server = connect_server(&ch, &secrets());
    let ms = embedded_migrations();
    let db = &ch.database;
    // What an older rollcall left: 0001 applied, 0002 recorded with its old checksum,
    // no view_policy table.
    server
        .query(&format!("CREATE DATABASE {db}"))
        .execute()
        .await
        .unwrap();
    server
        .query(&format!(
            "CREATE TABLE {db}.schema_migrations (version UInt32, name String, checksum String, \
             applied_at DateTime) ENGINE = MergeTree ORDER BY version"
        ))
        .execute()
        .await
        .unwrap();
    let vp = ViewPolicy::new(&Policy::default()).unwrap();
    for st in ms[0].statements(db, &vp).unwrap() {
        server.query(&st).execute().await.unwrap();
    }
    server
        .query(&format!(
            "INSERT INTO {db}.schema_migrations VALUES (1, 'rollup_tables', ?, now()), \
             (2, 'bi_views', '2fc4dc6726df27755e1dc5adf6d7f21aa300f90b68d22a79a0ef8c057989bb67', now())"
        ))
        .bind(ms[0].checksum())
        .execute()
        .await
        .unwrap();
    let client = connect(&ch, &secrets());
    let err = check_view_policy(&client, db, &Policy::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ViewPolicyMismatch::Missing { .. }), "{err}");
    assert!(err.to_string().contains("run `rollcall migrate`"), "{err}");

    let report = migrate(&server, db, &ms).await.expect("upgrade");
    assert_eq!(report.rebuilt, vec!["0002_bi_views".to_string()]);
    assert!(report.fingerprint_written);
    check_view_policy(&client, db, &Policy::default())
        .await
        .expect("fingerprint written");
    // and the next migrate finds everything applied with the current checksums
    let next = migrate(&server, db, &ms).await.expect("again");
    assert!(
        next.rebuilt.is_empty() && next.applied_now.is_empty(),
        "{next:?}"
    );
    assert_eq!(next.already_applied.len(), ms.len());

    server
        .query(&format!("DROP DATABASE {db}"))
        .execute()
        .await
        .unwrap();
}
