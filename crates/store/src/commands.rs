//! The command service's tables: commands and their lifecycle, the tamper-evident audit log, and
//! the device key registry. The same SQL runs on both backends (SQLite reads `$1` as the first
//! parameter, like PostgreSQL); what the states mean and which transitions exist is the command
//! service's business — here a transition is only "from this state to that one, once".
//!
//! Every change is one transaction with its audit entry: a transition that happened is audited,
//! and an audited transition happened. Appends take the lock of the chain's head row (`FOR
//! UPDATE` in PostgreSQL; SQLite has a single writer), so concurrent writers — tasks or replicas
//! — never fork the chain.

use std::path::Path;

use sha2::{Digest as _, Sha256};
use sqlx::Row as _;
use sqlx::postgres::PgPool;

use crate::config::{PostgresConfig, SqliteConfig};
use crate::domain::COMMANDS;
use crate::error::StoreError;
use crate::pool::SqlitePools;

/// The `prev_hash` of the first audit entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A device's session as its session messages told the command service: which session runs,
/// whether it still does, and on which roaster model (whose safety limits apply).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct DeviceSession {
    pub device_id: String,
    pub session: String,
    pub active: bool,
    pub roaster_model: Option<String>,
    /// The message's own time (device clock).
    pub ts_ms: i64,
}

/// A command as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct CommandRecord {
    pub id: String,
    pub device_id: String,
    pub session: String,
    pub control: String,
    pub value: f64,
    pub from_value: Option<f64>,
    pub reason: String,
    pub proposer: String,
    pub source: String,
    pub state: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub decided_by: Option<String>,
    pub decided_ms: Option<i64>,
    pub sent_ms: Option<i64>,
    pub not_after_ms: Option<i64>,
    pub nonce: Option<String>,
    pub key_id: Option<String>,
    pub finished_ms: Option<i64>,
    pub outcome_reason: Option<String>,
    pub updated_ms: i64,
}

/// What a transition sets besides the state; `None` leaves a column as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub decided_by: Option<String>,
    pub decided_ms: Option<i64>,
    pub sent_ms: Option<i64>,
    pub not_after_ms: Option<i64>,
    pub nonce: Option<String>,
    pub key_id: Option<String>,
    pub finished_ms: Option<i64>,
    pub outcome_reason: Option<String>,
}

/// An audit entry to append: who did what to which subject (a command id, `device/key`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    pub ts_ms: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub reason: String,
    /// Free-form (JSON text, by convention).
    pub detail: String,
}

/// An audit entry as stored, with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEntry {
    pub seq: i64,
    pub ts_ms: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub reason: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEntry {
    /// The link's hash: SHA-256(prev_hash ‖ canonical entry), hex. Canonical: the fields as a
    /// JSON array, which has one spelling for each value.
    pub fn compute_hash(prev_hash: &str, seq: i64, e: &NewAudit) -> String {
        let canonical = serde_json::json!([
            seq, e.ts_ms, e.actor, e.action, e.subject, e.reason, e.detail
        ])
        .to_string();
        let mut h = Sha256::new();
        h.update(prev_hash.as_bytes());
        h.update(canonical.as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn content(&self) -> NewAudit {
        NewAudit {
            ts_ms: self.ts_ms,
            actor: self.actor.clone(),
            action: self.action.clone(),
            subject: self.subject.clone(),
            reason: self.reason.clone(),
            detail: self.detail.clone(),
        }
    }
}

/// What [`CommandsStore::verify_audit`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainReport {
    /// Every link holds; `entries` were checked.
    Ok { entries: u64, head: String },
    /// The first entry that does not follow from the one before it.
    Broken { seq: i64, reason: String },
}

/// A device key as registered.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct DeviceKey {
    pub device_id: String,
    pub key_id: String,
    /// Base64 Ed25519.
    pub public_key: String,
    /// `active`, `pending`, `retired` or `revoked`.
    pub state: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// The command service's store: PostgreSQL, or its own SQLite file. Cheap to clone.
#[derive(Debug, Clone)]
pub enum CommandsStore {
    Postgres(PgPool),
    Sqlite(SqlitePools),
}

/// Runs `$body` on whichever backend: `$db` is the pool (SQLite's writer or reader as asked),
/// `$err` maps its errors, `$lock` is the row-lock clause of that backend.
macro_rules! on_backend {
    ($self:expr, $which:ident, |$db:ident, $err:ident, $lock:ident| $body:block) => {
        match $self {
            CommandsStore::Postgres(pool) => {
                let $db = pool;
                let $err = StoreError::pg;
                let $lock = " FOR UPDATE";
                let _ = $lock;
                $body
            }
            CommandsStore::Sqlite(pools) => {
                let $db = &pools.$which;
                let $err = StoreError::sqlite;
                // One writer: a transaction is already alone.
                let $lock = "";
                let _ = $lock;
                $body
            }
        }
    };
}

const COMMAND_COLUMNS: &str = "id, device_id, session, control, value, from_value, reason, proposer, source, state, \
     created_ms, expires_ms, decided_by, decided_ms, sent_ms, not_after_ms, nonce, key_id, \
     finished_ms, outcome_reason, updated_ms";
const AUDIT_COLUMNS: &str = "seq, ts_ms, actor, action, subject, reason, detail, prev_hash, hash";
const KEY_COLUMNS: &str = "device_id, key_id, public_key, state, created_ms, updated_ms";

/// Appends `e` to the chain inside the transaction `$tx`.
macro_rules! append {
    ($tx:expr, $err:ident, $lock:ident, $e:expr) => {{
        let e: &NewAudit = $e;
        let head = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT seq, hash FROM command_audit_head WHERE id = 1{}",
            $lock
        )))
        .fetch_one(&mut *$tx)
        .await
        .map_err($err)?;
        let prev_seq: i64 = head.try_get("seq").map_err($err)?;
        let prev_hash: String = head.try_get("hash").map_err($err)?;
        let seq = prev_seq + 1;
        let hash = AuditEntry::compute_hash(&prev_hash, seq, e);
        sqlx::query(
            "INSERT INTO command_audit (seq, ts_ms, actor, action, subject, reason, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(seq)
        .bind(e.ts_ms)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.subject)
        .bind(&e.reason)
        .bind(&e.detail)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut *$tx)
        .await
        .map_err($err)?;
        sqlx::query("UPDATE command_audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(seq)
            .bind(&hash)
            .execute(&mut *$tx)
            .await
            .map_err($err)?;
        seq
    }};
}

impl CommandsStore {
    /// Connects (lazily) and applies the commands domain's migrations.
    pub async fn postgres(url: &str, cfg: &PostgresConfig) -> Result<Self, StoreError> {
        let pool = crate::pool::postgres_pool(url, cfg)?;
        COMMANDS.migrate_postgres(&pool).await?;
        Ok(CommandsStore::Postgres(pool))
    }

    /// Opens `commands.db` in `data_dir` and applies the domain's migrations.
    pub async fn sqlite(data_dir: &Path, cfg: &SqliteConfig) -> Result<Self, StoreError> {
        let pools = SqlitePools::open(&data_dir.join(COMMANDS.sqlite_file()), cfg).await?;
        COMMANDS.migrate_sqlite(&pools.writer).await?;
        Ok(CommandsStore::Sqlite(pools))
    }

    pub async fn close(&self) {
        match self {
            CommandsStore::Postgres(pool) => pool.close().await,
            CommandsStore::Sqlite(pools) => pools.close().await,
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, reader, |db, err, lock| {
            sqlx::query("SELECT 1")
                .execute(db)
                .await
                .map(|_| ())
                .map_err(err)
        })
    }

    /// Stores a new command (in the state it has) with its audit entry. An id taken is a
    /// [`Conflict`](crate::ErrorKind::Conflict).
    pub async fn insert_command(
        &self,
        c: &CommandRecord,
        audit: &NewAudit,
    ) -> Result<(), StoreError> {
        on_backend!(self, writer, |db, err, lock| {
            let mut tx = db.begin().await.map_err(err)?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO commands ({COMMAND_COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
            )))
            .bind(&c.id)
            .bind(&c.device_id)
            .bind(&c.session)
            .bind(&c.control)
            .bind(c.value)
            .bind(c.from_value)
            .bind(&c.reason)
            .bind(&c.proposer)
            .bind(&c.source)
            .bind(&c.state)
            .bind(c.created_ms)
            .bind(c.expires_ms)
            .bind(&c.decided_by)
            .bind(c.decided_ms)
            .bind(c.sent_ms)
            .bind(c.not_after_ms)
            .bind(&c.nonce)
            .bind(&c.key_id)
            .bind(c.finished_ms)
            .bind(&c.outcome_reason)
            .bind(c.updated_ms)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            append!(tx, err, lock, audit);
            tx.commit().await.map_err(err)
        })
    }

    /// Moves command `id` from state `from` to `to`, setting `changes`, with its audit entry —
    /// if it is in `from`. `None` when it was not (unknown, or already moved on: a transition
    /// happens once, whoever asks twice).
    pub async fn transition(
        &self,
        id: &str,
        from: &str,
        to: &str,
        changes: &Changes,
        audit: &NewAudit,
    ) -> Result<Option<CommandRecord>, StoreError> {
        on_backend!(self, writer, |db, err, lock| {
            let mut tx = db.begin().await.map_err(err)?;
            let updated: Option<CommandRecord> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE commands SET state = $3, updated_ms = $4, \
                 decided_by = COALESCE($5, decided_by), decided_ms = COALESCE($6, decided_ms), \
                 sent_ms = COALESCE($7, sent_ms), not_after_ms = COALESCE($8, not_after_ms), \
                 nonce = COALESCE($9, nonce), key_id = COALESCE($10, key_id), \
                 finished_ms = COALESCE($11, finished_ms), outcome_reason = COALESCE($12, outcome_reason) \
                 WHERE id = $1 AND state = $2 RETURNING {COMMAND_COLUMNS}"
            )))
            .bind(id)
            .bind(from)
            .bind(to)
            .bind(audit.ts_ms)
            .bind(&changes.decided_by)
            .bind(changes.decided_ms)
            .bind(changes.sent_ms)
            .bind(changes.not_after_ms)
            .bind(&changes.nonce)
            .bind(&changes.key_id)
            .bind(changes.finished_ms)
            .bind(&changes.outcome_reason)
            .fetch_optional(&mut *tx)
            .await
            .map_err(err)?;
            if updated.is_none() {
                tx.rollback().await.map_err(err)?;
                return Ok(None);
            }
            append!(tx, err, lock, audit);
            tx.commit().await.map_err(err)?;
            Ok(updated)
        })
    }

    /// Appends an entry that changes no state (a refusal, a bad ack, a key operation); its seq.
    pub async fn audit(&self, audit: &NewAudit) -> Result<i64, StoreError> {
        on_backend!(self, writer, |db, err, lock| {
            let mut tx = db.begin().await.map_err(err)?;
            let seq = append!(tx, err, lock, audit);
            tx.commit().await.map_err(err)?;
            Ok(seq)
        })
    }

    pub async fn command(&self, id: &str) -> Result<Option<CommandRecord>, StoreError> {
        on_backend!(self, reader, |db, err, lock| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COMMAND_COLUMNS} FROM commands WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(db)
            .await
            .map_err(err)
        })
    }

    /// Commands, newest first, of one device and/or in one state when given.
    pub async fn commands(
        &self,
        device_id: Option<&str>,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        on_backend!(self, reader, |db, err, lock| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COMMAND_COLUMNS} FROM commands \
                 WHERE ($1 IS NULL OR device_id = $1) AND ($2 IS NULL OR state = $2) \
                 ORDER BY created_ms DESC, id LIMIT $3"
            )))
            .bind(device_id)
            .bind(state)
            .bind(i64::from(limit))
            .fetch_all(db)
            .await
            .map_err(err)
        })
    }

    /// Commands in `state`, the longest there first: the work of the service's sweeper.
    pub async fn in_state(
        &self,
        state: &str,
        limit: u32,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        on_backend!(self, reader, |db, err, lock| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COMMAND_COLUMNS} FROM commands WHERE state = $1 \
                 ORDER BY updated_ms, id LIMIT $2"
            )))
            .bind(state)
            .bind(i64::from(limit))
            .fetch_all(db)
            .await
            .map_err(err)
        })
    }

    /// The commands of one device's control proposed since `since_ms`, oldest first.
    pub async fn recent(
        &self,
        device_id: &str,
        control: &str,
        since_ms: i64,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        on_backend!(self, reader, |db, err, lock| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COMMAND_COLUMNS} FROM commands \
                 WHERE device_id = $1 AND control = $2 AND created_ms >= $3 ORDER BY created_ms, id"
            )))
            .bind(device_id)
            .bind(control)
            .bind(since_ms)
            .fetch_all(db)
            .await
            .map_err(err)
        })
    }

    /// The audit entries about `subject`, in order.
    pub async fn history(&self, subject: &str) -> Result<Vec<AuditEntry>, StoreError> {
        on_backend!(self, reader, |db, err, lock| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {AUDIT_COLUMNS} FROM command_audit WHERE subject = $1 ORDER BY seq"
            )))
            .bind(subject)
            .fetch_all(db)
            .await
            .map_err(err)
        })
    }

    /// Audit entries after `after_seq`, in order, at most `limit`.
    pub async fn audit_entries(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        on_backend!(self, reader, |db, err, lock| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {AUDIT_COLUMNS} FROM command_audit WHERE seq > $1 ORDER BY seq LIMIT $2"
            )))
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(db)
            .await
            .map_err(err)
        })
    }

    /// Walks the whole chain: every entry's hash recomputed from its content and the hash
    /// before it, sequence numbers without gaps, and the head row at the last entry.
    pub async fn verify_audit(&self) -> Result<ChainReport, StoreError> {
        let mut prev_hash = GENESIS_HASH.to_owned();
        let mut prev_seq = 0i64;
        let mut entries = 0u64;
        loop {
            let page = self.audit_entries(prev_seq, 1000).await?;
            if page.is_empty() {
                break;
            }
            for e in page {
                let broken = |reason: String| Ok(ChainReport::Broken { seq: e.seq, reason });
                if e.seq != prev_seq + 1 {
                    return broken(format!("entry {} is missing", prev_seq + 1));
                }
                if e.prev_hash != prev_hash {
                    return broken("its prev_hash is not the hash of the entry before".into());
                }
                if AuditEntry::compute_hash(&prev_hash, e.seq, &e.content()) != e.hash {
                    return broken("its content does not match its hash".into());
                }
                prev_hash = e.hash;
                prev_seq = e.seq;
                entries += 1;
            }
        }
        let (head_seq, head_hash): (i64, String) = on_backend!(self, reader, |db, err, lock| {
            let row = sqlx::query("SELECT seq, hash FROM command_audit_head WHERE id = 1")
                .fetch_one(db)
                .await
                .map_err(err)?;
            (
                row.try_get("seq").map_err(err)?,
                row.try_get("hash").map_err(err)?,
            )
        });
        if head_seq != prev_seq || head_hash != prev_hash {
            return Ok(ChainReport::Broken {
                seq: prev_seq + 1,
                reason: format!(
                    "the head is at entry {head_seq}: entries after {prev_seq} were removed"
                ),
            });
        }
        Ok(ChainReport::Ok {
            entries,
            head: prev_hash,
        })
    }

    // Device keys.

    pub async fn device_keys(&self, device_id: &str) -> Result<Vec<DeviceKey>, StoreError> {
        on_backend!(self, reader, |db, err, lock| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {KEY_COLUMNS} FROM device_keys WHERE device_id = $1 ORDER BY created_ms, key_id"
            )))
            .bind(device_id)
            .fetch_all(db)
            .await
            .map_err(err)
        })
    }

    /// Every key that may sign for its device: `active` ones, and `pending` ones in their
    /// overlap window.
    /// Records a device's session as a session message tells it. A message older than the one
    /// recorded (a redelivery, or one overtaken) changes nothing.
    pub async fn put_device_session(&self, s: &DeviceSession) -> Result<(), StoreError> {
        on_backend!(self, writer, |db, err, lock| {
            sqlx::query(
                "INSERT INTO command_device_sessions (device_id, session, active, roaster_model, ts_ms) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (device_id) DO UPDATE SET session = excluded.session, \
                 active = excluded.active, roaster_model = excluded.roaster_model, ts_ms = excluded.ts_ms \
                 WHERE command_device_sessions.ts_ms <= excluded.ts_ms",
            )
            .bind(&s.device_id)
            .bind(&s.session)
            .bind(s.active)
            .bind(&s.roaster_model)
            .bind(s.ts_ms)
            .execute(db)
            .await
            .map(|_| ())
            .map_err(err)
        })
    }

    /// Every device's recorded session, by device id.
    pub async fn device_sessions(&self) -> Result<Vec<DeviceSession>, StoreError> {
        on_backend!(self, reader, |db, err, lock| {
            sqlx::query_as(
                "SELECT device_id, session, active, roaster_model, ts_ms \
                 FROM command_device_sessions ORDER BY device_id",
            )
            .fetch_all(db)
            .await
            .map_err(err)
        })
    }

    pub async fn usable_keys(&self) -> Result<Vec<DeviceKey>, StoreError> {
        on_backend!(self, reader, |db, err, lock| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {KEY_COLUMNS} FROM device_keys WHERE state IN ('active', 'pending') \
                 ORDER BY device_id, created_ms, key_id"
            )))
            .fetch_all(db)
            .await
            .map_err(err)
        })
    }

    pub async fn device_key(
        &self,
        device_id: &str,
        key_id: &str,
    ) -> Result<Option<DeviceKey>, StoreError> {
        on_backend!(self, reader, |db, err, lock| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {KEY_COLUMNS} FROM device_keys WHERE device_id = $1 AND key_id = $2"
            )))
            .bind(device_id)
            .bind(key_id)
            .fetch_optional(db)
            .await
            .map_err(err)
        })
    }

    /// Registers a key: `active` when the device has no active or pending key, else
    /// `pending`. A key id taken is a [`Conflict`](crate::ErrorKind::Conflict).
    pub async fn add_device_key(
        &self,
        device_id: &str,
        key_id: &str,
        public_key: &str,
        audit: &NewAudit,
    ) -> Result<DeviceKey, StoreError> {
        on_backend!(self, writer, |db, err, lock| {
            let mut tx = db.begin().await.map_err(err)?;
            // Under the chain's lock first, so two registrations of one device never both
            // become active.
            append!(tx, err, lock, audit);
            let live: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM device_keys WHERE device_id = $1 AND state IN ('active', 'pending')",
            )
            .bind(device_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(err)?;
            let key: DeviceKey = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "INSERT INTO device_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $5) RETURNING {KEY_COLUMNS}"
            )))
            .bind(device_id)
            .bind(key_id)
            .bind(public_key)
            .bind(if live == 0 { "active" } else { "pending" })
            .bind(audit.ts_ms)
            .fetch_one(&mut *tx)
            .await
            .map_err(err)?;
            tx.commit().await.map_err(err)?;
            Ok(key)
        })
    }

    /// Makes a pending key active and retires the device's other active keys. `None` when the
    /// key is not pending.
    pub async fn confirm_device_key(
        &self,
        device_id: &str,
        key_id: &str,
        audit: &NewAudit,
    ) -> Result<Option<DeviceKey>, StoreError> {
        on_backend!(self, writer, |db, err, lock| {
            let mut tx = db.begin().await.map_err(err)?;
            let key: Option<DeviceKey> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE device_keys SET state = 'active', updated_ms = $3 \
                 WHERE device_id = $1 AND key_id = $2 AND state = 'pending' RETURNING {KEY_COLUMNS}"
            )))
            .bind(device_id)
            .bind(key_id)
            .bind(audit.ts_ms)
            .fetch_optional(&mut *tx)
            .await
            .map_err(err)?;
            if key.is_none() {
                tx.rollback().await.map_err(err)?;
                return Ok(None);
            }
            sqlx::query(
                "UPDATE device_keys SET state = 'retired', updated_ms = $3 \
                 WHERE device_id = $1 AND key_id <> $2 AND state = 'active'",
            )
            .bind(device_id)
            .bind(key_id)
            .bind(audit.ts_ms)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            append!(tx, err, lock, audit);
            tx.commit().await.map_err(err)?;
            Ok(key)
        })
    }

    /// Revokes a key, whatever its state but revoked. `None` when unknown or already revoked.
    pub async fn revoke_device_key(
        &self,
        device_id: &str,
        key_id: &str,
        audit: &NewAudit,
    ) -> Result<Option<DeviceKey>, StoreError> {
        on_backend!(self, writer, |db, err, lock| {
            let mut tx = db.begin().await.map_err(err)?;
            let key: Option<DeviceKey> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE device_keys SET state = 'revoked', updated_ms = $3 \
                 WHERE device_id = $1 AND key_id = $2 AND state <> 'revoked' RETURNING {KEY_COLUMNS}"
            )))
            .bind(device_id)
            .bind(key_id)
            .bind(audit.ts_ms)
            .fetch_optional(&mut *tx)
            .await
            .map_err(err)?;
            if key.is_none() {
                tx.rollback().await.map_err(err)?;
                return Ok(None);
            }
            append!(tx, err, lock, audit);
            tx.commit().await.map_err(err)?;
            Ok(key)
        })
    }
}
