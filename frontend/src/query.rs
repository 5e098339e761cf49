//! Query strings: one that cannot be read is a 400, a parameter the route
//! does not take a 422 naming the ones it does.

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use std::collections::HashMap;

use crate::error::ApiError;

/// A route's query parameters, if they are all among `known`.
pub fn params(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    known: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    let Query(params) =
        query.map_err(|e| ApiError::BadRequest(format!("bad query string: {}", e.body_text())))?;
    if let Some(k) = params.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::Invalid(format!(
            "{k}: unknown parameter; expected {}",
            known.join(", ")
        )));
    }
    Ok(params)
}

/// The `limit` parameter: `default` when absent, else a whole number from
/// 1 to `max` (422 otherwise).
pub fn limit(
    params: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match params.get("limit") {
        None => Ok(default),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::Invalid(format!(
                "limit: must be a whole number from 1 to {max}"
            ))),
        },
    }
}
