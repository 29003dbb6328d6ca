//! Publishing sessions over MQTT as devices would: session start, paced points, session end.
//!
//! Each connection gets a task of its own that follows its share of the global pace
//! ([`crate::plan::PaceControl`]), so one connection whose client queue is momentarily full
//! does not hold the others back, and a ramp changes the rate of every connection at once.
//! Every point's `ts` is stamped when it is handed to the MQTT client, which is what ingestion
//! measures publish→commit latency from.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use model::{Point, SessionEvent, SessionState, Topic, TopicKind};
use mqtt::{Publisher, PublisherStats, QoS};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Error;
use crate::ingestion::Latency;
use crate::plan::{Segment, Share, device_id, session_id};
use crate::source::{SessionCurve, Source};

#[derive(Debug, Clone)]
pub struct PublishConfig {
    pub mqtt_url: String,
    /// Publisher connections; sessions are spread over them round-robin.
    pub connections: u32,
    pub connect_timeout: Duration,
    /// How long to wait for the broker's PUBACKs, at the start and at the end of the run.
    pub ack_timeout: Duration,
    /// Sign every message with its device's key (docs/protocol.md, "Signed messages"), as
    /// driver-bridge does with `sign_telemetry`; [`Fleet::device_keys`] are to be registered.
    pub sign: bool,
    /// Where the devices' keys are made and used when signing: a keystore (an HSM through
    /// PKCS#11), one key per device, destroyed after the run ([`Fleet::keys_to_forget`]); in
    /// memory without.
    pub keystore: Option<keys::Config>,
}

/// What was published and what the broker acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PublishOutcome {
    pub connections: u32,
    /// Messages each session published (all sessions publish the same number).
    pub messages_per_session: u64,
    pub messages_published: u64,
    pub points_published: u64,
    /// Telemetry messages the broker PUBACKed. Exact: session starts are acknowledged before
    /// the first point and session ends are published only after the points were counted.
    pub messages_acked: u64,
    pub points_acked: u64,
    pub session_events_published: u64,
    pub session_events_acked: u64,
    /// From the first point due to the last point handed to the MQTT client.
    pub publish_secs: f64,
    /// Points per second over `publish_secs`.
    pub achieved_rate: f64,
    /// Every publish of the run was PUBACKed within the deadline.
    pub all_acked: bool,
    /// From the last point published until the broker had acknowledged them all (or gave up).
    pub ack_wait_secs: f64,
    /// For every telemetry message: from writing it to the network to the broker's PUBACK.
    pub broker_ack: Latency,
    pub reconnects: u64,
    /// The publishers' own totals over the run, session events included.
    pub qos1_requested: u64,
    pub qos1_acked: u64,
}

/// Live counters of a run in progress, for the progress bar and the per-second series.
#[derive(Debug, Clone)]
pub struct Live {
    published: Arc<AtomicU64>,
    stats: Vec<Arc<PublisherStats>>,
    acked_before: u64,
    frame: u64,
}

impl Live {
    pub fn points_published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Points the broker acknowledged so far (after the run, session ends add a few).
    pub fn points_acked(&self) -> u64 {
        let acked: u64 = self
            .stats
            .iter()
            .map(|s| s.acked.load(Ordering::Relaxed))
            .sum();
        (acked.saturating_sub(self.acked_before) * self.frame).min(self.points_published())
    }
}

/// Connected publishers and the sessions they carry, before and while they publish.
pub struct Fleet {
    keystore: Option<keys::Keystore>,
    run_id: String,
    frame: u32,
    config: PublishConfig,
    publishers: Vec<Arc<Publisher>>,
    workers: Vec<Worker>,
    live: Live,
    starts: u64,
    /// Each publisher's publish-to-PUBACK histogram when the run's clock started.
    ack_latency_before: Vec<hdrhistogram::Histogram<u64>>,
}

impl Fleet {
    /// Connects the publishers and prepares every session's readings.
    pub async fn connect(
        run_id: &str,
        sessions: u32,
        frame: u32,
        source: &Source,
        config: PublishConfig,
    ) -> Result<Fleet, Error> {
        let connections = config.connections.clamp(1, sessions);
        let mqtt_config = mqtt::Config {
            url: config.mqtt_url.clone(),
            ..Default::default()
        };
        mqtt_config.validate().map_err(Error::Config)?;
        let keystore = match (&config.keystore, config.sign) {
            (Some(k), true) => Some(
                keys::Keystore::open(k)
                    .map_err(|e| Error::Config(format!("the devices' keystore: {e}")))?,
            ),
            _ => None,
        };
        let published = Arc::new(AtomicU64::new(0));
        let mut publishers = Vec::with_capacity(connections as usize);
        let mut workers = Vec::with_capacity(connections as usize);
        for c in 0..connections {
            let publisher = Arc::new(
                Publisher::connect(&mqtt_config, &client_id(run_id, c), config.connect_timeout)
                    .await?,
            );
            let slots = (0..sessions)
                .filter(|n| n % connections == c)
                .map(|n| {
                    Ok(Slot {
                        device_id: device_id(run_id, n),
                        session: session_id(run_id, n),
                        topic: Topic::format(&device_id(run_id, n), TopicKind::Telemetry),
                        curve: source.session(n)?,
                        // Each of the devices the harness plays has its own.
                        key: match (&keystore, config.sign) {
                            (_, false) => None,
                            (Some(store), true) => Some(DeviceKey::Keystore(
                                store.generate(&device_id(run_id, n)).map_err(|e| {
                                    Error::Config(format!("making a device key: {e}"))
                                })?,
                            )),
                            (None, true) => Some(DeviceKey::Memory(
                                ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
                            )),
                        },
                    })
                })
                .collect::<Result<Vec<Slot>, Error>>()?;
            workers.push(Worker {
                publisher: publisher.clone(),
                share: Share {
                    sessions_here: slots.len() as u32,
                    sessions,
                    frame,
                    total: u64::MAX,
                },
                slots,
                frame,
                published: published.clone(),
                sent: 0,
                last_publish: None,
                acked_before: 0,
            });
            publishers.push(publisher);
        }
        let live = Live {
            published,
            stats: publishers.iter().map(|p| p.stats().clone()).collect(),
            acked_before: 0,
            frame: u64::from(frame),
        };
        Ok(Fleet {
            run_id: run_id.to_owned(),
            frame,
            config,
            publishers,
            workers,
            live,
            starts: 0,
            ack_latency_before: Vec::new(),
            keystore,
        })
    }

    /// Destroys the keys the devices made in the keystore (none in memory), so that a token
    /// does not fill up with a thousand keys a run.
    pub fn keys_to_forget(&self) -> Option<KeysToForget> {
        let store = self.keystore.clone()?;
        let labels = self
            .workers
            .iter()
            .flat_map(|w| &w.slots)
            .map(|s| s.device_id.clone())
            .collect();
        Some(KeysToForget { store, labels })
    }

    /// Publishes every session's start and waits for the broker to acknowledge them all, so
    /// that from here on every PUBACK counted belongs to a telemetry message.
    pub async fn start_sessions(&mut self) -> Result<(), Error> {
        let mut count = 0;
        for w in &self.workers {
            count += publish_session_events(w, SessionState::Start).await?;
        }
        self.starts = count;
        if !flush_all(&self.publishers, self.config.ack_timeout).await {
            return Err(Error::Broker(format!(
                "the broker did not acknowledge the {count} session start messages within {:?}",
                self.config.ack_timeout
            )));
        }
        for w in &mut self.workers {
            w.acked_before = w.acked();
        }
        self.live.acked_before = self.workers.iter().map(|w| w.acked_before).sum();
        self.ack_latency_before = self
            .publishers
            .iter()
            .map(|p| p.stats().ack_latency())
            .collect();
        Ok(())
    }

    /// `(device_id, key_id, base64 public key)` of every device that signs.
    pub fn device_keys(&self) -> Vec<(String, String, String)> {
        use base64::Engine as _;
        self.workers
            .iter()
            .flat_map(|w| &w.slots)
            .filter_map(|s| {
                let public = s.key.as_ref()?.public();
                Some((
                    s.device_id.clone(),
                    s.device_id.clone(),
                    base64::engine::general_purpose::STANDARD.encode(public),
                ))
            })
            .collect()
    }

    pub fn live(&self) -> Live {
        self.live.clone()
    }

    /// Starts publishing at `start`, following `pace`. With `messages_per_session`, each
    /// session publishes exactly that many messages; without, until `stop` is set, after which
    /// every session is topped up to the same count (at most one message more each), so that
    /// verification can expect the same number of points from every session.
    pub fn spawn(
        mut self,
        start: Instant,
        messages_per_session: Option<u64>,
        pace: watch::Receiver<Segment>,
        stop: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<Result<PublishOutcome, Error>> {
        for w in &mut self.workers {
            w.share.total =
                messages_per_session.map_or(u64::MAX, |m| m * u64::from(w.share.sessions_here));
        }
        tokio::spawn(self.run(start, pace, stop))
    }

    async fn run(
        self,
        start: Instant,
        pace: watch::Receiver<Segment>,
        stop: Arc<AtomicBool>,
    ) -> Result<PublishOutcome, Error> {
        let Fleet {
            run_id,
            frame,
            config,
            publishers,
            workers,
            live,
            starts,
            ack_latency_before,
            keystore: _,
        } = self;
        let mut tasks = JoinSet::new();
        for w in workers {
            tasks.spawn(w.run(start, pace.clone(), stop.clone()));
        }
        let mut workers = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            // A failed connection ends the run: dropping `tasks` aborts the others.
            workers
                .push(joined.map_err(|e| Error::Broker(format!("publisher task failed: {e}")))??);
        }
        // Stopped mid-run (a ramp): every session gets the same number of messages.
        let per_session = workers
            .iter()
            .map(|w| w.sent.div_ceil(u64::from(w.share.sessions_here.max(1))))
            .max()
            .unwrap_or(0);
        let mut tasks = JoinSet::new();
        for w in workers {
            tasks.spawn(w.top_up(per_session));
        }
        let mut workers = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            workers
                .push(joined.map_err(|e| Error::Broker(format!("publisher task failed: {e}")))??);
        }
        let last_publish = workers
            .iter()
            .filter_map(|w| w.last_publish)
            .max()
            .unwrap_or(start);
        let publish_secs = last_publish.duration_since(start).as_secs_f64();

        let ack_started = Instant::now();
        let points_flushed = flush_all(&publishers, config.ack_timeout).await;
        let ack_wait_secs = ack_started.elapsed().as_secs_f64();
        let broker_ack = broker_ack_latency(&publishers, &ack_latency_before);
        let acked_now: Vec<u64> = workers.iter().map(Worker::acked).collect();
        // Per connection: what it acknowledged since the starts, at most what it sent (a
        // PUBACK repeated after a reconnect must not count a message twice).
        let messages_acked: u64 = workers
            .iter()
            .zip(&acked_now)
            .map(|(w, now)| now.saturating_sub(w.acked_before).min(w.sent))
            .sum();

        let mut ends = 0;
        for w in &workers {
            ends += publish_session_events(w, SessionState::End).await?;
        }
        let ends_flushed =
            flush_all(&publishers, config.ack_timeout.min(Duration::from_secs(10))).await;
        let ends_acked: u64 = if ends_flushed {
            ends
        } else {
            workers
                .iter()
                .zip(&acked_now)
                .map(|(w, before)| w.acked().saturating_sub(*before))
                .sum::<u64>()
                .min(ends)
        };

        let total = |f: fn(&PublisherStats) -> &AtomicU64| {
            live.stats
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .sum::<u64>()
        };
        let (reconnects, qos1_requested, qos1_acked) = (
            total(|s| &s.reconnects),
            total(|s| &s.requested),
            total(|s| &s.acked),
        );
        let connections = publishers.len() as u32;
        drop(workers);
        for publisher in publishers {
            if let Ok(publisher) = Arc::try_unwrap(publisher) {
                publisher.disconnect().await;
            }
        }
        forget_sessions(&config.mqtt_url, &run_id, connections).await;

        let points_published = live.points_published();
        let frame = u64::from(frame);
        Ok(PublishOutcome {
            connections,
            messages_per_session: per_session,
            messages_published: points_published / frame,
            points_published,
            messages_acked,
            points_acked: messages_acked * frame,
            session_events_published: starts + ends,
            session_events_acked: starts + ends_acked,
            publish_secs,
            achieved_rate: if publish_secs > 0.0 {
                points_published as f64 / publish_secs
            } else {
                0.0
            },
            all_acked: points_flushed && ends_flushed,
            ack_wait_secs,
            broker_ack,
            reconnects,
            qos1_requested,
            qos1_acked,
        })
    }
}

/// Publish-to-PUBACK latency of every telemetry message of the run: each publisher's
/// histogram now minus when the clock started, summed over publishers.
fn broker_ack_latency(
    publishers: &[Arc<Publisher>],
    before: &[hdrhistogram::Histogram<u64>],
) -> Latency {
    let mut total: Option<hdrhistogram::Histogram<u64>> = None;
    for (i, publisher) in publishers.iter().enumerate() {
        let mut h = publisher.stats().ack_latency();
        if let Some(b) = before.get(i) {
            // Cannot fail: a later snapshot of the same histogram holds every earlier count.
            let _ = h.subtract(b);
        }
        match &mut total {
            Some(t) => {
                let _ = t.add(&h);
            }
            None => total = Some(h),
        }
    }
    total.as_ref().and_then(Latency::of).unwrap_or_default()
}

fn client_id(run_id: &str, connection: u32) -> String {
    format!("loadtest-{run_id}-{connection}")
}

struct Slot {
    device_id: String,
    session: String,
    topic: String,
    curve: SessionCurve,
    key: Option<DeviceKey>,
}

/// The devices' keys in a keystore, to destroy once the run is over.
pub struct KeysToForget {
    store: keys::Keystore,
    labels: Vec<String>,
}

impl KeysToForget {
    /// Best effort: a key that cannot be destroyed stays in the token.
    pub async fn forget(self) {
        let KeysToForget { store, labels } = self;
        let _ = tokio::task::spawn_blocking(move || {
            for label in labels {
                let _ = store.destroy(&label);
            }
        })
        .await;
    }
}

/// A simulated device's signing key.
enum DeviceKey {
    Memory(ed25519_dalek::SigningKey),
    /// Made and used inside a keystore (an HSM): every signature is a PKCS#11 call, as on a
    /// device that keeps its key in one.
    Keystore(keys::Key),
}

impl DeviceKey {
    fn public(&self) -> [u8; 32] {
        match self {
            DeviceKey::Memory(k) => k.verifying_key().to_bytes(),
            DeviceKey::Keystore(k) => k.public_key().0,
        }
    }

    /// A signature that cannot be made (the HSM failed) is sent as zeros: ingestion refuses
    /// the message as badly signed, and the run counts its points lost.
    fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer as _;
        match self {
            DeviceKey::Memory(k) => k.sign(message).to_bytes(),
            DeviceKey::Keystore(k) => k.sign(message).unwrap_or([0; 64]),
        }
    }
}

impl Slot {
    /// `body` as this device sends it on `topic`: with its signature line when it signs. The
    /// signature is made after the points' `ts`, so publish→commit includes it.
    fn payload(&self, topic: &str, body: Vec<u8>) -> Vec<u8> {
        match &self.key {
            None => body,
            Some(key) => {
                let sig = key.sign(&model::signed::signed_bytes(topic, &body));
                model::signed::append(
                    &body,
                    &model::signed::MessageSignature {
                        key_id: self.device_id.clone(),
                        sig,
                    },
                )
            }
        }
    }
}

/// One connection's sessions, published round-robin (one message each in turn), so that its
/// sessions advance in lockstep and a session's seqs are published in order.
struct Worker {
    publisher: Arc<Publisher>,
    share: Share,
    slots: Vec<Slot>,
    frame: u32,
    published: Arc<AtomicU64>,
    /// Messages published by this connection.
    sent: u64,
    last_publish: Option<Instant>,
    /// PUBACKs received before the clock started (the session starts).
    acked_before: u64,
}

impl Worker {
    fn acked(&self) -> u64 {
        self.publisher.stats().acked.load(Ordering::Relaxed)
    }

    /// Publishes this connection's share until its total or `stop`.
    async fn run(
        mut self,
        start: Instant,
        pace: watch::Receiver<Segment>,
        stop: Arc<AtomicBool>,
    ) -> Result<Worker, Error> {
        // 1 ms ticks: fine enough that 10 000 points/s leave the client as a steady trickle of
        // ~10 per tick rather than bursts, coarse enough to cost nothing.
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while self.sent < self.share.total && !stop.load(Ordering::Relaxed) {
            ticker.tick().await;
            let segment = *pace.borrow();
            let due = self.share.due(segment.points_due(start.elapsed()));
            while self.sent < due {
                self.publish_next().await?;
            }
        }
        Ok(self)
    }

    /// Publishes until every session of this connection has `per_session` messages.
    async fn top_up(mut self, per_session: u64) -> Result<Worker, Error> {
        let target = per_session * self.slots.len() as u64;
        while self.sent < target {
            self.publish_next().await?;
        }
        Ok(self)
    }

    async fn publish_next(&mut self) -> Result<(), Error> {
        let sessions = self.slots.len() as u64;
        let frame = u64::from(self.frame);
        let slot = &mut self.slots[(self.sent % sessions) as usize];
        let first_seq = (self.sent / sessions) * frame;
        let ts_ms = model::now_ms();
        let points: Vec<Point> = (first_seq..first_seq + frame)
            .map(|seq| Point {
                device_id: slot.device_id.clone(),
                session: slot.session.clone(),
                seq,
                ts_ms,
                channels: slot.curve.next_channels(),
                received_ms: 0,
            })
            .collect();
        let payload = slot.payload(
            &slot.topic,
            match points.as_slice() {
                [one] => one.to_json(),
                many => Point::frame_json(many),
            },
        );
        self.publisher
            .publish(slot.topic.clone(), QoS::AtLeastOnce, payload)
            .await?;
        self.published.fetch_add(frame, Ordering::Relaxed);
        self.sent += 1;
        self.last_publish = Some(Instant::now());
        Ok(())
    }
}

async fn publish_session_events(worker: &Worker, state: SessionState) -> Result<u64, Error> {
    let mut count = 0;
    for slot in &worker.slots {
        let mut metadata = slot.curve.metadata.clone();
        metadata.insert("source".into(), "loadtest".into());
        let event = SessionEvent {
            device_id: slot.device_id.clone(),
            session: slot.session.clone(),
            state,
            ts_ms: model::now_ms(),
            metadata,
            received_ms: 0,
        };
        let topic = Topic::format(&slot.device_id, TopicKind::Session);
        let payload = slot.payload(&topic, event.to_json());
        worker
            .publisher
            .publish(topic, QoS::AtLeastOnce, payload)
            .await?;
        count += 1;
    }
    Ok(count)
}

/// Removes the broker's sessions of the run's client ids: `mqtt::Publisher` keeps a persistent
/// session (right for devices), and the project's broker never expires sessions, so every run
/// would otherwise leave its connections' sessions on the broker for good.
async fn forget_sessions(url: &str, run_id: &str, connections: u32) {
    let config = mqtt::Config {
        url: url.to_owned(),
        ..mqtt::Config::default()
    };
    for c in 0..connections {
        mqtt::forget_session(&config, &client_id(run_id, c), Duration::from_secs(5)).await;
    }
}

/// Waits until every publisher's publishes were acknowledged, all within one `timeout`.
async fn flush_all(publishers: &[Arc<Publisher>], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut all = true;
    for publisher in publishers {
        let left = deadline.saturating_duration_since(Instant::now());
        all &= publisher.flush(left).await;
    }
    all
}
