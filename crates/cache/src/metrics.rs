//! Every metric of the cache, in one place (names: `simcorp_cache_*`).

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};

const UP: &str = "simcorp_cache_up";
const ERRORS: &str = "simcorp_cache_errors_total";
const READS: &str = "simcorp_cache_reads_total";

/// Describes the cache's metrics to the installed recorder.
pub fn describe() {
    describe_gauge!(UP, "1 while the cache's last operation succeeded, else 0.");
    describe_counter!(
        ERRORS,
        Unit::Count,
        "Cache operations that failed (each degraded to a miss or a skipped update)."
    );
    describe_counter!(
        READS,
        Unit::Count,
        "Successful reads of a device's latest point, by outcome (hit, miss)."
    );
}

/// The outcome of any cache operation.
pub(crate) fn outcome(ok: bool) {
    gauge!(UP).set(if ok { 1.0 } else { 0.0 });
    if !ok {
        counter!(ERRORS).increment(1);
    }
}

/// A successful read of a device's latest point.
pub(crate) fn read(hit: bool) {
    let outcome = if hit { "hit" } else { "miss" };
    counter!(READS, "outcome" => outcome).increment(1);
}
