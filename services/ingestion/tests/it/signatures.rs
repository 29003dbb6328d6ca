//! Where devices must sign (`require_signed_sessions`, `require_signed_telemetry`): a message
//! signed by the device's registered key is stored; unsigned, forged, misaddressed, unknown-key
//! and revoked-key messages are refused with their reason, kept, counted, and never hold up the
//! good ones (docs/protocol.md, "Signed messages").

use std::time::{Duration, Instant};

use model::SessionState;
use model::signed::{self, MessageSignature};
use testkit::Server;

use crate::helpers::{
    Stack, pg_count, point, publish_raw, session_event, session_topic, telemetry_topic,
};

/// `body` as `key` signs it for `topic`.
fn signed(key: &keys::Key, topic: &str, body: &[u8]) -> Vec<u8> {
    let sig = key.sign(&signed::signed_bytes(topic, body)).unwrap();
    signed::append(
        body,
        &MessageSignature {
            key_id: key.label().to_owned(),
            sig,
        },
    )
}

fn frame(device: &str, seqs: std::ops::Range<u64>) -> Vec<u8> {
    let points: Vec<serde_json::Value> = seqs
        .map(|s| serde_json::from_slice(&point(device, "s-1", s).to_json()).unwrap())
        .collect();
    serde_json::to_vec(&points).unwrap()
}

fn audit() -> store::NewAudit {
    store::NewAudit {
        ts_ms: model::now_ms(),
        actor: "test".into(),
        action: "key_registered".into(),
        subject: "test".into(),
        reason: "test".into(),
        detail: "{}".into(),
    }
}

async fn dead_letters(pool: &sqlx::PgPool) -> Vec<(String, String)> {
    sqlx::query_as("SELECT device_id, reason_code FROM dead_letters ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_messages_signed_by_the_devices_own_key_are_stored() {
    if !testkit::require(
        Server::Postgres,
        "only_messages_signed_by_the_devices_own_key_are_stored",
    ) {
        return;
    }
    let s = Stack::start_with(|c| {
        c.ingestion.require_signed_sessions = true;
        c.ingestion.require_signed_telemetry = true;
        c.ingestion.keys_refresh_secs = 1;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let keystore = keys::Keystore::file(dir.path()).unwrap();
    let (a, b) = (
        keystore.generate("r-a-key").unwrap(),
        keystore.generate("r-b-key").unwrap(),
    );
    // Registered after ingestion started: looked up when first named.
    let registry = store::CommandsStore::postgres(&s.db.url, &store::PostgresConfig::default())
        .await
        .unwrap();
    for (device, key) in [("r-a", &a), ("r-b", &b)] {
        registry
            .add_device_key(device, key.label(), &key.public_key().to_base64(), &audit())
            .await
            .unwrap();
    }

    let (session, telemetry) = (session_topic("r-a"), telemetry_topic("r-a"));
    let start = session_event("r-a", "s-1", SessionState::Start).to_json();
    publish_raw(&s.device, &session, signed(&a, &session, &start)).await;
    publish_raw(
        &s.device,
        &telemetry,
        signed(&a, &telemetry, &frame("r-a", 0..3)),
    )
    .await;

    let mut forged = signed(&a, &telemetry, &frame("r-a", 3..4));
    let at = forged.iter().position(|&b| b == b'3').unwrap();
    forged[at] = b'4';
    let refused: Vec<(&str, String, Vec<u8>)> = vec![
        ("unsigned", telemetry.clone(), frame("r-a", 10..11)),
        ("unsigned", session.clone(), start.clone()),
        ("bad_signature", telemetry.clone(), forged),
        // Signed by r-b's key, published as r-a; and r-a's message replayed as r-b's.
        (
            "bad_signature",
            telemetry.clone(),
            signed(&b, &telemetry, &frame("r-a", 11..12)),
        ),
        (
            "bad_signature",
            telemetry_topic("r-b"),
            signed(&a, &telemetry, &frame("r-b", 12..13)),
        ),
        // A session message's signature does not make it telemetry.
        (
            "bad_signature",
            telemetry.clone(),
            signed::append(
                &frame("r-a", 13..14),
                &signed::split(&signed(&a, &session, &frame("r-a", 13..14)))
                    .1
                    .unwrap()
                    .unwrap(),
            ),
        ),
        (
            "bad_signature",
            telemetry.clone(),
            [
                frame("r-a", 14..15),
                b"\n{\"key_id\":\"r-a-key\",\"sig\":\"AAAA\"}".to_vec(),
            ]
            .concat(),
        ),
        (
            "bad_signature",
            telemetry.clone(),
            signed(
                &keystore.generate("never-registered").unwrap(),
                &telemetry,
                &frame("r-a", 15..16),
            ),
        ),
    ];
    for (_, topic, payload) in &refused {
        publish_raw(&s.device, topic, payload.clone()).await;
    }
    // Good input behind the bad.
    publish_raw(
        &s.device,
        &telemetry,
        signed(&a, &telemetry, &frame("r-a", 20..22)),
    )
    .await;
    assert!(s.device.flush(Duration::from_secs(10)).await);
    crate::helpers::wait_pg_count(&s.pool, "r-a", 5, Duration::from_secs(20)).await;
    let wanted: Vec<(String, String)> = refused
        .iter()
        .map(|(code, topic, _)| {
            let device = model::parse_topic(topic).unwrap().device_id.to_owned();
            (device, (*code).to_owned())
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dead_letters(&s.pool).await.len() < wanted.len() {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            dead_letters(&s.pool).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each refused with its reason; the order they were stored in is not the question.
    let (mut kept, mut wanted) = (dead_letters(&s.pool).await, wanted);
    kept.sort();
    wanted.sort();
    assert_eq!(kept, wanted);
    assert_eq!(pg_count(&s.pool, "r-a").await, 5);
    assert_eq!(pg_count(&s.pool, "r-b").await, 0);
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE device_id = 'r-a'")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(sessions, 1, "the signed start was stored");
    let metrics = s.app.text("/metrics").await;
    for (code, n) in [("unsigned", 2), ("bad_signature", 6)] {
        let line = format!("simcorp_ingestion_rejected_total{{reason=\"{code}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }

    // A revoked key stops verifying within the refresh interval.
    registry
        .revoke_device_key("r-a", "r-a-key", &audit())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seq = 100;
    loop {
        let before = dead_letters(&s.pool).await.len();
        publish_raw(
            &s.device,
            &telemetry,
            signed(&a, &telemetry, &frame("r-a", seq..seq + 1)),
        )
        .await;
        assert!(s.device.flush(Duration::from_secs(10)).await);
        let judged = Instant::now() + Duration::from_secs(10);
        let refused = loop {
            if dead_letters(&s.pool).await.len() > before {
                break true;
            }
            if pg_count(&s.pool, "r-a").await > 5 + (seq - 100) as i64 {
                break false;
            }
            assert!(
                Instant::now() < judged,
                "point {seq} was neither stored nor refused"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if refused {
            break;
        }
        assert!(Instant::now() < deadline, "the revoked key still verifies");
        seq += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = dead_letters(&s.pool).await.pop().unwrap();
    assert_eq!(last, ("r-a".to_owned(), "bad_signature".to_owned()));
    s.app.stop().await;
}
