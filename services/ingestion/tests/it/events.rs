//! Roast events from `roasters/+/events` (docs/protocol.md, "Roast events"): stored once,
//! served per session, bad ones kept as dead letters.

use std::time::Duration;

use model::RoastEvent;
use roast::EventKind;
use testkit::Server;

use crate::helpers::{Stack, publish_raw};

fn event(kind: EventKind, ts_ms: i64, confidence: f64) -> RoastEvent {
    RoastEvent {
        device_id: "roaster-ev".into(),
        session: "roast-ev".into(),
        kind,
        ts_ms,
        detected_ms: ts_ms + 2_000,
        bt: Some(197.8),
        et: Some(221.0),
        ror: Some(6.25),
        method: "bt_prior".into(),
        confidence,
        received_ms: 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_stored_once_and_served_per_session() {
    if !testkit::require(
        Server::Postgres,
        "events_are_stored_once_and_served_per_session",
    ) {
        return;
    }
    let s = Stack::start().await;
    let topic = "roasters/roaster-ev/events";
    let t = model::now_ms() - 600_000;
    let charge = event(EventKind::Charge, t, 0.9);
    let fc = event(EventKind::FcStart, t + 480_000, 0.6);
    // FC first (events of one session may arrive in any order), the charge twice (a
    // redelivery), then the charge again as a restarted detector might say it: the first wins.
    publish_raw(&s.device, topic, fc.to_json()).await;
    publish_raw(&s.device, topic, charge.to_json()).await;
    publish_raw(&s.device, topic, charge.to_json()).await;
    publish_raw(
        &s.device,
        topic,
        event(EventKind::Charge, t + 3_000, 0.5).to_json(),
    )
    .await;
    let bad = String::from_utf8(charge.to_json())
        .unwrap()
        .replace("\"charge\"", "\"first_crack\"");
    publish_raw(&s.device, topic, bad).await;
    assert!(s.device.flush(Duration::from_secs(10)).await);

    let letters = testkit::eventually(
        Duration::from_secs(20),
        "the bad event's dead letter",
        || async {
            let letters: Vec<serde_json::Value> = s.app.get("/dead-letters").await;
            (!letters.is_empty()).then_some(letters)
        },
    )
    .await;
    // Acknowledged in order: everything before the dead letter is stored too.
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["reason_code"], "bad_event_kind");

    let events: Vec<serde_json::Value> = s.app.get("/sessions/roast-ev/events").await;
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["charge", "fc_start"],
        "once each, in event time order"
    );
    assert_eq!(events[0]["ts"], t);
    assert_eq!(events[0]["confidence"], 0.9, "the first write wins");
    assert_eq!(events[0]["device_id"], "roaster-ev");
    assert_eq!(events[1]["detected_ts"], t + 482_000);
    assert_eq!(events[1]["method"], "bt_prior");
    assert!(events[1]["received_ms"].as_i64().unwrap() > t);

    let none: Vec<serde_json::Value> = s.app.get("/sessions/nothing-yet/events").await;
    assert!(none.is_empty());
    assert_eq!(s.app.status("/sessions/bad%20id/events").await, 400);
}
