//! Device signatures on session and telemetry messages (docs/protocol.md, "Signed messages"),
//! checked when `require_signed_sessions` / `require_signed_telemetry` ask for them: a message
//! unsigned, signed by a key the device does not hold, or whose signature does not verify is
//! refused whole — dead-lettered and counted (`simcorp_ingestion_rejected_total{reason=
//! "unsigned"|"bad_signature"}`) like any refusal.
//!
//! The keys are the device key registry's (the command service's, the store's `commands`
//! domain; ingestion only reads it). All usable keys — `active`, and `pending` ones in their
//! rotation overlap — are read at start and every `keys_refresh_secs`. A key not known yet is
//! looked up once before its message is judged (the subscriber awaits [`Verifier::prepare`]),
//! so a device registered a moment ago is not refused; a key the registry does not have costs
//! one lookup per refresh interval, not one per message. A revoked key stops verifying at the
//! next refresh.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use model::{Rejection, TopicKind, signed};
use store::CommandsStore;

/// Checks device signatures against the registry's keys. Shared by the subscriber's handler
/// (lookups) and the decoder (judgement).
#[derive(Debug)]
pub(crate) struct Verifier {
    sessions: bool,
    telemetry: bool,
    store: CommandsStore,
    refresh: Duration,
    ring: RwLock<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    /// `device_id → key_id → public key`, prepared to verify (`None`: registered but
    /// unreadable).
    keys: HashMap<String, HashMap<String, Option<keys::VerifyingKey>>>,
    /// Keys looked up and not found, and when: not asked again within the refresh interval.
    missing: HashMap<(String, String), Instant>,
}

impl Verifier {
    pub(crate) fn new(
        sessions: bool,
        telemetry: bool,
        store: CommandsStore,
        refresh: Duration,
    ) -> Self {
        Verifier {
            sessions,
            telemetry,
            store,
            refresh,
            ring: RwLock::new(Ring::default()),
        }
    }

    fn required(&self, kind: TopicKind) -> bool {
        match kind {
            TopicKind::Session => self.sessions,
            TopicKind::Telemetry => self.telemetry,
            _ => false,
        }
    }

    /// Reads every usable key again; returns how many there are.
    pub(crate) async fn refresh(&self) -> Result<usize, store::StoreError> {
        let found = self.store.usable_keys().await?;
        let count = found.len();
        let mut keys: HashMap<String, HashMap<String, Option<keys::VerifyingKey>>> = HashMap::new();
        for k in found {
            let public = prepared(&k.public_key);
            keys.entry(k.device_id)
                .or_default()
                .insert(k.key_id, public);
        }
        if let Ok(mut ring) = self.ring.write() {
            ring.keys = keys;
            ring.missing.clear();
        }
        Ok(count)
    }

    /// Before a message is decoded: if it names a key not known yet, looks that key up.
    pub(crate) async fn prepare(&self, topic: &str, payload: &[u8]) {
        let Ok(t) = model::parse_topic(topic) else {
            return;
        };
        if !self.required(t.kind) {
            return;
        }
        let Some(Ok(sig)) = signed::split(payload).1 else {
            return;
        };
        let wanted = (t.device_id.to_owned(), sig.key_id);
        {
            let Ok(ring) = self.ring.read() else { return };
            let known = ring
                .keys
                .get(&wanted.0)
                .is_some_and(|k| k.contains_key(&wanted.1));
            let asked = ring
                .missing
                .get(&wanted)
                .is_some_and(|at| at.elapsed() < self.refresh);
            if known || asked {
                return;
            }
        }
        match self.store.device_key(&wanted.0, &wanted.1).await {
            Ok(Some(k)) if matches!(k.state.as_str(), "active" | "pending") => {
                if let Ok(mut ring) = self.ring.write() {
                    let public = prepared(&k.public_key);
                    ring.keys
                        .entry(wanted.0)
                        .or_default()
                        .insert(wanted.1, public);
                }
            }
            Ok(_) => {
                if let Ok(mut ring) = self.ring.write() {
                    ring.missing.insert(wanted, Instant::now());
                }
            }
            // Judged on what is known; the refresh task reports a registry it cannot read.
            Err(error) => tracing::debug!(%error, "could not look up a device key"),
        }
    }

    /// Judges a message of `kind` from `device_id` on `topic`: `Ok` when no signature is
    /// required or it verifies.
    pub(crate) fn check(
        &self,
        topic: &str,
        device_id: &str,
        kind: TopicKind,
        payload: &[u8],
    ) -> Result<(), Rejection> {
        if !self.required(kind) {
            return Ok(());
        }
        let (body, sig) = signed::split(payload);
        let sig = match sig {
            None => {
                return Err(Rejection::Unsigned(match kind {
                    TopicKind::Session => "session",
                    _ => "telemetry",
                }));
            }
            Some(Err(e)) => return Err(Rejection::BadSignature(e.to_string())),
            Some(Ok(sig)) => sig,
        };
        let public = {
            let ring = self
                .ring
                .read()
                .map_err(|_| Rejection::BadSignature("the key ring is unavailable".into()))?;
            match ring.keys.get(device_id).and_then(|k| k.get(&sig.key_id)) {
                Some(Some(public)) => *public,
                Some(None) => {
                    return Err(Rejection::BadSignature(format!(
                        "key {:?} of {device_id} is registered unreadable",
                        sig.key_id
                    )));
                }
                None => {
                    return Err(Rejection::BadSignature(format!(
                        "{device_id} holds no usable key {:?} (unknown, retired or revoked)",
                        sig.key_id
                    )));
                }
            }
        };
        if public.verify(&signed::signed_bytes(topic, body), &sig.sig) {
            Ok(())
        } else {
            Err(Rejection::BadSignature(format!(
                "the signature does not verify with key {:?}",
                sig.key_id
            )))
        }
    }
}

/// A registered public key, ready to verify; `None` if it is not one.
fn prepared(base64: &str) -> Option<keys::VerifyingKey> {
    keys::PublicKey::from_base64(base64)
        .ok()
        .and_then(|k| k.verifying_key())
}
