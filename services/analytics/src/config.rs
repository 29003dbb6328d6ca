use std::path::PathBuf;

use kit::service::HttpSettings;
use serde::{Deserialize, Serialize};

pub use crate::corrections::CorrectionSettings;

/// analytics' configuration: `[analytics]` plus the shared `[mqtt]`, `[postgres]`, `[sqlite]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    /// Where analytics' own SQLite file lives when `[postgres]` is not set.
    pub data_dir: PathBuf,
    pub mqtt: mqtt::Config,
    /// Reference profiles are stored here when set (else `analytics.db` in `data_dir`), and
    /// past sessions are read from here (else from `analytics.history_url`).
    pub postgres: store::PostgresConfig,
    pub sqlite: store::SqliteConfig,
    pub analytics: Settings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            mqtt: Default::default(),
            postgres: Default::default(),
            sqlite: Default::default(),
            analytics: Default::default(),
        }
    }
}

/// `[analytics]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    /// Where past sessions are read when `[postgres]` is not set: ingestion's HTTP API.
    pub history_url: String,
    /// Variance series sample step.
    pub variance_step_secs: u32,
    /// How often (in the roast's own time) a live session's predictions are recomputed.
    pub predict_every_secs: u32,
    /// Sessions watched live at most; beyond, new sessions are served from the store only.
    pub max_live_sessions: usize,
    /// Readings kept per live session (at 1 Hz, 5 hours); beyond, a session that never ends
    /// stops growing and says so (`truncated`).
    pub max_live_readings: usize,
    /// A live session that sends nothing for this long is forgotten (it stays in the store).
    pub idle_timeout_secs: u64,
    /// An ended session is kept in memory this long after its last message, for the pages that
    /// show it; then it is read from the store like any past roast.
    pub ended_retention_secs: u64,
    /// Largest profile or `.alog` accepted over HTTP.
    pub max_import_bytes: usize,
    /// Gas corrections proposed to the command service (`[analytics.corrections]`).
    pub corrections: CorrectionSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http: HttpSettings::default(),
            history_url: "http://127.0.0.1:4001".into(),
            variance_step_secs: 5,
            predict_every_secs: 5,
            max_live_sessions: 5000,
            max_live_readings: 18_000,
            idle_timeout_secs: 3600,
            ended_retention_secs: 600,
            max_import_bytes: 8 * 1024 * 1024,
            corrections: CorrectionSettings::default(),
        }
    }
}

impl kit::config::Validate for Config {
    fn validate(&self) -> Result<(), String> {
        self.mqtt.validate()?;
        let s = &self.analytics;
        if self.postgres.url.is_none() && self.data_dir.as_os_str().is_empty() {
            return Err("data_dir must not be empty without postgres.url".into());
        }
        if !s.history_url.is_empty() && !s.history_url.starts_with("http") {
            return Err(format!(
                "analytics.history_url {:?} must be an http(s) URL, or empty",
                s.history_url
            ));
        }
        for (name, v) in [
            ("variance_step_secs", u64::from(s.variance_step_secs)),
            ("predict_every_secs", u64::from(s.predict_every_secs)),
            ("max_live_sessions", s.max_live_sessions as u64),
            ("max_live_readings", s.max_live_readings as u64),
            ("idle_timeout_secs", s.idle_timeout_secs),
            ("ended_retention_secs", s.ended_retention_secs),
        ] {
            if v == 0 {
                return Err(format!("analytics.{name} must be at least 1"));
            }
        }
        if s.max_import_bytes < 1024 || s.max_import_bytes > roast::alog::MAX_BYTES {
            return Err(format!(
                "analytics.max_import_bytes {} must be within 1024..={}",
                s.max_import_bytes,
                roast::alog::MAX_BYTES
            ));
        }
        s.corrections.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kit::config::Validate as _;

    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_are_named() {
        Config::default().validate().unwrap();
        let mut c = Config::default();
        c.analytics.variance_step_secs = 0;
        assert!(c.validate().unwrap_err().contains("variance_step_secs"));
        let mut c = Config::default();
        c.analytics.history_url = "ftp://x".into();
        assert!(c.validate().unwrap_err().contains("history_url"));
        let mut c = Config::default();
        c.analytics.corrections.enabled = true;
        assert!(c.validate().unwrap_err().contains("corrections.token"));
        c.analytics.corrections.token = Some("t".to_owned().into());
        c.validate().unwrap();
        c.analytics.corrections.min_interval_secs = 10;
        assert!(c.validate().unwrap_err().contains("min_interval_secs"));
        let mut c = Config::default();
        c.analytics.max_import_bytes = 1 << 30;
        assert!(c.validate().unwrap_err().contains("max_import_bytes"));
    }
}
