//! The queue's HTTP API (JSON). Submitters: `POST /missions`, `GET /missions`, `GET
//! /missions/{id}` (with its attempts). Workers: `POST /missions/claim`, then with the lease
//! token of their claim `POST /missions/{id}/heartbeat`, `/complete` or `/fail`; a claim that
//! no longer holds its mission (its lease ran out, another worker has it) gets `409`.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kit::http::ApiError;
use serde::{Deserialize, Serialize};
use store::{Mission, MissionsStore, NewMission, Retry};

use crate::config::Settings;

#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) store: MissionsStore,
    pub(crate) settings: Arc<Settings>,
}

pub(crate) fn router(api: Api) -> Router {
    Router::new()
        .route("/missions", get(list).post(submit))
        .route("/missions/claim", post(claim))
        .route("/missions/{id}", get(one))
        .route("/missions/{id}/heartbeat", post(heartbeat))
        .route("/missions/{id}/complete", post(complete))
        .route("/missions/{id}/fail", post(fail))
        .with_state(api)
}

/// A mission as the API shows it: its payload and result as JSON, not as text.
#[derive(Debug, Serialize)]
struct MissionOut {
    id: String,
    kind: String,
    payload: serde_json::Value,
    priority: i32,
    idempotency_key: Option<String>,
    state: String,
    attempts: i32,
    max_attempts: i32,
    not_before_ms: i64,
    deadline_ms: Option<i64>,
    created_ms: i64,
    updated_ms: i64,
    lease_owner: Option<String>,
    lease_expires_ms: Option<i64>,
    result: Option<serde_json::Value>,
    trace_id: Option<String>,
}

impl From<Mission> for MissionOut {
    fn from(m: Mission) -> Self {
        let json = |text: &str| {
            serde_json::from_str(text).unwrap_or(serde_json::Value::String(text.to_owned()))
        };
        MissionOut {
            payload: json(&m.payload),
            result: m.result.as_deref().map(json),
            id: m.id,
            kind: m.kind,
            priority: m.priority,
            idempotency_key: m.idempotency_key,
            state: m.state,
            attempts: m.attempts,
            max_attempts: m.max_attempts,
            not_before_ms: m.not_before_ms,
            deadline_ms: m.deadline_ms,
            created_ms: m.created_ms,
            updated_ms: m.updated_ms,
            lease_owner: m.lease_owner,
            lease_expires_ms: m.lease_expires_ms,
            trace_id: m.trace_id,
        }
    }
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(t)| t)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// 1–64 of `[A-Za-z0-9._:-]`, like every id of the platform.
fn check_name(what: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "{what} {value:?}: 1-64 characters of [A-Za-z0-9._:-]"
        )))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Submit {
    kind: String,
    #[serde(default)]
    payload: serde_json::Value,
    #[serde(default)]
    priority: i32,
    idempotency_key: Option<String>,
    max_attempts: Option<u32>,
    not_before_ms: Option<i64>,
    deadline_ms: Option<i64>,
    trace_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct Submitted {
    /// False when the idempotency key already had this mission.
    created: bool,
    mission: MissionOut,
}

async fn submit(
    State(api): State<Api>,
    b: Result<Json<Submit>, JsonRejection>,
) -> Result<Response, ApiError> {
    let s = body(b)?;
    check_name("kind", &s.kind)?;
    if let Some(key) = &s.idempotency_key
        && (key.is_empty() || key.len() > 200)
    {
        return Err(ApiError::BadRequest(
            "idempotency_key: 1-200 characters".into(),
        ));
    }
    let payload = s.payload.to_string();
    if payload.len() > api.settings.max_payload_bytes {
        return Err(ApiError::TooLarge(format!(
            "payload: {} bytes, more than {}",
            payload.len(),
            api.settings.max_payload_bytes
        )));
    }
    let max_attempts = s
        .max_attempts
        .unwrap_or(api.settings.default_max_attempts)
        .clamp(1, 100);
    let now = model::now_ms();
    let m = NewMission {
        id: format!("mis-{}", uuid::Uuid::new_v4().simple()),
        kind: s.kind,
        payload,
        priority: s.priority,
        idempotency_key: s.idempotency_key,
        max_attempts: i32::try_from(max_attempts).unwrap_or(100),
        not_before_ms: s.not_before_ms.unwrap_or(now),
        deadline_ms: s.deadline_ms,
        trace_id: s.trace_id,
    };
    let (mission, created) = api
        .store
        .submit(&m, now)
        .await
        .map_err(ApiError::internal)?;
    crate::metrics::submitted(created);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let out = Submitted {
        created,
        mission: mission.into(),
    };
    Ok((status, Json(out)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    state: Option<String>,
    limit: Option<u32>,
}

async fn list(
    State(api): State<Api>,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Vec<MissionOut>>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if let Some(s) = &q.state
        && ![
            store::missions::state::QUEUED,
            store::missions::state::RUNNING,
            store::missions::state::DONE,
            store::missions::state::DEAD,
        ]
        .contains(&s.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "state {s:?}: one of queued, running, done, dead"
        )));
    }
    let missions = api
        .store
        .list(q.state.as_deref(), q.limit.unwrap_or(100).clamp(1, 1000))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(missions.into_iter().map(MissionOut::from).collect()))
}

#[derive(Debug, Serialize)]
struct OneOut {
    #[serde(flatten)]
    mission: MissionOut,
    attempts_made: Vec<store::Attempt>,
}

async fn one(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<OneOut>, ApiError> {
    let mission = api
        .store
        .get(&id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("no mission {id}")))?;
    let attempts_made = api.store.attempts(&id).await.map_err(ApiError::internal)?;
    Ok(Json(OneOut {
        mission: mission.into(),
        attempts_made,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Claim {
    worker: String,
    kinds: Vec<String>,
    lease_secs: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Claimed {
    /// Give it back with every heartbeat, completion or failure of this claim.
    lease_token: String,
    mission: MissionOut,
}

/// `200` with the mission and the claim's lease token; `204` when there is nothing to do.
async fn claim(
    State(api): State<Api>,
    b: Result<Json<Claim>, JsonRejection>,
) -> Result<Response, ApiError> {
    let c = body(b)?;
    check_name("worker", &c.worker)?;
    if c.kinds.is_empty() || c.kinds.len() > 50 {
        return Err(ApiError::BadRequest("kinds: 1-50 mission kinds".into()));
    }
    for k in &c.kinds {
        check_name("kind", k)?;
    }
    let lease_ms = lease_ms(&api.settings, c.lease_secs)?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let claimed = api
        .store
        .claim(&c.worker, &c.kinds, &token, lease_ms, model::now_ms())
        .await
        .map_err(ApiError::internal)?;
    Ok(match claimed {
        Some(m) => {
            crate::metrics::claimed();
            let out = Claimed {
                lease_token: token,
                mission: m.into(),
            };
            (StatusCode::OK, Json(out)).into_response()
        }
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

fn lease_ms(settings: &Settings, asked: Option<u64>) -> Result<i64, ApiError> {
    let secs = asked.unwrap_or(settings.default_lease_secs);
    if secs == 0 || secs > settings.max_lease_secs {
        return Err(ApiError::BadRequest(format!(
            "lease_secs {secs}: 1..={}",
            settings.max_lease_secs
        )));
    }
    Ok(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX))
}

fn lease_lost(id: &str) -> ApiError {
    ApiError::Conflict(format!(
        "this claim no longer holds mission {id}: its lease ran out (another worker may hold it) or it has ended"
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Heartbeat {
    lease_token: String,
    lease_secs: Option<u64>,
}

async fn heartbeat(
    State(api): State<Api>,
    Path(id): Path<String>,
    b: Result<Json<Heartbeat>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let h = body(b)?;
    let lease_ms = lease_ms(&api.settings, h.lease_secs)?;
    let now = model::now_ms();
    if api
        .store
        .heartbeat(&id, &h.lease_token, lease_ms, now)
        .await
        .map_err(ApiError::internal)?
    {
        Ok(Json(
            serde_json::json!({ "lease_expires_ms": now + lease_ms }),
        ))
    } else {
        Err(lease_lost(&id))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Complete {
    lease_token: String,
    #[serde(default)]
    result: serde_json::Value,
}

async fn complete(
    State(api): State<Api>,
    Path(id): Path<String>,
    b: Result<Json<Complete>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let c = body(b)?;
    let result = c.result.to_string();
    if result.len() > api.settings.max_payload_bytes {
        return Err(ApiError::TooLarge(format!(
            "result: {} bytes, more than {}",
            result.len(),
            api.settings.max_payload_bytes
        )));
    }
    if api
        .store
        .complete(&id, &c.lease_token, &result, model::now_ms())
        .await
        .map_err(ApiError::internal)?
    {
        crate::metrics::ended("done", 1);
        Ok(Json(
            serde_json::json!({ "state": store::missions::state::DONE }),
        ))
    } else {
        Err(lease_lost(&id))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fail {
    lease_token: String,
    reason: String,
}

async fn fail(
    State(api): State<Api>,
    Path(id): Path<String>,
    b: Result<Json<Fail>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let f = body(b)?;
    let reason = f.reason.trim();
    if reason.is_empty() || reason.len() > 2000 {
        return Err(ApiError::BadRequest("reason: 1-2000 characters".into()));
    }
    let attempts = api
        .store
        .get(&id)
        .await
        .map_err(ApiError::internal)?
        .map_or(1, |m| m.attempts);
    let retry = api
        .store
        .fail(
            &id,
            &f.lease_token,
            reason,
            api.settings.backoff_ms(attempts),
            model::now_ms(),
        )
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| lease_lost(&id))?;
    Ok(Json(match retry {
        Retry::Queued { not_before_ms } => {
            crate::metrics::ended("failed", 1);
            serde_json::json!({ "state": store::missions::state::QUEUED, "not_before_ms": not_before_ms })
        }
        Retry::Dead => {
            crate::metrics::ended("dead", 1);
            serde_json::json!({ "state": store::missions::state::DEAD })
        }
    }))
}
