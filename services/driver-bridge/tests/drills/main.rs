//! driver-bridge's store-and-forward drill, as issue 11 names it: the broker down for 60 s
//! during a roast (a private Mosquitto with the project's config, ingestion on PostgreSQL),
//! then the stored session checked against what the driver sampled — every point, in order,
//! none twice. The ordinary suite runs the same roast with a 5 s outage
//! (`store_forward::a_five_second_broker_outage_loses_and_duplicates_nothing`).
//!
//! Run by `cargo xtask drills` (`SIMCORP_DRILLS=1`).
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.

#[path = "../it/support.rs"]
#[allow(dead_code)] // The drill uses the outage roast; the rest serves the ordinary suite.
mod support;

use std::time::Duration;

pub(crate) use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn driver_bridge_broker_down_60_s_during_a_roast() {
    if !testkit::drill("driver_bridge_broker_down_60_s_during_a_roast") {
        return;
    }
    roast_through_an_outage(Duration::from_secs(60)).await;
}
