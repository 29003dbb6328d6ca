use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sqlx::Connection as _;
use tokio::process::Command;

use crate::{Server, free_port, unique_name, wait_for_port};

/// A fresh database on the shared PostgreSQL, dropped when the test ends. Tests that each have
/// their own database can run in parallel without seeing each other's rows.
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        Self::create_on(&Server::Postgres.url()).await
    }

    /// A fresh database on the server behind `admin_url` (e.g. a [`PrivatePostgres`]).
    pub async fn create_on(admin_url: &str) -> Self {
        let name = unique_name("simcorp_test");
        let mut conn = sqlx::PgConnection::connect(admin_url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(admin_url);
        TestDatabase {
            url: format!("{base}/{name}"),
            name,
            admin_url: admin_url.to_owned(),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside any async context we can rely on: use a throwaway runtime on a
        // thread of its own. Failure only leaves a stray database behind.
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .ok()
            })
        })
        .join();
    }
}

/// A PostgreSQL cluster of our own (initdb in a temporary directory, on a free port), for tests
/// that must stop, kill or restart the database. Stopped on drop.
#[derive(Debug)]
pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl PrivatePostgres {
    pub async fn start() -> Self {
        let bin = pg_bindir();
        let dir = tempfile::tempdir().unwrap();
        let me = PrivatePostgres {
            port: free_port(),
            dir,
            bin,
        };
        if crate::is_root() {
            // PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(me.dir.path())
                .status()
                .await
                .unwrap()
                .success();
            assert!(ok, "chown of the private cluster directory failed");
        }
        let status = me
            .pg_command("initdb")
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(me.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await
            .unwrap();
        assert!(
            status.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        me.start_server().await;
        me
    }

    /// Admin URL (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if crate::is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    async fn pg_ctl(&self, args: &[&str]) -> bool {
        self.pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success())
    }

    /// Starts (or restarts after [`stop`](Self::stop)) the server on the same port and data.
    pub async fn start_server(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        let ok = self
            .pg_ctl(&[
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "-l",
                &log.to_string_lossy(),
                "start",
            ])
            .await;
        assert!(
            ok,
            "pg_ctl start failed: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        wait_for_port(self.port, Duration::from_secs(30)).await;
    }

    /// Stops the server, disconnecting every client at once (`-m fast`).
    pub async fn stop(&self) {
        self.pg_ctl(&["-w", "-m", "fast", "stop"]).await;
    }

    /// Stops the server like a crash (`-m immediate`: no shutdown checkpoint).
    pub async fn kill(&self) {
        self.pg_ctl(&["-w", "-m", "immediate", "stop"]).await;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let mut cmd = if crate::is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_ctl);
            c
        } else {
            std::process::Command::new(pg_ctl)
        };
        let _ = cmd
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Where initdb and pg_ctl live: `$SIMCORP_PG_BINDIR`, else the newest Debian-style install.
fn pg_bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("SIMCORP_PG_BINDIR") {
        return dir.into();
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    found.retain(|p| Path::new(p).join("initdb").exists());
    found.sort();
    found
        .pop()
        .expect("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
}
