//! The broker-wide state: sessions by client id, the subscription table, retained messages.
//!
//! Lock order: the registry lock, then a session lock — never the other way round. Both are
//! `std::sync::Mutex`es held for a few map operations and never across an `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{LastWill, SubscribeFilter, SubscribeReasonCode};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::Config;
use crate::session::{Msg, Push, Session, lock, max_qos, min_qos};
use crate::topic::{self, Filter};

pub(crate) struct Broker {
    pub(crate) config: Config,
    /// Cancelled when `run` is asked to stop; every connection token is a child of it.
    pub(crate) shutdown: CancellationToken,
    registry: Mutex<Registry>,
    next_conn_id: AtomicU64,
}

#[derive(Default)]
struct Registry {
    sessions: HashMap<Arc<str>, Entry>,
    /// Normal subscriptions: filter → subscribers.
    subs: HashMap<String, Vec<Subscriber>>,
    /// Shared subscriptions: the full `$share/{group}/{filter}` → its group.
    groups: HashMap<Arc<str>, Group>,
    retained: HashMap<Arc<str>, Retained>,
    next_session_uid: u64,
}

struct Entry {
    session: Arc<Session>,
    /// The session's own filters as sent in SUBSCRIBE (including `$share/...`).
    filters: HashMap<String, QoS>,
}

struct Subscriber {
    session: Arc<Session>,
    qos: QoS,
}

struct Group {
    filter: String,
    members: Vec<Subscriber>,
    next: usize,
}

struct Retained {
    payload: Bytes,
    qos: QoS,
}

impl Group {
    /// Round-robin, preferring a connected member with room, then any connected member; if
    /// every member is offline (necessarily persistent: clean sessions are removed when they
    /// disconnect), the next one in turn keeps the message for when it comes back.
    fn pick(&mut self, max_queued: usize) -> Option<&Subscriber> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.next % n;
        let mut connected = None;
        let mut chosen = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let s = &self.members.get(idx)?.session;
            if s.connected() {
                if s.queued() < max_queued {
                    chosen = Some(idx);
                    break;
                }
                connected.get_or_insert(idx);
            }
        }
        let idx = chosen.or(connected).unwrap_or(start);
        self.next = (idx + 1) % n;
        self.members.get(idx)
    }
}

fn upsert(list: &mut Vec<Subscriber>, session: &Arc<Session>, qos: QoS) {
    match list.iter_mut().find(|s| s.session.uid == session.uid) {
        Some(s) => s.qos = qos,
        None => list.push(Subscriber {
            session: session.clone(),
            qos,
        }),
    }
}

impl Registry {
    fn is_current(&self, session: &Arc<Session>) -> bool {
        self.sessions
            .get(&session.client_id)
            .is_some_and(|e| Arc::ptr_eq(&e.session, session))
    }

    fn remove_subscription(&mut self, uid: u64, raw: &str) {
        match topic::parse_filter(raw) {
            Some(Filter::Shared { .. }) => {
                if let Some(group) = self.groups.get_mut(raw) {
                    group.members.retain(|s| s.session.uid != uid);
                    if group.members.is_empty() {
                        self.groups.remove(raw);
                    }
                }
            }
            _ => {
                if let Some(list) = self.subs.get_mut(raw) {
                    list.retain(|s| s.session.uid != uid);
                    if list.is_empty() {
                        self.subs.remove(raw);
                    }
                }
            }
        }
    }

    /// Removes the session and its subscriptions; returns its shared-subscription messages.
    fn discard(&mut self, client_id: &str) -> Vec<Msg> {
        let Some(entry) = self.sessions.remove(client_id) else {
            return Vec::new();
        };
        for filter in entry.filters.keys() {
            self.remove_subscription(entry.session.uid, filter);
        }
        entry.session.discard()
    }

    /// Gives messages of a discarded member to the rest of their group, so that a message
    /// acknowledged to its publisher is not lost with one consumer.
    fn rehome(&mut self, msgs: Vec<Msg>, max_queued: usize) {
        for mut msg in msgs {
            let Some(key) = msg.share.clone() else {
                continue;
            };
            let Some(member) = self.groups.get_mut(&key).and_then(|g| g.pick(max_queued)) else {
                debug!(share = %key, topic = %msg.topic, "no member left in shared group; message dropped");
                continue;
            };
            msg.qos = min_qos(msg.qos, member.qos);
            // Members are live sessions of this registry, so this cannot be `Discarded`.
            let _ = member.session.push(&msg, max_queued, true);
        }
    }

    /// Computes the copies of a PUBLISH: one per session with matching normal subscriptions
    /// (at the highest matching QoS) plus one per matching shared group.
    fn route(
        &mut self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        max_queued: usize,
    ) -> Vec<(Arc<Session>, Msg)> {
        if retain {
            if payload.is_empty() {
                self.retained.remove(topic);
            } else {
                let qos = min_qos(qos, QoS::AtLeastOnce);
                let value = Retained {
                    payload: payload.clone(),
                    qos,
                };
                self.retained.insert(Arc::from(topic), value);
            }
        }
        let topic: Arc<str> = Arc::from(topic);
        let mut normal: Vec<(&Arc<Session>, QoS)> = Vec::new();
        for (filter, list) in &self.subs {
            if topic::matches(&topic, filter) {
                normal.extend(list.iter().map(|s| (&s.session, min_qos(qos, s.qos))));
            }
        }
        normal.sort_unstable_by_key(|(s, _)| s.uid);
        let mut out: Vec<(Arc<Session>, Msg)> = Vec::with_capacity(normal.len());
        for (session, q) in normal {
            if let Some((last, msg)) = out.last_mut()
                && last.uid == session.uid
            {
                msg.qos = max_qos(msg.qos, q);
                continue;
            }
            let msg = Msg {
                topic: topic.clone(),
                payload: payload.clone(),
                qos: q,
                // A copy for an existing subscription is not "the retained message".
                retain: false,
                share: None,
            };
            out.push((session.clone(), msg));
        }
        for (key, group) in &mut self.groups {
            if !topic::matches(&topic, &group.filter) {
                continue;
            }
            if let Some(member) = group.pick(max_queued) {
                let msg = Msg {
                    topic: topic.clone(),
                    payload: payload.clone(),
                    qos: min_qos(qos, member.qos),
                    retain: false,
                    share: Some(key.clone()),
                };
                out.push((member.session.clone(), msg));
            }
        }
        out
    }
}

impl Broker {
    pub(crate) fn new(mut config: Config) -> Self {
        config.max_inflight = config.max_inflight.max(1);
        config.max_queued = config.max_queued.max(1);
        Self {
            config,
            shutdown: CancellationToken::new(),
            registry: Mutex::new(Registry::default()),
            next_conn_id: AtomicU64::new(1),
        }
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Attaches connection `conn_id` to the session of `client_id`, closing any connection
    /// that carries it now. Returns the session and whether it was resumed.
    pub(crate) fn connect(
        &self,
        client_id: Arc<str>,
        clean: bool,
        conn_id: u64,
        token: CancellationToken,
    ) -> (Arc<Session>, bool) {
        let max_queued = self.config.max_queued;
        let mut reg = lock(&self.registry);
        let mut resumed = None;
        let mut rehome = Vec::new();
        if let Some(entry) = reg.sessions.get(&client_id) {
            let session = entry.session.clone();
            let was_clean = session.kick();
            if clean || was_clean {
                rehome = reg.discard(&client_id);
            } else {
                resumed = Some(session);
            }
        }
        let present = resumed.is_some();
        let session = resumed.unwrap_or_else(|| {
            reg.next_session_uid += 1;
            let session = Arc::new(Session::new(reg.next_session_uid, client_id.clone(), clean));
            let entry = Entry {
                session: session.clone(),
                filters: HashMap::new(),
            };
            reg.sessions.insert(client_id, entry);
            session
        });
        session.attach(conn_id, token, clean);
        reg.rehome(rehome, max_queued);
        (session, present)
    }

    /// Detaches connection `conn_id` (a no-op if it was taken over), publishes its will if
    /// given, and ends the session if it was a clean one.
    pub(crate) fn disconnect(&self, session: &Arc<Session>, conn_id: u64, will: Option<LastWill>) {
        let max_queued = self.config.max_queued;
        let mut reg = lock(&self.registry);
        let Some(clean) = session.detach(conn_id) else {
            return;
        };
        if let Some(will) = will {
            let targets = reg.route(&will.topic, will.message, will.qos, will.retain, max_queued);
            let mut rehome = Vec::new();
            for (target, msg) in targets {
                // A will must not make a closing connection wait on another client.
                if let Push::Discarded = target.push(&msg, max_queued, true) {
                    rehome.push(msg);
                }
            }
            reg.rehome(rehome, max_queued);
        }
        if clean && reg.is_current(session) {
            let msgs = reg.discard(&session.client_id);
            reg.rehome(msgs, max_queued);
        }
    }

    /// Adds subscriptions; returns the SUBACK codes and the retained messages to deliver.
    pub(crate) fn subscribe(
        &self,
        session: &Arc<Session>,
        filters: &[SubscribeFilter],
    ) -> (Vec<SubscribeReasonCode>, Vec<Msg>) {
        let mut reg = lock(&self.registry);
        if !reg.is_current(session) {
            // Taken over meanwhile; this connection is closing.
            return (
                vec![SubscribeReasonCode::Failure; filters.len()],
                Vec::new(),
            );
        }
        let reg = &mut *reg;
        let mut codes = Vec::with_capacity(filters.len());
        let mut retained = Vec::new();
        for f in filters {
            let Some(parsed) = topic::parse_filter(&f.path) else {
                codes.push(SubscribeReasonCode::Failure);
                continue;
            };
            let granted = min_qos(f.qos, QoS::AtLeastOnce);
            codes.push(SubscribeReasonCode::Success(granted));
            if let Some(entry) = reg.sessions.get_mut(&session.client_id) {
                entry.filters.insert(f.path.clone(), granted);
            }
            match parsed {
                Filter::Shared { filter } => {
                    let key: Arc<str> = Arc::from(f.path.as_str());
                    let group = reg.groups.entry(key).or_insert_with(|| Group {
                        filter: filter.to_owned(),
                        members: Vec::new(),
                        next: 0,
                    });
                    upsert(&mut group.members, session, granted);
                }
                Filter::Normal(filter) => {
                    upsert(
                        reg.subs.entry(filter.to_owned()).or_default(),
                        session,
                        granted,
                    );
                    for (topic, r) in &reg.retained {
                        if topic::matches(topic, filter) {
                            retained.push(Msg {
                                topic: topic.clone(),
                                payload: r.payload.clone(),
                                qos: min_qos(r.qos, granted),
                                retain: true,
                                share: None,
                            });
                        }
                    }
                }
            }
        }
        (codes, retained)
    }

    pub(crate) fn unsubscribe(&self, session: &Arc<Session>, filters: &[String]) {
        let mut reg = lock(&self.registry);
        if !reg.is_current(session) {
            return;
        }
        for f in filters {
            let removed = reg
                .sessions
                .get_mut(&session.client_id)
                .and_then(|e| e.filters.remove(f.as_str()));
            if removed.is_some() {
                reg.remove_subscription(session.uid, f);
            }
        }
    }

    /// Routes a PUBLISH (and updates the retained store); the caller queues the copies.
    pub(crate) fn route(
        &self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Vec<(Arc<Session>, Msg)> {
        let max_queued = self.config.max_queued;
        lock(&self.registry).route(topic, payload, qos, retain, max_queued)
    }

    /// Re-homes a shared message whose chosen member was discarded before it was queued.
    pub(crate) fn rehome(&self, msg: Msg) {
        let max_queued = self.config.max_queued;
        lock(&self.registry).rehome(vec![msg], max_queued);
    }
}
