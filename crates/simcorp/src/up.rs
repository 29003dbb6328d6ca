//! `simcorp up`: every service in one process.

use std::net::SocketAddr;

use anyhow::Context as _;
use kit::config::Sources;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
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

pub(crate) async fn run(sources: Sources) -> anyhow::Result<()> {
    // A developer's defaults: local addresses and readable logs.
    let sources = Sources {
        defaults: vec![
            ("ingestion.http_addr".into(), "127.0.0.1:4001".into()),
            ("log.format".into(), "text".into()),
        ],
        ..sources
    };
    let mut ingestion_config = ingestion::Config::load(&sources)?;
    let figment = kit::config::figment::<ingestion::Config>(&sources)?;
    let broker_settings: BrokerSettings = kit::config::section(&figment, "broker")?;
    kit::logging::init(&ingestion_config.log);

    let stop = CancellationToken::new();
    // The embedded broker runs unless a broker was given (flag, environment or file); it stops
    // last, after the services have acknowledged what they wrote and disconnected.
    let embedded = figment.find_value("mqtt.url").is_err();
    if embedded {
        ingestion_config.mqtt.url = format!("mqtt://{}", broker_settings.listen);
    }
    let broker_stop = CancellationToken::new();
    let broker_task = if embedded {
        let listener = TcpListener::bind(broker_settings.listen)
            .await
            .with_context(|| {
                format!(
                    "binding the embedded MQTT broker to {}",
                    broker_settings.listen
                )
            })?;
        let config = broker::Config {
            max_inflight: broker_settings.max_inflight,
            max_queued: broker_settings.max_queued,
            ..broker::Config::default()
        };
        Some(tokio::spawn(broker::run(
            config,
            listener,
            broker_stop.clone().cancelled_owned(),
        )))
    } else {
        None
    };

    let http = TcpListener::bind(ingestion_config.ingestion.http_addr)
        .await
        .with_context(|| {
            format!(
                "binding ingestion to {}",
                ingestion_config.ingestion.http_addr
            )
        })?;
    print_banner(
        &ingestion_config,
        embedded.then_some(broker_settings.listen),
        http.local_addr()?,
    );

    let mut ingestion = tokio::spawn(ingestion::run(
        ingestion_config,
        http,
        stop.clone().cancelled_owned(),
    ));
    // A service that stops on its own takes the platform down with it: a half-running platform
    // would only mislead.
    let finished_early = tokio::select! {
        () = kit::shutdown::signal() => None,
        joined = &mut ingestion => Some(joined),
    };
    stop.cancel();
    let joined = match finished_early {
        Some(joined) => joined,
        None => ingestion.await,
    };
    let result = joined.context("the ingestion task panicked")?;
    broker_stop.cancel();
    if let Some(task) = broker_task {
        task.await.context("the broker task panicked")??;
    }
    result.context("ingestion")?;
    Ok(())
}

fn print_banner(config: &ingestion::Config, broker: Option<SocketAddr>, http: SocketAddr) {
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
         \n  store          {store}\
         \n  cache          {cache}\
         \n\
         \nPublish a first point (any MQTT client; here mosquitto_pub):\
         \n  mosquitto_pub -p {port} -q 1 -t roasters/demo-1/telemetry \\\
         \n    -m \"{{\\\"session\\\":\\\"first-roast\\\",\\\"seq\\\":0,\\\"ts\\\":$(date +%s%3N),\\\"channels\\\":{{\\\"bt\\\":180.2,\\\"et\\\":210.5}}}}\"\
         \nthen read it back:\
         \n  curl http://{http}/sessions/first-roast/telemetry\
         \n\nCtrl-C stops everything.\n"
    );
}
