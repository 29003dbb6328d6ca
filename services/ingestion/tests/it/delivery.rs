//! Points published over MQTT are stored in PostgreSQL exactly once, with their values.

use std::time::Duration;

use model::Point;
use testkit::Server;

use crate::helpers::{Row, Stack, assert_rows, pg_rows, point, publish_points, wait_pg_count};

#[tokio::test(flavor = "multi_thread")]
async fn twenty_thousand_points_are_stored_exactly_once_with_their_values() {
    if !testkit::require(
        Server::Postgres,
        "twenty_thousand_points_are_stored_exactly_once",
    ) {
        return;
    }
    let s = Stack::start().await;

    let singles: Vec<Point> = (0..10_000)
        .map(|s| point("roaster-single", "s-1", s))
        .collect();
    let framed: Vec<Point> = (0..10_000)
        .map(|s| point("roaster-frame", "s-2", s))
        .collect();
    publish_points(&s.device, &singles, 1).await;
    publish_points(&s.device, &framed, 10).await;
    assert!(
        s.device.flush(Duration::from_secs(60)).await,
        "the broker did not ack every publish"
    );

    wait_pg_count(&s.pool, "roaster-single", 10_000, Duration::from_secs(60)).await;
    wait_pg_count(&s.pool, "roaster-frame", 10_000, Duration::from_secs(60)).await;
    // One row per seq, each equal to what was published.
    let expected = |points: &[Point]| points.iter().map(Row::expected).collect::<Vec<_>>();
    assert_rows(
        &pg_rows(&s.pool, "roaster-single").await,
        &expected(&singles),
    );
    assert_rows(&pg_rows(&s.pool, "roaster-frame").await, &expected(&framed));

    let stats = s.app.get::<serde_json::Value>("/stats").await;
    assert_eq!(stats["pipeline"]["points_committed"], 20_000);
    assert_eq!(stats["pipeline"]["messages_in"], 10_000 + 1_000);
    s.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn points_delivered_twice_are_stored_once() {
    if !testkit::require(Server::Postgres, "points_delivered_twice_are_stored_once") {
        return;
    }
    let s = Stack::start().await;

    let points: Vec<Point> = (0..500).map(|s| point("roaster-dup", "s-1", s)).collect();
    publish_points(&s.device, &points, 1).await;
    // The same points again: as singles, and inside frames.
    publish_points(&s.device, &points, 1).await;
    publish_points(&s.device, &points, 25).await;
    assert!(s.device.flush(Duration::from_secs(30)).await);

    testkit::eventually(
        Duration::from_secs(30),
        "every copy to be processed",
        || async {
            let stats = s.app.get::<serde_json::Value>("/stats").await;
            (stats["pipeline"]["points_committed"] == 1_500).then_some(())
        },
    )
    .await;
    let expected: Vec<Row> = points.iter().map(Row::expected).collect();
    assert_rows(&pg_rows(&s.pool, "roaster-dup").await, &expected);
    assert_eq!(
        s.app.get::<serde_json::Value>("/stats").await["pipeline"]["points_duplicate"],
        1_000
    );
    s.app.stop().await;
}
