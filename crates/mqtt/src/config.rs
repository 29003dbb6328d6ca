use std::time::Duration;

use rumqttc::MqttOptions;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

/// `[mqtt]`: how to reach the broker.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `mqtt://host:port` (or `tcp://`). Credentials may be given in the URL or below.
    pub url: String,
    /// Stable client id of this process. Persistent sessions are keyed by it, so it must survive
    /// restarts (in Kubernetes: a StatefulSet pod name). Default: `simcorp-<service>-<hostname>`.
    pub client_id: Option<String>,
    pub username: Option<String>,
    #[serde(skip_serializing)]
    pub password: Option<SecretString>,
    pub keep_alive_secs: u16,
    /// Reconnect backoff: first delay, doubling (with jitter) up to the maximum.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// Largest packet accepted from the broker. It must exceed the broker's own limit (Mosquitto
    /// `max_packet_size`, 16 MiB in compose/mosquitto): a message bigger than the client accepts
    /// drops the connection and is redelivered forever, blocking everything behind it.
    pub max_packet_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: None,
            username: None,
            password: None,
            keep_alive_secs: 30,
            reconnect_min_ms: 100,
            reconnect_max_ms: 10_000,
            max_packet_bytes: 17 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt.url {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("the MQTT client has stopped")]
    ClientClosed,
    #[error("could not connect to the MQTT broker at {addr} within {timeout:?}: {last_error}")]
    ConnectTimeout {
        addr: String,
        timeout: Duration,
        last_error: String,
    },
}

/// A parsed broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl Endpoint {
    pub fn parse(raw: &str) -> Result<Self, MqttError> {
        let bad = |reason: &str| MqttError::BadUrl {
            url: raw.to_owned(),
            reason: reason.to_owned(),
        };
        let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
        match url.scheme() {
            "mqtt" | "tcp" => {}
            "mqtts" | "ssl" => return Err(bad("TLS brokers are not supported yet; use mqtt://")),
            other => {
                return Err(bad(&format!(
                    "unknown scheme {other:?}; use mqtt://host:port"
                )));
            }
        }
        let host = url.host_str().ok_or_else(|| bad("no host"))?.to_owned();
        let username = (!url.username().is_empty()).then(|| url.username().to_owned());
        Ok(Endpoint {
            host,
            port: url.port().unwrap_or(1883),
            username,
            password: url.password().map(str::to_owned),
        })
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        Endpoint::parse(&self.url).map_err(|e| e.to_string())?;
        if self.reconnect_min_ms == 0 || self.reconnect_max_ms < self.reconnect_min_ms {
            return Err(
                "mqtt.reconnect_min_ms must be positive and not above reconnect_max_ms".into(),
            );
        }
        if let Some(id) = &self.client_id
            && (id.is_empty() || id.len() > 128)
        {
            return Err("mqtt.client_id must be 1-128 characters".into());
        }
        Ok(())
    }

    /// The client id to use: the configured one, else `simcorp-<role>-<hostname>`.
    pub fn client_id_for(&self, role: &str) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("simcorp-{role}-{}", hostname()))
    }

    /// rumqttc options for a persistent-session client with manual acks or not.
    pub(crate) fn options(
        &self,
        client_id: &str,
        manual_acks: bool,
    ) -> Result<MqttOptions, MqttError> {
        let endpoint = Endpoint::parse(&self.url)?;
        let mut options = MqttOptions::new(client_id, endpoint.host.clone(), endpoint.port);
        options
            .set_clean_session(false)
            .set_manual_acks(manual_acks)
            .set_keep_alive(Duration::from_secs(u64::from(self.keep_alive_secs.max(5))))
            .set_max_packet_size(self.max_packet_bytes, self.max_packet_bytes)
            .set_inflight(1000);
        let username = self.username.clone().or(endpoint.username);
        let password = self
            .password
            .as_ref()
            .map(|p| p.expose_secret().to_owned())
            .or(endpoint.password);
        if let Some(user) = username {
            options.set_credentials(user, password.unwrap_or_default());
        }
        Ok(options)
    }

    pub(crate) fn backoff(&self) -> Backoff {
        Backoff {
            min: Duration::from_millis(self.reconnect_min_ms),
            max: Duration::from_millis(self.reconnect_max_ms),
            next: Duration::from_millis(self.reconnect_min_ms),
        }
    }
}

/// Exponential backoff with full jitter, so a fleet of clients does not reconnect in lockstep.
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::random_range(0.5..=1.0);
        ceiling.mul_f64(jitter)
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_urls() {
        let e = Endpoint::parse("mqtt://user:pw@broker.local:1884").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("broker.local", 1884));
        assert_eq!(
            (e.username.as_deref(), e.password.as_deref()),
            (Some("user"), Some("pw"))
        );
        assert_eq!(Endpoint::parse("tcp://10.0.0.1").unwrap().port, 1883);
        assert!(
            Endpoint::parse("mqtts://x")
                .unwrap_err()
                .to_string()
                .contains("TLS")
        );
        assert!(Endpoint::parse("http://x").is_err());
        assert!(Endpoint::parse("nonsense").is_err());
    }

    #[test]
    fn backoff_doubles_to_the_ceiling() {
        let mut b = Config::default().backoff();
        let delays: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(10)));
        assert!(delays[9] >= Duration::from_secs(5));
    }
}
