//! sim-twin: the roaster simulation as an HTTP service. `POST /simulate` returns a whole roast of
//! the deterministic engine (`sim_engine`: curve, controls and the engine's own events, the ground
//! truth that inferred events are scored against); `GET /profiles` lists the built-in profiles.
//!
//! Not here: the physics (crate `sim-engine`, which sim-publisher, the load harness and the
//! benchmarks use directly), publishing over MQTT (sim-publisher), inferring events from
//! telemetry (event-inference), or controlling a real roaster.

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
