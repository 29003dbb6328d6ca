//! HTTP: reference profiles, each session's summary, variance against its reference and live
//! predictions, the live push (`GET /live`, Server-Sent Events) and the live roast view (`GET /`).
//! Described by `GET /openapi.json` (src/openapi.json, checked against this router by the
//! service's tests).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use kit::http::ApiError;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use crate::live::temperature;
use crate::profiles::{CreateProfile, ProfileOut};
use crate::roasts::{App, Roast, parse, store_error};

const VIEW: &str = include_str!("view.html");
const OPENAPI: &str = include_str!("openapi.json");

pub(crate) fn router(app: App) -> Router {
    let limit = app.settings.max_import_bytes;
    Router::new()
        .route("/", get(view))
        .route("/openapi.json", get(openapi))
        .route("/profiles", get(profiles).post(create_profile))
        .route("/profiles/alog", axum::routing::post(import_alog))
        .route("/profiles/{id}", get(profile).delete(delete_profile))
        .route("/sessions", get(sessions))
        .route("/sessions/{session}", get(session))
        .route("/sessions/{session}/curve", get(curve))
        .route("/sessions/{session}/summary", get(summary))
        .route("/sessions/{session}/variance", get(variance))
        .route("/sessions/{session}/predictions", get(predictions))
        .route(
            "/sessions/{session}/reference",
            get(reference).put(set_reference),
        )
        .route("/live", get(live))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

async fn view() -> Html<&'static str> {
    Html(VIEW)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

fn checked(what: &str, id: &str) -> Result<(), ApiError> {
    if model::valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid {what} {id:?}: expected 1-64 characters of [A-Za-z0-9._:-]"
        )))
    }
}

fn body_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge(format!("the request body is too large: {text}"))
    } else {
        ApiError::BadRequest(text)
    }
}

fn json<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(t)| t)
        .map_err(|e| body_error(e.status(), e.body_text()))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

// Profiles.

async fn profiles(State(app): State<App>) -> Result<Json<Vec<ProfileOut>>, ApiError> {
    let list = app.store.profiles().await.map_err(store_error)?;
    Ok(Json(
        list.into_iter().map(|i| ProfileOut::of(i, None)).collect(),
    ))
}

async fn create_profile(
    State(app): State<App>,
    body: Result<Json<CreateProfile>, JsonRejection>,
) -> Result<(StatusCode, Json<ProfileOut>), ApiError> {
    let created = app.create(json(body)?).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlogParams {
    name: String,
}

async fn import_alog(
    State(app): State<App>,
    params: Result<Query<AlogParams>, QueryRejection>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ProfileOut>), ApiError> {
    let p = query(params)?;
    let body = body.map_err(|e| body_error(e.status(), e.body_text()))?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::BadRequest(format!("the .alog is not UTF-8 text: {e}")))?;
    let created = app.import_alog(&p.name, text).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn profile(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<Json<ProfileOut>, ApiError> {
    checked("profile", &id)?;
    let stored = app
        .store
        .profile(&id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::NotFound(format!("no profile {id:?}")))?;
    let named = parse(&stored)?;
    Ok(Json(ProfileOut::of(stored.info, Some(named.profile))))
}

async fn delete_profile(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    checked("profile", &id)?;
    let stored = app.store.profile(&id).await.map_err(store_error)?;
    let Some(stored) = stored else {
        return Err(ApiError::NotFound(format!("no profile {id:?}")));
    };
    app.store
        .delete_profile(&stored.info.id)
        .await
        .map_err(store_error)?;
    Ok(StatusCode::NO_CONTENT)
}

// Sessions.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionParams {
    device_id: Option<String>,
    step_secs: Option<u32>,
}

async fn roast_of(
    app: &App,
    session: &str,
    params: Result<Query<SessionParams>, QueryRejection>,
) -> Result<(Roast, SessionParams), ApiError> {
    checked("session", session)?;
    let p = query(params)?;
    if let Some(d) = &p.device_id {
        checked("device_id", d)?;
    }
    let roast = app.roast(session, p.device_id.as_deref()).await?;
    Ok((roast, p))
}

#[derive(Debug, Serialize)]
struct SessionItem {
    device_id: String,
    session: String,
    state: &'static str,
    started_ms: Option<i64>,
    ended_ms: Option<i64>,
    live: bool,
    reference: Option<String>,
    last_ts: Option<i64>,
    last_bt: Option<f64>,
}

/// The sessions watched live (newest first), then the newest stored ones not among them.
async fn sessions(State(app): State<App>) -> Result<Json<Vec<SessionItem>>, ApiError> {
    let mut out: Vec<SessionItem> = {
        let live = app
            .live
            .lock()
            .map_err(|_| ApiError::internal("the live sessions' lock was poisoned"))?;
        live.all()
            .map(|l| SessionItem {
                device_id: l.device_id.clone(),
                session: l.session.clone(),
                state: l.state(),
                started_ms: l.started_ms,
                ended_ms: l.ended_ms,
                live: true,
                reference: l.reference().map(|r| r.name.clone()),
                last_ts: l.readings.last().map(|r| r.ts_ms),
                last_bt: l.readings.last().and_then(|r| r.bt),
            })
            .collect()
    };
    out.sort_by_key(|s| std::cmp::Reverse(s.started_ms.or(s.last_ts)));
    if let Some(history) = &app.history {
        match history.sessions(None, 50).await {
            Ok(stored) => {
                for r in stored {
                    if out
                        .iter()
                        .any(|s| s.session == r.session && s.device_id == r.device_id)
                    {
                        continue;
                    }
                    out.push(SessionItem {
                        state: match (r.started_ms, r.ended_ms) {
                            (_, Some(_)) => "ended",
                            (Some(_), None) => "active",
                            (None, None) => "unknown",
                        },
                        reference: r
                            .metadata
                            .get("reference")
                            .and_then(|v| v.as_str())
                            .map(str::to_owned),
                        device_id: r.device_id,
                        session: r.session,
                        started_ms: r.started_ms,
                        ended_ms: r.ended_ms,
                        live: false,
                        last_ts: None,
                        last_bt: None,
                    });
                }
            }
            Err(error) => tracing::warn!(%error, "could not list stored sessions"),
        }
    }
    Ok(Json(out))
}

#[derive(Debug, Serialize)]
struct SessionOut {
    #[serde(flatten)]
    roast: Roast,
    readings: usize,
    reference: Option<String>,
}

async fn session(
    State(app): State<App>,
    Path(session): Path<String>,
    params: Result<Query<SessionParams>, QueryRejection>,
) -> Result<Json<SessionOut>, ApiError> {
    let (roast, _) = roast_of(&app, &session, params).await?;
    Ok(Json(SessionOut {
        readings: roast.readings.len(),
        reference: roast.reference.as_ref().map(|r| r.name.clone()),
        roast,
    }))
}

#[derive(Debug, Serialize)]
struct ReferenceOut {
    id: String,
    name: String,
    /// `[t_ms since CHARGE, BT, ET]`.
    points: Vec<(i64, f64, Option<f64>)>,
    events: Vec<roast::ProfileEvent>,
}

/// `[ts, BT, ET, RoR]`.
type CurveReading = (i64, Option<f64>, Option<f64>, Option<f64>);

/// Everything the live view draws for one session.
#[derive(Debug, Serialize)]
struct CurveOut {
    device_id: String,
    session: String,
    state: &'static str,
    live: bool,
    charge_ts: Option<i64>,
    /// `[ts, BT, ET, RoR]`, oldest first.
    readings: Vec<CurveReading>,
    events: Vec<crate::live::Mark>,
    reference: Option<ReferenceOut>,
    prediction: Option<roast::Prediction>,
    summary: roast::Summary,
}

async fn curve(
    State(app): State<App>,
    Path(session): Path<String>,
    params: Result<Query<SessionParams>, QueryRejection>,
) -> Result<Json<CurveOut>, ApiError> {
    let (roast, _) = roast_of(&app, &session, params).await?;
    let summary = roast::summarize(&roast.readings, &roast.events(), roast.weights());
    let mut ror = roast::Ror::new();
    let readings = roast
        .readings
        .iter()
        .map(|r| {
            let bt = temperature(r.bt);
            if let Some(bt) = bt {
                ror.push(r.ts_ms, bt);
            }
            (r.ts_ms, bt, temperature(r.et), bt.and(ror.value()))
        })
        .collect();
    let prediction = prediction_of(&roast);
    Ok(Json(CurveOut {
        device_id: roast.device_id.clone(),
        session: roast.session.clone(),
        state: roast.state,
        live: roast.live,
        charge_ts: summary.charge_ts,
        readings,
        events: roast.events.clone(),
        reference: roast.reference.as_ref().map(|r| ReferenceOut {
            id: r.id.clone(),
            name: r.name.clone(),
            points: r
                .profile
                .points
                .iter()
                .map(|p| (p.t_ms, p.bt, p.et))
                .collect(),
            events: r.profile.events.clone(),
        }),
        prediction,
        summary,
    }))
}

fn prediction_of(roast: &Roast) -> Option<roast::Prediction> {
    roast.prediction.or_else(|| {
        let reference = roast.reference.as_ref()?;
        Some(roast::predict(
            &roast.readings,
            &roast.events(),
            &reference.profile,
        ))
    })
}

#[derive(Debug, Serialize)]
struct SummaryOut {
    device_id: String,
    session: String,
    state: &'static str,
    #[serde(flatten)]
    summary: roast::Summary,
}

async fn summary(
    State(app): State<App>,
    Path(session): Path<String>,
    params: Result<Query<SessionParams>, QueryRejection>,
) -> Result<Json<SummaryOut>, ApiError> {
    let (roast, _) = roast_of(&app, &session, params).await?;
    Ok(Json(SummaryOut {
        summary: roast::summarize(&roast.readings, &roast.events(), roast.weights()),
        device_id: roast.device_id,
        session: roast.session,
        state: roast.state,
    }))
}

#[derive(Debug, Serialize)]
struct VarianceOut {
    device_id: String,
    session: String,
    state: &'static str,
    /// Final once the session has ended or dropped; live (to the newest reading) before.
    #[serde(rename = "final")]
    is_final: bool,
    reference: String,
    #[serde(flatten)]
    variance: roast::Variance,
}

async fn variance(
    State(app): State<App>,
    Path(session): Path<String>,
    params: Result<Query<SessionParams>, QueryRejection>,
) -> Result<Json<VarianceOut>, ApiError> {
    let (roast, p) = roast_of(&app, &session, params).await?;
    let reference = roast.reference.clone().ok_or_else(|| {
        ApiError::NotFound(format!(
            "session {session:?} has no reference profile: set one with PUT /sessions/{session}/reference or name one in its start message"
        ))
    })?;
    let charge = roast
        .events
        .iter()
        .find(|m| m.kind == roast::EventKind::Charge)
        .ok_or_else(|| {
            ApiError::NotFound(format!("session {session:?} has no CHARGE yet to align at"))
        })?
        .ts;
    let step_secs = p
        .step_secs
        .unwrap_or(app.settings.variance_step_secs)
        .clamp(1, 600);
    let variance = roast::variance(
        &roast.readings,
        charge,
        &roast.events(),
        &reference.profile,
        i64::from(step_secs) * 1000,
    );
    let dropped = roast
        .events
        .iter()
        .any(|m| m.kind == roast::EventKind::Drop);
    Ok(Json(VarianceOut {
        is_final: roast.ended_ms.is_some() || dropped,
        reference: reference.name.clone(),
        device_id: roast.device_id,
        session: roast.session,
        state: roast.state,
        variance,
    }))
}

#[derive(Debug, Serialize)]
struct PredictionsOut {
    device_id: String,
    session: String,
    reference: String,
    #[serde(flatten)]
    prediction: roast::Prediction,
    /// The naive baseline: CHARGE plus the reference's time to first crack.
    naive_fc_start_ts: Option<i64>,
}

async fn predictions(
    State(app): State<App>,
    Path(session): Path<String>,
    params: Result<Query<SessionParams>, QueryRejection>,
) -> Result<Json<PredictionsOut>, ApiError> {
    let (roast, _) = roast_of(&app, &session, params).await?;
    let reference = roast.reference.clone().ok_or_else(|| {
        ApiError::NotFound(format!(
            "session {session:?} has no reference profile to predict from"
        ))
    })?;
    let prediction = prediction_of(&roast)
        .ok_or_else(|| ApiError::internal("a session with a reference gave no prediction"))?;
    let charge = roast
        .events
        .iter()
        .find(|m| m.kind == roast::EventKind::Charge)
        .map(|m| m.ts);
    Ok(Json(PredictionsOut {
        naive_fc_start_ts: charge.and_then(|c| roast::naive_fc_start(c, &reference.profile)),
        reference: reference.name.clone(),
        device_id: roast.device_id,
        session: roast.session,
        prediction,
    }))
}

#[derive(Debug, Serialize)]
struct SessionReferenceOut {
    session: String,
    /// The profile's id and name; `set` says whether through the API (else the start message).
    id: String,
    name: String,
    set: bool,
}

async fn reference(
    State(app): State<App>,
    Path(session): Path<String>,
    params: Result<Query<SessionParams>, QueryRejection>,
) -> Result<Json<SessionReferenceOut>, ApiError> {
    let (roast, _) = roast_of(&app, &session, params).await?;
    let set = app.store.reference(&session).await.map_err(store_error)?;
    let r = roast
        .reference
        .ok_or_else(|| ApiError::NotFound(format!("session {session:?} has no reference")))?;
    Ok(Json(SessionReferenceOut {
        set: set.as_deref() == Some(r.id.as_str()),
        session,
        id: r.id.clone(),
        name: r.name.clone(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetReference {
    /// A profile's id or name.
    profile: String,
}

async fn set_reference(
    State(app): State<App>,
    Path(session): Path<String>,
    body: Result<Json<SetReference>, JsonRejection>,
) -> Result<Json<SessionReferenceOut>, ApiError> {
    checked("session", &session)?;
    let body = json(body)?;
    checked("profile", &body.profile)?;
    let named = app
        .profile(&body.profile)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no profile {:?}", body.profile)))?;
    app.store
        .set_reference(&session, &named.id, model::now_ms())
        .await
        .map_err(store_error)?;
    let out = SessionReferenceOut {
        session: session.clone(),
        id: named.id.clone(),
        name: named.name.clone(),
        set: true,
    };
    let named = std::sync::Arc::new(named);
    if let Ok(mut live) = app.live.lock() {
        for key in live.keys_of(&session) {
            live.set_reference(&key, Some(named.clone()));
        }
    }
    Ok(Json(out))
}

// The live push.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveParams {
    /// Points and predictions of this session too (else only session changes and events).
    session: Option<String>,
}

/// Server-Sent Events: `session` and `event` updates of every session, and the `point` and
/// `prediction` updates of the one watched. A page that falls behind gets `resync` and reloads.
async fn live(
    State(app): State<App>,
    params: Result<Query<LiveParams>, QueryRejection>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let p = query(params)?;
    if let Some(s) = &p.session {
        checked("session", s)?;
    }
    let rx = app.updates.subscribe();
    crate::metrics::page_opened();
    let stream = futures::stream::unfold((rx, p.session), |(mut rx, watched)| async move {
        loop {
            match rx.recv().await {
                Ok(u) => {
                    let wanted = u.is_fleet_wide() || watched.as_deref() == Some(u.session());
                    if !wanted {
                        continue;
                    }
                    let event = Event::default()
                        .event(u.name())
                        .json_data(&u)
                        .unwrap_or_else(|_| Event::default().event("resync").data("{}"));
                    return Some((Ok(event), (rx, watched)));
                }
                Err(RecvError::Lagged(_)) => {
                    let event = Event::default().event("resync").data("{}");
                    return Some((Ok(event), (rx, watched)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
