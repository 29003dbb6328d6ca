//! `[hsm]`: where the keys of this process live.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// `[hsm]`, shared by every service that holds a key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Keys in a PKCS#11 module when true; in the file keystore (`dir`) when false.
    pub enabled: bool,
    /// The PKCS#11 module (shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The user PIN (`SIMCORP_HSM_PIN_FILE` reads it from a secret file); never serialized.
    #[serde(skip_serializing)]
    pub pin: Option<SecretString>,
    /// The file keystore's directory, when `enabled` is false; empty: `keys` under the
    /// service's `data_dir` ([`Config::under`]).
    pub dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            module: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
            token: "simcorp".into(),
            pin: None,
            dir: PathBuf::new(),
        }
    }
}

impl Config {
    /// What is wrong with it, for a clear message at start.
    pub fn validate(&self) -> Result<(), String> {
        if self.enabled {
            if self.module.as_os_str().is_empty() {
                return Err(
                    "hsm.module: the PKCS#11 module's path is required when hsm.enabled = true"
                        .into(),
                );
            }
            if self.token.is_empty() {
                return Err(
                    "hsm.token: the token's label is required when hsm.enabled = true".into(),
                );
            }
            if self.pin.is_none() {
                return Err("hsm.pin: required when hsm.enabled = true (SIMCORP_HSM_PIN_FILE names a file holding it)".into());
            }
        }
        Ok(())
    }

    /// This configuration with an empty `dir` made `<data_dir>/keys`, and a relative one taken
    /// under `data_dir`: a service's keys live with the rest of its state.
    pub fn under(&self, data_dir: &std::path::Path) -> Config {
        let mut out = self.clone();
        out.dir = if self.dir.as_os_str().is_empty() {
            data_dir.join("keys")
        } else {
            data_dir.join(&self.dir)
        };
        out
    }
}
