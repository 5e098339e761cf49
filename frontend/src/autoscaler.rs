//! `/api/autoscaler`: the autoscaler's recent decisions and observations,
//! for the web UI's autoscaler page.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use std::collections::HashMap;
use std::sync::Arc;

use kumulus_core::observation::DECISIONS_KEPT;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::AutoscalerView;
use crate::AppState;

/// Observations returned with the decisions (the frontends keep 100).
const OBSERVATIONS: usize = 100;

#[utoipa::path(
    get,
    path = "/api/autoscaler",
    operation_id = "autoscaler",
    tag = "service",
    summary = "The autoscaler's recent decisions and observations, newest first",
    description = "Aggregates only: no job or user appears in it. Empty until the autoscaler has decided once.",
    security(("bearer" = [])),
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 360, description = "Decisions to return (all that are kept, up to 360, unless given)")
    ),
    responses(
        (status = 200, description = "Decisions and observations", body = AutoscalerView),
        (status = 400, description = "The query string cannot be read", body = crate::openapi::ErrorBody),
        (status = 422, description = "An unknown parameter, or one out of range", body = crate::openapi::ErrorBody)
    )
)]
pub async fn history(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<AutoscalerView>, ApiError> {
    let params = crate::query::params(query, &["limit"])?;
    let limit = crate::query::limit(&params, DECISIONS_KEPT, DECISIONS_KEPT)?;
    let feed = &state.ports.observations;
    Ok(Json(AutoscalerView {
        decisions: feed.decisions(limit).await?,
        observations: feed.recent(OBSERVATIONS).await?,
    }))
}
