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

use figment::value::Value;
use kit::service::{Error, HttpSettings, Lifecycle, Service};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, Settings};
pub use fleet::{FleetError, FleetSpec, FleetView, Fleets, RoasterView};

/// The service (see the crate documentation).
#[derive(Debug)]
pub struct SimPublisher;

impl Service for SimPublisher {
    const NAME: &'static str = "sim-publisher";
    const SECTION: &'static str = "sim_publisher";
    const PORT: u16 = 4003;
    const ABOUT: &'static str = "/fleets  (3 simulated roasters unless --no-fleet)";
    type Config = Config;

    fn http(config: &Config) -> &HttpSettings {
        &config.sim_publisher.http
    }

    fn describe_metrics() {
        metrics::describe();
    }

    /// A newcomer running `simcorp up` sees live roasts at once.
    fn local_defaults() -> Vec<(String, Value)> {
        match Value::serialize(FleetSpec::default()) {
            Ok(spec) => vec![("sim_publisher.default_fleet".into(), spec)],
            Err(_) => Vec::new(),
        }
    }

    /// Runs until `shutdown`; then stops every fleet (roasts in progress end with a `stopped`
    /// end message) and disconnects.
    async fn run(
        config: Config,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let mut service = Lifecycle::start::<Self>(&config)?;
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
        service.serve(listener, api::router(fleets.clone()));
        let outcome = service.wait(shutdown).await;
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
