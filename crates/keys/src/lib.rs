//! Ed25519 identities and the checks of their signatures.
//!
//! A [`Keystore`] holds private keys and signs with them; nothing outside it ever sees one.
//! Two kinds, chosen by `[hsm] enabled` and never silently:
//!
//! - an HSM through PKCS#11 ([`hsm`]): the key pair is generated *inside* the token, marked
//!   sensitive and not extractable, and every signature is made there. SoftHSM2 in tests and
//!   development; in production any PKCS#11 module (a hardware token, a cloud KMS's library);
//! - a file keystore ([`file`]): one file per key under a directory, for `simcorp up` and tests
//!   that need no HSM. Its private keys are on disk: development only, and it says so at start.
//!
//! Keys are named by a label, which is also the `key_id` a signed message carries. Checking a
//! signature needs only the public key ([`verify`]), so verifiers hold no keystore at all.

pub mod config;
pub mod file;
pub mod hsm;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

pub use config::Config;
pub use hsm::PrivateKeyAttributes;
pub use model::command::Signature;

/// An Ed25519 public key (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    pub fn from_base64(s: &str) -> Result<PublicKey, KeyError> {
        let bytes = B64
            .decode(s.trim())
            .map_err(|_| KeyError::BadPublicKey("not base64"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::BadPublicKey("not 32 bytes"))?;
        // A point that is not on the curve can verify nothing.
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| KeyError::BadPublicKey("not an Ed25519 point"))?;
        Ok(PublicKey(bytes))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

/// Whether `sig` is `key`'s signature of `message` (strict: no malleable or small-order forms).
pub fn verify(key: &PublicKey, message: &[u8], sig: &Signature) -> bool {
    key.verifying_key().is_some_and(|k| k.verify(message, sig))
}

/// A public key made ready to verify: its point decompressed once, where [`verify`] does it at
/// every call. For a verifier that checks the same keys' signatures again and again (ingestion,
/// on every telemetry frame of a fleet); `cargo bench -p benches --bench signing` shows what it
/// saves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl VerifyingKey {
    /// Whether `sig` is this key's signature of `message`, as [`verify`] judges it.
    pub fn verify(&self, message: &[u8], sig: &Signature) -> bool {
        self.0
            .verify_strict(message, &ed25519_dalek::Signature::from_bytes(sig))
            .is_ok()
    }
}

impl PublicKey {
    /// `None` when the bytes are not an Ed25519 point (a key made by [`PublicKey::from_base64`]
    /// always is one).
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        ed25519_dalek::VerifyingKey::from_bytes(&self.0)
            .ok()
            .map(VerifyingKey)
    }
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key label {0:?}: must be 1–64 characters of [A-Za-z0-9._:-]")]
    BadLabel(String),
    #[error("a key labelled {0:?} already exists")]
    Exists(String),
    #[error("no key labelled {0:?}")]
    NotFound(String),
    #[error("public key: {0}")]
    BadPublicKey(&'static str),
    #[error("file keystore {path}: {reason}")]
    File { path: String, reason: String },
    #[error("HSM: {0}")]
    Hsm(String),
    #[error("configuration: {0}")]
    Config(String),
}

/// Where private keys live, and the only thing that signs with them.
#[derive(Clone)]
pub struct Keystore(Arc<Backend>);

enum Backend {
    File(file::FileKeystore),
    Hsm(hsm::HsmKeystore),
}

impl Keystore {
    /// Opens the keystore `config` names: the HSM when `enabled`, else the file keystore.
    pub fn open(config: &Config) -> Result<Keystore, KeyError> {
        config.validate().map_err(KeyError::Config)?;
        if !config.enabled && config.dir.as_os_str().is_empty() {
            return Err(KeyError::Config(
                "hsm.dir: no directory for the file keystore (services take `keys` under their data_dir)".into(),
            ));
        }
        let backend = if config.enabled {
            Backend::Hsm(hsm::HsmKeystore::open(config)?)
        } else {
            tracing::warn!(
                dir = %config.dir.display(),
                "private keys in a file keystore, on disk: for development only ([hsm] enabled = false)"
            );
            Backend::File(file::FileKeystore::open(&config.dir)?)
        };
        Ok(Keystore(Arc::new(backend)))
    }

    /// A file keystore in `dir`, for tests.
    pub fn file(dir: &std::path::Path) -> Result<Keystore, KeyError> {
        Ok(Keystore(Arc::new(Backend::File(file::FileKeystore::open(
            dir,
        )?))))
    }

    /// For logs: `hsm (<module>, token <label>)` or `file (<dir>)`.
    pub fn describe(&self) -> String {
        match &*self.0 {
            Backend::File(f) => format!("file ({})", f.dir().display()),
            Backend::Hsm(h) => h.describe(),
        }
    }

    /// A new key pair named `label`; refused if one exists.
    pub fn generate(&self, label: &str) -> Result<Key, KeyError> {
        check_label(label)?;
        let public = match &*self.0 {
            Backend::File(f) => f.generate(label)?,
            Backend::Hsm(h) => h.generate(label)?,
        };
        Ok(self.key(label, public))
    }

    /// The key named `label`, if there is one.
    pub fn find(&self, label: &str) -> Result<Option<Key>, KeyError> {
        check_label(label)?;
        let public = match &*self.0 {
            Backend::File(f) => f.public_key(label)?,
            Backend::Hsm(h) => h.public_key(label)?,
        };
        Ok(public.map(|p| self.key(label, p)))
    }

    /// The key named `label`, generated if there is none yet.
    pub fn find_or_generate(&self, label: &str) -> Result<Key, KeyError> {
        match self.find(label)? {
            Some(key) => Ok(key),
            None => self.generate(label),
        }
    }

    /// Destroys the key named `label`; whether there was one.
    pub fn destroy(&self, label: &str) -> Result<bool, KeyError> {
        check_label(label)?;
        match &*self.0 {
            Backend::File(f) => f.destroy(label),
            Backend::Hsm(h) => h.destroy(label),
        }
    }

    /// The security attributes the token reports for the private half of `label` (sensitive,
    /// not extractable, its value unreadable), for audits and tests; `None` if there is no such
    /// key. An error for the file keystore, whose keys have no such attributes.
    pub fn hsm_attributes(&self, label: &str) -> Result<Option<PrivateKeyAttributes>, KeyError> {
        check_label(label)?;
        match &*self.0 {
            Backend::File(f) => Err(KeyError::Config(format!(
                "key {label} is in a file keystore ({}), not an HSM: it has no PKCS#11 attributes",
                f.dir().display()
            ))),
            Backend::Hsm(h) => h.private_key_attributes(label),
        }
    }

    fn key(&self, label: &str, public: PublicKey) -> Key {
        Key {
            store: self.clone(),
            label: label.to_owned(),
            public,
        }
    }

    fn sign(&self, label: &str, message: &[u8]) -> Result<Signature, KeyError> {
        match &*self.0 {
            Backend::File(f) => f.sign(label, message),
            Backend::Hsm(h) => h.sign(label, message),
        }
    }
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A key pair in a keystore: its public half, and signing by the keystore.
#[derive(Clone, Debug)]
pub struct Key {
    store: Keystore,
    label: String,
    public: PublicKey,
}

impl Key {
    /// Also the `key_id` of what it signs.
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Signs `message` inside the keystore. Blocking: an HSM call takes tens of microseconds
    /// (SoftHSM2), a network HSM a round trip.
    pub fn sign(&self, message: &[u8]) -> Result<Signature, KeyError> {
        self.store.sign(&self.label, message)
    }
}

fn check_label(label: &str) -> Result<(), KeyError> {
    if model::valid_id(label) {
        Ok(())
    } else {
        Err(KeyError::BadLabel(label.chars().take(80).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_key_signs_what_its_public_key_verifies_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = Keystore::file(dir.path()).unwrap();
        let key = store.generate("r-1.k1").unwrap();
        let sig = key.sign(b"gas=60").unwrap();
        assert!(verify(&key.public_key(), b"gas=60", &sig));
        assert!(!verify(&key.public_key(), b"gas=61", &sig));
        let other = store.generate("r-2.k1").unwrap();
        assert!(!verify(&other.public_key(), b"gas=60", &sig));
        let mut forged = sig;
        forged[0] ^= 1;
        assert!(!verify(&key.public_key(), b"gas=60", &forged));

        // Reopened, the same key signs again; a label is taken once.
        let again = Keystore::file(dir.path()).unwrap();
        let found = again.find("r-1.k1").unwrap().unwrap();
        assert_eq!(found.public_key(), key.public_key());
        assert!(matches!(again.generate("r-1.k1"), Err(KeyError::Exists(_))));
        assert!(again.destroy("r-1.k1").unwrap());
        assert!(again.find("r-1.k1").unwrap().is_none());
        assert!(matches!(
            again.generate("no spaces"),
            Err(KeyError::BadLabel(_))
        ));
    }

    #[test]
    fn public_keys_round_trip_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = Keystore::file(dir.path())
            .unwrap()
            .generate("k")
            .unwrap()
            .public_key();
        assert_eq!(PublicKey::from_base64(&key.to_base64()).unwrap(), key);
        assert!(PublicKey::from_base64("not base64!").is_err());
        assert!(PublicKey::from_base64(&B64.encode([1u8; 31])).is_err());
    }
}
