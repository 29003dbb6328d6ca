//! `loadtest commands` against a real command service and a real driver-bridge, both spawned in
//! this process on a private Mosquitto with a fresh database: driver-bridge's sim devices
//! register their keys with the command service, verify every command's signature and obey it,
//! and the harness sees every proposal approved, executed once and acknowledged.

use std::time::Duration;

use command::{CommandService, TokenEntry};
use driver_bridge::{DeviceConfig, DriverBridge, DriverKind, SimSettings};
use loadtest::commands::CommandsConfig;
use testkit::Server;

const OPERATOR: &str = "tok-lt-operator";
const APPROVER: &str = "tok-lt-approver";
const ADMIN: &str = "tok-lt-admin";
const ENROLL: &str = "tok-lt-enroll";

#[tokio::test(flavor = "multi_thread")]
async fn every_command_of_a_load_is_executed_once_and_acknowledged() {
    let name = "every_command_of_a_load_is_executed_once_and_acknowledged";
    if !testkit::require(Server::Postgres, name) {
        return;
    }
    let broker = testkit::PrivateMosquitto::start().await;
    let db = testkit::TestDatabase::create().await;
    let (command_keys, bridge_keys) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let command = testkit::spawn::<CommandService>()
        .mqtt(&broker.url())
        .postgres_url(&db.url)
        .set("hsm.dir", command_keys.path().to_string_lossy().as_ref())
        .configure(|c| {
            c.command.tokens = [
                (OPERATOR, "olga", "operator"),
                (APPROVER, "anna", "approver"),
                (ADMIN, "root", "admin"),
                (ENROLL, "driver-bridge", "device"),
            ]
            .into_iter()
            .map(|(token, actor, role)| TokenEntry::new(token, actor, &[role]))
            .collect();
        })
        .start()
        .await;
    let devices: Vec<DeviceConfig> = (0..4)
        .map(|n| DeviceConfig {
            id: format!("lt-cmd-{n}"),
            driver: DriverKind::Sim,
            // Real time: the roast outlasts the test, so every device stays in its session.
            sim: SimSettings {
                seed: n,
                ..SimSettings::default()
            },
            modbus: None,
            key_label: None,
        })
        .collect();
    let bridge = testkit::spawn::<DriverBridge>()
        .mqtt(&broker.url())
        .set("hsm.dir", bridge_keys.path().to_string_lossy().as_ref())
        .set("driver_bridge.sample_interval_ms", 200)
        .set("driver_bridge.command_url", command.url(""))
        .set("driver_bridge.enrollment_token", ENROLL)
        .configure(move |c| c.driver_bridge.devices = devices)
        .start()
        .await;

    // Ready when every device is registered and sampling, and the command service has seen it
    // roast (a proposal out of range is refused for its range, not for want of a session).
    let http = reqwest::Client::new();
    testkit::eventually(Duration::from_secs(30), "the devices to be commandable", || {
        let (http, bridge, command) = (http.clone(), bridge.url("/devices"), command.url("/proposals"));
        async move {
            let listed: Vec<serde_json::Value> = http.get(bridge).send().await.ok()?.json().await.ok()?;
            let ready = listed.len() == 4
                && listed.iter().all(|d| {
                    d["registered"] == true && d["state"] == "sampling" && d["last_sample"].is_object()
                });
            if !ready {
                return None;
            }
            for d in &listed {
                let probe = serde_json::json!({"device_id": d["id"], "control": "gas", "value": 1000.0, "reason": "probe"});
                let r = http.post(&command).bearer_auth(OPERATOR).json(&probe).send().await.ok()?;
                let v: serde_json::Value = r.json().await.ok()?;
                if v["reason"] != "out_of_range" {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;

    // 600 a minute for 10 s: 100 commands over 4 devices × 3 controls.
    let mut config = CommandsConfig::new(&command.url(""), &bridge.url(""));
    config.operator_token = OPERATOR.into();
    config.approver_token = APPROVER.into();
    config.admin_token = Some(ADMIN.into());
    config.per_min = 600;
    config.duration = Duration::from_secs(10);
    config.settle = Duration::from_secs(30);
    let report = loadtest::commands::run(&config).await.unwrap();
    let text = report.print();
    assert_eq!(report.devices, 4, "{text}");
    assert_eq!(
        (report.proposed, report.approved, report.acked),
        (100, 100, 100),
        "{text}"
    );
    assert_eq!(
        (
            report.lost,
            report.failed,
            report.executed_twice,
            report.errors
        ),
        (0, 0, 0, 0),
        "{text}"
    );
    assert!(report.refused.is_empty(), "{text}");
    assert_eq!(report.audit_intact, Some(true), "{text}");
    assert_eq!(report.api.count, 200, "{text}");
    assert_eq!(report.propose_to_acked.count, 100, "{text}");
    // The API's latency is the harness's measurement, judged on a release build, not here.
    assert!(
        report.failures().iter().all(|f| f.starts_with("API p95")),
        "{text}"
    );
}
