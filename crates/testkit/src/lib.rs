//! Helpers shared by every integration test in the workspace, so that each test reads as a
//! specification and none re-invents how to reach a server.
//!
//! Tests talk to real servers, never to mocks of them:
//! - the shared PostgreSQL, Redis and Mosquitto started on the machine ([`require`] checks them;
//!   each test gets its own database ([`TestDatabase`]) or key prefix ([`unique_name`]) so tests
//!   running in parallel never disturb each other);
//! - private instances ([`PrivateMosquitto`], [`PrivatePostgres`]) for tests that need the
//!   project's own configuration or must stop, kill or restart a server.
//!
//! Any service of the platform is spawned the same way ([`spawn`]): on a free port, with a temp
//! data directory, a fresh database if asked, and MQTT client ids of its own. Its spans go to
//! [`OtlpReceiver::shared`], a minimal OTLP/HTTP collector, where tests find them.
//!
//! Roasts are published as a simulated roaster publishes them ([`roaster`]).
//!
//! Pages are tested in a real headless Chromium ([`browser::Browser`]), over WebDriver.
//!
//! Without a server, a test is skipped *loudly* (written straight to stderr, which the test
//! harness does not capture). With `CI=true` a missing server fails the test instead.
#![allow(clippy::unwrap_used)] // A panic is how a test helper reports failure.

pub mod browser;
mod logs;
pub mod modbus;
mod mosquitto;
mod otlp;
mod postgres;
mod process;
mod promtool;
mod redis;
pub mod roaster;
mod service;
pub mod softhsm;

use std::future::Future;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

pub use logs::CapturedLogs;
pub use mosquitto::PrivateMosquitto;
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use postgres::{PrivatePostgres, TestDatabase};
pub use process::ServiceProcess;
pub use promtool::{assert_every_type_has_help, promtool_check};
pub use redis::PrivateRedis;
pub use service::{Spawn, TestService, spawn};

/// A server the test suite expects on the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Postgres,
    Redis,
    Mosquitto,
}

impl Server {
    /// `host:port` of the shared instance (overridable for unusual machines).
    pub fn addr(self) -> String {
        let (var, default) = match self {
            Server::Postgres => ("SIMCORP_TEST_POSTGRES_ADDR", "127.0.0.1:5432"),
            Server::Redis => ("SIMCORP_TEST_REDIS_ADDR", "127.0.0.1:6379"),
            Server::Mosquitto => ("SIMCORP_TEST_MQTT_ADDR", "127.0.0.1:1883"),
        };
        std::env::var(var).unwrap_or_else(|_| default.to_owned())
    }

    /// The URL services use to reach the shared instance.
    pub fn url(self) -> String {
        match self {
            Server::Postgres => format!("postgres://postgres@{}/postgres", self.addr()),
            Server::Redis => format!("redis://{}", self.addr()),
            Server::Mosquitto => format!("mqtt://{}", self.addr()),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Server::Postgres => "PostgreSQL",
            Server::Redis => "Redis",
            Server::Mosquitto => "Mosquitto",
        }
    }
}

/// Whether this run is CI (`CI=true`), where a missing server is a failure, never a skip.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Checks that `server` answers. Returns `false` (after saying so loudly) when it does not and
/// this is not CI; the caller then returns early. Panics under `CI=true`.
///
/// ```no_run
/// # use testkit::Server;
/// # fn stores_points_once() {
/// if !testkit::require(Server::Postgres, "stores_points_once") {
///     return;
/// }
/// # }
/// ```
pub fn require(server: Server, test: &str) -> bool {
    let addr = server.addr();
    let reachable = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if reachable {
        return true;
    }
    let msg = format!(
        "{} is not reachable at {addr}; `cargo xtask test` starts the local servers",
        server.name()
    );
    if ci() {
        panic!("CI=true: {msg}");
    }
    // Written to stderr directly: the test harness captures print!/eprint!, not this.
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {msg} ***\n");
    false
}

/// Whether the drills (minutes at full load, on a release build) run: only with
/// `SIMCORP_DRILLS=1`, which `cargo xtask drills` sets. Otherwise says loudly that `drill` was
/// skipped, and the caller returns early.
pub fn drill(drill: &str) -> bool {
    if std::env::var("SIMCORP_DRILLS").is_ok_and(|v| v == "1") {
        return true;
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED drill {drill}: drills run with SIMCORP_DRILLS=1 (cargo xtask drills) ***\n"
    );
    false
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A name unique to this test run, for databases, key prefixes and client ids.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

/// Polls `probe` every 20 ms until it yields `Some`, or panics after `timeout` naming `what`.
/// The way to wait for an asynchronous effect without a fixed sleep.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
pub async fn wait_for_port(port: u16, timeout: Duration) {
    eventually(
        timeout,
        &format!("127.0.0.1:{port} to accept connections"),
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await
}

/// The workspace root, for files the tests share with deployments (e.g. the broker config).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// Whether this process runs as root (servers refuse or change behaviour under root).
fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
