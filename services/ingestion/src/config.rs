use std::path::PathBuf;

use kit::service::HttpSettings;
use serde::{Deserialize, Serialize};

/// Everything the ingestion service is configured with. Sections other than `[ingestion]` are
/// shared with the other services of a deployment (`simcorp up` reads them once for all), so
/// sections of other services are allowed here; unknown keys inside a section are not.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    /// Where the embedded SQLite store and the PostgreSQL fallback live.
    pub data_dir: PathBuf,
    pub mqtt: mqtt::Config,
    pub postgres: store::PostgresConfig,
    pub sqlite: store::SqliteConfig,
    pub store: store::MaintenanceConfig,
    pub redis: cache::Config,
    pub pipeline: pipeline::Config,
    pub ingestion: Settings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            mqtt: Default::default(),
            postgres: Default::default(),
            sqlite: Default::default(),
            store: Default::default(),
            redis: Default::default(),
            pipeline: Default::default(),
            ingestion: Default::default(),
        }
    }
}

/// `[ingestion]`: this service's own settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    /// Subscribe through `$share/<group>/…` so several replicas split the stream. Every replica
    /// of one deployment must use the same group (and a distinct `mqtt.client_id`). Empty (the
    /// default): a plain subscription, for one replica.
    ///
    /// Why one replica subscribes plainly: Mosquitto 2.0 does not restore shared subscriptions
    /// from its persistence file, so after a broker restart every message published before
    /// ingestion has reconnected and subscribed again is dropped. A plain subscription of a
    /// persistent session is restored, and those messages wait for ingestion. Measured in
    /// docs/reliability.md (the broker restart drill).
    pub share_group: String,
    /// On SIGTERM, how long to finish writing and acknowledging what was received.
    pub drain_timeout_secs: u64,
    /// Decoder limits (see `docs/protocol.md`).
    pub max_payload_bytes: usize,
    pub max_frame_points: usize,
    pub max_channels: usize,
    pub max_past_secs: i64,
    pub max_future_secs: i64,
    /// Bytes of a refused payload kept in the dead-letter table.
    pub dead_letter_payload_bytes: usize,
    /// The flood limit: points per second one device may send on average (refused messages
    /// count as one point each); above it, its messages are shed and counted. 0: no limit.
    /// Roasters send one or two a second; the load harness `--rate / --sessions`.
    pub device_points_per_sec: u32,
    /// Points a device may send at once above that rate: the backlog of a roaster that was
    /// offline (an hour at 10 Hz is 36,000).
    pub device_burst_points: u32,
    /// Devices must sign their session messages, their telemetry messages (docs/protocol.md,
    /// "Signed messages"): one unsigned or badly signed is dead-lettered and counted. The keys
    /// are the device key registry's (the command service's store).
    pub require_signed_sessions: bool,
    pub require_signed_telemetry: bool,
    /// How often the registry's keys are read again (a revoked key stops verifying then).
    pub keys_refresh_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        let limits = model::Limits::default();
        Settings {
            http: HttpSettings::default(),
            share_group: String::new(),
            drain_timeout_secs: 30,
            max_payload_bytes: limits.max_payload_bytes,
            max_frame_points: limits.max_frame_points,
            max_channels: limits.max_channels,
            max_past_secs: limits.max_past_ms / 1000,
            max_future_secs: limits.max_future_ms / 1000,
            dead_letter_payload_bytes: 4096,
            device_points_per_sec: 1_000,
            device_burst_points: 60_000,
            require_signed_sessions: false,
            require_signed_telemetry: false,
            keys_refresh_secs: 30,
        }
    }
}

impl Settings {
    pub fn limits(&self) -> model::Limits {
        model::Limits {
            max_payload_bytes: self.max_payload_bytes,
            max_frame_points: self.max_frame_points,
            max_channels: self.max_channels,
            max_past_ms: self.max_past_secs.saturating_mul(1000),
            max_future_ms: self.max_future_secs.saturating_mul(1000),
        }
    }

    /// The MQTT filters ingestion consumes.
    pub fn filters(&self) -> Vec<String> {
        [
            "roasters/+/telemetry",
            "roasters/+/session",
            "roasters/+/events",
        ]
        .iter()
        .map(|f| match self.share_group.as_str() {
            "" => (*f).to_owned(),
            group => format!("$share/{group}/{f}"),
        })
        .collect()
    }
}

impl Config {
    /// The telemetry domain's file, where `simcorp migrate` also looks for it.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join(store::TELEMETRY.sqlite_file())
    }

    pub fn fallback_path(&self) -> PathBuf {
        self.data_dir.join("ingestion-fallback.db")
    }
}

impl kit::config::Validate for Config {
    fn validate(&self) -> Result<(), String> {
        self.mqtt.validate()?;
        self.pipeline.validate()?;
        self.redis.validate()?;
        let s = &self.ingestion;
        if s.share_group.contains(['/', '+', '#']) {
            return Err(format!(
                "ingestion.share_group {:?} must not contain '/', '+' or '#'",
                s.share_group
            ));
        }
        for (name, value) in [
            ("max_payload_bytes", s.max_payload_bytes),
            ("max_frame_points", s.max_frame_points),
            ("max_channels", s.max_channels),
            ("drain_timeout_secs", s.drain_timeout_secs as usize),
            ("keys_refresh_secs", s.keys_refresh_secs as usize),
        ] {
            if value == 0 {
                return Err(format!("ingestion.{name} must be at least 1"));
            }
        }
        if s.max_past_secs < 0 || s.max_future_secs < 0 {
            return Err("ingestion.max_past_secs and max_future_secs must not be negative".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err("data_dir must not be empty".into());
        }
        Ok(())
    }
}
