//! Job files: the list, and downloads streamed from the blob store.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

use kumulus_core::job::JobRecord;
use kumulus_core::ports::is_safe_file_name;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::jobs::own_job;
use crate::AppState;

#[utoipa::path(
    get,
    path = "/api/jobs/{id}/files",
    operation_id = "listFiles",
    tag = "files",
    summary = "The job's files",
    description = "`stdout.log`, `stderr.log` and what the job wrote under `output/`, once it has ended.",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Its files", body = crate::openapi::FileList),
        (status = 404, description = "No such job of yours", body = crate::openapi::ErrorBody)
    )
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<crate::openapi::FileList>, ApiError> {
    let rec = own_job(&state, &caller, &id).await?;
    Ok(Json(crate::openapi::FileList { files: rec.files }))
}

#[utoipa::path(
    get,
    path = "/api/jobs/{id}/files/{*path}",
    operation_id = "downloadFile",
    tag = "files",
    summary = "Download one of the job's files",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The job's id"),
        ("path" = String, Path, description = "A name from the file list (`output/a.txt`; its `/` may be sent as `%2F`)")
    ),
    responses(
        (status = 200, description = "The file, as an attachment", content_type = "*/*", body = Vec<u8>),
        (status = 307, description = "The file, from the object store directly (when `s3.presign_secs` is set)",
            headers(("Location" = String, description = "A presigned URL"))),
        (status = 404, description = "No such job of yours, or no such file", body = crate::openapi::ErrorBody)
    )
)]
pub async fn download(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let rec = own_job(&state, &caller, &id).await?;
    stream(&state, &rec, &name).await
}

/// Streams one of the job's files. Only names the job itself reported are
/// served, so no path (`..`, encoded or not) can reach anything else.
pub async fn stream(state: &AppState, rec: &JobRecord, name: &str) -> Result<Response, ApiError> {
    if !is_safe_file_name(name) || !rec.files.iter().any(|f| f == name) {
        return Err(ApiError::NotFound);
    }
    // The files of the attempt the record shows, never a superseded one's.
    let stored = kumulus_core::ports::blob_name(rec.attempt, name);
    if let Some(url) = state.ports.blobs.presign(rec.id, &stored).await? {
        return Ok(axum::response::Redirect::temporary(&url).into_response());
    }
    let blob = state
        .ports
        .blobs
        .get(rec.id, &stored)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mime = if name.ends_with(".log") {
        mime_guess::mime::TEXT_PLAIN_UTF_8
    } else {
        mime_guess::from_path(name).first_or_octet_stream()
    };
    let base = name.rsplit('/').next().unwrap_or(name);
    let disposition: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut resp = Body::from_stream(blob.body).into_response();
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(blob.len));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{disposition}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
