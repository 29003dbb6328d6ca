//! Domains: the groups of tables that parts of the platform own, each with its own migrations
//! for PostgreSQL and for SQLite and its own migration history.
//!
//! A domain's migrations live in `migrations/<name>/postgres` and `migrations/<name>/sqlite`
//! (`NNNN_description.sql`, applied in version order) and are embedded at compile time. Each
//! domain records what it applied in a history table of its own, `_sqlx_migrations_<name>`, so
//! that versions are numbered per domain and one domain's history never has to know another's.
//! Telemetry, the first domain, keeps sqlx's default `_sqlx_migrations`: that is where databases
//! migrated before there were domains have its history.
//!
//! In PostgreSQL every domain shares the one database (table names must therefore be unique
//! across domains: a clash fails `migrate_all`). Without PostgreSQL each domain has a SQLite
//! file of its own ([`Domain::sqlite_file`]), so that one service's writes never wait for
//! another's behind SQLite's single writer lock.
//!
//! Adding a domain: create its two folders and add one entry to [`DOMAINS`]; the tests below
//! fail if either is missing.

use std::collections::HashSet;
use std::path::Path;

use sqlx::migrate::{Migrate as _, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::SqlitePool;

use crate::config::SqliteConfig;
use crate::error::{Backend, StoreError};
use crate::pool::SqlitePools;

/// A group of tables owned by one part of the platform; see the module documentation.
#[derive(Debug)]
pub struct Domain {
    name: &'static str,
    history_table: &'static str,
    sqlite_file: &'static str,
    postgres: Migrator,
    sqlite: Migrator,
}

/// Telemetry points, sessions and dead letters: what ingestion stores.
pub static TELEMETRY: Domain = Domain {
    name: "telemetry",
    // Databases migrated before there were domains have telemetry's history here.
    history_table: "_sqlx_migrations",
    // Named after the service that has always written it.
    sqlite_file: "ingestion.db",
    postgres: sqlx::migrate!("../../migrations/telemetry/postgres"),
    sqlite: sqlx::migrate!("../../migrations/telemetry/sqlite"),
};

/// Reference profiles and which session is compared with which: what analytics stores.
pub static ANALYTICS: Domain = Domain {
    name: "analytics",
    history_table: "_sqlx_migrations_analytics",
    sqlite_file: "analytics.db",
    postgres: sqlx::migrate!("../../migrations/analytics/postgres"),
    sqlite: sqlx::migrate!("../../migrations/analytics/sqlite"),
};

/// Commands and their lifecycle, the audit log and device keys: what the command service stores.
pub static COMMANDS: Domain = Domain {
    name: "commands",
    history_table: "_sqlx_migrations_commands",
    sqlite_file: "commands.db",
    postgres: sqlx::migrate!("../../migrations/commands/postgres"),
    sqlite: sqlx::migrate!("../../migrations/commands/sqlite"),
};

/// The mission queue and its attempts: what company-kernel stores.
pub static MISSIONS: Domain = Domain {
    name: "missions",
    history_table: "_sqlx_migrations_missions",
    sqlite_file: "missions.db",
    postgres: sqlx::migrate!("../../migrations/missions/postgres"),
    sqlite: sqlx::migrate!("../../migrations/missions/sqlite"),
};

/// Every domain, in the order [`migrate_all`] applies them. A new domain `x` is one entry:
/// `&X` with `name: "x"`, `history_table: "_sqlx_migrations_x"`, `sqlite_file: "x.db"` and the
/// two `sqlx::migrate!("../../migrations/x/…")` folders.
static DOMAINS: &[&Domain] = &[&TELEMETRY, &ANALYTICS, &COMMANDS, &MISSIONS];

/// Every domain of the platform.
pub fn domains() -> &'static [&'static Domain] {
    DOMAINS
}

/// What migrating one domain did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub domain: &'static str,
    /// Versions that were not applied when the migration began, in order: empty when the schema
    /// was already up to date.
    pub applied: Vec<i64>,
    /// The newest version the database now has; `None` for a domain without migrations.
    pub version: Option<i64>,
}

/// Where [`migrate_all`] applies the domains.
#[derive(Debug, Clone, Copy)]
pub enum MigrationTarget<'a> {
    /// The PostgreSQL database of this pool, which holds every domain. The migrations run on a
    /// connection of their own (see [`Domain::migrate_postgres`]).
    Postgres(&'a PgPool),
    /// One SQLite file per domain in this directory, created if needed.
    Sqlite {
        dir: &'a Path,
        config: &'a SqliteConfig,
    },
}

/// Applies every domain's pending migrations, domain after domain. Stops at the first failure;
/// domains migrated before it stay migrated (each migration is a transaction of its own).
pub async fn migrate_all(target: MigrationTarget<'_>) -> Result<Vec<Migrated>, StoreError> {
    let mut done = Vec::with_capacity(DOMAINS.len());
    match target {
        MigrationTarget::Postgres(pool) => {
            let own = migration_pool(pool);
            for domain in DOMAINS {
                match domain.run_postgres(&own).await {
                    Ok(m) => done.push(m),
                    Err(e) => {
                        own.close().await;
                        return Err(e);
                    }
                }
            }
            own.close().await;
        }
        MigrationTarget::Sqlite { dir, config } => {
            for domain in DOMAINS {
                let pools = SqlitePools::open(&dir.join(domain.sqlite_file), config).await?;
                let result = domain.migrate_sqlite(&pools.writer).await;
                pools.close().await;
                done.push(result?);
            }
        }
    }
    Ok(done)
}

impl Domain {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The table that records which of this domain's migrations a database has.
    pub fn history_table(&self) -> &'static str {
        self.history_table
    }

    /// The file name of this domain's SQLite database (in the platform's `data_dir`).
    pub fn sqlite_file(&self) -> &'static str {
        self.sqlite_file
    }

    /// This domain's migrations for `backend`, recording into [`Self::history_table`]: for tests
    /// and tools that need a part of them (`run_to`) or their checksums.
    pub fn migrator(&self, backend: Backend) -> Migrator {
        let embedded = match backend {
            Backend::Postgres => &self.postgres,
            Backend::Sqlite => &self.sqlite,
        };
        let mut migrator = Migrator::with_migrations(embedded.iter().cloned().collect());
        // Not dangerous here: each domain's table is fixed at its creation and never renamed.
        migrator.dangerous_set_table_name(self.history_table);
        migrator
    }

    /// Applies this domain's pending migrations to the PostgreSQL database of `pool`. Safe when
    /// several replicas start at once: sqlx's migrator holds a database-wide advisory lock while
    /// it runs.
    ///
    /// Runs on a connection of its own, closed afterwards: a migration that fails half-way
    /// returns without releasing that session-level lock, which must not live on in `pool`; and
    /// waiting for another replica's migration is not a statement timeout.
    pub async fn migrate_postgres(&self, pool: &PgPool) -> Result<Migrated, StoreError> {
        let own = migration_pool(pool);
        let result = self.run_postgres(&own).await;
        own.close().await;
        result
    }

    async fn run_postgres(&self, own: &PgPool) -> Result<Migrated, StoreError> {
        let migrator = self.migrator(Backend::Postgres);
        let err = |source| StoreError::Migrate {
            backend: Backend::Postgres,
            domain: self.name,
            source,
        };
        let before = {
            let mut conn = own.acquire().await.map_err(StoreError::pg)?;
            // Under the lock: replicas creating the history table at once would collide.
            conn.lock().await.map_err(err)?;
            let before = applied_versions(&mut *conn, self.history_table).await;
            conn.unlock().await.map_err(err)?;
            before.map_err(err)?
        };
        // A pool rather than the connection: the migrator's `Acquire` bound on
        // `&mut PgConnection` makes the calling future not provably `Send` (a known rustc
        // limitation), and callers spawn this.
        migrator.run(own).await.map_err(err)?;
        Ok(self.report(&migrator, &before))
    }

    /// Applies this domain's pending migrations to the SQLite database of `pool` (its writer:
    /// migrations write).
    pub async fn migrate_sqlite(&self, pool: &SqlitePool) -> Result<Migrated, StoreError> {
        let migrator = self.migrator(Backend::Sqlite);
        let err = |source| StoreError::Migrate {
            backend: Backend::Sqlite,
            domain: self.name,
            source,
        };
        let before = {
            let mut conn = pool.acquire().await.map_err(StoreError::sqlite)?;
            applied_versions(&mut *conn, self.history_table)
                .await
                .map_err(err)?
        };
        migrator.run(pool).await.map_err(err)?;
        Ok(self.report(&migrator, &before))
    }

    fn report(&self, migrator: &Migrator, before: &HashSet<i64>) -> Migrated {
        let versions = migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| m.version);
        Migrated {
            domain: self.name,
            applied: versions.clone().filter(|v| !before.contains(v)).collect(),
            version: versions.max(),
        }
    }
}

/// The versions recorded in `table`, creating it if needed (as the migrator would).
async fn applied_versions(
    conn: &mut (impl sqlx::migrate::Migrate + ?Sized),
    table: &str,
) -> Result<HashSet<i64>, sqlx::migrate::MigrateError> {
    conn.ensure_migrations_table(table).await?;
    Ok(conn
        .list_applied_migrations(table)
        .await?
        .into_iter()
        .map(|m| m.version)
        .collect())
}

/// One connection to the database of `pool`, without a statement timeout; see
/// [`Domain::migrate_postgres`].
fn migration_pool(pool: &PgPool) -> PgPool {
    let options = (*pool.connect_options()).clone();
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(pool.options().get_acquire_timeout())
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                sqlx::query("SET statement_timeout = 0")
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .connect_lazy_with(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: T) {}

    /// Never run: it stops compiling if a future that services spawn stops being `Send`.
    #[allow(dead_code)]
    fn futures_are_send(pg: &PgPool, sqlite: &SqlitePool) {
        is_send(migrate_all(MigrationTarget::Postgres(pg)));
        is_send(TELEMETRY.migrate_postgres(pg));
        is_send(TELEMETRY.migrate_sqlite(sqlite));
    }

    #[test]
    fn domains_follow_the_conventions() {
        let mut names = HashSet::new();
        let mut files = HashSet::new();
        for d in domains() {
            assert!(names.insert(d.name), "two domains named {}", d.name);
            assert!(files.insert(d.sqlite_file), "{}: file shared", d.name);
            assert!(
                d.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}: a domain name is a lowercase SQL identifier",
                d.name
            );
            if d.name != TELEMETRY.name {
                assert_eq!(d.history_table, format!("_sqlx_migrations_{}", d.name));
                assert_eq!(d.sqlite_file, format!("{}.db", d.name));
            }
            // Both backends have the same versions: a domain's schema never drifts apart.
            let versions = |b| d.migrator(b).iter().map(|m| m.version).collect::<Vec<_>>();
            if d.name != TELEMETRY.name {
                assert_eq!(
                    versions(Backend::Postgres),
                    versions(Backend::Sqlite),
                    "{}",
                    d.name
                );
            }
        }
    }

    /// Every folder under `migrations/` is a domain listed in [`DOMAINS`], with both backends.
    #[test]
    fn every_migrations_folder_is_a_domain() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        let mut folders: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        folders.sort();
        let mut listed: Vec<String> = domains().iter().map(|d| d.name.to_owned()).collect();
        listed.sort();
        assert_eq!(
            folders, listed,
            "a folder without an entry in DOMAINS, or the reverse"
        );
        for name in &listed {
            for backend in ["postgres", "sqlite"] {
                assert!(
                    root.join(name).join(backend).is_dir(),
                    "migrations/{name}/{backend} is missing"
                );
            }
        }
    }

    /// Telemetry's migrations begin with exactly those that databases migrated before domains
    /// existed have in `_sqlx_migrations` (PostgreSQL 1–2, SQLite 1): same versions, same
    /// checksums (the SHA-384 of each file as it was in `migrations/postgres` and
    /// `migrations/sqlite`); later ones (roast events) follow. Editing an applied migration
    /// breaks every existing database; add a new one instead.
    #[test]
    fn telemetry_keeps_its_history() {
        let pg = [
            (
                1,
                "8cc8e9b409753b2a89436d2a43d22367f8de7415e6e1ebbd9e8fa043dfbc3ceb7bd13b21ce805eb3899b0c2e92a67b47",
            ),
            (
                2,
                "e1cbf3afa55e3b42b5382540b3ccb2dfbfe1f9e3e95c3f91d51c7fed53a2ca5a59fad464622962944cb06a411ab3fcca",
            ),
            (
                3,
                "1985a188584571a5d4a08639416aee9c182db736fdb89b5a783732fc345fc0105249707c53cce87ed139e187790b1e87",
            ),
        ];
        let sqlite = [
            (
                1,
                "531618a2b8427eab8d638fee69c503054c3dfe5f973529547d5e88d8f5a32775b04c222de0100110a3e2ec6f0cead65c",
            ),
            (
                2,
                "b97e0e2039a35d0761ed617d3186ee02c110000d4add11eb8613b5ef5adde943937923af4f14909bf8e914310854f735",
            ),
        ];
        for (backend, want) in [(Backend::Postgres, &pg[..]), (Backend::Sqlite, &sqlite[..])] {
            let got: Vec<(i64, String)> = TELEMETRY
                .migrator(backend)
                .iter()
                .map(|m| {
                    let hex = m.checksum.iter().map(|b| format!("{b:02x}")).collect();
                    (m.version, hex)
                })
                .collect();
            let want: Vec<(i64, String)> = want.iter().map(|(v, h)| (*v, h.to_string())).collect();
            assert_eq!(got, want, "{backend}");
        }
        assert_eq!(TELEMETRY.history_table, "_sqlx_migrations");
    }

    /// A second domain, so that histories side by side are tested before a real one exists.
    static EXAMPLE: Domain = Domain {
        name: "example",
        history_table: "_sqlx_migrations_example",
        sqlite_file: "example.db",
        postgres: sqlx::migrate!("tests/fixtures/example/postgres"),
        sqlite: sqlx::migrate!("tests/fixtures/example/sqlite"),
    };

    fn applied(m: Migrated) -> (&'static str, Vec<i64>) {
        (m.domain, m.applied)
    }

    #[tokio::test]
    async fn domains_keep_histories_of_their_own_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let pools = SqlitePools::open(&dir.path().join("both.db"), &SqliteConfig::default())
            .await
            .unwrap();
        for round in 0..2 {
            let t = TELEMETRY.migrate_sqlite(&pools.writer).await.unwrap();
            let e = EXAMPLE.migrate_sqlite(&pools.writer).await.unwrap();
            let want: [(_, Vec<i64>); 2] = match round {
                0 => [("telemetry", vec![1, 2]), ("example", vec![1])],
                _ => [("telemetry", vec![]), ("example", vec![])],
            };
            assert_eq!([applied(t), applied(e)], want, "round {round}");
        }
        for (table, want) in [("_sqlx_migrations", 2), ("_sqlx_migrations_example", 1)] {
            let n: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                    .fetch_one(&pools.writer)
                    .await
                    .unwrap();
            assert_eq!(n, want, "{table}");
        }
        pools.close().await;
    }

    #[tokio::test]
    async fn domains_keep_histories_of_their_own_on_postgres() {
        let test = "domain::tests::domains_keep_histories_of_their_own_on_postgres";
        if !testkit::require(testkit::Server::Postgres, test) {
            return;
        }
        let db = testkit::TestDatabase::create().await;
        let pool = PgPool::connect(&db.url).await.unwrap();
        for round in 0..2 {
            let t = TELEMETRY.migrate_postgres(&pool).await.unwrap();
            let e = EXAMPLE.migrate_postgres(&pool).await.unwrap();
            let want: [(_, Vec<i64>); 2] = match round {
                0 => [("telemetry", vec![1, 2, 3]), ("example", vec![1])],
                _ => [("telemetry", vec![]), ("example", vec![])],
            };
            assert_eq!([applied(t), applied(e)], want, "round {round}");
        }
        for (table, want) in [("_sqlx_migrations", 3), ("_sqlx_migrations_example", 1)] {
            let n: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert_eq!(n, want, "{table}");
        }
        pool.close().await;
    }
}
