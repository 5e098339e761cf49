//! The seed's routes, same shapes, for existing clients:
//! `POST /api/addJob`, `GET /api/status`, `GET /api/status/{id}`,
//! `GET /api/results/{id}/{file}`, `GET /api/deleteJob/{id}`
//! (`GET /auth/{user}/{password}` is in [`crate::auth`]).

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

use kumulus_core::job::JobRecord;
use kumulus_core::ports::ListQuery;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::{files, jobs, AppState};

/// `{"id","status","outputFiles"}` with the seed's state names; the files
/// are links to the seed's results route.
fn status_of(rec: &JobRecord) -> Value {
    let files: Vec<String> = rec
        .files
        .iter()
        .map(|f| format!("/api/results/{}/{}", rec.id, f.replace('/', "%2F")))
        .collect();
    json!({"id": rec.id, "status": rec.state.seed_name(), "outputFiles": files})
}

/// Takes JSON, or an HTML form as the seed's Express server did.
pub async fn add_job(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    let key = crate::idempotency::key_of(&headers)?;
    let body = crate::body::read_within(body, state.body_limit, state.body_timeout).await?;
    let value = if crate::body::is_form(&headers) {
        crate::body::form(&body)?
    } else {
        crate::body::json(&body)?
    };
    let rec = jobs::submit_keyed(&state, &caller.0.username, &value, key.as_deref())
        .await?
        .record;
    Ok(Json(json!({"jobId": rec.id})))
}

/// Most jobs the seed's status list returns (it has no paging).
const SEED_LIST_MAX: usize = 1000;

pub async fn status_all(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let jobs = state
        .ports
        .store
        .list(
            &caller.0.username,
            &ListQuery {
                state: None,
                before: None,
                limit: SEED_LIST_MAX,
            },
        )
        .await?;
    Ok(Json(Value::Array(jobs.iter().map(status_of).collect())))
}

pub async fn status_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let rec = jobs::own_job(&state, &caller, &id).await?;
    Ok(Json(status_of(&rec)))
}

/// `file` is a name from `outputFiles` (`%2F` for folders), or an output
/// file's name without the `output/` prefix, as the seed had it.
pub async fn results(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let rec = jobs::own_job(&state, &caller, &id).await?;
    let name = if rec.files.iter().any(|f| f == &file) {
        file
    } else {
        format!("output/{file}")
    };
    files::stream(&state, &rec, &name).await
}

/// The seed's answer whatever the job's state: an active job is
/// cancelled, an ended one removed with its files.
pub async fn delete_job(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<String, ApiError> {
    let done = jobs::cancel_or_remove(&state, &caller, &id).await?;
    Ok(format!("El trabajo {} ha sido eliminado.", done.id()))
}
