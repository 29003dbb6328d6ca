//! What signing telemetry costs (`keys`): Ed25519 signatures of a 10-point frame by a key in
//! SoftHSM2 (through PKCS#11) and by a key in the file keystore, and their verification (with
//! the key decoded at each call, and prepared once as ingestion holds it).
//! Throughput is signatures (or verifications) per second. Without SoftHSM2 the HSM case is
//! skipped, loudly.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use model::Point;
use secrecy::SecretString;
use testkit::softhsm::SoftHsmToken;

fn signing(c: &mut Criterion) {
    let batch = benches::telemetry_batch("roaster-1", "roast-1", 0, 10, model::now_ms());
    let frame = Point::frame_json(&batch.points);
    let mut group = c.benchmark_group("signing");
    group.throughput(Throughput::Elements(1));

    // Declared before the keystore that uses it, so dropped after it.
    let token = SoftHsmToken::create("signing/hsm");
    if let Some(token) = &token {
        let store = keys::Keystore::open(&keys::Config {
            enabled: true,
            module: token.module.clone(),
            token: token.label.clone(),
            pin: Some(SecretString::from(token.pin.clone())),
            dir: PathBuf::new(),
        })
        .unwrap();
        let key = store.generate("bench").unwrap();
        group.bench_function("hsm_sign", |b| {
            b.iter(|| key.sign(black_box(&frame)).unwrap())
        });
    }

    let dir = tempfile::tempdir().unwrap();
    let key = keys::Keystore::file(dir.path())
        .unwrap()
        .generate("bench")
        .unwrap();
    group.bench_function("file_sign", |b| {
        b.iter(|| key.sign(black_box(&frame)).unwrap())
    });

    let public = key.public_key();
    let sig = key.sign(&frame).unwrap();
    group.bench_function("verify", |b| {
        b.iter(|| keys::verify(&public, black_box(&frame), &sig))
    });
    // As ingestion verifies: the key's point decompressed once.
    let prepared = public.verifying_key().unwrap();
    group.bench_function("verify_prepared", |b| {
        b.iter(|| prepared.verify(black_box(&frame), &sig))
    });
    group.finish();
}

criterion_group!(benches, signing);
criterion_main!(benches);
