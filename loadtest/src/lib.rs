//! The platform's load harness: it plays a fleet of roasters against the real broker and
//! database, then says whether ingestion kept up — publish→commit latency percentiles, points
//! lost, points duplicated — against the targets of the ingestion core (p95 < 10 ms, 0, 0).
//!
//! A run is a few separate steps, each its own module: [`plan`] fixes what will be published
//! and paces it, [`source`] supplies every session's readings (a synthetic curve, or recorded
//! Artisan roasts read by [`alog`]), [`publish`] publishes over several MQTT connections and
//! counts the broker's PUBACKs, [`monitor`] reads ingestion once a second (exact per-second
//! latency from its histograms, throughput, CPU, memory), [`ramp`] steps the rate up to find
//! the highest that holds, [`verify`] counts in PostgreSQL what arrived, and [`report`] and
//! [`html`] judge and present the result. Latency comes from ingestion itself
//! ([`ingestion`]), which alone knows when a point was committed.
//!
//! Every run has a short random id; its devices are `lt-<run id>-<n>`, so verification sees
//! only that run's rows however much else the database holds.
//!
//! Beside the ingestion runs, three modes drive other parts of the platform through their
//! public surfaces: [`score`] (roast events scored through MQTT and ingestion's API),
//! [`commands`] (the command path against command and driver-bridge) and [`missions`]
//! (company-kernel's queue with its worker processes killed).

pub mod alog;
pub mod commands;
pub mod duration;
pub mod html;
pub mod ingestion;
pub mod missions;
pub mod monitor;
pub mod plan;
pub mod progress;
pub mod publish;
pub mod ramp;
pub mod report;
pub mod score;
pub mod source;
pub mod verify;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use duration::parse_duration;
pub use plan::Plan;
pub use ramp::RampConfig;
pub use report::{Report, Verdict};
pub use source::Source;

use crate::ingestion::{IngestionClient, Latency};
use crate::monitor::{Second, Snapshot};
use crate::plan::PaceControl;
use crate::progress::{Progress, Status};
use crate::publish::{Fleet, Live, PublishConfig};
use crate::ramp::{Next, Ramp, StageKind};
use crate::report::{LatencyReport, Measured, Mode, PlanReport, Targets};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttError),
    #[error("{0}")]
    Broker(String),
    // Not a `#[source]`: sqlx's message already includes its cause, and a chain would repeat it.
    #[error("PostgreSQL: {0}")]
    Db(sqlx::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Db(e)
    }
}

/// Everything a `run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub mqtt: String,
    pub postgres: String,
    /// Ingestion's HTTP base URL, for latency, throughput, CPU and memory; without it those
    /// are reported unavailable (and a ramp cannot run).
    pub ingestion: Option<String>,
    /// Points per second over all sessions; for a ramp, the rate it must hold to pass.
    pub rate: u64,
    /// How long to publish (a fixed run).
    pub duration: Duration,
    pub sessions: u32,
    pub frame: u32,
    pub connections: u32,
    /// A run id of one's choosing (tests); random otherwise.
    pub run_id: Option<String>,
    pub ack_timeout: Duration,
    pub verify: verify::VerifyConfig,
    pub source: Source,
    /// Step the rate up instead of holding one ([`ramp`]).
    pub ramp: Option<RampConfig>,
    /// A progress bar (or status lines) on stderr.
    pub progress: bool,
    /// Sign every message with a per-device Ed25519 key, registered in the device key
    /// registry of `postgres` before the first one (for ingestion's `require_signed_*`).
    pub sign: bool,
    /// Make and use those keys in this keystore (an HSM through PKCS#11) instead of in memory.
    pub sign_keystore: Option<keys::Config>,
}

impl RunConfig {
    /// The defaults of `loadtest run`: the ingestion core's target load, 1000 sessions.
    pub fn new(mqtt: &str, postgres: &str) -> Self {
        RunConfig {
            mqtt: mqtt.to_owned(),
            postgres: postgres.to_owned(),
            ingestion: None,
            rate: 10_000,
            duration: Duration::from_secs(60),
            sessions: 1000,
            frame: 1,
            connections: 8,
            run_id: None,
            ack_timeout: Duration::from_secs(30),
            verify: verify::VerifyConfig::default(),
            source: Source::Engine { seed: 1 },
            ramp: None,
            progress: true,
            sign: false,
            sign_keystore: None,
        }
    }
}

/// Registers the devices' keys as the command service would (audited, `active`).
async fn register_keys(postgres: &str, keys: &[(String, String, String)]) -> Result<(), Error> {
    let registry = store::CommandsStore::postgres(postgres, &store::PostgresConfig::default())
        .await
        .map_err(|e| Error::Config(format!("the device key registry: {e}")))?;
    for (device, key_id, public) in keys {
        let audit = store::NewAudit {
            ts_ms: model::now_ms(),
            actor: "loadtest".into(),
            action: "key_registered".into(),
            subject: format!("{device}/{key_id}"),
            reason: "a load test's device".into(),
            detail: "{}".into(),
        };
        registry
            .add_device_key(device, key_id, public, &audit)
            .await
            .map_err(|e| Error::Config(format!("registering {device}'s key: {e}")))?;
    }
    registry.close().await;
    Ok(())
}

/// Plans, publishes, watches, verifies and judges one run.
pub async fn run(config: &RunConfig) -> Result<Report, Error> {
    let run_id = config.run_id.clone().unwrap_or_else(plan::new_run_id);
    let plan = Plan::new(
        &run_id,
        config.rate,
        config.duration,
        config.sessions,
        config.frame,
    )?;
    let mode = if config.ramp.is_some() {
        Mode::Ramp
    } else {
        Mode::Fixed
    };
    if let Some(ramp) = &config.ramp {
        ramp.validate().map_err(Error::Config)?;
        if config.ingestion.is_none() {
            return Err(Error::Config(
                "--ramp needs --ingestion: each stage is judged on ingestion's latency".into(),
            ));
        }
    }
    let client = config
        .ingestion
        .as_deref()
        .map(IngestionClient::new)
        .transpose()
        .map_err(Error::Config)?;

    // The database is checked before the load, not after: a minute of publishing into a
    // setup whose result cannot be read is a minute wasted.
    let pool = verify::connect(&config.postgres).await?;
    if verify::stored_rows(&pool, &run_id).await? > 0 {
        return Err(Error::Config(format!(
            "the database already holds points of run {run_id}; choose another run id"
        )));
    }

    let planned = match &config.ramp {
        Some(r) => ramp_estimate(r),
        None => plan.planned_duration(),
    };
    let progress = Progress::new(config.progress, planned);
    progress.say(&match &config.ramp {
        Some(r) => format!(
            "run {run_id}: ramp from {} points/s (+{} % every {:?}), {} sessions over {} connections",
            r.start,
            r.step_percent,
            r.stage,
            plan.sessions,
            config.connections.clamp(1, plan.sessions)
        ),
        None => format!(
            "run {run_id}: {} points, {} sessions × {}, at {} points/s over {} connections ({:.1} s)",
            plan.total_points(),
            plan.sessions,
            plan.points_per_session(),
            plan.rate,
            config.connections.clamp(1, plan.sessions),
            plan.planned_duration().as_secs_f64()
        ),
    });

    let mut fleet = Fleet::connect(
        &run_id,
        plan.sessions,
        plan.frame,
        &config.source,
        PublishConfig {
            mqtt_url: config.mqtt.clone(),
            connections: config.connections,
            connect_timeout: Duration::from_secs(10),
            ack_timeout: config.ack_timeout,
            sign: config.sign,
            keystore: config.sign_keystore.clone(),
        },
    )
    .await?;
    if config.sign {
        register_keys(&config.postgres, &fleet.device_keys()).await?;
    }
    fleet.start_sessions().await?;

    let pace = PaceControl::new(config.ramp.as_ref().map_or(plan.rate, |r| r.start));
    let stop = Arc::new(AtomicBool::new(false));
    let baseline = monitor::read(client.as_ref(), Duration::ZERO, 0, 0).await;
    if let (Some(_), Err(e)) = (&client, &baseline.latency) {
        progress.say(&format!(
            "ingestion's latency histograms are unavailable: {e}"
        ));
    }
    let started_at_ms = model::now_ms();
    let start = Instant::now();
    let live = fleet.live();
    let forget = fleet.keys_to_forget();
    let mut publishing = fleet.spawn(
        start,
        config.ramp.is_none().then_some(plan.messages_per_session),
        pace.subscribe(),
        stop.clone(),
    );
    let mut watch = Watch {
        client,
        live,
        pace,
        stop: stop.clone(),
        start,
        baseline: baseline.clone(),
        prev: baseline.clone(),
        series: Vec::new(),
        errors: Vec::new(),
        progress,
        publishing_done: false,
        ramp: config.ramp.clone().map(|c| RampRun::new(Ramp::new(c))),
    };

    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        tokio::select! {
            joined = &mut publishing => {
                break joined.map_err(|e| Error::Broker(format!("publishing failed: {e}")))?;
            }
            _ = ticker.tick() => watch.tick().await,
        }
    };
    // However publishing ended, no worker may go on.
    stop.store(true, Ordering::Relaxed);
    if let Some(keys) = forget {
        keys.forget().await;
    }
    let outcome = outcome?;
    watch.publishing_done(&outcome);

    let expected = verify::Expected {
        run_id: run_id.clone(),
        sessions: Some(plan.sessions),
        points_per_session: Some(outcome.messages_per_session * u64::from(plan.frame)),
    };
    let verification = {
        let verifying = verify::verify(&pool, &expected, &config.verify);
        tokio::pin!(verifying);
        // The series goes on while ingestion drains: the tail of the run is part of it.
        loop {
            tokio::select! {
                v = &mut verifying => break v?,
                _ = ticker.tick() => watch.tick().await,
            }
        }
    };
    pool.close().await;

    // Ingestion records a batch's latency just after its commit returned, so the last rows
    // can be visible a moment before they are counted: wait (briefly) until they are.
    let mut last = watch.read().await;
    let wanted = verification.tally.stored_distinct;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && latency_count_since(&baseline, &last).is_some_and(|n| n < wanted)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = watch.read().await;
    }
    let latency = whole_run_latency(&baseline, &last);
    let process =
        monitor::process_report(&baseline, &last, &mut watch.series, outcome.publish_secs);
    let ramp = watch.ramp.as_ref().map(|r| r.ramp.report());
    let plan_report = match mode {
        Mode::Fixed => PlanReport::new(&plan, plan.planned_duration().as_secs_f64()),
        Mode::Ramp => PlanReport::new(
            &Plan {
                messages_per_session: outcome.messages_per_session,
                ..plan.clone()
            },
            outcome.publish_secs,
        ),
    };
    Ok(Report::new(Measured {
        started_at_ms,
        mode,
        plan: plan_report,
        source: config.source.report(),
        targets: Targets {
            mqtt: report::redact(&config.mqtt),
            postgres: report::redact(&config.postgres),
            ingestion: config.ingestion.clone(),
        },
        publish: outcome,
        verification,
        latency,
        process,
        ramp,
        series: watch.series,
        monitor_errors: watch.errors,
        fallback_backlog_points: last
            .stats
            .as_ref()
            .ok()
            .and_then(|s| s.fallback_backlog_points),
    }))
}

/// About how long a ramp runs: the steps from its start to its maximum, and the bisections.
fn ramp_estimate(r: &RampConfig) -> Duration {
    let ratio = r.max_rate as f64 / r.start as f64;
    let steps = (ratio.ln() / (1.0 + r.step_percent / 100.0).ln())
        .ceil()
        .max(0.0) as u32;
    r.stage * (steps + 1 + r.bisect).min(r.max_stages)
}

/// Values recorded in the publish→commit histogram between two snapshots.
fn latency_count_since(first: &Snapshot, last: &Snapshot) -> Option<u64> {
    let (Ok(a), Ok(b)) = (&first.latency, &last.latency) else {
        return None;
    };
    b.since(a).ok().map(|d| d.publish_to_commit.len())
}

fn whole_run_latency(first: &Snapshot, last: &Snapshot) -> LatencyReport {
    let (a, b) = match (&first.latency, &last.latency) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return LatencyReport::Unavailable { reason: e.clone() };
        }
    };
    let diff = match b.since(a) {
        Ok(d) => d,
        Err(e) => {
            return LatencyReport::Unavailable {
                reason: e.to_string(),
            };
        }
    };
    let Some(publish_to_commit) = Latency::of(&diff.publish_to_commit) else {
        return LatencyReport::Unavailable {
            reason: "ingestion committed no point during the run".into(),
        };
    };
    let points_committed = match (&first.stats, &last.stats) {
        (Ok(a), Ok(b)) => b.points_committed.checked_sub(a.points_committed),
        _ => None,
    };
    LatencyReport::Available {
        publish_to_commit,
        receive_to_commit: Latency::of(&diff.receive_to_commit),
        points_committed,
        window_secs: last.at.saturating_sub(first.at).as_secs_f64(),
    }
}

/// The run as it happens: the per-second series, the progress bar, the ramp's stages.
struct Watch {
    client: Option<IngestionClient>,
    live: Live,
    pace: PaceControl,
    stop: Arc<AtomicBool>,
    start: Instant,
    baseline: Snapshot,
    prev: Snapshot,
    series: Vec<Second>,
    errors: Vec<String>,
    progress: Progress,
    publishing_done: bool,
    ramp: Option<RampRun>,
}

/// At most this many distinct errors reading ingestion are kept for the report.
const MAX_ERRORS: usize = 5;

impl Watch {
    async fn read(&self) -> Snapshot {
        monitor::read(
            self.client.as_ref(),
            self.start.elapsed(),
            self.live.points_published(),
            self.live.points_acked(),
        )
        .await
    }

    async fn tick(&mut self) {
        let snap = self.read().await;
        if self.client.is_some() {
            let errors = [
                snap.stats.as_ref().err(),
                snap.latency.as_ref().err(),
                snap.process.as_ref().err(),
            ];
            for e in errors.into_iter().flatten() {
                if self.errors.len() < MAX_ERRORS && !self.errors.contains(e) {
                    self.errors.push(e.clone());
                }
            }
        }
        let stage = self.ramp.as_ref().and_then(RampRun::stage_index);
        let second = monitor::interval(&self.prev, &snap, self.pace.rate(), stage);
        if let Some(ramp) = &mut self.ramp {
            ramp.tick(
                &snap,
                &self.baseline,
                &self.pace,
                &self.stop,
                &self.progress,
            );
        }
        if !self.publishing_done {
            let status = Status {
                elapsed: snap.at,
                published: snap.published,
                acked: snap.acked,
                rate: second.published_rate,
                p95_ms: second.latency.map(|l| l.p95_ms),
                stage: self.ramp.as_ref().map(RampRun::label),
            };
            self.progress.update(&status);
        }
        self.series.push(second);
        self.prev = snap;
    }

    fn publishing_done(&mut self, outcome: &publish::PublishOutcome) {
        self.publishing_done = true;
        let last = self.series.last();
        self.progress.finish(&Status {
            elapsed: self.start.elapsed(),
            published: outcome.points_published,
            acked: outcome.points_acked,
            rate: last.map_or(0.0, |s| s.published_rate),
            p95_ms: last.and_then(|s| s.latency.map(|l| l.p95_ms)),
            stage: None,
        });
        self.progress.say(&format!(
            "published {} points in {:.2} s ({:.0}/s); broker acked {}; verifying",
            outcome.points_published,
            outcome.publish_secs,
            outcome.achieved_rate,
            outcome.points_acked
        ));
    }
}

/// A ramp in progress: the current stage, where its window started, or a pause while the
/// backlog of a failed stage drains.
struct RampRun {
    ramp: Ramp,
    kind: StageKind,
    rate: u64,
    stage_start: Duration,
    window_start: Option<Snapshot>,
    /// Paused since, and the stage to run once the backlog has drained.
    draining: Option<(Duration, u64, StageKind)>,
    done: bool,
}

/// The longest a ramp waits for a failed stage's backlog to drain before the next stage.
const MAX_DRAIN: Duration = Duration::from_secs(60);

impl RampRun {
    fn new(ramp: Ramp) -> Self {
        RampRun {
            kind: StageKind::Step,
            rate: ramp.first_rate(),
            ramp,
            stage_start: Duration::ZERO,
            window_start: None,
            draining: None,
            done: false,
        }
    }

    fn stage_index(&self) -> Option<u32> {
        (!self.done && self.draining.is_none()).then_some(self.ramp.stages().len() as u32)
    }

    fn label(&self) -> String {
        match (self.done, self.draining) {
            (true, _) => "ramp done".into(),
            (false, Some((_, rate, _))) => format!("draining before {rate} points/s"),
            (false, None) => format!("stage {}: {} points/s", self.ramp.stages().len(), self.rate),
        }
    }

    fn tick(
        &mut self,
        snap: &Snapshot,
        baseline: &Snapshot,
        pace: &PaceControl,
        stop: &AtomicBool,
        progress: &Progress,
    ) {
        if self.done {
            return;
        }
        let at = snap.at;
        if let Some((since, rate, kind)) = self.draining {
            let drained = backlog(baseline, snap).is_some_and(|b| b <= (rate / 100).max(10));
            if drained || at.saturating_sub(since) >= MAX_DRAIN {
                self.begin(at, rate, kind, pace);
            }
            return;
        }
        let config = self.ramp.config().clone();
        let Some(window_start) = &self.window_start else {
            if at >= self.stage_start + config.warmup {
                self.window_start = Some(snap.clone());
            }
            return;
        };
        if at < self.stage_start + config.stage {
            return;
        }
        let dt = at.saturating_sub(window_start.at).as_secs_f64().max(1e-3);
        let latency = match (&window_start.latency, &snap.latency) {
            (Ok(a), Ok(b)) => b
                .since(a)
                .ok()
                .and_then(|d| Latency::of(&d.publish_to_commit)),
            _ => None,
        };
        let committed_rate = match (&window_start.stats, &snap.stats) {
            (Ok(a), Ok(b)) => b
                .points_committed
                .checked_sub(a.points_committed)
                .map(|n| n as f64 / dt),
            _ => None,
        };
        let measured = ramp::Measured {
            achieved_rate: snap.published.saturating_sub(window_start.published) as f64 / dt,
            latency,
            committed_rate,
            backlog_points: backlog(baseline, snap),
        };
        let window = (window_start.at.as_secs_f64(), at.as_secs_f64());
        let next = self.ramp.record(self.kind, self.rate, window, &measured);
        if let Some(stage) = self.ramp.stages().last() {
            progress.say(&format!(
                "stage {} at {} points/s: {} — {}",
                stage.index,
                stage.rate,
                if stage.held { "held" } else { "did not hold" },
                stage.reason
            ));
        }
        match next {
            Next::Stage {
                rate,
                kind,
                drain_first: true,
            } => {
                pace.set_rate(at, 0);
                self.draining = Some((at, rate, kind));
                self.window_start = None;
            }
            Next::Stage { rate, kind, .. } => self.begin(at, rate, kind, pace),
            Next::Done => {
                self.done = true;
                pace.set_rate(at, 0);
                stop.store(true, Ordering::Relaxed);
            }
        }
    }

    fn begin(&mut self, at: Duration, rate: u64, kind: StageKind, pace: &PaceControl) {
        pace.set_rate(at, rate);
        self.rate = rate;
        self.kind = kind;
        self.stage_start = at;
        self.window_start = None;
        self.draining = None;
    }
}

/// Points published but not yet committed by ingestion (its commits since the start, which on
/// a shared deployment include other traffic: then this is a lower bound).
fn backlog(baseline: &Snapshot, snap: &Snapshot) -> Option<u64> {
    let (Ok(a), Ok(b)) = (&baseline.stats, &snap.stats) else {
        return None;
    };
    let committed = b.points_committed.saturating_sub(a.points_committed);
    Some(snap.published.saturating_sub(committed))
}

/// The result of `loadtest check`: verification alone, for a run whose publisher is gone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    pub run_id: String,
    pub sessions: Option<u32>,
    pub points_per_session: Option<u64>,
    pub verification: verify::Verification,
    pub verdict: Verdict,
}

impl CheckReport {
    pub fn render(&self) -> String {
        let t = &self.verification.tally;
        let mut out = format!(
            "loadtest check {}: {}\n  expected      {} points\n  stored        {} distinct ({} rows)\n  lost          {}\n  duplicated    {}\n",
            self.run_id,
            self.verdict.as_str(),
            t.expected,
            t.stored_distinct,
            t.stored_rows,
            t.lost,
            t.duplicated
        );
        if t.sessions_without_rows > 0 {
            out += &format!(
                "    {} sessions have no row at all\n",
                t.sessions_without_rows
            );
        }
        if !self.verification.missing_examples.is_empty() {
            out += &format!(
                "    missing: {}\n",
                self.verification.missing_examples.join(", ")
            );
        }
        if !self.verification.duplicate_examples.is_empty() {
            out += &format!(
                "    duplicates: {}\n",
                self.verification.duplicate_examples.join(", ")
            );
        }
        if t.unexpected > 0 {
            out += &format!("  unexpected    {} (never published)\n", t.unexpected);
        }
        if !self.verification.complete_expectation {
            out += "  note: without the run's session count and size (--results, or --sessions and \
                    --points-per-session), a lost tail or a session without any row cannot be seen\n";
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> Result<(), Error> {
        report::write_json(self, path)
    }
}

/// Re-runs the verification of an earlier run.
pub async fn check(
    postgres: &str,
    expected: &verify::Expected,
    config: &verify::VerifyConfig,
) -> Result<CheckReport, Error> {
    plan::check_run_id(&expected.run_id)?;
    let pool = verify::connect(postgres).await?;
    let verification = verify::verify(&pool, expected, config).await?;
    pool.close().await;
    let t = &verification.tally;
    Ok(CheckReport {
        run_id: expected.run_id.clone(),
        sessions: expected.sessions,
        points_per_session: expected.points_per_session,
        verdict: if t.lost == 0 && t.duplicated == 0 && t.stored_distinct > 0 {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        verification,
    })
}

/// What `check --results` needs from a run's JSON report.
pub fn expected_from_results(json: &[u8]) -> Result<verify::Expected, Error> {
    let report: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| Error::Config(format!("not a loadtest report: {e}")))?;
    let plan = &report["plan"];
    let field = |name: &str| {
        plan[name]
            .as_u64()
            .ok_or_else(|| Error::Config(format!("the report has no plan.{name}")))
    };
    Ok(verify::Expected {
        run_id: plan["run_id"]
            .as_str()
            .ok_or_else(|| Error::Config("the report has no plan.run_id".into()))?
            .to_owned(),
        sessions: Some(
            u32::try_from(field("sessions")?)
                .map_err(|_| Error::Config("plan.sessions is too large".into()))?,
        ),
        points_per_session: Some(field("points_per_session")?),
    })
}
