//! The process-wide Prometheus registry, the kit's own metrics, and exposition by hand.
//!
//! Counters and gauges go through the `metrics` facade, each crate emitting its own from its
//! `metrics` module (the kit's own are the HTTP layer's, `simcorp_http_*`). Latency
//! distributions that must be exact — publish-to-commit — are kept in HDR histograms by their
//! owner and rendered with [`render_hdr_histogram`] as Prometheus histograms (cumulative `le`
//! buckets, aggregatable across replicas, unlike summaries); counters an owner keeps in its own
//! atomics are rendered with [`render_counter`]. The standard `process_*` metrics are rendered
//! here too, by hand: the facade's counters are integers, and CPU seconds must stay fractional.

use std::fmt::Write as _;
use std::sync::OnceLock;

use hdrhistogram::Histogram;
use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Bucket bounds in seconds for latency histograms: fine below 10 ms, where the targets are.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
];

const HTTP_REQUESTS: &str = "simcorp_http_requests_total";
const HTTP_REQUEST_DURATION: &str = "simcorp_http_request_duration_seconds";

/// The Prometheus handle, installing the global recorder on first use. If another recorder was
/// installed first (e.g. by a test), a detached one is used so rendering still works.
///
/// Whatever is recorded or described before this runs is lost, so services call it (through
/// `kit::service::run_as`) before anything else.
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

/// Describes the kit's metrics: those of the HTTP layer every service has.
pub fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests answered, by service, route and status."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "Time to answer an HTTP request, by service and route."
    );
}

/// One HTTP request answered (`route`: the matched route, never the raw path, which would give
/// a series per id).
pub(crate) fn request(service: &'static str, route: String, status: u16, seconds: f64) {
    let status = status.to_string();
    counter!(HTTP_REQUESTS, "service" => service, "route" => route.clone(), "status" => status)
        .increment(1);
    histogram!(HTTP_REQUEST_DURATION, "service" => service, "route" => route).record(seconds);
}

/// Renders the registry (after draining histogram samples into their buckets), then the
/// process metrics.
pub fn render() -> String {
    let handle = prometheus();
    handle.run_upkeep();
    let mut out = handle.render();
    render_process(&mut out);
    out
}

/// The standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// …): what the load harness reads to report a service's CPU and memory, and what an operator
/// graphs next to the service's own metrics.
fn render_process(out: &mut String) {
    let m = metrics_process::collector::collect();
    if let Some(v) = m.cpu_seconds_total {
        render_family(
            out,
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            "counter",
            &[("", v)],
        );
    }
    let gauges = [
        (
            "process_open_fds",
            "Number of open file descriptors.",
            m.open_fds,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            m.max_fds,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            m.virtual_memory_bytes,
        ),
        (
            "process_virtual_memory_max_bytes",
            "Maximum amount of virtual memory available in bytes.",
            m.virtual_memory_max_bytes,
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            m.resident_memory_bytes,
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            m.start_time_seconds,
        ),
        (
            "process_threads",
            "Number of OS threads in the process.",
            m.threads,
        ),
    ];
    for (name, help, value) in gauges {
        if let Some(v) = value {
            render_family(out, name, help, "gauge", &[("", v as f64)]);
        }
    }
}

/// Appends a counter its owner keeps itself (an atomic) to `out`: one sample per label set
/// (`labels` as exposition text, e.g. `destination="primary"`, or empty).
pub fn render_counter(out: &mut String, name: &str, help: &str, samples: &[(&str, u64)]) {
    let samples: Vec<(&str, f64)> = samples.iter().map(|&(l, v)| (l, v as f64)).collect();
    render_family(out, name, help, "counter", &samples);
}

fn render_family(out: &mut String, name: &str, help: &str, kind: &str, samples: &[(&str, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Appends `hist` (latencies in microseconds) to `out` as a Prometheus histogram in seconds,
/// with [`LATENCY_BUCKETS_SECONDS`].
pub fn render_hdr_latency(out: &mut String, name: &str, help: &str, hist: &Histogram<u64>) {
    render_hdr_histogram(out, name, help, hist, LATENCY_BUCKETS_SECONDS, 1e6);
}

/// Appends `hist` to `out` as a Prometheus histogram with upper bounds `buckets`, in the unit of
/// the metric's name; `per_unit` recorded values make one of that unit (1e6 for microseconds
/// exposed as seconds, 1 for counts).
pub fn render_hdr_histogram(
    out: &mut String,
    name: &str,
    help: &str,
    hist: &Histogram<u64>,
    buckets: &[f64],
    per_unit: f64,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for le in buckets {
        let bound = (le * per_unit) as u64;
        let count: u64 = if hist.is_empty() {
            0
        } else {
            hist.iter_recorded()
                .take_while(|v| v.value_iterated_to() <= bound)
                .map(|v| v.count_at_value())
                .sum()
        };
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", hist.len());
    let sum = hist.mean() * hist.len() as f64 / per_unit;
    let _ = writeln!(out, "{name}_sum {sum}");
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
        render_hdr_latency(&mut out, "x_seconds", "test", &h);
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
