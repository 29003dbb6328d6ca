//! A short harness run against the real ingestion service, in this process (`ingestion::run`),
//! on a private Mosquitto with the project's broker configuration and a fresh database: 50
//! sessions replaying a recorded roast, accelerated (20 points/s each, 10–20× a real roaster),
//! for 15 s. Whatever this machine's speed, nothing may be lost or stored twice, and the
//! per-second series and the HTML report must be there.

use std::time::Duration;

use loadtest::monitor::ProcessReport;
use loadtest::report::LatencyReport;
use loadtest::verify::VerifyConfig;
use loadtest::{RunConfig, Source};
use secrecy::SecretString;
use testkit::Server;
use tokio::sync::oneshot;

/// The real service, until dropped or stopped.
struct Ingestion {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ingestion::Error>>,
    _data: tempfile::TempDir,
}

impl Ingestion {
    async fn start(mqtt_url: &str, postgres_url: &str) -> Ingestion {
        let data = tempfile::tempdir().unwrap();
        let mut config = ingestion::Config {
            data_dir: data.path().to_owned(),
            ..ingestion::Config::default()
        };
        config.mqtt.url = mqtt_url.to_owned();
        config.mqtt.client_id = Some(testkit::unique_name("ingestion"));
        config.postgres.url = Some(SecretString::from(postgres_url.to_owned()));
        config.ingestion.http_addr = "127.0.0.1:0".parse().unwrap();
        config.ingestion.drain_timeout_secs = 10;
        config.log.format = kit::telemetry::LogFormat::Text;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ingestion::run(config, listener, async move {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::new();
        let ready = format!("{base}/ready");
        testkit::eventually(Duration::from_secs(20), "ingestion to be ready", || {
            let (http, ready) = (http.clone(), ready.clone());
            async move {
                let response = http.get(&ready).send().await.ok()?;
                response.status().is_success().then_some(())
            }
        })
        .await;
        Ingestion {
            base,
            stop: Some(stop),
            task,
            _data: data,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_run_against_the_real_ingestion_loses_and_duplicates_nothing() {
    let name = "a_short_run_against_the_real_ingestion_loses_and_duplicates_nothing";
    if !testkit::require(Server::Postgres, name) || !testkit::require(Server::Mosquitto, name) {
        return;
    }
    let broker = testkit::PrivateMosquitto::start().await;
    let db = testkit::TestDatabase::create().await;
    let service = Ingestion::start(&broker.url(), &db.url).await;

    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut config = RunConfig::new(&broker.url(), &db.url);
    config.ingestion = Some(service.base.clone());
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
