//! Analytics' tables: reference profiles and which session is compared with which. The profile
//! itself is kept as the JSON the analytics service gives (the roast crate's `Profile`); the
//! store neither reads nor checks its inside.

use std::path::Path;

use sqlx::Row as _;
use sqlx::postgres::PgPool;

use crate::config::{PostgresConfig, SqliteConfig};
use crate::domain::ANALYTICS;
use crate::error::StoreError;
use crate::pool::SqlitePools;

/// A reference profile as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredProfile {
    pub info: ProfileInfo,
    /// The profile, as JSON text.
    pub profile: String,
}

/// What a listing shows of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileInfo {
    pub id: String,
    pub name: String,
    /// How it was made: `session`, `sim_twin`, `alog` or `json`.
    pub source: String,
    /// What it was made from: a session id, a sim-twin profile name, a file name.
    pub origin: String,
    pub created_ms: i64,
    pub points: i64,
}

/// Analytics' store: PostgreSQL, or its own SQLite file. Cheap to clone.
#[derive(Debug, Clone)]
pub enum AnalyticsStore {
    Postgres(PgPool),
    Sqlite(SqlitePools),
}

const COLUMNS: &str = "id, name, source, origin, created_ms, points";

impl AnalyticsStore {
    /// Connects (lazily) and applies the analytics domain's migrations.
    pub async fn postgres(url: &str, cfg: &PostgresConfig) -> Result<Self, StoreError> {
        let pool = crate::pool::postgres_pool(url, cfg)?;
        ANALYTICS.migrate_postgres(&pool).await?;
        Ok(AnalyticsStore::Postgres(pool))
    }

    /// Opens `analytics.db` in `data_dir` and applies the domain's migrations.
    pub async fn sqlite(data_dir: &Path, cfg: &SqliteConfig) -> Result<Self, StoreError> {
        let pools = SqlitePools::open(&data_dir.join(ANALYTICS.sqlite_file()), cfg).await?;
        ANALYTICS.migrate_sqlite(&pools.writer).await?;
        Ok(AnalyticsStore::Sqlite(pools))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            AnalyticsStore::Postgres(pool) => sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map(|_| ())
                .map_err(StoreError::pg),
            AnalyticsStore::Sqlite(pools) => sqlx::query("SELECT 1")
                .execute(&pools.reader)
                .await
                .map(|_| ())
                .map_err(StoreError::sqlite),
        }
    }

    /// Stores a new profile. An id or name already taken is a
    /// [`Conflict`](crate::ErrorKind::Conflict).
    pub async fn create_profile(&self, p: &StoredProfile) -> Result<(), StoreError> {
        let i = &p.info;
        match self {
            AnalyticsStore::Postgres(pool) => sqlx::query(
                "INSERT INTO reference_profiles (id, name, source, origin, created_ms, points, profile) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
            )
            .bind(&i.id)
            .bind(&i.name)
            .bind(&i.source)
            .bind(&i.origin)
            .bind(i.created_ms)
            .bind(i.points)
            .bind(&p.profile)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(StoreError::pg),
            AnalyticsStore::Sqlite(pools) => sqlx::query(
                "INSERT INTO reference_profiles (id, name, source, origin, created_ms, points, profile) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .bind(&i.id)
            .bind(&i.name)
            .bind(&i.source)
            .bind(&i.origin)
            .bind(i.created_ms)
            .bind(i.points)
            .bind(&p.profile)
            .execute(&pools.writer)
            .await
            .map(|_| ())
            .map_err(StoreError::sqlite),
        }
    }

    /// Every profile, newest first, without its curve.
    pub async fn profiles(&self) -> Result<Vec<ProfileInfo>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM reference_profiles ORDER BY created_ms DESC, id");
        let rows = match self {
            AnalyticsStore::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await
                .map_err(StoreError::pg)?
                .iter()
                .map(info_pg)
                .collect::<Result<_, _>>()?,
            AnalyticsStore::Sqlite(pools) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&pools.reader)
                .await
                .map_err(StoreError::sqlite)?
                .iter()
                .map(info_sqlite)
                .collect::<Result<_, _>>()?,
        };
        Ok(rows)
    }

    /// The profile whose id — or else name — is `key`.
    pub async fn profile(&self, key: &str) -> Result<Option<StoredProfile>, StoreError> {
        match self {
            AnalyticsStore::Postgres(pool) => {
                let sql = format!(
                    "SELECT {COLUMNS}, profile::text AS profile FROM reference_profiles \
                     WHERE id = $1 OR name = $1 ORDER BY (id = $1) DESC LIMIT 1"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(key)
                    .fetch_optional(pool)
                    .await
                    .map_err(StoreError::pg)?;
                row.map(|r| {
                    Ok(StoredProfile {
                        info: info_pg(&r)?,
                        profile: r.try_get("profile").map_err(StoreError::pg)?,
                    })
                })
                .transpose()
            }
            AnalyticsStore::Sqlite(pools) => {
                let sql = format!(
                    "SELECT {COLUMNS}, profile FROM reference_profiles \
                     WHERE id = ?1 OR name = ?1 ORDER BY (id = ?1) DESC LIMIT 1"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(key)
                    .fetch_optional(&pools.reader)
                    .await
                    .map_err(StoreError::sqlite)?;
                row.map(|r| {
                    Ok(StoredProfile {
                        info: info_sqlite(&r)?,
                        profile: r.try_get("profile").map_err(StoreError::sqlite)?,
                    })
                })
                .transpose()
            }
        }
    }

    /// Deletes the profile with id `id`, and which sessions it was set for. `false` if there
    /// was none.
    pub async fn delete_profile(&self, id: &str) -> Result<bool, StoreError> {
        match self {
            AnalyticsStore::Postgres(pool) => {
                sqlx::query("DELETE FROM reference_profiles WHERE id = $1")
                    .bind(id)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected() > 0)
                    .map_err(StoreError::pg)
            }
            AnalyticsStore::Sqlite(pools) => {
                let mut tx = pools.writer.begin().await.map_err(StoreError::sqlite)?;
                sqlx::query("DELETE FROM session_references WHERE profile_id = ?1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::sqlite)?;
                let deleted = sqlx::query("DELETE FROM reference_profiles WHERE id = ?1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::sqlite)?
                    .rows_affected();
                tx.commit().await.map_err(StoreError::sqlite)?;
                Ok(deleted > 0)
            }
        }
    }

    /// Sets (or replaces) the reference of `session`.
    pub async fn set_reference(
        &self,
        session: &str,
        profile_id: &str,
        set_ms: i64,
    ) -> Result<(), StoreError> {
        match self {
            AnalyticsStore::Postgres(pool) => sqlx::query(
                "INSERT INTO session_references (session, profile_id, set_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (session) DO UPDATE SET profile_id = EXCLUDED.profile_id, set_ms = EXCLUDED.set_ms",
            )
            .bind(session)
            .bind(profile_id)
            .bind(set_ms)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(StoreError::pg),
            AnalyticsStore::Sqlite(pools) => sqlx::query(
                "INSERT INTO session_references (session, profile_id, set_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (session) DO UPDATE SET profile_id = excluded.profile_id, set_ms = excluded.set_ms",
            )
            .bind(session)
            .bind(profile_id)
            .bind(set_ms)
            .execute(&pools.writer)
            .await
            .map(|_| ())
            .map_err(StoreError::sqlite),
        }
    }

    /// The id of the profile set for `session` through [`Self::set_reference`].
    pub async fn reference(&self, session: &str) -> Result<Option<String>, StoreError> {
        match self {
            AnalyticsStore::Postgres(pool) => {
                sqlx::query_scalar("SELECT profile_id FROM session_references WHERE session = $1")
                    .bind(session)
                    .fetch_optional(pool)
                    .await
                    .map_err(StoreError::pg)
            }
            AnalyticsStore::Sqlite(pools) => {
                sqlx::query_scalar("SELECT profile_id FROM session_references WHERE session = ?1")
                    .bind(session)
                    .fetch_optional(&pools.reader)
                    .await
                    .map_err(StoreError::sqlite)
            }
        }
    }

    pub async fn close(&self) {
        match self {
            AnalyticsStore::Postgres(pool) => pool.close().await,
            AnalyticsStore::Sqlite(pools) => pools.close().await,
        }
    }
}

fn info_pg(r: &sqlx::postgres::PgRow) -> Result<ProfileInfo, StoreError> {
    info(r).map_err(StoreError::pg)
}

fn info_sqlite(r: &sqlx::sqlite::SqliteRow) -> Result<ProfileInfo, StoreError> {
    info(r).map_err(StoreError::sqlite)
}

fn info<R: sqlx::Row>(r: &R) -> Result<ProfileInfo, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i32: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ProfileInfo {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        source: r.try_get("source")?,
        origin: r.try_get("origin")?,
        created_ms: r.try_get("created_ms")?,
        points: i64::from(r.try_get::<i32, _>("points")?),
    })
}
