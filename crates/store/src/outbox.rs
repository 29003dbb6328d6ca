//! driver-bridge's local state on disk (`driver-bridge.db`, SQLite in WAL mode). Here because
//! only this crate knows SQL; it is the device side's own file, not a platform domain, so its
//! two tables are created in place rather than migrated.
//!
//! - **the outbox**: every message is written here first and deleted only after the broker's
//!   PUBACK, so sampling never waits for the broker and nothing sampled is lost while it is
//!   away — the sender sends the backlog in `seq` order once it is back;
//! - **seen commands**: the ids and nonces of verified commands until their `not_after`, so a
//!   restart does not open a window for replaying one.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::Row as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
#[error("driver-bridge outbox: {0}")]
pub struct OutboxError(#[from] sqlx::Error);

/// One message waiting for the broker.
#[derive(Debug, Clone)]
pub struct Message {
    pub seq: i64,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What [`Outbox::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The outbox was full: the message was dropped (and counted).
    Dropped,
}

#[derive(Clone)]
pub struct Outbox {
    pool: SqlitePool,
    max: u64,
    depth: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    /// Woken by every push, for the sender.
    pushed: Arc<Notify>,
}

impl Outbox {
    pub async fn open(path: &Path, max: u64) -> Result<Outbox, OutboxError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| OutboxError(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Full: a point is on disk before the next sample, whatever happens to the process.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        // One connection: writes are serialized anyway, and reads see every write at once.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        for ddl in [
            // AUTOINCREMENT: a seq is never reused after a delete, so order is send order.
            "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL)",
            "CREATE TABLE IF NOT EXISTS seen_commands (id TEXT PRIMARY KEY, nonce TEXT NOT NULL, device_id TEXT NOT NULL, not_after INTEGER NOT NULL)",
            "CREATE UNIQUE INDEX IF NOT EXISTS seen_commands_nonce ON seen_commands (device_id, nonce)",
        ] {
            sqlx::query(ddl).execute(&pool).await?;
        }
        let depth: i64 = sqlx::query("SELECT count(*) FROM outbox")
            .fetch_one(&pool)
            .await?
            .get(0);
        let depth = Arc::new(AtomicU64::new(depth.max(0) as u64));

        Ok(Outbox {
            pool,
            max,
            depth,
            dropped: Arc::new(AtomicU64::new(0)),
            pushed: Arc::new(Notify::new()),
        })
    }

    /// Queues a message for the broker, unless the outbox is full.
    pub async fn push(&self, topic: &str, payload: &[u8]) -> Result<Pushed, OutboxError> {
        if self.depth.load(Ordering::Relaxed) >= self.max {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(Pushed::Dropped);
        }
        sqlx::query("INSERT INTO outbox (topic, payload) VALUES (?, ?)")
            .bind(topic)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        self.depth.fetch_add(1, Ordering::Relaxed);
        self.pushed.notify_one();
        Ok(Pushed::Queued)
    }

    /// The oldest message not yet acknowledged by the broker.
    pub async fn head(&self) -> Result<Option<Message>, OutboxError> {
        let row = sqlx::query("SELECT seq, topic, payload FROM outbox ORDER BY seq LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| Message {
            seq: r.get(0),
            topic: r.get(1),
            payload: r.get(2),
        }))
    }

    /// Forgets a message the broker acknowledged.
    pub async fn delete(&self, seq: i64) -> Result<(), OutboxError> {
        let done = sqlx::query("DELETE FROM outbox WHERE seq = ?")
            .bind(seq)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() > 0 {
            let _ = self
                .depth
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                    Some(d.saturating_sub(1))
                });
        }
        Ok(())
    }

    pub async fn wait_pushed(&self) {
        self.pushed.notified().await;
    }

    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records a verified command's id and nonce for `device_id`; false when either was seen
    /// before (a replay). Expired entries are forgotten first: their commands are refused as
    /// expired anyway.
    pub async fn remember_command(
        &self,
        device_id: &str,
        id: &str,
        nonce: &str,
        not_after_ms: i64,
        now_ms: i64,
    ) -> Result<bool, OutboxError> {
        sqlx::query("DELETE FROM seen_commands WHERE not_after < ?")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO seen_commands (id, nonce, device_id, not_after) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(nonce)
        .bind(device_id)
        .bind(not_after_ms)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
