//! A simulated roaster for tests: a seeded roast of the simulation engine, stamped so that it
//! ends just now (ingestion refuses points from the future), published over MQTT as a device
//! would (docs/protocol.md), with the engine's own events as the truth to check against.

use std::time::Duration;

use mqtt::QoS;
use roast::EventKind;
use sim_engine::{RoastConfig, simulate};

/// A whole roast as a device publishes it.
pub struct SimRoast {
    pub device: String,
    pub session: String,
    pub start: serde_json::Value,
    pub points: Vec<serde_json::Value>,
    pub end: serde_json::Value,
    /// The engine's events, as device times.
    pub truth: Vec<(EventKind, i64)>,
}

impl SimRoast {
    /// The default roast (the `medium` profile, 4 kg) with `seed`.
    pub fn new(device: &str, session: &str, seed: u64) -> SimRoast {
        SimRoast::of(
            device,
            session,
            &RoastConfig {
                seed,
                ..RoastConfig::default()
            },
        )
    }

    pub fn of(device: &str, session: &str, config: &RoastConfig) -> SimRoast {
        let sim = simulate(config).unwrap();
        let duration = sim.samples.last().unwrap().t_ms as i64;
        let charge = model::now_ms() - duration - 1_000;
        let points = sim
            .samples
            .iter()
            .enumerate()
            .map(|(i, s)| {
                serde_json::json!({"session": session, "seq": i, "ts": charge + s.t_ms as i64,
                    "channels": {"bt": s.bt, "et": s.et, "gas": s.gas}})
            })
            .collect();
        SimRoast {
            device: device.into(),
            session: session.into(),
            start: serde_json::json!({"session": session, "state": "start", "ts": charge - 1_000}),
            points,
            end: serde_json::json!({"session": session, "state": "end", "ts": charge + duration}),
            truth: sim
                .events
                .iter()
                .map(|e| (e.kind.into(), charge + e.t_ms as i64))
                .collect(),
        }
    }

    /// Adds fields to the start message (`reference`, `batch_g`, …).
    pub fn with_start(mut self, fields: serde_json::Value) -> SimRoast {
        if let (Some(start), Some(more)) = (self.start.as_object_mut(), fields.as_object()) {
            start.extend(more.clone());
        }
        self
    }

    /// Adds fields to the end message (`roasted_g`, …).
    pub fn with_end(mut self, fields: serde_json::Value) -> SimRoast {
        if let (Some(end), Some(more)) = (self.end.as_object_mut(), fields.as_object()) {
            end.extend(more.clone());
        }
        self
    }

    /// The truth's time of `kind`.
    pub fn truth(&self, kind: EventKind) -> Option<i64> {
        self.truth.iter().find(|(k, _)| *k == kind).map(|(_, t)| *t)
    }
}

/// An MQTT connection publishing as devices do (QoS 1).
pub struct Device(pub mqtt::Publisher);

impl Device {
    pub async fn connect(broker_url: &str) -> Device {
        let config = mqtt::Config {
            url: broker_url.to_owned(),
            ..mqtt::Config::default()
        };
        let id = crate::unique_name("device");
        Device(
            mqtt::Publisher::connect(&config, &id, Duration::from_secs(10))
                .await
                .unwrap(),
        )
    }

    pub async fn send(&self, device: &str, what: &str, payload: &serde_json::Value) {
        self.0
            .publish(
                format!("roasters/{device}/{what}"),
                QoS::AtLeastOnce,
                serde_json::to_vec(payload).unwrap(),
            )
            .await
            .unwrap();
    }

    /// Publishes points `range` of the roast, ten to a frame, and waits for the broker's acks.
    pub async fn points(&self, r: &SimRoast, range: std::ops::Range<usize>) {
        for frame in r.points[range].chunks(10) {
            self.send(
                &r.device,
                "telemetry",
                &serde_json::Value::Array(frame.to_vec()),
            )
            .await;
        }
        assert!(self.0.flush(Duration::from_secs(20)).await);
    }

    /// Start, every point, end.
    pub async fn whole(&self, r: &SimRoast) {
        self.send(&r.device, "session", &r.start).await;
        self.points(r, 0..r.points.len()).await;
        self.send(&r.device, "session", &r.end).await;
        assert!(self.0.flush(Duration::from_secs(20)).await);
    }
}
