//! One client connection: this task reads and handles packets; a writer task it spawns owns
//! the socket's write half and is the only one writing to it.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
    Subscribe, UnsubAck, Unsubscribe,
};
use rumqttc::mqttbytes::{self, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::registry::Broker;
use crate::session::{Msg, Outgoing, Session, min_qos};
use crate::topic;

/// A socket that has not sent a complete CONNECT by then is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read per syscall at most (and the writer's batch size).
const IO_CHUNK: usize = 64 * 1024;
/// Acks and other replies queued for the writer; when full, the reader waits (it is the
/// client not reading its socket).
const CONTROL_CAPACITY: usize = 1024;
/// While a publish is held back, packets read behind it are kept up to this many bytes; see
/// `Reader::wait_for_space`.
const STASH_BYTES: usize = 4 * 1024 * 1024;
/// How long a closing connection may take to write replies already queued.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the reader stopped.
enum End {
    /// DISCONNECT: the will is discarded.
    Disconnect,
    /// The client closed the socket (or it failed) without DISCONNECT.
    Gone,
    KeepAlive,
    Violation(String),
    /// Taken over, broker shutdown, or the writer failed.
    Cancelled,
}

pub(crate) async fn serve(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    if let Err(e) = stream.set_nodelay(true) {
        debug!(%peer, error = %e, "could not set TCP_NODELAY");
    }
    let (mut rd, wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(IO_CHUNK);
    let max = broker.config.max_packet_bytes;
    let first = tokio::select! {
        biased;
        () = broker.shutdown.cancelled() => return,
        first = timeout(CONNECT_TIMEOUT, read_connect(&mut rd, &mut buf, max)) => first,
    };
    let connect = match first {
        Err(_) => {
            debug!(%peer, "no CONNECT within {CONNECT_TIMEOUT:?}; closing");
            return;
        }
        Ok(First::Gone) => {
            debug!(%peer, "connection closed before CONNECT");
            return;
        }
        Ok(First::Violation(why)) => {
            warn!(%peer, "closing connection before CONNECT: {why}");
            return;
        }
        Ok(First::Refuse(code, why)) => {
            warn!(%peer, ?code, "refusing connection: {why}");
            refuse(rd, wr, code).await;
            return;
        }
        Ok(First::Connect(connect)) => connect,
    };
    if connect.client_id.is_empty() && !connect.clean_session {
        warn!(%peer, "refusing connection: empty client id with clean_session=0");
        refuse(rd, wr, ConnectReturnCode::BadClientId).await;
        return;
    }
    if let Some(will) = &connect.last_will
        && !topic::valid_topic_name(&will.topic)
    {
        warn!(%peer, topic = %will.topic, "closing connection: invalid will topic");
        return;
    }

    let conn_id = broker.next_conn_id();
    let client_id: Arc<str> = if connect.client_id.is_empty() {
        let random = RandomState::new().hash_one(conn_id);
        Arc::from(format!("simcorp-broker-{conn_id}-{random:016x}"))
    } else {
        Arc::from(connect.client_id.as_str())
    };
    let token = broker.shutdown.child_token();
    let clean = connect.clean_session;
    let (session, present) = broker.connect(client_id.clone(), clean, conn_id, token.clone());
    debug!(
        %client_id, %peer, clean, session_present = present, keep_alive = connect.keep_alive,
        "client connected"
    );

    let (ctrl_tx, ctrl_rx) = mpsc::channel(CONTROL_CAPACITY);
    // The channel is empty, so this cannot fail; the writer sends control packets before
    // anything from the session, so CONNACK precedes re-sent messages.
    let connack = ConnAck::new(ConnectReturnCode::Success, present);
    let _ = ctrl_tx.try_send(Packet::ConnAck(connack));

    let mut cleanup = Cleanup {
        broker: broker.clone(),
        session: session.clone(),
        conn_id,
        will: connect.last_will,
        publish_will: true,
        token: token.clone(),
    };
    let mut writer = tokio::spawn(write_loop(
        broker.clone(),
        session.clone(),
        wr,
        ctrl_rx,
        token.clone(),
        conn_id,
    ));
    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let mut reader = Reader {
        broker: &broker,
        session,
        client_id: client_id.clone(),
        rd,
        buf,
        ctrl: ctrl_tx,
        token: token.clone(),
        keep_alive,
        last_rx: Instant::now(),
        pending: VecDeque::new(),
        pending_bytes: 0,
        blocked: None,
    };
    let end = reader.run().await;
    // Dropping the reader closes the control channel: unless the connection was cancelled,
    // the writer gets a moment to flush replies already queued (say, the CONNACK before a
    // protocol violation), then stops.
    drop(reader);
    let flushed =
        !matches!(end, End::Cancelled) && timeout(FLUSH_TIMEOUT, &mut writer).await.is_ok();
    match &end {
        End::Disconnect => {
            cleanup.publish_will = false;
            debug!(%client_id, %peer, "client disconnected");
        }
        End::Gone => debug!(%client_id, %peer, "connection closed without DISCONNECT"),
        End::KeepAlive => debug!(%client_id, %peer, "keep-alive expired; closing"),
        End::Violation(why) => warn!(%client_id, %peer, "protocol violation, closing: {why}"),
        End::Cancelled => debug!(%client_id, %peer, "connection closed by the broker"),
    }
    token.cancel();
    if !flushed {
        // A finished `JoinHandle` must not be polled again.
        let _ = writer.await;
    }
    drop(cleanup);
}

/// Detaches the connection from its session even if the task is aborted or panics.
struct Cleanup {
    broker: Arc<Broker>,
    session: Arc<Session>,
    conn_id: u64,
    will: Option<mqttbytes::v4::LastWill>,
    publish_will: bool,
    token: CancellationToken,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.token.cancel();
        // Takeover is not an abnormal close (the client is still there), and on shutdown
        // the broker goes away with everyone: neither publishes the will. `disconnect` is
        // a no-op for a connection that was taken over.
        let will = if self.publish_will && !self.broker.shutdown.is_cancelled() {
            self.will.take()
        } else {
            None
        };
        self.broker.disconnect(&self.session, self.conn_id, will);
    }
}

enum First {
    Connect(Connect),
    Refuse(ConnectReturnCode, String),
    Violation(String),
    Gone,
}

/// Decodes one packet, or `Ok(None)` if more bytes are needed. The codec is not ours, so a
/// panic in it is contained to this connection rather than trusted never to happen.
fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, String> {
    match catch_unwind(AssertUnwindSafe(|| Packet::read(buf, max))) {
        Ok(Ok(packet)) => Ok(Some(packet)),
        Ok(Err(mqttbytes::Error::InsufficientBytes(_))) => Ok(None),
        Ok(Err(e)) => Err(format!("malformed packet: {e}")),
        Err(_) => Err("packet decoder panicked".to_owned()),
    }
}

/// The protocol name and level of a complete CONNECT frame.
fn protocol_of(frame: &[u8]) -> Option<(&[u8], u8)> {
    let mut i = 1;
    loop {
        let b = *frame.get(i)?;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return None;
        }
    }
    let len = usize::from(u16::from_be_bytes([*frame.get(i)?, *frame.get(i + 1)?]));
    let name = frame.get(i + 2..i + 2 + len)?;
    let level = *frame.get(i + 2 + len)?;
    Some((name, level))
}

async fn read_connect(rd: &mut OwnedReadHalf, buf: &mut BytesMut, max: usize) -> First {
    loop {
        if let Some(&b0) = buf.first()
            && b0 >> 4 != 1
        {
            return First::Violation(format!("first packet is not CONNECT (type {})", b0 >> 4));
        }
        match mqttbytes::check(buf.iter(), max) {
            Ok(header) => {
                let Some(frame) = buf.get(..header.frame_length()) else {
                    return First::Violation("inconsistent frame length".to_owned());
                };
                match protocol_of(frame) {
                    Some((b"MQTT", 4)) => {}
                    Some((name @ (b"MQTT" | b"MQIsdp"), level)) => {
                        let name = String::from_utf8_lossy(name).into_owned();
                        let why = format!("protocol {name} level {level}; only MQTT 3.1.1 (4)");
                        return First::Refuse(ConnectReturnCode::RefusedProtocolVersion, why);
                    }
                    _ => return First::Violation("not an MQTT CONNECT".to_owned()),
                }
                return match decode(buf, max) {
                    Ok(Some(Packet::Connect(connect))) => First::Connect(connect),
                    Ok(_) => First::Violation("undecodable CONNECT".to_owned()),
                    Err(why) => First::Violation(why),
                };
            }
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return First::Violation(format!("malformed packet: {e}")),
        }
        buf.reserve(IO_CHUNK.min(max.saturating_add(5)));
        match rd.read_buf(buf).await {
            Ok(0) | Err(_) => return First::Gone,
            Ok(_) => {}
        }
    }
}

async fn refuse(mut rd: OwnedReadHalf, mut wr: OwnedWriteHalf, code: ConnectReturnCode) {
    let mut out = BytesMut::new();
    if ConnAck::new(code, false).write(&mut out).is_ok() {
        let _ = wr.write_all(&out).await;
    }
    let _ = wr.shutdown().await;
    // Drain until the client closes: closing with unread input sends a reset, which can make
    // the client lose the CONNACK and never learn why.
    let _ = timeout(Duration::from_secs(1), async {
        let mut sink = [0u8; 1024];
        while let Ok(1..) = rd.read(&mut sink).await {}
    })
    .await;
}

/// A routed PUBLISH not yet queued for every target.
struct Delivery {
    targets: Vec<(Arc<Session>, Msg)>,
    next: usize,
    ack: Option<Packet>,
    qos2_pkid: Option<u16>,
}

impl Delivery {
    /// Queues for as many targets as have room; returns the session it is blocked on.
    fn progress(&mut self, broker: &Broker) -> Option<Arc<Session>> {
        use crate::session::Push;
        while let Some((session, msg)) = self.targets.get(self.next) {
            match session.push(msg, broker.config.max_queued, false) {
                Push::Full => return Some(session.clone()),
                Push::Discarded if msg.share.is_some() => broker.rehome(msg.clone()),
                Push::Discarded | Push::Queued | Push::Dropped => {}
            }
            self.next += 1;
        }
        None
    }

    fn blocked_on(&self) -> Option<Arc<Session>> {
        self.targets.get(self.next).map(|(s, _)| s.clone())
    }
}

enum Read {
    Data,
    Eof,
    KeepAlive,
}

async fn read_some(rd: &mut OwnedReadHalf, buf: &mut BytesMut, deadline: Option<Instant>) -> Read {
    if buf.capacity() - buf.len() < IO_CHUNK / 4 {
        buf.reserve(IO_CHUNK);
    }
    let read = rd.read_buf(buf);
    let result = match deadline {
        Some(deadline) => match timeout_at(deadline, read).await {
            Ok(r) => r,
            Err(_) => return Read::KeepAlive,
        },
        None => read.await,
    };
    match result {
        Ok(0) | Err(_) => Read::Eof,
        Ok(_) => Read::Data,
    }
}

struct Reader<'a> {
    broker: &'a Broker,
    session: Arc<Session>,
    client_id: Arc<str>,
    rd: OwnedReadHalf,
    buf: BytesMut,
    ctrl: mpsc::Sender<Packet>,
    token: CancellationToken,
    keep_alive: Option<Duration>,
    last_rx: Instant,
    /// Decoded packets not yet handled, in arrival order.
    pending: VecDeque<Packet>,
    pending_bytes: usize,
    /// A publish waiting for queue space; nothing after it is handled until it is queued.
    blocked: Option<Delivery>,
}

impl Reader<'_> {
    async fn run(&mut self) -> End {
        // Bytes that arrived with the CONNECT.
        if let Err(end) = self.decode_all(false) {
            return end;
        }
        loop {
            while self.blocked.is_none() {
                let Some(packet) = self.pending.pop_front() else {
                    break;
                };
                self.pending_bytes = self.pending_bytes.saturating_sub(packet.size());
                if let Err(end) = self.handle(packet).await {
                    return end;
                }
            }
            if self.blocked.is_some() {
                if let Err(end) = self.wait_for_space().await {
                    return end;
                }
                continue;
            }
            let token = self.token.clone();
            let deadline = self.deadline();
            let read = tokio::select! {
                biased;
                () = token.cancelled() => return End::Cancelled,
                read = read_some(&mut self.rd, &mut self.buf, deadline) => read,
            };
            match read {
                Read::Eof => return End::Gone,
                Read::KeepAlive => return End::KeepAlive,
                Read::Data => self.last_rx = Instant::now(),
            }
            if let Err(end) = self.decode_all(false) {
                return end;
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.keep_alive.map(|ka| self.last_rx + ka)
    }

    /// Backpressure: the held-back publish is not acknowledged and the packets behind it are
    /// not handled until every target has room. The socket is still read meanwhile, but only
    /// PUBACKs and PINGREQs are acted on; everything else is kept in order, and once
    /// `STASH_BYTES` are kept reading stops. Acting on PUBACKs is what keeps a client that
    /// publishes to a topic it also consumes (or two clients feeding each other) from
    /// deadlocking: their acks are what drains the full queue.
    async fn wait_for_space(&mut self) -> Result<(), End> {
        let Some(session) = self.blocked.as_ref().and_then(Delivery::blocked_on) else {
            return self.finish_blocked().await;
        };
        let space = session.space.notified();
        tokio::pin!(space);
        // Registered before re-checking, so a wakeup between check and wait is not lost.
        space.as_mut().enable();
        let still = match self.blocked.as_mut() {
            Some(d) => d.progress(self.broker),
            None => None,
        };
        match still {
            None => return self.finish_blocked().await,
            Some(s) if !Arc::ptr_eq(&s, &session) => return Ok(()),
            Some(_) => {}
        }
        let token = self.token.clone();
        let can_read = self.pending_bytes < STASH_BYTES;
        let deadline = self.deadline();
        let read = tokio::select! {
            biased;
            () = token.cancelled() => return Err(End::Cancelled),
            () = &mut space => return Ok(()),
            read = read_some(&mut self.rd, &mut self.buf, deadline), if can_read => read,
        };
        match read {
            // The client is gone: what is held back was never acknowledged, so it may be
            // abandoned; the copies already queued stay (at-least-once).
            Read::Eof => {
                let disconnected = self.pending.iter().any(|p| matches!(p, Packet::Disconnect));
                Err(if disconnected {
                    End::Disconnect
                } else {
                    End::Gone
                })
            }
            Read::KeepAlive => Err(End::KeepAlive),
            Read::Data => {
                self.last_rx = Instant::now();
                self.decode_all(true)
            }
        }
    }

    async fn finish_blocked(&mut self) -> Result<(), End> {
        match self.blocked.take() {
            Some(d) => self.finish(d).await,
            None => Ok(()),
        }
    }

    fn decode_all(&mut self, blocked: bool) -> Result<(), End> {
        let max = self.broker.config.max_packet_bytes;
        while let Some(packet) = decode(&mut self.buf, max).map_err(End::Violation)? {
            match packet {
                Packet::PubAck(ack) if blocked => {
                    self.session.ack(ack.pkid);
                }
                // If the writer is that far behind, a lost PINGRESP is the least of it.
                Packet::PingReq if blocked => {
                    let _ = self.ctrl.try_send(Packet::PingResp);
                }
                packet => {
                    self.pending_bytes += packet.size();
                    self.pending.push_back(packet);
                }
            }
        }
        Ok(())
    }

    async fn send(&self, packet: Packet) -> Result<(), End> {
        self.ctrl.send(packet).await.map_err(|_| End::Cancelled)
    }

    async fn handle(&mut self, packet: Packet) -> Result<(), End> {
        match packet {
            Packet::Publish(publish) => self.publish(publish).await,
            Packet::PubAck(ack) => {
                if !self.session.ack(ack.pkid) {
                    debug!(client_id = %self.client_id, pkid = ack.pkid, "PUBACK for unknown packet id");
                }
                Ok(())
            }
            Packet::PubRel(rel) => {
                self.session.release_incoming_qos2(rel.pkid);
                self.send(Packet::PubComp(PubComp::new(rel.pkid))).await
            }
            // We never send QoS 2, so these acknowledge nothing; harmless, so tolerated.
            Packet::PubRec(_) | Packet::PubComp(_) => {
                debug!(client_id = %self.client_id, "ignoring PUBREC/PUBCOMP: no QoS 2 is sent");
                Ok(())
            }
            Packet::Subscribe(subscribe) => self.subscribe(subscribe).await,
            Packet::Unsubscribe(unsubscribe) => self.unsubscribe(unsubscribe).await,
            Packet::PingReq => self.send(Packet::PingResp).await,
            Packet::Disconnect => Err(End::Disconnect),
            Packet::Connect(_) => Err(End::Violation("second CONNECT".to_owned())),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => Err(
                End::Violation(format!("server-to-client packet from a client: {packet:?}")),
            ),
        }
    }

    async fn publish(&mut self, publish: Publish) -> Result<(), End> {
        if !topic::valid_topic_name(&publish.topic) {
            return Err(End::Violation(format!(
                "PUBLISH to invalid topic {:?}",
                publish.topic
            )));
        }
        let (ack, qos2_pkid) = match publish.qos {
            QoS::AtMostOnce => (None, None),
            QoS::AtLeastOnce => (Some(Packet::PubAck(PubAck::new(publish.pkid))), None),
            QoS::ExactlyOnce => {
                let pubrec = Packet::PubRec(PubRec::new(publish.pkid));
                if self.session.has_incoming_qos2(publish.pkid) {
                    // Already routed; the client did not get our PUBREC yet.
                    return self.send(pubrec).await;
                }
                (Some(pubrec), Some(publish.pkid))
            }
        };
        let targets =
            self.broker
                .route(&publish.topic, publish.payload, publish.qos, publish.retain);
        let mut delivery = Delivery {
            targets,
            next: 0,
            ack,
            qos2_pkid,
        };
        if delivery.progress(self.broker).is_some() {
            self.blocked = Some(delivery);
            return Ok(());
        }
        self.finish(delivery).await
    }

    async fn finish(&mut self, delivery: Delivery) -> Result<(), End> {
        if let Some(pkid) = delivery.qos2_pkid {
            self.session.insert_incoming_qos2(pkid);
        }
        match delivery.ack {
            Some(ack) => self.send(ack).await,
            None => Ok(()),
        }
    }

    async fn subscribe(&mut self, subscribe: Subscribe) -> Result<(), End> {
        let (codes, retained) = self.broker.subscribe(&self.session, &subscribe.filters);
        for (filter, code) in subscribe.filters.iter().zip(&codes) {
            if *code == mqttbytes::v4::SubscribeReasonCode::Failure {
                warn!(client_id = %self.client_id, filter = %filter.path, "rejecting invalid subscription filter");
            } else {
                debug!(client_id = %self.client_id, filter = %filter.path, qos = ?min_qos(filter.qos, QoS::AtLeastOnce), "subscribed");
            }
        }
        self.send(Packet::SubAck(SubAck::new(subscribe.pkid, codes)))
            .await?;
        let max_queued = self.broker.config.max_queued;
        for msg in &retained {
            // Forced: waiting here for our own queue would wait on ourselves.
            let _ = self.session.push(msg, max_queued, true);
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Result<(), End> {
        if unsubscribe.topics.is_empty() {
            return Err(End::Violation("UNSUBSCRIBE without filters".to_owned()));
        }
        self.broker.unsubscribe(&self.session, &unsubscribe.topics);
        debug!(client_id = %self.client_id, filters = ?unsubscribe.topics, "unsubscribed");
        self.send(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
            .await
    }
}

fn encode(packet: &Packet, buf: &mut BytesMut) {
    let mark = buf.len();
    if let Err(e) = packet.write(buf, usize::MAX) {
        // Never leave half a packet in the stream.
        buf.truncate(mark);
        warn!(error = %e, "could not encode packet; skipped");
    }
}

async fn write_loop(
    broker: Arc<Broker>,
    session: Arc<Session>,
    mut wr: OwnedWriteHalf,
    mut ctrl: mpsc::Receiver<Packet>,
    token: CancellationToken,
    conn_id: u64,
) {
    // Whatever ends the writer (socket error, takeover) ends the connection.
    let _guard = token.clone().drop_guard();
    let max_inflight = usize::from(broker.config.max_inflight);
    let max_queued = broker.config.max_queued;
    let mut buf = BytesMut::with_capacity(IO_CHUNK);
    let mut batch: Vec<Outgoing> = Vec::new();
    let mut resend = true;
    loop {
        // Replies first: acks must not wait behind a backlog of deliveries.
        while buf.len() < IO_CHUNK {
            match ctrl.try_recv() {
                Ok(packet) => encode(&packet, &mut buf),
                Err(_) => break,
            }
        }
        let budget = IO_CHUNK.saturating_sub(buf.len());
        let taken = session.take_outgoing(
            conn_id,
            resend,
            max_inflight,
            max_queued,
            budget,
            &mut batch,
        );
        resend = false;
        match taken {
            Ok(true) => session.space.notify_waiters(),
            Ok(false) => {}
            Err(_) => return,
        }
        for out in batch.drain(..) {
            encode(
                &Packet::Publish(out.msg.to_publish(out.pkid, out.dup)),
                &mut buf,
            );
        }
        if !buf.is_empty() {
            tokio::select! {
                biased;
                () = token.cancelled() => return,
                written = wr.write_all(&buf) => if written.is_err() { return },
            }
            buf.clear();
            continue;
        }
        tokio::select! {
            biased;
            () = token.cancelled() => return,
            packet = ctrl.recv() => match packet {
                Some(packet) => encode(&packet, &mut buf),
                None => return,
            },
            () = session.wakeup.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_is_read_from_connect_frames() {
        let v311 = [
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'x',
        ];
        assert_eq!(protocol_of(&v311), Some((&b"MQTT"[..], 4)));
        let v31 = [
            0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60, 0, 0,
        ];
        assert_eq!(protocol_of(&v31), Some((&b"MQIsdp"[..], 3)));
        assert_eq!(protocol_of(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x01]), None);
        assert_eq!(protocol_of(&[0x10, 2, 0, 9]), None);
    }

    #[test]
    fn decode_reports_garbage_without_panicking() {
        let mut buf = BytesMut::from(&[0xff, 0x03, 1, 2, 3][..]);
        assert!(decode(&mut buf, 1024).is_err());
        let mut buf = BytesMut::from(&[0x30][..]);
        assert!(matches!(decode(&mut buf, 1024), Ok(None)));
        let mut buf = BytesMut::from(&[0x36, 0x03, 0, 1, b'a'][..]);
        assert!(decode(&mut buf, 1024).is_err());
    }
}
