//! The ingestion service: roaster telemetry from MQTT into durable storage, and an HTTP API over
//! what was stored.
//!
//! ```text
//! broker ─▶ mqtt::Subscriber ─▶ Decoder ─▶ pipeline (queue ▶ batcher ▶ writers) ─▶ DurableStore
//!              ▲  (persistent session,          │ points, sessions,        │ PostgreSQL, or the
//!              │   manual acks)                 │ dead letters             │ SQLite fallback
//!              └────────── MqttAcker ◀── in-order acks after commit ◀─────┘
//!                                                                          └─▶ cache (best effort)
//! ```
//!
//! [`run`] owns the lifecycle; `main.rs` and `simcorp up`/`serve` only load configuration, bind
//! the listener and call it. On shutdown it stops taking messages, writes and acknowledges what
//! it has, disconnects from the broker and stops the HTTP server, within
//! `ingestion.drain_timeout_secs`; anything it could not finish stays unacknowledged in the
//! broker and is redelivered to the next run.

mod api;
mod config;
mod handler;
mod limiter;
mod metrics;
mod sink;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, Settings};

/// Why the service could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("opening the store: {0}")]
    Store(#[from] store::StoreError),
    #[error("setting up the cache: {0}")]
    Cache(#[from] cache::CacheError),
    #[error("setting up MQTT: {0}")]
    Mqtt(#[from] mqtt::MqttError),
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
    #[error(transparent)]
    Pipeline(#[from] pipeline::PipelineFailed),
}

/// Runs the service until `shutdown` resolves, serving HTTP on `listener`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    kit::config::Validate::validate(&config).map_err(Error::Config)?;
    let started = Instant::now();
    metrics::describe();
    let settings = &config.ingestion;

    let store = store::DurableStore::open_with(
        &config.postgres,
        &config.sqlite_path(),
        &config.fallback_path(),
        &config.sqlite,
        &config.store,
    )
    .await?;
    let maintenance = CancellationToken::new();
    let maintenance_task = tokio::spawn({
        let (store, token) = (store.clone(), maintenance.clone());
        async move { store.run_maintenance(token).await }
    });

    let cache = cache::Cache::new(&config.redis)?;
    let (cache_tx, cache_rx) = tokio::sync::mpsc::channel(1024);
    let cache_task = tokio::spawn(sink::run_cache_updates(cache.clone(), cache_rx));

    let client_id = config.mqtt.client_id_for("ingestion");
    let subscriber = mqtt::Subscriber::new(&config.mqtt, client_id.clone(), settings.filters())?;
    let connection = subscriber.connection();
    let sink = Arc::new(sink::StoreSink {
        store: store.clone(),
        cache_updates: cache_tx,
    });
    let (intake, pipeline) = pipeline::start(
        config.pipeline.clone(),
        sink,
        sink::BrokerAcks(subscriber.acker()),
    );

    let decoder = handler::Decoder {
        limits: settings.limits(),
        dead_letter_payload_bytes: settings.dead_letter_payload_bytes,
        limiter: limiter::DeviceLimiter::new(
            settings.device_points_per_sec,
            settings.device_burst_points,
        )
        .map(Arc::new),
    };
    let subscription = subscriber.spawn({
        let intake = intake.clone();
        move |delivery| {
            let envelope = decoder.envelope(delivery);
            let intake = intake.clone();
            async move {
                // Closed only while draining: the message stays unacknowledged and the broker
                // redelivers it to the next run.
                let _ = intake.send(envelope).await;
            }
        }
    });

    let readiness = kit::http::Readiness::default();
    let draining = CancellationToken::new();
    {
        let c = connection.clone();
        readiness.require("mqtt", move || c.is_subscribed());
        let s = store.clone();
        readiness.require(name_of(&store), move || s.primary_available());
        let c = cache.clone();
        readiness.observe(cache.kind(), move || c.is_available());
        let d = draining.clone();
        readiness.require("accepting", move || !d.is_cancelled());
    }
    let stats = pipeline.stats_handle();
    let ops = kit::http::Ops::new("ingestion", readiness).with_metrics({
        let stats = stats.clone();
        move |out| stats.render_prometheus(out)
    });
    let app = api::router(api::AppState {
        store: store.clone(),
        cache: cache.clone(),
        stats,
        intake,
        mqtt: connection,
        started,
    });
    let router = kit::http::with_ops(app, ops, Duration::from_secs(settings.request_timeout_secs));
    let http_stop = CancellationToken::new();
    let local = listener.local_addr()?;
    let http = tokio::spawn(kit::http::serve(
        listener,
        router,
        http_stop.clone().cancelled_owned(),
    ));
    tracing::info!(
        http = %local,
        %client_id,
        mqtt = %config.mqtt.url,
        store = name_of(&store),
        cache = cache.kind(),
        "ingestion started"
    );

    let failure = tokio::select! {
        () = shutdown => None,
        () = pipeline.failed() => Some(()),
    };

    // Drain: stop taking messages, write and acknowledge what we have, then disconnect.
    draining.cancel();
    let deadline = Duration::from_secs(settings.drain_timeout_secs);
    let drained = tokio::time::timeout(deadline, async {
        subscription.stop_intake();
        let result = pipeline.drain().await;
        // Leave a little of the budget for the acks to reach the broker.
        subscription.finish(Duration::from_secs(5)).await;
        result
    })
    .await;
    let result = match drained {
        Ok(Ok(())) => {
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "ingestion drained"
            );
            Ok(())
        }
        Ok(Err(e)) => Err(Error::Pipeline(e)),
        Err(_) => {
            tracing::warn!(
                timeout_s = deadline.as_secs(),
                "drain did not finish in time; unacknowledged messages will be redelivered"
            );
            Ok(())
        }
    };
    if failure.is_some() && result.is_ok() {
        tracing::error!("the pipeline stopped unexpectedly");
    }
    maintenance.cancel();
    http_stop.cancel();
    let _ = maintenance_task.await;
    // The cache task ends when the pipeline releases the sink; after a timed-out drain it may
    // not have, and the cache must never hold up shutdown.
    if tokio::time::timeout(Duration::from_secs(2), cache_task)
        .await
        .is_err()
    {
        tracing::debug!("cache updates abandoned at shutdown");
    }
    if let Ok(Err(e)) = http.await {
        tracing::warn!(error = %e, "HTTP server stopped with an error");
    }
    result
}

fn name_of(store: &store::DurableStore) -> &'static str {
    match store.primary() {
        store::Store::Postgres(_) => "postgres",
        store::Store::Sqlite(_) => "sqlite",
    }
}
