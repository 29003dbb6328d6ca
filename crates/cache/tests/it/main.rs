//! The cache's behaviour, one suite for both backends, plus Redis outages.
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.

use std::time::Duration;

use cache::{Cache, Config, Update};
use model::{Channels, Point, SessionEvent, SessionState};
use secrecy::SecretString;
use testkit::PrivateRedis;

fn point(device: &str, seq: u64, ts_ms: i64) -> Point {
    Point {
        device_id: device.into(),
        session: "s-1".into(),
        seq,
        ts_ms,
        channels: Channels {
            bt: Some(seq as f64),
            extra: [("ror".to_string(), 9.5)].into(),
            ..Channels::default()
        },
        received_ms: ts_ms + 3,
    }
}

fn session(device: &str, session: &str, state: SessionState) -> SessionEvent {
    SessionEvent {
        device_id: device.into(),
        session: session.into(),
        state,
        ts_ms: 1_000,
        metadata: [("bean".to_string(), "kenya".into())].into_iter().collect(),
        received_ms: 1_000,
    }
}

async fn latest_point_is_the_newest(cache: Cache) {
    let newer = point("r-1", 2, 2_000);
    cache
        .apply(&Update {
            latest: vec![newer.clone()],
            sessions: vec![],
        })
        .await
        .unwrap();
    // An older point arriving later (redelivery, racing replica) must not move it backwards.
    cache
        .apply(&Update {
            latest: vec![point("r-1", 1, 1_000)],
            sessions: vec![],
        })
        .await
        .unwrap();
    assert_eq!(cache.latest("r-1").await.unwrap(), Some(newer));
    assert_eq!(cache.latest("r-unknown").await.unwrap(), None);

    // Points sharing a ts are ordered by seq, as the store orders them, whatever order their
    // batches commit in — also beyond 2^53, where a double could not tell them apart.
    for (device, high, low) in [("r-3", 7, 6), ("r-4", (1 << 53) + 1, 1 << 53)] {
        for seq in [high, low] {
            let update = Update {
                latest: vec![point(device, seq, 5_000)],
                sessions: vec![],
            };
            cache.apply(&update).await.unwrap();
        }
        let latest = cache.latest(device).await.unwrap().unwrap();
        assert_eq!(latest.seq, high, "{device}");
    }
}

async fn sessions_open_and_close(cache: Cache) {
    let start = session("r-2", "s-a", SessionState::Start);
    cache
        .apply(&Update {
            latest: vec![],
            sessions: vec![start],
        })
        .await
        .unwrap();
    let active = cache.active_session("r-2").await.unwrap().unwrap();
    assert_eq!(
        (active.session.as_str(), active.metadata["bean"].as_str()),
        ("s-a", Some("kenya"))
    );
    // The end of another session does not close this one.
    let other_end = session("r-2", "s-old", SessionState::End);
    cache
        .apply(&Update {
            latest: vec![],
            sessions: vec![other_end],
        })
        .await
        .unwrap();
    assert!(cache.active_session("r-2").await.unwrap().is_some());
    let end = session("r-2", "s-a", SessionState::End);
    cache
        .apply(&Update {
            latest: vec![],
            sessions: vec![end],
        })
        .await
        .unwrap();
    assert_eq!(cache.active_session("r-2").await.unwrap(), None);
}

fn redis_config(url: String) -> Config {
    Config {
        url: Some(SecretString::from(url)),
        key_prefix: testkit::unique_name("simcorp_test") + ":",
        ..Config::default()
    }
}

macro_rules! cache_suite {
    ($($case:ident),*) => {
        mod memory {
            $(#[tokio::test] async fn $case() { super::$case(cache::Cache::new(&cache::Config::default()).unwrap()).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $case() {
                if !testkit::require(testkit::Server::Redis, stringify!($case)) { return; }
                let cache = cache::Cache::new(&super::redis_config(testkit::Server::Redis.url())).unwrap();
                assert_eq!(cache.kind(), "redis");
                super::$case(cache).await
            })*
        }
    };
}

cache_suite!(latest_point_is_the_newest, sessions_open_and_close);

#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_degrades_and_recovers() {
    let mut redis = PrivateRedis::start().await;
    let cache = Cache::new(&redis_config(redis.url())).unwrap();
    cache.ping().await.unwrap();
    assert!(cache.is_available());

    redis.stop().await;
    let update = Update {
        latest: vec![point("r-9", 1, 1_000)],
        sessions: vec![],
    };
    let started = std::time::Instant::now();
    assert!(cache.apply(&update).await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a down cache must fail fast"
    );
    assert!(!cache.is_available());

    // Redis comes back empty; the next update refills it.
    redis.start_again().await;
    testkit::eventually(
        Duration::from_secs(10),
        "the cache to accept writes again",
        || {
            let (cache, update) = (cache.clone(), update.clone());
            async move { cache.apply(&update).await.ok() }
        },
    )
    .await;
    assert!(cache.is_available());
    assert_eq!(cache.latest("r-9").await.unwrap().map(|p| p.seq), Some(1));
}
