//! End-to-end tests of the embedded broker, driven by real `rumqttc` clients and, for what a
//! well-behaved client never sends, raw sockets.
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.

use std::collections::BTreeSet;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use broker::Config;
use bytes::BytesMut;
use rumqttc::{
    AsyncClient, ConnAck, Connect, Event, EventLoop, LastWill, MqttOptions, Packet, Publish, QoS,
    Subscribe, SubscribeFilter, SubscribeReasonCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// Upper bound for anything that should happen "soon"; tests normally wait far less.
const WAIT: Duration = Duration::from_secs(20);
/// How long "nothing more happens" is watched for. Only used to check an absence.
const QUIET: Duration = Duration::from_millis(300);

struct TestBroker {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), broker::Error>>>,
}

/// Panics anywhere but in this file (the broker, or a library it drives). Such a panic may
/// only kill one connection task and go unnoticed by the test that caused it, so every
/// broker shutdown checks that there were none.
static FOREIGN_PANICS: AtomicUsize = AtomicUsize::new(0);

fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = info
                .location()
                .is_some_and(|l| l.file().ends_with("tests/it/main.rs"));
            if !ours {
                FOREIGN_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

async fn start(config: Config) -> TestBroker {
    watch_panics();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(broker::run(config, listener, async {
        let _ = stopped.await;
    }));
    TestBroker {
        port,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestBroker {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        timeout(WAIT, task).await.unwrap().unwrap().unwrap();
        assert_eq!(
            FOREIGN_PANICS.load(Ordering::SeqCst),
            0,
            "something panicked"
        );
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    task: JoinHandle<()>,
    pubacks: usize,
}

fn opts(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

async fn drive(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Result<Event, String>>) {
    loop {
        match eventloop.poll().await {
            Ok(event) => {
                if tx.send(Ok(event)).is_err() {
                    return;
                }
            }
            Err(e) => {
                // Stop here: rumqttc would reconnect on the next poll.
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        }
    }
}

async fn connect(options: MqttOptions) -> (Client, ConnAck) {
    let (client, eventloop) = AsyncClient::new(options, 1000);
    let (tx, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(drive(eventloop, tx));
    let mut c = Client {
        client,
        events,
        task,
        pubacks: 0,
    };
    let ack = c
        .until(|p| match p {
            Packet::ConnAck(a) => Some(a.clone()),
            _ => None,
        })
        .await;
    (c, ack)
}

impl Client {
    /// The next incoming packet (counting PUBACKs on the way); panics on error or timeout.
    async fn incoming(&mut self) -> Packet {
        loop {
            let event = timeout(WAIT, self.events.recv())
                .await
                .expect("timed out waiting for an event")
                .expect("event loop ended");
            match event {
                Ok(Event::Incoming(packet)) => {
                    if let Packet::PubAck(_) = packet {
                        self.pubacks += 1;
                    }
                    return packet;
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => panic!("connection failed: {e}"),
            }
        }
    }

    async fn until<T>(&mut self, mut f: impl FnMut(&Packet) -> Option<T>) -> T {
        loop {
            let packet = self.incoming().await;
            if let Some(t) = f(&packet) {
                return t;
            }
        }
    }

    async fn next_publish(&mut self) -> Publish {
        self.until(|p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// The next publish if one comes within `within`.
    async fn maybe_publish(&mut self, within: Duration) -> Option<Publish> {
        timeout(within, self.next_publish()).await.ok()
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.unwrap();
        self.until(|p| match p {
            Packet::SubAck(a) => Some(a.return_codes.clone()),
            _ => None,
        })
        .await
    }

    async fn publish(&self, topic: &str, qos: QoS, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, qos, false, payload.into())
            .await
            .unwrap();
    }

    async fn wait_pubacks(&mut self, n: usize) {
        while self.pubacks < n {
            self.incoming().await;
        }
    }

    /// Waits until the broker closes the connection; returns the error rumqttc reported.
    async fn closed(&mut self) -> String {
        loop {
            match timeout(WAIT, self.events.recv())
                .await
                .expect("connection was not closed")
            {
                Some(Ok(_)) => {}
                Some(Err(e)) => return e,
                None => return "event loop ended".to_owned(),
            }
        }
    }

    /// Drops the connection without DISCONNECT, as a crashed client would.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// DISCONNECT, then wait for the event loop to notice the closed socket.
    async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
        self.closed().await;
    }
}

fn index(p: &Publish) -> u32 {
    u32::from_be_bytes(p.payload[..4].try_into().unwrap())
}

fn text(p: &Publish) -> &str {
    std::str::from_utf8(&p.payload).unwrap()
}

async fn texts(c: &mut Client, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let p = c.next_publish().await;
        out.push((p.topic.clone(), text(&p).to_owned()));
    }
    out
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(t, p)| ((*t).to_owned(), (*p).to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// 1. Delivery and topic matching
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn qos1_delivery_wildcards_and_dollar_topics() {
    let b = start(Config::default()).await;
    let (mut exact, _) = connect(opts("exact", b.port)).await;
    let (mut plus, _) = connect(opts("plus", b.port)).await;
    let (mut hash, _) = connect(opts("hash", b.port)).await;
    let (mut sys, _) = connect(opts("sys", b.port)).await;
    let (mut both, _) = connect(opts("both", b.port)).await;
    let q1 = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    let q0 = SubscribeReasonCode::Success(QoS::AtMostOnce);
    assert_eq!(
        exact
            .subscribe("roasters/r1/telemetry", QoS::AtLeastOnce)
            .await,
        [q1]
    );
    assert_eq!(
        plus.subscribe("roasters/+/telemetry", QoS::AtMostOnce)
            .await,
        [q0]
    );
    // QoS 2 is granted as 1.
    assert_eq!(hash.subscribe("#", QoS::ExactlyOnce).await, [q1]);
    assert_eq!(sys.subscribe("$SYS/#", QoS::AtLeastOnce).await, [q1]);
    assert_eq!(both.subscribe("roasters/#", QoS::AtMostOnce).await, [q0]);
    assert_eq!(
        both.subscribe("roasters/r1/+", QoS::AtLeastOnce).await,
        [q1]
    );

    let (publisher, _) = connect(opts("pub", b.port)).await;
    publisher
        .publish("$SYS/broker/x", QoS::AtLeastOnce, "sys")
        .await;
    publisher
        .publish("roasters/r1/telemetry", QoS::AtLeastOnce, "t1")
        .await;
    publisher
        .publish("roasters/r1/status", QoS::AtLeastOnce, "s1")
        .await;
    publisher
        .publish("roasters/r1/telemetry", QoS::ExactlyOnce, "t2")
        .await;
    publisher
        .publish("roasters/r1/telemetry", QoS::AtLeastOnce, "t3")
        .await;

    // Each sequence is exact: a duplicate, or a `$` topic seen by `#`, would take the place
    // of the next expected message.
    let tel = "roasters/r1/telemetry";
    let st = "roasters/r1/status";
    assert_eq!(
        texts(&mut exact, 3).await,
        pairs(&[(tel, "t1"), (tel, "t2"), (tel, "t3")])
    );
    assert_eq!(
        texts(&mut hash, 4).await,
        pairs(&[(tel, "t1"), (st, "s1"), (tel, "t2"), (tel, "t3")])
    );
    assert_eq!(
        texts(&mut both, 4).await,
        pairs(&[(tel, "t1"), (st, "s1"), (tel, "t2"), (tel, "t3")])
    );
    assert_eq!(texts(&mut sys, 1).await, pairs(&[("$SYS/broker/x", "sys")]));
    for expected in ["t1", "t2", "t3"] {
        let p = plus.next_publish().await;
        assert_eq!(text(&p), expected);
        // Delivery QoS is the lower of publish and granted QoS.
        assert_eq!(p.qos, QoS::AtMostOnce);
    }
    // Overlapping subscriptions (QoS 0 and 1): one copy, at the higher QoS.
    let (mut both2, _) = connect(opts("both2", b.port)).await;
    both2.subscribe("x/#", QoS::AtMostOnce).await;
    both2.subscribe("x/+", QoS::AtLeastOnce).await;
    publisher.publish("x/y", QoS::AtLeastOnce, "once").await;
    publisher.publish("x/y/z", QoS::AtLeastOnce, "end").await;
    let first = both2.next_publish().await;
    assert_eq!((text(&first), first.qos), ("once", QoS::AtLeastOnce));
    assert_eq!(text(&both2.next_publish().await), "end");
    b.shutdown().await;
}

struct Tally {
    counts: Vec<u32>,
    distinct: u32,
    duplicates: usize,
}

impl Tally {
    fn new(total: u32) -> Self {
        Self {
            counts: vec![0; total as usize],
            distinct: 0,
            duplicates: 0,
        }
    }

    fn record(&mut self, p: &Publish) {
        let i = index(p) as usize;
        self.counts[i] += 1;
        if self.counts[i] == 1 {
            self.distinct += 1;
        } else {
            self.duplicates += 1;
            // Only a redelivery of something unacknowledged may come again, flagged as such.
            assert!(p.dup, "message {i} delivered twice without DUP");
        }
    }
}

// ---------------------------------------------------------------------------------------
// 2. 20,000 QoS 1 messages across a persistent-session reconnect without DISCONNECT
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_subscriber_reconnect_loses_nothing() {
    const TOTAL: u32 = 20_000;
    let config = Config::default();
    let max_inflight = usize::from(config.max_inflight);
    let b = start(config).await;

    let mut sub_opts = opts("bulk-sub", b.port);
    sub_opts.set_clean_session(false).set_manual_acks(true);
    let (mut sub, ack) = connect(sub_opts.clone()).await;
    assert!(!ack.session_present);
    sub.subscribe("bulk/#", QoS::AtLeastOnce).await;

    let mut pub_opts = opts("bulk-pub", b.port);
    pub_opts.set_inflight(500);
    let (mut publisher, _) = connect(pub_opts).await;
    let producer = {
        let client = publisher.client.clone();
        tokio::spawn(async move {
            for i in 0..TOTAL {
                client
                    .publish(
                        "bulk/data",
                        QoS::AtLeastOnce,
                        false,
                        i.to_be_bytes().to_vec(),
                    )
                    .await
                    .unwrap();
            }
        })
    };

    let mut tally = Tally::new(TOTAL);
    while tally.distinct < TOTAL / 2 {
        let p = sub.next_publish().await;
        tally.record(&p);
        sub.client.ack(&p).await.unwrap();
    }
    // Dropped without DISCONNECT: the acks rumqttc had not written yet, and what was still
    // in flight, must come again after the reconnect.
    sub.kill().await;

    let (mut sub, ack) = connect(sub_opts).await;
    assert!(ack.session_present, "persistent session was not resumed");
    while tally.distinct < TOTAL {
        let p = sub.next_publish().await;
        tally.record(&p);
        sub.client.ack(&p).await.unwrap();
    }
    producer.await.unwrap();
    publisher.wait_pubacks(TOTAL as usize).await;
    assert!(tally.counts.iter().all(|&c| c >= 1));
    assert!(
        tally.duplicates <= max_inflight,
        "{} duplicates, more than the in-flight window",
        tally.duplicates
    );
    b.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// 3. Shared subscriptions
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn shared_subscription_delivers_each_message_to_one_member() {
    let b = start(Config::default()).await;
    let filter = "$share/g/roasters/+/telemetry";
    let (mut s1, _) = connect(opts("s1", b.port)).await;
    let (mut s2, _) = connect(opts("s2", b.port)).await;
    s1.subscribe(filter, QoS::AtLeastOnce).await;
    s2.subscribe(filter, QoS::AtLeastOnce).await;
    // A normal subscription and another group each get their own copy of everything.
    let (mut watcher, _) = connect(opts("watcher", b.port)).await;
    watcher
        .subscribe("roasters/+/telemetry", QoS::AtLeastOnce)
        .await;
    let (mut h1, _) = connect(opts("h1", b.port)).await;
    h1.subscribe("$share/h/roasters/#", QoS::AtLeastOnce).await;

    let (mut publisher, _) = connect(opts("pub", b.port)).await;
    for i in 0..100u32 {
        let topic = format!("roasters/r{}/telemetry", i % 4);
        publisher
            .publish(&topic, QoS::AtLeastOnce, i.to_be_bytes())
            .await;
    }
    publisher.wait_pubacks(100).await;

    let mut got1 = BTreeSet::new();
    let mut got2 = BTreeSet::new();
    while got1.len() + got2.len() < 100 {
        tokio::select! {
            p = s1.next_publish() => assert!(got1.insert(index(&p)), "s1 got a duplicate"),
            p = s2.next_publish() => assert!(got2.insert(index(&p)), "s2 got a duplicate"),
        }
    }
    assert!(got1.is_disjoint(&got2), "a message reached both members");
    let union: BTreeSet<u32> = got1.union(&got2).copied().collect();
    assert_eq!(union, (0..100).collect());
    assert!(
        !got1.is_empty() && !got2.is_empty(),
        "one member got nothing"
    );
    for i in 0..100 {
        assert_eq!(index(&watcher.next_publish().await), i);
        assert_eq!(index(&h1.next_publish().await), i);
    }

    // With s2 gone, the rest goes to s1 — including anything s2 had not acknowledged.
    s2.kill().await;
    for i in 100..200u32 {
        publisher
            .publish("roasters/r1/telemetry", QoS::AtLeastOnce, i.to_be_bytes())
            .await;
    }
    let mut rest = BTreeSet::new();
    while rest.len() < 100 {
        let i = index(&s1.next_publish().await);
        if i >= 100 {
            rest.insert(i);
        } else {
            assert!(got2.contains(&i), "s1 got {i} again");
        }
    }
    for i in 100..200 {
        assert_eq!(index(&watcher.next_publish().await), i);
    }
    b.shutdown().await;
}

#[tokio::test]
async fn shared_subscription_keeps_messages_for_offline_persistent_members() {
    let b = start(Config::default()).await;
    let mut o = opts("shared-persistent", b.port);
    o.set_clean_session(false);
    let (mut member, _) = connect(o.clone()).await;
    member.subscribe("$share/g/jobs/#", QoS::AtLeastOnce).await;
    member.disconnect().await;

    let (mut publisher, _) = connect(opts("pub", b.port)).await;
    for i in 0..10u32 {
        publisher
            .publish("jobs/x", QoS::AtLeastOnce, i.to_be_bytes())
            .await;
    }
    publisher.wait_pubacks(10).await;

    let (mut member, ack) = connect(o).await;
    assert!(ack.session_present);
    for i in 0..10 {
        assert_eq!(index(&member.next_publish().await), i);
    }
    b.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// 4. Clean and persistent sessions
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn clean_session_discards_and_persistent_session_keeps_offline_messages() {
    let b = start(Config::default()).await;
    let (mut publisher, _) = connect(opts("pub", b.port)).await;

    let mut persistent = opts("persistent", b.port);
    persistent.set_clean_session(false);
    let (mut p, ack) = connect(persistent.clone()).await;
    assert!(!ack.session_present);
    p.subscribe("offline/#", QoS::AtLeastOnce).await;
    p.disconnect().await;

    let (mut c, _) = connect(opts("clean", b.port)).await;
    c.subscribe("offline/#", QoS::AtLeastOnce).await;
    c.disconnect().await;

    for i in 0..50u32 {
        publisher
            .publish("offline/data", QoS::AtLeastOnce, i.to_be_bytes())
            .await;
    }
    publisher.wait_pubacks(50).await;

    let (mut p, ack) = connect(persistent).await;
    assert!(ack.session_present);
    for i in 0..50 {
        // In order, without resubscribing.
        assert_eq!(index(&p.next_publish().await), i);
    }

    let (mut c, ack) = connect(opts("clean", b.port)).await;
    assert!(!ack.session_present);
    c.subscribe("offline/#", QoS::AtLeastOnce).await;
    publisher
        .publish("offline/data", QoS::AtLeastOnce, 999u32.to_be_bytes())
        .await;
    assert_eq!(
        index(&c.next_publish().await),
        999,
        "clean session kept messages"
    );

    // A clean connect also wipes a persistent session of the same id.
    p.disconnect().await;
    let (_p, ack) = connect(opts("persistent", b.port)).await;
    assert!(!ack.session_present);
    b.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// 5. Backpressure
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn full_queue_holds_publishers_back_instead_of_dropping() {
    const TOTAL: u32 = 1000;
    let config = Config {
        max_inflight: 10,
        max_queued: 100,
        ..Config::default()
    };
    let window = usize::from(config.max_inflight);
    let capacity = window + config.max_queued;
    let b = start(config).await;

    let mut sub_opts = opts("slow-sub", b.port);
    sub_opts.set_clean_session(false).set_manual_acks(true);
    let (mut sub, _) = connect(sub_opts).await;
    sub.subscribe("bp/#", QoS::AtLeastOnce).await;

    let (mut publisher, _) = connect(opts("fast-pub", b.port)).await;
    let producer = {
        let client = publisher.client.clone();
        tokio::spawn(async move {
            for i in 0..TOTAL {
                client
                    .publish("bp/data", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec())
                    .await
                    .unwrap();
            }
        })
    };

    // The subscriber gets its window and acks nothing; the queue fills up behind it.
    let mut received = Vec::new();
    for _ in 0..window {
        received.push(sub.next_publish().await);
    }
    publisher.wait_pubacks(capacity).await;
    assert!(sub.maybe_publish(QUIET).await.is_none(), "window exceeded");
    while let Ok(Some(Ok(event))) = timeout(QUIET, publisher.events.recv()).await {
        if let Event::Incoming(Packet::PubAck(_)) = event {
            publisher.pubacks += 1;
        }
    }
    assert_eq!(
        publisher.pubacks, capacity,
        "publisher was acknowledged beyond what the session can hold"
    );

    // Once the subscriber consumes, everything arrives, in order.
    for p in &received {
        sub.client.ack(p).await.unwrap();
    }
    let mut next = received.len() as u32;
    for (i, p) in received.iter().enumerate() {
        assert_eq!(index(p), i as u32);
    }
    while next < TOTAL {
        let p = sub.next_publish().await;
        assert_eq!(index(&p), next);
        sub.client.ack(&p).await.unwrap();
        next += 1;
    }
    producer.await.unwrap();
    publisher.wait_pubacks(TOTAL as usize).await;
    b.shutdown().await;
}

#[tokio::test]
async fn client_consuming_its_own_publications_does_not_deadlock() {
    const TOTAL: u32 = 2000;
    let config = Config {
        max_inflight: 5,
        max_queued: 10,
        ..Config::default()
    };
    let b = start(config).await;
    let (mut me, _) = connect(opts("loop", b.port)).await;
    me.subscribe("loop/#", QoS::AtLeastOnce).await;
    let producer = {
        let client = me.client.clone();
        tokio::spawn(async move {
            for i in 0..TOTAL {
                client
                    .publish("loop/x", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec())
                    .await
                    .unwrap();
            }
        })
    };
    for i in 0..TOTAL {
        assert_eq!(index(&me.next_publish().await), i);
    }
    producer.await.unwrap();
    b.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// 6. Retained messages and last wills
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn retained_messages_reach_later_subscribers() {
    let b = start(Config::default()).await;
    let (mut publisher, _) = connect(opts("pub", b.port)).await;
    let retain = |topic: &str, payload: &str| {
        let client = publisher.client.clone();
        let (topic, payload) = (topic.to_owned(), payload.to_owned());
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, true, payload)
                .await
                .unwrap();
        }
    };
    retain("status/r1", "online").await;
    retain("status/r2", "stale").await;
    retain("status/r2", "").await; // an empty retained payload deletes
    publisher.wait_pubacks(3).await;

    let (mut late, _) = connect(opts("late", b.port)).await;
    late.subscribe("status/+", QoS::AtLeastOnce).await;
    let p = late.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), text(&p), p.retain),
        ("status/r1", "online", true)
    );
    publisher
        .publish("status/marker", QoS::AtLeastOnce, "live")
        .await;
    let p = late.next_publish().await;
    // Live messages to an existing subscription are not flagged retained.
    assert_eq!(
        (p.topic.as_str(), text(&p), p.retain),
        ("status/marker", "live", false)
    );
    b.shutdown().await;
}

#[tokio::test]
async fn last_will_is_published_on_abnormal_close_only() {
    let b = start(Config::default()).await;
    let (mut watcher, _) = connect(opts("watcher", b.port)).await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;

    let mut crash = opts("crash", b.port);
    crash.set_last_will(LastWill::new(
        "wills/crash",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (crash, _) = connect(crash).await;
    crash.kill().await;
    let p = watcher.next_publish().await;
    assert_eq!((p.topic.as_str(), text(&p)), ("wills/crash", "gone"));

    let mut polite = opts("polite", b.port);
    polite.set_last_will(LastWill::new(
        "wills/polite",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (polite, _) = connect(polite).await;
    polite.disconnect().await;
    let (publisher, _) = connect(opts("pub", b.port)).await;
    publisher
        .publish("wills/marker", QoS::AtLeastOnce, "marker")
        .await;
    assert_eq!(text(&watcher.next_publish().await), "marker");
    assert!(
        watcher.maybe_publish(QUIET).await.is_none(),
        "will published after DISCONNECT"
    );

    // A retained will is stored like any retained message.
    let mut retained = opts("retained-will", b.port);
    retained.set_last_will(LastWill::new("wills/kept", "gone", QoS::AtLeastOnce, true));
    let (retained, _) = connect(retained).await;
    retained.kill().await;
    assert_eq!(text(&watcher.next_publish().await), "gone");
    let (mut late, _) = connect(opts("late", b.port)).await;
    late.subscribe("wills/kept", QoS::AtLeastOnce).await;
    let p = late.next_publish().await;
    assert!(p.retain);
    b.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// 7. Garbage and protocol violations close only the offending connection
// ---------------------------------------------------------------------------------------

fn connect_bytes(client_id: &str, clean: bool, keep_alive: u16) -> Vec<u8> {
    let mut c = Connect::new(client_id);
    c.clean_session = clean;
    c.keep_alive = keep_alive;
    let mut buf = BytesMut::new();
    Packet::Connect(c).write(&mut buf, usize::MAX).unwrap();
    buf.to_vec()
}

const CONNACK_OK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

/// Sends `bytes` and returns everything received until the broker closes the connection.
async fn send_until_closed(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The broker may close before reading everything; a failed write is fine.
    let _ = s.write_all(bytes).await;
    let mut got = Vec::new();
    let read = timeout(WAIT, async {
        let mut chunk = [0u8; 256];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "broker did not close the connection");
    got
}

#[tokio::test]
async fn garbage_and_violations_close_only_that_connection() {
    let b = start(Config {
        max_packet_bytes: 64 * 1024,
        ..Config::default()
    })
    .await;
    let (mut good, _) = connect(opts("good", b.port)).await;
    good.subscribe("alive/#", QoS::AtLeastOnce).await;

    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    assert!(send_until_closed(b.port, &garbage).await.is_empty());
    assert!(send_until_closed(b.port, &[0xff; 64]).await.is_empty());
    // Not CONNECT first.
    assert!(send_until_closed(b.port, &[0xc0, 0x00]).await.is_empty());
    let mut publish_first = vec![0x30, 0x05, 0x00, 0x01, b'a'];
    publish_first.extend_from_slice(b"xy");
    assert!(send_until_closed(b.port, &publish_first).await.is_empty());
    // A remaining length that never terminates.
    assert!(
        send_until_closed(b.port, &[0x10, 0xff, 0xff, 0xff, 0xff, 0xff])
            .await
            .is_empty()
    );

    let after_connect = |tail: &[u8]| {
        let mut bytes = connect_bytes("", true, 30);
        bytes.extend_from_slice(tail);
        bytes
    };
    // QoS 3 publish.
    let got = send_until_closed(b.port, &after_connect(&[0x36, 0x05, 0, 1, b'a', 0, 1])).await;
    assert_eq!(got, CONNACK_OK);
    // Publish to a wildcard topic.
    let got = send_until_closed(
        b.port,
        &after_connect(&[0x32, 0x07, 0, 3, b'a', b'/', b'+', 0, 1]),
    )
    .await;
    assert_eq!(got, CONNACK_OK);
    // A packet larger than max_packet_bytes (remaining length 10 MiB), never sent in full.
    let got = send_until_closed(b.port, &after_connect(&[0x30, 0x80, 0x80, 0x80, 0x05])).await;
    assert_eq!(got, CONNACK_OK);
    // A second CONNECT.
    let got = send_until_closed(b.port, &after_connect(&connect_bytes("again", true, 30))).await;
    assert_eq!(got, CONNACK_OK);
    // A server-to-client packet.
    let got = send_until_closed(b.port, &after_connect(&[0x90, 0x03, 0, 1, 0])).await;
    assert_eq!(got, CONNACK_OK);
    // A subscribe without filters, and one with a truncated filter.
    let got = send_until_closed(b.port, &after_connect(&[0x82, 0x02, 0, 1])).await;
    assert_eq!(got, CONNACK_OK);
    let got = send_until_closed(b.port, &after_connect(&[0x82, 0x05, 0, 1, 0, 9, b'a'])).await;
    assert_eq!(got, CONNACK_OK);
    // Multi-byte UTF-8 at the start of a topic (panics rumqttc's own matcher).
    let (mut utf8, _) = connect(opts("utf8", b.port)).await;
    utf8.subscribe("é/+", QoS::AtLeastOnce).await;
    utf8.subscribe("#", QoS::AtLeastOnce).await;
    utf8.publish("é/x", QoS::AtLeastOnce, "ok").await;
    assert_eq!(text(&utf8.next_publish().await), "ok");

    // The well-behaved client never noticed.
    let (publisher, _) = connect(opts("pub", b.port)).await;
    publisher
        .publish("alive/x", QoS::AtLeastOnce, "still here")
        .await;
    assert_eq!(text(&good.next_publish().await), "still here");
    b.shutdown().await;
}

#[tokio::test]
async fn connect_is_validated() {
    let b = start(Config::default()).await;
    // MQTT 3.1 ("MQIsdp", level 3): unacceptable protocol version.
    let v31 = [
        0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60, 0, 1, b'x',
    ];
    assert_eq!(
        send_until_closed(b.port, &v31[..]).await,
        [0x20, 0x02, 0x00, 0x01]
    );
    // MQTT 5 (level 5): likewise.
    let mut v5 = connect_bytes("x", true, 60);
    v5[8] = 5;
    assert_eq!(
        send_until_closed(b.port, &v5).await,
        [0x20, 0x02, 0x00, 0x01]
    );
    // Empty client id with clean_session=0: identifier rejected.
    assert_eq!(
        send_until_closed(b.port, &connect_bytes("", false, 60)).await,
        [0x20, 0x02, 0x00, 0x02]
    );
    // Empty client id with clean_session=1: accepted; an invalid filter gets 0x80 and QoS 2
    // is granted as 1; PINGREQ is answered; a 1 s keep-alive is enforced.
    let mut s = TcpStream::connect(("127.0.0.1", b.port)).await.unwrap();
    let subscribe = Subscribe::new_many([
        SubscribeFilter::new("bad/#/filter".to_owned(), QoS::AtLeastOnce),
        SubscribeFilter::new("ok/+".to_owned(), QoS::ExactlyOnce),
    ]);
    let mut request = BytesMut::from(&connect_bytes("", true, 1)[..]);
    Packet::Subscribe(Subscribe {
        pkid: 7,
        ..subscribe
    })
    .write(&mut request, usize::MAX)
    .unwrap();
    request.extend_from_slice(&[0xc0, 0x00]);
    s.write_all(&request).await.unwrap();
    let mut reply = [0u8; 12];
    timeout(WAIT, s.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let suback = [0x90, 0x04, 0x00, 0x07, 0x80, 0x01];
    assert_eq!(reply[..4], CONNACK_OK);
    assert_eq!(reply[4..10], suback);
    assert_eq!(reply[10..], [0xd0, 0x00]);
    let started = Instant::now();
    let mut rest = Vec::new();
    let n = timeout(WAIT, s.read_to_end(&mut rest)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "unexpected data {rest:?}");
    assert!(started.elapsed() >= Duration::from_millis(1000));
    b.shutdown().await;
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Valid packets of every kind a client may send, to be mutated.
fn sample_packets() -> Vec<Vec<u8>> {
    let mut publish = Publish::new("roasters/r1/telemetry", QoS::AtLeastOnce, vec![1, 2, 3]);
    publish.pkid = 9;
    let mut publish2 = Publish::new("a", QoS::ExactlyOnce, vec![0; 40]);
    publish2.pkid = 10;
    let packets = [
        Packet::Publish(publish),
        Packet::Publish(publish2),
        Packet::Publish(Publish::new("$x/é", QoS::AtMostOnce, vec![])),
        Packet::Subscribe(Subscribe {
            pkid: 3,
            ..Subscribe::new("$share/g/+/#", QoS::AtLeastOnce)
        }),
        Packet::Unsubscribe(rumqttc::Unsubscribe {
            pkid: 4,
            topics: vec!["a/+".to_owned(), "b".to_owned()],
        }),
        Packet::PubAck(rumqttc::PubAck::new(1)),
        Packet::PubRel(rumqttc::PubRel::new(10)),
        Packet::PubRec(rumqttc::PubRec::new(5)),
        Packet::PubComp(rumqttc::PubComp::new(5)),
        Packet::PingReq,
    ];
    packets
        .iter()
        .map(|p| {
            let mut buf = BytesMut::new();
            p.write(&mut buf, usize::MAX).unwrap();
            buf.to_vec()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_packets_never_hurt_the_broker() {
    let b = start(Config {
        max_packet_bytes: 4096,
        ..Config::default()
    })
    .await;
    let (mut good, _) = connect(opts("good", b.port)).await;
    good.subscribe("alive/#", QoS::AtLeastOnce).await;
    let samples = sample_packets();
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let mut sessions = Vec::new();
    for round in 0..300u32 {
        let mut bytes = if round % 10 == 0 {
            Vec::new()
        } else {
            let persistent = round % 3 == 0;
            connect_bytes(&format!("fuzz-{}", round % 7), !persistent, 5)
        };
        for _ in 0..1 + rng.below(6) {
            let mut packet = samples[rng.below(samples.len())].clone();
            for _ in 0..rng.below(4) {
                let at = rng.below(packet.len());
                packet[at] = rng.next() as u8;
            }
            if rng.below(5) == 0 {
                packet.truncate(rng.below(packet.len() + 1));
            }
            bytes.extend_from_slice(&packet);
        }
        if round % 10 == 0 {
            bytes = (0..1 + rng.below(300)).map(|_| rng.next() as u8).collect();
        }
        let port = b.port;
        sessions.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
                return;
            };
            let _ = s.write_all(&bytes).await;
            let _ = s.shutdown().await;
            let mut sink = Vec::new();
            let _ = timeout(WAIT, s.read_to_end(&mut sink)).await;
        }));
    }
    for s in sessions {
        s.await.unwrap();
    }
    let (publisher, _) = connect(opts("pub", b.port)).await;
    publisher
        .publish("alive/x", QoS::AtLeastOnce, "still here")
        .await;
    assert_eq!(text(&good.next_publish().await), "still here");
    b.shutdown().await;
}

#[tokio::test]
async fn resent_qos2_publish_is_routed_once() {
    let b = start(Config::default()).await;
    let (mut sub, _) = connect(opts("sub", b.port)).await;
    sub.subscribe("q2/#", QoS::AtLeastOnce).await;

    let mut s = TcpStream::connect(("127.0.0.1", b.port)).await.unwrap();
    let publish = [0x34, 9, 0, 4, b'q', b'2', b'/', b'x', 0, 5, b'p'];
    let mut again = publish;
    again[0] |= 0x08; // DUP: our PUBREC "was lost"
    let mut request = connect_bytes("raw-q2", true, 60);
    request.extend_from_slice(&publish);
    request.extend_from_slice(&again);
    request.extend_from_slice(&[0x62, 0x02, 0, 5]); // PUBREL
    s.write_all(&request).await.unwrap();
    let mut reply = [0u8; 16];
    timeout(WAIT, s.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let pubrec = [0x50, 0x02, 0, 5];
    let pubcomp = [0x70, 0x02, 0, 5];
    assert_eq!(reply, [CONNACK_OK, pubrec, pubrec, pubcomp].concat()[..]);

    let (publisher, _) = connect(opts("pub", b.port)).await;
    publisher.publish("q2/x", QoS::AtLeastOnce, "marker").await;
    let first = sub.next_publish().await;
    assert_eq!((text(&first), first.qos), ("p", QoS::AtLeastOnce));
    assert_eq!(text(&sub.next_publish().await), "marker", "routed twice");
    b.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// 8. Session takeover
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn second_connection_with_same_id_takes_over() {
    let b = start(Config::default()).await;
    let mut o = opts("same-id", b.port);
    o.set_clean_session(false);
    let (mut first, ack) = connect(o.clone()).await;
    assert!(!ack.session_present);
    first.subscribe("take/#", QoS::AtLeastOnce).await;

    let (mut second, ack) = connect(o).await;
    assert!(ack.session_present);
    let why = first.closed().await;
    assert!(!why.is_empty());

    // The session, subscription included, moved to the second connection.
    let (publisher, _) = connect(opts("pub", b.port)).await;
    publisher.publish("take/x", QoS::AtLeastOnce, "moved").await;
    assert_eq!(text(&second.next_publish().await), "moved");

    // Shutdown closes the remaining connections and returns.
    b.shutdown().await;
    second.closed().await;
}

// ---------------------------------------------------------------------------------------
// Many publishers, one shared subscriber: nothing lost, and the rate it took. Runs at a small
// size in every test run; to measure, scale it up (the clients share the CPU with the broker):
//   SIMCORP_BROKER_MESSAGES_PER_PUBLISHER=10000 \
//     cargo test -p broker --release --test it many_publishers -- --nocapture
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_publishers_one_shared_subscriber_lose_nothing() {
    const PUBLISHERS: u32 = 10;
    let each: u32 = std::env::var("SIMCORP_BROKER_MESSAGES_PER_PUBLISHER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let total: u32 = PUBLISHERS * each;
    let b = start(Config::default()).await;
    let mut sub_opts = opts("ingestion", b.port);
    sub_opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let (mut sub, _) = connect(sub_opts).await;
    sub.subscribe("$share/ingestion/roasters/+/telemetry", QoS::AtLeastOnce)
        .await;
    let started = Instant::now();
    let mut producers = Vec::new();
    for p in 0..PUBLISHERS {
        let mut o = opts(&format!("roaster-{p}"), b.port);
        o.set_inflight(1000);
        let (mut publisher, _) = connect(o).await;
        producers.push(tokio::spawn(async move {
            let topic = format!("roasters/r{p}/telemetry");
            for i in 0..each {
                let mut payload = vec![0u8; 200];
                payload[..4].copy_from_slice(&(p * each + i).to_be_bytes());
                publisher
                    .client
                    .publish(&topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
            }
            publisher.wait_pubacks(each as usize).await;
        }));
    }
    let mut seen = vec![false; total as usize];
    let mut distinct = 0;
    while distinct < total {
        let i = index(&sub.next_publish().await) as usize;
        if !std::mem::replace(&mut seen[i], true) {
            distinct += 1;
        }
    }
    for p in producers {
        p.await.unwrap();
    }
    let elapsed = started.elapsed();
    let rate = f64::from(total) / elapsed.as_secs_f64();
    println!("{total} QoS 1 messages from {PUBLISHERS} publishers in {elapsed:?}: {rate:.0} msg/s");
    b.shutdown().await;
}
