//! Request bodies: size limit (413), JSON syntax (400), then the caller
//! checks the fields (422).

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::Value;

use crate::error::ApiError;

pub fn bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    match body {
        Ok(b) => Ok(b),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::TooLarge(limit))
        }
        Err(rejection) => Err(ApiError::BadRequest(format!(
            "could not read the request body: {}",
            rejection.body_text()
        ))),
    }
}

pub fn json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("the request body is empty; send a JSON object".into()));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))
}
