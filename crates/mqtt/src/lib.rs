//! MQTT for the platform, on rumqttc: the subscriber that feeds ingestion, the acker that
//! acknowledges a message only once its points are durable, and a publisher for simulators,
//! the load harness and tests.
//!
//! How the subscriber keeps "nothing acknowledged is lost":
//! - **Persistent session**: `clean_session = false` with a stable client id, so the broker keeps
//!   our subscriptions and every unacknowledged message while we are away (restart, crash).
//! - **Manual acks**: rumqttc would otherwise PUBACK on receipt. [`MqttAcker`] PUBACKs only the
//!   tokens it is given; the caller (ingestion) gives it a message's token once its records are
//!   committed. This crate knows nothing of what "committed" means.
//! - **Connection epochs**: a PUBACK names a packet id, which is only meaningful on the connection
//!   that received it. Each (re)connection starts a new epoch; a token from an older epoch is not
//!   sent, because the broker redelivers that message on the new connection anyway (and the
//!   idempotent write absorbs the duplicate).
//! - **The polling task never awaits the client.** rumqttc's `AsyncClient` sends requests through
//!   a bounded channel that only the event loop drains; a task that polls the event loop and also
//!   awaits `client.ack()` can deadlock. Acks are sent from the acker task; the polling task only
//!   awaits the message handler, and that wait *is* the backpressure: while it waits, nothing is
//!   read from the socket and the broker's in-flight window stays full.
//!
//! Not here: decoding payloads (the ingestion service does that) or a broker (crate `broker`).

mod config;
pub mod metrics;
mod publisher;
mod subscriber;

pub use config::{Config, Endpoint, MqttError};
pub use publisher::{Publisher, PublisherStats, forget_session};
pub use rumqttc::QoS;
pub use subscriber::{
    AckToken, Connection, Delivery, MqttAcker, SessionMode, Subscriber, SubscriberHandle,
};
