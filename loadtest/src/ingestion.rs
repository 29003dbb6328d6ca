//! Ingestion's own latency figures, from its `GET /stats`.
//!
//! Latency is measured inside ingestion (HDR histograms from each point's `ts` to the commit of
//! its batch) rather than here, because only ingestion knows when a batch committed. The
//! histograms are cumulative since ingestion started, which is why a run wants a fresh instance.

use std::time::Duration;

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
    stats_url: String,
}

impl IngestionClient {
    /// A client for ingestion's HTTP API at `base` (e.g. `http://127.0.0.1:4001`).
    pub fn new(base: &str) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(IngestionClient {
            http,
            stats_url: format!("{}/stats", base.trim_end_matches('/')),
        })
    }

    pub async fn stats(&self) -> Result<IngestionStats, String> {
        let url = &self.stats_url;
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("GET {url}: {}", chain(&e)))?;
        parse_stats(&body)
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
                "sessions_committed": 0, "dead_letters_committed": 0, "write_failures": 0,
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
}
