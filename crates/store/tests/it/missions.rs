//! The mission queue, the same on both backends: one mission per idempotency key; claims by
//! priority, then age, of the kinds asked for, never before `not_before` or after the deadline;
//! only the lease holder finishes a mission; failures and expired leases retry with backoff
//! until the last attempt, which leaves a dead mission with its reasons; concurrent claimers
//! never share a mission.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use store::{MissionsStore, NewMission, Retry};

const T0: i64 = 1_000_000;

fn mission(id: &str, kind: &str, priority: i32) -> NewMission {
    NewMission {
        id: id.into(),
        kind: kind.into(),
        payload: format!(r#"{{"for":"{id}"}}"#),
        priority,
        idempotency_key: None,
        max_attempts: 3,
        not_before_ms: T0,
        deadline_ms: None,
        trace_id: None,
    }
}

fn kinds(k: &[&str]) -> Vec<String> {
    k.iter().map(|s| (*s).to_owned()).collect()
}

async fn submitting_a_key_twice_makes_one_mission(store: &MissionsStore) {
    let keyed = NewMission {
        idempotency_key: Some("report:roast-1".into()),
        ..mission("m-1", "report", 0)
    };
    let (first, created) = store.submit(&keyed, T0).await.unwrap();
    assert!(created);
    assert_eq!((first.state.as_str(), first.attempts), ("queued", 0));
    let again = NewMission {
        id: "m-2".into(),
        ..keyed.clone()
    };
    let (second, created) = store.submit(&again, T0 + 5).await.unwrap();
    assert!(!created);
    assert_eq!(second.id, "m-1");
    // Without a key, every submission is a mission of its own.
    store
        .submit(&mission("m-3", "report", 0), T0)
        .await
        .unwrap();
    store
        .submit(&mission("m-4", "report", 0), T0)
        .await
        .unwrap();
    assert_eq!(store.list(None, 100).await.unwrap().len(), 3);
}

async fn claims_go_by_priority_then_age_for_the_kinds_asked(store: &MissionsStore) {
    store
        .submit(&mission("old-low", "report", 0), T0)
        .await
        .unwrap();
    store
        .submit(&mission("new-high", "report", 5), T0 + 10)
        .await
        .unwrap();
    store
        .submit(&mission("old-high", "report", 5), T0 + 5)
        .await
        .unwrap();
    store
        .submit(&mission("other", "eval", 9), T0)
        .await
        .unwrap();
    let later = NewMission {
        not_before_ms: T0 + 60_000,
        ..mission("later", "report", 9)
    };
    store.submit(&later, T0).await.unwrap();

    let mut order = Vec::new();
    while let Some(m) = store
        .claim("w-1", &kinds(&["report"]), "tok", 30_000, T0 + 100)
        .await
        .unwrap()
    {
        assert_eq!((m.state.as_str(), m.attempts), ("running", 1));
        assert_eq!(m.lease_expires_ms, Some(T0 + 100 + 30_000));
        order.push(m.id);
    }
    assert_eq!(order, ["old-high", "new-high", "old-low"]);
    // Not before its time; another kind only when asked for.
    let m = store
        .claim("w-1", &kinds(&["report", "eval"]), "tok", 30_000, T0 + 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.id, "other");
    let m = store
        .claim("w-1", &kinds(&["report"]), "tok", 30_000, T0 + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.id, "later");
}

async fn only_the_lease_holder_finishes_and_failures_retry_until_dead(store: &MissionsStore) {
    let m = NewMission {
        max_attempts: 2,
        ..mission("m-1", "report", 0)
    };
    store.submit(&m, T0).await.unwrap();
    let report = kinds(&["report"]);
    store
        .claim("w-1", &report, "a", 1_000, T0)
        .await
        .unwrap()
        .unwrap();
    assert!(store.heartbeat("m-1", "a", 1_000, T0 + 500).await.unwrap());
    assert!(!store.heartbeat("m-1", "b", 1_000, T0 + 500).await.unwrap());
    assert!(!store.complete("m-1", "b", "{}", T0 + 600).await.unwrap());
    assert_eq!(
        store
            .fail("m-1", "a", "renderer crashed", 5_000, T0 + 700)
            .await
            .unwrap(),
        Some(Retry::Queued {
            not_before_ms: T0 + 5_700
        })
    );
    // Failed once: not again, and not before its backoff.
    assert_eq!(
        store
            .fail("m-1", "a", "again", 5_000, T0 + 800)
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .claim("w-1", &report, "c", 1_000, T0 + 5_000)
            .await
            .unwrap()
            .is_none()
    );
    let m = store
        .claim("w-2", &report, "c", 1_000, T0 + 5_700)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.attempts, 2);
    assert_eq!(
        store
            .fail("m-1", "c", "no such session", 5_000, T0 + 6_000)
            .await
            .unwrap(),
        Some(Retry::Dead)
    );
    let dead = store.get("m-1").await.unwrap().unwrap();
    assert_eq!((dead.state.as_str(), dead.lease_owner), ("dead", None));
    assert!(
        store
            .claim("w-1", &report, "d", 1_000, T0 + 99_000)
            .await
            .unwrap()
            .is_none()
    );
    let attempts: Vec<_> = store
        .attempts("m-1")
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.attempt, a.worker, a.outcome, a.reason))
        .collect();
    assert_eq!(
        attempts,
        [
            (
                1,
                "w-1".into(),
                Some("failed".into()),
                Some("renderer crashed".into())
            ),
            (
                2,
                "w-2".into(),
                Some("failed".into()),
                Some("no such session".into())
            ),
        ]
    );
}

async fn an_expired_lease_is_retried_and_its_worker_cannot_finish(store: &MissionsStore) {
    store
        .submit(&mission("m-1", "report", 0), T0)
        .await
        .unwrap();
    let report = kinds(&["report"]);
    store
        .claim("lost", &report, "a", 1_000, T0)
        .await
        .unwrap()
        .unwrap();
    let backoff = |attempts: i32| 100 * i64::from(attempts);
    assert_eq!(store.expire_leases(T0 + 999, backoff).await.unwrap(), 0);
    assert_eq!(store.expire_leases(T0 + 1_001, backoff).await.unwrap(), 1);
    let requeued = store.get("m-1").await.unwrap().unwrap();
    assert_eq!(
        (requeued.state.as_str(), requeued.not_before_ms),
        ("queued", T0 + 1_101)
    );
    store
        .claim("w-2", &report, "b", 1_000, T0 + 1_101)
        .await
        .unwrap()
        .unwrap();
    // The lost worker comes back: its claim is over.
    assert!(
        !store
            .complete("m-1", "a", r#"{"late":true}"#, T0 + 1_200)
            .await
            .unwrap()
    );
    assert!(
        store
            .complete("m-1", "b", r#"{"report":"r-1"}"#, T0 + 1_300)
            .await
            .unwrap()
    );
    assert!(
        !store.complete("m-1", "b", "{}", T0 + 1_400).await.unwrap(),
        "once"
    );
    let done = store.get("m-1").await.unwrap().unwrap();
    assert_eq!(
        (done.state.as_str(), done.result.as_deref(), done.attempts),
        ("done", Some(r#"{"report":"r-1"}"#), 2)
    );
    let outcomes: Vec<_> = store
        .attempts("m-1")
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [Some("lease_expired".into()), Some("done".into())]
    );
}

async fn a_mission_past_its_deadline_is_dead_not_claimed(store: &MissionsStore) {
    let m = NewMission {
        deadline_ms: Some(T0 + 1_000),
        ..mission("m-1", "report", 0)
    };
    store.submit(&m, T0).await.unwrap();
    let report = kinds(&["report"]);
    assert!(
        store
            .claim("w", &report, "a", 1_000, T0 + 2_000)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.expire_deadlines(T0 + 2_000).await.unwrap(), 1);
    assert_eq!(store.get("m-1").await.unwrap().unwrap().state, "dead");
}

async fn concurrent_claimers_never_share_a_mission(store: &MissionsStore) {
    for n in 0..60 {
        store
            .submit(&mission(&format!("m-{n:02}"), "report", n % 3), T0)
            .await
            .unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..6 {
        let (store, seen) = (store.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let worker = format!("w-{w}");
            while let Some(m) = store
                .claim(&worker, &kinds(&["report"]), &worker, 30_000, T0)
                .await
                .unwrap()
            {
                assert!(store.complete(&m.id, &worker, "{}", T0 + 1).await.unwrap());
                seen.lock().unwrap().push(m.id);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let distinct: HashSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), distinct.len()), (60, 60));
    assert_eq!(store.list(Some("done"), 100).await.unwrap().len(), 60);
}

macro_rules! missions_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = store::MissionsStore::sqlite(dir.path(), &store::SqliteConfig::default())
                        .await
                        .unwrap();
                    super::$test(&store).await;
                    store.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $test() {
                    let name = concat!("missions::postgres::", stringify!($test));
                    if !testkit::require(testkit::Server::Postgres, name) {
                        return;
                    }
                    let db = testkit::TestDatabase::create().await;
                    let store = store::MissionsStore::postgres(&db.url, &store::PostgresConfig::default())
                        .await
                        .unwrap();
                    super::$test(&store).await;
                    store.close().await;
                }
            )*
        }
    };
}

missions_suite!(
    submitting_a_key_twice_makes_one_mission,
    claims_go_by_priority_then_age_for_the_kinds_asked,
    only_the_lease_holder_finishes_and_failures_retry_until_dead,
    an_expired_lease_is_retried_and_its_worker_cannot_finish,
    a_mission_past_its_deadline_is_dead_not_claimed,
    concurrent_claimers_never_share_a_mission,
);
