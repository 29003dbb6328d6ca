//! `simcorp up`: every service in one process.

use std::net::SocketAddr;

use anyhow::Context as _;
use figment::value::Value;
use kit::config::Sources;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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

/// A service running in this process, stopped through its own token.
struct Running {
    name: &'static str,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn spawn<E>(
        name: &'static str,
        run: impl FnOnce(CancellationToken) -> JoinHandle<Result<(), E>>,
    ) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let stop = CancellationToken::new();
        let inner = run(stop.clone());
        let task = tokio::spawn(async move {
            inner
                .await
                .with_context(|| format!("{name} panicked"))?
                .with_context(|| name.to_string())
        });
        Running { name, stop, task }
    }
}

pub(crate) async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {what} to {addr}"))
}

pub(crate) async fn run(sources: Sources, fleet: bool) -> anyhow::Result<()> {
    // A developer's defaults: local addresses, readable logs, a few live roasters.
    let mut defaults: Vec<(String, Value)> = vec![
        ("ingestion.http_addr".into(), "127.0.0.1:4001".into()),
        ("sim_twin.http_addr".into(), "127.0.0.1:4002".into()),
        ("sim_publisher.http_addr".into(), "127.0.0.1:4003".into()),
        ("log.format".into(), "text".into()),
    ];
    if fleet {
        let spec = Value::serialize(sim_publisher::FleetSpec::default())
            .context("serializing the default fleet")?;
        defaults.push(("sim_publisher.default_fleet".into(), spec));
    }
    let sources = Sources {
        defaults,
        ..sources
    };
    let mut ingestion_config = ingestion::Config::load(&sources)?;
    let twin_config = sim_twin::Config::load(&sources)?;
    let mut publisher_config = sim_publisher::Config::load(&sources)?;
    let figment = kit::config::figment::<ingestion::Config>(&sources)?;
    let broker_settings: BrokerSettings = kit::config::section(&figment, "broker")?;
    kit::logging::init(&ingestion_config.log);

    // The embedded broker runs unless a broker was given (flag, environment or file).
    let embedded = figment.find_value("mqtt.url").is_err();
    if embedded {
        let url = format!("mqtt://{}", broker_settings.listen);
        ingestion_config.mqtt.url = url.clone();
        publisher_config.mqtt.url = url;
    }

    // Every listener first, so a port already in use fails the start with a clear message.
    let broker_listener = match embedded {
        true => Some(bind(broker_settings.listen, "the embedded MQTT broker").await?),
        false => None,
    };
    let ingestion_http = bind(ingestion_config.ingestion.http_addr, "ingestion").await?;
    let twin_http = bind(twin_config.sim_twin.http_addr, "sim-twin").await?;
    let publisher_http = bind(publisher_config.sim_publisher.http_addr, "sim-publisher").await?;
    print_banner(
        &ingestion_config,
        embedded.then_some(broker_settings.listen),
        ingestion_http.local_addr()?,
        twin_http.local_addr()?,
        publisher_http.local_addr()?,
    );

    // Started in dependency order and stopped in reverse: the roasters stop publishing, then
    // ingestion writes and acknowledges what it has, then the broker goes.
    let mut running = Vec::new();
    if let Some(listener) = broker_listener {
        let config = broker::Config {
            max_inflight: broker_settings.max_inflight,
            max_queued: broker_settings.max_queued,
            ..broker::Config::default()
        };
        running.push(Running::spawn("broker", |stop| {
            tokio::spawn(broker::run(config, listener, stop.cancelled_owned()))
        }));
    }
    running.push(Running::spawn("sim-twin", |stop| {
        tokio::spawn(sim_twin::run(
            twin_config,
            twin_http,
            stop.cancelled_owned(),
        ))
    }));
    let ingestion_addr = ingestion_http.local_addr()?;
    running.push(Running::spawn("ingestion", |stop| {
        tokio::spawn(ingestion::run(
            ingestion_config,
            ingestion_http,
            stop.cancelled_owned(),
        ))
    }));
    // A broker drops what is published before anyone subscribed, and a fresh embedded broker
    // holds no session for ingestion yet: the roasters start once ingestion is subscribed.
    let ingestion_task = running.last().map(|r| &r.task);
    wait_ready("ingestion", ingestion_addr, || {
        ingestion_task.is_none_or(|t| t.is_finished())
    })
    .await?;
    running.push(Running::spawn("sim-publisher", |stop| {
        tokio::spawn(sim_publisher::run(
            publisher_config,
            publisher_http,
            stop.cancelled_owned(),
        ))
    }));

    // A service that stops on its own takes the platform down with it: a half-running platform
    // would only mislead.
    let finished_early = {
        let tasks = running.iter_mut().map(|r| Box::pin(&mut r.task));
        tokio::select! {
            () = kit::shutdown::signal() => None,
            (joined, index, _) = futures::future::select_all(tasks) => Some((index, joined)),
        }
    };
    let mut result = Ok(());
    if let Some((index, joined)) = finished_early {
        let name = running[index].name;
        result = match joined {
            Ok(Ok(())) => Err(anyhow::anyhow!("{name} stopped on its own")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("{name} panicked: {e}")),
        };
        running.remove(index);
    }
    while let Some(service) = running.pop() {
        service.stop.cancel();
        match service.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = result.and(Err(e)),
            Err(e) => result = result.and(Err(anyhow::anyhow!("{} panicked: {e}", service.name))),
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
    config: &ingestion::Config,
    broker: Option<SocketAddr>,
    http: SocketAddr,
    twin: SocketAddr,
    sim: SocketAddr,
) {
    let mqtt = match broker {
        Some(addr) => format!("mqtt://{addr}  (embedded; --mqtt URL to use your own broker)"),
        None => config.mqtt.url.clone(),
    };
    let store = match &config.postgres.url {
        Some(_) => format!(
            "PostgreSQL (fallback: SQLite {})",
            config.fallback_path().display()
        ),
        None => format!(
            "SQLite {}  (--postgres URL to use PostgreSQL)",
            config.sqlite_path().display()
        ),
    };
    let cache = match &config.redis.url {
        Some(_) => "Redis",
        None => "in-process  (--redis URL to use Redis)",
    };
    let port = broker.map(|a| a.port()).unwrap_or(1883);
    println!(
        "\nsimcorp is up\n\
         \n  MQTT broker    {mqtt}\
         \n  ingestion API  http://{http}   /sessions /stats /health /ready /metrics\
         \n  sim-twin       http://{twin}   POST /simulate, GET /profiles\
         \n  sim-publisher  http://{sim}   /fleets  (3 simulated roasters unless --no-fleet)\
         \n  store          {store}\
         \n  cache          {cache}\
         \n\
         \nWatch the simulated roasts:\
         \n  curl 'http://{http}/sessions?active=true'\
         \n  curl http://{http}/devices/sim-roaster-1/latest\
         \n\
         \nPublish a point of your own (any MQTT client; here mosquitto_pub):\
         \n  mosquitto_pub -p {port} -q 1 -t roasters/demo-1/telemetry \\\
         \n    -m \"{{\\\"session\\\":\\\"first-roast\\\",\\\"seq\\\":0,\\\"ts\\\":$(date +%s%3N),\\\"channels\\\":{{\\\"bt\\\":180.2,\\\"et\\\":210.5}}}}\"\
         \nthen read it back:\
         \n  curl http://{http}/sessions/first-roast/telemetry\
         \n\nCtrl-C stops everything.\n"
    );
}
