//! Scaling out and degrading: replicas split one stream; losing Redis never stops ingestion.

use std::time::Duration;

use model::Point;
use testkit::{PrivateMosquitto, PrivateRedis, Server, TestDatabase};

use crate::helpers::{
    Row, Stack, assert_rows, ingestion, pg_pool, pg_rows, point, publish_points, publisher,
    wait_pg_count,
};

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_split_one_shared_subscription() {
    if !testkit::require(
        Server::Postgres,
        "two_replicas_split_one_shared_subscription",
    ) {
        return;
    }
    let broker = PrivateMosquitto::start().await;
    let db = TestDatabase::create().await;
    // Each replica gets a client id and a data directory of its own.
    let replica =
        || ingestion(&broker.url(), Some(&db.url)).set("ingestion.share_group", "ingestion");
    let a = replica().start().await;
    let b = replica().start().await;

    let points: Vec<Point> = (0..4_000)
        .map(|s| point("roaster-shared", "s-1", s))
        .collect();
    let device = publisher(&broker.url()).await;
    publish_points(&device, &points, 1).await;
    assert!(device.flush(Duration::from_secs(30)).await);
    let pool = pg_pool(&db.url).await;
    wait_pg_count(&pool, "roaster-shared", 4_000, Duration::from_secs(30)).await;
    let expected: Vec<Row> = points.iter().map(Row::expected).collect();
    assert_rows(&pg_rows(&pool, "roaster-shared").await, &expected);

    // Each replica took a share of the stream, and together exactly all of it.
    let took = |stats: serde_json::Value| stats["pipeline"]["points_committed"].as_u64().unwrap();
    let (from_a, from_b) = (
        took(a.get::<serde_json::Value>("/stats").await),
        took(b.get::<serde_json::Value>("/stats").await),
    );
    assert!(
        from_a > 0 && from_b > 0,
        "one replica got nothing: {from_a} / {from_b}"
    );
    assert_eq!(from_a + from_b, 4_000);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_redis_degrades_reads_but_never_stops_ingestion() {
    if !testkit::require(Server::Postgres, "losing_redis_degrades_reads") {
        return;
    }
    let mut redis = PrivateRedis::start().await;
    let redis_url = redis.url();
    let s = Stack::start_with(|config| config.redis.url = Some(redis_url.into())).await;

    let points: Vec<Point> = (0..2_000).map(|s| point("roaster-r", "s-1", s)).collect();
    publish_points(&s.device, &points[..1_000], 1).await;
    wait_pg_count(&s.pool, "roaster-r", 1_000, Duration::from_secs(30)).await;

    redis.stop().await;
    publish_points(&s.device, &points[1_000..], 1).await;
    wait_pg_count(&s.pool, "roaster-r", 2_000, Duration::from_secs(30)).await;
    testkit::eventually(
        Duration::from_secs(10),
        "the cache to be reported down",
        || async {
            let ready: serde_json::Value = s
                .app
                .http
                .get(s.app.url("/ready"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (ready["checks"]["redis"]["ok"] == false).then_some(ready)
        },
    )
    .await;
    // Redis is optional: the service stays ready, and reads fall back to the store.
    assert_eq!(s.app.status("/ready").await, 200);
    let latest: serde_json::Value = s.app.get("/devices/roaster-r/latest").await;
    assert_eq!(
        (latest["point"]["seq"].as_u64(), latest["source"].as_str()),
        (Some(1_999), Some("store"))
    );

    // Redis returns (empty); the next batches refill it.
    redis.start_again().await;
    publish_points(&s.device, &[point("roaster-r", "s-1", 2_000)], 1).await;
    testkit::eventually(Duration::from_secs(20), "the cache to refill", || async {
        let latest: serde_json::Value = s.app.get("/devices/roaster-r/latest").await;
        (latest["source"] == "cache" && latest["point"]["seq"] == 2_000).then_some(())
    })
    .await;
    s.app.stop().await;
}
