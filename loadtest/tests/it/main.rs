//! The harness against real servers: verification on a fresh PostgreSQL database; tiny
//! end-to-end runs through the shared Mosquitto into a stand-in for ingestion that this test
//! controls, so that the harness is seen to report exactly the losses and duplicates made; and
//! a short run against the real ingestion ([`real_ingestion`]); and `loadtest commands` against
//! a real command service and driver-bridge ([`commands`]); and `loadtest missions` against a
//! real company-kernel with its workers killed ([`missions`]).
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.

mod commands;
mod missions;
mod real_ingestion;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer as _, V2DeflateSerializer};

use loadtest::plan::{device_id, new_run_id, session_id};
use loadtest::report::LatencyReport;
use loadtest::verify::{Expected, Settled, VerifyConfig};
use loadtest::{RunConfig, Verdict};
use sqlx::PgPool;
use testkit::{Server, TestDatabase};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A fresh database with ingestion's own schema (migrations/postgres, via the store).
async fn database() -> (TestDatabase, PgPool) {
    let db = TestDatabase::create().await;
    store::PgStore::connect(&db.url, &store::PostgresConfig::default())
        .unwrap()
        .migrate()
        .await
        .unwrap();
    let pool = PgPool::connect(&db.url).await.unwrap();
    (db, pool)
}

/// Stores one point as ingestion would; `ts_ms` may be shifted to store an identity twice
/// (the primary key includes `ts`).
async fn store(pool: &PgPool, device: &str, session: &str, seq: u64, ts_ms: i64, bt: f64) {
    sqlx::query(
        "INSERT INTO telemetry (device_id, session, seq, ts, bt, received_at)
         VALUES ($1, $2, $3, to_timestamp($4::float8 / 1000), $5, now())",
    )
    .bind(device)
    .bind(session)
    .bind(i64::try_from(seq).unwrap())
    .bind(ts_ms)
    .bind(bt)
    .execute(pool)
    .await
    .unwrap();
}

fn quick() -> VerifyConfig {
    VerifyConfig {
        deadline: Duration::from_secs(20),
        settle: Duration::from_millis(1500),
        poll: Duration::from_millis(50),
        progress_every: None,
    }
}

#[tokio::test]
async fn verification_counts_lost_and_duplicated_points() {
    if !testkit::require(
        Server::Postgres,
        "verification_counts_lost_and_duplicated_points",
    ) {
        return;
    }
    let (db, pool) = database().await;
    let run = new_run_id();
    // 2 sessions × 50 points: session 0 loses seq 7 and has seq 10 twice, session 1 loses 30.
    let now = model::now_ms();
    for n in 0..2u32 {
        for seq in 0..50u64 {
            if (n, seq) == (0, 7) || (n, seq) == (1, 30) {
                continue;
            }
            let (d, s) = (device_id(&run, n), session_id(&run, n));
            store(&pool, &d, &s, seq, now, 100.0).await;
            if (n, seq) == (0, 10) {
                store(&pool, &d, &s, seq, now + 1, 100.0).await;
            }
        }
    }
    // Another run's rows, which must not be counted.
    let other = format!("{run}x");
    store(
        &pool,
        &device_id(&other, 0),
        &session_id(&other, 0),
        7,
        now,
        1.0,
    )
    .await;
    store(
        &pool,
        &device_id(&other, 0),
        &session_id(&other, 0),
        7,
        now + 1,
        1.0,
    )
    .await;

    let expected = Expected {
        run_id: run.clone(),
        sessions: Some(2),
        points_per_session: Some(50),
    };
    let verifier = loadtest::verify::Database::Postgres(pool.clone());
    let v = loadtest::verify::verify(&verifier, &expected, &quick())
        .await
        .unwrap();
    let t = v.tally;
    assert_eq!((t.expected, t.lost, t.duplicated), (100, 2, 1), "{v:?}");
    assert_eq!(
        (t.stored_distinct, t.stored_rows, t.unexpected),
        (98, 99, 0)
    );
    assert_eq!(
        v.missing_examples,
        vec![
            format!("lt-{run}-0/{run}-s0#7"),
            format!("lt-{run}-1/{run}-s1#30")
        ]
    );
    assert_eq!(
        v.duplicate_examples,
        vec![format!("lt-{run}-0/{run}-s0#10 ×2")]
    );
    assert_eq!(
        v.settled,
        Settled::Stable,
        "99 rows of 100: waits until stable"
    );

    // `check` with nothing but the run id still sees gaps (not lost tails).
    let only_id = Expected {
        run_id: run.clone(),
        sessions: None,
        points_per_session: None,
    };
    let checked = loadtest::check(&db.url, &only_id, &quick()).await.unwrap();
    assert_eq!(checked.verdict, Verdict::Fail);
    assert_eq!(
        (
            checked.verification.tally.lost,
            checked.verification.tally.duplicated
        ),
        (2, 1)
    );
    assert!(!checked.verification.complete_expectation);
    assert!(checked.render().contains("cannot be seen"));
}

#[tokio::test]
async fn a_complete_run_stops_waiting_as_soon_as_everything_is_stored() {
    if !testkit::require(Server::Postgres, "a_complete_run_stops_waiting") {
        return;
    }
    let (_db, pool) = database().await;
    let run = new_run_id();
    for seq in 0..20 {
        store(
            &pool,
            &device_id(&run, 0),
            &session_id(&run, 0),
            seq,
            1,
            1.0,
        )
        .await;
    }
    let expected = Expected {
        run_id: run,
        sessions: Some(1),
        points_per_session: Some(20),
    };
    let config = VerifyConfig {
        settle: Duration::from_secs(30),
        ..quick()
    };
    let verifier = loadtest::verify::Database::Postgres(pool.clone());
    let v = loadtest::verify::verify(&verifier, &expected, &config)
        .await
        .unwrap();
    assert_eq!(v.settled, Settled::Complete);
    assert!(v.waited_secs < 5.0, "{}", v.waited_secs);
    assert_eq!((v.tally.lost, v.tally.duplicated), (0, 0));
}

/// A stand-in for ingestion: subscribes to the run's devices, decodes with the device contract
/// and stores each point, except those in `skip`; those in `twice` are stored twice. Each
/// stored point is recorded with a publish→commit latency of exactly 3.5 ms.
struct FakeIngestion {
    committed: Arc<AtomicU64>,
    latency: Arc<Mutex<Histogram<u64>>>,
    session_events: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

async fn fake_ingestion(
    run: &str,
    sessions: u32,
    pool: PgPool,
    skip: HashSet<(u32, u64)>,
    twice: HashSet<(u32, u64)>,
) -> FakeIngestion {
    let addr = Server::Mosquitto.addr();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut options =
        rumqttc::MqttOptions::new(testkit::unique_name("lt-sub"), host, port.parse().unwrap());
    options.set_clean_session(true);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 100);
    let filters: Vec<_> = (0..sessions)
        .map(|n| rumqttc::SubscribeFilter {
            path: format!("roasters/{}/+", device_id(run, n)),
            qos: rumqttc::QoS::AtLeastOnce,
        })
        .collect();
    client.subscribe_many(filters).await.unwrap();
    // Subscribed before the first publish, or the start of the run would be missed.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("subscribing: {other:?}"),
        }
    }
    let committed = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(
        Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap(),
    ));
    let session_events = Arc::new(AtomicU64::new(0));
    let prefix = format!("lt-{run}-");
    let task = tokio::spawn({
        let (committed, session_events) = (committed.clone(), session_events.clone());
        let latency = latency.clone();
        async move {
            let _client = client; // Dropping it would end the event loop.
            while let Ok(event) = eventloop.poll().await {
                let rumqttc::Event::Incoming(rumqttc::Packet::Publish(msg)) = event else {
                    continue;
                };
                let topic = model::parse_topic(&msg.topic).unwrap();
                let now = model::now_ms();
                let limits = model::Limits::default();
                if topic.kind == model::TopicKind::Session {
                    model::decode_session(topic.device_id, &msg.payload, now, &limits).unwrap();
                    session_events.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let n: u32 = topic
                    .device_id
                    .strip_prefix(&prefix)
                    .unwrap()
                    .parse()
                    .unwrap();
                let decoded =
                    model::decode_telemetry(topic.device_id, &msg.payload, now, &limits).unwrap();
                assert!(decoded.rejected.is_empty(), "{:?}", decoded.rejected);
                for p in decoded.points {
                    if skip.contains(&(n, p.seq)) {
                        continue;
                    }
                    let bt = p.channels.bt.unwrap();
                    store(&pool, &p.device_id, &p.session, p.seq, p.ts_ms, bt).await;
                    if twice.contains(&(n, p.seq)) {
                        store(&pool, &p.device_id, &p.session, p.seq, p.ts_ms + 1, bt).await;
                    }
                    latency.lock().unwrap().record(3500).unwrap();
                    committed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    FakeIngestion {
        committed,
        latency,
        session_events,
        task,
    }
}

/// Serves what the harness reads of ingestion: `/stats` (the stand-in's commit count),
/// `/stats/latency` (its histogram) and `/metrics` (a process using 0.1 CPU s per request).
async fn fake_api(fake: &FakeIngestion) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (committed, latency) = (fake.committed.clone(), fake.latency.clone());
    tokio::spawn(async move {
        let mut cpu = 0.0;
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let n = socket.read(&mut request).await.unwrap();
            let request = String::from_utf8_lossy(&request[..n]).into_owned();
            let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
            let body = match path.as_str() {
                "/stats" => format!(
                    r#"{{"uptime_s":3,"pipeline":{{"points_committed":{},"publish_to_commit":{{"count":0,"p50_ms":0,"p95_ms":0,"p99_ms":0,"max_ms":0}},"receive_to_commit":{{"count":0,"p50_ms":0,"p95_ms":0,"p99_ms":0,"max_ms":0}}}}}}"#,
                    committed.load(Ordering::Relaxed)
                ),
                "/stats/latency" => {
                    let encode = |h: &Histogram<u64>| {
                        let mut buf = Vec::new();
                        V2DeflateSerializer::new().serialize(h, &mut buf).unwrap();
                        base64::engine::general_purpose::STANDARD.encode(buf)
                    };
                    let h = latency.lock().unwrap().clone();
                    format!(
                        r#"{{"unit":"us","publish_to_commit":"{}","receive_to_commit":"{}"}}"#,
                        encode(&h),
                        encode(&h)
                    )
                }
                "/metrics" => {
                    cpu += 0.1;
                    format!(
                        "process_cpu_seconds_total {cpu}\nprocess_resident_memory_bytes 10485760\n"
                    )
                }
                _ => String::new(),
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(response.as_bytes()).await.unwrap();
        }
    });
    base
}

fn tiny_run(db: &TestDatabase, run: &str, rate: u64, duration: Duration, frame: u32) -> RunConfig {
    let mut config = RunConfig::new(&Server::Mosquitto.url(), &db.url);
    config.run_id = Some(run.to_owned());
    config.rate = rate;
    config.duration = duration;
    config.sessions = 2;
    config.frame = frame;
    config.connections = 2;
    config.ack_timeout = Duration::from_secs(10);
    config.verify = quick();
    config.progress = false;
    config
}

#[tokio::test]
async fn a_tiny_run_reports_exactly_the_losses_and_duplicates_made() {
    let name = "a_tiny_run_reports_exactly_the_losses_and_duplicates_made";
    if !testkit::require(Server::Postgres, name) || !testkit::require(Server::Mosquitto, name) {
        return;
    }
    let (db, pool) = database().await;
    let run = new_run_id();
    let fake = fake_ingestion(
        &run,
        2,
        pool.clone(),
        HashSet::from([(0, 7), (1, 30)]),
        HashSet::from([(0, 10)]),
    )
    .await;

    // 2 sessions × 50 points at 500 points/s.
    let config = tiny_run(&db, &run, 500, Duration::from_millis(200), 1);
    let report = loadtest::run(&config).await.unwrap();
    let (p, t) = (&report.publish, &report.verification.tally);
    assert_eq!(
        (p.points_published, p.points_acked),
        (100, 100),
        "{}",
        report.render()
    );
    assert!(p.all_acked);
    assert_eq!(p.session_events_acked, 4);
    assert_eq!(
        (t.expected, t.stored_distinct, t.lost, t.duplicated),
        (100, 98, 2, 1)
    );
    assert_eq!(report.verification.missing_examples.len(), 2);
    assert!(matches!(report.latency, LatencyReport::Unavailable { .. }));
    assert_eq!(report.verdict, Verdict::Fail);
    let text = report.render();
    assert!(text.contains("lost          2"), "{text}");
    assert!(text.contains("latency       unavailable"), "{text}");

    // The device contract was kept: a start and an end per session, in order with the points.
    testkit::eventually(Duration::from_secs(5), "session ends", || {
        let n = fake.session_events.load(Ordering::Relaxed);
        async move { (n == 4).then_some(()) }
    })
    .await;
    let ordered: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT min(seq), max(seq) FROM telemetry WHERE device_id LIKE $1 GROUP BY device_id",
    )
    .bind(format!("lt-{run}-%"))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(ordered, vec![(0, 49), (0, 49)]);

    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("nested/run.json");
    report.write_json(&path).unwrap();
    let expected = loadtest::expected_from_results(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        (
            expected.run_id.as_str(),
            expected.sessions,
            expected.points_per_session
        ),
        (run.as_str(), Some(2), Some(50))
    );
    fake.task.abort();
}

#[tokio::test]
async fn a_clean_run_in_frames_passes_with_ingestions_latency() {
    let name = "a_clean_run_in_frames_passes_with_ingestions_latency";
    if !testkit::require(Server::Postgres, name) || !testkit::require(Server::Mosquitto, name) {
        return;
    }
    let (db, pool) = database().await;
    let run = new_run_id();
    let fake = fake_ingestion(&run, 2, pool, HashSet::new(), HashSet::new()).await;
    let api = fake_api(&fake).await;

    // 2 sessions × 50 frames of 5 points at 500 points/s.
    let mut config = tiny_run(&db, &run, 500, Duration::from_secs(1), 5);
    config.ingestion = Some(api);
    let report = loadtest::run(&config).await.unwrap();
    let text = report.render();
    let (p, t) = (&report.publish, &report.verification.tally);
    assert_eq!(
        (p.messages_published, p.points_published, p.points_acked),
        (100, 500, 500)
    );
    assert_eq!(
        (t.stored_distinct, t.lost, t.duplicated),
        (500, 0, 0),
        "{text}"
    );
    assert_eq!(report.verification.settled, Settled::Complete);
    let LatencyReport::Available {
        publish_to_commit,
        points_committed,
        ..
    } = &report.latency
    else {
        panic!("latency should be available: {text}");
    };
    // Exactly the stand-in's histogram: 500 points of 3.5 ms (3.501: HDR's bucket bound).
    assert_eq!(publish_to_commit.count, 500);
    assert_eq!(publish_to_commit.p95_ms, 3.501);
    assert_eq!(*points_committed, Some(500));
    assert!(text.contains("p95 3.50 ms"), "{text}");
    assert!(
        matches!(
            report.process,
            loadtest::monitor::ProcessReport::Available { .. }
        ),
        "{text}"
    );
    // The achieved rate depends on this machine's timers; everything else must pass.
    assert!(p.achieved_rate > 250.0, "{text}");
    for c in &report.criteria {
        assert!(c.pass || c.name == "achieved publish rate", "{text}");
    }
    fake.task.abort();
}

/// The embedded deployment (`simcorp up` without PostgreSQL) is verified in its SQLite file,
/// written here by the store itself, with the same verdicts.
#[tokio::test]
async fn verification_reads_the_embedded_sqlite_store_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ingestion.db");
    let sqlite = store::SqliteStore::open(&path, &store::SqliteConfig::default())
        .await
        .unwrap();
    let run = new_run_id();
    let now = model::now_ms();
    let point = |n: u32, seq: u64, ts_ms: i64| model::Point {
        device_id: device_id(&run, n),
        session: session_id(&run, n),
        seq,
        ts_ms,
        channels: model::Channels {
            bt: Some(100.0),
            ..model::Channels::default()
        },
        received_ms: now,
    };
    let mut batch = model::Batch::default();
    for n in 0..2u32 {
        for seq in 0..50u64 {
            if (n, seq) == (0, 7) || (n, seq) == (1, 30) {
                continue;
            }
            batch.points.push(point(n, seq, now));
            if (n, seq) == (0, 10) {
                // The same identity with another ts: a second row (the key includes ts).
                batch.points.push(point(n, seq, now + 1));
            }
        }
    }
    sqlite.write(&batch).await.unwrap();

    let db = loadtest::verify::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let expected = Expected {
        run_id: run.clone(),
        sessions: Some(2),
        points_per_session: Some(50),
    };
    let v = loadtest::verify::verify(&db, &expected, &quick())
        .await
        .unwrap();
    let t = v.tally;
    assert_eq!((t.expected, t.lost, t.duplicated), (100, 2, 1), "{v:?}");
    assert_eq!(
        v.missing_examples,
        vec![
            format!("lt-{run}-0/{run}-s0#7"),
            format!("lt-{run}-1/{run}-s1#30")
        ]
    );
    assert_eq!(
        v.duplicate_examples,
        vec![format!("lt-{run}-0/{run}-s0#10 ×2")]
    );
}
