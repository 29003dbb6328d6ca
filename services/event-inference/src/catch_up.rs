//! Catching up from the store, through ingestion's HTTP API (`event_inference.catch_up_url`):
//! this service keeps no state of its own, so after a restart it reads what it missed.
//!
//! - A session met mid-roast: its readings so far (`GET /sessions/{s}/telemetry`, paged) and
//!   its roaster model and state (`GET /sessions/{s}`).
//! - At start, the *sweep*: the sessions updated within `catch_up_window_secs` that have no
//!   DROP stored yet (`GET /sessions`, `GET /sessions/{s}/events`) — those that ran, or ended,
//!   while this service was away. Their events are published like any other; ingestion stores
//!   an event once, so one said twice costs nothing.

use std::time::Duration;

use roast::Reading;
use serde::Deserialize;

use crate::tracker::{History, Key};

/// Why catching up a session failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CatchUpError {
    #[error("GET {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Points per page: ingestion serves at most 100 000 at once.
const PAGE: usize = 20_000;

#[derive(Debug, Deserialize)]
struct SessionOut {
    device_id: String,
    session: String,
    state: String,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
    updated_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct PointOut {
    ts: i64,
    channels: Channels,
}

#[derive(Debug, Deserialize)]
struct Channels {
    bt: Option<f64>,
    et: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct EventOut {
    device_id: String,
    kind: String,
}

/// Reads sessions back from ingestion.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    http: reqwest::Client,
    base: String,
}

impl Store {
    pub(crate) fn new(base: &str) -> Self {
        Store {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// `None` for a 404 (nothing stored yet).
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, CatchUpError> {
        let url = format!("{}{path}", self.base);
        let http = |source| CatchUpError::Http {
            url: url.clone(),
            source,
        };
        let response = self
            .http
            .get(&url)
            .headers(kit::telemetry::trace_headers())
            .send()
            .await
            .map_err(http)?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = response.error_for_status().map_err(http)?;
        response.json().await.map(Some).map_err(http)
    }

    /// A session's past: its roaster model, whether it ended, and every reading stored.
    pub(crate) async fn history(&self, key: &Key) -> Result<History, CatchUpError> {
        let (device, session) = key;
        let records: Vec<SessionOut> = self
            .get(&format!("/sessions/{session}"))
            .await?
            .unwrap_or_default();
        let record = records.into_iter().find(|r| &r.device_id == device);
        let model = record
            .as_ref()
            .and_then(|r| r.metadata.get("roaster_model"))
            .and_then(|m| m.as_str())
            .map(str::to_owned);
        let ended = record.as_ref().is_some_and(|r| r.state == "ended");
        let mut readings = Vec::new();
        let mut from: Option<i64> = None;
        loop {
            let mut path = format!("/sessions/{session}/telemetry?device_id={device}&limit={PAGE}");
            if let Some(from) = from {
                path.push_str(&format!("&from={from}"));
            }
            let page: Vec<PointOut> = self.get(&path).await?.unwrap_or_default();
            let full = page.len() == PAGE;
            let last = page.last().map(|p| p.ts);
            readings.extend(page.into_iter().map(|p| Reading {
                ts_ms: p.ts,
                bt: p.channels.bt,
                et: p.channels.et,
            }));
            match last {
                // Points sharing the page's last ts come again on the next page; the detector
                // ignores a reading not newer than the last.
                Some(ts) if full && from != Some(ts) => from = Some(ts),
                _ => break,
            }
        }
        Ok(History {
            key: key.clone(),
            model,
            readings,
            ended,
        })
    }

    /// The sessions updated since `since_ms` that have no DROP stored.
    pub(crate) async fn unfinished(&self, since_ms: i64) -> Result<Vec<Key>, CatchUpError> {
        let sessions: Vec<SessionOut> = self.get("/sessions?limit=1000").await?.unwrap_or_default();
        let mut out = Vec::new();
        for s in sessions
            .into_iter()
            .filter(|s| s.updated_ms.is_some_and(|t| t >= since_ms))
        {
            let events: Vec<EventOut> = self
                .get(&format!("/sessions/{}/events", s.session))
                .await?
                .unwrap_or_default();
            let dropped = events
                .iter()
                .any(|e| e.device_id == s.device_id && e.kind == "drop");
            if !dropped {
                out.push((s.device_id, s.session));
            }
        }
        Ok(out)
    }
}
