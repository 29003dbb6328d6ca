//! The fleet API (JSON).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use kit::http::ApiError;

use crate::{FleetError, FleetSpec, FleetView, Fleets};

pub(crate) fn router(fleets: Arc<Fleets>) -> Router {
    Router::new()
        .route("/fleets", get(list).post(start))
        .route("/fleets/{id}", get(one).delete(stop))
        .with_state(fleets)
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::Invalid(_) | FleetError::TooMany { .. } => {
                ApiError::BadRequest(e.to_string())
            }
            FleetError::NotFound(_) => ApiError::NotFound(e.to_string()),
            FleetError::Mqtt(_) => ApiError::Unavailable(e.to_string()),
        }
    }
}

async fn list(State(fleets): State<Arc<Fleets>>) -> Json<Vec<FleetView>> {
    Json(fleets.list())
}

async fn start(
    State(fleets): State<Arc<Fleets>>,
    spec: Result<Json<FleetSpec>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<FleetView>), ApiError> {
    let Json(spec) = spec.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let id = fleets.start(spec).await?;
    let view = fleets
        .get(&id)
        .ok_or_else(|| ApiError::internal("a fleet vanished right after it started"))?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn one(
    State(fleets): State<Arc<Fleets>>,
    Path(id): Path<String>,
) -> Result<Json<FleetView>, ApiError> {
    fleets
        .get(&id)
        .map(Json)
        .ok_or_else(|| FleetError::NotFound(id).into())
}

async fn stop(
    State(fleets): State<Arc<Fleets>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    fleets.stop(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
