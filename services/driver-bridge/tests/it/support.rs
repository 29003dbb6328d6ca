//! What the tests share: the bridge spawned on a broker, sim devices, a command signer, a
//! watcher of what the devices publish, and the store-and-forward roast (also the drill's).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use driver_bridge::{DeviceConfig, DriverBridge, DriverKind, SimSettings, TrustedKey};
use ingestion::Ingestion;
use model::command::{Command, Control};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use testkit::{PrivateMosquitto, TestService};

/// A sim device: 100 ms per sample, each sample 6 s of roast, so a roast takes ~12 s.
pub(crate) fn sim_device(id: &str) -> DeviceConfig {
    DeviceConfig {
        id: id.to_owned(),
        driver: DriverKind::Sim,
        sim: SimSettings {
            profile: "medium".into(),
            seed: 7,
            acceleration: 60.0,
            ..SimSettings::default()
        },
        modbus: None,
        key_label: None,
    }
}

/// The command service's key, in a file keystore of the test's own.
pub(crate) struct CommandSigner {
    _dir: tempfile::TempDir,
    pub key: keys::Key,
}

impl CommandSigner {
    pub(crate) fn new(label: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = keys::Keystore::file(dir.path())
            .unwrap()
            .generate(label)
            .unwrap();
        CommandSigner { _dir: dir, key }
    }

    pub(crate) fn trusted(&self) -> TrustedKey {
        TrustedKey {
            key_id: self.key.label().to_owned(),
            public_key: self.key.public_key().to_base64(),
        }
    }

    /// A command for `device` in `session`, valid for 30 s, signed.
    pub(crate) fn command(
        &self,
        device: &str,
        session: &str,
        control: Control,
        value: f64,
    ) -> Command {
        let now = model::now_ms();
        let mut c = Command {
            id: testkit::unique_name("cmd"),
            device_id: device.to_owned(),
            session: session.to_owned(),
            control,
            value,
            issued_ms: now,
            not_after_ms: now + 30_000,
            nonce: testkit::unique_name("n"),
            key_id: self.key.label().to_owned(),
            sig: [0; 64],
        };
        self.sign(&mut c);
        c
    }

    pub(crate) fn sign(&self, c: &mut Command) {
        c.sig = self.key.sign(&c.signed_bytes()).unwrap();
    }
}

/// Spawns the bridge driving `devices` on `broker`, its device keys in `keys_dir`.
pub(crate) async fn bridge(
    broker: &str,
    devices: Vec<DeviceConfig>,
    trusted: Vec<TrustedKey>,
    keys_dir: &std::path::Path,
    data: Option<tempfile::TempDir>,
) -> TestService<DriverBridge> {
    let mut spawn = testkit::spawn::<DriverBridge>()
        .mqtt(broker)
        .set("hsm.dir", keys_dir.to_string_lossy().as_ref())
        .set("driver_bridge.sample_interval_ms", 100)
        .configure(move |c| {
            c.driver_bridge.devices = devices;
            c.driver_bridge.trusted_keys = trusted;
        });
    if let Some(data) = data {
        spawn = spawn.data_dir(data);
    }
    spawn.start().await
}

/// (topic, payload) of every message seen, in arrival order.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Everything published under `roasters/{device}/#` for the listed devices, as it arrives.
#[derive(Clone)]
pub(crate) struct Watcher {
    pub client: AsyncClient,
    messages: Seen,
}

impl Watcher {
    pub(crate) async fn start(broker_port: u16, devices: &[&str]) -> Watcher {
        let mut options = MqttOptions::new(testkit::unique_name("watch"), "127.0.0.1", broker_port);
        options.set_keep_alive(Duration::from_secs(10));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let messages: Seen = Arc::new(Mutex::new(Vec::new()));
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        {
            let messages = messages.clone();
            let mut subscribed_tx = Some(subscribed_tx);
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            messages.lock().unwrap().push((p.topic, p.payload.to_vec()));
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if let Some(tx) = subscribed_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            });
        }
        let filters = devices
            .iter()
            .map(|d| rumqttc::SubscribeFilter::new(format!("roasters/{d}/#"), QoS::AtLeastOnce));
        client.subscribe_many(filters).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), subscribed)
            .await
            .unwrap()
            .unwrap();
        Watcher { client, messages }
    }

    pub(crate) fn on(&self, topic: &str) -> Vec<Vec<u8>> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// The telemetry points of `device` so far, as JSON.
    pub(crate) fn points(&self, device: &str) -> Vec<serde_json::Value> {
        self.on(&format!("roasters/{device}/telemetry"))
            .iter()
            .map(|p| serde_json::from_slice(p).unwrap())
            .collect()
    }

    pub(crate) async fn publish_command(&self, device: &str, payload: Vec<u8>) {
        self.client
            .publish(
                format!("roasters/{device}/commands"),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .unwrap();
    }

    /// The ack of `command_id`, once it came, its signature checked with `device_key`.
    pub(crate) async fn ack(
        &self,
        device: &str,
        device_key: &keys::PublicKey,
        command_id: &str,
    ) -> model::command::Ack {
        let topic = format!("roasters/{device}/commands/ack");
        testkit::eventually(Duration::from_secs(20), "the command's ack", || async {
            self.on(&topic)
                .iter()
                .map(|p| model::command::Ack::decode(device, p).unwrap())
                .find(|a| a.command_id == command_id)
        })
        .await
        .tap(|a| {
            assert!(
                keys::verify(device_key, &a.signed_bytes(), &a.sig),
                "the ack of {command_id} is not signed by the device's key"
            )
        })
    }
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&Self)) -> Self {
        f(&self);
        self
    }
}

impl<T> Tap for T {}

/// Runs a roast through an outage of `outage` and checks the stored session point by point.
pub(crate) async fn roast_through_an_outage(outage: Duration) {
    let mut broker = PrivateMosquitto::start().await;
    let ingestion: TestService<Ingestion> = testkit::spawn::<Ingestion>()
        .mqtt(&broker.url())
        .postgres()
        .await
        .start()
        .await;
    let a = testkit::unique_name("dsf");
    let keys_dir = tempfile::tempdir().unwrap();
    let mut device = sim_device(&a);
    // Slower than the command tests: the roast must outlast the outage.
    device.sim.acceleration = 2.0;
    let app = bridge(
        &broker.url(),
        vec![device],
        Vec::new(),
        keys_dir.path(),
        None,
    )
    .await;
    let view = |app: &TestService<driver_bridge::DriverBridge>| {
        let app_url = app.url(&format!("/devices/{a}"));
        let http = app.http.clone();
        async move {
            http.get(app_url)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    testkit::eventually(Duration::from_secs(20), "a few points sampled", || async {
        (view(&app).await["seq"].as_u64() >= Some(10)).then_some(())
    })
    .await;

    broker.stop().await;
    let sampled_before = view(&app).await["seq"].as_u64().unwrap();
    tokio::time::sleep(outage).await; // The outage itself is what is under test.
    let during = view(&app).await;
    assert!(
        during["seq"].as_u64().unwrap() >= sampled_before + outage.as_secs() * 5,
        "sampling went on while the broker was away: {during}"
    );
    assert!(during["buffer_depth"].as_u64().unwrap() > 0, "{during}");
    broker.restart().await;

    // Backlog drained; then stop the roast so that the session is closed and complete.
    testkit::eventually(Duration::from_secs(60), "the outbox drained", || async {
        (view(&app).await["buffer_depth"] == 0).then_some(())
    })
    .await;
    let last = view(&app).await;
    let session = last["session"].as_str().unwrap().to_owned();
    let data = app.stop_keeping_data().await;
    // What the driver sampled: every seq of the session, from 0, as the bridge counted them
    // (the stop may add the points of the final interval).
    let sampled = last["seq"].as_u64().unwrap();
    drop(data);

    let points: Vec<serde_json::Value> =
        testkit::eventually(Duration::from_secs(30), "the session stored", || async {
            let (status, body) = ingestion
                .get_text(&format!("/sessions/{session}/telemetry?limit=100000"))
                .await;
            if !status.is_success() {
                return None;
            }
            let points: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
            (points.len() as u64 >= sampled).then_some(points)
        })
        .await;
    let seqs: Vec<u64> = points.iter().map(|p| p["seq"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (0..seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "stored seqs are 0..n, in order, none twice");
    assert!(seqs.len() as u64 >= sampled);
    let ts: Vec<i64> = points.iter().map(|p| p["ts"].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "device time increases");
}
