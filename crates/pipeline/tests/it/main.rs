//! The pipeline's guarantees, driven through its public surface with an in-memory sink.
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use model::{Batch, Channels, Point};
use pipeline::{Acker, Committed, Config, Envelope, Intake, Sink, SinkError};
use tokio::sync::Semaphore;

/// A sink that remembers what it stored, can be slowed, gated or made to fail.
#[derive(Default)]
struct MemorySink {
    stored: Mutex<Vec<u64>>,
    batch_sizes: Mutex<Vec<usize>>,
    /// Fail this many writes before succeeding.
    failures_left: AtomicUsize,
    /// Random delay up to this many µs per write, so writes finish out of order.
    jitter_us: u64,
    /// When set, every write waits for a permit.
    gate: Option<Arc<Semaphore>>,
}

impl Sink for MemorySink {
    async fn write(&self, batch: &Batch) -> Result<Committed, SinkError> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        if self.jitter_us > 0 {
            let us = rand::random_range(0..self.jitter_us);
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("database unavailable".into());
        }
        let mut stored = self.stored.lock().unwrap();
        stored.extend(batch.points.iter().map(|p| p.seq));
        self.batch_sizes.lock().unwrap().push(batch.len());
        Ok(Committed {
            fallback: false,
            points_inserted: batch.points.len() as u64,
            points_duplicate: 0,
        })
    }
}

/// Tokens from here on belong to messages that carry no records.
const NO_RECORDS: u64 = 1 << 40;

/// An acker that checks each token's point was stored before the token arrived.
struct CheckingAcker {
    sink: Arc<MemorySink>,
    acked: Arc<Mutex<Vec<u64>>>,
}

impl Acker<u64> for CheckingAcker {
    async fn ack(&mut self, tokens: Vec<u64>) {
        let stored: HashSet<u64> = self.sink.stored.lock().unwrap().iter().copied().collect();
        for t in tokens.iter().filter(|&&t| t < NO_RECORDS) {
            assert!(
                stored.contains(t),
                "token {t} acknowledged before its point was stored"
            );
        }
        self.acked.lock().unwrap().extend(tokens);
    }
}

fn envelope(seq: u64) -> Envelope<u64> {
    Envelope {
        records: Batch {
            points: vec![Point {
                device_id: "r-1".into(),
                session: "s".into(),
                seq,
                ts_ms: model::now_ms(),
                channels: Channels {
                    bt: Some(seq as f64),
                    ..Channels::default()
                },
                received_ms: model::now_ms(),
            }],
            ..Batch::default()
        },
        ack: Some(seq),
        received: Instant::now(),
    }
}

struct Harness {
    intake: Intake<u64>,
    pipeline: pipeline::Pipeline<u64>,
    sink: Arc<MemorySink>,
    acked: Arc<Mutex<Vec<u64>>>,
}

fn start(config: Config, sink: MemorySink) -> Harness {
    let sink = Arc::new(sink);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let acker = CheckingAcker {
        sink: sink.clone(),
        acked: acked.clone(),
    };
    let (intake, pipeline) = pipeline::start(config, sink.clone(), acker);
    Harness {
        intake,
        pipeline,
        sink,
        acked,
    }
}

async fn send_all(intake: &Intake<u64>, n: u64) {
    for seq in 0..n {
        intake.send(envelope(seq)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_acked_once_in_order_after_it_is_stored() {
    let h = start(
        Config {
            writers: 4,
            batch_max_records: 50,
            ..Config::default()
        },
        MemorySink {
            jitter_us: 2_000,
            ..MemorySink::default()
        },
    );
    send_all(&h.intake, 20_000).await;
    h.pipeline.drain().await.unwrap();
    let acked = h.acked.lock().unwrap().clone();
    assert_eq!(
        acked,
        (0..20_000).collect::<Vec<_>>(),
        "acks must be complete and in order"
    );
    let mut stored = h.sink.stored.lock().unwrap().clone();
    stored.sort_unstable();
    assert_eq!(stored, (0..20_000).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_makes_the_producer_wait_and_drops_nothing() {
    let gate = Arc::new(Semaphore::new(0));
    let h = start(
        Config {
            queue_capacity: 16,
            batch_max_records: 4,
            writers: 1,
            ..Config::default()
        },
        MemorySink {
            gate: Some(gate.clone()),
            ..MemorySink::default()
        },
    );
    let intake = h.intake.clone();
    let producer = tokio::spawn(async move { send_all(&intake, 200).await });
    // The sink admits no write, so the producer must end up waiting on the full queue.
    testkit::eventually(Duration::from_secs(5), "the queue to fill", || async {
        (h.intake.depth() == 16).then_some(())
    })
    .await;
    assert!(
        !producer.is_finished(),
        "the producer should be held back, not finished"
    );
    assert!(
        h.acked.lock().unwrap().is_empty(),
        "nothing may be acked before it is stored"
    );

    gate.add_permits(1_000);
    producer.await.unwrap();
    h.pipeline.drain().await.unwrap();
    assert_eq!(*h.acked.lock().unwrap(), (0..200).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_are_retried_until_they_succeed() {
    let h = start(
        Config {
            retry_min_ms: 1,
            retry_max_ms: 5,
            ..Config::default()
        },
        MemorySink {
            failures_left: AtomicUsize::new(5),
            ..MemorySink::default()
        },
    );
    send_all(&h.intake, 1_000).await;
    let stats = h.pipeline.stats_handle();
    h.pipeline.drain().await.unwrap();
    assert_eq!(*h.acked.lock().unwrap(), (0..1_000).collect::<Vec<_>>());
    let snapshot = stats.snapshot(0);
    assert_eq!(snapshot.write_failures, 5);
    assert_eq!(snapshot.points_committed, 1_000);
}

#[tokio::test]
async fn a_drained_pipeline_refuses_new_messages() {
    let h = start(Config::default(), MemorySink::default());
    send_all(&h.intake, 10).await;
    let intake = h.intake.clone();
    h.pipeline.drain().await.unwrap();
    assert_eq!(h.acked.lock().unwrap().len(), 10);
    assert!(intake.send(envelope(99)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_grow_while_writers_are_busy() {
    let h = start(
        Config {
            writers: 1,
            batch_max_records: 500,
            ..Config::default()
        },
        MemorySink {
            jitter_us: 5_000,
            ..MemorySink::default()
        },
    );
    send_all(&h.intake, 5_000).await;
    h.pipeline.drain().await.unwrap();
    let sizes = h.sink.batch_sizes.lock().unwrap().clone();
    assert!(
        sizes.iter().all(|&s| s <= 500),
        "a batch exceeded the limit: {sizes:?}"
    );
    assert!(
        sizes.len() < 1_000,
        "with one slow writer, records should accumulate into batches: {} batches",
        sizes.len()
    );
}

#[tokio::test]
async fn messages_without_records_are_acked_too() {
    let h = start(Config::default(), MemorySink::default());
    h.intake
        .send(Envelope {
            records: Batch::default(),
            ack: Some(NO_RECORDS),
            received: Instant::now(),
        })
        .await
        .unwrap();
    h.pipeline.drain().await.unwrap();
    assert_eq!(*h.acked.lock().unwrap(), vec![NO_RECORDS]);
}
