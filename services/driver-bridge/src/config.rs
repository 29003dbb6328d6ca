use std::path::PathBuf;

use kit::service::HttpSettings;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::modbus::ModbusSettings;

/// driver-bridge's configuration: `[driver_bridge]` plus the shared `[mqtt]` and `[hsm]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    /// The outbox and the seen-commands table live here (`driver-bridge.db`).
    pub data_dir: PathBuf,
    pub mqtt: mqtt::Config,
    /// Where the devices' keys live (file keystore when `enabled = false`).
    pub hsm: keys::Config,
    pub driver_bridge: Settings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            mqtt: mqtt::Config::default(),
            hsm: keys::Config::default(),
            driver_bridge: Settings::default(),
        }
    }
}

/// `[driver_bridge]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    /// Every device this bridge drives.
    pub devices: Vec<DeviceConfig>,
    /// How often each device is read, and a point published.
    pub sample_interval_ms: u64,
    /// Command keys trusted from configuration: works without the command service.
    pub trusted_keys: Vec<TrustedKey>,
    /// The command service (`http://host:3004`): its command keys are fetched from
    /// `GET {command_url}/keys/command` at start and the devices' keys registered with it.
    /// Best effort: sampling never waits for it.
    pub command_url: Option<String>,
    /// Bearer token for registering device keys (`…_ENROLLMENT_TOKEN_FILE` reads a file).
    #[serde(skip_serializing)]
    pub enrollment_token: Option<SecretString>,
    /// Most messages the on-disk outbox holds while the broker is unreachable; past it, new
    /// messages are dropped and counted. The default holds about an hour of 10 devices at 1 Hz.
    pub outbox_max_messages: u64,
    /// Sign every telemetry frame with the device's key, as its session messages always are
    /// (docs/protocol.md, "Signed messages"; the cost per frame is in docs/keys.md).
    pub sign_telemetry: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http: HttpSettings::default(),
            devices: Vec::new(),
            sample_interval_ms: 1000,
            trusted_keys: Vec::new(),
            command_url: None,
            enrollment_token: None,
            outbox_max_messages: 40_000,
            sign_telemetry: false,
        }
    }
}

/// One command key the devices obey.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    pub key_id: String,
    /// Base64 of the 32-byte Ed25519 public key.
    pub public_key: String,
}

/// One roaster: its id on the wire, its driver and the driver's settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub id: String,
    pub driver: DriverKind,
    /// Settings of the `sim` driver.
    #[serde(default)]
    pub sim: SimSettings,
    /// Settings of the `modbus-tcp` driver (required with it).
    #[serde(default)]
    pub modbus: Option<ModbusSettings>,
    /// Key label in the keystore (also the ack's `key_id`); default `<id>.k1`.
    #[serde(default)]
    pub key_label: Option<String>,
}

impl DeviceConfig {
    pub fn key_label(&self) -> String {
        self.key_label
            .clone()
            .unwrap_or_else(|| format!("{}.k1", self.id))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriverKind {
    /// A live sim-twin engine that obeys commands.
    Sim,
    /// A roaster's controller over Modbus TCP.
    ModbusTcp,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Sim => "sim",
            DriverKind::ModbusTcp => "modbus-tcp",
        }
    }
}

/// `sim`: which roasts the simulated roaster runs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimSettings {
    /// A built-in sim-twin profile (`light`, `medium`, `dark`, …).
    pub profile: String,
    pub seed: u64,
    pub batch_g: Option<f64>,
    /// Simulated seconds per real second: each sample interval advances the roast this many
    /// intervals (1: real time).
    pub acceleration: f64,
    /// Simulated seconds the empty drum is logged before charge.
    pub pre_charge_secs: f64,
}

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            profile: "medium".into(),
            seed: 1,
            batch_g: None,
            acceleration: 1.0,
            pre_charge_secs: 0.0,
        }
    }
}

impl kit::config::Validate for Config {
    fn validate(&self) -> Result<(), String> {
        self.mqtt.validate()?;
        self.hsm.validate()?;
        let s = &self.driver_bridge;
        if !(100..=60_000).contains(&s.sample_interval_ms) {
            return Err("driver_bridge.sample_interval_ms must be within 100..=60000".into());
        }
        if s.outbox_max_messages == 0 {
            return Err("driver_bridge.outbox_max_messages must be at least 1".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err("data_dir must not be empty: the outbox lives there".into());
        }
        for k in &s.trusted_keys {
            if !model::valid_id(&k.key_id) {
                return Err(format!(
                    "driver_bridge.trusted_keys: key_id {:?} must be 1-64 characters of [A-Za-z0-9._:-]",
                    k.key_id
                ));
            }
            keys::PublicKey::from_base64(&k.public_key)
                .map_err(|e| format!("driver_bridge.trusted_keys {:?}: {e}", k.key_id))?;
        }
        if let Some(url) = &s.command_url {
            url::Url::parse(url).map_err(|e| format!("driver_bridge.command_url {url:?}: {e}"))?;
        }
        let mut seen = std::collections::HashSet::new();
        for d in &s.devices {
            let at = format!("driver_bridge.devices[{:?}]", d.id);
            if d.id.len() > 48 || !model::valid_id(&d.id) {
                return Err(format!(
                    "{at}: id must be 1-48 characters of [A-Za-z0-9._:-]"
                ));
            }
            if !seen.insert(d.id.as_str()) {
                return Err(format!("{at}: configured twice"));
            }
            if !model::valid_id(&d.key_label()) {
                return Err(format!(
                    "{at}: key_label must be 1-64 characters of [A-Za-z0-9._:-]"
                ));
            }
            match d.driver {
                DriverKind::Sim => {
                    crate::driver::sim::validate(&d.sim, s.sample_interval_ms)
                        .map_err(|e| format!("{at}.sim: {e}"))?;
                }
                DriverKind::ModbusTcp => match &d.modbus {
                    Some(m) => m.validate().map_err(|e| format!("{at}.modbus: {e}"))?,
                    None => {
                        return Err(format!(
                            "{at}: driver \"modbus-tcp\" needs a [modbus] section (address, registers)"
                        ));
                    }
                },
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use kit::config::Validate as _;

    use super::*;
    use crate::modbus::{DataType, Register, WordOrder};

    fn sim(id: &str) -> DeviceConfig {
        DeviceConfig {
            id: id.into(),
            driver: DriverKind::Sim,
            sim: SimSettings::default(),
            modbus: None,
            key_label: None,
        }
    }

    fn modbus(registers: Vec<Register>) -> DeviceConfig {
        DeviceConfig {
            driver: DriverKind::ModbusTcp,
            modbus: Some(ModbusSettings {
                address: "127.0.0.1:502".into(),
                unit_id: 1,
                timeout_ms: 1000,
                registers,
            }),
            ..sim("m-1")
        }
    }

    fn reg(channel: &str, function: u8) -> Register {
        Register {
            channel: channel.into(),
            address: 0,
            function,
            data_type: DataType::U16,
            word_order: WordOrder::Big,
            scale: 1.0,
            offset: 0.0,
        }
    }

    /// `change` applied to a valid configuration is refused with a message containing `want`.
    fn check(change: impl FnOnce(&mut Config), want: &str) {
        let mut c = Config::default();
        c.driver_bridge.devices = vec![sim("r-1")];
        assert_eq!(c.validate(), Ok(()));
        change(&mut c);
        let err = c.validate().unwrap_err();
        assert!(err.contains(want), "{err:?} lacks {want:?}");
    }

    #[test]
    fn bad_configurations_are_refused_with_what_to_fix() {
        check(
            |c| c.driver_bridge.sample_interval_ms = 10,
            "sample_interval_ms",
        );
        check(
            |c| c.driver_bridge.devices.push(sim("r-1")),
            "configured twice",
        );
        check(
            |c| c.driver_bridge.devices[0].id = "no spaces".into(),
            "id must be",
        );
        check(
            |c| c.driver_bridge.devices[0].sim.profile = "burnt".into(),
            "profile \"burnt\"",
        );
        check(
            |c| c.driver_bridge.devices[0].sim.acceleration = 1000.0,
            "acceleration",
        );
        check(
            |c| {
                c.driver_bridge.trusted_keys = vec![TrustedKey {
                    key_id: "k".into(),
                    public_key: "nope".into(),
                }]
            },
            "trusted_keys",
        );
        check(
            |c| c.driver_bridge.devices[0].driver = DriverKind::ModbusTcp,
            "needs a [modbus] section",
        );
        check(
            |c| c.driver_bridge.devices = vec![modbus(vec![])],
            "at least one",
        );
        check(
            |c| c.driver_bridge.devices = vec![modbus(vec![reg("bt", 3), reg("bt", 4)])],
            "mapped twice",
        );
        check(
            |c| c.driver_bridge.devices = vec![modbus(vec![reg("gas", 4)])],
            "holding register",
        );
        check(
            |c| c.driver_bridge.devices = vec![modbus(vec![reg("bt", 5)])],
            "function must be 3",
        );
        check(
            |c| {
                let mut d = modbus(vec![reg("bt", 3)]);
                if let Some(m) = d.modbus.as_mut() {
                    m.address = "roaster".into();
                }
                c.driver_bridge.devices = vec![d];
            },
            "expected ip:port",
        );
    }
}
