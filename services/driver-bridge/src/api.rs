//! `GET /devices`, `GET /devices/{id}` (JSON).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use kit::http::ApiError;

use crate::Bridge;
use crate::device::DeviceView;

pub(crate) fn router(bridge: Arc<Bridge>) -> Router {
    Router::new()
        .route("/devices", get(list))
        .route("/devices/{id}", get(one))
        .with_state(bridge)
}

async fn list(State(bridge): State<Arc<Bridge>>) -> Json<Vec<DeviceView>> {
    Json(bridge.views())
}

async fn one(
    State(bridge): State<Arc<Bridge>>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    bridge
        .views()
        .into_iter()
        .find(|v| v.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no device {id:?}")))
}
