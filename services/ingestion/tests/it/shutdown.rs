//! The process ending mid-stream. SIGTERM: it drains within its deadline. `kill -9`: it drains
//! nothing. Either way nothing the devices were acknowledged is lost and nothing is stored twice:
//! what ingestion did not acknowledge stays in the broker's session for its client id and reaches
//! the next run, and what it had committed but not yet acknowledged comes again and is absorbed
//! by the idempotent write.

use std::process::Stdio;
use std::time::{Duration, Instant};

use model::Point;
use testkit::{PrivateMosquitto, Server, TestDatabase};
use tokio::process::{Child, Command};

use crate::helpers::{
    Row, assert_rows, pg_pool, pg_rows, point, publish_points, publisher, wait_pg_count,
};

struct Process {
    child: Child,
    http: String,
}

/// Starts the real `ingestion` binary, configured through the environment as in a container.
async fn start(mqtt: &str, pg: &str, data: &std::path::Path, client_id: &str) -> Process {
    let port = testkit::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_ingestion"))
        .env("SIMCORP_MQTT_URL", mqtt)
        .env("SIMCORP_MQTT_CLIENT_ID", client_id)
        .env("SIMCORP_POSTGRES_URL", pg)
        .env("SIMCORP_DATA_DIR", data)
        .env("SIMCORP_INGESTION_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("SIMCORP_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let process = Process {
        child,
        http: format!("http://127.0.0.1:{port}"),
    };
    let ready = format!("{}/ready", process.http);
    testkit::eventually(
        Duration::from_secs(30),
        "the ingestion process to be ready",
        || {
            let ready = ready.clone();
            async move {
                let resp = reqwest::get(&ready).await.ok()?;
                resp.status().is_success().then_some(())
            }
        },
    )
    .await;
    process
}

impl Process {
    /// SIGKILL: no drain, no goodbye to the broker or the database.
    async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let status = self.child.wait().await.unwrap();
        assert!(!status.success(), "ingestion survived kill -9: {status}");
    }

    /// SIGTERM, then waits; returns how long the process took to exit.
    async fn terminate(mut self) -> Duration {
        let pid = self.child.id().unwrap();
        let started = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .unwrap()
            .success();
        assert!(ok);
        let status = tokio::time::timeout(Duration::from_secs(35), self.child.wait())
            .await
            .expect("ingestion did not exit within the 30 s drain deadline")
            .unwrap();
        assert!(status.success(), "ingestion exited with {status}");
        started.elapsed()
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
    let broker = PrivateMosquitto::start().await;
    let db = TestDatabase::create().await;
    let data = tempfile::tempdir().unwrap();
    let client_id = testkit::unique_name("ingestion");
    let first = start(&broker.url(), &db.url, data.path(), &client_id).await;

    // A steady stream, still flowing when SIGTERM arrives.
    let points: Vec<Point> = (0..20_000)
        .map(|s| point("roaster-term", "s-1", s))
        .collect();
    let device = publisher(&broker.url()).await;
    let stream = {
        let points = points.clone();
        tokio::spawn(async move {
            for chunk in points.chunks(200) {
                publish_points(&device, chunk, 1).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(device.flush(Duration::from_secs(60)).await);
        })
    };
    let pool = pg_pool(&db.url).await;
    wait_pg_count(&pool, "roaster-term", 2_000, Duration::from_secs(30)).await;
    let took = first.terminate().await;
    assert!(took < Duration::from_secs(30), "drain took {took:?}");

    // The rest of the stream lands in the broker's session for this client id. A new run with
    // the same id picks it up: every point must then be stored, each exactly once.
    stream.await.unwrap();
    let second = start(&broker.url(), &db.url, data.path(), &client_id).await;
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
    let broker = PrivateMosquitto::start().await;
    let db = TestDatabase::create().await;
    let data = tempfile::tempdir().unwrap();
    let client_id = testkit::unique_name("ingestion");
    let first = start(&broker.url(), &db.url, data.path(), &client_id).await;

    // Several devices, so that batches are in flight across sessions when the process dies.
    let points: Vec<Point> = (0..20_000)
        .map(|s| point(&format!("roaster-kill-{}", s % 4), "s-1", s / 4))
        .collect();
    let device = publisher(&broker.url()).await;
    let stream = {
        let points = points.clone();
        tokio::spawn(async move {
            for chunk in points.chunks(200) {
                publish_points(&device, chunk, 1).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(device.flush(Duration::from_secs(60)).await);
        })
    };
    let pool = pg_pool(&db.url).await;
    wait_pg_count(&pool, "roaster-kill-0", 500, Duration::from_secs(30)).await;
    first.kill().await;

    // Down for a moment while devices keep publishing: the broker queues for the session.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = Instant::now();
    let second = start(&broker.url(), &db.url, data.path(), &client_id).await;
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
