//! What the harness reads from ingestion's HTTP API: `GET /stats` (counters), `GET
//! /stats/latency` (the latency histograms themselves) and `GET /metrics` (the process's CPU
//! and memory).
//!
//! Latency is measured inside ingestion (HDR histograms from each point's `ts` to the commit of
//! its batch) rather than here, because only ingestion knows when a batch committed. The
//! histograms are cumulative since ingestion started; the harness takes a snapshot every second
//! and subtracts the previous one ([`LatencyHistograms::since`]), which gives the exact
//! distribution of every second, and of the whole run, however long ingestion has been up.

use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use serde::{Deserialize, Serialize};

/// Percentiles of one latency distribution, in milliseconds, as ingestion reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The part of ingestion's `/stats` a load test reads. Fields beyond the required three are
/// optional so that the harness keeps working while ingestion's answer grows or changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IngestionStats {
    pub uptime_s: Option<u64>,
    pub points_committed: u64,
    pub points_duplicate: Option<u64>,
    /// Points written to the local fallback store instead of PostgreSQL: invisible to the
    /// database check until ingestion drains them.
    pub points_fallback: Option<u64>,
    pub write_failures: Option<u64>,
    pub fallback_backlog_points: Option<u64>,
    pub publish_to_commit: Latency,
    pub receive_to_commit: Latency,
}

#[derive(Deserialize)]
struct Wire {
    uptime_s: Option<u64>,
    pipeline: WirePipeline,
    store: Option<WireStore>,
}

#[derive(Deserialize)]
struct WirePipeline {
    points_committed: u64,
    points_duplicate: Option<u64>,
    points_fallback: Option<u64>,
    write_failures: Option<u64>,
    publish_to_commit: Latency,
    receive_to_commit: Latency,
}

#[derive(Deserialize)]
struct WireStore {
    fallback_backlog_points: Option<u64>,
}

/// Reads ingestion's `/stats` body.
pub fn parse_stats(body: &[u8]) -> Result<IngestionStats, String> {
    let wire: Wire = serde_json::from_slice(body)
        .map_err(|e| format!("unexpected /stats answer from ingestion: {e}"))?;
    Ok(IngestionStats {
        uptime_s: wire.uptime_s,
        points_committed: wire.pipeline.points_committed,
        points_duplicate: wire.pipeline.points_duplicate,
        points_fallback: wire.pipeline.points_fallback,
        write_failures: wire.pipeline.write_failures,
        fallback_backlog_points: wire.store.and_then(|s| s.fallback_backlog_points),
        publish_to_commit: wire.pipeline.publish_to_commit,
        receive_to_commit: wire.pipeline.receive_to_commit,
    })
}

#[derive(Debug, Clone)]
pub struct IngestionClient {
    http: reqwest::Client,
    base: String,
}

/// Latency from one histogram: `None` without a single value.
impl Latency {
    /// Percentiles of `h` (values in microseconds), in milliseconds as ingestion reports them.
    pub fn of(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Latency {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        })
    }
}

/// Ingestion's latency histograms at one moment (microseconds, cumulative since it started).
#[derive(Debug, Clone)]
pub struct LatencyHistograms {
    pub publish_to_commit: Histogram<u64>,
    pub receive_to_commit: Histogram<u64>,
}

/// A later snapshot holds fewer values than an earlier one: ingestion restarted in between.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ingestion's latency histograms shrank (it restarted?): {0}")]
pub struct Restarted(String);

impl LatencyHistograms {
    /// The values recorded between `earlier` and `self`: exact, because an HDR histogram is a
    /// set of counters and both snapshots have the same buckets.
    pub fn since(&self, earlier: &LatencyHistograms) -> Result<LatencyHistograms, Restarted> {
        let diff = |later: &Histogram<u64>, earlier: &Histogram<u64>| {
            if later.len() < earlier.len() {
                return Err(Restarted(format!(
                    "{} values now, {} before",
                    later.len(),
                    earlier.len()
                )));
            }
            let mut d = later.clone();
            d.subtract(earlier)
                .map_err(|e| Restarted(format!("{e:?}")))?;
            Ok(d)
        };
        Ok(LatencyHistograms {
            publish_to_commit: diff(&self.publish_to_commit, &earlier.publish_to_commit)?,
            receive_to_commit: diff(&self.receive_to_commit, &earlier.receive_to_commit)?,
        })
    }
}

#[derive(Deserialize)]
struct WireLatency {
    unit: String,
    publish_to_commit: String,
    receive_to_commit: String,
}

/// Reads ingestion's `/stats/latency` body: `{"unit":"us","publish_to_commit":"<base64 of HDR
/// V2 deflate>","receive_to_commit":…}`.
pub fn parse_latency(body: &[u8]) -> Result<LatencyHistograms, String> {
    let wire: WireLatency = serde_json::from_slice(body)
        .map_err(|e| format!("unexpected /stats/latency answer from ingestion: {e}"))?;
    if wire.unit != "us" {
        return Err(format!(
            "/stats/latency: unit {:?}, expected \"us\"",
            wire.unit
        ));
    }
    let decode = |name: &str, text: &str| -> Result<Histogram<u64>, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("/stats/latency {name}: not base64: {e}"))?;
        Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| format!("/stats/latency {name}: not an HDR histogram: {e:?}"))
    };
    Ok(LatencyHistograms {
        publish_to_commit: decode("publish_to_commit", &wire.publish_to_commit)?,
        receive_to_commit: decode("receive_to_commit", &wire.receive_to_commit)?,
    })
}

/// The ingestion process's own figures, from the standard Prometheus process metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcessSample {
    /// `process_cpu_seconds_total`: CPU time (user + system) since the process started.
    pub cpu_seconds: Option<f64>,
    /// `process_resident_memory_bytes`.
    pub rss_bytes: Option<f64>,
}

/// Reads the process metrics out of `/metrics` (Prometheus text).
pub fn parse_process(text: &str) -> Result<ProcessSample, String> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .map_err(|e| format!("/metrics is not Prometheus text: {e}"))?;
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .and_then(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            })
    };
    Ok(ProcessSample {
        cpu_seconds: value("process_cpu_seconds_total"),
        rss_bytes: value("process_resident_memory_bytes"),
    })
}

impl IngestionClient {
    /// A client for ingestion's HTTP API at `base` (e.g. `http://127.0.0.1:4001`).
    pub fn new(base: &str) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let base = base.trim_end_matches('/');
        url::Url::parse(base).map_err(|e| format!("--ingestion {base:?}: {e}"))?;
        Ok(IngestionClient {
            http,
            base: base.to_owned(),
        })
    }

    pub async fn stats(&self) -> Result<IngestionStats, String> {
        parse_stats(&self.get("/stats").await?)
    }

    pub async fn latency(&self) -> Result<LatencyHistograms, String> {
        parse_latency(&self.get("/stats/latency").await?)
    }

    pub async fn process(&self) -> Result<ProcessSample, String> {
        let body = self.get("/metrics").await?;
        parse_process(&String::from_utf8_lossy(&body))
    }

    async fn get(&self, path: &str) -> Result<Vec<u8>, String> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| format!("GET {url}: {}", chain(&e)))
    }
}

/// An error with its causes: reqwest's own message ("error sending request") hides the reason
/// (connection refused, timeout) in its source.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ingestions_stats_answer() {
        let body = br#"{
            "uptime_s": 75,
            "pipeline": {
                "messages_in": 10, "points_in": 10, "queue_depth": 0, "batches": 2,
                "points_committed": 10, "points_fallback": 0, "points_duplicate": 1,
                "sessions_committed": 0, "events_committed": 0, "dead_letters_committed": 0, "write_failures": 0,
                "acks_released": 10, "mean_batch_records": 5.0,
                "publish_to_commit": {"count": 10, "p50_ms": 1.5, "p95_ms": 3.25, "p99_ms": 4.0, "max_ms": 9.0},
                "receive_to_commit": {"count": 10, "p50_ms": 0.5, "p95_ms": 1.0, "p99_ms": 1.5, "max_ms": 2.0}
            },
            "store": {"primary": "postgres", "primary_available": true, "fallback_backlog_points": 0},
            "cache": {"kind": "redis", "available": true},
            "mqtt": {"connected": true, "connection_epoch": 1}
        }"#;
        let stats = parse_stats(body).unwrap();
        assert_eq!(stats.uptime_s, Some(75));
        assert_eq!(stats.points_committed, 10);
        assert_eq!(stats.points_duplicate, Some(1));
        assert_eq!(stats.fallback_backlog_points, Some(0));
        assert_eq!(stats.publish_to_commit.p95_ms, 3.25);
        assert_eq!(stats.receive_to_commit.max_ms, 2.0);
    }

    #[test]
    fn only_the_latency_core_is_required() {
        let minimal = br#"{"pipeline": {"points_committed": 0,
            "publish_to_commit": {"count": 0, "p50_ms": 0, "p95_ms": 0, "p99_ms": 0, "max_ms": 0},
            "receive_to_commit": {"count": 0, "p50_ms": 0, "p95_ms": 0, "p99_ms": 0, "max_ms": 0}}}"#;
        assert_eq!(parse_stats(minimal).unwrap().uptime_s, None);
        let err = parse_stats(br#"{"pipeline": {}}"#).unwrap_err();
        assert!(err.contains("points_committed"), "{err}");
        assert!(parse_stats(b"<html>").is_err());
    }

    fn histogram(values: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for &v in values {
            h.record(v).unwrap();
        }
        h
    }

    fn encoded(h: &Histogram<u64>) -> String {
        use hdrhistogram::serialization::{Serializer as _, V2DeflateSerializer};
        let mut buf = Vec::new();
        V2DeflateSerializer::new().serialize(h, &mut buf).unwrap();
        base64::engine::general_purpose::STANDARD.encode(buf)
    }

    #[test]
    fn the_difference_of_two_snapshots_is_exactly_the_interval() {
        // Before: an hour of slow history; during the interval: 100 fast values.
        let old: Vec<u64> = (0..10_000).map(|i| 50_000 + i).collect();
        // Below 2048 µs, where HDR at 3 significant digits keeps every microsecond.
        let new: Vec<u64> = (1..=100).map(|i| i * 10).collect();
        let all: Vec<u64> = old.iter().chain(&new).copied().collect();
        let snapshot = |values: &[u64]| {
            let body = format!(
                r#"{{"unit":"us","publish_to_commit":"{}","receive_to_commit":"{}"}}"#,
                encoded(&histogram(values)),
                encoded(&histogram(&[]))
            );
            parse_latency(body.as_bytes()).unwrap()
        };
        let (before, after) = (snapshot(&old), snapshot(&all));
        let interval = after.since(&before).unwrap();
        let l = Latency::of(&interval.publish_to_commit).unwrap();
        assert_eq!(l.count, 100);
        assert_eq!(l.p50_ms, 0.5);
        assert_eq!(l.p95_ms, 0.95);
        assert_eq!(l.p99_ms, 0.99);
        assert_eq!(l.max_ms, 1.0);
        // The cumulative figures, which the old harness reported, say nothing of the interval.
        let cumulative = Latency::of(&after.publish_to_commit).unwrap();
        assert!(cumulative.p50_ms > 50.0);
        assert!(Latency::of(&interval.receive_to_commit).is_none());
        // A restart (fewer values than before) is refused rather than misread.
        assert!(before.since(&after).is_err());
    }

    #[test]
    fn refuses_what_is_not_a_histogram() {
        assert!(parse_latency(b"{}").is_err());
        let body = br#"{"unit":"us","publish_to_commit":"!!","receive_to_commit":""}"#;
        assert!(parse_latency(body).unwrap_err().contains("base64"));
        let body = br#"{"unit":"us","publish_to_commit":"aGVsbG8=","receive_to_commit":""}"#;
        assert!(parse_latency(body).unwrap_err().contains("HDR"));
        let body = br#"{"unit":"ms","publish_to_commit":"","receive_to_commit":""}"#;
        assert!(parse_latency(body).unwrap_err().contains("unit"));
    }

    #[test]
    fn reads_the_process_metrics() {
        let text = "# HELP process_cpu_seconds_total Total CPU.\n\
                    # TYPE process_cpu_seconds_total counter\n\
                    process_cpu_seconds_total 12.5\n\
                    # TYPE process_resident_memory_bytes gauge\n\
                    process_resident_memory_bytes 52428800\n\
                    simcorp_other_total{a=\"b\"} 3\n";
        let p = parse_process(text).unwrap();
        assert_eq!(p.cpu_seconds, Some(12.5));
        assert_eq!(p.rss_bytes, Some(52_428_800.0));
        assert_eq!(parse_process("up 1\n").unwrap(), ProcessSample::default());
    }
}
