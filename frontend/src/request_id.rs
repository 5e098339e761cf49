//! Request ids: the client's `X-Request-Id` when it is a sensible token
//! (1 to 128 of `A-Z a-z 0-9 - _ . :`), else a new one. It is in every log
//! line of the request (a span), in the answer's `X-Request-Id` header and
//! in error bodies (`error.request_id`).

use axum::http::{HeaderMap, HeaderValue};

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being answered, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Runs `fut` as the request `id`.
pub async fn scope<F: std::future::Future>(id: String, fut: F) -> F::Output {
    CURRENT.scope(id, fut).await
}

/// The client's id if it is one we can echo safely, else a new one.
pub fn of(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

fn acceptable(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The header value of an id (always valid: see [`of`]).
pub fn header_value(id: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_is_kept_only_when_it_is_a_plain_token() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(HEADER, HeaderValue::from_str(v).unwrap());
            of(&h)
        };
        assert_eq!(with("abc-123_x.y:z"), "abc-123_x.y:z");
        for bad in ["", "has space", "semi;colon", &"x".repeat(129), "new\tline"] {
            let got = with(bad);
            assert_ne!(got, bad);
            assert_eq!(got.len(), 32, "{got}");
        }
        assert_eq!(of(&HeaderMap::new()).len(), 32);
    }
}
