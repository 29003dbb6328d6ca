//! The PostgreSQL backend.

pub mod encode;
mod partitions;
mod registry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use model::{Batch, Point, RoastEvent};
use sqlx::PgConnection;
use sqlx::postgres::PgPool;

use self::registry::{NewPair, Registry};
use crate::config::PostgresConfig;
use crate::domain::{Migrated, TELEMETRY};
use crate::error::{Backend, StoreError};
use crate::rows::{
    DeadLetterRecordRow, DeadLetterRow, EventRow, PointRow, SessionRecordRow, SessionRow,
    SessionSummaryRow, WriteSet, usize_to_sql,
};
use crate::{
    DeadLetterRecord, SessionQuery, SessionRecord, SessionSummary, TelemetryQuery, WriteOutcome,
};

// The writes' SQL, as macros over their parameter numbers, so that the parts of WRITE_ALL
// number their parameters after one another.

macro_rules! insert_unnest_sql {
    () => {
        "INSERT INTO telemetry
    (device_id, session, seq, ts, bt, et, gas, air, drum, extra, received_at)
SELECT d, s, q, 'epoch'::timestamptz + t * interval '1 millisecond',
       bt, et, gas, air, drum, x::jsonb, 'epoch'::timestamptz + r * interval '1 millisecond'
FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::float8[], $6::float8[],
            $7::float8[], $8::float8[], $9::float8[], $10::text[], $11::int8[])
     AS u(d, s, q, t, bt, et, gas, air, drum, x, r)
ON CONFLICT DO NOTHING"
    };
}

/// The commutative session upsert (see the migration). Rows are unique per key: the caller has
/// folded a batch's events already.
macro_rules! upsert_sessions_sql {
    ($d:literal, $s:literal, $st:literal, $en:literal, $m:literal, $up:literal) => {
        concat!(
            "INSERT INTO sessions (device_id, session, started_at, ended_at, metadata, updated_at)
SELECT d, s, 'epoch'::timestamptz + st * interval '1 millisecond',
       'epoch'::timestamptz + en * interval '1 millisecond', m::jsonb,
       'epoch'::timestamptz + up * interval '1 millisecond'
FROM unnest($",
            $d,
            "::text[], $",
            $s,
            "::text[], $",
            $st,
            "::int8[], $",
            $en,
            "::int8[], $",
            $m,
            "::text[], $",
            $up,
            "::int8[])
     AS u(d, s, st, en, m, up)
ON CONFLICT (device_id, session) DO UPDATE SET
    started_at = COALESCE(sessions.started_at, excluded.started_at),
    ended_at = COALESCE(sessions.ended_at, excluded.ended_at),
    metadata = sessions.metadata || excluded.metadata,
    updated_at = GREATEST(sessions.updated_at, excluded.updated_at)"
        )
    };
}

/// Registers (device, session) pairs; see migration 0002. A replay or a second replica may
/// register a pair again with an earlier point, so `first_ts` only ever moves back.
macro_rules! register_device_sessions_sql {
    ($d:literal, $s:literal, $t:literal) => {
        concat!(
            "INSERT INTO device_sessions (device_id, session, first_ts)
SELECT d, s, 'epoch'::timestamptz + t * interval '1 millisecond'
FROM unnest($",
            $d,
            "::text[], $",
            $s,
            "::text[], $",
            $t,
            "::int8[]) AS u(d, s, t)
ON CONFLICT (device_id, session) DO UPDATE SET first_ts = excluded.first_ts
WHERE excluded.first_ts < device_sessions.first_ts"
        )
    };
}

macro_rules! insert_dead_letters_sql {
    ($r:literal, $t:literal, $d:literal, $p:literal, $pb:literal, $fi:literal, $rc:literal,
     $rs:literal) => {
        concat!(
            "INSERT INTO dead_letters
    (received_at, topic, device_id, payload, payload_bytes, frame_index, reason_code, reason)
SELECT 'epoch'::timestamptz + r * interval '1 millisecond', t, d, p, pb, fi, rc, rs
FROM unnest($",
            $r,
            "::int8[], $",
            $t,
            "::text[], $",
            $d,
            "::text[], $",
            $p,
            "::bytea[], $",
            $pb,
            "::int4[], $",
            $fi,
            "::int4[], $",
            $rc,
            "::text[], $",
            $rs,
            "::text[])
     AS u(r, t, d, p, pb, fi, rc, rs)"
        )
    };
}

/// Roast events: a copy (same device, session and kind) is ignored, the first write wins.
macro_rules! insert_events_sql {
    ($d:literal, $s:literal, $k:literal, $t:literal, $dt:literal, $bt:literal, $et:literal,
     $ror:literal, $m:literal, $c:literal, $r:literal) => {
        concat!(
            "INSERT INTO roast_events
    (device_id, session, kind, ts, detected_at, bt, et, ror, method, confidence, received_at)
SELECT d, s, k, 'epoch'::timestamptz + t * interval '1 millisecond',
       'epoch'::timestamptz + dt * interval '1 millisecond', bt, et, ror, m, c,
       'epoch'::timestamptz + r * interval '1 millisecond'
FROM unnest($",
            $d,
            "::text[], $",
            $s,
            "::text[], $",
            $k,
            "::text[], $",
            $t,
            "::int8[], $",
            $dt,
            "::int8[], $",
            $bt,
            "::float8[], $",
            $et,
            "::float8[], $",
            $ror,
            "::float8[], $",
            $m,
            "::text[], $",
            $c,
            "::float8[], $",
            $r,
            "::int8[])
     AS u(d, s, k, t, dt, bt, et, ror, m, c, r)
ON CONFLICT DO NOTHING"
        )
    };
}

const INSERT_UNNEST: &str = insert_unnest_sql!();

/// A whole [`WriteSet`] in one statement: data-modifying CTEs for the rows beside the points.
/// One statement is atomic by itself, so a batch with session events or dead letters costs one
/// round trip, as one of points alone does, instead of BEGIN, three or four INSERTs and COMMIT
/// (a device sending garbage puts a dead letter in nearly every batch). Its command tag counts
/// the telemetry rows only, as the points-only INSERT's does.
const WRITE_ALL: &str = concat!(
    "WITH registered AS (",
    register_device_sessions_sql!(12, 13, 14),
    "), sessions_upserted AS (",
    upsert_sessions_sql!(15, 16, 17, 18, 19, 20),
    "), dead_letters_inserted AS (",
    insert_dead_letters_sql!(21, 22, 23, 24, 25, 26, 27, 28),
    "), events_inserted AS (",
    insert_events_sql!(29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39),
    ")\n",
    insert_unnest_sql!()
);

/// The columns of a [`PointRow`]. Converted columns are named apart from the table's: ORDER BY
/// takes a bare name for an output column first, and ordering by the converted `ts` could not
/// use the indexes.
macro_rules! point_columns {
    () => {
        "device_id, session, seq, (extract(epoch from ts) * 1000)::int8 AS ts_ms, \
         bt, et, gas, air, drum, extra::text AS extra, \
         (extract(epoch from received_at) * 1000)::int8 AS received_ms"
    };
}

const SELECT_TELEMETRY: &str = concat!(
    "SELECT ",
    point_columns!(),
    " FROM telemetry
WHERE session = $1
  AND ($2::text IS NULL OR device_id = $2)
  AND ts >= COALESCE('epoch'::timestamptz + $3::int8 * interval '1 millisecond', '-infinity')
  AND ts <= COALESCE('epoch'::timestamptz + $4::int8 * interval '1 millisecond', 'infinity')
ORDER BY ts, seq, device_id
LIMIT $5"
);

/// The latest point among the device's three most recently begun sessions: each one's newest
/// point is a scan of its primary-key range (a roast's points), from its first ts on. That is
/// the device's latest point unless more than three of its sessions interleave in time, which a
/// roaster running one roast at a time never does.
const SELECT_LATEST: &str = concat!(
    "SELECT ",
    point_columns!(),
    " FROM (SELECT session AS candidate, first_ts AS since FROM device_sessions
      WHERE device_id = $1 ORDER BY first_ts DESC LIMIT 3) c
CROSS JOIN LATERAL (
    SELECT * FROM telemetry t
    WHERE t.device_id = $1 AND t.session = c.candidate AND t.ts >= c.since
    ORDER BY t.ts DESC, t.seq DESC LIMIT 1) p
ORDER BY ts DESC, seq DESC LIMIT 1"
);

const SELECT_SESSIONS: &str = "SELECT device_id, session,
       (extract(epoch from started_at) * 1000)::int8 AS started_ms,
       (extract(epoch from ended_at) * 1000)::int8 AS ended_ms,
       metadata::text AS metadata,
       (extract(epoch from updated_at) * 1000)::int8 AS updated_ms
FROM sessions
WHERE ($1::text IS NULL OR device_id = $1) AND (NOT $2 OR ended_at IS NULL)
ORDER BY COALESCE(started_at, ended_at, updated_at) DESC, device_id, session
LIMIT $3";

const SELECT_SESSION_SUMMARY: &str = "WITH pts AS (
    SELECT device_id, count(*) AS n, min(ts) AS first_ts, max(ts) AS last_ts, max(seq) AS max_seq
    FROM telemetry WHERE session = $1 GROUP BY device_id
), devs AS (
    SELECT device_id FROM sessions WHERE session = $1
    UNION
    SELECT device_id FROM pts
)
SELECT d.device_id AS device_id, s.device_id IS NOT NULL AS has_record,
       (extract(epoch from s.started_at) * 1000)::int8 AS started_ms,
       (extract(epoch from s.ended_at) * 1000)::int8 AS ended_ms,
       s.metadata::text AS metadata,
       (extract(epoch from s.updated_at) * 1000)::int8 AS updated_ms,
       COALESCE(p.n, 0) AS points,
       (extract(epoch from p.first_ts) * 1000)::int8 AS first_ts_ms,
       (extract(epoch from p.last_ts) * 1000)::int8 AS last_ts_ms,
       p.max_seq AS max_seq
FROM devs d
LEFT JOIN sessions s ON s.device_id = d.device_id AND s.session = $1
LEFT JOIN pts p ON p.device_id = d.device_id
ORDER BY d.device_id";

const SELECT_DEAD_LETTERS: &str = "SELECT id,
       (extract(epoch from received_at) * 1000)::int8 AS received_ms,
       topic, device_id, payload, payload_bytes::int8 AS payload_bytes,
       frame_index::int8 AS frame_index, reason_code, reason
FROM dead_letters ORDER BY id DESC LIMIT $1";

const SELECT_EVENTS: &str = "SELECT device_id, session, kind,
    (extract(epoch from ts) * 1000)::int8 AS ts_ms,
    (extract(epoch from detected_at) * 1000)::int8 AS detected_ms,
    bt, et, ror, method, confidence,
    (extract(epoch from received_at) * 1000)::int8 AS received_ms
FROM roast_events WHERE session = $1 ORDER BY ts, device_id, kind";

const PRUNE_DEAD_LETTERS: &str = "DELETE FROM dead_letters
WHERE received_at < 'epoch'::timestamptz + $1::int8 * interval '1 millisecond'
   OR id <= (SELECT id FROM dead_letters ORDER BY id DESC OFFSET $2 LIMIT 1)";

/// Telemetry in PostgreSQL. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Client-side bound on a whole write: a hung server or a black-holed network never reports
    /// its own statement timeout.
    write_deadline: Duration,
    registry: Arc<Registry>,
}

impl PgStore {
    /// Creates the connection pool ([`crate::postgres_pool`]) without connecting: connections
    /// are opened on first use, so this succeeds while PostgreSQL is down.
    pub fn connect(url: &str, cfg: &PostgresConfig) -> Result<PgStore, StoreError> {
        Ok(PgStore {
            pool: crate::pool::postgres_pool(url, cfg)?,
            write_deadline: Duration::from_millis(
                cfg.acquire_timeout_ms + cfg.statement_timeout_ms + 1000,
            ),
            registry: Arc::default(),
        })
    }

    /// Applies the telemetry domain's migrations ([`crate::Domain::migrate_postgres`]).
    pub async fn migrate(&self) -> Result<Migrated, StoreError> {
        TELEMETRY.migrate_postgres(&self.pool).await
    }

    /// The pool, for tests and benchmarks that inspect the database directly.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn write(&self, batch: &Batch) -> Result<WriteOutcome, StoreError> {
        self.write_set(&WriteSet::from_batch(batch)).await
    }

    pub(crate) async fn write_set(&self, set: &WriteSet<'_>) -> Result<WriteOutcome, StoreError> {
        let mut new_pairs = self.registry.unregistered(set.points);
        // A fixed order, so that two replicas registering the same pairs cannot deadlock.
        new_pairs.sort_unstable();
        deadline(self.write_deadline, "write", async {
            // One statement is atomic on its own, so it needs no BEGIN/COMMIT: one round trip
            // instead of three or more, which on a busy machine is most of the write's latency.
            // Most batches hold only points of sessions already registered: the plain INSERT.
            let mut conn = self.pool.acquire().await.map_err(StoreError::pg)?;
            let inserted = if set.sessions.is_empty()
                && set.events.is_empty()
                && set.dead_letters.is_empty()
                && new_pairs.is_empty()
            {
                insert_unnest(&mut conn, set.points).await?
            } else {
                write_all(&mut conn, set, &new_pairs).await?
            };
            self.registry.remember(&new_pairs);
            Ok(WriteOutcome::new(set.points.len(), inserted))
        })
        .await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(StoreError::pg)
    }

    pub async fn sessions(&self, q: &SessionQuery) -> Result<Vec<SessionRecord>, StoreError> {
        let rows = sqlx::query_as::<_, SessionRecordRow>(SELECT_SESSIONS)
            .bind(q.device_id.as_deref())
            .bind(q.active_only)
            .bind(usize_to_sql(q.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::pg)?;
        rows.into_iter()
            .map(|r| r.into_record(Backend::Postgres))
            .collect()
    }

    pub async fn session(&self, session: &str) -> Result<Vec<SessionSummary>, StoreError> {
        let rows = sqlx::query_as::<_, SessionSummaryRow>(SELECT_SESSION_SUMMARY)
            .bind(session)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::pg)?;
        rows.into_iter()
            .map(|r| r.into_summary(session, Backend::Postgres))
            .collect()
    }

    pub async fn telemetry(&self, q: &TelemetryQuery) -> Result<Vec<Point>, StoreError> {
        let rows = sqlx::query_as::<_, PointRow>(SELECT_TELEMETRY)
            .bind(&q.session)
            .bind(q.device_id.as_deref())
            .bind(q.from_ms)
            .bind(q.to_ms)
            .bind(usize_to_sql(q.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::pg)?;
        rows.into_iter()
            .map(|r| r.into_point(Backend::Postgres))
            .collect()
    }

    pub async fn latest(&self, device_id: &str) -> Result<Option<Point>, StoreError> {
        let row = sqlx::query_as::<_, PointRow>(SELECT_LATEST)
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::pg)?;
        row.map(|r| r.into_point(Backend::Postgres)).transpose()
    }

    pub async fn events(&self, session: &str) -> Result<Vec<RoastEvent>, StoreError> {
        let rows = sqlx::query_as::<_, EventRow>(SELECT_EVENTS)
            .bind(session)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::pg)?;
        rows.into_iter()
            .map(|r| r.into_event(Backend::Postgres))
            .collect()
    }

    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterRecord>, StoreError> {
        let rows = sqlx::query_as::<_, DeadLetterRecordRow>(SELECT_DEAD_LETTERS)
            .bind(usize_to_sql(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::pg)?;
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
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(StoreError::pg)
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

fn bind_points<'q>(query: PgQuery<'q>, points: &[Point]) -> PgQuery<'q> {
    let c = encode::UnnestColumns::from(points);
    query
        .bind(c.device_id)
        .bind(c.session)
        .bind(c.seq)
        .bind(c.ts_ms)
        .bind(c.bt)
        .bind(c.et)
        .bind(c.gas)
        .bind(c.air)
        .bind(c.drum)
        .bind(c.extra)
        .bind(c.received_ms)
}

fn bind_pairs<'q>(query: PgQuery<'q>, pairs: &[NewPair<'_>]) -> PgQuery<'q> {
    query
        .bind(pairs.iter().map(|p| p.0).collect::<Vec<_>>())
        .bind(pairs.iter().map(|p| p.1).collect::<Vec<_>>())
        .bind(pairs.iter().map(|p| p.2).collect::<Vec<_>>())
}

fn bind_sessions<'q>(query: PgQuery<'q>, rows: &[SessionRow]) -> PgQuery<'q> {
    query
        .bind(
            rows.iter()
                .map(|r| r.device_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.session.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.started_ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.ended_ms).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(SessionRow::metadata_json)
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.updated_ms).collect::<Vec<_>>())
}

fn bind_dead_letters<'q>(query: PgQuery<'q>, rows: &[DeadLetterRow<'_>]) -> PgQuery<'q> {
    query
        .bind(rows.iter().map(|r| r.received_ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.topic).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.device_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.payload).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.payload_bytes).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.frame_index).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.reason_code).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.reason).collect::<Vec<_>>())
}

fn bind_events<'q>(query: PgQuery<'q>, rows: &[RoastEvent]) -> PgQuery<'q> {
    query
        .bind(rows.iter().map(|r| r.device_id.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.session.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.ts_ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.detected_ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.bt).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.et).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.ror).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.method.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.confidence).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.received_ms).collect::<Vec<_>>())
}

/// Runs `query`; its command tag's row count.
async fn execute(conn: &mut PgConnection, query: PgQuery<'_>) -> Result<u64, StoreError> {
    query
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
        .map_err(StoreError::pg)
}

async fn insert_unnest(conn: &mut PgConnection, points: &[Point]) -> Result<u64, StoreError> {
    execute(conn, bind_points(sqlx::query(INSERT_UNNEST), points)).await
}

/// [`WRITE_ALL`]: returns the points inserted.
async fn write_all(
    conn: &mut PgConnection,
    set: &WriteSet<'_>,
    pairs: &[NewPair<'_>],
) -> Result<u64, StoreError> {
    let query = bind_points(sqlx::query(WRITE_ALL), set.points);
    let query = bind_dead_letters(
        bind_sessions(bind_pairs(query, pairs), &set.sessions),
        &set.dead_letters,
    );
    execute(conn, bind_events(query, set.events)).await
}

/// Runs `fut`, or gives up after `limit` with [`StoreError::Timeout`].
async fn deadline<T>(
    limit: Duration,
    what: &'static str,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or(Err(StoreError::Timeout {
            backend: Backend::Postgres,
            what,
            ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        }))
}
