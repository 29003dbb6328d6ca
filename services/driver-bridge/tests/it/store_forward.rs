//! Store and forward: the broker goes away during a roast; the bridge keeps sampling into its
//! outbox on disk and, once the broker is back, sends the backlog in order — ingestion stores
//! exactly the points the driver sampled, each once.

use std::time::Duration;

use testkit::Server;

use crate::roast_through_an_outage;

#[tokio::test(flavor = "multi_thread")]
async fn a_five_second_broker_outage_loses_and_duplicates_nothing() {
    if !testkit::require(
        Server::Postgres,
        "a_five_second_broker_outage_loses_and_duplicates_nothing",
    ) {
        return;
    }
    roast_through_an_outage(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_outbox_drops_new_messages_and_counts_them() {
    // No broker at all: everything stays in the outbox, which holds 20 messages.
    let nobody = format!("mqtt://127.0.0.1:{}", testkit::free_port());
    let a = testkit::unique_name("dfull");
    let keys_dir = tempfile::tempdir().unwrap();
    let device = crate::sim_device(&a);
    let app = testkit::spawn::<driver_bridge::DriverBridge>()
        .mqtt(&nobody)
        .set("hsm.dir", keys_dir.path().to_string_lossy().as_ref())
        .set("driver_bridge.sample_interval_ms", 100)
        .set("driver_bridge.outbox_max_messages", 20)
        .configure(move |c| c.driver_bridge.devices = vec![device])
        .start()
        .await;
    let view = testkit::eventually(Duration::from_secs(20), "30 samples", || async {
        let v: serde_json::Value = app.get(&format!("/devices/{a}")).await;
        (v["samples"].as_u64() >= Some(30)).then_some(v)
    })
    .await;
    assert_eq!(view["buffer_depth"], 20, "{view}");
    let metrics = app.text("/metrics").await;
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("simcorp_driver_bridge_outbox_dropped_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    // 30 samples and a session start, 20 kept.
    assert!(dropped >= 11.0, "dropped {dropped}");
    app.stop().await;
}
