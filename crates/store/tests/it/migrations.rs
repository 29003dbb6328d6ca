//! The domains' migrations on both backends: all of them apply, a second run applies nothing,
//! and databases migrated before there were domains (telemetry's `migrations/postgres` and
//! `migrations/sqlite`, recorded in `_sqlx_migrations`) carry on without a step.

use std::path::Path;

use sqlx::migrate::Migrator;
use sqlx::{PgPool, SqlitePool};
use store::{Backend, ErrorKind, Migrated, MigrationTarget, SqliteConfig, TELEMETRY, domains};
use testkit::{Server, TestDatabase};

/// Telemetry's tables, the same on both backends but for `device_sessions`.
const TELEMETRY_TABLES: &[&str] = &["dead_letters", "roast_events", "sessions", "telemetry"];

fn all_versions(backend: Backend) -> Vec<Migrated> {
    domains()
        .iter()
        .map(|d| {
            let versions: Vec<i64> = d.migrator(backend).iter().map(|m| m.version).collect();
            Migrated {
                domain: d.name(),
                version: versions.last().copied(),
                applied: versions,
            }
        })
        .collect()
}

fn up_to_date(backend: Backend) -> Vec<Migrated> {
    all_versions(backend)
        .into_iter()
        .map(|m| Migrated {
            applied: vec![],
            ..m
        })
        .collect()
}

async fn pg_tables(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn sqlite_tables(pool: &SqlitePool) -> Vec<String> {
    sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// (version, checksum) as recorded in a history table.
async fn pg_history(pool: &PgPool, table: &str) -> Vec<(i64, Vec<u8>)> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT version, checksum FROM {table} ORDER BY version"
    )))
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn sqlite_history(pool: &SqlitePool, table: &str) -> Vec<(i64, Vec<u8>)> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT version, checksum FROM {table} ORDER BY version"
    )))
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Telemetry's migrations as the store applied them before there were domains: that folder,
/// with sqlx's default history table.
/// The telemetry migrations that existed before domains did: PostgreSQL 1–2, SQLite 1.
fn last_before_domains(backend: &str) -> i64 {
    if backend == "postgres" { 2 } else { 1 }
}

async fn before_domains(backend: &str) -> Migrator {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations/telemetry")
        .join(backend);
    let mut migrator = Migrator::new(dir.as_path()).await.unwrap();
    assert_eq!(migrator.table_name, "_sqlx_migrations");
    let last = last_before_domains(backend);
    let old: Vec<_> = migrator
        .migrations
        .iter()
        .filter(|m| m.version <= last)
        .cloned()
        .collect();
    migrator.migrations = old.into();
    migrator
}

/// What migrating a database from before domains does: telemetry's later migrations, and every
/// other domain from scratch.
fn after_before_domains(backend: Backend, name: &str) -> Vec<Migrated> {
    let last = last_before_domains(name);
    all_versions(backend)
        .into_iter()
        .map(|m| Migrated {
            applied: m
                .applied
                .into_iter()
                .filter(|&v| m.domain != "telemetry" || v > last)
                .collect(),
            ..m
        })
        .collect()
}

#[tokio::test]
async fn every_domain_applies_on_postgres_once() {
    if !testkit::require(Server::Postgres, "every_domain_applies_on_postgres_once") {
        return;
    }
    let db = TestDatabase::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    let first = store::migrate_all(MigrationTarget::Postgres(&pool))
        .await
        .unwrap();
    assert_eq!(first, all_versions(Backend::Postgres));
    let tables = pg_tables(&pool).await;
    for t in TELEMETRY_TABLES.iter().chain(&["device_sessions"]) {
        assert!(tables.iter().any(|x| x == t), "{t} missing: {tables:?}");
    }
    for d in domains() {
        let history = pg_history(&pool, d.history_table()).await;
        let want: Vec<i64> = d
            .migrator(Backend::Postgres)
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(history.iter().map(|h| h.0).collect::<Vec<_>>(), want);
    }

    let second = store::migrate_all(MigrationTarget::Postgres(&pool))
        .await
        .unwrap();
    assert_eq!(second, up_to_date(Backend::Postgres));
    assert_eq!(pg_tables(&pool).await, tables);
    pool.close().await;
}

#[tokio::test]
async fn every_domain_applies_on_sqlite_once() {
    let dir = tempfile::tempdir().unwrap();
    let target = MigrationTarget::Sqlite {
        dir: dir.path(),
        config: &SqliteConfig::default(),
    };
    assert_eq!(
        store::migrate_all(target).await.unwrap(),
        all_versions(Backend::Sqlite)
    );
    assert_eq!(
        store::migrate_all(target).await.unwrap(),
        up_to_date(Backend::Sqlite)
    );
    for d in domains() {
        assert!(dir.path().join(d.sqlite_file()).exists(), "{}", d.name());
    }
    let pool = SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join(TELEMETRY.sqlite_file()).display()
    ))
    .await
    .unwrap();
    let tables = sqlite_tables(&pool).await;
    for t in TELEMETRY_TABLES {
        assert!(tables.iter().any(|x| x == t), "{t} missing: {tables:?}");
    }
    pool.close().await;
    // The telemetry store opens the file without migrating anything again.
    store::SqliteStore::open(
        &dir.path().join(TELEMETRY.sqlite_file()),
        &SqliteConfig::default(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_postgres_database_migrated_before_domains_carries_on() {
    if !testkit::require(
        Server::Postgres,
        "a_postgres_database_migrated_before_domains_carries_on",
    ) {
        return;
    }
    let db = TestDatabase::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    before_domains("postgres").await.run(&pool).await.unwrap();
    let history = pg_history(&pool, "_sqlx_migrations").await;
    assert_eq!(history.iter().map(|h| h.0).collect::<Vec<_>>(), [1, 2]);

    let migrated = store::migrate_all(MigrationTarget::Postgres(&pool))
        .await
        .unwrap();
    assert_eq!(
        migrated,
        after_before_domains(Backend::Postgres, "postgres")
    );
    assert_eq!(
        pg_history(&pool, "_sqlx_migrations").await[..history.len()],
        history[..],
        "the old history carries on"
    );

    // A history that does not match the files (an applied migration was edited) is refused,
    // naming the domain; it is nothing to retry.
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 1")
        .execute(&pool)
        .await
        .unwrap();
    let err = store::migrate_all(MigrationTarget::Postgres(&pool))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other, "{err}");
    assert!(err.to_string().contains("telemetry"), "{err}");
    pool.close().await;
}

#[tokio::test]
async fn a_sqlite_file_migrated_before_domains_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(TELEMETRY.sqlite_file());
    let pools = store::SqlitePools::open(&path, &SqliteConfig::default())
        .await
        .unwrap();
    before_domains("sqlite")
        .await
        .run(&pools.writer)
        .await
        .unwrap();
    let history = sqlite_history(&pools.writer, "_sqlx_migrations").await;
    assert_eq!(history.iter().map(|h| h.0).collect::<Vec<_>>(), [1]);

    let target = MigrationTarget::Sqlite {
        dir: dir.path(),
        config: &SqliteConfig::default(),
    };
    assert_eq!(
        store::migrate_all(target).await.unwrap(),
        after_before_domains(Backend::Sqlite, "sqlite")
    );
    assert_eq!(
        sqlite_history(&pools.writer, "_sqlx_migrations").await[..history.len()],
        history[..],
        "the old history carries on"
    );
    pools.close().await;
}
