//! One device's loop: reads its driver every sample interval, turns what it reads into the
//! device contract (session start, telemetry, session end) in the outbox, and applies the
//! controls that verified commands ask for, between two reads — the driver is only ever
//! touched from here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use model::command::{Control, Refusal};
use model::{Channels, Point, SessionEvent, SessionState, Topic, TopicKind};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::driver::{AnyDriver, Driver, DriverError, Reading};
use store::outbox::{Outbox, OutboxError};

/// What `GET /devices/{id}` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceView {
    pub id: String,
    pub driver: &'static str,
    pub key_id: String,
    pub public_key: String,
    /// Where the device's private key lives (`keys::Keystore::describe`).
    pub keystore: String,
    /// `starting`, `sampling`, `unreachable` or `stopped`.
    pub state: &'static str,
    pub session: Option<String>,
    pub seq: u64,
    pub last_sample: Option<LastSample>,
    pub last_error: Option<String>,
    pub samples: u64,
    pub commands_applied: u64,
    /// Refused commands, by reason code.
    pub commands_refused: BTreeMap<&'static str, u64>,
    /// Set by the listing: messages waiting in the outbox (all devices share it).
    pub buffer_depth: u64,
    /// Whether the key was registered with the command service (when one is configured).
    pub registered: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastSample {
    pub ts: i64,
    pub channels: Channels,
}

/// A control change for the device loop, with where to say how it went.
pub struct ControlRequest {
    pub session: String,
    pub control: Control,
    pub value: f64,
    pub done: oneshot::Sender<Result<(), (Refusal, String)>>,
}

/// A device as the rest of the bridge sees it.
pub struct DeviceHandle {
    pub id: String,
    pub view: Arc<Mutex<DeviceView>>,
    pub controls: mpsc::Sender<ControlRequest>,
}

impl DeviceHandle {
    pub fn view(&self) -> DeviceView {
        self.view.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn update(&self, f: impl FnOnce(&mut DeviceView)) {
        if let Ok(mut v) = self.view.lock() {
            f(&mut v);
        }
    }
}

pub struct DeviceLoop {
    pub id: String,
    pub driver: AnyDriver,
    pub interval: Duration,
    pub outbox: Outbox,
    pub view: Arc<Mutex<DeviceView>>,
    pub controls: mpsc::Receiver<ControlRequest>,
    /// Signs the device's session messages, and its telemetry when `sign_telemetry`.
    pub key: keys::Key,
    pub sign_telemetry: bool,
}

/// The loop's state apart from the driver, which is `Send` but not `Sync` (a Modbus client):
/// borrowed across awaits, this must be `Sync`.
struct Core {
    id: String,
    outbox: Outbox,
    view: Arc<Mutex<DeviceView>>,
    key: keys::Key,
    sign_telemetry: bool,
}

struct Session {
    id: String,
    next_seq: u64,
}

impl Core {
    fn update(&self, f: impl FnOnce(&mut DeviceView)) {
        if let Ok(mut v) = self.view.lock() {
            f(&mut v);
        }
    }

    async fn push(&self, kind: TopicKind, payload: Vec<u8>) -> Result<(), OutboxError> {
        let topic = Topic::format(&self.id, kind);
        let payload = if kind == TopicKind::Session || self.sign_telemetry {
            self.signed(&topic, payload)
        } else {
            payload
        };
        if self.outbox.push(&topic, &payload).await? == store::outbox::Pushed::Dropped {
            crate::metrics::outbox_dropped();
            tracing::warn!(device_id = %self.id, "outbox full: message dropped");
        }
        crate::metrics::outbox_depth(self.outbox.depth());
        Ok(())
    }

    /// `body` with the device's signature line. A key that cannot sign (an HSM gone away)
    /// sends it unsigned: a platform requiring signatures keeps it as a dead letter, where it
    /// is not lost.
    fn signed(&self, topic: &str, body: Vec<u8>) -> Vec<u8> {
        match self.key.sign(&model::signed::signed_bytes(topic, &body)) {
            Ok(sig) => model::signed::append(
                &body,
                &model::signed::MessageSignature {
                    key_id: self.key.label().to_owned(),
                    sig,
                },
            ),
            Err(error) => {
                crate::metrics::signing_failed();
                tracing::warn!(device_id = %self.id, %error, "could not sign a message; sending it unsigned");
                body
            }
        }
    }

    async fn session_event(
        &self,
        session: &str,
        state: SessionState,
        metadata: Map<String, Value>,
    ) -> Result<(), OutboxError> {
        let event = SessionEvent {
            device_id: self.id.clone(),
            session: session.to_owned(),
            state,
            ts_ms: model::now_ms(),
            metadata,
            received_ms: 0,
        };
        self.push(TopicKind::Session, event.to_json()).await
    }
}

impl DeviceLoop {
    pub async fn run(self, stop: CancellationToken) -> Result<(), OutboxError> {
        let DeviceLoop {
            id,
            mut driver,
            interval,
            outbox,
            view,
            mut controls,
            key,
            sign_telemetry,
        } = self;
        let core = Core {
            id,
            outbox,
            view,
            key,
            sign_telemetry,
        };
        core.run(&mut driver, interval, &mut controls, stop).await
    }
}

impl Core {
    async fn run(
        &self,
        driver: &mut AnyDriver,
        interval: Duration,
        controls: &mut mpsc::Receiver<ControlRequest>,
        stop: CancellationToken,
    ) -> Result<(), OutboxError> {
        let mut ticks = tokio::time::interval(interval);
        // A slow roaster read delays the next sample; it never makes a burst of them.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut connected = false;
        let mut session: Option<Session> = None;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                Some(request) = controls.recv() => {
                    let outcome = apply(driver, &session, &request, &mut connected).await;
                    let _ = request.done.send(outcome);
                    continue;
                }
                () = stop.cancelled() => break,
            }
            if !connected {
                match driver.connect().await {
                    Ok(()) => {
                        connected = true;
                        tracing::info!(device_id = %self.id, "driver connected");
                    }
                    Err(e) => {
                        self.failed(&e);
                        continue;
                    }
                }
            }
            match driver.read().await {
                Ok(Reading::Sample(channels)) => {
                    let s = match session.as_mut() {
                        Some(s) => s,
                        None => {
                            let id = format!("{}-{}", self.id, model::now_ms());
                            let meta = driver.session_start_metadata();
                            self.session_event(&id, SessionState::Start, meta).await?;
                            tracing::info!(device_id = %self.id, session = %id, "session started");
                            session.insert(Session { id, next_seq: 0 })
                        }
                    };
                    let ts = model::now_ms();
                    let point = Point {
                        device_id: self.id.clone(),
                        session: s.id.clone(),
                        seq: s.next_seq,
                        ts_ms: ts,
                        channels: channels.clone(),
                        received_ms: ts,
                    };
                    s.next_seq += 1;
                    let (sid, seq) = (s.id.clone(), s.next_seq);
                    self.push(TopicKind::Telemetry, point.to_json()).await?;
                    crate::metrics::sample(&self.id);
                    self.update(|v| {
                        v.state = "sampling";
                        v.session = Some(sid);
                        v.seq = seq;
                        v.samples += 1;
                        v.last_sample = Some(LastSample { ts, channels });
                    });
                }
                Ok(Reading::RoastEnded) => {
                    if let Some(s) = session.take() {
                        let meta = driver.session_end_metadata();
                        self.session_event(&s.id, SessionState::End, meta).await?;
                        tracing::info!(device_id = %self.id, session = %s.id, points = s.next_seq, "session ended");
                    }
                    self.update(|v| v.session = None);
                }
                Err(e) => {
                    if matches!(e, DriverError::Unreachable(_)) {
                        connected = false;
                    }
                    self.failed(&e);
                }
            }
        }
        if let Some(s) = session.take() {
            let mut meta = Map::new();
            meta.insert("stopped".into(), true.into());
            self.session_event(&s.id, SessionState::End, meta).await?;
        }
        driver.close().await;
        self.update(|v| v.state = "stopped");
        Ok(())
    }

    /// Logged on the transition only: a roaster away for an hour is one warning, not 3600.
    fn failed(&self, e: &DriverError) {
        crate::metrics::driver_error(&self.id);
        let message = e.to_string();
        let mut first = false;
        self.update(|v| {
            first = v.state != "unreachable";
            v.state = "unreachable";
            v.last_error = Some(message.clone());
        });
        if first {
            tracing::warn!(device_id = %self.id, error = %message, "driver failed; retrying every sample interval");
        }
    }
}

async fn apply(
    driver: &mut AnyDriver,
    session: &Option<Session>,
    request: &ControlRequest,
    connected: &mut bool,
) -> Result<(), (Refusal, String)> {
    match session {
        Some(s) if s.id == request.session => {}
        Some(s) => {
            return Err((
                Refusal::WrongSession,
                format!("the device is in session {}", s.id),
            ));
        }
        None => {
            return Err((
                Refusal::WrongSession,
                "the device is between sessions".into(),
            ));
        }
    }
    match driver.apply(request.control, request.value).await {
        Ok(()) => Ok(()),
        Err(e) => {
            if matches!(e, DriverError::Unreachable(_)) {
                *connected = false;
            }
            Err((Refusal::DriverError, e.to_string()))
        }
    }
}
