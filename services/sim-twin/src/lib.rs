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

use kit::service::{Error, Lifecycle, Service, Spec};

pub use config::{Config, Settings};

/// The simulation engine over HTTP: `simcorp serve sim-twin`.
pub struct SimTwin;

impl Service for SimTwin {
    const SPEC: Spec = kit::spec!("sim-twin", "sim_twin", 4002);
    type Config = Config;

    /// No dependencies: ready as soon as it serves; nothing to drain (requests in flight
    /// finish within the request timeout).
    async fn run(config: Config, mut service: Lifecycle) -> Result<(), Error> {
        let max_samples = config.sim_twin.max_samples;
        service.serve(api::router(api::AppState { max_samples }));
        let outcome = service.wait().await;
        service.stop(outcome).await
    }
}
