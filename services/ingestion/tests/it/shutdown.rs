//! The process ending mid-stream. SIGTERM: it drains within its deadline. `kill -9`: it drains
//! nothing. Either way nothing the devices were acknowledged is lost and nothing is stored twice:
//! what ingestion did not acknowledge stays in the broker's session for its client id and reaches
//! the next run, and what it had committed but not yet acknowledged comes again and is absorbed
//! by the idempotent write.

use std::time::{Duration, Instant};

use model::Point;
use testkit::{PrivateMosquitto, Server, TestDatabase};

use crate::helpers::{
    Row, assert_rows, pg_pool, pg_rows, point, start_process, stream_at, wait_pg_count,
};

/// A private broker and database, and what the ingestion process needs to come back as itself
/// (its data directory and client id).
struct Setup {
    broker: PrivateMosquitto,
    db: TestDatabase,
    data: tempfile::TempDir,
    client_id: String,
}

impl Setup {
    async fn new() -> Setup {
        Setup {
            broker: PrivateMosquitto::start().await,
            db: TestDatabase::create().await,
            data: tempfile::tempdir().unwrap(),
            client_id: testkit::unique_name("ingestion"),
        }
    }

    async fn start(&self) -> testkit::ServiceProcess {
        let (mqtt, pg) = (self.broker.url(), &self.db.url);
        start_process(&mqtt, pg, self.data.path(), &self.client_id, &[]).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_stream_drains_in_time_and_loses_nothing() {
    if !testkit::require(
        Server::Postgres,
        "sigterm_mid_stream_drains_in_time_and_loses_nothing",
    ) {
        return;
    }
    let setup = Setup::new().await;
    let first = setup.start().await;

    // A steady stream, still flowing when SIGTERM arrives.
    let points: Vec<Point> = (0..20_000)
        .map(|s| point("roaster-term", "s-1", s))
        .collect();
    let stream = stream_at(&setup.broker.url(), points.clone(), 100).await;
    let pool = pg_pool(&setup.db.url).await;
    wait_pg_count(&pool, "roaster-term", 2_000, Duration::from_secs(30)).await;
    let took = first.terminate().await;
    assert!(took < Duration::from_secs(30), "drain took {took:?}");
    eprintln!("SIGTERM drill: drained and exited in {took:?}");

    // The rest of the stream lands in the broker's session for this client id. A new run with
    // the same id picks it up: every point must then be stored, each exactly once.
    stream.await.unwrap();
    let second = setup.start().await;
    wait_pg_count(&pool, "roaster-term", 20_000, Duration::from_secs(60)).await;
    let expected: Vec<Row> = points.iter().map(Row::expected).collect();
    assert_rows(&pg_rows(&pool, "roaster-term").await, &expected);
    second.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_stream_loses_nothing_and_stores_nothing_twice() {
    if !testkit::require(
        Server::Postgres,
        "kill_9_mid_stream_loses_nothing_and_stores_nothing_twice",
    ) {
        return;
    }
    let setup = Setup::new().await;
    let first = setup.start().await;

    // Several devices, so that batches are in flight across sessions when the process dies.
    let points: Vec<Point> = (0..20_000)
        .map(|s| point(&format!("roaster-kill-{}", s % 4), "s-1", s / 4))
        .collect();
    let stream = stream_at(&setup.broker.url(), points.clone(), 100).await;
    let pool = pg_pool(&setup.db.url).await;
    wait_pg_count(&pool, "roaster-kill-0", 500, Duration::from_secs(30)).await;
    first.kill().await;

    // Down for a moment while devices keep publishing: the broker queues for the session.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = Instant::now();
    let second = setup.start().await;
    stream.await.unwrap();
    for d in 0..4 {
        let device = format!("roaster-kill-{d}");
        wait_pg_count(&pool, &device, 5_000, Duration::from_secs(60)).await;
        let expected: Vec<Row> = points
            .iter()
            .filter(|p| p.device_id == device)
            .map(Row::expected)
            .collect();
        assert_rows(&pg_rows(&pool, &device).await, &expected);
    }
    eprintln!(
        "kill -9 drill: 20000 points, all stored once; caught up {:?} after the restart",
        restarted.elapsed()
    );
    second.terminate().await;
}
