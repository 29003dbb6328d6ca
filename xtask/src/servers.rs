//! `cargo xtask servers`: the shared PostgreSQL, Redis and Mosquitto the test suite expects,
//! installed (the tests also start private instances from the same binaries) and answering on
//! their ports; and the tools the tests run that are not servers (`promtool`, Chromium with
//! chromedriver for `testkit::browser`, SoftHSM2 for the `keys` crate, and pymodbus's Modbus
//! server for driver-bridge).

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cmd;

/// How long a started server has to answer.
const START_DEADLINE: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Server {
    Postgres,
    Redis,
    Mosquitto,
}

impl Server {
    const ALL: [Server; 3] = [Server::Postgres, Server::Redis, Server::Mosquitto];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Server::Postgres => "PostgreSQL",
            Server::Redis => "Redis",
            Server::Mosquitto => "Mosquitto",
        }
    }

    /// The variable with which the tests (testkit) look for the server elsewhere.
    fn env_var(self) -> &'static str {
        match self {
            Server::Postgres => "SIMCORP_TEST_POSTGRES_ADDR",
            Server::Redis => "SIMCORP_TEST_REDIS_ADDR",
            Server::Mosquitto => "SIMCORP_TEST_MQTT_ADDR",
        }
    }

    fn default_addr(self) -> &'static str {
        match self {
            Server::Postgres => "127.0.0.1:5432",
            Server::Redis => "127.0.0.1:6379",
            Server::Mosquitto => "127.0.0.1:1883",
        }
    }

    /// `host:port` where the tests will look, exactly as testkit computes it.
    pub(crate) fn addr(self) -> String {
        std::env::var(self.env_var()).unwrap_or_else(|_| self.default_addr().to_owned())
    }

    fn port(self) -> u16 {
        let addr = self.default_addr();
        addr[addr.rfind(':').map_or(0, |i| i + 1)..]
            .parse()
            .unwrap_or_default()
    }

    /// The Debian package that provides it.
    fn package(self) -> &'static str {
        match self {
            Server::Postgres => "postgresql",
            Server::Redis => "redis-server",
            Server::Mosquitto => "mosquitto",
        }
    }

    /// Programs the test suite (or xtask) runs that are not installed.
    fn missing_programs(self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        match self {
            Server::Postgres => {
                if pg_bindir().is_none() {
                    missing.push("initdb/pg_ctl");
                }
                if cmd::find_program("psql").is_none() {
                    missing.push("psql");
                }
            }
            Server::Redis => {
                if cmd::find_program("redis-server").is_none() {
                    missing.push("redis-server");
                }
            }
            Server::Mosquitto => {
                if cmd::find_program("mosquitto").is_none() {
                    missing.push("mosquitto");
                }
            }
        }
        missing
    }

    /// The log to show when it will not come up.
    fn log_file(self) -> Option<PathBuf> {
        match self {
            Server::Postgres => cluster_on(self.port())
                .ok()
                .flatten()
                .and_then(|c| c.log_file),
            Server::Redis => Some(REDIS_LOG.into()),
            Server::Mosquitto => Some("/var/log/mosquitto/mosquitto.log".into()),
        }
    }
}

/// Installs what is missing, starts what is down, waits until everything answers.
pub(crate) fn ensure() -> Result<()> {
    install_missing()?;
    install_promtool()?;
    install_browser()?;
    install_softhsm()?;
    install_pymodbus()?;

    let mut started = Vec::new();
    for server in Server::ALL {
        let addr = server.addr();
        if answers(&addr) {
            println!("{}: already running ({addr})", server.name());
            continue;
        }
        if addr != server.default_addr() {
            bail!(
                "{} does not answer at {addr} (set by {}); xtask only starts the local server at {}",
                server.name(),
                server.env_var(),
                server.default_addr()
            );
        }
        println!("{}: not answering at {addr}, starting it", server.name());
        start(server).with_context(|| format!("could not start {}", server.name()))?;
        started.push(server);
    }

    let deadline = Instant::now() + START_DEADLINE;
    for server in started {
        wait_until_answers(server, deadline)?;
        println!("{}: started ({})", server.name(), server.addr());
    }

    check_postgres_login()
}

/// Whether something accepts TCP connections at `addr`.
pub(crate) fn answers(addr: &str) -> bool {
    addr.to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|a| TcpStream::connect_timeout(&a, CONNECT_TIMEOUT).is_ok())
}

fn wait_until_answers(server: Server, deadline: Instant) -> Result<()> {
    let addr = server.addr();
    while !answers(&addr) {
        if Instant::now() >= deadline {
            let log = server
                .log_file()
                .map(|p| cmd::tail(&p, 15))
                .unwrap_or_default();
            let hint = match server {
                // `-d` sends startup errors (e.g. "Unable to write pid file") to /dev/null.
                Server::Mosquitto => {
                    "\nmosquitto -d hides startup errors: run `mosquitto -c \
                     /etc/mosquitto/mosquitto.conf` in the foreground to see them"
                }
                Server::Postgres => {
                    "\ncheck `port` and `listen_addresses` (must include 127.0.0.1) in \
                     /etc/postgresql/<version>/<cluster>/postgresql.conf"
                }
                Server::Redis => "",
            };
            bail!(
                "{} does not answer at {addr} after {} s\n{log}{hint}",
                server.name(),
                START_DEADLINE.as_secs()
            );
        }
        sleep(POLL);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Installing.

fn install_missing() -> Result<()> {
    let mut packages = Vec::new();
    for server in Server::ALL {
        let missing = server.missing_programs();
        if !missing.is_empty() {
            println!(
                "{}: not installed (no {}), installing package {}",
                server.name(),
                missing.join(", "),
                server.package()
            );
            packages.push(server.package());
        }
    }
    if packages.is_empty() {
        return Ok(());
    }
    apt_install(&packages)?;
    for server in Server::ALL {
        let missing = server.missing_programs();
        if !missing.is_empty() {
            bail!(
                "{}: still no {} after installing {}",
                server.name(),
                missing.join(", "),
                server.package()
            );
        }
    }
    Ok(())
}

/// The Debian package that has `promtool`, which the tests run on every service's `/metrics`
/// (`testkit::promtool_check`).
const PROMTOOL_PACKAGE: &str = "prometheus";

/// Installs `promtool` when it is missing. It comes only with the Prometheus server, which the
/// tests do not want running: no recommends (the node exporter, another daemon), and if the
/// package started its server (no `policy-rc.d` forbids it outside containers), it is stopped and
/// kept from starting at boot.
fn install_promtool() -> Result<()> {
    if let Some(path) = cmd::find_program("promtool") {
        println!("promtool: installed ({})", path.display());
        return Ok(());
    }
    println!(
        "promtool: not installed, installing package {PROMTOOL_PACKAGE} (without starting its server)"
    );
    apt_install_with(&["--no-install-recommends"], &[PROMTOOL_PACKAGE])?;
    stop_service(PROMTOOL_PACKAGE)?;
    match cmd::find_program("promtool") {
        Some(path) => {
            println!("promtool: installed ({})", path.display());
            Ok(())
        }
        None => bail!("promtool: still not found after installing {PROMTOOL_PACKAGE}"),
    }
}

/// The Debian packages of the headless browser the tests drive (`testkit::browser`): Chromium
/// and its WebDriver server. With their recommends: among them the fonts pages render with.
const BROWSER_PACKAGES: [&str; 2] = ["chromium", "chromium-driver"];

/// Installs Chromium and chromedriver when either is missing (testkit looks for them on the
/// `PATH`, as here, and in /usr/bin).
fn install_browser() -> Result<()> {
    let missing = || {
        ["chromedriver", "chromium"]
            .into_iter()
            .filter(|p| browser_program(p).is_none())
            .collect::<Vec<_>>()
    };
    let before = missing();
    if !before.is_empty() {
        println!(
            "browser: not installed (no {}), installing packages {}",
            before.join(", "),
            BROWSER_PACKAGES.join(" ")
        );
        apt_install(&BROWSER_PACKAGES)?;
        let after = missing();
        if !after.is_empty() {
            bail!(
                "browser: still no {} after installing {}",
                after.join(", "),
                BROWSER_PACKAGES.join(" ")
            );
        }
    }
    let found = |p| browser_program(p).map_or_else(String::new, |p| p.display().to_string());
    println!(
        "browser: installed ({}, {})",
        found("chromedriver"),
        found("chromium")
    );
    Ok(())
}

/// Where testkit will find `name`: on the `PATH`, else in /usr/bin.
fn browser_program(name: &str) -> Option<PathBuf> {
    cmd::find_program(name).or_else(|| {
        let p = Path::new("/usr/bin").join(name);
        p.is_file().then_some(p)
    })
}

/// SoftHSM2, the PKCS#11 module device and service keys live in during tests and development
/// (the `keys` crate): its module and `softhsm2-util`, with which tests make their tokens.
const SOFTHSM_PACKAGE: &str = "softhsm2";
pub(crate) const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn install_softhsm() -> Result<()> {
    let missing =
        || cmd::find_program("softhsm2-util").is_none() || !Path::new(SOFTHSM_MODULE).is_file();
    if missing() {
        println!("SoftHSM2: not installed, installing package {SOFTHSM_PACKAGE}");
        apt_install(&[SOFTHSM_PACKAGE])?;
        if missing() {
            bail!(
                "SoftHSM2: still no softhsm2-util or {SOFTHSM_MODULE} after installing {SOFTHSM_PACKAGE}"
            );
        }
    }
    println!("SoftHSM2: installed ({SOFTHSM_MODULE})");
    Ok(())
}

/// pymodbus from PyPI, the Modbus TCP server driver-bridge's tests talk to: pinned, in a
/// virtual environment of its own beside the build cache, so that neither the system's Python
/// (PEP 668 refuses `pip install` into it) nor a developer's is touched. testkit looks for its
/// interpreter there (`testkit::modbus`).
const PYMODBUS: &str = "pymodbus==3.11.4";

pub(crate) fn python_venv() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/simcorp/venv")
}

fn install_pymodbus() -> Result<()> {
    let venv = python_venv();
    let python = venv.join("bin/python");
    let has = |python: &Path| {
        cmd::output(
            Command::new(python).args(["-c", "import pymodbus; print(pymodbus.__version__)"]),
        )
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let want = PYMODBUS.trim_start_matches("pymodbus==");
    if has(&python).as_deref() == Some(want) {
        println!("pymodbus: installed ({want}, {})", venv.display());
        return Ok(());
    }
    let system = cmd::find_program("python3")
        .ok_or_else(|| anyhow!("pymodbus: no python3 to make its environment with"))?;
    if !python.is_file() {
        println!(
            "pymodbus: making a Python environment at {}",
            venv.display()
        );
        if cmd::run(Command::new(&system).args(["-m", "venv"]).arg(&venv)).is_err() {
            // Debian's python3 keeps venv (and ensurepip) in a package of its own.
            apt_install(&["python3-venv"])?;
            cmd::run(
                Command::new(&system)
                    .args(["-m", "venv", "--clear"])
                    .arg(&venv),
            )?;
        }
    }
    println!("pymodbus: installing {PYMODBUS} from PyPI");
    cmd::run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        PYMODBUS,
    ]))?;
    match has(&python) {
        Some(v) if v == want => {
            println!("pymodbus: installed ({v}, {})", venv.display());
            Ok(())
        }
        other => bail!("pymodbus: {PYMODBUS} not importable after installing it (found {other:?})"),
    }
}

/// Stops a service a package started on installing, and keeps it from starting at boot.
fn stop_service(service: &str) -> Result<()> {
    if Path::new("/run/systemd/system").is_dir() {
        return cmd::run(cmd::as_root("systemctl")?.args(["disable", "--now", service]));
    }
    let running =
        cmd::output(Command::new("pgrep").args(["-x", service])).is_ok_and(|o| o.status.success());
    if running {
        println!("{service}: the package started it; stopping it");
        cmd::run(cmd::as_root("service")?.args([service, "stop"]))?;
    }
    Ok(())
}

fn apt_install(packages: &[&str]) -> Result<()> {
    apt_install_with(&[], packages)
}

fn apt_install_with(options: &[&str], packages: &[&str]) -> Result<()> {
    let apt = cmd::find_program("apt-get").ok_or_else(|| {
        anyhow!(
            "cannot install {}: apt-get not found (not Debian/Ubuntu); install them with this \
             system's package manager",
            packages.join(" ")
        )
    })?;
    let install = || -> Result<Command> {
        let mut c = cmd::as_root(&apt)?;
        c.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y"])
            .args(options)
            .args(packages);
        Ok(c)
    };
    if cmd::run(&mut install()?).is_ok() {
        return Ok(());
    }
    println!("apt-get install failed: refreshing the package lists and trying again");
    cmd::run(cmd::as_root(&apt)?.arg("update"))?;
    cmd::run(&mut install()?)
}

// ---------------------------------------------------------------------------------------------
// Starting.

const REDIS_DIR: &str = "/var/lib/redis";
const REDIS_LOG: &str = "/var/log/redis/ci.log";

fn start(server: Server) -> Result<()> {
    match server {
        Server::Postgres => start_postgres(server.port()),
        Server::Redis => {
            make_dirs(&[REDIS_DIR, "/var/log/redis"])?;
            let port = server.port().to_string();
            cmd::run_starting_daemon(
                cmd::as_root("redis-server")?
                    .args(["--daemonize", "yes", "--bind", "127.0.0.1", "-::1"])
                    .args(["--port", &port, "--save", "", "--appendonly", "no"])
                    .args(["--dir", REDIS_DIR, "--logfile", REDIS_LOG]),
            )
        }
        Server::Mosquitto => {
            // Mosquitto drops to its own user before writing its pid file (Debian's config:
            // /run/mosquitto, which only systemd's tmpfiles recreates after a reboot), its log
            // and its persistence file.
            for dir in ["/run/mosquitto", "/var/log/mosquitto", "/var/lib/mosquitto"] {
                owned_dir(dir, "mosquitto")?;
            }
            let mosquitto = cmd::find_program("mosquitto").context("mosquitto not found")?;
            cmd::run_starting_daemon(cmd::as_root(mosquitto)?.args([
                "-d",
                "-c",
                "/etc/mosquitto/mosquitto.conf",
            ]))
        }
    }
}

/// Makes `dir` exist and belong to `user` (when that user exists).
fn owned_dir(dir: &str, user: &str) -> Result<()> {
    let user_exists = cmd::output(Command::new("id").arg(user)).is_ok_and(|o| o.status.success());
    if !user_exists {
        return make_dirs(&[dir]);
    }
    let owner = format!("{user}:{user}");
    let owned = cmd::output(Command::new("stat").args(["-c", "%U:%G", dir]))
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == owner);
    if !owned {
        cmd::run(cmd::as_root("install")?.args(["-d", "-o", user, "-g", user, dir]))?;
    }
    Ok(())
}

fn make_dirs(dirs: &[&str]) -> Result<()> {
    for dir in dirs {
        if !Path::new(dir).is_dir() {
            cmd::run(cmd::as_root("mkdir")?.args(["-p", dir]))?;
        }
    }
    Ok(())
}

/// A cluster of Debian's postgresql-common (`pg_lsclusters`).
#[derive(Debug, Clone)]
struct Cluster {
    version: String,
    name: String,
    port: u16,
    online: bool,
    log_file: Option<PathBuf>,
}

impl Cluster {
    fn id(&self) -> String {
        format!("{}/{}", self.version, self.name)
    }
}

fn clusters() -> Result<Vec<Cluster>> {
    let Some(lsclusters) = cmd::find_program("pg_lsclusters") else {
        bail!(
            "pg_lsclusters not found: PostgreSQL was not installed by Debian's postgresql-common, \
             start it yourself"
        );
    };
    let out = cmd::output(Command::new(lsclusters).arg("-h"))?;
    if !out.status.success() {
        bail!(
            "pg_lsclusters failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // Ver Cluster Port Status Owner Data-directory Log-file
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(Cluster {
                version: (*f.first()?).to_owned(),
                name: (*f.get(1)?).to_owned(),
                port: f.get(2)?.parse().ok()?,
                online: f.get(3)?.starts_with("online"),
                log_file: f.get(6).map(PathBuf::from),
            })
        })
        .collect())
}

fn cluster_on(port: u16) -> Result<Option<Cluster>> {
    Ok(clusters()?.into_iter().find(|c| c.port == port))
}

fn start_postgres(port: u16) -> Result<()> {
    let all = clusters()?;
    let cluster = match all.iter().find(|c| c.port == port) {
        Some(c) => c.clone(),
        None if all.is_empty() => create_cluster(port)?,
        None => bail!(
            "no PostgreSQL cluster uses port {port} (clusters: {}); give one that port or create \
             one with `pg_createcluster --port {port} <version> main`",
            all.iter()
                .map(|c| format!("{} on {}", c.id(), c.port))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    if cluster.online {
        // Starting up (e.g. just after apt-get installed it), or not listening on TCP: the
        // wait that follows tells which.
        println!(
            "PostgreSQL: cluster {} is already running, waiting for it",
            cluster.id()
        );
        return Ok(());
    }
    cmd::run_starting_daemon(cmd::as_root("pg_ctlcluster")?.args([
        "--skip-systemctl-redirect",
        &cluster.version,
        &cluster.name,
        "start",
    ]))
    .map_err(|e| match &cluster.log_file {
        Some(log) => anyhow!("{e:#}\n{}", cmd::tail(log, 15)),
        None => e,
    })
}

/// Debian's package normally creates cluster `main`; this covers a machine where it was
/// dropped (or the package was told not to).
fn create_cluster(port: u16) -> Result<Cluster> {
    let version = pg_bindir()
        .and_then(|bin| bin.parent()?.file_name()?.to_str().map(str::to_owned))
        .context("no PostgreSQL server version under /usr/lib/postgresql")?;
    println!("PostgreSQL: no cluster exists, creating {version}/main on port {port}");
    let port_arg = port.to_string();
    cmd::run(cmd::as_root("pg_createcluster")?.args(["--port", &port_arg, &version, "main"]))?;
    cluster_on(port)?.context("pg_createcluster succeeded but pg_lsclusters does not list it")
}

/// Where initdb and pg_ctl live, as testkit finds them: `$SIMCORP_PG_BINDIR`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn pg_bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SIMCORP_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").is_file().then_some(dir);
    }
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .max_by_key(|bin| {
            // Numeric order: 9.6 < 15 < 16.
            bin.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .map(|v| {
                    v.split('.')
                        .map(|n| n.parse::<u32>().unwrap_or(0))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL login: the tests connect as `postgres` over TCP without a password.

enum Login {
    Ok,
    AuthRejected(String),
    Failed(String),
}

/// `psql` against the shared server, as the tests connect (TCP, user postgres, no password).
pub(crate) fn psql(sql: &str) -> Command {
    let addr = Server::Postgres.addr();
    let (host, port) = addr.rsplit_once(':').unwrap_or((&addr, "5432"));
    let mut c = Command::new("psql");
    c.args(["-X", "-w", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port])
        .args(["-U", "postgres", "-d", "postgres", "-Atc", sql])
        .env("PGCONNECT_TIMEOUT", "5");
    c
}

fn try_login() -> Login {
    match cmd::output(&mut psql("SELECT 1")) {
        Err(e) => Login::Failed(format!("{e:#}")),
        Ok(out) if out.status.success() => Login::Ok,
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            let auth = [
                "password authentication failed",
                "no password supplied",
                "no pg_hba.conf entry",
                "authentication failed",
            ]
            .iter()
            .any(|p| err.contains(p));
            if auth {
                Login::AuthRejected(err)
            } else {
                Login::Failed(err)
            }
        }
    }
}

fn check_postgres_login() -> Result<()> {
    let mut deadline = Instant::now() + START_DEADLINE;
    let mut fixed_auth = false;
    loop {
        match try_login() {
            Login::Ok => return Ok(()),
            Login::AuthRejected(err) if !fixed_auth => {
                println!("PostgreSQL: refuses user postgres without a password ({err})");
                allow_trust_auth()?;
                fixed_auth = true;
                deadline = Instant::now() + START_DEADLINE;
            }
            Login::AuthRejected(err) | Login::Failed(err) if Instant::now() >= deadline => {
                bail!("PostgreSQL answers on its port but psql cannot log in as postgres: {err}")
            }
            // E.g. "the database system is starting up", or the reload not yet done.
            Login::AuthRejected(_) | Login::Failed(_) => sleep(POLL),
        }
    }
}

/// Lets local TCP connections in without a password (what the tests and services' test
/// configuration expect), in the pg_hba.conf of the Debian cluster on the tests' port.
fn allow_trust_auth() -> Result<()> {
    let port = Server::Postgres.port();
    if Server::Postgres.addr() != Server::Postgres.default_addr() {
        bail!(
            "the PostgreSQL set by SIMCORP_TEST_POSTGRES_ADDR must allow user postgres in without a password (trust auth)"
        );
    }
    let cluster = cluster_on(port)?.with_context(|| format!("no Debian cluster on port {port}"))?;
    let hba = PathBuf::from(format!("/etc/postgresql/{}/pg_hba.conf", cluster.id()));
    if !cmd::is_root() {
        bail!(
            "add `host all all 127.0.0.1/32 trust` at the top of {} and run \
             `pg_ctlcluster {} {} reload` (as root)",
            hba.display(),
            cluster.version,
            cluster.name
        );
    }
    let text =
        std::fs::read_to_string(&hba).with_context(|| format!("reading {}", hba.display()))?;
    let backup = hba.with_extension("conf.before-xtask");
    if !backup.exists() {
        std::fs::write(&backup, &text).with_context(|| format!("writing {}", backup.display()))?;
    }
    // First matching line wins: ours go first.
    let ours = "# Added by `cargo xtask servers`: the test suite connects as postgres over local \
                TCP without a password.\n\
                host all all 127.0.0.1/32 trust\n\
                host all all ::1/128 trust\n\n";
    std::fs::write(&hba, format!("{ours}{text}"))
        .with_context(|| format!("writing {}", hba.display()))?;
    println!(
        "PostgreSQL: added trust auth for 127.0.0.1 and ::1 to {} (previous version in {})",
        hba.display(),
        backup.display()
    );
    cmd::run(Command::new("pg_ctlcluster").args([
        "--skip-systemctl-redirect",
        &cluster.version,
        &cluster.name,
        "reload",
    ]))
}
