//! Bad input is refused with a reason, kept for inspection, and never blocks good input.

use std::time::Duration;

use testkit::Server;

use crate::helpers::{
    Stack, pg_count, point, publish_points, publish_raw, session_topic, telemetry_topic,
};

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_input_is_dead_lettered_with_its_reason_and_good_input_flows() {
    if !testkit::require(Server::Postgres, "every_bad_input_is_dead_lettered") {
        return;
    }
    let s = Stack::start().await;

    let now = model::now_ms();
    let topic = telemetry_topic("roaster-bad");
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        (
            "malformed_json",
            topic.clone(),
            br#"{"session":"s","seq":"#.to_vec(),
        ),
        (
            "missing_field",
            topic.clone(),
            format!(r#"{{"session":"s","ts":{now},"channels":{{"bt":1}}}}"#).into_bytes(),
        ),
        (
            "wrong_type",
            topic.clone(),
            format!(r#"{{"session":"s","seq":"7","ts":{now},"channels":{{"bt":1}}}}"#).into_bytes(),
        ),
        (
            "not_finite",
            topic.clone(),
            format!(r#"{{"session":"s","seq":1,"ts":{now},"channels":{{"bt":NaN}}}}"#).into_bytes(),
        ),
        (
            "not_finite",
            topic.clone(),
            format!(r#"{{"session":"s","seq":1,"ts":{now},"channels":{{"et":Infinity}}}}"#)
                .into_bytes(),
        ),
        (
            "ts_too_old",
            topic.clone(),
            br#"{"session":"s","seq":1,"ts":1000,"channels":{"bt":1}}"#.to_vec(),
        ),
        (
            "ts_in_future",
            topic.clone(),
            format!(
                r#"{{"session":"s","seq":1,"ts":{},"channels":{{"bt":1}}}}"#,
                now + 86_400_000
            )
            .into_bytes(),
        ),
        ("payload_too_large", topic.clone(), vec![b' '; 300 * 1024]),
        (
            "bad_id",
            "roasters/bad$device/telemetry".into(),
            point("x", "s", 1).to_json(),
        ),
        ("not_an_object", topic.clone(), b"42".to_vec()),
        ("empty_frame", topic.clone(), b"[]".to_vec()),
        (
            "bad_session_state",
            session_topic("roaster-bad"),
            format!(r#"{{"session":"s","state":"paused","ts":{now}}}"#).into_bytes(),
        ),
        // PostgreSQL refuses NUL in text and jsonb: neither may reach it, or the batch would
        // fail forever and stall everything behind it.
        (
            "nul_character",
            session_topic("roaster-bad"),
            format!(r#"{{"session":"s","state":"start","ts":{now},"note":"a\u0000b"}}"#)
                .into_bytes(),
        ),
        (
            "bad_id",
            topic.clone(),
            format!(r#"{{"session":"a\u0000b","seq":1,"ts":{now},"channels":{{"bt":1}}}}"#)
                .into_bytes(),
        ),
        // The reason quotes the channel name, NUL included: the dead letter must still store.
        (
            "wrong_type",
            topic.clone(),
            format!(r#"{{"session":"s","seq":1,"ts":{now},"channels":{{"b\u0000t":"hot"}}}}"#)
                .into_bytes(),
        ),
    ];
    for (i, (_, topic, payload)) in cases.iter().enumerate() {
        publish_raw(&s.device, topic, payload.clone()).await;
        // A good point right behind each bad one.
        publish_points(&s.device, &[point("roaster-good", "s-1", i as u64)], 1).await;
    }
    assert!(s.device.flush(Duration::from_secs(30)).await);

    crate::helpers::wait_pg_count(
        &s.pool,
        "roaster-good",
        cases.len() as i64,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(pg_count(&s.pool, "roaster-good").await, cases.len() as i64);
    assert_eq!(pg_count(&s.pool, "roaster-bad").await, 0);

    let mut kept: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT reason_code, reason, payload_bytes FROM dead_letters ORDER BY id")
            .fetch_all(&s.pool)
            .await
            .unwrap();
    let mut codes: Vec<&str> = kept.iter().map(|(c, _, _)| c.as_str()).collect();
    let mut expected: Vec<&str> = cases.iter().map(|(c, _, _)| *c).collect();
    codes.sort_unstable();
    expected.sort_unstable();
    assert_eq!(codes, expected);
    kept.retain(|(code, _, _)| code == "payload_too_large");
    assert_eq!(
        kept[0].2,
        300 * 1024,
        "the original size is kept even though the payload is truncated"
    );
    assert!(
        kept[0].1.contains("over the 262144-byte limit"),
        "{}",
        kept[0].1
    );

    // Kept for inspection over HTTP too, and the service is healthy throughout.
    let letters: Vec<serde_json::Value> = s.app.get("/dead-letters?limit=100").await;
    assert_eq!(letters.len(), cases.len());
    assert_eq!(s.app.status("/health").await, 200);
    assert_eq!(s.app.status("/ready").await, 200);
    s.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_bad_point_in_a_frame_refuses_only_that_point() {
    if !testkit::require(
        Server::Postgres,
        "one_bad_point_in_a_frame_refuses_only_that_point",
    ) {
        return;
    }
    let s = Stack::start().await;

    let good = |seq| String::from_utf8(point("roaster-f", "s-1", seq).to_json()).unwrap();
    let frame = format!(r#"[{},{{"session":"s-1","seq":1}},{}]"#, good(0), good(2));
    publish_raw(&s.device, &telemetry_topic("roaster-f"), frame).await;
    assert!(s.device.flush(Duration::from_secs(10)).await);
    crate::helpers::wait_pg_count(&s.pool, "roaster-f", 2, Duration::from_secs(20)).await;
    let (index, code): (i32, String) =
        sqlx::query_as("SELECT frame_index, reason_code FROM dead_letters")
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert_eq!((index, code.as_str()), (1, "missing_field"));
    s.app.stop().await;
}
