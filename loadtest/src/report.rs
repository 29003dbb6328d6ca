//! The result of a run: criteria, verdict, the human summary and the JSON form.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::Error;
use crate::ingestion::{IngestionStats, Latency};
use crate::plan::Plan;
use crate::publish::PublishOutcome;
use crate::verify::{Settled, Verification};

/// The targets of the ingestion core.
pub const P95_TARGET_MS: f64 = 10.0;
/// The achieved publish rate may fall this far below the target before the run is void.
pub const RATE_TOLERANCE: f64 = 0.02;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanReport {
    pub run_id: String,
    pub rate: u64,
    pub sessions: u32,
    pub frame: u32,
    pub points_per_session: u64,
    pub total_points: u64,
    pub planned_secs: f64,
}

impl From<&Plan> for PlanReport {
    fn from(plan: &Plan) -> Self {
        PlanReport {
            run_id: plan.run_id.clone(),
            rate: plan.rate,
            sessions: plan.sessions,
            frame: plan.frame,
            points_per_session: plan.points_per_session(),
            total_points: plan.total_points(),
            planned_secs: plan.planned_duration().as_secs_f64(),
        }
    }
}

/// Where the run's servers were (credentials removed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Targets {
    pub mqtt: String,
    pub postgres: String,
    pub ingestion: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "one value per run: boxing would only add noise"
)]
pub enum LatencyReport {
    /// Ingestion's figures after the run. Cumulative since ingestion started: they describe
    /// this run only if ingestion was fresh (`fresh`).
    Available {
        before: Option<IngestionStats>,
        after: IngestionStats,
        /// Points ingestion committed during the run (all devices, not only this run's).
        points_committed_delta: Option<u64>,
        fresh: bool,
    },
    Unavailable {
        reason: String,
    },
}

impl LatencyReport {
    fn publish_to_commit(&self) -> Option<&Latency> {
        match self {
            LatencyReport::Available { after, .. } => Some(&after.publish_to_commit),
            LatencyReport::Unavailable { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Criterion {
    pub name: String,
    pub target: String,
    pub actual: String,
    pub pass: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "FAIL")]
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub started_at_ms: i64,
    pub plan: PlanReport,
    pub targets: Targets,
    pub publish: PublishOutcome,
    pub verification: Verification,
    pub latency: LatencyReport,
    pub criteria: Vec<Criterion>,
    pub verdict: Verdict,
    pub warnings: Vec<String>,
}

impl Report {
    /// Judges the run and collects what a reader must know to trust the figures.
    pub fn new(
        started_at_ms: i64,
        plan: &Plan,
        targets: Targets,
        publish: PublishOutcome,
        verification: Verification,
        latency: LatencyReport,
    ) -> Self {
        let criteria = criteria(plan, &publish, &verification, &latency);
        let verdict = if criteria.iter().all(|c| c.pass) {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        let warnings = warnings(plan, &publish, &verification, &latency);
        Report {
            started_at_ms,
            plan: plan.into(),
            targets,
            publish,
            verification,
            latency,
            criteria,
            verdict,
            warnings,
        }
    }

    pub fn write_json(&self, path: &Path) -> Result<(), Error> {
        write_json(self, path)
    }

    /// The human summary.
    pub fn render(&self) -> String {
        let (p, v, plan) = (&self.publish, &self.verification.tally, &self.plan);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "loadtest run {}: {}",
            plan.run_id,
            self.verdict.as_str()
        );
        let _ = writeln!(
            out,
            "  rate          target {} points/s, achieved {:.0} points/s ({} sessions, frame {}, {} connections)",
            plan.rate, p.achieved_rate, plan.sessions, plan.frame, p.connections
        );
        let _ = writeln!(
            out,
            "  duration      planned {:.2} s, publishing took {:.2} s, broker acks {:.2} s after",
            plan.planned_secs, p.publish_secs, p.ack_wait_secs
        );
        let _ = writeln!(
            out,
            "  points        published {}, acked by broker {}, stored {} (distinct; {} rows)",
            p.points_published, p.points_acked, v.stored_distinct, v.stored_rows
        );
        let _ = writeln!(out, "  lost          {}", v.lost);
        let _ = writeln!(out, "  duplicated    {}", v.duplicated);
        if v.sessions_without_rows > 0 {
            let _ = writeln!(
                out,
                "    {} of {} sessions have no row at all",
                v.sessions_without_rows, plan.sessions
            );
        }
        for (label, examples) in [
            ("missing", &self.verification.missing_examples),
            ("duplicates", &self.verification.duplicate_examples),
        ] {
            if !examples.is_empty() {
                let _ = writeln!(out, "    {label}: {}", examples.join(", "));
            }
        }
        match &self.latency {
            LatencyReport::Available {
                after,
                points_committed_delta,
                fresh,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "  publish→commit   {}",
                    latency_line(&after.publish_to_commit)
                );
                let _ = writeln!(
                    out,
                    "  receive→commit   {}",
                    latency_line(&after.receive_to_commit)
                );
                let delta = points_committed_delta
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "unknown".into());
                let _ = writeln!(
                    out,
                    "  ingestion     committed {delta} points during the run; latencies are cumulative since ingestion started{}",
                    if *fresh {
                        " (it was fresh: they are this run's)"
                    } else {
                        " (it was NOT fresh: they include earlier traffic)"
                    }
                );
            }
            LatencyReport::Unavailable { reason } => {
                let _ = writeln!(out, "  latency       unavailable: {reason}");
            }
        }
        let _ = writeln!(out, "criteria:");
        for c in &self.criteria {
            let _ = writeln!(
                out,
                "  [{}] {} (target {}): {}",
                if c.pass { "PASS" } else { "FAIL" },
                c.name,
                c.target,
                c.actual
            );
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(out, "warnings:");
            for w in &self.warnings {
                let _ = writeln!(out, "  - {w}");
            }
        }
        out
    }
}

fn latency_line(l: &Latency) -> String {
    format!(
        "p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n={})",
        l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms, l.count
    )
}

fn criteria(
    plan: &Plan,
    publish: &PublishOutcome,
    verification: &Verification,
    latency: &LatencyReport,
) -> Vec<Criterion> {
    let t = &verification.tally;
    let p95 = latency.publish_to_commit().map(|l| l.p95_ms);
    let floor = plan.rate as f64 * (1.0 - RATE_TOLERANCE);
    vec![
        Criterion {
            name: "publish→commit p95".into(),
            target: format!("< {P95_TARGET_MS} ms"),
            actual: p95.map_or_else(|| "unavailable".into(), |v| format!("{v:.2} ms")),
            pass: p95.is_some_and(|v| v < P95_TARGET_MS),
        },
        Criterion {
            name: "points lost".into(),
            target: "0".into(),
            actual: t.lost.to_string(),
            pass: t.lost == 0,
        },
        Criterion {
            name: "points duplicated".into(),
            target: "0".into(),
            actual: t.duplicated.to_string(),
            pass: t.duplicated == 0,
        },
        // A run that did not offer the load, or whose publishes the broker did not all take,
        // says nothing about ingestion at the target: it cannot pass.
        Criterion {
            name: "achieved publish rate".into(),
            target: format!(">= {floor:.0} points/s"),
            actual: format!("{:.0} points/s", publish.achieved_rate),
            pass: publish.achieved_rate >= floor,
        },
        Criterion {
            name: "publishes acked by the broker".into(),
            target: "all".into(),
            actual: format!(
                "{} of {} points, {} of {} session events",
                publish.points_acked,
                publish.points_published,
                publish.session_events_acked,
                publish.session_events_published
            ),
            pass: publish.all_acked,
        },
    ]
}

fn warnings(
    plan: &Plan,
    publish: &PublishOutcome,
    verification: &Verification,
    latency: &LatencyReport,
) -> Vec<String> {
    let mut w = Vec::new();
    let shortfall = 1.0 - publish.achieved_rate / plan.rate as f64;
    if shortfall > RATE_TOLERANCE {
        w.push(format!(
            "the publisher fell {:.1} % below the target rate ({:.0} of {} points/s): the load harness, not ingestion, was the limit",
            shortfall * 100.0,
            publish.achieved_rate,
            plan.rate
        ));
    }
    if !publish.all_acked {
        w.push(format!(
            "the broker did not acknowledge every publish in time ({} of {} points acked); unacknowledged points are still counted as expected",
            publish.points_acked, publish.points_published
        ));
    }
    if publish.reconnects > 0 {
        w.push(format!(
            "publisher connections were re-established {} times during the run",
            publish.reconnects
        ));
    }
    let t = &verification.tally;
    match verification.settled {
        Settled::Deadline => w.push(format!(
            "ingestion was still storing this run's points when verification gave up after {:.0} s: lost is an upper bound",
            verification.waited_secs
        )),
        Settled::Stable if t.stored_rows == 0 => w.push(
            "no point of this run reached PostgreSQL: is ingestion running, subscribed to this broker and writing to this database?".into(),
        ),
        _ => {}
    }
    if t.unexpected > 0 {
        w.push(format!(
            "{} stored points of this run were never published (seq past the end or unknown session)",
            t.unexpected
        ));
    }
    if let LatencyReport::Available { before, after, .. } = latency {
        match before {
            Some(b) if b.points_committed > 0 || b.publish_to_commit.count > 0 => w.push(format!(
                "ingestion had already committed {} points before this run: its latency percentiles are cumulative and include that traffic; restart ingestion for a clean measurement",
                b.points_committed
            )),
            None => w.push(
                "ingestion's stats could not be read before the run: whether the percentiles include earlier traffic is unknown".into(),
            ),
            _ => {}
        }
        if after.fallback_backlog_points.is_some_and(|n| n > 0) {
            w.push(format!(
                "ingestion holds {} points in its fallback store, not yet in PostgreSQL",
                after.fallback_backlog_points.unwrap_or(0)
            ));
        }
    }
    w
}

pub(crate) fn write_json<T: Serialize>(value: &T, path: &Path) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut json = serde_json::to_vec_pretty(value).map_err(|e| io(e.into()))?;
    json.push(b'\n');
    std::fs::write(path, json).map_err(io)
}

/// A URL with its password replaced, fit for a report.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Tally;
    use std::time::Duration;

    fn plan() -> Plan {
        Plan::new("abc", 1000, Duration::from_secs(1), 2, 1).unwrap()
    }

    fn published(rate: f64) -> PublishOutcome {
        PublishOutcome {
            connections: 2,
            messages_published: 1000,
            points_published: 1000,
            messages_acked: 1000,
            points_acked: 1000,
            session_events_published: 4,
            session_events_acked: 4,
            publish_secs: 1.0,
            achieved_rate: rate,
            all_acked: true,
            ack_wait_secs: 0.01,
            reconnects: 0,
            qos1_requested: 1004,
            qos1_acked: 1004,
        }
    }

    fn verified(lost: u64, duplicated: u64) -> Verification {
        Verification {
            tally: Tally {
                expected: 1000,
                stored_rows: 1000 - lost + duplicated,
                stored_distinct: 1000 - lost,
                lost,
                duplicated,
                ..Tally::default()
            },
            missing_examples: vec![],
            duplicate_examples: vec![],
            settled: Settled::Complete,
            waited_secs: 0.5,
            complete_expectation: true,
        }
    }

    fn latency(p95_ms: f64) -> LatencyReport {
        let l = Latency {
            count: 1000,
            p50_ms: 1.0,
            p95_ms,
            p99_ms: p95_ms + 1.0,
            max_ms: 20.0,
        };
        let stats = |n| IngestionStats {
            uptime_s: Some(5),
            points_committed: n,
            points_duplicate: None,
            points_fallback: None,
            write_failures: None,
            fallback_backlog_points: None,
            publish_to_commit: if n == 0 { Latency::default() } else { l },
            receive_to_commit: if n == 0 { Latency::default() } else { l },
        };
        LatencyReport::Available {
            before: Some(stats(0)),
            after: stats(1000),
            points_committed_delta: Some(1000),
            fresh: true,
        }
    }

    fn targets() -> Targets {
        Targets {
            mqtt: "mqtt://x".into(),
            postgres: "postgres://x/db".into(),
            ingestion: None,
        }
    }

    #[test]
    fn passes_only_when_every_target_is_met() {
        let ok = Report::new(
            0,
            &plan(),
            targets(),
            published(999.0),
            verified(0, 0),
            latency(4.0),
        );
        assert_eq!(ok.verdict, Verdict::Pass, "{}", ok.render());
        assert!(ok.warnings.is_empty(), "{:?}", ok.warnings);

        let cases = [
            Report::new(
                0,
                &plan(),
                targets(),
                published(999.0),
                verified(0, 0),
                latency(10.0),
            ),
            Report::new(
                0,
                &plan(),
                targets(),
                published(999.0),
                verified(1, 0),
                latency(4.0),
            ),
            Report::new(
                0,
                &plan(),
                targets(),
                published(999.0),
                verified(0, 1),
                latency(4.0),
            ),
            Report::new(
                0,
                &plan(),
                targets(),
                published(900.0),
                verified(0, 0),
                latency(4.0),
            ),
            Report::new(
                0,
                &plan(),
                targets(),
                published(999.0),
                verified(0, 0),
                LatencyReport::Unavailable {
                    reason: "no --ingestion given".into(),
                },
            ),
        ];
        for r in cases {
            assert_eq!(r.verdict, Verdict::Fail, "{}", r.render());
        }
    }

    #[test]
    fn the_summary_never_invents_latency() {
        let r = Report::new(
            0,
            &plan(),
            targets(),
            published(1000.0),
            verified(0, 0),
            LatencyReport::Unavailable {
                reason: "no --ingestion given".into(),
            },
        );
        let text = r.render();
        assert!(
            text.contains("latency       unavailable: no --ingestion given"),
            "{text}"
        );
        assert!(!text.contains("p50"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["latency"]["status"], "unavailable");
        assert_eq!(json["verdict"], "FAIL");
    }

    #[test]
    fn a_slow_publisher_is_called_out() {
        let r = Report::new(
            0,
            &plan(),
            targets(),
            published(500.0),
            verified(0, 0),
            latency(4.0),
        );
        assert!(
            r.warnings.iter().any(|w| w.contains("50.0 % below")),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn passwords_stay_out_of_reports() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
