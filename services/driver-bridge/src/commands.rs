//! Commands from the platform: each is checked — shape, a trusted key, its signature over the
//! bytes that name this device, its expiry, never seen before, the session it was approved for
//! — before the device loop applies it, and every one is answered on
//! `roasters/{device_id}/commands/ack` with an [`Ack`] signed by the device's own key.
//!
//! The order of the checks matters: a command's id and nonce are remembered only once its
//! signature verified, so forged traffic cannot fill the replay table or block a real command.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use model::command::{Ack, Command, Outcome, Refusal, Signature};
use model::{Topic, TopicKind};
use tokio::sync::oneshot;

use crate::device::{ControlRequest, DeviceHandle};
use store::outbox::Outbox;

/// The command keys the devices obey, by key id.
#[derive(Clone, Default)]
pub struct TrustedKeys(Arc<RwLock<HashMap<String, keys::PublicKey>>>);

impl TrustedKeys {
    pub fn insert(&self, key_id: String, key: keys::PublicKey) {
        if let Ok(mut k) = self.0.write() {
            k.insert(key_id, key);
        }
    }

    fn get(&self, key_id: &str) -> Option<keys::PublicKey> {
        self.0.read().ok()?.get(key_id).copied()
    }

    /// How many keys are trusted, for logs.
    pub fn count(&self) -> usize {
        self.0.read().map(|k| k.len()).unwrap_or(0)
    }
}

/// A device's identity: the key in the keystore that signs its acks.
pub struct Identity {
    pub key: keys::Key,
}

pub struct Commands {
    pub devices: HashMap<String, Arc<DeviceHandle>>,
    pub identities: HashMap<String, Identity>,
    pub trusted: TrustedKeys,
    pub outbox: Outbox,
}

/// The device id of a `roasters/{device_id}/commands` topic.
fn device_of(topic: &str) -> Option<&str> {
    topic
        .strip_prefix("roasters/")?
        .strip_suffix("/commands")
        .filter(|d| !d.contains('/'))
}

/// The `"id"` of a payload that is not a command, so that even a truncated or malformed one is
/// answered when its id can be made out.
fn salvage_id(payload: &[u8]) -> Option<String> {
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_slice::<serde_json::Value>(payload) {
        return o
            .get("id")
            .and_then(|v| v.as_str())
            .filter(|s| model::valid_id(s))
            .map(str::to_owned);
    }
    let text = String::from_utf8_lossy(payload);
    let rest = &text[text.find("\"id\"")? + 4..];
    let rest = rest
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let id = &rest[..rest.find('"')?];
    model::valid_id(id).then(|| id.to_owned())
}

impl Commands {
    /// Handles one message from `roasters/+/commands`.
    pub async fn handle(&self, topic: &str, payload: &[u8]) {
        let Some(device_id) = device_of(topic) else {
            tracing::warn!(%topic, "a command on an unexpected topic; ignored");
            return;
        };
        let Some(device) = self.devices.get(device_id) else {
            tracing::warn!(%device_id, "a command for a device this bridge does not drive; ignored");
            return;
        };
        let (command_id, result) = match Command::decode(device_id, payload) {
            Err(e) => match salvage_id(payload) {
                Some(id) => (id, Err((Refusal::Malformed, e.to_string()))),
                None => {
                    tracing::warn!(%device_id, error = %e, "a malformed command without a readable id; not answered");
                    crate::metrics::command("refused", Refusal::Malformed.as_str());
                    device.update(|v| *v.commands_refused.entry("malformed").or_default() += 1);
                    return;
                }
            },
            Ok(cmd) => (cmd.id.clone(), self.check_and_apply(device, cmd).await),
        };
        let (outcome, reason, detail) = match result {
            Ok(()) => (Outcome::Applied, None, None),
            Err((reason, detail)) => (Outcome::Refused, Some(reason), Some(detail)),
        };
        match reason {
            None => {
                tracing::info!(%device_id, %command_id, "command applied");
                crate::metrics::command("applied", "");
                device.update(|v| v.commands_applied += 1);
            }
            Some(r) => {
                tracing::warn!(%device_id, %command_id, reason = %r, detail = detail.as_deref().unwrap_or(""), "command refused");
                crate::metrics::command("refused", r.as_str());
                device.update(|v| *v.commands_refused.entry(r.as_str()).or_default() += 1);
            }
        }
        self.ack(device_id, command_id, outcome, reason, detail)
            .await;
    }

    async fn check_and_apply(
        &self,
        device: &DeviceHandle,
        cmd: Command,
    ) -> Result<(), (Refusal, String)> {
        let Some(key) = self.trusted.get(&cmd.key_id) else {
            return Err((
                Refusal::UnknownKey,
                format!("key {:?} is not a trusted command key", cmd.key_id),
            ));
        };
        if !keys::verify(&key, &cmd.signed_bytes(), &cmd.sig) {
            // Signed for another device this bridge drives: say so rather than "forged".
            let elsewhere = self.devices.keys().find(|other| {
                *other != &cmd.device_id && {
                    let mut c = cmd.clone();
                    c.device_id = (*other).clone();
                    keys::verify(&key, &c.signed_bytes(), &c.sig)
                }
            });
            return Err(match elsewhere {
                Some(other) => (
                    Refusal::Misaddressed,
                    format!("signed for device {other}, received on {}", cmd.device_id),
                ),
                None => (
                    Refusal::BadSignature,
                    "the signature does not verify".into(),
                ),
            });
        }
        let now = model::now_ms();
        if now > cmd.not_after_ms {
            return Err((
                Refusal::Expired,
                format!("expired {} ms ago", now - cmd.not_after_ms),
            ));
        }
        let fresh = self
            .outbox
            .remember_command(&cmd.device_id, &cmd.id, &cmd.nonce, cmd.not_after_ms, now)
            .await
            .map_err(|e| (Refusal::DriverError, format!("replay table: {e}")))?;
        if !fresh {
            return Err((Refusal::Replayed, "its id or nonce was seen before".into()));
        }
        let (done, answer) = oneshot::channel();
        let request = ControlRequest {
            session: cmd.session.clone(),
            control: cmd.control,
            value: cmd.value,
            done,
        };
        if device.controls.send(request).await.is_err() {
            return Err((Refusal::DriverError, "the device is stopping".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err((Refusal::DriverError, "the device is stopping".into())))
    }

    async fn ack(
        &self,
        device_id: &str,
        command_id: String,
        outcome: Outcome,
        reason: Option<Refusal>,
        detail: Option<String>,
    ) {
        let Some(identity) = self.identities.get(device_id) else {
            return;
        };
        let mut ack = Ack {
            command_id,
            device_id: device_id.to_owned(),
            outcome,
            reason,
            detail,
            ts_ms: model::now_ms(),
            key_id: identity.key.label().to_owned(),
            sig: [0; 64],
        };
        let key = identity.key.clone();
        let bytes = ack.signed_bytes();
        // An HSM signs over a round trip: off the executor.
        let sig: Result<Signature, String> =
            tokio::task::spawn_blocking(move || key.sign(&bytes).map_err(|e| e.to_string()))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
        match sig {
            Ok(sig) => ack.sig = sig,
            Err(error) => {
                tracing::error!(%device_id, %error, "cannot sign the ack; not sent");
                return;
            }
        }
        let topic = Topic::format(device_id, TopicKind::CommandAck);
        match self.outbox.push(&topic, &ack.to_json()).await {
            Ok(store::outbox::Pushed::Dropped) => {
                crate::metrics::outbox_dropped();
                tracing::warn!(%device_id, "outbox full: ack dropped");
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%device_id, %error, "cannot queue the ack"),
        }
        crate::metrics::outbox_depth(self.outbox.depth());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_are_salvaged_from_what_cannot_be_decoded() {
        assert_eq!(
            salvage_id(br#"{"v":1,"id":"cmd-1","val"#),
            Some("cmd-1".into())
        );
        assert_eq!(salvage_id(br#"{"v":2,"id":"cmd-2"}"#), Some("cmd-2".into()));
        assert_eq!(salvage_id(br#"{"v":1,"id":"bad id"}"#), None);
        assert_eq!(salvage_id(b"garbage"), None);
        assert_eq!(device_of("roasters/r-1/commands"), Some("r-1"));
        assert_eq!(device_of("roasters/r-1/commands/ack"), None);
    }
}
