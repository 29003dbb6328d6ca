//! The command service: control changes (gas, air, drum) proposed by an operator, by analytics
//! or by the mission layer, checked against safety limits, approved by a person who is not the
//! proposer, signed with the service's own key, published to the roaster
//! (`roasters/{device_id}/commands`, QoS 1), acknowledged by the device with a signature of its
//! registered key (`roasters/{device_id}/commands/ack`), and audited in a hash chain.
//!
//! ```text
//! HTTP ─▶ app::App::propose ─(limits, session)─▶ store: proposed ─▶ approve/reject ─▶ approved
//!   sweeper (on approval, every sweep_interval_ms, at start) ─▶ sign ─▶ store: sent ─▶ MQTT
//!   MQTT ack (persistent session) ─▶ verify against device_keys ─▶ store: acked | failed
//!   sweeper ─▶ expired (undecided), timed_out (unanswered)
//! ```
//!
//! State lives in the store only (`store::CommandsStore`): a restart picks up approved commands
//! not yet sent, times out sent ones whose ack never comes, and still matches acks that arrive
//! late — the ack subscriber has a persistent session, so the broker keeps acks published while
//! the service is away. The devices' sessions and current control values come from the live
//! stream through a **clean-session** subscriber (as analytics and event-inference do: a
//! persistent session on the whole stream would make the broker queue all of it while we are
//! away); they are only needed at proposal time. What session messages said — each device's
//! session and roaster model, whose safety limits apply — is also recorded in the store and read
//! back at start, because telemetry after a restart tells the session but never the model; the
//! control values wait for the device's next telemetry point. Not here: what the device does
//! with a command (driver-bridge).

mod api;
mod app;
mod auth;
mod config;
mod error;
mod metrics;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kit::service::{Error, Lifecycle, Service, Spec};
use mqtt::SessionMode;
use secrecy::ExposeSecret as _;
use tokio::sync::{Notify, broadcast};

pub use config::{Config, ControlLimits, LimitsConfig, ModelLimits, Settings, TokenEntry};

use crate::app::App;

/// Command proposals, approval, execution and audit: `simcorp serve command`.
pub struct CommandService;

impl Service for CommandService {
    const SPEC: Spec = kit::spec!("command", "command", 3004);
    type Config = Config;

    async fn run(config: Config, service: Lifecycle) -> Result<(), Error> {
        serve(config, service).await
    }
}

async fn serve(config: Config, mut service: Lifecycle) -> Result<(), Error> {
    let settings = Arc::new(config.command.clone());
    let tokens = auth::Tokens::load(&settings.tokens, settings.tokens_file.as_deref())
        .map_err(|e| Error::start("loading the tokens", std::io::Error::other(e)))?;
    if tokens.len() == 0 {
        tracing::warn!("no tokens configured (command.tokens_file): every request will be refused");
    }
    let keystore = keys::Keystore::open(&config.hsm.under(&config.data_dir))
        .map_err(|e| Error::start("opening the keystore", e))?;
    let key = {
        let (ks, label) = (keystore.clone(), settings.key_label.clone());
        tokio::task::spawn_blocking(move || ks.find_or_generate(&label))
            .await
            .map_err(|e| Error::start("opening the signing key", e))?
            .map_err(|e| Error::start("opening the signing key", e))?
    };
    let store = match &config.postgres.url {
        Some(url) => store::CommandsStore::postgres(url.expose_secret(), &config.postgres).await,
        None => store::CommandsStore::sqlite(&config.data_dir, &config.sqlite).await,
    }
    .map_err(|e| Error::start("opening the commands store", e))?;

    let base_id = config.mqtt.client_id_for(CommandService::SPEC.name);
    let publisher = mqtt::Publisher::connect(
        &config.mqtt,
        &format!("{base_id}-pub"),
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| Error::start("connecting to MQTT", e))?;
    let (changes, _) = broadcast::channel(4096);
    let app = App {
        store: store.clone(),
        settings: settings.clone(),
        devices: Arc::new(Mutex::new(HashMap::new())),
        changes,
        approved: Arc::new(Notify::new()),
        key: key.clone(),
        publisher: Arc::new(publisher),
    };
    let keys_audit = store::NewAudit {
        ts_ms: model::now_ms(),
        actor: "system".into(),
        action: "signing_key_opened".into(),
        subject: format!("command/{}", key.label()),
        reason: keystore.describe(),
        detail: serde_json::json!({ "public_key": key.public_key().to_base64() }).to_string(),
    };
    store
        .audit(&keys_audit)
        .await
        .map_err(|e| Error::start("writing the audit log", e))?;

    // The live stream: sessions and control values, nothing kept while away — but what the
    // session messages said is recorded, so a restart keeps each device's session and model.
    let recorded = store
        .device_sessions()
        .await
        .map_err(|e| Error::start("reading the devices' sessions", e))?;
    app.remember(recorded);
    let stream = mqtt::Subscriber::with_session(
        &config.mqtt,
        format!("{base_id}-stream"),
        vec!["roasters/+/telemetry".into(), "roasters/+/session".into()],
        SessionMode::Clean,
    )
    .map_err(|e| Error::start("setting up MQTT", e))?;
    let stream_conn = stream.connection();
    let stream = {
        let app = app.clone();
        stream.spawn(move |d| {
            let changed = app.on_stream(&d.topic, &d.payload, d.received_ms);
            let store = app.store.clone();
            async move {
                if let Some(s) = changed
                    && let Err(error) = store.put_device_session(&s).await
                {
                    // Only a restart before the next session message would miss it.
                    tracing::warn!(%error, device_id = %s.device_id, "could not record a device's session");
                }
            }
        })
    };
    // Acknowledgements: a persistent session, acked to the broker only once handled.
    let acks = mqtt::Subscriber::new(
        &config.mqtt,
        format!("{base_id}-acks"),
        vec!["roasters/+/commands/ack".into()],
    )
    .map_err(|e| Error::start("setting up MQTT", e))?;
    let acks_conn = acks.connection();
    let acker = acks.acker();
    let acks = {
        let app = app.clone();
        acks.spawn(move |d| {
            let app = app.clone();
            let mut acker = acker.clone();
            async move {
                let device = model::parse_topic(&d.topic)
                    .ok()
                    .map(|t| t.device_id.to_owned());
                if let Some(device) = device {
                    // Retried on the next redelivery if the store failed: not acknowledged.
                    if let Err(error) = app.on_ack(&device, &d.payload).await {
                        tracing::error!(%error, "could not handle an acknowledgement");
                        return;
                    }
                }
                if let Some(token) = d.ack {
                    acker.ack(vec![token]).await;
                }
            }
        })
    };
    {
        let app = app.clone();
        let every = Duration::from_millis(settings.sweep_interval_ms);
        service.spawn("sweeper", move |stop| async move {
            loop {
                if let Err(error) = app.sweep().await {
                    tracing::warn!(%error, "sweep failed; trying again");
                }
                tokio::select! {
                    () = stop.cancelled() => return Ok::<(), Error>(()),
                    () = app.approved.notified() => {}
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
    }
    {
        let readiness = service.readiness();
        let (s, a) = (stream_conn.clone(), acks_conn.clone());
        readiness.require("mqtt", move || s.is_subscribed() && a.is_subscribed());
    }
    service.serve(api::router(api::Api { app, tokens }));
    tracing::info!(
        key = %key.label(),
        keystore = %keystore.describe(),
        store = if config.postgres.url.is_some() { "postgres" } else { "sqlite" },
        "command started"
    );
    let outcome = service.wait().await;
    stream.finish(Duration::from_secs(5)).await;
    acks.finish(Duration::from_secs(5)).await;
    store.close().await;
    service.stop(outcome).await
}
