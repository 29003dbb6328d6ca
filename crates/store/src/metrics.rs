//! Every metric the store emits, in one place so names and labels stay consistent.
//! Names follow `simcorp_store_<name>_<unit>[_total]`.

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

use crate::durable::Destination;

const POINTS_WRITTEN: &str = "simcorp_store_points_written_total";
const POINTS_DUPLICATE: &str = "simcorp_store_points_duplicate_total";
const FALLBACK_BATCHES: &str = "simcorp_store_fallback_batches_total";
const REPLAYED_POINTS: &str = "simcorp_store_replayed_points_total";
const FALLBACK_BACKLOG: &str = "simcorp_store_fallback_backlog_points";
const PRIMARY_UP: &str = "simcorp_store_primary_up";
const WRITE_DURATION: &str = "simcorp_store_write_duration_seconds";

/// Registers descriptions with the installed recorder; call once after installing it.
pub fn describe() {
    describe_counter!(
        POINTS_WRITTEN,
        Unit::Count,
        "Points stored, by destination (primary|fallback)."
    );
    describe_counter!(
        POINTS_DUPLICATE,
        Unit::Count,
        "Points absorbed because they were already stored (redelivery, replay), by destination."
    );
    describe_counter!(
        FALLBACK_BATCHES,
        Unit::Count,
        "Batches written to the local fallback because PostgreSQL was unavailable."
    );
    describe_counter!(
        REPLAYED_POINTS,
        Unit::Count,
        "Points moved from the fallback into PostgreSQL."
    );
    describe_gauge!(
        FALLBACK_BACKLOG,
        Unit::Count,
        "Points waiting in the fallback for PostgreSQL."
    );
    describe_gauge!(
        PRIMARY_UP,
        "1 while the primary store is believed available, else 0."
    );
    describe_histogram!(
        WRITE_DURATION,
        Unit::Seconds,
        "Duration of one batch write (one transaction), by destination."
    );
}

fn label(d: Destination) -> &'static str {
    match d {
        Destination::Primary => "primary",
        Destination::Fallback => "fallback",
    }
}

pub(crate) fn written(d: Destination, inserted: u64, duplicate: u64, took: Duration) {
    counter!(POINTS_WRITTEN, "destination" => label(d)).increment(inserted);
    counter!(POINTS_DUPLICATE, "destination" => label(d)).increment(duplicate);
    histogram!(WRITE_DURATION, "destination" => label(d)).record(took.as_secs_f64());
    if d == Destination::Fallback {
        counter!(FALLBACK_BATCHES).increment(1);
    }
}

pub(crate) fn replayed(points: u64) {
    counter!(REPLAYED_POINTS).increment(points);
}

pub(crate) fn backlog(points: u64) {
    gauge!(FALLBACK_BACKLOG).set(points as f64);
}

pub(crate) fn primary_up(up: bool) {
    gauge!(PRIMARY_UP).set(if up { 1.0 } else { 0.0 });
}
