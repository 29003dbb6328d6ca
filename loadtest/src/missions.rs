//! The mission queue under load with its workers killed (`loadtest missions`): missions
//! submitted to company-kernel at `per_min` a minute while worker processes
//! (`loadtest mission-worker`) claim and execute them, and every `kill_every` one worker is
//! killed with SIGKILL mid-mission and replaced. Its missions wait for their lease to run out
//! and are retried by another worker. Then: every mission must be done, none lost or dead, and
//! each must have taken effect — a worker records a mission's effect (one line with its id)
//! before completing it, so a worker killed between the two makes the mission run again: the
//! effect is then recorded twice, which an idempotent handler absorbs, and the report counts.
//!
//! Claim latency (each claim's HTTP round trip, timed by the workers) and throughput (missions
//! done a minute) are the figures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncWriteExt as _;

use crate::Error;
use crate::ingestion::Latency;

#[derive(Debug, Clone)]
pub struct MissionsConfig {
    /// company-kernel's base URL.
    pub kernel: String,
    pub per_min: u64,
    pub duration: Duration,
    pub workers: u32,
    /// One worker is killed (SIGKILL) this often, and replaced.
    pub kill_every: Duration,
    /// How long a mission's work takes.
    pub work: Duration,
    /// The workers' lease: how long a killed worker's mission waits before it is retried.
    pub lease_secs: u64,
    /// How long to wait, after the last submission, for every mission to be done.
    pub settle: Duration,
    /// The program run as `<worker_exe> mission-worker …`: this one by default.
    pub worker_exe: Option<PathBuf>,
    /// Where the workers write their effects and claim timings.
    pub dir: PathBuf,
    pub run_id: String,
}

/// What a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MissionsReport {
    pub per_min: u64,
    pub duration_s: f64,
    pub workers: u32,
    pub kills: u32,
    pub submitted: u64,
    pub done: u64,
    pub dead: u64,
    /// Not done when the settle time was over.
    pub lost: u64,
    /// Done missions without a recorded effect (must be 0).
    pub done_without_effect: u64,
    /// Missions whose effect was recorded more than once: run again after a worker was
    /// killed between its effect and its completion (absorbed by an idempotent handler).
    pub effects_repeated: u64,
    /// Missions that needed more than one attempt.
    pub retried: u64,
    pub claim: Latency,
    pub submit: Latency,
    /// Missions done a minute, from the first submission to the last completion.
    pub done_per_min: f64,
}

impl MissionsReport {
    /// Why the run failed, one line each; empty when it passed.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (what, n) in [
            ("lost", self.lost),
            ("dead", self.dead),
            ("done without an effect", self.done_without_effect),
        ] {
            if n > 0 {
                out.push(format!("{n} missions {what} (target 0)"));
            }
        }
        if self.submitted == 0 {
            out.push("no mission was submitted".into());
        }
        out
    }

    pub fn print(&self) -> String {
        let lat = |l: &Latency| {
            format!(
                "p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n={})",
                l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms, l.count
            )
        };
        let failures = self.failures();
        format!(
            "missions load: {} a minute for {:.0} s, {} workers, {} killed with SIGKILL\n\
             \x20 submitted {}  done {}  dead {}  lost {}  retried {}\n\
             \x20 effects: every done mission's recorded ({} without); {} run again after a kill\n\
             \x20 claim   {}\n\
             \x20 submit  {}\n\
             \x20 throughput {:.0} missions done a minute\n{}\n",
            self.per_min,
            self.duration_s,
            self.workers,
            self.kills,
            self.submitted,
            self.done,
            self.dead,
            self.lost,
            self.retried,
            self.done_without_effect,
            self.effects_repeated,
            lat(&self.claim),
            lat(&self.submit),
            self.done_per_min,
            if failures.is_empty() {
                "PASS".to_owned()
            } else {
                format!("FAIL: {}", failures.join("; "))
            }
        )
    }
}

fn kind(run_id: &str) -> String {
    format!("lt-{run_id}")
}

fn spawn_worker(config: &MissionsConfig, n: u32) -> Result<tokio::process::Child, Error> {
    let exe = match &config.worker_exe {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|e| Error::Config(format!("this program: {e}")))?,
    };
    tokio::process::Command::new(&exe)
        .args([
            "--worker-threads",
            "1",
            "mission-worker",
            "--kernel",
            &config.kernel,
        ])
        .args(["--kind", &kind(&config.run_id)])
        .args(["--name", &format!("w{n}")])
        .args(["--work-ms", &config.work.as_millis().to_string()])
        .args(["--lease-secs", &config.lease_secs.to_string()])
        .arg("--dir")
        .arg(&config.dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Config(format!("starting {} mission-worker: {e}", exe.display())))
}

/// Runs the load, killing a worker every `kill_every`, then checks every mission.
pub async fn run(config: &MissionsConfig) -> Result<MissionsReport, Error> {
    if config.per_min == 0 || config.workers == 0 {
        return Err(Error::Config(
            "--per-min and --workers must be at least 1".into(),
        ));
    }
    std::fs::create_dir_all(&config.dir).map_err(|source| Error::Io {
        path: config.dir.display().to_string(),
        source,
    })?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
    let mut workers = Vec::new();
    for n in 0..config.workers {
        workers.push(spawn_worker(config, n)?);
    }
    let mut next_worker = config.workers;
    let total = config.per_min * config.duration.as_secs() / 60;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(60.0 / config.per_min as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut kill = tokio::time::interval_at(
        tokio::time::Instant::now() + config.kill_every,
        config.kill_every,
    );
    let started = Instant::now();
    let mut ids = Vec::new();
    let mut submit_ms = Vec::new();
    let mut kills = 0;
    let mut i = 0;
    while i < total {
        tokio::select! {
            _ = tick.tick() => {
                let body = serde_json::json!({
                    "kind": kind(&config.run_id),
                    "payload": {"n": i},
                    "idempotency_key": format!("{}-{i}", kind(&config.run_id)),
                });
                let t = Instant::now();
                let v: serde_json::Value = http
                    .post(format!("{}/missions", config.kernel))
                    .json(&body)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| Error::Config(format!("submitting a mission: {e}")))?
                    .json()
                    .await
                    .map_err(|e| Error::Config(format!("submitting a mission: {e}")))?;
                submit_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                if let Some(id) = v["mission"]["id"].as_str() {
                    ids.push(id.to_owned());
                }
                i += 1;
            }
            _ = kill.tick() => {
                let victim = usize::try_from(kills).unwrap_or(0) % workers.len();
                // SIGKILL: no chance to finish, complete or hand anything back.
                let _ = workers[victim].start_kill();
                let _ = workers[victim].wait().await;
                workers[victim] = spawn_worker(config, next_worker)?;
                next_worker += 1;
                kills += 1;
            }
        }
    }
    let submitted_for = started.elapsed();

    // Every mission done, or the settle time over.
    let deadline = Instant::now() + config.settle;
    let mut states: HashMap<String, (String, i64, i64)> = HashMap::new();
    loop {
        let open: Vec<&String> = ids
            .iter()
            .filter(|id| {
                states
                    .get(*id)
                    .is_none_or(|s| s.0 != "done" && s.0 != "dead")
            })
            .collect();
        if open.is_empty() || Instant::now() >= deadline {
            break;
        }
        for id in open {
            let v: Option<serde_json::Value> = match http
                .get(format!("{}/missions/{id}", config.kernel))
                .send()
                .await
            {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            if let Some(v) = v {
                let state = v["state"].as_str().unwrap_or("").to_owned();
                let attempts = v["attempts"].as_i64().unwrap_or(0);
                let updated = v["updated_ms"].as_i64().unwrap_or(0);
                states.insert(id.clone(), (state, attempts, updated));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for w in &mut workers {
        let _ = w.start_kill();
        let _ = w.wait().await;
    }
    let elapsed = started.elapsed();

    let effects = read_lines(&config.dir, "effects")?;
    let mut effect_count: HashMap<&str, u64> = HashMap::new();
    for e in &effects {
        *effect_count.entry(e.as_str()).or_default() += 1;
    }
    let claims: Vec<f64> = read_lines(&config.dir, "claims")?
        .iter()
        .filter_map(|l| l.parse().ok())
        .collect();
    let mut report = MissionsReport {
        per_min: config.per_min,
        duration_s: submitted_for.as_secs_f64(),
        workers: config.workers,
        kills,
        submitted: ids.len() as u64,
        claim: crate::commands::latency(&claims),
        submit: crate::commands::latency(&submit_ms),
        ..MissionsReport::default()
    };
    for id in &ids {
        match states.get(id) {
            Some((s, attempts, _)) if s == "done" => {
                report.done += 1;
                report.retried += u64::from(*attempts > 1);
                match effect_count.get(id.as_str()) {
                    None => report.done_without_effect += 1,
                    Some(n) if *n > 1 => report.effects_repeated += 1,
                    Some(_) => {}
                }
            }
            Some((s, _, _)) if s == "dead" => report.dead += 1,
            _ => report.lost += 1,
        }
    }
    report.done_per_min = report.done as f64 * 60.0 / elapsed.as_secs_f64().max(1e-9);
    Ok(report)
}

/// Every line of the files in `dir` whose name starts with `prefix`.
fn read_lines(dir: &Path, prefix: &str) -> Result<Vec<String>, Error> {
    let io = |source| Error::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).map_err(io)?;
        // A worker killed mid-write leaves at most a partial last line: not a whole id.
        let complete = text.rsplit_once('\n').map_or("", |(whole, _)| whole);
        out.extend(
            complete
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    Ok(out)
}

/// One worker (`loadtest mission-worker`): claims missions of `kind`, works `work` on each,
/// records its effect, completes it; until killed.
pub async fn work(
    kernel: &str,
    kind: &str,
    name: &str,
    work: Duration,
    lease_secs: u64,
    dir: &Path,
) -> Result<(), Error> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
    let open = |what: &str| {
        let path = dir.join(format!("{what}-{name}-{}.log", std::process::id()));
        async move {
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await
                .map_err(|source| Error::Io {
                    path: path.display().to_string(),
                    source,
                })
        }
    };
    let (mut effects, mut claims) = (open("effects").await?, open("claims").await?);
    let worker = format!("{name}-{}", std::process::id());
    loop {
        let t = Instant::now();
        let resp = http
            .post(format!("{kernel}/missions/claim"))
            .json(&serde_json::json!({"worker": worker, "kinds": [kind], "lease_secs": lease_secs}))
            .send()
            .await;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let Ok(resp) = resp else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let _ = claims.write_all(format!("{ms:.3}\n").as_bytes()).await;
        if resp.status() != reqwest::StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let Ok(v) = resp.json::<serde_json::Value>().await else {
            continue;
        };
        let (Some(id), Some(token)) = (v["mission"]["id"].as_str(), v["lease_token"].as_str())
        else {
            continue;
        };
        tokio::time::sleep(work).await;
        // The effect first, then the completion: a kill between them runs the mission again.
        effects
            .write_all(format!("{id}\n").as_bytes())
            .await
            .map_err(|source| Error::Io {
                path: "effects".into(),
                source,
            })?;
        let _ = effects.flush().await;
        let _ = http
            .post(format!("{kernel}/missions/{id}/complete"))
            .json(&serde_json::json!({"lease_token": token, "result": {"by": worker}}))
            .send()
            .await;
    }
}
