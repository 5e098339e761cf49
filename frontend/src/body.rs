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

/// An HTML form (`application/x-www-form-urlencoded`, as the seed's
/// Express server took) as the JSON object of a submission: `args` given
/// once is a command line, given several times (or as `args[]`) a list;
/// `timeout_secs` is a number where it reads as one. Other fields pass
/// through as text, for the submission's own checks to name.
pub fn form(body: &[u8]) -> Result<Value, ApiError> {
    let mut map = serde_json::Map::new();
    let mut args: Vec<Value> = Vec::new();
    let mut list = false;
    for (key, value) in form_urlencoded::parse(body) {
        match key.as_ref() {
            "args" | "args[]" => {
                list |= key == "args[]" || !args.is_empty();
                args.push(Value::String(value.into_owned()));
            }
            "timeout_secs" => {
                let v = match value.trim().parse::<u64>() {
                    Ok(n) => Value::from(n),
                    Err(_) => Value::String(value.into_owned()),
                };
                map.insert(key.into_owned(), v);
            }
            _ => {
                map.insert(key.into_owned(), Value::String(value.into_owned()));
            }
        }
    }
    match (args.len(), list) {
        (0, _) => {}
        (1, false) => {
            map.insert("args".into(), args.remove(0));
        }
        _ => {
            map.insert("args".into(), Value::Array(args));
        }
    }
    if map.is_empty() {
        return Err(ApiError::BadRequest(
            "the form is empty; send at least `url`".into(),
        ));
    }
    Ok(Value::Object(map))
}

/// Whether the request says its body is an HTML form.
pub fn is_form(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_form_reads_as_the_submission_it_stands_for() {
        for (body, want) in [
            (
                "url=https%3A%2F%2Fx.org%2Fr.git",
                json!({"url": "https://x.org/r.git"}),
            ),
            // One `args` is a command line; several, or `args[]`, a list.
            (
                "url=u&args=a+b&config=%7B%7D",
                json!({"url": "u", "args": "a b", "config": "{}"}),
            ),
            (
                "url=u&args=a&args=b+c",
                json!({"url": "u", "args": ["a", "b c"]}),
            ),
            ("url=u&args%5B%5D=a", json!({"url": "u", "args": ["a"]})),
            (
                "url=u&timeout_secs=30",
                json!({"url": "u", "timeout_secs": 30}),
            ),
            // Left for the submission's checks to refuse by name.
            (
                "url=u&timeout_secs=soon&x=1",
                json!({"url": "u", "timeout_secs": "soon", "x": "1"}),
            ),
        ] {
            assert_eq!(form(body.as_bytes()).unwrap(), want, "{body}");
        }
        assert!(matches!(form(b""), Err(ApiError::BadRequest(_))));
    }
}
