//! Criterion benchmarks (`cargo bench -p benches`) and the data they run on. The benchmarks
//! themselves live in `benches/`; this library only builds realistic inputs, so every benchmark
//! measures the same shape of data. Not a test suite: correctness is tested in each crate.

use model::{Batch, Channels, Point};

/// A batch of `n` points of one roast as the pipeline would hand it to a store: five named
/// channels, two extra ones, consecutive `seq` from `first_seq`, one point per 500 ms ending
/// at `now_ms`.
pub fn telemetry_batch(
    device_id: &str,
    session: &str,
    first_seq: u64,
    n: usize,
    now_ms: i64,
) -> Batch {
    let points = (0..n)
        .map(|i| {
            let seq = first_seq + i as u64;
            let t = seq as f64;
            let mut channels = Channels {
                bt: Some(150.0 + t * 0.013),
                et: Some(210.5 + t * 0.007),
                gas: Some(62.5),
                air: Some(40.0),
                drum: Some(55.0),
                ..Channels::default()
            };
            channels
                .extra
                .insert("inlet".to_owned(), 260.25 - t * 0.001);
            channels.extra.insert("ror".to_owned(), 9.8);
            Point {
                device_id: device_id.to_owned(),
                session: session.to_owned(),
                seq,
                ts_ms: now_ms - (n - i) as i64 * 500,
                channels,
                received_ms: now_ms,
            }
        })
        .collect();
    Batch {
        points,
        ..Batch::default()
    }
}
