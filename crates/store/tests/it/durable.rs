//! The durable store across real PostgreSQL outages: acknowledged points are never lost and end
//! up in PostgreSQL exactly once.

use std::path::Path;
use std::time::{Duration, Instant};

use model::{Batch, Point, SessionState};
use store::{
    Destination, DurableStore, MaintenanceConfig, PostgresConfig, SessionQuery, SqliteConfig,
    Store, TelemetryQuery,
};
use testkit::{PrivatePostgres, Server, TestDatabase, eventually};
use tokio_util::sync::CancellationToken;

use crate::common::{base_ms, dead_letter, point, roast_event, session_event};

/// One time base for all batches of this module, however long the tests take.
fn t0() -> i64 {
    static T0: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T0.get_or_init(base_ms)
}

fn pg_config(url: &str) -> PostgresConfig {
    PostgresConfig {
        url: Some(url.into()),
        acquire_timeout_ms: 1000,
        statement_timeout_ms: 2000,
        ..PostgresConfig::default()
    }
}

/// Quick probes and small replay chunks, so a test sees several chunks.
fn maintenance() -> MaintenanceConfig {
    MaintenanceConfig {
        probe_interval_ms: 100,
        replay_chunk_points: 70,
        ..MaintenanceConfig::default()
    }
}

async fn open(pg: &PostgresConfig, dir: &Path) -> DurableStore {
    DurableStore::open_with(
        pg,
        &dir.join("primary.db"),
        &dir.join("fallback.db"),
        &SqliteConfig::default(),
        &maintenance(),
    )
    .await
    .unwrap()
}

/// Maintenance running in the background until dropped.
struct Maintenance(CancellationToken, tokio::task::JoinHandle<()>);

impl Maintenance {
    fn start(store: &DurableStore) -> Self {
        let token = CancellationToken::new();
        let (s, t) = (store.clone(), token.clone());
        Maintenance(
            token,
            tokio::spawn(async move { s.run_maintenance(t).await }),
        )
    }

    async fn stop(self) {
        self.0.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.1)
            .await
            .expect("maintenance stops when cancelled")
            .unwrap();
    }
}

/// Batch `round` of one roast: 50 points, a session event, a dead letter.
fn batch(round: u64) -> Batch {
    let t = t0();
    let state = if round == 0 {
        SessionState::Start
    } else {
        SessionState::End
    };
    Batch {
        points: (0..50)
            .map(|i| {
                let seq = round * 50 + i;
                point("r-1", "s-1", seq, t + seq as i64 * 500)
            })
            .collect(),
        sessions: vec![session_event(
            "r-1",
            "s-1",
            state,
            t + round as i64 * 25_000,
            serde_json::json!({ format!("round{round}"): round }),
        )],
        events: roast::EventKind::ALL
            .get(round as usize)
            .map(|&kind| roast_event("r-1", "s-1", kind, t + round as i64 * 25_000))
            .into_iter()
            .collect(),
        dead_letters: vec![dead_letter(Some("r-1"), t + round as i64, None)],
    }
}

async fn wait_until_drained(store: &DurableStore) {
    let fallback = Store::Sqlite(store.fallback().unwrap().clone());
    eventually(
        Duration::from_secs(30),
        "PostgreSQL back and the fallback drained",
        || async {
            let empty = fallback
                .sessions(&SessionQuery::default())
                .await
                .ok()?
                .is_empty()
                && fallback.dead_letters(1).await.ok()?.is_empty()
                && fallback.events("s-1").await.ok()?.is_empty()
                && fallback.latest("r-1").await.ok()?.is_none();
            (store.primary_available() && store.fallback_backlog() == 0 && empty).then_some(())
        },
    )
    .await;
}

/// Everything in PostgreSQL once: the points, the session's merged row, one dead letter per
/// batch written.
async fn assert_in_postgres(store: &DurableStore, rounds: u64, dead_letters: usize) {
    let pg = store.primary();
    assert!(matches!(pg, Store::Postgres(_)));
    let q = TelemetryQuery {
        limit: 100_000,
        ..TelemetryQuery::session("s-1")
    };
    let got = pg.telemetry(&q).await.unwrap();
    let want: Vec<Point> = (0..rounds).flat_map(|r| batch(r).points).collect();
    assert_eq!(got.len(), want.len(), "every point exactly once");
    assert_eq!(got, want);

    let summary = pg.session("s-1").await.unwrap();
    assert_eq!(summary.len(), 1);
    let record = summary[0].record.as_ref().unwrap();
    assert_eq!(record.started_ms, Some(t0()));
    assert_eq!(record.ended_ms, Some(t0() + 25_000));
    assert_eq!(record.metadata.len(), rounds as usize);
    assert_eq!(pg.dead_letters(1000).await.unwrap().len(), dead_letters);
    let want_events: Vec<model::RoastEvent> = (0..rounds).flat_map(|r| batch(r).events).collect();
    assert_eq!(
        pg.events("s-1").await.unwrap(),
        want_events,
        "every event once"
    );
}

/// The replay commits a session's points in the order they arrived (oldest first, in chunks):
/// the committing transaction's id never goes down as `seq` goes up, from `first_seq` on.
async fn assert_replayed_in_order(store: &DurableStore, first_seq: i64) {
    let Store::Postgres(pg) = store.primary() else {
        panic!("PostgreSQL is the primary");
    };
    let xids: Vec<i64> = sqlx::query_scalar(
        "SELECT xmin::text::int8 FROM telemetry WHERE session = 's-1' AND seq >= $1 ORDER BY seq",
    )
    .bind(first_seq)
    .fetch_all(pg.pool())
    .await
    .unwrap();
    assert!(
        xids.windows(2).all(|w| w[0] <= w[1]),
        "replayed out of order: {xids:?}"
    );
    let chunks = xids.windows(2).filter(|w| w[0] < w[1]).count() + 1;
    assert!(chunks > 1, "the replay should have taken several chunks");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_goes_to_the_fallback_and_is_replayed() {
    if !testkit::require(
        Server::Postgres,
        "an_outage_goes_to_the_fallback_and_is_replayed",
    ) {
        return;
    }
    let server = PrivatePostgres::start().await;
    let db = TestDatabase::create_on(&server.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&pg_config(&db.url), dir.path()).await;
    assert!(store.primary_available());
    let maintenance = Maintenance::start(&store);

    for round in 0..3 {
        let w = store.write(&batch(round)).await.unwrap();
        assert_eq!(w.destination, Destination::Primary);
        assert_eq!(w.outcome.points_inserted, 50);
    }

    server.stop().await;
    for round in 3..8 {
        let w = store.write(&batch(round)).await.unwrap();
        assert_eq!(w.destination, Destination::Fallback, "round {round}");
        assert_eq!(w.outcome.points_inserted, 50);
        assert!(!store.primary_available());
    }
    // A batch redelivered from before the outage: stored again locally, absorbed on replay.
    let w = store.write(&batch(1)).await.unwrap();
    assert_eq!(w.destination, Destination::Fallback);
    assert_eq!(store.fallback_backlog(), 300);

    server.start_server().await;
    wait_until_drained(&store).await;
    assert_in_postgres(&store, 8, 9).await;
    assert_replayed_in_order(&store, 150).await;

    // New batches go to PostgreSQL again.
    let w = store.write(&batch(8)).await.unwrap();
    assert_eq!(w.destination, Destination::Primary);
    maintenance.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_down_at_start_is_brought_in_later() {
    if !testkit::require(
        Server::Postgres,
        "postgres_down_at_start_is_brought_in_later",
    ) {
        return;
    }
    let server = PrivatePostgres::start().await;
    let db = TestDatabase::create_on(&server.url()).await;
    server.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let config = PostgresConfig {
        acquire_timeout_ms: 3000,
        ..pg_config(&db.url)
    };
    let started = Instant::now();
    let store = open(&config, dir.path()).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!store.primary_available());
    for round in 0..2 {
        // While down, no write waits for a connection attempt (that would take 3 s).
        let started = Instant::now();
        let w = store.write(&batch(round)).await.unwrap();
        assert_eq!(w.destination, Destination::Fallback);
        assert!(started.elapsed() < Duration::from_millis(1500));
    }
    assert_eq!(store.fallback_backlog(), 100);

    let maintenance = Maintenance::start(&store);
    server.start_server().await;
    // Migrations run when PostgreSQL first answers, then the replay.
    wait_until_drained(&store).await;
    assert_in_postgres(&store, 2, 2).await;
    maintenance.stop().await;
}

#[tokio::test]
async fn a_previous_runs_fallback_is_replayed_after_restart() {
    if !testkit::require(
        Server::Postgres,
        "a_previous_runs_fallback_is_replayed_after_restart",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        // Nothing listens there: the whole run goes to the fallback.
        let nowhere = format!("postgres://postgres@127.0.0.1:{}/x", testkit::free_port());
        let store = open(&pg_config(&nowhere), dir.path()).await;
        for round in 0..3 {
            let w = store.write(&batch(round)).await.unwrap();
            assert_eq!(w.destination, Destination::Fallback);
        }
    }
    let db = TestDatabase::create().await;
    let store = open(&pg_config(&db.url), dir.path()).await;
    assert!(store.primary_available());
    assert_eq!(store.fallback_backlog(), 150);
    let maintenance = Maintenance::start(&store);
    wait_until_drained(&store).await;
    assert_in_postgres(&store, 3, 3).await;
    maintenance.stop().await;
}

#[tokio::test]
async fn a_refused_batch_is_returned_not_diverted() {
    if !testkit::require(Server::Postgres, "a_refused_batch_is_returned_not_diverted") {
        return;
    }
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&pg_config(&db.url), dir.path()).await;
    let mut bad = batch(0);
    bad.points[1].seq = u64::MAX;
    let err = store.write(&bad).await.unwrap_err();
    assert!(!err.is_unavailable(), "{err}");
    assert!(store.primary_available());
    assert_eq!(store.fallback_backlog(), 0);
}

#[tokio::test]
async fn without_postgres_sqlite_is_the_primary() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&PostgresConfig::default(), dir.path()).await;
    assert!(store.fallback().is_none());
    assert!(matches!(store.primary(), Store::Sqlite(_)));
    assert!(store.primary_available());
    let w = store.write(&batch(0)).await.unwrap();
    assert_eq!(w.destination, Destination::Primary);
    assert_eq!(w.outcome.points_inserted, 50);
    assert_eq!(store.fallback_backlog(), 0);
    let latest = store.primary().latest("r-1").await.unwrap().unwrap();
    assert_eq!(latest.seq, 49);
    assert!(dir.path().join("primary.db").exists());
    assert!(!dir.path().join("fallback.db").exists());
    // Maintenance has nothing to probe and stops when asked.
    Maintenance::start(&store).stop().await;
}
