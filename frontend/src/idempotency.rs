//! `Idempotency-Key` on submissions, as Stripe has it: a client that
//! retries a submit with the same key (1 to 255 printable ASCII
//! characters) and the same body, within `api.idempotency_ttl_secs`, gets
//! the job of its first request back (with `Idempotent-Replayed: true`) and
//! creates none. The same key with another body is a 422; a key is the
//! user's own (another user's same key is another key). Keys live in the
//! job store, so they survive restarts and are shared by every frontend.

use axum::http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED: &str = "idempotent-replayed";
const MAX_LEN: usize = 255;

/// The request's key, if it sent one; a 400 if it is not a valid key.
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(HEADER) else {
        return Ok(None);
    };
    let key = v.to_str().unwrap_or_default();
    if key.is_empty() || key.len() > MAX_LEN || !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_LEN} printable ASCII characters"
        )));
    }
    Ok(Some(key.to_string()))
}

/// A digest of the submission that does not depend on the JSON's key order
/// or spacing (nor on a form's field order).
pub fn fingerprint(body: &Value) -> String {
    let mut h = Sha256::new();
    canonical(body, &mut h);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn canonical(v: &Value, h: &mut Sha256) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            h.update(b"{");
            for k in keys {
                h.update(serde_json::to_string(k).unwrap_or_default().as_bytes());
                h.update(b":");
                canonical(&m[k], h);
                h.update(b",");
            }
            h.update(b"}");
        }
        Value::Array(items) => {
            h.update(b"[");
            for i in items {
                canonical(i, h);
                h.update(b",");
            }
            h.update(b"]");
        }
        other => h.update(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    #[test]
    fn the_same_submission_has_the_same_fingerprint_whatever_its_spelling() {
        let a: Value =
            serde_json::from_str(r#"{"url":"u","args":["a","b"],"config":{"x":1,"y":2}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{ "config": {"y":2, "x":1}, "args": ["a","b"], "url": "u" }"#)
                .unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        for other in [
            json!({"url": "u", "args": ["b", "a"], "config": {"x": 1, "y": 2}}),
            json!({"url": "u", "args": ["a", "b"]}),
            json!({"url": "u", "args": "a b", "config": {"x": 1, "y": 2}}),
        ] {
            assert_ne!(fingerprint(&a), fingerprint(&other), "{other}");
        }
    }

    #[test]
    fn keys_are_printable_and_bounded() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(HEADER, HeaderValue::from_str(v).unwrap());
            key_of(&h)
        };
        assert_eq!(key_of(&HeaderMap::new()).unwrap(), None);
        assert_eq!(with("order 42/a").unwrap().as_deref(), Some("order 42/a"));
        assert!(with("").is_err());
        assert!(with(&"k".repeat(256)).is_err());
        assert!(with("tab\there").is_err());
    }
}
