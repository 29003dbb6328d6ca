//! One roast as the analyses read it — from the live state while it runs, from the store once
//! it has ended (or when analytics met it mid-roast) — and the reference it is compared with.

use std::sync::{Arc, Mutex};

use kit::http::ApiError;
use roast::{Profile, Reading};
use serde::Serialize;
use store::{AnalyticsStore, StoreError, StoredProfile};

use crate::live::{Key, Mark, Named, Sessions};

/// What the HTTP handlers share.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) store: AnalyticsStore,
    pub(crate) history: Option<history::Source>,
    pub(crate) live: Arc<Mutex<Sessions>>,
    pub(crate) updates: tokio::sync::broadcast::Sender<crate::live::Update>,
    pub(crate) settings: Arc<crate::config::Settings>,
}

/// A session's data.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Roast {
    pub(crate) device_id: String,
    pub(crate) session: String,
    /// `active`, `ended` or `unknown` (no start or end received).
    pub(crate) state: &'static str,
    pub(crate) started_ms: Option<i64>,
    pub(crate) ended_ms: Option<i64>,
    pub(crate) metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(skip)]
    pub(crate) readings: Vec<Reading>,
    pub(crate) events: Vec<Mark>,
    /// Read from the live stream (else from the store).
    pub(crate) live: bool,
    /// The live session stopped growing at `max_live_readings`.
    pub(crate) truncated: bool,
    #[serde(skip)]
    pub(crate) reference: Option<Arc<Named>>,
    #[serde(skip)]
    pub(crate) prediction: Option<roast::Prediction>,
}

impl Roast {
    pub(crate) fn events(&self) -> Vec<(roast::EventKind, i64)> {
        self.events.iter().map(|m| (m.kind, m.ts)).collect()
    }

    /// The coffee's weights from the session's metadata: `batch_g` (green, in the start
    /// message) and `roasted_g` (in the end message).
    pub(crate) fn weights(&self) -> Option<roast::Weights> {
        let number = |k: &str| self.metadata.get(k).and_then(serde_json::Value::as_f64);
        Some(roast::Weights {
            green_g: number("batch_g")?,
            roasted_g: number("roasted_g"),
        })
    }
}

pub(crate) fn store_error(e: StoreError) -> ApiError {
    if e.is_unavailable() {
        ApiError::Unavailable(format!("the store is unavailable: {e}"))
    } else {
        ApiError::internal(e)
    }
}

fn history_error(e: history::HistoryError) -> ApiError {
    ApiError::Unavailable(format!("past sessions cannot be read: {e}"))
}

impl App {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Sessions>, ApiError> {
        self.live
            .lock()
            .map_err(|_| ApiError::internal("the live sessions' lock was poisoned"))
    }

    /// The session `session` (of `device_id`, or of the device seen last). Live when analytics
    /// has watched it from its start; otherwise read from the store, with what the live stream
    /// added since.
    pub(crate) async fn roast(
        &self,
        session: &str,
        device_id: Option<&str>,
    ) -> Result<Roast, ApiError> {
        let live = self.lock()?.find(session, device_id).map(|l| Roast {
            device_id: l.device_id.clone(),
            session: l.session.clone(),
            state: l.state(),
            started_ms: l.started_ms,
            ended_ms: l.ended_ms,
            metadata: l.metadata.clone(),
            readings: l.readings.clone(),
            events: l.marks.clone(),
            live: true,
            truncated: l.truncated,
            reference: l.reference().cloned(),
            prediction: l.prediction,
        });
        if let Some(live) = &live
            && (live.started_ms.is_some() || self.history.is_none())
        {
            return Ok(live.clone());
        }
        let Some(history) = &self.history else {
            return Err(ApiError::NotFound(format!("no session {session:?}")));
        };
        let device = match (device_id, &live) {
            (Some(d), _) => d.to_owned(),
            (None, Some(l)) => l.device_id.clone(),
            (None, None) => {
                let found = self.sessions_named(history, session).await?;
                found.ok_or_else(|| ApiError::NotFound(format!("no session {session:?}")))?
            }
        };
        let record = history
            .record(&device, session)
            .await
            .map_err(history_error)?;
        let mut readings = history
            .readings(&device, session, None)
            .await
            .map_err(history_error)?;
        let mut events: Vec<Mark> = history
            .events(session)
            .await
            .map_err(history_error)?
            .iter()
            .filter(|e| e.device_id == device)
            .map(Mark::from)
            .collect();
        if record.is_none() && readings.is_empty() && live.is_none() {
            return Err(ApiError::NotFound(format!("no session {session:?}")));
        }
        let (mut reference, mut prediction, mut truncated) = (None, None, false);
        if let Some(l) = live {
            // What arrived live after the store's newest reading, and events not stored yet.
            let newest = readings.last().map_or(i64::MIN, |r| r.ts_ms);
            readings.extend(l.readings.into_iter().filter(|r| r.ts_ms > newest));
            for m in l.events {
                if !events.iter().any(|e| e.kind == m.kind) {
                    events.push(m);
                }
            }
            events.sort_by_key(|m| (m.ts, m.kind));
            (reference, prediction, truncated) = (l.reference, l.prediction, l.truncated);
        }
        let (started_ms, ended_ms, metadata) = match record {
            Some(r) => (r.started_ms, r.ended_ms, r.metadata),
            None => (None, None, Default::default()),
        };
        let mut roast = Roast {
            device_id: device,
            session: session.to_owned(),
            state: match (started_ms, ended_ms) {
                (_, Some(_)) => "ended",
                (Some(_), None) => "active",
                (None, None) => "unknown",
            },
            started_ms,
            ended_ms,
            metadata,
            readings,
            events,
            live: false,
            truncated,
            reference: None,
            prediction,
        };
        roast.reference = match reference {
            Some(r) => Some(r),
            None => self.reference_of(&roast.session, &roast.metadata).await?,
        };
        Ok(roast)
    }

    /// The device of the newest stored session with this id.
    async fn sessions_named(
        &self,
        history: &history::Source,
        session: &str,
    ) -> Result<Option<String>, ApiError> {
        Ok(history
            .sessions(None, history::MAX_SESSIONS)
            .await
            .map_err(history_error)?
            .into_iter()
            .find(|r| r.session == session)
            .map(|r| r.device_id))
    }

    /// The session's reference: the one set through the API, else the one its start message
    /// names (`"reference": "<profile id or name>"`). A name that matches no profile is no
    /// reference.
    pub(crate) async fn reference_of(
        &self,
        session: &str,
        metadata: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<Arc<Named>>, ApiError> {
        let set = self.store.reference(session).await.map_err(store_error)?;
        let named = metadata.get("reference").and_then(|v| v.as_str());
        let Some(key) = set.as_deref().or(named) else {
            return Ok(None);
        };
        Ok(self.profile(key).await?.map(Arc::new))
    }

    /// A stored profile by id or name, parsed.
    pub(crate) async fn profile(&self, key: &str) -> Result<Option<Named>, ApiError> {
        let Some(stored) = self.store.profile(key).await.map_err(store_error)? else {
            return Ok(None);
        };
        parse(&stored).map(Some)
    }

    /// Looks up the references of sessions that need one, and hands them to the live state.
    pub(crate) async fn resolve(&self, keys: Vec<Key>) {
        for key in keys {
            let metadata = match self.lock() {
                Ok(s) => s.get(&key).map(|l| l.metadata.clone()).unwrap_or_default(),
                Err(_) => return,
            };
            let reference = match self.reference_of(&key.1, &metadata).await {
                Ok(r) => r,
                Err(error) => {
                    tracing::warn!(%error, session_id = %key.1, "could not look up a session's reference");
                    None
                }
            };
            if let Ok(mut s) = self.lock() {
                s.set_reference(&key, reference);
            }
        }
    }
}

/// A stored profile's curve, which analytics wrote and validated itself.
pub(crate) fn parse(stored: &StoredProfile) -> Result<Named, ApiError> {
    let profile: Profile = serde_json::from_str(&stored.profile).map_err(|e| {
        ApiError::internal(format!(
            "stored profile {} does not parse: {e}",
            stored.info.id
        ))
    })?;
    Ok(Named {
        id: stored.info.id.clone(),
        name: stored.info.name.clone(),
        profile,
    })
}
