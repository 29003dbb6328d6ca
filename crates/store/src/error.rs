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

/// Why a storage operation failed.
///
/// The one distinction callers act on is [`StoreError::is_unavailable`]: the database could not
/// be reached or could not finish in time (try elsewhere or later), versus the request itself
/// being refused (retrying the same data elsewhere will not help).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{backend}: {source}")]
    Database {
        backend: Backend,
        #[source]
        source: sqlx::Error,
    },
    #[error("{backend}: migration failed: {source}")]
    Migrate {
        backend: Backend,
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

    /// Whether the database was unreachable, overloaded, shutting down or too slow, as opposed to
    /// refusing this particular request. The durable store writes to its fallback on `true` and
    /// hands the error back on `false`.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database { source, .. } => sqlx_unavailable(source),
            StoreError::Migrate { source, .. } => match source {
                sqlx::migrate::MigrateError::Execute(e)
                | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => sqlx_unavailable(e),
                _ => false,
            },
            StoreError::Timeout { .. } => true,
            StoreError::Path { .. } | StoreError::Corrupt { .. } | StoreError::Config(_) => false,
        }
    }
}

fn sqlx_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| unavailable_code(&c)),
        _ => false,
    }
}

/// SQLSTATEs (PostgreSQL) and result codes (SQLite) that describe the server's state rather than
/// the request.
fn unavailable_code(code: &str) -> bool {
    match code.len() {
        5 => {
            let class = &code[..2];
            // 08: connection exception; 53: insufficient resources (disk full, too many
            // connections); 58: system error (I/O); 57014: statement timeout (our own
            // statement_timeout: a write that cannot finish in time counts as unavailable);
            // 57P01..57P03: admin/crash shutdown, cannot connect now; 25006: read-only
            // transaction (a failover left us on a standby).
            matches!(class, "08" | "53" | "58")
                || matches!(code, "57014" | "57P01" | "57P02" | "57P03" | "25006")
        }
        // SQLite reports (extended) numeric result codes; the primary code is the low byte.
        _ => code.parse::<i32>().is_ok_and(|c| {
            // BUSY, LOCKED, IOERR, FULL, CANTOPEN.
            matches!(c & 0xff, 5 | 6 | 10 | 13 | 14)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_codes() {
        for code in [
            "57014", "57P01", "57P02", "57P03", "08006", "08001", "53300", "53100",
        ] {
            assert!(unavailable_code(code), "{code}");
        }
        for code in ["23505", "22P02", "42P01", "40001", "2067", "19"] {
            assert!(!unavailable_code(code), "{code}");
        }
        assert!(unavailable_code("5"));
        assert!(unavailable_code("266")); // SQLITE_IOERR_READ
        assert!(StoreError::pg(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(!StoreError::pg(sqlx::Error::RowNotFound).is_unavailable());
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(StoreError::pg(sqlx::Error::Io(refused)).is_unavailable());
    }
}
