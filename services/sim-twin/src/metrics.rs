//! Metrics of sim-twin (names: `simcorp_sim_twin_*`; requests are counted by the kit).

use metrics::{Unit, counter, describe_counter};

const ROASTS: &str = "simcorp_sim_twin_roasts_total";
const SAMPLES: &str = "simcorp_sim_twin_samples_total";

pub(crate) fn simulated(samples: usize) {
    counter!(ROASTS).increment(1);
    counter!(SAMPLES).increment(samples as u64);
}

/// Describes sim-twin's metrics and registers them at zero, so dashboards see the series before
/// the first roast.
pub(crate) fn describe() {
    describe_counter!(ROASTS, Unit::Count, "Roasts simulated.");
    describe_counter!(SAMPLES, Unit::Count, "Samples in the roasts simulated.");
    counter!(ROASTS).increment(0);
    counter!(SAMPLES).increment(0);
}
