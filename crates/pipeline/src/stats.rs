//! What the pipeline has done, for `/stats`, `/metrics` and the load harness.
//!
//! The one record of what was committed: `/stats` serves a [`StatsSnapshot`] of it, `/metrics`
//! renders it (`crate::metrics::render`), and nothing else counts commits or times writes — the
//! store counts only what it alone knows (replays, its backlog, whether the primary is up).
//!
//! Latencies are kept in HDR histograms (microseconds, 3 significant digits): exact percentiles
//! at any load, which a bucketed histogram cannot give. They are updated once per committed
//! batch under a mutex; the per-message path touches only atomics.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::Committed;

/// Highest latency tracked exactly: one hour. Larger values are clamped (and are outages).
const MAX_US: u64 = 3_600_000_000;

#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) messages_in: AtomicU64,
    pub(crate) points_in: AtomicU64,
    /// Committed batches and their points by where they went, each counter only ever growing
    /// (a total minus a part could go down between two reads, which Prometheus takes for a
    /// restart).
    pub(crate) batches: ByDestination,
    pub(crate) points: ByDestination,
    pub(crate) points_duplicate: AtomicU64,
    pub(crate) sessions_committed: AtomicU64,
    pub(crate) events_committed: AtomicU64,
    pub(crate) dead_letters_committed: AtomicU64,
    pub(crate) write_failures: AtomicU64,
    pub(crate) acks_released: AtomicU64,
    pub(crate) latency: Mutex<Latencies>,
}

#[derive(Debug, Default)]
pub(crate) struct ByDestination {
    pub(crate) primary: AtomicU64,
    pub(crate) fallback: AtomicU64,
}

impl ByDestination {
    fn add(&self, fallback: bool, n: u64) {
        let counter = if fallback {
            &self.fallback
        } else {
            &self.primary
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn total(&self) -> u64 {
        self.primary.load(Ordering::Relaxed) + self.fallback.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub(crate) struct Latencies {
    /// From a point's `ts` (stamped by the device when it samples and publishes) to the commit.
    pub(crate) publish_to_commit: Histogram<u64>,
    /// From the message's arrival at ingestion to the commit: the part ingestion controls.
    pub(crate) receive_to_commit: Histogram<u64>,
    /// One successful `Sink::write`, from its start to its commit.
    pub(crate) batch_write: Histogram<u64>,
    /// Records per committed batch (not a latency: a count).
    pub(crate) batch_records: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            publish_to_commit: histogram(),
            receive_to_commit: histogram(),
            batch_write: histogram(),
            batch_records: Histogram::new_with_bounds(1, 10_000_000, 2)
                .expect("constant histogram bounds are valid"),
        }
    }
}

/// Percentiles of one latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySnapshot {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencySnapshot {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySnapshot {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// The latency histograms in HDR V2 deflate encoding, base64; values in `unit`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EncodedLatency {
    pub unit: &'static str,
    pub publish_to_commit: String,
    pub receive_to_commit: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatsSnapshot {
    pub messages_in: u64,
    pub points_in: u64,
    pub queue_depth: usize,
    pub batches: u64,
    pub points_committed: u64,
    pub points_fallback: u64,
    pub points_duplicate: u64,
    pub sessions_committed: u64,
    /// Roast events in committed batches.
    pub events_committed: u64,
    pub dead_letters_committed: u64,
    pub write_failures: u64,
    pub acks_released: u64,
    pub mean_batch_records: f64,
    pub publish_to_commit: LatencySnapshot,
    pub receive_to_commit: LatencySnapshot,
    pub batch_write: LatencySnapshot,
}

impl Stats {
    pub(crate) fn message_in(&self, points: usize) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.points_in.fetch_add(points as u64, Ordering::Relaxed);
    }

    /// Records a committed batch: counters, the write's duration (`took`), and the latency of
    /// every point in it.
    pub(crate) fn committed(
        &self,
        batch: &model::Batch,
        received: &[Instant],
        committed: &Committed,
        took: Duration,
    ) {
        let relaxed = Ordering::Relaxed;
        self.batches.add(committed.fallback, 1);
        self.points
            .add(committed.fallback, batch.points.len() as u64);
        self.points_duplicate
            .fetch_add(committed.points_duplicate, relaxed);
        self.sessions_committed
            .fetch_add(batch.sessions.len() as u64, relaxed);
        self.events_committed
            .fetch_add(batch.events.len() as u64, relaxed);
        self.dead_letters_committed
            .fetch_add(batch.dead_letters.len() as u64, relaxed);

        let now = Instant::now();
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let Ok(mut lat) = self.latency.lock() else {
            return;
        };
        for p in &batch.points {
            // ts has millisecond resolution and is truncated by the device, so this errs on
            // the side of reporting up to 1 ms too much, never too little.
            let us = (now_us - p.ts_ms.saturating_mul(1000)).clamp(0, MAX_US as i64) as u64;
            let _ = lat.publish_to_commit.record(us.max(1));
        }
        for r in received {
            let us = now.saturating_duration_since(*r).as_micros() as u64;
            let _ = lat.receive_to_commit.record(us.clamp(1, MAX_US));
        }
        let _ = lat
            .batch_write
            .record((took.as_micros() as u64).clamp(1, MAX_US));
        let _ = lat.batch_records.record((batch.len() as u64).max(1));
    }

    pub fn snapshot(&self, queue_depth: usize) -> StatsSnapshot {
        let relaxed = Ordering::Relaxed;
        let (publish, receive, write, mean_batch) = match self.latency.lock() {
            Ok(l) => (
                LatencySnapshot::of(&l.publish_to_commit),
                LatencySnapshot::of(&l.receive_to_commit),
                LatencySnapshot::of(&l.batch_write),
                l.batch_records.mean(),
            ),
            Err(_) => Default::default(),
        };
        StatsSnapshot {
            messages_in: self.messages_in.load(relaxed),
            points_in: self.points_in.load(relaxed),
            queue_depth,
            batches: self.batches.total(),
            points_committed: self.points.total(),
            points_fallback: self.points.fallback.load(relaxed),
            points_duplicate: self.points_duplicate.load(relaxed),
            sessions_committed: self.sessions_committed.load(relaxed),
            events_committed: self.events_committed.load(relaxed),
            dead_letters_committed: self.dead_letters_committed.load(relaxed),
            write_failures: self.write_failures.load(relaxed),
            acks_released: self.acks_released.load(relaxed),
            mean_batch_records: mean_batch,
            publish_to_commit: publish,
            receive_to_commit: receive,
            batch_write: write,
        }
    }

    /// Both latency histograms, serialized (HDR V2 + deflate, base64) so that a load harness
    /// can take one snapshot before and one after an interval and subtract them: exact
    /// percentiles of that interval alone, from a service that has been running for days.
    pub fn encoded(&self) -> Option<EncodedLatency> {
        use base64::Engine as _;
        use hdrhistogram::serialization::{Serializer as _, V2DeflateSerializer};
        // Copy under the lock, compress outside it: the commit path records into these
        // histograms, and a harness asks for them every second.
        let (publish, receive) = {
            let lat = self.latency.lock().ok()?;
            (lat.publish_to_commit.clone(), lat.receive_to_commit.clone())
        };
        let encode = |h: &Histogram<u64>| {
            let mut buf = Vec::new();
            V2DeflateSerializer::new().serialize(h, &mut buf).ok()?;
            Some(base64::engine::general_purpose::STANDARD.encode(buf))
        };
        Some(EncodedLatency {
            unit: "us",
            publish_to_commit: encode(&publish)?,
            receive_to_commit: encode(&receive)?,
        })
    }

    /// Appends what the pipeline has done to Prometheus exposition text.
    pub fn render_prometheus(&self, out: &mut String) {
        crate::metrics::render(self, out);
    }
}
