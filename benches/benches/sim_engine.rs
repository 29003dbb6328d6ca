//! The roaster simulation: a whole default roast (`simulate`: ~7,000 integration steps, ~700
//! samples), and the engine's cost per sample as sim-publisher drives it (`next_sample`; at
//! 1000 ms each sample is ten integration steps, at 100 ms one). Throughput is per sample.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sim_engine::{RoastConfig, Simulation, simulate};

fn sim_engine(c: &mut Criterion) {
    let mut group = c.benchmark_group("sim_engine");

    let config = RoastConfig::default();
    let samples = simulate(&config).map(|r| r.samples.len()).unwrap_or(0) as u64;
    group.throughput(Throughput::Elements(samples));
    group.bench_function("simulate/default", |b| {
        b.iter(|| simulate(black_box(&config)))
    });

    for interval_ms in [100u64, 1000] {
        let config = RoastConfig {
            sample_interval_ms: interval_ms,
            ..RoastConfig::default()
        };
        let samples = simulate(&config).map(|r| r.samples.len()).unwrap_or(0) as u64;
        group.throughput(Throughput::Elements(samples));
        group.bench_with_input(
            BenchmarkId::new("next_sample", format!("{interval_ms}ms")),
            &config,
            |b, config| {
                b.iter_batched(
                    || Simulation::new(config).ok(),
                    |sim| {
                        let Some(mut sim) = sim else { return };
                        while let Some(sample) = sim.next_sample() {
                            black_box(sample);
                        }
                    },
                    BatchSize::SmallInput,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(benches, sim_engine);
criterion_main!(benches);
