use std::collections::BTreeMap;

use kit::service::HttpSettings;
use roast::Priors;
use serde::{Deserialize, Serialize};

/// event-inference's configuration: `[event_inference]` plus the shared `[mqtt]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    pub mqtt: mqtt::Config,
    /// Where past readings are read back from after a restart, when set (else
    /// `event_inference.catch_up_url`). Only read: event-inference writes nothing there.
    pub postgres: store::PostgresConfig,
    pub event_inference: Settings,
}

/// `[event_inference]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    /// Where a session's past readings are read after a restart when `[postgres]` is not set
    /// (ingestion's HTTP API), so that sessions that ran or began while this service was away
    /// still get their events. Empty, without `[postgres]`: no catch-up (a session joined
    /// mid-roast then misses the events before it).
    pub catch_up_url: String,
    /// Readings a second, live and read back together, that catching up after an outage keeps
    /// within: it reads back what the live stream leaves of this (at least a tenth of it), so
    /// that under full load it takes only a share of the store from ingestion (5,000/s beside
    /// 10,000 live) and once the stream quiets it finishes sooner.
    pub catch_up_points_per_sec: u32,
    /// How far back the sweep at start looks for sessions without a DROP yet.
    pub catch_up_window_secs: u64,
    /// Replicas and this one's index: each replica takes the devices whose id hashes to its
    /// index. Not a shared subscription: the broker would hand one session's messages to
    /// several replicas, and a session's events need all of its readings in one place.
    pub replicas: u32,
    pub replica: u32,
    /// Roaster models: where each one's probe reads dry end and first crack. A session names
    /// its model in its start message (`"roaster_model": "skywalker"`); the default otherwise.
    pub models: BTreeMap<String, Priors>,
    pub default_model: String,
    /// A session that sends nothing for this long is forgotten (without a DROP: nothing showed
    /// one). Roasters that lose power never send their end.
    pub idle_timeout_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http: HttpSettings::default(),
            catch_up_url: "http://127.0.0.1:4001".into(),
            catch_up_points_per_sec: 15_000,
            catch_up_window_secs: 3600,
            replicas: 1,
            replica: 0,
            models: builtin_models(),
            default_model: "standard".into(),
            idle_timeout_secs: 3600,
        }
    }
}

/// `standard`: a shop drum roaster's bean probe (the simulated roasters). `skywalker`: the
/// small electric roaster of `testdata/roast-logs/skywalker`, whose probe reads 20 °C lower
/// at first crack (fitted to its ten logs).
pub fn builtin_models() -> BTreeMap<String, Priors> {
    BTreeMap::from([
        ("standard".to_owned(), Priors::STANDARD),
        (
            "skywalker".to_owned(),
            Priors {
                dry_end_bt: 146.5,
                fc_start_bt: 171.5,
            },
        ),
    ])
}

impl Settings {
    /// The priors of a session whose start named `model` (or none).
    pub fn priors(&self, model: Option<&str>) -> Priors {
        model
            .and_then(|m| self.models.get(m))
            .or_else(|| self.models.get(&self.default_model))
            .copied()
            .unwrap_or_default()
    }

    /// Whether this replica handles `device_id`.
    pub fn owns(&self, device_id: &str) -> bool {
        self.replicas <= 1 || fnv1a(device_id) % u64::from(self.replicas) == u64::from(self.replica)
    }
}

/// The roaster model a session names in its start message (`"roaster_model": "skywalker"`),
/// read the same from a live message and from a stored session record.
pub(crate) fn roaster_model(
    metadata: &serde_json::Map<String, serde_json::Value>,
) -> Option<String> {
    metadata
        .get("roaster_model")
        .and_then(|m| m.as_str())
        .map(str::to_owned)
}

/// FNV-1a: stable across processes and versions (std's hasher is seeded per process).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl kit::config::Validate for Config {
    fn validate(&self) -> Result<(), String> {
        self.mqtt.validate()?;
        let s = &self.event_inference;
        if s.replicas == 0 || s.replica >= s.replicas {
            return Err(format!(
                "event_inference.replica {} must be below event_inference.replicas {} (at least 1)",
                s.replica, s.replicas
            ));
        }
        for (name, priors) in &s.models {
            priors
                .validate()
                .map_err(|e| format!("event_inference.models.{name}: {e}"))?;
        }
        if !s.models.contains_key(&s.default_model) {
            return Err(format!(
                "event_inference.default_model {:?} is not one of event_inference.models ({})",
                s.default_model,
                s.models.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if !s.catch_up_url.is_empty() && !s.catch_up_url.starts_with("http") {
            return Err(format!(
                "event_inference.catch_up_url {:?} must be an http(s) URL, or empty",
                s.catch_up_url
            ));
        }
        if s.catch_up_points_per_sec < 10 {
            return Err("event_inference.catch_up_points_per_sec must be at least 10".into());
        }
        if s.idle_timeout_secs == 0 {
            return Err("event_inference.idle_timeout_secs must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kit::config::Validate as _;

    use super::*;

    #[test]
    fn replicas_split_the_devices_between_them() {
        let mut s = Settings {
            replicas: 3,
            ..Settings::default()
        };
        let devices: Vec<String> = (0..300).map(|i| format!("roaster-{i}")).collect();
        let mut counts = [0; 3];
        for d in &devices {
            let owners: Vec<u32> = (0..3)
                .filter(|&r| {
                    s.replica = r;
                    s.owns(d)
                })
                .collect();
            assert_eq!(owners.len(), 1, "{d}: exactly one replica");
            counts[owners[0] as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 70), "{counts:?}");
    }

    #[test]
    fn a_session_gets_its_models_priors_or_the_default() {
        let s = Settings::default();
        assert_eq!(s.priors(Some("skywalker")).fc_start_bt, 171.5);
        assert_eq!(s.priors(Some("unknown")), Priors::STANDARD);
        assert_eq!(s.priors(None), Priors::STANDARD);
    }

    #[test]
    fn bad_settings_are_named() {
        let mut c = Config::default();
        c.event_inference.default_model = "nope".into();
        assert!(c.validate().unwrap_err().contains("default_model"));
        let mut c = Config::default();
        c.event_inference.replica = 1;
        assert!(c.validate().unwrap_err().contains("replica"));
        let mut c = Config::default();
        c.event_inference.models.insert(
            "bad".into(),
            Priors {
                dry_end_bt: 200.0,
                fc_start_bt: 150.0,
            },
        );
        assert!(c.validate().unwrap_err().contains("models.bad"));
    }
}
