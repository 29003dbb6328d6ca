use model::{Batch, Channels, DeadLetter, Point, Rejection, SessionEvent, SessionState};
use store::{PgStore, PostgresConfig, SqliteConfig, SqliteStore, Store};
use testkit::{Server, TestDatabase};

/// A store with whatever keeps its database alive for the test's duration.
pub(crate) struct Backend {
    pub(crate) store: Store,
    _dir: Option<tempfile::TempDir>,
    _db: Option<TestDatabase>,
}

pub(crate) async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    // A nested path: open must create the directory.
    let path = dir.path().join("data").join("store.db");
    let store = SqliteStore::open(&path, &SqliteConfig::default())
        .await
        .unwrap();
    Backend {
        store: Store::Sqlite(store),
        _dir: Some(dir),
        _db: None,
    }
}

/// A migrated PostgreSQL store on a fresh database, with partitions around today; `None` (after
/// a loud skip) when the shared PostgreSQL is not running.
pub(crate) async fn postgres(test: &str) -> Option<Backend> {
    if !testkit::require(Server::Postgres, test) {
        return None;
    }
    let db = TestDatabase::create().await;
    let store = pg_store(&db.url).await;
    Some(Backend {
        store: Store::Postgres(store),
        _dir: None,
        _db: Some(db),
    })
}

pub(crate) async fn pg_store(url: &str) -> PgStore {
    let store = PgStore::connect(url, &PostgresConfig::default()).unwrap();
    store.migrate().await.unwrap();
    store
        .ensure_partitions(model::now_ms(), 8, 2)
        .await
        .unwrap();
    store
}

/// A time a little in the past, on a whole second, so that tests' points sit in a partition
/// that exists.
pub(crate) fn base_ms() -> i64 {
    (model::now_ms() - 3_600_000) / 1000 * 1000
}

pub(crate) fn point(device: &str, session: &str, seq: u64, ts_ms: i64) -> Point {
    let mut channels = Channels {
        bt: Some(150.0 + seq as f64 * 0.1),
        et: Some(210.25),
        gas: Some(0.1 + 0.2),
        air: None,
        drum: Some(-1e-9),
        ..Channels::default()
    };
    channels.extra.insert("inlet".into(), 260.123_456_789_012_3);
    channels.extra.insert("ror".into(), 1e300);
    Point {
        device_id: device.into(),
        session: session.into(),
        seq,
        ts_ms,
        channels,
        received_ms: ts_ms + 37,
    }
}

pub(crate) fn session_event(
    device: &str,
    session: &str,
    state: SessionState,
    ts_ms: i64,
    metadata: serde_json::Value,
) -> SessionEvent {
    SessionEvent {
        device_id: device.into(),
        session: session.into(),
        state,
        ts_ms,
        metadata: metadata.as_object().cloned().unwrap_or_default(),
        received_ms: ts_ms + 5,
    }
}

pub(crate) fn dead_letter(
    device: Option<&str>,
    received_ms: i64,
    frame_index: Option<usize>,
) -> DeadLetter {
    DeadLetter::new(
        &format!("roasters/{}/telemetry", device.unwrap_or("bad id")),
        device,
        b"{\"seq\": \"x\"}\xff",
        frame_index,
        &Rejection::MissingField("ts"),
        received_ms,
        10,
    )
}

pub(crate) fn roast_event(
    device: &str,
    session: &str,
    kind: roast::EventKind,
    ts_ms: i64,
) -> model::RoastEvent {
    model::RoastEvent {
        device_id: device.into(),
        session: session.into(),
        kind,
        ts_ms,
        detected_ms: ts_ms + 2_000,
        bt: Some(150.25),
        et: None,
        ror: Some(-12.5),
        method: "bt_break".into(),
        confidence: 0.9,
        received_ms: ts_ms + 2_010,
    }
}

pub(crate) fn events(events: Vec<model::RoastEvent>) -> Batch {
    Batch {
        events,
        ..Batch::default()
    }
}

pub(crate) fn points(points: Vec<Point>) -> Batch {
    Batch {
        points,
        ..Batch::default()
    }
}

pub(crate) fn sessions(sessions: Vec<SessionEvent>) -> Batch {
    Batch {
        sessions,
        ..Batch::default()
    }
}
