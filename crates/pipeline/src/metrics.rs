//! Every metric the pipeline emits, in one place (names: `simcorp_pipeline_*`).
//!
//! Two kinds. What the pipeline has done — messages in, batches and points committed, write
//! failures, acks, latencies — is kept in [`Stats`] (which `/stats` also serves) and rendered
//! from it by `render`: one record, two views. What it is doing now — queue depth,
//! backpressure — goes through the `metrics` facade.

use std::sync::atomic::Ordering;

use kit::metrics::{render_counter, render_hdr_histogram, render_hdr_latency};
use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};

use crate::Stats;

const QUEUE_DEPTH: &str = "simcorp_pipeline_queue_depth_messages";
const BACKPRESSURE_WAITS: &str = "simcorp_pipeline_backpressure_waits_total";
const BACKPRESSURE_ACTIVE: &str = "simcorp_pipeline_backpressure_active";

/// Upper bounds of the records-per-batch histogram: around the default `batch_max_records`.
const BATCH_RECORDS_BUCKETS: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0,
];

/// Describes the facade's metrics of the pipeline (those rendered from [`Stats`] carry their
/// help text with them).
pub fn describe() {
    describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Messages waiting in the pipeline's queue for the batcher."
    );
    describe_counter!(
        BACKPRESSURE_WAITS,
        Unit::Count,
        "Times a producer found the queue full and waited (the MQTT client stopped reading)."
    );
    describe_gauge!(
        BACKPRESSURE_ACTIVE,
        "1 while a producer waits for room in the queue, else 0."
    );
}

pub(crate) fn queue_depth(depth: usize) {
    gauge!(QUEUE_DEPTH).set(depth as f64);
}

pub(crate) fn backpressure_engaged() {
    counter!(BACKPRESSURE_WAITS).increment(1);
    gauge!(BACKPRESSURE_ACTIVE).set(1.0);
}

pub(crate) fn backpressure_released() {
    gauge!(BACKPRESSURE_ACTIVE).set(0.0);
}

/// Appends what `stats` recorded to Prometheus exposition text.
pub(crate) fn render(stats: &Stats, out: &mut String) {
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let by_destination = |b: &crate::stats::ByDestination| {
        [
            ("destination=\"primary\"", load(&b.primary)),
            ("destination=\"fallback\"", load(&b.fallback)),
        ]
    };
    render_counter(
        out,
        "simcorp_pipeline_messages_in_total",
        "Messages handed to the pipeline.",
        &[("", load(&stats.messages_in))],
    );
    render_counter(
        out,
        "simcorp_pipeline_points_in_total",
        "Points in the messages handed to the pipeline.",
        &[("", load(&stats.points_in))],
    );
    render_counter(
        out,
        "simcorp_pipeline_batches_committed_total",
        "Batches committed, by destination (primary, or the fallback while PostgreSQL is down).",
        &by_destination(&stats.batches),
    );
    render_counter(
        out,
        "simcorp_pipeline_points_committed_total",
        "Points in committed batches, by destination; redeliveries absorbed included.",
        &by_destination(&stats.points),
    );
    render_counter(
        out,
        "simcorp_pipeline_points_duplicate_total",
        "Points in committed batches that were already stored (redeliveries).",
        &[("", load(&stats.points_duplicate))],
    );
    render_counter(
        out,
        "simcorp_pipeline_sessions_committed_total",
        "Session events in committed batches.",
        &[("", load(&stats.sessions_committed))],
    );
    render_counter(
        out,
        "simcorp_pipeline_events_committed_total",
        "Roast events in committed batches.",
        &[("", load(&stats.events_committed))],
    );
    render_counter(
        out,
        "simcorp_pipeline_dead_letters_committed_total",
        "Dead letters in committed batches.",
        &[("", load(&stats.dead_letters_committed))],
    );
    render_counter(
        out,
        "simcorp_pipeline_write_failures_total",
        "Batch writes that failed and were retried.",
        &[("", load(&stats.write_failures))],
    );
    render_counter(
        out,
        "simcorp_pipeline_acks_released_total",
        "Acknowledgement tokens handed to the acker after their batch committed.",
        &[("", load(&stats.acks_released))],
    );
    let Ok(lat) = stats.latency.lock() else {
        return;
    };
    render_hdr_latency(
        out,
        "simcorp_pipeline_publish_to_commit_seconds",
        "From a point's ts (stamped by the device at publish) to the commit of its batch.",
        &lat.publish_to_commit,
    );
    render_hdr_latency(
        out,
        "simcorp_pipeline_receive_to_commit_seconds",
        "From a message's arrival at ingestion to the commit of its batch.",
        &lat.receive_to_commit,
    );
    render_hdr_latency(
        out,
        "simcorp_pipeline_batch_write_seconds",
        "Duration of one successful batch write, from its start to its commit.",
        &lat.batch_write,
    );
    render_hdr_histogram(
        out,
        "simcorp_pipeline_batch_records",
        "Records (points, session events, dead letters) per committed batch.",
        &lat.batch_records,
        BATCH_RECORDS_BUCKETS,
        1.0,
    );
}
