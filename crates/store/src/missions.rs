//! The mission queue's tables (company-kernel's): missions submitted once per idempotency key,
//! claimed by workers under a lease — by priority, then age — kept alive by heartbeats, and
//! finished by the lease holder only; a failed attempt or a lease that ran out sends the mission
//! back to the queue after a backoff, the last one makes it dead. Every attempt is kept with how
//! it ended, so a dead mission keeps its reasons.
//!
//! Claiming is safe under concurrency: in PostgreSQL the candidate row is taken `FOR UPDATE
//! SKIP LOCKED`, so two workers never get the same mission and neither waits for the other; in
//! SQLite there is one writer. Every change is conditional on the state and on the lease token
//! of the claim it belongs to, so a worker whose lease expired (and whose mission another worker
//! now holds) can neither complete nor fail it.

use std::path::Path;

use sqlx::postgres::PgPool;

use crate::config::{PostgresConfig, SqliteConfig};
use crate::domain::MISSIONS;
use crate::error::{Backend, StoreError};
use crate::pool::SqlitePools;

/// States, as stored.
pub mod state {
    pub const QUEUED: &str = "queued";
    pub const RUNNING: &str = "running";
    pub const DONE: &str = "done";
    pub const DEAD: &str = "dead";
}

/// A mission as submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMission {
    pub id: String,
    pub kind: String,
    /// JSON.
    pub payload: String,
    pub priority: i32,
    pub idempotency_key: Option<String>,
    pub max_attempts: i32,
    pub not_before_ms: i64,
    pub deadline_ms: Option<i64>,
    pub trace_id: Option<String>,
}

/// A mission as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct Mission {
    pub id: String,
    pub kind: String,
    pub payload: String,
    pub priority: i32,
    pub idempotency_key: Option<String>,
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub not_before_ms: i64,
    pub deadline_ms: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub lease_owner: Option<String>,
    #[serde(skip)]
    pub lease_token: Option<String>,
    pub lease_expires_ms: Option<i64>,
    pub result: Option<String>,
    pub trace_id: Option<String>,
}

/// One claim of a mission and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Attempt {
    pub attempt: i32,
    pub worker: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    /// `done`, `failed`, `lease_expired`, or none while it runs.
    pub outcome: Option<String>,
    pub reason: Option<String>,
}

/// What became of a mission whose attempt ended without success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Back in the queue, claimable from `not_before_ms`.
    Queued { not_before_ms: i64 },
    /// That was its last attempt.
    Dead,
}

const COLUMNS: &str = "id, kind, payload, priority, idempotency_key, state, attempts, \
    max_attempts, not_before_ms, deadline_ms, created_ms, updated_ms, lease_owner, lease_token, \
    lease_expires_ms, result, trace_id";

/// The mission queue: PostgreSQL, or its own SQLite file. Cheap to clone.
#[derive(Debug, Clone)]
pub enum MissionsStore {
    Postgres(PgPool),
    Sqlite(SqlitePools),
}

/// Runs `$body` on whichever backend: `$db` is the pool (SQLite's writer or reader as asked),
/// `$err` maps its errors, `$skip_locked` is the row-lock clause that lets concurrent claimers
/// pass each other (nothing in SQLite, which has one writer).
macro_rules! on_backend {
    ($self:expr, $which:ident, |$db:ident, $err:ident, $skip_locked:ident| $body:block) => {
        match $self {
            MissionsStore::Postgres(pool) => {
                let $db = pool;
                let $err = StoreError::pg;
                let $skip_locked = " FOR UPDATE SKIP LOCKED";
                let _ = $skip_locked;
                $body
            }
            MissionsStore::Sqlite(pools) => {
                let $db = &pools.$which;
                let $err = StoreError::sqlite;
                let $skip_locked = "";
                let _ = $skip_locked;
                $body
            }
        }
    };
}

impl MissionsStore {
    /// Connects (lazily) and applies the missions domain's migrations.
    pub async fn postgres(url: &str, cfg: &PostgresConfig) -> Result<Self, StoreError> {
        let pool = crate::pool::postgres_pool(url, cfg)?;
        MISSIONS.migrate_postgres(&pool).await?;
        Ok(MissionsStore::Postgres(pool))
    }

    /// Opens `missions.db` in `data_dir` and applies the domain's migrations.
    pub async fn sqlite(data_dir: &Path, cfg: &SqliteConfig) -> Result<Self, StoreError> {
        let pools = SqlitePools::open(&data_dir.join(MISSIONS.sqlite_file()), cfg).await?;
        MISSIONS.migrate_sqlite(&pools.writer).await?;
        Ok(MissionsStore::Sqlite(pools))
    }

    fn backend(&self) -> Backend {
        match self {
            MissionsStore::Postgres(_) => Backend::Postgres,
            MissionsStore::Sqlite(_) => Backend::Sqlite,
        }
    }

    pub async fn close(&self) {
        match self {
            MissionsStore::Postgres(pool) => pool.close().await,
            MissionsStore::Sqlite(pools) => pools.close().await,
        }
    }

    /// Stores a mission, queued; with an idempotency key already taken, stores nothing and
    /// returns the mission that has it. `true` when this call created it.
    pub async fn submit(&self, m: &NewMission, now_ms: i64) -> Result<(Mission, bool), StoreError> {
        let inserted = on_backend!(self, writer, |db, err, skip_locked| {
            sqlx::query(
                "INSERT INTO missions (id, kind, payload, priority, idempotency_key, state, \
                 attempts, max_attempts, not_before_ms, deadline_ms, created_ms, updated_ms, trace_id) \
                 VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $7, $8, $9, $9, $10) \
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(&m.id)
            .bind(&m.kind)
            .bind(&m.payload)
            .bind(m.priority)
            .bind(&m.idempotency_key)
            .bind(m.max_attempts)
            .bind(m.not_before_ms)
            .bind(m.deadline_ms)
            .bind(now_ms)
            .bind(&m.trace_id)
            .execute(db)
            .await
            .map_err(err)?
            .rows_affected()
        });
        let found = match (&m.idempotency_key, inserted) {
            (Some(key), 0) => self.by_key(key).await?,
            _ => self.get(&m.id).await?,
        };
        let mission = found.ok_or_else(|| {
            StoreError::corrupt(
                self.backend(),
                format!("mission {} vanished as it was submitted", m.id),
            )
        })?;
        Ok((mission, inserted == 1))
    }

    pub async fn get(&self, id: &str) -> Result<Option<Mission>, StoreError> {
        on_backend!(self, reader, |db, err, skip_locked| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM missions WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(db)
            .await
            .map_err(err)
        })
    }

    async fn by_key(&self, key: &str) -> Result<Option<Mission>, StoreError> {
        on_backend!(self, writer, |db, err, skip_locked| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM missions WHERE idempotency_key = $1"
            )))
            .bind(key)
            .fetch_optional(db)
            .await
            .map_err(err)
        })
    }

    /// Missions in `state` (all without), by priority then age, at most `limit`.
    pub async fn list(&self, state: Option<&str>, limit: u32) -> Result<Vec<Mission>, StoreError> {
        on_backend!(self, reader, |db, err, skip_locked| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM missions WHERE ($1 IS NULL OR state = $1) \
                 ORDER BY priority DESC, created_ms, id LIMIT $2"
            )))
            .bind(state)
            .bind(i64::from(limit))
            .fetch_all(db)
            .await
            .map_err(err)
        })
    }

    /// A mission's attempts, in order.
    pub async fn attempts(&self, id: &str) -> Result<Vec<Attempt>, StoreError> {
        on_backend!(self, reader, |db, err, skip_locked| {
            sqlx::query_as(
                "SELECT attempt, worker, started_ms, ended_ms, outcome, reason \
                 FROM mission_attempts WHERE mission_id = $1 ORDER BY attempt",
            )
            .bind(id)
            .fetch_all(db)
            .await
            .map_err(err)
        })
    }

    /// Gives `worker` the claimable mission of one of `kinds` with the highest priority, then
    /// the oldest, under a lease until `now_ms + lease_ms` with a token of its own; `None` when
    /// there is none. A mission past its deadline is never claimed ([`Self::expire_deadlines`]
    /// makes it dead).
    pub async fn claim(
        &self,
        worker: &str,
        kinds: &[String],
        lease_token: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Mission>, StoreError> {
        // A list of strings always serializes.
        let kinds = serde_json::to_string(kinds).unwrap_or_else(|_| "[]".into());
        // Each backend reads the kinds from one JSON array parameter.
        let kinds_sql = match self {
            MissionsStore::Postgres(_) => "(SELECT jsonb_array_elements_text($6::jsonb))",
            MissionsStore::Sqlite(_) => "(SELECT value FROM json_each($6))",
        };
        on_backend!(self, writer, |db, err, skip_locked| {
            let mut tx = db.begin().await.map_err(err)?;
            let claimed: Option<Mission> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE missions SET state = 'running', attempts = attempts + 1, \
                 lease_owner = $1, lease_token = $2, lease_expires_ms = $3, updated_ms = $4 \
                 WHERE id = (SELECT id FROM missions WHERE state = 'queued' \
                   AND not_before_ms <= $5 AND (deadline_ms IS NULL OR deadline_ms >= $5) \
                   AND kind IN {kinds_sql} \
                   ORDER BY priority DESC, created_ms, id LIMIT 1{skip_locked}) \
                 AND state = 'queued' \
                 RETURNING {COLUMNS}"
            )))
            .bind(worker)
            .bind(lease_token)
            .bind(now_ms + lease_ms)
            .bind(now_ms)
            .bind(now_ms)
            .bind(&kinds)
            .fetch_optional(&mut *tx)
            .await
            .map_err(err)?;
            if let Some(m) = &claimed {
                sqlx::query(
                    "INSERT INTO mission_attempts (mission_id, attempt, worker, started_ms) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&m.id)
                .bind(m.attempts)
                .bind(worker)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            }
            tx.commit().await.map_err(err)?;
            Ok(claimed)
        })
    }

    /// Extends the lease of the claim `lease_token`; `false` when that claim no longer holds
    /// the mission (its lease expired and it was requeued, or it finished).
    pub async fn heartbeat(
        &self,
        id: &str,
        lease_token: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        on_backend!(self, writer, |db, err, skip_locked| {
            sqlx::query(
                "UPDATE missions SET lease_expires_ms = $1, updated_ms = $2 \
                 WHERE id = $3 AND state = 'running' AND lease_token = $4",
            )
            .bind(now_ms + lease_ms)
            .bind(now_ms)
            .bind(id)
            .bind(lease_token)
            .execute(db)
            .await
            .map(|r| r.rows_affected() == 1)
            .map_err(err)
        })
    }

    /// Finishes the mission of the claim `lease_token` with its result; `false` when that claim
    /// no longer holds it.
    pub async fn complete(
        &self,
        id: &str,
        lease_token: &str,
        result: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.end(id, lease_token, now_ms, "done", None, Some(result), None)
            .await
            .map(|r| r.is_some())
    }

    /// Ends the claim `lease_token` as failed for `reason`: the mission is queued again after
    /// `backoff_ms`, or dead if that was its last attempt. `None` when that claim no longer
    /// holds it.
    pub async fn fail(
        &self,
        id: &str,
        lease_token: &str,
        reason: &str,
        backoff_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Retry>, StoreError> {
        self.end(
            id,
            lease_token,
            now_ms,
            "failed",
            Some(reason),
            None,
            Some(backoff_ms),
        )
        .await
    }

    /// Makes dead every queued mission whose deadline passed before `now_ms`; how many.
    pub async fn expire_deadlines(&self, now_ms: i64) -> Result<u64, StoreError> {
        on_backend!(self, writer, |db, err, skip_locked| {
            sqlx::query(
                "UPDATE missions SET state = 'dead', updated_ms = $1 \
                 WHERE state = 'queued' AND deadline_ms IS NOT NULL AND deadline_ms < $1",
            )
            .bind(now_ms)
            .execute(db)
            .await
            .map(|r| r.rows_affected())
            .map_err(err)
        })
    }

    /// Requeues (after `backoff_ms(attempts)`) or kills every running mission whose lease ran
    /// out before `now_ms`: its worker is gone. How many.
    pub async fn expire_leases(
        &self,
        now_ms: i64,
        backoff_ms: impl Fn(i32) -> i64,
    ) -> Result<usize, StoreError> {
        let expired: Vec<(String, String, i32)> =
            on_backend!(self, reader, |db, err, skip_locked| {
                sqlx::query_as(
                    "SELECT id, lease_token, attempts FROM missions \
                 WHERE state = 'running' AND lease_expires_ms < $1 ORDER BY id",
                )
                .bind(now_ms)
                .fetch_all(db)
                .await
                .map_err(err)
            })?;
        let mut n = 0;
        for (id, token, attempts) in expired {
            let ended = self
                .end(
                    &id,
                    &token,
                    now_ms,
                    "lease_expired",
                    Some("the worker's lease expired: no heartbeat"),
                    None,
                    Some(backoff_ms(attempts)),
                )
                .await?;
            n += usize::from(ended.is_some());
        }
        Ok(n)
    }

    /// Ends the claim `lease_token` of mission `id`: done (no backoff), or not (requeued after
    /// the backoff, or dead after the last attempt), with its attempt's outcome.
    #[allow(clippy::too_many_arguments)]
    async fn end(
        &self,
        id: &str,
        lease_token: &str,
        now_ms: i64,
        outcome: &str,
        reason: Option<&str>,
        result: Option<&str>,
        backoff_ms: Option<i64>,
    ) -> Result<Option<Retry>, StoreError> {
        on_backend!(self, writer, |db, err, skip_locked| {
            let mut tx = db.begin().await.map_err(err)?;
            let (next, not_before) = match backoff_ms {
                None => (state::DONE, now_ms),
                Some(backoff) => ("", now_ms + backoff.max(0)),
            };
            // A failed last attempt is dead; any other failure is queued again.
            let row: Option<(String, i64)> = sqlx::query_as(
                "UPDATE missions SET \
                   state = CASE WHEN $1 <> '' THEN $1 \
                     WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END, \
                   not_before_ms = CASE WHEN $1 <> '' THEN not_before_ms ELSE $2 END, \
                   result = COALESCE($3, result), \
                   lease_owner = NULL, lease_token = NULL, lease_expires_ms = NULL, updated_ms = $4 \
                 WHERE id = $5 AND state = 'running' AND lease_token = $6 \
                 RETURNING state, not_before_ms",
            )
            .bind(next)
            .bind(not_before)
            .bind(result)
            .bind(now_ms)
            .bind(id)
            .bind(lease_token)
            .fetch_optional(&mut *tx)
            .await
            .map_err(err)?;
            let Some((state, not_before_ms)) = row else {
                return Ok(None);
            };
            sqlx::query(
                "UPDATE mission_attempts SET ended_ms = $1, outcome = $2, reason = $3 \
                 WHERE mission_id = $4 AND attempt = (SELECT attempts FROM missions WHERE id = $4)",
            )
            .bind(now_ms)
            .bind(outcome)
            .bind(reason)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            tx.commit().await.map_err(err)?;
            Ok(Some(if state == state::DEAD {
                Retry::Dead
            } else {
                Retry::Queued { not_before_ms }
            }))
        })
    }
}
