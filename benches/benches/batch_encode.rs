//! Encoding a batch of points for PostgreSQL, without the round trip: the unnest column arrays,
//! at 10, 100 and 1000 points.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use store::pg::encode::UnnestColumns;

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_encode");
    for n in [10usize, 100, 1000] {
        let batch = benches::telemetry_batch("roaster-1", "roast-1", 0, n, model::now_ms());
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("unnest_columns", n), &batch, |b, batch| {
            b.iter(|| UnnestColumns::from(black_box(batch.points.as_slice())))
        });
    }
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
