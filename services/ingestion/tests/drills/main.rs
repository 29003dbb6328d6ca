//! The fault drills at full load. The load harness (`loadtest`, as a library) plays 1000
//! roasting sessions at 10,000 points/s for 60 s, one point per message, through a private
//! Mosquitto into a private PostgreSQL, while each drill injects its fault 20 s in — into the
//! real `ingestion` binary or into a server. Afterwards the harness checks every published point
//! in the database: all acknowledged by the broker, each stored exactly once.
//!
//! Each drill prints one row of the table in docs/reliability.md: points published, acked,
//! stored, lost, duplicated, recovery (from the end of the fault until a second of commits with
//! p95 publish→commit under 10 ms again, i.e. the backlog is gone: backlog points carry their
//! old publish time) and the peak resident memory of the ingestion process(es) (the kernel's
//! high-water mark).
//!
//! A minute of full load each, and a release build to carry it, so they are a test binary of
//! their own that runs only with `SIMCORP_DRILLS=1`: `cargo xtask drills` builds it in release and
//! runs the drills one after another. Without it each drill says that it was skipped; nextest's
//! default filter (`.config/nextest.toml`) leaves this binary out and counts them as skipped.
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.
#![allow(unreachable_pub)]

// The ingestion suite's helpers (devices, points, the service binary as a process).
#[allow(dead_code)]
#[path = "../it/helpers.rs"]
mod helpers;

use std::time::{Duration, Instant};

use loadtest::RunConfig;
use loadtest::report::Report;
use loadtest::verify::VerifyConfig;
use testkit::{PrivateMosquitto, PrivatePostgres, PrivateRedis, TestDatabase};
use tokio::task::JoinHandle;

use testkit::ServiceProcess;

const RATE: u64 = 10_000;
const SESSIONS: u32 = 1000;
const DURATION: Duration = Duration::from_secs(60);
const FAULT_AT: Duration = Duration::from_secs(20);
const P95_TARGET_MS: f64 = 10.0;

/// Servers of the drill's own, since drills stop, kill and restart them.
struct Stack {
    broker: PrivateMosquitto,
    pg: PrivatePostgres,
    db: TestDatabase,
    /// What every ingestion process of the drill gets on top of its URLs.
    env: Vec<(&'static str, String)>,
}

/// One ingestion process, restartable with its identity: client id (so the broker keeps its
/// session), data directory (its SQLite fallback) and HTTP port (so the harness keeps watching).
struct Replica {
    client_id: String,
    data: tempfile::TempDir,
    port: u16,
    process: Option<ServiceProcess>,
    peak_rss: u64,
}

impl Stack {
    async fn start() -> Stack {
        let broker = PrivateMosquitto::start().await;
        let pg = PrivatePostgres::start().await;
        let db = TestDatabase::create_on(&pg.url()).await;
        Stack {
            broker,
            pg,
            db,
            // One runtime thread: on 2 cores shared with the broker, the database and the
            // harness, idle workers' wake-ups cost more than they give (README, "Measuring").
            env: vec![("SIMCORP_RUNTIME_WORKER_THREADS", "1".to_owned())],
        }
    }

    async fn replica(&self, name: &str) -> Replica {
        let mut r = Replica {
            client_id: testkit::unique_name(name),
            data: tempfile::tempdir().unwrap(),
            port: testkit::free_port(),
            process: None,
            peak_rss: 0,
        };
        r.start(self).await;
        r
    }

    /// The harness at full load, watching ingestion at `http`, started now.
    fn harness(&self, http: &str) -> JoinHandle<Report> {
        let mut config = RunConfig::new(&self.broker.url(), &self.db.url);
        config.ingestion = Some(http.to_owned());
        config.rate = RATE;
        config.sessions = SESSIONS;
        config.duration = DURATION;
        config.progress = false;
        config.verify = VerifyConfig {
            // A drill may leave minutes of backlog (the PostgreSQL outage: 300,000 points).
            deadline: Duration::from_secs(600),
            settle: Duration::from_secs(5),
            poll: Duration::from_millis(500),
            progress_every: None,
        };
        tokio::spawn(async move { loadtest::run(&config).await.unwrap() })
    }
}

impl Replica {
    fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process and waits until it is ready.
    async fn start(&mut self, stack: &Stack) {
        let data = self.data.path().to_string_lossy();
        let mut env = vec![
            ("SIMCORP_MQTT_URL", stack.broker.url()),
            ("SIMCORP_MQTT_CLIENT_ID", self.client_id.clone()),
            ("SIMCORP_POSTGRES_URL", stack.db.url.clone()),
            ("SIMCORP_DATA_DIR", data.into_owned()),
        ];
        env.extend(stack.env.iter().cloned());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let process = ServiceProcess::start(
            env!("CARGO_BIN_EXE_ingestion"),
            "ingestion",
            self.port,
            &env,
        )
        .await;
        self.process = Some(process);
    }

    fn note_peak(&mut self) {
        if let Some(p) = &self.process {
            self.peak_rss = self.peak_rss.max(p.peak_rss_bytes());
        }
    }

    async fn kill(&mut self) {
        self.note_peak();
        self.process.take().unwrap().kill().await;
    }

    /// SIGTERM; returns how long the drain took.
    async fn terminate(&mut self) -> Duration {
        self.note_peak();
        self.process.take().unwrap().terminate().await
    }
}

/// Waits until `FAULT_AT` after `start` (the harness's spawn; publishing begins a moment later).
async fn until_fault(start: Instant) {
    tokio::time::sleep_until((start + FAULT_AT).into()).await;
}

/// Asserts that nothing was lost or stored twice, and prints the drill's row.
fn judge(drill: &str, report: &Report, fault_over_ms: i64, peak_rss: u64, note: &str) {
    judge_with_loss(drill, report, fault_over_ms, peak_rss, note, 0);
}

/// [`judge`] for a fault that may lose up to `loss_allowed` points: a broker crash.
fn judge_with_loss(
    drill: &str,
    report: &Report,
    fault_over_ms: i64,
    peak_rss: u64,
    note: &str,
    loss_allowed: u64,
) {
    let (p, t) = (&report.publish, &report.verification.tally);
    let text = report.render();
    assert!(
        p.all_acked,
        "{drill}: not every publish was acknowledged\n{text}"
    );
    assert!(t.lost <= loss_allowed, "{drill}\n{text}");
    assert_eq!(t.duplicated, 0, "{drill}\n{text}");
    assert_eq!(t.unexpected, 0, "{drill}\n{text}");
    assert_eq!(
        t.stored_distinct + t.lost,
        p.points_published,
        "{drill}\n{text}"
    );
    let recovery = match recovered_after(report, fault_over_ms) {
        Some(s) => format!("p95 < 10 ms again within {} s", s.ceil()),
        None => "p95 not under 10 ms again before the run ended".to_owned(),
    };
    eprintln!(
        "| {drill} | {} | {} | {} | {} | {} | {recovery}; {note} | {:.0} MiB |",
        p.points_published,
        p.points_acked,
        t.stored_distinct,
        t.lost,
        t.duplicated,
        peak_rss as f64 / (1024.0 * 1024.0),
    );
}

/// Seconds from `since_ms` (epoch) to the end of the first second of the run's series whose
/// publish→commit p95 is under the target.
fn recovered_after(report: &Report, since_ms: i64) -> Option<f64> {
    let since_s = (since_ms - report.started_at_ms) as f64 / 1000.0;
    report
        .series
        .iter()
        .filter(|s| s.t_s > since_s)
        .find(|s| {
            s.latency
                .is_some_and(|l| l.count > 0 && l.p95_ms < P95_TARGET_MS)
        })
        .map(|s| s.t_s - since_s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn kill_9_of_ingestion() {
    if !testkit::drill("kill_9_of_ingestion") {
        return;
    }
    let stack = Stack::start().await;
    let mut a = stack.replica("ingestion").await;
    let start = Instant::now();
    let harness = stack.harness(&a.http());
    until_fault(start).await;
    a.kill().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarting = Instant::now();
    a.start(&stack).await;
    let ready = restarting.elapsed();
    let back = model::now_ms();
    let report = harness.await.unwrap();
    a.terminate().await;
    judge(
        "`kill -9` of ingestion, restarted after 3 s",
        &report,
        back,
        a.peak_rss,
        &format!("the new process was ready in {} ms", ready.as_millis()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn sigterm_of_ingestion() {
    if !testkit::drill("sigterm_of_ingestion") {
        return;
    }
    let stack = Stack::start().await;
    let mut a = stack.replica("ingestion").await;
    let start = Instant::now();
    let harness = stack.harness(&a.http());
    until_fault(start).await;
    let drain = a.terminate().await;
    assert!(drain < Duration::from_secs(30), "drain took {drain:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.start(&stack).await;
    let back = model::now_ms();
    let report = harness.await.unwrap();
    a.terminate().await;
    judge(
        "SIGTERM of ingestion, restarted after 2 s",
        &report,
        back,
        a.peak_rss,
        &format!("drained and exited in {} ms", drain.as_millis()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn postgres_stopped_for_30_s() {
    if !testkit::drill("postgres_stopped_for_30_s") {
        return;
    }
    let stack = Stack::start().await;
    let mut a = stack.replica("ingestion").await;
    let start = Instant::now();
    let harness = stack.harness(&a.http());
    until_fault(start).await;
    stack.pg.stop().await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let backlog_at_return = fallback_backlog(&a).await;
    stack.pg.start_server().await;
    let back = model::now_ms();
    let returned = Instant::now();
    let drained = testkit::eventually(Duration::from_secs(600), "the fallback to drain", || {
        let a = &a;
        async move { (fallback_backlog(a).await == 0).then(|| returned.elapsed()) }
    })
    .await;
    let report = harness.await.unwrap();
    a.terminate().await;
    judge(
        "PostgreSQL stopped for 30 s",
        &report,
        back,
        a.peak_rss,
        &format!(
            "{backlog_at_return} points in the SQLite fallback when it returned, replayed in {:.1} s",
            drained.as_secs_f64()
        ),
    );
}

async fn fallback_backlog(r: &Replica) -> u64 {
    let stats: serde_json::Value = reqwest::get(format!("{}/stats", r.http()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["store"]["fallback_backlog_points"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mosquitto_restarted() {
    if !testkit::drill("mosquitto_restarted") {
        return;
    }
    let mut stack = Stack::start().await;
    let mut a = stack.replica("ingestion").await;
    let start = Instant::now();
    let harness = stack.harness(&a.http());
    until_fault(start).await;
    // SIGTERM: Mosquitto saves its sessions and comes back on the same port.
    stack.broker.restart().await;
    let back = model::now_ms();
    let report = harness.await.unwrap();
    a.terminate().await;
    judge(
        "Mosquitto restarted (SIGTERM, started again)",
        &report,
        back,
        a.peak_rss,
        &format!("{} reconnects of the harness", report.publish.reconnects),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn mosquitto_killed() {
    if !testkit::drill("mosquitto_killed") {
        return;
    }
    let mut stack = Stack::start().await;
    let mut a = stack.replica("ingestion").await;
    let start = Instant::now();
    let harness = stack.harness(&a.http());
    until_fault(start).await;
    // SIGKILL: Mosquitto keeps its state in memory and writes it every `autosave_interval`
    // (1 s in the project config). What it acknowledged to devices since then, and had not yet
    // delivered to ingestion, dies with it: no subscriber can prevent that loss, so the drill
    // bounds it (two autosave intervals of the whole load) and reports it.
    stack.broker.kill().await;
    stack.broker.restart().await;
    let back = model::now_ms();
    let report = harness.await.unwrap();
    a.terminate().await;
    judge_with_loss(
        "Mosquitto killed (`kill -9`) and started again",
        &report,
        back,
        a.peak_rss,
        &format!(
            "what a crash loses is the broker's (see below); {} reconnects of the harness",
            report.publish.reconnects
        ),
        2 * RATE,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn redis_stopped_for_10_s() {
    if !testkit::drill("redis_stopped_for_10_s") {
        return;
    }
    let mut stack = Stack::start().await;
    let mut redis = PrivateRedis::start().await;
    stack.env.push(("SIMCORP_REDIS_URL", redis.url()));
    let mut a = stack.replica("ingestion").await;
    let start = Instant::now();
    let harness = stack.harness(&a.http());
    until_fault(start).await;
    redis.stop().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    redis.start_again().await;
    let back = model::now_ms();
    let report = harness.await.unwrap();
    a.terminate().await;
    judge(
        "Redis stopped for 10 s",
        &report,
        back,
        a.peak_rss,
        "ingestion kept storing",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn one_of_two_replicas_killed() {
    if !testkit::drill("one_of_two_replicas_killed") {
        return;
    }
    let mut stack = Stack::start().await;
    stack
        .env
        .push(("SIMCORP_INGESTION_SHARE_GROUP", "ingestion".to_owned()));
    let mut a = stack.replica("ingestion-a").await;
    let mut b = stack.replica("ingestion-b").await;
    let start = Instant::now();
    // The harness watches B, the survivor: its latency shows how it carries the load alone.
    let harness = stack.harness(&b.http());
    until_fault(start).await;
    a.kill().await;
    let killed = model::now_ms();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // A comes back with its client id: what the broker held in its session is delivered.
    a.start(&stack).await;
    let report = harness.await.unwrap();
    a.terminate().await;
    b.terminate().await;
    judge(
        "one of two replicas (shared subscription) killed, back after 10 s",
        &report,
        killed,
        a.peak_rss.max(b.peak_rss),
        "recovery measured on the survivor from the kill",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn telemetry_table_locked_for_10_s() {
    if !testkit::drill("telemetry_table_locked_for_10_s") {
        return;
    }
    let stack = Stack::start().await;
    let mut a = stack.replica("ingestion").await;
    let pool = sqlx::PgPool::connect(&stack.db.url).await.unwrap();
    let start = Instant::now();
    let harness = stack.harness(&a.http());
    until_fault(start).await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE telemetry IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    // Writes wait on the lock for their statement timeout, then go to the fallback.
    let locked = Instant::now();
    let mut most_in_fallback = 0;
    while locked.elapsed() < Duration::from_secs(10) {
        most_in_fallback = most_in_fallback.max(fallback_backlog(&a).await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    lock.rollback().await.unwrap();
    let released = model::now_ms();
    let report = harness.await.unwrap();
    a.terminate().await;
    pool.close().await;
    judge(
        "`telemetry` locked for 10 s",
        &report,
        released,
        a.peak_rss,
        &format!("up to {most_in_fallback} points in the SQLite fallback meanwhile"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn flood_garbage_and_oversized_payloads() {
    if !testkit::drill("flood_garbage_and_oversized_payloads") {
        return;
    }
    let stack = Stack::start().await;
    let mut a = stack.replica("ingestion").await;
    let start = Instant::now();
    let harness = stack.harness(&a.http());
    until_fault(start).await;

    // For 20 s, beside the 1000 sessions: one device at 10,000 points/s (frames of 100; 100×
    // a harness session and 10× the default per-device limit), 1,000 garbage messages/s from
    // another, and five 1 MiB payloads a second from a third.
    let flood_from = model::now_ms();
    let url = stack.broker.url();
    let sent = tokio::task::spawn_blocking(move || flood(url, Duration::from_secs(20)))
        .await
        .unwrap();
    let flood_until = model::now_ms();

    let report = harness.await.unwrap();
    let metrics = reqwest::get(format!("{}/metrics", a.http()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let health = reqwest::get(format!("{}/health", a.http()))
        .await
        .unwrap()
        .status();
    assert_eq!(health, 200, "ingestion must stay up");
    a.terminate().await;

    let pool = sqlx::PgPool::connect(&stack.db.url).await.unwrap();
    let letters: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT device_id, reason_code, count(*) FROM dead_letters
         GROUP BY device_id, reason_code ORDER BY device_id, reason_code",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let flood_stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM telemetry WHERE device_id = 'roaster-flood'")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    let count = |device: &str, code: &str| {
        letters
            .iter()
            .find(|(d, c, _)| d == device && c == code)
            .map_or(0, |l| l.2)
    };
    // One dead letter per flood episode, not one per shed message.
    assert!(
        (1..=3).contains(&count("roaster-flood", "rate_limited")),
        "{letters:?}"
    );
    assert!(
        count("roaster-garbage", "malformed_json") > 0,
        "{letters:?}"
    );
    assert!(
        count("roaster-oversized", "payload_too_large") > 0,
        "{letters:?}"
    );

    // The other devices' latency while the flood lasted: the worst second, and the run's p95
    // (which also holds the flood device's admitted points).
    let (from_s, until_s) = (
        (flood_from - report.started_at_ms) as f64 / 1000.0,
        (flood_until - report.started_at_ms) as f64 / 1000.0,
    );
    let during: Vec<f64> = report
        .series
        .iter()
        .filter(|s| s.t_s > from_s && s.t_s <= until_s + 1.0)
        .filter_map(|s| s.latency.map(|l| l.p95_ms))
        .collect();
    eprintln!("p95 of each second of the flood, ms: {during:.1?}");
    let worst = during.iter().copied().fold(0.0, f64::max);
    let run_p95 = match &report.latency {
        loadtest::report::LatencyReport::Available {
            publish_to_commit, ..
        } => format!("{:.2} ms", publish_to_commit.p95_ms),
        _ => "unavailable".to_owned(),
    };
    let shed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("simcorp_ingestion_shed_points_total "))
        .unwrap_or("0")
        .trim()
        .to_owned();
    judge(
        "one device at 10,000 points/s, 1,000 garbage messages/s and five 1 MiB payloads/s, for 20 s",
        &report,
        flood_until,
        a.peak_rss,
        &format!(
            "run p95 {run_p95}, worst second during the flood p95 {worst:.1} ms; flood: \
             {sent} points sent, {flood_stored} stored, {shed} shed; dead letters {letters:?}",
        ),
    );
}

/// For `length`, beside the harness: one device at 10,000 points/s (frames of 100; 1000× a
/// harness session and 10× the default per-device limit), 1,000 garbage messages/s from
/// another, and five 1 MiB payloads a second from a third. Blocking, on a runtime of its own, so
/// that making the flood never delays the harness's publishing. Returns the flood's points.
fn flood(mqtt_url: String, length: Duration) -> u64 {
    use crate::helpers::{point, publish_points, publish_raw, publisher, telemetry_topic};

    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let device = publisher(&mqtt_url).await;
            let (garbage_topic, big_topic) = (
                telemetry_topic("roaster-garbage"),
                telemetry_topic("roaster-oversized"),
            );
            let big = bytes::Bytes::from(vec![b'{'; 1 << 20]);
            let started = Instant::now();
            let mut seq = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut i = 0u64;
            while started.elapsed() < length {
                tick.tick().await;
                let frame: Vec<_> = (seq..seq + 100)
                    .map(|s| point("roaster-flood", "s-1", s))
                    .collect();
                seq += 100;
                publish_points(&device, &frame, 100).await;
                for _ in 0..10 {
                    publish_raw(&device, &garbage_topic, &b"\x00garbage{"[..]).await;
                }
                if i.is_multiple_of(20) {
                    publish_raw(&device, &big_topic, big.clone()).await;
                }
                i += 1;
            }
            assert!(device.flush(Duration::from_secs(60)).await);
            seq
        })
    }
}
