//! A roast published over MQTT, analysed by analytics against its reference: live while it runs
//! (variance so far, predictions), final once it has dropped (summary, variance per phase); read
//! back from the store when analytics met it mid-roast; and sessions that break the rules (gaps,
//! readings out of order, no BT, never ending) with a defined answer.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use roast::EventKind;
use serde_json::{Value, json};
use testkit::TestService;
use testkit::roaster::{Device, SimRoast};

use crate::common::{Platform, require, send};

async fn json_when<F>(
    app: &TestService<analytics::Analytics>,
    path: &str,
    what: &str,
    ok: F,
) -> Value
where
    F: Fn(&Value) -> bool,
{
    testkit::eventually(Duration::from_secs(60), what, || async {
        let (status, body) = app.get_text(path).await;
        let v: Value = serde_json::from_str(&body).ok()?;
        (status == StatusCode::OK && ok(&v)).then_some(v)
    })
    .await
}

fn secs(v: &Value) -> f64 {
    v.as_f64().unwrap() / 1000.0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_roast_is_compared_with_its_reference_live_and_when_it_ends() {
    if !require("a_roast_is_compared_with_its_reference_live_and_when_it_ends") {
        return;
    }
    let platform = Platform::start().await;
    let app = platform.analytics().await;
    let device = Device::connect(&platform.broker.url()).await;
    let r = SimRoast::new("roaster-a", "roast-a", 21)
        .with_start(json!({"reference": "sim-twin:medium", "batch_g": 4000}))
        .with_end(json!({"roasted_g": 3400}));
    let fc = r.truth(EventKind::FcStart).unwrap();
    let charge = r.truth(EventKind::Charge).unwrap();
    let half = r
        .points
        .iter()
        .position(|p| p["ts"].as_i64().unwrap() >= (charge + fc) / 2)
        .unwrap();

    // Half way to first crack: live, with a variance so far and a first-crack prediction.
    device.send(&r.device, "session", &r.start).await;
    device.points(&r, 0..half).await;
    let live = json_when(&app, "/sessions/roast-a/variance", "a live variance", |v| {
        v["phases"].as_array().is_some_and(|p| !p.is_empty())
    })
    .await;
    assert_eq!(live["final"], false);
    assert_eq!(live["reference"], "sim-twin:medium");
    assert!(!live["series"].as_array().unwrap().is_empty());
    let p = json_when(&app, "/sessions/roast-a/predictions", "a prediction", |v| {
        v["fc_start_ts"].is_i64()
    })
    .await;
    let error_s = (p["fc_start_ts"].as_i64().unwrap() - fc).abs() as f64 / 1000.0;
    assert!(error_s < 90.0, "FC predicted {error_s} s off at 50 %: {p}");
    assert!(p["naive_fc_start_ts"].is_i64(), "{p}");
    let sessions: Vec<Value> = app.get("/sessions").await;
    let s = sessions.iter().find(|s| s["session"] == "roast-a").unwrap();
    assert_eq!(
        (s["state"].as_str(), s["live"].as_bool()),
        (Some("active"), Some(true))
    );

    // The rest: final figures.
    device.points(&r, half..r.points.len()).await;
    device.send(&r.device, "session", &r.end).await;
    let summary = json_when(
        &app,
        "/sessions/roast-a/summary",
        "a finished summary",
        |v| v["finished"] == true && v["state"] == "ended",
    )
    .await;
    let truth = |k| (r.truth(k).unwrap() - charge) as f64 / 1000.0;
    let total = secs(&summary["total_ms"]);
    assert!(
        (total - truth(EventKind::Drop)).abs() <= 5.0,
        "total {total} s: {summary}"
    );
    let ph = &summary["phases"];
    let sum = secs(&ph["drying_ms"]) + secs(&ph["maillard_ms"]) + secs(&ph["development_ms"]);
    assert!(
        (sum - total).abs() < 0.01,
        "the phases make the roast: {summary}"
    );
    let dev = truth(EventKind::Drop) - truth(EventKind::FcStart);
    let dtr = summary["dtr"].as_f64().unwrap();
    assert!(
        (dtr - 100.0 * dev / truth(EventKind::Drop)).abs() < 6.0,
        "DTR {dtr}: {summary}"
    );
    assert!(
        (summary["weight_loss_pct"].as_f64().unwrap() - 15.0).abs() < 1e-9,
        "{summary}"
    );
    assert!(summary["bt_area"].as_f64().unwrap() > 0.0);
    assert!(
        summary["ror_at_fc_start"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
    assert!(summary["tp"]["bt"].as_f64().unwrap() < 120.0, "{summary}");
    let at: Vec<&str> = summary["at_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        at,
        ["charge", "turning_point", "dry_end", "fc_start", "drop"]
    );

    let done = json_when(
        &app,
        "/sessions/roast-a/variance",
        "the final variance",
        |v| v["final"] == true,
    )
    .await;
    let phases: Vec<&str> = done["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["drying", "maillard", "development"], "{done}");
    // Another seed of the same profile: close to its reference, not identical.
    let bt = &done["overall"]["bt"];
    assert!(
        bt["mean_abs"].as_f64().unwrap() > 0.0 && bt["mean_abs"].as_f64().unwrap() < 15.0,
        "{done}"
    );

    // A stored roast makes a reference of its own.
    let (status, body) = app
        .post(
            "/profiles",
            json!({"name": "roast-a-ref", "from": {"session": {"session": "roast-a"}}}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let made: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(made["origin"], "roaster-a/roast-a");
    let (status, body) = send(
        Method::PUT,
        app.url("/sessions/roast-a/reference"),
        "application/json",
        r#"{"profile":"roast-a-ref"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let own: Value = app.get("/sessions/roast-a/variance").await;
    assert_eq!(own["reference"], "roast-a-ref");
    assert!(
        own["overall"]["bt"]["max_abs"].as_f64().unwrap() < 0.5,
        "against itself: {own}"
    );
    let set: Value = app.get("/sessions/roast-a/reference").await;
    assert_eq!(set["set"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_roast_met_mid_way_is_read_back_from_the_store() {
    if !require("a_roast_met_mid_way_is_read_back_from_the_store") {
        return;
    }
    let platform = Platform::start().await;
    let device = Device::connect(&platform.broker.url()).await;
    let r = SimRoast::new("roaster-m", "roast-m", 22)
        .with_start(json!({"reference": "sim-twin:medium"}));
    device.send(&r.device, "session", &r.start).await;
    device.points(&r, 0..300).await;
    testkit::eventually(Duration::from_secs(30), "300 points stored", || async {
        let s: Vec<Value> =
            serde_json::from_str(&platform.ingestion.text("/sessions/roast-m").await).ok()?;
        (s.first()?["points"] == 300).then_some(())
    })
    .await;
    let app = platform.analytics().await;
    device.points(&r, 300..400).await;
    let curve = json_when(&app, "/sessions/roast-m/curve", "400 readings", |v| {
        v["readings"].as_array().is_some_and(|a| a.len() == 400)
    })
    .await;
    assert_eq!(
        curve["live"], false,
        "read from the store, with what came live since"
    );
    assert_eq!(curve["reference"]["name"], "sim-twin:medium");
    let kinds: Vec<&str> = curve["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.starts_with(&["charge", "turning_point"]), "{kinds:?}");
}

/// A device that breaks the rules: frames out of order and repeated, a probe that reads nothing
/// for a minute and fails (999 °C) for a while, a gap of two minutes, no end message ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_misbehaving_session_has_a_defined_summary() {
    if !require("a_misbehaving_session_has_a_defined_summary") {
        return;
    }
    let platform = Platform::start().await;
    let app = platform.analytics().await;
    let device = Device::connect(&platform.broker.url()).await;
    let mut r = SimRoast::new("roaster-x", "roast-x", 23);
    let n = r.points.len();
    for (i, p) in r.points.iter_mut().enumerate() {
        let ch = p["channels"].as_object_mut().unwrap();
        if (200..260).contains(&i) {
            ch.remove("bt");
        } else if (300..320).contains(&i) {
            ch.insert("bt".into(), json!(999.0));
        }
    }
    let gap = 400..520;
    let mut frames: Vec<Vec<Value>> = r
        .points
        .iter()
        .enumerate()
        .filter(|(i, _)| !gap.contains(i))
        .map(|(_, p)| p.clone())
        .collect::<Vec<_>>()
        .chunks(10)
        .map(<[Value]>::to_vec)
        .collect();
    frames.swap(5, 6);
    let again = frames[7].clone();
    frames.insert(9, again);
    device.send(&r.device, "session", &r.start).await;
    for f in &frames {
        device
            .send(&r.device, "telemetry", &Value::Array(f.clone()))
            .await;
    }
    assert!(device.0.flush(Duration::from_secs(20)).await);
    let stored = n - gap.len();
    let summary = json_when(&app, "/sessions/roast-x/summary", "every reading", |v| {
        v["readings"].as_u64() == Some(stored as u64)
    })
    .await;
    assert_eq!(
        summary["finished"],
        event_dropped(&platform, "roast-x").await,
        "{summary}"
    );
    assert!(
        summary["gaps"].as_u64().unwrap() >= 2,
        "the missing BT and the gap: {summary}"
    );
    let curve: Value = app.get("/sessions/roast-x/curve").await;
    let ts: Vec<i64> = curve["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_i64().unwrap())
        .collect();
    assert!(
        ts.windows(2).all(|w| w[0] < w[1]),
        "in time order, once each"
    );
    let failed = &curve["readings"].as_array().unwrap()[300];
    assert!(
        failed[1].is_null(),
        "a probe reading 999 °C is no reading: {failed}"
    );
    let state: Value = app.get("/sessions/roast-x").await;
    assert_eq!(state["state"], "active", "never ended: still active");
    let (status, body) = app.get_text("/sessions/roast-x/variance").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no reference named: {body}");
    assert!(body.contains("no reference"), "{body}");
}

async fn event_dropped(platform: &Platform, session: &str) -> bool {
    let events: Vec<Value> = platform
        .ingestion
        .get(&format!("/sessions/{session}/events"))
        .await;
    events.iter().any(|e| e["kind"] == "drop")
}
