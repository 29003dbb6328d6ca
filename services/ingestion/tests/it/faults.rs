//! Drills: a fault injected while points stream in, then every published point checked in the
//! database — stored exactly once — and the recovery timed (docs/reliability.md).

use std::time::{Duration, Instant};

use model::Point;
use testkit::{PrivateMosquitto, PrivatePostgres, Server, TestDatabase};

use crate::helpers::{
    Row, Stack, TestApp, assert_rows, ingestion, pg_pool, pg_rows, point, start_process, stream_at,
    wait_pg_count,
};

/// Publishes `points` at 10,000 points/s; waits until the broker acknowledged them all.
async fn stream(s: &Stack, points: Vec<Point>) -> tokio::task::JoinHandle<()> {
    stream_at(&s.broker.url(), points, 100).await
}

async fn assert_stored_once(s: &Stack, device: &str, points: &[Point]) {
    wait_pg_count(
        &s.pool,
        device,
        points.len() as i64,
        Duration::from_secs(120),
    )
    .await;
    let expected: Vec<Row> = points.iter().map(Row::expected).collect();
    assert_rows(&pg_rows(&s.pool, device).await, &expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_restart_under_load_loses_nothing() {
    if !testkit::require(Server::Postgres, "broker_restart_under_load_loses_nothing") {
        return;
    }
    let mut s = Stack::start().await;
    let points: Vec<Point> = (0..20_000)
        .map(|i| point("roaster-brk", "s-1", i))
        .collect();
    let streaming = stream(&s, points.clone()).await;
    wait_pg_count(&s.pool, "roaster-brk", 2_000, Duration::from_secs(30)).await;

    // SIGTERM: Mosquitto saves its sessions (ingestion's unacknowledged messages among them)
    // and comes back on the same port. Ingestion and the device reconnect with backoff; what
    // either had in flight is sent again and absorbed by the idempotent write.
    s.broker.restart().await;
    let restarted = Instant::now();
    s.app.wait_ready().await;
    let reconnected = restarted.elapsed();
    streaming.await.unwrap();
    assert_stored_once(&s, "roaster-brk", &points).await;
    eprintln!(
        "broker restart drill: 20000 points stored once; ingestion ready {reconnected:?} and \
         caught up {:?} after the broker came back",
        restarted.elapsed()
    );
    s.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_locked_for_10_s_holds_the_intake_and_loses_nothing() {
    if !testkit::require(Server::Postgres, "a_table_locked_for_10_s_holds_the_intake") {
        return;
    }
    let s = Stack::start().await;
    let points: Vec<Point> = (0..30_000)
        .map(|i| point("roaster-lock", "s-1", i))
        .collect();
    let streaming = stream(&s, points.clone()).await;
    wait_pg_count(&s.pool, "roaster-lock", 2_000, Duration::from_secs(30)).await;

    // A migration or a careless query holds the table: writes wait on the lock until their
    // statement timeout, then go to the local fallback; the queue in between is bounded.
    let mut lock = s.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE telemetry IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let locked = Instant::now();
    let mut peak_rss = 0u64;
    while locked.elapsed() < Duration::from_secs(10) {
        peak_rss = peak_rss.max(rss(&s).await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    lock.rollback().await.unwrap();
    let released = Instant::now();
    streaming.await.unwrap();
    assert_stored_once(&s, "roaster-lock", &points).await;
    eprintln!(
        "lock drill: 30000 points stored once; caught up {:?} after the lock was released; \
         peak RSS of the test process during the lock {} MiB",
        released.elapsed(),
        peak_rss / (1024 * 1024)
    );
    s.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_down_for_30_s_under_load_loses_nothing() {
    let broker = PrivateMosquitto::start().await;
    let pg = PrivatePostgres::start().await;
    let db = TestDatabase::create_on(&pg.url()).await;
    let app = ingestion(&broker.url(), Some(&db.url)).start().await;

    // 2,000 points/s for 40 s: PostgreSQL goes away 5 s in and comes back 30 s later.
    let points: Vec<Point> = (0..80_000)
        .map(|i| point("roaster-pgdown", "s-1", i))
        .collect();
    let streaming = stream_at(&broker.url(), points.clone(), 20).await;
    let pool = pg_pool(&db.url).await;
    wait_pg_count(&pool, "roaster-pgdown", 5_000, Duration::from_secs(30)).await;
    pool.close().await;
    pg.stop().await;
    let stopped = Instant::now();
    let acked_before: u64 = acks_released(&app).await;
    let mut peak_rss = 0u64;
    while stopped.elapsed() < Duration::from_secs(30) {
        peak_rss = peak_rss.max(rss_of(&app).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Acknowledgements kept flowing from the fallback while PostgreSQL was down.
    let acked_while_down = acks_released(&app).await - acked_before;
    assert!(
        acked_while_down > 20_000,
        "only {acked_while_down} acks while PostgreSQL was down"
    );
    pg.start_server().await;
    let restarted = Instant::now();
    streaming.await.unwrap();
    let pool = pg_pool(&db.url).await;
    wait_pg_count(&pool, "roaster-pgdown", 80_000, Duration::from_secs(180)).await;
    let expected: Vec<Row> = points.iter().map(Row::expected).collect();
    assert_rows(&pg_rows(&pool, "roaster-pgdown").await, &expected);
    eprintln!(
        "postgres drill: 80000 points stored once; {acked_while_down} acknowledged during the 30 s \
         outage; all in PostgreSQL {:?} after it came back; peak RSS {} MiB",
        restarted.elapsed(),
        peak_rss / (1024 * 1024)
    );
    app.stop().await;
}

async fn acks_released(app: &TestApp) -> u64 {
    app.get::<serde_json::Value>("/stats").await["pipeline"]["acks_released"]
        .as_u64()
        .unwrap_or(0)
}

/// Resident memory of the process serving `s` (the test process: ingestion runs in it).
async fn rss(s: &Stack) -> u64 {
    rss_of(&s.app).await
}

async fn rss_of(app: &TestApp) -> u64 {
    let metrics = app.text("/metrics").await;
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("process_resident_memory_bytes ")?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_of_two_replicas_killed_the_other_carries_on() {
    if !testkit::require(Server::Postgres, "one_of_two_replicas_killed") {
        return;
    }
    let broker = PrivateMosquitto::start().await;
    let db = TestDatabase::create().await;
    let shared = [("SIMCORP_INGESTION_SHARE_GROUP", "ingestion")];
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let id_a = testkit::unique_name("ingestion-a");
    let a = start_process(&broker.url(), &db.url, data_a.path(), &id_a, &shared).await;
    let id_b = testkit::unique_name("ingestion-b");
    let b = start_process(&broker.url(), &db.url, data_b.path(), &id_b, &shared).await;

    let points: Vec<Point> = (0..20_000)
        .map(|i| point("roaster-rep", "s-1", i))
        .collect();
    let streaming = stream_at(&broker.url(), points.clone(), 100).await;
    let pool = pg_pool(&db.url).await;
    wait_pg_count(&pool, "roaster-rep", 2_000, Duration::from_secs(30)).await;
    a.kill().await;
    let killed = Instant::now();
    streaming.await.unwrap();

    // Whatever the broker had handed to A and A had not acknowledged stays in A's session: the
    // broker gives it to no one else while that session lives. B carries the rest.
    let without_a = testkit::eventually(Duration::from_secs(60), "B to stop gaining", || {
        let pool = pool.clone();
        async move {
            let before = crate::helpers::pg_count(&pool, "roaster-rep").await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = crate::helpers::pg_count(&pool, "roaster-rep").await;
            (after == before).then_some(after)
        }
    })
    .await;
    let b_alone = killed.elapsed();

    // A comes back with its client id: its session's messages arrive, every point stored once.
    let a = start_process(&broker.url(), &db.url, data_a.path(), &id_a, &shared).await;
    let back = Instant::now();
    let expected: Vec<Row> = points.iter().map(Row::expected).collect();
    wait_pg_count(&pool, "roaster-rep", 20_000, Duration::from_secs(60)).await;
    assert_rows(&pg_rows(&pool, "roaster-rep").await, &expected);
    eprintln!(
        "replica drill: 20000 points; B alone stored {without_a} (settled {b_alone:?} after A \
         was killed); the other {} waited in A's session and were stored {:?} after A came back",
        20_000 - without_a,
        back.elapsed()
    );
    a.terminate().await;
    b.terminate().await;
}
