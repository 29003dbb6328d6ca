use kit::service::HttpSettings;
use serde::{Deserialize, Serialize};

/// Everything sim-twin is configured with: its own section. The rest of a platform-wide file
/// (other services, shared sections) is not its business.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    pub sim_twin: Settings,
}

/// `[sim_twin]`: this service's own settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    /// Most samples one `POST /simulate` may return, counted for the longest the roast could
    /// run (its profile's `max_duration_s`): bounds the CPU and memory of one request.
    pub max_samples: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http: HttpSettings::default(),
            // An hour at the finest sample interval (100 ms), with room for the drop sample.
            max_samples: 36_002,
        }
    }
}

impl kit::config::Validate for Config {
    fn validate(&self) -> Result<(), String> {
        if self.sim_twin.max_samples < 2 {
            return Err("sim_twin.max_samples must be at least 2 (charge and drop)".into());
        }
        Ok(())
    }
}
