//! The command path under load, against a running deployment (`loadtest commands`): proposals
//! at `per_min` a minute over the devices driver-bridge drives, each approved by a second
//! person, signed by the command service, verified and executed by the device's driver (its
//! `sim` devices obey them) and acknowledged, signed, by the device. Nothing is called in
//! process: the command service's HTTP API and driver-bridge's device list are all it sees.
//!
//! What it reports: the API's latency (propose and approve, each call timed here), propose→acked
//! (from the command's own record: created to finished, both on the command service's clock),
//! commands lost (approved but never acked: sent and timed out, or still unanswered when the
//! settle time is over), failed (the device refused), refused proposals (the safety limits or
//! the session check said no), and commands executed twice — driver-bridge's count of applied
//! commands grew by more than the run's acked commands.
//!
//! The changes stay inside every safety limit: each proposal moves one control of one device by
//! `step` (half a percent by default) away from what the device reported at the start, or back,
//! so consecutive proposals never step further than `step` and a control moves `step` times its
//! proposals a minute — keep that under the limits' `max_rate_per_min` (spread the load over
//! enough devices: 1000 a minute over 10 devices is 33 a minute per control, 17 % a minute).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::ingestion::Latency;

/// A load to put on a deployment's command path.
#[derive(Debug, Clone)]
pub struct CommandsConfig {
    /// The command service's base URL.
    pub command: String,
    /// driver-bridge's base URL: its `GET /devices` are the devices commanded.
    pub driver_bridge: String,
    pub operator_token: String,
    /// Another person than the operator (the command service refuses self-approval).
    pub approver_token: String,
    /// Checks the audit chain at the end when given (`GET /audit/verify`).
    pub admin_token: Option<String>,
    pub per_min: u64,
    pub duration: Duration,
    /// How long to wait after the last approval for every command to be answered.
    pub settle: Duration,
    /// Each proposal's change, in the control's unit (% of range).
    pub step: f64,
    /// Use at most this many of driver-bridge's devices (0: all that are roasting).
    pub max_devices: usize,
}

impl CommandsConfig {
    pub fn new(command: &str, driver_bridge: &str) -> Self {
        CommandsConfig {
            command: command.trim_end_matches('/').to_owned(),
            driver_bridge: driver_bridge.trim_end_matches('/').to_owned(),
            operator_token: String::new(),
            approver_token: String::new(),
            admin_token: None,
            per_min: 1000,
            duration: Duration::from_secs(60),
            settle: Duration::from_secs(60),
            step: 0.5,
            max_devices: 0,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CommandsReport {
    pub per_min: u64,
    pub duration_s: f64,
    pub devices: usize,
    /// Proposals the command service took (201).
    pub proposed: u64,
    pub approved: u64,
    /// Proposals refused, by the command service's reason code.
    pub refused: BTreeMap<String, u64>,
    /// Calls that did not get an answer of the command service (transport errors, 5xx).
    pub errors: u64,
    pub acked: u64,
    /// The device refused the command.
    pub failed: u64,
    /// Approved and never acked.
    pub lost: u64,
    pub executed_twice: u64,
    pub propose: Latency,
    pub approve: Latency,
    /// Every call of the run, propose and approve.
    pub api: Latency,
    pub propose_to_acked: Latency,
    pub audit_intact: Option<bool>,
}

impl CommandsReport {
    /// Why a criterion failed, one line each; empty when the run passed. The criteria: API p95
    /// under 200 ms (the plan's target), and no command lost, failed, executed twice or
    /// unanswered.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.api.p95_ms >= 200.0 {
            out.push(format!(
                "API p95 {:.1} ms (target < 200 ms)",
                self.api.p95_ms
            ));
        }
        for (what, n) in [
            ("lost", self.lost),
            ("executed twice", self.executed_twice),
            ("failed", self.failed),
            ("errors", self.errors),
        ] {
            if n > 0 {
                out.push(format!("{n} commands {what} (target 0)"));
            }
        }
        if self.proposed == 0 {
            out.push("no proposal was taken".into());
        }
        if self.audit_intact == Some(false) {
            out.push("the audit chain is broken".into());
        }
        out
    }

    pub fn print(&self) -> String {
        let refused = if self.refused.is_empty() {
            "0".to_owned()
        } else {
            self.refused
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let lat = |l: &Latency| {
            format!(
                "p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n={})",
                l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms, l.count
            )
        };
        let mut out = format!(
            "commands load: {} a minute for {:.0} s over {} devices\n\
             \x20 proposed {}  approved {}  acked {}  failed {}  lost {}  executed twice {}\n\
             \x20 refused {refused}; errors {}\n\
             \x20 API (propose + approve)  {}\n\
             \x20   propose                {}\n\
             \x20   approve                {}\n\
             \x20 propose→acked            {}\n",
            self.per_min,
            self.duration_s,
            self.devices,
            self.proposed,
            self.approved,
            self.acked,
            self.failed,
            self.lost,
            self.executed_twice,
            self.errors,
            lat(&self.api),
            lat(&self.propose),
            lat(&self.approve),
            lat(&self.propose_to_acked),
        );
        match self.audit_intact {
            Some(true) => out.push_str("  audit chain intact\n"),
            Some(false) => out.push_str("  audit chain BROKEN\n"),
            None => out.push_str("  audit chain not checked (no --admin-token)\n"),
        }
        let failures = self.failures();
        if failures.is_empty() {
            out.push_str("PASS\n");
        } else {
            out.push_str(&format!("FAIL: {}\n", failures.join("; ")));
        }
        out
    }
}

#[derive(Debug, Deserialize)]
struct DeviceView {
    id: String,
    state: String,
    session: Option<String>,
    commands_applied: u64,
    last_sample: Option<LastSample>,
}

#[derive(Debug, Deserialize)]
struct LastSample {
    channels: serde_json::Map<String, serde_json::Value>,
}

/// One control of one device, and where its proposals go.
#[derive(Debug, Clone)]
struct Target {
    device: String,
    control: &'static str,
    base: f64,
}

const CONTROLS: [&str; 3] = ["gas", "air", "drum"];

/// Runs the load, then waits for every command's answer.
pub async fn run(config: &CommandsConfig) -> Result<CommandsReport, Error> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
    if config.per_min == 0 {
        return Err(Error::Config("--per-min must be at least 1".into()));
    }
    let devices = roasting_devices(&http, config).await?;
    let applied_before: u64 = devices.iter().map(|d| d.commands_applied).sum();
    let targets: Vec<Target> = devices
        .iter()
        .flat_map(|d| {
            let channels = d.last_sample.as_ref().map(|s| &s.channels);
            CONTROLS.iter().filter_map(move |c| {
                let base = channels?.get(*c)?.as_f64()?;
                Some(Target {
                    device: d.id.clone(),
                    control: c,
                    base,
                })
            })
        })
        .collect();
    if targets.is_empty() {
        return Err(Error::Config(format!(
            "no control to command: driver-bridge at {} reports no gas, air or drum for its devices",
            config.driver_bridge
        )));
    }

    let total = config.per_min * config.duration.as_secs() / 60;
    let gap = Duration::from_secs_f64(60.0 / config.per_min as f64);
    let state = Arc::new(Mutex::new(Calls::default()));
    let mut tick = tokio::time::interval(gap);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..total {
        tick.tick().await;
        let n = usize::try_from(i).unwrap_or(usize::MAX);
        let target = targets[n % targets.len()].clone();
        // Every other visit of a target goes back to where it started.
        let away = (n / targets.len()).is_multiple_of(2);
        let value = if away {
            target.base
                + config.step
                    * if target.base + config.step > 100.0 {
                        -1.0
                    } else {
                        1.0
                    }
        } else {
            target.base
        };
        let (http, config, state) = (http.clone(), config.clone(), state.clone());
        tasks.push(tokio::spawn(async move {
            propose_and_approve(&http, &config, &target, value, &state).await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let duration_s = started.elapsed().as_secs_f64();

    let ids = state.lock().map(|s| s.approved.clone()).unwrap_or_default();
    let finals = answers(&http, config, &ids).await;
    let mut report = CommandsReport {
        per_min: config.per_min,
        duration_s,
        devices: devices.len(),
        ..CommandsReport::default()
    };
    if let Ok(s) = state.lock() {
        report.proposed = s.proposed;
        report.approved = s.approved.len() as u64;
        report.refused = s.refused.clone();
        report.errors = s.errors;
        report.propose = latency(&s.propose_ms);
        report.approve = latency(&s.approve_ms);
        let all: Vec<f64> = s.propose_ms.iter().chain(&s.approve_ms).copied().collect();
        report.api = latency(&all);
    }
    let mut e2e = Vec::new();
    for f in &finals {
        match f.state.as_str() {
            "acked" => {
                report.acked += 1;
                if let Some(end) = f.finished_ms {
                    e2e.push((end - f.created_ms) as f64);
                }
            }
            "failed" => report.failed += 1,
            _ => report.lost += 1,
        }
    }
    report.propose_to_acked = latency(&e2e);
    // Every device commanded, whether or not it is still roasting.
    let applied_after: u64 = all_devices(&http, config)
        .await?
        .iter()
        .filter(|d| devices.iter().any(|b| b.id == d.id))
        .map(|d| d.commands_applied)
        .sum();
    report.executed_twice = applied_after
        .saturating_sub(applied_before)
        .saturating_sub(report.acked);
    if let Some(token) = &config.admin_token {
        report.audit_intact = Some(audit_intact(&http, config, token).await?);
    }
    Ok(report)
}

#[derive(Debug, Default)]
struct Calls {
    proposed: u64,
    approved: Vec<String>,
    refused: BTreeMap<String, u64>,
    errors: u64,
    propose_ms: Vec<f64>,
    approve_ms: Vec<f64>,
}

async fn propose_and_approve(
    http: &reqwest::Client,
    config: &CommandsConfig,
    target: &Target,
    value: f64,
    state: &Mutex<Calls>,
) {
    let body = serde_json::json!({
        "device_id": target.device,
        "control": target.control,
        "value": value,
        "reason": "loadtest commands",
    });
    let t = Instant::now();
    let answer = call(
        http.post(format!("{}/proposals", config.command))
            .bearer_auth(&config.operator_token)
            .json(&body),
    )
    .await;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let id = {
        let Ok(mut s) = state.lock() else { return };
        s.propose_ms.push(ms);
        match answer {
            Some((201, v)) => {
                s.proposed += 1;
                v["id"].as_str().map(str::to_owned)
            }
            Some((status, v)) if (400..500).contains(&status) => {
                let reason = v["reason"].as_str().unwrap_or("unknown").to_owned();
                *s.refused.entry(reason).or_default() += 1;
                None
            }
            _ => {
                s.errors += 1;
                None
            }
        }
    };
    let Some(id) = id else { return };
    let t = Instant::now();
    let answer = call(
        http.post(format!("{}/proposals/{id}/approve", config.command))
            .bearer_auth(&config.approver_token),
    )
    .await;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let Ok(mut s) = state.lock() else { return };
    s.approve_ms.push(ms);
    match answer {
        Some((200, _)) => s.approved.push(id),
        Some((status, v)) if (400..500).contains(&status) => {
            let reason = v["reason"].as_str().unwrap_or("unknown").to_owned();
            *s.refused.entry(format!("approve: {reason}")).or_default() += 1;
        }
        _ => s.errors += 1,
    }
}

/// Status and JSON body, or `None` when no answer came.
async fn call(request: reqwest::RequestBuilder) -> Option<(u16, serde_json::Value)> {
    let resp = request.send().await.ok()?;
    let status = resp.status().as_u16();
    if status >= 500 {
        return None;
    }
    Some((status, resp.json().await.unwrap_or_default()))
}

async fn all_devices(
    http: &reqwest::Client,
    config: &CommandsConfig,
) -> Result<Vec<DeviceView>, Error> {
    let url = format!("{}/devices", config.driver_bridge);
    http.get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| Error::Config(format!("GET {url}: {e}")))?
        .json()
        .await
        .map_err(|e| Error::Config(format!("GET {url}: {e}")))
}

/// The devices in a session, sampling: the ones to command.
async fn roasting_devices(
    http: &reqwest::Client,
    config: &CommandsConfig,
) -> Result<Vec<DeviceView>, Error> {
    let mut roasting: Vec<DeviceView> = all_devices(http, config)
        .await?
        .into_iter()
        .filter(|d| d.state == "sampling" && d.session.is_some())
        .collect();
    if config.max_devices > 0 {
        roasting.truncate(config.max_devices);
    }
    if roasting.is_empty() {
        return Err(Error::Config(format!(
            "driver-bridge at {} has no device in a session to command",
            config.driver_bridge
        )));
    }
    Ok(roasting)
}

#[derive(Debug, Deserialize)]
struct Final {
    state: String,
    created_ms: i64,
    finished_ms: Option<i64>,
}

/// Each approved command's state once it is answered, or as it stands when `settle` is over.
async fn answers(http: &reqwest::Client, config: &CommandsConfig, ids: &[String]) -> Vec<Final> {
    let deadline = Instant::now() + config.settle;
    let mut open: Vec<String> = ids.to_vec();
    let mut done = Vec::new();
    loop {
        let mut still = Vec::new();
        for id in open {
            let url = format!("{}/proposals/{id}", config.command);
            let got = http
                .get(&url)
                .bearer_auth(&config.operator_token)
                .send()
                .await
                .ok();
            let record = match got {
                Some(r) if r.status().is_success() => r.json::<Final>().await.ok(),
                _ => None,
            };
            match record {
                Some(f) if matches!(f.state.as_str(), "acked" | "failed" | "timed_out") => {
                    done.push(f);
                }
                Some(f) if Instant::now() >= deadline => done.push(f),
                _ => still.push(id),
            }
        }
        if still.is_empty() || Instant::now() >= deadline {
            // Unreadable ones at the deadline count as lost.
            done.extend(still.into_iter().map(|_| Final {
                state: "unknown".into(),
                created_ms: 0,
                finished_ms: None,
            }));
            return done;
        }
        open = still;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn audit_intact(
    http: &reqwest::Client,
    config: &CommandsConfig,
    token: &str,
) -> Result<bool, Error> {
    let url = format!("{}/audit/verify", config.command);
    let v: serde_json::Value = http
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| Error::Config(format!("GET {url}: {e}")))?
        .json()
        .await
        .map_err(|e| Error::Config(format!("GET {url}: {e}")))?;
    Ok(v["ok"] == true)
}

/// Percentiles of `ms`, nearest rank.
pub(crate) fn latency(ms: &[f64]) -> Latency {
    if ms.is_empty() {
        return Latency::default();
    }
    let mut v = ms.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Latency {
        count: v.len() as u64,
        p50_ms: at(0.50),
        p95_ms: at(0.95),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}
