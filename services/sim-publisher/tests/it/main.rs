//! The sim-publisher, driven over HTTP, observed over MQTT: fleets publish the device contract
//! exactly as roasters must.
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.

use std::collections::BTreeMap;
use std::time::Duration;

use model::{Limits, SessionState, TopicKind};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use sim_publisher::SimPublisher;
use testkit::PrivateMosquitto;
use tokio::sync::mpsc;

type App = testkit::TestService<SimPublisher>;

/// The service on `mqtt_url`, with its default fleet (none unless given).
async fn spawn(mqtt_url: &str, default_fleet: Option<sim_publisher::FleetSpec>) -> App {
    testkit::spawn::<SimPublisher>()
        .mqtt(mqtt_url)
        .configure(|c| c.sim_publisher.default_fleet = default_fleet)
        .start()
        .await
}

/// Every message published under `roasters/#`, as (topic, payload), in arrival order.
async fn listen(mqtt_url: &str) -> mpsc::UnboundedReceiver<(String, Vec<u8>)> {
    let endpoint = mqtt::Endpoint::parse(mqtt_url).unwrap();
    let mut options = MqttOptions::new(
        testkit::unique_name("observer"),
        endpoint.host,
        endpoint.port,
    );
    options.set_max_packet_size(1 << 24, 1 << 24);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    client
        .subscribe("roasters/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _client = client;
        while let Ok(event) = eventloop.poll().await {
            match event {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let _ = tx.send((p.topic, p.payload.to_vec()));
                }
                _ => {}
            }
        }
    });
    subscribed.await.unwrap();
    rx
}

/// What one device published, decoded with ingestion's own decoder.
#[derive(Default, Debug)]
struct Device {
    starts: Vec<model::SessionEvent>,
    ends: Vec<model::SessionEvent>,
    points: Vec<model::Point>,
    messages: usize,
}

fn decode(seen: &mut BTreeMap<String, Device>, topic: &str, payload: &[u8]) {
    let t = model::parse_topic(topic).unwrap();
    let device = seen.entry(t.device_id.to_owned()).or_default();
    device.messages += 1;
    let now = model::now_ms();
    match t.kind {
        TopicKind::Telemetry => {
            let d = model::decode_telemetry(t.device_id, payload, now, &Limits::default()).unwrap();
            assert!(
                d.rejected.is_empty(),
                "{topic}: refused points {:?}",
                d.rejected
            );
            device.points.extend(d.points);
        }
        TopicKind::Session => {
            let s = model::decode_session(t.device_id, payload, now, &Limits::default()).unwrap();
            match s.state {
                SessionState::Start => device.starts.push(s),
                SessionState::End => device.ends.push(s),
            }
        }
        other => panic!("unexpected {other:?} on {topic}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_publishes_whole_roasts_in_the_device_contract() {
    let broker = PrivateMosquitto::start().await;
    let mut messages = listen(&broker.url()).await;
    let app = spawn(&broker.url(), None).await;
    let http = reqwest::Client::new();

    // Three roasters, one roast each, 600x real time: a 12-minute roast in about 1.2 s.
    let resp = http
        .post(app.url("/fleets"))
        .json(&json!({"device_prefix": "test-r", "roasters": 3, "acceleration": 600.0, "repeat": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let fleet: serde_json::Value = resp.json().await.unwrap();
    let id = fleet["id"].as_str().unwrap().to_owned();

    let mut seen: BTreeMap<String, Device> = BTreeMap::new();
    testkit::eventually(Duration::from_secs(30), "three complete roasts", || {
        while let Ok((topic, payload)) = messages.try_recv() {
            decode(&mut seen, &topic, &payload);
        }
        let done = seen.len() == 3 && seen.values().all(|d| d.ends.len() == 1);
        std::future::ready(done.then_some(()))
    })
    .await;

    for (device_id, d) in &seen {
        assert_eq!(d.starts.len(), 1, "{device_id}");
        let session = &d.starts[0].session;
        assert_eq!(&d.ends[0].session, session);
        // A roast of 10-14 minutes at 1 sample/s after the default 30 s of the empty drum
        // before charge, numbered 0..n in order.
        let seqs: Vec<u64> = d.points.iter().map(|p| p.seq).collect();
        assert_eq!(
            seqs,
            (0..seqs.len() as u64).collect::<Vec<_>>(),
            "{device_id}"
        );
        assert!(
            (30 + 600..=30 + 840).contains(&seqs.len()),
            "{device_id}: {} points",
            seqs.len()
        );
        assert!(d.points.iter().all(|p| &p.session == session));
        assert!(
            d.points.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms),
            "ts must not go back"
        );
        // The end carries the engine's own events, in order, ending with the drop.
        let events = d.ends[0].metadata["events"].as_array().unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds.first(), Some(&"charge"), "{kinds:?}");
        assert_eq!(kinds.last(), Some(&"drop"), "{kinds:?}");
        assert!(kinds.contains(&"first_crack"), "{kinds:?}");
        // Logged from 30 s before charge (the events' clock is the points': since the first):
        // the empty drum's BT is flat at its charge value, then breaks downward.
        assert_eq!(events[0]["t_ms"], 30_000, "{events:?}");
        let charge_bt = events[0]["bt"].as_f64().unwrap();
        let bt = |p: &model::Point| p.channels.bt.unwrap();
        for p in &d.points[..30] {
            assert!(
                (bt(p) - charge_bt).abs() < 0.4,
                "{device_id}: BT {} at seq {} before charge, {charge_bt} at charge",
                bt(p),
                p.seq
            );
        }
        assert!(
            bt(&d.points[33]) < charge_bt - 5.0,
            "{device_id}: BT {} 3 s after charge at {charge_bt}",
            bt(&d.points[33])
        );
        assert_eq!(d.starts[0].metadata["simulator"], "sim-twin");
        // analytics' reference of the profile it roasts.
        let profile = d.starts[0].metadata["profile"].as_str().unwrap();
        assert_eq!(
            d.starts[0].metadata["reference"],
            format!("sim-twin:{profile}")
        );
    }

    let status: serde_json::Value = http
        .get(app.url(&format!("/fleets/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        status["roasters"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["roasts_completed"] == 1)
    );
    assert_eq!(status["mqtt_connected"], true);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn frames_carry_several_points_and_stopping_ends_the_roast() {
    let broker = PrivateMosquitto::start().await;
    let mut messages = listen(&broker.url()).await;
    let app = spawn(&broker.url(), None).await;
    let http = reqwest::Client::new();
    let fleet: serde_json::Value = http
        .post(app.url("/fleets"))
        .json(&json!({"device_prefix": "framed", "roasters": 1, "acceleration": 20.0, "frame": 5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = fleet["id"].as_str().unwrap().to_owned();

    let mut seen: BTreeMap<String, Device> = BTreeMap::new();
    let mut frames = 0;
    testkit::eventually(Duration::from_secs(20), "a few frames", || {
        while let Ok((topic, payload)) = messages.try_recv() {
            if topic.ends_with("/telemetry") {
                assert_eq!(payload.first(), Some(&b'['), "frames are JSON arrays");
                frames += 1;
            }
            decode(&mut seen, &topic, &payload);
        }
        std::future::ready((frames >= 3).then_some(()))
    })
    .await;
    assert_eq!(seen["framed-1"].points.len(), frames * 5);

    // Stopping mid-roast: the roast ends, marked as stopped, and the fleet is gone.
    let resp = http
        .delete(app.url(&format!("/fleets/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    testkit::eventually(
        Duration::from_secs(10),
        "the end of the stopped roast",
        || {
            while let Ok((topic, payload)) = messages.try_recv() {
                decode(&mut seen, &topic, &payload);
            }
            std::future::ready((!seen["framed-1"].ends.is_empty()).then_some(()))
        },
    )
    .await;
    assert_eq!(seen["framed-1"].ends[0].metadata["stopped"], true);
    let status = http
        .get(app.url(&format!("/fleets/{id}")))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_fleets_are_refused_with_a_reason() {
    let broker = PrivateMosquitto::start().await;
    let app = spawn(&broker.url(), None).await;
    let http = reqwest::Client::new();
    for (body, says) in [
        (json!({"roasters": 0}), "roasters"),
        (json!({"profile": "burnt"}), "profile"),
        (json!({"acceleration": -1.0}), "acceleration"),
        (json!({"device_prefix": "bad/prefix"}), "device_prefix"),
        (json!({"roasterz": 2}), "roasterz"),
        (json!({"pre_charge_secs": -1.0}), "pre_charge_secs"),
        (json!({"pre_charge_secs": 601.0}), "pre_charge_secs"),
        (json!({"roasters": 1_000_000}), "limit"),
    ] {
        let resp = http
            .post(app.url("/fleets"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(says), "{body}: {text}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_fleet_starts_with_the_service() {
    let broker = PrivateMosquitto::start().await;
    let spec = sim_publisher::FleetSpec {
        device_prefix: "default".into(),
        roasters: 2,
        acceleration: 100.0,
        ..sim_publisher::FleetSpec::default()
    };
    let app = spawn(&broker.url(), Some(spec)).await;
    let url = app.url("/fleets");
    let fleets: Vec<serde_json::Value> =
        testkit::eventually(Duration::from_secs(10), "the default fleet", || {
            let url = url.clone();
            async move {
                let fleets: Vec<serde_json::Value> =
                    reqwest::get(&url).await.ok()?.json().await.ok()?;
                (fleets.len() == 1 && fleets[0]["points_published"].as_u64() > Some(0))
                    .then_some(fleets)
            }
        })
        .await;
    assert_eq!(fleets[0]["roasters"].as_array().unwrap().len(), 2);
    assert_eq!(reqwest::get(app.url("/ready")).await.unwrap().status(), 200);
    app.stop().await;
}

/// `/metrics` while a fleet publishes passes Prometheus' own checks, and every metric is
/// described.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool() {
    let broker = PrivateMosquitto::start().await;
    let app = spawn(&broker.url(), None).await;
    let resp = reqwest::Client::new()
        .post(app.url("/fleets"))
        .json(&json!({"device_prefix": "test-m", "roasters": 1, "acceleration": 600.0, "repeat": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let text = testkit::eventually(
        Duration::from_secs(30),
        "a roast published to its end",
        || async {
            let text = app.text("/metrics").await;
            text.contains("simcorp_sim_publisher_roasts_completed_total 1")
                .then_some(text)
        },
    )
    .await;
    testkit::promtool_check(&text);
    testkit::assert_every_type_has_help(&text);
    app.stop().await;
}
