//! Metrics of the sim-publisher (names: `simcorp_sim_*`).

use metrics::{counter, gauge};

pub(crate) fn points_published(n: u64) {
    counter!("simcorp_sim_points_published_total").increment(n);
}

pub(crate) fn roast_completed() {
    counter!("simcorp_sim_roasts_completed_total").increment(1);
}

pub(crate) fn roasters_started(n: usize) {
    gauge!("simcorp_sim_roasters").increment(n as f64);
}

pub(crate) fn roasters_stopped(n: usize) {
    gauge!("simcorp_sim_roasters").decrement(n as f64);
}
