//! What only the PostgreSQL backend has: daily partitions, migrations by concurrent replicas,
//! and telling unavailability from refusal.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::future::join_all;
use model::Batch;
use sqlx::Connection as _;
use store::{Backend, PgStore, PostgresConfig, Store};
use testkit::{Server, TestDatabase};

use crate::common::{base_ms, pg_store, point, points};

const DAY_MS: i64 = 86_400_000;

#[tokio::test]
async fn rows_land_in_their_day_partition() {
    if !testkit::require(Server::Postgres, "rows_land_in_their_day_partition") {
        return;
    }
    let db = TestDatabase::create().await;
    let store = pg_store(&db.url).await;
    let now = model::now_ms();
    let batch = points(vec![
        point("r-1", "s-1", 1, now - 3 * DAY_MS),
        point("r-1", "s-1", 2, now - DAY_MS),
        point("r-1", "s-1", 3, now - 60_000),
    ]);
    store.write(&batch).await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT tableoid::regclass::text,
                'telemetry_p' || to_char(ts AT TIME ZONE 'UTC', 'YYYYMMDD')
         FROM telemetry ORDER BY seq",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 3);
    for (partition, day) in &rows {
        assert_eq!(partition, day);
    }
    let distinct: BTreeSet<_> = rows.iter().map(|r| &r.0).collect();
    assert_eq!(distinct.len(), 3, "{rows:?}");
}

#[tokio::test]
async fn a_day_without_partition_goes_to_the_default_one() {
    if !testkit::require(
        Server::Postgres,
        "a_day_without_partition_goes_to_the_default_one",
    ) {
        return;
    }
    let db = TestDatabase::create().await;
    let store = pg_store(&db.url).await;
    let old = model::now_ms() - 30 * DAY_MS;
    let p = point("r-1", "s-old", 1, old);
    store.write(&points(vec![p.clone()])).await.unwrap();
    let partition: String = sqlx::query_scalar("SELECT tableoid::regclass::text FROM telemetry")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(partition, "telemetry_default");

    // Its day's partition cannot be created while the point sits in the default one: skipped
    // (with a warning), nothing fails, the point stays readable.
    assert_eq!(
        store.ensure_partitions(old, 0, 0).await.unwrap(),
        Vec::<String>::new()
    );
    let s = Store::Postgres(store.clone());
    let got = s
        .telemetry(&store::TelemetryQuery::session("s-old"))
        .await
        .unwrap();
    assert_eq!(got, vec![p]);

    // An empty day is created, once.
    let created = store
        .ensure_partitions(old - 10 * DAY_MS, 0, 0)
        .await
        .unwrap();
    assert_eq!(created.len(), 1);
    assert!(created[0].starts_with("telemetry_p"), "{created:?}");
    assert!(
        store
            .ensure_partitions(old - 10 * DAY_MS, 0, 0)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn concurrent_replicas_migrate_and_partition_safely() {
    if !testkit::require(
        Server::Postgres,
        "concurrent_replicas_migrate_and_partition_safely",
    ) {
        return;
    }
    let db = TestDatabase::create().await;
    let cfg = PostgresConfig::default();
    let replicas: Vec<PgStore> = (0..3)
        .map(|_| PgStore::connect(&db.url, &cfg).unwrap())
        .collect();
    let migrated = join_all(replicas.iter().map(|r| r.migrate())).await;
    assert!(migrated.iter().all(Result::is_ok), "{migrated:?}");

    let now = model::now_ms();
    let created = join_all(replicas.iter().map(|r| r.ensure_partitions(now, 8, 2))).await;
    let mut all = Vec::new();
    for c in created {
        all.extend(c.unwrap());
    }
    let distinct: BTreeSet<_> = all.iter().collect();
    assert_eq!(all.len(), 11, "each day created exactly once: {all:?}");
    assert_eq!(distinct.len(), 11);
}

#[tokio::test]
async fn a_write_that_cannot_finish_in_time_is_unavailability() {
    if !testkit::require(
        Server::Postgres,
        "a_write_that_cannot_finish_in_time_is_unavailability",
    ) {
        return;
    }
    let db = TestDatabase::create().await;
    pg_store(&db.url).await;
    let cfg = PostgresConfig {
        statement_timeout_ms: 300,
        ..PostgresConfig::default()
    };
    let store = PgStore::connect(&db.url, &cfg).unwrap();

    // Another session holds the table: our insert waits until its statement_timeout.
    let mut blocker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE telemetry IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let started = Instant::now();
    let err = store
        .write(&points(vec![point("r-1", "s-1", 1, base_ms())]))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();

    // Refusals are not unavailability.
    let mut bad = point("r-1", "s-1", 1, base_ms());
    bad.seq = u64::MAX;
    let err = store.write(&points(vec![bad])).await.unwrap_err();
    assert!(!err.is_unavailable(), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_unavailability() {
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/none",
        testkit::free_port()
    );
    let cfg = PostgresConfig {
        acquire_timeout_ms: 300,
        ..PostgresConfig::default()
    };
    // Lazy: creating the store does not need the server.
    let store = PgStore::connect(&url, &cfg).unwrap();
    let started = Instant::now();
    let err = store
        .write(&Batch {
            points: vec![point("r", "s", 1, 0)],
            ..Batch::default()
        })
        .await;
    assert!(err.unwrap_err().is_unavailable());
    assert!(store.ping().await.unwrap_err().is_unavailable());
    assert!(store.migrate().await.unwrap_err().is_unavailable());
    assert!(started.elapsed() < Duration::from_secs(5));

    let err = PgStore::connect("not a url", &cfg).unwrap_err();
    assert!(!err.is_unavailable());
}

#[tokio::test]
async fn upgrading_from_the_device_index_keeps_every_latest_point() {
    if !testkit::require(
        Server::Postgres,
        "upgrading_from_the_device_index_keeps_every_latest_point",
    ) {
        return;
    }
    let db = TestDatabase::create().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let migrator = store::TELEMETRY.migrator(Backend::Postgres);
    migrator.run_to(1, &pool).await.unwrap();
    let t = base_ms();
    // Written by a version that looked the latest point up by telemetry_device_ts.
    sqlx::query(
        "INSERT INTO telemetry (device_id, session, seq, ts, received_at)
         SELECT d, s, q, 'epoch'::timestamptz + (t * interval '1 millisecond'), now()
         FROM (VALUES ('r-1', 's-1', 1, $1::int8), ('r-1', 's-2', 1, $1 + 5000),
                      ('r-1', 's-2', 2, $1 + 6000), ('r-2', 's-1', 7, $1 + 100)) v(d, s, q, t)",
    )
    .bind(t)
    .execute(&pool)
    .await
    .unwrap();

    let store = PgStore::connect(&db.url, &PostgresConfig::default()).unwrap();
    store.migrate().await.unwrap();
    let latest = |device: &'static str| {
        let store = store.clone();
        async move {
            let p = store.latest(device).await.unwrap().unwrap();
            (p.session, p.seq)
        }
    };
    assert_eq!(latest("r-1").await, ("s-2".to_owned(), 2));
    assert_eq!(latest("r-2").await, ("s-1".to_owned(), 7));
    let index: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('telemetry_device_ts')::text")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(index, None, "the per-point device index is gone");

    // Another process, knowing none of the pairs, registers them again: an earlier point moves
    // the session's first_ts back, and the answer stays the same.
    let replica = PgStore::connect(&db.url, &PostgresConfig::default()).unwrap();
    replica
        .write(&points(vec![point("r-1", "s-2", 0, t + 4000)]))
        .await
        .unwrap();
    let first: i64 = sqlx::query_scalar(
        "SELECT (extract(epoch from first_ts) * 1000)::int8 FROM device_sessions
         WHERE device_id = 'r-1' AND session = 's-2'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(first, t + 4000);
    assert_eq!(latest("r-1").await, ("s-2".to_owned(), 2));
}
