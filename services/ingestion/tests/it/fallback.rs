//! PostgreSQL going away: readiness follows it, SQLite takes the writes, and everything reaches
//! PostgreSQL once it is back.

use std::time::Duration;

use model::Point;
use testkit::{PrivateMosquitto, PrivatePostgres, TestDatabase};

use crate::helpers::{
    Row, assert_rows, ingestion, pg_pool, pg_rows, point, publish_points, publisher, wait_pg_count,
};

#[tokio::test(flavor = "multi_thread")]
async fn ready_follows_postgres_and_the_fallback_catches_up() {
    let broker = PrivateMosquitto::start().await;
    let pg = PrivatePostgres::start().await;
    let db = TestDatabase::create_on(&pg.url()).await;
    let app = ingestion(&broker.url(), Some(&db.url)).start().await;
    let device = publisher(&broker.url()).await;

    let points: Vec<Point> = (0..3_000).map(|s| point("roaster-fb", "s-1", s)).collect();
    publish_points(&device, &points[..1_000], 1).await;
    let pool = pg_pool(&db.url).await;
    wait_pg_count(&pool, "roaster-fb", 1_000, Duration::from_secs(30)).await;
    pool.close().await;

    pg.stop().await;
    publish_points(&device, &points[1_000..2_000], 1).await;
    // The writes are acknowledged from the fallback while PostgreSQL is down.
    assert!(device.flush(Duration::from_secs(30)).await);
    testkit::eventually(
        Duration::from_secs(30),
        "readiness to turn false",
        || async { (app.status("/ready").await == 503).then_some(()) },
    )
    .await;
    let ready: serde_json::Value = app
        .http
        .get(app.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["postgres"]["ok"], false, "{ready}");
    testkit::eventually(
        Duration::from_secs(30),
        "every point acked from the fallback",
        || async {
            let stats = app.get::<serde_json::Value>("/stats").await;
            (stats["pipeline"]["acks_released"].as_u64() >= Some(2_000)).then_some(stats)
        },
    )
    .await;
    let stats = app.get::<serde_json::Value>("/stats").await;
    assert!(
        stats["store"]["fallback_backlog_points"].as_u64() > Some(0),
        "{stats}"
    );
    assert!(
        stats["pipeline"]["points_fallback"].as_u64() > Some(0),
        "{stats}"
    );

    pg.start_server().await;
    publish_points(&device, &points[2_000..], 1).await;
    app.wait_ready().await;
    let pool = pg_pool(&db.url).await;
    wait_pg_count(&pool, "roaster-fb", 3_000, Duration::from_secs(60)).await;
    let expected: Vec<Row> = points.iter().map(Row::expected).collect();
    assert_rows(&pg_rows(&pool, "roaster-fb").await, &expected);
    testkit::eventually(
        Duration::from_secs(30),
        "the fallback to be empty",
        || async {
            (app.get::<serde_json::Value>("/stats").await["store"]["fallback_backlog_points"] == 0)
                .then_some(())
        },
    )
    .await;
    app.stop().await;
}
