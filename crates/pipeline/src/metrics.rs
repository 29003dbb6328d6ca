//! Every metric the pipeline emits, in one place (names: `simcorp_ingest_*`).

use metrics::{counter, gauge, histogram};

pub(crate) fn queue_depth(depth: usize) {
    gauge!("simcorp_ingest_queue_depth_messages").set(depth as f64);
}

pub(crate) fn backpressure_engaged() {
    counter!("simcorp_ingest_backpressure_waits_total").increment(1);
    gauge!("simcorp_ingest_backpressure_active").set(1.0);
}

pub(crate) fn backpressure_released() {
    gauge!("simcorp_ingest_backpressure_active").set(0.0);
}

pub(crate) fn batch_committed(records: usize, points: usize, c: &crate::Committed, secs: f64) {
    let destination = if c.fallback { "fallback" } else { "primary" };
    counter!("simcorp_ingest_batches_total", "destination" => destination).increment(1);
    counter!("simcorp_ingest_points_committed_total", "destination" => destination)
        .increment(points as u64);
    counter!("simcorp_ingest_points_duplicate_total").increment(c.points_duplicate);
    histogram!("simcorp_ingest_batch_records").record(records as f64);
    histogram!("simcorp_ingest_batch_write_seconds").record(secs);
}

pub(crate) fn write_failed() {
    counter!("simcorp_ingest_write_failures_total").increment(1);
}

pub(crate) fn acks_released(n: usize) {
    counter!("simcorp_ingest_acks_released_total").increment(n as u64);
}
