//! One storage suite, instantiated for SQLite (always) and PostgreSQL (when the shared server
//! runs), so the fallback can never drift from the main path.

use model::{Batch, SessionState};
use serde_json::json;
use store::{SessionQuery, Store, TelemetryQuery, WriteOutcome};

use crate::common::{
    base_ms, dead_letter, events, point, points, roast_event, session_event, sessions,
};

macro_rules! storage_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let backend = crate::common::sqlite().await;
                    super::$test(&backend.store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let name = concat!("postgres::", stringify!($test));
                    let Some(backend) = crate::common::postgres(name).await else {
                        return;
                    };
                    super::$test(&backend.store).await;
                }
            )*
        }
    };
}

storage_suite!(
    points_round_trip_exactly,
    same_batch_twice_is_stored_once,
    duplicates_inside_a_batch_are_stored_once,
    a_replayed_or_regressing_seq_has_a_defined_outcome,
    a_refused_batch_stores_nothing,
    session_lifecycle_is_commutative,
    a_session_without_an_end_stays_active,
    session_listing_filters_and_orders,
    telemetry_ranges_and_ordering,
    latest_point_of_a_device,
    latest_point_follows_the_device_from_session_to_session,
    session_summaries_include_points_without_start,
    dead_letters_round_trip_and_prune,
    roast_events_are_stored_once_and_served_in_time_order,
    empty_and_partial_batches,
);

async fn all_points(store: &Store, session: &str) -> Vec<model::Point> {
    store
        .telemetry(&TelemetryQuery::session(session))
        .await
        .unwrap()
}

async fn points_round_trip_exactly(store: &Store) {
    let t = base_ms();
    let full = point("r-1", "s-1", 1, t);
    let mut sparse = point("r-1", "s-1", 2, t + 500);
    sparse.channels = model::Channels {
        bt: Some(0.0),
        ..model::Channels::default()
    };
    let mut only_extra = point("r-1", "s-1", 3, t + 1000);
    only_extra.channels.bt = None;
    only_extra.channels.et = None;
    only_extra.channels.gas = None;
    only_extra.channels.drum = None;
    only_extra
        .channels
        .extra
        .insert("tiny".into(), f64::MIN_POSITIVE);
    only_extra.channels.extra.insert("neg".into(), -123.456e-7);
    only_extra.received_ms = t + 99_999;
    let batch = points(vec![full, sparse, only_extra]);

    let outcome = store.write(&batch).await.unwrap();
    assert_eq!(
        outcome,
        WriteOutcome {
            points_inserted: 3,
            points_duplicate: 0
        }
    );
    // Exact equality: every f64 bit for bit, NULL channels as None, the received time.
    assert_eq!(all_points(store, "s-1").await, batch.points);
}

async fn same_batch_twice_is_stored_once(store: &Store) {
    let t = base_ms();
    let batch = points(
        (0..50)
            .map(|i| point("r-1", "s-1", i, t + i as i64 * 500))
            .collect(),
    );
    let first = store.write(&batch).await.unwrap();
    assert_eq!((first.points_inserted, first.points_duplicate), (50, 0));
    let again = store.write(&batch).await.unwrap();
    assert_eq!((again.points_inserted, again.points_duplicate), (0, 50));
    assert_eq!(all_points(store, "s-1").await, batch.points);

    // A partial overlap: only the new points count as inserted.
    let overlap = points(
        (40..60)
            .map(|i| point("r-1", "s-1", i, t + i as i64 * 500))
            .collect(),
    );
    let o = store.write(&overlap).await.unwrap();
    assert_eq!((o.points_inserted, o.points_duplicate), (10, 10));
    assert_eq!(all_points(store, "s-1").await.len(), 60);
}

/// What docs/protocol.md ("Identity") promises for a `seq` that comes again or goes backwards.
async fn a_replayed_or_regressing_seq_has_a_defined_outcome(store: &Store) {
    let t = base_ms();
    store
        .write(&points(vec![point("r-1", "s-1", 10, t)]))
        .await
        .unwrap();

    // A replay (same seq, same ts) with other readings: the first write wins, counted as a
    // duplicate.
    let mut replay = point("r-1", "s-1", 10, t);
    replay.channels.bt = Some(999.0);
    let o = store.write(&points(vec![replay])).await.unwrap();
    assert_eq!((o.points_inserted, o.points_duplicate), (0, 1));
    assert_eq!(all_points(store, "s-1").await[0].channels.bt, Some(151.0));

    // A regressing seq is a new identity: stored, and served in device-time order (ts, seq).
    let regressing = point("r-1", "s-1", 5, t + 1_000);
    let o = store.write(&points(vec![regressing])).await.unwrap();
    assert_eq!((o.points_inserted, o.points_duplicate), (1, 0));
    let seqs: Vec<u64> = all_points(store, "s-1")
        .await
        .iter()
        .map(|p| p.seq)
        .collect();
    assert_eq!(seqs, [10, 5]);

    // A seq reused with a different ts breaks the contract; the stored key includes ts, so both
    // readings are kept (documented limitation). A change here must update docs/protocol.md.
    let reused = point("r-1", "s-1", 10, t + 2_000);
    let o = store.write(&points(vec![reused])).await.unwrap();
    assert_eq!((o.points_inserted, o.points_duplicate), (1, 0));
    let seqs: Vec<u64> = all_points(store, "s-1")
        .await
        .iter()
        .map(|p| p.seq)
        .collect();
    assert_eq!(seqs, [10, 5, 10]);
}

async fn duplicates_inside_a_batch_are_stored_once(store: &Store) {
    let t = base_ms();
    let p = point("r-1", "s-1", 7, t);
    let q = point("r-1", "s-1", 8, t + 500);
    let batch = points(vec![p.clone(), q.clone(), p.clone(), p.clone()]);
    let o = store.write(&batch).await.unwrap();
    assert_eq!((o.points_inserted, o.points_duplicate), (2, 2));
    assert_eq!(all_points(store, "s-1").await, vec![p, q]);

    // Same seq on another device or in another session is another point.
    let batch = points(vec![point("r-2", "s-1", 7, t), point("r-1", "s-2", 7, t)]);
    let o = store.write(&batch).await.unwrap();
    assert_eq!((o.points_inserted, o.points_duplicate), (2, 0));
}

async fn a_refused_batch_stores_nothing(store: &Store) {
    let t = base_ms();
    let mut bad = point("r-1", "s-1", 2, t + 500);
    // Outside the contract (the decoder never produces it): the database must refuse it.
    bad.seq = u64::MAX;
    let batch = Batch {
        points: vec![point("r-1", "s-1", 1, t), bad],
        sessions: vec![session_event(
            "r-1",
            "s-1",
            SessionState::Start,
            t,
            json!({}),
        )],
        events: vec![roast_event("r-1", "s-1", roast::EventKind::Charge, t)],
        dead_letters: vec![dead_letter(Some("r-1"), t, None)],
    };
    let err = store.write(&batch).await.unwrap_err();
    assert!(
        !err.is_unavailable(),
        "a data error is not unavailability: {err}"
    );
    // One transaction: nothing of the batch was stored.
    assert!(all_points(store, "s-1").await.is_empty());
    assert!(store.session("s-1").await.unwrap().is_empty());
    assert!(store.dead_letters(10).await.unwrap().is_empty());
    assert!(store.events("s-1").await.unwrap().is_empty());
}

/// docs/protocol.md: ingestion ends no session by time, and a device's next session does not
/// end the one before it.
async fn a_session_without_an_end_stays_active(store: &Store) {
    let t = base_ms();
    let start = |session, ts| {
        sessions(vec![session_event(
            "r-1",
            session,
            SessionState::Start,
            ts,
            json!({}),
        )])
    };
    store.write(&start("s-lost", t)).await.unwrap();
    store.write(&start("s-next", t + 3_600_000)).await.unwrap();
    let active = SessionQuery {
        device_id: Some("r-1".into()),
        active_only: true,
        ..SessionQuery::default()
    };
    let mut ids: Vec<String> = store
        .sessions(&active)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.session)
        .collect();
    ids.sort();
    assert_eq!(ids, ["s-lost", "s-next"]);
}

async fn session_lifecycle_is_commutative(store: &Store) {
    let t = base_ms();
    let ev = |state, ts, meta| sessions(vec![session_event("r-1", "s-1", state, ts, meta)]);
    store
        .write(&ev(
            SessionState::Start,
            t,
            json!({"bean": "kenya", "weight": 10}),
        ))
        .await
        .unwrap();
    let active = SessionQuery {
        active_only: true,
        ..SessionQuery::default()
    };
    assert_eq!(store.sessions(&active).await.unwrap().len(), 1);

    store
        .write(&ev(
            SessionState::End,
            t + 600_000,
            json!({"weight": 12, "result": "ok"}),
        ))
        .await
        .unwrap();
    // A second end and a late start change neither time nor reopen the session.
    store
        .write(&ev(SessionState::End, t + 700_000, json!({})))
        .await
        .unwrap();
    store
        .write(&ev(
            SessionState::Start,
            t + 800_000,
            json!({"note": {"nested": [1, 2]}}),
        ))
        .await
        .unwrap();

    let all = store.sessions(&SessionQuery::default()).await.unwrap();
    assert_eq!(all.len(), 1);
    let s = &all[0];
    assert_eq!((s.device_id.as_str(), s.session.as_str()), ("r-1", "s-1"));
    assert_eq!(s.started_ms, Some(t));
    assert_eq!(s.ended_ms, Some(t + 600_000));
    assert_eq!(
        serde_json::Value::Object(s.metadata.clone()),
        json!({"bean": "kenya", "weight": 12, "result": "ok", "note": {"nested": [1, 2]}})
    );
    assert_eq!(s.updated_ms, t + 800_005);
    assert!(store.sessions(&active).await.unwrap().is_empty());

    // End before start (replayed out of order), several events in one batch: the same row as
    // when they arrive one by one.
    let batch = sessions(vec![
        session_event("r-2", "s-2", SessionState::End, t + 9000, json!({"a": 1})),
        session_event(
            "r-2",
            "s-2",
            SessionState::Start,
            t,
            json!({"a": 2, "b": 3}),
        ),
        session_event("r-2", "s-2", SessionState::Start, t + 1, json!({})),
    ]);
    store.write(&batch).await.unwrap();
    let s2 = store.session("s-2").await.unwrap();
    let r = s2[0].record.as_ref().unwrap();
    assert_eq!((r.started_ms, r.ended_ms), (Some(t), Some(t + 9000)));
    assert_eq!(
        serde_json::Value::Object(r.metadata.clone()),
        json!({"a": 2, "b": 3})
    );
    assert!(store.sessions(&active).await.unwrap().is_empty());
}

async fn session_listing_filters_and_orders(store: &Store) {
    let t = base_ms();
    let batch = sessions(vec![
        session_event("r-1", "old", SessionState::Start, t, json!({})),
        session_event("r-1", "old", SessionState::End, t + 100, json!({})),
        session_event("r-1", "new", SessionState::Start, t + 1000, json!({})),
        session_event("r-2", "mid", SessionState::Start, t + 500, json!({})),
        // Known only by its end.
        session_event("r-2", "ended", SessionState::End, t + 700, json!({})),
    ]);
    store.write(&batch).await.unwrap();
    let ids = |v: Vec<store::SessionRecord>| v.into_iter().map(|s| s.session).collect::<Vec<_>>();

    let all = store.sessions(&SessionQuery::default()).await.unwrap();
    assert_eq!(ids(all), ["new", "ended", "mid", "old"]);

    let r1 = SessionQuery {
        device_id: Some("r-1".into()),
        ..SessionQuery::default()
    };
    assert_eq!(ids(store.sessions(&r1).await.unwrap()), ["new", "old"]);

    let active = SessionQuery {
        active_only: true,
        ..SessionQuery::default()
    };
    assert_eq!(ids(store.sessions(&active).await.unwrap()), ["new", "mid"]);

    let limited = SessionQuery {
        limit: 2,
        ..SessionQuery::default()
    };
    assert_eq!(
        ids(store.sessions(&limited).await.unwrap()),
        ["new", "ended"]
    );
}

async fn telemetry_ranges_and_ordering(store: &Store) {
    let t = base_ms();
    // Two devices in one session, written out of order; equal ts on both devices.
    let batch = points(vec![
        point("r-2", "s-1", 2, t + 1000),
        point("r-1", "s-1", 3, t + 1500),
        point("r-1", "s-1", 1, t + 500),
        point("r-2", "s-1", 1, t + 500),
        point("r-1", "s-1", 2, t + 1000),
        point("r-1", "other", 1, t + 1000),
    ]);
    store.write(&batch).await.unwrap();
    let key = |v: Vec<model::Point>| {
        v.into_iter()
            .map(|p| (p.device_id, p.seq, p.ts_ms - t))
            .collect::<Vec<_>>()
    };
    let r = |d: &str, s, ts| (d.to_owned(), s, ts);

    let all = store
        .telemetry(&TelemetryQuery::session("s-1"))
        .await
        .unwrap();
    assert_eq!(
        key(all),
        [
            r("r-1", 1, 500),
            r("r-2", 1, 500),
            r("r-1", 2, 1000),
            r("r-2", 2, 1000),
            r("r-1", 3, 1500)
        ]
    );

    let q = TelemetryQuery {
        device_id: Some("r-1".into()),
        from_ms: Some(t + 1000),
        to_ms: Some(t + 1500),
        ..TelemetryQuery::session("s-1")
    };
    assert_eq!(
        key(store.telemetry(&q).await.unwrap()),
        [r("r-1", 2, 1000), r("r-1", 3, 1500)]
    );

    let q = TelemetryQuery {
        to_ms: Some(t + 500),
        ..TelemetryQuery::session("s-1")
    };
    assert_eq!(
        key(store.telemetry(&q).await.unwrap()),
        [r("r-1", 1, 500), r("r-2", 1, 500)]
    );

    let q = TelemetryQuery {
        from_ms: Some(t + 501),
        limit: 2,
        ..TelemetryQuery::session("s-1")
    };
    assert_eq!(
        key(store.telemetry(&q).await.unwrap()),
        [r("r-1", 2, 1000), r("r-2", 2, 1000)]
    );

    assert!(
        store
            .telemetry(&TelemetryQuery::session("none"))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn latest_point_of_a_device(store: &Store) {
    let t = base_ms();
    assert_eq!(store.latest("r-1").await.unwrap(), None);
    let newest = point("r-1", "s-2", 1, t + 5000);
    let batch = points(vec![
        point("r-1", "s-1", 9, t + 1000),
        newest.clone(),
        point("r-1", "s-1", 10, t + 2000),
        point("r-2", "s-9", 1, t + 9000),
    ]);
    store.write(&batch).await.unwrap();
    assert_eq!(store.latest("r-1").await.unwrap(), Some(newest));
    assert_eq!(store.latest("r-3").await.unwrap(), None);
}

async fn latest_point_follows_the_device_from_session_to_session(store: &Store) {
    let t = base_ms();
    let roast_1_last = point("r-1", "s-1", 3, t + 3000);
    store
        .write(&points(vec![point("r-1", "s-1", 1, t + 1000)]))
        .await
        .unwrap();
    // Later writes of a session the store has seen before.
    store
        .write(&points(vec![
            point("r-1", "s-1", 2, t + 2000),
            roast_1_last.clone(),
        ]))
        .await
        .unwrap();
    assert_eq!(
        store.latest("r-1").await.unwrap(),
        Some(roast_1_last.clone())
    );

    // The next roast has started but sent nothing yet; a late point of the first roast arrives.
    store
        .write(&sessions(vec![session_event(
            "r-1",
            "s-2",
            SessionState::Start,
            t + 10_000,
            json!({}),
        )]))
        .await
        .unwrap();
    store
        .write(&points(vec![point("r-1", "s-1", 0, t + 500)]))
        .await
        .unwrap();
    assert_eq!(store.latest("r-1").await.unwrap(), Some(roast_1_last));

    let roast_2_first = point("r-1", "s-2", 1, t + 10_500);
    store
        .write(&points(vec![roast_2_first.clone()]))
        .await
        .unwrap();
    assert_eq!(store.latest("r-1").await.unwrap(), Some(roast_2_first));

    // Same ts: the higher seq is the later point.
    let tie = point("r-1", "s-2", 2, t + 10_500);
    store.write(&points(vec![tie.clone()])).await.unwrap();
    assert_eq!(store.latest("r-1").await.unwrap(), Some(tie));
}

async fn session_summaries_include_points_without_start(store: &Store) {
    let t = base_ms();
    let batch = Batch {
        points: vec![
            point("a", "s-1", 1, t),
            point("a", "s-1", 2, t + 500),
            point("a", "s-1", 5, t + 2000),
            point("b", "s-1", 1, t + 100),
            point("a", "s-2", 1, t),
        ],
        sessions: vec![
            session_event(
                "a",
                "s-1",
                SessionState::Start,
                t - 10,
                json!({"bean": "x"}),
            ),
            // Started, but no points yet.
            session_event("c", "s-1", SessionState::Start, t + 50, json!({})),
        ],
        ..Batch::default()
    };
    store.write(&batch).await.unwrap();

    let s = store.session("s-1").await.unwrap();
    let devices: Vec<_> = s.iter().map(|x| x.device_id.as_str()).collect();
    assert_eq!(devices, ["a", "b", "c"]);

    let a = &s[0];
    assert_eq!(a.session, "s-1");
    let rec = a.record.as_ref().unwrap();
    assert_eq!(rec.started_ms, Some(t - 10));
    assert_eq!(rec.ended_ms, None);
    assert_eq!(rec.metadata["bean"], "x");
    assert_eq!(
        (a.points, a.first_ts_ms, a.last_ts_ms, a.max_seq),
        (3, Some(t), Some(t + 2000), Some(5))
    );

    // Points but no start message: found from the telemetry.
    let b = &s[1];
    assert!(b.record.is_none());
    assert_eq!(
        (b.points, b.first_ts_ms, b.last_ts_ms, b.max_seq),
        (1, Some(t + 100), Some(t + 100), Some(1))
    );

    let c = &s[2];
    assert!(c.record.is_some());
    assert_eq!(
        (c.points, c.first_ts_ms, c.last_ts_ms, c.max_seq),
        (0, None, None, None)
    );

    assert!(store.session("unknown").await.unwrap().is_empty());
}

async fn dead_letters_round_trip_and_prune(store: &Store) {
    let t = base_ms();
    let letters: Vec<_> = (0..5)
        .map(|i| dead_letter(Some("r-1"), t + i * 1000, Some(i as usize)))
        .chain([dead_letter(None, t + 5000, None)])
        .collect();
    store
        .write(&Batch {
            dead_letters: letters.clone(),
            ..Batch::default()
        })
        .await
        .unwrap();

    let stored = store.dead_letters(100).await.unwrap();
    assert_eq!(stored.len(), 6);
    // Newest first, every field as written.
    for (got, want) in stored.iter().zip(letters.iter().rev()) {
        assert_eq!(got.received_ms, want.received_ms);
        assert_eq!(got.topic, want.topic);
        assert_eq!(got.device_id, want.device_id);
        assert_eq!(got.payload, want.payload);
        assert_eq!(got.payload_bytes, want.payload_bytes);
        assert_eq!(got.frame_index, want.frame_index);
        assert_eq!(got.reason_code, want.reason_code);
        assert_eq!(got.reason, want.reason);
    }
    assert_eq!(stored[0].payload.len(), 10);
    assert_eq!(stored[0].payload_bytes, 13);
    assert!(stored.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(store.dead_letters(2).await.unwrap().len(), 2);

    // By age: the two received before t + 2000.
    assert_eq!(store.prune_dead_letters(t + 2000, 1000).await.unwrap(), 2);
    // By count: keep the newest three of the four left.
    assert_eq!(store.prune_dead_letters(t, 3).await.unwrap(), 1);
    let left: Vec<_> = store
        .dead_letters(100)
        .await
        .unwrap()
        .iter()
        .map(|d| d.received_ms - t)
        .collect();
    assert_eq!(left, [5000, 4000, 3000]);
    assert_eq!(store.prune_dead_letters(t, 3).await.unwrap(), 0);
    assert_eq!(store.prune_dead_letters(t, 0).await.unwrap(), 3);
}

/// docs/protocol.md, "Roast events": identified by (device, session, kind), never revised; a
/// copy is ignored and the first write wins.
async fn roast_events_are_stored_once_and_served_in_time_order(store: &Store) {
    use roast::EventKind::*;
    let t = base_ms();
    let charge = roast_event("r-1", "s-1", Charge, t);
    let tp = roast_event("r-1", "s-1", TurningPoint, t + 70_000);
    // Another device's session of the same id, and another session: kept apart.
    let other_device = roast_event("r-2", "s-1", Charge, t + 1_000);
    let other_session = roast_event("r-1", "s-2", Charge, t);
    store
        .write(&events(vec![tp.clone(), charge.clone(), other_session]))
        .await
        .unwrap();
    // A redelivery, and the same kind detected again with other values (after a restart).
    let mut again = charge.clone();
    again.ts_ms += 5_000;
    again.confidence = 0.5;
    store
        .write(&events(vec![charge.clone(), again, other_device.clone()]))
        .await
        .unwrap();

    let stored = store.events("s-1").await.unwrap();
    assert_eq!(
        stored,
        vec![charge, other_device, tp],
        "time order, first write wins"
    );
    assert_eq!(store.events("s-2").await.unwrap().len(), 1);
    assert!(store.events("nothing").await.unwrap().is_empty());
}

async fn empty_and_partial_batches(store: &Store) {
    assert_eq!(
        store.write(&Batch::default()).await.unwrap(),
        WriteOutcome::default()
    );
    store.ping().await.unwrap();
    let t = base_ms();
    let only_sessions = sessions(vec![session_event(
        "r-1",
        "s-1",
        SessionState::Start,
        t,
        json!({}),
    )]);
    assert_eq!(
        store.write(&only_sessions).await.unwrap(),
        WriteOutcome::default()
    );
    assert_eq!(
        store
            .sessions(&SessionQuery::default())
            .await
            .unwrap()
            .len(),
        1
    );
}
