//! The seed's routes, same shapes, for existing clients:
//! `POST /api/addJob`, `GET /api/status`, `GET /api/status/{id}`,
//! `GET /api/results/{id}/{file}`, `GET /api/deleteJob/{id}`
//! (`GET /auth/{user}/{password}` is in [`crate::auth`]).

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use std::sync::Arc;

use kumulus_core::job::JobRecord;
use kumulus_core::ports::ListQuery;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::{SeedJobId, SeedStatus};
use crate::{files, jobs, AppState};

/// `{"id","status","outputFiles"}` with the seed's state names; the files
/// are links to the seed's results route.
fn status_of(rec: &JobRecord) -> SeedStatus {
    SeedStatus {
        id: rec.id,
        status: rec.state.seed_name().to_string(),
        output_files: rec
            .files
            .iter()
            .map(|f| format!("/api/results/{}/{}", rec.id, f.replace('/', "%2F")))
            .collect(),
    }
}

/// Takes JSON, or an HTML form as the seed's Express server did.
#[utoipa::path(
    post,
    path = "/api/addJob",
    operation_id = "seedAddJob",
    tag = "seed",
    summary = "Submit a job (the seed's route)",
    description = "The same submission as `POST /api/jobs`, as JSON or as an HTML form, with the same `Idempotency-Key`.",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "As for `POST /api/jobs`")
    ),
    request_body(content(
        (crate::openapi::Submission = "application/json"),
        (crate::openapi::SubmissionForm = "application/x-www-form-urlencoded")
    )),
    responses(
        (status = 200, description = "Accepted and queued", body = SeedJobId,
            links(("seedStatus" = (operation_id = "seedStatus", parameters(("id" = "$response.body#/jobId")))))),
        (status = 409, description = "A request with this Idempotency-Key is still being answered", body = crate::openapi::ErrorBody),
        (status = 422, description = "A field is invalid, or the Idempotency-Key was used with another body", body = crate::openapi::ErrorBody),
        (status = 507, description = "The store is full", body = crate::openapi::ErrorBody)
    )
)]
pub async fn add_job(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<SeedJobId>, ApiError> {
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
    Ok(Json(SeedJobId { job_id: rec.id }))
}

/// Most jobs the seed's status list returns (it has no paging).
const SEED_LIST_MAX: usize = 1000;

#[utoipa::path(
    get,
    path = "/api/status",
    operation_id = "seedStatusAll",
    tag = "seed",
    summary = "Your jobs' states (the seed's route; the newest 1000)",
    security(("bearer" = [])),
    responses((status = 200, description = "Your jobs", body = Vec<SeedStatus>,
        links(
            ("seedStatus" = (operation_id = "seedStatus", parameters(("id" = "$response.body#/0/id")))),
            ("seedDeleteJob" = (operation_id = "seedDeleteJob", parameters(("id" = "$response.body#/0/id"))))
        )))
)]
pub async fn status_all(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<SeedStatus>>, ApiError> {
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
    Ok(Json(jobs.iter().map(status_of).collect()))
}

#[utoipa::path(
    get,
    path = "/api/status/{id}",
    operation_id = "seedStatus",
    tag = "seed",
    summary = "A job's state (the seed's route)",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job", body = SeedStatus),
        (status = 404, description = "No such job of yours", body = crate::openapi::ErrorBody)
    )
)]
pub async fn status_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SeedStatus>, ApiError> {
    let rec = jobs::own_job(&state, &caller, &id).await?;
    Ok(Json(status_of(&rec)))
}

/// `file` is a name from `outputFiles` (`%2F` for folders), or an output
/// file's name without the `output/` prefix, as the seed had it.
#[utoipa::path(
    get,
    path = "/api/results/{id}/{file}",
    operation_id = "seedResults",
    tag = "seed",
    summary = "Download a job's file (the seed's route)",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The job's id"),
        ("file" = String, Path, description = "A name from `outputFiles`, or an output file's name without `output/`")
    ),
    responses(
        (status = 200, description = "The file, as an attachment", content_type = "*/*", body = Vec<u8>),
        (status = 307, description = "The file, from the object store directly (when `s3.presign_secs` is set)",
            headers(("Location" = String, description = "A presigned URL"))),
        (status = 404, description = "No such job of yours, or no such file", body = crate::openapi::ErrorBody)
    )
)]
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
#[utoipa::path(
    get,
    path = "/api/deleteJob/{id}",
    operation_id = "seedDeleteJob",
    tag = "seed",
    summary = "Cancel or delete a job (the seed's route)",
    description = "Whatever the job's state, the seed's answer: an active job is cancelled, an ended one deleted with its files.",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "`El trabajo {id} ha sido eliminado.`", body = String, content_type = "text/plain"),
        (status = 404, description = "No such job of yours", body = crate::openapi::ErrorBody)
    )
)]
pub async fn delete_job(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<String, ApiError> {
    let done =
        jobs::cancel_or_remove(&state, &caller, &id, jobs::WhenActive::KeepCancelled).await?;
    Ok(format!("El trabajo {} ha sido eliminado.", done.id()))
}
