//! Every metric the store emits, in one place so names and labels stay consistent (names:
//! `simcorp_store_*`).
//!
//! Only what the store alone knows: the fallback's backlog, what was replayed from it, whether
//! the primary is up. Commits and their timing belong to whoever asked for the write (the
//! pipeline counts batches and points by destination, and times each write), so they are not
//! counted twice here.

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};

const REPLAYED_POINTS: &str = "simcorp_store_replayed_points_total";
const FALLBACK_BACKLOG: &str = "simcorp_store_fallback_backlog_points";
const PRIMARY_UP: &str = "simcorp_store_primary_up";

/// Describes the store's metrics to the installed recorder.
pub fn describe() {
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
