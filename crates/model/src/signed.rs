//! Signed device messages (docs/protocol.md, "Signed messages"). A session or telemetry message
//! signed by its device's key is the message exactly as it would be sent unsigned, a newline, and
//! one more JSON object on a line of its own:
//!
//! ```text
//! {"session":"s-1","state":"start","ts":1700000000000}
//! {"key_id":"r-1-2026-12","sig":"<base64 Ed25519 signature>"}
//! ```
//!
//! The signature covers [`signed_bytes`]: a version line, the topic, and the first part's bytes
//! as they were sent. Those bytes, not the JSON they spell: nothing has to be written the same
//! way twice, by the device and by whoever verifies. The topic names the device and the kind of
//! message, so a message signed for one roaster, or a session message, is refused as anything
//! else. Two JSON texts a line apart are a JSON sequence that anyone's tools read (`jq` takes
//! both). Unsigned messages are unchanged, and every decoder in this crate reads either: whether
//! a signature is *required* and whose key it must be is the receiver's business (ingestion's
//! `require_signed_*`, the `keys` crate).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// What the signature covers: `simcorp-message-v1\n{topic}\n{body}`.
pub fn signed_bytes(topic: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + topic.len() + body.len());
    out.extend_from_slice(b"simcorp-message-v1\n");
    out.extend_from_slice(topic.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

/// A message's signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSignature {
    /// The device key that signed it (the device's key registry names it).
    pub key_id: String,
    pub sig: [u8; 64],
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    key_id: &'a str,
    sig: &'a str,
}

/// Why a signature line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the signature line is unreadable: {0}")]
pub struct BadSignatureLine(&'static str);

/// Splits a payload into the message and its signature line, if it has one. A last line that
/// is not a signature line (a pretty-printed message's closing bracket) is part of the message.
pub fn split(payload: &[u8]) -> (&[u8], Option<Result<MessageSignature, BadSignatureLine>>) {
    let trimmed = payload.trim_ascii_end();
    let Some(newline) = trimmed.iter().rposition(|&b| b == b'\n') else {
        return (payload, None);
    };
    let (body, last) = (&trimmed[..newline], trimmed[newline + 1..].trim_ascii());
    if !last.starts_with(b"{\"key_id\"") {
        return (payload, None);
    }
    let parsed = serde_json::from_slice::<Line<'_>>(last)
        .map_err(|_| BadSignatureLine("expected {\"key_id\":…,\"sig\":…}"))
        .and_then(|line| {
            if !crate::valid_id(line.key_id) {
                return Err(BadSignatureLine("the key id is not a valid id"));
            }
            let bytes = B64
                .decode(line.sig)
                .map_err(|_| BadSignatureLine("the signature is not base64"))?;
            let sig = <[u8; 64]>::try_from(bytes.as_slice())
                .map_err(|_| BadSignatureLine("an Ed25519 signature is 64 bytes"))?;
            Ok(MessageSignature {
                key_id: line.key_id.to_owned(),
                sig,
            })
        });
    (body.trim_ascii_end(), Some(parsed))
}

/// `body` with its signature line: what a device publishes.
pub fn append(body: &[u8], signature: &MessageSignature) -> Vec<u8> {
    let sig = B64.encode(signature.sig);
    let line = serde_json::to_vec(&Line {
        key_id: &signature.key_id,
        sig: &sig,
    })
    .expect("two strings serialize");
    let mut out = Vec::with_capacity(body.len() + 1 + line.len());
    out.extend_from_slice(body);
    out.push(b'\n');
    out.extend_from_slice(&line);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn signature() -> MessageSignature {
        MessageSignature {
            key_id: "r-1-k1".into(),
            sig: [7; 64],
        }
    }

    #[test]
    fn a_signed_message_splits_back_into_the_bytes_that_were_signed() {
        let body = br#"{"session":"s-1","state":"start","ts":1700000000000}"#;
        let payload = append(body, &signature());
        let (back, sig) = split(&payload);
        assert_eq!(back, body);
        assert_eq!(sig.unwrap().unwrap(), signature());
        // A trailing newline after the signature line is not part of anything.
        let mut with_newline = payload.clone();
        with_newline.push(b'\n');
        assert_eq!(split(&with_newline).0, body);
    }

    #[test]
    fn an_unsigned_message_is_all_message_even_pretty_printed() {
        let pretty = b"[\n  {\"session\": \"s-1\"}\n]\n";
        let (body, sig) = split(pretty);
        assert_eq!(body, pretty);
        assert!(sig.is_none());
        assert_eq!(split(b"{}").0, b"{}");
    }

    #[test]
    fn a_mangled_signature_line_is_said_to_be_one() {
        for line in [
            r#"{"key_id":"k1"}"#,
            r#"{"key_id":"k1","sig":"not base64!"}"#,
            r#"{"key_id":"k1","sig":"AAAA"}"#,
            r#"{"key_id":"k 1","sig":"AAAA"}"#,
            r#"{"key_id":"k1","sig":"AAAA","extra":1}"#,
        ] {
            let payload = format!("{{}}\n{line}");
            let (body, sig) = split(payload.as_bytes());
            assert_eq!(body, b"{}");
            assert!(sig.unwrap().is_err(), "{line}");
        }
    }

    #[test]
    fn the_topic_is_signed_with_the_message() {
        assert_ne!(
            signed_bytes("roasters/r-1/session", b"{}"),
            signed_bytes("roasters/r-2/session", b"{}")
        );
        assert_eq!(
            signed_bytes("roasters/r-1/telemetry", b"[1]"),
            b"simcorp-message-v1\nroasters/r-1/telemetry\n[1]"
        );
    }
}
