use model::invariants::{check_decoded, check_session};
use model::{
    Channels, Limits, Point, SessionEvent, SessionState, Topic, TopicKind, decode_session,
    decode_telemetry, parse_topic,
};
use proptest::prelude::*;

const NOW: i64 = 1_795_000_000_000;

fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:-]{1,64}"
}

fn reading() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1.0e6..1.0e6f64,
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
        Just(0.0),
        Just(-0.0),
    ]
}

fn channels() -> impl Strategy<Value = Channels> {
    (
        proptest::option::of(reading()),
        proptest::option::of(reading()),
        proptest::option::of(reading()),
        proptest::option::of(reading()),
        proptest::option::of(reading()),
        proptest::collection::btree_map("x[a-z0-9_]{0,31}", reading(), 0..8),
    )
        .prop_map(|(bt, et, gas, air, drum, extra)| Channels {
            bt,
            et,
            gas,
            air,
            drum,
            extra,
        })
        .prop_filter("at least one reading", |c| !c.is_empty())
}

prop_compose! {
    fn point(device_id: String)(
        session in id(),
        seq in 0..=i64::MAX as u64,
        age in -300_000i64..7 * 24 * 3600 * 1000,
        channels in channels(),
    ) -> Point {
        Point { device_id: device_id.clone(), session, seq, ts_ms: NOW - age, channels, received_ms: NOW }
    }
}

fn frame() -> impl Strategy<Value = Vec<Point>> {
    proptest::collection::vec(point("r-1".into()), 1..20)
}

/// Ways a payload gets damaged on its way: bytes flipped, inserted, removed, cut short.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Flip(i, b) if !bytes.is_empty() => bytes[i % len] ^= b,
            Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            Mutation::Remove(i) if !bytes.is_empty() => {
                bytes.remove(i % len);
            }
            Mutation::Truncate(i) => bytes.truncate(i % len),
            _ => {}
        }
    }
    bytes
}

/// The decoder's whole contract for one payload: no panic (proptest reports one as a failure),
/// and either a refusal with a reason or only valid values.
fn judge_telemetry(payload: &[u8], limits: &Limits) -> Result<(), TestCaseError> {
    match decode_telemetry("r-1", payload, NOW, limits) {
        Ok(decoded) => check_decoded("r-1", &decoded, NOW, limits).map_err(TestCaseError::fail),
        Err(rejection) => {
            prop_assert!(!rejection.code().is_empty() && !rejection.to_string().is_empty());
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_valid_point_round_trips(p in point("r-1".into())) {
        let decoded = decode_telemetry("r-1", &p.to_json(), NOW, &Limits::default()).unwrap();
        prop_assert_eq!(decoded.points, vec![p]);
        prop_assert!(decoded.rejected.is_empty());
    }

    #[test]
    fn a_damaged_point_is_valid_or_refused_with_a_reason(
        p in point("r-1".into()),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        judge_telemetry(&mutate(p.to_json(), &mutations), &Limits::default())?;
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        let limits = Limits::default();
        judge_telemetry(&payload, &limits)?;
        if let Ok(e) = decode_session("r-1", &payload, NOW, &limits) {
            check_session("r-1", &e, NOW, &limits).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn a_damaged_session_event_is_valid_or_refused(
        session in id(),
        start in any::<bool>(),
        age in -300_000i64..1_000_000,
        meta in proptest::collection::btree_map("[a-z\u{0}]{1,8}", "[ -~\u{0}]{0,8}", 0..4),
        mutations in proptest::collection::vec(mutation(), 0..4),
    ) {
        let event = SessionEvent {
            device_id: "r-1".into(),
            session,
            state: if start { SessionState::Start } else { SessionState::End },
            ts_ms: NOW - age,
            metadata: meta.into_iter().map(|(k, v)| (k, serde_json::Value::from(v))).collect(),
            received_ms: NOW,
        };
        let limits = Limits::default();
        match decode_session("r-1", &mutate(event.to_json(), &mutations), NOW, &limits) {
            Ok(e) => check_session("r-1", &e, NOW, &limits).map_err(TestCaseError::fail)?,
            Err(r) => prop_assert!(!r.code().is_empty()),
        }
    }

    #[test]
    fn topics_round_trip_and_anything_else_is_refused(device in id(), junk in ".{0,80}") {
        for kind in [TopicKind::Telemetry, TopicKind::Session, TopicKind::Events, TopicKind::Commands, TopicKind::CommandAck] {
            let topic = Topic::format(&device, kind);
            prop_assert_eq!(parse_topic(&topic).unwrap(), Topic { device_id: &device, kind });
        }
        if let Ok(t) = parse_topic(&junk) {
            prop_assert_eq!(Topic::format(t.device_id, t.kind), junk.clone());
        }
    }
}

// Frames cost up to twenty points each: fewer cases, the same ground covered per point.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_valid_frame_round_trips(points in frame()) {
        let decoded = decode_telemetry("r-1", &Point::frame_json(&points), NOW, &Limits::default()).unwrap();
        prop_assert_eq!(decoded.points, points);
    }

    #[test]
    fn a_damaged_frame_is_valid_or_refused_with_a_reason(
        points in frame(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        judge_telemetry(&mutate(Point::frame_json(&points), &mutations), &Limits::default())?;
    }

    #[test]
    fn tight_limits_refuse_rather_than_truncate(
        points in frame(),
        max_frame_points in 1usize..5,
        max_channels in 1usize..4,
    ) {
        let limits = Limits { max_frame_points, max_channels, ..Limits::default() };
        judge_telemetry(&Point::frame_json(&points), &limits)?;
    }
}
