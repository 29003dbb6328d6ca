//! Scoring the platform's roast events through its real path: roasts with a known truth are
//! published over MQTT like devices publish them, event-inference detects, ingestion stores,
//! and the events are read back over ingestion's HTTP API — nothing is called in process.
//!
//! The roasts: the ten real ones of `testdata/roast-logs/skywalker` (truth: their roaster's
//! marks; their start names the `skywalker` roaster model) and seeded simulated roasts over
//! every built-in profile, batch sizes from 30 % to 120 % of the simulated roaster's and two
//! sampling intervals, half of them logged from charge and half from 20–60 s before it, as real
//! loggers record the empty drum (truth: the engine's own events, on the readings' clock).
//!
//! Roasts are replayed `acceleration` times faster than they were roasted, all at once, each
//! point stamped with its own device time in the recent past (ingestion refuses points from the
//! future). The *detection delay* of an event is counted in device time — how much later in the
//! roast it was said — by mapping the wall-clock time it was detected back onto the replay's
//! clock; at 20× a millisecond of processing is 20 ms of roast, far below the targets.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roast::EventKind;
use roast::score::{Said, Score};
use serde::Deserialize;
use sim_engine::{RoastConfig, builtin_profiles, simulate};

use crate::Error;

/// What to score, and where.
#[derive(Debug, Clone)]
pub struct ScoreConfig {
    pub mqtt: String,
    /// Ingestion's HTTP base URL.
    pub ingestion: String,
    /// Folder of `.alog` roasts with marks (none: skip).
    pub real: Option<std::path::PathBuf>,
    /// Seeded simulated roasts.
    pub seeded: u32,
    pub acceleration: f64,
    /// How long to wait, after the last roast ended, for its events.
    pub settle: Duration,
    /// Device ids are `sc-<run>-<n>`: a run sees only its own sessions.
    pub run_id: String,
}

/// Both tables.
#[derive(Debug, Clone)]
pub struct ScoreReport {
    pub real: Score,
    pub seeded: Score,
}

impl ScoreReport {
    pub fn print(&self) -> String {
        let mut out = String::new();
        for (title, score) in [
            (
                "real roasts (testdata/roast-logs/skywalker, roaster marks)",
                &self.real,
            ),
            ("seeded simulated roasts (engine events)", &self.seeded),
        ] {
            if score.roasts == 0 {
                continue;
            }
            out.push_str(&score.table(title));
            for (roast, what) in score.misses.iter().take(30) {
                out.push_str(&format!("  {roast}: {what}\n"));
            }
            if score.misses.len() > 30 {
                out.push_str(&format!("  … {} more\n", score.misses.len() - 30));
            }
            out.push('\n');
        }
        out
    }
}

/// One roast to replay: its readings (ms since its first), its truth, its start's metadata.
struct Replay {
    name: String,
    model: Option<&'static str>,
    /// `(t_ms since the first reading, bt, et)`.
    readings: Vec<(i64, Option<f64>, Option<f64>)>,
    /// `(kind, t_ms since the first reading)`.
    truth: Vec<(EventKind, i64)>,
}

fn real_roasts(dir: &Path) -> Result<Vec<Replay>, Error> {
    let logs = crate::alog::load(dir)?;
    Ok(logs
        .into_iter()
        .map(|log| {
            let t0 = log.samples.first().map_or(0.0, |s| s.t_s);
            let ms = |t_s: f64| ((t_s - t0) * 1000.0).round() as i64;
            Replay {
                name: log.name.clone(),
                model: Some("skywalker"),
                readings: log
                    .samples
                    .iter()
                    .map(|s| (ms(s.t_s), s.bt, s.et))
                    .collect(),
                truth: log
                    .marks
                    .iter()
                    .filter(|m| m.kind != EventKind::FcEnd)
                    .map(|m| (m.kind, ms(m.t_s)))
                    .collect(),
            }
        })
        .collect())
}

fn seeded_roasts(n: u32) -> Result<Vec<Replay>, Error> {
    let profiles = builtin_profiles();
    let batches = [1_500.0, 3_000.0, 4_000.0, 5_000.0, 6_000.0];
    (0..n)
        .map(|i| {
            let i = i as usize;
            let profile = profiles[i % profiles.len()].clone();
            let batch_g = batches[(i / profiles.len()) % batches.len()];
            let interval_ms = if (i / (profiles.len() * batches.len())).is_multiple_of(2) {
                1_000
            } else {
                2_000
            };
            let seed = 10_000 + i as u64;
            let config = RoastConfig {
                seed,
                batch_g,
                sample_interval_ms: interval_ms,
                pre_charge_ms: pre_charge_ms(seed),
                profile,
                ..RoastConfig::default()
            };
            let roast = simulate(&config).map_err(|e| Error::Config(e.to_string()))?;
            let pre = match config.pre_charge_ms {
                0 => String::new(),
                ms => format!("-pre{}s", ms / 1000),
            };
            Ok(Replay {
                name: format!(
                    "{}-{batch_g}g-{interval_ms}ms-seed{seed}{pre}",
                    config.profile.name
                ),
                model: None,
                // Samples and events share the engine's clock (since logging started), the
                // replay's t_ms.
                readings: roast
                    .samples
                    .iter()
                    .map(|s| (s.t_ms as i64, Some(s.bt), Some(s.et)))
                    .collect(),
                truth: roast
                    .events
                    .iter()
                    .map(|e| (e.kind.into(), e.t_ms as i64))
                    .collect(),
            })
        })
        .collect()
}

/// How long a seeded roast is logged before its charge: none for an even seed (the first
/// reading is the charge), else 20–60 s in whole seconds, drawn from the seed — so the score
/// covers both, and at 2 s sampling a charge that falls between two readings.
pub fn pre_charge_ms(seed: u64) -> u64 {
    if seed.is_multiple_of(2) {
        0
    } else {
        20_000 + (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) % 41 * 1000
    }
}

#[derive(Debug, Deserialize)]
struct EventOut {
    kind: String,
    ts: i64,
    detected_ts: i64,
}

/// A roast as published: where its device clock and the wall clock met.
struct Published {
    session: String,
    /// Device time of the first reading, ms.
    ts0: i64,
    /// When the first reading was due, ms of the wall clock.
    wall0: i64,
}

/// Replays every roast, reads their events back and scores them.
pub async fn run(config: &ScoreConfig) -> Result<ScoreReport, Error> {
    if !(config.acceleration >= 1.0 && config.acceleration <= 1_000.0) {
        return Err(Error::Config(format!(
            "acceleration {} is not within 1..=1000",
            config.acceleration
        )));
    }
    let real = match &config.real {
        Some(dir) => real_roasts(dir)?,
        None => Vec::new(),
    };
    let seeded = seeded_roasts(config.seeded)?;
    let n_real = real.len();
    let roasts: Vec<Replay> = real.into_iter().chain(seeded).collect();

    let mqtt_config = mqtt::Config {
        url: config.mqtt.clone(),
        ..mqtt::Config::default()
    };
    let connections = 4;
    let mut publishers = Vec::new();
    for c in 0..connections {
        let id = format!("sc-{}-pub{c}", config.run_id);
        publishers.push(Arc::new(
            mqtt::Publisher::connect(&mqtt_config, &id, Duration::from_secs(10)).await?,
        ));
    }
    let longest = roasts
        .iter()
        .filter_map(|r| r.readings.last().map(|x| x.0))
        .max()
        .unwrap_or(0);
    // Every reading in the past, by a margin: the replay's clock runs faster than the wall's.
    let now = model::now_ms();
    let ts0 = now - longest - 60_000;
    let wall0 = now + 500;
    let accel = config.acceleration;
    let started = Instant::now();

    let mut tasks = Vec::new();
    let mut published = Vec::new();
    for (i, roast) in roasts.iter().enumerate() {
        let device = format!("sc-{}-{i}", config.run_id);
        let session = format!("{device}-s");
        published.push(Published {
            session: session.clone(),
            ts0,
            wall0,
        });
        let publisher = publishers[i % publishers.len()].clone();
        let readings = roast.readings.clone();
        let model = roast.model;
        tasks.push(tokio::spawn(async move {
            replay(
                publisher, device, session, model, readings, ts0, wall0, accel,
            )
            .await
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| Error::Broker(format!("a replay task failed: {e}")))??;
    }
    for p in &publishers {
        if !p.flush(Duration::from_secs(30)).await {
            return Err(Error::Broker(
                "the broker did not acknowledge every publish".into(),
            ));
        }
    }
    eprintln!(
        "score-events: {} roasts replayed in {:.1} s; reading their events back",
        roasts.len(),
        started.elapsed().as_secs_f64()
    );

    let http = reqwest::Client::new();
    let deadline = Instant::now() + config.settle;
    let mut report = ScoreReport {
        real: Score::default(),
        seeded: Score::default(),
    };
    for (i, (roast, p)) in roasts.iter().zip(&published).enumerate() {
        let events = loop {
            let url = format!("{}/sessions/{}/events", config.ingestion, p.session);
            let events: Vec<EventOut> = http
                .get(&url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| Error::Broker(format!("GET {url}: {e}")))?
                .json()
                .await
                .map_err(|e| Error::Broker(format!("GET {url}: {e}")))?;
            let done = events.iter().any(|e| e.kind == "drop");
            if done || Instant::now() >= deadline {
                break events;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let said: Vec<Said> = events
            .iter()
            .filter_map(|e| {
                let kind = EventKind::parse(&e.kind)?;
                // The replay's clock at the moment of detection.
                let said_ms = p.ts0 + ((e.detected_ts - p.wall0) as f64 * accel).round() as i64;
                Some(Said {
                    kind,
                    ts_ms: e.ts - p.ts0,
                    said_ms: said_ms - p.ts0,
                })
            })
            .collect();
        let score = if i < n_real {
            &mut report.real
        } else {
            &mut report.seeded
        };
        score.add(&roast.name, &roast.truth, &said);
    }
    for p in publishers {
        if let Ok(p) = Arc::try_unwrap(p) {
            p.disconnect().await;
        }
    }
    Ok(report)
}

/// Publishes one roast: its start, each reading when the replay's clock reaches it, its end.
#[allow(clippy::too_many_arguments)]
async fn replay(
    publisher: Arc<mqtt::Publisher>,
    device: String,
    session: String,
    model: Option<&'static str>,
    readings: Vec<(i64, Option<f64>, Option<f64>)>,
    ts0: i64,
    wall0: i64,
    accel: f64,
) -> Result<(), Error> {
    let qos = mqtt::QoS::AtLeastOnce;
    let session_topic = format!("roasters/{device}/session");
    let telemetry_topic = format!("roasters/{device}/telemetry");
    let mut start = serde_json::json!({"session": session, "state": "start", "ts": ts0});
    if let Some(model) = model {
        start["roaster_model"] = model.into();
    }
    publisher
        .publish(
            &session_topic,
            qos,
            serde_json::to_vec(&start).unwrap_or_default(),
        )
        .await?;
    let mut last = 0;
    for (seq, (t, bt, et)) in readings.into_iter().enumerate() {
        let due = wall0 + (t as f64 / accel) as i64;
        let wait = due - model::now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        let mut channels = serde_json::Map::new();
        if let Some(bt) = bt {
            channels.insert("bt".into(), bt.into());
        }
        if let Some(et) = et {
            channels.insert("et".into(), et.into());
        }
        let point = serde_json::json!({"session": session, "seq": seq, "ts": ts0 + t, "channels": channels});
        publisher
            .publish(
                &telemetry_topic,
                qos,
                serde_json::to_vec(&point).unwrap_or_default(),
            )
            .await?;
        last = t;
    }
    let end = serde_json::json!({"session": session, "state": "end", "ts": ts0 + last});
    publisher
        .publish(
            &session_topic,
            qos,
            serde_json::to_vec(&end).unwrap_or_default(),
        )
        .await?;
    Ok(())
}
