//! Daily partitions of `telemetry`, created ahead of time.

use std::collections::HashSet;

use sqlx::Row;

use super::PgStore;
use crate::error::StoreError;
use crate::rows::civil_from_days;

const DAY_MS: i64 = 86_400_000;

/// Serializes partition maintenance between replicas (any constant unique to this purpose).
const PARTITION_LOCK_KEY: i64 = 0x73_696d_636f_7270; // "simcorp"

const SELECT_PARTITIONS: &str = "SELECT c.relname::text
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'telemetry'::regclass";

const DEFAULT_HAS_ROWS: &str = "SELECT EXISTS (
    SELECT 1 FROM telemetry_default
    WHERE ts >= 'epoch'::timestamptz + $1::int8 * interval '1 millisecond'
      AND ts < 'epoch'::timestamptz + $2::int8 * interval '1 millisecond')";

/// The name and bounds of one day's partition.
struct Day {
    name: String,
    from_ms: i64,
    from: String,
    to: String,
}

impl Day {
    fn new(day: i64) -> Day {
        let (y, m, d) = civil_from_days(day);
        let (y2, m2, d2) = civil_from_days(day + 1);
        Day {
            name: format!("telemetry_p{y:04}{m:02}{d:02}"),
            from_ms: day * DAY_MS,
            from: format!("{y:04}-{m:02}-{d:02} 00:00:00+00"),
            to: format!("{y2:04}-{m2:02}-{d2:02} 00:00:00+00"),
        }
    }
}

impl PgStore {
    /// Creates the daily partitions (UTC days) from `days_back` days before the day of `now_ms`
    /// to `days_ahead` days after it, and returns the names of those it created.
    ///
    /// Replicas may run this at the same time: a transaction-scoped advisory lock serializes
    /// them and each creates only what is missing. A day whose points already sit in the
    /// default partition is skipped with a warning: PostgreSQL refuses a partition that would
    /// leave rows of its range behind in the default one, and moving them is an operator's call.
    pub async fn ensure_partitions(
        &self,
        now_ms: i64,
        days_back: u32,
        days_ahead: u32,
    ) -> Result<Vec<String>, StoreError> {
        let today = now_ms.div_euclid(DAY_MS);
        let existing: HashSet<String> = sqlx::query(SELECT_PARTITIONS)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::pg)?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .map_err(StoreError::pg)?;
        let mut created = Vec::new();
        for day in (today - i64::from(days_back))..=(today + i64::from(days_ahead)) {
            let day = Day::new(day);
            if !existing.contains(&day.name) && self.create_partition(&day).await? {
                created.push(day.name);
            }
        }
        if !created.is_empty() {
            tracing::info!(partitions = ?created, "created telemetry partitions");
        }
        Ok(created)
    }

    /// Creates one day's partition in a transaction of its own, so that the parent's lock is
    /// held for one partition at a time. Returns whether this call created it.
    async fn create_partition(&self, day: &Day) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::pg)?;
        // Creating a partition scans the default partition and locks the parent; neither is a
        // reason to give up as quickly as a telemetry write does. lock_timeout bounds how long
        // writes queue behind our wait for the parent's lock.
        sqlx::raw_sql("SET LOCAL statement_timeout = '5min'; SET LOCAL lock_timeout = '10s'")
            .execute(&mut *tx)
            .await
            .map_err(StoreError::pg)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PARTITION_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::pg)?;
        // Another replica may have created it while we waited for the lock.
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&day.name)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::pg)?;
        if exists {
            return Ok(false);
        }
        let stranded: bool = sqlx::query_scalar(DEFAULT_HAS_ROWS)
            .bind(day.from_ms)
            .bind(day.from_ms + DAY_MS)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::pg)?;
        if stranded {
            tracing::warn!(
                partition = %day.name,
                "points of this day sit in telemetry_default, so its partition cannot be \
                 created; they stay queryable. To fix: move them out of telemetry_default and \
                 create the partition by hand"
            );
            return Ok(false);
        }
        // Names and bounds are built from integers only: nothing here comes from outside.
        let ddl = format!(
            "CREATE TABLE {} PARTITION OF telemetry FOR VALUES FROM ('{}') TO ('{}')",
            day.name, day.from, day.to
        );
        sqlx::query(sqlx::AssertSqlSafe(ddl))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::pg)?;
        tx.commit().await.map_err(StoreError::pg)?;
        Ok(true)
    }
}
