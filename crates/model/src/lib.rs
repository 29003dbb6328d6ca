//! The device contract (v1) as types: MQTT topics, telemetry points, session lifecycle events,
//! dead letters, and the decoder that turns untrusted payloads into validated values.
//!
//! Everything that crosses the wire is checked here, once, so the rest of the platform can trust
//! a [`Point`]: its ids are well-formed, its `seq` fits PostgreSQL's `bigint`, its timestamp is
//! plausible, and every channel value is a finite number. Each rejection carries a stable
//! [`Rejection::code`] (for metrics and the dead-letter table) and a human-readable reason.
//!
//! This crate knows nothing about MQTT clients, storage or HTTP; it is pure and allocation-light
//! so it can be benchmarked and fuzzed in isolation. See `docs/protocol.md` for the contract in
//! prose.

pub mod command;
mod decode;
mod event;
pub mod invariants;
mod point;
mod reject;
pub mod signed;
mod topic;

pub use command::{Ack, Command, Control, Outcome, Refusal};
pub use decode::{Decoded, Limits, RejectedPoint, decode_session, decode_telemetry};
pub use event::{RoastEvent, decode_event};
pub use point::{Batch, Channels, DeadLetter, Point, SessionEvent, SessionState};
pub use reject::Rejection;
pub use topic::{Topic, TopicKind, parse_topic, valid_id};

/// Current wall-clock time as Unix epoch milliseconds, the unit of `ts` on the wire.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
