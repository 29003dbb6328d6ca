//! The process-wide Prometheus registry and HDR-histogram export.
//!
//! Counters and gauges go through the `metrics` facade (each crate emits them from its own
//! `metrics` module). Latency distributions that must be exact — publish-to-commit — are kept in
//! HDR histograms by their owner and rendered here as Prometheus histograms (cumulative `le`
//! buckets, aggregatable across replicas, unlike summaries).

use std::fmt::Write as _;
use std::sync::OnceLock;

use hdrhistogram::Histogram;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The standard Prometheus process metrics (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, …): what the load harness reads to report a service's CPU
/// and memory, and what an operator graphs next to the service's own metrics.
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Bucket bounds in seconds for latency histograms: fine below 10 ms, where the targets are.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
];

/// The Prometheus handle, installing the global recorder on first use. If another recorder was
/// installed first (e.g. by a test), a detached one is used so rendering still works.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = || {
            PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS_SECONDS)
                .unwrap_or_else(|_| PrometheusBuilder::new())
        };
        builder()
            .install_recorder()
            .unwrap_or_else(|_| builder().build_recorder().handle())
    })
}

/// Renders the registry (after sampling the process and draining histogram samples into their
/// buckets).
pub fn render() -> String {
    let handle = prometheus();
    PROCESS
        .get_or_init(|| {
            let collector = metrics_process::Collector::default();
            collector.describe();
            collector
        })
        .collect();
    handle.run_upkeep();
    handle.render()
}

/// Appends `hist` (values in microseconds) to `out` as a Prometheus histogram in seconds.
pub fn render_hdr_histogram(out: &mut String, name: &str, help: &str, hist: &Histogram<u64>) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for le in LATENCY_BUCKETS_SECONDS {
        let bound_us = (le * 1e6) as u64;
        let count: u64 = if hist.is_empty() {
            0
        } else {
            hist.iter_recorded()
                .take_while(|v| v.value_iterated_to() <= bound_us)
                .map(|v| v.count_at_value())
                .sum()
        };
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", hist.len());
    let sum_s = hist.mean() * hist.len() as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum {sum_s}");
    let _ = writeln!(out, "{name}_count {}", hist.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hdr_histogram_renders_as_cumulative_buckets() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for us in [400, 900, 4_000, 4_000, 2_000_000] {
            h.record(us).unwrap();
        }
        let mut out = String::new();
        render_hdr_histogram(&mut out, "x_seconds", "test", &h);
        let scrape =
            prometheus_parse::Scrape::parse(out.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let buckets: Vec<(f64, f64)> = scrape
            .samples
            .iter()
            .find_map(|s| match &s.value {
                prometheus_parse::Value::Histogram(b) => {
                    Some(b.iter().map(|b| (b.less_than, b.count)).collect())
                }
                _ => None,
            })
            .unwrap();
        let at = |le: f64| buckets.iter().find(|(l, _)| *l == le).unwrap().1;
        assert_eq!(at(0.0005), 1.0);
        assert_eq!(at(0.001), 2.0);
        assert_eq!(at(0.005), 4.0);
        assert_eq!(at(2.5), 5.0);
    }
}
