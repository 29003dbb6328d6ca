//! The run as it happens, once a second: what the harness published and the broker
//! acknowledged, what ingestion committed, the exact publish→commit latency of the points
//! committed in that second, and ingestion's CPU and memory.
//!
//! Every figure of ingestion is read from its HTTP API ([`crate::ingestion`]), so this works
//! against any deployment, however long it has been running: the latency of one second is the
//! difference of two histogram snapshots, never a cumulative figure.

use std::time::Duration;

use serde::Serialize;

use crate::ingestion::{
    IngestionClient, IngestionStats, Latency, LatencyHistograms, ProcessSample,
};

/// Everything read at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Since the start of the run's clock.
    pub at: Duration,
    pub published: u64,
    pub acked: u64,
    pub stats: Result<IngestionStats, String>,
    pub latency: Result<LatencyHistograms, String>,
    pub process: Result<ProcessSample, String>,
}

/// Reads a snapshot of ingestion (all three endpoints at once). Without a client (no
/// `--ingestion`) the ingestion parts are errors.
pub async fn read(
    client: Option<&IngestionClient>,
    at: Duration,
    published: u64,
    acked: u64,
) -> Snapshot {
    let (stats, latency, process) = match client {
        Some(c) => tokio::join!(c.stats(), c.latency(), c.process()),
        None => {
            let none = "no --ingestion URL given".to_owned();
            (Err(none.clone()), Err(none.clone()), Err(none))
        }
    };
    Snapshot {
        at,
        published,
        acked,
        stats,
        latency,
        process,
    }
}

/// One interval of the series (about a second).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Second {
    /// End of the interval, in seconds since the start of the run.
    pub t_s: f64,
    pub dt_s: f64,
    /// The rate the harness was asked to publish at, at the end of the interval.
    pub target_rate: u64,
    /// Points per second handed to the broker.
    pub published_rate: f64,
    /// Points per second the broker acknowledged.
    pub acked_rate: f64,
    /// Points per second ingestion committed (all of its traffic).
    pub committed_rate: Option<f64>,
    /// Publish→commit latency of the points committed in this interval.
    pub latency: Option<Latency>,
    /// Cores of CPU the ingestion process used (over [`ProcessReport`]'s `cpu_window_s` when
    /// its CPU counter is too coarse for a single second).
    pub cpu_cores: Option<f64>,
    /// The process's CPU seconds since it started, as read.
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<f64>,
    /// The ramp stage this interval belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<u32>,
}

/// The interval between two snapshots.
pub fn interval(
    earlier: &Snapshot,
    later: &Snapshot,
    target_rate: u64,
    stage: Option<u32>,
) -> Second {
    let dt = later.at.saturating_sub(earlier.at).as_secs_f64().max(1e-3);
    let per_s = |a: u64, b: u64| b.saturating_sub(a) as f64 / dt;
    let committed_rate = match (&earlier.stats, &later.stats) {
        (Ok(a), Ok(b)) if b.points_committed >= a.points_committed => {
            Some(per_s(a.points_committed, b.points_committed))
        }
        _ => None,
    };
    let latency = match (&earlier.latency, &later.latency) {
        (Ok(a), Ok(b)) => b
            .since(a)
            .ok()
            .and_then(|d| Latency::of(&d.publish_to_commit)),
        _ => None,
    };
    let cpu_cores = match (&earlier.process, &later.process) {
        (Ok(a), Ok(b)) => match (a.cpu_seconds, b.cpu_seconds) {
            (Some(a), Some(b)) if b >= a => Some((b - a) / dt),
            _ => None,
        },
        _ => None,
    };
    Second {
        t_s: later.at.as_secs_f64(),
        dt_s: dt,
        target_rate,
        published_rate: per_s(earlier.published, later.published),
        acked_rate: per_s(earlier.acked, later.acked),
        committed_rate,
        latency,
        cpu_cores,
        cpu_seconds: later.process.as_ref().ok().and_then(|p| p.cpu_seconds),
        rss_bytes: later.process.as_ref().ok().and_then(|p| p.rss_bytes),
        stage,
    }
}

/// Ingestion's CPU and memory over the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ProcessReport {
    Available {
        /// CPU seconds the process used from the start of the run to the end of verification.
        cpu_seconds: f64,
        /// Mean cores used while the harness was publishing.
        cpu_cores_mean: Option<f64>,
        /// The busiest second (or window, see `cpu_window_s`).
        cpu_cores_peak: Option<f64>,
        /// The CPU counter's resolution, when it is coarse: `metrics-process` by default
        /// exports whole seconds, so one second reads 0 or 1 core.
        cpu_resolution_s: Option<f64>,
        /// The window each second's CPU figure is taken over (1 s unless the counter is coarse).
        cpu_window_s: f64,
        /// Highest resident memory seen (sampled once a second).
        rss_peak_bytes: Option<f64>,
        rss_start_bytes: Option<f64>,
        rss_end_bytes: Option<f64>,
    },
    Unavailable {
        reason: String,
    },
}

/// The window over which CPU is averaged when the counter only counts whole seconds: the
/// figure is then off by at most 1 / 10 core.
pub const COARSE_CPU_WINDOW_S: f64 = 10.0;

/// A counter that only ever read whole numbers is taken to have whole-second resolution.
fn coarse(values: impl Iterator<Item = f64>) -> bool {
    let mut any = false;
    for v in values {
        if v.fract() != 0.0 {
            return false;
        }
        any = true;
    }
    any
}

/// CPU and memory from the first and last snapshot and the series in between;
/// `publish_secs` bounds the mean to the seconds under load. With a coarse CPU counter each
/// second's figure in `series` is replaced by the mean over the [`COARSE_CPU_WINDOW_S`] ending
/// there.
pub fn process_report(
    first: &Snapshot,
    last: &Snapshot,
    series: &mut [Second],
    publish_secs: f64,
) -> ProcessReport {
    let (a, b) = match (&first.process, &last.process) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return ProcessReport::Unavailable { reason: e.clone() };
        }
    };
    let (Some(cpu_a), Some(cpu_b)) = (a.cpu_seconds, b.cpu_seconds) else {
        return ProcessReport::Unavailable {
            reason: "ingestion's /metrics has no process_cpu_seconds_total".into(),
        };
    };
    let is_coarse = coarse(
        [cpu_a, cpu_b]
            .into_iter()
            .chain(series.iter().filter_map(|s| s.cpu_seconds)),
    );
    let window = if is_coarse { COARSE_CPU_WINDOW_S } else { 1.0 };
    if is_coarse {
        // (t, cpu seconds) of every reading, the start of the run first.
        let readings: Vec<(f64, f64)> = std::iter::once((first.at.as_secs_f64(), cpu_a))
            .chain(
                series
                    .iter()
                    .filter_map(|s| s.cpu_seconds.map(|c| (s.t_s, c))),
            )
            .collect();
        for s in series.iter_mut() {
            let Some(now) = s.cpu_seconds else { continue };
            let from = readings
                .iter()
                .rev()
                .find(|(t, _)| *t <= s.t_s - window)
                .unwrap_or(&readings[0]);
            let span = s.t_s - from.0;
            s.cpu_cores = (span > 0.0 && now >= from.1).then(|| (now - from.1) / span);
        }
    }
    // Under load: from the start to the first reading after the last publish.
    let end_of_load = series
        .iter()
        .find(|s| s.t_s >= publish_secs && s.cpu_seconds.is_some())
        .or_else(|| series.iter().rev().find(|s| s.cpu_seconds.is_some()));
    let cpu_cores_mean = end_of_load.and_then(|s| {
        let span = s.t_s - first.at.as_secs_f64();
        let used = s.cpu_seconds? - cpu_a;
        (span > 0.0 && used >= 0.0).then(|| used / span)
    });
    let max = |values: &mut dyn Iterator<Item = f64>| values.reduce(f64::max);
    ProcessReport::Available {
        cpu_seconds: (cpu_b - cpu_a).max(0.0),
        cpu_cores_mean,
        cpu_cores_peak: max(&mut series.iter().filter_map(|s| s.cpu_cores)),
        cpu_resolution_s: is_coarse.then_some(1.0),
        cpu_window_s: window,
        rss_peak_bytes: max(&mut [a.rss_bytes, b.rss_bytes]
            .into_iter()
            .flatten()
            .chain(series.iter().filter_map(|s| s.rss_bytes))),
        rss_start_bytes: a.rss_bytes,
        rss_end_bytes: b.rss_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::Histogram;

    fn hist(values: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for &v in values {
            h.record(v).unwrap();
        }
        h
    }

    fn snapshot(
        at_ms: u64,
        published: u64,
        committed: u64,
        lat: &[u64],
        cpu: f64,
        rss: f64,
    ) -> Snapshot {
        Snapshot {
            at: Duration::from_millis(at_ms),
            published,
            acked: published,
            stats: Ok(IngestionStats {
                uptime_s: None,
                points_committed: committed,
                points_duplicate: None,
                points_fallback: None,
                write_failures: None,
                fallback_backlog_points: None,
                publish_to_commit: Latency::default(),
                receive_to_commit: Latency::default(),
            }),
            latency: Ok(LatencyHistograms {
                publish_to_commit: hist(lat),
                receive_to_commit: hist(&[]),
            }),
            process: Ok(ProcessSample {
                cpu_seconds: Some(cpu),
                rss_bytes: Some(rss),
            }),
        }
    }

    #[test]
    fn an_interval_holds_only_what_happened_in_it() {
        let old: Vec<u64> = vec![90_000; 1000];
        let mut now = old.clone();
        now.extend([1000, 1200, 1500, 2000]);
        let a = snapshot(1000, 10_000, 5_000, &old, 10.0, 1e6);
        let b = snapshot(1500, 15_000, 7_500, &now, 10.25, 2e6);
        let s = interval(&a, &b, 10_000, Some(2));
        assert_eq!(s.t_s, 1.5);
        assert_eq!(s.published_rate, 10_000.0);
        assert_eq!(s.committed_rate, Some(5_000.0));
        assert_eq!(s.cpu_cores, Some(0.5));
        assert_eq!(s.rss_bytes, Some(2e6));
        let l = s.latency.unwrap();
        assert_eq!((l.count, l.p50_ms, l.max_ms), (4, 1.2, 2.0));
        // Nothing committed: no latency rather than a zero.
        assert_eq!(interval(&b, &b, 0, None).latency, None);
    }

    fn second(t: f64, cpu_total: f64, rss: f64) -> Second {
        Second {
            t_s: t,
            dt_s: 1.0,
            target_rate: 0,
            published_rate: 0.0,
            acked_rate: 0.0,
            committed_rate: None,
            latency: None,
            cpu_cores: None,
            cpu_seconds: Some(cpu_total),
            rss_bytes: Some(rss),
            stage: None,
        }
    }

    #[test]
    fn cpu_and_memory_over_the_run() {
        let first = snapshot(0, 0, 0, &[], 10.0, 1e6);
        let last = snapshot(4000, 0, 0, &[], 11.7, 1.5e6);
        let mut series = [
            second(1.0, 10.5, 2e6),
            second(2.0, 11.25, 3e6),
            second(3.0, 11.55, 2.5e6),
            second(4.0, 11.7, 1.5e6),
        ];
        for i in 0..series.len() {
            let before = if i == 0 {
                10.0
            } else {
                series[i - 1].cpu_seconds.unwrap()
            };
            series[i].cpu_cores = Some(series[i].cpu_seconds.unwrap() - before);
        }
        let ProcessReport::Available {
            cpu_seconds,
            cpu_cores_mean,
            cpu_cores_peak,
            cpu_resolution_s,
            cpu_window_s,
            rss_peak_bytes,
            ..
        } = process_report(&first, &last, &mut series, 2.0)
        else {
            panic!("available");
        };
        assert!((cpu_seconds - 1.7).abs() < 1e-9);
        // Under load: 1.25 CPU seconds in the first 2 s.
        assert!((cpu_cores_mean.unwrap() - 0.625).abs() < 1e-9);
        assert_eq!(cpu_cores_peak, Some(0.75));
        assert_eq!((cpu_resolution_s, cpu_window_s), (None, 1.0));
        assert_eq!(rss_peak_bytes, Some(3e6));
        let mut broken = last.clone();
        broken.process = Err("GET /metrics: HTTP 404".into());
        assert!(matches!(
            process_report(&first, &broken, &mut series, 2.0),
            ProcessReport::Unavailable { .. }
        ));
    }

    #[test]
    fn a_whole_second_cpu_counter_is_averaged_over_ten_seconds() {
        // Half a core for 20 s, read through a counter that truncates to whole seconds.
        let first = snapshot(0, 0, 0, &[], 100.0, 1e6);
        let last = snapshot(20_000, 0, 0, &[], 110.0, 1e6);
        let mut series: Vec<Second> = (1..=20)
            .map(|t| second(f64::from(t), 100.0 + (f64::from(t) * 0.5).floor(), 1e6))
            .collect();
        let report = process_report(&first, &last, &mut series, 20.0);
        let ProcessReport::Available {
            cpu_cores_mean,
            cpu_resolution_s,
            cpu_window_s,
            ..
        } = report
        else {
            panic!("available");
        };
        assert_eq!((cpu_resolution_s, cpu_window_s), (Some(1.0), 10.0));
        assert_eq!(cpu_cores_mean, Some(0.5));
        for s in &series[9..] {
            let c = s.cpu_cores.unwrap();
            assert!((c - 0.5).abs() <= 0.1, "{} s: {c}", s.t_s);
        }
    }
}
