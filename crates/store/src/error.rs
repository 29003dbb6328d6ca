use std::path::PathBuf;

/// Which database an error came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Postgres => "PostgreSQL",
            Backend::Sqlite => "SQLite",
        })
    }
}

/// What a caller can do about a [`StoreError`]; see [`StoreError::kind`].
///
/// The same refusal is the same kind on both backends (a unique violation is a
/// [`Conflict`](ErrorKind::Conflict) whether PostgreSQL or SQLite reports it), so a service
/// maps kinds to its answers (503, 409, 422, 500) once, whichever store it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The database could not be reached, was overloaded or shutting down, or could not finish in
    /// time: the same request may succeed later or elsewhere (the durable store's fallback).
    Unavailable,
    /// The request collides with what is stored (a unique or exclusion constraint) or with a
    /// concurrent transaction (serialization failure, deadlock). Not the data's fault: retrying
    /// the transaction may succeed after a serialization failure, never after a duplicate key.
    Conflict,
    /// The database refused the data itself: a value out of range or of the wrong type, a
    /// missing value, a failed check or a dangling reference. Retrying it anywhere fails again.
    BadData,
    /// Everything an operator or a developer must look at: a schema that does not match the
    /// code, a failed migration, invalid configuration, a file that cannot be created, stored
    /// rows this code cannot read.
    Other,
}

/// Why a storage operation failed.
///
/// Callers act on [`StoreError::kind`]; the most common question, whether to try elsewhere or
/// later, is [`StoreError::is_unavailable`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{backend}: {source}")]
    Database {
        backend: Backend,
        #[source]
        source: sqlx::Error,
    },
    #[error("{backend}: migrating {domain} failed: {source}")]
    Migrate {
        backend: Backend,
        /// The [`crate::Domain`] whose migrations failed.
        domain: &'static str,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// The client-side deadline passed: the server did not answer at all (a hung or unreachable
    /// host never reports its own statement timeout).
    #[error("{backend}: {what} did not finish within {ms} ms")]
    Timeout {
        backend: Backend,
        what: &'static str,
        ms: u64,
    },
    #[error("cannot prepare {path}: {source}")]
    Path {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A stored row that this code cannot have written (e.g. a negative seq, malformed JSON).
    #[error("{backend}: invalid stored data: {detail}")]
    Corrupt { backend: Backend, detail: String },
    #[error("invalid store configuration: {0}")]
    Config(String),
}

impl StoreError {
    pub(crate) fn pg(source: sqlx::Error) -> Self {
        StoreError::Database {
            backend: Backend::Postgres,
            source,
        }
    }

    pub(crate) fn sqlite(source: sqlx::Error) -> Self {
        StoreError::Database {
            backend: Backend::Sqlite,
            source,
        }
    }

    pub(crate) fn corrupt(backend: Backend, detail: impl Into<String>) -> Self {
        StoreError::Corrupt {
            backend,
            detail: detail.into(),
        }
    }

    /// What kind of failure this is. See [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Database { backend, source } => sqlx_kind(*backend, source),
            // A migration the database refused is a schema problem whatever the SQLSTATE; only
            // not reaching the database is worth retrying.
            StoreError::Migrate {
                backend, source, ..
            } => match source {
                sqlx::migrate::MigrateError::Execute(e)
                | sqlx::migrate::MigrateError::ExecuteMigration(e, _)
                    if sqlx_kind(*backend, e) == ErrorKind::Unavailable =>
                {
                    ErrorKind::Unavailable
                }
                _ => ErrorKind::Other,
            },
            StoreError::Timeout { .. } => ErrorKind::Unavailable,
            StoreError::Path { .. } | StoreError::Corrupt { .. } | StoreError::Config(_) => {
                ErrorKind::Other
            }
        }
    }

    /// Whether the database was unreachable, overloaded, shutting down or too slow, as opposed to
    /// refusing this particular request. The durable store writes to its fallback on `true` and
    /// hands the error back on `false`.
    pub fn is_unavailable(&self) -> bool {
        self.kind() == ErrorKind::Unavailable
    }
}

fn sqlx_kind(backend: Backend, e: &sqlx::Error) -> ErrorKind {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => ErrorKind::Unavailable,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            match backend {
                Backend::Postgres => pg_kind(code),
                Backend::Sqlite => sqlite_kind(code),
            }
        }
        // A value that cannot even be sent (e.g. out of the column type's range).
        sqlx::Error::Encode(_) => ErrorKind::BadData,
        _ => ErrorKind::Other,
    }
}

/// PostgreSQL SQLSTATEs (appendix A of its manual) by what they say about the request.
fn pg_kind(code: &str) -> ErrorKind {
    let class = code.get(..2).unwrap_or("");
    // 08: connection exception; 53: insufficient resources (disk full, too many connections);
    // 58: system error (I/O); 57014: statement timeout (our own statement_timeout: a write that
    // cannot finish in time counts as unavailable); 57P01..57P03: admin/crash shutdown, cannot
    // connect now; 25006: read-only transaction (a failover left us on a standby).
    if matches!(class, "08" | "53" | "58")
        || matches!(code, "57014" | "57P01" | "57P02" | "57P03" | "25006")
    {
        return ErrorKind::Unavailable;
    }
    // 23505 unique, 23P01 exclusion; 40001 serialization failure, 40P01 deadlock.
    if matches!(code, "23505" | "23P01" | "40001" | "40P01") {
        return ErrorKind::Conflict;
    }
    // 22: data exception (invalid text, out of range, bad JSON …); 23: the other integrity
    // constraints (not null, foreign key, check).
    if matches!(class, "22" | "23") {
        return ErrorKind::BadData;
    }
    ErrorKind::Other
}

/// SQLite (extended) result codes; the primary code is the low byte.
fn sqlite_kind(code: &str) -> ErrorKind {
    let Ok(code) = code.parse::<i32>() else {
        return ErrorKind::Other;
    };
    match code & 0xff {
        // BUSY, LOCKED, IOERR, FULL, CANTOPEN.
        5 | 6 | 10 | 13 | 14 => ErrorKind::Unavailable,
        // CONSTRAINT: PRIMARYKEY (1555) and UNIQUE (2067) collide with a stored row; NOTNULL,
        // CHECK, FOREIGNKEY, DATATYPE (STRICT tables) refuse the value.
        19 => match code {
            1555 | 2067 => ErrorKind::Conflict,
            _ => ErrorKind::BadData,
        },
        // TOOBIG, MISMATCH, RANGE (a bind index or value out of range).
        18 | 20 | 25 => ErrorKind::BadData,
        _ => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorKind::{BadData, Conflict, Other, Unavailable};

    #[test]
    fn classifies_postgres_codes() {
        for (code, kind) in [
            ("57014", Unavailable),
            ("57P01", Unavailable),
            ("57P03", Unavailable),
            ("08006", Unavailable),
            ("08001", Unavailable),
            ("53300", Unavailable),
            ("53100", Unavailable),
            ("58030", Unavailable),
            ("25006", Unavailable),
            ("23505", Conflict),
            ("23P01", Conflict),
            ("40001", Conflict),
            ("40P01", Conflict),
            ("23502", BadData),
            ("23503", BadData),
            ("23514", BadData),
            ("22P02", BadData),
            ("22003", BadData),
            ("42P01", Other),
            ("42703", Other),
            ("", Other),
        ] {
            assert_eq!(pg_kind(code), kind, "{code}");
        }
    }

    #[test]
    fn classifies_sqlite_codes() {
        for (code, kind) in [
            ("5", Unavailable),
            ("6", Unavailable),
            ("266", Unavailable), // IOERR_READ
            ("13", Unavailable),
            ("14", Unavailable),
            ("1555", Conflict), // CONSTRAINT_PRIMARYKEY
            ("2067", Conflict), // CONSTRAINT_UNIQUE
            ("1299", BadData),  // CONSTRAINT_NOTNULL
            ("275", BadData),   // CONSTRAINT_CHECK
            ("787", BadData),   // CONSTRAINT_FOREIGNKEY
            ("3091", BadData),  // CONSTRAINT_DATATYPE
            ("20", BadData),
            ("1", Other),
            ("11", Other), // CORRUPT: an operator's problem, not the request's
            ("x", Other),
        ] {
            assert_eq!(sqlite_kind(code), kind, "{code}");
        }
    }

    #[test]
    fn classifies_errors_without_a_database_code() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        for (err, kind) in [
            (StoreError::pg(sqlx::Error::PoolTimedOut), Unavailable),
            (StoreError::sqlite(sqlx::Error::PoolClosed), Unavailable),
            (StoreError::pg(sqlx::Error::Io(refused)), Unavailable),
            (StoreError::pg(sqlx::Error::RowNotFound), Other),
            (
                StoreError::pg(sqlx::Error::Encode("too big".into())),
                BadData,
            ),
            (
                StoreError::Timeout {
                    backend: Backend::Postgres,
                    what: "write",
                    ms: 1,
                },
                Unavailable,
            ),
            (
                StoreError::Migrate {
                    backend: Backend::Postgres,
                    domain: "telemetry",
                    source: sqlx::migrate::MigrateError::Execute(sqlx::Error::PoolTimedOut),
                },
                Unavailable,
            ),
            (
                StoreError::Migrate {
                    backend: Backend::Postgres,
                    domain: "telemetry",
                    source: sqlx::migrate::MigrateError::VersionMismatch(1),
                },
                Other,
            ),
            (StoreError::corrupt(Backend::Sqlite, "seq -1"), Other),
            (StoreError::Config("x".into()), Other),
        ] {
            assert_eq!(err.kind(), kind, "{err}");
            assert_eq!(err.is_unavailable(), kind == Unavailable, "{err}");
        }
    }

    /// The same refusals, really made by each database, are the same kind.
    mod refusals {
        use testkit::{Server, TestDatabase};

        use super::*;

        const SCHEMA: &str = "CREATE TABLE t (
            id bigint PRIMARY KEY, v bigint NOT NULL, n bigint CHECK (n >= 0));
            INSERT INTO t (id, v, n) VALUES (1, 1, 1)";

        /// Statement, then the kind of its failure: the same on both backends.
        const CASES: &[(&str, ErrorKind)] = &[
            ("INSERT INTO t (id, v, n) VALUES (1, 2, 2)", Conflict),
            ("INSERT INTO t (id, v, n) VALUES (2, NULL, 2)", BadData),
            ("INSERT INTO t (id, v, n) VALUES (3, 3, -1)", BadData),
            ("SELECT * FROM no_such_table", Other),
        ];

        /// Runs the schema, then asserts the kind of each case's failure on `$pool`.
        macro_rules! check {
            ($pool:expr, $wrap:expr, $extra:expr) => {{
                sqlx::raw_sql(SCHEMA).execute($pool).await.unwrap();
                let extra: &[(&str, ErrorKind)] = $extra;
                for (sql, kind) in CASES.iter().chain(extra) {
                    let err = sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                        .execute($pool)
                        .await
                        .map_err($wrap)
                        .unwrap_err();
                    assert_eq!(err.kind(), *kind, "{sql}: {err}");
                }
            }};
        }

        #[tokio::test]
        async fn sqlite() {
            // One connection: each has an in-memory database of its own.
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect("sqlite::memory:")
                .await
                .unwrap();
            sqlx::raw_sql("CREATE TABLE s (v INTEGER) STRICT")
                .execute(&pool)
                .await
                .unwrap();
            check!(
                &pool,
                StoreError::sqlite,
                &[("INSERT INTO s (v) VALUES ('x')", BadData)]
            );
        }

        #[tokio::test]
        async fn postgres() {
            if !testkit::require(Server::Postgres, "error::tests::refusals::postgres") {
                return;
            }
            let db = TestDatabase::create().await;
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            check!(
                &pool,
                StoreError::pg,
                &[("SELECT 'x'::int8", BadData), ("SELECT 1 / 0", BadData)]
            );
            pool.close().await;
        }
    }
}
