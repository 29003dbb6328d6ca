//! Keys in an HSM, through PKCS#11. (In progress: see the `keys` crate's helper.)

use crate::{Config, KeyError, PublicKey, Signature};

pub(crate) struct HsmKeystore {
    describe: String,
}

impl HsmKeystore {
    pub(crate) fn open(config: &Config) -> Result<HsmKeystore, KeyError> {
        Err(KeyError::Hsm(format!(
            "PKCS#11 support is not built yet (module {})",
            config.module.display()
        )))
    }

    pub(crate) fn describe(&self) -> String {
        self.describe.clone()
    }

    pub(crate) fn generate(&self, _label: &str) -> Result<PublicKey, KeyError> {
        Err(KeyError::Hsm("not built yet".into()))
    }

    pub(crate) fn public_key(&self, _label: &str) -> Result<Option<PublicKey>, KeyError> {
        Err(KeyError::Hsm("not built yet".into()))
    }

    pub(crate) fn sign(&self, _label: &str, _message: &[u8]) -> Result<Signature, KeyError> {
        Err(KeyError::Hsm("not built yet".into()))
    }

    pub(crate) fn destroy(&self, _label: &str) -> Result<bool, KeyError> {
        Err(KeyError::Hsm("not built yet".into()))
    }
}
