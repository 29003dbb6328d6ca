//! The sim-twin HTTP API (JSON): `POST /simulate` runs a roast, `GET /profiles` lists the
//! built-in profiles.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use kit::http::ApiError;

use sim_engine::{self as engine, Event, Profile, RoastConfig, Sample};

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) max_samples: u64,
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/simulate", post(simulate))
        .route("/profiles", get(profiles))
        .with_state(state)
}

/// `POST /simulate`. Every field is optional; what is missing comes from
/// [`RoastConfig::default`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimulateRequest {
    /// A built-in profile's name, or a whole profile object.
    profile: Option<serde_json::Value>,
    seed: Option<u64>,
    batch_g: Option<f64>,
    moisture_pct: Option<f64>,
    charge_et_c: Option<f64>,
    ambient_c: Option<f64>,
    sample_interval_ms: Option<u64>,
}

impl SimulateRequest {
    fn into_config(self) -> Result<RoastConfig, ApiError> {
        let defaults = RoastConfig::default();
        let profile = match self.profile {
            None => defaults.profile,
            Some(serde_json::Value::String(name)) => {
                engine::builtin_profile(&name).ok_or_else(|| {
                    let names: Vec<String> = engine::builtin_profiles()
                        .into_iter()
                        .map(|p| p.name)
                        .collect();
                    ApiError::BadRequest(format!(
                        "unknown profile {name:?}; built-in profiles are {}",
                        names.join(", ")
                    ))
                })?
            }
            Some(value @ serde_json::Value::Object(_)) => serde_json::from_value(value)
                .map_err(|e| ApiError::BadRequest(format!("profile: {e}")))?,
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "profile must be a built-in profile's name or a profile object".into(),
                ));
            }
        };
        Ok(RoastConfig {
            profile,
            seed: self.seed.unwrap_or(defaults.seed),
            batch_g: self.batch_g.unwrap_or(defaults.batch_g),
            moisture_pct: self.moisture_pct.unwrap_or(defaults.moisture_pct),
            charge_et_c: self.charge_et_c.unwrap_or(defaults.charge_et_c),
            ambient_c: self.ambient_c.unwrap_or(defaults.ambient_c),
            sample_interval_ms: self
                .sample_interval_ms
                .unwrap_or(defaults.sample_interval_ms),
            // Not offered over HTTP yet: a roast from its charge, as before.
            pre_charge_ms: defaults.pre_charge_ms,
        })
    }
}

#[derive(Serialize)]
struct SimulateResponse<'a> {
    samples: &'a [Sample],
    events: &'a [Event],
    profile: &'a Profile,
    /// The inputs the roast ran with, defaults filled in: enough to replay it.
    config: ConfigEcho,
}

#[derive(Serialize)]
struct ConfigEcho {
    seed: u64,
    batch_g: f64,
    moisture_pct: f64,
    charge_et_c: f64,
    ambient_c: f64,
    sample_interval_ms: u64,
}

async fn simulate(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    // An empty body is the default roast; no Content-Type is required for JSON.
    let request: SimulateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SimulateRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))?
    };
    let config = request.into_config()?;
    config
        .validate()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let most = config.max_samples();
    if most > state.max_samples {
        return Err(ApiError::BadRequest(format!(
            "this roast could produce up to {most} samples (max_duration_s {} at sample_interval_ms {}); \
             at most {} are returned: raise sample_interval_ms or lower max_duration_s",
            config.profile.max_duration_s, config.sample_interval_ms, state.max_samples
        )));
    }
    // Milliseconds of CPU for a long roast at a fine interval, and its JSON: off the executor.
    let body = tokio::task::spawn_blocking(move || {
        let roast = engine::simulate(&config).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        crate::metrics::simulated(roast.samples.len());
        let response = SimulateResponse {
            samples: &roast.samples,
            events: &roast.events,
            profile: &config.profile,
            config: ConfigEcho {
                seed: config.seed,
                batch_g: config.batch_g,
                moisture_pct: config.moisture_pct,
                charge_et_c: config.charge_et_c,
                ambient_c: config.ambient_c,
                sample_interval_ms: config.sample_interval_ms,
            },
        };
        serde_json::to_vec(&response).map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn profiles() -> Json<Vec<Profile>> {
    Json(engine::builtin_profiles())
}
