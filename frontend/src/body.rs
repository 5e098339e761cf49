//! Request bodies: size limit (413), JSON syntax (400), then the caller
//! checks the fields (422).

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde_json::Value;

use crate::error::ApiError;

/// How much of an oversized body is read and dropped before answering 413.
/// Reading it lets the client see the answer instead of a reset connection;
/// past this the connection is simply closed.
const DRAIN_MAX: usize = 64 * 1024 * 1024;

/// Reads a request body of at most `limit` bytes, within `api.body_timeout_secs`.
pub async fn read_within(
    body: Body,
    limit: usize,
    within: std::time::Duration,
) -> Result<Bytes, ApiError> {
    tokio::time::timeout(within, read(body, limit))
        .await
        .map_err(|_| ApiError::RequestTimeout)?
}

/// Reads a request body of at most `limit` bytes.
pub async fn read(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::BadRequest(format!("could not read the request body: {e}")))?;
        seen += chunk.len();
        if seen > limit {
            if seen > DRAIN_MAX {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if seen > limit {
        return Err(ApiError::TooLarge(limit));
    }
    Ok(buf.freeze())
}

pub fn json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "the request body is empty; send a JSON object".into(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))
}
