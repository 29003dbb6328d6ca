//! The ingestion HTTP API (JSON). Times are Unix epoch milliseconds, as on the wire.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use kit::http::ApiError;
use model::Channels;
use store::{DurableStore, SessionQuery, Store, StoreError, TelemetryQuery};

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: DurableStore,
    pub(crate) cache: cache::Cache,
    pub(crate) stats: Arc<pipeline::Stats>,
    pub(crate) intake: pipeline::Intake<mqtt::AckToken>,
    pub(crate) mqtt: Arc<mqtt::Connection>,
    pub(crate) started: Instant,
}

impl AppState {
    /// What the read API answers from: the primary store. While it is down the API says so
    /// (503); the fallback only holds writes until they are replayed.
    fn reads(&self) -> &Store {
        self.store.primary()
    }
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/sessions", get(sessions))
        .route("/sessions/{session}", get(session))
        .route("/sessions/{session}/telemetry", get(telemetry))
        .route("/sessions/{session}/events", get(events))
        .route("/devices/{device_id}/latest", get(latest))
        .route("/dead-letters", get(dead_letters))
        .route("/stats", get(stats))
        .route("/stats/latency", get(latency))
        .with_state(state)
}

const MAX_SESSIONS: usize = 1_000;
const MAX_POINTS: usize = 100_000;

/// A store failure as the API reports it: unavailable (503) or internal (500, logged).
fn store_error(e: StoreError) -> ApiError {
    if e.is_unavailable() {
        ApiError::Unavailable(format!("the store is unavailable: {e}"))
    } else {
        ApiError::internal(e)
    }
}

fn checked_id(what: &str, id: &str) -> Result<(), ApiError> {
    if model::valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid {what} {id:?}: expected 1-64 characters of [A-Za-z0-9._:-]"
        )))
    }
}

fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

#[derive(Debug, Serialize)]
struct PointOut {
    device_id: String,
    session: String,
    seq: u64,
    ts: i64,
    channels: Channels,
    received_ms: i64,
}

impl From<model::Point> for PointOut {
    fn from(p: model::Point) -> Self {
        PointOut {
            device_id: p.device_id,
            session: p.session,
            seq: p.seq,
            ts: p.ts_ms,
            channels: p.channels,
            received_ms: p.received_ms,
        }
    }
}

/// A roast event as served: its wire form (docs/protocol.md), with the device and when
/// ingestion received it.
#[derive(Debug, Serialize)]
struct EventOut {
    device_id: String,
    session: String,
    kind: roast::EventKind,
    ts: i64,
    detected_ts: i64,
    bt: Option<f64>,
    et: Option<f64>,
    ror: Option<f64>,
    method: String,
    confidence: f64,
    received_ms: i64,
}

impl From<model::RoastEvent> for EventOut {
    fn from(e: model::RoastEvent) -> Self {
        EventOut {
            device_id: e.device_id,
            session: e.session,
            kind: e.kind,
            ts: e.ts_ms,
            detected_ts: e.detected_ms,
            bt: e.bt,
            et: e.et,
            ror: e.ror,
            method: e.method,
            confidence: e.confidence,
            received_ms: e.received_ms,
        }
    }
}

#[derive(Debug, Serialize)]
struct SessionOut {
    device_id: String,
    session: String,
    /// `active` (started, not ended), `ended`, or `unknown` (points without a start message).
    state: &'static str,
    started_ms: Option<i64>,
    ended_ms: Option<i64>,
    metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_ms: Option<i64>,
}

fn state_of(started: Option<i64>, ended: Option<i64>) -> &'static str {
    match (started, ended) {
        (_, Some(_)) => "ended",
        (Some(_), None) => "active",
        (None, None) => "unknown",
    }
}

impl From<store::SessionRecord> for SessionOut {
    fn from(r: store::SessionRecord) -> Self {
        SessionOut {
            state: state_of(r.started_ms, r.ended_ms),
            device_id: r.device_id,
            session: r.session,
            started_ms: r.started_ms,
            ended_ms: r.ended_ms,
            metadata: r.metadata,
            updated_ms: Some(r.updated_ms),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsParams {
    device_id: Option<String>,
    #[serde(default)]
    active: bool,
    limit: Option<usize>,
}

async fn sessions(
    State(state): State<AppState>,
    params: Result<Query<SessionsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<SessionOut>>, ApiError> {
    let p = query(params)?;
    if let Some(d) = &p.device_id {
        checked_id("device_id", d)?;
    }
    let q = SessionQuery {
        device_id: p.device_id,
        active_only: p.active,
        limit: p.limit.unwrap_or(100).min(MAX_SESSIONS),
    };
    let rows = state.reads().sessions(&q).await.map_err(store_error)?;
    Ok(Json(rows.into_iter().map(SessionOut::from).collect()))
}

#[derive(Debug, Serialize)]
struct SessionDetail {
    #[serde(flatten)]
    session: SessionOut,
    points: u64,
    first_ts_ms: Option<i64>,
    last_ts_ms: Option<i64>,
    max_seq: Option<u64>,
}

/// One entry per device that used this session id (ids are unique per device, not globally).
async fn session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<SessionDetail>>, ApiError> {
    checked_id("session", &id)?;
    let found = state.reads().session(&id).await.map_err(store_error)?;
    if found.is_empty() {
        return Err(ApiError::NotFound(format!("no session {id:?}")));
    }
    Ok(Json(
        found
            .into_iter()
            .map(|s| {
                let (started, ended, metadata, updated) = match s.record {
                    Some(r) => (r.started_ms, r.ended_ms, r.metadata, Some(r.updated_ms)),
                    None => (None, None, Default::default(), None),
                };
                SessionDetail {
                    session: SessionOut {
                        state: state_of(started, ended),
                        device_id: s.device_id,
                        session: s.session,
                        started_ms: started,
                        ended_ms: ended,
                        metadata,
                        updated_ms: updated,
                    },
                    points: s.points,
                    first_ts_ms: s.first_ts_ms,
                    last_ts_ms: s.last_ts_ms,
                    max_seq: s.max_seq,
                }
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelemetryParams {
    device_id: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    limit: Option<usize>,
}

/// The session's roast events (every device that used the id), in event time order; an empty
/// list while none has been detected.
async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<EventOut>>, ApiError> {
    checked_id("session", &id)?;
    let events = state.reads().events(&id).await.map_err(store_error)?;
    Ok(Json(events.into_iter().map(EventOut::from).collect()))
}

async fn telemetry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<TelemetryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<PointOut>>, ApiError> {
    checked_id("session", &id)?;
    let p = query(params)?;
    if let Some(d) = &p.device_id {
        checked_id("device_id", d)?;
    }
    if let (Some(from), Some(to)) = (p.from, p.to)
        && from > to
    {
        return Err(ApiError::BadRequest(format!(
            "from ({from}) is after to ({to})"
        )));
    }
    let q = TelemetryQuery {
        session: id,
        device_id: p.device_id,
        from_ms: p.from,
        to_ms: p.to,
        limit: p.limit.unwrap_or(10_000).min(MAX_POINTS),
    };
    let points = state.reads().telemetry(&q).await.map_err(store_error)?;
    Ok(Json(points.into_iter().map(PointOut::from).collect()))
}

#[derive(Debug, Serialize)]
struct LatestOut {
    point: PointOut,
    /// `cache` or `store`: where this answer came from.
    source: &'static str,
    active_session: Option<cache::ActiveSession>,
}

async fn latest(
    State(state): State<AppState>,
    Path(device_id): Path<String>,
) -> Result<Json<LatestOut>, ApiError> {
    checked_id("device_id", &device_id)?;
    // The cache may be down or cold: it only ever saves a query, never decides the answer.
    let active_session = state.cache.active_session(&device_id).await.ok().flatten();
    let (point, source) = match state.cache.latest(&device_id).await {
        Ok(Some(p)) => (Some(p), "cache"),
        _ => (
            state
                .reads()
                .latest(&device_id)
                .await
                .map_err(store_error)?,
            "store",
        ),
    };
    let point = point.ok_or_else(|| ApiError::NotFound(format!("no points from {device_id:?}")))?;
    Ok(Json(LatestOut {
        point: point.into(),
        source,
        active_session,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterParams {
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct DeadLetterOut {
    id: i64,
    received_ms: i64,
    topic: String,
    device_id: Option<String>,
    reason_code: String,
    reason: String,
    frame_index: Option<usize>,
    payload_bytes: usize,
    /// The kept (possibly truncated) payload, as text where it is UTF-8.
    payload: String,
}

async fn dead_letters(
    State(state): State<AppState>,
    params: Result<Query<DeadLetterParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<DeadLetterOut>>, ApiError> {
    let p = query(params)?;
    let rows = state
        .reads()
        .dead_letters(p.limit.unwrap_or(100).min(MAX_SESSIONS))
        .await
        .map_err(store_error)?;
    Ok(Json(
        rows.into_iter()
            .map(|d| DeadLetterOut {
                id: d.id,
                received_ms: d.received_ms,
                topic: d.topic,
                device_id: d.device_id,
                reason_code: d.reason_code,
                reason: d.reason,
                frame_index: d.frame_index,
                payload_bytes: d.payload_bytes,
                payload: String::from_utf8_lossy(&d.payload).into_owned(),
            })
            .collect(),
    ))
}

#[derive(Debug, Serialize)]
struct StatsOut {
    uptime_s: u64,
    pipeline: pipeline::StatsSnapshot,
    store: StoreStats,
    cache: CacheStats,
    mqtt: MqttStats,
}

#[derive(Debug, Serialize)]
struct StoreStats {
    primary: &'static str,
    primary_available: bool,
    fallback_backlog_points: u64,
}

#[derive(Debug, Serialize)]
struct CacheStats {
    kind: &'static str,
    available: bool,
}

#[derive(Debug, Serialize)]
struct MqttStats {
    connected: bool,
    connection_epoch: u64,
}

/// The latency histograms themselves (HDR V2, base64), for harnesses that diff snapshots.
async fn latency(
    State(state): State<AppState>,
) -> Result<Json<pipeline::EncodedLatency>, ApiError> {
    state
        .stats
        .encoded()
        .map(Json)
        .ok_or_else(|| ApiError::internal("latency histograms could not be encoded"))
}

async fn stats(State(state): State<AppState>) -> Json<StatsOut> {
    Json(StatsOut {
        uptime_s: state.started.elapsed().as_secs(),
        pipeline: state.stats.snapshot(state.intake.depth()),
        store: StoreStats {
            primary: match state.store.primary() {
                Store::Postgres(_) => "postgres",
                Store::Sqlite(_) => "sqlite",
            },
            primary_available: state.store.primary_available(),
            fallback_backlog_points: state.store.fallback_backlog(),
        },
        cache: CacheStats {
            kind: state.cache.kind(),
            available: state.cache.is_available(),
        },
        mqtt: MqttStats {
            connected: state.mqtt.is_connected(),
            connection_epoch: state.mqtt.epoch(),
        },
    })
}
