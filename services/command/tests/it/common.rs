//! One command service on a private broker and a fresh database, a fake roaster, and typed calls.

use std::time::Duration;

use command::{CommandService, TokenEntry};
use model::command::{Ack, Command, Outcome, Refusal};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::{PrivateMosquitto, Server, TestDatabase, TestService};
use tokio::sync::mpsc;

pub(crate) const OPERATOR: &str = "tok-operator-olga";
pub(crate) const APPROVER: &str = "tok-approver-anna";
/// Proposes and approves: may never approve what it proposed.
pub(crate) const BOTH: &str = "tok-both-pat-1234";
pub(crate) const ADMIN: &str = "tok-admin-root-99";
pub(crate) const DEVICE: &str = "tok-device-enroll";

pub(crate) fn require(test: &str) -> bool {
    testkit::require(Server::Postgres, test)
}

fn tokens() -> Vec<TokenEntry> {
    [
        (OPERATOR, "olga", vec!["operator"]),
        (APPROVER, "anna", vec!["approver"]),
        (BOTH, "pat", vec!["operator", "approver"]),
        (ADMIN, "root", vec!["admin"]),
        (DEVICE, "enroller", vec!["device"]),
    ]
    .into_iter()
    .map(|(t, a, r)| TokenEntry::new(t, a, &r))
    .collect()
}

/// What a command service instance needs to be started again over the same state.
pub(crate) struct Platform {
    pub(crate) broker: PrivateMosquitto,
    pub(crate) db: TestDatabase,
    pub(crate) keys: tempfile::TempDir,
    pub(crate) client_id: String,
}

impl Platform {
    pub(crate) async fn new() -> Platform {
        Platform {
            broker: PrivateMosquitto::start().await,
            db: TestDatabase::create().await,
            keys: tempfile::tempdir().unwrap(),
            client_id: testkit::unique_name("command"),
        }
    }

    pub(crate) async fn start(
        &self,
        proposal_ttl_secs: u64,
        ack_timeout_secs: u64,
    ) -> TestService<CommandService> {
        self.start_with(proposal_ttl_secs, ack_timeout_secs, |_| {})
            .await
    }

    pub(crate) async fn start_with(
        &self,
        proposal_ttl_secs: u64,
        ack_timeout_secs: u64,
        change: impl FnOnce(&mut command::Config) + Send + 'static,
    ) -> TestService<CommandService> {
        testkit::spawn::<CommandService>()
            .mqtt(&self.broker.url())
            .postgres_url(&self.db.url)
            .set("mqtt.client_id", self.client_id.as_str())
            .set("hsm.dir", self.keys.path().to_string_lossy().as_ref())
            .set("command.proposal_ttl_secs", proposal_ttl_secs)
            .set("command.ack_timeout_secs", ack_timeout_secs)
            .set("command.sweep_interval_ms", 100)
            .configure(|c| c.command.tokens = tokens())
            .configure(change)
            .start()
            .await
    }

    /// The service on its embedded SQLite store (no `[postgres]`), in `data`.
    pub(crate) async fn start_sqlite(
        &self,
        data: tempfile::TempDir,
    ) -> TestService<CommandService> {
        testkit::spawn::<CommandService>()
            .mqtt(&self.broker.url())
            .data_dir(data)
            .set("mqtt.client_id", self.client_id.as_str())
            .set("hsm.dir", self.keys.path().to_string_lossy().as_ref())
            .set("command.sweep_interval_ms", 100)
            .configure(|c| c.command.tokens = tokens())
            .start()
            .await
    }

    pub(crate) async fn sql(&self, sql: &str) {
        let pool = sqlx::PgPool::connect(&self.db.url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}

/// `method path` with a token and a JSON body: status and JSON.
pub(crate) async fn call(
    app: &TestService<CommandService>,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app.http.request(method, app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub(crate) async fn propose(
    app: &TestService<CommandService>,
    token: &str,
    device: &str,
    control: &str,
    value: f64,
) -> (StatusCode, Value) {
    let body = json!({"device_id": device, "control": control, "value": value, "reason": "follow the profile"});
    call(app, Method::POST, "/proposals", Some(token), Some(body)).await
}

pub(crate) async fn state_of(app: &TestService<CommandService>, id: &str) -> String {
    let (_, c) = call(
        app,
        Method::GET,
        &format!("/proposals/{id}"),
        Some(OPERATOR),
        None,
    )
    .await;
    c["state"].as_str().unwrap_or_default().to_owned()
}

pub(crate) async fn wait_state(app: &TestService<CommandService>, id: &str, want: &str) {
    testkit::eventually(
        Duration::from_secs(15),
        &format!("{id} to be {want}"),
        || async { (state_of(app, id).await == want).then_some(()) },
    )
    .await;
}

/// A roaster as the command service sees it: a session, telemetry, commands received and acks
/// signed with a key of its own keystore.
pub(crate) struct FakeDevice {
    pub(crate) id: String,
    publisher: mqtt::Publisher,
    commands: mpsc::UnboundedReceiver<Vec<u8>>,
    _subscription: mqtt::SubscriberHandle,
    pub(crate) keystore: keys::Keystore,
    _dir: tempfile::TempDir,
}

impl FakeDevice {
    pub(crate) async fn connect(broker: &PrivateMosquitto, id: &str) -> FakeDevice {
        let cfg = mqtt::Config {
            url: broker.url(),
            ..mqtt::Config::default()
        };
        let publisher = mqtt::Publisher::connect(
            &cfg,
            &testkit::unique_name("dev-pub"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let sub = mqtt::Subscriber::with_session(
            &cfg,
            testkit::unique_name("dev-sub"),
            vec![format!("roasters/{id}/commands")],
            mqtt::SessionMode::Clean,
        )
        .unwrap();
        let conn = sub.connection();
        let (tx, commands) = mpsc::unbounded_channel();
        let subscription = sub.spawn(move |d| {
            let _ = tx.send(d.payload.to_vec());
            async {}
        });
        testkit::eventually(
            Duration::from_secs(10),
            "the device to subscribe",
            || async { conn.is_subscribed().then_some(()) },
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        FakeDevice {
            id: id.into(),
            publisher,
            commands,
            _subscription: subscription,
            keystore: keys::Keystore::file(dir.path()).unwrap(),
            _dir: dir,
        }
    }

    pub(crate) async fn publish(&self, what: &str, payload: Value) {
        self.publisher
            .publish(
                format!("roasters/{}/{what}", self.id),
                rumqttc::QoS::AtLeastOnce,
                payload.to_string().into_bytes(),
            )
            .await
            .unwrap();
        assert!(self.publisher.flush(Duration::from_secs(5)).await);
    }

    /// A session start and one telemetry point with these control values.
    pub(crate) async fn roasting(&self, session: &str, gas: f64) {
        let now = model::now_ms();
        self.publish(
            "session",
            json!({"session": session, "state": "start", "ts": now, "roaster_model": "skywalker"}),
        )
        .await;
        self.telemetry(session, 1, gas).await;
    }

    pub(crate) async fn telemetry(&self, session: &str, seq: u64, gas: f64) {
        let now = model::now_ms();
        self.publish(
            "telemetry",
            json!({"session": session, "seq": seq, "ts": now,
            "channels": {"bt": 150.0, "et": 210.0, "gas": gas, "air": 30.0, "drum": 60.0}}),
        )
        .await;
    }

    /// The next command received, decoded (not yet verified).
    pub(crate) async fn next_command(&mut self) -> Command {
        let payload = tokio::time::timeout(Duration::from_secs(15), self.commands.recv())
            .await
            .expect("no command within 15 s")
            .unwrap();
        Command::decode(&self.id, &payload).unwrap()
    }

    /// How many more commands arrive within `wait`.
    pub(crate) async fn more_commands(&mut self, wait: Duration) -> usize {
        let mut n = 0;
        while let Ok(Some(_)) = tokio::time::timeout(wait, self.commands.recv()).await {
            n += 1;
        }
        n
    }

    /// Publishes an ack of `command_id` signed by `key_label` (a key of its keystore).
    pub(crate) async fn ack(
        &self,
        command_id: &str,
        key_label: &str,
        outcome: Option<Refusal>,
        forge: bool,
    ) {
        let key = self.keystore.find_or_generate(key_label).unwrap();
        let mut ack = Ack {
            command_id: command_id.into(),
            device_id: self.id.clone(),
            outcome: if outcome.is_some() {
                Outcome::Refused
            } else {
                Outcome::Applied
            },
            reason: outcome,
            detail: None,
            ts_ms: model::now_ms(),
            key_id: key_label.into(),
            sig: [0; 64],
        };
        ack.sig = key.sign(&ack.signed_bytes()).unwrap();
        if forge {
            ack.sig[0] ^= 1;
        }
        self.publisher
            .publish(
                format!("roasters/{}/commands/ack", self.id),
                rumqttc::QoS::AtLeastOnce,
                ack.to_json(),
            )
            .await
            .unwrap();
        assert!(self.publisher.flush(Duration::from_secs(5)).await);
    }

    /// Registers `key_label` (generated here) with the command service.
    pub(crate) async fn register(
        &self,
        app: &TestService<CommandService>,
        key_label: &str,
    ) -> (StatusCode, Value) {
        let key = self.keystore.find_or_generate(key_label).unwrap();
        let body = json!({"key_id": key_label, "public_key": key.public_key().to_base64()});
        call(
            app,
            Method::POST,
            &format!("/devices/{}/keys", self.id),
            Some(DEVICE),
            Some(body),
        )
        .await
    }
}

/// The audit entries about `subject` as (action, reason).
pub(crate) async fn history(
    app: &TestService<CommandService>,
    subject: &str,
) -> Vec<(String, String)> {
    let (_, h) = call(
        app,
        Method::GET,
        &format!("/proposals/{subject}/history"),
        Some(OPERATOR),
        None,
    )
    .await;
    h.as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["action"].as_str().unwrap().to_owned(),
                        e["reason"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

impl FakeDevice {
    /// Acknowledges every command it receives (applied, signed by `key_label`), counting each
    /// command id it saw, until `stop`.
    pub(crate) fn serve_acks(
        mut self,
        key_label: &'static str,
        seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let payload = tokio::select! {
                    () = stop.cancelled() => return,
                    p = self.commands.recv() => match p { Some(p) => p, None => return },
                };
                let command = Command::decode(&self.id, &payload).unwrap();
                *seen.lock().unwrap().entry(command.id.clone()).or_default() += 1;
                self.ack(&command.id, key_label, None, false).await;
            }
        })
    }
}
