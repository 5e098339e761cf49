//! `/health`, `/health/load` (the autoscaler's latest observations) and
//! `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use std::sync::Arc;

use kumulus_core::observation::Observation;

use crate::error::ApiError;
use crate::openapi::Health;
use crate::AppState;

/// Observations `/health/load` returns (the seed's: the last 10 periods).
const LOAD_WINDOW: usize = 10;

#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "service",
    summary = "Whether the service and its job store answer",
    responses(
        (status = 200, description = "Up", body = Health),
        (status = 503, description = "The job store does not answer", body = crate::openapi::ErrorBody)
    )
)]
pub async fn health(State(state): State<Arc<AppState>>) -> Result<Json<Health>, ApiError> {
    state.ports.store.ping().await?;
    Ok(Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    }))
}

#[utoipa::path(
    get,
    path = "/health/load",
    operation_id = "load",
    tag = "service",
    summary = "The autoscaler's latest observations, newest first (the seed's)",
    responses(
        (status = 200, description = "Up to the last 10 periods", body = Vec<Observation>),
        (status = 503, description = "The observations cannot be read", body = crate::openapi::ErrorBody)
    )
)]
pub async fn load(State(state): State<Arc<AppState>>) -> Result<Json<Vec<Observation>>, ApiError> {
    Ok(Json(state.ports.observations.recent(LOAD_WINDOW).await?))
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "service",
    summary = "Prometheus metrics",
    responses((status = 200, description = "The text exposition format", body = String, content_type = "text/plain"))
)]
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
