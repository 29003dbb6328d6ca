//! A short harness run against the real ingestion service, in this process (`testkit::spawn`),
//! on a private Mosquitto with the project's broker configuration and a fresh database: 50
//! sessions replaying a recorded roast, accelerated (20 points/s each, 10–20× a real roaster),
//! for 15 s. Whatever this machine's speed, nothing may be lost or stored twice, and the
//! per-second series and the HTML report must be there.

use std::time::Duration;

use loadtest::monitor::ProcessReport;
use loadtest::report::LatencyReport;
use loadtest::verify::VerifyConfig;
use loadtest::{RunConfig, Source};
use testkit::Server;

#[tokio::test(flavor = "multi_thread")]
async fn a_short_run_against_the_real_ingestion_loses_and_duplicates_nothing() {
    let name = "a_short_run_against_the_real_ingestion_loses_and_duplicates_nothing";
    if !testkit::require(Server::Postgres, name) || !testkit::require(Server::Mosquitto, name) {
        return;
    }
    let broker = testkit::PrivateMosquitto::start().await;
    let db = testkit::TestDatabase::create().await;
    let service = testkit::spawn::<ingestion::Ingestion>()
        .mqtt(&broker.url())
        .postgres_url(&db.url)
        .set("ingestion.drain_timeout_secs", 10)
        .start()
        .await;

    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/roast-logs/skywalker");
    let mut config = RunConfig::new(&broker.url(), &db.url);
    config.ingestion = Some(service.url(""));
    config.rate = 1000;
    config.duration = Duration::from_secs(15);
    config.sessions = 50;
    config.connections = 4;
    config.source = Source::replay(&fixture).unwrap();
    config.progress = false;
    config.verify = VerifyConfig {
        deadline: Duration::from_secs(60),
        settle: Duration::from_secs(5),
        poll: Duration::from_millis(200),
        progress_every: None,
    };
    let report = loadtest::run(&config).await.unwrap();
    let text = report.render();

    let (p, t) = (&report.publish, &report.verification.tally);
    assert_eq!(p.points_published, 15_000, "{text}");
    assert!(p.all_acked, "{text}");
    assert_eq!(p.points_acked, 15_000, "{text}");
    // Every telemetry message's publish-to-PUBACK time was recorded (frames of 1 point here).
    assert_eq!(p.broker_ack.count, 15_000, "{text}");
    assert!(
        p.broker_ack.p50_ms > 0.0 && p.broker_ack.p50_ms <= p.broker_ack.max_ms,
        "{text}"
    );
    assert_eq!((t.expected, t.stored_distinct), (15_000, 15_000), "{text}");
    assert_eq!(t.lost, 0, "{text}");
    assert_eq!(t.duplicated, 0, "{text}");
    assert_eq!(t.unexpected, 0, "{text}");

    // The whole run's latency: exactly this run's points (the database is fresh, but
    // ingestion is not restarted between the snapshots: the figure is a difference).
    let LatencyReport::Available {
        publish_to_commit,
        points_committed,
        ..
    } = &report.latency
    else {
        panic!("latency should be available: {text}");
    };
    assert_eq!(publish_to_commit.count, 15_000, "{text}");
    assert_eq!(*points_committed, Some(15_000), "{text}");
    assert!(publish_to_commit.p50_ms <= publish_to_commit.p95_ms);
    assert!(publish_to_commit.p95_ms <= publish_to_commit.max_ms);

    // A second-by-second series covers the run, with latency in (almost) every second, and the
    // per-second counts add up to the run's.
    let under_load: Vec<_> = report.series.iter().filter(|s| s.t_s <= 15.0).collect();
    assert!(under_load.len() >= 12, "{:?}", report.series);
    let with_latency = under_load.iter().filter(|s| s.latency.is_some()).count();
    assert!(with_latency >= 10, "{:?}", report.series);
    let counted: u64 = report
        .series
        .iter()
        .filter_map(|s| s.latency.map(|l| l.count))
        .sum();
    assert!(counted <= 15_000, "{counted}");
    assert!(report.series.iter().any(|s| s.cpu_cores.is_some()));
    assert!(
        matches!(report.process, ProcessReport::Available { rss_peak_bytes: Some(b), .. } if b > 0.0),
        "{text}"
    );
    assert_eq!(report.source.kind, "replay");

    let out = tempfile::tempdir().unwrap();
    let (json, html) = (out.path().join("run.json"), out.path().join("run.html"));
    report.write_json(&json).unwrap();
    loadtest::html::write(&report, &html).unwrap();
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 4);
    assert!(page.contains("Latency over time"));
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(written["series"].as_array().unwrap().len() >= 12);
    assert_eq!(written["verification"]["lost"], 0);

    service.stop().await;
}

/// Devices that keep their keys in an HSM (SoftHSM2 through PKCS#11: every signature made in
/// the token) sign every message, and ingestion, requiring signatures, stores every point; the
/// keys are gone from the token afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn hsm_signed_messages_are_all_verified_and_stored() {
    let name = "hsm_signed_messages_are_all_verified_and_stored";
    if !testkit::require(Server::Postgres, name) {
        return;
    }
    let Some(token) = testkit::softhsm::SoftHsmToken::create(name) else {
        return;
    };
    let broker = testkit::PrivateMosquitto::start().await;
    let db = testkit::TestDatabase::create().await;
    let service = testkit::spawn::<ingestion::Ingestion>()
        .mqtt(&broker.url())
        .postgres_url(&db.url)
        .set("ingestion.require_signed_telemetry", true)
        .set("ingestion.require_signed_sessions", true)
        .start()
        .await;
    let keystore = keys::Config {
        enabled: true,
        module: token.module.clone(),
        token: token.label.clone(),
        pin: Some(token.pin.clone().into()),
        dir: std::path::PathBuf::new(),
    };
    let mut config = RunConfig::new(&broker.url(), &db.url);
    config.ingestion = Some(service.url(""));
    config.rate = 200;
    config.duration = Duration::from_secs(3);
    config.sessions = 5;
    config.frame = 5;
    config.connections = 2;
    config.sign = true;
    config.sign_keystore = Some(keystore.clone());
    config.progress = false;
    let report = loadtest::run(&config).await.unwrap();
    let text = report.render();
    let t = &report.verification.tally;
    assert!(t.expected >= 500, "{text}");
    assert_eq!(t.stored_distinct, t.expected, "{text}");
    assert_eq!((t.lost, t.duplicated), (0, 0), "{text}");
    let metrics = service.get_text("/metrics").await.1;
    for reason in ["unsigned", "bad_signature"] {
        let line = format!("simcorp_ingestion_rejected_total{{reason=\"{reason}\"}} 0");
        assert!(metrics.contains(&line), "want {line}");
    }
    let store = keys::Keystore::open(&keystore).unwrap();
    let device = loadtest::plan::device_id(&report.plan.run_id, 0);
    assert!(
        store.find(&device).unwrap().is_none(),
        "the run's keys are destroyed"
    );
}
