//! Handing envelopes from the MQTT side to the writers and back to the acker: the pipeline's
//! own cost (lock-free queue, wake-ups, batching, ordered release) with a sink and an acker that
//! do nothing. Throughput is per message; each iteration pushes 10,000 messages through a fresh
//! pipeline and drains it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use model::Batch;
use pipeline::{Acker, Committed, Config, Envelope, Sink, SinkError};

const MESSAGES: usize = 10_000;

struct NullSink;

impl Sink for NullSink {
    async fn write(&self, batch: &Batch) -> Result<Committed, SinkError> {
        Ok(Committed {
            fallback: false,
            points_inserted: batch.points.len() as u64,
            points_duplicate: 0,
        })
    }
}

struct NullAcker;

impl Acker<u64> for NullAcker {
    async fn ack(&mut self, tokens: Vec<u64>) {
        std::hint::black_box(tokens);
    }
}

fn handoff(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let point = benches::telemetry_batch("roaster-1", "roast-1", 0, 1, model::now_ms());
    let mut group = c.benchmark_group("queue_handoff");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function("one_point_messages", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let point = point.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (intake, pipeline) =
                        pipeline::start(Config::default(), Arc::new(NullSink), NullAcker);
                    let started = Instant::now();
                    for seq in 0..MESSAGES as u64 {
                        let envelope = Envelope {
                            records: point.clone(),
                            ack: Some(seq),
                            received: Instant::now(),
                        };
                        let _ = intake.send(envelope).await;
                    }
                    let _ = pipeline.drain().await;
                    total += started.elapsed();
                }
                total
            }
        })
    });
    group.finish();
}

criterion_group!(benches, handoff);
criterion_main!(benches);
