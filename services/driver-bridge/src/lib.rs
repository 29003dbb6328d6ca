//! The driver-bridge service: the hardware abstraction between roasters and the platform. Each
//! configured device has a driver ([`driver::Driver`]: a live simulation that obeys commands,
//! or a controller over Modbus TCP); the bridge samples it, publishes the device contract
//! (session start and end, telemetry) through an on-disk outbox that survives broker outages
//! ([`outbox`], [`sender`]), and executes signed commands addressed to it, acknowledging each
//! with a signature by the device's own key ([`commands`]).
//!
//! Not here: deciding what to command (the command service) or storing telemetry (ingestion).

pub mod api;
pub mod commands;
mod config;
pub mod device;
pub mod driver;
mod metrics;
pub mod modbus;
pub mod sender;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kit::service::{Error, Lifecycle, Service, Spec};
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::{Config, DeviceConfig, DriverKind, Settings, SimSettings, TrustedKey};

use crate::commands::{Commands, Identity, TrustedKeys};
use crate::device::{DeviceHandle, DeviceLoop, DeviceView};
use crate::driver::AnyDriver;
use crate::sender::SenderState;
use store::outbox::Outbox;

/// Roasters <-> MQTT: `simcorp serve driver-bridge`.
pub struct DriverBridge;

/// What the API reads.
pub struct Bridge {
    devices: Vec<Arc<DeviceHandle>>,
    outbox: Outbox,
}

impl Bridge {
    fn views(&self) -> Vec<DeviceView> {
        let depth = self.outbox.depth();
        self.devices
            .iter()
            .map(|d| {
                let mut v = d.view();
                v.buffer_depth = depth;
                v
            })
            .collect()
    }
}

impl Service for DriverBridge {
    const SPEC: Spec = kit::spec!("driver-bridge", "driver_bridge", 4004);
    type Config = Config;

    /// `simcorp up` drives one simulated roaster, so that a newcomer can command it and watch
    /// the curve answer (the command service's `command_url` is for `simcorp up` to add).
    fn local_defaults() -> Vec<(String, figment::value::Value)> {
        let demo = DeviceConfig {
            id: "sim-bridge-1".into(),
            driver: DriverKind::Sim,
            sim: SimSettings::default(),
            modbus: None,
            key_label: None,
        };
        match figment::value::Value::serialize(vec![demo]) {
            Ok(devices) => vec![("driver_bridge.devices".into(), devices)],
            Err(_) => Vec::new(),
        }
    }

    async fn run(config: Config, mut service: Lifecycle) -> Result<(), Error> {
        let settings = config.driver_bridge.clone();
        let outbox = Outbox::open(
            &config.data_dir.join("driver-bridge.db"),
            settings.outbox_max_messages,
        )
        .await
        .map_err(|e| Error::start("opening the outbox", e))?;
        crate::metrics::outbox_depth(outbox.depth());
        let keystore = keys::Keystore::open(&config.hsm.under(&config.data_dir))
            .map_err(|e| Error::start("opening the keystore", e))?;
        tracing::info!(keystore = %keystore.describe(), devices = settings.devices.len(), "driver-bridge starting");

        let trusted = TrustedKeys::default();
        for k in &settings.trusted_keys {
            let key = keys::PublicKey::from_base64(&k.public_key)
                .map_err(|e| Error::start("reading driver_bridge.trusted_keys", e))?;
            trusted.insert(k.key_id.clone(), key);
        }

        let interval = Duration::from_millis(settings.sample_interval_ms);
        let mut handles = HashMap::new();
        let mut identities = HashMap::new();
        let mut loops = Vec::new();
        let mut ordered = Vec::new();
        for d in &settings.devices {
            let label = d.key_label();
            let key = keystore
                .find_or_generate(&label)
                .map_err(|e| Error::start("finding or generating a device key", e))?;
            let public_key = key.public_key().to_base64();
            tracing::info!(device_id = %d.id, driver = d.driver.as_str(), key_id = %label, %public_key, "device identity");
            let driver = AnyDriver::new(d, settings.sample_interval_ms)
                .map_err(|e| Error::start("setting up a driver", e))?;
            let view = Arc::new(Mutex::new(DeviceView {
                id: d.id.clone(),
                driver: d.driver.as_str(),
                key_id: label,
                public_key,
                keystore: keystore.describe(),
                state: "starting",
                registered: settings.command_url.as_ref().map(|_| false),
                ..DeviceView::default()
            }));
            let (tx, rx) = mpsc::channel(16);
            let handle = Arc::new(DeviceHandle {
                id: d.id.clone(),
                view: view.clone(),
                controls: tx,
            });
            handles.insert(d.id.clone(), handle.clone());
            ordered.push(handle);
            identities.insert(d.id.clone(), Identity { key: key.clone() });
            loops.push(DeviceLoop {
                id: d.id.clone(),
                driver,
                interval,
                outbox: outbox.clone(),
                view,
                controls: rx,
                key,
                sign_telemetry: settings.sign_telemetry,
            });
        }

        // The sender outlives the device loops, so that their session ends go out on a stop.
        let sender_state = Arc::new(SenderState::default());
        let sender_stop = CancellationToken::new();
        let sender = tokio::spawn(sender::run(
            config.mqtt.clone(),
            format!("{}-out", config.mqtt.client_id_for("driver-bridge")),
            outbox.clone(),
            sender_state.clone(),
            sender_stop.clone(),
            Duration::from_secs(5),
        ));
        {
            let s = sender_state.clone();
            service.readiness().observe("mqtt", move || {
                s.connected.load(std::sync::atomic::Ordering::Acquire)
            });
        }

        for l in loops {
            let name = format!("device {}", l.id);
            service.spawn(&name, move |stop| l.run(stop));
        }

        let commands = Arc::new(Commands {
            devices: handles.clone(),
            identities,
            trusted: trusted.clone(),
            outbox: outbox.clone(),
        });
        let filters: Vec<String> = settings
            .devices
            .iter()
            .map(|d| model::Topic::format(&d.id, model::TopicKind::Commands))
            .collect();
        let subscriber = if filters.is_empty() {
            None
        } else {
            let sub = mqtt::Subscriber::new(
                &config.mqtt,
                format!("{}-commands", config.mqtt.client_id_for("driver-bridge")),
                filters,
            )
            .map_err(|e| Error::start("setting up MQTT", e))?;
            let acker = sub.acker();
            let handle = sub.spawn(move |delivery| {
                let (commands, mut acker) = (commands.clone(), acker.clone());
                async move {
                    commands.handle(&delivery.topic, &delivery.payload).await;
                    if let Some(token) = delivery.ack {
                        acker.ack(vec![token]).await;
                    }
                }
            });
            let connection = handle.connection();
            service
                .readiness()
                .observe("commands", move || connection.is_subscribed());
            Some(handle)
        };

        if let Some(url) = settings.command_url.clone() {
            let (stopping, trusted) = (service.stopping(), trusted.clone());
            let token = settings
                .enrollment_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned());
            let devices: Vec<Arc<DeviceHandle>> = ordered.clone();
            service.spawn("the command service", move |_| {
                enroll(url, token, devices, trusted, stopping)
            });
        }

        let bridge = Arc::new(Bridge {
            devices: ordered,
            outbox: outbox.clone(),
        });
        service.serve(api::router(bridge));
        let outcome = service.wait().await;
        let result = service.stop(outcome).await;
        if let Some(s) = subscriber {
            s.finish(Duration::from_secs(5)).await;
        }
        sender_stop.cancel();
        match sender.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the outbox sender failed"),
            Err(e) => tracing::error!(error = %e, "the outbox sender panicked"),
        }
        if outbox.depth() > 0 {
            tracing::warn!(
                backlog = outbox.depth(),
                "stopping with messages in the outbox; they are sent after the next start"
            );
        }
        outbox.close().await;
        result
    }
}

#[derive(Deserialize)]
struct CommandKey {
    key_id: String,
    public_key: String,
}

/// Fetches the command service's keys and registers the devices' keys with it, retrying until
/// both worked or the service stops. Sampling never waits for this.
async fn enroll(
    url: String,
    token: Option<String>,
    devices: Vec<Arc<DeviceHandle>>,
    trusted: TrustedKeys,
    stopping: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let base = url.trim_end_matches('/').to_owned();
    let mut have_keys = false;
    let mut pending: Vec<Arc<DeviceHandle>> = devices;
    let mut delay = Duration::from_secs(1);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        if !have_keys {
            match fetch_keys(&http, &base).await {
                Ok(keys) => {
                    for (id, key) in keys {
                        trusted.insert(id, key);
                    }
                    have_keys = true;
                    tracing::info!(
                        trusted = trusted.count(),
                        "command keys fetched from the command service"
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, attempt, "cannot fetch command keys yet; retrying")
                }
            }
        }
        let mut still = Vec::new();
        for d in pending {
            let v = d.view();
            let body = serde_json::json!({
                "key_id": v.key_id,
                "public_key": v.public_key,
                "keystore": v.keystore,
            });
            let mut req = http
                .post(format!("{base}/devices/{}/keys", v.id))
                .json(&body);
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            match req.send().await {
                Ok(r) if r.status().is_success() || r.status() == reqwest::StatusCode::CONFLICT => {
                    tracing::info!(device_id = %v.id, key_id = %v.key_id, "device key registered with the command service");
                    d.update(|v| v.registered = Some(true));
                }
                Ok(r) => {
                    tracing::warn!(device_id = %v.id, status = %r.status(), attempt, "the command service refused the device key; retrying");
                    still.push(d);
                }
                Err(error) => {
                    tracing::warn!(device_id = %v.id, %error, attempt, "cannot register the device key yet; retrying");
                    still.push(d);
                }
            }
        }
        pending = still;
        if have_keys && pending.is_empty() {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopping.cancelled() => return Ok(()),
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

async fn fetch_keys(
    http: &reqwest::Client,
    base: &str,
) -> Result<Vec<(String, keys::PublicKey)>, String> {
    let r = http
        .get(format!("{base}/keys/command"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("GET /keys/command: {}", r.status()));
    }
    let keys: Vec<CommandKey> = r.json().await.map_err(|e| e.to_string())?;
    keys.into_iter()
        .map(|k| {
            keys::PublicKey::from_base64(&k.public_key)
                .map(|p| (k.key_id, p))
                .map_err(|e| e.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_local_defaults_load_as_one_simulated_roaster() {
        let mut sources = kit::config::Sources::default();
        let defaults = DriverBridge::local_defaults();
        assert_eq!(defaults.len(), 1);
        for (key, value) in defaults {
            sources = sources.set(&key, value);
        }
        let figment = kit::config::figment::<Config>(&sources).unwrap();
        let (config, _) = kit::service::load::<DriverBridge>(&figment).unwrap();
        let devices = &config.driver_bridge.devices;
        assert_eq!(devices.len(), 1);
        assert_eq!(
            (devices[0].id.as_str(), devices[0].driver),
            ("sim-bridge-1", DriverKind::Sim)
        );
    }
}
