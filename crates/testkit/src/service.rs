//! Any service of the platform, spawned in the test's process the way `simcorp serve` runs it,
//! but on a port of its own and with state of its own, so that tests never disturb each other.
//!
//! ```no_run
//! # async fn demo<S: kit::service::Service>(broker_url: &str) {
//! let app = testkit::spawn::<S>()
//!     .mqtt(broker_url)
//!     .postgres()
//!     .await
//!     .set("ingestion.drain_timeout_secs", 10)
//!     .start()
//!     .await;
//! let health = app.status("/health").await;
//! app.stop().await;
//! # }
//! ```

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use figment::value::Value;
use kit::config::Sources;
use kit::service::Service;
use kit::telemetry::{LogConfig, LogFormat, OtelConfig, TelemetryGuard};
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{OtlpReceiver, TestDatabase};

/// The telemetry of this process, set up by the first service a test spawns.
static TELEMETRY: OnceLock<TelemetryGuard> = OnceLock::new();

/// Exports the spans this process has finished, now (a no-op before any service was spawned).
pub(crate) async fn flush_spans() {
    if let Some(telemetry) = TELEMETRY.get() {
        tokio::task::spawn_blocking(|| telemetry.flush())
            .await
            .unwrap();
    }
}

/// Starts describing a test instance of `S`. By default it gets: its HTTP API on a free port of
/// 127.0.0.1, a temporary data directory (where any SQLite file of its goes), an MQTT client id
/// of its own (`<name>_<random>`, which is also the prefix of any further client ids it derives),
/// human-readable logs, and its spans exported to [`OtlpReceiver::shared`] (a process has one
/// exporter, so every test of the process exports there). Nothing else is set: a service's own defaults apply, so the broker is the
/// one at 127.0.0.1:1883 unless [`Spawn::mqtt`] names another.
pub fn spawn<S: Service>() -> Spawn<S> {
    let data = tempfile::tempdir().unwrap();
    let sources = Sources::default()
        .default_to("otel.endpoint", OtlpReceiver::shared().endpoint())
        .set("data_dir", data.path().to_string_lossy().as_ref())
        .set("mqtt.client_id", crate::unique_name(S::SPEC.name));
    Spawn {
        sources,
        data,
        database: None,
        configure: Vec::new(),
        _service: PhantomData,
    }
}

type Configure<S> = Box<dyn FnOnce(&mut <S as Service>::Config) + Send>;

/// A test instance of `S`, not started yet: see [`spawn`].
pub struct Spawn<S: Service> {
    sources: Sources,
    data: tempfile::TempDir,
    database: Option<TestDatabase>,
    configure: Vec<Configure<S>>,
    _service: PhantomData<S>,
}

impl<S: Service> Spawn<S> {
    /// Any setting, as a dotted key (`"pipeline.writers"`), as a flag would give it.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.sources = self.sources.set(key, value);
        self
    }

    /// The broker to use.
    pub fn mqtt(self, url: &str) -> Self {
        self.set("mqtt.url", url)
    }

    /// A fresh database on the shared PostgreSQL, dropped with the instance.
    pub async fn postgres(mut self) -> Self {
        let db = TestDatabase::create().await;
        self = self.postgres_url(&db.url);
        self.database = Some(db);
        self
    }

    /// A PostgreSQL the test manages itself (a [`crate::PrivatePostgres`], a database shared by
    /// two replicas).
    pub fn postgres_url(self, url: &str) -> Self {
        self.set("postgres.url", url)
    }

    /// The data directory of an earlier instance, for a restart that finds what it left.
    pub fn data_dir(mut self, data: tempfile::TempDir) -> Self {
        self.sources = self
            .sources
            .set("data_dir", data.path().to_string_lossy().as_ref());
        self.data = data;
        self
    }

    /// A change to the loaded configuration, for what is clearer typed than as a dotted key.
    pub fn configure(mut self, change: impl FnOnce(&mut S::Config) + Send + 'static) -> Self {
        self.configure.push(Box::new(change));
        self
    }

    /// Starts the instance and waits until `/ready` answers 200.
    pub async fn start(self) -> TestService<S> {
        let app = self.start_unready().await;
        app.wait_ready().await;
        app
    }

    /// Starts the instance without waiting for it to be ready (a dependency is down on purpose).
    pub async fn start_unready(self) -> TestService<S> {
        let name = S::SPEC.name;
        let figment = kit::config::figment::<S::Config>(&self.sources)
            .unwrap_or_else(|e| panic!("{name} test configuration: {e}"));
        let (mut config, http) = kit::service::load::<S>(&figment)
            .unwrap_or_else(|e| panic!("{name} test configuration: {e}"));
        for change in self.configure {
            change(&mut config);
        }
        let otel: OtelConfig = kit::config::section(&figment, "otel")
            .unwrap_or_else(|e| panic!("{name} test configuration: {e}"));
        let log = LogConfig {
            format: LogFormat::Text,
            ..LogConfig::default()
        };
        let telemetry = kit::telemetry::init(&log, &otel, S::SPEC.name)
            .unwrap_or_else(|e| panic!("{} test telemetry: {e}", S::SPEC.name));
        TELEMETRY.get_or_init(|| telemetry);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(kit::service::run_as::<S>(config, http, listener, shutdown));
        TestService {
            addr,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
            data: Some(self.data),
            database: self.database,
            _service: PhantomData,
        }
    }
}

/// A running test instance of `S` and an HTTP client for it. Stops when dropped; [`stop`]
/// stops it cleanly and checks that it stopped without an error.
///
/// [`stop`]: TestService::stop
pub struct TestService<S: Service> {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), kit::service::Error>>>,
    data: Option<tempfile::TempDir>,
    database: Option<TestDatabase>,
    _service: PhantomData<S>,
}

impl<S: Service> TestService<S> {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path`, which must succeed, as JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> T {
        let resp = self.http.get(self.url(path)).send().await.unwrap();
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// The status of `GET path`.
    pub async fn status(&self, path: &str) -> reqwest::StatusCode {
        self.http.get(self.url(path)).send().await.unwrap().status()
    }

    /// `GET path`: status and body, whatever they are.
    pub async fn get_text(&self, path: &str) -> (reqwest::StatusCode, String) {
        let resp = self.http.get(self.url(path)).send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    /// The body of `GET path`, whatever its status.
    pub async fn text(&self, path: &str) -> String {
        self.get_text(path).await.1
    }

    /// `POST path` with `body` as it is (not necessarily valid JSON): status and body.
    pub async fn post(&self, path: &str, body: impl Into<String>) -> (reqwest::StatusCode, String) {
        let resp = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.into())
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    /// `DELETE path`: status and body.
    pub async fn delete(&self, path: &str) -> (reqwest::StatusCode, String) {
        let resp = self.http.delete(self.url(path)).send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    pub async fn wait_ready(&self) {
        crate::eventually(
            Duration::from_secs(20),
            &format!("{} to be ready", S::SPEC.name),
            || async { (self.status("/ready").await == reqwest::StatusCode::OK).then_some(()) },
        )
        .await;
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        self.data.as_ref().map(|d| d.path()).unwrap()
    }

    /// Its database, when it was given a fresh one ([`Spawn::postgres`]).
    pub fn database(&self) -> Option<&TestDatabase> {
        self.database.as_ref()
    }

    /// Asks the service to stop, waits for it (at most 40 s), and checks it stopped without an
    /// error; returns how long it took.
    pub async fn stop(mut self) -> Duration {
        let started = Instant::now();
        self.result().await.unwrap();
        started.elapsed()
    }

    /// Asks the service to stop and returns how it ended, for tests of how a service fails.
    pub async fn result(&mut self) -> Result<(), kit::service::Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("the service was already stopped");
        tokio::time::timeout(Duration::from_secs(40), task)
            .await
            .unwrap_or_else(|_| panic!("{} did not stop within 40 s", S::SPEC.name))
            .unwrap()
    }

    /// Waits for the service to stop on its own (a failure it must stop on) and returns how.
    pub async fn stopped(&mut self, timeout: Duration) -> Result<(), kit::service::Error> {
        let task = self.task.as_mut().expect("the service was already stopped");
        let result = tokio::time::timeout(timeout, task)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} did not stop on its own within {timeout:?}",
                    S::SPEC.name
                )
            })
            .unwrap();
        self.task = None;
        result
    }

    /// Stops the service and hands back its data directory, for a restart over the same state.
    pub async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        self.result().await.unwrap();
        self.data.take().unwrap()
    }
}

impl<S: Service> Drop for TestService<S> {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
