//! The HTTP API over what was stored, and the ops endpoints.

use std::time::Duration;

use model::{Point, SessionState};
use mqtt::QoS;
use testkit::Server;

use crate::helpers::{Stack, point, publish_points, session_event, session_topic, wait_pg_count};

#[tokio::test(flavor = "multi_thread")]
async fn sessions_telemetry_and_latest_are_served() {
    if !testkit::require(Server::Postgres, "sessions_telemetry_and_latest_are_served")
        || !testkit::require(Server::Redis, "sessions_telemetry_and_latest_are_served")
    {
        return;
    }
    let s = Stack::start_with(|config| {
        config.redis.url = Some(Server::Redis.url().into());
        config.redis.key_prefix = testkit::unique_name("simcorp_test") + ":";
    })
    .await;

    let start = session_event("roaster-api", "roast-42", SessionState::Start);
    s.device
        .publish(
            session_topic("roaster-api"),
            QoS::AtLeastOnce,
            start.to_json(),
        )
        .await
        .unwrap();
    let points: Vec<Point> = (0..100)
        .map(|s| point("roaster-api", "roast-42", s))
        .collect();
    publish_points(&s.device, &points, 10).await;
    let end = session_event("roaster-api", "roast-42", SessionState::End);
    s.device
        .publish(
            session_topic("roaster-api"),
            QoS::AtLeastOnce,
            end.to_json(),
        )
        .await
        .unwrap();
    assert!(s.device.flush(Duration::from_secs(10)).await);
    wait_pg_count(&s.pool, "roaster-api", 100, Duration::from_secs(20)).await;
    testkit::eventually(
        Duration::from_secs(10),
        "the session to be ended",
        || async {
            let s: Vec<serde_json::Value> = s.app.get("/sessions?device_id=roaster-api").await;
            (s.first().is_some_and(|s| s["state"] == "ended")).then_some(())
        },
    )
    .await;

    let sessions: Vec<serde_json::Value> = s.app.get("/sessions").await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["metadata"]["bean"], "kenya-nyeri");
    let active: Vec<serde_json::Value> = s.app.get("/sessions?active=true").await;
    assert!(active.is_empty());

    let detail: Vec<serde_json::Value> = s.app.get("/sessions/roast-42").await;
    assert_eq!(detail[0]["points"], 100);
    assert_eq!(detail[0]["max_seq"], 99);
    assert_eq!(detail[0]["state"], "ended");

    let all: Vec<serde_json::Value> = s.app.get("/sessions/roast-42/telemetry").await;
    assert_eq!(all.len(), 100);
    assert_eq!(all[7]["channels"]["bt"], points[7].channels.bt.unwrap());
    let (from, to) = (
        all[10]["ts"].as_i64().unwrap(),
        all[20]["ts"].as_i64().unwrap(),
    );
    let window: Vec<serde_json::Value> = s
        .app
        .get(&format!("/sessions/roast-42/telemetry?from={from}&to={to}"))
        .await;
    assert!(
        window
            .iter()
            .all(|p| (from..=to).contains(&p["ts"].as_i64().unwrap()))
    );
    assert!(window.len() >= 11);

    testkit::eventually(
        Duration::from_secs(10),
        "the latest point in the cache",
        || async {
            let latest: serde_json::Value = s.app.get("/devices/roaster-api/latest").await;
            (latest["point"]["seq"] == 99 && latest["source"] == "cache").then_some(())
        },
    )
    .await;

    assert_eq!(s.app.status("/sessions/no-such-roast").await, 404);
    assert_eq!(s.app.status("/sessions/bad$id").await, 400);
    assert_eq!(s.app.status("/devices/nobody/latest").await, 404);
    assert_eq!(s.app.status("/sessions?limit=many").await, 400);
    assert_eq!(
        s.app
            .status("/sessions/roast-42/telemetry?from=9&to=1")
            .await,
        400
    );

    let stats = s.app.get::<serde_json::Value>("/stats").await;
    assert_eq!(stats["store"]["primary"], "postgres");
    assert_eq!(stats["cache"]["kind"], "redis");
    assert_eq!(stats["mqtt"]["connected"], true);
    assert!(stats["pipeline"]["publish_to_commit"]["count"].as_u64() >= Some(100));

    s.app.stop().await;
}

/// `/metrics` passes Prometheus' own checks, every metric is described, and it tells what
/// `/stats` tells: the two are views of one record (the pipeline's `Stats`), not two counts.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_valid_prometheus_text_and_agree_with_stats() {
    if !testkit::require(
        Server::Postgres,
        "metrics_are_valid_prometheus_text_and_agree_with_stats",
    ) {
        return;
    }
    let s = Stack::start().await;
    let points: Vec<Point> = (0..50).map(|s| point("roaster-m", "s-1", s)).collect();
    publish_points(&s.device, &points, 1).await;
    assert!(s.device.flush(Duration::from_secs(10)).await);
    wait_pg_count(&s.pool, "roaster-m", 50, Duration::from_secs(20)).await;
    // Every ack released, so that nothing moves between the two reads below.
    testkit::eventually(Duration::from_secs(10), "every ack released", || async {
        let stats: serde_json::Value = s.app.get("/stats").await;
        (stats["pipeline"]["acks_released"].as_u64() >= Some(50)).then_some(())
    })
    .await;

    let text = s.app.text("/metrics").await;
    testkit::promtool_check(&text);
    testkit::assert_every_type_has_help(&text);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e}\n{text}"));
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "simcorp_pipeline_publish_to_commit_seconds")
        .unwrap_or_else(|| panic!("no publish-to-commit histogram in\n{text}"));
    match &histogram.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let total = buckets.iter().map(|b| b.count).fold(0.0, f64::max);
            assert!(total >= 50.0, "{buckets:?}");
        }
        other => panic!("expected a histogram, got {other:?}"),
    }
    for name in [
        "simcorp_http_requests_total",
        "simcorp_mqtt_messages_received_total",
        "simcorp_store_primary_up",
        "simcorp_ingestion_rejected_total",
        // The process itself: what the load harness reports as the service's CPU and memory.
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            scrape.samples.iter().any(|s| s.metric == name),
            "{name} missing from\n{text}"
        );
    }

    let stats: serde_json::Value = s.app.get("/stats").await;
    let sum = |name: &str| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) => v,
                ref other => panic!("{name}: expected a counter, got {other:?}"),
            })
            .sum()
    };
    for (metric, field) in [
        (
            "simcorp_pipeline_points_committed_total",
            "points_committed",
        ),
        ("simcorp_pipeline_batches_committed_total", "batches"),
        ("simcorp_pipeline_acks_released_total", "acks_released"),
    ] {
        assert_eq!(
            sum(metric),
            stats["pipeline"][field].as_u64().unwrap() as f64,
            "{metric} vs /stats pipeline.{field}"
        );
    }
    assert_eq!(sum("simcorp_pipeline_points_committed_total"), 50.0);

    // The histograms themselves, for harnesses that diff snapshots: they decode, and hold
    // exactly the points committed.
    let encoded: serde_json::Value = s.app.get("/stats/latency").await;
    assert_eq!(encoded["unit"], "us");
    let decode = |field: &str| {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded[field].as_str().unwrap())
            .unwrap();
        let h: hdrhistogram::Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .unwrap();
        h
    };
    assert_eq!(decode("publish_to_commit").len(), 50);
    assert!(decode("receive_to_commit").len() >= 50);
    s.app.stop().await;
}
