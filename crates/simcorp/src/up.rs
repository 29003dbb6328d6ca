//! `simcorp up`: every service of the registry in one process, on a developer's defaults.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context as _;
use kit::config::Sources;
use kit::service::Prepared;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::registry::SERVICES;

/// `[broker]`: the embedded MQTT broker of `simcorp up`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct BrokerSettings {
    /// 127.0.0.1:1884 by default: beside, never on, a system broker's 1883.
    pub(crate) listen: SocketAddr,
    pub(crate) max_inflight: u16,
    pub(crate) max_queued: usize,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        let defaults = broker::Config::default();
        BrokerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 1884)),
            max_inflight: defaults.max_inflight,
            max_queued: defaults.max_queued,
        }
    }
}

/// What `up` reads for itself: the embedded broker, and the shared sections its banner names.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
struct Platform {
    data_dir: Option<PathBuf>,
    broker: BrokerSettings,
    mqtt: mqtt::Config,
    postgres: store::PostgresConfig,
    redis: cache::Config,
}

impl kit::config::Validate for Platform {
    fn validate(&self) -> Result<(), String> {
        self.mqtt.validate()
    }
}

/// A part of the platform running in this process, stopped through its own token.
struct Running {
    name: &'static str,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn spawn<F, E>(name: &'static str, run: impl FnOnce(CancellationToken) -> F) -> Self
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let stop = CancellationToken::new();
        let inner = tokio::spawn(run(stop.clone()));
        let task = tokio::spawn(async move {
            inner
                .await
                .with_context(|| format!("{name} panicked"))?
                .with_context(|| name.to_string())
        });
        Running { name, stop, task }
    }
}

pub(crate) async fn run(sources: Sources, fleet: bool) -> anyhow::Result<()> {
    // A developer's defaults: local addresses, readable logs, a few live roasters.
    let mut sources = sources.default_to("log.format", "text");
    for entry in SERVICES {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, entry.port));
        sources = sources.default_to(&format!("{}.http.addr", entry.section), addr.to_string());
        if fleet {
            sources.defaults.extend((entry.local_defaults)());
        }
    }
    sources.defaults.extend(demo_commands());
    let platform: Platform = kit::config::load(&sources)?;
    // The embedded broker runs unless a broker was given (flag, environment or file).
    let embedded = kit::config::figment::<Platform>(&sources)?
        .find_value("mqtt.url")
        .is_err();
    if embedded {
        sources = sources.set("mqtt.url", format!("mqtt://{}", platform.broker.listen));
    }
    let services: Vec<Prepared> = SERVICES
        .iter()
        .map(|entry| entry.prepare(&sources))
        .collect::<Result<_, _>>()?;
    // One process, one exporter: its spans are those of service "simcorp".
    let telemetry = match services.first() {
        Some(first) => Some(kit::telemetry::init(&first.log, &first.otel, "simcorp")?),
        None => None,
    };
    let result = run_services(&platform, embedded, services).await;
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    result
}

/// Binds, starts and runs the broker and `services` until Ctrl-C or a failure, then stops them.
async fn run_services(
    platform: &Platform,
    embedded: bool,
    services: Vec<Prepared>,
) -> anyhow::Result<()> {
    // Every listener first, so a port already in use fails the start with a clear message.
    let broker_listener = match embedded {
        true => Some(
            TcpListener::bind(platform.broker.listen)
                .await
                .with_context(|| {
                    format!(
                        "binding the embedded MQTT broker to {}",
                        platform.broker.listen
                    )
                })?,
        ),
        false => None,
    };
    let mut bound = Vec::new();
    for service in services {
        let listener = service.bind().await?;
        let addr = reachable(listener.local_addr()?);
        bound.push((service, listener, addr));
    }
    print_banner(
        platform,
        embedded.then_some(platform.broker.listen),
        bound.iter().map(|(s, _, addr)| (s.name, *addr)),
    );

    // Started in registry order, each once the ones before it are ready (a broker drops what is
    // published before anyone subscribed), and stopped in reverse: the roasters stop publishing,
    // then ingestion writes and acknowledges what it has, then the broker goes.
    let mut running = Vec::new();
    if let Some(listener) = broker_listener {
        // The broker is no service: nothing else installs the recorder before it records, nor
        // describes its metrics, which every service's /metrics shows (they share the recorder).
        kit::metrics::prometheus();
        broker::metrics::describe();
        let config = broker::Config {
            max_inflight: platform.broker.max_inflight,
            max_queued: platform.broker.max_queued,
            ..broker::Config::default()
        };
        running.push(Running::spawn("the embedded broker", |stop| {
            broker::run(config, listener, stop.cancelled_owned())
        }));
    }
    let mut result = Ok(());
    for (service, listener, addr) in bound {
        let name = service.name;
        let started = Running::spawn(name, |stop| {
            service.run(listener, Box::pin(stop.cancelled_owned()))
        });
        let ready = wait_ready(name, addr, || started.task.is_finished()).await;
        running.push(started);
        if let Err(e) = ready {
            result = Err(e);
            break;
        }
    }

    // A service that stops on its own takes the platform down with it: a half-running platform
    // would only mislead.
    if result.is_ok() {
        let finished_early = {
            let tasks = running.iter_mut().map(|r| Box::pin(&mut r.task));
            tokio::select! {
                () = kit::shutdown::signal() => None,
                (joined, index, _) = futures::future::select_all(tasks) => Some((index, joined)),
            }
        };
        if let Some((index, joined)) = finished_early {
            let name = running[index].name;
            result = match joined {
                Ok(Ok(())) => Err(anyhow::anyhow!("{name} stopped on its own")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("{name} panicked: {e}")),
            };
            running.remove(index);
        }
    }
    while let Some(part) = running.pop() {
        part.stop.cancel();
        match part.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = result.and(Err(e)),
            Err(e) => result = result.and(Err(anyhow::anyhow!("{} panicked: {e}", part.name))),
        }
    }
    result
}

/// Polls a service's `/ready` until it answers 200 (at most 60 s), or until `stopped()` says
/// the service ended — its error is then reported where every service's is.
async fn wait_ready(
    name: &str,
    addr: SocketAddr,
    stopped: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let url = format!("http://{addr}/ready");
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if stopped() {
            return Ok(());
        }
        if let Ok(resp) = client.get(&url).send().await
            && resp.status().is_success()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{name} did not become ready within 60 s (see {url})");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn print_banner(
    platform: &Platform,
    broker: Option<SocketAddr>,
    services: impl Iterator<Item = (&'static str, SocketAddr)>,
) {
    let mqtt = match broker {
        Some(addr) => format!("mqtt://{addr}  (embedded; --mqtt URL to use your own broker)"),
        None => platform.mqtt.url.clone(),
    };
    let data_dir = platform
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("./data"));
    let store = match &platform.postgres.url {
        Some(_) => format!("PostgreSQL (fallback: SQLite under {})", data_dir.display()),
        None => format!(
            "SQLite under {}  (--postgres URL to use PostgreSQL)",
            data_dir.display()
        ),
    };
    let cache = match &platform.redis.url {
        Some(_) => "Redis",
        None => "in-process  (--redis URL to use Redis)",
    };
    // The names' column fits the longest service name.
    let w = crate::registry::SERVICES
        .iter()
        .map(|e| e.name.len())
        .chain(["MQTT broker".len()])
        .max()
        .unwrap_or(0)
        + 2;
    let mut text = format!("\nsimcorp is up\n\n  {:<w$}{mqtt}\n", "MQTT broker");
    let mut ingestion = None;
    let mut events = None;
    let mut view = None;
    let mut command = None;
    for (name, addr) in services {
        let about = crate::registry::find(name).map_or("", |e| e.about);
        text.push_str(&format!("  {name:<w$}http://{addr}   {about}\n"));
        match name {
            "ingestion" => ingestion = Some(addr),
            "event-inference" => events = Some(addr),
            "analytics" => view = Some(addr),
            "command" => command = Some(addr),
            _ => {}
        }
    }
    text.push_str(&format!(
        "  {:<w$}{store}\n  {:<w$}{cache}\n",
        "store", "cache"
    ));
    text.push_str("  every service also serves /health /ready /metrics\n");
    if let Some(http) = ingestion {
        let port = broker.map(|a| a.port()).unwrap_or(1883);
        text.push_str(&format!(
            "\nWatch the simulated roasts:\
             \n  curl 'http://{http}/sessions?active=true'\
             \n  curl http://{http}/devices/sim-roaster-1/latest\
             \n  curl http://{http}/sessions/<session>/events   (CHARGE, TP, DRY END, FC, DROP)\
             \n\
             \nPublish a point of your own (any MQTT client; here mosquitto_pub):\
             \n  mosquitto_pub -p {port} -q 1 -t roasters/demo-1/telemetry \\\
             \n    -m \"{{\\\"session\\\":\\\"first-roast\\\",\\\"seq\\\":0,\\\"ts\\\":$(date +%s%3N),\\\"channels\\\":{{\\\"bt\\\":180.2,\\\"et\\\":210.5}}}}\"\
             \nthen read it back:\
             \n  curl http://{http}/sessions/first-roast/telemetry\n"
        ));
    }
    if let Some(addr) = events {
        text.push_str(&format!(
            "and the roasts being watched, with their events so far and their RoR:\
             \n  curl http://{addr}/sessions\n"
        ));
    }
    if let Some(addr) = view {
        text.push_str(&format!(
            "\nThe live roast view (open it in a browser):\
             \n  http://{addr}/\
             \nand each roast against its reference, as JSON (API: http://{addr}/openapi.json):\
             \n  curl http://{addr}/sessions/<session>/summary\
             \n  curl http://{addr}/sessions/<session>/variance\
             \n  curl http://{addr}/sessions/<session>/predictions\n"
        ));
    }
    if let Some(addr) = command {
        text.push_str(&format!(
            "\nCommand a roaster (driver-bridge drives sim-bridge-1; watch its curve in the view):\
             \n  curl -H 'Authorization: Bearer demo-operator' -H 'Content-Type: application/json' \\\
             \n    http://{addr}/proposals -d '{{\"device_id\":\"sim-bridge-1\",\"control\":\"gas\",\"value\":80,\"reason\":\"slow the rise\"}}'\
             \n  curl -X POST -H 'Authorization: Bearer demo-approver' http://{addr}/proposals/<id>/approve\
             \n  curl http://{addr}/proposals/<id>/history   (tokens: demo-operator, demo-approver, demo-admin)\
             \nand the gas corrections analytics proposes for roasts drifting from their reference:\
             \n  curl -H 'Authorization: Bearer demo-operator' 'http://{addr}/proposals?state=proposed'\n"
        ));
    }
    text.push_str("\nCtrl-C stops everything.\n");
    println!("{text}");
}

/// The demo's people and its driver: `simcorp up` is the one place whose command service takes
/// tokens nobody chose (it listens on loopback only), so that a newcomer can propose a gas change
/// as the operator, approve it as the approver, and watch driver-bridge's simulated roaster
/// answer. driver-bridge registers its device keys with them and trusts command's key;
/// analytics proposes its gas corrections with the service token.
pub(crate) const DEMO_TOKENS: [(&str, &str, &[&str]); 5] = [
    ("demo-operator", "operator", &["operator"]),
    ("demo-approver", "approver", &["approver"]),
    ("demo-admin", "admin", &["admin"]),
    ("demo-device", "driver-bridge", &["device"]),
    ("demo-analytics", "analytics", &["service"]),
];

fn demo_commands() -> Vec<(String, figment::value::Value)> {
    let tokens: Vec<serde_json::Value> = DEMO_TOKENS
        .iter()
        .map(|(token, actor, roles)| serde_json::json!({"token": token, "actor": actor, "roles": roles}))
        .collect();
    let command = SERVICES
        .iter()
        .find(|e| e.name == "command")
        .map(|e| format!("http://{}", SocketAddr::from((Ipv4Addr::LOCALHOST, e.port))));
    let mut out = Vec::new();
    if let Ok(tokens) = figment::value::Value::serialize(tokens) {
        out.push(("command.tokens".to_owned(), tokens));
    }
    if let Some(url) = command {
        out.push(("analytics.corrections.enabled".to_owned(), true.into()));
        out.push((
            "analytics.corrections.command_url".to_owned(),
            url.clone().into(),
        ));
        out.push((
            "analytics.corrections.token".to_owned(),
            "demo-analytics".into(),
        ));
        out.push(("driver_bridge.command_url".to_owned(), url.into()));
        out.push((
            "driver_bridge.enrollment_token".to_owned(),
            "demo-device".into(),
        ));
    }
    out
}

/// Where to reach a listener from this host: its own address, or loopback for "every interface".
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
    } else {
        addr
    }
}
