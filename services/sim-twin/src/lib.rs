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

use kit::service::{Error, HttpSettings, Lifecycle, Service};
use tokio::net::TcpListener;

pub use config::{Config, Settings};

/// The service (see the crate documentation).
#[derive(Debug)]
pub struct SimTwin;

impl Service for SimTwin {
    const NAME: &'static str = "sim-twin";
    const SECTION: &'static str = "sim_twin";
    const PORT: u16 = 4002;
    const ABOUT: &'static str = "POST /simulate, GET /profiles";
    type Config = Config;

    fn http(config: &Config) -> &HttpSettings {
        &config.sim_twin.http
    }

    fn describe_metrics() {
        metrics::describe();
    }

    /// Serves until `shutdown`. No dependencies: ready as soon as it serves; nothing to drain
    /// (requests in flight finish within the request timeout).
    async fn run(
        config: Config,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let mut service = Lifecycle::start::<Self>(&config)?;
        service.serve(
            listener,
            api::router(api::AppState {
                max_samples: config.sim_twin.max_samples,
            }),
        );
        let outcome = service.wait(shutdown).await;
        service.stop(outcome).await
    }
}
