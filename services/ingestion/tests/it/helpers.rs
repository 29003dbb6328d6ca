//! Spawning the service and talking to it, for every test in this binary.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ingestion::Config;
use model::{Channels, Point, SessionEvent, SessionState, Topic, TopicKind};
use mqtt::{Publisher, QoS};
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running ingestion service, its temporary data directory, and an HTTP client.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ingestion::Error>>>,
    _data: Option<tempfile::TempDir>,
}

/// A configuration for tests: the given broker and database, a temporary data directory, a
/// unique client id, fast store probing.
pub fn config(mqtt_url: &str, postgres_url: Option<&str>) -> (Config, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut c = Config {
        data_dir: data.path().to_owned(),
        ..Config::default()
    };
    c.mqtt.url = mqtt_url.to_owned();
    c.mqtt.client_id = Some(testkit::unique_name("ingestion"));
    c.mqtt.reconnect_max_ms = 500;
    c.postgres.url = postgres_url.map(|u| SecretString::from(u.to_owned()));
    c.postgres.acquire_timeout_ms = 1_000;
    c.store.probe_interval_ms = 200;
    c.ingestion.http_addr = "127.0.0.1:0".parse().unwrap();
    c.ingestion.drain_timeout_secs = 10;
    c.log.format = kit::logging::LogFormat::Text;
    (c, data)
}

impl TestApp {
    /// Starts the service in this process and waits until it is ready.
    pub async fn spawn(config: Config, data: tempfile::TempDir) -> TestApp {
        let app = Self::spawn_unready(config, Some(data)).await;
        app.wait_ready().await;
        app
    }

    pub async fn spawn_unready(config: Config, data: Option<tempfile::TempDir>) -> TestApp {
        kit::logging::init(&config.log);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ingestion::run(config, listener, async move {
            let _ = stopped.await;
        }));
        TestApp {
            addr,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
            _data: data,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> T {
        let resp = self.http.get(self.url(path)).send().await.unwrap();
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    pub async fn status(&self, path: &str) -> reqwest::StatusCode {
        self.http.get(self.url(path)).send().await.unwrap().status()
    }

    pub async fn text(&self, path: &str) -> String {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn stats(&self) -> serde_json::Value {
        self.get("/stats").await
    }

    pub async fn wait_ready(&self) {
        testkit::eventually(Duration::from_secs(20), "ingestion to be ready", || async {
            (self.status("/ready").await == reqwest::StatusCode::OK).then_some(())
        })
        .await;
    }

    /// Asks the service to stop and waits for it; returns how long it took.
    pub async fn stop(mut self) -> Duration {
        let started = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        started.elapsed()
    }
}

/// The point a test device publishes at `seq`: values derived from `seq`, so any stored row can
/// be checked exactly.
pub fn point(device: &str, session: &str, seq: u64) -> Point {
    let now = model::now_ms();
    Point {
        device_id: device.into(),
        session: session.into(),
        seq,
        ts_ms: now,
        channels: Channels {
            bt: Some(20.0 + seq as f64 * 0.25),
            et: Some(240.5 - seq as f64 * 0.125),
            gas: Some((seq % 100) as f64),
            air: (!seq.is_multiple_of(3)).then_some(35.0),
            drum: Some(60.0),
            extra: if seq.is_multiple_of(5) {
                [("ror".to_string(), seq as f64 / 7.0)].into()
            } else {
                Default::default()
            },
        },
        received_ms: now,
    }
}

pub fn session_event(device: &str, session: &str, state: SessionState) -> SessionEvent {
    SessionEvent {
        device_id: device.into(),
        session: session.into(),
        state,
        ts_ms: model::now_ms(),
        metadata: [("bean".to_string(), "kenya-nyeri".into())]
            .into_iter()
            .collect(),
        received_ms: 0,
    }
}

pub fn telemetry_topic(device: &str) -> String {
    Topic::format(device, TopicKind::Telemetry)
}

pub fn session_topic(device: &str) -> String {
    Topic::format(device, TopicKind::Session)
}

pub async fn publisher(mqtt_url: &str) -> Publisher {
    let config = mqtt::Config {
        url: mqtt_url.to_owned(),
        ..mqtt::Config::default()
    };
    Publisher::connect(
        &config,
        &testkit::unique_name("device"),
        Duration::from_secs(10),
    )
    .await
    .unwrap()
}

/// Publishes `points` as single messages (`frame == 1`) or frames of `frame` points.
pub async fn publish_points(publisher: &Publisher, points: &[Point], frame: usize) {
    for chunk in points.chunks(frame.max(1)) {
        let payload = if frame <= 1 {
            chunk[0].to_json()
        } else {
            Point::frame_json(chunk)
        };
        publisher
            .publish(
                telemetry_topic(&chunk[0].device_id),
                QoS::AtLeastOnce,
                payload,
            )
            .await
            .unwrap();
    }
}

pub async fn publish_raw(publisher: &Publisher, topic: &str, payload: impl Into<bytes::Bytes>) {
    publisher
        .publish(topic.to_owned(), QoS::AtLeastOnce, payload)
        .await
        .unwrap();
}

/// Publishes `points` in chunks of `per_10ms` every 10 ms; waits until the broker acknowledged
/// them all.
pub async fn stream_at(
    mqtt_url: &str,
    points: Vec<Point>,
    per_10ms: usize,
) -> tokio::task::JoinHandle<()> {
    let device = publisher(mqtt_url).await;
    tokio::spawn(async move {
        for chunk in points.chunks(per_10ms) {
            publish_points(&device, chunk, 1).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            device.flush(Duration::from_secs(120)).await,
            "the broker never acknowledged every publish"
        );
    })
}

/// A stored row, as the tests compare it (the same shape from PostgreSQL and SQLite).
#[derive(Debug, PartialEq, sqlx::FromRow)]
pub struct Row {
    pub seq: i64,
    pub bt: Option<f64>,
    pub et: Option<f64>,
    pub gas: Option<f64>,
    pub air: Option<f64>,
    pub drum: Option<f64>,
    pub ror: Option<f64>,
}

impl Row {
    pub fn expected(p: &Point) -> Row {
        Row {
            seq: p.seq as i64,
            bt: p.channels.bt,
            et: p.channels.et,
            gas: p.channels.gas,
            air: p.channels.air,
            drum: p.channels.drum,
            ror: p.channels.extra.get("ror").copied(),
        }
    }
}

/// Asserts that `actual` rows are exactly `expected`, reporting counts and the first difference
/// (not thousands of rows).
#[track_caller]
pub fn assert_rows(actual: &[Row], expected: &[Row]) {
    if let Some(i) = (0..actual.len().min(expected.len())).find(|&i| actual[i] != expected[i]) {
        panic!(
            "row {i} differs: stored {:?}, published {:?} ({} rows stored, {} published)",
            actual[i],
            expected[i],
            actual.len(),
            expected.len()
        );
    }
    assert_eq!(actual.len(), expected.len(), "rows stored vs published");
}

/// Every telemetry row of `device` in PostgreSQL, by seq.
pub async fn pg_rows(pool: &sqlx::PgPool, device: &str) -> Vec<Row> {
    sqlx::query_as(
        "SELECT seq, bt, et, gas, air, drum, (extra->>'ror')::float8 AS ror \
         FROM telemetry WHERE device_id = $1 ORDER BY seq",
    )
    .bind(device)
    .fetch_all(pool)
    .await
    .unwrap()
}

pub async fn pg_count(pool: &sqlx::PgPool, device: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM telemetry WHERE device_id = $1")
        .bind(device)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until `device` has `n` rows in PostgreSQL.
pub async fn wait_pg_count(pool: &sqlx::PgPool, device: &str, n: i64, timeout: Duration) {
    testkit::eventually(
        timeout,
        &format!("{n} rows of {device} in PostgreSQL"),
        || async { (pg_count(pool, device).await >= n).then_some(()) },
    )
    .await;
}

pub async fn pg_pool(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap()
}

/// The usual setup: a private broker (the project's config), a fresh database, the service on
/// them, a pool to check what it stored, and a device to publish with. Keep it in a variable
/// for the whole test: the broker and the database go away when it is dropped.
pub struct Stack {
    /// The stack's own broker, for drills that restart it.
    pub broker: testkit::PrivateMosquitto,
    // Held for its Drop: the database lives as long as the stack.
    _db: testkit::TestDatabase,
    pub app: TestApp,
    pub pool: sqlx::PgPool,
    pub device: Publisher,
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(|_| {}).await
    }

    /// As [`start`](Self::start), with the service's configuration adjusted first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Stack {
        let broker = testkit::PrivateMosquitto::start().await;
        let db = testkit::TestDatabase::create().await;
        let (mut config, data) = config(&broker.url(), Some(&db.url));
        adjust(&mut config);
        let app = TestApp::spawn(config, data).await;
        let pool = pg_pool(&db.url).await;
        let device = publisher(&broker.url()).await;
        Stack {
            broker,
            _db: db,
            app,
            pool,
            device,
        }
    }
}

/// The real `ingestion` binary running as a child process, for drills that kill it.
pub struct Process {
    child: Child,
    pub http: String,
}

/// Starts the real `ingestion` binary, configured through the environment as in a container
/// (`extra_env` adds or overrides settings).
pub async fn start_process(
    mqtt: &str,
    pg: &str,
    data: &std::path::Path,
    client_id: &str,
    extra_env: &[(&str, &str)],
) -> Process {
    start_process_at(testkit::free_port(), mqtt, pg, data, client_id, extra_env).await
}

/// [`start_process`] with its HTTP API on `port`: a restarted process keeps its address.
pub async fn start_process_at(
    port: u16,
    mqtt: &str,
    pg: &str,
    data: &std::path::Path,
    client_id: &str,
    extra_env: &[(&str, &str)],
) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_ingestion"))
        .env("SIMCORP_MQTT_URL", mqtt)
        .env("SIMCORP_MQTT_CLIENT_ID", client_id)
        .env("SIMCORP_POSTGRES_URL", pg)
        .env("SIMCORP_DATA_DIR", data)
        .env("SIMCORP_INGESTION_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("SIMCORP_LOG_LEVEL", "warn")
        .envs(extra_env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let process = Process {
        child,
        http: format!("http://127.0.0.1:{port}"),
    };
    let ready = format!("{}/ready", process.http);
    testkit::eventually(
        Duration::from_secs(30),
        "the ingestion process to be ready",
        || {
            let ready = ready.clone();
            async move {
                let resp = reqwest::get(&ready).await.ok()?;
                resp.status().is_success().then_some(())
            }
        },
    )
    .await;
    process
}

impl Process {
    /// The most memory the process has had resident so far (the kernel's `VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let pid = self.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// SIGKILL: no drain, no goodbye to the broker or the database.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let status = self.child.wait().await.unwrap();
        assert!(!status.success(), "ingestion survived kill -9: {status}");
    }

    /// SIGTERM, then waits; returns how long the process took to exit.
    pub async fn terminate(mut self) -> Duration {
        let pid = self.child.id().unwrap();
        let started = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .unwrap()
            .success();
        assert!(ok);
        let status = tokio::time::timeout(Duration::from_secs(35), self.child.wait())
            .await
            .expect("ingestion did not exit within the 30 s drain deadline")
            .unwrap();
        assert!(status.success(), "ingestion exited with {status}");
        started.elapsed()
    }
}
