//! Control commands on `roasters/{device_id}/commands` and their acknowledgements on
//! `roasters/{device_id}/commands/ack` (docs/protocol.md, "Commands").
//!
//! ```json
//! {"v": 1, "id": "cmd-7f3a", "session": "roast-0042", "control": "gas", "value": 62.5,
//!  "issued_ts": 1795448417111, "not_after": 1795448447111, "nonce": "9c1e5b0a77d2e4f1",
//!  "key_id": "command-1", "sig": "<base64 Ed25519>"}
//!
//! {"v": 1, "command_id": "cmd-7f3a", "outcome": "applied", "ts": 1795448417502,
//!  "key_id": "r-1/2026-12", "sig": "<base64 Ed25519>"}
//! ```
//!
//! Both are signed with Ed25519: a command by the command service's key, an acknowledgement by
//! the device's. The signature covers [`Command::signed_bytes`] / [`Ack::signed_bytes`] — a
//! fixed, line-per-field text that names the device, so a command signed for one roaster is
//! refused by every other — never the JSON, whose spelling a relay may change. This module only
//! shapes and parses; who holds the keys and whom to trust is the `keys` crate's business.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::valid_id;

/// The wire version this module reads and writes.
pub const VERSION: u32 = 1;

/// Largest accepted command or ack payload, bytes.
pub const MAX_PAYLOAD: usize = 4096;

/// An Ed25519 signature.
pub type Signature = [u8; 64];

/// What a command changes: the roaster's controls, each in % of its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// Burner output.
    Gas,
    /// Exhaust fan (airflow through the drum).
    Air,
    /// Drum speed.
    Drum,
}

impl Control {
    pub const ALL: [Control; 3] = [Control::Gas, Control::Air, Control::Drum];

    pub fn as_str(self) -> &'static str {
        match self {
            Control::Gas => "gas",
            Control::Air => "air",
            Control::Drum => "drum",
        }
    }

    pub fn parse(s: &str) -> Option<Control> {
        Control::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A control change for one device, as sent to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Unique per command; the device acknowledges by it and refuses it a second time.
    pub id: String,
    /// Whom it is for: from the topic, and covered by the signature.
    pub device_id: String,
    /// The session it was approved for.
    pub session: String,
    pub control: Control,
    /// The new setting, % of the control's range.
    pub value: f64,
    /// When it was signed, epoch ms.
    pub issued_ms: i64,
    /// The device refuses it after this, epoch ms.
    pub not_after_ms: i64,
    /// Random, so that two commands with the same content never sign alike.
    pub nonce: String,
    /// The key that signed it.
    pub key_id: String,
    pub sig: Signature,
}

/// How a device answered a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The setting is in effect.
    Applied,
    /// Not applied; `reason` says why.
    Refused,
}

/// Why a device refused a command: stable codes, for audit logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Not a command: not JSON, a missing or ill-formed field, the wrong version.
    Malformed,
    /// Addressed to another device.
    Misaddressed,
    /// Signed by a key the device does not trust (unknown, or not the command service's).
    UnknownKey,
    /// Signed by a key that was revoked.
    RevokedKey,
    /// The signature does not verify: forged, or altered on the way.
    BadSignature,
    /// Arrived after its `not_after`.
    Expired,
    /// A command id (or nonce) already seen.
    Replayed,
    /// The device is not in the session the command was approved for.
    WrongSession,
    /// The driver could not apply it (the roaster did not answer, a register write failed).
    DriverError,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Misaddressed => "misaddressed",
            Refusal::UnknownKey => "unknown_key",
            Refusal::RevokedKey => "revoked_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired => "expired",
            Refusal::Replayed => "replayed",
            Refusal::WrongSession => "wrong_session",
            Refusal::DriverError => "driver_error",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device's acknowledgement of a command.
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    pub command_id: String,
    /// From the topic, and covered by the signature.
    pub device_id: String,
    pub outcome: Outcome,
    /// Set when refused.
    pub reason: Option<Refusal>,
    /// Free text for people (a driver's error); not signed, never acted on.
    pub detail: Option<String>,
    /// When the device answered, epoch ms.
    pub ts_ms: i64,
    /// The device key that signed it.
    pub key_id: String,
    pub sig: Signature,
}

/// Why a command or ack payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("payload of {0} bytes is larger than {MAX_PAYLOAD}")]
    TooLarge(usize),
    #[error("not a v{VERSION} message: {0}")]
    Json(String),
    #[error("{field}: {reason}")]
    Field {
        field: &'static str,
        reason: &'static str,
    },
}

fn field(field: &'static str, reason: &'static str) -> WireError {
    WireError::Field { field, reason }
}

/// One line per field, each `name=value`, under a header naming what is signed: a
/// signature over a command can never be taken for one over an ack. Floats in Rust's shortest
/// round-trip form, so signer and verifier agree on the bytes of every value they both parse.
fn lines(header: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    out.push_str(header);
    out.push('\n');
    for (k, v) in fields {
        out.push_str(k);
        out.push('=');
        out.push_str(v);
        out.push('\n');
    }
    out.into_bytes()
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandWire {
    v: u32,
    id: String,
    session: String,
    control: Control,
    value: f64,
    issued_ts: i64,
    not_after: i64,
    nonce: String,
    key_id: String,
    sig: String,
}

impl Command {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        lines(
            "simcorp-command-v1",
            &[
                ("id", &self.id),
                ("device_id", &self.device_id),
                ("session", &self.session),
                ("control", self.control.as_str()),
                ("value", &self.value.to_string()),
                ("issued_ts", &self.issued_ms.to_string()),
                ("not_after", &self.not_after_ms.to_string()),
                ("nonce", &self.nonce),
                ("key_id", &self.key_id),
            ],
        )
    }

    /// The wire form, as published on `roasters/{device_id}/commands`.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = CommandWire {
            v: VERSION,
            id: self.id.clone(),
            session: self.session.clone(),
            control: self.control,
            value: self.value,
            issued_ts: self.issued_ms,
            not_after: self.not_after_ms,
            nonce: self.nonce.clone(),
            key_id: self.key_id.clone(),
            sig: B64.encode(self.sig),
        };
        // Strings and finite numbers (checked when built) always serialize.
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Reads a command received on `roasters/{device_id}/commands`. Checks its shape only: the
    /// signature, the expiry and replays are the receiver's to check, with its keys and clock.
    pub fn decode(device_id: &str, payload: &[u8]) -> Result<Command, WireError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(WireError::TooLarge(payload.len()));
        }
        let w: CommandWire =
            serde_json::from_slice(payload).map_err(|e| WireError::Json(e.to_string()))?;
        if w.v != VERSION {
            return Err(field("v", "unsupported version"));
        }
        check_id("id", &w.id)?;
        check_id("session", &w.session)?;
        check_id("nonce", &w.nonce)?;
        check_id("key_id", &w.key_id)?;
        if !(w.value.is_finite() && (0.0..=100.0).contains(&w.value)) {
            return Err(field("value", "must be a number from 0 to 100"));
        }
        if w.not_after < w.issued_ts {
            return Err(field("not_after", "is before issued_ts"));
        }
        Ok(Command {
            id: w.id,
            device_id: device_id.to_owned(),
            session: w.session,
            control: w.control,
            value: w.value,
            issued_ms: w.issued_ts,
            not_after_ms: w.not_after,
            nonce: w.nonce,
            key_id: w.key_id,
            sig: decode_sig(&w.sig)?,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckWire {
    v: u32,
    command_id: String,
    outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<Refusal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    ts: i64,
    key_id: String,
    sig: String,
}

/// Longest `detail` kept, characters.
const MAX_DETAIL: usize = 500;

impl Ack {
    /// The bytes the signature covers (`detail` is not among them).
    pub fn signed_bytes(&self) -> Vec<u8> {
        lines(
            "simcorp-command-ack-v1",
            &[
                ("command_id", &self.command_id),
                ("device_id", &self.device_id),
                (
                    "outcome",
                    match self.outcome {
                        Outcome::Applied => "applied",
                        Outcome::Refused => "refused",
                    },
                ),
                ("reason", self.reason.map_or("", Refusal::as_str)),
                ("ts", &self.ts_ms.to_string()),
                ("key_id", &self.key_id),
            ],
        )
    }

    /// The wire form, as published on `roasters/{device_id}/commands/ack`.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = AckWire {
            v: VERSION,
            command_id: self.command_id.clone(),
            outcome: self.outcome,
            reason: self.reason,
            detail: self.detail.clone(),
            ts: self.ts_ms,
            key_id: self.key_id.clone(),
            sig: B64.encode(self.sig),
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Reads an acknowledgement received on `roasters/{device_id}/commands/ack`; the signature
    /// is the receiver's to check.
    pub fn decode(device_id: &str, payload: &[u8]) -> Result<Ack, WireError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(WireError::TooLarge(payload.len()));
        }
        let w: AckWire =
            serde_json::from_slice(payload).map_err(|e| WireError::Json(e.to_string()))?;
        if w.v != VERSION {
            return Err(field("v", "unsupported version"));
        }
        check_id("command_id", &w.command_id)?;
        check_id("key_id", &w.key_id)?;
        match (w.outcome, w.reason) {
            (Outcome::Refused, None) => return Err(field("reason", "a refusal needs a reason")),
            (Outcome::Applied, Some(_)) => {
                return Err(field("reason", "an applied command has no reason"));
            }
            _ => {}
        }
        Ok(Ack {
            command_id: w.command_id,
            device_id: device_id.to_owned(),
            outcome: w.outcome,
            reason: w.reason,
            detail: w.detail.map(|d| d.chars().take(MAX_DETAIL).collect()),
            ts_ms: w.ts,
            key_id: w.key_id,
            sig: decode_sig(&w.sig)?,
        })
    }
}

fn check_id(name: &'static str, value: &str) -> Result<(), WireError> {
    if valid_id(value) {
        Ok(())
    } else {
        Err(field(name, "must be 1–64 characters of [A-Za-z0-9._:-]"))
    }
}

fn decode_sig(s: &str) -> Result<Signature, WireError> {
    B64.decode(s)
        .ok()
        .and_then(|b| Signature::try_from(b.as_slice()).ok())
        .ok_or(field(
            "sig",
            "must be a base64 Ed25519 signature (64 bytes)",
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> Command {
        Command {
            id: "cmd-1".into(),
            device_id: "r-1".into(),
            session: "roast-1".into(),
            control: Control::Gas,
            value: 62.5,
            issued_ms: 1_795_448_417_111,
            not_after_ms: 1_795_448_447_111,
            nonce: "9c1e5b0a77d2e4f1".into(),
            key_id: "command-1".into(),
            sig: [7; 64],
        }
    }

    #[test]
    fn a_command_round_trips_and_its_signed_bytes_name_the_device() {
        let c = command();
        let back = Command::decode("r-1", &c.to_json()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.signed_bytes(), c.signed_bytes());
        let text = String::from_utf8(c.signed_bytes()).unwrap();
        assert!(text.starts_with("simcorp-command-v1\nid=cmd-1\ndevice_id=r-1\n"));
        assert!(text.contains("value=62.5\n"));
        // The same payload read off another device's topic signs differently.
        let elsewhere = Command::decode("r-2", &c.to_json()).unwrap();
        assert_ne!(elsewhere.signed_bytes(), c.signed_bytes());
    }

    #[test]
    fn bad_commands_are_refused_with_the_field() {
        let json = String::from_utf8(command().to_json()).unwrap();
        let cases = [
            (json.replace("62.5", "101"), "value"),
            (json.replace("\"v\":1", "\"v\":2"), "v"),
            (json.replace("cmd-1", "cmd 1"), "id"),
            (json.replace("1795448447111", "1795448417110"), "not_after"),
            (json.replace("\"gas\"", "\"steam\""), "not a v1"),
            (json.replace(",\"sig\"", ",\"extra\":1,\"sig\""), "not a v1"),
            (json[..json.len() - 10].to_owned(), "not a v1"),
        ];
        for (payload, want) in cases {
            let err = Command::decode("r-1", payload.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(want), "{payload}: {err}");
        }
        let short_sig = json.replace(&B64.encode([7u8; 64]), &B64.encode([7u8; 63]));
        let err = Command::decode("r-1", short_sig.as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("sig:"), "{err}");
        let big = vec![b' '; MAX_PAYLOAD + 1];
        assert_eq!(
            Command::decode("r-1", &big),
            Err(WireError::TooLarge(MAX_PAYLOAD + 1))
        );
    }

    #[test]
    fn an_ack_round_trips_and_a_refusal_needs_its_reason() {
        let ack = Ack {
            command_id: "cmd-1".into(),
            device_id: "r-1".into(),
            outcome: Outcome::Refused,
            reason: Some(Refusal::Expired),
            detail: Some("arrived 3 s late".into()),
            ts_ms: 1_795_448_417_502,
            key_id: "r-1.2026-12".into(),
            sig: [9; 64],
        };
        let back = Ack::decode("r-1", &ack.to_json()).unwrap();
        assert_eq!(back, ack);
        let text = String::from_utf8(ack.signed_bytes()).unwrap();
        assert!(text.contains("reason=expired\n") && !text.contains("3 s late"));

        let json = String::from_utf8(ack.to_json()).unwrap();
        let no_reason = json.replace(",\"reason\":\"expired\"", "");
        assert!(
            Ack::decode("r-1", no_reason.as_bytes())
                .unwrap_err()
                .to_string()
                .starts_with("reason:")
        );
    }
}
