//! Metrics of the ingestion service itself (the pipeline, store, cache and MQTT crates emit
//! their own).

use metrics::counter;

pub(crate) fn rejected(reason: &'static str) {
    counter!("simcorp_ingest_rejected_total", "reason" => reason).increment(1);
}

/// A message shed by the flood limit, with the points it carried.
pub(crate) fn shed(points: usize) {
    counter!("simcorp_ingest_shed_messages_total").increment(1);
    counter!("simcorp_ingest_shed_points_total").increment(points as u64);
}

pub(crate) fn cache_update_dropped() {
    counter!("simcorp_ingest_cache_updates_dropped_total").increment(1);
}

/// Registers every rejection reason at zero, so dashboards and alerts see the series before the
/// first bad message arrives.
pub(crate) fn describe() {
    for reason in model::Rejection::CODES {
        counter!("simcorp_ingest_rejected_total", "reason" => *reason).increment(0);
    }
    counter!("simcorp_ingest_shed_messages_total").increment(0);
    counter!("simcorp_ingest_shed_points_total").increment(0);
}
