use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::pool::PoolSettings;

/// `[postgres]`: how to reach PostgreSQL, shared by every service that stores something there.
///
/// Batches of points are written with one `INSERT … SELECT … FROM unnest($1::text[], …)`
/// statement. A second strategy, binary `COPY` into a staging table, was measured and removed:
/// see `docs/ARCHITECTURE.md` (store) for the figures; `write_strategy` is no longer a setting.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/db`. `None`: no PostgreSQL, the local SQLite store is primary.
    /// A secret because URLs carry passwords; it is never logged or serialized.
    #[serde(skip_serializing)]
    pub url: Option<SecretString>,
    pub max_connections: u32,
    /// Connections kept open even when idle, so the first writes after start (or a quiet
    /// spell) do not pay for connecting. At least the ingestion pipeline's writer count.
    pub min_connections: u32,
    /// How long a write waits for a connection, including connecting, before PostgreSQL counts as
    /// unavailable.
    pub acquire_timeout_ms: u64,
    /// Server-side `statement_timeout` of every connection: a write that cannot finish in time
    /// counts as PostgreSQL unavailable (the batch goes to the fallback).
    pub statement_timeout_ms: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: None,
            max_connections: 8,
            min_connections: 4,
            acquire_timeout_ms: 2000,
            statement_timeout_ms: 5000,
        }
    }
}

impl PostgresConfig {
    /// The pool part of these settings.
    pub fn pool(&self) -> PoolSettings {
        PoolSettings::new(
            self.max_connections,
            self.min_connections,
            self.acquire_timeout_ms,
        )
    }
}

/// How the local SQLite store trades durability for speed.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteConfig {
    pub synchronous: Synchronous,
}

/// SQLite's `PRAGMA synchronous` (the store always runs in WAL mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    /// Every commit is fsynced: a point acknowledged to the device survives power loss.
    #[default]
    Full,
    /// Commits are fsynced at WAL checkpoints only: survives a process crash, but the last
    /// commits can be lost on power loss.
    Normal,
}

/// Background work of the durable store ([`crate::DurableStore::run_maintenance`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// How often PostgreSQL is probed while it is down.
    pub probe_interval_ms: u64,
    /// Points per replay transaction when draining the fallback into PostgreSQL.
    pub replay_chunk_points: usize,
    /// Daily partitions kept ready behind today: covers points that devices buffered while
    /// offline (the decoder accepts `ts` up to 7 days old) and fallback replays after an outage.
    pub partition_days_back: u32,
    /// Daily partitions created ahead of today, so that midnight never finds one missing.
    pub partition_days_ahead: u32,
    /// Dead letters older than this are deleted.
    pub dead_letter_retention_ms: i64,
    /// At most this many dead letters are kept (the newest).
    pub dead_letter_max_rows: u64,
    /// How often partitions are ensured and dead letters pruned.
    pub housekeeping_interval_ms: u64,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            probe_interval_ms: 1000,
            replay_chunk_points: 5000,
            partition_days_back: 8,
            partition_days_ahead: 2,
            dead_letter_retention_ms: 7 * 24 * 3600 * 1000,
            dead_letter_max_rows: 1_000_000,
            housekeeping_interval_ms: 3600 * 1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn config_defaults_and_overrides() {
        let pg: PostgresConfig = serde_json::from_str("{}").unwrap();
        assert!(pg.url.is_none());
        assert_eq!(
            (
                pg.max_connections,
                pg.acquire_timeout_ms,
                pg.statement_timeout_ms
            ),
            (8, 2000, 5000)
        );
        assert_eq!(pg.pool().max_connections, 8);

        let pg: PostgresConfig =
            serde_json::from_str(r#"{"url": "postgres://u:pw@h/db", "min_connections": 2}"#)
                .unwrap();
        assert_eq!(
            pg.url.as_ref().unwrap().expose_secret(),
            "postgres://u:pw@h/db"
        );
        assert_eq!(pg.pool().min_connections, 2);
        // The URL may carry a password: never in logs.
        assert!(!format!("{pg:?}").contains("pw"));
        assert!(serde_json::from_str::<PostgresConfig>(r#"{"urll": "x"}"#).is_err());
        // The removed COPY strategy: a configuration still naming it is refused, not ignored.
        let err = serde_json::from_str::<PostgresConfig>(r#"{"write_strategy": "copy"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `write_strategy`"), "{err}");

        let sqlite: SqliteConfig = serde_json::from_str(r#"{"synchronous": "normal"}"#).unwrap();
        assert_eq!(sqlite.synchronous, Synchronous::Normal);
        assert_eq!(SqliteConfig::default().synchronous, Synchronous::Full);

        let m: MaintenanceConfig = serde_json::from_str(r#"{"partition_days_back": 3}"#).unwrap();
        assert_eq!((m.partition_days_back, m.partition_days_ahead), (3, 2));
        assert_eq!(m.dead_letter_max_rows, 1_000_000);
    }
}
