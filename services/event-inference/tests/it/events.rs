//! What event-inference does with a roast: live, joined mid-way, or run while it was away.

use std::time::Duration;

use event_inference::EventInference;
use ingestion::Ingestion;
use testkit::roaster::{Device, SimRoast as Roast};
use testkit::{PrivateMosquitto, Server, TestService};

pub(crate) async fn ingestion(broker: &PrivateMosquitto) -> TestService<Ingestion> {
    testkit::spawn::<Ingestion>()
        .mqtt(&broker.url())
        .postgres()
        .await
        .start()
        .await
}

pub(crate) async fn event_inference(
    broker: &PrivateMosquitto,
    ingestion: &TestService<Ingestion>,
) -> TestService<EventInference> {
    testkit::spawn::<EventInference>()
        .mqtt(&broker.url())
        .set("event_inference.catch_up_url", ingestion.url(""))
        .start()
        .await
}

/// The stored events of `r`, once all five are there.
async fn stored_events(ingestion: &TestService<Ingestion>, r: &Roast) -> Vec<serde_json::Value> {
    testkit::eventually(
        Duration::from_secs(60),
        "the roast's five events stored",
        || async {
            let events: Vec<serde_json::Value> = ingestion
                .get(&format!("/sessions/{}/events", r.session))
                .await;
            (events.len() >= 5).then_some(events)
        },
    )
    .await
}

/// Every event of the truth found once, within its tolerance.
fn assert_found(events: &[serde_json::Value], r: &Roast) {
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["charge", "turning_point", "dry_end", "fc_start", "drop"]
    );
    for (kind, ts) in &r.truth {
        let e = events.iter().find(|e| e["kind"] == kind.as_str()).unwrap();
        let off = (e["ts"].as_i64().unwrap() - ts).abs();
        assert!(
            off <= roast::score::tolerance_ms(*kind),
            "{kind} off by {off} ms: {e}"
        );
        assert_eq!(e["device_id"], r.device.as_str());
    }
}

fn require(test: &str) -> bool {
    testkit::require(Server::Postgres, test)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_roast_published_live_gets_its_events_published_and_stored() {
    if !require("a_roast_published_live_gets_its_events_published_and_stored") {
        return;
    }
    let broker = PrivateMosquitto::start().await;
    let ingestion = ingestion(&broker).await;
    let app = event_inference(&broker, &ingestion).await;
    let device = Device::connect(&broker.url()).await;
    let r = Roast::new("roaster-live", "roast-live", 7);
    device.whole(&r).await;
    let events = stored_events(&ingestion, &r).await;
    assert_found(&events, &r);
    let charge = &events[0];
    assert_eq!(charge["method"], "bt_break");
    assert!(charge["detected_ts"].as_i64().unwrap() >= charge["ts"].as_i64().unwrap());
    // Ended: no longer watched.
    let watched: Vec<serde_json::Value> = app.get("/sessions").await;
    assert!(watched.is_empty(), "{watched:?}");
    let text = app.text("/metrics").await;
    assert!(
        text.contains(r#"simcorp_event_inference_events_total{kind="fc_start"} 1"#),
        "{text}"
    );
    testkit::promtool_check(&text);
    testkit::assert_every_type_has_help(&text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_roast_shows_its_events_so_far_and_its_ror() {
    if !require("a_running_roast_shows_its_events_so_far_and_its_ror") {
        return;
    }
    let broker = PrivateMosquitto::start().await;
    let ingestion = ingestion(&broker).await;
    let app = event_inference(&broker, &ingestion).await;
    let device = Device::connect(&broker.url()).await;
    let r = Roast::new("roaster-run", "roast-run", 8);
    device.send(&r.device, "session", &r.start).await;
    // Three minutes in: charged and turned, not dry yet.
    device.points(&r, 0..180).await;
    let watched = testkit::eventually(Duration::from_secs(20), "charge and TP said", || async {
        let s: Vec<serde_json::Value> = app.get("/sessions").await;
        (s.first()
            .is_some_and(|s| s["events"].as_array().unwrap().len() == 2))
        .then_some(s)
    })
    .await;
    assert_eq!(watched[0]["session"], "roast-run");
    assert_eq!(watched[0]["model"], "standard");
    assert_eq!(
        watched[0]["events"],
        serde_json::json!(["charge", "turning_point"])
    );
    let ror: Vec<serde_json::Value> = app.get("/sessions/roast-run/ror").await;
    let series = ror[0]["ror"].as_array().unwrap();
    assert!(series.len() > 100, "one value a second: {}", series.len());
    // Three minutes after charge the beans are heating at 10–30 °C/min.
    let last = series.last().unwrap()[1].as_f64().unwrap();
    assert!((5.0..40.0).contains(&last), "{last}");
    assert_eq!(app.status("/sessions/nothing/ror").await, 404);
    let stats: serde_json::Value = app.get("/stats").await;
    assert_eq!(stats["sessions"], 1);
    assert_eq!(stats["readings"], 180);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_roast_joined_mid_way_is_caught_up_from_the_store() {
    if !require("a_roast_joined_mid_way_is_caught_up_from_the_store") {
        return;
    }
    let broker = PrivateMosquitto::start().await;
    let ingestion = ingestion(&broker).await;
    let device = Device::connect(&broker.url()).await;
    let r = Roast::new("roaster-mid", "roast-mid", 9);
    // CHARGE and TP happen while event-inference is not running.
    device.send(&r.device, "session", &r.start).await;
    device.points(&r, 0..200).await;
    testkit::eventually(
        Duration::from_secs(20),
        "the first 200 points stored",
        || async {
            // 404 until its first points are stored.
            let (_, body) = ingestion.get_text("/sessions/roast-mid").await;
            let s: Vec<serde_json::Value> = serde_json::from_str(&body).ok()?;
            (s.first()?["points"] == 200).then_some(())
        },
    )
    .await;
    let app = event_inference(&broker, &ingestion).await;
    device.points(&r, 200..r.points.len()).await;
    device.send(&r.device, "session", &r.end).await;
    let events = stored_events(&ingestion, &r).await;
    assert_found(&events, &r);
    let text = app.text("/metrics").await;
    assert!(
        text.contains(r#"simcorp_event_inference_catch_ups_total{outcome="ok"}"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_roast_that_ran_while_the_service_was_away_is_found_at_start() {
    if !require("a_roast_that_ran_while_the_service_was_away_is_found_at_start") {
        return;
    }
    let broker = PrivateMosquitto::start().await;
    let ingestion = ingestion(&broker).await;
    let device = Device::connect(&broker.url()).await;
    let r = Roast::new("roaster-away", "roast-away", 10);
    device.whole(&r).await;
    testkit::eventually(
        Duration::from_secs(20),
        "the roast stored and ended",
        || async {
            // 404 until its first points are stored.
            let (_, body) = ingestion.get_text("/sessions/roast-away").await;
            let s: Vec<serde_json::Value> = serde_json::from_str(&body).ok()?;
            let s = s.first()?;
            (s["state"] == "ended" && s["points"] == r.points.len()).then_some(())
        },
    )
    .await;
    let _app = event_inference(&broker, &ingestion).await;
    let events = stored_events(&ingestion, &r).await;
    assert_found(&events, &r);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_mid_roast_resumes_after_the_events_already_stored() {
    if !require("a_restart_mid_roast_resumes_after_the_events_already_stored") {
        return;
    }
    let broker = PrivateMosquitto::start().await;
    let ingestion = ingestion(&broker).await;
    let db = ingestion.database().unwrap().url.clone();
    // Reading the past from PostgreSQL itself, not through ingestion.
    let spawn = || {
        testkit::spawn::<EventInference>()
            .mqtt(&broker.url())
            .postgres_url(&db)
            .set("event_inference.catch_up_url", "")
            .start()
    };
    let first = spawn().await;
    let device = Device::connect(&broker.url()).await;
    let r = Roast::new("roaster-restart", "roast-restart", 11);
    device.send(&r.device, "session", &r.start).await;
    device.points(&r, 0..400).await;
    testkit::eventually(
        Duration::from_secs(20),
        "CHARGE, TP and DRY END stored",
        || async {
            let events: Vec<serde_json::Value> =
                ingestion.get("/sessions/roast-restart/events").await;
            (events.len() == 3).then_some(())
        },
    )
    .await;
    first.stop().await;
    let second = spawn().await;
    device.points(&r, 400..r.points.len()).await;
    device.send(&r.device, "session", &r.end).await;
    let events = stored_events(&ingestion, &r).await;
    assert_found(&events, &r);
    // The second run said only what was left: first crack and the drop. (Its own count: the
    // metrics registry is the test process's, shared by both runs.)
    let stats: serde_json::Value = second.get("/stats").await;
    assert_eq!(stats["events"], 2, "{stats}");
}
