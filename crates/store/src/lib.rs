//! Storage: the only place in the platform that knows SQL. It holds every domain's schema
//! (telemetry with roast events, analytics' reference profiles, commands, the mission queue;
//! traces, eval runs, reports as their services arrive) and the shared base their stores are
//! built on, and telemetry's store itself.
//!
//! The shared base: [`Domain`]s, each with its migrations for both backends and a migration
//! history of its own, applied together by [`migrate_all`] (`simcorp migrate`) or one at a time
//! by the store that owns them; [`PoolSettings`], the one way pools are configured for
//! PostgreSQL ([`postgres_pool`]) and SQLite ([`SqlitePools`]: one writer, a few readers, WAL);
//! [`StoreError`] with [`ErrorKind`], which classifies a failure the same way on both backends
//! (unavailable, conflict, bad data, other).
//!
//! Telemetry: [`Store`] is one API over two backends with the same tables and the same identity
//! semantics: PostgreSQL ([`PgStore`]: daily partitions, batch writes by `unnest`) and SQLite
//! ([`SqliteStore`]: a single serialized writer in WAL mode). Every write is one transaction for
//! a whole [`model::Batch`] and is idempotent on a point's identity, so a batch that is
//! redelivered, or replayed, is absorbed. [`DurableStore`] keeps the platform's promise that an
//! acknowledged point is durable: it writes to PostgreSQL, falls back to a local SQLite file
//! while PostgreSQL is down, and replays that file into PostgreSQL once it is back.
//!
//! Not here: decoding and validation (the `model` crate: a [`model::Point`] is trusted as
//! valid), batching and acknowledgement (the pipeline), HTTP (the services). Metrics are emitted
//! through the `metrics` facade ([`metrics::describe`] describes them); installing a recorder is
//! the service's job.

mod analytics;
mod commands;
mod config;
mod domain;
mod durable;
mod error;
pub mod metrics;
pub mod missions;
pub mod outbox;
pub mod pg;
mod pool;
mod rows;
mod sqlite;

use model::{Batch, Point};

pub use analytics::{AnalyticsStore, ProfileInfo, StoredProfile};
pub use commands::{
    AuditEntry, ChainReport, Changes, CommandRecord, CommandsStore, DeviceKey, DeviceSession,
    GENESIS_HASH, NewAudit,
};
pub use config::{MaintenanceConfig, PostgresConfig, SqliteConfig, Synchronous};
pub use domain::{
    ANALYTICS, COMMANDS, Domain, MISSIONS, Migrated, MigrationTarget, TELEMETRY, domains,
    migrate_all,
};
pub use durable::{Destination, DurableStore, Written};
pub use error::{Backend, ErrorKind, StoreError};
pub use missions::{Attempt, Mission, MissionsStore, NewMission, Retry};
pub use pg::PgStore;
pub use pool::{PoolSettings, SqlitePools, postgres_pool};
pub use sqlite::SqliteStore;

/// What a write did with the batch's points.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Points stored by this write.
    pub points_inserted: u64,
    /// Points that were already stored (redelivered, replayed, or repeated inside the batch).
    pub points_duplicate: u64,
}

impl WriteOutcome {
    fn new(points: usize, inserted: u64) -> Self {
        WriteOutcome {
            points_inserted: inserted,
            points_duplicate: (points as u64).saturating_sub(inserted),
        }
    }
}

/// Filter for [`Store::sessions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionQuery {
    pub device_id: Option<String>,
    /// Only sessions that have not ended.
    pub active_only: bool,
    pub limit: usize,
}

impl Default for SessionQuery {
    fn default() -> Self {
        SessionQuery {
            device_id: None,
            active_only: false,
            limit: 100,
        }
    }
}

/// A row of the `sessions` table: what the device said about a session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub device_id: String,
    pub session: String,
    /// `ts` of the first start message received; `None` if none was.
    pub started_ms: Option<i64>,
    /// `ts` of the first end message received; `None` while the session is running.
    pub ended_ms: Option<i64>,
    /// Fields of the start/end messages beyond session/state/ts, merged.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// When ingestion last received a message about this session (epoch ms).
    pub updated_ms: i64,
}

/// One device's use of a session id: its session record (if it sent start or end) and what its
/// points say. Points are counted from the telemetry itself, so a session whose start message was
/// lost is still found.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSummary {
    pub device_id: String,
    pub session: String,
    pub record: Option<SessionRecord>,
    pub points: u64,
    pub first_ts_ms: Option<i64>,
    pub last_ts_ms: Option<i64>,
    pub max_seq: Option<u64>,
}

/// Filter for [`Store::telemetry`]: the points of one session, ordered by `ts`, then `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryQuery {
    pub session: String,
    pub device_id: Option<String>,
    /// Inclusive lower bound on `ts` (epoch ms).
    pub from_ms: Option<i64>,
    /// Inclusive upper bound on `ts` (epoch ms).
    pub to_ms: Option<i64>,
    pub limit: usize,
}

impl TelemetryQuery {
    /// All points of `session` (up to 10 000), any device, any time.
    pub fn session(session: impl Into<String>) -> Self {
        TelemetryQuery {
            session: session.into(),
            device_id: None,
            from_ms: None,
            to_ms: None,
            limit: 10_000,
        }
    }
}

/// A stored dead letter.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterRecord {
    pub id: i64,
    pub received_ms: i64,
    pub topic: String,
    pub device_id: Option<String>,
    /// The payload, truncated to the limit configured in ingestion.
    pub payload: Vec<u8>,
    /// The size of the payload as received.
    pub payload_bytes: usize,
    pub frame_index: Option<usize>,
    pub reason_code: String,
    pub reason: String,
}

/// A telemetry store: PostgreSQL or SQLite, same behaviour.
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl Store {
    /// Stores a batch in one transaction: points, session events, roast events and dead letters
    /// all, or none.
    /// Idempotent on point identity: points already stored, including repeats inside the batch,
    /// are counted in [`WriteOutcome::points_duplicate`] and not stored again.
    pub async fn write(&self, batch: &Batch) -> Result<WriteOutcome, StoreError> {
        match self {
            Store::Postgres(s) => s.write(batch).await,
            Store::Sqlite(s) => s.write(batch).await,
        }
    }

    /// Succeeds when the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(s) => s.ping().await,
            Store::Sqlite(s) => s.ping().await,
        }
    }

    /// Session records, newest first (by start, else end, else last update).
    pub async fn sessions(&self, q: &SessionQuery) -> Result<Vec<SessionRecord>, StoreError> {
        match self {
            Store::Postgres(s) => s.sessions(q).await,
            Store::Sqlite(s) => s.sessions(q).await,
        }
    }

    /// One summary per device that used this session id, by device id.
    pub async fn session(&self, session: &str) -> Result<Vec<SessionSummary>, StoreError> {
        match self {
            Store::Postgres(s) => s.session(session).await,
            Store::Sqlite(s) => s.session(session).await,
        }
    }

    /// Points of a session, ordered by `ts`, then `seq`, then device.
    pub async fn telemetry(&self, q: &TelemetryQuery) -> Result<Vec<Point>, StoreError> {
        match self {
            Store::Postgres(s) => s.telemetry(q).await,
            Store::Sqlite(s) => s.telemetry(q).await,
        }
    }

    /// The point of `device_id` with the greatest `ts` (then `seq`).
    pub async fn latest(&self, device_id: &str) -> Result<Option<Point>, StoreError> {
        match self {
            Store::Postgres(s) => s.latest(device_id).await,
            Store::Sqlite(s) => s.latest(device_id).await,
        }
    }

    /// The roast events of a session (any device), in event time order.
    pub async fn events(&self, session: &str) -> Result<Vec<model::RoastEvent>, StoreError> {
        match self {
            Store::Postgres(s) => s.events(session).await,
            Store::Sqlite(s) => s.events(session).await,
        }
    }

    /// The newest dead letters first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterRecord>, StoreError> {
        match self {
            Store::Postgres(s) => s.dead_letters(limit).await,
            Store::Sqlite(s) => s.dead_letters(limit).await,
        }
    }

    /// Deletes dead letters received before `older_than_ms` (epoch ms), and all but the newest
    /// `keep_at_most`. Returns how many were deleted.
    pub async fn prune_dead_letters(
        &self,
        older_than_ms: i64,
        keep_at_most: u64,
    ) -> Result<u64, StoreError> {
        match self {
            Store::Postgres(s) => s.prune_dead_letters(older_than_ms, keep_at_most).await,
            Store::Sqlite(s) => s.prune_dead_letters(older_than_ms, keep_at_most).await,
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Store::Postgres(_) => Backend::Postgres,
            Store::Sqlite(_) => Backend::Sqlite,
        }
    }
}
