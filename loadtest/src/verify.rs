//! Counting what reached PostgreSQL: points lost and points duplicated, exactly.
//!
//! Since every session's points carry `seq` 0..n, the check needs no list of what was sent: per
//! session, the points lost are `n − distinct seqs stored below n`, and the duplicates are
//! `rows − distinct seqs`. The database does the counting (one grouped query), so a run of
//! millions of points is checked without moving them.

use std::collections::HashMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};

use crate::Error;
use crate::plan::{device_id, device_pattern, session_id};

/// What a run should have stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub run_id: String,
    /// Sessions `0..n` of the run. `None`: whatever sessions are stored (a session with no row
    /// at all then goes unnoticed).
    pub sessions: Option<u32>,
    /// Points each session published (seq `0..n`). `None`: one past the highest stored seq (a
    /// loss at the end of a session then goes unnoticed).
    pub points_per_session: Option<u64>,
}

impl Expected {
    fn total(&self) -> Option<u64> {
        Some(u64::from(self.sessions?) * self.points_per_session?)
    }
}

#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// Give up waiting for ingestion after this long.
    pub deadline: Duration,
    /// The run's row count not growing for this long means ingestion has caught up.
    pub settle: Duration,
    pub poll: Duration,
    pub progress_every: Option<Duration>,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            deadline: Duration::from_secs(60),
            settle: Duration::from_secs(3),
            poll: Duration::from_millis(500),
            progress_every: Some(Duration::from_secs(5)),
        }
    }
}

/// What one stored (device, session) holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCount {
    pub device_id: String,
    pub session: String,
    pub rows: u64,
    pub distinct: u64,
    /// Distinct seqs below the expected count (all of them when the count is unknown).
    pub distinct_in_range: u64,
    pub max_seq: u64,
}

/// The arithmetic of a check, from per-session counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Point identities expected.
    pub expected: u64,
    pub stored_rows: u64,
    pub stored_distinct: u64,
    /// Expected identities with no row.
    pub lost: u64,
    /// Σ over identities of (rows − 1).
    pub duplicated: u64,
    /// Identities of this run that were never published (seq past the end, unknown session).
    pub unexpected: u64,
    /// Expected sessions without a single row (counted in `lost` when their size is known).
    pub sessions_without_rows: u64,
}

pub fn tally(expected: &Expected, counts: &[SessionCount]) -> Tally {
    let mut t = Tally::default();
    for c in counts {
        t.stored_rows += c.rows;
        t.stored_distinct += c.distinct;
        t.duplicated += c.rows - c.distinct;
    }
    let size = |c: Option<&SessionCount>| match (expected.points_per_session, c) {
        (Some(n), _) => n,
        (None, Some(c)) => c.max_seq + 1,
        (None, None) => 0,
    };
    match expected.sessions {
        Some(sessions) => {
            let by_key: HashMap<(&str, &str), &SessionCount> = counts
                .iter()
                .map(|c| ((c.device_id.as_str(), c.session.as_str()), c))
                .collect();
            let mut seen = 0u64;
            for n in 0..sessions {
                let (device, session) = (
                    device_id(&expected.run_id, n),
                    session_id(&expected.run_id, n),
                );
                let found = by_key.get(&(device.as_str(), session.as_str())).copied();
                let size = size(found);
                t.expected += size;
                match found {
                    Some(c) => {
                        seen += c.distinct;
                        t.lost += size.saturating_sub(c.distinct_in_range);
                        t.unexpected += c.distinct - c.distinct_in_range;
                    }
                    None => {
                        t.lost += size;
                        t.sessions_without_rows += 1;
                    }
                }
            }
            t.unexpected += t.stored_distinct - seen;
        }
        None => {
            for c in counts {
                let size = size(Some(c));
                t.expected += size;
                t.lost += size.saturating_sub(c.distinct_in_range);
                t.unexpected += c.distinct - c.distinct_in_range;
            }
        }
    }
    t
}

/// How the wait for ingestion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Settled {
    /// Every expected point was stored.
    Complete,
    /// The row count stopped growing.
    Stable,
    /// Still growing at the deadline: ingestion was behind, the figures are a lower bound.
    Deadline,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    #[serde(flatten)]
    pub tally: Tally,
    /// A few lost identities, as `device/session#seq`.
    pub missing_examples: Vec<String>,
    /// A few duplicated identities, as `device/session#seq ×rows`.
    pub duplicate_examples: Vec<String>,
    pub settled: Settled,
    pub waited_secs: f64,
    /// False when the plan was not known (`check` without sessions and size): losses at the end
    /// of a session, or of a whole session, cannot be seen then.
    pub complete_expectation: bool,
}

/// The store ingestion writes to: PostgreSQL, or the SQLite file of an embedded deployment
/// (`simcorp up` without `--postgres`), read-only.
#[derive(Debug, Clone)]
pub enum Database {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Database {
    pub async fn close(&self) {
        match self {
            Database::Postgres(pool) => pool.close().await,
            Database::Sqlite(pool) => pool.close().await,
        }
    }
}

/// `postgres://…` or `sqlite://<path>` (e.g. `sqlite://data/ingestion.db`).
pub async fn connect(url: &str) -> Result<Database, Error> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        // Read-only: the harness must never be a second writer beside ingestion's own.
        let options = SqliteConnectOptions::new().filename(path).read_only(true);
        return Ok(Database::Sqlite(
            SqlitePoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?,
        ));
    }
    Ok(Database::Postgres(
        PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?,
    ))
}

/// Rows of this run stored so far (duplicates included).
pub async fn stored_rows(db: &Database, run_id: &str) -> Result<u64, Error> {
    const SQL: &str = "SELECT count(*) FROM telemetry WHERE device_id LIKE $1";
    let n: i64 = match db {
        Database::Postgres(pool) => {
            sqlx::query_scalar(SQL)
                .bind(device_pattern(run_id))
                .fetch_one(pool)
                .await?
        }
        Database::Sqlite(pool) => {
            sqlx::query_scalar(SQL)
                .bind(device_pattern(run_id))
                .fetch_one(pool)
                .await?
        }
    };
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Waits for ingestion to finish storing the run, then counts losses and duplicates.
pub async fn verify(
    pool: &Database,
    expected: &Expected,
    config: &VerifyConfig,
) -> Result<Verification, Error> {
    let started = Instant::now();
    let total = expected.total();
    let mut last_rows = stored_rows(pool, &expected.run_id).await?;
    let mut last_growth = Instant::now();
    let mut last_progress = Instant::now();
    let settled = loop {
        if total.is_some_and(|t| last_rows >= t) {
            // Enough rows, but duplicates could hide a loss: only an exact count may stop here.
            if tally(expected, &session_counts(pool, expected).await?).lost == 0 {
                break Settled::Complete;
            }
        }
        if last_growth.elapsed() >= config.settle {
            break Settled::Stable;
        }
        if started.elapsed() >= config.deadline {
            break Settled::Deadline;
        }
        tokio::time::sleep(config.poll).await;
        let rows = stored_rows(pool, &expected.run_id).await?;
        if rows > last_rows {
            last_rows = rows;
            last_growth = Instant::now();
        }
        if let Some(every) = config.progress_every
            && last_progress.elapsed() >= every
        {
            last_progress = Instant::now();
            let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
            let _ = writeln!(
                std::io::stderr(),
                "[loadtest] waiting for ingestion: {rows}{of} rows stored"
            );
        }
    };
    let waited_secs = started.elapsed().as_secs_f64();

    let counts = session_counts(pool, expected).await?;
    let tally = tally(expected, &counts);
    let missing_examples = if tally.lost > 0 {
        missing_examples(pool, expected, &counts).await?
    } else {
        Vec::new()
    };
    let duplicate_examples = if tally.duplicated > 0 {
        duplicate_examples(pool, &expected.run_id).await?
    } else {
        Vec::new()
    };
    Ok(Verification {
        tally,
        missing_examples,
        duplicate_examples,
        settled,
        waited_secs,
        complete_expectation: expected.total().is_some(),
    })
}

pub async fn session_counts(
    db: &Database,
    expected: &Expected,
) -> Result<Vec<SessionCount>, Error> {
    let below = expected
        .points_per_session
        .and_then(|n| i64::try_from(n).ok())
        .unwrap_or(i64::MAX);
    // Portable SQL: both stores have the same table and columns (migrations/).
    const SQL: &str = "SELECT device_id, session, count(*), count(DISTINCT seq),
                count(DISTINCT seq) FILTER (WHERE seq < $2), max(seq)
         FROM telemetry WHERE device_id LIKE $1
         GROUP BY device_id, session";
    let pattern = device_pattern(&expected.run_id);
    let rows: Vec<(String, String, i64, i64, i64, i64)> = match db {
        Database::Postgres(pool) => {
            sqlx::query_as(SQL)
                .bind(pattern)
                .bind(below)
                .fetch_all(pool)
                .await?
        }
        Database::Sqlite(pool) => {
            sqlx::query_as(SQL)
                .bind(pattern)
                .bind(below)
                .fetch_all(pool)
                .await?
        }
    };
    let count = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(rows
        .into_iter()
        .map(
            |(device_id, session, rows, distinct, in_range, max_seq)| SessionCount {
                device_id,
                session,
                rows: count(rows),
                distinct: count(distinct),
                distinct_in_range: count(in_range),
                max_seq: count(max_seq),
            },
        )
        .collect())
}

const EXAMPLES: i64 = 10;

async fn missing_examples(
    db: &Database,
    expected: &Expected,
    counts: &[SessionCount],
) -> Result<Vec<String>, Error> {
    // The sessions to look in, each with its expected size.
    let mut devices = Vec::new();
    let mut sessions = Vec::new();
    let mut sizes = Vec::new();
    let mut push = |device: String, session: String, size: u64| {
        devices.push(device);
        sessions.push(session);
        sizes.push(i64::try_from(size).unwrap_or(i64::MAX));
    };
    match (expected.sessions, expected.points_per_session) {
        (Some(n), Some(size)) => {
            for i in 0..n {
                push(
                    device_id(&expected.run_id, i),
                    session_id(&expected.run_id, i),
                    size,
                );
            }
        }
        _ => {
            for c in counts {
                let size = expected.points_per_session.unwrap_or(c.max_seq + 1);
                push(c.device_id.clone(), c.session.clone(), size);
            }
        }
    }
    let pool = match db {
        Database::Postgres(pool) => pool,
        Database::Sqlite(pool) => {
            return sqlite_missing_examples(pool, &devices, &sessions, &sizes).await;
        }
    };
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT d.device_id, d.session, g.seq
         FROM unnest($1::text[], $2::text[], $3::int8[]) AS d(device_id, session, n)
         CROSS JOIN LATERAL generate_series(0::int8, d.n - 1) AS g(seq)
         WHERE NOT EXISTS (SELECT 1 FROM telemetry t
                           WHERE t.session = d.session AND t.device_id = d.device_id
                             AND t.seq = g.seq)
         LIMIT $4",
    )
    .bind(devices)
    .bind(sessions)
    .bind(sizes)
    .bind(EXAMPLES)
    .fetch_all(pool)
    .await?;
    let mut out: Vec<_> = rows
        .into_iter()
        .map(|(d, s, seq)| format!("{d}/{s}#{seq}"))
        .collect();
    out.sort();
    Ok(out)
}

/// SQLite has no `generate_series`/`unnest`: the gaps of each session are found here, one
/// session at a time, until enough examples are found.
async fn sqlite_missing_examples(
    pool: &SqlitePool,
    devices: &[String],
    sessions: &[String],
    sizes: &[i64],
) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for ((device, session), size) in devices.iter().zip(sessions).zip(sizes) {
        let seqs: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT seq FROM telemetry WHERE device_id = $1 AND session = $2 ORDER BY seq",
        )
        .bind(device)
        .bind(session)
        .fetch_all(pool)
        .await?;
        let present: std::collections::HashSet<i64> = seqs.into_iter().collect();
        for seq in (0..*size).filter(|s| !present.contains(s)) {
            out.push(format!("{device}/{session}#{seq}"));
            if out.len() as i64 >= EXAMPLES {
                out.sort();
                return Ok(out);
            }
        }
    }
    out.sort();
    Ok(out)
}

async fn duplicate_examples(db: &Database, run_id: &str) -> Result<Vec<String>, Error> {
    const SQL: &str = "SELECT device_id, session, seq, count(*)
         FROM telemetry WHERE device_id LIKE $1
         GROUP BY device_id, session, seq HAVING count(*) > 1
         ORDER BY device_id, session, seq LIMIT $2";
    let rows: Vec<(String, String, i64, i64)> = match db {
        Database::Postgres(pool) => {
            sqlx::query_as(SQL)
                .bind(device_pattern(run_id))
                .bind(EXAMPLES)
                .fetch_all(pool)
                .await?
        }
        Database::Sqlite(pool) => {
            sqlx::query_as(SQL)
                .bind(device_pattern(run_id))
                .bind(EXAMPLES)
                .fetch_all(pool)
                .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(d, s, seq, n)| format!("{d}/{s}#{seq} ×{n}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(
        run: &str,
        n: u32,
        rows: u64,
        distinct: u64,
        in_range: u64,
        max_seq: u64,
    ) -> SessionCount {
        SessionCount {
            device_id: device_id(run, n),
            session: session_id(run, n),
            rows,
            distinct,
            distinct_in_range: in_range,
            max_seq,
        }
    }

    fn full(sessions: u32, size: u64) -> Expected {
        Expected {
            run_id: "r".into(),
            sessions: Some(sessions),
            points_per_session: Some(size),
        }
    }

    #[test]
    fn a_perfect_run_has_nothing_lost_or_duplicated() {
        let counts = [count("r", 0, 50, 50, 50, 49), count("r", 1, 50, 50, 50, 49)];
        let t = tally(&full(2, 50), &counts);
        assert_eq!(
            t,
            Tally {
                expected: 100,
                stored_rows: 100,
                stored_distinct: 100,
                ..Tally::default()
            }
        );
    }

    #[test]
    fn losses_and_duplicates_are_counted_per_identity() {
        // Session 0: seq 7 missing, seq 10 stored twice. Session 1: seq 30 missing.
        let counts = [count("r", 0, 50, 49, 49, 49), count("r", 1, 49, 49, 49, 49)];
        let t = tally(&full(2, 50), &counts);
        assert_eq!((t.expected, t.lost, t.duplicated), (100, 2, 1));
        assert_eq!((t.stored_rows, t.stored_distinct), (99, 98));
        assert_eq!(t.unexpected, 0);
    }

    #[test]
    fn a_session_without_rows_loses_all_its_points() {
        let counts = [count("r", 0, 50, 50, 50, 49)];
        let t = tally(&full(3, 50), &counts);
        assert_eq!((t.lost, t.sessions_without_rows), (100, 2));
        assert_eq!(tally(&full(2, 50), &[]).lost, 100);
    }

    #[test]
    fn a_lost_tail_is_seen_only_when_the_size_is_known() {
        // seq 0..39 stored of 50.
        let counts = [count("r", 0, 40, 40, 40, 39)];
        assert_eq!(tally(&full(1, 50), &counts).lost, 10);
        let unknown = Expected {
            run_id: "r".into(),
            sessions: None,
            points_per_session: None,
        };
        assert_eq!(tally(&unknown, &counts).lost, 0);
        // A gap in the middle is seen either way.
        let gap = [count("r", 0, 39, 39, 39, 39)];
        assert_eq!(tally(&unknown, &gap).lost, 1);
    }

    #[test]
    fn rows_that_were_never_published_are_not_mistaken_for_stored_points() {
        // Seq 50 and 51 lie past the end; a session 9 was never part of the run.
        let counts = [count("r", 0, 52, 52, 50, 51), count("r", 9, 5, 5, 5, 4)];
        let t = tally(&full(1, 50), &counts);
        assert_eq!((t.lost, t.duplicated, t.unexpected), (0, 0, 7));
    }
}
