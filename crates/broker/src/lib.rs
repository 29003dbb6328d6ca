//! The embedded MQTT 3.1.1 broker of `simcorp up`: it runs inside the `simcorp` process so
//! that the whole platform, devices included, works on a laptop with no server installed,
//! and so that tests can exercise the embedded path end to end. It is for local development
//! and tests only, never a production broker: production uses Mosquitto, EMQX or HiveMQ.
//!
//! It exists because the `rumqttd` crate, tried first, lost 1,634 of 20,000 QoS 1 messages
//! across a persistent-session reconnect with a shared subscription, and its router panicked
//! ("group must exists"). This broker is small and aims at one thing: nothing that was
//! acknowledged is lost, and no input from the network can panic it. Packets are decoded and
//! encoded by `rumqttc`'s v4 codec; everything else is here.
//!
//! # What it supports
//!
//! - MQTT 3.1.1 (protocol level 4) over plain TCP; other levels get CONNACK "unacceptable
//!   protocol version".
//! - Clean and persistent sessions, kept in memory: subscriptions, queued messages and
//!   unacknowledged in-flight messages survive a disconnect; on resume the in-flight ones are
//!   re-sent first (DUP=1, same packet ids, in order). A second connection with a client id
//!   already connected takes the session over and closes the first (without its will).
//! - QoS 0 and 1 delivery; QoS 2 *from* publishers (PUBREC/PUBREL/PUBCOMP, de-duplicated by
//!   packet id), delivered at QoS 1 at most. Granted QoS is at most 1.
//! - Wildcards `+` and `#` (`$` topics are not matched by filters starting with a
//!   wildcard), retained messages, last wills, keep-alive (1.5 × the client's value).
//! - Shared subscriptions `$share/{group}/{filter}`: each message goes to one member,
//!   round-robin, preferring connected members with room. If a member's session ends, the
//!   messages it had not acknowledged are handed to the rest of its group.
//! - A client with overlapping subscriptions gets one copy, at the highest granted QoS.
//!
//! Not supported: MQTT 5, QoS 2 delivery to subscribers, persistence to disk (a restart
//! loses every session), authentication and authorisation (credentials are ignored), TLS,
//! WebSockets, `$SYS` topics.
//!
//! # Its scope is frozen
//!
//! The list above is complete by decision, not yet-to-do: the broker serves the zero-install
//! `simcorp up` and the tests of the embedded path, and that needs nothing more. A feature the
//! platform needs from a broker (MQTT 5 session expiry, TLS, authentication, persistence, a
//! cluster) is a reason to run Mosquitto, EMQX, HiveMQ or VerneMQ — which every deployment does —
//! never a reason to grow this one. Fixes for loss, panics or contract deviations are welcome.
//!
//! # Flow control and backpressure
//!
//! Each session sends at most [`Config::max_inflight`] unacknowledged QoS 1 messages; the
//! rest wait in the session's queue, delivered in the order they were routed. Nothing is
//! dropped to make room: when a QoS 1 (or 2) PUBLISH is routed to a session whose queue
//! holds [`Config::max_queued`] messages, the publisher's connection is held back — its
//! PUBACK (PUBREC) is sent only once the message is queued for every matching session, and
//! the packets behind it are not handled until then. Meanwhile the broker keeps reading only
//! that client's PUBACKs and PINGREQs (and keeps up to a few MiB of other packets in order),
//! so that a client consuming its own publications, or two clients feeding each other, do
//! not deadlock; past that it stops reading the socket and TCP pushes back on the client.
//! A persistent session whose client stays away therefore eventually holds its publishers
//! back until it reconnects or is discarded by a clean-session connect with its client id.
//! QoS 0 messages to a full queue, or to a session that is offline, are dropped (counted in
//! the `simcorp_broker_qos0_dropped_total` counter): best effort by definition.
//!
//! # Design
//!
//! One task per connection reads and handles packets; a second one owns the socket's write
//! half and writes control replies and deliveries in batches (several packets per syscall).
//! Sessions live in a registry behind a `std::sync::Mutex`, each with its own mutex, both
//! held only for a few map operations and never across an `.await`; a session's writer is
//! woken with a `tokio::sync::Notify`.

mod connection;
pub mod metrics;
mod registry;
mod session;
mod topic;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, error, warn};

use crate::registry::Broker;

/// Broker limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Unacknowledged outgoing QoS 1 messages per session (at least 1).
    pub max_inflight: u16,
    /// Messages queued per session (not yet sent) before publishers are held back (at
    /// least 1).
    pub max_queued: usize,
    /// Largest packet accepted, counted as MQTT's "remaining length"; a larger one closes
    /// the connection.
    pub max_packet_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_inflight: 1000,
            max_queued: 100_000,
            // A 1 MiB payload plus room for the topic and headers.
            max_packet_bytes: 1024 * 1024 + 64 * 1024,
        }
    }
}

/// Why [`run`] stopped other than by being asked to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("the listener is not usable")]
    Listener(#[source] io::Error),
    #[error("accepting connections keeps failing")]
    Accept(#[source] io::Error),
}

/// Accept errors in a row, each followed by a pause, before [`run`] gives up.
const MAX_ACCEPT_FAILURES: u32 = 50;
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves MQTT on `listener` until `shutdown` resolves, then closes the listener and every
/// connection and returns. Sessions live as long as this call.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let addr = listener.local_addr().map_err(Error::Listener)?;
    let broker = Arc::new(Broker::new(config));
    debug!(%addr, "embedded MQTT broker listening");
    let mut connections = JoinSet::new();
    let mut failures = 0u32;
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break Ok(()),
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = joined
                    && e.is_panic()
                {
                    error!("a connection task panicked; that connection is closed");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    failures = 0;
                    connections.spawn(connection::serve(broker.clone(), stream, peer));
                }
                Err(e) if is_per_connection(&e) => debug!(error = %e, "accept failed"),
                Err(e) => {
                    failures += 1;
                    warn!(error = %e, failures, "accept failed; backing off");
                    if failures >= MAX_ACCEPT_FAILURES {
                        break Err(Error::Accept(e));
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    };
    drop(listener);
    broker.shutdown.cancel();
    while connections.join_next().await.is_some() {}
    debug!(%addr, "embedded MQTT broker stopped");
    result
}

/// Errors about one incoming connection, not about the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}
