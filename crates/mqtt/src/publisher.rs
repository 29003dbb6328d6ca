use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use tokio::task::JoinHandle;

use crate::{Config, MqttError};

/// Counts of one publisher, for harnesses and tests.
#[derive(Debug)]
pub struct PublisherStats {
    /// QoS 1 publishes requested.
    pub requested: AtomicU64,
    /// PUBACKs received from the broker.
    pub acked: AtomicU64,
    pub reconnects: AtomicU64,
    connected: AtomicBool,
    /// For every QoS 1 publish: from writing it to the network to the broker's PUBACK, in µs.
    ack_latency: Mutex<Histogram<u64>>,
}

impl Default for PublisherStats {
    fn default() -> Self {
        PublisherStats {
            requested: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            ack_latency: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .expect("constant histogram bounds are valid"),
            ),
        }
    }
}

impl PublisherStats {
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Publish-to-PUBACK time of every acknowledged publish so far (µs). A harness takes one
    /// before and one after a run and subtracts them.
    pub fn ack_latency(&self) -> Histogram<u64> {
        self.ack_latency
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
}

/// A publishing client with a persistent session: publishes not yet acknowledged by the broker
/// are retransmitted after a reconnect rather than dropped, as a real device must do.
#[derive(Debug)]
pub struct Publisher {
    client: AsyncClient,
    stats: Arc<PublisherStats>,
    task: JoinHandle<()>,
}

impl Publisher {
    /// Connects, waiting (at most `timeout`) until the broker accepted the connection.
    pub async fn connect(
        config: &Config,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Self, MqttError> {
        let options = config.options(client_id, false)?;
        let (client, mut eventloop) = AsyncClient::new(options, 10_000);
        eventloop.network_options.set_tcp_nodelay(true);
        let stats = Arc::new(PublisherStats::default());
        let mut backoff = config.backoff();

        // First connection in the foreground, so callers learn at once if the broker is absent.
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last_error = match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_owned(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(MqttError::ConnectTimeout {
                    addr: config.url.clone(),
                    timeout,
                    last_error,
                });
            }
            tokio::time::sleep(
                backoff
                    .next_delay()
                    .min(deadline - tokio::time::Instant::now()),
            )
            .await;
        }
        stats.connected.store(true, Ordering::Release);
        backoff.reset();

        let task_stats = stats.clone();
        let task = tokio::spawn(async move {
            // When each in-flight packet id went out, to time its PUBACK. A retransmission
            // after a reconnect restarts the clock of its packet id.
            let mut sent: Vec<Option<Instant>> = vec![None; usize::from(u16::MAX) + 1];
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
                        sent[usize::from(pkid)] = Some(Instant::now());
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        task_stats.acked.fetch_add(1, Ordering::Relaxed);
                        if let Some(at) = sent[usize::from(ack.pkid)].take()
                            && let Ok(mut h) = task_stats.ack_latency.lock()
                        {
                            let us = at.elapsed().as_micros().clamp(1, 3_600_000_000) as u64;
                            let _ = h.record(us);
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        task_stats.connected.store(true, Ordering::Release);
                        task_stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        backoff.reset();
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::RequestsDone) => break,
                    Err(error) => {
                        task_stats.connected.store(false, Ordering::Release);
                        tracing::debug!(%error, "publisher connection lost; reconnecting");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        });
        Ok(Publisher {
            client,
            stats,
            task,
        })
    }

    /// Queues a publish; returns when the client accepted it (not when the broker acked it —
    /// see [`flush`](Self::flush) and [`stats`](Self::stats)).
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        qos: QoS,
        payload: impl Into<Bytes>,
    ) -> Result<(), MqttError> {
        if qos != QoS::AtMostOnce {
            self.stats.requested.fetch_add(1, Ordering::Relaxed);
        }
        self.client
            .publish_bytes(topic, qos, false, payload.into())
            .await
            .map_err(|_| MqttError::ClientClosed)
    }

    pub fn stats(&self) -> &Arc<PublisherStats> {
        &self.stats
    }

    /// Waits until the broker acknowledged every QoS 1 publish so far; false on timeout.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = &self.stats;
            if s.acked.load(Ordering::Relaxed) >= s.requested.load(Ordering::Relaxed) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Disconnects cleanly (after queued publishes are sent).
    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Removes the broker's persistent session of `client_id` by connecting once with a clean
/// session. For clients whose id will not come back (a finished load run, a decommissioned
/// device): brokers keep persistent sessions — and what is queued for them — indefinitely.
/// Best effort: gives up silently after `timeout`.
pub async fn forget_session(config: &Config, client_id: &str, timeout: Duration) {
    let Ok(mut options) = config.options(client_id, false) else {
        return;
    };
    options.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let _ = tokio::time::timeout(timeout, async {
        let mut disconnecting = false;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) if !disconnecting => {
                    disconnecting = true;
                    // try_: awaiting the client before the next poll could deadlock.
                    if client.try_disconnect().is_err() {
                        break;
                    }
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}
