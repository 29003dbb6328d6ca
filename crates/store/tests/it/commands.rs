//! The command service's store, the same on both backends: a transition happens once, each
//! with its audit entry; the audit chain verifies, and an edited or removed entry is reported
//! at the first broken link; device keys rotate (pending, then active, the old one retired) and
//! are revoked; a device's session is remembered, and an older message does not overwrite a
//! newer one.

use store::{ChainReport, Changes, CommandRecord, CommandsStore, DeviceSession, NewAudit};

fn record(id: &str, created_ms: i64) -> CommandRecord {
    CommandRecord {
        id: id.into(),
        device_id: "r-1".into(),
        session: "s-1".into(),
        control: "gas".into(),
        value: 60.0,
        from_value: Some(55.0),
        reason: "hotter".into(),
        proposer: "olga".into(),
        source: "operator".into(),
        state: "proposed".into(),
        created_ms,
        expires_ms: created_ms + 60_000,
        decided_by: None,
        decided_ms: None,
        sent_ms: None,
        not_after_ms: None,
        nonce: None,
        key_id: None,
        finished_ms: None,
        outcome_reason: None,
        updated_ms: created_ms,
    }
}

fn entry(actor: &str, action: &str, subject: &str) -> NewAudit {
    NewAudit {
        ts_ms: 1_000,
        actor: actor.into(),
        action: action.into(),
        subject: subject.into(),
        reason: "because".into(),
        detail: "{}".into(),
    }
}

async fn transitions_happen_once_and_are_audited(store: &CommandsStore) {
    store.ping().await.unwrap();
    store
        .insert_command(&record("c1", 10), &entry("olga", "proposed", "c1"))
        .await
        .unwrap();
    let approve = Changes {
        decided_by: Some("anna".into()),
        decided_ms: Some(20),
        ..Changes::default()
    };
    let a = entry("anna", "approved", "c1");
    let moved = store
        .transition("c1", "proposed", "approved", &approve, &a)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.state, "approved");
    assert_eq!(moved.decided_by.as_deref(), Some("anna"));
    // Twice, or from a state it is no longer in: nothing happens, nothing is audited.
    for from in ["proposed", "sent"] {
        let again = store
            .transition("c1", from, "rejected", &Changes::default(), &a)
            .await
            .unwrap();
        assert_eq!(again, None, "from {from}");
    }
    let sent = Changes {
        sent_ms: Some(30),
        nonce: Some("abcd".into()),
        ..Changes::default()
    };
    let moved = store
        .transition(
            "c1",
            "approved",
            "sent",
            &sent,
            &entry("system", "sent", "c1"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (moved.decided_by.as_deref(), moved.nonce.as_deref()),
        (Some("anna"), Some("abcd")),
        "earlier columns kept"
    );
    assert!(
        store
            .transition("nope", "proposed", "approved", &approve, &a)
            .await
            .unwrap()
            .is_none()
    );

    let actions: Vec<String> = store
        .history("c1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["proposed", "approved", "sent"]);
    assert_eq!(store.in_state("sent", 10).await.unwrap().len(), 1);
    assert_eq!(
        store.commands(Some("r-1"), None, 10).await.unwrap().len(),
        1
    );
    assert_eq!(
        store.commands(None, Some("acked"), 10).await.unwrap().len(),
        0
    );
    assert_eq!(store.recent("r-1", "gas", 0).await.unwrap().len(), 1);
    assert!(matches!(
        store.verify_audit().await.unwrap(),
        ChainReport::Ok { entries: 3, .. }
    ));
}

async fn concurrent_appends_keep_one_chain(store: &CommandsStore) {
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .audit(&entry(&format!("w{i}"), "note", "x"))
                .await
                .unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=40).collect::<Vec<i64>>());
    assert!(matches!(
        store.verify_audit().await.unwrap(),
        ChainReport::Ok { entries: 40, .. }
    ));
}

async fn device_keys_rotate_and_revoke(store: &CommandsStore) {
    let a = entry("admin", "key", "r-1");
    let k1 = store.add_device_key("r-1", "k1", "PK1", &a).await.unwrap();
    assert_eq!(k1.state, "active");
    let k2 = store.add_device_key("r-1", "k2", "PK2", &a).await.unwrap();
    assert_eq!(
        k2.state, "pending",
        "the old key stays until the new one is confirmed"
    );
    let usable = |store: &CommandsStore| {
        let store = store.clone();
        async move {
            store
                .usable_keys()
                .await
                .unwrap()
                .into_iter()
                .map(|k| (k.key_id, k.state))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        usable(store).await,
        [
            ("k1".into(), "active".into()),
            ("k2".into(), "pending".into())
        ],
        "both sign in the overlap window"
    );
    let taken = store
        .add_device_key("r-1", "k2", "PK3", &a)
        .await
        .unwrap_err();
    assert_eq!(taken.kind(), store::ErrorKind::Conflict);
    assert_eq!(
        store
            .confirm_device_key("r-1", "k2", &a)
            .await
            .unwrap()
            .unwrap()
            .state,
        "active"
    );
    assert!(
        store
            .confirm_device_key("r-1", "k2", &a)
            .await
            .unwrap()
            .is_none(),
        "once"
    );
    let states: Vec<(String, String)> = store
        .device_keys("r-1")
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.key_id, k.state))
        .collect();
    assert_eq!(
        states,
        [
            ("k1".into(), "retired".into()),
            ("k2".into(), "active".into())
        ]
    );
    assert_eq!(
        store
            .revoke_device_key("r-1", "k2", &a)
            .await
            .unwrap()
            .unwrap()
            .state,
        "revoked"
    );
    assert!(
        store
            .revoke_device_key("r-1", "k2", &a)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.device_key("r-1", "zz").await.unwrap().is_none());
    assert_eq!(usable(store).await, [], "a revoked key signs nothing");
}

async fn device_sessions_keep_the_newest_message(store: &CommandsStore) {
    let at = |session: &str, active: bool, model: Option<&str>, ts_ms: i64| DeviceSession {
        device_id: "r-1".into(),
        session: session.into(),
        active,
        roaster_model: model.map(str::to_owned),
        ts_ms,
    };
    assert_eq!(store.device_sessions().await.unwrap(), []);
    store
        .put_device_session(&at("s-1", true, Some("skywalker"), 1_000))
        .await
        .unwrap();
    store
        .put_device_session(&at("s-1", false, Some("skywalker"), 2_000))
        .await
        .unwrap();
    // The start, redelivered after the end: the end stands.
    store
        .put_device_session(&at("s-1", true, Some("skywalker"), 1_000))
        .await
        .unwrap();
    assert_eq!(
        store.device_sessions().await.unwrap(),
        [at("s-1", false, Some("skywalker"), 2_000)]
    );
    store
        .put_device_session(&at("s-2", true, None, 3_000))
        .await
        .unwrap();
    let mut other = at("s-9", true, Some("standard"), 500);
    other.device_id = "r-0".into();
    store.put_device_session(&other).await.unwrap();
    assert_eq!(
        store.device_sessions().await.unwrap(),
        [other, at("s-2", true, None, 3_000)]
    );
}

macro_rules! commands_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = store::CommandsStore::sqlite(dir.path(), &store::SqliteConfig::default())
                        .await
                        .unwrap();
                    super::$test(&store).await;
                    store.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let name = concat!("commands::postgres::", stringify!($test));
                    if !testkit::require(testkit::Server::Postgres, name) {
                        return;
                    }
                    let db = testkit::TestDatabase::create().await;
                    let store = store::CommandsStore::postgres(&db.url, &store::PostgresConfig::default())
                        .await
                        .unwrap();
                    super::$test(&store).await;
                    store.close().await;
                }
            )*
        }
    };
}

commands_suite!(
    transitions_happen_once_and_are_audited,
    concurrent_appends_keep_one_chain,
    device_keys_rotate_and_revoke,
    device_sessions_keep_the_newest_message,
);
