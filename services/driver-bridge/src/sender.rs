//! Sends the outbox to the broker, in order, one message in flight: a message is deleted only
//! once the broker acknowledged it (PUBACK), and the next is sent only then, so a broker outage
//! can neither reorder nor lose anything. A message whose PUBACK was lost with the connection
//! is sent again on the next one; the device contract makes that copy harmless (a point's
//! identity is `(device_id, session, seq)`, and the bytes are the same).
//!
//! Each connection is a fresh client with a clean session: the outbox, not rumqttc's in-memory
//! state, is what survives a disconnect, so nothing but this loop ever retransmits — which
//! keeps "the PUBACK that comes next is for the message in flight" true.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use secrecy::ExposeSecret as _;
use tokio_util::sync::CancellationToken;

use store::outbox::{Outbox, OutboxError};

#[derive(Debug, Default)]
pub struct SenderState {
    pub connected: AtomicBool,
    pub sent: AtomicU64,
}

fn options(config: &mqtt::Config, client_id: &str) -> Result<MqttOptions, mqtt::MqttError> {
    let endpoint = mqtt::Endpoint::parse(&config.url)?;
    let mut options = MqttOptions::new(client_id, endpoint.host.clone(), endpoint.port);
    options
        .set_clean_session(true)
        .set_keep_alive(Duration::from_secs(u64::from(
            config.keep_alive_secs.max(5),
        )))
        .set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes);
    let username = config.username.clone().or(endpoint.username);
    let password = config
        .password
        .as_ref()
        .map(|p| p.expose_secret().to_owned())
        .or(endpoint.password);
    if let Some(user) = username {
        options.set_credentials(user, password.unwrap_or_default());
    }
    Ok(options)
}

/// Runs until `stop`; then keeps sending for at most `drain` so that a clean stop leaves
/// nothing behind when the broker is there (what remains is sent after the next start).
pub async fn run(
    config: mqtt::Config,
    client_id: String,
    outbox: Outbox,
    state: Arc<SenderState>,
    stop: CancellationToken,
    drain: Duration,
) -> Result<(), OutboxError> {
    let options = match options(&config, &client_id) {
        Ok(o) => o,
        Err(error) => {
            tracing::error!(%error, "cannot publish: bad MQTT settings");
            stop.cancelled().await;
            return Ok(());
        }
    };
    let deadline = CancellationToken::new();
    {
        let (stop, deadline) = (stop.clone(), deadline.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            tokio::time::sleep(drain).await;
            deadline.cancel();
        });
    }
    let mut delay = Duration::from_millis(config.reconnect_min_ms.max(1));
    let max_delay = Duration::from_millis(config.reconnect_max_ms.max(1));
    loop {
        if deadline.is_cancelled() || (stop.is_cancelled() && outbox.depth() == 0) {
            return Ok(());
        }
        match connection(&options, &outbox, &state, &stop, &deadline).await? {
            Ended::Done => return Ok(()),
            Ended::Lost(error) => {
                if state.connected.swap(false, Ordering::AcqRel) {
                    tracing::warn!(%error, backlog = outbox.depth(), "MQTT broker lost; buffering to disk");
                } else {
                    tracing::debug!(%error, "MQTT broker still unreachable");
                }
                crate::metrics::connected(false);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = deadline.cancelled() => return Ok(()),
        }
        delay = (delay * 2).min(max_delay);
        if state.connected.load(Ordering::Acquire) {
            delay = Duration::from_millis(config.reconnect_min_ms.max(1));
        }
    }
}

enum Ended {
    Done,
    Lost(String),
}

async fn connection(
    options: &MqttOptions,
    outbox: &Outbox,
    state: &SenderState,
    stop: &CancellationToken,
    deadline: &CancellationToken,
) -> Result<Ended, OutboxError> {
    let (client, mut eventloop) = AsyncClient::new(options.clone(), 16);
    eventloop.network_options.set_tcp_nodelay(true);
    eventloop.network_options.set_connection_timeout(5);
    // Wait for the CONNACK.
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            () = deadline.cancelled() => return Ok(Ended::Done),
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => break,
            Ok(_) => {}
            Err(e) => return Ok(Ended::Lost(e.to_string())),
        }
    }
    state.connected.store(true, Ordering::Release);
    crate::metrics::connected(true);
    tracing::info!(
        backlog = outbox.depth(),
        "connected to the MQTT broker; sending the outbox"
    );
    let mut in_flight: Option<i64> = None;
    loop {
        if in_flight.is_none() {
            if let Some(m) = outbox.head().await? {
                // try_: the channel holds 16 and only this loop sends, one at a time.
                if client
                    .try_publish(m.topic, QoS::AtLeastOnce, false, m.payload)
                    .is_err()
                {
                    return Ok(Ended::Lost("the client's queue refused a publish".into()));
                }
                in_flight = Some(m.seq);
            } else if stop.is_cancelled() {
                let _ = client.try_disconnect();
                return Ok(Ended::Done);
            }
        }
        let event = tokio::select! {
            e = eventloop.poll() => e,
            () = outbox.wait_pushed(), if in_flight.is_none() => continue,
            () = stop.cancelled(), if in_flight.is_none() && !stop.is_cancelled() => continue,
            () = deadline.cancelled() => return Ok(Ended::Done),
        };
        match event {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                if let Some(seq) = in_flight.take() {
                    outbox.delete(seq).await?;
                    crate::metrics::outbox_depth(outbox.depth());
                    state.sent.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::published();
                }
            }
            Ok(_) => {}
            Err(e) => return Ok(Ended::Lost(e.to_string())),
        }
    }
}
