//! Catching up from the store: this service keeps no state of its own, so after a restart it
//! reads what it missed — from PostgreSQL directly when `[postgres] url` is set (read queries of
//! the store crate, on a small pool of their own), else through ingestion's HTTP API
//! (`event_inference.catch_up_url`; the embedded deployment).
//!
//! - A session met mid-roast: its roaster model and state, the events already stored, and its
//!   readings from a minute before the last of them (all of them if none): the detector resumes
//!   after the stored events (`roast::Detector::resume`) instead of reading the whole roast
//!   again. Measured at 10,000 points/s, reading a thousand whole sessions back through
//!   ingestion's API after a 5-minute outage took ingestion's publish→commit p95 from 2 ms to
//!   268 ms for half a minute.
//! - At start, the *sweep*: the sessions updated within `catch_up_window_secs` that have no
//!   DROP stored yet — those that ran, or ended, while this service was away. Their events are
//!   published like any other; ingestion stores an event once, so one said twice costs nothing.
//!
//! Fetches run one at a time and are paced (`catch_up_points_per_sec`), so that catching up
//! never competes with ingestion for more than a share of the database.

use std::time::Duration;

use roast::{Detected, Method, Reading};
use serde::Deserialize;

use crate::tracker::{History, Key};

/// Readings kept before the last stored event, to fill the detector's windows.
const WARM_MS: i64 = 60_000;

/// Why catching up a session failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CatchUpError {
    #[error("GET {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("reading the store: {0}")]
    Store(#[from] store::StoreError),
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
    ts: i64,
    bt: Option<f64>,
    et: Option<f64>,
    ror: Option<f64>,
    method: String,
}

/// What a session's catch-up needs to know about it.
struct Known {
    model: Option<String>,
    ended: bool,
    said: Vec<Detected>,
}

fn detected(
    kind: &str,
    ts_ms: i64,
    bt: Option<f64>,
    et: Option<f64>,
    ror: Option<f64>,
    method: &str,
) -> Option<Detected> {
    Some(Detected {
        kind: roast::EventKind::parse(kind)?,
        ts_ms,
        // Only a fallback for the lowest reading after CHARGE: anything read beats it.
        bt: bt.unwrap_or(f64::INFINITY),
        et,
        ror,
        method: Method::parse(method).unwrap_or(Method::BtPrior),
    })
}

/// Where sessions are read back from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Store(store::PgStore),
    Api(Api),
}

impl Source {
    /// A session's past: what is known of it, and its readings from a minute before its last
    /// stored event.
    pub(crate) async fn history(&self, key: &Key) -> Result<History, CatchUpError> {
        let known = match self {
            Source::Store(pg) => known_in_store(pg, key).await?,
            Source::Api(api) => api.known(key).await?,
        };
        let from = known
            .said
            .iter()
            .map(|e| e.ts_ms)
            .max()
            .map(|t| t - WARM_MS);
        let dropped = known.said.iter().any(|e| e.kind == roast::EventKind::Drop);
        let readings = if dropped {
            // Nothing more to say of a roast that was dropped: its readings are not needed.
            Vec::new()
        } else {
            self.readings(key, from).await?
        };
        Ok(History {
            key: key.clone(),
            model: known.model,
            readings,
            said: known.said,
            ended: known.ended,
        })
    }

    /// Every reading of the session from `from`, a page at a time.
    async fn readings(
        &self,
        key: &Key,
        mut from: Option<i64>,
    ) -> Result<Vec<Reading>, CatchUpError> {
        let mut readings = Vec::new();
        loop {
            let page = match self {
                Source::Store(pg) => page_in_store(pg, key, from).await?,
                Source::Api(api) => api.page(key, from).await?,
            };
            let full = page.len() == PAGE;
            let last = page.last().map(|r| r.ts_ms);
            readings.extend(page);
            match last {
                // Readings sharing the page's last ts come again on the next page; the
                // detector ignores a reading not newer than the last.
                Some(ts) if full && from != Some(ts) => from = Some(ts),
                _ => return Ok(readings),
            }
        }
    }

    /// The sessions updated since `since_ms` that have no DROP stored.
    pub(crate) async fn unfinished(&self, since_ms: i64) -> Result<Vec<Key>, CatchUpError> {
        let recent: Vec<Key> = match self {
            Source::Store(pg) => pg
                .sessions(&store::SessionQuery {
                    limit: 1000,
                    ..Default::default()
                })
                .await?
                .into_iter()
                .filter(|s| s.updated_ms >= since_ms)
                .map(|s| (s.device_id, s.session))
                .collect(),
            Source::Api(api) => api.recent(since_ms).await?,
        };
        let mut out = Vec::new();
        for key in recent {
            let dropped = match self {
                Source::Store(pg) => pg
                    .events(&key.1)
                    .await?
                    .iter()
                    .any(|e| e.device_id == key.0 && e.kind == roast::EventKind::Drop),
                Source::Api(api) => api.dropped(&key).await?,
            };
            if !dropped {
                out.push(key);
            }
        }
        Ok(out)
    }
}

async fn known_in_store(pg: &store::PgStore, key: &Key) -> Result<Known, CatchUpError> {
    let (device, session) = key;
    // The device's session records, not the session's summary: that one counts the session's
    // points, and a restart under load asks for a thousand sessions.
    let record = pg
        .sessions(&store::SessionQuery {
            device_id: Some(device.clone()),
            active_only: false,
            limit: 1000,
        })
        .await?
        .into_iter()
        .find(|s| &s.session == session);
    let said = pg
        .events(session)
        .await?
        .into_iter()
        .filter(|e| &e.device_id == device)
        .filter_map(|e| detected(e.kind.as_str(), e.ts_ms, e.bt, e.et, e.ror, &e.method))
        .collect();
    Ok(Known {
        model: record
            .as_ref()
            .and_then(|r| crate::config::roaster_model(&r.metadata)),
        ended: record.is_some_and(|r| r.ended_ms.is_some()),
        said,
    })
}

async fn page_in_store(
    pg: &store::PgStore,
    key: &Key,
    from: Option<i64>,
) -> Result<Vec<Reading>, CatchUpError> {
    let page = pg
        .telemetry(&store::TelemetryQuery {
            session: key.1.clone(),
            device_id: Some(key.0.clone()),
            from_ms: from,
            to_ms: None,
            limit: PAGE,
        })
        .await?;
    Ok(page
        .into_iter()
        .map(|p| Reading {
            ts_ms: p.ts_ms,
            bt: p.channels.bt,
            et: p.channels.et,
        })
        .collect())
}

/// Reads sessions back through ingestion's HTTP API.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    pub(crate) fn new(base: &str) -> Self {
        Api {
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

    async fn known(&self, key: &Key) -> Result<Known, CatchUpError> {
        let (device, session) = key;
        let records: Vec<SessionOut> = self
            .get(&format!("/sessions?device_id={device}&limit=1000"))
            .await?
            .unwrap_or_default();
        let record = records.into_iter().find(|r| &r.session == session);
        let events: Vec<EventOut> = self
            .get(&format!("/sessions/{session}/events"))
            .await?
            .unwrap_or_default();
        Ok(Known {
            model: record
                .as_ref()
                .and_then(|r| crate::config::roaster_model(&r.metadata)),
            ended: record.as_ref().is_some_and(|r| r.state == "ended"),
            said: events
                .iter()
                .filter(|e| &e.device_id == device)
                .filter_map(|e| detected(&e.kind, e.ts, e.bt, e.et, e.ror, &e.method))
                .collect(),
        })
    }

    async fn page(&self, key: &Key, from: Option<i64>) -> Result<Vec<Reading>, CatchUpError> {
        let (device, session) = key;
        let mut path = format!("/sessions/{session}/telemetry?device_id={device}&limit={PAGE}");
        if let Some(from) = from {
            path.push_str(&format!("&from={from}"));
        }
        let page: Vec<PointOut> = self.get(&path).await?.unwrap_or_default();
        Ok(page
            .into_iter()
            .map(|p| Reading {
                ts_ms: p.ts,
                bt: p.channels.bt,
                et: p.channels.et,
            })
            .collect())
    }

    async fn recent(&self, since_ms: i64) -> Result<Vec<Key>, CatchUpError> {
        let sessions: Vec<SessionOut> = self.get("/sessions?limit=1000").await?.unwrap_or_default();
        Ok(sessions
            .into_iter()
            .filter(|s| s.updated_ms.is_some_and(|t| t >= since_ms))
            .map(|s| (s.device_id, s.session))
            .collect())
    }

    async fn dropped(&self, key: &Key) -> Result<bool, CatchUpError> {
        let events: Vec<EventOut> = self
            .get(&format!("/sessions/{}/events", key.1))
            .await?
            .unwrap_or_default();
        Ok(events
            .iter()
            .any(|e| e.device_id == key.0 && e.kind == "drop"))
    }
}
