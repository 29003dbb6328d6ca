use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Everything sim-twin is configured with. Sections other than `[sim_twin]` and `[log]` belong
/// to the other services of a deployment (one file may configure all of them) and are ignored.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    pub log: kit::logging::LogConfig,
    pub sim_twin: Settings,
}

/// `[sim_twin]`: this service's own settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub http_addr: SocketAddr,
    /// Longest an HTTP request may take.
    pub request_timeout_secs: u64,
    /// Most samples one `POST /simulate` may return, counted for the longest the roast could
    /// run (its profile's `max_duration_s`): bounds the CPU and memory of one request.
    pub max_samples: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 4002)),
            request_timeout_secs: 10,
            // An hour at the finest sample interval (100 ms), with room for the drop sample.
            max_samples: 36_002,
        }
    }
}

impl Config {
    /// Defaults, then `SIMCORP_CONFIG` (a TOML file), the `SIMCORP_*` environment, and
    /// `sources` (command-line flags); validated.
    pub fn load(sources: &kit::config::Sources) -> Result<Self, kit::config::ConfigError> {
        kit::config::load(sources)
    }
}

impl kit::config::Validate for Config {
    fn validate(&self) -> Result<(), String> {
        self.log.validate()?;
        let s = &self.sim_twin;
        if s.request_timeout_secs == 0 {
            return Err("sim_twin.request_timeout_secs must be at least 1".into());
        }
        if s.max_samples < 2 {
            return Err("sim_twin.max_samples must be at least 2 (charge and drop)".into());
        }
        Ok(())
    }
}
