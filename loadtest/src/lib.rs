//! The platform's load harness: it plays a fleet of roasters against the real broker and
//! database, then says whether ingestion kept up — publish→commit latency percentiles, points
//! lost, points duplicated — against the targets of the ingestion core (p95 < 10 ms, 0, 0).
//!
//! A run is four separate steps, each its own module so the harness can grow (many sessions,
//! ramps, HTML reports) without a rewrite: [`plan`] fixes what will be published, [`publish`]
//! publishes it at a steady rate over several MQTT connections and counts the broker's
//! PUBACKs, [`verify`] counts in PostgreSQL what arrived, and [`report`] judges the result.
//! Latency comes from ingestion itself ([`ingestion`]), which alone knows when a point was
//! committed.
//!
//! Every run has a short random id; its devices are `lt-<run id>-<n>`, so verification sees
//! only that run's rows however much else the database holds.

pub mod duration;
pub mod ingestion;
pub mod plan;
pub mod publish;
pub mod report;
pub mod verify;

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

pub use duration::parse_duration;
pub use plan::Plan;
pub use report::{Report, Verdict};

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
    /// Ingestion's HTTP base URL, for latency; without it latency is reported unavailable.
    pub ingestion: Option<String>,
    pub rate: u64,
    pub duration: Duration,
    pub sessions: u32,
    pub frame: u32,
    pub connections: u32,
    /// A run id of one's choosing (tests); random otherwise.
    pub run_id: Option<String>,
    pub ack_timeout: Duration,
    pub verify: verify::VerifyConfig,
    /// Status lines on stderr; `None` for silence.
    pub progress_every: Option<Duration>,
}

impl RunConfig {
    /// The defaults of `loadtest run`: the ingestion core's target load.
    pub fn new(mqtt: &str, postgres: &str) -> Self {
        RunConfig {
            mqtt: mqtt.to_owned(),
            postgres: postgres.to_owned(),
            ingestion: None,
            rate: 10_000,
            duration: Duration::from_secs(60),
            sessions: 100,
            frame: 1,
            connections: 8,
            run_id: None,
            ack_timeout: Duration::from_secs(30),
            verify: verify::VerifyConfig::default(),
            progress_every: Some(Duration::from_secs(5)),
        }
    }
}

/// Plans, publishes, verifies and judges one run.
pub async fn run(config: &RunConfig) -> Result<Report, Error> {
    let run_id = config.run_id.clone().unwrap_or_else(plan::new_run_id);
    let plan = Plan::new(
        &run_id,
        config.rate,
        config.duration,
        config.sessions,
        config.frame,
    )?;
    let say = |line: String| {
        if config.progress_every.is_some() {
            let _ = writeln!(std::io::stderr(), "[loadtest] {line}");
        }
    };

    // The database is checked before the load, not after: a minute of publishing into a
    // setup whose result cannot be read is a minute wasted.
    let pool = verify::connect(&config.postgres).await?;
    if verify::stored_rows(&pool, &run_id).await? > 0 {
        return Err(Error::Config(format!(
            "the database already holds points of run {run_id}; choose another run id"
        )));
    }

    let ingestion = match &config.ingestion {
        Some(base) => Some(ingestion::IngestionClient::new(base).map_err(Error::Config)?),
        None => None,
    };
    let before = match &ingestion {
        Some(client) => match client.stats().await {
            Ok(stats) => Some(stats),
            Err(e) => {
                say(format!("ingestion stats unavailable before the run: {e}"));
                None
            }
        },
        None => None,
    };

    say(format!(
        "run {run_id}: {} points, {} sessions × {}, at {} points/s over {} connections ({:.1} s)",
        plan.total_points(),
        plan.sessions,
        plan.points_per_session(),
        plan.rate,
        config.connections.clamp(1, plan.sessions),
        plan.planned_duration().as_secs_f64()
    ));
    let started_at_ms = model::now_ms();
    let outcome = publish::publish(
        &plan,
        &publish::PublishConfig {
            mqtt_url: config.mqtt.clone(),
            connections: config.connections,
            connect_timeout: Duration::from_secs(10),
            ack_timeout: config.ack_timeout,
            progress_every: config.progress_every,
        },
    )
    .await?;
    say(format!(
        "published {} points in {:.2} s ({:.0}/s); broker acked {}; verifying",
        outcome.points_published, outcome.publish_secs, outcome.achieved_rate, outcome.points_acked
    ));

    let expected = verify::Expected {
        run_id: run_id.clone(),
        sessions: Some(plan.sessions),
        points_per_session: Some(plan.points_per_session()),
    };
    let verification = verify::verify(&pool, &expected, &config.verify).await?;
    pool.close().await;

    // Read after verification settled, so the histograms hold every committed point.
    let latency = match &ingestion {
        Some(client) => match client.stats().await {
            Ok(after) => report::LatencyReport::Available {
                points_committed_delta: before
                    .as_ref()
                    .map(|b| after.points_committed.saturating_sub(b.points_committed)),
                fresh: before
                    .as_ref()
                    .is_some_and(|b| b.points_committed == 0 && b.publish_to_commit.count == 0),
                before,
                after,
            },
            Err(reason) => report::LatencyReport::Unavailable { reason },
        },
        None => report::LatencyReport::Unavailable {
            reason: "no --ingestion URL given".into(),
        },
    };

    Ok(Report::new(
        started_at_ms,
        &plan,
        report::Targets {
            mqtt: report::redact(&config.mqtt),
            postgres: report::redact(&config.postgres),
            ingestion: config.ingestion.clone(),
        },
        outcome,
        verification,
        latency,
    ))
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
