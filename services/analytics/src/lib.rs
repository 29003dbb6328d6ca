//! The analytics service: understands each roast against its reference profile — its summary
//! (phases, development ratio, TP, RoR at first crack and drop, BT area, weight loss), its
//! variance from the reference aligned at CHARGE, live predictions of first crack and drop —
//! keeps the reference profiles, and serves the live roast view, the page a roaster keeps open.
//!
//! ```text
//! broker ─▶ mqtt::Subscriber ─▶ live::Sessions ──▶ broadcast ──▶ GET /live (SSE) ─▶ the page (GET /)
//!          (clean session:      (readings, RoR,      (points, events,
//!           telemetry, session,  events, predictions) predictions)
//!           events)                    │
//!                                      ▼
//!  GET /sessions/{s}/summary|variance|predictions|curve ◀─ roasts::App ─▶ history (PostgreSQL
//!                                                              │          or ingestion's API)
//!                                                              └──▶ store::AnalyticsStore
//!                                                                   (reference profiles)
//! ```
//!
//! Like event-inference it is a consumer of the whole stream, and subscribes with a **clean
//! session** for the same reason (a persistent session left behind makes the broker queue every
//! message for it and stalls every device's PUBACK, docs/events.md). It keeps nothing of a live
//! roast that the store does not also have: a session it met mid-roast, or that ran while it was
//! away, is read back from the store when asked for. Its own state is the reference profiles.
//!
//! The analyses themselves are the pure `roast` crate's (`summarize`, `variance`, `predict`,
//! `Profile`), so reports and evaluations later compute the same figures from the same data.

mod api;
mod config;
mod corrections;
mod live;
mod metrics;
mod profiles;
mod roasts;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kit::service::{Error, Lifecycle, Service, Spec};
use model::{Limits, TopicKind, decode_event, decode_session, decode_telemetry};
use mqtt::{Delivery, SessionMode};
use secrecy::ExposeSecret as _;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

pub use config::{Config, CorrectionSettings, Settings};

use crate::live::{Input, Sessions};
use crate::roasts::App;

/// Roast analytics and the live roast view: `simcorp serve analytics`.
pub struct Analytics;

impl Service for Analytics {
    const SPEC: Spec = kit::spec!("analytics", "analytics", 4006);
    type Config = Config;

    async fn run(config: Config, service: Lifecycle) -> Result<(), Error> {
        analyse(config, service).await
    }
}

async fn analyse(config: Config, mut service: Lifecycle) -> Result<(), Error> {
    let settings = Arc::new(config.analytics.clone());
    let store = match &config.postgres.url {
        Some(url) => store::AnalyticsStore::postgres(url.expose_secret(), &config.postgres).await,
        None => store::AnalyticsStore::sqlite(&config.data_dir, &config.sqlite).await,
    }
    .map_err(|e| Error::start("opening the analytics store", e))?;
    let history = history::Source::configured(&config.postgres, &settings.history_url)
        .map_err(|e| Error::start("connecting to PostgreSQL", e))?;

    let (updates, _) = broadcast::channel(4096);
    let mut sessions = Sessions::new(settings.clone(), updates.clone());
    if settings.corrections.enabled {
        let (tx, rx) = mpsc::channel(256);
        sessions = sessions.with_corrections(tx);
        let corrections = settings.corrections.clone();
        service.spawn("corrections", move |stop| {
            corrections::propose(rx, corrections, stop)
        });
    }
    let app = App {
        store: store.clone(),
        history: history.clone(),
        live: Arc::new(Mutex::new(sessions)),
        updates,
        settings: settings.clone(),
    };
    match app.seed_sim_twin().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(profiles = n, "stored the sim-twin reference profiles"),
        Err(error) => tracing::warn!(%error, "could not store the sim-twin reference profiles"),
    }

    let client_id = config.mqtt.client_id_for(Analytics::SPEC.name);
    let filters = [
        "roasters/+/telemetry",
        "roasters/+/session",
        "roasters/+/events",
    ]
    .map(String::from)
    .to_vec();
    let subscriber = mqtt::Subscriber::with_session(
        &config.mqtt,
        client_id.clone(),
        filters,
        SessionMode::Clean,
    )
    .map_err(|e| Error::start("setting up MQTT", e))?;
    let connection = subscriber.connection();
    let (tx, rx) = mpsc::channel::<Input>(8192);
    let subscription = subscriber.spawn(move |delivery| {
        let input = decode(delivery);
        let tx = tx.clone();
        async move {
            if let Some(input) = input {
                // Closed only when stopping.
                let _ = tx.send(input).await;
            }
        }
    });
    {
        let app = app.clone();
        service.spawn("live sessions", move |stop| watch(rx, app, stop));
    }
    {
        let readiness = service.readiness();
        let c = connection.clone();
        readiness.require("mqtt", move || c.is_subscribed());
    }
    service.serve(api::router(app));
    tracing::info!(
        %client_id,
        mqtt = %config.mqtt.url,
        store = if config.postgres.url.is_some() { "postgres" } else { "sqlite" },
        history = history.as_ref().map_or("none", |h| h.describe()),
        corrections = if settings.corrections.enabled { settings.corrections.command_url.as_str() } else { "off" },
        "analytics started"
    );

    let outcome = service.wait().await;
    subscription.finish(Duration::from_secs(5)).await;
    store.close().await;
    service.stop(outcome).await
}

/// What a delivery says; anything undecodable is ingestion's business (it dead-letters it).
fn decode(delivery: Delivery) -> Option<Input> {
    let topic = model::parse_topic(&delivery.topic).ok()?;
    let limits = Limits::default();
    let (device, payload, received) = (topic.device_id, &delivery.payload, delivery.received_ms);
    match topic.kind {
        TopicKind::Telemetry => decode_telemetry(device, payload, received, &limits)
            .ok()
            .map(|d| Input::Points(d.points)),
        TopicKind::Session => decode_session(device, payload, received, &limits)
            .ok()
            .map(Input::Session),
        TopicKind::Events => decode_event(device, payload, received, &limits)
            .ok()
            .map(Input::Event),
        _ => None,
    }
}

/// The live task: inputs into the sessions; references looked up outside the lock.
async fn watch(
    mut rx: mpsc::Receiver<Input>,
    app: App,
    stop: CancellationToken,
) -> Result<(), Error> {
    let mut evict = tokio::time::interval(Duration::from_secs(60));
    loop {
        let input = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            _ = evict.tick() => {
                let evicted = app.live.lock().map_err(|_| poisoned())?.evict_idle(Instant::now());
                if evicted > 0 {
                    tracing::info!(sessions = evicted, "forgot live sessions that went quiet");
                }
                continue;
            }
            input = rx.recv() => match input {
                Some(input) => input,
                None => return Ok(()),
            },
        };
        let todo = app.live.lock().map_err(|_| poisoned())?.handle(input);
        if !todo.resolve.is_empty() {
            let app = app.clone();
            // A slow store must not hold up the stream.
            tokio::spawn(async move { app.resolve(todo.resolve).await });
        }
    }
}

fn poisoned() -> Error {
    Error::Task {
        task: "live sessions".into(),
        reason: "the live sessions' lock was poisoned by a panic".into(),
    }
}
