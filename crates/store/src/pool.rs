//! Connection pools, built the same way for every domain and both backends.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};

use crate::config::{PostgresConfig, SqliteConfig, Synchronous};
use crate::error::StoreError;

/// How a pool of connections behaves, for either backend: the one place where pool options are
/// turned into sqlx's, so every store of every domain gets the same (reasoned) choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// Connections kept open even when idle, so that the first requests after start (or a quiet
    /// spell) do not pay for connecting. Capped at `max_connections`.
    pub min_connections: u32,
    /// How long a request waits for a connection, including connecting, before the database
    /// counts as unavailable.
    pub acquire_timeout_ms: u64,
    /// An idle connection above `min_connections` is closed after this long; `None`: never.
    pub idle_timeout_ms: Option<u64>,
    /// A connection is replaced after this long; `None`: never.
    pub max_lifetime_ms: Option<u64>,
}

impl PoolSettings {
    /// sqlx's defaults for idling and lifetime, stated here so both backends share them.
    pub const IDLE_TIMEOUT_MS: u64 = 10 * 60 * 1000;
    pub const MAX_LIFETIME_MS: u64 = 30 * 60 * 1000;

    /// `max_connections` connections that idle out and are recycled as sqlx does by default.
    pub const fn new(max_connections: u32, min_connections: u32, acquire_timeout_ms: u64) -> Self {
        PoolSettings {
            max_connections,
            min_connections,
            acquire_timeout_ms,
            idle_timeout_ms: Some(Self::IDLE_TIMEOUT_MS),
            max_lifetime_ms: Some(Self::MAX_LIFETIME_MS),
        }
    }

    /// The sqlx pool options, for any backend.
    pub fn options<DB: sqlx::Database>(&self) -> Result<PoolOptions<DB>, StoreError> {
        if self.max_connections == 0 {
            return Err(StoreError::Config("max_connections must be > 0".into()));
        }
        Ok(PoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(self.min_connections.min(self.max_connections))
            .acquire_timeout(Duration::from_millis(self.acquire_timeout_ms))
            .idle_timeout(self.idle_timeout_ms.map(Duration::from_millis))
            .max_lifetime(self.max_lifetime_ms.map(Duration::from_millis))
            // A ping before every acquire is one more round trip per request; a broken
            // connection fails its request instead, which callers handle as unavailability.
            .test_before_acquire(false))
    }
}

/// A PostgreSQL pool for `url` with `cfg`'s settings, created without connecting: connections
/// are opened on first use, so this succeeds while PostgreSQL is down. Every connection gets the
/// configured `statement_timeout`.
pub fn postgres_pool(url: &str, cfg: &PostgresConfig) -> Result<PgPool, StoreError> {
    // The parse error's text never contains the URL, which may carry a password.
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?
        .application_name("simcorp-store")
        .options([("statement_timeout", cfg.statement_timeout_ms)]);
    let pool = cfg
        .pool()
        .options()
        .map_err(|_| StoreError::Config("postgres.max_connections must be > 0".into()))?;
    Ok(pool.connect_lazy_with(options))
}

/// A SQLite database as every store uses it: one writer connection, so writes are serialized
/// and never contend for SQLite's write lock, and a few readers, which WAL mode lets run
/// alongside a write.
#[derive(Debug, Clone)]
pub struct SqlitePools {
    pub writer: SqlitePool,
    pub reader: SqlitePool,
    pub path: PathBuf,
}

impl SqlitePools {
    /// Queued writes wait for the one connection; a long wait means the disk is stuck. The
    /// connection is never closed, so that no write pays for reopening the file.
    pub const WRITER: PoolSettings = PoolSettings {
        max_connections: 1,
        min_connections: 1,
        acquire_timeout_ms: 30_000,
        idle_timeout_ms: None,
        max_lifetime_ms: None,
    };
    pub const READER: PoolSettings = PoolSettings::new(4, 0, 30_000);

    /// Opens the database at `path`, creating it and its directory if needed. The writer
    /// connects at once, so a file that cannot be opened fails here; readers connect on use.
    pub async fn open(path: &Path, cfg: &SqliteConfig) -> Result<SqlitePools, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Path {
                path: dir.to_owned(),
                source,
            })?;
        }
        let base = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(false);
        let writer_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match cfg.synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            });
        let writer = Self::WRITER
            .options()?
            .connect_with(writer_options)
            .await
            .map_err(StoreError::sqlite)?;
        let reader = Self::READER
            .options()?
            .connect_lazy_with(base.read_only(true));
        Ok(SqlitePools {
            writer,
            reader,
            path: path.to_owned(),
        })
    }

    /// Closes both pools, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}
