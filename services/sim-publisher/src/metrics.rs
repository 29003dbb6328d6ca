//! Metrics of the sim-publisher (names: `simcorp_sim_publisher_*`).

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};

const POINTS_PUBLISHED: &str = "simcorp_sim_publisher_points_published_total";
const ROASTS_COMPLETED: &str = "simcorp_sim_publisher_roasts_completed_total";
const ROASTERS: &str = "simcorp_sim_publisher_roasters";

pub(crate) fn points_published(n: u64) {
    counter!(POINTS_PUBLISHED).increment(n);
}

pub(crate) fn roast_completed() {
    counter!(ROASTS_COMPLETED).increment(1);
}

pub(crate) fn roasters_started(n: usize) {
    gauge!(ROASTERS).increment(n as f64);
}

pub(crate) fn roasters_stopped(n: usize) {
    gauge!(ROASTERS).decrement(n as f64);
}

/// Describes the sim-publisher's metrics, and registers them at zero so that a publisher with
/// no fleet yet still shows them.
pub(crate) fn describe() {
    describe_counter!(
        POINTS_PUBLISHED,
        Unit::Count,
        "Telemetry points published by the simulated roasters."
    );
    describe_counter!(
        ROASTS_COMPLETED,
        Unit::Count,
        "Simulated roasts published to their end."
    );
    describe_gauge!(
        ROASTERS,
        Unit::Count,
        "Simulated roasters running, across every fleet."
    );
    counter!(POINTS_PUBLISHED).increment(0);
    counter!(ROASTS_COMPLETED).increment(0);
    gauge!(ROASTERS).increment(0.0);
}
