//! A device flooding ingestion is limited on its own, counted, and kept out of the dead-letter
//! table beyond one row per episode; the other devices are served as usual.

use std::time::{Duration, Instant};

use testkit::Server;

use crate::helpers::{Stack, pg_count, point, publish_points, publish_raw, telemetry_topic};

async fn dead_letters(s: &Stack, device: &str, code: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters WHERE device_id = $1 AND reason_code = $2",
    )
    .bind(device)
    .bind(code)
    .fetch_one(&s.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_device_is_limited_alone_and_counted() {
    if !testkit::require(Server::Postgres, "a_flooding_device_is_limited_alone") {
        return;
    }
    // 50 points/s with bursts of 100: far above a roaster, far below this flood.
    let s = Stack::start_with(|c| {
        c.ingestion.device_points_per_sec = 50;
        c.ingestion.device_burst_points = 100;
    })
    .await;
    let started = Instant::now();

    let flood: Vec<_> = (0..1_000)
        .map(|i| point("roaster-flood", "s-1", i))
        .collect();
    publish_points(&s.device, &flood, 1).await;
    for _ in 0..300 {
        publish_raw(
            &s.device,
            &telemetry_topic("roaster-garbage"),
            &b"\x00garbage{"[..],
        )
        .await;
    }
    // A well-behaved device, 20 points/s, publishing while the flood is being shed.
    let calm: Vec<_> = (0..40).map(|i| point("roaster-calm", "s-1", i)).collect();
    for p in calm.chunks(1) {
        publish_points(&s.device, p, 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(s.device.flush(Duration::from_secs(30)).await);
    crate::helpers::wait_pg_count(&s.pool, "roaster-calm", 40, Duration::from_secs(30)).await;
    // Ingestion acknowledges in order: once the broker has our acks for everything published, it
    // has judged every message. Poll until the shed count stops moving.
    let shed = testkit::eventually(
        Duration::from_secs(30),
        "the shed count to settle",
        || async {
            let metrics = s.app.text("/metrics").await;
            let shed = metric(&metrics, "simcorp_ingestion_shed_points_total");
            let stored = pg_count(&s.pool, "roaster-flood").await;
            (shed + stored as u64 >= 1_000).then_some(shed)
        },
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();

    // The calm device lost nothing.
    assert_eq!(pg_count(&s.pool, "roaster-calm").await, 40);
    // The flood got its burst and its rate, no more; every other point was counted as shed.
    let stored = pg_count(&s.pool, "roaster-flood").await as u64;
    let allowed = 100 + (50.0 * elapsed) as u64;
    assert!(
        (100..=allowed).contains(&stored),
        "{stored} flood points stored, allowed {allowed} in {elapsed:.1} s"
    );
    assert!(shed >= 1_000 - stored, "shed {shed}, stored {stored}");
    // One dead letter per episode, not one per shed message.
    let episodes = dead_letters(&s, "roaster-flood", "rate_limited").await;
    assert!(
        (1..=3).contains(&episodes),
        "{episodes} rate_limited dead letters"
    );
    // Garbage counts against the limit too: its dead letters are bounded the same way.
    let garbage = dead_letters(&s, "roaster-garbage", "malformed_json").await as u64;
    assert!(
        (100..=allowed).contains(&garbage),
        "{garbage} garbage dead letters"
    );
    assert_eq!(dead_letters(&s, "roaster-garbage", "rate_limited").await, 1);

    assert_eq!(s.app.status("/health").await, 200);
    assert_eq!(s.app.status("/ready").await, 200);
    s.app.stop().await;
}

/// The value of an unlabelled counter in Prometheus text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0, |v| v as u64)
}
