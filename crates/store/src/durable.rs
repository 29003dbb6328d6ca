//! The durable store: PostgreSQL with a local SQLite fallback.
//!
//! The platform acknowledges a point to the device only once it is committed somewhere durable.
//! While PostgreSQL answers, that is PostgreSQL. When it stops answering, the same batch is
//! committed to the local fallback file instead, so ingestion keeps acknowledging; once
//! PostgreSQL answers again, [`DurableStore::run_maintenance`] replays the fallback into it,
//! oldest first, and deletes each chunk locally only after PostgreSQL committed it. Writes and
//! replays are idempotent, so a crash between the two, or new batches overlapping the replay,
//! store nothing twice.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use model::Batch;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::config::{MaintenanceConfig, PostgresConfig, SqliteConfig};
use crate::error::StoreError;
use crate::metrics;
use crate::pg::PgStore;
use crate::rows::{DeadLetterRow, SessionRow, WriteSet};
use crate::sqlite::SqliteStore;
use crate::{Store, WriteOutcome};

/// Where a batch was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The primary store (PostgreSQL, or SQLite when no PostgreSQL is configured).
    Primary,
    /// The local fallback, while PostgreSQL is unavailable; replayed into it later.
    Fallback,
}

/// The result of [`DurableStore::write`]: the batch is durable at `destination`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub destination: Destination,
    pub outcome: WriteOutcome,
}

/// Session rows and dead letters per replay transaction.
const REPLAY_CHUNK_ROWS: usize = 1000;

/// See the module documentation. Cheap to clone; clones share state, so one clone can run
/// [`run_maintenance`](Self::run_maintenance) while others write.
#[derive(Debug, Clone)]
pub struct DurableStore {
    primary: Store,
    /// Only when the primary is PostgreSQL.
    fallback: Option<SqliteStore>,
    maintenance: MaintenanceConfig,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The primary is believed available: writes go to it first.
    up: AtomicBool,
    /// Migrations have run on PostgreSQL (they run when it first answers).
    migrated: AtomicBool,
    /// Points in the fallback (approximate between recounts).
    backlog: AtomicU64,
    /// The fallback may hold rows to replay.
    dirty: AtomicBool,
}

impl DurableStore {
    /// Opens the store with the default [`MaintenanceConfig`].
    ///
    /// Without a PostgreSQL URL, `sqlite_path` is the primary (and only) store. With one,
    /// `fallback_path` is the fallback; PostgreSQL being unreachable at start is not an error:
    /// the store starts in fallback mode and [`run_maintenance`](Self::run_maintenance) brings
    /// PostgreSQL in (migrations included) when it first answers.
    pub async fn open(
        pg: &PostgresConfig,
        sqlite_path: &Path,
        fallback_path: &Path,
        sqlite: &SqliteConfig,
    ) -> Result<Self, StoreError> {
        Self::open_with(
            pg,
            sqlite_path,
            fallback_path,
            sqlite,
            &MaintenanceConfig::default(),
        )
        .await
    }

    pub async fn open_with(
        pg: &PostgresConfig,
        sqlite_path: &Path,
        fallback_path: &Path,
        sqlite: &SqliteConfig,
        maintenance: &MaintenanceConfig,
    ) -> Result<Self, StoreError> {
        let Some(url) = &pg.url else {
            let store = DurableStore {
                primary: Store::Sqlite(SqliteStore::open(sqlite_path, sqlite).await?),
                fallback: None,
                maintenance: maintenance.clone(),
                state: Arc::default(),
            };
            store.set_up(true);
            metrics::backlog(0);
            return Ok(store);
        };
        let primary = PgStore::connect(url.expose_secret(), pg)?;
        let fallback = SqliteStore::open(fallback_path, sqlite).await?;
        let backlog = fallback.count_points().await?;
        let store = DurableStore {
            primary: Store::Postgres(primary),
            fallback: Some(fallback),
            maintenance: maintenance.clone(),
            state: Arc::new(State {
                // Whatever a previous run left behind is replayed once PostgreSQL is up.
                dirty: AtomicBool::new(true),
                backlog: AtomicU64::new(backlog),
                ..State::default()
            }),
        };
        metrics::backlog(backlog);
        metrics::primary_up(false);
        if backlog > 0 {
            tracing::info!(backlog, "the fallback holds points from a previous run");
        }
        match store.bring_up().await {
            Ok(()) => {}
            Err(e) if e.is_unavailable() => tracing::warn!(
                error = %e,
                "PostgreSQL is unavailable at start: writing to the local fallback until it answers"
            ),
            Err(e) => return Err(e),
        }
        Ok(store)
    }

    /// Commits the batch to the primary store, or to the fallback while PostgreSQL is
    /// unavailable. An error that is not about availability (the data was refused) is returned
    /// as is: the fallback would only postpone it.
    pub async fn write(&self, batch: &Batch) -> Result<Written, StoreError> {
        if batch.is_empty() {
            return Ok(Written {
                destination: Destination::Primary,
                outcome: WriteOutcome::default(),
            });
        }
        let Some(fallback) = &self.fallback else {
            return self.write_primary(batch).await;
        };
        if self.state.up.load(Ordering::Acquire) {
            match self.write_primary(batch).await {
                Err(e) if e.is_unavailable() => self.set_down(&e),
                other => return other,
            }
        }
        let outcome = fallback.write(batch).await?;
        self.state.dirty.store(true, Ordering::Release);
        let backlog = self
            .state
            .backlog
            .fetch_add(outcome.points_inserted, Ordering::AcqRel)
            + outcome.points_inserted;
        metrics::backlog(backlog);
        Ok(Written {
            destination: Destination::Fallback,
            outcome,
        })
    }

    async fn write_primary(&self, batch: &Batch) -> Result<Written, StoreError> {
        let outcome = self.primary.write(batch).await?;
        Ok(Written {
            destination: Destination::Primary,
            outcome,
        })
    }

    /// The primary store; the HTTP API reads from here.
    pub fn primary(&self) -> &Store {
        &self.primary
    }

    /// The fallback, when the primary is PostgreSQL.
    pub fn fallback(&self) -> Option<&SqliteStore> {
        self.fallback.as_ref()
    }

    /// Whether writes currently go to the primary store. False while PostgreSQL is down.
    pub fn primary_available(&self) -> bool {
        self.state.up.load(Ordering::Acquire)
    }

    /// Points waiting in the fallback for PostgreSQL.
    pub fn fallback_backlog(&self) -> u64 {
        self.state.backlog.load(Ordering::Acquire)
    }

    /// Runs until `shutdown` is cancelled: probes PostgreSQL while it is down, replays the
    /// fallback once it is up, ensures partitions and prunes dead letters periodically. Without
    /// it, a PostgreSQL that went down is never used again.
    pub async fn run_maintenance(&self, shutdown: CancellationToken) {
        let probe = Duration::from_millis(self.maintenance.probe_interval_ms.max(10));
        let housekeeping = Duration::from_millis(self.maintenance.housekeeping_interval_ms);
        let mut next_housekeeping = Instant::now();
        loop {
            if let (Store::Postgres(pg), Some(fallback)) = (&self.primary, &self.fallback) {
                if !self.primary_available() {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = self.bring_up() => match r {
                            Ok(()) => tracing::info!(
                                backlog = self.fallback_backlog(),
                                "PostgreSQL is available again"
                            ),
                            Err(e) if e.is_unavailable() => {
                                tracing::debug!(error = %e, "PostgreSQL still unavailable")
                            }
                            // It answers but refuses (missing database, failed migration ...):
                            // an operator must act, so say it at every probe.
                            Err(e) => tracing::error!(
                                error = %e,
                                "PostgreSQL answers but cannot be used; staying on the fallback"
                            ),
                        },
                    }
                }
                if self.primary_available() && self.state.dirty.swap(false, Ordering::AcqRel) {
                    self.replay(pg, fallback, &shutdown).await;
                }
            }
            if self.primary_available() && Instant::now() >= next_housekeeping {
                self.housekeeping().await;
                next_housekeeping = Instant::now() + housekeeping;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(probe) => {}
            }
        }
    }

    /// Checks PostgreSQL, migrates it the first time, ensures partitions, and marks it up.
    async fn bring_up(&self) -> Result<(), StoreError> {
        let Store::Postgres(pg) = &self.primary else {
            return Ok(());
        };
        pg.ping().await?;
        if !self.state.migrated.load(Ordering::Acquire) {
            pg.migrate().await?;
            self.state.migrated.store(true, Ordering::Release);
        }
        // Before any write: a day without its partition would send points to the default one.
        self.ensure_partitions(pg).await?;
        self.set_up(true);
        Ok(())
    }

    async fn ensure_partitions(&self, pg: &PgStore) -> Result<(), StoreError> {
        let m = &self.maintenance;
        match pg
            .ensure_partitions(
                model::now_ms(),
                m.partition_days_back,
                m.partition_days_ahead,
            )
            .await
        {
            Err(e) if e.is_unavailable() => Err(e),
            // Not worth refusing writes over: the default partition takes the points meanwhile.
            Err(e) => {
                tracing::warn!(error = %e, "ensuring telemetry partitions failed");
                Ok(())
            }
            Ok(_) => Ok(()),
        }
    }

    async fn housekeeping(&self) {
        if let Store::Postgres(pg) = &self.primary
            && let Err(e) = self.ensure_partitions(pg).await
        {
            tracing::warn!(error = %e, "ensuring telemetry partitions failed");
        }
        let m = &self.maintenance;
        let cutoff = model::now_ms().saturating_sub(m.dead_letter_retention_ms);
        match self
            .primary
            .prune_dead_letters(cutoff, m.dead_letter_max_rows)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned dead letters"),
            Err(e) => tracing::warn!(error = %e, "pruning dead letters failed"),
        }
    }

    fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::Release);
        metrics::primary_up(up);
    }

    fn set_down(&self, cause: &StoreError) {
        if self.state.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                error = %cause,
                "PostgreSQL is unavailable: writing to the local fallback until it answers"
            );
        }
        metrics::primary_up(false);
    }

    /// Drains the fallback into PostgreSQL. On failure the fallback is left marked for the next
    /// round, and an availability error marks PostgreSQL down.
    async fn replay(&self, pg: &PgStore, fallback: &SqliteStore, shutdown: &CancellationToken) {
        match self.replay_rounds(pg, fallback, shutdown).await {
            Ok(true) => {}
            Ok(false) => self.state.dirty.store(true, Ordering::Release),
            Err(e) => {
                self.state.dirty.store(true, Ordering::Release);
                if e.is_unavailable() {
                    self.set_down(&e);
                } else {
                    tracing::error!(error = %e, "replaying the fallback into PostgreSQL failed");
                }
            }
        }
        match fallback.count_points().await {
            Ok(n) => {
                self.state.backlog.store(n, Ordering::Release);
                metrics::backlog(n);
            }
            Err(e) => tracing::warn!(error = %e, "counting the fallback's points failed"),
        }
    }

    /// Returns `Ok(true)` once the fallback is empty, `Ok(false)` when interrupted.
    async fn replay_rounds(
        &self,
        pg: &PgStore,
        fallback: &SqliteStore,
        shutdown: &CancellationToken,
    ) -> Result<bool, StoreError> {
        let chunk = self.maintenance.replay_chunk_points.max(1);
        let mut total = 0u64;
        loop {
            if shutdown.is_cancelled() || !self.primary_available() {
                return Ok(false);
            }
            let mut moved = 0;

            let sessions = fallback.oldest_sessions(REPLAY_CHUNK_ROWS).await?;
            if !sessions.is_empty() {
                let set = WriteSet {
                    sessions: sessions.iter().map(|(r, _)| SessionRow::from(r)).collect(),
                    ..WriteSet::default()
                };
                pg.write_set(&set).await?;
                for (record, raw_metadata) in &sessions {
                    fallback
                        .delete_session_if_unchanged(record, raw_metadata)
                        .await?;
                }
                moved += sessions.len();
            }

            let (events, span) = fallback.oldest_events(REPLAY_CHUNK_ROWS).await?;
            if let Some((first, last)) = span {
                let set = WriteSet {
                    events: &events,
                    ..WriteSet::default()
                };
                pg.write_set(&set).await?;
                fallback.delete_events(first, last).await?;
                moved += events.len();
            }

            let letters = fallback.oldest_dead_letters(REPLAY_CHUNK_ROWS).await?;
            if let (Some(first), Some(last)) = (letters.first(), letters.last()) {
                let set = WriteSet {
                    dead_letters: letters.iter().map(DeadLetterRow::from).collect(),
                    ..WriteSet::default()
                };
                pg.write_set(&set).await?;
                fallback.delete_dead_letters(first.id, last.id).await?;
                moved += letters.len();
            }

            let (points, span) = fallback.oldest_points(chunk).await?;
            if let Some((first, last)) = span {
                let set = WriteSet {
                    points: &points,
                    ..WriteSet::default()
                };
                let outcome = pg.write_set(&set).await?;
                let deleted = fallback.delete_points(first, last).await?;
                let backlog = self
                    .state
                    .backlog
                    .load(Ordering::Acquire)
                    .saturating_sub(deleted);
                self.state.backlog.store(backlog, Ordering::Release);
                metrics::backlog(backlog);
                metrics::replayed(points.len() as u64);
                total += points.len() as u64;
                tracing::debug!(
                    points = points.len(),
                    new_in_postgres = outcome.points_inserted,
                    backlog,
                    "replayed a chunk of the fallback"
                );
                moved += points.len();
            }

            if moved == 0 {
                if total > 0 {
                    tracing::info!(points = total, "replayed the fallback into PostgreSQL");
                }
                return Ok(true);
            }
        }
    }
}

#[cfg(test)]
mod send_checks {
    use super::*;

    fn is_send<T: Send>(_: T) {}

    /// Never run: it stops compiling if a future that services spawn stops being `Send` (sqlx's
    /// generic executors make that easy to break without noticing).
    #[allow(dead_code)]
    fn futures_are_send(s: &DurableStore, b: &Batch, t: CancellationToken) {
        is_send(s.write(b));
        is_send(s.run_maintenance(t));
        is_send(s.primary().write(b));
        if let Store::Postgres(pg) = s.primary() {
            is_send(pg.migrate());
            is_send(pg.ensure_partitions(0, 1, 1));
        }
    }
}
