//! Spawning the service and talking to it, for every test in this binary.

use std::time::Duration;

use ingestion::{Config, Ingestion};
use kit::service::Service as _;
use model::{Channels, Point, SessionEvent, SessionState, Topic, TopicKind};
use mqtt::{Publisher, QoS};

/// A running ingestion service (see `testkit::spawn`).
pub type TestApp = testkit::TestService<Ingestion>;

/// The service for tests on the given broker and database (SQLite in its data directory when
/// none), with fast reconnects and store probing so that fault tests take seconds.
pub fn ingestion(mqtt_url: &str, postgres_url: Option<&str>) -> testkit::Spawn<Ingestion> {
    let spawn = testkit::spawn::<Ingestion>()
        .mqtt(mqtt_url)
        .set("mqtt.reconnect_max_ms", 500)
        .set("postgres.acquire_timeout_ms", 1_000)
        .set("store.probe_interval_ms", 200)
        .set("ingestion.drain_timeout_secs", 10);
    match postgres_url {
        Some(url) => spawn.postgres_url(url),
        None => spawn,
    }
}

/// The point a test device publishes at `seq`: values derived from `seq`, so any stored row can
/// be checked exactly.
pub fn point(device: &str, session: &str, seq: u64) -> Point {
    let now = model::now_ms();
    Point {
        device_id: device.into(),
        session: session.into(),
        seq,
        ts_ms: now,
        channels: Channels {
            bt: Some(20.0 + seq as f64 * 0.25),
            et: Some(240.5 - seq as f64 * 0.125),
            gas: Some((seq % 100) as f64),
            air: (!seq.is_multiple_of(3)).then_some(35.0),
            drum: Some(60.0),
            extra: if seq.is_multiple_of(5) {
                [("ror".to_string(), seq as f64 / 7.0)].into()
            } else {
                Default::default()
            },
        },
        received_ms: now,
    }
}

pub fn session_event(device: &str, session: &str, state: SessionState) -> SessionEvent {
    SessionEvent {
        device_id: device.into(),
        session: session.into(),
        state,
        ts_ms: model::now_ms(),
        metadata: [("bean".to_string(), "kenya-nyeri".into())]
            .into_iter()
            .collect(),
        received_ms: 0,
    }
}

pub fn telemetry_topic(device: &str) -> String {
    Topic::format(device, TopicKind::Telemetry)
}

pub fn session_topic(device: &str) -> String {
    Topic::format(device, TopicKind::Session)
}

pub async fn publisher(mqtt_url: &str) -> Publisher {
    let config = mqtt::Config {
        url: mqtt_url.to_owned(),
        ..mqtt::Config::default()
    };
    Publisher::connect(
        &config,
        &testkit::unique_name("device"),
        Duration::from_secs(10),
    )
    .await
    .unwrap()
}

/// Publishes `points` as single messages (`frame == 1`) or frames of `frame` points.
pub async fn publish_points(publisher: &Publisher, points: &[Point], frame: usize) {
    for chunk in points.chunks(frame.max(1)) {
        let payload = if frame <= 1 {
            chunk[0].to_json()
        } else {
            Point::frame_json(chunk)
        };
        publisher
            .publish(
                telemetry_topic(&chunk[0].device_id),
                QoS::AtLeastOnce,
                payload,
            )
            .await
            .unwrap();
    }
}

pub async fn publish_raw(publisher: &Publisher, topic: &str, payload: impl Into<bytes::Bytes>) {
    publisher
        .publish(topic.to_owned(), QoS::AtLeastOnce, payload)
        .await
        .unwrap();
}

/// Publishes `points` in chunks of `per_10ms` every 10 ms; waits until the broker acknowledged
/// them all.
pub async fn stream_at(
    mqtt_url: &str,
    points: Vec<Point>,
    per_10ms: usize,
) -> tokio::task::JoinHandle<()> {
    let device = publisher(mqtt_url).await;
    tokio::spawn(async move {
        for chunk in points.chunks(per_10ms) {
            publish_points(&device, chunk, 1).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            device.flush(Duration::from_secs(120)).await,
            "the broker never acknowledged every publish"
        );
    })
}

/// A stored row, as the tests compare it (the same shape from PostgreSQL and SQLite).
#[derive(Debug, PartialEq, sqlx::FromRow)]
pub struct Row {
    pub seq: i64,
    pub bt: Option<f64>,
    pub et: Option<f64>,
    pub gas: Option<f64>,
    pub air: Option<f64>,
    pub drum: Option<f64>,
    pub ror: Option<f64>,
}

impl Row {
    pub fn expected(p: &Point) -> Row {
        Row {
            seq: p.seq as i64,
            bt: p.channels.bt,
            et: p.channels.et,
            gas: p.channels.gas,
            air: p.channels.air,
            drum: p.channels.drum,
            ror: p.channels.extra.get("ror").copied(),
        }
    }
}

/// Asserts that `actual` rows are exactly `expected`, reporting counts and the first difference
/// (not thousands of rows).
#[track_caller]
pub fn assert_rows(actual: &[Row], expected: &[Row]) {
    if let Some(i) = (0..actual.len().min(expected.len())).find(|&i| actual[i] != expected[i]) {
        panic!(
            "row {i} differs: stored {:?}, published {:?} ({} rows stored, {} published)",
            actual[i],
            expected[i],
            actual.len(),
            expected.len()
        );
    }
    assert_eq!(actual.len(), expected.len(), "rows stored vs published");
}

/// Every telemetry row of `device` in PostgreSQL, by seq.
pub async fn pg_rows(pool: &sqlx::PgPool, device: &str) -> Vec<Row> {
    sqlx::query_as(
        "SELECT seq, bt, et, gas, air, drum, (extra->>'ror')::float8 AS ror \
         FROM telemetry WHERE device_id = $1 ORDER BY seq",
    )
    .bind(device)
    .fetch_all(pool)
    .await
    .unwrap()
}

pub async fn pg_count(pool: &sqlx::PgPool, device: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM telemetry WHERE device_id = $1")
        .bind(device)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until `device` has `n` rows in PostgreSQL.
pub async fn wait_pg_count(pool: &sqlx::PgPool, device: &str, n: i64, timeout: Duration) {
    testkit::eventually(
        timeout,
        &format!("{n} rows of {device} in PostgreSQL"),
        || async { (pg_count(pool, device).await >= n).then_some(()) },
    )
    .await;
}

pub async fn pg_pool(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap()
}

/// The usual setup: a private broker (the project's config), a fresh database, the service on
/// them, a pool to check what it stored, and a device to publish with. Keep it in a variable
/// for the whole test: the broker and the database go away when it is dropped.
pub struct Stack {
    /// The stack's own broker, for drills that restart it.
    pub broker: testkit::PrivateMosquitto,
    /// The stack's database; it lives as long as the stack.
    pub db: testkit::TestDatabase,
    pub app: TestApp,
    pub pool: sqlx::PgPool,
    pub device: Publisher,
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(|_| {}).await
    }

    /// As [`start`](Self::start), with the service's configuration adjusted first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config) + Send + 'static) -> Stack {
        let broker = testkit::PrivateMosquitto::start().await;
        let db = testkit::TestDatabase::create().await;
        let app = ingestion(&broker.url(), Some(&db.url))
            .configure(adjust)
            .start()
            .await;
        let pool = pg_pool(&db.url).await;
        let device = publisher(&broker.url()).await;
        Stack {
            broker,
            db,
            app,
            pool,
            device,
        }
    }
}

/// Starts the real `ingestion` binary on a free port, configured through the environment as in
/// a container (`extra_env` adds or overrides settings).
pub async fn start_process(
    mqtt: &str,
    pg: &str,
    data: &std::path::Path,
    client_id: &str,
    extra_env: &[(&str, &str)],
) -> testkit::ServiceProcess {
    let data = data.to_string_lossy();
    let mut env = vec![
        ("SIMCORP_MQTT_URL", mqtt),
        ("SIMCORP_MQTT_CLIENT_ID", client_id),
        ("SIMCORP_POSTGRES_URL", pg),
        ("SIMCORP_DATA_DIR", data.as_ref()),
    ];
    env.extend_from_slice(extra_env);
    testkit::ServiceProcess::start(
        env!("CARGO_BIN_EXE_ingestion"),
        Ingestion::SPEC.section,
        testkit::free_port(),
        &env,
    )
    .await
}
