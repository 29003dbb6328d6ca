//! The device's messages carry its signature (docs/protocol.md, "Signed messages"): session
//! messages always, telemetry frames with `sign_telemetry`; each verifies with the device's
//! public key over the topic it was published on.

use std::time::Duration;

use model::signed;
use testkit::Server;

use crate::{Watcher, sim_device};

#[tokio::test(flavor = "multi_thread")]
async fn session_messages_and_every_frame_are_signed_by_the_device_key() {
    if !testkit::require(
        Server::Mosquitto,
        "session_messages_and_every_frame_are_signed_by_the_device_key",
    ) {
        return;
    }
    let a = testkit::unique_name("dsig");
    let keys_dir = tempfile::tempdir().unwrap();
    let watcher = Watcher::start(1883, &[&a]).await;
    let app = testkit::spawn::<driver_bridge::DriverBridge>()
        .mqtt(&Server::Mosquitto.url())
        .set("hsm.dir", keys_dir.path().to_string_lossy().as_ref())
        .set("driver_bridge.sample_interval_ms", 100)
        .set("driver_bridge.sign_telemetry", true)
        .configure({
            let device = sim_device(&a);
            move |c| c.driver_bridge.devices = vec![device]
        })
        .start()
        .await;
    let (session, telemetry) = (
        format!("roasters/{a}/session"),
        format!("roasters/{a}/telemetry"),
    );
    testkit::eventually(Duration::from_secs(30), "a start and 5 frames", || async {
        (!watcher.on(&session).is_empty() && watcher.on(&telemetry).len() >= 5).then_some(())
    })
    .await;
    let view: serde_json::Value = app.get(&format!("/devices/{a}")).await;
    let public = keys::PublicKey::from_base64(view["public_key"].as_str().unwrap()).unwrap();
    let key_id = view["key_id"].as_str().unwrap();
    for topic in [&session, &telemetry] {
        for payload in watcher.on(topic) {
            let (body, sig) = signed::split(&payload);
            let sig = sig.expect("a signature line").unwrap();
            assert_eq!(sig.key_id, key_id);
            assert!(
                keys::verify(&public, &signed::signed_bytes(topic, body), &sig.sig),
                "{topic}: {}",
                String::from_utf8_lossy(&payload)
            );
            assert!(
                !keys::verify(
                    &public,
                    &signed::signed_bytes("roasters/someone-else/telemetry", body),
                    &sig.sig
                ),
                "the topic is signed"
            );
            // What it signs is the message every consumer reads.
            serde_json::from_slice::<serde_json::Value>(body).unwrap();
        }
    }
    app.stop().await;
}
