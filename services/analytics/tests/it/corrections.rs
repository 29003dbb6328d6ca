//! A roast that runs cold against its reference: analytics proposes more gas to the command
//! service, where it waits for a person's approval; a roast on its reference gets nothing.
//! The whole path is real: simulated roasts over MQTT, their events found by event-inference,
//! the proposal checked by the command service against the device's session and limits.

use std::time::Duration;

use command::{CommandService, TokenEntry};
use reqwest::{Method, StatusCode};
use roast::EventKind;
use serde_json::{Value, json};
use testkit::TestService;
use testkit::roaster::{Device, SimRoast};

use crate::common::{Platform, require, send};

const SERVICE_TOKEN: &str = "tok-analytics-corrections";
const OPERATOR_TOKEN: &str = "tok-operator-olga";

/// The roast's own curve after CHARGE, `offset_c` hotter, with its true events: a reference
/// the roast follows exactly, `offset_c` below it.
fn reference_of(r: &SimRoast, offset_c: f64) -> Value {
    let charge = r.truth(EventKind::Charge).unwrap();
    let points: Vec<Value> = r
        .points
        .iter()
        .filter(|p| p["ts"].as_i64().unwrap() >= charge)
        .map(|p| {
            json!({"t_ms": p["ts"].as_i64().unwrap() - charge,
                "bt": p["channels"]["bt"].as_f64().unwrap() + offset_c,
                "et": p["channels"]["et"].as_f64()})
        })
        .collect();
    let events: Vec<Value> = r
        .truth
        .iter()
        .map(|(k, ts)| json!({"kind": k.as_str(), "t_ms": ts - charge}))
        .collect();
    json!({"points": points, "events": events})
}

/// Publishes the roast's start and its readings up to first crack, in two parts: until a minute
/// after the turning point, then — once analytics knows the turning point, which event-inference
/// tells it — the rest. Corrections are judged from the turning point on, as readings arrive.
async fn roast_until_first_crack(
    device: &Device,
    app: &TestService<analytics::Analytics>,
    r: &SimRoast,
) {
    let index_at = |ts: i64| {
        r.points
            .iter()
            .position(|p| p["ts"].as_i64().unwrap() >= ts)
            .unwrap()
    };
    let tp = index_at(r.truth(EventKind::TurningPoint).unwrap() + 60_000);
    let fc = index_at(r.truth(EventKind::FcStart).unwrap());
    device.send(&r.device, "session", &r.start).await;
    device.points(r, 0..tp).await;
    let path = format!("/sessions/{}", r.session);
    testkit::eventually(
        Duration::from_secs(60),
        "analytics knows the TP",
        || async {
            let (status, body) = app.get_text(&path).await;
            let v: Value = serde_json::from_str(&body).ok()?;
            let events = v["events"].as_array()?;
            (status == StatusCode::OK && events.iter().any(|e| e["kind"] == "turning_point"))
                .then_some(())
        },
    )
    .await;
    device.points(r, tp..fc).await;
}

/// The roast with its burner reported at 60 % throughout. The simulation moves its gas during
/// the roast, and the test publishes ten minutes of readings in a second: analytics would judge
/// a reading the command service has long seen the next of, and the two would disagree on the
/// gas now. A device reporting at 1 Hz gives both the same value.
fn steady_gas(mut r: SimRoast) -> SimRoast {
    for p in &mut r.points {
        p["channels"]["gas"] = json!(GAS);
    }
    r
}

const GAS: f64 = 60.0;

async fn proposals(command: &TestService<CommandService>, device: &str) -> Vec<Value> {
    let resp = reqwest::Client::new()
        .get(command.url(&format!("/proposals?device_id={device}")))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_roast_running_cold_gets_a_gas_proposal_waiting_for_approval() {
    if !require("a_roast_running_cold_gets_a_gas_proposal_waiting_for_approval") {
        return;
    }
    let platform = Platform::start().await;
    let db = platform.ingestion.database().unwrap().url.clone();
    let keys = tempfile::tempdir().unwrap();
    let command = testkit::spawn::<CommandService>()
        .mqtt(&platform.broker.url())
        .postgres_url(&db)
        .set("hsm.dir", keys.path().to_string_lossy().as_ref())
        .configure(|c| {
            c.command.tokens = [
                (SERVICE_TOKEN, "analytics", "service"),
                (OPERATOR_TOKEN, "olga", "operator"),
            ]
            .into_iter()
            .map(|(token, actor, role)| TokenEntry::new(token, actor, &[role]))
            .collect();
        })
        .start()
        .await;
    let app = testkit::spawn::<analytics::Analytics>()
        .mqtt(&platform.broker.url())
        .postgres_url(&db)
        .set("analytics.corrections.enabled", true)
        .set("analytics.corrections.command_url", command.url(""))
        // Longer than the roast: one proposal per session, whatever it does after.
        .set("analytics.corrections.min_interval_secs", 3600)
        .set("analytics.corrections.token", SERVICE_TOKEN)
        .start()
        .await;

    // Two devices roast the same coffee the same way; one against a reference 10 °C hotter.
    let on_track = steady_gas(
        SimRoast::new("roaster-ok", "roast-ok", 7).with_start(json!({"reference": "as-roasted"})),
    );
    let cold = steady_gas(
        SimRoast::new("roaster-cold", "roast-cold", 7)
            .with_start(json!({"reference": "ten-hotter"})),
    );
    for (name, offset) in [("as-roasted", 0.0), ("ten-hotter", 10.0)] {
        let body = json!({"name": name, "from": {"profile": reference_of(&cold, offset)}});
        let (status, text) = send(
            Method::POST,
            app.url("/profiles"),
            "application/json",
            body.to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{text}");
    }

    let device = Device::connect(&platform.broker.url()).await;
    // The roast on its reference first: whatever it suggested would be proposed before the
    // cold roast's proposal (one live task, one proposer, in order).
    roast_until_first_crack(&device, &app, &on_track).await;
    roast_until_first_crack(&device, &app, &cold).await;

    let proposed = testkit::eventually(
        Duration::from_secs(60),
        "a proposal from analytics",
        || async {
            let list = proposals(&command, "roaster-cold").await;
            (!list.is_empty()).then_some(list)
        },
    )
    .await;
    assert_eq!(proposed.len(), 1, "{proposed:#?}");
    let p = &proposed[0];
    assert_eq!(
        (
            p["source"].as_str(),
            p["proposer"].as_str(),
            p["state"].as_str()
        ),
        (Some("analytics"), Some("analytics"), Some("proposed")),
        "{p:#}"
    );
    assert_eq!(
        (p["control"].as_str(), p["session"].as_str()),
        (Some("gas"), Some("roast-cold"))
    );
    // "BT 10.0 °C below the reference for 30 s, 2:10 after CHARGE; RoR … : gas 60 → 65"
    let reason = p["reason"].as_str().unwrap();
    assert!(
        reason.contains("°C below the reference for 30 s"),
        "{reason}"
    );
    assert!(
        reason.ends_with(&format!("gas {GAS} → {}", GAS + 5.0)),
        "{reason}"
    );
    let (from, to) = reason
        .rsplit_once("gas ")
        .and_then(|(_, change)| change.split_once(" → "))
        .map(|(a, b)| (a.parse::<f64>().unwrap(), b.parse::<f64>().unwrap()))
        .unwrap();
    assert_eq!(to, (from + 5.0).min(100.0), "{reason}");
    assert_eq!(p["value"].as_f64(), Some(to), "{p:#}");

    assert!(proposals(&command, "roaster-ok").await.is_empty());
    let metrics = app.get_text("/metrics").await.1;
    for (outcome, n) in [
        ("proposed", 1),
        ("refused", 0),
        ("failed", 0),
        ("dropped", 0),
    ] {
        let line = format!("simcorp_analytics_corrections_total{{outcome=\"{outcome}\"}} {n}");
        assert!(metrics.contains(&line), "want {line} in:\n{metrics}");
    }
}
