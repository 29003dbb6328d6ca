use std::collections::BTreeMap;
use std::path::PathBuf;

use kit::service::HttpSettings;
use model::command::Control;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// command's configuration: `[command]` plus the shared `[mqtt]`, `[postgres]`, `[sqlite]` and
/// `[hsm]` (where the service's signing key lives).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    /// Where `commands.db` lives when `[postgres]` is not set.
    pub data_dir: PathBuf,
    pub mqtt: mqtt::Config,
    pub postgres: store::PostgresConfig,
    pub sqlite: store::SqliteConfig,
    pub hsm: keys::Config,
    pub command: Settings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            mqtt: Default::default(),
            postgres: Default::default(),
            sqlite: Default::default(),
            hsm: Default::default(),
            command: Default::default(),
        }
    }
}

/// `[command]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    /// A TOML (`[[tokens]]`) or JSON (`{"tokens": [...]}`) file of `{token, actor, roles}`.
    pub tokens_file: Option<PathBuf>,
    /// Tokens given inline (tests, `simcorp up`); added to those of `tokens_file`.
    pub tokens: Vec<TokenEntry>,
    /// The label of the service's signing key in the keystore, also the `key_id` of commands.
    pub key_label: String,
    /// A proposal not approved or rejected within this expires.
    pub proposal_ttl_secs: u64,
    /// A sent command's `not_after`: the device refuses it after this.
    pub command_ttl_secs: u64,
    /// A sent command whose acknowledgement has not come within this times out.
    pub ack_timeout_secs: u64,
    /// How often expiries and timeouts are swept, and approved commands sent (they are also
    /// sent at once on approval).
    pub sweep_interval_ms: u64,
    /// How long a device's last telemetry counts as its current control values.
    pub current_value_max_age_secs: u64,
    /// Safety limits per control: `default`, and per roaster model (the `roaster_model` of a
    /// session's start message) under `models.<name>`.
    pub limits: LimitsConfig,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http: HttpSettings::default(),
            tokens_file: None,
            tokens: Vec::new(),
            key_label: "command-1".into(),
            proposal_ttl_secs: 300,
            command_ttl_secs: 30,
            ack_timeout_secs: 30,
            sweep_interval_ms: 500,
            current_value_max_age_secs: 60,
            limits: LimitsConfig::default(),
        }
    }
}

/// One bearer token and whom it stands for.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    #[serde(skip_serializing)]
    pub token: Option<SecretString>,
    pub actor: String,
    pub roles: Vec<String>,
}

impl TokenEntry {
    /// `token` standing for `actor` with `roles` (for configuration built in code: tests).
    pub fn new(token: &str, actor: &str, roles: &[&str]) -> Self {
        TokenEntry {
            token: Some(token.to_owned().into()),
            actor: actor.to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        }
    }
}

/// The limits of every control.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub default: ModelLimits,
    pub models: BTreeMap<String, ModelLimits>,
}

impl LimitsConfig {
    /// The limits of `control` on a roaster of `model` (the default set when unknown).
    pub fn of(&self, model: Option<&str>, control: Control) -> &ControlLimits {
        let set = model
            .and_then(|m| self.models.get(m))
            .unwrap_or(&self.default);
        match control {
            Control::Gas => &set.gas,
            Control::Air => &set.air,
            Control::Drum => &set.drum,
        }
    }
}

/// The limits of one roaster model; a control not given keeps the built-in default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelLimits {
    pub gas: ControlLimits,
    pub air: ControlLimits,
    pub drum: ControlLimits,
}

impl Default for ModelLimits {
    fn default() -> Self {
        ModelLimits {
            gas: ControlLimits {
                min: 0.0,
                max: 100.0,
                max_step: 20.0,
                max_rate_per_min: 40.0,
            },
            air: ControlLimits {
                min: 0.0,
                max: 100.0,
                max_step: 25.0,
                max_rate_per_min: 50.0,
            },
            drum: ControlLimits {
                min: 30.0,
                max: 100.0,
                max_step: 15.0,
                max_rate_per_min: 30.0,
            },
        }
    }
}

/// One control's limits, in % of its range.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ControlLimits {
    pub min: f64,
    pub max: f64,
    /// Largest change from the current value in one command.
    pub max_step: f64,
    /// Largest total change over the device's commands of the last minute (this one included).
    pub max_rate_per_min: f64,
}

impl Default for ControlLimits {
    fn default() -> Self {
        ModelLimits::default().gas
    }
}

impl kit::config::Validate for Config {
    fn validate(&self) -> Result<(), String> {
        self.mqtt.validate()?;
        self.hsm.validate()?;
        let s = &self.command;
        if self.postgres.url.is_none() && self.data_dir.as_os_str().is_empty() {
            return Err("data_dir must not be empty without postgres.url".into());
        }
        if !model::valid_id(&s.key_label) {
            return Err(format!(
                "command.key_label {:?}: must be 1–64 characters of [A-Za-z0-9._:-]",
                s.key_label
            ));
        }
        for (name, v) in [
            ("proposal_ttl_secs", s.proposal_ttl_secs),
            ("command_ttl_secs", s.command_ttl_secs),
            ("ack_timeout_secs", s.ack_timeout_secs),
            ("sweep_interval_ms", s.sweep_interval_ms),
            ("current_value_max_age_secs", s.current_value_max_age_secs),
        ] {
            if v == 0 {
                return Err(format!("command.{name} must be at least 1"));
            }
        }
        let sets = std::iter::once(("default".to_owned(), &s.limits.default)).chain(
            s.limits
                .models
                .iter()
                .map(|(m, l)| (format!("models.{m}"), l)),
        );
        for (name, set) in sets {
            for (control, l) in [("gas", &set.gas), ("air", &set.air), ("drum", &set.drum)] {
                let ok = (0.0..=100.0).contains(&l.min)
                    && (0.0..=100.0).contains(&l.max)
                    && l.min <= l.max
                    && l.max_step > 0.0
                    && l.max_rate_per_min >= l.max_step;
                if !ok {
                    return Err(format!(
                        "command.limits.{name}.{control}: need 0 <= min <= max <= 100, max_step > 0 and max_rate_per_min >= max_step"
                    ));
                }
            }
        }
        for t in &s.tokens {
            crate::auth::check_entry(t)?;
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
        c.command.ack_timeout_secs = 0;
        assert!(c.validate().unwrap_err().contains("ack_timeout_secs"));
        let mut c = Config::default();
        c.command.limits.models.insert(
            "skywalker".into(),
            ModelLimits {
                gas: ControlLimits {
                    min: 50.0,
                    max: 10.0,
                    max_step: 1.0,
                    max_rate_per_min: 1.0,
                },
                ..ModelLimits::default()
            },
        );
        assert!(
            c.validate()
                .unwrap_err()
                .contains("limits.models.skywalker.gas")
        );
        let mut c = Config::default();
        c.command.tokens.push(TokenEntry {
            token: Some("long-enough-token".to_owned().into()),
            actor: "ann".into(),
            roles: vec!["wizard".into()],
        });
        assert!(c.validate().unwrap_err().contains("wizard"));
    }

    #[test]
    fn a_model_has_its_own_limits_and_others_the_default() {
        let mut l = LimitsConfig::default();
        let mut sky = ModelLimits::default();
        sky.gas.max = 80.0;
        l.models.insert("skywalker".into(), sky);
        assert_eq!(l.of(Some("skywalker"), Control::Gas).max, 80.0);
        assert_eq!(l.of(Some("other"), Control::Gas).max, 100.0);
        assert_eq!(l.of(None, Control::Drum).min, 30.0);
    }
}
