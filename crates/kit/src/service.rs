//! The shape every service has, so that the eleventh reads like the first.
//!
//! - [`Service`]: what a service *is* — its [`Spec`] (name, configuration section, default
//!   port) and one `run(config, service)`, where `service` is its [`Lifecycle`] holding the
//!   listener and the shutdown signal. A service crate implements it on a unit type.
//! - [`Lifecycle`]: how a service *lives* inside `run` — its readiness, its background tasks,
//!   its HTTP server (with the ops endpoints), and the one rule for how it stops: when `shutdown`
//!   resolves, or when any of its tasks fails (an error, a panic, or the HTTP server ending on its
//!   own), `/ready` turns 503, the service drains what it must, every task is stopped, and `run`
//!   returns — with the failure, if there was one, so the process exits non-zero.
//! - [`Entry`]: a service with its type erased, for registries: the `simcorp` command keeps one
//!   per service (`simcorp serve <name>`, `simcorp up`) and the test harness spawns any of them.
//! - [`main`]: the whole `main` of a service's own binary.
//!
//! ```text
//! main / simcorp serve / simcorp up / testkit
//!     │ Entry::prepare: load + validate the config and [<section>.http], then bind http.addr
//!     │ run_as: the metrics recorder, the crate's metric descriptions, the root span
//!     ▼
//! Service::run(config, service: Lifecycle)
//!     Lifecycle    ─ readiness checks, spawn tasks, serve HTTP
//!     Lifecycle::wait  ─ until shutdown, or the first task failure
//!     (the service drains what it holds)
//!     Lifecycle::stop  ─ stop every task and the HTTP server; the first error wins
//! ```

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use figment::value::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::config::{ConfigError, Sources, Validate};
use crate::http::{Ops, Readiness};
use crate::telemetry::{LogConfig, OtelConfig};

/// Any error, as a task or a dependency reports it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A future a service stops on.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Who a service is: what the registry, `simcorp up`'s banner and the configuration know of it.
/// Written with [`spec!`](crate::spec).
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// `simcorp serve <name>`, the `service` label of its HTTP metrics, its log and trace root
    /// span, the default MQTT client id (`simcorp-<name>-<host>`).
    pub name: &'static str,
    /// Its section of the platform's configuration (`[sim_twin]`, `SIMCORP_SIM_TWIN_…`).
    pub section: &'static str,
    /// Its port, from the platform plan: the default of `[<section>.http] addr`.
    pub port: u16,
    /// What it is, in a sentence: its crate's description, beside its address in `simcorp up`.
    pub about: &'static str,
    /// Describes (help text and unit) every metric the service emits, those of the crates it
    /// uses included: its crate's `metrics::describe`. Called once the recorder is installed;
    /// describing again is harmless, which `simcorp up` relies on (its services share one
    /// recorder, and a crate two of them use is described by both).
    pub describe_metrics: fn(),
}

/// The [`Spec`] of the service crate it is written in: `kit::spec!("sim-twin", "sim_twin", 4002)`
/// — its name, configuration section and port; its description from its `Cargo.toml`, its
/// metric descriptions from its `metrics::describe` (every crate's metrics live in its
/// `metrics.rs`).
// `crate::metrics` is meant to name the calling service's module, not the kit's.
#[allow(clippy::crate_in_macro_def)]
#[macro_export]
macro_rules! spec {
    ($name:literal, $section:literal, $port:literal) => {
        $crate::service::Spec {
            name: $name,
            section: $section,
            port: $port,
            about: env!("CARGO_PKG_DESCRIPTION"),
            describe_metrics: crate::metrics::describe,
        }
    };
}

/// One service of the platform.
///
/// ```ignore
/// pub struct SimTwin;
///
/// impl kit::service::Service for SimTwin {
///     const SPEC: Spec = kit::spec!("sim-twin", "sim_twin", 4002);
///     type Config = Config;
///
///     async fn run(config: Config, mut service: Lifecycle) -> Result<(), Error> {
///         service.serve(api::router(..));
///         let outcome = service.wait().await;
///         service.stop(outcome).await
///     }
/// }
/// ```
pub trait Service: Send + Sync + 'static {
    const SPEC: Spec;
    /// Everything it is configured with. Sections other than its own are shared with the rest of
    /// the platform (`[mqtt]`, `[postgres]`, …); `Default` must work locally with no server. Its
    /// own section has `http: HttpSettings`, which the kit reads.
    type Config: Config;

    /// Runs the service until its lifecycle's shutdown signal (or a failure), serving HTTP on
    /// the lifecycle's listener. `config` has been validated.
    fn run(
        config: Self::Config,
        service: Lifecycle,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Settings `simcorp up` gives this service on a developer's machine beyond a local address,
    /// as dotted keys (sim-publisher: a small demo fleet). Below files, environment and flags.
    fn local_defaults() -> Vec<(String, Value)> {
        Vec::new()
    }
}

/// What a service's configuration must be: loadable by [`crate::config::load`], cloneable into
/// tasks, printable for logs (secrets are in types that never print).
pub trait Config:
    DeserializeOwned + Serialize + Default + Validate + Clone + Debug + Send + Sync + 'static
{
}

impl<T> Config for T where
    T: DeserializeOwned + Serialize + Default + Validate + Clone + Debug + Send + Sync + 'static
{
}

/// `[<service>.http]`: the HTTP settings every service has.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Where to listen; absent: every interface, on the service's own port ([`Spec::port`]).
    pub addr: Option<SocketAddr>,
    /// Longest an HTTP request may take: a slow client can never hold shutdown hostage.
    pub request_timeout_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            addr: None,
            request_timeout_secs: 10,
        }
    }
}

impl HttpSettings {
    /// The address to bind, `port` standing in when none is configured.
    pub fn addr_or(&self, port: u16) -> SocketAddr {
        self.addr
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
    }

    fn validate(&self, section: &str) -> Result<(), String> {
        if self.request_timeout_secs == 0 {
            return Err(format!(
                "{section}.http.request_timeout_secs must be at least 1"
            ));
        }
        Ok(())
    }
}

/// Why a service could not start, or stopped abnormally. The same for every service, so that
/// `main`, `simcorp up` and the tests report them one way.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("binding {what} to {addr}: {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A dependency could not be set up (`what`: "opening the store", "setting up MQTT", …).
    #[error("{what}: {source}")]
    Start {
        what: &'static str,
        #[source]
        source: BoxError,
    },
    /// A task of the service failed, panicked, or (for one that must run until the end)
    /// stopped on its own.
    #[error("{task}: {reason}")]
    Task { task: String, reason: String },
    #[error("setting up logs and traces: {0}")]
    Telemetry(#[from] crate::telemetry::Error),
}

impl Error {
    /// A dependency that could not be set up; `what` is a verb phrase ("opening the store").
    pub fn start(what: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Start {
            what,
            source: source.into(),
        }
    }

    fn invalid(message: String) -> Self {
        Error::Config(ConfigError::Invalid(message))
    }
}

type RenderMetrics = Box<dyn Fn(&mut String) + Send + Sync>;

/// How long [`Lifecycle::stop`] waits for tasks to finish once told to, before aborting them.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The running parts of one service: see the module documentation.
pub struct Lifecycle {
    name: &'static str,
    http: HttpSettings,
    listener: Option<TcpListener>,
    shutdown: Option<Shutdown>,
    readiness: Readiness,
    extra_metrics: Vec<RenderMetrics>,
    /// Cancelled once the service is stopping: `/ready` answers 503 from then on.
    stopping: CancellationToken,
    /// Cancelled by [`stop`](Self::stop): every task and the HTTP server stop on it.
    stop: CancellationToken,
    tasks: JoinSet<Result<(), String>>,
    names: HashMap<Id, String>,
    span: tracing::Span,
}

impl Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("service", &self.name)
            .field("tasks", &self.names.values().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Lifecycle {
    /// The lifecycle of service `S`, before its `run`. Its readiness has one check from the
    /// start, `accepting`, which fails once the service is stopping; the service adds checks of
    /// its own dependencies.
    fn new<S: Service>(http: HttpSettings, listener: TcpListener, shutdown: Shutdown) -> Self {
        // Before anything records: what is recorded or described without a recorder is lost.
        crate::metrics::prometheus();
        crate::metrics::describe();
        (S::SPEC.describe_metrics)();
        let readiness = Readiness::default();
        let stopping = CancellationToken::new();
        {
            let stopping = stopping.clone();
            readiness.require("accepting", move || !stopping.is_cancelled());
        }
        Lifecycle {
            name: S::SPEC.name,
            http,
            listener: Some(listener),
            shutdown: Some(shutdown),
            readiness,
            extra_metrics: Vec::new(),
            stopping,
            stop: CancellationToken::new(),
            tasks: JoinSet::new(),
            names: HashMap::new(),
            span: tracing::Span::current(),
        }
    }

    /// The service's readiness: register its dependencies with `require`/`observe`.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// A token cancelled once the service is stopping (before [`stop`](Self::stop)): for work
    /// that should wind down early, like a retry loop that must not outlive the service.
    pub fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
    }

    /// Runs `task` until the service stops: it is given a token that is cancelled when the
    /// service stops, and should return soon after. A task may finish early with `Ok` (work
    /// that was done); an `Err` or a panic stops the service with that failure.
    pub fn spawn<F, E>(&mut self, name: &str, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let future = task(self.stop.clone());
        let handle = self.tasks.spawn(
            async move { future.await.map_err(|e| e.to_string()) }.instrument(self.span.clone()),
        );
        self.names.insert(handle.id(), name.to_owned());
    }

    /// Adds exposition text (e.g. HDR latency histograms) to the service's `/metrics`.
    pub fn render_metrics(&mut self, render: impl Fn(&mut String) + Send + Sync + 'static) {
        self.extra_metrics.push(Box::new(render));
    }

    /// Serves `api` on the service's listener, with `/health`, `/ready` and `/metrics` beside
    /// it, the request timeout, and per-request metrics. Requests in flight when the service
    /// stops are finished (within the timeout). The server stopping on its own is a failure.
    /// Once per service: the listener is gone after the first call.
    pub fn serve(&mut self, api: Router) {
        let Some(listener) = self.listener.take() else {
            tracing::error!("serve called twice: the listener already serves");
            return;
        };
        let mut ops = Ops::new(self.name, self.readiness.clone());
        for render in std::mem::take(&mut self.extra_metrics) {
            ops = ops.with_metrics(render);
        }
        let router = crate::http::with_ops(
            api,
            ops,
            Duration::from_secs(self.http.request_timeout_secs),
        );
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(http = %addr, "serving HTTP");
        }
        self.spawn("the HTTP server", move |stop| async move {
            crate::http::serve(listener, router, stop.clone().cancelled_owned())
                .await
                .map_err(|e| e.to_string())?;
            if stop.is_cancelled() {
                Ok(())
            } else {
                Err("stopped on its own".to_owned())
            }
        });
    }

    /// Waits until the shutdown signal (`Ok`) or a task fails (`Err`, naming the task). Either
    /// way the service is stopping from then on: `/ready` answers 503 (load balancers stop
    /// sending traffic) while the service drains what it holds, before [`stop`](Self::stop).
    pub async fn wait(&mut self) -> Result<(), Error> {
        let mut shutdown = self
            .shutdown
            .take()
            .unwrap_or_else(|| Box::pin(std::future::ready(())));
        let outcome = loop {
            tokio::select! {
                () = &mut shutdown => break Ok(()),
                Some(joined) = self.tasks.join_next_with_id() => {
                    if let Err(failure) = self.outcome(joined) {
                        tracing::error!(error = %failure, "stopping: a task failed");
                        break Err(failure);
                    }
                }
            }
        };
        self.stopping.cancel();
        outcome
    }

    /// Stops every task and the HTTP server, waits for them (at most 10 s, then aborts what is
    /// left), and returns `outcome` — or, if it was `Ok`, the first failure of a task while
    /// stopping.
    pub async fn stop(mut self, outcome: Result<(), Error>) -> Result<(), Error> {
        self.stopping.cancel();
        self.stop.cancel();
        let mut result = outcome;
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(joined)) => {
                    if let Err(failure) = self.outcome(joined) {
                        tracing::error!(error = %failure, "failed while stopping");
                        result = result.and(Err(failure));
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    let left: Vec<&String> = self.names.values().collect();
                    tracing::warn!(tasks = ?left, "tasks did not stop in time; aborting them");
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        match &result {
            Ok(()) => tracing::info!("stopped"),
            Err(error) => tracing::error!(%error, "stopped with an error"),
        }
        result
    }

    fn outcome(
        &mut self,
        joined: Result<(Id, Result<(), String>), tokio::task::JoinError>,
    ) -> Result<(), Error> {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(e) => {
                let reason = if e.is_panic() {
                    "panicked".to_owned()
                } else {
                    "was cancelled".to_owned()
                };
                (e.id(), Err(reason))
            }
        };
        let task = self
            .names
            .remove(&id)
            .unwrap_or_else(|| "a task".to_owned());
        result.map_err(|reason| Error::Task { task, reason })
    }
}

/// A service with its type erased, so that registries can hold every service in one list.
#[derive(Clone, Copy)]
pub struct Entry {
    pub name: &'static str,
    pub section: &'static str,
    pub port: u16,
    pub about: &'static str,
    pub local_defaults: fn() -> Vec<(String, Value)>,
    prepare: fn(&Sources) -> Result<Prepared, Error>,
}

impl Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Entry {
    pub const fn of<S: Service>() -> Self {
        Entry {
            name: S::SPEC.name,
            section: S::SPEC.section,
            port: S::SPEC.port,
            about: S::SPEC.about,
            local_defaults: S::local_defaults,
            prepare: prepare::<S>,
        }
    }

    /// Loads and validates the service's configuration (and `[log]`, `[otel]`) from `sources`.
    pub fn prepare(&self, sources: &Sources) -> Result<Prepared, Error> {
        (self.prepare)(sources)
    }

    /// Runs the service as its own process runs it: configuration, logs and traces, the
    /// listener, until SIGTERM or Ctrl-C; then the spans still queued are exported.
    pub async fn serve(&self, sources: &Sources) -> Result<(), Error> {
        let prepared = self.prepare(sources)?;
        let telemetry = crate::telemetry::init(&prepared.log, &prepared.otel, self.name)?;
        let result = match prepared.bind().await {
            Ok(listener) => {
                prepared
                    .run(listener, Box::pin(crate::shutdown::signal()))
                    .await
            }
            Err(e) => Err(e),
        };
        telemetry.shutdown().await;
        result
    }
}

/// A service whose configuration is loaded and valid, ready to bind and run.
pub struct Prepared {
    pub name: &'static str,
    /// Where it will listen.
    pub addr: SocketAddr,
    /// The platform's `[log]` settings, read from the same sources.
    pub log: LogConfig,
    /// The platform's `[otel]` settings, read from the same sources.
    pub otel: OtelConfig,
    /// The loaded configuration, as the service sees it (secrets omitted), for banners.
    pub settings: Value,
    run: Box<dyn FnOnce(TcpListener, Shutdown) -> RunFuture + Send>,
}

type RunFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

impl Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// Binds the configured address; a port in use fails with a message naming the service.
    pub async fn bind(&self) -> Result<TcpListener, Error> {
        TcpListener::bind(self.addr)
            .await
            .map_err(|source| Error::Bind {
                what: self.name.to_owned(),
                addr: self.addr,
                source,
            })
    }

    /// Runs the service (see [`run_as`]) until `shutdown`.
    pub fn run(self, listener: TcpListener, shutdown: Shutdown) -> RunFuture {
        (self.run)(listener, shutdown)
    }
}

fn prepare<S: Service>(sources: &Sources) -> Result<Prepared, Error> {
    let figment = crate::config::figment::<S::Config>(sources)?;
    let (config, http) = load::<S>(&figment)?;
    let log: LogConfig = crate::config::section(&figment, "log")?;
    log.validate().map_err(Error::invalid)?;
    let otel: OtelConfig = crate::config::section(&figment, "otel")?;
    otel.validate().map_err(Error::invalid)?;
    let settings = Value::serialize(&config).map_err(|e| ConfigError::Load(Box::new(e)))?;
    Ok(Prepared {
        name: S::SPEC.name,
        addr: http.addr_or(S::SPEC.port),
        log,
        otel,
        settings,
        run: Box::new(move |listener, shutdown| {
            Box::pin(run_as::<S>(config, http, listener, shutdown))
        }),
    })
}

/// The configuration of `S` and its `[<section>.http]` settings, loaded from `sources` and
/// checked (types first, then what types cannot express). For harnesses that adjust the
/// configuration before [`run_as`].
pub fn load<S: Service>(figment: &figment::Figment) -> Result<(S::Config, HttpSettings), Error> {
    let config: S::Config = figment
        .extract()
        .map_err(|e| ConfigError::Load(Box::new(e)))?;
    config.validate().map_err(Error::invalid)?;
    let http: HttpSettings = crate::config::section(figment, &format!("{}.http", S::SPEC.section))?;
    http.validate(S::SPEC.section).map_err(Error::invalid)?;
    Ok((config, http))
}

/// Runs `S` under its root span ([`crate::telemetry::service_span`]): every log line of the
/// service, and of the tasks and requests it spawns, carries its name. What every caller of
/// [`Service::run`] uses.
pub fn run_as<S: Service>(
    config: S::Config,
    http: HttpSettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = Result<(), Error>> + Send {
    let span = crate::telemetry::service_span(S::SPEC.name);
    let service = {
        let _entered = span.enter();
        Lifecycle::new::<S>(http, listener, Box::pin(shutdown))
    };
    S::run(config, service).instrument(span)
}

/// The `main` of a service's own binary: configuration from `SIMCORP_CONFIG` and the
/// `SIMCORP_*` environment, the runtime sized by `[runtime]`, then [`Entry::serve`]. Errors are
/// printed (with their causes) and give a non-zero exit.
///
/// Such a binary knows only its own service: a section of another service in a shared file is
/// ignored there, where `simcorp serve <name>` (which knows the whole platform) refuses a section
/// no service has.
pub fn main<S: Service>() -> ExitCode {
    let sources = Sources::default();
    let result = crate::runtime::start(&sources)
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime
                .block_on(Entry::of::<S>().serve(&sources))
                .map_err(|e| report(&e))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{}: error: {message}", S::SPEC.name);
            ExitCode::FAILURE
        }
    }
}

/// An error with its chain of causes, as one line.
pub fn report(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // thiserror's `{source}` in a message already says what the cause says.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use axum::routing::get;

    use super::*;

    /// A service with one task whose behaviour the test chooses.
    struct Demo;

    #[derive(Debug, Clone, Default, Deserialize, Serialize)]
    #[serde(default)]
    struct DemoConfig {
        demo: DemoSettings,
    }

    #[derive(Debug, Clone, Default, Deserialize, Serialize)]
    #[serde(default, deny_unknown_fields)]
    struct DemoSettings {
        http: HttpSettings,
        /// What the background task does: "run" (until stopped), "fail", "panic", "done".
        task: String,
    }

    impl Validate for DemoConfig {
        fn validate(&self) -> Result<(), String> {
            Ok(())
        }
    }

    impl Service for Demo {
        const SPEC: Spec = crate::spec!("demo", "demo", 4999);
        type Config = DemoConfig;

        async fn run(config: DemoConfig, mut service: Lifecycle) -> Result<(), Error> {
            let behaviour = config.demo.task.clone();
            service.spawn("the demo task", move |stop| async move {
                match behaviour.as_str() {
                    "fail" => Err("it broke".to_owned()),
                    "panic" => panic!("it panicked"),
                    "done" => Ok(()),
                    _ => {
                        stop.cancelled().await;
                        Ok(())
                    }
                }
            });
            service.serve(Router::new().route("/hello", get(|| async { "hello" })));
            let outcome = service.wait().await;
            service.stop(outcome).await
        }
    }

    async fn spawn(
        task: &str,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), Error>>,
    ) {
        let sources = Sources::default()
            .set("demo.task", task)
            .set("demo.http.addr", "127.0.0.1:0");
        let prepared = Entry::of::<Demo>().prepare(&sources).unwrap();
        let listener = prepared.bind().await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(prepared.run(
            listener,
            Box::pin(async move {
                let _ = stopped.await;
            }),
        ));
        (addr, stop, task)
    }

    #[tokio::test]
    async fn a_service_stops_cleanly_on_shutdown_and_is_unready_while_stopping() {
        let (addr, stop, task) = spawn("run").await;
        let ready = reqwest_like_get(addr, "/ready").await;
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        assert!(ready.contains(r#""accepting":{"ok":true"#), "{ready}");
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_failing_task_stops_the_service_with_its_error() {
        for (behaviour, expected) in [
            ("fail", "the demo task: it broke"),
            ("panic", "the demo task: panicked"),
        ] {
            let (_addr, _stop, task) = spawn(behaviour).await;
            let err = task.await.unwrap().unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
    }

    #[tokio::test]
    async fn a_task_may_finish_its_work_early() {
        let (addr, stop, task) = spawn("done").await;
        let hello = reqwest_like_get(addr, "/hello").await;
        assert!(hello.ends_with("hello"), "{hello}");
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn configuration_is_checked_before_anything_runs() {
        let sources = Sources::default().set("demo.http.request_timeout_secs", 0);
        let err = Entry::of::<Demo>()
            .prepare(&sources)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("demo.http.request_timeout_secs must be at least 1"),
            "{err}"
        );
        let prepared = Entry::of::<Demo>().prepare(&Sources::default()).unwrap();
        assert_eq!(prepared.addr, "0.0.0.0:4999".parse().unwrap());
    }

    #[tokio::test]
    async fn a_port_in_use_is_named() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let sources = Sources::default().set("demo.http.addr", format!("127.0.0.1:{port}"));
        let err = Entry::of::<Demo>()
            .prepare(&sources)
            .unwrap()
            .bind()
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("binding demo to 127.0.0.1:{port}")),
            "{err}"
        );
    }

    #[test]
    fn reports_carry_their_causes_once() {
        let inner = std::io::Error::other("connection refused");
        let err = Error::start("opening the store", inner);
        assert_eq!(report(&err), "opening the store: connection refused");
    }

    /// One plain HTTP/1.1 GET, without a client crate: the kit does not depend on one.
    async fn reqwest_like_get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }
}
