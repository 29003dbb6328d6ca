//! The embedded path of `simcorp up`: the in-process broker and the SQLite store.

use std::time::Duration;

use model::Point;

use crate::helpers::{Row, assert_rows, ingestion, point, publish_points, publisher};

#[tokio::test(flavor = "multi_thread")]
async fn twenty_thousand_points_through_the_embedded_broker_into_sqlite() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("mqtt://{}", listener.local_addr().unwrap());
    let (stop_broker, broker_stopped) = tokio::sync::oneshot::channel::<()>();
    let broker = tokio::spawn(broker::run(
        broker::Config::default(),
        listener,
        async move {
            let _ = broker_stopped.await;
        },
    ));

    let app = ingestion(&url, None).start().await;
    let db_path = app.data_dir().join("ingestion.db");
    assert_eq!(
        app.get::<serde_json::Value>("/stats").await["store"]["primary"],
        "sqlite"
    );

    let singles: Vec<Point> = (0..10_000).map(|s| point("roaster-a", "s-1", s)).collect();
    let framed: Vec<Point> = (0..10_000).map(|s| point("roaster-b", "s-2", s)).collect();
    let device = publisher(&url).await;
    publish_points(&device, &singles, 1).await;
    publish_points(&device, &framed, 20).await;
    assert!(device.flush(Duration::from_secs(60)).await);

    let db = sqlx::sqlite::SqlitePoolOptions::new()
        .connect(&format!("sqlite://{}?mode=ro", db_path.display()))
        .await
        .unwrap();
    testkit::eventually(Duration::from_secs(60), "20,000 rows in SQLite", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM telemetry")
            .fetch_one(&db)
            .await
            .unwrap();
        (n >= 20_000).then_some(())
    })
    .await;
    for (device_id, points) in [("roaster-a", &singles), ("roaster-b", &framed)] {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT seq, bt, et, gas, air, drum, json_extract(extra, '$.ror') AS ror \
             FROM telemetry WHERE device_id = ?1 ORDER BY seq",
        )
        .bind(device_id)
        .fetch_all(&db)
        .await
        .unwrap();
        let expected: Vec<Row> = points.iter().map(Row::expected).collect();
        assert_rows(&rows, &expected);
    }
    app.stop().await;
    let _ = stop_broker.send(());
    broker.await.unwrap().unwrap();
}
