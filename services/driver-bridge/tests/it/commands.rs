//! What a device obeys — a good command, applied and visible in its curve — and what it
//! refuses, each with its code and the control left as it was.

use std::time::Duration;

use model::command::{Control, Outcome, Refusal};
use testkit::Server;

use crate::{CommandSigner, Watcher, bridge, sim_device};

fn require(test: &str) -> bool {
    testkit::require(Server::Mosquitto, test)
}

async fn device_key(
    app: &testkit::TestService<driver_bridge::DriverBridge>,
    id: &str,
) -> (String, keys::PublicKey) {
    let v: serde_json::Value = app.get(&format!("/devices/{id}")).await;
    let session = v["session"].as_str().unwrap_or_default().to_owned();
    (
        session,
        keys::PublicKey::from_base64(v["public_key"].as_str().unwrap()).unwrap(),
    )
}

/// The device's session once it has published at least `seq` points.
async fn session_at(w: &Watcher, device: &str, seq: u64) -> String {
    testkit::eventually(Duration::from_secs(30), "the device's points", || async {
        w.points(device)
            .iter()
            .find(|p| p["seq"].as_u64() >= Some(seq))
            .map(|p| p["session"].as_str().unwrap().to_owned())
    })
    .await
}

/// The point of `device`'s `session` with `seq`, once published.
async fn point(w: &Watcher, device: &str, session: &str, seq: u64) -> serde_json::Value {
    testkit::eventually(Duration::from_secs(30), "a point", || async {
        w.points(device)
            .into_iter()
            .find(|p| p["session"] == session && p["seq"].as_u64() == Some(seq))
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_command_is_applied_acked_by_the_device_key_and_bends_the_curve() {
    if !require("a_signed_command_is_applied_acked_by_the_device_key_and_bends_the_curve") {
        return;
    }
    let (a, b) = (testkit::unique_name("dba"), testkit::unique_name("dbb"));
    let signer = CommandSigner::new("command-1");
    let keys_dir = tempfile::tempdir().unwrap();
    let watcher = Watcher::start(1883, &[&a, &b]).await;
    // Two identical roasters: `b`, never commanded, is what `a` would have done.
    let app = bridge(
        &Server::Mosquitto.url(),
        vec![sim_device(&a), sim_device(&b)],
        vec![signer.trusted()],
        keys_dir.path(),
        None,
    )
    .await;
    let sa = session_at(&watcher, &a, 15).await;
    let sb = session_at(&watcher, &b, 15).await;
    let (_, key_a) = device_key(&app, &a).await;
    let profile_gas = point(&watcher, &a, &sa, 15).await["channels"]["gas"]
        .as_f64()
        .unwrap();
    assert!(profile_gas > 60.0, "the profile's gas {profile_gas}");

    // Early in the roast the profile runs the burner high: a cut to 30 % must show.
    let cmd = signer.command(&a, &sa, Control::Gas, 30.0);
    watcher.publish_command(&a, cmd.to_json()).await;
    let ack = watcher.ack(&a, &key_a, &cmd.id).await;
    assert_eq!((ack.outcome, ack.reason), (Outcome::Applied, None));
    assert_eq!(ack.key_id, format!("{a}.k1"));

    // From the next sample on, the gas channel says 30 and BT climbs slower than b's.
    let applied_at = testkit::eventually(Duration::from_secs(20), "gas 30 published", || async {
        watcher
            .points(&a)
            .into_iter()
            .find(|p| p["session"] == sa.as_str() && p["channels"]["gas"] == 30.0)
            .map(|p| p["seq"].as_u64().unwrap())
    })
    .await;
    let later = applied_at + 10;
    let pa = point(&watcher, &a, &sa, later).await;
    let pb = point(&watcher, &b, &sb, later).await;
    assert_eq!(pa["channels"]["gas"], 30.0);
    assert!(pb["channels"]["gas"].as_f64().unwrap() > 30.0);
    let (bt_a, bt_b) = (
        pa["channels"]["bt"].as_f64().unwrap(),
        pb["channels"]["bt"].as_f64().unwrap(),
    );
    let (ror_a, ror_b) = (
        pa["channels"]["ror"].as_f64().unwrap(),
        pb["channels"]["ror"].as_f64().unwrap(),
    );
    assert!(bt_a < bt_b - 1.0, "BT {bt_a} commanded vs {bt_b}");
    assert!(ror_a < ror_b, "RoR {ror_a} commanded vs {ror_b}");

    let view: serde_json::Value = app.get(&format!("/devices/{a}")).await;
    assert_eq!(view["commands_applied"], 1);
    assert_eq!(view["driver"], "sim");
    let metrics = app.text("/metrics").await;
    testkit::assert_every_type_has_help(&metrics);
    for name in [
        "simcorp_driver_bridge_samples_total",
        "simcorp_driver_bridge_outbox_messages",
        "simcorp_driver_bridge_outbox_dropped_total",
        "simcorp_driver_bridge_mqtt_connected 1",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    assert!(
        metrics.contains("simcorp_driver_bridge_commands_total{outcome=\"applied\",reason=\"\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_commands_are_refused_with_their_code_and_change_nothing() {
    if !require("bad_commands_are_refused_with_their_code_and_change_nothing") {
        return;
    }
    let (a, b) = (testkit::unique_name("dra"), testkit::unique_name("drb"));
    let signer = CommandSigner::new("command-1");
    let rogue = CommandSigner::new("rogue-1");
    let keys_dir = tempfile::tempdir().unwrap();
    let watcher = Watcher::start(1883, &[&a, &b]).await;
    let app = bridge(
        &Server::Mosquitto.url(),
        vec![sim_device(&a), sim_device(&b)],
        vec![signer.trusted()],
        keys_dir.path(),
        None,
    )
    .await;
    let sa = session_at(&watcher, &a, 3).await;
    let (_, key_a) = device_key(&app, &a).await;

    let gas = |v: f64| signer.command(&a, &sa, Control::Gas, v);
    let mut forged = gas(99.0);
    forged.sig[10] ^= 1;
    // Cut short on the way: not JSON any more, but its id can still be made out.
    let truncated_cmd = gas(98.0);
    let truncated = {
        let json = truncated_cmd.to_json();
        json[..json.len() - 20].to_vec()
    };
    let mut expired = gas(97.0);
    expired.issued_ms -= 60_000;
    expired.not_after_ms = expired.issued_ms + 1_000;
    signer.sign(&mut expired);
    // Signed for b, sent to a.
    let mut misaddressed = signer.command(&b, &sa, Control::Gas, 96.0);
    misaddressed.device_id = a.clone();
    let untrusted = rogue.command(&a, &sa, Control::Gas, 95.0);
    // The command service's key id, someone else's key.
    let mut impostor = rogue.command(&a, &sa, Control::Gas, 94.0);
    impostor.key_id = "command-1".into();
    rogue.sign(&mut impostor);
    let wrong_session = signer.command(&a, "some-other-session", Control::Gas, 93.0);

    let cases: Vec<(&str, String, Vec<u8>, Refusal)> = vec![
        (
            "forged",
            forged.id.clone(),
            forged.to_json(),
            Refusal::BadSignature,
        ),
        (
            "truncated",
            truncated_cmd.id.clone(),
            truncated,
            Refusal::Malformed,
        ),
        (
            "expired",
            expired.id.clone(),
            expired.to_json(),
            Refusal::Expired,
        ),
        (
            "misaddressed",
            misaddressed.id.clone(),
            misaddressed.to_json(),
            Refusal::Misaddressed,
        ),
        (
            "untrusted key",
            untrusted.id.clone(),
            untrusted.to_json(),
            Refusal::UnknownKey,
        ),
        (
            "impostor key",
            impostor.id.clone(),
            impostor.to_json(),
            Refusal::BadSignature,
        ),
        (
            "wrong session",
            wrong_session.id.clone(),
            wrong_session.to_json(),
            Refusal::WrongSession,
        ),
    ];
    for (what, id, payload, want) in cases {
        watcher.publish_command(&a, payload).await;
        let ack = watcher.ack(&a, &key_a, &id).await;
        assert_eq!(
            (ack.outcome, ack.reason),
            (Outcome::Refused, Some(want)),
            "{what}: {:?}",
            ack.detail
        );
    }

    // A good one, applied once; the same bytes again are a replay.
    let good = gas(50.0);
    watcher.publish_command(&a, good.to_json()).await;
    let first = watcher.ack(&a, &key_a, &good.id).await;
    assert_eq!(first.outcome, Outcome::Applied);
    let before = watcher.on(&format!("roasters/{a}/commands/ack")).len();
    watcher.publish_command(&a, good.to_json()).await;
    testkit::eventually(Duration::from_secs(20), "the replay's ack", || async {
        let acks: Vec<_> = watcher
            .on(&format!("roasters/{a}/commands/ack"))
            .iter()
            .skip(before)
            .map(|p| model::command::Ack::decode(&a, p).unwrap())
            .collect();
        acks.into_iter().find(|x| x.command_id == good.id)
    })
    .await
    .tap_reason(Refusal::Replayed);

    // Every refused command left the gas where the profile had it until the good one: a's
    // points before it match b's, the same roast never commanded.
    let applied_at = testkit::eventually(Duration::from_secs(20), "gas 50 published", || async {
        watcher
            .points(&a)
            .into_iter()
            .find(|p| p["session"] == sa.as_str() && p["channels"]["gas"] == 50.0)
            .map(|p| p["seq"].as_u64().unwrap())
    })
    .await;
    let sb = session_at(&watcher, &b, applied_at).await;
    for p in watcher
        .points(&a)
        .iter()
        .filter(|p| p["session"] == sa.as_str() && p["seq"].as_u64().unwrap() < applied_at)
    {
        let seq = p["seq"].as_u64().unwrap();
        let q = watcher
            .points(&b)
            .into_iter()
            .find(|q| q["session"] == sb.as_str() && q["seq"].as_u64() == Some(seq))
            .unwrap();
        assert_eq!(p["channels"], q["channels"], "seq {seq}");
    }

    let view: serde_json::Value = app.get(&format!("/devices/{a}")).await;
    assert_eq!(view["commands_applied"], 1);
    let refused = &view["commands_refused"];
    for (code, n) in [
        ("bad_signature", 2),
        ("malformed", 1),
        ("expired", 1),
        ("misaddressed", 1),
        ("unknown_key", 1),
        ("replayed", 1),
        ("wrong_session", 1),
    ] {
        assert_eq!(refused[code], n, "{code}: {view}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_seen_before_a_restart_is_a_replay_after_it() {
    if !require("a_command_seen_before_a_restart_is_a_replay_after_it") {
        return;
    }
    let a = testkit::unique_name("drr");
    let signer = CommandSigner::new("command-1");
    let keys_dir = tempfile::tempdir().unwrap();
    let watcher = Watcher::start(1883, &[&a]).await;
    let app = bridge(
        &Server::Mosquitto.url(),
        vec![sim_device(&a)],
        vec![signer.trusted()],
        keys_dir.path(),
        None,
    )
    .await;
    let sa = session_at(&watcher, &a, 2).await;
    let (_, key_a) = device_key(&app, &a).await;
    let cmd = signer.command(&a, &sa, Control::Air, 80.0);
    watcher.publish_command(&a, cmd.to_json()).await;
    assert_eq!(
        watcher.ack(&a, &key_a, &cmd.id).await.outcome,
        Outcome::Applied
    );
    let data = app.stop_keeping_data().await;

    let app = bridge(
        &Server::Mosquitto.url(),
        vec![sim_device(&a)],
        vec![signer.trusted()],
        keys_dir.path(),
        Some(data),
    )
    .await;
    // The same key: the identity lives in the keystore, not in the process.
    let (_, again) = device_key(&app, &a).await;
    assert_eq!(again, key_a);
    let before = watcher.on(&format!("roasters/{a}/commands/ack")).len();
    watcher.publish_command(&a, cmd.to_json()).await;
    testkit::eventually(Duration::from_secs(20), "the replay's ack", || async {
        watcher
            .on(&format!("roasters/{a}/commands/ack"))
            .iter()
            .skip(before)
            .map(|p| model::command::Ack::decode(&a, p).unwrap())
            .find(|x| x.command_id == cmd.id)
    })
    .await
    .tap_reason(Refusal::Replayed);
    app.stop().await;
}

trait AckExt {
    fn tap_reason(self, want: Refusal);
}

impl AckExt for model::command::Ack {
    fn tap_reason(self, want: Refusal) {
        assert_eq!(
            (self.outcome, self.reason),
            (Outcome::Refused, Some(want)),
            "{:?}",
            self.detail
        );
    }
}

/// What the stand-in command service was sent: (device, Authorization header, body).
type Registrations = std::sync::Arc<std::sync::Mutex<Vec<(String, String, serde_json::Value)>>>;

/// The command service's two endpoints the bridge calls, as its contract says they answer.
async fn command_service(signer: &CommandSigner, seen: Registrations) -> String {
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    let keys = serde_json::json!([signer.trusted()]);
    let app = axum::Router::new()
        .route(
            "/keys/command",
            get(move || {
                let keys = keys.clone();
                async move { axum::Json(keys) }
            }),
        )
        .route(
            "/devices/{id}/keys",
            post(
                |State(seen): State<Registrations>,
                 Path(id): Path<String>,
                 headers: HeaderMap,
                 axum::Json(body): axum::Json<serde_json::Value>| async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    seen.lock().unwrap().push((id, auth, body));
                    StatusCode::CREATED
                },
            ),
        )
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn command_keys_are_fetched_and_device_keys_registered_with_the_command_service() {
    if !require("command_keys_are_fetched_and_device_keys_registered_with_the_command_service") {
        return;
    }
    let a = testkit::unique_name("dce");
    let signer = CommandSigner::new("command-7");
    let seen = Registrations::default();
    let url = command_service(&signer, seen.clone()).await;
    let keys_dir = tempfile::tempdir().unwrap();
    let watcher = Watcher::start(1883, &[&a]).await;
    let device = sim_device(&a);
    // No trusted key configured: the only one comes from the command service.
    let app = testkit::spawn::<driver_bridge::DriverBridge>()
        .mqtt(&Server::Mosquitto.url())
        .set("hsm.dir", keys_dir.path().to_string_lossy().as_ref())
        .set("driver_bridge.sample_interval_ms", 100)
        .set("driver_bridge.command_url", url.as_str())
        .set("driver_bridge.enrollment_token", "enrol-s3cret")
        .configure(move |c| c.driver_bridge.devices = vec![device])
        .start()
        .await;
    let (_, key_a) = device_key(&app, &a).await;
    let (id, auth, body) = testkit::eventually(
        Duration::from_secs(20),
        "the device key registered",
        || async { seen.lock().unwrap().first().cloned() },
    )
    .await;
    assert_eq!(id, a);
    assert_eq!(auth, "Bearer enrol-s3cret");
    assert_eq!(body["key_id"], format!("{a}.k1").as_str());
    assert_eq!(body["public_key"], key_a.to_base64().as_str());
    testkit::eventually(Duration::from_secs(10), "registered shown", || async {
        let v: serde_json::Value = app.get(&format!("/devices/{a}")).await;
        (v["registered"] == true).then_some(())
    })
    .await;
    let listed: Vec<serde_json::Value> = app.get("/devices").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["key_id"], format!("{a}.k1").as_str());

    let sa = session_at(&watcher, &a, 2).await;
    let cmd = signer.command(&a, &sa, Control::Drum, 40.0);
    watcher.publish_command(&a, cmd.to_json()).await;
    let ack = watcher.ack(&a, &key_a, &cmd.id).await;
    assert_eq!(ack.outcome, Outcome::Applied, "{:?}", ack.detail);
    app.stop().await;
}
