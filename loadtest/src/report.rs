//! The result of a run: criteria, verdict, the human summary and the JSON form (the HTML form
//! is [`crate::html`]).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::Error;
use crate::ingestion::Latency;
use crate::monitor::{ProcessReport, Second};
use crate::plan::Plan;
use crate::publish::PublishOutcome;
use crate::ramp::RampReport;
use crate::source::SourceReport;
use crate::verify::{Settled, Verification};

/// The targets of the ingestion core.
pub const P95_TARGET_MS: f64 = 10.0;
/// The achieved publish rate may fall this far below the target before the run is void.
pub const RATE_TOLERANCE: f64 = 0.02;

/// How the figures are obtained and why they can be trusted: printed in every report.
pub const METHOD: &[&str] = &[
    "Publish→commit latency of a point is its commit time minus its `ts`. The harness stamps `ts` \
     when it hands the point to the MQTT client (Unix milliseconds, truncated: the figure errs by \
     less than 1 ms, and only upward). The commit time is ingestion's own per-point record: its \
     clock read right after the database commit of the point's batch returned, recorded for every \
     committed point in an HDR histogram (3 significant digits). It is not taken from the store: \
     a row carries no commit time (received_at is stamped before the write), and the commit is \
     only known to the process that made it; reading it there adds no delay of its own.",
    "Both timestamps come from the same clock when the harness and ingestion run on one host, as \
     here. On separate hosts their clock skew adds to every figure, in either direction: keep \
     both NTP-synchronised, and read the figures as ± the skew.",
    "Percentiles are exact, never cumulative: the harness reads ingestion's histograms \
     (GET /stats/latency) once a second and subtracts the previous snapshot, so each second holds \
     exactly the points committed in it, and the whole run is the snapshot after verification \
     minus the one before the first publish, however long ingestion had been running. Points of \
     other devices that ingestion committed in the same window are included.",
    "Lost and duplicated points are counted in PostgreSQL once ingestion has settled: every \
     published point — each acknowledged by the broker (PUBACK), or the report says otherwise — \
     must be stored exactly once under its identity (device, session, seq).",
    "Throughput: published = points handed to the broker per second by the harness; committed = \
     ingestion's points_committed per second (GET /stats; all of its traffic).",
    "CPU and memory are the ingestion process's own process_cpu_seconds_total and \
     process_resident_memory_bytes (GET /metrics), sampled once a second: CPU as cores used \
     (CPU seconds per wall second), memory as the highest sample.",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One rate for the whole run.
    Fixed,
    /// `--ramp`: rising rates, to find the highest that holds.
    Ramp,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanReport {
    pub run_id: String,
    /// The rate asked for (a ramp: the rate it must hold to pass).
    pub rate: u64,
    pub sessions: u32,
    pub frame: u32,
    pub points_per_session: u64,
    pub total_points: u64,
    pub planned_secs: f64,
}

impl PlanReport {
    pub fn new(plan: &Plan, planned_secs: f64) -> Self {
        PlanReport {
            run_id: plan.run_id.clone(),
            rate: plan.rate,
            sessions: plan.sessions,
            frame: plan.frame,
            points_per_session: plan.points_per_session(),
            total_points: plan.total_points(),
            planned_secs,
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
pub enum LatencyReport {
    /// The run's own latency: ingestion's histograms after the run minus before it.
    Available {
        publish_to_commit: Latency,
        /// From the message's arrival at ingestion to the commit: the part ingestion controls.
        receive_to_commit: Option<Latency>,
        /// Points ingestion committed in the window (all of its traffic, not only this run's).
        points_committed: Option<u64>,
        /// Seconds between the two snapshots.
        window_secs: f64,
    },
    Unavailable {
        reason: String,
    },
}

impl LatencyReport {
    pub fn publish_to_commit(&self) -> Option<&Latency> {
        match self {
            LatencyReport::Available {
                publish_to_commit, ..
            } => Some(publish_to_commit),
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

/// Everything measured, before it is judged.
#[derive(Debug, Clone)]
pub struct Measured {
    pub started_at_ms: i64,
    pub mode: Mode,
    pub plan: PlanReport,
    pub source: SourceReport,
    pub targets: Targets,
    pub publish: PublishOutcome,
    pub verification: Verification,
    pub latency: LatencyReport,
    pub process: ProcessReport,
    pub ramp: Option<RampReport>,
    pub series: Vec<Second>,
    /// What went wrong while reading ingestion during the run (the first few).
    pub monitor_errors: Vec<String>,
    /// Points of this run ingestion committed to its fallback store, from its /stats after.
    pub fallback_backlog_points: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub started_at_ms: i64,
    pub mode: Mode,
    pub plan: PlanReport,
    pub source: SourceReport,
    pub targets: Targets,
    pub publish: PublishOutcome,
    pub verification: Verification,
    pub latency: LatencyReport,
    pub process: ProcessReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramp: Option<RampReport>,
    pub criteria: Vec<Criterion>,
    pub verdict: Verdict,
    pub warnings: Vec<String>,
    /// How the figures were obtained ([`METHOD`]).
    pub method: Vec<String>,
    /// One entry per second of the run, drain included.
    pub series: Vec<Second>,
}

impl Report {
    /// Judges the run and collects what a reader must know to trust the figures.
    pub fn new(m: Measured) -> Self {
        let criteria = criteria(&m);
        let verdict = if criteria.iter().all(|c| c.pass) {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        let warnings = warnings(&m);
        Report {
            started_at_ms: m.started_at_ms,
            mode: m.mode,
            plan: m.plan,
            source: m.source,
            targets: m.targets,
            publish: m.publish,
            verification: m.verification,
            latency: m.latency,
            process: m.process,
            ramp: m.ramp,
            criteria,
            verdict,
            warnings,
            method: METHOD.iter().map(|s| (*s).to_owned()).collect(),
            series: m.series,
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
            "  source        {} ({})",
            self.source.kind, self.source.detail
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
        if p.broker_ack.count > 0 {
            let a = &p.broker_ack;
            let _ = writeln!(
                out,
                "  publish→broker ack   p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n={}, every telemetry message)",
                a.p50_ms, a.p95_ms, a.p99_ms, a.max_ms, a.count
            );
        }
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
                publish_to_commit,
                receive_to_commit,
                points_committed,
                window_secs,
            } => {
                let _ = writeln!(
                    out,
                    "  publish→commit   {}",
                    latency_line(publish_to_commit)
                );
                if let Some(r) = receive_to_commit {
                    let _ = writeln!(out, "  receive→commit   {}", latency_line(r));
                }
                let committed = points_committed
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "unknown".into());
                let _ = writeln!(
                    out,
                    "  ingestion     committed {committed} points in the {window_secs:.1} s measured (exact: histogram after minus before the run)"
                );
            }
            LatencyReport::Unavailable { reason } => {
                let _ = writeln!(out, "  latency       unavailable: {reason}");
            }
        }
        match &self.process {
            ProcessReport::Available {
                cpu_seconds,
                cpu_cores_mean,
                cpu_cores_peak,
                rss_peak_bytes,
                ..
            } => {
                let opt =
                    |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or_else(|| "?".to_owned(), f);
                let _ = writeln!(
                    out,
                    "  ingestion CPU {} cores mean under load, {} peak ({cpu_seconds:.1} CPU s); memory peak {}",
                    opt(*cpu_cores_mean, &|c| format!("{c:.2}")),
                    opt(*cpu_cores_peak, &|c| format!("{c:.2}")),
                    opt(*rss_peak_bytes, &|b| format!("{:.1} MiB", b / 1_048_576.0)),
                );
            }
            ProcessReport::Unavailable { reason } => {
                let _ = writeln!(out, "  ingestion CPU/memory unavailable: {reason}");
            }
        }
        if let Some(ramp) = &self.ramp {
            let _ = writeln!(out, "ramp stages:");
            for s in &ramp.stages {
                let _ = writeln!(
                    out,
                    "  {:>2} {:<7} {:>7} points/s  achieved {:>7.0}  p95 {:>8}  {}  {}",
                    s.index,
                    format!("{:?}", s.kind).to_lowercase(),
                    s.rate,
                    s.achieved_rate,
                    s.latency
                        .map_or_else(|| "-".into(), |l| format!("{:.2} ms", l.p95_ms)),
                    if s.held { "held" } else { "FAILED" },
                    s.reason
                );
            }
            let _ = writeln!(
                out,
                "  highest rate held: {} ({})",
                ramp.highest_rate_held
                    .map_or_else(|| "none".into(), |r| format!("{r} points/s")),
                ramp.stop_reason
            );
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

pub fn latency_line(l: &Latency) -> String {
    format!(
        "p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n={})",
        l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms, l.count
    )
}

fn criteria(m: &Measured) -> Vec<Criterion> {
    let t = &m.verification.tally;
    let publish = &m.publish;
    let mut out = Vec::new();
    match (&m.mode, &m.ramp) {
        (Mode::Ramp, Some(ramp)) => out.push(Criterion {
            name: format!("highest rate holding p95 < {P95_TARGET_MS} ms"),
            target: format!(">= {} points/s", m.plan.rate),
            actual: ramp
                .highest_rate_held
                .map_or_else(|| "none".into(), |r| format!("{r} points/s")),
            pass: ramp.highest_rate_held.is_some_and(|r| r >= m.plan.rate),
        }),
        _ => {
            let p95 = m.latency.publish_to_commit().map(|l| l.p95_ms);
            out.push(Criterion {
                name: "publish→commit p95".into(),
                target: format!("< {P95_TARGET_MS} ms"),
                actual: p95.map_or_else(|| "unavailable".into(), |v| format!("{v:.2} ms")),
                pass: p95.is_some_and(|v| v < P95_TARGET_MS),
            });
        }
    }
    out.push(Criterion {
        name: "points lost".into(),
        target: "0".into(),
        actual: t.lost.to_string(),
        pass: t.lost == 0,
    });
    out.push(Criterion {
        name: "points duplicated".into(),
        target: "0".into(),
        actual: t.duplicated.to_string(),
        pass: t.duplicated == 0,
    });
    // A run that did not offer the load, or whose publishes the broker did not all take,
    // says nothing about ingestion at the target: it cannot pass. (A ramp judges the rate of
    // each stage instead.)
    if m.mode == Mode::Fixed {
        let floor = m.plan.rate as f64 * (1.0 - RATE_TOLERANCE);
        out.push(Criterion {
            name: "achieved publish rate".into(),
            target: format!(">= {floor:.0} points/s"),
            actual: format!("{:.0} points/s", publish.achieved_rate),
            pass: publish.achieved_rate >= floor,
        });
    }
    out.push(Criterion {
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
    });
    out
}

fn warnings(m: &Measured) -> Vec<String> {
    let (publish, verification) = (&m.publish, &m.verification);
    let mut w = Vec::new();
    let shortfall = 1.0 - publish.achieved_rate / m.plan.rate as f64;
    if m.mode == Mode::Fixed && shortfall > RATE_TOLERANCE {
        w.push(format!(
            "the publisher fell {:.1} % below the target rate ({:.0} of {} points/s): the load harness, not ingestion, was the limit",
            shortfall * 100.0,
            publish.achieved_rate,
            m.plan.rate
        ));
    }
    if let Some(ramp) = &m.ramp
        && ramp.stages.iter().any(|s| s.harness_limited)
    {
        w.push("in at least one ramp stage the harness could not publish at the stage's rate: the ramp's result is a limit of the harness, not of ingestion".into());
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
    if let LatencyReport::Available {
        points_committed: Some(committed),
        ..
    } = &m.latency
        && *committed > publish.points_published
    {
        w.push(format!(
            "ingestion committed {} points more than this run published while it ran: other traffic shares its latency histograms and throughput figures",
            committed - publish.points_published
        ));
    }
    if m.fallback_backlog_points.is_some_and(|n| n > 0) {
        w.push(format!(
            "ingestion holds {} points in its fallback store, not yet in PostgreSQL",
            m.fallback_backlog_points.unwrap_or(0)
        ));
    }
    if let ProcessReport::Available {
        cpu_resolution_s: Some(resolution),
        cpu_window_s,
        ..
    } = &m.process
    {
        w.push(format!(
            "ingestion's process_cpu_seconds_total counts whole CPU seconds ({resolution} s resolution: metrics-process exports its counter truncated unless built with use-gauge-on-cpu-seconds-total): CPU per second is shown over {cpu_window_s} s windows, and the mean is good to ±{resolution} CPU s over the run"
        ));
    }
    for e in &m.monitor_errors {
        w.push(format!("reading ingestion during the run: {e}"));
    }
    w
}

pub(crate) fn write_json<T: Serialize>(value: &T, path: &Path) -> Result<(), Error> {
    let mut json = serde_json::to_vec_pretty(value).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e.into(),
    })?;
    json.push(b'\n');
    write_file(path, &json)
}

/// Writes `bytes` to `path`, creating its directory.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(path, bytes).map_err(io)
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
pub(crate) mod tests {
    use super::*;
    use crate::ramp::{Ramp, RampConfig, StageKind};
    use crate::source::Source;
    use crate::verify::Tally;
    use std::time::Duration;

    fn plan() -> Plan {
        Plan::new("abc", 1000, Duration::from_secs(1), 2, 1).unwrap()
    }

    fn published(rate: f64) -> PublishOutcome {
        PublishOutcome {
            connections: 2,
            messages_per_session: 500,
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
            broker_ack: Latency::default(),
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
        LatencyReport::Available {
            publish_to_commit: l,
            receive_to_commit: Some(l),
            points_committed: Some(1000),
            window_secs: 2.0,
        }
    }

    fn second(t: f64, p95: f64) -> Second {
        Second {
            t_s: t,
            dt_s: 1.0,
            target_rate: 1000,
            published_rate: 1000.0,
            acked_rate: 1000.0,
            committed_rate: Some(990.0),
            latency: Some(Latency {
                count: 990,
                p50_ms: p95 / 2.0,
                p95_ms: p95,
                p99_ms: p95 * 1.2,
                max_ms: p95 * 2.0,
            }),
            cpu_cores: Some(0.4),
            cpu_seconds: Some(t * 0.4),
            rss_bytes: Some(50e6),
            stage: None,
        }
    }

    /// A complete, passing run's measurements, for tests to vary.
    pub(crate) fn measured() -> Measured {
        Measured {
            started_at_ms: 0,
            mode: Mode::Fixed,
            plan: PlanReport::new(&plan(), 1.0),
            source: Source::Synthetic.report(),
            targets: Targets {
                mqtt: "mqtt://x".into(),
                postgres: "postgres://x/db".into(),
                ingestion: Some("http://127.0.0.1:4001".into()),
            },
            publish: published(999.0),
            verification: verified(0, 0),
            latency: latency(4.0),
            process: ProcessReport::Available {
                cpu_seconds: 0.8,
                cpu_cores_mean: Some(0.4),
                cpu_cores_peak: Some(0.5),
                cpu_resolution_s: None,
                cpu_window_s: 1.0,
                rss_peak_bytes: Some(52e6),
                rss_start_bytes: Some(40e6),
                rss_end_bytes: Some(50e6),
            },
            ramp: None,
            series: vec![second(1.0, 3.0), second(2.0, 4.5)],
            monitor_errors: vec![],
            fallback_backlog_points: Some(0),
        }
    }

    #[test]
    fn passes_only_when_every_target_is_met() {
        let ok = Report::new(measured());
        assert_eq!(ok.verdict, Verdict::Pass, "{}", ok.render());
        assert!(ok.warnings.is_empty(), "{:?}", ok.warnings);

        let cases = [
            Measured {
                latency: latency(10.0),
                ..measured()
            },
            Measured {
                verification: verified(1, 0),
                ..measured()
            },
            Measured {
                verification: verified(0, 1),
                ..measured()
            },
            Measured {
                publish: published(900.0),
                ..measured()
            },
            Measured {
                latency: LatencyReport::Unavailable {
                    reason: "no --ingestion given".into(),
                },
                ..measured()
            },
        ];
        for m in cases {
            let r = Report::new(m);
            assert_eq!(r.verdict, Verdict::Fail, "{}", r.render());
        }
    }

    #[test]
    fn the_summary_never_invents_latency() {
        let r = Report::new(Measured {
            latency: LatencyReport::Unavailable {
                reason: "no --ingestion given".into(),
            },
            ..measured()
        });
        let text = r.render();
        assert!(
            text.contains("latency       unavailable: no --ingestion given"),
            "{text}"
        );
        assert!(!text.contains("publish→commit   p50"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["latency"]["status"], "unavailable");
        assert_eq!(json["verdict"], "FAIL");
    }

    #[test]
    fn the_json_holds_the_series_the_process_and_the_method() {
        let r = Report::new(measured());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["series"].as_array().unwrap().len(), 2);
        assert_eq!(json["series"][1]["latency"]["p95_ms"], 4.5);
        assert_eq!(json["process"]["status"], "available");
        assert_eq!(json["process"]["rss_peak_bytes"], 52e6);
        assert_eq!(json["latency"]["publish_to_commit"]["p95_ms"], 4.0);
        assert!(json["method"][0].as_str().unwrap().contains("ts"));
        assert!(json.get("ramp").is_none());
        assert_eq!(json["mode"], "fixed");
        let text = r.render();
        assert!(text.contains("ingestion CPU 0.40 cores mean"), "{text}");
        assert!(text.contains("memory peak 49.6 MiB"), "{text}");
    }

    #[test]
    fn other_traffic_and_a_slow_publisher_are_called_out() {
        let r = Report::new(Measured {
            publish: published(500.0),
            latency: LatencyReport::Available {
                publish_to_commit: Latency::default(),
                receive_to_commit: None,
                points_committed: Some(1500),
                window_secs: 1.0,
            },
            ..measured()
        });
        assert!(
            r.warnings.iter().any(|w| w.contains("50.0 % below")),
            "{:?}",
            r.warnings
        );
        assert!(
            r.warnings.iter().any(|w| w.contains("500 points more")),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn a_ramp_passes_when_it_held_the_target_rate() {
        let mut ramp = Ramp::new(RampConfig {
            start: 800,
            bisect: 0,
            ..RampConfig::default()
        });
        let stage = |rate: u64, p95: f64| crate::ramp::Measured {
            achieved_rate: rate as f64,
            latency: Some(Latency {
                count: 100,
                p50_ms: 1.0,
                p95_ms: p95,
                p99_ms: p95,
                max_ms: p95,
            }),
            committed_rate: Some(rate as f64),
            backlog_points: Some(0),
        };
        ramp.record(StageKind::Step, 800, (2.0, 10.0), &stage(800, 3.0));
        ramp.record(StageKind::Step, 1000, (12.0, 20.0), &stage(1000, 5.0));
        ramp.record(StageKind::Step, 1250, (22.0, 30.0), &stage(1250, 12.0));
        let r = Report::new(Measured {
            mode: Mode::Ramp,
            ramp: Some(ramp.report()),
            // The publisher's average over a ramp is no criterion.
            publish: published(700.0),
            ..measured()
        });
        assert_eq!(r.verdict, Verdict::Pass, "{}", r.render());
        assert!(r.criteria[0].actual.contains("1000 points/s"));
        assert!(r.render().contains("highest rate held: 1000 points/s"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ramp"]["stages"].as_array().unwrap().len(), 3);
        assert_eq!(json["ramp"]["highest_rate_held"], 1000);
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
