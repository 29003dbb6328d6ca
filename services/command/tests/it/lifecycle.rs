//! A command's whole life, and everything that must be refused on the way.

use std::time::Duration;

use model::command::Refusal;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

/// Proposals are refused until the device is seen roasting, then checked against the limits.
async fn roasting_device(
    platform: &Platform,
    app: &testkit::TestService<command::CommandService>,
    id: &str,
) -> FakeDevice {
    let device = FakeDevice::connect(&platform.broker, id).await;
    let (status, body) = propose(app, OPERATOR, id, "gas", 55.0).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("no_active_session")),
        "{body}"
    );
    device.roasting("s-1", 50.0).await;
    testkit::eventually(
        Duration::from_secs(10),
        "the service to see the roast",
        || async {
            let (status, body) = propose(app, OPERATOR, id, "gas", 500.0).await;
            (body["reason"] == "out_of_range").then_some(status)
        },
    )
    .await;
    device
}

#[tokio::test]
async fn a_command_is_proposed_approved_signed_delivered_acknowledged_and_audited() {
    if !require(
        "lifecycle::a_command_is_proposed_approved_signed_delivered_acknowledged_and_audited",
    ) {
        return;
    }
    let platform = Platform::new().await;
    let app = platform.start(300, 30).await;
    let (status, _) = call(&app, Method::GET, "/proposals", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(&app, Method::GET, "/proposals", Some("tok-nobody-xx"), None).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unknown_token"))
    );

    let mut device = roasting_device(&platform, &app, "r-1").await;
    let (status, key) = device.register(&app, "r-1.k1").await;
    assert_eq!(
        (status, key["state"].as_str()),
        (StatusCode::CREATED, Some("active")),
        "{key}"
    );

    // The limits, each with its reason.
    for (control, value, reason) in [
        ("gas", 101.0, "out_of_range"),
        ("drum", 10.0, "out_of_range"),
        ("gas", 75.0, "step_too_large"),
        ("steam", 50.0, "unknown_control"),
    ] {
        let (status, body) = propose(&app, OPERATOR, "r-1", control, value).await;
        assert_eq!(body["reason"], reason, "{control}={value}: {body}");
        assert!(status.is_client_error(), "{status}");
    }
    let (status, body) = propose(&app, APPROVER, "r-1", "gas", 55.0).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::FORBIDDEN, Some("missing_role"))
    );

    let (status, c) = propose(&app, OPERATOR, "r-1", "gas", 62.5).await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            c["state"].as_str(),
            c["session"].as_str(),
            c["proposer"].as_str()
        ),
        (Some("proposed"), Some("s-1"), Some("olga"))
    );
    // Rate of change: 12.5 + 12.5 + 12.5 + 12.5 > 40 per minute.
    for _ in 0..2 {
        assert_eq!(
            propose(&app, OPERATOR, "r-1", "gas", 62.5).await.0,
            StatusCode::CREATED
        );
    }
    let (status, body) = propose(&app, OPERATOR, "r-1", "gas", 62.5).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("rate_exceeded")),
        "{body}"
    );

    let (status, body) = call(
        &app,
        Method::POST,
        &format!("/proposals/{id}/approve"),
        Some(OPERATOR),
        None,
    )
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::FORBIDDEN, Some("missing_role"))
    );
    let (status, approved) = call(
        &app,
        Method::POST,
        &format!("/proposals/{id}/approve"),
        Some(APPROVER),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["decided_by"], "anna");
    let (status, body) = call(
        &app,
        Method::POST,
        &format!("/proposals/{id}/reject"),
        Some(APPROVER),
        None,
    )
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::CONFLICT, Some("not_proposed")),
        "once"
    );

    // The device checks the command against the service's published key.
    let command = device.next_command().await;
    assert_eq!(
        (command.id.as_str(), command.session.as_str(), command.value),
        (id.as_str(), "s-1", 62.5)
    );
    let (_, service_keys) = call(&app, Method::GET, "/keys/command", None, None).await;
    let service_key =
        keys::PublicKey::from_base64(service_keys[0]["public_key"].as_str().unwrap()).unwrap();
    assert_eq!(service_keys[0]["key_id"], command.key_id);
    assert!(keys::verify(
        &service_key,
        &command.signed_bytes(),
        &command.sig
    ));
    assert!(command.not_after_ms > command.issued_ms && command.nonce.len() >= 16);
    wait_state(&app, &id, "sent").await;

    // A forged ack and acks for unknown commands or keys change nothing.
    device.ack(&id, "r-1.k1", None, true).await;
    device.ack("cmd-nope", "r-1.k1", None, false).await;
    device.ack(&id, "r-1.unregistered", None, false).await;
    testkit::eventually(
        Duration::from_secs(10),
        "the refusals to be audited",
        || async {
            let h = history(&app, &id).await;
            let refused: Vec<String> = h
                .iter()
                .filter(|(a, _)| a == "ack_refused")
                .map(|(_, r)| r.clone())
                .collect();
            (refused == ["bad_signature", "unknown_key"]).then_some(())
        },
    )
    .await;
    assert_eq!(
        history(&app, "cmd-nope").await,
        [("ack_refused".to_owned(), "unknown_command".to_owned())]
    );
    assert_eq!(state_of(&app, &id).await, "sent");

    device.ack(&id, "r-1.k1", None, false).await;
    wait_state(&app, &id, "acked").await;
    device
        .ack(&id, "r-1.k1", Some(Refusal::Replayed), false)
        .await; // redelivered: nothing changes
    let actions: Vec<String> = history(&app, &id)
        .await
        .into_iter()
        .map(|(a, _)| a)
        .filter(|a| a != "ack_refused")
        .collect();
    assert_eq!(actions, ["proposed", "approved", "sent", "acked"]);
    assert_eq!(state_of(&app, &id).await, "acked");
    let (_, listed) = call(
        &app,
        Method::GET,
        "/proposals?device_id=r-1&state=acked",
        Some(OPERATOR),
        None,
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);

    // The audit chain holds, until someone edits it behind the service's back.
    let (_, v) = call(&app, Method::GET, "/audit/verify", Some(ADMIN), None).await;
    assert_eq!(v["ok"], true, "{v}");
    platform
        .sql(
            "ALTER TABLE command_audit DISABLE TRIGGER command_audit_append_only; \
             UPDATE command_audit SET actor = 'mallory' WHERE seq = 3",
        )
        .await;
    let (_, v) = call(&app, Method::GET, "/audit/verify", Some(ADMIN), None).await;
    assert_eq!(
        (v["ok"].as_bool(), v["broken_at"].as_i64()),
        (Some(false), Some(3)),
        "{v}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_proposer_never_approves_and_undecided_proposals_expire() {
    if !require("lifecycle::a_proposer_never_approves_and_undecided_proposals_expire") {
        return;
    }
    let platform = Platform::new().await;
    let app = platform.start(1, 30).await;
    let _device = roasting_device(&platform, &app, "r-2").await;
    let (_, c) = propose(&app, BOTH, "r-2", "air", 35.0).await;
    let id = c["id"].as_str().unwrap().to_owned();
    let (status, body) = call(
        &app,
        Method::POST,
        &format!("/proposals/{id}/approve"),
        Some(BOTH),
        None,
    )
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::FORBIDDEN, Some("own_proposal")),
        "{body}"
    );
    wait_state(&app, &id, "expired").await;
    let (status, _) = call(
        &app,
        Method::POST,
        &format!("/proposals/{id}/approve"),
        Some(APPROVER),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let actions: Vec<String> = history(&app, &id)
        .await
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(actions, ["proposed", "decision_refused", "expired"]);
    app.stop().await;
}

#[tokio::test]
async fn keys_rotate_and_a_revoked_key_is_refused_until_the_command_times_out() {
    if !require("lifecycle::keys_rotate_and_a_revoked_key_is_refused_until_the_command_times_out") {
        return;
    }
    let platform = Platform::new().await;
    let app = platform.start(300, 3).await;
    let mut device = roasting_device(&platform, &app, "r-3").await;
    assert_eq!(device.register(&app, "k1").await.1["state"], "active");
    assert_eq!(device.register(&app, "k2").await.1["state"], "pending");
    assert_eq!(device.register(&app, "k2").await.0, StatusCode::CONFLICT);
    let (status, _) = call(
        &app,
        Method::POST,
        "/devices/r-3/keys/k2/confirm",
        Some(OPERATOR),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The first good signature of the pending key confirms it and retires the old one.
    let (_, c) = propose(&app, OPERATOR, "r-3", "gas", 55.0).await;
    let id = c["id"].as_str().unwrap().to_owned();
    call(
        &app,
        Method::POST,
        &format!("/proposals/{id}/approve"),
        Some(APPROVER),
        Some(json!({"reason": "ok"})),
    )
    .await;
    let _ = device.next_command().await;
    wait_state(&app, &id, "sent").await;
    device.ack(&id, "k2", None, false).await;
    wait_state(&app, &id, "acked").await;
    let (_, ks) = call(&app, Method::GET, "/devices/r-3/keys", Some(ADMIN), None).await;
    let states: Vec<&str> = ks
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["retired", "active"]);

    let (status, k) = call(
        &app,
        Method::POST,
        "/devices/r-3/keys/k2/revoke",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(
        (status, k["state"].as_str()),
        (StatusCode::OK, Some("revoked"))
    );
    let (_, c) = propose(&app, OPERATOR, "r-3", "gas", 57.0).await;
    let id = c["id"].as_str().unwrap().to_owned();
    call(
        &app,
        Method::POST,
        &format!("/proposals/{id}/approve"),
        Some(APPROVER),
        None,
    )
    .await;
    let _ = device.next_command().await;
    wait_state(&app, &id, "sent").await;
    device.ack(&id, "k2", None, false).await;
    device.ack(&id, "k1", None, false).await;
    wait_state(&app, &id, "timed_out").await;
    let refused: Vec<String> = history(&app, &id)
        .await
        .into_iter()
        .filter(|(a, _)| a == "ack_refused")
        .map(|(_, r)| r)
        .collect();
    assert_eq!(refused, ["revoked_key", "retired_key"]);
    let keys_audit = history(&app, "r-3%2Fk2").await;
    let actions: Vec<&str> = keys_audit.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["key_registered", "key_confirmed", "key_revoked"]);
    app.stop().await;
}

#[tokio::test]
async fn a_restart_between_approval_and_ack_completes_the_command_once() {
    if !require("lifecycle::a_restart_between_approval_and_ack_completes_the_command_once") {
        return;
    }
    let platform = Platform::new().await;
    let app = platform.start(300, 60).await;
    let mut device = roasting_device(&platform, &app, "r-4").await;
    device.register(&app, "k1").await;
    let (_, c) = propose(&app, OPERATOR, "r-4", "drum", 65.0).await;
    let id = c["id"].as_str().unwrap().to_owned();
    call(
        &app,
        Method::POST,
        &format!("/proposals/{id}/approve"),
        Some(APPROVER),
        None,
    )
    .await;
    let command = device.next_command().await;
    assert_eq!(command.id, id);
    wait_state(&app, &id, "sent").await;
    let (_, c) = propose(&app, OPERATOR, "r-4", "gas", 55.0).await;
    let pending = c["id"].as_str().unwrap().to_owned();
    app.stop().await;

    // What a crash right after an approval leaves: approved in the store, never sent.
    let store = store::CommandsStore::postgres(&platform.db.url, &store::PostgresConfig::default())
        .await
        .unwrap();
    let approval = store::NewAudit {
        ts_ms: model::now_ms(),
        actor: "anna".into(),
        action: "approved".into(),
        subject: pending.clone(),
        reason: String::new(),
        detail: "{}".into(),
    };
    let changes = store::Changes {
        decided_by: Some("anna".into()),
        ..store::Changes::default()
    };
    assert!(
        store
            .transition(&pending, "proposed", "approved", &changes, &approval)
            .await
            .unwrap()
            .is_some()
    );
    store.close().await;

    // The ack arrives while the service is away; the broker keeps it for the next instance.
    device.ack(&id, "k1", None, false).await;
    let app = platform.start(300, 60).await;
    wait_state(&app, &id, "acked").await;
    let resent = device.next_command().await;
    assert_eq!(
        resent.id, pending,
        "the approved one is sent after the restart"
    );
    device.ack(&pending, "k1", None, false).await;
    wait_state(&app, &pending, "acked").await;
    assert_eq!(
        device.more_commands(Duration::from_secs(2)).await,
        0,
        "each sent once"
    );
    let actions: Vec<String> = history(&app, &id)
        .await
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(actions, ["proposed", "approved", "sent", "acked"]);
    let (_, v) = call(&app, Method::GET, "/audit/verify", Some(ADMIN), None).await;
    assert_eq!(v["ok"], true, "{v}");
    app.stop().await;
}

/// skywalker roasters may burn at most 60 % gas; the default is 100 %.
fn skywalker_gas_at_most_60(c: &mut command::Config) {
    let mut skywalker = command::ModelLimits::default();
    skywalker.gas.max = 60.0;
    c.command
        .limits
        .models
        .insert("skywalker".into(), skywalker);
}

/// A restart keeps what each device's session messages said: the session it roasts, and the
/// roaster model whose limits apply — telemetry after the restart tells the session again, but
/// only the session's start named the model. The end of a session is kept the same way.
#[tokio::test]
async fn a_restart_keeps_each_devices_session_and_roaster_model() {
    if !require("lifecycle::a_restart_keeps_each_devices_session_and_roaster_model") {
        return;
    }
    let platform = Platform::new().await;
    let app = platform.start_with(300, 60, skywalker_gas_at_most_60).await;
    let device = roasting_device(&platform, &app, "r-9").await;
    let (_, body) = propose(&app, OPERATOR, "r-9", "gas", 65.0).await;
    assert_eq!(body["reason"], "out_of_range", "{body}");
    app.stop().await;

    let app = platform.start_with(300, 60, skywalker_gas_at_most_60).await;
    // Roasting, as before; its burner's setting is not known until it reports again.
    let (_, body) = propose(&app, OPERATOR, "r-9", "gas", 55.0).await;
    assert_eq!(body["reason"], "current_value_unknown", "{body}");
    device.telemetry("s-1", 2, 50.0).await;
    let accepted = testkit::eventually(Duration::from_secs(10), "the gas to be known", || async {
        let (status, body) = propose(&app, OPERATOR, "r-9", "gas", 55.0).await;
        (status == StatusCode::CREATED).then_some(body)
    })
    .await;
    assert_eq!(accepted["session"], "s-1", "{accepted}");
    let (_, body) = propose(&app, OPERATOR, "r-9", "gas", 65.0).await;
    assert_eq!(
        (body["reason"].as_str(), body["limit"]["max"].as_f64()),
        (Some("out_of_range"), Some(60.0)),
        "the skywalker's limit, not the default's: {body}"
    );

    device
        .publish(
            "session",
            json!({"session": "s-1", "state": "end", "ts": model::now_ms()}),
        )
        .await;
    testkit::eventually(Duration::from_secs(10), "the end to be seen", || async {
        let (_, body) = propose(&app, OPERATOR, "r-9", "gas", 55.0).await;
        (body["reason"] == "no_active_session").then_some(())
    })
    .await;
    app.stop().await;
    let app = platform.start_with(300, 60, skywalker_gas_at_most_60).await;
    device.telemetry("s-1", 3, 50.0).await;
    let (_, body) = propose(&app, OPERATOR, "r-9", "gas", 55.0).await;
    assert_eq!(body["reason"], "no_active_session", "{body}");
    app.stop().await;
}

/// Without PostgreSQL the same lifecycle runs on the embedded SQLite store, and survives a
/// restart there.
#[tokio::test]
async fn the_lifecycle_runs_on_sqlite_and_survives_a_restart() {
    if !testkit::require(
        testkit::Server::Mosquitto,
        "lifecycle::the_lifecycle_runs_on_sqlite_and_survives_a_restart",
    ) {
        return;
    }
    let platform = Platform::new().await;
    let app = platform.start_sqlite(tempfile::tempdir().unwrap()).await;
    let mut device = roasting_device(&platform, &app, "r-5").await;
    device.register(&app, "k1").await;
    let (_, c) = propose(&app, OPERATOR, "r-5", "gas", 58.0).await;
    let id = c["id"].as_str().unwrap().to_owned();
    call(
        &app,
        Method::POST,
        &format!("/proposals/{id}/approve"),
        Some(APPROVER),
        None,
    )
    .await;
    let command = device.next_command().await;
    wait_state(&app, &id, "sent").await;
    let data = app.stop_keeping_data().await;
    assert!(data.path().join("commands.db").exists());

    device.ack(&command.id, "k1", None, false).await;
    let app = platform.start_sqlite(data).await;
    wait_state(&app, &id, "acked").await;
    let (_, v) = call(&app, Method::GET, "/audit/verify", Some(ADMIN), None).await;
    assert_eq!(v["ok"], true, "{v}");
    app.stop().await;
}
