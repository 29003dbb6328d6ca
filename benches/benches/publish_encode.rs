//! The sim-publisher's encode: one engine sample into the device contract's JSON, as a single
//! point and as frames of 10 and 100 points (throughput is per point).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use model::Point;

fn encode(c: &mut Criterion) {
    let batch = benches::telemetry_batch(
        "sim-roaster-1",
        "sim-roaster-1-r0-1",
        0,
        100,
        model::now_ms(),
    );
    let mut group = c.benchmark_group("publish_encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("point", |b| {
        b.iter(|| black_box(&batch.points[0]).to_json())
    });
    for n in [10usize, 100] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new("frame", n),
            &batch.points[..n],
            |b, points| b.iter(|| Point::frame_json(black_box(points))),
        );
    }
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
