//! HTTP: proposals and their decisions, their history and a stream of state changes, the audit
//! chain's check, the device key registry and the service's own public key. Described by
//! `GET /openapi.json` (src/openapi.json, checked against this router by the service's tests).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use store::{AuditEntry, ChainReport, CommandRecord, DeviceKey};
use tokio::sync::broadcast::error::RecvError;

use crate::app::{App, Proposal, state};
use crate::auth::Tokens;
use crate::error::{ApiErr, store_error};

#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) app: App,
    pub(crate) tokens: Tokens,
}

const OPENAPI: &str = include_str!("openapi.json");

pub(crate) fn router(api: Api) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/proposals", get(list).post(propose))
        .route("/proposals/stream", get(stream))
        .route("/proposals/{id}", get(one))
        .route("/proposals/{id}/history", get(history))
        .route("/proposals/{id}/approve", post(approve))
        .route("/proposals/{id}/reject", post(reject))
        .route("/audit/verify", get(verify))
        .route(
            "/devices/{device_id}/keys",
            get(device_keys).post(register_key),
        )
        .route(
            "/devices/{device_id}/keys/{key_id}/confirm",
            post(confirm_key),
        )
        .route(
            "/devices/{device_id}/keys/{key_id}/revoke",
            post(revoke_key),
        )
        .route("/keys/command", get(command_keys))
        .with_state(api)
}

async fn openapi() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

fn json<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiErr> {
    body.map(|Json(t)| t)
        .map_err(|e| ApiErr::bad_request("invalid_body", e.body_text()))
}

async fn propose(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<Proposal>, JsonRejection>,
) -> Result<(StatusCode, Json<CommandRecord>), ApiErr> {
    let caller = api.tokens.caller(&headers)?;
    let p = json(body)?;
    let created = api.app.propose(&caller, p).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    device_id: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
}

async fn list(
    State(api): State<Api>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Vec<CommandRecord>>, ApiErr> {
    api.tokens.caller(&headers)?;
    let Query(p) = params.map_err(|e| ApiErr::bad_request("invalid_query", e.body_text()))?;
    if let Some(s) = &p.state
        && !state::ALL.contains(&s.as_str())
    {
        return Err(ApiErr::bad_request(
            "invalid_state",
            format!("state {s:?}: one of {}", state::ALL.join(", ")),
        ));
    }
    let list = api
        .app
        .store
        .commands(
            p.device_id.as_deref(),
            p.state.as_deref(),
            p.limit.unwrap_or(100).clamp(1, 1000),
        )
        .await
        .map_err(store_error)?;
    Ok(Json(list))
}

async fn one(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CommandRecord>, ApiErr> {
    api.tokens.caller(&headers)?;
    api.app
        .store
        .command(&id)
        .await
        .map_err(store_error)?
        .map(Json)
        .ok_or_else(|| ApiErr::not_found(format!("no proposal {id:?}")))
}

#[derive(Debug, Serialize)]
struct HistoryItem {
    seq: i64,
    ts_ms: i64,
    actor: String,
    action: String,
    reason: String,
    detail: serde_json::Value,
}

async fn history(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Vec<HistoryItem>>, ApiErr> {
    api.tokens.caller(&headers)?;
    let entries: Vec<AuditEntry> = api.app.store.history(&id).await.map_err(store_error)?;
    if entries.is_empty() {
        return Err(ApiErr::not_found(format!("no proposal {id:?}")));
    }
    Ok(Json(
        entries
            .into_iter()
            .map(|e| HistoryItem {
                seq: e.seq,
                ts_ms: e.ts_ms,
                actor: e.actor,
                action: e.action,
                reason: e.reason,
                detail: serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::Null),
            })
            .collect(),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    reason: Option<String>,
}

async fn decide(
    api: Api,
    headers: HeaderMap,
    id: String,
    body: Option<Json<Decision>>,
    approve: bool,
) -> Result<Json<CommandRecord>, ApiErr> {
    let caller = api.tokens.caller(&headers)?;
    let reason = body.and_then(|Json(d)| d.reason);
    Ok(Json(api.app.decide(&caller, &id, approve, reason).await?))
}

async fn approve(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<Decision>>,
) -> Result<Json<CommandRecord>, ApiErr> {
    decide(api, headers, id, body, true).await
}

async fn reject(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<Decision>>,
) -> Result<Json<CommandRecord>, ApiErr> {
    decide(api, headers, id, body, false).await
}

/// Server-Sent Events: one `state` event per transition; a client that falls behind gets
/// `resync` and reads the list again.
async fn stream(
    State(api): State<Api>,
    headers: HeaderMap,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, ApiErr> {
    api.tokens.caller(&headers)?;
    let rx = api.app.changes.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(change) => Event::default()
                .event("state")
                .json_data(&change)
                .unwrap_or_else(|_| Event::default().event("resync").data("{}")),
            Err(RecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[derive(Debug, Serialize)]
struct VerifyOut {
    ok: bool,
    entries: Option<u64>,
    head: Option<String>,
    broken_at: Option<i64>,
    reason: Option<String>,
}

async fn verify(State(api): State<Api>, headers: HeaderMap) -> Result<Json<VerifyOut>, ApiErr> {
    api.tokens.caller(&headers)?;
    let report = api.app.store.verify_audit().await.map_err(store_error)?;
    Ok(Json(match report {
        ChainReport::Ok { entries, head } => VerifyOut {
            ok: true,
            entries: Some(entries),
            head: Some(head),
            broken_at: None,
            reason: None,
        },
        ChainReport::Broken { seq, reason } => VerifyOut {
            ok: false,
            entries: None,
            head: None,
            broken_at: Some(seq),
            reason: Some(reason),
        },
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    key_id: String,
    public_key: String,
    /// Where the private key was made and lives (`keys::Keystore::describe`), for the audit.
    #[serde(default)]
    keystore: Option<String>,
}

async fn register_key(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(device_id): Path<String>,
    body: Result<Json<NewKey>, JsonRejection>,
) -> Result<(StatusCode, Json<DeviceKey>), ApiErr> {
    let caller = api.tokens.caller(&headers)?;
    let k = json(body)?;
    let key = api
        .app
        .register_key(
            &caller,
            &device_id,
            &k.key_id,
            &k.public_key,
            k.keystore.as_deref(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(key)))
}

async fn device_keys(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(device_id): Path<String>,
) -> Result<Json<Vec<DeviceKey>>, ApiErr> {
    api.tokens.caller(&headers)?;
    Ok(Json(
        api.app
            .store
            .device_keys(&device_id)
            .await
            .map_err(store_error)?,
    ))
}

async fn confirm_key(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((device_id, key_id)): Path<(String, String)>,
) -> Result<Json<DeviceKey>, ApiErr> {
    let caller = api.tokens.caller(&headers)?;
    Ok(Json(
        api.app.key_op(&caller, &device_id, &key_id, false).await?,
    ))
}

async fn revoke_key(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((device_id, key_id)): Path<(String, String)>,
) -> Result<Json<DeviceKey>, ApiErr> {
    let caller = api.tokens.caller(&headers)?;
    Ok(Json(
        api.app.key_op(&caller, &device_id, &key_id, true).await?,
    ))
}

#[derive(Debug, Serialize)]
struct PublicKeyOut {
    key_id: String,
    public_key: String,
}

/// Public: what devices (driver-bridge) trust commands by.
async fn command_keys(State(api): State<Api>) -> Json<Vec<PublicKeyOut>> {
    Json(vec![PublicKeyOut {
        key_id: api.app.key.label().to_owned(),
        public_key: api.app.key.public_key().to_base64(),
    }])
}
