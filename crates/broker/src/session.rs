//! One client's session: what it is owed (queue), what it has not acknowledged (in flight),
//! and which connection, if any, currently carries it.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Publish;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Locks without propagating poison: every critical section leaves the state consistent
/// before anything that could panic, so a panic elsewhere must not take the broker down.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) { a } else { b }
}

pub(crate) fn max_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) >= (b as u8) { a } else { b }
}

/// A message on its way to one session. Clones share topic and payload.
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    pub(crate) topic: Arc<str>,
    pub(crate) payload: Bytes,
    /// Delivery QoS: 0 or 1, never 2.
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    /// The `$share/...` subscription this copy was routed through, so that it can be handed
    /// to another member if this session is discarded before acknowledging it.
    pub(crate) share: Option<Arc<str>>,
}

impl Msg {
    pub(crate) fn to_publish(&self, pkid: u16, dup: bool) -> Publish {
        Publish {
            dup,
            qos: self.qos,
            retain: self.retain,
            topic: self.topic.to_string(),
            pkid,
            payload: self.payload.clone(),
        }
    }

    fn approx_size(&self) -> usize {
        self.topic.len() + self.payload.len() + 8
    }
}

/// A message taken for writing: `pkid` is 0 for QoS 0.
pub(crate) struct Outgoing {
    pub(crate) pkid: u16,
    pub(crate) dup: bool,
    pub(crate) msg: Msg,
}

pub(crate) enum Push {
    Queued,
    /// QoS 0 that found no room or no connection: best effort by definition.
    Dropped,
    /// The queue is at `max_queued`; wait for `Session::space`.
    Full,
    /// The session ended (clean session closed, or replaced); nothing was queued.
    Discarded,
}

/// The connection that was asked to take the session is no longer its owner.
pub(crate) struct Detached;

struct Inflight {
    pkid: u16,
    msg: Msg,
}

/// Outgoing packet ids in use. Ids go round 1..=65535 so a just-freed id is not reused at
/// once, which keeps a late duplicate PUBACK from acknowledging the wrong message.
struct PacketIds {
    /// One bit per id; allocated on first use, as most sessions (QoS 0 only, or publishers
    /// only) never need it.
    used: Vec<u64>,
    next: u16,
}

impl PacketIds {
    fn new() -> Self {
        Self {
            used: Vec::new(),
            next: 1,
        }
    }

    fn alloc(&mut self) -> Option<u16> {
        if self.used.is_empty() {
            self.used = vec![0; 1024];
        }
        for _ in 0..u16::MAX {
            let id = self.next;
            self.next = self.next.checked_add(1).unwrap_or(1);
            let bit = 1u64 << (id % 64);
            if let Some(word) = self.used.get_mut(usize::from(id / 64))
                && *word & bit == 0
            {
                *word |= bit;
                return Some(id);
            }
        }
        None
    }

    fn free(&mut self, id: u16) {
        if let Some(word) = self.used.get_mut(usize::from(id / 64)) {
            *word &= !(1u64 << (id % 64));
        }
    }
}

struct State {
    /// The connection carrying the session and the token that closes it (for takeover).
    conn: Option<(u64, CancellationToken)>,
    clean: bool,
    discarded: bool,
    /// Routed, not yet written.
    queue: VecDeque<Msg>,
    /// Written with QoS 1, not yet acknowledged; in the order they were sent.
    inflight: VecDeque<Inflight>,
    pkids: PacketIds,
    /// QoS 2 packet ids received and routed, awaiting PUBREL: a re-sent PUBLISH with one of
    /// these ids must not be routed twice.
    incoming_qos2: HashSet<u16>,
    publishers_waiting: bool,
    last_full_warning: Option<Instant>,
}

pub(crate) struct Session {
    pub(crate) uid: u64,
    pub(crate) client_id: Arc<str>,
    state: Mutex<State>,
    /// Wakes the writer of the current connection: queue grew or the window opened.
    pub(crate) wakeup: Notify,
    /// Wakes publishers held back by a full queue (and on discard, so they move on).
    pub(crate) space: Notify,
    /// Mirrors of state for routing decisions taken without this session's lock.
    connected: AtomicBool,
    queued: AtomicUsize,
}

const FULL_WARNING_INTERVAL: Duration = Duration::from_secs(10);

impl Session {
    pub(crate) fn new(uid: u64, client_id: Arc<str>, clean: bool) -> Self {
        Self {
            uid,
            client_id,
            state: Mutex::new(State {
                conn: None,
                clean,
                discarded: false,
                queue: VecDeque::new(),
                inflight: VecDeque::new(),
                pkids: PacketIds::new(),
                incoming_qos2: HashSet::new(),
                publishers_waiting: false,
                last_full_warning: None,
            }),
            wakeup: Notify::new(),
            space: Notify::new(),
            connected: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
        }
    }

    pub(crate) fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Closes the connection carrying this session, if any; returns the session's clean flag.
    pub(crate) fn kick(&self) -> bool {
        let mut st = lock(&self.state);
        if let Some((_, token)) = st.conn.take() {
            token.cancel();
        }
        self.connected.store(false, Ordering::Relaxed);
        st.clean
    }

    pub(crate) fn attach(&self, conn_id: u64, token: CancellationToken, clean: bool) {
        let mut st = lock(&self.state);
        st.conn = Some((conn_id, token));
        st.clean = clean;
        self.connected.store(true, Ordering::Relaxed);
    }

    /// Detaches `conn_id` if it still owns the session; returns the clean flag if it did.
    pub(crate) fn detach(&self, conn_id: u64) -> Option<bool> {
        let mut st = lock(&self.state);
        match &st.conn {
            Some((id, _)) if *id == conn_id => {
                st.conn = None;
                self.connected.store(false, Ordering::Relaxed);
                Some(st.clean)
            }
            _ => None,
        }
    }

    /// Ends the session: drops everything it holds and returns the copies that came through
    /// shared subscriptions, which the caller hands to other group members.
    pub(crate) fn discard(&self) -> Vec<Msg> {
        let mut st = lock(&self.state);
        st.discarded = true;
        if let Some((_, token)) = st.conn.take() {
            token.cancel();
        }
        self.connected.store(false, Ordering::Relaxed);
        let inflight = std::mem::take(&mut st.inflight);
        let queue = std::mem::take(&mut st.queue);
        self.queued.store(0, Ordering::Relaxed);
        drop(st);
        self.space.notify_waiters();
        inflight
            .into_iter()
            .map(|i| i.msg)
            .chain(queue)
            .filter(|m| m.share.is_some())
            .collect()
    }

    /// Queues `msg`. `force` ignores `max_queued`: for the few internal sources (retained
    /// messages on SUBSCRIBE, wills, re-homed shared messages) that must not wait on a client.
    pub(crate) fn push(&self, msg: &Msg, max_queued: usize, force: bool) -> Push {
        let mut st = lock(&self.state);
        if st.discarded {
            return Push::Discarded;
        }
        if msg.qos == QoS::AtMostOnce && st.conn.is_none() {
            return Push::Dropped;
        }
        if !force && st.queue.len() >= max_queued {
            if msg.qos == QoS::AtMostOnce {
                crate::metrics::qos0_dropped();
                return Push::Dropped;
            }
            st.publishers_waiting = true;
            let now = Instant::now();
            if st
                .last_full_warning
                .is_none_or(|t| now.duration_since(t) >= FULL_WARNING_INTERVAL)
            {
                st.last_full_warning = Some(now);
                warn!(
                    client_id = %self.client_id,
                    queued = st.queue.len(),
                    "session queue full; holding back publishers until it drains"
                );
            }
            return Push::Full;
        }
        st.queue.push_back(msg.clone());
        self.queued.store(st.queue.len(), Ordering::Relaxed);
        let online = st.conn.is_some();
        drop(st);
        if online {
            self.wakeup.notify_one();
        }
        Push::Queued
    }

    /// Takes what connection `conn_id` should write next, appending to `out`: on `resend`
    /// first all unacknowledged messages (DUP=1, same ids, in order), then queued messages
    /// while the window has room, up to about `budget` bytes. Returns whether held-back
    /// publishers should be woken.
    pub(crate) fn take_outgoing(
        &self,
        conn_id: u64,
        resend: bool,
        max_inflight: usize,
        max_queued: usize,
        budget: usize,
        out: &mut Vec<Outgoing>,
    ) -> Result<bool, Detached> {
        let mut st = lock(&self.state);
        // Checked under the lock so that a connection being taken over cannot move messages
        // into the in-flight window after the new connection has copied it for re-sending.
        if st.discarded || !matches!(&st.conn, Some((id, _)) if *id == conn_id) {
            return Err(Detached);
        }
        let mut bytes = 0;
        if resend {
            for i in &st.inflight {
                bytes += i.msg.approx_size();
                out.push(Outgoing {
                    pkid: i.pkid,
                    dup: true,
                    msg: i.msg.clone(),
                });
            }
        }
        while bytes < budget {
            let Some(front) = st.queue.front() else { break };
            let pkid = if front.qos == QoS::AtMostOnce {
                0
            } else {
                if st.inflight.len() >= max_inflight {
                    break;
                }
                let Some(pkid) = st.pkids.alloc() else { break };
                pkid
            };
            let Some(msg) = st.queue.pop_front() else {
                break;
            };
            bytes += msg.approx_size();
            if pkid != 0 {
                st.inflight.push_back(Inflight {
                    pkid,
                    msg: msg.clone(),
                });
            }
            out.push(Outgoing {
                pkid,
                dup: false,
                msg,
            });
        }
        self.queued.store(st.queue.len(), Ordering::Relaxed);
        let wake = st.publishers_waiting && st.queue.len() < max_queued;
        if wake {
            st.publishers_waiting = false;
        }
        Ok(wake)
    }

    /// A PUBACK: frees the slot. Acks may come in any order; unknown ids are ignored.
    pub(crate) fn ack(&self, pkid: u16) -> bool {
        let mut st = lock(&self.state);
        // Subscribers normally ack in order, so the match is almost always at the front.
        let Some(pos) = st.inflight.iter().position(|i| i.pkid == pkid) else {
            return false;
        };
        st.inflight.remove(pos);
        st.pkids.free(pkid);
        let more = !st.queue.is_empty();
        drop(st);
        if more {
            self.wakeup.notify_one();
        }
        true
    }

    pub(crate) fn has_incoming_qos2(&self, pkid: u16) -> bool {
        lock(&self.state).incoming_qos2.contains(&pkid)
    }

    pub(crate) fn insert_incoming_qos2(&self, pkid: u16) {
        lock(&self.state).incoming_qos2.insert(pkid);
    }

    pub(crate) fn release_incoming_qos2(&self, pkid: u16) {
        lock(&self.state).incoming_qos2.remove(&pkid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u8) -> Msg {
        Msg {
            topic: Arc::from("t"),
            payload: Bytes::from(vec![n]),
            qos: QoS::AtLeastOnce,
            retain: false,
            share: None,
        }
    }

    #[test]
    fn packet_ids_are_not_reused_while_in_use() {
        let mut ids = PacketIds::new();
        let first = ids.alloc().unwrap();
        assert_eq!(first, 1);
        for _ in 0..65533 {
            ids.alloc().unwrap();
        }
        let last = ids.alloc().unwrap();
        assert_eq!(last, 65535);
        assert_eq!(ids.alloc(), None);
        ids.free(7);
        assert_eq!(ids.alloc(), Some(7));
    }

    #[test]
    fn window_limits_and_resend_keeps_ids() {
        let s = Session::new(1, Arc::from("c"), false);
        s.attach(1, CancellationToken::new(), false);
        for n in 0..5 {
            assert!(matches!(s.push(&msg(n), 100, false), Push::Queued));
        }
        let mut out = Vec::new();
        assert!(
            s.take_outgoing(1, false, 2, 100, usize::MAX, &mut out)
                .is_ok()
        );
        assert_eq!(out.iter().map(|o| o.pkid).collect::<Vec<_>>(), [1, 2]);
        assert!(s.ack(1));
        assert!(!s.ack(1));
        out.clear();
        s.detach(1);
        s.attach(2, CancellationToken::new(), false);
        assert!(
            s.take_outgoing(1, true, 2, 100, usize::MAX, &mut out)
                .is_err()
        );
        assert!(
            s.take_outgoing(2, true, 2, 100, usize::MAX, &mut out)
                .is_ok()
        );
        let got: Vec<_> = out.iter().map(|o| (o.pkid, o.dup)).collect();
        assert_eq!(got, [(2, true), (3, false)]);
    }

    #[test]
    fn full_queue_holds_qos1_and_drops_qos0() {
        let s = Session::new(1, Arc::from("c"), false);
        s.attach(1, CancellationToken::new(), false);
        assert!(matches!(s.push(&msg(0), 1, false), Push::Queued));
        assert!(matches!(s.push(&msg(1), 1, false), Push::Full));
        let mut q0 = msg(2);
        q0.qos = QoS::AtMostOnce;
        assert!(matches!(s.push(&q0, 1, false), Push::Dropped));
        assert!(matches!(s.push(&msg(3), 1, true), Push::Queued));
        let mut out = Vec::new();
        assert!(matches!(
            s.take_outgoing(1, false, 10, 1, usize::MAX, &mut out),
            Ok(true)
        ));
    }
}
