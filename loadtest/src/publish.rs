//! Publishing a [`Plan`] over MQTT as devices would: session start, paced points, session end.
//!
//! Each connection gets a task of its own with its own [`Schedule`] (its share of the rate), so
//! one connection whose client queue is momentarily full does not hold the others back.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use model::{Point, SessionEvent, SessionState, Topic, TopicKind};
use mqtt::{Publisher, PublisherStats, QoS};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::Error;
use crate::plan::{Plan, Schedule, channels};

#[derive(Debug, Clone)]
pub struct PublishConfig {
    pub mqtt_url: String,
    /// Publisher connections; sessions are spread over them round-robin.
    pub connections: u32,
    pub connect_timeout: Duration,
    /// How long to wait for the broker's PUBACKs, at the start and at the end of the run.
    pub ack_timeout: Duration,
    /// How often to print a status line on stderr; `None` for silence (tests).
    pub progress_every: Option<Duration>,
}

/// What was published and what the broker acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PublishOutcome {
    pub connections: u32,
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
    pub reconnects: u64,
    /// The publishers' own totals over the run, session events included.
    pub qos1_requested: u64,
    pub qos1_acked: u64,
}

#[derive(Clone)]
struct Slot {
    n: u32,
    device_id: String,
    session: String,
    topic: String,
}

/// Publishes the whole plan and waits for the broker's acknowledgements.
pub async fn publish(plan: &Plan, config: &PublishConfig) -> Result<PublishOutcome, Error> {
    let connections = config.connections.clamp(1, plan.sessions);
    let mqtt_config = mqtt::Config {
        url: config.mqtt_url.clone(),
        ..Default::default()
    };
    mqtt_config.validate().map_err(Error::Config)?;

    let mut publishers = Vec::with_capacity(connections as usize);
    for c in 0..connections {
        let client_id = format!("loadtest-{}-{c}", plan.run_id);
        let publisher =
            Publisher::connect(&mqtt_config, &client_id, config.connect_timeout).await?;
        publishers.push(Arc::new(publisher));
    }
    let stats: Vec<Arc<PublisherStats>> = publishers.iter().map(|p| p.stats().clone()).collect();
    let slots: Vec<Vec<Slot>> = (0..connections)
        .map(|c| {
            plan.sessions_of_connection(c, connections)
                .into_iter()
                .map(|n| Slot {
                    n,
                    device_id: plan.device_id(n),
                    session: plan.session_id(n),
                    topic: Topic::format(&plan.device_id(n), TopicKind::Telemetry),
                })
                .collect()
        })
        .collect();

    // Starts are acknowledged before the clock starts, so that from here on every PUBACK
    // counted belongs to a telemetry message.
    let starts = publish_session_events(&publishers, &slots, SessionState::Start).await?;
    if !flush_all(&publishers, config.ack_timeout).await {
        return Err(Error::Broker(format!(
            "the broker did not acknowledge the {starts} session start messages within {:?}",
            config.ack_timeout
        )));
    }
    let baseline: Vec<u64> = stats
        .iter()
        .map(|s| s.acked.load(Ordering::Relaxed))
        .collect();

    let published = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let _progress = config.progress_every.map(|every| {
        AbortOnDrop(tokio::spawn(report_progress(
            every,
            start,
            published.clone(),
            stats.clone(),
            baseline.iter().sum(),
        )))
    });

    let mut workers = JoinSet::new();
    for (publisher, slots) in publishers.iter().zip(slots.iter()) {
        let worker = Worker {
            publisher: publisher.clone(),
            schedule: plan.schedule_for(slots.len() as u32),
            slots: slots.clone(),
            frame: plan.frame,
            points_per_session: plan.points_per_session(),
            published: published.clone(),
        };
        workers.spawn(worker.run(start));
    }
    let mut last_publish = start;
    while let Some(joined) = workers.join_next().await {
        // A failed connection ends the run: dropping `workers` aborts the others.
        let finished =
            joined.map_err(|e| Error::Broker(format!("publisher task failed: {e}")))??;
        last_publish = last_publish.max(finished);
    }
    let publish_secs = last_publish.duration_since(start).as_secs_f64();

    let ack_started = Instant::now();
    let points_flushed = flush_all(&publishers, config.ack_timeout).await;
    let ack_wait_secs = ack_started.elapsed().as_secs_f64();
    let mut messages_acked = 0;
    for ((s, base), slots) in stats.iter().zip(&baseline).zip(&slots) {
        let sent_here = plan.messages_per_session * slots.len() as u64;
        let acked_here = s.acked.load(Ordering::Relaxed).saturating_sub(*base);
        // A PUBACK repeated after a reconnect must not count a message twice.
        messages_acked += acked_here.min(sent_here);
    }
    let after_points: Vec<u64> = stats
        .iter()
        .map(|s| s.acked.load(Ordering::Relaxed))
        .collect();

    let ends = publish_session_events(&publishers, &slots, SessionState::End).await?;
    let ends_flushed =
        flush_all(&publishers, config.ack_timeout.min(Duration::from_secs(10))).await;
    let ends_acked: u64 = if ends_flushed {
        ends
    } else {
        stats
            .iter()
            .zip(&after_points)
            .map(|(s, before)| s.acked.load(Ordering::Relaxed).saturating_sub(*before))
            .sum::<u64>()
            .min(ends)
    };

    let total = |f: fn(&PublisherStats) -> &AtomicU64| {
        stats
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let (reconnects, qos1_requested, qos1_acked) = (
        total(|s| &s.reconnects),
        total(|s| &s.requested),
        total(|s| &s.acked),
    );
    for publisher in publishers {
        if let Ok(publisher) = Arc::try_unwrap(publisher) {
            publisher.disconnect().await;
        }
    }
    let client_ids: Vec<String> = (0..connections)
        .map(|c| format!("loadtest-{}-{c}", plan.run_id))
        .collect();
    forget_sessions(&config.mqtt_url, &client_ids).await;

    let points_published = published.load(Ordering::Relaxed);
    let frame = u64::from(plan.frame);
    Ok(PublishOutcome {
        connections,
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
        reconnects,
        qos1_requested,
        qos1_acked,
    })
}

struct Worker {
    publisher: Arc<Publisher>,
    schedule: Schedule,
    slots: Vec<Slot>,
    frame: u32,
    points_per_session: u64,
    published: Arc<AtomicU64>,
}

impl Worker {
    /// Publishes this connection's share; returns when its last point was handed to the client.
    async fn run(self, start: Instant) -> Result<Instant, Error> {
        let sessions = self.slots.len() as u64;
        let frame = u64::from(self.frame);
        // 1 ms ticks: fine enough that 10 000 points/s leave the client as a steady trickle of
        // ~10 per tick rather than bursts, coarse enough to cost nothing.
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut sent = 0u64;
        let mut frame_points = Vec::with_capacity(self.frame as usize);
        while sent < self.schedule.total {
            ticker.tick().await;
            let due = self.schedule.due(start.elapsed());
            while sent < due {
                // Round-robin over this connection's sessions, one message each in turn.
                let slot = &self.slots[(sent % sessions) as usize];
                let first_seq = (sent / sessions) * frame;
                let ts_ms = model::now_ms();
                frame_points.clear();
                frame_points.extend((first_seq..first_seq + frame).map(|seq| Point {
                    device_id: slot.device_id.clone(),
                    session: slot.session.clone(),
                    seq,
                    ts_ms,
                    channels: channels(seq as f64 / self.points_per_session as f64, slot.n),
                    received_ms: 0,
                }));
                let payload = match frame_points.as_slice() {
                    [one] => one.to_json(),
                    many => Point::frame_json(many),
                };
                self.publisher
                    .publish(slot.topic.clone(), QoS::AtLeastOnce, payload)
                    .await?;
                self.published.fetch_add(frame, Ordering::Relaxed);
                sent += 1;
            }
        }
        Ok(Instant::now())
    }
}

async fn publish_session_events(
    publishers: &[Arc<Publisher>],
    slots: &[Vec<Slot>],
    state: SessionState,
) -> Result<u64, Error> {
    let mut count = 0;
    for (publisher, slots) in publishers.iter().zip(slots) {
        for slot in slots {
            let mut metadata = serde_json::Map::new();
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
            publisher
                .publish(topic, QoS::AtLeastOnce, event.to_json())
                .await?;
            count += 1;
        }
    }
    Ok(count)
}

/// Removes the broker's sessions of these client ids: `mqtt::Publisher` keeps a persistent
/// session (right for devices), and the project's broker never expires sessions, so every run
/// would otherwise leave its connections' sessions on the broker for good.
async fn forget_sessions(url: &str, client_ids: &[String]) {
    let config = mqtt::Config {
        url: url.to_owned(),
        ..mqtt::Config::default()
    };
    for id in client_ids {
        mqtt::forget_session(&config, id, Duration::from_secs(5)).await;
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

/// Stops the progress lines however `publish` ends, error included.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn report_progress(
    every: Duration,
    start: Instant,
    published: Arc<AtomicU64>,
    stats: Vec<Arc<PublisherStats>>,
    acked_before: u64,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut last = 0u64;
    loop {
        ticker.tick().await;
        let now = published.load(Ordering::Relaxed);
        let acked = stats
            .iter()
            .map(|s| s.acked.load(Ordering::Relaxed))
            .sum::<u64>()
            .saturating_sub(acked_before);
        let elapsed = start.elapsed().as_secs_f64();
        let _ = writeln!(
            std::io::stderr(),
            "[loadtest] {elapsed:6.1} s  published {now} points ({:.0}/s now, {:.0}/s overall), {acked} messages acked",
            (now - last) as f64 / every.as_secs_f64(),
            now as f64 / elapsed.max(1e-9),
        );
        last = now;
    }
}
