use kit::service::HttpSettings;
use serde::{Deserialize, Serialize};

use crate::FleetSpec;

/// The sim-publisher's configuration: `[sim_publisher]` plus the shared `[mqtt]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    pub mqtt: mqtt::Config,
    pub sim_publisher: Settings,
}

/// `[sim_publisher]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    /// A fleet started with the service (what `simcorp up` shows a newcomer); none when absent.
    pub default_fleet: Option<FleetSpec>,
    /// Most roasters one service runs, over all fleets.
    pub max_roasters: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http: HttpSettings::default(),
            default_fleet: None,
            max_roasters: 5_000,
        }
    }
}

impl kit::config::Validate for Config {
    fn validate(&self) -> Result<(), String> {
        self.mqtt.validate()?;
        if let Some(fleet) = &self.sim_publisher.default_fleet {
            fleet
                .validate()
                .map_err(|e| format!("sim_publisher.default_fleet: {e}"))?;
        }
        if self.sim_publisher.max_roasters == 0 {
            return Err("sim_publisher.max_roasters must be at least 1".into());
        }
        Ok(())
    }
}
