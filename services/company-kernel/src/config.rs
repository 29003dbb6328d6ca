use std::path::PathBuf;

use kit::service::HttpSettings;
use serde::{Deserialize, Serialize};

/// company-kernel's configuration: `[company_kernel]` plus the shared `[postgres]`, `[sqlite]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    /// Where `missions.db` lives when `[postgres]` is not set.
    pub data_dir: PathBuf,
    pub postgres: store::PostgresConfig,
    pub sqlite: store::SqliteConfig,
    pub company_kernel: Settings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            postgres: Default::default(),
            sqlite: Default::default(),
            company_kernel: Default::default(),
        }
    }
}

/// `[company_kernel]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    /// A claim's lease when the worker asks for none; a worker heartbeats well within it.
    pub default_lease_secs: u64,
    /// The longest lease a worker may ask for.
    pub max_lease_secs: u64,
    /// Attempts of a mission that names none; after the last it is dead.
    pub default_max_attempts: u32,
    /// The wait before attempt n+1 after a failed attempt n: `backoff_base_ms × 2^(n-1)`, at
    /// most `backoff_max_ms`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// How often expired leases and passed deadlines are looked for.
    pub sweep_interval_ms: u64,
    /// Largest mission payload (JSON) accepted.
    pub max_payload_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http: HttpSettings::default(),
            default_lease_secs: 30,
            max_lease_secs: 3600,
            default_max_attempts: 5,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
            sweep_interval_ms: 500,
            max_payload_bytes: 256 * 1024,
        }
    }
}

impl Settings {
    /// The wait after failed attempt `attempts` (1 for the first).
    pub(crate) fn backoff_ms(&self, attempts: i32) -> i64 {
        let doublings = u32::try_from(attempts.saturating_sub(1))
            .unwrap_or(0)
            .min(30);
        let wait = self.backoff_base_ms.saturating_mul(1 << doublings);
        i64::try_from(wait.min(self.backoff_max_ms)).unwrap_or(i64::MAX)
    }
}

impl kit::config::Validate for Config {
    fn validate(&self) -> Result<(), String> {
        let s = &self.company_kernel;
        if self.postgres.url.is_none() && self.data_dir.as_os_str().is_empty() {
            return Err("data_dir must not be empty without postgres.url".into());
        }
        for (name, v) in [
            ("default_lease_secs", s.default_lease_secs),
            ("max_lease_secs", s.max_lease_secs),
            ("default_max_attempts", u64::from(s.default_max_attempts)),
            ("sweep_interval_ms", s.sweep_interval_ms),
            ("max_payload_bytes", s.max_payload_bytes as u64),
        ] {
            if v == 0 {
                return Err(format!("company_kernel.{name} must be at least 1"));
            }
        }
        if s.default_lease_secs > s.max_lease_secs {
            return Err(format!(
                "company_kernel.default_lease_secs ({}) must not exceed max_lease_secs ({})",
                s.default_lease_secs, s.max_lease_secs
            ));
        }
        if s.backoff_base_ms > s.backoff_max_ms {
            return Err(format!(
                "company_kernel.backoff_base_ms ({}) must not exceed backoff_max_ms ({})",
                s.backoff_base_ms, s.backoff_max_ms
            ));
        }
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
        c.company_kernel.default_lease_secs = 7200;
        assert!(c.validate().unwrap_err().contains("max_lease_secs"));
        let mut c = Config::default();
        c.company_kernel.default_max_attempts = 0;
        assert!(c.validate().unwrap_err().contains("default_max_attempts"));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let s = Settings::default();
        let waits: Vec<i64> = (1..=4).map(|n| s.backoff_ms(n)).collect();
        assert_eq!(waits, [1_000, 2_000, 4_000, 8_000]);
        assert_eq!(s.backoff_ms(40), 300_000);
        assert_eq!(s.backoff_ms(0), 1_000);
    }
}
