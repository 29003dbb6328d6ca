//! Fleets of simulated roasters: each roaster is one task that runs engine roasts back to back
//! and publishes them as a real device would — session start when its logger starts, telemetry
//! paced by the simulation clock (divided by the fleet's acceleration) from the preheated, empty
//! drum through charge to the drop, session end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use model::{Channels, Point, SessionEvent, SessionState, Topic, TopicKind};
use mqtt::{Publisher, QoS};
use sim_engine::{Profile, RoastConfig, Simulation, builtin_profiles};

/// What a fleet is: how many roasters, which roasts, how fast.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetSpec {
    /// Devices are `{device_prefix}-{n}`, `n` from 1.
    pub device_prefix: String,
    pub roasters: usize,
    /// A built-in profile of sim-twin (`light`, `medium`, `dark`, …) or `mixed`, which gives
    /// each roaster and each roast a different one.
    pub profile: String,
    /// Base seed; each roaster's roasts get their own seeds derived from it, so a fleet is
    /// reproducible roast by roast.
    pub seed: u64,
    /// Batch size; `None`: the engine's default, varied by ±20 % per roast.
    pub batch_g: Option<f64>,
    /// Simulated seconds per real second: 1 is real time, 60 runs a 12-minute roast in 12 s.
    pub acceleration: f64,
    pub sample_interval_ms: u64,
    /// Points per telemetry message: 1 sends each point alone, more sends frames.
    pub frame: usize,
    /// Start another roast after each drop.
    pub repeat: bool,
    /// Simulated seconds between a drop and the start of the next roast's logging.
    pub pause_between_roasts_s: f64,
    /// Simulated seconds each roast is logged before its charge (0-600): the preheated, empty
    /// drum a real logger records first, flat until BT breaks downward at charge — what
    /// event inference finds CHARGE by. 0: the first point is the charge.
    pub pre_charge_secs: f64,
}

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            device_prefix: "sim-roaster".into(),
            roasters: 3,
            profile: "mixed".into(),
            seed: 1,
            batch_g: None,
            acceleration: 1.0,
            sample_interval_ms: 1000,
            frame: 1,
            repeat: true,
            pause_between_roasts_s: 30.0,
            pre_charge_secs: 30.0,
        }
    }
}

impl FleetSpec {
    pub fn validate(&self) -> Result<(), String> {
        // Room for "-<n>" and the session suffix within the 64-character id limit.
        if self.device_prefix.len() > 24 || !model::valid_id(&self.device_prefix) {
            return Err(format!(
                "device_prefix {:?}: 1-24 characters of [A-Za-z0-9._:-]",
                self.device_prefix
            ));
        }
        if self.roasters == 0 {
            return Err("roasters must be at least 1".into());
        }
        if self.profile != "mixed" && !builtin_profiles().iter().any(|p| p.name == self.profile) {
            let names: Vec<String> = builtin_profiles().into_iter().map(|p| p.name).collect();
            return Err(format!(
                "profile {:?}: expected \"mixed\" or one of {}",
                self.profile,
                names.join(", ")
            ));
        }
        if !(self.acceleration > 0.0 && self.acceleration <= 1000.0) {
            return Err("acceleration must be in (0, 1000]".into());
        }
        if self.sample_interval_ms < 100 || self.sample_interval_ms > 60_000 {
            return Err("sample_interval_ms must be within 100..=60000".into());
        }
        if !(1..=1000).contains(&self.frame) {
            return Err("frame must be within 1..=1000".into());
        }
        if let Some(b) = self.batch_g
            && !(b > 0.0 && b.is_finite())
        {
            return Err("batch_g must be a positive number".into());
        }
        if !(self.pause_between_roasts_s >= 0.0 && self.pause_between_roasts_s.is_finite()) {
            return Err("pause_between_roasts_s must not be negative".into());
        }
        let max_pre_charge_secs = sim_engine::MAX_PRE_CHARGE_MS as f64 / 1000.0;
        if !(0.0..=max_pre_charge_secs).contains(&self.pre_charge_secs) {
            return Err(format!(
                "pre_charge_secs must be within 0..={max_pre_charge_secs}"
            ));
        }
        Ok(())
    }

    /// The engine configuration of roast `round` of roaster `n`: deterministic in the spec.
    pub fn roast(&self, n: usize, round: u64) -> RoastConfig {
        let seed = self
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add((n as u64) << 32)
            .wrapping_add(round);
        let profiles = builtin_profiles();
        let profile: Profile = if self.profile == "mixed" {
            profiles[(seed % profiles.len() as u64) as usize].clone()
        } else {
            profiles
                .into_iter()
                .find(|p| p.name == self.profile)
                .unwrap_or_else(|| builtin_profiles().remove(0))
        };
        let defaults = RoastConfig::default();
        let batch_g = self.batch_g.unwrap_or_else(|| {
            // ±20 % around the engine's nominal batch, from the seed: fleets are varied but
            // reproducible.
            let f = 0.8 + 0.4 * ((seed >> 11) % 1000) as f64 / 1000.0;
            defaults.batch_g * f
        });
        RoastConfig {
            profile,
            seed,
            batch_g,
            sample_interval_ms: self.sample_interval_ms,
            pre_charge_ms: (self.pre_charge_secs * 1000.0).round() as u64,
            ..defaults
        }
    }
}

/// What one roaster is doing, for `GET /fleets/{id}`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoasterView {
    pub device_id: String,
    /// `starting`, `roasting`, `between_roasts`, `stopped` or `failed`.
    pub state: &'static str,
    pub session: Option<String>,
    pub profile: Option<String>,
    pub seq: u64,
    pub bt: Option<f64>,
    pub et: Option<f64>,
    /// Simulated seconds since charge: negative while the empty drum is logged before it.
    pub roast_s: f64,
    pub roasts_completed: u64,
    pub points_published: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetView {
    pub id: String,
    pub spec: FleetSpec,
    pub started_ms: i64,
    pub mqtt_connected: bool,
    pub points_published: u64,
    pub roasters: Vec<RoasterView>,
}

struct Fleet {
    spec: FleetSpec,
    started_ms: i64,
    cancel: CancellationToken,
    views: Vec<Arc<Mutex<RoasterView>>>,
    publisher: Arc<Publisher>,
    client_id: String,
    tasks: JoinSet<()>,
}

/// Every fleet of this service.
pub struct Fleets {
    mqtt: mqtt::Config,
    max_roasters: usize,
    next_id: AtomicU64,
    fleets: Mutex<BTreeMap<String, Fleet>>,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{0}")]
    Invalid(String),
    #[error("the fleet would bring the service to {total} roasters, over its limit of {limit}")]
    TooMany { total: usize, limit: usize },
    #[error("no fleet {0:?}")]
    NotFound(String),
    #[error("cannot reach the MQTT broker: {0}")]
    Mqtt(#[from] mqtt::MqttError),
}

impl Fleets {
    pub fn new(mqtt: mqtt::Config, max_roasters: usize) -> Self {
        Fleets {
            mqtt,
            max_roasters,
            next_id: AtomicU64::new(1),
            fleets: Mutex::new(BTreeMap::new()),
        }
    }

    fn roasters(&self) -> usize {
        self.fleets
            .lock()
            .map(|f| f.values().map(|f| f.spec.roasters).sum())
            .unwrap_or(0)
    }

    /// Connects the fleet's publisher and starts its roasters; returns the fleet id.
    pub async fn start(&self, spec: FleetSpec) -> Result<String, FleetError> {
        spec.validate().map_err(FleetError::Invalid)?;
        let total = self.roasters() + spec.roasters;
        if total > self.max_roasters {
            return Err(FleetError::TooMany {
                total,
                limit: self.max_roasters,
            });
        }
        let id = format!("fleet-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let client_id = format!("{}-{id}", self.mqtt.client_id_for("sim-publisher"));
        let publisher =
            Arc::new(Publisher::connect(&self.mqtt, &client_id, Duration::from_secs(10)).await?);
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut views = Vec::with_capacity(spec.roasters);
        for n in 1..=spec.roasters {
            let view = Arc::new(Mutex::new(RoasterView {
                device_id: format!("{}-{n}", spec.device_prefix),
                state: "starting",
                ..RoasterView::default()
            }));
            views.push(view.clone());
            let roaster = Roaster {
                n,
                spec: spec.clone(),
                publisher: publisher.clone(),
                view,
                cancel: cancel.clone(),
            };
            tasks.spawn(roaster.run());
        }
        crate::metrics::roasters_started(spec.roasters);
        tracing::info!(fleet = %id, roasters = spec.roasters, acceleration = spec.acceleration, "fleet started");
        let fleet = Fleet {
            spec,
            started_ms: model::now_ms(),
            cancel,
            views,
            publisher,
            client_id,
            tasks,
        };
        if let Ok(mut fleets) = self.fleets.lock() {
            fleets.insert(id.clone(), fleet);
        }
        Ok(id)
    }

    pub fn list(&self) -> Vec<FleetView> {
        let Ok(fleets) = self.fleets.lock() else {
            return Vec::new();
        };
        fleets.iter().map(|(id, f)| view(id, f)).collect()
    }

    pub fn get(&self, id: &str) -> Option<FleetView> {
        self.fleets.lock().ok()?.get(id).map(|f| view(id, f))
    }

    /// Stops a fleet: running roasts end (their end message says `stopped`), then the fleet's
    /// MQTT session is disconnected and forgotten.
    pub async fn stop(&self, id: &str) -> Result<(), FleetError> {
        let fleet = self
            .fleets
            .lock()
            .ok()
            .and_then(|mut f| f.remove(id))
            .ok_or_else(|| FleetError::NotFound(id.to_owned()))?;
        self.finish(fleet).await;
        Ok(())
    }

    pub async fn stop_all(&self) {
        let fleets: Vec<Fleet> = match self.fleets.lock() {
            Ok(mut f) => std::mem::take(&mut *f).into_values().collect(),
            Err(_) => Vec::new(),
        };
        for fleet in fleets {
            self.finish(fleet).await;
        }
    }

    async fn finish(&self, mut fleet: Fleet) {
        fleet.cancel.cancel();
        while fleet.tasks.join_next().await.is_some() {}
        crate::metrics::roasters_stopped(fleet.spec.roasters);
        fleet.publisher.flush(Duration::from_secs(5)).await;
        if let Ok(publisher) = Arc::try_unwrap(fleet.publisher) {
            publisher.disconnect().await;
        }
        // A fleet's client id never comes back: let the broker drop its session.
        mqtt::forget_session(&self.mqtt, &fleet.client_id, Duration::from_secs(5)).await;
    }

    /// Whether every fleet's publisher is connected (true with no fleets).
    pub fn connected(&self) -> bool {
        self.fleets
            .lock()
            .map(|f| f.values().all(|f| f.publisher.stats().is_connected()))
            .unwrap_or(false)
    }
}

fn view(id: &str, f: &Fleet) -> FleetView {
    let roasters: Vec<RoasterView> = f
        .views
        .iter()
        .filter_map(|v| v.lock().ok().map(|v| v.clone()))
        .collect();
    FleetView {
        id: id.to_owned(),
        spec: f.spec.clone(),
        started_ms: f.started_ms,
        mqtt_connected: f.publisher.stats().is_connected(),
        points_published: roasters.iter().map(|r| r.points_published).sum(),
        roasters,
    }
}

/// One simulated roaster.
struct Roaster {
    n: usize,
    spec: FleetSpec,
    publisher: Arc<Publisher>,
    view: Arc<Mutex<RoasterView>>,
    cancel: CancellationToken,
}

/// Why a roast ended early.
enum Interrupted {
    Cancelled,
    Failed(String),
}

impl Roaster {
    fn device_id(&self) -> String {
        format!("{}-{}", self.spec.device_prefix, self.n)
    }

    fn update(&self, f: impl FnOnce(&mut RoasterView)) {
        if let Ok(mut v) = self.view.lock() {
            f(&mut v);
        }
    }

    async fn run(self) {
        let mut round = 0u64;
        loop {
            match self.roast(round).await {
                Ok(()) => {}
                Err(Interrupted::Cancelled) => break,
                Err(Interrupted::Failed(error)) => {
                    tracing::warn!(device_id = %self.device_id(), %error, "simulated roaster failed");
                    self.update(|v| {
                        v.state = "failed";
                        v.error = Some(error);
                    });
                    return;
                }
            }
            if !self.spec.repeat {
                break;
            }
            self.update(|v| v.state = "between_roasts");
            let pause =
                Duration::from_secs_f64(self.spec.pause_between_roasts_s / self.spec.acceleration);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.cancel.cancelled() => break,
            }
            round += 1;
        }
        self.update(|v| v.state = "stopped");
    }

    async fn publish(&self, kind: TopicKind, payload: Vec<u8>) -> Result<(), Interrupted> {
        self.publisher
            .publish(
                Topic::format(&self.device_id(), kind),
                QoS::AtLeastOnce,
                payload,
            )
            .await
            .map_err(|e| Interrupted::Failed(e.to_string()))
    }

    async fn session_event(
        &self,
        session: &str,
        state: SessionState,
        metadata: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), Interrupted> {
        let event = SessionEvent {
            device_id: self.device_id(),
            session: session.to_owned(),
            state,
            ts_ms: model::now_ms(),
            metadata,
            received_ms: 0,
        };
        self.publish(TopicKind::Session, event.to_json()).await
    }

    async fn roast(&self, round: u64) -> Result<(), Interrupted> {
        let config = self.spec.roast(self.n, round);
        let mut sim = Simulation::new(&config).map_err(|e| Interrupted::Failed(e.to_string()))?;
        let device_id = self.device_id();
        let session = format!("{device_id}-r{round}-{}", model::now_ms());
        let profile = config.profile.name.clone();
        let mut start = serde_json::Map::new();
        start.insert("profile".into(), profile.clone().into());
        start.insert("seed".into(), config.seed.into());
        start.insert("batch_g".into(), round2(config.batch_g).into());
        start.insert("simulator".into(), "sim-twin".into());
        // analytics keeps a reference profile of each built-in profile under this name.
        start.insert("reference".into(), format!("sim-twin:{profile}").into());
        // The start goes out when the logger starts, before the empty drum's first point.
        self.session_event(&session, SessionState::Start, start)
            .await?;
        let pre_charge_s = config.pre_charge_ms as f64 / 1000.0;
        self.update(|v| {
            v.state = "roasting";
            v.session = Some(session.clone());
            v.profile = Some(profile.clone());
            v.seq = 0;
            v.roast_s = -pre_charge_s;
        });

        // The samples' clock: `t_ms` counts from the start of logging.
        let logging_started = tokio::time::Instant::now();
        let mut frame: Vec<Point> = Vec::with_capacity(self.spec.frame);
        let mut seq = 0u64;
        let outcome = loop {
            let Some(sample) = sim.next_sample() else {
                break Ok(());
            };
            let due = logging_started
                + Duration::from_secs_f64(sample.t_ms as f64 / 1000.0 / self.spec.acceleration);
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = self.cancel.cancelled() => break Err(Interrupted::Cancelled),
            }
            let now = model::now_ms();
            frame.push(Point {
                device_id: device_id.clone(),
                session: session.clone(),
                seq,
                // Stamped when published, as a device does: ingestion measures latency from it.
                ts_ms: now,
                channels: Channels {
                    bt: Some(sample.bt),
                    et: Some(sample.et),
                    gas: Some(sample.gas),
                    air: Some(sample.air),
                    drum: Some(sample.drum),
                    extra: [("ror".to_string(), sample.ror)].into(),
                },
                received_ms: now,
            });
            seq += 1;
            if frame.len() >= self.spec.frame {
                self.flush(&mut frame).await?;
            }
            self.update(|v| {
                v.seq = seq;
                v.bt = Some(sample.bt);
                v.et = Some(sample.et);
                v.roast_s = sample.t_ms as f64 / 1000.0 - pre_charge_s;
            });
        };
        // What was sampled is published even when the roast is cut short.
        self.flush(&mut frame).await?;
        let mut end = serde_json::Map::new();
        match &outcome {
            Ok(()) => {
                // The engine's own events: ground truth for event inference to be scored on,
                // `t_ms` on the points' clock (since the first point, the start of logging).
                let events = serde_json::to_value(sim.events()).unwrap_or_default();
                end.insert("events".into(), events);
                crate::metrics::roast_completed();
                self.update(|v| v.roasts_completed += 1);
            }
            Err(_) => {
                end.insert("stopped".into(), true.into());
            }
        }
        self.session_event(&session, SessionState::End, end).await?;
        outcome
    }

    async fn flush(&self, frame: &mut Vec<Point>) -> Result<(), Interrupted> {
        if frame.is_empty() {
            return Ok(());
        }
        let payload = if frame.len() == 1 {
            frame[0].to_json()
        } else {
            Point::frame_json(frame)
        };
        let n = frame.len() as u64;
        frame.clear();
        self.publish(TopicKind::Telemetry, payload).await?;
        crate::metrics::points_published(n);
        self.update(|v| v.points_published += n);
        Ok(())
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
