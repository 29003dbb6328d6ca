//! The file keystore: one JSON file per key (`<label>.key`, mode 0600) under a directory.
//! Development only — its private keys are on disk.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::Signer as _;
use serde::{Deserialize, Serialize};

use crate::{KeyError, PublicKey, Signature};

pub(crate) struct FileKeystore {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    label: String,
    /// The 32-byte Ed25519 seed.
    secret: String,
    public: String,
}

impl FileKeystore {
    pub(crate) fn open(dir: &Path) -> Result<FileKeystore, KeyError> {
        std::fs::create_dir_all(dir).map_err(|e| error(dir, e))?;
        Ok(FileKeystore {
            dir: dir.to_owned(),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.key"))
    }

    pub(crate) fn generate(&self, label: &str) -> Result<PublicKey, KeyError> {
        let signing = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let public = PublicKey(signing.verifying_key().to_bytes());
        let file = KeyFile {
            label: label.to_owned(),
            secret: B64.encode(signing.to_bytes()),
            public: public.to_base64(),
        };
        let path = self.path(label);
        let json = serde_json::to_vec_pretty(&file).map_err(|e| error(&path, e))?;
        // Written whole under a temporary name, then linked in: a crash leaves no half key, and
        // two processes generating the same label cannot both win.
        let tmp = self
            .dir
            .join(format!(".{label}.{}.tmp", std::process::id()));
        write_private(&tmp, &json).map_err(|e| error(&tmp, e))?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(public),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(KeyError::Exists(label.to_owned()))
            }
            Err(e) => Err(error(&path, e)),
        }
    }

    fn read(&self, label: &str) -> Result<Option<ed25519_dalek::SigningKey>, KeyError> {
        let path = self.path(label);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(error(&path, e)),
        };
        let file: KeyFile = serde_json::from_slice(&bytes).map_err(|e| error(&path, e))?;
        let seed: [u8; 32] = B64
            .decode(&file.secret)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| error(&path, "secret: not a base64 32-byte seed"))?;
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        if file.label != label || file.public != B64.encode(signing.verifying_key().to_bytes()) {
            return Err(error(
                &path,
                "label or public key does not match the secret",
            ));
        }
        Ok(Some(signing))
    }

    pub(crate) fn public_key(&self, label: &str) -> Result<Option<PublicKey>, KeyError> {
        Ok(self
            .read(label)?
            .map(|s| PublicKey(s.verifying_key().to_bytes())))
    }

    pub(crate) fn sign(&self, label: &str, message: &[u8]) -> Result<Signature, KeyError> {
        let signing = self
            .read(label)?
            .ok_or_else(|| KeyError::NotFound(label.to_owned()))?;
        Ok(signing.sign(message).to_bytes())
    }

    pub(crate) fn destroy(&self, label: &str) -> Result<bool, KeyError> {
        let path = self.path(label);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(error(&path, e)),
        }
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

fn error(path: &Path, reason: impl std::fmt::Display) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}
