//! A roast session's past, read back by the services that did not write it (event-inference
//! catching up after a restart, analytics opening a finished roast): the session's record, its
//! roast events and its readings.
//!
//! Two sources, one answer: PostgreSQL directly when the deployment has one (the store crate's
//! read queries on a small pool of their own, so that readers never take ingestion's
//! connections), else ingestion's HTTP API — the embedded deployment, whose SQLite file belongs
//! to ingestion alone. Nothing here writes.

use std::time::Duration;

use roast::Reading;
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use store::{SessionQuery, SessionRecord, TelemetryQuery};

/// Points per page: ingestion serves at most 100 000 at once.
const PAGE: usize = 20_000;

/// Session records asked for at most when listing (ingestion's own cap).
pub const MAX_SESSIONS: usize = 1000;

/// Why reading a session back failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("GET {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("reading the store: {0}")]
    Store(#[from] store::StoreError),
}

/// Where sessions are read back from.
#[derive(Debug, Clone)]
pub enum Source {
    Store(store::PgStore),
    Api(Api),
}

impl Source {
    /// PostgreSQL when `[postgres] url` is set, else ingestion's API at `api_url`; `None` when
    /// neither is configured (an empty `api_url`).
    pub fn configured(
        postgres: &store::PostgresConfig,
        api_url: &str,
    ) -> Result<Option<Source>, HistoryError> {
        Ok(match (&postgres.url, api_url) {
            (Some(url), _) => Some(Source::Store(store::PgStore::connect(
                url.expose_secret(),
                postgres,
            )?)),
            (None, "") => None,
            (None, url) => Some(Source::Api(Api::new(url))),
        })
    }

    /// Where it reads, for logs: `postgres` or the API's address.
    pub fn describe(&self) -> &str {
        match self {
            Source::Store(_) => "postgres",
            Source::Api(api) => &api.base,
        }
    }

    /// Session records, newest first: one device's, or every device's.
    pub async fn sessions(
        &self,
        device_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, HistoryError> {
        let limit = limit.min(MAX_SESSIONS);
        match self {
            Source::Store(pg) => Ok(pg
                .sessions(&SessionQuery {
                    device_id: device_id.map(str::to_owned),
                    active_only: false,
                    limit,
                })
                .await?),
            Source::Api(api) => {
                let path = match device_id {
                    Some(d) => format!("/sessions?device_id={d}&limit={limit}"),
                    None => format!("/sessions?limit={limit}"),
                };
                let out: Vec<SessionOut> = api.get(&path).await?.unwrap_or_default();
                Ok(out.into_iter().map(SessionRecord::from).collect())
            }
        }
    }

    /// The record of one device's session, if it sent a start or end. Read from the device's
    /// records, not the session's summary: that one counts the session's points, and a restart
    /// under load asks for a thousand sessions.
    pub async fn record(
        &self,
        device_id: &str,
        session: &str,
    ) -> Result<Option<SessionRecord>, HistoryError> {
        Ok(self
            .sessions(Some(device_id), MAX_SESSIONS)
            .await?
            .into_iter()
            .find(|r| r.session == session))
    }

    /// The session's stored roast events (every device that used the id), in event time order.
    pub async fn events(&self, session: &str) -> Result<Vec<model::RoastEvent>, HistoryError> {
        match self {
            Source::Store(pg) => Ok(pg.events(session).await?),
            Source::Api(api) => {
                let out: Vec<EventOut> = api
                    .get(&format!("/sessions/{session}/events"))
                    .await?
                    .unwrap_or_default();
                Ok(out.into_iter().filter_map(EventOut::into_event).collect())
            }
        }
    }

    /// Every reading of one device's session from `from` (epoch ms, inclusive; all when
    /// `None`), in time order, a page at a time.
    pub async fn readings(
        &self,
        device_id: &str,
        session: &str,
        mut from: Option<i64>,
    ) -> Result<Vec<Reading>, HistoryError> {
        let mut readings: Vec<Reading> = Vec::new();
        loop {
            let page = match self {
                Source::Store(pg) => pg
                    .telemetry(&TelemetryQuery {
                        session: session.to_owned(),
                        device_id: Some(device_id.to_owned()),
                        from_ms: from,
                        to_ms: None,
                        limit: PAGE,
                    })
                    .await?
                    .into_iter()
                    .map(|p| Reading {
                        ts_ms: p.ts_ms,
                        bt: p.channels.bt,
                        et: p.channels.et,
                    })
                    .collect(),
                Source::Api(api) => api.page(device_id, session, from).await?,
            };
            let full = page.len() == PAGE;
            let last = page.last().map(|r| r.ts_ms);
            // Readings sharing the page's last ts come again on the next page.
            let newest = readings.last().map(|r| r.ts_ms);
            readings.extend(
                page.into_iter()
                    .filter(|r| newest.is_none_or(|n| r.ts_ms > n)),
            );
            match last {
                Some(ts) if full && from != Some(ts) => from = Some(ts),
                _ => return Ok(readings),
            }
        }
    }
}

/// Reads sessions back through ingestion's HTTP API.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new(base: &str) -> Self {
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
    ) -> Result<Option<T>, HistoryError> {
        let url = format!("{}{path}", self.base);
        let http = |source| HistoryError::Http {
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

    async fn page(
        &self,
        device_id: &str,
        session: &str,
        from: Option<i64>,
    ) -> Result<Vec<Reading>, HistoryError> {
        let mut path = format!("/sessions/{session}/telemetry?device_id={device_id}&limit={PAGE}");
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
}

// Ingestion's API forms (services/ingestion/src/api.rs), only the fields read here.

#[derive(Debug, Deserialize)]
struct SessionOut {
    device_id: String,
    session: String,
    started_ms: Option<i64>,
    ended_ms: Option<i64>,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
    updated_ms: Option<i64>,
}

impl From<SessionOut> for SessionRecord {
    fn from(s: SessionOut) -> Self {
        SessionRecord {
            device_id: s.device_id,
            session: s.session,
            started_ms: s.started_ms,
            ended_ms: s.ended_ms,
            metadata: s.metadata,
            updated_ms: s.updated_ms.unwrap_or_default(),
        }
    }
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
    session: String,
    kind: String,
    ts: i64,
    detected_ts: i64,
    bt: Option<f64>,
    et: Option<f64>,
    ror: Option<f64>,
    method: String,
    confidence: f64,
    received_ms: i64,
}

impl EventOut {
    /// `None` for a kind this build does not know (a newer ingestion's).
    fn into_event(self) -> Option<model::RoastEvent> {
        Some(model::RoastEvent {
            kind: roast::EventKind::parse(&self.kind)?,
            device_id: self.device_id,
            session: self.session,
            ts_ms: self.ts,
            detected_ms: self.detected_ts,
            bt: self.bt,
            et: self.et,
            ror: self.ror,
            method: self.method,
            confidence: self.confidence,
            received_ms: self.received_ms,
        })
    }
}
