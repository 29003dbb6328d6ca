//! Metrics of the ingestion service itself (names: `simcorp_ingestion_*`); the pipeline, store,
//! cache and MQTT crates emit their own, and [`describe`] describes theirs too.

use metrics::{Unit, counter, describe_counter};

const REJECTED: &str = "simcorp_ingestion_rejected_total";
const SHED_MESSAGES: &str = "simcorp_ingestion_shed_messages_total";
const SHED_POINTS: &str = "simcorp_ingestion_shed_points_total";
const CACHE_UPDATES_DROPPED: &str = "simcorp_ingestion_cache_updates_dropped_total";

pub(crate) fn rejected(reason: &'static str) {
    counter!(REJECTED, "reason" => reason).increment(1);
}

/// A message shed by the flood limit, with the points it carried.
pub(crate) fn shed(points: usize) {
    counter!(SHED_MESSAGES).increment(1);
    counter!(SHED_POINTS).increment(points as u64);
}

pub(crate) fn cache_update_dropped() {
    counter!(CACHE_UPDATES_DROPPED).increment(1);
}

/// Describes every metric ingestion emits, its crates' included, and registers the counters of
/// refusals at zero, so dashboards and alerts see every series before the first bad message.
pub(crate) fn describe() {
    pipeline::metrics::describe();
    store::metrics::describe();
    cache::metrics::describe();
    mqtt::metrics::describe();

    describe_counter!(
        REJECTED,
        Unit::Count,
        "Messages refused by the decoder, by reason (each stored as a dead letter)."
    );
    describe_counter!(
        SHED_MESSAGES,
        Unit::Count,
        "Messages acknowledged unstored because their device exceeded its flood limit."
    );
    describe_counter!(
        SHED_POINTS,
        Unit::Count,
        "Points in the messages shed by the flood limit."
    );
    describe_counter!(
        CACHE_UPDATES_DROPPED,
        Unit::Count,
        "Committed batches whose cache update was dropped because the cache fell behind."
    );
    for reason in model::Rejection::CODES {
        counter!(REJECTED, "reason" => *reason).increment(0);
    }
    counter!(SHED_MESSAGES).increment(0);
    counter!(SHED_POINTS).increment(0);
}
