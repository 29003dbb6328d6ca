//! sim-twin: a deterministic simulation of a drum roaster — the roasts the rest of the platform
//! is developed, tested and load-tested against — and an HTTP service over it.
//!
//! [`engine`] is the simulation itself: a lumped heat-transfer model of a 5 kg-class drum
//! roaster (burner, airflow, drum speed, batch, moisture; BT, ET and rate of rise as the probes
//! read them) that roasts a [`engine::Profile`] of control steps and knows when its own events
//! happen (charge, turning point, dry end, first crack, drop), so inferred events can be scored
//! against ground truth. The same inputs and seed give the same roast, byte for byte. The
//! sim-publisher service and the load harness drive it sample by sample
//! ([`engine::Simulation`]); this service returns whole roasts (`POST /simulate`) and the built-in
//! profiles (`GET /profiles`).
//!
//! Not here: publishing over MQTT (sim-publisher), inferring events from telemetry
//! (event-inference), or controlling a real roaster. The model is plausible, not predictive: it
//! is calibrated to look like real roasts, not to stand in for a particular machine.

pub mod engine;

mod api;
mod config;
mod metrics;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, Settings};

/// Why the service could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
    #[error("HTTP server task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs the service until `shutdown` resolves, serving HTTP on `listener`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    kit::config::Validate::validate(&config).map_err(Error::Config)?;
    metrics::describe();
    let settings = &config.sim_twin;

    // No dependencies to wait for: ready as soon as it serves.
    let ops = kit::http::Ops::new("sim-twin", kit::http::Readiness::default());
    let app = api::router(api::AppState {
        max_samples: settings.max_samples,
    });
    let router = kit::http::with_ops(app, ops, Duration::from_secs(settings.request_timeout_secs));
    let stop = CancellationToken::new();
    let local = listener.local_addr()?;
    let mut http = tokio::spawn(kit::http::serve(
        listener,
        router,
        stop.clone().cancelled_owned(),
    ));
    tracing::info!(http = %local, "sim-twin started");

    tokio::select! {
        () = shutdown => {}
        // The server stopped on its own: nothing left to shut down.
        stopped = &mut http => return Ok(stopped??),
    }
    // Nothing to drain: requests in flight finish (within the request timeout), then it stops.
    stop.cancel();
    http.await??;
    tracing::info!("sim-twin stopped");
    Ok(())
}
