//! `/health`, `/health/load` (the autoscaler's latest observations) and
//! `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

use kumulus_core::observation::Observation;

use crate::error::ApiError;
use crate::AppState;

/// Observations `/health/load` returns (the seed's: the last 10 periods).
const LOAD_WINDOW: usize = 10;

pub async fn health(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    state.ports.store.ping().await?;
    Ok(Json(
        json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
    ))
}

pub async fn load(State(state): State<Arc<AppState>>) -> Result<Json<Vec<Observation>>, ApiError> {
    Ok(Json(state.ports.observations.recent(LOAD_WINDOW).await?))
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
