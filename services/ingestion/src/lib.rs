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
//! [`Ingestion`]'s `run` owns the lifecycle. On shutdown it stops taking messages, writes and
//! acknowledges what it has, disconnects from the broker and stops the HTTP server, within
//! `ingestion.drain_timeout_secs`; anything it could not finish stays unacknowledged in the
//! broker and is redelivered to the next run.

mod api;
mod config;
mod handler;
mod limiter;
mod metrics;
mod signatures;
mod sink;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kit::service::{Error, Lifecycle, Service, Spec};
use secrecy::ExposeSecret as _;

pub use config::{Config, Settings};

/// Telemetry from MQTT into storage: `simcorp serve ingestion`.
pub struct Ingestion;

impl Service for Ingestion {
    const SPEC: Spec = kit::spec!("ingestion", "ingestion", 4001);
    type Config = Config;

    async fn run(config: Config, service: Lifecycle) -> Result<(), Error> {
        ingest(config, service).await
    }
}

async fn ingest(config: Config, mut service: Lifecycle) -> Result<(), Error> {
    let started = Instant::now();
    let settings = &config.ingestion;

    let store = store::DurableStore::open_with(
        &config.postgres,
        &config.sqlite_path(),
        &config.fallback_path(),
        &config.sqlite,
        &config.store,
    )
    .await
    .map_err(|e| Error::start("opening the store", e))?;
    {
        let store = store.clone();
        service.spawn("store maintenance", move |stop| async move {
            store.run_maintenance(stop).await;
            Ok::<_, Error>(())
        });
    }

    let cache =
        cache::Cache::new(&config.redis).map_err(|e| Error::start("setting up the cache", e))?;
    let (cache_tx, cache_rx) = tokio::sync::mpsc::channel(1024);
    {
        let cache = cache.clone();
        service.spawn("cache updates", move |stop| async move {
            // Ends by itself once the pipeline has drained and released the sink. After a
            // drain cut short it may not have: the cache never holds up shutdown for long.
            let updates = sink::run_cache_updates(cache, cache_rx);
            tokio::pin!(updates);
            tokio::select! {
                () = &mut updates => {}
                () = stop.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), updates).await;
                }
            }
            Ok::<_, Error>(())
        });
    }

    let client_id = config.mqtt.client_id_for(Ingestion::SPEC.name);
    let subscriber = mqtt::Subscriber::new(&config.mqtt, client_id.clone(), settings.filters())
        .map_err(|e| Error::start("setting up MQTT", e))?;
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
    {
        let failed = pipeline.failed();
        service.spawn("the pipeline", move |stop| async move {
            tokio::select! {
                () = failed => Err("a write task failed; unacknowledged messages will be redelivered"),
                () = stop.cancelled() => Ok(()),
            }
        });
    }

    let verifier = if settings.require_signed_sessions || settings.require_signed_telemetry {
        let keys = match config.postgres.url.as_ref() {
            Some(url) => {
                store::CommandsStore::postgres(url.expose_secret(), &config.postgres).await
            }
            None => store::CommandsStore::sqlite(&config.data_dir, &config.sqlite).await,
        }
        .map_err(|e| Error::start("opening the device key registry", e))?;
        let verifier = Arc::new(signatures::Verifier::new(
            settings.require_signed_sessions,
            settings.require_signed_telemetry,
            keys,
            Duration::from_secs(settings.keys_refresh_secs),
        ));
        let known = verifier
            .refresh()
            .await
            .map_err(|e| Error::start("reading the device key registry", e))?;
        tracing::info!(
            keys = known,
            sessions = settings.require_signed_sessions,
            telemetry = settings.require_signed_telemetry,
            "device signatures required"
        );
        let (v, every) = (
            verifier.clone(),
            Duration::from_secs(settings.keys_refresh_secs),
        );
        service.spawn("device keys", move |stop| async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return Ok::<_, Error>(()),
                    _ = ticks.tick() => {
                        if let Err(error) = v.refresh().await {
                            tracing::warn!(%error, "could not read the device key registry; judging on the keys read before");
                        }
                    }
                }
            }
        });
        Some(verifier)
    } else {
        None
    };
    let decoder = handler::Decoder {
        limits: settings.limits(),
        dead_letter_payload_bytes: settings.dead_letter_payload_bytes,
        limiter: limiter::DeviceLimiter::new(
            settings.device_points_per_sec,
            settings.device_burst_points,
        )
        .map(Arc::new),
        verifier,
    };
    let decoder = Arc::new(decoder);
    let subscription = subscriber.spawn({
        let intake = intake.clone();
        move |delivery| {
            let (decoder, intake) = (decoder.clone(), intake.clone());
            async move {
                if let Some(v) = &decoder.verifier {
                    v.prepare(&delivery.topic, &delivery.payload).await;
                }
                let envelope = decoder.envelope(delivery);
                // Closed only while draining: the message stays unacknowledged and the broker
                // redelivers it to the next run.
                let _ = intake.send(envelope).await;
            }
        }
    });

    {
        let readiness = service.readiness();
        let c = connection.clone();
        readiness.require("mqtt", move || c.is_subscribed());
        let s = store.clone();
        readiness.require(name_of(&store), move || s.primary_available());
        let c = cache.clone();
        readiness.observe(cache.kind(), move || c.is_available());
    }
    let stats = pipeline.stats_handle();
    {
        let stats = stats.clone();
        service.render_metrics(move |out| stats.render_prometheus(out));
    }
    service.serve(api::router(api::AppState {
        store: store.clone(),
        cache: cache.clone(),
        stats,
        intake,
        mqtt: connection,
        started,
    }));
    tracing::info!(
        %client_id,
        mqtt = %config.mqtt.url,
        store = name_of(&store),
        cache = cache.kind(),
        "ingestion started"
    );

    let outcome = service.wait().await;

    // Drain: stop taking messages, write and acknowledge what we have, then disconnect. A
    // drain cut short leaves messages unacknowledged: the broker redelivers them, nothing is
    // lost.
    let deadline = Duration::from_secs(settings.drain_timeout_secs);
    let draining = Instant::now();
    let drained = tokio::time::timeout(deadline, async {
        subscription.stop_intake();
        let result = pipeline.drain().await;
        // Leave a little of the budget for the acks to reach the broker.
        subscription.finish(Duration::from_secs(5)).await;
        result
    })
    .await;
    let outcome = match drained {
        Ok(Ok(())) => {
            tracing::info!(
                drain_ms = draining.elapsed().as_millis() as u64,
                uptime_s = started.elapsed().as_secs(),
                "ingestion drained"
            );
            outcome
        }
        Ok(Err(e)) => outcome.and(Err(Error::Task {
            task: "the pipeline".into(),
            reason: e.to_string(),
        })),
        Err(_) => {
            tracing::warn!(
                timeout_s = deadline.as_secs(),
                "drain did not finish in time; unacknowledged messages will be redelivered"
            );
            outcome
        }
    };
    service.stop(outcome).await
}

fn name_of(store: &store::DurableStore) -> &'static str {
    match store.primary() {
        store::Store::Postgres(_) => "postgres",
        store::Store::Sqlite(_) => "sqlite",
    }
}
