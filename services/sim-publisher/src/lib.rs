//! The sim-publisher service: fleets of simulated roasters, each backed by sim-twin's engine,
//! publishing the device contract over MQTT exactly as real roasters do — session start,
//! telemetry at the sample interval (real time or accelerated) from the preheated, empty drum
//! before charge (`pre_charge_secs`) to the drop, session end carrying the engine's own roast
//! events as ground truth. `simcorp up` starts a small default fleet so a
//! newcomer sees live roasts at once; the HTTP API starts, inspects and stops fleets.
//!
//! Not here: the physics (`sim_engine`) or load measurement (the `loadtest` harness).

mod api;
mod config;
mod fleet;
mod metrics;

use std::sync::Arc;
use std::time::Duration;

use figment::value::Value;
use kit::service::{Error, Lifecycle, Service, Spec};
use tokio_util::sync::CancellationToken;

pub use config::{Config, Settings};
pub use fleet::{FleetError, FleetSpec, FleetView, Fleets, RoasterView};

/// Simulated roasters over MQTT: `simcorp serve sim-publisher`.
pub struct SimPublisher;

impl Service for SimPublisher {
    const SPEC: Spec = kit::spec!("sim-publisher", "sim_publisher", 4003);
    type Config = Config;

    /// A newcomer running `simcorp up` sees live roasts at once.
    fn local_defaults() -> Vec<(String, Value)> {
        match Value::serialize(FleetSpec::default()) {
            Ok(spec) => vec![("sim_publisher.default_fleet".into(), spec)],
            Err(_) => Vec::new(),
        }
    }

    /// Runs until shutdown; then stops every fleet (roasts in progress end with a `stopped`
    /// end message) and disconnects.
    async fn run(config: Config, mut service: Lifecycle) -> Result<(), Error> {
        let settings = &config.sim_publisher;
        let fleets = Arc::new(Fleets::new(config.mqtt.clone(), settings.max_roasters));
        {
            let fleets = fleets.clone();
            service
                .readiness()
                .require("mqtt", move || fleets.connected());
        }
        if let Some(spec) = settings.default_fleet.clone() {
            let (fleets, stopping) = (fleets.clone(), service.stopping());
            service.spawn("the default fleet", move |_| {
                start_default_fleet(fleets, spec, stopping)
            });
        }
        service.serve(api::router(fleets.clone()));
        let outcome = service.wait().await;
        // The API and the default fleet's retries stop first, so that no fleet starts after this.
        let result = service.stop(outcome).await;
        fleets.stop_all().await;
        result
    }
}

/// Starts the default fleet, retrying until the broker answers: the service must come up (and
/// report not ready) even when the broker is late.
async fn start_default_fleet(
    fleets: Arc<Fleets>,
    spec: FleetSpec,
    stopping: CancellationToken,
) -> Result<(), FleetError> {
    loop {
        tokio::select! {
            started = fleets.start(spec.clone()) => match started {
                Ok(id) => {
                    tracing::info!(fleet = %id, "default fleet started");
                    return Ok(());
                }
                Err(error) => tracing::warn!(%error, "default fleet not started yet; retrying"),
            },
            () = stopping.cancelled() => return Ok(()),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            () = stopping.cancelled() => return Ok(()),
        }
    }
}
