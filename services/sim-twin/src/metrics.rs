//! Metrics of sim-twin (requests are counted by the kit).

use metrics::counter;

pub(crate) fn simulated(samples: usize) {
    counter!("simcorp_sim_twin_roasts_total").increment(1);
    counter!("simcorp_sim_twin_samples_total").increment(samples as u64);
}

/// Registers the counters at zero, so dashboards see the series before the first roast.
pub(crate) fn describe() {
    counter!("simcorp_sim_twin_roasts_total").increment(0);
    counter!("simcorp_sim_twin_samples_total").increment(0);
}
