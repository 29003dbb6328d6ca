//! HTTP: what the service is watching. `GET /sessions` (each session's model, newest reading,
//! RoR and the events said so far), `GET /sessions/{session}/ror` (the derived RoR channel, one
//! value a second: the least-squares slope of the last 30 s of BT, °C/min), `GET /stats`
//! (readings, events, and how far detection runs behind the stream; `?reset=true` starts the
//! lag's percentiles over, for a measurement window).

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::tracker::{SessionView, Stats, Tracker};

pub(crate) type Shared = Arc<Mutex<Tracker>>;

pub(crate) fn router(tracker: Shared) -> Router {
    Router::new()
        .route("/sessions", get(sessions))
        .route("/sessions/{session}/ror", get(ror))
        .route("/stats", get(stats))
        .with_state(tracker)
}

fn lock(tracker: &Shared) -> Result<std::sync::MutexGuard<'_, Tracker>, StatusCode> {
    tracker
        .lock()
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}

async fn sessions(State(tracker): State<Shared>) -> Result<Json<Vec<SessionView>>, StatusCode> {
    Ok(Json(lock(&tracker)?.sessions()))
}

#[derive(Debug, Serialize)]
struct RorOut {
    device_id: String,
    /// `[ts, °C/min]` pairs, oldest first.
    ror: Vec<(i64, f64)>,
}

async fn ror(
    State(tracker): State<Shared>,
    Path(session): Path<String>,
) -> Result<Json<Vec<RorOut>>, (StatusCode, String)> {
    if !model::valid_id(&session) {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("invalid session id {session:?}"),
        ));
    }
    let series = lock(&tracker)
        .map_err(|s| (s, "the tracker is unavailable".to_owned()))?
        .ror(&session);
    if series.is_empty() {
        return Err((
            StatusCode::NOT_FOUND,
            format!("session {session:?} is not being watched"),
        ));
    }
    Ok(Json(
        series
            .into_iter()
            .map(|(device_id, ror)| RorOut { device_id, ror })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsParams {
    #[serde(default)]
    reset: bool,
}

async fn stats(
    State(tracker): State<Shared>,
    Query(p): Query<StatsParams>,
) -> Result<Json<Stats>, StatusCode> {
    let mut tracker = lock(&tracker)?;
    let stats = tracker.stats();
    if p.reset {
        tracker.reset_lag();
    }
    Ok(Json(stats))
}
