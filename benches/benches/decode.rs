//! Decoding and validating what devices publish: one point per message, frames of 10 and 100
//! points (throughput is per point), and a session message.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use model::{Limits, Point, decode_session, decode_telemetry};

fn decode(c: &mut Criterion) {
    let now = model::now_ms();
    let limits = Limits::default();
    let batch = benches::telemetry_batch("roaster-1", "roast-1", 0, 100, now);
    let mut group = c.benchmark_group("decode");

    let single = batch.points[0].to_json();
    group.throughput(Throughput::Elements(1));
    group.bench_function("point", |b| {
        b.iter(|| decode_telemetry("roaster-1", black_box(&single), now, &limits))
    });

    for n in [10usize, 100] {
        let frame = Point::frame_json(&batch.points[..n]);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("frame", n), &frame, |b, frame| {
            b.iter(|| decode_telemetry("roaster-1", black_box(frame), now, &limits))
        });
    }

    let session = format!(
        r#"{{"session":"roast-1","state":"start","ts":{now},"bean":"kenya","batch_g":250}}"#
    );
    group.throughput(Throughput::Elements(1));
    group.bench_function("session", |b| {
        b.iter(|| decode_session("roaster-1", black_box(session.as_bytes()), now, &limits))
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
