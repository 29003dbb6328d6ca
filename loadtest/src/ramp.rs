//! `--ramp`: the highest rate that still holds p95 publish→commit < 10 ms.
//!
//! The load steps up stage by stage without a break (start, then +N % a stage). Each stage is
//! judged on its window — the stage less a short warm-up, so that points of the previous rate
//! still in flight do not count — from the exact difference of ingestion's latency histograms
//! at the window's two ends. The ramp stops at the first stage that does not hold; it can then
//! bisect between the last rate that held and the first that did not, after letting the backlog
//! of the failed stage drain. [`Ramp`] is the decision logic alone (no I/O), so it is tested on
//! its own; the run drives it once per stage.

use std::time::Duration;

use serde::Serialize;

use crate::ingestion::Latency;
use crate::report::{P95_TARGET_MS, RATE_TOLERANCE};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RampConfig {
    /// Rate of the first stage, points/s.
    pub start: u64,
    /// Each stage this much faster than the one before, in percent.
    pub step_percent: f64,
    #[serde(serialize_with = "secs")]
    pub stage: Duration,
    /// The start of each stage left out of its judgement.
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    /// No stage above this rate.
    pub max_rate: u64,
    /// Stages spent narrowing down between the last good and the first bad rate.
    pub bisect: u32,
    /// At most this many stages in all.
    pub max_stages: u32,
    pub p95_target_ms: f64,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Default for RampConfig {
    fn default() -> Self {
        RampConfig {
            start: 5_000,
            step_percent: 25.0,
            stage: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            max_rate: 200_000,
            bisect: 2,
            max_stages: 30,
            p95_target_ms: P95_TARGET_MS,
        }
    }
}

impl RampConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.start == 0 {
            return Err("--ramp-start must be at least 1 point/s".into());
        }
        if self.step_percent.is_nan() || self.step_percent <= 0.0 {
            return Err("--ramp-step must be a positive percentage".into());
        }
        if self.warmup >= self.stage {
            return Err("--ramp-warmup must be shorter than --ramp-stage".into());
        }
        if self.stage.saturating_sub(self.warmup) < Duration::from_secs(1) {
            return Err("a ramp stage needs at least 1 s after its warm-up".into());
        }
        if self.max_rate < self.start {
            return Err("--ramp-max must be at least --ramp-start".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// A step up.
    Step,
    /// A rate between the last that held and the first that did not.
    Bisect,
}

/// What was measured over a stage's window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Measured {
    /// Points published in the window, per second.
    pub achieved_rate: f64,
    /// Publish→commit latency of the points committed in the window.
    pub latency: Option<Latency>,
    /// Points committed by ingestion in the window, per second.
    pub committed_rate: Option<f64>,
    /// Points published but not yet committed at the end of the stage.
    pub backlog_points: Option<u64>,
}

/// One stage, as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    pub index: u32,
    pub kind: StageKind,
    pub rate: u64,
    /// The judged window, in seconds since the start of the run.
    pub window_start_s: f64,
    pub window_end_s: f64,
    pub achieved_rate: f64,
    pub committed_rate: Option<f64>,
    pub latency: Option<Latency>,
    pub backlog_points: Option<u64>,
    pub held: bool,
    pub reason: String,
    /// The harness, not ingestion, failed to offer the rate.
    pub harness_limited: bool,
}

/// Whether a stage at `rate` held, and why (or why not).
pub fn judge(config: &RampConfig, rate: u64, m: &Measured) -> (bool, bool, String) {
    let floor = rate as f64 * (1.0 - RATE_TOLERANCE);
    if m.achieved_rate < floor {
        return (
            false,
            true,
            format!(
                "the harness published only {:.0} of {rate} points/s: the publisher, not ingestion, was the limit",
                m.achieved_rate
            ),
        );
    }
    let Some(latency) = m.latency else {
        return (
            false,
            false,
            "ingestion committed no point in the stage window".into(),
        );
    };
    if latency.p95_ms >= config.p95_target_ms {
        return (
            false,
            false,
            format!("p95 {:.2} ms ≥ {} ms", latency.p95_ms, config.p95_target_ms),
        );
    }
    // More than a second of load published but not committed: ingestion is falling behind,
    // whatever the percentiles of what it did commit say.
    if let Some(backlog) = m.backlog_points
        && backlog > rate
    {
        return (
            false,
            false,
            format!(
                "ingestion fell behind: {backlog} points published but not yet committed at the end of the stage"
            ),
        );
    }
    (
        true,
        false,
        format!("p95 {:.2} ms < {} ms", latency.p95_ms, config.p95_target_ms),
    )
}

/// What to do after a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Stage {
        rate: u64,
        kind: StageKind,
        /// Pause the load until the backlog of a failed stage has drained, so that it is not
        /// blamed on the next one.
        drain_first: bool,
    },
    Done,
}

/// The ramp's decisions.
#[derive(Debug, Clone)]
pub struct Ramp {
    config: RampConfig,
    stages: Vec<Stage>,
    good: Option<u64>,
    bad: Option<u64>,
    bisects: u32,
    stop_reason: Option<String>,
}

/// The ramp's result, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RampReport {
    pub config: RampConfig,
    pub stages: Vec<Stage>,
    /// The highest stage rate whose p95 stayed under the target (and that ingestion kept up
    /// with); `None` when not even the first stage held.
    pub highest_rate_held: Option<u64>,
    /// The lowest stage rate that did not hold.
    pub lowest_rate_failed: Option<u64>,
    pub stop_reason: String,
}

/// Rates are rounded to tens of points/s: finer steps mean nothing at these loads.
fn round10(rate: f64) -> u64 {
    ((rate / 10.0).round() as u64 * 10).max(1)
}

impl Ramp {
    pub fn new(config: RampConfig) -> Self {
        Ramp {
            config,
            stages: Vec::new(),
            good: None,
            bad: None,
            bisects: 0,
            stop_reason: None,
        }
    }

    pub fn config(&self) -> &RampConfig {
        &self.config
    }

    pub fn first_rate(&self) -> u64 {
        self.config.start
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Judges a finished stage and says what comes next.
    pub fn record(
        &mut self,
        kind: StageKind,
        rate: u64,
        window: (f64, f64),
        measured: &Measured,
    ) -> Next {
        let (held, harness_limited, reason) = judge(&self.config, rate, measured);
        self.stages.push(Stage {
            index: self.stages.len() as u32,
            kind,
            rate,
            window_start_s: window.0,
            window_end_s: window.1,
            achieved_rate: measured.achieved_rate,
            committed_rate: measured.committed_rate,
            latency: measured.latency,
            backlog_points: measured.backlog_points,
            held,
            reason: reason.clone(),
            harness_limited,
        });
        if held {
            self.good = Some(self.good.map_or(rate, |g| g.max(rate)));
        } else {
            self.bad = Some(self.bad.map_or(rate, |b| b.min(rate)));
            if self.stop_reason.is_none() {
                self.stop_reason = Some(format!("{rate} points/s did not hold: {reason}"));
            }
        }
        if self.stages.len() as u32 >= self.config.max_stages {
            self.stop_reason
                .get_or_insert_with(|| format!("stopped after {} stages", self.config.max_stages));
            return Next::Done;
        }
        if self.bad.is_none() {
            if rate >= self.config.max_rate {
                self.stop_reason = Some(format!(
                    "held up to --ramp-max ({} points/s)",
                    self.config.max_rate
                ));
                return Next::Done;
            }
            let next = round10(rate as f64 * (1.0 + self.config.step_percent / 100.0))
                .max(rate + 10)
                .min(self.config.max_rate);
            return Next::Stage {
                rate: next,
                kind: StageKind::Step,
                drain_first: false,
            };
        }
        self.bisect_next(held)
    }

    fn bisect_next(&mut self, last_held: bool) -> Next {
        let (Some(good), Some(bad)) = (self.good, self.bad) else {
            return Next::Done;
        };
        // Within 2 %: another stage would not tell the two apart.
        if self.bisects >= self.config.bisect || bad <= good || bad - good <= (good / 50).max(10) {
            return Next::Done;
        }
        self.bisects += 1;
        Next::Stage {
            rate: round10((good + bad) as f64 / 2.0),
            kind: StageKind::Bisect,
            drain_first: !last_held,
        }
    }

    pub fn report(&self) -> RampReport {
        RampReport {
            config: self.config.clone(),
            stages: self.stages.clone(),
            highest_rate_held: self.good,
            lowest_rate_failed: self.bad,
            stop_reason: self
                .stop_reason
                .clone()
                .unwrap_or_else(|| "the ramp was interrupted".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(rate: u64, p95_ms: f64) -> Measured {
        Measured {
            achieved_rate: rate as f64,
            latency: Some(Latency {
                count: rate * 8,
                p50_ms: p95_ms / 3.0,
                p95_ms,
                p99_ms: p95_ms * 1.5,
                max_ms: p95_ms * 3.0,
            }),
            committed_rate: Some(rate as f64),
            backlog_points: Some(rate / 100),
        }
    }

    /// Drives a ramp against an ingestion whose p95 grows with the rate and crosses 10 ms at
    /// `limit` points/s; returns the rates of the stages run.
    fn drive(config: RampConfig, limit: u64) -> (Vec<(u64, StageKind, bool)>, RampReport) {
        let mut ramp = Ramp::new(config);
        let mut rate = ramp.first_rate();
        let mut kind = StageKind::Step;
        let mut seen = Vec::new();
        loop {
            let p95 = 10.0 * rate as f64 / limit as f64;
            let next = ramp.record(kind, rate, (0.0, 1.0), &measured(rate, p95));
            let held = ramp.stages().last().unwrap().held;
            seen.push((rate, kind, held));
            match next {
                Next::Stage {
                    rate: r,
                    kind: k,
                    drain_first,
                } => {
                    assert_eq!(drain_first, !held && k == StageKind::Bisect);
                    rate = r;
                    kind = k;
                }
                Next::Done => return (seen, ramp.report()),
            }
        }
    }

    #[test]
    fn steps_up_by_a_quarter_until_p95_reaches_the_target_then_bisects() {
        let (stages, report) = drive(RampConfig::default(), 12_000);
        let rates: Vec<u64> = stages.iter().map(|s| s.0).collect();
        // 5000, +25 % a stage: 6250, 7810, 9760, 12200 (fails); then between 9760 and 12200.
        assert_eq!(rates, vec![5000, 6250, 7810, 9760, 12_200, 10_980, 11_590]);
        assert_eq!(
            stages.iter().map(|s| s.2).collect::<Vec<_>>(),
            vec![true, true, true, true, false, true, true]
        );
        assert_eq!(stages[5].1, StageKind::Bisect);
        assert_eq!(report.highest_rate_held, Some(11_590));
        assert_eq!(report.lowest_rate_failed, Some(12_200));
        assert!(
            report.stop_reason.contains("12200"),
            "{}",
            report.stop_reason
        );
    }

    #[test]
    fn without_bisecting_the_first_failure_ends_the_ramp() {
        let config = RampConfig {
            bisect: 0,
            ..RampConfig::default()
        };
        let (stages, report) = drive(config, 7000);
        assert_eq!(stages.len(), 3);
        assert_eq!(report.highest_rate_held, Some(6250));
        assert_eq!(report.lowest_rate_failed, Some(7810));
    }

    #[test]
    fn a_first_stage_that_fails_holds_nothing() {
        let (stages, report) = drive(RampConfig::default(), 1000);
        assert_eq!(stages.len(), 1);
        assert_eq!(report.highest_rate_held, None);
    }

    #[test]
    fn stops_at_the_maximum_rate() {
        let config = RampConfig {
            max_rate: 8000,
            ..RampConfig::default()
        };
        let (stages, report) = drive(config, 1_000_000);
        let rates: Vec<u64> = stages.iter().map(|s| s.0).collect();
        assert_eq!(rates, vec![5000, 6250, 7810, 8000]);
        assert_eq!(report.highest_rate_held, Some(8000));
        assert!(report.stop_reason.contains("--ramp-max"));
    }

    #[test]
    fn a_stage_holds_only_with_low_latency_the_full_rate_and_no_backlog() {
        let config = RampConfig::default();
        assert!(judge(&config, 10_000, &measured(10_000, 9.9)).0);
        assert!(!judge(&config, 10_000, &measured(10_000, 10.0)).0);
        let slow_harness = Measured {
            achieved_rate: 9000.0,
            ..measured(10_000, 2.0)
        };
        let (held, harness, why) = judge(&config, 10_000, &slow_harness);
        assert!(!held && harness, "{why}");
        let behind = Measured {
            backlog_points: Some(25_000),
            ..measured(10_000, 2.0)
        };
        let (held, harness, why) = judge(&config, 10_000, &behind);
        assert!(!held && !harness && why.contains("behind"), "{why}");
        let nothing = Measured {
            latency: None,
            ..measured(10_000, 2.0)
        };
        assert!(!judge(&config, 10_000, &nothing).0);
    }

    #[test]
    fn refuses_unusable_configurations() {
        assert!(RampConfig::default().validate().is_ok());
        let bad = [
            RampConfig {
                start: 0,
                ..RampConfig::default()
            },
            RampConfig {
                step_percent: 0.0,
                ..RampConfig::default()
            },
            RampConfig {
                warmup: Duration::from_secs(10),
                ..RampConfig::default()
            },
            RampConfig {
                max_rate: 100,
                ..RampConfig::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
