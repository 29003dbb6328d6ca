//! The SQLite backend: the primary store when no PostgreSQL is configured, and the durable
//! store's fallback.

use std::path::Path;

use model::{Batch, Point, RoastEvent};
use sqlx::SqliteConnection;

use crate::config::SqliteConfig;
use crate::domain::TELEMETRY;
use crate::error::{Backend, StoreError};
use crate::pool::SqlitePools;
use crate::rows::{
    DeadLetterRecordRow, DeadLetterRow, EventRow, PointRow, SessionRecordRow, SessionRow,
    SessionSummaryRow, WriteSet, count_from_sql, merge_metadata, seq_to_sql, usize_to_sql,
};
use crate::{
    DeadLetterRecord, SessionQuery, SessionRecord, SessionSummary, TelemetryQuery, WriteOutcome,
};

/// Columns of a telemetry row, as bound per point.
const POINT_FIELDS: usize = 11;

/// Points per multi-row INSERT: SQLite allows 32 766 bound parameters per statement (since
/// 3.32; the bundled library is newer), and 1000 rows of 11 stay well below.
const POINTS_PER_INSERT: usize = 1000;

const POINT_COLUMNS: &str =
    "device_id, session, seq, ts, bt, et, gas, air, drum, extra, received_at";

/// The columns of a [`PointRow`].
macro_rules! point_row_columns {
    () => {
        "device_id, session, seq, ts AS ts_ms, bt, et, gas, air, drum, extra, \
         received_at AS received_ms"
    };
}

/// The columns of a [`SessionRecordRow`].
macro_rules! session_row_columns {
    () => {
        "device_id, session, started_at AS started_ms, ended_at AS ended_ms, metadata, \
         updated_at AS updated_ms"
    };
}

/// The columns of a [`DeadLetterRecordRow`].
macro_rules! dead_letter_row_columns {
    () => {
        "id, received_at AS received_ms, topic, device_id, payload, payload_bytes, frame_index, \
         reason_code, reason"
    };
}

const SELECT_TELEMETRY: &str = concat!(
    "SELECT ",
    point_row_columns!(),
    " FROM telemetry
WHERE session = ?1
  AND (?2 IS NULL OR device_id = ?2)
  AND ts >= COALESCE(?3, -9223372036854775808)
  AND ts <= COALESCE(?4, 9223372036854775807)
ORDER BY ts, seq, device_id
LIMIT ?5"
);

const SELECT_LATEST: &str = concat!(
    "SELECT ",
    point_row_columns!(),
    " FROM telemetry WHERE device_id = ?1 ORDER BY ts DESC, seq DESC LIMIT 1"
);

const SELECT_METADATA: &str = "SELECT metadata FROM sessions WHERE device_id = ?1 AND session = ?2";

/// The same commutative upsert as PostgreSQL's, except that the metadata merge happens in Rust
/// (SQLite's json_patch is a deep merge that deletes null keys, not jsonb's `||`); that is safe
/// because this store has a single writer connection.
const UPSERT_SESSION: &str = "INSERT INTO sessions
    (device_id, session, started_at, ended_at, metadata, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (device_id, session) DO UPDATE SET
    started_at = COALESCE(sessions.started_at, excluded.started_at),
    ended_at = COALESCE(sessions.ended_at, excluded.ended_at),
    metadata = excluded.metadata,
    updated_at = MAX(sessions.updated_at, excluded.updated_at)";

const INSERT_DEAD_LETTER: &str = "INSERT INTO dead_letters
    (received_at, topic, device_id, payload, payload_bytes, frame_index, reason_code, reason)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

const INSERT_EVENT: &str = "INSERT INTO roast_events
    (device_id, session, kind, ts, detected_at, bt, et, ror, method, confidence, received_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
ON CONFLICT DO NOTHING";

macro_rules! event_columns {
    () => {
        "device_id, session, kind, ts AS ts_ms, detected_at AS detected_ms, bt, et, ror, method, \
         confidence, received_at AS received_ms"
    };
}

const SELECT_EVENTS: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM roast_events WHERE session = ?1 ORDER BY ts, device_id, kind"
);

/// An event of the fallback with its rowid, for replay.
#[derive(Debug, sqlx::FromRow)]
struct ReplayEventRow {
    id: i64,
    #[sqlx(flatten)]
    event: EventRow,
}

const SELECT_SESSIONS: &str = concat!(
    "SELECT ",
    session_row_columns!(),
    " FROM sessions
WHERE (?1 IS NULL OR device_id = ?1) AND (NOT ?2 OR ended_at IS NULL)
ORDER BY COALESCE(started_at, ended_at, updated_at) DESC, device_id, session
LIMIT ?3"
);

const SELECT_SESSION_SUMMARY: &str = "WITH pts AS (
    SELECT device_id, count(*) AS n, min(ts) AS first_ts, max(ts) AS last_ts, max(seq) AS max_seq
    FROM telemetry WHERE session = ?1 GROUP BY device_id
), devs AS (
    SELECT device_id FROM sessions WHERE session = ?1
    UNION
    SELECT device_id FROM pts
)
SELECT d.device_id AS device_id, s.device_id IS NOT NULL AS has_record,
       s.started_at AS started_ms, s.ended_at AS ended_ms, s.metadata AS metadata,
       s.updated_at AS updated_ms, COALESCE(p.n, 0) AS points, p.first_ts AS first_ts_ms,
       p.last_ts AS last_ts_ms, p.max_seq AS max_seq
FROM devs d
LEFT JOIN sessions s ON s.device_id = d.device_id AND s.session = ?1
LEFT JOIN pts p ON p.device_id = d.device_id
ORDER BY d.device_id";

const SELECT_DEAD_LETTERS: &str = concat!(
    "SELECT ",
    dead_letter_row_columns!(),
    " FROM dead_letters ORDER BY id DESC LIMIT ?1"
);

const PRUNE_DEAD_LETTERS: &str = "DELETE FROM dead_letters
WHERE received_at < ?1
   OR id <= (SELECT id FROM dead_letters ORDER BY id DESC LIMIT 1 OFFSET ?2)";

/// Telemetry in a local SQLite file. Cheap to clone (pool handles).
///
/// All writes go through one connection, so they are serialized and never contend for SQLite's
/// write lock; reads use a small pool of their own, which WAL mode lets run alongside a write
/// ([`SqlitePools`]).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pools: SqlitePools,
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) and migrates the database at `path`.
    pub async fn open(path: &Path, cfg: &SqliteConfig) -> Result<SqliteStore, StoreError> {
        let pools = SqlitePools::open(path, cfg).await?;
        TELEMETRY.migrate_sqlite(&pools.writer).await?;
        Ok(SqliteStore { pools })
    }

    pub fn path(&self) -> &Path {
        &self.pools.path
    }

    pub async fn write(&self, batch: &Batch) -> Result<WriteOutcome, StoreError> {
        self.write_set(&WriteSet::from_batch(batch)).await
    }

    pub(crate) async fn write_set(&self, set: &WriteSet<'_>) -> Result<WriteOutcome, StoreError> {
        let mut tx = self
            .pools
            .writer
            .begin()
            .await
            .map_err(StoreError::sqlite)?;
        let mut inserted = 0;
        for chunk in set.points.chunks(POINTS_PER_INSERT) {
            inserted += insert_points(&mut tx, chunk).await?;
        }
        for row in &set.sessions {
            upsert_session(&mut tx, row).await?;
        }
        for event in set.events {
            insert_event(&mut tx, event).await?;
        }
        for row in &set.dead_letters {
            insert_dead_letter(&mut tx, row).await?;
        }
        tx.commit().await.map_err(StoreError::sqlite)?;
        Ok(WriteOutcome::new(set.points.len(), inserted))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pools.reader)
            .await
            .map(|_| ())
            .map_err(StoreError::sqlite)
    }

    pub async fn sessions(&self, q: &SessionQuery) -> Result<Vec<SessionRecord>, StoreError> {
        let rows = sqlx::query_as::<_, SessionRecordRow>(SELECT_SESSIONS)
            .bind(q.device_id.as_deref())
            .bind(q.active_only)
            .bind(usize_to_sql(q.limit))
            .fetch_all(&self.pools.reader)
            .await
            .map_err(StoreError::sqlite)?;
        rows.into_iter()
            .map(|r| r.into_record(Backend::Sqlite))
            .collect()
    }

    pub async fn session(&self, session: &str) -> Result<Vec<SessionSummary>, StoreError> {
        let rows = sqlx::query_as::<_, SessionSummaryRow>(SELECT_SESSION_SUMMARY)
            .bind(session)
            .fetch_all(&self.pools.reader)
            .await
            .map_err(StoreError::sqlite)?;
        rows.into_iter()
            .map(|r| r.into_summary(session, Backend::Sqlite))
            .collect()
    }

    pub async fn telemetry(&self, q: &TelemetryQuery) -> Result<Vec<Point>, StoreError> {
        let rows = sqlx::query_as::<_, PointRow>(SELECT_TELEMETRY)
            .bind(q.session.as_str())
            .bind(q.device_id.as_deref())
            .bind(q.from_ms)
            .bind(q.to_ms)
            .bind(usize_to_sql(q.limit))
            .fetch_all(&self.pools.reader)
            .await
            .map_err(StoreError::sqlite)?;
        rows.into_iter()
            .map(|r| r.into_point(Backend::Sqlite))
            .collect()
    }

    pub async fn latest(&self, device_id: &str) -> Result<Option<Point>, StoreError> {
        let row = sqlx::query_as::<_, PointRow>(SELECT_LATEST)
            .bind(device_id)
            .fetch_optional(&self.pools.reader)
            .await
            .map_err(StoreError::sqlite)?;
        row.map(|r| r.into_point(Backend::Sqlite)).transpose()
    }

    pub async fn events(&self, session: &str) -> Result<Vec<RoastEvent>, StoreError> {
        let rows = sqlx::query_as::<_, EventRow>(SELECT_EVENTS)
            .bind(session)
            .fetch_all(&self.pools.reader)
            .await
            .map_err(StoreError::sqlite)?;
        rows.into_iter()
            .map(|r| r.into_event(Backend::Sqlite))
            .collect()
    }

    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterRecord>, StoreError> {
        let rows = sqlx::query_as::<_, DeadLetterRecordRow>(SELECT_DEAD_LETTERS)
            .bind(usize_to_sql(limit))
            .fetch_all(&self.pools.reader)
            .await
            .map_err(StoreError::sqlite)?;
        Ok(rows
            .into_iter()
            .map(DeadLetterRecordRow::into_record)
            .collect())
    }

    pub async fn prune_dead_letters(
        &self,
        older_than_ms: i64,
        keep_at_most: u64,
    ) -> Result<u64, StoreError> {
        sqlx::query(PRUNE_DEAD_LETTERS)
            .bind(older_than_ms)
            .bind(i64::try_from(keep_at_most).unwrap_or(i64::MAX))
            .execute(&self.pools.writer)
            .await
            .map(|r| r.rows_affected())
            .map_err(StoreError::sqlite)
    }

    // Draining the fallback: read the oldest rows, and delete them once PostgreSQL has them.

    /// Points stored, i.e. the fallback's backlog.
    pub(crate) async fn count_points(&self) -> Result<u64, StoreError> {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM telemetry")
            .fetch_one(&self.pools.reader)
            .await
            .map(count_from_sql)
            .map_err(StoreError::sqlite)
    }

    /// The oldest `limit` points in arrival (rowid) order, with the rowid range they span.
    pub(crate) async fn oldest_points(
        &self,
        limit: usize,
    ) -> Result<(Vec<Point>, Option<(i64, i64)>), StoreError> {
        let rows = sqlx::query_as::<_, RowidPointRow>(concat!(
            "SELECT rowid, ",
            point_row_columns!(),
            " FROM telemetry ORDER BY rowid LIMIT ?1"
        ))
        .bind(usize_to_sql(limit))
        .fetch_all(&self.pools.reader)
        .await
        .map_err(StoreError::sqlite)?;
        let span = match (rows.first(), rows.last()) {
            (Some(first), Some(last)) => Some((first.rowid, last.rowid)),
            _ => None,
        };
        let points = rows
            .into_iter()
            .map(|r| r.point.into_point(Backend::Sqlite))
            .collect::<Result<_, _>>()?;
        Ok((points, span))
    }

    /// Deletes points by rowid range. Every row in the range is one [`Self::oldest_points`]
    /// returned: points are never updated and new ones get larger rowids (no AUTOINCREMENT, but
    /// SQLite only reuses rowids below the current maximum, which is in the range).
    pub(crate) async fn delete_points(&self, first: i64, last: i64) -> Result<u64, StoreError> {
        sqlx::query("DELETE FROM telemetry WHERE rowid BETWEEN ?1 AND ?2")
            .bind(first)
            .bind(last)
            .execute(&self.pools.writer)
            .await
            .map(|r| r.rows_affected())
            .map_err(StoreError::sqlite)
    }

    /// The oldest `limit` session rows, each with its metadata exactly as stored.
    pub(crate) async fn oldest_sessions(
        &self,
        limit: usize,
    ) -> Result<Vec<(SessionRecord, String)>, StoreError> {
        let rows = sqlx::query_as::<_, SessionRecordRow>(concat!(
            "SELECT ",
            session_row_columns!(),
            " FROM sessions ORDER BY rowid LIMIT ?1"
        ))
        .bind(usize_to_sql(limit))
        .fetch_all(&self.pools.reader)
        .await
        .map_err(StoreError::sqlite)?;
        rows.into_iter()
            .map(|r| {
                let stored = r.metadata.clone();
                Ok((r.into_record(Backend::Sqlite)?, stored))
            })
            .collect()
    }

    /// Deletes a session row only if it is still exactly as read (`metadata` is the stored
    /// text): a write that merged more into it meanwhile keeps it for the next replay.
    pub(crate) async fn delete_session_if_unchanged(
        &self,
        s: &SessionRecord,
        metadata: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM sessions WHERE device_id = ?1 AND session = ?2 AND started_at IS ?3
             AND ended_at IS ?4 AND metadata = ?5 AND updated_at = ?6",
        )
        .bind(s.device_id.as_str())
        .bind(s.session.as_str())
        .bind(s.started_ms)
        .bind(s.ended_ms)
        .bind(metadata)
        .bind(s.updated_ms)
        .execute(&self.pools.writer)
        .await
        .map(|_| ())
        .map_err(StoreError::sqlite)
    }

    pub(crate) async fn oldest_dead_letters(
        &self,
        limit: usize,
    ) -> Result<Vec<DeadLetterRecord>, StoreError> {
        let rows = sqlx::query_as::<_, DeadLetterRecordRow>(concat!(
            "SELECT ",
            dead_letter_row_columns!(),
            " FROM dead_letters ORDER BY id LIMIT ?1"
        ))
        .bind(usize_to_sql(limit))
        .fetch_all(&self.pools.reader)
        .await
        .map_err(StoreError::sqlite)?;
        Ok(rows
            .into_iter()
            .map(DeadLetterRecordRow::into_record)
            .collect())
    }

    /// The oldest events with their rowids, for replay.
    pub(crate) async fn oldest_events(
        &self,
        limit: usize,
    ) -> Result<(Vec<RoastEvent>, Option<(i64, i64)>), StoreError> {
        let rows = sqlx::query_as::<_, ReplayEventRow>(concat!(
            "SELECT rowid AS id, ",
            event_columns!(),
            " FROM roast_events ORDER BY rowid LIMIT ?1"
        ))
        .bind(usize_to_sql(limit))
        .fetch_all(&self.pools.reader)
        .await
        .map_err(StoreError::sqlite)?;
        let span = rows.first().zip(rows.last()).map(|(a, b)| (a.id, b.id));
        let events = rows
            .into_iter()
            .map(|r| r.event.into_event(Backend::Sqlite))
            .collect::<Result<_, _>>()?;
        Ok((events, span))
    }

    /// Deletes events by rowid range; they are never updated.
    pub(crate) async fn delete_events(&self, first: i64, last: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM roast_events WHERE rowid BETWEEN ?1 AND ?2")
            .bind(first)
            .bind(last)
            .execute(&self.pools.writer)
            .await
            .map(|_| ())
            .map_err(StoreError::sqlite)
    }

    /// Deletes dead letters by id range; like points, they are never updated.
    pub(crate) async fn delete_dead_letters(
        &self,
        first: i64,
        last: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM dead_letters WHERE id BETWEEN ?1 AND ?2")
            .bind(first)
            .bind(last)
            .execute(&self.pools.writer)
            .await
            .map(|_| ())
            .map_err(StoreError::sqlite)
    }
}

async fn insert_points(conn: &mut SqliteConnection, points: &[Point]) -> Result<u64, StoreError> {
    let mut sql = String::with_capacity(80 + points.len() * (POINT_FIELDS * 2 + 3));
    sql.push_str("INSERT INTO telemetry (");
    sql.push_str(POINT_COLUMNS);
    sql.push_str(") VALUES ");
    for i in 0..points.len() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?,?,?,?)");
    }
    // Not `INSERT OR IGNORE`: that also skips rows failing a CHECK or NOT NULL constraint, and a
    // refused point must fail the batch, as in PostgreSQL. The upsert clause covers only the key.
    sql.push_str(" ON CONFLICT DO NOTHING");
    // Only placeholders are spliced in; every value is bound.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for p in points {
        q = q
            .bind(p.device_id.as_str())
            .bind(p.session.as_str())
            .bind(seq_to_sql(p.seq))
            .bind(p.ts_ms)
            .bind(p.channels.bt)
            .bind(p.channels.et)
            .bind(p.channels.gas)
            .bind(p.channels.air)
            .bind(p.channels.drum)
            .bind(crate::rows::extra_json(&p.channels.extra))
            .bind(p.received_ms);
    }
    q.execute(conn)
        .await
        .map(|r| r.rows_affected())
        .map_err(StoreError::sqlite)
}

async fn insert_event(conn: &mut SqliteConnection, e: &RoastEvent) -> Result<(), StoreError> {
    sqlx::query(INSERT_EVENT)
        .bind(&e.device_id)
        .bind(&e.session)
        .bind(e.kind.as_str())
        .bind(e.ts_ms)
        .bind(e.detected_ms)
        .bind(e.bt)
        .bind(e.et)
        .bind(e.ror)
        .bind(&e.method)
        .bind(e.confidence)
        .bind(e.received_ms)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(StoreError::sqlite)
}

async fn upsert_session(conn: &mut SqliteConnection, row: &SessionRow) -> Result<(), StoreError> {
    let stored: Option<String> = sqlx::query_scalar(SELECT_METADATA)
        .bind(row.device_id.as_str())
        .bind(row.session.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::sqlite)?;
    let metadata = match stored {
        Some(stored) => merge_metadata(&stored, &row.metadata, Backend::Sqlite)?,
        None => row.metadata_json(),
    };
    sqlx::query(UPSERT_SESSION)
        .bind(row.device_id.as_str())
        .bind(row.session.as_str())
        .bind(row.started_ms)
        .bind(row.ended_ms)
        .bind(metadata)
        .bind(row.updated_ms)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(StoreError::sqlite)
}

async fn insert_dead_letter(
    conn: &mut SqliteConnection,
    row: &DeadLetterRow<'_>,
) -> Result<(), StoreError> {
    sqlx::query(INSERT_DEAD_LETTER)
        .bind(row.received_ms)
        .bind(row.topic)
        .bind(row.device_id)
        .bind(row.payload)
        .bind(row.payload_bytes)
        .bind(row.frame_index)
        .bind(row.reason_code)
        .bind(row.reason)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(StoreError::sqlite)
}

/// A point with its rowid, which orders and deletes the fallback's backlog.
#[derive(sqlx::FromRow)]
struct RowidPointRow {
    rowid: i64,
    #[sqlx(flatten)]
    point: PointRow,
}
