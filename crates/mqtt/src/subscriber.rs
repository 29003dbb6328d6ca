use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{
    AsyncClient, Event, Outgoing, Packet, Publish, QoS, SubscribeFilter, SubscribeReasonCode,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Config, MqttError};

/// What acknowledges one received message: valid only on the connection (epoch) that received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    epoch: u64,
    pkid: u16,
    qos: QoS,
}

/// A message from the broker.
#[derive(Debug)]
pub struct Delivery {
    pub topic: String,
    pub payload: Bytes,
    /// `None` for QoS 0 messages, which are not acknowledged, and for a
    /// [`SessionMode::Clean`] subscriber, whose messages are acknowledged on receipt.
    pub ack: Option<AckToken>,
    pub received: Instant,
    pub received_ms: i64,
    /// The broker sent this before, on an earlier connection (MQTT DUP flag).
    pub redelivered: bool,
}

/// The subscriber's connection, as seen by readiness checks and the acker.
#[derive(Debug, Default)]
pub struct Connection {
    epoch: AtomicU64,
    connected: AtomicBool,
    subscribed: AtomicBool,
}

impl Connection {
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Connected, and the broker granted the subscriptions on this connection. Until then the
    /// broker drops messages for us that it holds no session for: readiness waits for this.
    pub fn is_subscribed(&self) -> bool {
        self.is_connected() && self.subscribed.load(Ordering::Acquire)
    }

    /// Increases with every successful (re)connection.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
}

/// What the broker keeps for a subscriber while it is away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMode {
    /// Subscriptions and every unacknowledged message, until the subscriber returns (its acks
    /// are manual): for consumers that must see every message, like ingestion.
    Persistent,
    /// Nothing: a clean session on every connection, acknowledged on receipt, and
    /// [`Delivery::ack`] is always `None`. For consumers of the whole stream that can catch up
    /// another way (event-inference, from the store): a persistent session left behind by such a
    /// consumer makes the broker queue the entire stream for it, and once that queue reaches
    /// hundreds of thousands of messages the broker's autosave stalls every device's PUBACK.
    Clean,
}

/// A subscription, not yet running. The client exists from [`Subscriber::new`] on, so the
/// acker can be handed out before messages flow.
pub struct Subscriber {
    client: AsyncClient,
    eventloop: rumqttc::EventLoop,
    connection: Arc<Connection>,
    client_id: String,
    filters: Vec<String>,
    backoff: crate::config::Backoff,
    mode: SessionMode,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("client_id", &self.client_id)
            .field("filters", &self.filters)
            .finish_non_exhaustive()
    }
}

/// A running subscriber.
#[derive(Debug)]
pub struct SubscriberHandle {
    client: AsyncClient,
    connection: Arc<Connection>,
    stop_intake: CancellationToken,
    finish: CancellationToken,
    task: JoinHandle<()>,
}

impl Subscriber {
    /// A [`SessionMode::Persistent`] subscriber. `filters` are subscribed at QoS 1 on every
    /// connection (harmless when the broker kept the session, essential when it did not).
    pub fn new(
        config: &Config,
        client_id: String,
        filters: Vec<String>,
    ) -> Result<Self, MqttError> {
        Self::with_session(config, client_id, filters, SessionMode::Persistent)
    }

    pub fn with_session(
        config: &Config,
        client_id: String,
        filters: Vec<String>,
        mode: SessionMode,
    ) -> Result<Self, MqttError> {
        let mut options = config.options(&client_id, mode == SessionMode::Persistent)?;
        options.set_clean_session(mode == SessionMode::Clean);
        // Acks travel through this channel; it only needs to hold what the broker has in flight.
        let (client, mut eventloop) = AsyncClient::new(options, 10_000);
        eventloop.network_options.set_tcp_nodelay(true);
        eventloop.network_options.set_connection_timeout(10);
        Ok(Subscriber {
            client,
            eventloop,
            connection: Arc::new(Connection::default()),
            client_id,
            filters,
            backoff: config.backoff(),
            mode,
        })
    }

    /// Acknowledges messages, by their tokens, when the caller says so.
    pub fn acker(&self) -> MqttAcker {
        MqttAcker {
            client: self.client.clone(),
            connection: self.connection.clone(),
        }
    }

    pub fn connection(&self) -> Arc<Connection> {
        self.connection.clone()
    }

    /// Starts the polling task. `handler` is awaited for each message, in arrival order; while it
    /// waits, nothing more is read from the broker.
    pub fn spawn<H, F>(self, handler: H) -> SubscriberHandle
    where
        H: FnMut(Delivery) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let stop_intake = CancellationToken::new();
        let finish = CancellationToken::new();
        let looper = PollLoop {
            client: self.client.clone(),
            connection: self.connection.clone(),
            filters: self.filters,
            client_id: self.client_id,
            stop_intake: stop_intake.clone(),
            finish: finish.clone(),
            backoff: self.backoff,
            mode: self.mode,
        };
        let task = tokio::spawn(looper.run(self.eventloop, handler));
        SubscriberHandle {
            client: self.client,
            connection: self.connection,
            stop_intake,
            finish,
            task,
        }
    }
}

impl SubscriberHandle {
    pub fn acker(&self) -> MqttAcker {
        MqttAcker {
            client: self.client.clone(),
            connection: self.connection.clone(),
        }
    }

    pub fn connection(&self) -> Arc<Connection> {
        self.connection.clone()
    }

    /// Stops handing messages to the handler. Messages that arrive afterwards are left
    /// unacknowledged: the broker keeps them in our session and redelivers them later.
    pub fn stop_intake(&self) {
        self.stop_intake.cancel();
    }

    /// Disconnects once the acks already requested have been sent, and waits for the polling
    /// task to end (at most `timeout`).
    pub async fn finish(mut self, timeout: Duration) {
        self.stop_intake.cancel();
        self.finish.cancel();
        if tokio::time::timeout(timeout, &mut self.task).await.is_err() {
            tracing::warn!("MQTT client did not disconnect in time; dropping the connection");
            self.task.abort();
        }
    }
}

struct PollLoop {
    client: AsyncClient,
    connection: Arc<Connection>,
    filters: Vec<String>,
    client_id: String,
    stop_intake: CancellationToken,
    finish: CancellationToken,
    backoff: crate::config::Backoff,
    mode: SessionMode,
}

impl PollLoop {
    async fn run<H, F>(mut self, mut eventloop: rumqttc::EventLoop, mut handler: H)
    where
        H: FnMut(Delivery) -> F + Send,
        F: Future<Output = ()> + Send,
    {
        let mut disconnecting = false;
        loop {
            let event = tokio::select! {
                biased;
                () = self.finish.cancelled(), if !disconnecting => {
                    disconnecting = true;
                    // Queued behind every ack already requested, so those are sent first.
                    // try_: the polling task must never await the client.
                    if self.client.try_disconnect().is_err() || !self.connection.is_connected() {
                        break;
                    }
                    continue;
                }
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => self.connected(ack.session_present),
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    crate::metrics::received();
                    if self.stop_intake.is_cancelled() {
                        continue;
                    }
                    handler(self.delivery(publish)).await;
                }
                Ok(Event::Incoming(Packet::SubAck(suback))) => {
                    if suback
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure))
                    {
                        tracing::error!(filters = ?self.filters, "the broker refused a subscription");
                    } else {
                        self.connection.subscribed.store(true, Ordering::Release);
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(error) => {
                    self.connection.connected.store(false, Ordering::Release);
                    self.connection.subscribed.store(false, Ordering::Release);
                    crate::metrics::connected(false);
                    if disconnecting {
                        break;
                    }
                    let delay = self.backoff.next_delay();
                    crate::metrics::connection_lost();
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost; reconnecting");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.finish.cancelled() => break,
                    }
                }
            }
        }
        self.connection.connected.store(false, Ordering::Release);
        crate::metrics::connected(false);
    }

    fn connected(&mut self, session_present: bool) {
        let epoch = self.connection.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.connection.connected.store(true, Ordering::Release);
        crate::metrics::connected(true);
        self.backoff.reset();
        if epoch > 1 && !session_present && self.mode == SessionMode::Persistent {
            // Not recoverable here: whatever the broker had queued for our previous session was
            // dropped by the broker (restart without persistence, or session expiry).
            crate::metrics::session_lost();
            tracing::warn!(client_id = %self.client_id, "the broker kept no session for this client; messages it held for us are gone");
        }
        tracing::info!(client_id = %self.client_id, epoch, session_present, "connected to the MQTT broker");
        let client = self.client.clone();
        let filters: Vec<_> = self
            .filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
            .collect();
        // A task of its own: awaiting the client here could deadlock the event loop.
        tokio::spawn(async move {
            if let Err(error) = client.subscribe_many(filters).await {
                tracing::warn!(%error, "could not request the subscription");
            }
        });
    }

    fn delivery(&self, publish: Publish) -> Delivery {
        let manual = self.mode == SessionMode::Persistent;
        let ack = (manual && publish.qos != QoS::AtMostOnce).then(|| AckToken {
            epoch: self.connection.epoch(),
            pkid: publish.pkid,
            qos: publish.qos,
        });
        Delivery {
            topic: publish.topic,
            payload: publish.payload,
            ack,
            received: Instant::now(),
            received_ms: model::now_ms(),
            redelivered: publish.dup,
        }
    }
}

/// Sends PUBACKs for the messages it is given tokens of, in that order.
#[derive(Debug, Clone)]
pub struct MqttAcker {
    client: AsyncClient,
    connection: Arc<Connection>,
}

impl MqttAcker {
    /// Sends the PUBACKs of `tokens`, in the order given. Tokens received on an earlier
    /// connection are skipped: the broker redelivers those messages on this one.
    pub async fn ack(&mut self, tokens: Vec<AckToken>) {
        let epoch = self.connection.epoch();
        let mut stale = 0u64;
        for token in tokens {
            if token.epoch != epoch {
                stale += 1;
                continue;
            }
            let mut publish = Publish::from_bytes(String::new(), token.qos, Bytes::new());
            publish.pkid = token.pkid;
            if self.client.ack(&publish).await.is_err() {
                // The client is gone (shutdown); the broker keeps the message for redelivery.
                return;
            }
        }
        if stale > 0 {
            crate::metrics::stale_acks(stale);
        }
    }
}
