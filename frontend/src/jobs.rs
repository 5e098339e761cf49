//! `/api/jobs`: submit, list, show and cancel jobs. The operations here are
//! shared with the seed's routes ([`crate::seed`]).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

use kumulus_core::event::{EventKind, Outcome, StatusEvent};
use kumulus_core::job::{JobId, JobRecord, JobState, QueuedJob};
use kumulus_core::ports::{CancelRequest, KeyClaim, ListQuery};
use kumulus_core::submission::JobSpec;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

/// A submission's outcome.
pub struct Submitted {
    pub record: JobRecord,
    /// An earlier request with the same `Idempotency-Key` made the job.
    pub replayed: bool,
}

/// Accepts a submission (the body, parsed) once per idempotency key, if it
/// has one ([`crate::idempotency`]).
pub async fn submit_keyed(
    state: &AppState,
    owner: &str,
    value: &Value,
    key: Option<&str>,
) -> Result<Submitted, ApiError> {
    let Some(key) = key else {
        let record = submit(state, owner, value, JobId::new()).await?;
        return Ok(Submitted {
            record,
            replayed: false,
        });
    };
    // A body that would be refused is refused whatever its key.
    JobSpec::from_json(value, &state.submission_limits)?;
    let fingerprint = crate::idempotency::fingerprint(value);
    let id = JobId::new();
    let expired =
        chrono::Utc::now() - chrono::Duration::from_std(state.idempotency_ttl).unwrap_or_default();
    let store = &state.ports.store;
    match store
        .claim_key(owner, key, &fingerprint, id, expired)
        .await?
    {
        KeyClaim::Claimed => match submit(state, owner, value, id).await {
            Ok(record) => Ok(Submitted {
                record,
                replayed: false,
            }),
            Err(e) => {
                if let Err(release) = store.release_key(owner, key, id).await {
                    tracing::warn!(error = %release, "could not release an idempotency key");
                }
                Err(e)
            }
        },
        KeyClaim::Held { fingerprint: f, .. } if f != fingerprint => Err(ApiError::Invalid(
            "this Idempotency-Key was used with another request body; use a new key for a new job"
                .into(),
        )),
        KeyClaim::Held { job, .. } => match store.get(job).await? {
            Some(record) => Ok(Submitted {
                record,
                replayed: true,
            }),
            None => Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still being processed (or its job was deleted); retry, or use a new key"
                    .into(),
            )),
        },
    }
}

/// Accepts a submission (the body, parsed) as job `id`: validates, records
/// and queues it.
pub async fn submit(
    state: &AppState,
    owner: &str,
    value: &Value,
    id: JobId,
) -> Result<JobRecord, ApiError> {
    let spec = JobSpec::from_json(value, &state.submission_limits)?;
    let job = QueuedJob {
        id,
        owner: owner.to_string(),
        url: spec.url,
        args: spec.args,
        config: spec.config,
        timeout_secs: spec.timeout_secs,
        limits: spec.limits,
        submitted_at: chrono::Utc::now(),
        attempt: 1,
        not_before: None,
        partition: None,
    };
    let webhook = match &spec.callback_url {
        Some(url) => Some(crate::webhooks::accept(state, url).await?),
        None => None,
    };
    let mut job = job;
    state.ports.queue.place(&mut job).await;
    let record = JobRecord {
        webhook,
        ..JobRecord::queued(&job)
    };
    let arrival = StatusEvent::new(
        job.id,
        owner,
        EventKind::Queued {
            submitted_at: job.submitted_at,
        },
    );
    // The arrival goes out beside the job, not after it (two sends to the
    // broker at once, in the cluster). A submit that then fails (503) has
    // announced one arrival that never was: the autoscaler counts one job
    // too many, and nothing is lost.
    let (accepted, announced) = tokio::join!(
        state.ports.intake.accept(&record, &job),
        state.ports.status.publish(&arrival)
    );
    accepted?;
    if let Err(e) = announced {
        tracing::warn!(job_id = %job.id, error = %e, "could not announce an arrival");
    }
    state.metrics.jobs_submitted.inc();
    tracing::info!(job_id = %job.id, owner, url = %record.url, "job accepted");
    Ok(record)
}

/// The caller's job, or 404 (for a job that does not exist and for someone
/// else's alike, so ids cannot be probed).
pub async fn own_job(state: &AppState, caller: &Caller, id: &str) -> Result<JobRecord, ApiError> {
    let id: JobId = id.parse().map_err(|_| ApiError::NotFound)?;
    match state.ports.store.get(id).await? {
        Some(rec) if rec.owner == caller.0.username => Ok(rec),
        _ => Err(ApiError::NotFound),
    }
}

/// Cancels a queued or running job; 409 if it has already ended.
pub async fn cancel(state: &AppState, caller: &Caller, id: &str) -> Result<JobRecord, ApiError> {
    let rec = own_job(state, caller, id).await?;
    if rec.state.is_terminal() {
        return Err(ApiError::Conflict(format!(
            "the job has already ended ({})",
            rec.state
        )));
    }
    let request = CancelRequest {
        job_id: rec.id,
        owner: rec.owner.clone(),
        superseded: None,
    };
    state.ports.cancels.cancel(&request).await?;
    let event = StatusEvent::new(
        rec.id,
        rec.owner.clone(),
        EventKind::Finished(Outcome {
            state: JobState::Cancelled,
            started_at: rec.started_at,
            elapsed_secs: None,
            exit_code: None,
            error: Some("cancelled by its owner".into()),
            files: Vec::new(),
            infrastructure: false,
        }),
    )
    .for_attempt(rec.attempt);
    let after = state
        .ports
        .store
        .apply(&event)
        .await?
        .ok_or(ApiError::NotFound)?;
    if after.state != JobState::Cancelled {
        return Err(ApiError::Conflict(format!(
            "the job ended ({}) before it could be cancelled",
            after.state
        )));
    }
    if let Err(e) = state.ports.status.publish(&event).await {
        tracing::warn!(job_id = %rec.id, error = %e, "could not announce a cancellation");
    }
    state.metrics.jobs_cancelled.inc();
    tracing::info!(job_id = %rec.id, "job cancelled");
    Ok(after)
}

/// `POST /api/jobs`: 201 with the job's id (the first request's, for a
/// repeated `Idempotency-Key`, marked `Idempotent-Replayed: true`).
#[utoipa::path(
    post,
    path = "/api/jobs",
    operation_id = "createJob",
    tag = "jobs",
    summary = "Submit a job",
    description = "Stores the job and queues it before answering: a 201 is never lost.\n\nWith an `Idempotency-Key`, the same key and body within `api.idempotency_ttl_secs` (24 h) answer with the first request's job, marked `Idempotent-Replayed: true`, and make no other.",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable ASCII characters, yours to choose per submission")
    ),
    request_body(content = crate::openapi::Submission, content_type = "application/json"),
    responses(
        (status = 201, description = "Accepted and queued", body = crate::openapi::Created,
            headers(
                ("Location" = String, description = "The job's URL"),
                ("Idempotent-Replayed" = String, description = "`true` when an earlier request with the same key made the job")
            ),
            links(
                ("getJob" = (operation_id = "getJob", parameters(("id" = "$response.body#/id")))),
                ("deleteJob" = (operation_id = "deleteJob", parameters(("id" = "$response.body#/id")))),
                ("cancelJob" = (operation_id = "cancelJob", parameters(("id" = "$response.body#/id")))),
                ("listFiles" = (operation_id = "listFiles", parameters(("id" = "$response.body#/id")))),
                ("getLogs" = (operation_id = "getLogs", parameters(("id" = "$response.body#/id")))),
                ("seedStatus" = (operation_id = "seedStatus", parameters(("id" = "$response.body#/id")))),
                ("seedDeleteJob" = (operation_id = "seedDeleteJob", parameters(("id" = "$response.body#/id"))))
            )
        ),
        (status = 409, description = "A request with this Idempotency-Key is still being answered", body = crate::openapi::ErrorBody),
        (status = 422, description = "A field is invalid (named in the message), or the Idempotency-Key was used with another body", body = crate::openapi::ErrorBody),
        (status = 507, description = "The store is full", body = crate::openapi::ErrorBody)
    )
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let key = crate::idempotency::key_of(&headers)?;
    let body = crate::body::read_within(body, state.body_limit, state.body_timeout).await?;
    let value = crate::body::json(&body)?;
    let done = submit_keyed(&state, &caller.0.username, &value, key.as_deref()).await?;
    let rec = &done.record;
    let mut resp = (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/jobs/{}", rec.id))],
        Json(crate::openapi::Created {
            id: rec.id,
            state: rec.state,
        }),
    )
        .into_response();
    if done.replayed {
        resp.headers_mut().insert(
            crate::idempotency::REPLAYED,
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;

/// `GET /api/jobs`: the caller's jobs, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/jobs",
    operation_id = "listJobs",
    tag = "jobs",
    summary = "List your jobs",
    security(("bearer" = [])),
    params(
        ("state" = Option<JobState>, Query, description = "Only jobs in this state"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Jobs per page (20 unless given)"),
        ("cursor" = Option<String>, Query, format = Uuid, description = "`next_cursor` of the previous page")
    ),
    responses(
        (status = 200, description = "A page of jobs", body = crate::openapi::JobPage,
            links(
                ("getJob" = (operation_id = "getJob", parameters(("id" = "$response.body#/jobs/0/id")))),
                ("listFiles" = (operation_id = "listFiles", parameters(("id" = "$response.body#/jobs/0/id")))),
                ("downloadFile" = (operation_id = "downloadFile", parameters(("id" = "$response.body#/jobs/0/id"), ("path" = "$response.body#/jobs/0/files/0")))),
                ("nextPage" = (operation_id = "listJobs", parameters(("cursor" = "$response.body#/next_cursor"))))
            )),
        (status = 400, description = "The query string cannot be read", body = crate::openapi::ErrorBody),
        (status = 422, description = "An unknown parameter, or one out of range", body = crate::openapi::ErrorBody)
    )
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<crate::openapi::JobPage>, ApiError> {
    let params = crate::query::params(query, &["state", "limit", "cursor"])?;
    let state_filter = params
        .get("state")
        .map(|s| {
            s.parse::<JobState>()
                .map_err(|e| ApiError::Invalid(format!("state: {e}")))
        })
        .transpose()?;
    let limit = crate::query::limit(&params, DEFAULT_PAGE, MAX_PAGE)?;
    let before = params
        .get("cursor")
        .map(|c| {
            c.parse::<JobId>()
                .map_err(|_| ApiError::Invalid("cursor: not a cursor from a previous page".into()))
        })
        .transpose()?;
    let mut jobs = state
        .ports
        .store
        .list(
            &caller.0.username,
            &ListQuery {
                state: state_filter,
                before,
                limit: limit + 1,
            },
        )
        .await?;
    let next_cursor = if jobs.len() > limit {
        jobs.truncate(limit);
        jobs.last().map(|j| j.id.to_string())
    } else {
        None
    };
    Ok(Json(crate::openapi::JobPage { jobs, next_cursor }))
}

#[utoipa::path(
    get,
    path = "/api/jobs/{id}",
    operation_id = "getJob",
    tag = "jobs",
    summary = "A job's record",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job", body = JobRecord),
        (status = 404, description = "No such job of yours", body = crate::openapi::ErrorBody)
    )
)]
pub async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiError> {
    own_job(&state, &caller, &id).await.map(Json)
}

/// `DELETE /api/jobs/{id}`: a job that has ended is removed with its files
/// (204); a queued or running one is cancelled (202, with its record).
#[utoipa::path(
    delete,
    path = "/api/jobs/{id}",
    operation_id = "deleteJob",
    tag = "jobs",
    summary = "Delete a job and its files (cancelling it first if it is active)",
    description = "One that has ended is deleted with its files (204). A queued or running job is cancelled and deleted (202, with its last record, cancelled); what its worker still uploads as it stops is swept after it. Either way the job is 404 on every route from then on. `POST /api/jobs/{id}/cancel` cancels without deleting.",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 202, description = "Cancelled and deleted; its worker stops shortly", body = JobRecord),
        (status = 204, description = "Deleted, with its files"),
        (status = 404, description = "No such job of yours", body = crate::openapi::ErrorBody)
    )
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(
        match cancel_or_remove(&state, &caller, &id, WhenActive::Remove).await? {
            Removal::Cancelled(rec) => (StatusCode::ACCEPTED, Json(rec)).into_response(),
            Removal::Removed(_) => StatusCode::NO_CONTENT.into_response(),
        },
    )
}

/// `POST /api/jobs/{id}/cancel`: cancels and never deletes, so a job that
/// ended a moment before keeps its record and files (409).
#[utoipa::path(
    post,
    path = "/api/jobs/{id}/cancel",
    operation_id = "cancelJob",
    tag = "jobs",
    summary = "Cancel a queued or running job",
    description = "Unlike `DELETE`, never deletes: a job that has already ended is left as it is, with a 409.",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 202, description = "Cancelled; it ends shortly", body = JobRecord),
        (status = 404, description = "No such job of yours", body = crate::openapi::ErrorBody),
        (status = 409, description = "The job has already ended", body = crate::openapi::ErrorBody)
    )
)]
pub async fn cancel_only(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let rec = cancel(&state, &caller, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(rec)).into_response())
}

/// What a delete did.
pub enum Removal {
    Cancelled(Box<JobRecord>),
    Removed(JobId),
}

impl Removal {
    pub fn id(&self) -> JobId {
        match self {
            Self::Cancelled(rec) => rec.id,
            Self::Removed(id) => *id,
        }
    }
}

/// What a delete does to a job that is still queued or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenActive {
    /// Cancels it and removes it (`DELETE /api/jobs/{id}`).
    Remove,
    /// Cancels it and keeps its record (the seed's `deleteJob`, whose
    /// status then says `Eliminado`).
    KeepCancelled,
}

/// Removes an ended job with its files. An active one is cancelled, then
/// removed too or kept, as `active` says; removed, a job is 404 on every
/// route from then on.
pub async fn cancel_or_remove(
    state: &AppState,
    caller: &Caller,
    id: &str,
    active: WhenActive,
) -> Result<Removal, ApiError> {
    let rec = own_job(state, caller, id).await?;
    if !rec.state.is_terminal() {
        match cancel(state, caller, id).await {
            Ok(cancelled) if active == WhenActive::KeepCancelled => {
                return Ok(Removal::Cancelled(Box::new(cancelled)))
            }
            Ok(cancelled) => {
                crate::retention::remove(state, &cancelled, crate::retention::Reason::Deleted)
                    .await?;
                crate::retention::sweep_late_files(state.ports.blobs.clone(), cancelled.id);
                return Ok(Removal::Cancelled(Box::new(cancelled)));
            }
            // It ended meanwhile: remove it, as asked.
            Err(ApiError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    crate::retention::remove(state, &rec, crate::retention::Reason::Deleted).await?;
    Ok(Removal::Removed(rec.id))
}
