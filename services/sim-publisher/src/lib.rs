//! The sim-publisher service: fleets of simulated roasters, each backed by sim-twin's engine,
//! publishing the device contract over MQTT exactly as real roasters do — session start,
//! telemetry at the sample interval (real time or accelerated), session end carrying the
//! engine's own roast events as ground truth. `simcorp up` starts a small default fleet so a
//! newcomer sees live roasts at once; the HTTP API starts, inspects and stops fleets.
//!
//! Not here: the physics (`sim_engine`) or load measurement (the `loadtest` harness).

mod api;
mod config;
mod fleet;
mod metrics;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, Settings};
pub use fleet::{FleetError, FleetSpec, FleetView, Fleets, RoasterView};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
}

/// Runs the service until `shutdown` resolves; then stops every fleet (roasts in progress end
/// with a `stopped` end message) and disconnects.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    kit::config::Validate::validate(&config).map_err(Error::Config)?;
    let settings = &config.sim_publisher;
    let fleets = Arc::new(Fleets::new(config.mqtt.clone(), settings.max_roasters));

    let stop = CancellationToken::new();
    // The default fleet starts in the background, retrying until the broker answers: the
    // service must come up (and report not ready) even when the broker is late.
    let default_fleet = settings.default_fleet.clone().map(|spec| {
        let (fleets, stop) = (fleets.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                match fleets.start(spec.clone()).await {
                    Ok(id) => {
                        tracing::info!(fleet = %id, "default fleet started");
                        return;
                    }
                    Err(error) => tracing::warn!(%error, "default fleet not started yet; retrying"),
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    () = stop.cancelled() => return,
                }
            }
        })
    });

    let readiness = kit::http::Readiness::default();
    {
        let fleets = fleets.clone();
        readiness.require("mqtt", move || fleets.connected());
    }
    let router = kit::http::with_ops(
        api::router(fleets.clone()),
        kit::http::Ops::new("sim-publisher", readiness),
        Duration::from_secs(settings.request_timeout_secs),
    );
    let local = listener.local_addr()?;
    let http = tokio::spawn(kit::http::serve(
        listener,
        router,
        stop.clone().cancelled_owned(),
    ));
    tracing::info!(http = %local, mqtt = %config.mqtt.url, "sim-publisher started");

    shutdown.await;
    stop.cancel();
    if let Some(task) = default_fleet {
        let _ = task.await;
    }
    fleets.stop_all().await;
    if let Ok(Err(e)) = http.await {
        tracing::warn!(error = %e, "HTTP server stopped with an error");
    }
    Ok(())
}
